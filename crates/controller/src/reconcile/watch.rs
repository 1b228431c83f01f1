//! The reconciler's watches and kube-runtime's controller loop: SealedSecrets (cached slim),
//! deletions of the Secrets they own, and changes of the key ring.

use std::sync::Arc;

use futures::{FutureExt as _, StreamExt, future::BoxFuture};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::cache::{CachedSealedSecret, slim_for_cache};
use super::secrets::recreate_on_delete;
use super::{Context, error_policy, object_key, reconcile};

/// The SealedSecrets of one watch scope (all namespaces, or one), and the Secrets beside them.
type Scope = (Api<CachedSealedSecret>, Api<PartialObjectMeta<Secret>>);

/// Runs the reconciler until `stop` fires (leadership lost or shutdown).
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
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
    let runs = scopes(&ctx.client, ctx.settings.namespaces.as_deref())
        .into_iter()
        .map(|scope| run_scope(ctx.clone(), scope, stop.clone()));
    futures::future::join_all(runs).await;
}

fn scopes(client: &Client, namespaces: Option<&[String]>) -> Vec<Scope> {
    match namespaces {
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
    }
}

/// One controller loop over one scope.
fn run_scope(
    ctx: Arc<Context>,
    (sealed, secrets): Scope,
    stop: CancellationToken,
) -> BoxFuture<'static, ()> {
    let selector = &ctx.settings.label_selector;
    let config = if selector.is_empty() {
        watcher::Config::default()
    } else {
        watcher::Config::default().labels(selector)
    };
    let clear_ctx = ctx.clone();
    let key_changes =
        stream_from_watch(ctx.ring.subscribe()).map(move |()| clear_ctx.ledger.clear_failures());
    // The cache holds every SealedSecret (spec as text, see CachedSealedSecret) and drops
    // what only costs memory (managedFields, kubectl's last-applied copy of the object).
    let (reader, writer) = kube::runtime::reflector::store();
    let cached = watcher::watcher(sealed, config)
        .modify(slim_for_cache)
        .reflect(writer)
        .applied_objects();
    let mut controller = Controller::for_stream(cached, reader).with_config(
        kube::runtime::controller::Config::default()
            .concurrency(u16::try_from(ctx.settings.workers).unwrap_or(u16::MAX)),
    );
    // With --skip-recreate the deletions are not watched at all (as upstream): a deleted Secret
    // stays deleted until its SealedSecret changes or the controller restarts.
    if !ctx.settings.skip_recreate {
        controller = watch_deletions(controller, secrets, ctx.clone());
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
    Box::pin(async move {
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
    })
}

/// Secrets: metadata only. A deleted Secret that was the SealedSecret's (see
/// `secrets::recreate_on_delete`), or one of those missing when the watch lists again after an
/// interruption, makes it unseal again; the resourceVersions of those Secrets are kept for
/// `decide::recorded` (`secrets::SecretVersions`); nothing about unrelated Secrets is kept.
fn watch_deletions(
    controller: Controller<CachedSealedSecret>,
    secrets: Api<PartialObjectMeta<Secret>>,
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
                observer.secrets.observe(event).into_iter().map(Ok).collect()
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
