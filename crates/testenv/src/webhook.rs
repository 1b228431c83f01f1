//! A validating admission webhook that holds chosen requests until the test lets them go, to
//! force an interleaving with the real API server: for example, delete a Secret while the
//! controller's status write for its SealedSecret is in flight.
//!
//! The API server calls `https://127.0.0.1:<port>/` (a self-signed certificate for `127.0.0.1`,
//! given to the API server as the webhook's `caBundle`). Every request is allowed; a request the
//! `hold` predicate selects is answered only once its [`Held`] is released or dropped (or after
//! 25 s, below the webhook's 30 s timeout). The configuration only matches the test's namespace,
//! fails open (`failurePolicy: Ignore`) and is owned by that namespace, so the garbage collector
//! removes it with the namespace.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use crate::{Cluster, TestNamespace, await_condition};

/// What the webhook saw of one admission request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// `CREATE`, `UPDATE`, `DELETE`…
    pub operation: String,
    /// The resource, with its subresource if any (`sealedsecrets/status`).
    pub resource: String,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

/// A request the webhook is holding; answered (allowed) when released or dropped.
pub struct Held {
    /// The request.
    pub admission: Admission,
    release: std::sync::mpsc::Sender<()>,
}

impl Held {
    /// Lets the request through.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

type Hold = dyn Fn(&Admission) -> bool + Send + Sync;

/// The webhook server (threads on a loopback port); stops accepting when dropped.
pub struct HoldingWebhook {
    port: u16,
    ca_bundle: Vec<u8>,
    seen: Arc<Mutex<Vec<Admission>>>,
    held: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Held>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl HoldingWebhook {
    /// Starts the server; requests for which `hold` is true are held.
    pub fn start(hold: impl Fn(&Admission) -> bool + Send + Sync + 'static) -> Result<Self> {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
        let ca_bundle = certified.cert.pem().into_bytes();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .map_err(|e| anyhow!("webhook key: {e}"))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)?;
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (held_tx, held_rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hold: Arc<Hold> = Arc::new(hold);
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (config, seen, hold, held_tx) =
                        (config.clone(), seen.clone(), hold.clone(), held_tx.clone());
                    std::thread::spawn(move || {
                        if let Err(e) = serve(stream, config, &seen, &*hold, &held_tx) {
                            eprintln!("testenv webhook: {e:#}");
                        }
                    });
                }
            });
        }
        Ok(Self {
            port,
            ca_bundle,
            seen,
            held: tokio::sync::Mutex::new(held_rx),
            stop,
        })
    }

    /// Registers the webhook for `rules` on objects in `namespace` and waits until the API server
    /// calls it: `probe` must make the API server send a matching request (it is called until
    /// one arrives).
    pub async fn register<F, Fut>(
        &self,
        cluster: &Cluster,
        namespace: &TestNamespace,
        rules: Vec<RuleWithOperations>,
        mut probe: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        use k8s_openapi::ByteString;
        let name = format!("keyseal-test-hold-{}", namespace.name());
        let configuration = ValidatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Namespace".into(),
                    name: namespace.name().into(),
                    uid: namespace.uid().into(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            webhooks: Some(vec![ValidatingWebhook {
                name: "hold.keyseal.test".into(),
                admission_review_versions: vec!["v1".into()],
                client_config: WebhookClientConfig {
                    url: Some(format!("https://127.0.0.1:{}/", self.port)),
                    ca_bundle: Some(ByteString(self.ca_bundle.clone())),
                    ..Default::default()
                },
                rules: Some(rules),
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".into(),
                        namespace.name().into(),
                    )])),
                    ..Default::default()
                }),
                side_effects: "None".into(),
                failure_policy: Some("Ignore".into()),
                timeout_seconds: Some(30),
                ..Default::default()
            }]),
        };
        let api = Api::<ValidatingWebhookConfiguration>::all(cluster.client());
        let _ = api.delete(&name, &DeleteParams::default()).await;
        api.create(&PostParams::default(), &configuration)
            .await
            .with_context(|| format!("creating ValidatingWebhookConfiguration {name}"))?;
        // The API server picks the configuration up asynchronously.
        let before = self.seen().len();
        await_condition(
            Duration::from_secs(30),
            "the API server calling the test webhook",
            || {
                let probed = probe();
                async move {
                    probed.await?;
                    Ok((self.seen().len() > before).then_some(()))
                }
            },
        )
        .await
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Admission> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// Waits for the next held request.
    pub async fn next_held(&self, timeout: Duration) -> Result<Held> {
        let mut held = self.held.lock().await;
        tokio::time::timeout(timeout, held.recv())
            .await
            .map_err(|_| anyhow!("no request was held within {timeout:?}"))?
            .ok_or_else(|| anyhow!("the webhook server stopped"))
    }
}

impl Drop for HoldingWebhook {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Answers admission requests on one connection (HTTP/1.1, keep-alive) until it closes.
fn serve(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    seen: &Mutex<Vec<Admission>>,
    hold: &Hold,
    held_tx: &tokio::sync::mpsc::UnboundedSender<Held>,
) -> Result<()> {
    let connection = rustls::ServerConnection::new(config)?;
    let mut tls = BufReader::new(rustls::StreamOwned::new(connection, stream));
    loop {
        let mut content_length = 0usize;
        let mut line = String::new();
        if tls.read_line(&mut line)? == 0 {
            return Ok(()); // closed
        }
        loop {
            line.clear();
            tls.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse()?;
            }
        }
        let mut body = vec![0; content_length];
        tls.read_exact(&mut body)?;
        let review: serde_json::Value = serde_json::from_slice(&body)?;
        let request = &review["request"];
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let mut resource = text(&request["resource"]["resource"]);
        if let Some(sub) = request["subResource"].as_str().filter(|s| !s.is_empty()) {
            resource = format!("{resource}/{sub}");
        }
        let admission = Admission {
            operation: text(&request["operation"]),
            resource,
            namespace: text(&request["namespace"]),
            name: text(&request["name"]),
        };
        seen.lock().expect("seen lock").push(admission.clone());
        if hold(&admission) {
            let (release, released) = std::sync::mpsc::channel();
            let _ = held_tx.send(Held { admission, release });
            // Released, dropped, or given up on before the API server's own timeout.
            let _ = released.recv_timeout(Duration::from_secs(25));
        }
        let answer = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": { "uid": request["uid"], "allowed": true },
        })
        .to_string();
        let out = tls.get_mut();
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        )?;
        out.flush()?;
    }
}
