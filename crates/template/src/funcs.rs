//! The functions a template may call: text/template's built-ins and the sprig string functions
//! in keyseal's subset. Nothing here can reach the environment, files, the network or the clock.

use base64::Engine as _;
use sha2::Digest as _;

use crate::gostr;
use crate::printf::{self, PrintfError};
use crate::value::Value;

macro_rules! funcs {
    ($($variant:ident => $name:literal,)*) => {
        /// A function keyseal templates may call.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Func { $($variant,)* }

        impl Func {
            pub(crate) fn name(self) -> &'static str {
                match self { $(Func::$variant => $name,)* }
            }

            /// Resolves a function name at parse time, as Go does; the error is a hint for the
            /// user.
            pub(crate) fn lookup(name: &str) -> Result<Func, &'static str> {
                match name {
                    $($name => Ok(Func::$variant),)*
                    "env" | "expandenv" => Err("keyseal templates cannot read the environment"),
                    "getHostByName" => Err("keyseal templates cannot use the network"),
                    "readFile" | "include" | "tpl" | "required" | "fail" | "lookup" => {
                        Err("keyseal templates can only read the sealed items")
                    }
                    _ => Err("not in keyseal's template function subset"),
                }
            }
        }
    };
}

funcs! {
    And => "and", Or => "or", Not => "not", Len => "len", Index => "index",
    Eq => "eq", Ne => "ne", Lt => "lt", Le => "le", Gt => "gt", Ge => "ge",
    Print => "print", Printf => "printf", Println => "println",
    Upper => "upper", Lower => "lower", Title => "title", Trim => "trim", TrimAll => "trimAll",
    TrimPrefix => "trimPrefix", TrimSuffix => "trimSuffix", Replace => "replace",
    Quote => "quote", Squote => "squote", B64enc => "b64enc", B64dec => "b64dec", Cat => "cat",
    Indent => "indent", Nindent => "nindent", Contains => "contains", HasPrefix => "hasPrefix",
    HasSuffix => "hasSuffix", Default => "default", Empty => "empty", ToString => "toString",
    Join => "join", SplitList => "splitList", Repeat => "repeat", Substr => "substr",
    Trunc => "trunc", Nospace => "nospace", Sha256sum => "sha256sum",
}

/// How a parameter converts its argument, as Go's reflection-based call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    /// `string`: only string values and string constants.
    Str,
    /// `int`: only integer values and integer constants.
    Int,
    /// `interface{}` / `reflect.Value`: anything, including nil.
    Any,
}

impl Param {
    pub(crate) fn described(self) -> &'static str {
        match self {
            Param::Str => "a string",
            Param::Int => "an integer",
            Param::Any => "a value",
        }
    }

    pub(crate) fn go_name(self) -> &'static str {
        match self {
            Param::Str => "string",
            Param::Int => "int",
            Param::Any => "interface {}",
        }
    }
}

use Param::{Any, Int, Str};

impl Func {
    /// Fixed parameters and the variadic one, if any.
    pub(crate) fn signature(self) -> (&'static [Param], Option<Param>) {
        match self {
            Func::And | Func::Or | Func::Eq | Func::Index | Func::Default => (&[Any], Some(Any)),
            Func::Not | Func::Len | Func::Empty | Func::ToString => (&[Any], None),
            Func::Ne | Func::Lt | Func::Le | Func::Gt | Func::Ge => (&[Any, Any], None),
            Func::Print | Func::Println | Func::Quote | Func::Squote | Func::Cat => {
                (&[], Some(Any))
            }
            Func::Printf => (&[Str], Some(Any)),
            Func::Upper
            | Func::Lower
            | Func::Title
            | Func::Trim
            | Func::B64enc
            | Func::B64dec
            | Func::Nospace
            | Func::Sha256sum => (&[Str], None),
            Func::TrimAll
            | Func::TrimPrefix
            | Func::TrimSuffix
            | Func::Contains
            | Func::HasPrefix
            | Func::HasSuffix
            | Func::SplitList => (&[Str, Str], None),
            Func::Replace => (&[Str, Str, Str], None),
            Func::Indent | Func::Nindent | Func::Repeat | Func::Trunc => (&[Int, Str], None),
            Func::Substr => (&[Int, Int, Str], None),
            Func::Join => (&[Str, Any], None),
        }
    }
}

/// Why a call failed; the executor adds the position.
#[derive(Debug)]
pub(crate) enum CallError {
    /// A message in Go's words (never containing an argument value).
    Failed(String),
    TooLarge,
    Unsupported(String),
}

impl From<PrintfError> for CallError {
    fn from(e: PrintfError) -> Self {
        match e {
            PrintfError::TooLarge => CallError::TooLarge,
            PrintfError::Unsupported(s) => CallError::Unsupported(s),
        }
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, CallError> {
    Err(CallError::Failed(msg.into()))
}

fn s(v: &Value) -> &[u8] {
    match v {
        Value::Str(s) => s,
        _ => b"",
    }
}

fn n(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        _ => 0,
    }
}

fn bounded(len: usize, limit: usize) -> Result<(), CallError> {
    if len > limit {
        Err(CallError::TooLarge)
    } else {
        Ok(())
    }
}

/// Calls `f` with arguments already converted to its parameter types. `and`/`or` are
/// evaluated lazily by the executor and never reach here.
pub(crate) fn call(f: Func, args: &[Value], limit: usize) -> Result<Value, CallError> {
    Ok(match f {
        Func::And | Func::Or => unreachable!("and/or short-circuit in the executor"),
        Func::Not => Value::Bool(!args[0].truth()),
        Func::Len => match &args[0] {
            Value::Str(s) => Value::Int(s.len() as i64),
            Value::List(l) => Value::Int(l.len() as i64),
            Value::Map(m) => Value::Int(m.len() as i64),
            Value::Nil | Value::Missing(_) => return fail("len of nil value"),
            v => return fail(format!("len of type {}", v.type_name())),
        },
        Func::Index => index(&args[0], &args[1..])?,
        Func::Eq => Value::Bool(eq(&args[0], &args[1..])?),
        Func::Ne => Value::Bool(!eq(&args[0], &args[1..])?),
        Func::Lt => Value::Bool(lt(&args[0], &args[1])?),
        Func::Le => Value::Bool(lt(&args[0], &args[1])? || eq(&args[0], &args[1..])?),
        Func::Gt => Value::Bool(!(lt(&args[0], &args[1])? || eq(&args[0], &args[1..])?)),
        Func::Ge => Value::Bool(!lt(&args[0], &args[1])?),
        Func::Print => Value::str(printf::sprint(args, limit)?),
        Func::Println => Value::str(printf::sprintln(args, limit)?),
        Func::Printf => Value::str(printf::sprintf(s(&args[0]), &args[1..], limit)?),
        Func::Upper => Value::str(gostr::map_runes(s(&args[0]), gostr::to_upper)),
        Func::Lower => Value::str(gostr::map_runes(s(&args[0]), gostr::to_lower)),
        Func::Title => {
            let mut prev = Some(' ');
            Value::str(gostr::map_runes_opt(s(&args[0]), |c| {
                let out = if gostr::is_title_separator(prev) {
                    c.map(gostr::to_title)
                } else {
                    c
                };
                prev = c;
                out
            }))
        }
        Func::Trim => Value::str(trim_by(s(&args[0]), |c| c.is_some_and(char::is_whitespace))),
        Func::TrimAll => {
            let cut: Vec<Option<char>> =
                gostr::runes(s(&args[0])).into_iter().map(|r| r.2).collect();
            if cut.is_empty() {
                args[1].clone()
            } else {
                let fffd = |c: Option<char>| c.unwrap_or('\u{fffd}');
                Value::str(trim_by(s(&args[1]), |c| {
                    cut.iter().any(|k| fffd(*k) == fffd(c))
                }))
            }
        }
        Func::TrimPrefix => {
            Value::str(s(&args[1]).strip_prefix(s(&args[0])).unwrap_or(s(&args[1])))
        }
        Func::TrimSuffix => {
            Value::str(s(&args[1]).strip_suffix(s(&args[0])).unwrap_or(s(&args[1])))
        }
        Func::Replace => Value::str(replace(s(&args[2]), s(&args[0]), s(&args[1]), limit)?),
        Func::Quote | Func::Squote => {
            let mut out = Vec::new();
            for a in args.iter().filter(|a| !a.is_nil()) {
                if !out.is_empty() {
                    out.push(b' ');
                }
                bounded(out.len() + a.size_hint() * 4 + 2, limit)?;
                if f == Func::Quote {
                    out.extend_from_slice(&gostr::quote(&a.strval(), false));
                } else {
                    out.push(b'\'');
                    a.write_v(&mut out);
                    out.push(b'\'');
                }
            }
            Value::str(out)
        }
        Func::B64enc => {
            bounded(s(&args[0]).len() / 3 * 4 + 4, limit)?;
            Value::str(
                base64::engine::general_purpose::STANDARD
                    .encode(s(&args[0]))
                    .into_bytes(),
            )
        }
        Func::B64dec => match gostr::base64_decode(s(&args[0])) {
            Ok(v) => Value::str(v),
            // sprig returns the decoder's error text as the result.
            Err(at) => Value::str(format!("illegal base64 data at input byte {at}").into_bytes()),
        },
        Func::Cat => {
            let present: Vec<Value> = args.iter().filter(|a| !a.is_nil()).cloned().collect();
            let mut out = Vec::new();
            for (i, a) in present.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                bounded(out.len() + a.size_hint(), limit)?;
                a.write_v(&mut out);
            }
            Value::str(out)
        }
        Func::Indent | Func::Nindent => {
            let count = n(&args[0]);
            if count < 0 {
                return fail("strings: negative Repeat count");
            }
            let src = s(&args[1]);
            let lines = src.iter().filter(|&&b| b == b'\n').count() + 2;
            let pad = usize::try_from(count).map_err(|_| CallError::TooLarge)?;
            bounded(pad.saturating_mul(lines).saturating_add(src.len()), limit)?;
            let mut out = Vec::new();
            if f == Func::Nindent {
                out.push(b'\n');
            }
            out.resize(out.len() + pad, b' ');
            for &b in src {
                out.push(b);
                if b == b'\n' {
                    out.resize(out.len() + pad, b' ');
                }
            }
            Value::str(out)
        }
        Func::Contains => Value::Bool(find(s(&args[1]), s(&args[0])).is_some()),
        Func::HasPrefix => Value::Bool(s(&args[1]).starts_with(s(&args[0]))),
        Func::HasSuffix => Value::Bool(s(&args[1]).ends_with(s(&args[0]))),
        Func::Default => {
            if args.len() < 2 || empty(&args[1]) {
                args[0].clone()
            } else {
                args[1].clone()
            }
        }
        Func::Empty => Value::Bool(empty(&args[0])),
        Func::ToString => Value::str(args[0].strval()),
        Func::Join => {
            let parts: Vec<Vec<u8>> = match &args[1] {
                Value::List(l) => l.iter().map(|s| s.to_vec()).collect(),
                Value::Nil | Value::Missing(_) => Vec::new(),
                v => vec![v.strval()],
            };
            let sep = s(&args[0]);
            let total: usize =
                parts.iter().map(Vec::len).sum::<usize>() + sep.len().saturating_mul(parts.len());
            bounded(total, limit)?;
            Value::str(parts.join(sep))
        }
        Func::SplitList => Value::List(
            split(s(&args[1]), s(&args[0]))
                .into_iter()
                .map(Into::into)
                .collect(),
        ),
        Func::Repeat => {
            let count = n(&args[0]);
            if count < 0 {
                return fail("strings: negative Repeat count");
            }
            let count = usize::try_from(count).map_err(|_| CallError::TooLarge)?;
            bounded(s(&args[1]).len().saturating_mul(count), limit)?;
            Value::str(s(&args[1]).repeat(count))
        }
        Func::Substr => {
            let (start, end, src) = (n(&args[0]), n(&args[1]), s(&args[2]));
            let len = src.len() as i64;
            let (a, b) = if start < 0 {
                (0, end)
            } else if end < 0 || end > len {
                (start, len)
            } else {
                (start, end)
            };
            if a < 0 || b < a || b > len {
                return fail("slice bounds out of range");
            }
            Value::str(&src[a as usize..b as usize])
        }
        Func::Trunc => {
            let (c, src) = (n(&args[0]), s(&args[1]));
            let len = src.len() as i64;
            if c < 0 && len + c > 0 {
                Value::str(&src[(len + c) as usize..])
            } else if c >= 0 && len > c {
                Value::str(&src[..c as usize])
            } else {
                args[1].clone()
            }
        }
        Func::Nospace => {
            // goutils.DeleteWhiteSpace works byte by byte, reading each byte as a Latin-1 rune.
            let src = s(&args[0]);
            let is_space =
                |b: u8| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0);
            if !src.iter().any(|&b| is_space(b)) {
                args[0].clone()
            } else {
                let mut out = Vec::with_capacity(src.len());
                for &b in src.iter().filter(|&&b| !is_space(b)) {
                    gostr::push_char(&mut out, char::from(b));
                }
                Value::str(out)
            }
        }
        Func::Sha256sum => {
            let digest = sha2::Sha256::digest(s(&args[0]));
            Value::str(
                digest
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into_bytes(),
            )
        }
    })
}

/// sprig's `empty`.
pub(crate) fn empty(v: &Value) -> bool {
    !v.truth()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Go's `strings.TrimFunc` over runes (invalid bytes read as `None`).
fn trim_by(src: &[u8], mut cut: impl FnMut(Option<char>) -> bool) -> Vec<u8> {
    let rs = gostr::runes(src);
    let Some(first) = rs.iter().position(|r| !cut(r.2)) else {
        return Vec::new();
    };
    let last = rs.iter().rposition(|r| !cut(r.2)).unwrap_or(first);
    src[rs[first].0..rs[last].1].to_vec()
}

/// Go's `strings.Replace(src, old, new, -1)`.
fn replace(src: &[u8], old: &[u8], new: &[u8], limit: usize) -> Result<Vec<u8>, CallError> {
    if old == new {
        return Ok(src.to_vec());
    }
    let mut out = Vec::with_capacity(src.len());
    if old.is_empty() {
        let rs = gostr::runes(src);
        for (start, end, _) in rs {
            out.extend_from_slice(new);
            out.extend_from_slice(&src[start..end]);
            bounded(out.len(), limit)?;
        }
        out.extend_from_slice(new);
        bounded(out.len(), limit)?;
        return Ok(out);
    }
    let mut rest = src;
    while let Some(i) = find(rest, old) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(new);
        bounded(out.len(), limit)?;
        rest = &rest[i + old.len()..];
    }
    out.extend_from_slice(rest);
    bounded(out.len(), limit)?;
    Ok(out)
}

/// Go's `strings.Split`.
fn split(src: &[u8], sep: &[u8]) -> Vec<Vec<u8>> {
    if sep.is_empty() {
        return gostr::runes(src)
            .into_iter()
            .map(|(a, b, _)| src[a..b].to_vec())
            .collect();
    }
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = find(rest, sep) {
        out.push(rest[..i].to_vec());
        rest = &rest[i + sep.len()..];
    }
    out.push(rest.to_vec());
    out
}

/// Go's `index` built-in.
fn index(item: &Value, indexes: &[Value]) -> Result<Value, CallError> {
    if item.is_nil() {
        return fail("index of untyped nil");
    }
    let mut item = item.clone();
    for ix in indexes {
        item = match &item {
            Value::Str(_) | Value::List(_) => {
                let x = match ix {
                    Value::Int(x) => *x,
                    Value::Nil | Value::Missing(_) => {
                        return fail("cannot index slice/array with nil");
                    }
                    v => {
                        return fail(format!(
                            "cannot index slice/array with type {}",
                            v.type_name()
                        ));
                    }
                };
                let ok = |len: usize| usize::try_from(x).ok().filter(|&x| x < len);
                match &item {
                    Value::Str(s) => {
                        Value::Int(i64::from(s[ok(s.len()).ok_or_else(out_of_range)?]))
                    }
                    Value::List(l) => Value::Str(l[ok(l.len()).ok_or_else(out_of_range)?].clone()),
                    _ => unreachable!(),
                }
            }
            Value::Map(m) => match ix {
                Value::Str(k) => {
                    let found = std::str::from_utf8(k).ok().and_then(|k| m.get(k));
                    found.map_or_else(|| Value::str(&b""[..]), |v| Value::Str(v.clone()))
                }
                Value::Nil | Value::Missing(_) => {
                    return fail("value is nil; should be of type string");
                }
                v => {
                    return fail(format!(
                        "value has type {}; should be string",
                        v.type_name()
                    ));
                }
            },
            v => return fail(format!("can't index item of type {}", v.type_name())),
        };
    }
    Ok(item)
}

fn out_of_range() -> CallError {
    CallError::Failed("index out of range".into())
}

#[derive(PartialEq)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Str,
    Other,
}

fn basic_kind(v: &Value) -> Kind {
    match v {
        Value::Nil | Value::Missing(_) => Kind::Invalid,
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Str(_) => Kind::Str,
        Value::List(_) | Value::Map(_) => Kind::Other,
    }
}

/// Go's `eq`: true if `a` equals any of `others`.
fn eq(a: &Value, others: &[Value]) -> Result<bool, CallError> {
    if others.is_empty() {
        return fail("missing argument for comparison");
    }
    let k1 = basic_kind(a);
    for b in others {
        let k2 = basic_kind(b);
        let truth = if k1 != k2 {
            if !a.is_nil() && !b.is_nil() {
                return fail(format!(
                    "incompatible types for comparison: {} and {}",
                    a.type_name(),
                    b.type_name()
                ));
            }
            false
        } else {
            match (a, b) {
                (Value::Bool(x), Value::Bool(y)) => x == y,
                (Value::Int(x), Value::Int(y)) => x == y,
                (Value::Str(x), Value::Str(y)) => x == y,
                _ if a.is_nil() && b.is_nil() => true,
                _ => return fail(format!("non-comparable type: {}", b.type_name())),
            }
        };
        if truth {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Go's `lt`.
fn lt(a: &Value, b: &Value) -> Result<bool, CallError> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x < y),
        (Value::Str(x), Value::Str(y)) => Ok(x < y),
        _ if matches!(basic_kind(a), Kind::Invalid | Kind::Other)
            || matches!(basic_kind(b), Kind::Invalid | Kind::Other) =>
        {
            fail("invalid type for comparison")
        }
        (Value::Bool(_), Value::Bool(_)) => fail("invalid type for comparison"),
        _ => fail(format!(
            "incompatible types for comparison: {} and {}",
            a.type_name(),
            b.type_name()
        )),
    }
}
