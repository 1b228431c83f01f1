//! Test data that must be the same on every run.

/// `len` bytes of deterministic noise from `seed` (xorshift64): "random" input that fails the same
/// way every time.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
