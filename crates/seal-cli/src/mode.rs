//! What one `keyseal` invocation does, decided once from the parsed flags: `--version`, a
//! keyseal-only subcommand, or one of kubeseal's modes in kubeseal's order of precedence
//! (recovery-unseal, validate, re-encrypt, fetch-cert, merge-into, raw, then plain sealing).
//! `run::run` dispatches on it in a single `match`.

use std::path::PathBuf;

use crate::cli::{
    BackupArgs, Command, GenerateArgs, KeysCommand, ListArgs, PublishCertArgs, RestoreArgs,
    SealArgs,
};
use crate::error::{Result, err};

/// The one thing an invocation does.
#[derive(Debug)]
pub enum Mode {
    /// `--version`: print the version line.
    Version,
    /// `keyseal completion <shell>`: print a completion script.
    Completion(clap_complete::Shell),
    /// `keyseal keys generate`: write a new key pair.
    GenerateKeys(GenerateArgs),
    /// `keyseal keys publish-cert`: publish a certificate to Azure Key Vault.
    PublishCert(PublishCertArgs),
    /// `keyseal keys backup`: the cluster's key Secrets to the vault or a file.
    BackupKeys(BackupArgs),
    /// `keyseal keys restore`: backed-up key Secrets into the cluster.
    RestoreKeys(RestoreArgs),
    /// `keyseal keys list`: the keys in the cluster and the vault.
    ListKeys(ListArgs),
    /// `--recovery-unseal`: decrypt SealedSecrets offline with these backed-up key files.
    RecoveryUnseal(Vec<PathBuf>),
    /// `--validate`: ask the controller whether it can decrypt the input.
    Validate,
    /// `--re-encrypt`: have the controller re-seal the input with its newest key.
    ReEncrypt,
    /// `--fetch-cert`: print the sealing certificate.
    FetchCert,
    /// `--merge-into <file>`: seal the input's items into this SealedSecret file, in place.
    MergeInto(PathBuf),
    /// `--raw`: seal one value and print only its base64.
    Raw,
    /// No mode flag: seal the input Secrets.
    Seal,
}

impl Mode {
    /// The mode the subcommand and flags select. When several mode flags are given the first in
    /// kubeseal's precedence wins, as in kubeseal; the combinations kubeseal refuses are errors.
    pub fn select(command: Option<Command>, flags: &SealArgs) -> Result<Mode> {
        if flags.version {
            return Ok(Mode::Version);
        }
        if let Some(command) = command {
            return Ok(match command {
                Command::Completion { shell } => Mode::Completion(shell),
                Command::Keys(KeysCommand::Generate(args)) => Mode::GenerateKeys(args),
                Command::Keys(KeysCommand::PublishCert(args)) => Mode::PublishCert(args),
                Command::Keys(KeysCommand::Backup(args)) => Mode::BackupKeys(args),
                Command::Keys(KeysCommand::Restore(args)) => Mode::RestoreKeys(args),
                Command::Keys(KeysCommand::List(args)) => Mode::ListKeys(args),
            });
        }
        if !flags.from_file.is_empty() && !flags.raw {
            return Err(err("--from-file requires --raw")
                .hint("use --raw to seal a single value read from a file"));
        }
        Ok(if flags.recovery_unseal {
            Mode::RecoveryUnseal(flags.recovery_private_key.clone())
        } else if flags.validate {
            Mode::Validate
        } else if flags.re_encrypt {
            Mode::ReEncrypt
        } else if flags.fetch_cert {
            Mode::FetchCert
        } else if let Some(target) = &flags.merge_into {
            Mode::MergeInto(target.clone())
        } else if flags.raw {
            Mode::Raw
        } else {
            Mode::Seal
        })
    }

    /// kubeseal's warning about a flag this mode ignores, if any.
    pub fn warning(&self, flags: &SealArgs) -> Option<&'static str> {
        let kubeseal_mode = !matches!(
            self,
            Mode::Version
                | Mode::Completion(_)
                | Mode::GenerateKeys(_)
                | Mode::PublishCert(_)
                | Mode::BackupKeys(_)
                | Mode::RestoreKeys(_)
                | Mode::ListKeys(_)
        );
        let unused_keys =
            !matches!(self, Mode::RecoveryUnseal(_)) && !flags.recovery_private_key.is_empty();
        (kubeseal_mode && unused_keys).then_some(
            "ignoring --recovery-private-key because unseal command not chosen with --recovery-unseal",
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Mode;
    use crate::cli::Cli;

    fn select(args: &[&str]) -> Result<Mode, String> {
        let cli = Cli::try_parse_from([&["keyseal"], args].concat()).map_err(|e| e.to_string())?;
        Mode::select(cli.command, &cli.seal).map_err(|e| e.message)
    }

    #[test]
    fn mode_flags_follow_kubeseal_precedence() {
        use std::mem::discriminant;
        let order: [(&[&str], Mode); 7] = [
            (&["--recovery-unseal"], Mode::RecoveryUnseal(Vec::new())),
            (&["--validate"], Mode::Validate),
            (&["--re-encrypt"], Mode::ReEncrypt),
            (&["--fetch-cert"], Mode::FetchCert),
            (
                &["--merge-into", "s.yaml"],
                Mode::MergeInto("s.yaml".into()),
            ),
            (&["--raw"], Mode::Raw),
            (&[], Mode::Seal),
        ];
        // Each mode flag wins over every flag after it.
        for (i, (flag, expected)) in order.iter().enumerate() {
            let mut args: Vec<&str> = flag.to_vec();
            for (later, _) in &order[i + 1..] {
                args.extend_from_slice(later);
            }
            let mode = select(&args).unwrap();
            assert_eq!(
                discriminant(&mode),
                discriminant(expected),
                "{args:?} selected {mode:?}"
            );
        }
        assert!(matches!(select(&["--rotate"]).unwrap(), Mode::ReEncrypt));
    }

    #[test]
    fn version_and_subcommands_come_first() {
        assert!(matches!(
            select(&["--version", "--recovery-unseal", "--from-file", "x"]).unwrap(),
            Mode::Version
        ));
        assert!(matches!(
            select(&["completion", "bash"]).unwrap(),
            Mode::Completion(_)
        ));
        assert!(matches!(
            select(&["keys", "generate", "--key-out", "k", "--cert-out", "c"]).unwrap(),
            Mode::GenerateKeys(_)
        ));
        assert!(matches!(
            select(&["keys", "backup", "--to-file", "k.yaml"]).unwrap(),
            Mode::BackupKeys(_)
        ));
        assert!(matches!(
            select(&["keys", "restore", "--dry-run", "--from-file", "k.yaml"]).unwrap(),
            Mode::RestoreKeys(_)
        ));
        assert!(select(&["--raw", "completion", "bash"]).is_err());
    }

    #[test]
    fn from_file_requires_raw_whatever_the_mode() {
        for args in [
            &["--from-file", "v.txt"][..],
            &["--fetch-cert", "--from-file", "v.txt"],
            &["--recovery-unseal", "--from-file", "v.txt"],
        ] {
            assert_eq!(select(args).unwrap_err(), "--from-file requires --raw");
        }
        assert!(matches!(
            select(&["--raw", "--from-file", "v.txt"]).unwrap(),
            Mode::Raw
        ));
    }

    #[test]
    fn recovery_keys_outside_recovery_unseal_are_warned_about() {
        let warning = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["keyseal"], args].concat()).unwrap();
            Mode::select(cli.command, &cli.seal)
                .unwrap()
                .warning(&cli.seal)
        };
        assert!(
            warning(&["--recovery-private-key", "k.pem"])
                .unwrap()
                .starts_with("ignoring --recovery-private-key")
        );
        assert_eq!(
            warning(&["--recovery-unseal", "--recovery-private-key", "k.pem"]),
            None
        );
        assert_eq!(warning(&["--raw"]), None);
    }
}
