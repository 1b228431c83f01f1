//! Runs the real `keyseal` binary in a temporary directory with a controlled environment.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use keyseal_api::SealedSecret;
use keyseal_crypto::{
    Certificate, CertificateParams, PrivateKey, SystemRng, self_signed_certificate,
};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success; stderr: {}", self.stderr);
        self
    }
    /// Asserts the kubeseal-style failure: exit 1, `error: …` on stderr containing `needle`,
    /// nothing on stdout.
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Self {
        assert_eq!(
            self.code, 1,
            "expected exit 1; stdout: {} stderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.starts_with("error: "),
            "stderr: {}",
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            self.stderr
        );
        assert!(
            self.stdout.is_empty(),
            "stdout must be empty on error: {}",
            self.stdout
        );
        self
    }

    /// The SealedSecrets on stdout.
    #[track_caller]
    pub fn sealed(&self) -> Vec<SealedSecret> {
        sealed(&self.stdout)
    }

    /// The one SealedSecret on stdout.
    #[track_caller]
    pub fn one_sealed(&self) -> SealedSecret {
        one(self.sealed())
    }

    /// The one Secret on stdout (`--recovery-unseal`'s output).
    #[track_caller]
    pub fn one_secret(&self) -> Secret {
        one(secrets(&self.stdout))
    }
}

#[track_caller]
fn one<T>(mut objects: Vec<T>) -> T {
    assert_eq!(objects.len(), 1, "expected exactly one object");
    objects.remove(0)
}

/// The SealedSecrets in `text` (JSON or YAML, several allowed).
#[track_caller]
pub fn sealed(text: &str) -> Vec<SealedSecret> {
    keyseal_api::input::sealed_secrets(text).expect("output parses as SealedSecrets")
}

/// The Secrets in `text` (JSON or YAML, several allowed).
#[track_caller]
pub fn secrets(text: &str) -> Vec<Secret> {
    keyseal_api::input::secrets(text).expect("output parses as Secrets")
}

/// A command line written as one string, split on whitespace (no argument holds a space).
pub fn args(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A temporary directory holding a sealing key pair and a kubeconfig-free environment.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub vars: Vec<(String, String)>,
}

/// One RSA-4096 key for the whole test binary (generation takes a moment).
pub fn key() -> &'static (PrivateKey, Certificate) {
    static KEY: OnceLock<(PrivateKey, Certificate)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = PrivateKey::generate(4096).unwrap();
        let cert =
            self_signed_certificate(&key, &CertificateParams::default(), &mut SystemRng).unwrap();
        (key, cert)
    })
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = key();
        std::fs::write(dir.path().join("cert.pem"), cert.to_pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.to_pkcs1_pem().as_bytes()).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let vars = vec![
            ("HOME".to_owned(), home.display().to_string()),
            // No kubeconfig unless a test writes one.
            (
                "KUBECONFIG".to_owned(),
                dir.path().join("no-kubeconfig").display().to_string(),
            ),
        ];
        Self { dir, vars }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// The permission bits of the file `name`.
    pub fn mode(&self, name: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(self.path(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_owned(), value.to_owned()));
    }

    /// A kubeconfig whose current context has namespace `ns`.
    pub fn kubeconfig_with_namespace(&mut self, ns: &str) {
        let p = self.write(
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: k, user: u, namespace: {ns}}}\nclusters:\n- name: k\n  cluster: {{server: 'https://127.0.0.1:1'}}\nusers:\n- name: u\n  user: {{token: t}}\n"
            ),
        );
        self.set("KUBECONFIG", &p.display().to_string());
    }

    /// Writes `s.yaml`, the Secret `ns/app` with `password: hunter2`, and seals it with
    /// `cert.pem` into `sealed.json` (strict scope).
    pub fn seal_app(&self) {
        self.write(
            "s.yaml",
            &secret("app", Some("ns"), &[("password", "hunter2")]),
        );
        self.run_line("--cert cert.pem -f s.yaml -w sealed.json", "")
            .ok();
    }

    pub fn run(&self, args: &[&str], stdin: &str) -> Run {
        self.run_program(Path::new(env!("CARGO_BIN_EXE_keyseal")), args, stdin)
    }

    /// Runs keyseal with the command line `line` (see [`args`]).
    pub fn run_line(&self, line: &str, stdin: &str) -> Run {
        self.run(&args(line), stdin)
    }

    /// Runs `program` with the command line `line` (see [`args`]).
    pub fn run_program_line(&self, program: &Path, line: &str, stdin: &str) -> Run {
        self.run_program(program, &args(line), stdin)
    }

    pub fn run_program(&self, program: &Path, args: &[&str], stdin: &str) -> Run {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("SEALED_SECRETS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("binary runs");
        keyseal_testenv::write_stdin(&mut child, stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

/// A Secret manifest.
pub fn secret(name: &str, namespace: Option<&str>, items: &[(&str, &str)]) -> String {
    let mut s = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n");
    if let Some(ns) = namespace {
        s.push_str(&format!("  namespace: {ns}\n"));
    }
    s.push_str("stringData:\n");
    for (k, v) in items {
        s.push_str(&format!("  {k}: {v:?}\n"));
    }
    s
}

/// Opens a base64 sealed value with the test key under `label`.
pub fn open_value(b64: &str, label: &str) -> Option<String> {
    let bytes = keyseal_crypto::decode_base64(b64).ok()?;
    keyseal_crypto::open([&key().0], label.as_bytes(), &bytes)
        .ok()
        .map(|o| String::from_utf8(o.plaintext.to_vec()).unwrap())
}

/// Opens item `item` of `ss` with the test key under `label`.
pub fn open_item(ss: &SealedSecret, item: &str, label: &str) -> Option<String> {
    open_value(&ss.spec.encrypted_data[item], label)
}

/// A certificate that expired on 2020-02-15.
pub fn expired_cert_pem() -> String {
    let key = PrivateKey::generate(2048).unwrap();
    let params = CertificateParams {
        common_name: String::new(),
        not_before: SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800),
        validity: Duration::from_secs(86_400 * 45),
    };
    self_signed_certificate(&key, &params, &mut SystemRng)
        .unwrap()
        .to_pem()
}

/// Path of a fixture built by `scripts/fixtures` (upstream kubeseal and friends).
pub fn fixture(name: &str) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/fixtures");
    let out = Command::new("bash")
        .args([script, "path", name])
        .output()
        .expect("bash runs");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "upstream {name} is not built: run `scripts/fixtures` first ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}
