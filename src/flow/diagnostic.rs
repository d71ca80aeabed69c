//! A problem found while loading or checking a flow, with everything needed to show
//! where it is: file, line:column, JSON pointer, and the column inside a string.

use std::sync::Arc;

use serde::Serialize;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The flow cannot run.
    Error,
    /// The flow runs, but probably not as meant.
    Warning,
}

/// One located problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable code, e.g. `template::syntax`, `flow::unknown_action`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The file (or name given to the source).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// JSON pointer of the value concerned (`/0/parameters/custom_fields/1/value`).
    pub pointer: String,
    /// For template problems: 1-based column inside the string value, in characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_column: Option<usize>,
    /// Byte offset and length in the file.
    #[serde(skip)]
    pub span: (usize, usize),
}

impl Diagnostic {
    /// `file:line:column: severity[code]: message (at pointer)` on one line.
    pub fn one_line(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut s = format!(
            "{}:{}:{}: {sev}[{}]: {}",
            self.file, self.line, self.column, self.code, self.message
        );
        if !self.pointer.is_empty() {
            s.push_str(&format!(" (at {})", self.pointer));
        }
        if let Some(c) = self.string_column {
            s.push_str(&format!(" (column {c} of the string)"));
        }
        s
    }

    /// A miette report of this diagnostic over its source text.
    pub fn report(&self, source: Arc<String>) -> DiagnosticReport {
        DiagnosticReport {
            diag: self.clone(),
            source,
        }
    }
}

/// A [`Diagnostic`] with its source, for miette's graphical rendering.
#[derive(Debug)]
pub struct DiagnosticReport {
    diag: Diagnostic,
    source: Arc<String>,
}

impl std::fmt::Display for DiagnosticReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for DiagnosticReport {}

impl miette::Diagnostic for DiagnosticReport {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(self.diag.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        let mut h = self.diag.help.clone().unwrap_or_default();
        if !self.diag.pointer.is_empty() {
            if !h.is_empty() {
                h.push('\n');
            }
            h.push_str(&format!("at {}", self.diag.pointer));
            if let Some(c) = self.diag.string_column {
                h.push_str(&format!(", column {c} of the string"));
            }
        }
        if h.is_empty() {
            None
        } else {
            Some(Box::new(h))
        }
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(self as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let (start, len) = self.diag.span;
        Some(Box::new(std::iter::once(
            miette::LabeledSpan::new_primary_with_span(
                Some("here".to_string()),
                miette::SourceSpan::from((start.min(self.source.len()), len)),
            ),
        )))
    }
}

impl miette::SourceCode for DiagnosticReport {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let inner =
            self.source
                .as_str()
                .read_span(span, context_lines_before, context_lines_after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.diag.file.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}
