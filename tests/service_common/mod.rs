//! Shared helpers for the service tests: a fake `start_live_chat` (until the real
//! provider clients land), a recording transport, a builder receiver, signed webhooks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};
use transbordo::actions::{Action, ActionError, ErrorKind};
use transbordo::interp::ActionCx;
use transbordo::providers::{Handoff, IntegrationId};
use transbordo::service::auth;
use transbordo::service::events::sign_event;
use transbordo::service::{
    serve_with, LiveChatRecord, LiveChatTransport, ServiceConfig, ServiceState,
};
use transbordo::Engine;

pub const LP_SECRET: &str = "lp-client-secret";
pub const ZD_SECRET: &str = "zd-webhook-secret";
pub const ALTU_KEY: &str = "altu-access-key";
pub const BUILDER_SECRET: &str = "builder-signing-secret";
/// The builder API token every test config accepts (`[api] tokens`).
pub const API_TOKEN: &str = "test-api-token-0123456789";
/// A second accepted token (rotation).
pub const API_TOKEN_2: &str = "test-api-token-rotated-9876";

/// Integrations used by the tests: 7 LivePerson (wait 1 s), 8 LivePerson (no timers),
/// 1 Zendesk (no timers), 3 ALTU (wait 2 s, inactivity 1 s).
pub const INTEGRATIONS: &str = r#"
[[integration]]
id = 7
provider = "liveperson"
account_id = "123"
client_id = "cid"
client_secret = "lp-client-secret"
wait_timeout_s = 1

[[integration]]
id = 8
provider = "liveperson"
account_id = "123"
client_id = "cid"
client_secret = "lp-client-secret"
wait_timeout_s = 0

[[integration]]
id = 1
provider = "zendesk"
base_url = "http://127.0.0.1:9"
email = "bot@example.com"
api_token = "zd-token"
webhook_secret = "zd-webhook-secret"
wait_timeout_s = 0

[[integration]]
id = 3
provider = "altu_sdk"
webhook_url = "http://127.0.0.1:9/altu/events"
access_key = "altu-access-key"
access_token = "tok"
# Long enough that the webhook tests on a loaded machine finish before the wait timer.
wait_timeout_s = 30
user_inactivity_timeout_s = 1
"#;

/// Makes the handoff a successful `start_live_chat` would. The only place that builds a
/// `Handoff`: adapt here when the real providers module lands.
pub fn fake_handoff(
    provider: transbordo::providers::ProviderKind,
    integration_id: IntegrationId,
    provider_conversation_id: String,
) -> Handoff {
    Handoff {
        provider,
        integration_id,
        provider_conversation_id,
        consumer_token_key: None,
        handoff_id: uuid::Uuid::new_v4().to_string(),
        requester_id: None,
    }
}

/// `start_live_chat` without a provider: succeeds with provider conversation id
/// `parameters.provider_conversation_id` (default `pc-<conversation>`).
pub struct FakeStart;

#[async_trait]
impl Action for FakeStart {
    fn name(&self) -> &str {
        "start_live_chat"
    }
    fn required(&self) -> &[&str] {
        &["integration_id"]
    }
    async fn run(
        &self,
        params: &Map<String, Value>,
        cx: &mut ActionCx<'_>,
    ) -> Result<Value, ActionError> {
        let id = params
            .get("integration_id")
            .and_then(IntegrationId::from_json)
            .ok_or_else(|| ActionError::new(ErrorKind::Config, "bad integration_id"))?;
        let provider = cx
            .services()
            .integrations
            .get(&id)
            .map(|i| i.provider)
            .ok_or_else(|| ActionError::new(ErrorKind::Config, "unknown integration"))?;
        let pc = params
            .get("provider_conversation_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("pc-{}", cx.conversation_id()));
        cx.set_handoff(fake_handoff(provider, id, pc.clone()));
        Ok(json!({"status": "ok", "body": {"conversationId": pc}}))
    }
}

/// A transport that records calls; `fail_close` / `fail_send` make them fail.
#[derive(Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<(String, String, String)>>,
    pub fail_close: AtomicBool,
    pub fail_send: AtomicBool,
}

impl Recorder {
    pub fn calls(&self) -> Vec<(String, String, String)> {
        self.calls.lock().unwrap().clone()
    }
    pub fn count(&self, op: &str) -> usize {
        self.calls().iter().filter(|c| c.0 == op).count()
    }
}

#[async_trait]
impl LiveChatTransport for Recorder {
    async fn send_user_message(
        &self,
        chat: &LiveChatRecord,
        text: &str,
    ) -> Result<(), ActionError> {
        self.calls.lock().unwrap().push((
            "send".into(),
            chat.provider_conversation_id.clone(),
            text.into(),
        ));
        if self.fail_send.load(Ordering::SeqCst) {
            return Err(ActionError::new(ErrorKind::Unavailable, "send failed"));
        }
        Ok(())
    }
    async fn close(&self, chat: &LiveChatRecord) -> Result<(), ActionError> {
        self.calls.lock().unwrap().push((
            "close".into(),
            chat.provider_conversation_id.clone(),
            String::new(),
        ));
        if self.fail_close.load(Ordering::SeqCst) {
            return Err(ActionError::new(ErrorKind::Unavailable, "close failed"));
        }
        Ok(())
    }
}

/// The builder side: collects signed events; the first `fail_first` deliveries for
/// conversations starting with `fail_prefix` answer 500.
#[derive(Clone, Default)]
pub struct Receiver {
    pub events: Arc<Mutex<Vec<Value>>>,
    pub attempts: Arc<AtomicUsize>,
    pub fail_first: Arc<AtomicUsize>,
    pub fail_prefix: Arc<Mutex<String>>,
    pub bad_signatures: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(self) -> (String, Receiver) {
        let r = self.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let r = r.clone();
                async move { r.handle(headers, body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/events"), self)
    }

    /// The handler, for tests that serve the receiver themselves.
    pub fn handle_pub(&self, headers: HeaderMap, body: Bytes) -> StatusCode {
        self.handle(headers, body)
    }

    fn handle(&self, headers: HeaderMap, body: Bytes) -> StatusCode {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let ts = h("x-transbordo-timestamp");
        if h("x-transbordo-signature") != sign_event(BUILDER_SECRET, &ts, &body) {
            self.bad_signatures.fetch_add(1, Ordering::SeqCst);
            return StatusCode::UNAUTHORIZED;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        assert_eq!(h("x-transbordo-event-id"), v["event_id"].as_str().unwrap());
        let conv = v["conversation_id"].as_str().unwrap_or("");
        let prefix = self.fail_prefix.lock().unwrap().clone();
        if !prefix.is_empty() && conv.starts_with(&prefix) {
            let left = self.fail_first.load(Ordering::SeqCst);
            if left > 0 {
                self.fail_first.fetch_sub(1, Ordering::SeqCst);
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        }
        self.events.lock().unwrap().push(v);
        StatusCode::OK
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    pub fn for_conv(&self, conv: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["conversation_id"] == conv)
            .collect()
    }

    pub fn ended(&self, conv: &str) -> Vec<String> {
        self.for_conv(conv)
            .iter()
            .filter(|e| e["type"] == "live_chat_ended")
            .map(|e| {
                e["input"]["live_chat"]["status"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }
}

/// Writes `integrations.toml` and `service.toml` into `dir`; returns the config path.
pub fn write_config(dir: &Path, callback_url: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("integrations.toml"), INTEGRATIONS).unwrap();
    let cfg = format!(
        r#"listen = "127.0.0.1:0"
database = "state/transbordo.db"
integrations = "integrations.toml"

[builder]
callback_url = "{callback_url}"
signing_secret = "{BUILDER_SECRET}"

[delivery]
initial_backoff_ms = 100
max_backoff_ms = 400
timeout_ms = 2000

[api]
tokens = ["{API_TOKEN}", "{API_TOKEN_2}"]
{extra}
"#
    );
    let p = dir.join("service.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

/// A running in-process service.
pub struct Running {
    pub base: String,
    pub state: ServiceState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// The engine `serve` would build (guarded `http_request`), with [`FakeStart`].
pub fn engine(config: &ServiceConfig) -> Engine {
    Engine::new()
        .with_http_guard(config.http_guard.clone())
        .expect("guarded HTTP client")
        .with_integrations((*config.integrations).clone())
        .register(FakeStart)
}

/// Starts the service in this process (scheduler and outbox included).
pub async fn start(config_path: &Path, transport: Arc<dyn LiveChatTransport>) -> Running {
    let config = ServiceConfig::from_file(config_path).unwrap();
    let store = config.database.open().await.unwrap();
    let state = ServiceState::new(config.clone(), engine(&config), store, transport);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let task = tokio::spawn(async move {
        serve_with(st, listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Running {
        base,
        state,
        stop: Some(tx),
        task: Some(task),
    }
}

/// The text of `GET {base}/metrics` (empty when the body cannot be read).
pub async fn metrics_text(base: &str) -> String {
    client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .unwrap_or_default()
}

/// The value of one sample (`name` or `name{labels}`, as exposed) in a metrics text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// POST with the API token.
pub async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{base}{path}"))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// GET with the API token.
pub async fn get(base: &str, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{base}{path}"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Runs the start flow for `conv` on `integration`.
pub async fn start_chat(base: &str, conv: &str, integration: u32) -> Value {
    let (s, v) = post(
        base,
        &format!("/v1/conversations/{conv}/run"),
        json!({"flow": [{"name": "start_live_chat", "parameters": {"integration_id": integration}}],
               "context": {"contact": {"name": "Ana"}}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["live_chat"]["state"], "waiting", "{v}");
    v
}

pub async fn send_raw(
    base: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut rb = client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A correctly signed LivePerson webhook.
pub async fn lp_webhook(base: &str, integration: u32, body: &Value) -> (u16, Value) {
    let raw = body.to_string();
    let sig = auth::liveperson_signature(LP_SECRET, raw.as_bytes());
    send_raw(
        base,
        &format!("/webhooks/liveperson/{integration}"),
        &[("x-liveperson-signature", sig)],
        raw.as_bytes(),
    )
    .await
}

pub fn lp_change(
    conv: &str,
    ts: i64,
    state: &str,
    close_reason: Option<&str>,
    agent: bool,
) -> Value {
    let mut participants = vec![json!({"id": "consumer-1", "role": "CONSUMER"})];
    if agent {
        participants.push(json!({"id": "agent-9", "role": "ASSIGNED_AGENT"}));
    }
    let mut details = json!({"state": state, "stage": state, "participants": participants,
                             "metaDataLastUpdateTs": ts});
    if let Some(r) = close_reason {
        details["closeReason"] = json!(r);
    }
    json!({"kind": "notification", "type": "cqm.ExConversationChangeNotification",
           "body": {"changes": [{"type": "UPSERT", "result": {"convId": conv, "conversationDetails": details}}]}})
}

pub fn lp_message(conv: &str, seq: u64, role: &str, text: &str) -> Value {
    json!({"kind": "notification", "type": "ms.MessagingEventNotification",
           "body": {"changes": [{"sequence": seq, "originatorId": "agent-9",
              "originatorMetadata": {"id": "agent-9", "role": role},
              "serverTimestamp": 1528371199686u64, "dialogId": conv, "conversationId": conv,
              "event": {"type": "ContentEvent", "contentType": "text/plain", "message": text}}]}})
}

/// Current time as Zendesk writes it (RFC 3339, UTC).
pub fn zendesk_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    rfc3339(secs)
}

pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub async fn zd_webhook(base: &str, integration: u32, body: &Value, ts: &str) -> (u16, Value) {
    let raw = body.to_string();
    let sig = auth::zendesk_signature(ZD_SECRET, ts, raw.as_bytes());
    send_raw(
        base,
        &format!("/webhooks/zendesk/{integration}"),
        &[
            ("x-zendesk-webhook-signature", sig),
            ("x-zendesk-webhook-signature-timestamp", ts.to_string()),
        ],
        raw.as_bytes(),
    )
    .await
}

/// Integration 3's `access_token` (the `sub` of the platform's tokens).
pub const ALTU_ACCESS_TOKEN: &str = "tok";

/// The claims the platform puts in a token for integration 3 (protocol §3/§5): `iss`
/// "altu", `aud` our receiver URL (any host: only the path is compared), `sub` the
/// access token, 30 s lifetime, `conversation_id` = our handoff id.
pub fn altu_claims(jti: &str, conversation_id: &str) -> Value {
    let now = (transbordo::service::now_ms() / 1000) as i64;
    json!({"iss": "altu", "aud": "https://transbordo.example.com/webhooks/altu/3",
           "sub": ALTU_ACCESS_TOKEN, "iat": now, "exp": now + 30, "jti": jti,
           "conversation_id": conversation_id})
}

/// A valid platform token for integration 3 and conversation (handoff) `conversation_id`.
pub fn altu_token(jti: &str, conversation_id: &str) -> String {
    auth::sign_jwt(ALTU_KEY, &altu_claims(jti, conversation_id))
}

/// `altu_claims` with some claims replaced (`Value::Null` removes one), signed with `key`.
pub fn altu_token_with(key: &str, jti: &str, conversation_id: &str, patch: Value) -> String {
    let mut c = altu_claims(jti, conversation_id);
    if let (Some(m), Value::Object(p)) = (c.as_object_mut(), patch) {
        for (k, v) in p {
            if v.is_null() {
                m.remove(&k);
            } else {
                m.insert(k, v);
            }
        }
    }
    auth::sign_jwt(key, &c)
}

/// base64url without padding (for hand-made tokens).
pub fn base64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A platform → transbordo event envelope (protocol §2/§5).
pub fn altu_event(
    event: &str,
    event_id: &str,
    handoff_id: &str,
    platform_conversation_id: &str,
    data: Value,
) -> Value {
    json!({"event": event, "event_id": event_id, "conversation_id": handoff_id,
           "platform_conversation_id": platform_conversation_id, "data": data})
}

pub async fn altu_webhook(base: &str, integration: u32, body: &Value, token: &str) -> (u16, Value) {
    let raw = body.to_string();
    send_raw(
        base,
        &format!("/webhooks/altu/{integration}"),
        &[("authorization", format!("Bearer {token}"))],
        raw.as_bytes(),
    )
    .await
}

/// Polls until `f` is true or `timeout` passes.
pub async fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}
