//! `keyseal-kv-emulator`: a test server for the Azure Key Vault **secrets** data plane and the
//! Microsoft Entra ID token endpoint, held to recordings of real traffic (see `README.md` for
//! what it implements and where it knowingly differs). keyseal's tests and demo talk to it
//! through the official Azure SDK with the same credentials a user configures; it is never
//! linked into `keyseal` or `keyseal-controller`.
//!
//! One HTTPS listener serves the vault (`/secrets…`, `/deletedsecrets…`) and Entra
//! (`/<tenant>/oauth2/v2.0/token`, discovery); an optional plain-HTTP loopback listener serves
//! the admin API (the fault switch and request counts).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod app;
pub mod config;
mod entra;
pub mod jwt;
pub mod store;
pub mod tls;
mod vault;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, anyhow};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::app::{App, Fault, json_response};
pub use crate::config::Config;

/// Largest request body read (the largest valid one, a 25 KB value with tags, is far below).
const BODY_LIMIT: usize = 1 << 20;

/// Runs the emulator until `shutdown` completes. Writes the bound addresses to
/// `<data_dir>/address` and `<data_dir>/admin-address` once listening.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let tls = tls::server_config(&config.tls, &config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    let admin = match &config.admin_listen {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the admin listener {a}"))?;
            anyhow::ensure!(
                l.local_addr()?.ip().is_loopback(),
                "admin_listen must be a loopback address"
            );
            Some(l)
        }
        None => None,
    };
    let mut certificates = HashMap::new();
    for identity in &config.identities {
        if let Some(path) = &identity.certificate_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("identity {}: {}", identity.name, path.display()))?;
            let cert = keyseal_crypto::Certificate::from_pem(&pem)
                .map_err(|e| anyhow!("identity {}: {}: {e}", identity.name, path.display()))?;
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.to_der());
            use base64::Engine as _;
            let thumbprint =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
            certificates.insert(
                identity.client_id.clone(),
                (cert.public_key().to_spki_der().to_vec(), thumbprint),
            );
        }
    }
    let authority = format!("https://{address}");
    let app = Arc::new(App {
        store: store::Store::open(&config.data_dir)?,
        signer: jwt::Signer::load_or_create(&config.data_dir)?,
        issuer: format!("{authority}/{}/v2.0", config.tenant),
        authority,
        fault: Mutex::default(),
        counts: Mutex::default(),
        issuer_keys: Mutex::default(),
        certificates,
        config,
    });
    let routes = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(entra::token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(entra::openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(entra::keys))
        .route("/common/discovery/instance", get(entra::instance_discovery))
        .fallback(vault::handle)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app.clone());

    write_address(&app.config.data_dir.join("address"), address)?;
    if let Some(l) = &admin {
        write_address(&app.config.data_dir.join("admin-address"), l.local_addr()?)?;
    }
    tracing::info!(%address, "serving the vault and the token endpoint over HTTPS");
    let admin_task = admin.map(|l| {
        let admin_routes = Router::new()
            .route("/fault", put(set_fault).get(get_fault))
            .route("/requests", get(requests))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(app.clone());
        tokio::spawn(async move {
            let _ = axum::serve(l, admin_routes).await;
        })
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let serve = async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let (acceptor, routes) = (acceptor.clone(), routes.clone());
            tokio::spawn(async move {
                // A client that fails the handshake (e.g. does not trust the CA) is only logged.
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(routes);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    };
    tokio::select! {
        () = serve => {}
        () = shutdown => {}
    }
    if let Some(t) = admin_task {
        t.abort();
    }
    Ok(())
}

fn write_address(path: &std::path::Path, address: SocketAddr) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, address.to_string())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

async fn set_fault(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) => {
            tracing::info!(?fault, "fault switch");
            *app.fault.lock().expect("fault lock") = fault.clone();
            json_response(StatusCode::OK, &fault)
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("invalid fault: {e}\n")).into_response(),
    }
}

async fn get_fault(State(app): State<Arc<App>>) -> Response {
    let fault = app.fault.lock().expect("fault lock").clone();
    json_response(StatusCode::OK, &fault)
}

async fn requests(State(app): State<Arc<App>>) -> Response {
    let counts = app.counts.lock().expect("counts lock").clone();
    json_response(StatusCode::OK, &counts)
}
