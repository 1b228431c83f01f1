//! Azure Key Vault: `--cert azurekeyvault://<vault-host>/<secret>[/<version>]` reads a sealing
//! certificate published there, `keyseal keys publish-cert` publishes one, and
//! `--recovery-private-key azurekeyvault://<vault-host>/<prefix>` reads every sealing key backed up
//! under a prefix; all through the official Azure SDK with the credential the `AZURE_*` variables
//! (or --keyvault-credential) select.

use keyseal_keyvault::{
    AzureKeyVault, BackupConfig, BackupError, CredentialConfig, KeyBackups, VaultOptions,
    VaultReference, fetch_certificate_from,
};

use keyseal_api::key_secret::parse_key_secret;
use keyseal_crypto::PrivateKey;

use crate::cli::{KeyVaultArgs, PublishCertArgs};
use crate::error::{CliError, Result, err};

/// Whether `--cert` names a Key Vault reference.
pub fn is_reference(source: &str) -> bool {
    let scheme = keyseal_keyvault::REFERENCE_SCHEME;
    source
        .get(..scheme.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
}

/// Reads the certificate `source` names.
pub fn fetch_certificate(source: &str, args: &KeyVaultArgs) -> Result<Vec<u8>> {
    let reference = VaultReference::parse(source).map_err(|e| {
        err(format!("--cert {source}: {e}"))
            .hint("write azurekeyvault://<vault-name>.vault.azure.net/<secret-name>[/<version>]")
    })?;
    let store = connect(&reference.vault_url, args)?;
    crate::runtime::block_on(async {
        fetch_certificate_from(&store, &reference.secret_name, reference.version.as_deref())
            .await
            .map(String::into_bytes)
            .map_err(|e| explain(&format!("cannot read the certificate {source}"), e))
    })
}

/// The private keys backed up under the prefix that `reference`
/// (`azurekeyvault://<vault-host>/<prefix>`, the controller's `--keyvault-prefix`) names, each
/// checked against its recorded fingerprint.
pub fn backed_up_keys(reference: &str, args: &KeyVaultArgs) -> Result<Vec<PrivateKey>> {
    let hint = "write azurekeyvault://<vault-name>.vault.azure.net/<prefix>, the prefix being the controller's --keyvault-prefix";
    let parsed = VaultReference::parse(reference)
        .map_err(|e| err(format!("--recovery-private-key {reference}: {e}")).hint(hint))?;
    if parsed.version.is_some() {
        return Err(err(format!(
            "--recovery-private-key {reference}: names a version; key backups are read by their prefix"
        ))
        .hint(hint));
    }
    let prefix = parsed.secret_name;
    let store = connect(&parsed.vault_url, args)?;
    let backups = KeyBackups::new(
        store,
        BackupConfig {
            prefix: prefix.clone(),
            cluster: prefix.clone(),
        },
    )
    .map_err(|e| err(format!("--recovery-private-key {reference}: {e}")).hint(hint))?;
    let secrets = crate::runtime::block_on(async {
        backups
            .restore_all()
            .await
            .map_err(|e| explain(&format!("cannot read the key backups under {reference}"), e))
    })?;
    if secrets.is_empty() {
        return Err(err(format!(
            "--recovery-private-key {reference}: no key backups under the prefix {prefix:?} in {}",
            parsed.vault_url
        ))
        .hint("check the prefix: the controller backs its keys up as <prefix>-<key Secret name>"));
    }
    secrets
        .iter()
        .map(|s| {
            parse_key_secret(s.as_secret())
                .map(|loaded| loaded.key)
                .map_err(|e| err(format!("{reference}: {e}")))
        })
        .collect()
}

/// The key backups under `prefix` in the vault at `url`.
pub fn key_backups(
    url: &str,
    prefix: &str,
    args: &KeyVaultArgs,
) -> Result<KeyBackups<AzureKeyVault>> {
    let store = connect(url, args)?;
    KeyBackups::new(
        store,
        BackupConfig {
            prefix: prefix.to_owned(),
            cluster: prefix.to_owned(),
        },
    )
    .map_err(|e| err(format!("--keyvault-prefix {prefix}: {e}")))
}

/// `keyseal keys publish-cert`.
pub fn publish(args: &PublishCertArgs) -> Result<()> {
    let pem = std::fs::read_to_string(&args.cert).map_err(|e| {
        err(format!(
            "cannot read {} given with --cert: {}",
            args.cert.display(),
            crate::error::io_text(&e)
        ))
    })?;
    keyseal_crypto::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
        err(format!("{}: {e}", args.cert.display()))
            .hint("--cert must name a PEM certificate such as the one --fetch-cert prints")
    })?;
    let store = connect(&args.keyvault_url, &args.keyvault)?;
    let backups = KeyBackups::new(
        store,
        BackupConfig {
            prefix: args.prefix.clone(),
            cluster: args.prefix.clone(),
        },
    )
    .map_err(|e| err(format!("--prefix: {e}")))?;
    let reference = crate::runtime::block_on(async {
        backups
            .publish_certificate(&pem)
            .await
            .map_err(|e| explain("cannot publish the certificate", e))
    })?;
    println!("{reference}");
    Ok(())
}

/// A client for the vault at `url` with the credential and TLS settings of `args`.
fn connect(url: &str, args: &KeyVaultArgs) -> Result<AzureKeyVault> {
    let mut options = VaultOptions {
        verify_challenge_resource: !args.keyvault_disable_challenge_resource_verification,
        ..VaultOptions::default()
    };
    if let Some(ca) = &args.keyvault_ca_file {
        options = options.with_ca_file(ca).map_err(|e| {
            err(format!("--keyvault-ca-file: {e}")).hint("give a PEM file of CA certificates")
        })?;
    }
    let credential = CredentialConfig::from_env(args.keyvault_credential)
        .and_then(|c| c.credential(&options))
        .map_err(|e| {
            err(e.to_string()).hint(
                "set AZURE_TENANT_ID and AZURE_CLIENT_ID with AZURE_CLIENT_SECRET, \
                 AZURE_FEDERATED_TOKEN_FILE or AZURE_CLIENT_CERTIFICATE_PATH, or choose \
                 --keyvault-credential azure-cli",
            )
        })?;
    AzureKeyVault::new(url, credential, &options).map_err(|e| err(e.to_string()))
}

/// The error after `what`, with what usually fixes it.
pub fn explain(what: &str, e: BackupError) -> CliError {
    let hint = match &e {
        BackupError::Service { status: 401, .. } => Some(
            "the vault refused the token: check AZURE_TENANT_ID and the credential; for a vault outside the public clouds' vault domains add --keyvault-disable-challenge-resource-verification",
        ),
        BackupError::Service { status: 403, .. } => Some(
            "the identity has no role on this secret: reading needs e.g. Key Vault Secrets User, publishing Key Vault Secrets Officer",
        ),
        BackupError::NotFound { .. } => {
            Some("check the secret name; the controller publishes <prefix>-sealing-cert")
        }
        BackupError::Unreachable { .. } => Some(
            "check the vault's host name; behind a private CA pass --keyvault-ca-file (or SSL_CERT_FILE)",
        ),
        BackupError::ChallengeResource { .. } => Some(
            "this vault's host is not in the vault domain its challenge names: for a vault outside the public clouds (Azure Stack Hub, a test server) add --keyvault-disable-challenge-resource-verification",
        ),
        BackupError::Credential { .. } => Some(
            "no token: check the AZURE_* variables, AZURE_AUTHORITY_HOST for sovereign clouds, and --keyvault-ca-file for a private CA",
        ),
        _ => None,
    };
    let error = err(format!("{what}: {e}"));
    match hint {
        Some(h) => error.hint(h),
        None => error,
    }
}
