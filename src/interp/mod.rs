//! The interpreter (spec §4–§5): an async loop that renders each action's parameters
//! against the store as it is now, sends `before_action_messages`, runs the action
//! and writes its result to `context[result_variable]`.
//!
//! Order of a node (**Decision**): `context` block, `contact` block, `actions` in
//! array order, `output`. A failing action yields an error result and the node goes on.

mod engine;
mod load;

use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Map, Value};

pub use crate::flow::{store_keys, Store, StoreError};
pub use engine::{Engine, RunOptions};
pub use load::{load, Flow, LoadError, LoadOptions};

pub(crate) use crate::actions::{display_value, text_message};
pub use crate::actions::{
    ActionCx, HandoffJournal, HandoffStart, Message, RecordedRequest, Services,
};
use crate::providers::Handoff;

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
