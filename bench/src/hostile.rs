//! `keyseal-bench hostile`: what a bad SealedSecret costs the controller, next to a good one in
//! the same run. One release keyseal-controller watches one namespace; for each class in turn the
//! bench creates its objects, waits until every one reports its outcome (Synced True or False at
//! its generation), and charges the controller's CPU time and memory growth over that window to
//! the class. The reference is the class of good objects (one item each, unsealed and written).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::{Scope, SealedSecret};
use keyseal_crypto::{Certificate, encode_base64};
use keyseal_testenv::Cluster;
use keyseal_testenv::controller::Launch;
use keyseal_testenv::usage::{self, Usage};
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::HostileArgs;

const CLASS_LABEL: &str = "keyseal-bench/class";

/// A kind of object, how many of it per `--count`, and the outcome it must reach.
struct Class {
    name: &'static str,
    what: &'static str,
    /// Objects per 100 of `--count`.
    per_hundred: usize,
    synced: &'static str,
    build: fn(&Certificate, &str, &str) -> Result<SealedSecret>,
}

const CLASSES: &[Class] = &[
    Class {
        name: "good",
        what: "one item, unsealed and written (the reference)",
        per_hundred: 100,
        synced: "True",
        build: good,
    },
    Class {
        name: "not-base64",
        what: "one item that is not base64 (no RSA work)",
        per_hundred: 100,
        synced: "False",
        build: not_base64,
    },
    Class {
        name: "wrong-name",
        what: "a value sealed for another name (one RSA operation)",
        per_hundred: 100,
        synced: "False",
        build: wrong_name,
    },
    Class {
        name: "random",
        what: "random ciphertext of a real one's length (one RSA operation)",
        per_hundred: 100,
        synced: "False",
        build: random,
    },
    Class {
        name: "1500-undecryptable",
        what: "1,500 random items, ~1 MB (8 are tried)",
        per_hundred: 10,
        synced: "False",
        build: many_undecryptable,
    },
    Class {
        name: "template-output",
        what: "a template asking for 100 MB (stopped at 1 MiB)",
        per_hundred: 100,
        synced: "False",
        build: huge_output,
    },
    Class {
        name: "template-loop",
        what: "nested ranges of 10^10 steps (stopped at 10^6)",
        per_hundred: 10,
        synced: "False",
        build: endless_loop,
    },
];

/// Runs the benchmark and prints its table.
pub fn run(args: &HostileArgs) -> Result<()> {
    let controller = crate::controller_binary(args.controller.as_deref())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(measure(&controller, args.count))
}

/// One class's figures.
struct Figures {
    objects: usize,
    settled: Duration,
    cpu_per_object: f64,
    rss_growth_kib: i64,
}

async fn measure(binary: &std::path::Path, count: usize) -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("bench-hostile").await?;
    let sa = cluster.controller_identity(ns.name()).await?;
    let mut controller = Launch::new(binary, ns.name())
        .args(["--leader-elect=false"])
        .spawn_keyseal(&sa)?;
    controller
        .wait_serving_cert(Duration::from_secs(120))
        .await?;
    let cert = Certificate::from_pem(controller.cert_pem().await?.as_bytes())?;
    let pid = controller.id().context("the controller's pid")?;
    let api: Api<SealedSecret> = Api::namespaced(cluster.client(), ns.name());

    println!("hostile: controller cost per bad SealedSecret next to a good one, same run");
    println!("cpu: {}", crate::cpu_model());
    println!(
        "  {:<20} {:>7} {:>9} {:>13} {:>8} {:>15}   what",
        "class", "objects", "settled", "CPU/object", "× good", "RSS growth/obj"
    );
    let mut reference = None;
    for class in CLASSES {
        let f = run_class(&api, &cert, ns.name(), class, count, pid)
            .await
            .with_context(|| format!("class {}: {}", class.name, controller.logs()))?;
        let good = *reference.get_or_insert(f.cpu_per_object);
        println!(
            "  {:<20} {:>7} {:>7.1} s {:>10.2} ms {:>8.2} {:>11.1} KiB   {}",
            class.name,
            f.objects,
            f.settled.as_secs_f64(),
            f.cpu_per_object * 1e3,
            f.cpu_per_object / good,
            f.rss_growth_kib as f64 / f.objects as f64,
            class.what
        );
    }
    let end = usage::of(pid)?;
    println!(
        "  controller peak RSS {:.1} MiB over the run; /healthz {}",
        end.peak_kib as f64 / 1024.0,
        controller.get("/healthz").await.map_or(0, |(code, _)| code)
    );
    controller.stop().await?;
    Ok(())
}

async fn run_class(
    api: &Api<SealedSecret>,
    cert: &Certificate,
    ns: &str,
    class: &Class,
    count: usize,
    pid: u32,
) -> Result<Figures> {
    let objects = (count * class.per_hundred / 100).max(1);
    let mut built = Vec::with_capacity(objects);
    for i in 0..objects {
        let mut ss = (class.build)(cert, ns, &format!("{}-{i:05}", class.name))?;
        ss.metadata
            .labels
            .get_or_insert_default()
            .insert(CLASS_LABEL.into(), class.name.into());
        built.push(ss);
    }
    let before = usage::of(pid)?;
    let started = Instant::now();
    for ss in &built {
        api.create(&PostParams::default(), ss).await?;
    }
    settle(api, class, objects).await?;
    let settled = started.elapsed();
    let after: Usage = usage::of(pid)?;
    Ok(Figures {
        objects,
        settled,
        cpu_per_object: (after.cpu_seconds - before.cpu_seconds) / objects as f64,
        rss_growth_kib: after.rss_kib as i64 - before.rss_kib as i64,
    })
}

/// Waits until every object of the class reports the class's outcome at its generation.
async fn settle(api: &Api<SealedSecret>, class: &Class, objects: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let params = ListParams::default().labels(&format!("{CLASS_LABEL}={}", class.name));
    loop {
        let list = api.list(&params).await?;
        let done = list
            .items
            .iter()
            .filter(|ss| {
                let status = ss.status.as_ref();
                status.and_then(|s| s.observed_generation) == ss.metadata.generation
                    && status.is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Synced" && c.status == class.synced)
                    })
            })
            .count();
        if done == objects {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{done} of {objects} reached Synced={} in 10 minutes",
                class.synced
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The classes

fn sealed(
    cert: &Certificate,
    ns: &str,
    name: &str,
    items: &[(&str, &[u8])],
) -> Result<SealedSecret> {
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.into());
    secret.metadata.namespace = Some(ns.into());
    secret.data = Some(
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
            .collect(),
    );
    Ok(keyseal_api::seal_secret_in(
        &secret,
        Scope::Strict,
        cert.public_key(),
    )?)
}

fn good(cert: &Certificate, ns: &str, name: &str) -> Result<SealedSecret> {
    sealed(cert, ns, name, &[("pw", b"bench-hostile-good")])
}

fn not_base64(cert: &Certificate, ns: &str, name: &str) -> Result<SealedSecret> {
    let mut ss = good(cert, ns, name)?;
    ss.spec
        .encrypted_data
        .insert("pw".into(), "!!! not base64 !!!".into());
    Ok(ss)
}

fn wrong_name(cert: &Certificate, ns: &str, name: &str) -> Result<SealedSecret> {
    let mut ss = sealed(cert, ns, &format!("{name}-elsewhere"), &[("pw", b"x")])?;
    ss.metadata.name = Some(name.into());
    Ok(ss)
}

/// A random value the length of a sealed 16-byte one (2 + 512 + 16 + 16 bytes for RSA-4096).
fn random_value(seed: u64) -> String {
    let mut bytes = keyseal_testenv::data::noise(seed, 546);
    bytes[..2].copy_from_slice(&512u16.to_be_bytes());
    encode_base64(&bytes)
}

fn random(cert: &Certificate, ns: &str, name: &str) -> Result<SealedSecret> {
    let mut ss = good(cert, ns, name)?;
    ss.spec.encrypted_data.insert("pw".into(), random_value(7));
    Ok(ss)
}

fn many_undecryptable(cert: &Certificate, ns: &str, name: &str) -> Result<SealedSecret> {
    let mut ss = good(cert, ns, name)?;
    ss.spec.encrypted_data = (0..1500u64)
        .map(|i| (format!("item-{i:05}"), random_value(i + 1)))
        .collect();
    Ok(ss)
}

fn with_template(cert: &Certificate, ns: &str, name: &str, template: &str) -> Result<SealedSecret> {
    let mut ss = good(cert, ns, name)?;
    ss.spec.template.data = Some([("x".to_owned(), Some(template.to_owned()))].into());
    Ok(ss)
}

fn huge_output(cert: &Certificate, ns: &str, name: &str) -> Result<SealedSecret> {
    with_template(cert, ns, name, "{{ repeat 100000000 .pw }}")
}

fn endless_loop(cert: &Certificate, ns: &str, name: &str) -> Result<SealedSecret> {
    let range = r#"range splitList "" (repeat 100000 "a")"#;
    with_template(
        cert,
        ns,
        name,
        &format!("{{{{ {range} }}}}{{{{ {range} }}}}{{{{ end }}}}{{{{ end }}}}"),
    )
}
