//! What `faults` and `load` share: a private control plane with one namespace, the manifests'
//! RBAC, a workload of SealedSecrets with the data each must unseal to, two unmanaged Secrets
//! planted beforehand, and a meter of the API requests the plane served.
//!
//! The plane is private so that its kube-apiserver's `apiserver_request_total` counts only the
//! controller under test, the bench itself and the plane's own components (kube-controller-
//! manager, the API server's own loops), whose share is in the idle baseline. The bench counts
//! its own requests and subtracts them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::SealedSecret;
use keyseal_api::annotations::SEALING_KEY_LABEL;
use keyseal_crypto::Certificate;
use keyseal_testenv::controller::{ControllerProcess, Launch};
use keyseal_testenv::metrics::Metrics;
use keyseal_testenv::{Cluster, PrivatePlane, ServiceAccountIdentity, TestNamespace};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use tokio::sync::Mutex;

/// Name of the unmanaged Secret no SealedSecret names.
pub const BYSTANDER: &str = "bystander";
/// Name of the unmanaged Secret a SealedSecret of the same name must not take over.
pub const COLLIDING: &str = "colliding";

/// What each target Secret must hold, by name.
pub type Expected = HashMap<String, BTreeMap<String, ByteString>>;

/// A private plane, a namespace on it and the workload in that namespace.
pub struct Rig {
    pub meter: RequestMeter,
    pub ns: TestNamespace,
    pub sa: ServiceAccountIdentity,
    pub cluster: Cluster,
    /// What every SealedSecret created so far must unseal to.
    pub expected: Expected,
    /// The unmanaged Secrets and their resourceVersion when planted.
    bystanders: Vec<(String, String)>,
    controller: PathBuf,
    /// Last: dropped (stopped) after the namespace above.
    pub plane: PrivatePlane,
}

impl Rig {
    /// Starts a plane, creates the namespace, the controller's identity and the two unmanaged
    /// Secrets.
    pub async fn start(prefix: &str, controller: PathBuf) -> Result<Self> {
        let plane = PrivatePlane::start().await?;
        let cluster = plane.cluster().await?;
        cluster.install_crd().await?;
        let ns = cluster.namespace(prefix).await?;
        let sa = cluster.controller_identity(ns.name()).await?;
        let meter = RequestMeter::start(&cluster).await?;
        let mut rig = Self {
            plane,
            cluster,
            ns,
            sa,
            meter,
            expected: Expected::new(),
            bystanders: Vec::new(),
            controller,
        };
        for name in [BYSTANDER, COLLIDING] {
            let mut secret = Secret::default();
            secret.metadata.name = Some(name.to_owned());
            secret.data = Some(BTreeMap::from([(
                "owner".to_owned(),
                ByteString(b"someone else".to_vec()),
            )]));
            let created = rig
                .secrets()
                .create(&PostParams::default(), &secret)
                .await?;
            rig.meter.tally(1);
            let rv = created.metadata.resource_version.unwrap_or_default();
            rig.bystanders.push((name.to_owned(), rv));
        }
        Ok(rig)
    }

    pub fn name(&self) -> &str {
        self.ns.name()
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.cluster.client(), self.name())
    }

    pub fn sealed_secrets(&self) -> Api<SealedSecret> {
        Api::namespaced(self.cluster.client(), self.name())
    }

    /// keyseal-controller for this namespace as the manifests' ServiceAccount, without key
    /// renewal; add flags and spawn.
    pub fn launch(&self) -> Launch<'_> {
        Launch::new(&self.controller, self.name()).args(["--key-renew-period", "0"])
    }

    /// Spawns [`Self::launch`] with `extra` and waits until it is healthy and serves a key.
    pub async fn start_controller(&self, extra: &[&str]) -> Result<ControllerProcess> {
        let c = self.launch().args(extra).spawn_keyseal(&self.sa)?;
        serving(c).await
    }

    /// Seals `names` (with `version` in their values) for this namespace under `cert`, creates
    /// them (`concurrency` in flight) and records what each must unseal to. A name created
    /// before is replaced (a new version of its data).
    pub async fn put(
        &mut self,
        cert: &Certificate,
        names: Vec<String>,
        version: u32,
        concurrency: usize,
    ) -> Result<()> {
        let ns = self.name().to_owned();
        let cert = cert.clone();
        let sealed =
            tokio::task::spawn_blocking(move || seal_all(&cert, &ns, &names, version)).await??;
        let api = self.sealed_secrets();
        let mut objects = Vec::with_capacity(sealed.len());
        for (ss, data) in sealed {
            let name = ss.metadata.name.clone().unwrap_or_default();
            self.expected.insert(name, data);
            objects.push(ss);
        }
        let results: Vec<Result<u64>> = futures::stream::iter(objects)
            .map(|ss| replace(api.clone(), ss))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        for made in results {
            self.meter.tally(made?);
        }
        Ok(())
    }

    /// [`Self::put`] for the names `s-<from>` … `s-<to - 1>`, version 0, and the SealedSecret
    /// that collides with the unmanaged Secret [`COLLIDING`].
    pub async fn create_workload(
        &mut self,
        cert: &Certificate,
        from: usize,
        to: usize,
        concurrency: usize,
    ) -> Result<()> {
        let names = (from..to).map(|i| format!("s-{i}")).collect();
        self.put(cert, names, 0, concurrency).await?;
        // The collision: sealed, but its Secret must stay as it is (not in `expected`).
        let ns = self.name().to_owned();
        let c = cert.clone();
        let colliding =
            tokio::task::spawn_blocking(move || seal_all(&c, &ns, &[COLLIDING.to_owned()], 0))
                .await??;
        for (ss, _) in colliding {
            let made = replace(self.sealed_secrets(), ss).await?;
            self.meter.tally(made);
        }
        self.expected.remove(COLLIDING);
        Ok(())
    }

    /// How many target Secrets hold their expected data, and how many SealedSecrets (not the
    /// colliding one) report `Synced=True` at their current generation.
    pub async fn progress(&self) -> Result<(usize, usize)> {
        let secrets = self.secrets().list(&ListParams::default()).await?;
        let sealed = self.sealed_secrets().list(&ListParams::default()).await?;
        self.meter.tally(2);
        let correct = secrets
            .items
            .iter()
            .filter(|s| {
                let name = s.metadata.name.as_deref().unwrap_or_default();
                self.expected
                    .get(name)
                    .is_some_and(|want| s.data.as_ref() == Some(want))
            })
            .count();
        let synced = sealed
            .items
            .iter()
            .filter(|ss| {
                self.expected
                    .contains_key(ss.metadata.name.as_deref().unwrap_or(""))
            })
            .filter(|ss| is_synced(ss))
            .count();
        Ok((correct, synced))
    }

    /// [`Self::converge_every`] 250 ms.
    pub async fn converge(&self, since: Instant, timeout: Duration) -> Result<Duration> {
        self.converge_every(since, timeout, Duration::from_millis(250))
            .await
    }

    /// Polls [`Self::progress`] every `interval` until every target Secret is correct and
    /// every SealedSecret synced, returning the time since `since` to the start of the poll
    /// that saw it; fails after `timeout` (naming how far it got).
    pub async fn converge_every(
        &self,
        since: Instant,
        timeout: Duration,
        interval: Duration,
    ) -> Result<Duration> {
        let want = self.expected.len();
        let mut last = (0, 0);
        let mut reported = Instant::now();
        loop {
            let at = since.elapsed();
            match self.progress().await {
                Ok((correct, synced)) if correct == want && synced == want => return Ok(at),
                Ok(p) => last = p,
                Err(e) => eprintln!("    listing failed (retrying): {e}"),
            }
            if since.elapsed() > timeout {
                bail!(
                    "not converged within {timeout:?}: {}/{want} Secrets correct, {}/{want} SealedSecrets synced",
                    last.0,
                    last.1
                );
            }
            if reported.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "    {}/{want} correct, {}/{want} synced after {:.0} s",
                    last.0,
                    last.1,
                    since.elapsed().as_secs_f64()
                );
                reported = Instant::now();
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// The sealing-key Secrets in the namespace.
    pub async fn key_count(&self) -> Result<usize> {
        let lp = ListParams::default().labels(SEALING_KEY_LABEL);
        let n = self.secrets().list(&lp).await?.items.len();
        self.meter.tally(1);
        Ok(n)
    }

    /// The properties that must hold after a fault, each violation as a sentence: every target
    /// Secret holds exactly its expected data, there are `keys` sealing keys, and the unmanaged
    /// Secrets have the resourceVersion they were planted with.
    pub async fn violations(&self, keys: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let secrets = self.secrets().list(&ListParams::default()).await?;
        self.meter.tally(1);
        let by_name: HashMap<&str, &Secret> = secrets
            .items
            .iter()
            .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
            .collect();
        let wrong: Vec<&str> = self
            .expected
            .iter()
            .filter(|(name, want)| {
                by_name
                    .get(name.as_str())
                    .is_none_or(|s| s.data.as_ref() != Some(*want))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if !wrong.is_empty() {
            out.push(format!(
                "{} Secret(s) missing or with wrong data, e.g. {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(5)]
            ));
        }
        let have = self.key_count().await?;
        if have != keys {
            out.push(format!(
                "duplicate key: {have} sealing-key Secrets, expected {keys}"
            ));
        }
        for (name, rv) in &self.bystanders {
            let now = by_name
                .get(name.as_str())
                .and_then(|s| s.metadata.resource_version.as_deref());
            if now != Some(rv.as_str()) {
                out.push(format!(
                    "the unmanaged Secret {name} was touched (resourceVersion {rv} -> {now:?})"
                ));
            }
        }
        Ok(out)
    }

    /// Deletes the target Secrets `names` (the controller must recreate them).
    pub async fn delete_secrets(&self, names: &[String]) -> Result<()> {
        for name in names {
            match self.secrets().delete(name, &DeleteParams::default()).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            self.meter.tally(1);
        }
        Ok(())
    }
}

/// Waits until `c` is healthy and serves a certificate (at most 60 s).
pub async fn serving(mut c: ControllerProcess) -> Result<ControllerProcess> {
    c.wait_healthy(Duration::from_secs(60)).await?;
    c.cert_pem().await.with_context(|| c.logs())?;
    Ok(c)
}

/// The certificate `c` serves.
pub async fn certificate(c: &ControllerProcess) -> Result<Certificate> {
    Ok(Certificate::from_pem(c.cert_pem().await?.as_bytes())?)
}

/// Whether `c` leads (its `sealed_secrets_controller_is_leader` gauge).
pub async fn is_leader(c: &ControllerProcess) -> bool {
    c.metrics()
        .await
        .is_ok_and(|m| m.get("sealed_secrets_controller_is_leader", &[]) == Some(1.0))
}

/// Whether `ss` reports `Synced=True` at its current generation.
pub fn is_synced(ss: &SealedSecret) -> bool {
    let Some(status) = ss.status.as_ref() else {
        return false;
    };
    status.observed_generation == ss.metadata.generation
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Synced" && c.status == "True")
}

/// Creates `ss`, or replaces the SealedSecret of that name (a new version); returns the
/// requests it made (for the meter).
async fn replace(api: Api<SealedSecret>, mut ss: SealedSecret) -> Result<u64> {
    let name = ss.metadata.name.clone().unwrap_or_default();
    let mut made = 0;
    for attempt in 0..10u64 {
        made += 1;
        let result = match api.create(&PostParams::default(), &ss).await {
            Err(kube::Error::Api(e)) if e.code == 409 => {
                made += 2;
                match api.get(&name).await {
                    Ok(old) => {
                        ss.metadata.resource_version = old.metadata.resource_version;
                        api.replace(&name, &PostParams::default(), &ss)
                            .await
                            .map(|_| ())
                    }
                    Err(e) => Err(e),
                }
            }
            other => other.map(|_| ()),
        };
        match result {
            Ok(()) => return Ok(made),
            Err(_) if attempt < 9 => {
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating SealedSecret {name}")),
        }
    }
    unreachable!("the last attempt returns")
}

/// Seals each of `names` (one or two items, `version` in the values).
pub fn seal_all(
    cert: &Certificate,
    namespace: &str,
    names: &[String],
    version: u32,
) -> Result<Vec<(SealedSecret, BTreeMap<String, ByteString>)>> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut data = BTreeMap::from([(
                "password".to_owned(),
                ByteString(format!("{name}-v{version}-correct-horse").into_bytes()),
            )]);
            if i % 2 == 1 {
                data.insert(
                    "username".to_owned(),
                    ByteString(format!("user-{name}").into_bytes()),
                );
            }
            let mut secret = Secret::default();
            secret.metadata.name = Some(name.clone());
            secret.metadata.namespace = Some(namespace.to_owned());
            secret.data = Some(data.clone());
            Ok((keyseal_api::seal_secret(&secret, cert.public_key())?, data))
        })
        .collect()
}

/// The API requests the plane's kube-apiserver served (`apiserver_request_total`, requests for
/// resources only: not `/metrics`, `/readyz` or discovery), summed across restarts of the API
/// server (a counter that went down was reset), minus the bench's own requests. Kinds are
/// `VERB resource[/subresource]`, followed by the response code when it is not 2xx.
pub struct RequestMeter {
    state: Arc<Mutex<MeterState>>,
    bench: Arc<AtomicU64>,
    task: tokio::task::AbortHandle,
}

#[derive(Default)]
struct MeterState {
    /// Requests counted so far, across restarts, by `VERB resource[/subresource]`.
    total: BTreeMap<String, f64>,
    /// The counters' values at the last scrape.
    last: BTreeMap<String, f64>,
}

/// The meter at one moment.
#[derive(Debug, Clone)]
pub struct Reading {
    at: Instant,
    served: BTreeMap<String, f64>,
    bench: u64,
}

impl Reading {
    /// Requests per second from others than the bench between `earlier` and this reading.
    pub fn rate_since(&self, earlier: &Reading) -> f64 {
        self.count_since(earlier) / (self.at - earlier.at).as_secs_f64().max(1e-3)
    }

    /// Requests from others than the bench between `earlier` and this reading.
    pub fn count_since(&self, earlier: &Reading) -> f64 {
        let bench = self.bench.saturating_sub(earlier.bench) as f64;
        let served: f64 = self.by_kind_since(earlier).iter().map(|(_, n)| n).sum();
        (served - bench).max(0.0)
    }

    /// Requests of every kind (`VERB resource`, the bench's own included) between `earlier`
    /// and this reading, most first.
    pub fn by_kind_since(&self, earlier: &Reading) -> Vec<(String, f64)> {
        let mut kinds: Vec<(String, f64)> = self
            .served
            .iter()
            .map(|(k, v)| (k.clone(), v - earlier.served.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, n)| *n > 0.0)
            .collect();
        kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
        kinds
    }

    /// The five most frequent kinds since `earlier`, per second, for a report.
    pub fn top_since(&self, earlier: &Reading) -> String {
        let secs = (self.at - earlier.at).as_secs_f64().max(1e-3);
        self.by_kind_since(earlier)
            .iter()
            .take(5)
            .map(|(k, n)| format!("{k} {:.2}/s", n / secs))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl RequestMeter {
    /// Starts scraping the API server's `/metrics` every second (so that a restart of the API
    /// server loses at most the last second of the old counter).
    pub async fn start(cluster: &Cluster) -> Result<Self> {
        let state = Arc::new(Mutex::new(MeterState::default()));
        let client = cluster.client();
        scrape(&client, &state).await?;
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = scrape(&client, &s).await;
            }
        })
        .abort_handle();
        Ok(Self {
            state,
            bench: Arc::new(AtomicU64::new(0)),
            task,
        })
    }

    /// Counts `n` requests the bench made itself.
    pub fn tally(&self, n: u64) {
        self.bench.fetch_add(n, Ordering::Relaxed);
    }

    /// Scrapes now and returns the reading (the last one when the API server is down).
    pub async fn read(&self, cluster: &Cluster) -> Reading {
        let _ = scrape(&cluster.client(), &self.state).await;
        let state = self.state.lock().await;
        Reading {
            at: Instant::now(),
            served: state.total.clone(),
            bench: self.bench.load(Ordering::Relaxed),
        }
    }

    /// The readings at both ends of the next `window`, during which the bench makes no
    /// request of its own.
    pub async fn idle(&self, cluster: &Cluster, window: Duration) -> (Reading, Reading) {
        let start = self.read(cluster).await;
        tokio::time::sleep(window).await;
        (start, self.read(cluster).await)
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scrape(client: &kube::Client, state: &Mutex<MeterState>) -> Result<()> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = tokio::time::timeout(Duration::from_secs(5), client.request_text(req))
        .await
        .context("scraping the API server timed out")??;
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
    for sample in Metrics::parse(&text).samples() {
        let resource = sample.labels.get("resource").map_or("", String::as_str);
        if sample.name != "apiserver_request_total" || resource.is_empty() {
            continue;
        }
        let verb = sample.labels.get("verb").map_or("", String::as_str);
        let mut kind = match sample.labels.get("subresource").map(String::as_str) {
            Some(sub) if !sub.is_empty() => format!("{verb} {resource}/{sub}"),
            _ => format!("{verb} {resource}"),
        };
        // Refused requests (a create answered 409, …) apart: they wrote nothing.
        match sample.labels.get("code").map(String::as_str) {
            Some(code) if !code.starts_with('2') => kind = format!("{kind} {code}"),
            _ => {}
        }
        *values.entry(kind).or_default() += sample.value;
    }
    let mut state = state.lock().await;
    for (kind, value) in values {
        let last = state.last.get(&kind).copied().unwrap_or(0.0);
        // A counter that went down restarted from zero with the API server.
        let delta = if value >= last { value - last } else { value };
        *state.total.entry(kind.clone()).or_default() += delta;
        state.last.insert(kind, value);
    }
    Ok(())
}
