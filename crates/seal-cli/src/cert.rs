//! Where the sealing certificate comes from: a file, an http(s):// or file:// URL, or the
//! controller through the API server.

use std::time::SystemTime;

use keyseal_crypto::{Certificate, PublicKey};

use crate::cli::{KeyVaultArgs, KubeArgs, SealArgs};
use crate::error::{Result, err, io_text};

/// Reads the certificate PEM named by `--cert`, or fetches it from the controller.
pub fn fetch_pem(seal: &SealArgs, kube: &KubeArgs, keyvault: &KeyVaultArgs) -> Result<Vec<u8>> {
    match seal.cert.as_deref() {
        Some(source) if crate::vault::is_reference(source) => {
            crate::vault::fetch_certificate(source, keyvault)
        }
        Some(source) => read_source(source),
        None => crate::runtime::block_on(async {
            let proxy = crate::controller_client::ControllerProxy::connect(kube, seal).await?;
            Ok(proxy.cert().await?.into_bytes())
        }),
    }
}

fn read_source(source: &str) -> Result<Vec<u8>> {
    if let Some(path) = source.strip_prefix("file://") {
        return std::fs::read(path).map_err(|e| {
            err(format!(
                "cannot read certificate {source} given with --cert: {}",
                io_text(&e)
            ))
        });
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        let mut response = ureq::get(source).call().map_err(|e| {
            err(format!("cannot fetch certificate {source:?} given with --cert: {e}"))
                .hint("check the URL, or download the certificate once with --fetch-cert and pass the file")
        })?;
        return response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| err(format!("cannot read certificate from {source:?}: {e}")));
    }
    std::fs::read(source).map_err(|e| {
        err(format!(
            "cannot read certificate file {source} given with --cert: {}",
            io_text(&e)
        ))
        .hint("pass a PEM file, an https:// URL, or omit --cert to fetch it from the cluster")
    })
}

/// The sealing key in a certificate PEM, refused when expired (kubeseal's message).
pub fn sealing_key(pem: &[u8], source: &str) -> Result<PublicKey> {
    let cert = Certificate::from_pem(pem).map_err(|e| {
        err(format!("{source}: {e}"))
            .hint("--cert must name a PEM certificate such as the one --fetch-cert prints")
    })?;
    let key = cert.sealing_key(SystemTime::now()).map_err(|e| {
        err(e.to_string()).hint("fetch the controller's current certificate with --fetch-cert")
    })?;
    Ok(key.clone())
}

/// The sealing key of the certificate `--cert` names (or the controller serves).
pub fn fetch_sealing_key(
    flags: &SealArgs,
    kube: &KubeArgs,
    keyvault: &KeyVaultArgs,
) -> Result<PublicKey> {
    let source = flags.cert.clone().unwrap_or_else(|| {
        format!(
            "the controller {}/{}",
            flags.controller_namespace, flags.controller_name
        )
    });
    let pem = fetch_pem(flags, kube, keyvault)?;
    sealing_key(&pem, &source)
}
