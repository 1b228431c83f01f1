//! Credentials for Key Vault, chosen the way Azure users expect: by flag, or from the standard
//! `AZURE_*` environment variables (as set by AKS workload identity or a service principal).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientMethodOptions, ClientOptions};
use azure_identity::{
    AzureCliCredential, ClientAssertion, ClientAssertionCredential,
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyseal_crypto::{PrivateKey, pem_blocks};

use crate::error::{BackupError, Result};

/// `AZURE_CLIENT_ID`: the application (client) ID, or a user-assigned managed identity's.
pub const ENV_CLIENT_ID: &str = "AZURE_CLIENT_ID";
/// `AZURE_TENANT_ID`: the directory (tenant) ID.
pub const ENV_TENANT_ID: &str = "AZURE_TENANT_ID";
/// `AZURE_CLIENT_SECRET`: a service principal's client secret.
pub const ENV_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
/// `AZURE_CLIENT_CERTIFICATE_PATH`: a PEM file with the service principal's certificate and key.
pub const ENV_CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
/// `AZURE_FEDERATED_TOKEN_FILE`: the projected service-account token (workload identity).
pub const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// `AZURE_AUTHORITY_HOST`: the Entra ID authority (sovereign clouds).
pub const ENV_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// How to authenticate to Key Vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialKind {
    /// AKS workload identity: a federated service-account token file exchanged for a token
    /// (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity,
    /// The managed identity of the VM or node (user-assigned if `AZURE_CLIENT_ID` is set).
    ManagedIdentity,
    /// A service principal with a client secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_SECRET`).
    ClientSecret,
    /// A service principal with a certificate (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_CERTIFICATE_PATH`: PEM with the certificate and its RSA key).
    ClientCertificate,
    /// The signed-in Azure CLI (`az login`), for operators' workstations.
    AzureCli,
}

impl CredentialKind {
    /// The names accepted by [`FromStr`] (for a `--keyvault-credential` flag).
    pub const NAMES: &[&str] = &[
        "workload-identity",
        "managed-identity",
        "client-secret",
        "client-certificate",
        "azure-cli",
    ];
}

impl FromStr for CredentialKind {
    type Err = BackupError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "workload-identity" => CredentialKind::WorkloadIdentity,
            "managed-identity" => CredentialKind::ManagedIdentity,
            "client-secret" => CredentialKind::ClientSecret,
            "client-certificate" => CredentialKind::ClientCertificate,
            "azure-cli" => CredentialKind::AzureCli,
            other => {
                return Err(BackupError::CredentialConfig(format!(
                    "unknown credential kind {other:?}; one of: {}",
                    CredentialKind::NAMES.join(", ")
                )));
            }
        })
    }
}

/// A credential choice with its parameters. `Debug` never shows the client secret.
#[derive(Clone)]
pub struct CredentialConfig {
    /// Which credential.
    pub kind: CredentialKind,
    /// `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`.
    pub client_secret: Option<Secret>,
    /// `AZURE_CLIENT_CERTIFICATE_PATH`.
    pub certificate_path: Option<PathBuf>,
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub federated_token_file: Option<PathBuf>,
    /// `AZURE_AUTHORITY_HOST`, default `https://login.microsoftonline.com`.
    pub authority_host: Option<String>,
}

impl fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialConfig")
            .field("kind", &self.kind)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("certificate_path", &self.certificate_path)
            .field("federated_token_file", &self.federated_token_file)
            .field("authority_host", &self.authority_host)
            .finish()
    }
}

impl CredentialConfig {
    /// Reads the `AZURE_*` variables from the process environment; see [`Self::from_lookup`].
    pub fn from_env(kind: Option<CredentialKind>) -> Result<Self> {
        Self::from_lookup(kind, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Builds the configuration from variables given by `get`. With `kind` `None` the kind is
    /// inferred as Azure's SDKs do: a federated token file means workload identity, a client
    /// secret a client-secret service principal, a certificate path a certificate service
    /// principal, and nothing of these the managed identity. The Azure CLI is only used when
    /// asked for. Missing variables the chosen kind needs are reported here, not at first use.
    pub fn from_lookup(
        kind: Option<CredentialKind>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let config = CredentialConfig {
            kind: CredentialKind::ManagedIdentity,
            tenant_id: get(ENV_TENANT_ID),
            client_id: get(ENV_CLIENT_ID),
            client_secret: get(ENV_CLIENT_SECRET).map(Secret::new),
            certificate_path: get(ENV_CLIENT_CERTIFICATE_PATH).map(PathBuf::from),
            federated_token_file: get(ENV_FEDERATED_TOKEN_FILE).map(PathBuf::from),
            authority_host: get(ENV_AUTHORITY_HOST),
        };
        let kind = kind.unwrap_or(if config.federated_token_file.is_some() {
            CredentialKind::WorkloadIdentity
        } else if config.client_secret.is_some() {
            CredentialKind::ClientSecret
        } else if config.certificate_path.is_some() {
            CredentialKind::ClientCertificate
        } else {
            CredentialKind::ManagedIdentity
        });
        let config = CredentialConfig { kind, ..config };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let need = |present: bool, var: &str| {
            if present {
                Ok(())
            } else {
                Err(BackupError::CredentialConfig(format!(
                    "{:?} needs {var}",
                    self.kind
                )))
            }
        };
        match self.kind {
            CredentialKind::WorkloadIdentity => {
                need(self.tenant_id.is_some(), ENV_TENANT_ID)?;
                need(self.client_id.is_some(), ENV_CLIENT_ID)?;
                need(
                    self.federated_token_file.is_some(),
                    ENV_FEDERATED_TOKEN_FILE,
                )
            }
            CredentialKind::ClientSecret => {
                need(self.tenant_id.is_some(), ENV_TENANT_ID)?;
                need(self.client_id.is_some(), ENV_CLIENT_ID)?;
                need(self.client_secret.is_some(), ENV_CLIENT_SECRET)
            }
            CredentialKind::ClientCertificate => {
                need(self.tenant_id.is_some(), ENV_TENANT_ID)?;
                need(self.client_id.is_some(), ENV_CLIENT_ID)?;
                need(self.certificate_path.is_some(), ENV_CLIENT_CERTIFICATE_PATH)
            }
            _ => Ok(()),
        }
    }

    /// Creates the credential. Its requests to the token service go through `http` (the same
    /// TLS roots as the vault's) to the authority host (`AZURE_AUTHORITY_HOST`, default
    /// `https://login.microsoftonline.com`).
    pub fn credential(&self, http: &crate::VaultOptions) -> Result<Arc<dyn TokenCredential>> {
        self.check()?;
        let sdk = |e: azure_core::Error| BackupError::CredentialConfig(e.to_string());
        let tenant = || self.tenant_id.clone().unwrap_or_default();
        let client = || self.client_id.clone().unwrap_or_default();
        let client_options = || -> Result<ClientOptions> {
            let mut cloud = CustomConfiguration::default();
            cloud.authority_host = self.authority_host().to_owned();
            Ok(ClientOptions {
                transport: Some(http.transport()?),
                cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
                ..ClientOptions::default()
            })
        };
        let assertion_options = || -> Result<ClientAssertionCredentialOptions> {
            Ok(ClientAssertionCredentialOptions {
                client_options: client_options()?,
            })
        };
        Ok(match self.kind {
            CredentialKind::WorkloadIdentity => {
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    client_id: self.client_id.clone(),
                    tenant_id: self.tenant_id.clone(),
                    token_file_path: self.federated_token_file.clone(),
                    credential_options: assertion_options()?,
                }))
                .map_err(sdk)?
            }
            CredentialKind::ManagedIdentity => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: self.client_id.clone().map(UserAssignedId::ClientId),
                    client_options: ClientOptions {
                        transport: Some(http.transport()?),
                        ..ClientOptions::default()
                    },
                }))
                .map_err(sdk)?
            }
            CredentialKind::ClientSecret => ClientSecretCredential::new(
                &tenant(),
                client(),
                self.client_secret
                    .clone()
                    .unwrap_or_else(|| Secret::new("")),
                Some(ClientSecretCredentialOptions {
                    client_options: client_options()?,
                }),
            )
            .map_err(sdk)?,
            CredentialKind::ClientCertificate => {
                let path = self.certificate_path.clone().unwrap_or_default();
                let assertion =
                    CertificateAssertion::load(&path, &tenant(), &client(), self.authority_host())?;
                ClientAssertionCredential::new(
                    tenant(),
                    client(),
                    assertion,
                    Some(assertion_options()?),
                )
                .map_err(sdk)?
            }
            CredentialKind::AzureCli => AzureCliCredential::new(None).map_err(sdk)?,
        })
    }

    /// The Entra ID authority: `AZURE_AUTHORITY_HOST`, or the public cloud's.
    pub fn authority_host(&self) -> &str {
        self.authority_host
            .as_deref()
            .unwrap_or(DEFAULT_AUTHORITY_HOST)
    }
}

/// A client assertion signed with the service principal's certificate key (RS256 JWT with the
/// certificate's SHA-256 thumbprint), built with aws-lc-rs: azure_identity's own certificate
/// credential needs OpenSSL, which keyseal does not build.
struct CertificateAssertion {
    key: RsaKeyPair,
    thumbprint: String,
    audience: String,
    client_id: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("thumbprint", &self.thumbprint)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl CertificateAssertion {
    fn load(
        path: &std::path::Path,
        tenant: &str,
        client_id: &str,
        authority: &str,
    ) -> Result<Self> {
        let bad = |reason: String| {
            BackupError::CredentialConfig(format!(
                "{ENV_CLIENT_CERTIFICATE_PATH} {}: {reason}",
                path.display()
            ))
        };
        let pem = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| bad(e.to_string()))?);
        let blocks = pem_blocks(&pem);
        let cert = blocks
            .iter()
            .find(|b| b.label == "CERTIFICATE")
            .ok_or_else(|| bad("no CERTIFICATE block".to_owned()))?;
        let key = PrivateKey::from_pem(&pem)
            .map_err(|_| bad("no usable RSA PRIVATE KEY or PRIVATE KEY block".to_owned()))?;
        let key = RsaKeyPair::from_pkcs8(&key.to_pkcs8_der())
            .map_err(|_| bad("the RSA key cannot sign".to_owned()))?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert.der);
        Ok(CertificateAssertion {
            key,
            thumbprint: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            audience: format!(
                "{}/{tenant}/oauth2/v2.0/token",
                authority.trim_end_matches('/')
            ),
            client_id: client_id.to_owned(),
        })
    }

    fn sign(&self, now: i64) -> Result<String> {
        let fail = |what: &str| BackupError::CredentialConfig(format!("client assertion: {what}"));
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| fail("no randomness"))?;
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t#S256": self.thumbprint});
        let claims = serde_json::json!({
            "aud": self.audience, "iss": self.client_id, "sub": self.client_id,
            "jti": URL_SAFE_NO_PAD.encode(jti), "iat": now, "nbf": now, "exp": now + 600,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| fail("signing failed"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

#[async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(
        &self,
        _options: Option<ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.sign(now).map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_lc_rs::signature::KeyPair;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn kind_is_inferred_like_azure_sdks() {
        let wi = [
            (ENV_TENANT_ID, "t"),
            (ENV_CLIENT_ID, "c"),
            (
                ENV_FEDERATED_TOKEN_FILE,
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
        ];
        assert_eq!(
            CredentialConfig::from_lookup(None, lookup(&wi))
                .unwrap()
                .kind,
            CredentialKind::WorkloadIdentity
        );
        let sp = [
            (ENV_TENANT_ID, "t"),
            (ENV_CLIENT_ID, "c"),
            (ENV_CLIENT_SECRET, "s3cr3t"),
        ];
        let config = CredentialConfig::from_lookup(None, lookup(&sp)).unwrap();
        assert_eq!(config.kind, CredentialKind::ClientSecret);
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let cert = [
            (ENV_TENANT_ID, "t"),
            (ENV_CLIENT_ID, "c"),
            (ENV_CLIENT_CERTIFICATE_PATH, "/x.pem"),
        ];
        assert_eq!(
            CredentialConfig::from_lookup(None, lookup(&cert))
                .unwrap()
                .kind,
            CredentialKind::ClientCertificate
        );
        assert_eq!(
            CredentialConfig::from_lookup(None, lookup(&[]))
                .unwrap()
                .kind,
            CredentialKind::ManagedIdentity
        );
        assert_eq!(
            CredentialConfig::from_lookup(Some(CredentialKind::AzureCli), lookup(&sp))
                .unwrap()
                .kind,
            CredentialKind::AzureCli
        );
    }

    #[test]
    fn missing_variables_are_named() {
        let err = CredentialConfig::from_lookup(
            Some(CredentialKind::ClientSecret),
            lookup(&[(ENV_TENANT_ID, "t"), (ENV_CLIENT_ID, "c")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains(ENV_CLIENT_SECRET), "{err}");
        let err = CredentialConfig::from_lookup(
            Some(CredentialKind::WorkloadIdentity),
            lookup(&[(ENV_CLIENT_ID, "c")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains(ENV_TENANT_ID), "{err}");
    }

    #[test]
    fn kinds_parse_from_flags() {
        for name in CredentialKind::NAMES {
            name.parse::<CredentialKind>().unwrap();
        }
        assert!("default".parse::<CredentialKind>().is_err());
    }

    #[test]
    fn certificate_assertion_is_a_verifiable_rs256_jwt() {
        use keyseal_crypto::{CertificateParams, SystemRng, self_signed_certificate};
        let key = PrivateKey::generate(2048).unwrap();
        let cert =
            self_signed_certificate(&key, &CertificateParams::default(), &mut SystemRng).unwrap();
        let dir = std::env::temp_dir().join(format!("keyseal-kv-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sp.pem");
        std::fs::write(
            &path,
            format!("{}{}", key.to_pkcs1_pem().as_str(), cert.to_pem()),
        )
        .unwrap();
        let a = CertificateAssertion::load(&path, "tenant", "client", "https://login.example/")
            .unwrap();
        assert!(!format!("{a:?}").contains("PRIVATE"));
        let jwt = a.sign(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims["aud"],
            "https://login.example/tenant/oauth2/v2.0/token"
        );
        assert_eq!(claims["iss"], "client");
        assert_eq!(claims["exp"], 1_700_000_600);
        let spki = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            a.key.public_key().as_ref().to_vec(),
        );
        spki.verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
