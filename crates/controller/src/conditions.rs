//! The controller's vocabulary, in one place: the condition it writes on a SealedSecret, the
//! reasons it gives there and in Events, and the labels of the error metric. Status writes,
//! events and metrics all take their strings from here, so a new reason is added once.

/// The condition type on every SealedSecret (Argo CD's health check reads it).
pub const SYNCED: &str = keyseal_api::CONDITION_SYNCED;

/// keyseal's second condition, after [`SYNCED`]: the record of the Secret it last wrote (or
/// found holding what it would write) and the inputs it unsealed, which spares a restarted
/// controller the unseal of what did not change (see `reconcile::decide::record`). Upstream's
/// controller and tools read conditions by type and keep the ones they do not know.
pub const SECRET_WRITTEN: &str = "keyseal.dev/SecretWritten";

/// The reason of the [`SECRET_WRITTEN`] condition.
pub const WRITTEN: &str = "Written";

/// Condition status values.
pub mod status {
    /// The Secret holds what the SealedSecret says.
    pub const TRUE: &str = "True";
    /// It does not; the message says why.
    pub const FALSE: &str = "False";

    /// The status value for an outcome.
    pub fn of(synced: bool) -> &'static str {
        if synced { TRUE } else { FALSE }
    }
}

/// `reason` of a `Synced=False` condition (upstream sets none; keyseal adds one). Failures to
/// unseal use [`keyseal_api::UnsealError::reason`] (`NoKeyCouldDecrypt`, `InvalidEncoding`,
/// `InvalidSpec`, `TemplateError`, …).
pub mod reason {
    /// A Secret of the name exists and belongs to someone else.
    pub const UNMANAGED: &str = "Unmanaged";
    /// The target Secret is immutable and would change.
    pub const IMMUTABLE: &str = "Immutable";
    /// The spec does not have the SealedSecret shape.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The API server refused the Secret.
    pub const UPDATE_FAILED: &str = "UpdateFailed";
}

/// Event reasons, upstream's names.
pub mod event {
    /// The Secret was written.
    pub const UNSEALED: &str = "Unsealed";
    /// Unsealing failed.
    pub const UNSEAL_FAILED: &str = "ErrUnsealFailed";
    /// Writing the Secret failed.
    pub const UPDATE_FAILED: &str = "ErrUpdateFailed";
    /// A key Secret could not be loaded (keyseal).
    pub const KEY_INVALID: &str = "ErrKeyInvalid";
    /// A key was backed up to Key Vault, verified, and activated (keyseal).
    pub const KEY_BACKED_UP: &str = "KeyBackedUp";
    /// A key's backup to Key Vault failed; it is retried (keyseal).
    pub const KEY_BACKUP_FAILED: &str = "ErrKeyBackupFailed";
}

/// The `result` label of `sealed_secrets_controller_key_backup_attempts_total`.
pub mod backup_result {
    /// Written (or found) and verified.
    pub const SUCCESS: &str = "success";
    /// Not backed up this time.
    pub const FAILURE: &str = "failure";
}

/// The `reason` label of `sealed_secrets_controller_unseal_errors_total`, upstream's values.
pub mod error_label {
    /// No key loaded yet.
    pub const FETCH: &str = "fetch";
    /// The SealedSecret cannot be unsealed.
    pub const UNSEAL: &str = "unseal";
    /// Writing the Secret failed.
    pub const UPDATE: &str = "update";
    /// The target Secret is not the SealedSecret's.
    pub const UNMANAGED: &str = "unmanaged";
    /// Writing the status failed.
    pub const STATUS: &str = "status";
    /// Every label, exported at zero from the start.
    pub const ALL: [&str; 5] = [FETCH, UNSEAL, UPDATE, UNMANAGED, STATUS];
}
