//! The service on PostgreSQL, in this process: two replicas (two `ServiceState`s with
//! their own workers) on one database, and the database cut under load.
//!
//! - One open live chat per conversation across replicas: concurrent runs of one
//!   conversation on both replicas → one 200, the other 409 `live_chat_open`.
//! - Timers fire once: wait timeouts raced by both replicas' schedulers close each
//!   provider conversation once and end each chat once.
//! - Any replica takes any webhook: joins and closes go to the other replica.
//! - Database trouble is an answer: with every connection killed again and again
//!   (`pg_terminate_backend`), requests get 200 or 503 `database_unavailable` (JSON),
//!   never a hang or a crash; afterwards the service works again by itself and
//!   everything it acknowledged is there.
//!
//! - `Idempotency-Key` on `/run`, on both stores.
//!
//! The PostgreSQL tests are skipped (with a message) without a server; see `pg_support`.

mod pg_support;
mod service_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use service_common::*;
use sqlx::Connection;

/// The common test config on the database `url`.
fn pg_config(dir: &std::path::Path, callback: &str, url: &str) -> std::path::PathBuf {
    let p = write_config(dir, callback, "");
    let src = std::fs::read_to_string(&p).unwrap();
    assert!(src.contains(r#"database = "state/transbordo.db""#));
    std::fs::write(
        &p,
        src.replace(
            r#"database = "state/transbordo.db""#,
            &format!(r#"database = "{url}""#),
        ),
    )
    .unwrap();
    p
}

fn ended_once(rx: &Receiver, conv: &str) -> Vec<String> {
    // At-least-once delivery: a redelivery carries the same event_id; count distinct ones.
    let mut seen = std::collections::HashSet::new();
    rx.for_conv(conv)
        .into_iter()
        .filter(|e| e["type"] == "live_chat_ended")
        .filter(|e| seen.insert(e["event_id"].to_string()))
        .map(|e| {
            e["input"]["live_chat"]["status"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_database() {
    let Some(db) = pg_support::test_db().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = Receiver::default().start().await;
    let cfg = pg_config(dir.path(), &url, &db.url);
    let (ta, tb) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let a = start(&cfg, ta.clone()).await;
    let b = start(&cfg, tb.clone()).await;

    // Concurrent runs of one conversation on both replicas: one wins.
    let run = |base: String, conv: String| async move {
        post(
            &base,
            &format!("/v1/conversations/{conv}/run"),
            json!({"flow": [{"name": "start_live_chat", "parameters": {"integration_id": 8}}],
                   "context": {"contact": {"name": "Ana"}}}),
        )
        .await
    };
    for i in 0..20 {
        let conv = format!("race-{i}");
        let (ra, rb) = tokio::join!(run(a.base.clone(), conv.clone()), run(b.base.clone(), conv));
        let mut codes = [ra.0, rb.0];
        codes.sort_unstable();
        assert_eq!(codes, [200, 409], "{ra:?} {rb:?}");
        let loser = if ra.0 == 409 { &ra.1 } else { &rb.1 };
        assert_eq!(loser["error"]["code"], "live_chat_open", "{loser}");
    }

    // Any replica takes any webhook: join on b, messages on a, close on b.
    for i in 0..20 {
        let pc = format!("pc-race-{i}");
        let (s, _) = lp_webhook(&b.base, 8, &lp_message(&pc, 1, "ASSIGNED_AGENT", "hello")).await;
        assert_eq!(s, 200);
        let (s, _) = lp_webhook(&a.base, 8, &lp_message(&pc, 2, "ASSIGNED_AGENT", "more")).await;
        assert_eq!(s, 200);
        let (s, _) = lp_webhook(
            &b.base,
            8,
            &lp_change(&pc, 10, "CLOSE", Some("AGENT"), true),
        )
        .await;
        assert_eq!(s, 200);
    }

    // Wait timeouts (integration 7: 1 s) raced by both schedulers.
    for i in 0..20 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        start_chat(base, &format!("wait-{i}"), 7).await;
    }
    let all_done = || {
        (0..20).all(|i| {
            ended_once(&rx, &format!("race-{i}")).len() == 1
                && ended_once(&rx, &format!("wait-{i}")).len() == 1
        })
    };
    assert!(wait_for(Duration::from_secs(30), all_done).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        let conv = format!("race-{i}");
        assert_eq!(ended_once(&rx, &conv), ["agent_closed"], "{conv}");
        let kinds: Vec<String> = rx
            .for_conv(&conv)
            .iter()
            .map(|e| match e["type"].as_str().unwrap() {
                "agent_message" => e["text"].as_str().unwrap().to_string(),
                t => t.to_string(),
            })
            .collect();
        let mut dedup = kinds.clone();
        dedup.dedup();
        assert_eq!(
            dedup,
            ["agent_joined", "hello", "more", "live_chat_ended"],
            "{conv}"
        );
        let conv = format!("wait-{i}");
        assert_eq!(ended_once(&rx, &conv), ["timeout"], "{conv}");
    }
    // Each timed-out conversation was closed at the provider once, by one replica.
    let closes = ta.count("close") + tb.count("close");
    assert_eq!(closes, 20, "a: {:?} b: {:?}", ta.calls(), tb.calls());
    a.stop().await;
    b.stop().await;
}

/// Kills every connection of the test database every few milliseconds for a while.
async fn cut_connections(admin: String, db_name: String, until: Instant) -> usize {
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    let mut killed = 0usize;
    while Instant::now() < until {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(&db_name)
        .fetch_one(&mut c)
        .await
        .unwrap();
        killed += n as usize;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_cut_answers_503_and_recovers() {
    let Some(db) = pg_support::test_db().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = Receiver::default().start().await;
    let cfg = pg_config(dir.path(), &url, &db.url);
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    start_chat(&svc.base, "before", 8).await;

    let (admin, name) = db.admin_and_name();
    let storm = tokio::spawn(cut_connections(
        admin,
        name,
        Instant::now() + Duration::from_secs(3),
    ));
    // Runs of new conversations while the connections are being cut: each answer is a
    // 200 (then the live chat must exist afterwards) or a JSON 503.
    let mut acknowledged = Vec::new();
    let mut unavailable = 0;
    let mut i = 0;
    while !storm.is_finished() {
        i += 1;
        let conv = format!("storm-{i}");
        let (s, v) = post(
            &svc.base,
            &format!("/v1/conversations/{conv}/run"),
            json!({"flow": [{"name": "start_live_chat", "parameters": {"integration_id": 8}}],
                   "context": {}}),
        )
        .await;
        match s {
            200 => acknowledged.push(conv),
            503 => {
                assert_eq!(v["error"]["code"], "database_unavailable", "{v}");
                unavailable += 1;
            }
            other => panic!("run answered {other}: {v}"),
        }
        let (s, v) = get(&svc.base, "/v1/conversations/before/live_chat").await;
        match s {
            200 => assert_eq!(v["live_chat"]["state"], "waiting", "{v}"),
            503 => {
                assert_eq!(v["error"]["code"], "database_unavailable", "{v}");
                unavailable += 1;
            }
            other => panic!("live_chat answered {other}: {v}"),
        }
    }
    let killed = storm.await.unwrap();
    eprintln!(
        "{killed} connections killed; {} runs acknowledged, {unavailable} answers 503",
        acknowledged.len()
    );
    assert!(killed > 0);
    assert!(unavailable > 0, "the cuts were never noticed");
    // Recovered by itself: every acknowledged live chat is there and can be closed.
    let (s, v) = get(&svc.base, "/v1/conversations/before/live_chat").await;
    assert_eq!(s, 200, "{v}");
    for conv in acknowledged
        .iter()
        .chain(std::iter::once(&"before".to_string()))
    {
        let (s, v) = post(
            &svc.base,
            &format!("/v1/conversations/{conv}/close"),
            json!({}),
        )
        .await;
        assert_eq!(s, 200, "{conv}: {v}");
    }
    let rx2 = rx.clone();
    let convs = acknowledged.clone();
    assert!(
        wait_for(Duration::from_secs(20), move || {
            convs.iter().all(|c| ended_once(&rx2, c) == ["user_closed"])
        })
        .await
    );
    let (s, _) = start_chat_status(&svc.base, "after").await;
    assert_eq!(s, 200);
    let metrics = service_common::client()
        .get(format!("{}/readyz", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    svc.stop().await;
}

async fn start_chat_status(base: &str, conv: &str) -> (u16, Value) {
    post(
        base,
        &format!("/v1/conversations/{conv}/run"),
        json!({"flow": [{"name": "start_live_chat", "parameters": {"integration_id": 8}}],
               "context": {}}),
    )
    .await
}

/// POST /run with an `Idempotency-Key`.
async fn run_keyed(base: &str, conv: &str, key: &str) -> (u16, Value, bool) {
    let r = service_common::client()
        .post(format!("{base}/v1/conversations/{conv}/run"))
        .bearer_auth(API_TOKEN)
        .header("idempotency-key", key)
        .json(
            &json!({"flow": [{"name": "start_live_chat", "parameters": {"integration_id": 8}}],
                      "context": {}}),
        )
        .send()
        .await
        .unwrap();
    let replayed = r.headers().get("idempotency-replayed").is_some();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null), replayed)
}

/// A retried `/run` with the same key answers the first result, even after the live chat
/// ended, and never starts a second handoff; concurrent requests with one key (on two
/// replicas where there are two) start one.
async fn idempotent_runs(a: &str, b: &str) {
    let (s, first, replayed) = run_keyed(a, "idem-1", "key-1").await;
    assert_eq!((s, replayed), (200, false), "{first}");
    let h1 = first["live_chat"]["handoff_id"].clone();
    assert!(h1.is_string(), "{first}");
    let (s, again, replayed) = run_keyed(b, "idem-1", "key-1").await;
    assert_eq!((s, replayed), (200, true));
    assert_eq!(again, first);
    let (s, v) = post(b, "/v1/conversations/idem-1/close", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let (s, again, replayed) = run_keyed(a, "idem-1", "key-1").await;
    assert_eq!(
        (s, replayed, &again["live_chat"]["handoff_id"]),
        (200, true, &h1)
    );
    let (s, v) = get(a, "/v1/conversations/idem-1/live_chat").await;
    assert_eq!((s, &v["live_chat"]["state"]), (200, &json!("ended")), "{v}");
    // A new key is a new run.
    let (s, v, _) = run_keyed(a, "idem-1", "key-2").await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["live_chat"]["handoff_id"], h1);
    // Bad keys are refused.
    let (s, v, _) = run_keyed(a, "idem-1", &"k".repeat(256)).await;
    assert_eq!((s, &v["error"]["code"]), (400, &json!("bad_request")));
    // Eight at once with one key, over both bases: one handoff.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let base = if i % 2 == 0 {
            a.to_string()
        } else {
            b.to_string()
        };
        tasks.push(tokio::spawn(async move {
            run_keyed(&base, "idem-2", "key-3").await
        }));
    }
    let mut handoffs = std::collections::HashSet::new();
    for t in tasks {
        let (s, v, _) = t.await.unwrap();
        match s {
            200 => {
                handoffs.insert(v["live_chat"]["handoff_id"].to_string());
            }
            409 => assert_eq!(v["error"]["code"], "run_in_progress", "{v}"),
            _ => panic!("{s} {v}"),
        }
    }
    assert_eq!(handoffs.len(), 1, "{handoffs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_key_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _rx) = Receiver::default().start().await;
    let svc = start(
        &write_config(dir.path(), &url, ""),
        Arc::new(Recorder::default()),
    )
    .await;
    idempotent_runs(&svc.base, &svc.base).await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_key_across_replicas_on_postgres() {
    let Some(db) = pg_support::test_db().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (url, _rx) = Receiver::default().start().await;
    let cfg = pg_config(dir.path(), &url, &db.url);
    let a = start(&cfg, Arc::new(Recorder::default())).await;
    let b = start(&cfg, Arc::new(Recorder::default())).await;
    idempotent_runs(&a.base, &b.base).await;
    a.stop().await;
    b.stop().await;
}
