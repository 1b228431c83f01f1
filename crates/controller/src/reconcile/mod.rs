//! SealedSecret → Secret. Permanent failures (no key opens it, an unmanaged or immutable target)
//! become `Synced=False` plus an event and wait for a change; transient API errors requeue with
//! backoff. A SealedSecret already synced at the same generation and scope costs nothing: no RSA
//! operation and no API call; after a restart, one metadata GET when its status records the
//! Secret that was written (see `decide::record`).
//!
//! - `decide`: what to write, as pure functions (the rules, unit-tested);
//! - `write`: unsealing and the writes to the API server;
//! - `ledger`: what is synced at which inputs, and which reconciles are running;
//! - `cache`: what the controller keeps of each SealedSecret;
//! - `secrets`: what it keeps of their Secrets (which are gone, their resourceVersions);
//! - `watch`: the watches and kube-runtime's controller loop.

mod cache;
mod decide;
mod ledger;
mod secrets;
mod watch;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyseal_api::UnsealError;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use tokio::sync::Semaphore;

pub use cache::CachedSealedSecret;
pub use decide::Refusal;
pub use watch::{SealedSecretCache, run};

use self::decide::Outcome;
use self::ledger::{Begin, Ledger, Synced};
use crate::conditions::{error_label, event, reason};
use crate::events::Events;
use crate::keys::KeyRing;
use crate::metrics::Metrics;

/// How the reconciler behaves (from the flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--accept-deprecated-v1-data`.
    pub accept_v1_data: bool,
    /// `--update-status`.
    pub update_status: bool,
    /// `--skip-recreate`: do not watch for deleted Secrets.
    pub skip_recreate: bool,
    /// `--label-selector` (empty: all).
    pub label_selector: String,
    /// `--max-unseal-retries`.
    pub max_unseal_retries: u32,
    /// `--workers`: concurrent reconciles.
    pub workers: usize,
    /// The namespaces to watch (`None`: all).
    pub namespaces: Option<Vec<String>>,
}

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Sealing keys.
    pub ring: Arc<KeyRing>,
    /// How to behave.
    pub settings: Settings,
    /// Event publisher.
    pub events: Events,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    ledger: Ledger,
    secrets: secrets::SecretVersions,
    retries: Retries,
    /// How many SealedSecrets each key (by fingerprint) has opened: the order to try keys in
    /// when there is no per-object hint.
    key_uses: Mutex<HashMap<String, u64>>,
    rsa: Arc<Semaphore>,
}

impl Context {
    /// A context; RSA work is bounded to one operation per CPU.
    pub fn new(
        client: Client,
        ring: Arc<KeyRing>,
        settings: Settings,
        events: Events,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Self {
            client,
            ring,
            settings,
            events,
            metrics,
            ledger: Ledger::default(),
            secrets: secrets::SecretVersions::default(),
            retries: Retries::default(),
            key_uses: Mutex::default(),
            rsa: Arc::new(Semaphore::new(cpus)),
        })
    }

    /// Counts a SealedSecret opened by the key `fingerprint` (the order keys are tried in).
    fn count_use(&self, fingerprint: &str) {
        *self
            .key_uses
            .lock()
            .expect("key uses lock")
            .entry(fingerprint.to_owned())
            .or_default() += 1;
    }

    /// How many synced SealedSecrets each key opened (for the inventory metric).
    pub fn per_key_counts(&self) -> BTreeMap<String, i64> {
        self.ledger.per_key_counts()
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The SealedSecret cannot be unsealed (permanent until it or the keys change).
    #[error("{0}")]
    Unseal(#[from] UnsealError),
    /// The target Secret is someone else's, or immutable and would change.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// The spec does not have the SealedSecret shape (permanent until the object changes).
    #[error("{0}")]
    Malformed(String),
    /// No key loaded yet.
    #[error("no sealing keys loaded yet")]
    NoKeys,
    /// The API server refused the write for good (e.g. validation).
    #[error("{0}")]
    Rejected(String),
    /// A transient API failure.
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

impl ReconcileError {
    /// The `reason` label of the error metric (upstream's values).
    fn error_label(&self) -> &'static str {
        match self {
            ReconcileError::Unseal(_) | ReconcileError::Malformed(_) => error_label::UNSEAL,
            ReconcileError::Refused(Refusal::Unmanaged(_)) => error_label::UNMANAGED,
            ReconcileError::Refused(Refusal::Immutable)
            | ReconcileError::Rejected(_)
            | ReconcileError::Kube(_) => error_label::UPDATE,
            ReconcileError::NoKeys => error_label::FETCH,
        }
    }

    /// The `reason` of the `Synced=False` condition.
    fn condition_reason(&self) -> &'static str {
        match self {
            ReconcileError::Unseal(u) => u.reason(),
            ReconcileError::Refused(Refusal::Unmanaged(_)) => reason::UNMANAGED,
            ReconcileError::Refused(Refusal::Immutable) => reason::IMMUTABLE,
            ReconcileError::Malformed(_) => reason::INVALID_SPEC,
            ReconcileError::NoKeys | ReconcileError::Rejected(_) | ReconcileError::Kube(_) => {
                reason::UPDATE_FAILED
            }
        }
    }

    /// The Warning event's reason: the SealedSecret could not be opened, or its Secret not
    /// written.
    fn event_reason(&self) -> &'static str {
        match self {
            ReconcileError::Unseal(_) | ReconcileError::Malformed(_) => event::UNSEAL_FAILED,
            _ => event::UPDATE_FAILED,
        }
    }

    fn is_transient(&self) -> bool {
        matches!(self, ReconcileError::Kube(_) | ReconcileError::NoKeys)
    }
}

/// 403 is transient: a kube-apiserver that has just restarted answers it until its RBAC caches
/// are warm (seen in `faults::an_api_server_restart_in_the_middle_of_a_reconcile_loses_nothing`),
/// and a missing grant may be fixed; it is retried with backoff up to `--max-unseal-retries`.
fn classify(e: kube::Error) -> ReconcileError {
    match &e {
        kube::Error::Api(s) if matches!(s.code, 400 | 422) => {
            ReconcileError::Rejected(s.message.clone())
        }
        _ => ReconcileError::Kube(e),
    }
}

fn object_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// Reconciles one SealedSecret.
pub async fn reconcile(
    cached: Arc<CachedSealedSecret>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let (ns, name) = (cached.namespace().unwrap_or_default(), cached.name_any());
    let key = object_key(&ns, &name);
    if cached.metadata.deletion_timestamp.is_some() {
        ctx.ledger.forget(&key);
        ctx.metrics.forget(&ns, &name);
        return Ok(Action::await_change()); // garbage collection removes the owned Secret
    }
    let inputs = cache::inputs_of(&cached.metadata);
    let ticket = match ctx.ledger.begin(&key, &inputs) {
        Begin::Done => return Ok(Action::await_change()), // synced, or failed for good
        Begin::Run(ticket) => ticket,
    };
    let hint = ticket.hint.clone();
    // What the status records is keyed by the inputs and the option that can change the outcome.
    let record_inputs = format!("{inputs}|v1-data={}", ctx.settings.accept_v1_data);
    if hint.is_none()
        && let Some(key) = unchanged_since_recorded(&cached, &ctx, &record_inputs).await?
    {
        if let Some(fingerprint) = &key {
            ctx.count_use(fingerprint);
        }
        ticket.record(Synced {
            inputs,
            key,
            failed: false,
        });
        ctx.metrics.unseal_skipped.inc();
        ctx.metrics.condition(&ns, &name, Some(true));
        tracing::debug!(namespace = %ns, name = %name, "the Secret is as recorded; nothing to unseal");
        return Ok(Action::await_change());
    }
    let (ss, unreadable) = cached.parse();
    let outcome = match unreadable {
        None => write::sync(&ss, &ctx, hint.as_deref()).await,
        Some(reason) => Err(ReconcileError::Malformed(reason)),
    };
    let e = match outcome {
        Ok(written) => {
            let record = written
                .secret_version
                .as_deref()
                .map(|version| decide::record(&record_inputs, version, written.key.as_deref()));
            // Remembered only once the status is written: if that write fails (e.g. a conflict
            // with a metadata-only change, which brings no new generation), the retry must not
            // be skipped as "already synced".
            write::write_status(&ss, &ctx, Outcome::synced(record.as_deref())).await?;
            let remembered = ticket.record(Synced {
                inputs,
                key: written.key,
                failed: false,
            });
            if !remembered {
                tracing::debug!(namespace = %ns, name = %name, "the Secret was deleted during the unseal; unsealing again");
            }
            ctx.metrics.condition(&ns, &name, Some(true));
            ctx.events.unsealed(&ss).await;
            tracing::info!(namespace = %ns, name = %name, "unsealed");
            return Ok(Action::await_change());
        }
        Err(e) => e,
    };
    ctx.metrics.error(e.error_label(), &ns);
    if e.is_transient() {
        tracing::warn!(namespace = %ns, name = %name, error = %e, "transient failure; will retry");
        return Err(e);
    }
    let message = e.to_string();
    tracing::warn!(namespace = %ns, name = %name, error = %message, "cannot sync SealedSecret");
    ctx.events.failed(&ss, e.event_reason(), &message).await;
    let failed = Outcome {
        synced: false,
        reason: Some(e.condition_reason()),
        message: Some(&message),
        record: None,
    };
    write::write_status(&ss, &ctx, failed).await?;
    ticket.record(Synced {
        inputs,
        key: hint,
        failed: true,
    });
    ctx.metrics.condition(&ns, &name, Some(false));
    Ok(Action::await_change())
}

/// After a start (or the deletion of its Secret) nothing about a SealedSecret is known in
/// memory. When its status records the Secret written for these inputs (`decide::record`) and
/// the Secret is still at that resourceVersion, nothing changed since: returns the key that
/// opened it (`Some(None)` for none), and nothing is decrypted, written or announced — no
/// `Unsealed` event, as nothing was unsealed. No request when the Secret watch has listed the
/// Secret already; otherwise one metadata GET; none without a record (a new SealedSecret, or
/// one synced by upstream's controller).
async fn unchanged_since_recorded(
    cached: &CachedSealedSecret,
    ctx: &Context,
    inputs: &str,
) -> Result<Option<Option<String>>, ReconcileError> {
    let meta = &cached.metadata;
    let Some(recorded) = decide::recorded(cached.status(), meta.generation, inputs) else {
        return Ok(None);
    };
    let (ns, name) = (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    );
    let current = match ctx.secrets.version(ns, name) {
        Some(known) => Some(known),
        None => write::secret_version(ctx, ns, name).await?,
    };
    Ok((current.as_deref() == Some(recorded.secret_version))
        .then(|| recorded.key.map(str::to_owned)))
}

/// Backoff for transient errors: 1 s doubling to 5 min, per object.
/// After `--max-unseal-retries` attempts the object waits for its next change (or a key change),
/// as upstream's work queue forgets it.
pub fn error_policy(
    ss: Arc<CachedSealedSecret>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let key = object_key(&ss.namespace().unwrap_or_default(), &ss.name_any());
    let attempt = ctx.retries.with_attempt(&key);
    if attempt > ctx.settings.max_unseal_retries {
        ctx.retries.reset(&key);
        tracing::warn!(object = %key, error = %error, retries = ctx.settings.max_unseal_retries, "giving up until the SealedSecret or the keys change");
        return Action::await_change();
    }
    tracing::debug!(error = %error, attempt, "requeue");
    Action::requeue(Duration::from_secs(1u64 << attempt.min(8)).min(Duration::from_secs(300)))
}

/// Per-object counters of consecutive transient failures, for the backoff and the retry limit.
#[derive(Default)]
struct Retries(Mutex<HashMap<String, u32>>);
impl Retries {
    fn with_attempt(&self, key: &str) -> u32 {
        let mut map = self.0.lock().expect("retries lock");
        let n = map.entry(key.to_owned()).or_insert(0);
        *n += 1;
        *n
    }
    fn reset(&self, key: &str) {
        self.0.lock().expect("retries lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each permanent failure reports, in the status, the event and the metric.
    #[test]
    fn each_failure_has_its_reasons() {
        let cases = [
            (
                ReconcileError::Unseal(UnsealError::NoKeyCouldDecrypt {
                    items: vec!["password".into()],
                    not_tried: 0,
                }),
                ("NoKeyCouldDecrypt", "ErrUnsealFailed", "unseal"),
            ),
            (
                ReconcileError::Malformed("spec cannot be read".into()),
                ("InvalidSpec", "ErrUnsealFailed", "unseal"),
            ),
            (
                ReconcileError::Refused(Refusal::Unmanaged("db".into())),
                ("Unmanaged", "ErrUpdateFailed", "unmanaged"),
            ),
            (
                ReconcileError::Refused(Refusal::Immutable),
                ("Immutable", "ErrUpdateFailed", "update"),
            ),
            (
                ReconcileError::Rejected("invalid".into()),
                ("UpdateFailed", "ErrUpdateFailed", "update"),
            ),
        ];
        for (e, expected) in cases {
            assert!(!e.is_transient(), "{e}");
            assert_eq!(
                (e.condition_reason(), e.event_reason(), e.error_label()),
                expected,
                "{e}"
            );
        }
        assert!(ReconcileError::NoKeys.is_transient());
        assert_eq!(ReconcileError::NoKeys.error_label(), "fetch");
        let refusal = ReconcileError::from(Refusal::Unmanaged("db".into()));
        assert_eq!(
            refusal.to_string(),
            r#"Resource "db" already exists and is not managed by SealedSecret"#
        );
    }
}
