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

/// Where keyseal's CRD differs from upstream's on purpose, by path, with the reason. Everything
/// else must be equal: required fields, types, formats, defaults, nullable, preserve-unknown-
/// fields, names, printer columns, subresources. Descriptions and titles are documentation and not
/// compared.
const DELIBERATE: &[(&str, &str)] = &[(
    "spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.template.properties.data.additionalProperties.nullable",
    "upstream documents `template.data.<item>: null` as the way to drop an item from the Secret, \
     but its CRD declares the values non-nullable, so the API server prunes the null before any \
     controller sees it; keyseal's CRD lets the null through so the documented behaviour works \
     (it only widens what the schema accepts)",
)];

/// The differences between two JSON trees, as `path: ours vs upstream` lines.
fn differences(
    path: &str,
    ours: &serde_json::Value,
    theirs: &serde_json::Value,
    out: &mut Vec<(String, String)>,
) {
    use serde_json::Value;
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => differences(&child, x, y, out),
                    (x, y) => out.push((child, format!("ours {x:?}, upstream {y:?}"))),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push((path.to_owned(), format!("ours {a}, upstream {b}"))),
    }
}

/// Drops what is documentation only.
fn without_docs(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("description");
            map.remove("title");
            map.values_mut().for_each(without_docs);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_docs),
        _ => {}
    }
}

/// Upstream's CRD as its release ships it (the Helm chart's copy, identical to the one in its
/// controller.yaml), from the Go module `scripts/fixtures` downloads.
fn upstream_crd() -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/fixtures");
    let out = std::process::Command::new("bash")
        .args([script, "source", "sealed-secrets"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/fixtures source sealed-secrets failed"
    );
    let dir = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let path = dir.join("helm/sealed-secrets/crds/bitnami.com_sealedsecrets.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_saphyr::from_str(&text).expect("upstream's CRD parses");
    serde_json::to_value(crd).unwrap()
}

/// The CRD used to carry `default: {}` on `spec.encryptedData` (a serde default leaking into the
/// schema), so the API server accepted a SealedSecret without it; upstream's answers 422. Any
/// other difference from upstream's CRD must be listed in DELIBERATE with its reason.
#[test]
fn regression_crd_is_structurally_upstreams() {
    let mut ours = serde_json::to_value(keyseal_api::crd()).unwrap();
    let mut theirs = upstream_crd();
    for crd in [&mut ours, &mut theirs] {
        without_docs(crd);
        // controller-gen's version stamp.
        crd["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
    }
    let mut found = Vec::new();
    differences("", &ours, &theirs, &mut found);
    let unexplained: Vec<String> = found
        .iter()
        .filter(|(path, _)| !DELIBERATE.iter().any(|(p, _)| p == path))
        .map(|(path, what)| format!("{path}: {what}"))
        .collect();
    assert!(
        unexplained.is_empty(),
        "differences from upstream's CRD:\n{}",
        unexplained.join("\n")
    );
    for (path, _) in DELIBERATE {
        assert!(
            found.iter().any(|(p, _)| p == path),
            "{path} is listed as a deliberate difference but is no longer one: remove it from the list"
        );
    }
}
