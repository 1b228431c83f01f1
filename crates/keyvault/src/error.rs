//! The crate's error type: what went wrong, whether retrying can help, and never a secret value.

/// Why a Key Vault backup operation failed. Messages name the vault and the secret; they never
/// carry secret values, key bytes or the key Secret JSON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The vault could not be reached (connection refused, DNS, TLS, timeout). Transient.
    #[error("key vault {vault} is unreachable: {message}")]
    Unreachable {
        /// The vault URL.
        vault: String,
        /// The transport's description of the failure.
        message: String,
    },
    /// The vault answered with an error status.
    #[error("key vault {vault} refused to {operation} {name}: HTTP {status}: {message}")]
    Service {
        /// The vault URL.
        vault: String,
        /// What was attempted: `write`, `read`, `list`.
        operation: &'static str,
        /// The Key Vault secret name (or `secrets` for a list).
        name: String,
        /// The HTTP status.
        status: u16,
        /// The service's error code and message.
        message: String,
    },
    /// No token could be obtained for the vault.
    #[error("key vault {vault}: cannot get a token: {message}")]
    Credential {
        /// The vault URL.
        vault: String,
        /// The credential's description of the failure.
        message: String,
    },
    /// The credential configuration is incomplete or contradictory.
    #[error("key vault credential: {0}")]
    CredentialConfig(String),
    /// The requested secret does not exist in the vault.
    #[error("key vault {vault} has no secret {name}")]
    NotFound {
        /// The vault URL.
        vault: String,
        /// The Key Vault secret name.
        name: String,
    },
    /// A backup read back from the vault does not match what was written, or does not load.
    #[error("backup {name} in key vault {vault} failed verification: {reason}")]
    Verification {
        /// The vault URL.
        vault: String,
        /// The Key Vault secret name.
        name: String,
        /// What did not match (fingerprints, never key material).
        reason: String,
    },
    /// The vault already holds a different key (or a non-backup secret) under this backup's name;
    /// backups are never overwritten.
    #[error("key vault {vault} already holds {name} with {existing}; not overwriting a backup")]
    Conflict {
        /// The vault URL.
        vault: String,
        /// The Key Vault secret name.
        name: String,
        /// What is there (a fingerprint or a content type).
        existing: String,
    },
    /// The key Secret to back up is not a usable key Secret.
    #[error("key Secret {secret}: {reason}")]
    InvalidKeySecret {
        /// `namespace/name` of the Secret.
        secret: String,
        /// Why (never key material).
        reason: String,
    },
    /// The vault's 401 challenge names a resource outside the vault's own domain, which the SDK
    /// refuses by default (a vault outside the public clouds' vault domains: turn the check off
    /// with `VaultOptions::verify_challenge_resource`). Not transient.
    #[error("key vault {vault}: {message}")]
    ChallengeResource {
        /// The vault URL.
        vault: String,
        /// The SDK's description.
        message: String,
    },
    /// A backup prefix, vault URL or vault reference is malformed.
    #[error("{what} {value:?}: {reason}")]
    Invalid {
        /// What was malformed, e.g. `backup prefix`, `vault reference`.
        what: &'static str,
        /// The offending value (never a secret).
        value: String,
        /// Why, with a hint where useful.
        reason: String,
    },
}

impl BackupError {
    /// True when retrying later can succeed: the vault is unreachable, throttling (429) or failing
    /// (5xx), or the token service is. Permanent errors (403, a bad prefix, a conflict) are not.
    pub fn is_transient(&self) -> bool {
        match self {
            BackupError::Unreachable { .. } | BackupError::Credential { .. } => true,
            BackupError::Service { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            _ => false,
        }
    }

    /// A fixed, low-cardinality label for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            BackupError::Unreachable { .. } => "VaultUnreachable",
            BackupError::Service { .. } => "VaultError",
            BackupError::Credential { .. } => "CredentialFailed",
            BackupError::CredentialConfig(_) => "CredentialConfig",
            BackupError::NotFound { .. } => "NotFound",
            BackupError::Verification { .. } => "VerificationFailed",
            BackupError::Conflict { .. } => "Conflict",
            BackupError::InvalidKeySecret { .. } => "InvalidKeySecret",
            BackupError::Invalid { .. } => "InvalidConfig",
            BackupError::ChallengeResource { .. } => "ChallengeResourceMismatch",
        }
    }
}

/// This crate's `Result`.
pub type Result<T, E = BackupError> = std::result::Result<T, E>;
