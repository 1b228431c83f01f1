//! `keyseal-bench controller`: keyseal-controller next to the upstream Sealed Secrets controller
//! (once with its defaults, once with `--kubeclient-qps 100 --kubeclient-burst 200`), all three
//! started one after the other against the same control plane in the same run.
//!
//! Every run gets a fresh namespace that is both the watched namespace (`--all-namespaces=false`)
//! and the keys namespace, and a ServiceAccount bound to the rules of `manifests/rbac.yaml`.
//! Everything a run needs — key Secrets, SealedSecrets, unrelated Secrets — is created with the
//! admin client *before* the controller starts, so object creation is never measured: the clock
//! runs from spawning the controller process until one List shows every target Secret with the
//! expected data. That includes process start-up, the initial lists and (for keyseal) taking the
//! leader Lease, the same for every subject.
//!
//! Peak memory is `VmHWM` of the controller process itself (for upstream, which runs under
//! `unshare` + `sh -c exec`, the pid that ends up running the controller binary).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keyseal_api::SealedSecret;
use keyseal_crypto::{Certificate, CertificateParams, PrivateKey, SystemRng};
use keyseal_testenv::controller::{ControllerProcess, Launch};
use keyseal_testenv::{Cluster, ServiceAccountIdentity, TestNamespace};
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::{ControllerArgs, SealingKey};

/// Label on the Secrets the controllers write (through the SealedSecrets' templates).
const TARGET_LABEL: &str = "keyseal-bench/target";
/// Label on the unrelated 4 KiB Secrets of the memory scenario.
const UNRELATED_LABEL: &str = "keyseal-bench/unrelated";
/// Upstream's client rate limit when tuned.
pub(crate) const TUNED: [&str; 4] = ["--kubeclient-qps", "100", "--kubeclient-burst", "200"];
/// Keys in the many-keys scenario (a year of monthly renewals).
const MANY_KEYS: usize = 12;

/// The three controllers, in the order they appear in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Keyseal,
    UpstreamDefault,
    UpstreamTuned,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Keyseal => "keyseal",
            Subject::UpstreamDefault => "upstream default",
            Subject::UpstreamTuned => "upstream tuned",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Subject::Keyseal => "ks",
            Subject::UpstreamDefault => "up",
            Subject::UpstreamTuned => "upt",
        }
    }
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    OneKey,
    ManyKeys,
    Memory,
}

impl Scenario {
    fn slug(self) -> &'static str {
        match self {
            Scenario::OneKey => "1key",
            Scenario::ManyKeys => "12keys",
            Scenario::Memory => "memory",
        }
    }
}

/// Sizes of one run of the benchmark.
struct Plan {
    count: usize,
    mem_sealed: usize,
    mem_unrelated: usize,
    timeout: Duration,
    default_timeout: Duration,
    subjects: Vec<Subject>,
    concurrency: usize,
    scenarios: Vec<Scenario>,
    sealing_key: SealingKey,
    keyseal: PathBuf,
    upstream: PathBuf,
    keyseal_args: Vec<String>,
}

/// A figure that is either measured, or only known to be at least some value (a run that hit
/// the time limit: its time is at least the limit, its peak memory at least what it reached).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Exact(f64),
    AtLeast(f64),
}

impl Value {
    fn number(self) -> f64 {
        match self {
            Value::Exact(v) | Value::AtLeast(v) => v,
        }
    }
}

/// A range known to hold a figure: `[lo, hi]`, `hi` infinite when only a lower bound is known.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    lo: f64,
    hi: f64,
}

impl From<Value> for Range {
    fn from(v: Value) -> Self {
        match v {
            Value::Exact(x) => Range { lo: x, hi: x },
            Value::AtLeast(x) => Range {
                lo: x,
                hi: f64::INFINITY,
            },
        }
    }
}

/// The smaller of several figures: at least the smallest lower bound, at most the smallest
/// exact figure.
fn best(values: &[Value]) -> Option<Range> {
    let lo = values.iter().map(|v| v.number()).reduce(f64::min)?;
    let hi = values
        .iter()
        .filter_map(|v| match v {
            Value::Exact(x) => Some(*x),
            Value::AtLeast(_) => None,
        })
        .fold(f64::INFINITY, f64::min);
    Some(Range { lo, hi })
}

/// The range of `a / b` (all figures positive).
fn ratio(a: Range, b: Range) -> Range {
    Range {
        lo: a.lo / b.hi,
        hi: a.hi / b.lo,
    }
}

/// Whether a ratio in `r` meets `ratio >= target` (`at_least`) or `ratio <= target`.
fn verdict(r: Range, target: f64, at_least: bool) -> &'static str {
    let (sure, impossible) = if at_least {
        (r.lo >= target, r.hi < target)
    } else {
        (r.hi <= target, r.lo > target)
    };
    if sure {
        "yes"
    } else if impossible {
        "no"
    } else {
        "undetermined"
    }
}

/// What one controller run produced.
#[derive(Debug, Clone)]
struct Outcome {
    /// Spawn to the List that showed every target Secret (or to the time limit).
    elapsed: Duration,
    /// Target Secrets with the right data at the end.
    done: usize,
    total: usize,
    /// `VmHWM` and `VmRSS` of the controller process at the end, in KiB.
    hwm_kib: u64,
    rss_kib: u64,
}

impl Outcome {
    fn finished(&self) -> bool {
        self.done == self.total
    }

    fn seconds(&self) -> Value {
        if self.finished() {
            Value::Exact(self.elapsed.as_secs_f64())
        } else {
            Value::AtLeast(self.elapsed.as_secs_f64())
        }
    }

    fn mib(&self) -> Value {
        let mib = self.hwm_kib as f64 / 1024.0;
        if self.finished() {
            Value::Exact(mib)
        } else {
            Value::AtLeast(mib)
        }
    }
}

/// Runs the benchmark and prints its table.
pub fn run(args: &ControllerArgs) -> Result<()> {
    let plan = plan(args)?;
    ensure!(
        plan.keyseal.is_file(),
        "keyseal-controller binary not found at {}\n\
         hint: build it with `cargo build --release -p keyseal-controller`, or pass --controller PATH",
        plan.keyseal.display()
    );
    ensure!(
        plan.upstream.is_file(),
        "upstream controller not found at {}",
        plan.upstream.display()
    );

    crate::print_machine();
    println!(
        "controller: keyseal-controller{} vs the upstream controller ({}), defaults \
         (--kubeclient-qps 5 --kubeclient-burst 10) and tuned (--kubeclient-qps 100 --kubeclient-burst 200)",
        if plan.keyseal_args.is_empty() {
            " (its defaults)".to_owned()
        } else {
            format!(" {}", plan.keyseal_args.join(" "))
        },
        upstream_version(&plan.upstream),
    );
    println!(
        "every run: fresh namespace (watched and keys namespace, --all-namespaces=false), ServiceAccount \
         with manifests/rbac.yaml's rules, all objects created before the controller starts; \
         time = spawn -> a List shows all target Secrets with the right data; limit {} s per run \
         ({} s for upstream default)",
        plan.timeout.as_secs(),
        plan.default_timeout.as_secs()
    );
    println!(
        "SealedSecrets: strict scope, 1 or 2 items each (alternating); sealing key = the {} of {MANY_KEYS} \
         RSA-4096 keys in the 12-key scenario (ordered by certificate NotBefore)",
        match plan.sealing_key {
            SealingKey::Oldest => "oldest",
            SealingKey::Newest => "newest",
        }
    );

    let keys = generate_keys()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let results = runtime.block_on(run_all(&plan, &keys))?;
    print_table(&plan, &results);
    Ok(())
}

fn plan(args: &ControllerArgs) -> Result<Plan> {
    let (count, sealed, unrelated, timeout) = if args.quick {
        (200, 2_000, 2_000, 180)
    } else {
        (1_000, 10_000, 10_000, 600)
    };
    let keyseal = args
        .controller
        .clone()
        .unwrap_or_else(crate::release_controller);
    let upstream = match &args.upstream {
        Some(p) => p.clone(),
        None => {
            eprintln!(
                "locating the upstream controller (scripts/fixtures builds it if missing)..."
            );
            keyseal_testenv::fixture("controller")?
        }
    };
    let scenarios = parse_names(
        &args.scenarios,
        "scenario",
        "1key, 12keys, memory",
        |s| match s {
            "1key" => Some(Scenario::OneKey),
            "12keys" => Some(Scenario::ManyKeys),
            "memory" => Some(Scenario::Memory),
            _ => None,
        },
    )?;
    let subjects = parse_names(
        &args.subjects,
        "subject",
        "keyseal, tuned, default",
        |s| match s {
            "keyseal" => Some(Subject::Keyseal),
            "tuned" => Some(Subject::UpstreamTuned),
            "default" => Some(Subject::UpstreamDefault),
            _ => None,
        },
    )?;
    let timeout = Duration::from_secs(args.timeout.unwrap_or(timeout));
    Ok(Plan {
        count: args.count.unwrap_or(count),
        mem_sealed: args.memory_sealed.unwrap_or(sealed),
        mem_unrelated: args.memory_unrelated.unwrap_or(unrelated),
        timeout,
        default_timeout: args.default_timeout.map_or(timeout, Duration::from_secs),
        subjects,
        concurrency: args.concurrency,
        scenarios,
        sealing_key: args.sealing_key,
        keyseal,
        upstream,
        keyseal_args: args.keyseal_arg.clone(),
    })
}

/// The values named in a comma-separated flag, each once, in the order first given.
fn parse_names<T: PartialEq>(
    names: &[String],
    what: &str,
    choices: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for name in names {
        let Some(value) = parse(name) else {
            bail!("unknown {what} {name:?} (use {choices})");
        };
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

pub(crate) fn upstream_version(path: &Path) -> String {
    std::process::Command::new(path)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.split_whitespace().last().unwrap_or("").to_owned()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown version".to_owned())
}

/// The keys: index 0 is the oldest (certificate NotBefore 12 days ago), the last the newest.
struct Keys(Vec<(PrivateKey, Certificate)>);

fn generate_keys() -> Result<Keys> {
    let now = SystemTime::now();
    let mut keys = Vec::with_capacity(MANY_KEYS);
    for i in 0..MANY_KEYS {
        eprintln!(
            "generating RSA-4096 key {}/{MANY_KEYS} (not timed)...",
            i + 1
        );
        let days = (MANY_KEYS - i) as u64;
        keys.push(key_pair(now - Duration::from_secs(days * 86_400))?);
    }
    Ok(Keys(keys))
}

/// A new RSA-4096 key and its self-signed certificate, valid from `not_before`.
pub(crate) fn key_pair(not_before: SystemTime) -> Result<(PrivateKey, Certificate)> {
    let key = PrivateKey::generate(4096).context("generating an RSA-4096 key")?;
    let params = CertificateParams {
        not_before,
        ..CertificateParams::default()
    };
    let cert = keyseal_crypto::self_signed_certificate(&key, &params, &mut SystemRng)
        .context("creating a certificate")?;
    Ok((key, cert))
}

/// Creates the sealing-key Secret of `key` in `namespace`, in upstream's format (what either
/// controller loads).
pub(crate) async fn create_key_secret(
    secrets: &Api<Secret>,
    namespace: &str,
    key: &PrivateKey,
    cert: &Certificate,
) -> Result<()> {
    let secret = keyseal_api::key_secret::new_key_secret(
        namespace,
        keyseal_api::key_secret::DEFAULT_KEY_PREFIX,
        key,
        cert,
        &BTreeMap::new(),
        &BTreeMap::new(),
    );
    secrets.create(&PostParams::default(), &secret).await?;
    Ok(())
}

impl Keys {
    fn sealing_index(&self, which: SealingKey) -> usize {
        match which {
            SealingKey::Oldest => 0,
            SealingKey::Newest => self.0.len() - 1,
        }
    }
}

type Results = Vec<(Scenario, Vec<(Subject, Outcome)>)>;

async fn run_all(plan: &Plan, keys: &Keys) -> Result<Results> {
    let mut results = Vec::new();
    for &scenario in &plan.scenarios {
        let mut row = Vec::new();
        // Keyseal first, then tuned upstream, then upstream at its defaults (the slowest).
        for subject in [
            Subject::Keyseal,
            Subject::UpstreamTuned,
            Subject::UpstreamDefault,
        ]
        .into_iter()
        .filter(|s| plan.subjects.contains(s))
        {
            // The plane is shared and may be restarted by someone else between runs (new
            // ports): connect afresh for each run, and retry a run that failed once.
            let mut attempt = 0;
            let outcome = loop {
                attempt += 1;
                let result = async {
                    let cluster = Cluster::connect().await?;
                    cluster.install_crd().await?;
                    run_one(plan, keys, &cluster, scenario, subject).await
                }
                .await
                .with_context(|| format!("{} / {}", scenario.slug(), subject.name()));
                match result {
                    Ok(outcome) => break outcome,
                    Err(e) if attempt < 2 => eprintln!("  run failed, retrying once: {e:#}"),
                    Err(e) => return Err(e),
                }
            };
            eprintln!(
                "  {} / {}: {}/{} in {:.1} s, VmHWM {:.1} MiB",
                scenario.slug(),
                subject.name(),
                outcome.done,
                outcome.total,
                outcome.elapsed.as_secs_f64(),
                outcome.hwm_kib as f64 / 1024.0
            );
            row.push((subject, outcome));
        }
        results.push((scenario, row));
    }
    Ok(results)
}

/// One controller in one fresh namespace: create everything, start, wait, measure, clean up.
async fn run_one(
    plan: &Plan,
    keys: &Keys,
    cluster: &Cluster,
    scenario: Scenario,
    subject: Subject,
) -> Result<Outcome> {
    let admin = cluster.client();
    let ns = cluster
        .namespace(&format!("bench-{}-{}", scenario.slug(), subject.slug()))
        .await?;
    eprintln!(
        "{} / {}: namespace {}",
        scenario.slug(),
        subject.name(),
        ns.name()
    );
    let result = async {
        let sa = cluster.controller_identity(ns.name()).await?;

        // Keys, in upstream's format.
        let sealing = keys.sealing_index(plan.sealing_key);
        let key_indices: Vec<usize> = match scenario {
            Scenario::ManyKeys => (0..keys.0.len()).collect(),
            Scenario::OneKey | Scenario::Memory => vec![sealing],
        };
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns.name());
        for i in key_indices {
            let (key, cert) = &keys.0[i];
            create_key_secret(&secrets, ns.name(), key, cert).await?;
        }

        // SealedSecrets (and unrelated Secrets), all before the controller starts.
        let (count, unrelated) = match scenario {
            Scenario::OneKey | Scenario::ManyKeys => (plan.count, 0),
            Scenario::Memory => (plan.mem_sealed, plan.mem_unrelated),
        };
        let cert = keys.0[sealing].1.clone();
        let namespace = ns.name().to_owned();
        let (sealed, expected) =
            tokio::task::spawn_blocking(move || seal_all(&cert, &namespace, count)).await??;
        let started = Instant::now();
        create_all(
            Api::<SealedSecret>::namespaced(admin.clone(), ns.name()),
            sealed,
            plan.concurrency,
            "SealedSecrets",
        )
        .await?;
        if unrelated > 0 {
            let blobs = (0..unrelated).map(unrelated_secret).collect();
            create_all(
                secrets.clone(),
                blobs,
                plan.concurrency,
                "unrelated Secrets",
            )
            .await?;
        }
        eprintln!(
            "  created {count} SealedSecrets{} in {:.1} s (not timed)",
            if unrelated > 0 {
                format!(" and {unrelated} unrelated 4 KiB Secrets")
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        );

        let mut process = match subject {
            Subject::Keyseal => start_keyseal(plan, &sa, ns.name())?,
            Subject::UpstreamDefault => start_upstream(plan, cluster, &sa, ns.name(), &[])?,
            Subject::UpstreamTuned => start_upstream(plan, cluster, &sa, ns.name(), &TUNED)?,
        };
        let interval = match scenario {
            Scenario::Memory => Duration::from_secs(2),
            _ => Duration::from_millis(250),
        };
        let limit = match subject {
            Subject::UpstreamDefault => plan.default_timeout,
            _ => plan.timeout,
        };
        let waited = wait_unsealed(&mut process, &secrets, &expected, limit, interval).await;
        let outcome = match waited {
            Ok((elapsed, done)) => {
                if scenario == Scenario::Memory {
                    // Let the controller take in the last watch events before reading the peak.
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                let (hwm_kib, rss_kib) = process.memory()?;
                Ok(Outcome {
                    elapsed,
                    done,
                    total: expected.len(),
                    hwm_kib,
                    rss_kib,
                })
            }
            Err(e) => Err(e.context(format!("controller log tail:\n{}", process.log_tail()))),
        };
        process.stop().await;
        outcome
    }
    .await;
    delete_namespace(ns).await;
    result
}

type Expected = HashMap<String, BTreeMap<String, ByteString>>;

/// `count` SealedSecrets named `s-<i>`, 1 item for even `i`, 2 for odd, and what each must
/// unseal to.
fn seal_all(
    cert: &Certificate,
    namespace: &str,
    count: usize,
) -> Result<(Vec<SealedSecret>, Expected)> {
    let mut sealed = Vec::with_capacity(count);
    let mut expected = HashMap::with_capacity(count);
    for i in 0..count {
        let name = format!("s-{i}");
        let mut data = BTreeMap::new();
        data.insert(
            "password".to_owned(),
            ByteString(format!("pw-{i}-correct-horse-battery-staple").into_bytes()),
        );
        if i % 2 == 1 {
            data.insert(
                "username".to_owned(),
                ByteString(format!("user-{i}").into_bytes()),
            );
        }
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.clone());
        secret.metadata.namespace = Some(namespace.to_owned());
        secret.metadata.labels = Some(BTreeMap::from([(
            TARGET_LABEL.to_owned(),
            "true".to_owned(),
        )]));
        secret.data = Some(data.clone());
        sealed.push(keyseal_api::seal_secret(&secret, cert.public_key())?);
        expected.insert(name, data);
    }
    Ok((sealed, expected))
}

/// An unrelated Secret with one 4 KiB item of pseudo-random bytes.
fn unrelated_secret(i: usize) -> Secret {
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let blob: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut secret = Secret::default();
    secret.metadata.name = Some(format!("unrelated-{i}"));
    secret.metadata.labels = Some(BTreeMap::from([(
        UNRELATED_LABEL.to_owned(),
        "true".to_owned(),
    )]));
    secret.data = Some(BTreeMap::from([("blob".to_owned(), ByteString(blob))]));
    secret
}

/// Creates `objects` with `concurrency` requests in flight, retrying transient failures.
pub(crate) async fn create_all<K>(
    api: Api<K>,
    objects: Vec<K>,
    concurrency: usize,
    what: &str,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let total = objects.len();
    let mut stream = futures::stream::iter(objects)
        .map(|object| {
            let api = api.clone();
            async move {
                let mut attempt = 0;
                loop {
                    match api.create(&PostParams::default(), &object).await {
                        Ok(_) => return Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
                        Err(_) if attempt < 5 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                        }
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                }
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut done = 0;
    let mut last = Instant::now();
    while let Some(result) = stream.next().await {
        result.with_context(|| format!("creating {what}"))?;
        done += 1;
        if last.elapsed() > Duration::from_secs(10) {
            eprintln!("  creating {what}: {done}/{total}");
            last = Instant::now();
        }
    }
    Ok(())
}

/// Polls with one List (label-selected: only the target Secrets) until every expected Secret
/// is there with the right data, the process dies, or `timeout` passes. Returns the time from
/// spawn to the start of the List that saw everything (or to the deadline) and the count.
async fn wait_unsealed(
    process: &mut Process,
    secrets: &Api<Secret>,
    expected: &Expected,
    timeout: Duration,
    interval: Duration,
) -> Result<(Duration, usize)> {
    let lp = ListParams::default().labels(&format!("{TARGET_LABEL}=true"));
    let mut last_report = Instant::now();
    let mut done = 0;
    let mut last_ok = Instant::now();
    loop {
        if let Some(status) = process.controller.try_wait()? {
            bail!("{} exited with {status}", process.name);
        }
        let at = process.controller.started().elapsed();
        if at > timeout {
            eprintln!(
                "  time limit: {done}/{} after {:.0} s",
                expected.len(),
                at.as_secs_f64()
            );
            return Ok((at, done));
        }
        match secrets.list(&lp).await {
            Ok(list) => {
                last_ok = Instant::now();
                done = list
                    .items
                    .iter()
                    .filter(|s| {
                        s.metadata
                            .name
                            .as_ref()
                            .and_then(|n| expected.get(n))
                            .is_some_and(|want| s.data.as_ref() == Some(want))
                    })
                    .count();
                if done == expected.len() {
                    return Ok((at, done));
                }
            }
            Err(e) if last_ok.elapsed() < Duration::from_secs(30) => {
                eprintln!("  list failed (retrying): {e}");
            }
            Err(e) => bail!("the API server has not answered a List for 30 s: {e}"),
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {}: {done}/{} after {:.0} s",
                process.name,
                expected.len(),
                process.controller.started().elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(interval).await;
    }
}

/// A controller under measurement; killed when dropped.
struct Process {
    name: &'static str,
    controller: ControllerProcess,
}

fn start_keyseal(plan: &Plan, sa: &ServiceAccountIdentity, ns: &str) -> Result<Process> {
    let controller = Launch::new(&plan.keyseal, ns)
        .args(["--key-renew-period", "0"])
        .args(&plan.keyseal_args)
        .spawn_keyseal(sa)?;
    Ok(Process {
        name: "keyseal",
        controller,
    })
}

/// Upstream only supports in-cluster configuration: it runs in a private mount namespace where
/// the ServiceAccount's token, the CA and the namespace are bind-mounted at the standard path
/// (the approach of the controller's e2e harness).
fn start_upstream(
    plan: &Plan,
    cluster: &Cluster,
    sa: &ServiceAccountIdentity,
    ns: &str,
    extra: &[&str],
) -> Result<Process> {
    let controller = Launch::new(&plan.upstream, ns)
        .args(["--key-renew-period", "0"])
        .args(extra)
        .spawn_upstream(cluster, sa)?;
    Ok(Process {
        name: if extra.is_empty() {
            "upstream default"
        } else {
            "upstream tuned"
        },
        controller,
    })
}

impl Process {
    /// The pid running the controller binary: the child itself once `unshare` and `sh` have
    /// exec'd, otherwise a descendant found through /proc.
    fn controller_pid(&self) -> Result<u32> {
        let child = self.controller.id().context("the controller has exited")?;
        let want = std::fs::canonicalize(self.controller.binary())?;
        let exe = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe(child).as_deref() == Some(want.as_path()) {
            return Ok(child);
        }
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if exe(pid).as_deref() == Some(want.as_path()) && descends_from(pid, child) {
                return Ok(pid);
            }
        }
        bail!("no process runs {} under pid {child}", want.display())
    }

    /// `VmHWM` and `VmRSS` in KiB.
    fn memory(&self) -> Result<(u64, u64)> {
        let usage = keyseal_testenv::usage::of(self.controller_pid()?)?;
        Ok((usage.peak_kib, usage.rss_kib))
    }

    fn log_tail(&self) -> String {
        let text = self.controller.logs();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn stop(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.controller.kill()).await;
    }
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..16 {
        if pid == ancestor {
            return true;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            return false;
        };
        pid = ppid;
    }
    false
}

/// Deletes the namespace and waits until it is gone, so its deletion does not load the plane
/// during the next measurement.
async fn delete_namespace(ns: TestNamespace) {
    let name = ns.name().to_owned();
    eprintln!("  deleting namespace {name}...");
    if ns.delete().await.is_ok() {
        return;
    }
    let Ok(cluster) = Cluster::connect().await else {
        return;
    };
    let api = Api::<Namespace>::all(cluster.client());
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        match api.get_opt(&name).await {
            Ok(None) => return,
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
    eprintln!("  namespace {name} still terminating; continuing");
}

fn fmt_value(v: Value, outcome: &Outcome, decimals: usize) -> String {
    match v {
        Value::Exact(x) => format!("{x:.decimals$}"),
        Value::AtLeast(x) => format!(">={x:.decimals$} ({}/{})", outcome.done, outcome.total),
    }
}

fn fmt_ratio(r: Range) -> String {
    if r.lo == r.hi {
        format!("{:.2}", r.lo)
    } else if r.hi.is_infinite() {
        format!(">={:.2}", r.lo)
    } else {
        format!("{:.2}-{:.2}", r.lo, r.hi)
    }
}

fn print_table(plan: &Plan, results: &Results) {
    println!();
    println!(
        "{:<44} {:>12} {:>22} {:>22} {:>9} {:>8} {:>6}",
        "scenario", "keyseal", "upstream default", "upstream tuned", "ratio", "target", "met"
    );
    let mut notes = Vec::new();
    for (scenario, row) in results {
        let get = |s: Subject| row.iter().find(|(x, _)| *x == s).map(|(_, o)| o);
        let (Some(ks), Some(up), Some(upt)) = (
            get(Subject::Keyseal),
            get(Subject::UpstreamDefault),
            get(Subject::UpstreamTuned),
        ) else {
            continue;
        };
        let (label, memory) = match scenario {
            Scenario::OneKey => (
                format!("unseal {} SealedSecrets, 1 key (s)", plan.count),
                false,
            ),
            Scenario::ManyKeys => (
                format!("unseal {} SealedSecrets, {MANY_KEYS} keys (s)", plan.count),
                false,
            ),
            Scenario::Memory => (
                format!(
                    "peak RSS, {} SS + {} Secrets (MiB)",
                    plan.mem_sealed, plan.mem_unrelated
                ),
                true,
            ),
        };
        let value = |o: &Outcome| if memory { o.mib() } else { o.seconds() };
        let decimals = 1;
        let upstream_best = best(&[value(up), value(upt)]).expect("two values");
        let (r, target, at_least, target_text) = match scenario {
            Scenario::OneKey => (ratio(upstream_best, value(ks).into()), 3.0, true, ">=3"),
            Scenario::ManyKeys => (ratio(upstream_best, value(ks).into()), 10.0, true, ">=10"),
            Scenario::Memory => (
                ratio(value(ks).into(), upstream_best),
                1.0 / 3.0,
                false,
                "<=0.33",
            ),
        };
        println!(
            "{:<44} {:>12} {:>22} {:>22} {:>9} {:>8} {:>6}",
            label,
            fmt_value(value(ks), ks, decimals),
            fmt_value(value(up), up, decimals),
            fmt_value(value(upt), upt, decimals),
            fmt_ratio(r),
            target_text,
            verdict(r, target, at_least)
        );
        for (subject, o) in row {
            notes.push(format!(
                "  {:<8} {:<17} {:>6}/{:<6} in {:>7.1} s = {:>6.1} SealedSecrets/s; VmHWM {:>7.1} MiB, VmRSS {:>7.1} MiB",
                scenario.slug(),
                subject.name(),
                o.done,
                o.total,
                o.elapsed.as_secs_f64(),
                o.done as f64 / o.elapsed.as_secs_f64().max(1e-9),
                o.hwm_kib as f64 / 1024.0,
                o.rss_kib as f64 / 1024.0
            ));
        }
    }
    println!();
    println!(
        "ratio: time = upstream_best / keyseal (> 1: keyseal faster); memory = keyseal / upstream_best \
         (< 1: keyseal smaller); upstream_best = the better of default and tuned"
    );
    println!(
        ">=X (d/N): the run hit its time limit with d of N Secrets unsealed, so X is a lower bound"
    );
    println!("per run:");
    for n in notes {
        println!("{n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(x: f64) -> Range {
        Value::Exact(x).into()
    }

    #[test]
    fn best_bounds_the_smaller_figure() {
        assert_eq!(
            best(&[Value::AtLeast(600.0), Value::Exact(40.0)]),
            Some(exact(40.0))
        );
        assert_eq!(
            best(&[Value::AtLeast(30.0), Value::Exact(40.0)]),
            Some(Range { lo: 30.0, hi: 40.0 })
        );
        let only_bounds = best(&[Value::AtLeast(30.0), Value::AtLeast(50.0)]).unwrap();
        assert_eq!(only_bounds.lo, 30.0);
        assert!(only_bounds.hi.is_infinite());
    }

    #[test]
    fn verdicts_respect_bounds() {
        assert_eq!(verdict(exact(3.5), 3.0, true), "yes");
        assert_eq!(verdict(exact(2.5), 3.0, true), "no");
        let r = ratio(Value::AtLeast(600.0).into(), exact(60.0));
        assert_eq!((r.lo, verdict(r, 3.0, true)), (10.0, "yes"));
        let r = ratio(exact(60.0), Value::AtLeast(600.0).into());
        assert_eq!((r.hi, verdict(r, 3.0, true)), (0.1, "no"));
        // keyseal 45.6 MiB; upstream >= 78.4 (unfinished) and exactly 93.3: ratio in 0.49..0.58.
        let up = best(&[Value::AtLeast(78.4), Value::Exact(93.3)]).unwrap();
        assert_eq!(verdict(ratio(exact(45.6), up), 1.0 / 3.0, false), "no");
        let up = best(&[Value::AtLeast(78.4), Value::AtLeast(93.3)]).unwrap();
        assert_eq!(
            verdict(ratio(exact(45.6), up), 1.0 / 3.0, false),
            "undetermined"
        );
    }

    #[test]
    fn unrelated_secrets_are_4_kib() {
        let s = unrelated_secret(7);
        assert_eq!(s.data.unwrap()["blob"].0.len(), 4096);
    }
}
