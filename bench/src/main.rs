//! `keyseal-bench`: prints keyseal's performance figures, each next to a reference measured in
//! the same run (OpenSSL for the RSA primitives, upstream `kubeseal` for the CLI, the upstream
//! controller for keyseal-controller), as a ratio.
//!
//! Figures from a shared, noisy machine only mean something relative to a reference taken
//! minutes apart on the same cores, which is why nothing here is a test and nothing asserts a
//! timing.

#![forbid(unsafe_code)]

mod cli;
mod controller;
mod crypto;
mod faults;
mod hostile;
mod load;
mod openssl;
mod renewal;
mod rig;
mod startup;
mod stats;
mod timing;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// keyseal-controller next to the upstream controller (defaults, and QPS/burst raised) on
    /// the local control plane: time to unseal, and peak RSS. Needs `scripts/cluster up`.
    Controller(ControllerArgs),
    /// Key renewal: SIGUSR1 to the new certificate served, with Key Vault backups (backup before
    /// activation, keyseal's Key Vault test server) next to without. Needs `scripts/cluster up`.
    Renewal(RenewalArgs),
    /// What a hostile SealedSecret costs the controller: CPU time and memory per object of each
    /// bad class next to good objects, same controller, same run. Needs `scripts/cluster up`.
    Hostile(HostileArgs),
    /// keyseal-controller under faults of a private control plane (kube-apiserver restart,
    /// SIGKILLs, leader kill, etcd pause, cut connections, Key Vault outage and throttling):
    /// time to converge, API request rate before/during/after, and checks (exit 1 if any fails).
    Faults(FaultsArgs),
    /// 10,000 SealedSecrets created at once on a private plane: time to all-Synced, API requests
    /// per object, peak RSS, `/healthz` and `/v1/cert.pem` latency throughout next to idle.
    Load(LoadArgs),
    /// Start-up, restart and failover of keyseal-controller next to the upstream controller on
    /// a private plane, and the ceilings (RSA on all cores, API writes by a plain client) that
    /// keyseal's initial-sync throughput is a fraction of. Needs root and the upstream fixture.
    Startup(StartupArgs),
    /// dudect-style timing test of `keyseal_crypto::open`: Welch's t between input classes that
    /// must be indistinguishable (exits non-zero when one pair exceeds the threshold).
    Timing(TimingArgs),
    /// Both `crypto` and `cli`, in that order (not `controller`: it needs a cluster and minutes).
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

/// Flags of the `renewal` benchmark.
#[derive(Debug, Args)]
pub struct RenewalArgs {
    /// Renewals timed with and without the vault each.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// The keyseal-controller binary [default: <target>/release/keyseal-controller].
    #[arg(long, value_name = "PATH")]
    pub controller: Option<PathBuf>,
}

/// Flags of the `hostile` benchmark.
#[derive(Debug, Args)]
pub struct HostileArgs {
    /// Objects per class (the two heaviest classes get a tenth).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(10..=10_000).map(|n| n as usize))]
    pub count: usize,
    /// The keyseal-controller binary [default: <target>/release/keyseal-controller].
    #[arg(long, value_name = "PATH")]
    pub controller: Option<PathBuf>,
}

/// Flags of the `faults` benchmark.
#[derive(Debug, Args)]
pub struct FaultsArgs {
    /// The keyseal-controller binary [default: <target>/release/keyseal-controller].
    #[arg(long, value_name = "PATH")]
    pub controller: Option<PathBuf>,
    /// Smaller sizes: 100 SealedSecrets, 5 kills, shorter faults and idle windows.
    #[arg(long)]
    pub quick: bool,
    /// Faults to run, comma-separated [default: all: apiserver-restart, controller-kill,
    /// leader-kill, etcd-pause, watch-cut, vault-outage, vault-throttle].
    #[arg(long, value_delimiter = ',')]
    pub faults: Option<Vec<String>>,
    /// SealedSecrets reconciled during each fault [default: 1000; --quick: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000).map(|n| n as usize))]
    pub count: Option<usize>,
    /// SIGKILLs of the controller [default: 20; --quick: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000).map(|n| n as usize))]
    pub kills: Option<usize>,
    /// Each kill comes a random 0..MS milliseconds after the controller took the lease.
    #[arg(long, value_name = "MS")]
    pub kill_window_ms: Option<u64>,
    /// How long etcd stays stopped [default: 5; --quick: 3].
    #[arg(long, value_name = "SECS")]
    pub pause_secs: Option<u64>,
    /// How long new connections are refused after the cut [default: 3; --quick: 2].
    #[arg(long, value_name = "SECS")]
    pub cut_secs: Option<u64>,
    /// How long the vault answers 503/429 [default: 10; --quick: 5].
    #[arg(long, value_name = "SECS")]
    pub outage_secs: Option<u64>,
    /// Idle windows the request rate is measured over [default: 10; --quick: 5].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=600))]
    pub idle_secs: Option<u64>,
    /// Limit for convergence after each fault [default: 600; --quick: 120].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Seed of the kill delays (printed; replays a run).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Flags of the `load` benchmark.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The keyseal-controller binary [default: <target>/release/keyseal-controller].
    #[arg(long, value_name = "PATH")]
    pub controller: Option<PathBuf>,
    /// Smaller size: 1,000 SealedSecrets.
    #[arg(long)]
    pub quick: bool,
    /// SealedSecrets created at once [default: 10000; --quick: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub count: Option<usize>,
    /// Create requests in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=512).map(|n| n as usize))]
    pub concurrency: usize,
    /// Limit for all-Synced, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

/// Flags of the `startup` benchmark.
#[derive(Debug, Args)]
pub struct StartupArgs {
    /// The keyseal-controller binary [default: <target>/release/keyseal-controller].
    #[arg(long, value_name = "PATH")]
    pub controller: Option<PathBuf>,
    /// The upstream controller binary [default: the one `scripts/fixtures` builds].
    #[arg(long, value_name = "PATH")]
    pub upstream: Option<PathBuf>,
    /// Smaller size: 1,000 SealedSecrets, 300 s limits.
    #[arg(long)]
    pub quick: bool,
    /// SealedSecrets synced before the restart [default: 10000; --quick: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub count: Option<usize>,
    /// SealedSecrets created per second while the leader is killed (failover).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rate: u32,
    /// Failovers per controller (kills of the leader).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100).map(|n| n as usize))]
    pub kills: usize,
    /// Seconds of arrivals before each kill.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub warm_secs: u64,
    /// Limit of each wait (a sweep, a failover), in seconds; a wait that hits it is reported
    /// as a lower bound [default: 1800; --quick: 300].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub timeout: Option<u64>,
    /// Wall time of the RSA ceiling, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub rsa_seconds: u64,
    /// Create requests in flight while setting up (not timed).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=512).map(|n| n as usize))]
    pub concurrency: usize,
}

/// Flags of the `timing` test.
#[derive(Debug, Args)]
pub struct TimingArgs {
    /// Timed calls per class (8 classes, interleaved in one random order).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(200..=100_000_000).map(|n| n as usize))]
    pub samples: usize,
    /// |t| above which two classes count as distinguishable (dudect's threshold).
    #[arg(long, default_value_t = 4.5)]
    pub threshold: f64,
    /// RSA modulus size of the keys. OAEP decoding is the same code at every size while the
    /// noise grows with the modulus, so 2048 gives the most power per minute; 4096 is the
    /// sealing keys' size.
    #[arg(long, default_value_t = 2048, value_parser = clap::builder::PossibleValuesParser::new(["2048", "3072", "4096"]).map(|s| s.parse::<usize>().expect("listed")))]
    pub bits: usize,
    /// Length of the sealed values, in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_048_576).map(|n| n as usize))]
    pub value_len: usize,
    /// Bytes compared by the positive control's naive early-exit compare (its leak grows with it).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_048_576).map(|n| n as usize))]
    pub control_bytes: usize,
    /// The clock that times each call.
    #[arg(long, value_enum, default_value_t = Clock::Cpu)]
    pub clock: Clock,
}

/// How the `timing` test times a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Clock {
    /// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): time the core spends on other
    /// processes is not counted, so a shared machine adds less noise.
    Cpu,
    /// Wall time (`Instant`), like dudect's cycle counter: preemption shows up as slow outliers,
    /// which the crops remove.
    Wall,
}

/// Which of the 12 keys seals the SealedSecrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SealingKey {
    /// The key with the oldest certificate: keyseal's newest-first order tries it last.
    Oldest,
    /// The newest key, the one `kubeseal --fetch-cert` hands out.
    Newest,
}

/// Flags of the `controller` benchmark.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// The keyseal-controller binary [default: $CARGO_TARGET_DIR or <workspace>/target, then
    /// release/keyseal-controller; build it with `cargo build --release -p keyseal-controller`].
    #[arg(long, value_name = "PATH")]
    pub controller: Option<PathBuf>,
    /// The upstream controller binary [default: the one `scripts/fixtures` builds].
    #[arg(long, value_name = "PATH")]
    pub upstream: Option<PathBuf>,
    /// SealedSecrets to unseal in the 1-key and 12-key scenarios [default: 1000; --quick: 200].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub count: Option<usize>,
    /// SealedSecrets in the memory scenario [default: 10000; --quick: 2000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub memory_sealed: Option<usize>,
    /// Unrelated 4 KiB Secrets in the memory scenario [default: 10000; --quick: 2000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=1_000_000).map(|n| n as usize))]
    pub memory_unrelated: Option<usize>,
    /// Smaller defaults for a quick run: 200 SealedSecrets, 2000 + 2000 objects, 180 s limit.
    #[arg(long)]
    pub quick: bool,
    /// Limit per controller run, in seconds; a run that hits it is reported as a lower bound
    /// [default: 600; --quick: 180].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub timeout: Option<u64>,
    /// Create requests in flight while setting up (not timed).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=512).map(|n| n as usize))]
    pub concurrency: usize,
    /// Scenarios to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1key,12keys,memory")]
    pub scenarios: Vec<String>,
    /// Which key seals the SealedSecrets in the 12-key scenario.
    #[arg(long, value_enum, default_value_t = SealingKey::Oldest)]
    pub sealing_key: SealingKey,
    /// Controllers to run, comma-separated: keyseal, tuned (upstream with QPS/burst raised),
    /// default (upstream at its defaults). The table needs all three; per-run lines always print.
    #[arg(long, value_delimiter = ',', default_value = "keyseal,tuned,default")]
    pub subjects: Vec<String>,
    /// Limit for upstream at its defaults, in seconds (it needs ~800 s per 1,000 SealedSecrets);
    /// its figure is then a lower bound [default: --timeout].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub default_timeout: Option<u64>,
    /// Extra flag passed to keyseal-controller (repeatable), e.g. `--keyseal-arg=--kubeclient-qps=100`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub keyseal_arg: Vec<String>,
}

/// The CPU's model name (`/proc/cpuinfo`), printed beside figures that depend on it.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crypto(args) => crypto::run(&args),
        Command::Cli(args) => cli::run(&args),
        Command::Controller(args) => controller::run(&args),
        Command::Renewal(args) => renewal::run(&args),
        Command::Hostile(args) => hostile::run(&args),
        Command::Faults(args) => faults::run(&args),
        Command::Load(args) => load::run(&args),
        Command::Startup(args) => startup::run(&args),
        Command::Timing(args) => timing::run(&args),
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

/// `${CARGO_TARGET_DIR:-<workspace>/target}/release/keyseal-controller`.
fn release_controller() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("release/keyseal-controller")
}

/// `given`, or [`release_controller`]; an error with the build command when it is missing.
fn controller_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let controller = given.map_or_else(release_controller, Path::to_path_buf);
    anyhow::ensure!(
        controller.is_file(),
        "{} is missing: cargo build --release -p keyseal-controller",
        controller.display()
    );
    Ok(controller)
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
    fn controller_quick_and_lists() {
        let cli = Cli::try_parse_from([
            "keyseal-bench",
            "controller",
            "--quick",
            "--scenarios",
            "1key,memory",
            "--keyseal-arg=--kubeclient-qps=100",
        ])
        .unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("expected `controller`");
        };
        assert!(args.quick);
        assert_eq!(args.scenarios, ["1key", "memory"]);
        assert_eq!(args.keyseal_arg, ["--kubeclient-qps=100"]);
        assert_eq!(args.sealing_key, SealingKey::Oldest);
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
