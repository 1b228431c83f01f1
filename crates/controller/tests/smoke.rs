//! The controller, under its manifests' RBAC, turns a SealedSecret into a Secret.

mod common;

use common::*;
use keyseal_api::Scope;

#[tokio::test]
async fn unseals_a_sealed_secret_under_manifest_rbac() -> anyhow::Result<()> {
    let env = Env::new("ctrl-smoke").await?;
    let controller = env.start_controller(&[]).await?;
    let cert = controller.cert().await?;
    assert_eq!(
        env.key_secrets().await?.len(),
        1,
        "exactly one key generated"
    );
    let ss = env.seal(&cert, "app", &[("password", "hunter2")], Scope::Strict);
    let created = env.create(&ss).await?;
    let secret = env.await_secret("app", |_| true).await?;
    assert_eq!(data(&secret)["password"], "hunter2");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, created.metadata.uid.clone().unwrap());
    let synced = env.await_synced("app", "True").await?;
    assert_eq!(
        synced.status.unwrap().observed_generation,
        synced.metadata.generation
    );
    assert!(
        !controller.logs().contains("hunter2"),
        "no plaintext in logs"
    );
    let status = controller.stop().await?;
    assert!(status.success(), "graceful exit on SIGTERM");
    Ok(())
}
