//! `keyseal-bench crypto`: RSA-4096 seal and unseal throughput of keyseal-crypto, next to
//! `openssl speed rsa4096` run on the same machine a few seconds earlier.
//!
//! Sealing is one RSA-OAEP public-key operation plus AES-GCM over a small value, so it is
//! compared with OpenSSL's public-key (verify) rate; unsealing is one blinded private-key
//! operation plus AES-GCM, compared with OpenSSL's private-key (sign) rate. The GCM part is
//! negligible next to RSA at this size, so a ratio near 1 means the wrapper adds nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use keyseal_crypto::{PrivateKey, open, seal};

use crate::CryptoArgs;
use crate::openssl::{self, RsaSpeed};

/// Modulus size of sealing keys, upstream's default and ours.
const BITS: usize = 4096;
/// Keys offered to `open` in the key-trial case; the right one is last.
const TRIAL_KEYS: usize = 12;
/// A strict-scope label (`namespace/name`), what most real values are sealed under.
const LABEL: &[u8] = b"bench/db-credentials";
/// About the size of a typical secret value (a password or a token).
const PLAINTEXT: &[u8] = b"correct-horse-battery-staple-32b";

/// Runs the benchmark and prints its table.
pub fn run(args: &CryptoArgs) -> Result<()> {
    let seconds = Duration::from_secs(args.seconds);
    crate::print_machine();
    println!(
        "crypto: RSA-{BITS}, {}s of wall time per operation, one thread",
        args.seconds
    );

    eprintln!("generating {TRIAL_KEYS} RSA-{BITS} keys (not timed)...");
    let keys = generate_keys(TRIAL_KEYS)?;
    let right = keys.last().expect("TRIAL_KEYS > 0");

    eprintln!(
        "running `{} speed -elapsed -seconds {} rsa{BITS}`...",
        args.openssl.display(),
        args.seconds
    );
    let reference = openssl::speed_rsa(&args.openssl, BITS, args.seconds)?;

    eprintln!("running keyseal seal...");
    let sealed = seal(right.public_key(), LABEL, PLAINTEXT).context("sealing a value")?;
    let seal_rate = ops_per_second(seconds, || {
        black_box(seal(right.public_key(), LABEL, black_box(PLAINTEXT)).expect("seal"));
    });

    eprintln!("running keyseal unseal (1 key)...");
    check_open(std::slice::from_ref(right), &sealed, 0)?;
    let unseal_rate = ops_per_second(seconds, || {
        black_box(open([right], LABEL, black_box(&sealed)).expect("open"));
    });

    eprintln!("running keyseal unseal ({TRIAL_KEYS} keys, right one last)...");
    check_open(&keys, &sealed, TRIAL_KEYS - 1)?;
    let trial_rate = ops_per_second(seconds, || {
        black_box(open(&keys, LABEL, black_box(&sealed)).expect("open"));
    });

    print_table(&reference, seal_rate, unseal_rate, trial_rate);
    Ok(())
}

/// RSA-4096 private-key operations per second on every core at once: one thread per core, each
/// opening a one-item value with the right key only (`keyseal_crypto::open`: one blinded
/// private-key operation plus GCM, what a controller does per item), for `budget` of wall time.
/// Returns the summed rate and the number of threads.
pub fn private_ops_all_cores(budget: Duration) -> Result<(f64, usize)> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let key = generate_keys(1)?.pop().context("no key generated")?;
    let sealed = seal(key.public_key(), LABEL, PLAINTEXT).context("sealing a value")?;
    check_open(std::slice::from_ref(&key), &sealed, 0)?;
    let rates: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    ops_per_second(budget, || {
                        black_box(open([&key], LABEL, black_box(&sealed)).expect("open"));
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("RSA thread panicked"))
            .collect()
    });
    Ok((rates.iter().sum(), threads))
}

/// Generates `n` keys on every core: key generation is setup, and 4096-bit keys are slow.
fn generate_keys(n: usize) -> Result<Vec<PrivateKey>> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let per_thread = n.div_ceil(threads);
    let batches = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let count = per_thread.min(n.saturating_sub(t * per_thread));
                scope.spawn(move || {
                    (0..count)
                        .map(|_| PrivateKey::generate(BITS))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("key generation thread panicked"))
            .collect::<Vec<_>>()
    });
    let mut keys = Vec::with_capacity(n);
    for batch in batches {
        keys.extend(batch.context("generating an RSA key")?);
    }
    Ok(keys)
}

/// Makes sure the loop about to be timed does the work it claims: opens with the expected key.
fn check_open(keys: &[PrivateKey], sealed: &[u8], want_index: usize) -> Result<()> {
    let opened = open(keys, LABEL, sealed).context("opening the benchmark value")?;
    ensure!(
        opened.plaintext.as_slice() == PLAINTEXT && opened.key_index == want_index,
        "opened the benchmark value with key {} instead of key {want_index}",
        opened.key_index
    );
    Ok(())
}

/// Calls `op` until `budget` of wall time has passed; returns completed calls per second.
///
/// Wall time, like `openssl speed -elapsed`, so both sides are charged for the same
/// interference from other processes.
fn ops_per_second(budget: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut count: u64 = 0;
    let elapsed = loop {
        op();
        count += 1;
        let elapsed = start.elapsed();
        if elapsed >= budget {
            break elapsed;
        }
    };
    count as f64 / elapsed.as_secs_f64()
}

fn print_table(reference: &RsaSpeed, seal_rate: f64, unseal_rate: f64, trial_rate: f64) {
    println!();
    println!(
        "{:<32} {:>11} {:>14} {:>11} {:>7}",
        "operation", "keyseal/s", "openssl op", "openssl/s", "ratio"
    );
    let row = |name: &str, ours: f64, op: &str, theirs: f64| {
        println!(
            "{name:<32} {ours:>11.1} {op:>14} {theirs:>11.1} {:>7.2}",
            ours / theirs
        );
    };
    row("seal", seal_rate, "public/verify", reference.public_per_s);
    row(
        "unseal, 1 key",
        unseal_rate,
        "private/sign",
        reference.private_per_s,
    );
    row(
        &format!("unseal, {TRIAL_KEYS} keys (right one last)"),
        trial_rate,
        "private/sign",
        reference.private_per_s,
    );
    println!();
    println!(
        "key trial: unseal with {TRIAL_KEYS} keys runs at {:.3} of the 1-key rate \
         (1/{TRIAL_KEYS} = {:.3} if every wrong key costs one full private-key operation)",
        trial_rate / unseal_rate,
        1.0 / TRIAL_KEYS as f64
    );
    println!(
        "ratio = keyseal/openssl (> 1 means keyseal is faster); reference: \
         `openssl speed -elapsed rsa{BITS}` in this run, e = 65537 on both sides"
    );
}
