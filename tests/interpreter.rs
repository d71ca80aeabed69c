//! Interpreter behaviour (spec §4–§5): node order, before_action_messages on any action,
//! results visible to later actions, failures that do not stop the node, host actions,
//! and concurrent runs of one loaded flow.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use transbordo::actions::{Action, ActionError, ErrorKind};
use transbordo::interp::ActionCx;
use transbordo::{Engine, RunOptions, Store};

struct Fails;

#[async_trait]
impl Action for Fails {
    fn name(&self) -> &str {
        "always_fails"
    }
    async fn run(
        &self,
        _p: &Map<String, Value>,
        _cx: &mut ActionCx<'_>,
    ) -> Result<Value, ActionError> {
        Err(ActionError::new(ErrorKind::Unavailable, "the function host is down").with_status(503))
    }
}

struct Counter;

#[async_trait]
impl Action for Counter {
    fn name(&self) -> &str {
        "count"
    }
    async fn run(
        &self,
        p: &Map<String, Value>,
        cx: &mut ActionCx<'_>,
    ) -> Result<Value, ActionError> {
        let n = p.get("n").and_then(Value::as_i64).unwrap_or(0);
        cx.send(json!({"type": "text", "text": format!("count {n}")}));
        Ok(json!({"status": "ok", "next": n + 1}))
    }
}

fn engine() -> Engine {
    Engine::new().register(Fails).register(Counter)
}

#[tokio::test]
async fn node_order_is_context_contact_actions_output() {
    let src = json!({
        "output": [{"default": {"type": "text", "text": "out sees <? $a ?>/<? contact.b ?>/<? $r.next ?>"}}],
        "actions": [{"name": "count", "parameters": {"n": "<? $a ?>", "before_action_messages": ["before <? contact.b ?>"]}, "result_variable": "r"}],
        "contact": {"b": "<? $a * 10 ?>"},
        "context": {"a": 1, "a2": "<? $a + 1 ?>"}
    });
    let e = engine();
    let flow = e.load(&src.to_string(), "node.json").expect("loads");
    let out = e.run(&flow, Store::default(), &traced()).await;
    let texts: Vec<String> = out
        .messages
        .iter()
        .map(|m| format!("{}:{}", m.source, m.message["text"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        texts,
        [
            "before_action_messages:before 10",
            "count:count 1",
            "output:"
        ]
    );
    assert_eq!(
        out.messages[2].message["default"]["text"],
        "out sees 1/10/2"
    );
    // Context keys render in order: a2 sees a.
    assert_eq!(out.context["a2"], 2);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[tokio::test]
async fn failing_action_yields_error_result_and_node_continues() {
    let src = json!([
        {"name": "always_fails", "parameters": {"before_action_messages": ["trying"]}, "result_variable": "f"},
        {"name": "send_message", "parameters": {"text": "<? $f.status ?>: <? $f.error.kind ?> <? $f.error.http_status ?>"}}
    ]);
    let e = engine();
    let flow = e.load(&src.to_string(), "f.json").expect("loads");
    let out = e.run(&flow, Store::default(), &traced()).await;
    assert_eq!(
        out.context["f"],
        json!({"status": "error", "error": {"kind": "unavailable", "message": "the function host is down", "http_status": 503}})
    );
    assert_eq!(out.messages[0].message["text"], "trying");
    assert_eq!(out.messages[1].message["text"], "error: unavailable 503");
    assert_eq!(out.trace.len(), 2);
    assert_eq!(
        out.trace[0].warnings,
        ["always_fails failed: unavailable: the function host is down"]
    );
}

#[tokio::test]
async fn typed_results_flow_into_later_templates() {
    let src = json!([
        {"name": "set_variables", "parameters": {"context": {"tags": ["a", "b"], "n": "<? 40 + 2 ?>"}}},
        {"name": "count", "parameters": {"n": "<? $n ?>"}, "result_variable": "c"},
        {"name": "set_variables", "parameters": {"context": {"copy": "<? $tags ?>", "next": "<? $c.next ?>"}}}
    ]);
    let e = engine();
    let flow = e.load(&src.to_string(), "t.json").expect("loads");
    let out = e.run(&flow, Store::default(), &traced()).await;
    assert_eq!(out.context["copy"], json!(["a", "b"]));
    assert_eq!(out.context["next"], json!(43));
}

#[tokio::test]
async fn unknown_action_lists_registered_names() {
    let err = engine()
        .load(r#"[{"name": "cont"}]"#, "x.json")
        .expect_err("unknown action");
    let help = err.diagnostics[0].help.clone().unwrap_or_default();
    assert!(help.contains("did you mean `count`?"), "{help}");
    assert!(help.contains("always_fails"), "{help}");
}

#[tokio::test]
async fn one_flow_runs_concurrently_on_many_tasks() {
    let e = Arc::new(engine());
    let flow = Arc::new(
        e.load(r#"[{"name": "count", "parameters": {"n": "<? contact.n ?>"}, "result_variable": "r"}]"#, "c.json")
            .expect("loads"),
    );
    let mut handles = Vec::new();
    for i in 0..32 {
        let (e, flow) = (e.clone(), flow.clone());
        handles.push(tokio::spawn(async move {
            let store = Store::from_json(&json!({"contact": {"n": i}})).expect("store");
            e.run(&flow, store, &traced()).await.context["r"]["next"].as_i64()
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.expect("task"), Some(i as i64 + 1));
    }
}

#[tokio::test]
async fn bad_context_documents_are_refused_with_a_pointer() {
    let e = Store::from_json(&json!({"contact": [], "context": {}}))
        .expect_err("contact must be an object");
    assert_eq!(
        (e.pointer.as_str(), e.message.as_str()),
        ("/contact", "`contact` must be an object")
    );
    let e = Store::from_json(&json!({"contatc": {}})).expect_err("typo");
    assert!(
        e.message.contains("did you mean `contact`?"),
        "{}",
        e.message
    );
    assert!(Store::from_json(&json!([1])).is_err());
}

/// A run that keeps its trace (these tests read it).
fn traced() -> RunOptions {
    RunOptions {
        trace: true,
        ..RunOptions::default()
    }
}
