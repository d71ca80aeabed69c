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
        let d = edit_distance(&name.to_lowercase(), &c.to_lowercase());
        let limit = (c.chars().count() / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut prev2: Vec<usize> = prev.clone();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            // A swap of two neighbours (`titel` → `title`) counts as one edit.
            if i > 0 && j > 0 && *ca == b[j - 1] && a[i - 1] == *cb {
                cur[j + 1] = cur[j + 1].min(prev2[j - 1] + 1);
            }
        }
        prev2 = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}
