//! What a running action sees and may do ([`ActionCx`]), and the [`Services`] it reaches
//! the outside world with. Kept beside the [`Action`](super::Action) trait; the
//! interpreter, one floor up, builds them for each action it runs.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::flow::Store;
use crate::providers::{Handoff, Integrations, ProviderClient};
use crate::template::RunLimits;

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
    /// The budgets a run gets unless `Engine::run_with_limits` says otherwise; `check`
    /// reads `http_timeout_max` here (`Engine::with_limits`).
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
    /// Headers ([`crate::redact`] policy applied, as to the URL and body).
    pub headers: Value,
    /// JSON body (or form fields as an object), or `null`.
    pub body: Value,
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
    pub(crate) now: Option<std::time::SystemTime>,
}

impl ActionCx<'_> {
    /// The run's budgets (`http_request` bounds its timeout by `http_timeout_max`).
    pub fn limits(&self) -> &RunLimits {
        &self.limits
    }

    /// The run's clock ([`crate::interp::RunOptions::now`], else the system's).
    pub fn now(&self) -> std::time::SystemTime {
        self.now.unwrap_or_else(std::time::SystemTime::now)
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

    /// Records a request (`{"method","url","headers","body"}`), with the
    /// [`crate::redact`] policy applied.
    pub fn record_request(
        &mut self,
        integration_id: Option<String>,
        provider: Option<&str>,
        req: Value,
    ) {
        // Redacted here, once, whoever built the request: every reader of `requests`
        // (documents, playground, host code) sees the policy applied.
        let p = crate::redact::Policy::current();
        let get = |k: &str| req.get(k).cloned().unwrap_or(Value::Null);
        self.requests.push(RecordedRequest {
            action_index: self.index,
            integration_id,
            provider: provider.unwrap_or("http").to_string(),
            method: get("method"),
            url: p.json(&get("url")),
            headers: p.headers(&get("headers")),
            body: p.json(&get("body")),
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
