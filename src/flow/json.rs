//! A small position-tracking JSON parser for hand-edited flow files.
//!
//! `serde_json` forgets where values came from, but the flow loader must point at the
//! exact line, column and JSON pointer of every problem. This module parses RFC 8259
//! JSON into a [`Node`] tree where every value (and every object key) carries its byte
//! [`Span`], and reports syntax slips people make in editors (trailing commas, comments,
//! single quotes, unquoted keys, `NaN`, ...) with short messages and precise spans.
//!
//! The parser works on bytes, scans string bodies eight bytes at a time, never panics on
//! any input and refuses nesting deeper than [`MAX_DEPTH`] levels.

use serde_json::{Map, Number, Value};

/// Deepest nesting of arrays/objects accepted, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// Byte range in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// Builds a span; a convenience so callers need not spell out the fields.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// Length in bytes, so callers can tell empty (end-of-input) spans apart.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// True for zero-length spans (e.g. errors at the end of input).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed JSON value together with where it sits in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The whole value, including quotes or brackets.
    pub span: Span,
    /// What the value is.
    pub kind: NodeKind,
}

/// The kind of a [`Node`], mirroring [`serde_json::Value`] but keeping positions inside.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, parsed exactly as `serde_json` would.
    Number(Number),
    /// A string, with escapes decoded.
    String(String),
    /// An array, elements in source order.
    Array(Vec<Node>),
    /// An object, members in source order (duplicates kept so they can be diagnosed).
    Object(Vec<Member>),
}

/// One `"key": value` pair of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The decoded key.
    pub key: String,
    /// Where the key is, including its quotes.
    pub key_span: Span,
    /// The member's value.
    pub value: Node,
}

/// A syntax error: a message a person understands, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    /// Short, lowercase explanation of what was expected and what was found.
    pub message: String,
    /// The offending bytes (empty at the end of input).
    pub span: Span,
}

impl JsonError {
    fn new(message: impl Into<String>, span: Span) -> Self {
        JsonError {
            message: message.into(),
            span,
        }
    }
}

/// Parses a whole JSON document, keeping byte spans; a leading BOM is skipped.
pub fn parse(src: &str) -> Result<Node, JsonError> {
    let mut p = Parser {
        src,
        b: src.as_bytes(),
        pos: 0,
        depth: 0,
    };
    if src.starts_with('\u{feff}') {
        p.pos = 3;
    }
    let first = p.pos;
    p.skip_ws();
    if p.pos >= p.b.len() {
        return Err(JsonError::new(
            "empty document: expected a JSON value",
            Span::new(first, first),
        ));
    }
    let node = p.parse_value()?;
    p.skip_ws();
    if p.pos < p.b.len() {
        if let Some(e) = p.comment_error() {
            return Err(e);
        }
        let (c, span) = p.char_at(p.pos);
        return Err(JsonError::new(
            format!(
                "unexpected `{}` after the end of the JSON value",
                show_char(c)
            ),
            span,
        ));
    }
    Ok(node)
}

/// The items of a document that is an array, parsed one at a time, so a large flow
/// never exists as one tree: `None` when the document is not an array. Any syntax
/// problem ends the iteration with an error; [`parse`] reports the same problem with
/// its full message, so callers may re-run it for the diagnostic.
pub fn array_items(src: &str) -> Option<ArrayItems<'_>> {
    let mut p = Parser {
        src,
        b: src.as_bytes(),
        pos: 0,
        depth: 0,
    };
    if src.starts_with('\u{feff}') {
        p.pos = 3;
    }
    p.skip_ws();
    if p.peek() != Some(b'[') {
        return None;
    }
    p.pos += 1;
    // The items sit one level down, as they do inside a whole-document parse.
    p.depth = 1;
    Some(ArrayItems {
        p,
        started: false,
        done: false,
    })
}

/// The value that starts at byte `start` of `src` (an item [`array_items`] gave, parsed
/// again where its tree is needed), with spans in `src`; `None` if none parses there.
pub fn parse_at(src: &str, start: usize) -> Option<Node> {
    let mut p = Parser {
        src,
        b: src.as_bytes(),
        pos: start,
        depth: 1,
    };
    p.parse_value().ok()
}

/// See [`array_items`].
pub struct ArrayItems<'a> {
    p: Parser<'a>,
    started: bool,
    done: bool,
}

impl ArrayItems<'_> {
    /// The next item as a plain value, with the offset where it starts and whether an
    /// object in it held a key twice (the loader's path: no positioned tree is built;
    /// [`parse_at`] builds one where a problem must be placed). Ends like the iterator.
    pub fn next_value(&mut self) -> Option<Result<(Value, usize, bool), JsonError>> {
        if self.done {
            return None;
        }
        let mut sink = Values::default();
        let r = self
            .step(&mut sink)
            .map(|o| o.map(|(v, start)| (v, start, sink.duplicates)))
            .transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }

    fn step<S: Sink>(&mut self, sink: &mut S) -> Result<Option<(S::Out, usize)>, JsonError> {
        let p = &mut self.p;
        p.skip_ws();
        if self.started {
            match p.peek() {
                Some(b',') => {
                    p.pos += 1;
                    p.skip_ws();
                    if p.peek() == Some(b']') {
                        return Err(JsonError::new("trailing comma", Span::new(p.pos, p.pos)));
                    }
                }
                Some(b']') => return self.finish().map(|()| None),
                _ => {
                    return Err(JsonError::new(
                        "expected `,` or `]`",
                        Span::new(p.pos, p.pos),
                    ))
                }
            }
        } else if p.peek() == Some(b']') {
            return self.finish().map(|()| None);
        }
        if p.pos >= p.b.len() {
            return Err(p.eof_error("a JSON value"));
        }
        self.started = true;
        let start = p.pos;
        p.parse_into(sink).map(|v| Some((v, start)))
    }

    fn finish(&mut self) -> Result<(), JsonError> {
        let p = &mut self.p;
        p.pos += 1;
        p.skip_ws();
        if p.pos < p.b.len() {
            return Err(JsonError::new(
                "content after the array",
                Span::new(p.pos, p.pos),
            ));
        }
        Ok(())
    }
}

impl Iterator for ArrayItems<'_> {
    type Item = Result<Node, JsonError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step(&mut Nodes).map(|o| o.map(|(n, _)| n)).transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

impl Node {
    /// Converts to a plain [`serde_json::Value`] (duplicate keys: last wins, first position
    /// kept — exactly what `serde_json` itself does).
    pub fn to_value(&self) -> Value {
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Number(n) => Value::Number(n.clone()),
            NodeKind::String(s) => Value::String(s.clone()),
            NodeKind::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            NodeKind::Object(members) => {
                let mut map = Map::with_capacity(members.len());
                for m in members {
                    map.insert(m.key.clone(), m.value.to_value());
                }
                Value::Object(map)
            }
        }
    }

    /// RFC 6901 JSON pointer lookup (`""` is the root, `"/0/parameters/a~1b"` descends),
    /// so diagnostics found on the plain value can be mapped back to a position.
    pub fn pointer(&self, ptr: &str) -> Option<&Node> {
        if ptr.is_empty() {
            return Some(self);
        }
        let rest = ptr.strip_prefix('/')?;
        let mut node = self;
        for raw in rest.split('/') {
            let token = unescape_pointer_token(raw)?;
            node = match &node.kind {
                NodeKind::Object(_) => node.get(&token)?,
                NodeKind::Array(items) => items.get(parse_index(&token)?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The value of an object member by key (the last one if the key is duplicated, like
    /// [`Node::to_value`]); `None` for non-objects.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Object(members) => members
                .iter()
                .rev()
                .find(|m| m.key == key)
                .map(|m| &m.value),
            _ => None,
        }
    }

    /// The object member (key and value) by key, last if duplicated; handy to point at keys.
    pub fn member(&self, key: &str) -> Option<&Member> {
        match &self.kind {
            NodeKind::Object(members) => members.iter().rev().find(|m| m.key == key),
            _ => None,
        }
    }

    /// The string value, if this node is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::String(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the node's JSON type ("object", "string", ...) for messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "boolean",
            NodeKind::Number(_) => "number",
            NodeKind::String(_) => "string",
            NodeKind::Array(_) => "array",
            NodeKind::Object(_) => "object",
        }
    }
}

fn unescape_pointer_token(raw: &str) -> Option<String> {
    if !raw.contains('~') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn parse_index(token: &str) -> Option<usize> {
    let bytes = token.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    token.parse().ok()
}

/// 1-based line and 1-based column (column counted in Unicode chars) of a byte offset.
/// Offsets past the end are clamped and offsets inside a character round down, so any
/// span from a [`JsonError`] can be shown.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src.as_bytes()[..offset];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = 1 + src[line_start..offset].chars().count();
    (line, col)
}

/// Escapes one JSON-pointer reference token (`~` -> `~0`, `/` -> `~1`), for building
/// pointers to members whose keys contain those characters.
pub fn escape_pointer_token(s: &str) -> String {
    if !s.contains(['~', '/']) {
        return s.to_owned();
    }
    s.replace('~', "~0").replace('/', "~1")
}

/// For a String node, maps a byte offset inside the *decoded* string value to the byte offset
/// in the source file (accounting for the opening quote and escapes like \" \\ \n \u00e9 and
/// surrogate pairs). An offset equal to the decoded length maps to the closing quote.
///
/// This is how a template error found at some offset of a decoded string is pointed at
/// in the file. An offset falling inside the decoded bytes of an escape maps to the
/// escape's backslash; offsets past the end map to the closing quote.
pub fn string_source_offset(src: &str, string_span: Span, decoded_offset: usize) -> usize {
    let b = src.as_bytes();
    let end = string_span.end.min(b.len());
    let close = end.saturating_sub(1).max(string_span.start);
    let mut pos = string_span.start + 1;
    let mut decoded = 0usize;
    while pos < close {
        if decoded >= decoded_offset {
            return pos;
        }
        let Some(&c) = b.get(pos) else { break };
        if c != b'\\' {
            // Plain byte: one source byte per decoded byte.
            pos += 1;
            decoded += 1;
            continue;
        }
        let (src_len, dec_len) = match b.get(pos + 1) {
            Some(b'u') => {
                let hi = b.get(pos + 2..pos + 6).and_then(hex4);
                match hi {
                    Some(h) if (0xD800..0xDC00).contains(&h) => {
                        let lo = if b.get(pos + 6) == Some(&b'\\') && b.get(pos + 7) == Some(&b'u')
                        {
                            b.get(pos + 8..pos + 12).and_then(hex4)
                        } else {
                            None
                        };
                        match lo {
                            Some(l) if (0xDC00..0xE000).contains(&l) => (12, 4),
                            _ => (6, 3),
                        }
                    }
                    Some(h) => {
                        let n = char::from_u32(h).map_or(3, char::len_utf8);
                        (6, n)
                    }
                    None => (2, 1),
                }
            }
            Some(_) => (2, 1),
            None => (1, 1),
        };
        if decoded + dec_len > decoded_offset {
            return pos;
        }
        pos += src_len;
        decoded += dec_len;
    }
    close
}

/// Renders a character for a message: printable as is, control characters escaped.
fn show_char(c: char) -> String {
    if c.is_control() || c == '\u{feff}' {
        c.escape_debug().to_string()
    } else {
        c.to_string()
    }
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    if bytes.len() != 4 {
        return None;
    }
    let mut v = 0u32;
    for &c in bytes {
        let d = (c as char).to_digit(16)?;
        v = v * 16 + d;
    }
    Some(v)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// True if any of the eight bytes is `"`, `\` or a control character (< 0x20).
#[inline]
fn needs_attention(word: u64) -> bool {
    let quote = word ^ (LO * b'"' as u64);
    let backslash = word ^ (LO * b'\\' as u64);
    let has_zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let below_0x20 = word.wrapping_sub(LO * 0x20) & !word & HI;
    (has_zero(quote) | has_zero(backslash) | below_0x20) != 0
}

/// What the parser builds from what it reads: positioned nodes ([`Node`]) for
/// diagnostics, or plain values for the loader's common path (no tree to take apart).
trait Sink {
    /// A value built.
    type Out;
    /// An object's members while it is open.
    type Members: Default;
    /// A scalar (null, boolean, number, string).
    fn leaf(&mut self, n: Node) -> Self::Out;
    /// A closed array (exact capacity).
    fn array(&mut self, items: Vec<Self::Out>, span: Span) -> Self::Out;
    /// Adds a member to an open object.
    fn member(&mut self, ms: &mut Self::Members, key: String, key_span: Span, v: Self::Out);
    /// A closed object.
    fn object(&mut self, ms: Self::Members, span: Span) -> Self::Out;
}

/// Builds [`Node`]s.
struct Nodes;

impl Sink for Nodes {
    type Out = Node;
    type Members = Vec<Member>;

    fn leaf(&mut self, n: Node) -> Node {
        n
    }

    fn array(&mut self, items: Vec<Node>, span: Span) -> Node {
        Node {
            span,
            kind: NodeKind::Array(items),
        }
    }

    fn member(&mut self, ms: &mut Vec<Member>, key: String, key_span: Span, value: Node) {
        ms.push(Member {
            key,
            key_span,
            value,
        });
    }

    fn object(&mut self, mut ms: Vec<Member>, span: Span) -> Node {
        // Exact capacity: a flow holds tens of thousands of small objects, and doubling
        // growth leaves most of their slots empty.
        ms.shrink_to_fit();
        Node {
            span,
            kind: NodeKind::Object(ms),
        }
    }
}

/// Builds plain [`Value`]s (as [`Node::to_value`] would), noting whether an object held
/// a key twice.
#[derive(Default)]
struct Values {
    duplicates: bool,
}

impl Sink for Values {
    type Out = Value;
    type Members = Vec<(String, Value)>;

    fn leaf(&mut self, n: Node) -> Value {
        match n.kind {
            NodeKind::Bool(b) => Value::Bool(b),
            NodeKind::Number(x) => Value::Number(x),
            NodeKind::String(s) => Value::String(s),
            // Containers never come as leaves.
            NodeKind::Null | NodeKind::Array(_) | NodeKind::Object(_) => Value::Null,
        }
    }

    fn array(&mut self, items: Vec<Value>, _: Span) -> Value {
        Value::Array(items)
    }

    fn member(&mut self, ms: &mut Self::Members, key: String, _: Span, v: Value) {
        ms.push((key, v));
    }

    fn object(&mut self, ms: Self::Members, _: Span) -> Value {
        let mut map = Map::with_capacity(ms.len());
        for (k, v) in ms {
            self.duplicates |= map.insert(k, v).is_some();
        }
        Value::Object(map)
    }
}

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    depth: usize,
}

enum Container {
    Array,
    Object,
}

/// An open array or object on the parser's explicit stack.
struct Frame<S: Sink> {
    start: usize,
    kind: Container,
    items: Vec<S::Out>,
    members: S::Members,
    key: Option<(String, Span)>,
}

impl<'a> Parser<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The character starting at `at` and its span (a 1-byte span if `at` is not on a
    /// character boundary, which the parser never produces, or an empty span at the end).
    fn char_at(&self, at: usize) -> (char, Span) {
        match self.src.get(at..).and_then(|s| s.chars().next()) {
            Some(c) => (c, Span::new(at, at + c.len_utf8())),
            None => ('\u{fffd}', Span::new(at, (at + 1).min(self.b.len()))),
        }
    }

    /// Where to point for "unexpected end of input": just after the last non-blank byte,
    /// so the caret sits where the author stopped typing.
    fn eof_error(&self, expected: &str) -> JsonError {
        let mut end = self.b.len();
        while end > 0 && matches!(self.b[end - 1], b' ' | b'\n' | b'\r' | b'\t') {
            end -= 1;
        }
        JsonError::new(
            format!("unexpected end of input: expected {expected}"),
            Span::new(end, end),
        )
    }

    /// If a `//` or `/* */` comment starts at the current position, the error for it.
    fn comment_error(&self) -> Option<JsonError> {
        if self.peek() != Some(b'/') {
            return None;
        }
        let start = self.pos;
        let end = match self.b.get(start + 1) {
            Some(b'/') => self.b[start..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(self.b.len(), |i| start + i),
            Some(b'*') => self.b[start + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(self.b.len(), |i| start + 2 + i + 2),
            _ => return None,
        };
        // Trim a trailing `\r` of a line comment so the span stays on one line.
        let end = if end > start && self.b.get(end - 1) == Some(&b'\r') {
            end - 1
        } else {
            end
        };
        Some(JsonError::new(
            "comments are not allowed in JSON",
            Span::new(start, end),
        ))
    }

    /// Error for an unexpected character at the current position, with a comment check.
    fn unexpected(&self, what: &str) -> JsonError {
        if self.pos >= self.b.len() {
            return self.eof_error(what);
        }
        if let Some(e) = self.comment_error() {
            return e;
        }
        let (c, span) = self.char_at(self.pos);
        JsonError::new(format!("expected {what}, found `{}`", show_char(c)), span)
    }

    /// The identifier-like word (ASCII letters, digits, `_`, `$`) starting at `start`.
    fn word_end(&self, start: usize) -> usize {
        let mut end = start;
        while let Some(&c) = self.b.get(end) {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' {
                end += 1;
            } else {
                break;
            }
        }
        end
    }

    fn parse_value(&mut self) -> Result<Node, JsonError> {
        self.parse_into(&mut Nodes)
    }

    /// Parses the value at the current position into `sink`'s form.
    fn parse_into<S: Sink>(&mut self, sink: &mut S) -> Result<S::Out, JsonError> {
        let Some(c) = self.peek() else {
            return Err(self.eof_error("a JSON value"));
        };
        match c {
            b'"' => {
                let start = self.pos;
                let s = self.parse_string()?;
                Ok(sink.leaf(Node {
                    span: Span::new(start, self.pos),
                    kind: NodeKind::String(s),
                }))
            }
            b'{' | b'[' => self.parse_container(sink),
            b'-' | b'0'..=b'9' => self.parse_number().map(|n| sink.leaf(n)),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'$' => self.parse_word().map(|n| sink.leaf(n)),
            b'\'' => Err(JsonError::new(
                "strings must use double quotes, found `'`",
                Span::new(self.pos, self.pos + 1),
            )),
            b'+' => Err(JsonError::new(
                "numbers must not start with `+`",
                Span::new(self.pos, self.pos + 1),
            )),
            b'.' if matches!(self.b.get(self.pos + 1), Some(b'0'..=b'9')) => Err(JsonError::new(
                "numbers need a digit before the `.` (write `0.5`, not `.5`)",
                Span::new(self.pos, self.pos + 1),
            )),
            _ => Err(self.unexpected("a JSON value")),
        }
    }

    fn parse_word(&mut self) -> Result<Node, JsonError> {
        let start = self.pos;
        let end = self.word_end(start);
        let word = self.src.get(start..end).unwrap_or("");
        let span = Span::new(start, end);
        let kind = match word {
            "true" => NodeKind::Bool(true),
            "false" => NodeKind::Bool(false),
            "null" => NodeKind::Null,
            _ => return Err(word_error(word, span)),
        };
        self.pos = end;
        Ok(Node { span, kind })
    }

    fn parse_number(&mut self) -> Result<Node, JsonError> {
        let start = self.pos;
        let b = self.b;
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        if negative {
            i += 1;
            match b.get(i) {
                Some(b'0'..=b'9') => {}
                Some(c) if c.is_ascii_alphabetic() => {
                    let end = self.word_end(i);
                    let word = self.src.get(start..end).unwrap_or("-");
                    return Err(word_error(word, Span::new(start, end)));
                }
                _ => {
                    self.pos = i;
                    return Err(self.unexpected("a digit after `-`"));
                }
            }
        }
        let int_start = i;
        if b.get(i) == Some(&b'0') {
            i += 1;
            if matches!(b.get(i), Some(b'0'..=b'9')) {
                let mut end = i;
                while matches!(b.get(end), Some(b'0'..=b'9')) {
                    end += 1;
                }
                return Err(JsonError::new(
                    "numbers must not have leading zeros",
                    Span::new(start, end),
                ));
            }
        } else {
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
        }
        let int_end = i;
        let mut simple = true;
        if b.get(i) == Some(&b'.') {
            simple = false;
            i += 1;
            if !matches!(b.get(i), Some(b'0'..=b'9')) {
                self.pos = i;
                return Err(self.unexpected("a digit after the decimal point"));
            }
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            simple = false;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !matches!(b.get(i), Some(b'0'..=b'9')) {
                self.pos = i;
                return Err(self.unexpected("a digit in the exponent"));
            }
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
        }
        let span = Span::new(start, i);
        self.pos = i;
        // Fast path for short integers; everything else goes through serde_json so the
        // result is bit-for-bit what serde_json would produce.
        if simple && int_end - int_start <= 18 {
            let mut v: u64 = 0;
            for &d in &b[int_start..int_end] {
                v = v * 10 + u64::from(d - b'0');
            }
            if !negative {
                return Ok(Node {
                    span,
                    kind: NodeKind::Number(Number::from(v)),
                });
            }
            if v != 0 {
                // v < 10^18 < i64::MAX, so the cast and negation are exact.
                return Ok(Node {
                    span,
                    kind: NodeKind::Number(Number::from(-(v as i64))),
                });
            }
        }
        let text = self.src.get(start..i).unwrap_or("");
        match serde_json::from_str::<Number>(text) {
            Ok(n) => Ok(Node {
                span,
                kind: NodeKind::Number(n),
            }),
            Err(_) => Err(JsonError::new("number out of range", span)),
        }
    }

    /// Parses a string starting at the opening quote; leaves `pos` after the closing quote.
    fn parse_string(&mut self) -> Result<String, JsonError> {
        let open = self.pos;
        let b = self.b;
        let mut i = open + 1;
        let mut out: Option<String> = None;
        let mut seg_start = i;
        loop {
            // Skip plain bytes eight at a time.
            while let Some(chunk) = b.get(i..i + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                if needs_attention(u64::from_le_bytes(word)) {
                    break;
                }
                i += 8;
            }
            let Some(&c) = b.get(i) else {
                return Err(JsonError::new(
                    "unterminated string",
                    Span::new(open, b.len()),
                ));
            };
            match c {
                b'"' => {
                    let tail = self.src.get(seg_start..i).unwrap_or("");
                    self.pos = i + 1;
                    return Ok(match out {
                        None => tail.to_owned(),
                        Some(mut s) => {
                            s.push_str(tail);
                            s
                        }
                    });
                }
                b'\\' => {
                    let s = out.get_or_insert_with(|| String::with_capacity(i - open + 16));
                    s.push_str(self.src.get(seg_start..i).unwrap_or(""));
                    i = self.parse_escape(i, s, open)?;
                    seg_start = i;
                }
                b'\n' | b'\r' => {
                    return Err(JsonError::new(
                        "unterminated string (a line break cannot appear inside a string; use \\n)",
                        Span::new(open, i),
                    ));
                }
                0..=0x1f => {
                    return Err(JsonError::new(
                        "unescaped control character in string (use \\n, \\t, ...)",
                        Span::new(i, i + 1),
                    ));
                }
                _ => i += 1,
            }
        }
    }

    /// Decodes the escape whose backslash is at `at` into `out`; returns the offset after it.
    fn parse_escape(&self, at: usize, out: &mut String, open: usize) -> Result<usize, JsonError> {
        let b = self.b;
        let Some(&e) = b.get(at + 1) else {
            return Err(JsonError::new(
                "unterminated string",
                Span::new(open, b.len()),
            ));
        };
        let simple = match e {
            b'"' => Some('"'),
            b'\\' => Some('\\'),
            b'/' => Some('/'),
            b'b' => Some('\u{8}'),
            b'f' => Some('\u{c}'),
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            return Ok(at + 2);
        }
        if e != b'u' {
            let (c, span) = self.char_at(at + 1);
            return Err(JsonError::new(
                format!("invalid escape `\\{}` in string", show_char(c)),
                Span::new(at, span.end),
            ));
        }
        let hi = self.hex_escape(at)?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            let lo = if b.get(at + 6) == Some(&b'\\') && b.get(at + 7) == Some(&b'u') {
                b.get(at + 8..at + 12).and_then(hex4)
            } else {
                None
            };
            match lo {
                Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                    let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                    return Ok(at + 12);
                }
                _ => {
                    return Err(JsonError::new(
                        format!(
                            "lone surrogate `{}` in string (expected a `\\uDC00`-`\\uDFFF` escape after it)",
                            self.src.get(at..at + 6).unwrap_or("\\u")
                        ),
                        Span::new(at, at + 6),
                    ));
                }
            }
        } else if (0xDC00..0xE000).contains(&hi) {
            return Err(JsonError::new(
                format!(
                    "lone surrogate `{}` in string (a low surrogate must follow a high one)",
                    self.src.get(at..at + 6).unwrap_or("\\u")
                ),
                Span::new(at, at + 6),
            ));
        } else {
            hi
        };
        out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
        Ok(at + 6)
    }

    /// Reads the four hex digits of the `\u` escape whose backslash is at `at`.
    fn hex_escape(&self, at: usize) -> Result<u32, JsonError> {
        let b = self.b;
        let mut end = at + 2;
        while end < at + 6 && b.get(end).is_some_and(u8::is_ascii_hexdigit) {
            end += 1;
        }
        if end == at + 6 {
            if let Some(v) = b.get(at + 2..at + 6).and_then(hex4) {
                return Ok(v);
            }
        }
        // Include the offending character (if any, and not the closing quote) in the span.
        let span_end = match self.src.get(end..).and_then(|s| s.chars().next()) {
            Some(c) if c != '"' && !c.is_control() => end + c.len_utf8(),
            _ => end,
        };
        Err(JsonError::new(
            "invalid `\\u` escape in string: expected 4 hex digits",
            Span::new(at, span_end),
        ))
    }

    fn parse_container<S: Sink>(&mut self, sink: &mut S) -> Result<S::Out, JsonError> {
        // An explicit stack of open containers keeps recursion out of the parser entirely.
        let mut stack: Vec<Frame<S>> = Vec::new();
        // Start with the container at the current position.
        let mut pending: Option<S::Out> = None;
        'outer: loop {
            if pending.is_none() {
                // We are at `{` or `[`: open it.
                let start = self.pos;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(JsonError::new(
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                        Span::new(start, start + 1),
                    ));
                }
                let is_obj = self.b.get(start) == Some(&b'{');
                self.pos += 1;
                self.skip_ws();
                if is_obj {
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        self.depth -= 1;
                        pending =
                            Some(sink.object(S::Members::default(), Span::new(start, self.pos)));
                    } else {
                        let key = self.parse_key(None)?;
                        stack.push(Frame {
                            start,
                            kind: Container::Object,
                            items: Vec::new(),
                            members: S::Members::default(),
                            key: Some(key),
                        });
                    }
                } else if self.peek() == Some(b']') {
                    self.pos += 1;
                    self.depth -= 1;
                    pending = Some(sink.array(Vec::new(), Span::new(start, self.pos)));
                } else {
                    stack.push(Frame {
                        start,
                        kind: Container::Array,
                        items: Vec::new(),
                        members: S::Members::default(),
                        key: None,
                    });
                }
                if pending.is_none() {
                    // Parse values until one needs a new container.
                    match self.next_scalar_or_open(sink)? {
                        Some(n) => pending = Some(n),
                        None => continue 'outer,
                    }
                }
            }
            // Attach `pending` to the innermost open container, then read separators.
            loop {
                let Some(value) = pending.take() else {
                    continue 'outer;
                };
                let Some(top) = stack.last_mut() else {
                    return Ok(value);
                };
                match top.kind {
                    Container::Array => top.items.push(value),
                    Container::Object => {
                        let (key, key_span) = top.key.take().unwrap_or_default();
                        sink.member(&mut top.members, key, key_span, value);
                    }
                }
                let is_obj = matches!(top.kind, Container::Object);
                self.skip_ws();
                let close = if is_obj { b'}' } else { b']' };
                match self.peek() {
                    Some(b',') => {
                        let comma = self.pos;
                        self.pos += 1;
                        self.skip_ws();
                        if self.peek() == Some(close) {
                            return Err(JsonError::new(
                                format!("trailing comma before `{}`", close as char),
                                Span::new(comma, comma + 1),
                            ));
                        }
                        if is_obj {
                            let key = self.parse_key(Some(comma))?;
                            if let Some(top) = stack.last_mut() {
                                top.key = Some(key);
                            }
                        } else if self.pos >= self.b.len() {
                            return Err(self.eof_error("a JSON value"));
                        }
                        match self.next_scalar_or_open(sink)? {
                            Some(n) => pending = Some(n),
                            None => continue 'outer,
                        }
                    }
                    Some(c) if c == close => {
                        self.pos += 1;
                        self.depth -= 1;
                        let Some(mut frame) = stack.pop() else {
                            continue 'outer;
                        };
                        let span = Span::new(frame.start, self.pos);
                        pending = Some(match frame.kind {
                            Container::Array => {
                                // Exact capacity: a flow holds tens of thousands of small
                                // containers, and doubling growth leaves slots empty.
                                frame.items.shrink_to_fit();
                                sink.array(frame.items, span)
                            }
                            Container::Object => sink.object(frame.members, span),
                        });
                    }
                    None => {
                        return Err(self.eof_error(if is_obj {
                            "`,` or `}`"
                        } else {
                            "`,` or `]`"
                        }))
                    }
                    Some(_) => {
                        return Err(self.unexpected(if is_obj {
                            "`,` or `}` after object member"
                        } else {
                            "`,` or `]` after array element"
                        }))
                    }
                }
            }
        }
    }

    /// After a `[`, `,` or `:`: parses a scalar value, or returns `None` when the next
    /// value opens a container (left at the current position for the caller to open).
    fn next_scalar_or_open<S: Sink>(&mut self, sink: &mut S) -> Result<Option<S::Out>, JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(b'{' | b'[') => Ok(None),
            _ => self.parse_into(sink).map(Some),
        }
    }

    /// Parses `"key" :` at the current position (after `{` or after the `,` at `comma`).
    fn parse_key(&mut self, comma: Option<usize>) -> Result<(String, Span), JsonError> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {}
            None => {
                return Err(self.eof_error(if comma.is_some() {
                    "an object key"
                } else {
                    "an object key or `}`"
                }))
            }
            Some(b'\'') => {
                return Err(JsonError::new(
                    "strings must use double quotes, found `'`",
                    Span::new(start, start + 1),
                ))
            }
            Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' => {
                let end = self.word_end(start);
                return Err(JsonError::new(
                    format!(
                        "object keys must be double-quoted strings, found `{}`",
                        c as char
                    ),
                    Span::new(start, end),
                ));
            }
            Some(_) => {
                return Err(self.unexpected(if comma.is_some() {
                    "an object key"
                } else {
                    "an object key or `}`"
                }))
            }
        }
        let key = self.parse_string()?;
        let key_span = Span::new(start, self.pos);
        self.skip_ws();
        match self.peek() {
            Some(b':') => {
                self.pos += 1;
                self.skip_ws();
                Ok((key, key_span))
            }
            None => Err(self.eof_error("`:`")),
            Some(_) => Err(self.unexpected("`:` after object key")),
        }
    }
}

/// The error for a bare word in value position, with a hint for the usual suspects.
fn word_error(word: &str, span: Span) -> JsonError {
    let lower = word.to_ascii_lowercase();
    let hint = match lower.trim_start_matches('-') {
        "true" | "yes" | "on" => "did you mean `true`?".to_owned(),
        "false" | "no" | "off" => "did you mean `false`?".to_owned(),
        "null" | "none" | "nil" | "undefined" => "did you mean `null`?".to_owned(),
        "nan" | "infinity" | "inf" => {
            "JSON has no NaN or infinity; use `null` or a string".to_owned()
        }
        _ => "strings must be double-quoted".to_owned(),
    };
    JsonError::new(format!("`{word}` is not a JSON value ({hint})"), span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> JsonError {
        match parse(src) {
            Ok(n) => panic!("expected an error for {src:?}, got {n:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn spans_of_values_and_keys() {
        let src = r#" {"a": [1, "x", true], "b\"c": null} "#;
        let root = parse(src).unwrap();
        assert_eq!(&src[root.span.start..root.span.end], &src[1..src.len() - 1]);
        let NodeKind::Object(members) = &root.kind else {
            panic!("object expected")
        };
        assert_eq!(
            &src[members[0].key_span.start..members[0].key_span.end],
            "\"a\""
        );
        assert_eq!(
            &src[members[1].key_span.start..members[1].key_span.end],
            r#""b\"c""#
        );
        assert_eq!(members[1].key, "b\"c");
        let a = root.get("a").unwrap();
        assert_eq!(&src[a.span.start..a.span.end], r#"[1, "x", true]"#);
        let x = root.pointer("/a/1").unwrap();
        assert_eq!(&src[x.span.start..x.span.end], "\"x\"");
        assert_eq!(x.as_str(), Some("x"));
    }

    #[test]
    fn pointer_lookup() {
        let src = r#"[{"parameters": {"a/b": 1, "m~n": [true], "": 2}}]"#;
        let root = parse(src).unwrap();
        assert_eq!(root.pointer("").unwrap().span, root.span);
        assert!(root.pointer("/0/parameters/a~1b").is_some());
        assert!(root.pointer("/0/parameters/m~0n/0").is_some());
        assert!(root.pointer("/0/parameters/").is_some());
        assert!(root.pointer("/00").is_none());
        assert!(root.pointer("/-").is_none());
        assert!(root.pointer("/1").is_none());
        assert!(root.pointer("0").is_none());
        assert!(root.pointer("/0/parameters/a~2b").is_none());
        assert!(root.pointer("/0/parameters/a~1b/x").is_none());
        let key = format!("/0/parameters/{}", escape_pointer_token("m~n"));
        assert!(root.pointer(&key).is_some());
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let root = parse(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        assert_eq!(root.get("a").unwrap().to_value(), serde_json::json!(3));
        let v = root.to_value();
        assert_eq!(
            v,
            serde_json::from_str::<Value>(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap()
        );
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn line_col_counts_chars() {
        let src = "ab\ncé\u{1F600}x\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 2), (1, 3));
        assert_eq!(line_col(src, 3), (2, 1));
        let x = src.find('x').unwrap();
        assert_eq!(line_col(src, x), (2, 4));
        assert_eq!(line_col(src, src.len()), (3, 1));
        assert_eq!(line_col(src, 1000), (3, 1));
        // Inside a multibyte char rounds down.
        assert_eq!(line_col(src, 5), (2, 2));
    }

    #[test]
    fn escape_tokens() {
        assert_eq!(escape_pointer_token("a/b~c"), "a~1b~0c");
        assert_eq!(escape_pointer_token("plain"), "plain");
        assert_eq!(unescape_pointer_token("a~1b~0c").as_deref(), Some("a/b~c"));
        assert_eq!(unescape_pointer_token("~01").as_deref(), Some("~1"));
    }

    #[test]
    fn string_offsets_with_escapes_and_multibyte() {
        let src = r#"  "a\"é\n\u00e9\ud83d\ude00z<? x ?>" "#;
        let node = parse(src).unwrap();
        let s = node.as_str().unwrap().to_owned();
        assert_eq!(s, "a\"é\né\u{1F600}z<? x ?>");
        let span = node.span;
        // Every char boundary of the decoded string maps to the source of that char.
        let expect = [
            ('a', "a"),
            ('"', "\\\""),
            ('é', "é"),
            ('\n', "\\n"),
            ('é', "\\u00e9"),
            ('\u{1F600}', "\\ud83d\\ude00"),
            ('z', "z"),
            ('<', "<"),
        ];
        let mut dec = 0;
        for (c, source_text) in expect {
            let off = string_source_offset(src, span, dec);
            assert!(
                src[off..].starts_with(source_text),
                "decoded {dec} ({c:?}) mapped to {off}: {:?}",
                &src[off..]
            );
            dec += c.len_utf8();
        }
        let end = string_source_offset(src, span, s.len());
        assert_eq!(end, span.end - 1);
        assert_eq!(&src[end..end + 1], "\"");
        assert_eq!(string_source_offset(src, span, s.len() + 10), span.end - 1);
        // Inside the bytes of a decoded multibyte escape: points at the backslash.
        let smiley = s.find('\u{1F600}').unwrap();
        let off = string_source_offset(src, span, smiley + 2);
        assert!(src[off..].starts_with("\\ud83d"));
        // Garbage spans do not panic.
        let _ = string_source_offset(src, Span::new(100, 200), 3);
        let _ = string_source_offset(src, Span::new(5, 2), 3);
        let _ = string_source_offset("", Span::default(), 0);
    }

    #[test]
    fn numbers_match_serde_json() {
        for n in [
            "0",
            "-0",
            "1",
            "-1",
            "123456789012345678",
            "-123456789012345678",
            "1234567890123456789",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1.5",
            "-0.0",
            "1e10",
            "1E-10",
            "1e+2",
            "0.1e1",
            "123456789012345678901234567890",
            "2.2250738585072014e-308",
            "1e-400",
        ] {
            let ours = parse(n).unwrap().to_value();
            let theirs: Value = serde_json::from_str(n).unwrap();
            assert_eq!(ours, theirs, "{n}");
            assert_eq!(ours.to_string(), theirs.to_string(), "{n}");
        }
        assert_eq!(err("1e400").message, "number out of range");
        assert_eq!(err("-1e400").span, Span::new(0, 6));
    }

    #[test]
    fn round_trip_equals_serde_json() {
        let docs = [
            "null",
            "true",
            " false ",
            "\u{feff}{\"bom\": 1}",
            "\"\"",
            r#""\u0000\u001f\b\f\/\\\"""#,
            r#"{"a": {"b": {"c": [[], {}, [{}], "x"]}}}"#,
            r#"[1, -2.5e3, "é😀", "\ud83d\ude00", {"k": null}]"#,
            r#"{"z": 1, "a": 2, "m": 3}"#,
            r#"[{"type": "set_variable", "parameters": {"name": "x", "value": "<? contact.name ?>"}}]"#,
            "[\n\t1 ,\r\n 2\n]",
            r#""a longer string that spans more than eight bytes with \"escapes\" inside""#,
        ];
        for d in docs {
            let ours = parse(d).unwrap_or_else(|e| panic!("{d}: {e}")).to_value();
            let theirs: Value = serde_json::from_str(d.trim_start_matches('\u{feff}')).unwrap();
            assert_eq!(ours, theirs, "{d}");
        }
    }

    #[test]
    fn messages() {
        assert_eq!(err("[1,]").message, "trailing comma before `]`");
        assert_eq!(err("[1,]").span, Span::new(2, 3));
        assert_eq!(err("{\"a\":1,}").message, "trailing comma before `}`");
        assert_eq!(
            err("[1 \"a\"]").message,
            "expected `,` or `]` after array element, found `\"`"
        );
        assert_eq!(
            err("{name: 1}").message,
            "object keys must be double-quoted strings, found `n`"
        );
        assert_eq!(err("{name: 1}").span, Span::new(1, 5));
        assert_eq!(
            err("['a']").message,
            "strings must use double quotes, found `'`"
        );
        assert_eq!(err("// c\n{}").message, "comments are not allowed in JSON");
        assert_eq!(err("// c\n{}").span, Span::new(0, 4));
        assert_eq!(err("{} /* x */").span, Span::new(3, 10));
        assert_eq!(err("  \"abc").message, "unterminated string");
        assert_eq!(err("  \"abc").span, Span::new(2, 6));
        assert_eq!(
            err("\"a\tb\"").message,
            "unescaped control character in string (use \\n, \\t, ...)"
        );
        assert_eq!(err(r#""\q""#).message, "invalid escape `\\q` in string");
        assert_eq!(err(r#""\q""#).span, Span::new(1, 3));
        assert_eq!(err("").message, "empty document: expected a JSON value");
        assert_eq!(err(" \n ").message, "empty document: expected a JSON value");
        assert_eq!(
            err("{} x").message,
            "unexpected `x` after the end of the JSON value"
        );
        assert_eq!(
            err("{\"a\": 1").message,
            "unexpected end of input: expected `,` or `}`"
        );
        assert_eq!(err("{\"a\": 1\n\n").span, Span::new(7, 7));
        assert_eq!(
            err("{").message,
            "unexpected end of input: expected an object key or `}`"
        );
        assert_eq!(
            err("[").message,
            "unexpected end of input: expected a JSON value"
        );
        assert_eq!(
            err("True").message,
            "`True` is not a JSON value (did you mean `true`?)"
        );
        assert!(err("NaN").message.contains("NaN"));
        assert!(err("[-Infinity]")
            .message
            .starts_with("`-Infinity` is not a JSON value"));
        assert_eq!(err("[-Infinity]").span, Span::new(1, 10));
        assert!(err("undefined").message.contains("`null`"));
        assert_eq!(err("01").message, "numbers must not have leading zeros");
        assert_eq!(err("+1").message, "numbers must not start with `+`");
        assert!(err(".5").message.contains("`0.5`"));
        assert_eq!(
            err("1.").message,
            "unexpected end of input: expected a digit after the decimal point"
        );
        assert_eq!(
            err("[1.]").message,
            "expected a digit after the decimal point, found `]`"
        );
        assert_eq!(
            err("1e").message,
            "unexpected end of input: expected a digit in the exponent"
        );
        assert_eq!(
            err("-").message,
            "unexpected end of input: expected a digit after `-`"
        );
        assert!(err(r#""\ud83d""#)
            .message
            .starts_with("lone surrogate `\\ud83d`"));
        assert!(err(r#""\ude00x""#)
            .message
            .starts_with("lone surrogate `\\ude00`"));
        assert_eq!(err(r#""\ud83d\u0041""#).span, Span::new(1, 7));
        assert_eq!(
            err(r#""\u12G4""#).message,
            "invalid `\\u` escape in string: expected 4 hex digits"
        );
        assert_eq!(err(r#""\u12G4""#).span, Span::new(1, 6));
        assert_eq!(
            err("{\"a\" 1}").message,
            "expected `:` after object key, found `1`"
        );
        assert_eq!(
            err("[1}").message,
            "expected `,` or `]` after array element, found `}`"
        );
        assert_eq!(err("{\"a\":}").message, "expected a JSON value, found `}`");
        assert_eq!(
            err("[\u{1}]").message,
            "expected a JSON value, found `\\u{1}`"
        );
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = err(&deep);
        assert_eq!(e.message, "nesting deeper than 128 levels");
        assert_eq!(e.span, Span::new(MAX_DEPTH, MAX_DEPTH + 1));
        // Very deep input fails quickly and without a stack overflow.
        let huge = "[{\"a\":".repeat(100_000);
        assert_eq!(err(&huge).message, "nesting deeper than 128 levels");
    }

    #[test]
    fn string_scanner_finds_specials_in_every_lane() {
        for lane in 0..16 {
            let body = "x".repeat(lane);
            let src = format!("\"{body}\\n{body}\"");
            assert_eq!(
                parse(&src).unwrap().as_str().unwrap(),
                format!("{body}\n{body}")
            );
            let src = format!("\"{body}\u{1}{body}\"");
            assert_eq!(err(&src).span, Span::new(1 + lane, 2 + lane));
            let src = format!("\"{body}é{body}\"");
            assert_eq!(
                parse(&src).unwrap().as_str().unwrap(),
                format!("{body}é{body}")
            );
        }
    }
}
