//! Microsoft Entra ID's token endpoint for the client-credentials grant, in its wire shape:
//! `POST /<tenant>/oauth2/v2.0/token` with a client secret, or with a client assertion that is
//! either a Kubernetes service-account token (workload identity: checked against the cluster's
//! published keys and the identity's federated credentials) or a JWT signed with the identity's
//! certificate. Also the OpenID discovery documents that MSAL-based SDKs read first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::{App, SKEW_SECS, VAULT_RESOURCE, json_response, now};
use crate::config::Identity;
use crate::jwt::{Jwk, Unverified, random_guid};

/// `client_assertion_type` of JWT client assertions.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a Kubernetes issuer's keys are used before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(60);

/// An Entra error: `{"error", "error_description": "AADSTS…: …", "error_codes": [..], …}`.
struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl EntraError {
    fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        description: impl Into<String>,
    ) -> Self {
        EntraError {
            status,
            error,
            code,
            description: description.into(),
        }
    }
}

/// Entra's error body, in its field order.
#[derive(serde::Serialize)]
struct EntraErrorBody {
    error: &'static str,
    error_description: String,
    error_codes: [u32; 1],
    timestamp: String,
    trace_id: String,
    correlation_id: String,
    error_uri: String,
}

impl IntoResponse for EntraError {
    fn into_response(self) -> Response {
        let trace_id = random_guid();
        let correlation_id = random_guid();
        let timestamp = time_string();
        json_response(
            self.status,
            &EntraErrorBody {
                error: self.error,
                error_description: format!(
                    "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                    self.code, self.description
                ),
                error_codes: [self.code],
                timestamp,
                trace_id,
                correlation_id,
                error_uri: format!("https://login.microsoftonline.com/error?code={}", self.code),
            },
        )
    }
}

/// A token response (`token_type`, `expires_in`, `ext_expires_in`, `access_token`).
#[derive(serde::Serialize)]
struct TokenResponse {
    token_type: &'static str,
    expires_in: u64,
    ext_expires_in: u64,
    access_token: String,
}

/// Now as Entra writes it in errors: `2025-01-31 12:34:56Z`.
fn time_string() -> String {
    let secs = now();
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `POST /<tenant>/oauth2/v2.0/token`.
pub async fn token(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(fault) = app.fault_response(true).await {
        return fault;
    }
    match issue(&app, &tenant, &body).await {
        Ok(response) => {
            app.count("token");
            response
        }
        Err(e) => {
            app.count("token_refused");
            tracing::info!(error = %e.description, code = e.code, "token request refused");
            e.into_response()
        }
    }
}

async fn issue(app: &App, tenant: &str, body: &[u8]) -> Result<Response, EntraError> {
    if tenant != app.config.tenant {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        ));
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).map_err(|_| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        )
    })?;
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    match field("grant_type") {
        Some("client_credentials") => {}
        None => {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
        Some(other) => {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
    }
    let scope = field("scope").ok_or_else(|| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        )
    })?;
    if !scope
        .split(' ')
        .any(|s| s.trim_end_matches("/.default").trim_end_matches('/') == VAULT_RESOURCE)
    {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid. This emulator issues tokens for {VAULT_RESOURCE}/.default only."
            ),
        ));
    }
    let client_id = field("client_id").ok_or_else(|| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    })?;
    let identity = app
        .config
        .identities
        .iter()
        .find(|i| i.client_id == client_id)
        .ok_or_else(|| {
            EntraError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."),
            )
        })?;
    match (field("client_secret"), field("client_assertion")) {
        (Some(secret), None) => check_secret(identity, secret)?,
        (None, Some(assertion)) => {
            if field("client_assertion_type") != Some(JWT_BEARER) {
                return Err(EntraError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    50027,
                    format!("client_assertion_type must be {JWT_BEARER}."),
                ));
            }
            check_assertion(app, identity, tenant, assertion).await?;
        }
        _ => {
            return Err(EntraError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
    }
    let lifetime = app.config.token_lifetime_secs;
    let t = now();
    let claims = json!({
        "aud": VAULT_RESOURCE,
        "iss": app.issuer,
        "iat": t,
        "nbf": t,
        "exp": t + lifetime as i64,
        "appid": identity.client_id,
        "azp": identity.client_id,
        "idtyp": "app",
        "oid": object_id(&identity.client_id),
        "sub": object_id(&identity.client_id),
        "tid": app.config.tenant,
        "ver": "2.0",
    });
    tracing::info!(identity = %identity.name, "token issued");
    Ok(json_response(
        StatusCode::OK,
        &TokenResponse {
            token_type: "Bearer",
            expires_in: lifetime,
            ext_expires_in: lifetime,
            access_token: app.signer.sign(&claims),
        },
    ))
}

/// A stable object id for an application (Entra's service-principal object id).
pub fn object_id(client_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, client_id.as_bytes());
    let h: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    crate::jwt::guid(&h)
}

fn check_secret(identity: &Identity, secret: &str) -> Result<(), EntraError> {
    let matches = identity.client_secret.as_deref().is_some_and(|s| {
        aws_lc_rs::constant_time::verify_slices_are_equal(s.as_bytes(), secret.as_bytes()).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                identity.client_id
            ),
        ))
    }
}

fn assertion_error(code: u32, description: impl Into<String>) -> EntraError {
    EntraError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        code,
        description,
    )
}

async fn check_assertion(
    app: &App,
    identity: &Identity,
    tenant: &str,
    assertion: &str,
) -> Result<(), EntraError> {
    let jwt = Unverified::parse(assertion)
        .map_err(|_| assertion_error(50027, "JWT token is invalid or malformed."))?;
    let iss = jwt.claim("iss").unwrap_or_default().to_owned();
    let t = now();
    let in_time = jwt.time("exp").is_some_and(|exp| exp + SKEW_SECS > t)
        && jwt.time("nbf").is_none_or(|nbf| nbf - SKEW_SECS <= t);
    if let Some(issuer) = app.config.issuers.iter().find(|i| i.issuer == iss) {
        // Workload identity: a service-account token from a trusted cluster.
        let keys = issuer_keys(app, issuer, jwt.kid().unwrap_or_default()).await?;
        let key = keys
            .iter()
            .find(|k| Some(k.kid.as_str()) == jwt.kid())
            .ok_or_else(|| assertion_error(700027, "Client assertion failed signature validation: the signing key is not published by its issuer."))?;
        jwt.verify(&key.n, &key.e).map_err(|_| {
            assertion_error(700027, "Client assertion failed signature validation.")
        })?;
        if !in_time {
            return Err(assertion_error(
                700024,
                "Client assertion is not within its valid time range.",
            ));
        }
        let sub = jwt.claim("sub").unwrap_or_default();
        let audiences = jwt.audiences();
        let matched = identity.federated.iter().any(|f| {
            f.issuer == iss
                && f.subject == sub
                && f.audiences.iter().any(|a| audiences.contains(&a.as_str()))
        });
        if !matched {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                70021,
                format!(
                    "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{}'.",
                    audiences.join(",")
                ),
            ));
        }
        return Ok(());
    }
    // A certificate-signed assertion: iss = sub = the client id, aud = this token endpoint.
    if iss != identity.client_id || jwt.claim("sub") != Some(identity.client_id.as_str()) {
        return Err(assertion_error(
            700021,
            format!(
                "Client assertion application identifier doesn't match 'client_id' parameter, or its issuer '{iss}' is not a trusted federated issuer."
            ),
        ));
    }
    let (spki, thumbprint) = app.certificates.get(&identity.client_id).ok_or_else(|| {
        assertion_error(
            700027,
            "Client assertion contains an invalid signature: the application has no certificate.",
        )
    })?;
    if jwt.header["x5t#S256"].as_str() != Some(thumbprint.as_str()) {
        return Err(assertion_error(
            700027,
            "Client assertion contains an invalid signature. [Reason - The key was not found.]",
        ));
    }
    jwt.verify_spki(spki)
        .map_err(|_| assertion_error(700027, "Client assertion failed signature validation."))?;
    let audience = format!("{}/{tenant}/oauth2/v2.0/token", app.authority);
    if !jwt
        .audiences()
        .iter()
        .any(|a| a.trim_end_matches('/') == audience)
    {
        return Err(assertion_error(
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'.",
                jwt.audiences().join(",")
            ),
        ));
    }
    if !in_time {
        return Err(assertion_error(
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(())
}

/// The issuer's published keys, fetched without credentials (as Entra fetches them) and cached;
/// fetched again when a token names a key not in the cache.
async fn issuer_keys(
    app: &App,
    issuer: &crate::config::Issuer,
    kid: &str,
) -> Result<Vec<Jwk>, EntraError> {
    if let Some((at, keys)) = app
        .issuer_keys
        .lock()
        .expect("keys lock")
        .get(&issuer.issuer)
        && at.elapsed() < KEYS_TTL
        && keys.iter().any(|k| k.kid == kid)
    {
        return Ok(keys.clone());
    }
    let unreachable = |why: String| {
        tracing::warn!(issuer = %issuer.issuer, jwks_uri = %issuer.jwks_uri, error = %why, "cannot read the issuer's keys");
        assertion_error(
            50166,
            format!(
                "Request to External OIDC endpoint failed: cannot read the keys of issuer '{}' from {}.",
                issuer.issuer, issuer.jwks_uri
            ),
        )
    };
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(ca) = &issuer.ca_file {
        let pem = std::fs::read(ca).map_err(|e| unreachable(format!("{}: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| unreachable(e.to_string()))?;
        builder = builder.tls_certs_merge([cert]);
    }
    let client = builder.build().map_err(|e| unreachable(e.to_string()))?;
    let response = client
        .get(&issuer.jwks_uri)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !response.status().is_success() {
        return Err(unreachable(format!("HTTP {}", response.status())));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| unreachable(e.to_string()))?;
    let keys = crate::jwt::parse_jwks(&doc);
    app.issuer_keys
        .lock()
        .expect("keys lock")
        .insert(issuer.issuer.clone(), (Instant::now(), keys.clone()));
    Ok(keys)
}

/// `GET /<tenant>/v2.0/.well-known/openid-configuration`.
pub async fn openid_configuration(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Response {
    if tenant != app.config.tenant {
        return EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            format!("Tenant '{tenant}' not found."),
        )
        .into_response();
    }
    let a = &app.authority;
    json_response(
        StatusCode::OK,
        &json!({
            "token_endpoint": format!("{a}/{tenant}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "jwks_uri": format!("{a}/{tenant}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": app.issuer,
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{a}/{tenant}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{a}/{tenant}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{a}/{tenant}/oauth2/v2.0/logout"),
            "tenant_region_scope": null,
            "cloud_instance_name": "keyseal-kv-emulator",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }),
    )
}

/// `GET /<tenant>/discovery/v2.0/keys`: the keys that sign access tokens.
pub async fn keys(State(app): State<Arc<App>>) -> Response {
    json_response(StatusCode::OK, &app.signer.jwks())
}

/// `GET /common/discovery/instance`: MSAL's instance discovery, answering that the emulator's
/// host is its own (and only) alias.
pub async fn instance_discovery(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let tenant = app.config.tenant.clone();
    let discovery = query
        .get("authorization_endpoint")
        .and_then(|e| e.split('/').nth(3))
        .map_or(tenant, str::to_owned);
    json_response(
        StatusCode::OK,
        &json!({
            "tenant_discovery_endpoint": format!("https://{host}/{discovery}/v2.0/.well-known/openid-configuration"),
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }),
    )
}
