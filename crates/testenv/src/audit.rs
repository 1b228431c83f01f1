//! Least privilege, checked: the API server's audit log (`<state>/logs/audit.log`, which
//! `scripts/cluster up` has kube-apiserver write at the Metadata level) read back as the set of
//! permissions a user actually exercised, and the RBAC rules a manifest grants a ServiceAccount,
//! so a test can compare the two ([`unused_grants`]).

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::Value;

/// Where a permission applies: one namespace, or the whole cluster (cluster-scoped objects and
/// requests across all namespaces).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Within this namespace.
    Namespace(String),
    /// Cluster-wide.
    Cluster,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Namespace(ns) => write!(f, "in {ns}"),
            Scope::Cluster => f.write_str("cluster-wide"),
        }
    }
}

/// One permission: a verb on a resource (API group, resource and subresource) in a scope — a
/// request the API server authorized, or a grant of an RBAC rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …
    pub verb: String,
    /// The API group (`""` for the core group).
    pub group: String,
    /// The resource, with `/subresource` when there is one (`sealedsecrets/status`).
    pub resource: String,
    /// Where.
    pub scope: Scope,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(
            f,
            "{} {}/{} {}",
            self.verb, group, self.resource, self.scope
        )
    }
}

impl Permission {
    /// Whether this grant covers `used`: same verb and resource, and `used` within its scope.
    pub fn covers(&self, used: &Permission) -> bool {
        self.verb == used.verb
            && self.group == used.group
            && self.resource == used.resource
            && match (&self.scope, &used.scope) {
                (Scope::Cluster, _) => true,
                (Scope::Namespace(granted), Scope::Namespace(ns)) => granted == ns,
                (Scope::Namespace(_), Scope::Cluster) => false,
            }
    }
}

/// A resource request the audit log recorded for a user.
#[derive(Clone, Debug)]
pub struct AuditedRequest {
    /// What it exercised.
    pub permission: Permission,
    /// The request URI.
    pub uri: String,
    /// The response code (0 when the event has none).
    pub code: u16,
}

/// The ServiceAccount user name the API server gives `namespace/name`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Every resource request by `user` in the audit log at `path` (non-resource requests such as
/// `/version` or `/api` discovery need no RBAC grant of the manifest and are left out).
pub fn requests_by(path: &Path, user: &str) -> Result<Vec<AuditedRequest>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the audit log {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let event: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an audit event", path.display(), n + 1))?;
        if event["user"]["username"] != user {
            continue;
        }
        if let Some(request) = audited_request(&event) {
            out.push(request);
        }
    }
    Ok(out)
}

fn audited_request(event: &Value) -> Option<AuditedRequest> {
    let object = event.get("objectRef")?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut resource = object["resource"].as_str()?.to_owned();
    if let Some(sub) = object["subresource"].as_str() {
        resource = format!("{resource}/{sub}");
    }
    let scope = match object["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => Scope::Namespace(ns.to_owned()),
        _ => Scope::Cluster,
    };
    Some(AuditedRequest {
        permission: Permission {
            verb: text(&event["verb"]),
            group: text(&object["apiGroup"]),
            resource,
            scope,
        },
        uri: text(&event["requestURI"]),
        code: event["responseStatus"]["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(0),
    })
}

/// Everything the RBAC objects in the manifest `text` (multi-document YAML) grant the
/// ServiceAccount `namespace/name`: the rules of each ClusterRole bound to it by a
/// ClusterRoleBinding (cluster-wide), of each Role or ClusterRole bound by a RoleBinding (in
/// that binding's namespace). A rule's `resourceNames` are ignored (they only narrow a grant).
pub fn granted_to(text: &str, namespace: &str, name: &str) -> Result<BTreeSet<Permission>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).context("parsing the manifest")?;
    let find = |kind: &str, role: &str, ns: Option<&str>| {
        docs.iter().find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == role
                && ns.is_none_or(|ns| d["metadata"]["namespace"] == ns)
        })
    };
    let mut grants = BTreeSet::new();
    for binding in docs.iter().filter(|d| binds(d, namespace, name)) {
        let (role_kind, role) = (&binding["roleRef"]["kind"], &binding["roleRef"]["name"]);
        let role_name = role.as_str().unwrap_or_default();
        let (role_doc, scope) = match binding["kind"].as_str() {
            Some("ClusterRoleBinding") => (find("ClusterRole", role_name, None), Scope::Cluster),
            _ => {
                let ns = binding["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default();
                let doc = if role_kind == "Role" {
                    find("Role", role_name, Some(ns))
                } else {
                    find("ClusterRole", role_name, None)
                };
                (doc, Scope::Namespace(ns.to_owned()))
            }
        };
        let role_doc = role_doc.with_context(|| {
            format!("the manifest binds {role_kind} {role_name}, which it does not define")
        })?;
        for rule in role_doc["rules"].as_array().into_iter().flatten() {
            grants.extend(expand(rule, &scope));
        }
    }
    Ok(grants)
}

/// Whether `doc` is a (Cluster)RoleBinding with the ServiceAccount `namespace/name` as subject.
fn binds(doc: &Value, namespace: &str, name: &str) -> bool {
    matches!(
        doc["kind"].as_str(),
        Some("ClusterRoleBinding" | "RoleBinding")
    ) && doc["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == namespace)
}

/// One permission per verb × API group × resource of an RBAC rule.
fn expand(rule: &Value, scope: &Scope) -> Vec<Permission> {
    let list = |key: &str| -> Vec<String> {
        rule[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let (verbs, groups, resources) = (list("verbs"), list("apiGroups"), list("resources"));
    let mut out = Vec::new();
    for verb in &verbs {
        for group in &groups {
            for resource in &resources {
                out.push(Permission {
                    verb: verb.clone(),
                    group: group.clone(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    out
}

/// The grants `used` does not need. A cluster-wide grant is needed only by a use outside
/// `own_namespace` (a request in another namespace or across all of them): one used in the
/// controller's own namespace alone belongs in a Role there, and is reported too.
pub fn unused_grants<'a>(
    grants: &'a BTreeSet<Permission>,
    used: &BTreeSet<Permission>,
    own_namespace: &str,
) -> Vec<&'a Permission> {
    let own = Scope::Namespace(own_namespace.to_owned());
    grants
        .iter()
        .filter(|grant| {
            !used
                .iter()
                .any(|u| grant.covers(u) && (grant.scope != Scope::Cluster || u.scope != own))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: home}
---
kind: ClusterRole
metadata: {name: wide}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
- apiGroups: [x.io]
  resources: [things/status]
  verbs: [update]
---
kind: ClusterRoleBinding
metadata: {name: wide}
roleRef: {kind: ClusterRole, name: wide}
subjects: [{kind: ServiceAccount, name: sa, namespace: home}]
---
kind: Role
metadata: {name: local, namespace: home}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get]
---
kind: RoleBinding
metadata: {name: local, namespace: home}
roleRef: {kind: Role, name: local}
subjects: [{kind: ServiceAccount, name: sa, namespace: home}]
---
kind: ClusterRoleBinding
metadata: {name: someone-else}
roleRef: {kind: ClusterRole, name: wide}
subjects: [{kind: ServiceAccount, name: other, namespace: home}]
"#;

    fn perm(verb: &str, group: &str, resource: &str, scope: Scope) -> Permission {
        Permission {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            scope,
        }
    }

    fn ns(name: &str) -> Scope {
        Scope::Namespace(name.into())
    }

    #[test]
    fn grants_follow_the_bindings_of_the_service_account() {
        let grants = granted_to(MANIFEST, "home", "sa").unwrap();
        let expected: BTreeSet<_> = [
            perm("get", "", "secrets", Scope::Cluster),
            perm("create", "", "secrets", Scope::Cluster),
            perm("update", "x.io", "things/status", Scope::Cluster),
            perm("get", "coordination.k8s.io", "leases", ns("home")),
        ]
        .into();
        assert_eq!(grants, expected);
        assert!(granted_to(MANIFEST, "home", "nobody").unwrap().is_empty());
    }

    #[test]
    fn unused_and_too_wide_grants_are_reported() {
        let grants = granted_to(MANIFEST, "home", "sa").unwrap();
        let used: BTreeSet<_> = [
            perm("get", "", "secrets", ns("app")),
            // Only in the controller's own namespace: a Role would do.
            perm("create", "", "secrets", ns("home")),
            perm("get", "coordination.k8s.io", "leases", ns("home")),
        ]
        .into();
        let unused: Vec<String> = unused_grants(&grants, &used, "home")
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            unused,
            [
                "create core/secrets cluster-wide",
                "update x.io/things/status cluster-wide"
            ]
        );
    }

    #[test]
    fn a_namespaced_grant_does_not_cover_other_namespaces() {
        let grant = perm("get", "", "secrets", ns("home"));
        assert!(grant.covers(&perm("get", "", "secrets", ns("home"))));
        assert!(!grant.covers(&perm("get", "", "secrets", ns("app"))));
        assert!(!grant.covers(&perm("get", "", "secrets", Scope::Cluster)));
        assert!(!grant.covers(&perm("list", "", "secrets", ns("home"))));
    }

    #[test]
    fn audit_events_become_requests() {
        let log = tempfile::NamedTempFile::new().unwrap();
        let lines = [
            r#"{"kind":"Event","verb":"update","requestURI":"/apis/x.io/v1/namespaces/app/things/a/status","user":{"username":"system:serviceaccount:home:sa"},"objectRef":{"resource":"things","namespace":"app","name":"a","apiGroup":"x.io","subresource":"status"},"responseStatus":{"code":200}}"#,
            r#"{"kind":"Event","verb":"watch","requestURI":"/api/v1/secrets?watch=true","user":{"username":"system:serviceaccount:home:sa"},"objectRef":{"resource":"secrets","apiVersion":"v1"},"responseStatus":{"code":403}}"#,
            r#"{"kind":"Event","verb":"get","requestURI":"/version","user":{"username":"system:serviceaccount:home:sa"}}"#,
            r#"{"kind":"Event","verb":"get","requestURI":"/api/v1/namespaces/app/secrets/a","user":{"username":"admin"},"objectRef":{"resource":"secrets","namespace":"app"}}"#,
        ];
        std::fs::write(log.path(), lines.join("\n")).unwrap();
        let requests = requests_by(log.path(), &service_account_user("home", "sa")).unwrap();
        let seen: Vec<(String, u16)> = requests
            .iter()
            .map(|r| (r.permission.to_string(), r.code))
            .collect();
        assert_eq!(
            seen,
            [
                ("update x.io/things/status in app".to_owned(), 200),
                ("watch core/secrets cluster-wide".to_owned(), 403)
            ]
        );
    }
}
