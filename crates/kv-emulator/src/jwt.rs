//! JSON Web Tokens signed with RS256 (RFC 7515/7519), on aws-lc-rs: the access tokens the
//! emulator issues, and the client assertions it checks (Kubernetes service-account tokens and
//! certificate-signed assertions).

use std::path::Path;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("the token is malformed")]
    Malformed,
    /// Not RS256, or no key for its `kid`.
    #[error("the token's signing key is unknown or its algorithm is not RS256")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
}

/// A token split into its parts, its signature not yet checked.
pub struct Unverified {
    /// The header.
    pub header: Value,
    /// The claims.
    pub claims: Value,
    signed: String,
    signature: Vec<u8>,
}

impl Unverified {
    /// Splits `token`.
    pub fn parse(token: &str) -> Result<Self, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let json = |part: &str| -> Result<Value, JwtError> {
            let bytes = URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| JwtError::Malformed)?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
            value
                .is_object()
                .then_some(value)
                .ok_or(JwtError::Malformed)
        };
        Ok(Unverified {
            header: json(h)?,
            claims: json(c)?,
            signed: format!("{h}.{c}"),
            signature: URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?,
        })
    }

    /// The `kid` header.
    pub fn kid(&self) -> Option<&str> {
        self.header["kid"].as_str()
    }

    /// Checks the RS256 signature with an RSA public key given as big-endian `n` and `e`.
    pub fn verify(&self, n: &[u8], e: &[u8]) -> Result<(), JwtError> {
        if self.header["alg"] != "RS256" {
            return Err(JwtError::UnknownKey);
        }
        PublicKeyComponents { n, e }
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                self.signed.as_bytes(),
                &self.signature,
            )
            .map_err(|_| JwtError::BadSignature)
    }

    /// Checks the RS256 signature with an RSA public key as SubjectPublicKeyInfo DER (a
    /// certificate's).
    pub fn verify_spki(&self, spki_der: &[u8]) -> Result<(), JwtError> {
        if self.header["alg"] != "RS256" {
            return Err(JwtError::UnknownKey);
        }
        signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, spki_der)
            .verify(self.signed.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature)
    }

    /// A string claim.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims[name].as_str()
    }

    /// An integer claim (seconds).
    pub fn time(&self, name: &str) -> Option<i64> {
        self.claims[name].as_i64()
    }

    /// The `aud` claim, a string or a list of strings.
    pub fn audiences(&self) -> Vec<&str> {
        match &self.claims["aud"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// An RSA key from a JWKS document (`kty: RSA`).
#[derive(Clone, Debug)]
pub struct Jwk {
    /// `kid`.
    pub kid: String,
    /// Modulus, big-endian.
    pub n: Vec<u8>,
    /// Exponent, big-endian.
    pub e: Vec<u8>,
}

/// The RSA keys of a JWKS document (others are skipped).
pub fn parse_jwks(doc: &Value) -> Vec<Jwk> {
    doc["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kty"] == "RSA")
        .filter_map(|k| {
            Some(Jwk {
                kid: k["kid"].as_str().unwrap_or_default().to_owned(),
                n: URL_SAFE_NO_PAD.decode(k["n"].as_str()?).ok()?,
                e: URL_SAFE_NO_PAD.decode(k["e"].as_str()?).ok()?,
            })
        })
        .collect()
}

/// The emulator's token-signing key, kept in `<data_dir>/signing-key.pk8` so that tokens issued
/// before a restart stay valid after it, as Entra's do.
pub struct Signer {
    key: RsaKeyPair,
    /// Its `kid`.
    pub kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl Signer {
    /// Loads the key, or makes one (RSA-2048).
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("signing-key.pk8");
        let der = match std::fs::read(&path) {
            Ok(der) => der,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = RsaKeyPair::generate(KeySize::Rsa2048)
                    .map_err(|_| anyhow::anyhow!("cannot generate the token-signing key"))?;
                let der = key
                    .as_der()
                    .map_err(|_| anyhow::anyhow!("cannot encode the token-signing key"))?
                    .as_ref()
                    .to_vec();
                use std::io::Write as _;
                let mut f = crate::store::private_file(&path)?;
                f.write_all(&der)?;
                f.sync_all()?;
                der
            }
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| anyhow::anyhow!("{}: not an RSA PKCS#8 key", path.display()))?;
        let components = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
        let trim = |b: Vec<u8>| -> Vec<u8> {
            let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
            b[start..].to_vec()
        };
        let (n, e) = (trim(components.n), trim(components.e));
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &n);
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
        Ok(Signer { key, kid, n, e })
    }

    /// Signs `claims` (RS256, with this key's `kid`).
    pub fn sign(&self, claims: &Value) -> String {
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Checks a token this signer issued (the signature only).
    pub fn verify(&self, token: &Unverified) -> Result<(), JwtError> {
        if token.kid() != Some(self.kid.as_str()) {
            return Err(JwtError::UnknownKey);
        }
        token.verify(&self.n, &self.e)
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> Value {
        serde_json::json!({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.n), "e": URL_SAFE_NO_PAD.encode(&self.e),
        }]})
    }
}

/// 16 random bytes as 32 lowercase hex digits (a secret version id).
pub fn random_hex32() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random GUID-shaped string (request ids, trace ids).
pub fn random_guid() -> String {
    guid(&random_hex32())
}

/// 32 hex digits in the GUID's 8-4-4-4-12 groups.
pub fn guid(h: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(dir.path()).unwrap();
        let token = signer.sign(&serde_json::json!({"aud": "https://vault.azure.net", "exp": 5}));
        let parsed = Unverified::parse(&token).unwrap();
        signer.verify(&parsed).unwrap();
        assert_eq!(parsed.audiences(), ["https://vault.azure.net"]);
        assert_eq!(parsed.time("exp"), Some(5));

        // The same key after a restart; another key refuses it.
        let again = Signer::load_or_create(dir.path()).unwrap();
        again.verify(&parsed).unwrap();
        let other = Signer::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(other.verify(&parsed), Err(JwtError::UnknownKey));

        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(r#"{"aud":"https://vault.azure.net","exp":9999999999}"#);
        let forged = Unverified::parse(&parts.join(".")).unwrap();
        assert_eq!(signer.verify(&forged), Err(JwtError::BadSignature));

        // The JWKS document verifies it too.
        let keys = parse_jwks(&signer.jwks());
        assert_eq!(keys[0].kid, signer.kid);
        parsed.verify(&keys[0].n, &keys[0].e).unwrap();

        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(Unverified::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_ids_are_32_lowercase_hex() {
        let id = random_hex32();
        assert_eq!(id.len(), 32);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(id, random_hex32());
    }
}
