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
use serde_json::{json, Value};

pub use crate::flow::{store_keys, Store, StoreError};
pub use crate::template::{Budget, Exceeded, RunLimits};
pub use engine::{Engine, RunOptions};
pub use load::{load, Flow, LoadError, LoadOptions};

pub(crate) use crate::actions::{display_value, text_message};
pub use crate::actions::{
    ActionCx, HandoffJournal, HandoffStart, Message, RecordedRequest, Services,
};
use crate::providers::Handoff;
use crate::redact::Policy;

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
    /// Rendered parameters, with the [`crate::redact`] policy applied (`null` when
    /// rendering failed).
    pub parameters: Value,
    /// The result object, with the [`crate::redact`] policy applied.
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
    /// The `transbordo render` document, with the [`crate::redact`] policy applied to
    /// everything in it (secret keys, credential headers, configured secret values).
    pub fn render_json(&self) -> Value {
        serde_json::to_value(self.document(true, false)).unwrap_or_default()
    }

    /// The `transbordo run` document (redacted as in `render`).
    pub fn run_json(&self) -> Value {
        serde_json::to_value(self.document(false, false)).unwrap_or_default()
    }

    /// The `render` (dry) or `run` document, optionally with the trace, as a view that
    /// serializes straight from the outcome: a large result is written out without
    /// first being copied into a JSON tree.
    pub fn document(&self, dry_run: bool, trace: bool) -> OutcomeDocument<'_> {
        OutcomeDocument {
            policy: Policy::current(),
            messages: &self.messages,
            requests: dry_run.then_some(self.requests.as_slice()),
            context: &self.context,
            contact: &self.contact,
            warnings: &self.warnings,
            handoff: (!dry_run).then(|| self.handoff.as_ref().map(handoff_json)),
            trace: trace.then_some(self.trace.as_slice()),
        }
    }
}

/// The document `render` and `run` print (see [`RunOutcome::document`]). It serializes
/// with the [`crate::redact`] policy applied, straight from the outcome (no copy).
#[derive(Debug)]
pub struct OutcomeDocument<'a> {
    policy: Policy,
    messages: &'a [Message],
    requests: Option<&'a [RecordedRequest]>,
    context: &'a Value,
    contact: &'a Value,
    warnings: &'a [Warning],
    handoff: Option<Option<Value>>,
    trace: Option<&'a [TraceEntry]>,
}

impl Serialize for OutcomeDocument<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let p = &self.policy;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("messages", &Each(self.messages, p))?;
        if let Some(r) = self.requests {
            m.serialize_entry("requests", &Each(r, p))?;
        }
        m.serialize_entry("context", &p.view(self.context))?;
        m.serialize_entry("contact", &p.view(self.contact))?;
        m.serialize_entry("warnings", &Each(self.warnings, p))?;
        if let Some(h) = &self.handoff {
            m.serialize_entry("handoff", h)?;
        }
        if let Some(t) = self.trace {
            m.serialize_entry("trace", &Each(t, p))?;
        }
        m.end()
    }
}

/// Serializes a list of items, each through [`Redacted`].
struct Each<'a, T>(&'a [T], &'a Policy);

impl<T: Redacted> Serialize for Each<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for it in self.0 {
            seq.serialize_element(&it.redacted(self.1))?;
        }
        seq.end()
    }
}

/// An outcome item as the documents show it: its JSON with the policy applied. Items
/// are small (one message, one request); the large parts, `context` and `contact`, are
/// serialized through [`Policy::view`] instead.
trait Redacted {
    fn redacted(&self, p: &Policy) -> Value;
}

impl Redacted for Message {
    fn redacted(&self, p: &Policy) -> Value {
        json!({
            "action_index": self.action_index,
            "source": self.source,
            "message": p.view(&self.message),
        })
    }
}

impl Redacted for RecordedRequest {
    fn redacted(&self, p: &Policy) -> Value {
        json!({
            "action_index": self.action_index,
            "integration_id": self.integration_id,
            "provider": self.provider,
            "method": self.method,
            "url": p.view(&self.url),
            "headers": p.headers(&self.headers),
            "body": p.view(&self.body),
        })
    }
}

impl Redacted for Warning {
    fn redacted(&self, p: &Policy) -> Value {
        json!({
            "action_index": self.action_index,
            "pointer": self.pointer,
            "message": p.text(&self.message),
        })
    }
}

impl Redacted for TraceEntry {
    fn redacted(&self, p: &Policy) -> Value {
        json!({
            "index": self.index,
            "name": self.name,
            "parameters": p.view(&self.parameters),
            "result": p.view(&self.result),
            "warnings": self.warnings.iter().map(|w| p.text(w)).collect::<Vec<_>>(),
            "duration_ms": self.duration_ms,
        })
    }
}

pub(crate) fn millis_since(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}
