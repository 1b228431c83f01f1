//! `keyseal-bench load`: 10,000 SealedSecrets created at once (64 creates in flight) while
//! keyseal-controller runs on a private plane (see [`crate::rig`]). Printed, each next to a
//! reference from the same run:
//!
//! * time from the first create to every SealedSecret `Synced=True` (and every Secret correct),
//!   next to the time the bench took to create them (the API server's write rate) and to the
//!   pure decryption time of the same objects (`keyseal_crypto::open` measured in this process
//!   on one core, divided by the cores): the floor;
//! * API requests per unsealed object (kube-apiserver's `apiserver_request_total` minus the
//!   bench's own, from the first create until 3 s after all-Synced), next to the minimum the
//!   design needs: 2 (write the Secret, write the status; the informers' watches cost nothing
//!   per object);
//! * peak RSS (`VmHWM`) of the controller after the load next to its `VmHWM` idle before it;
//! * `/healthz` and `/v1/cert.pem` latency (p50/p99/max over a new connection every 100 ms per
//!   path, throughout) next to the same percentiles taken on the idle controller just before.
//!   Any failed probe during the load is reported and makes the bench exit non-zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use keyseal_testenv::controller::ControllerProcess;

use crate::LoadArgs;
use crate::rig::{Rig, certificate};

/// Probes per path per second.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// The paths probed.
const PATHS: [&str; 2] = ["/healthz", "/v1/cert.pem"];
/// Requests per object the design needs at least: the Secret and the status.
const MIN_REQUESTS_PER_OBJECT: f64 = 2.0;

/// Runs the benchmark and prints its figures.
pub fn run(args: &LoadArgs) -> Result<()> {
    let controller = crate::controller_binary(args.controller.as_deref())?;
    let count = args
        .count
        .unwrap_or(if args.quick { 1_000 } else { 10_000 });
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut rig = Rig::start("load", controller).await?;
        load(&mut rig, args, count).await
    })
}

async fn load(rig: &mut Rig, args: &LoadArgs, count: usize) -> Result<()> {
    let controller = rig.start_controller(&[]).await?;
    let cert = certificate(&controller).await?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let floor = decrypt_floor(&cert, count, cores)?;
    eprintln!("load: idle probes and idle request rate (10 s)...");
    let controller = Arc::new(controller);
    let idle_probes = Probes::start(controller.clone());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = idle_probes.stop().await;
    let hwm_idle = vm_hwm(&controller)?;

    eprintln!("load: creating {count} SealedSecrets at once...");
    let probes = Probes::start(controller.clone());
    let start = rig.meter.read(&rig.cluster).await;
    let t0 = Instant::now();
    rig.create_workload(&cert, 0, count, args.concurrency)
        .await?;
    let created = t0.elapsed();
    let synced = rig
        .converge_every(
            t0,
            Duration::from_secs(args.timeout),
            Duration::from_secs(2),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = rig.meter.read(&rig.cluster).await.count_since(&start);
    let busy = probes.stop().await;
    let hwm = vm_hwm(&controller)?;

    println!("load: {count} SealedSecrets created at once, keyseal-controller on a private plane");
    crate::print_machine();
    println!("cpu: {}", crate::cpu_model());
    println!(
        "  time to all-Synced        {:>9.1} s   creating them took {:.1} s; pure decryption on {cores} core(s) {:.1} s (all-Synced / decryption = {:.2})",
        synced.as_secs_f64(),
        created.as_secs_f64(),
        floor.as_secs_f64(),
        synced.as_secs_f64() / floor.as_secs_f64().max(1e-9)
    );
    let per_object = requests / count as f64;
    println!(
        "  API requests per object   {per_object:>9.2}     design minimum {MIN_REQUESTS_PER_OBJECT} (Secret + status): ratio {:.2}",
        per_object / MIN_REQUESTS_PER_OBJECT
    );
    println!(
        "  peak RSS (VmHWM)          {:>9.1} MiB idle before {:.1} MiB (ratio {:.2}); {:.1} KiB per SealedSecret",
        hwm as f64 / 1024.0,
        hwm_idle as f64 / 1024.0,
        hwm as f64 / hwm_idle.max(1) as f64,
        (hwm.saturating_sub(hwm_idle)) as f64 / count as f64
    );
    let mut failed = Vec::new();
    for (i, path) in PATHS.iter().enumerate() {
        let (b, i_) = (&busy[i], &idle[i]);
        println!(
            "  {path:<13} ms under load p50 {:>7.2} p99 {:>7.2} max {:>8.2} ({} probes) | idle p50 {:>6.2} p99 {:>6.2} max {:>7.2} | p99 ratio {:.2}",
            b.pct(50.0),
            b.pct(99.0),
            b.pct(100.0),
            b.ms.len(),
            i_.pct(50.0),
            i_.pct(99.0),
            i_.pct(100.0),
            b.pct(99.0) / i_.pct(99.0).max(1e-6)
        );
        if b.failures > 0 {
            failed.push(format!("{path}: {} failed probe(s) under load", b.failures));
        }
    }
    let violations = rig.violations(1).await?;
    failed.extend(violations);
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// Latencies of one path, in milliseconds, and failed probes.
#[derive(Default, Clone)]
struct Latencies {
    ms: Vec<f64>,
    failures: usize,
}

impl Latencies {
    /// Nearest-rank percentile (`100` is the maximum); NaN with no samples.
    fn pct(&self, p: f64) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        v[rank.min(v.len()) - 1]
    }
}

/// One probing task per path, a new connection per probe.
struct Probes {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Latencies>>,
}

impl Probes {
    fn start(c: Arc<ControllerProcess>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = PATHS
            .iter()
            .map(|path| {
                let (c, stop) = (c.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut out = Latencies::default();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match c.get(path).await {
                            Ok((200, _)) => out.ms.push(t.elapsed().as_secs_f64() * 1e3),
                            _ => out.failures += 1,
                        }
                        tokio::time::sleep(PROBE_INTERVAL.saturating_sub(t.elapsed())).await;
                    }
                    out
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) -> Vec<Latencies> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await.unwrap_or_default());
        }
        out
    }
}

/// `VmHWM` of the controller process, in KiB.
fn vm_hwm(c: &ControllerProcess) -> Result<u64> {
    let pid = c
        .id()
        .ok_or_else(|| anyhow::anyhow!("the controller has exited"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))
}

/// The time `count` decryptions take on `cores` cores at the rate one core reaches in this
/// process (`open` of a one-item value sealed under `cert`, timed for 2 s). The controller's
/// key is not the bench's: a key of the same size is generated for this.
fn decrypt_floor(
    cert: &keyseal_crypto::Certificate,
    count: usize,
    cores: usize,
) -> Result<Duration> {
    let bits = cert.public_key().bits();
    let key = keyseal_crypto::PrivateKey::generate(bits)?;
    let label = b"load/floor";
    let sealed = keyseal_crypto::seal(key.public_key(), label, b"correct-horse-battery-staple")?;
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        keyseal_crypto::open([&key], label, &sealed)?;
        n += 1;
    }
    let per = start.elapsed() / n;
    Ok(per * count as u32 / cores.max(1) as u32)
}
