//! `keyseal-bench`: prints keyseal's performance figures, each next to a reference measured in
//! the same run (OpenSSL for the RSA primitives, upstream `kubeseal` for the CLI), as a ratio.
//!
//! Figures from a shared, noisy machine only mean something relative to a reference taken
//! minutes apart on the same cores, which is why nothing here is a test and nothing asserts a
//! timing.

mod cli;
mod crypto;
mod openssl;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Benchmarks keyseal against OpenSSL and upstream kubeseal; run with `--release`.
#[derive(Debug, Parser)]
#[command(name = "keyseal-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// RSA-4096 seal and unseal ops/s of keyseal-crypto next to `openssl speed rsa4096`.
    Crypto(CryptoArgs),
    /// Wall time of one cold `keyseal --cert` process next to upstream `kubeseal --cert`.
    Cli(CliArgs),
    /// Both `crypto` and `cli`, in that order.
    All {
        #[command(flatten)]
        crypto: CryptoArgs,
        #[command(flatten)]
        cli: CliArgs,
    },
}

/// Flags of the `crypto` benchmark.
#[derive(Debug, Args)]
pub struct CryptoArgs {
    /// Wall time, in seconds, spent on each operation (keyseal and openssl alike).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub seconds: u64,
    /// The `openssl` executable used as the reference.
    #[arg(long, default_value = "openssl", value_name = "PATH")]
    pub openssl: PathBuf,
}

/// Flags of the `cli` benchmark.
#[derive(Debug, Args)]
pub struct CliArgs {
    /// Timed runs of each command (after one untimed warm-up run each).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub runs: u32,
    /// The keyseal binary to time [default: <workspace>/target/release/keyseal; build it with
    /// `cargo build --release -p keyseal-cli`].
    #[arg(long, value_name = "PATH")]
    pub keyseal: Option<PathBuf>,
    /// The upstream kubeseal binary to time [default: the one `scripts/fixtures` built into its
    /// cache, if any].
    #[arg(long, value_name = "PATH")]
    pub kubeseal: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crypto(args) => crypto::run(&args),
        Command::Cli(args) => cli::run(&args),
        Command::All { crypto, cli } => crypto::run(&crypto).and_then(|()| {
            println!();
            cli::run(&cli)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keyseal-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root, where `target/` and `scripts/` live.
fn workspace_root() -> PathBuf {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench.parent().unwrap_or(bench).to_path_buf()
}

/// What every report opens with: the conditions the figures were taken under.
fn print_machine() {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("machine: {cores} core(s) available to this process");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn all_takes_both_flag_sets() {
        let cli = Cli::try_parse_from([
            "keyseal-bench",
            "all",
            "--seconds",
            "1",
            "--runs",
            "5",
            "--keyseal",
            "/x/keyseal",
        ])
        .unwrap();
        let Command::All { crypto, cli } = cli.command else {
            panic!("expected `all`");
        };
        assert_eq!(crypto.seconds, 1);
        assert_eq!(cli.runs, 5);
        assert_eq!(cli.keyseal, Some(PathBuf::from("/x/keyseal")));
    }
}
