//! The reconciler's decisions, without I/O: given the Secret a SealedSecret unseals to and the
//! Secret of that name in the cluster (if any), what to write; given the outcome, what status.
//! `write.rs` carries them out against the API server. The rules are upstream's
//! (COMPAT.md §3, §5); each has a unit test below.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use keyseal_api::annotations::{MANAGED, PATCH, SKIP_SET_OWNER_REFERENCES, is_true};
use keyseal_api::{SealedSecret, SealedSecretCondition, SealedSecretStatus};

use crate::conditions::{self, status};

/// What to do with the target Secret.
#[derive(Debug, PartialEq)]
pub enum Write {
    /// There is none: create the target.
    Create,
    /// Replace the existing Secret with this one (it carries the existing `resourceVersion`).
    Replace(Box<Secret>),
    /// The existing Secret already holds what would be written.
    Unchanged,
}

/// Why the target Secret is left alone (permanent until something changes).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// It exists and belongs to someone else.
    #[error("Resource {0:?} already exists and is not managed by SealedSecret")]
    Unmanaged(String),
    /// It is immutable and its data or type would change.
    #[error(
        "the target Secret is immutable and its data or type differ; delete it to let the controller recreate it"
    )]
    Immutable,
}

/// The Secret to write for an unsealed one. With `skip-set-owner-references` it has no
/// ownerReference, so it is annotated managed: without either the controller could not tell its
/// own Secret from someone else's after the first create (upstream fails there, COMPAT §9).
pub fn target(mut unsealed: Secret) -> Secret {
    if skips_owner(&unsealed) {
        unsealed
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(MANAGED.to_owned(), "true".to_owned());
    }
    unsealed
}

/// What to write so that the Secret of the SealedSecret with uid `owner_uid` is `target`, when
/// `existing` is what the cluster holds under its name.
///
/// - none: create it;
/// - controlled by this SealedSecret, or annotated `managed`: replace it (data, type, labels,
///   annotations and ownerReferences become the target's);
/// - annotated `patch`: merge into it (data, labels and annotations, the target's winning;
///   the ownerReference only when it is also `managed`);
/// - anything else: refuse, leaving it untouched;
/// - immutable: only labels and annotations may change (it stays immutable); a change of data
///   or type is refused;
/// - nothing to change: no write.
pub fn write(
    owner_uid: Option<&str>,
    target: &Secret,
    existing: Option<&Secret>,
) -> Result<Write, Refusal> {
    let Some(existing) = existing else {
        return Ok(Write::Create);
    };
    let annotations = existing.metadata.annotations.as_ref();
    let (managed, patch) = (is_true(annotations, MANAGED), is_true(annotations, PATCH));
    if !(is_controlled_by(existing, owner_uid) || managed || patch) {
        let name = existing.metadata.name.clone().unwrap_or_default();
        return Err(Refusal::Unmanaged(name));
    }
    // As upstream: the patch annotation on the existing Secret decides, whether or not it is
    // already controlled (a patch + managed Secret is owned after the first sync and must keep
    // being merged into, not replaced).
    let mut next = if patch {
        merged(existing, target, managed && !skips_owner(target))
    } else {
        let mut replaced = target.clone();
        replaced
            .metadata
            .resource_version
            .clone_from(&existing.metadata.resource_version);
        replaced
    };
    let same_content = same_data_and_type(existing, &next);
    let same_metadata = same_metadata(existing, &next);
    if existing.immutable == Some(true) {
        if !same_content {
            return Err(Refusal::Immutable);
        }
        if same_metadata {
            return Ok(Write::Unchanged);
        }
        // Labels and annotations may still change; `immutable` itself cannot be unset.
        next.immutable = Some(true);
    } else if same_content && same_metadata && !next.immutable.unwrap_or(false) {
        return Ok(Write::Unchanged);
    }
    Ok(Write::Replace(Box::new(next)))
}

/// The outcome a status reports.
#[derive(Clone, Copy, Debug)]
pub struct Outcome<'a> {
    /// Whether the Secret holds what the SealedSecret says.
    pub synced: bool,
    /// Why not (a [`conditions::reason`] or an unseal reason).
    pub reason: Option<&'a str>,
    /// The error, for the user.
    pub message: Option<&'a str>,
    /// The [`record`] of the Secret written, when one was (kept as it is otherwise).
    pub record: Option<&'a str>,
}

impl<'a> Outcome<'a> {
    /// Synced, the Secret as `record` says.
    pub fn synced(record: Option<&'a str>) -> Self {
        Outcome {
            synced: true,
            reason: None,
            message: None,
            record,
        }
    }
}

/// The record kept in the status (condition [`conditions::SECRET_WRITTEN`]) when the Secret
/// stood at `secret_version` (its resourceVersion) after unsealing the SealedSecret at `inputs`
/// (uid, generation, scope, options) with the key `key` (fingerprint). Any write to the Secret —
/// an edit, a relabel, a deletion and re-creation, another controller's write — changes its
/// resourceVersion, so a Secret still at the recorded version holds exactly what unsealing these
/// inputs wrote: a restarted controller then has nothing to decrypt or write. Nothing in it
/// derives from a secret value.
pub fn record(inputs: &str, secret_version: &str, key: Option<&str>) -> String {
    let key = key.unwrap_or(NO_KEY);
    format!("{RECORD_PREFIX}{secret_version}{RECORD_INPUTS}{inputs}{RECORD_KEY}{key}")
}

const RECORD_PREFIX: &str = "Secret resourceVersion ";
const RECORD_INPUTS: &str = ", unsealed from ";
const RECORD_KEY: &str = " with key ";
/// The key of a SealedSecret without items (a template only), which no key opened.
const NO_KEY: &str = "none";

/// What a status records (see [`record`]).
#[derive(Debug, PartialEq)]
pub struct Recorded<'s> {
    /// The Secret's resourceVersion after the write.
    pub secret_version: &'s str,
    /// The fingerprint of the key that opened the SealedSecret.
    pub key: Option<&'s str>,
}

/// What `status` records for `inputs`, when it says the SealedSecret is synced at `generation`.
pub fn recorded<'s>(
    status: Option<&'s SealedSecretStatus>,
    generation: Option<i64>,
    inputs: &str,
) -> Option<Recorded<'s>> {
    let status = status.filter(|s| s.observed_generation == generation)?;
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    if condition(conditions::SYNCED)?.status != status::TRUE {
        return None;
    }
    let message = condition(conditions::SECRET_WRITTEN)?.message.as_deref()?;
    let (secret_version, rest) = message
        .strip_prefix(RECORD_PREFIX)?
        .split_once(RECORD_INPUTS)?;
    let (recorded_inputs, key) = rest.rsplit_once(RECORD_KEY)?;
    (recorded_inputs == inputs && !secret_version.is_empty()).then_some(Recorded {
        secret_version,
        key: (key != NO_KEY).then_some(key),
    })
}

/// The status to write for `outcome` at `now`, or `None` when the one `ss` has already says it
/// (only timestamps would change). The `Synced` condition comes first (the printer columns read
/// `conditions[0]`), other conditions are kept; `lastTransitionTime` moves only when the status
/// value does; `observedGeneration` is the SealedSecret's generation.
pub fn status(ss: &SealedSecret, outcome: Outcome<'_>, now: &Time) -> Option<SealedSecretStatus> {
    let value = status::of(outcome.synced);
    let current = ss.status.as_ref();
    let previous =
        current.and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::SYNCED));
    let generation = ss.metadata.generation;
    let recorded = current.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == conditions::SECRET_WRITTEN)
    });
    let unchanged = previous.is_some_and(|p| {
        p.status == value
            && p.message.as_deref() == outcome.message
            && p.reason.as_deref() == outcome.reason
    }) && current.and_then(|s| s.observed_generation) == generation
        && (outcome.record.is_none()
            || outcome.record == recorded.and_then(|r| r.message.as_deref()));
    if unchanged {
        return None;
    }
    let transition = match previous {
        Some(p) if p.status == value => p.last_transition_time.clone().or(Some(now.clone())),
        _ => Some(now.clone()),
    };
    let condition = SealedSecretCondition {
        type_: conditions::SYNCED.into(),
        status: value.into(),
        last_update_time: Some(now.clone()),
        last_transition_time: transition,
        reason: outcome.reason.map(str::to_owned),
        message: outcome.message.map(str::to_owned),
    };
    let record = outcome.record.map(|message| SealedSecretCondition {
        type_: conditions::SECRET_WRITTEN.into(),
        status: status::TRUE.into(),
        last_update_time: Some(now.clone()),
        last_transition_time: recorded
            .and_then(|r| r.last_transition_time.clone())
            .or(Some(now.clone())),
        reason: Some(conditions::WRITTEN.into()),
        message: Some(message.to_owned()),
    });
    // Other conditions are kept, the record too unless there is a new one.
    let replaced_record = record.is_some();
    let others = current
        .into_iter()
        .flat_map(|s| s.conditions.iter())
        .filter(|c| {
            c.type_ != conditions::SYNCED
                && !(replaced_record && c.type_ == conditions::SECRET_WRITTEN)
        })
        .cloned();
    Some(SealedSecretStatus {
        observed_generation: generation,
        conditions: std::iter::once(condition)
            .chain(others)
            .chain(record)
            .collect(),
    })
}

fn skips_owner(secret: &Secret) -> bool {
    is_true(
        secret.metadata.annotations.as_ref(),
        SKIP_SET_OWNER_REFERENCES,
    )
}

fn is_controlled_by(secret: &Secret, owner_uid: Option<&str>) -> bool {
    let uid = owner_uid.unwrap_or("-");
    owners(secret)
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// `existing` with the target's data, labels and annotations merged in (the target's winning),
/// and its ownerReferences when `owned`.
fn merged(existing: &Secret, target: &Secret, owned: bool) -> Secret {
    let mut merged = existing.clone();
    let meta = &target.metadata;
    merged
        .data
        .get_or_insert_with(BTreeMap::new)
        .extend(target.data.clone().unwrap_or_default());
    merged
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(meta.labels.clone().unwrap_or_default());
    merged
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(meta.annotations.clone().unwrap_or_default());
    if owned {
        merged
            .metadata
            .owner_references
            .clone_from(&meta.owner_references);
    }
    merged
}

/// Data and type as the API server stores them: an empty map is absent, no type is `Opaque`.
fn same_data_and_type(existing: &Secret, next: &Secret) -> bool {
    fn data(s: &Secret) -> Option<&BTreeMap<String, k8s_openapi::ByteString>> {
        s.data.as_ref().filter(|d| !d.is_empty())
    }
    fn type_(s: &Secret) -> &str {
        s.type_
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or("Opaque")
    }
    data(existing) == data(next) && type_(existing) == type_(next)
}

/// Labels, annotations and ownerReferences, an empty map or list being the same as none.
fn same_metadata(existing: &Secret, next: &Secret) -> bool {
    fn map(m: Option<&BTreeMap<String, String>>) -> Option<&BTreeMap<String, String>> {
        m.filter(|m| !m.is_empty())
    }
    let (a, b) = (&existing.metadata, &next.metadata);
    map(a.labels.as_ref()) == map(b.labels.as_ref())
        && map(a.annotations.as_ref()) == map(b.annotations.as_ref())
        && owners(existing) == owners(next)
}

fn owners(secret: &Secret) -> &[OwnerReference] {
    secret
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    //! Each rule with a Secret that the real unseal produced from a SealedSecret sealed for a
    //! test key, so templates and owner references come from the same code as in the cluster.

    use std::sync::OnceLock;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use keyseal_api::{UnsealOptions, seal_secret, unseal};
    use keyseal_crypto::PrivateKey;

    use super::*;

    const UID: &str = "5f0c-uid-of-the-sealed-secret";

    fn key() -> &'static PrivateKey {
        static KEY: OnceLock<PrivateKey> = OnceLock::new();
        KEY.get_or_init(|| PrivateKey::generate(2048).expect("a test key"))
    }

    fn map(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn data(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, ByteString>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        )
    }

    /// `shop/db` with `password`, and the metadata, type and immutability of `shape`.
    fn secret(shape: impl FnOnce(&mut Secret)) -> Secret {
        let mut s = Secret {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            data: data(&[("password", "hunter2")]),
            ..Secret::default()
        };
        shape(&mut s);
        s
    }

    /// Seals `plain` as keyseal does, gives the SealedSecret the cluster's uid and generation,
    /// lets `template` change its spec, and unseals it as the controller does.
    fn unsealed_with(plain: &Secret, template: impl FnOnce(&mut SealedSecret)) -> Secret {
        let mut ss = seal_secret(plain, key().public_key()).expect("sealed");
        ss.metadata.uid = Some(UID.into());
        ss.metadata.generation = Some(1);
        template(&mut ss);
        let options = UnsealOptions {
            accept_v1_data: true,
            render_templates: true,
        };
        unseal(&ss, &[key()], options).expect("unsealed").secret
    }

    fn unsealed(plain: &Secret) -> Secret {
        unsealed_with(plain, |_| {})
    }

    /// What the API server returns for a Secret created from `target`.
    fn stored(target: &Secret) -> Secret {
        let mut s = target.clone();
        s.metadata.uid = Some("secret-uid".into());
        s.metadata.resource_version = Some("41".into());
        s.metadata.creation_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        s.type_.get_or_insert_with(|| "Opaque".into());
        s
    }

    fn replaced(w: Result<Write, Refusal>) -> Secret {
        match w {
            Ok(Write::Replace(s)) => *s,
            other => panic!("expected a replace, got {other:?}"),
        }
    }

    #[test]
    fn a_new_secret_is_created_from_the_template_with_one_owner_reference() {
        let plain = secret(|s| {
            s.metadata.labels = map(&[("app", "shop")]);
            s.metadata.annotations = map(&[("team", "payments")]);
            s.type_ = Some("kubernetes.io/basic-auth".into());
        });
        let target = target(unsealed(&plain));
        assert_eq!(write(Some(UID), &target, None), Ok(Write::Create));
        assert_eq!(target.metadata.name.as_deref(), Some("db"));
        assert_eq!(target.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(target.metadata.labels, map(&[("app", "shop")]));
        assert_eq!(target.metadata.annotations, map(&[("team", "payments")]));
        assert_eq!(target.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        assert_eq!(target.data, data(&[("password", "hunter2")]));
        let owners = owners(&target);
        assert_eq!(owners.len(), 1, "{owners:?}");
        let o = &owners[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
            ("bitnami.com/v1alpha1", "SealedSecret", "db")
        );
        assert_eq!((o.uid.as_str(), o.controller), (UID, Some(true)));
    }

    #[test]
    fn template_data_is_rendered_from_the_items_and_never_overrides_one() {
        let plain = secret(|_| {});
        let target = target(unsealed_with(&plain, |ss| {
            ss.spec.template.data = Some(BTreeMap::from([
                (
                    "url".into(),
                    Some("postgres://app:{{ .password }}@db".into()),
                ),
                ("password".into(), Some("not this".into())),
            ]));
        }));
        assert_eq!(
            target.data,
            data(&[
                ("password", "hunter2"),
                ("url", "postgres://app:hunter2@db")
            ])
        );
    }

    #[test]
    fn the_secret_it_controls_is_left_alone_when_nothing_changed() {
        let target = target(unsealed(&secret(|_| {})));
        let mut existing = stored(&target);
        // The API server stores empty maps as absent: still the same.
        existing.metadata.labels = Some(BTreeMap::new());
        assert_eq!(
            write(Some(UID), &target, Some(&existing)),
            Ok(Write::Unchanged)
        );
    }

    #[test]
    fn a_change_of_metadata_alone_is_written() {
        let target = target(unsealed(&secret(|s| {
            s.metadata.labels = map(&[("v", "2")])
        })));
        let mut relabelled = stored(&target);
        relabelled.metadata.labels = map(&[("v", "1")]);
        assert_eq!(
            replaced(write(Some(UID), &target, Some(&relabelled)))
                .metadata
                .labels,
            map(&[("v", "2")])
        );
        let mut disowned = stored(&target);
        disowned.metadata.annotations = map(&[(MANAGED, "true")]);
        disowned.metadata.owner_references = None;
        assert_eq!(
            owners(&replaced(write(Some(UID), &target, Some(&disowned)))),
            owners(&target)
        );
    }

    #[test]
    fn the_secret_it_controls_is_replaced_whole() {
        let target = target(unsealed(&secret(|s| {
            s.metadata.labels = map(&[("v", "2")])
        })));
        let mut existing = stored(&target);
        existing.data = data(&[("password", "old"), ("stale", "x")]);
        existing.metadata.labels = map(&[("v", "1"), ("added-by-hand", "y")]);
        existing.metadata.annotations = map(&[("note", "by hand")]);
        let next = replaced(write(Some(UID), &target, Some(&existing)));
        assert_eq!(next.data, target.data, "data replaced, not merged");
        assert_eq!(next.metadata.labels, map(&[("v", "2")]));
        assert_eq!(next.metadata.annotations, None);
        assert_eq!(owners(&next), owners(&target));
        assert_eq!(
            next.metadata.resource_version.as_deref(),
            Some("41"),
            "written over the version read"
        );
    }

    #[test]
    fn a_secret_annotated_managed_is_taken_over() {
        let target = target(unsealed(&secret(|_| {})));
        let existing = secret(|s| {
            s.metadata.annotations = map(&[(MANAGED, "true")]);
            s.metadata.resource_version = Some("7".into());
            s.data = data(&[("password", "old"), ("other", "x")]);
        });
        let next = replaced(write(Some(UID), &target, Some(&existing)));
        assert_eq!(next.data, data(&[("password", "hunter2")]));
        assert_eq!(owners(&next), owners(&target), "owned from now on");
        assert_eq!(owners(&next).len(), 1);
    }

    #[test]
    fn a_secret_annotated_patch_is_merged_into_and_not_owned() {
        let target = target(unsealed(&secret(|s| {
            s.metadata.labels = map(&[("app", "new"), ("tier", "db")]);
            s.metadata.annotations = map(&[("team", "payments")]);
        })));
        let existing = secret(|s| {
            s.metadata.annotations = map(&[(PATCH, "true"), ("kept", "yes")]);
            s.metadata.labels = map(&[("app", "old"), ("hand", "made")]);
            s.data = data(&[("password", "old"), ("username", "app")]);
        });
        let next = replaced(write(Some(UID), &target, Some(&existing)));
        assert_eq!(
            next.data,
            data(&[("password", "hunter2"), ("username", "app")]),
            "merged, the SealedSecret's value winning"
        );
        assert_eq!(
            next.metadata.labels,
            map(&[("app", "new"), ("hand", "made"), ("tier", "db")])
        );
        assert_eq!(
            next.metadata.annotations,
            map(&[(PATCH, "true"), ("kept", "yes"), ("team", "payments")])
        );
        assert!(
            owners(&next).is_empty(),
            "patch alone does not take ownership"
        );
    }

    #[test]
    fn a_secret_annotated_patch_and_managed_is_merged_into_and_owned() {
        let target = target(unsealed(&secret(|_| {})));
        let existing = secret(|s| {
            s.metadata.annotations = map(&[(PATCH, "true"), (MANAGED, "true")]);
            s.data = data(&[("username", "app")]);
        });
        let next = replaced(write(Some(UID), &target, Some(&existing)));
        assert_eq!(
            next.data,
            data(&[("password", "hunter2"), ("username", "app")])
        );
        assert_eq!(owners(&next), owners(&target));
        // Owned now, it is still merged into on the next change, not replaced.
        let mut again = next.clone();
        again.data = data(&[("password", "older"), ("username", "app")]);
        let next = replaced(write(Some(UID), &target, Some(&again)));
        assert_eq!(
            next.data,
            data(&[("password", "hunter2"), ("username", "app")])
        );
    }

    #[test]
    fn a_secret_of_someone_else_is_refused_and_untouched() {
        let target = target(unsealed(&secret(|_| {})));
        let plain = secret(|s| s.metadata.annotations = map(&[(MANAGED, "false")]));
        let refusal = write(Some(UID), &target, Some(&plain)).unwrap_err();
        assert_eq!(refusal, Refusal::Unmanaged("db".into()));
        assert_eq!(
            refusal.to_string(),
            r#"Resource "db" already exists and is not managed by SealedSecret"#,
            "upstream's message"
        );
        // Controlled by another SealedSecret of the same name (deleted and recreated: a new
        // uid), or owned without being the controller: not this one's either.
        for owner in [("another-uid", Some(true)), (UID, None)] {
            let mut other = stored(&target);
            other.metadata.owner_references = Some(vec![OwnerReference {
                uid: owner.0.into(),
                controller: owner.1,
                ..owners(&target)[0].clone()
            }]);
            assert!(matches!(
                write(Some(UID), &target, Some(&other)),
                Err(Refusal::Unmanaged(_))
            ));
        }
    }

    #[test]
    fn an_immutable_secret_refuses_a_change_of_data_or_type() {
        let plain = secret(|s| s.immutable = Some(true));
        let target = target(unsealed(&plain));
        assert_eq!(target.immutable, Some(true), "immutable from the template");
        let mut existing = stored(&target);
        existing.data = data(&[("password", "old")]);
        let refusal = write(Some(UID), &target, Some(&existing)).unwrap_err();
        assert_eq!(refusal, Refusal::Immutable);
        assert!(
            refusal
                .to_string()
                .contains("the target Secret is immutable")
        );

        let mut retyped = stored(&target);
        retyped.type_ = Some("kubernetes.io/basic-auth".into());
        assert_eq!(
            write(Some(UID), &target, Some(&retyped)),
            Err(Refusal::Immutable)
        );
    }

    #[test]
    fn an_immutable_secret_takes_new_labels_and_stays_immutable() {
        let target = target(unsealed(&secret(|s| {
            s.metadata.labels = map(&[("v", "2")]);
        })));
        let mut existing = stored(&target);
        existing.immutable = Some(true);
        assert_eq!(
            write(Some(UID), &target, Some(&existing)),
            Ok(Write::Unchanged),
            "nothing to change"
        );
        existing.metadata.labels = map(&[("v", "1")]);
        let next = replaced(write(Some(UID), &target, Some(&existing)));
        assert_eq!(next.metadata.labels, map(&[("v", "2")]));
        assert_eq!(next.immutable, Some(true), "immutable cannot be unset");
    }

    #[test]
    fn a_template_that_makes_the_secret_immutable_is_written() {
        let target = target(unsealed(&secret(|s| s.immutable = Some(true))));
        let mut existing = stored(&target);
        existing.immutable = None;
        let next = replaced(write(Some(UID), &target, Some(&existing)));
        assert_eq!(next.immutable, Some(true));
    }

    #[test]
    fn skip_set_owner_references_writes_a_managed_secret_it_can_find_again() {
        let plain = secret(|s| {
            s.metadata.annotations = map(&[(SKIP_SET_OWNER_REFERENCES, "true")]);
        });
        let target = target(unsealed(&plain));
        assert!(owners(&target).is_empty(), "no ownerReference");
        assert_eq!(
            target.metadata.annotations,
            map(&[(MANAGED, "true"), (SKIP_SET_OWNER_REFERENCES, "true")])
        );
        // The next reconcile recognises it (upstream fails here: COMPAT §9).
        let existing = stored(&target);
        assert_eq!(
            write(Some(UID), &target, Some(&existing)),
            Ok(Write::Unchanged)
        );
        // Managed without owner: a patch keeps it unowned.
        let mut patched = stored(&target);
        patched
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(PATCH.into(), "true".into());
        patched.data = data(&[("password", "old")]);
        assert!(owners(&replaced(write(Some(UID), &target, Some(&patched)))).is_empty());
    }

    #[test]
    fn a_deleted_secret_is_created_again() {
        // The deletion watch queues the SealedSecret (see `recreate_on_delete`); then there is
        // no Secret, and the same target is created.
        let target = target(unsealed(&secret(|_| {})));
        assert_eq!(
            write(Some(UID), &target, Some(&stored(&target))),
            Ok(Write::Unchanged)
        );
        assert_eq!(write(Some(UID), &target, None), Ok(Write::Create));
    }

    fn sealed_secret(generation: i64, conditions: Vec<SealedSecretCondition>) -> SealedSecret {
        let mut ss = seal_secret(&secret(|_| {}), key().public_key()).expect("sealed");
        ss.metadata.generation = Some(generation);
        ss.status = Some(SealedSecretStatus {
            observed_generation: Some(generation - 1),
            conditions,
        });
        ss
    }

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn failed<'a>(message: &'a str) -> Outcome<'a> {
        Outcome {
            synced: false,
            reason: Some(conditions::reason::UNMANAGED),
            message: Some(message),
            record: None,
        }
    }

    #[test]
    fn the_status_names_the_generation_and_puts_synced_first() {
        let ready = SealedSecretCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..SealedSecretCondition::default()
        };
        let ss = sealed_secret(3, vec![ready.clone()]);
        let status = status(&ss, Outcome::synced(None), &at(100)).expect("a status to write");
        assert_eq!(status.observed_generation, Some(3));
        let synced = &status.conditions[0];
        assert_eq!(
            (synced.type_.as_str(), synced.status.as_str()),
            ("Synced", "True")
        );
        assert_eq!(synced.last_update_time, Some(at(100)));
        assert_eq!(synced.last_transition_time, Some(at(100)));
        assert_eq!(
            (synced.reason.as_deref(), synced.message.as_deref()),
            (None, None)
        );
        assert_eq!(status.conditions[1..], [ready], "other conditions kept");
    }

    #[test]
    fn the_same_status_is_not_written_again() {
        let mut ss = sealed_secret(3, vec![]);
        ss.status = status(&ss, failed("no"), &at(100));
        assert_eq!(
            status(&ss, failed("no"), &at(200)),
            None,
            "only timestamps would move"
        );
        // Any change is written: message, value, or a new generation.
        assert!(status(&ss, failed("other"), &at(200)).is_some());
        assert!(status(&ss, Outcome::synced(None), &at(200)).is_some());
        ss.metadata.generation = Some(4);
        assert!(status(&ss, failed("no"), &at(200)).is_some());
    }

    #[test]
    fn the_transition_time_moves_only_when_the_value_does() {
        let mut ss = sealed_secret(3, vec![]);
        ss.status = status(&ss, failed("first"), &at(100));
        let again = status(&ss, failed("second"), &at(200)).unwrap();
        let c = &again.conditions[0];
        assert_eq!(c.last_transition_time, Some(at(100)), "still False");
        assert_eq!(c.last_update_time, Some(at(200)));
        assert_eq!(c.message.as_deref(), Some("second"));
        assert_eq!(c.reason.as_deref(), Some("Unmanaged"));
        ss.status = Some(again);
        let fixed = status(&ss, Outcome::synced(None), &at(300)).unwrap();
        assert_eq!(fixed.conditions[0].last_transition_time, Some(at(300)));
        assert_eq!(fixed.conditions.len(), 1, "one Synced condition");
    }

    const INPUTS: &str = "5f0c|3|strict|v1-data=true";

    #[test]
    fn a_synced_status_records_the_secret_written_after_synced() {
        let mut ss = sealed_secret(3, vec![]);
        let written = record(INPUTS, "1041", Some("SHA256:k1"));
        let first = status(&ss, Outcome::synced(Some(&written)), &at(100)).unwrap();
        let types: Vec<&str> = first.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["Synced", "keyseal.dev/SecretWritten"],
            "Synced first"
        );
        let r = &first.conditions[1];
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref()),
            ("True", Some("Written"))
        );
        ss.status = Some(first);
        assert_eq!(
            recorded(ss.status.as_ref(), Some(3), INPUTS),
            Some(Recorded {
                secret_version: "1041",
                key: Some("SHA256:k1")
            })
        );
        // The same record is not written again; a new one is, and replaces it.
        assert_eq!(status(&ss, Outcome::synced(Some(&written)), &at(200)), None);
        assert_eq!(status(&ss, Outcome::synced(None), &at(200)), None);
        let rewritten = record(INPUTS, "2077", None);
        let next = status(&ss, Outcome::synced(Some(&rewritten)), &at(300)).unwrap();
        assert_eq!(next.conditions.len(), 2);
        assert_eq!(
            next.conditions[1].message.as_deref(),
            Some(rewritten.as_str())
        );
        assert_eq!(next.conditions[1].last_transition_time, Some(at(100)));
        // A failure keeps the record, which no longer counts (not synced).
        ss.status = status(&ss, failed("no"), &at(400));
        assert_eq!(ss.status.as_ref().unwrap().conditions.len(), 2);
        assert_eq!(recorded(ss.status.as_ref(), Some(3), INPUTS), None);
    }

    #[test]
    fn a_record_counts_only_for_its_inputs_at_the_synced_generation() {
        let mut ss = sealed_secret(3, vec![]);
        let written = record(INPUTS, "1041", None);
        ss.status = status(&ss, Outcome::synced(Some(&written)), &at(100));
        let status = ss.status.as_ref();
        assert_eq!(
            recorded(status, Some(3), INPUTS),
            Some(Recorded {
                secret_version: "1041",
                key: None
            })
        );
        assert_eq!(recorded(status, Some(4), INPUTS), None, "new generation");
        for other in [
            "5f0c|4|strict|v1-data=true",
            "5f0c|3|cluster-wide|v1-data=true",
            "5f0c|3|strict|v1-data=false",
            "5f0c|3|strict",
        ] {
            assert_eq!(recorded(status, Some(3), other), None, "{other}");
        }
        assert_eq!(recorded(None, Some(3), INPUTS), None);
        // Written by upstream's controller: Synced, no record.
        let upstream = sealed_secret(3, vec![]);
        let synced_only = super::status(&upstream, Outcome::synced(None), &at(100));
        assert_eq!(recorded(synced_only.as_ref(), Some(3), INPUTS), None);
        // A record of the wrong shape is no record.
        let mut odd = ss.status.clone().unwrap();
        odd.conditions[1].message = Some(
            "Secret resourceVersion , unsealed from 5f0c|3|strict|v1-data=true with key none"
                .into(),
        );
        assert_eq!(recorded(Some(&odd), Some(3), INPUTS), None);
    }
}
