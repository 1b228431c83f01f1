//! A controller under test as a process: keyseal-controller, or upstream's controller (which
//! only supports in-cluster configuration, so it runs through
//! [`Cluster::in_cluster_command`]). Used by the controller's end-to-end tests and by the bench.
//!
//! [`Launch`] spawns and returns at once (the bench times from the spawn); the caller then
//! waits with [`ControllerProcess::wait_healthy`] or [`ControllerProcess::wait_serving_cert`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{Cluster, NETNS, NETNS_IP, Placement, ServiceAccountIdentity, await_condition};

/// Where a controller listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Loopback on this host.
    Host,
    /// Inside [`NETNS`], on [`NETNS_IP`] (reachable through the API server's service proxy).
    Netns,
}

/// Which SealedSecrets a controller under test handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Those in its own namespace (`--all-namespaces=false`): tests share one plane.
    OwnNamespace,
    /// All (the default of both controllers): only on a plane of the test's own.
    All,
}

impl Watch {
    fn flag(self) -> &'static str {
        match self {
            Watch::OwnNamespace => "--all-namespaces=false",
            Watch::All => "--all-namespaces=true",
        }
    }
}

/// How to start a controller: binary, namespace, network, what it watches, extra flags.
///
/// Both controllers get `--all-namespaces=<watch>`, `--listen-addr` and `--listen-metrics-addr`
/// on free ports, `--log-info-stdout=false` (everything goes to stderr, which is the log file
/// leak checks read), then [`Launch::args`] in order (so a later flag overrides an earlier one).
pub struct Launch<'a> {
    binary: &'a Path,
    namespace: &'a str,
    network: Network,
    watch: Watch,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl<'a> Launch<'a> {
    /// Runs `binary` for `namespace` on loopback, watching only that namespace.
    pub fn new(binary: &'a Path, namespace: &'a str) -> Self {
        Self {
            binary,
            namespace,
            network: Network::Host,
            watch: Watch::OwnNamespace,
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// Where it listens (and, for keyseal-controller, which of the identity's kubeconfigs it
    /// gets).
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Which SealedSecrets it handles.
    pub fn watch(mut self, watch: Watch) -> Self {
        self.watch = watch;
        self
    }

    /// Appends flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for keyseal-controller (e.g. the `AZURE_*` credential).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Backs keys up to the Key Vault test server `kv` under `prefix`: the `--keyvault-*` flags,
    /// its CA, and the tenant and authority host of its token endpoint. No credential: add one
    /// with [`Self::keyvault_identity`] or [`Self::env`].
    pub fn keyvault(self, kv: &crate::keyvault::KvEmulator, prefix: &str) -> Self {
        let ca = kv.ca_file();
        self.args(["--keyvault-url", &kv.url, "--keyvault-prefix", prefix])
            .args(["--keyvault-ca-file".as_ref(), ca.as_os_str()])
            .args(["--keyvault-disable-challenge-resource-verification"])
            .env("AZURE_TENANT_ID", kv.tenant())
            .env("AZURE_AUTHORITY_HOST", kv.authority())
    }

    /// The client-secret credential of `kv`'s identity `name` (`AZURE_CLIENT_ID`/`_SECRET`).
    pub fn keyvault_identity(self, kv: &crate::keyvault::KvEmulator, name: &str) -> Self {
        let identity = kv.identity(name);
        self.env("AZURE_CLIENT_ID", identity.client_id).env(
            "AZURE_CLIENT_SECRET",
            identity.client_secret.unwrap_or_default(),
        )
    }

    fn listen(&self) -> Result<(&'static str, u16, u16)> {
        Ok(match self.network {
            Network::Host => ("127.0.0.1", crate::free_port()?, crate::free_port()?),
            Network::Netns => (NETNS_IP, crate::netns_port()?, crate::netns_port()?),
        })
    }

    /// Spawns keyseal-controller as `identity` (its kubeconfig for [`Self::network`]). The
    /// `SEALED_SECRETS_*`, `KEYSEAL_*` and `AZURE_*` variables of this process are not passed on;
    /// those of [`Self::env`] are.
    pub fn spawn_keyseal(self, identity: &ServiceAccountIdentity) -> Result<ControllerProcess> {
        let (mut cmd, kubeconfig) = match self.network {
            Network::Host => (
                tokio::process::Command::new(self.binary),
                &identity.kubeconfig,
            ),
            Network::Netns => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", NETNS]).arg(self.binary);
                (c, &identity.kubeconfig_netns)
            }
        };
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", self.namespace]);
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if ["SEALED_SECRETS_", "KEYSEAL_", "AZURE_"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        let dir = tempfile::tempdir()?;
        self.spawn(cmd, dir, "keyseal-controller")
    }

    /// Spawns upstream's controller as a Pod of `identity` would run (see
    /// [`Cluster::in_cluster_command`]).
    pub fn spawn_upstream(
        self,
        cluster: &Cluster,
        identity: &ServiceAccountIdentity,
    ) -> Result<ControllerProcess> {
        let placement = match self.network {
            Network::Host => Placement::Host,
            Network::Netns => Placement::Netns,
        };
        let (cmd, dir) =
            cluster.in_cluster_command(identity, self.namespace, placement, self.binary)?;
        self.spawn(cmd, dir, "the upstream controller")
    }

    fn spawn(
        self,
        mut cmd: tokio::process::Command,
        dir: tempfile::TempDir,
        what: &'static str,
    ) -> Result<ControllerProcess> {
        let (host, api_port, metrics_port) = self.listen()?;
        let log = dir.path().join("controller.log");
        cmd.args([self.watch.flag(), "--log-info-stdout=false"])
            .arg("--listen-addr")
            .arg(format!("{host}:{api_port}"))
            .arg("--listen-metrics-addr")
            .arg(format!("{host}:{metrics_port}"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(ControllerProcess {
            child,
            what,
            binary: self.binary.to_owned(),
            started,
            api: format!("http://{host}:{api_port}"),
            api_port,
            metrics: format!("http://{host}:{metrics_port}"),
            log,
            _dir: dir,
        })
    }
}

/// A running controller; killed when dropped. Its log (stderr) is kept for inspection.
pub struct ControllerProcess {
    child: tokio::process::Child,
    what: &'static str,
    binary: PathBuf,
    started: Instant,
    /// Base URL of the API listener (`/v1/cert.pem`, `/v1/verify`, `/healthz`, …).
    pub api: String,
    /// Port of the API listener.
    pub api_port: u16,
    /// Base URL of the metrics listener.
    pub metrics: String,
    /// The log file.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ControllerProcess {
    /// When it was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The binary it was started from.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The pid of the spawned process (`None` once it has been reaped).
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits until `/healthz` answers 200 (keyseal-controller is up), failing with the log if
    /// the process exits or `timeout` passes.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let interval = Duration::from_millis(100);
        self.wait_until("/healthz", "healthy", timeout, interval, |code, _| {
            code == 200
        })
        .await
    }

    /// Waits until `/v1/cert.pem` serves a certificate (upstream's controller has no health
    /// endpoint on that listener).
    pub async fn wait_serving_cert(&mut self, timeout: Duration) -> Result<()> {
        let interval = Duration::from_millis(200);
        let check = |code, body: &str| code == 200 && body.contains("BEGIN CERTIFICATE");
        self.wait_until(
            "/v1/cert.pem",
            "serving a certificate",
            timeout,
            interval,
            check,
        )
        .await
    }

    async fn wait_until(
        &mut self,
        path: &str,
        what: &str,
        timeout: Duration,
        interval: Duration,
        ok: impl Fn(u16, &str) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status}:\n{}", self.what, self.logs());
            }
            if self
                .get(path)
                .await
                .is_ok_and(|(code, body)| ok(code, &body))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} not {what} after {timeout:?}:\n{}",
                    self.what,
                    self.logs()
                );
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the API listener: status and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        http_request(format!("{}{path}", self.api), None).await
    }

    /// POST on the API listener: status and body.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> Result<(u16, String)> {
        http_request(format!("{}{path}", self.api), Some(body)).await
    }

    /// The `/metrics` text.
    pub async fn scrape(&self) -> Result<String> {
        Ok(http_request(format!("{}/metrics", self.metrics), None)
            .await?
            .1)
    }

    /// The `/metrics` page, parsed.
    pub async fn metrics(&self) -> Result<crate::metrics::Metrics> {
        Ok(crate::metrics::Metrics::parse(&self.scrape().await?))
    }

    /// The PEM certificate it serves, once it serves one (within 30 s).
    pub async fn cert_pem(&self) -> Result<String> {
        await_condition(
            Duration::from_secs(30),
            "the controller serves a certificate",
            || async {
                match self.get("/v1/cert.pem").await {
                    Ok((200, pem)) if pem.contains("-----BEGIN CERTIFICATE-----") => Ok(Some(pem)),
                    _ => Ok(None),
                }
            },
        )
        .await
    }

    /// Sends a signal by name (e.g. `USR1`).
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid.to_string()])
                .status();
        }
    }

    /// Sends SIGTERM and waits (at most 20 s) for it to exit.
    pub async fn stop(mut self) -> Result<ExitStatus> {
        self.signal("TERM");
        Ok(tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await??)
    }

    /// Kills it (no graceful shutdown), as a crash would, and reaps it.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

async fn http_request(url: String, post: Option<Vec<u8>>) -> Result<(u16, String)> {
    tokio::task::spawn_blocking(move || -> Result<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = match post {
            Some(body) => agent.post(&url).send(&body[..])?,
            None => agent.get(&url).call()?,
        };
        let code = response.status().as_u16();
        Ok((code, response.body_mut().read_to_string()?))
    })
    .await?
}
