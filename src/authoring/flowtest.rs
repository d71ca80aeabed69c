//! Flow tests: `*.test.json` / `*.test.toml` files that keep a flow's expected behaviour.
//!
//! ```json
//! { "flow": "handoff.json", "integrations": "integrations.toml",
//!   "cases": [
//!     { "name": "vip goes to the vip skill",
//!       "context": { "contact": {"name": "Ana"}, "context": {"tag": "vip"} },
//!       "expect": { "messages": [{"message": {"type": "text", "text": "Aguarde…"}}] } },
//!     { "name": "the whole dry run", "context": "context.json", "snapshot": true } ] }
//! ```
//!
//! Every case is a dry run (nothing is sent) of the flow with its context. `expect` is
//! matched against the `render` document as a subset ([`super::expect`]); `snapshot: true`
//! compares the whole document with `__snapshots__/<file>/<case>.json` next to the test
//! file, written only when [`TestOptions::update`] is set. Paths in a test file are
//! relative to it. Cases run in parallel.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::expect::{self, Mismatch};
use super::located::Located;
use crate::flow::json::escape_pointer_token;
use crate::interp::{Engine, RunOptions, Store};
use crate::providers::Integrations;
use crate::template::did_you_mean;
use crate::Flow;

/// Keys of a test file (keys starting with `$` are comments and ignored).
pub const FILE_KEYS: &[&str] = &["flow", "integrations", "context", "strict", "now", "cases"];
/// Keys of a case.
pub const CASE_KEYS: &[&str] = &["name", "context", "strict", "now", "expect", "snapshot"];
/// Keys `expect` may hold: the parts of the `render` document.
pub const EXPECT_KEYS: &[&str] = &["messages", "requests", "context", "contact", "warnings"];

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Write snapshots that are missing or differ (and only then).
    pub update: bool,
    /// Run only cases whose name contains this text.
    pub filter: Option<String>,
    /// The clock of cases whose file does not fix one with `"now"` (`--now`).
    pub now: Option<std::time::SystemTime>,
}

/// The command line was wrong (exit code 2): a path that does not exist, no tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything expected held.
    Passed,
    /// Something expected did not hold.
    Failed,
    /// The case could not run (bad test file, flow that does not load, …).
    Error,
    /// Passed, and its snapshot was written (`--update`).
    Updated,
}

/// One difference, ready to print: where, what was expected, what came out.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Failure {
    /// JSON pointer into the `render` document.
    pub pointer: String,
    /// What was expected (`None`: nothing, a new key or element).
    pub expected: Option<Value>,
    /// What the dry run produced (`None`: missing).
    pub got: Option<Value>,
    /// A short explanation.
    pub note: String,
    /// The file holding the expectation (the test file or the snapshot).
    pub file: String,
    /// 1-based line of the expectation in `file`.
    pub line: usize,
    /// 1-based column of the expectation in `file`.
    pub column: usize,
}

/// The outcome of one case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    /// The case's name (empty for a problem with the whole file).
    pub name: String,
    /// Passed, failed, error or updated.
    pub status: Status,
    /// The differences (for `failed`).
    pub failures: Vec<Failure>,
    /// Why it could not run (for `error`), or what was written (for `updated`).
    pub message: Option<String>,
    /// Time to run the case.
    #[serde(rename = "duration_ms", serialize_with = "as_millis")]
    pub duration: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0)
}

/// The outcome of one test file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileReport {
    /// The test file as given or found.
    pub file: String,
    /// Its cases, in file order.
    pub cases: Vec<CaseResult>,
}

/// Test files under `paths` (files as given; directories searched recursively for
/// `*.test.json` and `*.test.toml`, skipping hidden directories and `target`), sorted.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, UsageError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_file() {
            out.push(p.clone());
        } else if p.is_dir() {
            walk(p, &mut out)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", p.display())))?;
        } else {
            return Err(UsageError(format!(
                "{}: no such file or directory",
                p.display()
            )));
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        let under: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(UsageError(format!(
            "no *.test.json or *.test.toml files under {}",
            under.join(", ")
        )));
    }
    Ok(out)
}

/// Is this a flow test file name?
pub fn is_test_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.ends_with(".test.json") || name.ends_with(".test.toml")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "__snapshots__" {
                walk(&path, out)?;
            }
        } else if is_test_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// A case ready to run.
struct Prepared {
    name: String,
    store: Store,
    strict: bool,
    /// The run's clock (`"now"`), `None`: the system's.
    now: Option<std::time::SystemTime>,
    /// The expectation and its pointer in the test file.
    expect: Option<(Value, String)>,
    snapshot: Option<PathBuf>,
}

/// A test file ready to run, or the reason it cannot.
struct PreparedFile {
    display: String,
    doc: Arc<Located>,
    engine: Engine,
    flow: Arc<Flow>,
    cases: Vec<Result<Prepared, (String, String)>>,
}

fn error_result(name: &str, message: String) -> CaseResult {
    CaseResult {
        name: name.to_string(),
        status: Status::Error,
        failures: Vec::new(),
        message: Some(message),
        duration: Duration::ZERO,
    }
}

/// Runs every test file under `paths`; cases of all files run in parallel.
pub async fn run(paths: &[PathBuf], opts: &TestOptions) -> Result<Vec<FileReport>, UsageError> {
    let files = discover(paths)?;
    let mut reports: Vec<FileReport> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (fi, path) in files.iter().enumerate() {
        let shown = path.display().to_string();
        let display = shown.strip_prefix("./").unwrap_or(&shown).to_string();
        reports.push(FileReport {
            file: display.clone(),
            cases: Vec::new(),
        });
        let prepared = match prepare(path, &display, opts) {
            Ok(p) => p,
            Err(msg) => {
                reports[fi].cases.push(error_result("", msg));
                continue;
            }
        };
        for (ci, case) in prepared.cases.into_iter().enumerate() {
            let case = match case {
                Ok(c) => c,
                Err((name, msg)) => {
                    reports[fi].cases.push(error_result(&name, msg));
                    continue;
                }
            };
            reports[fi]
                .cases
                .push(error_result(&case.name, "did not run".into()));
            let (engine, flow, doc, display) = (
                prepared.engine.clone(),
                prepared.flow.clone(),
                prepared.doc.clone(),
                prepared.display.clone(),
            );
            let update = opts.update;
            tasks.spawn(async move {
                let r = run_case(&engine, &flow, &doc, &display, case, update).await;
                (fi, ci, r)
            });
        }
    }
    let mut slots: Vec<Vec<Option<CaseResult>>> = reports
        .iter()
        .map(|r| r.cases.iter().map(|_| None).collect())
        .collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((fi, ci, r)) => slots[fi][ci] = Some(r),
            Err(e) => {
                // A panicking case is a bug in transbordo; report it instead of hiding it.
                return Err(UsageError(format!("a test case crashed: {e}")));
            }
        }
    }
    for (report, slot) in reports.iter_mut().zip(slots) {
        for (c, s) in report.cases.iter_mut().zip(slot) {
            if let Some(r) = s {
                *c = r;
            }
        }
    }
    Ok(reports)
}

fn at(doc: &Located, display: &str, pointer: &str) -> String {
    let (l, c) = doc.line_col(pointer);
    format!("{display}:{l}:{c}")
}

fn unknown_key_message(key: &str, known: &[&str], what: &str) -> String {
    let mut m = format!("unknown key `{key}` in {what}");
    match did_you_mean(key, known.iter().copied()) {
        Some(s) => m.push_str(&format!("; did you mean `{s}`?")),
        None => m.push_str(&format!(" (known: {})", known.join(", "))),
    }
    m
}

/// Reads the test file, its flow, integrations and contexts. `Err` = the whole file
/// cannot run; per-case problems are kept per case.
fn prepare(path: &Path, display: &str, opts: &TestOptions) -> Result<PreparedFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{display}: cannot read: {e}"))?;
    let is_toml = path.extension().and_then(|e| e.to_str()) == Some("toml");
    let doc = if is_toml {
        Located::toml(&text)
    } else {
        Located::json(&text)
    }
    .map_err(|e| format!("{display}:{}:{}: {}", e.line, e.column, e.message))?;
    let doc = Arc::new(doc);
    let here = |p: &str| format!("{}: ", at(&doc, display, p));
    let Value::Object(top) = &doc.value else {
        return Err(format!(
            "{}a test file is an object {{\"flow\", \"cases\", …}}",
            here("")
        ));
    };
    for k in top.keys().filter(|k| !k.starts_with('$')) {
        if !FILE_KEYS.contains(&k.as_str()) {
            let p = format!("/{}", escape_pointer_token(k));
            return Err(format!(
                "{}{}",
                here(&p),
                unknown_key_message(k, FILE_KEYS, "a test file")
            ));
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let flow_name = match top.get("flow") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => {
            return Err(format!(
                "{}`flow` (the flow file, relative to the test file) is required",
                here("/flow")
            ))
        }
    };
    let integrations = match top.get("integrations") {
        None => None,
        Some(Value::String(s)) => {
            let p = dir.join(s);
            Some(Integrations::load(&p).map_err(|e| {
                format!(
                    "{}cannot load integrations {}: {e}",
                    here("/integrations"),
                    p.display()
                )
            })?)
        }
        Some(_) => {
            return Err(format!(
                "{}`integrations` must be a file name",
                here("/integrations")
            ))
        }
    };
    let engine = match integrations {
        Some(i) => Engine::new().with_integrations(i),
        None => Engine::new(),
    };
    let flow_path = dir.join(flow_name);
    let flow_text = std::fs::read_to_string(&flow_path)
        .map_err(|e| format!("{}cannot read {}: {e}", here("/flow"), flow_path.display()))?;
    let flow = engine
        .load(&flow_text, &flow_path.display().to_string())
        .map_err(|e| {
            let mut m = format!("{}the flow does not load:", here("/flow"));
            for d in e
                .diagnostics
                .iter()
                .filter(|d| d.severity == crate::Severity::Error)
            {
                m.push_str(&format!(
                    "\n  {}:{}:{}: {}",
                    d.file, d.line, d.column, d.message
                ));
            }
            m
        })?;
    let default_strict = match top.get("strict") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("{}`strict` must be true or false", here("/strict"))),
    };
    let default_now = match top.get("now") {
        None => opts.now,
        Some(v) => Some(parse_now(v).map_err(|m| format!("{}{m}", here("/now")))?),
    };
    let Some(Value::Array(cases)) = top.get("cases") else {
        return Err(format!(
            "{}`cases` (an array of {{\"name\", \"context\", \"expect\"|\"snapshot\"}}) is required",
            here("/cases")
        ));
    };
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("flow")
        .trim_end_matches(".json")
        .trim_end_matches(".toml")
        .trim_end_matches(".test")
        .to_string();
    let snap_dir = dir.join("__snapshots__").join(stem);
    let mut names = HashSet::new();
    let mut slugs = HashSet::new();
    let mut prepared = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let base = format!("/cases/{i}");
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(f) = &opts.filter {
            if !name.contains(f.as_str()) {
                continue;
            }
        }
        let r = prepare_case(c, &base, dir, top.get("context"), default_strict, &snap_dir)
            .and_then(|mut case| {
                case.now = match c.get("now") {
                    None => default_now,
                    Some(v) => Some(parse_now(v).map_err(|m| (format!("{base}/now"), m))?),
                };
                Ok(case)
            })
            .map_err(|(p, m)| (name.clone(), format!("{}{m}", here(&p))))
            .and_then(|case| {
                if !names.insert(case.name.clone()) {
                    return Err((
                        name.clone(),
                        format!(
                            "{}two cases are named `{}`",
                            here(&format!("{base}/name")),
                            case.name
                        ),
                    ));
                }
                if let Some(s) = &case.snapshot {
                    if !slugs.insert(s.clone()) {
                        return Err((
                            name.clone(),
                            format!(
                                "{}another case already uses the snapshot file {}: rename one",
                                here(&format!("{base}/name")),
                                s.display()
                            ),
                        ));
                    }
                }
                Ok(case)
            });
        prepared.push(r);
    }
    Ok(PreparedFile {
        display: display.to_string(),
        doc,
        engine,
        flow: Arc::new(flow),
        cases: prepared,
    })
}

/// The snapshot file name of a case: its name in lower case, runs of other characters
/// as one `-`.
pub fn slug(name: &str) -> String {
    let mut s = String::new();
    for ch in name.chars().flat_map(char::to_lowercase) {
        if ch.is_alphanumeric() {
            s.push(ch);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "case".into()
    } else {
        s
    }
}

fn prepare_case(
    c: &Value,
    base: &str,
    dir: &Path,
    default_context: Option<&Value>,
    default_strict: bool,
    snap_dir: &Path,
) -> Result<Prepared, (String, String)> {
    let Value::Object(o) = c else {
        return Err((
            base.to_string(),
            "a case is an object {\"name\", \"context\", \"expect\"|\"snapshot\"}".into(),
        ));
    };
    for k in o.keys().filter(|k| !k.starts_with('$')) {
        if !CASE_KEYS.contains(&k.as_str()) {
            return Err((
                format!("{base}/{}", escape_pointer_token(k)),
                unknown_key_message(k, CASE_KEYS, "a case"),
            ));
        }
    }
    let name = match o.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err((format!("{base}/name"), "every case needs a `name`".into())),
    };
    let strict = match o.get("strict") {
        None => default_strict,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err((
                format!("{base}/strict"),
                "`strict` must be true or false".into(),
            ))
        }
    };
    let (context, cptr) = match o.get("context") {
        Some(v) => (Some(v), format!("{base}/context")),
        None => (default_context, "/context".to_string()),
    };
    let context_doc = match context {
        None => Value::Object(Map::new()),
        Some(Value::String(file)) => {
            let p = dir.join(file);
            let text = std::fs::read_to_string(&p)
                .map_err(|e| (cptr.clone(), format!("cannot read {}: {e}", p.display())))?;
            Located::json(&text)
                .map_err(|e| {
                    (
                        cptr.clone(),
                        format!("{}:{}:{}: {}", p.display(), e.line, e.column, e.message),
                    )
                })?
                .value
        }
        Some(v) => v.clone(),
    };
    let store = Store::from_json(&context_doc).map_err(|e| {
        (
            format!("{cptr}{}", e.pointer),
            format!("invalid context: {}", e.message),
        )
    })?;
    let expect = match o.get("expect") {
        None => None,
        Some(Value::Object(e)) => {
            for k in e.keys() {
                if !EXPECT_KEYS.contains(&k.as_str()) {
                    return Err((
                        format!("{base}/expect/{}", escape_pointer_token(k)),
                        unknown_key_message(k, EXPECT_KEYS, "`expect`"),
                    ));
                }
            }
            Some((Value::Object(e.clone()), format!("{base}/expect")))
        }
        Some(_) => {
            return Err((
                format!("{base}/expect"),
                "`expect` must be an object with some of: messages, requests, context, contact, warnings".into(),
            ))
        }
    };
    let snapshot = match o.get("snapshot") {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(snap_dir.join(format!("{}.json", slug(&name)))),
        Some(_) => {
            return Err((
                format!("{base}/snapshot"),
                "`snapshot` must be true or false".into(),
            ))
        }
    };
    if expect.is_none() && snapshot.is_none() {
        return Err((
            base.to_string(),
            format!("case `{name}` checks nothing: give it `expect` or `\"snapshot\": true`"),
        ));
    }
    Ok(Prepared {
        name,
        store,
        strict,
        now: None,
        expect,
        snapshot,
    })
}

/// `"now"`: an RFC 3339 date-time with an offset.
fn parse_now(v: &Value) -> Result<std::time::SystemTime, String> {
    match v {
        Value::String(s) => crate::providers::schedule::parse_instant(s),
        _ => {
            Err("`now` must be an RFC 3339 date-time string (\"2026-12-23T12:30:00-03:00\")".into())
        }
    }
}

async fn run_case(
    engine: &Engine,
    flow: &Flow,
    doc: &Located,
    display: &str,
    case: Prepared,
    update: bool,
) -> CaseResult {
    let started = Instant::now();
    let opts = RunOptions {
        strict: case.strict,
        dry_run: true,
        trace: false,
        now: case.now,
        ..RunOptions::default()
    };
    let outcome = engine.run(flow, case.store, &opts).await;
    let actual = outcome.render_json();
    let mut failures = Vec::new();
    if let Some((expected, ptr)) = &case.expect {
        for m in expect::compare(expected, &actual, ptr, "") {
            failures.push(failure(m, doc, display));
        }
    }
    let mut message = None;
    let mut status = Status::Passed;
    if let Some(path) = &case.snapshot {
        match check_snapshot(path, &actual, update) {
            Ok(SnapshotOutcome::Same) => {}
            Ok(SnapshotOutcome::Written) => {
                status = Status::Updated;
                message = Some(format!("snapshot written: {}", path.display()));
            }
            Ok(SnapshotOutcome::Differs(fs)) => failures.extend(fs),
            Err(m) => {
                return CaseResult {
                    name: case.name,
                    status: Status::Error,
                    failures,
                    message: Some(m),
                    duration: started.elapsed(),
                }
            }
        }
    }
    if !failures.is_empty() {
        status = Status::Failed;
    }
    CaseResult {
        name: case.name,
        status,
        failures,
        message,
        duration: started.elapsed(),
    }
}

fn failure(m: Mismatch, doc: &Located, display: &str) -> Failure {
    let (line, column) = doc.line_col(&m.expected_pointer);
    Failure {
        pointer: m.pointer,
        expected: m.expected,
        got: m.got,
        note: m.note,
        file: display.to_string(),
        line,
        column,
    }
}

enum SnapshotOutcome {
    Same,
    Written,
    Differs(Vec<Failure>),
}

/// The text a snapshot file holds: pretty JSON and a final newline.
pub fn snapshot_text(doc: &Value) -> String {
    let mut s = serde_json::to_string_pretty(doc).unwrap_or_default();
    s.push('\n');
    s
}

fn check_snapshot(path: &Path, actual: &Value, update: bool) -> Result<SnapshotOutcome, String> {
    let display = path.display().to_string();
    let stored = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read the snapshot {display}: {e}")),
    };
    let fresh = snapshot_text(actual);
    if stored.as_deref() == Some(fresh.as_str()) {
        return Ok(SnapshotOutcome::Same);
    }
    if update {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, fresh).map_err(|e| format!("cannot write {display}: {e}"))?;
        return Ok(SnapshotOutcome::Written);
    }
    let Some(stored) = stored else {
        return Ok(SnapshotOutcome::Differs(vec![Failure {
            pointer: String::new(),
            expected: None,
            got: None,
            note: "no snapshot stored yet: run `transbordo test --update` to write it".into(),
            file: display,
            line: 1,
            column: 1,
        }]));
    };
    let doc = Located::json(&stored).map_err(|e| {
        format!(
            "{display}:{}:{}: the snapshot is not valid JSON ({}); run `transbordo test --update` to rewrite it",
            e.line, e.column, e.message
        )
    })?;
    let mut ms = Vec::new();
    expect::diff_exact(&doc.value, actual, "", &mut ms);
    if ms.is_empty() {
        // Same data, other formatting: not a failure.
        return Ok(SnapshotOutcome::Same);
    }
    Ok(SnapshotOutcome::Differs(
        ms.into_iter().map(|m| failure(m, &doc, &display)).collect(),
    ))
}

/// Totals over reports: (passed incl. updated, failed, errors).
pub fn totals(reports: &[FileReport]) -> (usize, usize, usize) {
    let mut t = (0, 0, 0);
    for c in reports.iter().flat_map(|r| &r.cases) {
        match c.status {
            Status::Passed | Status::Updated => t.0 += 1,
            Status::Failed => t.1 += 1,
            Status::Error => t.2 += 1,
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(
            slug("VIP goes to the VIP skill!"),
            "vip-goes-to-the-vip-skill"
        );
        assert_eq!(slug("ação  rápida"), "ação-rápida");
        assert_eq!(slug("***"), "case");
    }
}
