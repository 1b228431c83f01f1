//! End-to-end harness: the real `keyseal-controller` binary against the real control plane,
//! authenticated as a ServiceAccount bound to exactly the rules in `manifests/rbac.yaml`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use keyseal_api::{Scope, SealedSecret};
use keyseal_crypto::Certificate;
use keyseal_testenv::{Binding, Cluster, ServiceAccountIdentity, TestNamespace, await_condition};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// The controller's ServiceAccount name, as in the manifests.
pub const SA: &str = "sealed-secrets-controller";

/// A test namespace with the CRD installed and the manifests' RBAC bound to a ServiceAccount.
pub struct Env {
    pub cluster: Cluster,
    pub ns: TestNamespace,
    pub sa: ServiceAccountIdentity,
}

fn manifest_docs() -> Vec<serde_json::Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/rbac.yaml");
    let text = std::fs::read_to_string(path).expect("manifests/rbac.yaml");
    keyseal_api::input::documents(&text).expect("rbac.yaml parses")
}

fn manifest<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let doc = manifest_docs()
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in manifests/rbac.yaml"));
    serde_json::from_value(doc).expect("manifest decodes")
}

impl Env {
    /// Sets up namespace, CRD and RBAC.
    pub async fn new(prefix: &str) -> Result<Self> {
        let cluster = Cluster::connect().await?;
        cluster.install_crd().await?;
        let ns = cluster.namespace(prefix).await?;
        let admin = cluster.client();
        // The ClusterRole exactly as shipped (shared by all tests, applied idempotently).
        let cluster_role: ClusterRole = manifest("ClusterRole");
        let name = cluster_role.metadata.name.clone().unwrap();
        Api::<ClusterRole>::all(admin.clone())
            .patch(
                &name,
                &PatchParams::apply("keyseal-e2e").force(),
                &Patch::Apply(&cluster_role),
            )
            .await?;
        // The namespaced Role, moved into the test namespace (the controller's namespace here).
        let mut role: Role = manifest("Role");
        role.metadata.namespace = Some(ns.name().to_owned());
        let role_name = role.metadata.name.clone().unwrap();
        Api::<Role>::namespaced(admin.clone(), ns.name())
            .create(&PostParams::default(), &role)
            .await?;
        let sa = cluster
            .service_account(
                ns.name(),
                SA,
                &[
                    Binding::ClusterRole { name },
                    Binding::Role {
                        namespace: ns.name().to_owned(),
                        name: role_name,
                    },
                ],
            )
            .await?;
        Ok(Self { cluster, ns, sa })
    }

    pub fn admin(&self) -> Client {
        self.cluster.client()
    }

    pub fn name(&self) -> &str {
        self.ns.name()
    }

    pub fn sealed_secrets(&self) -> Api<SealedSecret> {
        Api::namespaced(self.admin(), self.name())
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.admin(), self.name())
    }

    /// Key Secrets in the controller's namespace.
    pub async fn key_secrets(&self) -> Result<Vec<Secret>> {
        let lp =
            kube::api::ListParams::default().labels(keyseal_api::annotations::SEALING_KEY_LABEL);
        Ok(self.secrets().list(&lp).await?.items)
    }

    /// Starts a controller whose namespace is the test namespace, watching only it.
    pub async fn start_controller(&self, extra: &[&str]) -> Result<ControllerProcess> {
        ControllerProcess::start(&self.sa.kubeconfig, self.name(), extra).await
    }

    /// Starts a controller inside the test network namespace and exposes its API as the Service
    /// `sealed-secrets-controller` (port name `http`), as kubeseal expects.
    pub async fn start_controller_behind_service(
        &self,
        extra: &[&str],
    ) -> Result<ControllerProcess> {
        let c = ControllerProcess::start_on(
            Network::Netns,
            &self.sa.kubeconfig_netns,
            self.name(),
            extra,
        )
        .await?;
        keyseal_testenv::expose_in_netns(
            &self.admin(),
            self.name(),
            "sealed-secrets-controller",
            "http",
            c.api_port,
        )
        .await?;
        Ok(c)
    }

    /// Path of the `keyseal` CLI, built on demand (it is another package's binary).
    pub fn keyseal_cli() -> Result<PathBuf> {
        let dir = std::path::Path::new(env!("CARGO_BIN_EXE_keyseal-controller"))
            .parent()
            .context("target dir")?
            .to_path_buf();
        let path = dir.join("keyseal");
        if !path.is_file() {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "keyseal-cli"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                .status()?;
            anyhow::ensure!(
                status.success() && path.is_file(),
                "could not build the keyseal CLI"
            );
        }
        Ok(path)
    }

    /// Seals `items` for `name` in this namespace with `cert`.
    pub fn seal(
        &self,
        cert: &Certificate,
        name: &str,
        items: &[(&str, &str)],
        scope: Scope,
    ) -> SealedSecret {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.into());
        secret.metadata.namespace = Some(self.name().into());
        let mut annotations = BTreeMap::new();
        scope.write_annotations(&mut annotations);
        secret.metadata.annotations = Some(annotations);
        secret.string_data = Some(
            items
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        keyseal_api::seal_secret(&secret, cert.public_key()).expect("seals")
    }

    /// Creates a SealedSecret.
    pub async fn create(&self, ss: &SealedSecret) -> Result<SealedSecret> {
        Ok(self
            .sealed_secrets()
            .create(&PostParams::default(), ss)
            .await?)
    }

    /// Waits until the Secret `name` exists and `check` accepts it.
    pub async fn await_secret(
        &self,
        name: &str,
        check: impl Fn(&Secret) -> bool,
    ) -> Result<Secret> {
        let api = self.secrets();
        await_condition(
            Duration::from_secs(30),
            &format!("Secret {}/{name}", self.name()),
            || {
                let api = api.clone();
                let name = name.to_owned();
                let ok = &check;
                async move { Ok(api.get_opt(&name).await?.filter(|s| ok(s))) }
            },
        )
        .await
    }

    /// Waits until the SealedSecret's Synced condition has `status` (`True`/`False`).
    pub async fn await_synced(&self, name: &str, status: &str) -> Result<SealedSecret> {
        let api = self.sealed_secrets();
        await_condition(
            Duration::from_secs(30),
            &format!("SealedSecret {}/{name} Synced={status}", self.name()),
            || {
                let api = api.clone();
                let name = name.to_owned();
                let status = status.to_owned();
                async move {
                    let ss = api.get(&name).await?;
                    let ok = ss
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced"))
                        .is_some_and(|c| c.status == status);
                    Ok(ok.then_some(ss))
                }
            },
        )
        .await
    }

    /// Events about `name` (core/v1 list; events.k8s.io events are visible there too).
    pub async fn events_for(&self, name: &str) -> Result<Vec<k8s_openapi::api::core::v1::Event>> {
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.admin(), self.name());
        let lp = kube::api::ListParams::default().fields(&format!("involvedObject.name={name}"));
        Ok(api.list(&lp).await?.items)
    }
}

/// Item values of a Secret as strings.
pub fn data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running controller process; killed when dropped. Its log is kept for inspection.
pub struct ControllerProcess {
    child: tokio::process::Child,
    pub api: String,
    pub api_port: u16,
    pub metrics: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ControllerProcess {
    pub async fn start(
        kubeconfig: &std::path::Path,
        namespace: &str,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_on(Network::Host, kubeconfig, namespace, extra).await
    }

    /// Starts the controller on loopback, or inside the test network namespace where the API
    /// server's service proxy can reach it (then `kubeconfig` must be the netns one), watching
    /// only its own namespace.
    pub async fn start_on(
        network: Network,
        kubeconfig: &std::path::Path,
        namespace: &str,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_watching(network, Watch::OwnNamespace, kubeconfig, namespace, extra).await
    }

    /// Starts the controller watching `watch` (a test with a plane of its own may let it watch
    /// every namespace, as installed by default).
    pub async fn start_watching(
        network: Network,
        watch: Watch,
        kubeconfig: &std::path::Path,
        namespace: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("controller.log");
        let (host, api_port, metrics_port) = match network {
            Network::Host => ("127.0.0.1", free_port(), free_port()),
            Network::Netns => (
                keyseal_testenv::NETNS_IP,
                keyseal_testenv::netns_port()?,
                keyseal_testenv::netns_port()?,
            ),
        };
        let mut cmd = match network {
            Network::Host => tokio::process::Command::new(env!("CARGO_BIN_EXE_keyseal-controller")),
            Network::Netns => {
                let mut c = tokio::process::Command::new("ip");
                c.args([
                    "netns",
                    "exec",
                    keyseal_testenv::NETNS,
                    env!("CARGO_BIN_EXE_keyseal-controller"),
                ]);
                c
            }
        };
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--namespace",
                namespace,
                watch.flag(),
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ])
            .args([
                "--listen-addr",
                &format!("{host}:{api_port}"),
                "--listen-metrics-addr",
                &format!("{host}:{metrics_port}"),
            ])
            .args(["--leader-election-lease-duration", "6s"])
            // Everything to stderr, which is the log file the leak checks read.
            .arg("--log-info-stdout=false")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true);
        for (k, _) in std::env::vars() {
            if k.starts_with("SEALED_SECRETS_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().context("starting keyseal-controller")?;
        let mut me = Self {
            child,
            api: format!("http://{host}:{api_port}"),
            api_port,
            metrics: format!("http://{host}:{metrics_port}"),
            log,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = me.child.try_wait()? {
                bail!("keyseal-controller exited with {status}:\n{}", me.logs());
            }
            if me.get("/healthz").await.is_ok_and(|(code, _)| code == 200) {
                return Ok(me);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("keyseal-controller not healthy after 30s:\n{}", me.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything the controller logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn request(
        url: String,
        method: &'static str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, String)> {
        tokio::task::spawn_blocking(move || -> Result<(u16, String)> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut response = match (method, body) {
                ("POST", Some(b)) => agent.post(&url).send(&b[..])?,
                _ => agent.get(&url).call()?,
            };
            let code = response.status().as_u16();
            Ok((code, response.body_mut().read_to_string()?))
        })
        .await?
    }

    /// GET on the API listener.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        Self::request(format!("{}{path}", self.api), "GET", None).await
    }

    /// POST on the API listener.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> Result<(u16, String)> {
        Self::request(format!("{}{path}", self.api), "POST", Some(body)).await
    }

    /// The /metrics text.
    pub async fn scrape(&self) -> Result<String> {
        Ok(
            Self::request(format!("{}/metrics", self.metrics), "GET", None)
                .await?
                .1,
        )
    }

    /// The certificate served once a key exists.
    pub async fn cert(&self) -> Result<Certificate> {
        await_condition(
            Duration::from_secs(30),
            "the controller serves a certificate",
            || async {
                match self.get("/v1/cert.pem").await {
                    Ok((200, pem)) => Ok(Some(Certificate::from_pem(pem.as_bytes())?)),
                    _ => Ok(None),
                }
            },
        )
        .await
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(mut self) -> Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        Ok(tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await??)
    }

    /// Sends a signal by name (e.g. `USR1`).
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid.to_string()])
                .status();
        }
    }

    /// Kills the process (no graceful shutdown), as a crash would.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Which SealedSecrets a controller under test handles.
#[derive(Clone, Copy, Debug)]
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

/// Where upstream's controller is reachable.
pub enum Network {
    /// Loopback on this host.
    Host,
    /// Inside the test network namespace (reachable through the API server's service proxy).
    Netns,
}

/// The real upstream Sealed Secrets controller (built by `scripts/fixtures`). It only supports
/// in-cluster configuration, so it runs in a private mount namespace where this test's
/// ServiceAccount token and CA are bind-mounted at the standard path.
pub struct UpstreamController {
    child: tokio::process::Child,
    pub api: String,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    pub async fn start_upstream_controller(
        &self,
        network: Network,
        extra: &[&str],
    ) -> Result<UpstreamController> {
        UpstreamController::start(
            &self.cluster,
            &self.sa,
            self.name(),
            network,
            Watch::OwnNamespace,
            extra,
        )
        .await
    }
}

impl UpstreamController {
    /// Starts upstream's controller as `identity` would run in a Pod in `namespace`.
    pub async fn start(
        cluster: &Cluster,
        identity: &ServiceAccountIdentity,
        namespace: &str,
        network: Network,
        watch: Watch,
        extra: &[&str],
    ) -> Result<Self> {
        let binary = keyseal_testenv::fixture("controller")?;
        let placement = match network {
            Network::Host => keyseal_testenv::Placement::Host,
            Network::Netns => keyseal_testenv::Placement::Netns,
        };
        let (mut cmd, dir) = cluster.in_cluster_command(identity, namespace, placement, &binary)?;
        let log = dir.path().join("upstream.log");
        let (listen_host, port, metrics_port) = match network {
            Network::Host => ("127.0.0.1", free_port(), free_port()),
            Network::Netns => (
                keyseal_testenv::NETNS_IP,
                keyseal_testenv::netns_port()?,
                keyseal_testenv::netns_port()?,
            ),
        };
        let api_host = listen_host;
        cmd.args([watch.flag(), "--log-info-stdout=false"])
            .args([
                "--listen-addr",
                &format!("{listen_host}:{port}"),
                "--listen-metrics-addr",
                &format!("{listen_host}:{metrics_port}"),
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting the upstream controller")?;
        let mut me = Self {
            child,
            api: format!("http://{api_host}:{port}"),
            port,
            log,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = me.child.try_wait()? {
                bail!("upstream controller exited with {status}:\n{}", me.logs());
            }
            let cert =
                ControllerProcess::request(format!("{}/v1/cert.pem", me.api), "GET", None).await;
            if cert.is_ok_and(|(code, pem)| code == 200 && pem.contains("BEGIN CERTIFICATE")) {
                return Ok(me);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "upstream controller serves no certificate after 30s:\n{}",
                    me.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn cert(&self) -> Result<Certificate> {
        let (_, pem) =
            ControllerProcess::request(format!("{}/v1/cert.pem", self.api), "GET", None).await?;
        Ok(Certificate::from_pem(pem.as_bytes())?)
    }

    pub async fn stop(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
