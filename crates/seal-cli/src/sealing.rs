//! The offline sealing modes: Secrets to SealedSecrets, `--raw` and `--merge-into`.
//!
//! The scope stays a [`Scope`] from `--scope` (or the `--merge-into` target) to the OAEP label.
//! It is written into the Secret's annotations once, in [`scope_of`] (the SealedSecret's template
//! records it there), and handed to `seal_secret_in` as it is for the label.

use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use keyseal_api::{Scope, SealedSecret, seal_secret_in};
use keyseal_crypto::{PublicKey, seal};

use crate::cli::{Format, KubeArgs, SealArgs};
use crate::error::{Result, err, io_text};
use crate::io::{Input, read_input, render, write_atomically};

const TTY_RAW: &str = "tty detected: expecting a secret to encrypt in stdin";

/// What the flags require of every input Secret.
#[derive(Clone, Copy)]
struct Rules<'a> {
    /// The scope to seal in; `None` lets each Secret's scope annotations decide.
    scope: Option<Scope>,
    /// `--allow-empty-data`.
    allow_empty_data: bool,
    /// For `-n` and the kubeconfig context's namespace.
    kube: &'a KubeArgs,
}

impl<'a> Rules<'a> {
    fn from_flags(flags: &SealArgs, kube: &'a KubeArgs) -> Self {
        Self {
            scope: flags.scope,
            allow_empty_data: flags.allow_empty_data,
            kube,
        }
    }
}

/// The scope `secret` is sealed in: `imposed` (written into its annotations, replacing any there,
/// including by `strict`, which kubeseal cannot do; see docs/decisions.md), else its annotations'.
fn scope_of(secret: &mut Secret, imposed: Option<Scope>) -> Scope {
    match imposed {
        Some(scope) => {
            let annotations = secret
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            scope.write_annotations(annotations);
            scope
        }
        None => Scope::from_annotations(secret.metadata.annotations.as_ref()),
    }
}

/// Applies the rules to one input Secret (`at` names it in messages): the empty-data and name
/// checks, the scope, and the namespace. Returns the Secret and the scope to seal it in.
fn prepare(mut secret: Secret, at: &str, rules: Rules<'_>) -> Result<(Secret, Scope)> {
    let empty = secret.data.as_ref().is_none_or(|d| d.is_empty())
        && secret.string_data.as_ref().is_none_or(|d| d.is_empty());
    if empty && !rules.allow_empty_data {
        return Err(err(format!(
            "{at}: secret.data is empty in input Secret, assuming this is an error and aborting"
        ))
        .hint("to seal a Secret without data, pass --allow-empty-data"));
    }
    if secret.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(err(format!("{at}: missing metadata.name in input Secret"))
            .hint("give the Secret a metadata.name"));
    }
    let size = data_size(&secret);
    if size > MAX_SECRET_DATA_BYTES {
        return Err(err(format!(
            "{at}: the Secret's data and stringData hold {size} bytes; Kubernetes stores at most \
             {MAX_SECRET_DATA_BYTES} bytes (1 MiB) in one Secret, so the controller could not \
             create it"
        ))
        .hint("split the items over several Secrets"));
    }
    let scope = scope_of(&mut secret, rules.scope);
    resolve_namespace(&mut secret, scope, at, rules.kube)?;
    Ok((secret, scope))
}

/// The API server's limit on a Secret's `data` (`MaxSecretSize` in Kubernetes' validation).
const MAX_SECRET_DATA_BYTES: usize = 1 << 20;

/// The bytes of a Secret's items as the API server counts them (keys and values).
fn data_size(secret: &Secret) -> usize {
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.0.len());
    let strings = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len());
    data.chain(strings).sum()
}

/// The input's namespace, else `-n`, else (unless cluster-wide) the kubeconfig context's; an
/// input namespace that contradicts `-n` is refused unless the value may go anywhere.
fn resolve_namespace(secret: &mut Secret, scope: Scope, at: &str, kube: &KubeArgs) -> Result<()> {
    let own = secret
        .metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty());
    match (own, &kube.namespace) {
        (Some(own), Some(flag)) if own != flag && scope != Scope::ClusterWide => {
            return Err(err(format!(
                "{at}: the Secret's metadata.namespace is {own:?} but --namespace is {flag:?}"
            ))
            .hint("drop --namespace, or change metadata.namespace in the input"));
        }
        (Some(_), _) => {}
        (None, Some(flag)) => secret.metadata.namespace = Some(flag.clone()),
        (None, None) if scope != Scope::ClusterWide => {
            secret.metadata.namespace = Some(crate::kubeconfig::default_namespace(kube)?);
        }
        (None, None) => {}
    }
    Ok(())
}

/// Seals every Secret of `input` (plain sealing, no mode flag).
pub fn seal_all(
    input: &Input,
    key: &PublicKey,
    flags: &SealArgs,
    kube: &KubeArgs,
) -> Result<Vec<SealedSecret>> {
    let rules = Rules::from_flags(flags, kube);
    input
        .secrets()?
        .into_iter()
        .enumerate()
        .map(|(i, secret)| {
            let at = format!("{}: document {}", input.name, i + 1);
            let (secret, scope) = prepare(secret, &at, rules)?;
            seal_secret_in(&secret, scope, key).map_err(|e| err(format!("{at}: {e}")))
        })
        .collect()
}

/// `--merge-into`: seals the one Secret of `input` for the SealedSecret in `target` and merges
/// its items and template metadata into that file, which keeps its format.
pub fn merge_into(
    input: &Input,
    target: &Path,
    key: &PublicKey,
    flags: &SealArgs,
    kube: &KubeArgs,
) -> Result<()> {
    let (original_text, mut original) = read_merge_target(target)?;
    let mut secret = match input.secrets()?.as_slice() {
        [one] => one.clone(),
        _ => {
            return Err(err(format!(
                "{}: --merge-into takes exactly one input Secret",
                input.name
            )));
        }
    };
    // The items must be sealed for the existing object: its name, namespace and (unless the
    // input or --scope says otherwise) its scope.
    secret.metadata.name = original.metadata.name.clone();
    secret.metadata.namespace = original.metadata.namespace.clone();
    let input_scope = Scope::from_annotations(secret.metadata.annotations.as_ref());
    let target_scope = Scope::from_annotations(original.metadata.annotations.as_ref());
    let rules = Rules {
        scope: flags
            .scope
            .or((input_scope == Scope::Strict).then_some(target_scope)),
        ..Rules::from_flags(flags, kube)
    };
    let (secret, scope) = prepare(secret, &format!("{}: document 1", input.name), rules)?;
    let update =
        seal_secret_in(&secret, scope, key).map_err(|e| err(format!("{}: {e}", input.name)))?;
    merge_sealed(&mut original, update);
    // The file keeps its own format (kubeseal would rewrite a YAML file as JSON without -o yaml).
    let format = if original_text.trim_start().starts_with('{') {
        Format::Json
    } else {
        Format::Yaml
    };
    write_atomically(target, &render(&[original], format)?, 0o644)
}

/// The text of the `--merge-into` file and the one SealedSecret it must hold.
fn read_merge_target(target: &Path) -> Result<(String, SealedSecret)> {
    let text = std::fs::read_to_string(target).map_err(|e| {
        err(format!(
            "cannot read {} given with --merge-into: {}",
            target.display(),
            io_text(&e)
        ))
        .hint("--merge-into must name an existing SealedSecret file")
    })?;
    let target_input = Input {
        name: target.display().to_string(),
        bytes: text.clone().into_bytes(),
    };
    match target_input.sealed_secrets()?.as_slice() {
        [one] => Ok((text, one.clone())),
        _ => Err(err(format!(
            "{}: --merge-into needs a file with exactly one SealedSecret",
            target.display()
        ))),
    }
}

/// Adds `update`'s items, template annotations and template labels to `original`'s.
fn merge_sealed(original: &mut SealedSecret, update: SealedSecret) {
    original
        .spec
        .encrypted_data
        .extend(update.spec.encrypted_data);
    let template_meta = original
        .spec
        .template
        .metadata
        .get_or_insert_with(Default::default);
    if let Some(update_meta) = update.spec.template.metadata {
        for (mine, theirs) in [
            (&mut template_meta.annotations, update_meta.annotations),
            (&mut template_meta.labels, update_meta.labels),
        ] {
            if let Some(theirs) = theirs {
                mine.get_or_insert_with(Default::default).extend(theirs);
            }
        }
    }
}

/// The value `--raw` seals: stdin, or the one `--from-file`.
fn raw_value(flags: &SealArgs) -> Result<Vec<u8>> {
    match flags.from_file.as_slice() {
        [] => Ok(read_input(None, "stdin", TTY_RAW)?.bytes),
        [one] => {
            let path = one.split_once('=').map_or(one.as_str(), |(_, path)| path);
            std::fs::read(path).map_err(|e| {
                err(format!(
                    "cannot read {path} given with --from-file: {}",
                    io_text(&e)
                ))
            })
        }
        _ => Err(err(
            "must provide only one --from-file when encrypting a single item with --raw",
        )),
    }
}

/// `--raw`: the value sealed for `--scope` (default strict), `--name` and the namespace.
pub fn seal_raw(key: &PublicKey, flags: &SealArgs, kube: &KubeArgs) -> Result<Vec<u8>> {
    let value = raw_value(flags)?;
    let scope = flags.scope.unwrap_or_default();
    let namespace = if scope == Scope::ClusterWide {
        String::new()
    } else {
        crate::kubeconfig::default_namespace(kube)?
    };
    let name = flags.name.clone().unwrap_or_default();
    if scope == Scope::Strict && name.is_empty() {
        return Err(
            err("must provide the --name flag with --raw and --scope strict")
                .hint("add --name <secret name>, or use --scope namespace-wide or cluster-wide"),
        );
    }
    seal(key, &scope.label(&namespace, &name), &value)
        .map_err(|e| err(format!("cannot seal the value: {e}")))
}
