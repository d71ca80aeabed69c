//! JSON Schemas (draft 2020-12) for editors: flow test files here; flow documents in
//! [`crate::actions::schema`] (re-exported), built from the actions' parameter tables.
//! `check` and `test` stay the authority; a schema gives completion, hover text and
//! early red squiggles.

use serde_json::{json, Map, Value};

pub use crate::actions::schema::{flow_schema, DIALECT};
use crate::authoring::flowtest::{CASE_KEYS, EXPECT_KEYS, FILE_KEYS};

/// The schema of `*.test.json` flow test files (`transbordo test`).
pub fn flow_test_schema() -> Value {
    let describe = |k: &str| {
        match k {
        "flow" => "The flow file, relative to the test file.",
        "integrations" => "The integrations TOML file, relative to the test file.",
        "context" => "A context document {contact, context, input, …}, or the name of a JSON file holding one.",
        "strict" => "A missing value is an error instead of a warning.",
        "now" => "The run's clock, an RFC 3339 date-time (`2026-12-23T12:30:00-03:00`): business hours are checked at this instant. A case's overrides the file's.",
        "cases" => "The cases, each a dry run of the flow.",
        "name" => "The case's name (unique in the file; names its snapshot).",
        "expect" => "Parts of the render document to match as a subset: arrays by position, \"…\" for any elements or any value, {\"$regex\": …}, {\"$absent\": true}.",
        "snapshot" => "Compare the whole render document with __snapshots__/<file>/<case>.json (written by --update).",
        _ => "Matched against the same key of the render document.",
    }
    };
    let props = |keys: &[&str]| -> Map<String, Value> {
        keys.iter()
            .map(|k| {
                let ty = match *k {
                    "flow" | "integrations" | "name" => json!({"type": "string", "minLength": 1}),
                    "now" => json!({"type": "string", "format": "date-time"}),
                    "context" => json!({"type": ["object", "string"]}),
                    "strict" | "snapshot" => json!({"type": "boolean"}),
                    "cases" => json!({"type": "array", "items": {"$ref": "#/$defs/case"}}),
                    "expect" => json!({"$ref": "#/$defs/expect"}),
                    "messages" | "requests" | "warnings" => json!({"type": "array"}),
                    _ => json!({"type": "object"}),
                };
                let mut t = ty;
                if let Value::Object(o) = &mut t {
                    o.insert("description".into(), json!(describe(k)));
                }
                (k.to_string(), t)
            })
            .collect()
    };
    json!({
        "$schema": DIALECT,
        "title": "transbordo flow test",
        "description": "Expected behaviour of a flow, run by `transbordo test`.",
        "type": "object",
        "required": ["flow", "cases"],
        "properties": props(FILE_KEYS),
        "patternProperties": { "^\\$": {} },
        "additionalProperties": false,
        "$defs": {
            "case": {
                "type": "object",
                "required": ["name"],
                "properties": props(CASE_KEYS),
                "patternProperties": { "^\\$": {} },
                "additionalProperties": false,
                "anyOf": [ {"required": ["expect"]}, {"required": ["snapshot"]} ]
            },
            "expect": {
                "type": "object",
                "properties": props(EXPECT_KEYS),
                "additionalProperties": false
            }
        }
    })
}
