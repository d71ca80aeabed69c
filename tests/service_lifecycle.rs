//! The live chat state machine through the HTTP API, in process, over loopback:
//! exactly-once endings under duplicate / out-of-order / late events, timers, restarts,
//! and webhook authentication (forged → 401, nothing changes).

mod service_common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use service_common::*;

async fn setup() -> (tempfile::TempDir, Receiver, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = Receiver::default().start().await;
    let cfg = write_config(dir.path(), &url, "");
    (dir, rx, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_fires_once_and_closes_the_provider_conversation() {
    let (_dir, rx, cfg) = setup().await;
    let t = Arc::new(Recorder::default());
    let svc = start(&cfg, t.clone()).await;
    let v = start_chat(&svc.base, "c-wait", 7).await;
    assert!(v["live_chat"]["deadlines"]["wait_ms"].is_i64());
    // A second run while the live chat is open is refused.
    let (s, e) = post(
        &svc.base,
        "/v1/conversations/c-wait/run",
        json!({"flow": []}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("live_chat_open"))
    );

    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-wait").len() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.ended("c-wait"), vec!["timeout"]);
    assert_eq!(t.count("close"), 1);
    let (_, lc) = get(&svc.base, "/v1/conversations/c-wait/live_chat").await;
    assert_eq!(lc["live_chat"]["state"], "ended");
    assert_eq!(lc["live_chat"]["status"], "timeout");
    // The provider's close echo (closeReason CONSUMER: we closed as the consumer) is late.
    let (s, r) = lp_webhook(
        &svc.base,
        7,
        &lp_change("pc-c-wait", 500, "CLOSE", Some("CONSUMER"), false),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(r["events"], json!(["ignored"]));
    // After the end a new run is allowed again.
    let (s, _) = post(
        &svc.base,
        "/v1/conversations/c-wait/run",
        json!({"flow": []}),
    )
    .await;
    assert_eq!(s, 200);
    svc.stop().await;
    assert_eq!(rx.ended("c-wait"), vec!["timeout"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_joins_timer_does_nothing_messages_flow_agent_closes_once() {
    let (_dir, rx, cfg) = setup().await;
    let t = Arc::new(Recorder::default());
    let svc = start(&cfg, t.clone()).await;
    start_chat(&svc.base, "c-join", 7).await;
    let joined = lp_change("pc-c-join", 100, "OPEN", None, true);
    assert_eq!(
        lp_webhook(&svc.base, 7, &joined).await.1["events"],
        json!(["applied"])
    );
    // Duplicate delivery of the same notification.
    assert_eq!(
        lp_webhook(&svc.base, 7, &joined).await.1["events"],
        json!(["duplicate"])
    );
    let (_, lc) = get(&svc.base, "/v1/conversations/c-join/live_chat").await;
    assert_eq!(lc["live_chat"]["state"], "with_agent");
    assert!(lc["live_chat"]["deadlines"]["wait_ms"].is_null());

    // Agent message (twice: duplicate) and the consumer echo (ignored).
    let m = lp_message("pc-c-join", 3, "ASSIGNED_AGENT", "Olá, sou a Bia");
    lp_webhook(&svc.base, 7, &m).await;
    lp_webhook(&svc.base, 7, &m).await;
    lp_webhook(
        &svc.base,
        7,
        &lp_message("pc-c-join", 4, "CONSUMER", "echo"),
    )
    .await;
    // User message relayed.
    let (s, v) = post(
        &svc.base,
        "/v1/conversations/c-join/messages",
        json!({"text": "oi"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        t.calls()[0],
        ("send".into(), "pc-c-join".into(), "oi".into())
    );

    // The wait timeout (1 s) passes: nothing happens.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rx.ended("c-join").is_empty());

    // Agent closes; then a late, older update and a duplicate close.
    let close = lp_change("pc-c-join", 300, "CLOSE", Some("AGENT"), true);
    assert_eq!(
        lp_webhook(&svc.base, 7, &close).await.1["events"],
        json!(["applied"])
    );
    assert_eq!(
        lp_webhook(&svc.base, 7, &close).await.1["events"],
        json!(["duplicate"])
    );
    let older = lp_change("pc-c-join", 200, "OPEN", None, true);
    assert_eq!(
        lp_webhook(&svc.base, 7, &older).await.1["events"],
        json!(["stale"])
    );
    let (s, e) = post(
        &svc.base,
        "/v1/conversations/c-join/messages",
        json!({"text": "still?"}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("no_live_chat"))
    );

    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-join").len() == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let types: Vec<String> = rx
        .for_conv("c-join")
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["agent_joined", "agent_message", "live_chat_ended"]);
    assert_eq!(rx.for_conv("c-join")[1]["text"], "Olá, sou a Bia");
    assert_eq!(rx.ended("c-join"), vec!["agent_closed"]);
    assert_eq!(t.count("close"), 0);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_close_before_join_ends_once() {
    let (_dir, rx, cfg) = setup().await;
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    start_chat(&svc.base, "c-ooo", 8).await;
    let close = lp_change("pc-c-ooo", 300, "CLOSE", Some("SYSTEM"), true);
    let join = lp_change("pc-c-ooo", 100, "OPEN", None, true);
    // SYSTEM close while still waiting → error (documented mapping).
    assert_eq!(
        lp_webhook(&svc.base, 8, &close).await.1["events"],
        json!(["applied"])
    );
    assert_eq!(
        lp_webhook(&svc.base, 8, &join).await.1["events"],
        json!(["stale"])
    );
    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-ooo").len() == 1).await);
    assert_eq!(rx.ended("c-ooo"), vec!["error"]);
    assert!(rx
        .for_conv("c-ooo")
        .iter()
        .all(|e| e["type"] != "agent_joined"));
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_close_closes_provider_and_absorbs_the_echo() {
    let (_dir, rx, cfg) = setup().await;
    let t = Arc::new(Recorder::default());
    let svc = start(&cfg, t.clone()).await;
    start_chat(&svc.base, "c-uc", 8).await;
    let (s, v) = post(&svc.base, "/v1/conversations/c-uc/close", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["live_chat"]["status"], "user_closed");
    assert_eq!(t.count("close"), 1);
    let echo = lp_change("pc-c-uc", 900, "CLOSE", Some("CONSUMER"), false);
    assert_eq!(
        lp_webhook(&svc.base, 8, &echo).await.1["events"],
        json!(["ignored"])
    );
    let (s, e) = post(&svc.base, "/v1/conversations/c-uc/close", json!({})).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("no_live_chat"))
    );
    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-uc").len() == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.ended("c-uc"), vec!["user_closed"]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactivity_timeout_resets_on_user_messages() {
    let (_dir, rx, cfg) = setup().await;
    let t = Arc::new(Recorder::default());
    let svc = start(&cfg, t.clone()).await;
    let v = start_chat(&svc.base, "c-inact", 3).await;
    let hid = v["live_chat"]["handoff_id"].as_str().unwrap().to_string();
    let ev = altu_event(
        "AGENT_JOINED",
        "e1",
        &hid,
        "pc-c-inact",
        json!({"agent": {"id": "a1", "name": "Bia"}}),
    );
    let (s, r) = altu_webhook(&svc.base, 3, &ev, &altu_token("j1", &hid)).await;
    assert_eq!((s, &r), (200, &json!({"ok": true, "events": ["applied"]})));
    // Keep the user active for ~1.5 s (inactivity timeout is 1 s).
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (s, _) = post(
            &svc.base,
            "/v1/conversations/c-inact/messages",
            json!({"text": format!("m{i}")}),
        )
        .await;
        assert_eq!(s, 200);
    }
    assert!(rx.ended("c-inact").is_empty());
    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-inact").len() == 1).await);
    assert_eq!(rx.ended("c-inact"), vec!["user_inactivity_timeout"]);
    assert_eq!(t.count("close"), 1);
    assert_eq!(t.count("send"), 3);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_end_with_error() {
    let (_dir, rx, cfg) = setup().await;
    let t = Arc::new(Recorder::default());
    t.fail_close.store(true, Ordering::SeqCst);
    let svc = start(&cfg, t.clone()).await;
    // Wait timeout, but the close fails → error.
    start_chat(&svc.base, "c-fail-close", 7).await;
    // Send fails → 502 and error.
    start_chat(&svc.base, "c-fail-send", 8).await;
    t.fail_send.store(true, Ordering::SeqCst);
    let (s, e) = post(
        &svc.base,
        "/v1/conversations/c-fail-send/messages",
        json!({"text": "oi"}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (502, Some("provider_error"))
    );
    assert!(
        wait_for(Duration::from_secs(5), || {
            rx.ended("c-fail-close").len() == 1 && rx.ended("c-fail-send").len() == 1
        })
        .await
    );
    assert_eq!(rx.ended("c-fail-close"), vec!["error"]);
    assert_eq!(rx.ended("c-fail-send"), vec!["error"]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_and_replayed_webhooks_are_refused_and_change_nothing() {
    let (_dir, rx, cfg) = setup().await;
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    start_chat(&svc.base, "c-lp", 8).await;
    start_chat(&svc.base, "c-zd", 1).await;
    start_chat(&svc.base, "c-al", 3).await;
    let close = lp_change("pc-c-lp", 1, "CLOSE", Some("AGENT"), true).to_string();
    let wrong = transbordo::service::auth::liveperson_signature("not-the-secret", close.as_bytes());
    for headers in [
        vec![],
        vec![("x-liveperson-signature", wrong)],
        vec![("x-liveperson-signature", "sha1=!!".to_string())],
    ] {
        let (s, e) = send_raw(
            &svc.base,
            "/webhooks/liveperson/8",
            &headers,
            close.as_bytes(),
        )
        .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    // Signed for another body (tampered).
    let sig = transbordo::service::auth::liveperson_signature(LP_SECRET, b"{}");
    let (s, _) = send_raw(
        &svc.base,
        "/webhooks/liveperson/8",
        &[("x-liveperson-signature", sig)],
        close.as_bytes(),
    )
    .await;
    assert_eq!(s, 401);
    // Unknown integration / wrong provider.
    let (s, _) = lp_webhook(&svc.base, 99, &json!({})).await;
    assert_eq!(s, 404);
    let (s, _) = lp_webhook(&svc.base, 1, &json!({})).await;
    assert_eq!(s, 404);
    // Authenticated but malformed → 400.
    let (s, e) = lp_webhook(
        &svc.base,
        8,
        &json!({"type": "cqm.ExConversationChangeNotification"}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("malformed_event"))
    );

    // Zendesk: stale timestamp, wrong secret, missing headers.
    let solved = json!({"ticket_id": "pc-c-zd", "status": "solved"});
    let (s, _) = zd_webhook(&svc.base, 1, &solved, "2021-07-25T10:00:00Z").await;
    assert_eq!(s, 401);
    let raw = solved.to_string();
    let ts = zendesk_now();
    let bad = transbordo::service::auth::zendesk_signature("nope", &ts, raw.as_bytes());
    let (s, _) = send_raw(
        &svc.base,
        "/webhooks/zendesk/1",
        &[
            ("x-zendesk-webhook-signature", bad),
            ("x-zendesk-webhook-signature-timestamp", ts.clone()),
        ],
        raw.as_bytes(),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = send_raw(&svc.base, "/webhooks/zendesk/1", &[], raw.as_bytes()).await;
    assert_eq!(s, 401);

    // ALTU (protocol §3): every failed check is 401 and changes nothing.
    let hid = |v: &serde_json::Value| v["live_chat"]["handoff_id"].as_str().unwrap().to_string();
    let al = hid(&get(&svc.base, "/v1/conversations/c-al/live_chat").await.1);
    let lp = hid(&get(&svc.base, "/v1/conversations/c-lp/live_chat").await.1);
    let ev = altu_event(
        "AGENT_CLOSED",
        "x1",
        &al,
        "pc-c-al",
        json!({"reason": "resolved"}),
    );
    let now = transbordo::service::now_ms() / 1000;
    let none_alg = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(altu_claims("n", &al).to_string().as_bytes())
    );
    // Our own (transbordo → platform) token, replayed at us.
    let ours = transbordo::providers::jwt::sign_hs256(
        &transbordo::providers::jwt::connector_claims(
            "transbordo",
            "http://127.0.0.1:9/webhooks/altu/3",
            ALTU_ACCESS_TOKEN,
            &al,
            now as u64,
            60,
        ),
        ALTU_KEY.as_bytes(),
    );
    let forged = [
        ("wrong key", altu_token_with("other", "a", &al, json!({}))),
        (
            "expired",
            altu_token_with(
                ALTU_KEY,
                "b",
                &al,
                json!({"iat": now - 200, "exp": now - 150}),
            ),
        ),
        (
            "too long-lived",
            altu_token_with(ALTU_KEY, "c", &al, json!({"exp": now + 3600})),
        ),
        (
            "no jti",
            altu_token_with(ALTU_KEY, "d", &al, json!({"jti": null})),
        ),
        (
            "wrong sub",
            altu_token_with(ALTU_KEY, "e", &al, json!({"sub": "other"})),
        ),
        (
            "no sub",
            altu_token_with(ALTU_KEY, "f", &al, json!({"sub": null})),
        ),
        ("other conversation", altu_token("g", &lp)),
        (
            "no conversation claim",
            altu_token_with(ALTU_KEY, "h", &al, json!({"conversation_id": null})),
        ),
        (
            "no iss",
            altu_token_with(ALTU_KEY, "i", &al, json!({"iss": null})),
        ),
        (
            "our iss",
            altu_token_with(ALTU_KEY, "j", &al, json!({"iss": "transbordo"})),
        ),
        ("our own token", ours),
        (
            "other aud path",
            altu_token_with(
                ALTU_KEY,
                "k",
                &al,
                json!({"aud": "https://x/webhooks/altu/4"}),
            ),
        ),
        (
            "no aud",
            altu_token_with(ALTU_KEY, "l", &al, json!({"aud": null})),
        ),
        ("alg none", none_alg),
        ("garbage", "garbage".to_string()),
    ];
    for (name, tok) in &forged {
        let (s, e) = altu_webhook(&svc.base, 3, &ev, tok).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{name}: {e}"
        );
    }
    let (s, _) = send_raw(
        &svc.base,
        "/webhooks/altu/3",
        &[],
        ev.to_string().as_bytes(),
    )
    .await;
    assert_eq!(s, 401, "unsigned");
    // A token signed for another body: the binding to the conversation fails.
    let other_body = altu_event("AGENT_CLOSED", "x1", &lp, "pc-c-lp", json!({}));
    assert_eq!(
        altu_webhook(&svc.base, 3, &other_body, &altu_token("m", &al))
            .await
            .0,
        401
    );

    // Nothing changed.
    for conv in ["c-lp", "c-zd", "c-al"] {
        let (_, lc) = get(&svc.base, &format!("/v1/conversations/{conv}/live_chat")).await;
        assert_eq!(lc["live_chat"]["state"], "waiting", "{conv}");
    }

    // Now properly signed: applied; a replayed token is refused even with a new event id;
    // a retry (same event id, fresh token) is a duplicate; later events are ignored.
    let tok = altu_token("once", &al);
    assert_eq!(
        altu_webhook(&svc.base, 3, &ev, &tok).await,
        (200, json!({"ok": true, "events": ["applied"]}))
    );
    // The same request again (token and body: a proxy's retry after the replica that
    // burnt the token died before applying it) is let through, and deduplicated.
    assert_eq!(
        altu_webhook(&svc.base, 3, &ev, &tok).await,
        (200, json!({"ok": true, "events": ["duplicate"]}))
    );
    let ev2 = altu_event("USER_CLOSED", "x2", &al, "pc-c-al", json!({}));
    assert_eq!(altu_webhook(&svc.base, 3, &ev2, &tok).await.0, 401);
    assert_eq!(
        altu_webhook(&svc.base, 3, &ev, &altu_token("retry", &al)).await,
        (200, json!({"ok": true, "events": ["duplicate"]}))
    );
    assert_eq!(
        altu_webhook(&svc.base, 3, &ev2, &altu_token("late", &al)).await,
        (200, json!({"ok": true, "events": ["ignored"]}))
    );
    let (s, r) = zd_webhook(&svc.base, 1, &solved, &zendesk_now()).await;
    assert_eq!((s, &r["events"]), (200, &json!(["applied"])));
    let (s, r) = zd_webhook(&svc.base, 1, &solved, &zendesk_now()).await;
    assert_eq!((s, &r["events"]), (200, &json!(["duplicate"])));
    assert!(
        wait_for(Duration::from_secs(5), || rx.ended("c-al").len() == 1
            && rx.ended("c-zd").len() == 1)
        .await
    );
    assert_eq!(rx.ended("c-zd"), vec!["agent_closed"]);
    assert_eq!(rx.ended("c-al"), vec!["agent_closed"]);
    assert!(rx.ended("c-lp").is_empty());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_event_subscribed_join_comment_and_private_notes() {
    let (_dir, rx, cfg) = setup().await;
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    start_chat(&svc.base, "c-zev", 1).await;
    let ts = zendesk_now();
    let status = |id: &str, st: &str| {
        json!({"type": "zen:event-type:ticket.status_changed", "id": id,
        "subject": "zen:ticket:pc-c-zev", "time": "2024-01-01T00:00:00Z",
        "detail": {"id": "pc-c-zev", "status": st, "assignee_id": "55"},
        "event": {"previous": "NEW", "current": st}})
    };
    let comment = |id: &str, public: bool, staff: bool, text: &str| {
        json!({
        "type": "zen:event-type:ticket.comment_added", "id": id,
        "detail": {"id": "pc-c-zev"},
        "event": {"comment": {"id": id, "body": text, "is_public": public,
                               "author": {"id": "55", "name": "Bia", "is_staff": staff}}}})
    };
    assert_eq!(
        zd_webhook(&svc.base, 1, &status("s1", "OPEN"), &ts).await.1["events"],
        json!(["applied"])
    );
    assert_eq!(
        zd_webhook(&svc.base, 1, &comment("k1", true, true, "Oi!"), &ts)
            .await
            .1["events"],
        json!(["applied"])
    );
    assert_eq!(
        zd_webhook(&svc.base, 1, &comment("k2", false, true, "internal"), &ts)
            .await
            .1["events"],
        json!([])
    );
    assert_eq!(
        zd_webhook(&svc.base, 1, &comment("k3", true, false, "from user"), &ts)
            .await
            .1["events"],
        json!([])
    );
    assert_eq!(
        zd_webhook(&svc.base, 1, &status("s2", "SOLVED"), &ts)
            .await
            .1["events"],
        json!(["applied"])
    );
    assert_eq!(
        zd_webhook(&svc.base, 1, &status("s3", "CLOSED"), &ts)
            .await
            .1["events"],
        json!(["ignored"])
    );
    assert!(wait_for(Duration::from_secs(5), || rx.for_conv("c-zev").len() == 3).await);
    let evs = rx.for_conv("c-zev");
    assert_eq!(evs[0]["type"], "agent_joined");
    assert_eq!(evs[1]["text"], "Oi!");
    assert_eq!(evs[1]["agent"], json!({"id": "55", "name": "Bia"}));
    assert_eq!(
        evs[2]["input"],
        json!({"live_chat": {"status": "agent_closed"}})
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_fires_after_a_restart() {
    let (_dir, rx, cfg) = setup().await;
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    start_chat(&svc.base, "c-restart", 7).await;
    svc.stop().await; // before the 1 s deadline
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(rx.ended("c-restart").is_empty());
    let t = Arc::new(Recorder::default());
    let svc = start(&cfg, t.clone()).await; // overdue: fires at once
    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-restart").len() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.ended("c-restart"), vec!["timeout"]);
    assert_eq!(t.count("close"), 1);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_endings_produce_exactly_one_event() {
    let (_dir, rx, cfg) = setup().await;
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    start_chat(&svc.base, "c-race", 8).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let base = svc.base.clone();
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => {
                    lp_webhook(
                        &base,
                        8,
                        &lp_change("pc-c-race", 1000 + i, "CLOSE", Some("AGENT"), true),
                    )
                    .await
                    .0
                }
                1 => {
                    post(&base, "/v1/conversations/c-race/close", json!({}))
                        .await
                        .0
                }
                _ => {
                    lp_webhook(
                        &base,
                        8,
                        &lp_change("pc-c-race", 2000 + i, "CLOSE", Some("CONSUMER"), false),
                    )
                    .await
                    .0
                }
            }
        }));
    }
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 200 || s == 409, "{s}");
    }
    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-race").len() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.ended("c-race").len(), 1);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_json_4xx() {
    let (dir, _rx, cfg) = setup().await;
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    let cases = [
        ("/v1/conversations/x/run", "not json", 400, "bad_request"),
        ("/v1/conversations/x/run", "{}", 400, "bad_request"),
        (
            "/v1/conversations/x/run",
            r#"{"flow_file": "a.json"}"#,
            400,
            "flows_dir_not_configured",
        ),
        (
            "/v1/conversations/x/run",
            r#"{"flow": [{"name": "nope"}]}"#,
            422,
            "flow_invalid",
        ),
        (
            "/v1/conversations/x/run",
            r#"{"flow": [], "context": {"contact": 5}}"#,
            400,
            "bad_context",
        ),
        (
            "/v1/conversations/x/messages",
            r#"{"text": ""}"#,
            400,
            "bad_request",
        ),
        (
            "/v1/conversations/x/messages",
            r#"{"text": "hi"}"#,
            409,
            "no_live_chat",
        ),
        ("/v1/conversations/x/close", "{}", 409, "no_live_chat"),
    ];
    for (path, body, status, code) in cases {
        let auth = [("authorization", format!("Bearer {API_TOKEN}"))];
        let (s, e) = send_raw(&svc.base, path, &auth, body.as_bytes()).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {body}: {e}"
        );
        assert!(e["error"]["message"].is_string());
    }
    let (s, e) = get(&svc.base, "/v1/conversations/x/live_chat").await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("no_live_chat"))
    );
    let (s, h) = get(&svc.base, "/healthz").await;
    assert_eq!((s, h), (200, json!({"status": "ok"})));
    svc.stop().await;
    let _ = dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altu_connector_events_follow_the_protocol() {
    let (_dir, rx, cfg) = setup().await;
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    let mut hids = Vec::new();
    for c in ["c-a1", "c-a2", "c-a3"] {
        let v = start_chat(&svc.base, c, 3).await;
        hids.push(v["live_chat"]["handoff_id"].as_str().unwrap().to_string());
    }
    let (a1, a2, a3) = (&hids[0], &hids[1], &hids[2]);
    let mut n = 0;
    let mut send = |ev: serde_json::Value, conv: &str| {
        n += 1;
        let tok = altu_token(&format!("t{n}"), conv);
        let base = svc.base.clone();
        async move { altu_webhook(&base, 3, &ev, &tok).await }
    };
    let ok = |e: &str| json!({"ok": true, "events": [e]});

    // Malformed → 400 (with a valid token), nothing changes.
    for bad in [
        altu_event("AGENT_DANCED", "b1", a1, "pc-c-a1", json!({})),
        json!({"event": "AGENT_JOINED", "event_id": "b2", "conversation_id": a1, "data": {}}),
        json!({"event": "AGENT_JOINED", "conversation_id": a1, "platform_conversation_id": "pc-c-a1"}),
        altu_event("AGENT_JOINED", "b3", a1, "pc-c-a1", json!("x")),
        altu_event(
            "AGENT_MESSAGE",
            "b4",
            a1,
            "pc-c-a1",
            json!({"agent": {"id": "a-1"}}),
        ),
    ] {
        let (s, e) = send(bad.clone(), a1).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (400, Some("malformed_event")),
            "{bad}"
        );
    }
    // Unknown platform conversation, or a platform id of another conversation → 404.
    let (s, e) = send(
        altu_event("AGENT_JOINED", "u1", a1, "pc-nope", json!({})),
        a1,
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("unknown_conversation"))
    );
    let (s, _) = send(
        altu_event("AGENT_JOINED", "u2", a2, "pc-c-a1", json!({})),
        a2,
    )
    .await;
    assert_eq!(s, 404);
    for c in ["c-a1", "c-a2", "c-a3"] {
        let (_, lc) = get(&svc.base, &format!("/v1/conversations/{c}/live_chat")).await;
        assert_eq!(lc["live_chat"]["state"], "waiting", "{c}");
    }

    // c-a1: join, a message in `data`, one in the draft's top-level form, agent close.
    let join = altu_event(
        "AGENT_JOINED",
        "j",
        a1,
        "pc-c-a1",
        json!({"agent": {"id": "a-1", "name": "Ana"}}),
    );
    assert_eq!(send(join, a1).await, (200, ok("applied")));
    let msg = altu_event(
        "AGENT_MESSAGE",
        "m1",
        a1,
        "pc-c-a1",
        json!({"text": "Olá, sou a Ana", "agent": {"id": "a-1"}}),
    );
    assert_eq!(send(msg.clone(), a1).await, (200, ok("applied")));
    assert_eq!(send(msg, a1).await, (200, ok("duplicate")));
    let draft = json!({"event": "AGENT_MESSAGE", "event_id": "m2", "conversation_id": a1,
        "platform_conversation_id": "pc-c-a1", "text": "Tudo bem?", "agent": {"id": "a-1"}});
    assert_eq!(send(draft, a1).await, (200, ok("applied")));
    let closed = altu_event(
        "AGENT_CLOSED",
        "c",
        a1,
        "pc-c-a1",
        json!({"reason": "resolved"}),
    );
    assert_eq!(send(closed, a1).await, (200, ok("applied")));
    // c-a2: the user left on the platform side; c-a3: the platform lost it.
    let uc = altu_event("USER_CLOSED", "uc", a2, "pc-c-a2", json!({}));
    assert_eq!(send(uc, a2).await, (200, ok("applied")));
    let err = altu_event(
        "ERROR",
        "er",
        a3,
        "pc-c-a3",
        json!({"code": "lost", "message": "gone"}),
    );
    assert_eq!(send(err, a3).await, (200, ok("applied")));

    assert!(
        wait_for(Duration::from_secs(5), || ["c-a1", "c-a2", "c-a3"]
            .iter()
            .all(|c| rx.ended(c).len() == 1))
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a1_events = rx.for_conv("c-a1");
    let types: Vec<&str> = a1_events
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "agent_joined",
            "agent_message",
            "agent_message",
            "live_chat_ended"
        ]
    );
    assert_eq!(a1_events[1]["text"], "Olá, sou a Ana");
    assert_eq!(a1_events[2]["text"], "Tudo bem?");
    assert_eq!(rx.ended("c-a1"), vec!["agent_closed"]);
    assert_eq!(rx.ended("c-a2"), vec!["user_closed"]);
    assert_eq!(rx.ended("c-a3"), vec!["error"]);
    svc.stop().await;
}
