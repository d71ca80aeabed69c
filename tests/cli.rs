//! The `transbordo` binary: exit codes and what a person sees, for check, render and run.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_transbordo");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s.set_omit_expression(true);
    s
}

/// Runs the binary from the repository root; returns (exit code, stdout, stderr).
fn transbordo(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(ROOT)
        .env("NO_COLOR", "1")
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp_file(name: &str, content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(name), content).expect("write");
    dir
}

#[test]
fn check_valid_flow_exits_0() {
    let (code, out, _) = transbordo(&[
        "check",
        "examples/node.json",
        "--integrations",
        "tests/fixtures/integrations.toml",
        "--context",
        "examples/context.json",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with("1 file(s) checked: 0 error(s), 0 warning(s)\n"),
        "{out}"
    );
}

#[test]
fn check_lists_every_problem_and_exits_1() {
    let (code, out, _) = transbordo(&[
        "check",
        "tests/fixtures/load_errors/unknown_action.json",
        "tests/fixtures/load_errors/trailing_comma.json",
    ]);
    assert_eq!(code, 1);
    settings().bind(|| insta::assert_snapshot!(out));
}

#[test]
fn check_json_format_is_an_array_of_problems() {
    let (code, out, _) = transbordo(&[
        "check",
        "--format",
        "json",
        "tests/fixtures/load_errors/template_errors.json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is JSON");
    let arr = v.as_array().expect("array");
    assert!(arr.len() >= 3);
    for d in arr {
        for key in [
            "severity", "code", "message", "file", "line", "column", "pointer",
        ] {
            assert!(d.get(key).is_some(), "missing {key} in {d}");
        }
    }
    settings().bind(|| insta::assert_snapshot!(out));
}

#[test]
fn check_reports_unreadable_files_as_problems() {
    let (code, out, _) = transbordo(&["check", "no/such/flow.json"]);
    assert_eq!(code, 1);
    assert!(out.contains("cannot read no/such/flow.json"), "{out}");
}

#[test]
fn render_example_prints_the_render_document() {
    let (code, out, err) = transbordo(&[
        "render",
        "examples/zendesk-ticket.json",
        "--context",
        "examples/context.json",
        "--integrations",
        "tests/fixtures/integrations.toml",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is JSON");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["messages", "requests", "context", "contact", "warnings"]
    );
    assert!(!out.contains("zd-token-never-printed"));
    settings().bind(|| insta::assert_snapshot!(out));
}

#[test]
fn render_refuses_bad_inputs_with_exit_1() {
    let ctx = tmp_file("ctx.json", "{\"contact\": {\"name\": \"a\",}}");
    let ctx_path = ctx.path().join("ctx.json");
    let (code, _, err) = transbordo(&[
        "render",
        "examples/node.json",
        "--context",
        ctx_path.to_str().unwrap_or(""),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("ctx.json:1:25: invalid context JSON: trailing comma before `}`"),
        "{err}"
    );

    let ctx = tmp_file("ctx.json", "{\"contatc\": {}}");
    let ctx_path = ctx.path().join("ctx.json");
    let (code, _, err) = transbordo(&[
        "render",
        "examples/node.json",
        "--context",
        ctx_path.to_str().unwrap_or(""),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("(at /contatc): unknown key `contatc` (did you mean `contact`?)"),
        "{err}"
    );

    let (code, _, err) = transbordo(&["render", "tests/fixtures/load_errors/trailing_comma.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("trailing comma before `}`"), "{err}");

    let (code, _, err) = transbordo(&["render", "does-not-exist.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read does-not-exist.json"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = transbordo(&["render"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = transbordo(&["check", "--format", "xml", "examples/node.json"]);
    assert_eq!(code, 2);
    let (code, _, _) = transbordo(&["frobnicate"]);
    assert_eq!(code, 2);
}

#[test]
fn run_executes_http_request_for_real() {
    // A flow with only local actions: `run` executes it and prints the run document.
    let dir = tmp_file(
        "f.json",
        r#"[{"name":"set_variables","parameters":{"context":{"x":"<? 6 * 7 ?>"}}},{"name":"send_message","parameters":{"text":"x=<? $x ?>"}}]"#,
    );
    let f = dir.path().join("f.json");
    let (code, out, err) = transbordo(&["run", f.to_str().unwrap_or("")]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["context"]["x"], 42);
    assert_eq!(v["messages"][0]["message"]["text"], "x=42");
    assert_eq!(v["handoff"], serde_json::Value::Null);
    assert!(Path::new(BIN).exists());
}

/// A reader that goes away (`transbordo render big.json | head`) ends every command
/// quietly: exit 0, nothing on stderr, no panic. The pipe's read end is closed before
/// the command starts, so its first write already fails.
#[test]
fn a_closed_pipe_ends_every_command_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Large enough that no buffer absorbs it; warnings (unknown keys) for `check`.
    let mut flow = String::from("[");
    for i in 0..3000 {
        if i > 0 {
            flow.push(',');
        }
        flow.push_str(&format!(
            r#"{{"name":"send_message","parameters":{{"text":"Olá <? contact.name ?> #{i}"}},"extra":{i}}}"#
        ));
    }
    flow.push(']');
    let big = dir.path().join("big.json");
    std::fs::write(&big, flow).expect("write flow");
    let big = big.to_str().expect("utf-8 path");
    let root = env!("CARGO_MANIFEST_DIR");
    let examples = format!("{root}/examples");
    let commands: Vec<Vec<&str>> = vec![
        vec!["check", big],
        vec!["check", "--format", "json", big],
        vec!["render", big],
        vec!["render", "--compact", big],
        vec!["run", big],
        vec!["schema"],
        vec!["test", &examples],
        vec!["sandbox", "serve", "--port", "0"],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(root)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{args:?}: {:?}, stderr: {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    }
}

/// A minified flow is one long line: `check` gives each problem's position and pointer
/// without drawing the line (which would be unreadable, and used to panic in miette).
#[test]
fn check_on_a_minified_flow_gives_positions_without_snippets() {
    let mut flow = String::from("[");
    for i in 0..400 {
        if i > 0 {
            flow.push(',');
        }
        flow.push_str(r#"{"name":"send_message","parameters":{"text":"x <? $nope ?>"},"extra":1}"#);
    }
    flow.push(']');
    let dir = tmp_file("min.json", &flow);
    let path = dir.path().join("min.json");
    let (code, out, err) = transbordo(&["check", path.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    let head: String = out
        .replace(path.to_str().expect("utf-8"), "min.json")
        .lines()
        .take(12)
        .collect::<Vec<_>>()
        .join("\n");
    settings().bind(|| insta::assert_snapshot!(head));
    assert!(
        out.ends_with("1 file(s) checked: 0 error(s), 401 warning(s)\n"),
        "{out}"
    );
}

/// `--max-bytes` / `--max-work` / `--deadline-ms` set the run's budgets: a flow that fits
/// the defaults fails with kind `limit` under a tighter one, and says which.
#[test]
fn render_takes_the_runs_budgets_from_flags() {
    let dir = tmp_file(
        "flow.json",
        r#"[{"name": "send_message", "parameters": {"text": "<? [1,2,3,4,5,6,7,8].join('-----') ?>"}}]"#,
    );
    let flow = dir.path().join("flow.json");
    let flow = flow.to_str().expect("utf-8 path");
    let (code, out, err) = transbordo(&["render", flow, "--compact"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1-----2-----3"), "{out}");
    let (code, out, err) = transbordo(&["render", flow, "--compact", "--max-bytes", "16"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is JSON");
    assert_eq!(v["messages"], serde_json::json!([]));
    let warning = v["warnings"][0]["message"].as_str().expect("a warning");
    assert!(
        warning.contains("limit") && warning.contains("16 bytes"),
        "{warning}"
    );
    settings().bind(|| insta::assert_snapshot!(warning));
    let (code, _, err) = transbordo(&["render", flow, "--max-work", "lots"]);
    assert_eq!(code, 2, "{err}");
}
