//! `keyseal-controller`: a drop-in, highly available replacement for the Sealed Secrets controller.

#![forbid(unsafe_code)]

mod events;
mod flags;
mod http;
mod keys;
mod metrics;
mod reconcile;
mod throttle;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;

use crate::flags::{Flags, LogFormat};

/// The version in upstream's form (`v<semver>`, as its Makefile stamps it): printed by
/// `--version`, logged at start-up and exported as the `build_info` metric's `revision`.
pub(crate) const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

fn main() -> std::process::ExitCode {
    let flags = match Flags::try_parse() {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    if flags.version {
        println!("keyseal-controller version: {VERSION}");
        return std::process::ExitCode::SUCCESS;
    }
    init_logging(&flags);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(flags)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "controller stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(flags: &Flags) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{},kube=warn,tower=warn,hyper=warn",
        flags.log_level
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match flags.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn client(flags: &Flags) -> anyhow::Result<kube::Client> {
    let config = match &flags.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster (use --kubeconfig)")?,
    };
    let builder = kube::client::ClientBuilder::try_from(config)?;
    if flags.kube_api_qps <= 0.0 {
        return Ok(builder.build()); // as upstream: zero or negative QPS disables the limit
    }
    let bucket = throttle::Bucket::new(flags.kube_api_qps, flags.kube_api_burst);
    Ok(builder.with_layer(&throttle::ThrottleLayer(bucket)).build())
}

/// The namespace holding keys and the Lease.
fn own_namespace(flags: &Flags) -> String {
    flags
        .namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kube-system".to_owned())
}

fn identity(flags: &Flags) -> String {
    flags.leader_election_id.clone().unwrap_or_else(|| {
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "keyseal-controller".to_owned());
        let mut suffix = [0u8; 4];
        let _ = keyseal_crypto::SealRng::fill(&mut keyseal_crypto::SystemRng, &mut suffix);
        format!(
            "{host}_{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    })
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if flags.old_gc_behavior {
        anyhow::bail!(
            "--old-gc-behavior is not supported: keyseal leaves the deletion of unsealed Secrets to Kubernetes garbage collection (remove the flag)"
        );
    }
    if let Some(cutoff) = &flags.key_cutoff_time {
        flags::parse_cutoff(cutoff).map_err(anyhow::Error::msg)?;
    }
    let flags = Arc::new(flags);
    let client = client(&flags).await?;
    let namespace = own_namespace(&flags);
    let identity = identity(&flags);
    tracing::info!(version = VERSION, namespace = %namespace, identity = %identity, "starting keyseal-controller");

    let shutdown = CancellationToken::new();
    let ring = Arc::new(keys::KeyRing::new(flags.key_order_priority));
    let metrics = metrics::Metrics::new();
    metrics.omit_secret_labels.store(
        flags.metrics_omit_secret_labels,
        std::sync::atomic::Ordering::Relaxed,
    );
    let events = events::Events::new(client.clone(), identity.clone());
    tokio::spawn(keys::watch_keys(
        client.clone(),
        namespace.clone(),
        flags.key_prefix.clone(),
        ring.clone(),
        events.clone(),
    ));
    let ctx = reconcile::Context::new(
        client.clone(),
        ring.clone(),
        flags.clone(),
        events,
        metrics.clone(),
    );

    // HTTP: every replica serves the certificate, verify and rotate.
    let refresh = {
        let (ring, metrics, ctx) = (ring.clone(), metrics.clone(), ctx.clone());
        Arc::new(move || {
            let keys = ring.keys();
            metrics
                .keys
                .set(i64::try_from(keys.len()).unwrap_or(i64::MAX));
            let age = ring
                .newest_time()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            metrics
                .newest_key_age
                .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
            let counts = ctx.per_key_counts();
            for key in keys.iter() {
                let labels = metrics::KeyLabels {
                    fingerprint: key.fingerprint.clone(),
                };
                metrics
                    .sealed_secrets_per_key
                    .get_or_create(&labels)
                    .set(counts.get(&key.fingerprint).copied().unwrap_or(0));
            }
        }) as Arc<dyn Fn() + Send + Sync>
    };
    let state = http::HttpState {
        ring: ring.clone(),
        metrics: metrics.clone(),
        accept_v1_data: flags.accept_deprecated_v1_data,
        limiter: Arc::new(http::RateLimiter::new(
            flags.rate_limit,
            flags.rate_limit_burst,
        )),
        request_timeout: flags.read_timeout + flags.write_timeout,
        refresh,
    };
    let api_listener = tokio::net::TcpListener::bind(
        http::listen_addr(&flags.listen_addr).map_err(anyhow::Error::msg)?,
    )
    .await
    .context("binding --listen-addr")?;
    let metrics_listener = tokio::net::TcpListener::bind(
        http::listen_addr(&flags.listen_metrics_addr).map_err(anyhow::Error::msg)?,
    )
    .await
    .context("binding --listen-metrics-addr")?;
    tracing::info!(api = %api_listener.local_addr()?, metrics = %metrics_listener.local_addr()?, "listening");
    let servers = {
        let (a, m) = (shutdown.clone(), shutdown.clone());
        let api = axum::serve(
            api_listener,
            http::api_router(state.clone())
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { a.cancelled().await });
        let met = axum::serve(
            metrics_listener,
            http::metrics_router(state).into_make_service(),
        )
        .with_graceful_shutdown(async move { m.cancelled().await });
        tokio::spawn(async move {
            let (r1, r2) = tokio::join!(api.into_future(), met.into_future());
            if let Err(e) = r1.and(r2) {
                tracing::error!(error = %e, "HTTP server failed");
            }
        })
    };

    // Signals: SIGTERM/SIGINT stop gracefully; SIGUSR1 asks the leader for a new key.
    let (force_tx, force_rx) = tokio::sync::mpsc::channel::<()>(1);
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (mut term, mut int, mut usr1) = (
                signal(SignalKind::terminate()).expect("SIGTERM handler"),
                signal(SignalKind::interrupt()).expect("SIGINT handler"),
                signal(SignalKind::user_defined1()).expect("SIGUSR1 handler"),
            );
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = usr1.recv() => { let _ = force_tx.try_send(()); }
                }
            }
            tracing::info!("shutting down");
            shutdown.cancel();
        });
    }

    let namespaces = reconcile::watched_namespaces(&flags, &namespace);
    let lead = |stop: CancellationToken, force_rx| {
        let keys = tokio::spawn(keys::manage_keys(
            client.clone(),
            namespace.clone(),
            flags.clone(),
            ring.clone(),
            force_rx,
            stop.clone(),
        ));
        let reconciler = tokio::spawn(reconcile::run(ctx.clone(), namespaces.clone(), stop));
        async move {
            let _ = tokio::join!(keys, reconciler);
        }
    };

    if !flags.leader_elect {
        metrics.leader.set(1);
        lead(shutdown.clone(), force_rx).await;
    } else {
        let duration = flags.leader_election_lease_duration.as_secs().max(3);
        let manager = LeaseManagerBuilder::new(client.clone(), flags.leader_election_lease.clone())
            .with_namespace(namespace.clone())
            .with_identity(identity.clone())
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .build()
            .await
            .context("setting up leader election")?;
        let (mut leading, lease_task) = manager.watch().await;
        // The key manager's SIGUSR1 channel moves from one term of leadership to the next.
        let force_rx = Arc::new(tokio::sync::Mutex::new(force_rx));
        loop {
            while !*leading.borrow_and_update() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    changed = leading.changed() => { changed.context("leader election stopped")?; }
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            tracing::info!(identity = %identity, "became the leader");
            metrics.leader.set(1);
            let term = shutdown.child_token();
            let (relay_tx, relay_rx) = tokio::sync::mpsc::channel(1);
            let relay = {
                let (force_rx, term) = (force_rx.clone(), term.clone());
                tokio::spawn(async move {
                    let mut rx = force_rx.lock().await;
                    loop {
                        tokio::select! {
                            () = term.cancelled() => return,
                            Some(()) = rx.recv() => { let _ = relay_tx.try_send(()); }
                        }
                    }
                })
            };
            let work = tokio::spawn(lead(term.clone(), relay_rx));
            while *leading.borrow_and_update() && !shutdown.is_cancelled() {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    changed = leading.changed() => { if changed.is_err() { break; } }
                }
            }
            term.cancel();
            if tokio::time::timeout(Duration::from_secs(10), work)
                .await
                .is_err()
            {
                tracing::warn!("the leader's work did not stop within 10s; abandoning it");
            }
            relay.abort();
            metrics.leader.set(0);
            if shutdown.is_cancelled() {
                break;
            }
            tracing::warn!("lost leadership; standing by");
        }
        drop(leading); // releases the Lease so a standby takes over at once
        let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    }
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(10), servers)
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after 10s; closing them");
    }
    Ok(())
}
