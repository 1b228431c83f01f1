//! The hostile-input corpus (`tests/data/hostile-*.yaml`): SealedSecrets and key Secrets built to
//! break the controller, each with the exact outcome it must reach. One controller takes a whole
//! corpus at once, so the cases also show that a bad object never stops the others: after the
//! corpus the controller still serves and unseals, wrote no Secret it does not own, created no
//! second key, and leaked no plaintext. The controller's CPU time and peak memory for the corpus
//! are printed (figures for the notes, not asserted).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::common::*;
use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use keyseal_api::{Scope, SealedSecret};
use keyseal_crypto::{Certificate, decode_base64, encode_base64};
use keyseal_testenv::await_condition;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, ResourceExt as _};
use serde::Deserialize;
use serde_json::{Value, json};

const SEALED_SECRETS: &str = include_str!("../data/hostile-sealed-secrets.yaml");

// ---------------------------------------------------------------------------------------------
// The corpus format (documented at the top of each data file)

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    case: String,
    why: String,
    #[serde(default)]
    build: Build,
    expect: Expect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Build {
    items: BTreeMap<String, String>,
    generate: Option<Generate>,
    sealed_for: Option<SealedFor>,
    annotate: Option<String>,
    corrupt: Option<Corrupt>,
    spec: Option<Value>,
    raw: bool,
    existing: Option<Existing>,
    target: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    items: usize,
    bytes: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SealedFor {
    name: Option<String>,
    namespace: Option<String>,
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Corrupt {
    items: String,
    how: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Existing {
    owner: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    rejected: Option<Rejected>,
    synced: Option<String>,
    reason: Option<String>,
    message: Option<String>,
    event: Option<String>,
    secret: Option<SecretExpect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rejected {
    code: u16,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SecretExpect {
    /// `absent` or `untouched`.
    State(String),
    Written {
        items: usize,
        #[serde(default)]
        values: BTreeMap<String, String>,
        bytes: Option<usize>,
        owner: Option<String>,
    },
}

fn load(text: &str) -> Result<Vec<Case>> {
    load_as(text)
}

/// The cases of a corpus file (one YAML list), each named in a parse error.
fn load_as<T: serde::de::DeserializeOwned>(text: &str) -> Result<Vec<T>> {
    let docs = keyseal_api::input::documents(text)?;
    let [list] = docs.as_slice() else {
        bail!("the corpus is one YAML list")
    };
    let list = list.as_array().context("the corpus is one YAML list")?;
    list.iter()
        .map(|case| {
            serde_json::from_value(case.clone()).with_context(|| format!("case {}", case["case"]))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Building the objects

/// A generated item's value: `bytes` letters, different per item.
fn generated_value(index: usize, bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|j| b'a' + ((index + j) % 26) as u8)
        .collect()
}

/// The ciphertext format: a 2-byte length, the RSA-OAEP block, then AES-GCM ciphertext and tag.
fn corrupt(value: &str, how: &str, seed: u64) -> Result<String> {
    let mut bytes = decode_base64(value)?;
    let rsa_end = 2 + usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    match how {
        "not-base64" => return Ok("!!! not base64 !!!".to_owned()),
        "empty" => bytes.clear(),
        "short" => bytes.truncate(3),
        "truncate-rsa" => bytes.truncate(rsa_end / 2),
        "truncate-gcm" => bytes.truncate(bytes.len() - 5),
        "flip-rsa" => bytes[rsa_end - 10] ^= 1,
        "flip-gcm" => *bytes.last_mut().expect("a tag") ^= 1,
        "random" => bytes = keyseal_testenv::data::noise(seed, bytes.len()),
        "length-lies" => bytes[..2].copy_from_slice(&[0xff, 0xff]),
        other => bail!("unknown corruption {other:?}"),
    }
    Ok(encode_base64(&bytes))
}

/// Deep-merges `patch` into `target` (objects merge key by key, anything else replaces).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// The object a case creates, as JSON (so that shapes the typed API refuses can be sent).
fn build(case: &Case, name: &str, ns: &str, cert: &Certificate) -> Result<Value> {
    let b = &case.build;
    let mut object = json!({
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {"name": name, "namespace": ns},
        "spec": {},
    });
    if !b.raw {
        object = serde_json::to_value(seal(b, name, ns, cert)?)?;
        let mut annotations = BTreeMap::new();
        scope(b.annotate.as_deref())?.write_annotations(&mut annotations);
        object["metadata"]["annotations"] = serde_json::to_value(annotations)?;
    }
    if let Some(spec) = &b.spec {
        merge(&mut object["spec"], spec);
    }
    Ok(object)
}

/// A scope by name; strict when none is given.
fn scope(name: Option<&str>) -> Result<Scope> {
    name.map_or(Ok(Scope::Strict), |n| {
        n.parse().map_err(|e| anyhow::anyhow!("{e}"))
    })
}

/// Seals the case's items for its target (or `sealed_for`) and applies `corrupt`.
fn seal(b: &Build, name: &str, ns: &str, cert: &Certificate) -> Result<SealedSecret> {
    let target = b.sealed_for.as_ref();
    let mut secret = Secret::default();
    secret.metadata.name = Some(target.and_then(|t| t.name.clone()).unwrap_or(name.into()));
    secret.metadata.namespace = Some(
        target
            .and_then(|t| t.namespace.clone())
            .unwrap_or(ns.into()),
    );
    let mut data: BTreeMap<String, ByteString> = b
        .items
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
        .collect();
    if let Some(g) = &b.generate {
        data.extend((0..g.items).map(|i| {
            (
                format!("item-{i:05}"),
                ByteString(generated_value(i, g.bytes)),
            )
        }));
    }
    secret.data = Some(data);
    let scope = scope(target.and_then(|t| t.scope.as_deref()))?;
    let mut ss = keyseal_api::seal_secret_in(&secret, scope, cert.public_key())?;
    ss.metadata.name = Some(name.into());
    ss.metadata.namespace = Some(ns.into());
    if let Some(c) = &b.corrupt {
        for (i, (item, value)) in ss.spec.encrypted_data.iter_mut().enumerate() {
            if c.items == "all" || &c.items == item {
                *value = corrupt(value, &c.how, i as u64 + 1)?;
            }
        }
    }
    Ok(ss)
}

/// Makes the Secret a case finds in its way, and returns its resourceVersion.
async fn make_existing(env: &Env, name: &str, owner: &str) -> Result<String> {
    let owner_reference = match owner {
        "none" => None,
        "configmap" => {
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("{name}-owner")}}))?;
            let cm = Api::<ConfigMap>::namespaced(env.admin(), env.name())
                .create(&PostParams::default(), &cm)
                .await?;
            Some(controller_of("v1", "ConfigMap", &cm.name_any(), cm.uid()))
        }
        "other-sealedsecret" => {
            let other = serde_json::from_value::<SealedSecret>(json!({
                "apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
                "metadata": {"name": format!("{name}-other")}, "spec": {"encryptedData": {}},
            }))?;
            let other = env.create(&other).await?;
            Some(controller_of(
                "bitnami.com/v1alpha1",
                "SealedSecret",
                &other.name_any(),
                other.uid(),
            ))
        }
        other => bail!("unknown owner {other:?}"),
    };
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": owner_reference.into_iter().collect::<Vec<_>>()},
        "stringData": {"keep": "UNTOUCHED-VALUE"},
    }))?;
    let secret = env
        .secrets()
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(secret.resource_version().unwrap_or_default())
}

fn controller_of(api_version: &str, kind: &str, name: &str, uid: Option<String>) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Checking the outcomes

/// What was created for a case: the object's name and, for `untouched`, the Secret's version.
struct Created {
    name: String,
    existing_version: Option<String>,
}

async fn check(env: &Env, case: &Case, created: &Created) -> Result<()> {
    let e = &case.expect;
    let name = &created.name;
    if let Some(status) = &e.synced {
        let ss = await_synced(&env.sealed_secrets(), name, status).await?;
        let condition = synced(&ss).context("a Synced condition")?;
        if let Some(reason) = &e.reason {
            ensure!(
                condition.reason.as_deref() == Some(reason.as_str()),
                "reason {:?}",
                condition.reason
            );
        }
        if let Some(text) = &e.message {
            let message = condition.message.as_deref().unwrap_or_default();
            ensure!(
                message.contains(text.as_str()),
                "message {message:?} lacks {text:?}"
            );
        }
    }
    if let Some(reason) = &e.event {
        let text = e.message.clone().unwrap_or_default();
        await_condition(WAIT, &format!("event {reason} about {name}"), || {
            let (reason, text) = (reason.clone(), text.clone());
            async move {
                Ok(env.events_about(name).await?.into_iter().find(|ev| {
                    ev.reason.as_deref() == Some(&reason)
                        && ev.note.as_deref().is_some_and(|n| n.contains(&text))
                }))
            }
        })
        .await?;
    }
    match &e.secret {
        None => {}
        Some(SecretExpect::State(state)) => check_state(env, name, state, created).await?,
        Some(SecretExpect::Written {
            items,
            values,
            bytes,
            owner,
        }) => {
            let secret = env.secrets().get(name).await?;
            let data = secret.data.clone().unwrap_or_default();
            ensure!(
                data.len() == *items,
                "{} items, expected {items}",
                data.len()
            );
            for (k, v) in values {
                ensure!(
                    data.get(k).map(|b| b.0.as_slice()) == Some(v.as_bytes()),
                    "item {k}"
                );
            }
            if let Some(total) = bytes {
                let sum: usize = data.values().map(|b| b.0.len()).sum();
                ensure!(sum == *total, "{sum} bytes, expected {total}");
            }
            let owners = secret.metadata.owner_references.unwrap_or_default();
            match owner.as_deref() {
                Some("sealedsecret") => {
                    let ss = env.sealed_secrets().get(name).await?;
                    ensure!(
                        owners.len() == 1 && Some(&owners[0].uid) == ss.metadata.uid.as_ref(),
                        "owned by its SealedSecret only: {owners:?}"
                    );
                }
                Some("none") => ensure!(owners.is_empty(), "owned: {owners:?}"),
                Some(other) => bail!("unknown owner {other:?}"),
                None => {}
            }
        }
    }
    Ok(())
}

async fn check_state(env: &Env, name: &str, state: &str, created: &Created) -> Result<()> {
    let secret = env.secrets().get_opt(name).await?;
    match state {
        "absent" => ensure!(secret.is_none(), "a Secret was written"),
        "untouched" => {
            let secret = secret.context("the existing Secret is gone")?;
            ensure!(
                secret.resource_version() == created.existing_version,
                "the existing Secret was written"
            );
        }
        other => bail!("unknown secret state {other:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn the_corpus_is_well_formed() -> Result<()> {
    let cases = load(SEALED_SECRETS)?;
    ensure!(cases.len() >= 40, "{} cases", cases.len());
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        ensure!(names.insert(&case.case), "case {} twice", case.case);
        ensure!(!case.why.is_empty(), "case {} says why", case.case);
        let e = &case.expect;
        ensure!(
            e.rejected.is_some() != e.synced.is_some(),
            "case {}: rejected by the API server or synced, one of the two",
            case.case
        );
    }
    Ok(())
}

#[tokio::test]
async fn hostile_sealed_secrets_each_end_as_expected_and_harm_nothing_else() -> Result<()> {
    let Running(env, controller, cert, ns, _) = Running::start("hostile", &[]).await?;
    let pid = controller.id().context("a pid")?;
    let keys_before: Vec<String> = env
        .key_secrets()
        .await?
        .iter()
        .map(|s| s.name_any())
        .collect();
    let dynamic: Api<DynamicObject> =
        Api::namespaced_with(env.admin(), &ns, &ApiResource::erase::<SealedSecret>(&()));
    let before = keyseal_testenv::usage::of(pid)?;
    let started = Instant::now();

    let cases = load(SEALED_SECRETS)?;
    let mut created = Vec::new();
    for case in &cases {
        let name = match case.build.target.as_deref() {
            Some("sealing-key") => keys_before[0].clone(),
            Some(other) => bail!("unknown target {other:?}"),
            None => case.case.clone(),
        };
        let existing_version = match (&case.build.existing, case.build.target.is_some()) {
            (Some(e), _) => Some(make_existing(&env, &name, &e.owner).await?),
            (None, true) => env.secrets().get(&name).await?.resource_version(),
            (None, false) => None,
        };
        let object: DynamicObject = serde_json::from_value(build(case, &name, &ns, &cert)?)?;
        match (
            dynamic.create(&PostParams::default(), &object).await,
            &case.expect.rejected,
        ) {
            (Err(kube::Error::Api(status)), Some(r)) => {
                ensure!(
                    status.code == r.code,
                    "{}: refused with {}",
                    case.case,
                    status.code
                );
                ensure!(
                    status.message.contains(&r.message),
                    "{}: {}",
                    case.case,
                    status.message
                );
            }
            (Ok(_), None) => created.push((
                case,
                Created {
                    name,
                    existing_version,
                },
            )),
            (result, _) => bail!("{}: creating it gave {:?}", case.case, result.map(|_| ())),
        }
    }
    let mut failures = Vec::new();
    for (case, c) in &created {
        if let Err(e) = check(&env, case, c).await {
            failures.push(format!("{} ({}): {e:#}", case.case, case.why));
        }
    }
    let settled = started.elapsed();
    ensure!(
        failures.is_empty(),
        "cases that did not end as expected:\n{}",
        failures.join("\n")
    );

    // No hot loop: once every case has its outcome, nothing is unsealed again.
    let requests = |m: keyseal_testenv::metrics::Metrics| {
        m.sum("sealed_secrets_controller_unseal_requests_total", &[])
    };
    let after = keyseal_testenv::usage::of(pid)?;
    let settled_requests = requests(controller.metrics().await?);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let later = requests(controller.metrics().await?);
    ensure!(
        later == settled_requests,
        "still unsealing: {settled_requests} → {later} requests"
    );

    // Everything else still works: the controller serves, unseals a new object, kept its keys.
    let (code, _) = controller.get("/healthz").await?;
    ensure!(code == 200, "/healthz {code}");
    env.create(&env.seal(
        &cert,
        "after-the-corpus",
        &[("pw", "HOSTILE-after")],
        Scope::Strict,
    ))
    .await?;
    env.await_secret("after-the-corpus", |_| true).await?;
    let keys_after: Vec<String> = env
        .key_secrets()
        .await?
        .iter()
        .map(|s| s.name_any())
        .collect();
    ensure!(
        keys_after == keys_before,
        "the key Secrets changed: {keys_after:?}"
    );
    let values: Vec<String> = cases
        .iter()
        .flat_map(|c| c.build.items.values().cloned())
        .chain(["UNTOUCHED-VALUE".to_owned(), "HOSTILE-after".to_owned()])
        .collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    assert_no_plaintext(&controller, &env, &values).await?;
    eprintln!(
        "hostile corpus: {} cases ({} refused by the API server), settled in {:.1} s; controller \
         CPU {:.2} s for the corpus, peak RSS {} MiB",
        cases.len(),
        cases.len() - created.len(),
        settled.as_secs_f64(),
        after.cpu_seconds - before.cpu_seconds,
        after.peak_kib / 1024,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Key Secrets

const KEY_SECRETS: &str = include_str!("../data/hostile-key-secrets.yaml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyCase {
    case: String,
    why: String,
    #[serde(rename = "tls.key")]
    key: String,
    #[serde(rename = "tls.crt")]
    crt: String,
    expect: KeyExpect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyExpect {
    loaded: bool,
    message: Option<String>,
}

/// The items of a case's key Secret, and the certificate to seal with when it should load.
struct KeyItems {
    key: Option<Vec<u8>>,
    crt: Option<Vec<u8>>,
    sealing_cert: Option<Certificate>,
}

fn key_items(case: &KeyCase, active: &Secret) -> Result<KeyItems> {
    use keyseal_crypto::{CertificateParams, PrivateKey, SystemRng, self_signed_certificate};
    let own = PrivateKey::generate(2048)?;
    let certify = |key: &PrivateKey, params: CertificateParams| {
        self_signed_certificate(key, &params, &mut SystemRng)
    };
    let active_item = |item: &str| -> Result<Vec<u8>> {
        Ok(active
            .data
            .as_ref()
            .and_then(|d| d.get(item))
            .context("the active key")?
            .0
            .clone())
    };
    let source = |spec: &str, item: &str| -> Result<(Option<Vec<u8>>, Option<Certificate>)> {
        Ok(match spec {
            "missing" => (None, None),
            "generated" if item == "tls.key" => {
                (Some(own.to_pkcs1_pem().as_bytes().to_vec()), None)
            }
            "generated" => {
                let cert = certify(&own, CertificateParams::default())?;
                (Some(cert.to_pem().into_bytes()), Some(cert))
            }
            "expired" => {
                let year = std::time::Duration::from_secs(365 * 86_400);
                let cert = certify(
                    &own,
                    CertificateParams {
                        not_before: std::time::SystemTime::now() - 2 * year,
                        validity: std::time::Duration::from_secs(86_400),
                        ..CertificateParams::default()
                    },
                )?;
                (Some(cert.to_pem().into_bytes()), Some(cert))
            }
            "other" => {
                let other = PrivateKey::generate(2048)?;
                (
                    Some(
                        certify(&other, CertificateParams::default())?
                            .to_pem()
                            .into_bytes(),
                    ),
                    None,
                )
            }
            "active" => {
                let bytes = active_item(item)?;
                let cert = (item == "tls.crt")
                    .then(|| Certificate::from_pem(&bytes))
                    .transpose()?;
                (Some(bytes), cert)
            }
            _ => match spec.split_once(':') {
                Some(("file", name)) => {
                    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/data/keys")
                        .join(name);
                    (
                        Some(std::fs::read(&path).with_context(|| path.display().to_string())?),
                        None,
                    )
                }
                Some(("text", text)) => (Some(text.as_bytes().to_vec()), None),
                _ => bail!("unknown source {spec:?}"),
            },
        })
    };
    let (key, _) = source(&case.key, "tls.key")?;
    let (crt, sealing_cert) = source(&case.crt, "tls.crt")?;
    Ok(KeyItems {
        key,
        crt,
        sealing_cert,
    })
}

fn key_secret(name: &str, items: &KeyItems) -> Secret {
    use keyseal_api::annotations::{SEALING_KEY_ACTIVE, SEALING_KEY_LABEL};
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.to_owned());
    secret.metadata.labels = Some(BTreeMap::from([(
        SEALING_KEY_LABEL.to_owned(),
        SEALING_KEY_ACTIVE.to_owned(),
    )]));
    // The API server checks that a kubernetes.io/tls Secret has both items: without one, Opaque.
    let complete = items.key.is_some() && items.crt.is_some();
    secret.type_ = Some(
        if complete {
            keyseal_api::key_secret::TLS_TYPE
        } else {
            "Opaque"
        }
        .to_owned(),
    );
    let data = [("tls.key", &items.key), ("tls.crt", &items.crt)]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), ByteString(v.clone()?))));
    secret.data = Some(data.collect());
    secret
}

#[test]
fn the_key_corpus_is_well_formed() -> Result<()> {
    let cases: Vec<KeyCase> = load_as(KEY_SECRETS)?;
    ensure!(cases.len() >= 10, "{} cases", cases.len());
    for case in &cases {
        ensure!(!case.why.is_empty(), "case {} says why", case.case);
        ensure!(
            case.expect.loaded != case.expect.message.is_some(),
            "case {}: a bad key names its problem, a good one has none",
            case.case
        );
    }
    Ok(())
}

#[tokio::test]
async fn hostile_key_secrets_are_reported_and_skipped_and_the_controller_keeps_serving()
-> Result<()> {
    let Running(env, controller, cert, ns, api) = Running::start("hostile-keys", &[]).await?;
    let active = env
        .key_secrets()
        .await?
        .into_iter()
        .next()
        .context("the controller's key")?;
    let mut failures = Vec::new();
    let mut loaded = Vec::new();
    for case in load_as::<KeyCase>(KEY_SECRETS)? {
        let name = format!("hostile-key-{}", case.case);
        let items = key_items(&case, &active)?;
        env.secrets()
            .create(&PostParams::default(), &key_secret(&name, &items))
            .await?;
        match (&case.expect.message, items.sealing_cert) {
            (Some(text), _) => {
                let found = await_condition(WAIT, &format!("ErrKeyInvalid about {name}"), || {
                    let (name, text) = (name.clone(), text.clone());
                    let env = &env;
                    async move {
                        Ok(env.events_about(&name).await?.into_iter().find(|e| {
                            e.reason.as_deref() == Some("ErrKeyInvalid")
                                && e.note.as_deref().is_some_and(|n| n.contains(&text))
                        }))
                    }
                })
                .await;
                if let Err(e) = found {
                    failures.push(format!("{} ({}): {e:#}", case.case, case.why));
                }
            }
            (None, Some(case_cert)) => loaded.push((case, case_cert)),
            (None, None) => bail!("{}: a key expected to load needs a certificate", case.case),
        }
    }
    // The usable keys open what was sealed with their certificates, and raised no warning.
    for (case, case_cert) in &loaded {
        let name = format!("sealed-with-{}", case.case);
        env.create(&env.seal(case_cert, &name, &[("pw", "HOSTILE-KEY-v")], Scope::Strict))
            .await?;
        if let Err(e) = await_synced(&api, &name, "True").await {
            failures.push(format!("{} ({}): {e:#}", case.case, case.why));
        }
        let warned = env
            .events_about(&format!("hostile-key-{}", case.case))
            .await?;
        if !warned.is_empty() {
            failures.push(format!(
                "{}: events about a good key: {warned:?}",
                case.case
            ));
        }
    }
    ensure!(
        failures.is_empty(),
        "key cases that did not end as expected:\n{}",
        failures.join("\n")
    );

    // Each distinct key is loaded once: its own, and the good cases that are not copies of it.
    let distinct = 1 + loaded.iter().filter(|(c, _)| c.key != "active").count();
    let keys = controller
        .metrics()
        .await?
        .sum("sealed_secrets_controller_keys", &[]);
    ensure!(
        keys == distinct as f64,
        "{keys} keys loaded, expected {distinct}"
    );

    // The controller's own key still works, and it made no key of its own because of these.
    env.create(&env.seal(
        &cert,
        "after-the-keys",
        &[("pw", "HOSTILE-KEY-after")],
        Scope::Strict,
    ))
    .await?;
    await_synced(&api, "after-the-keys", "True").await?;
    let (code, _) = controller.get("/healthz").await?;
    ensure!(code == 200, "/healthz {code}");
    let generated = env
        .key_secrets()
        .await?
        .into_iter()
        .filter(|s| !s.name_any().starts_with("hostile-key-") && s.name_any() != active.name_any())
        .count();
    ensure!(generated == 0, "{generated} new keys in {ns}");
    assert_no_plaintext(&controller, &env, &["HOSTILE-KEY-v", "HOSTILE-KEY-after"]).await?;
    Ok(())
}
