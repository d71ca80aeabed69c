//! Events to the builder (their JSON shapes) and their signature.
//!
//! Every event has `type`, `event_id` (also in `X-Transbordo-Event-Id`),
//! `conversation_id`, `handoff_id`, `provider`, `integration_id` and `at_ms`. Types:
//! - `agent_joined`: `agent` `{id?, name?}`;
//! - `agent_message`: `text`, `agent`, and when the agent sent more than text
//!   `attachments` (`[{name, content_type, size?, url}]`) and/or `rich_content` (the
//!   provider's structured content, as sent);
//! - `agent_typing`: `typing` (bool), `agent`; best-effort: sent once, not retried,
//!   not stored;
//! - `agent_message`: `text`, `agent`;
//! - `agent_reply_overdue`: the user wrote and the joined agent has not answered within
//!   the integration's `agent_reply_timeout_s`: `agent`, `user_waiting_since_ms`,
//!   `timeout_s` (once per unanswered stretch; the chat goes on);
//! - `live_chat_ended`: `input` = `{"live_chat":{"status":…}}`, exactly what the builder
//!   passes as `input` when it runs the flow again (with `[reentry] details`, also the
//!   human part: provider, agent, `wait_ms`, `duration_ms`, message counts, transcript).
//!
//! Receivers should ignore types they do not know.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::store::{AgentInfo, EndStatus, LiveChatRecord};

fn base(kind: &str, chat: &LiveChatRecord, event_id: &str, now: i64) -> Value {
    json!({
        "type": kind,
        "event_id": event_id,
        "conversation_id": chat.conversation_id,
        "handoff_id": chat.id,
        "provider": chat.provider,
        "integration_id": chat.integration_id,
        "at_ms": now,
    })
}

/// A fresh event id.
pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `agent_joined`.
pub fn agent_joined(chat: &LiveChatRecord, agent: &AgentInfo, event_id: &str, now: i64) -> Value {
    let mut v = base("agent_joined", chat, event_id, now);
    v["agent"] = json!(agent);
    v
}

/// `agent_message`.
pub fn agent_message(
    chat: &LiveChatRecord,
    text: &str,
    agent: &AgentInfo,
    event_id: &str,
    now: i64,
) -> Value {
    let mut v = base("agent_message", chat, event_id, now);
    v["text"] = json!(text);
    v["agent"] = json!(agent);
    v
}

/// `agent_message` with `extra` fields (`attachments`, `rich_content`) merged in.
pub fn agent_message_with(
    chat: &LiveChatRecord,
    text: &str,
    agent: &AgentInfo,
    extra: &serde_json::Map<String, Value>,
    event_id: &str,
    now: i64,
) -> Value {
    let mut v = agent_message(chat, text, agent, event_id, now);
    for (k, x) in extra {
        v[k.as_str()] = x.clone();
    }
    v
}

/// `agent_typing` (never queued: see the module docs).
pub fn agent_typing(
    chat: &LiveChatRecord,
    typing: bool,
    agent: &AgentInfo,
    event_id: &str,
    now: i64,
) -> Value {
    let mut v = base("agent_typing", chat, event_id, now);
    v["typing"] = json!(typing);
    v["agent"] = json!(agent);
    v
}

/// `agent_reply_overdue`.
pub fn agent_reply_overdue(
    chat: &LiveChatRecord,
    agent: &AgentInfo,
    since: i64,
    timeout_s: u64,
    event_id: &str,
    now: i64,
) -> Value {
    let mut v = base("agent_reply_overdue", chat, event_id, now);
    v["agent"] = json!(agent);
    v["user_waiting_since_ms"] = json!(since);
    v["timeout_s"] = json!(timeout_s);
    v
}

/// `live_chat_ended`: the re-entry.
pub fn live_chat_ended(
    chat: &LiveChatRecord,
    status: EndStatus,
    event_id: &str,
    now: i64,
) -> Value {
    let mut v = base("live_chat_ended", chat, event_id, now);
    v["input"] = json!({"live_chat": {"status": status.as_str()}});
    v
}

/// `X-Transbordo-Signature`: `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`,
/// `timestamp` being the `X-Transbordo-Timestamp` value (Unix seconds).
pub fn sign_event(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + bytes.len() * 2);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
