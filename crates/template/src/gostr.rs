//! Go string semantics over byte strings: Go strings are arbitrary bytes, decoded as UTF-8 rune
//! by rune where each invalid byte reads as U+FFFD. Also Go literal unquoting and quoting, simple
//! Unicode case mapping, and the standard library's base64 decoder.

/// One decoded rune: `Some(c)` for valid UTF-8, `None` for one invalid byte (Go's RuneError).
pub(crate) fn runes(s: &[u8]) -> Vec<(usize, usize, Option<char>)> {
    let mut out = Vec::new();
    let mut off = 0;
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            out.push((off, off + c.len_utf8(), Some(c)));
            off += c.len_utf8();
        }
        for _ in chunk.invalid() {
            out.push((off, off + 1, None));
            off += 1;
        }
    }
    out
}

/// Number of runes as Go's `utf8.RuneCount` counts them.
pub(crate) fn rune_count(s: &[u8]) -> usize {
    s.utf8_chunks()
        .map(|c| c.valid().chars().count() + c.invalid().len())
        .sum()
}

pub(crate) fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// Go's `strings.Map` with a rune mapping that never deletes: invalid bytes become U+FFFD.
pub(crate) fn map_runes(s: &[u8], mut f: impl FnMut(char) -> char) -> Vec<u8> {
    if s.is_ascii() {
        return s.iter().map(|&b| f(b as char) as u8).collect();
    }
    let mut out = Vec::with_capacity(s.len());
    for (_, _, c) in runes(s) {
        push_char(&mut out, f(c.unwrap_or('\u{fffd}')));
    }
    out
}

/// Go's `strings.Map` where the mapping sees invalid bytes as `None`; every rune is re-encoded,
/// so invalid bytes become U+FFFD.
pub(crate) fn map_runes_opt(s: &[u8], mut f: impl FnMut(Option<char>) -> Option<char>) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for (_, _, c) in runes(s) {
        push_char(&mut out, f(c).unwrap_or('\u{fffd}'));
    }
    out
}

/// Unicode simple case mappings where Rust's full mapping is several characters but the simple
/// mapping Go uses is one (upper, lower, title).
const SIMPLE_UPPER: &[(char, char)] = &[
    ('\u{1f80}', '\u{1f88}'),
    ('\u{1f81}', '\u{1f89}'),
    ('\u{1f82}', '\u{1f8a}'),
    ('\u{1f83}', '\u{1f8b}'),
    ('\u{1f84}', '\u{1f8c}'),
    ('\u{1f85}', '\u{1f8d}'),
    ('\u{1f86}', '\u{1f8e}'),
    ('\u{1f87}', '\u{1f8f}'),
    ('\u{1f88}', '\u{1f88}'),
    ('\u{1f89}', '\u{1f89}'),
    ('\u{1f8a}', '\u{1f8a}'),
    ('\u{1f8b}', '\u{1f8b}'),
    ('\u{1f8c}', '\u{1f8c}'),
    ('\u{1f8d}', '\u{1f8d}'),
    ('\u{1f8e}', '\u{1f8e}'),
    ('\u{1f8f}', '\u{1f8f}'),
    ('\u{1f90}', '\u{1f98}'),
    ('\u{1f91}', '\u{1f99}'),
    ('\u{1f92}', '\u{1f9a}'),
    ('\u{1f93}', '\u{1f9b}'),
    ('\u{1f94}', '\u{1f9c}'),
    ('\u{1f95}', '\u{1f9d}'),
    ('\u{1f96}', '\u{1f9e}'),
    ('\u{1f97}', '\u{1f9f}'),
    ('\u{1f98}', '\u{1f98}'),
    ('\u{1f99}', '\u{1f99}'),
    ('\u{1f9a}', '\u{1f9a}'),
    ('\u{1f9b}', '\u{1f9b}'),
    ('\u{1f9c}', '\u{1f9c}'),
    ('\u{1f9d}', '\u{1f9d}'),
    ('\u{1f9e}', '\u{1f9e}'),
    ('\u{1f9f}', '\u{1f9f}'),
    ('\u{1fa0}', '\u{1fa8}'),
    ('\u{1fa1}', '\u{1fa9}'),
    ('\u{1fa2}', '\u{1faa}'),
    ('\u{1fa3}', '\u{1fab}'),
    ('\u{1fa4}', '\u{1fac}'),
    ('\u{1fa5}', '\u{1fad}'),
    ('\u{1fa6}', '\u{1fae}'),
    ('\u{1fa7}', '\u{1faf}'),
    ('\u{1fa8}', '\u{1fa8}'),
    ('\u{1fa9}', '\u{1fa9}'),
    ('\u{1faa}', '\u{1faa}'),
    ('\u{1fab}', '\u{1fab}'),
    ('\u{1fac}', '\u{1fac}'),
    ('\u{1fad}', '\u{1fad}'),
    ('\u{1fae}', '\u{1fae}'),
    ('\u{1faf}', '\u{1faf}'),
    ('\u{1fb3}', '\u{1fbc}'),
    ('\u{1fbc}', '\u{1fbc}'),
    ('\u{1fc3}', '\u{1fcc}'),
    ('\u{1fcc}', '\u{1fcc}'),
    ('\u{1ff3}', '\u{1ffc}'),
    ('\u{1ffc}', '\u{1ffc}'),
];
const SIMPLE_LOWER: &[(char, char)] = &[('\u{130}', 'i')];
/// Title case differs from upper case for these (digraphs, Georgian, Greek with ypogegrammeni).
const SIMPLE_TITLE: &[(char, char)] = &[
    ('\u{1c4}', '\u{1c5}'),
    ('\u{1c5}', '\u{1c5}'),
    ('\u{1c6}', '\u{1c5}'),
    ('\u{1c7}', '\u{1c8}'),
    ('\u{1c8}', '\u{1c8}'),
    ('\u{1c9}', '\u{1c8}'),
    ('\u{1ca}', '\u{1cb}'),
    ('\u{1cb}', '\u{1cb}'),
    ('\u{1cc}', '\u{1cb}'),
    ('\u{1f1}', '\u{1f2}'),
    ('\u{1f2}', '\u{1f2}'),
    ('\u{1f3}', '\u{1f2}'),
];

fn lookup(table: &[(char, char)], c: char) -> Option<char> {
    table.iter().find(|(k, _)| *k == c).map(|(_, v)| *v)
}

fn single(mut it: impl Iterator<Item = char>, c: char) -> char {
    match (it.next(), it.next()) {
        (Some(x), None) => x,
        _ => c,
    }
}

/// Go's `unicode.ToUpper`.
pub(crate) fn to_upper(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    lookup(SIMPLE_UPPER, c).unwrap_or_else(|| single(c.to_uppercase(), c))
}

/// Go's `unicode.ToLower`.
pub(crate) fn to_lower(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    lookup(SIMPLE_LOWER, c).unwrap_or_else(|| single(c.to_lowercase(), c))
}

/// Go's `unicode.ToTitle`.
pub(crate) fn to_title(c: char) -> char {
    if let Some(t) = lookup(SIMPLE_TITLE, c) {
        return t;
    }
    // Georgian Mkhedruli letters are their own title case (upper case is Mtavruli).
    if ('\u{10d0}'..='\u{10ff}').contains(&c) {
        return c;
    }
    to_upper(c)
}

/// Go's `strings.Title` word-separator rule.
pub(crate) fn is_title_separator(c: Option<char>) -> bool {
    let Some(c) = c else { return false };
    if c.is_ascii() {
        return !(c.is_ascii_alphanumeric() || c == '_');
    }
    if c.is_alphabetic() || c.is_numeric() {
        return false;
    }
    c.is_whitespace()
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and ASCII space.
///
/// Rust's `escape_debug` leaves exactly those characters alone when not at the start of a string
/// (same Unicode categories), so it serves as the table.
pub(crate) fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let mut buf = [0u8; 8];
    buf[0] = b'a';
    let n = 1 + c.encode_utf8(&mut buf[1..]).len();
    let s = std::str::from_utf8(&buf[..n]).unwrap_or("");
    s.escape_debug().count() == 1 + 1
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `c` escaped as Go's `strconv` does inside a literal quoted with `quote`.
fn append_escaped_rune(out: &mut Vec<u8>, c: char, quote: char, ascii_only: bool) {
    if c == quote || c == '\\' {
        out.push(b'\\');
        push_char(out, c);
        return;
    }
    if if ascii_only {
        c.is_ascii() && is_print(c)
    } else {
        is_print(c)
    } {
        push_char(out, c);
        return;
    }
    match c {
        '\u{7}' => out.extend_from_slice(b"\\a"),
        '\u{8}' => out.extend_from_slice(b"\\b"),
        '\u{c}' => out.extend_from_slice(b"\\f"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        '\u{b}' => out.extend_from_slice(b"\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            out.extend_from_slice(b"\\x");
            out.push(HEX[(c as usize) >> 4]);
            out.push(HEX[(c as usize) & 0xf]);
        }
        c if (c as u32) < 0x10000 => {
            out.extend_from_slice(b"\\u");
            for s in [12, 8, 4, 0] {
                out.push(HEX[((c as usize) >> s) & 0xf]);
            }
        }
        c => {
            out.extend_from_slice(b"\\U");
            for s in [28, 24, 20, 16, 12, 8, 4, 0] {
                out.push(HEX[((c as usize) >> s) & 0xf]);
            }
        }
    }
}

/// Go's `strconv.Quote` (or `QuoteToASCII` when `ascii_only`).
pub(crate) fn quote(s: &[u8], ascii_only: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for (start, _, c) in runes(s) {
        match c {
            Some(c) => append_escaped_rune(&mut out, c, '"', ascii_only),
            None => {
                out.extend_from_slice(b"\\x");
                out.push(HEX[(s[start] >> 4) as usize]);
                out.push(HEX[(s[start] & 0xf) as usize]);
            }
        }
    }
    out.push(b'"');
    out
}

/// Go's `strconv.QuoteRune` (or `QuoteRuneToASCII`); invalid code points read as U+FFFD.
pub(crate) fn quote_rune(r: i64, ascii_only: bool) -> Vec<u8> {
    let c = u32::try_from(r)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{fffd}');
    let mut out = vec![b'\''];
    append_escaped_rune(&mut out, c, '\'', ascii_only);
    out.push(b'\'');
    out
}

fn unhex(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

/// Go's `strconv.UnquoteChar`: decodes one character or escape from the start of `s`, returning
/// the value, whether it is a rune (vs a single byte) and the rest.
pub(crate) fn unquote_char(s: &str, quote: u8) -> Option<(u32, bool, &str)> {
    let b = s.as_bytes();
    let c = *b.first()?;
    if c == quote && (quote == b'\'' || quote == b'"') {
        return None;
    }
    if c >= 0x80 {
        let ch = s.chars().next()?;
        return Some((ch as u32, true, &s[ch.len_utf8()..]));
    }
    if c != b'\\' {
        return Some((u32::from(c), false, &s[1..]));
    }
    let e = *b.get(1)?;
    // A backslash before a non-ASCII character is no escape (Go: ErrSyntax); slicing after one
    // byte of it would split the character.
    if !e.is_ascii() {
        return None;
    }
    let rest = &s[2..];
    let simple = |v: u8| Some((u32::from(v), false, rest));
    match e {
        b'a' => simple(7),
        b'b' => simple(8),
        b'f' => simple(12),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(11),
        b'\\' => simple(b'\\'),
        b'\'' | b'"' if e == quote => simple(e),
        b'x' | b'u' | b'U' => {
            let n = match e {
                b'x' => 2,
                b'u' => 4,
                _ => 8,
            };
            let digits = rest.as_bytes().get(..n)?;
            let mut v = 0u32;
            for &d in digits {
                v = v.checked_mul(16)? | unhex(d)?;
            }
            if e == b'x' {
                return Some((v, false, &rest[n..]));
            }
            char::from_u32(v)?;
            Some((v, true, &rest[n..]))
        }
        b'0'..=b'7' => {
            let digits = rest.as_bytes().get(..2)?;
            let mut v = u32::from(e - b'0');
            for &d in digits {
                if !(b'0'..=b'7').contains(&d) {
                    return None;
                }
                v = (v << 3) | u32::from(d - b'0');
            }
            if v > 255 {
                return None;
            }
            Some((v, false, &rest[2..]))
        }
        _ => None,
    }
}

/// Go's `strconv.Unquote` for a `"..."` or backquoted literal (quotes included).
pub(crate) fn unquote(lit: &str) -> Option<Vec<u8>> {
    if let Some(raw) = lit.strip_prefix('`') {
        let raw = raw.strip_suffix('`')?;
        return Some(raw.bytes().filter(|&b| b != b'\r').collect());
    }
    let mut s = lit.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(s.len());
    while !s.is_empty() {
        let (v, multibyte, rest) = unquote_char(s, b'"')?;
        if v < 0x80 || !multibyte {
            out.push(v as u8);
        } else {
            push_char(&mut out, char::from_u32(v)?);
        }
        s = rest;
    }
    Some(out)
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, `0x`/`0o`/`0b`/leading-`0` prefixes, underscores
/// between digits.
pub(crate) fn parse_int(text: &str) -> Option<i64> {
    let (neg, s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = s.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if s.contains('_') && !underscore_ok(&lower) {
        return None;
    }
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let u = u64::from_str_radix(&digits, radix).ok()?;
    if neg {
        if u <= 1 << 63 {
            Some((u as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(u).ok()
    }
}

/// Go's `underscoreOK` for a lower-cased, sign-stripped literal.
fn underscore_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1], b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1] == b'x';
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || hex && (b'a'..=b'f').contains(&c) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// Go's `base64.StdEncoding.DecodeString`: padding required, CR and LF ignored, non-zero
/// trailing bits accepted. The error is the offset Go reports.
pub(crate) fn base64_decode(src: &[u8]) -> Result<Vec<u8>, usize> {
    fn val(b: u8) -> Option<u8> {
        match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let is_nl = |b: u8| b == b'\n' || b == b'\r';
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    while si < src.len() {
        let mut dbuf = [0u8; 4];
        let mut dlen = 4;
        let mut j = 0;
        let mut trailing_err = None;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                return Err(si - j);
            }
            let b = src[si];
            si += 1;
            if let Some(v) = val(b) {
                dbuf[j] = v;
                j += 1;
                continue;
            }
            if is_nl(b) {
                continue;
            }
            if b != b'=' {
                return Err(si - 1);
            }
            match j {
                0 | 1 => return Err(si - 1),
                2 => {
                    while si < src.len() && is_nl(src[si]) {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(src.len());
                    }
                    if src[si] != b'=' {
                        return Err(si - 1);
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && is_nl(src[si]) {
                si += 1;
            }
            if si < src.len() {
                trailing_err = Some(si);
            }
            dlen = j;
            break;
        }
        let v = (u32::from(dbuf[0]) << 18)
            | (u32::from(dbuf[1]) << 12)
            | (u32::from(dbuf[2]) << 6)
            | u32::from(dbuf[3]);
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..dlen - 1]);
        if let Some(e) = trailing_err {
            return Err(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_go_escapes() {
        assert_eq!(
            unquote(r#""a\tb\x41\101\u00e9""#).unwrap(),
            "a\tbAAé".as_bytes()
        );
        assert_eq!(unquote(r#""\xff""#).unwrap(), vec![0xff]);
        assert!(unquote(r#""\q""#).is_none());
        // Found by fuzzing: a backslash before a multi-byte character used to panic.
        assert!(unquote("\"\\\u{fffd}t\"").is_none());
        assert!(unquote(r#""\'""#).is_none());
        assert!(unquote(r#""\400""#).is_none());
        assert!(unquote(r#""\ud800""#).is_none());
        assert!(unquote(r#""\x4""#).is_none());
        assert_eq!(unquote("`a\r\nb`").unwrap(), b"a\nb");
    }

    #[test]
    fn parse_int_like_go() {
        assert_eq!(parse_int("0x1F"), Some(31));
        assert_eq!(parse_int("017"), Some(15));
        assert_eq!(parse_int("0o17"), Some(15));
        assert_eq!(parse_int("-0b101"), Some(-5));
        assert_eq!(parse_int("1_000"), Some(1000));
        assert_eq!(parse_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int("9223372036854775808"), None);
        assert_eq!(parse_int("1__0"), None);
        assert_eq!(parse_int("09"), None);
        assert_eq!(parse_int("0x"), None);
        assert_eq!(parse_int("_1"), None);
    }

    #[test]
    fn quote_like_go() {
        assert_eq!(
            quote("é\0\t\u{200b}😀".as_bytes(), false),
            r#""é\x00\t\u200b😀""#.as_bytes()
        );
        assert_eq!(quote(b"\xff", false), br#""\xff""#);
        assert_eq!(quote("é😀".as_bytes(), true), br#""\u00e9\U0001f600""#);
        assert_eq!(quote_rune(65, false), b"'A'");
        assert_eq!(quote_rune(-1, false), "'\u{fffd}'".as_bytes());
    }

    #[test]
    fn base64_like_go() {
        assert_eq!(base64_decode(b"aGVsbG8="), Ok(b"hello".to_vec()));
        assert_eq!(base64_decode(b"aGVs\nbG8=\r\n"), Ok(b"hello".to_vec()));
        assert_eq!(base64_decode(b"aGl="), Ok(b"hi".to_vec()));
        assert_eq!(base64_decode(b"aGVsbG8"), Err(4));
        assert_eq!(base64_decode(b"a"), Err(0));
        assert_eq!(base64_decode(b"aGk=="), Err(4));
        assert_eq!(base64_decode(b"-_8="), Err(0));
        assert_eq!(base64_decode(b""), Ok(vec![]));
    }

    #[test]
    fn case_mapping_like_go() {
        assert_eq!(to_upper('ß'), 'ß');
        assert_eq!(to_upper('ᾳ'), 'ᾼ');
        assert_eq!(to_lower('İ'), 'i');
        assert_eq!(to_lower('Σ'), 'σ');
        assert_eq!(to_title('ǆ'), 'ǅ');
        assert_eq!(to_title('ა'), 'ა');
        assert_eq!(to_upper('ა'), 'Ა');
    }
}
