//! The outbox: signed deliveries, retried with backoff until 2xx, strictly in order per
//! conversation, a failing conversation not holding back the others.

mod service_common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use service_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_conversation_blocks_only_itself_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::default();
    *rx.fail_prefix.lock().unwrap() = "slow-".into();
    rx.fail_first.store(4, Ordering::SeqCst);
    let (url, rx) = rx.start().await;
    let cfg = write_config(dir.path(), &url, "");
    let svc = start(&cfg, Arc::new(Recorder::default())).await;

    start_chat(&svc.base, "slow-1", 8).await;
    start_chat(&svc.base, "fast-1", 8).await;
    for (conv, pc) in [("slow-1", "pc-slow-1"), ("fast-1", "pc-fast-1")] {
        for i in 1..=5u64 {
            let (s, _) = lp_webhook(
                &svc.base,
                8,
                &lp_message(pc, i, "ASSIGNED_AGENT", &format!("{conv} m{i}")),
            )
            .await;
            assert_eq!(s, 200);
        }
        lp_webhook(
            &svc.base,
            8,
            &lp_change(pc, 10, "CLOSE", Some("AGENT"), true),
        )
        .await;
    }
    // fast-1: joined + 5 messages + ended, delivered while slow-1 is still failing.
    assert!(wait_for(Duration::from_secs(5), || rx.for_conv("fast-1").len() == 7).await);
    assert!(
        rx.for_conv("slow-1").is_empty(),
        "slow-1 must still be failing"
    );
    // slow-1 gets through after 4 failures (backoff 100, 200, 400, 400 ms).
    assert!(wait_for(Duration::from_secs(8), || rx.for_conv("slow-1").len() == 7).await);
    for conv in ["slow-1", "fast-1"] {
        let evs = rx.for_conv(conv);
        let texts: Vec<String> = evs
            .iter()
            .map(|e| match e["type"].as_str().unwrap() {
                "agent_message" => e["text"].as_str().unwrap().to_string(),
                t => t.to_string(),
            })
            .collect();
        let mut want = vec!["agent_joined".to_string()];
        want.extend((1..=5).map(|i| format!("{conv} m{i}")));
        want.push("live_chat_ended".into());
        assert_eq!(texts, want);
        let ids: std::collections::HashSet<_> = evs.iter().map(|e| e["event_id"].clone()).collect();
        assert_eq!(ids.len(), 7, "no duplicates");
    }
    assert_eq!(rx.attempts.load(Ordering::SeqCst), 14 + 4);
    assert_eq!(rx.bad_signatures.load(Ordering::SeqCst), 0);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_down_then_up_and_restart_delivers_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    // A callback URL where nothing listens yet.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let cfg = write_config(dir.path(), &format!("http://{addr}/events"), "");
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    start_chat(&svc.base, "down-1", 8).await;
    lp_webhook(
        &svc.base,
        8,
        &lp_message("pc-down-1", 1, "ASSIGNED_AGENT", "hello"),
    )
    .await;
    post(&svc.base, "/v1/conversations/down-1/close", json!({})).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    svc.stop().await;
    // The builder comes up on that address; a new process delivers the backlog.
    let rx = Receiver::default();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let r2 = rx.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |h: axum::http::HeaderMap, b: axum::body::Bytes| {
            let r = r2.clone();
            async move { r.handle_pub(h, b) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    assert!(wait_for(Duration::from_secs(5), || rx.for_conv("down-1").len() == 3).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let types: Vec<_> = rx
        .for_conv("down-1")
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(
        types,
        [
            json!("agent_joined"),
            json!("agent_message"),
            json!("live_chat_ended")
        ]
    );
    assert_eq!(rx.ended("down-1"), vec!["user_closed"]);
    svc.stop().await;
}
