//! Lowering: the expression tree becomes minijinja expression source, in which every
//! JavaScript operator is a call to a `js_*` function registered in
//! [`eval`](super::eval) (minijinja's own operators have Python meaning), plus a
//! source map so minijinja's error ranges point back into what the author wrote.

use std::fmt::Write as _;
use std::ops::Range;

use super::ast::{BinOp, Expr, LogicOp, Method, Node, Root, Step, UnOp};

/// A path read that may find nothing: recorded as a warning (or an error in strict mode).
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// Its byte span in the expression text (the path as written, e.g.
    /// `contact.extra.cidade`, is that slice of the text: not copied per read).
    pub span: Range<usize>,
}

/// The result of lowering one expression.
#[derive(Debug, Clone)]
pub struct Lowered {
    /// minijinja expression source.
    pub source: String,
    /// (generated range, original span) for every emitted node, outermost first.
    pub map: Vec<(Range<usize>, Range<usize>)>,
    /// Unguarded path reads, indexed by the id passed to `js_read`.
    pub reads: Vec<Read>,
    /// Every context variable read (`$x`, `context.x`), guarded or not, with its span.
    pub context_vars: Vec<(String, Range<usize>)>,
}

/// Maps a byte range of the generated source to the span of the innermost original
/// node that produced it.
pub fn original_span(
    map: &[(Range<usize>, Range<usize>)],
    generated: &Range<usize>,
) -> Option<Range<usize>> {
    map.iter()
        .filter(|(g, _)| g.start <= generated.start && generated.end <= g.end)
        .min_by_key(|(g, _)| g.end - g.start)
        .map(|(_, o)| o.clone())
}

/// Lowers `node` (its spans index into the expression text).
pub fn lower(node: &Node) -> Lowered {
    let mut l = Lowerer {
        out: String::new(),
        map: Vec::new(),
        reads: Vec::new(),
        context_vars: Vec::new(),
    };
    l.node(node, false);
    Lowered {
        source: l.out,
        map: l.map,
        reads: l.reads,
        context_vars: l.context_vars,
    }
}

struct Lowerer {
    out: String,
    map: Vec<(Range<usize>, Range<usize>)>,
    reads: Vec<Read>,
    context_vars: Vec<(String, Range<usize>)>,
}

impl Lowerer {
    /// Emits `n`. `guarded`: the value is only tested (`??`, `||`, `&&` left operands,
    /// `!`, a ternary's condition), so a missing value there is expected, not a warning.
    fn node(&mut self, n: &Node, guarded: bool) {
        let start = self.out.len();
        self.expr(n, guarded);
        self.map.push((start..self.out.len(), n.span.clone()));
    }

    fn call(&mut self, f: &str, args: &[&Node], guarded: bool) {
        self.out.push_str(f);
        self.out.push('(');
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.node(a, guarded);
        }
        self.out.push(')');
    }

    fn string_lit(&mut self, s: &str) {
        // JSON string syntax is a subset of what minijinja's lexer unescapes.
        let lit = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
        self.out.push_str(&lit);
    }

    fn number(&mut self, n: f64) {
        if n.fract() == 0.0 && n.abs() < 9.0e15 {
            let _ = write!(self.out, "{}", n as i64);
        } else if n.is_finite() {
            let _ = write!(self.out, "{n:?}");
        } else {
            let _ = write!(self.out, "js_number({:?})", super::eval::format_number(n));
        }
    }

    fn expr(&mut self, n: &Node, guarded: bool) {
        match &n.expr {
            Expr::Null => self.out.push_str("none"),
            Expr::Undefined => self.out.push_str("js_undefined()"),
            Expr::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Expr::Number(x) => self.number(*x),
            Expr::Str(s) => self.string_lit(s),
            Expr::Array(items) => {
                self.out.push('[');
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.node(it, false);
                }
                self.out.push(']');
            }
            Expr::Object(items) => {
                self.out.push('{');
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.string_lit(k);
                    self.out.push_str(": ");
                    self.node(v, false);
                }
                self.out.push('}');
            }
            Expr::Path {
                root,
                steps,
                optional,
            } => {
                if let (Root::Context, Some(Step::Key(name))) = (root, steps.first()) {
                    self.context_vars.push((name.clone(), n.span.clone()));
                }
                let record = !guarded && !optional;
                if record {
                    self.out.push_str("js_read(");
                }
                // Computed steps need js_get (JavaScript indexing); plain ones use
                // minijinja subscripts, which work for any key text.
                let computed = steps
                    .iter()
                    .filter(|s| matches!(s, Step::Computed(_)))
                    .count();
                for _ in 0..computed {
                    self.out.push_str("js_get(");
                }
                self.out.push_str(root.name());
                for s in steps {
                    match s {
                        Step::Key(k) => {
                            self.out.push('[');
                            self.string_lit(k);
                            self.out.push(']');
                        }
                        Step::Index(i) => {
                            let _ = write!(self.out, "[{i}]");
                        }
                        Step::Computed(e) => {
                            self.out.push_str(", ");
                            self.node(e, false);
                            self.out.push(')');
                        }
                    }
                }
                if record {
                    let id = self.reads.len();
                    self.reads.push(Read {
                        span: n.span.clone(),
                    });
                    let _ = write!(self.out, ", {id})");
                }
            }
            Expr::Get(base, step) => {
                self.out.push_str("js_get(");
                self.node(base, guarded);
                self.out.push_str(", ");
                match step {
                    Step::Key(k) => self.string_lit(k),
                    Step::Index(i) => {
                        let _ = write!(self.out, "{i}");
                    }
                    Step::Computed(e) => self.node(e, false),
                }
                self.out.push(')');
            }
            Expr::Length(x) => self.call("js_length", &[x], guarded),
            Expr::Unary(op, x) => match op {
                UnOp::Not => {
                    self.out.push_str("(not js_truthy(");
                    self.node(x, true);
                    self.out.push_str("))");
                }
                UnOp::Neg => self.call("js_neg", &[x], false),
                UnOp::Plus => self.call("js_number", &[x], false),
            },
            Expr::Binary(BinOp::Add, _, _) => {
                // A left-associative chain `a + b + c` is one variadic call: the lowered
                // source stays flat however long the sum is.
                let operands = add_operands(n);
                self.call("js_add", &operands, false);
            }
            Expr::Binary(op, a, b) => {
                let f = match op {
                    BinOp::Add => "js_add",
                    BinOp::Sub => "js_sub",
                    BinOp::Mul => "js_mul",
                    BinOp::Div => "js_div",
                    BinOp::Rem => "js_rem",
                    BinOp::Eq => "js_eq",
                    BinOp::Ne => "js_ne",
                    BinOp::StrictEq => "js_seq",
                    BinOp::StrictNe => "js_sne",
                    BinOp::Lt => "js_lt",
                    BinOp::Le => "js_le",
                    BinOp::Gt => "js_gt",
                    BinOp::Ge => "js_ge",
                };
                // `x == null`, `x === undefined`, …: a test for absence, like `??`.
                let absent = |n: &Node| matches!(n.expr, Expr::Null | Expr::Undefined);
                let test = matches!(
                    op,
                    BinOp::Eq | BinOp::Ne | BinOp::StrictEq | BinOp::StrictNe
                ) && (absent(a) || absent(b));
                self.call(f, &[a, b], test);
            }
            Expr::Logic(op, operands) => self.logic(*op, operands, guarded),
            Expr::Cond(c, a, b) => {
                self.out.push('(');
                self.node(a, guarded);
                self.out.push_str(" if js_truthy(");
                self.node(c, true);
                self.out.push_str(") else ");
                self.node(b, guarded);
                self.out.push(')');
            }
            Expr::Method(m, target, args) => {
                let mut all: Vec<&Node> = vec![target];
                all.extend(args.iter());
                self.call(m.function(), &all, false);
            }
            Expr::Call(g, args) => {
                let f = super::ast::Global::ALL
                    .iter()
                    .find(|x| x.0 == *g)
                    .map_or("js_undefined", |x| x.2);
                let all: Vec<&Node> = args.iter().collect();
                self.call(f, &all, false);
            }
            Expr::RegexTest {
                pattern,
                flags,
                arg,
            } => {
                self.out.push_str("js_regex_test(");
                self.string_lit(pattern);
                self.out.push_str(", ");
                self.string_lit(flags);
                self.out.push_str(", ");
                self.node(arg, false);
                self.out.push(')');
            }
            Expr::RegexMethod {
                method,
                target,
                pattern,
                flags,
                arg,
            } => {
                let f = if *method == Method::Split {
                    "js_regex_split"
                } else {
                    "js_regex_replace"
                };
                self.out.push_str(f);
                self.out.push('(');
                self.node(target, false);
                self.out.push_str(", ");
                self.string_lit(pattern);
                self.out.push_str(", ");
                self.string_lit(flags);
                if let Some(a) = arg {
                    self.out.push_str(", ");
                    self.node(a, false);
                }
                self.out.push(')');
            }
            Expr::Intent(name) => {
                self.out.push_str("js_intent(intent, ");
                self.string_lit(name);
                self.out.push(')');
            }
            Expr::Entity(name, value) => {
                self.out.push_str("js_entity(entities, ");
                self.string_lit(name);
                if let Some(v) = value {
                    self.out.push_str(", ");
                    self.string_lit(v);
                }
                self.out.push(')');
            }
            Expr::Filter(x, name, args) => {
                // minijinja's filters build values the run budget cannot see inside:
                // `js_charged` charges what one returns.
                self.out.push_str("js_charged((");
                // `x | default(…)` is a default for a missing `x`, like `??`.
                self.node(x, guarded || matches!(name.as_str(), "default" | "d"));
                self.out.push_str(")|");
                self.out.push_str(name);
                if !args.is_empty() {
                    self.out.push('(');
                    for (i, a) in args.iter().enumerate() {
                        if i > 0 {
                            self.out.push_str(", ");
                        }
                        self.node(a, false);
                    }
                    self.out.push(')');
                }
                self.out.push(')');
            }
        }
    }

    /// `a || b || c` → `js_unwrap(js_tv(a) or js_tv(b) or c)`: minijinja's `or`/`and`
    /// short-circuit and return an operand, as JavaScript's do; `js_tv` wraps an
    /// operand in a value whose minijinja truthiness is its JavaScript truthiness
    /// (`js_tp`: "is present", for `??`), and `js_unwrap` takes the operand back out.
    /// Every operand is emitted once, so the source stays linear in the input.
    fn logic(&mut self, op: LogicOp, operands: &[Node], guarded: bool) {
        let Some((last, init)) = operands.split_last() else {
            self.out.push_str("js_undefined()");
            return;
        };
        let (test, joiner) = match op {
            LogicOp::Or => ("js_tv(", " or "),
            LogicOp::And => ("js_tv(", " and "),
            LogicOp::Coalesce => ("js_tp(", " or "),
        };
        self.out.push_str("js_unwrap(");
        for o in init {
            self.out.push_str(test);
            self.node(o, true);
            self.out.push(')');
            self.out.push_str(joiner);
        }
        self.node(last, guarded);
        self.out.push(')');
    }
}

/// The operands of a left-associative `+` chain, left to right (`(a + b) + c` → a, b, c;
/// `a + (b + c)` → a, `b + c`). Walks the left spine without recursion.
pub(crate) fn add_operands(n: &Node) -> Vec<&Node> {
    let mut rights = Vec::new();
    let mut cur = n;
    while let Expr::Binary(BinOp::Add, a, b) = &cur.expr {
        rights.push(&**b);
        cur = a;
    }
    rights.push(cur);
    rights.reverse();
    rights
}
