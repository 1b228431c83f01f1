//! The shipped manifests: accepted by the real API server (server-side dry run), and they say
//! what the README promises (2 replicas, probes, non-root read-only pods, the Service kubeseal
//! expects).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every document of every resource the kustomization lists (files, or directories with their
/// own kustomization).
fn documents() -> Vec<serde_json::Value> {
    fn from_kustomization(dir: &std::path::Path, out: &mut Vec<serde_json::Value>) {
        let k =
            std::fs::read_to_string(dir.join("kustomization.yaml")).expect("kustomization.yaml");
        let k = &keyseal_api::input::documents(&k).unwrap()[0];
        for resource in k["resources"].as_array().expect("resources") {
            let path = dir.join(resource.as_str().unwrap());
            if path.is_dir() {
                from_kustomization(&path, out);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                out.extend(keyseal_api::input::documents(&text).unwrap());
            }
        }
    }
    let mut out = Vec::new();
    from_kustomization(&root().join("manifests"), &mut out);
    // An empty kustomization would make every check below vacuous.
    assert!(
        !out.is_empty(),
        "manifests/kustomization.yaml lists no documents"
    );
    out
}

#[test]
fn manifests_say_what_the_readme_promises() {
    let docs = documents();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    let crd = find("CustomResourceDefinition");
    let generated: serde_json::Value = serde_json::to_value(keyseal_api::crd()).unwrap();
    assert_eq!(
        crd["spec"], generated["spec"],
        "the kustomization installs the generated CRD"
    );

    let deployment: Deployment = serde_json::from_value(find("Deployment")).unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("sealed-secrets-controller")
    );
    let security = pod.security_context.unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    let container = &pod.containers[0];
    let c = container.security_context.clone().unwrap();
    assert_eq!(
        (c.read_only_root_filesystem, c.allow_privilege_escalation),
        (Some(true), Some(false))
    );
    assert_eq!(
        container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    // Key Vault backups are configured by an optional ConfigMap whose keys are the flags'
    // variables, and AKS workload identity by the pod label.
    let from = container.env_from.as_deref().unwrap_or_default();
    let config_map = from[0].config_map_ref.as_ref().expect("a ConfigMap");
    assert_eq!(
        (config_map.name.as_str(), config_map.optional),
        ("keyseal-keyvault", Some(true))
    );
    use clap::Parser as _;
    let flags = keyseal_controller::Flags::try_parse_from([
        "keyseal-controller".to_owned(),
        "--help".to_owned(),
    ])
    .unwrap_err()
    .to_string();
    for variable in ["KEYSEAL_KEYVAULT_URL", "KEYSEAL_KEYVAULT_PREFIX"] {
        assert!(
            flags.contains(variable),
            "{variable} is not a flag's variable"
        );
    }
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["azure.workload.identity/use"], "true");
    assert!(docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"));

    let service: Service = serde_json::from_value(find("Service")).unwrap();
    assert_eq!(
        service.metadata.name.as_deref(),
        Some("sealed-secrets-controller"),
        "kubeseal's default --controller-name"
    );
    assert_eq!(
        service.metadata.namespace.as_deref(),
        Some("kube-system"),
        "kubeseal's default --controller-namespace"
    );
    assert_eq!(
        service.spec.unwrap().ports.unwrap()[0].name.as_deref(),
        Some("http")
    );
}

#[tokio::test]
async fn the_api_server_accepts_every_manifest() -> anyhow::Result<()> {
    let cluster = keyseal_testenv::Cluster::connect().await?;
    let client = cluster.client();
    let discovery = kube::Discovery::new(client.clone()).run().await?;
    // `documents()` fails on an empty list, so this loop always checks something.
    for doc in documents() {
        let gvk = GroupVersionKind::try_from(&serde_json::from_value::<kube::api::TypeMeta>(
            doc.clone(),
        )?)?;
        let (resource, capabilities) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| anyhow::anyhow!("unknown kind {gvk:?}"))?;
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        let api: kube::Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => kube::Api::namespaced_with(
                client.clone(),
                doc["metadata"]["namespace"].as_str().unwrap_or("default"),
                &resource,
            ),
            Scope::Cluster => kube::Api::all_with(client.clone(), &resource),
        };
        let params = PatchParams::apply("keyseal-manifest-test")
            .dry_run()
            .force();
        api.patch(&name, &params, &Patch::Apply(&doc))
            .await
            .map_err(|e| anyhow::anyhow!("{} {name}: {e}", gvk.kind))?;
    }
    Ok(())
}
