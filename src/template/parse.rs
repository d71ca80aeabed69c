//! From text to tree: the pest grammar (`grammar/template.pest`) splits a string into
//! segments and parses each expression; this module turns the pest pairs into the
//! [`ast`](super::ast) and reports every problem with its byte span.

use std::ops::Range;
use std::sync::LazyLock;

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;

use super::ast::{BinOp, Expr, Global, LogicOp, Method, Node, Root, Step, UnOp};
use super::error::{did_you_mean, TemplateError, TemplateErrorKind};

pub use grammar::{Rule, TemplateParser};

/// The generated parser lives in its own module: pest emits undocumented items.
#[allow(missing_docs)]
mod grammar {
    /// The pest parser generated from `grammar/template.pest`.
    #[derive(pest_derive::Parser)]
    #[grammar = "grammar/template.pest"]
    pub struct TemplateParser;
}

/// Deepest bracket nesting accepted inside one expression: deeper input would only
/// exhaust the parser's stack, never express something a flow needs.
pub const MAX_NESTING: usize = 48;

/// Most operator characters (`+ - * / % < > = ! & | ? .`, string contents included)
/// accepted in one expression.
pub const MAX_OPERATORS: usize = 512;

/// Bytes that count toward [`MAX_OPERATORS`] (operators and member dots), as a table:
/// the count runs over every expression of a flow at load.
const OPERATOR_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let ops = b"+-*/%<>=!&|?.";
    let mut i = 0;
    while i < ops.len() {
        t[ops[i] as usize] = true;
        i += 1;
    }
    t
};

/// How many operator bytes `src` holds (a bound, not a parse: quotes are not skipped).
pub(crate) fn operator_count(src: &[u8]) -> usize {
    src.iter().filter(|&&b| OPERATOR_BYTES[b as usize]).count()
}

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 16 * 1024;

/// Filters (minijinja built-ins) allowed after `|`.
pub const FILTERS: &[&str] = &[
    "abs",
    "batch",
    "bool",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "first",
    "float",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
];

/// One piece of a templated string.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Literal text (escapes already applied).
    Text(String),
    /// A `<? ... ?>` segment: its expression text and where that text starts in the string.
    Segment {
        /// The expression text between `<?` and `?>`.
        source: String,
        /// Byte offset of `source` inside the whole string value.
        offset: usize,
    },
}

/// Does this string need the template machinery at all?
pub fn has_template_syntax(s: &str) -> bool {
    find_pair(s.as_bytes(), *b"<?").is_some()
}

/// The first position of the two bytes `pair` in `b`: `str::contains` sets up a
/// substring searcher per call, which costs more than the search in the short strings
/// of a flow (every string is asked while a flow loads).
fn find_pair(b: &[u8], pair: [u8; 2]) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = memchr::memchr(pair[0], b.get(from..)?) {
        let at = from + k;
        if b.get(at + 1) == Some(&pair[1]) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Splits a string value into text and segments.
///
/// A hand-written scanner with exactly the semantics of the grammar's `template` rule
/// (the split runs for every templated string at load time, and the scanner is ~10×
/// faster than the generated parser); `split_with_grammar` is the reference, and tests
/// check both agree on every input.
pub fn split(s: &str) -> Result<Vec<Piece>, TemplateError> {
    let b = s.as_bytes();
    let mut out: Vec<Piece> = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b[i + 1..].starts_with(b"<?") {
            push_text(&mut out, &s[text_start..i]);
            push_text(&mut out, "<?");
            i += 3;
            text_start = i;
            continue;
        }
        if b[i] == b'<' && b.get(i + 1) == Some(&b'?') {
            push_text(&mut out, &s[text_start..i]);
            let body_start = i + 2;
            let mut j = body_start;
            loop {
                if j >= b.len() {
                    return Err(unterminated(s, i));
                }
                match b[j] {
                    b'?' if b.get(j + 1) == Some(&b'>') => break,
                    q @ (b'\'' | b'"') => j = skip_string(b, j, q).unwrap_or(j + 1),
                    _ => j += 1,
                }
            }
            out.push(Piece::Segment {
                source: s[body_start..j].to_string(),
                offset: body_start,
            });
            i = j + 2;
            text_start = i;
            continue;
        }
        i += 1;
    }
    push_text(&mut out, &s[text_start..]);
    Ok(out)
}

/// The expression text of a string that is one segment and nothing else (`<? … ?>`),
/// found without the scanner: when the first `?>` is the string's end, [`split`] ends
/// the segment there too (a quote inside cannot carry it past the end). Tests check
/// both agree.
pub fn whole_segment(s: &str) -> Option<&str> {
    let body = s.strip_prefix("<?")?.strip_suffix("?>")?;
    (find_pair(&s.as_bytes()[2..], *b"?>") == Some(body.len())).then_some(body)
}

/// Where a quoted string literal starting at `start` ends (one past its closing quote),
/// or `None` when it is not closed (the grammar then reads the quote as plain text).
fn skip_string(b: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut k = start + 1;
    while k < b.len() {
        match b[k] {
            b'\\' => k += 2,
            c if c == quote => return Some(k + 1),
            _ => k += 1,
        }
    }
    None
}

fn unterminated(s: &str, open: usize) -> TemplateError {
    TemplateError::new(
        TemplateErrorKind::Syntax,
        "unterminated template segment: `<?` without a closing `?>`",
        open..(open + 2).min(s.len()),
    )
    .with_help("close the expression with `?>`, or write `\\\\<?` in JSON for a literal `<?`")
}

/// The reference split, by the grammar's `template` rule.
pub fn split_with_grammar(s: &str) -> Result<Vec<Piece>, TemplateError> {
    let pairs = match TemplateParser::parse(Rule::template, s) {
        Ok(p) => p,
        Err(e) => {
            let pos = match e.location {
                InputLocation::Pos(p) => p,
                InputLocation::Span((a, _)) => a,
            };
            // The only way the split fails is an unterminated segment: point at its `<?`.
            let pos = pos.min(s.len());
            let open = if s[pos..].starts_with("<?") {
                pos
            } else {
                s[..pos].rfind("<?").unwrap_or(pos)
            };
            return Err(unterminated(s, open));
        }
    };
    let mut out: Vec<Piece> = Vec::new();
    for pair in pairs.flatten() {
        match pair.as_rule() {
            Rule::text => push_text(&mut out, pair.as_str()),
            Rule::escape => push_text(&mut out, "<?"),
            Rule::segment_body => out.push(Piece::Segment {
                source: pair.as_str().to_string(),
                offset: pair.as_span().start(),
            }),
            _ => {}
        }
    }
    Ok(out)
}

fn push_text(out: &mut Vec<Piece>, t: &str) {
    if t.is_empty() {
        return;
    }
    if let Some(Piece::Text(prev)) = out.last_mut() {
        prev.push_str(t);
    } else {
        out.push(Piece::Text(t.to_string()));
    }
}

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::op_coalesce, Assoc::Left) | Op::infix(Rule::op_or, Assoc::Left))
        .op(Op::infix(Rule::op_and, Assoc::Left))
        .op(Op::infix(Rule::op_eq, Assoc::Left)
            | Op::infix(Rule::op_ne, Assoc::Left)
            | Op::infix(Rule::op_strict_eq, Assoc::Left)
            | Op::infix(Rule::op_strict_ne, Assoc::Left))
        .op(Op::infix(Rule::op_lt, Assoc::Left)
            | Op::infix(Rule::op_le, Assoc::Left)
            | Op::infix(Rule::op_gt, Assoc::Left)
            | Op::infix(Rule::op_ge, Assoc::Left))
        .op(Op::infix(Rule::op_add, Assoc::Left) | Op::infix(Rule::op_sub, Assoc::Left))
        .op(Op::infix(Rule::op_mul, Assoc::Left)
            | Op::infix(Rule::op_div, Assoc::Left)
            | Op::infix(Rule::op_rem, Assoc::Left))
});

/// Parses one expression (the text of a segment). Spans are relative to `src`.
pub fn parse_expression(src: &str) -> Result<Node, TemplateError> {
    if src.trim().is_empty() {
        return Err(TemplateError::new(
            TemplateErrorKind::Syntax,
            "empty template segment: expected an expression between `<?` and `?>`",
            0..src.len(),
        ));
    }
    if src.len() > MAX_EXPRESSION_LEN {
        return Err(TemplateError::new(
            TemplateErrorKind::Limit,
            format!("expression longer than {MAX_EXPRESSION_LEN} bytes"),
            0..src.len(),
        ));
    }
    if let Some(node) = simple_path(src).or_else(|| super::fast::parse_sum(src)) {
        return Ok(node);
    }
    parse_with_grammar(src)
}

/// The grammar's parse of one expression, without the fast paths (the reference they
/// are tested against).
pub(crate) fn parse_with_grammar(src: &str) -> Result<Node, TemplateError> {
    check_nesting(src)?;
    let mut pairs =
        TemplateParser::parse(Rule::expression, src).map_err(|e| syntax_error(src, e))?;
    let expr = pairs
        .next()
        .and_then(|p| p.into_inner().next())
        .ok_or_else(|| {
            TemplateError::new(TemplateErrorKind::Syntax, "empty expression", 0..src.len())
        })?;
    let node = build_pipeline(expr)?;
    match bare_regex(&node) {
        Some(span) => Err(regex_misuse(span)),
        None => Ok(node),
    }
}

/// Finds a regex literal left as a plain value (`<? /a/ ?>`, `[/a/]`, `/a/ + 1`):
/// `finish` turns every bare regex into a marker (`RegexMethod` `replace` without a
/// replacement) and `build_method` consumes the markers that are valid arguments, so
/// any marker still in the tree is a misuse.
fn bare_regex(n: &Node) -> Option<Range<usize>> {
    fn all<'a>(mut ns: impl Iterator<Item = &'a Node>) -> Option<Range<usize>> {
        ns.find_map(bare_regex)
    }
    let step = |s: &Step| match s {
        Step::Computed(e) => bare_regex(e),
        _ => None,
    };
    match &n.expr {
        Expr::RegexMethod {
            method: Method::Replace,
            arg: None,
            ..
        } => Some(n.span.clone()),
        Expr::RegexMethod { target, arg, .. } => {
            bare_regex(target).or_else(|| arg.as_deref().and_then(bare_regex))
        }
        Expr::Array(items) => all(items.iter()),
        Expr::Object(items) => all(items.iter().map(|(_, v)| v)),
        Expr::Path { steps, .. } => steps.iter().find_map(step),
        Expr::Get(base, s) => bare_regex(base).or_else(|| step(s)),
        Expr::Length(x) | Expr::Unary(_, x) => bare_regex(x),
        Expr::RegexTest { arg, .. } => bare_regex(arg),
        Expr::Binary(_, a, b) => bare_regex(a).or_else(|| bare_regex(b)),
        Expr::Logic(_, ops) | Expr::Call(_, ops) => all(ops.iter()),
        Expr::Cond(c, a, b) => all([&**c, &**a, &**b].into_iter()),
        Expr::Method(_, t, args) | Expr::Filter(t, _, args) => {
            bare_regex(t).or_else(|| all(args.iter()))
        }
        Expr::Null
        | Expr::Undefined
        | Expr::Bool(_)
        | Expr::Number(_)
        | Expr::Str(_)
        | Expr::Intent(_)
        | Expr::Entity(..) => None,
    }
}

/// `contact.extra.cidade` or `$var.field`: the most common template by far, built
/// directly; the result is exactly what the grammar builds (checked by tests).
pub(crate) fn simple_path(src: &str) -> Option<Node> {
    let mut steps = Vec::new();
    let (root, span) = simple_path_parts(src, |k| steps.push(Step::Key(k.to_string())))?;
    Some(Node {
        expr: Expr::Path {
            root,
            steps,
            optional: false,
        },
        span,
    })
}

/// The scan behind [`simple_path`]: the root and the span of the trimmed path, each key
/// step handed to `step` in order. On `None`, keys already handed over are void.
pub(crate) fn simple_path_parts<'s>(
    src: &'s str,
    mut step: impl FnMut(&'s str),
) -> Option<(Root, Range<usize>)> {
    // The grammar's whitespace only (not `str::trim`'s Unicode spaces).
    let space = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let start = src.len() - src.trim_start_matches(space).len();
    let text = src.trim_matches(space);
    let end = start + text.len();
    let b = text.as_bytes();
    // The end of the identifier starting at `at` (a letter or `_`, then letters,
    // digits, `_`), or `None` when none starts there.
    let ident_end = |at: usize| {
        let first = *b.get(at)?;
        (first.is_ascii_alphabetic() || first == b'_').then_some(())?;
        let len = b[at..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count();
        Some(at + len)
    };
    let (root, mut i) = if b.first() == Some(&b'$') {
        let e = ident_end(1)?;
        step(&text[1..e]);
        (Root::Context, e)
    } else {
        let e = memchr::memchr(b'.', b).unwrap_or(b.len());
        (Root::from_name(&text[..e])?, e)
    };
    while i < b.len() {
        if b[i] != b'.' {
            return None;
        }
        let e = ident_end(i + 1)?;
        let member = &text[i + 1..e];
        if member == "length" || Method::ALL.iter().any(|m| m.1 == member) {
            return None;
        }
        step(member);
        i = e;
    }
    Some((root, start..end))
}

/// Rejects pathological nesting before pest recurses into it.
fn check_nesting(src: &str) -> Result<(), TemplateError> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let bytes = src.as_bytes();
    let mut i = 0;
    // Operators and member accesses each add a level to the tree (`1+1+1…`,
    // `x.trim().trim()…`, `a?b:c?d:…`), which the parser, the lowering and
    // minijinja's compiler all walk recursively: bound how many one expression has.
    let operators = operator_count(bytes);
    if operators > MAX_OPERATORS {
        return Err(TemplateError::new(
            TemplateErrorKind::Limit,
            format!("expression has more than {MAX_OPERATORS} operators: split it up"),
            0..src.len(),
        ));
    }
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(TemplateError::new(
                            TemplateErrorKind::Limit,
                            format!("expression nested deeper than {MAX_NESTING} levels"),
                            i..i + 1,
                        ));
                    }
                }
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                // Prefix operators recurse too: bound long runs of them the same way.
                b'!' | b'-' | b'+' => {
                    let run = bytes[i..]
                        .iter()
                        .take_while(|c| matches!(c, b'!' | b'-' | b'+' | b' '))
                        .count();
                    if run > MAX_NESTING {
                        return Err(TemplateError::new(
                            TemplateErrorKind::Limit,
                            format!("more than {MAX_NESTING} operators in a row"),
                            i..i + run,
                        ));
                    }
                    i += run;
                    continue;
                }
                _ => {}
            },
        }
        i += 1;
    }
    Ok(())
}

fn rule_name(r: &Rule) -> Option<&'static str> {
    Some(match r {
        Rule::pipeline | Rule::conditional | Rule::binary | Rule::unary | Rule::postfix => {
            "an expression"
        }
        Rule::number => "a number",
        Rule::string => "a string",
        Rule::ident | Rule::ident_name => "a name",
        Rule::filter => "a filter name",
        Rule::op_coalesce
        | Rule::op_or
        | Rule::op_and
        | Rule::op_strict_eq
        | Rule::op_strict_ne
        | Rule::op_eq
        | Rule::op_ne
        | Rule::op_le
        | Rule::op_ge
        | Rule::op_lt
        | Rule::op_gt
        | Rule::op_add
        | Rule::op_sub
        | Rule::op_mul
        | Rule::op_div
        | Rule::op_rem => "an operator",
        Rule::member | Rule::optional_member => "`.`",
        Rule::index | Rule::optional_index => "`[`",
        Rule::call_args => "`(`",
        Rule::EOI => "the end of the expression",
        Rule::pair => "a `key: value` pair",
        Rule::tag_name => "a name",
        _ => return None,
    })
}

fn syntax_error(src: &str, e: pest::error::Error<Rule>) -> TemplateError {
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((a, _)) => a,
    };
    let found = match src[pos..].chars().next() {
        Some(c) => format!("`{c}`"),
        None => "the end of the expression".to_string(),
    };
    let mut expected: Vec<&str> = Vec::new();
    if let ErrorVariant::ParsingError { positives, .. } = &e.variant {
        for r in positives {
            if let Some(n) = rule_name(r) {
                if !expected.contains(&n) {
                    expected.push(n);
                }
            }
        }
    }
    let message = match expected.as_slice() {
        [] => format!("unexpected {found}"),
        [one] => format!("expected {one}, found {found}"),
        many => {
            let (last, rest) = many.split_last().unwrap_or((&"", &[]));
            format!("expected {} or {last}, found {found}", rest.join(", "))
        }
    };
    let end = pos + src[pos..].chars().next().map_or(0, char::len_utf8);
    let mut err = TemplateError::new(TemplateErrorKind::Syntax, message, pos..end);
    let rest = &src[pos..];
    if rest.starts_with('`') {
        err =
            err.with_help("template literals (backticks) are not supported: concatenate with `+`");
    } else if rest.starts_with('=') && !rest.starts_with("==") {
        err = err.with_help("assignment is not an expression: compare with `==` or `===`");
    }
    err
}

fn span_of(p: &Pair<Rule>) -> Range<usize> {
    let s = p.as_span();
    s.start()..s.end()
}

fn unexpected(rule: Rule, f: &str) -> TemplateError {
    // The grammar and this builder are written together; a mismatch is our bug, but
    // input must never panic, so it surfaces as a syntax error.
    TemplateError::new(
        TemplateErrorKind::Syntax,
        format!("internal parser mismatch: unexpected {rule:?} in {f}"),
        0..0,
    )
}

fn build_pipeline(pair: Pair<Rule>) -> Result<Node, TemplateError> {
    debug_assert_eq!(pair.as_rule(), Rule::pipeline);
    let mut inner = pair.into_inner();
    let first = inner
        .next()
        .ok_or_else(|| unexpected(Rule::pipeline, "build_pipeline"))?;
    let mut node = build_conditional(first)?;
    for f in inner {
        let fspan = span_of(&f);
        let mut parts = f.into_inner();
        let name_pair = parts
            .next()
            .ok_or_else(|| unexpected(Rule::filter, "build_pipeline"))?;
        let name = name_pair.as_str().to_string();
        if !FILTERS.contains(&name.as_str()) {
            let mut err = TemplateError::new(
                TemplateErrorKind::Unknown,
                format!("unknown filter `{name}`"),
                span_of(&name_pair),
            );
            err = match did_you_mean(&name, FILTERS.iter().copied()) {
                Some(s) => err.with_help(format!("did you mean `{s}`?")),
                None => err.with_help(format!("known filters: {}", FILTERS.join(", "))),
            };
            return Err(err);
        }
        let args = match parts.next() {
            Some(a) => build_args(a)?,
            None => Vec::new(),
        };
        let span = node.span.start..fspan.end;
        node = Node {
            expr: Expr::Filter(Box::new(node), name, args),
            span,
        };
    }
    Ok(node)
}

fn build_args(pair: Pair<Rule>) -> Result<Vec<Node>, TemplateError> {
    pair.into_inner().map(build_pipeline).collect()
}

fn build_conditional(pair: Pair<Rule>) -> Result<Node, TemplateError> {
    let span = span_of(&pair);
    let mut inner = pair.into_inner();
    let cond = inner
        .next()
        .ok_or_else(|| unexpected(Rule::conditional, "build_conditional"))?;
    let cond = build_binary(cond)?;
    match (inner.next(), inner.next()) {
        (Some(a), Some(b)) => Ok(Node {
            expr: Expr::Cond(
                Box::new(cond),
                Box::new(build_conditional(a)?),
                Box::new(build_conditional(b)?),
            ),
            span,
        }),
        _ => Ok(cond),
    }
}

fn build_binary(pair: Pair<Rule>) -> Result<Node, TemplateError> {
    PRATT
        .map_primary(build_unary)
        .map_infix(|lhs, op, rhs| {
            let (lhs, rhs) = (lhs?, rhs?);
            let span = lhs.span.start..rhs.span.end;
            let logic = match op.as_rule() {
                Rule::op_and => Some(LogicOp::And),
                Rule::op_or => Some(LogicOp::Or),
                Rule::op_coalesce => Some(LogicOp::Coalesce),
                _ => None,
            };
            if let Some(lop) = logic {
                // `a || b || c` is one chain: JavaScript's result is the same, and the
                // lowered form stays linear in size.
                let mut operands = match lhs.expr {
                    Expr::Logic(l, v) if l == lop => v,
                    _ => vec![lhs],
                };
                operands.push(rhs);
                return Ok(Node {
                    expr: Expr::Logic(lop, operands),
                    span,
                });
            }
            let bop = match op.as_rule() {
                Rule::op_add => BinOp::Add,
                Rule::op_sub => BinOp::Sub,
                Rule::op_mul => BinOp::Mul,
                Rule::op_div => BinOp::Div,
                Rule::op_rem => BinOp::Rem,
                Rule::op_eq => BinOp::Eq,
                Rule::op_ne => BinOp::Ne,
                Rule::op_strict_eq => BinOp::StrictEq,
                Rule::op_strict_ne => BinOp::StrictNe,
                Rule::op_lt => BinOp::Lt,
                Rule::op_le => BinOp::Le,
                Rule::op_gt => BinOp::Gt,
                Rule::op_ge => BinOp::Ge,
                r => return Err(unexpected(r, "build_binary")),
            };
            Ok(Node {
                expr: Expr::Binary(bop, Box::new(lhs), Box::new(rhs)),
                span,
            })
        })
        .parse(pair.into_inner())
}

fn build_unary(pair: Pair<Rule>) -> Result<Node, TemplateError> {
    let mut ops: Vec<(UnOp, usize)> = Vec::new();
    let mut operand = None;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::op_not => ops.push((UnOp::Not, p.as_span().start())),
            Rule::op_neg => ops.push((UnOp::Neg, p.as_span().start())),
            Rule::op_plus => ops.push((UnOp::Plus, p.as_span().start())),
            Rule::postfix => operand = Some(build_postfix(p)?),
            r => return Err(unexpected(r, "build_unary")),
        }
    }
    let mut node = operand.ok_or_else(|| unexpected(Rule::unary, "build_unary"))?;
    for (op, start) in ops.into_iter().rev() {
        // `-3` folds to a literal so it lowers to a plain number.
        if let (UnOp::Neg, Expr::Number(n)) = (op, &node.expr) {
            node = Node {
                expr: Expr::Number(-n),
                span: start..node.span.end,
            };
            continue;
        }
        let span = start..node.span.end;
        node = Node {
            expr: Expr::Unary(op, Box::new(node)),
            span,
        };
    }
    Ok(node)
}

/// What a postfix chain has built so far.
enum Base {
    Node(Node),
    /// `JSON` or `Math`, waiting for `.name(...)`.
    Namespace(&'static str, Range<usize>),
    /// A global function name waiting for its arguments.
    Function(&'static str, Range<usize>),
    /// A regex literal waiting for `.test(...)`.
    Regex(String, String, Range<usize>),
    /// `x.name` waiting to see whether a call follows.
    Member(Node, String, Range<usize>, bool),
}

fn build_postfix(pair: Pair<Rule>) -> Result<Node, TemplateError> {
    let span = span_of(&pair);
    let mut inner = pair.into_inner();
    let primary = inner
        .next()
        .ok_or_else(|| unexpected(Rule::postfix, "build_postfix"))?;
    let mut base = build_primary(primary)?;
    for acc in inner {
        let aspan = span_of(&acc);
        base = match acc.as_rule() {
            Rule::member | Rule::optional_member => {
                let optional = acc.as_rule() == Rule::optional_member;
                let name_pair = acc
                    .into_inner()
                    .next()
                    .ok_or_else(|| unexpected(Rule::member, "build_postfix"))?;
                let name = name_pair.as_str().to_string();
                match base {
                    Base::Namespace(ns, nspan) => {
                        let full = format!("{ns}.{name}");
                        match Global::from_name(&full) {
                            Some(_) => Base::Function(leak_name(&full), nspan.start..aspan.end),
                            None => {
                                let known: Vec<&str> = Global::ALL
                                    .iter()
                                    .map(|g| g.1)
                                    .filter(|g| g.starts_with(ns))
                                    .collect();
                                return Err(TemplateError::new(
                                    TemplateErrorKind::Unknown,
                                    format!("unknown function `{full}`"),
                                    nspan.start..aspan.end,
                                )
                                .with_help(format!("known: {}", known.join(", "))));
                            }
                        }
                    }
                    Base::Regex(pattern, flags, rspan) => {
                        if name != "test" {
                            return Err(regex_misuse(rspan.start..aspan.end));
                        }
                        Base::Regex(pattern, flags, rspan.start..aspan.end)
                    }
                    other => {
                        let node = finish(other)?;
                        Base::Member(node, name, aspan, optional)
                    }
                }
            }
            Rule::call_args => {
                let args_span = aspan.clone();
                let args = build_args(acc)?;
                match base {
                    Base::Function(name, fspan) => {
                        let (g, _, min, max) = Global::from_name(name)
                            .ok_or_else(|| unexpected(Rule::call_args, "build_postfix"))?;
                        check_arity(name, args.len(), min, max, fspan.start..args_span.end)?;
                        Base::Node(Node {
                            expr: Expr::Call(g, args),
                            span: fspan.start..args_span.end,
                        })
                    }
                    Base::Regex(pattern, flags, rspan) => {
                        // Only reachable after `.test`.
                        let whole = rspan.start..args_span.end;
                        let mut args = args.into_iter();
                        match (args.next(), args.next()) {
                            (Some(a), None) => Base::Node(Node {
                                expr: Expr::RegexTest {
                                    pattern,
                                    flags,
                                    arg: Box::new(a),
                                },
                                span: whole,
                            }),
                            _ => return Err(arity_error("test", 1, 1, whole)),
                        }
                    }
                    Base::Member(target, name, mspan, _) => {
                        Base::Node(build_method(target, &name, mspan, args, args_span)?)
                    }
                    Base::Namespace(ns, nspan) => {
                        return Err(TemplateError::new(
                            TemplateErrorKind::Unknown,
                            format!("`{ns}` is not a function"),
                            nspan,
                        ))
                    }
                    Base::Node(n) => {
                        return Err(TemplateError::new(
                            TemplateErrorKind::Unknown,
                            "only methods and global functions can be called",
                            n.span.start..args_span.end,
                        )
                        .with_help(format!(
                            "methods: {}; functions: {}",
                            Method::ALL
                                .iter()
                                .map(|m| m.1)
                                .collect::<Vec<_>>()
                                .join(", "),
                            Global::ALL
                                .iter()
                                .map(|g| g.1)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )))
                    }
                }
            }
            Rule::index | Rule::optional_index => {
                let optional = acc.as_rule() == Rule::optional_index;
                let e = acc
                    .into_inner()
                    .next()
                    .ok_or_else(|| unexpected(Rule::index, "build_postfix"))?;
                let key = build_pipeline(e)?;
                let step = match key.expr {
                    Expr::Str(s) => Step::Key(s),
                    Expr::Number(n) if n >= 0.0 && n.fract() == 0.0 && n < 9.0e15 => {
                        Step::Index(n as u64)
                    }
                    _ => Step::Computed(Box::new(key)),
                };
                let node = finish(base)?;
                Base::Node(apply_step(node, step, optional, aspan.end))
            }
            r => return Err(unexpected(r, "build_postfix")),
        };
    }
    let node = finish(base)?;
    debug_assert!(node.span.end <= span.end);
    Ok(node)
}

fn leak_name(full: &str) -> &'static str {
    Global::ALL
        .iter()
        .find(|g| g.1 == full)
        .map(|g| g.1)
        .unwrap_or("")
}

fn regex_misuse(span: Range<usize>) -> TemplateError {
    TemplateError::new(
        TemplateErrorKind::Unknown,
        "a regular expression can only be used as `/re/.test(s)` or as the first argument of `replace` or `split`",
        span,
    )
}

fn arity_error(name: &str, min: usize, max: usize, span: Range<usize>) -> TemplateError {
    let want = if min == max {
        format!("{min} argument{}", if min == 1 { "" } else { "s" })
    } else if max == usize::MAX {
        format!("at least {min} arguments")
    } else {
        format!("{min} to {max} arguments")
    };
    TemplateError::new(
        TemplateErrorKind::Unknown,
        format!("`{name}` takes {want}"),
        span,
    )
}

fn check_arity(
    name: &str,
    n: usize,
    min: usize,
    max: usize,
    span: Range<usize>,
) -> Result<(), TemplateError> {
    if n < min || n > max {
        return Err(arity_error(name, min, max, span));
    }
    Ok(())
}

fn build_method(
    target: Node,
    name: &str,
    mspan: Range<usize>,
    args: Vec<Node>,
    args_span: Range<usize>,
) -> Result<Node, TemplateError> {
    let whole = target.span.start..args_span.end;
    let Some(&(m, _, min, max)) = Method::ALL.iter().find(|m| m.1 == name) else {
        let mut err = TemplateError::new(
            TemplateErrorKind::Unknown,
            format!("unknown method `{name}`"),
            mspan.start + 1..mspan.end,
        );
        err = match did_you_mean(name, Method::ALL.iter().map(|m| m.1)) {
            Some(s) => err.with_help(format!("did you mean `{s}`?")),
            None => err.with_help(format!(
                "known methods: {}",
                Method::ALL
                    .iter()
                    .map(|m| m.1)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        return Err(err);
    };
    check_arity(name, args.len(), min, max, mspan.start + 1..args_span.end)?;
    let mut args = args;
    // Regex literals as arguments are recognised by their marker node.
    if let Some(Node {
        expr: Expr::RegexMethod { pattern, flags, .. },
        ..
    }) = args.first().cloned().as_ref()
    {
        if !matches!(m, Method::Replace | Method::Split) {
            return Err(regex_misuse(args[0].span.clone()));
        }
        let rest = args.split_off(1);
        return Ok(Node {
            expr: Expr::RegexMethod {
                method: m,
                target: Box::new(target),
                pattern: pattern.clone(),
                flags: flags.clone(),
                arg: rest.into_iter().next().map(Box::new),
            },
            span: whole,
        });
    }
    Ok(Node {
        expr: Expr::Method(m, Box::new(target), args),
        span: whole,
    })
}

/// Applies `.key` / `[i]` to a node: extends a path, or reads from a computed value.
fn apply_step(node: Node, step: Step, optional: bool, end: usize) -> Node {
    let span = node.span.start..end;
    match node.expr {
        Expr::Path {
            root,
            mut steps,
            optional: o,
        } => {
            steps.push(step);
            Node {
                expr: Expr::Path {
                    root,
                    steps,
                    optional: o || optional,
                },
                span,
            }
        }
        other => Node {
            expr: Expr::Get(
                Box::new(Node {
                    expr: other,
                    span: node.span,
                }),
                step,
            ),
            span,
        },
    }
}

fn finish(base: Base) -> Result<Node, TemplateError> {
    match base {
        Base::Node(n) => Ok(n),
        Base::Member(node, name, mspan, optional) => {
            if name == "length" {
                let span = node.span.start..mspan.end;
                return Ok(Node {
                    expr: Expr::Length(Box::new(node)),
                    span,
                });
            }
            if Method::ALL.iter().any(|m| m.1 == name) {
                // `x.trim` without `()` would be a function value in JavaScript: surely a slip.
                return Err(TemplateError::new(
                    TemplateErrorKind::Syntax,
                    format!("`{name}` is a method: call it as `{name}()`"),
                    mspan.start + 1..mspan.end,
                ));
            }
            Ok(apply_step(node, Step::Key(name), optional, mspan.end))
        }
        Base::Namespace(ns, span) => Err(TemplateError::new(
            TemplateErrorKind::Unknown,
            format!("`{ns}` is not a value: use one of its functions"),
            span,
        )),
        Base::Function(name, span) => Err(TemplateError::new(
            TemplateErrorKind::Syntax,
            format!("`{name}` is a function: call it as `{name}(…)`"),
            span,
        )),
        Base::Regex(pattern, flags, span) => {
            // A bare regex literal is only valid as an argument of replace/split;
            // build_method accepts this marker node there and rejects it elsewhere.
            Ok(Node {
                expr: Expr::RegexMethod {
                    method: Method::Replace,
                    target: Box::new(Node {
                        expr: Expr::Null,
                        span: span.clone(),
                    }),
                    pattern,
                    flags,
                    arg: None,
                },
                span,
            })
        }
    }
}

fn build_primary(pair: Pair<Rule>) -> Result<Base, TemplateError> {
    let span = span_of(&pair);
    let node = |expr| {
        Ok(Base::Node(Node {
            expr,
            span: span.clone(),
        }))
    };
    match pair.as_rule() {
        Rule::number => {
            let text = pair.as_str();
            match text.parse::<f64>() {
                Ok(n) => node(Expr::Number(n)),
                Err(_) => Err(TemplateError::new(
                    TemplateErrorKind::Syntax,
                    format!("invalid number `{text}`"),
                    span,
                )),
            }
        }
        Rule::string => node(Expr::Str(unescape_js(pair.as_str(), span.start)?)),
        Rule::keyword => node(match pair.as_str() {
            "true" => Expr::Bool(true),
            "false" => Expr::Bool(false),
            "null" => Expr::Null,
            _ => Expr::Undefined,
        }),
        Rule::regex => {
            let mut inner = pair.into_inner();
            let body = inner
                .next()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let flags_pair = inner.next();
            let flags = flags_pair
                .as_ref()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            for (i, c) in flags.char_indices() {
                if !matches!(c, 'i' | 'm' | 's' | 'u' | 'g') || flags[..i].contains(c) {
                    let at = flags_pair
                        .as_ref()
                        .map_or(span.end, |p| p.as_span().start() + i);
                    return Err(TemplateError::new(
                        TemplateErrorKind::Syntax,
                        format!("invalid regular expression flag `{c}`"),
                        at..at + c.len_utf8(),
                    )
                    .with_help("supported flags: i, m, s, u, g"));
                }
            }
            if let Err(e) = super::eval::compile_regex(&body, &flags) {
                return Err(TemplateError::new(
                    TemplateErrorKind::Syntax,
                    format!("invalid regular expression: {}", first_line(&e.to_string())),
                    span,
                ));
            }
            Ok(Base::Regex(body, flags, span))
        }
        Rule::array => {
            let items = pair
                .into_inner()
                .map(build_pipeline)
                .collect::<Result<_, _>>()?;
            node(Expr::Array(items))
        }
        Rule::object => {
            let mut items = Vec::new();
            for p in pair.into_inner() {
                let mut kv = p.into_inner();
                let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                    return Err(unexpected(Rule::pair, "build_primary"));
                };
                let key = match k.as_rule() {
                    Rule::string => unescape_js(k.as_str(), k.as_span().start())?,
                    _ => k.as_str().to_string(),
                };
                items.push((key, build_pipeline(v)?));
            }
            node(Expr::Object(items))
        }
        Rule::context_var => {
            let name = pair.as_str()[1..].to_string();
            node(Expr::Path {
                root: Root::Context,
                steps: vec![Step::Key(name)],
                optional: false,
            })
        }
        Rule::intent => node(Expr::Intent(pair.as_str()[1..].to_string())),
        Rule::entity => {
            let mut inner = pair.into_inner();
            let name = inner
                .next()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let value = inner.next().map(|p| p.as_str().to_string());
            node(Expr::Entity(name, value))
        }
        Rule::paren => {
            let inner = pair
                .into_inner()
                .next()
                .ok_or_else(|| unexpected(Rule::paren, "build_primary"))?;
            let mut n = build_pipeline(inner)?;
            n.span = span;
            Ok(Base::Node(n))
        }
        Rule::ident => {
            let name = pair.as_str();
            if let Some(root) = Root::from_name(name) {
                return node(Expr::Path {
                    root,
                    steps: Vec::new(),
                    optional: false,
                });
            }
            match name {
                "JSON" => return Ok(Base::Namespace("JSON", span)),
                "Math" => return Ok(Base::Namespace("Math", span)),
                _ => {}
            }
            if let Some((_, _, _, _)) = Global::from_name(name) {
                return Ok(Base::Function(leak_name(name), span));
            }
            let roots: Vec<&str> = Root::ALL.iter().map(|r| r.name()).collect();
            let mut err = TemplateError::new(
                TemplateErrorKind::Unknown,
                format!("unknown name `{name}`"),
                span,
            );
            let globals = Global::ALL.iter().map(|g| g.1);
            err = match did_you_mean(name, roots.iter().copied().chain(globals)) {
                Some(s) => err.with_help(format!("did you mean `{s}`?")),
                None => err.with_help(format!(
                    "expressions read {}; write `$name` for a context variable",
                    roots.join(", ")
                )),
            };
            Err(err)
        }
        r => Err(unexpected(r, "build_primary")),
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| s.lines().next().unwrap_or(""))
        .trim_start_matches("error: ")
        .to_string()
}

/// Unescapes a quoted JavaScript string literal (quotes included in `lit`).
fn unescape_js(lit: &str, start: usize) -> Result<String, TemplateError> {
    let body = &lit[1..lit.len().saturating_sub(1).max(1)];
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let bad = |len: usize| {
            TemplateError::new(
                TemplateErrorKind::Syntax,
                "invalid escape in string",
                start + 1 + i..start + 1 + i + len,
            )
        };
        let Some((_, e)) = chars.next() else {
            return Err(bad(1));
        };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            '0' => out.push('\0'),
            'x' | 'u' => {
                let n = if e == 'x' { 2 } else { 4 };
                let mut hex = String::new();
                if e == 'u' && chars.peek().map(|x| x.1) == Some('{') {
                    chars.next();
                    for (_, h) in chars.by_ref() {
                        if h == '}' {
                            break;
                        }
                        hex.push(h);
                    }
                } else {
                    for _ in 0..n {
                        match chars.next() {
                            Some((_, h)) => hex.push(h),
                            None => return Err(bad(2)),
                        }
                    }
                }
                let code = u32::from_str_radix(&hex, 16).map_err(|_| bad(2 + hex.len()))?;
                // A surrogate pair written as two \u escapes.
                if (0xD800..0xDC00).contains(&code) {
                    let mut look = chars.clone();
                    if let (Some((_, '\\')), Some((_, 'u'))) = (look.next(), look.next()) {
                        let lo: String = look.by_ref().take(4).map(|x| x.1).collect();
                        if let Ok(lo) = u32::from_str_radix(&lo, 16) {
                            if (0xDC00..0xE000).contains(&lo) {
                                let c = 0x10000 + ((code - 0xD800) << 10) + (lo - 0xDC00);
                                if let Some(ch) = char::from_u32(c) {
                                    out.push(ch);
                                    chars = look;
                                    continue;
                                }
                            }
                        }
                    }
                }
                out.push(char::from_u32(code).ok_or_else(|| bad(2 + hex.len()))?);
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift, so failures reproduce.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn scanner_split_agrees_with_the_grammar() {
        let corpus = [
            "",
            "plain",
            "<? a ?>",
            "x <? a ?> y <? b ?>",
            "\\<? not ?>",
            "a\\<?<? b ?>",
            "<? 'a ?> b' ?>",
            "<? \"q\\\"?>\" ?>",
            "<? 'open ?>",
            "<? a ?",
            "<?",
            "tail <?",
            "<??>",
            "é <? contact.name ?> ü",
            "\\",
            "\\<",
            "<? a ?><? b ?>",
            "\"q\" <? f(2) ?> and <? contact.phone",
        ];
        let alphabet: Vec<char> = "<?>\\'\" ab\né".chars().collect();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut inputs: Vec<String> = corpus.iter().map(|s| s.to_string()).collect();
        for _ in 0..5000 {
            let len = (rng(&mut seed) % 12) as usize;
            inputs.push(
                (0..len)
                    .map(|_| alphabet[(rng(&mut seed) % alphabet.len() as u64) as usize])
                    .collect(),
            );
        }
        for s in &inputs {
            if let Some(body) = whole_segment(s) {
                let one = vec![Piece::Segment {
                    source: body.to_string(),
                    offset: 2,
                }];
                assert_eq!(split(s).ok(), Some(one), "input {s:?}");
            }
            match (split(s), split_with_grammar(s)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "input {s:?}"),
                // Both refuse; the scanner points at the `<?` that is never closed.
                (Err(a), Err(_)) => assert_eq!(s.get(a.span.clone()), Some("<?"), "input {s:?}"),
                (a, b) => panic!("input {s:?}: scanner {a:?} vs grammar {b:?}"),
            }
        }
    }

    #[test]
    fn simple_paths_build_what_the_grammar_builds() {
        for src in [
            " contact.cpf ",
            "$zendeskTag",
            " $ticket.response.body ",
            "contact",
            "input.text",
            "entities",
        ] {
            let fast = simple_path(src).expect("is a simple path");
            let mut pairs = TemplateParser::parse(Rule::expression, src).expect("parses");
            let slow = build_pipeline(
                pairs
                    .next()
                    .and_then(|p| p.into_inner().next())
                    .expect("pipeline"),
            )
            .expect("builds");
            assert_eq!(fast, slow, "{src:?}");
        }
        for src in [
            "contact.name.length",
            "contact.trim",
            "foo.bar",
            "true",
            "$a.b[0]",
            "contact..x",
            "$",
            "contact.näme",
        ] {
            assert!(
                simple_path(src).is_none(),
                "{src:?} must take the grammar path"
            );
        }
    }
}
