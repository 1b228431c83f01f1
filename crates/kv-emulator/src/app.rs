//! What every handler shares: the configuration, the vault's store, the token signer, the fault
//! switch and request counts; Key Vault's error replies; checking a vault request's token.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Identity, Permission};
use crate::jwt::{Jwk, Signer, Unverified};
use crate::store::Store;

/// The audience of Key Vault access tokens, and the `resource` of its challenge.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// Clock skew allowed when checking token times, as Entra and Key Vault allow some.
pub const SKEW_SECS: i64 = 300;

/// The emulator.
pub struct App {
    /// The configuration.
    pub config: Config,
    /// The vault's contents.
    pub store: Store,
    /// Signs access tokens.
    pub signer: Signer,
    /// `https://<listen address>`: the authority host clients are given, and the vault's URL.
    pub authority: String,
    /// The `iss` of access tokens: `<authority>/<tenant>/v2.0`.
    pub issuer: String,
    /// What the fault switch says.
    pub fault: Mutex<Fault>,
    /// Requests answered, by operation.
    pub counts: Mutex<BTreeMap<String, u64>>,
    /// Signing keys of Kubernetes issuers, by issuer, with when they were fetched.
    pub issuer_keys: Mutex<HashMap<String, (Instant, Vec<Jwk>)>>,
    /// SubjectPublicKeyInfo and SHA-256 thumbprint (base64url) of each identity's certificate,
    /// by client id.
    pub certificates: HashMap<String, (Vec<u8>, String)>,
}

/// The fault switch (admin API): how vault (and optionally token) requests are answered.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What to do.
    pub mode: FaultMode,
    /// `Retry-After` seconds on 429 and 503 (none when absent).
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// Also the token endpoint (an Entra outage), not only the vault.
    #[serde(default)]
    pub token_endpoint: bool,
}

/// Fault modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FaultMode {
    /// Answer normally.
    #[default]
    None,
    /// 503 Service Unavailable.
    Unavailable,
    /// 429 Too Many Requests.
    Throttle,
    /// Hold the request without answering (for two minutes, then 503).
    Timeout,
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A Key Vault error reply: `{"error":{"code","message","innererror":{"code"}?}}`.
#[derive(Debug)]
pub struct KvError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.code`.
    pub code: &'static str,
    /// `error.message`.
    pub message: String,
    /// `error.innererror.code`.
    pub inner: Option<&'static str>,
    /// Extra headers (`WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(header::HeaderName, String)>,
}

impl KvError {
    /// An error without inner code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        KvError {
            status,
            code,
            message: message.into(),
            inner: None,
            headers: Vec::new(),
        }
    }

    /// With an inner error code.
    pub fn inner(mut self, code: &'static str) -> Self {
        self.inner = Some(code);
        self
    }

    /// With a header.
    pub fn header(mut self, name: header::HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 400 `BadParameter`.
    pub fn bad_parameter(message: impl Into<String>) -> Self {
        KvError::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    /// 404 `SecretNotFound`, as for an unknown or deleted secret.
    pub fn secret_not_found(name: &str) -> Self {
        KvError::new(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            format!(
                "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        )
    }

    /// 404 `SecretNotFound` for a deleted secret.
    pub fn deleted_not_found(name: &str) -> Self {
        KvError::new(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            format!("Deleted Secret not found: {name}"),
        )
    }
}

/// `{"error":{"code","message","innererror":{"code"}?}}`, in the service's field order.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    innererror: Option<InnerError<'a>>,
}

#[derive(Serialize)]
struct InnerError<'a> {
    code: &'a str,
}

impl IntoResponse for KvError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                innererror: self.inner.map(|code| InnerError { code }),
            },
        };
        let mut response = json_response(self.status, &body);
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
        response
    }
}

/// A JSON reply as the service sends it (`application/json; charset=utf-8`), fields in the
/// order of the body's type.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let text = serde_json::to_string(body).expect("serializable");
    let mut response = (status, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// The caller of a vault request.
pub struct Caller<'a> {
    /// Its identity.
    pub identity: &'a Identity,
    /// `oid`.
    pub oid: String,
}

impl App {
    /// Counts a request to `operation`.
    pub fn count(&self, operation: &str) {
        *self
            .counts
            .lock()
            .expect("counts lock")
            .entry(operation.to_owned())
            .or_default() += 1;
    }

    /// The 401 challenge: `WWW-Authenticate` names the tenant's authority and the vault resource.
    pub fn unauthorized(&self, message: impl Into<String>) -> KvError {
        KvError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message).header(
            header::WWW_AUTHENTICATE,
            format!(
                r#"Bearer authorization="{}/{}", resource="{VAULT_RESOURCE}""#,
                self.authority, self.config.tenant
            ),
        )
    }

    /// The identity a vault request's bearer token was issued to.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller<'_>, KvError> {
        let missing =
            || self.unauthorized("AKV10000: Request is missing a Bearer, PoP, or MTLS_POP token.");
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(missing)?;
        let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(missing());
        }
        let invalid = || {
            self.unauthorized("[BearerReadAccessTokenFailed] Error validating token: 'S2S12005'.")
        };
        let token = Unverified::parse(token.trim()).map_err(|_| invalid())?;
        self.signer.verify(&token).map_err(|_| invalid())?;
        let audiences = token.audiences();
        if !audiences
            .iter()
            .any(|a| a.trim_end_matches('/') == VAULT_RESOURCE)
        {
            return Err(self.unauthorized(format!(
                "AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {}.",
                audiences.join(", ")
            )));
        }
        if token.claim("iss") != Some(self.issuer.as_str())
            || token.claim("tid") != Some(self.config.tenant.as_str())
        {
            return Err(self.unauthorized(format!(
                "AKV10032: Invalid issuer. Expected one of {}, found {}.",
                self.issuer,
                token.claim("iss").unwrap_or_default()
            )));
        }
        let now = now();
        if token.time("exp").is_none_or(|exp| exp + SKEW_SECS <= now) {
            return Err(self.unauthorized("[TokenExpired] Error validating token: 'S2S12086'."));
        }
        if token.time("nbf").is_some_and(|nbf| nbf - SKEW_SECS > now) {
            return Err(invalid());
        }
        let app_id = token.claim("appid").unwrap_or_default();
        let identity = self
            .config
            .identities
            .iter()
            .find(|i| i.client_id == app_id)
            .ok_or_else(invalid)?;
        Ok(Caller {
            identity,
            oid: token.claim("oid").unwrap_or_default().to_owned(),
        })
    }

    /// 403 unless the caller holds `permission` on `secret` (`None`: the whole vault).
    pub fn authorize(
        &self,
        caller: &Caller<'_>,
        permission: Permission,
        action: &str,
        secret: Option<&str>,
    ) -> Result<(), KvError> {
        let allowed = caller.identity.roles.iter().any(|role| {
            role.permissions.contains(&permission) && scope_covers(&role.scope, secret)
        });
        if allowed {
            return Ok(());
        }
        let resource = match secret {
            Some(name) => format!("{}/secrets/{name}", self.authority),
            None => self.authority.clone(),
        };
        Err(KvError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss={}\r\nAction: 'Microsoft.KeyVault/vaults/{action}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: keyseal-kv-emulator;location=local\r\n",
                caller.identity.client_id, caller.oid, self.issuer
            ),
        )
        .inner("ForbiddenByRbac"))
    }

    /// The fault to answer with, if the switch is on for this kind of request.
    pub async fn fault_response(&self, token_endpoint: bool) -> Option<Response> {
        let fault = self.fault.lock().expect("fault lock").clone();
        if fault.mode == FaultMode::None || (token_endpoint && !fault.token_endpoint) {
            return None;
        }
        let retry = |e: KvError| match fault.retry_after_secs {
            Some(s) => e.header(header::RETRY_AFTER, s.to_string()),
            None => e,
        };
        let unavailable = || {
            retry(KvError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is unavailable; try again later.",
            ))
        };
        Some(match fault.mode {
            FaultMode::None => return None,
            FaultMode::Unavailable => unavailable().into_response(),
            FaultMode::Throttle => retry(KvError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: A generic throttling rule was violated.",
            ))
            .into_response(),
            FaultMode::Timeout => {
                tokio::time::sleep(Duration::from_secs(120)).await;
                unavailable().into_response()
            }
        })
    }
}

/// Whether a role's scope covers `secret` (`None`: the vault itself, e.g. listing).
fn scope_covers(scope: &str, secret: Option<&str>) -> bool {
    if scope == "*" {
        return true;
    }
    let Some(name) = secret else { return false };
    let (name, scope) = (name.to_ascii_lowercase(), scope.to_ascii_lowercase());
    match scope.split_once('*') {
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
        None => name == scope,
    }
}

#[cfg(test)]
mod tests {
    use super::scope_covers;

    #[test]
    fn scopes() {
        assert!(scope_covers("*", None));
        assert!(scope_covers("*", Some("x")));
        assert!(scope_covers("prod-*", Some("PROD-sealing-cert")));
        assert!(!scope_covers("prod-*", Some("dev-x")));
        assert!(!scope_covers("prod-*", None), "listing needs the vault");
        assert!(scope_covers("Prod-Cert", Some("prod-cert")));
        assert!(!scope_covers("prod-cert", Some("prod-cert2")));
        assert!(scope_covers("*-sealing-cert", Some("prod-Sealing-Cert")));
        assert!(!scope_covers(
            "*-sealing-cert",
            Some("prod-sealed-secrets-key1")
        ));
        assert!(scope_covers("prod-*-cert", Some("prod-x-cert")));
        assert!(
            !scope_covers("ab*ba", Some("aba")),
            "the parts may not overlap"
        );
    }
}
