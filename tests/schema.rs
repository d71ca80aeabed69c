//! The JSON Schema of flow documents: the committed files are exactly what
//! `transbordo schema` prints, host actions appear in `Engine::json_schema`, and an
//! independent validator (Python `jsonschema`, `scripts/validate-schema.py`) accepts every
//! example and fixture flow and rejects the usual mistakes.

use std::process::Command;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use transbordo::actions::{Action, ActionError, ActionSpec, ParamSpec, ParamType};
use transbordo::interp::ActionCx;
use transbordo::Engine;

const BIN: &str = env!("CARGO_BIN_EXE_transbordo");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn printed(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("schema")
        .args(args)
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn committed_schemas_match_the_code() {
    for (file, args) in [
        ("schemas/flow.schema.json", &[][..]),
        ("schemas/flow-test.schema.json", &["--for", "test"][..]),
    ] {
        let committed = std::fs::read_to_string(format!("{ROOT}/{file}")).expect("committed");
        assert!(
            committed == printed(args),
            "{file} is out of date: run `cargo run -- schema {}> {file}`",
            args.iter().map(|a| format!("{a} ")).collect::<String>()
        );
    }
}

#[test]
fn every_builtin_action_and_provider_parameter_is_described() {
    let s: Value = serde_json::from_str(&printed(&[])).expect("json");
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let names = &s["$defs"]["action"]["properties"]["name"]["enum"];
    assert_eq!(
        names,
        &json!([
            "start_live_chat",
            "http_request",
            "set_variables",
            "send_message"
        ])
    );
    let slc = &s["$defs"]["parameters.start_live_chat"]["properties"];
    for p in [
        "integration_id",
        "skill_id",
        "subject",
        "contact_info",
        "transcript",
    ] {
        assert!(
            slc[p]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{p}"
        );
    }
    // The limits are in the descriptions.
    assert!(slc["extra_info"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("256") && d.contains("1024")));
}

/// A host action with its own parameter table, and one that documents nothing.
struct CallFunction;
struct Legacy;

#[async_trait]
impl Action for CallFunction {
    fn name(&self) -> &str {
        "call_function"
    }
    fn spec(&self) -> ActionSpec {
        ActionSpec {
            description: "Runs one of the builder's serverless functions.".into(),
            params: vec![
                ParamSpec::new("function", ParamType::String, "The function's name.").required(),
                ParamSpec::new("timeout_s", ParamType::integer(1, 30), "Seconds to wait."),
            ],
            additional: false,
            any_of: Vec::new(),
        }
    }
    async fn run(
        &self,
        _: &Map<String, Value>,
        _: &mut ActionCx<'_>,
    ) -> Result<Value, ActionError> {
        Ok(json!({"status": "ok"}))
    }
}

#[async_trait]
impl Action for Legacy {
    fn name(&self) -> &str {
        "legacy"
    }
    fn required(&self) -> &[&str] {
        &["id"]
    }
    async fn run(
        &self,
        _: &Map<String, Value>,
        _: &mut ActionCx<'_>,
    ) -> Result<Value, ActionError> {
        Ok(json!({"status": "ok"}))
    }
}

#[test]
fn host_actions_appear_in_the_engine_schema() {
    let s = Engine::new()
        .register(CallFunction)
        .register(Legacy)
        .json_schema();
    let names = s["$defs"]["action"]["properties"]["name"]["enum"]
        .as_array()
        .expect("names")
        .clone();
    assert!(names.contains(&json!("call_function")) && names.contains(&json!("legacy")));
    let cf = &s["$defs"]["parameters.call_function"];
    assert_eq!(cf["required"], json!(["function"]));
    assert_eq!(cf["additionalProperties"], json!(false));
    assert_eq!(
        cf["properties"]["timeout_s"]["anyOf"][0],
        json!({"type": "integer", "minimum": 1, "maximum": 30})
    );
    let legacy = &s["$defs"]["parameters.legacy"];
    assert_eq!(legacy["required"], json!(["id"]));
    assert!(legacy.get("additionalProperties").is_none());
}

#[test]
fn an_independent_validator_agrees() {
    let has_jsonschema = Command::new("python3")
        .args(["-c", "import jsonschema"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_jsonschema {
        // .ci/run installs it and runs the script itself; locally it is optional.
        eprintln!("skipped: python3 jsonschema is not installed (pip install jsonschema)");
        return;
    }
    let out = Command::new("python3")
        .arg(format!("{ROOT}/scripts/validate-schema.py"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_documents_every_parameter_of_the_tables() {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).expect("README");
    let engine = Engine::new();
    let schema = engine.json_schema();
    let mut missing = Vec::new();
    for name in engine.action_names() {
        let params = schema["$defs"][format!("parameters.{name}")]["properties"]
            .as_object()
            .expect("properties")
            .clone();
        for p in params.keys() {
            if !readme.contains(&format!("`{p}`")) {
                missing.push(format!("`{p}` of `{name}`"));
            }
        }
    }
    assert!(missing.is_empty(), "README.md does not mention {missing:?}");
}
