//! `keyseal`: seal Kubernetes Secrets for a cluster, flag-compatible with kubeseal.

#![forbid(unsafe_code)]

mod cert;
mod cli;
mod controller_client;
mod error;
mod io;
mod keys;
mod kubeconfig;
mod run;
mod runtime;
mod vault;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    // One TLS crypto provider for the kube client and --cert https:// URLs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if cli.seal.version {
        // Upstream's form, `v<semver>`, so tools that parse kubeseal's version line parse ours.
        println!("keyseal version: v{}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let result = match &cli.command {
        Some(cli::Command::Completion { shell }) => {
            clap_complete::generate(
                *shell,
                &mut cli::Cli::command(),
                "keyseal",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Some(cli::Command::Keys(cli::KeysCommand::Generate(args))) => keys::generate(args),
        Some(cli::Command::Keys(cli::KeysCommand::PublishCert(args))) => vault::publish(args),
        None => run::run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(hint) = e.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
