//! Label and annotation keys, identical to upstream's so either controller reads the other's.

/// Group of the custom resource.
pub const GROUP: &str = "bitnami.com";
/// `apiVersion` of the custom resource.
pub const API_VERSION: &str = "bitnami.com/v1alpha1";
/// Kind of the custom resource.
pub const KIND: &str = "SealedSecret";

/// Set to `"true"` on a SealedSecret sealed namespace-wide.
pub const NAMESPACE_WIDE: &str = "sealedsecrets.bitnami.com/namespace-wide";
/// Set to `"true"` on a SealedSecret sealed cluster-wide (wins over namespace-wide).
pub const CLUSTER_WIDE: &str = "sealedsecrets.bitnami.com/cluster-wide";
/// On an existing Secret: the controller may take it over.
pub const MANAGED: &str = "sealedsecrets.bitnami.com/managed";
/// On an existing Secret: the controller merges into it instead of replacing it.
pub const PATCH: &str = "sealedsecrets.bitnami.com/patch";
/// In a template: do not set an ownerReference on the unsealed Secret.
pub const SKIP_SET_OWNER_REFERENCES: &str = "sealedsecrets.bitnami.com/skip-set-owner-references";

/// Label marking a Secret as a sealing key; value `active` means "load it".
pub const SEALING_KEY_LABEL: &str = "sealedsecrets.bitnami.com/sealed-secrets-key";
/// The value of [`SEALING_KEY_LABEL`] for keys in use.
pub const SEALING_KEY_ACTIVE: &str = "active";

/// Annotations written by `kubectl apply` and kubecfg that hold a full copy of the object: they
/// would leak the plaintext if copied into a SealedSecret.
pub const LAST_APPLIED: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "kubecfg.ksonnet.io/last-applied-configuration",
];

/// True when `map[key]` is exactly `"true"`, the only value upstream honours.
pub fn is_true(map: Option<&std::collections::BTreeMap<String, String>>, key: &str) -> bool {
    map.and_then(|m| m.get(key)).is_some_and(|v| v == "true")
}
