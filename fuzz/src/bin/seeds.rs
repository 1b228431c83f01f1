//! Writes the seed corpora under `corpus/<target>/`: `scripts/fuzz seeds`. Deterministic file
//! names; values sealed afresh differ from run to run, which is fine for seeds.
//!
//! Built like the fuzz targets (instrumented code only links against libFuzzer's main), so the
//! work happens in the fuzz target's `init` block, which exits before any fuzzing.

#![no_main]
#![forbid(unsafe_code)]

use std::fs;
use std::path::Path;

use keyseal_api::{input, seal_secret, to_yaml};
use keyseal_crypto::{Certificate, encode_base64, seal};
use keyseal_fuzz::{CERT_PEM, KEY_PEM, LABEL, key};

const SECRET_YAML: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: value\n  namespace: fuzz\n  labels: {app: shop}\n  annotations: {note: x}\ntype: Opaque\ndata:\n  password: czNjcjN0\nstringData:\n  user: admin\n";

libfuzzer_sys::fuzz_target!(
    init: {
        if let Err(error) = write_all() {
            eprintln!("seeds: {error}");
            std::process::exit(1);
        }
        std::process::exit(0);
    },
    |_data: &[u8]| {}
);

fn write_all() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write(&root, "open", &open_seeds())?;
    write(&root, "input", &input_seeds()?)?;
    write(&root, "template", &template_seeds()?)?;
    write(&root, "keys", &key_seeds()?)?;
    Ok(())
}

fn write(root: &Path, target: &str, seeds: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
    let dir = root.join(target);
    fs::create_dir_all(&dir)?;
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes)?;
    }
    println!("{target}: {} seeds", seeds.len());
    Ok(())
}

fn open_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let public = key().public_key();
    let short = seal(public, LABEL, b"s3cr3t").expect("seal");
    let long = seal(public, LABEL, &[b'x'; 300]).expect("seal");
    let empty = seal(public, LABEL, b"").expect("seal");
    let other_label = seal(public, b"fuzz/other", b"s3cr3t").expect("seal");
    vec![
        ("valid-short", short.clone()),
        ("valid-long", long),
        ("valid-empty", empty),
        ("wrong-label", other_label),
        ("base64", encode_base64(&short).into_bytes()),
        ("truncated", short[..short.len() - 1].to_vec()),
        ("length-only", vec![1, 0]),
        ("empty", Vec::new()),
    ]
}

fn input_seeds() -> Result<Vec<(&'static str, Vec<u8>)>, Box<dyn std::error::Error>> {
    let secret = input::secrets(SECRET_YAML)?.remove(0);
    let mut sealed = seal_secret(&secret, key().public_key())?;
    sealed.spec.template.data = Some(
        [
            (
                "url",
                Some("postgres://{{ .user }}:{{ .password | urlquery }}@db"),
            ),
            ("dropped", None),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect(),
    );
    let json = serde_json::to_vec(&sealed)?;
    let yaml = to_yaml(&sealed)?.into_bytes();
    let list = format!(
        r#"{{"kind":"List","items":[{}]}}"#,
        serde_json::to_string(&serde_json::to_value(&secret)?)?
    );
    let spec = serde_json::to_vec(&sealed.spec)?;
    let legacy = format!(
        r#"{{"apiVersion":"bitnami.com/v1alpha1","kind":"SealedSecret","metadata":{{"name":"value","namespace":"fuzz"}},"spec":{{"data":"{}"}}}}"#,
        encode_base64(&seal(
            key().public_key(),
            LABEL,
            br#"{"stringData":{"a":"b"}}"#
        )?)
    );
    Ok(vec![
        ("sealed-secret.json", json),
        ("sealed-secret.yaml", yaml),
        ("sealed-spec.json", spec),
        ("sealed-legacy.json", legacy.into_bytes()),
        ("secret.yaml", SECRET_YAML.as_bytes().to_vec()),
        ("secret.json", serde_json::to_vec(&secret)?),
        ("secret-list.json", list.into_bytes()),
        (
            "two-docs.yaml",
            format!("{SECRET_YAML}---\n{SECRET_YAML}").into_bytes(),
        ),
    ])
}

/// The templates of the template crate's conformance corpus, each with its items after a NUL.
fn template_seeds() -> Result<Vec<(&'static str, Vec<u8>)>, Box<dyn std::error::Error>> {
    let cases =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/template/tests/data/cases.txt");
    let text = fs::read_to_string(cases)?;
    let mut seeds = Vec::new();
    for case in text.split("\n=== ").skip(1) {
        let mut template = None;
        let mut items = Vec::new();
        for line in case.lines() {
            if let Some(quoted) = line.strip_prefix("template: ") {
                template = go_unquote(quoted);
            } else if let Some(rest) = line.strip_prefix("item ")
                && let Some((name, quoted)) = rest.split_once(": ")
                && let Some(value) = go_unquote(quoted)
            {
                items.push(format!("{name}={value}"));
            }
        }
        if let Some(template) = template {
            let mut seed = template.into_bytes();
            seed.push(0);
            seed.extend_from_slice(items.join("\n").as_bytes());
            seeds.push(seed);
        }
    }
    Ok(seeds
        .into_iter()
        .enumerate()
        .map(|(i, s)| (&*format!("case-{i:03}").leak(), s))
        .collect())
}

/// Go's `"…"` (common escapes) and `` `…` `` quoting; `None` for anything else.
fn go_unquote(quoted: &str) -> Option<String> {
    if let Some(raw) = quoted.strip_prefix('`') {
        return raw.strip_suffix('`').map(str::to_owned);
    }
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '0' => '\0',
            c @ ('"' | '\\' | '\'') => c,
            _ => return None,
        });
    }
    Some(out)
}

fn key_seeds() -> Result<Vec<(&'static str, Vec<u8>)>, Box<dyn std::error::Error>> {
    let k = key();
    let cert = Certificate::from_pem(CERT_PEM)?;
    let pair = [CERT_PEM, b"\0", KEY_PEM].concat();
    let key_secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: sealed-secrets-key, namespace: kube-system}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        encode_base64(CERT_PEM),
        encode_base64(KEY_PEM)
    );
    Ok(vec![
        ("key-pkcs1.pem", KEY_PEM.to_vec()),
        ("key-pkcs8.pem", k.to_pkcs8_pem().as_bytes().to_vec()),
        ("key-pkcs8.der", k.to_pkcs8_der().to_vec()),
        ("key-pkcs1.der", k.to_pkcs1_der().to_vec()),
        ("public.pem", k.public_key().to_pem().into_bytes()),
        ("public.der", k.public_key().to_spki_der().to_vec()),
        ("cert.pem", CERT_PEM.to_vec()),
        ("cert.der", cert.to_der().to_vec()),
        ("key-secret-pair", pair),
        ("key-secret.yaml", key_secret.into_bytes()),
    ])
}
