//! Test support for keyseal's end-to-end tests against a real Kubernetes control plane.
//!
//! * [`Cluster::connect`] uses `$KUBECONFIG` when it is set, and otherwise runs
//!   `scripts/cluster up` (etcd + kube-apiserver + kube-controller-manager built from source by
//!   `scripts/fixtures`) once per process and uses the kubeconfig it writes.
//! * [`Cluster::namespace`] gives each test its own namespace, deleted when the guard drops
//!   (kept when `KEYSEAL_KEEP_NS=1`).
//! * [`Cluster::install_crd`] applies `crds/sealedsecret.yaml` and waits until it is established.
//! * [`Cluster::service_account`] mints a ServiceAccount-token identity bound to given
//!   Roles/ClusterRoles, so code under test runs with exactly the RBAC its manifests grant.
//! * [`NetnsProcess`] and [`expose_in_netns`] make the API server's service proxy path testable:
//!   a process in the network namespace `keyseal-net` listens on [`NETNS_IP`], which the API
//!   server may dial (it refuses loopback endpoints).
//! * [`PrivatePlane`] starts a whole control plane for one test (a controller watching every
//!   namespace, objects in `kube-system`); [`Cluster::apply_file`] applies a manifest file and
//!   [`Cluster::identity`] mints a token for a ServiceAccount it created.
//! * [`controller::Launch`] starts keyseal-controller or upstream's controller as a process
//!   under test ([`controller::ControllerProcess`]); [`metrics::Metrics`] reads its `/metrics`.
//! * [`usage::of`] reads a process's CPU time and memory from `/proc`.
//! * [`webhook::HoldingWebhook`] holds chosen API requests (a validating admission webhook) so a
//!   test can force an interleaving, e.g. a deletion while a status write is in flight.
//!
//! See `docs/cluster.md`.
#![forbid(unsafe_code)]

pub mod audit;
pub mod controller;
pub mod data;
pub mod faults;
pub mod keyvault;
pub mod metrics;
pub mod usage;
pub mod webhook;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Namespace,
    ObjectReference, Pod, PodSpec, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt as _};

/// The ServiceAccount of `manifests/rbac.yaml`, which kubeseal's `--controller-name` defaults to.
pub const CONTROLLER_SA: &str = "sealed-secrets-controller";

/// The network namespace `scripts/cluster up` creates.
pub const NETNS: &str = "keyseal-net";
/// The address of the namespace's end of the veth pair: processes in [`NETNS`] listen here and
/// the API server (in the host namespace) proxies to it.
pub const NETNS_IP: &str = "10.213.0.2";
/// The host's end of the veth pair: processes in [`NETNS`] reach the API server here.
pub const HOST_IP: &str = "10.213.0.1";
/// Field manager used for server-side apply by the helpers.
pub const FIELD_MANAGER: &str = "keyseal-testenv";

/// The repository root (found from this crate's manifest directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testenv has two ancestors")
        .to_path_buf()
}

/// A binary of another workspace package, from this build's target directory; built with cargo
/// when missing (running a single package's tests).
pub fn workspace_binary(name: &str, package: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> (a test) or target/<profile>/<bin> (the bench) →
    // target/<profile>
    let parent = exe.parent().context("the binary's directory")?;
    let dir = if parent.file_name().is_some_and(|n| n == "deps") {
        parent
            .parent()
            .context("the test binary's target directory")?
    } else {
        parent
    };
    let path = dir.join(name);
    if !path.is_file() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-q", "-p", package, "--bin", name])
            .current_dir(repo_root())
            .status()?;
        ensure!(status.success() && path.is_file(), "could not build {name}");
    }
    Ok(path)
}

/// Path of an upstream fixture binary (`etcd`, `kube-apiserver`, `kube-controller-manager`,
/// `kubeseal`, `controller`), built by `scripts/fixtures` if it is not in the cache yet.
pub fn fixture(name: &str) -> Result<PathBuf> {
    let out = Command::new(repo_root().join("scripts/fixtures"))
        .args(["path", name])
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/fixtures")?;
    ensure!(
        out.status.success(),
        "scripts/fixtures path {name} failed: {}",
        out.status
    );
    let path = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    ensure!(
        path.is_file(),
        "scripts/fixtures printed a missing path {}",
        path.display()
    );
    Ok(path)
}

/// Where the kubeconfig comes from: `$KUBECONFIG`, or the plane `scripts/cluster up` started.
#[derive(Debug, Clone)]
enum Source {
    Env,
    Started(PathBuf),
}

fn source() -> Result<Source> {
    static SOURCE: OnceLock<std::result::Result<Source, String>> = OnceLock::new();
    SOURCE
        .get_or_init(|| {
            if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
                return Ok(Source::Env);
            }
            cluster_up()
                .map(Source::Started)
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Runs `scripts/cluster up` (idempotent: reuses a running plane) and returns its kubeconfig.
fn cluster_up() -> Result<PathBuf> {
    cluster_up_with(&[])
}

fn cluster_up_with(envs: &[(&str, &OsStr)]) -> Result<PathBuf> {
    let out = Command::new(repo_root().join("scripts/cluster"))
        .arg("up")
        .envs(envs.iter().copied())
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/cluster up")?;
    ensure!(
        out.status.success(),
        "scripts/cluster up failed: {}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout)?;
    let last = stdout.lines().last().unwrap_or_default();
    let path = last
        .strip_prefix("export KUBECONFIG=")
        .ok_or_else(|| anyhow!("unexpected last line from scripts/cluster up: {last:?}"))?;
    Ok(PathBuf::from(path))
}

fn read_kubeconfig(source: &Source) -> Result<Kubeconfig> {
    match source {
        Source::Env => Kubeconfig::from_env()?.ok_or_else(|| anyhow!("KUBECONFIG is empty")),
        Source::Started(path) => Ok(Kubeconfig::read_from(path)?),
    }
}

async fn client_from(kubeconfig: Kubeconfig) -> Result<Client> {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    // kube's `rustls-tls` + `aws-lc-rs` features install aws-lc-rs as the process-wide rustls
    // provider when the client is built (if none is installed yet).
    Ok(Client::try_from(config)?)
}

/// A control plane of its own (etcd, kube-apiserver, kube-controller-manager), for a test that
/// needs a whole cluster to itself: a controller watching every namespace, objects in
/// `kube-system`. Started by `scripts/cluster up` with its own state directory; it shares the
/// network namespace [`NETNS`] with the shared plane (a process there listens on its own port) and
/// is stopped, its state removed, when dropped (kept, with its logs, when the test panicked or
/// `KEYSEAL_KEEP_NS=1`).
pub struct PrivatePlane {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl PrivatePlane {
    /// Starts a fresh plane (about 3–5 s: a new CA, an empty etcd, the CRDs of `crds/`).
    pub async fn start() -> Result<Self> {
        tokio::task::spawn_blocking(|| {
            // The network namespace belongs to the shared plane: make sure it exists.
            if !netns_exists() {
                cluster_up()?;
            }
            let dir = tempfile::Builder::new()
                .prefix("keyseal-plane-")
                .tempdir()?;
            let kubeconfig = cluster_up_with(&[
                ("KEYSEAL_CLUSTER_DIR", dir.path().as_os_str()),
                ("KEYSEAL_NETNS", OsStr::new("0")),
            ])?;
            Ok(Self { dir, kubeconfig })
        })
        .await?
    }

    /// The administrator kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// An administrator connection to this plane.
    pub async fn cluster(&self) -> Result<Cluster> {
        Cluster::from_kubeconfig(&self.kubeconfig).await
    }

    /// Where its components log (`etcd.log`, `kube-apiserver.log`, `kube-controller-manager.log`).
    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }
}

impl Drop for PrivatePlane {
    fn drop(&mut self) {
        let status = Command::new(repo_root().join("scripts/cluster"))
            .arg("down")
            .env("KEYSEAL_CLUSTER_DIR", self.dir.path())
            .env("KEYSEAL_NETNS", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status();
        if let Err(e) = status {
            eprintln!(
                "testenv: stopping the plane in {}: {e}",
                self.dir.path().display()
            );
        }
        if std::thread::panicking() || std::env::var("KEYSEAL_KEEP_NS").is_ok_and(|v| v == "1") {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a temp dir"));
            eprintln!(
                "testenv: the plane's logs are kept in {}",
                kept.keep().join("logs").display()
            );
        }
    }
}

/// A connection to the test control plane with administrator rights.
///
/// Cheap to create; create one per test (a [`Client`] is tied to the tokio runtime it was
/// first used on, and every `#[tokio::test]` has its own runtime).
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    kubeconfig: Kubeconfig,
    kubeconfig_path: Option<PathBuf>,
}

impl Cluster {
    /// Connects with `$KUBECONFIG`, or starts (or reuses) the plane of `scripts/cluster up`.
    pub async fn connect() -> Result<Self> {
        let source = tokio::task::spawn_blocking(source).await??;
        let kubeconfig = read_kubeconfig(&source)?;
        let client = client_from(kubeconfig.clone()).await?;
        let kubeconfig_path = match source {
            Source::Started(p) => Some(p),
            Source::Env => std::env::var_os("KUBECONFIG")
                .map(PathBuf::from)
                .filter(|p| p.is_file()),
        };
        Ok(Self {
            client,
            kubeconfig,
            kubeconfig_path,
        })
    }

    /// Connects with an administrator kubeconfig file (e.g. a [`PrivatePlane`]'s).
    pub async fn from_kubeconfig(path: &Path) -> Result<Self> {
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let client = client_from(kubeconfig.clone()).await?;
        Ok(Self {
            client,
            kubeconfig,
            kubeconfig_path: Some(path.to_owned()),
        })
    }

    /// The administrator client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An administrator client that does not retry 429/503/504 answers. kube's default client
    /// retries them up to 15 times with backoff (minutes in all), which hides a service-proxy
    /// target that is down: use this one to assert on such failures.
    pub async fn client_without_retry(&self) -> Result<Client> {
        let mut config =
            Config::from_custom_kubeconfig(self.kubeconfig.clone(), &KubeConfigOptions::default())
                .await?;
        config.default_retry = false;
        Ok(Client::try_from(config)?)
    }

    /// Path of the administrator kubeconfig (when it is a single file), e.g. to hand to a CLI.
    pub fn kubeconfig_path(&self) -> Option<&Path> {
        self.kubeconfig_path.as_deref()
    }

    /// Creates a namespace `<prefix>-<random>` that is deleted when the guard drops.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let name = format!("{prefix}-{}", random_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    "keyseal.test/owner".into(),
                    "testenv".into(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace {
            name,
            uid: created.uid().unwrap_or_default(),
            kubeconfig: self.kubeconfig.clone(),
            keep: std::env::var("KEYSEAL_KEEP_NS").is_ok_and(|v| v == "1"),
            deleted: false,
        })
    }

    /// Server-side applies every document of a YAML manifest file, as `kubectl apply
    /// --server-side -f FILE` would (kinds resolved through discovery, namespaced objects into
    /// their `metadata.namespace`).
    pub async fn apply_file(&self, path: &Path) -> Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let object: kube::api::DynamicObject = serde_json::from_value(doc)
                .with_context(|| format!("{}: a document is not an object", path.display()))?;
            let types = object
                .types
                .clone()
                .ok_or_else(|| anyhow!("{}: a document has no apiVersion/kind", path.display()))?;
            let gvk = kube::api::GroupVersionKind::try_from(&types)?;
            let (resource, caps) = kube::discovery::pinned_kind(&self.client(), &gvk)
                .await
                .with_context(|| format!("discovering {}/{}", types.api_version, types.kind))?;
            let api: Api<kube::api::DynamicObject> = match (&caps.scope, object.namespace()) {
                (kube::discovery::Scope::Namespaced, Some(ns)) => {
                    Api::namespaced_with(self.client(), &ns, &resource)
                }
                (kube::discovery::Scope::Namespaced, None) => {
                    Api::default_namespaced_with(self.client(), &resource)
                }
                (kube::discovery::Scope::Cluster, _) => Api::all_with(self.client(), &resource),
            };
            let name = object.name_any();
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("applying {} {name} from {}", types.kind, path.display()))?;
        }
        Ok(())
    }

    /// Applies the SealedSecret CRD from `crds/sealedsecret.yaml` (server-side apply) and waits
    /// until the API server reports it established.
    pub async fn install_crd(&self) -> Result<CustomResourceDefinition> {
        self.install_crd_from(&repo_root().join("crds/sealedsecret.yaml"))
            .await
    }

    /// Applies a CRD manifest file and waits until it is established.
    pub async fn install_crd_from(&self, path: &Path) -> Result<CustomResourceDefinition> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)
            .with_context(|| format!("parsing {} as a CustomResourceDefinition", path.display()))?;
        let name = crd.name_any();
        let api = Api::<CustomResourceDefinition>::all(self.client());
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
        await_condition(
            Duration::from_secs(30),
            &format!("CRD {name} established"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await?;
                    let established = crd
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        });
                    Ok(established.then_some(crd))
                }
            },
        )
        .await
    }

    /// Creates ServiceAccount `name` in `namespace`, binds it as `bindings` say, mints a token
    /// for it through the TokenRequest API and returns a client and kubeconfig files for it.
    pub async fn service_account(
        &self,
        namespace: &str,
        name: &str,
        bindings: &[Binding],
    ) -> Result<ServiceAccountIdentity> {
        let client = self.client();
        let pp = PostParams::default();
        let sa_api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        sa_api
            .create(&pp, &sa)
            .await
            .with_context(|| format!("creating ServiceAccount {namespace}/{name}"))?;
        let subject = Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        };
        // Cluster-scoped bindings outlive the namespace unless something removes them: make the
        // namespace their owner so the garbage collector does.
        let ns_obj = Api::<Namespace>::all(client.clone()).get(namespace).await?;
        let ns_owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: namespace.into(),
            uid: ns_obj.uid().unwrap_or_default(),
            ..Default::default()
        };
        for (i, b) in bindings.iter().enumerate() {
            let binding_name = format!("{name}-{i}");
            match b {
                Binding::Role {
                    namespace: rns,
                    name: role,
                }
                | Binding::ClusterRoleIn {
                    namespace: rns,
                    name: role,
                } => {
                    let kind = if matches!(b, Binding::Role { .. }) {
                        "Role"
                    } else {
                        "ClusterRole"
                    };
                    let rb = RoleBinding {
                        metadata: ObjectMeta {
                            name: Some(binding_name.clone()),
                            namespace: Some(rns.clone()),
                            ..Default::default()
                        },
                        role_ref: RoleRef {
                            api_group: "rbac.authorization.k8s.io".into(),
                            kind: kind.into(),
                            name: role.clone(),
                        },
                        subjects: Some(vec![subject.clone()]),
                    };
                    Api::<RoleBinding>::namespaced(client.clone(), rns)
                        .create(&pp, &rb)
                        .await
                        .with_context(|| format!("binding {kind} {rns}/{role}"))?;
                }
                Binding::ClusterRole { name: role } => {
                    let crb = ClusterRoleBinding {
                        metadata: ObjectMeta {
                            name: Some(format!("{namespace}-{binding_name}")),
                            owner_references: Some(vec![ns_owner.clone()]),
                            ..Default::default()
                        },
                        role_ref: RoleRef {
                            api_group: "rbac.authorization.k8s.io".into(),
                            kind: "ClusterRole".into(),
                            name: role.clone(),
                        },
                        subjects: Some(vec![subject.clone()]),
                    };
                    Api::<ClusterRoleBinding>::all(client.clone())
                        .create(&pp, &crb)
                        .await
                        .with_context(|| format!("binding ClusterRole {role}"))?;
                }
            }
        }
        self.identity(namespace, name).await
    }

    /// The controller's identity as `manifests/rbac.yaml` grants it, with `namespace` as the
    /// controller's namespace: the manifests' ClusterRole applied (shared, idempotent), their
    /// Role created in `namespace`, and the ServiceAccount [`CONTROLLER_SA`] there bound to both.
    pub async fn controller_identity(&self, namespace: &str) -> Result<ServiceAccountIdentity> {
        let path = repo_root().join("manifests/rbac.yaml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        let find = |kind: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind)
                .cloned()
                .with_context(|| format!("no {kind} in {}", path.display()))
        };
        let cluster_role: ClusterRole = serde_json::from_value(find("ClusterRole")?)?;
        let mut role: Role = serde_json::from_value(find("Role")?)?;
        let cluster_role_name = cluster_role.name_any();
        Api::<ClusterRole>::all(self.client())
            .patch(
                &cluster_role_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cluster_role),
            )
            .await
            .with_context(|| format!("applying ClusterRole {cluster_role_name}"))?;
        role.metadata.namespace = Some(namespace.to_owned());
        let role_name = role.name_any();
        Api::<Role>::namespaced(self.client(), namespace)
            .create(&PostParams::default(), &role)
            .await
            .with_context(|| format!("creating Role {namespace}/{role_name}"))?;
        self.service_account(
            namespace,
            CONTROLLER_SA,
            &[
                Binding::ClusterRole {
                    name: cluster_role_name,
                },
                Binding::Role {
                    namespace: namespace.to_owned(),
                    name: role_name,
                },
            ],
        )
        .await
    }

    /// A token for the ServiceAccount `namespace/name` with the given audiences, valid one hour
    /// (what the kubelet projects into a pod, e.g. for workload identity with
    /// `api://AzureADTokenExchange`).
    pub async fn token(&self, namespace: &str, name: &str, audiences: &[&str]) -> Result<String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let minted: TokenRequest = Api::<ServiceAccount>::namespaced(self.client(), namespace)
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for {namespace}/{name}"))?;
        minted
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("TokenRequest returned no token"))
    }

    /// The cluster's service-account issuer as a relying party (Entra, the Key Vault emulator)
    /// sees it: its `iss`, and its keys at the API server's `/openid/v1/jwks` (published to
    /// unauthenticated readers by `scripts/cluster up`), with the API server's CA written into
    /// `dir`.
    pub async fn service_account_issuer(&self, dir: &Path) -> Result<keyvault::Issuer> {
        let req = http::Request::get("/.well-known/openid-configuration").body(Vec::new())?;
        let doc: serde_json::Value = serde_json::from_str(
            &self
                .client()
                .request_text(req)
                .await
                .context("reading the service-account issuer's discovery document")?,
        )?;
        let issuer = doc["issuer"]
            .as_str()
            .ok_or_else(|| anyhow!("the discovery document has no issuer"))?
            .to_owned();
        let (server, ca) = current_cluster(&self.kubeconfig)?;
        let ca_file = dir.join("kube-apiserver-ca.crt");
        match (
            ca.get("certificate-authority-data")
                .and_then(|v| v.as_str()),
            ca.get("certificate-authority").and_then(|v| v.as_str()),
        ) {
            (Some(data), _) => {
                use base64::Engine as _;
                std::fs::write(
                    &ca_file,
                    base64::engine::general_purpose::STANDARD.decode(data)?,
                )?;
            }
            (None, Some(file)) => {
                std::fs::copy(file, &ca_file)?;
            }
            _ => bail!("the kubeconfig has no CA"),
        }
        Ok(keyvault::Issuer {
            issuer,
            jwks_uri: format!("{}/openid/v1/jwks", server.trim_end_matches('/')),
            ca_file: Some(ca_file),
        })
    }

    /// A token for the existing ServiceAccount `namespace/name` (e.g. one applied from
    /// `manifests/rbac.yaml`) through the TokenRequest API, as a client and kubeconfig files.
    pub async fn identity(&self, namespace: &str, name: &str) -> Result<ServiceAccountIdentity> {
        let pp = PostParams::default();
        let sa_api = Api::<ServiceAccount>::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let minted: TokenRequest = sa_api
            .create_subresource("token", name, &pp, &request)
            .await
            .with_context(|| format!("requesting a token for {namespace}/{name}"))?;
        let token = minted
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("TokenRequest returned no token"))?;

        let (server, ca) = current_cluster(&self.kubeconfig)?;
        let dir = tempfile::Builder::new().prefix("keyseal-sa-").tempdir()?;
        let host_cfg = token_kubeconfig(&server, &ca, namespace, &token);
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, serde_json::to_vec_pretty(&host_cfg)?)?;
        let kubeconfig_netns = dir.path().join("kubeconfig-netns");
        std::fs::write(
            &kubeconfig_netns,
            serde_json::to_vec_pretty(&token_kubeconfig(
                &netns_server(&server),
                &ca,
                namespace,
                &token,
            ))?,
        )?;
        let kc: Kubeconfig = serde_json::from_value(host_cfg)?;
        let client = client_from(kc).await?;
        Ok(ServiceAccountIdentity {
            client,
            token,
            kubeconfig,
            kubeconfig_netns,
            _dir: dir,
        })
    }
}

/// How a ServiceAccount made by [`Cluster::service_account`] is granted rights.
#[derive(Debug, Clone)]
pub enum Binding {
    /// A RoleBinding in `namespace` to the Role `name` there.
    Role { namespace: String, name: String },
    /// A ClusterRoleBinding to the ClusterRole `name` (removed with the test namespace).
    ClusterRole { name: String },
    /// A RoleBinding in `namespace` to the ClusterRole `name` (rights in that namespace only).
    ClusterRoleIn { namespace: String, name: String },
}

/// A ServiceAccount-token identity: a client plus kubeconfig files for other processes.
pub struct ServiceAccountIdentity {
    /// A client authenticating with the ServiceAccount's token.
    pub client: Client,
    /// The bearer token (from the TokenRequest API, valid one hour).
    pub token: String,
    /// Kubeconfig for processes in the host network namespace.
    pub kubeconfig: PathBuf,
    /// Kubeconfig for processes in [`NETNS`] (server on [`HOST_IP`]).
    pub kubeconfig_netns: PathBuf,
    _dir: tempfile::TempDir,
}

fn current_cluster(kc: &Kubeconfig) -> Result<(String, serde_json::Value)> {
    let ctx_name = kc
        .current_context
        .clone()
        .ok_or_else(|| anyhow!("kubeconfig has no current-context"))?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| anyhow!("context {ctx_name} not found"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| anyhow!("cluster {} not found", ctx.cluster))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| anyhow!("cluster has no server"))?;
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => serde_json::json!({ "certificate-authority-data": data }),
        (None, Some(file)) => serde_json::json!({ "certificate-authority": file }),
        (None, None) => serde_json::json!({}),
    };
    Ok((server, ca))
}

/// The API server's address as seen from inside [`NETNS`]: `$KEYSEAL_NETNS_SERVER`, or the
/// loopback server URL with its host replaced by [`HOST_IP`].
pub fn netns_server(server: &str) -> String {
    if let Ok(s) = std::env::var("KEYSEAL_NETNS_SERVER") {
        return s;
    }
    server
        .replacen("127.0.0.1", HOST_IP, 1)
        .replacen("localhost", HOST_IP, 1)
}

fn token_kubeconfig(
    server: &str,
    ca: &serde_json::Value,
    namespace: &str,
    token: &str,
) -> serde_json::Value {
    let mut cluster = serde_json::json!({ "server": server });
    if let (Some(c), Some(extra)) = (cluster.as_object_mut(), ca.as_object()) {
        c.extend(extra.clone());
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "keyseal", "cluster": cluster }],
        "users": [{ "name": "sa", "user": { "token": token } }],
        "contexts": [{ "name": "sa", "context": { "cluster": "keyseal", "user": "sa", "namespace": namespace } }],
        "current-context": "sa",
    })
}

/// A namespace for one test; deleted when dropped unless `KEYSEAL_KEEP_NS=1`.
pub struct TestNamespace {
    name: String,
    uid: String,
    kubeconfig: Kubeconfig,
    keep: bool,
    deleted: bool,
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's uid (e.g. to make it the owner of cluster-scoped test objects).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Deletes the namespace now (unless kept) and waits until it is gone.
    pub async fn delete(mut self) -> Result<()> {
        self.deleted = true;
        if self.keep {
            return Ok(());
        }
        let client = client_from(self.kubeconfig.clone()).await?;
        let api = Api::<Namespace>::all(client);
        let _ = api.delete(&self.name, &DeleteParams::background()).await?;
        let name = self.name.clone();
        await_condition(
            Duration::from_secs(60),
            &format!("namespace {name} deleted"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move { Ok(api.get_opt(&name).await?.is_none().then_some(())) }
            },
        )
        .await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        if self.keep {
            eprintln!(
                "testenv: keeping namespace {} (KEYSEAL_KEEP_NS=1)",
                self.name
            );
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down: delete from a thread
        // with its own runtime (starting the deletion; the namespace controller finishes it).
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let res = std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = client_from(kubeconfig).await?;
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await?;
                Ok(())
            })
        })
        .join();
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("testenv: deleting namespace {}: {e:#}", self.name),
            Err(_) => eprintln!("testenv: deleting namespace {}: thread panicked", self.name),
        }
    }
}

/// Polls `check` until it returns `Some` (or an error), for at most `timeout`.
/// Errors from `check` are retried until the deadline and reported if it passes.
pub async fn await_condition<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        // A single attempt may not outlive the deadline (kube's own read timeout is minutes).
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let last_err =
            match tokio::time::timeout(left.max(Duration::from_millis(100)), check()).await {
                Ok(Ok(Some(v))) => return Ok(v),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(anyhow!("an attempt was still running at the deadline")),
            };
        if tokio::time::Instant::now() >= deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// A process running inside [`NETNS`], killed when dropped.
pub struct NetnsProcess {
    child: tokio::process::Child,
}

impl NetnsProcess {
    /// Runs `program args...` inside [`NETNS`] (`ip netns exec`), with stdout/stderr inherited.
    pub fn spawn<I, S>(program: impl AsRef<OsStr>, args: I, envs: &[(&str, &str)]) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ensure!(
            netns_exists(),
            "network namespace {NETNS} does not exist (run scripts/cluster up as root)"
        );
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", NETNS])
            .arg(program)
            .args(args)
            .kill_on_drop(true)
            .stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .context("spawning a process with `ip netns exec`")?;
        Ok(Self { child })
    }

    /// The process id (`ip netns exec` execs the program, so this is the program's pid).
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until something accepts TCP connections on `NETNS_IP:port`, failing early if the
    /// process exits.
    pub async fn wait_listening(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let addr: SocketAddr = format!("{NETNS_IP}:{port}").parse()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("process in {NETNS} exited with {status} before listening on {addr}");
            }
            let ok = tokio::task::spawn_blocking(move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
            })
            .await?;
            if ok {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("nothing listening on {addr} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the process and waits for it.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Whether [`NETNS`] exists.
pub fn netns_exists() -> bool {
    Path::new("/run/netns").join(NETNS).exists()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it), for a listener a child
/// process opens.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A TCP port for a listener inside [`NETNS`]: random in 20000..60000 and not in use there.
pub fn netns_port() -> Result<u16> {
    for _ in 0..50 {
        let port = 20000 + (random_u64() % 40000) as u16;
        let out = Command::new("ip")
            .args(["netns", "exec", NETNS, "ss", "-Htln"])
            .arg(format!("sport = :{port}"))
            .output()
            .context("running ss in the network namespace")?;
        if out.status.success() && out.stdout.is_empty() {
            return Ok(port);
        }
    }
    bail!("no free port found in {NETNS}")
}

/// Registers `NETNS_IP:port` behind a Service `name` in `namespace`, so that
/// `/api/v1/namespaces/<namespace>/services/http:<name>:<port_name>/proxy/...` reaches it.
///
/// The API server's service proxy resolves through core/v1 Endpoints and only dials addresses
/// whose `targetRef` is a Pod with that IP in its status. There is no kubelet, so this creates a
/// Pod `<name>-netns` standing for the process in the network namespace (never scheduled, never
/// run: its status — Running, podIP [`NETNS_IP`] — is written through the status subresource),
/// a selector-less Service, and a manual Endpoints object pointing at the Pod.
pub async fn expose_in_netns(
    client: &Client,
    namespace: &str,
    name: &str,
    port_name: &str,
    port: u16,
) -> Result<Service> {
    let pp = PostParams::default();
    let port_name = (!port_name.is_empty()).then(|| port_name.to_string());

    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let pod_name = format!("{name}-netns");
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(pod_name.clone()),
            labels: Some(BTreeMap::from([("keyseal.test/netns".into(), name.into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "netns-process".into(),
                image: Some("keyseal.invalid/netns-process".into()),
                ..Default::default()
            }],
            automount_service_account_token: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    // The ServiceAccount admission plugin refuses Pods until the namespace's `default`
    // ServiceAccount exists (created by the controller manager right after the namespace).
    let pod = await_condition(
        Duration::from_secs(30),
        &format!("creating Pod {namespace}/{pod_name}"),
        || {
            let (pods, pod, pp) = (pods.clone(), pod.clone(), pp.clone());
            async move { Ok(Some(pods.create(&pp, &pod).await?)) }
        },
    )
    .await?;
    let status = serde_json::json!({
        "status": {
            "phase": "Running",
            "hostIP": HOST_IP,
            "hostIPs": [{ "ip": HOST_IP }],
            "podIP": NETNS_IP,
            "podIPs": [{ "ip": NETNS_IP }],
            "conditions": [{ "type": "Ready", "status": "True" }],
        }
    });
    pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("setting the status of Pod {namespace}/{pod_name}"))?;

    let svc = Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: port_name.clone(),
                port: port.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let svc = Api::<Service>::namespaced(client.clone(), namespace)
        .create(&pp, &svc)
        .await
        .with_context(|| format!("creating Service {namespace}/{name}"))?;
    let eps = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: NETNS_IP.into(),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: Some(namespace.into()),
                    name: Some(pod_name.clone()),
                    uid: pod.uid(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: port_name,
                port: port.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    };
    Api::<Endpoints>::namespaced(client.clone(), namespace)
        .create(&pp, &eps)
        .await
        .with_context(|| format!("creating Endpoints {namespace}/{name}"))?;
    Ok(svc)
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Eight lowercase alphanumerics for object names.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut n = random_u64();
    (0..8)
        .map(|_| {
            let c = ALPHABET[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

/// GETs `path` through the API server's service proxy:
/// `/api/v1/namespaces/<namespace>/services/<scheme>:<name>:<port_name>/proxy<path>` — the route
/// kubeseal's `--fetch-cert`, `--validate` and `--re-encrypt` take. Non-2xx answers are errors.
pub async fn proxy_get(
    client: &Client,
    namespace: &str,
    scheme_name_port: &str,
    path: &str,
) -> Result<String> {
    let uri = format!("/api/v1/namespaces/{namespace}/services/{scheme_name_port}/proxy{path}");
    let req = http::Request::get(&uri).body(Vec::new())?;
    client
        .request_text(req)
        .await
        .with_context(|| format!("GET {uri}"))
}

/// Feeds `bytes` to a child's piped stdin. A program that exits without reading it (an early
/// error, or input taken from `-f FILE`) closes the pipe; that is not a test failure.
pub fn write_stdin(child: &mut std::process::Child, bytes: &[u8]) {
    use std::io::Write;
    if let Err(e) = child.stdin.take().expect("piped stdin").write_all(bytes) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing stdin: {e}"
        );
    }
}

/// Where a process started by [`Cluster::in_cluster_command`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// This host's network namespace; the API server at 127.0.0.1.
    Host,
    /// [`NETNS`]; the API server at [`HOST_IP`].
    Netns,
}

impl Cluster {
    /// A command running `program` as a Pod of `identity` would: in a private mount namespace
    /// where the ServiceAccount's token, the cluster CA and `namespace` are bind-mounted at
    /// `/var/run/secrets/kubernetes.io/serviceaccount`, with `KUBERNETES_SERVICE_HOST`/`PORT` and
    /// `POD_NAMESPACE` set. For programs that only support in-cluster configuration (the upstream
    /// controller). `unshare` and `sh` both exec, so the child's pid is the program's. Append the
    /// program's arguments to the command; keep the returned directory alive while it runs.
    pub fn in_cluster_command(
        &self,
        identity: &ServiceAccountIdentity,
        namespace: &str,
        placement: Placement,
        program: &Path,
    ) -> Result<(tokio::process::Command, tempfile::TempDir)> {
        let (server, ca) = current_cluster(&self.kubeconfig)?;
        let port: u16 = server
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("no port in the API server URL {server}"))?;
        let ca = match (
            ca.get("certificate-authority-data")
                .and_then(|v| v.as_str()),
            ca.get("certificate-authority").and_then(|v| v.as_str()),
        ) {
            (Some(data), _) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .context("decoding the CA")?
            }
            (None, Some(file)) => {
                std::fs::read(file).with_context(|| format!("reading the CA {file}"))?
            }
            _ => bail!("the kubeconfig has no CA"),
        };
        let dir = tempfile::tempdir()?;
        let sa_dir = dir.path().join("serviceaccount");
        std::fs::create_dir(&sa_dir)?;
        std::fs::write(sa_dir.join("token"), &identity.token)?;
        std::fs::write(sa_dir.join("ca.crt"), ca)?;
        std::fs::write(sa_dir.join("namespace"), namespace)?;
        let mount_point = "/var/run/secrets/kubernetes.io/serviceaccount";
        std::fs::create_dir_all(mount_point).context("creating the ServiceAccount mount point")?;
        let (mut cmd, host) = match placement {
            Placement::Host => (tokio::process::Command::new("unshare"), "127.0.0.1"),
            Placement::Netns => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", NETNS, "unshare"]);
                (c, HOST_IP)
            }
        };
        let script = r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#;
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&sa_dir)
        .arg(mount_point)
        .arg(program)
        .env("KUBERNETES_SERVICE_HOST", host)
        .env("KUBERNETES_SERVICE_PORT", port.to_string())
        .env("POD_NAMESPACE", namespace);
        Ok((cmd, dir))
    }
}
