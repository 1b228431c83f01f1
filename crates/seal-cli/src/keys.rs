//! `keyseal keys generate`: sealing keys made outside a cluster.

use std::time::SystemTime;

use keyseal_api::key_secret::new_key_secret;
use keyseal_crypto::{CertificateParams, PrivateKey, SystemRng, self_signed_certificate};

use crate::cli::GenerateArgs;
use crate::error::{Result, err};
use crate::io::write_atomically;

/// Generates a key pair (and optionally its key Secret) and writes the files.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    let key = PrivateKey::generate(args.key_size)
        .map_err(|e| err(format!("cannot generate a key: {e}")))?;
    let params = CertificateParams {
        common_name: args.my_cn.clone(),
        not_before: SystemTime::now(),
        validity: args.key_ttl,
    };
    let cert = self_signed_certificate(&key, &params, &mut SystemRng)
        .map_err(|e| err(format!("cannot create the certificate: {e}")))?;
    write_atomically(&args.key_out, key.to_pkcs1_pem().as_bytes(), 0o600)?;
    write_atomically(&args.cert_out, cert.to_pem().as_bytes(), 0o644)?;
    if let Some(path) = &args.secret_out {
        let secret = new_key_secret(
            &args.secret_namespace,
            &args.key_prefix,
            &key,
            &cert,
            &Default::default(),
            &Default::default(),
        );
        let yaml =
            keyseal_api::to_yaml(&secret).map_err(|e| err(format!("cannot encode YAML: {e}")))?;
        write_atomically(path, format!("---\n{yaml}").as_bytes(), 0o600)?;
    }
    eprintln!(
        "generated RSA-{} key {}",
        args.key_size,
        key.public_key().fingerprint()
    );
    Ok(())
}
