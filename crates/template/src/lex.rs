//! Tokenizer for template text, following Go's `text/template/parse` lexer: the same delimiters,
//! trim markers, comment rules and token boundaries, so the same texts are accepted.

use crate::{Position, TemplateError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    LeftDelim,
    RightDelim,
    Space,
    Identifier,
    /// `.name`; the value includes the dot.
    Field,
    /// A lone `.`.
    Dot,
    /// `$` or `$name`; the value includes the `$`.
    Variable,
    /// `"..."` including the quotes.
    String,
    /// A backquoted string including the quotes.
    RawString,
    Number,
    /// `'x'` including the quotes.
    CharConst,
    Bool,
    Nil,
    Keyword,
    Pipe,
    LeftParen,
    RightParen,
    Declare,
    Assign,
    /// Any other printable ASCII character, such as `,`.
    Char,
    Eof,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    pub kind: Kind,
    pub pos: usize,
    pub val: &'a str,
}

const KEYWORDS: &[&str] = &[
    "block", "break", "continue", "define", "else", "end", "if", "range", "template", "with",
];

pub(crate) fn lex(src: &str) -> Result<Vec<Token<'_>>, TemplateError> {
    let mut l = Lexer {
        src,
        pos: 0,
        toks: Vec::new(),
    };
    l.run()?;
    Ok(l.toks)
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    toks: Vec<Token<'a>>,
}

/// Go's lexer treats only these as space inside actions and for trimming.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

pub(crate) fn is_alphanumeric(c: char) -> bool {
    c == '_' || c.is_alphabetic() || c.is_numeric()
}

fn has_left_trim_marker(s: &str) -> bool {
    let mut it = s.chars();
    it.next() == Some('-') && it.next().is_some_and(is_space)
}

fn has_right_trim_marker(s: &str) -> bool {
    let mut it = s.chars();
    it.next().is_some_and(is_space) && it.next() == Some('-')
}

impl<'a> Lexer<'a> {
    fn err(&self, pos: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::Syntax {
            pos: Position::at(self.src, pos),
            message: message.into(),
        }
    }

    fn emit(&mut self, kind: Kind, start: usize) {
        self.toks.push(Token {
            kind,
            pos: start,
            val: &self.src[start..self.pos],
        });
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn run(&mut self) -> Result<(), TemplateError> {
        loop {
            let start = self.pos;
            let Some(x) = self.rest().find("{{") else {
                self.pos = self.src.len();
                if self.pos > start {
                    self.emit(Kind::Text, start);
                }
                self.toks.push(Token {
                    kind: Kind::Eof,
                    pos: self.pos,
                    val: "",
                });
                return Ok(());
            };
            let delim = start + x;
            let trim = has_left_trim_marker(&self.src[delim + 2..]);
            let text_end = if trim {
                delim
                    - (self.src[start..delim].len()
                        - self.src[start..delim].trim_end_matches(is_space).len())
            } else {
                delim
            };
            if text_end > start {
                self.toks.push(Token {
                    kind: Kind::Text,
                    pos: start,
                    val: &self.src[start..text_end],
                });
            }
            let after = delim + 2 + if trim { 2 } else { 0 };
            if self.src[after..].starts_with("/*") {
                self.comment(delim, after)?;
                continue;
            }
            self.toks.push(Token {
                kind: Kind::LeftDelim,
                pos: delim,
                val: "{{",
            });
            self.pos = after;
            self.inside_action(delim)?;
        }
    }

    /// Is the input at `}}` or ` -}}`? Returns (at delimiter, trim marker).
    fn at_right_delim(&self) -> (bool, bool) {
        let r = self.rest();
        if has_right_trim_marker(r) && r[2..].starts_with("}}") {
            return (true, true);
        }
        (r.starts_with("}}"), false)
    }

    fn skip_leading_space(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start_matches(is_space).len();
    }

    fn comment(&mut self, delim: usize, start: usize) -> Result<(), TemplateError> {
        let body = start + 2;
        let Some(x) = self.src[body..].find("*/") else {
            return Err(self.err(delim, "unclosed comment"));
        };
        self.pos = body + x + 2;
        let (at, trim) = self.at_right_delim();
        if !at {
            return Err(self.err(delim, "comment ends before closing delimiter"));
        }
        self.pos += if trim { 4 } else { 2 };
        if trim {
            self.skip_leading_space();
        }
        Ok(())
    }

    fn at_terminator(&self) -> bool {
        match self.peek() {
            None => true,
            Some(c) if is_space(c) => true,
            Some('.' | ',' | '|' | ':' | ')' | '(') => true,
            Some(_) => self.rest().starts_with("}}"),
        }
    }

    fn bad_char(&self) -> TemplateError {
        let c = self.peek().unwrap_or('\u{fffd}');
        self.err(self.pos, format!("bad character U+{:04X} {c:?}", c as u32))
    }

    fn inside_action(&mut self, open: usize) -> Result<(), TemplateError> {
        let mut paren_depth = 0usize;
        loop {
            let (at, trim) = self.at_right_delim();
            if at {
                if paren_depth > 0 {
                    return Err(self.err(self.pos, "unclosed left paren"));
                }
                if trim {
                    self.pos += 2;
                }
                let start = self.pos;
                self.pos += 2;
                self.emit(Kind::RightDelim, start);
                if trim {
                    self.skip_leading_space();
                }
                return Ok(());
            }
            let start = self.pos;
            let Some(c) = self.next() else {
                return Err(self.err(open, "unclosed action"));
            };
            match c {
                c if is_space(c) => {
                    self.skip_leading_space();
                    // A trim-marked right delimiter starts with a space: leave it for the loop.
                    if has_right_trim_marker(&self.src[self.pos - 1..])
                        && self.src[self.pos + 1..].starts_with("}}")
                    {
                        self.pos -= 1;
                    }
                    if self.pos > start {
                        self.emit(Kind::Space, start);
                    }
                }
                '=' => self.emit(Kind::Assign, start),
                ':' => {
                    if self.next() != Some('=') {
                        return Err(self.err(start, "expected :="));
                    }
                    self.emit(Kind::Declare, start);
                }
                '|' => self.emit(Kind::Pipe, start),
                '"' => {
                    loop {
                        match self.next() {
                            Some('\\') => match self.next() {
                                Some('\n') | None => {
                                    return Err(self.err(start, "unterminated quoted string"));
                                }
                                Some(_) => {}
                            },
                            Some('\n') | None => {
                                return Err(self.err(start, "unterminated quoted string"));
                            }
                            Some('"') => break,
                            Some(_) => {}
                        }
                    }
                    self.emit(Kind::String, start);
                }
                '`' => {
                    loop {
                        match self.next() {
                            None => return Err(self.err(start, "unterminated raw quoted string")),
                            Some('`') => break,
                            Some(_) => {}
                        }
                    }
                    self.emit(Kind::RawString, start);
                }
                '\'' => {
                    loop {
                        match self.next() {
                            Some('\\') => match self.next() {
                                Some('\n') | None => {
                                    return Err(self.err(start, "unterminated character constant"));
                                }
                                Some(_) => {}
                            },
                            Some('\n') | None => {
                                return Err(self.err(start, "unterminated character constant"));
                            }
                            Some('\'') => break,
                            Some(_) => {}
                        }
                    }
                    self.emit(Kind::CharConst, start);
                }
                '$' => {
                    self.word_or_terminator(start, Kind::Variable)?;
                }
                '.' if self.peek().is_some_and(|c| !c.is_ascii_digit()) => {
                    if self.at_terminator() {
                        self.emit(Kind::Dot, start);
                    } else {
                        self.word_or_terminator(start, Kind::Field)?;
                    }
                }
                '.' | '+' | '-' | '0'..='9' => {
                    self.pos = start;
                    self.number(start)?;
                }
                c if is_alphanumeric(c) => {
                    while self.peek().is_some_and(is_alphanumeric) {
                        self.next();
                    }
                    if !self.at_terminator() {
                        return Err(self.bad_char());
                    }
                    let word = &self.src[start..self.pos];
                    let kind = if KEYWORDS.contains(&word) {
                        Kind::Keyword
                    } else if word == "nil" {
                        Kind::Nil
                    } else if word == "true" || word == "false" {
                        Kind::Bool
                    } else {
                        Kind::Identifier
                    };
                    self.emit(kind, start);
                }
                '(' => {
                    paren_depth += 1;
                    self.emit(Kind::LeftParen, start);
                }
                ')' => {
                    if paren_depth == 0 {
                        return Err(self.err(start, "unexpected right paren"));
                    }
                    paren_depth -= 1;
                    self.emit(Kind::RightParen, start);
                }
                c if c.is_ascii() && !c.is_ascii_control() => self.emit(Kind::Char, start),
                c => {
                    return Err(self.err(
                        start,
                        format!("unrecognized character in action: U+{:04X}", c as u32),
                    ));
                }
            }
        }
    }

    /// `$name` or `.name`: the first character is consumed already.
    fn word_or_terminator(&mut self, start: usize, kind: Kind) -> Result<(), TemplateError> {
        while self.peek().is_some_and(is_alphanumeric) {
            self.next();
        }
        if !self.at_terminator() {
            return Err(self.bad_char());
        }
        self.emit(kind, start);
        Ok(())
    }

    fn accept(&mut self, set: &str) -> bool {
        match self.peek() {
            Some(c) if set.contains(c) => {
                self.next();
                true
            }
            _ => false,
        }
    }

    fn accept_run(&mut self, set: &str) {
        while self.accept(set) {}
    }

    fn number(&mut self, start: usize) -> Result<(), TemplateError> {
        self.accept("+-");
        let mut digits = "0123456789_";
        if self.accept("0") {
            if self.accept("xX") {
                digits = "0123456789abcdefABCDEF_";
            } else if self.accept("oO") {
                digits = "01234567_";
            } else if self.accept("bB") {
                digits = "01_";
            }
        }
        self.accept_run(digits);
        if self.accept(".") {
            self.accept_run(digits);
        }
        if digits.len() == 11 && self.accept("eE") {
            self.accept("+-");
            self.accept_run("0123456789_");
        }
        if digits.len() == 23 && self.accept("pP") {
            self.accept("+-");
            self.accept_run("0123456789_");
        }
        self.accept("i");
        if self.peek().is_some_and(is_alphanumeric) {
            self.next();
            return Err(self.err(
                start,
                format!("bad number syntax: {:?}", &self.src[start..self.pos]),
            ));
        }
        self.emit(Kind::Number, start);
        Ok(())
    }
}
