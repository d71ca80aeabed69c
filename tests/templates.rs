//! Fixture-driven tests of the template language: one JSON file per topic under
//! `tests/fixtures/templates/`, each a store and a list of template strings; the
//! snapshot shows, for every string, its typed result or its error with a caret.

use std::fmt::Write as _;
use std::sync::Arc;

use transbordo::template::ast::Root;
use transbordo::template::{Scope, Template};

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s.set_omit_expression(true);
    s
}

fn caret(src: &str, span: &std::ops::Range<usize>) -> String {
    let before = src.get(..span.start).unwrap_or(src).chars().count();
    let width = src
        .get(span.clone())
        .map_or(1, |s| s.chars().count().max(1));
    format!(
        "      {src}\n      {}{}",
        " ".repeat(before),
        "^".repeat(width)
    )
}

/// Expands `{"$repeat": [text, n]}` in a fixture store into `text` repeated `n` times,
/// so limit tests need no megabyte fixtures.
fn expand(v: &mut serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Object(m) => {
            if let Some(J::Array(a)) = m.get("$repeat") {
                if let [J::String(text), J::Number(n)] = a.as_slice() {
                    let n = n.as_u64().expect("$repeat count") as usize;
                    *v = J::String(text.repeat(n));
                    return;
                }
            }
            m.values_mut().for_each(expand);
        }
        J::Array(a) => a.iter_mut().for_each(expand),
        _ => {}
    }
}

/// Long results are shown by size and prefix, keeping snapshots readable.
fn shown(v: &serde_json::Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.len() <= 400 {
        return s;
    }
    let prefix: String = s.chars().take(40).collect();
    format!("({} bytes) {prefix}…", s.len())
}

fn run_case(case: &serde_json::Value, strict_default: bool) -> String {
    let mut store = case.get("store").cloned().unwrap_or_default();
    expand(&mut store);
    let strict = case
        .pointer("/$settings/strict")
        .and_then(|v| v.as_bool())
        .unwrap_or(strict_default);
    let roots = Root::ALL
        .iter()
        .map(|r| {
            (
                r.name(),
                Arc::new(
                    store
                        .get(r.name())
                        .cloned()
                        .unwrap_or(serde_json::Value::Null),
                ),
            )
        })
        .collect();
    let scope = Scope::new(roots, strict);
    let mut out = String::new();
    let templates = case
        .get("templates")
        .and_then(|t| t.as_array())
        .cloned()
        .unwrap_or_default();
    for t in templates {
        let src = t.as_str().expect("fixture templates are strings");
        let _ = writeln!(out, "{src}");
        match Template::compile(src) {
            Err(errors) => {
                for e in errors {
                    let _ = writeln!(out, "  !! load error ({:?}): {}", e.kind, e.message);
                    if let Some(h) = &e.help {
                        let _ = writeln!(out, "     help: {h}");
                    }
                    let _ = writeln!(out, "{}", caret(src, &e.span));
                }
            }
            Ok(tpl) => {
                let mut missing = Vec::new();
                match tpl.render(&scope, &mut missing) {
                    Ok(v) => {
                        let _ = writeln!(out, "  => {}", shown(&v));
                    }
                    Err(e) => {
                        let _ = writeln!(out, "  !! run error ({:?}): {}", e.kind, e.message);
                        if let Some(h) = &e.help {
                            let _ = writeln!(out, "     help: {h}");
                        }
                        let _ = writeln!(out, "{}", caret(src, &e.span));
                    }
                }
                for m in missing {
                    let _ = writeln!(
                        out,
                        "  warning: `{}` is undefined (in `{}`)",
                        m.path,
                        m.expression.trim()
                    );
                    let _ = writeln!(out, "{}", caret(src, &m.span));
                }
            }
        }
    }
    out
}

#[test]
fn template_fixtures() {
    let s = settings();
    s.bind(|| {
        insta::glob!("fixtures/templates/*.json", |path| {
            let text = std::fs::read_to_string(path).expect("fixture readable");
            let case: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
            insta::assert_snapshot!(run_case(&case, false));
        });
    });
}
