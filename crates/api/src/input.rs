//! Reading Secrets and SealedSecrets from files: multi-document YAML or concatenated JSON.
//!
//! Error messages name the document and the field but never quote a value: the input is
//! plaintext secrets, and serde's own messages may echo the offending value.

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::SealedSecret;

/// Why an input document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The text is neither YAML nor JSON.
    #[error("{format} syntax error{}", .location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Syntax {
        /// `YAML` or `JSON`.
        format: &'static str,
        /// `line L column C`, when known.
        location: Option<String>,
    },
    /// The text is YAML or JSON but goes past a limit the parser keeps to bound memory and time
    /// (alias expansion, nesting, total size): hostile or not meant for keyseal.
    #[error("{format} input exceeds a parser limit ({limit}){}; a Secret is a small, flat object: check that this is the file you meant", .location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Limit {
        /// `YAML` or `JSON`.
        format: &'static str,
        /// Which limit, in the parser's words (names and counts only, never input text).
        limit: String,
        /// `line L column C`, when known.
        location: Option<String>,
    },
    /// No object in the input.
    #[error("no object found in the input")]
    Empty,
    /// A document is not the expected kind.
    #[error("document {index}: expected kind {expected}, found {found}")]
    WrongKind {
        /// 1-based document number.
        index: usize,
        /// The kind wanted.
        expected: &'static str,
        /// The kind found.
        found: String,
    },
    /// A field has the wrong shape.
    #[error("document {index}: field {field} {problem}")]
    Field {
        /// 1-based document number.
        index: usize,
        /// Dotted path of the field.
        field: String,
        /// What is wrong, e.g. `must be a map of strings`.
        problem: String,
    },
}

/// Splits text into JSON values: concatenated JSON when it starts with `{` or `[`, otherwise
/// multi-document YAML. Empty documents are skipped.
pub fn documents(text: &str) -> Result<Vec<Value>, InputError> {
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    let values: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::Deserializer::from_str(trimmed)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .map_err(json_error)?
    } else {
        serde_saphyr::from_multiple::<Value>(text).map_err(yaml_error)?
    };
    let values: Vec<Value> = values.into_iter().filter(|v| !v.is_null()).collect();
    if values.is_empty() {
        return Err(InputError::Empty);
    }
    Ok(values)
}

/// A JSON parse error, without serde's text (which may quote the input).
fn json_error(e: serde_json::Error) -> InputError {
    let location = Some(format!("line {} column {}", e.line(), e.column()));
    // serde_json's only resource limit is its nesting depth.
    if e.to_string().starts_with("recursion limit exceeded") {
        return InputError::Limit {
            format: "JSON",
            limit: "nesting deeper than 128 levels".to_owned(),
            location,
        };
    }
    InputError::Syntax {
        format: "JSON",
        location,
    }
}

/// A YAML parse error. The parser's rendering quotes the input around the error, so only its
/// location is kept, and for a breached resource budget the budget's name and count.
fn yaml_error(e: serde_saphyr::Error) -> InputError {
    let location = e
        .location()
        .map(|l| format!("line {} column {}", l.line(), l.column()));
    let mut inner = &e;
    while let serde_saphyr::Error::WithSnippet { error, .. }
    | serde_saphyr::Error::AliasError { error, .. } = inner
    {
        inner = error;
    }
    match inner {
        serde_saphyr::Error::Budget { breach, .. } => InputError::Limit {
            format: "YAML",
            limit: format!("{breach:?}"),
            location,
        },
        inner if inner.to_string().contains("recursion limit exceeded") => InputError::Limit {
            format: "YAML",
            limit: "nesting too deep".to_owned(),
            location,
        },
        _ => InputError::Syntax {
            format: "YAML",
            location,
        },
    }
}

fn check_kind(index: usize, doc: &Value, expected: &'static str) -> Result<(), InputError> {
    match doc.get("kind").and_then(Value::as_str) {
        None => Ok(()),
        Some(kind) if kind == expected => Ok(()),
        Some(kind) => Err(InputError::WrongKind {
            index,
            expected,
            found: kind.to_owned(),
        }),
    }
}

fn field_error(index: usize, field: &str, problem: &str) -> InputError {
    InputError::Field {
        index,
        field: field.to_owned(),
        problem: problem.to_owned(),
    }
}

/// Checks `data`/`stringData` by hand (so no value is ever quoted), then decodes the rest.
fn secret_from_value(index: usize, mut doc: Value) -> Result<Secret, InputError> {
    check_kind(index, &doc, "Secret")?;
    let obj = doc.as_object_mut().ok_or_else(|| {
        field_error(
            index,
            "(document)",
            "must be an object, a Secret (a JSON array is not a list: use kind: List with items)",
        )
    })?;
    let mut data = std::collections::BTreeMap::new();
    if let Some(d) = obj.remove("data").filter(|v| !v.is_null()) {
        let map = d
            .as_object()
            .ok_or_else(|| field_error(index, "data", "must be a map of base64 strings"))?;
        for (k, v) in map {
            let field = format!("data.{k}");
            let s = v
                .as_str()
                .ok_or_else(|| field_error(index, &field, "must be a base64 string"))?;
            let bytes = keyseal_crypto::decode_base64(s).map_err(|_| {
                field_error(
                    index,
                    &field,
                    "is not valid base64 (put plain text under stringData instead)",
                )
            })?;
            data.insert(k.clone(), k8s_openapi::ByteString(bytes));
        }
    }
    let mut string_data = std::collections::BTreeMap::new();
    if let Some(d) = obj.remove("stringData").filter(|v| !v.is_null()) {
        let map = d
            .as_object()
            .ok_or_else(|| field_error(index, "stringData", "must be a map of strings"))?;
        for (k, v) in map {
            let s = v.as_str().ok_or_else(|| {
                field_error(
                    index,
                    &format!("stringData.{k}"),
                    "must be a string (quote numbers and booleans)",
                )
            })?;
            string_data.insert(k.clone(), s.to_owned());
        }
    }
    // With data and stringData removed, serde's messages can only quote metadata.
    let mut secret: Secret = serde_json::from_value(doc)
        .map_err(|e| field_error(index, "(metadata or type)", &e.to_string()))?;
    secret.data = (!data.is_empty()).then_some(data);
    secret.string_data = (!string_data.is_empty()).then_some(string_data);
    Ok(secret)
}

/// True for a `List`/`SecretList`, and for a kind-less object with an `items` array: Go's
/// `json.Marshal` of a client-go `SecretList` (how scripts and operators back up key Secrets)
/// writes no `kind`, and a Secret has no `items` field, so such an object can only be a list.
fn is_list(doc: &Value) -> bool {
    match doc.get("kind").and_then(Value::as_str) {
        Some("List" | "SecretList") => true,
        None => doc.get("items").is_some_and(Value::is_array),
        Some(_) => false,
    }
}

/// Reads every Secret in `text`. A list (see [`is_list`]) contributes its items.
pub fn secrets(text: &str) -> Result<Vec<Secret>, InputError> {
    let mut out = Vec::new();
    for (i, doc) in documents(text)?.into_iter().enumerate() {
        let index = i + 1;
        if is_list(&doc) {
            let items = doc
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in items {
                out.push(secret_from_value(index, item)?);
            }
        } else {
            out.push(secret_from_value(index, doc)?);
        }
    }
    Ok(out)
}

/// Reads every SealedSecret in `text`.
pub fn sealed_secrets(text: &str) -> Result<Vec<SealedSecret>, InputError> {
    documents(text)?
        .into_iter()
        .enumerate()
        .map(|(i, doc)| {
            check_kind(i + 1, &doc, "SealedSecret")?;
            if !doc.is_object() {
                return Err(field_error(
                    i + 1,
                    "(document)",
                    "must be an object, a SealedSecret (a JSON array is not a list)",
                ));
            }
            // SealedSecrets hold only ciphertext, so serde's message is safe to pass on.
            serde_json::from_value(doc)
                .map_err(|e| field_error(i + 1, "(SealedSecret)", &e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_concatenated_json() {
        let yaml = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: a}\nstringData: {x: why}\n---\n---\nkind: Secret\nmetadata: {name: b}\ndata: {x: eQ==}\n";
        let s = secrets(yaml).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].data.as_ref().unwrap()["x"].0, b"y");
        let json = r#"{"kind":"Secret","metadata":{"name":"a"}} {"kind":"Secret","metadata":{"name":"b"}}"#;
        assert_eq!(secrets(json).unwrap().len(), 2);
        let list = r#"{"kind":"List","items":[{"kind":"Secret","metadata":{"name":"a"}},{"kind":"Secret","metadata":{"name":"b"}}]}"#;
        assert_eq!(secrets(list).unwrap().len(), 2);
    }

    /// Upstream's integration suite backs keys up with `json.Marshal` of a client-go
    /// `SecretList`: no `kind` or `apiVersion` on the list or its items. It was read as one empty
    /// Secret.
    #[test]
    fn regression_kindless_secret_list_is_a_list() {
        let list = r#"{"metadata":{"resourceVersion":"42"},"items":[{"metadata":{"name":"a"},"data":{"tls.key":"eQ=="}},{"metadata":{"name":"b"}}]}"#;
        let s = secrets(list).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].metadata.name.as_deref(), Some("a"));
        assert_eq!(s[0].data.as_ref().unwrap()["tls.key"].0, b"y");
        // An object of another kind with an `items` field is still that kind (and refused).
        let e = secrets(r#"{"kind":"ConfigMapList","items":[]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "document 1: expected kind Secret, found ConfigMapList"
        );
        // A kind-less Secret stays a Secret.
        assert_eq!(
            secrets(r#"{"metadata":{"name":"c"},"stringData":{"k":"v"}}"#).unwrap()[0]
                .metadata
                .name
                .as_deref(),
            Some("c")
        );
    }

    /// Inputs built to exhaust the parser end in a limit error that names the limit, not in a
    /// "syntax error" and never with the input quoted.
    #[test]
    fn parser_limits_are_named() {
        let mut laughs = "l0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_owned();
        for i in 1..12 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            laughs.push_str(&format!("l{i}: &a{i} [{refs}]\n"));
        }
        let e = secrets(&laughs).unwrap_err().to_string();
        assert!(e.starts_with("YAML input exceeds a parser limit ("), "{e}");
        assert!(!e.contains("lol"), "{e}");
        let deep = format!("x: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        assert!(
            secrets(&deep).unwrap_err().to_string().starts_with(
                "YAML input exceeds a parser limit (nesting too deep) at line 1 column"
            )
        );
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(secrets(&deep).unwrap_err().to_string().starts_with(
            "JSON input exceeds a parser limit (nesting deeper than 128 levels) at line 1"
        ));
        let e = secrets(r#"[{"kind":"Secret"}]"#).unwrap_err().to_string();
        assert!(e.contains("a JSON array is not a list"), "{e}");
        let e = sealed_secrets(r#"[{"kind":"SealedSecret"}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a JSON array is not a list"), "{e}");
    }

    #[test]
    fn errors_name_the_field_and_never_the_value() {
        let e = secrets("kind: Secret\nmetadata: {name: a}\nstringData: {password: 123456789}\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "document 1: field stringData.password must be a string (quote numbers and booleans)"
        );
        let e = secrets("kind: Secret\nmetadata: {name: a}\ndata: {password: 'hunter2!!'}\n")
            .unwrap_err();
        assert!(
            e.to_string().contains("data.password is not valid base64"),
            "{e}"
        );
        assert!(!e.to_string().contains("hunter2"));
        let e = secrets("kind: ConfigMap\nmetadata: {name: a}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "document 1: expected kind Secret, found ConfigMap"
        );
        assert_eq!(secrets("").unwrap_err(), InputError::Empty);
        let e = secrets("kind: Secret\nmetadata: [unclosed\n").unwrap_err();
        assert!(e.to_string().starts_with("YAML syntax error"), "{e}");
        let e =
            secrets("{\"kind\": \"Secret\", \"data\": {\"a\": \"top-secret-value\"").unwrap_err();
        assert!(
            e.to_string().starts_with("JSON syntax error at line 1"),
            "{e}"
        );
        assert!(!e.to_string().contains("top-secret"));
    }
}
