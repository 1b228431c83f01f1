//! The controller's HTTP API (upstream's routes) and the metrics listener. Every replica serves
//! them from its own key ring; none of them writes to the cluster.
//!
//! Hostile clients: a request body is capped at [`MAX_BODY`] (413 beyond it, read no further); a
//! connection must deliver a request's headers within [`header_read_timeout`] (slow-loris
//! connections and idle keep-alive connections are closed); a request, body included, is bounded
//! by `--read-timeout` + `--write-timeout`; bodies that are not one SealedSecret get a 400 that
//! says why.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use keyseal_api::SealedSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer as _;

use crate::bucket::{Rate, TokenBucket};
use crate::keys::KeyRing;
use crate::metrics::{HttpLabels, Metrics, RouteLabels};

/// The listeners and their limits (from the flags).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `--listen-addr`: /healthz, /readyz, /v1/*.
    pub listen: SocketAddr,
    /// `--listen-metrics-addr`: /metrics.
    pub listen_metrics: SocketAddr,
    /// `--rate-limit`: /v1/verify and /v1/rotate requests per second per client.
    pub rate_limit: u32,
    /// `--rate-limit-burst`.
    pub rate_limit_burst: u32,
    /// `--read-timeout` + `--write-timeout`: upper bound on one request.
    pub request_timeout: std::time::Duration,
    /// `--accept-deprecated-v1-data` (for /v1/verify).
    pub accept_v1_data: bool,
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// Keys.
    pub ring: Arc<KeyRing>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Accept legacy `spec.data` in /v1/verify.
    pub accept_v1_data: bool,
    /// Per-client, per-route limiter of /v1/verify and /v1/rotate.
    pub limiter: Arc<RateLimiter>,
    /// Extra gauges refreshed at scrape time.
    pub refresh: Arc<dyn Fn() + Send + Sync>,
    /// Upper bound on handling one request (`--read-timeout` + `--write-timeout`).
    pub request_timeout: std::time::Duration,
}

impl HttpState {
    /// The state for `config`'s limits; `refresh` updates the scrape-time gauges.
    pub fn new(
        config: &HttpConfig,
        ring: Arc<KeyRing>,
        metrics: Arc<Metrics>,
        refresh: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            ring,
            metrics,
            accept_v1_data: config.accept_v1_data,
            limiter: Arc::new(RateLimiter::new(config.rate_limit, config.rate_limit_burst)),
            refresh,
            request_timeout: config.request_timeout,
        }
    }
}

/// A token bucket per client address and route (upstream varies its limit by path too): `rate`
/// tokens per second, at most `burst` saved up.
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<(IpAddr, &'static str), TokenBucket>>,
}

impl RateLimiter {
    /// A limiter with upstream's semantics (`--rate-limit`, `--rate-limit-burst`).
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: Rate::new(f64::from(rate), burst),
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for `client` on `route` if one is available.
    pub fn allow(&self, client: IpAddr, route: &'static str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() > 10_000 {
            // Forget idle clients so the map cannot grow without bound.
            buckets.retain(|_, bucket| bucket.in_use(self.rate, now, Duration::from_secs(60)));
        }
        buckets
            .entry((client, route))
            .or_insert_with(|| TokenBucket::full(self.rate, now))
            .take(self.rate, now)
            .is_ok()
    }
}

/// The largest request body accepted: the Kubernetes API server's own limit on a request
/// (3 MiB), so any SealedSecret the cluster can store (etcd takes objects up to 1.5 MiB) can be
/// verified or rotated, and a client cannot make the controller buffer more than this.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The longest a connection may take to deliver a request's headers, and to send the next
/// request on a kept-alive connection: `--read-timeout` + `--write-timeout` (upstream uses
/// `--read-timeout` as Go's `ReadHeaderTimeout`), at most 10 s — a client's headers arrive in
/// milliseconds, and a connection that trickles them (slow-loris) or sits idle holds a socket.
pub fn header_read_timeout(request_timeout: Duration) -> Duration {
    request_timeout.min(Duration::from_secs(10))
}

/// The API router: /healthz, /readyz, /v1/cert.pem, /v1/verify, /v1/rotate.
pub fn api_router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/v1/cert.pem", get(cert))
        .route("/v1/verify", post(verify))
        .route("/v1/rotate", post(rotate))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(refuse_declared_oversize))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The metrics router: /metrics.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn observe(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // promhttp (upstream) labels methods in lower case: `get`, `post`.
    let method = request.method().as_str().to_ascii_lowercase();
    let started = Instant::now();
    let response = match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timed out").into_response(),
    };
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabels {
            path: path.clone(),
            method: method.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            path,
            code: response.status().as_u16().to_string(),
            method,
        })
        .inc();
    response
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.ring.newest().is_some() {
        (StatusCode::OK, "ok").into_response()
    } else {
        no_key_yet()
    }
}

async fn cert(State(state): State<HttpState>) -> Response {
    match state.ring.newest() {
        Some(key) => {
            let mut response = key.certificate.to_pem().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            );
            response
        }
        None => no_key_yet(),
    }
}

/// 503 while no sealing key is loaded (a standby before the leader's first key appears).
fn no_key_yet() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "no sealing key loaded yet").into_response()
}

/// 413: the body is larger than [`MAX_BODY`].
fn too_large() -> Response {
    let message = format!(
        "request body larger than {} MiB (the API server's own limit on a request)",
        MAX_BODY >> 20
    );
    (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
}

/// Refuses a request whose Content-Length is past [`MAX_BODY`] before reading any of it (the
/// body limit alone would wait for the body to arrive). Bodies without a length are cut off by
/// the limit as they are read.
async fn refuse_declared_oversize(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return too_large();
    }
    next.run(request).await
}

/// The body as read, or why it could not be: 413 past [`MAX_BODY`], else the extractor's own
/// answer (e.g. 400 when the client broke off).
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Box<Response>> {
    body.map_err(|rejection| {
        Box::new(match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => too_large(),
            _ => rejection.into_response(),
        })
    })
}

/// A SealedSecret from a JSON or YAML body.
fn parse_body(body: &Bytes) -> Result<SealedSecret, Box<Response>> {
    let bad = |message: String| Box::new((StatusCode::BAD_REQUEST, message).into_response());
    let text = std::str::from_utf8(body).map_err(|e| {
        bad(format!(
            "body is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let mut all = keyseal_api::input::sealed_secrets(text).map_err(|e| bad(e.to_string()))?;
    if all.len() != 1 {
        return Err(bad("expected exactly one SealedSecret".into()));
    }
    Ok(all.remove(0))
}

/// The common front of the decryption-oracle endpoints: the per-client, per-path rate limit,
/// then the body as one SealedSecret.
fn oracle_request(
    state: &HttpState,
    peer: SocketAddr,
    path: &'static str,
    body: Result<Bytes, BytesRejection>,
) -> Result<SealedSecret, Box<Response>> {
    if !state.limiter.allow(peer.ip(), path) {
        return Err(Box::new(
            (StatusCode::TOO_MANY_REQUESTS, "limit exceeded").into_response(),
        ));
    }
    parse_body(&read_body(body)?)
}

/// Runs RSA work with every loaded private key off the async workers.
async fn with_private_keys<T: Send + 'static>(
    keys: crate::keys::Keys,
    work: impl FnOnce(&[&keyseal_crypto::PrivateKey]) -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&keyseal_crypto::PrivateKey> = keys.iter().map(|k| &k.key).collect();
        work(&refs)
    })
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn verify(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // A decryption oracle: rate-limited per client, templates never rendered.
    let ss = match oracle_request(&state, peer, "/v1/verify", body) {
        Ok(ss) => ss,
        Err(r) => return *r,
    };
    let accept = state.accept_v1_data;
    match with_private_keys(state.ring.keys(), move |keys| {
        keyseal_api::verify(&ss, keys, accept)
    })
    .await
    {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(_)) => (StatusCode::CONFLICT, "no key could decrypt secret").into_response(),
        Err(r) => r,
    }
}

async fn rotate(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // 200 or 409 tells whether the body decrypts: the same oracle as /v1/verify, limited alike.
    let ss = match oracle_request(&state, peer, "/v1/rotate", body) {
        Ok(ss) => ss,
        Err(r) => return *r,
    };
    let keys = state.ring.keys();
    let Some(newest) = keys.first().cloned() else {
        return no_key_yet();
    };
    let result = with_private_keys(keys, move |keys| {
        keyseal_api::reseal(&ss, keys, newest.certificate.public_key())
    })
    .await;
    match result {
        Ok(Ok(rotated)) => {
            let mut response = serde_json::to_string(&rotated)
                .unwrap_or_default()
                .into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Ok(Err(e)) => (StatusCode::CONFLICT, e.to_string()).into_response(),
        Err(r) => r,
    }
}

async fn metrics(State(state): State<HttpState>, method: Method) -> Response {
    let _ = method;
    let mut response = state.metrics.scrape(&*state.refresh).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// Binds both listeners and serves until `shutdown` fires; the task ends when both servers
/// have stopped and their connections have finished.
pub async fn serve(
    config: &HttpConfig,
    state: HttpState,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let api_listener = bind(config.listen).context("binding --listen-addr")?;
    let metrics_listener = bind(config.listen_metrics).context("binding --listen-metrics-addr")?;
    tracing::info!(api = %api_listener.local_addr()?, metrics = %metrics_listener.local_addr()?, "listening");
    let timeout = header_read_timeout(config.request_timeout);
    let api = serve_http1(
        api_listener,
        api_router(state.clone()),
        timeout,
        shutdown.clone(),
    );
    let metrics = serve_http1(metrics_listener, metrics_router(state), timeout, shutdown);
    Ok(tokio::spawn(async move {
        tokio::join!(api, metrics);
    }))
}

/// Connections the kernel may queue for [`serve_http1`] before it accepts them. The kernel caps
/// it at `net.core.somaxconn` (4096 on current kernels), as Go's listeners do for upstream.
/// tokio's `TcpListener::bind` asks for 128: a burst of more clients than that (CI jobs fetching
/// the certificate at once) overflows the queue, and a client whose handshake completed
/// through a SYN cookie while the queue was full is left with a connection the server never
/// saw, which hangs until the client gives up.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` over HTTP/1.1 (what upstream's Go server speaks without TLS) on `listener`:
/// one task per connection, each closed when it takes longer than `header_timeout` to deliver a
/// request's headers. Stops accepting when `shutdown` fires, lets open connections finish their
/// requests, and returns when all have closed.
async fn serve_http1(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener is fine, so pause briefly instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let service = Extension(ConnectInfo(peer)).layer(router.clone());
        connections.spawn(serve_connection(
            stream,
            service,
            header_timeout,
            shutdown.clone(),
        ));
    }
    while connections.join_next().await.is_some() {}
}

/// One connection, until the client closes it, it breaks a limit, or `shutdown` fires (then
/// after the request in progress).
async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    service: S,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(
        hyper_util::rt::TokioIo::new(stream),
        hyper_util::service::TowerToHyperService::new(service),
    );
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        // A header timeout, a malformed request line, a client gone: the client's problem.
        tracing::debug!(error = %e, "HTTP connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_burst_then_refuses() {
        let l = RateLimiter::new(2, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(l.allow(ip, "/v1/verify") && l.allow(ip, "/v1/verify"));
        assert!(
            !l.allow(ip, "/v1/verify"),
            "third request within the same instant exceeds the burst"
        );
        assert!(
            l.allow("10.0.0.2".parse().unwrap(), "/v1/verify"),
            "per client"
        );
        assert!(l.allow(ip, "/v1/rotate"), "per route");
    }

    /// Regression: with tokio's default backlog (128) the 129th and later connections of a
    /// burst were dropped by the kernel, and a client that sends nothing first hung.
    #[tokio::test]
    async fn a_burst_of_connections_is_queued_until_accepted() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        // Well past 128, within a default limit of 1,024 open files (both ends are ours).
        let burst = 300.min(somaxconn);
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // Every handshake completes while nothing is accepted: the kernel queues them all.
        let clients = futures::future::join_all((0..burst).map(|_| async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                tokio::net::TcpStream::connect(addr),
            )
            .await
        }))
        .await;
        let connected = clients.iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
        assert_eq!(connected, burst, "connections completed before any accept");
        for n in 0..burst {
            tokio::time::timeout(Duration::from_secs(20), listener.accept())
                .await
                .unwrap_or_else(|_| panic!("connection {n} of {burst} never reached accept"))
                .unwrap();
        }
    }
}
