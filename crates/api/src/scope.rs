//! Sealing scopes and the OAEP label each implies (COMPAT §2).

use std::collections::BTreeMap;

use crate::annotations::{CLUSTER_WIDE, NAMESPACE_WIDE, is_true};

/// Where a sealed value may be unsealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// Only as a Secret with the same namespace and name. Label `"<namespace>/<name>"`.
    #[default]
    Strict,
    /// As any Secret in the same namespace. Label `"<namespace>"`.
    NamespaceWide,
    /// Anywhere. Empty label.
    ClusterWide,
}

impl Scope {
    /// All scopes, narrowest first.
    pub const ALL: [Scope; 3] = [Scope::Strict, Scope::NamespaceWide, Scope::ClusterWide];

    /// The scope recorded in `annotations`; cluster-wide wins if both are `"true"`.
    pub fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> Self {
        if is_true(annotations, CLUSTER_WIDE) {
            Scope::ClusterWide
        } else if is_true(annotations, NAMESPACE_WIDE) {
            Scope::NamespaceWide
        } else {
            Scope::Strict
        }
    }

    /// Rewrites the scope annotations of `annotations` to record `self` (removing stale ones).
    pub fn write_annotations(self, annotations: &mut BTreeMap<String, String>) {
        annotations.remove(NAMESPACE_WIDE);
        annotations.remove(CLUSTER_WIDE);
        match self {
            Scope::Strict => {}
            Scope::NamespaceWide => {
                annotations.insert(NAMESPACE_WIDE.to_owned(), "true".to_owned());
            }
            Scope::ClusterWide => {
                annotations.insert(CLUSTER_WIDE.to_owned(), "true".to_owned());
            }
        }
    }

    /// The OAEP label for a value sealed in this scope for `namespace/name`.
    pub fn label(self, namespace: &str, name: &str) -> Vec<u8> {
        match self {
            Scope::Strict => format!("{namespace}/{name}").into_bytes(),
            Scope::NamespaceWide => namespace.as_bytes().to_vec(),
            Scope::ClusterWide => Vec::new(),
        }
    }

    /// The name used on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Strict => "strict",
            Scope::NamespaceWide => "namespace-wide",
            Scope::ClusterWide => "cluster-wide",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "strict" => Ok(Scope::Strict),
            "namespace-wide" => Ok(Scope::NamespaceWide),
            "cluster-wide" => Ok(Scope::ClusterWide),
            _ => Err("must be one of: strict, namespace-wide, cluster-wide".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_exact_true_counts_and_cluster_wide_wins() {
        assert_eq!(Scope::from_annotations(None), Scope::Strict);
        assert_eq!(
            Scope::from_annotations(Some(&annotations(&[(NAMESPACE_WIDE, "True")]))),
            Scope::Strict
        );
        assert_eq!(
            Scope::from_annotations(Some(&annotations(&[(NAMESPACE_WIDE, "true")]))),
            Scope::NamespaceWide
        );
        assert_eq!(
            Scope::from_annotations(Some(&annotations(&[
                (NAMESPACE_WIDE, "true"),
                (CLUSTER_WIDE, "true")
            ]))),
            Scope::ClusterWide
        );
        assert_eq!(
            Scope::from_annotations(Some(&annotations(&[(CLUSTER_WIDE, "yes")]))),
            Scope::Strict
        );
    }

    #[test]
    fn labels_and_annotation_round_trip() {
        assert_eq!(Scope::Strict.label("ns", "n"), b"ns/n");
        assert_eq!(Scope::NamespaceWide.label("ns", "n"), b"ns");
        assert_eq!(Scope::ClusterWide.label("ns", "n"), b"");
        for scope in Scope::ALL {
            let mut a = annotations(&[(CLUSTER_WIDE, "true"), ("other", "x")]);
            scope.write_annotations(&mut a);
            assert_eq!(Scope::from_annotations(Some(&a)), scope);
            assert_eq!(a["other"], "x");
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        assert!("wide".parse::<Scope>().is_err());
    }
}
