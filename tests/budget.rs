//! The run budget (issue 15): what a user sees when a run exceeds each budget — values
//! built, evaluation work, the wall deadline, and `http_request.timeout` over its
//! maximum at `check` and at run time.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use transbordo::interp::RunOutcome;
use transbordo::{Engine, RunLimits, RunOptions, Store};

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s
}

fn traced() -> RunOptions {
    RunOptions {
        trace: true,
        ..RunOptions::default()
    }
}

/// The doubling keys `s0 = 'x'×16`, `s1 = $s0+$s0` … `s{n}` of a context block.
fn doubling(context: &mut serde_json::Map<String, Value>, n: usize) {
    context.insert("s0".into(), json!("xxxxxxxxxxxxxxxx"));
    for i in 1..=n {
        context.insert(
            format!("s{i}"),
            json!(format!("<? $s{} + $s{} ?>", i - 1, i - 1)),
        );
    }
}

/// What a user sees of a run: warnings, each action's result, the messages sent (by
/// length: a budget must keep them small), and the context keys set.
fn summary(o: &RunOutcome) -> String {
    // The first few: once a budget is spent, the rest say the same.
    let warnings: Vec<Value> = o
        .warnings
        .iter()
        .take(4)
        .map(|w| json!({"pointer": w.pointer, "message": w.message}))
        .collect();
    let results: Vec<Value> = o
        .trace
        .iter()
        .map(|t| json!({"index": t.index, "name": t.name, "result": t.result}))
        .collect();
    let messages: Vec<usize> = o
        .messages
        .iter()
        .map(|m| m.message.to_string().len())
        .collect();
    let keys: Vec<&String> = o
        .context
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    serde_json::to_string_pretty(&json!({
        "warnings": warnings,
        "warnings_total": o.warnings.len(),
        "results": results,
        "message_sizes": messages,
        "context_keys": keys,
    }))
    .unwrap_or_default()
}

async fn run(engine: &Engine, flow: &Value, limits: RunLimits) -> RunOutcome {
    let flow = engine.load(&flow.to_string(), "flow.json").expect("loads");
    engine
        .run_with_limits(&flow, Store::default(), &traced(), limits)
        .await
}

/// The result of action `i` in the trace.
fn result(o: &RunOutcome, i: usize) -> &Value {
    &o.trace
        .iter()
        .find(|t| t.index == i)
        .expect("traced")
        .result
}

fn error_kind(v: &Value) -> Option<&str> {
    v.pointer("/error/kind").and_then(Value::as_str)
}

#[tokio::test]
async fn the_675_byte_attack_in_the_context_block_stops_at_the_bytes_budget() {
    let mut context = serde_json::Map::new();
    doubling(&mut context, 16);
    context.insert("a0".into(), json!("<? [$s16, $s16] ?>"));
    for i in 1..=6 {
        context.insert(
            format!("a{i}"),
            json!(format!("<? [$a{}, $a{}] ?>", i - 1, i - 1)),
        );
    }
    let flow = json!({
        "context": context,
        "actions": [{"name": "send_message", "parameters": {"text": "after: <? $s2 ?>"}}],
        "output": [{"type": "text", "text": "<? $a6 ?>"}]
    });
    let started = Instant::now();
    let o = run(&Engine::new(), &flow, RunLimits::default()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // The values that fit are set; the one that does not is a warning, and so is
    // everything after it (a spent budget stays spent).
    let ctx = o.context.as_object().expect("object");
    assert!(ctx.contains_key("s16") && !ctx.contains_key("a6"));
    assert!(o
        .warnings
        .iter()
        .any(|w| w.pointer.starts_with("/context/a")
            && w.message
                .contains("run budget exceeded: values built by templates exceed 16 MiB")));
    assert_eq!(error_kind(result(&o, 0)), Some("limit"));
    assert!(o
        .messages
        .iter()
        .all(|m| m.message.to_string().len() < 1024));
    settings().bind(|| insta::assert_snapshot!("bytes_in_context_block", summary(&o)));
}

#[tokio::test]
async fn a_bytes_budget_spent_in_an_action_fails_it_with_kind_limit_and_its_pointer() {
    let mut context = serde_json::Map::new();
    doubling(&mut context, 16);
    let twenty = vec!["$s16"; 20].join(", ");
    let flow = json!({
        "context": context,
        "actions": [
            {"name": "send_message", "parameters": {"text": "ok"}},
            {"name": "send_message", "parameters": {"text": format!("<? [{twenty}] ?>")}},
            {"name": "send_message", "parameters": {"text": "static text, still not sent"}},
        ],
    });
    let o = run(&Engine::new(), &flow, RunLimits::default()).await;
    assert_eq!(result(&o, 0)["status"], "ok");
    let failed = result(&o, 1);
    assert_eq!(error_kind(failed), Some("limit"));
    assert_eq!(
        failed.pointer("/error/message").and_then(Value::as_str),
        Some("run budget exceeded: values built by templates exceed 16 MiB (16777216 bytes) at /actions/1/parameters/text")
    );
    assert_eq!(error_kind(result(&o, 2)), Some("limit"));
    assert_eq!(o.messages.len(), 1);
    settings().bind(|| insta::assert_snapshot!("bytes_in_action", summary(&o)));
}

#[tokio::test]
async fn the_replace_attack_stops_at_the_work_budget_in_well_under_a_second() {
    let mut context = serde_json::Map::new();
    doubling(&mut context, 16);
    for i in 0..200 {
        context.insert(format!("r{i}"), json!("<? /y/.test($s16) ?>"));
    }
    let flow = json!({
        "context": context,
        "actions": [{"name": "send_message", "parameters": {"text": "<? $r0 ?>"}}],
    });
    let started = Instant::now();
    let o = run(&Engine::new(), &flow, RunLimits::default()).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        o.warnings.iter().any(|w| w
            .message
            .contains("run budget exceeded: evaluation work exceeds")),
        "{}",
        summary(&o)
    );
    assert_eq!(error_kind(result(&o, 0)), Some("limit"));
    settings().bind(|| insta::assert_snapshot!("work_in_context_block", summary(&o)));
}

#[tokio::test]
async fn regex_replace_over_the_bytes_budget_fails_before_building_it() {
    let mut context = serde_json::Map::new();
    doubling(&mut context, 12);
    let flow = json!({
        "context": context,
        "actions": [{"name": "send_message", "parameters": {"text": "<? $s12.replace(/x/g, 'yyyyyyyyyyyyyyyy').length ?>"}}],
    });
    let limits = RunLimits {
        bytes: 512 << 10,
        ..RunLimits::default()
    };
    let o = run(&Engine::new(), &flow, limits).await;
    let failed = result(&o, 0);
    assert_eq!(error_kind(failed), Some("limit"), "{failed}");
    assert_eq!(
        failed.pointer("/error/message").and_then(Value::as_str),
        Some("run budget exceeded: values built by templates exceed 512 KiB (524288 bytes) at /actions/0/parameters/text")
    );
}

#[tokio::test]
async fn the_deadline_bounds_an_action_that_waits() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let flow = json!({
        "actions": [
            {"name": "http_request", "parameters": {"config": {"url": format!("http://{addr}/slow"), "timeout": 20000}}},
            {"name": "send_message", "parameters": {"text": "never"}},
        ],
    });
    let limits = RunLimits {
        deadline: Duration::from_millis(300),
        ..RunLimits::default()
    };
    let started = Instant::now();
    let o = run(&Engine::new(), &flow, limits).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        result(&o, 0)
            .pointer("/error/message")
            .and_then(Value::as_str),
        Some("run budget exceeded: the run took longer than its deadline of 300 ms at /actions/0")
    );
    assert_eq!(error_kind(result(&o, 1)), Some("limit"));
    settings().bind(|| insta::assert_snapshot!("deadline", summary(&o)));
}

#[test]
fn check_refuses_an_http_timeout_literal_over_the_maximum() {
    let src = r#"{
  "actions": [
    {"name": "http_request", "parameters": {"config": {
      "url": "https://api.example.com/x",
      "timeout": 99999999999
    }}}
  ]
}"#;
    let diags = Engine::new().check(src, "flow.json", None);
    let shown: Vec<String> = diags.iter().map(|d| d.one_line()).collect();
    assert!(shown
        .iter()
        .any(|l| l.contains("exceeds the maximum of 60000 ms")));
    settings().bind(|| insta::assert_snapshot!("http_timeout_check", shown.join("\n")));
    // Within the maximum (and configurable): no problem.
    let ok = src.replace("99999999999", "60000");
    assert!(Engine::new().check(&ok, "flow.json", None).is_empty());
    let engine = Engine::new().with_limits(RunLimits {
        http_timeout_max: Duration::from_secs(5),
        ..RunLimits::default()
    });
    assert!(!engine.check(&ok, "flow.json", None).is_empty());
}

#[tokio::test]
async fn a_templated_http_timeout_over_the_maximum_fails_at_run_time_with_kind_limit() {
    let flow = json!({
        "context": {"t": 99999999999u64},
        "actions": [
            {"name": "http_request", "parameters": {"config": {"url": "https://api.example.com/x", "timeout": "<? $t ?>"}}},
        ],
    });
    let engine = Engine::new();
    let loaded = engine.load(&flow.to_string(), "flow.json").expect("loads");
    let opts = RunOptions {
        dry_run: true,
        trace: true,
        ..RunOptions::default()
    };
    let o = engine.run(&loaded, Store::default(), &opts).await;
    assert_eq!(error_kind(result(&o, 0)), Some("limit"));
    assert!(o.requests.is_empty(), "nothing recorded");
    settings().bind(|| insta::assert_snapshot!("http_timeout_run", summary(&o)));
}

#[tokio::test]
async fn ordinary_flows_are_untouched_by_the_default_budget() {
    let flow = json!({
        "context": {"name": "ana", "n": "<? 40 + 2 ?>"},
        "actions": [
            {"name": "send_message", "parameters": {"text": "Olá <? $name | upper ?>, <? [1,2,3].join('-') ?> <? JSON.stringify({a: $n}) ?> <? 'a,b'.split(',').length ?>"}},
        ],
    });
    let o = run(&Engine::new(), &flow, RunLimits::default()).await;
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    assert_eq!(o.messages[0].message["text"], "Olá ANA, 1-2-3 {\"a\":42} 2");
}

#[tokio::test]
async fn run_options_limits_override_the_engines_for_one_run() {
    let flow = json!({
        "actions": [
            {"name": "send_message", "parameters": {"text": "<? [1,2,3,4,5,6,7,8].join('-----') ?>"}},
        ],
    });
    let engine = Engine::new();
    let loaded = engine.load(&flow.to_string(), "flow.json").expect("loads");
    let tight = RunOptions {
        trace: true,
        limits: Some(RunLimits {
            bytes: 16,
            ..RunLimits::default()
        }),
        ..RunOptions::default()
    };
    let o = engine.run(&loaded, Store::default(), &tight).await;
    assert_eq!(error_kind(result(&o, 0)), Some("limit"), "{:?}", o.trace);
    // The same engine, without per-run limits, keeps its own (default) budget.
    let o = engine
        .run(&loaded, Store::default(), &RunOptions::default())
        .await;
    assert!(o.messages[0].message["text"]
        .as_str()
        .is_some_and(|t| t == "1-----2-----3-----4-----5-----6-----7-----8"));
}
