//! Secret → SealedSecret → Secret with upstream's metadata, scope, template and legacy rules.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::annotations::{CLUSTER_WIDE, NAMESPACE_WIDE, SKIP_SET_OWNER_REFERENCES};
use keyseal_api::{
    MAX_UNDECRYPTABLE_ITEMS, Scope, SealedSecret, UnsealError, UnsealOptions, input, reseal,
    seal_secret, seal_secret_in, unseal, verify,
};
use keyseal_crypto::{PrivateKey, encode_base64, seal};

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).unwrap())
}

fn secret(yaml: &str) -> Secret {
    input::secrets(yaml).unwrap().remove(0)
}

fn data(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
        .collect()
}

fn with_uid(mut ss: SealedSecret) -> SealedSecret {
    ss.metadata.uid = Some("1234-uid".into());
    ss
}

const FULL: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: mysecret
  namespace: myns
  uid: 00000000-server
  resourceVersion: "42"
  generation: 3
  creationTimestamp: "2025-01-01T00:00:00Z"
  selfLink: /api/v1/x
  managedFields: [{manager: kubectl}]
  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: o, uid: u}]
  labels: {app: web}
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"stringData":{"password":"leak"}}'
    keep: me
type: kubernetes.io/basic-auth
immutable: true
data:
  username: YWRtaW4=
  password: b2xk
stringData:
  password: new
"#;

#[test]
fn sealing_follows_kubeseal_metadata_rules() {
    let ss = seal_secret(&secret(FULL), key().public_key()).unwrap();
    assert_eq!(ss.metadata.name.as_deref(), Some("mysecret"));
    assert_eq!(ss.metadata.namespace.as_deref(), Some("myns"));
    assert_eq!(
        ss.metadata.annotations, None,
        "strict scope records nothing"
    );
    let t = ss.spec.template.metadata.as_ref().unwrap();
    assert_eq!(t.name.as_deref(), Some("mysecret"));
    assert_eq!(t.labels.as_ref().unwrap()["app"], "web");
    assert_eq!(
        t.annotations.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["keep"],
        "last-applied stripped"
    );
    for server_field in [
        t.uid.is_some(),
        t.resource_version.is_some(),
        t.generation.is_some(),
        t.creation_timestamp.is_some(),
        t.self_link.is_some(),
        t.managed_fields.is_some(),
        t.owner_references.is_some(),
    ] {
        assert!(!server_field);
    }
    assert_eq!(
        ss.spec.template.type_.as_deref(),
        Some("kubernetes.io/basic-auth")
    );
    assert_eq!(ss.spec.template.immutable, Some(true));
    assert_eq!(
        ss.spec.encrypted_data.keys().collect::<Vec<_>>(),
        ["password", "username"]
    );

    let out = unseal(&with_uid(ss), &[key()], UnsealOptions::default()).unwrap();
    assert_eq!(
        data(&out.secret)["password"],
        "new",
        "stringData wins over data"
    );
    assert_eq!(data(&out.secret)["username"], "admin");
    assert_eq!(
        out.secret.type_.as_deref(),
        Some("kubernetes.io/basic-auth")
    );
    assert_eq!(out.secret.immutable, Some(true));
    let owner = &out.secret.metadata.owner_references.as_ref().unwrap()[..];
    assert_eq!(owner.len(), 1);
    assert_eq!(
        (
            owner[0].api_version.as_str(),
            owner[0].kind.as_str(),
            owner[0].name.as_str(),
            owner[0].uid.as_str(),
            owner[0].controller
        ),
        (
            "bitnami.com/v1alpha1",
            "SealedSecret",
            "mysecret",
            "1234-uid",
            Some(true)
        )
    );
    assert!(
        !format!("{out:?}").contains("admin"),
        "Debug never shows values"
    );
}

#[test]
fn scopes_are_recorded_at_top_level_and_in_the_template() {
    for (scope, annotation) in [
        (Scope::NamespaceWide, NAMESPACE_WIDE),
        (Scope::ClusterWide, CLUSTER_WIDE),
    ] {
        let mut s =
            secret("kind: Secret\nmetadata: {name: a, namespace: ns}\nstringData: {k: v}\n");
        let mut ann = BTreeMap::new();
        scope.write_annotations(&mut ann);
        s.metadata.annotations = Some(ann);
        let ss = seal_secret(&s, key().public_key()).unwrap();
        assert_eq!(
            ss.metadata.annotations.as_ref().unwrap()[annotation],
            "true"
        );
        assert_eq!(
            ss.spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[annotation],
            "true"
        );
        assert_eq!(
            Scope::from_annotations(ss.metadata.annotations.as_ref()),
            scope
        );
    }
}

/// The scope given to `seal_secret_in` decides the label and the top-level annotation, whatever
/// the Secret's own annotations say.
#[test]
fn a_given_scope_wins_over_the_annotations() {
    let mut s = secret("kind: Secret\nmetadata: {name: a, namespace: ns}\nstringData: {k: v}\n");
    let mut ann = BTreeMap::new();
    Scope::NamespaceWide.write_annotations(&mut ann);
    s.metadata.annotations = Some(ann);
    let mut ss = seal_secret_in(&s, Scope::ClusterWide, key().public_key()).unwrap();
    assert_eq!(
        Scope::from_annotations(ss.metadata.annotations.as_ref()),
        Scope::ClusterWide
    );
    // Sealed with the cluster-wide label: it opens under another name and namespace.
    ss.metadata.name = Some("elsewhere".into());
    ss.metadata.namespace = Some("other".into());
    let options = UnsealOptions {
        accept_v1_data: false,
        render_templates: false,
    };
    let opened = unseal(&with_uid(ss), &[key()], options).unwrap();
    assert_eq!(data(&opened.secret)["k"], "v");
}

fn sealed_for(scope: Scope, ns: &str, name: &str) -> SealedSecret {
    let mut s = secret("kind: Secret\nmetadata: {name: placeholder}\nstringData: {k: v}\n");
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some(ns.into());
    let mut ann = BTreeMap::new();
    scope.write_annotations(&mut ann);
    s.metadata.annotations = Some(ann);
    seal_secret(&s, key().public_key()).unwrap()
}

#[test]
fn scope_matrix_on_whole_objects() {
    for sealed_scope in Scope::ALL {
        for (ns, name) in [
            ("myns", "mysecret"),
            ("myns", "other"),
            ("otherns", "mysecret"),
        ] {
            let mut ss = sealed_for(sealed_scope, "myns", "mysecret");
            ss.metadata.namespace = Some(ns.into());
            ss.metadata.name = Some(name.into());
            let expected = match sealed_scope {
                Scope::Strict => (ns, name) == ("myns", "mysecret"),
                Scope::NamespaceWide => ns == "myns",
                Scope::ClusterWide => true,
            };
            let got = unseal(&ss, &[key()], UnsealOptions::default());
            assert_eq!(got.is_ok(), expected, "{sealed_scope} as {ns}/{name}");
            if expected {
                let s = got.unwrap().secret;
                assert_eq!(
                    (s.metadata.namespace.as_deref(), s.metadata.name.as_deref()),
                    (Some(ns), Some(name)),
                    "name/namespace forced"
                );
            }
        }
    }
    // Scope comes from the top-level annotations, never from the template.
    let mut ss = sealed_for(Scope::ClusterWide, "myns", "mysecret");
    ss.metadata.annotations = None;
    assert!(unseal(&ss, &[key()], UnsealOptions::default()).is_err());
}

#[test]
fn namespace_and_name_are_required_except_cluster_wide() {
    let e = seal_secret(
        &secret("kind: Secret\nmetadata: {name: a}\nstringData: {k: v}\n"),
        key().public_key(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("must declare a namespace"));
    let ok = seal_secret(&secret(&format!("kind: Secret\nmetadata: {{name: a, annotations: {{{CLUSTER_WIDE}: 'true'}}}}\nstringData: {{k: v}}\n")), key().public_key()).unwrap();
    assert_eq!(ok.metadata.namespace, None);
    let e = seal_secret(
        &secret("kind: Secret\nmetadata: {namespace: a}\n"),
        key().public_key(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("must declare a name"));
}

#[test]
fn errors_aggregate_per_item_and_never_include_values() {
    let mut ss = sealed_for(Scope::Strict, "ns", "n");
    let other = PrivateKey::generate(2048).unwrap();
    let good = ss.spec.encrypted_data["k"].clone();
    ss.spec.encrypted_data.insert("bar".into(), good.clone());
    ss.spec.encrypted_data.insert(
        "foo".into(),
        encode_base64(&seal(other.public_key(), b"ns/n", b"x").unwrap()),
    );
    ss.spec.encrypted_data.insert(
        "zed".into(),
        encode_base64(&seal(other.public_key(), b"ns/n", b"x").unwrap()),
    );
    let e = unseal(&ss, &[key()], UnsealOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "no key could decrypt secret (foo, zed)");
    assert_eq!(e.reason(), "NoKeyCouldDecrypt");
    ss.spec.encrypted_data.insert("foo".into(), "%%%".into());
    let e = unseal(&ss, &[key()], UnsealOptions::default()).unwrap_err();
    assert_eq!(
        e,
        UnsealError::InvalidBase64 {
            items: vec!["foo".into()]
        }
    );
    // Key order is reported per item.
    let ss = sealed_for(Scope::Strict, "ns", "n");
    let out = unseal(&ss, &[&other, key()], UnsealOptions::default()).unwrap();
    assert_eq!(out.key_indices["k"], 1);
}

#[test]
fn template_data_renders_drops_and_never_shadows_sealed_items() {
    let mut ss = sealed_for(Scope::Strict, "ns", "n");
    ss.spec.encrypted_data.insert(
        "user".into(),
        encode_base64(&seal(key().public_key(), b"ns/n", b"admin").unwrap()),
    );
    ss.spec.template.data = Some(BTreeMap::from([
        (
            "url".into(),
            Some("postgres://{{ .user }}:{{ index . \"k\" }}@db".into()),
        ),
        ("k".into(), Some("shadow attempt".into())),
        ("user".into(), None),
    ]));
    let out = unseal(&with_uid(ss.clone()), &[key()], UnsealOptions::default()).unwrap();
    let d = data(&out.secret);
    assert_eq!(d["url"], "postgres://admin:v@db");
    assert_eq!(d["k"], "v", "a template never overrides a sealed item");
    assert!(!d.contains_key("user"), "null drops the item");
    // Verification does not render templates.
    verify(&ss, &[key()], true).unwrap();
    ss.spec.template.data = Some(BTreeMap::from([(
        "bad".into(),
        Some("{{ env \"HOME\" }}".into()),
    )]));
    verify(&ss, &[key()], true).unwrap();
    let e = unseal(&ss, &[key()], UnsealOptions::default()).unwrap_err();
    assert!(
        matches!(e, UnsealError::Template { ref item, .. } if item == "bad"),
        "{e}"
    );
}

#[test]
fn skip_set_owner_references_in_the_template() {
    let ss = with_uid(sealed_for(Scope::Strict, "ns", "n"));
    let owned = unseal(&ss, &[key()], UnsealOptions::default()).unwrap();
    assert_eq!(
        owned.secret.metadata.owner_references.map(|o| o.len()),
        Some(1)
    );
    let mut skipped = ss.clone();
    skipped.spec.template.metadata.as_mut().unwrap().annotations = Some(BTreeMap::from([(
        SKIP_SET_OWNER_REFERENCES.into(),
        "true".into(),
    )]));
    let out = unseal(&skipped, &[key()], UnsealOptions::default()).unwrap();
    assert_eq!(out.secret.metadata.owner_references, None);
    // A SealedSecret read from a file has no uid, so there is no owner to reference.
    let from_file = unseal(
        &sealed_for(Scope::Strict, "ns", "n"),
        &[key()],
        UnsealOptions::default(),
    )
    .unwrap();
    assert_eq!(from_file.secret.metadata.owner_references, None);
}

fn legacy(ns: &str, name: &str, secret_json: &str) -> SealedSecret {
    let sealed = seal(
        key().public_key(),
        format!("{ns}/{name}").as_bytes(),
        secret_json.as_bytes(),
    )
    .unwrap();
    let mut ss = SealedSecret::default();
    ss.metadata.name = Some(name.into());
    ss.metadata.namespace = Some(ns.into());
    ss.spec.data = Some(ByteString(sealed));
    ss
}

#[test]
fn legacy_v1_data() {
    let ss = legacy(
        "ns",
        "n",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ignored","labels":{"a":"b"}},"type":"Opaque","data":{"x":"eQ=="}}"#,
    );
    let out = unseal(&ss, &[key()], UnsealOptions::default()).unwrap();
    assert_eq!(data(&out.secret)["x"], "y");
    assert_eq!(out.secret.metadata.name.as_deref(), Some("n"));
    assert_eq!(out.secret.metadata.labels.as_ref().unwrap()["a"], "b");
    let off = UnsealOptions {
        accept_v1_data: false,
        ..UnsealOptions::default()
    };
    assert_eq!(
        unseal(&ss, &[key()], off).unwrap_err(),
        UnsealError::V1DataDisabled
    );
    let mut both = ss.clone();
    both.spec.encrypted_data.insert("a".into(), "b".into());
    assert_eq!(
        unseal(&both, &[key()], UnsealOptions::default()).unwrap_err(),
        UnsealError::BothDataFields
    );
    let not_secret = legacy("ns", "n", "password=hunter2");
    let e = unseal(&not_secret, &[key()], UnsealOptions::default()).unwrap_err();
    assert_eq!(e, UnsealError::V1DataNotASecret);
    assert!(!e.to_string().contains("hunter2"));
}

#[test]
fn sealed_secret_json_round_trips_and_tolerates_bad_encrypted_data() {
    let ss = sealed_for(Scope::NamespaceWide, "ns", "n");
    let json = serde_json::to_string(&ss).unwrap();
    assert!(
        json.contains(r#""apiVersion":"bitnami.com/v1alpha1""#)
            && json.contains(r#""kind":"SealedSecret""#)
    );
    assert_eq!(serde_json::from_str::<SealedSecret>(&json).unwrap(), ss);
    let odd: SealedSecret = serde_json::from_str(r#"{"apiVersion":"bitnami.com/v1alpha1","kind":"SealedSecret","metadata":{"name":"n","namespace":"ns"},"spec":{"encryptedData":{"a":5}}}"#).unwrap();
    let e = unseal(&odd, &[key()], UnsealOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "no key could decrypt secret (a)");
}

#[test]
fn key_indices_refer_to_the_keys_as_given_across_items() {
    // Several items sealed with the third of three keys: every item reports index 2, whatever
    // order the keys were tried in internally.
    let (a, b) = (
        PrivateKey::generate(2048).unwrap(),
        PrivateKey::generate(2048).unwrap(),
    );
    let mut s = secret(
        "kind: Secret\nmetadata: {name: app, namespace: ns}\nstringData: {one: '1', two: '2', three: '3'}\n",
    );
    s.metadata.annotations = None;
    let ss = seal_secret(&s, key().public_key()).unwrap();
    let out = unseal(&ss, &[&a, &b, key()], UnsealOptions::default()).unwrap();
    assert_eq!(
        out.key_indices.values().copied().collect::<Vec<_>>(),
        [2, 2, 2]
    );
    assert_eq!(data(&out.secret)["three"], "3");
}

/// The CRD refuses `encryptedData` values that are not strings (as upstream's), but an object
/// stored under an older or hand-made CRD may still hold them: they decode as empty values and
/// unsealing names them, instead of the whole object failing to decode.
#[test]
fn non_string_encrypted_data_is_named_by_the_unseal_error() {
    let ss: SealedSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {"name": "odd", "namespace": "ns", "uid": "1234-uid"},
        "spec": {"encryptedData": {"n": 42, "m": {"x": 1}}},
    }))
    .expect("decodes despite the non-string values");
    let e = unseal(&ss, &[key()], UnsealOptions::default()).unwrap_err();
    assert!(
        matches!(&e, UnsealError::NoKeyCouldDecrypt { items, .. } if items == &["m", "n"]),
        "{e}"
    );
}

/// A SealedSecret of many undecryptable items costs a bounded number of RSA operations: after
/// `MAX_UNDECRYPTABLE_ITEMS` items no key opened, the rest are not tried, and the message says
/// how many were left. A bad base64 value fails the object before any decryption.
#[test]
fn undecryptable_items_are_tried_up_to_a_bound() {
    let mut ss = sealed_for(Scope::Strict, "ns", "n");
    let good = ss.spec.encrypted_data["k"].clone();
    let other = PrivateKey::generate(2048).unwrap();
    let foreign = encode_base64(&seal(other.public_key(), b"ns/n", b"x").unwrap());
    for i in 0..20 {
        ss.spec
            .encrypted_data
            .insert(format!("bad{i:02}"), foreign.clone());
    }
    let e = unseal(&ss, &[key()], UnsealOptions::default()).unwrap_err();
    let tried: Vec<String> = (0..MAX_UNDECRYPTABLE_ITEMS)
        .map(|i| format!("bad{i:02}"))
        .collect();
    assert_eq!(
        e.to_string(),
        format!(
            "no key could decrypt secret ({}); {} more items were not tried",
            tried.join(", "),
            20 - MAX_UNDECRYPTABLE_ITEMS + 1 // the rest of the bad ones, and `k`
        )
    );
    // Re-sealing (`/v1/rotate`, `--re-encrypt`) opens the same way, within the same bound.
    let e2 = reseal(&ss, &[key()], key().public_key()).unwrap_err();
    assert_eq!(e2.to_string(), e.to_string());
    // Fewer failures than the bound: all listed, as upstream.
    ss.spec
        .encrypted_data
        .retain(|k, _| k == "k" || k.as_str() < "bad03");
    let e = unseal(&ss, &[key()], UnsealOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no key could decrypt secret (bad00, bad01, bad02)"
    );
    ss.spec.encrypted_data.insert("k".into(), good);
    ss.spec.encrypted_data.insert("zz".into(), "%%%".into());
    let e = unseal(&ss, &[key()], UnsealOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "illegal base64 data in encryptedData (zz)");
}
