//! Smoke tests proving the test control plane is real: CRD schema validation, garbage
//! collection, RBAC for ServiceAccount tokens, the service proxy into the network namespace, and
//! the upstream Sealed Secrets binaries from the fixture cache.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use keyseal_testenv::{
    Binding, Cluster, NETNS_IP, NetnsProcess, await_condition, expose_in_netns, fixture,
    netns_port, proxy_get,
};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, ResourceExt as _};

fn sealed_secrets(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("bitnami.com", "v1alpha1", "SealedSecret");
    Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "sealedsecrets"),
    )
}

fn sealed_secret(name: &str, spec: serde_json::Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": { "name": name },
        "spec": spec,
    }))?)
}

fn api_error_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn crd_schema_is_enforced_by_the_api_server() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("smoke-crd").await?;
    let crd = cluster.install_crd().await?;
    assert_eq!(crd.spec.group, "bitnami.com");
    let api = sealed_secrets(cluster.client(), ns.name());

    let valid = sealed_secret(
        "ok",
        serde_json::json!({ "encryptedData": { "password": "AgBy3i4OJSWK" } }),
    )?;
    let created = api
        .create(&PostParams::default(), &valid)
        .await
        .context("creating a valid SealedSecret")?;
    assert!(created.uid().is_some());

    // Violations of the schema in crds/sealedsecret.yaml (whichever generator wrote it):
    // spec is a required object, template.data maps to strings, template.immutable is a boolean,
    // encryptedData is a required map of strings.
    for (name, spec) in [
        ("spec-not-object", serde_json::json!("sealed")),
        (
            "template-data-not-string",
            serde_json::json!({ "encryptedData": {}, "template": { "data": { "k": 42 } } }),
        ),
        (
            "immutable-not-bool",
            serde_json::json!({ "encryptedData": {}, "template": { "immutable": "yes" } }),
        ),
        // Required and without a default, as in upstream's CRD (the generated CRD used to carry
        // `default: {}`, so the API server filled it in).
        (
            "no-encrypted-data",
            serde_json::json!({ "template": { "type": "Opaque" } }),
        ),
        (
            "encrypted-data-not-string",
            serde_json::json!({ "encryptedData": { "k": 42 } }),
        ),
    ] {
        let err = api
            .create(&PostParams::default(), &sealed_secret(name, spec)?)
            .await
            .expect_err("the API server must reject a SealedSecret violating the CRD schema");
        assert_eq!(api_error_code(&err), Some(422), "{name}: {err}");
    }
    let mut no_spec = sealed_secret("no-spec", serde_json::json!({}))?;
    no_spec.data = serde_json::json!({});
    let err = api
        .create(&PostParams::default(), &no_spec)
        .await
        .expect_err("spec is required");
    assert_eq!(api_error_code(&err), Some(422), "no-spec: {err}");
    ns.delete().await
}

#[tokio::test]
async fn dependents_are_garbage_collected() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("smoke-gc").await?;
    let api = Api::<ConfigMap>::namespaced(cluster.client(), ns.name());
    let pp = PostParams::default();
    let cm = |name: &str, owner: Option<&ConfigMap>| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: o.name_any(),
                    uid: o.uid().unwrap_or_default(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".into(), "v".into())])),
        ..Default::default()
    };
    let owner = api.create(&pp, &cm("owner", None)).await?;
    api.create(&pp, &cm("dependent", Some(&owner))).await?;
    api.create(&pp, &cm("bystander", None)).await?;

    api.delete("owner", &DeleteParams::background()).await?;
    await_condition(
        Duration::from_secs(90),
        "the dependent ConfigMap to be garbage-collected",
        || {
            let api = api.clone();
            async move { Ok(api.get_opt("dependent").await?.is_none().then_some(())) }
        },
    )
    .await?;
    ensure!(
        api.get_opt("bystander").await?.is_some(),
        "an object without owner must survive"
    );
    ns.delete().await
}

#[tokio::test]
async fn service_account_token_gets_exactly_its_role() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("smoke-rbac").await?;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("configmap-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(cluster.client(), ns.name())
        .create(&PostParams::default(), &role)
        .await?;
    let id = cluster
        .service_account(
            ns.name(),
            "reader",
            &[Binding::Role {
                namespace: ns.name().into(),
                name: "configmap-reader".into(),
            }],
        )
        .await?;

    // Granted: list configmaps in its namespace (RBAC may take a moment to see the new binding).
    let as_sa = Api::<ConfigMap>::namespaced(id.client.clone(), ns.name());
    await_condition(
        Duration::from_secs(20),
        "the ServiceAccount to list configmaps",
        || {
            let as_sa = as_sa.clone();
            async move { Ok(Some(as_sa.list(&Default::default()).await?)) }
        },
    )
    .await?;

    // Not granted: create configmaps, read secrets, list configmaps elsewhere.
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("nope".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = as_sa
        .create(&PostParams::default(), &cm)
        .await
        .expect_err("create is not granted");
    assert_eq!(api_error_code(&err), Some(403), "{err}");
    let err = Api::<Secret>::namespaced(id.client.clone(), ns.name())
        .list(&Default::default())
        .await
        .expect_err("secrets are not granted");
    assert_eq!(api_error_code(&err), Some(403), "{err}");
    let err = Api::<ConfigMap>::namespaced(id.client.clone(), "default")
        .list(&Default::default())
        .await
        .expect_err("other namespaces are not granted");
    assert_eq!(api_error_code(&err), Some(403), "{err}");

    // The kubeconfig written for other processes carries the same identity.
    let kc = std::fs::read_to_string(&id.kubeconfig)?;
    ensure!(kc.contains(&id.token), "kubeconfig must carry the token");
    ns.delete().await
}

#[tokio::test]
async fn service_proxy_reaches_a_server_in_the_network_namespace() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("smoke-proxy").await?;
    let port = netns_port()?;
    let token = format!("hello-from-netns-{}", keyseal_testenv::random_suffix());
    let mut server = NetnsProcess::spawn(
        env!("CARGO_BIN_EXE_keyseal-netns-http"),
        [format!("{NETNS_IP}:{port}"), token.clone()],
        &[],
    )?;
    server.wait_listening(port, Duration::from_secs(10)).await?;
    expose_in_netns(&cluster.client(), ns.name(), "web", "http", port).await?;

    // Without kube's retries of 503: a dead target must fail at once, not after minutes.
    let client = cluster.client_without_retry().await?;
    let body = await_condition(
        Duration::from_secs(10),
        "the service proxy to answer",
        || {
            let client = client.clone();
            let ns = ns.name().to_owned();
            async move {
                Ok(Some(
                    proxy_get(&client, &ns, "http:web:http", "/v1/cert.pem").await?,
                ))
            }
        },
    )
    .await?;
    assert_eq!(body.trim(), format!("{token} /v1/cert.pem"));

    // Nothing behind the port: the proxy must fail, not answer from somewhere else.
    server.kill().await?;
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        proxy_get(&client, ns.name(), "http:web:http", "/"),
    )
    .await
    .context("the proxy must fail promptly with no server behind it")?;
    ensure!(
        err.is_err(),
        "proxy answered with no server behind it: {err:?}"
    );
    ns.delete().await
}

#[test]
fn upstream_sealed_secrets_binaries_run() -> Result<()> {
    let versions =
        std::process::Command::new(keyseal_testenv::repo_root().join("scripts/fixtures"))
            .arg("versions")
            .output()?;
    let versions = String::from_utf8(versions.stdout)?;
    for (name, banner) in [
        ("kubeseal", "kubeseal version"),
        ("controller", "controller version"),
    ] {
        let version = versions
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .with_context(|| format!("no {name} in scripts/fixtures versions"))?;
        let out = std::process::Command::new(fixture(name)?)
            .arg("--version")
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("{name} --version failed: {}", out.status);
        }
        assert_eq!(
            stdout.trim(),
            format!("{banner}: {}", version.trim_start_matches('v'))
        );
    }
    Ok(())
}

/// `scripts/keyvault` as a developer and the demo use it: up prints the client's variables, the
/// server answers the challenge over HTTPS with its CA, the fault switch works, down stops it and
/// up brings the same vault back.
#[test]
fn scripts_keyvault_starts_switches_faults_and_stops() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = keyseal_testenv::workspace_binary("keyseal-kv-emulator", "keyseal-kv-emulator")?;
    let script = keyseal_testenv::repo_root().join("scripts/keyvault");
    let run = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(&script)
            .args(args)
            .env("KEYSEAL_KEYVAULT_DIR", dir.path())
            .env("KEYSEAL_KV_EMULATOR_BIN", &bin)
            .output()?;
        ensure!(
            out.status.success(),
            "scripts/keyvault {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let up = run(&["up"])?;
    let var = |name: &str| -> Result<String> {
        up.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(str::to_owned)
            .with_context(|| format!("no {name} in {up}"))
    };
    let url = var("KEYSEAL_KEYVAULT_URL")?;
    ensure!(url.starts_with("https://127.0.0.1:"), "{url}");
    ensure!(var("AZURE_AUTHORITY_HOST")? == url);
    for name in ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"] {
        ensure!(!var(name)?.is_empty(), "{name}");
    }
    let status = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                "--cacert",
            ])
            .arg(var("KEYSEAL_KEYVAULT_CA")?)
            .args(args)
            .arg(format!("{url}/secrets?api-version=7.6"))
            .output()?;
        Ok(String::from_utf8(out.stdout)?)
    };
    assert_eq!(status(&[])?, "401", "the challenge");
    run(&["fault", "throttle", "2"])?;
    assert_eq!(status(&[])?, "429");
    run(&["fault", "none"])?;
    assert_eq!(status(&[])?, "401");
    let reader = run(&["env", "reader"])?;
    ensure!(
        !reader.contains(&var("AZURE_CLIENT_SECRET")?),
        "another identity"
    );
    run(&["down"])?;
    assert_eq!(status(&[])?, "000", "stopped");
    let again = run(&["up"])?;
    ensure!(again.contains(&url), "the same vault again: {again}");
    run(&["down"])?;
    Ok(())
}
