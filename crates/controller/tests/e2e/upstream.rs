//! Drop-in compatibility with the real upstream Sealed Secrets controller on the same control
//! plane: each controller unseals what the other's users sealed and uses the other's keys.

use crate::common::*;
use keyseal_api::Scope;

#[tokio::test]
async fn upstream_controller_keys_and_secrets_carry_over_to_keyseal() -> anyhow::Result<()> {
    let env = Env::new("compat-up").await?;
    let upstream = env.start_upstream_controller(Network::Host, &[]).await?;
    let cert = upstream.cert().await?;
    // keyseal seals, the upstream controller unseals.
    env.create(&env.seal(
        &cert,
        "by-keyseal",
        &[("password", "from keyseal")],
        Scope::Strict,
    ))
    .await?;
    let s = env
        .await_secret("by-keyseal", |_| true)
        .await
        .map_err(|e| e.context(upstream.logs()))?;
    assert_eq!(data(&s)["password"], "from keyseal");
    assert_eq!(env.key_secrets().await?.len(), 1);
    upstream.stop().await?;

    // keyseal-controller takes over the namespace: it uses upstream's key, makes none of its own.
    let ours = env.start_controller(&[]).await?;
    assert_eq!(
        ours.cert().await?,
        cert,
        "keyseal serves the key upstream generated"
    );
    env.create(&env.seal(
        &cert,
        "after-switch",
        &[("k", "still works")],
        Scope::NamespaceWide,
    ))
    .await?;
    assert_eq!(
        data(&env.await_secret("after-switch", |_| true).await?)["k"],
        "still works"
    );
    env.secrets()
        .delete("by-keyseal", &Default::default())
        .await?;
    assert_eq!(
        data(&env.await_secret("by-keyseal", |_| true).await?)["password"],
        "from keyseal",
        "recreated with upstream's key"
    );
    assert_eq!(env.key_secrets().await?.len(), 1, "no new key on switching");
    Ok(())
}

#[tokio::test]
async fn keyseal_keys_and_kubeseal_secrets_carry_over_to_upstream() -> anyhow::Result<()> {
    let env = Env::new("compat-ks").await?;
    let ours = env.start_controller(&[]).await?;
    let cert = ours.cert().await?;
    // Upstream kubeseal seals with keyseal-controller's certificate; keyseal-controller unseals.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("cert.pem"), cert.to_pem())?;
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: by-kubeseal, namespace: {}}}\nstringData: {{token: from-kubeseal}}\n",
        env.name()
    );
    std::fs::write(dir.path().join("s.yaml"), secret)?;
    let out = std::process::Command::new(keyseal_testenv::fixture("kubeseal")?)
        .args(["--cert", "cert.pem", "-f", "s.yaml", "-w", "sealed.json"])
        .current_dir(dir.path())
        .env("KUBECONFIG", "/nonexistent")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sealed: keyseal_api::SealedSecret =
        serde_json::from_slice(&std::fs::read(dir.path().join("sealed.json"))?)?;
    env.create(&sealed).await?;
    assert_eq!(
        data(&env.await_secret("by-kubeseal", |_| true).await?)["token"],
        "from-kubeseal"
    );
    assert!(ours.stop().await?.success());

    // The upstream controller loads keyseal's key Secret and makes none of its own.
    let upstream = env.start_upstream_controller(Network::Host, &[]).await?;
    assert_eq!(
        upstream.cert().await?,
        cert,
        "upstream serves the key keyseal generated"
    );
    env.create(&env.seal(
        &cert,
        "for-upstream",
        &[("k", "sealed for keyseal's key")],
        Scope::ClusterWide,
    ))
    .await?;
    let s = env
        .await_secret("for-upstream", |_| true)
        .await
        .map_err(|e| e.context(upstream.logs()))?;
    assert_eq!(data(&s)["k"], "sealed for keyseal's key");
    assert_eq!(env.key_secrets().await?.len(), 1);
    Ok(())
}

/// Disaster recovery across implementations: keyseal-controller's key, backed up with `keyseal
/// keys backup` to the Key Vault test server and restored with `keyseal keys restore` into another
/// namespace (a new cluster, as far as the controller can tell), serves upstream's controller,
/// which unseals what was sealed before the loss and makes no key of its own.
#[tokio::test]
async fn keys_restored_by_keyseal_serve_the_upstream_controller() -> anyhow::Result<()> {
    use keyseal_testenv::keyvault::{KvEmulator, KvSetup};
    let lost = Env::new("dr-lost").await?;
    let ours = lost.start_controller(&[]).await?;
    let cert = ours.cert().await?;
    ours.stop().await?;
    let sealed = lost.seal(
        &cert,
        "sealed-before-the-loss",
        &[("password", "survives")],
        Scope::ClusterWide,
    );

    let kv = KvEmulator::start(KvSetup::default()).await?;
    let writer = kv.identity("writer");
    let kubeconfig = lost.cluster.kubeconfig_path().expect("a kubeconfig file");
    let keyseal = |args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new(Env::keyseal_cli()?)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("AZURE_TENANT_ID", kv.tenant())
            .env("AZURE_AUTHORITY_HOST", kv.authority())
            .env("AZURE_CLIENT_ID", &writer.client_id)
            .env(
                "AZURE_CLIENT_SECRET",
                writer.client_secret.as_deref().unwrap_or(""),
            )
            .env("KEYSEAL_KEYVAULT_URL", &kv.url)
            .env("KEYSEAL_KEYVAULT_PREFIX", "lost-cluster")
            .env("KEYSEAL_KEYVAULT_CA_FILE", kv.ca_file())
            .env(
                "KEYSEAL_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION",
                "true",
            )
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "keyseal {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let backed_up = keyseal(&["keys", "backup", "--controller-namespace", lost.name()])?;
    assert!(backed_up.contains("(verified)"), "{backed_up}");

    let rebuilt = Env::new("dr-rebuilt").await?;
    let restored = keyseal(&["keys", "restore", "--controller-namespace", rebuilt.name()])?;
    assert_eq!(restored.matches(" created").count(), 1, "{restored}");
    let upstream = rebuilt
        .start_upstream_controller(Network::Host, &[])
        .await?;
    assert_eq!(upstream.cert().await?, cert, "the restored key seals");
    let mut ss = sealed;
    ss.metadata.namespace = Some(rebuilt.name().to_owned());
    rebuilt.create(&ss).await?;
    let s = rebuilt
        .await_secret("sealed-before-the-loss", |_| true)
        .await
        .map_err(|e| e.context(upstream.logs()))?;
    assert_eq!(data(&s)["password"], "survives");
    assert_eq!(rebuilt.key_secrets().await?.len(), 1, "no key generated");
    Ok(())
}
