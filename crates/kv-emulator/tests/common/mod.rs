//! Shared helpers of the conformance tests: start the real `keyseal-kv-emulator` binary with its
//! own configuration in a temporary directory, get tokens from its token endpoint, and send raw
//! HTTPS requests (the emulator's generated test CA is the only root trusted).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// The tenant every test's emulator serves.
pub const TENANT: &str = "3f9d2c1b-7a6e-4d5c-8b4a-1e2f3a4b5c6d";
/// The `api-version` the Rust SDK 1.0.x sends.
pub const API_VERSION: &str = "2025-07-01";
/// The Key Vault scope clients ask tokens for.
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// The `Content-Type` of every JSON reply.
pub const JSON_UTF8: &str = "application/json; charset=utf-8";

/// An identity of the test tenant.
#[derive(Clone, Copy, Debug)]
pub struct Who {
    /// Its name in the configuration.
    pub name: &'static str,
    /// Application (client) id.
    pub client_id: &'static str,
    /// Client secret.
    pub secret: &'static str,
}

/// Read, write and delete on the whole vault.
pub const WRITER: Who = Who {
    name: "writer",
    client_id: "0a1b2c3d-0000-4000-8000-000000000001",
    secret: "writer-secret-Xq7~p2",
};
/// Read on the secrets named `app-*` only.
pub const READER: Who = Who {
    name: "reader",
    client_id: "0a1b2c3d-0000-4000-8000-000000000002",
    secret: "reader-secret-Lm4~k9",
};
/// No role at all.
pub const STRANGER: Who = Who {
    name: "stranger",
    client_id: "0a1b2c3d-0000-4000-8000-000000000003",
    secret: "stranger-secret-Zr8~w1",
};

/// The configuration every test starts from (the caller may change it before the start).
pub fn base_config(data_dir: &Path) -> Value {
    json!({
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "data_dir": data_dir,
        "tenant": TENANT,
        "identities": [
            {
                "name": WRITER.name,
                "client_id": WRITER.client_id,
                "client_secret": WRITER.secret,
                "roles": [{"scope": "*", "permissions": ["read", "write", "delete"]}],
            },
            {
                "name": READER.name,
                "client_id": READER.client_id,
                "client_secret": READER.secret,
                "roles": [{"scope": "app-*", "permissions": ["read"]}],
            },
            {
                "name": STRANGER.name,
                "client_id": STRANGER.client_id,
                "client_secret": STRANGER.secret,
            },
        ],
    })
}

/// A reply, read whole.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, after checking the status and the service's `Content-Type`.
    pub fn json(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some(JSON_UTF8),
            "content type of a {} reply",
            self.status
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A 200 reply's JSON body.
    pub fn ok(&self) -> Value {
        self.json(200)
    }

    /// Checks a Key Vault error reply `{"error":{"code","message","innererror"?}}` and returns
    /// its message.
    pub fn kv_error(&self, status: u16, code: &str, inner: Option<&str>) -> String {
        let body = self.json(status);
        assert_fields(&body, &["error"]);
        let error = &body["error"];
        if inner.is_some() {
            assert_fields(error, &["code", "message", "innererror"]);
        } else {
            assert_fields(error, &["code", "message"]);
        }
        assert_eq!(error["code"], code, "error code: {body}");
        match inner {
            Some(inner) => assert_eq!(error["innererror"], json!({ "code": inner }), "{body}"),
            None => assert!(error.get("innererror").is_none()),
        }
        error["message"]
            .as_str()
            .expect("message is a string")
            .to_owned()
    }

    /// Checks an Entra error reply and returns its `error_description`.
    pub fn entra_error(&self, status: u16, error: &str, code: u64) -> String {
        let body = self.json(status);
        assert_eq!(body["error"], error, "{body}");
        assert_eq!(body["error_codes"], json!([code]), "{body}");
        let description = body["error_description"].as_str().expect("a description");
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        for field in ["timestamp", "trace_id", "correlation_id"] {
            assert!(body[field].is_string(), "{field} in {body}");
        }
        description.to_owned()
    }
}

/// The field names of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// Checks that `v` has exactly the fields `expected` (in any order).
pub fn assert_fields(v: &Value, expected: &[&str]) {
    let mut e = expected.to_vec();
    e.sort_unstable();
    assert_eq!(keys(v), e, "fields of {v}");
}

/// Whether `s` is 32 lowercase hex digits.
pub fn is_version_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A running emulator, killed when dropped.
pub struct Emulator {
    child: Option<tokio::process::Child>,
    dir: tempfile::TempDir,
    config: Value,
    config_path: PathBuf,
    /// `https://127.0.0.1:<port>`: the vault and the authority host.
    pub url: String,
    /// `http://127.0.0.1:<port>`: the admin API.
    pub admin: String,
    /// A client that trusts only the emulator's test CA.
    pub client: reqwest::Client,
    /// The test CA (PEM).
    pub ca_pem: Vec<u8>,
}

impl Emulator {
    /// Starts an emulator with the base configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts an emulator with the base configuration as `tweak` changes it.
    pub async fn start_with(tweak: impl FnOnce(&mut Value)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kv-conformance-")
            .tempdir()
            .unwrap();
        let mut config = base_config(&dir.path().join("data"));
        tweak(&mut config);
        let config_path = dir.path().join("config.json");
        let mut me = Emulator {
            child: None,
            dir,
            config,
            config_path,
            url: String::new(),
            admin: String::new(),
            client: reqwest::Client::new(),
            ca_pem: Vec::new(),
        };
        me.launch().await;
        me
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.config["data_dir"].as_str().unwrap())
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> &str {
        self.url.trim_start_matches("https://")
    }

    /// What the emulator logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    async fn launch(&mut self) {
        let data = self.data_dir();
        std::fs::create_dir_all(&data).unwrap();
        for f in ["address", "admin-address"] {
            let _ = std::fs::remove_file(data.join(f));
        }
        std::fs::write(
            &self.config_path,
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("emulator.log"))
            .unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyseal-kv-emulator"))
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting keyseal-kv-emulator");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (address, admin) = loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the emulator exited with {status}:\n{}", self.logs());
            }
            if let (Ok(a), Ok(b)) = (
                std::fs::read_to_string(data.join("address")),
                std::fs::read_to_string(data.join("admin-address")),
            ) {
                break (a, b);
            }
            assert!(
                Instant::now() < deadline,
                "the emulator did not start:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.child = Some(child);
        self.url = format!("https://{}", address.trim());
        self.admin = format!("http://{}", admin.trim());
        self.ca_pem = std::fs::read(data.join("tls/ca.crt")).unwrap();
        self.client = self.client_with(|b| b);
    }

    /// A new client trusting only the test CA, as `tweak` configures it further.
    pub fn client_with(
        &self,
        tweak: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).unwrap();
        tweak(
            reqwest::Client::builder()
                .tls_certs_only([ca])
                .no_proxy()
                .timeout(Duration::from_secs(30)),
        )
        .build()
        .unwrap()
    }

    /// Stops the emulator with SIGTERM and waits for it to exit (successfully).
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("a pid");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("the emulator exits on SIGTERM")
            .unwrap();
        assert!(status.success(), "exit status {status}:\n{}", self.logs());
    }

    /// Starts the emulator again with the same configuration, on the same addresses.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop().await;
        }
        self.config["listen"] = json!(self.host());
        self.config["admin_listen"] = json!(self.admin.trim_start_matches("http://"));
        let (url, admin) = (self.url.clone(), self.admin.clone());
        self.launch().await;
        assert_eq!((&self.url, &self.admin), (&url, &admin), "same addresses");
    }

    // --- Entra

    /// `POST /<tenant>/oauth2/v2.0/token` with `form`.
    pub async fn token_request(&self, tenant: &str, form: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(form).unwrap();
        send(
            self.client
                .post(format!("{}/{tenant}/oauth2/v2.0/token", self.url))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    /// The client-credentials form of `who`.
    pub fn credentials(who: &Who) -> Vec<(&'static str, &'static str)> {
        vec![
            ("client_id", who.client_id),
            ("client_secret", who.secret),
            ("grant_type", "client_credentials"),
            ("scope", VAULT_SCOPE),
        ]
    }

    /// An access token for `who`.
    pub async fn token(&self, who: &Who) -> String {
        let reply = self.token_request(TENANT, &Self::credentials(who)).await;
        let body = reply.ok();
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// A token signed with the emulator's own key: the claims it issues, changed by `tweak`.
    pub fn forge(&self, who: &Who, tweak: impl FnOnce(&mut Value)) -> String {
        let signer = keyseal_kv_emulator::jwt::Signer::load_or_create(&self.data_dir()).unwrap();
        let t = now();
        let mut claims = json!({
            "aud": "https://vault.azure.net",
            "iss": format!("{}/{TENANT}/v2.0", self.url),
            "iat": t,
            "nbf": t,
            "exp": t + 3600,
            "appid": who.client_id,
            "azp": who.client_id,
            "idtyp": "app",
            "oid": "00000000-0000-0000-0000-00000000beef",
            "sub": "00000000-0000-0000-0000-00000000beef",
            "tid": TENANT,
            "ver": "2.0",
        });
        tweak(&mut claims);
        signer.sign(&claims)
    }

    // --- the vault

    /// `path` with `?api-version=…` (or `&api-version=…`) added.
    pub fn vault_url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={API_VERSION}", self.url)
    }

    /// A vault request with a JSON body (or none) and `token` (or none).
    pub async fn kv(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        self.kv_bytes(method, &self.vault_url(path), token, body)
            .await
    }

    /// A vault request to a full URL with raw body bytes.
    pub async fn kv_bytes(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, url)
            .header("accept", "application/json");
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.header("content-type", "application/json").body(b);
        }
        send(request).await
    }

    /// GET `path`.
    pub async fn get(&self, token: &str, path: &str) -> Reply {
        self.kv(Method::GET, path, Some(token), None).await
    }

    /// PUT `/secrets/<name>` with `body`.
    pub async fn put(&self, token: &str, name: &str, body: &Value) -> Reply {
        self.kv(
            Method::PUT,
            &format!("/secrets/{name}"),
            Some(token),
            Some(body),
        )
        .await
    }

    /// Sets `name` to `value`; the reply's bundle.
    pub async fn set(&self, token: &str, name: &str, value: &str) -> Value {
        self.put(token, name, &json!({ "value": value })).await.ok()
    }

    /// PATCH `path` with `body`.
    pub async fn patch(&self, token: &str, path: &str, body: &Value) -> Reply {
        self.kv(Method::PATCH, path, Some(token), Some(body)).await
    }

    /// DELETE `path`.
    pub async fn delete(&self, token: &str, path: &str) -> Reply {
        self.kv(Method::DELETE, path, Some(token), None).await
    }

    /// POST `path` with `body` (or none).
    pub async fn post(&self, token: &str, path: &str, body: Option<&Value>) -> Reply {
        self.kv(Method::POST, path, Some(token), body).await
    }

    /// Follows a list from `path` through its `nextLink`s; the items and the page sizes.
    pub async fn list_all(&self, token: &str, path: &str) -> (Vec<Value>, Vec<usize>) {
        let mut url = self.vault_url(path);
        let (mut items, mut sizes) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            let page = self
                .kv_bytes(Method::GET, &url, Some(token), None)
                .await
                .ok();
            assert_fields(&page, &["value", "nextLink"]);
            let value = page["value"].as_array().expect("value is a list");
            sizes.push(value.len());
            items.extend(value.iter().cloned());
            match &page["nextLink"] {
                Value::Null => return (items, sizes),
                Value::String(next) => {
                    assert!(
                        next.starts_with(&format!("{}/", self.url)),
                        "nextLink names the vault: {next}"
                    );
                    assert!(
                        next.contains(&format!("api-version={API_VERSION}")),
                        "nextLink keeps api-version: {next}"
                    );
                    url = next.clone();
                }
                other => panic!("nextLink is {other}"),
            }
        }
        panic!("more than 100 pages");
    }

    // --- admin

    /// `PUT /fault`.
    pub async fn fault(&self, fault: &Value) -> Reply {
        send(
            reqwest::Client::new()
                .put(format!("{}/fault", self.admin))
                .body(fault.to_string()),
        )
        .await
    }

    /// `GET /requests`.
    pub async fn requests(&self) -> Value {
        send(reqwest::Client::new().get(format!("{}/requests", self.admin)))
            .await
            .ok()
    }
}

/// Sends `request` and reads the whole reply.
pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("a reply");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("the body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}
