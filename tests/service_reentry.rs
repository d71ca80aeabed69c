//! Issue 19 in the lifecycle service, on SQLite and PostgreSQL: the re-entry input
//! with `[reentry] details`/`transcript` (the human part: agent, wait, duration, message
//! counts, the last messages), the plain input by default, and `agent_reply_overdue`
//! once per unanswered stretch with its metric. The reply timer is driven the way the
//! scheduler drives it (a due deadline fired), with an hour-long timeout, so nothing
//! waits on the wall clock.

mod pg_support;
mod service_common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use service_common::*;
use transbordo::service::store::{DeadlineKind, DueDeadline};
use transbordo::service::{now_ms, LiveChatStore};

/// Where the service keeps its state in one run of a test.
enum Db {
    Sqlite,
    Postgres(pg_support::TestDb),
}

impl Db {
    async fn postgres() -> Option<Db> {
        pg_support::test_db().await.map(Db::Postgres)
    }
}

/// Writes the config (`[reentry]` as given, integration 8 with a one-hour
/// `agent_reply_timeout_s`) and starts the service and the builder's receiver.
async fn service(db: &Db, reentry: &str) -> (tempfile::TempDir, Receiver, Running) {
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = Receiver::default().start().await;
    let cfg = write_config(dir.path(), &url, reentry);
    std::fs::write(
        dir.path().join("integrations.toml"),
        INTEGRATIONS.replacen("id = 8\n", "id = 8\nagent_reply_timeout_s = 3600\n", 1),
    )
    .unwrap();
    if let Db::Postgres(t) = db {
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "database = \"state/transbordo.db\"",
            &format!("database = \"{}\"", t.url),
        );
        std::fs::write(&cfg, text).unwrap();
    }
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    (dir, rx, svc)
}

async fn say(base: &str, conv: &str, text: &str) {
    let (s, v) = post(
        base,
        &format!("/v1/conversations/{conv}/messages"),
        json!({"text": text}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

async fn reply_deadline(store: &dyn LiveChatStore, id: &str) -> Option<DueDeadline> {
    store
        .deadlines(id)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.kind == DeadlineKind::Reply)
        .map(|deadline| DueDeadline {
            live_chat_id: id.to_string(),
            deadline,
        })
}

fn types(rx: &Receiver, conv: &str) -> Vec<String> {
    rx.for_conv(conv)
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The overdue series of a provider in the exposition.
async fn overdue_metric(svc: &Running) -> String {
    let text = svc
        .state
        .metrics()
        .render(svc.state.store().as_ref(), now_ms())
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("transbordo_agent_reply_overdue_total{provider=\"liveperson\"}"))
        .unwrap_or_default()
        .to_string()
}

async fn details_transcript_and_overdue(db: Db) {
    let (_dir, rx, svc) = service(&db, "[reentry]\ndetails = true\ntranscript = true\n").await;
    let store = svc.state.store().clone();
    assert_eq!(
        overdue_metric(&svc).await,
        "transbordo_agent_reply_overdue_total{provider=\"liveperson\"} 0",
        "exposed at 0 from the start"
    );
    let v = start_chat(&svc.base, "c-re", 8).await;
    let id = v["live_chat"]["handoff_id"].as_str().unwrap().to_string();
    // Before an agent joins, a user message starts no reply timer.
    say(&svc.base, "c-re", "tem alguém aí?").await;
    assert!(reply_deadline(store.as_ref(), &id).await.is_none());
    let joined = lp_change("pc-c-re", 100, "OPEN", None, true);
    assert_eq!(
        lp_webhook(&svc.base, 8, &joined).await.1["events"],
        json!(["applied"])
    );

    // The user writes to the agent: one stretch, one timer, due an hour later.
    let before = now_ms();
    say(&svc.base, "c-re", "oi").await;
    let due = reply_deadline(store.as_ref(), &id)
        .await
        .expect("a reply timer");
    assert!(
        due.deadline.due_at >= before + 3_600_000 && due.deadline.due_at <= now_ms() + 3_600_000,
        "{due:?}"
    );
    // A second message in the same stretch does not move it.
    say(&svc.base, "c-re", "alô?").await;
    assert_eq!(
        reply_deadline(store.as_ref(), &id).await.as_ref(),
        Some(&due)
    );
    // The hour passes: the scheduler fires it.
    svc.state.fire(&due).await.unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || types(&rx, "c-re")
            .contains(&"agent_reply_overdue".to_string()))
        .await
    );
    let overdue = rx
        .for_conv("c-re")
        .into_iter()
        .find(|e| e["type"] == "agent_reply_overdue")
        .unwrap();
    assert_eq!(overdue["agent"], json!({"id": "agent-9"}), "{overdue}");
    assert_eq!(overdue["timeout_s"], 3600);
    assert!(overdue["user_waiting_since_ms"].as_i64() >= Some(before));
    assert_eq!(
        overdue_metric(&svc).await,
        "transbordo_agent_reply_overdue_total{provider=\"liveperson\"} 1"
    );
    // Still unanswered: more messages start no new timer, the old one fires nothing.
    say(&svc.base, "c-re", "???").await;
    assert!(reply_deadline(store.as_ref(), &id).await.is_none());
    svc.state.fire(&due).await.unwrap();

    // The agent answers: the stretch is over; the next user message starts another.
    let m = lp_message("pc-c-re", 3, "ASSIGNED_AGENT", "Olá, sou a Bia");
    lp_webhook(&svc.base, 8, &m).await;
    say(&svc.base, "c-re", "tudo bem?").await;
    let second = reply_deadline(store.as_ref(), &id)
        .await
        .expect("a new stretch");
    assert_ne!(second, due);
    // Answered before it was due: the timer that fires late finds the stretch over.
    lp_webhook(
        &svc.base,
        8,
        &lp_message("pc-c-re", 4, "ASSIGNED_AGENT", "Tudo, e você?"),
    )
    .await;
    svc.state.fire(&second).await.unwrap();

    let close = lp_change("pc-c-re", 300, "CLOSE", Some("AGENT"), true);
    lp_webhook(&svc.base, 8, &close).await;
    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-re").len() == 1).await);
    assert_eq!(
        types(&rx, "c-re"),
        [
            "agent_joined",
            "agent_reply_overdue",
            "agent_message",
            "agent_message",
            "live_chat_ended"
        ]
    );
    assert_eq!(
        overdue_metric(&svc).await,
        "transbordo_agent_reply_overdue_total{provider=\"liveperson\"} 1",
        "once per unanswered stretch"
    );
    let ended = rx.for_conv("c-re").pop().unwrap();
    let live = &ended["input"]["live_chat"];
    assert_eq!(live["status"], "agent_closed");
    assert_eq!(live["provider"], "liveperson");
    assert_eq!(live["integration_id"], "8");
    assert_eq!(live["agent"], json!({"id": "agent-9"}));
    let (wait, duration) = (
        live["wait_ms"].as_i64().unwrap(),
        live["duration_ms"].as_i64().unwrap(),
    );
    assert!(0 <= wait && wait <= duration, "{live}");
    assert_eq!(live["messages"], json!({"user": 5, "agent": 2}));
    let transcript: Vec<(String, String)> = live["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(
                m["at"]
                    .as_str()
                    .is_some_and(|a| a.ends_with('Z') && a.len() >= 20),
                "{m}"
            );
            (
                m["from"].as_str().unwrap().to_string(),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("user", "tem alguém aí?"),
        ("user", "oi"),
        ("user", "alô?"),
        ("user", "???"),
        ("agent", "Olá, sou a Bia"),
        ("user", "tudo bem?"),
        ("agent", "Tudo, e você?"),
    ]
    .iter()
    .map(|(f, t)| (f.to_string(), t.to_string()))
    .collect();
    assert_eq!(transcript, expected);
    let keys: Vec<&str> = live
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "status",
            "provider",
            "integration_id",
            "agent",
            "wait_ms",
            "duration_ms",
            "messages",
            "transcript"
        ]
    );
    svc.stop().await;
}

async fn transcript_keeps_the_last_fifty_and_details_alone_have_none(db: Db) {
    let (_dir, rx, svc) = service(
        &db,
        "messages_per_minute = 6000\nmessages_burst = 100\n\n[reentry]\ntranscript = true\n",
    )
    .await;
    start_chat(&svc.base, "c-50", 8).await;
    lp_webhook(&svc.base, 8, &lp_change("pc-c-50", 100, "OPEN", None, true)).await;
    for i in 0..55 {
        say(&svc.base, "c-50", &format!("m{i}")).await;
    }
    let (s, _) = post(&svc.base, "/v1/conversations/c-50/close", json!({})).await;
    assert_eq!(s, 200);
    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-50").len() == 1).await);
    let live = rx.for_conv("c-50").pop().unwrap()["input"]["live_chat"].clone();
    assert_eq!(live["status"], "user_closed");
    let t = live["transcript"].as_array().unwrap();
    assert_eq!(t.len(), 50);
    assert_eq!(t[0]["text"], "m5");
    assert_eq!(t[49]["text"], "m54");
    assert_eq!(live["messages"]["user"], 55);
    svc.stop().await;

    // `details` without `transcript`: no transcript, and no text is kept.
    let (_dir, rx, svc) = service(&db, "[reentry]\ndetails = true\n").await;
    start_chat(&svc.base, "c-d", 1).await;
    let (s, _) = post(&svc.base, "/v1/conversations/c-d/close", json!({})).await;
    assert_eq!(s, 200);
    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-d").len() == 1).await);
    let live = rx.for_conv("c-d").pop().unwrap()["input"]["live_chat"].clone();
    assert_eq!(
        live,
        json!({"status": "user_closed", "provider": "zendesk", "integration_id": "1",
               "agent": null, "wait_ms": null, "duration_ms": live["duration_ms"],
               "messages": {"user": 0, "agent": 0}})
    );
    assert!(live["duration_ms"].as_i64().is_some());
    svc.stop().await;
}

async fn off_by_default_the_input_is_the_seeds(db: Db) {
    let (_dir, rx, svc) = service(&db, "").await;
    start_chat(&svc.base, "c-plain", 8).await;
    lp_webhook(
        &svc.base,
        8,
        &lp_change("pc-c-plain", 100, "OPEN", None, true),
    )
    .await;
    say(&svc.base, "c-plain", "oi").await;
    lp_webhook(
        &svc.base,
        8,
        &lp_change("pc-c-plain", 300, "CLOSE", Some("AGENT"), true),
    )
    .await;
    assert!(wait_for(Duration::from_secs(5), || rx.ended("c-plain").len() == 1).await);
    let ended = rx.for_conv("c-plain").pop().unwrap();
    assert_eq!(
        ended["input"],
        json!({"live_chat": {"status": "agent_closed"}})
    );
    svc.stop().await;
}

/// Each test twice: `<name>::sqlite` and `<name>::postgres`.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = super::Db::postgres().await else { return };
                super::$name(db).await
            }
        }
    )*};
}

both_stores!(
    details_transcript_and_overdue,
    transcript_keeps_the_last_fifty_and_details_alone_have_none,
    off_by_default_the_input_is_the_seeds,
);
