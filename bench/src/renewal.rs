//! Key renewal with and without Key Vault backups: the time from SIGUSR1 (a renewal) to the new
//! certificate being served, with the backup before activation (`--keyvault-url`, the Key Vault
//! test server over HTTPS) next to the same controller without a vault, in the same run.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use keyseal_testenv::Cluster;
use keyseal_testenv::controller::{ControllerProcess, Launch};
use keyseal_testenv::keyvault::{KvEmulator, KvSetup};

use crate::RenewalArgs;
use crate::stats::{Summary, ms};

/// Runs the benchmark and prints its figures.
pub fn run(args: &RenewalArgs) -> Result<()> {
    let controller = crate::controller_binary(args.controller.as_deref())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let plain = renewals(&controller, None, args.runs).await?;
        let kv = KvEmulator::start(KvSetup::default()).await?;
        let vault = renewals(&controller, Some(&kv), args.runs).await?;
        print(&plain, &vault);
        Ok(())
    })
}

/// `runs` renewals of one controller (with `kv` as its vault, if any): the time from SIGUSR1 to
/// the new certificate at `/v1/cert.pem`.
async fn renewals(
    binary: &std::path::Path,
    kv: Option<&KvEmulator>,
    runs: u32,
) -> Result<Vec<Duration>> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("bench-renewal").await?;
    let sa = cluster.controller_identity(ns.name()).await?;
    let mut launch = Launch::new(binary, ns.name()).args(["--leader-elect=false"]);
    if let Some(kv) = kv {
        launch = launch
            .keyvault(kv, ns.name())
            .keyvault_identity(kv, "writer");
    }
    let mut controller = launch.spawn_keyseal(&sa)?;
    controller.wait_healthy(Duration::from_secs(60)).await?;
    let mut cert = served(&controller, None).await?;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        controller.signal("USR1");
        cert = served(&controller, Some(&cert))
            .await
            .with_context(|| controller.logs())?;
        samples.push(started.elapsed());
    }
    controller.stop().await?;
    Ok(samples)
}

/// The served certificate once it differs from `old` (polled every 5 ms, for up to 2 minutes).
async fn served(controller: &ControllerProcess, old: Option<&str>) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(pem) = controller.cert_pem().await
            && Some(pem.as_str()) != old
        {
            return Ok(pem);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no new certificate within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn print(plain: &[Duration], vault: &[Duration]) {
    println!("renewal: SIGUSR1 to the new certificate served (RSA-4096 key generation included)");
    println!("cpu: {}", crate::cpu_model());
    let (Some(p), Some(v)) = (Summary::of(plain), Summary::of(vault)) else {
        return;
    };
    println!(
        "  without a vault     median {:>8.1} ms  p90 {:>8.1} ms  ({} renewals)",
        ms(p.median),
        ms(p.p90),
        plain.len()
    );
    println!(
        "  with Key Vault      median {:>8.1} ms  p90 {:>8.1} ms  (backup, read back, verified, then activated)",
        ms(v.median),
        ms(v.p90)
    );
    println!(
        "  ratio with/without  {:.2}x (key generation time varies with the primes found: compare medians over several runs)",
        v.median.as_secs_f64() / p.median.as_secs_f64()
    );
}
