//! The Key Vault secrets data plane (REST, `api-version` 7.x / 2025-07-01): set, get, update,
//! delete with soft delete, deleted secrets (get, list, recover, purge), backup and restore,
//! lists with paging. Requests are checked in the service's order: fault switch, token,
//! `api-version`, route and name, role, then the operation.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::app::{App, Caller, KvError, now, now_ms};
use crate::config::Permission;
use crate::jwt::random_hex32;
use crate::store::{Deleted, Entry, State as VaultState, Version};

/// Largest secret value (the service's limit: 25 KB).
pub const MAX_VALUE_BYTES: usize = 25 * 1024;
/// Longest content type.
pub const MAX_CONTENT_TYPE: usize = 255;
/// Most tags on a secret.
pub const MAX_TAGS: usize = 15;
/// Longest tag name or value.
pub const MAX_TAG_LEN: usize = 512;
/// Longest secret name.
pub const MAX_NAME: usize = 127;

type Result<T, E = KvError> = std::result::Result<T, E>;

/// A request body larger than [`crate::BODY_LIMIT`].
#[derive(Debug)]
pub struct BodyTooLarge;

/// Bodies over [`crate::BODY_LIMIT`] are still read to the end, up to this many bytes, and
/// thrown away, so that the client gets the error reply rather than a connection reset while
/// it is still sending; past this the connection is dropped.
const DRAIN_LIMIT: usize = 64 << 20;

/// Reads a request body, keeping at most [`crate::BODY_LIMIT`] bytes of it.
async fn read_body(mut body: Body) -> std::result::Result<Bytes, BodyTooLarge> {
    use hyper::body::Body as _;
    let mut kept = Vec::new();
    let (mut seen, mut too_large) = (0usize, false);
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            // The client went away or broke the framing: nothing useful to read.
            Some(Err(_)) => return Err(BodyTooLarge),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                seen = seen.saturating_add(data.len());
                if seen > DRAIN_LIMIT {
                    return Err(BodyTooLarge);
                }
                if seen > crate::BODY_LIMIT {
                    too_large = true;
                    kept = Vec::new();
                } else {
                    kept.extend_from_slice(&data);
                }
            }
        }
    }
    if too_large {
        Err(BodyTooLarge)
    } else {
        Ok(Bytes::from(kept))
    }
}

/// Every vault request.
pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = read_body(body).await;
    if let Some(fault) = app.fault_response(false).await {
        app.count("fault");
        return fault;
    }
    match route(&app, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// The parsed query string.
struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn route(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: std::result::Result<Bytes, BodyTooLarge>,
) -> Result<Response> {
    let caller = app.authenticate(headers)?;
    let query = Query(serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default());
    match query.get("api-version") {
        None | Some("") => {
            return Err(KvError::bad_parameter(
                "The api-version query parameter is missing.",
            ));
        }
        Some(_) => {}
    }
    // HTTP/2 names the host in `:authority` (the URI), HTTP/1.1 in `Host`.
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .map_or_else(|| app.authority.clone(), |h| format!("https://{h}"));
    let v = Vault {
        app,
        caller: &caller,
        query: &query,
        base: host,
    };
    let path = uri.path().trim_start_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    let body = || -> Result<Bytes> {
        body.map_err(|_| {
            KvError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BadParameter",
                "The request body is too large.",
            )
        })
    };
    use Method as M;
    match (segments.as_slice(), method) {
        (["secrets"] | ["secrets", ""], &M::GET) => v.list(),
        (["secrets"] | ["secrets", ""], m) => Err(not_allowed(m)),
        (["secrets", "restore"], &M::POST) => v.restore(&body()?),
        (["secrets", name], &M::PUT) => v.set(name, &body()?),
        (["secrets", name], &M::DELETE) => v.delete(name),
        (["secrets", name] | ["secrets", name, ""], &M::GET) => v.get(name, None),
        (["secrets", name] | ["secrets", name, ""], &M::PATCH) => v.update(name, None, &body()?),
        (["secrets", name, "versions"], &M::GET) => v.versions(name),
        (["secrets", name, "backup"], &M::POST) => v.backup(name),
        (["secrets", name, version], &M::GET) => v.get(name, Some(version)),
        (["secrets", name, version], &M::PATCH) => v.update(name, Some(version), &body()?),
        (["secrets", ..], m) => Err(not_allowed(m)),
        (["deletedsecrets"] | ["deletedsecrets", ""], &M::GET) => v.list_deleted(),
        (["deletedsecrets", name], &M::GET) => v.get_deleted(name),
        (["deletedsecrets", name], &M::DELETE) => v.purge(name),
        (["deletedsecrets", name, "recover"], &M::POST) => v.recover(name),
        (["deletedsecrets", ..], m) => Err(not_allowed(m)),
        _ => Err(KvError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The requested resource was not found.",
        )),
    }
}

fn not_allowed(method: &Method) -> KvError {
    KvError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("HTTP {method} not allowed"),
    )
}

/// A secret name: 1–127 of `0-9a-zA-Z-`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KvError::bad_parameter(format!(
            "The request URI contains an invalid name: {name}"
        )))
    }
}

/// Attributes as the service writes them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Attributes {
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    created: i64,
    updated: i64,
    recovery_level: &'static str,
    recoverable_days: u32,
}

/// A secret bundle, deleted-secret bundle or list item, fields in the service's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bundle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_purge_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    id: String,
    attributes: Attributes,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a BTreeMap<String, String>>,
}

/// A list page.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<'a> {
    value: Vec<Bundle<'a>>,
    next_link: Option<String>,
}

/// Where in a list the next page starts, and its size (the service's `$skiptoken` is opaque;
/// this one carries the size too, as `nextLink` has no `maxresults`).
#[derive(Serialize, Deserialize)]
struct SkipToken {
    after: String,
    max: usize,
}

/// The request body of set and update.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretBody {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    attributes: Option<AttributesIn>,
}

/// Writable attributes; the read-only ones (`created`, `updated`, `recoveryLevel`, …) that some
/// SDKs send back are ignored.
#[derive(Deserialize)]
struct AttributesIn {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    exp: Option<i64>,
}

/// A backup blob's content.
#[derive(Serialize, Deserialize)]
struct Backup {
    kind: String,
    entry: Entry,
}

const BACKUP_KIND: &str = "keyseal-kv-emulator-secret-backup-v1";

/// One vault request's context.
struct Vault<'a> {
    app: &'a App,
    caller: &'a Caller<'a>,
    query: &'a Query,
    /// `https://<Host>`: ids and links name the vault as the client called it.
    base: String,
}

impl Vault<'_> {
    fn allow(&self, permission: Permission, action: &str, secret: Option<&str>) -> Result<()> {
        self.app.authorize(self.caller, permission, action, secret)
    }

    fn ok(&self, operation: &str, body: &impl Serialize) -> Result<Response> {
        self.app.count(operation);
        Ok(crate::app::json_response(StatusCode::OK, body))
    }

    /// Applies a change and saves it.
    fn change<T>(&self, f: impl FnOnce(&mut VaultState) -> Result<T>) -> Result<T> {
        let mut state = self.app.store.lock();
        purge_expired(&mut state);
        let out = f(&mut state)?;
        self.app.store.save(&state).map_err(|e| {
            tracing::error!(error = %e, "cannot save the vault");
            KvError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "The vault could not store the change.",
            )
        })?;
        Ok(out)
    }

    fn attributes(&self, v: &Version) -> Attributes {
        let days = self.app.config.recoverable_days;
        Attributes {
            enabled: v.enabled,
            nbf: v.nbf,
            exp: v.exp,
            created: v.created,
            updated: v.updated,
            recovery_level: if days == 90 {
                "Recoverable+Purgeable"
            } else {
                "CustomizedRecoverable+Purgeable"
            },
            recoverable_days: days,
        }
    }

    /// A bundle; `value` included or not, `version` in the id or not.
    fn bundle<'b>(
        &self,
        entry: &'b Entry,
        v: &'b Version,
        value: bool,
        versioned: bool,
    ) -> Bundle<'b> {
        let id = if versioned {
            format!("{}/secrets/{}/{}", self.base, entry.name, v.id)
        } else {
            format!("{}/secrets/{}", self.base, entry.name)
        };
        Bundle {
            recovery_id: None,
            deleted_date: None,
            scheduled_purge_date: None,
            value: value.then_some(v.value.as_str()),
            content_type: v.content_type.as_deref(),
            id,
            attributes: self.attributes(v),
            tags: v.tags.as_ref(),
        }
    }

    fn deleted_bundle<'b>(&self, d: &'b Deleted, versioned: bool) -> Bundle<'b> {
        let mut b = self.bundle(&d.entry, d.entry.current(), false, versioned);
        b.recovery_id = Some(format!("{}/deletedsecrets/{}", self.base, d.entry.name));
        b.deleted_date = Some(d.deleted_date);
        b.scheduled_purge_date = Some(d.scheduled_purge_date);
        b
    }

    fn parse_body(&self, bytes: &[u8]) -> Result<SecretBody> {
        serde_json::from_slice(bytes).map_err(|e| {
            KvError::bad_parameter(format!(
                "The request body is not valid: {} at line {} column {}.",
                match e.classify() {
                    serde_json::error::Category::Data => "a field has the wrong type",
                    _ => "invalid JSON",
                },
                e.line(),
                e.column()
            ))
        })
    }

    fn set(&self, name: &str, body: &[u8]) -> Result<Response> {
        check_name(name)?;
        self.allow(Permission::Write, "secrets/setSecret/action", Some(name))?;
        let body = self.parse_body(body)?;
        let value = body
            .value
            .ok_or_else(|| KvError::bad_parameter("Property 'value' is required."))?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::bad_parameter(format!(
                "The secret value is {} bytes long; the maximum is {MAX_VALUE_BYTES} bytes.",
                value.len()
            )));
        }
        check_properties(body.content_type.as_deref(), body.tags.as_ref())?;
        let key = name.to_ascii_lowercase();
        self.change(|state| {
            if let Some(d) = state.deleted.get(&key) {
                if d.completes_at_ms > now_ms() {
                    return Err(being_deleted());
                }
                return Err(KvError::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."),
                )
                .inner("ObjectIsDeletedButRecoverable"));
            }
            let t = now();
            let attrs = body.attributes.as_ref();
            let version = Version {
                id: random_hex32(),
                value,
                content_type: body.content_type.clone(),
                tags: body.tags.clone(),
                enabled: attrs.and_then(|a| a.enabled).unwrap_or(true),
                nbf: attrs.and_then(|a| a.nbf),
                exp: attrs.and_then(|a| a.exp),
                created: t,
                updated: t,
            };
            let entry = state.secrets.entry(key.clone()).or_insert_with(|| Entry {
                name: name.to_owned(),
                versions: Vec::new(),
                current: String::new(),
            });
            entry.current = version.id.clone();
            entry.versions.push(version);
            Ok(())
        })?;
        let state = self.app.store.lock();
        let entry = &state.secrets[&key];
        self.ok("set", &self.bundle(entry, entry.current(), true, true))
    }

    fn get(&self, name: &str, version: Option<&str>) -> Result<Response> {
        check_name(name)?;
        self.allow(Permission::Read, "secrets/getSecret/action", Some(name))?;
        let state = self.app.store.lock();
        let entry = self.live(&state, name)?;
        let v = match version {
            Some(id) => entry
                .version(id)
                .ok_or_else(|| KvError::secret_not_found(&format!("{name}/{id}")))?,
            None => entry.current(),
        };
        if !v.enabled {
            return Err(KvError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.",
            )
            .inner("SecretDisabled"));
        }
        if self.query.get("outContentType").is_some() {
            return Err(KvError::bad_parameter(
                "The 'Unsupported' to 'PEM' transformation is not supported. Only PFX to PEM transformation is supported.",
            ));
        }
        self.ok("get", &self.bundle(entry, v, true, true))
    }

    fn update(&self, name: &str, version: Option<&str>, body: &[u8]) -> Result<Response> {
        check_name(name)?;
        self.allow(Permission::Write, "secrets/update/action", Some(name))?;
        let body = self.parse_body(body)?;
        check_properties(body.content_type.as_deref(), body.tags.as_ref())?;
        let key = name.to_ascii_lowercase();
        let id = self.change(|state| {
            let entry = state
                .secrets
                .get_mut(&key)
                .ok_or_else(|| KvError::secret_not_found(name))?;
            let id = version.unwrap_or(&entry.current).to_owned();
            let v = entry
                .version_mut(&id)
                .ok_or_else(|| KvError::secret_not_found(&format!("{name}/{id}")))?;
            if let Some(ct) = body.content_type {
                v.content_type = Some(ct);
            }
            if let Some(tags) = body.tags {
                v.tags = Some(tags);
            }
            if let Some(a) = body.attributes {
                if let Some(e) = a.enabled {
                    v.enabled = e;
                }
                if a.nbf.is_some() {
                    v.nbf = a.nbf;
                }
                if a.exp.is_some() {
                    v.exp = a.exp;
                }
            }
            v.updated = now();
            Ok(v.id.clone())
        })?;
        let state = self.app.store.lock();
        let entry = &state.secrets[&key];
        let v = entry.version(&id).expect("just updated");
        self.ok("update", &self.bundle(entry, v, false, true))
    }

    fn delete(&self, name: &str) -> Result<Response> {
        check_name(name)?;
        self.allow(Permission::Delete, "secrets/delete", Some(name))?;
        let key = name.to_ascii_lowercase();
        let days = i64::from(self.app.config.recoverable_days);
        let delay = self.app.config.deletion_delay_ms as i64;
        self.change(|state| {
            let entry = state
                .secrets
                .remove(&key)
                .ok_or_else(|| KvError::secret_not_found(name))?;
            let t = now();
            state.deleted.insert(
                key.clone(),
                Deleted {
                    entry,
                    deleted_date: t,
                    scheduled_purge_date: t + days * 86_400,
                    completes_at_ms: now_ms() + delay,
                },
            );
            Ok(())
        })?;
        let state = self.app.store.lock();
        self.ok("delete", &self.deleted_bundle(&state.deleted[&key], true))
    }

    /// A live secret.
    fn live<'s>(&self, state: &'s VaultState, name: &str) -> Result<&'s Entry> {
        state
            .secrets
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| KvError::secret_not_found(name))
    }

    /// A deleted secret whose deletion has completed.
    fn deleted<'s>(&self, state: &'s VaultState, name: &str) -> Result<&'s Deleted> {
        state
            .deleted
            .get(&name.to_ascii_lowercase())
            .filter(|d| d.completes_at_ms <= now_ms())
            .ok_or_else(|| KvError::deleted_not_found(name))
    }

    fn get_deleted(&self, name: &str) -> Result<Response> {
        check_name(name)?;
        self.allow(Permission::Read, "deletedsecrets/read", Some(name))?;
        let mut state = self.app.store.lock();
        purge_expired(&mut state);
        let d = self.deleted(&state, name)?;
        self.ok("get_deleted", &self.deleted_bundle(d, true))
    }

    fn purge(&self, name: &str) -> Result<Response> {
        check_name(name)?;
        self.allow(Permission::Delete, "deletedsecrets/delete", Some(name))?;
        let key = name.to_ascii_lowercase();
        self.change(|state| {
            match state.deleted.get(&key) {
                Some(d) if d.completes_at_ms > now_ms() => return Err(being_deleted()),
                Some(_) => {}
                None => return Err(KvError::deleted_not_found(name)),
            }
            state.deleted.remove(&key);
            Ok(())
        })?;
        self.app.count("purge");
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    fn recover(&self, name: &str) -> Result<Response> {
        check_name(name)?;
        self.allow(
            Permission::Delete,
            "deletedsecrets/recover/action",
            Some(name),
        )?;
        let key = name.to_ascii_lowercase();
        self.change(|state| {
            match state.deleted.get(&key) {
                Some(d) if d.completes_at_ms > now_ms() => return Err(being_deleted()),
                Some(_) => {}
                None => return Err(KvError::deleted_not_found(name)),
            }
            let d = state.deleted.remove(&key).expect("checked");
            state.secrets.insert(key.clone(), d.entry);
            Ok(())
        })?;
        let state = self.app.store.lock();
        let entry = &state.secrets[&key];
        self.ok("recover", &self.bundle(entry, entry.current(), false, true))
    }

    fn backup(&self, name: &str) -> Result<Response> {
        check_name(name)?;
        self.allow(Permission::Write, "secrets/backup/action", Some(name))?;
        let state = self.app.store.lock();
        let entry = self.live(&state, name)?;
        let blob = serde_json::to_vec(&Backup {
            kind: BACKUP_KIND.into(),
            entry: entry.clone(),
        })
        .expect("serializable");
        self.ok(
            "backup",
            &serde_json::json!({"value": URL_SAFE_NO_PAD.encode(blob)}),
        )
    }

    fn restore(&self, body: &[u8]) -> Result<Response> {
        #[derive(Deserialize)]
        struct RestoreBody {
            value: String,
        }
        let corrupt = || KvError::bad_parameter("Backup blob contains invalid or corrupt version.");
        let body: RestoreBody = serde_json::from_slice(body)
            .map_err(|_| KvError::bad_parameter("Property 'value' is required."))?;
        let blob = URL_SAFE_NO_PAD
            .decode(body.value.trim_end_matches('='))
            .map_err(|_| corrupt())?;
        let backup: Backup = serde_json::from_slice(&blob).map_err(|_| corrupt())?;
        if backup.kind != BACKUP_KIND || backup.entry.version(&backup.entry.current).is_none() {
            return Err(corrupt());
        }
        let entry = backup.entry;
        check_name(&entry.name)?;
        self.allow(
            Permission::Write,
            "secrets/restore/action",
            Some(&entry.name),
        )?;
        let key = entry.name.to_ascii_lowercase();
        // The service names the backup's current version.
        let id = format!("{}/secrets/{}/{}", self.base, entry.name, entry.current);
        self.change(|state| {
            if state.secrets.contains_key(&key) || state.deleted.contains_key(&key) {
                return Err(KvError::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("There was a conflict restoring the secret '{id}'. A secret of that name exists, or is deleted and not yet purged; recover or purge it first."),
                ));
            }
            state.secrets.insert(key.clone(), entry);
            Ok(())
        })?;
        let state = self.app.store.lock();
        let entry = &state.secrets[&key];
        self.ok("restore", &self.bundle(entry, entry.current(), false, true))
    }

    /// `maxresults` and `$skiptoken`.
    fn paging(&self) -> Result<(Option<String>, usize)> {
        if let Some(token) = self.query.get("$skiptoken") {
            let bad = || KvError::bad_parameter("The skip token is invalid.");
            let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
            let t: SkipToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
            return Ok((Some(t.after), t.max.clamp(1, 25)));
        }
        let max = match self.query.get("maxresults") {
            None => self.app.config.page_size as usize,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=25).contains(n))
                .ok_or_else(|| {
                    KvError::bad_parameter(format!(
                        "Invalid maxresults value {v}: it must be an integer from 1 to 25."
                    ))
                })?,
        };
        Ok((None, max))
    }

    /// One page of `items` (sorted by key) after the skip token.
    fn page<'b>(
        &self,
        path: &str,
        items: Vec<(String, Bundle<'b>)>,
        after: Option<String>,
        max: usize,
    ) -> Page<'b> {
        let mut rest: Vec<(String, Bundle<'b>)> = items
            .into_iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
            .collect();
        let more = rest.len() > max;
        rest.truncate(max);
        let next_link = match rest.last() {
            Some((last, _)) if more => {
                let token = URL_SAFE_NO_PAD.encode(
                    serde_json::to_vec(&SkipToken {
                        after: last.clone(),
                        max,
                    })
                    .expect("serializable"),
                );
                Some(format!(
                    "{}{path}?api-version={}&$skiptoken={token}",
                    self.base,
                    self.query.get("api-version").unwrap_or_default()
                ))
            }
            _ => None,
        };
        Page {
            value: rest.into_iter().map(|(_, b)| b).collect(),
            next_link,
        }
    }

    fn list(&self) -> Result<Response> {
        self.allow(Permission::Read, "secrets/readMetadata/action", None)?;
        let (after, max) = self.paging()?;
        let state = self.app.store.lock();
        let items = state
            .secrets
            .iter()
            .map(|(k, e)| (k.clone(), self.bundle(e, e.current(), false, false)))
            .collect();
        self.ok("list", &self.page("/secrets", items, after, max))
    }

    fn versions(&self, name: &str) -> Result<Response> {
        check_name(name)?;
        self.allow(Permission::Read, "secrets/readMetadata/action", None)?;
        let (after, max) = self.paging()?;
        let state = self.app.store.lock();
        let entry = self.live(&state, name)?;
        let mut items: Vec<(String, Bundle<'_>)> = entry
            .versions
            .iter()
            .map(|v| (v.id.clone(), self.bundle(entry, v, false, true)))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let path = format!("/secrets/{}/versions", entry.name);
        self.ok("list_versions", &self.page(&path, items, after, max))
    }

    fn list_deleted(&self) -> Result<Response> {
        self.allow(Permission::Read, "deletedsecrets/read", None)?;
        let (after, max) = self.paging()?;
        let mut state = self.app.store.lock();
        purge_expired(&mut state);
        let t = now_ms();
        let items = state
            .deleted
            .iter()
            .filter(|(_, d)| d.completes_at_ms <= t)
            .map(|(k, d)| (k.clone(), self.deleted_bundle(d, false)))
            .collect();
        self.ok(
            "list_deleted",
            &self.page("/deletedsecrets", items, after, max),
        )
    }
}

fn being_deleted() -> KvError {
    KvError::new(
        StatusCode::CONFLICT,
        "Conflict",
        "Secret is currently being deleted.",
    )
    .inner("ObjectIsBeingDeleted")
}

/// The service's limits on content type and tags.
fn check_properties(
    content_type: Option<&str>,
    tags: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    if let Some(ct) = content_type
        && ct.chars().count() > MAX_CONTENT_TYPE
    {
        return Err(KvError::bad_parameter(format!(
            "The content type is {} characters long; the maximum is {MAX_CONTENT_TYPE}.",
            ct.chars().count()
        )));
    }
    if let Some(tags) = tags {
        if tags.len() > MAX_TAGS {
            return Err(KvError::bad_parameter(format!(
                "There are {} tags; the maximum is {MAX_TAGS}.",
                tags.len()
            )));
        }
        for (k, v) in tags {
            if k.chars().count() > MAX_TAG_LEN || v.chars().count() > MAX_TAG_LEN {
                return Err(KvError::bad_parameter(format!(
                    "A tag name or value is longer than {MAX_TAG_LEN} characters."
                )));
            }
        }
    }
    Ok(())
}

/// Deleted secrets past their scheduled purge date are gone, as the service purges them.
fn purge_expired(state: &mut VaultState) {
    let t = now();
    state.deleted.retain(|_, d| d.scheduled_purge_date > t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "A-1", &"x".repeat(127)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a_b", "a.b", "a b", "ä", &"x".repeat(128), "a%2Fb"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits() {
        assert!(check_properties(Some(&"c".repeat(255)), None).is_ok());
        assert!(check_properties(Some(&"c".repeat(256)), None).is_err());
        let tags = |n: usize, len: usize| -> BTreeMap<String, String> {
            (0..n)
                .map(|i| (format!("{i:0>len$}"), "v".into()))
                .collect()
        };
        assert!(check_properties(None, Some(&tags(15, 512))).is_ok());
        assert!(check_properties(None, Some(&tags(16, 1))).is_err());
        assert!(check_properties(None, Some(&tags(1, 513))).is_err());
    }
}
