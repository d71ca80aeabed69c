//! Diagnostics as a person reads them: miette's report with its source snippet, or the
//! position alone where the line is too long to draw. In `flow`, not the CLI, because
//! the playground shows the same text.

use std::sync::Arc;

use super::{Diagnostic, Severity};

/// `cli::render_human` with the colour choice made by the caller (the playground shows the
/// text exactly as `check` prints it to a file: no colour).
pub fn render_diagnostics(diags: &[Diagnostic], source: &Arc<String>, colour: bool) -> String {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    let theme = if colour {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for d in diags {
        if line_length_at(source, d.span.0) > MAX_SNIPPET_LINE {
            // A minified flow is one long line: miette would draw all of it (and panics
            // past 65,535 columns). Give the position without the snippet.
            plain_diagnostic(&mut out, d);
            continue;
        }
        let report = d.report(source.clone());
        let _ = handler.render_report(&mut out, &report);
        out.push('\n');
    }
    out
}

/// Longest source line shown as a snippet under a diagnostic.
const MAX_SNIPPET_LINE: usize = 2_000;

/// Length in bytes of the line holding byte `at`.
fn line_length_at(src: &str, at: usize) -> usize {
    let b = src.as_bytes();
    let at = at.min(b.len());
    let start = b[..at]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    let end = b[at..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |i| at + i);
    end - start
}

/// A diagnostic as text, with its position but no source snippet.
fn plain_diagnostic(out: &mut String, d: &Diagnostic) {
    use std::fmt::Write as _;
    let mark = if d.severity == Severity::Error {
        "×"
    } else {
        "⚠"
    };
    let _ = writeln!(out, "{}\n\n  {mark} {}", d.code, d.message);
    let _ = write!(out, "   at {}:{}:{}", d.file, d.line, d.column);
    if !d.pointer.is_empty() {
        let _ = write!(out, " ({})", d.pointer);
    }
    out.push('\n');
    if let Some(h) = &d.help {
        let _ = writeln!(out, "  help: {h}");
    }
    out.push('\n');
}
