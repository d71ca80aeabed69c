//! Errors of the template language: where (a byte span inside the string value) and what.

use std::ops::Range;

/// What kind of problem a template has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TemplateErrorKind {
    /// The text is not a valid expression (found at load time).
    Syntax,
    /// An unknown variable, method, function or filter, or a wrong argument count
    /// (found at load time).
    Unknown,
    /// A path read found nothing, in strict mode (run time).
    Undefined,
    /// The expression failed while evaluating (run time): a type error, bad JSON, …
    Eval,
    /// Evaluation hit a bound: fuel, nesting depth or output size (run time).
    Limit,
}

/// A template problem, located inside the JSON string value that holds it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// The kind of problem.
    pub kind: TemplateErrorKind,
    /// A sentence for the flow author.
    pub message: String,
    /// Byte range inside the (decoded) string value.
    pub span: Range<usize>,
    /// A hint, when there is a likely fix.
    pub help: Option<String>,
}

impl TemplateError {
    /// A new error.
    pub fn new(kind: TemplateErrorKind, message: impl Into<String>, span: Range<usize>) -> Self {
        TemplateError {
            kind,
            message: message.into(),
            span,
            help: None,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Shifts the span by `offset` bytes (from segment-relative to string-relative).
    pub(crate) fn shifted(mut self, offset: usize) -> Self {
        self.span = self.span.start + offset..self.span.end + offset;
        self
    }
}

/// The closest candidate to `name` by edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        // Optimal string alignment: a swap of neighbours (`titel` → `title`) is one edit.
        let d = strsim::osa_distance(&name.to_lowercase(), &c.to_lowercase());
        let limit = (c.chars().count() / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}
