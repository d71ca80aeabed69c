//! What each operation of the service costs its store, counted, on both backends: the
//! statements and the round trips of a handoff (`/run` with a real LivePerson
//! `start_live_chat` against the in-process sandbox), a user message, an agent-joined
//! and an agent-message webhook, a user close, a timer firing and one outbox delivery.
//!
//! Every statement goes through one place per backend, and each reports there as a
//! trace event: sqlx logs every PostgreSQL statement (`sqlx::query`, one round trip
//! each; `BEGIN`, which it does not log, the store reports as `transbordo::store`), and
//! the SQLite store reports every call to its database threads (`transbordo::store`,
//! one round trip, with the statements SQLite ran for it, counted by SQLite's trace
//! hook). A layer here counts them by who caused them: a request (no span), a timer
//! (`timer_fire`), a delivery (`outbox_delivery`, and the write of its result,
//! `outbox_results`, shared by deliveries that finish together); the workers' polling (`background`)
//! and the timeline writer (`timeline_writer`, which writes whatever entries are waiting
//! in one insert) are left out, since how often they run depends on timing.
//!
//! The counts are pinned in a snapshot (`snapshots/service_cost__*.snap`): a change
//! that makes an operation cost more statements or round trips fails here, and the
//! performance guide's table (docs/performance.md) is this snapshot.

mod pg_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;
use transbordo::providers::auth;
use transbordo::sandbox::{Sandbox, SandboxOptions};
use transbordo::service::{provider::ProviderTransport, serve_with, ServiceConfig, ServiceState};
use transbordo::Engine;

const TOKEN: &str = "cost-test-api-token-0123456789";
const BUILDER_SECRET: &str = "cost-test-builder-secret";
/// The sandbox's LivePerson client secret (signs its webhooks).
const LP_SECRET: &str = "sandbox-secret";

/// `(statements, round trips)` by who caused them.
#[derive(Default)]
struct Counts {
    by: Mutex<BTreeMap<&'static str, (u64, u64)>>,
    /// Finished `timer_fire` / `outbox_delivery` spans.
    fired: AtomicU64,
    delivered: AtomicU64,
}

impl Counts {
    fn get(&self, who: &str) -> (u64, u64) {
        self.by
            .lock()
            .unwrap()
            .get(who)
            .copied()
            .unwrap_or_default()
    }
}

fn counts() -> &'static Arc<Counts> {
    static C: OnceLock<Arc<Counts>> = OnceLock::new();
    C.get_or_init(|| {
        let c = Arc::new(Counts::default());
        let layer = CountLayer(c.clone());
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only subscriber of this test binary");
        c
    })
}

struct CountLayer(Arc<Counts>);

#[derive(Default)]
struct Fields {
    statements: Option<u64>,
    round_trips: Option<u64>,
    text: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "statements" => self.statements = Some(value),
            "round_trips" => self.round_trips = Some(value),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "db.statement" || field.name() == "summary" {
            self.text = value.split_whitespace().collect::<Vec<_>>().join(" ");
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.text = format!("{value:?}");
        }
    }
}

const SPANS: [&str; 5] = [
    "timer_fire",
    "outbox_delivery",
    "outbox_results",
    "background",
    "timeline_writer",
];

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for CountLayer {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        let (st, rt) = match event.metadata().target() {
            "sqlx::query" => {
                event.record(&mut f);
                (1, 1)
            }
            "transbordo::store" => {
                event.record(&mut f);
                (f.statements.unwrap_or(0), f.round_trips.unwrap_or(0))
            }
            _ => return,
        };
        let who = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .into_iter()
                    .find_map(|s| SPANS.iter().find(|n| **n == s.name()).copied())
            })
            .unwrap_or("request");
        // TRANSBORDO_COST_TRACE=1 lists what was counted (to see where a count comes from).
        if std::env::var_os("TRANSBORDO_COST_TRACE").is_some() {
            eprintln!("[{who}] {st} statement(s), {rt} round trip(s): {}", f.text);
        }
        let mut by = self.0.by.lock().unwrap();
        let e = by.entry(who).or_default();
        e.0 += st;
        e.1 += rt;
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            match span.name() {
                "timer_fire" => self.0.fired.fetch_add(1, Ordering::SeqCst),
                "outbox_delivery" => self.0.delivered.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        }
    }
}

/// Waits until `f` holds (the work it waits for is asynchronous), at most a minute.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The builder: accepts every event and counts them.
async fn builder() -> (String, Arc<AtomicU64>) {
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move || {
            let g = g.clone();
            async move {
                g.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/events"), got)
}

struct World {
    base: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _sandbox: Sandbox,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(database: &str) -> World {
        let sandbox = Sandbox::start(SandboxOptions::ephemeral())
            .await
            .expect("sandbox starts");
        let dir = tempfile::tempdir().unwrap();
        let src = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/sandbox-integrations.toml"
        ))
        .unwrap()
        .replace("http://127.0.0.1:8910", &sandbox.base_url());
        // Integration 17: LivePerson again, with a wait timer of one second (the timer op).
        let lp7 = src
            .split("[[integration]]")
            .find(|b| b.contains("id = 7"))
            .unwrap()
            .replace("id = 7", "id = 17")
            .replace("wait_timeout_s = 300", "wait_timeout_s = 1");
        let integrations = format!("{src}\n[[integration]]{lp7}");
        std::fs::write(dir.path().join("integrations.toml"), integrations).unwrap();
        let (cb, _) = builder().await;
        let cfg = format!(
            r#"listen = "127.0.0.1:0"
database = "{database}"
integrations = "integrations.toml"

[builder]
callback_url = "{cb}"
signing_secret = "{BUILDER_SECRET}"

[api]
tokens = ["{TOKEN}"]
"#
        );
        std::fs::write(dir.path().join("service.toml"), cfg).unwrap();
        let config = ServiceConfig::from_file(&dir.path().join("service.toml")).unwrap();
        let store = config.database.open().await.unwrap();
        let engine = Engine::try_new()
            .and_then(|e| e.with_http_guard(config.http_guard.clone()))
            .unwrap()
            .with_integrations((*config.integrations).clone());
        let transport = ProviderTransport::new(
            engine.services().providers.clone(),
            config.integrations.clone(),
        );
        let state = ServiceState::new(config, engine, store, Arc::new(transport));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve_with(state, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        World {
            base,
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
            _sandbox: sandbox,
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// A handoff; returns the provider conversation id.
    async fn handoff(&self, conv: &str, integration: u32) -> String {
        let v = self
            .post(
                &format!("/v1/conversations/{conv}/run"),
                json!({"flow": [{"name": "start_live_chat",
                                 "parameters": {"integration_id": integration}}],
                       "context": {"contact": {"name": "Ana"}}}),
            )
            .await;
        v["live_chat"]["provider_conversation_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no live chat: {v}"))
            .to_string()
    }

    async fn lp_webhook(&self, body: Value) {
        let raw = body.to_string();
        let r = self
            .http
            .post(format!("{}/webhooks/liveperson/7", self.base))
            .header("content-type", "application/json")
            .header(
                "x-liveperson-signature",
                auth::liveperson_signature(LP_SECRET, raw.as_bytes()),
            )
            .body(raw)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "webhook: {}", r.status());
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

fn joined(pc: &str, ts: i64) -> Value {
    json!({"kind": "notification", "type": "cqm.ExConversationChangeNotification",
           "body": {"changes": [{"type": "UPSERT", "result": {"convId": pc, "conversationDetails": {
               "state": "OPEN", "stage": "OPEN", "metaDataLastUpdateTs": ts,
               "participants": [{"id": "consumer-1", "role": "CONSUMER"},
                                {"id": "agent-9", "role": "ASSIGNED_AGENT"}]}}}]}})
}

fn agent_says(pc: &str, seq: u64, text: &str) -> Value {
    json!({"kind": "notification", "type": "ms.MessagingEventNotification",
           "body": {"changes": [{"sequence": seq, "originatorId": "agent-9",
              "originatorMetadata": {"id": "agent-9", "role": "ASSIGNED_AGENT"},
              "serverTimestamp": 1528371199686u64, "dialogId": pc, "conversationId": pc,
              "event": {"type": "ContentEvent", "contentType": "text/plain", "message": text}}]}})
}

/// One row: what `op` cost, measured as the change of `who`'s counts over `n` runs of it
/// (each run must cost the same).
struct Table(Vec<(String, u64, u64)>);

impl Table {
    fn push(&mut self, op: &str, before: (u64, u64), after: (u64, u64), n: u64) {
        let (st, rt) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(st % n, 0, "{op}: {st} statements over {n} runs");
        assert_eq!(rt % n, 0, "{op}: {rt} round trips over {n} runs");
        self.0.push((op.to_string(), st / n, rt / n));
    }

    fn render(&self) -> String {
        let mut s = String::from("operation | statements | round trips\n");
        for (op, st, rt) in &self.0 {
            s.push_str(&format!("{op} | {st} | {rt}\n"));
        }
        s
    }
}

/// Runs every operation `N` times (after one warm-up round) and tabulates their cost.
async fn measure(database: &str) -> String {
    const N: u64 = 3;
    // One measurement at a time: the counts are the process's (`cargo test` runs tests
    // on threads of one process; nextest runs each in its own).
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _serial = SERIAL.lock().await;
    let c = counts().clone();
    let w = World::start(database).await;
    let mut t = Table(Vec::new());
    let settle = |fired: u64, delivered: u64| {
        let c = c.clone();
        async move {
            until("timers and deliveries", || {
                c.fired.load(Ordering::SeqCst) >= fired
                    && c.delivered.load(Ordering::SeqCst) >= delivered
            })
            .await
        }
    };
    let mut delivered = c.delivered.load(Ordering::SeqCst);
    let mut fired = c.fired.load(Ordering::SeqCst);
    for round in 0..=N {
        let warm = round == 0;
        let conv = |i: u32| format!("cost-{round}-{i}");
        // Handoff.
        let b = c.get("request");
        let pc = w.handoff(&conv(1), 7).await;
        let a = c.get("request");
        if !warm {
            rows(&mut t, "handoff (/run)", b, a);
        }
        // Agent joins (webhook): one event.
        let b = c.get("request");
        w.lp_webhook(joined(&pc, 1_000 + round as i64)).await;
        let a = c.get("request");
        delivered += 1;
        settle(fired, delivered).await;
        if !warm {
            rows(&mut t, "agent joined webhook", b, a);
        }
        // Agent message (webhook): one event.
        let b = c.get("request");
        w.lp_webhook(agent_says(&pc, round, "Olá, em que posso ajudar?"))
            .await;
        let a = c.get("request");
        delivered += 1;
        settle(fired, delivered).await;
        if !warm {
            rows(&mut t, "agent message webhook", b, a);
        }
        // User message.
        let b = c.get("request");
        w.post(
            &format!("/v1/conversations/{}/messages", conv(1)),
            json!({"text": "Oi"}),
        )
        .await;
        let a = c.get("request");
        if !warm {
            rows(&mut t, "user message", b, a);
        }
        // User close: one event.
        let b = c.get("request");
        w.post(&format!("/v1/conversations/{}/close", conv(1)), json!({}))
            .await;
        let a = c.get("request");
        delivered += 1;
        settle(fired, delivered).await;
        if !warm {
            rows(&mut t, "user close", b, a);
        }
        // A wait timer (integration 17, one second): fires, closes, one event.
        let _ = w.handoff(&conv(2), 17).await;
        let b = c.get("timer_fire");
        fired += 1;
        delivered += 1;
        settle(fired, delivered).await;
        let a = c.get("timer_fire");
        if !warm {
            rows(&mut t, "timer fire (wait timeout)", b, a);
        }
    }
    let _ = delivered;
    w.stop().await;
    // Deliveries: every one costs the same; averaged over all the measured ones. Their
    // results are written apart (`outbox_results`, one write for the deliveries that
    // finished together): here one at a time, so one write each.
    let (d, r) = (c.get("outbox_delivery"), c.get("outbox_results"));
    let d = (d.0 + r.0, d.1 + r.1);
    let n = c.delivered.load(Ordering::SeqCst);
    assert_eq!(d.0 % n, 0, "deliveries: {} statements over {n}", d.0);
    assert_eq!(d.1 % n, 0, "deliveries: {} round trips over {n}", d.1);
    t.0.push(("outbox delivery".into(), d.0 / n, d.1 / n));
    merge(t)
}

/// Rows of one op over the rounds: collects `(op, statements, round trips)` per run.
fn rows(t: &mut Table, op: &str, b: (u64, u64), a: (u64, u64)) {
    t.push(op, b, a, 1);
}

/// Every run of an op must cost the same: one row per op.
fn merge(t: Table) -> String {
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    for (op, st, rt) in t.0 {
        match out.iter().find(|r| r.0 == op) {
            Some(r) => assert_eq!((r.1, r.2), (st, rt), "{op} cost differs between runs"),
            None => out.push((op, st, rt)),
        }
    }
    Table(out).render()
}

fn snapshot(name: &str, table: &str) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.bind(|| insta::assert_snapshot!(name, table));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cost_per_operation() {
    let table = measure("state/transbordo.db").await;
    snapshot("sqlite_cost_per_operation", &table);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cost_per_operation() {
    let Some(db) = pg_support::test_db().await else {
        return;
    };
    let table = measure(&db.url).await;
    snapshot("postgres_cost_per_operation", &table);
}
