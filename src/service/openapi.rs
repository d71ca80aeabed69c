//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' annotations
//! (`utoipa`) and served at `GET /openapi.json`; `docs/openapi.json` is a copy kept equal
//! by a test. The types here describe bodies for the document only: the handlers read
//! and write JSON themselves, so that every malformed input gets our own error.

#![allow(dead_code)]

use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// `{"error":{"code","message"}}`, with `diagnostics` for `flow_invalid`.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// The error.
    error: ErrorDetail,
}

/// What went wrong.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `unauthorized`, `bad_request`, `payload_too_large`,
    /// `unsupported_media_type`, `forbidden_host`, `rate_limited`, `no_live_chat`, `live_chat_open`, `run_in_progress`,
    /// `flow_invalid`, `provider_error`, …
    code: String,
    /// For people.
    message: String,
    /// `flow_invalid` only: every problem, with file, line:column and JSON pointer.
    diagnostics: Option<Vec<Value>>,
}

/// `POST /v1/conversations/{id}/run`: give `flow` or `flow_file`.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum RunRequest {
    /// The flow inline.
    Inline(RunInline),
    /// A flow file of the service.
    File(RunFile),
}

/// A flow given inline.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInline {
    /// The flow document: an actions array or a node object.
    #[schema(schema_with = flow_schema)]
    flow: Value,
    /// The context document.
    context: Option<RunContext>,
    /// A missing value is an error instead of a warning.
    strict: Option<bool>,
}

/// A flow file named.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// A file under the service's `flows_dir`: relative, `/`-separated, no `.` or `..`
    /// segments.
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")]
    flow_file: String,
    /// The context document.
    context: Option<RunContext>,
    /// A missing value is an error instead of a warning.
    strict: Option<bool>,
}

/// The context document of a run (every key optional; others are refused).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunContext {
    /// The contact.
    contact: Option<std::collections::BTreeMap<String, Value>>,
    /// The conversation variables.
    context: Option<std::collections::BTreeMap<String, Value>>,
    /// The re-entry input (`{"live_chat":{"status":…}}` after a live chat).
    input: Option<std::collections::BTreeMap<String, Value>>,
    /// The detected intent.
    intent: Option<Value>,
    /// Intents detected.
    intents: Option<Vec<Value>>,
    /// The intent's confidence.
    confidence: Option<Value>,
    /// The score level.
    score_level: Option<Value>,
    /// Entities detected.
    entities: Option<Vec<Value>>,
    /// The builder's conversation id (the path's id wins).
    conversation_id: Option<String>,
}

fn flow_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Array))
            .item(ObjectBuilder::new().schema_type(Type::Object))
            .build(),
    )
}

/// The run document, plus the live chat when a handoff started.
#[derive(ToSchema)]
pub struct RunResponse {
    /// Messages for the user, in order.
    messages: Vec<Value>,
    /// The context after the run (secrets redacted).
    context: Value,
    /// The contact after the run.
    contact: Value,
    /// Missing values, ignored parameters, failed actions, …
    warnings: Vec<Value>,
    /// The handoff `start_live_chat` made, if any.
    handoff: Option<Value>,
    /// The live chat that started, if any.
    live_chat: Option<LiveChat>,
}

/// `POST /v1/conversations/{id}/messages`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// The user's message (non-empty); optional when `attachments` are given.
    #[schema(min_length = 1)]
    text: Option<String>,
    /// Files for the agent (checked against the provider first: a type or size it
    /// cannot carry is refused with `415`/`413 unsupported_attachment` and nothing is
    /// sent).
    attachments: Option<Vec<MessageAttachment>>,
}

/// One file of a user's message: exactly one of `data_base64` and `url`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageAttachment {
    /// File name (`receipt.jpg`).
    #[schema(min_length = 1)]
    name: String,
    /// MIME type (`image/jpeg`).
    #[schema(min_length = 1)]
    content_type: String,
    /// The bytes, standard base64 (counted in `[api] max_message_body_bytes`).
    data_base64: Option<String>,
    /// Where the service fetches the bytes (through the `http_request` guard and its
    /// `allow` list, streamed up to the provider's limit); a LivePerson integration with
    /// `attachments_as_links = true` sends a type it cannot host as this link.
    url: Option<String>,
    /// The size in bytes, if known (checked before anything is fetched).
    #[schema(minimum = 0)]
    size: Option<u64>,
}

/// `POST /v1/conversations/{id}/typing`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypingRequest {
    /// Whether the user is typing now.
    typing: bool,
}

/// The typing state was taken.
#[derive(ToSchema)]
pub struct TypingResponse {
    /// Whether it reached the agent: `false` where the provider has no typing indicator
    /// (Zendesk) or the provider refused it.
    relayed: bool,
}

/// `POST /v1/conversations/{id}/close`: `{}` (the body is not read).
#[derive(ToSchema)]
pub struct CloseRequest {}

/// The message was relayed.
#[derive(ToSchema)]
pub struct MessageResponse {
    /// `sent`.
    status: String,
    /// The live chat after the message.
    live_chat: LiveChat,
}

/// `{"live_chat": …}`.
#[derive(ToSchema)]
pub struct LiveChatResponse {
    /// The live chat.
    live_chat: LiveChat,
}

/// A live chat as the API shows it.
#[derive(ToSchema)]
pub struct LiveChat {
    /// The handoff id.
    handoff_id: String,
    /// The builder's conversation.
    conversation_id: String,
    /// `waiting`, `with_agent`, `closing` or `ended`.
    state: String,
    /// How it ended (`agent_closed`, `user_closed`, `timeout`, `user_inactivity_timeout`,
    /// `error`).
    status: Option<String>,
    /// While `closing`: the status it will end with.
    pending_status: Option<String>,
    /// `liveperson`, `zendesk`, `altu_sdk`.
    provider: String,
    /// The integration.
    integration_id: String,
    /// The provider's id for the conversation.
    provider_conversation_id: String,
    /// 0 = none.
    wait_timeout_s: u64,
    /// 0 = none.
    user_inactivity_timeout_s: u64,
    /// Unix ms.
    created_at_ms: i64,
    /// Unix ms.
    agent_joined_at_ms: Option<i64>,
    /// Unix ms.
    last_user_message_at_ms: Option<i64>,
    /// Unix ms.
    ended_at_ms: Option<i64>,
    /// Pending timers (Unix ms).
    deadlines: Deadlines,
}

/// Pending timers.
#[derive(ToSchema)]
pub struct Deadlines {
    /// When the wait timeout fires.
    wait_ms: Option<i64>,
    /// When the user inactivity timeout fires.
    inactivity_ms: Option<i64>,
}

/// Every handoff of a conversation and what happened to it.
#[derive(ToSchema)]
pub struct Timeline {
    /// The conversation.
    conversation_id: String,
    /// Oldest first.
    handoffs: Vec<TimelineHandoff>,
}

/// One handoff in a timeline (the live chat fields are absent once it is gone).
#[derive(ToSchema)]
pub struct TimelineHandoff {
    /// The handoff id.
    handoff_id: String,
    /// Provider.
    provider: Option<String>,
    /// Integration.
    integration_id: Option<String>,
    /// The provider's id.
    provider_conversation_id: Option<String>,
    /// Current state.
    state: Option<String>,
    /// End status.
    status: Option<String>,
    /// Unix ms.
    created_at_ms: Option<i64>,
    /// Unix ms.
    agent_joined_at_ms: Option<i64>,
    /// Unix ms.
    ended_at_ms: Option<i64>,
    /// In time order.
    entries: Vec<TimelineItem>,
}

/// One entry: `at_ms`, `kind` and the fields of that kind.
#[derive(ToSchema)]
pub struct TimelineItem {
    /// Unix ms.
    at_ms: i64,
    /// `run`, `provider_call`, `webhook`, `state`, `timer`, `message`, `delivery`, `reconcile` (a handoff cut by a crash: its outcome).
    kind: String,
}

/// LivePerson and Zendesk webhooks: what each event came to.
#[derive(ToSchema)]
pub struct WebhookAck {
    /// `ok`.
    status: String,
    /// `applied`, `duplicate`, `stale`, `ignored`, `unknown_conversation` per event.
    events: Vec<String>,
}

/// ALTU connector events (protocol §5).
#[derive(ToSchema)]
pub struct AltuAck {
    /// `true`.
    ok: bool,
    /// `applied`, `duplicate`, `stale` or `ignored`.
    events: Vec<String>,
}

/// `{"status":"ok"}`.
#[derive(ToSchema)]
pub struct Health {
    /// `ok`.
    status: String,
}

/// `{"status":"ready","store":"ok"}`.
#[derive(ToSchema)]
pub struct Ready {
    /// `ready`.
    status: String,
    /// `ok`.
    store: String,
}

/// The `api_token` bearer scheme of `/v1/…`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

// The webhook routes of the built-in providers, as their providers configure them. One
// route serves them all (`POST /webhooks/{segment}/{integration_id}`, each provider's
// receiver checking its own signature); these functions only carry the documentation.

#[utoipa::path(
    post,
    path = "/webhooks/liveperson/{integration_id}",
    tag = "webhooks",
    params(("integration_id" = String, Path, description = "The integration the webhook is for"),
        ("x-liveperson-signature" = Option<String>, Header, description = "`sha1=<base64 HMAC-SHA1(client_secret, raw body)>`")),
    request_body(content = Value, description = "A LivePerson notification"),
    responses(
        (status = 200, description = "Authenticated; what each event came to", body = WebhookAck),
        (status = 400, description = "`malformed_event`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: signature or token refused; nothing changed", body = ErrorBody),
        (status = 404, description = "`unknown_integration`", body = ErrorBody),
        (status = 413, description = "Body over `[webhooks] max_body_bytes`", body = ErrorBody),
        (status = 503, description = "`busy`: more than `[webhooks] max_in_flight` webhooks in flight for 5 s; retry after `Retry-After`", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn webhook_liveperson() {}

#[utoipa::path(
    post,
    path = "/webhooks/zendesk/{integration_id}",
    tag = "webhooks",
    params(("integration_id" = String, Path, description = "The integration the webhook is for"),
        ("x-zendesk-webhook-signature" = Option<String>, Header, description = "base64 HMAC-SHA256(webhook_secret, timestamp + body)"),
        ("x-zendesk-webhook-signature-timestamp" = Option<String>, Header, description = "RFC 3339, within the replay window")),
    request_body(content = Value, description = "A Zendesk webhook (event-subscribed or trigger)"),
    responses(
        (status = 200, description = "Authenticated; what each event came to", body = WebhookAck),
        (status = 400, description = "`malformed_event`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: signature or token refused; nothing changed", body = ErrorBody),
        (status = 404, description = "`unknown_integration`", body = ErrorBody),
        (status = 413, description = "Body over `[webhooks] max_body_bytes`", body = ErrorBody),
        (status = 503, description = "`busy`: more than `[webhooks] max_in_flight` webhooks in flight for 5 s; retry after `Retry-After`", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn webhook_zendesk() {}

/// ALTU connector events (`docs/connector-protocol.md` §3, §5): `401` unless the token
/// passes every check (signature, times, `sub`, `iss`, `aud`, `conversation_id`, single-use
/// `jti`), `400` for a malformed body, `404` when no live chat has that
/// `platform_conversation_id` and `conversation_id`, else `200 {"ok":true,"events":[…]}`
/// (`applied`, `duplicate`, `stale` or `ignored` after the end).
#[utoipa::path(
    post,
    path = "/webhooks/altu/{integration_id}",
    tag = "webhooks",
    params(("integration_id" = String, Path, description = "The integration the webhook is for"),
        ("authorization" = Option<String>, Header, description = "`Bearer <HS256 JWT>` (docs/connector-protocol.md)")),
    request_body(content = Value, description = "An ALTU connector event envelope"),
    responses(
        (status = 200, description = "Authenticated; what each event came to", body = AltuAck),
        (status = 400, description = "`malformed_event`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: signature or token refused; nothing changed", body = ErrorBody),
        (status = 404, description = "`unknown_integration` or `unknown_conversation`", body = ErrorBody),
        (status = 413, description = "Body over `[webhooks] max_body_bytes`", body = ErrorBody),
        (status = 503, description = "`busy`: more than `[webhooks] max_in_flight` webhooks in flight for 5 s; retry after `Retry-After`", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn webhook_altu() {}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "transbordo lifecycle service",
        description = "Runs chatbot flows for the builder, keeps each live chat after the handoff, relays messages, receives provider webhooks and calls the builder back with signed events.",
        license(name = "MIT", identifier = "MIT")
    ),
    paths(
        super::api::run,
        super::api::message,
        super::api::typing,
        super::api::close,
        super::api::live_chat,
        super::api::timeline_route,
        webhook_liveperson,
        webhook_zendesk,
        webhook_altu,
        super::api::healthz,
        super::api::readyz,
        super::api::metrics,
        super::api::openapi_json,
        super::api::file,
    ),
    modifiers(&BearerToken),
    tags(
        (name = "builder", description = "The builder's API: needs `Authorization: Bearer <token>`"),
        (name = "webhooks", description = "Provider events, authenticated by their signatures"),
        (name = "operations", description = "Probes, metrics and this document (no token)"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json().unwrap_or_default()
}
