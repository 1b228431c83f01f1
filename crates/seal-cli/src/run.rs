//! Runs one invocation: selects its [`Mode`] from the flags and dispatches on it in one `match`.
//! The sealing modes live in `sealing`, recovery in `recovery`; the online ones are here.

use std::path::PathBuf;

use clap::CommandFactory;
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::{SealedSecret, input};
use keyseal_crypto::{PublicKey, encode_base64};
use serde::Serialize;

use crate::cli::{Cli, Format, KeyVaultArgs, KubeArgs, SealArgs};
use crate::controller_client::ControllerProxy;
use crate::error::{Result, err};
use crate::io::{Input, Output, read_input};
use crate::mode::Mode;

const TTY_RESOURCE: &str = "tty detected: expecting json/yaml k8s resource in stdin";

/// Permission bits of a file that holds plaintext (`--recovery-unseal -w`).
const PRIVATE: u32 = 0o600;
/// Permission bits of a file that holds sealed values or a certificate.
const PUBLIC: u32 = 0o644;

/// Runs the command line.
pub fn run(cli: Cli) -> Result<()> {
    let Cli {
        command,
        seal: flags,
        kube,
        keyvault,
    } = cli;
    let mode = Mode::select(command, &flags)?;
    if let Some(warning) = mode.warning(&flags) {
        eprintln!("warning: {warning}");
    }
    let to = Destination::from_flags(&flags);
    let read_resources = || read_input(flags.secret_file.as_deref(), "--secret-file", TTY_RESOURCE);
    let key = || sealing_key(&flags, &kube, &keyvault);
    match mode {
        Mode::Version => {
            // Upstream's form, `v<semver>`, so tools that parse kubeseal's version line parse ours.
            println!("keyseal version: v{}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Mode::Completion(shell) => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "keyseal", &mut std::io::stdout());
            Ok(())
        }
        Mode::GenerateKeys(args) => crate::keys::generate(&args),
        Mode::PublishCert(args) => crate::vault::publish(&args),
        Mode::RecoveryUnseal(key_files) => {
            let secrets = crate::recovery::recovery_unseal(&read_resources()?, &key_files)?;
            to.write_objects(&secrets, PRIVATE)
        }
        Mode::Validate => validate(&read_resources()?, &flags, &kube),
        Mode::ReEncrypt => {
            to.write_objects(&re_encrypt(&read_resources()?, &flags, &kube)?, PUBLIC)
        }
        Mode::FetchCert => to
            .output(PUBLIC)
            .write(&crate::cert::fetch_pem(&flags, &kube, &keyvault)?),
        Mode::MergeInto(target) => {
            let key = key()?;
            crate::sealing::merge_into(&read_resources()?, &target, &key, &flags, &kube)
        }
        Mode::Raw => {
            let key = key()?;
            let sealed = crate::sealing::seal_raw(&key, &flags, &kube)?;
            to.output(PUBLIC).write(encode_base64(&sealed).as_bytes())
        }
        Mode::Seal => {
            let key = key()?;
            let sealed = crate::sealing::seal_all(&read_resources()?, &key, &flags, &kube)?;
            to.write_objects(&sealed, PUBLIC)
        }
    }
}

/// The sealing key of the certificate `--cert` names (or the controller serves).
fn sealing_key(flags: &SealArgs, kube: &KubeArgs, keyvault: &KeyVaultArgs) -> Result<PublicKey> {
    let source = flags.cert.clone().unwrap_or_else(|| {
        format!(
            "the controller {}/{}",
            flags.controller_namespace, flags.controller_name
        )
    });
    let pem = crate::cert::fetch_pem(flags, kube, keyvault)?;
    crate::cert::sealing_key(&pem, &source)
}

/// Where a mode's result goes, and in which format.
struct Destination {
    /// `-w`; or, for `--re-encrypt` given only `-f`, that file, rewritten; stdout when `None`.
    path: Option<PathBuf>,
    /// `-o`, unless the file's extension is `.yaml` or `.yml`.
    format: Format,
}

impl Destination {
    fn from_flags(flags: &SealArgs) -> Self {
        let path = match (
            &flags.sealed_secret_file,
            flags.re_encrypt,
            &flags.secret_file,
        ) {
            (Some(w), _, _) => Some(w.clone()),
            (None, true, Some(f)) => Some(f.clone()),
            _ => None,
        };
        let format = match &path {
            Some(p) if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) => {
                Format::Yaml
            }
            _ => flags.format,
        };
        Self { path, format }
    }

    /// The output, creating a new file with permission bits `mode`.
    fn output(&self, mode: u32) -> Output {
        match &self.path {
            Some(path) => Output::File {
                path: path.clone(),
                mode,
            },
            None => Output::Stdout,
        }
    }

    fn write_objects<T: Serialize>(&self, objects: &[T], mode: u32) -> Result<()> {
        self.output(mode).write(&render(objects, self.format)?)
    }
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

/// The Secrets in `input`.
pub fn parse_secrets(input: &Input) -> Result<Vec<Secret>> {
    input::secrets(input.text()?).map_err(|e| err(format!("{}: {e}", input.name)))
}

/// The SealedSecrets in `input`.
pub fn parse_sealed(input: &Input) -> Result<Vec<SealedSecret>> {
    input::sealed_secrets(input.text()?).map_err(|e| err(format!("{}: {e}", input.name)))
}

/// `namespace/name`, or `name` without a namespace, as messages name an object.
pub fn object_name(ns: Option<&str>, name: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("{ns}/{}", name.unwrap_or("")),
        None => name.unwrap_or("").to_owned(),
    }
}

fn validate(input: &Input, flags: &SealArgs, kube: &KubeArgs) -> Result<()> {
    let sealed = parse_sealed(input)?;
    crate::runtime::block_on(async {
        let proxy = ControllerProxy::connect(kube, flags).await?;
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

fn re_encrypt(input: &Input, flags: &SealArgs, kube: &KubeArgs) -> Result<Vec<SealedSecret>> {
    let sealed = parse_sealed(input)?;
    crate::runtime::block_on(async {
        let proxy = ControllerProxy::connect(kube, flags).await?;
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
