//! `keyseal-bench startup`: what a clean start, a restart and a failover cost keyseal-controller,
//! each next to the upstream controller doing the same on the same objects in the same run, and
//! keyseal's initial-sync throughput as a fraction of two ceilings measured in the same run.
//!
//! Everything runs on one private plane (see [`crate::rig`]), in one namespace holding one
//! RSA-4096 sealing key (made by the bench, in upstream's format) and `--count` SealedSecrets
//! (1 item for even, 2 for odd indices) created before any controller starts. The upstream
//! controller runs tuned (`--kubeclient-qps 100 --kubeclient-burst 200`, as in `controller`): at
//! its defaults (5 QPS) one pass over 1,000 SealedSecrets takes about 13 minutes. Per subject,
//! keyseal first, then upstream:
//!
//! 1. **clean start**: no Secret of the SealedSecrets exists (before upstream's, the bench
//!    deletes keyseal's) and, before keyseal's, no Lease. Timed from spawning the process:
//!    `/readyz` answering 200, the first target Secret written (a watch on Secrets, from
//!    outside), and every target Secret holding its data with every SealedSecret `Synced=True`
//!    at its generation (watches). Initial-sync throughput = count / that time. Upstream finds
//!    the statuses keyseal wrote already `Synced`, so it writes none: its figure is, if anything,
//!    flattered.
//! 2. **restart**: SIGTERM, then the same command again on the synced objects. Timed from the
//!    spawn: `/readyz` 200, and every SealedSecret handled: the process's own
//!    `sealed_secrets_controller_condition_info{condition="Synced"}` is 1 for each (both
//!    controllers set it once they have taken an object in; polled every [`SCRAPE_EVERY`], so
//!    the time is known to that step). Counted from the spawn until [`SETTLE`] after that: the
//!    process's unseal requests (`sealed_secrets_controller_unseal_requests_total`; with one key
//!    each item costs one RSA private-key operation) and, from the plane's
//!    `apiserver_request_total` (this plane serves nothing else), the writes of Secrets, of
//!    SealedSecret statuses and of Events, and the Secret reads.
//! 3. **failover**: SealedSecrets arrive at `--rate` per second; after `--warm-secs` the leader
//!    is SIGKILLed. keyseal runs a second replica with its default leader election (the Lease's
//!    duration is read back from the Lease); upstream has no standby, so it is started again at
//!    once: its own restart is the reference. Timed: from the kill to the first Secret written
//!    for a SealedSecret created after the kill. Then every Secret must hold its data, the one
//!    key must still be the only one and the planted unmanaged Secrets must be untouched (a
//!    violation makes the bench exit non-zero), and the arrivals are deleted so that both
//!    subjects start from the same objects.
//!
//! The ceilings, measured before any controller runs:
//! * **RSA**: RSA-4096 private-key operations per second on every core at once
//!   ([`crate::crypto::private_ops_all_cores`]) divided by the mean items per SealedSecret:
//!   the SealedSecrets per second decryption alone allows;
//! * **writes**: for a copy of every SealedSecret in a second namespace, what a controller
//!   writes for it (create the Secret, PUT the status, create an `events.k8s.io` Event), done by
//!   a plain client as the controller's ServiceAccount, with as many objects in flight as
//!   keyseal's default `--workers` (4 per core): the SealedSecrets per second the API server
//!   allows on this machine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use keyseal_api::{CONDITION_SYNCED, SealedSecret, SealedSecretCondition, SealedSecretStatus};
use keyseal_crypto::Certificate;
use keyseal_testenv::controller::{ControllerProcess, Launch};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Resource as _, ResourceExt as _};

use crate::StartupArgs;
use crate::controller::{TUNED, create_all, create_key_secret, key_pair, upstream_version};
use crate::rig::{Rig, is_leader, is_synced, seal_all, serving};

/// How often the bench looks at `/readyz` and at its watches while timing.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How often it scrapes the controller's `/metrics` while waiting for "all handled".
const SCRAPE_EVERY: Duration = Duration::from_millis(250);
/// After "all handled": time for the last events and status writes before the count is read.
const SETTLE: Duration = Duration::from_secs(2);
/// keyseal-controller's default leader Lease (`--leader-election-lease`).
const LEASE_NAME: &str = "sealed-secrets-controller-leader";
/// The gauge both controllers set per SealedSecret they have taken in.
const CONDITION_INFO: &str = "sealed_secrets_controller_condition_info";
/// Unseal attempts of the process (both controllers).
const UNSEAL_REQUESTS: &str = "sealed_secrets_controller_unseal_requests_total";

/// What each target Secret holds.
type Data = BTreeMap<String, ByteString>;

/// Sizes and binaries of one run.
struct Plan {
    keyseal: PathBuf,
    upstream: PathBuf,
    count: usize,
    rate: u32,
    warm: Duration,
    kills: usize,
    timeout: Duration,
    rsa: Duration,
    concurrency: usize,
    /// keyseal's default `--workers`: the writes ceiling's requests in flight.
    workers: usize,
}

/// The two controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Keyseal,
    Upstream,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Keyseal => "keyseal",
            Subject::Upstream => "upstream tuned",
        }
    }
}

/// Runs the benchmark and prints its report; an error names every failed check.
pub fn run(args: &StartupArgs) -> Result<()> {
    let plan = plan(args)?;
    crate::print_machine();
    println!("cpu: {}", crate::cpu_model());
    println!(
        "startup: {} SealedSecrets (1 or 2 items, one RSA-4096 key) on a private plane; keyseal-controller \
         (its defaults) vs the upstream controller ({}) with {}; the machine's load average at the start: {}",
        plan.count,
        upstream_version(&plan.upstream),
        TUNED.join(" "),
        load_average()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(measure(&plan))?;
    print_report(&plan, &report);
    let failures: Vec<&String> = report.failovers.iter().flat_map(|f| &f.failures).collect();
    if !failures.is_empty() {
        bail!(
            "{} check(s) failed after a failover: {failures:?}",
            failures.len()
        );
    }
    Ok(())
}

fn plan(args: &StartupArgs) -> Result<Plan> {
    let keyseal = crate::controller_binary(args.controller.as_deref())?;
    let upstream = match &args.upstream {
        Some(p) => p.clone(),
        None => keyseal_testenv::fixture("controller")?,
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Ok(Plan {
        keyseal,
        upstream,
        count: args
            .count
            .unwrap_or(if args.quick { 1_000 } else { 10_000 }),
        rate: args.rate,
        warm: Duration::from_secs(args.warm_secs),
        kills: args.kills,
        timeout: Duration::from_secs(args.timeout.unwrap_or(if args.quick { 300 } else { 1_800 })),
        rsa: Duration::from_secs(args.rsa_seconds),
        concurrency: args.concurrency,
        workers: 4 * cores,
    })
}

/// `/proc/loadavg`'s first three fields.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Everything measured on the plane.
struct Report {
    /// Items (RSA operations with one key) over all SealedSecrets of the sweeps.
    items: usize,
    /// RSA-4096 private operations per second on all cores, just before and just after
    /// keyseal's clean start, and the threads that ran them.
    rsa_ops: [f64; 2],
    threads: usize,
    /// SealedSecrets per second of the writes ceiling.
    writes_ceiling: f64,
    /// Per subject: clean start, restart, failover.
    starts: Vec<(Subject, Sweep)>,
    restarts: Vec<(Subject, Sweep)>,
    failovers: Vec<Failover>,
}

/// The plane, the workload and the watches on it.
struct Bench<'p> {
    plan: &'p Plan,
    /// The watches first: dropped (stopped) before the plane goes.
    secrets: Seen<Option<Data>>,
    sealed: Seen<bool>,
    rig: Rig,
    cert: Certificate,
}

async fn measure(plan: &Plan) -> Result<Report> {
    eprintln!("starting a private plane...");
    let mut rig = Rig::start("startup", plan.keyseal.clone()).await?;
    let (key, cert) = tokio::task::spawn_blocking(|| key_pair(SystemTime::now())).await??;
    create_key_secret(&rig.secrets(), rig.name(), &key, &cert).await?;
    eprintln!("creating {} SealedSecrets (not timed)...", plan.count);
    let names = (0..plan.count).map(|i| format!("s-{i}")).collect();
    rig.put(&cert, names, 0, plan.concurrency).await?;
    let items = rig.expected.values().map(BTreeMap::len).sum();
    let secrets = Seen::start(rig.secrets(), |s: &Secret| s.data.clone()).await?;
    let sealed = Seen::start(rig.sealed_secrets(), is_synced).await?;
    let mut bench = Bench {
        plan,
        secrets,
        sealed,
        rig,
        cert,
    };
    let (writes_ceiling, _ceiling_namespace) = bench.writes_ceiling().await?;
    let (before, threads) = rsa_ceiling(plan).await?;
    let mut report = Report {
        items,
        rsa_ops: [before, 0.0],
        threads,
        writes_ceiling,
        starts: Vec::new(),
        restarts: Vec::new(),
        failovers: Vec::new(),
    };
    for subject in [Subject::Keyseal, Subject::Upstream] {
        if subject == Subject::Upstream {
            bench.delete_target_secrets().await?;
        }
        eprintln!("{}: clean start...", subject.name());
        let (c, start) = bench.start(subject, Goal::Synced).await?;
        report.starts.push((subject, start));
        if subject == Subject::Keyseal {
            report.rsa_ops[1] = rsa_ceiling(plan).await?.0;
        }
        eprintln!("{}: restart...", subject.name());
        stop(c).await?;
        let (c, restart) = bench.start(subject, Goal::Handled).await?;
        report.restarts.push((subject, restart));
        eprintln!("{}: failover...", subject.name());
        let (c, failover) = bench.failover(c, subject).await?;
        report.failovers.push(failover);
        stop(c).await?;
    }
    Ok(report)
}

/// RSA-4096 private operations per second on all cores, and the thread count.
async fn rsa_ceiling(plan: &Plan) -> Result<(f64, usize)> {
    eprintln!("RSA ceiling: {} s on every core...", plan.rsa.as_secs());
    let budget = plan.rsa;
    tokio::task::spawn_blocking(move || crate::crypto::private_ops_all_cores(budget)).await?
}

/// SIGTERM, and the exit awaited.
async fn stop(c: ControllerProcess) -> Result<()> {
    c.stop().await.context("stopping the controller")?;
    Ok(())
}

/// What the bench waits for after a spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Every target Secret holds its data and every SealedSecret is `Synced` (the watches).
    Synced,
    /// The process reports every SealedSecret `Synced` in its condition gauge.
    Handled,
}

/// What one start of a controller showed, timed from its spawn.
#[derive(Debug, Default)]
struct Sweep {
    ready: Option<Duration>,
    first_secret: Option<Duration>,
    /// The goal reached; `None` when the limit came first.
    done: Option<Duration>,
    /// SealedSecrets the process reported handled at the end, of `total`.
    handled: usize,
    total: usize,
    unseals: f64,
    requests: Requests,
}

/// API requests of interest, counted on the plane.
#[derive(Debug, Default, Clone, Copy)]
struct Requests {
    secret_writes: f64,
    status_writes: f64,
    events: f64,
    /// Writes of those three the API server refused (e.g. a create answered 409).
    refused_writes: f64,
    secret_reads: f64,
}

impl Requests {
    /// Sorts `apiserver_request_total` kinds (`VERB resource[/subresource]`) into the counts.
    fn from_kinds(kinds: &[(String, f64)]) -> Self {
        let mut out = Self::default();
        for (kind, n) in kinds {
            let mut words = kind.split(' ');
            let (Some(verb), Some(resource)) = (words.next(), words.next()) else {
                continue;
            };
            let refused = words.next().is_some();
            let write = matches!(verb, "POST" | "PUT" | "PATCH" | "APPLY");
            let slot = match (write, refused, verb, resource) {
                (true, true, _, "secrets" | "sealedsecrets/status" | "events") => {
                    &mut out.refused_writes
                }
                (true, false, _, "secrets") => &mut out.secret_writes,
                (true, false, _, "sealedsecrets/status") => &mut out.status_writes,
                (true, false, _, "events") => &mut out.events,
                (false, _, "GET", "secrets") => &mut out.secret_reads,
                _ => continue,
            };
            *slot += n;
        }
        out
    }

    /// Successful writes of Secrets, statuses and events.
    fn writes(&self) -> f64 {
        self.secret_writes + self.status_writes + self.events
    }
}

/// The failovers of one subject: the time from each kill to the first new Secret.
#[derive(Debug)]
struct Failover {
    subject: Subject,
    /// Per kill; `None` when the limit came first.
    first_new: Vec<Option<Duration>>,
    /// keyseal's Lease duration as the Lease says.
    lease: Option<i32>,
    arrived: usize,
    failures: Vec<String>,
}

impl Failover {
    /// The median time to the first new Secret (upper median), if every kill got one.
    fn median(&self) -> Option<f64> {
        let mut secs: Vec<f64> = self
            .first_new
            .iter()
            .map(|d| d.map(|d| d.as_secs_f64()))
            .collect::<Option<_>>()?;
        secs.sort_by(f64::total_cmp);
        secs.get(secs.len() / 2).copied()
    }
}

impl Bench<'_> {
    fn spawn(&self, subject: Subject) -> Result<ControllerProcess> {
        match subject {
            Subject::Keyseal => self.rig.launch().spawn_keyseal(&self.rig.sa),
            Subject::Upstream => Launch::new(&self.plan.upstream, self.rig.name())
                .args(["--key-renew-period", "0"])
                .args(TUNED)
                .spawn_upstream(&self.rig.cluster, &self.rig.sa),
        }
    }

    /// Spawns `subject` and times it until `goal` (and `/readyz`), then counts its work.
    async fn start(&self, subject: Subject, goal: Goal) -> Result<(ControllerProcess, Sweep)> {
        let before = self.rig.meter.read(&self.rig.cluster).await;
        let mut c = self.spawn(subject)?;
        let t0 = c.started();
        let mut out = Sweep {
            total: self.rig.expected.len(),
            ..Sweep::default()
        };
        let mut scraped: Option<Instant> = None;
        loop {
            if let Some(status) = c.try_wait()? {
                bail!("{} exited with {status}:\n{}", subject.name(), tail(&c));
            }
            let now = Instant::now();
            if out.ready.is_none() && matches!(c.get("/readyz").await, Ok((200, _))) {
                out.ready = Some(now - t0);
            }
            if out.first_secret.is_none() {
                let first = self
                    .secrets
                    .lock()
                    .first_change(t0, |n| self.rig.expected.contains_key(n));
                out.first_secret = first.map(|at| at - t0);
            }
            match goal {
                Goal::Synced => out.done = self.synced_at().map(|at| at.max(t0) - t0),
                Goal::Handled if scraped.is_none_or(|t| t.elapsed() >= SCRAPE_EVERY) => {
                    scraped = Some(now);
                    (out.handled, out.unseals) = self.handled(&c).await;
                    if out.handled >= out.total {
                        out.done = Some(now - t0);
                    }
                }
                Goal::Handled => {}
            }
            if out.done.is_some() && out.ready.is_some() {
                break;
            }
            if t0.elapsed() > self.plan.timeout {
                eprintln!(
                    "  time limit: ready {:?}, done {:?}, handled {}/{}",
                    out.ready, out.done, out.handled, out.total
                );
                break;
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        tokio::time::sleep(SETTLE).await;
        (out.handled, out.unseals) = self.handled(&c).await;
        let after = self.rig.meter.read(&self.rig.cluster).await;
        out.requests = Requests::from_kinds(&after.by_kind_since(&before));
        eprintln!("  {}: {out:?}", subject.name());
        Ok((c, out))
    }

    /// When every target Secret held its data and every SealedSecret was `Synced`, if so now.
    fn synced_at(&self) -> Option<Instant> {
        let expected = &self.rig.expected;
        let secrets = self
            .secrets
            .lock()
            .all_at(expected.keys(), |n, data| data.as_ref() == expected.get(n))?;
        let sealed = self.sealed.lock().all_at(expected.keys(), |_, s| *s)?;
        Some(secrets.max(sealed))
    }

    /// SealedSecrets of the namespace `c` reports `Synced` (its condition gauge), and its unseal
    /// requests; zeros when the scrape fails.
    async fn handled(&self, c: &ControllerProcess) -> (usize, f64) {
        let Ok(metrics) = c.metrics().await else {
            return (0, 0.0);
        };
        let ns = self.rig.name();
        let handled = metrics
            .samples()
            .iter()
            .filter(|s| {
                s.name == CONDITION_INFO
                    && s.value == 1.0
                    && s.labels.get("namespace").is_some_and(|v| v == ns)
                    && s.labels
                        .get("condition")
                        .is_some_and(|v| v == CONDITION_SYNCED)
            })
            .count();
        (handled, metrics.get(UNSEAL_REQUESTS, &[]).unwrap_or(0.0))
    }

    /// Deletes every target Secret (for the next subject's clean start) and waits until the
    /// watch has seen them go.
    async fn delete_target_secrets(&self) -> Result<()> {
        eprintln!("deleting the target Secrets (not timed)...");
        let names: Vec<String> = self.rig.expected.keys().cloned().collect();
        let chunk = names.len().div_ceil(self.plan.concurrency).max(1);
        let results: Vec<Result<()>> = futures::stream::iter(names.chunks(chunk))
            .map(|part| self.rig.delete_secrets(part))
            .buffer_unordered(self.plan.concurrency)
            .collect()
            .await;
        results.into_iter().collect::<Result<()>>()?;
        self.await_gone(&names).await
    }

    /// Waits until the watch shows none of the Secrets `names`.
    async fn await_gone(&self, names: &[String]) -> Result<()> {
        let deadline = Instant::now() + self.plan.timeout;
        loop {
            let left = {
                let seen = self.secrets.lock();
                names
                    .iter()
                    .filter(|n| seen.latest.contains_key(*n))
                    .count()
            };
            if left == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{left} Secret(s) still there after deleting them");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `--kills` failovers of `subject`, whose process `c` runs and (for keyseal) leads; returns
    /// the process left running.
    async fn failover(
        &mut self,
        c: ControllerProcess,
        subject: Subject,
    ) -> Result<(ControllerProcess, Failover)> {
        let mut out = Failover {
            subject,
            first_new: Vec::new(),
            lease: None,
            arrived: 0,
            failures: Vec::new(),
        };
        let mut running = c;
        let mut arrived = Vec::new();
        for round in 0..self.plan.kills {
            let (survivor, first_new, names) = self.kill_once(running, subject, round).await?;
            running = survivor;
            out.first_new.push(first_new);
            arrived.extend(names);
            if let Err(e) = self.rig.converge(Instant::now(), self.plan.timeout).await {
                out.failures.push(format!("kill {}: {e:#}", round + 1));
            }
            let violations = self.rig.violations(1).await?;
            out.failures.extend(
                violations
                    .into_iter()
                    .map(|v| format!("kill {}: {v}", round + 1)),
            );
        }
        if subject == Subject::Keyseal {
            out.lease = Api::<Lease>::namespaced(self.rig.cluster.client(), self.rig.name())
                .get(LEASE_NAME)
                .await
                .ok()
                .and_then(|l| l.spec?.lease_duration_seconds);
        }
        out.arrived = arrived.len();
        self.remove(&arrived).await?;
        eprintln!("  {out:?}");
        Ok((running, out))
    }

    /// One failover: arrivals, the leader killed (keyseal: next to a fresh standby; upstream:
    /// started again at once), the time to the first new Secret; returns the process left
    /// running, that time and the names that arrived.
    async fn kill_once(
        &mut self,
        c: ControllerProcess,
        subject: Subject,
        round: usize,
    ) -> Result<(ControllerProcess, Option<Duration>, Vec<String>)> {
        let (victim, standby) = match subject {
            Subject::Keyseal => {
                let standby = serving(self.spawn(Subject::Keyseal)?).await?;
                if is_leader(&c).await {
                    (c, Some(standby))
                } else if is_leader(&standby).await {
                    (standby, Some(c))
                } else {
                    bail!("neither keyseal replica leads");
                }
            }
            Subject::Upstream => (c, None),
        };
        let prefix = match subject {
            Subject::Keyseal => format!("ks-new{round}"),
            Subject::Upstream => format!("up-new{round}"),
        };
        let arrivals = Arrivals::start(self, prefix);
        tokio::time::sleep(self.plan.warm).await;
        let killed = Instant::now();
        victim.kill().await?;
        let survivor = match standby {
            Some(s) => s,
            None => self.spawn(subject)?,
        };
        let first_new = self.first_new_secret(&arrivals, killed).await;
        let created = arrivals.stop().await?;
        let names = created.iter().map(|(n, _)| n.clone()).collect();
        self.rig.expected.extend(created);
        let first_new = first_new.map(|at| at - killed);
        eprintln!("  kill {}: first new Secret after {first_new:?}", round + 1);
        Ok((survivor, first_new, names))
    }

    /// The first Secret written for a SealedSecret created after `killed`.
    async fn first_new_secret(&self, arrivals: &Arrivals, killed: Instant) -> Option<Instant> {
        let deadline = killed + self.plan.timeout;
        while Instant::now() < deadline {
            let after = arrivals.names_after(killed);
            if let Some(at) = self
                .secrets
                .lock()
                .first_change(killed, |n| after.contains(n))
            {
                return Some(at);
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        None
    }

    /// Deletes the SealedSecrets `names` and waits until their Secrets are collected.
    async fn remove(&mut self, names: &[String]) -> Result<()> {
        let api = self.rig.sealed_secrets();
        for name in names {
            api.delete(name, &DeleteParams::default()).await?;
            self.rig.meter.tally(1);
            self.rig.expected.remove(name);
        }
        self.await_gone(names).await
    }

    /// The writes ceiling: what a controller writes per SealedSecret, done by a plain client,
    /// for a copy of the workload in a namespace of its own (returned: dropping it deletes it).
    async fn writes_ceiling(&self) -> Result<(f64, keyseal_testenv::TestNamespace)> {
        let ns = self.rig.cluster.namespace("ceiling").await?;
        let admin = self.rig.cluster.client();
        let names: Vec<String> = (0..self.plan.count).map(|i| format!("s-{i}")).collect();
        let (cert, namespace) = (self.cert.clone(), ns.name().to_owned());
        let sealed =
            tokio::task::spawn_blocking(move || seal_all(&cert, &namespace, &names, 0)).await??;
        let (objects, data): (Vec<SealedSecret>, Vec<Data>) = sealed.into_iter().unzip();
        let data: HashMap<String, Data> = objects.iter().map(|o| o.name_any()).zip(data).collect();
        let api = Api::<SealedSecret>::namespaced(admin, ns.name());
        eprintln!(
            "writes ceiling: creating {} SealedSecrets (not timed)...",
            self.plan.count
        );
        create_all(api.clone(), objects, self.plan.concurrency, "SealedSecrets").await?;
        let listed = api.list(&ListParams::default()).await?.items;
        eprintln!(
            "writes ceiling: Secret + status + Event per SealedSecret, {} in flight...",
            self.plan.workers
        );
        let client = self.rig.sa.client.clone();
        let t0 = Instant::now();
        let results: Vec<Result<()>> = futures::stream::iter(listed)
            .map(|ss| {
                let values = data.get(&ss.name_any()).cloned().unwrap_or_default();
                write_like_controller(client.clone(), ss, values)
            })
            .buffer_unordered(self.plan.workers)
            .collect()
            .await;
        let took = t0.elapsed();
        results.into_iter().collect::<Result<()>>()?;
        Ok((self.plan.count as f64 / took.as_secs_f64(), ns))
    }
}

/// What a controller writes for one SealedSecret it has unsealed, without unsealing: the Secret
/// it owns, the `Synced` status, the `Unsealed` Event.
async fn write_like_controller(client: kube::Client, ss: SealedSecret, data: Data) -> Result<()> {
    let (ns, name) = (ss.namespace().unwrap_or_default(), ss.name_any());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            owner_references: ss.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let mut synced = ss.clone();
    synced.status = Some(SealedSecretStatus {
        observed_generation: ss.metadata.generation,
        conditions: vec![SealedSecretCondition {
            type_: CONDITION_SYNCED.to_owned(),
            status: "True".to_owned(),
            ..SealedSecretCondition::default()
        }],
    });
    Api::<SealedSecret>::namespaced(client.clone(), &ns)
        .replace_status(&name, &PostParams::default(), &synced)
        .await?;
    let event = EventV1 {
        metadata: ObjectMeta {
            name: Some(format!("{name}.bench")),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        reporting_controller: Some("sealed-secrets".to_owned()),
        reporting_instance: Some("keyseal-bench".to_owned()),
        action: Some("Unsealed".to_owned()),
        reason: Some("Unsealed".to_owned()),
        note: Some("SealedSecret unsealed successfully".to_owned()),
        regarding: Some(ss.object_ref(&())),
        type_: Some("Normal".to_owned()),
        ..EventV1::default()
    };
    Api::<EventV1>::namespaced(client, &ns)
        .create(&PostParams::default(), &event)
        .await?;
    Ok(())
}

/// The last lines of a controller's log.
fn tail(c: &ControllerProcess) -> String {
    let logs = c.logs();
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// What a watch has seen of one kind of object: per name, when it last changed and what the
/// bench needs of it; and every change after the initial list, in order.
struct SeenState<T> {
    latest: HashMap<String, (Instant, T)>,
    changes: Vec<(Instant, String)>,
    listed: bool,
}

impl<T> SeenState<T> {
    /// When the last of `names` reached its state, if every one is there and `ok`.
    fn all_at<'a>(
        &self,
        names: impl Iterator<Item = &'a String>,
        ok: impl Fn(&str, &T) -> bool,
    ) -> Option<Instant> {
        let mut last: Option<Instant> = None;
        for name in names {
            let (at, value) = self.latest.get(name)?;
            if !ok(name, value) {
                return None;
            }
            last = last.max(Some(*at));
        }
        last
    }

    /// The first change after `after` to an object whose name `pick` selects.
    fn first_change(&self, after: Instant, pick: impl Fn(&str) -> bool) -> Option<Instant> {
        self.changes
            .iter()
            .find(|(at, name)| *at > after && pick(name))
            .map(|(at, _)| *at)
    }
}

/// A watch on one kind of object in the namespace, for the whole run.
struct Seen<T> {
    state: Arc<Mutex<SeenState<T>>>,
    task: tokio::task::AbortHandle,
}

impl<T: Send + 'static> Seen<T> {
    /// Starts watching with `api`, keeping `extract` of each object, and waits for the initial
    /// list.
    async fn start<K>(api: Api<K>, extract: fn(&K) -> T) -> Result<Self>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let state = Arc::new(Mutex::new(SeenState {
            latest: HashMap::new(),
            changes: Vec::new(),
            listed: false,
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                let now = Instant::now();
                let mut seen = shared.lock().expect("watch state");
                match event {
                    Ok(watcher::Event::Apply(o)) => {
                        seen.changes.push((now, o.name_any()));
                        seen.latest.insert(o.name_any(), (now, extract(&o)));
                    }
                    Ok(watcher::Event::InitApply(o)) => {
                        seen.latest.insert(o.name_any(), (now, extract(&o)));
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        seen.latest.remove(&o.name_any());
                    }
                    Ok(watcher::Event::InitDone) => seen.listed = true,
                    Ok(watcher::Event::Init) => {}
                    Err(e) => eprintln!("  watch error (retrying): {e}"),
                }
            }
        })
        .abort_handle();
        let seen = Self { state, task };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.lock().listed {
            if Instant::now() > deadline {
                bail!("the watch did not list within 60 s");
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        Ok(seen)
    }
}

impl<T> Seen<T> {
    fn lock(&self) -> MutexGuard<'_, SeenState<T>> {
        self.state.lock().expect("watch state")
    }
}

impl<T> Drop for Seen<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// SealedSecrets created at a steady rate by a task of their own, each logged with the moment
/// its create was answered.
struct Arrivals {
    log: Arc<Mutex<Vec<(Instant, String, Data)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Arrivals {
    /// Starts creating `<prefix>-<i>` at the plan's rate, sealed with the bench's key.
    fn start(bench: &Bench<'_>, prefix: String) -> Self {
        let log: Arc<Mutex<Vec<(Instant, String, Data)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (api, cert) = (bench.rig.sealed_secrets(), bench.cert.clone());
        let (ns, rate) = (bench.rig.name().to_owned(), bench.plan.rate);
        let (task_log, task_stop) = (Arc::clone(&log), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let begin = tokio::time::Instant::now();
            for i in 0u32.. {
                if task_stop.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep_until(begin + Duration::from_secs(1) * i / rate).await;
                let name = format!("{prefix}-{i}");
                for (ss, data) in seal_all(&cert, &ns, std::slice::from_ref(&name), 0)? {
                    api.create(&PostParams::default(), &ss)
                        .await
                        .with_context(|| format!("creating {name}"))?;
                    let mut log = task_log.lock().expect("arrivals");
                    log.push((Instant::now(), name.clone(), data));
                }
            }
            Ok(())
        });
        Self { log, stop, task }
    }

    /// The names created after `t`.
    fn names_after(&self, t: Instant) -> HashSet<String> {
        let log = self.log.lock().expect("arrivals");
        log.iter()
            .filter(|(at, _, _)| *at > t)
            .map(|(_, name, _)| name.clone())
            .collect()
    }

    /// Stops creating; returns every name created with its data.
    async fn stop(self) -> Result<Vec<(String, Data)>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await??;
        let log = std::mem::take(&mut *self.log.lock().expect("arrivals"));
        Ok(log
            .into_iter()
            .map(|(_, name, data)| (name, data))
            .collect())
    }
}

/// `reference / ours` (> 1: keyseal is faster or does less), or `n/a`.
fn ratio(reference: Option<f64>, ours: Option<f64>) -> String {
    match (reference, ours) {
        (Some(r), Some(o)) if o > 0.0 => format!("{:.2}", r / o),
        (Some(r), Some(_)) if r > 0.0 => "inf".to_owned(),
        _ => "n/a".to_owned(),
    }
}

/// A row of the comparison: label, keyseal, upstream, upstream/keyseal.
fn row(label: &str, ks: Option<f64>, up: Option<f64>, decimals: usize) {
    let show = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"));
    println!(
        "  {label:<44} {:>12} {:>16} {:>8}",
        show(ks),
        show(up),
        ratio(up, ks)
    );
}

fn print_report(plan: &Plan, report: &Report) {
    let per_object = report.items as f64 / plan.count as f64;
    let ceilings = print_ceilings(report, per_object);
    print_clean_start(plan, report, ceilings);
    print_restart(plan, report, per_object);
    print_failover(report);
    print_notes(plan, report);
}

/// The ceilings, in SealedSecrets per second.
#[derive(Clone, Copy)]
struct Ceilings {
    /// The lower of RSA alone and API writes alone.
    lower: f64,
    /// Both on the same cores: each SealedSecret costs the machine the time of its RSA
    /// operations plus that of its writes (the API server and etcd run beside the controller).
    shared: f64,
}

/// The two ceilings, the lower one, and both on the same cores.
fn print_ceilings(report: &Report, per_object: f64) -> Ceilings {
    let [before, after] = report.rsa_ops;
    let rsa_ceiling = before.max(after) / per_object;
    println!();
    println!("ceilings (this run, this machine)");
    println!(
        "  RSA-4096 private ops on {} thread(s): {before:.1}/s before and {after:.1}/s after keyseal's clean start; \
         the higher / {per_object:.2} items per SealedSecret -> {rsa_ceiling:.1} SealedSecrets/s",
        report.threads
    );
    println!(
        "  Secret + status + Event by a plain client, 4 per core in flight: {:.1} SealedSecrets/s",
        report.writes_ceiling
    );
    let lower = rsa_ceiling.min(report.writes_ceiling);
    let which = if rsa_ceiling <= report.writes_ceiling {
        "RSA"
    } else {
        "API writes"
    };
    println!("  lower ceiling: {lower:.1} SealedSecrets/s ({which})");
    let shared = 1.0 / (1.0 / rsa_ceiling + 1.0 / report.writes_ceiling);
    println!(
        "  both on the same cores (1 / (1/RSA + 1/writes)): {shared:.1} SealedSecrets/s \
         (the plane shares this machine's cores with the controller)"
    );
    Ceilings { lower, shared }
}

/// The header of one comparison.
fn header(title: &str) {
    println!();
    println!(
        "  {title:<44} {:>12} {:>16} {:>8}",
        "keyseal", "upstream tuned", "up/ks"
    );
}

/// A row of times in seconds, `time` of each sweep.
fn time_row(label: &str, (ks, up): Sweeps<'_>, time: fn(&Sweep) -> Option<Duration>) {
    let secs = |s: Option<&Sweep>| s.and_then(time).map(|d| d.as_secs_f64());
    row(label, secs(ks), secs(up), 2);
}

fn print_clean_start(plan: &Plan, report: &Report, ceilings: Ceilings) {
    header("clean start (all SealedSecrets there)");
    let sweeps = pair(&report.starts);
    time_row("start -> /readyz 200 (s)", sweeps, |s| s.ready);
    time_row("start -> first Secret written (s)", sweeps, |s| {
        s.first_secret
    });
    let all = format!("start -> all {} Synced (s)", plan.count);
    time_row(&all, sweeps, |s| s.done);
    let rate = |s: Option<&Sweep>| s.and_then(|s| Some(s.total as f64 / s.done?.as_secs_f64()));
    let (ks, up) = (rate(sweeps.0), rate(sweeps.1));
    let show = |r: Option<f64>, f: f64| r.map_or("n/a".to_owned(), |r| format!("{:.2}", r * f));
    // Higher is better here, so this row's ratio is keyseal / upstream.
    println!(
        "  {:<44} {:>12} {:>16} {:>8}",
        "SealedSecrets/s (ratio: ks/up)",
        show(ks, 1.0),
        show(up, 1.0),
        ratio(ks, up)
    );
    println!(
        "  {:<44} {:>12} {:>16}",
        "fraction of the lower ceiling",
        show(ks, 1.0 / ceilings.lower),
        show(up, 1.0 / ceilings.lower),
    );
    println!(
        "  {:<44} {:>12} {:>16}",
        "fraction of both on the same cores",
        show(ks, 1.0 / ceilings.shared),
        show(up, 1.0 / ceilings.shared),
    );
    print_requests(sweeps, "initial sync");
}

fn print_restart(plan: &Plan, report: &Report, per_object: f64) {
    header("restart (SIGTERM, start again)");
    let sweeps = pair(&report.restarts);
    let (ks, up) = sweeps;
    time_row("start -> /readyz 200 (s)", sweeps, |s| s.ready);
    let all = format!("start -> all {} handled (s)", plan.count);
    time_row(&all, sweeps, |s| s.done);
    row(
        "unseal requests",
        ks.map(|s| s.unseals),
        up.map(|s| s.unseals),
        0,
    );
    row(
        "RSA-4096 private ops (unseals x items/object)",
        ks.map(|s| s.unseals * per_object),
        up.map(|s| s.unseals * per_object),
        0,
    );
    print_requests(sweeps, "restart");
}

fn print_failover(report: &Report) {
    header("failover (SIGKILL the leader)");
    let of = |s: Subject| report.failovers.iter().find(|f| f.subject == s);
    let (ks, up) = (of(Subject::Keyseal), of(Subject::Upstream));
    let median = |f: Option<&Failover>| f.and_then(Failover::median);
    row(
        "kill -> first new Secret, median (s)",
        median(ks),
        median(up),
        2,
    );
}

fn print_notes(plan: &Plan, report: &Report) {
    println!();
    println!(
        "up/ks: upstream / keyseal (> 1: keyseal faster or fewer); n/a: not measured or the {} s limit came first",
        plan.timeout.as_secs()
    );
    println!(
        "handled = the process's {CONDITION_INFO}{{condition=\"Synced\"}} is 1 for every SealedSecret (polled every {} ms); \
         requests: the plane's apiserver_request_total from the spawn to {} s after the goal; first Secret: a watch on Secrets, from outside",
        SCRAPE_EVERY.as_millis(),
        SETTLE.as_secs()
    );
    for f in &report.failovers {
        let setup = match (f.subject, f.lease) {
            (Subject::Keyseal, Some(l)) => format!("two replicas, Lease duration {l} s"),
            (Subject::Keyseal, None) => "two replicas, Lease duration unknown".to_owned(),
            (Subject::Upstream, _) => "no standby: started again at once".to_owned(),
        };
        let checks = if f.failures.is_empty() {
            "all checks passed".to_owned()
        } else {
            format!("FAILED: {}", f.failures.join("; "))
        };
        let times: Vec<String> = f
            .first_new
            .iter()
            .map(|d| d.map_or("n/a".to_owned(), |d| format!("{:.2}", d.as_secs_f64())))
            .collect();
        println!(
            "  failover {}: {} kill(s), first new Secret after {} s; {} SealedSecrets/s for {} s before each kill, {} created in all; {setup}; {checks}",
            f.subject.name(),
            f.first_new.len(),
            times.join(", "),
            plan.rate,
            plan.warm.as_secs(),
            f.arrived,
        );
    }
    let sweeps = [
        ("clean start", &report.starts),
        ("restart", &report.restarts),
    ];
    for (what, list) in sweeps {
        for (subject, s) in list.iter().filter(|(_, s)| s.handled < s.total) {
            println!(
                "  {what} {}: only {}/{} handled at the end",
                subject.name(),
                s.handled,
                s.total
            );
        }
    }
}

/// keyseal's sweep and upstream's.
type Sweeps<'a> = (Option<&'a Sweep>, Option<&'a Sweep>);

/// keyseal's and upstream's sweeps in `list`.
fn pair(list: &[(Subject, Sweep)]) -> Sweeps<'_> {
    let get = |s: Subject| list.iter().find(|(x, _)| *x == s).map(|(_, sweep)| sweep);
    (get(Subject::Keyseal), get(Subject::Upstream))
}

/// One of the counts in [`Requests`].
type Count = fn(&Requests) -> f64;

/// The API request rows of one comparison.
fn print_requests((ks, up): Sweeps<'_>, what: &str) {
    let rows: [(&str, Count); 6] = [
        ("Secret writes", |r| r.secret_writes),
        ("status writes", |r| r.status_writes),
        ("events written", |r| r.events),
        ("refused writes (409 ...)", |r| r.refused_writes),
        ("successful writes in all", Requests::writes),
        ("Secret reads (GET)", |r| r.secret_reads),
    ];
    for (label, count) in rows {
        let of = |s: Option<&Sweep>| s.map(|s| count(&s.requests));
        row(&format!("{what}: {label}"), of(ks), of(up), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_sorted_by_kind() {
        let kinds = [
            ("POST secrets", 10.0),
            ("POST secrets 409", 8.0),
            ("PUT secrets", 2.0),
            ("PUT sealedsecrets/status", 7.0),
            ("POST events", 5.0),
            ("PATCH events", 1.0),
            ("GET secrets", 3.0),
            ("LIST secrets", 4.0),
            ("POST sealedsecrets", 9.0),
        ]
        .map(|(k, n)| (k.to_owned(), n));
        let r = Requests::from_kinds(&kinds);
        assert_eq!(
            (r.secret_writes, r.status_writes, r.events, r.secret_reads),
            (12.0, 7.0, 6.0, 3.0)
        );
        assert_eq!(r.refused_writes, 8.0);
        assert_eq!(r.writes(), 25.0);
    }

    #[test]
    fn all_at_needs_every_name_and_takes_the_last() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let state = SeenState {
            latest: HashMap::from([("a".to_owned(), (t1, true)), ("b".to_owned(), (t0, true))]),
            changes: vec![(t0, "b".to_owned()), (t1, "a".to_owned())],
            listed: true,
        };
        let names = ["a".to_owned(), "b".to_owned()];
        assert_eq!(state.all_at(names.iter(), |_, ok| *ok), Some(t1));
        let more = ["a".to_owned(), "c".to_owned()];
        assert_eq!(state.all_at(more.iter(), |_, ok| *ok), None);
        assert_eq!(state.all_at(names.iter(), |n, _| n == "a"), None);
        assert_eq!(state.first_change(t0, |_| true), Some(t1));
        assert_eq!(state.first_change(t0, |n| n == "b"), None);
    }

    #[test]
    fn failover_median_needs_every_kill() {
        let mut f = Failover {
            subject: Subject::Keyseal,
            first_new: [3.0, 1.0, 2.0]
                .map(|s| Some(Duration::from_secs_f64(s)))
                .to_vec(),
            lease: None,
            arrived: 0,
            failures: Vec::new(),
        };
        assert_eq!(f.median(), Some(2.0));
        f.first_new.push(None);
        assert_eq!(f.median(), None);
    }

    #[test]
    fn ratios_handle_zero_and_missing() {
        assert_eq!(ratio(Some(10.0), Some(5.0)), "2.00");
        assert_eq!(ratio(Some(10.0), Some(0.0)), "inf");
        assert_eq!(ratio(Some(0.0), Some(0.0)), "n/a");
        assert_eq!(ratio(None, Some(1.0)), "n/a");
    }
}
