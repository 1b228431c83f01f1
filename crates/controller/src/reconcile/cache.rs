//! The reconciler's cache of SealedSecrets: what it keeps of each, and the inputs that decide
//! whether one must be unsealed again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keyseal_api::{Scope, SealedSecret, SealedSecretSpec, SealedSecretStatus};

pub(super) fn inputs_of(meta: &ObjectMeta) -> String {
    let scope = Scope::from_annotations(meta.annotations.as_ref());
    format!(
        "{}|{}|{}",
        meta.uid.as_deref().unwrap_or(""),
        meta.generation.unwrap_or(0),
        scope
    )
}

/// A SealedSecret as the controller's cache keeps it: metadata and status parsed, the spec as
/// the JSON text the API server sent, parsed only to unseal. Deciding whether anything is to be
/// done needs no spec, and the text is about half the size of the parsed tree (k8s-openapi's
/// template `ObjectMeta` and the maps of ciphertexts), which is most of the cache. A spec that
/// does not parse fails that one SealedSecret (status and event), not the watch of all of them.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct CachedSealedSecret {
    pub(super) metadata: ObjectMeta,
    spec: Box<serde_json::value::RawValue>,
    #[serde(default)]
    status: Option<SealedSecretStatus>,
}

impl kube::Resource for CachedSealedSecret {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;
    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        SealedSecret::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        SealedSecret::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        SealedSecret::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        SealedSecret::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CachedSealedSecret {
    /// Its status, as the API server sent it.
    pub(super) fn status(&self) -> Option<&SealedSecretStatus> {
        self.status.as_ref()
    }

    /// The whole SealedSecret, and why its spec cannot be read if it cannot (the spec is then
    /// empty: the object still serves for its status and event). The reason quotes nothing from
    /// the spec.
    pub(super) fn parse(&self) -> (SealedSecret, Option<String>) {
        let (spec, unreadable) = match serde_json::from_str(self.spec.get()) {
            Ok(spec) => (spec, None),
            Err(e) => (
                SealedSecretSpec::default(),
                Some(format!(
                    "spec cannot be read as a SealedSecret spec ({:?} error at column {}); fix the object",
                    e.classify(),
                    e.column()
                )),
            ),
        };
        let ss = SealedSecret {
            metadata: self.metadata.clone(),
            spec,
            status: self.status.clone(),
        };
        (ss, unreadable)
    }
}

/// What the SealedSecret cache does without: the reconciler reads the name, namespace, uid,
/// generation, annotations (scope), spec and status; a status write goes to the status
/// subresource, where the API server takes nothing but the status from the body.
pub(super) fn slim_for_cache(ss: &mut CachedSealedSecret) {
    ss.metadata.managed_fields = None;
    if let Some(annotations) = ss.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// kubectl's client-side apply keeps a copy of the whole object here (encryptedData included).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(spec: &str) -> CachedSealedSecret {
        serde_json::from_str(&format!(
            r#"{{"apiVersion":"bitnami.com/v1alpha1","kind":"SealedSecret",
                "metadata":{{"name":"db","namespace":"shop","uid":"u-1","generation":3,
                  "annotations":{{"sealedsecrets.bitnami.com/namespace-wide":"true"}}}},
                "spec":{spec},
                "status":{{"observedGeneration":2,"conditions":[]}}}}"#
        ))
        .expect("a cache entry")
    }

    #[test]
    fn the_cache_keeps_the_spec_as_text_and_parses_it_whole() {
        let c = cached(
            r#"{"encryptedData":{"password":"AgBy"},"template":{"type":"Opaque","data":{"url":"{{ .password }}"}}}"#,
        );
        assert_eq!(inputs_of(&c.metadata), "u-1|3|namespace-wide");
        let (ss, unreadable) = c.parse();
        assert_eq!(unreadable, None);
        assert_eq!(ss.spec.encrypted_data["password"], "AgBy");
        assert_eq!(ss.spec.template.type_.as_deref(), Some("Opaque"));
        assert_eq!(ss.metadata.name.as_deref(), Some("db"));
        assert_eq!(ss.status.and_then(|s| s.observed_generation), Some(2));
    }

    #[test]
    fn a_spec_of_the_wrong_shape_fails_that_object_without_quoting_it() {
        let c = cached(r#"{"template":{"type":["not-a-string-value-123"]}}"#);
        let (ss, unreadable) = c.parse();
        let message = unreadable.expect("wrong shape");
        assert_eq!(
            ss.metadata.name.as_deref(),
            Some("db"),
            "named for its status"
        );
        assert!(message.contains("spec cannot be read"), "{message}");
        assert!(!message.contains("not-a-string-value-123"), "{message}");
    }
}
