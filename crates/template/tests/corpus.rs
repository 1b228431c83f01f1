//! Runs `tests/data/cases.txt`: templates with the output Go's text/template + sprig produced for
//! them (or the fact that Go failed), plus the cases where keyseal deliberately refuses.

use std::collections::BTreeMap;

use keyseal_template::render;

#[derive(Debug, Default)]
struct Case {
    name: String,
    template: String,
    items: BTreeMap<String, Vec<u8>>,
    expect: Option<Vec<u8>>,
    go_error: bool,
    keyseal_error: bool,
}

/// Go's `strconv.Unquote` for the forms Go's `strconv.Quote` writes, and raw strings.
fn unquote(lit: &str) -> Vec<u8> {
    if let Some(raw) = lit.strip_prefix('`') {
        return raw
            .strip_suffix('`')
            .expect("closing backquote")
            .as_bytes()
            .to_vec();
    }
    let body = lit
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("bad literal {lit}"));
    let mut out = Vec::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let e = chars.next().expect("escape");
        let mut hex = |n: usize| -> u32 {
            let digits: String = (0..n).map(|_| chars.next().expect("hex digit")).collect();
            u32::from_str_radix(&digits, 16).expect("hex")
        };
        match e {
            'a' => out.push(7),
            'b' => out.push(8),
            'f' => out.push(12),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(11),
            '\\' => out.push(b'\\'),
            '"' => out.push(b'"'),
            'x' => out.push(hex(2) as u8),
            'u' | 'U' => {
                let c = char::from_u32(hex(if e == 'u' { 4 } else { 8 })).expect("rune");
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            other => panic!("unexpected escape \\{other}"),
        }
    }
    out
}

fn cases() -> Vec<Case> {
    let text = include_str!("data/cases.txt");
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("=== ") {
            cases.push(Case {
                name: name.to_string(),
                ..Case::default()
            });
            continue;
        }
        let case = cases.last_mut().expect("a case header first");
        if let Some(t) = line.strip_prefix("template: ") {
            case.template = String::from_utf8(unquote(t)).expect("templates are UTF-8");
        } else if let Some(rest) = line.strip_prefix("item ") {
            let (k, v) = rest.split_once(": ").expect("item name: value");
            case.items.insert(k.to_string(), unquote(v));
        } else if let Some(e) = line.strip_prefix("expect: ") {
            case.expect = Some(unquote(e));
        } else if line.starts_with("go-error: ") {
            case.go_error = true;
        } else if line.starts_with("keyseal-error: ") {
            case.keyseal_error = true;
        } else {
            panic!("unexpected line in cases.txt: {line}");
        }
    }
    cases
}

#[test]
fn corpus_matches_go() {
    let cases = cases();
    assert!(
        cases.len() > 250,
        "corpus unexpectedly small: {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let got = render(&case.template, &case.items);
        match (&case.expect, got) {
            (Some(want), Ok(got)) if *want == got => {}
            (Some(want), got) => failures.push(format!(
                "{}: want {:?}, got {:?}",
                case.name,
                String::from_utf8_lossy(want),
                got.map(|g| String::from_utf8_lossy(&g).into_owned())
            )),
            (None, Err(e)) => {
                if std::env::var_os("CORPUS_SHOW_ERRORS").is_some() {
                    eprintln!("{}: {e}", case.name);
                }
                assert!(
                    case.go_error || case.keyseal_error,
                    "{}: case has no expectation",
                    case.name
                );
                // Errors never carry item values.
                for v in case.items.values().filter(|v| v.len() > 2) {
                    let msg = e.to_string();
                    assert!(
                        !msg.contains(&*String::from_utf8_lossy(v)),
                        "{}: error {msg:?} leaks an item value",
                        case.name
                    );
                }
            }
            (None, Ok(got)) => failures.push(format!(
                "{}: want an error, got {:?}",
                case.name,
                String::from_utf8_lossy(&got)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
