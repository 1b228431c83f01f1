//! `SealedSecret` → `Secret`, with upstream's rules for metadata, ownership, templates and the
//! legacy `spec.data` format (COMPAT §3, §5).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use keyseal_crypto::{CryptoError, PrivateKey, decode_base64, open};

use crate::annotations::{API_VERSION, KIND, SKIP_SET_OWNER_REFERENCES, is_true};
use crate::{Scope, SealedSecret, strip_server_fields};

/// What unsealing may do.
#[derive(Debug, Clone, Copy)]
pub struct UnsealOptions {
    /// Accept the deprecated v1 `spec.data` format (`--accept-deprecated-v1-data`, default on).
    pub accept_v1_data: bool,
    /// Render `spec.template.data`. Off for `/v1/verify`: an unauthenticated template would make
    /// the endpoint a decryption oracle.
    pub render_templates: bool,
}

impl Default for UnsealOptions {
    fn default() -> Self {
        Self {
            accept_v1_data: true,
            render_templates: true,
        }
    }
}

/// Item name → index of the key that opened it.
pub type KeyIndices = BTreeMap<String, usize>;

/// An unsealed Secret plus which key opened each item.
pub struct Unsealed {
    /// The Secret to write. Its data is plaintext: never log it.
    pub secret: Secret,
    /// Item → index (into the keys offered) of the key that opened it; `""` for legacy data.
    pub key_indices: KeyIndices,
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealed")
            .field("name", &self.secret.metadata.name)
            .field("items", &self.key_indices.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why a SealedSecret could not be unsealed. Messages name items, never values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsealError {
    /// No key opened these items (upstream's wording and per-item aggregation).
    #[error("no key could decrypt secret ({}){}", .items.join(", "), match .not_tried {
        0 => String::new(),
        n => format!("; {n} more items were not tried"),
    })]
    NoKeyCouldDecrypt {
        /// Items that did not open, sorted: at most [`MAX_UNDECRYPTABLE_ITEMS`].
        items: Vec<String>,
        /// Items left untried once that many had failed.
        not_tried: usize,
    },
    /// These items are not base64.
    #[error("illegal base64 data in encryptedData ({})", .items.join(", "))]
    InvalidBase64 {
        /// Items that are not base64, sorted.
        items: Vec<String>,
    },
    /// Both the legacy and the current format are set.
    #[error(
        "cannot use the field 'encryptedData' and the deprecated field 'data' at the same time"
    )]
    BothDataFields,
    /// Legacy data is present but not accepted.
    #[error("using deprecated 'data' field, use 'encryptedData' or flip the feature flag")]
    V1DataDisabled,
    /// The legacy data opened but is not a JSON Secret.
    #[error("the deprecated 'data' field does not hold a Secret")]
    V1DataNotASecret,
    /// A `template.data` entry failed to render.
    #[error("template data ({}): {}", .item, .message)]
    Template {
        /// The template item.
        item: String,
        /// The template engine's message (positions and names only).
        message: String,
    },
}

impl UnsealError {
    /// A fixed label for metrics and condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            UnsealError::NoKeyCouldDecrypt { .. } => "NoKeyCouldDecrypt",
            UnsealError::InvalidBase64 { .. } => "InvalidEncoding",
            UnsealError::BothDataFields
            | UnsealError::V1DataDisabled
            | UnsealError::V1DataNotASecret => "InvalidSpec",
            UnsealError::Template { .. } => "TemplateError",
        }
    }
}

fn label_of(ss: &SealedSecret) -> Vec<u8> {
    let scope = Scope::from_annotations(ss.metadata.annotations.as_ref());
    scope.label(
        ss.metadata.namespace.as_deref().unwrap_or(""),
        ss.metadata.name.as_deref().unwrap_or(""),
    )
}

/// How many items that no key opens are tried before unsealing gives up on the rest. Each costs
/// one RSA private-key operation per key, so a SealedSecret of thousands of undecryptable items
/// (anyone who may create one can write it) would otherwise cost thousands times the number of
/// keys; upstream tries them all. Real objects that fail, fail on every item (sealed for another
/// cluster or name), and a handful of names says so.
pub const MAX_UNDECRYPTABLE_ITEMS: usize = 8;

/// Opens every item, returning plaintexts and the key index per item.
fn open_items(
    ss: &SealedSecret,
    keys: &[&PrivateKey],
) -> Result<(BTreeMap<String, Vec<u8>>, KeyIndices), UnsealError> {
    // Every value is decoded before any is decrypted: a bad one fails the object with no RSA work.
    let mut sealed = Vec::with_capacity(ss.spec.encrypted_data.len());
    let mut bad_base64 = Vec::new();
    for (item, value) in &ss.spec.encrypted_data {
        match decode_base64(value) {
            Ok(bytes) => sealed.push((item, bytes)),
            Err(_) => bad_base64.push(item.clone()),
        }
    }
    if !bad_base64.is_empty() {
        return Err(UnsealError::InvalidBase64 { items: bad_base64 });
    }
    let label = label_of(ss);
    let (mut plain, mut indices) = (BTreeMap::new(), BTreeMap::new());
    let mut undecryptable = Vec::new();
    // Items of one SealedSecret are almost always sealed with the same key: once an item opens,
    // its key is tried first for the rest (indices reported are into `keys` as given).
    let mut order: Vec<usize> = (0..keys.len()).collect();
    for (i, (item, bytes)) in sealed.iter().enumerate() {
        if undecryptable.len() == MAX_UNDECRYPTABLE_ITEMS {
            return Err(UnsealError::NoKeyCouldDecrypt {
                items: undecryptable,
                not_tried: sealed.len() - i,
            });
        }
        match open(order.iter().map(|&i| keys[i]), &label, bytes) {
            Ok(opened) => {
                let index = order.remove(opened.key_index);
                order.insert(0, index);
                indices.insert((*item).clone(), index);
                plain.insert((*item).clone(), opened.plaintext.to_vec());
            }
            Err(_) => undecryptable.push((*item).clone()),
        }
    }
    if !undecryptable.is_empty() {
        return Err(UnsealError::NoKeyCouldDecrypt {
            items: undecryptable,
            not_tried: 0,
        });
    }
    Ok((plain, indices))
}

/// Checks that every value opens, without rendering templates (`/v1/verify`, `--validate`).
pub fn verify(
    ss: &SealedSecret,
    keys: &[&PrivateKey],
    accept_v1_data: bool,
) -> Result<(), UnsealError> {
    unseal(
        ss,
        keys,
        UnsealOptions {
            accept_v1_data,
            render_templates: false,
        },
    )
    .map(|_| ())
}

/// Unseals `ss` with `keys`, tried in the order given.
pub fn unseal(
    ss: &SealedSecret,
    keys: &[&PrivateKey],
    options: UnsealOptions,
) -> Result<Unsealed, UnsealError> {
    let template = &ss.spec.template;
    let mut secret = Secret::default();
    let key_indices;

    if let Some(legacy) = ss
        .spec
        .data
        .as_ref()
        .filter(|_| ss.spec.encrypted_data.is_empty())
    {
        if !options.accept_v1_data {
            return Err(UnsealError::V1DataDisabled);
        }
        let opened =
            open(keys.iter().copied(), &label_of(ss), &legacy.0).map_err(|_: CryptoError| {
                UnsealError::NoKeyCouldDecrypt {
                    items: vec!["data".to_owned()],
                    not_tried: 0,
                }
            })?;
        // serde's messages can quote the offending value, so none of them is passed on.
        secret =
            serde_json::from_slice(&opened.plaintext).map_err(|_| UnsealError::V1DataNotASecret)?;
        if let Some(string_data) = secret.string_data.take() {
            let data = secret.data.get_or_insert_with(BTreeMap::new);
            data.extend(
                string_data
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes()))),
            );
        }
        key_indices = BTreeMap::from([(String::new(), opened.key_index)]);
    } else {
        if ss.spec.data.is_some() {
            return Err(UnsealError::BothDataFields);
        }
        let (mut data, indices) = open_items(ss, keys)?;
        key_indices = indices;
        if let Some(metadata) = &template.metadata {
            secret.metadata = metadata.clone();
        }
        secret.type_ = template.type_.clone();
        secret.immutable = template.immutable;
        if options.render_templates {
            render_template_data(ss, &mut data)?;
        }
        secret.data = Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
    }

    secret.metadata = strip_server_fields(std::mem::take(&mut secret.metadata));
    secret.metadata.name = ss.metadata.name.clone();
    secret.metadata.namespace = ss.metadata.namespace.clone();
    // Without a uid (a SealedSecret read from a file, as in recovery) there is no owner to point
    // at, and the API server rejects an ownerReference with an empty uid.
    let has_uid = ss.metadata.uid.as_deref().is_some_and(|u| !u.is_empty());
    let skip = is_true(
        secret.metadata.annotations.as_ref(),
        SKIP_SET_OWNER_REFERENCES,
    );
    if has_uid && !skip {
        secret.metadata.owner_references = Some(vec![owner_reference(&ss.metadata)]);
    }
    Ok(Unsealed {
        secret,
        key_indices,
    })
}

/// The ownerReference tying an unsealed Secret to its SealedSecret.
pub fn owner_reference(meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Upstream semantics: the template context is the decrypted items (plus, for names not sealed,
/// the raw template text); a `null` entry drops the item; a rendered entry never overrides a
/// sealed item of the same name.
fn render_template_data(
    ss: &SealedSecret,
    data: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), UnsealError> {
    let Some(templates) = ss.spec.template.data.as_ref().filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let mut context = data.clone();
    for (item, text) in templates {
        if let Some(text) = text {
            context
                .entry(item.clone())
                .or_insert_with(|| text.clone().into_bytes());
        }
    }
    let mut rendered = BTreeMap::new();
    for (item, text) in templates {
        let Some(text) = text else {
            data.remove(item);
            continue;
        };
        let out = keyseal_template::render(text, &context).map_err(|e| UnsealError::Template {
            item: item.clone(),
            message: e.to_string(),
        })?;
        if !ss.spec.encrypted_data.contains_key(item) {
            rendered.insert(item.clone(), out);
        }
    }
    data.extend(rendered);
    Ok(())
}

/// Re-seals every value of `ss` to `to` (the newest key), keeping name, namespace, scope and the
/// template as they are. Rendered template data is *not* baked into `encryptedData` (upstream's
/// `/v1/rotate` does that; keyseal keeps templates as templates).
pub fn reseal(
    ss: &SealedSecret,
    keys: &[&PrivateKey],
    to: &keyseal_crypto::PublicKey,
) -> Result<SealedSecret, UnsealError> {
    let label = label_of(ss);
    let reseal_one = |bytes: &[u8]| -> Result<Vec<u8>, ()> {
        let opened = open(keys.iter().copied(), &label, bytes).map_err(|_| ())?;
        keyseal_crypto::seal(to, &label, &opened.plaintext).map_err(|_| ())
    };
    let mut out = ss.clone();
    out.status = None;
    if let Some(legacy) = ss
        .spec
        .data
        .as_ref()
        .filter(|_| ss.spec.encrypted_data.is_empty())
    {
        let sealed = reseal_one(&legacy.0).map_err(|()| UnsealError::NoKeyCouldDecrypt {
            items: vec!["data".to_owned()],
            not_tried: 0,
        })?;
        out.spec.data = Some(ByteString(sealed));
        return Ok(out);
    }
    // The same opening as unsealing: base64 checked first, at most MAX_UNDECRYPTABLE_ITEMS tried
    // (`/v1/rotate` is as open to hostile input as the reconciler).
    let (plain, _) = open_items(ss, keys)?;
    for (item, value) in plain {
        let sealed = keyseal_crypto::seal(to, &label, &value).map_err(|_| {
            UnsealError::NoKeyCouldDecrypt {
                items: vec![item.clone()],
                not_tried: 0,
            }
        })?;
        out.spec
            .encrypted_data
            .insert(item, keyseal_crypto::encode_base64(&sealed));
    }
    Ok(out)
}
