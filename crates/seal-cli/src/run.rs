//! The modes of `keyseal`, in kubeseal's order of precedence: recovery-unseal, validate,
//! re-encrypt, fetch-cert, merge-into, raw, and plain sealing.

use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use keyseal_api::key_secret::keys_from_backup;
use keyseal_api::{Scope, SealedSecret, UnsealError, UnsealOptions, input, seal_secret, unseal};
use keyseal_crypto::{PrivateKey, PublicKey, encode_base64, seal};
use serde::Serialize;

use crate::cli::{Cli, Format, KubeArgs, SealArgs};
use crate::controller_client::ControllerProxy;
use crate::error::{CliError, Result, err, io_text};
use crate::io::{Input, Output, read_input, write_atomically};

const TTY_RESOURCE: &str = "tty detected: expecting json/yaml k8s resource in stdin";
const TTY_RAW: &str = "tty detected: expecting a secret to encrypt in stdin";

/// Runs the command line.
pub fn run(cli: Cli) -> Result<()> {
    let Cli {
        seal: args,
        kube,
        keyvault,
        ..
    } = cli;
    if !args.from_file.is_empty() && !args.raw {
        return Err(err("--from-file requires --raw")
            .hint("use --raw to seal a single value read from a file"));
    }
    if !args.recovery_unseal && !args.recovery_private_key.is_empty() {
        eprintln!(
            "warning: ignoring --recovery-private-key because unseal command not chosen with --recovery-unseal"
        );
    }

    // --re-encrypt given only an input file rewrites that file.
    let output_path = match (&args.sealed_secret_file, args.re_encrypt, &args.secret_file) {
        (Some(w), _, _) => Some(w.clone()),
        (None, true, Some(f)) => Some(f.clone()),
        _ => None,
    };
    let format = match &output_path {
        Some(p) if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) => {
            Format::Yaml
        }
        _ => args.format,
    };
    let output = |mode| match &output_path {
        Some(path) => Output::File {
            path: path.clone(),
            mode,
        },
        None => Output::Stdout,
    };
    let read_resources = || read_input(args.secret_file.as_deref(), "--secret-file", TTY_RESOURCE);

    if args.recovery_unseal {
        let secrets = recovery_unseal(&read_resources()?, &args.recovery_private_key)?;
        return output(0o600).write(&render(&secrets, format)?);
    }
    if args.validate {
        return validate(&read_resources()?, &args, &kube);
    }
    if args.re_encrypt {
        let rotated = re_encrypt(&read_resources()?, &args, &kube)?;
        return output(0o644).write(&render(&rotated, format)?);
    }

    let source = args.cert.clone().unwrap_or_else(|| {
        format!(
            "the controller {}/{}",
            args.controller_namespace, args.controller_name
        )
    });
    let pem = crate::cert::fetch_pem(&args, &kube, &keyvault)?;
    if args.fetch_cert {
        return output(0o644).write(&pem);
    }
    let key = crate::cert::sealing_key(&pem, &source)?;

    if let Some(target) = &args.merge_into {
        return merge_into(&read_resources()?, target, &key, &args, &kube);
    }
    if args.raw {
        let value = raw_value(&args)?;
        return output(0o644)
            .write(encode_base64(&seal_raw(&value, &key, &args, &kube)?).as_bytes());
    }
    let input = read_resources()?;
    let sealed = seal_all(&input, &key, &args, &kube)?;
    output(0o644).write(&render(&sealed, format)?)
}

/// Serializes objects: pretty JSON each followed by a newline, or YAML each preceded by `---`.
pub fn render<T: Serialize>(objects: &[T], format: Format) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for object in objects {
        match format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, object)
                    .map_err(|e| err(format!("cannot encode JSON: {e}")))?;
                out.push(b'\n');
            }
            Format::Yaml => {
                out.extend_from_slice(b"---\n");
                let yaml = keyseal_api::to_yaml(object)
                    .map_err(|e| err(format!("cannot encode YAML: {e}")))?;
                out.extend_from_slice(yaml.as_bytes());
            }
        }
    }
    Ok(out)
}

fn parse_secrets(input: &Input) -> Result<Vec<Secret>> {
    input::secrets(input.text()?).map_err(|e| err(format!("{}: {e}", input.name)))
}

fn parse_sealed(input: &Input) -> Result<Vec<SealedSecret>> {
    input::sealed_secrets(input.text()?).map_err(|e| err(format!("{}: {e}", input.name)))
}

fn object_name(ns: Option<&str>, name: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("{ns}/{}", name.unwrap_or("")),
        None => name.unwrap_or("").to_owned(),
    }
}

/// Applies the flags to one input Secret: empty-data check, --scope, namespace resolution.
fn prepare(
    mut secret: Secret,
    index: usize,
    input: &Input,
    args: &SealArgs,
    kube: &KubeArgs,
) -> Result<Secret> {
    let at = format!("{}: document {index}", input.name);
    let empty = secret.data.as_ref().is_none_or(|d| d.is_empty())
        && secret.string_data.as_ref().is_none_or(|d| d.is_empty());
    if empty && !args.allow_empty_data {
        return Err(err(format!(
            "{at}: secret.data is empty in input Secret, assuming this is an error and aborting"
        ))
        .hint("to seal a Secret without data, pass --allow-empty-data"));
    }
    if secret.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(err(format!("{at}: missing metadata.name in input Secret"))
            .hint("give the Secret a metadata.name"));
    }
    // An explicit --scope always wins, including `strict`, which removes scope annotations the
    // input carries (kubeseal cannot remove them; see docs/decisions.md).
    if let Some(scope) = args.scope {
        scope.write_annotations(
            secret
                .metadata
                .annotations
                .get_or_insert_with(Default::default),
        );
    }
    let scope = Scope::from_annotations(secret.metadata.annotations.as_ref());
    match (
        secret
            .metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty()),
        &kube.namespace,
    ) {
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
    Ok(secret)
}

fn seal_all(
    input: &Input,
    key: &PublicKey,
    args: &SealArgs,
    kube: &KubeArgs,
) -> Result<Vec<SealedSecret>> {
    parse_secrets(input)?
        .into_iter()
        .enumerate()
        .map(|(i, secret)| {
            let secret = prepare(secret, i + 1, input, args, kube)?;
            seal_secret(&secret, key)
                .map_err(|e| err(format!("{}: document {}: {e}", input.name, i + 1)))
        })
        .collect()
}

fn merge_into(
    input: &Input,
    target: &Path,
    key: &PublicKey,
    args: &SealArgs,
    kube: &KubeArgs,
) -> Result<()> {
    let original_text = std::fs::read_to_string(target).map_err(|e| {
        err(format!(
            "cannot read {} given with --merge-into: {}",
            target.display(),
            io_text(&e)
        ))
        .hint("--merge-into must name an existing SealedSecret file")
    })?;
    let target_input = Input {
        name: target.display().to_string(),
        bytes: original_text.clone().into_bytes(),
    };
    let mut original = match parse_sealed(&target_input)?.as_slice() {
        [one] => one.clone(),
        _ => {
            return Err(err(format!(
                "{}: --merge-into needs a file with exactly one SealedSecret",
                target.display()
            )));
        }
    };
    let mut secret = match parse_secrets(input)?.as_slice() {
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
    if args.scope.is_none() && input_scope == Scope::Strict {
        Scope::from_annotations(original.metadata.annotations.as_ref()).write_annotations(
            secret
                .metadata
                .annotations
                .get_or_insert_with(Default::default),
        );
    }
    let secret = prepare(secret, 1, input, args, kube)?;
    let update = seal_secret(&secret, key).map_err(|e| err(format!("{}: {e}", input.name)))?;

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
    // The file keeps its own format (kubeseal would rewrite a YAML file as JSON without -o yaml).
    let format = if original_text.trim_start().starts_with('{') {
        Format::Json
    } else {
        Format::Yaml
    };
    write_atomically(target, &render(&[original], format)?, 0o644)
}

fn raw_value(args: &SealArgs) -> Result<Vec<u8>> {
    match args.from_file.as_slice() {
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

fn seal_raw(value: &[u8], key: &PublicKey, args: &SealArgs, kube: &KubeArgs) -> Result<Vec<u8>> {
    let scope = args.scope.unwrap_or_default();
    let namespace = if scope == Scope::ClusterWide {
        String::new()
    } else {
        crate::kubeconfig::default_namespace(kube)?
    };
    let name = args.name.clone().unwrap_or_default();
    if scope == Scope::Strict && name.is_empty() {
        return Err(
            err("must provide the --name flag with --raw and --scope strict")
                .hint("add --name <secret name>, or use --scope namespace-wide or cluster-wide"),
        );
    }
    seal(key, &scope.label(&namespace, &name), value)
        .map_err(|e| err(format!("cannot seal the value: {e}")))
}

fn load_recovery_keys(files: &[std::path::PathBuf]) -> Result<Vec<PrivateKey>> {
    let mut keys = Vec::new();
    for file in files {
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

fn recovery_unseal(input: &Input, key_files: &[std::path::PathBuf]) -> Result<Vec<Secret>> {
    let keys = load_recovery_keys(key_files)?;
    let refs: Vec<&PrivateKey> = keys.iter().collect();
    parse_sealed(input)?
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

fn validate(input: &Input, args: &SealArgs, kube: &KubeArgs) -> Result<()> {
    let sealed = parse_sealed(input)?;
    crate::runtime::block_on(async {
        let proxy = ControllerProxy::connect(kube, args).await?;
        for ss in &sealed {
            let body =
                serde_json::to_vec(ss).map_err(|e| err(format!("cannot encode JSON: {e}")))?;
            if !proxy.verify(body).await? {
                let name = object_name(
                    ss.metadata.namespace.as_deref(),
                    ss.metadata.name.as_deref(),
                );
                return Err(err(format!("{}: unable to decrypt sealed secret {name}", input.name))
                    .hint("it was sealed with another cluster's key, or for another namespace, name or scope"));
            }
        }
        Ok(())
    })
}

fn re_encrypt(input: &Input, args: &SealArgs, kube: &KubeArgs) -> Result<Vec<SealedSecret>> {
    let sealed = parse_sealed(input)?;
    crate::runtime::block_on(async {
        let proxy = ControllerProxy::connect(kube, args).await?;
        let mut out = Vec::new();
        for ss in &sealed {
            let body =
                serde_json::to_vec(ss).map_err(|e| err(format!("cannot encode JSON: {e}")))?;
            let text = proxy.rotate(body).await?;
            let mut rotated: SealedSecret = serde_json::from_str(&text).map_err(|e| {
                err(format!(
                    "the controller's /v1/rotate answer is not a SealedSecret: {e}"
                ))
            })?;
            rotated.metadata.creation_timestamp = None;
            rotated.metadata.deletion_timestamp = None;
            rotated.metadata.generation = None;
            out.push(rotated);
        }
        Ok(out)
    })
}
