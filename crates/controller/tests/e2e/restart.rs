//! A restart costs nothing for SealedSecrets that did not change (issue 14): no decryption, no
//! write, no event; and it still restores what changed while the controller was away: a Secret
//! edited, relabelled or deleted behind its back, and a SealedSecret sealed again.

use std::collections::BTreeMap;

use crate::common::*;
use anyhow::{Result, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::Scope;
use keyseal_testenv::await_condition;
use keyseal_testenv::metrics::Metrics;
use kube::api::{DeleteParams, PostParams};

/// What the cluster shows of one object: the resourceVersions of its Secret, of the
/// SealedSecret, and of each `Unsealed` event about it.
async fn footprint(env: &Env, name: &str) -> Result<(String, String, BTreeMap<String, String>)> {
    let secret = env.secrets().get(name).await?;
    let sealed = env.sealed_secrets().get(name).await?;
    let events = env
        .events_about(name)
        .await?
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Unsealed"))
        .map(|e| {
            (
                e.metadata.name.unwrap_or_default(),
                e.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect();
    Ok((
        secret.metadata.resource_version.unwrap_or_default(),
        sealed.metadata.resource_version.unwrap_or_default(),
        events,
    ))
}

/// The controller's counters of unseal attempts and of SealedSecrets its records spared.
async fn unseals(controller: &ControllerProcess) -> Result<(f64, f64)> {
    let metrics = Metrics::parse(&controller.scrape().await?);
    Ok((
        metrics.sum("sealed_secrets_controller_unseal_requests_total", &[]),
        metrics.sum("sealed_secrets_controller_unseal_skipped_total", &[]),
    ))
}

#[tokio::test]
async fn a_restart_writes_nothing_for_unchanged_objects_and_restores_what_changed() -> Result<()> {
    let Running(env, controller, cert, _, api) = Running::start("restart-free", &[]).await?;
    let unchanged = ["same-0", "same-1", "same-2"];
    let changed = ["edited", "relabelled", "deleted", "resealed"];
    for name in unchanged.iter().chain(&changed) {
        env.create(&env.seal(&cert, name, &[("pw", "RESTART-v1")], Scope::Strict))
            .await?;
    }
    for name in unchanged.iter().chain(&changed) {
        env.await_secret(name, |_| true).await?;
        env.await_synced(name, "True").await?;
    }
    let mut before = BTreeMap::new();
    for name in unchanged {
        before.insert(name, footprint(&env, name).await?);
    }
    controller.stop().await?;

    // While it is away: a value edited, a label added, a Secret deleted, a SealedSecret
    // sealed again with a new value.
    let mut edited = env.secrets().get("edited").await?;
    edited
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert("pw".into(), ByteString(b"tampered".to_vec()));
    env.secrets()
        .replace("edited", &PostParams::default(), &edited)
        .await?;
    let mut relabelled = env.secrets().get("relabelled").await?;
    relabelled
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("added".into(), "by-hand".into());
    env.secrets()
        .replace("relabelled", &PostParams::default(), &relabelled)
        .await?;
    env.secrets()
        .delete("deleted", &DeleteParams::default())
        .await?;
    let mut resealed = api.get("resealed").await?;
    resealed.spec = env
        .seal(&cert, "resealed", &[("pw", "RESTART-v2")], Scope::Strict)
        .spec;
    api.replace("resealed", &PostParams::default(), &resealed)
        .await?;

    let controller = env.start_controller(&[]).await?;
    let holds = |value: &'static str| {
        move |s: &Secret| data(s) == strings(&[("pw", value)]) && s.metadata.labels.is_none()
    };
    for name in ["edited", "relabelled", "deleted"] {
        env.await_secret(name, holds("RESTART-v1")).await?;
    }
    env.await_secret("resealed", holds("RESTART-v2")).await?;
    // Every object handled: the changed ones unsealed, the unchanged ones spared.
    let counts = await_condition(WAIT, "every SealedSecret handled", || async {
        let (requests, skipped) = unseals(&controller).await?;
        Ok((requests + skipped >= 7.0).then_some((requests, skipped)))
    })
    .await?;
    assert_eq!(counts, (4.0, 3.0), "(unsealed, spared)");
    for name in unchanged {
        let after = footprint(&env, name).await?;
        ensure!(
            after == before[name],
            "{name}: the restart wrote its Secret, its status or an event: {:?} → {after:?}",
            before[name]
        );
    }
    env.await_synced("resealed", "True").await?;
    assert_no_plaintext(&controller, &env, &["RESTART-v1", "RESTART-v2", "tampered"]).await?;
    Ok(())
}
