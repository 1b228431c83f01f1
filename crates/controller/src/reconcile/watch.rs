//! The reconciler's watches and kube-runtime's controller loop: SealedSecrets (cached slim),
//! deletions of the Secrets they own, and changes of the key ring.

use std::sync::Arc;

use futures::{FutureExt as _, StreamExt, future::BoxFuture};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keyseal_api::annotations::{MANAGED, is_true};
use kube::api::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::cache::{CachedSealedSecret, slim_for_cache};
use super::{Context, error_policy, object_key, reconcile};
use crate::startup::{self, Phase};

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
    startup::mark(Phase::FirstKey);
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
    tokio::spawn(mark_when_ready(store.clone()));
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

/// Marks [`Phase::CacheReady`] once `store` holds the first complete list.
async fn mark_when_ready(store: Store<CachedSealedSecret>) {
    if store.wait_until_ready().await.is_ok() {
        startup::mark(Phase::CacheReady);
    }
}

/// Secrets: metadata only, deletions only. A deleted Secret that was the SealedSecret's (see
/// [`recreate_on_delete`]) makes it unseal again; nothing about unrelated Secrets is kept in
/// memory.
fn watch_deletions(
    controller: Controller<CachedSealedSecret>,
    secrets: Api<PartialObjectMeta<Secret>>,
    ctx: Arc<Context>,
) -> Controller<CachedSealedSecret> {
    let deletions =
        watcher::watcher(secrets, watcher::Config::default()).filter_map(|event| async move {
            match event {
                Ok(watcher::Event::Delete(meta)) => Some(Ok(meta)),
                Err(e) => Some(Err(e)),
                _ => None,
            }
        });
    controller.watches_stream(deletions, move |meta: PartialObjectMeta<Secret>| {
        let recreate = recreate_on_delete(&meta.metadata);
        let (ns, name) = (
            meta.metadata.namespace.unwrap_or_default(),
            meta.metadata.name.unwrap_or_default(),
        );
        if recreate {
            ctx.ledger.forget(&object_key(&ns, &name));
        }
        tracing::debug!(namespace = %ns, name = %name, recreate, "Secret deleted");
        recreate.then(|| ObjectRef::<CachedSealedSecret>::new(&name).within(&ns))
    })
}

/// Whether a deleted Secret is unsealed again from its SealedSecret (same name): only when it was
/// the SealedSecret's, that is controlled by a SealedSecret or annotated
/// `sealedsecrets.bitnami.com/managed: "true"`, as upstream decides. A deleted Secret that
/// belonged to someone else (one the SealedSecret failed on as unmanaged, or only patched) stays
/// deleted until the SealedSecret changes.
fn recreate_on_delete(meta: &ObjectMeta) -> bool {
    let controlled = meta.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && o.kind == keyseal_api::annotations::KIND
            && o.api_version.starts_with("bitnami.com/")
            && meta.name.as_deref() == Some(o.name.as_str())
    });
    controlled || is_true(meta.annotations.as_ref(), MANAGED)
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

#[cfg(test)]
mod tests {
    use super::*;
    use keyseal_api::annotations::PATCH;
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
}
