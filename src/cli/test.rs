//! `transbordo test`: run flow tests and report them for people (`human`) or CI systems
//! (`json`, `junit`). Exit 0 when every case passes, 1 when any fails or cannot run,
//! 2 on usage errors.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::{json, Value};

use crate::authoring::flowtest::{self, FileReport, Status, TestOptions};

/// Output formats of `transbordo test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormat {
    /// A line per case, a diff per failure, totals.
    Human,
    /// One JSON document with every case and failure.
    Json,
    /// JUnit XML (one testsuite per test file).
    Junit,
}

/// Arguments of `transbordo test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Test files (`*.test.json`, `*.test.toml`) or directories to search; default `.`.
    paths: Vec<PathBuf>,
    /// Write snapshots that are missing or changed (cases with `"snapshot": true`).
    #[arg(long)]
    update: bool,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// `human`, `json` or `junit`.
    #[arg(long, value_enum, default_value = "human")]
    format: TestFormat,
    /// The clock of files that do not fix one with `"now"` (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = crate::providers::schedule::parse_instant)]
    now: Option<std::time::SystemTime>,
}

/// Runs `transbordo test`.
pub async fn run(args: TestArgs) -> ExitCode {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths
    };
    let opts = TestOptions {
        update: args.update,
        filter: args.filter,
        now: args.now,
    };
    let started = Instant::now();
    let reports = match flowtest::run(&paths, &opts).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let out = match args.format {
        TestFormat::Human => human(&reports, elapsed),
        TestFormat::Json => {
            serde_json::to_string_pretty(&json_report(&reports, elapsed)).unwrap_or_default() + "\n"
        }
        TestFormat::Junit => junit(&reports, elapsed),
    };
    let printed = super::output::emit(|w| w.write_all(out.as_bytes()));
    if printed != ExitCode::SUCCESS {
        return printed;
    }
    let (_, failed, errors) = flowtest::totals(&reports);
    if failed + errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn compact(v: &Option<Value>) -> String {
    match v {
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
        None => "(nothing)".into(),
    }
}

/// Long values are cut for the terminal (the JSON and JUnit reports keep them whole).
fn shorten(s: String) -> String {
    const MAX: usize = 240;
    if s.chars().count() <= MAX {
        return s;
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut}… ({} characters)", s.chars().count())
}

/// A failure as text; `short` cuts long values (for the terminal).
fn failure_text(f: &flowtest::Failure, indent: &str, short: bool) -> String {
    let show = |v: &Option<Value>| {
        if short {
            shorten(compact(v))
        } else {
            compact(v)
        }
    };
    let mut s = String::new();
    let ptr = if f.pointer.is_empty() {
        "(whole document)"
    } else {
        f.pointer.as_str()
    };
    let _ = writeln!(
        s,
        "{indent}{ptr}: {} ({}:{}:{})",
        f.note, f.file, f.line, f.column
    );
    if f.expected.is_some() || f.got.is_some() {
        let _ = writeln!(s, "{indent}  expected: {}", show(&f.expected));
        let _ = writeln!(s, "{indent}  got:      {}", show(&f.got));
    }
    s
}

/// The report a person reads.
pub fn human(reports: &[FileReport], elapsed_s: f64) -> String {
    let mut s = String::new();
    for r in reports {
        let _ = writeln!(s, "{}", r.file);
        for c in &r.cases {
            let tag = match c.status {
                Status::Passed => "ok     ",
                Status::Updated => "updated",
                Status::Failed => "FAIL   ",
                Status::Error => "ERROR  ",
            };
            let name = if c.name.is_empty() { "(file)" } else { &c.name };
            let _ = writeln!(s, "  {tag} {name}");
            for f in &c.failures {
                s.push_str(&failure_text(f, "          ", true));
            }
            if let Some(m) = &c.message {
                for l in m.lines() {
                    let _ = writeln!(s, "          {l}");
                }
            }
        }
    }
    let (passed, failed, errors) = flowtest::totals(reports);
    let verdict = if failed + errors == 0 { "ok" } else { "FAILED" };
    let _ = writeln!(
        s,
        "\ntest result: {verdict}. {passed} passed, {failed} failed, {errors} errors; {} case(s) in {} file(s), {elapsed_s:.2} s",
        passed + failed + errors,
        reports.len()
    );
    s
}

/// The JSON report.
pub fn json_report(reports: &[FileReport], elapsed_s: f64) -> Value {
    let (passed, failed, errors) = flowtest::totals(reports);
    json!({
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "duration_s": (elapsed_s * 1000.0).round() / 1000.0,
        "files": reports,
    })
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML, the format most CI systems read.
pub fn junit(reports: &[FileReport], elapsed_s: f64) -> String {
    let (passed, failed, errors) = flowtest::totals(reports);
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"transbordo test\" tests=\"{}\" failures=\"{failed}\" errors=\"{errors}\" time=\"{elapsed_s:.3}\">",
        passed + failed + errors
    );
    for r in reports {
        let f = r
            .cases
            .iter()
            .filter(|c| c.status == Status::Failed)
            .count();
        let e = r.cases.iter().filter(|c| c.status == Status::Error).count();
        let t: f64 = r.cases.iter().map(|c| c.duration.as_secs_f64()).sum();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"{e}\" time=\"{t:.3}\">",
            xml(&r.file),
            r.cases.len()
        );
        for c in &r.cases {
            let name = if c.name.is_empty() { "(file)" } else { &c.name };
            let _ = write!(
                s,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                xml(name),
                xml(&r.file),
                c.duration.as_secs_f64()
            );
            match c.status {
                Status::Passed | Status::Updated => s.push_str("/>\n"),
                Status::Failed => {
                    let first = c.failures.first().map(|f| {
                        format!(
                            "{} {}",
                            if f.pointer.is_empty() {
                                "/"
                            } else {
                                &f.pointer
                            },
                            f.note
                        )
                    });
                    let body: String = c
                        .failures
                        .iter()
                        .map(|f| failure_text(f, "", false))
                        .collect();
                    let _ = write!(
                        s,
                        ">\n      <failure message=\"{}\" type=\"mismatch\">{}</failure>\n    </testcase>\n",
                        xml(&first.unwrap_or_default()),
                        xml(&body)
                    );
                }
                Status::Error => {
                    let m = c.message.clone().unwrap_or_default();
                    let _ = write!(
                        s,
                        ">\n      <error message=\"{}\" type=\"error\">{}</error>\n    </testcase>\n",
                        xml(m.lines().next().unwrap_or_default()),
                        xml(&m)
                    );
                }
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}
