//! Repeated SIGKILLs of `transbordo serve` during 180 concurrent LivePerson handoffs, on
//! both stores: the service is killed and restarted every few hundred milliseconds
//! while runs are in flight (each run retried until it is answered). Afterwards every
//! live chat the store tracks ends exactly once (one `live_chat_ended` event id) and is
//! closed at the provider, and no event is left undelivered.
//!
//! Not asserted: provider conversations opened by a run that was killed before its live
//! chat was stored. They are counted and printed: recording the handoff's intent before
//! the first provider call and reconciling it at start is not built yet.

mod pg_support;
mod process_support;
mod service_common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process_support::{scaled, Balancer, Replica};
use serde_json::{json, Value};
use service_common::{Receiver, API_TOKEN, BUILDER_SECRET};
use transbordo::sandbox::{ConversationStatus, Provider, Sandbox, SandboxOptions, WebhookPatch};

const TOKEN_ENV: &str = "TRANSBORDO_CRASH_API_TOKEN";
const RUNS: usize = 180;

async fn call(http: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    // The replica may be dead or die mid-request: retry until something answers.
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    loop {
        if let Ok(r) = http
            .post(url)
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .await
        {
            let s = r.status().as_u16();
            let v = r.json().await.unwrap_or(Value::Null);
            if s != 502 && s != 503 {
                return (s, v);
            }
        }
        assert!(Instant::now() < deadline, "{url}: no answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn crash_during_runs(database: String, keep: Option<pg_support::TestDb>) {
    let sandbox = Sandbox::start(SandboxOptions::ephemeral())
        .await
        .expect("sandbox");
    let sb = sandbox.control();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("integrations.toml"),
        process_support::integrations_toml(&sandbox.base_url(), 0, 0, 0),
    )
    .unwrap();
    let database = if database == "sqlite" {
        dir.path().join("crash.db").display().to_string()
    } else {
        database
    };
    let (rx_url, rx) = Receiver::default().start().await;
    let cfg =
        process_support::write_config(dir.path(), &database, &rx_url, BUILDER_SECRET, TOKEN_ENV);
    let mut replica = Replica::new(&cfg, dir.path(), TOKEN_ENV, API_TOKEN);
    replica.spawn().await;
    let (lb, _b) = Balancer::start(vec![replica.port]).await;
    let patch = WebhookPatch {
        url: Some(Some(format!("{lb}/webhooks/liveperson/7"))),
        ..WebhookPatch::default()
    };
    sb.set_webhook(Provider::Liveperson, &patch)
        .await
        .expect("webhook");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let mut tasks = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(12));
    for i in 0..RUNS {
        let (http, lb, sem) = (http.clone(), lb.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            let body = json!({"flow": [{"name": "start_live_chat",
                "parameters": {"integration_id": 7, "start_message": "Cliente pediu atendimento"}}],
                "context": {"contact": {"name": "Ana"}}});
            let (s, v) = call(&http, &format!("{lb}/v1/conversations/crash-{i}/run"), body).await;
            drop(permit);
            assert!(
                s == 200 || (s == 409 && v["error"]["code"] == "live_chat_open"),
                "run crash-{i}: {s} {v}"
            );
        }));
    }
    // Kill and restart while the runs go on.
    let mut kills = 0;
    while !tasks.iter().all(|t| t.is_finished()) && kills < 30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        replica.kill();
        kills += 1;
        replica.spawn().await;
    }
    for t in tasks {
        t.await.expect("run task");
    }
    assert!(kills >= 3, "the runs finished before the kills: {kills}");
    // Every tracked live chat: the user closes it (or it already ended).
    let mut tracked = HashMap::new();
    let mut untracked_runs = 0;
    for i in 0..RUNS {
        let conv = format!("crash-{i}");
        let r = http
            .get(format!("{lb}/v1/conversations/{conv}/live_chat"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        // 404: the run answered without a live chat (its handoff failed: the provider
        // refused a second conversation for a consumer whose first one a killed run
        // had opened).
        let Some(pc) = v["live_chat"]["provider_conversation_id"].as_str() else {
            assert_eq!(status, 404, "{conv}: {v}");
            untracked_runs += 1;
            continue;
        };
        tracked.insert(conv.clone(), pc.to_string());
        let (s, v) = call(
            &http,
            &format!("{lb}/v1/conversations/{conv}/close"),
            json!({}),
        )
        .await;
        assert!(s == 200 || s == 409, "close {conv}: {s} {v}");
    }
    let ended = |conv: &str| -> usize {
        rx.for_conv(conv)
            .iter()
            .filter(|e| e["type"] == "live_chat_ended")
            .map(|e| e["event_id"].to_string())
            .collect::<HashSet<_>>()
            .len()
    };
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    while !tracked.keys().all(|c| ended(c) >= 1) {
        assert!(Instant::now() < deadline, "live chats not ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for conv in tracked.keys() {
        assert_eq!(ended(conv), 1, "{conv}: {:?}", rx.for_conv(conv));
    }
    let open = sb
        .conversations(Some(Provider::Liveperson), None)
        .await
        .expect("conversations");
    let tracked_ids: HashSet<&String> = tracked.values().collect();
    for c in &open {
        if tracked_ids.contains(&c.id) {
            assert_eq!(c.status, ConversationStatus::Closed, "{c:?}");
        }
    }
    let orphans = open
        .iter()
        .filter(|c| c.status != ConversationStatus::Closed && !tracked_ids.contains(&c.id))
        .count();
    eprintln!(
        "{kills} SIGKILLs during {RUNS} runs: {} live chats tracked and ended once, \
         {untracked_runs} runs without one; {} provider conversations opened, {orphans} \
         left open untracked",
        tracked.len(),
        open.len()
    );
    let (s, m) = {
        let r = http.get(format!("{lb}/metrics")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert_eq!(s, 200);
    let pending = m
        .lines()
        .find(|l| l.starts_with("transbordo_outbox_pending "))
        .map(|l| {
            l.trim_start_matches("transbordo_outbox_pending ")
                .trim()
                .to_string()
        });
    assert_eq!(pending.as_deref(), Some("0"), "{m}");
    drop(replica);
    drop(keep);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkills_during_runs_on_sqlite() {
    crash_during_runs("sqlite".into(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkills_during_runs_on_postgres() {
    let Some(db) = pg_support::test_db().await else {
        return;
    };
    crash_during_runs(db.url.clone(), Some(db)).await;
}
