//! Controller flags: upstream's names and defaults (each also settable as
//! `SEALED_SECRETS_<FLAG_WITH_UNDERSCORES>`), plus keyseal's own for HA and client throughput.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::backup::BackupSettings;
use crate::http::HttpConfig;
use crate::keys::KeyConfig;
use crate::leader::LeaderConfig;
use crate::reconcile::Settings;

/// Unseals SealedSecrets into Secrets, serves the sealing certificate, renews sealing keys.
#[derive(Parser, Debug, Clone)]
// As upstream's controller (Go `flag`): a flag given twice takes its last value.
#[command(
    name = "keyseal-controller",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Flags {
    /// Sealing keys.
    #[command(flatten)]
    pub keys: KeyFlags,
    /// HTTP.
    #[command(flatten)]
    pub http: HttpFlags,
    /// Unsealing.
    #[command(flatten)]
    pub reconcile: ReconcileFlags,
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// Leader election.
    #[command(flatten)]
    pub leader: LeaderFlags,
    /// Logs and metrics.
    #[command(flatten)]
    pub output: OutputFlags,
    /// Key backups to Azure Key Vault.
    #[command(flatten)]
    pub backup: BackupFlags,
    /// Accepted for compatibility.
    #[command(flatten)]
    pub compat: CompatFlags,
    /// Print version information and exit.
    #[arg(long)]
    pub version: bool,
}

/// Sealing keys: their generation, renewal and order.
#[derive(clap::Args, Debug, Clone)]
pub struct KeyFlags {
    /// Prefix of the key Secrets' names (and name of the legacy single key Secret).
    #[arg(
        long,
        env = "SEALED_SECRETS_KEY_PREFIX",
        default_value = "sealed-secrets-key"
    )]
    pub key_prefix: String,
    /// Size of new sealing keys in bits.
    #[arg(long, env = "SEALED_SECRETS_KEY_SIZE", default_value_t = 4096)]
    pub key_size: usize,
    /// Validity of new sealing certificates.
    #[arg(long, env = "SEALED_SECRETS_KEY_TTL", default_value = "87600h", value_parser = parse_go_duration)]
    pub key_ttl: Duration,
    /// How often a new sealing key is generated (0 disables renewal). Old keys are kept.
    #[arg(long, visible_alias = "rotate-period", env = "SEALED_SECRETS_KEY_RENEW_PERIOD", default_value = "720h", value_parser = parse_go_duration)]
    pub key_renew_period: Duration,
    /// Generate a new key at start-up if the newest is older than this time (RFC 1123 with a
    /// numeric zone, e.g. `Mon, 02 Jan 2006 15:04:05 -0700`).
    #[arg(long, env = "SEALED_SECRETS_KEY_CUTOFF_TIME", value_parser = parse_cutoff)]
    pub key_cutoff_time: Option<jiff::Timestamp>,
    /// Common name of new sealing certificates (empty DN by default).
    #[arg(long, env = "SEALED_SECRETS_MY_CN", default_value = "")]
    pub my_cn: String,
    /// Which key is newest: by certificate NotBefore, or by the key Secret's creation time.
    #[arg(
        long,
        env = "SEALED_SECRETS_KEY_ORDER_PRIORITY",
        value_enum,
        default_value = "CertNotBefore"
    )]
    pub key_order_priority: KeyOrder,
    /// Extra labels for new key Secrets, `k=v,k2=v2`.
    #[arg(long, env = "SEALED_SECRETS_PRIVATEKEY_LABELS", default_value = "", value_parser = parse_map)]
    pub privatekey_labels: BTreeMap<String, String>,
    /// Extra annotations for new key Secrets, `k=v,k2=v2`.
    #[arg(long, env = "SEALED_SECRETS_PRIVATEKEY_ANNOTATIONS", default_value = "", value_parser = parse_map)]
    pub privatekey_annotations: BTreeMap<String, String>,
}

/// The HTTP listeners.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpFlags {
    /// HTTP address for /healthz, /readyz, /v1/cert.pem, /v1/verify and /v1/rotate.
    #[arg(long, env = "SEALED_SECRETS_LISTEN_ADDR", default_value = ":8080", value_parser = parse_listen_addr)]
    pub listen_addr: SocketAddr,
    /// HTTP address for /metrics.
    #[arg(
        long,
        env = "SEALED_SECRETS_LISTEN_METRICS_ADDR",
        default_value = ":8081",
        value_parser = parse_listen_addr
    )]
    pub listen_metrics_addr: SocketAddr,
    /// /v1/verify requests per second allowed per client.
    #[arg(long, env = "SEALED_SECRETS_RATE_LIMIT", default_value_t = 2)]
    pub rate_limit: u32,
    /// /v1/verify burst allowed per client.
    #[arg(long, env = "SEALED_SECRETS_RATE_LIMIT_BURST", default_value_t = 2)]
    pub rate_limit_burst: u32,
    /// Upper bound on reading an HTTP request.
    #[arg(long, env = "SEALED_SECRETS_READ_TIMEOUT", default_value = "2m", value_parser = parse_go_duration)]
    pub read_timeout: Duration,
    /// Upper bound on writing an HTTP response.
    #[arg(long, env = "SEALED_SECRETS_WRITE_TIMEOUT", default_value = "2m", value_parser = parse_go_duration)]
    pub write_timeout: Duration,
}

/// What is unsealed, and how.
#[derive(clap::Args, Debug, Clone)]
pub struct ReconcileFlags {
    /// Write SealedSecret status (the Synced condition).
    #[arg(long, env = "SEALED_SECRETS_UPDATE_STATUS", default_value_t = true, action = ArgAction::Set)]
    pub update_status: bool,
    /// Do not recreate unsealed Secrets that were deleted.
    #[arg(long, env = "SEALED_SECRETS_SKIP_RECREATE", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub skip_recreate: bool,
    /// Accept the deprecated v1 `spec.data` format.
    #[arg(long, env = "SEALED_SECRETS_ACCEPT_DEPRECATED_V1_DATA", default_value_t = true, action = ArgAction::Set)]
    pub accept_deprecated_v1_data: bool,
    /// Watch SealedSecrets in all namespaces (false: only the controller's and --additional-namespaces).
    #[arg(long, env = "SEALED_SECRETS_ALL_NAMESPACES", default_value_t = true, action = ArgAction::Set)]
    pub all_namespaces: bool,
    /// More namespaces to watch when --all-namespaces=false, comma-separated.
    // One string in upstream (Go `flag`): given twice, the last list wins.
    #[arg(
        long,
        env = "SEALED_SECRETS_ADDITIONAL_NAMESPACES",
        value_delimiter = ',',
        action = ArgAction::Set
    )]
    pub additional_namespaces: Vec<String>,
    /// Only handle SealedSecrets matching this label selector.
    #[arg(long, env = "SEALED_SECRETS_LABEL_SELECTOR", default_value = "")]
    pub label_selector: String,
    /// Retries of a failed Secret update before giving up until the next change.
    #[arg(long, env = "SEALED_SECRETS_MAX_UNSEAL_RETRIES", default_value_t = 5)]
    pub max_unseal_retries: u32,
    /// Concurrent reconciles (default: 4 per CPU; RSA work is bounded to one per CPU).
    #[arg(long, env = "SEALED_SECRETS_WORKERS")]
    pub workers: Option<usize>,
}

/// The cluster: where it is, how fast to talk to it, where the keys live.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterFlags {
    /// Namespace holding the sealing keys and the leader Lease (default: this pod's namespace,
    /// else kube-system).
    #[arg(long, env = "SEALED_SECRETS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Path to a kubeconfig; in-cluster configuration when absent.
    #[arg(long, env = "SEALED_SECRETS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Client-side limit on API requests per second (sustained); 0 or negative (the default)
    /// means none: the API server's Priority and Fairness queues and sheds load per client, as
    /// SIG API Machinery recommends and controller-runtime does by default. Each unsealed
    /// SealedSecret costs about 3 requests (create or update the Secret, status, event);
    /// upstream's default of 5 makes a restart on a large cluster take minutes.
    #[arg(
        long = "kubeclient-qps",
        visible_alias = "kube-api-qps",
        env = "SEALED_SECRETS_KUBECLIENT_QPS",
        default_value_t = -1.0,
        allow_negative_numbers = true
    )]
    pub kube_api_qps: f64,
    /// Requests allowed at once above `--kubeclient-qps` (when that is positive).
    #[arg(
        long = "kubeclient-burst",
        visible_alias = "kube-api-burst",
        env = "SEALED_SECRETS_KUBECLIENT_BURST",
        default_value_t = 600
    )]
    pub kube_api_burst: u32,
}

/// Leader election.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderFlags {
    /// Elect a leader among replicas; only the leader writes keys, Secrets and status.
    #[arg(long, env = "SEALED_SECRETS_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "SEALED_SECRETS_LEADER_ELECTION_LEASE",
        default_value = "sealed-secrets-controller-leader"
    )]
    pub leader_election_lease: String,
    /// Identity in the Lease (default: the pod name / host name plus a random suffix).
    #[arg(long, env = "SEALED_SECRETS_LEADER_ELECTION_ID")]
    pub leader_election_id: Option<String>,
    /// Leader Lease duration.
    #[arg(long, env = "SEALED_SECRETS_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_go_duration)]
    pub leader_election_lease_duration: Duration,
}

/// Logs and metrics.
#[derive(clap::Args, Debug, Clone)]
pub struct OutputFlags {
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = "SEALED_SECRETS_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(
        long,
        env = "SEALED_SECRETS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log info and debug to stdout and warnings and errors to stderr (upstream's default);
    /// false sends everything to stderr.
    #[arg(long, env = "SEALED_SECRETS_LOG_INFO_STDOUT", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub log_info_stdout: bool,
    /// Do not export per-SealedSecret condition metrics (hides namespaces and names from /metrics).
    #[arg(long, env = "SEALED_SECRETS_METRICS_OMIT_SECRET_LABELS", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub metrics_omit_secret_labels: bool,
}

/// Upstream flags keyseal accepts to explain that it does not need them.
#[derive(clap::Args, Debug, Clone)]
pub struct CompatFlags {
    /// Accepted for compatibility: keyseal always watches key Secrets, so keys created outside
    /// the controller are picked up at runtime.
    #[arg(long, env = "SEALED_SECRETS_WATCH_FOR_SECRETS", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch_for_secrets: bool,
    /// Upstream's pre-0.19 deletion of unsealed Secrets by the controller. Not supported:
    /// keyseal leaves it to Kubernetes garbage collection through the ownerReference.
    #[arg(long, env = "SEALED_SECRETS_OLD_GC_BEHAVIOR", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub old_gc_behavior: bool,
}

/// The flags, sorted by the part of the controller that uses them.
#[derive(Debug)]
pub struct Config {
    /// Where the API server is and how fast to talk to it.
    pub kube: KubeConfig,
    /// Namespace of the keys and the Lease (`None`: this pod's, else kube-system).
    pub namespace: Option<String>,
    /// `None`: watch all namespaces; else the controller's own plus these.
    pub additional_namespaces: Option<Vec<String>>,
    /// Key generation and renewal.
    pub keys: KeyConfig,
    /// Which key is the newest.
    pub key_order: KeyOrder,
    /// The HTTP listeners.
    pub http: HttpConfig,
    /// The reconciler (its namespaces are set once the controller's own is known).
    pub reconcile: Settings,
    /// Leader election.
    pub leader: LeaderConfig,
    /// Key backups (`None`: no vault configured).
    pub backup: Option<BackupSettings>,
    /// `--metrics-omit-secret-labels`.
    pub metrics_omit_secret_labels: bool,
    /// Logging.
    pub log: LogConfig,
}

/// The kube client.
#[derive(Debug)]
pub struct KubeConfig {
    /// `--kubeconfig` (in-cluster when absent).
    pub kubeconfig: Option<PathBuf>,
    /// Client-side request rate limit (none when zero or negative).
    pub qps: f64,
    /// Burst above it.
    pub burst: u32,
}

/// Logging.
#[derive(Debug)]
pub struct LogConfig {
    /// `--log-level`.
    pub level: String,
    /// `--log-format`.
    pub format: LogFormat,
    /// `--log-info-stdout`: info and below to stdout, warnings and errors to stderr.
    pub info_stdout: bool,
}

impl Flags {
    /// Sorts the flags into [`Config`]; refuses the flags keyseal accepts only to explain that
    /// it does not support them. Each group is destructured whole, so a flag that nothing uses
    /// does not compile.
    pub fn into_config(self) -> Result<Config, String> {
        let Flags {
            keys,
            http,
            reconcile,
            cluster,
            leader,
            output,
            backup,
            compat,
            version: _, // handled before the controller starts
        } = self;
        let CompatFlags {
            watch_for_secrets: _, // key Secrets are always watched
            old_gc_behavior,
        } = compat;
        if old_gc_behavior {
            return Err("--old-gc-behavior is not supported: keyseal leaves the deletion of unsealed Secrets to Kubernetes garbage collection (remove the flag)".into());
        }
        let ClusterFlags {
            namespace,
            kubeconfig,
            kube_api_qps,
            kube_api_burst,
        } = cluster;
        let OutputFlags {
            log_level,
            log_format,
            log_info_stdout,
            metrics_omit_secret_labels,
        } = output;
        let (key_order, keys) = keys.into_config();
        let (additional_namespaces, reconcile) = reconcile.into_config();
        Ok(Config {
            kube: KubeConfig {
                kubeconfig,
                qps: kube_api_qps,
                burst: kube_api_burst,
            },
            namespace,
            additional_namespaces,
            keys,
            key_order,
            http: http.into_config(reconcile.accept_v1_data),
            reconcile,
            leader: leader.into_config(),
            backup: backup.into_config(),
            metrics_omit_secret_labels,
            log: LogConfig {
                level: log_level,
                format: log_format,
                info_stdout: log_info_stdout,
            },
        })
    }
}

impl KeyFlags {
    fn into_config(self) -> (KeyOrder, KeyConfig) {
        let KeyFlags {
            key_prefix,
            key_size,
            key_ttl,
            key_renew_period,
            key_cutoff_time,
            my_cn,
            key_order_priority,
            privatekey_labels,
            privatekey_annotations,
        } = self;
        let config = KeyConfig {
            prefix: key_prefix,
            size: key_size,
            ttl: key_ttl,
            renew_period: key_renew_period,
            cutoff: key_cutoff_time.map(std::time::SystemTime::from),
            common_name: my_cn,
            labels: privatekey_labels,
            annotations: privatekey_annotations,
        };
        (key_order_priority, config)
    }
}

impl HttpFlags {
    fn into_config(self, accept_v1_data: bool) -> HttpConfig {
        let HttpFlags {
            listen_addr,
            listen_metrics_addr,
            rate_limit,
            rate_limit_burst,
            read_timeout,
            write_timeout,
        } = self;
        HttpConfig {
            listen: listen_addr,
            listen_metrics: listen_metrics_addr,
            rate_limit,
            rate_limit_burst,
            request_timeout: read_timeout + write_timeout,
            accept_v1_data,
        }
    }
}

impl ReconcileFlags {
    /// The settings, and the namespaces to watch besides the controller's own (`None`: all).
    fn into_config(self) -> (Option<Vec<String>>, Settings) {
        let ReconcileFlags {
            update_status,
            skip_recreate,
            accept_deprecated_v1_data,
            all_namespaces,
            additional_namespaces,
            label_selector,
            max_unseal_retries,
            workers,
        } = self;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let settings = Settings {
            accept_v1_data: accept_deprecated_v1_data,
            update_status,
            skip_recreate,
            label_selector,
            max_unseal_retries,
            workers: workers.unwrap_or(4 * cpus),
            namespaces: None,
        };
        ((!all_namespaces).then_some(additional_namespaces), settings)
    }
}

impl LeaderFlags {
    fn into_config(self) -> LeaderConfig {
        let LeaderFlags {
            leader_elect,
            leader_election_lease,
            leader_election_id,
            leader_election_lease_duration,
        } = self;
        LeaderConfig {
            enabled: leader_elect,
            lease: leader_election_lease,
            lease_duration: leader_election_lease_duration,
            identity: leader_election_id,
        }
    }
}

/// The namespaces to watch: `None` (all), or the controller's own plus `additional`.
pub fn watched_namespaces(additional: Option<&[String]>, own: &str) -> Option<Vec<String>> {
    let additional = additional?;
    let mut list = vec![own.to_owned()];
    for ns in additional {
        if !ns.is_empty() && !list.contains(ns) {
            list.push(ns.clone());
        }
    }
    Some(list)
}

/// Key backups to Azure Key Vault (keyseal's own flags).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Key backups to Azure Key Vault")]
pub struct BackupFlags {
    /// Back up every sealing key to this vault (`https://<vault-name>.vault.azure.net`), each
    /// read back and verified. The credential comes from the AZURE_* variables (AKS workload
    /// identity sets them) or --keyvault-credential.
    #[arg(long, env = "KEYSEAL_KEYVAULT_URL", value_name = "URL")]
    pub keyvault_url: Option<String>,
    /// This cluster's prefix of the secret names in the vault (several clusters may share one).
    #[arg(
        long,
        env = "KEYSEAL_KEYVAULT_PREFIX",
        value_name = "PREFIX",
        default_value = "keyseal"
    )]
    pub keyvault_prefix: String,
    /// The credential: workload-identity, managed-identity, client-secret, client-certificate
    /// or azure-cli (default: inferred from the AZURE_* variables).
    #[arg(long, env = "KEYSEAL_KEYVAULT_CREDENTIAL", value_name = "KIND", value_parser = parse_credential)]
    pub keyvault_credential: Option<keyseal_keyvault::CredentialKind>,
    /// A PEM file of CA certificates to trust besides the system's (private endpoints,
    /// TLS-inspecting proxies). SSL_CERT_FILE is honoured too.
    #[arg(long, env = "KEYSEAL_KEYVAULT_CA_FILE", value_name = "FILE")]
    pub keyvault_ca_file: Option<PathBuf>,
    /// Do not check that the vault's authentication challenge names a resource of its own
    /// domain (the Azure SDK's `verify_challenge_resource`): only for vaults outside the public
    /// and sovereign clouds, such as Azure Stack Hub.
    #[arg(long, env = "KEYSEAL_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub keyvault_disable_challenge_resource_verification: bool,
    /// A new key seals only once its backup is verified (with a vault configured); meanwhile the
    /// previous key stays the sealing key.
    #[arg(long, env = "KEYSEAL_BACKUP_REQUIRED", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub backup_required: bool,
    /// On a cluster without sealing keys, restore them from the vault before generating any;
    /// while the vault cannot be read, wait (never start with a fresh key that would strand what
    /// was sealed before). With an empty vault, the first key is generated as usual.
    #[arg(long, env = "KEYSEAL_BOOTSTRAP_FROM_KEYVAULT", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", requires = "keyvault_url")]
    pub bootstrap_from_keyvault: bool,
}

impl BackupFlags {
    fn into_config(self) -> Option<BackupSettings> {
        let BackupFlags {
            keyvault_url,
            keyvault_prefix,
            keyvault_credential,
            keyvault_ca_file,
            keyvault_disable_challenge_resource_verification,
            backup_required,
            bootstrap_from_keyvault,
        } = self;
        Some(BackupSettings {
            url: keyvault_url?,
            prefix: keyvault_prefix,
            credential: keyvault_credential,
            ca_file: keyvault_ca_file,
            verify_challenge_resource: !keyvault_disable_challenge_resource_verification,
            required: backup_required,
            bootstrap: bootstrap_from_keyvault,
        })
    }
}

fn parse_credential(s: &str) -> Result<keyseal_keyvault::CredentialKind, String> {
    s.parse()
        .map_err(|e: keyseal_keyvault::BackupError| e.to_string())
}

/// How the newest key is chosen.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// By certificate NotBefore (upstream's default).
    #[value(name = "CertNotBefore")]
    CertNotBefore,
    /// By the key Secret's creationTimestamp.
    #[value(name = "SecretCreationTimestamp")]
    SecretCreationTimestamp,
}

/// Log output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses Go durations: `720h`, `1h30m`, `90s`, `250ms`, `0`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("invalid duration {s:?} (use Go syntax, e.g. 720h, 1h30m, 90s)");
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(value * seconds);
        rest = tail;
    }
    Ok(total)
}

/// Parses `k=v,k2=v2` into a map (empty string → empty map).
pub fn parse_map(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("{pair:?} is not key=value"))
        })
        .collect()
}

/// Turns Go-style `:8080` into a bindable address.
pub fn parse_listen_addr(flag: &str) -> Result<SocketAddr, String> {
    let full = if flag.starts_with(':') {
        format!("0.0.0.0{flag}")
    } else {
        flag.to_owned()
    };
    full.parse()
        .map_err(|e| format!("invalid listen address {flag:?}: {e}"))
}

/// Parses `--key-cutoff-time` (Go's RFC1123Z layout).
pub fn parse_cutoff(s: &str) -> Result<jiff::Timestamp, String> {
    jiff::fmt::rfc2822::parse(s)
        .map(|z| z.timestamp())
        .map_err(|e| format!("invalid --key-cutoff-time {s:?}: {e} (use e.g. \"Mon, 02 Jan 2006 15:04:05 -0700\")"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// As upstream's controller (Go `flag`): a repeated flag takes its last value, including the
    /// comma-separated list of --additional-namespaces.
    #[test]
    fn regression_a_repeated_flag_takes_its_last_value() {
        let f = Flags::try_parse_from([
            "x",
            "--key-prefix",
            "a",
            "--key-prefix",
            "b",
            "--all-namespaces=false",
            "--all-namespaces=true",
            "--skip-recreate",
            "--skip-recreate",
            "--additional-namespaces",
            "n1,n2",
            "--additional-namespaces",
            "n3,n4",
        ])
        .unwrap();
        assert_eq!(f.keys.key_prefix, "b");
        assert!(f.reconcile.all_namespaces && f.reconcile.skip_recreate);
        assert_eq!(f.reconcile.additional_namespaces, ["n3", "n4"]);
    }

    #[test]
    fn flags_are_consistent_and_default_like_upstream() {
        Flags::command().debug_assert();
        let f = Flags::try_parse_from(["keyseal-controller"]).unwrap();
        assert_eq!(f.keys.key_renew_period, Duration::from_secs(720 * 3600));
        assert_eq!(f.keys.key_ttl, Duration::from_secs(87_600 * 3600));
        assert_eq!(
            (f.http.listen_addr, f.http.listen_metrics_addr),
            (
                "0.0.0.0:8080".parse().unwrap(),
                "0.0.0.0:8081".parse().unwrap()
            )
        );
        assert!(
            f.reconcile.update_status
                && f.reconcile.accept_deprecated_v1_data
                && f.reconcile.all_namespaces
                && !f.reconcile.skip_recreate
        );
        assert!(
            f.cluster.kube_api_qps <= 0.0,
            "no client-side rate limit by default"
        );
        let upstream_args = [
            "x",
            "--kubeclient-qps",
            "20",
            "--kubeclient-burst",
            "40",
            "--log-info-stdout=false",
            "--metrics-omit-secret-labels",
            "--read-timeout",
            "30s",
            "--write-timeout",
            "1m",
            "--watch-for-secrets",
        ];
        let f = Flags::try_parse_from(upstream_args).unwrap();
        assert_eq!(
            (f.cluster.kube_api_qps, f.cluster.kube_api_burst),
            (20.0, 40)
        );
        assert!(
            !f.output.log_info_stdout
                && f.output.metrics_omit_secret_labels
                && f.compat.watch_for_secrets
        );
        assert_eq!(
            f.http.read_timeout + f.http.write_timeout,
            Duration::from_secs(90)
        );
        let f = Flags::try_parse_from([
            "x",
            "--all-namespaces=false",
            "--additional-namespaces",
            "a,b",
            "--skip-recreate",
            "--rotate-period",
            "0",
        ])
        .unwrap();
        assert!(!f.reconcile.all_namespaces && f.reconcile.skip_recreate);
        assert_eq!(f.reconcile.additional_namespaces, ["a", "b"]);
        assert_eq!(f.keys.key_renew_period, Duration::ZERO);
    }

    #[test]
    fn go_durations_and_maps() {
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_go_duration("5 minutes").is_err());
        assert_eq!(parse_map("a=1, b=2").unwrap().len(), 2);
        assert!(parse_map("a").is_err());
        assert!(parse_cutoff("Mon, 02 Jan 2006 15:04:05 -0700").is_ok());
        assert!(parse_cutoff("yesterday").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_addr(":8080").unwrap().port(), 8080);
        assert_eq!(parse_listen_addr("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_listen_addr("eight").is_err());
    }

    /// Typed once, at parsing: a bad value is refused before anything starts.
    #[test]
    fn values_are_typed_when_parsed() {
        let f = Flags::try_parse_from([
            "x",
            "--key-cutoff-time",
            "Mon, 02 Jan 2006 15:04:05 -0700",
            "--listen-addr",
            "127.0.0.1:9000",
        ])
        .unwrap();
        assert_eq!(
            f.keys.key_cutoff_time.map(|t| t.as_second()),
            Some(1_136_239_445)
        );
        assert_eq!(f.http.listen_addr, "127.0.0.1:9000".parse().unwrap());
        for bad in [
            ["x", "--key-cutoff-time", "yesterday"],
            ["x", "--listen-addr", "eight"],
            ["x", "--key-ttl", "5 minutes"],
        ] {
            let e = Flags::try_parse_from(bad).unwrap_err();
            assert!(e.to_string().contains(bad[1]), "{e}");
        }
    }

    #[test]
    fn the_config_sorts_the_flags_by_their_user() {
        let config = Flags::try_parse_from([
            "x",
            "--all-namespaces=false",
            "--additional-namespaces",
            "a,,b,a",
            "--workers",
            "3",
            "--read-timeout",
            "30s",
            "--write-timeout",
            "1m",
            "--key-cutoff-time",
            "Mon, 02 Jan 2006 15:04:05 -0700",
            "--log-info-stdout=false",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(
            watched_namespaces(config.additional_namespaces.as_deref(), "kube-system"),
            Some(vec!["kube-system".into(), "a".into(), "b".into()])
        );
        assert_eq!(config.reconcile.workers, 3);
        assert_eq!(config.http.request_timeout, Duration::from_secs(90));
        assert!(config.keys.cutoff.is_some());
        assert!(!config.log.info_stdout);
        let all = Flags::try_parse_from(["x", "--additional-namespaces", "a"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(
            watched_namespaces(all.additional_namespaces.as_deref(), "kube-system"),
            None,
            "all namespaces by default"
        );
        assert!(config.backup.is_none(), "no vault, no backups");
        let vault = Flags::try_parse_from([
            "x",
            "--keyvault-url",
            "https://v.vault.azure.net",
            "--keyvault-credential",
            "workload-identity",
        ])
        .unwrap()
        .into_config()
        .unwrap()
        .backup
        .expect("backups configured");
        assert_eq!(vault.prefix, "keyseal");
        assert!(!vault.bootstrap);
        assert!(
            Flags::try_parse_from(["x", "--bootstrap-from-keyvault"]).is_err(),
            "bootstrapping needs a vault"
        );
        assert!(vault.required && vault.verify_challenge_resource);
        assert_eq!(
            vault.credential,
            Some(keyseal_keyvault::CredentialKind::WorkloadIdentity)
        );
        let e = Flags::try_parse_from(["x", "--old-gc-behavior"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(e.contains("--old-gc-behavior is not supported"), "{e}");
    }
}
