//! HTTP routes: the builder-facing API (`/v1/…`), provider webhooks (`/webhooks/…`),
//! `/healthz` and `/readyz`. Every error is `{"error":{"code","message"}}` with a 4xx/5xx
//! status.
//!
//! - `/v1/…` needs `Authorization: Bearer <token>` with one of `[api] tokens` (compared
//!   in constant time); otherwise `401 unauthorized` and nothing happens. Without tokens
//!   (loopback only) the API is open.
//! - Webhooks (one route, `/webhooks/{segment}/{integration_id}`) are authenticated by
//!   their provider's receiver ([`webhooks::WebhookReceiver`]).
//! - Bodies are limited: `run` to `[api] max_run_body_bytes` (1 MiB), the other `/v1/…`
//!   routes to `[api] max_body_bytes` (64 KiB), webhooks to `[webhooks] max_body_bytes`
//!   (256 KiB); larger ones get `413 payload_too_large`.
//! - `/messages` is rate limited per conversation (`429 rate_limited` with `Retry-After`).
//! - Web pages are kept out, tokens or not: a `/v1/…` `POST` takes only
//!   `Content-Type: application/json` (optionally `; charset=utf-8`), else `415
//!   unsupported_media_type` (a page on another site can post `text/plain` or a form
//!   without asking, but not JSON); and on a loopback `listen` every route but the
//!   webhooks answers only to a loopback `Host` (`localhost`, `127.0.0.1`, `[::1]`), else
//!   `403 forbidden_host` (DNS rebinding). Webhooks keep any `Host` and content type:
//!   providers reach them through a proxy or tunnel under its public name, some send
//!   forms, and their signatures are what protects them.

// Handlers return ready `Response`s as their error branch; boxing them buys nothing.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, OriginalUri, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

use super::auth;
use super::lifecycle::{now_ms, EventOutcome, LifecycleError, ServiceState};
use super::metrics::{self, WebhookResult};
use super::openapi::*;
use super::store::{record_json, LiveChatRecord, RunKey, StoreError, TimelineEntry};
use super::timeline;
use super::webhooks;
use crate::interp::{RunOptions, Store};
use crate::providers::observe;
use crate::providers::{Integration, IntegrationId, ProviderKind};

/// The router over a state (see [`super::app`]).
pub(crate) fn router(state: ServiceState) -> Router {
    let cfg = state.config();
    let v1 = Router::new()
        .route(
            "/v1/conversations/{id}/run",
            post(run).layer(DefaultBodyLimit::max(cfg.api.max_run_body_bytes)),
        )
        .route(
            "/v1/conversations/{id}/messages",
            post(message).layer(DefaultBodyLimit::max(cfg.api.max_message_body_bytes)),
        )
        .route("/v1/conversations/{id}/typing", post(typing))
        .route("/v1/conversations/{id}/close", post(close))
        .route("/v1/conversations/{id}/live_chat", get(live_chat))
        .route("/v1/conversations/{id}/timeline", get(timeline_route))
        .layer(DefaultBodyLimit::max(cfg.api.max_body_bytes))
        // Innermost: a request that passed the checks below takes a slot before its body
        // is read.
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Slots::new("api", cfg.api.max_in_flight)),
            in_flight,
        ))
        // The token is checked first: without it, nothing about the request is told.
        .route_layer(middleware::from_fn(require_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let webhooks = Router::new()
        .route("/webhooks/{segment}/{integration_id}", post(webhook))
        .layer(DefaultBodyLimit::max(cfg.webhooks.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(
            (
                state.clone(),
                Slots::new("webhooks", cfg.webhooks.max_in_flight),
            ),
            in_flight,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), log_webhook));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/files/{token}", get(file))
        .merge(v1)
        .merge(webhooks)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            loopback_host_only,
        ))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// How long a request waits for a slot of its part before it is answered `503 busy`:
/// well under LivePerson's 10 s webhook timeout, so a provider gets an answer it retries
/// on, not a timeout.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a request that holds a slot may take to send its body: a sender trickling
/// its body cannot keep a slot for longer.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The requests of one part (`api`, `webhooks`) served at once.
#[derive(Clone)]
struct Slots {
    part: &'static str,
    max: usize,
    free: Arc<tokio::sync::Semaphore>,
}

impl Slots {
    fn new(part: &'static str, max: usize) -> Slots {
        Slots {
            part,
            max,
            free: Arc::new(tokio::sync::Semaphore::new(max)),
        }
    }
}

/// At most `max_in_flight` requests of a part are served at once, so what they hold
/// (bodies up to their limits, runs within their budgets) is bounded; one more waits
/// up to [`SLOT_WAIT`] for a slot, then gets `503 busy` with `Retry-After: 1` (providers
/// retry it; nothing of the request was read). A request's body must arrive within
/// [`BODY_DEADLINE`] of its slot.
async fn in_flight(
    State((state, slots)): State<(ServiceState, Slots)>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(Ok(slot)) = tokio::time::timeout(SLOT_WAIT, slots.free.clone().acquire_owned()).await
    else {
        state.metrics().shed(slots.part);
        tracing::warn!(
            part = slots.part,
            max_in_flight = slots.max,
            "busy: a request waited 5 s for a slot and was answered 503"
        );
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "the service is serving its limit of {} {} at once (`[{}] max_in_flight`); \
                 retry later",
                slots.max,
                if slots.part == "api" {
                    "API requests"
                } else {
                    "webhooks"
                },
                slots.part
            ),
        );
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return r;
    };
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(Deadlined {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(BODY_DEADLINE)),
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    drop(slot);
    resp
}

/// A request body that fails once [`BODY_DEADLINE`] has passed before its end.
struct Deadlined {
    inner: axum::body::Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl axum::body::HttpBody for Deadlined {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(format!(
                "the request body did not arrive within {} s",
                BODY_DEADLINE.as_secs()
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// One log line per request: method, route, status, duration, conversation id.
async fn log_request(req: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let conversation_id = req
        .uri()
        .path()
        .strip_prefix("/v1/conversations/")
        .and_then(|r| r.split('/').next())
        .map(str::to_string);
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::error!(%method, route, status, duration_ms, conversation_id, "request");
    } else {
        tracing::info!(%method, route, status, duration_ms, conversation_id, "request");
    }
    resp
}

/// `Authorization: Bearer <token>` on `/v1/…` (see the module docs).
async fn require_token(State(state): State<ServiceState>, req: Request, next: Next) -> Response {
    let tokens = &state.config().api.tokens;
    if tokens.is_empty() {
        return next.run(req).await;
    }
    let given = header(req.headers(), "authorization").map(|v| {
        let (scheme, token) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
        (scheme.eq_ignore_ascii_case("bearer"), token.trim())
    });
    let why = match given {
        Some((true, t)) if !t.is_empty() && token_matches(tokens, t) => return next.run(req).await,
        Some((true, t)) if !t.is_empty() => "invalid API token",
        Some(_) => "`Authorization` must be `Bearer <token>`",
        None => "missing `Authorization: Bearer <token>`",
    };
    let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized", why);
    resp.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// `415 unsupported_media_type` for a `/v1/…` body that is not declared JSON (see the
/// module docs): checked on the header alone, before the body is read.
async fn require_json(req: Request, next: Next) -> Response {
    use axum::http::Method;
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return next.run(req).await;
    }
    let sent = match req.headers().get(axum::http::header::CONTENT_TYPE) {
        None => "no `Content-Type`".to_string(),
        Some(v) => match v.to_str() {
            Ok(ct) if auth::json_content_type(ct) => return next.run(req).await,
            Ok(ct) => format!("`Content-Type: {}`", shorten(ct)),
            Err(_) => "a `Content-Type` that is not ASCII".to_string(),
        },
    };
    error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "the body must be JSON sent with `Content-Type: application/json` (optionally \
             `; charset=utf-8`); this request has {sent}"
        ),
    )
}

/// `403 forbidden_host` on a loopback `listen` when `Host` is not a loopback name (see
/// the module docs). HTTP/2 requests carry the name in the URI instead of `Host`.
async fn loopback_host_only(
    State(state): State<ServiceState>,
    req: Request,
    next: Next,
) -> Response {
    if !state.config().listen.ip().is_loopback() || req.uri().path().starts_with("/webhooks/") {
        return next.run(req).await;
    }
    let host = match req.headers().get(axum::http::header::HOST) {
        Some(h) => h.to_str().unwrap_or("").to_string(),
        None => req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default(),
    };
    if auth::loopback_host(&host) || public_host(&state, &host) {
        return next.run(req).await;
    }
    error(
        StatusCode::FORBIDDEN,
        "forbidden_host",
        format!(
            "this service listens on a loopback address and answers only to `localhost`, \
             `127.0.0.1` or `[::1]` as `Host`, not `{}` (a web page re-pointing its own \
             name at this machine must not reach it); set `public_url` to the name a proxy \
             forwards, or listen on another address, with `[api] tokens`, to serve other names",
            shorten(&host)
        ),
    )
}

/// Whether `host` is the authority of the configured `public_url`: the name a reverse
/// proxy in front of a loopback `listen` forwards. The operator chose that name, so it
/// is not a rebinding page's.
fn public_host(state: &ServiceState, host: &str) -> bool {
    let Some(url) = &state.config().webhooks.public_url else {
        return false;
    };
    let Some(name) = url.host_str() else {
        return false;
    };
    let (h, port) = auth::split_host_port(host);
    // No port (or an empty one) is the scheme's default; a port that is not a u16
    // (`:99999`) matches nothing.
    let port = match port.filter(|p| !p.is_empty()) {
        None => url.port_or_known_default(),
        Some(p) => p.parse::<u16>().ok(),
    };
    h.eq_ignore_ascii_case(name) && port.is_some() && port == url.port_or_known_default()
}

/// A header value as an error message quotes it: at most 100 characters.
fn shorten(v: &str) -> String {
    match v.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &v[..i]),
        None => v.to_string(),
    }
}

/// Constant time in the token's content: both sides are hashed first (so lengths do not
/// leak either) and every configured token is compared.
fn token_matches(tokens: &[String], given: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let g = Sha256::digest(given.as_bytes());
    let mut ok = subtle::Choice::from(0);
    for t in tokens {
        ok |= Sha256::digest(t.as_bytes()).ct_eq(&g);
    }
    ok.into()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The body, or a JSON error: `413 payload_too_large` over the route's limit.
fn body(b: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Response> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
            )
        } else {
            error(r.status(), "bad_request", r.body_text())
        }
    })
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "internal error");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// A store failure: 503 `database_unavailable` when the database cannot be reached
/// (the caller may retry; nothing was acknowledged), 500 otherwise.
fn store_failed(e: StoreError) -> Response {
    match e {
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %e, "database unavailable");
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database cannot be reached right now; retry later",
            );
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            r
        }
        e => internal(e),
    }
}

/// The body as a JSON object with only the `known` keys (a typo is an error, not ignored).
fn json_object(body: &Bytes, known: &[&str]) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => match m.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown field `{k}`; expected one of: {}", known.join(", ")),
            )),
            None => Ok(m),
        },
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

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", body = Object),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
    )
)]
async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The process answers", body = Health),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
    )
)]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Prometheus / OpenMetrics text; `503` when the store does not answer (the gauges
/// come from it).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus / OpenMetrics text", body = String, content_type = "application/openmetrics-text"),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
        (status = 503, description = "`not_ready`: the store does not answer", body = ErrorBody),
    )
)]
async fn metrics(State(state): State<ServiceState>) -> Response {
    match state
        .metrics()
        .render(state.store().as_ref(), now_ms())
        .await
    {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the store does not answer");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("the store does not answer: {e}"),
            )
        }
    }
}

/// Counts and logs the handoffs a run made (`start_live_chat`): outcome, status and
/// duration, never parameters.
fn observe_run(state: &ServiceState, conversation_id: &str, run: &crate::interp::RunOutcome) {
    let handoff_id = run.handoff.as_ref().map(|h| h.handoff_id.as_str());
    // `http_request` logs its own line (the CLI's too).
    for t in run.trace.iter().filter(|t| t.name == "start_live_chat") {
        // `status` and `error` sit where the provider's result shape puts them: Zendesk
        // nests them under `response` (spec §2), the others at the top. Read at the top
        // only, a Zendesk handoff that worked was counted as an `error`.
        let r = t
            .result
            .get("response")
            .filter(|r| r.is_object())
            .unwrap_or(&t.result);
        let ok = r.get("status").and_then(Value::as_str) == Some("ok");
        let kind = r
            .pointer("/error/kind")
            .and_then(Value::as_str)
            .unwrap_or("error");
        let status = r
            .get("statusCode")
            .or_else(|| r.pointer("/error/http_status"))
            .and_then(Value::as_u64);
        let iid = t.parameters.get("integration_id");
        let provider = iid
            .and_then(IntegrationId::from_json)
            .and_then(|i| state.config().integrations.get(&i))
            .map(|i| i.provider.as_str())
            .unwrap_or("unknown");
        let outcome = if ok { metrics::STARTED } else { kind };
        state.metrics().handoff(provider, outcome);
        state.metrics().provider_request(
            provider,
            metrics::Operation::Start,
            if ok { metrics::OK } else { kind },
            t.duration_ms / 1000.0,
        );
        tracing::info!(
            conversation_id,
            handoff_id = if ok { handoff_id } else { None },
            provider,
            integration_id = iid.map(|v| v.to_string()),
            operation = "start",
            outcome,
            status,
            duration_ms = t.duration_ms,
            "provider call"
        );
    }
}

/// The run that started a handoff, and its provider calls, in the handoff's timeline.
async fn record_run(
    state: &ServiceState,
    conversation_id: &str,
    handoff_id: &str,
    flow: &str,
    at: i64,
    run: &crate::interp::RunOutcome,
    calls: &[observe::CallRecord],
) {
    let actions: Vec<Value> = run
        .trace
        .iter()
        .map(|t| {
            json!({
                "index": t.index,
                "name": t.name,
                "parameters": t.parameters,
                "status": t.result.get("status"),
                "error_kind": t.result.pointer("/error/kind"),
                "duration_ms": timeline::round_ms(t.duration_ms),
            })
        })
        .collect();
    let mut entries = vec![TimelineEntry {
        live_chat_id: handoff_id.to_string(),
        conversation_id: conversation_id.to_string(),
        at,
        kind: "run".into(),
        data: json!({"flow": flow, "actions": actions}),
    }];
    entries.extend(timeline::calls(handoff_id, conversation_id, "start", calls));
    state.record(entries).await;
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/timeline",
    tag = "builder",
    params(("id" = String, Path, description = "The builder's conversation id")),
    responses(
        (status = 200, description = "Every handoff and what happened to it", body = Timeline),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
        (status = 404, description = "`no_timeline`", body = ErrorBody),
        (status = 503, description = "`busy`: more than `max_in_flight` requests in flight for 5 s; retry after `Retry-After`", body = ErrorBody),
    ),
    security(("api_token" = []))
)]
async fn timeline_route(State(state): State<ServiceState>, Path(id): Path<String>) -> Response {
    match timeline::view(&state, &id).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no_timeline",
            "nothing recorded for this conversation (no live chat, or pruned)",
        ),
        Err(e) => internal(e),
    }
}

/// Ready when the store answers a query.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The store answers", body = Ready),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
        (status = 503, description = "`not_ready`", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<ServiceState>) -> Response {
    match state.store().next_deadline().await {
        Ok(_) => Json(json!({"status": "ready", "store": "ok"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readyz: the store does not answer");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("the store does not answer: {e}"),
            )
        }
    }
}

async fn chat_view(state: &ServiceState, chat: &LiveChatRecord) -> Value {
    // An ended chat has no deadlines (its end dropped them): nothing to read.
    let deadlines = if chat.state == super::store::ChatState::Ended {
        Vec::new()
    } else {
        state.store().deadlines(&chat.id).await.unwrap_or_default()
    };
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
        LifecycleError::Store(e) => store_failed(e),
        LifecycleError::Attachment(e) => attach_error(e),
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

/// How long a run holds its `Idempotency-Key` before another replica may take it over
/// (its own replica died): longer than any run (provider calls time out well before).
const RUN_KEY_LEASE_MS: i64 = 120_000;

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/run",
    tag = "builder",
    params(
        ("id" = String, Path, description = "The builder's conversation id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key (1 to 255 visible ASCII characters) answer the first run's result and never start a second handoff; `Idempotency-Replayed: true` marks a replayed answer"),
    ),
    request_body(content = RunRequest, description = "The flow (inline or a file under flows_dir) and its context"),
    responses(
        (status = 200, description = "The run document; `live_chat` when a handoff started", body = RunResponse),
        (status = 400, description = "Malformed request (`bad_request`, `bad_context`, `bad_flow_file`, `flows_dir_not_configured`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
        (status = 404, description = "`flow_not_found`", body = ErrorBody),
        (status = 409, description = "`live_chat_open` or `run_in_progress` (also: a run with this `Idempotency-Key` is in progress)", body = ErrorBody),
        (status = 413, description = "Body over `[api] max_run_body_bytes`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not sent as `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "`flow_invalid`, with the diagnostics", body = ErrorBody),
        (status = 502, description = "`provider_error`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry (with the same `Idempotency-Key`); or `busy`: more than `max_in_flight` requests in flight for 5 s; retry after `Retry-After`", body = ErrorBody),
    ),
    security(("api_token" = []))
)]
async fn run(
    State(state): State<ServiceState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(key) = headers.get("idempotency-key") else {
        return run_flow(state, id, raw).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_string()
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
            )
        }
    };
    let store = state.store().clone();
    match store
        .run_key_begin(&id, &key, now_ms(), RUN_KEY_LEASE_MS)
        .await
    {
        Ok(RunKey::Fresh) => {}
        Ok(RunKey::Running) => {
            return error(
                StatusCode::CONFLICT,
                "run_in_progress",
                "a run with this Idempotency-Key is in progress",
            )
        }
        Ok(RunKey::Done { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut r = (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            r.headers_mut().insert(
                "idempotency-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            return r;
        }
        Err(e) => return store_failed(e),
    }
    let resp = run_flow(state, id.clone(), raw).await;
    let status = resp.status();
    // Answers a retry must see again: success and the client's own mistakes. A server
    // or database failure forgets the key, so a retry runs again.
    let keep = status.is_success()
        || (status.is_client_error() && status != StatusCode::CONFLICT)
        || status == StatusCode::BAD_GATEWAY;
    let (parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return internal(e),
    };
    let answer = keep.then(|| {
        (
            status.as_u16(),
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    });
    if let Err(e) = store.run_key_finish(&id, &key, answer).await {
        tracing::warn!(conversation_id = %id, error = %e, "could not record the run's Idempotency-Key");
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// `/run` without (or after) the `Idempotency-Key` handling.
async fn run_flow(state: ServiceState, id: String, raw: Result<Bytes, BytesRejection>) -> Response {
    let body = match body(raw, state.config().api.max_run_body_bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match json_object(&body, &["flow", "flow_file", "context", "strict"]) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let present = |k: &str| req.get(k).filter(|v| !v.is_null());
    let (src, file) = match (present("flow"), present("flow_file")) {
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
        Err(e) => return store_failed(e),
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
    let started_at = now_ms();
    // The trace feeds the handoff metrics and the timeline's `run` entry; it is not
    // part of the answer.
    let opts = RunOptions {
        strict,
        trace: true,
        ..RunOptions::default()
    };
    let (outcome, calls) = observe::collect(state.engine().run(&flow, store, &opts)).await;
    observe_run(&state, &id, &outcome);
    if let Some(h) = &outcome.handoff {
        record_run(
            &state,
            &id,
            &h.handoff_id,
            &file,
            started_at,
            &outcome,
            &calls,
        )
        .await;
    }
    let mut doc = outcome.run_json();
    let live = match &outcome.handoff {
        Some(h) => match state.start_live_chat(&id, h).await {
            // Just recorded: its one deadline is the wait timer the record set from
            // its own row (`created_at + wait_timeout_s`), so nothing is read back.
            Ok(rec) => {
                let wait = (rec.wait_timeout_s > 0).then(|| super::store::Deadline {
                    kind: super::store::DeadlineKind::Wait,
                    due_at: rec.created_at + rec.wait_timeout_s as i64 * 1000,
                });
                record_json(&rec, wait.as_slice())
            }
            Err(e) => return lifecycle_error(e),
        },
        None => Value::Null,
    };
    doc["live_chat"] = live;
    Json(doc).into_response()
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/messages",
    tag = "builder",
    params(("id" = String, Path, description = "The builder's conversation id")),
    request_body(content = MessageRequest, description = "The user's message: `text`, `attachments`, or both (`400 bad_request` for a malformed one, `attachment_url_forbidden` for a `url` the `http_request` guard refuses)"),
    responses(
        (status = 200, description = "Relayed to the agent", body = MessageResponse),
        (status = 400, description = "`bad_request`", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
        (status = 409, description = "`no_live_chat`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over `[api] max_message_body_bytes`; or `unsupported_attachment`: a file larger than the provider takes (nothing sent)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not sent as `Content-Type: application/json`; or `unsupported_attachment`: a content type the provider does not take (nothing sent)", body = ErrorBody),
        (status = 429, description = "`rate_limited`, see `Retry-After`", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds until a message is accepted again"))),
        (status = 502, description = "`provider_error`: the live chat ended with `error`; or `attachment_fetch_failed`: an attachment's `url` could not be fetched (nothing sent)", body = ErrorBody),
        (status = 503, description = "`busy`: more than `max_in_flight` requests in flight for 5 s; retry after `Retry-After`", body = ErrorBody),
    ),
    security(("api_token" = []))
)]
async fn message(
    State(state): State<ServiceState>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body(raw, state.config().api.max_message_body_bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match json_object(&body, &["text", "attachments"]) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let text = match req.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`text` must be a non-empty string",
            )
        }
    };
    let attachments = match req.get("attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => match super::attach::parse_inputs(v) {
            Ok(a) => a,
            Err(e) => return attach_error(e),
        },
    };
    if text.is_none() && attachments.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a message needs a non-empty `text`, `attachments`, or both",
        );
    }
    if let Err(wait) = state.limiter().check(&id, std::time::Instant::now()) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        tracing::warn!(conversation_id = %id, retry_after_s = secs, "message rate limit hit");
        let mut resp = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} messages per minute for this conversation; retry in {secs} s",
                state.config().api.messages_per_minute
            ),
        );
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(secs),
        );
        return resp;
    }
    let sent = match (text, attachments.is_empty()) {
        (Some(t), true) => state.user_message(&id, &t).await,
        (t, _) => state.user_content(&id, t, attachments).await,
    };
    match sent {
        Ok(chat) => Json(json!({"status": "sent", "live_chat": chat_view(&state, &chat).await}))
            .into_response(),
        Err(e) => lifecycle_error(e),
    }
}

/// An attachment refusal: nothing was sent.
fn attach_error(e: super::attach::AttachError) -> Response {
    use super::attach::AttachError;
    use crate::providers::attachments::AttachmentRefusal;
    match &e {
        AttachError::Refused(AttachmentRefusal::Type { .. }) => error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_attachment",
            format!("{e}; nothing was sent"),
        ),
        AttachError::Refused(AttachmentRefusal::Size { .. }) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "unsupported_attachment",
            format!("{e}; nothing was sent"),
        ),
        AttachError::Bad(_) => error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{e}; nothing was sent"),
        ),
        AttachError::Forbidden { .. } => error(
            StatusCode::BAD_REQUEST,
            "attachment_url_forbidden",
            format!("{e} (see `[http_request] allow`); nothing was sent"),
        ),
        AttachError::Fetch { .. } => error(
            StatusCode::BAD_GATEWAY,
            "attachment_fetch_failed",
            format!("{e}; nothing was sent"),
        ),
    }
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/typing",
    tag = "builder",
    params(("id" = String, Path, description = "The builder's conversation id")),
    request_body(content = TypingRequest, description = "Whether the user is typing"),
    responses(
        (status = 202, description = "Taken; `relayed` says whether the provider has a typing indicator (best-effort: a provider failure answers `false` and the chat goes on)", body = TypingResponse),
        (status = 400, description = "`bad_request`", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
        (status = 409, description = "`no_live_chat`", body = ErrorBody),
        (status = 413, description = "Body over `[api] max_body_bytes`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not sent as `Content-Type: application/json`", body = ErrorBody),
        (status = 503, description = "`busy`: more than `max_in_flight` requests in flight for 5 s; retry after `Retry-After`", body = ErrorBody),
    ),
    security(("api_token" = []))
)]
async fn typing(
    State(state): State<ServiceState>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body(raw, state.config().api.max_body_bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match json_object(&body, &["typing"]) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let Some(typing) = req.get("typing").and_then(Value::as_bool) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "`typing` must be true or false",
        );
    };
    match state.user_typing(&id, typing).await {
        Ok(relayed) => (StatusCode::ACCEPTED, Json(json!({"relayed": relayed}))).into_response(),
        Err(e) => lifecycle_error(e),
    }
}

/// `GET /files/{token}`: an agent's file the provider keeps behind its credentials,
/// fetched from the provider now. The token (from an `agent_message` event) is signed
/// with the builder's signing secret and expires; no API token is needed.
#[utoipa::path(
    get,
    path = "/files/{token}",
    tag = "builder",
    params(("token" = String, Path, description = "From an `agent_message` attachment's `url`")),
    responses(
        (status = 200, description = "The file, with its content type", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
        (status = 404, description = "`not_found`: not a token of this service (or its live chat is gone)", body = ErrorBody),
        (status = 410, description = "`expired`: the URL is past its 24 hours", body = ErrorBody),
        (status = 502, description = "`provider_error`: the provider did not hand the file over", body = ErrorBody),
    )
)]
async fn file(State(state): State<ServiceState>, Path(token): Path<String>) -> Response {
    use super::attach::{verify_grant, GrantError};
    let grant = match verify_grant(&state.config().builder.signing_secret, &token, now_ms()) {
        Ok(g) => g,
        Err(e @ GrantError::Invalid) => {
            return error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        Err(e @ GrantError::Expired) => return error(StatusCode::GONE, "expired", e.to_string()),
    };
    match state.download_file(&grant.chat, &grant.path).await {
        Ok(Some(bytes)) => {
            let disposition = format!(
                "attachment; filename=\"{}\"",
                grant.name.replace(['"', '\\', '\r', '\n'], "_")
            );
            let mut resp = bytes.into_response();
            let h = resp.headers_mut();
            if let Ok(v) = axum::http::HeaderValue::from_str(&grant.content_type) {
                h.insert(axum::http::header::CONTENT_TYPE, v);
            }
            if let Ok(v) = axum::http::HeaderValue::from_str(&disposition) {
                h.insert(axum::http::header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no such file"),
        Err(LifecycleError::Provider(e)) => error(
            StatusCode::BAD_GATEWAY,
            "provider_error",
            format!("the provider did not hand the file over: {}", e.message),
        ),
        Err(e) => lifecycle_error(e),
    }
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/close",
    tag = "builder",
    params(("id" = String, Path, description = "The builder's conversation id")),
    request_body(content = CloseRequest, description = "`{}`: not read, but sent as JSON like every `/v1` body, so a page on another site cannot close a live chat"),
    responses(
        (status = 200, description = "Closed: the live chat ended `user_closed` (or `error` when the provider close failed)", body = LiveChatResponse),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
        (status = 409, description = "`no_live_chat`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not sent as `Content-Type: application/json`", body = ErrorBody),
        (status = 503, description = "`busy`: more than `max_in_flight` requests in flight for 5 s; retry after `Retry-After`", body = ErrorBody),
    ),
    security(("api_token" = []))
)]
async fn close(State(state): State<ServiceState>, Path(id): Path<String>) -> Response {
    match state.user_close(&id).await {
        Ok(chat) => Json(json!({"live_chat": chat_view(&state, &chat).await})).into_response(),
        Err(e) => lifecycle_error(e),
    }
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/live_chat",
    tag = "builder",
    params(("id" = String, Path, description = "The builder's conversation id")),
    responses(
        (status = 200, description = "The conversation's newest live chat", body = LiveChatResponse),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 403, description = "`forbidden_host`: a loopback `listen` answers only to a loopback `Host`", body = ErrorBody),
        (status = 404, description = "`no_live_chat`", body = ErrorBody),
        (status = 503, description = "`busy`: more than `max_in_flight` requests in flight for 5 s; retry after `Retry-After`", body = ErrorBody),
    ),
    security(("api_token" = []))
)]
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
        Err(e) => store_failed(e),
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
    let why = e.to_string();
    noted(
        error(StatusCode::UNAUTHORIZED, "unauthorized", why.clone()),
        vec![WebhookResult::Unauthorized],
        Some(why),
    )
}

fn malformed(e: webhooks::ParseError) -> Response {
    let why = e.to_string();
    noted(
        error(StatusCode::BAD_REQUEST, "malformed_event", why.clone()),
        vec![WebhookResult::Malformed],
        Some(why),
    )
}

/// What a webhook came to, for [`log_webhook`] (logs and metrics).
#[derive(Clone)]
struct WebhookNote {
    results: Vec<WebhookResult>,
    why: Option<String>,
}

fn noted(mut resp: Response, results: Vec<WebhookResult>, why: Option<String>) -> Response {
    resp.extensions_mut().insert(WebhookNote { results, why });
    resp
}

/// One log line and one count per webhook (per event for multi-event bodies): the
/// result and why, never a signature, token or message text.
async fn log_webhook(State(state): State<ServiceState>, req: Request, next: Next) -> Response {
    let mut segs = req.uri().path().trim_start_matches("/webhooks/").split('/');
    // No provider has that segment: no route (no log line or metric of its own).
    let Some((kind, _)) = segs.next().and_then(webhooks::receiver) else {
        return next.run(req).await;
    };
    let provider = kind.as_str().to_string();
    let integration_id = segs.next().unwrap_or_default().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    let (results, why) = match resp.extensions().get::<WebhookNote>() {
        // A notification with no event for us (e.g. the consumer's own message echoed).
        Some(n) if n.results.is_empty() => (vec![WebhookResult::Ignored], None),
        Some(n) => (n.results.clone(), n.why.clone()),
        None => (
            vec![match status.as_u16() {
                401 => WebhookResult::Unauthorized,
                400 => WebhookResult::Malformed,
                404 => WebhookResult::UnknownIntegration,
                413 => WebhookResult::TooLarge,
                s if s >= 500 => WebhookResult::Error,
                _ => WebhookResult::Ok,
            }],
            None,
        ),
    };
    for r in &results {
        state.metrics().webhook(&provider, *r);
    }
    let result = results
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",");
    if status.is_success() {
        tracing::info!(
            provider,
            integration_id,
            result,
            status = status.as_u16(),
            "webhook"
        );
    } else {
        tracing::warn!(
            provider,
            integration_id,
            result,
            why,
            status = status.as_u16(),
            "webhook refused"
        );
    }
    resp
}

/// `POST /webhooks/{segment}/{integration_id}`, for every provider with webhooks: the
/// provider's receiver ([`webhooks::WebhookReceiver`]) authenticates and parses the body;
/// here are what all share: the body limit, the integration lookup (`404`), refusals
/// (`401`, `400`), single-use tokens, the conversation check and the effects (dedupe
/// and ordering are the lifecycle's). The built-in routes are documented in
/// [`super::openapi`].
async fn webhook(
    State(state): State<ServiceState>,
    Path((segment, iid)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let Some((kind, receiver)) = webhooks::receiver(&segment) else {
        return not_found().await;
    };
    let body = match body(raw, state.config().webhooks.max_body_bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let i = match integration(&state, &iid, kind) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let verified = receiver.verify(&webhooks::WebhookRequest {
        integration: &i,
        path: uri.path(),
        headers: &headers,
        body: &body,
        now_ms: now_ms(),
        config: &state.config().webhooks,
    });
    let v = match verified {
        Ok(v) => v,
        Err(webhooks::Refusal::Unauthorized(e)) => return unauthorized(e),
        Err(webhooks::Refusal::Malformed(e)) => return malformed(e),
    };
    // Burn a single-use token only once everything else checked out, so a malformed body
    // can be fixed and resent.
    if let Some(once) = &v.single_use {
        match state
            .store()
            .mark_seen(&once.scope, &once.id, &once.digest, now_ms())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return noted(
                    error(StatusCode::UNAUTHORIZED, "unauthorized", once.why),
                    vec![WebhookResult::Unauthorized],
                    Some(once.why.into()),
                )
            }
            Err(e) => return store_failed(e),
        }
    }
    let integration_id = i.id.to_string();
    let unknown = || {
        noted(
            error(
                StatusCode::NOT_FOUND,
                "unknown_conversation",
                "no live chat for that platform_conversation_id and conversation_id",
            ),
            vec![WebhookResult::UnknownConversation],
            None,
        )
    };
    if let Some((provider_conversation_id, handoff_id)) = &v.conversation {
        match state
            .store()
            .find_by_provider(&integration_id, provider_conversation_id)
            .await
        {
            Ok(Some(chat)) if &chat.id == handoff_id => {}
            Ok(_) => return unknown(),
            Err(e) => return store_failed(e),
        }
    }
    let source = format!("{segment}:{}", i.id);
    let mut outcomes = Vec::new();
    // Conversations an event found a live chat for: no sighting to record.
    let mut tracked = Vec::new();
    for ev in v.events {
        let conversation = ev.provider_conversation_id.clone();
        match state.provider_event(&integration_id, &source, ev).await {
            Ok(EventOutcome::Unknown) if v.ack == webhooks::Ack::Connector => return unknown(),
            Ok(o) => {
                if o != EventOutcome::Unknown {
                    tracked.push(conversation);
                }
                outcomes.push(WebhookResult::from(o));
            }
            Err(e) => return store_failed(e),
        }
    }
    // Conversations no live chat tracks are recorded for the reconcile (issue 17); the
    // webhook itself never closes anything. After the events, so that a conversation
    // an event just found costs no statement (the store checks the others again).
    for seen in &v.sightings {
        if tracked.contains(&seen.provider_conversation_id) {
            continue;
        }
        if let Err(e) = super::reconcile::record_sighting(&state, &integration_id, seen).await {
            return store_failed(e);
        }
    }
    let names: Vec<&str> = outcomes.iter().map(|o| o.as_str()).collect();
    let body = match v.ack {
        webhooks::Ack::Status => json!({"status": "ok", "events": names}),
        webhooks::Ack::Connector => json!({"ok": true, "events": names}),
    };
    noted(Json(body).into_response(), outcomes, None)
}
