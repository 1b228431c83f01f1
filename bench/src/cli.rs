//! `keyseal-bench cli`: wall time of one cold `keyseal --cert c.pem < secret.yaml` process, next
//! to upstream `kubeseal --cert c.pem < secret.yaml` on the same input in the same run.
//!
//! Each run is a fresh process, so the figure includes exec, dynamic loading, runtime start-up,
//! parsing the certificate and the Secret, one RSA-OAEP encryption per item and writing JSON:
//! what a user or a CI job waits for. Runs of the two binaries alternate so that load from other
//! processes falls on both alike. Every run's exit code and output are checked, so a broken
//! binary cannot produce a fast figure.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use keyseal_crypto::{
    CertificateParams, PrivateKey, SystemRng, encode_base64, self_signed_certificate,
};
use serde_json::Value;

use crate::CliArgs;
use crate::stats::{Summary, ms};

/// The Secret's items: a few of the sizes people actually seal.
const ITEMS: [(&str, &[u8]); 4] = [
    ("username", b"app"),
    ("password", b"correct-horse-battery-staple"),
    (
        "api-token",
        b"ghp_0123456789abcdefghijklmnopqrstuvwxyzABCD0123456789abcdefghij",
    ),
    (
        "config.json",
        br#"{"database":{"host":"db.internal","port":5432,"sslmode":"verify-full"},"pool":{"max":20,"idle":5},"features":["audit","metrics","tracing"]}"#,
    ),
];
const NAMESPACE: &str = "bench";
const NAME: &str = "db-credentials";

/// One binary under test.
struct Subject {
    name: &'static str,
    path: PathBuf,
    samples: Vec<Duration>,
}

/// Runs the benchmark and prints its table.
pub fn run(args: &CliArgs) -> Result<()> {
    let keyseal = args
        .keyseal
        .clone()
        .unwrap_or_else(|| crate::workspace_root().join("target/release/keyseal"));
    ensure!(
        keyseal.is_file(),
        "keyseal binary not found at {}\n\
         hint: build it with `cargo build --release -p keyseal-cli`, or pass --keyseal PATH",
        keyseal.display()
    );
    let kubeseal = match &args.kubeseal {
        Some(path) => {
            ensure!(
                path.is_file(),
                "--kubeseal {}: no such file",
                path.display()
            );
            Some(path.clone())
        }
        None => fixtures_kubeseal(),
    };

    crate::print_machine();
    println!(
        "cli: `<bin> --cert c.pem < secret.yaml`, RSA-4096 certificate, {} items, \
         {} timed runs each after 1 warm-up, one process at a time, alternating",
        ITEMS.len(),
        args.runs
    );

    eprintln!("generating an RSA-4096 key and certificate (not timed)...");
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    write_inputs(dir.path())?;

    let mut subjects = vec![Subject {
        name: "keyseal",
        path: keyseal,
        samples: Vec::new(),
    }];
    if let Some(path) = kubeseal {
        subjects.push(Subject {
            name: "kubeseal",
            path,
            samples: Vec::new(),
        });
    }

    // Warm-up: fills the page cache with each binary, and fails early with a clear message.
    for subject in &subjects {
        time_one(subject, dir.path())
            .with_context(|| format!("warm-up run of {}", subject.name))?;
    }
    eprintln!("timing {} runs of each binary...", args.runs);
    for run in 1..=args.runs {
        for subject in &mut subjects {
            let elapsed = time_one(subject, dir.path())
                .with_context(|| format!("run {run} of {}", subject.name))?;
            subject.samples.push(elapsed);
        }
    }

    print_table(&subjects);
    Ok(())
}

/// The kubeseal `scripts/fixtures` built, found the way that script's `have` finds it, without
/// running `scripts/fixtures path` (which would start a Go build when the binary is missing).
fn fixtures_kubeseal() -> Option<PathBuf> {
    let script = crate::workspace_root().join("scripts/fixtures");
    let versions = Command::new(&script).arg("versions").output().ok()?;
    let versions = String::from_utf8(versions.stdout).ok()?;
    let version = versions.lines().find_map(|l| l.strip_prefix("kubeseal "))?;
    let cache = std::env::var_os("KEYSEAL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/keyseal")))?;
    let path = cache
        .join("bin")
        .join(format!("kubeseal-{}", version.trim()));
    path.is_file().then_some(path)
}

/// Writes `c.pem` (a fresh RSA-4096 sealing certificate) and `secret.yaml` into `dir`.
fn write_inputs(dir: &Path) -> Result<()> {
    let key = PrivateKey::generate(4096).context("generating an RSA-4096 key")?;
    let cert = self_signed_certificate(&key, &CertificateParams::default(), &mut SystemRng)
        .context("creating the sealing certificate")?;
    std::fs::write(dir.join("c.pem"), cert.to_pem()).context("writing c.pem")?;
    std::fs::write(dir.join("secret.yaml"), secret_yaml()).context("writing secret.yaml")?;
    Ok(())
}

fn secret_yaml() -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {NAME}\n  namespace: {NAMESPACE}\n\
         type: Opaque\ndata:\n"
    );
    for (key, value) in ITEMS {
        yaml.push_str(&format!("  {key}: {}\n", encode_base64(value)));
    }
    yaml
}

/// Runs `subject` once on the inputs in `dir`; returns its wall time, spawn to exit.
fn time_one(subject: &Subject, dir: &Path) -> Result<Duration> {
    let stdin = File::open(dir.join("secret.yaml")).context("opening secret.yaml")?;
    let mut command = Command::new(&subject.path);
    command
        .arg("--cert")
        .arg(dir.join("c.pem"))
        .current_dir(dir)
        // Neither binary may reach for a real cluster: --cert must be enough.
        .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("starting {}", subject.path.display()))?;
    let elapsed = start.elapsed();
    ensure!(
        output.status.success(),
        "{} exited with {}: {}",
        subject.path.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    check_sealed_secret(&output.stdout)
        .with_context(|| format!("checking the output of {}", subject.path.display()))?;
    Ok(elapsed)
}

/// The output must be a SealedSecret JSON with one non-empty encrypted value per input item.
fn check_sealed_secret(stdout: &[u8]) -> Result<()> {
    let doc: Value = serde_json::from_slice(stdout).context("output is not JSON")?;
    let kind = doc.get("kind").and_then(Value::as_str);
    ensure!(
        kind == Some("SealedSecret"),
        "kind is {kind:?}, not \"SealedSecret\""
    );
    let Some(encrypted) = doc
        .pointer("/spec/encryptedData")
        .and_then(Value::as_object)
    else {
        bail!("no spec.encryptedData object");
    };
    let got: BTreeMap<&str, bool> = encrypted
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().is_some_and(|s| !s.is_empty())))
        .collect();
    for (key, _) in ITEMS {
        ensure!(
            got.get(key) == Some(&true),
            "spec.encryptedData.{key} is missing or empty"
        );
    }
    Ok(())
}

fn print_table(subjects: &[Subject]) {
    println!();
    println!(
        "{:<10} {:>6} {:>12} {:>12} {:>12}",
        "binary", "runs", "median ms", "p90 ms", "min ms"
    );
    let mut summaries = Vec::new();
    for subject in subjects {
        let Some(summary) = Summary::of(&subject.samples) else {
            continue;
        };
        let min = subject.samples.iter().min().copied().unwrap_or_default();
        println!(
            "{:<10} {:>6} {:>12.2} {:>12.2} {:>12.2}",
            subject.name,
            subject.samples.len(),
            ms(summary.median),
            ms(summary.p90),
            ms(min)
        );
        summaries.push((subject.name, summary));
    }
    match summaries.as_slice() {
        [("keyseal", ours), ("kubeseal", theirs)] => {
            println!();
            println!(
                "kubeseal/keyseal: median {:.2}x, p90 {:.2}x  (> 1 means keyseal is faster)",
                ms(theirs.median) / ms(ours.median),
                ms(theirs.p90) / ms(ours.p90)
            );
        }
        _ => println!("kubeseal: not built (run scripts/fixtures)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_secret(encrypted: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "kind": "SealedSecret",
            "apiVersion": "bitnami.com/v1alpha1",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"encryptedData": encrypted},
        }))
        .unwrap()
    }

    fn all_items() -> Value {
        ITEMS
            .iter()
            .map(|(k, _)| (k.to_string(), Value::from("AgB...")))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    #[test]
    fn accepts_a_complete_sealed_secret() {
        check_sealed_secret(&sealed_secret(all_items())).unwrap();
    }

    #[test]
    fn refuses_non_json() {
        assert!(check_sealed_secret(b"apiVersion: v1\nkind: SealedSecret\n").is_err());
    }

    #[test]
    fn refuses_other_kinds() {
        let mut doc: Value = serde_json::from_slice(&sealed_secret(all_items())).unwrap();
        doc["kind"] = "Secret".into();
        assert!(check_sealed_secret(&serde_json::to_vec(&doc).unwrap()).is_err());
    }

    #[test]
    fn refuses_a_missing_item() {
        let mut items = all_items();
        items.as_object_mut().unwrap().remove("password");
        assert!(check_sealed_secret(&sealed_secret(items)).is_err());
    }

    #[test]
    fn refuses_an_empty_item() {
        let mut items = all_items();
        items["password"] = "".into();
        assert!(check_sealed_secret(&sealed_secret(items)).is_err());
    }

    #[test]
    fn secret_yaml_lists_every_item() {
        let yaml = secret_yaml();
        assert!(yaml.contains("kind: Secret\n"));
        assert!(yaml.contains(&format!("  namespace: {NAMESPACE}\n")));
        for (key, value) in ITEMS {
            assert!(yaml.contains(&format!("  {key}: {}\n", encode_base64(value))));
        }
    }
}
