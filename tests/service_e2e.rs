//! End to end with real processes: `transbordo serve` (the real binary) runs as a child
//! process, the providers are the real `transbordo sandbox` fakes (in this process, on
//! their own loopback port, speaking HTTP and signing their webhooks), and the builder is
//! a small HTTP receiver here that checks the event signatures and can fail deliveries.
//!
//! Every scenario asserts the exact re-entry body the builder receives
//! (`input.live_chat.status`), exactly once, and the provider side through the sandbox
//! control API (which is also how the tests play the agent).
//!
//! Covered: LivePerson `agent_closed`, `user_closed`, `timeout`, `error` (relay failure,
//! platform close before a join); Zendesk `agent_closed`, `user_closed`; ALTU
//! `agent_closed`, `user_inactivity_timeout`; duplicated, out-of-order and forged
//! webhooks; the service SIGKILLed mid live chat and restarted on the same database;
//! SIGTERM for a graceful exit.

mod service_common;

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use service_common::{get, post, send_raw, Receiver, API_TOKEN, BUILDER_SECRET};
use transbordo::sandbox::{
    CloseReason, ConversationStatus, ConversationView, DeliveryState, Fault, FaultRule,
    JoinRequest, Provider, Sandbox, SandboxControl, SandboxOptions, WebhookPatch,
};
use transbordo::service::auth;

const BIN: &str = env!("CARGO_BIN_EXE_transbordo");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Upper bound of any single wait (generous: CI runs the tests in parallel on 2 cores).
const DEADLINE: Duration = Duration::from_secs(10);
/// Polling interval.
const POLL: Duration = Duration::from_millis(20);

const LP: u32 = 7;
const ZD: u32 = 1;
const ALTU: u32 = 3;

/// The sandbox's built-in credentials (see `examples/sandbox-integrations.toml`).
const LP_SECRET: &str = "sandbox-secret";
const ZD_SECRET: &str = "sandbox-webhook-secret";

/// Polls `f` until it yields `Some`, or panics after [`DEADLINE`] naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Timer settings of one world's integrations (seconds; 0 = no timer).
#[derive(Clone, Copy)]
struct Timers {
    lp_wait: i64,
    altu_wait: i64,
    altu_inactivity: i64,
}

impl Default for Timers {
    fn default() -> Self {
        // Long enough never to fire in tests that do not want them to.
        Timers {
            lp_wait: 60,
            altu_wait: 60,
            altu_inactivity: 0,
        }
    }
}

/// `examples/sandbox-integrations.toml` pointed at this sandbox, with short timers.
fn integrations_toml(sandbox_base: &str, t: Timers) -> String {
    let src = std::fs::read_to_string(format!("{ROOT}/examples/sandbox-integrations.toml"))
        .expect("examples/sandbox-integrations.toml");
    assert!(src.contains("http://127.0.0.1:8910"), "example changed");
    let src = src.replace("http://127.0.0.1:8910", sandbox_base);
    let mut doc: toml::Table = src.parse().expect("example integrations parse");
    let list = doc
        .get_mut("integration")
        .and_then(toml::Value::as_array_mut)
        .expect("[[integration]] list");
    let mut seen = Vec::new();
    for i in list.iter_mut() {
        let t_ = i.as_table_mut().expect("integration table");
        let id = t_.get("id").and_then(toml::Value::as_integer).expect("id");
        seen.push(id);
        let mut set = |k: &str, v: i64| {
            t_.insert(k.into(), toml::Value::Integer(v));
        };
        match id {
            7 => set("wait_timeout_s", t.lp_wait),
            1 => set("wait_timeout_s", 0),
            3 => {
                set("wait_timeout_s", t.altu_wait);
                set("user_inactivity_timeout_s", t.altu_inactivity);
            }
            _ => {}
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, [1, 3, 7], "example integrations changed");
    toml::to_string(&doc).expect("toml")
}

/// The service child process; killed (and its log shown on a failing test) on drop.
struct ServiceProc {
    child: Child,
    log: PathBuf,
}

impl Drop for ServiceProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!(
                "--- transbordo serve log ({}) ---\n{log}",
                self.log.display()
            );
        }
    }
}

/// One isolated setup: sandbox, builder receiver, service process, temp dir.
struct World {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
    sb: SandboxControl,
    rx: Receiver,
    rx_url: String,
    port: u16,
    base: String,
    service: Option<ServiceProc>,
    starts: u32,
    probe: String,
    /// Every text the user sent (must never appear in a log line).
    said: std::sync::Mutex<Vec<String>>,
}

impl World {
    async fn start(timers: Timers) -> World {
        let sandbox = Sandbox::start(SandboxOptions::ephemeral())
            .await
            .expect("sandbox starts");
        let sb = sandbox.control();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("integrations.toml"),
            integrations_toml(&sandbox.base_url(), timers),
        )
        .expect("write integrations");
        // A flow only this world's service can load: proves we talk to our own child.
        std::fs::create_dir_all(dir.path().join("flows")).expect("flows dir");
        let probe = format!("probe-{}.json", uuid::Uuid::new_v4());
        std::fs::write(
            dir.path().join("flows").join(&probe),
            r#"[{"name": "send_message", "parameters": {"text": "probe"}}]"#,
        )
        .expect("write probe flow");
        let (rx_url, rx) = Receiver::default().start().await;
        let mut w = World {
            dir,
            sandbox,
            sb,
            rx,
            rx_url,
            port: free_port(),
            base: String::new(),
            service: None,
            starts: 0,
            probe,
            said: std::sync::Mutex::default(),
        };
        w.spawn_service().await;
        w
    }

    fn write_config(&self) -> PathBuf {
        let cfg = format!(
            r#"listen = "127.0.0.1:{port}"
database = "state/transbordo.db"
integrations = "integrations.toml"
flows_dir = "flows"

[builder]
callback_url = "{cb}"
signing_secret = "{BUILDER_SECRET}"

[delivery]
initial_backoff_ms = 50
max_backoff_ms = 200
timeout_ms = 3000

[api]
tokens = ["${{TRANSBORDO_E2E_API_TOKEN}}"]
"#,
            port = self.port,
            cb = self.rx_url,
        );
        let p = self.dir.path().join("service.toml");
        std::fs::write(&p, cfg).expect("write service.toml");
        p
    }

    /// Points the sandbox's webhooks at the service's current port.
    async fn point_webhooks(&self) {
        for (p, path) in [
            (Provider::Liveperson, format!("liveperson/{LP}")),
            (Provider::Zendesk, format!("zendesk/{ZD}")),
            (Provider::Altu, format!("altu/{ALTU}")),
        ] {
            let patch = WebhookPatch {
                url: Some(Some(format!(
                    "http://127.0.0.1:{}/webhooks/{path}",
                    self.port
                ))),
                ..WebhookPatch::default()
            };
            self.sb.set_webhook(p, &patch).await.expect("set webhook");
        }
    }

    /// Starts `transbordo serve` on the same config and database (first on the current
    /// port; if that port was taken meanwhile, on a fresh one).
    async fn spawn_service(&mut self) {
        assert!(self.service.is_none(), "service already running");
        for attempt in 0..5 {
            if attempt > 0 {
                self.port = free_port();
            }
            self.base = format!("http://127.0.0.1:{}", self.port);
            let cfg = self.write_config();
            self.point_webhooks().await;
            self.starts += 1;
            let log = self.dir.path().join(format!("serve-{}.log", self.starts));
            let child = Command::new(BIN)
                .env("TRANSBORDO_E2E_API_TOKEN", API_TOKEN)
                .env("TRANSBORDO_LOG", "info,transbordo=debug")
                .args(["--log-format", "json"])
                .arg("serve")
                .arg("--config")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("spawn transbordo serve");
            let mut proc = ServiceProc { child, log };
            if self.wait_ready(&mut proc).await {
                self.service = Some(proc);
                return;
            }
        }
        panic!("transbordo serve did not start after 5 attempts");
    }

    /// Waits until our child answers; false when it exited (e.g. the port was taken).
    async fn wait_ready(&self, proc: &mut ServiceProc) -> bool {
        let http = service_common::client();
        let url = format!("{}/v1/conversations/probe/run", self.base);
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Some(status) = proc.child.try_wait().expect("try_wait") {
                let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
                eprintln!("transbordo serve exited at startup ({status}): {log}");
                return false;
            }
            let r = http
                .post(&url)
                .bearer_auth(API_TOKEN)
                .json(&json!({"flow_file": self.probe}))
                .send()
                .await;
            if let Ok(r) = r {
                if r.status().is_success() {
                    return true;
                }
                // Someone else's service on this port: wait for ours to fail its bind.
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("transbordo serve not ready after {DEADLINE:?}");
    }

    /// SIGKILL (`Child::kill` on Unix), no chance to clean up.
    fn kill(&mut self) {
        let mut p = self.service.take().expect("service running");
        p.child.kill().expect("SIGKILL");
        let status = p.child.wait().expect("wait");
        assert!(!status.success(), "killed: {status:?}");
    }

    /// SIGTERM: the service must finish in-flight work and exit 0.
    async fn terminate(&mut self) {
        let mut p = self.service.take().expect("service running");
        let st = Command::new("kill")
            .args(["-TERM", &p.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(st.success());
        let status = eventually("exit after SIGTERM", || {
            let r = p.child.try_wait().expect("try_wait");
            async move { r }
        })
        .await;
        assert!(status.success(), "exit status after SIGTERM: {status:?}");
    }

    /// Runs the handoff flow for `conv` on `integration`; returns the live chat.
    async fn start_chat(&self, conv: &str, integration: u32) -> Value {
        let contact = if integration == ZD {
            json!({"name": "Ana Souza", "email": format!("{conv}@example.com")})
        } else {
            // No id/phone/email: LivePerson's consumer is then the conversation itself.
            json!({"name": "Ana Souza"})
        };
        let params = match integration {
            ZD => json!({"integration_id": integration, "subject": format!("Atendimento {conv}"),
                         "start_message": "Cliente pediu atendimento"}),
            _ => {
                json!({"integration_id": integration, "start_message": "Cliente pediu atendimento"})
            }
        };
        let (s, v) = post(
            &self.base,
            &format!("/v1/conversations/{conv}/run"),
            json!({"flow": [{"name": "start_live_chat", "parameters": params, "result_variable": "r"}],
                   "context": {"contact": contact}}),
        )
        .await;
        assert_eq!(s, 200, "run {conv}: {v}");
        let lc = v["live_chat"].clone();
        assert_eq!(lc["state"], "waiting", "{v}");
        assert!(lc["provider_conversation_id"].is_string(), "{v}");
        lc
    }

    async fn live_chat(&self, conv: &str) -> Value {
        let (s, v) = get(&self.base, &format!("/v1/conversations/{conv}/live_chat")).await;
        assert_eq!(s, 200, "{v}");
        v["live_chat"].clone()
    }

    async fn user_says(&self, conv: &str, text: &str) -> (u16, Value) {
        self.said.lock().expect("said").push(text.to_string());
        post(
            &self.base,
            &format!("/v1/conversations/{conv}/messages"),
            json!({ "text": text }),
        )
        .await
    }

    async fn user_closes(&self, conv: &str) -> (u16, Value) {
        post(
            &self.base,
            &format!("/v1/conversations/{conv}/close"),
            json!({}),
        )
        .await
    }

    async fn provider_conv(&self, id: &str) -> ConversationView {
        self.sb
            .conversation(id)
            .await
            .expect("the sandbox knows the conversation")
    }

    fn kinds(&self, conv: &str) -> Vec<String> {
        self.rx
            .for_conv(conv)
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Waits until the builder got exactly `kinds` for `conv` (fails at once on more).
    async fn wait_kinds(&self, conv: &str, kinds: &[&str]) {
        eventually(&format!("builder events {kinds:?} for {conv}"), || {
            let got = self.kinds(conv);
            assert!(
                got.len() <= kinds.len() && got.iter().zip(kinds).all(|(a, b)| a == b),
                "builder events for {conv}: {got:?}, expected {kinds:?}"
            );
            async move { (got.len() == kinds.len()).then_some(()) }
        })
        .await;
    }

    /// Waits until the sandbox delivered every webhook it produced (none in flight) and
    /// lets the service act on the last ones; then nothing more may arrive.
    async fn settle(&self) {
        self.webhooks_sent().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Waits until no sandbox webhook is in flight (each was delivered or failed).
    async fn webhooks_sent(&self) {
        eventually("sandbox webhooks delivered", || async {
            let n = self.sb.notifications().await.expect("notifications");
            n.iter()
                .all(|n| n.state != DeliveryState::Pending)
                .then_some(())
        })
        .await;
    }

    /// The re-entry statuses the builder received for `conv`, checking the event shape.
    fn reentries(&self, conv: &str) -> Vec<String> {
        self.rx
            .for_conv(conv)
            .iter()
            .filter(|e| e["type"] == "live_chat_ended")
            .map(|e| {
                let input = &e["input"];
                let status = input["live_chat"]["status"].as_str().unwrap_or("?");
                assert_eq!(input, &json!({"live_chat": {"status": status}}), "{e}");
                status.to_string()
            })
            .collect()
    }

    /// Asserts the one re-entry of `conv`, after the dust settled.
    async fn assert_reentry(&self, conv: &str, status: &str) {
        self.settle().await;
        assert_eq!(self.reentries(conv), [status], "{conv}");
        let lc = self.live_chat(conv).await;
        assert_eq!(lc["state"], "ended", "{lc}");
        assert_eq!(lc["status"], status, "{lc}");
        let ids: Vec<Value> = self
            .rx
            .events()
            .iter()
            .map(|e| e["event_id"].clone())
            .collect();
        let mut uniq = ids.clone();
        uniq.sort_by_key(|v| v.to_string());
        uniq.dedup();
        assert_eq!(uniq.len(), ids.len(), "an event was delivered twice");
    }

    /// LivePerson / Zendesk close notifications the sandbox produced for `id`.
    async fn close_notifications(&self, id: &str) -> usize {
        self.sb
            .notifications()
            .await
            .expect("notifications")
            .iter()
            .filter(|n| n.conversation_id == id)
            .filter(|n| {
                let b = n.body.to_string();
                match n.provider {
                    Provider::Liveperson => b.contains(r#""state":"CLOSE""#),
                    Provider::Zendesk => {
                        b.contains(r#""current":"SOLVED""#) || b.contains(r#""current":"CLOSED""#)
                    }
                    Provider::Altu => n.kind == "altu.agent_closed",
                }
            })
            .count()
    }

    async fn shutdown(mut self) {
        if self.service.is_some() {
            self.terminate().await;
        }
        self.assert_logs_clean();
        self.sandbox.shutdown().await;
    }

    /// Every secret of the config, every message text and every API token are absent
    /// from every log the service wrote; each line is a JSON object.
    fn assert_logs_clean(&self) {
        let integrations: toml::Table =
            std::fs::read_to_string(self.dir.path().join("integrations.toml"))
                .expect("integrations.toml")
                .parse()
                .expect("toml");
        let mut secrets = vec![BUILDER_SECRET.to_string(), API_TOKEN.to_string()];
        for i in integrations["integration"].as_array().expect("list") {
            for (k, v) in i.as_table().expect("table") {
                if ["secret", "token", "key", "password"]
                    .iter()
                    .any(|s| k.contains(s))
                {
                    secrets.push(v.as_str().expect("string secret").to_string());
                }
            }
        }
        let mut texts = self.said.lock().expect("said").clone();
        texts.extend(
            self.rx
                .events()
                .iter()
                .filter_map(|e| e["text"].as_str().map(str::to_string)),
        );
        let mut lines = 0;
        for n in 1..=self.starts {
            let log = std::fs::read_to_string(self.dir.path().join(format!("serve-{n}.log")))
                .unwrap_or_default();
            for line in log.lines() {
                lines += 1;
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
                assert!(
                    v["fields"]["message"].is_string() || v["message"].is_string(),
                    "{line}"
                );
                for s in &secrets {
                    assert!(!line.contains(s.as_str()), "a secret in the log: {line}");
                }
                for t in &texts {
                    assert!(
                        !line.contains(t.as_str()),
                        "message text in the log: {line}"
                    );
                }
            }
        }
        assert!(lines > 0, "the service logged nothing");
    }
}

fn pc(live_chat: &Value) -> String {
    live_chat["provider_conversation_id"]
        .as_str()
        .expect("provider_conversation_id")
        .to_string()
}

fn agent(name: &str) -> JoinRequest {
    JoinRequest {
        agent_id: None,
        agent_name: Some(name.into()),
    }
}

fn transcript_has(c: &ConversationView, role: &str, text: &str) -> bool {
    c.transcript
        .iter()
        .any(|t| t.role == role && t.text == text)
}

// ---------------------------------------------------------------------------------------
// LivePerson

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveperson_agent_joins_talks_and_closes_agent_closed() {
    let w = World::start(Timers::default()).await;
    let lc = w.start_chat("lp-agent", LP).await;
    let id = pc(&lc);
    let c = w.provider_conv(&id).await;
    assert_eq!(c.status, ConversationStatus::Waiting);
    assert!(
        transcript_has(&c, "consumer", "Cliente pediu atendimento"),
        "{c:?}"
    );

    w.sb.join(&id, &agent("Bia")).await.expect("join");
    w.wait_kinds("lp-agent", &["agent_joined"]).await;
    assert_eq!(w.live_chat("lp-agent").await["state"], "with_agent");
    w.sb.say(&id, "Oi, sou a Bia").await.expect("say");
    w.wait_kinds("lp-agent", &["agent_joined", "agent_message"])
        .await;
    assert_eq!(w.rx.for_conv("lp-agent")[1]["text"], "Oi, sou a Bia");

    // The user's message reaches the agent (and its CONSUMER echo is not relayed back).
    let (s, v) = w.user_says("lp-agent", "oi Bia, meu pedido atrasou").await;
    assert_eq!(s, 200, "{v}");
    let c = w.provider_conv(&id).await;
    assert!(
        transcript_has(&c, "consumer", "oi Bia, meu pedido atrasou"),
        "{c:?}"
    );

    w.sb.close(&id, CloseReason::Agent).await.expect("close");
    w.wait_kinds(
        "lp-agent",
        &["agent_joined", "agent_message", "live_chat_ended"],
    )
    .await;
    w.assert_reentry("lp-agent", "agent_closed").await;
    let c = w.provider_conv(&id).await;
    assert_eq!(c.status, ConversationStatus::Closed);
    assert_eq!(c.close_reason, Some(CloseReason::Agent));
    // After the end: messages are refused, the flow may run again.
    let (s, v) = w.user_says("lp-agent", "ainda aí?").await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (409, &json!("no_live_chat")),
        "{v}"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveperson_user_closes_user_closed() {
    let w = World::start(Timers::default()).await;
    let id = pc(&w.start_chat("lp-user", LP).await);
    w.sb.join(&id, &agent("Bia")).await.expect("join");
    w.wait_kinds("lp-user", &["agent_joined"]).await;

    let (s, v) = w.user_closes("lp-user").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["live_chat"]["status"], "user_closed", "{v}");
    w.wait_kinds("lp-user", &["agent_joined", "live_chat_ended"])
        .await;
    w.assert_reentry("lp-user", "user_closed").await;
    let c = w.provider_conv(&id).await;
    assert_eq!(c.status, ConversationStatus::Closed);
    assert_eq!(c.close_reason, Some(CloseReason::User));
    assert_eq!(w.close_notifications(&id).await, 1);
    // A second close: nothing open any more.
    let (s, _) = w.user_closes("lp-user").await;
    assert_eq!(s, 409);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveperson_nobody_joins_timeout_and_we_close_it() {
    let w = World::start(Timers {
        lp_wait: 1,
        ..Timers::default()
    })
    .await;
    let id = pc(&w.start_chat("lp-timeout", LP).await);
    w.wait_kinds("lp-timeout", &["live_chat_ended"]).await;
    w.assert_reentry("lp-timeout", "timeout").await;
    let c = w.provider_conv(&id).await;
    assert_eq!(c.status, ConversationStatus::Closed, "closed by us");
    assert_eq!(c.close_reason, Some(CloseReason::User), "closed by us");
    assert_eq!(w.close_notifications(&id).await, 1);
    // A late agent finds the conversation closed.
    assert!(w.sb.join(&id, &agent("Tarde")).await.is_err());
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveperson_provider_failures_end_with_error() {
    let w = World::start(Timers::default()).await;

    // 1. The relay of a user message fails at LivePerson: 502, re-entry `error`, and the
    //    provider conversation is closed (best effort) so nobody waits on it.
    let id = pc(&w.start_chat("lp-err-send", LP).await);
    w.sb.join(&id, &agent("Bia")).await.expect("join");
    w.wait_kinds("lp-err-send", &["agent_joined"]).await;
    w.sb.add_fault(&FaultRule {
        provider: Provider::Liveperson,
        endpoint: "send".into(),
        fault: Fault {
            status: Some(500),
            ..Fault::default()
        },
        times: 1,
    })
    .await
    .expect("fault");
    let (s, v) = w.user_says("lp-err-send", "alô?").await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (502, &json!("provider_error")),
        "{v}"
    );
    w.wait_kinds("lp-err-send", &["agent_joined", "live_chat_ended"])
        .await;
    w.assert_reentry("lp-err-send", "error").await;
    let c = w.provider_conv(&id).await;
    assert!(!transcript_has(&c, "consumer", "alô?"), "{c:?}");
    assert_eq!(c.status, ConversationStatus::Closed);

    // 2. The platform closes the conversation before any agent took it: `error`.
    let id = pc(&w.start_chat("lp-err-system", LP).await);
    w.sb.close(&id, CloseReason::System).await.expect("close");
    w.wait_kinds("lp-err-system", &["live_chat_ended"]).await;
    w.assert_reentry("lp-err-system", "error").await;
    assert_eq!(w.close_notifications(&id).await, 1);
    w.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Zendesk

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_agent_joins_comments_and_solves_agent_closed() {
    let w = World::start(Timers::default()).await;
    let lc = w.start_chat("zd-agent", ZD).await;
    let id = pc(&lc);
    let tickets =
        w.sb.conversations(Some(Provider::Zendesk), None)
            .await
            .expect("tickets");
    assert_eq!(tickets.len(), 1, "exactly one ticket: {tickets:?}");
    assert_eq!(tickets[0].id, id);
    assert_eq!(tickets[0].external_id.as_deref(), lc["handoff_id"].as_str());
    assert_eq!(tickets[0].details["status"], "new");

    let joined = w.sb.join(&id, &agent("Carla")).await.expect("join");
    assert_eq!(joined.conversation.details["status"], "open");
    w.wait_kinds("zd-agent", &["agent_joined"]).await;
    w.sb.say(&id, "Olá, sou a Carla").await.expect("say");
    w.wait_kinds("zd-agent", &["agent_joined", "agent_message"])
        .await;
    let msg = &w.rx.for_conv("zd-agent")[1];
    assert_eq!(msg["text"], "Olá, sou a Carla");
    assert_eq!(msg["agent"]["name"], "Carla");

    let (s, v) = w.user_says("zd-agent", "obrigada Carla").await;
    assert_eq!(s, 200, "{v}");
    let c = w.provider_conv(&id).await;
    assert!(transcript_has(&c, "consumer", "obrigada Carla"), "{c:?}");

    w.sb.close(&id, CloseReason::Agent).await.expect("solve");
    w.wait_kinds(
        "zd-agent",
        &["agent_joined", "agent_message", "live_chat_ended"],
    )
    .await;
    w.assert_reentry("zd-agent", "agent_closed").await;
    let c = w.provider_conv(&id).await;
    assert_eq!(c.details["status"], "solved");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_user_closes_user_closed() {
    let w = World::start(Timers::default()).await;
    let id = pc(&w.start_chat("zd-user", ZD).await);
    w.sb.join(&id, &agent("Carla")).await.expect("join");
    w.wait_kinds("zd-user", &["agent_joined"]).await;
    let (s, v) = w.user_closes("zd-user").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["live_chat"]["status"], "user_closed", "{v}");
    w.wait_kinds("zd-user", &["agent_joined", "live_chat_ended"])
        .await;
    // The ticket's SOLVED notification (the echo of our own close) does not turn it into
    // `agent_closed`.
    w.assert_reentry("zd-user", "user_closed").await;
    let c = w.provider_conv(&id).await;
    assert_eq!(c.details["status"], "solved", "{:?}", c.details);
    assert_eq!(w.close_notifications(&id).await, 1);
    w.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Duplicated, out-of-order and forged webhooks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_out_of_order_webhooks_reenter_once() {
    let w = World::start(Timers::default()).await;
    for p in [Provider::Liveperson, Provider::Zendesk] {
        let patch = WebhookPatch {
            duplicate: Some(true),
            ..WebhookPatch::default()
        };
        let s = w.sb.set_webhook(p, &patch).await.expect("duplicate on");
        assert!(s.duplicate);
    }
    for (conv, integration) in [("dup-lp", LP), ("dup-zd", ZD)] {
        let id = pc(&w.start_chat(conv, integration).await);
        let r = w.sb.join(&id, &agent("Dani")).await.expect("join");
        assert!(r.notifications.iter().all(|n| n.attempts == 2), "{r:?}");
        w.sb.say(&id, "uma vez só").await.expect("say");
        w.sb.close(&id, CloseReason::Agent).await.expect("close");
        w.wait_kinds(conv, &["agent_joined", "agent_message", "live_chat_ended"])
            .await;
        w.assert_reentry(conv, "agent_closed").await;
    }

    // Out of order: after each notification the previous one arrives again (older).
    let patch = WebhookPatch {
        duplicate: Some(false),
        out_of_order: Some(true),
        ..WebhookPatch::default()
    };
    w.sb.set_webhook(Provider::Liveperson, &patch)
        .await
        .expect("out_of_order on");
    let id = pc(&w.start_chat("ooo-lp", LP).await);
    w.sb.join(&id, &agent("Eva")).await.expect("join");
    w.sb.say(&id, "primeira").await.expect("say");
    w.sb.say(&id, "segunda").await.expect("say");
    w.sb.close(&id, CloseReason::Agent).await.expect("close");
    w.wait_kinds(
        "ooo-lp",
        &[
            "agent_joined",
            "agent_message",
            "agent_message",
            "live_chat_ended",
        ],
    )
    .await;
    w.assert_reentry("ooo-lp", "agent_closed").await;
    let texts: Vec<Value> =
        w.rx.for_conv("ooo-lp")
            .iter()
            .filter(|e| e["type"] == "agent_message")
            .map(|e| e["text"].clone())
            .collect();
    assert_eq!(texts, [json!("primeira"), json!("segunda")]);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_webhooks_are_refused_and_change_nothing() {
    let w = World::start(Timers::default()).await;
    let lp_id = pc(&w.start_chat("forge-lp", LP).await);
    let zd_id = pc(&w.start_chat("forge-zd", ZD).await);

    // LivePerson: an agent "close" that the provider never sent.
    let close = json!({"kind": "notification", "type": "cqm.ExConversationChangeNotification",
        "body": {"changes": [{"type": "UPSERT", "result": {"convId": lp_id, "conversationDetails": {
            "state": "CLOSE", "stage": "CLOSE", "closeReason": "AGENT",
            "metaDataLastUpdateTs": 4_102_444_800_000i64,
            "participants": [{"id": "x", "role": "ASSIGNED_AGENT"}]}}}]}});
    let raw = close.to_string();
    let lp_path = format!("/webhooks/liveperson/{LP}");
    for headers in [
        vec![(
            "x-liveperson-signature",
            auth::liveperson_signature("not-the-secret", raw.as_bytes()),
        )],
        vec![("x-liveperson-signature", "sha1=AAAA".to_string())],
        vec![],
    ] {
        let (s, v) = send_raw(&w.base, &lp_path, &headers, raw.as_bytes()).await;
        assert_eq!(s, 401, "{v}");
    }
    // Signed right but over other bytes (a body altered in transit).
    let sig = auth::liveperson_signature(LP_SECRET, raw.as_bytes());
    let tampered = raw.replace("AGENT\"", "CONSUMER\"");
    let (s, _) = send_raw(
        &w.base,
        &lp_path,
        &[("x-liveperson-signature", sig)],
        tampered.as_bytes(),
    )
    .await;
    assert_eq!(s, 401);

    // Zendesk: a "solved" with a wrong signature, and a correctly signed replay from
    // long ago.
    let solved = json!({"type": "zen:event-type:ticket.status_changed", "id": "forged-1",
        "detail": {"id": zd_id, "status": "SOLVED"}, "event": {"current": "SOLVED"}});
    let raw = solved.to_string();
    let zd_path = format!("/webhooks/zendesk/{ZD}");
    let now = service_common::zendesk_now();
    let old = service_common::rfc3339(transbordo::service::now_ms() / 1000 - 3600);
    for (secret, ts) in [("not-the-secret", &now), (ZD_SECRET, &old)] {
        let sig = auth::zendesk_signature(secret, ts, raw.as_bytes());
        let (s, v) = send_raw(
            &w.base,
            &zd_path,
            &[
                ("x-zendesk-webhook-signature", sig),
                ("x-zendesk-webhook-signature-timestamp", ts.clone()),
            ],
            raw.as_bytes(),
        )
        .await;
        assert_eq!(s, 401, "{v}");
    }
    // ALTU: no token / a token signed with another key.
    let altu_path = format!("/webhooks/altu/{ALTU}");
    let ev = json!({"event": "AGENT_CLOSED", "event_id": "forged", "conversation_id": "forge-lp"})
        .to_string();
    let now_s = transbordo::service::now_ms() / 1000;
    let bad = auth::sign_jwt(
        "not-the-key",
        &json!({"iat": now_s, "exp": now_s + 30, "jti": "j1"}),
    );
    for headers in [vec![], vec![("authorization", format!("Bearer {bad}"))]] {
        let (s, v) = send_raw(&w.base, &altu_path, &headers, ev.as_bytes()).await;
        assert_eq!(s, 401, "{v}");
    }

    // Nothing changed: both still wait, the builder heard nothing, providers untouched.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for conv in ["forge-lp", "forge-zd"] {
        assert_eq!(w.live_chat(conv).await["state"], "waiting");
        assert!(w.rx.for_conv(conv).is_empty());
    }
    assert_eq!(w.rx.bad_signatures.load(Ordering::SeqCst), 0);
    // ... and the real provider events still work afterwards.
    w.sb.close(&lp_id, CloseReason::Agent).await.expect("close");
    w.sb.close(&zd_id, CloseReason::Agent).await.expect("solve");
    w.wait_kinds("forge-lp", &["live_chat_ended"]).await;
    w.wait_kinds("forge-zd", &["live_chat_ended"]).await;
    // An agent close before any join: LivePerson says AGENT, Zendesk says solved.
    w.assert_reentry("forge-lp", "agent_closed").await;
    w.assert_reentry("forge-zd", "agent_closed").await;
    w.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Crash and restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_live_chat_then_restart_loses_and_doubles_nothing() {
    let mut w = World::start(Timers {
        lp_wait: 3,
        ..Timers::default()
    })
    .await;
    // The builder is down: every delivery fails until told otherwise.
    *w.rx.fail_prefix.lock().expect("lock") = "e2e-".into();
    w.rx.fail_first.store(usize::MAX, Ordering::SeqCst);

    // Chat 1 gets an agent at once (so its own wait timer is cancelled), a message each
    // way. Chat 2 waits for an agent that never comes.
    let msg_id = pc(&w.start_chat("e2e-msg", LP).await);
    w.sb.join(&msg_id, &agent("Bia")).await.expect("join");
    let lc = w.start_chat("e2e-wait", LP).await;
    let wait_id = pc(&lc);
    let wait_due = lc["deadlines"]["wait_ms"].as_i64().expect("wait deadline");
    w.sb.say(&msg_id, "Oi, sou a Bia").await.expect("say");
    let (s, v) = w.user_says("e2e-msg", "oi Bia").await;
    assert_eq!(s, 200, "{v}");
    eventually("events queued and attempted", || async {
        (w.rx.attempts.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    let lc = w.live_chat("e2e-wait").await;
    assert_eq!(
        lc["state"], "waiting",
        "the machine is too slow: the wait timeout fired before the kill"
    );

    w.webhooks_sent().await; // e.g. the echo of the user's message
    w.kill(); // SIGKILL mid live chat, with undelivered events in the outbox
    assert!(w.rx.events().is_empty());

    // While the service is down the agent writes again and closes chat 1: the sandbox
    // cannot deliver those webhooks and keeps them in its outbox.
    let r = w.sb.say(&msg_id, "Ainda está aí?").await.expect("say");
    assert_eq!(r.notifications[0].state, DeliveryState::Failed);
    let r =
        w.sb.close(&msg_id, CloseReason::Agent)
            .await
            .expect("close");
    assert_eq!(r.notifications[0].state, DeliveryState::Failed);
    // Let chat 2's wait deadline pass while nobody runs.
    eventually("the wait deadline passes", || async {
        (transbordo::service::now_ms() > wait_due + 100).then_some(())
    })
    .await;
    assert_eq!(
        w.provider_conv(&wait_id).await.status,
        ConversationStatus::Waiting
    );

    // Restart on the same database; the builder is still down at first.
    w.spawn_service().await;
    // The overdue timer fires once: the provider conversation is closed by us, once.
    eventually("chat 2 timed out", || async {
        (w.live_chat("e2e-wait").await["status"] == "timeout").then_some(())
    })
    .await;
    let c = w.provider_conv(&wait_id).await;
    assert_eq!(c.status, ConversationStatus::Closed);
    assert_eq!(c.close_reason, Some(CloseReason::User));
    // The provider's webhooks missed during the outage arrive now (twice, even).
    let redelivered = w.sb.redeliver_all().await.expect("redeliver");
    assert_eq!(redelivered.len(), 2, "{redelivered:?}");
    assert!(redelivered
        .iter()
        .all(|n| n.state == DeliveryState::Delivered));
    for n in &redelivered {
        w.sb.redeliver(n.id).await.expect("redeliver again");
    }
    eventually("chat 1 ended", || async {
        (w.live_chat("e2e-msg").await["status"] == "agent_closed").then_some(())
    })
    .await;
    assert!(w.rx.events().is_empty(), "the builder is still down");

    // The builder comes back: everything is delivered, in order, once.
    w.rx.fail_first.store(0, Ordering::SeqCst);
    w.wait_kinds(
        "e2e-msg",
        &[
            "agent_joined",
            "agent_message",
            "agent_message",
            "live_chat_ended",
        ],
    )
    .await;
    w.wait_kinds("e2e-wait", &["live_chat_ended"]).await;
    w.assert_reentry("e2e-wait", "timeout").await;
    w.assert_reentry("e2e-msg", "agent_closed").await;
    let texts: Vec<Value> =
        w.rx.for_conv("e2e-msg")
            .iter()
            .filter(|e| e["type"] == "agent_message")
            .map(|e| e["text"].clone())
            .collect();
    assert_eq!(texts, [json!("Oi, sou a Bia"), json!("Ainda está aí?")]);
    assert_eq!(w.close_notifications(&wait_id).await, 1, "closed once");
    let c = w.provider_conv(&msg_id).await;
    assert_eq!(
        c.transcript
            .iter()
            .filter(|t| t.role == "consumer" && t.text == "oi Bia")
            .count(),
        1,
        "the user's message reached the agent once: {c:?}"
    );

    // SIGTERM: graceful shutdown, exit 0.
    w.terminate().await;
    w.sandbox.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// ALTU SDK connector

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altu_agent_joins_talks_and_closes_agent_closed() {
    let w = World::start(Timers::default()).await;
    let id = pc(&w.start_chat("altu-agent", ALTU).await);
    assert_eq!(
        w.provider_conv(&id).await.status,
        ConversationStatus::Waiting
    );
    w.sb.join(&id, &agent("Gabi")).await.expect("join");
    w.wait_kinds("altu-agent", &["agent_joined"]).await;
    w.sb.say(&id, "Oi, aqui é a Gabi").await.expect("say");
    w.wait_kinds("altu-agent", &["agent_joined", "agent_message"])
        .await;
    assert_eq!(w.rx.for_conv("altu-agent")[1]["text"], "Oi, aqui é a Gabi");
    let (s, v) = w.user_says("altu-agent", "oi Gabi").await;
    assert_eq!(s, 200, "{v}");
    let c = w.provider_conv(&id).await;
    assert!(transcript_has(&c, "consumer", "oi Gabi"), "{c:?}");
    w.sb.close(&id, CloseReason::Agent).await.expect("close");
    w.wait_kinds(
        "altu-agent",
        &["agent_joined", "agent_message", "live_chat_ended"],
    )
    .await;
    w.assert_reentry("altu-agent", "agent_closed").await;
    assert_eq!(
        w.provider_conv(&id).await.status,
        ConversationStatus::Closed
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altu_user_silent_with_agent_user_inactivity_timeout() {
    let w = World::start(Timers {
        altu_inactivity: 1,
        ..Timers::default()
    })
    .await;
    let id = pc(&w.start_chat("altu-idle", ALTU).await);
    w.sb.join(&id, &agent("Gabi")).await.expect("join");
    w.wait_kinds("altu-idle", &["agent_joined"]).await;
    w.wait_kinds("altu-idle", &["agent_joined", "live_chat_ended"])
        .await;
    w.assert_reentry("altu-idle", "user_inactivity_timeout")
        .await;
    let c = w.provider_conv(&id).await;
    assert_eq!(c.status, ConversationStatus::Closed, "closed by us");
    assert_eq!(
        c.details["close_reason"], "user_inactivity_timeout",
        "{:?}",
        c.details
    );
    w.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Operating: metrics

/// The value of one sample (`name{labels}` exactly as exposed), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scenario() {
    let w = World::start(Timers {
        lp_wait: 3,
        ..Timers::default()
    })
    .await;
    // The builder refuses the first delivery once: one failed attempt.
    *w.rx.fail_prefix.lock().expect("prefix") = "m-agent".into();
    w.rx.fail_first.store(1, Ordering::SeqCst);
    // m-agent: joined, one message each way, closed by the agent.
    let a = pc(&w.start_chat("m-agent", LP).await);
    // m-wait: nobody joins: the wait timer ends it with `timeout`.
    w.start_chat("m-wait", LP).await;
    w.sb.join(&a, &agent("Bia")).await.expect("join");
    w.wait_kinds("m-agent", &["agent_joined"]).await;
    w.sb.say(&a, "Oi, sou a Bia").await.expect("say");
    let (s, _) = w.user_says("m-agent", "meu pedido").await;
    assert_eq!(s, 200);
    w.sb.close(&a, CloseReason::Agent).await.expect("close");
    w.wait_kinds(
        "m-agent",
        &["agent_joined", "agent_message", "live_chat_ended"],
    )
    .await;
    w.wait_kinds("m-wait", &["live_chat_ended"]).await;
    w.assert_reentry("m-agent", "agent_closed").await;
    w.assert_reentry("m-wait", "timeout").await;
    // m-open: still waiting when scraped.
    w.start_chat("m-open", LP).await;

    let r = service_common::client()
        .get(format!("{}/metrics", w.base))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/openmetrics-text"));
    let m = r.text().await.expect("text");
    let lp = r#"provider="liveperson""#;
    let checks = [
        (format!("transbordo_handoffs_total{{{lp},outcome=\"started\"}}"), 3.0),
        (format!("transbordo_live_chats_ended_total{{{lp},status=\"agent_closed\"}}"), 1.0),
        (format!("transbordo_live_chats_ended_total{{{lp},status=\"timeout\"}}"), 1.0),
        (format!("transbordo_live_chats_open{{{lp},state=\"waiting\"}}"), 1.0),
        (format!("transbordo_live_chats_open{{{lp},state=\"with_agent\"}}"), 0.0),
        (format!("transbordo_time_to_agent_seconds_count{{{lp}}}"), 1.0),
        (format!("transbordo_live_chat_duration_seconds_count{{{lp},status=\"agent_closed\"}}"), 1.0),
        (format!("transbordo_live_chat_duration_seconds_count{{{lp},status=\"timeout\"}}"), 1.0),
        (format!("transbordo_provider_request_duration_seconds_count{{{lp},operation=\"start\",outcome=\"ok\"}}"), 3.0),
        (format!("transbordo_provider_request_duration_seconds_count{{{lp},operation=\"send\",outcome=\"ok\"}}"), 1.0),
        (format!("transbordo_provider_request_duration_seconds_count{{{lp},operation=\"close\",outcome=\"ok\"}}"), 1.0),
        ("transbordo_timers_fired_total{kind=\"wait\"}".to_string(), 1.0),
        ("transbordo_outbox_deliveries_total{result=\"failed\"}".to_string(), 1.0),
        // agent_joined, agent_message, live_chat_ended ×2.
        ("transbordo_outbox_deliveries_total{result=\"delivered\"}".to_string(), 4.0),
        ("transbordo_outbox_pending".to_string(), 0.0),
        ("transbordo_outbox_oldest_pending_seconds".to_string(), 0.0),
    ];
    for (series, want) in &checks {
        assert_eq!(sample(&m, series), *want, "{series}\n{m}");
    }
    // Series without a provider label are exposed from the start, at 0.
    assert!(
        m.lines()
            .any(|l| l == "transbordo_timers_fired_total{kind=\"inactivity\"} 0"),
        "{m}"
    );
    // Webhooks: the join, the message, the close, all applied (the sandbox may also send
    // notifications that change nothing, e.g. the consumer's own message).
    let applied = sample(
        &m,
        &format!("transbordo_webhooks_total{{{lp},result=\"applied\"}}"),
    );
    assert!(applied >= 3.0, "{m}");
    // The time to agent is between the handoff and the scrape.
    let tta = sample(&m, &format!("transbordo_time_to_agent_seconds_sum{{{lp}}}"));
    assert!(tta > 0.0 && tta < 10.0, "{tta}");

    // The same story in m-agent's timeline, with the real provider HTTP attempts.
    let (s, t) = get(&w.base, "/v1/conversations/m-agent/timeline").await;
    assert_eq!(s, 200, "{t}");
    let h = &t["handoffs"][0];
    assert_eq!(h["status"], "agent_closed", "{t:#}");
    let entries = h["entries"].as_array().expect("entries");
    let calls: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "provider_call")
        .collect();
    let ops: std::collections::BTreeSet<&str> = calls
        .iter()
        .map(|c| c["operation"].as_str().expect("operation"))
        .collect();
    assert_eq!(ops, ["send", "start"].into_iter().collect(), "{calls:#?}");
    for c in &calls {
        let status = c["status"].as_u64().expect("status");
        assert!((200..300).contains(&status), "{c}");
        assert_eq!(c["attempt"], 1, "{c}");
        assert!(c["method"].is_string() && c["step"].is_string(), "{c}");
        let url = c["url"].as_str().expect("url");
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.contains('?'),
            "{c}"
        );
    }
    let deliveries: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e["kind"] == "delivery")
        .map(|e| {
            (
                e["event_type"].as_str().expect("type").to_string(),
                e["result"].as_str().expect("result").to_string(),
            )
        })
        .collect();
    let want = [
        ("agent_joined", "failed"),
        ("agent_joined", "delivered"),
        ("agent_message", "delivered"),
        ("live_chat_ended", "delivered"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(deliveries, want);
    let failed = entries
        .iter()
        .find(|e| e["kind"] == "delivery" && e["result"] == "failed")
        .expect("failed attempt");
    assert_eq!(failed["answer"], "builder answered 503 Service Unavailable");
    w.shutdown().await;
}
