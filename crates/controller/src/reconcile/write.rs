//! Carrying out the decisions of `decide.rs` against the API server: unsealing with the key
//! ring, writing the Secret, writing the status.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keyseal_api::{SealedSecret, UnsealOptions, unseal};
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::decide::{self, Outcome, Write};
use super::{Context, ReconcileError, classify, object_key};
use crate::conditions::error_label;

/// What [`sync`] did.
pub(super) struct Written {
    /// The fingerprint of the key that opened the SealedSecret (none for one without items).
    pub key: Option<String>,
    /// The Secret's resourceVersion after the write (or as found, when nothing had to change).
    pub secret_version: Option<String>,
}

/// Unseals and writes the Secret.
pub(super) async fn sync(
    ss: &SealedSecret,
    ctx: &Context,
    hint: Option<&str>,
) -> Result<Written, ReconcileError> {
    let options = UnsealOptions {
        accept_v1_data: ctx.settings.accept_v1_data,
        render_templates: true,
    };
    let permit = ctx
        .rsa
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore open");
    // Ordered only now: on a cold start many reconciles queue for the permit, and each should
    // profit from what the ones before it learnt about which key opens SealedSecrets.
    let keys = {
        let uses = ctx.key_uses.lock().expect("key uses lock");
        ctx.ring.ordered_for(hint, &uses)
    };
    if keys.is_empty() {
        return Err(ReconcileError::NoKeys);
    }
    let owned = ss.clone();
    let keys_for_task = keys.clone();
    ctx.metrics.unseal_requests.inc();
    let unsealed = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let refs: Vec<&keyseal_crypto::PrivateKey> = keys_for_task.iter().map(|k| &k.key).collect();
        unseal(&owned, &refs, options)
    })
    .await
    .expect("unseal task")?;
    // The key that opened most items (normally all of them).
    let mut tally: HashMap<usize, usize> = HashMap::new();
    for index in unsealed.key_indices.values() {
        *tally.entry(*index).or_default() += 1;
    }
    let used_key = tally
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(i, _)| keys[i].fingerprint.clone());
    if let Some(fingerprint) = &used_key {
        ctx.count_use(fingerprint);
    }
    let secret_version = write_secret(ss, ctx, unsealed.secret).await?;
    ctx.retries.reset(&object_key(
        &ss.namespace().unwrap_or_default(),
        &ss.name_any(),
    ));
    Ok(Written {
        key: used_key,
        secret_version,
    })
}

/// The resourceVersion of the Secret `namespace/name`, if there is one (its metadata only: no
/// value is read).
pub(super) async fn secret_version(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let meta = api.get_metadata_opt(name).await.map_err(classify)?;
    Ok(meta.and_then(|m| m.metadata.resource_version))
}

/// Writes the Secret `unsealed` as `decide::write` says; returns its resourceVersion after
/// that. Creates first: the common case (a new SealedSecret, or a start-up sweep) then costs
/// one request instead of a GET and a create; an existing Secret answers 409 and is read then.
async fn write_secret(
    ss: &SealedSecret,
    ctx: &Context,
    unsealed: Secret,
) -> Result<Option<String>, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ss.namespace().unwrap_or_default());
    let target = decide::target(unsealed);
    let owner = ss.metadata.uid.as_deref();
    match api.create(&PostParams::default(), &target).await {
        Ok(created) => {
            crate::startup::secret_written();
            return Ok(created.metadata.resource_version);
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(classify(e)),
    }
    let existing = api.get(&ss.name_any()).await.map_err(classify)?;
    let written = match decide::write(owner, &target, Some(&existing))? {
        Write::Replace(next) => {
            let replaced = api
                .replace(&ss.name_any(), &PostParams::default(), &next)
                .await
                .map_err(classify)?;
            crate::startup::secret_written();
            replaced
        }
        Write::Unchanged => existing,
        // Gone between the create and the read: the deletion watch queues it again.
        Write::Create => return Ok(None),
    };
    Ok(written.metadata.resource_version)
}

/// Writes the Synced condition for `outcome` (unless `--update-status=false`) when
/// `decide::status` finds something to change. A PUT on the status subresource: upstream's RBAC
/// grants `update` there, not `patch`.
pub(super) async fn write_status(
    ss: &SealedSecret,
    ctx: &Context,
    outcome: Outcome<'_>,
) -> Result<(), ReconcileError> {
    if !ctx.settings.update_status {
        return Ok(());
    }
    let Some(status) = decide::status(ss, outcome, &Time(jiff::Timestamp::now())) else {
        return Ok(());
    };
    let mut updated = ss.clone();
    updated.status = Some(status);
    let namespace = ss.namespace().unwrap_or_default();
    let api: Api<SealedSecret> = Api::namespaced(ctx.client.clone(), &namespace);
    match api
        .replace_status(&ss.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => {
            ctx.metrics.error(error_label::STATUS, &namespace);
            Err(ReconcileError::Kube(e))
        }
    }
}
