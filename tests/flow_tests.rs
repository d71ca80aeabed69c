//! `transbordo test` through the real binary: the shipped examples pass, failures are
//! readable diffs with the test file's line:column, snapshots are written only with
//! `--update`, JSON and JUnit reports, and exit codes 0/1/2.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_transbordo");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s.set_omit_expression(true);
    // Durations change from run to run.
    s.add_filter(r"\d+\.\d+ s\b", "[t] s");
    s.add_filter(r#"time="[0-9.]+""#, r#"time="[t]""#);
    s.add_filter(r#""duration_(ms|s)": [0-9.]+"#, r#""duration_$1": "[t]""#);
    s
}

/// Runs `transbordo test ARGS` in `dir`: (exit code, stdout, stderr).
fn transbordo_test(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("test")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const FLOW: &str = r#"[
  {"name": "send_message", "parameters": {"text": "Olá <? contact.name ?>"}},
  {"name": "start_live_chat",
   "parameters": {"integration_id": 7, "skill_id": "<? $tag === 'vip' ? 'vip-skill' : 'default' ?>"},
   "result_variable": "lp"}
]
"#;

const INTEGRATIONS: &str = r#"[[integration]]
id = 7
provider = "liveperson"
account_id = "123"
client_id = "c"
client_secret = "secret-never-shown"
"#;

/// A directory with `flow.json`, `integrations.toml` and `flow.test.json` = `test`.
fn project(test: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("flow.json"), FLOW).expect("write");
    std::fs::write(dir.path().join("integrations.toml"), INTEGRATIONS).expect("write");
    std::fs::write(dir.path().join("flow.test.json"), test).expect("write");
    dir
}

#[test]
fn the_shipped_examples_pass() {
    let (code, out, err) = transbordo_test(Path::new(ROOT), &["examples"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("test result: ok. 6 passed, 0 failed, 0 errors"),
        "{out}"
    );
    assert!(!out.contains("secret"), "{out}");
}

#[test]
fn a_failing_expectation_is_a_diff_with_line_and_column_and_exit_1() {
    let dir = project(
        r#"{
  "flow": "flow.json",
  "integrations": "integrations.toml",
  "cases": [
    {"name": "vip", "context": {"contact": {"name": "Ana"}, "context": {"tag": "vip"}},
     "expect": {"messages": [{"message": {"text": "Olá Ana"}}],
                "requests": ["…", {"body": ["…", {"body": {"skillId": "vip-skill"}}]}, "…"]}},
    {"name": "wrong skill and message", "context": {"contact": {"name": "Bia"}},
     "expect": {"messages": [{"message": {"text": "Olá Ana"}}, "…"],
                "context": {"lp": {"status": "ok", "body": {"code": "FAIL"}}},
                "contact": {"name": {"$regex": "^A"}, "cpf": "…"}}}
  ]
}
"#,
    );
    let (code, out, _) = transbordo_test(dir.path(), &[]);
    assert_eq!(code, 1, "{out}");
    settings().bind(|| insta::assert_snapshot!(out));
}

#[test]
fn snapshots_are_written_only_with_update() {
    let dir = project(
        r#"{"flow": "flow.json", "integrations": "integrations.toml",
 "cases": [{"name": "Whole dry run!", "context": {"contact": {"name": "Ana"}}, "snapshot": true}]}
"#,
    );
    let snap = dir.path().join("__snapshots__/flow/whole-dry-run.json");
    let (code, out, _) = transbordo_test(dir.path(), &["flow.test.json"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no snapshot stored yet"), "{out}");
    assert!(!snap.exists(), "written without --update");

    let (code, out, _) = transbordo_test(dir.path(), &["--update"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("updated"), "{out}");
    let stored = std::fs::read_to_string(&snap).expect("snapshot written");
    assert!(stored.contains("\"skillId\": \"default\""), "{stored}");
    assert!(!stored.contains("secret-never-shown"));

    let (code, out, _) = transbordo_test(dir.path(), &[]);
    assert_eq!(
        (code, out.contains("ok      Whole dry run!")),
        (0, true),
        "{out}"
    );

    // The flow changes: the diff points into the snapshot file; the file stays as it was.
    std::fs::write(
        dir.path().join("flow.json"),
        FLOW.replace("'default'", "'general'"),
    )
    .expect("write");
    let (code, out, _) = transbordo_test(dir.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(std::fs::read_to_string(&snap).expect("still there"), stored);
    settings().bind(|| insta::assert_snapshot!(out));

    let (code, _, _) = transbordo_test(dir.path(), &["--update"]);
    assert_eq!(code, 0);
    assert!(std::fs::read_to_string(&snap)
        .expect("rewritten")
        .contains("\"skillId\": \"general\""));
}

#[test]
fn json_and_junit_reports() {
    let dir = project(
        r#"{"flow": "flow.json", "integrations": "integrations.toml",
 "cases": [
  {"name": "passes", "context": {"contact": {"name": "Ana"}}, "expect": {"messages": [{"message": {"text": "Olá Ana"}}]}},
  {"name": "fails <&>", "context": {"contact": {"name": "Ana"}}, "expect": {"warnings": []}}
 ]}
"#,
    );
    let (code, json, _) = transbordo_test(dir.path(), &["--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).expect("the json report is JSON");
    assert_eq!(
        (v["passed"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let (code, xml, _) = transbordo_test(dir.path(), &["--format", "junit"]);
    assert_eq!(code, 1);
    settings().bind(|| {
        insta::assert_snapshot!("json_report", json);
        insta::assert_snapshot!("junit_report", xml);
    });
}

#[test]
fn toml_test_files_point_at_their_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("flow.json"), FLOW).expect("write");
    std::fs::write(dir.path().join("integrations.toml"), INTEGRATIONS).expect("write");
    std::fs::write(
        dir.path().join("handoff.test.toml"),
        r#"flow = "flow.json"
integrations = "integrations.toml"

[[cases]]
name = "greets by name"
context = { contact = { name = "Ana" } }
[cases.expect]
messages = [{ message = { text = "Olá Bia" } }]
"#,
    )
    .expect("write");
    let (code, out, _) = transbordo_test(dir.path(), &["."]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("/messages/0/message/text: different value (handoff.test.toml:8:34)"),
        "{out}"
    );
}

#[test]
fn broken_test_files_are_errors_with_positions() {
    let dir = project(
        r#"{"flow": "flow.json", "integrations": "integrations.toml",
 "cases": [
  {"name": "typo", "context": {}, "expcet": {}},
  {"name": "no check", "context": {}},
  {"name": "bad expect key", "expect": {"request": []}},
  {"name": "bad context", "context": {"contato": {}}, "expect": {}}
 ]}
"#,
    );
    std::fs::write(
        dir.path().join("syntax.test.json"),
        "{\"flow\": \"flow.json\",\n \"cases\": [}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("badflow.test.json"),
        "{\"flow\": \"missing.json\", \"cases\": [{\"name\": \"x\", \"expect\": {}}]}",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("nocases.test.json"),
        "{\"flow\": \"flow.json\", \"case\": []}",
    )
    .expect("write");
    let (code, out, _) = transbordo_test(dir.path(), &[]);
    assert_eq!(code, 1, "{out}");
    let out = out.replace(&dir.path().display().to_string(), "[dir]");
    settings().bind(|| insta::assert_snapshot!(out));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = transbordo_test(dir.path(), &["missing-dir"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("missing-dir: no such file or directory"),
        "{err}"
    );
    let (code, _, err) = transbordo_test(dir.path(), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no *.test.json or *.test.toml files under ."),
        "{err}"
    );
    let (code, _, _) = transbordo_test(dir.path(), &["--format", "xml"]);
    assert_eq!(code, 2);
}

#[test]
fn filter_runs_only_matching_cases() {
    let (code, out, _) = transbordo_test(Path::new(ROOT), &["examples", "--filter", "vip"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("vip goes to the vip skill"), "{out}");
    assert!(!out.contains("the whole dry run"), "{out}");
}
