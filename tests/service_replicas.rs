//! Three real `transbordo serve` processes on one PostgreSQL database behind a load
//! balancer, the sandbox providers (webhooks through the balancer, so spread over the
//! replicas, with duplicates and out-of-order redelivery switched on) and a builder
//! receiver. 300 live chats across LivePerson, Zendesk and ALTU and every ending status;
//! one replica is SIGKILLed in the middle and restarted. Then: every conversation got
//! exactly one `live_chat_ended` (by event id) with the right status, its events in
//! order (agent_joined, agent_message, live_chat_ended), and nothing is pending.
//!
//! A run cut by the SIGKILL in the middle of its handoff is retried; when the provider
//! refuses the retry (the consumer already has the conversation the cut attempt opened),
//! the run answers without a live chat: such handoffs are counted (at most the runs in
//! flight). The reconcile of the interrupted handoff's intent then adopts the provider
//! conversation (or closes it, ending with `error`): each such conversation ends at most
//! once, with whatever status its adopted live chat reached (the plan's driver had no
//! live chat to act on).
//!
//! Skipped (with a message) without a PostgreSQL server; see `pg_support`.

mod pg_support;
mod process_support;
mod service_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process_support::{scaled, Balancer, Replica};
use serde_json::{json, Value};
use service_common::{Receiver, API_TOKEN, BUILDER_SECRET};
use transbordo::sandbox::{
    CloseReason, JoinRequest, Provider, Sandbox, SandboxOptions, WebhookPatch,
};

const LP: u32 = 7;
const ZD: u32 = 1;
const ALTU: u32 = 3;
const CHATS: usize = 300;
const TOKEN_ENV: &str = "TRANSBORDO_REPLICAS_API_TOKEN";

/// What a conversation does and how it must end.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Agent joins, says something, closes.
    AgentCloses,
    /// Agent joins, says something; the user closes through the API.
    UserCloses,
    /// Nobody joins (LivePerson wait timeout).
    NobodyJoins,
    /// The platform closes it before a join (LivePerson `SYSTEM`): `error`.
    PlatformCloses,
    /// Agent joins; the user stays silent (ALTU inactivity timeout).
    UserSilent,
}

impl Plan {
    fn of(i: usize) -> (u32, Plan) {
        let round = i / 3;
        match i % 3 {
            0 => (
                LP,
                [
                    Plan::AgentCloses,
                    Plan::UserCloses,
                    Plan::NobodyJoins,
                    Plan::PlatformCloses,
                ][round % 4],
            ),
            1 => (ZD, [Plan::AgentCloses, Plan::UserCloses][round % 2]),
            _ => (
                ALTU,
                [Plan::AgentCloses, Plan::UserCloses, Plan::UserSilent][round % 3],
            ),
        }
    }

    fn status(self) -> &'static str {
        match self {
            Plan::AgentCloses => "agent_closed",
            Plan::UserCloses => "user_closed",
            Plan::NobodyJoins => "timeout",
            Plan::PlatformCloses => "error",
            Plan::UserSilent => "user_inactivity_timeout",
        }
    }

    fn events(self) -> Vec<&'static str> {
        match self {
            Plan::AgentCloses | Plan::UserCloses => {
                vec!["agent_joined", "agent_message", "live_chat_ended"]
            }
            Plan::NobodyJoins | Plan::PlatformCloses => vec!["live_chat_ended"],
            Plan::UserSilent => vec!["agent_joined", "live_chat_ended"],
        }
    }
}

struct Ctx {
    lb: String,
    http: reqwest::Client,
    sb: transbordo::sandbox::SandboxControl,
    rx: Receiver,
    started: AtomicUsize,
    /// Conversations whose handoff failed after the SIGKILL cut its first attempt.
    cut: std::sync::Mutex<Vec<String>>,
}

/// Events of a conversation, first delivery of each event id (at-least-once).
fn distinct(rx: &Receiver, conv: &str) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    rx.for_conv(conv)
        .into_iter()
        .filter(|e| seen.insert(e["event_id"].to_string()))
        .collect()
}

async fn until<F: FnMut() -> bool>(what: &str, wait: Duration, mut f: F) {
    let deadline = Instant::now() + wait;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Ctx {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        // The balancer retries dead replicas; a request cut mid-way by the SIGKILL is
        // retried here.
        for _ in 0..20 {
            let mut rb = self
                .http
                .request(method.clone(), format!("{}{path}", self.lb))
                .bearer_auth(API_TOKEN);
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            if let Ok(r) = rb.send().await {
                let s = r.status().as_u16();
                let v = r.json().await.unwrap_or(Value::Null);
                if s != 502 && s != 503 {
                    return (s, v);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{path}: no answer");
    }

    /// Runs the handoff; returns the provider conversation id.
    async fn start(&self, conv: &str, integration: u32) -> Option<String> {
        let contact = json!({"name": "Ana Souza", "email": format!("{conv}@example.com")});
        let params = if integration == ZD {
            json!({"integration_id": integration, "subject": format!("Atendimento {conv}"),
                   "start_message": "Cliente pediu atendimento"})
        } else {
            json!({"integration_id": integration, "start_message": "Cliente pediu atendimento"})
        };
        let body = json!({"flow": [{"name": "start_live_chat", "parameters": params}],
                          "context": {"contact": contact}});
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/conversations/{conv}/run"),
                Some(body),
            )
            .await;
        let lc = match s {
            200 => v["live_chat"].clone(),
            // An earlier attempt, cut by the SIGKILL, did start it.
            409 if v["error"]["code"] == "live_chat_open" => {
                let (s, v) = self
                    .call(
                        reqwest::Method::GET,
                        &format!("/v1/conversations/{conv}/live_chat"),
                        None,
                    )
                    .await;
                assert_eq!(s, 200, "{v}");
                v["live_chat"].clone()
            }
            _ => panic!("run {conv}: {s} {v}"),
        };
        // No live chat: the handoff failed. That happens only to a run retried after
        // the SIGKILL cut its first attempt mid-handoff: the provider refuses a second
        // conversation for the consumer the first attempt opened (not reconciled yet).
        lc["provider_conversation_id"].as_str().map(str::to_string)
    }

    async fn wait_event(&self, conv: &str, kind: &str) {
        until(
            &format!("{kind} for {conv}"),
            scaled(Duration::from_secs(60)),
            || distinct(&self.rx, conv).iter().any(|e| e["type"] == kind),
        )
        .await;
    }

    async fn scenario(&self, i: usize) {
        let (integration, plan) = Plan::of(i);
        let conv = format!("conv-{i}");
        self.started.fetch_add(1, Ordering::SeqCst);
        let Some(id) = self.start(&conv, integration).await else {
            self.cut.lock().unwrap().push(conv);
            return;
        };
        let join = JoinRequest {
            agent_id: None,
            agent_name: Some(format!("Agent {i}")),
        };
        match plan {
            Plan::AgentCloses | Plan::UserCloses => {
                self.sb.join(&id, &join).await.expect("join");
                self.sb.say(&id, &format!("hello {i}")).await.expect("say");
                self.wait_event(&conv, "agent_message").await;
                if matches!(plan, Plan::AgentCloses) {
                    self.sb.close(&id, CloseReason::Agent).await.expect("close");
                } else {
                    let (s, v) = self
                        .call(
                            reqwest::Method::POST,
                            &format!("/v1/conversations/{conv}/close"),
                            Some(json!({})),
                        )
                        .await;
                    // 409: an attempt cut by the SIGKILL had claimed it already.
                    assert!(s == 200 || s == 409, "close {conv}: {s} {v}");
                }
            }
            Plan::NobodyJoins => {}
            Plan::PlatformCloses => {
                self.sb
                    .close(&id, CloseReason::System)
                    .await
                    .expect("close");
            }
            Plan::UserSilent => {
                self.sb.join(&id, &join).await.expect("join");
            }
        }
    }
}

async fn pending(pool: &sqlx::PgPool) -> (i64, i64) {
    let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM live_chats WHERE state <> 'ended'")
        .fetch_one(pool)
        .await
        .unwrap();
    let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
        .fetch_one(pool)
        .await
        .unwrap();
    (open, outbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_300_live_chats_one_sigkilled() {
    let Some(db) = pg_support::test_db().await else {
        return;
    };
    let sandbox = Sandbox::start(SandboxOptions::ephemeral())
        .await
        .expect("sandbox");
    let sb = sandbox.control();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("integrations.toml"),
        process_support::integrations_toml(&sandbox.base_url(), 20, 0, 30),
    )
    .unwrap();
    let (rx_url, rx) = Receiver::default().start().await;
    let cfg =
        process_support::write_config(dir.path(), &db.url, &rx_url, BUILDER_SECRET, TOKEN_ENV);
    // Migrations once up front (the replicas would race for them otherwise, which the
    // advisory lock also handles).
    let out = std::process::Command::new(process_support::BIN)
        .env(TOKEN_ENV, API_TOKEN)
        .args(["migrate", "--config"])
        .arg(&cfg)
        .output()
        .expect("transbordo migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::new(&cfg, dir.path(), TOKEN_ENV, API_TOKEN))
        .collect();
    for r in replicas.iter_mut() {
        r.spawn().await;
    }
    let (lb, _balancer) = Balancer::start(replicas.iter().map(|r| r.port).collect()).await;
    for (p, path, dup, ooo) in [
        (Provider::Liveperson, format!("liveperson/{LP}"), true, true),
        (Provider::Zendesk, format!("zendesk/{ZD}"), true, false),
        (Provider::Altu, format!("altu/{ALTU}"), false, false),
    ] {
        let patch = WebhookPatch {
            url: Some(Some(format!("{lb}/webhooks/{path}"))),
            duplicate: Some(dup),
            out_of_order: Some(ooo),
            ..WebhookPatch::default()
        };
        sb.set_webhook(p, &patch).await.expect("set webhook");
    }
    let ctx = Arc::new(Ctx {
        lb,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        sb,
        rx: rx.clone(),
        started: AtomicUsize::new(0),
        cut: Default::default(),
    });

    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..CHATS {
        let ctx = ctx.clone();
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            ctx.scenario(i).await;
            drop(permit);
        }));
        if i == CHATS / 2 {
            // In the middle: SIGKILL one replica, bring it back a moment later.
            replicas[1].kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            replicas[1].spawn().await;
        }
    }
    for t in tasks {
        if let Err(e) = t.await {
            for r in &replicas {
                eprintln!("{}", r.logs());
            }
            panic!("scenario failed: {e}");
        }
    }
    let cut: std::collections::HashSet<String> = ctx.cut.lock().unwrap().iter().cloned().collect();
    // At most the runs in flight at the kill (16 at a time) lose their handoff.
    assert!(cut.len() <= 16, "{} handoffs lost: {cut:?}", cut.len());
    let all_ended = || {
        (0..CHATS)
            .filter(|i| !cut.contains(&format!("conv-{i}")))
            .all(|i| {
                distinct(&rx, &format!("conv-{i}"))
                    .iter()
                    .any(|e| e["type"] == "live_chat_ended")
            })
    };
    // Closes interrupted by the SIGKILL finish through their watchdog (30 s).
    let deadline = Instant::now() + scaled(Duration::from_secs(90));
    while !all_ended() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !all_ended() {
        // What the replicas logged about the conversations that did not end.
        let open: Vec<String> = (0..CHATS)
            .map(|i| format!("conv-{i}"))
            .filter(|c| !cut.contains(c))
            .filter(|c| {
                !distinct(&rx, c)
                    .iter()
                    .any(|e| e["type"] == "live_chat_ended")
            })
            .collect();
        for r in &replicas {
            for line in r.logs().lines() {
                if line.starts_with("---")
                    || line.contains("\"WARN\"")
                    || line.contains("\"ERROR\"")
                    || open.iter().any(|c| {
                        line.contains(&format!("\"{c}\"")) || line.contains(&format!("={c} "))
                    })
                {
                    eprintln!("{line}");
                }
            }
        }
        panic!("{} live chats never ended: {open:?}", open.len());
    }
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    while pending(&pool).await != (0, 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{CHATS} live chats through 3 replicas in {:?}; {} deliveries; {} handoffs lost to \
         the SIGKILL",
        t0.elapsed(),
        rx.events().len(),
        cut.len()
    );
    let mut problems = Vec::new();
    for i in 0..CHATS {
        let (_, plan) = Plan::of(i);
        let conv = format!("conv-{i}");
        let evs = distinct(&rx, &conv);
        if cut.contains(&conv) {
            let endings = evs
                .iter()
                .filter(|e| e["type"] == "live_chat_ended")
                .count();
            if endings > 1 {
                problems.push(format!(
                    "{conv} (reconciled) ended {endings} times: {evs:?}"
                ));
            }
            continue;
        }
        let kinds: Vec<&str> = evs
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("?"))
            .collect();
        let ended: Vec<&str> = evs
            .iter()
            .filter(|e| e["type"] == "live_chat_ended")
            .map(|e| e["input"]["live_chat"]["status"].as_str().unwrap_or("?"))
            .collect();
        if kinds != plan.events() || ended != [plan.status()] {
            problems.push(format!("{conv} ({plan:?}): {kinds:?} {ended:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} wrong:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(
        pending(&pool).await,
        (0, 0),
        "live chats open / events undelivered"
    );
    assert_eq!(rx.bad_signatures.load(Ordering::SeqCst), 0);
    drop(replicas);
    sandbox.shutdown().await;
}
