//! Splitting text into PEM blocks (RFC 7468), tolerant of surrounding text and CRLF.

use zeroize::Zeroizing;

/// One decoded PEM block. The contents may be a private key, so they are zeroized on drop.
pub struct PemBlock {
    /// The label between `BEGIN ` and the closing dashes, e.g. `RSA PRIVATE KEY`.
    pub label: String,
    /// The decoded DER bytes.
    pub der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PemBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemBlock")
            .field("label", &self.label)
            .field("der", &format_args!("<{} bytes>", self.der.len()))
            .finish()
    }
}

/// Returns every well-formed PEM block in `text`, in order. Text outside blocks and blocks whose
/// body is not valid base64 are skipped, as Go's `pem.Decode` does.
pub fn pem_blocks(text: &[u8]) -> Vec<PemBlock> {
    let text = String::from_utf8_lossy(text);
    let mut blocks = Vec::new();
    let mut rest: &str = &text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(body_end) = body_start.find(&end_marker) else {
            break;
        };
        let body: Zeroizing<String> = Zeroizing::new(
            body_start[..body_end]
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect(),
        );
        use base64::Engine as _;
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()) {
            blocks.push(PemBlock {
                label: label.to_owned(),
                der: Zeroizing::new(der),
            });
        }
        rest = &body_start[body_end + end_marker.len()..];
    }
    blocks
}

/// Encodes DER as PEM with 64-column lines and a trailing newline.
pub(crate) fn encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    use base64::Engine as _;
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_blocks_between_text_and_crlf() {
        let text = "junk\r\n-----BEGIN A-----\r\nAAEC\r\n-----END A-----\r\nmore\n-----BEGIN B C-----\nAw==\n-----END B C-----\n";
        let blocks = pem_blocks(text.as_bytes());
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "A");
        assert_eq!(&blocks[0].der[..], &[0, 1, 2]);
        assert_eq!(blocks[1].label, "B C");
        assert_eq!(&blocks[1].der[..], &[3]);
    }

    #[test]
    fn skips_unterminated_and_bad_base64() {
        assert!(pem_blocks(b"-----BEGIN A-----\nAAEC\n").is_empty());
        assert!(pem_blocks(b"-----BEGIN A-----\n!!!\n-----END A-----\n").is_empty());
        assert!(pem_blocks(b"no pem here").is_empty());
    }

    #[test]
    fn encode_round_trips() {
        let der: Vec<u8> = (0..=200u8).collect();
        let pem = encode("THING", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let blocks = pem_blocks(pem.as_bytes());
        assert_eq!(&blocks[0].der[..], &der[..]);
    }
}
