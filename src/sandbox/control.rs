//! The control API under `/_sandbox/…`: play the agent, inspect and redeliver webhooks,
//! switch webhook targets, inject faults.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::model::{
    ActionResult, CloseReason, CloseRequest, ConversationStatus, ConversationView, DeliveryState,
    FaultRule, JoinRequest, NotificationView, Provider, SandboxInfo, SayRequest, TokenSettings,
    WebhookPatch,
};
use super::state::AppState;
use super::util::{json, now_ms, now_s, parse_urlencoded};
use super::{altu, faults, liveperson, webhooks, zendesk};

/// An agent-side action on a conversation.
#[derive(Debug, Clone)]
pub(crate) enum AgentAction {
    Join(JoinRequest),
    Say(String),
    /// The agent sends a file (with an optional caption / text).
    File {
        text: String,
        file: super::state::StoredFile,
    },
    /// The agent starts or stops typing.
    Typing(bool),
    Close(CloseReason),
}

/// The control routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/_sandbox", get(info))
        .route("/_sandbox/conversations", get(list))
        .route("/_sandbox/conversations/{id}", get(show))
        .route("/_sandbox/conversations/{id}/join", post(join))
        .route("/_sandbox/conversations/{id}/say", post(say))
        .route("/_sandbox/conversations/{id}/typing", post(typing))
        .route("/_sandbox/conversations/{id}/close", post(close))
        .route("/_sandbox/notifications", get(notifications))
        .route("/_sandbox/outbox", get(outbox))
        .route("/_sandbox/outbox/redeliver", post(redeliver_all))
        .route("/_sandbox/outbox/{id}/redeliver", post(redeliver_one))
        .route("/_sandbox/webhooks", get(get_webhooks))
        .route("/_sandbox/webhooks/{provider}", put(set_webhook))
        .route(
            "/_sandbox/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sandbox/liveperson/tokens", post(tokens))
        .route(
            "/_sandbox/liveperson/second_conversation",
            get(get_second).put(set_second),
        )
        .route(
            "/_sandbox/liveperson/search_lag",
            get(get_search_lag).put(set_search_lag),
        )
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    json(status, json!({ "error": msg.into() }))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_value(v) {
        Ok(v) => json(StatusCode::OK, v),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn parse_enum<T: DeserializeOwned>(s: &str, what: &str) -> Result<T, Response> {
    serde_json::from_value(Value::String(s.to_string()))
        .map_err(|_| err(StatusCode::BAD_REQUEST, format!("unknown {what} `{s}`")))
}

pub(crate) fn info_of(st: &AppState) -> SandboxInfo {
    let b = &st.base_url;
    SandboxInfo {
        base_url: b.clone(),
        liveperson_csds_url: b.clone(),
        liveperson_account_id: st.cfg.liveperson.account_id.clone(),
        zendesk_base_url: b.clone(),
        altu_events_url: format!("{b}/altu/events"),
        control_url: format!("{b}/_sandbox"),
        webhooks: st.lock().webhooks.clone(),
    }
}

async fn info(State(st): State<Arc<AppState>>) -> Response {
    to_json(&info_of(&st))
}

async fn list(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let q = parse_urlencoded(q.as_deref().unwrap_or(""));
    let provider: Option<Provider> = match q.get("provider") {
        Some(p) => match parse_enum(p, "provider") {
            Ok(p) => Some(p),
            Err(r) => return r,
        },
        None => None,
    };
    let status: Option<ConversationStatus> = match q.get("status") {
        Some(s) => match parse_enum(s, "status") {
            Ok(s) => Some(s),
            Err(r) => return r,
        },
        None => None,
    };
    let inner = st.lock();
    let convs: Vec<&ConversationView> = inner
        .convs
        .values()
        .map(|c| &c.view)
        .filter(|v| {
            provider.is_none_or(|p| v.provider == p) && status.is_none_or(|s| v.status == s)
        })
        .collect();
    to_json(&json!({ "conversations": convs }))
}

async fn show(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match st.lock().convs.get(&id) {
        Some(c) => to_json(&c.view),
        None => err(StatusCode::NOT_FOUND, format!("no conversation `{id}`")),
    }
}

async fn join(State(st): State<Arc<AppState>>, Path(id): Path<String>, body: Bytes) -> Response {
    match parse::<JoinRequest>(&body) {
        Ok(r) => act(st, id, AgentAction::Join(r)).await,
        Err(r) => r,
    }
}

async fn say(State(st): State<Arc<AppState>>, Path(id): Path<String>, body: Bytes) -> Response {
    match parse::<SayRequest>(&body) {
        Ok(SayRequest {
            text,
            file: Some(f),
        }) => {
            use base64::Engine as _;
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(f.data_base64.trim())
            else {
                return err(
                    StatusCode::BAD_REQUEST,
                    "file.data_base64 is not valid base64",
                );
            };
            let file = super::state::StoredFile {
                name: f.name,
                content_type: f.content_type,
                bytes,
                declared: None,
                at_s: now_s(),
            };
            act(st, id, AgentAction::File { text, file }).await
        }
        Ok(r) if r.text.trim().is_empty() => err(StatusCode::BAD_REQUEST, "text is empty"),
        Ok(r) => act(st, id, AgentAction::Say(r.text)).await,
        Err(r) => r,
    }
}

async fn typing(State(st): State<Arc<AppState>>, Path(id): Path<String>, body: Bytes) -> Response {
    let provider = st.lock().convs.get(&id).map(|c| c.view.provider);
    if provider == Some(Provider::Zendesk) {
        return err(
            StatusCode::CONFLICT,
            "Zendesk tickets have no typing indicator",
        );
    }
    match parse::<super::model::TypingRequest>(&body) {
        Ok(r) => act(st, id, AgentAction::Typing(r.typing)).await,
        Err(r) => r,
    }
}

async fn close(State(st): State<Arc<AppState>>, Path(id): Path<String>, body: Bytes) -> Response {
    match parse::<CloseRequest>(&body) {
        Ok(r) => act(st, id, AgentAction::Close(r.by)).await,
        Err(r) => r,
    }
}

/// Applies an agent action, produces the provider's notifications and delivers them
/// before answering.
pub(crate) async fn act(st: Arc<AppState>, id: String, action: AgentAction) -> Response {
    let ids = {
        let mut inner = st.lock();
        let Some(conv) = inner.convs.get(&id) else {
            return err(StatusCode::NOT_FOUND, format!("no conversation `{id}`"));
        };
        let provider = conv.view.provider;
        if conv.is_closed() {
            return err(StatusCode::CONFLICT, "the conversation is closed");
        }
        let has_agent = conv.view.agent.is_some();
        let agent = match &action {
            AgentAction::Join(req) => Some(match provider {
                Provider::Liveperson => liveperson::new_agent(&st, &mut inner, req),
                Provider::Zendesk => zendesk::new_agent(&mut inner, req),
                Provider::Altu => altu::new_agent(&mut inner, req),
            }),
            AgentAction::Say(_) | AgentAction::File { .. } | AgentAction::Typing(_)
                if !has_agent =>
            {
                return err(StatusCode::CONFLICT, "no agent has joined: join first");
            }
            _ => None,
        };
        let Some(conv) = inner.convs.get_mut(&id) else {
            return err(StatusCode::NOT_FOUND, format!("no conversation `{id}`"));
        };
        conv.view.updated_at_ms = now_ms();
        match &action {
            AgentAction::Join(_) => {
                conv.view.agent = agent;
                conv.view.status = ConversationStatus::WithAgent;
            }
            AgentAction::Say(text) => conv.say("agent", text),
            // The provider's module records the file where it keeps it.
            AgentAction::File { text, .. } if !text.is_empty() => conv.say("agent", text),
            AgentAction::File { .. } => {}
            AgentAction::Typing(t) => conv.set_typing("agent", *t),
            AgentAction::Close(by) => {
                conv.view.status = ConversationStatus::Closed;
                conv.view.close_reason = Some(*by);
            }
        }
        match provider {
            Provider::Liveperson => liveperson::notify(&st, &mut inner, &id, &action),
            Provider::Zendesk => zendesk::notify(&st, &mut inner, &id, &action),
            Provider::Altu => altu::notify(&st, &mut inner, &id, &action),
        }
    };
    webhooks::dispatch(&st, &ids).await;
    let inner = st.lock();
    let Some(conv) = inner.convs.get(&id) else {
        return err(StatusCode::NOT_FOUND, format!("no conversation `{id}`"));
    };
    let notifications: Vec<NotificationView> = ids
        .iter()
        .filter_map(|i| inner.note(*i))
        .map(|n| n.view.clone())
        .collect();
    to_json(&ActionResult {
        conversation: conv.view.clone(),
        notifications,
    })
}

async fn notifications(State(st): State<Arc<AppState>>) -> Response {
    let inner = st.lock();
    let v: Vec<&NotificationView> = inner.notes.iter().map(|n| &n.view).collect();
    to_json(&json!({ "notifications": v }))
}

async fn outbox(State(st): State<Arc<AppState>>) -> Response {
    let inner = st.lock();
    let v: Vec<&NotificationView> = inner
        .notes
        .iter()
        .map(|n| &n.view)
        .filter(|n| n.state == DeliveryState::Failed)
        .collect();
    to_json(&json!({ "notifications": v }))
}

fn views(st: &AppState, ids: &[u64]) -> Vec<NotificationView> {
    let inner = st.lock();
    ids.iter()
        .filter_map(|i| inner.note(*i))
        .map(|n| n.view.clone())
        .collect()
}

async fn redeliver_one(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(n) = id.parse::<u64>() else {
        return err(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a notification id"),
        );
    };
    if st.lock().note(n).is_none() {
        return err(StatusCode::NOT_FOUND, format!("no notification {n}"));
    }
    webhooks::deliver(&st, n).await;
    to_json(&json!({ "notifications": views(&st, &[n]) }))
}

async fn redeliver_all(State(st): State<Arc<AppState>>) -> Response {
    let ids: Vec<u64> = st
        .lock()
        .notes
        .iter()
        .filter(|n| n.view.state == DeliveryState::Failed)
        .map(|n| n.view.id)
        .collect();
    for &i in &ids {
        webhooks::deliver(&st, i).await;
    }
    to_json(&json!({ "notifications": views(&st, &ids) }))
}

async fn get_webhooks(State(st): State<Arc<AppState>>) -> Response {
    to_json(&st.lock().webhooks)
}

async fn set_webhook(
    State(st): State<Arc<AppState>>,
    Path(p): Path<String>,
    body: Bytes,
) -> Response {
    let provider: Provider = match parse_enum(&p, "provider") {
        Ok(p) => p,
        Err(r) => return r,
    };
    let patch: WebhookPatch = match parse(&body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut inner = st.lock();
    let s = inner.webhooks.get_mut(provider);
    if let Some(url) = patch.url {
        s.url = url;
    }
    if let Some(spread) = patch.spread {
        s.spread = spread;
    }
    if let Some(d) = patch.duplicate {
        s.duplicate = d;
    }
    if let Some(o) = patch.out_of_order {
        s.out_of_order = o;
    }
    if let Some(o) = patch.signature_order {
        s.signature_order = o;
    }
    to_json(s)
}

async fn list_faults(State(st): State<Arc<AppState>>) -> Response {
    to_json(&json!({ "faults": st.lock().faults }))
}

async fn add_fault(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let rule: FaultRule = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(e) = faults::validate(&rule) {
        return err(StatusCode::BAD_REQUEST, e);
    }
    if let Some(s) = rule.fault.status {
        if !(100..=599).contains(&s) {
            return err(
                StatusCode::BAD_REQUEST,
                format!("status {s} is not an HTTP status"),
            );
        }
    }
    let mut inner = st.lock();
    if rule.times > 0 {
        inner.faults.push(rule);
    }
    to_json(&json!({ "faults": inner.faults }))
}

async fn clear_faults(State(st): State<Arc<AppState>>) -> Response {
    st.lock().faults.clear();
    to_json(&json!({ "faults": [] }))
}

async fn tokens(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let t: TokenSettings = match parse(&body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut inner = st.lock();
    if let Some(ttl) = t.ttl_s {
        inner.lp.token_ttl_s = ttl;
    }
    let mut expired = 0;
    if t.expire_now {
        let now = now_s();
        for tok in inner.lp.tokens.values_mut() {
            if tok.exp > now {
                tok.exp = 0;
                expired += 1;
            }
        }
    }
    to_json(&json!({ "ttl_s": inner.lp.token_ttl_s, "expired": expired }))
}

/// `{"behaviour": "grant" | "refuse_unnamed" | "refuse_named"}`.
#[derive(serde::Deserialize)]
struct SecondSetting {
    behaviour: super::model::SecondConversation,
}

async fn get_second(State(st): State<Arc<AppState>>) -> Response {
    to_json(&json!({ "behaviour": st.lock().lp.second_conversation }))
}

async fn set_second(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let s: SecondSetting = match parse(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    st.lock().lp.second_conversation = s.behaviour;
    to_json(&json!({ "behaviour": s.behaviour }))
}

/// `{"lag_ms": n}`: the Messaging Interactions search leaves out conversations younger
/// than `n` ms.
#[derive(serde::Deserialize)]
struct SearchLag {
    lag_ms: u64,
}

async fn get_search_lag(State(st): State<Arc<AppState>>) -> Response {
    to_json(&json!({ "lag_ms": st.lock().lp.search_lag_ms }))
}

async fn set_search_lag(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let s: SearchLag = match parse(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    st.lock().lp.search_lag_ms = s.lag_ms;
    to_json(&json!({ "lag_ms": s.lag_ms }))
}
