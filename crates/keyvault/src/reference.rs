//! Vault references: where `keyseal --cert` finds a certificate published in Key Vault.
//!
//! Syntax (either form):
//!
//! - `azurekeyvault://<vault-host>[:<port>]/<secret-name>[/<version>]`, e.g.
//!   `azurekeyvault://myvault.vault.azure.net/prod-sealing-cert`;
//! - a Key Vault secret identifier as the portal and `az` print it,
//!   `https://<vault-host>[:<port>]/secrets/<secret-name>[/<version>]`.
//!
//! The vault is always reached over HTTPS at `https://<vault-host>[:<port>]`.

use std::fmt;

use crate::error::{BackupError, Result};
use crate::naming::is_valid_secret_name;

/// URL scheme of the short form.
pub const SCHEME: &str = "azurekeyvault://";

/// A parsed vault reference: a vault and one secret in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultReference {
    /// `https://<vault-host>[:<port>]`, without a trailing slash.
    pub vault_url: String,
    /// The Key Vault secret name.
    pub secret_name: String,
    /// A specific version; `None` means the latest.
    pub version: Option<String>,
}

impl VaultReference {
    /// Parses either syntax described in the module documentation.
    pub fn parse(reference: &str) -> Result<Self> {
        let invalid = |reason: &str| BackupError::Invalid {
            what: "vault reference",
            value: reference.to_owned(),
            reason: format!(
                "{reason} (expected azurekeyvault://<vault-host>/<secret-name>[/<version>] or \
                 https://<vault-host>/secrets/<secret-name>[/<version>])"
            ),
        };
        let (rest, https) = if let Some(rest) = strip_prefix_ci(reference, SCHEME) {
            (rest, false)
        } else if let Some(rest) = strip_prefix_ci(reference, "https://") {
            (rest, true)
        } else {
            return Err(invalid("unknown scheme"));
        };
        if rest.contains(['?', '#', '@']) {
            return Err(invalid("queries, fragments and user info are not allowed"));
        }
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("no secret name"))?;
        if authority.is_empty() || !valid_authority(authority) {
            return Err(invalid("bad vault host"));
        }
        let mut parts: Vec<&str> = path.split('/').collect();
        if parts.last() == Some(&"") {
            parts.pop();
        }
        if https {
            if parts.first() != Some(&"secrets") {
                return Err(invalid("a Key Vault URL must point at /secrets/<name>"));
            }
            parts.remove(0);
        }
        let (name, version) = match parts.as_slice() {
            [name] => (*name, None),
            [name, version] => (*name, Some(*version)),
            _ => return Err(invalid("expected a secret name and at most a version")),
        };
        if !is_valid_secret_name(name) {
            return Err(invalid("the secret name must be 1-127 of 0-9a-zA-Z-"));
        }
        if let Some(v) = version
            && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(invalid("the version must be alphanumeric"));
        }
        Ok(VaultReference {
            vault_url: format!("https://{}", authority.to_ascii_lowercase()),
            secret_name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }

    /// True if `s` looks like a vault reference (so `--cert` can tell it from a file or URL).
    pub fn is_reference(s: &str) -> bool {
        strip_prefix_ci(s, SCHEME).is_some()
    }
}

impl fmt::Display for VaultReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.vault_url.trim_start_matches("https://");
        write!(f, "{SCHEME}{host}/{}", self.secret_name)?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

fn valid_authority(authority: &str) -> bool {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with(['.', '-'])
        && !host.ends_with(['.', '-']);
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(url: &str, name: &str, version: Option<&str>) -> VaultReference {
        VaultReference {
            vault_url: url.to_owned(),
            secret_name: name.to_owned(),
            version: version.map(str::to_owned),
        }
    }

    #[test]
    fn short_form() {
        assert_eq!(
            VaultReference::parse("azurekeyvault://myvault.vault.azure.net/prod-sealing-cert")
                .unwrap(),
            r("https://myvault.vault.azure.net", "prod-sealing-cert", None)
        );
        assert_eq!(
            VaultReference::parse("AzureKeyVault://127.0.0.1:8443/c/0123abcd/").unwrap(),
            r("https://127.0.0.1:8443", "c", Some("0123abcd"))
        );
    }

    #[test]
    fn secret_identifier_form() {
        assert_eq!(
            VaultReference::parse("https://v.vault.azure.net/secrets/prod-sealing-cert/abc123")
                .unwrap(),
            r(
                "https://v.vault.azure.net",
                "prod-sealing-cert",
                Some("abc123")
            )
        );
        assert_eq!(
            VaultReference::parse("https://V.vault.azure.net/secrets/x/").unwrap(),
            r("https://v.vault.azure.net", "x", None)
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "azurekeyvault://v.vault.azure.net/a-b",
            "azurekeyvault://h:1/a/v1",
        ] {
            assert_eq!(VaultReference::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "azurekeyvault://",
            "azurekeyvault://host",
            "azurekeyvault://host/",
            "azurekeyvault:///name",
            "azurekeyvault://host/na_me",
            "azurekeyvault://host/a/b/c",
            "azurekeyvault://host/a/v-1",
            "azurekeyvault://host:0/a",
            "azurekeyvault://host:99999/a",
            "azurekeyvault://user@host/a",
            "azurekeyvault://host/a?x=1",
            "http://host/secrets/a",
            "https://host/keys/a",
            "https://host/a",
            "file:///tmp/cert.pem",
            "cert.pem",
        ] {
            let err = VaultReference::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("expected azurekeyvault://"),
                "{bad}: {err}"
            );
        }
        let long = format!("azurekeyvault://h/{}", "a".repeat(128));
        assert!(VaultReference::parse(&long).is_err());
    }

    #[test]
    fn recognises_references() {
        assert!(VaultReference::is_reference("azurekeyvault://h/a"));
        assert!(!VaultReference::is_reference("https://h/secrets/a"));
        assert!(!VaultReference::is_reference("cert.pem"));
    }
}
