//! The reconciler's watches and kube-runtime's controller loop: SealedSecrets (cached slim),
//! deletions of the Secrets they own, and changes of the key ring.

use std::sync::{Arc, Mutex};

use futures::{FutureExt as _, StreamExt, future::BoxFuture};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cache::{CachedSealedSecret, slim_for_cache};
use super::secrets::{self, recreate_on_delete};
use super::{Context, Settings, error_policy, object_key, reconcile};
use crate::startup::{self, Phase};

/// Changes of a scope's cached SealedSecrets, passed on to the controller loop of the current
/// term of leadership (none while this replica stands by).
#[derive(Default)]
struct Subscriber {
    /// A SealedSecret was added or changed.
    applied: Option<mpsc::Sender<ObjectRef<CachedSealedSecret>>>,
    /// A (re)list completed: every cached SealedSecret is looked at again.
    listed: Option<mpsc::Sender<()>>,
}

/// One watch scope (all namespaces, or one): its SealedSecrets, cached, and the Secrets beside
/// them.
struct Scope {
    store: Store<CachedSealedSecret>,
    subscriber: Arc<Mutex<Subscriber>>,
    secrets: ScopedSecrets,
}

/// The Secrets beside a scope's SealedSecrets, and the scope's namespace (`None`: all).
type ScopedSecrets = (Api<PartialObjectMeta<Secret>>, secrets::Scope);

/// The SealedSecrets the reconciler works on, cached by a watch that every replica runs from
/// process start: a replica that becomes the leader finds them listed already (or being listed)
/// instead of only starting to list them then. The cache holds each SealedSecret slim (spec as
/// text, see [`CachedSealedSecret`]), without what only costs memory (managedFields,
/// kubectl's last-applied copy of the object).
pub struct SealedSecretCache {
    scopes: Vec<Scope>,
}

impl SealedSecretCache {
    /// Starts the watches of `settings`' namespaces and label selector; they run until
    /// `shutdown`.
    pub fn start(client: &Client, settings: &Settings, shutdown: &CancellationToken) -> Self {
        let config = if settings.label_selector.is_empty() {
            watcher::Config::default()
        } else {
            watcher::Config::default().labels(&settings.label_selector)
        };
        let scopes = apis(client, settings.namespaces.as_deref())
            .into_iter()
            .map(|(sealed, secrets)| {
                let (store, writer) = kube::runtime::reflector::store();
                let subscriber = Arc::new(Mutex::new(Subscriber::default()));
                let events = watcher::watcher(sealed, config.clone())
                    .default_backoff()
                    .modify(slim_for_cache)
                    .reflect(writer);
                tokio::spawn(keep(
                    events,
                    store.clone(),
                    subscriber.clone(),
                    shutdown.clone(),
                ));
                Scope {
                    store,
                    subscriber,
                    secrets,
                }
            })
            .collect();
        Self { scopes }
    }
}

/// Polls one scope's watch (which fills `store`) until `shutdown`, passing changes on to the
/// current term's controller loop.
async fn keep(
    events: impl futures::Stream<Item = Result<watcher::Event<CachedSealedSecret>, watcher::Error>>,
    store: Store<CachedSealedSecret>,
    subscriber: Arc<Mutex<Subscriber>>,
    shutdown: CancellationToken,
) {
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            // Would otherwise be silent (RBAC, a refused selector, the API server away): the
            // watcher retries with backoff.
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching SealedSecrets failed; retrying");
            }
            Some(Ok(watcher::Event::Apply(object))) => {
                let sender = lock(&subscriber).applied.clone();
                if let Some(sender) = sender {
                    let _ = sender.send(ObjectRef::from_obj(&object)).await;
                }
            }
            Some(Ok(watcher::Event::InitDone)) => {
                // Marked here rather than by a task waiting on the store: kube-runtime's
                // `wait_until_ready` wakes only its latest waiter, which must be the
                // controller loop's.
                if startup::at(Phase::CacheReady).is_none() {
                    tracing::debug!(count = store.len(), "SealedSecrets listed");
                }
                startup::mark(Phase::CacheReady);
                let sender = lock(&subscriber).listed.clone();
                if let Some(sender) = sender {
                    let _ = sender.send(()).await;
                }
            }
            // Objects of a relist reach the store at InitDone; a deleted one's Secret is the
            // garbage collector's.
            Some(Ok(_)) => {}
        }
    }
}

fn lock(subscriber: &Mutex<Subscriber>) -> std::sync::MutexGuard<'_, Subscriber> {
    subscriber.lock().expect("subscriber lock")
}

/// Runs the reconciler on `cache` until `stop` fires (leadership lost or shutdown).
pub async fn run(ctx: Arc<Context>, cache: Arc<SealedSecretCache>, stop: CancellationToken) {
    // Unsealing before the key ring has loaded would only fail every SealedSecret with "no
    // sealing keys loaded yet" (a warning and an error count each) and retry them: wait for the
    // first key, which the key watch or the leader's key manager provides. The cache fills
    // meanwhile.
    let mut keys_changed = ctx.ring.subscribe();
    while ctx.ring.newest().is_none() {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = keys_changed.changed() => if changed.is_err() { return },
        }
    }
    startup::mark(Phase::FirstKey);
    let runs = cache
        .scopes
        .iter()
        .map(|scope| run_scope(ctx.clone(), scope, stop.clone()));
    futures::future::join_all(runs).await;
}

fn apis(
    client: &Client,
    namespaces: Option<&[String]>,
) -> Vec<(Api<CachedSealedSecret>, ScopedSecrets)> {
    match namespaces {
        None => vec![(Api::all(client.clone()), (Api::all(client.clone()), None))],
        Some(list) => list
            .iter()
            .map(|ns| {
                (
                    Api::namespaced(client.clone(), ns),
                    (Api::namespaced(client.clone(), ns), Some(ns.clone())),
                )
            })
            .collect(),
    }
}

/// One term's controller loop over one scope: every cached SealedSecret once, then each change
/// the cache's watch passes on.
fn run_scope(ctx: Arc<Context>, scope: &Scope, stop: CancellationToken) -> BoxFuture<'static, ()> {
    let (applied_tx, applied) = mpsc::channel(CHANGES);
    let (listed_tx, listed) = mpsc::channel(CHANGES);
    // Subscribed before the first pass reads the cache: nothing changed in between is missed.
    *lock(&scope.subscriber) = Subscriber {
        applied: Some(applied_tx),
        listed: Some(listed_tx),
    };
    let clear_ctx = ctx.clone();
    let key_changes =
        stream_from_watch(ctx.ring.subscribe()).map(move |()| clear_ctx.ledger.clear_failures());
    let everything = futures::stream::once(async {}).chain(stream_from_channel(listed));
    let mut controller = Controller::for_stream(
        futures::stream::empty::<Result<CachedSealedSecret, watcher::Error>>(),
        scope.store.clone(),
    )
    .with_config(
        kube::runtime::controller::Config::default()
            .concurrency(u16::try_from(ctx.settings.workers).unwrap_or(u16::MAX)),
    )
    .reconcile_on(stream_from_channel(applied))
    .reconcile_all_on(everything);
    // With --skip-recreate the deletions are not watched at all (as upstream): a deleted Secret
    // stays deleted until its SealedSecret changes or the controller restarts.
    if !ctx.settings.skip_recreate {
        controller = watch_deletions(controller, scope.secrets.clone(), ctx.clone());
    }
    let graceful = stop.clone();
    let controller = controller
        .reconcile_all_on(key_changes)
        .graceful_shutdown_on(async move { graceful.cancelled().await });
    let store = controller.store();
    let reconcile = |object, ctx| {
        // kube-runtime runs reconciles only once the cache is ready.
        startup::mark(Phase::CacheReady);
        startup::mark(Phase::FirstReconcile);
        reconcile(object, ctx)
    };
    let run = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            use kube::runtime::controller::Error;
            match result {
                // Watch failures of the Secrets' deletions would otherwise be silent.
                Err(Error::QueueError(e)) => {
                    tracing::warn!(error = %e, "watching Secrets failed; retrying");
                }
                // Reconcile failures are logged by the reconciler with their object.
                Err(e) => tracing::debug!(error = %e, "reconcile loop"),
                Ok(_) => {}
            }
        });
    let subscriber = scope.subscriber.clone();
    Box::pin(async move {
        // A graceful shutdown lets running reconciles finish. But kube-runtime holds every
        // reconcile until the first list has filled the cache, which may never happen (the
        // watch stops at shutdown, or the API server refuses it): stopped before that, it would
        // wait forever. Nothing can be running then, so it is dropped instead.
        let not_ready_at_stop = async {
            stop.cancelled().await;
            // Not ready also when the cache's watch has stopped (shutdown) without a list.
            if matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))) {
                futures::future::pending::<()>().await;
            }
        };
        tokio::select! {
            // Checked first: a loop whose cache never filled may end at the same moment.
            biased;
            () = not_ready_at_stop => {
                tracing::debug!("stopped before the first list of SealedSecrets completed");
            }
            () = run => {}
        }
        *lock(&subscriber) = Subscriber::default();
    })
}

/// How many changes wait for the controller loop before the cache's watch waits for it.
const CHANGES: usize = 1024;

/// A stream of what `rx` receives.
fn stream_from_channel<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// Secrets: metadata only. A deleted Secret that was the SealedSecret's (see
/// `secrets::recreate_on_delete`), or one of those missing when the watch lists again after an
/// interruption, makes it unseal again; the resourceVersions of those Secrets are kept for
/// `decide::recorded` (`secrets::SecretVersions`); nothing about unrelated Secrets is kept.
fn watch_deletions(
    controller: Controller<CachedSealedSecret>,
    (secrets, scope): ScopedSecrets,
    ctx: Arc<Context>,
) -> Controller<CachedSealedSecret> {
    let observer = ctx.clone();
    let gone = watcher::watcher(secrets, watcher::Config::default()).flat_map(move |event| {
        let gone: Vec<Result<_, watcher::Error>> = match event {
            Ok(event) => {
                if let watcher::Event::Delete(secret) = &event
                    && !recreate_on_delete(&secret.metadata)
                {
                    let (ns, name) = (&secret.metadata.namespace, &secret.metadata.name);
                    let (ns, name) = (ns.as_deref().unwrap_or_default(), name.as_deref().unwrap_or_default());
                    tracing::debug!(namespace = %ns, name = %name, recreate = false, "Secret deleted");
                }
                observer.secrets.observe(&scope, event).into_iter().map(Ok).collect()
            }
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(gone)
    });
    controller.watches_stream(gone, move |meta: PartialObjectMeta<Secret>| {
        let (ns, name) = (
            meta.metadata.namespace.unwrap_or_default(),
            meta.metadata.name.unwrap_or_default(),
        );
        ctx.ledger.forget(&object_key(&ns, &name));
        tracing::debug!(namespace = %ns, name = %name, recreate = true, "Secret deleted");
        Some(ObjectRef::<CachedSealedSecret>::new(&name).within(&ns))
    })
}

/// A stream that yields whenever the key ring changes (so SealedSecrets that no key could open
/// are retried with a newly loaded key).
fn stream_from_watch(
    rx: tokio::sync::watch::Receiver<u64>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}
