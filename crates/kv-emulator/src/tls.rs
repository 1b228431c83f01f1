//! The server certificate: PEM files given in the configuration, or a throw-away test CA and a
//! certificate it signs, generated once into `<data_dir>/tls` and kept across restarts (clients
//! that trust `ca.crt` keep working after a restart).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Tls;

/// Where a generated CA's certificate is written.
pub fn generated_ca(data_dir: &Path) -> PathBuf {
    data_dir.join("tls/ca.crt")
}

/// The rustls server configuration.
pub fn server_config(tls: &Tls, data_dir: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let (cert_file, key_file) = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => generate(data_dir, &tls.hosts)?,
        _ => return Err(anyhow!("tls: give both cert_file and key_file, or neither")),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .with_context(|| format!("reading {}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .with_context(|| format!("reading the key {}", key_file.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Makes (once) `ca.crt`, `server.crt` and `server.key` in `<data_dir>/tls`.
fn generate(data_dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    if cert.is_file() && key.is_file() && generated_ca(data_dir).is_file() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "keyseal-kv-emulator test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "keyseal-kv-emulator");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = rcgen::KeyPair::generate()?;
    let server = params.signed_by(&server_key, &ca)?;
    let write = |path: &Path, text: &str| -> Result<()> {
        use std::io::Write as _;
        let mut f = crate::store::private_file(path)?;
        f.write_all(text.as_bytes())?;
        Ok(())
    };
    write(&key, &server_key.serialize_pem())?;
    write(&cert, &format!("{}{}", server.pem(), ca.pem()))?;
    write(&generated_ca(data_dir), &ca.pem())?;
    Ok((cert, key))
}
