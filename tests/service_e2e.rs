//! End to end with real processes: the service runs in a child process, the builder is
//! an HTTP receiver here, the provider a small HTTP fake here. The service is SIGKILLed
//! mid live chat and restarted: the wait timeout still fires once, undelivered events
//! are delivered, nothing is lost or doubled; then SIGTERM stops it cleanly.
//!
//! **Merge note:** until `transbordo serve` is wired into the CLI, the child is this
//! test binary re-executed (`child_service` below runs the service with a fake
//! `start_live_chat` and an HTTP transport to the fake provider). After the merge,
//! [`spawn_service`] becomes `Command::new(env!("CARGO_BIN_EXE_transbordo"))
//! .args(["serve", "--config", ...])` against `transbordo sandbox` as the provider.

mod service_common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use service_common::*;
use transbordo::actions::{ActionError, ErrorKind};
use transbordo::service::{
    LiveChatRecord, LiveChatTransport, ServiceConfig, ServiceState, SqliteStore,
};

const CHILD_CONFIG: &str = "TRANSBORDO_E2E_CHILD_CONFIG";
const CHILD_PROVIDER: &str = "TRANSBORDO_E2E_PROVIDER_URL";

/// Transport to the fake provider: `POST {base}/send` and `{base}/close`.
struct HttpTransport {
    base: String,
    http: reqwest::Client,
}

impl HttpTransport {
    async fn call(&self, op: &str, body: Value) -> Result<(), ActionError> {
        let r = self
            .http
            .post(format!("{}/{op}", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| ActionError::new(ErrorKind::Unavailable, e.to_string()))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(ActionError::new(ErrorKind::Rejected, "provider refused")
                .with_status(r.status().as_u16()))
        }
    }
}

#[async_trait]
impl LiveChatTransport for HttpTransport {
    async fn send_user_message(
        &self,
        chat: &LiveChatRecord,
        text: &str,
    ) -> Result<(), ActionError> {
        self.call(
            "send",
            json!({"conversation": chat.provider_conversation_id, "text": text}),
        )
        .await
    }
    async fn close(&self, chat: &LiveChatRecord) -> Result<(), ActionError> {
        self.call(
            "close",
            json!({"conversation": chat.provider_conversation_id}),
        )
        .await
    }
}

/// The child process: runs only when re-executed by the parent test.
#[test]
fn child_service() {
    let (Ok(config), Ok(provider)) = (std::env::var(CHILD_CONFIG), std::env::var(CHILD_PROVIDER))
    else {
        return; // a normal test run: nothing to do
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let config = ServiceConfig::from_file(std::path::Path::new(&config)).unwrap();
        let store = SqliteStore::open(&config.database).await.unwrap();
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let transport = Arc::new(HttpTransport {
            base: provider,
            http: reqwest::Client::new(),
        });
        let state = ServiceState::new(config.clone(), engine(&config), Arc::new(store), transport);
        transbordo::service::serve_with(state, listener, transbordo::service::shutdown_signal())
            .await
            .unwrap();
    });
}

/// Starts the service process on `config`. The one place to switch to the real binary.
fn spawn_service(config: &std::path::Path, provider_url: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_service",
            "--exact",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_CONFIG, config)
        .env(CHILD_PROVIDER, provider_url)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn wait_healthy(base: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(r) = client().get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("service did not become healthy at {base}");
}

/// The provider fake: records `send` and `close` calls.
async fn fake_provider() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let c1 = calls.clone();
    let c2 = calls.clone();
    let app = axum::Router::new()
        .route(
            "/send",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let c = c1.clone();
                async move { c.lock().unwrap().push(("send".into(), v)) }
            }),
        )
        .route(
            "/close",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let c = c2.clone();
                async move { c.lock().unwrap().push(("close".into(), v)) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), calls)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_live_chat_then_restart_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::default();
    *rx.fail_prefix.lock().unwrap() = "e2e-".into();
    rx.fail_first.store(1_000_000, Ordering::SeqCst); // the builder is down at first
    let (url, rx) = rx.start().await;
    let (provider, calls) = fake_provider().await;
    let port = free_port();
    let cfg = write_config(dir.path(), &url, "");
    let src = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg, src).unwrap();
    let base = format!("http://127.0.0.1:{port}");

    let mut a = spawn_service(&cfg, &provider);
    wait_healthy(&base).await;
    // Live chat 1 waits for an agent (ALTU integration 3: wait 2 s).
    let started = Instant::now();
    start_chat(&base, "e2e-wait", 3).await;
    // Live chat 2 gets an agent, a message, a user message and the agent's close.
    start_chat(&base, "e2e-msg", 8).await;
    lp_webhook(
        &base,
        8,
        &lp_message("pc-e2e-msg", 1, "ASSIGNED_AGENT", "Oi, sou a Bia"),
    )
    .await;
    let (s, _) = post(
        &base,
        "/v1/conversations/e2e-msg/messages",
        json!({"text": "oi Bia"}),
    )
    .await;
    assert_eq!(s, 200);
    lp_webhook(
        &base,
        8,
        &lp_change("pc-e2e-msg", 50, "CLOSE", Some("AGENT"), true),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "too slow to kill before the deadline"
    );
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    assert!(rx.events().is_empty());

    // The builder comes back; the deadline passes while the service is down.
    rx.fail_first.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2200).saturating_sub(started.elapsed())).await;
    let mut b = spawn_service(&cfg, &provider);
    wait_healthy(&base).await;
    assert!(
        wait_for(Duration::from_secs(10), || {
            rx.ended("e2e-wait").len() == 1 && rx.for_conv("e2e-msg").len() == 3
        })
        .await
    );
    // Late duplicates of the provider events, after the restart.
    lp_webhook(
        &base,
        8,
        &lp_change("pc-e2e-msg", 50, "CLOSE", Some("AGENT"), true),
    )
    .await;
    lp_webhook(
        &base,
        8,
        &lp_message("pc-e2e-msg", 1, "ASSIGNED_AGENT", "Oi, sou a Bia"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(rx.ended("e2e-wait"), vec!["timeout"]);
    let msg: Vec<Value> = rx.for_conv("e2e-msg");
    let kinds: Vec<&str> = msg.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["agent_joined", "agent_message", "live_chat_ended"]);
    assert_eq!(msg[1]["text"], "Oi, sou a Bia");
    assert_eq!(rx.ended("e2e-msg"), vec!["agent_closed"]);
    let calls = calls.lock().unwrap().clone();
    let closes: Vec<_> = calls.iter().filter(|c| c.0 == "close").collect();
    assert_eq!(closes.len(), 1, "{calls:?}");
    assert_eq!(closes[0].1["conversation"], "pc-e2e-wait");
    assert_eq!(calls.iter().filter(|c| c.0 == "send").count(), 1);
    let (_, lc) = get(&base, "/v1/conversations/e2e-wait/live_chat").await;
    assert_eq!(lc["live_chat"]["status"], "timeout");

    // SIGTERM: graceful shutdown, exit 0.
    let st = Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let start = Instant::now();
    loop {
        if let Some(status) = b.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
