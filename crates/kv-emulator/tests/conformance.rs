//! Conformance of `keyseal-kv-emulator` to the wire contract of the Azure Key Vault secrets data
//! plane and of the Microsoft Entra ID token endpoint (the shared spec `KEYVAULT.md`, drawn from
//! recordings of real traffic). Every test starts the real binary with its own configuration
//! and talks raw HTTPS to it.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers specific to the wire contract

/// The attributes the service writes, and which of them are integers.
const ATTRIBUTES: [&str; 7] = [
    "enabled",
    "nbf",
    "exp",
    "created",
    "updated",
    "recoveryLevel",
    "recoverableDays",
];

/// The service's message for an unknown secret.
fn not_found_message(name: &str) -> String {
    format!(
        "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
    )
}

/// The challenge every 401 carries.
fn challenge(kv: &Emulator) -> String {
    format!(
        r#"Bearer authorization="{}/{TENANT}", resource="https://vault.azure.net""#,
        kv.url
    )
}

/// Checks `attributes`: only the service's fields, times as integers, the retention of
/// `days` days.
fn check_attributes(a: &Value, days: u32) {
    let obj = a.as_object().unwrap_or_else(|| panic!("attributes: {a}"));
    for k in obj.keys() {
        assert!(ATTRIBUTES.contains(&k.as_str()), "unexpected attribute {k}");
    }
    assert!(a["enabled"].is_boolean(), "{a}");
    for t in ["created", "updated"] {
        let v = a[t]
            .as_i64()
            .unwrap_or_else(|| panic!("{t} is an integer: {a}"));
        assert!((now() - 600..=now() + 600).contains(&v), "{t} is now: {a}");
    }
    for t in ["nbf", "exp"] {
        if let Some(v) = a.get(t) {
            assert!(v.is_i64(), "{t} is an integer: {a}");
        }
    }
    let level = if days == 90 {
        "Recoverable+Purgeable"
    } else {
        "CustomizedRecoverable+Purgeable"
    };
    assert_eq!(a["recoveryLevel"], level, "{a}");
    assert_eq!(a["recoverableDays"], days, "{a}");
}

/// Checks a secret bundle of `name`: `id` is `<vault>/secrets/<name>/<version>`, attributes as
/// the service writes them; `value` present or not. Returns the version.
fn check_bundle(kv: &Emulator, b: &Value, name: &str, value: Option<&str>, days: u32) -> String {
    let id = b["id"].as_str().unwrap_or_else(|| panic!("id in {b}"));
    let prefix = format!("{}/secrets/{name}/", kv.url);
    assert!(id.starts_with(&prefix), "{id} is {prefix}<version>");
    let version = &id[prefix.len()..];
    assert!(is_version_id(version), "{version} is 32 lowercase hex");
    check_attributes(&b["attributes"], days);
    match value {
        Some(v) => assert_eq!(b["value"], v, "{b}"),
        None => assert!(b.get("value").is_none(), "no value in {b}"),
    }
    version.to_owned()
}

/// Checks a list item (no version in the id, never a value).
fn check_item(kv: &Emulator, item: &Value, days: u32) -> String {
    assert!(
        item.get("value").is_none(),
        "a list item has no value: {item}"
    );
    let id = item["id"].as_str().expect("id");
    let name = id
        .strip_prefix(&format!("{}/secrets/", kv.url))
        .unwrap_or_else(|| panic!("{id} is a secret's base id"));
    assert!(!name.contains('/'), "a list item's id has no version: {id}");
    check_attributes(&item["attributes"], days);
    name.to_owned()
}

/// The version at the end of an id.
fn version_of(id: &Value) -> String {
    id.as_str()
        .expect("id")
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

/// The claims of a token (not verified).
fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn writer(kv: &Emulator) -> String {
    kv.token(&WRITER).await
}

// ---------------------------------------------------------------------------------------------
// The 401 challenge and token checks

#[tokio::test]
async fn request_without_token_gets_the_challenge() {
    let kv = Emulator::start().await;
    for (method, path) in [
        (Method::GET, "/secrets/db/"),
        (Method::GET, "/secrets"),
        (Method::DELETE, "/secrets/db"),
        (Method::GET, "/deletedsecrets/db"),
    ] {
        let reply = kv.kv(method.clone(), path, None, None).await;
        let message = reply.kv_error(401, "Unauthorized", None);
        assert_eq!(
            message, "AKV10000: Request is missing a Bearer, PoP, or MTLS_POP token.",
            "{method} {path}"
        );
        assert_eq!(
            reply.header("www-authenticate"),
            Some(challenge(&kv).as_str())
        );
    }
}

#[tokio::test]
async fn vault_and_token_endpoint_speak_only_https() {
    let kv = Emulator::start().await;
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for url in [
        format!("http://{}/secrets?api-version={API_VERSION}", kv.host()),
        format!("http://{}/{TENANT}/oauth2/v2.0/token", kv.host()),
    ] {
        assert!(
            plain.get(&url).send().await.is_err(),
            "no plain-HTTP answer from {url}"
        );
    }
    // A client that does not trust the test CA cannot connect either.
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(kv.vault_url("/secrets"))
            .send()
            .await
            .is_err()
    );
    // The admin API is plain HTTP on loopback.
    assert!(kv.admin.starts_with("http://127.0.0.1:"), "{}", kv.admin);
}

#[tokio::test]
async fn put_with_empty_body_and_no_token_gets_the_challenge() {
    // A Go client's first request: PUT with Content-Length: 0, no token.
    let kv = Emulator::start().await;
    let reply = kv
        .kv_bytes(
            Method::PUT,
            &kv.vault_url("/secrets/first"),
            None,
            Some(Vec::new()),
        )
        .await;
    let message = reply.kv_error(401, "Unauthorized", None);
    assert!(message.starts_with("AKV10000: "), "{message}");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(challenge(&kv).as_str())
    );
    // Then resent with a token, it goes through.
    let token = writer(&kv).await;
    kv.put(&token, "first", &json!({"value": "v"})).await.ok();
}

#[tokio::test]
async fn garbage_and_foreign_tokens_are_refused_with_the_challenge() {
    let kv = Emulator::start().await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = keyseal_kv_emulator::jwt::Signer::load_or_create(other_dir.path()).unwrap();
    let good = claims(&kv.token(&WRITER).await);
    let foreign = other.sign(&good);
    // The real token with its signature replaced by the foreign key's.
    let mut parts: Vec<String> = kv
        .token(&WRITER)
        .await
        .split('.')
        .map(str::to_owned)
        .collect();
    parts[2] = foreign.split('.').nth(2).unwrap().to_owned();
    let tampered = parts.join(".");
    for bad in [
        "garbage",
        "a.b.c",
        "e30.e30.AAAA",
        foreign.as_str(),
        tampered.as_str(),
    ] {
        let reply = kv.get(bad, "/secrets/db").await;
        reply.kv_error(401, "Unauthorized", None);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(challenge(&kv).as_str()),
            "token {bad}"
        );
    }
    // Another scheme is no bearer token at all.
    let reply = send(
        kv.client
            .get(kv.vault_url("/secrets/db"))
            .header("authorization", "Basic d3JpdGVyOnNlY3JldA=="),
    )
    .await;
    let message = reply.kv_error(401, "Unauthorized", None);
    assert!(message.starts_with("AKV10000: "), "{message}");
    assert!(reply.header("www-authenticate").is_some());
}

#[tokio::test]
async fn forged_token_with_the_right_claims_works_and_each_wrong_claim_is_refused() {
    let kv = Emulator::start().await;
    let token = writer(&kv).await;
    kv.set(&token, "db", "v").await;

    // The control: signed with the emulator's key, every claim right.
    let ok = kv.forge(&WRITER, |_| {});
    kv.get(&ok, "/secrets/db").await.ok();

    let wrong_audience = kv.forge(&WRITER, |c| {
        c["aud"] = json!("https://management.azure.com")
    });
    let reply = kv.get(&wrong_audience, "/secrets/db").await;
    let message = reply.kv_error(401, "Unauthorized", None);
    assert!(
        message.starts_with("AKV10022: Invalid audience."),
        "{message}"
    );
    assert!(
        message.contains("https://management.azure.com"),
        "{message}"
    );
    assert_eq!(
        reply.header("www-authenticate"),
        Some(challenge(&kv).as_str())
    );

    let expired = kv.forge(&WRITER, |c| {
        c["iat"] = json!(now() - 7200);
        c["nbf"] = json!(now() - 7200);
        c["exp"] = json!(now() - 3600);
    });
    let reply = kv.get(&expired, "/secrets/db").await;
    let message = reply.kv_error(401, "Unauthorized", None);
    assert!(message.contains("TokenExpired"), "{message}");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(challenge(&kv).as_str())
    );

    let other_tenant = kv.forge(&WRITER, |c| {
        c["tid"] = json!("00000000-1111-2222-3333-444444444444");
        c["iss"] = json!(format!(
            "{}/00000000-1111-2222-3333-444444444444/v2.0",
            kv.url
        ));
    });
    let reply = kv.get(&other_tenant, "/secrets/db").await;
    reply.kv_error(401, "Unauthorized", None);
    assert!(reply.header("www-authenticate").is_some());

    let not_yet = kv.forge(&WRITER, |c| c["nbf"] = json!(now() + 3600));
    kv.get(&not_yet, "/secrets/db")
        .await
        .kv_error(401, "Unauthorized", None);

    let unknown_app = kv.forge(&WRITER, |c| {
        c["appid"] = json!("99999999-0000-4000-8000-000000000009");
    });
    kv.get(&unknown_app, "/secrets/db")
        .await
        .kv_error(401, "Unauthorized", None);
}

// ---------------------------------------------------------------------------------------------
// Entra ID

#[tokio::test]
async fn token_endpoint_issues_vault_tokens() {
    let kv = Emulator::start_with(|c| c["token_lifetime_secs"] = json!(4000)).await;
    let reply = kv
        .token_request(TENANT, &Emulator::credentials(&WRITER))
        .await;
    let body = reply.ok();
    assert_fields(
        &body,
        &["token_type", "expires_in", "ext_expires_in", "access_token"],
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["expires_in"], 4000,
        "an integer, the configured lifetime"
    );
    assert!(body["ext_expires_in"].is_u64());
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "https://vault.azure.net");
    assert_eq!(c["appid"], WRITER.client_id);
    assert_eq!(c["tid"], TENANT);
    assert_eq!(c["iss"], format!("{}/{TENANT}/v2.0", kv.url));
    let exp = c["exp"].as_i64().unwrap();
    assert!((now() + 3000..=now() + 5000).contains(&exp), "{c}");

    // A space-separated scope list that includes the vault's is accepted too.
    let reply = kv
        .token_request(
            TENANT,
            &[
                ("client_id", READER.client_id),
                ("client_secret", READER.secret),
                ("grant_type", "client_credentials"),
                ("scope", "https://vault.azure.net/.default offline_access"),
            ],
        )
        .await;
    reply.ok();
}

#[tokio::test]
async fn token_endpoint_refuses_an_unknown_tenant() {
    let kv = Emulator::start().await;
    let reply = kv
        .token_request(
            "11111111-2222-3333-4444-555555555555",
            &Emulator::credentials(&WRITER),
        )
        .await;
    let d = reply.entra_error(400, "invalid_request", 90002);
    assert!(d.contains("11111111-2222-3333-4444-555555555555"), "{d}");
}

#[tokio::test]
async fn token_endpoint_refuses_a_wrong_client_secret() {
    let kv = Emulator::start().await;
    let reply = kv
        .token_request(
            TENANT,
            &[
                ("client_id", WRITER.client_id),
                ("client_secret", READER.secret),
                ("grant_type", "client_credentials"),
                ("scope", VAULT_SCOPE),
            ],
        )
        .await;
    let d = reply.entra_error(401, "invalid_client", 7000215);
    assert!(!d.contains(READER.secret), "the secret is not echoed: {d}");
    // No secret at all.
    let reply = kv
        .token_request(
            TENANT,
            &[
                ("client_id", WRITER.client_id),
                ("grant_type", "client_credentials"),
                ("scope", VAULT_SCOPE),
            ],
        )
        .await;
    reply.entra_error(401, "invalid_client", 7000218);
}

#[tokio::test]
async fn token_endpoint_refuses_an_unknown_client() {
    let kv = Emulator::start().await;
    let reply = kv
        .token_request(
            TENANT,
            &[
                ("client_id", "77777777-0000-4000-8000-000000000007"),
                ("client_secret", WRITER.secret),
                ("grant_type", "client_credentials"),
                ("scope", VAULT_SCOPE),
            ],
        )
        .await;
    let d = reply.entra_error(400, "unauthorized_client", 700016);
    assert!(d.contains("77777777-0000-4000-8000-000000000007"), "{d}");
}

#[tokio::test]
async fn token_endpoint_refuses_other_grant_types() {
    let kv = Emulator::start().await;
    let mut form = Emulator::credentials(&WRITER);
    form[2] = ("grant_type", "password");
    kv.token_request(TENANT, &form)
        .await
        .entra_error(400, "unsupported_grant_type", 70003);
    form.remove(2);
    kv.token_request(TENANT, &form)
        .await
        .entra_error(400, "invalid_request", 900144);
}

#[tokio::test]
async fn token_endpoint_refuses_scopes_other_than_the_vault() {
    let kv = Emulator::start().await;
    let mut form = Emulator::credentials(&WRITER);
    form[3] = ("scope", "https://graph.microsoft.com/.default");
    kv.token_request(TENANT, &form)
        .await
        .entra_error(400, "invalid_scope", 70011);
    form.remove(3);
    kv.token_request(TENANT, &form)
        .await
        .entra_error(400, "invalid_request", 900144);
}

#[tokio::test]
async fn openid_discovery_and_jwks_verify_issued_tokens() {
    let kv = Emulator::start().await;
    let doc = send(kv.client.get(format!(
        "{}/{TENANT}/v2.0/.well-known/openid-configuration",
        kv.url
    )))
    .await
    .ok();
    assert_eq!(
        doc["token_endpoint"],
        format!("{}/{TENANT}/oauth2/v2.0/token", kv.url)
    );
    assert_eq!(doc["issuer"], format!("{}/{TENANT}/v2.0", kv.url));
    let jwks_uri = doc["jwks_uri"].as_str().expect("jwks_uri");
    assert!(jwks_uri.starts_with(&format!("{}/", kv.url)), "{jwks_uri}");

    let jwks = send(kv.client.get(jwks_uri)).await.ok();
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty());

    // Verify a token independently: RS256 with the published key its kid names.
    let token = writer(&kv).await;
    let mut parts = token.split('.');
    let (h, c, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    let key = keys
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's key is published");
    assert_eq!(key["kty"], "RSA");
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
    let signature = URL_SAFE_NO_PAD.decode(s).unwrap();
    let public = aws_lc_rs::rsa::PublicKeyComponents { n: &n, e: &e };
    public
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{h}.{c}").as_bytes(),
            &signature,
        )
        .expect("the token verifies against the JWKS");
    assert!(
        public
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                format!("{h}.{c}x").as_bytes(),
                &signature,
            )
            .is_err()
    );
    assert_eq!(claims(&token)["iss"], doc["issuer"]);

    // Another tenant has no discovery document.
    let reply = send(kv.client.get(format!(
        "{}/00000000-0000-0000-0000-000000000000/v2.0/.well-known/openid-configuration",
        kv.url
    )))
    .await;
    assert_eq!(reply.status, 400);
}

// ---------------------------------------------------------------------------------------------
// Roles

#[tokio::test]
async fn stranger_is_forbidden_by_rbac() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.set(&w, "db", "v").await;
    let s = kv.token(&STRANGER).await;
    let replies = [
        kv.get(&s, "/secrets/db").await,
        kv.put(&s, "db", &json!({"value": "x"})).await,
        kv.get(&s, "/secrets").await,
        kv.delete(&s, "/secrets/db").await,
        kv.get(&s, "/deletedsecrets").await,
        kv.post(&s, "/secrets/db/backup", None).await,
    ];
    for reply in replies {
        let message = reply.kv_error(403, "Forbidden", Some("ForbiddenByRbac"));
        assert!(
            message.starts_with("Caller is not authorized to perform action on resource."),
            "{message}"
        );
        assert!(
            message.contains(&format!("appid={}", STRANGER.client_id)),
            "{message}"
        );
    }
    // Nothing changed.
    assert_eq!(kv.get(&w, "/secrets/db").await.ok()["value"], "v");
}

#[tokio::test]
async fn reader_reads_inside_its_pattern_only() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.set(&w, "app-db", "inside").await;
    kv.set(&w, "other", "outside").await;
    let r = kv.token(&READER).await;

    assert_eq!(kv.get(&r, "/secrets/app-db/").await.ok()["value"], "inside");
    assert_eq!(
        kv.get(&r, "/secrets/APP-DB").await.ok()["value"],
        "inside",
        "the pattern compares names case-insensitively"
    );
    let forbidden = [
        kv.get(&r, "/secrets/other").await,
        kv.put(&r, "app-db", &json!({"value": "x"})).await,
        kv.delete(&r, "/secrets/app-db").await,
        // Listing needs the whole vault.
        kv.get(&r, "/secrets").await,
        kv.get(&r, "/secrets/app-db/versions").await,
        kv.get(&r, "/deletedsecrets").await,
    ];
    for reply in forbidden {
        reply.kv_error(403, "Forbidden", Some("ForbiddenByRbac"));
    }
    // A name outside the pattern that does not exist is still forbidden, not not-found.
    kv.get(&r, "/secrets/nothing-here")
        .await
        .kv_error(403, "Forbidden", Some("ForbiddenByRbac"));
    // Inside the pattern, an unknown name is not found.
    kv.get(&r, "/secrets/app-missing")
        .await
        .kv_error(404, "SecretNotFound", None);
}

// ---------------------------------------------------------------------------------------------
// Set and get

#[tokio::test]
async fn set_returns_the_new_bundle_with_only_the_fields_set() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;

    let minimal = kv.set(&w, "plain", "value-1").await;
    assert_fields(&minimal, &["value", "id", "attributes"]);
    check_bundle(&kv, &minimal, "plain", Some("value-1"), 90);
    assert_fields(
        &minimal["attributes"],
        &[
            "enabled",
            "created",
            "updated",
            "recoveryLevel",
            "recoverableDays",
        ],
    );
    assert_eq!(minimal["attributes"]["enabled"], true);
    assert_eq!(
        minimal["attributes"]["created"],
        minimal["attributes"]["updated"]
    );

    let nbf = now() + 86_400 * 365;
    let full = kv
        .put(
            &w,
            "full",
            &json!({
                "value": "value-2",
                "contentType": "text/plain",
                "tags": {"team": "platform", "env": "prod"},
                "attributes": {"enabled": true, "nbf": nbf, "exp": nbf + 86_400},
            }),
        )
        .await
        .ok();
    assert_fields(&full, &["value", "contentType", "id", "attributes", "tags"]);
    check_bundle(&kv, &full, "full", Some("value-2"), 90);
    assert_eq!(full["contentType"], "text/plain");
    assert_eq!(full["tags"], json!({"team": "platform", "env": "prod"}));
    assert_eq!(full["attributes"]["nbf"], nbf);
    assert_eq!(full["attributes"]["exp"], nbf + 86_400);

    // The service's field order on the wire.
    let raw = kv
        .put(
            &w,
            "ordered",
            &json!({"tags": {"a": "b"}, "contentType": "c", "value": "v"}),
        )
        .await;
    let text = String::from_utf8(raw.body.clone()).unwrap();
    let at = |f: &str| {
        text.find(&format!("\"{f}\""))
            .unwrap_or_else(|| panic!("{f} in {text}"))
    };
    assert!(at("value") < at("contentType"), "{text}");
    assert!(at("contentType") < at("id"), "{text}");
    assert!(at("id") < at("attributes"), "{text}");
    assert!(at("attributes") < at("tags"), "{text}");
    assert!(at("enabled") < at("created") && at("updated") < at("recoveryLevel"));
}

#[tokio::test]
async fn read_only_attributes_in_a_set_are_ignored() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let b = kv
        .put(
            &w,
            "ro",
            &json!({
                "value": "v",
                "attributes": {"created": 1, "updated": 2, "recoveryLevel": "Purgeable", "recoverableDays": 1},
            }),
        )
        .await
        .ok();
    check_bundle(&kv, &b, "ro", Some("v"), 90);
}

#[tokio::test]
async fn each_set_adds_a_version_that_becomes_current() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let mut versions = Vec::new();
    for i in 0..3 {
        let b = kv.set(&w, "rotating", &format!("value-{i}")).await;
        versions.push(check_bundle(
            &kv,
            &b,
            "rotating",
            Some(&format!("value-{i}")),
            90,
        ));
        let latest = kv.get(&w, "/secrets/rotating/").await.ok();
        assert_eq!(latest["id"], b["id"], "the new version is current");
        assert_eq!(latest["value"], format!("value-{i}"));
    }
    let mut unique = versions.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "distinct versions: {versions:?}");
    for (i, v) in versions.iter().enumerate() {
        let b = kv.get(&w, &format!("/secrets/rotating/{v}")).await.ok();
        let value = format!("value-{i}");
        assert_eq!(check_bundle(&kv, &b, "rotating", Some(&value), 90), *v);
    }
}

#[tokio::test]
async fn get_latest_with_and_without_trailing_slash() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let set = kv.set(&w, "slash", "v").await;
    let with = kv.get(&w, "/secrets/slash/").await.ok();
    let without = kv.get(&w, "/secrets/slash").await.ok();
    assert_eq!(with, set);
    assert_eq!(without, set);
    assert_fields(&with, &["value", "id", "attributes"]);
}

#[tokio::test]
async fn unknown_secret_is_secret_not_found() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    for path in ["/secrets/nope/", "/secrets/nope"] {
        let message = kv.get(&w, path).await.kv_error(404, "SecretNotFound", None);
        assert_eq!(message, not_found_message("nope"));
    }
    let message = kv
        .delete(&w, "/secrets/nope")
        .await
        .kv_error(404, "SecretNotFound", None);
    assert_eq!(message, not_found_message("nope"));
    kv.get(&w, "/secrets/nope/versions")
        .await
        .kv_error(404, "SecretNotFound", None);
    kv.post(&w, "/secrets/nope/backup", None)
        .await
        .kv_error(404, "SecretNotFound", None);
}

#[tokio::test]
async fn unknown_version_is_not_found() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.set(&w, "versioned", "v").await;
    let missing = "0123456789abcdef0123456789abcdef";
    let message = kv
        .get(&w, &format!("/secrets/versioned/{missing}"))
        .await
        .kv_error(404, "SecretNotFound", None);
    assert_eq!(message, not_found_message(&format!("versioned/{missing}")));
    kv.patch(
        &w,
        &format!("/secrets/versioned/{missing}"),
        &json!({"contentType": "x"}),
    )
    .await
    .kv_error(404, "SecretNotFound", None);
}

#[tokio::test]
async fn names_are_case_insensitive() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let first = kv.set(&w, "Abc", "one").await;
    let got = kv.get(&w, "/secrets/abc").await.ok();
    assert_eq!(got["value"], "one");
    assert_eq!(version_of(&got["id"]), version_of(&first["id"]));
    assert!(
        got["id"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(first["id"].as_str().unwrap())
    );
    // Another spelling is another version of the same secret.
    kv.set(&w, "ABC", "two").await;
    assert_eq!(kv.get(&w, "/secrets/aBc/").await.ok()["value"], "two");
    let (items, _) = kv.list_all(&w, "/secrets/abc/versions").await;
    assert_eq!(items.len(), 2);
    let (secrets, _) = kv.list_all(&w, "/secrets").await;
    assert_eq!(secrets.len(), 1, "one secret: {secrets:?}");
}

#[tokio::test]
async fn update_changes_only_the_fields_sent() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let set = kv
        .put(
            &w,
            "props",
            &json!({"value": "secret-value", "contentType": "text/plain", "tags": {"a": "1"}}),
        )
        .await
        .ok();
    let version = version_of(&set["id"]);

    // Only exp, through the versioned path (as Go does).
    let exp = now() + 86_400 * 30;
    let b = kv
        .patch(
            &w,
            &format!("/secrets/props/{version}"),
            &json!({"attributes": {"exp": exp}}),
        )
        .await
        .ok();
    assert_fields(&b, &["contentType", "id", "attributes", "tags"]);
    check_bundle(&kv, &b, "props", None, 90);
    assert_eq!(b["id"], set["id"]);
    assert_eq!(b["contentType"], "text/plain");
    assert_eq!(b["tags"], json!({"a": "1"}));
    assert_eq!(b["attributes"]["exp"], exp);
    assert_eq!(b["attributes"]["enabled"], true);
    assert_eq!(b["attributes"]["created"], set["attributes"]["created"]);

    // Only the content type and tags, through the unversioned path with a trailing slash (as
    // Rust does), with read-only attributes the 0.x SDK sent back: they are ignored.
    let b = kv
        .patch(
            &w,
            "/secrets/props/",
            &json!({
                "contentType": "application/json",
                "tags": {"b": "2"},
                "attributes": {"created": 1, "updated": 1, "recoveryLevel": "Purgeable", "recoverableDays": 1, "enabled": true},
            }),
        )
        .await
        .ok();
    check_bundle(&kv, &b, "props", None, 90);
    assert_eq!(b["contentType"], "application/json");
    assert_eq!(b["tags"], json!({"b": "2"}), "tags are replaced whole");
    assert_eq!(b["attributes"]["exp"], exp, "exp stays");
    assert_eq!(b["attributes"]["created"], set["attributes"]["created"]);

    // An empty PATCH changes nothing.
    let b = kv.patch(&w, "/secrets/props", &json!({})).await.ok();
    assert_eq!(b["contentType"], "application/json");

    // The value never changes.
    let got = kv.get(&w, "/secrets/props").await.ok();
    assert_eq!(got["value"], "secret-value");
    assert_eq!(got["id"], set["id"], "PATCH makes no new version");

    // Updating an older version leaves the current one alone.
    let newer = kv.set(&w, "props", "second").await;
    kv.patch(
        &w,
        &format!("/secrets/props/{version}"),
        &json!({"contentType": "old"}),
    )
    .await
    .ok();
    let current = kv.get(&w, "/secrets/props").await.ok();
    assert_eq!(current["id"], newer["id"]);
    assert!(current.get("contentType").is_none(), "{current}");
    let old = kv.get(&w, &format!("/secrets/props/{version}")).await.ok();
    assert_eq!(old["contentType"], "old");

    kv.patch(&w, "/secrets/unknown", &json!({"contentType": "x"}))
        .await
        .kv_error(404, "SecretNotFound", None);
}

#[tokio::test]
async fn disabled_secret_cannot_be_read() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let set = kv
        .put(
            &w,
            "off",
            &json!({"value": "hidden", "attributes": {"enabled": false}}),
        )
        .await
        .ok();
    assert_eq!(
        set["value"], "hidden",
        "the set reply still carries the value"
    );
    assert_eq!(set["attributes"]["enabled"], false);
    for path in [
        "/secrets/off/".to_owned(),
        format!("/secrets/off/{}", version_of(&set["id"])),
    ] {
        let message = kv
            .get(&w, &path)
            .await
            .kv_error(403, "Forbidden", Some("SecretDisabled"));
        assert_eq!(
            message,
            "Operation get is not allowed on a disabled secret."
        );
    }
    // It is listed, disabled.
    let (items, _) = kv.list_all(&w, "/secrets").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["attributes"]["enabled"], false);
    // Enabled again, it reads.
    kv.patch(
        &w,
        "/secrets/off/",
        &json!({"attributes": {"enabled": true}}),
    )
    .await
    .ok();
    assert_eq!(kv.get(&w, "/secrets/off").await.ok()["value"], "hidden");
}

#[tokio::test]
async fn secrets_outside_nbf_and_exp_are_still_readable() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let future = now() + 86_400 * 365 * 5;
    kv.put(
        &w,
        "later",
        &json!({"value": "soon", "attributes": {"nbf": future}}),
    )
    .await
    .ok();
    let got = kv.get(&w, "/secrets/later/").await.ok();
    assert_eq!(got["value"], "soon");
    assert_eq!(got["attributes"]["nbf"], future);

    let past = now() - 86_400;
    kv.put(
        &w,
        "expired",
        &json!({"value": "old", "attributes": {"exp": past}}),
    )
    .await
    .ok();
    let got = kv.get(&w, "/secrets/expired/").await.ok();
    assert_eq!(got["value"], "old");
    assert_eq!(got["attributes"]["exp"], past);
}

#[tokio::test]
async fn out_content_type_on_a_plain_secret_is_bad_parameter() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.put(
        &w,
        "plain",
        &json!({"value": "v", "contentType": "text/plain"}),
    )
    .await
    .ok();
    kv.get(
        &w,
        "/secrets/plain/?outContentType=application%2Fx-pem-file",
    )
    .await
    .kv_error(400, "BadParameter", None);
    // Without it, the same secret reads.
    kv.get(&w, "/secrets/plain/").await.ok();
}

#[tokio::test]
async fn ids_name_the_vault_as_the_client_called_it() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let port = kv.host().rsplit(':').next().unwrap().to_owned();
    let base = format!("https://localhost:{port}");
    for client in [kv.client.clone(), kv.client_with(|b| b.http1_only())] {
        let reply = send(
            client
                .put(format!("{base}/secrets/named?api-version={API_VERSION}"))
                .bearer_auth(&w)
                .header("content-type", "application/json")
                .body(r#"{"value":"v"}"#),
        )
        .await
        .ok();
        let id = reply["id"].as_str().unwrap();
        assert!(id.starts_with(&format!("{base}/secrets/named/")), "{id}");
        let page = send(
            client
                .get(format!(
                    "{base}/secrets?api-version={API_VERSION}&maxresults=1"
                ))
                .bearer_auth(&w),
        )
        .await
        .ok();
        assert_eq!(page["value"][0]["id"], format!("{base}/secrets/named"));
    }
}

// ---------------------------------------------------------------------------------------------
// Lists and paging

#[tokio::test]
async fn list_secrets_follows_next_link_in_name_order() {
    let kv = Emulator::start_with(|c| c["page_size"] = json!(2)).await;
    let w = writer(&kv).await;
    let names = ["p2", "p10", "p1", "p20", "q", "p3", "a-1"];
    for n in names {
        kv.put(
            &w,
            n,
            &json!({"value": format!("value-of-{n}"), "contentType": "ct", "tags": {"n": n}}),
        )
        .await
        .ok();
    }
    let (items, sizes) = kv.list_all(&w, "/secrets").await;
    assert_eq!(sizes, [2, 2, 2, 1], "the configured page size");
    let listed: Vec<String> = items.iter().map(|i| check_item(&kv, i, 90)).collect();
    let mut expected: Vec<&str> = names.to_vec();
    expected.sort_unstable();
    assert_eq!(listed, expected, "every name once, as plain strings sort");
    for item in &items {
        assert_fields(item, &["contentType", "id", "attributes", "tags"]);
        assert_eq!(item["contentType"], "ct");
    }

    // The first page's nextLink: the vault's /secrets with api-version and a skip token.
    let page = kv.get(&w, "/secrets").await.ok();
    let next = page["nextLink"].as_str().expect("a nextLink");
    assert!(next.starts_with(&format!("{}/secrets?", kv.url)), "{next}");
    assert!(next.contains("skiptoken="), "{next}");
    // Rust sends the skip token percent-encoded, api-version last.
    let (_, query) = next.split_once('?').unwrap();
    let token = query
        .split('&')
        .find_map(|p| p.strip_prefix("$skiptoken="))
        .expect("a $skiptoken");
    let rust_style = format!(
        "{}/secrets?%24skiptoken={token}&api-version={API_VERSION}",
        kv.url
    );
    let second = kv
        .kv_bytes(Method::GET, &rust_style, Some(&w), None)
        .await
        .ok();
    assert_eq!(second["value"].as_array().unwrap().len(), 2);
    assert_eq!(second["value"][0]["id"], items[2]["id"]);
}

#[tokio::test]
async fn list_maxresults_sets_the_page_size() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    for i in 0..7 {
        kv.set(&w, &format!("s{i}"), "v").await;
    }
    let (items, sizes) = kv.list_all(&w, "/secrets?maxresults=3").await;
    assert_eq!(sizes, [3, 3, 1], "nextLink keeps the page size");
    assert_eq!(items.len(), 7);
    let (_, sizes) = kv.list_all(&w, "/secrets?maxresults=25").await;
    assert_eq!(sizes, [7]);
    let (_, sizes) = kv.list_all(&w, "/secrets?maxresults=7").await;
    assert_eq!(sizes, [7]);
    // The default page is 25.
    let page = kv.get(&w, "/secrets").await.ok();
    assert_eq!(page["value"].as_array().unwrap().len(), 7);
    assert_eq!(page["nextLink"], Value::Null);
}

#[tokio::test]
async fn list_versions_pages_in_version_order_without_values() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let b = kv
            .put(
                &w,
                "many",
                &json!({"value": format!("v{i}"), "tags": {"i": i.to_string()}}),
            )
            .await
            .ok();
        created.push(b["id"].as_str().unwrap().to_owned());
    }
    kv.set(&w, "unrelated", "x").await;
    let (items, sizes) = kv.list_all(&w, "/secrets/many/versions?maxresults=2").await;
    assert_eq!(sizes, [2, 2, 1]);
    let ids: Vec<String> = items
        .iter()
        .map(|i| {
            assert_fields(i, &["id", "attributes", "tags"]);
            check_bundle(&kv, i, "many", None, 90);
            i["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut sorted = created.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "every version once, in version-id order");
}

#[tokio::test]
async fn maxresults_outside_1_to_25_is_bad_parameter() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.set(&w, "x", "v").await;
    for path in ["/secrets", "/secrets/x/versions", "/deletedsecrets"] {
        for bad in ["0", "26", "-1", "abc", "1000"] {
            kv.get(&w, &format!("{path}?maxresults={bad}"))
                .await
                .kv_error(400, "BadParameter", None);
        }
        for good in ["1", "25"] {
            kv.get(&w, &format!("{path}?maxresults={good}")).await.ok();
        }
    }
}

#[tokio::test]
async fn empty_vault_lists_an_empty_page() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    for path in ["/secrets", "/deletedsecrets"] {
        let page = kv.get(&w, path).await.ok();
        assert_eq!(page, json!({"value": [], "nextLink": null}));
    }
}

// ---------------------------------------------------------------------------------------------
// Soft delete

#[tokio::test]
async fn delete_returns_the_deleted_bundle_with_recovery_dates() {
    let kv = Emulator::start_with(|c| c["recoverable_days"] = json!(7)).await;
    let w = writer(&kv).await;
    let set = kv
        .put(
            &w,
            "gone",
            &json!({"value": "v", "contentType": "big secret", "tags": {"tag": "value"}}),
        )
        .await
        .ok();
    check_bundle(&kv, &set, "gone", Some("v"), 7);
    let d = kv.delete(&w, "/secrets/gone").await.ok();
    assert_fields(
        &d,
        &[
            "recoveryId",
            "deletedDate",
            "scheduledPurgeDate",
            "contentType",
            "id",
            "attributes",
            "tags",
        ],
    );
    assert_eq!(
        check_bundle(&kv, &d, "gone", None, 7),
        version_of(&set["id"])
    );
    assert_eq!(d["id"], set["id"], "the current version's id");
    assert_eq!(d["recoveryId"], format!("{}/deletedsecrets/gone", kv.url));
    let deleted = d["deletedDate"].as_i64().expect("an integer");
    assert!((now() - 600..=now() + 600).contains(&deleted));
    assert_eq!(d["scheduledPurgeDate"], deleted + 7 * 86_400);
    assert_eq!(
        d["attributes"]["recoveryLevel"],
        "CustomizedRecoverable+Purgeable"
    );
    assert_eq!(d["attributes"]["recoverableDays"], 7);

    // All versions are gone from the secrets.
    let message = kv
        .get(&w, "/secrets/gone/")
        .await
        .kv_error(404, "SecretNotFound", None);
    assert_eq!(message, not_found_message("gone"));
    kv.get(&w, &format!("/secrets/gone/{}", version_of(&set["id"])))
        .await
        .kv_error(404, "SecretNotFound", None);
    let (items, _) = kv.list_all(&w, "/secrets").await;
    assert!(items.is_empty());
    // Deleting again: not found.
    kv.delete(&w, "/secrets/gone")
        .await
        .kv_error(404, "SecretNotFound", None);
}

#[tokio::test]
async fn default_retention_is_90_days() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.set(&w, "long", "v").await;
    let d = kv.delete(&w, "/secrets/long").await.ok();
    assert_eq!(d["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
    assert_eq!(d["attributes"]["recoverableDays"], 90);
    assert_eq!(
        d["scheduledPurgeDate"].as_i64().unwrap(),
        d["deletedDate"].as_i64().unwrap() + 90 * 86_400
    );
}

#[tokio::test]
async fn deleted_secret_can_be_read_and_its_name_not_reused() {
    let kv = Emulator::start_with(|c| c["recoverable_days"] = json!(7)).await;
    let w = writer(&kv).await;
    kv.set(&w, "held", "v").await;
    let d = kv.delete(&w, "/secrets/held").await.ok();
    let got = kv.get(&w, "/deletedsecrets/held").await.ok();
    assert_eq!(got, d, "GET /deletedsecrets returns the deleted bundle");
    assert!(got.get("value").is_none());

    for name in ["held", "HELD"] {
        let message = kv.put(&w, name, &json!({"value": "again"})).await.kv_error(
            409,
            "Conflict",
            Some("ObjectIsDeletedButRecoverable"),
        );
        assert_eq!(
            message,
            format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
            )
        );
    }
    // Properties of a deleted secret cannot be changed either.
    kv.patch(&w, "/secrets/held", &json!({"contentType": "x"}))
        .await
        .kv_error(404, "SecretNotFound", None);
}

#[tokio::test]
async fn list_deleted_secrets_pages_without_values() {
    let kv = Emulator::start_with(|c| c["recoverable_days"] = json!(7)).await;
    let w = writer(&kv).await;
    for n in ["d3", "d1", "d2", "kept"] {
        kv.set(&w, n, "v").await;
    }
    for n in ["d3", "d1", "d2"] {
        kv.delete(&w, &format!("/secrets/{n}")).await.ok();
    }
    let (items, sizes) = kv.list_all(&w, "/deletedsecrets?maxresults=2").await;
    assert_eq!(sizes, [2, 1]);
    let names: Vec<String> = items
        .iter()
        .map(|i| {
            assert_fields(
                i,
                &[
                    "recoveryId",
                    "deletedDate",
                    "scheduledPurgeDate",
                    "id",
                    "attributes",
                ],
            );
            let name = check_item(&kv, i, 7);
            assert_eq!(i["recoveryId"], format!("{}/deletedsecrets/{name}", kv.url));
            assert_eq!(
                i["scheduledPurgeDate"].as_i64().unwrap(),
                i["deletedDate"].as_i64().unwrap() + 7 * 86_400
            );
            name
        })
        .collect();
    assert_eq!(names, ["d1", "d2", "d3"]);
    let (live, _) = kv.list_all(&w, "/secrets").await;
    assert_eq!(live.len(), 1, "deleted secrets are not listed: {live:?}");
}

#[tokio::test]
async fn recover_brings_the_secret_back() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let first = kv.set(&w, "back", "one").await;
    let second = kv.set(&w, "back", "two").await;
    kv.delete(&w, "/secrets/back").await.ok();
    let r = kv.post(&w, "/deletedsecrets/back/recover", None).await.ok();
    assert_fields(&r, &["id", "attributes"]);
    check_bundle(&kv, &r, "back", None, 90);
    assert_eq!(r["id"], second["id"]);

    let got = kv.get(&w, "/secrets/back/").await.ok();
    assert_eq!(got["value"], "two");
    let old = kv
        .get(&w, &format!("/secrets/back/{}", version_of(&first["id"])))
        .await
        .ok();
    assert_eq!(old["value"], "one", "every version is back");
    let message = kv
        .get(&w, "/deletedsecrets/back")
        .await
        .kv_error(404, "SecretNotFound", None);
    assert_eq!(message, "Deleted Secret not found: back");
    // Recovering again: nothing to recover.
    kv.post(&w, "/deletedsecrets/back/recover", None)
        .await
        .kv_error(404, "SecretNotFound", None);
}

#[tokio::test]
async fn purge_answers_204_with_no_body_and_frees_the_name() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.set(&w, "burn", "one").await;
    kv.set(&w, "burn", "two").await;
    kv.delete(&w, "/secrets/burn").await.ok();
    let reply = kv.delete(&w, "/deletedsecrets/burn").await;
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty(), "no body");
    assert!(reply.header("content-type").is_none());

    let message = kv
        .get(&w, "/deletedsecrets/burn")
        .await
        .kv_error(404, "SecretNotFound", None);
    assert_eq!(message, "Deleted Secret not found: burn");
    kv.post(&w, "/deletedsecrets/burn/recover", None)
        .await
        .kv_error(404, "SecretNotFound", None);
    // The name is free: a new secret with one version.
    let b = kv.set(&w, "burn", "three").await;
    check_bundle(&kv, &b, "burn", Some("three"), 90);
    let (versions, _) = kv.list_all(&w, "/secrets/burn/versions").await;
    assert_eq!(versions.len(), 1);
}

#[tokio::test]
async fn purge_of_an_unknown_or_live_secret_is_not_found() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let message =
        kv.delete(&w, "/deletedsecrets/never")
            .await
            .kv_error(404, "SecretNotFound", None);
    assert_eq!(message, "Deleted Secret not found: never");
    kv.set(&w, "alive", "v").await;
    kv.delete(&w, "/deletedsecrets/alive")
        .await
        .kv_error(404, "SecretNotFound", None);
    let message = kv
        .get(&w, "/deletedsecrets/alive")
        .await
        .kv_error(404, "SecretNotFound", None);
    assert_eq!(message, "Deleted Secret not found: alive");
    assert_eq!(kv.get(&w, "/secrets/alive").await.ok()["value"], "v");
}

#[tokio::test]
async fn deletion_in_progress_hides_the_deleted_secret_and_blocks_purge() {
    const DELAY_MS: u64 = 2000;
    let kv = Emulator::start_with(|c| c["deletion_delay_ms"] = json!(DELAY_MS)).await;
    let w = writer(&kv).await;
    kv.set(&w, "slow", "v").await;
    let deleted_at = std::time::Instant::now();
    kv.delete(&w, "/secrets/slow").await.ok();

    // Just after the delete, as the service answers while it deletes asynchronously.
    let get_deleted = kv.get(&w, "/deletedsecrets/slow").await;
    let purge = kv.delete(&w, "/deletedsecrets/slow").await;
    let list = kv.get(&w, "/deletedsecrets").await;
    let reuse = kv.put(&w, "slow", &json!({"value": "again"})).await;
    let live = kv.get(&w, "/secrets/slow").await;
    // (On a machine so slow that the deletion completed meanwhile, these prove nothing.)
    if deleted_at.elapsed() < Duration::from_millis(DELAY_MS) {
        let message = get_deleted.kv_error(404, "SecretNotFound", None);
        assert_eq!(message, "Deleted Secret not found: slow");
        let message = purge.kv_error(409, "Conflict", Some("ObjectIsBeingDeleted"));
        assert_eq!(message, "Secret is currently being deleted.");
        assert_eq!(list.ok()["value"], json!([]));
        assert_eq!(reuse.json(409)["error"]["code"], "Conflict");
    }
    live.kv_error(404, "SecretNotFound", None);

    // Seconds later it is there, and the purge goes through.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = kv.get(&w, "/deletedsecrets/slow").await;
        if reply.status == 200 {
            reply.ok();
            break;
        }
        reply.kv_error(404, "SecretNotFound", None);
        assert!(std::time::Instant::now() < deadline, "never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (items, _) = kv.list_all(&w, "/deletedsecrets").await;
    assert_eq!(items.len(), 1);
    assert_eq!(kv.delete(&w, "/deletedsecrets/slow").await.status, 204);
}

// ---------------------------------------------------------------------------------------------
// Backup and restore

#[tokio::test]
async fn backup_and_restore_conflict_until_purged() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let first = kv.set(&w, "saved", "one").await;
    let second = kv
        .put(
            &w,
            "saved",
            &json!({"value": "two", "contentType": "text/plain"}),
        )
        .await
        .ok();
    let backup = kv.post(&w, "/secrets/saved/backup", None).await.ok();
    assert_fields(&backup, &["value"]);
    let blob = backup["value"].as_str().unwrap();
    assert!(
        !blob.is_empty()
            && blob
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url without padding: {blob}"
    );
    let restore = json!({"value": blob});

    // The name is held by a live secret, then by a deleted one.
    for _ in ["live", "deleted"] {
        let message = kv
            .post(&w, "/secrets/restore", Some(&restore))
            .await
            .kv_error(409, "Conflict", None);
        let expected = format!(
            "There was a conflict restoring the secret '{}'.",
            second["id"].as_str().unwrap()
        );
        assert!(message.starts_with(&expected), "{message}");
        if kv.get(&w, "/secrets/saved").await.status == 200 {
            kv.delete(&w, "/secrets/saved").await.ok();
        }
    }
    assert_eq!(kv.delete(&w, "/deletedsecrets/saved").await.status, 204);

    let restored = kv.post(&w, "/secrets/restore", Some(&restore)).await.ok();
    assert_fields(&restored, &["contentType", "id", "attributes"]);
    check_bundle(&kv, &restored, "saved", None, 90);
    assert_eq!(restored["id"], second["id"], "the original id");
    assert_eq!(kv.get(&w, "/secrets/saved").await.ok()["value"], "two");
    let old = kv
        .get(&w, &format!("/secrets/saved/{}", version_of(&first["id"])))
        .await
        .ok();
    assert_eq!(old["value"], "one", "all versions are restored");
}

#[tokio::test]
async fn restore_of_a_corrupt_blob_is_bad_parameter() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.set(&w, "s", "v").await;
    let good = kv.post(&w, "/secrets/s/backup", None).await.ok()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let truncated = &good[..good.len() / 2];
    let mut flipped = good.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let garbage = URL_SAFE_NO_PAD.encode(b"not a backup at all");
    for bad in [
        json!({"value": "!!!not base64!!!"}),
        json!({"value": garbage}),
        json!({"value": truncated}),
        json!({"value": flipped}),
        json!({"value": ""}),
        json!({"value": 12}),
        json!({}),
    ] {
        kv.post(&w, "/secrets/restore", Some(&bad))
            .await
            .kv_error(400, "BadParameter", None);
    }
    // The secret is untouched.
    assert_eq!(kv.get(&w, "/secrets/s").await.ok()["value"], "v");
}

// ---------------------------------------------------------------------------------------------
// Limits and malformed requests

#[tokio::test]
async fn invalid_names_are_bad_parameter() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let long = "n".repeat(128);
    for bad in ["a_b", "a.b", "a%20b", "%C3%A4", long.as_str()] {
        let message =
            kv.put(&w, bad, &json!({"value": "v"}))
                .await
                .kv_error(400, "BadParameter", None);
        assert_eq!(
            message,
            format!("The request URI contains an invalid name: {bad}")
        );
        kv.get(&w, &format!("/secrets/{bad}"))
            .await
            .kv_error(400, "BadParameter", None);
        kv.delete(&w, &format!("/secrets/{bad}"))
            .await
            .kv_error(400, "BadParameter", None);
    }
    for good in ["a", "A-9-z", &"x".repeat(127), "0"] {
        kv.put(&w, good, &json!({"value": "v"})).await.ok();
    }
}

#[tokio::test]
async fn put_without_a_name_is_method_not_allowed() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let message = kv
        .kv(
            Method::PUT,
            "/secrets/",
            Some(&w),
            Some(&json!({"value": "v"})),
        )
        .await
        .kv_error(405, "MethodNotAllowed", None);
    assert_eq!(message, "HTTP PUT not allowed");
}

#[tokio::test]
async fn value_is_limited_to_25_kib() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let max = "v".repeat(25 * 1024);
    let b = kv.set(&w, "big", &max).await;
    assert_eq!(b["value"].as_str().unwrap().len(), 25 * 1024);
    assert_eq!(
        kv.get(&w, "/secrets/big").await.ok()["value"]
            .as_str()
            .unwrap()
            .len(),
        25 * 1024
    );
    let over = "v".repeat(25 * 1024 + 1);
    kv.put(&w, "big", &json!({"value": over}))
        .await
        .kv_error(400, "BadParameter", None);
    let (versions, _) = kv.list_all(&w, "/secrets/big/versions").await;
    assert_eq!(versions.len(), 1, "the refused value made no version");
}

#[tokio::test]
async fn content_type_and_tag_limits() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let tags = |n: usize, len: usize| -> Value {
        (0..n)
            .map(|i| (format!("{i:0>len$}"), json!("v")))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let ok = [
        json!({"value": "v", "contentType": "c".repeat(255)}),
        json!({"value": "v", "tags": tags(15, 8)}),
        json!({"value": "v", "tags": {"k".repeat(512): "v".repeat(512)}}),
    ];
    for body in &ok {
        kv.put(&w, "limits", body).await.ok();
    }
    let too_much = [
        json!({"value": "v", "contentType": "c".repeat(256)}),
        json!({"value": "v", "tags": tags(16, 8)}),
        json!({"value": "v", "tags": {"k".repeat(513): "v"}}),
        json!({"value": "v", "tags": {"k": "v".repeat(513)}}),
    ];
    for body in &too_much {
        kv.put(&w, "limits", body)
            .await
            .kv_error(400, "BadParameter", None);
        // The same limits hold for an update.
        let mut patch = body.clone();
        patch.as_object_mut().unwrap().remove("value");
        kv.patch(&w, "/secrets/limits", &patch)
            .await
            .kv_error(400, "BadParameter", None);
    }
    let (versions, _) = kv.list_all(&w, "/secrets/limits/versions").await;
    assert_eq!(versions.len(), ok.len());
}

#[tokio::test]
async fn malformed_bodies_are_bad_parameter() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let url = kv.vault_url("/secrets/body");
    for bad in [
        &b"{\"value\": "[..],
        b"not json",
        b"",
        b"[]",
        b"null",
        b"{}",
        b"{\"contentType\": \"text/plain\"}",
        b"{\"value\": 5}",
        b"{\"value\": null}",
        b"{\"value\": [\"a\"]}",
        b"{\"value\": \"v\", \"tags\": [1]}",
        b"{\"value\": \"v\", \"attributes\": {\"nbf\": \"tomorrow\"}}",
        b"{\"value\": \"\xff\xfe\"}",
    ] {
        kv.kv_bytes(Method::PUT, &url, Some(&w), Some(bad.to_vec()))
            .await
            .kv_error(400, "BadParameter", None);
    }
    kv.kv_bytes(
        Method::PATCH,
        &url,
        Some(&w),
        Some(b"{\"attributes\": 3".to_vec()),
    )
    .await
    .kv_error(400, "BadParameter", None);
    // Still answering.
    kv.set(&w, "body", "fine").await;
}

#[tokio::test]
async fn huge_body_is_refused_and_the_server_keeps_answering() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    let huge = format!("{{\"value\":\"{}\"}}", "x".repeat(8 << 20));
    for client in [kv.client.clone(), kv.client_with(|b| b.http1_only())] {
        let reply = send(
            client
                .put(kv.vault_url("/secrets/huge"))
                .bearer_auth(&w)
                .header("content-type", "application/json")
                .body(huge.clone()),
        )
        .await;
        assert!(
            (400..500).contains(&reply.status),
            "a client error, not {}",
            reply.status
        );
        // A Key Vault error body (which code the service uses here is unconfirmed).
        let body = reply.json(reply.status);
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    kv.get(&w, "/secrets/huge")
        .await
        .kv_error(404, "SecretNotFound", None);
    kv.set(&w, "small", "fine").await;
}

#[tokio::test]
async fn missing_api_version_is_bad_parameter() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.set(&w, "x", "v").await;
    for url in [
        format!("{}/secrets/x", kv.url),
        format!("{}/secrets/x?api-version=", kv.url),
        format!("{}/secrets", kv.url),
    ] {
        kv.kv_bytes(Method::GET, &url, Some(&w), None)
            .await
            .kv_error(400, "BadParameter", None);
    }
}

// ---------------------------------------------------------------------------------------------
// Durability

#[tokio::test]
async fn secrets_versions_deleted_secrets_and_tokens_survive_a_restart() {
    let mut kv = Emulator::start_with(|c| c["recoverable_days"] = json!(7)).await;
    let w = writer(&kv).await;
    let v1 = kv.set(&w, "keep", "one").await;
    let v2 = kv
        .put(
            &w,
            "keep",
            &json!({"value": "two", "tags": {"t": "1"}, "attributes": {"enabled": true, "exp": now() + 86_400}}),
        )
        .await
        .ok();
    kv.set(&w, "trash", "bin").await;
    let deleted = kv.delete(&w, "/secrets/trash").await.ok();
    let ca = kv.ca_pem.clone();

    kv.restart().await;
    assert_eq!(kv.ca_pem, ca, "the same test CA");

    // The token issued before the restart still works.
    let got = kv.get(&w, "/secrets/keep/").await.ok();
    assert_eq!(got, v2);
    let old = kv
        .get(&w, &format!("/secrets/keep/{}", version_of(&v1["id"])))
        .await
        .ok();
    assert_eq!(old, v1);
    let (versions, _) = kv.list_all(&w, "/secrets/keep/versions").await;
    assert_eq!(versions.len(), 2);
    assert_eq!(kv.get(&w, "/deletedsecrets/trash").await.ok(), deleted);
    kv.post(&w, "/deletedsecrets/trash/recover", None)
        .await
        .ok();
    assert_eq!(kv.get(&w, "/secrets/trash").await.ok()["value"], "bin");
    // And new tokens too.
    let fresh = writer(&kv).await;
    kv.get(&fresh, "/secrets/keep").await.ok();
}

// ---------------------------------------------------------------------------------------------
// Faults and the admin API

#[tokio::test]
async fn throttle_fault_answers_429_with_retry_after() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.set(&w, "x", "v").await;
    let set = kv
        .fault(&json!({"mode": "throttle", "retry_after_secs": 3}))
        .await;
    assert_eq!(set.status, 200);
    for reply in [
        kv.get(&w, "/secrets/x").await,
        kv.put(&w, "x", &json!({"value": "w"})).await,
        kv.get(&w, "/secrets").await,
        // Even without a token: the throttle answers first.
        kv.kv(Method::GET, "/secrets/x", None, None).await,
    ] {
        reply.kv_error(429, "Throttled", None);
        assert_eq!(reply.header("retry-after"), Some("3"));
    }
    // The token endpoint is not affected.
    writer(&kv).await;
    assert_eq!(kv.fault(&json!({"mode": "none"})).await.status, 200);
    assert_eq!(
        kv.get(&w, "/secrets/x").await.ok()["value"],
        "v",
        "no write went through"
    );
}

#[tokio::test]
async fn unavailable_fault_answers_503() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.fault(&json!({"mode": "unavailable"})).await;
    let reply = kv.get(&w, "/secrets/x").await;
    let body = reply.json(503);
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(reply.header("retry-after").is_none());
    kv.fault(&json!({"mode": "unavailable", "retry_after_secs": 7}))
        .await;
    let reply = kv.delete(&w, "/secrets/x").await;
    reply.json(503);
    assert_eq!(reply.header("retry-after"), Some("7"));
    writer(&kv).await;
    kv.fault(&json!({"mode": "none"})).await;
    kv.get(&w, "/secrets/x")
        .await
        .kv_error(404, "SecretNotFound", None);
}

#[tokio::test]
async fn timeout_fault_holds_requests_without_an_answer() {
    let kv = Emulator::start().await;
    let w = writer(&kv).await;
    kv.set(&w, "x", "v").await;
    kv.fault(&json!({"mode": "timeout"})).await;
    let impatient = kv.client_with(|b| b.timeout(Duration::from_millis(700)));
    let err = impatient
        .get(kv.vault_url("/secrets/x"))
        .bearer_auth(&w)
        .send()
        .await
        .expect_err("no answer in time");
    assert!(err.is_timeout(), "{err}");
    // Tokens still come.
    writer(&kv).await;
    kv.fault(&json!({"mode": "none"})).await;
    let reply = send(impatient.get(kv.vault_url("/secrets/x")).bearer_auth(&w)).await;
    assert_eq!(reply.ok()["value"], "v");
}

#[tokio::test]
async fn token_endpoint_faults_only_when_asked() {
    let kv = Emulator::start().await;
    kv.fault(&json!({"mode": "unavailable", "token_endpoint": true, "retry_after_secs": 2}))
        .await;
    let reply = kv
        .token_request(TENANT, &Emulator::credentials(&WRITER))
        .await;
    reply.json(503);
    assert_eq!(reply.header("retry-after"), Some("2"));
    kv.fault(&json!({"mode": "throttle", "token_endpoint": true, "retry_after_secs": 4}))
        .await;
    let reply = kv
        .token_request(TENANT, &Emulator::credentials(&WRITER))
        .await;
    reply.json(429);
    assert_eq!(reply.header("retry-after"), Some("4"));
    kv.fault(&json!({"mode": "timeout", "token_endpoint": true}))
        .await;
    let impatient = kv.client_with(|b| b.timeout(Duration::from_millis(700)));
    let err = impatient
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", kv.url))
        .body(serde_urlencoded::to_string(Emulator::credentials(&WRITER)).unwrap())
        .send()
        .await
        .expect_err("no answer in time");
    assert!(err.is_timeout(), "{err}");
    kv.fault(&json!({"mode": "none"})).await;
    writer(&kv).await;
}

#[tokio::test]
async fn admin_fault_switch_reads_back_and_refuses_nonsense() {
    let kv = Emulator::start().await;
    let get = || async {
        send(reqwest::Client::new().get(format!("{}/fault", kv.admin)))
            .await
            .ok()
    };
    assert_eq!(get().await["mode"], "none");
    for bad in [
        json!({"mode": "explode"}),
        json!({"mode": "throttle", "retry_after_secs": "soon"}),
        json!({"mode": "throttle", "surprise": 1}),
        json!({}),
    ] {
        assert_eq!(kv.fault(&bad).await.status, 400, "{bad}");
    }
    assert_eq!(
        get().await["mode"],
        "none",
        "a refused fault changes nothing"
    );
    kv.fault(&json!({"mode": "throttle", "retry_after_secs": 1}))
        .await;
    let now = get().await;
    assert_eq!(now["mode"], "throttle");
    assert_eq!(now["retry_after_secs"], 1);
}

#[tokio::test]
async fn admin_counts_requests_per_operation() {
    let kv = Emulator::start().await;
    assert_eq!(kv.requests().await, json!({}));
    let w = writer(&kv).await;
    kv.set(&w, "a", "1").await;
    kv.set(&w, "a", "2").await;
    kv.get(&w, "/secrets/a").await.ok();
    kv.get(&w, "/secrets").await.ok();
    kv.get(&w, "/secrets/a/versions").await.ok();
    kv.patch(&w, "/secrets/a", &json!({"contentType": "c"}))
        .await
        .ok();
    kv.post(&w, "/secrets/a/backup", None).await.ok();
    kv.delete(&w, "/secrets/a").await.ok();
    kv.get(&w, "/deletedsecrets/a").await.ok();
    kv.get(&w, "/deletedsecrets").await.ok();
    kv.post(&w, "/deletedsecrets/a/recover", None).await.ok();
    kv.delete(&w, "/secrets/a").await.ok();
    assert_eq!(kv.delete(&w, "/deletedsecrets/a").await.status, 204);
    let mut bad = Emulator::credentials(&WRITER);
    bad[1] = ("client_secret", "wrong");
    kv.token_request(TENANT, &bad).await;
    kv.fault(&json!({"mode": "unavailable"})).await;
    kv.get(&w, "/secrets/a").await;
    kv.fault(&json!({"mode": "none"})).await;
    assert_eq!(
        kv.requests().await,
        json!({
            "token": 1, "token_refused": 1, "set": 2, "get": 1, "list": 1,
            "list_versions": 1, "update": 1, "backup": 1, "delete": 2,
            "get_deleted": 1, "list_deleted": 1, "recover": 1, "purge": 1, "fault": 1,
        })
    );
}
