//! SealedSecret → Secret. Permanent failures (no key opens it, an unmanaged or immutable target)
//! become `Synced=False` plus an event and wait for a change; transient API errors requeue with
//! backoff. A SealedSecret already synced at the same generation and scope costs nothing: no RSA
//! operation and no API call.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt, future::BoxFuture};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keyseal_api::annotations::{MANAGED, PATCH, SKIP_SET_OWNER_REFERENCES, is_true};
use keyseal_api::{
    CONDITION_SYNCED, Scope, SealedSecret, SealedSecretCondition, SealedSecretSpec,
    SealedSecretStatus, UnsealError, UnsealOptions, unseal,
};
use kube::api::{PartialObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Semaphore;

use crate::events::Events;
use crate::flags::Flags;
use crate::keys::KeyRing;
use crate::metrics::Metrics;

/// What the controller remembers about a SealedSecret it handled (in memory only: after a restart
/// everything is unsealed once, as upstream does).
#[derive(Clone, Debug, Default, PartialEq)]
struct Synced {
    /// Generation and scope that were handled; a change to either means unseal again.
    inputs: String,
    /// Fingerprint of the key that opened it, tried first next time.
    key: Option<String>,
    /// The last attempt failed permanently; retried when the inputs or the keys change (not when
    /// our own status write comes back as a watch event).
    failed: bool,
}

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Sealing keys.
    pub ring: Arc<KeyRing>,
    /// Flags.
    pub flags: Arc<Flags>,
    /// Event publisher.
    pub events: Events,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    ledger: Ledger,
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
        flags: Arc<Flags>,
        events: Events,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Self {
            client,
            ring,
            flags,
            events,
            metrics,
            ledger: Ledger::default(),
            retries: Retries::default(),
            key_uses: Mutex::default(),
            rsa: Arc::new(Semaphore::new(cpus)),
        })
    }

    /// How many synced SealedSecrets each key opened (for the inventory metric).
    pub fn per_key_counts(&self) -> BTreeMap<String, i64> {
        self.ledger.per_key_counts()
    }
}

/// The [`Synced`] records, and which SealedSecrets are being reconciled right now.
///
/// A record may only be written by a reconcile that nothing overtook: when the Secret is deleted
/// while the reconcile that wrote it is still running (writing the status, say), the deletion
/// handler's [`Ledger::forget`] comes first and the reconcile's record after it, and the
/// reconcile the deletion queued would then skip the SealedSecret as "already synced" and never
/// recreate the Secret. So `forget` marks a running reconcile as overtaken, and
/// [`Ticket::record`] writes nothing for it. Likewise a key loaded while a reconcile fails
/// ([`Ledger::clear_failures`]): that failure is not recorded, so the new key gets its chance.
#[derive(Default)]
struct Ledger(Mutex<LedgerState>);

#[derive(Default)]
struct LedgerState {
    synced: HashMap<String, Synced>,
    /// Keys being reconciled, and what happened since each reconcile began. kube-runtime runs
    /// one reconcile per object at a time, so this holds at most `--workers` entries.
    running: HashMap<String, Overtaken>,
}

/// What happened while a reconcile was running.
#[derive(Clone, Copy, Debug, Default)]
struct Overtaken {
    /// Its owned Secret (or itself) was deleted: nothing it found still holds.
    deleted: bool,
    /// The keys changed: a failure to unseal may not hold any more.
    keys: bool,
}

/// What [`Ledger::begin`] found.
enum Begin<'a> {
    /// Handled at these inputs already (synced, or failed for good): nothing to do.
    Done,
    /// To be done.
    Run(Ticket<'a>),
}

/// A reconcile in progress; [`Ticket::record`] remembers its outcome. Dropped without recording
/// (a transient failure), it remembers nothing.
struct Ticket<'a> {
    ledger: &'a Ledger,
    key: String,
    /// The key that opened the SealedSecret last time, tried first.
    hint: Option<String>,
}

impl Ledger {
    fn state(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.0.lock().expect("ledger lock")
    }

    /// Starts the reconcile of `key` unless it was handled at `inputs` already.
    fn begin(&self, key: &str, inputs: &str) -> Begin<'_> {
        let mut state = self.state();
        let hint = match state.synced.get(key) {
            Some(s) if s.inputs == inputs => return Begin::Done,
            Some(s) => s.key.clone(),
            None => None,
        };
        state.running.insert(key.to_owned(), Overtaken::default());
        Begin::Run(Ticket {
            ledger: self,
            key: key.to_owned(),
            hint,
        })
    }

    /// Forgets `key` (its owned Secret or the SealedSecret itself was deleted): the next
    /// reconcile unseals again, including when one is running now.
    fn forget(&self, key: &str) {
        let mut state = self.state();
        state.synced.remove(key);
        if let Some(overtaken) = state.running.get_mut(key) {
            overtaken.deleted = true;
        }
    }

    /// Forgets permanent failures, including those being found right now, so a newly loaded key
    /// gets its chance.
    fn clear_failures(&self) {
        let mut state = self.state();
        state.synced.retain(|_, s| !s.failed);
        for overtaken in state.running.values_mut() {
            overtaken.keys = true;
        }
    }

    fn per_key_counts(&self) -> BTreeMap<String, i64> {
        let mut counts = BTreeMap::new();
        for s in self.state().synced.values().filter(|s| !s.failed) {
            if let Some(k) = &s.key {
                *counts.entry(k.clone()).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Ticket<'_> {
    /// Remembers the outcome, unless something overtook this reconcile: a deletion, or for a
    /// failure a change of keys (the next reconcile, which either queued, does the work again).
    /// Returns whether it was remembered.
    fn record(self, synced: Synced) -> bool {
        let mut state = self.ledger.state();
        let overtaken = state.running.remove(&self.key).unwrap_or(Overtaken {
            deleted: true,
            keys: true,
        });
        let stale = overtaken.deleted || (overtaken.keys && synced.failed);
        let keep = !stale;
        if keep {
            state.synced.insert(self.key.clone(), synced);
        }
        keep
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        // After `record` the entry is gone already; after an error it is removed here.
        if let Ok(mut state) = self.ledger.0.lock() {
            state.running.remove(&self.key);
        }
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The SealedSecret cannot be unsealed (permanent until it or the keys change).
    #[error("{0}")]
    Unseal(#[from] UnsealError),
    /// The target Secret exists and belongs to someone else.
    #[error("Resource {0:?} already exists and is not managed by SealedSecret")]
    Unmanaged(String),
    /// The target Secret is immutable and would change.
    #[error(
        "the target Secret is immutable and its data or type differ; delete it to let the controller recreate it"
    )]
    Immutable,
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
    /// Metric label (upstream's reasons).
    fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Unseal(_) | ReconcileError::Malformed(_) => "unseal",
            ReconcileError::Unmanaged(_) => "unmanaged",
            ReconcileError::Immutable | ReconcileError::Rejected(_) | ReconcileError::Kube(_) => {
                "update"
            }
            ReconcileError::NoKeys => "fetch",
        }
    }

    fn is_transient(&self) -> bool {
        matches!(self, ReconcileError::Kube(_) | ReconcileError::NoKeys)
    }
}

fn classify(e: kube::Error) -> ReconcileError {
    match &e {
        kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => {
            ReconcileError::Rejected(s.message.clone())
        }
        _ => ReconcileError::Kube(e),
    }
}

fn object_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn inputs_of(meta: &ObjectMeta) -> String {
    let scope = Scope::from_annotations(meta.annotations.as_ref());
    format!(
        "{}|{}|{}",
        meta.uid.as_deref().unwrap_or(""),
        meta.generation.unwrap_or(0),
        scope
    )
}

/// A SealedSecret as the controller's cache keeps it: metadata and status parsed, the spec as
/// the JSON text the API server sent, parsed only to unseal. Deciding whether anything is to be
/// done needs no spec, and the text is about half the size of the parsed tree (k8s-openapi's
/// template `ObjectMeta` and the maps of ciphertexts), which is most of the cache. A spec that
/// does not parse fails that one SealedSecret (status and event), not the watch of all of them.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct CachedSealedSecret {
    metadata: ObjectMeta,
    spec: Box<serde_json::value::RawValue>,
    #[serde(default)]
    status: Option<SealedSecretStatus>,
}

impl kube::Resource for CachedSealedSecret {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;
    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        SealedSecret::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        SealedSecret::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        SealedSecret::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        SealedSecret::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CachedSealedSecret {
    /// The whole SealedSecret, and why its spec cannot be read if it cannot (the spec is then
    /// empty: the object still serves for its status and event). The reason quotes nothing from
    /// the spec.
    fn parse(&self) -> (SealedSecret, Option<String>) {
        let (spec, unreadable) = match serde_json::from_str(self.spec.get()) {
            Ok(spec) => (spec, None),
            Err(e) => (
                SealedSecretSpec::default(),
                Some(format!(
                    "spec cannot be read as a SealedSecret spec ({:?} error at column {}); fix the object",
                    e.classify(),
                    e.column()
                )),
            ),
        };
        let ss = SealedSecret {
            metadata: self.metadata.clone(),
            spec,
            status: self.status.clone(),
        };
        (ss, unreadable)
    }
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
    let inputs = inputs_of(&cached.metadata);
    let ticket = match ctx.ledger.begin(&key, &inputs) {
        Begin::Done => return Ok(Action::await_change()), // synced, or failed for good
        Begin::Run(ticket) => ticket,
    };
    let hint = ticket.hint.clone();
    let (ss, unreadable) = cached.parse();
    let outcome = match unreadable {
        None => sync(&ss, &ctx, hint.as_deref()).await,
        Some(reason) => Err(ReconcileError::Malformed(reason)),
    };

    match outcome {
        Ok(used_key) => {
            // Remembered only once the status is written: if that write fails (e.g. a conflict
            // with a metadata-only change, which brings no new generation), the retry must not
            // be skipped as "already synced".
            write_status(&ss, &ctx, true, None, None).await?;
            let remembered = ticket.record(Synced {
                inputs,
                key: used_key,
                failed: false,
            });
            if !remembered {
                tracing::debug!(namespace = %ns, name = %name, "the Secret was deleted during the unseal; unsealing again");
            }
            ctx.metrics.condition(&ns, &name, Some(true));
            ctx.events.unsealed(&ss).await;
            tracing::info!(namespace = %ns, name = %name, "unsealed");
            Ok(Action::await_change())
        }
        Err(e) => {
            ctx.metrics.error(e.reason(), &ns);
            if e.is_transient() {
                tracing::warn!(namespace = %ns, name = %name, error = %e, "transient failure; will retry");
                return Err(e);
            }
            let message = e.to_string();
            tracing::warn!(namespace = %ns, name = %name, error = %message, "cannot sync SealedSecret");
            match &e {
                ReconcileError::Unseal(_) | ReconcileError::Malformed(_) => {
                    ctx.events.unseal_failed(&ss, &message).await;
                }
                _ => ctx.events.update_failed(&ss, &message).await,
            }
            let reason = match &e {
                ReconcileError::Unseal(u) => u.reason(),
                ReconcileError::Unmanaged(_) => "Unmanaged",
                ReconcileError::Immutable => "Immutable",
                ReconcileError::Malformed(_) => "InvalidSpec",
                _ => "UpdateFailed",
            };
            write_status(&ss, &ctx, false, Some(&message), Some(reason)).await?;
            ticket.record(Synced {
                inputs,
                key: hint,
                failed: true,
            });
            ctx.metrics.condition(&ns, &name, Some(false));
            Ok(Action::await_change())
        }
    }
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
    if attempt > ctx.flags.max_unseal_retries {
        ctx.retries.reset(&key);
        tracing::warn!(object = %key, error = %error, retries = ctx.flags.max_unseal_retries, "giving up until the SealedSecret or the keys change");
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

/// Unseals and writes the Secret; returns the fingerprint of the key that opened it.
async fn sync(
    ss: &SealedSecret,
    ctx: &Context,
    hint: Option<&str>,
) -> Result<Option<String>, ReconcileError> {
    let options = UnsealOptions {
        accept_v1_data: ctx.flags.accept_deprecated_v1_data,
        render_templates: true,
    };
    let permit = ctx
        .rsa
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore open");
    // Ordered only now: on a cold start many reconciles queue for the permit, and each should
    // profit from what the ones before it learnt about which key opens SealedSecrets.
    let keys = {
        let uses = ctx.key_uses.lock().expect("key uses lock");
        ctx.ring.ordered_for(hint, &uses)
    };
    if keys.is_empty() {
        return Err(ReconcileError::NoKeys);
    }
    let owned = ss.clone();
    let keys_for_task = keys.clone();
    ctx.metrics.unseal_requests.inc();
    let unsealed = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let refs: Vec<&keyseal_crypto::PrivateKey> = keys_for_task.iter().map(|k| &k.key).collect();
        unseal(&owned, &refs, options)
    })
    .await
    .expect("unseal task")?;
    // The key that opened most items (normally all of them).
    let mut tally: HashMap<usize, usize> = HashMap::new();
    for index in unsealed.key_indices.values() {
        *tally.entry(*index).or_default() += 1;
    }
    let used_key = tally
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(i, _)| keys[i].fingerprint.clone());
    if let Some(fingerprint) = &used_key {
        *ctx.key_uses
            .lock()
            .expect("key uses lock")
            .entry(fingerprint.clone())
            .or_default() += 1;
    }
    write_secret(ss, ctx, unsealed.secret).await?;
    ctx.retries.reset(&object_key(
        &ss.namespace().unwrap_or_default(),
        &ss.name_any(),
    ));
    Ok(used_key)
}

fn is_controlled_by(secret: &Secret, ss: &SealedSecret) -> bool {
    let uid = ss.metadata.uid.as_deref().unwrap_or("-");
    secret
        .owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

async fn write_secret(
    ss: &SealedSecret,
    ctx: &Context,
    mut desired: Secret,
) -> Result<(), ReconcileError> {
    let ns = ss.namespace().unwrap_or_default();
    let name = ss.name_any();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let skip_owner = is_true(
        desired.metadata.annotations.as_ref(),
        SKIP_SET_OWNER_REFERENCES,
    );
    if skip_owner {
        // Without an ownerReference the controller could not recognise its own Secret after the
        // first create (upstream quirk): mark it managed instead.
        desired
            .annotations_mut()
            .insert(MANAGED.to_owned(), "true".to_owned());
    }
    // Create first: the common case (a new SealedSecret, or a start-up sweep) then costs one
    // request instead of a GET and a create; an existing Secret answers 409 and is read then.
    let existing = match api.create(&PostParams::default(), &desired).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            api.get(&name).await.map_err(classify)?
        }
        Err(e) => return Err(classify(e)),
    };

    let controlled = is_controlled_by(&existing, ss);
    let managed = is_true(existing.metadata.annotations.as_ref(), MANAGED);
    let patch = is_true(existing.metadata.annotations.as_ref(), PATCH);
    if !(controlled || managed || patch) {
        return Err(ReconcileError::Unmanaged(name));
    }
    // As upstream: the patch annotation on the existing Secret decides, whether or not it is
    // already controlled (a patch + managed Secret is owned after the first sync and must keep
    // being merged into, not replaced).
    let mut next = if patch {
        let mut merged = existing.clone();
        let data = merged.data.get_or_insert_with(BTreeMap::new);
        data.extend(desired.data.clone().unwrap_or_default());
        merged
            .labels_mut()
            .extend(desired.metadata.labels.clone().unwrap_or_default());
        merged
            .annotations_mut()
            .extend(desired.metadata.annotations.clone().unwrap_or_default());
        if managed && !skip_owner {
            merged.metadata.owner_references = desired.metadata.owner_references.clone();
        }
        merged
    } else {
        let mut replaced = desired;
        replaced.metadata.resource_version = existing.metadata.resource_version.clone();
        replaced
    };
    let same_content = same_data_and_type(&existing, &next);
    let same_metadata = same_metadata(&existing, &next);
    if existing.immutable == Some(true) {
        if !same_content {
            return Err(ReconcileError::Immutable);
        }
        if same_metadata {
            return Ok(());
        }
        // Labels and annotations may still change; `immutable` itself cannot be unset.
        next.immutable = Some(true);
    } else if same_content
        && same_metadata
        && existing.immutable.unwrap_or(false) == next.immutable.unwrap_or(false)
    {
        return Ok(()); // nothing to write
    }
    api.replace(&name, &PostParams::default(), &next)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Data and type as the API server stores them: an empty map is absent, no type is `Opaque`.
fn same_data_and_type(existing: &Secret, next: &Secret) -> bool {
    fn data(s: &Secret) -> Option<&BTreeMap<String, k8s_openapi::ByteString>> {
        s.data.as_ref().filter(|d| !d.is_empty())
    }
    fn type_(s: &Secret) -> &str {
        s.type_
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or("Opaque")
    }
    data(existing) == data(next) && type_(existing) == type_(next)
}

/// Labels, annotations and ownerReferences, an empty map or list being the same as none.
fn same_metadata(existing: &Secret, next: &Secret) -> bool {
    fn map(m: Option<&BTreeMap<String, String>>) -> Option<&BTreeMap<String, String>> {
        m.filter(|m| !m.is_empty())
    }
    fn owners(s: &Secret) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference] {
        s.metadata.owner_references.as_deref().unwrap_or_default()
    }
    map(existing.metadata.labels.as_ref()) == map(next.metadata.labels.as_ref())
        && map(existing.metadata.annotations.as_ref()) == map(next.metadata.annotations.as_ref())
        && owners(existing) == owners(next)
}

/// Writes the Synced condition (unless --update-status=false), only when something other than
/// timestamps changed; `lastTransitionTime` moves only when the status value does.
async fn write_status(
    ss: &SealedSecret,
    ctx: &Context,
    ok: bool,
    message: Option<&str>,
    reason: Option<&str>,
) -> Result<(), ReconcileError> {
    if !ctx.flags.update_status {
        return Ok(());
    }
    let status_value = if ok { "True" } else { "False" };
    let previous = ss
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_SYNCED));
    let generation = ss.metadata.generation;
    let unchanged = previous.is_some_and(|p| {
        p.status == status_value && p.message.as_deref() == message && p.reason.as_deref() == reason
    }) && ss.status.as_ref().and_then(|s| s.observed_generation) == generation;
    if unchanged {
        return Ok(());
    }
    let now = Time(jiff::Timestamp::now());
    let transition = match previous {
        Some(p) if p.status == status_value => p.last_transition_time.clone().or(Some(now.clone())),
        _ => Some(now.clone()),
    };
    let condition = SealedSecretCondition {
        type_: CONDITION_SYNCED.into(),
        status: status_value.into(),
        last_update_time: Some(now),
        last_transition_time: transition,
        reason: reason.map(str::to_owned),
        message: message.map(str::to_owned),
    };
    let mut updated = ss.clone();
    let mut conditions: Vec<SealedSecretCondition> = ss
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.retain(|c| c.type_ != CONDITION_SYNCED);
    conditions.insert(0, condition);
    updated.status = Some(SealedSecretStatus {
        observed_generation: generation,
        conditions,
    });
    let api: Api<SealedSecret> =
        Api::namespaced(ctx.client.clone(), &ss.namespace().unwrap_or_default());
    // PUT on the status subresource: upstream's RBAC grants `update` there, not `patch`.
    match api
        .replace_status(&ss.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => {
            ctx.metrics
                .error("status", &ss.namespace().unwrap_or_default());
            Err(ReconcileError::Kube(e))
        }
    }
}

/// The namespaces to watch: all, or the controller's plus --additional-namespaces.
pub fn watched_namespaces(flags: &Flags, own: &str) -> Option<Vec<String>> {
    if flags.all_namespaces {
        return None;
    }
    let mut list = vec![own.to_owned()];
    for ns in &flags.additional_namespaces {
        if !ns.is_empty() && !list.contains(ns) {
            list.push(ns.clone());
        }
    }
    Some(list)
}

/// Runs the reconciler until `stop` fires (leadership lost or shutdown).
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Option<Vec<String>>,
    stop: tokio_util::sync::CancellationToken,
) {
    // Unsealing before the key ring has loaded would only fail every SealedSecret with "no
    // sealing keys loaded yet" (a warning and an error count each) and retry them: wait for the
    // first key, which the key watch or the leader's key manager provides.
    let mut keys_changed = ctx.ring.subscribe();
    while ctx.ring.newest().is_none() {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = keys_changed.changed() => if changed.is_err() { return },
        }
    }
    let client = ctx.client.clone();
    let selector = ctx.flags.label_selector.clone();
    let workers = ctx
        .flags
        .workers
        .unwrap_or_else(|| 4 * std::thread::available_parallelism().map_or(2, |n| n.get()));
    let apis: Vec<(Api<CachedSealedSecret>, Api<PartialObjectMeta<Secret>>)> = match namespaces {
        None => vec![(Api::all(client.clone()), Api::all(client.clone()))],
        Some(list) => list
            .iter()
            .map(|ns| {
                (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                )
            })
            .collect(),
    };
    let mut runs: Vec<BoxFuture<'static, ()>> = Vec::new();
    for (sealed, secrets) in apis {
        let ctx = ctx.clone();
        let config = if selector.is_empty() {
            watcher::Config::default()
        } else {
            watcher::Config::default().labels(&selector)
        };
        let clear_ctx = ctx.clone();
        let key_changes = tokio_stream_from_watch(ctx.ring.subscribe())
            .map(move |()| clear_ctx.ledger.clear_failures());
        let stop = stop.clone();
        // The cache holds every SealedSecret (spec as text, see CachedSealedSecret) and drops
        // what only costs memory (managedFields, kubectl's last-applied copy of the object).
        let (reader, writer) = kube::runtime::reflector::store();
        let cached = watcher::watcher(sealed, config)
            .modify(slim_for_cache)
            .reflect(writer)
            .applied_objects();
        let mut controller = Controller::for_stream(cached, reader).with_config(
            kube::runtime::controller::Config::default()
                .concurrency(u16::try_from(workers).unwrap_or(u16::MAX)),
        );
        // Secrets: metadata only, deletions only. A deleted Secret that was the SealedSecret's
        // (see `recreate_on_delete`) makes it unseal again; nothing about unrelated Secrets is
        // kept in memory. With
        // --skip-recreate the deletions are not watched at all (as upstream): a deleted Secret
        // stays deleted until its SealedSecret changes or the controller restarts.
        if !ctx.flags.skip_recreate {
            let forget_ctx = ctx.clone();
            let deletions = watcher::watcher(secrets, watcher::Config::default()).filter_map(
                |event| async move {
                    match event {
                        Ok(watcher::Event::Delete(meta)) => Some(Ok(meta)),
                        Err(e) => Some(Err(e)),
                        _ => None,
                    }
                },
            );
            controller =
                controller.watches_stream(deletions, move |meta: PartialObjectMeta<Secret>| {
                    let recreate = recreate_on_delete(&meta.metadata);
                    let (ns, name) = (
                        meta.metadata.namespace.unwrap_or_default(),
                        meta.metadata.name.unwrap_or_default(),
                    );
                    if recreate {
                        forget_ctx.ledger.forget(&object_key(&ns, &name));
                    }
                    tracing::debug!(namespace = %ns, name = %name, recreate, "Secret deleted");
                    recreate.then(|| ObjectRef::<CachedSealedSecret>::new(&name).within(&ns))
                });
        }
        let graceful = stop.clone();
        let controller = controller
            .reconcile_all_on(key_changes)
            .graceful_shutdown_on(async move { graceful.cancelled().await });
        let store = controller.store();
        let run = controller
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                use kube::runtime::controller::Error;
                match result {
                    // Watch failures (RBAC, a refused selector, the API server away) would
                    // otherwise be silent: the watcher retries with backoff.
                    Err(Error::QueueError(e)) => {
                        tracing::warn!(error = %e, "watching SealedSecrets or Secrets failed; retrying");
                    }
                    // Reconcile failures are logged by the reconciler with their object.
                    Err(e) => tracing::debug!(error = %e, "reconcile loop"),
                    Ok(_) => {}
                }
            });
        runs.push(Box::pin(async move {
            // A graceful shutdown lets running reconciles finish. But kube-runtime holds every
            // reconcile until the first list has filled its cache, and once shut down it stops
            // the watch that would fill it: stopped before that, it would wait forever. Nothing
            // can be running then, so it is dropped instead.
            let not_ready_at_stop = async {
                stop.cancelled().await;
                if store.wait_until_ready().now_or_never().is_some() {
                    futures::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = run => {}
                () = not_ready_at_stop => {
                    tracing::debug!("stopped before the first list of SealedSecrets completed");
                }
            }
        }));
    }
    futures::future::join_all(runs).await;
}

/// Whether a deleted Secret is unsealed again from its SealedSecret (same name): only when it was
/// the SealedSecret's, that is controlled by a SealedSecret or annotated
/// `sealedsecrets.bitnami.com/managed: "true"`, as upstream decides. A deleted Secret that
/// belonged to someone else (one the SealedSecret failed on as unmanaged, or only patched) stays
/// deleted until the SealedSecret changes.
fn recreate_on_delete(meta: &ObjectMeta) -> bool {
    let controlled = meta.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && o.kind == "SealedSecret"
            && o.api_version.starts_with("bitnami.com/")
            && meta.name.as_deref() == Some(o.name.as_str())
    });
    controlled || is_true(meta.annotations.as_ref(), MANAGED)
}

/// What the SealedSecret cache does without: the reconciler reads the name, namespace, uid,
/// generation, annotations (scope), spec and status; a status write goes to the status
/// subresource, where the API server takes nothing but the status from the body.
fn slim_for_cache(ss: &mut CachedSealedSecret) {
    ss.metadata.managed_fields = None;
    if let Some(annotations) = ss.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// kubectl's client-side apply keeps a copy of the whole object here (encryptedData included).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A stream that yields whenever the key ring changes (so SealedSecrets that no key could open
/// are retried with a newly loaded key).
fn tokio_stream_from_watch(
    rx: tokio::sync::watch::Receiver<u64>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(spec: &str) -> CachedSealedSecret {
        serde_json::from_str(&format!(
            r#"{{"apiVersion":"bitnami.com/v1alpha1","kind":"SealedSecret",
                "metadata":{{"name":"db","namespace":"shop","uid":"u-1","generation":3,
                  "annotations":{{"sealedsecrets.bitnami.com/namespace-wide":"true"}}}},
                "spec":{spec},
                "status":{{"observedGeneration":2,"conditions":[]}}}}"#
        ))
        .expect("a cache entry")
    }

    #[test]
    fn the_cache_keeps_the_spec_as_text_and_parses_it_whole() {
        let c = cached(
            r#"{"encryptedData":{"password":"AgBy"},"template":{"type":"Opaque","data":{"url":"{{ .password }}"}}}"#,
        );
        assert_eq!(inputs_of(&c.metadata), "u-1|3|namespace-wide");
        let (ss, unreadable) = c.parse();
        assert_eq!(unreadable, None);
        assert_eq!(ss.spec.encrypted_data["password"], "AgBy");
        assert_eq!(ss.spec.template.type_.as_deref(), Some("Opaque"));
        assert_eq!(ss.metadata.name.as_deref(), Some("db"));
        assert_eq!(ss.status.and_then(|s| s.observed_generation), Some(2));
    }

    fn synced(key: &str) -> Synced {
        Synced {
            inputs: "u-1|3|strict".into(),
            key: Some(key.into()),
            failed: false,
        }
    }

    fn run<'a>(ledger: &'a Ledger, key: &str) -> Ticket<'a> {
        match ledger.begin(key, "u-1|3|strict") {
            Begin::Run(ticket) => ticket,
            Begin::Done => panic!("{key} should be reconciled"),
        }
    }

    #[test]
    fn a_recorded_sync_skips_the_next_reconcile_at_the_same_inputs() {
        let ledger = Ledger::default();
        assert_eq!(run(&ledger, "shop/db").hint, None);
        assert!(run(&ledger, "shop/db").record(synced("SHA256:k1")));
        assert!(matches!(
            ledger.begin("shop/db", "u-1|3|strict"),
            Begin::Done
        ));
        // New inputs: reconciled again, the key that opened it last time first.
        match ledger.begin("shop/db", "u-1|4|strict") {
            Begin::Run(ticket) => assert_eq!(ticket.hint.as_deref(), Some("SHA256:k1")),
            Begin::Done => panic!("a new generation is reconciled"),
        }
        assert_eq!(
            ledger.per_key_counts(),
            BTreeMap::from([("SHA256:k1".into(), 1)])
        );
    }

    /// Upstream's integration suite ("Secret Recreation With owned secret should recreate the
    /// secret", at 5 QPS): the owned Secret was deleted while the reconcile that created it was
    /// still writing the status. The deletion handler forgot the object, then that reconcile
    /// recorded it as synced, and the reconcile queued by the deletion skipped it: the Secret was
    /// not recreated until the SealedSecret changed.
    #[test]
    fn regression_a_deletion_during_the_reconcile_is_not_overwritten_by_its_record() {
        let ledger = Ledger::default();
        let ticket = run(&ledger, "shop/db");
        ledger.forget("shop/db"); // the Secret's deletion event, mid-reconcile
        assert!(
            !ticket.record(synced("SHA256:k1")),
            "overtaken: not recorded"
        );
        // The reconcile the deletion queued does the work again.
        assert!(run(&ledger, "shop/db").record(synced("SHA256:k1")));
        assert!(matches!(
            ledger.begin("shop/db", "u-1|3|strict"),
            Begin::Done
        ));
        // A deletion of another object's Secret overtakes nothing here.
        let ticket = run(&ledger, "shop/other");
        ledger.forget("shop/unrelated");
        assert!(ticket.record(synced("SHA256:k1")));
    }

    #[test]
    fn a_transient_failure_remembers_nothing_and_leaves_no_running_entry() {
        let ledger = Ledger::default();
        drop(run(&ledger, "shop/db")); // returned an error: no record
        assert!(ledger.state().running.is_empty());
        // A deletion now (no reconcile running) only forgets; the next reconcile records.
        ledger.forget("shop/db");
        assert!(run(&ledger, "shop/db").record(synced("SHA256:k1")));
        assert!(ledger.state().running.is_empty());
    }

    #[test]
    fn a_new_key_retries_permanent_failures_only() {
        let ledger = Ledger::default();
        assert!(run(&ledger, "shop/ok").record(synced("SHA256:k1")));
        let mut failed = synced("SHA256:k1");
        failed.failed = true;
        assert!(run(&ledger, "shop/bad").record(failed.clone()));
        ledger.clear_failures();
        assert!(matches!(
            ledger.begin("shop/ok", "u-1|3|strict"),
            Begin::Done
        ));
        assert!(matches!(
            ledger.begin("shop/bad", "u-1|3|strict"),
            Begin::Run(_)
        ));

        // A key loaded while a reconcile is failing: that failure is not remembered, so the
        // reconcile the key change queued tries the new key. A success is remembered.
        let (failing, succeeding) = (run(&ledger, "shop/late"), run(&ledger, "shop/fine"));
        ledger.clear_failures();
        assert!(!failing.record(failed));
        assert!(succeeding.record(synced("SHA256:k1")));
        assert!(matches!(
            ledger.begin("shop/late", "u-1|3|strict"),
            Begin::Run(_)
        ));
        assert!(matches!(
            ledger.begin("shop/fine", "u-1|3|strict"),
            Begin::Done
        ));
    }

    /// Upstream's integration suite ("Secret Recreation With unowned secret without managed
    /// annotation / with patch annotation should not recreate the secret"): keyseal used to
    /// unseal a SealedSecret again on the deletion of any Secret of its name, so an unmanaged
    /// Secret it had refused to touch came back as the SealedSecret's once deleted. Upstream only
    /// reacts to Secrets the SealedSecret controls or that are annotated managed.
    #[test]
    fn regression_only_the_sealed_secrets_own_secret_is_recreated() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let owner = |kind: &str, name: &str, controller| OwnerReference {
            api_version: "bitnami.com/v1alpha1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u-1".into(),
            controller,
            ..OwnerReference::default()
        };
        let meta = |owners: Vec<OwnerReference>, annotations: &[(&str, &str)]| ObjectMeta {
            name: Some("db".into()),
            namespace: Some("shop".into()),
            owner_references: Some(owners),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        };
        assert!(recreate_on_delete(&meta(
            vec![owner("SealedSecret", "db", Some(true))],
            &[]
        )));
        assert!(recreate_on_delete(&meta(vec![], &[(MANAGED, "true")])));
        assert!(!recreate_on_delete(&meta(vec![], &[])), "unmanaged");
        assert!(
            !recreate_on_delete(&meta(vec![], &[(PATCH, "true")])),
            "patched only"
        );
        assert!(!recreate_on_delete(&meta(vec![], &[(MANAGED, "false")])));
        assert!(
            !recreate_on_delete(&meta(vec![owner("SealedSecret", "db", None)], &[])),
            "not the controller"
        );
        assert!(!recreate_on_delete(&meta(
            vec![owner("Deployment", "db", Some(true))],
            &[]
        )));
        assert!(!recreate_on_delete(&meta(
            vec![owner("SealedSecret", "other", Some(true))],
            &[]
        )));
    }

    #[test]
    fn a_spec_of_the_wrong_shape_fails_that_object_without_quoting_it() {
        let c = cached(r#"{"template":{"type":["not-a-string-value-123"]}}"#);
        let (ss, unreadable) = c.parse();
        let message = unreadable.expect("wrong shape");
        assert_eq!(
            ss.metadata.name.as_deref(),
            Some("db"),
            "named for its status"
        );
        assert!(message.contains("spec cannot be read"), "{message}");
        assert!(!message.contains("not-a-string-value-123"), "{message}");
    }
}
