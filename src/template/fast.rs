//! Fast paths for the expressions that make up nearly every real flow.
//!
//! The pest grammar stays the parser of record and minijinja the evaluator; these paths
//! only skip work for the common forms, and tests hold them to exactly what the grammar
//! builds and what minijinja computes:
//!
//! - [`parse_sum`] builds `operand + operand + …` (plain paths, simple string and number
//!   literals) directly, the shape of most templated text (`contact.name + ' #17'`);
//!   anything else returns `None` and goes to the grammar;
//! - [`Fast`] evaluates literals, paths, operators, `&&`/`||`/`??`, `!`, `? :` and
//!   `.length` straight from the tree against the JSON store. It needs no compiled
//!   minijinja expression, whose bytecode buffers cost ~12 KB each however small the
//!   expression (minijinja reserves 256 instructions per compile), and it walks the
//!   store without allocating a view per step. Methods, globals, regular expressions,
//!   filters and computed subscripts are compiled to minijinja as before.

use std::ops::Range;

use minijinja::value::Value;

use super::ast::{BinOp, Expr, LogicOp, Node, Root, Step, UnOp};
use super::eval::{self, JsonSeg, RootView};
use super::lower::{add_operands, Read};

/// A directly evaluated expression (see the module docs).
#[derive(Debug)]
pub(crate) enum Fast {
    /// A literal.
    Const(Value),
    /// A path read; `record` is the read id lowering would give `js_read`.
    Read {
        root: Root,
        steps: Box<[FastStep]>,
        record: Option<u32>,
    },
    /// A `+` chain, left to right; the span is the whole chain's, as minijinja reports it.
    Add(Box<[Fast]>, Range<usize>),
    /// Any other binary operator.
    Binary(BinOp, Box<[Fast; 2]>),
    /// `!x`
    Not(Box<Fast>),
    /// `-x`
    Neg(Box<Fast>),
    /// `+x`
    Plus(Box<Fast>),
    /// A `&&` / `||` / `??` chain.
    Logic(LogicOp, Box<[Fast]>),
    /// `c ? a : b`, stored as `[c, a, b]`.
    Cond(Box<[Fast; 3]>),
    /// `x.length`
    Length(Box<Fast>),
    /// `[a, b]`
    Array(Box<[Fast]>),
    /// `{k: v}`
    Object(Box<[(Value, Fast)]>),
}

/// A plain step of a path.
#[derive(Debug)]
pub(crate) enum FastStep {
    Key(Box<str>),
    Index(u64),
}

/// Why a fast evaluation failed, in the terms the minijinja path reports.
pub(crate) enum FastError {
    /// A recorded read found nothing in strict mode.
    Undefined(u32),
    /// An operator failed (a string over the size limit): message and node span.
    Op(minijinja::Error, Range<usize>),
}

/// Builds the fast form of `node`, or `None` when it uses something only minijinja
/// evaluates. Read ids and context-variable reads come out exactly as
/// [`lower`](super::lower::lower) gives them (tests check it).
pub(crate) fn build(
    node: &Node,
    reads: &mut Vec<Read>,
    context_vars: &mut Vec<(String, Range<usize>)>,
) -> Option<Fast> {
    if !eligible(node) {
        return None;
    }
    let mut b = Builder {
        reads,
        context_vars,
    };
    Some(b.node(node, false))
}

/// Whether every node is one the fast evaluator handles (checked before building, so
/// a refused tree leaves no reads behind).
fn eligible(n: &Node) -> bool {
    match &n.expr {
        Expr::Null | Expr::Undefined | Expr::Bool(_) | Expr::Number(_) | Expr::Str(_) => true,
        Expr::Path { steps, .. } => steps.iter().all(|s| !matches!(s, Step::Computed(_))),
        Expr::Binary(BinOp::Add, ..) => add_operands(n).into_iter().all(eligible),
        Expr::Binary(_, a, b) => eligible(a) && eligible(b),
        Expr::Unary(_, x) | Expr::Length(x) => eligible(x),
        Expr::Logic(_, xs) | Expr::Array(xs) => xs.iter().all(eligible),
        Expr::Cond(c, a, b) => eligible(c) && eligible(a) && eligible(b),
        Expr::Object(items) => items.iter().all(|(_, v)| eligible(v)),
        _ => false,
    }
}

struct Builder<'a> {
    reads: &'a mut Vec<Read>,
    context_vars: &'a mut Vec<(String, Range<usize>)>,
}

impl Builder<'_> {
    /// Mirrors `Lowerer::expr`: same traversal order, same `guarded` rules.
    fn node(&mut self, n: &Node, guarded: bool) -> Fast {
        match &n.expr {
            Expr::Null => Fast::Const(Value::from(())),
            Expr::Undefined => Fast::Const(Value::UNDEFINED),
            Expr::Bool(b) => Fast::Const(Value::from(*b)),
            Expr::Number(x) => Fast::Const(number(*x)),
            Expr::Str(s) => Fast::Const(Value::from(s.as_str())),
            Expr::Path {
                root,
                steps,
                optional,
            } => {
                if let (Root::Context, Some(Step::Key(name))) = (root, steps.first()) {
                    self.context_vars.push((name.clone(), n.span.clone()));
                }
                let record = if !guarded && !optional {
                    let id = self.reads.len() as u32;
                    self.reads.push(Read {
                        span: n.span.clone(),
                    });
                    Some(id)
                } else {
                    None
                };
                let steps = steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::Key(k) => Some(FastStep::Key(k.as_str().into())),
                        Step::Index(i) => Some(FastStep::Index(*i)),
                        Step::Computed(_) => None,
                    })
                    .collect();
                Fast::Read {
                    root: *root,
                    steps,
                    record,
                }
            }
            Expr::Binary(BinOp::Add, ..) => {
                let ops = add_operands(n)
                    .into_iter()
                    .map(|o| self.node(o, false))
                    .collect();
                Fast::Add(ops, n.span.clone())
            }
            Expr::Binary(op, a, b) => {
                let absent = |n: &Node| matches!(n.expr, Expr::Null | Expr::Undefined);
                let test = matches!(
                    op,
                    BinOp::Eq | BinOp::Ne | BinOp::StrictEq | BinOp::StrictNe
                ) && (absent(a) || absent(b));
                let a = self.node(a, test);
                let b = self.node(b, test);
                Fast::Binary(*op, Box::new([a, b]))
            }
            Expr::Unary(UnOp::Not, x) => Fast::Not(Box::new(self.node(x, true))),
            Expr::Unary(UnOp::Neg, x) => Fast::Neg(Box::new(self.node(x, false))),
            Expr::Unary(UnOp::Plus, x) => Fast::Plus(Box::new(self.node(x, false))),
            Expr::Length(x) => Fast::Length(Box::new(self.node(x, guarded))),
            Expr::Logic(op, xs) => {
                let last = xs.len().saturating_sub(1);
                let ops = xs
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.node(x, if i < last { true } else { guarded }))
                    .collect();
                Fast::Logic(*op, ops)
            }
            Expr::Cond(c, a, b) => {
                // Lowering emits `(a if c else b)`: ids follow that order.
                let a = self.node(a, guarded);
                let c = self.node(c, true);
                let b = self.node(b, guarded);
                Fast::Cond(Box::new([c, a, b]))
            }
            Expr::Array(xs) => Fast::Array(xs.iter().map(|x| self.node(x, false)).collect()),
            Expr::Object(items) => Fast::Object(
                items
                    .iter()
                    .map(|(k, v)| (Value::from(k.as_str()), self.node(v, false)))
                    .collect(),
            ),
            // `eligible` refused every other node before building started.
            _ => Fast::Const(Value::UNDEFINED),
        }
    }
}

/// A number literal as minijinja reads the lowered text: integral values as integers.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else if n.is_finite() {
        Value::from(n)
    } else {
        eval::num(n)
    }
}

/// What one evaluation sees and records.
pub(crate) struct Cx<'a> {
    pub(crate) roots: Option<&'a RootView>,
    pub(crate) strict: bool,
    /// Ids of recorded reads that found nothing (lenient mode), without repeats.
    pub(crate) missing: Vec<u32>,
}

impl Fast {
    /// Evaluates against the store.
    pub(crate) fn eval(&self, cx: &mut Cx<'_>) -> Result<Value, FastError> {
        Ok(match self {
            Fast::Const(v) => v.clone(),
            Fast::Read {
                root,
                steps,
                record,
            } => {
                let v = read(cx.roots, *root, steps);
                if let (Some(id), true) = (record, v.is_undefined()) {
                    if cx.strict {
                        return Err(FastError::Undefined(*id));
                    }
                    if !cx.missing.contains(id) {
                        cx.missing.push(*id);
                    }
                }
                v
            }
            Fast::Add(ops, span) => {
                let mut acc = match ops.first() {
                    Some(first) => first.eval(cx)?,
                    None => Value::UNDEFINED,
                };
                for o in ops.iter().skip(1) {
                    let v = o.eval(cx)?;
                    acc = eval::add(&acc, &v).map_err(|e| FastError::Op(e, span.clone()))?;
                }
                acc
            }
            Fast::Binary(op, ab) => {
                let a = ab[0].eval(cx)?;
                let b = ab[1].eval(cx)?;
                // Only `+` can fail, and it is an `Add` node.
                eval::binary(*op, &a, &b).unwrap_or(Value::UNDEFINED)
            }
            Fast::Not(x) => Value::from(!eval::truthy(&x.eval(cx)?)),
            Fast::Neg(x) => eval::num(-eval::to_number(&x.eval(cx)?)),
            Fast::Plus(x) => eval::num(eval::to_number(&x.eval(cx)?)),
            Fast::Length(x) => eval::length(&x.eval(cx)?).unwrap_or(Value::UNDEFINED),
            Fast::Logic(op, ops) => {
                let Some((last, init)) = ops.split_last() else {
                    return Ok(Value::UNDEFINED);
                };
                for o in init {
                    let v = o.eval(cx)?;
                    let decided = match op {
                        LogicOp::Or => eval::truthy(&v),
                        LogicOp::And => !eval::truthy(&v),
                        LogicOp::Coalesce => !v.is_undefined() && !v.is_none(),
                    };
                    if decided {
                        return Ok(v);
                    }
                }
                last.eval(cx)?
            }
            Fast::Cond(cab) => {
                if eval::truthy(&cab[0].eval(cx)?) {
                    cab[1].eval(cx)?
                } else {
                    cab[2].eval(cx)?
                }
            }
            Fast::Array(xs) => {
                if !super::budget::bytes(xs.len() as u64 * super::budget::NODE_BYTES) {
                    return Ok(Value::UNDEFINED);
                }
                let mut out = Vec::with_capacity(xs.len());
                for x in xs.iter() {
                    out.push(x.eval(cx)?);
                }
                Value::from(out)
            }
            Fast::Object(items) => {
                // The map minijinja builds for a `{…}` literal (later duplicates win).
                if !super::budget::bytes(items.len() as u64 * 2 * super::budget::NODE_BYTES) {
                    return Ok(Value::UNDEFINED);
                }
                let mut out = indexmap::IndexMap::with_capacity(items.len());
                for (k, x) in items.iter() {
                    out.insert(k.clone(), x.eval(cx)?);
                }
                Value::from_object(out)
            }
        })
    }
}

/// Reads `root.steps…` from the store with minijinja's subscript meaning (missing →
/// undefined), walking the JSON directly and wrapping only the value found.
fn read(roots: Option<&RootView>, root: Root, steps: &[FastStep]) -> Value {
    use serde_json::Value as J;
    let Some(doc) = roots.and_then(|r| r.root(root.name())) else {
        return Value::UNDEFINED;
    };
    let mut node: &J = doc;
    for (i, step) in steps.iter().enumerate() {
        let next = match (node, step) {
            (J::Object(m), FastStep::Key(k)) => m.get(&**k),
            (J::Object(m), FastStep::Index(ix)) => m.get(&eval::format_number(*ix as f64)),
            (J::Array(a), FastStep::Key(k)) => k
                .parse::<usize>()
                .ok()
                .filter(|ix| ix.to_string() == **k)
                .and_then(|ix| a.get(ix)),
            (J::Array(a), FastStep::Index(ix)) => {
                usize::try_from(*ix).ok().and_then(|ix| a.get(ix))
            }
            (J::Null, _) => None,
            // A scalar: minijinja's own subscript (a string's `[0]` is its first char).
            _ => {
                let mut v = eval::json_value(doc, &path_to(doc, &steps[..i]));
                for s in &steps[i..] {
                    if v.is_undefined() {
                        break;
                    }
                    let key = match s {
                        FastStep::Key(k) => Value::from(&**k),
                        FastStep::Index(ix) => Value::from(*ix),
                    };
                    v = v.get_item(&key).unwrap_or(Value::UNDEFINED);
                }
                return v;
            }
        };
        match next {
            Some(n) => node = n,
            None => return Value::UNDEFINED,
        }
    }
    match node {
        J::Array(_) | J::Object(_) => eval::json_value(doc, &path_to(doc, steps)),
        scalar => eval::json_scalar(scalar),
    }
}

/// The view path of `steps` inside `doc` (keys as the map spells them).
fn path_to(doc: &std::sync::Arc<serde_json::Value>, steps: &[FastStep]) -> Vec<JsonSeg> {
    use serde_json::Value as J;
    let mut out = Vec::with_capacity(steps.len());
    let mut node: &J = doc;
    for s in steps {
        let (seg, next) = match (node, s) {
            (J::Object(m), FastStep::Key(k)) => match m.get_key_value(&**k) {
                Some((k, v)) => (JsonSeg::Key(k.as_str().into()), v),
                None => break,
            },
            (J::Object(m), FastStep::Index(ix)) => {
                match m.get_key_value(&eval::format_number(*ix as f64)) {
                    Some((k, v)) => (JsonSeg::Key(k.as_str().into()), v),
                    None => break,
                }
            }
            (J::Array(a), FastStep::Key(k)) => match k.parse::<usize>() {
                Ok(ix) if a.get(ix).is_some() => (JsonSeg::Idx(ix), &a[ix]),
                _ => break,
            },
            (J::Array(a), FastStep::Index(ix)) => match usize::try_from(*ix) {
                Ok(ix) if a.get(ix).is_some() => (JsonSeg::Idx(ix), &a[ix]),
                _ => break,
            },
            _ => break,
        };
        out.push(seg);
        node = next;
    }
    out
}

/// Parses `operand + operand + …` where each operand is a plain path, a string literal
/// without escapes or a decimal number, exactly as the grammar would build it; `None`
/// for anything else (the grammar then parses it, errors included).
pub(crate) fn parse_sum(src: &str) -> Option<Node> {
    let mut acc: Option<Node> = None;
    scan_sum(src, |op, span| {
        let expr = match op {
            Operand::Str(s) => Expr::Str(s.to_string()),
            Operand::Num(n) => Expr::Number(n),
            Operand::Path(p) => super::parse::simple_path(p)?.expr,
        };
        let rhs = Node { expr, span };
        acc = Some(match acc.take() {
            None => rhs,
            Some(a) => {
                let span = a.span.start..rhs.span.end;
                Node {
                    expr: Expr::Binary(BinOp::Add, Box::new(a), Box::new(rhs)),
                    span,
                }
            }
        });
        Some(())
    })?;
    acc
}

/// What one compiled expression keeps besides its evaluator: the reads it records and
/// the context variables it reads (as [`build`] fills them).
pub(crate) type Recorded = (Vec<Read>, Vec<(String, Range<usize>)>);

/// The fast form of a plain path or of a [`parse_sum`] chain, straight from the text:
/// what [`build`] makes of [`parse_expression`](super::parse::parse_expression)'s tree
/// for them, without building the tree (the commonest expressions; tests check both
/// agree). `None` for anything else.
pub(crate) fn compile_simple(src: &str) -> Option<(Fast, Recorded)> {
    if src.len() > super::parse::MAX_EXPRESSION_LEN {
        return None;
    }
    // A lone path is a chain of one operand: `parse_expression`'s `simple_path` takes
    // exactly the paths the chain scanner takes, with the same span.
    let mut rec: Recorded = (Vec::with_capacity(1), Vec::new());
    let mut ops: Vec<Fast> = Vec::with_capacity(2);
    let mut whole = 0..0;
    scan_sum(src, |op, span| {
        if ops.is_empty() {
            whole.start = span.start;
        }
        whole.end = span.end;
        ops.push(match op {
            Operand::Str(s) => Fast::Const(Value::from(s)),
            Operand::Num(n) => Fast::Const(number(n)),
            Operand::Path(p) => path_read(p, span, &mut rec)?,
        });
        Some(())
    })?;
    let f = if ops.len() == 1 {
        ops.pop()?
    } else {
        Fast::Add(ops.into(), whole)
    };
    Some((f, rec))
}

/// The recorded read of the plain path `src` (at `span` in the expression), as
/// [`build`] makes it.
fn path_read(src: &str, span: Range<usize>, rec: &mut Recorded) -> Option<Fast> {
    // Exact capacity: the steps are kept as a boxed slice.
    let dots = src.bytes().filter(|&b| b == b'.').count();
    let mut steps: Vec<FastStep> = Vec::with_capacity(dots + usize::from(src.starts_with('$')));
    let mut first: Option<&str> = None;
    let (root, _) = super::parse::simple_path_parts(src, |k| {
        first.get_or_insert(k);
        steps.push(FastStep::Key(k.into()));
    })?;
    if let (Root::Context, Some(name)) = (root, first) {
        rec.1.push((name.to_string(), span.clone()));
    }
    let id = rec.0.len() as u32;
    rec.0.push(Read { span });
    Some(Fast::Read {
        root,
        steps: steps.into(),
        record: Some(id),
    })
}

/// One operand of a plain `+` chain, as scanned.
enum Operand<'s> {
    /// A string literal's body (no escapes).
    Str(&'s str),
    /// A decimal number.
    Num(f64),
    /// Text made only of name characters and dots: a plain path if
    /// [`simple_path_parts`](super::parse::simple_path_parts) accepts it.
    Path(&'s str),
}

/// Scans `operand + operand + …`, handing each operand and its span to `f` (which may
/// refuse it); `None` when `src` is not such a chain.
fn scan_sum<'s>(
    src: &'s str,
    mut f: impl FnMut(Operand<'s>, Range<usize>) -> Option<()>,
) -> Option<()> {
    let b = src.as_bytes();
    // The grammar's operator bound: leave over-long input to it (it reports the limit).
    if super::parse::operator_count(b) > super::parse::MAX_OPERATORS {
        return None;
    }
    let ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\r' | b'\n') {
            *i += 1;
        }
    };
    let mut i = 0;
    ws(&mut i);
    let (op, span) = operand(src, &mut i)?;
    f(op, span)?;
    loop {
        ws(&mut i);
        if i == b.len() {
            return Some(());
        }
        if b[i] != b'+' || matches!(b.get(i + 1), Some(b'+' | b'=')) {
            return None;
        }
        i += 1;
        ws(&mut i);
        let (op, span) = operand(src, &mut i)?;
        f(op, span)?;
    }
}

fn operand<'s>(src: &'s str, i: &mut usize) -> Option<(Operand<'s>, Range<usize>)> {
    let b = src.as_bytes();
    let start = *i;
    let first = *b.get(start)?;
    match first {
        b'\'' | b'"' => {
            let close = start + 1 + b[start + 1..].iter().position(|&c| c == first)?;
            let body = &src[start + 1..close];
            if body.contains('\\') {
                return None;
            }
            *i = close + 1;
            Some((Operand::Str(body), start..close + 1))
        }
        b'0'..=b'9' => {
            let mut j = start;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if b.get(j) == Some(&b'.') {
                j += 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
            // Exponents, and a number followed by a name or member, go to the grammar.
            if b.get(j).is_some_and(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'$') || *c >= 0x80
            }) {
                return None;
            }
            let n: f64 = src[start..j].parse().ok()?;
            *i = j;
            Some((Operand::Num(n), start..j))
        }
        _ => {
            let mut j = start;
            while j < b.len()
                && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'_' | b'$' | b'.'))
            {
                j += 1;
            }
            if j == start || b.get(j).is_some_and(|c| *c >= 0x80) {
                return None;
            }
            *i = j;
            Some((Operand::Path(&src[start..j]), start..j))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::template::parse::{parse_with_grammar, simple_path};
    use crate::template::{CompiledExpr, Scope};

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn pick<'a>(seed: &mut u64, xs: &[&'a str]) -> &'a str {
        xs[(rng(seed) % xs.len() as u64) as usize]
    }

    const PATHS: &[&str] = &[
        "contact.name",
        "contact.extra.plano",
        "contact.missing",
        "contact.tags",
        "contact.age",
        "$a",
        "$tag",
        "$nope",
        "$obj.k",
        "$list",
        "context.a",
        "input.text",
        "intent",
        "entities",
        "contact.name.x",
        "$n",
        "confidence",
    ];
    const LITERALS: &[&str] = &[
        "' #17'", "\"x\"", "''", "17", "0", "1.5", "007", "2.", "'a b'", "\"é\"",
    ];
    const SPACES: &[&str] = &["", " ", "  ", "\t", "\n"];

    fn sum(seed: &mut u64) -> String {
        let n = 1 + rng(seed) % 5;
        let mut s = String::from(pick(seed, SPACES));
        for k in 0..n {
            if k > 0 {
                s.push_str(pick(seed, SPACES));
                s.push('+');
                s.push_str(pick(seed, SPACES));
            }
            if rng(seed).is_multiple_of(2) {
                s.push_str(pick(seed, PATHS));
            } else {
                s.push_str(pick(seed, LITERALS));
            }
        }
        s.push_str(pick(seed, SPACES));
        s
    }

    #[test]
    fn sums_build_what_the_grammar_builds() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut fast = 0;
        for _ in 0..3000 {
            let src = sum(&mut seed);
            let slow = parse_with_grammar(&src).expect("the generator writes valid sums");
            if let Some(f) = parse_sum(&src) {
                fast += 1;
                assert_eq!(f, slow, "{src:?}");
            } else {
                assert!(
                    simple_path(&src).is_some() || src.trim().is_empty(),
                    "{src:?} should be fast"
                );
            }
        }
        assert!(fast > 2000, "the fast parser handled only {fast} sums");
        // Near misses go to the grammar.
        for src in [
            "a + 1",
            "contact.name + -1",
            "1e3 + contact.name",
            "'a\\'b' + x",
            "contact.name ++ 1",
            "contact.name += 1",
            "contact.x.length + 1",
            "contact.name.trim() + 1",
            "1.5.x + 2",
            "'a'.length + 1",
            "contact . name + 1",
            "contact.näme + 1",
            "contact.name + 'x' ?? 1",
            "(contact.name) + 1",
            "contact['a'] + 1",
            ".5 + 1",
        ] {
            if let Some(f) = parse_sum(src) {
                panic!("{src:?} must take the grammar path, fast built {f:?}");
            }
        }
    }

    /// What the general path makes of `src`: the grammar's tree, built.
    fn built(src: &str) -> Option<String> {
        let node = parse_with_grammar(src).ok()?;
        let mut rec: Recorded = (Vec::new(), Vec::new());
        let f = build(&node, &mut rec.0, &mut rec.1)?;
        Some(format!("{f:?} {rec:?}"))
    }

    #[test]
    fn direct_compilation_builds_what_the_grammar_tree_builds() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut direct = 0;
        let mut check = |src: &str| {
            if let Some((f, rec)) = compile_simple(src) {
                direct += 1;
                assert_eq!(Some(format!("{f:?} {rec:?}")), built(src), "{src:?}");
            } else {
                // Refused: it is not a plain chain, so the tree path decides.
                assert!(
                    parse_sum(src).is_none() && simple_path(src).is_none(),
                    "{src:?} should compile directly"
                );
            }
        };
        for _ in 0..3000 {
            check(&sum(&mut seed));
        }
        for _ in 0..3000 {
            check(&expr(&mut seed, 3));
        }
        for src in [
            "$a",
            " $a.b.c ",
            "context.x",
            "context",
            "$a + 1",
            "a + 1",
            "'a\\'b' + x",
            "contact.name + -1",
            "1e3 + contact.name",
            "contact.x.length + 1",
            "contact.name.trim() + 1",
            "contact . name + 1",
            "contact.näme + 1",
            "\u{a0}contact.name",
            "$1",
            "$",
            "",
            " ",
            "contact.name ++ 1",
            ".5 + 1",
        ] {
            check(src);
        }
        let _ = check;
        assert!(direct > 3000, "only {direct} expressions compiled directly");
    }

    /// A random expression over the forms the fast evaluator takes.
    fn expr(seed: &mut u64, depth: u32) -> String {
        let leaf = depth == 0 || rng(seed).is_multiple_of(3);
        if leaf {
            return match rng(seed) % 6 {
                0..=2 => pick(seed, PATHS).to_string(),
                3 => pick(seed, LITERALS).to_string(),
                4 => pick(seed, &["null", "undefined", "true", "false", "-0", "1e400"]).to_string(),
                _ => pick(
                    seed,
                    &[
                        "contact?.name",
                        "$obj?.k",
                        "$list[1]",
                        "contact.tags[0]",
                        "contact.name[0]",
                        "$obj['k']",
                    ],
                )
                .to_string(),
            };
        }
        let d = depth - 1;
        match rng(seed) % 12 {
            0 => format!("{} + {}", expr(seed, d), expr(seed, d)),
            1 => format!(
                "({} {} {})",
                expr(seed, d),
                pick(seed, &["-", "*", "/", "%"]),
                expr(seed, d)
            ),
            2 => format!(
                "({} {} {})",
                expr(seed, d),
                pick(seed, &["==", "!=", "===", "!==", "<", "<=", ">", ">="]),
                expr(seed, d)
            ),
            3 => format!(
                "({} {} {})",
                expr(seed, d),
                pick(seed, &["&&", "||", "??"]),
                expr(seed, d)
            ),
            4 => format!("!{}", expr(seed, d)),
            5 => format!("-({})", expr(seed, d)),
            6 => format!("+({})", expr(seed, d)),
            7 => format!(
                "({} ? {} : {})",
                expr(seed, d),
                expr(seed, d),
                expr(seed, d)
            ),
            8 => format!("({}).length", expr(seed, d)),
            9 => format!("[{}, {}]", expr(seed, d), expr(seed, d)),
            10 => format!("{{k: {}, \"j\": {}}}", expr(seed, d), expr(seed, d)),
            _ => format!("({} == null)", expr(seed, d)),
        }
    }

    fn stores() -> Vec<Scope> {
        let docs = [
            serde_json::json!({
                "contact": {"name": "Ana", "extra": {"plano": "gold"}, "tags": ["a", "b"], "age": 30},
                "context": {"a": 1, "tag": "vip", "obj": {"k": [1, 2]}, "list": [1, "2", null], "n": null},
                "input": {"text": "oi"}, "intent": "x", "entities": []
            }),
            serde_json::json!({
                "contact": {"name": "", "extra": null, "tags": [], "age": 1.5},
                "context": {"a": "1", "tag": 0, "obj": [], "list": {"1": true}, "n": false},
                "confidence": 0.5
            }),
            serde_json::json!({"contact": {"name": 7}, "context": {}}),
        ];
        let mut out = Vec::new();
        for d in docs {
            for strict in [false, true] {
                let roots = d
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| {
                                Root::from_name(k).map(|r| (r.name(), Arc::new(v.clone())))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Scope::new(roots, strict));
            }
        }
        out
    }

    #[test]
    fn fast_evaluation_agrees_with_minijinja() {
        let scopes = stores();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut fast_count = 0;
        for _ in 0..4000 {
            let src = expr(&mut seed, 3);
            let Ok(fast) = CompiledExpr::compile(&src, 0) else {
                continue; // e.g. nesting limits: both paths share the parser
            };
            let slow = CompiledExpr::compile_with_minijinja(&src, 0).expect("compiles");
            assert_eq!(
                fast.context_reads().collect::<Vec<_>>(),
                slow.context_reads().collect::<Vec<_>>(),
                "{src:?}"
            );
            if fast.is_fast() {
                fast_count += 1;
            }
            for scope in &scopes {
                let (mut m1, mut m2) = (Vec::new(), Vec::new());
                let a = fast.eval_json(scope, &mut m1);
                let b = slow.eval_json(scope, &mut m2);
                assert_eq!(a, b, "{src:?} strict={}", scope.strict());
                assert_eq!(m1, m2, "missing reads of {src:?}");
            }
        }
        assert!(
            fast_count > 3000,
            "only {fast_count} expressions took the fast path"
        );
    }
}
