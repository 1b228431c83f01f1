//! Parser from tokens to a tree, following Go's `text/template/parse`: the same grammar, the
//! same parse-time checks (defined functions and variables, `{{break}}` inside `range`, literal
//! pipeline stages) and the same `else if`/`else with` desugaring.

use std::rc::Rc;

use crate::funcs::Func;
use crate::lex::{Kind, Token, lex};
use crate::{MAX_NESTING, Position, TemplateError, gostr};

#[derive(Debug)]
pub(crate) enum Node<'a> {
    Text(&'a str),
    Action(Pipe<'a>),
    If(Control<'a>),
    With(Control<'a>),
    Range(Control<'a>),
    Break,
    Continue,
}

#[derive(Debug)]
pub(crate) struct Control<'a> {
    pub pipe: Pipe<'a>,
    pub list: Vec<Node<'a>>,
    pub else_list: Option<Vec<Node<'a>>>,
}

#[derive(Debug)]
pub(crate) struct Pipe<'a> {
    pub pos: usize,
    pub is_assign: bool,
    pub decl: Vec<(usize, &'a str)>,
    pub cmds: Vec<Cmd<'a>>,
}

#[derive(Debug)]
pub(crate) struct Cmd<'a> {
    pub pos: usize,
    pub args: Vec<Arg<'a>>,
}

#[derive(Debug)]
pub(crate) enum Arg<'a> {
    /// `.a.b`
    Field {
        pos: usize,
        idents: Vec<&'a str>,
    },
    /// `$x.a.b`
    Variable {
        pos: usize,
        name: &'a str,
        idents: Vec<&'a str>,
    },
    /// `(pipeline).a.b` or `func.a`
    Chain {
        pos: usize,
        node: Box<Arg<'a>>,
        idents: Vec<&'a str>,
    },
    Dot(usize),
    Nil(usize),
    Bool(usize, bool),
    Int(usize, i64),
    Str(usize, Rc<[u8]>),
    Func(usize, Func),
    Pipe(Box<Pipe<'a>>),
}

impl Arg<'_> {
    pub(crate) fn pos(&self) -> usize {
        match self {
            Arg::Field { pos, .. } | Arg::Variable { pos, .. } | Arg::Chain { pos, .. } => *pos,
            Arg::Dot(p)
            | Arg::Nil(p)
            | Arg::Bool(p, _)
            | Arg::Int(p, _)
            | Arg::Str(p, _)
            | Arg::Func(p, _) => *p,
            Arg::Pipe(p) => p.pos,
        }
    }
}

pub(crate) fn parse(src: &str) -> Result<Vec<Node<'_>>, TemplateError> {
    let toks = lex(src)?;
    let mut p = Parser {
        src,
        toks,
        i: 0,
        vars: vec!["$"],
        range_depth: 0,
        depth: 0,
    };
    let mut list = Vec::new();
    while p.peek().kind != Kind::Eof {
        match p.text_or_action()? {
            Item::Node(n) => list.push(n),
            Item::End(pos) => return Err(p.err(pos, "unexpected {{end}}")),
            Item::Else(pos) => return Err(p.err(pos, "unexpected {{else}}")),
        }
    }
    Ok(list)
}

enum Item<'a> {
    Node(Node<'a>),
    End(usize),
    Else(usize),
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token<'a>>,
    i: usize,
    vars: Vec<&'a str>,
    range_depth: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, pos: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::Syntax {
            pos: Position::at(self.src, pos),
            message: message.into(),
        }
    }

    fn next(&mut self) -> Token<'a> {
        let t = self.toks[self.i];
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn peek(&self) -> Token<'a> {
        self.toks[self.i]
    }

    fn next_non_space(&mut self) -> Token<'a> {
        loop {
            let t = self.next();
            if t.kind != Kind::Space {
                return t;
            }
        }
    }

    fn peek_non_space(&mut self) -> Token<'a> {
        while self.peek().kind == Kind::Space {
            self.next();
        }
        self.peek()
    }

    fn backup(&mut self) {
        self.i -= 1;
    }

    fn describe(t: &Token<'_>) -> String {
        match t.kind {
            Kind::Eof => "EOF".into(),
            Kind::RightDelim => "}}".into(),
            Kind::Keyword => format!("<{}>", t.val),
            _ => format!("{:?}", t.val),
        }
    }

    fn unexpected(&self, t: &Token<'_>, context: &str) -> TemplateError {
        self.err(
            t.pos,
            format!("unexpected {} in {context}", Self::describe(t)),
        )
    }

    fn expect_right_delim(&mut self, context: &str) -> Result<(), TemplateError> {
        let t = self.next_non_space();
        if t.kind != Kind::RightDelim {
            return Err(self.unexpected(&t, context));
        }
        Ok(())
    }

    fn enter(&mut self, pos: usize) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(TemplateError::TooDeep {
                limit: MAX_NESTING,
                pos: Position::at(self.src, pos),
            });
        }
        Ok(())
    }

    fn text_or_action(&mut self) -> Result<Item<'a>, TemplateError> {
        let t = self.next_non_space();
        match t.kind {
            Kind::Text => Ok(Item::Node(Node::Text(t.val))),
            Kind::LeftDelim => self.action(),
            _ => Err(self.unexpected(&t, "input")),
        }
    }

    fn action(&mut self) -> Result<Item<'a>, TemplateError> {
        let t = self.next_non_space();
        if t.kind == Kind::Keyword {
            return match t.val {
                "if" => Ok(Item::Node(Node::If(self.control("if", t.pos)?))),
                "with" => Ok(Item::Node(Node::With(self.control("with", t.pos)?))),
                "range" => Ok(Item::Node(Node::Range(self.control("range", t.pos)?))),
                "end" => {
                    self.expect_right_delim("end")?;
                    Ok(Item::End(t.pos))
                }
                "else" => {
                    let peek = self.peek_non_space();
                    if !(peek.kind == Kind::Keyword && (peek.val == "if" || peek.val == "with")) {
                        self.expect_right_delim("else")?;
                    }
                    Ok(Item::Else(t.pos))
                }
                "break" | "continue" => {
                    if self.range_depth == 0 {
                        return Err(
                            self.err(t.pos, format!("{{{{{}}}}} outside {{{{range}}}}", t.val))
                        );
                    }
                    self.expect_right_delim(t.val)?;
                    Ok(Item::Node(if t.val == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    }))
                }
                other => Err(TemplateError::Unsupported {
                    feature: format!("{{{{{other}}}}} (define/template/block are not supported)"),
                    pos: Position::at(self.src, t.pos),
                }),
            };
        }
        self.backup();
        let pos = self.peek_non_space().pos;
        Ok(Item::Node(Node::Action(self.pipeline(
            "command",
            Kind::RightDelim,
            pos,
        )?)))
    }

    fn control(&mut self, context: &str, pos: usize) -> Result<Control<'a>, TemplateError> {
        self.enter(pos)?;
        let mark = self.vars.len();
        let pipe = self.pipeline(context, Kind::RightDelim, pos)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, next) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let mut else_list = None;
        if let Item::Else(_) = next {
            let peek = self.peek();
            if context == "if" && peek.kind == Kind::Keyword && peek.val == "if" {
                self.next();
                else_list = Some(vec![Node::If(self.control("if", peek.pos)?)]);
            } else if context == "with" && peek.kind == Kind::Keyword && peek.val == "with" {
                self.next();
                else_list = Some(vec![Node::With(self.control("with", peek.pos)?)]);
            } else {
                let (l, next) = self.item_list()?;
                match next {
                    Item::End(_) => {}
                    Item::Else(p) => return Err(self.err(p, "expected end; found {{else}}")),
                    Item::Node(_) => unreachable!("item_list returns only at end or else"),
                }
                else_list = Some(l);
            }
        }
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(Control {
            pipe,
            list,
            else_list,
        })
    }

    fn item_list(&mut self) -> Result<(Vec<Node<'a>>, Item<'a>), TemplateError> {
        let mut list = Vec::new();
        while self.peek_non_space().kind != Kind::Eof {
            match self.text_or_action()? {
                Item::Node(n) => list.push(n),
                other => return Ok((list, other)),
            }
        }
        Err(self.err(self.src.len(), "unexpected EOF"))
    }

    fn pipeline(
        &mut self,
        context: &str,
        end: Kind,
        pos: usize,
    ) -> Result<Pipe<'a>, TemplateError> {
        let mut pipe = Pipe {
            pos,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        loop {
            let v = self.peek_non_space();
            if v.kind != Kind::Variable {
                break;
            }
            let var_index = self.i;
            self.next();
            let next = self.peek_non_space();
            match next.kind {
                Kind::Assign | Kind::Declare => {
                    pipe.is_assign = next.kind == Kind::Assign;
                    self.next_non_space();
                    pipe.decl.push((v.pos, v.val));
                    self.vars.push(v.val);
                    break;
                }
                Kind::Char if next.val == "," => {
                    self.next_non_space();
                    pipe.decl.push((v.pos, v.val));
                    self.vars.push(v.val);
                    if context == "range" && pipe.decl.len() < 2 {
                        match self.peek_non_space().kind {
                            Kind::Variable | Kind::RightDelim | Kind::RightParen => continue,
                            _ => {
                                return Err(
                                    self.err(next.pos, "range can only initialize variables")
                                );
                            }
                        }
                    }
                    return Err(self.err(next.pos, format!("too many declarations in {context}")));
                }
                _ => {
                    // Not a declaration: the variable is the pipeline's first operand.
                    self.i = var_index;
                    break;
                }
            }
        }
        loop {
            let t = self.next_non_space();
            if t.kind == end {
                if pipe.cmds.is_empty() {
                    return Err(self.err(t.pos, format!("missing value for {context}")));
                }
                for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
                    if matches!(
                        c.args[0],
                        Arg::Bool(..) | Arg::Dot(_) | Arg::Nil(_) | Arg::Int(..) | Arg::Str(..)
                    ) {
                        return Err(self.err(
                            c.pos,
                            format!("non executable command in pipeline stage {}", i + 1),
                        ));
                    }
                }
                return Ok(pipe);
            }
            match t.kind {
                Kind::Bool
                | Kind::CharConst
                | Kind::Dot
                | Kind::Field
                | Kind::Identifier
                | Kind::Number
                | Kind::Nil
                | Kind::RawString
                | Kind::String
                | Kind::Variable
                | Kind::LeftParen => {
                    self.backup();
                    let cmd = self.command()?;
                    pipe.cmds.push(cmd);
                }
                Kind::Eof => return Err(self.err(t.pos, "unclosed action")),
                _ => return Err(self.unexpected(&t, context)),
            }
        }
    }

    fn command(&mut self) -> Result<Cmd<'a>, TemplateError> {
        let pos = self.peek_non_space().pos;
        let mut cmd = Cmd {
            pos,
            args: Vec::new(),
        };
        loop {
            self.peek_non_space();
            if let Some(op) = self.operand()? {
                cmd.args.push(op);
            }
            let t = self.next();
            match t.kind {
                Kind::Space => continue,
                Kind::RightDelim | Kind::RightParen => self.backup(),
                Kind::Pipe => {}
                _ => return Err(self.unexpected(&t, "operand")),
            }
            break;
        }
        if cmd.args.is_empty() {
            return Err(self.err(pos, "empty command"));
        }
        Ok(cmd)
    }

    fn operand(&mut self) -> Result<Option<Arg<'a>>, TemplateError> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if self.peek().kind != Kind::Field {
            return Ok(Some(node));
        }
        let pos = self.peek().pos;
        let mut idents = Vec::new();
        while self.peek().kind == Kind::Field {
            idents.push(&self.next().val[1..]);
        }
        Ok(Some(match node {
            Arg::Field {
                pos,
                idents: mut first,
            } => {
                first.extend(idents);
                Arg::Field { pos, idents: first }
            }
            Arg::Variable {
                pos,
                name,
                idents: mut first,
            } => {
                first.extend(idents);
                Arg::Variable {
                    pos,
                    name,
                    idents: first,
                }
            }
            Arg::Bool(p, _) | Arg::Str(p, _) | Arg::Int(p, _) | Arg::Nil(p) | Arg::Dot(p) => {
                return Err(self.err(p, "unexpected . after term"));
            }
            node => Arg::Chain {
                pos,
                node: Box::new(node),
                idents,
            },
        }))
    }

    fn term(&mut self) -> Result<Option<Arg<'a>>, TemplateError> {
        let t = self.next_non_space();
        Ok(Some(match t.kind {
            Kind::Identifier => Arg::Func(
                t.pos,
                Func::lookup(t.val).map_err(|hint| TemplateError::UnknownFunction {
                    name: t.val.to_string(),
                    pos: Position::at(self.src, t.pos),
                    hint,
                })?,
            ),
            Kind::Dot => Arg::Dot(t.pos),
            Kind::Nil => Arg::Nil(t.pos),
            Kind::Variable => {
                if !self.vars.contains(&t.val) {
                    return Err(self.err(t.pos, format!("undefined variable {:?}", t.val)));
                }
                Arg::Variable {
                    pos: t.pos,
                    name: t.val,
                    idents: Vec::new(),
                }
            }
            Kind::Field => Arg::Field {
                pos: t.pos,
                idents: vec![&t.val[1..]],
            },
            Kind::Bool => Arg::Bool(t.pos, t.val == "true"),
            Kind::CharConst => {
                let inner = &t.val[1..];
                let (v, _, tail) = gostr::unquote_char(inner, b'\'')
                    .ok_or_else(|| self.err(t.pos, "invalid syntax"))?;
                if tail != "'" {
                    return Err(self.err(t.pos, format!("malformed character constant: {}", t.val)));
                }
                Arg::Int(t.pos, i64::from(v))
            }
            Kind::Number => Arg::Int(t.pos, self.number(&t)?),
            Kind::LeftParen => {
                self.enter(t.pos)?;
                let p = self.pipeline("parenthesized pipeline", Kind::RightParen, t.pos)?;
                self.depth -= 1;
                Arg::Pipe(Box::new(p))
            }
            Kind::String | Kind::RawString => {
                let s = gostr::unquote(t.val)
                    .ok_or_else(|| self.err(t.pos, "invalid syntax in string literal"))?;
                Arg::Str(t.pos, s.into())
            }
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }

    fn number(&self, t: &Token<'_>) -> Result<i64, TemplateError> {
        if let Some(v) = gostr::parse_int(t.val) {
            return Ok(v);
        }
        let body = t.val.trim_start_matches(['+', '-']);
        let hex = body.len() > 1 && body[..2].eq_ignore_ascii_case("0x");
        let floaty = body.ends_with('i')
            || body.contains('.')
            || (!hex && body.contains(['e', 'E']))
            || (hex && body.contains(['p', 'P']));
        if floaty {
            return Err(TemplateError::Unsupported {
                feature: format!(
                    "number {} (float and complex constants are not supported)",
                    t.val
                ),
                pos: Position::at(self.src, t.pos),
            });
        }
        if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err(t.pos, format!("integer overflow: {:?}", t.val)));
        }
        Err(self.err(t.pos, format!("illegal number syntax: {:?}", t.val)))
    }
}
