//! The Key Vault test server (`keyseal-kv-emulator`) for one test: its own data directory, port,
//! test CA, tenant and identities, stopped when dropped. It can be stopped and started again on
//! the same port with the same secrets (an outage), and its fault switch turned (503, 429 with
//! `Retry-After`, time-outs).
//!
//! Clients reach it as they reach Azure: the vault at [`KvEmulator::url`], tokens from the
//! authority host [`KvEmulator::authority`] (what `AZURE_AUTHORITY_HOST` names), trusting
//! [`KvEmulator::ca_pem`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
pub use keyseal_kv_emulator::app::{Fault, FaultMode};
use keyseal_kv_emulator::config::{Config, Tls};
pub use keyseal_kv_emulator::config::{Federated, Identity, Issuer, Permission, Role};

use crate::{Cluster, workspace_binary};

/// The tenant the tests' emulators use.
pub const TENANT: &str = "5e2c1a7f-0b3d-4c69-9a8e-2f4d6b1c3a90";
/// The audience of Kubernetes tokens exchanged for Entra tokens (workload identity).
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// An identity's credentials, as a client is given them.
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    /// `AZURE_CLIENT_ID`.
    pub client_id: String,
    /// `AZURE_CLIENT_SECRET` (none for federated-only identities).
    pub client_secret: Option<String>,
}

/// What the emulator starts with.
#[derive(Clone, Debug)]
pub struct KvSetup {
    /// Identities and their roles.
    pub identities: Vec<Identity>,
    /// Kubernetes issuers trusted for workload identity.
    pub issuers: Vec<Issuer>,
    /// Items per list page by default.
    pub page_size: u32,
    /// Soft-delete retention in days.
    pub recoverable_days: u32,
    /// Access-token lifetime.
    pub token_lifetime_secs: u64,
    /// How long deletions take to complete.
    pub deletion_delay_ms: u64,
}

impl Default for KvSetup {
    /// Three identities with client secrets: `writer` (read, write and delete on the whole
    /// vault), `reader` (read on the secrets named `*-sealing-cert`, the published certificates)
    /// and `stranger` (no role).
    fn default() -> Self {
        let identity = |name: &str, n: u8, roles: Vec<Role>| Identity {
            name: name.to_owned(),
            client_id: format!("{n:08x}-0000-4000-8000-00000000000{n}"),
            client_secret: Some(format!("{name}-secret-{}", crate::random_suffix())),
            certificate_file: None,
            federated: Vec::new(),
            roles,
        };
        KvSetup {
            identities: vec![
                identity(
                    "writer",
                    1,
                    vec![Role {
                        scope: "*".into(),
                        permissions: vec![Permission::Read, Permission::Write, Permission::Delete],
                    }],
                ),
                identity(
                    "reader",
                    2,
                    vec![Role {
                        scope: "*-sealing-cert".into(),
                        permissions: vec![Permission::Read],
                    }],
                ),
                identity("stranger", 3, Vec::new()),
            ],
            issuers: Vec::new(),
            page_size: 25,
            recoverable_days: 90,
            token_lifetime_secs: 3600,
            deletion_delay_ms: 0,
        }
    }
}

impl KvSetup {
    /// Trusts `cluster`'s service-account issuer and lets the ServiceAccount
    /// `namespace/name` act as `identity` (a federated credential, as AKS workload identity sets
    /// up). The issuer's keys are read from the API server's `/openid/v1/jwks`.
    pub async fn federate(
        mut self,
        cluster: &Cluster,
        identity: &str,
        namespace: &str,
        name: &str,
        dir: &Path,
    ) -> Result<Self> {
        let issuer = cluster.service_account_issuer(dir).await?;
        let subject = format!("system:serviceaccount:{namespace}:{name}");
        let id = self
            .identities
            .iter_mut()
            .find(|i| i.name == identity)
            .with_context(|| format!("no identity {identity}"))?;
        id.federated.push(Federated {
            issuer: issuer.issuer.clone(),
            subject,
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()],
        });
        if !self.issuers.iter().any(|i| i.issuer == issuer.issuer) {
            self.issuers.push(issuer);
        }
        Ok(self)
    }
}

/// A running emulator.
pub struct KvEmulator {
    child: Option<tokio::process::Child>,
    dir: tempfile::TempDir,
    config: Config,
    binary: PathBuf,
    /// `https://127.0.0.1:<port>`: the vault, and the authority host.
    pub url: String,
    admin: String,
    /// The test CA (PEM) that signed its certificate.
    pub ca_pem: Vec<u8>,
}

impl KvEmulator {
    /// Starts an emulator with `setup`.
    pub async fn start(setup: KvSetup) -> Result<Self> {
        let binary = workspace_binary("keyseal-kv-emulator", "keyseal-kv-emulator")?;
        let dir = tempfile::Builder::new().prefix("keyseal-kv-").tempdir()?;
        let config = Config {
            listen: "127.0.0.1:0".into(),
            admin_listen: Some("127.0.0.1:0".into()),
            data_dir: dir.path().join("data"),
            tls: Tls::default(),
            tenant: TENANT.into(),
            identities: setup.identities,
            issuers: setup.issuers,
            page_size: setup.page_size,
            recoverable_days: setup.recoverable_days,
            token_lifetime_secs: setup.token_lifetime_secs,
            deletion_delay_ms: setup.deletion_delay_ms,
        };
        let mut me = KvEmulator {
            child: None,
            dir,
            config,
            binary,
            url: String::new(),
            admin: String::new(),
            ca_pem: Vec::new(),
        };
        me.launch().await?;
        // Later starts keep the address, so clients find the same vault after an outage.
        me.config.listen = me.url.trim_start_matches("https://").to_owned();
        me.config.admin_listen = Some(me.admin.clone());
        Ok(me)
    }

    async fn launch(&mut self) -> Result<()> {
        let data = &self.config.data_dir;
        std::fs::create_dir_all(data)?;
        let _ = std::fs::remove_file(data.join("address"));
        let config_path = self.dir.path().join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&self.config)?)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("emulator.log"))?;
        let mut child = tokio::process::Command::new(&self.binary)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting keyseal-kv-emulator")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("keyseal-kv-emulator exited with {status}:\n{}", self.logs());
            }
            if let (Ok(a), Ok(admin)) = (
                std::fs::read_to_string(data.join("address")),
                std::fs::read_to_string(data.join("admin-address")),
            ) {
                self.url = format!("https://{a}");
                self.admin = admin;
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "keyseal-kv-emulator did not listen within 30 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.ca_pem = std::fs::read(keyseal_kv_emulator::tls::generated_ca(data))?;
        self.child = Some(child);
        Ok(())
    }

    /// The authority host (`AZURE_AUTHORITY_HOST`): the emulator itself.
    pub fn authority(&self) -> &str {
        &self.url
    }

    /// The tenant (`AZURE_TENANT_ID`).
    pub fn tenant(&self) -> &str {
        &self.config.tenant
    }

    /// Where the test CA is, as a file (`SSL_CERT_FILE`, `--keyvault-ca-file`).
    pub fn ca_file(&self) -> PathBuf {
        keyseal_kv_emulator::tls::generated_ca(&self.config.data_dir)
    }

    /// The credentials of identity `name`.
    pub fn identity(&self, name: &str) -> ClientCredentials {
        let id = self
            .config
            .identities
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no identity {name}"));
        ClientCredentials {
            client_id: id.client_id.clone(),
            client_secret: id.client_secret.clone(),
        }
    }

    /// A token signed with the emulator's own key, with any claims: what it issued earlier, an
    /// expired one, one for another audience.
    pub fn sign_token(&self, claims: &serde_json::Value) -> Result<String> {
        let signer = keyseal_kv_emulator::jwt::Signer::load_or_create(&self.config.data_dir)?;
        Ok(signer.sign(claims))
    }

    /// The claims of a token it would issue to identity `name`, `lifetime` seconds from `iat`.
    pub fn token_claims(&self, name: &str, iat: i64, lifetime: i64) -> serde_json::Value {
        let client_id = self.identity(name).client_id;
        serde_json::json!({
            "aud": "https://vault.azure.net",
            "iss": format!("{}/{}/v2.0", self.url, self.config.tenant),
            "iat": iat, "nbf": iat, "exp": iat + lifetime,
            "appid": client_id, "azp": client_id, "tid": self.config.tenant,
            "oid": "00000000-0000-4000-8000-0000000000aa",
        })
    }

    /// What it logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    /// Stops it (SIGTERM), keeping its data: an outage.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .context("the emulator did not stop within 10 s")??;
        }
        Ok(())
    }

    /// Starts it again on the same address, with the same secrets and CA.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch().await
    }

    /// Sets the fault switch.
    pub async fn set_fault(&self, fault: &Fault) -> Result<()> {
        let url = format!("http://{}/fault", self.admin);
        let body = serde_json::to_vec(fault)?;
        admin_request(&url, "PUT", Some(body)).await.map(|_| ())
    }

    /// Requests answered so far, by operation (`set`, `get`, `list`, `token`, `fault`, …).
    pub async fn requests(&self) -> Result<BTreeMap<String, u64>> {
        let text = admin_request(&format!("http://{}/requests", self.admin), "GET", None).await?;
        Ok(serde_json::from_str(&text)?)
    }
}

async fn admin_request(url: &str, method: &'static str, body: Option<Vec<u8>>) -> Result<String> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || -> Result<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(true)
            .build()
            .into();
        let mut response = match (method, body) {
            ("PUT", Some(b)) => agent
                .put(&url)
                .header("content-type", "application/json")
                .send(&b[..])?,
            _ => agent.get(&url).call()?,
        };
        Ok(response.body_mut().read_to_string()?)
    })
    .await?
}

impl Drop for KvEmulator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a temp dir"));
            eprintln!(
                "testenv: the Key Vault emulator's log and data are kept in {}",
                kept.keep().display()
            );
        }
    }
}
