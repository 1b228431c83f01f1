//! `keyseal-bench faults`: keyseal-controller under faults of the real control plane, each on a
//! private plane of its own (see [`crate::rig`]). Per fault it prints the time to converge
//! (every target Secret holds its expected data and every SealedSecret reports `Synced=True` at
//! its generation) and the API requests per second of everything but the bench — in practice
//! the controller — while idle before the fault, from the fault until convergence, and while
//! idle after it. Then it checks:
//!
//! * every Secret holds exactly the data it was sealed with (decrypted correctly, nothing lost);
//! * the number of sealing keys is what it was (one; two after a renewal): no duplicate key;
//! * two unmanaged Secrets planted beforehand (one of them named like a SealedSecret) have the
//!   resourceVersion they were created with;
//! * no hot loop: within [`QUIET_WITHIN`] of convergence, an idle window comes whose rate is at
//!   most [`HOT_LOOP_FACTOR`] times the idle rate before plus [`HOT_LOOP_SLACK`] requests/s. Work
//!   that ends is not a loop: a new leader's first pass over every object after a failover, or
//!   kube-controller-manager's garbage collector checking the owners of a thousand new Secrets
//!   (the meter counts the whole plane); the time until quiet is printed.
//!
//! A failed check does not stop the run; the bench exits non-zero at the end, naming each fault
//! and property that failed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use keyseal_testenv::controller::ControllerProcess;
use keyseal_testenv::faults::CuttingProxy;
use keyseal_testenv::keyvault::{Fault, FaultMode, KvEmulator, KvSetup};

use crate::FaultsArgs;
use crate::rig::{Reading, Rig, certificate, is_leader, serving};

/// No hot loop: idle rate after <= factor x idle rate before + slack.
const HOT_LOOP_FACTOR: f64 = 2.0;
/// See [`HOT_LOOP_FACTOR`] (requests per second).
const HOT_LOOP_SLACK: f64 = 1.0;
/// How long after convergence the request rate may take to fall back under the hot-loop limit.
const QUIET_WITHIN: Duration = Duration::from_secs(180);
/// Vault requests per second during an outage above which the controller hammers the vault.
const VAULT_HOT_LOOP: f64 = 5.0;
/// How long kube-apiserver gets to stop after SIGTERM before SIGKILL.
const APISERVER_GRACE: Duration = Duration::from_secs(10);
/// Creates in flight while setting up.
const CONCURRENCY: usize = 32;

/// The faults, by the names `--faults` takes.
const FAULTS: &[&str] = &[
    "apiserver-restart",
    "controller-kill",
    "leader-kill",
    "etcd-pause",
    "watch-cut",
    "vault-outage",
    "vault-throttle",
];

/// Sizes and choices of one run.
struct Plan {
    controller: PathBuf,
    count: usize,
    kills: usize,
    kill_window: Duration,
    pause: Duration,
    cut: Duration,
    outage: Duration,
    idle: Duration,
    timeout: Duration,
    faults: Vec<String>,
    seed: u64,
}

/// What one fault produced.
struct Report {
    fault: String,
    converge: Duration,
    before: f64,
    during: f64,
    after: f64,
    /// From convergence until the idle window `after` was measured in began.
    quiet: Duration,
    note: String,
    failures: Vec<String>,
}

/// Runs the selected faults and prints a table; an error names every failed check.
pub fn run(args: &FaultsArgs) -> Result<()> {
    let plan = plan(args)?;
    crate::print_machine();
    println!("cpu: {}", crate::cpu_model());
    println!(
        "faults: {} SealedSecrets, {} controller kills (window {:.1} s), etcd pause {:.0} s, cut {:.0} s, vault fault {:.0} s, idle windows {:.0} s, seed {}",
        plan.count,
        plan.kills,
        plan.kill_window.as_secs_f64(),
        plan.pause.as_secs_f64(),
        plan.cut.as_secs_f64(),
        plan.outage.as_secs_f64(),
        plan.idle.as_secs_f64(),
        plan.seed
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let mut reports = Vec::new();
    let mut rng = SplitMix(plan.seed);
    for fault in &plan.faults {
        eprintln!("{fault}: starting a private plane...");
        let report = runtime
            .block_on(run_fault(&plan, fault, &mut rng))
            .unwrap_or_else(|e| Report {
                fault: fault.clone(),
                converge: Duration::ZERO,
                before: 0.0,
                during: 0.0,
                after: 0.0,
                quiet: Duration::ZERO,
                note: String::new(),
                failures: vec![format!("did not complete: {e:#}")],
            });
        eprintln!(
            "{fault}: converged in {:.1} s, {}",
            report.converge.as_secs_f64(),
            if report.failures.is_empty() {
                "all checks passed".to_owned()
            } else {
                report.failures.join("; ")
            }
        );
        reports.push(report);
    }
    print_table(&reports);
    let failed: Vec<String> = reports
        .iter()
        .flat_map(|r| r.failures.iter().map(move |f| format!("{}: {f}", r.fault)))
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} check(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

fn plan(args: &FaultsArgs) -> Result<Plan> {
    let controller = crate::controller_binary(args.controller.as_deref())?;
    let q = args.quick;
    let faults = match &args.faults {
        Some(list) => {
            for f in list {
                anyhow::ensure!(
                    FAULTS.contains(&f.as_str()),
                    "unknown fault {f:?} (use {})",
                    FAULTS.join(", ")
                );
            }
            list.clone()
        }
        None => FAULTS.iter().map(|s| (*s).to_owned()).collect(),
    };
    let secs = |v: Option<u64>, quick: u64, full: u64| {
        Duration::from_secs(v.unwrap_or(if q { quick } else { full }))
    };
    Ok(Plan {
        controller,
        count: args.count.unwrap_or(if q { 100 } else { 1000 }),
        kills: args.kills.unwrap_or(if q { 5 } else { 20 }),
        kill_window: Duration::from_millis(args.kill_window_ms.unwrap_or(3000)),
        pause: secs(args.pause_secs, 3, 5),
        cut: secs(args.cut_secs, 2, 3),
        outage: secs(args.outage_secs, 5, 10),
        idle: secs(args.idle_secs, 5, 10),
        timeout: secs(args.timeout, 120, 600),
        faults,
        seed: args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        }),
    })
}

async fn run_fault(plan: &Plan, fault: &str, rng: &mut SplitMix) -> Result<Report> {
    let mut rig = Rig::start(&format!("faults-{fault}"), plan.controller.clone()).await?;
    let report = match fault {
        "apiserver-restart" => apiserver_restart(plan, &mut rig).await,
        "controller-kill" => controller_kill(plan, &mut rig, rng).await,
        "leader-kill" => leader_kill(plan, &mut rig).await,
        "etcd-pause" => etcd_pause(plan, &mut rig).await,
        "watch-cut" => watch_cut(plan, &mut rig).await,
        "vault-outage" => vault_fault(plan, &mut rig, FaultMode::Unavailable).await,
        "vault-throttle" => vault_fault(plan, &mut rig, FaultMode::Throttle).await,
        other => bail!("unknown fault {other}"),
    };
    let mut report =
        report.with_context(|| format!("plane logs in {}", rig.plane.logs().display()))?;
    report.fault = fault.to_owned();
    Ok(report)
}

/// The measurements every fault takes around its own action: the idle rate before, the rate
/// from the fault to convergence, the idle rate after, and the checks.
struct Episode {
    before: f64,
    /// The idle window before, for the report of a hot loop.
    idle_before: (Reading, Reading),
    start: Reading,
    /// When the fault began: convergence is timed from here.
    at: Instant,
}

impl Episode {
    /// Measures the idle rate over `plan.idle` and starts the episode.
    async fn begin(rig: &Rig, plan: &Plan) -> Self {
        let idle_before = rig.meter.idle(&rig.cluster, plan.idle).await;
        Self {
            before: idle_before.1.rate_since(&idle_before.0),
            idle_before,
            start: rig.meter.read(&rig.cluster).await,
            at: Instant::now(),
        }
    }

    /// Marks the fault's moment (what convergence is timed from).
    fn fault_now(&mut self) {
        self.at = Instant::now();
    }

    /// Waits for convergence, measures the rate after, runs the checks (`keys` sealing keys
    /// expected).
    async fn end(self, rig: &Rig, plan: &Plan, keys: usize, note: String) -> Result<Report> {
        let converge = rig.converge(self.at, plan.timeout).await?;
        let during = rig.meter.read(&rig.cluster).await.rate_since(&self.start);
        // Settle (status writes and events of the last objects), then idle windows until one is
        // under the limit or QUIET_WITHIN has passed.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let limit = HOT_LOOP_FACTOR * self.before + HOT_LOOP_SLACK;
        let converged = Instant::now();
        let (mut a, mut b) = rig.meter.idle(&rig.cluster, plan.idle).await;
        while b.rate_since(&a) > limit && converged.elapsed() < QUIET_WITHIN {
            (a, b) = rig.meter.idle(&rig.cluster, plan.idle).await;
        }
        let quiet = converged.elapsed().saturating_sub(plan.idle);
        let after = b.rate_since(&a);
        let mut failures = rig.violations(keys).await?;
        if after > limit {
            failures.push(format!(
                "hot loop: still {after:.2} requests/s {:.0} s after convergence ({}), limit {limit:.2} ({HOT_LOOP_FACTOR} x {:.2} before: {})",
                quiet.as_secs_f64(),
                b.top_since(&a),
                self.before,
                self.idle_before.1.top_since(&self.idle_before.0)
            ));
        }
        Ok(Report {
            fault: String::new(),
            converge,
            before: self.before,
            during,
            after,
            quiet,
            note,
            failures,
        })
    }
}

/// A controller, the idle rate measured, `count` SealedSecrets just created: the moment a fault
/// strikes in the middle of reconciling them. Returns how many were already unsealed.
async fn amid_workload(plan: &Plan, rig: &mut Rig) -> Result<(ControllerProcess, Episode, usize)> {
    let controller = rig.start_controller(&[]).await?;
    let cert = certificate(&controller).await?;
    let mut episode = Episode::begin(rig, plan).await;
    rig.create_workload(&cert, 0, plan.count, CONCURRENCY)
        .await?;
    let (done, _) = rig.progress().await?;
    episode.fault_now();
    Ok((controller, episode, done))
}

/// kube-apiserver restarted (SIGTERM, SIGKILL after [`APISERVER_GRACE`], then the same command
/// line) while `count` SealedSecrets
/// created at once are being reconciled.
async fn apiserver_restart(plan: &Plan, rig: &mut Rig) -> Result<Report> {
    let (controller, episode, done) = amid_workload(plan, rig).await?;
    let down = rig.plane.restart_apiserver(APISERVER_GRACE).await?;
    let mut report = episode.end(rig, plan, 1, String::new()).await;
    if let Ok(r) = report.as_mut() {
        r.note = format!(
            "restarted with {done}/{} unsealed; API server away {:.1} s (SIGTERM to ready); converged {:.1} s after it was ready",
            plan.count,
            down.as_secs_f64(),
            r.converge.saturating_sub(down).as_secs_f64()
        );
    }
    drop(controller);
    report
}

/// The controller SIGKILLed `kills` times at random moments after it took the lease, while it
/// reconciles `count` SealedSecrets and, before each restart, one changed SealedSecret and one
/// deleted Secret; restarted each time (same leader identity, as a restarted container of the
/// same pod). Converged from the last start.
async fn controller_kill(plan: &Plan, rig: &mut Rig, rng: &mut SplitMix) -> Result<Report> {
    let id = ["--leader-election-id", "faults-replica"];
    let first = rig.start_controller(&id).await?;
    let cert = certificate(&first).await?;
    let mut episode = Episode::begin(rig, plan).await;
    first.kill().await?;
    rig.create_workload(&cert, 0, plan.count, CONCURRENCY)
        .await?;
    let mut delays = Vec::new();
    for round in 0..plan.kills {
        let changed = format!("s-{}", rng.below(plan.count));
        rig.put(&cert, vec![changed], round as u32 + 1, 1).await?;
        let deleted = format!("s-{}", rng.below(plan.count));
        rig.delete_secrets(&[deleted]).await?;
        let c = rig.launch().args(id).spawn_keyseal(&rig.sa)?;
        let c = serving(c).await?;
        leading(&c, Duration::from_secs(60)).await?;
        let delay =
            Duration::from_millis(rng.below(plan.kill_window.as_millis() as usize + 1) as u64);
        tokio::time::sleep(delay).await;
        c.kill().await?;
        delays.push(delay);
    }
    episode.fault_now();
    let c = rig.start_controller(&id).await?;
    let (done, _) = rig.progress().await?;
    let mean = delays.iter().sum::<Duration>().as_secs_f64() / delays.len().max(1) as f64;
    let note = format!(
        "{} kills, mean {:.2} s after taking the lease; {done}/{} correct at the last start; time from the last start",
        plan.kills, mean, plan.count
    );
    let report = episode.end(rig, plan, 1, note).await;
    drop(c);
    report
}

/// Two replicas; the leader SIGKILLed (the Lease is not released); converged = the standby has
/// written the Secret of a SealedSecret created right after the kill (and everything else).
async fn leader_kill(plan: &Plan, rig: &mut Rig) -> Result<Report> {
    let (a, b) = tokio::join!(rig.start_controller(&[]), rig.start_controller(&[]));
    let (a, b) = (a?, b?);
    let cert = certificate(&a).await?;
    rig.create_workload(&cert, 0, plan.count, CONCURRENCY)
        .await?;
    rig.converge(Instant::now(), plan.timeout).await?;
    let (leader, standby) = if is_leader(&a).await { (a, b) } else { (b, a) };
    anyhow::ensure!(is_leader(&leader).await, "neither replica leads");
    let episode = Episode::begin(rig, plan).await;
    leader.kill().await?;
    rig.put(&cert, vec!["after-kill".to_owned()], 0, 1).await?;
    let report = episode
        .end(
            rig,
            plan,
            1,
            "default lease (15 s): the standby takes over once it expires".to_owned(),
        )
        .await;
    if !is_leader(&standby).await {
        bail!("the standby does not lead after the failover");
    }
    report
}

/// etcd stopped (SIGSTOP) for `pause` right after `count` SealedSecrets were created, then
/// continued.
async fn etcd_pause(plan: &Plan, rig: &mut Rig) -> Result<Report> {
    let (controller, episode, done) = amid_workload(plan, rig).await?;
    rig.plane.signal("etcd", "STOP")?;
    tokio::time::sleep(plan.pause).await;
    rig.plane.signal("etcd", "CONT")?;
    let note = format!("paused with {done}/{} unsealed", plan.count);
    let report = episode.end(rig, plan, 1, note).await;
    drop(controller);
    report
}

/// Every connection of the controller to the API server cut (a TCP proxy between them closes
/// them and refuses new ones for `cut`); meanwhile SealedSecrets are created and changed and
/// Secrets deleted: all of it must be caught up once the watches are back.
async fn watch_cut(plan: &Plan, rig: &mut Rig) -> Result<Report> {
    let proxy = CuttingProxy::start(rig.plane.apiserver_addr()?).await?;
    proxy.redirect_kubeconfig(&rig.sa.kubeconfig)?;
    let controller = rig.start_controller(&[]).await?;
    let cert = certificate(&controller).await?;
    rig.create_workload(&cert, 0, plan.count, CONCURRENCY)
        .await?;
    rig.converge(Instant::now(), plan.timeout).await?;
    let episode = Episode::begin(rig, plan).await;
    let open = proxy.cut(plan.cut);
    let burst = (plan.count / 10).max(1);
    let changed: Vec<String> = (0..burst).map(|i| format!("s-{i}")).collect();
    rig.put(&cert, changed.clone(), 1, CONCURRENCY).await?;
    rig.delete_secrets(&changed[..burst / 2]).await?;
    let new = plan.count..plan.count + burst;
    rig.create_workload(&cert, new.start, new.end, CONCURRENCY)
        .await?;
    let note = format!(
        "{open} connection(s) cut, refused for {:.0} s; {burst} changed, {} Secrets deleted, {burst} created meanwhile",
        plan.cut.as_secs_f64(),
        burst / 2
    );
    let mut report = episode.end(rig, plan, 1, note).await?;
    if proxy.forwarded() <= open as u64 {
        report
            .failures
            .push("the controller did not reconnect through the proxy".to_owned());
    }
    drop(controller);
    Ok(report)
}

/// The Key Vault answers 503 (or 429 with Retry-After) while a renewal waits for its backup;
/// SealedSecrets sealed with the old key are created meanwhile. Converged = the new key serves,
/// everything is unsealed. Also reported: the vault requests per second during the fault.
async fn vault_fault(plan: &Plan, rig: &mut Rig, mode: FaultMode) -> Result<Report> {
    let kv = KvEmulator::start(KvSetup::default()).await?;
    let launch = rig
        .launch()
        .keyvault(&kv, rig.name())
        .keyvault_identity(&kv, "writer");
    let controller = serving(launch.spawn_keyseal(&rig.sa)?).await?;
    let old = certificate(&controller).await?;
    rig.create_workload(&old, 0, plan.count, CONCURRENCY)
        .await?;
    rig.converge(Instant::now(), plan.timeout).await?;
    let episode = Episode::begin(rig, plan).await;
    kv.set_fault(&Fault {
        mode,
        retry_after_secs: Some(1),
        token_endpoint: false,
    })
    .await?;
    let vault_before: u64 = kv.requests().await?.values().sum();
    controller.signal("USR1");
    let burst = (plan.count / 10).max(1);
    rig.create_workload(&old, plan.count, plan.count + burst, CONCURRENCY)
        .await?;
    tokio::time::sleep(plan.outage.saturating_sub(episode.at.elapsed())).await;
    let vault_during: u64 = kv.requests().await?.values().sum::<u64>() - vault_before;
    let served_old = certificate(&controller).await? == old;
    kv.set_fault(&Fault {
        mode: FaultMode::None,
        retry_after_secs: None,
        token_endpoint: false,
    })
    .await?;
    // Converged also means the new key seals.
    let deadline = Instant::now() + plan.timeout;
    while certificate(&controller).await? == old {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the new key never became the sealing key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let vault_rate = vault_during as f64 / plan.outage.as_secs_f64();
    let note = format!(
        "{:.0} s of {}; vault {vault_rate:.2} requests/s meanwhile; {burst} created under the old key meanwhile",
        plan.outage.as_secs_f64(),
        match mode {
            FaultMode::Throttle => "429 + Retry-After: 1",
            _ => "503",
        }
    );
    let mut report = episode.end(rig, plan, 2, note).await?;
    if !served_old {
        report
            .failures
            .push("a key without a verified backup was served during the fault".to_owned());
    }
    if vault_rate > VAULT_HOT_LOOP {
        report.failures.push(format!(
            "hot loop on the vault: {vault_rate:.2} requests/s during the fault (limit {VAULT_HOT_LOOP})"
        ));
    }
    drop(controller);
    Ok(report)
}

/// Waits until `c` leads.
async fn leading(c: &ControllerProcess, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !is_leader(c).await {
        anyhow::ensure!(Instant::now() < deadline, "not leading after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn print_table(reports: &[Report]) {
    println!();
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>9} {:>10} {:>11}  checks",
        "fault", "converge s", "req/s idle", "req/s dur.", "quiet s", "req/s aft.", "after/idle"
    );
    for r in reports {
        println!(
            "{:<18} {:>10.1} {:>10.2} {:>10.2} {:>9.0} {:>10.2} {:>11.2}  {}",
            r.fault,
            r.converge.as_secs_f64(),
            r.before,
            r.during,
            r.quiet.as_secs_f64(),
            r.after,
            r.after / r.before.max(1e-3),
            if r.failures.is_empty() {
                "ok"
            } else {
                "FAILED"
            }
        );
    }
    println!();
    println!(
        "converge: from the fault (SIGTERM, SIGKILL, SIGSTOP, the cut, the vault fault; for controller-kill the last start) until every target Secret holds its data and every SealedSecret is Synced at its generation"
    );
    println!(
        "req/s: kube-apiserver's apiserver_request_total (resource requests) minus the bench's own; idle = {HOT_LOOP_FACTOR} x idle + {HOT_LOOP_SLACK}/s is the hot-loop limit for 'after', measured in the first idle window under it ('quiet s' after convergence; none within {} s fails); 'during' includes reconciling the workload",
        QUIET_WITHIN.as_secs()
    );
    for r in reports {
        if !r.note.is_empty() {
            println!("  {}: {}", r.fault, r.note);
        }
        for f in &r.failures {
            println!("  {}: FAILED {f}", r.fault);
        }
    }
}

/// A small deterministic generator (SplitMix64) for the kill delays: `--seed` replays a run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_in_range() {
        let (mut a, mut b) = (SplitMix(7), SplitMix(7));
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
    }
}
