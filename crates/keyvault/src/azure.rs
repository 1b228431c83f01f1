//! The real store: Key Vault secrets through the official Azure SDK for Rust
//! (`azure_security_keyvault_secrets`), over reqwest + rustls on aws-lc-rs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, RetryOptions, StatusCode, Transport,
};
use azure_security_keyvault_secrets::models::{
    Secret as KvSecret, SecretClientGetSecretOptions, SecretProperties, SetSecretParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::TryStreamExt;

use crate::error::{BackupError, Result};
use crate::store::{KeyBackupStore, SecretInfo, SecretMeta, SecretText, StoredSecret};

/// How the client talks to the vault and to the token service.
#[derive(Clone)]
pub struct VaultOptions {
    /// Retries of a failed request (connection errors, 408, 429, 5xx) before giving up; the
    /// caller's own backoff takes over after that. Default 3.
    pub max_retries: u32,
    /// Upper bound of one operation's retries in total. Default 30 s.
    pub max_total_elapsed: Duration,
    /// Per-request timeout (connect + response). Default 30 s.
    pub timeout: Duration,
    /// CA certificates (PEM) trusted besides the system's roots, for a vault or token service
    /// behind a private CA (private endpoints, TLS-inspecting proxies): `--keyvault-ca-file`.
    /// `SSL_CERT_FILE`/`SSL_CERT_DIR`, when set, replace the system's roots as usual.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The SDK's check that the 401 challenge's resource is a domain of the vault's host
    /// (default on). Only for vaults outside the public clouds' `*.vault.azure.net`-style hosts
    /// (Azure Stack Hub, test servers): `--keyvault-disable-challenge-resource-verification`.
    pub verify_challenge_resource: bool,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            max_retries: 3,
            max_total_elapsed: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            extra_ca_pem: None,
            verify_challenge_resource: true,
        }
    }
}

impl std::fmt::Debug for VaultOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultOptions")
            .field("max_retries", &self.max_retries)
            .field("max_total_elapsed", &self.max_total_elapsed)
            .field("timeout", &self.timeout)
            .field("extra_ca", &self.extra_ca_pem.is_some())
            .field("verify_challenge_resource", &self.verify_challenge_resource)
            .finish()
    }
}

impl VaultOptions {
    /// Adds the CA certificates of a PEM file (`--keyvault-ca-file`).
    pub fn with_ca_file(mut self, path: &std::path::Path) -> Result<Self> {
        let pem = std::fs::read(path).map_err(|e| BackupError::Invalid {
            what: "CA file",
            value: path.display().to_string(),
            reason: e.to_string(),
        })?;
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| BackupError::Invalid {
            what: "CA file",
            value: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.extra_ca_pem = Some(pem);
        Ok(self)
    }

    /// The HTTP client for the vault and the token service: HTTPS only, the system's roots plus
    /// [`Self::extra_ca_pem`].
    pub fn http_client(&self) -> Result<reqwest::Client> {
        let invalid = |reason: String| BackupError::Invalid {
            what: "HTTP client",
            value: "TLS roots".to_owned(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .timeout(self.timeout)
            .https_only(true);
        if let Some(pem) = &self.extra_ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| invalid(e.to_string()))?;
            builder = builder.tls_certs_merge(certs);
        }
        builder.build().map_err(|e| invalid(e.to_string()))
    }

    /// The SDK transport over [`Self::http_client`].
    pub fn transport(&self) -> Result<Transport> {
        Ok(Transport::new(Arc::new(self.http_client()?)))
    }
}

/// Key Vault secrets of one vault.
pub struct AzureKeyVault {
    client: SecretClient,
    vault: String,
}

impl std::fmt::Debug for AzureKeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureKeyVault")
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

impl AzureKeyVault {
    /// A client for the vault at `vault_url` (`https://<name>.vault.azure.net`).
    pub fn new(
        vault_url: &str,
        credential: Arc<dyn TokenCredential>,
        options: &VaultOptions,
    ) -> Result<Self> {
        let vault = vault_url.trim_end_matches('/').to_owned();
        if !vault.starts_with("https://") {
            return Err(BackupError::Invalid {
                what: "vault URL",
                value: vault_url.to_owned(),
                reason: "must be https://<vault-name>.vault.azure.net".to_owned(),
            });
        }
        let client_options = ClientOptions {
            transport: Some(options.transport()?),
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                max_retries: options.max_retries,
                max_total_elapsed: duration(options.max_total_elapsed),
                ..ExponentialRetryOptions::default()
            }),
            ..ClientOptions::default()
        };
        let client = SecretClient::new(
            &vault,
            credential,
            Some(SecretClientOptions {
                client_options,
                verify_challenge_resource: Some(options.verify_challenge_resource),
                ..SecretClientOptions::default()
            }),
        )
        .map_err(|e| BackupError::Invalid {
            what: "vault URL",
            value: vault_url.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(AzureKeyVault { client, vault })
    }

    fn error(&self, operation: &'static str, name: &str, e: azure_core::Error) -> BackupError {
        let vault = self.vault.clone();
        let message = chain(&e);
        // The SDK's refusal of a challenge for another domain carries no kind of its own.
        if message.contains("challenge resource") {
            return BackupError::ChallengeResource { vault, message };
        }
        match e.kind() {
            ErrorKind::HttpResponse {
                status, error_code, ..
            } => BackupError::Service {
                vault,
                operation,
                name: name.to_owned(),
                status: u16::from(*status),
                message: error_code.clone().unwrap_or_else(|| status.to_string()),
            },
            ErrorKind::Credential => BackupError::Credential {
                vault,
                message: chain(&e),
            },
            ErrorKind::Io | ErrorKind::Connection => BackupError::Unreachable {
                vault,
                message: chain(&e),
            },
            _ => BackupError::Unreachable {
                vault,
                message: chain(&e),
            },
        }
    }

    async fn read(&self, name: &str, version: Option<&str>) -> Result<Option<StoredSecret>> {
        let options = SecretClientGetSecretOptions {
            secret_version: version.map(str::to_owned),
            ..Default::default()
        };
        let response = match self.client.get_secret(name, Some(options)).await {
            Ok(r) => r,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(None),
            Err(e) => return Err(self.error("read", name, e)),
        };
        let secret = response
            .into_model()
            .map_err(|e| self.error("read", name, e))?;
        Ok(Some(stored(name, secret)))
    }
}

#[async_trait]
impl KeyBackupStore for AzureKeyVault {
    fn vault(&self) -> &str {
        &self.vault
    }

    async fn put(&self, name: &str, value: &SecretText, meta: &SecretMeta) -> Result<StoredSecret> {
        let parameters = SetSecretParameters {
            // The SDK takes an owned String and serialises it into the request body; those
            // copies are out of our reach (not zeroized).
            value: Some(value.expose().to_owned()),
            content_type: meta.content_type.clone(),
            tags: Some(
                meta.tags
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
            ..Default::default()
        };
        let body = parameters
            .try_into()
            .map_err(|e| self.error("write", name, e))?;
        let secret = self
            .client
            .set_secret(name, body, None)
            .await
            .map_err(|e| self.error("write", name, e))?
            .into_model()
            .map_err(|e| self.error("write", name, e))?;
        Ok(stored(name, secret))
    }

    async fn get(&self, name: &str) -> Result<Option<StoredSecret>> {
        self.read(name, None).await
    }

    async fn get_version(&self, name: &str, version: &str) -> Result<Option<StoredSecret>> {
        self.read(name, Some(version)).await
    }

    async fn list(&self) -> Result<Vec<SecretInfo>> {
        let mut pager = self
            .client
            .list_secret_properties(None)
            .map_err(|e| self.error("list", "secrets", e))?;
        let mut out = Vec::new();
        while let Some(p) = pager
            .try_next()
            .await
            .map_err(|e| self.error("list", "secrets", e))?
        {
            out.push(info(p));
        }
        Ok(out)
    }
}

fn duration(d: Duration) -> azure_core::time::Duration {
    azure_core::time::Duration::try_from(d).unwrap_or(azure_core::time::Duration::seconds(30))
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn meta(content_type: Option<String>, tags: Option<HashMap<String, String>>) -> SecretMeta {
    SecretMeta {
        content_type,
        tags: tags
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    }
}

fn stored(name: &str, mut secret: KvSecret) -> StoredSecret {
    let version = secret.resource_id().ok().and_then(|id| id.version);
    let value = SecretText::new(secret.value.take().unwrap_or_default());
    StoredSecret {
        name: name.to_owned(),
        version,
        value,
        updated: secret.attributes.as_ref().and_then(|a| a.updated),
        meta: meta(secret.content_type.take(), secret.tags.take()),
    }
}

fn info(p: SecretProperties) -> SecretInfo {
    let name = p.resource_id().map(|id| id.name).unwrap_or_default();
    SecretInfo {
        name,
        enabled: p
            .attributes
            .as_ref()
            .and_then(|a| a.enabled)
            .unwrap_or(true),
        meta: meta(p.content_type, p.tags),
    }
}
