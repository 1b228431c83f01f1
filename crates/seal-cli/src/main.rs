//! `keyseal`: seal Kubernetes Secrets for a cluster, flag-compatible with kubeseal.
//!
//! # Adding a mode or subcommand
//!
//! 1. Declare its flags in `cli.rs`: a kubeseal-style flag on `SealArgs` with its
//!    `SEALED_SECRETS_<FLAG>` variable (a unit test there checks the names and counts the flags),
//!    or a keyseal-only subcommand on `Command`/`KeysCommand` with its own `Args` struct. A doc
//!    comment on each flag is its help text.
//! 2. Add a variant to `mode::Mode` and select it in `Mode::select`, at its place in kubeseal's
//!    precedence; flag combinations to refuse are refused there too (with a unit test beside it).
//! 3. Handle the variant in the one `match` in `run::run`, calling a function in the module that
//!    owns the work (`sealing`, `recovery`, `online`, `keys`, `vault`), which returns what the
//!    arm writes through `io::Destination`.
//! 4. Test it end to end in `tests/cli.rs` through `tests/util` (`Env::run`, `Run::fails_with`);
//!    behaviour shared with upstream kubeseal goes in `tests/upstream.rs`, against its fixture.

#![forbid(unsafe_code)]

mod cert;
mod cli;
mod controller_client;
mod error;
mod io;
mod key_backup;
mod keys;
mod kubeconfig;
mod mode;
mod online;
mod recovery;
mod run;
mod runtime;
mod sealing;
mod vault;

use std::process::ExitCode;

use clap::Parser;

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
    match run::run(cli) {
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
