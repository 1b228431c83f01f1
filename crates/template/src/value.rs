//! Template values: the Go types a SealedSecret template can produce (strings, ints, bools, the
//! item map, `[]string` from `splitList`, and nil) with Go's truthiness and `%v` formatting.

use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// Go's nil interface (from `nil` or a nil result).
    Nil,
    /// Go's invalid `reflect.Value` from a key missing in the item map; remembers the key (a name
    /// written in the template) for error messages. Otherwise behaves as nil.
    Missing(Rc<str>),
    Str(Rc<[u8]>),
    Int(i64),
    Bool(bool),
    /// `[]string`
    List(Rc<[Rc<[u8]>]>),
    /// The item map, `map[string]string`.
    Map(Rc<BTreeMap<String, Rc<[u8]>>>),
}

impl Value {
    pub(crate) fn str(s: impl Into<Rc<[u8]>>) -> Value {
        Value::Str(s.into())
    }

    pub(crate) fn is_nil(&self) -> bool {
        matches!(self, Value::Nil | Value::Missing(_))
    }

    /// Go's `reflect.Type.String()` for the value's type.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Nil | Value::Missing(_) => "<nil>",
            Value::Str(_) => "string",
            Value::Int(_) => "int",
            Value::Bool(_) => "bool",
            Value::List(_) => "[]string",
            Value::Map(_) => "map[string]string",
        }
    }

    /// text/template's `isTrue`: the zero value of a type, and empty collections, are false.
    pub(crate) fn truth(&self) -> bool {
        match self {
            Value::Nil | Value::Missing(_) => false,
            Value::Str(s) => !s.is_empty(),
            Value::Int(i) => *i != 0,
            Value::Bool(b) => *b,
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    /// `fmt.Sprint(v)` (`%v` without flags).
    pub(crate) fn write_v(&self, out: &mut Vec<u8>) {
        match self {
            Value::Nil | Value::Missing(_) => out.extend_from_slice(b"<nil>"),
            Value::Str(s) => out.extend_from_slice(s),
            Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::List(l) => {
                out.push(b'[');
                for (i, s) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    out.extend_from_slice(s);
                }
                out.push(b']');
            }
            Value::Map(m) => {
                out.extend_from_slice(b"map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    out.extend_from_slice(k.as_bytes());
                    out.push(b':');
                    out.extend_from_slice(v);
                }
                out.push(b']');
            }
        }
    }

    /// sprig's `strval`: strings as they are, anything else as `%v`.
    pub(crate) fn strval(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_v(&mut out);
        out
    }

    /// An upper bound on the size of `write_v`'s output, to check limits before formatting.
    pub(crate) fn size_hint(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::List(l) => l.iter().map(|s| s.len() + 1).sum::<usize>() + 2,
            Value::Map(m) => m.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>() + 5,
            _ => 20,
        }
    }
}
