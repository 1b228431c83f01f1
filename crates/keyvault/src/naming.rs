//! Key Vault secret names for backups: 1–127 characters of `0-9a-zA-Z-`, compared
//! case-insensitively by Key Vault, under a per-cluster prefix.

use crate::error::{BackupError, Result};

/// Longest Key Vault secret name.
pub const MAX_NAME_LEN: usize = 127;
/// Longest backup prefix: leaves room for a useful part of the key Secret name.
pub const MAX_PREFIX_LEN: usize = 48;
/// Suffix (after the prefix) of the secret that holds the current public certificate.
pub const CERT_SUFFIX: &str = "sealing-cert";
/// Hex digits of the SHA-256 of the original name appended when a name had to be changed.
const HASH_LEN: usize = 8;

/// Checks a backup prefix: 1–48 characters of `0-9a-zA-Z-`, starting with a letter, not ending
/// with `-`. Key Vault compares names case-insensitively, so `Prod` and `prod` are one prefix.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let invalid = |reason: &str| BackupError::Invalid {
        what: "backup prefix",
        value: prefix.to_owned(),
        reason: reason.to_owned(),
    };
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN {
        return Err(invalid("must be 1 to 48 characters"));
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(invalid(
            "only letters, digits and '-' are allowed in Key Vault names",
        ));
    }
    if !prefix.as_bytes()[0].is_ascii_alphabetic() {
        return Err(invalid("must start with a letter"));
    }
    if prefix.ends_with('-') {
        return Err(invalid(
            "must not end with '-' (one is added before the key name)",
        ));
    }
    Ok(())
}

/// True when `name` is a valid Key Vault secret name.
pub fn is_valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The Key Vault secret name of the backup of key Secret `secret_name`: `<prefix>-<name>`.
///
/// Kubernetes names are lower-case letters, digits, `-` and `.`; any character outside
/// `0-9a-z-` (a `.`, an upper-case letter) becomes `-`, and when the name had to be changed or
/// shortened to fit 127 characters, `-<8 hex digits of SHA-256 of the original name>` is
/// appended, so two different key Secret names never share a backup. Upstream's names
/// (`sealed-secrets-keyabcde`) are kept as they are. The prefix must pass [`validate_prefix`].
pub fn backup_name(prefix: &str, secret_name: &str) -> Result<String> {
    validate_prefix(prefix)?;
    if secret_name.is_empty() {
        return Err(BackupError::Invalid {
            what: "key Secret name",
            value: String::new(),
            reason: "is empty".to_owned(),
        });
    }
    let mut changed = false;
    let mut body: String = secret_name
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                changed = true;
                '-'
            }
        })
        .collect();
    let room = MAX_NAME_LEN - prefix.len() - 1;
    if body.len() > room {
        changed = true;
    }
    if changed {
        let hash = hex_sha256(secret_name.as_bytes());
        let keep = body.len().min(room - HASH_LEN - 1);
        body.truncate(keep);
        let body = body.trim_end_matches('-');
        return Ok(if body.is_empty() {
            format!("{prefix}-{}", &hash[..HASH_LEN])
        } else {
            format!("{prefix}-{body}-{}", &hash[..HASH_LEN])
        });
    }
    Ok(format!("{prefix}-{body}"))
}

/// The Key Vault secret name holding the current public certificate: `<prefix>-sealing-cert`.
pub fn certificate_name(prefix: &str) -> Result<String> {
    validate_prefix(prefix)?;
    Ok(format!("{prefix}-{CERT_SUFFIX}"))
}

fn hex_sha256(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_are_kept() {
        assert_eq!(
            backup_name("prod", "sealed-secrets-keyx7k2p").unwrap(),
            "prod-sealed-secrets-keyx7k2p"
        );
        assert_eq!(
            backup_name("Cluster-1", "sealed-secrets-key").unwrap(),
            "Cluster-1-sealed-secrets-key"
        );
    }

    #[test]
    fn invalid_characters_are_replaced_and_disambiguated() {
        let dotted = backup_name("p", "keys.v1").unwrap();
        let dashed = backup_name("p", "keys-v1").unwrap();
        assert!(dotted.starts_with("p-keys-v1-"), "{dotted}");
        assert_eq!(dotted.len(), "p-keys-v1-".len() + HASH_LEN);
        assert_eq!(dashed, "p-keys-v1");
        assert_ne!(dotted, dashed);
        assert!(is_valid_secret_name(&dotted));
        // Upper case is changed too: Key Vault would otherwise treat "A" and "a" as one name.
        assert_ne!(
            backup_name("p", "Key").unwrap(),
            backup_name("p", "key").unwrap()
        );
        // Nothing usable left: only the hash.
        let weird = backup_name("p", "...").unwrap();
        assert_eq!(weird.len(), 2 + HASH_LEN);
        assert!(is_valid_secret_name(&weird));
        assert!(is_valid_secret_name(&backup_name("p", "ключ").unwrap()));
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let a = "a".repeat(253);
        let b = format!("{}b", "a".repeat(252));
        let prefix = "x".repeat(MAX_PREFIX_LEN);
        for p in ["p", prefix.as_str()] {
            let na = backup_name(p, &a).unwrap();
            let nb = backup_name(p, &b).unwrap();
            assert!(na.len() <= MAX_NAME_LEN && nb.len() <= MAX_NAME_LEN);
            assert!(is_valid_secret_name(&na) && is_valid_secret_name(&nb));
            assert_ne!(na, nb);
        }
        // Exactly at the limit: kept unchanged.
        let fits = "k".repeat(MAX_NAME_LEN - 2);
        assert_eq!(backup_name("p", &fits).unwrap(), format!("p-{fits}"));
        let over = "k".repeat(MAX_NAME_LEN - 1);
        assert_eq!(backup_name("p", &over).unwrap().len(), MAX_NAME_LEN);
    }

    #[test]
    fn names_are_deterministic() {
        assert_eq!(
            backup_name("p", "a.b").unwrap(),
            backup_name("p", "a.b").unwrap()
        );
    }

    #[test]
    fn prefixes_are_checked() {
        for bad in ["", "-a", "1abc", "a_b", "a.b", "abc-", &"a".repeat(49)] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
            assert!(backup_name(bad, "k").is_err());
        }
        for good in ["a", "prod-eu-1", &"a".repeat(48)] {
            validate_prefix(good).unwrap();
        }
        assert!(backup_name("p", "").is_err());
    }

    #[test]
    fn certificate_name_is_separate() {
        assert_eq!(certificate_name("prod").unwrap(), "prod-sealing-cert");
    }
}
