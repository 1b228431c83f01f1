//! `--recovery-unseal`: SealedSecrets back to Secrets offline, with the controller's backed-up
//! keys, and a failure that says which scope and label were tried.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use keyseal_api::key_secret::keys_from_backup;
use keyseal_api::{Scope, SealedSecret, UnsealError, UnsealOptions, unseal};
use keyseal_crypto::PrivateKey;

use crate::cli::KeyVaultArgs;
use crate::error::{CliError, Result, err, io_text, object_name};
use crate::io::Input;

/// The private keys in `files`: PEM keys or backups of the key Secrets, or the keys backed up in
/// Azure Key Vault under a prefix (`azurekeyvault://<vault-host>/<prefix>`).
fn load_recovery_keys(files: &[PathBuf], vault: &KeyVaultArgs) -> Result<Vec<PrivateKey>> {
    let mut keys = Vec::new();
    for file in files {
        if let Some(reference) = file.to_str().filter(|f| crate::vault::is_reference(f)) {
            keys.extend(crate::vault::backed_up_keys(reference, vault)?);
            continue;
        }
        let bytes = std::fs::read(file).map_err(|e| {
            err(format!(
                "cannot read {} given with --recovery-private-key: {}",
                file.display(),
                io_text(&e)
            ))
        })?;
        keys.extend(keys_from_backup(&bytes).map_err(|e| {
            err(format!("{}: {e}", file.display())).hint("--recovery-private-key takes PEM keys or a Secret/List backup of the controller's keys")
        })?);
    }
    Ok(keys)
}

/// Unseals every SealedSecret of `input` with the keys in `key_files` (files, or key backups in
/// the vault `vault` reaches).
pub fn recovery_unseal(
    input: &Input,
    key_files: &[PathBuf],
    vault: &KeyVaultArgs,
) -> Result<Vec<Secret>> {
    let keys = load_recovery_keys(key_files, vault)?;
    let refs: Vec<&PrivateKey> = keys.iter().collect();
    input
        .sealed_secrets()?
        .iter()
        .map(|ss| {
            let name = object_name(
                ss.metadata.namespace.as_deref(),
                ss.metadata.name.as_deref(),
            );
            unseal(ss, &refs, UnsealOptions::default())
                .map(|u| u.secret)
                .map_err(|e| unseal_error(input, &name, ss, &e, keys.len()))
        })
        .collect()
}

/// Explains a failed unseal: which scope and OAEP label were tried, and how many keys.
fn unseal_error(
    input: &Input,
    name: &str,
    ss: &SealedSecret,
    e: &UnsealError,
    keys: usize,
) -> CliError {
    let error = err(format!("{}: SealedSecret {name}: {e}", input.name));
    if !matches!(e, UnsealError::NoKeyCouldDecrypt { .. }) {
        return error;
    }
    // As kubeseal, --recovery-unseal without keys goes on and fails here, with its message.
    if keys == 0 {
        return error.hint("no keys were given: pass the controller's backed-up keys (PEM files, or its key Secrets as YAML/JSON) with --recovery-private-key");
    }
    let scope = Scope::from_annotations(ss.metadata.annotations.as_ref());
    let label = String::from_utf8_lossy(&scope.label(
        ss.metadata.namespace.as_deref().unwrap_or(""),
        ss.metadata.name.as_deref().unwrap_or(""),
    ))
    .into_owned();
    error.hint(format!(
        "tried {keys} key(s) with the {scope} label {label:?}; the value may have been sealed for another \
         namespace, name or scope (check metadata and the scope annotations), or with a key not in the given files"
    ))
}
