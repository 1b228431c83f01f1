//! High availability: replicas share one key, only the leader writes, and a standby takes over
//! when the leader dies without losing anything.

use std::time::Duration;

use crate::common::*;
use keyseal_api::Scope;

async fn is_leader(c: &ControllerProcess) -> anyhow::Result<bool> {
    let metrics = c.metrics().await?;
    Ok(metrics.get("sealed_secrets_controller_is_leader", &[]) == Some(1.0))
}

#[tokio::test]
async fn two_replicas_make_one_key_and_a_standby_takes_over_from_a_dead_leader()
-> anyhow::Result<()> {
    let env = Env::new("ha").await?;
    // Both start at once on an empty namespace.
    let (a, b) = tokio::join!(env.start_controller(&[]), env.start_controller(&[]));
    let (a, b) = (a?, b?);
    let (cert_a, cert_b) = (a.cert().await?, b.cert().await?);
    assert_eq!(cert_a, cert_b, "every replica serves the same certificate");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.key_secrets().await?.len(),
        1,
        "exactly one key for two replicas"
    );

    for i in 0..5 {
        env.create(&env.seal(
            &cert_a,
            &format!("before-{i}"),
            &[("v", &format!("value-{i}"))],
            Scope::Strict,
        ))
        .await?;
    }
    for i in 0..5 {
        let s = env.await_secret(&format!("before-{i}"), |_| true).await?;
        assert_eq!(data(&s)["v"], format!("value-{i}"));
    }
    let (leader, standby) = if is_leader(&a).await? { (a, b) } else { (b, a) };
    assert!(
        is_leader(&leader).await? && !is_leader(&standby).await?,
        "exactly one leader"
    );

    // The leader crashes (SIGKILL: the Lease is not released) with work pending.
    leader.kill().await?;
    for i in 0..5 {
        env.create(&env.seal(
            &cert_a,
            &format!("after-{i}"),
            &[("v", &format!("later-{i}"))],
            Scope::Strict,
        ))
        .await?;
    }
    env.secrets()
        .delete("before-0", &Default::default())
        .await?;

    for i in 0..5 {
        let s = env.await_secret(&format!("after-{i}"), |_| true).await?;
        assert_eq!(
            data(&s)["v"],
            format!("later-{i}"),
            "created while leaderless, unsealed by the new leader"
        );
    }
    let recreated = env.await_secret("before-0", |_| true).await?;
    assert_eq!(
        data(&recreated)["v"],
        "value-0",
        "a Secret deleted during the failover is recreated"
    );
    assert!(is_leader(&standby).await?, "the standby leads now");
    assert_eq!(
        env.key_secrets().await?.len(),
        1,
        "no duplicate key after the failover"
    );
    assert_eq!(standby.cert().await?, cert_a);
    for i in 1..5 {
        assert_eq!(
            data(&env.secrets().get(&format!("before-{i}")).await?)["v"],
            format!("value-{i}"),
            "nothing lost"
        );
    }
    Ok(())
}

#[tokio::test]
async fn graceful_shutdown_hands_over_leadership() -> anyhow::Result<()> {
    let env = Env::new("ha-term").await?;
    let a = env.start_controller(&[]).await?;
    let cert = a.cert().await?;
    let b = env.start_controller(&[]).await?;
    keyseal_testenv::await_condition(Duration::from_secs(20), "first replica leads", || async {
        Ok(is_leader(&a).await?.then_some(()))
    })
    .await?;
    assert!(a.stop().await?.success(), "SIGTERM exits cleanly");
    keyseal_testenv::await_condition(Duration::from_secs(20), "second replica leads", || async {
        Ok(is_leader(&b).await?.then_some(()))
    })
    .await?;
    env.create(&env.seal(&cert, "handed-over", &[("k", "v")], Scope::Strict))
        .await?;
    assert_eq!(
        data(&env.await_secret("handed-over", |_| true).await?)["k"],
        "v"
    );
    assert_eq!(env.key_secrets().await?.len(), 1);
    Ok(())
}
