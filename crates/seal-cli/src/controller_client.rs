//! A client for the sealed-secrets controller's HTTP endpoints (`/v1/cert.pem`, `/v1/verify`,
//! `/v1/rotate`), reached through the API server's service proxy exactly as kubeseal does:
//! `/api/v1/namespaces/<ns>/services/http:<name>:<port-name>/proxy/<path>`.

use k8s_openapi::api::core::v1::Service;
use kube::Api;

use crate::cli::{KubeArgs, SealArgs};
use crate::error::{CliError, Result, err};

/// The controller's HTTP API as reached through the proxy.
pub struct ControllerProxy {
    client: kube::Client,
    base: String,
}

impl ControllerProxy {
    /// Resolves the controller's Service (its first port's name, as kubeseal).
    pub async fn connect(kube: &KubeArgs, seal: &SealArgs) -> Result<Self> {
        let client = crate::kubeconfig::client(kube).await?;
        let (ns, name) = (&seal.controller_namespace, &seal.controller_name);
        let service = Api::<Service>::namespaced(client.clone(), ns).get(name).await.map_err(|e| {
            err(format!("cannot get sealed secret service {ns}/{name}: {e}"))
                .hint("use --controller-name and --controller-namespace to point at the sealed-secrets controller's Service")
        })?;
        let port = service
            .spec
            .and_then(|s| s.ports)
            .and_then(|p| p.into_iter().next())
            .and_then(|p| p.name)
            .unwrap_or_default();
        Ok(Self {
            client,
            base: format!("/api/v1/namespaces/{ns}/services/http:{name}:{port}/proxy"),
        })
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<String, kube::Error> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::ACCEPT, "application/x-pem-file, */*")
            .body(body)
            .map_err(kube::Error::HttpError)?;
        self.client.request_text(request).await
    }

    /// `GET /v1/cert.pem`.
    pub async fn cert(&self) -> Result<String> {
        self.call(http::Method::GET, "/v1/cert.pem", Vec::new())
            .await
            .map_err(|e| {
                err(format!("cannot fetch certificate: {e}"))
                    .hint("check that the controller is running, or pass --cert")
            })
    }

    /// `POST /v1/verify`: `Ok(false)` when the controller cannot decrypt it (HTTP 409).
    pub async fn verify(&self, sealed_secret_json: Vec<u8>) -> Result<bool> {
        match self
            .call(http::Method::POST, "/v1/verify", sealed_secret_json)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(409) => Ok(false),
            Err(e) => Err(err(format!("cannot validate sealed secret: {e}"))),
        }
    }

    /// `POST /v1/rotate`: the SealedSecret re-sealed with the newest key.
    pub async fn rotate(&self, sealed_secret_json: Vec<u8>) -> Result<String> {
        self.call(http::Method::POST, "/v1/rotate", sealed_secret_json)
            .await
            .map_err(|e| -> CliError {
                if status_code(&e) == Some(409) {
                    err("unable to rotate secret: the controller cannot decrypt it")
                        .hint("check it with --validate")
                } else {
                    err(format!("cannot re-encrypt secret: {e}"))
                }
            })
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
