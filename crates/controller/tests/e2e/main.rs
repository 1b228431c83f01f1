//! The controller's end-to-end tests against the shared control plane, compiled into one test
//! binary: one link instead of one per file, and the harness in `common` compiled once. (Upstream's
//! suite, which starts a control plane of its own per test, stays a binary of its own:
//! `tests/upstream_suite.rs`.) Measured on the 2-core machine: after a change to testenv, the
//! test targets rebuild in ~7 s instead of ~13 s; after one to `common`, ~3.5 s instead of ~9 s.
//!
//! One file's tests: `cargo test -p keyseal-controller --test e2e reconciler::`.

#[path = "../common/mod.rs"]
mod common;

mod backup;
mod faults;
mod ha;
mod hostile;
mod http_hostile;
mod keys_http;
mod manifests;
mod online;
mod reconciler;
mod restart;
mod smoke;
mod startup;
mod upstream;
