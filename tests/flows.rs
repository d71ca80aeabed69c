//! Fixture-driven tests of whole flows. `tests/fixtures/flows/*.json` are dry runs
//! (`{"flow","context","$settings"}`) snapshotted as the `render` document plus each
//! action's result; `tests/fixtures/load_errors/*.json` are raw flow files whose
//! diagnostics are snapshotted as a person sees them (miette, no colour) and as JSON.

use std::sync::Arc;

use transbordo::providers::Integrations;
use transbordo::{Engine, RunOptions, Store};

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s.set_omit_expression(true);
    s
}

fn engine() -> Engine {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/integrations.toml"
    );
    let text = std::fs::read_to_string(path).expect("integrations fixture");
    let integrations =
        Integrations::from_toml_str(&text, "integrations.toml").expect("fixture integrations load");
    Engine::new().with_integrations(integrations)
}

const SECRETS: [&str; 5] = [
    "lp-secret-never-printed",
    "zd-token-never-printed",
    "altu-token-never-printed",
    "altu-key-never-printed",
    "secret-token-never-printed",
];

fn assert_no_secrets(text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "secret {s} leaked into output:\n{text}");
    }
}

#[tokio::test]
async fn render_fixtures() {
    let engine = engine();
    let mut cases = Vec::new();
    insta::glob!("fixtures/flows/*.json", |path| cases
        .push(path.to_path_buf()));
    assert!(cases.len() >= 10, "fixtures found: {}", cases.len());
    for path in cases {
        let text = std::fs::read_to_string(&path).expect("fixture readable");
        let case: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
        let flow_src = serde_json::to_string_pretty(&case["flow"]).expect("flow");
        let store = Store::from_json(&case["context"]).expect("fixture context is valid");
        let strict = case
            .pointer("/$settings/strict")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let flow = engine
            .load(&flow_src, "flow.json")
            .unwrap_or_else(|e| panic!("{}: {:#?}", path.display(), e.diagnostics));
        let outcome = engine
            .run(
                &flow,
                store,
                &RunOptions {
                    strict,
                    dry_run: true,
                    trace: true,
                    ..RunOptions::default()
                },
            )
            .await;
        let mut doc = outcome.render_json();
        doc["results"] = outcome.trace.iter().map(|t| t.result.clone()).collect();
        let rendered = serde_json::to_string_pretty(&doc).expect("json");
        assert_no_secrets(&rendered);
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("case")
            .to_string();
        let mut s = settings();
        s.set_input_file(&path);
        s.set_info(&case.get("$note").cloned().unwrap_or_default());
        s.bind(|| insta::assert_snapshot!(format!("render@{name}"), rendered));
    }
}

#[test]
fn load_error_fixtures() {
    let engine = engine();
    let s = settings();
    s.bind(|| {
        insta::glob!("fixtures/load_errors/*.json", |path| {
            let text = std::fs::read_to_string(path).expect("fixture readable");
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("flow.json");
            let err = engine
                .load(&text, name)
                .expect_err("fixture must fail to load");
            assert!(err
                .diagnostics
                .iter()
                .any(|d| d.severity == transbordo::Severity::Error));
            let human = transbordo::cli::render_human(&err.diagnostics, &Arc::new(text.clone()));
            let json = serde_json::to_string_pretty(&err.diagnostics).expect("json");
            insta::assert_snapshot!(format!("{human}\n----- json -----\n{json}"));
        });
    });
}

/// `check` on flows that load: the warnings an author sees (unset variables in every
/// form of read, and the cases that must stay quiet). A `<name>.json.context` file next to
/// a case is the sample context passed as `--context`.
#[test]
fn check_fixtures() {
    let engine = engine();
    let s = settings();
    s.bind(|| {
        insta::glob!("fixtures/check/*.json", |path| {
            let text = std::fs::read_to_string(path).expect("fixture readable");
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("flow.json");
            let sample_path = path.with_extension("json.context");
            let sample: Option<serde_json::Value> = std::fs::read_to_string(&sample_path)
                .ok()
                .map(|t| serde_json::from_str(&t).expect("sample context is JSON"));
            let diags = engine.check(&text, name, sample.as_ref());
            let unset = diags
                .iter()
                .filter(|d| d.code == "flow::unset_variable")
                .count();
            if name.starts_with("quiet") {
                assert_eq!(unset, 0, "{name}: {diags:#?}");
            } else {
                assert!(unset > 0, "{name} must report an unset variable");
            }
            let human = transbordo::cli::render_human(&diags, &Arc::new(text.clone()));
            let json = serde_json::to_string_pretty(&diags).expect("json");
            insta::assert_snapshot!(format!("{human}\n----- json -----\n{json}"));
        });
    });
}
