//! `keyseal keys backup` and `keyseal keys restore`: the controller's key Secrets to Azure Key
//! Vault (verified) or a file, and back into a cluster in upstream's layout.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use keyseal_api::annotations::SEALING_KEY_LABEL;
use keyseal_api::key_secret::{is_sealing_key_secret, parse_key_secret};
use keyseal_api::strip_server_fields;
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::cli::{BackupArgs, KeySecretsArgs, KubeArgs, ListArgs, RestoreArgs, VaultTargetArgs};
use crate::error::{Result, err, io_text};
use crate::io::write_atomically;

/// `keyseal keys backup`.
pub fn backup(args: &BackupArgs, kube: &KubeArgs) -> Result<()> {
    crate::runtime::block_on(async {
        let client = crate::kubeconfig::client(kube).await?;
        let secrets = key_secrets(&client, &args.place.secrets).await?;
        if let Some(path) = &args.to_file {
            return write_backup_file(path, &secrets);
        }
        let (url, prefix) = vault_target(&args.place.vault, "--to-file")?;
        let backups = crate::vault::key_backups(url, prefix, &args.place.keyvault)?;
        for secret in &secrets {
            let name = secret_name(secret);
            let record = backups.backup_key(secret).await.map_err(|e| {
                crate::vault::explain(&format!("cannot back up the key Secret {name}"), e)
            })?;
            println!(
                "{name} {} -> {url}/secrets/{} (verified)",
                record.fingerprint, record.name
            );
        }
        Ok(())
    })
}

/// `keyseal keys restore`.
pub fn restore(args: &RestoreArgs, kube: &KubeArgs) -> Result<()> {
    let namespace = &args.place.secrets.controller_namespace;
    let backed_up = match &args.from_file {
        Some(path) => read_backup_file(path, &args.place.secrets.key_prefix)?,
        None => {
            let (url, prefix) = vault_target(&args.place.vault, "--from-file")?;
            let backups = crate::vault::key_backups(url, prefix, &args.place.keyvault)?;
            let restored = crate::runtime::block_on(async {
                backups.restore_all().await.map_err(|e| {
                    crate::vault::explain(&format!("cannot read the key backups in {url}"), e)
                })
            })?;
            restored.into_iter().map(|k| k.into_secret()).collect()
        }
    };
    if backed_up.is_empty() {
        return Err(err("no key Secrets to restore")
            .hint("check --keyvault-prefix (or the file): `keyseal keys backup` writes them"));
    }
    let targets = backed_up
        .into_iter()
        .map(|s| target(s, namespace))
        .collect::<Result<Vec<_>>>()?;
    crate::runtime::block_on(async {
        let client = crate::kubeconfig::client(kube).await?;
        let api: Api<Secret> = Api::namespaced(client, namespace);
        // Every conflict is found before anything is written: a restore is all or nothing.
        let mut todo = Vec::new();
        for (secret, fingerprint) in targets {
            let name = secret_name(&secret);
            let existing = api
                .get_opt(&name)
                .await
                .map_err(|e| err(format!("cannot read the Secret {namespace}/{name}: {e}")))?;
            match existing.as_ref().map(|e| fingerprint_of(e, namespace)) {
                Some(Ok(there)) if there == fingerprint => {
                    println!("{namespace}/{name} {fingerprint} already there");
                }
                Some(_) => {
                    return Err(err(format!(
                        "the Secret {namespace}/{name} exists and does not hold the backed-up key {fingerprint}"
                    ))
                    .hint("keys are never overwritten: move that Secret aside first if it must go"));
                }
                None => todo.push((secret, name, fingerprint)),
            }
        }
        for (secret, name, fingerprint) in todo {
            if args.dry_run {
                println!("{namespace}/{name} {fingerprint} would be created (dry run)");
                continue;
            }
            api.create(&PostParams::default(), &secret)
                .await
                .map_err(|e| err(format!("cannot create the Secret {namespace}/{name}: {e}")))?;
            println!("{namespace}/{name} {fingerprint} created");
        }
        Ok(())
    })
}

/// `keyseal keys list`.
pub fn list(args: &ListArgs, kube: &KubeArgs) -> Result<()> {
    let place = &args.place;
    let namespace = &place.secrets.controller_namespace;
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    crate::runtime::block_on(async {
        let client = crate::kubeconfig::client(kube).await?;
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let listed = api
            .list(&ListParams::default().labels(SEALING_KEY_LABEL))
            .await
            .map_err(|e| err(format!("cannot list the key Secrets in {namespace}: {e}")))?;
        for secret in &listed.items {
            let Ok(loaded) = parse_key_secret(secret) else {
                continue;
            };
            let row = rows
                .entry(loaded.key.public_key().fingerprint())
                .or_default();
            row.created = Some(loaded.certificate.not_before());
            row.cluster = Some(secret_name(secret));
            row.state = key_state(secret);
        }
        if place.vault.keyvault_url.is_some() {
            let (url, prefix) = vault_target(&place.vault, "")?;
            let backups = crate::vault::key_backups(url, prefix, &place.keyvault)?;
            let records = backups.list_backups().await.map_err(|e| {
                crate::vault::explain(&format!("cannot list the key backups in {url}"), e)
            })?;
            for record in records {
                let verified = match backups.restore(&record).await {
                    Ok(_) => "verified".to_owned(),
                    Err(e) => format!("unreadable ({})", e.reason()),
                };
                let row = rows.entry(record.fingerprint.clone()).or_default();
                row.vault = Some(format!("{} {verified}", record.name));
            }
        }
        Ok(())
    })?;
    mark_sealing(&mut rows);
    let mut sorted: Vec<(&String, &Row)> = rows.iter().collect();
    sorted.sort_by_key(|(fp, row)| (row.created, (*fp).clone()));
    println!("FINGERPRINT\tCREATED\tSTATE\tCLUSTER ({namespace})\tVAULT");
    for (fingerprint, row) in sorted {
        let created = row
            .created
            .and_then(|t| jiff::Timestamp::try_from(t).ok())
            .map_or_else(
                || "-".to_owned(),
                |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            );
        println!(
            "{fingerprint}\t{created}\t{}\t{}\t{}",
            if row.state.is_empty() {
                "-"
            } else {
                &row.state
            },
            row.cluster.as_deref().unwrap_or("-"),
            row.vault.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

/// One key in the inventory.
#[derive(Default)]
struct Row {
    created: Option<std::time::SystemTime>,
    state: String,
    cluster: Option<String>,
    vault: Option<String>,
}

/// A key Secret's state from its label: `active`, `pending-backup` (keyseal waits for its backup),
/// or retired (any other value, e.g. `compromised`: the controllers ignore it).
fn key_state(secret: &Secret) -> String {
    let label = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SEALING_KEY_LABEL))
        .map_or("", String::as_str);
    match label {
        "active" | "pending-backup" => label.to_owned(),
        other => format!("retired ({other})"),
    }
}

/// The newest active key is the one that seals.
fn mark_sealing(rows: &mut BTreeMap<String, Row>) {
    if let Some(row) = rows
        .values_mut()
        .filter(|r| r.state == "active")
        .max_by_key(|r| r.created)
    {
        row.state = "sealing".to_owned();
    }
}

/// The key Secrets the controller loads: labelled `…sealed-secrets-key=active`, or the legacy
/// Secret named exactly the key prefix.
async fn key_secrets(client: &kube::Client, args: &KeySecretsArgs) -> Result<Vec<Secret>> {
    let namespace = &args.controller_namespace;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let listed = api
        .list(&ListParams::default().labels(SEALING_KEY_LABEL))
        .await
        .map_err(|e| err(format!("cannot list the key Secrets in {namespace}: {e}")))?;
    let legacy = api
        .get_opt(&args.key_prefix)
        .await
        .map_err(|e| err(format!("cannot read {namespace}/{}: {e}", args.key_prefix)))?;
    let mut secrets: Vec<Secret> = listed
        .items
        .into_iter()
        .chain(legacy)
        .filter(|s| is_sealing_key_secret(s, &args.key_prefix))
        .collect();
    secrets.sort_by_key(secret_name);
    secrets.dedup_by_key(|s| secret_name(s));
    if secrets.is_empty() {
        return Err(err(format!("no sealing key Secrets in the namespace {namespace}")).hint(
            "point --controller-namespace (and --key-prefix) at the controller's; the kubeconfig comes from --kubeconfig before `keys` or KUBECONFIG",
        ));
    }
    Ok(secrets)
}

/// The vault URL and prefix, both required when `alternative` is not given.
fn vault_target<'a>(args: &'a VaultTargetArgs, alternative: &str) -> Result<(&'a str, &'a str)> {
    let url = args.keyvault_url.as_deref().ok_or_else(|| {
        err(format!(
            "give --keyvault-url (with --keyvault-prefix) or {alternative}"
        ))
    })?;
    let prefix = args.keyvault_prefix.as_deref().ok_or_else(|| {
        err("--keyvault-url needs --keyvault-prefix")
            .hint("the cluster's prefix in the vault, as the controller's --keyvault-prefix")
    })?;
    Ok((url, prefix))
}

/// The Secret to create for a backed-up key Secret: its name, labels, annotations, type and
/// data, in `namespace`, without server fields; and the fingerprint of the key it holds.
fn target(backed_up: Secret, namespace: &str) -> Result<(Secret, String)> {
    let fingerprint = fingerprint_of(&backed_up, namespace)?;
    let mut secret = backed_up;
    secret.metadata = strip_server_fields(std::mem::take(&mut secret.metadata));
    secret.metadata.owner_references = None;
    secret.metadata.generate_name = None;
    secret.metadata.namespace = Some(namespace.to_owned());
    if secret.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(err(format!(
            "a backed-up key Secret ({fingerprint}) has no name"
        )));
    }
    Ok((secret, fingerprint))
}

fn fingerprint_of(secret: &Secret, namespace: &str) -> Result<String> {
    parse_key_secret(secret)
        .map(|loaded| loaded.key.public_key().fingerprint())
        .map_err(|e| err(format!("{namespace}/{}: {e}", secret_name(secret))))
}

fn secret_name(secret: &Secret) -> String {
    secret.metadata.name.clone().unwrap_or_default()
}

/// Writes `secrets` as `kubectl get secret -o yaml` would list them (managedFields dropped),
/// readable by the owner only.
fn write_backup_file(path: &Path, secrets: &[Secret]) -> Result<()> {
    let items: Vec<Secret> = secrets
        .iter()
        .cloned()
        .map(|mut s| {
            s.metadata.managed_fields = None;
            s
        })
        .collect();
    let list = BTreeMap::from([
        ("apiVersion", serde_json::json!("v1")),
        ("kind", serde_json::json!("List")),
        (
            "items",
            serde_json::to_value(&items).map_err(|e| err(e.to_string()))?,
        ),
    ]);
    let yaml = keyseal_api::to_yaml(&list).map_err(|e| err(format!("cannot encode YAML: {e}")))?;
    write_atomically(path, yaml.as_bytes(), 0o600)?;
    for secret in secrets {
        let fingerprint = fingerprint_of(secret, "")?;
        println!(
            "{} {fingerprint} -> {}",
            secret_name(secret),
            path.display()
        );
    }
    Ok(())
}

/// The key Secrets in a backup file; anything else in it is refused by name.
fn read_backup_file(path: &Path, prefix: &str) -> Result<Vec<Secret>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "cannot read {} given with --from-file: {}",
            path.display(),
            io_text(&e)
        ))
    })?;
    let secrets =
        keyseal_api::input::secrets(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
    for secret in &secrets {
        if !is_sealing_key_secret(secret, prefix) {
            return Err(err(format!(
                "{}: the Secret {} is not a sealing key Secret (label {SEALING_KEY_LABEL}=active, or named {prefix})",
                path.display(),
                secret_name(secret)
            )));
        }
    }
    Ok(secrets)
}
