//! Compiled templates and the typing rule (spec §3.1): a string that is exactly one
//! segment yields a typed JSON value; text around segments yields a string.

use std::ops::Range;
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::Expression;

use super::budget::{self, Budget, BUDGET_PREFIX};
use super::error::{TemplateError, TemplateErrorKind};
use super::eval::{self, to_json, RootView, ENV, MAX_STRING_BYTES};
use super::fast::{self, Cx, Fast, FastError};
use super::lower::{lower, original_span, Read};
use super::parse::{has_template_syntax, parse_expression, split, whole_segment, Piece};

/// One compiled `<? ... ?>` expression: a shared compiled form plus where this
/// occurrence sits in its string.
#[derive(Clone)]
pub struct CompiledExpr {
    core: Arc<ExprCore>,
    /// Byte offset of the expression text inside the string value.
    offset: usize,
}

/// What an expression keeps after loading, whatever its position: identical texts in
/// one flow share it (see [`ExprCache`]).
struct ExprCore {
    /// The expression text as written.
    text: Box<str>,
    eval: Evaluator,
    /// Recorded reads, by the id `js_read` (or the fast path) reports.
    reads: Box<[Read]>,
    /// Context variables read (`$x`, `context.x`), for the load-time check.
    context_vars: Box<[(String, Range<usize>)]>,
}

/// A minijinja-compiled expression (boxed: the common fast form is much smaller).
struct JinjaExpr {
    expr: Expression<'static, 'static>,
    map: Box<[(Range<usize>, Range<usize>)]>,
    /// Work charged per evaluation: the lowered source's length, a bound on the
    /// instructions an expression without loops runs.
    cost: u64,
}

enum Evaluator {
    /// Evaluated from the tree (the common forms; see `fast`).
    Fast(Fast),
    /// Compiled to minijinja, with the map from generated to original spans.
    Jinja(Box<JinjaExpr>),
}

/// Compiled expressions by text, shared while a flow loads: real flows repeat
/// `contact.name` everywhere, and one compiled form serves every occurrence.
#[derive(Default)]
pub struct ExprCache {
    map: std::collections::HashSet<ByText, foldhash::fast::RandomState>,
}

/// A compiled expression as a member of the cache, found by its text (the text it
/// already holds: a distinct expression costs no second copy as a key).
struct ByText(Arc<ExprCore>);

impl std::borrow::Borrow<str> for ByText {
    fn borrow(&self) -> &str {
        &self.0.text
    }
}

impl std::hash::Hash for ByText {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        // As `str` hashes: lookups by `&str` must land on the same bucket.
        self.0.text.hash(h)
    }
}

impl PartialEq for ByText {
    fn eq(&self, other: &ByText) -> bool {
        self.0.text == other.0.text
    }
}

impl Eq for ByText {}

impl ExprCache {
    /// An empty cache.
    pub fn new() -> ExprCache {
        ExprCache::default()
    }

    /// Distinct expressions compiled so far.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing was compiled yet.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl std::fmt::Debug for CompiledExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledExpr")
            .field("text", &self.core.text)
            .field("offset", &self.offset)
            .finish()
    }
}

impl CompiledExpr {
    /// Parses, lowers and compiles one expression whose text starts at `offset`
    /// inside its string.
    pub fn compile(text: &str, offset: usize) -> Result<CompiledExpr, TemplateError> {
        Self::compile_cached(text, offset, &mut ExprCache::new())
    }

    /// Like [`compile`](Self::compile), reusing the compiled form of an identical text.
    pub fn compile_cached(
        text: &str,
        offset: usize,
        cache: &mut ExprCache,
    ) -> Result<CompiledExpr, TemplateError> {
        if let Some(ByText(core)) = cache.map.get(text) {
            return Ok(CompiledExpr {
                core: core.clone(),
                offset,
            });
        }
        let core = Arc::new(ExprCore::compile(text, true).map_err(|e| e.shifted(offset))?);
        cache.map.insert(ByText(core.clone()));
        Ok(CompiledExpr { core, offset })
    }

    /// Context variables this expression reads (`$x`, `context.x`), with their spans
    /// inside the string value: for the load-time check of variables never written.
    pub fn context_reads(&self) -> impl Iterator<Item = (&str, Range<usize>)> + '_ {
        self.core
            .context_vars
            .iter()
            .map(|(n, s)| (n.as_str(), s.start + self.offset..s.end + self.offset))
    }

    /// The expression text as written.
    pub fn text(&self) -> &str {
        &self.core.text
    }

    /// Evaluates against `scope`, returning the raw value and recording missing reads.
    fn eval(&self, scope: &Scope, missing: &mut Vec<MissingRead>) -> Result<Value, TemplateError> {
        let result = self.eval_uncharged(scope, missing);
        // A spent budget wins over whatever the evaluation made of it (a conversion
        // cut short, an error of its own).
        if scope.budget.is_some() && budget::is_spent() {
            return Err(self.budget_error());
        }
        result
    }

    fn budget_error(&self) -> TemplateError {
        let message =
            budget::spent_message().unwrap_or_else(|| format!("{BUDGET_PREFIX}evaluation stopped"));
        TemplateError::new(TemplateErrorKind::Limit, message, 0..self.core.text.len())
            .shifted(self.offset)
    }

    fn eval_uncharged(
        &self,
        scope: &Scope,
        missing: &mut Vec<MissingRead>,
    ) -> Result<Value, TemplateError> {
        match &self.core.eval {
            Evaluator::Fast(f) => {
                if !budget::work(self.core.text.len() as u64) {
                    return Err(self.budget_error());
                }
                let mut cx = Cx {
                    roots: scope.root.downcast_object_ref::<RootView>(),
                    strict: scope.strict,
                    missing: Vec::new(),
                };
                let result = f.eval(&mut cx);
                self.push_missing(&cx.missing, missing);
                result.map_err(|e| match e {
                    FastError::Undefined(id) => self.undefined_error(id),
                    FastError::Op(e, span) => self.op_error(&e, span),
                })
            }
            Evaluator::Jinja(j) => {
                let JinjaExpr { expr, map, cost } = &**j;
                if !budget::work(*cost) {
                    return Err(self.budget_error());
                }
                eval::begin(scope.strict);
                let result = expr.eval(scope.root.clone());
                let mut ids = Vec::new();
                let failed = eval::finish(&mut ids);
                self.push_missing(&ids, missing);
                result.map_err(|e| match failed {
                    Some(id) => self.undefined_error(id),
                    None => {
                        let span = e
                            .range()
                            .and_then(|r| original_span(map, &r))
                            .unwrap_or(0..self.core.text.len());
                        self.op_error(&e, span)
                    }
                })
            }
        }
    }

    fn push_missing(&self, ids: &[u32], missing: &mut Vec<MissingRead>) {
        for &id in ids {
            if let Some(r) = self.core.reads.get(id as usize) {
                missing.push(MissingRead {
                    path: self.core.text.get(r.span.clone()).unwrap_or("").to_string(),
                    expression: self.core.text.to_string(),
                    span: r.span.start + self.offset..r.span.end + self.offset,
                });
            }
        }
    }

    fn undefined_error(&self, id: u32) -> TemplateError {
        let (text, span) = match self.core.reads.get(id as usize) {
            Some(r) => (
                self.core.text.get(r.span.clone()).unwrap_or(""),
                r.span.clone(),
            ),
            None => (&*self.core.text, 0..self.core.text.len()),
        };
        TemplateError::new(
            TemplateErrorKind::Undefined,
            format!("`{text}` is undefined"),
            span,
        )
        .with_help("strict mode: provide the value, or write a default with `??`")
        .shifted(self.offset)
    }

    fn op_error(&self, e: &minijinja::Error, span: Range<usize>) -> TemplateError {
        let detail = e
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| e.kind().to_string());
        let kind = if matches!(e.kind(), minijinja::ErrorKind::OutOfFuel)
            || detail.starts_with(BUDGET_PREFIX)
            || detail.contains("longer than")
            || detail.contains("recursion")
        {
            TemplateErrorKind::Limit
        } else {
            TemplateErrorKind::Eval
        };
        let message = match e.kind() {
            minijinja::ErrorKind::OutOfFuel => {
                "evaluation ran out of fuel (the expression does too much work)".to_string()
            }
            _ => detail,
        };
        TemplateError::new(kind, message, span).shifted(self.offset)
    }

    /// The same expression compiled to minijinja even where the fast path applies: the
    /// reference the fast path is tested against.
    #[cfg(test)]
    pub(crate) fn compile_with_minijinja(
        text: &str,
        offset: usize,
    ) -> Result<CompiledExpr, TemplateError> {
        let core = ExprCore::compile(text, false).map_err(|e| e.shifted(offset))?;
        Ok(CompiledExpr {
            core: Arc::new(core),
            offset,
        })
    }

    /// Whether the fast path evaluates this expression.
    #[cfg(test)]
    pub(crate) fn is_fast(&self) -> bool {
        matches!(self.core.eval, Evaluator::Fast(_))
    }

    /// Evaluates to JSON (for tests comparing the two evaluators).
    #[cfg(test)]
    pub(crate) fn eval_json(
        &self,
        scope: &Scope,
        missing: &mut Vec<MissingRead>,
    ) -> Result<serde_json::Value, TemplateError> {
        self.eval(scope, missing).map(|v| to_json(&v))
    }
}

impl ExprCore {
    /// Parses `text` and compiles it: to the fast form when `fast` allows and the tree
    /// fits, else lowered to minijinja. Errors are relative to `text`.
    fn compile(text: &str, fast: bool) -> Result<ExprCore, TemplateError> {
        if fast {
            if let Some((f, (reads, context_vars))) = fast::compile_simple(text) {
                return Ok(ExprCore {
                    text: text.into(),
                    eval: Evaluator::Fast(f),
                    reads: reads.into(),
                    context_vars: context_vars.into(),
                });
            }
        }
        let node = parse_expression(text)?;
        if fast {
            let (mut reads, mut context_vars) = (Vec::new(), Vec::new());
            if let Some(f) = fast::build(&node, &mut reads, &mut context_vars) {
                return Ok(ExprCore {
                    text: text.into(),
                    eval: Evaluator::Fast(f),
                    reads: reads.into(),
                    context_vars: context_vars.into(),
                });
            }
        }
        let lowered = lower(&node);
        // minijinja's compiler recurses per bracket level, and a level of the source
        // may lower to several (`a || b` → `js_unwrap(js_tv(a) or b)`): bound the
        // lowered depth so compiling never exhausts a thread's stack.
        if bracket_depth(&lowered.source) > MAX_LOWERED_DEPTH {
            return Err(TemplateError::new(
                TemplateErrorKind::Limit,
                "expression nested too deeply: split it up or use fewer parentheses",
                0..text.len(),
            ));
        }
        let cost = lowered.source.len() as u64;
        let expr = ENV.compile_expression_owned(lowered.source).map_err(|e| {
            // Lowering emits only valid syntax; if minijinja disagrees it is our bug,
            // reported on the whole expression rather than a panic.
            TemplateError::new(
                TemplateErrorKind::Syntax,
                format!("cannot compile expression: {e}"),
                0..text.len(),
            )
        })?;
        Ok(ExprCore {
            text: text.into(),
            eval: Evaluator::Jinja(Box::new(JinjaExpr {
                expr,
                map: lowered.map.into(),
                cost,
            })),
            reads: lowered.reads.into(),
            context_vars: lowered.context_vars.into(),
        })
    }
}

/// Deepest bracket nesting of lowered minijinja source (debug builds overflow a
/// 2 MiB stack in minijinja's parser at about 95).
const MAX_LOWERED_DEPTH: usize = 64;

/// Maximum `(`/`[`/`{` depth of lowered source, outside its (JSON-style) string literals.
fn bracket_depth(src: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_str, mut escaped) = (false, false);
    for b in src.bytes() {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'(' | b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A missing value read in lenient mode: becomes a warning in the trace.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MissingRead {
    /// The path as written (`contact.extra.cidade`).
    pub path: String,
    /// The whole expression it appeared in.
    pub expression: String,
    /// Byte span of the path inside the string value.
    #[serde(skip)]
    pub span: Range<usize>,
}

/// What an expression sees: the store, the missing-value policy, and the run budget
/// its evaluations are charged to.
#[derive(Clone)]
pub struct Scope {
    root: Value,
    strict: bool,
    budget: Option<Arc<Budget>>,
}

impl Scope {
    /// A scope over named JSON roots (`contact`, `context`, …). The roots are shared,
    /// not copied.
    pub fn new(roots: Vec<(&'static str, Arc<serde_json::Value>)>, strict: bool) -> Scope {
        Scope {
            root: Value::from_object(RootView { roots }),
            strict,
            budget: None,
        }
    }

    /// Charges this scope's evaluations to `budget` (a run's: every scope of the run
    /// shares it). A scope without one is bounded only per expression ([`eval::FUEL`],
    /// [`eval::MAX_STRING_BYTES`]); the engine always gives one.
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Scope {
        self.budget = Some(budget);
        self
    }

    /// The run budget evaluations are charged to.
    pub fn budget(&self) -> Option<&Arc<Budget>> {
        self.budget.as_ref()
    }

    /// Installs the budget for one render, or the error of a budget already spent
    /// (nothing more is evaluated then).
    fn enter(&self) -> Result<Option<budget::Installed>, TemplateError> {
        let Some(b) = &self.budget else {
            return Ok(None);
        };
        if let Err(e) = b.check() {
            return Err(TemplateError::new(
                TemplateErrorKind::Limit,
                b.message(e),
                0..0,
            ));
        }
        Ok(Some(budget::install(b)))
    }

    /// Whether a missing value is an error (strict) or a warning (lenient).
    pub fn strict(&self) -> bool {
        self.strict
    }
}

/// A compiled string value.
#[derive(Debug)]
pub enum Template {
    /// No segment: left byte-for-byte untouched.
    Plain(String),
    /// Exactly one segment (surrounding whitespace ignored): a typed value.
    Whole(CompiledExpr),
    /// Text and segments: a string.
    Mixed(Vec<Part>),
}

/// A piece of a mixed template.
#[derive(Debug)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// An expression, converted by the typing rule.
    Expr(CompiledExpr),
}

impl Template {
    /// Compiles a string value. Every segment is compiled, so all its errors are
    /// reported at once.
    pub fn compile(s: &str) -> Result<Template, Vec<TemplateError>> {
        Self::compile_cached(s, &mut ExprCache::new())
    }

    /// Like [`compile`](Self::compile), sharing compiled expressions through `cache`.
    pub fn compile_cached(s: &str, cache: &mut ExprCache) -> Result<Template, Vec<TemplateError>> {
        if !has_template_syntax(s) {
            return Ok(Template::Plain(s.to_string()));
        }
        // The commonest shape, one segment and nothing around it, needs no split.
        if let Some(body) = whole_segment(s) {
            return CompiledExpr::compile_cached(body, 2, cache)
                .map(Template::Whole)
                .map_err(|e| vec![e]);
        }
        let pieces = split(s).map_err(|e| vec![e])?;
        let segments = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Segment { .. }))
            .count();
        let only_ws = pieces.iter().all(|p| match p {
            Piece::Text(t) => t.trim().is_empty(),
            Piece::Segment { .. } => true,
        });
        let mut errors = Vec::new();
        let mut parts = Vec::with_capacity(pieces.len());
        for p in pieces {
            match p {
                Piece::Text(t) => parts.push(Part::Text(t)),
                Piece::Segment { source, offset } => {
                    match CompiledExpr::compile_cached(&source, offset, cache) {
                        Ok(e) => parts.push(Part::Expr(e)),
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if segments == 0 {
            // Only escapes: the unescaped text.
            let text: String = parts
                .into_iter()
                .map(|p| {
                    if let Part::Text(t) = p {
                        t
                    } else {
                        String::new()
                    }
                })
                .collect();
            return Ok(Template::Plain(text));
        }
        if segments == 1 && only_ws {
            if let Some(Part::Expr(e)) = parts.into_iter().find(|p| matches!(p, Part::Expr(_))) {
                return Ok(Template::Whole(e));
            }
            return Ok(Template::Plain(String::new()));
        }
        Ok(Template::Mixed(parts))
    }

    /// The compiled expressions, in order (nothing is allocated: the loader asks every
    /// template).
    pub fn expressions(&self) -> impl Iterator<Item = &CompiledExpr> + '_ {
        let (whole, parts): (Option<&CompiledExpr>, &[Part]) = match self {
            Template::Plain(_) => (None, &[]),
            Template::Whole(e) => (Some(e), &[]),
            Template::Mixed(parts) => (None, parts),
        };
        whole.into_iter().chain(parts.iter().filter_map(|p| {
            if let Part::Expr(e) = p {
                Some(e)
            } else {
                None
            }
        }))
    }

    /// Renders to JSON by the typing rule.
    pub fn render(
        &self,
        scope: &Scope,
        missing: &mut Vec<MissingRead>,
    ) -> Result<serde_json::Value, TemplateError> {
        let _installed = scope.enter()?;
        self.render_installed(scope, missing)
    }

    /// [`render`](Self::render) with the scope's budget installed.
    fn render_installed(
        &self,
        scope: &Scope,
        missing: &mut Vec<MissingRead>,
    ) -> Result<serde_json::Value, TemplateError> {
        match self {
            Template::Plain(s) => Ok(serde_json::Value::String(s.clone())),
            Template::Whole(e) => {
                let v = e.eval(scope, missing)?;
                let j = to_json(&v);
                if scope.budget.is_some() && budget::is_spent() {
                    return Err(e.budget_error());
                }
                Ok(j)
            }
            Template::Mixed(parts) => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => {
                            if !budget::build(t.len() as u64) {
                                return Err(TemplateError::new(
                                    TemplateErrorKind::Limit,
                                    budget::spent_message().unwrap_or_default(),
                                    0..0,
                                ));
                            }
                            out.push_str(t)
                        }
                        Part::Expr(e) => {
                            let v = e.eval(scope, missing)?;
                            if !append_typed(&mut out, &v) {
                                return Err(e.budget_error());
                            }
                            if out.len() > MAX_STRING_BYTES {
                                return Err(TemplateError::new(
                                    TemplateErrorKind::Limit,
                                    format!("rendered string longer than {MAX_STRING_BYTES} bytes"),
                                    e.offset..e.offset + e.core.text.len(),
                                ));
                            }
                        }
                    }
                }
                Ok(serde_json::Value::String(out))
            }
        }
    }
}

/// The typing rule's conversion of one segment inside a mixed string, charged to the
/// run budget before it is appended; `false` when the budget is spent.
fn append_typed(out: &mut String, v: &Value) -> bool {
    use minijinja::value::ValueKind as K;
    match v.kind() {
        K::Undefined | K::None => {}
        K::String => {
            let s = v.as_str().unwrap_or("");
            if !budget::build(s.len() as u64) {
                return false;
            }
            out.push_str(s)
        }
        K::Number => out.push_str(&eval::format_number(eval::to_number(v))),
        K::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        K::Seq | K::Map => {
            let j = to_json(v);
            if budget::is_spent() || !budget::build(eval::json_text_len(&j, u64::MAX)) {
                return false;
            }
            out.push_str(&serde_json::to_string(&j).unwrap_or_default())
        }
        _ => out.push_str(&v.to_string()),
    }
    true
}

/// A compiled JSON value: static subtrees stay as they are, strings with templates
/// are compiled. Object keys are never templated.
#[derive(Debug)]
pub enum TValue {
    /// A subtree without any template (boxed: most nodes of a compiled flow are small,
    /// and an inline JSON value would make every one of them as large as a map).
    Static(Box<serde_json::Value>),
    /// A string with at least one segment or escape.
    Template(Box<Template>),
    /// An array with templates somewhere inside.
    Array(Box<[TValue]>),
    /// An object with templates somewhere inside (key order kept).
    Object(Box<[(Box<str>, TValue)]>),
}

/// A template error inside a JSON value: the JSON pointer (relative to the compiled
/// value) of the string that holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocatedError {
    /// JSON pointer of the string inside the compiled value.
    pub pointer: String,
    /// The error.
    pub error: TemplateError,
}

impl TValue {
    /// Compiles every string inside `v`, collecting all errors.
    pub fn compile(v: &serde_json::Value) -> Result<TValue, Vec<LocatedError>> {
        Self::compile_cached(v, &mut ExprCache::new())
    }

    /// Like [`compile`](Self::compile), sharing compiled expressions through `cache`
    /// (one cache for a whole flow).
    pub fn compile_cached(
        v: &serde_json::Value,
        cache: &mut ExprCache,
    ) -> Result<TValue, Vec<LocatedError>> {
        Self::compile_owned(v.clone(), cache)
    }

    /// Like [`compile_cached`](Self::compile_cached), taking the value apart instead of
    /// copying what stays static (the loader's way: a flow's text is not held twice).
    pub fn compile_owned(
        v: serde_json::Value,
        cache: &mut ExprCache,
    ) -> Result<TValue, Vec<LocatedError>> {
        Self::compile_noting_reads(v, cache, &mut |_, _| {})
    }

    /// Like [`compile_owned`](Self::compile_owned), calling `reads` with the pointer of
    /// its string for each expression that reads context variables (the loader's check
    /// of variables never written), as the expression compiles.
    pub fn compile_noting_reads(
        v: serde_json::Value,
        cache: &mut ExprCache,
        reads: &mut dyn FnMut(&str, &CompiledExpr),
    ) -> Result<TValue, Vec<LocatedError>> {
        let mut cx = Compiling {
            ptr: String::new(),
            errors: Vec::new(),
            cache,
            reads,
        };
        let t = compile_at(v, &mut cx);
        if cx.errors.is_empty() {
            Ok(t)
        } else {
            Err(cx.errors)
        }
    }

    /// Renders the value. Stops at the first error, located by pointer.
    pub fn render(
        &self,
        scope: &Scope,
        missing: &mut Vec<(String, MissingRead)>,
    ) -> Result<serde_json::Value, LocatedError> {
        let _installed = scope.enter().map_err(|error| LocatedError {
            pointer: String::new(),
            error,
        })?;
        render_at(self, scope, &mut Vec::new(), missing)
    }

    /// Whether the value holds any template.
    pub fn is_static(&self) -> bool {
        matches!(self, TValue::Static(_))
    }

    /// The static value itself (`null` for a template: callers check first).
    fn into_static(self) -> serde_json::Value {
        match self {
            TValue::Static(v) => *v,
            _ => serde_json::Value::Null,
        }
    }

    /// The value itself when it holds no template.
    pub fn as_static(&self) -> Option<&serde_json::Value> {
        match self {
            TValue::Static(v) => Some(&**v),
            _ => None,
        }
    }

    /// Visits every compiled expression with the pointer of its string.
    pub fn for_each_expr<'a>(&'a self, f: &mut dyn FnMut(&str, &'a CompiledExpr)) {
        let mut ptr = String::new();
        visit(self, &mut ptr, f);
    }
}

fn visit<'a>(t: &'a TValue, ptr: &mut String, f: &mut dyn FnMut(&str, &'a CompiledExpr)) {
    match t {
        TValue::Static(_) => {}
        TValue::Template(tpl) => {
            for e in tpl.expressions() {
                f(ptr, e);
            }
        }
        TValue::Array(items) => {
            for (i, it) in items.iter().enumerate() {
                let len = ptr.len();
                push_index(ptr, i);
                visit(it, ptr, f);
                ptr.truncate(len);
            }
        }
        TValue::Object(items) => {
            for (k, it) in items {
                let len = ptr.len();
                push_key(ptr, k);
                visit(it, ptr, f);
                ptr.truncate(len);
            }
        }
    }
}

fn push_key(ptr: &mut String, k: &str) {
    ptr.push('/');
    for c in k.chars() {
        match c {
            '~' => ptr.push_str("~0"),
            '/' => ptr.push_str("~1"),
            c => ptr.push(c),
        }
    }
}

/// Appends the pointer token of array index `i` (every action's pointer is built this
/// way while a flow loads: no formatting machinery).
pub(crate) fn push_index(ptr: &mut String, i: usize) {
    ptr.push('/');
    ptr.push_str(itoa::Buffer::new().format(i));
}

/// What compiling a value carries along.
struct Compiling<'c> {
    /// The pointer of the value being compiled.
    ptr: String,
    errors: Vec<LocatedError>,
    cache: &'c mut ExprCache,
    reads: &'c mut dyn FnMut(&str, &CompiledExpr),
}

/// Compiles `v`, taking it apart: static strings, keys and subtrees move into the
/// result instead of being copied.
fn compile_at(v: serde_json::Value, cx: &mut Compiling<'_>) -> TValue {
    use serde_json::Value as J;
    if !holds_template(&v) {
        return TValue::Static(Box::new(v));
    }
    match v {
        J::String(s) => match Template::compile_cached(&s, cx.cache) {
            Ok(Template::Plain(p)) => TValue::Static(Box::new(J::String(p))),
            Ok(t) => {
                for e in t.expressions() {
                    if !e.core.context_vars.is_empty() {
                        (cx.reads)(&cx.ptr, e);
                    }
                }
                TValue::Template(Box::new(t))
            }
            Err(es) => {
                let ptr = &cx.ptr;
                cx.errors.extend(es.into_iter().map(|error| LocatedError {
                    pointer: ptr.clone(),
                    error,
                }));
                TValue::Static(Box::new(J::String(s)))
            }
        },
        J::Array(items) => {
            let compiled: Vec<TValue> = items
                .into_iter()
                .enumerate()
                .map(|(i, it)| {
                    let len = cx.ptr.len();
                    push_index(&mut cx.ptr, i);
                    let t = compile_at(it, cx);
                    cx.ptr.truncate(len);
                    t
                })
                .collect();
            if compiled.iter().all(TValue::is_static) {
                // Only escapes (`\<?`) or errors: the compiled strings, not the source.
                TValue::Static(Box::new(J::Array(
                    compiled.into_iter().map(TValue::into_static).collect(),
                )))
            } else {
                TValue::Array(compiled.into())
            }
        }
        J::Object(m) => {
            let compiled: Vec<(String, TValue)> = m
                .into_iter()
                .map(|(k, it)| {
                    let len = cx.ptr.len();
                    push_key(&mut cx.ptr, &k);
                    let t = compile_at(it, cx);
                    cx.ptr.truncate(len);
                    (k, t)
                })
                .collect();
            if compiled.iter().all(|(_, t)| t.is_static()) {
                TValue::Static(Box::new(J::Object(
                    compiled
                        .into_iter()
                        .map(|(k, t)| (k, t.into_static()))
                        .collect(),
                )))
            } else {
                TValue::Object(compiled.into_iter().map(|(k, t)| (k.into(), t)).collect())
            }
        }
        other => TValue::Static(Box::new(other)),
    }
}

/// Whether any string inside `v` may hold a template (or an escaped `<?`).
fn holds_template(v: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match v {
        J::String(s) => has_template_syntax(s),
        J::Array(items) => items.iter().any(holds_template),
        J::Object(m) => m.values().any(holds_template),
        _ => false,
    }
}

/// Where a value sits inside a JSON tree, as borrowed steps: the JSON pointer is
/// written out ([`pointer`]) only where one is reported, not for every key walked.
pub(crate) enum PathStep<'a> {
    /// An object member.
    Key(&'a str),
    /// An array element.
    Index(usize),
}

/// The JSON pointer (RFC 6901) of `path`.
pub(crate) fn pointer(path: &[PathStep<'_>]) -> String {
    let mut ptr = String::new();
    for step in path {
        match step {
            PathStep::Key(k) => push_key(&mut ptr, k),
            PathStep::Index(i) => push_index(&mut ptr, *i),
        }
    }
    ptr
}

fn render_at<'a>(
    t: &'a TValue,
    scope: &Scope,
    path: &mut Vec<PathStep<'a>>,
    missing: &mut Vec<(String, MissingRead)>,
) -> Result<serde_json::Value, LocatedError> {
    use serde_json::Value as J;
    match t {
        TValue::Static(v) => Ok((**v).clone()),
        TValue::Template(tpl) => {
            let mut m = Vec::new();
            let r = tpl.render_installed(scope, &mut m);
            if !m.is_empty() {
                let ptr = pointer(path);
                missing.extend(m.into_iter().map(|x| (ptr.clone(), x)));
            }
            r.map_err(|error| LocatedError {
                pointer: pointer(path),
                error,
            })
        }
        TValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                path.push(PathStep::Index(i));
                out.push(render_at(it, scope, path, missing)?);
                path.pop();
            }
            Ok(J::Array(out))
        }
        TValue::Object(items) => {
            let mut out = serde_json::Map::with_capacity(items.len());
            for (k, it) in items {
                path.push(PathStep::Key(k));
                out.insert(k.to_string(), render_at(it, scope, path, missing)?);
                path.pop();
            }
            Ok(J::Object(out))
        }
    }
}
