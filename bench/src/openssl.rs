//! The OpenSSL reference: runs `openssl speed` and reads its machine-readable output.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

/// RSA operations per second as measured by `openssl speed`.
#[derive(Debug, Clone, PartialEq)]
pub struct RsaSpeed {
    /// Private-key operations (`sign`) per second.
    pub private_per_s: f64,
    /// Public-key operations (`verify`) per second.
    pub public_per_s: f64,
}

/// Runs `openssl speed -mr -elapsed -seconds N rsaBITS` on one thread.
///
/// `-elapsed` divides by wall time, as the keyseal loops do, rather than by CPU time, so both
/// are charged the same for other processes on the machine.
pub fn speed_rsa(openssl: &Path, bits: usize, seconds: u64) -> Result<RsaSpeed> {
    let output = Command::new(openssl)
        .args(["speed", "-mr", "-elapsed", "-seconds"])
        .arg(seconds.to_string())
        .arg(format!("rsa{bits}"))
        .output()
        .with_context(|| format!("running `{} speed`", openssl.display()))?;
    // OpenSSL 3.0 prints the `+F2` summary on stdout and progress on stderr; read both in case a
    // build swaps them.
    let text = [output.stdout, output.stderr].concat();
    let text = String::from_utf8_lossy(&text);
    ensure!(
        output.status.success(),
        "`{} speed rsa{bits}` failed ({}): {}",
        openssl.display(),
        output.status,
        text.trim()
    );
    parse_rsa_speed(&text, bits)
        .with_context(|| format!("reading the output of `{} speed`", openssl.display()))
}

/// Reads the `+F2:<index>:<bits>:<sign/s>:<verify/s>` line of `openssl speed -mr` output.
pub fn parse_rsa_speed(text: &str, bits: usize) -> Result<RsaSpeed> {
    for line in text.lines() {
        let Some(fields) = line.trim().strip_prefix("+F2:") else {
            continue;
        };
        let fields: Vec<&str> = fields.split(':').collect();
        let [_index, line_bits, sign, verify] = fields[..] else {
            bail!("unexpected summary line {line:?}");
        };
        if line_bits.parse::<usize>().ok() != Some(bits) {
            continue;
        }
        let rate = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .with_context(|| format!("bad rate {s:?} in {line:?}"))
        };
        return Ok(RsaSpeed {
            private_per_s: rate(sign)?,
            public_per_s: rate(verify)?,
        });
    }
    bail!("no `+F2:` summary line for RSA-{bits}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verbatim from OpenSSL 3.0.19 (`openssl speed -mr -elapsed -seconds 1 rsa4096`).
    const OPENSSL_3_0: &str = "\
+DTP:4096:private:rsa:1
+R1:262:4096:1.01
+DTP:4096:public:rsa:1
+R2:16520:4096:1.00
+F2:4:4096:259.405941:16520.000000
";

    #[test]
    fn reads_openssl_3_0_summary() {
        assert_eq!(
            parse_rsa_speed(OPENSSL_3_0, 4096).unwrap(),
            RsaSpeed {
                private_per_s: 259.405941,
                public_per_s: 16520.0,
            }
        );
    }

    #[test]
    fn ignores_other_key_sizes() {
        let text = "+F2:3:2048:1500.0:50000.0\n+F2:4:4096:259.4:16520.0\n";
        assert_eq!(parse_rsa_speed(text, 4096).unwrap().private_per_s, 259.4);
    }

    #[test]
    fn refuses_output_without_summary() {
        let human = "rsa 4096 bits 0.003861s 0.000061s    259.0  16462.0\n";
        assert!(parse_rsa_speed(human, 4096).is_err());
    }

    #[test]
    fn refuses_zero_rate() {
        assert!(parse_rsa_speed("+F2:4:4096:0:16520.0\n", 4096).is_err());
    }
}
