//! The page's routes: the embedded assets and the JSON API over [`World`].

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value};

use super::world::{ApiError, World};
use crate::service::auth::{json_content_type, loopback_host};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Everything is same-origin and embedded: nothing may load from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The router; `loopback_only` refuses requests whose `Host` is not a loopback name.
pub(crate) fn router(world: World, loopback_only: bool) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .route("/api/info", get(info))
        .route("/api/check", post(check))
        .route("/api/render", post(render))
        .route("/api/run", post(run))
        .route("/api/conversations", get(conversations))
        .route("/api/conversations/{id}/join", post(join))
        .route("/api/conversations/{id}/agent_message", post(agent_message))
        .route("/api/conversations/{id}/user_message", post(user_message))
        .route("/api/conversations/{id}/close", post(close))
        .route("/api/conversations/{id}/typing", post(typing))
        .route("/api/attachment", get(attachment))
        .route("/_builder/events", post(builder_event))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| guard(loopback_only, req, next),
        ))
        .with_state(world)
}

/// DNS-rebinding and cross-site protection: a loopback `Host`, and JSON bodies (a
/// cross-site form cannot send `application/json` without a preflight we never allow).
async fn guard(loopback_only: bool, req: Request, next: Next) -> Response {
    if loopback_only {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !loopback_host(host) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!(
                    "the playground answers only to a loopback host name, not `{host}` \
                     (start it with --listen to serve beyond this machine)"
                ),
            )
            .into_response();
        }
    }
    if req.method() == Method::POST {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .is_some_and(json_content_type);
        if !json {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "POST bodies must be JSON with `Content-Type: application/json`",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

fn answer(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body's bytes; a body that cannot be read (over the size limit, cut) is a JSON
/// error like every other.
struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) => Err(ApiError::new(
                StatusCode::from_u16(e.status().as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
                "bad_body",
                e.body_text(),
            )),
        }
    }
}

/// A JSON object body.
fn object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    }
}

/// The editors' texts and the strict switch.
struct Source {
    flow: String,
    context: String,
    strict: bool,
    /// The dry run's clock (`"now"`, RFC 3339); `None`: the system's.
    now: Option<std::time::SystemTime>,
}

fn source(body: &Bytes) -> Result<Source, ApiError> {
    let m = object(body)?;
    let text = |k: &str, required: bool| match m.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) if !required => Ok(String::new()),
        None => Err(ApiError::bad_request(format!(
            "missing `{k}` (the editor's text, a string)"
        ))),
        Some(_) => Err(ApiError::bad_request(format!(
            "`{k}` must be a string: the editor's text, not parsed JSON"
        ))),
    };
    let strict = match m.get("strict") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("`strict` must be a boolean")),
    };
    let now = match m.get("now") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(
            crate::providers::schedule::parse_instant(s)
                .map_err(|e| ApiError::bad_request(format!("`now`: {e}")))?,
        ),
        Some(_) => return Err(ApiError::bad_request("`now` must be an RFC 3339 string")),
    };
    Ok(Source {
        flow: text("flow", true)?,
        context: text("context", false)?,
        strict,
        now,
    })
}

async fn info(State(w): State<World>) -> Response {
    Json(w.info()).into_response()
}

async fn check(State(w): State<World>, Body(body): Body) -> Response {
    answer(source(&body).map(|s| w.check(&s.flow, &s.context)))
}

async fn render(State(w): State<World>, Body(body): Body) -> Response {
    match source(&body) {
        Ok(s) => answer(w.render(&s.flow, &s.context, s.strict, s.now).await),
        Err(e) => e.into_response(),
    }
}

async fn run(State(w): State<World>, Body(body): Body) -> Response {
    match source(&body) {
        Ok(s) => answer(w.run(&s.flow, &s.context, s.strict).await),
        Err(e) => e.into_response(),
    }
}

async fn conversations(State(w): State<World>) -> Response {
    Json(w.conversations().await).into_response()
}

async fn join(State(w): State<World>, Path(id): Path<String>) -> Response {
    answer(w.join(&id).await)
}

async fn agent_message(
    State(w): State<World>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Response {
    match message_fields(&body) {
        Ok((t, None)) => answer(w.agent_message(&id, &t.unwrap_or_default()).await),
        Ok((t, Some(files))) => match files.into_iter().next().map(serde_json::from_value) {
            Some(Ok(f)) => answer(w.agent_file(&id, &t.unwrap_or_default(), f).await),
            _ => {
                ApiError::bad_request("`attachments[0]` must be {name, content_type, data_base64}")
                    .into_response()
            }
        },
        Err(e) => e.into_response(),
    }
}

/// `{"text"?, "attachments"?}`: at least one (files as the service's `/messages` takes
/// them: `{name, content_type, data_base64}`).
fn message_fields(body: &Bytes) -> Result<(Option<String>, Option<Vec<Value>>), ApiError> {
    let m = object(body)?;
    let text = match m.get("text") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    };
    let files = match m.get("attachments") {
        Some(Value::Array(a)) if !a.is_empty() => Some(a.clone()),
        _ => None,
    };
    if text.is_none() && files.is_none() {
        return Err(ApiError::bad_request("`text` must be a non-empty string"));
    }
    Ok((text, files))
}

/// `GET /api/attachment?u=<url>`: an agent's file, under the page's origin.
async fn attachment(
    State(w): State<World>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let u = reqwest::Url::parse(&format!("http://q/?{}", q.as_deref().unwrap_or("")))
        .ok()
        .and_then(|x| {
            x.query_pairs()
                .find(|(k, _)| k == "u")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    match w.attachment(&u).await {
        Ok((ct, bytes)) => {
            let mut r = bytes.into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&ct) {
                r.headers_mut().insert(axum::http::header::CONTENT_TYPE, v);
            }
            r
        }
        Err(e) => e.into_response(),
    }
}

async fn typing(State(w): State<World>, Path(id): Path<String>, Body(body): Body) -> Response {
    let parsed = object(&body).and_then(|m| match (m.get("who"), m.get("typing")) {
        (Some(Value::String(who)), Some(Value::Bool(t))) => Ok((who.clone(), *t)),
        _ => Err(ApiError::bad_request(
            "`who` (\"agent\" or \"user\") and `typing` (a boolean) are required",
        )),
    });
    match parsed {
        Ok((who, t)) => answer(w.typing(&id, &who, t).await),
        Err(e) => e.into_response(),
    }
}

async fn user_message(
    State(w): State<World>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Response {
    match message_fields(&body) {
        Ok((t, files)) => answer(w.user_content(&id, t, files).await),
        Err(e) => e.into_response(),
    }
}

async fn close(State(w): State<World>, Path(id): Path<String>, Body(body): Body) -> Response {
    let by = object(&body).and_then(|m| match m.get("by") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ApiError::bad_request("`by` must be \"agent\" or \"user\"")),
    });
    match by {
        Ok(by) => answer(w.close(&id, &by).await),
        Err(e) => e.into_response(),
    }
}

async fn builder_event(State(w): State<World>, headers: HeaderMap, Body(body): Body) -> Response {
    match w.builder_event(&headers, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}
