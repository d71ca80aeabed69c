//! The expression tree built from the pest parse, before lowering to minijinja.

use std::ops::Range;

/// A node with its byte span inside the expression text of one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node is.
    pub expr: Expr,
    /// Byte range inside the segment's expression text.
    pub span: Range<usize>,
}

/// A root name an expression may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// `contact`
    Contact,
    /// `context` (and `$x` = `context.x`)
    Context,
    /// `input`
    Input,
    /// `intent`
    Intent,
    /// `intents`
    Intents,
    /// `confidence`
    Confidence,
    /// `score_level`
    ScoreLevel,
    /// `entities`
    Entities,
}

impl Root {
    /// Every root, in documentation order.
    pub const ALL: [Root; 8] = [
        Root::Contact,
        Root::Context,
        Root::Input,
        Root::Intent,
        Root::Intents,
        Root::Confidence,
        Root::ScoreLevel,
        Root::Entities,
    ];

    /// The name as written in expressions.
    pub const fn name(self) -> &'static str {
        match self {
            Root::Contact => "contact",
            Root::Context => "context",
            Root::Input => "input",
            Root::Intent => "intent",
            Root::Intents => "intents",
            Root::Confidence => "confidence",
            Root::ScoreLevel => "score_level",
            Root::Entities => "entities",
        }
    }

    /// Looks a name up.
    pub fn from_name(s: &str) -> Option<Root> {
        Root::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// One step of a path after its root.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `.name` or `['name']`
    Key(String),
    /// `[3]`
    Index(u64),
    /// `[expr]`
    Computed(Box<Node>),
}

/// Binary operators with JavaScript meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    StrictEq,
    StrictNe,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Short-circuit operators, flattened into chains (`a || b || c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogicOp {
    /// `&&`: the first falsy operand, else the last.
    And,
    /// `||`: the first truthy operand, else the last.
    Or,
    /// `??`: the first operand that is neither null nor undefined, else the last.
    Coalesce,
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    /// `!`
    Not,
    /// `-`
    Neg,
    /// `+`
    Plus,
}

/// Methods callable on values (`x.trim()`), with JavaScript meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Method {
    ToUpperCase,
    ToLowerCase,
    Trim,
    Includes,
    StartsWith,
    EndsWith,
    IndexOf,
    Split,
    Join,
    Replace,
    Substring,
    Slice,
    ToString,
    ToFixed,
}

impl Method {
    /// Every method with its JavaScript name and allowed argument counts.
    pub const ALL: [(Method, &'static str, usize, usize); 14] = [
        (Method::ToUpperCase, "toUpperCase", 0, 0),
        (Method::ToLowerCase, "toLowerCase", 0, 0),
        (Method::Trim, "trim", 0, 0),
        (Method::Includes, "includes", 1, 1),
        (Method::StartsWith, "startsWith", 1, 1),
        (Method::EndsWith, "endsWith", 1, 1),
        (Method::IndexOf, "indexOf", 1, 1),
        (Method::Split, "split", 0, 1),
        (Method::Join, "join", 0, 1),
        (Method::Replace, "replace", 2, 2),
        (Method::Substring, "substring", 1, 2),
        (Method::Slice, "slice", 0, 2),
        (Method::ToString, "toString", 0, 0),
        (Method::ToFixed, "toFixed", 0, 1),
    ];

    /// The JavaScript name.
    pub fn name(self) -> &'static str {
        Method::ALL
            .iter()
            .find(|m| m.0 == self)
            .map(|m| m.1)
            .unwrap_or("?")
    }

    /// The name of the minijinja function implementing it.
    pub fn function(self) -> &'static str {
        match self {
            Method::ToUpperCase => "js_upper",
            Method::ToLowerCase => "js_lower",
            Method::Trim => "js_trim",
            Method::Includes => "js_includes",
            Method::StartsWith => "js_starts_with",
            Method::EndsWith => "js_ends_with",
            Method::IndexOf => "js_index_of",
            Method::Split => "js_split",
            Method::Join => "js_join",
            Method::Replace => "js_replace",
            Method::Substring => "js_substring",
            Method::Slice => "js_slice",
            Method::ToString => "js_to_string",
            Method::ToFixed => "js_to_fixed",
        }
    }
}

/// Global functions (`Number(x)`, `Math.max(a, b)`, `JSON.parse(s)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Global {
    JsonStringify,
    JsonParse,
    Number,
    String,
    ParseInt,
    ParseFloat,
    MathRound,
    MathFloor,
    MathCeil,
    MathMin,
    MathMax,
    MathAbs,
}

impl Global {
    /// Every global with its written name, minijinja function and argument counts.
    pub const ALL: [(Global, &'static str, &'static str, usize, usize); 12] = [
        (
            Global::JsonStringify,
            "JSON.stringify",
            "js_json_stringify",
            1,
            1,
        ),
        (Global::JsonParse, "JSON.parse", "js_json_parse", 1, 1),
        (Global::Number, "Number", "js_number", 0, 1),
        (Global::String, "String", "js_string", 0, 1),
        (Global::ParseInt, "parseInt", "js_parse_int", 1, 2),
        (Global::ParseFloat, "parseFloat", "js_parse_float", 1, 1),
        (Global::MathRound, "Math.round", "js_math_round", 1, 1),
        (Global::MathFloor, "Math.floor", "js_math_floor", 1, 1),
        (Global::MathCeil, "Math.ceil", "js_math_ceil", 1, 1),
        (Global::MathMin, "Math.min", "js_math_min", 0, usize::MAX),
        (Global::MathMax, "Math.max", "js_math_max", 0, usize::MAX),
        (Global::MathAbs, "Math.abs", "js_math_abs", 1, 1),
    ];

    /// Looks up a written name such as `Math.max`.
    pub fn from_name(s: &str) -> Option<(Global, &'static str, usize, usize)> {
        Global::ALL
            .iter()
            .find(|g| g.1 == s)
            .map(|g| (g.0, g.2, g.3, g.4))
    }
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `null`
    Null,
    /// `undefined`
    Undefined,
    /// `true` / `false`
    Bool(bool),
    /// A number literal.
    Number(f64),
    /// A string literal (already unescaped).
    Str(String),
    /// `[a, b]`
    Array(Vec<Node>),
    /// `{k: v}`
    Object(Vec<(String, Node)>),
    /// A read from the store: root, steps, and whether `?.` appears in it.
    Path {
        /// Where the path starts.
        root: Root,
        /// Steps after the root (`$x` starts with `Key("x")` on `context`).
        steps: Vec<Step>,
        /// `?.` was used: the author expects it may be missing.
        optional: bool,
    },
    /// A member or index applied to a computed value: `(a || b).name`, `JSON.parse(s).x`.
    Get(Box<Node>, Step),
    /// `.length` of a string or array (or the `length` key of an object).
    Length(Box<Node>),
    /// A prefix operator.
    Unary(UnOp, Box<Node>),
    /// A binary operator.
    Binary(BinOp, Box<Node>, Box<Node>),
    /// A flattened chain of one short-circuit operator.
    Logic(LogicOp, Vec<Node>),
    /// `c ? a : b`
    Cond(Box<Node>, Box<Node>, Box<Node>),
    /// `x.method(args)`
    Method(Method, Box<Node>, Vec<Node>),
    /// `Global(args)`
    Call(Global, Vec<Node>),
    /// `/re/flags.test(s)`
    RegexTest {
        /// The pattern source.
        pattern: String,
        /// The flags.
        flags: String,
        /// The tested value.
        arg: Box<Node>,
    },
    /// `s.replace(/re/flags, r)` or `s.split(/re/flags)`
    RegexMethod {
        /// `Replace` or `Split`.
        method: Method,
        /// The receiver.
        target: Box<Node>,
        /// The pattern source.
        pattern: String,
        /// The flags.
        flags: String,
        /// The replacement (for `replace`).
        arg: Option<Box<Node>>,
    },
    /// `#intent`
    Intent(String),
    /// `@entity` or `@entity:value`
    Entity(String, Option<String>),
    /// `x | filter(args)`
    Filter(Box<Node>, String, Vec<Node>),
}
