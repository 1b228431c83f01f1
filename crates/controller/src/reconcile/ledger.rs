//! What the reconciler remembers between reconciles: which SealedSecrets are synced at which
//! inputs (so a resync costs nothing), and which are being reconciled right now (so a deletion
//! that overtakes a running reconcile is not lost).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// What the controller remembers about a SealedSecret it handled (in memory only: after a restart
/// everything is unsealed once, as upstream does).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Synced {
    /// Generation and scope that were handled; a change to either means unseal again.
    pub inputs: String,
    /// Fingerprint of the key that opened it, tried first next time.
    pub key: Option<String>,
    /// The last attempt failed permanently; retried when the inputs or the keys change (not when
    /// our own status write comes back as a watch event).
    pub failed: bool,
}

/// The [`Synced`] records, and which SealedSecrets are being reconciled right now.
///
/// A record may only be written by a reconcile that nothing overtook: when the Secret is deleted
/// while the reconcile that wrote it is still running (writing the status, say), the deletion
/// handler's [`Ledger::forget`] comes first and the reconcile's record after it, and the
/// reconcile the deletion queued would then skip the SealedSecret as "already synced" and never
/// recreate the Secret. So `forget` marks a running reconcile as overtaken, and
/// [`Ticket::record`] writes nothing for it. Likewise a key loaded while a reconcile fails
/// ([`Ledger::clear_failures`]): that failure is not recorded, so the new key gets its chance.
#[derive(Default)]
pub(super) struct Ledger(Mutex<LedgerState>);

#[derive(Default)]
struct LedgerState {
    synced: HashMap<String, Synced>,
    /// Keys being reconciled, and what happened since each reconcile began. kube-runtime runs
    /// one reconcile per object at a time, so this holds at most `--workers` entries.
    running: HashMap<String, Overtaken>,
}

/// What happened while a reconcile was running.
#[derive(Clone, Copy, Debug, Default)]
struct Overtaken {
    /// Its owned Secret (or itself) was deleted: nothing it found still holds.
    deleted: bool,
    /// The keys changed: a failure to unseal may not hold any more.
    keys: bool,
}

/// What [`Ledger::begin`] found.
pub(super) enum Begin<'a> {
    /// Handled at these inputs already (synced, or failed for good): nothing to do.
    Done,
    /// To be done.
    Run(Ticket<'a>),
}

/// A reconcile in progress; [`Ticket::record`] remembers its outcome. Dropped without recording
/// (a transient failure), it remembers nothing.
pub(super) struct Ticket<'a> {
    ledger: &'a Ledger,
    key: String,
    /// The key that opened the SealedSecret last time, tried first.
    pub hint: Option<String>,
}

impl Ledger {
    fn state(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.0.lock().expect("ledger lock")
    }

    /// Starts the reconcile of `key` unless it was handled at `inputs` already.
    pub(super) fn begin(&self, key: &str, inputs: &str) -> Begin<'_> {
        let mut state = self.state();
        let hint = match state.synced.get(key) {
            Some(s) if s.inputs == inputs => return Begin::Done,
            Some(s) => s.key.clone(),
            None => None,
        };
        state.running.insert(key.to_owned(), Overtaken::default());
        Begin::Run(Ticket {
            ledger: self,
            key: key.to_owned(),
            hint,
        })
    }

    /// Forgets `key` (its owned Secret or the SealedSecret itself was deleted): the next
    /// reconcile unseals again, including when one is running now.
    pub(super) fn forget(&self, key: &str) {
        let mut state = self.state();
        state.synced.remove(key);
        if let Some(overtaken) = state.running.get_mut(key) {
            overtaken.deleted = true;
        }
    }

    /// Forgets permanent failures, including those being found right now, so a newly loaded key
    /// gets its chance.
    pub(super) fn clear_failures(&self) {
        let mut state = self.state();
        state.synced.retain(|_, s| !s.failed);
        for overtaken in state.running.values_mut() {
            overtaken.keys = true;
        }
    }

    pub(super) fn per_key_counts(&self) -> BTreeMap<String, i64> {
        let mut counts = BTreeMap::new();
        for s in self.state().synced.values().filter(|s| !s.failed) {
            if let Some(k) = &s.key {
                *counts.entry(k.clone()).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Ticket<'_> {
    /// Remembers the outcome, unless something overtook this reconcile: a deletion, or for a
    /// failure a change of keys (the next reconcile, which either queued, does the work again).
    /// Returns whether it was remembered.
    pub(super) fn record(self, synced: Synced) -> bool {
        let mut state = self.ledger.state();
        let overtaken = state.running.remove(&self.key).unwrap_or(Overtaken {
            deleted: true,
            keys: true,
        });
        let stale = overtaken.deleted || (overtaken.keys && synced.failed);
        let keep = !stale;
        if keep {
            state.synced.insert(self.key.clone(), synced);
        }
        keep
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        // After `record` the entry is gone already; after an error it is removed here.
        if let Ok(mut state) = self.ledger.0.lock() {
            state.running.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn synced(key: &str) -> Synced {
        Synced {
            inputs: "u-1|3|strict".into(),
            key: Some(key.into()),
            failed: false,
        }
    }

    fn run<'a>(ledger: &'a Ledger, key: &str) -> Ticket<'a> {
        match ledger.begin(key, "u-1|3|strict") {
            Begin::Run(ticket) => ticket,
            Begin::Done => panic!("{key} should be reconciled"),
        }
    }

    #[test]
    fn a_recorded_sync_skips_the_next_reconcile_at_the_same_inputs() {
        let ledger = Ledger::default();
        assert_eq!(run(&ledger, "shop/db").hint, None);
        assert!(run(&ledger, "shop/db").record(synced("SHA256:k1")));
        assert!(matches!(
            ledger.begin("shop/db", "u-1|3|strict"),
            Begin::Done
        ));
        // New inputs: reconciled again, the key that opened it last time first.
        match ledger.begin("shop/db", "u-1|4|strict") {
            Begin::Run(ticket) => assert_eq!(ticket.hint.as_deref(), Some("SHA256:k1")),
            Begin::Done => panic!("a new generation is reconciled"),
        }
        assert_eq!(
            ledger.per_key_counts(),
            BTreeMap::from([("SHA256:k1".into(), 1)])
        );
    }

    /// Upstream's integration suite ("Secret Recreation With owned secret should recreate the
    /// secret", at 5 QPS): the owned Secret was deleted while the reconcile that created it was
    /// still writing the status. The deletion handler forgot the object, then that reconcile
    /// recorded it as synced, and the reconcile queued by the deletion skipped it: the Secret was
    /// not recreated until the SealedSecret changed.
    #[test]
    fn regression_a_deletion_during_the_reconcile_is_not_overwritten_by_its_record() {
        let ledger = Ledger::default();
        let ticket = run(&ledger, "shop/db");
        ledger.forget("shop/db"); // the Secret's deletion event, mid-reconcile
        assert!(
            !ticket.record(synced("SHA256:k1")),
            "overtaken: not recorded"
        );
        // The reconcile the deletion queued does the work again.
        assert!(run(&ledger, "shop/db").record(synced("SHA256:k1")));
        assert!(matches!(
            ledger.begin("shop/db", "u-1|3|strict"),
            Begin::Done
        ));
        // A deletion of another object's Secret overtakes nothing here.
        let ticket = run(&ledger, "shop/other");
        ledger.forget("shop/unrelated");
        assert!(ticket.record(synced("SHA256:k1")));
    }

    #[test]
    fn a_transient_failure_remembers_nothing_and_leaves_no_running_entry() {
        let ledger = Ledger::default();
        drop(run(&ledger, "shop/db")); // returned an error: no record
        assert!(ledger.state().running.is_empty());
        // A deletion now (no reconcile running) only forgets; the next reconcile records.
        ledger.forget("shop/db");
        assert!(run(&ledger, "shop/db").record(synced("SHA256:k1")));
        assert!(ledger.state().running.is_empty());
    }

    #[test]
    fn a_new_key_retries_permanent_failures_only() {
        let ledger = Ledger::default();
        assert!(run(&ledger, "shop/ok").record(synced("SHA256:k1")));
        let mut failed = synced("SHA256:k1");
        failed.failed = true;
        assert!(run(&ledger, "shop/bad").record(failed.clone()));
        ledger.clear_failures();
        assert!(matches!(
            ledger.begin("shop/ok", "u-1|3|strict"),
            Begin::Done
        ));
        assert!(matches!(
            ledger.begin("shop/bad", "u-1|3|strict"),
            Begin::Run(_)
        ));

        // A key loaded while a reconcile is failing: that failure is not remembered, so the
        // reconcile the key change queued tries the new key. A success is remembered.
        let (failing, succeeding) = (run(&ledger, "shop/late"), run(&ledger, "shop/fine"));
        ledger.clear_failures();
        assert!(!failing.record(failed));
        assert!(succeeding.record(synced("SHA256:k1")));
        assert!(matches!(
            ledger.begin("shop/late", "u-1|3|strict"),
            Begin::Run(_)
        ));
        assert!(matches!(
            ledger.begin("shop/fine", "u-1|3|strict"),
            Begin::Done
        ));
    }
}
