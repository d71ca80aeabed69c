//! HTTP routes: the builder-facing API (`/v1/…`), provider webhooks (`/webhooks/…`)
//! and `/healthz`. Every error is `{"error":{"code","message"}}` with a 4xx/5xx status.

// Handlers return ready `Response`s as their error branch; boxing them buys nothing.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth;
use super::lifecycle::{now_ms, EventOutcome, LifecycleError, ServiceState};
use super::secrets;
use super::store::{record_json, LiveChatRecord};
use super::webhooks::{self, ProviderEvent};
use crate::interp::{RunOptions, Store};
use crate::providers::{Integration, IntegrationId, ProviderKind};

/// The router over a state (see [`super::app`]).
pub(crate) fn router(state: ServiceState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/conversations/{id}/run", post(run))
        .route("/v1/conversations/{id}/messages", post(message))
        .route("/v1/conversations/{id}/close", post(close))
        .route("/v1/conversations/{id}/live_chat", get(live_chat))
        .route(
            "/webhooks/liveperson/{integration_id}",
            post(webhook_liveperson),
        )
        .route("/webhooks/zendesk/{integration_id}", post(webhook_zendesk))
        .route("/webhooks/altu/{integration_id}", post(webhook_altu))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    eprintln!("transbordo serve: internal error: {e}");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

fn json_object(body: &Bytes) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body must be a JSON object",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON: {e}"),
        )),
    }
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn chat_view(state: &ServiceState, chat: &LiveChatRecord) -> Value {
    let deadlines = state.store().deadlines(&chat.id).await.unwrap_or_default();
    record_json(chat, &deadlines)
}

fn lifecycle_error(e: LifecycleError) -> Response {
    match e {
        LifecycleError::NoLiveChat => error(
            StatusCode::CONFLICT,
            "no_live_chat",
            "the conversation has no open live chat",
        ),
        LifecycleError::AlreadyOpen => error(
            StatusCode::CONFLICT,
            "live_chat_open",
            "the conversation already has an open live chat",
        ),
        LifecycleError::Provider(e) => error(
            StatusCode::BAD_GATEWAY,
            "provider_error",
            format!("{e}; the live chat ended with status `error`"),
        ),
        e @ LifecycleError::UnknownIntegration(_) => internal(e),
        LifecycleError::Store(e) => internal(e),
    }
}

/// Flow file names: relative, no `..`, only `[A-Za-z0-9._/-]`.
fn safe_flow_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

async fn run(State(state): State<ServiceState>, Path(id): Path<String>, body: Bytes) -> Response {
    let req = match json_object(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (src, file) = match (req.get("flow"), req.get("flow_file")) {
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give `flow` or `flow_file`, not both",
            )
        }
        (Some(flow), None) => (flow.to_string(), "request.flow".to_string()),
        (None, Some(Value::String(name))) => {
            let Some(dir) = &state.config().flows_dir else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "flows_dir_not_configured",
                    "`flow_file` needs `flows_dir` in the service config",
                );
            };
            if !safe_flow_name(name) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_flow_file",
                    "invalid `flow_file` name",
                );
            }
            let path = dir.join(name);
            match tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await {
                Ok(Ok(s)) => (s, name.clone()),
                _ => {
                    return error(
                        StatusCode::NOT_FOUND,
                        "flow_not_found",
                        format!("no flow file `{name}` in flows_dir"),
                    )
                }
            }
        }
        (None, Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`flow_file` must be a string",
            )
        }
        (None, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "missing `flow` or `flow_file`",
            )
        }
    };
    let context = req.get("context").cloned().unwrap_or_else(|| json!({}));
    let strict = match req.get("strict") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`strict` must be a boolean",
            )
        }
    };
    let Some(_guard) = state.begin_run(&id) else {
        return error(
            StatusCode::CONFLICT,
            "run_in_progress",
            "another run of this conversation is in progress",
        );
    };
    match state.open_chat(&id).await {
        Ok(Some(_)) => {
            return error(
                StatusCode::CONFLICT,
                "live_chat_open",
                "the conversation is with a human agent; send messages to /messages",
            )
        }
        Ok(None) => {}
        Err(e) => return internal(e),
    }
    let flow = match state.engine().load(&src, &file) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": {
                    "code": "flow_invalid",
                    "message": format!("the flow cannot be loaded ({} problem(s))", e.diagnostics.len()),
                    "diagnostics": e.diagnostics,
                }})),
            )
                .into_response()
        }
    };
    let mut store = match Store::from_json(&context) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_context", e.to_string()),
    };
    store.set_conversation_id(id.clone());
    let outcome = state
        .engine()
        .run(
            &flow,
            store,
            &RunOptions {
                strict,
                ..RunOptions::default()
            },
        )
        .await;
    let mut doc = outcome.run_json();
    let live = match &outcome.handoff {
        Some(h) => match state.start_live_chat(&id, h).await {
            Ok(rec) => chat_view(&state, &rec).await,
            Err(e) => return lifecycle_error(e),
        },
        None => Value::Null,
    };
    doc["live_chat"] = live;
    Json(doc).into_response()
}

async fn message(
    State(state): State<ServiceState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let req = match json_object(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let Some(text) = req
        .get("text")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "`text` must be a non-empty string",
        );
    };
    match state.user_message(&id, text).await {
        Ok(chat) => Json(json!({"status": "sent", "live_chat": chat_view(&state, &chat).await}))
            .into_response(),
        Err(e) => lifecycle_error(e),
    }
}

async fn close(State(state): State<ServiceState>, Path(id): Path<String>) -> Response {
    match state.user_close(&id).await {
        Ok(chat) => Json(json!({"live_chat": chat_view(&state, &chat).await})).into_response(),
        Err(e) => lifecycle_error(e),
    }
}

async fn live_chat(State(state): State<ServiceState>, Path(id): Path<String>) -> Response {
    match state.store().latest_for_conversation(&id).await {
        Ok(Some(chat)) => {
            Json(json!({"live_chat": chat_view(&state, &chat).await})).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no_live_chat",
            "the conversation never had a live chat",
        ),
        Err(e) => internal(e),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn integration(
    state: &ServiceState,
    id: &str,
    kind: ProviderKind,
) -> Result<Integration, Response> {
    let iid = IntegrationId::from_json(&Value::String(id.to_string()));
    match iid.and_then(|i| state.config().integrations.get(&i).cloned()) {
        Some(i) if i.provider == kind => Ok(i),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "unknown_integration",
            format!("no {} integration `{id}`", kind.as_str()),
        )),
    }
}

fn unauthorized(e: auth::AuthError) -> Response {
    error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
}

async fn apply_events(
    state: &ServiceState,
    integration_id: &str,
    source: &str,
    parsed: Result<Vec<ProviderEvent>, webhooks::ParseError>,
) -> Response {
    let events = match parsed {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_event", e.to_string()),
    };
    let mut outcomes = Vec::new();
    for ev in events {
        match state.provider_event(integration_id, source, ev).await {
            Ok(o) => outcomes.push(match o {
                EventOutcome::Applied => "applied",
                EventOutcome::Duplicate => "duplicate",
                EventOutcome::Stale => "stale",
                EventOutcome::Ignored => "ignored",
                EventOutcome::Unknown => "unknown_conversation",
            }),
            Err(e) => return internal(e),
        }
    }
    Json(json!({"status": "ok", "events": outcomes})).into_response()
}

async fn webhook_liveperson(
    State(state): State<ServiceState>,
    Path(iid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let i = match integration(&state, &iid, ProviderKind::LivePerson) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Some(secret) = secrets::liveperson_webhook_secret(&i) else {
        return unauthorized(auth::AuthError::NoSecret);
    };
    if let Err(e) =
        auth::verify_liveperson(secret, header(&headers, "x-liveperson-signature"), &body)
    {
        return unauthorized(e);
    }
    let source = format!("liveperson:{}", i.id);
    apply_events(
        &state,
        &i.id.to_string(),
        &source,
        webhooks::parse_liveperson(&body),
    )
    .await
}

async fn webhook_zendesk(
    State(state): State<ServiceState>,
    Path(iid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let i = match integration(&state, &iid, ProviderKind::Zendesk) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Some(secret) = secrets::zendesk_webhook_secret(&i) else {
        return unauthorized(auth::AuthError::NoSecret);
    };
    if let Err(e) = auth::verify_zendesk(
        secret,
        header(&headers, "x-zendesk-webhook-signature"),
        header(&headers, "x-zendesk-webhook-signature-timestamp"),
        &body,
        now_ms(),
        state.config().webhooks.zendesk_replay_window_s,
    ) {
        return unauthorized(e);
    }
    let source = format!("zendesk:{}", i.id);
    apply_events(
        &state,
        &i.id.to_string(),
        &source,
        webhooks::parse_zendesk(&body),
    )
    .await
}

/// ALTU connector events (`docs/connector-protocol.md` §3, §5): `401` unless the token
/// passes every check (signature, times, `sub`, `iss`, `aud`, `conversation_id`, single-use
/// `jti`), `400` for a malformed body, `404` when no live chat has that
/// `platform_conversation_id` and `conversation_id`, else `200 {"ok":true,"events":[…]}`
/// (`applied`, `duplicate`, `stale` or `ignored` after the end).
async fn webhook_altu(
    State(state): State<ServiceState>,
    Path(iid): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let i = match integration(&state, &iid, ProviderKind::AltuSdk) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let (Some(key), Some(access_token)) =
        (secrets::altu_access_key(&i), secrets::altu_access_token(&i))
    else {
        return unauthorized(auth::AuthError::NoSecret);
    };
    let skew = state.config().webhooks.jwt_clock_skew_s as i64;
    let claims = match auth::verify_jwt(
        key,
        header(&headers, "authorization"),
        now_ms() / 1000,
        skew,
    ) {
        Ok(c) => c,
        Err(e) => return unauthorized(e),
    };
    let ev = match webhooks::parse_altu(&body) {
        Ok(ev) => ev,
        Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_event", e.to_string()),
    };
    if let Err(e) =
        auth::check_connector_claims(&claims, access_token, uri.path(), &ev.conversation_id)
    {
        return unauthorized(e);
    }
    // Burn the token id only once everything else checked out, so a malformed body can be
    // fixed and resent.
    match state
        .store()
        .mark_seen(&format!("altu-jti:{}", i.id), &claims.jti, now_ms())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "token already used (jti replay)",
            )
        }
        Err(e) => return internal(e),
    }
    let integration_id = i.id.to_string();
    let unknown = || {
        error(
            StatusCode::NOT_FOUND,
            "unknown_conversation",
            "no live chat for that platform_conversation_id and conversation_id",
        )
    };
    match state
        .store()
        .find_by_provider(&integration_id, &ev.event.provider_conversation_id)
        .await
    {
        Ok(Some(chat)) if chat.id == ev.conversation_id => {}
        Ok(_) => return unknown(),
        Err(e) => return internal(e),
    }
    let source = format!("altu:{}", i.id);
    let outcome = match state
        .provider_event(&integration_id, &source, ev.event)
        .await
    {
        Ok(o) => o,
        Err(e) => return internal(e),
    };
    let name = match outcome {
        EventOutcome::Applied => "applied",
        EventOutcome::Duplicate => "duplicate",
        EventOutcome::Stale => "stale",
        EventOutcome::Ignored => "ignored",
        EventOutcome::Unknown => return unknown(),
    };
    Json(json!({"ok": true, "events": [name]})).into_response()
}
