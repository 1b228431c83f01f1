//! kubeseal's online modes (--fetch-cert, --validate, --re-encrypt) go through the API server's
//! service proxy. Upstream kubeseal works against keyseal-controller, and the keyseal CLI works
//! against the upstream controller.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use keyseal_api::{Scope, SealedSecret};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(program: &Path, kubeconfig: &Path, dir: &Path, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    keyseal_testenv::write_stdin(&mut child, stdin);
    let out = child.wait_with_output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Exercises one CLI's online modes against whatever controller serves `ns`'s Service.
async fn online_modes(
    env: &Env,
    cli: &Path,
    served: &keyseal_crypto::Certificate,
) -> anyhow::Result<()> {
    let kubeconfig = env
        .cluster
        .kubeconfig_path()
        .expect("admin kubeconfig file")
        .to_path_buf();
    let dir = tempfile::tempdir()?;
    let ns = env.name();
    let fetched = run(
        cli,
        &kubeconfig,
        dir.path(),
        &["--fetch-cert", "--controller-namespace", ns],
        b"",
    );
    assert!(fetched.ok, "--fetch-cert: {}", fetched.stderr);
    assert_eq!(
        keyseal_crypto::Certificate::from_pem(fetched.stdout.as_bytes())?,
        *served
    );

    let good = serde_json::to_vec(&env.seal(served, "app", &[("k", "v")], Scope::Strict))?;
    let validated = run(
        cli,
        &kubeconfig,
        dir.path(),
        &["--validate", "--controller-namespace", ns],
        &good,
    );
    assert!(
        validated.ok,
        "--validate of a good SealedSecret: {}",
        validated.stderr
    );
    let mut wrong: SealedSecret = serde_json::from_slice(&good)?;
    wrong.metadata.name = Some("renamed".into());
    let refused = run(
        cli,
        &kubeconfig,
        dir.path(),
        &["--validate", "--controller-namespace", ns],
        &serde_json::to_vec(&wrong)?,
    );
    assert!(
        !refused.ok && refused.stderr.contains("unable to decrypt sealed secret"),
        "{}",
        refused.stderr
    );

    let rotated = run(
        cli,
        &kubeconfig,
        dir.path(),
        &["--re-encrypt", "--controller-namespace", ns],
        &good,
    );
    assert!(rotated.ok, "--re-encrypt: {}", rotated.stderr);
    let rotated = keyseal_api::input::sealed_secrets(&rotated.stdout)
        .map_err(anyhow::Error::msg)?
        .remove(0);
    assert_eq!(rotated.metadata.name.as_deref(), Some("app"));
    assert_ne!(
        rotated.spec.encrypted_data["k"],
        serde_json::from_slice::<SealedSecret>(&good)?
            .spec
            .encrypted_data["k"],
        "fresh ciphertext"
    );
    env.create(&rotated).await?;
    assert_eq!(
        data(&env.await_secret("app", |_| true).await?)["k"],
        "v",
        "the re-encrypted SealedSecret unseals"
    );
    Ok(())
}

#[tokio::test]
async fn kubeseal_online_modes_against_keyseal_controller() -> anyhow::Result<()> {
    let env = Env::new("online-ks").await?;
    let controller = env.start_controller_behind_service(&[]).await?;
    let cert = controller.cert().await?;
    online_modes(&env, &keyseal_testenv::fixture("kubeseal")?, &cert).await
}

#[tokio::test]
async fn keyseal_online_modes_against_upstream_controller() -> anyhow::Result<()> {
    let env = Env::new("online-up").await?;
    let upstream = env.start_upstream_controller(Network::Netns, &[]).await?;
    keyseal_testenv::expose_in_netns(
        &env.admin(),
        env.name(),
        "sealed-secrets-controller",
        "http",
        upstream.api_port,
    )
    .await?;
    let cert = upstream.cert().await?;
    online_modes(&env, &Env::keyseal_cli()?, &cert)
        .await
        .map_err(|e| e.context(upstream.logs()))
}
