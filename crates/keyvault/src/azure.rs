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

/// How the client talks to the vault.
#[derive(Clone, Debug)]
pub struct VaultOptions {
    /// Retries of a failed request (connection errors, 408, 429, 5xx) before giving up; the
    /// caller's own backoff takes over after that. Default 3.
    pub max_retries: u32,
    /// Upper bound of one operation's retries in total. Default 30 s.
    pub max_total_elapsed: Duration,
    /// Per-request timeout (connect + response). Default 30 s.
    pub timeout: Duration,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            max_retries: 3,
            max_total_elapsed: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        }
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
    /// A client for the vault at `vault_url` (`https://<name>.vault.azure.net`), trusting the
    /// platform's roots.
    pub fn new(
        vault_url: &str,
        credential: Arc<dyn TokenCredential>,
        options: &VaultOptions,
    ) -> Result<Self> {
        let http = base_http(options)
            .build()
            .map_err(|e| BackupError::Invalid {
                what: "HTTP client",
                value: vault_url.to_owned(),
                reason: e.to_string(),
            })?;
        Self::with_http(vault_url, credential, options, http, true)
    }

    /// A client for a Key Vault emulator (Lowkey Vault, scripts/keyvault): trusts only the
    /// test CA in `ca_pem`, authenticates with a static bearer token, and skips the SDK's check
    /// that the challenge's resource is a `vault.azure.net` domain (an emulator names itself).
    #[cfg(feature = "emulator")]
    pub fn emulator(vault_url: &str, ca_pem: &[u8], options: &VaultOptions) -> Result<Self> {
        let invalid = |reason: String| BackupError::Invalid {
            what: "emulator CA",
            value: vault_url.to_owned(),
            reason,
        };
        let ca = reqwest::Certificate::from_pem(ca_pem).map_err(|e| invalid(e.to_string()))?;
        let http = base_http(options)
            .tls_certs_only([ca])
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Self::with_http(
            vault_url,
            Arc::new(crate::credential::EmulatorToken),
            options,
            http,
            false,
        )
    }

    fn with_http(
        vault_url: &str,
        credential: Arc<dyn TokenCredential>,
        options: &VaultOptions,
        http: reqwest::Client,
        verify_challenge_resource: bool,
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
            transport: Some(Transport::new(Arc::new(http))),
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
                verify_challenge_resource: Some(verify_challenge_resource),
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

fn base_http(options: &VaultOptions) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(options.timeout.min(Duration::from_secs(10)))
        .timeout(options.timeout)
        .https_only(true)
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
