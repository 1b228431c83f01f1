//! The controller put together: the kube client, the key ring and its watch, HTTP, signals, and
//! the leader's work (key manager and reconciler) under leader election.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backup::{Backup, BackupDuty};
use crate::flags::{Config, KubeConfig, watched_namespaces};
use crate::keys::{self, KeyRing};
use crate::startup::{self, Phase};
use crate::{VERSION, events, http, leader, metrics, reconcile, throttle};

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let Config {
        kube,
        namespace,
        additional_namespaces,
        keys: key_config,
        key_order,
        http: http_config,
        mut reconcile,
        leader: leader_config,
        backup,
        metrics_omit_secret_labels,
        log: _, // used by `logging::init`
    } = config;
    let client = client(&kube).await?;
    startup::mark(Phase::Client);
    let namespace = own_namespace(namespace);
    let identity = identity(leader_config.identity.as_deref());
    reconcile.namespaces = watched_namespaces(additional_namespaces.as_deref(), &namespace);
    tracing::info!(version = VERSION, namespace = %namespace, identity = %identity, "starting keyseal-controller");

    let backup = backup
        .map(|settings| Backup::connect(&settings, &namespace).map(Arc::new))
        .transpose()?;
    let shutdown = CancellationToken::new();
    let ring = Arc::new(KeyRing::new(key_order));
    tokio::spawn(startup::watch_first_key(ring.clone()));
    let metrics = metrics::Metrics::new(metrics_omit_secret_labels);
    let events = events::Events::new(client.clone(), identity.clone());
    tokio::spawn(keys::watch_keys(
        client.clone(),
        namespace.clone(),
        key_config.prefix.clone(),
        ring.clone(),
        events.clone(),
    ));
    // Every replica fills its SealedSecret cache from the start: a new leader's is warm.
    let cache = Arc::new(reconcile::SealedSecretCache::start(
        &client, &reconcile, &shutdown,
    ));
    let ctx = reconcile::Context::new(
        client.clone(),
        ring.clone(),
        reconcile,
        events.clone(),
        metrics.clone(),
    );
    // HTTP: every replica serves the certificate, verify and rotate.
    let refresh = metrics::key_gauges(ring.clone(), metrics.clone(), ctx.clone());
    let state = http::HttpState::new(&http_config, ring.clone(), metrics.clone(), refresh);
    let servers = http::serve(&http_config, state, shutdown.clone()).await?;
    startup::mark(Phase::HttpListening);
    let force = relay_signals(shutdown.clone());

    let leader_work = Arc::new(LeaderWork {
        client: client.clone(),
        namespace: namespace.clone(),
        key_config,
        ring,
        backup,
        events,
        metrics: metrics.clone(),
        ctx,
        cache,
    });
    let lead = |stop, force| leader_work.clone().lead(stop, force);
    let led = leader::run(
        &leader_config,
        leader::Candidate {
            client: client.clone(),
            namespace: &namespace,
            identity: &identity,
        },
        &metrics,
        force,
        shutdown.clone(),
        lead,
    )
    .await;
    shutdown.cancel();
    drain(servers).await;
    led
}

/// Lets open HTTP connections finish, for up to 10 s.
async fn drain(servers: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_secs(10), servers)
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after 10s; closing them");
    }
}

/// What the leader runs, and with what.
struct LeaderWork {
    client: kube::Client,
    namespace: String,
    key_config: keys::KeyConfig,
    ring: Arc<KeyRing>,
    backup: Option<Arc<Backup>>,
    events: events::Events,
    metrics: Arc<metrics::Metrics>,
    ctx: Arc<reconcile::Context>,
    cache: Arc<reconcile::SealedSecretCache>,
}

impl LeaderWork {
    /// One term of leadership: the key manager, the key backups (with a vault) and the
    /// reconciler, until `stop` fires.
    async fn lead(self: Arc<Self>, stop: CancellationToken, force: mpsc::Receiver<()>) {
        let duty = keys::KeyDuty {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            config: self.key_config.clone(),
            ring: self.ring.clone(),
            backup: self.backup.clone(),
        };
        let keys = tokio::spawn(keys::manage_keys(duty, force, stop.clone()));
        let backups = self.backup.clone().map(|backup| {
            let duty = BackupDuty {
                client: self.client.clone(),
                namespace: self.namespace.clone(),
                key_prefix: self.key_config.prefix.clone(),
                backup,
                ring: self.ring.clone(),
                events: self.events.clone(),
                metrics: self.metrics.clone(),
            };
            tokio::spawn(crate::backup::run(duty, stop.clone()))
        });
        let reconciler = tokio::spawn(reconcile::run(self.ctx.clone(), self.cache.clone(), stop));
        let _ = tokio::join!(keys, reconciler);
        if let Some(backups) = backups {
            let _ = backups.await;
        }
    }
}

async fn client(config: &KubeConfig) -> anyhow::Result<kube::Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster (use --kubeconfig)")?,
    };
    let builder = kube::client::ClientBuilder::try_from(kube_config)?;
    if config.qps <= 0.0 {
        return Ok(builder.build()); // as upstream: zero or negative QPS disables the limit
    }
    let bucket = throttle::Bucket::new(config.qps, config.burst);
    Ok(builder.with_layer(&throttle::ThrottleLayer(bucket)).build())
}

/// The namespace holding keys and the Lease: `--namespace`, else this pod's, else kube-system.
fn own_namespace(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kube-system".to_owned())
}

/// The identity in the Lease: `--leader-election-id`, else the pod's name and a random suffix.
fn identity(flag: Option<&str>) -> String {
    if let Some(id) = flag {
        return id.to_owned();
    }
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "keyseal-controller".to_owned());
    let mut suffix = [0u8; 4];
    let _ = keyseal_crypto::SealRng::fill(&mut keyseal_crypto::SystemRng, &mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}_{suffix}")
}

/// SIGTERM and SIGINT stop gracefully (cancel `shutdown`); SIGUSR1 asks the leader for a new key
/// (the returned channel).
fn relay_signals(shutdown: CancellationToken) -> mpsc::Receiver<()> {
    let (force_tx, force_rx) = mpsc::channel::<()>(1);
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
    force_rx
}
