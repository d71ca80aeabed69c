//! The agent platform behind the ALTU SDK connector, following `docs/connector-protocol.md`
//! (v1) in both directions. Kept in one file so it is easy to adjust with the protocol.
//!
//! Inbound (`POST /altu/events`, protocol §2–§4): `Authorization: Bearer <JWT>`, HS256 with
//! `access_key`; claims `iss` = `"transbordo"`, `aud` = the URL the request was sent to
//! (only its path, `/altu/events`, is compared, so proxies and published ports do not
//! matter), `sub` = `access_token`, `iat`, `exp` (≤ `iat` + 60 s, 30 s clock skew), `jti`
//! (single use) and `conversation_id` (= the envelope's). Any failed check → `401
//! {"error":"invalid_token"}`, changing nothing. Body: the envelope
//! `{"event","event_id","conversation_id","platform_conversation_id"?,"integration_id"?,"data"}`:
//! - `OPEN_CONVERSATION`, `data` `{skill_id?, start_message?, extra_info?, contact_info?
//!   (compact JSON text), user?: {name,email,phone}, bot_conversation_id?}` → `201
//!   {"conversation_id": "altu-<uuid>"}`; the conversation's `details` show what arrived
//!   (`data` as sent, plus `extra_info` / `contact_info` parsed back from their JSON text).
//!   A second OPEN for the same `conversation_id` with a new `event_id` → `409`.
//! - `USER_MESSAGE` `data.text` → `200`; `409` once the conversation is closed.
//! - `CLOSE_CONVERSATION` `data.reason?` → `200`, also when it was already closed.
//!
//! Both later events need `platform_conversation_id`, which must name a conversation opened
//! with that `conversation_id` (else `404`). A replayed `event_id` gets the first answer
//! again and changes nothing. Malformed bodies → `400 {"error":"invalid_request"}`.
//!
//! Outbound (to the ALTU webhook target, protocol §5): the same envelope and JWT rules with
//! `iss` = `"altu"`, `aud` = the target URL: `AGENT_JOINED` `data {"agent":{id,name}}`,
//! `AGENT_MESSAGE` `data {"text","agent":{id,name}}`, `AGENT_CLOSED` `data {"reason":
//! "agent"|"system"}` (closed by the agent or the platform) and `USER_CLOSED` `data {}`
//! (closed through the control API with `by: user`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};

use super::control::AgentAction;
use super::model::{AgentView, CloseReason, ConversationStatus, JoinRequest, Provider};
use super::signing::{url_path, verify_connector, JwtError, CONNECTOR_SKEW_S};
use super::state::{AppState, Conv, Inner};
use super::util::{header_str, json, now_ms, now_s};

/// `iss` of the tokens transbordo sends us.
pub(crate) const CLIENT_ISSUER: &str = "transbordo";

/// `iss` of the tokens we send.
pub(crate) const PLATFORM_ISSUER: &str = "altu";

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

fn unknown_conversation() -> Response {
    json(
        StatusCode::NOT_FOUND,
        json!({"error": "unknown_conversation"}),
    )
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Protocol §3 checks that do not need the body: signature, times, `iss`, `aud`, `sub`.
fn check_token(
    key: &[u8],
    access_token: &str,
    request_path: &str,
    token: &str,
    now: u64,
) -> Result<Map<String, Value>, JwtError> {
    let claims = verify_connector(key, token, now)?;
    let claim = |k: &str| claims.get(k).and_then(Value::as_str);
    if claim("iss") != Some(CLIENT_ISSUER) {
        return Err(JwtError::Mismatch("iss"));
    }
    if claim("aud").map(url_path) != Some(url_path(request_path)) {
        return Err(JwtError::Mismatch("aud"));
    }
    if claim("sub") != Some(access_token) {
        return Err(JwtError::Mismatch("sub"));
    }
    Ok(claims)
}

async fn events(
    State(st): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cfg = &st.cfg.altu;
    let Some(jwt) = header_str(&headers, "authorization").and_then(|h| h.strip_prefix("Bearer "))
    else {
        return invalid_token();
    };
    let now = now_s();
    let Ok(claims) = check_token(
        cfg.access_key.as_bytes(),
        &cfg.access_token,
        uri.path(),
        jwt.trim(),
        now,
    ) else {
        return invalid_token();
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return invalid_request("the body must be a JSON object"),
        Err(e) => return invalid_request(&format!("malformed JSON: {e}")),
    };
    let (Some(event), Some(event_id), Some(ours)) = (
        str_field(&v, "event"),
        str_field(&v, "event_id"),
        str_field(&v, "conversation_id"),
    ) else {
        return invalid_request("event, event_id and conversation_id are required");
    };
    // The token is bound to one conversation.
    if claims.get("conversation_id").and_then(Value::as_str) != Some(ours) {
        return invalid_token();
    }
    let (Some(jti), Some(exp)) = (
        claims.get("jti").and_then(Value::as_str),
        claims.get("exp").and_then(Value::as_u64),
    ) else {
        return invalid_token();
    };
    let mut inner = st.lock();
    inner.altu.jtis.retain(|_, until| *until >= now);
    if inner.altu.jtis.contains_key(jti) {
        return invalid_token();
    }
    inner
        .altu
        .jtis
        .insert(jti.to_string(), exp + CONNECTOR_SKEW_S);
    if let Some((status, answer)) = inner.altu.events.get(event_id) {
        return json(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
            answer.clone(),
        );
    }
    let empty = Value::Object(Map::new());
    let data = match v.get("data") {
        Some(d @ Value::Object(_)) => d,
        None | Some(Value::Null) => &empty,
        Some(_) => return invalid_request("`data` must be an object"),
    };
    let (status, answer) = match event {
        "OPEN_CONVERSATION" => match open(&mut inner, &v, data, ours) {
            Ok(r) => r,
            Err(r) => return r,
        },
        "USER_MESSAGE" | "CLOSE_CONVERSATION" | "USER_TYPING" => {
            let Some(pid) = str_field(&v, "platform_conversation_id") else {
                return invalid_request("platform_conversation_id is required");
            };
            let Some(conv) = inner.convs.get_mut(pid) else {
                return unknown_conversation();
            };
            if conv.view.provider != Provider::Altu
                || conv.view.external_id.as_deref() != Some(ours)
            {
                return unknown_conversation();
            }
            if event == "USER_TYPING" {
                let Some(typing) = data.get("typing").and_then(Value::as_bool) else {
                    return invalid_request("USER_TYPING needs `data.typing` (a boolean)");
                };
                if conv.is_closed() {
                    return json(
                        StatusCode::CONFLICT,
                        json!({"error": "conversation_closed"}),
                    );
                }
                conv.set_typing("consumer", typing);
            } else if event == "USER_MESSAGE" {
                let files = match user_files(data) {
                    Ok(f) => f,
                    Err(r) => return r,
                };
                let text = data.get("text").and_then(Value::as_str);
                if text.is_none() && files.is_empty() {
                    return invalid_request(
                        "USER_MESSAGE needs `data.text` (a string) or `data.attachments`",
                    );
                }
                if conv.is_closed() {
                    return json(
                        StatusCode::CONFLICT,
                        json!({"error": "conversation_closed"}),
                    );
                }
                for f in &files {
                    conv.add_file("consumer", f, "inline");
                }
                if let Some(text) = text {
                    conv.say("consumer", text);
                }
            } else {
                let reason = match data.get("reason") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(r)) => Some(r.clone()),
                    Some(_) => return invalid_request("`data.reason` must be a string"),
                };
                // Closing an already-closed conversation is not an error (§4).
                if !conv.is_closed() {
                    conv.view.status = ConversationStatus::Closed;
                    conv.view.close_reason = Some(match reason.as_deref() {
                        None | Some("user_closed") => CloseReason::User,
                        Some(_) => CloseReason::System,
                    });
                    conv.view.updated_at_ms = now_ms();
                    if let Some(d) = conv.view.details.as_object_mut() {
                        d.insert("close_reason".into(), json!(reason));
                    }
                }
            }
            let pid = conv.view.id.clone();
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

/// v1.2 `USER_MESSAGE.data.attachments`: `[{name, content_type, size, data_base64}]`,
/// each at most 10 MiB, `size` matching the decoded bytes.
fn user_files(data: &Value) -> Result<Vec<super::state::StoredFile>, Response> {
    use base64::Engine as _;
    let items = match data.get("attachments") {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid_request("`data.attachments` must be an array")),
    };
    let mut out = Vec::new();
    for (i, a) in items.iter().enumerate() {
        let s = |k: &str| a.get(k).and_then(Value::as_str);
        let (Some(name), Some(ct), Some(b64)) = (s("name"), s("content_type"), s("data_base64"))
        else {
            return Err(invalid_request(&format!(
                "`data.attachments[{i}]` needs name, content_type and data_base64"
            )));
        };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return Err(invalid_request(&format!(
                "`data.attachments[{i}].data_base64` is not base64"
            )));
        };
        if bytes.len() > 10 << 20 {
            return Err(invalid_request(&format!(
                "`data.attachments[{i}]` is over 10 MiB"
            )));
        }
        if a.get("size").and_then(Value::as_u64) != Some(bytes.len() as u64) {
            return Err(invalid_request(&format!(
                "`data.attachments[{i}].size` is not the decoded size"
            )));
        }
        out.push(super::state::StoredFile {
            name: name.to_string(),
            content_type: ct.to_string(),
            bytes,
            declared: None,
            at_s: now_s(),
        });
    }
    Ok(out)
}

/// A JSON-text field (`extra_info`, `contact_info`) parsed back for `details`; text that is
/// not JSON (e.g. `""`, sent when over the size limit) is kept as it arrived.
fn json_text(data: &Value, k: &str) -> Result<Value, Response> {
    match data.get(k) {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::String(s)) => Ok(serde_json::from_str(s).unwrap_or_else(|_| json!(s))),
        Some(_) => Err(invalid_request(&format!(
            "`data.{k}` must be a string of compact JSON text"
        ))),
    }
}

/// `data.transcript` as the agent reads it: one line per message, with the `continued`
/// pieces of a long message joined back (protocol §4); 400 when malformed.
fn transcript_lines(data: &Value) -> Result<Vec<String>, Response> {
    let items = match data.get("transcript") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid_request("`data.transcript` must be an array")),
    };
    let mut lines: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let from = match str_field(item, "from") {
            Some("user") => "Cliente",
            Some("bot") => "Bot",
            _ => {
                return Err(invalid_request(&format!(
                    "`data.transcript[{i}].from` must be \"user\" or \"bot\""
                )))
            }
        };
        let Some(text) = str_field(item, "text") else {
            return Err(invalid_request(&format!(
                "`data.transcript[{i}].text` must be a string"
            )));
        };
        let continued = item.get("continued").and_then(Value::as_bool) == Some(true);
        match lines.last_mut() {
            Some(last) if continued => last.push_str(text),
            _ => {
                let at = str_field(item, "at")
                    .map(|a| format!("[{a}] "))
                    .unwrap_or_default();
                lines.push(format!("{at}{from}: {text}"));
            }
        }
    }
    Ok(lines)
}

fn open(
    inner: &mut Inner,
    v: &Value,
    data: &Value,
    ours: &str,
) -> Result<(StatusCode, Value), Response> {
    if let Some(pid) = inner.altu.by_ext.get(ours) {
        return Ok((
            StatusCode::CONFLICT,
            json!({"error": "conversation_exists", "conversation_id": pid}),
        ));
    }
    let extra_info = json_text(data, "extra_info")?;
    let contact_info = json_text(data, "contact_info")?;
    let skill_id = match data.get("skill_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(invalid_request(
                "`data.skill_id` must be a string or number",
            ))
        }
    };
    let user = match data.get("user") {
        None | Some(Value::Null) => Value::Null,
        Some(u @ Value::Object(_)) => u.clone(),
        Some(_) => return Err(invalid_request("`data.user` must be an object")),
    };
    let start_message = match data.get("start_message") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid_request("`data.start_message` must be a string")),
    };
    let transcript = transcript_lines(data)?;
    let pid = format!("altu-{}", uuid::Uuid::new_v4());
    let details = json!({
        "integration_id": v.get("integration_id").cloned().unwrap_or(Value::Null),
        "data": data,
        "skill_id": data.get("skill_id").cloned().unwrap_or(Value::Null),
        "start_message": start_message,
        "extra_info": extra_info,
        "contact_info": contact_info,
        "user": user,
        "bot_conversation_id": data.get("bot_conversation_id").cloned().unwrap_or(Value::Null),
    });
    let mut conv = Conv::new(Provider::Altu, pid.clone(), details);
    conv.view.external_id = Some(ours.to_string());
    conv.view.skill_id = skill_id;
    conv.view.consumer_id = ["email", "phone", "name"]
        .iter()
        .find_map(|k| str_field(&user, k))
        .map(str::to_string);
    if let Some(m) = start_message.as_deref().filter(|m| !m.is_empty()) {
        conv.say("bot", m);
    }
    for line in transcript {
        conv.say("transcript", &line);
    }
    inner.altu.by_ext.insert(ours.to_string(), pid.clone());
    inner.convs.insert(pid.clone(), conv);
    Ok((StatusCode::CREATED, json!({ "conversation_id": pid })))
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

/// Outbound event of an agent action (protocol §5 envelope; the JWT is made per delivery
/// attempt, see `webhooks`).
pub(crate) fn notify(st: &AppState, inner: &mut Inner, id: &str, action: &AgentAction) -> Vec<u64> {
    // An agent file is served by the sandbox; the event carries its URL (protocol v1.2).
    let file_url = match action {
        AgentAction::File { file, .. } => {
            let path = super::files::store_plain(inner, file.clone());
            if let Some(c) = inner.convs.get_mut(id) {
                c.add_file("agent", file, &path);
            }
            Some(path)
        }
        _ => None,
    };
    let Some(conv) = inner.convs.get(id) else {
        return Vec::new();
    };
    let v = &conv.view;
    let agent = v
        .agent
        .as_ref()
        .map(|a| json!({"id": a.id, "name": a.name}));
    let (event, kind, data) = match action {
        AgentAction::Join(_) => (
            "AGENT_JOINED",
            "altu.agent_joined",
            json!({ "agent": agent }),
        ),
        AgentAction::Say(text) => (
            "AGENT_MESSAGE",
            "altu.agent_message",
            json!({"text": text, "agent": agent}),
        ),
        AgentAction::File { text, file } => (
            "AGENT_MESSAGE",
            "altu.agent_message",
            json!({"text": text, "agent": agent, "attachments": [{
                "name": file.name, "content_type": file.content_type, "size": file.bytes.len(),
                "url": format!("{}{}", st.base_url, file_url.clone().unwrap_or_default())}]}),
        ),
        AgentAction::Typing(t) => (
            "AGENT_TYPING",
            "altu.agent_typing",
            json!({"typing": t, "agent": agent}),
        ),
        AgentAction::Close(CloseReason::User) => ("USER_CLOSED", "altu.user_closed", json!({})),
        AgentAction::Close(by) => ("AGENT_CLOSED", "altu.agent_closed", json!({ "reason": by })),
    };
    let body = json!({
        "event": event,
        "event_id": uuid::Uuid::new_v4().to_string(),
        "conversation_id": v.external_id,
        "platform_conversation_id": v.id,
        "data": data,
    });
    vec![inner.push_note(Provider::Altu, id, kind, body, None)]
}
