//! The checked-in CRD must be exactly what the Rust types generate.

#[test]
fn checked_in_crd_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/sealedsecret.yaml");
    let on_disk = std::fs::read_to_string(path).expect("crds/sealedsecret.yaml exists");
    assert!(
        on_disk == keyseal_api::crd_yaml(),
        "crds/sealedsecret.yaml is stale: run `cargo run -p keyseal-api --bin crdgen > crds/sealedsecret.yaml`"
    );
}

#[test]
fn crd_has_upstreams_identity() {
    let crd = keyseal_api::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("sealedsecrets.bitnami.com")
    );
    assert_eq!(crd.spec.group, "bitnami.com");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "SealedSecret");
    assert_eq!(
        crd.spec
            .names
            .list_kind
            .as_deref()
            .unwrap_or("SealedSecretList"),
        "SealedSecretList"
    );
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Status", ".status.conditions[0].message"),
            ("Synced", ".status.conditions[0].status"),
            ("Age", ".metadata.creationTimestamp")
        ]
    );
}
