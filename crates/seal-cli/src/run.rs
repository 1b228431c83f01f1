//! Runs one invocation: selects its [`Mode`] from the flags and dispatches on it in one `match`.
//! The work itself lives in the modules named in each arm.

use clap::CommandFactory;
use keyseal_crypto::encode_base64;

use crate::cli::Cli;
use crate::error::Result;
use crate::io::{Destination, read_input};
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
    let key = || crate::cert::fetch_sealing_key(&flags, &kube, &keyvault);
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
        Mode::BackupKeys(args) => crate::key_backup::backup(&args, &kube),
        Mode::RestoreKeys(args) => crate::key_backup::restore(&args, &kube),
        Mode::ListKeys(args) => crate::key_backup::list(&args, &kube),
        Mode::RecoveryUnseal(key_files) => {
            let secrets =
                crate::recovery::recovery_unseal(&read_resources()?, &key_files, &keyvault)?;
            to.write_objects(&secrets, PRIVATE)
        }
        Mode::Validate => crate::online::validate(&read_resources()?, &flags, &kube),
        Mode::ReEncrypt => {
            let rotated = crate::online::re_encrypt(&read_resources()?, &flags, &kube)?;
            to.write_objects(&rotated, PUBLIC)
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
