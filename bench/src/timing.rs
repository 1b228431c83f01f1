//! `keyseal-bench timing`: a dudect-style statistical test that `keyseal_crypto::open` takes the
//! same time whichever way a value fails to open.
//!
//! Method (Reparaz, Balasch, Verbauwhede, "Dude, is my code constant time?", DATE 2017): time
//! many calls per input class, the classes interleaved in a random order so that noise from
//! other processes falls on all of them alike, then compare every two classes that must be
//! indistinguishable with Welch's t-test, on all samples and on samples cropped at 100
//! percentiles (slow outliers are interference, not the code). A class pair whose largest |t|
//! exceeds the threshold (dudect's 4.5) is a leak.
//!
//! Which pairs must match: every class whose RSA-OAEP decoding fails (wrong label, random
//! ciphertext, a changed byte in the RSA block, another key) must be indistinguishable from every
//! other: telling OAEP failure reasons apart is Manger's oracle. A valid value and one with a
//! flipped byte in the AES-GCM part both decode OAEP and run GCM over the same length, so they
//! must match too. Between the two groups the code legitimately does different work (GCM runs
//! only after OAEP succeeds), which is printed but not judged: OAEP decoding succeeds on a value
//! an attacker changed with probability ~2^-256, so "OAEP succeeded" answers nothing an
//! attacker does not already know. A positive control (the same decryption followed by a naive
//! early-exit compare) shows the test detects a leak of a stated size on this machine, in this
//! run; without that the run proves nothing and fails too.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};
use keyseal_crypto::{PrivateKey, SealRng as _, SystemRng, open, seal};

use crate::{Clock, TimingArgs};

/// The label the victim key opens values under (strict scope: `namespace/name`).
const LABEL: &[u8] = b"prod/db-credentials";
/// A value sealed for another name in the same namespace.
const OTHER_LABEL: &[u8] = b"prod/db-credential";
/// Distinct inputs prepared per class; samples cycle through them in random order.
const POOL: usize = 64;
/// Untimed calls per class before the timed ones (caches, branch predictors, CPU frequency).
const WARMUP: usize = 20;
/// Crops below this many samples per class are skipped: a t value over a handful is noise.
const MIN_CROPPED: usize = 50;

/// An input class: how the value handed to `open` was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Valid,
    WrongLabel,
    RandomCiphertext,
    FlippedRsa,
    FlippedGcm,
    WrongKey,
    ControlEarly,
    ControlLate,
}

impl Class {
    const ALL: [Class; 8] = [
        Class::Valid,
        Class::WrongLabel,
        Class::RandomCiphertext,
        Class::FlippedRsa,
        Class::FlippedGcm,
        Class::WrongKey,
        Class::ControlEarly,
        Class::ControlLate,
    ];

    fn name(self) -> &'static str {
        match self {
            Class::Valid => "valid",
            Class::WrongLabel => "wrong-label",
            Class::RandomCiphertext => "random-ciphertext",
            Class::FlippedRsa => "flipped-rsa-byte",
            Class::FlippedGcm => "flipped-gcm-byte",
            Class::WrongKey => "wrong-key",
            Class::ControlEarly => "control-early",
            Class::ControlLate => "control-late",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Class::Valid => "sealed for this key and label: opens",
            Class::WrongLabel => "sealed for this key under another name's label",
            Class::RandomCiphertext => "random bytes of the same lengths (RSA block below n)",
            Class::FlippedRsa => "valid value, one byte of the RSA block changed (kept below n)",
            Class::FlippedGcm => "valid value, one byte of the AES-GCM part flipped",
            Class::WrongKey => "sealed for another key of the same size (smaller n)",
            Class::ControlEarly => "wrong-label open + naive compare differing at byte 0",
            Class::ControlLate => "wrong-label open + naive compare differing at the last byte",
        }
    }

    fn index(self) -> usize {
        Class::ALL.iter().position(|c| *c == self).expect("in ALL")
    }
}

/// What a class pair's verdict means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Must be indistinguishable: |t| above the threshold fails the run.
    MustMatch,
    /// Does different work by design: printed, not judged.
    Expected,
    /// A known leak: |t| must exceed the threshold, or the run had no power.
    Control,
}

/// The class pairs compared, with their role.
fn comparisons() -> Vec<(Class, Class, Role)> {
    use Class::*;
    let oaep_fails = [WrongLabel, RandomCiphertext, FlippedRsa, WrongKey];
    let mut pairs = Vec::new();
    for (i, a) in oaep_fails.iter().enumerate() {
        for b in &oaep_fails[i + 1..] {
            pairs.push((*a, *b, Role::MustMatch));
        }
    }
    pairs.push((Valid, FlippedGcm, Role::MustMatch));
    pairs.push((Valid, WrongLabel, Role::Expected));
    pairs.push((FlippedGcm, WrongLabel, Role::Expected));
    pairs.push((ControlEarly, ControlLate, Role::Control));
    pairs
}

/// Runs the test and prints its report; an error (non-zero exit) when a pair that must match
/// differs, or when the positive control goes undetected.
pub fn run(args: &TimingArgs) -> Result<()> {
    crate::print_machine();
    println!("cpu: {}", crate::cpu_model());
    eprintln!("generating two RSA-{} keys (not timed)...", args.bits);
    let (key, other) = key_pair(args.bits)?;
    let mut rng = Rng::from_system()?;
    let inputs = Inputs::new(&key, &other, args, &mut rng)?;
    inputs.check(&key)?;

    let total = args.samples * Class::ALL.len();
    eprintln!(
        "timing {total} calls ({} per class, random order)...",
        args.samples
    );
    let started = Instant::now();
    let samples = measure(&key, &inputs, args, &mut rng);
    let elapsed = started.elapsed();

    println!(
        "timing: keyseal_crypto::open, RSA-{} key, {}-byte value, {} samples per class, {} \
         classes interleaved in random order, clock {:?}, {:.1} s",
        args.bits,
        args.value_len,
        args.samples,
        Class::ALL.len(),
        args.clock,
        elapsed.as_secs_f64()
    );
    print_classes(&samples);
    let results: Vec<PairResult> = comparisons()
        .into_iter()
        .map(|(a, b, role)| PairResult::new(a, b, role, &samples))
        .collect();
    print_pairs(&results, args);
    let decryption = median(&sorted(&samples[Class::WrongLabel.index()]));
    let leak = control_leak_ns(&inputs);
    println!(
        "positive control: a naive early-exit compare of {} bytes after the same decryption; its \
         leak alone is {leak:.0} ns per call ({:.3}% of a median decryption, {:.0} µs)",
        args.control_bytes,
        100.0 * leak / decryption,
        decryption / 1e3
    );
    verdict(&results, args.threshold)
}

/// The victim key and another of the same size with a smaller modulus, so that values sealed
/// for the other key are below the victim's modulus too. A block >= n is rejected before any
/// private-key work, which is visible but depends only on public values (the block and n).
fn key_pair(bits: usize) -> Result<(PrivateKey, PrivateKey)> {
    let a = PrivateKey::generate(bits).context("generating a key")?;
    let b = PrivateKey::generate(bits).context("generating a key")?;
    let (da, db) = (a.public_key().to_spki_der(), b.public_key().to_spki_der());
    // Same size and exponent: the DER encodings differ first in the modulus, so comparing them
    // compares the moduli.
    ensure!(
        da.len() == db.len(),
        "two {bits}-bit keys encode to different lengths"
    );
    Ok(if da > db { (a, b) } else { (b, a) })
}

/// Inputs per class, each a pool of distinct byte strings, plus the control's compare buffers.
struct Inputs {
    pools: Vec<Vec<Vec<u8>>>,
    secret: Vec<u8>,
    guess_early: Vec<u8>,
    guess_late: Vec<u8>,
}

impl Inputs {
    fn new(key: &PrivateKey, other: &PrivateKey, args: &TimingArgs, rng: &mut Rng) -> Result<Self> {
        let public = key.public_key();
        let mut value = vec![0u8; args.value_len];
        let mut make = |class: Class| -> Result<Vec<u8>> {
            rng.fill(&mut value);
            let sealed = |k: &PrivateKey, label: &[u8]| {
                seal(k.public_key(), label, &value).context("sealing an input")
            };
            Ok(match class {
                Class::Valid => sealed(key, LABEL)?,
                Class::WrongLabel | Class::ControlEarly | Class::ControlLate => {
                    sealed(key, OTHER_LABEL)?
                }
                Class::WrongKey => sealed(other, LABEL)?,
                Class::RandomCiphertext => {
                    let mut bytes = sealed(key, LABEL)?;
                    rng.fill(&mut bytes[2..]);
                    // The top byte 0 keeps the RSA block below the modulus: a block >= n is
                    // rejected before any private-key work, from public information.
                    bytes[2] = 0;
                    bytes
                }
                Class::FlippedRsa => {
                    let mut bytes = sealed(key, LABEL)?;
                    // Replacing a non-zero byte after the top one by a smaller value keeps the
                    // block below the modulus (the block it came from is).
                    let at = loop {
                        let at = 3 + rng.below(public.modulus_len() - 1);
                        if bytes[at] != 0 {
                            break at;
                        }
                    };
                    bytes[at] = rng.below(bytes[at].into()) as u8;
                    bytes
                }
                Class::FlippedGcm => {
                    let mut bytes = sealed(key, LABEL)?;
                    let body = 2 + public.modulus_len();
                    let at = body + rng.below(bytes.len() - body);
                    bytes[at] ^= 1 << rng.below(8);
                    bytes
                }
            })
        };
        let pools = Class::ALL
            .iter()
            .map(|c| (0..POOL).map(|_| make(*c)).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let mut secret = vec![0u8; args.control_bytes];
        rng.fill(&mut secret);
        let mut guess_early = secret.clone();
        guess_early[0] ^= 1;
        let mut guess_late = secret.clone();
        *guess_late.last_mut().expect("control_bytes >= 1") ^= 1;
        Ok(Self {
            pools,
            secret,
            guess_early,
            guess_late,
        })
    }

    /// Every input fails or opens as its class says, so the timed loop does what it claims.
    fn check(&self, key: &PrivateKey) -> Result<()> {
        for class in Class::ALL {
            for input in &self.pools[class.index()] {
                let opened = open([key], LABEL, input).is_ok();
                ensure!(
                    opened == (class == Class::Valid),
                    "a {} input {} instead of {}",
                    class.name(),
                    if opened { "opened" } else { "failed" },
                    if opened { "failing" } else { "opening" },
                );
            }
        }
        Ok(())
    }
}

/// Times `per_class` calls of every class, in one random interleaved order, after an untimed
/// warm-up; returns nanoseconds per call, one vector per class (in [`Class::ALL`] order).
fn measure(key: &PrivateKey, inputs: &Inputs, args: &TimingArgs, rng: &mut Rng) -> Vec<Vec<f64>> {
    let timer = Timer::new(args.clock);
    for class in schedule(WARMUP, rng) {
        time_one(&timer, key, inputs, class, rng);
    }
    let mut samples = vec![Vec::with_capacity(args.samples); Class::ALL.len()];
    for class in schedule(args.samples, rng) {
        let ns = time_one(&timer, key, inputs, class, rng);
        samples[class.index()].push(ns);
    }
    samples
}

/// `per_class` of every class, shuffled.
fn schedule(per_class: usize, rng: &mut Rng) -> Vec<Class> {
    let mut order: Vec<Class> = Class::ALL
        .iter()
        .flat_map(|c| std::iter::repeat_n(*c, per_class))
        .collect();
    rng.shuffle(&mut order);
    order
}

/// One timed call of `open` on a random input of `class`, including dropping its result (the
/// plaintext is zeroized on drop, as the failure path zeroizes its buffer inside `open`).
fn time_one(timer: &Timer, key: &PrivateKey, inputs: &Inputs, class: Class, rng: &mut Rng) -> f64 {
    let input = &inputs.pools[class.index()][rng.below(POOL)];
    let guess = match class {
        Class::ControlEarly => Some(&inputs.guess_early),
        Class::ControlLate => Some(&inputs.guess_late),
        _ => None,
    };
    let start = timer.now_ns();
    black_box(open([key], LABEL, black_box(input)).is_ok());
    if let Some(guess) = guess {
        black_box(naive_eq(&inputs.secret, guess));
    }
    (timer.now_ns() - start) as f64
}

/// Reads the chosen clock in nanoseconds.
struct Timer {
    clock: Clock,
    base: Instant,
}

impl Timer {
    fn new(clock: Clock) -> Self {
        Self {
            clock,
            base: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        match self.clock {
            Clock::Cpu => {
                let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
                (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
            }
            Clock::Wall => self.base.elapsed().as_nanos() as u64,
        }
    }
}

/// The positive control's leak on its own: how much longer the compare differing at the last
/// byte takes than the one differing at the first, in ns per call (median of batches, wall time).
fn control_leak_ns(inputs: &Inputs) -> f64 {
    const BATCH: u32 = 1000;
    let per_call = |guess: &[u8]| {
        let batches: Vec<f64> = (0..31)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..BATCH {
                    black_box(naive_eq(&inputs.secret, black_box(guess)));
                }
                start.elapsed().as_nanos() as f64 / f64::from(BATCH)
            })
            .collect();
        median(&sorted(&batches))
    };
    per_call(&inputs.guess_late) - per_call(&inputs.guess_early)
}

/// A sorted copy.
fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// The textbook timing leak: returns at the first differing byte.
fn naive_eq(a: &[u8], b: &[u8]) -> bool {
    for (x, y) in a.iter().zip(b) {
        if black_box(*x) != *y {
            return false;
        }
    }
    a.len() == b.len()
}

/// splitmix64, seeded from the system RNG: input choice and order only, nothing secret.
struct Rng(u64);

impl Rng {
    fn from_system() -> Result<Self> {
        let mut seed = [0u8; 8];
        SystemRng.fill(&mut seed).context("seeding the schedule")?;
        Ok(Self(u64::from_le_bytes(seed)))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is below 2^-50 for the sizes used here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Mean, sample variance and count of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Moments {
    mean: f64,
    var: f64,
    n: usize,
}

impl Moments {
    fn of(samples: &[f64]) -> Self {
        let n = samples.len();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        Self { mean, var, n }
    }
}

/// Welch's t statistic of two samples (positive when `a` is slower).
fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    let (a, b) = (Moments::of(a), Moments::of(b));
    let se = (a.var / a.n as f64 + b.var / b.n as f64).sqrt();
    if se == 0.0 {
        return 0.0;
    }
    (a.mean - b.mean) / se
}

/// dudect's crop levels: keep samples below the pooled p-th percentile, p = 1 - 0.5^(10(k+1)/100)
/// for k in 0..100 (from 6.7% up to 99.9%, dense near the top where interference lives).
fn crop_levels() -> impl Iterator<Item = f64> {
    (0..100).map(|k| 1.0 - 0.5f64.powf(10.0 * f64::from(k + 1) / 100.0))
}

/// The largest |t| between two sorted samples over no crop and dudect's 100 crops, with the crop
/// it occurred at (`None`: all samples).
fn max_t(a: &[f64], b: &[f64]) -> (f64, Option<f64>) {
    let mut pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    pooled.sort_by(f64::total_cmp);
    let mut best = (welch_t(a, b), None);
    for level in crop_levels() {
        let limit = pooled[(level * (pooled.len() - 1) as f64) as usize];
        let (na, nb) = (
            a.partition_point(|x| *x < limit),
            b.partition_point(|x| *x < limit),
        );
        if na < MIN_CROPPED || nb < MIN_CROPPED {
            continue;
        }
        let t = welch_t(&a[..na], &b[..nb]);
        if t.abs() > best.0.abs() {
            best = (t, Some(level));
        }
    }
    best
}

/// Median of a sorted, non-empty sample.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// One compared pair of classes and its statistic.
#[derive(Debug)]
struct PairResult {
    a: Class,
    b: Class,
    role: Role,
    t: f64,
    crop: Option<f64>,
    median_diff_ns: f64,
}

impl PairResult {
    fn new(a: Class, b: Class, role: Role, samples: &[Vec<f64>]) -> Self {
        let (sa, sb) = (sorted(&samples[a.index()]), sorted(&samples[b.index()]));
        let (t, crop) = max_t(&sa, &sb);
        Self {
            a,
            b,
            role,
            t,
            crop,
            median_diff_ns: median(&sa) - median(&sb),
        }
    }

    fn exceeds(&self, threshold: f64) -> bool {
        self.t.abs() > threshold
    }

    fn verdict(&self, threshold: f64) -> &'static str {
        match (self.role, self.exceeds(threshold)) {
            (Role::MustMatch, false) => "ok",
            (Role::MustMatch, true) => "LEAK",
            (Role::Expected, true) => "differs (expected, not judged)",
            (Role::Expected, false) => "same (not judged)",
            (Role::Control, true) => "detected (test has power)",
            (Role::Control, false) => "NOT DETECTED (no power)",
        }
    }
}

fn print_classes(samples: &[Vec<f64>]) {
    println!();
    println!(
        "{:<18} {:>8} {:>10} {:>10} {:>10}  input",
        "class", "samples", "mean µs", "median µs", "min µs"
    );
    for class in Class::ALL {
        let s = sorted(&samples[class.index()]);
        let m = Moments::of(&s);
        println!(
            "{:<18} {:>8} {:>10.1} {:>10.1} {:>10.1}  {}",
            class.name(),
            m.n,
            m.mean / 1e3,
            median(&s) / 1e3,
            s[0] / 1e3,
            class.describe()
        );
    }
}

fn print_pairs(results: &[PairResult], args: &TimingArgs) {
    println!();
    println!(
        "{:<40} {:>9} {:>9} {:>12}  verdict",
        "pair (Welch t, largest over 101 crops)", "t", "crop", "Δmedian ns"
    );
    for r in results {
        let crop = r
            .crop
            .map_or("none".to_owned(), |p| format!("{:.1}%", p * 100.0));
        println!(
            "{:<40} {:>9.2} {:>9} {:>12.0}  {}",
            format!("{} vs {}", r.a.name(), r.b.name()),
            r.t,
            crop,
            r.median_diff_ns,
            r.verdict(args.threshold)
        );
    }
    println!();
    println!(
        "threshold: |t| > {} means distinguishable (dudect's); t > 0: the first class is slower",
        args.threshold
    );
}

/// Fails on a leak between classes that must match, or on an undetected positive control.
fn verdict(results: &[PairResult], threshold: f64) -> Result<()> {
    let name = |r: &PairResult| format!("{} vs {} (t = {:.2})", r.a.name(), r.b.name(), r.t);
    let leaks: Vec<String> = results
        .iter()
        .filter(|r| r.role == Role::MustMatch && r.exceeds(threshold))
        .map(name)
        .collect();
    if !leaks.is_empty() {
        bail!(
            "timing difference beyond |t| = {threshold}: {}",
            leaks.join(", ")
        );
    }
    let missed: Vec<String> = results
        .iter()
        .filter(|r| r.role == Role::Control && !r.exceeds(threshold))
        .map(name)
        .collect();
    if !missed.is_empty() {
        bail!(
            "the positive control went undetected ({}): this run cannot tell a leak from noise; \
             rerun with more --samples",
            missed.join(", ")
        );
    }
    println!(
        "result: no timing difference beyond |t| = {threshold} between classes that must match"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_t_of_known_samples() {
        // means 2 and 5, variances 1 and 1, n = 3 each: t = -3 / sqrt(2/3).
        let t = welch_t(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert!((t + 3.0 / (2.0f64 / 3.0).sqrt()).abs() < 1e-12, "{t}");
        assert_eq!(welch_t(&[1.0, 1.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn crops_span_dudect_levels() {
        let levels: Vec<f64> = crop_levels().collect();
        assert_eq!(levels.len(), 100);
        assert!((levels[0] - (1.0 - 0.5f64.powf(0.1))).abs() < 1e-12);
        assert!(levels.windows(2).all(|w| w[0] < w[1]));
        assert!(levels[99] > 0.999);
    }

    #[test]
    fn cropping_ignores_slow_outliers() {
        // Same distribution, but `a` has a few huge outliers: uncropped t is diluted, a crop
        // removes them and finds no difference; a real shift is found through the outliers.
        let base = sorted(
            &(0..1000)
                .map(|i| 1000.0 + f64::from(i % 10))
                .collect::<Vec<_>>(),
        );
        let mut a = base.clone();
        a[..5].iter_mut().for_each(|x| *x = 1e9);
        let a = sorted(&a);
        let (t, _) = max_t(&a, &base);
        assert!(t.abs() < 4.5, "{t}");
        let shifted: Vec<f64> = base.iter().map(|x| x + 3.0).collect();
        let (t, _) = max_t(&shifted, &base);
        assert!(t > 4.5, "{t}");
    }

    #[test]
    fn naive_eq_is_equality() {
        assert!(naive_eq(b"abc", b"abc"));
        assert!(!naive_eq(b"abc", b"abd"));
        assert!(!naive_eq(b"abc", b"ab"));
    }

    #[test]
    fn every_comparison_is_between_distinct_classes() {
        let pairs = comparisons();
        assert_eq!(pairs.iter().filter(|p| p.2 == Role::MustMatch).count(), 7);
        assert!(pairs.iter().all(|(a, b, _)| a != b));
        assert!(pairs.iter().any(|p| p.2 == Role::Control));
    }
}
