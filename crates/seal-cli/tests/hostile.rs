//! The CLI's hostile-input corpus (`tests/data/hostile-inputs.yaml`): broken, binary, oversized
//! and adversarial files, each with the exact outcome — an error naming the input, the field and
//! the fix, never a value — and bounded work (the parser's and keyseal's own limits).

mod util;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail, ensure};
use serde::Deserialize;
use util::*;

const CASES: &str = include_str!("data/hostile-inputs.yaml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    case: String,
    why: String,
    text: Option<String>,
    generate: Option<String>,
    args: String,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    code: i32,
    #[serde(default)]
    stderr: Vec<String>,
    #[serde(default)]
    lacks: Vec<String>,
    objects: Option<usize>,
    items: Option<usize>,
}

fn cases() -> Result<Vec<Case>> {
    let docs = keyseal_api::input::documents(CASES)?;
    let list = docs
        .first()
        .and_then(|d| d.as_array())
        .context("one YAML list")?;
    list.iter()
        .map(|c| serde_json::from_value(c.clone()).with_context(|| format!("case {}", c["case"])))
        .collect()
}

const HEADER: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: a, namespace: b}\n";

/// The bytes of a generated input.
fn generate(what: &str) -> Result<Vec<u8>> {
    let (name, arg) = what.split_once(':').unwrap_or((what, ""));
    Ok(match name {
        "junk" => keyseal_testenv::data::noise(0x9e37_79b9_7f4a_7c15, 64 << 10),
        "non-utf8" => [HEADER.as_bytes(), b"stringData: {pw: \"ab\xffcd\"}\n"].concat(),
        "keys" => {
            let mut text = format!("{HEADER}stringData:\n");
            for i in 0..arg.parse::<usize>()? {
                text.push_str(&format!("  k{i}: v{i}\n"));
            }
            text.into_bytes()
        }
        "huge" => {
            let mib: usize = arg.parse()?;
            let mut text = format!("{HEADER}stringData:\n  big: \"").into_bytes();
            text.resize(text.len() + (mib << 20), b'A');
            text.extend_from_slice(b"\"\n");
            text
        }
        "laughs" => {
            let mut text =
                format!("{HEADER}l0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
            for i in 1..12 {
                let refs = vec![format!("*a{}", i - 1); 9].join(", ");
                text.push_str(&format!("l{i}: &a{i} [{refs}]\n"));
            }
            text.into_bytes()
        }
        "deep-yaml" => format!(
            "{HEADER}x: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
        .into_bytes(),
        "deep-json" => format!(
            r#"{{"apiVersion":"v1","kind":"Secret","x":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
        .into_bytes(),
        other => bail!("unknown generator {other:?}"),
    })
}

fn run_case(env: &Env, case: &Case) -> Result<()> {
    let input = match (&case.text, &case.generate) {
        (Some(text), None) => Some(text.as_bytes().to_vec()),
        (None, Some(what)) => Some(generate(what)?),
        (None, None) => None,
        (Some(_), Some(_)) => bail!("text or generate, not both"),
    };
    if let Some(bytes) = input {
        std::fs::write(env.path("in"), bytes)?;
    }
    let run = env.run_line(&case.args, "");
    let e = &case.expect;
    ensure!(
        run.code == e.code,
        "exit {} (expected {}); stderr: {}",
        run.code,
        e.code,
        run.stderr
    );
    for text in &e.stderr {
        ensure!(
            run.stderr.contains(text.as_str()),
            "stderr lacks {text:?}: {}",
            run.stderr
        );
    }
    for text in &e.lacks {
        ensure!(
            !run.stderr.contains(text.as_str()),
            "stderr quotes {text:?}: {}",
            run.stderr
        );
    }
    if e.code != 0 {
        ensure!(run.stderr.starts_with("error: "), "stderr: {}", run.stderr);
        ensure!(run.stdout.is_empty(), "stdout on error: {}", run.stdout);
    }
    if let Some(objects) = e.objects {
        let sealed = run.sealed();
        ensure!(sealed.len() == objects, "{} objects", sealed.len());
        let items: BTreeMap<_, _> = sealed
            .iter()
            .flat_map(|s| s.spec.encrypted_data.iter())
            .collect();
        ensure!(Some(items.len()) == e.items, "{} items", items.len());
    }
    Ok(())
}

#[test]
fn hostile_inputs_each_end_as_expected() -> Result<()> {
    let cases = cases()?;
    ensure!(cases.len() >= 20, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let env = Env::new();
        if let Err(e) = run_case(&env, case) {
            failures.push(format!("{} ({}): {e:#}", case.case, case.why));
        }
    }
    ensure!(
        failures.is_empty(),
        "cases that did not end as expected:\n{}",
        failures.join("\n")
    );
    Ok(())
}
