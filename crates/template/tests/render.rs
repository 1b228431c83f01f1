//! Behaviour tests for `render` through the public API: each construct, the error variants and
//! their messages, the limits, and properties over arbitrary input.

use std::collections::BTreeMap;

use keyseal_template::{MAX_OUTPUT_BYTES, TemplateError, render};
use proptest::prelude::*;

fn items(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

fn ok(template: &str, pairs: &[(&str, &[u8])]) -> String {
    String::from_utf8(render(template, &items(pairs)).expect("renders")).expect("utf-8")
}

fn err(template: &str, pairs: &[(&str, &[u8])]) -> TemplateError {
    render(template, &items(pairs)).expect_err("fails")
}

const SECRET: &[u8] = b"hunter2-very-secret";

#[test]
fn plain_text_is_unchanged() {
    assert_eq!(ok("no actions here } {", &[]), "no actions here } {");
    assert_eq!(ok("", &[]), "");
}

#[test]
fn fields_index_and_missing_keys() {
    let it: &[(&str, &[u8])] = &[("user", b"admin"), ("tls.crt", b"CERT")];
    assert_eq!(ok("{{ .user }}", it), "admin");
    assert_eq!(ok(r#"{{ index . "tls.crt" }}"#, it), "CERT");
    assert_eq!(ok("{{ .nope }}", it), "<no value>");
    assert_eq!(ok(r#"[{{ index . "nope" }}]"#, it), "[]");
    assert_eq!(ok(r#"{{ .nope | default "d" }}"#, it), "d");
}

#[test]
fn binary_values_pass_through() {
    assert_eq!(
        render("{{ .b }}", &items(&[("b", b"\x00\xff")])).unwrap(),
        b"\x00\xff"
    );
}

#[test]
fn trim_markers_and_comments() {
    assert_eq!(ok("a \n {{- .x -}} \n b", &[("x", b"X")]), "aXb");
    assert_eq!(ok("a{{/* c */}}b", &[]), "ab");
    assert_eq!(ok("a {{- /* c */ -}} b", &[]), "ab");
}

#[test]
fn literals_pipelines_and_variables() {
    assert_eq!(
        ok(r#"{{ "a\tb" }}|{{ `r\n` }}|{{ 0x10 }}|{{ 'a' }}"#, &[]),
        "a\tb|r\\n|16|97"
    );
    assert_eq!(
        ok(r#"{{ .a | replace "b" "X" | upper }}"#, &[("a", b"abc")]),
        "AXC"
    );
    assert_eq!(
        ok(r#"{{ upper (printf "%s-%d" .a 7) }}"#, &[("a", b"x")]),
        "X-7"
    );
    assert_eq!(
        ok(
            r#"{{ $x := .a }}{{ $x = upper $x }}{{ $x }}{{ $.a }}"#,
            &[("a", b"x")]
        ),
        "Xx"
    );
}

#[test]
fn control_structures() {
    let t = r#"{{ if eq .a "1" }}one{{ else if .a }}some{{ else }}none{{ end }}"#;
    assert_eq!(ok(t, &[("a", b"1")]), "one");
    assert_eq!(ok(t, &[("a", b"2")]), "some");
    assert_eq!(ok(t, &[("a", b"")]), "none");
    assert_eq!(
        ok("{{ with .a }}<{{ . }}>{{ else }}-{{ end }}", &[("a", b"v")]),
        "<v>"
    );
    let r = r#"{{ range $i, $h := splitList "," .h }}{{ if $i }};{{ end }}{{ $h }}{{ end }}"#;
    assert_eq!(ok(r, &[("h", b"a,b,c")]), "a;b;c");
    assert_eq!(
        ok(
            "{{ range $k, $v := . }}{{ $k }}={{ $v }} {{ end }}",
            &[("b", b"2"), ("a", b"1")]
        ),
        "a=1 b=2 "
    );
    assert_eq!(
        ok(
            "{{ range 5 }}{{ if eq . 3 }}{{ break }}{{ end }}{{ . }}{{ end }}",
            &[]
        ),
        "012"
    );
}

#[test]
fn sprig_functions() {
    assert_eq!(
        ok(r#"{{ "hello" | b64enc }}|{{ "aGk=" | b64dec }}"#, &[]),
        "aGVsbG8=|hi"
    );
    assert_eq!(
        ok(r#"{{ quote "a\"b" }} {{ squote "x" }}"#, &[]),
        r#""a\"b" 'x'"#
    );
    assert_eq!(
        ok(r#"{{ "a\nb" | indent 2 }}|{{ "a" | nindent 1 }}"#, &[]),
        "  a\n  b|\n a"
    );
    assert_eq!(
        ok(
            r#"{{ title "hello world" }}|{{ trim "  x " }}|{{ nospace " a b " }}"#,
            &[]
        ),
        "Hello World|x|ab"
    );
    assert_eq!(
        ok(
            r#"{{ substr 1 3 "abcd" }}|{{ trunc 2 "abcd" }}|{{ repeat 2 "ab" }}"#,
            &[]
        ),
        "bc|ab|abab"
    );
    assert_eq!(
        ok(r#"{{ sha256sum "" }}"#, &[]),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn environment_files_and_network_are_unreachable() {
    for f in [
        "env",
        "expandenv",
        "getHostByName",
        "readFile",
        "include",
        "tpl",
        "call",
        "sha1sum",
    ] {
        let e = err(&format!(r#"{{{{ {f} "x" }}}}"#), &[]);
        assert!(
            matches!(&e, TemplateError::UnknownFunction { name, .. } if name == f),
            "{f}: {e:?}"
        );
    }
    assert_eq!(
        err(r#"{{ env "HOME" }}"#, &[]).to_string(),
        r#"unknown function "env" at 1:4: keyseal templates cannot read the environment"#
    );
    assert!(matches!(
        err(r#"{{ define "x" }}{{ end }}"#, &[]),
        TemplateError::Unsupported { .. }
    ));
    assert!(matches!(
        err(r#"{{ template "x" }}"#, &[]),
        TemplateError::Unsupported { .. }
    ));
}

#[test]
fn syntax_errors_name_the_position() {
    let cases = [
        ("abc {{ .a ", "1:5", "unclosed action"),
        ("{{ if .a }}x", "1:13", "unexpected EOF"),
        ("{{ end }}", "1:4", "unexpected {{end}}"),
        ("\n{{ \"\\q\" }}", "2:4", "invalid syntax"),
        ("{{ \"abc }}", "1:4", "unterminated quoted string"),
        ("{{ $y }}", "1:4", "undefined variable \"$y\""),
        ("{{ (1 }}", "1:7", "unclosed left paren"),
        ("{{ break }}", "1:4", "outside {{range}}"),
        ("{{/* x }}", "1:1", "unclosed comment"),
    ];
    for (t, pos, what) in cases {
        let e = err(t, &[]);
        assert!(matches!(e, TemplateError::Syntax { .. }), "{t}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(pos) && msg.contains(what), "{t}: {msg}");
    }
}

#[test]
fn argument_count_and_type_errors() {
    let e = err(r#"{{ upper "a" "b" }}"#, &[]);
    assert_eq!(
        e.to_string(),
        "wrong number of arguments for upper at 1:4: want 1, got 2"
    );
    let e = err(r#"{{ "a" | replace "x" }}"#, &[]);
    assert!(matches!(e, TemplateError::ArgCount { got: 2, .. }), "{e:?}");
    let e = err(r#"{{ repeat "3" "a" }}"#, &[]);
    assert!(
        e.to_string()
            .contains("expected int, found string constant"),
        "{e}"
    );
    // Go checks argument counts only when it runs the call.
    assert_eq!(
        ok(r#"{{ if false }}{{ upper "a" "b" }}{{ end }}ok"#, &[]),
        "ok"
    );
}

#[test]
fn missing_key_error_names_the_key() {
    let e = err("{{ .foo | upper }}", &[]);
    assert_eq!(
        e.to_string(),
        r#"missing key "foo" at 1:11: upper needs a string argument"#
    );
}

#[test]
fn errors_never_contain_item_values() {
    let it: &[(&str, &[u8])] = &[("s", SECRET), ("n", b"12345678")];
    let templates = [
        "{{ .s.x }}",
        "{{ .s | repeat -1 }}",
        "{{ range .s }}{{ end }}",
        "{{ index .s 100 }}",
        "{{ eq .s 1 }}",
        "{{ substr 100 200 .s }}",
        "{{ len (len .s) }}",
        "{{ index .s .s }}",
        "{{ .s | .n }}",
        "{{ lt .s 1 }}",
        "{{ index (splitList \"-\" .s) 9 }}",
    ];
    for t in templates {
        let msg = err(t, it).to_string();
        for v in ["hunter2", "secret", "12345678", "19"] {
            assert!(!msg.contains(v), "{t}: {msg}");
        }
    }
}

#[test]
fn output_and_work_are_bounded() {
    let e = err(r#"{{ repeat 2000000 "a" }}"#, &[]);
    assert!(
        matches!(
            e,
            TemplateError::OutputTooLarge {
                limit: MAX_OUTPUT_BYTES,
                ..
            }
        ),
        "{e:?}"
    );
    let e = err(r#"{{ range 2000 }}{{ repeat 1000 "ab" }}{{ end }}"#, &[]);
    assert!(matches!(e, TemplateError::OutputTooLarge { .. }), "{e:?}");
    let e = err(
        "{{ range 100000 }}{{ range 100000 }}{{ end }}{{ end }}",
        &[],
    );
    assert!(matches!(e, TemplateError::TooManySteps { .. }), "{e:?}");
    let deep = format!("{}x{}", "{{ if 1 }}".repeat(101), "{{ end }}".repeat(101));
    assert!(matches!(
        err(&deep, &[]),
        TemplateError::TooDeep { limit: 100, .. }
    ));
    let parens = format!("{{{{ print {}1{} }}}}", "(".repeat(200), ")".repeat(200));
    assert!(matches!(err(&parens, &[]), TemplateError::TooDeep { .. }));
}

proptest! {
    #[test]
    fn text_without_delimiters_round_trips(s in "[^{]*|([^{]*\\{[^{][^{]*)*") {
        prop_assume!(!s.contains("{{"));
        prop_assert_eq!(render(&s, &BTreeMap::new()).unwrap(), s.as_bytes());
    }

    #[test]
    fn field_renders_any_bytes(v in proptest::collection::vec(any::<u8>(), 0..64)) {
        let it = items(&[("k", &v)]);
        prop_assert_eq!(render("{{ .k }}", &it).unwrap(), v.clone());
        prop_assert_eq!(render("{{ .k | b64enc | b64dec }}", &it).unwrap(), v);
    }

    #[test]
    fn arbitrary_templates_never_panic(s in "[{}a-z .|$\"()'`0-9:=,-]{0,40}") {
        let it = items(&[("a", b"x"), ("b", b"")]);
        let _ = render(&s, &it);
        let _ = render(&format!("{{{{{s}}}}}"), &it);
    }
}
