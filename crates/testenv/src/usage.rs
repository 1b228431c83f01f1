//! What a process under test has used, from `/proc` (Linux): CPU time and memory. Figures for
//! benchmarks and test output, never for assertions on speed.

use anyhow::{Context as _, Result};

/// A process's resource use at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Peak resident memory (`VmHWM`), in KiB.
    pub peak_kib: u64,
    /// Resident memory now (`VmRSS`), in KiB.
    pub rss_kib: u64,
}

/// The kernel's clock ticks per second for `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads `pid`'s CPU time and memory.
pub fn of(pid: u32) -> Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: fields after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .with_context(|| format!("/proc/{pid}/stat has no field {}", i + 3))?
            .parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15; the slice starts at field 3.
    let cpu_seconds = (ticks(11)? + ticks(12)?) / TICKS_PER_SECOND;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Usage {
        cpu_seconds,
        peak_kib: kib("VmHWM:")?,
        rss_kib: kib("VmRSS:")?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_uses_memory_and_time() {
        let before = super::of(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = super::of(std::process::id()).unwrap();
        assert!(
            after.cpu_seconds > before.cpu_seconds,
            "{before:?} → {after:?}"
        );
        assert!(
            after.rss_kib > 0 && after.peak_kib >= after.rss_kib,
            "{after:?}"
        );
    }
}
