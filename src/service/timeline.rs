//! A timeline per conversation: what happened to each of its live chats, in order, with
//! timestamps — the run that started it (flow, rendered parameters), each provider HTTP
//! attempt (step, method, URL, status, attempt, duration), each webhook (result), state
//! changes, timers, messages relayed (lengths; the text only with `[timeline]
//! include_text = true`) and each delivery attempt to the builder with its answer. Kept
//! in the store with the live chats and pruned after `[timeline] retention_days`.
//!
//! Every entry passes the [`crate::redact`] policy when written and again when read
//! (entries written before a secret was configured are hidden too). With `include_text =
//! false` (the default) no user text is kept at all: a `run` entry's parameters (where
//! the contact, the input, the context, `start_message` and transcripts end up) keep
//! their shape, numbers and booleans, but every string is stored as
//! `{"redacted_text": {"length": N}}` (N in characters, as relayed messages are counted).
//!
//! Entries are written after the change they describe (not in its transaction): a crash
//! between the two loses a line of the timeline, never a state change. One task per
//! process writes them (`TimelineQueue`): whatever entries are waiting go to the store
//! together (one multi-row insert), gathered for up to 5 ms after the first, so a
//! timeline line costs a fraction of a round trip instead of one, and requests do not
//! wait for it. A read of a timeline first waits for this process's waiting entries to
//! be written.

use serde_json::{json, Map, Value};

use super::lifecycle::{now_ms, ServiceState};
use super::store::{LiveChatRecord, LiveChatStore, TimelineEntry};
use crate::providers::observe::CallRecord;
use crate::redact::{Policy, REDACTED};

/// Most entries written in one insert.
const MAX_BATCH: usize = 512;

/// How long the writer waits for more entries after the first of a batch. Each process
/// batches only its own entries: with three replicas sharing a load, writing at once
/// made 2,317 inserts of a run that one replica wrote in 352.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

enum Queued {
    Entries(Vec<TimelineEntry>),
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The process's timeline writer (see the module docs).
pub(crate) struct TimelineQueue {
    tx: tokio::sync::mpsc::Sender<Queued>,
}

impl TimelineQueue {
    /// Starts the writer on the current runtime (`None` outside one: entries are then
    /// written by the caller). It stops once the queue's last handle is gone.
    pub(crate) fn start(store: std::sync::Arc<dyn LiveChatStore>) -> Option<TimelineQueue> {
        use tracing::Instrument as _;
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Queued>(4096);
        let writer = async move {
            while let Some(first) = rx.recv().await {
                let mut batch = Vec::new();
                let mut acks = Vec::new();
                // Entries arriving within LINGER of the first join its batch, unless
                // the batch is full or a read is waiting for it.
                let until = tokio::time::Instant::now() + LINGER;
                let mut next = Some(first);
                while let Some(q) = next.take() {
                    match q {
                        Queued::Entries(e) => batch.extend(e),
                        Queued::Flush(ack) => acks.push(ack),
                    }
                    if batch.len() < MAX_BATCH && acks.is_empty() {
                        next = tokio::time::timeout_at(until, rx.recv())
                            .await
                            .ok()
                            .flatten();
                    }
                }
                if !batch.is_empty() {
                    if let Err(e) = store.timeline_append(batch).await {
                        tracing::warn!(error = %e, "timeline: entries not stored");
                    }
                }
                for ack in acks {
                    let _ = ack.send(());
                }
            }
        };
        rt.spawn(writer.instrument(tracing::trace_span!("timeline_writer")));
        Some(TimelineQueue { tx })
    }
}

/// An entry about `chat`, now.
pub fn entry(chat: &LiveChatRecord, kind: &str, data: Value) -> TimelineEntry {
    TimelineEntry {
        live_chat_id: chat.id.clone(),
        conversation_id: chat.conversation_id.clone(),
        at: now_ms(),
        kind: kind.to_string(),
        data,
    }
}

/// `provider_call` entries for the HTTP attempts of one operation (`start`, `send`,
/// `close`).
pub fn calls(
    live_chat_id: &str,
    conversation_id: &str,
    operation: &str,
    calls: &[CallRecord],
) -> Vec<TimelineEntry> {
    calls
        .iter()
        .map(|c| TimelineEntry {
            live_chat_id: live_chat_id.to_string(),
            conversation_id: conversation_id.to_string(),
            at: c.at_ms,
            kind: "provider_call".into(),
            data: json!({
                "operation": operation,
                "step": c.step,
                "method": c.method,
                "url": c.url,
                "status": c.status,
                "attempt": c.attempt,
                "duration_ms": round_ms(c.duration_ms),
                "outcome": c.outcome,
            }),
        })
        .collect()
}

/// What a `run` entry's strings become without `include_text`.
pub const REDACTED_TEXT: &str = "redacted_text";

/// An entry's data as the timeline keeps it: the redaction policy applied and, without
/// `include_text`, the user text of a `run` entry replaced by lengths.
fn sanitize(p: &Policy, include_text: bool, kind: &str, data: &Value) -> Value {
    let mut data = p.json(data);
    if !include_text && kind == "run" {
        if let Some(Value::Array(actions)) = data.get_mut("actions") {
            for a in actions {
                if let Some(params) = a.get_mut("parameters") {
                    *params = text_shape(params);
                }
            }
        }
    }
    data
}

/// `v` with every string replaced by its length. `[redacted]` stays: it is no user text
/// and says a secret was there.
fn text_shape(v: &Value) -> Value {
    match v {
        Value::String(s) if s == REDACTED => v.clone(),
        Value::String(s) => json!({REDACTED_TEXT: {"length": s.chars().count()}}),
        Value::Array(a) => Value::Array(a.iter().map(text_shape).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, x)| (k.clone(), text_shape(x))).collect())
        }
        other => other.clone(),
    }
}

/// A message relayed: its length, and its text only when configured.
pub fn message(state: &ServiceState, direction: &str, text: &str) -> Value {
    let mut v = json!({"direction": direction, "length": text.chars().count()});
    if state.config().timeline.include_text {
        v["text"] = json!(text);
    }
    v
}

/// Milliseconds to the microsecond.
pub fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

impl ServiceState {
    /// Appends entries; a failure is logged, never returned (the timeline is a record of
    /// what happened, not part of it).
    pub(crate) async fn record(&self, mut entries: Vec<TimelineEntry>) {
        if entries.is_empty() {
            return;
        }
        let p = Policy::current();
        let include_text = self.config().timeline.include_text;
        for e in &mut entries {
            e.data = sanitize(&p, include_text, &e.kind, &e.data);
        }
        let entries = match self.timeline_queue() {
            Some(q) => match q.tx.send(Queued::Entries(entries)).await {
                Ok(()) => return,
                Err(tokio::sync::mpsc::error::SendError(Queued::Entries(e))) => e,
                Err(_) => return,
            },
            None => entries,
        };
        if let Err(e) = self.store().timeline_append(entries).await {
            tracing::warn!(error = %e, "timeline: entries not stored");
        }
    }

    /// Waits until the entries this process recorded so far are in the store.
    pub(crate) async fn flush_timeline(&self) {
        if let Some(q) = self.timeline_queue() {
            let (ack, done) = tokio::sync::oneshot::channel();
            if q.tx.send(Queued::Flush(ack)).await.is_ok() {
                let _ = done.await;
            }
        }
    }
}

/// `GET /v1/conversations/{id}/timeline`: every handoff of the conversation (oldest
/// first) with its entries in time order; `None` when there is nothing to show.
pub async fn view(state: &ServiceState, conversation_id: &str) -> Result<Option<Value>, String> {
    state.flush_timeline().await;
    let entries = state
        .store()
        .timeline(conversation_id)
        .await
        .map_err(|e| e.to_string())?;
    let p = Policy::current();
    let include_text = state.config().timeline.include_text;
    let mut order: Vec<String> = Vec::new();
    let mut groups: Map<String, Value> = Map::new();
    for mut e in entries {
        e.data = sanitize(&p, include_text, &e.kind, &e.data);
        if !groups.contains_key(&e.live_chat_id) {
            order.push(e.live_chat_id.clone());
            groups.insert(e.live_chat_id.clone(), json!([]));
        }
        let mut item = json!({"at_ms": e.at, "kind": e.kind});
        if let (Value::Object(m), Value::Object(d)) = (&mut item, e.data) {
            m.extend(d);
        }
        if let Some(Value::Array(list)) = groups.get_mut(&e.live_chat_id) {
            list.push(item);
        }
    }
    if order.is_empty() {
        return Ok(None);
    }
    let mut handoffs = Vec::new();
    for id in order {
        let mut list = match groups.remove(&id) {
            Some(Value::Array(l)) => l,
            _ => Vec::new(),
        };
        // Stable: entries written in the same millisecond keep their write order.
        list.sort_by_key(|v| v["at_ms"].as_i64().unwrap_or(0));
        let chat = state.store().get(&id).await.map_err(|e| e.to_string())?;
        let mut h = json!({"handoff_id": id});
        if let Some(c) = chat {
            h["provider"] = json!(c.provider);
            h["integration_id"] = json!(c.integration_id);
            h["provider_conversation_id"] = json!(c.provider_conversation_id);
            h["state"] = json!(c.state.as_str());
            h["status"] = json!(c.end_status.map(|s| s.as_str()));
            h["created_at_ms"] = json!(c.created_at);
            h["agent_joined_at_ms"] = json!(c.agent_joined_at);
            h["ended_at_ms"] = json!(c.ended_at);
        }
        h["entries"] = Value::Array(list);
        handoffs.push(h);
    }
    Ok(Some(
        json!({"conversation_id": conversation_id, "handoffs": handoffs}),
    ))
}
