//! The agent platform behind the ALTU SDK connector, after the draft of
//! `docs/connector-protocol.md`. Kept in one file so it is easy to adjust when the
//! protocol settles.
//!
//! Inbound (`POST /altu/events`): `Authorization: Bearer <HS256 JWT signed with access_key>`
//! (claims `iat`, `exp` ≤ `iat` + 60 s, `jti`), `X-Access-Token: <access_token>`, body
//! `{"event": "OPEN_CONVERSATION" | "USER_MESSAGE" | "CLOSE_CONVERSATION", "event_id", "conversation_id", …}`.
//!
//! Outbound (to the ALTU webhook target): the same headers, body
//! `{"event": "AGENT_JOINED" | "AGENT_MESSAGE" | "AGENT_CLOSED", "event_id", "conversation_id"
//! (ours), "platform_conversation_id", "agent": {"id","name"}, "text"? , "reason"?, "ts"}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::control::AgentAction;
use super::model::{AgentView, CloseReason, ConversationStatus, JoinRequest, Provider};
use super::signing::verify_short_lived;
use super::state::{AppState, Conv, Inner};
use super::util::{header_str, json, now_ms, now_s};

/// Longest accepted JWT lifetime.
const MAX_JWT_LIFETIME_S: u64 = 60;

/// The ALTU route.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/altu/events", post(events))
}

fn invalid_token() -> Response {
    json(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"}))
}

fn invalid_request(description: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_request", "description": description}),
    )
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

async fn events(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let cfg = &st.cfg.altu;
    if header_str(&headers, "x-access-token") != Some(cfg.access_token.as_str()) {
        return invalid_token();
    }
    let Some(jwt) = header_str(&headers, "authorization").and_then(|h| h.strip_prefix("Bearer "))
    else {
        return invalid_token();
    };
    if verify_short_lived(
        cfg.access_key.as_bytes(),
        jwt.trim(),
        now_s(),
        MAX_JWT_LIFETIME_S,
    )
    .is_err()
    {
        return invalid_token();
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid_request(&format!("malformed JSON: {e}")),
    };
    let (Some(event), Some(event_id), Some(ours)) = (
        str_field(&v, "event"),
        str_field(&v, "event_id"),
        str_field(&v, "conversation_id"),
    ) else {
        return invalid_request("event, event_id and conversation_id are required");
    };
    let mut inner = st.lock();
    if let Some((status, answer)) = inner.altu.events.get(event_id) {
        return json(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
            answer.clone(),
        );
    }
    let (status, answer) = match event {
        "OPEN_CONVERSATION" => open(&mut inner, &v, ours),
        "USER_MESSAGE" | "CLOSE_CONVERSATION" => {
            let Some(pid) = inner.altu.by_ext.get(ours).cloned() else {
                return json(
                    StatusCode::NOT_FOUND,
                    json!({"error": "unknown_conversation"}),
                );
            };
            let Some(conv) = inner.convs.get_mut(&pid) else {
                return json(
                    StatusCode::NOT_FOUND,
                    json!({"error": "unknown_conversation"}),
                );
            };
            if conv.is_closed() {
                return json(
                    StatusCode::CONFLICT,
                    json!({"error": "conversation_closed"}),
                );
            }
            if event == "USER_MESSAGE" {
                let text = v
                    .get("text")
                    .or_else(|| v.pointer("/message/text"))
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str);
                let Some(text) = text else {
                    return invalid_request("USER_MESSAGE needs `text`");
                };
                conv.say("consumer", text);
            } else {
                conv.view.status = ConversationStatus::Closed;
                conv.view.close_reason = Some(CloseReason::User);
                conv.view.updated_at_ms = now_ms();
            }
            (
                StatusCode::OK,
                json!({"conversation_id": pid, "status": "ok"}),
            )
        }
        other => return invalid_request(&format!("unknown event `{other}`")),
    };
    if status.is_success() {
        inner
            .altu
            .events
            .insert(event_id.to_string(), (status.as_u16(), answer.clone()));
    }
    json(status, answer)
}

fn open(inner: &mut Inner, v: &Value, ours: &str) -> (StatusCode, Value) {
    if let Some(pid) = inner.altu.by_ext.get(ours) {
        return (
            StatusCode::CONFLICT,
            json!({"error": "conversation_exists", "conversation_id": pid}),
        );
    }
    let pid = format!("altu-{}", uuid::Uuid::new_v4());
    let pick = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let details = json!({"contact": pick("contact"), "skill_id": pick("skill_id"),
        "start_message": pick("start_message"), "extra_info": pick("extra_info"),
        "contact_info": pick("contact_info")});
    let mut conv = Conv::new(Provider::Altu, pid.clone(), details);
    conv.view.external_id = Some(ours.to_string());
    conv.view.skill_id = match v.get("skill_id") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    conv.view.consumer_id = v.get("contact").and_then(|c| c.get("id")).map(|id| {
        id.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| id.to_string())
    });
    if let Some(m) = str_field(v, "start_message") {
        conv.say("bot", m);
    }
    inner.altu.by_ext.insert(ours.to_string(), pid.clone());
    inner.convs.insert(pid.clone(), conv);
    (StatusCode::CREATED, json!({ "conversation_id": pid }))
}

/// Makes up the agent for a join.
pub(crate) fn new_agent(inner: &mut Inner, req: &JoinRequest) -> AgentView {
    let id = req.agent_id.clone().unwrap_or_else(|| {
        let n = inner.altu.next_agent;
        inner.altu.next_agent += 1;
        format!("agent-{n}")
    });
    AgentView {
        id,
        name: req
            .agent_name
            .clone()
            .unwrap_or_else(|| "Sandbox Agent".into()),
    }
}

/// Outbound event of an agent action.
pub(crate) fn notify(inner: &mut Inner, id: &str, action: &AgentAction) -> Vec<u64> {
    let Some(conv) = inner.convs.get(id) else {
        return Vec::new();
    };
    let v = &conv.view;
    let mut body = json!({"event_id": uuid::Uuid::new_v4().to_string(), "conversation_id": v.external_id,
        "platform_conversation_id": v.id, "agent": v.agent, "ts": now_ms()});
    let (event, kind) = match action {
        AgentAction::Join(_) => ("AGENT_JOINED", "altu.agent_joined"),
        AgentAction::Say(text) => {
            body["text"] = json!(text);
            ("AGENT_MESSAGE", "altu.agent_message")
        }
        AgentAction::Close(by) => {
            body["reason"] = json!(by);
            ("AGENT_CLOSED", "altu.agent_closed")
        }
    };
    let mut full = json!({ "event": event });
    if let (Some(dst), Value::Object(src)) = (full.as_object_mut(), body) {
        dst.extend(src);
    }
    vec![inner.push_note(Provider::Altu, id, kind, full, None)]
}
