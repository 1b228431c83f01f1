//! Evaluates a parsed template against the items, following Go's `text/template` executor:
//! argument conversion by parameter type, missing keys as invalid values, variable scoping,
//! short-circuit `and`/`or`, and `range` over lists, the item map and integers.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::funcs::{self, CallError, Func, Param};
use crate::parse::{Arg, Cmd, Control, Node, Pipe};
use crate::value::Value;
use crate::{MAX_OUTPUT_BYTES, MAX_STEPS, Position, TemplateError};

pub(crate) fn execute(
    src: &str,
    tree: &[Node<'_>],
    items: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>> {
    let map: BTreeMap<String, Rc<[u8]>> = items
        .iter()
        .map(|(k, v)| (k.clone(), Rc::from(v.as_slice())))
        .collect();
    let root = Value::Map(Rc::new(map));
    let mut ex = Exec {
        src,
        vars: vec![("$", root.clone())],
        out: Vec::new(),
        steps: 0,
    };
    ex.walk(&root, tree)?;
    Ok(ex.out)
}

enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'a> {
    src: &'a str,
    vars: Vec<(&'a str, Value)>,
    out: Vec<u8>,
    steps: u64,
}

type Result<T> = std::result::Result<T, TemplateError>;

impl<'a> Exec<'a> {
    fn pos(&self, pos: usize) -> Position {
        Position::at(self.src, pos)
    }

    fn err(&self, pos: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::Exec {
            pos: self.pos(pos),
            message: message.into(),
        }
    }

    fn step(&mut self, pos: usize, n: u64) -> Result<()> {
        self.steps = self.steps.saturating_add(n);
        if self.steps > MAX_STEPS {
            return Err(TemplateError::TooManySteps {
                limit: MAX_STEPS,
                pos: self.pos(pos),
            });
        }
        Ok(())
    }

    fn too_large(&self, pos: usize) -> TemplateError {
        TemplateError::OutputTooLarge {
            limit: MAX_OUTPUT_BYTES,
            pos: self.pos(pos),
        }
    }

    fn write(&mut self, pos: usize, bytes: &[u8]) -> Result<()> {
        if self.out.len() + bytes.len() > MAX_OUTPUT_BYTES {
            return Err(self.too_large(pos));
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn walk(&mut self, dot: &Value, nodes: &[Node<'a>]) -> Result<Flow> {
        for node in nodes {
            match node {
                Node::Text(t) => self.write(0, t.as_bytes())?,
                Node::Action(pipe) => {
                    self.step(pipe.pos, 1)?;
                    let v = self.eval_pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        self.print_value(pipe.pos, &v)?;
                    }
                }
                Node::If(c) | Node::With(c) => {
                    let mark = self.vars.len();
                    self.step(c.pipe.pos, 1)?;
                    let v = self.eval_pipeline(dot, &c.pipe)?;
                    let flow = if v.truth() {
                        let inner = if matches!(node, Node::With(_)) {
                            v
                        } else {
                            dot.clone()
                        };
                        self.walk(&inner, &c.list)?
                    } else if let Some(e) = &c.else_list {
                        self.walk(dot, e)?
                    } else {
                        Flow::Normal
                    };
                    self.vars.truncate(mark);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range(c) => {
                    let mark = self.vars.len();
                    self.range(dot, c)?;
                    self.vars.truncate(mark);
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    /// One pass of a range body with its declared variables set; `false` means stop.
    fn iteration(&mut self, c: &Control<'a>, index: Value, elem: Value) -> Result<bool> {
        let mark = self.vars.len();
        let decl = &c.pipe.decl;
        if c.pipe.is_assign {
            if decl.len() > 1 {
                self.set_var(decl[0], index)?;
                self.set_var(decl[1], elem.clone())?;
            } else if let Some(d) = decl.first() {
                self.set_var(*d, elem.clone())?;
            }
        } else if !decl.is_empty() {
            // The pipeline pushed the declared variables: the element is on top, the index below.
            let top = self.vars.len() - 1;
            self.vars[top].1 = elem.clone();
            if decl.len() > 1 {
                self.vars[top - 1].1 = index;
            }
        }
        self.step(c.pipe.pos, 1)?;
        let flow = self.walk(&elem, &c.list)?;
        self.vars.truncate(mark);
        Ok(!matches!(flow, Flow::Break))
    }

    fn range(&mut self, dot: &Value, c: &Control<'a>) -> Result<()> {
        self.step(c.pipe.pos, 1)?;
        let v = self.eval_pipeline(dot, &c.pipe)?;
        let mut ran = false;
        match &v {
            Value::List(l) => {
                for (i, s) in l.iter().enumerate() {
                    ran = true;
                    if !self.iteration(c, Value::Int(i as i64), Value::Str(s.clone()))? {
                        break;
                    }
                }
            }
            Value::Map(m) => {
                for (k, s) in m.iter() {
                    ran = true;
                    if !self.iteration(c, Value::str(k.as_bytes()), Value::Str(s.clone()))? {
                        break;
                    }
                }
            }
            Value::Int(n) => {
                if c.pipe.decl.len() > 1 {
                    return Err(self.err(
                        c.pipe.pos,
                        "can't use an integer to iterate over more than one variable",
                    ));
                }
                for i in 0..*n {
                    ran = true;
                    if !self.iteration(c, Value::Int(i), Value::Int(i))? {
                        break;
                    }
                }
            }
            Value::Nil | Value::Missing(_) => {}
            other => {
                return Err(self.err(
                    c.pipe.pos,
                    format!(
                        "range can't iterate over a value of type {}",
                        other.type_name()
                    ),
                ));
            }
        }
        if !ran && let Some(e) = &c.else_list {
            self.walk(dot, e)?;
        }
        Ok(())
    }

    fn print_value(&mut self, pos: usize, v: &Value) -> Result<()> {
        match v {
            Value::Nil | Value::Missing(_) => self.write(pos, b"<no value>"),
            Value::Str(s) => self.write(pos, s),
            v => {
                if self.out.len() + v.size_hint() > MAX_OUTPUT_BYTES {
                    return Err(self.too_large(pos));
                }
                v.write_v(&mut self.out);
                Ok(())
            }
        }
    }

    fn set_var(&mut self, (pos, name): (usize, &'a str), v: Value) -> Result<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| *n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => Err(self.err(pos, format!("undefined variable: {name}"))),
        }
    }

    fn var(&self, pos: usize, name: &str) -> Result<Value> {
        match self.vars.iter().rev().find(|(n, _)| *n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => Err(self.err(pos, format!("undefined variable: {name}"))),
        }
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &Pipe<'a>) -> Result<Value> {
        let mut value = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Value::Nil);
        for d in &pipe.decl {
            if pipe.is_assign {
                self.set_var(*d, value.clone())?;
            } else {
                self.vars.push((d.1, value.clone()));
            }
        }
        Ok(value)
    }

    fn not_a_function(&self, cmd: &Cmd<'a>, has_final: bool) -> Result<()> {
        if cmd.args.len() > 1 || has_final {
            return Err(self.err(cmd.args[0].pos(), "can't give argument to non-function"));
        }
        Ok(())
    }

    fn eval_command(&mut self, dot: &Value, cmd: &Cmd<'a>, fin: Option<Value>) -> Result<Value> {
        self.step(cmd.pos, 1)?;
        let has_args = cmd.args.len() > 1 || fin.is_some();
        match &cmd.args[0] {
            Arg::Field { pos, idents } => self.field_chain(*pos, dot.clone(), idents, has_args),
            Arg::Variable { pos, name, idents } => {
                let v = self.var(*pos, name)?;
                if idents.is_empty() {
                    self.not_a_function(cmd, fin.is_some())?;
                    Ok(v)
                } else {
                    self.field_chain(*pos, v, idents, has_args)
                }
            }
            Arg::Chain { pos, node, idents } => {
                let v = self.eval_arg(dot, Param::Any, node)?;
                self.field_chain(*pos, v, idents, has_args)
            }
            Arg::Func(pos, f) => self.call(dot, *pos, *f, &cmd.args[1..], fin),
            Arg::Pipe(p) => {
                self.not_a_function(cmd, fin.is_some())?;
                self.eval_pipeline(dot, p)
            }
            Arg::Nil(pos) => Err(self.err(*pos, "nil is not a command")),
            lit => {
                self.not_a_function(cmd, fin.is_some())?;
                Ok(match lit {
                    Arg::Bool(_, b) => Value::Bool(*b),
                    Arg::Int(_, n) => Value::Int(*n),
                    Arg::Str(_, s) => Value::Str(s.clone()),
                    _ => dot.clone(),
                })
            }
        }
    }

    fn field_chain(
        &self,
        pos: usize,
        mut receiver: Value,
        idents: &[&str],
        has_args: bool,
    ) -> Result<Value> {
        for (i, name) in idents.iter().enumerate() {
            receiver = match &receiver {
                Value::Nil | Value::Missing(_) => Value::Missing(Rc::from(*name)),
                Value::Map(m) => {
                    if has_args && i == idents.len() - 1 {
                        return Err(
                            self.err(pos, format!("{name} is not a method but has arguments"))
                        );
                    }
                    match m.get(*name) {
                        Some(v) => Value::Str(v.clone()),
                        None => Value::Missing(Rc::from(*name)),
                    }
                }
                other => {
                    return Err(self.err(
                        pos,
                        format!("can't evaluate field {name} in type {}", other.type_name()),
                    ));
                }
            };
        }
        Ok(receiver)
    }

    /// Converts a computed value to a parameter type, as Go's `validateType`.
    fn validate(&self, pos: usize, f: Func, param: Param, v: Value) -> Result<Value> {
        match (param, &v) {
            (Param::Any, _) | (Param::Str, Value::Str(_)) | (Param::Int, Value::Int(_)) => Ok(v),
            (_, Value::Missing(key)) => Err(TemplateError::MissingKey {
                key: key.to_string(),
                pos: self.pos(pos),
                context: format!("{} needs {} argument", f.name(), param.described()),
            }),
            (_, Value::Nil) => Err(self.err(
                pos,
                format!(
                    "invalid nil value for {}; expected {}",
                    f.name(),
                    param.go_name()
                ),
            )),
            (_, other) => Err(self.err(
                pos,
                format!(
                    "wrong type for argument of {}: expected {}, got {}",
                    f.name(),
                    param.go_name(),
                    other.type_name()
                ),
            )),
        }
    }

    fn eval_arg(&mut self, dot: &Value, param: Param, arg: &Arg<'a>) -> Result<Value> {
        Ok(match arg {
            Arg::Dot(_) => dot.clone(),
            Arg::Nil(pos) => {
                if param != Param::Any {
                    return Err(self.err(*pos, format!("cannot assign nil to {}", param.go_name())));
                }
                Value::Nil
            }
            Arg::Field { pos, idents } => self.field_chain(*pos, dot.clone(), idents, false)?,
            Arg::Variable { pos, name, idents } => {
                let v = self.var(*pos, name)?;
                self.field_chain(*pos, v, idents, false)?
            }
            Arg::Pipe(p) => self.eval_pipeline(dot, p)?,
            Arg::Func(pos, f) => self.call(dot, *pos, *f, &[], None)?,
            Arg::Chain { pos, node, idents } => {
                let v = self.eval_arg(dot, Param::Any, node)?;
                self.field_chain(*pos, v, idents, false)?
            }
            Arg::Bool(pos, b) => match param {
                Param::Any => Value::Bool(*b),
                _ => {
                    return Err(self.err(
                        *pos,
                        format!("expected {}; found boolean constant", param.go_name()),
                    ));
                }
            },
            Arg::Int(pos, n) => match param {
                Param::Any | Param::Int => Value::Int(*n),
                Param::Str => return Err(self.err(*pos, "expected string; found integer constant")),
            },
            Arg::Str(pos, s) => match param {
                Param::Any | Param::Str => Value::Str(s.clone()),
                Param::Int => return Err(self.err(*pos, "expected integer; found string constant")),
            },
        })
    }

    fn eval_typed_arg(
        &mut self,
        dot: &Value,
        f: Func,
        param: Param,
        arg: &Arg<'a>,
    ) -> Result<Value> {
        let constant = match (param, arg) {
            (Param::Str | Param::Int, Arg::Bool(..)) => Some("boolean constant"),
            (Param::Str, Arg::Int(..)) => Some("integer constant"),
            (Param::Int, Arg::Str(..)) => Some("string constant"),
            (Param::Str | Param::Int, Arg::Nil(_)) => Some("nil"),
            _ => None,
        };
        if let Some(found) = constant {
            return Err(self.err(
                arg.pos(),
                format!(
                    "wrong type for argument of {}: expected {}, found {found}",
                    f.name(),
                    param.go_name()
                ),
            ));
        }
        let v = self.eval_arg(dot, param, arg)?;
        match arg {
            Arg::Bool(..) | Arg::Int(..) | Arg::Str(..) | Arg::Nil(_) => Ok(v),
            _ => self.validate(arg.pos(), f, param, v),
        }
    }

    fn call(
        &mut self,
        dot: &Value,
        pos: usize,
        f: Func,
        args: &[Arg<'a>],
        fin: Option<Value>,
    ) -> Result<Value> {
        self.step(pos, 1)?;
        let (fixed, variadic) = f.signature();
        let got = args.len() + usize::from(fin.is_some());
        let count_ok = if variadic.is_some() {
            got >= fixed.len()
        } else {
            got == fixed.len()
        };
        if !count_ok {
            let want = if variadic.is_some() {
                format!("at least {}", fixed.len())
            } else {
                fixed.len().to_string()
            };
            return Err(TemplateError::ArgCount {
                name: f.name().into(),
                pos: self.pos(pos),
                want,
                got,
            });
        }
        let param_at = |i: usize| fixed.get(i).copied().or(variadic).unwrap_or(Param::Any);
        if matches!(f, Func::And | Func::Or) {
            let mut v = Value::Nil;
            for a in args {
                v = self.eval_arg(dot, Param::Any, a)?;
                if v.truth() == (f == Func::Or) {
                    return Ok(v);
                }
            }
            if let Some(fin) = fin {
                v = fin;
            }
            return Ok(v);
        }
        let mut values = Vec::with_capacity(got);
        for (i, a) in args.iter().enumerate() {
            values.push(self.eval_typed_arg(dot, f, param_at(i), a)?);
        }
        if let Some(fin) = fin {
            values.push(self.validate(pos, f, param_at(args.len()), fin)?);
        }
        if let Value::List(l) = &values.last().unwrap_or(&Value::Nil) {
            self.step(pos, l.len() as u64)?;
        }
        let result = funcs::call(f, &values, MAX_OUTPUT_BYTES).map_err(|e| match e {
            CallError::Failed(m) => self.err(pos, format!("error calling {}: {m}", f.name())),
            CallError::TooLarge => self.too_large(pos),
            CallError::Unsupported(feature) => TemplateError::Unsupported {
                feature,
                pos: self.pos(pos),
            },
        })?;
        match &result {
            Value::Str(s) if s.len() > MAX_OUTPUT_BYTES => return Err(self.too_large(pos)),
            Value::List(l) => self.step(pos, l.len() as u64)?,
            _ => {}
        }
        Ok(result)
    }
}
