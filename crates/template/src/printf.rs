//! The part of Go's `fmt` that `print`, `println` and `printf` need for template values:
//! verbs `%v %s %d %q %x %X %t %c %b %o %O %U %T %%`, flags `- + 0 space`, width and precision,
//! and Go's in-band error forms (`%!d(string=…)`, `%!s(MISSING)`, `%!(EXTRA …)`, `%!(NOVERB)`).
//! `#`, `*` and explicit argument indexes are refused rather than approximated.

use crate::gostr::{push_char, quote, quote_rune, rune_count, runes};
use crate::value::Value;

#[derive(Debug)]
pub(crate) enum PrintfError {
    TooLarge,
    Unsupported(String),
}

#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    space: bool,
    zero: bool,
    wid: Option<usize>,
    prec: Option<usize>,
}

struct Out {
    buf: Vec<u8>,
    limit: usize,
}

impl Out {
    fn check(&self) -> Result<(), PrintfError> {
        if self.buf.len() > self.limit {
            Err(PrintfError::TooLarge)
        } else {
            Ok(())
        }
    }

    fn padding(&mut self, n: usize, zero: bool) -> Result<(), PrintfError> {
        if self.buf.len().saturating_add(n) > self.limit {
            return Err(PrintfError::TooLarge);
        }
        self.buf
            .resize(self.buf.len() + n, if zero { b'0' } else { b' ' });
        Ok(())
    }

    /// Go's `fmt.pad`: width counted in runes; zeros only to the left.
    fn pad(&mut self, s: &[u8], spec: &Spec, zero: bool) -> Result<(), PrintfError> {
        let n = rune_count(s);
        let w = spec.wid.unwrap_or(0);
        if w <= n {
            self.buf.extend_from_slice(s);
        } else if spec.minus {
            self.buf.extend_from_slice(s);
            self.padding(w - n, false)?;
        } else {
            self.padding(w - n, zero)?;
            self.buf.extend_from_slice(s);
        }
        self.check()
    }
}

/// `fmt.Sprint`: a space between operands when neither is a string.
pub(crate) fn sprint(args: &[Value], limit: usize) -> Result<Vec<u8>, PrintfError> {
    let mut out = Vec::new();
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let is_string = matches!(a, Value::Str(_));
        if i > 0 && !is_string && !prev_string {
            out.push(b' ');
        }
        write_limited(&mut out, a, limit)?;
        prev_string = is_string;
    }
    Ok(out)
}

/// `fmt.Sprintln`: spaces between all operands and a final newline.
pub(crate) fn sprintln(args: &[Value], limit: usize) -> Result<Vec<u8>, PrintfError> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        write_limited(&mut out, a, limit)?;
    }
    out.push(b'\n');
    Ok(out)
}

fn write_limited(out: &mut Vec<u8>, v: &Value, limit: usize) -> Result<(), PrintfError> {
    if out.len().saturating_add(v.size_hint()) > limit {
        return Err(PrintfError::TooLarge);
    }
    v.write_v(out);
    Ok(())
}

/// Go's `parsenum`: digits up to a sanity bound; `None` past it (the verb then reads as missing).
fn parse_num(f: &[u8], i: &mut usize) -> Result<Option<usize>, ()> {
    let mut num: usize = 0;
    let mut any = false;
    while *i < f.len() && f[*i].is_ascii_digit() {
        if num > 1_000_000 {
            return Err(());
        }
        num = num * 10 + usize::from(f[*i] - b'0');
        any = true;
        *i += 1;
    }
    Ok(any.then_some(num))
}

/// `fmt.Sprintf`.
pub(crate) fn sprintf(format: &[u8], args: &[Value], limit: usize) -> Result<Vec<u8>, PrintfError> {
    let mut out = Out {
        buf: Vec::new(),
        limit,
    };
    let end = format.len();
    let mut i = 0;
    let mut argn = 0;
    while i < end {
        let lasti = i;
        while i < end && format[i] != b'%' {
            i += 1;
        }
        out.buf.extend_from_slice(&format[lasti..i]);
        if i >= end {
            break;
        }
        i += 1;
        let mut spec = Spec::default();
        while i < end {
            match format[i] {
                b'#' => return Err(PrintfError::Unsupported("printf flag '#'".into())),
                b'0' => spec.zero = true,
                b'+' => spec.plus = true,
                b'-' => spec.minus = true,
                b' ' => spec.space = true,
                _ => break,
            }
            i += 1;
        }
        if i < end && matches!(format[i], b'[' | b'*') {
            return Err(PrintfError::Unsupported(
                "printf argument indexes and '*' widths".into(),
            ));
        }
        let Ok(wid) = parse_num(format, &mut i) else {
            out.buf.extend_from_slice(b"%!(NOVERB)");
            break;
        };
        spec.wid = wid;
        if i < end && format[i] == b'.' {
            i += 1;
            if i < end && matches!(format[i], b'[' | b'*') {
                return Err(PrintfError::Unsupported(
                    "printf argument indexes and '*' precisions".into(),
                ));
            }
            let Ok(prec) = parse_num(format, &mut i) else {
                out.buf.extend_from_slice(b"%!(NOVERB)");
                break;
            };
            spec.prec = Some(prec.unwrap_or(0));
        }
        if i < end && format[i] == b'[' {
            return Err(PrintfError::Unsupported("printf argument indexes".into()));
        }
        if i >= end {
            out.buf.extend_from_slice(b"%!(NOVERB)");
            break;
        }
        let (verb, size) = match runes(&format[i..format.len().min(i + 4)]).first() {
            Some((_, e, Some(c))) => (*c, *e),
            _ => ('\u{fffd}', 1),
        };
        i += size;
        if verb == '%' {
            out.buf.push(b'%');
            continue;
        }
        let Some(arg) = args.get(argn) else {
            out.buf.extend_from_slice(b"%!");
            push_char(&mut out.buf, verb);
            out.buf.extend_from_slice(b"(MISSING)");
            continue;
        };
        if verb == 'v' {
            spec.plus = false;
        }
        print_arg(&mut out, arg, verb, &spec)?;
        argn += 1;
    }
    if argn < args.len() {
        out.buf.extend_from_slice(b"%!(EXTRA ");
        for (k, a) in args[argn..].iter().enumerate() {
            if k > 0 {
                out.buf.extend_from_slice(b", ");
            }
            if a.is_nil() {
                out.buf.extend_from_slice(b"<nil>");
            } else {
                out.buf.extend_from_slice(a.type_name().as_bytes());
                out.buf.push(b'=');
                print_arg(&mut out, a, 'v', &Spec::default())?;
            }
        }
        out.buf.push(b')');
    }
    out.check()?;
    Ok(out.buf)
}

fn print_arg(out: &mut Out, v: &Value, verb: char, spec: &Spec) -> Result<(), PrintfError> {
    if verb == 'T' {
        return out.pad(v.type_name().as_bytes(), spec, spec.zero);
    }
    match v {
        Value::Nil | Value::Missing(_) => {
            if verb == 'v' {
                out.pad(b"<nil>", spec, spec.zero)
            } else {
                bad_verb(out, v, verb, spec)
            }
        }
        Value::Bool(b) => match verb {
            't' | 'v' => out.pad(if *b { b"true" } else { b"false" }, spec, spec.zero),
            _ => bad_verb(out, v, verb, spec),
        },
        Value::Int(n) => {
            let u = *n as u64;
            match verb {
                'v' | 'd' => fmt_integer(out, n.unsigned_abs(), *n < 0, 10, false, verb, spec),
                'b' => fmt_integer(out, n.unsigned_abs(), *n < 0, 2, false, verb, spec),
                'o' | 'O' => fmt_integer(out, n.unsigned_abs(), *n < 0, 8, false, verb, spec),
                'x' => fmt_integer(out, n.unsigned_abs(), *n < 0, 16, false, verb, spec),
                'X' => fmt_integer(out, n.unsigned_abs(), *n < 0, 16, true, verb, spec),
                'c' => {
                    let c = u32::try_from(u)
                        .ok()
                        .and_then(char::from_u32)
                        .unwrap_or('\u{fffd}');
                    let mut b = Vec::new();
                    push_char(&mut b, c);
                    out.pad(&b, spec, spec.zero)
                }
                'q' => out.pad(
                    &quote_rune(i64::try_from(u).unwrap_or(-1), spec.plus),
                    spec,
                    spec.zero,
                ),
                'U' => {
                    let prec = spec.prec.filter(|&p| p > 4).unwrap_or(4);
                    let digits = format!("{u:X}");
                    let mut s = b"U+".to_vec();
                    s.resize(2 + prec.saturating_sub(digits.len()), b'0');
                    s.extend_from_slice(digits.as_bytes());
                    out.pad(&s, spec, false)
                }
                _ => bad_verb(out, v, verb, spec),
            }
        }
        Value::Str(s) => match verb {
            'v' | 's' => out.pad(truncate(s, spec), spec, spec.zero),
            'q' => out.pad(&quote(truncate(s, spec), spec.plus), spec, spec.zero),
            'x' | 'X' => fmt_sbx(out, s, verb == 'X', spec),
            _ => bad_verb(out, v, verb, spec),
        },
        Value::List(l) => {
            if verb == 'p' {
                return Err(PrintfError::Unsupported("printf verb %p".into()));
            }
            out.buf.push(b'[');
            for (i, s) in l.iter().enumerate() {
                if i > 0 {
                    out.buf.push(b' ');
                }
                print_arg(out, &Value::Str(s.clone()), verb, spec)?;
            }
            out.buf.push(b']');
            Ok(())
        }
        Value::Map(m) => {
            if verb == 'p' {
                return Err(PrintfError::Unsupported("printf verb %p".into()));
            }
            out.buf.extend_from_slice(b"map[");
            for (i, (k, val)) in m.iter().enumerate() {
                if i > 0 {
                    out.buf.push(b' ');
                }
                print_arg(out, &Value::str(k.as_bytes()), verb, spec)?;
                out.buf.push(b':');
                print_arg(out, &Value::Str(val.clone()), verb, spec)?;
            }
            out.buf.push(b']');
            Ok(())
        }
    }
}

fn bad_verb(out: &mut Out, v: &Value, verb: char, spec: &Spec) -> Result<(), PrintfError> {
    out.buf.extend_from_slice(b"%!");
    push_char(&mut out.buf, verb);
    out.buf.push(b'(');
    if v.is_nil() {
        out.buf.extend_from_slice(b"<nil>");
    } else {
        out.buf.extend_from_slice(v.type_name().as_bytes());
        out.buf.push(b'=');
        print_arg(out, v, 'v', spec)?;
    }
    out.buf.push(b')');
    Ok(())
}

/// Go's `truncateString`: at most `prec` runes.
fn truncate<'s>(s: &'s [u8], spec: &Spec) -> &'s [u8] {
    if let Some(p) = spec.prec
        && let Some((start, _, _)) = runes(s).get(p)
    {
        return &s[..*start];
    }
    s
}

fn fmt_integer(
    out: &mut Out,
    u: u64,
    neg: bool,
    base: u32,
    upper: bool,
    verb: char,
    spec: &Spec,
) -> Result<(), PrintfError> {
    let mut prec = 0;
    if let Some(p) = spec.prec {
        prec = p;
        if p == 0 && u == 0 {
            return out.padding(spec.wid.unwrap_or(0), false);
        }
    } else if spec.zero && !spec.minus && spec.wid.is_some() {
        prec = spec.wid.unwrap_or(0);
        if neg || spec.plus || spec.space {
            prec = prec.saturating_sub(1);
        }
    }
    let digits = match (base, upper) {
        (2, _) => format!("{u:b}"),
        (8, _) => format!("{u:o}"),
        (16, false) => format!("{u:x}"),
        (16, true) => format!("{u:X}"),
        _ => u.to_string(),
    };
    if prec > out.limit {
        return Err(PrintfError::TooLarge);
    }
    let mut s = Vec::with_capacity(digits.len().max(prec) + 3);
    if neg {
        s.push(b'-');
    } else if spec.plus {
        s.push(b'+');
    } else if spec.space {
        s.push(b' ');
    }
    if verb == 'O' {
        s.extend_from_slice(b"0o");
    }
    s.resize(s.len() + prec.saturating_sub(digits.len()), b'0');
    s.extend_from_slice(digits.as_bytes());
    out.pad(&s, spec, false)
}

/// Go's `fmtSbx` for `%x`/`%X` on a string.
fn fmt_sbx(out: &mut Out, s: &[u8], upper: bool, spec: &Spec) -> Result<(), PrintfError> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let length = spec.prec.map_or(s.len(), |p| p.min(s.len()));
    let mut width = 2 * length;
    if width == 0 {
        return out.padding(spec.wid.unwrap_or(0), spec.zero && !spec.minus);
    }
    if spec.space {
        width += length - 1;
    }
    let w = spec.wid.unwrap_or(0);
    if w > width && !spec.minus {
        out.padding(w - width, spec.zero)?;
    }
    if out.buf.len().saturating_add(width) > out.limit {
        return Err(PrintfError::TooLarge);
    }
    for (i, &c) in s[..length].iter().enumerate() {
        if spec.space && i > 0 {
            out.buf.push(b' ');
        }
        out.buf.push(digits[usize::from(c >> 4)]);
        out.buf.push(digits[usize::from(c & 0xf)]);
    }
    if w > width && spec.minus {
        out.padding(w - width, false)?;
    }
    Ok(())
}
