//! Renders SealedSecret `spec.template.data` values.
//!
//! Upstream Sealed Secrets renders each `template.data` value as a Go `text/template` whose data
//! (`.`) is a `map[string]string` of item name → decrypted value, with sprig's `TxtFuncMap` minus
//! `env`, `expandenv` and `getHostByName`. This crate implements the subset of that language that
//! templates use in practice (see `README.md` beside this crate for the exact list) and produces
//! byte-for-byte the output Go produces for it.
//!
//! Templates can only ever see the decrypted items: no function reads the environment, files, the
//! network or the clock. Evaluation is bounded (output size, nesting depth, evaluation steps), so a
//! hostile template cannot exhaust memory or CPU. Error messages name template positions and
//! template names only, never an item value.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;

mod exec;
mod funcs;
mod gostr;
mod lex;
mod parse;
mod printf;
mod value;

/// Largest output, and largest intermediate string value, a template may produce (1 MiB).
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;
/// Deepest nesting of `if`/`with`/`range` blocks and parentheses a template may use.
pub const MAX_NESTING: usize = 100;
/// Most evaluation steps (actions, commands, loop iterations, produced list elements) a template
/// may take. A template that renders a configuration file from a few items takes hundreds; one
/// that reaches the limit costs the controller about 60 ms of CPU on a 2020s server core
/// (`keyseal-bench hostile`, class `template-loop`: 628 ms at 10,000,000 steps), and anyone who
/// may create a SealedSecret can write one.
pub const MAX_STEPS: u64 = 1_000_000;

/// Renders `template` with `items` (item name → decrypted value) as its data, the way upstream
/// Sealed Secrets renders `spec.template.data` with Go `text/template` and sprig.
///
/// A template without `{{` is returned unchanged. A key missing from `items` renders as
/// `<no value>` (Go's default for map data, which upstream keeps).
pub fn render(template: &str, items: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, TemplateError> {
    if !template.contains("{{") {
        return Ok(template.as_bytes().to_vec());
    }
    let tree = parse::parse(template)?;
    exec::execute(template, &tree, items)
}

/// A place in the template text: 1-based line and column (in characters), and the byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// 0-based byte offset into the template.
    pub offset: usize,
}

impl Position {
    pub(crate) fn at(src: &str, offset: usize) -> Position {
        let offset = offset.min(src.len());
        let before = &src[..floor_char_boundary(src, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Position {
            line,
            column,
            offset,
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a template could not be rendered.
///
/// Messages name positions in the template and names written in it (functions, keys, variables),
/// never an item value: items are decrypted secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template text is not well-formed: an unclosed action, a bad literal or escape, a
    /// misplaced `{{end}}`, an undefined variable…
    #[error("syntax error at {pos}: {message}")]
    Syntax {
        /// Where the problem is.
        pos: Position,
        /// What is wrong.
        message: String,
    },
    /// The template calls a function that keyseal does not provide. Upstream rejects `env`,
    /// `expandenv` and `getHostByName` too; other sprig functions are outside keyseal's subset.
    #[error("unknown function {name:?} at {pos}: {hint}")]
    UnknownFunction {
        /// The function name as written.
        name: String,
        /// Where it is called.
        pos: Position,
        /// Why it is not available.
        hint: &'static str,
    },
    /// The template uses a Go template feature that keyseal deliberately does not implement
    /// (`define`/`template`/`block`, float constants, some `printf` forms).
    #[error("unsupported at {pos}: {feature}")]
    Unsupported {
        /// The feature, as written in the template.
        feature: String,
        /// Where it is used.
        pos: Position,
    },
    /// A function was called with the wrong number of arguments.
    #[error("wrong number of arguments for {name} at {pos}: want {want}, got {got}")]
    ArgCount {
        /// The function.
        name: String,
        /// Where it is called.
        pos: Position,
        /// How many it takes, e.g. `2` or `at least 1`.
        want: String,
        /// How many it was given (including a piped value).
        got: usize,
    },
    /// A key named in the template is not among the items, and its value was used where a string
    /// or number is required (printing it alone renders `<no value>`, like Go).
    #[error("missing key {key:?} at {pos}: {context}")]
    MissingKey {
        /// The key as written in the template.
        key: String,
        /// Where the value was used.
        pos: Position,
        /// What needed it.
        context: String,
    },
    /// Evaluation failed: a wrong argument type, an index out of range, ranging over a string…
    #[error("evaluation failed at {pos}: {message}")]
    Exec {
        /// Where evaluation failed.
        pos: Position,
        /// What went wrong.
        message: String,
    },
    /// The output, or a value computed on the way, would exceed [`MAX_OUTPUT_BYTES`].
    #[error("template output exceeds the limit of {limit} bytes at {pos}")]
    OutputTooLarge {
        /// The limit in bytes.
        limit: usize,
        /// The action that crossed it.
        pos: Position,
    },
    /// Blocks or parentheses nest deeper than [`MAX_NESTING`].
    #[error("template nesting exceeds the limit of {limit} at {pos}")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// The block that crossed it.
        pos: Position,
    },
    /// Evaluation took more than [`MAX_STEPS`] steps (for example nested `range` over long lists).
    #[error("template evaluation exceeds the limit of {limit} steps at {pos}")]
    TooManySteps {
        /// The limit.
        limit: u64,
        /// Where evaluation was when the limit was reached.
        pos: Position,
    },
}
