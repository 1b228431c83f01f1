//! Controller flags: upstream's names and defaults (each also settable as
//! `SEALED_SECRETS_<FLAG_WITH_UNDERSCORES>`), plus keyseal's own for HA and client throughput.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

/// Unseals SealedSecrets into Secrets, serves the sealing certificate, renews sealing keys.
#[derive(Parser, Debug, Clone)]
// As upstream's controller (Go `flag`): a flag given twice takes its last value.
#[command(
    name = "keyseal-controller",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Flags {
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
    #[arg(long, env = "SEALED_SECRETS_KEY_CUTOFF_TIME")]
    pub key_cutoff_time: Option<String>,
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

    /// HTTP address for /healthz, /readyz, /v1/cert.pem, /v1/verify and /v1/rotate.
    #[arg(long, env = "SEALED_SECRETS_LISTEN_ADDR", default_value = ":8080")]
    pub listen_addr: String,
    /// HTTP address for /metrics.
    #[arg(
        long,
        env = "SEALED_SECRETS_LISTEN_METRICS_ADDR",
        default_value = ":8081"
    )]
    pub listen_metrics_addr: String,
    /// /v1/verify requests per second allowed per client.
    #[arg(long, env = "SEALED_SECRETS_RATE_LIMIT", default_value_t = 2)]
    pub rate_limit: u32,
    /// /v1/verify burst allowed per client.
    #[arg(long, env = "SEALED_SECRETS_RATE_LIMIT_BURST", default_value_t = 2)]
    pub rate_limit_burst: u32,

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

    /// Namespace holding the sealing keys and the leader Lease (default: this pod's namespace,
    /// else kube-system).
    #[arg(long, env = "SEALED_SECRETS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Path to a kubeconfig; in-cluster configuration when absent.
    #[arg(long, env = "SEALED_SECRETS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
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
    /// Concurrent reconciles (default: 4 per CPU; RSA work is bounded to one per CPU).
    #[arg(long, env = "SEALED_SECRETS_WORKERS")]
    pub workers: Option<usize>,

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
    /// Upper bound on reading an HTTP request.
    #[arg(long, env = "SEALED_SECRETS_READ_TIMEOUT", default_value = "2m", value_parser = parse_go_duration)]
    pub read_timeout: Duration,
    /// Upper bound on writing an HTTP response.
    #[arg(long, env = "SEALED_SECRETS_WRITE_TIMEOUT", default_value = "2m", value_parser = parse_go_duration)]
    pub write_timeout: Duration,
    /// Accepted for compatibility: keyseal always watches key Secrets, so keys created outside
    /// the controller are picked up at runtime.
    #[arg(long, env = "SEALED_SECRETS_WATCH_FOR_SECRETS", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch_for_secrets: bool,
    /// Upstream's pre-0.19 deletion of unsealed Secrets by the controller. Not supported:
    /// keyseal leaves it to Kubernetes garbage collection through the ownerReference.
    #[arg(long, env = "SEALED_SECRETS_OLD_GC_BEHAVIOR", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub old_gc_behavior: bool,
    /// Print version information and exit.
    #[arg(long)]
    pub version: bool,
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
        assert_eq!(f.key_prefix, "b");
        assert!(f.all_namespaces && f.skip_recreate);
        assert_eq!(f.additional_namespaces, ["n3", "n4"]);
    }

    #[test]
    fn flags_are_consistent_and_default_like_upstream() {
        Flags::command().debug_assert();
        let f = Flags::try_parse_from(["keyseal-controller"]).unwrap();
        assert_eq!(f.key_renew_period, Duration::from_secs(720 * 3600));
        assert_eq!(f.key_ttl, Duration::from_secs(87_600 * 3600));
        assert_eq!(
            (f.listen_addr.as_str(), f.listen_metrics_addr.as_str()),
            (":8080", ":8081")
        );
        assert!(
            f.update_status && f.accept_deprecated_v1_data && f.all_namespaces && !f.skip_recreate
        );
        assert!(
            f.kube_api_qps <= 0.0,
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
        assert_eq!((f.kube_api_qps, f.kube_api_burst), (20.0, 40));
        assert!(!f.log_info_stdout && f.metrics_omit_secret_labels && f.watch_for_secrets);
        assert_eq!(f.read_timeout + f.write_timeout, Duration::from_secs(90));
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
        assert!(!f.all_namespaces && f.skip_recreate);
        assert_eq!(f.additional_namespaces, ["a", "b"]);
        assert_eq!(f.key_renew_period, Duration::ZERO);
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
}
