//! The interpreter (spec §4–§5): an async loop that renders each action's parameters
//! against the store as it is now, sends `before_action_messages`, runs the action
//! and writes its result to `context[result_variable]`.
//!
//! Order of a node (**Decision**): `context` block, `contact` block, `actions` in
//! array order, `output`. A failing action yields an error result and the node goes on.

mod engine;
mod store;

use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Map, Value};

pub use crate::template::{Budget, Exceeded, RunLimits};
pub use engine::{Engine, RunOptions};
pub use store::{store_keys, Store, StoreError};

use crate::providers::{Handoff, Integrations, ProviderClient};

/// What actions use to reach the outside world: one HTTP client, the integrations and
/// the provider clients (with their token caches).
#[derive(Clone)]
pub struct Services {
    /// The client `http_request` uses (built on its first request).
    pub http: crate::providers::LazyClient,
    /// Where `http_request` may go (`None`: anywhere; the CLI's default).
    pub http_guard: Option<std::sync::Arc<crate::actions::HttpGuard>>,
    /// Live chat integrations by id.
    pub integrations: std::sync::Arc<Integrations>,
    /// LivePerson, Zendesk and ALTU SDK clients.
    pub providers: ProviderClient,
    /// Where `start_live_chat` records a handoff's intent before its first provider call
    /// (the lifecycle service's store); `None` records nothing (CLI, playground).
    pub journal: Option<std::sync::Arc<dyn HandoffJournal>>,
    /// The budgets a run gets unless [`Engine::run_with_limits`] says otherwise; `check`
    /// reads `http_timeout_max` here ([`Engine::with_limits`]).
    pub limits: RunLimits,
}

/// A handoff about to call its provider ([`HandoffJournal::begin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffStart {
    /// The handoff id.
    pub handoff_id: String,
    /// The builder's conversation.
    pub conversation_id: String,
    /// The integration.
    pub integration_id: String,
    /// `liveperson`, `zendesk` or `altu_sdk`.
    pub provider: &'static str,
    /// LivePerson: the `ext_consumer_id` the conversation is opened for.
    pub consumer_key: Option<String>,
}

/// Records handoffs before they reach a provider, so that one cut by a crash (the
/// provider conversation opened, the live chat never recorded) can be found again.
#[async_trait::async_trait]
pub trait HandoffJournal: Send + Sync {
    /// Records the intent; an error stops the handoff before any provider call.
    async fn begin(&self, start: &HandoffStart) -> Result<(), String>;
    /// The start failed (no live chat): forgets the intent. A live chat that is
    /// recorded finishes its intent itself.
    async fn abandon(&self, handoff_id: &str);
}

/// A message for the user, in the order it must be delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// The action that produced it (`None` for the node's `output`).
    pub action_index: Option<usize>,
    /// `before_action_messages`, `send_message` (or a host action's name), or `output`.
    pub source: String,
    /// The output item, e.g. `{"type":"text","text":"Aguarde um minuto..."}`.
    pub message: Value,
}

/// `{"type":"text","text":…}`, what `send_message` and `before_action_messages` send for
/// a text. Built at exact capacity: a run keeps every message until it ends, and a long
/// flow sends tens of thousands.
pub(crate) fn text_message(text: String) -> Value {
    let mut m = Map::with_capacity(2);
    m.insert("type".into(), Value::String("text".into()));
    m.insert("text".into(), Value::String(text));
    Value::Object(m)
}

/// Something worth a look that did not stop the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    /// The action concerned (`None` for node blocks).
    pub action_index: Option<usize>,
    /// JSON pointer in the flow document.
    pub pointer: String,
    /// What happened.
    pub message: String,
}

/// A request the flow sent, or in a dry run would send.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    /// The action that makes it.
    pub action_index: usize,
    /// The integration used (`null` for `http_request`).
    pub integration_id: Option<String>,
    /// `liveperson`, `zendesk`, `altu_sdk`, or `http`.
    pub provider: String,
    /// HTTP method.
    pub method: Value,
    /// URL, with `{service}` placeholders where a domain is only known after discovery.
    pub url: Value,
    /// Headers, secrets as `[redacted]`.
    pub headers: Value,
    /// JSON body (or form fields as an object), or `null`.
    pub body: Value,
}

/// One action's line in the trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceEntry {
    /// Position in `actions`.
    pub index: usize,
    /// The action's name.
    pub name: String,
    /// Rendered parameters, secrets redacted (`null` when rendering failed).
    pub parameters: Value,
    /// The result object.
    pub result: Value,
    /// Warnings raised while rendering or running it.
    pub warnings: Vec<String>,
    /// Wall time, in milliseconds.
    pub duration_ms: f64,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Messages for the user, in order.
    pub messages: Vec<Message>,
    /// Requests sent (or, in a dry run, that would be sent), in order.
    pub requests: Vec<RecordedRequest>,
    /// The context after the run.
    pub context: Value,
    /// The contact after the run.
    pub contact: Value,
    /// Missing values, ignored parameters, simulated results, …
    pub warnings: Vec<Warning>,
    /// One entry per action.
    pub trace: Vec<TraceEntry>,
    /// The handoff started by `start_live_chat`, if one succeeded.
    #[serde(serialize_with = "ser_handoff")]
    pub handoff: Option<Handoff>,
    /// The store after the run (for the next turn).
    #[serde(skip)]
    pub store: Store,
}

fn ser_handoff<S: serde::Serializer>(h: &Option<Handoff>, s: S) -> Result<S::Ok, S::Error> {
    h.as_ref().map(handoff_json).serialize(s)
}

/// The public view of a handoff: provider, integration, ids.
pub fn handoff_json(h: &Handoff) -> Value {
    json!({
        "provider": h.provider.as_str(),
        "integration_id": h.integration_id.to_string(),
        "provider_conversation_id": h.provider_conversation_id,
        "handoff_id": h.handoff_id,
    })
}

impl RunOutcome {
    /// The `transbordo render` document. Secret-looking keys (`token`, `secret`,
    /// `password`, …) in context and contact are shown as `[redacted]`.
    pub fn render_json(&self) -> Value {
        serde_json::to_value(self.document(true, false)).unwrap_or_default()
    }

    /// The `transbordo run` document (secret-looking keys redacted, as in `render`).
    pub fn run_json(&self) -> Value {
        serde_json::to_value(self.document(false, false)).unwrap_or_default()
    }

    /// The `render` (dry) or `run` document, optionally with the trace, as a view that
    /// serializes straight from the outcome: a large result is written out without
    /// first being copied into a JSON tree.
    pub fn document(&self, dry_run: bool, trace: bool) -> OutcomeDocument<'_> {
        OutcomeDocument {
            messages: &self.messages,
            requests: dry_run.then_some(self.requests.as_slice()),
            context: redact(&self.context),
            contact: redact(&self.contact),
            warnings: &self.warnings,
            handoff: (!dry_run).then(|| self.handoff.as_ref().map(handoff_json)),
            trace: trace.then_some(self.trace.as_slice()),
        }
    }
}

/// The document `render` and `run` print (see [`RunOutcome::document`]).
#[derive(Debug, Serialize)]
pub struct OutcomeDocument<'a> {
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<&'a [RecordedRequest]>,
    context: Value,
    contact: Value,
    warnings: &'a [Warning],
    #[serde(skip_serializing_if = "Option::is_none")]
    handoff: Option<Option<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<&'a [TraceEntry]>,
}

/// What a running action may see and do.
pub struct ActionCx<'a> {
    pub(crate) index: usize,
    pub(crate) name: &'a str,
    pub(crate) dry_run: bool,
    /// The store: `set_variables` writes here; others may read.
    pub store: &'a mut Store,
    pub(crate) services: &'a Services,
    pub(crate) messages: &'a mut Vec<Message>,
    pub(crate) warnings: &'a mut Vec<String>,
    pub(crate) requests: &'a mut Vec<RecordedRequest>,
    pub(crate) handoff: &'a mut Option<Handoff>,
    pub(crate) conversation_id: &'a str,
    pub(crate) limits: RunLimits,
}

impl ActionCx<'_> {
    /// The run's budgets (`http_request` bounds its timeout by `http_timeout_max`).
    pub fn limits(&self) -> &RunLimits {
        &self.limits
    }

    /// The action's position in the flow.
    pub fn index(&self) -> usize {
        self.index
    }

    /// True in `render`: nothing may be sent; record requests instead.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// HTTP client, integrations, provider clients.
    pub fn services(&self) -> &Services {
        self.services
    }

    /// The builder's conversation id for this run.
    pub fn conversation_id(&self) -> &str {
        self.conversation_id
    }

    /// Queues a message for the user.
    pub fn send(&mut self, message: Value) {
        self.messages.push(Message {
            action_index: Some(self.index),
            source: self.name.to_string(),
            message,
        });
    }

    /// Adds a warning to this action's trace.
    pub fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }

    /// Records a request (`{"method","url","headers","body"}`, secrets already redacted).
    pub fn record_request(
        &mut self,
        integration_id: Option<String>,
        provider: Option<&str>,
        req: Value,
    ) {
        let get = |k: &str| req.get(k).cloned().unwrap_or(Value::Null);
        self.requests.push(RecordedRequest {
            action_index: self.index,
            integration_id,
            provider: provider.unwrap_or("http").to_string(),
            method: get("method"),
            url: get("url"),
            headers: get("headers"),
            body: get("body"),
        });
    }

    /// Marks the handoff started by this action.
    pub fn set_handoff(&mut self, h: Handoff) {
        *self.handoff = Some(h);
    }
}

/// How a scalar shows inside a message text.
pub(crate) fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Keys whose values are secrets wherever they appear in parameters.
fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k == "authorization"
        || k.contains("token")
        || k.contains("secret")
        || k.contains("password")
        || k.contains("api_key")
        || k.contains("api-key")
}

/// Replaces secret-looking values in rendered parameters before they reach a trace.
pub(crate) fn redact(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    (
                        k.clone(),
                        if is_secret_key(k) && !x.is_null() {
                            json!("[redacted]")
                        } else {
                            redact(x)
                        },
                    )
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

pub(crate) fn millis_since(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}
