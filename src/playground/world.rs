//! What the page acts on: the engine (check, dry run), the in-process sandbox and
//! lifecycle service, and the conversations started from the page.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use indexmap::IndexMap;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::PlaygroundError;
use crate::flow::{parse_context, render_diagnostics, ContextError};
use crate::flow::{Diagnostic, Severity};
use crate::interp::{Engine, RunOptions, Store};
use crate::providers::request::{required_params, supported_params, COMMON_PARAMS};
use crate::providers::{Integrations, ProviderKind};
use crate::sandbox::{
    CloseReason, ControlError, JoinRequest, Provider, Sandbox, SandboxControl, SandboxOptions,
    WebhookPatch,
};
use crate::service::config::{BuilderConfig, DeliveryConfig, WebhookConfig};
use crate::service::events::sign_event;
use crate::service::provider::ProviderTransport;
use crate::service::{ServiceConfig, ServiceState, SqliteStore};

/// The name diagnostics give the flow being edited.
pub(crate) const FLOW_FILE: &str = "flow.json";

/// The sandbox's integrations, as documented; the sandbox URL is replaced by the
/// in-process sandbox's.
const INTEGRATIONS_TOML: &str = include_str!("../../examples/sandbox-integrations.toml");
const INTEGRATIONS_URL: &str = "http://127.0.0.1:8910";

/// Examples the page offers (`id`, title, flow); they share `examples/context.json`.
const EXAMPLES: &[(&str, &str, &str)] = &[
    (
        "liveperson-node",
        "LivePerson: a node with a message, a handoff and an output",
        include_str!("../../examples/node.json"),
    ),
    (
        "zendesk-ticket",
        "Zendesk: a ticket with tags and custom fields",
        include_str!("../../examples/zendesk-ticket.json"),
    ),
    (
        "altu-connector",
        "ALTU SDK connector: any agent platform",
        include_str!("../../examples/altu-handoff.json"),
    ),
];
const EXAMPLE_CONTEXT: &str = include_str!("../../examples/context.json");

/// An error answer: status and `{"error":{"code","message",…}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({"error": {"code": code, "message": message.into()}}),
        }
    }

    fn with(mut self, key: &str, value: Value) -> ApiError {
        self.body["error"][key] = value;
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

/// A conversation started from the page.
struct Conv {
    id: String,
    started_at_ms: i64,
    /// The service's `run` document.
    run: Value,
    /// The provider-side conversation id, when a live chat started.
    provider_conversation_id: Option<String>,
    /// Events the service sent to the builder (the playground), in arrival order.
    events: Vec<Value>,
    /// The view once nothing can change any more (ended on both sides, re-entry in):
    /// polling the page then costs no call to the service or the sandbox.
    settled: Option<Value>,
}

struct Inner {
    engine: Engine,
    integrations: Arc<Integrations>,
    control: SandboxControl,
    service_url: String,
    /// The service's only API token (made up per start, never shown): only this
    /// process can call the service's `/v1` routes.
    service_token: String,
    http: reqwest::Client,
    /// Key of the service's event signatures (made up per start, never shown).
    secret: String,
    convs: Mutex<IndexMap<String, Conv>>,
    next: AtomicU64,
    sandbox: tokio::sync::Mutex<Option<Sandbox>>,
    service_stop: Mutex<Option<oneshot::Sender<()>>>,
    service_task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

/// The playground's shared state. Cheap to clone.
#[derive(Clone)]
pub struct World {
    inner: Arc<Inner>,
}

fn startup(e: impl std::fmt::Display) -> PlaygroundError {
    PlaygroundError::Startup(e.to_string())
}

/// UTF-16 offsets (what a browser's text APIs count) of a byte span of `src`.
fn utf16_range(src: &str, (start, len): (usize, usize)) -> (usize, usize) {
    let mut a = start.min(src.len());
    while !src.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = start.saturating_add(len).min(src.len()).max(a);
    while !src.is_char_boundary(b) {
        b += 1;
    }
    let from = src[..a].encode_utf16().count();
    (from, from + src[a..b].encode_utf16().count())
}

/// A diagnostic as `check --format json` prints it, plus its UTF-16 range in the text.
fn diagnostic_json(d: &Diagnostic, src: &str) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or_else(|_| json!({}));
    let (from, to) = utf16_range(src, d.span);
    v["from"] = json!(from);
    v["to"] = json!(to);
    v
}

fn context_error_json(e: &ContextError) -> Value {
    json!({
        "severity": "error",
        "code": if e.syntax { "context::syntax" } else { "context::invalid" },
        "message": e.to_string(),
        "line": e.line,
        "column": e.column,
        "pointer": e.pointer,
    })
}

/// The context editor's text: empty means no context (as `check` without `--context`).
fn context_of(text: &str) -> Result<Option<(Store, Value)>, ContextError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_context(text).map(Some)
}

fn context_or_422(text: &str) -> Result<(Store, Value), ApiError> {
    match context_of(text) {
        Ok(Some(x)) => Ok(x),
        Ok(None) => Ok((Store::default(), json!({}))),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "context_invalid",
            format!("the context cannot be used: {e}"),
        )
        .with("context", context_error_json(&e))),
    }
}

/// The service's webhook segment of a provider and the sandbox fake that sends them (the
/// fakes are named by the segment), if the sandbox has one.
fn sandbox_fake(kind: ProviderKind) -> Option<(&'static str, Provider)> {
    let segment = kind.provider().webhooks()?.segment();
    [Provider::Liveperson, Provider::Zendesk, Provider::Altu]
        .into_iter()
        .find(|p| p.as_str() == segment)
        .map(|p| (segment, p))
}

fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::Status { status, body } => {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            let code = match status {
                400 => "bad_request",
                404 => "not_found",
                409 => "conflict",
                _ => "sandbox_error",
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            ApiError::new(status, code, format!("the sandbox refused: {message}"))
        }
        other => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "sandbox_unreachable",
            other.to_string(),
        ),
    }
}

impl World {
    /// Starts the sandbox and the service; `page_url` is where the service sends events.
    pub(crate) async fn start(page_url: &str) -> Result<World, PlaygroundError> {
        let sandbox = Sandbox::start(SandboxOptions::ephemeral())
            .await
            .map_err(startup)?;
        let control = sandbox.control();
        let toml = INTEGRATIONS_TOML.replace(INTEGRATIONS_URL, &sandbox.base_url());
        let integrations = Arc::new(
            Integrations::from_toml_str(&toml, "examples/sandbox-integrations.toml")
                .map_err(startup)?,
        );
        let service_listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await
                .map_err(startup)?;
        let service_addr = service_listener.local_addr().map_err(startup)?;
        let service_url = format!("http://{service_addr}");
        for i in integrations.iter() {
            let Some((segment, fake)) = sandbox_fake(i.provider) else {
                continue;
            };
            let patch = WebhookPatch {
                url: Some(Some(format!("{service_url}/webhooks/{segment}/{}", i.id))),
                ..WebhookPatch::default()
            };
            control.set_webhook(fake, &patch).await.map_err(startup)?;
        }
        let made_up = || {
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        };
        let secret = made_up();
        let service_token = made_up();
        // Flows from the page reach public addresses and the sandbox, nothing else on
        // this machine or its network.
        let http_guard =
            crate::actions::http_guard::HttpGuard::default().allow_socket(sandbox.addr());
        let config = ServiceConfig {
            listen: service_addr,
            database: crate::service::Database::Sqlite(PathBuf::from(":memory:")),
            database_connections: crate::service::store::postgres::DEFAULT_CONNECTIONS,
            integrations_path: PathBuf::from("examples/sandbox-integrations.toml"),
            integrations: integrations.clone(),
            flows_dir: None,
            builder: BuilderConfig {
                callback_url: format!("{page_url}/_builder/events"),
                signing_secret: secret.clone(),
            },
            // A person is watching: retry a failed event delivery soon.
            delivery: DeliveryConfig {
                initial_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(5),
                timeout: Duration::from_secs(5),
            },
            webhooks: WebhookConfig::default(),
            // A token even on loopback: other programs on this machine, and web pages
            // the person visits, must not run flows through the playground's service.
            api: crate::service::config::ApiConfig {
                tokens: vec![service_token.clone()],
                ..crate::service::config::ApiConfig::default()
            },
            http_guard: http_guard.clone(),
            timeline: crate::service::config::TimelineConfig::default(),
            reentry: Default::default(),
            reconcile: crate::service::config::ReconcileConfig::default(),
        };
        let store = SqliteStore::open(std::path::Path::new(":memory:"))
            .await
            .map_err(startup)?;
        let engine = Engine::try_new()
            .and_then(|e| e.with_http_guard(http_guard))
            .map_err(startup)?
            .with_integrations((*integrations).clone());
        let transport =
            ProviderTransport::new(engine.services().providers.clone(), integrations.clone());
        let state = ServiceState::new(config, engine.clone(), Arc::new(store), Arc::new(transport));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let service_task = tokio::spawn(async move {
            let stopped = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = crate::service::serve_with(state, service_listener, stopped).await {
                eprintln!("transbordo playground: the lifecycle service stopped: {e}");
            }
        });
        Ok(World {
            inner: Arc::new(Inner {
                engine,
                integrations,
                control,
                service_url,
                service_token,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .map_err(startup)?,
                secret,
                convs: Mutex::new(IndexMap::new()),
                next: AtomicU64::new(1),
                sandbox: tokio::sync::Mutex::new(Some(sandbox)),
                service_stop: Mutex::new(Some(stop_tx)),
                service_task: tokio::sync::Mutex::new(Some(service_task)),
            }),
        })
    }

    /// The in-process sandbox's base URL.
    pub fn sandbox_url(&self) -> String {
        self.inner.control.base_url().to_string()
    }

    /// The in-process lifecycle service's base URL (its `/v1` routes need a token only
    /// this process knows).
    pub fn service_url(&self) -> String {
        self.inner.service_url.clone()
    }

    fn convs(&self) -> MutexGuard<'_, IndexMap<String, Conv>> {
        self.inner.convs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the service (and its workers), then the sandbox.
    pub(crate) async fn shutdown(&self) {
        let stop = self
            .inner
            .service_stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.inner.service_task.lock().await.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Some(sb) = self.inner.sandbox.lock().await.take() {
            sb.shutdown().await;
        }
    }

    /// Integrations (without secrets), examples and URLs.
    pub(crate) fn info(&self) -> Value {
        let integrations: Vec<Value> = self
            .inner
            .integrations
            .iter()
            .map(|i| {
                let settings = i.provider.provider().public_settings(&i.settings);
                json!({
                    "id": i.id.as_str(),
                    "provider": i.provider.as_str(),
                    "wait_timeout_s": i.wait_timeout_s,
                    "user_inactivity_timeout_s": i.user_inactivity_timeout_s,
                    "settings": settings,
                    "parameters": {
                        "common": COMMON_PARAMS,
                        "required": required_params(i.provider),
                        "supported": supported_params(i.provider),
                    },
                })
            })
            .collect();
        let examples: Vec<Value> = EXAMPLES
            .iter()
            .map(|(id, title, flow)| json!({"id": id, "title": title, "flow": flow}))
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "flow_file": FLOW_FILE,
            "integrations": integrations,
            "examples": examples,
            "example_context": EXAMPLE_CONTEXT,
            "sandbox_url": self.sandbox_url(),
        })
    }

    /// `check` on the editor's texts: diagnostics (JSON and as the CLI prints them) and
    /// the context's own problem, if any.
    pub(crate) fn check(&self, flow: &str, context: &str) -> Value {
        let (sample, context_error) = match context_of(context) {
            Ok(x) => (x.map(|(_, v)| v), Value::Null),
            Err(e) => (None, context_error_json(&e)),
        };
        let diags = self.inner.engine.check(flow, FLOW_FILE, sample.as_ref());
        let human = render_diagnostics(&diags, &Arc::new(flow.to_string()), false);
        let errors = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        json!({
            "diagnostics": diags.iter().map(|d| diagnostic_json(d, flow)).collect::<Vec<_>>(),
            "human": human,
            "errors": errors,
            "warnings": diags.len() - errors,
            "context_error": context_error,
        })
    }

    fn load(&self, flow: &str, sample: &Value) -> Result<crate::Flow, ApiError> {
        self.inner
            .engine
            .load_with_sample(flow, FLOW_FILE, Some(sample))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "flow_invalid",
                    format!(
                        "the flow cannot be loaded ({} problem(s))",
                        e.diagnostics.len()
                    ),
                )
                .with(
                    "diagnostics",
                    Value::Array(
                        e.diagnostics
                            .iter()
                            .map(|d| diagnostic_json(d, flow))
                            .collect(),
                    ),
                )
            })
    }

    /// The dry run: `transbordo render`'s document plus the per-action trace.
    pub(crate) async fn render(
        &self,
        flow: &str,
        context: &str,
        strict: bool,
        now: Option<std::time::SystemTime>,
    ) -> Result<Value, ApiError> {
        let (store, sample) = context_or_422(context)?;
        let loaded = self.load(flow, &sample)?;
        let opts = RunOptions {
            strict,
            dry_run: true,
            trace: true,
            now,
            ..RunOptions::default()
        };
        let outcome = self.inner.engine.run(&loaded, store, &opts).await;
        let mut doc = outcome.render_json();
        doc["trace"] = serde_json::to_value(&outcome.trace).unwrap_or_default();
        Ok(doc)
    }

    /// Calls the in-process service; its error answers pass through as they are.
    async fn service(&self, path: &str, body: Option<Value>) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.inner.service_url);
        let req = match body {
            Some(b) => self.inner.http.post(url).json(&b),
            None => self.inner.http.get(url),
        }
        .bearer_auth(&self.inner.service_token);
        let unreachable = |e: reqwest::Error| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "service_unreachable",
                e.to_string(),
            )
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
        if status.is_success() {
            Ok(value)
        } else if value["error"]["code"].is_string() {
            Err(ApiError {
                status: StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                body: value,
            })
        } else {
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "service_error",
                format!("the service answered {status}: {text}"),
            ))
        }
    }

    /// Runs the flow for real on the service, as a new conversation `pg-N`.
    pub(crate) async fn run(
        &self,
        flow: &str,
        context: &str,
        strict: bool,
    ) -> Result<Value, ApiError> {
        let (_, context_doc) = context_or_422(context)?;
        // Positions of problems are those of the editor's text, not of the copy the
        // service receives.
        self.load(flow, &context_doc)?;
        let flow_doc: Value = serde_json::from_str(flow).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "flow_invalid",
                format!("the flow is not JSON the service accepts: {e}"),
            )
        })?;
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("pg-{n}");
        let run = self
            .service(
                &format!("/v1/conversations/{id}/run"),
                Some(json!({"flow": flow_doc, "context": context_doc, "strict": strict})),
            )
            .await?;
        let provider_conversation_id = run["live_chat"]["provider_conversation_id"]
            .as_str()
            .map(str::to_string);
        self.convs().insert(
            id.clone(),
            Conv {
                id: id.clone(),
                started_at_ms: crate::service::now_ms(),
                run,
                provider_conversation_id,
                events: Vec::new(),
                settled: None,
            },
        );
        self.conversation(&id).await
    }

    /// One conversation as the page shows it.
    async fn view(&self, id: &str) -> Result<Value, ApiError> {
        let (started_at_ms, run, pcid, events) = {
            let convs = self.convs();
            let c = convs.get(id).ok_or_else(|| unknown(id))?;
            if let Some(v) = &c.settled {
                return Ok(v.clone());
            }
            (
                c.started_at_ms,
                c.run.clone(),
                c.provider_conversation_id.clone(),
                c.events.clone(),
            )
        };
        let (live_chat, provider_conversation) = match &pcid {
            Some(pcid) => {
                let live = self
                    .service(&format!("/v1/conversations/{id}/live_chat"), None)
                    .await
                    .map(|v| v["live_chat"].clone())
                    .unwrap_or(Value::Null);
                let prov = self
                    .inner
                    .control
                    .conversation(pcid)
                    .await
                    .ok()
                    .and_then(|v| serde_json::to_value(v).ok())
                    .unwrap_or(Value::Null);
                (live, prov)
            }
            None => (Value::Null, Value::Null),
        };
        let reentry = events
            .iter()
            .rev()
            .find(|e| e["type"] == "live_chat_ended")
            .map(|e| e["input"].clone())
            .unwrap_or(Value::Null);
        let view = json!({
            "conversation_id": id,
            "started_at_ms": started_at_ms,
            "run": {
                "messages": run["messages"],
                "warnings": run["warnings"],
                "handoff": run["handoff"],
                "context": run["context"],
                "contact": run["contact"],
            },
            "live_chat": live_chat,
            "provider_conversation": provider_conversation,
            "events": events,
            "reentry": reentry,
        });
        let settled = !view["reentry"].is_null()
            && view["live_chat"]["state"] == "ended"
            && view["provider_conversation"]["status"] == "closed";
        if settled {
            if let Some(c) = self.convs().get_mut(id) {
                c.settled = Some(view.clone());
            }
        }
        Ok(view)
    }

    async fn conversation(&self, id: &str) -> Result<Value, ApiError> {
        Ok(json!({"conversation": self.view(id).await?}))
    }

    /// Every conversation started from the page, oldest first.
    pub(crate) async fn conversations(&self) -> Value {
        let ids: Vec<String> = self.convs().keys().cloned().collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Ok(v) = self.view(&id).await {
                out.push(v);
            }
        }
        json!({ "conversations": out })
    }

    fn provider_id(&self, id: &str) -> Result<String, ApiError> {
        let convs = self.convs();
        let c = convs.get(id).ok_or_else(|| unknown(id))?;
        c.provider_conversation_id.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_live_chat",
                format!("conversation `{}` did not start a live chat", c.id),
            )
        })
    }

    /// An agent joins the provider conversation.
    pub(crate) async fn join(&self, id: &str) -> Result<Value, ApiError> {
        let pcid = self.provider_id(id)?;
        self.inner
            .control
            .join(&pcid, &JoinRequest::default())
            .await
            .map_err(control_error)?;
        self.conversation(id).await
    }

    /// The agent writes.
    pub(crate) async fn agent_message(&self, id: &str, text: &str) -> Result<Value, ApiError> {
        let pcid = self.provider_id(id)?;
        self.inner
            .control
            .say(&pcid, text)
            .await
            .map_err(control_error)?;
        self.conversation(id).await
    }

    /// The agent sends a file (with `text` as its caption, possibly empty).
    pub(crate) async fn agent_file(
        &self,
        id: &str,
        text: &str,
        file: crate::sandbox::SayFile,
    ) -> Result<Value, ApiError> {
        let pcid = self.provider_id(id)?;
        self.inner
            .control
            .say_file(&pcid, text, file)
            .await
            .map_err(control_error)?;
        self.conversation(id).await
    }

    /// The user writes and/or sends files: through the service, as the builder would.
    pub(crate) async fn user_content(
        &self,
        id: &str,
        text: Option<String>,
        attachments: Option<Vec<Value>>,
    ) -> Result<Value, ApiError> {
        self.provider_id(id)?;
        let mut body = json!({});
        if let Some(t) = text {
            body["text"] = json!(t);
        }
        if let Some(a) = attachments {
            body["attachments"] = json!(a);
        }
        self.service(&format!("/v1/conversations/{id}/messages"), Some(body))
            .await?;
        self.conversation(id).await
    }

    /// Someone starts or stops typing: the user through the service, the agent on the
    /// provider (the sandbox).
    pub(crate) async fn typing(
        &self,
        id: &str,
        who: &str,
        typing: bool,
    ) -> Result<Value, ApiError> {
        let pcid = self.provider_id(id)?;
        let relayed = match who {
            "user" => self
                .service(
                    &format!("/v1/conversations/{id}/typing"),
                    Some(json!({ "typing": typing })),
                )
                .await
                .map(|_| ()),
            "agent" => self
                .inner
                .control
                .typing(&pcid, typing)
                .await
                .map(|_| ())
                .map_err(control_error),
            other => {
                return Err(ApiError::bad_request(format!(
                    "`who` must be \"agent\" or \"user\", not `{other}`"
                )))
            }
        };
        match relayed {
            // Typing is best-effort: the page's "stopped typing" (5 s after the last key)
            // may come after the chat ended; that is not an error to show.
            Err(e) if e.status == StatusCode::CONFLICT || e.status == StatusCode::NOT_FOUND => {}
            r => r.map(|_| ())?,
        }
        self.conversation(id).await
    }

    /// An agent's file as the builder would download it (`/files/…` of the service, or
    /// a file the sandbox serves), so the page can show it under its own origin. Only
    /// those two prefixes are fetched: this is not a general proxy.
    pub(crate) async fn attachment(&self, url: &str) -> Result<(String, Vec<u8>), ApiError> {
        let ours = [
            format!("{}/files/", self.inner.service_url),
            format!("{}/sandbox-files/", self.sandbox_url()),
        ];
        if !ours.iter().any(|p| url.starts_with(p.as_str())) || url.contains("..") {
            return Err(ApiError::bad_request(
                "only attachment URLs of this playground's service and sandbox are shown",
            ));
        }
        let r = self.inner.http.get(url).send().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "unreachable",
                e.without_url().to_string(),
            )
        })?;
        if !r.status().is_success() {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "attachment_unavailable",
                format!("the attachment answered {}", r.status()),
            ));
        }
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let b = r.bytes().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "unreachable",
                e.without_url().to_string(),
            )
        })?;
        Ok((ct, b.to_vec()))
    }

    /// The agent closes on the provider, or the user closes through the service.
    pub(crate) async fn close(&self, id: &str, by: &str) -> Result<Value, ApiError> {
        let pcid = self.provider_id(id)?;
        match by {
            "agent" => {
                self.inner
                    .control
                    .close(&pcid, CloseReason::Agent)
                    .await
                    .map_err(control_error)?;
            }
            "user" => {
                self.service(&format!("/v1/conversations/{id}/close"), Some(json!({})))
                    .await?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "`by` must be \"agent\" or \"user\", not `{other}`"
                )))
            }
        }
        self.conversation(id).await
    }

    /// An event from the service to the builder: signature checked, kept once per
    /// `event_id` with its conversation.
    pub(crate) fn builder_event(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        let expected = sign_event(&self.inner.secret, h("x-transbordo-timestamp"), body);
        if h("x-transbordo-signature") != expected {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "bad or missing X-Transbordo-Signature",
            ));
        }
        let event: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
        let Some(cid) = event["conversation_id"].as_str() else {
            return Err(ApiError::bad_request("the event has no conversation_id"));
        };
        if let Some(c) = self.convs().get_mut(cid) {
            if !c.events.iter().any(|e| e["event_id"] == event["event_id"]) {
                c.events.push(event);
            }
        }
        Ok(())
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_conversation",
        format!("no conversation `{id}` was started from this page"),
    )
}

#[cfg(test)]
mod tests {
    use super::utf16_range;

    #[test]
    fn utf16_ranges_count_what_browsers_count() {
        // "é" is 2 bytes and 1 UTF-16 unit; "😀" is 4 bytes and 2 units.
        let s = "aé😀b";
        assert_eq!(utf16_range(s, (0, 1)), (0, 1));
        assert_eq!(utf16_range(s, (1, 2)), (1, 2));
        assert_eq!(utf16_range(s, (3, 4)), (2, 4));
        assert_eq!(utf16_range(s, (7, 1)), (4, 5));
        // Out of range and mid-character spans are clamped, never panic.
        assert_eq!(utf16_range(s, (100, 5)), (5, 5));
        assert_eq!(utf16_range(s, (2, 1)), (1, 2));
    }
}
