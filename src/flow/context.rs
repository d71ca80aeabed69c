//! The context document (`--context`, the playground's sample context): JSON with
//! positions turned into a [`Store`], a problem placed at its line and column.

use serde_json::Value;

use super::{json, Store};

/// A context document that cannot be used, with where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContextError {
    /// True when the text is not JSON at all (false: JSON, but not a context document).
    pub syntax: bool,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// JSON pointer of the offending value (empty for the whole document or a syntax error).
    pub pointer: String,
    /// What is wrong.
    pub detail: String,
}

impl std::fmt::Display for ContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.syntax {
            write!(f, "invalid context JSON: {}", self.detail)
        } else if self.pointer.is_empty() {
            write!(f, "invalid context: {}", self.detail)
        } else {
            write!(f, "invalid context (at {}): {}", self.pointer, self.detail)
        }
    }
}

/// Parses a context document (`--context`): the store and the document as JSON.
pub fn parse_context(text: &str) -> Result<(Store, Value), ContextError> {
    let node = json::parse(text).map_err(|e| {
        let (line, column) = json::line_col(text, e.span.start);
        ContextError {
            syntax: true,
            line,
            column,
            pointer: String::new(),
            detail: e.message,
        }
    })?;
    let value = node.to_value();
    let store = Store::from_json(&value).map_err(|e| {
        let at = node.pointer(&e.pointer).map_or(0, |n| n.span.start);
        let (line, column) = json::line_col(text, at);
        ContextError {
            syntax: false,
            line,
            column,
            pointer: e.pointer,
            detail: e.message,
        }
    })?;
    Ok((store, value))
}
