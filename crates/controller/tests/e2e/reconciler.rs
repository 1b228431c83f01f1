//! The reconciler, end to end (COMPAT §3, §5, and keyseal's fixes of §9): the real controller
//! binary, under the manifests' RBAC, against the real control plane. One behaviour per test,
//! each with its own namespace and its own controller.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use anyhow::{Context as _, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use keyseal_api::annotations::{MANAGED, PATCH, SKIP_SET_OWNER_REFERENCES};
use keyseal_api::{Scope, SealedSecret};
use keyseal_crypto::Certificate;
use keyseal_testenv::await_condition;
use keyseal_testenv::metrics::Metrics;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Moves a SealedSecret (and its template) to another name/namespace without re-sealing.
fn moved(mut ss: SealedSecret, namespace: &str, name: &str) -> SealedSecret {
    ss.metadata.name = Some(name.into());
    ss.metadata.namespace = Some(namespace.into());
    if let Some(meta) = ss.spec.template.metadata.as_mut() {
        meta.name = Some(name.into());
        meta.namespace = Some(namespace.into());
    }
    ss
}

fn sealed_api(client: Client, namespace: &str) -> Api<SealedSecret> {
    Api::namespaced(client, namespace)
}

fn message(ss: &SealedSecret) -> String {
    synced(ss)
        .and_then(|c| c.message.clone())
        .unwrap_or_default()
}

/// Waits until the SealedSecret `name` is Synced=False at its generation and checks that the
/// condition's message contains `text`.
async fn await_failed(api: &Api<SealedSecret>, name: &str, text: &str) -> Result<SealedSecret> {
    let ss = await_synced(api, name, "False").await?;
    assert!(
        message(&ss).contains(text),
        "{name}: {:?} should contain {text:?}",
        message(&ss)
    );
    Ok(ss)
}

/// Reads, modifies and replaces a SealedSecret, retrying on write conflicts with the
/// controller's status updates.
async fn modify(
    api: &Api<SealedSecret>,
    name: &str,
    change: impl Fn(&mut SealedSecret),
) -> Result<SealedSecret> {
    for _ in 0..10 {
        let mut ss = api.get(name).await?;
        change(&mut ss);
        match api.replace(name, &PostParams::default(), &ss).await {
            Ok(ss) => return Ok(ss),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("SealedSecret {name}: too many write conflicts")
}

/// Waits for an event with `reason` about `name` and returns it.
async fn await_event(client: Client, namespace: &str, name: &str, reason: &str) -> Result<Event> {
    await_condition(
        Duration::from_secs(15),
        &format!("event {reason} about {namespace}/{name}"),
        || {
            let client = client.clone();
            let (namespace, name, reason) = (namespace.to_owned(), name.to_owned(), reason);
            async move {
                Ok(events_about(client, &namespace, &name)
                    .await?
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some(reason)))
            }
        },
    )
    .await
}

/// How many times an event was emitted (a series counts each occurrence).
fn occurrences(events: &[Event], reason: &str) -> i32 {
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

/// Checks the Event as upstream publishes it: type, reason, note, reporting controller, and
/// that it is about the SealedSecret.
fn check_event(event: &Event, type_: &str, note_contains: &str) {
    assert_eq!(event.type_.as_deref(), Some(type_), "{event:?}");
    assert!(
        event
            .note
            .as_deref()
            .is_some_and(|n| n.contains(note_contains)),
        "event note {:?} should contain {note_contains:?}",
        event.note
    );
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("sealed-secrets"),
        "{event:?}"
    );
    let regarding = event.regarding.as_ref().expect("regarding");
    assert_eq!(regarding.kind.as_deref(), Some("SealedSecret"));
    assert_eq!(
        regarding.api_version.as_deref(),
        Some("bitnami.com/v1alpha1")
    );
}

fn owner_ok(secret: &Secret, ss: &SealedSecret) {
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "exactly one ownerReference: {owners:?}");
    let o = &owners[0];
    assert_eq!(o.api_version, "bitnami.com/v1alpha1");
    assert_eq!(o.kind, "SealedSecret");
    assert_eq!(Some(&o.name), ss.metadata.name.as_ref());
    assert_eq!(Some(&o.uid), ss.metadata.uid.as_ref());
    assert_eq!(o.controller, Some(true));
}

fn no_owner(secret: &Secret) -> bool {
    secret
        .metadata
        .owner_references
        .as_ref()
        .is_none_or(Vec::is_empty)
}

fn pairs(secret: &Secret) -> Vec<(String, String)> {
    data(secret).into_iter().collect()
}

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    strings(pairs).into_iter().collect()
}

fn existing_secret(
    name: &str,
    annotations: &[(&str, &str)],
    labels: &[(&str, &str)],
    items: &[(&str, &str)],
) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.annotations = Some(strings(annotations));
    s.metadata.labels = Some(strings(labels));
    s.data = Some(
        items
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    s
}

// ---------------------------------------------------------------------------------------------
// Create, update, delete

#[tokio::test]
async fn create_update_and_delete_follow_the_sealed_secret() -> Result<()> {
    let Running(env, controller, cert, ns, _) = Running::start("rc-life", &[]).await?;

    let mut plain = plain_secret(&ns, "app", &[("password", "LIFE-pw-1")], Scope::Strict);
    plain.metadata.labels = Some(strings(&[("app", "web"), ("tier", "db")]));
    plain
        .metadata
        .annotations
        .get_or_insert_default()
        .insert("example.com/note".into(), "hello".into());
    plain.type_ = Some("example.com/custom".into());
    plain.immutable = Some(false);
    let ss = keyseal_api::seal_secret(&plain, cert.public_key())?;
    let created = env.create(&ss).await?;

    let secret = env.await_secret("app", |_| true).await?;
    assert_eq!(pairs(&secret), expect(&[("password", "LIFE-pw-1")]));
    assert_eq!(
        secret.metadata.labels,
        Some(strings(&[("app", "web"), ("tier", "db")]))
    );
    assert_eq!(
        secret.metadata.annotations,
        Some(strings(&[("example.com/note", "hello")]))
    );
    assert_eq!(secret.type_.as_deref(), Some("example.com/custom"));
    assert_eq!(secret.immutable, Some(false));
    owner_ok(&secret, &created);
    let ss1 = env.await_synced("app", "True").await?;
    assert_eq!(ss1.metadata.generation, Some(1));

    // Someone edits the owned Secret; the next update of the SealedSecret overwrites it all.
    let mut tampered = env.secrets().get("app").await?;
    tampered
        .data
        .get_or_insert_default()
        .insert("intruder".into(), ByteString(b"x".to_vec()));
    tampered
        .metadata
        .labels
        .get_or_insert_default()
        .insert("intruder".into(), "x".into());
    env.secrets()
        .replace("app", &PostParams::default(), &tampered)
        .await?;

    // New item, changed value, changed template metadata.
    let mut plain2 = plain_secret(
        &ns,
        "app",
        &[("password", "LIFE-pw-2"), ("token", "LIFE-tok-2")],
        Scope::Strict,
    );
    plain2.metadata.labels = Some(strings(&[("app", "web2")]));
    plain2.type_ = Some("example.com/custom".into());
    let ss2 = keyseal_api::seal_secret(&plain2, cert.public_key())?;
    modify(&env.sealed_secrets(), "app", |s| s.spec = ss2.spec.clone()).await?;
    let secret = env
        .await_secret("app", |s| data(s).contains_key("token"))
        .await?;
    assert_eq!(
        pairs(&secret),
        expect(&[("password", "LIFE-pw-2"), ("token", "LIFE-tok-2")]),
        "overwritten: the intruder item is gone"
    );
    assert_eq!(secret.metadata.labels, Some(strings(&[("app", "web2")])));
    owner_ok(&secret, &created);
    let ss2 = env.await_synced("app", "True").await?;
    assert_eq!(ss2.metadata.generation, Some(2));

    assert_no_plaintext(&controller, &env, &["LIFE-pw-1", "LIFE-pw-2", "LIFE-tok-2"]).await?;

    // Deleting the SealedSecret: garbage collection removes the Secret.
    env.sealed_secrets()
        .delete("app", &DeleteParams::background())
        .await?;
    let secrets = env.secrets();
    await_condition(WAIT, "the Secret is garbage-collected", || {
        let secrets = secrets.clone();
        async move { Ok(secrets.get_opt("app").await?.is_none().then_some(())) }
    })
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scopes

#[tokio::test]
async fn strict_scope_opens_only_under_its_own_name_and_namespace() -> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("rc-strict", &[]).await?;

    // Right name and namespace.
    env.create(&env.seal(&cert, "right", &[("pw", "STRICT-ok")], Scope::Strict))
        .await?;
    // Sealed for another name, created as "renamed".
    let other_name = env.seal(&cert, "other", &[("pw", "STRICT-n")], Scope::Strict);
    env.create(&moved(other_name, &ns, "renamed")).await?;
    // Sealed for another namespace, created here under the same name.
    let other_ns = seal_for(
        &cert,
        "elsewhere",
        "same",
        &[("pw", "STRICT-ns")],
        Scope::Strict,
    );
    env.create(&moved(other_ns, &ns, "same")).await?;

    await_synced(&api, "right", "True").await?;
    let s = env.await_secret("right", |_| true).await?;
    assert_eq!(pairs(&s), expect(&[("pw", "STRICT-ok")]));
    for name in ["renamed", "same"] {
        await_failed(&api, name, "no key could decrypt secret (pw)").await?;
        let event = await_event(env.admin(), &ns, name, "ErrUnsealFailed").await?;
        check_event(
            &event,
            "Warning",
            "Failed to unseal: no key could decrypt secret (pw)",
        );
        assert!(env.secrets().get_opt(name).await?.is_none(), "{name}");
    }
    assert_no_plaintext(&controller, &env, &["STRICT-ok", "STRICT-n", "STRICT-ns"]).await?;
    Ok(())
}

#[tokio::test]
async fn namespace_wide_scope_opens_under_any_name_in_its_namespace() -> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("rc-nswide", &[]).await?;

    let ss = env.seal(&cert, "orig", &[("pw", "NSW-ok")], Scope::NamespaceWide);
    env.create(&moved(ss, &ns, "renamed")).await?;
    // Namespace-wide for another namespace does not open here.
    let ss = seal_for(
        &cert,
        "elsewhere",
        "x",
        &[("pw", "NSW-no")],
        Scope::NamespaceWide,
    );
    env.create(&moved(ss, &ns, "foreign")).await?;

    await_synced(&api, "renamed", "True").await?;
    let s = env.await_secret("renamed", |_| true).await?;
    assert_eq!(pairs(&s), expect(&[("pw", "NSW-ok")]));
    await_failed(&api, "foreign", "no key could decrypt secret (pw)").await?;
    assert_no_plaintext(&controller, &env, &["NSW-ok", "NSW-no"]).await?;
    Ok(())
}

#[tokio::test]
async fn cluster_wide_scope_opens_anywhere() -> Result<()> {
    let env = Env::new("rc-cwide").await?;
    let other = env.cluster.namespace("rc-cwide2").await?;
    let controller = env
        .start_controller(&["--additional-namespaces", other.name()])
        .await?;
    let cert = controller.cert().await?;
    let ns = env.name().to_owned();

    let ss = env.seal(&cert, "orig", &[("pw", "CW-ok")], Scope::ClusterWide);
    sealed_api(env.admin(), other.name())
        .create(
            &PostParams::default(),
            &moved(ss.clone(), other.name(), "moved"),
        )
        .await?;
    env.create(&moved(ss, &ns, "renamed")).await?;

    let s = await_secret_in(env.admin(), other.name(), "moved", |_| true).await?;
    assert_eq!(pairs(&s), expect(&[("pw", "CW-ok")]));
    await_synced(&sealed_api(env.admin(), other.name()), "moved", "True").await?;
    let s = env.await_secret("renamed", |_| true).await?;
    assert_eq!(pairs(&s), expect(&[("pw", "CW-ok")]));
    env.await_synced("renamed", "True").await?;
    assert_no_plaintext_in(&controller, env.admin(), &[&ns, other.name()], &["CW-ok"]).await?;
    Ok(())
}

#[tokio::test]
async fn adding_the_scope_annotation_alone_unseals_again() -> Result<()> {
    let Running(env, controller, cert, _, api) = Running::start("rc-scopefix", &[]).await?;

    // Sealed cluster-wide, but the top-level annotation was lost: read as strict, it fails.
    let mut ss = env.seal(&cert, "app", &[("pw", "SCOPE-v")], Scope::ClusterWide);
    ss.metadata.annotations = None;
    env.create(&ss).await?;
    let failed = await_failed(&api, "app", "no key could decrypt secret (pw)").await?;

    // A metadata-only change (no new generation) is enough (upstream ignores it, COMPAT §9).
    let changed = modify(&api, "app", |s| {
        s.metadata
            .annotations
            .get_or_insert_default()
            .insert(keyseal_api::annotations::CLUSTER_WIDE.into(), "true".into());
    })
    .await?;
    assert_eq!(changed.metadata.generation, failed.metadata.generation);
    let s = env.await_secret("app", |_| true).await?;
    assert_eq!(pairs(&s), expect(&[("pw", "SCOPE-v")]));
    await_synced(&api, "app", "True").await?;
    assert_no_plaintext(&controller, &env, &["SCOPE-v"]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// An existing Secret of the same name

#[tokio::test]
async fn a_managed_secret_is_taken_over() -> Result<()> {
    let Running(env, controller, cert, _, _) = Running::start("rc-managed", &[]).await?;

    env.secrets()
        .create(
            &PostParams::default(),
            &existing_secret(
                "app",
                &[(MANAGED, "true")],
                &[("old", "label")],
                &[("old", "MANAGED-old"), ("pw", "MANAGED-before")],
            ),
        )
        .await?;
    let created = env
        .create(&env.seal(&cert, "app", &[("pw", "MANAGED-new")], Scope::Strict))
        .await?;
    let secret = env.await_secret("app", |s| !no_owner(s)).await?;
    owner_ok(&secret, &created);
    assert_eq!(
        pairs(&secret),
        expect(&[("pw", "MANAGED-new")]),
        "overwritten"
    );
    assert_eq!(
        secret.metadata.labels.clone().unwrap_or_default(),
        BTreeMap::new(),
        "labels replaced by the template's"
    );
    env.await_synced("app", "True").await?;
    assert_no_plaintext(
        &controller,
        &env,
        &["MANAGED-new", "MANAGED-old", "MANAGED-before"],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_patch_secret_is_merged_into() -> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("rc-patch", &[]).await?;

    // "patch" alone: merged, no ownerReference. "both" (patch + managed): merged and owned.
    for (name, annotations) in [
        ("patch", vec![(PATCH, "true")]),
        ("both", vec![(PATCH, "true"), (MANAGED, "true")]),
    ] {
        env.secrets()
            .create(
                &PostParams::default(),
                &existing_secret(
                    name,
                    &annotations,
                    &[("keep", "yes"), ("shared", "old")],
                    &[("keep", "PATCH-keep"), ("pw", "PATCH-old")],
                ),
            )
            .await?;
        let mut plain = plain_secret(
            &ns,
            name,
            &[("pw", "PATCH-new"), ("extra", "PATCH-extra")],
            Scope::Strict,
        );
        plain.metadata.labels = Some(strings(&[("shared", "new"), ("added", "1")]));
        plain
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("example.com/from-template".into(), "t".into());
        env.create(&keyseal_api::seal_secret(&plain, cert.public_key())?)
            .await?;
    }
    for name in ["patch", "both"] {
        let secret = env
            .await_secret(name, |s| data(s).contains_key("extra"))
            .await?;
        assert_eq!(
            pairs(&secret),
            expect(&[
                ("extra", "PATCH-extra"),
                ("keep", "PATCH-keep"),
                ("pw", "PATCH-new")
            ]),
            "{name}: existing keys kept, new ones win"
        );
        assert_eq!(
            secret.metadata.labels,
            Some(strings(&[
                ("added", "1"),
                ("keep", "yes"),
                ("shared", "new")
            ])),
            "{name}"
        );
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get(PATCH).map(String::as_str), Some("true"));
        assert_eq!(
            annotations
                .get("example.com/from-template")
                .map(String::as_str),
            Some("t")
        );
        let ss = await_synced(&api, name, "True").await?;
        if name == "patch" {
            assert!(
                no_owner(&secret),
                "patch without managed: no ownerReference"
            );
        } else {
            owner_ok(&secret, &ss);
        }
    }

    // A second update still merges, whether or not the Secret is now owned.
    for name in ["patch", "both"] {
        let plain = plain_secret(&ns, name, &[("pw", "PATCH-newer")], Scope::Strict);
        let next = keyseal_api::seal_secret(&plain, cert.public_key())?;
        modify(&api, name, |s| s.spec = next.spec.clone()).await?;
        let secret = env
            .await_secret(name, |s| {
                data(s).get("pw").map(String::as_str) == Some("PATCH-newer")
            })
            .await?;
        assert_eq!(
            pairs(&secret),
            expect(&[
                ("extra", "PATCH-extra"),
                ("keep", "PATCH-keep"),
                ("pw", "PATCH-newer")
            ]),
            "{name}: still merged on update"
        );
        await_synced(&api, name, "True").await?;
    }
    assert_no_plaintext(
        &controller,
        &env,
        &[
            "PATCH-keep",
            "PATCH-old",
            "PATCH-new",
            "PATCH-extra",
            "PATCH-newer",
        ],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_unmanaged_secret_is_left_alone() -> Result<()> {
    let Running(env, controller, cert, ns, _) = Running::start("rc-unmanaged", &[]).await?;

    let before = env
        .secrets()
        .create(
            &PostParams::default(),
            &existing_secret("app", &[], &[("mine", "yes")], &[("pw", "UNMANAGED-mine")]),
        )
        .await?;
    env.create(&env.seal(&cert, "app", &[("pw", "UNMANAGED-sealed")], Scope::Strict))
        .await?;
    let expected = r#"Resource "app" already exists and is not managed by SealedSecret"#;
    await_failed(&env.sealed_secrets(), "app", expected).await?;
    let event = await_event(env.admin(), &ns, "app", "ErrUpdateFailed").await?;
    check_event(&event, "Warning", expected);

    let after = env.secrets().get("app").await?;
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "untouched"
    );
    assert_eq!(pairs(&after), expect(&[("pw", "UNMANAGED-mine")]));
    assert!(no_owner(&after));
    let metrics = controller.scrape().await?;
    assert!(
        Metrics::parse(&metrics).sum(
            "sealed_secrets_controller_unseal_errors_total",
            &[("reason", "unmanaged"), ("namespace", &ns)]
        ) >= 1.0,
        "{metrics}"
    );
    assert_no_plaintext(&controller, &env, &["UNMANAGED-mine", "UNMANAGED-sealed"]).await?;
    Ok(())
}

#[tokio::test]
async fn skip_set_owner_references_keeps_working_after_the_first_create() -> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("rc-skipowner", &[]).await?;

    let sealed = |value: &str| {
        let mut plain = plain_secret(&ns, "app", &[("pw", value)], Scope::Strict);
        plain
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(SKIP_SET_OWNER_REFERENCES.into(), "true".into());
        keyseal_api::seal_secret(&plain, cert.public_key()).expect("seals")
    };
    env.create(&sealed("SKIPOWN-1")).await?;
    let secret = env.await_secret("app", |_| true).await?;
    assert!(no_owner(&secret), "{:?}", secret.metadata.owner_references);
    assert_eq!(pairs(&secret), expect(&[("pw", "SKIPOWN-1")]));
    await_synced(&api, "app", "True").await?;

    // Upstream fails here (the Secret is neither controlled nor managed): keyseal updates it.
    for value in ["SKIPOWN-2", "SKIPOWN-3"] {
        let next = sealed(value);
        modify(&api, "app", |s| s.spec = next.spec.clone()).await?;
        let secret = env
            .await_secret("app", |s| {
                data(s).get("pw").map(String::as_str) == Some(value)
            })
            .await?;
        assert!(no_owner(&secret));
        await_synced(&api, "app", "True").await?;
    }
    assert_no_plaintext(&controller, &env, &["SKIPOWN-1", "SKIPOWN-2", "SKIPOWN-3"]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Recreation

#[tokio::test]
async fn a_deleted_secret_is_recreated() -> Result<()> {
    let Running(env, controller, cert, _, _) = Running::start("rc-recreate", &[]).await?;

    let created = env
        .create(&env.seal(&cert, "app", &[("pw", "RECREATE-v")], Scope::Strict))
        .await?;
    let first = env.await_secret("app", |_| true).await?;
    env.await_synced("app", "True").await?;
    env.secrets()
        .delete("app", &DeleteParams::default())
        .await?;
    let again = env
        .await_secret("app", |s| s.metadata.uid != first.metadata.uid)
        .await?;
    assert_eq!(pairs(&again), expect(&[("pw", "RECREATE-v")]));
    owner_ok(&again, &created);
    assert_no_plaintext(&controller, &env, &["RECREATE-v"]).await?;
    Ok(())
}

#[tokio::test]
async fn skip_recreate_leaves_a_deleted_secret_deleted() -> Result<()> {
    let Running(env, controller, cert, _, api) =
        Running::start("rc-skiprec", &["--skip-recreate"]).await?;

    env.create(&env.seal(&cert, "app", &[("pw", "SKIPREC-1")], Scope::Strict))
        .await?;
    env.await_secret("app", |_| true).await?;
    await_synced(&api, "app", "True").await?;
    env.secrets()
        .delete("app", &DeleteParams::default())
        .await?;
    // Without the flag the Secret is back well within a second (see the test above).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        env.secrets().get_opt("app").await?.is_none(),
        "not recreated"
    );

    // The flag only stops reacting to deletions: a change of the SealedSecret writes the Secret
    // again, as upstream does.
    let next = env.seal(&cert, "app", &[("pw", "SKIPREC-2")], Scope::Strict);
    modify(&api, "app", |s| s.spec = next.spec.clone()).await?;
    let secret = env.await_secret("app", |_| true).await?;
    assert_eq!(pairs(&secret), expect(&[("pw", "SKIPREC-2")]));
    assert_no_plaintext(&controller, &env, &["SKIPREC-1", "SKIPREC-2"]).await?;
    Ok(())
}

/// Upstream's integration suite at upstream's 5 QPS client limit ("Secret Recreation With owned
/// secret should recreate the secret"): the owned Secret was deleted while the reconcile that
/// created it was still writing the status. The deletion was handled first, that reconcile then
/// recorded the SealedSecret as synced, and the reconcile the deletion queued skipped it: the
/// Secret stayed deleted until the SealedSecret changed. An admission webhook holds the status
/// write, so the deletion always lands in that window.
#[tokio::test]
async fn regression_a_secret_deleted_while_its_status_is_written_is_recreated() -> Result<()> {
    use keyseal_testenv::webhook::HoldingWebhook;
    use std::sync::atomic::{AtomicBool, Ordering};

    let Running(env, controller, cert, ns, api) = Running::start("rc-race", &[]).await?;

    // Holds the first status write for "app" (the controller's, after it wrote the Secret).
    let once = AtomicBool::new(false);
    let webhook = HoldingWebhook::start(move |a| {
        a.name == "app"
            && a.resource == "sealedsecrets/status"
            && !once.swap(true, Ordering::SeqCst)
    })?;
    env.create(&env.seal(&cert, "probe", &[("k", "v")], Scope::Strict))
        .await?;
    let rules = vec![
        k8s_openapi::api::admissionregistration::v1::RuleWithOperations {
            api_groups: Some(vec!["bitnami.com".into()]),
            api_versions: Some(vec!["v1alpha1".into()]),
            operations: Some(vec!["UPDATE".into()]),
            resources: Some(vec!["sealedsecrets/status".into()]),
            scope: Some("Namespaced".into()),
        },
    ];
    let mut n = 0;
    webhook
        .register(&env.cluster, &env.ns, rules, || {
            n += 1;
            let patch = serde_json::json!({ "status": { "observedGeneration": 100 + n } });
            let api = api.clone();
            async move {
                api.patch_status(
                    "probe",
                    &Default::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
                Ok(())
            }
        })
        .await?;

    env.create(&env.seal(&cert, "app", &[("pw", "RACE-v")], Scope::Strict))
        .await?;
    let held = webhook.next_held(WAIT).await?;
    let first = env
        .secrets()
        .get_opt("app")
        .await?
        .context("the Secret is written before the status")?;
    env.secrets()
        .delete("app", &DeleteParams::default())
        .await?;
    // The controller has handled the deletion once it logs it (after forgetting the object).
    await_condition(WAIT, "the controller handling the deletion", || async {
        let seen = controller.logs().lines().any(|l| {
            l.contains(r#""message":"Secret deleted""#)
                && l.contains(&format!(r#""namespace":"{ns}""#))
                && l.contains(r#""name":"app""#)
        });
        Ok(seen.then_some(()))
    })
    .await?;
    held.release();

    let again = env
        .await_secret("app", |s| s.metadata.uid != first.metadata.uid)
        .await
        .map_err(|e| e.context(controller.logs()))?;
    assert_eq!(pairs(&again), expect(&[("pw", "RACE-v")]));
    await_synced(&api, "app", "True").await?;
    assert_no_plaintext(&controller, &env, &["RACE-v"]).await?;
    Ok(())
}

/// Upstream's integration suite ("Secret Recreation With unowned secret without managed
/// annotation / with patch annotation should not recreate the secret"): a Secret that was not the
/// SealedSecret's is not unsealed again when it is deleted (keyseal used to react to the
/// deletion of any Secret of the SealedSecret's name). Its own Secret still is.
#[tokio::test]
async fn regression_a_deleted_unmanaged_secret_is_not_replaced() -> Result<()> {
    let Running(env, controller, cert, _, api) = Running::start("rc-unowned-del", &[]).await?;

    for (name, annotations) in [("plain", vec![]), ("patched", vec![(PATCH, "true")])] {
        env.secrets()
            .create(
                &PostParams::default(),
                &existing_secret(name, &annotations, &[], &[("pw", "UNOWNED-theirs")]),
            )
            .await?;
    }
    // "plain" fails as unmanaged; "patched" is merged into without being taken over (no owner,
    // as upstream): neither Secret is the SealedSecret's.
    for name in ["plain", "patched"] {
        env.create(&env.seal(&cert, name, &[("pw", "UNOWNED-sealed")], Scope::Strict))
            .await?;
    }
    let plain = await_synced(&api, "plain", "False").await?;
    let patched = await_synced(&api, "patched", "True").await?;
    assert!(no_owner(&env.secrets().get("patched").await?));
    // An owned Secret, deleted after the two: once it is back, the deletions before it in the
    // same watch were handled too.
    env.create(&env.seal(&cert, "marker", &[("pw", "UNOWNED-marker")], Scope::Strict))
        .await?;
    let marker = env.await_secret("marker", |_| true).await?;
    for name in ["plain", "patched", "marker"] {
        env.secrets().delete(name, &DeleteParams::default()).await?;
    }
    env.await_secret("marker", |s| s.metadata.uid != marker.metadata.uid)
        .await?;
    await_condition(WAIT, "the controller handling the deletions", || async {
        let logs = controller.logs();
        let handled = ["plain", "patched", "marker"].iter().all(|name| {
            logs.lines().any(|l| {
                l.contains(r#""message":"Secret deleted""#)
                    && l.contains(&format!(r#""name":"{name}""#))
            })
        });
        Ok(handled.then_some(()))
    })
    .await?;
    for name in ["plain", "patched"] {
        assert!(
            env.secrets().get_opt(name).await?.is_none(),
            "{name} was not the SealedSecret's: not recreated"
        );
    }
    for before in [plain, patched] {
        let after = api.get(before.metadata.name.as_deref().unwrap()).await?;
        assert_eq!(
            after.metadata.resource_version, before.metadata.resource_version,
            "no new attempt after the deletion"
        );
    }
    assert_no_plaintext(
        &controller,
        &env,
        &["UNOWNED-theirs", "UNOWNED-sealed", "UNOWNED-marker"],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Immutable targets

#[tokio::test]
async fn an_immutable_secret_that_would_change_fails_once() -> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("rc-immut", &[]).await?;

    let sealed = |value: &str| {
        let mut plain = plain_secret(&ns, "app", &[("pw", value)], Scope::Strict);
        plain.immutable = Some(true);
        keyseal_api::seal_secret(&plain, cert.public_key()).expect("seals")
    };
    env.create(&sealed("IMMUT-1")).await?;
    let secret = env.await_secret("app", |_| true).await?;
    assert_eq!(secret.immutable, Some(true), "immutable from the template");
    await_synced(&api, "app", "True").await?;

    let next = sealed("IMMUT-2");
    modify(&api, "app", |s| s.spec = next.spec.clone()).await?;
    await_failed(&api, "app", "the target Secret is immutable").await?;
    let event = await_event(env.admin(), &ns, "app", "ErrUpdateFailed").await?;
    check_event(&event, "Warning", "the target Secret is immutable");
    assert_eq!(
        pairs(&env.secrets().get("app").await?),
        expect(&[("pw", "IMMUT-1")])
    );

    // Not retried: neither the error counter nor the events keep growing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let errors = |m: Metrics| {
        m.sum(
            "sealed_secrets_controller_unseal_errors_total",
            &[("reason", "update"), ("namespace", &ns)],
        )
    };
    let before = errors(controller.metrics().await?);
    let events_before = occurrences(
        &events_about(env.admin(), &ns, "app").await?,
        "ErrUpdateFailed",
    );
    assert!(before >= 1.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = errors(controller.metrics().await?);
    let events_after = occurrences(
        &events_about(env.admin(), &ns, "app").await?,
        "ErrUpdateFailed",
    );
    assert_eq!(before, after, "the update error is not retried");
    assert_eq!(events_before, events_after, "no new events");
    assert_no_plaintext(&controller, &env, &["IMMUT-1", "IMMUT-2"]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Templates and the legacy format

#[tokio::test]
async fn template_data_is_rendered_with_the_decrypted_items() -> Result<()> {
    let Running(env, controller, cert, _, _) = Running::start("rc-tmpl", &[]).await?;

    let mut ss = env.seal(
        &cert,
        "app",
        &[("user", "alice-TMPL"), ("pass", "pw-TMPL-9")],
        Scope::Strict,
    );
    ss.spec.template.data = Some(BTreeMap::from([
        (
            "url".to_owned(),
            Some(r#"https://{{ .user }}:{{ index . "pass" }}@db:5432"#.to_owned()),
        ),
        ("shout".to_owned(), Some("{{ .user | upper }}".to_owned())),
        // A template never overrides a sealed item.
        ("user".to_owned(), Some("{{ .pass }}".to_owned())),
        ("static".to_owned(), Some("plain text".to_owned())),
    ]));
    env.create(&ss).await?;
    let secret = env.await_secret("app", |_| true).await?;
    assert_eq!(
        pairs(&secret),
        expect(&[
            ("pass", "pw-TMPL-9"),
            ("shout", "ALICE-TMPL"),
            ("static", "plain text"),
            ("url", "https://alice-TMPL:pw-TMPL-9@db:5432"),
            ("user", "alice-TMPL"),
        ])
    );
    env.await_synced("app", "True").await?;

    // A template that reads the environment is refused, not rendered.
    let mut bad = env.seal(&cert, "env", &[("a", "TMPL-a")], Scope::Strict);
    bad.spec.template.data = Some(BTreeMap::from([(
        "home".to_owned(),
        Some(r#"{{ env "HOME" }}"#.to_owned()),
    )]));
    env.create(&bad).await?;
    await_failed(&env.sealed_secrets(), "env", "template data (home)").await?;
    assert!(env.secrets().get_opt("env").await?.is_none());

    assert_no_plaintext(
        &controller,
        &env,
        &["alice-TMPL", "pw-TMPL-9", "ALICE-TMPL", "TMPL-a"],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_null_template_entry_drops_an_item() -> Result<()> {
    let Running(env, controller, cert, _, _) = Running::start("rc-tmplnull", &[]).await?;

    let mut ss = env.seal(
        &cert,
        "app",
        &[("keep", "NULL-keep"), ("drop", "NULL-drop")],
        Scope::Strict,
    );
    ss.spec.template.data = Some(BTreeMap::from([
        ("drop".to_owned(), None),
        // The dropped item is still usable by the other templates.
        (
            "both".to_owned(),
            Some("{{ .keep }}+{{ .drop }}".to_owned()),
        ),
    ]));
    env.create(&ss).await?;
    let secret = env.await_secret("app", |_| true).await?;
    assert_eq!(
        pairs(&secret),
        expect(&[("both", "NULL-keep+NULL-drop"), ("keep", "NULL-keep")])
    );
    assert_no_plaintext(&controller, &env, &["NULL-keep", "NULL-drop"]).await?;
    Ok(())
}

/// A legacy v1 SealedSecret: the whole Secret as JSON, sealed strict for `ns/name`.
fn legacy(cert: &Certificate, ns: &str, name: &str, value: &str) -> Result<SealedSecret> {
    let json = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "labels": {"legacy": "yes"}},
        "data": {"pw": keyseal_crypto::encode_base64(value.as_bytes())},
    });
    let sealed = keyseal_crypto::seal(
        cert.public_key(),
        &Scope::Strict.label(ns, name),
        &serde_json::to_vec(&json)?,
    )?;
    let mut ss = SealedSecret::new(name, Default::default());
    ss.metadata.namespace = Some(ns.into());
    ss.spec.data = Some(ByteString(sealed));
    Ok(ss)
}

#[tokio::test]
async fn legacy_v1_data_is_accepted_by_default() -> Result<()> {
    let Running(env, controller, cert, ns, _) = Running::start("rc-v1data", &[]).await?;

    let created = env.create(&legacy(&cert, &ns, "old", "V1-legacy")?).await?;
    let secret = env.await_secret("old", |_| true).await?;
    assert_eq!(pairs(&secret), expect(&[("pw", "V1-legacy")]));
    assert_eq!(secret.metadata.labels, Some(strings(&[("legacy", "yes")])));
    owner_ok(&secret, &created);
    env.await_synced("old", "True").await?;

    // Both formats at once: an error.
    let mut both = legacy(&cert, &ns, "both", "V1-both")?;
    both.spec.encrypted_data = env
        .seal(&cert, "both", &[("pw", "V1-both-new")], Scope::Strict)
        .spec
        .encrypted_data;
    env.create(&both).await?;
    await_failed(
        &env.sealed_secrets(),
        "both",
        "'encryptedData' and the deprecated field 'data'",
    )
    .await?;
    assert!(env.secrets().get_opt("both").await?.is_none());
    assert_no_plaintext(&controller, &env, &["V1-legacy", "V1-both", "V1-both-new"]).await?;
    Ok(())
}

#[tokio::test]
async fn legacy_v1_data_is_refused_when_disabled() -> Result<()> {
    let flags = ["--accept-deprecated-v1-data=false"];
    let Running(env, controller, cert, ns, _) = Running::start("rc-v1off", &flags).await?;

    env.create(&legacy(&cert, &ns, "old", "V1OFF-legacy")?)
        .await?;
    await_failed(&env.sealed_secrets(), "old", "deprecated 'data' field").await?;
    assert!(env.secrets().get_opt("old").await?.is_none());
    assert_no_plaintext(&controller, &env, &["V1OFF-legacy"]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Status and events

#[tokio::test]
async fn status_tracks_generation_and_transitions() -> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("rc-status", &[]).await?;
    let transition = |ss: &SealedSecret| synced(ss).and_then(|c| c.last_transition_time.clone());

    // Generation 1: sealed for another name → False.
    let wrong = env.seal(&cert, "other", &[("a", "STATUS-a")], Scope::Strict);
    env.create(&moved(wrong, &ns, "app")).await?;
    let g1 = await_synced(&api, "app", "False").await?;
    assert_eq!(g1.status.as_ref().unwrap().observed_generation, Some(1));
    assert!(message(&g1).contains("no key could decrypt secret (a)"));
    let t1 = transition(&g1).context("lastTransitionTime")?;
    assert!(synced(&g1).unwrap().last_update_time.is_some());
    let event = await_event(env.admin(), &ns, "app", "ErrUnsealFailed").await?;
    check_event(
        &event,
        "Warning",
        "Failed to unseal: no key could decrypt secret (a)",
    );

    // Generation 2: still failing (other items) → False→False keeps lastTransitionTime.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let wrong = env.seal(
        &cert,
        "other",
        &[("b", "STATUS-b"), ("c", "STATUS-c")],
        Scope::Strict,
    );
    modify(&api, "app", |s| s.spec = wrong.spec.clone()).await?;
    let g2 = await_condition(WAIT, "generation 2 observed", || {
        let api = api.clone();
        async move {
            let ss = api.get("app").await?;
            Ok((ss.status.as_ref().and_then(|s| s.observed_generation) == Some(2)).then_some(ss))
        }
    })
    .await?;
    assert_eq!(synced(&g2).unwrap().status, "False");
    assert!(
        message(&g2).contains("no key could decrypt secret (b, c)"),
        "items aggregate: {:?}",
        message(&g2)
    );
    assert_eq!(transition(&g2), Some(t1.clone()), "False→False keeps it");

    // Generation 3: right → False→True moves lastTransitionTime.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let right = env.seal(&cert, "app", &[("a", "STATUS-ok")], Scope::Strict);
    modify(&api, "app", |s| s.spec = right.spec.clone()).await?;
    let g3 = await_synced(&api, "app", "True").await?;
    assert_eq!(g3.metadata.generation, Some(3));
    assert_eq!(g3.status.as_ref().unwrap().observed_generation, Some(3));
    let t3 = transition(&g3).context("lastTransitionTime")?;
    assert!(t3.0 > t1.0, "False→True changes it: {t1:?} → {t3:?}");
    let event = await_event(env.admin(), &ns, "app", "Unsealed").await?;
    check_event(&event, "Normal", "SealedSecret unsealed successfully");
    assert_eq!(
        event.note.as_deref(),
        Some("SealedSecret unsealed successfully")
    );

    // Generation 4: True→True keeps it, observedGeneration follows.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let right = env.seal(&cert, "app", &[("a", "STATUS-ok2")], Scope::Strict);
    modify(&api, "app", |s| s.spec = right.spec.clone()).await?;
    env.await_secret("app", |s| {
        data(s).get("a").map(String::as_str) == Some("STATUS-ok2")
    })
    .await?;
    let g4 = await_synced(&api, "app", "True").await?;
    assert_eq!(g4.status.as_ref().unwrap().observed_generation, Some(4));
    assert_eq!(transition(&g4), Some(t3), "True→True keeps it");
    assert_no_plaintext(
        &controller,
        &env,
        &[
            "STATUS-a",
            "STATUS-b",
            "STATUS-c",
            "STATUS-ok",
            "STATUS-ok2",
        ],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What the controller watches

#[tokio::test]
async fn label_selector_filters_sealed_secrets() -> Result<()> {
    let flags = ["--label-selector", "keyseal.test/shard=a"];
    let Running(env, controller, cert, _, api) = Running::start("rc-labelsel", &flags).await?;

    for (name, shard) in [
        ("none", None),
        ("shard-b", Some("b")),
        ("shard-a", Some("a")),
    ] {
        let mut ss = env.seal(&cert, name, &[("pw", "LABELSEL-v")], Scope::Strict);
        if let Some(shard) = shard {
            ss.metadata.labels = Some(strings(&[("keyseal.test/shard", shard)]));
        }
        env.create(&ss).await?;
    }
    env.await_secret("shard-a", |_| true).await?;
    await_synced(&api, "shard-a", "True").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["none", "shard-b"] {
        assert!(
            api.get(name).await?.status.is_none(),
            "{name} is not handled"
        );
        assert!(env.secrets().get_opt(name).await?.is_none(), "{name}");
    }
    assert_no_plaintext(&controller, &env, &["LABELSEL-v"]).await?;
    Ok(())
}

#[tokio::test]
async fn other_namespaces_are_ignored_without_all_namespaces() -> Result<()> {
    let env = Env::new("rc-nsonly").await?;
    let other = env.cluster.namespace("rc-nsonly2").await?;
    // The harness always passes --all-namespaces=false; no --additional-namespaces here.
    let controller = env.start_controller(&[]).await?;
    let cert = controller.cert().await?;
    let ns = env.name().to_owned();

    let ss = env.seal(&cert, "app", &[("pw", "NSONLY-v")], Scope::ClusterWide);
    let other_api = sealed_api(env.admin(), other.name());
    other_api
        .create(
            &PostParams::default(),
            &moved(ss.clone(), other.name(), "app"),
        )
        .await?;
    env.create(&ss).await?;
    env.await_secret("app", |_| true).await?;
    env.await_synced("app", "True").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(other_api.get("app").await?.status.is_none());
    let other_secrets: Api<Secret> = Api::namespaced(env.admin(), other.name());
    assert!(other_secrets.get_opt("app").await?.is_none());
    assert_no_plaintext_in(
        &controller,
        env.admin(),
        &[&ns, other.name()],
        &["NSONLY-v"],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Malformed input

#[tokio::test]
async fn a_malformed_sealed_secret_fails_without_harm() -> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("rc-malformed", &[]).await?;

    env.create(&env.seal(&cert, "app", &[("pw", "MALFORMED-ok")], Scope::Strict))
        .await?;
    env.await_secret("app", |_| true).await?;
    await_synced(&api, "app", "True").await?;

    // An update that breaks it: the condition and an event say so; the Secret stays as it was.
    modify(&api, "app", |s| {
        s.spec.encrypted_data = strings(&[("pw", "!!! not base64 !!!")]);
    })
    .await?;
    await_failed(&api, "app", "illegal base64 data in encryptedData (pw)").await?;
    let event = await_event(env.admin(), &ns, "app", "ErrUnsealFailed").await?;
    check_event(
        &event,
        "Warning",
        "illegal base64 data in encryptedData (pw)",
    );
    let secret = env.secrets().get("app").await?;
    assert_eq!(pairs(&secret), expect(&[("pw", "MALFORMED-ok")]));

    // A value that is not even a string: the API server refuses it, as under upstream's CRD
    // (the controller's decoding of such values, stored under an older CRD, is unit-tested).
    let dynamic: Api<DynamicObject> =
        Api::namespaced_with(env.admin(), &ns, &ApiResource::erase::<SealedSecret>(&()));
    let raw: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {"name": "odd", "namespace": ns},
        "spec": {"encryptedData": {"n": 42, "m": {"x": 1}}},
    }))?;
    match dynamic.create(&PostParams::default(), &raw).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("spec.encryptedData.n"),
                "{}",
                status.message
            );
        }
        other => panic!("a non-string encryptedData value is refused: {other:?}"),
    }

    // The controller is alive and still working.
    let (code, _) = controller.get("/healthz").await?;
    assert_eq!(code, 200);
    env.create(&env.seal(&cert, "after", &[("pw", "MALFORMED-after")], Scope::Strict))
        .await?;
    env.await_secret("after", |_| true).await?;
    assert!(env.secrets().get_opt("app").await?.is_some());
    assert_no_plaintext(&controller, &env, &["MALFORMED-ok", "MALFORMED-after"]).await?;
    Ok(())
}

#[tokio::test]
async fn template_immutable_applies_on_update_with_unchanged_data() -> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("rc-immutflip", &[]).await?;

    env.create(&env.seal(&cert, "app", &[("pw", "FLIP-v")], Scope::Strict))
        .await?;
    let secret = env.await_secret("app", |_| true).await?;
    assert_eq!(secret.immutable, None);
    await_synced(&api, "app", "True").await?;

    // Same value, now immutable: only the template's `immutable` changes.
    let mut plain = plain_secret(&ns, "app", &[("pw", "FLIP-v")], Scope::Strict);
    plain.immutable = Some(true);
    let next = keyseal_api::seal_secret(&plain, cert.public_key())?;
    modify(&api, "app", |s| s.spec = next.spec.clone()).await?;
    await_synced(&api, "app", "True").await?;
    let secret = env
        .await_secret("app", |s| s.immutable == Some(true))
        .await?;
    assert_eq!(pairs(&secret), expect(&[("pw", "FLIP-v")]));
    assert_no_plaintext(&controller, &env, &["FLIP-v"]).await?;
    Ok(())
}

#[tokio::test]
async fn a_secret_the_api_server_rejects_fails_without_leaking() -> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("rc-rejected", &[]).await?;

    // Not JSON, so kubernetes.io/dockerconfigjson validation refuses the Secret.
    let mut plain = plain_secret(
        &ns,
        "app",
        &[(".dockerconfigjson", "REJECTED-not-json")],
        Scope::Strict,
    );
    plain.type_ = Some("kubernetes.io/dockerconfigjson".into());
    env.create(&keyseal_api::seal_secret(&plain, cert.public_key())?)
        .await?;
    await_failed(&api, "app", ".dockerconfigjson").await?;
    let event = await_event(env.admin(), &ns, "app", "ErrUpdateFailed").await?;
    check_event(&event, "Warning", ".dockerconfigjson");
    assert!(env.secrets().get_opt("app").await?.is_none());
    // Permanent: not retried.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let errors = |m: Metrics| {
        m.sum(
            "sealed_secrets_controller_unseal_errors_total",
            &[("reason", "update"), ("namespace", &ns)],
        )
    };
    let before = errors(controller.metrics().await?);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(before, errors(controller.metrics().await?));
    assert_no_plaintext(&controller, &env, &["REJECTED-not-json"]).await?;
    Ok(())
}

#[tokio::test]
async fn status_is_written_when_the_sealed_secret_changes_during_the_unseal() -> Result<()> {
    let Running(env, controller, cert, _, api) = Running::start("rc-race", &[]).await?;

    // Metadata-only writes (no new generation) right after the create, so that the controller's
    // status write races them and may hit a conflict; the status must still be written.
    for i in 0..5 {
        let name = format!("app{i}");
        env.create(&env.seal(&cert, &name, &[("pw", "RACE-v")], Scope::Strict))
            .await?;
        for j in 0..15 {
            let patch = serde_json::json!({"metadata": {"labels": {"touch": j.to_string()}}});
            api.patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await?;
        }
    }
    for i in 0..5 {
        let name = format!("app{i}");
        env.await_secret(&name, |_| true).await?;
        await_synced(&api, &name, "True").await?;
    }
    assert_no_plaintext(&controller, &env, &["RACE-v"]).await?;
    Ok(())
}

#[tokio::test]
async fn an_immutable_secret_takes_metadata_changes_and_survives_a_restart() -> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("rc-immutmeta", &[]).await?;

    // No type in the template: the API server stores `Opaque`.
    let sealed = |labels: &[(&str, &str)]| {
        let mut plain = plain_secret(&ns, "app", &[("pw", "IMMETA-v")], Scope::Strict);
        plain.immutable = Some(true);
        plain.metadata.labels = Some(strings(labels));
        keyseal_api::seal_secret(&plain, cert.public_key()).expect("seals")
    };
    env.create(&sealed(&[("v", "1")])).await?;
    env.await_secret("app", |s| s.immutable == Some(true))
        .await?;
    await_synced(&api, "app", "True").await?;

    // Same data, new label: allowed on an immutable Secret.
    let next = sealed(&[("v", "2")]);
    modify(&api, "app", |s| s.spec = next.spec.clone()).await?;
    let ss = await_synced(&api, "app", "True").await?;
    assert_eq!(ss.metadata.generation, Some(2));
    let secret = env
        .await_secret("app", |s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("v"))
                .map(String::as_str)
                == Some("2")
        })
        .await?;
    assert_eq!(pairs(&secret), expect(&[("pw", "IMMETA-v")]));

    // A restart of a controller that finds no record of the Secret in the status (as after
    // upstream's controller) unseals it once more: nothing changed, so it stays Synced=True.
    assert_no_plaintext(&controller, &env, &["IMMETA-v"]).await?;
    controller.stop().await?;
    let mut unrecorded = api.get("app").await?;
    let conditions = &mut unrecorded.status.as_mut().context("a status")?.conditions;
    let before = conditions.len();
    conditions.retain(|c| c.type_ != "keyseal.dev/SecretWritten");
    assert_eq!(conditions.len(), before - 1, "{conditions:?}");
    api.replace_status("app", &PostParams::default(), &unrecorded)
        .await?;
    let controller = env.start_controller(&[]).await?;
    await_condition(WAIT, "the restarted controller unsealed again", || async {
        let metrics = controller.metrics().await?;
        let unsealed = metrics.sum("sealed_secrets_controller_unseal_requests_total", &[]);
        Ok((unsealed >= 1.0).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ss = api.get("app").await?;
    assert_eq!(
        synced(&ss).map(|c| c.status.as_str()),
        Some("True"),
        "{:?}",
        message(&ss)
    );
    assert!(
        events_about(env.admin(), &ns, "app")
            .await?
            .iter()
            .all(|e| e.type_.as_deref() != Some("Warning")),
        "no warning events"
    );
    assert_no_plaintext(&controller, &env, &["IMMETA-v"]).await?;
    Ok(())
}
