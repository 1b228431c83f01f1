//! The controller, under its manifests' RBAC, turns a SealedSecret into a Secret.

use crate::common::*;
use keyseal_api::Scope;

#[tokio::test]
async fn unseals_a_sealed_secret_under_manifest_rbac() -> anyhow::Result<()> {
    let Running(env, controller, cert, _, _) = Running::start("ctrl-smoke", &[]).await?;
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

#[tokio::test]
async fn a_restart_unseals_existing_sealed_secrets_without_fetch_errors() -> anyhow::Result<()> {
    // A key and SealedSecrets exist before the controller starts, as after a restart: nothing
    // may be attempted before the key ring has loaded.
    let env = Env::new("ctrl-restart").await?;
    let key = keyseal_crypto::PrivateKey::generate(4096)?;
    let cert = keyseal_crypto::self_signed_certificate(
        &key,
        &Default::default(),
        &mut keyseal_crypto::SystemRng,
    )?;
    let mut key_secret = keyseal_api::key_secret::new_key_secret(
        env.name(),
        "sealed-secrets-key",
        &key,
        &cert,
        &Default::default(),
        &Default::default(),
    );
    key_secret.metadata.name = Some("sealed-secrets-key-pre".into());
    env.secrets()
        .create(&Default::default(), &key_secret)
        .await?;
    for i in 0..20 {
        env.create(&env.seal(&cert, &format!("pre-{i}"), &[("k", "v")], Scope::Strict))
            .await?;
    }
    let controller = env.start_controller(&[]).await?;
    for i in 0..20 {
        env.await_secret(&format!("pre-{i}"), |_| true).await?;
    }
    let metrics = controller.scrape().await?;
    let fetch_errors = metrics
        .lines()
        .filter(|l| {
            l.starts_with("sealed_secrets_controller_unseal_errors_total{")
                && l.contains("reason=\"fetch\"")
                && l.contains(env.name())
        })
        .collect::<Vec<_>>();
    assert!(fetch_errors.is_empty(), "{fetch_errors:?}");
    assert!(!controller.logs().contains("no sealing keys loaded yet"));
    assert_eq!(
        env.key_secrets().await?.len(),
        1,
        "no key generated next to the existing one"
    );
    Ok(())
}

/// Upstream's integration suite parses `controller version: v<semver>`; keyseal-controller
/// printed a bare `0.1.0`. It now uses upstream's form under its own name.
#[test]
fn regression_version_is_in_upstreams_v_form() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyseal-controller"))
        .arg("--version")
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "keyseal-controller version: v{}\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}
