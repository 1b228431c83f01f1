//! `keyseal-controller` as a library: unseals SealedSecrets into Secrets, serves the sealing
//! certificate, renews sealing keys; a drop-in, highly available replacement for the Sealed
//! Secrets controller. The binary (`main.rs`) parses [`Flags`], sets up logging and calls
//! [`run`].
//!
//! Where things live:
//! - [`flags`]: every flag (upstream's names and `SEALED_SECRETS_*` variables), parsed once into
//!   typed values and sorted into [`flags::Config`] for the parts below;
//! - [`app`]: the parts put together;
//! - [`leader`]: leader election; the leader runs the key manager and the reconciler;
//! - [`keys`]: the key ring, its watch, and key generation and renewal;
//! - [`backup`]: every key backed up to Azure Key Vault and verified, a new key activated only
//!   then;
//! - [`reconcile`]: SealedSecret → Secret — the decisions as pure functions
//!   (`reconcile/decide.rs`), the writes, the status;
//! - [`conditions`]: the condition, reasons, event reasons and error labels, in one place;
//! - [`events`], [`metrics`]: what the controller reports (a new metric: a field on
//!   [`metrics::Metrics`], registered in `Metrics::new`, set where it happens);
//! - [`http`]: `/v1/cert.pem`, `/v1/verify`, `/v1/rotate`, health and `/metrics`;
//! - [`startup`]: when each step from process start to the first Secret written happened;
//! - [`throttle`], [`bucket`]: the client-side API rate limit and the token bucket it shares
//!   with HTTP's per-client limit.

#![forbid(unsafe_code)]

pub mod app;
pub mod backup;
pub mod bucket;
pub mod conditions;
pub mod events;
pub mod flags;
pub mod http;
pub mod keys;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod reconcile;
pub mod startup;
pub mod throttle;

pub use app::run;
pub use flags::Flags;

/// The version in upstream's form (`v<semver>`, as its Makefile stamps it): printed by
/// `--version`, logged at start-up and exported as the `build_info` metric's `revision`.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
