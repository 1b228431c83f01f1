//! Where start-up time goes: the moment of each step from process start to the first Secret
//! written, logged once, at info level, when that Secret is written:
//!
//! ```text
//! start-up: first Secret written; phases in ms since process start client_ms=… http_ms=…
//!   leading_ms=… keys_listed_ms=… key_generated_ms=… first_key_ms=… cache_ready_ms=…
//!   first_reconcile_ms=… first_secret_ms=…
//! ```
//!
//! (one line; with `--log-format json` the same names are fields of the JSON object). A phase
//! that had not happened when the first Secret was written reads `-1` (for instance
//! `key_generated_ms` when the keys were loaded, not generated). Each mark is a [`OnceLock`]:
//! after the first time, marking again is one atomic load, so the reconciler's hot path takes no
//! lock.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::keys::KeyRing;

/// A step on the way from process start to the first Secret written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The kube client is built.
    Client,
    /// The HTTP listeners are bound.
    HttpListening,
    /// This replica leads (the Lease is taken, or leader election is disabled).
    Leading,
    /// The key watch has listed the key Secrets once.
    KeysListed,
    /// The leader generated a key (a cluster without one).
    KeyGenerated,
    /// The key ring holds a key.
    FirstKey,
    /// The SealedSecret cache holds the first complete list (of the first watched scope).
    CacheReady,
    /// The first reconcile started.
    FirstReconcile,
    /// The first Secret was created or replaced.
    FirstSecret,
}

impl Phase {
    const ALL: [Phase; 9] = [
        Phase::Client,
        Phase::HttpListening,
        Phase::Leading,
        Phase::KeysListed,
        Phase::KeyGenerated,
        Phase::FirstKey,
        Phase::CacheReady,
        Phase::FirstReconcile,
        Phase::FirstSecret,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// When each [`Phase`] first happened, as time since [`Clock::start`].
pub struct Clock {
    start: Instant,
    marks: [OnceLock<Duration>; Phase::ALL.len()],
}

impl Clock {
    /// A clock started now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            marks: Default::default(),
        }
    }

    /// Records `phase` now unless it was recorded before; true the first time.
    pub fn mark(&self, phase: Phase) -> bool {
        let slot = &self.marks[phase.index()];
        if slot.get().is_some() {
            return false;
        }
        slot.set(self.start.elapsed()).is_ok()
    }

    /// When `phase` happened, if it did.
    pub fn at(&self, phase: Phase) -> Option<Duration> {
        self.marks[phase.index()].get().copied()
    }

    /// Milliseconds since start for `phase`, -1 when it has not happened.
    fn ms(&self, phase: Phase) -> i64 {
        self.at(phase)
            .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// Logs the phases (the line the module doc shows).
    fn log(&self) {
        tracing::info!(
            client_ms = self.ms(Phase::Client),
            http_ms = self.ms(Phase::HttpListening),
            leading_ms = self.ms(Phase::Leading),
            keys_listed_ms = self.ms(Phase::KeysListed),
            key_generated_ms = self.ms(Phase::KeyGenerated),
            first_key_ms = self.ms(Phase::FirstKey),
            cache_ready_ms = self.ms(Phase::CacheReady),
            first_reconcile_ms = self.ms(Phase::FirstReconcile),
            first_secret_ms = self.ms(Phase::FirstSecret),
            "start-up: first Secret written; phases in ms since process start"
        );
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's clock, started by [`process_started`] (or by its first use).
fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(Clock::new)
}

/// Starts the process's clock: call first thing in `main`.
pub fn process_started() {
    let _ = clock();
}

/// Records `phase` for this process (only its first occurrence counts).
pub fn mark(phase: Phase) {
    clock().mark(phase);
}

/// When `phase` happened in this process, since its start.
pub fn at(phase: Phase) -> Option<Duration> {
    clock().at(phase)
}

/// A Secret was created or replaced: the first time, logs every phase.
pub fn secret_written() {
    let clock = clock();
    if clock.mark(Phase::FirstSecret) {
        clock.log();
    }
}

/// Marks [`Phase::FirstKey`] when `ring` first holds a key.
pub async fn watch_first_key(ring: Arc<KeyRing>) {
    let mut changes = ring.subscribe();
    while ring.newest().is_none() {
        if changes.changed().await.is_err() {
            return;
        }
    }
    mark(Phase::FirstKey);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_counts_once_and_unreached_ones_read_minus_one() {
        let clock = Clock::new();
        assert_eq!(clock.ms(Phase::Leading), -1);
        assert!(clock.mark(Phase::Leading));
        let first = clock.at(Phase::Leading).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(!clock.mark(Phase::Leading), "a second mark is ignored");
        assert_eq!(clock.at(Phase::Leading), Some(first));
        assert!(clock.ms(Phase::Leading) >= 0);
        assert_eq!(clock.ms(Phase::FirstSecret), -1);
        for (i, phase) in Phase::ALL.iter().enumerate() {
            assert_eq!(phase.index(), i);
        }
    }
}
