//! The per-conversation timeline in process (SQLite store, recording transport): what
//! each handoff went through, secrets and message texts left out unless configured,
//! retention pruning, and the token on the route.

mod service_common;

use std::sync::Arc;

use serde_json::{json, Value};
use service_common::*;
use transbordo::service::store::{LiveChatStore, TimelineEntry};
use transbordo::service::SqliteStore;

async fn world(extra: &str) -> (tempfile::TempDir, Receiver, Running) {
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = Receiver::default().start().await;
    let cfg = write_config(dir.path(), &url, extra);
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    (dir, rx, svc)
}

fn kinds(h: &Value) -> Vec<String> {
    h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// A run with a secret header in an `http_request` before the handoff.
async fn start_with_secret(base: &str, conv: &str) {
    let (s, v) = post(
        base,
        &format!("/v1/conversations/{conv}/run"),
        json!({"flow": [
            {"name": "http_request", "parameters": {"config": {"url": "http://127.0.0.1:9/crm",
                "headers": {"Authorization": "Bearer CRM-SECRET-123"}}}},
            {"name": "start_live_chat", "parameters": {"integration_id": 8}}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["live_chat"]["state"], "waiting", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_timeline_in_order_without_secrets_or_texts() {
    let (_d, rx, svc) = world("").await;
    let b = &svc.base;
    let (s, v) = get(b, "/v1/conversations/t1/timeline").await;
    assert_eq!((s, &v["error"]["code"]), (404, &json!("no_timeline")));
    start_with_secret(b, "t1").await;
    lp_webhook(b, 8, &lp_change("pc-t1", 10, "OPEN", None, true)).await;
    lp_webhook(
        b,
        8,
        &lp_message("pc-t1", 1, "ASSIGNED_AGENT", "Oi, sou a Bia"),
    )
    .await;
    lp_webhook(
        b,
        8,
        &lp_message("pc-t1", 1, "ASSIGNED_AGENT", "Oi, sou a Bia"),
    )
    .await;
    let (s, _) = post(
        b,
        "/v1/conversations/t1/messages",
        json!({"text": "meu pedido"}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = post(b, "/v1/conversations/t1/close", json!({})).await;
    assert_eq!(s, 200);
    assert!(wait_for(std::time::Duration::from_secs(5), || rx.events().len() == 3).await);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let (s, v) = get(b, "/v1/conversations/t1/timeline").await;
    assert_eq!(s, 200, "{v}");
    let text = v.to_string();
    for hidden in ["CRM-SECRET-123", "Oi, sou a Bia", "meu pedido"] {
        assert!(!text.contains(hidden), "{hidden} in {v:#}");
    }
    let hs = v["handoffs"].as_array().unwrap();
    assert_eq!(hs.len(), 1);
    let h = &hs[0];
    assert_eq!(h["state"], "ended");
    assert_eq!(h["status"], "user_closed");
    let k = kinds(h);
    assert_eq!(k[0], "run", "{k:?}");
    let e = &h["entries"][0];
    assert_eq!(e["flow"], "request.flow");
    assert_eq!(
        e["actions"][0]["parameters"]["config"]["headers"]["Authorization"],
        "[redacted]"
    );
    assert_eq!(e["actions"][0]["error_kind"], "forbidden");
    assert_eq!(e["actions"][1]["name"], "start_live_chat");
    // State changes in order, each with its cause.
    let states: Vec<(String, String)> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state")
        .map(|e| {
            (
                e["to"].as_str().unwrap().to_string(),
                e["cause"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("waiting", "handoff"),
        ("with_agent", "agent_joined"),
        ("closing", "user_closed"),
        ("ended", "closed"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(states, want);
    let webhooks: Vec<(Value, Value)> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "webhook")
        .map(|e| (e["event"].clone(), e["result"].clone()))
        .collect();
    assert_eq!(
        webhooks,
        [
            (json!("agent_joined"), json!("applied")),
            (json!("agent_message"), json!("applied")),
            (json!("agent_message"), json!("duplicate")),
        ]
    );
    let messages: Vec<Value> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "message")
        .map(|e| json!([e["direction"], e["length"]]))
        .collect();
    assert_eq!(messages, [json!(["to_user", 13]), json!(["to_agent", 10])]);
    let ops: Vec<Value> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "provider_call")
        .map(|e| json!([e["operation"], e["outcome"]]))
        .collect();
    assert_eq!(ops, [json!(["send", "ok"]), json!(["close", "ok"])]);
    // Three events, each delivered at the first attempt with the builder's answer.
    let deliveries: Vec<Value> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "delivery")
        .map(|e| json!([e["event_type"], e["attempt"], e["result"], e["answer"]]))
        .collect();
    assert_eq!(deliveries.len(), 3, "{deliveries:?}");
    assert!(deliveries
        .iter()
        .all(|d| d[1] == 1 && d[2] == "delivered" && d[3] == "builder answered 200"));
    // Times never go backwards.
    let ats: Vec<i64> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at_ms"].as_i64().unwrap())
        .collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");
    // The route needs the token like every /v1 route.
    let r = client()
        .get(format!("{b}/v1/conversations/t1/timeline"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_text_keeps_the_messages_and_every_handoff_is_listed() {
    let (_d, _rx, svc) = world("[timeline]\ninclude_text = true\nretention_days = 7\n").await;
    let b = &svc.base;
    start_chat(b, "t2", 8).await;
    lp_webhook(b, 8, &lp_message("pc-t2", 1, "ASSIGNED_AGENT", "Olá!")).await;
    post(b, "/v1/conversations/t2/messages", json!({"text": "oi"})).await;
    post(b, "/v1/conversations/t2/close", json!({})).await;
    // A second handoff of the same conversation.
    start_chat(b, "t2", 8).await;
    let (s, v) = get(b, "/v1/conversations/t2/timeline").await;
    assert_eq!(s, 200, "{v}");
    let hs = v["handoffs"].as_array().unwrap();
    assert_eq!(hs.len(), 2, "{v:#}");
    assert_eq!(hs[0]["status"], "user_closed");
    assert_eq!(hs[1]["state"], "waiting");
    let texts: Vec<Value> = hs[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "message")
        .map(|e| e["text"].clone())
        .collect();
    assert_eq!(texts, [json!("Olá!"), json!("oi")]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_drops_entries_older_than_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    let e = |at: i64, kind: &str| TimelineEntry {
        live_chat_id: "h1".into(),
        conversation_id: "c1".into(),
        at,
        kind: kind.into(),
        data: json!({"n": at}),
    };
    s.timeline_append(vec![e(1_000, "old"), e(5_000, "new"), e(9_000, "newer")])
        .await
        .unwrap();
    assert_eq!(s.timeline_prune(5_000).await.unwrap(), 1);
    let left: Vec<String> = s
        .timeline("c1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(left, ["new", "newer"]);
    assert!(s.timeline("other").await.unwrap().is_empty());
}
