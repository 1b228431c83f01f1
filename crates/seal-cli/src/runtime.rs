//! The async runtime for the online operations (the controller, Key Vault): the CLI is
//! synchronous otherwise, so offline sealing never starts one.

use crate::error::{Result, err};

/// Runs `f` to completion on a new single-threaded runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("cannot start the async runtime: {e}")))?
        .block_on(f)
}
