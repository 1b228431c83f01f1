//! End-to-end harness: the real `keyseal-controller` binary against the real control plane,
//! authenticated as a ServiceAccount bound to exactly the rules in `manifests/rbac.yaml`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use keyseal_api::{Scope, SealedSecret, SealedSecretCondition};
use keyseal_crypto::Certificate;
pub use keyseal_testenv::controller::{ControllerProcess, Launch, Network, Watch};
use keyseal_testenv::{Cluster, ServiceAccountIdentity, TestNamespace, await_condition};
use kube::api::PostParams;
use kube::{Api, Client};

/// How long a test waits for the controller to act.
pub const WAIT: Duration = Duration::from_secs(30);

/// The keyseal-controller binary cargo built for these tests.
pub fn controller_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keyseal-controller"))
}

/// Which controller a test starts.
#[derive(Clone, Copy)]
pub enum ControllerKind<'a> {
    /// keyseal-controller, as cargo built it for these tests.
    Keyseal,
    /// The real upstream Sealed Secrets controller (built by `scripts/fixtures`), run as a Pod
    /// would be on `cluster` (see `Cluster::in_cluster_command`).
    Upstream(&'a Cluster),
}

/// Starts `kind` as `identity` for `namespace` and waits until it is up. keyseal-controller
/// gets JSON debug logs (the leak checks read them) and a short leader lease (failover tests),
/// and is up when `/healthz` answers; upstream's controller when it serves its certificate.
pub async fn start(
    kind: ControllerKind<'_>,
    identity: &ServiceAccountIdentity,
    namespace: &str,
    network: Network,
    watch: Watch,
    extra: &[&str],
) -> Result<ControllerProcess> {
    let upstream_binary;
    let binary = match kind {
        ControllerKind::Keyseal => controller_binary(),
        ControllerKind::Upstream(_) => {
            upstream_binary = keyseal_testenv::fixture("controller")?;
            upstream_binary.as_path()
        }
    };
    let launch = Launch::new(binary, namespace).network(network).watch(watch);
    let mut c = match kind {
        ControllerKind::Keyseal => launch
            .args(["--log-format", "json", "--log-level", "debug"])
            .args(["--leader-election-lease-duration", "6s"])
            .args(extra)
            .spawn_keyseal(identity)?,
        ControllerKind::Upstream(cluster) => {
            launch.args(extra).spawn_upstream(cluster, identity)?
        }
    };
    match kind {
        ControllerKind::Keyseal => c.wait_healthy(WAIT).await?,
        ControllerKind::Upstream(_) => c.wait_serving_cert(WAIT).await?,
    }
    Ok(c)
}

/// The certificate a controller serves, parsed.
pub trait ServedCertificate {
    /// [`ControllerProcess::cert_pem`], parsed.
    fn cert(&self) -> impl Future<Output = Result<Certificate>>;
}

impl ServedCertificate for ControllerProcess {
    async fn cert(&self) -> Result<Certificate> {
        Ok(Certificate::from_pem(self.cert_pem().await?.as_bytes())?)
    }
}

/// A test namespace with the CRD installed and the manifests' RBAC bound to a ServiceAccount.
pub struct Env {
    pub cluster: Cluster,
    pub ns: TestNamespace,
    pub sa: ServiceAccountIdentity,
}

impl Env {
    /// Sets up namespace, CRD and RBAC.
    pub async fn new(prefix: &str) -> Result<Self> {
        let cluster = Cluster::connect().await?;
        cluster.install_crd().await?;
        let ns = cluster.namespace(prefix).await?;
        let sa = cluster.controller_identity(ns.name()).await?;
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
        self.start(ControllerKind::Keyseal, Network::Host, extra)
            .await
    }

    /// [`start`]s `kind` for this namespace, watching only it.
    async fn start(
        &self,
        kind: ControllerKind<'_>,
        network: Network,
        extra: &[&str],
    ) -> Result<ControllerProcess> {
        let watch = Watch::OwnNamespace;
        start(kind, &self.sa, self.name(), network, watch, extra).await
    }

    /// Starts a controller inside the test network namespace and exposes its API as the Service
    /// `sealed-secrets-controller` (port name `http`), as kubeseal expects.
    pub async fn start_controller_behind_service(
        &self,
        extra: &[&str],
    ) -> Result<ControllerProcess> {
        let c = self
            .start(ControllerKind::Keyseal, Network::Netns, extra)
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
        keyseal_testenv::workspace_binary("keyseal", "keyseal-cli")
    }

    /// [`seal_for`] this namespace.
    pub fn seal(
        &self,
        cert: &Certificate,
        name: &str,
        items: &[(&str, &str)],
        scope: Scope,
    ) -> SealedSecret {
        seal_for(cert, self.name(), name, items, scope)
    }

    /// Creates a SealedSecret.
    pub async fn create(&self, ss: &SealedSecret) -> Result<SealedSecret> {
        Ok(self
            .sealed_secrets()
            .create(&PostParams::default(), ss)
            .await?)
    }

    /// [`await_secret_in`] this namespace.
    pub async fn await_secret(
        &self,
        name: &str,
        check: impl Fn(&Secret) -> bool,
    ) -> Result<Secret> {
        await_secret_in(self.admin(), self.name(), name, check).await
    }

    /// [`await_synced`] in this namespace.
    pub async fn await_synced(&self, name: &str, status: &str) -> Result<SealedSecret> {
        await_synced(&self.sealed_secrets(), name, status).await
    }

    /// [`events_about`] in this namespace.
    pub async fn events_about(&self, name: &str) -> Result<Vec<Event>> {
        events_about(self.admin(), self.name(), name).await
    }

    /// Starts upstream's controller for this namespace, watching only it.
    pub async fn start_upstream_controller(
        &self,
        network: Network,
        extra: &[&str],
    ) -> Result<ControllerProcess> {
        self.start(ControllerKind::Upstream(&self.cluster), network, extra)
            .await
    }
}

/// Owned copies of string pairs.
pub fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A Secret `namespace/name` with `items` as stringData and the scope annotation of `scope`.
pub fn plain_secret(namespace: &str, name: &str, items: &[(&str, &str)], scope: Scope) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.into());
    secret.metadata.namespace = Some(namespace.into());
    let mut annotations = BTreeMap::new();
    scope.write_annotations(&mut annotations);
    secret.metadata.annotations = Some(annotations);
    secret.string_data = Some(strings(items));
    secret
}

/// Seals `items` as the CLI would for `namespace/name` in `scope`.
pub fn seal_for(
    cert: &Certificate,
    namespace: &str,
    name: &str,
    items: &[(&str, &str)],
    scope: Scope,
) -> SealedSecret {
    keyseal_api::seal_secret(
        &plain_secret(namespace, name, items, scope),
        cert.public_key(),
    )
    .expect("seals")
}

/// What most tests begin with: a test namespace as [`Env::new`] makes it, a keyseal-controller
/// running in it, the certificate it serves, the namespace's name and its SealedSecrets
/// (administrator client). A tuple struct, so that a test takes it apart in one line:
/// `let Running(env, controller, cert, ns, api) = Running::start("prefix", &[]).await?;`
pub struct Running(
    pub Env,
    pub ControllerProcess,
    pub Certificate,
    pub String,
    pub Api<SealedSecret>,
);

impl Running {
    /// Creates the namespace, starts the controller with `extra` flags and waits for its
    /// certificate.
    pub async fn start(prefix: &str, extra: &[&str]) -> Result<Self> {
        let env = Env::new(prefix).await?;
        let controller = env.start_controller(extra).await?;
        let cert = controller.cert().await?;
        let (ns, api) = (env.name().to_owned(), env.sealed_secrets());
        Ok(Self(env, controller, cert, ns, api))
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

/// Waits until the Secret `namespace/name` exists and `check` accepts it.
pub async fn await_secret_in(
    client: Client,
    namespace: &str,
    name: &str,
    check: impl Fn(&Secret) -> bool,
) -> Result<Secret> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    await_condition(WAIT, &format!("Secret {namespace}/{name}"), || {
        let api = api.clone();
        let name = name.to_owned();
        let ok = &check;
        async move { Ok(api.get_opt(&name).await?.filter(|s| ok(s))) }
    })
    .await
}

/// Waits until the SealedSecret's Synced condition is `status` (`True`/`False`) *and* it reports
/// the current generation, so a stale condition from an earlier generation never satisfies the
/// wait.
pub async fn await_synced(
    api: &Api<SealedSecret>,
    name: &str,
    status: &str,
) -> Result<SealedSecret> {
    await_condition(
        WAIT,
        &format!("SealedSecret {name} Synced={status} at its generation"),
        || {
            let api = api.clone();
            let (name, status) = (name.to_owned(), status.to_owned());
            async move {
                let ss = api.get(&name).await?;
                let ok = synced(&ss).is_some_and(|c| c.status == status)
                    && ss.status.as_ref().and_then(|s| s.observed_generation)
                        == ss.metadata.generation;
                Ok(ok.then_some(ss))
            }
        },
    )
    .await
}

/// The SealedSecret's Synced condition, if it has one.
pub fn synced(ss: &SealedSecret) -> Option<&SealedSecretCondition> {
    ss.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced"))
}

/// events.k8s.io/v1 events about the object `name` (of any kind) in `namespace`. Events
/// recorded through core/v1 are listed there too.
pub async fn events_about(client: Client, namespace: &str, name: &str) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client, namespace);
    let all = api.list(&Default::default()).await?.items;
    Ok(all
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect())
}

/// [`assert_no_plaintext_in`] the test's namespace.
pub async fn assert_no_plaintext(
    controller: &ControllerProcess,
    env: &Env,
    values: &[&str],
) -> Result<()> {
    assert_no_plaintext_in(controller, env.admin(), &[env.name()], values).await
}

/// No plaintext value (nor its base64 form, as a dumped Secret would show it) appears in the
/// controller's log, in its metrics or in any event in `namespaces`.
pub async fn assert_no_plaintext_in(
    controller: &ControllerProcess,
    client: Client,
    namespaces: &[&str],
    values: &[&str],
) -> Result<()> {
    let logs = controller.logs();
    ensure!(!logs.is_empty(), "the controller logged nothing");
    let metrics = controller.scrape().await?;
    ensure!(
        metrics.contains("sealed_secrets_controller_unseal_requests_total"),
        "metrics scraped"
    );
    let mut events = String::new();
    for ns in namespaces {
        let api: Api<Event> = Api::namespaced(client.clone(), ns);
        for e in api.list(&Default::default()).await?.items {
            events.push_str(&serde_json::to_string(&e)?);
            events.push('\n');
        }
    }
    for value in values {
        let b64 = keyseal_crypto::encode_base64(value.as_bytes());
        for (what, text) in [("log", &logs), ("metrics", &metrics), ("events", &events)] {
            ensure!(
                !text.contains(value),
                "plaintext {value:?} appears in the controller's {what}"
            );
            ensure!(
                !text.contains(&b64),
                "base64 of plaintext {value:?} appears in the controller's {what}"
            );
        }
    }
    Ok(())
}
