//! The emulator's configuration, read from a JSON file: where it listens, its TLS material, the
//! tenant with its identities and their roles, the Kubernetes issuers trusted for workload
//! identity, and the vault's paging and soft-delete settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTPS address of the vault and of the token endpoint, e.g. `127.0.0.1:0` (port 0 picks
    /// one; the address bound is written to `<data_dir>/address`).
    pub listen: String,
    /// Plain-HTTP address of the admin API (faults, request counts), loopback only; none when
    /// absent. Written to `<data_dir>/admin-address`.
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// Secrets, the token-signing key and generated TLS material live here.
    pub data_dir: PathBuf,
    /// The server certificate.
    #[serde(default)]
    pub tls: Tls,
    /// The Microsoft Entra tenant (directory) ID, a GUID.
    pub tenant: String,
    /// Applications (service principals and managed identities) that can get tokens.
    #[serde(default)]
    pub identities: Vec<Identity>,
    /// Kubernetes service-account issuers whose tokens are accepted as client assertions.
    #[serde(default)]
    pub issuers: Vec<Issuer>,
    /// Items per list page when the request gives no `maxresults` (the service's is 25).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Soft-delete retention, 7–90 days (the service's default is 90).
    #[serde(default = "default_recoverable_days")]
    pub recoverable_days: u32,
    /// Lifetime of issued access tokens (Entra's are 60–90 minutes).
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
    /// The service deletes asynchronously: for this long after a delete, the deleted secret is
    /// not found yet and a purge answers 409 (0: at once).
    #[serde(default)]
    pub deletion_delay_ms: u64,
}

fn default_page_size() -> u32 {
    25
}
fn default_recoverable_days() -> u32 {
    90
}
fn default_token_lifetime() -> u64 {
    3600
}

/// The server certificate: given as PEM files, or generated once into `<data_dir>/tls` (a test
/// CA `ca.crt` and a certificate it signs for `hosts`), kept across restarts.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain (PEM).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Names and addresses a generated certificate is for.
    #[serde(default = "default_hosts")]
    pub hosts: Vec<String>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert_file: None,
            key_file: None,
            hosts: default_hosts(),
        }
    }
}

fn default_hosts() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into()]
}

/// An application that can get tokens, and what it may do in the vault.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// A name for logs and errors.
    pub name: String,
    /// The application (client) ID.
    pub client_id: String,
    /// A client secret, for the client-credentials grant.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A certificate (PEM) whose key signs client assertions (`x5t#S256` names it).
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    /// Federated identity credentials: Kubernetes service accounts that may act as this
    /// application (workload identity).
    #[serde(default)]
    pub federated: Vec<Federated>,
    /// Role assignments in the vault.
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// A federated identity credential, as in Entra: tokens from `issuer` for `subject` with one of
/// `audiences`.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Federated {
    /// The token issuer (a Kubernetes cluster's service-account issuer URL).
    pub issuer: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    /// Accepted audiences.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

fn default_audiences() -> Vec<String> {
    vec!["api://AzureADTokenExchange".into()]
}

/// A role assignment: `permissions` on the secrets `scope` names.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// `*` for the whole vault, `<name>` for one secret, or a pattern with one `*` for the
    /// secrets whose names match it (`prod-*`, `*-sealing-cert`); names compare
    /// case-insensitively. Listing needs `*`.
    pub scope: String,
    /// What the identity may do there.
    pub permissions: Vec<Permission>,
}

/// A group of data actions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Get secrets and deleted secrets, list them and their versions.
    Read,
    /// Set secrets, update their properties, back them up and restore them.
    Write,
    /// Delete, recover and purge.
    Delete,
}

/// A Kubernetes service-account issuer trusted for workload identity.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// The `iss` of its tokens.
    pub issuer: String,
    /// Where its signing keys are published (the API server's `/openid/v1/jwks`, read without
    /// credentials as Entra reads it).
    pub jwks_uri: String,
    /// A CA (PEM) to trust for `jwks_uri`, besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Config {
    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=25).contains(&self.page_size),
            "page_size must be 1–25, as the service's maxresults"
        );
        anyhow::ensure!(
            (7..=90).contains(&self.recoverable_days),
            "recoverable_days must be 7–90, as the service's soft-delete retention"
        );
        anyhow::ensure!(
            self.token_lifetime_secs > 300,
            "token_lifetime_secs must be above 300: SDKs renew tokens within 300 s of expiry"
        );
        anyhow::ensure!(!self.tenant.is_empty(), "tenant is empty");
        for id in &self.identities {
            anyhow::ensure!(
                !id.client_id.is_empty(),
                "identity {}: empty client_id",
                id.name
            );
            for role in &id.roles {
                anyhow::ensure!(
                    !role.scope.is_empty(),
                    "identity {}: a role has an empty scope",
                    id.name
                );
            }
        }
        Ok(())
    }
}
