//! Upstream's own end-to-end suite against keyseal: the Ginkgo `integration` package of Sealed
//! Secrets v0.40.0 (41 specs), compiled by `scripts/fixtures` into the fixture cache, in three
//! pairings: keyseal-controller with keyseal, keyseal-controller with upstream's kubeseal, and
//! upstream's controller with keyseal.
//!
//! Each pairing gets a control plane of its own (the suite's controller watches every namespace
//! and keeps its keys in `kube-system`), with the controller installed as in a cluster: the
//! ServiceAccount and RBAC of `manifests/rbac.yaml` (upstream's CRD for upstream's controller,
//! `crds/` for keyseal's), running in the network namespace as that ServiceAccount, behind the
//! Service `kube-system/sealed-secrets-controller` that kubeseal's `--fetch-cert` and
//! `--validate` go through.
//!
//! Every spec must pass but those listed for the pairing in `upstream-suite-expected.yaml`, each
//! with its reason; a spec listed as failing that passes fails the test too, so the list stays
//! true.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{ControllerKind, Env, Network, Watch};
use keyseal_testenv::{PrivatePlane, await_condition, expose_in_netns, proxy_get, repo_root};

/// The controller's namespace: the suite's default (`-namespace`) and the manifests'.
const CONTROLLER_NS: &str = "kube-system";
/// The ServiceAccount and Service of `manifests/`, the names kubeseal looks for.
const NAME: &str = "sealed-secrets-controller";
/// Specs in upstream's suite at v0.40.0.
const SPECS: usize = 41;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Keyseal,
    Upstream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cli {
    Keyseal,
    Kubeseal,
}

fn pairing(controller: Controller, cli: Cli) -> &'static str {
    match (controller, cli) {
        (Controller::Keyseal, Cli::Keyseal) => "keyseal-controller+keyseal",
        (Controller::Keyseal, Cli::Kubeseal) => "keyseal-controller+kubeseal",
        (Controller::Upstream, Cli::Keyseal) => "controller+keyseal",
        (Controller::Upstream, Cli::Kubeseal) => "controller+kubeseal",
    }
}

#[tokio::test]
async fn upstream_suite_keyseal_controller_with_keyseal() -> Result<()> {
    run(Controller::Keyseal, Cli::Keyseal).await
}

#[tokio::test]
async fn upstream_suite_keyseal_controller_with_upstream_kubeseal() -> Result<()> {
    run(Controller::Keyseal, Cli::Kubeseal).await
}

#[tokio::test]
async fn upstream_suite_upstream_controller_with_keyseal() -> Result<()> {
    run(Controller::Upstream, Cli::Keyseal).await
}

/// One line of `upstream-suite-expected.yaml`.
#[derive(serde::Deserialize)]
struct Expected {
    spec: String,
    pairings: Vec<String>,
    outcome: Outcome,
    reason: String,
}

#[derive(serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Fails,
    Timing,
}

/// The expectations for `pairing`, by spec.
fn expectations(pairing: &str) -> Result<BTreeMap<String, Outcome>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream-suite-expected.yaml");
    let list: Vec<Expected> = serde_saphyr::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out = BTreeMap::new();
    for e in list {
        ensure!(
            !e.reason.trim().is_empty(),
            "{}: {:?} has no reason",
            path.display(),
            e.spec
        );
        if e.pairings.iter().any(|p| p == pairing) {
            ensure!(
                out.insert(e.spec.clone(), e.outcome).is_none(),
                "{}: {:?} is listed twice for {pairing}",
                path.display(),
                e.spec
            );
        }
    }
    Ok(out)
}

/// A spec's result from Ginkgo's JSON report.
struct SpecResult {
    text: String,
    state: String,
    failure: String,
}

fn results(report: &Path) -> Result<Vec<SpecResult>> {
    let reports: serde_json::Value = serde_json::from_slice(&std::fs::read(report)?)
        .with_context(|| format!("reading the suite's report {}", report.display()))?;
    let mut out = Vec::new();
    for suite in reports.as_array().into_iter().flatten() {
        for spec in suite["SpecReports"].as_array().into_iter().flatten() {
            if spec["LeafNodeType"] != "It" {
                // BeforeSuite/AfterSuite failures surface as the suite failing below.
                continue;
            }
            let mut words: Vec<&str> = spec["ContainerHierarchyTexts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .collect();
            words.push(spec["LeafNodeText"].as_str().unwrap_or_default());
            out.push(SpecResult {
                text: words.join(" "),
                state: spec["State"].as_str().unwrap_or_default().to_owned(),
                failure: spec["Failure"]["Message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
    }
    Ok(out)
}

/// Upstream's Go module (its CRD), as `scripts/fixtures` downloads it.
fn upstream_module() -> Result<PathBuf> {
    let out = std::process::Command::new(repo_root().join("scripts/fixtures"))
        .args(["source", "sealed-secrets"])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    ensure!(
        out.status.success(),
        "scripts/fixtures source sealed-secrets failed"
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

async fn run(controller: Controller, cli: Cli) -> Result<()> {
    let pairing = pairing(controller, cli);
    let expected = expectations(pairing)?;
    let suite = keyseal_testenv::fixture("integration")?;
    let cli_bin = match cli {
        Cli::Keyseal => Env::keyseal_cli()?,
        Cli::Kubeseal => keyseal_testenv::fixture("kubeseal")?,
    };

    let plane = PrivatePlane::start().await?;
    let cluster = plane.cluster().await?;
    match controller {
        // A team keeping upstream's controller keeps upstream's CRD.
        Controller::Upstream => {
            let crd =
                upstream_module()?.join("helm/sealed-secrets/crds/bitnami.com_sealedsecrets.yaml");
            cluster.install_crd_from(&crd).await?;
        }
        Controller::Keyseal => {
            cluster.install_crd().await?;
        }
    }
    cluster
        .apply_file(&repo_root().join("manifests/rbac.yaml"))
        .await?;
    let identity = cluster.identity(CONTROLLER_NS, NAME).await?;
    let kind = match controller {
        Controller::Keyseal => ControllerKind::Keyseal,
        Controller::Upstream => ControllerKind::Upstream(&cluster),
    };
    let (network, watch) = (Network::Netns, Watch::All);
    let running = common::start(kind, &identity, CONTROLLER_NS, network, watch, &[]).await?;
    expose_in_netns(
        &cluster.client(),
        CONTROLLER_NS,
        NAME,
        "http",
        running.api_port,
    )
    .await?;
    let admin = cluster.client();
    await_condition(
        Duration::from_secs(60),
        "the controller's certificate through the Service",
        || {
            let admin = admin.clone();
            async move {
                let pem = proxy_get(
                    &admin,
                    CONTROLLER_NS,
                    &format!("http:{NAME}:http"),
                    "/v1/cert.pem",
                )
                .await?;
                Ok(pem.contains("BEGIN CERTIFICATE").then_some(()))
            }
        },
    )
    .await
    .map_err(|e| e.context(running.logs()))?;

    // The suite, as upstream's Makefile runs it (`ginkgo -tags integration integration --
    // -kubeconfig … -kubeseal-bin … -controller-bin …`), with a JSON report.
    let work = tempfile::Builder::new()
        .prefix("upstream-suite-")
        .tempdir()?;
    let report = work.path().join("report.json");
    let log = work.path().join("suite.log");
    let mut cmd = tokio::process::Command::new(&suite);
    cmd.arg("-kubeconfig")
        .arg(plane.kubeconfig())
        .arg("-kubeseal-bin")
        .arg(&cli_bin)
        .arg("-controller-bin")
        .arg(running.binary())
        .arg(format!("-ginkgo.json-report={}", report.display()))
        .args(["-ginkgo.no-color", "-ginkgo.timeout=10m"])
        .current_dir(work.path())
        .env("KUBECONFIG", plane.kubeconfig())
        .env("HOME", work.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(work.path().join("suite.stderr"))?)
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("SEALED_SECRETS_") {
            cmd.env_remove(k);
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(12 * 60), cmd.status())
        .await
        .context("the suite did not finish in 12 minutes")??;
    let specs = results(&report).with_context(|| {
        format!(
            "the suite ({status}) wrote no usable report; its output: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;

    let mut problems = Vec::new();
    let mut passed = 0;
    for spec in &specs {
        let ok = spec.state == "passed";
        passed += usize::from(ok);
        match (expected.get(&spec.text), ok) {
            (None, true) | (Some(Outcome::Fails), false) | (Some(Outcome::Timing), _) => {}
            (None, false) => problems.push(format!(
                "{:?} {}: {}",
                spec.text,
                spec.state,
                spec.failure.trim()
            )),
            (Some(Outcome::Fails), true) => problems.push(format!(
                "{:?} passes: remove it for {pairing} from upstream-suite-expected.yaml",
                spec.text
            )),
        }
    }
    for listed in expected.keys() {
        if !specs.iter().any(|s| &s.text == listed) {
            problems.push(format!(
                "{listed:?} is listed but the suite has no such spec"
            ));
        }
    }
    if specs.len() != SPECS {
        problems.push(format!(
            "the suite ran {} specs, expected {SPECS}",
            specs.len()
        ));
    }
    let timing: Vec<String> = specs
        .iter()
        .filter(|s| expected.get(&s.text) == Some(&Outcome::Timing))
        .map(|s| format!("{:?} {}", s.text, s.state))
        .collect();
    println!(
        "upstream suite, {pairing}: {passed}/{} passed; timing-dependent: {}",
        specs.len(),
        timing.join(", ")
    );
    if !problems.is_empty() {
        let kept = work.keep();
        bail!(
            "upstream's integration suite, {pairing} ({passed}/{} passed), unexpected results:\n{}\n\
             suite output: {}\ncontroller log:\n{}",
            specs.len(),
            problems.join("\n"),
            kept.join("suite.log").display(),
            running.logs()
        );
    }
    Ok(())
}
