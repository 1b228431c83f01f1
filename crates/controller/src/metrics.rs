//! Prometheus metrics: upstream's names (prefix `sealed_secrets_controller_`) plus keyseal's key
//! inventory. Labels are fixed strings, namespaces and names: never values or keys.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::conditions::{self, backup_result, error_label};
use crate::keys::KeyRing;
use crate::reconcile;

/// `reason`, `namespace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// fetch, unseal, update, unmanaged, status.
    pub reason: String,
    /// Namespace of the SealedSecret.
    pub namespace: String,
}

/// `namespace`, `name`, `condition`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// Namespace of the SealedSecret.
    pub namespace: String,
    /// Name of the SealedSecret.
    pub name: String,
    /// Condition type (`Synced`).
    pub condition: String,
}

/// `path`, `code`, `method`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route.
    pub path: String,
    /// Status code.
    pub code: String,
    /// HTTP method.
    pub method: String,
}

/// `path`, `method`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route.
    pub path: String,
    /// HTTP method.
    pub method: String,
}

/// `revision`, upstream's label name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// keyseal version (upstream puts its git revision here).
    pub revision: String,
}

/// `fingerprint`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// Key fingerprint (`SHA256:…` of the public key).
    pub fingerprint: String,
}

/// `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// success or failure.
    pub result: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    /// One scrape at a time: the key inventory is rebuilt at each scrape.
    scraping: Mutex<()>,
    /// Unseal attempts.
    pub unseal_requests: Counter,
    /// SealedSecrets whose Secret's record showed them unsealed already (after a start), so
    /// that nothing was decrypted or written.
    pub unseal_skipped: Counter,
    /// Failures by reason and namespace.
    pub unseal_errors: Family<ErrorLabels, Counter>,
    /// Upstream's values: 1 Synced=True, -1 Synced=False, 0 unknown.
    pub condition_info: Family<ConditionLabels, Gauge>,
    /// HTTP requests served.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP latency.
    pub http_duration: Family<RouteLabels, Histogram>,
    /// Number of loaded sealing keys.
    pub keys: Gauge,
    /// Age of the newest key in seconds.
    pub newest_key_age: Gauge,
    /// SealedSecrets last opened by each key.
    pub sealed_secrets_per_key: Family<KeyLabels, Gauge>,
    /// 1 while this replica is the leader.
    pub leader: Gauge,
    /// Key Secrets without a verified backup (with a vault configured).
    pub keys_not_backed_up: Gauge,
    /// When a key backup last succeeded (Unix seconds; 0: never).
    pub last_backup: Gauge,
    /// Key backup attempts by result.
    pub backup_attempts: Family<ResultLabels, Counter>,
    /// `--metrics-omit-secret-labels`: no per-SealedSecret series.
    omit_secret_labels: bool,
}

impl Metrics {
    /// Registers everything, with the error counters present at zero for every reason.
    /// With `omit_secret_labels` (`--metrics-omit-secret-labels`), no per-SealedSecret series.
    pub fn new(omit_secret_labels: bool) -> Arc<Self> {
        let mut registry = Registry::with_prefix("sealed_secrets_controller");
        let (unseal_requests, unseal_skipped) = (Counter::default(), Counter::default());
        let unseal_errors = Family::<ErrorLabels, Counter>::default();
        let condition_info = Family::<ConditionLabels, Gauge>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
        });
        let build_info = Family::<BuildLabels, Gauge>::default();
        let (keys, newest_key_age, leader) = (Gauge::default(), Gauge::default(), Gauge::default());
        let sealed_secrets_per_key = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "unseal_requests",
            "Unseal attempts",
            unseal_requests.clone(),
        );
        registry.register(
            "unseal_skipped",
            "SealedSecrets found unsealed already by their Secret's record, not decrypted again",
            unseal_skipped.clone(),
        );
        registry.register(
            "unseal_errors",
            "Unseal failures by reason",
            unseal_errors.clone(),
        );
        registry.register(
            "condition_info",
            "Current SealedSecret condition status. Values are -1 (false), 0 (unknown or absent), 1 (true)",
            condition_info.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests served",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_duration.clone(),
        );
        registry.register("build_info", "Build information", build_info.clone());
        register_keys(
            &mut registry,
            &keys,
            &newest_key_age,
            &sealed_secrets_per_key,
        );
        registry.register(
            "is_leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        let (keys_not_backed_up, last_backup, backup_attempts) = register_backup(&mut registry);
        build_info
            .get_or_create(&BuildLabels {
                revision: crate::VERSION.into(),
            })
            .set(1);
        for reason in error_label::ALL {
            let _ = unseal_errors.get_or_create(&ErrorLabels {
                reason: reason.into(),
                namespace: String::new(),
            });
        }
        Arc::new(Self {
            registry,
            scraping: Mutex::new(()),
            unseal_requests,
            unseal_skipped,
            unseal_errors,
            condition_info,
            http_requests,
            http_duration,
            keys,
            newest_key_age,
            sealed_secrets_per_key,
            leader,
            keys_not_backed_up,
            last_backup,
            backup_attempts,
            omit_secret_labels,
        })
    }

    /// Counts a key backup attempt.
    pub fn backup_attempt(&self, ok: bool) {
        let result = if ok {
            backup_result::SUCCESS
        } else {
            backup_result::FAILURE
        };
        self.backup_attempts
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Counts an error.
    pub fn error(&self, reason: &str, namespace: &str) {
        self.unseal_errors
            .get_or_create(&ErrorLabels {
                reason: reason.into(),
                namespace: namespace.into(),
            })
            .inc();
    }

    /// Sets a SealedSecret's condition gauge.
    pub fn condition(&self, namespace: &str, name: &str, synced: Option<bool>) {
        if self.omit_secret_labels {
            return;
        }
        let labels = ConditionLabels {
            namespace: namespace.into(),
            name: name.into(),
            condition: conditions::SYNCED.into(),
        };
        self.condition_info
            .get_or_create(&labels)
            .set(match synced {
                // Upstream's mapping, which dashboards and alerts (`< 0`) rely on.
                Some(true) => 1,
                Some(false) => -1,
                None => 0,
            });
    }

    /// Forgets a deleted SealedSecret.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = ConditionLabels {
            namespace: namespace.into(),
            name: name.into(),
            condition: conditions::SYNCED.into(),
        };
        self.condition_info.remove(&labels);
    }

    /// Refreshes the scrape-time gauges with `refresh` and encodes everything. The per-key
    /// inventory is rebuilt from scratch, so a key that left the ring (deleted, relabelled
    /// `compromised`) no longer shows up with its last count.
    pub fn scrape(&self, refresh: &dyn Fn()) -> String {
        let _one_at_a_time = self.scraping.lock().unwrap_or_else(|e| e.into_inner());
        self.sealed_secrets_per_key.clear();
        refresh();
        self.encode()
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The key inventory, refreshed at scrape time.
fn register_keys(
    registry: &mut Registry,
    keys: &Gauge,
    newest_key_age: &Gauge,
    per_key: &Family<KeyLabels, Gauge>,
) {
    registry.register("keys", "Loaded sealing keys", keys.clone());
    registry.register(
        "newest_key_age_seconds",
        "Age of the newest sealing key",
        newest_key_age.clone(),
    );
    registry.register(
        "sealedsecrets_per_key",
        "SealedSecrets last unsealed with each key",
        per_key.clone(),
    );
}

/// The key backup metrics (present, at zero, with or without a vault).
fn register_backup(registry: &mut Registry) -> (Gauge, Gauge, Family<ResultLabels, Counter>) {
    let (not_backed_up, last) = (Gauge::default(), Gauge::default());
    let attempts = Family::<ResultLabels, Counter>::default();
    registry.register(
        "keys_not_backed_up",
        "Key Secrets without a verified backup in Azure Key Vault",
        not_backed_up.clone(),
    );
    registry.register(
        "last_key_backup_timestamp_seconds",
        "When a key backup to Azure Key Vault last succeeded (0: never)",
        last.clone(),
    );
    registry.register(
        "key_backup_attempts",
        "Key backups to Azure Key Vault by result",
        attempts.clone(),
    );
    for result in [backup_result::SUCCESS, backup_result::FAILURE] {
        let _ = attempts.get_or_create(&ResultLabels {
            result: result.into(),
        });
    }
    (not_backed_up, last, attempts)
}

/// The gauges computed at scrape time: the number of keys, the newest key's age, and how many
/// SealedSecrets each key opened.
pub fn key_gauges(
    ring: Arc<KeyRing>,
    metrics: Arc<Metrics>,
    ctx: Arc<reconcile::Context>,
) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        let keys = ring.keys();
        metrics
            .keys
            .set(i64::try_from(keys.len()).unwrap_or(i64::MAX));
        metrics
            .newest_key_age
            .set(i64::try_from(ring.newest_age().as_secs()).unwrap_or(i64::MAX));
        let counts = ctx.per_key_counts();
        for key in keys.iter() {
            let labels = KeyLabels {
                fingerprint: key.fingerprint.clone(),
            };
            metrics
                .sealed_secrets_per_key
                .get_or_create(&labels)
                .set(counts.get(&key.fingerprint).copied().unwrap_or(0));
        }
    })
}
