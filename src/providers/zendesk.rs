//! Zendesk Support request builders (provider-contracts §2).
//!
//! Requester, in order of preference:
//! 1. `requester_id` given → used as is; with `user_fields`, `PUT /api/v2/users/{id}.json`
//!    first (Zendesk does not update an existing user from a ticket's `requester{}`);
//! 2. the contact has an email, a phone or an id → `POST /api/v2/users/create_or_update.json`
//!    (`name` = contact name, else email, else phone; `external_id` = contact id) with the
//!    `user_fields`, then the ticket with the returned `user.id`;
//! 3. otherwise the ticket has no requester (the API user) and a warning is recorded.
//!
//! The first comment: `start_message`, else the subject, else
//! "Atendimento transferido pelo chatbot"; it is a **private** note (`public: false`): it
//! is addressed to the agent (seed: "Mensagem para o agente"), and a public first comment
//! would be emailed to the requester. The ticket's `external_id` is the handoff id, and the
//! create carries `Idempotency-Key: {handoff_id}` so a retried create never makes a second
//! ticket. `transcript` follows the ticket as private comments (internal notes, for the
//! agent only, never emailed to the requester), each at most [`TRANSCRIPT_COMMENT_LIMIT`]
//! bytes, oldest first. Ids (`assignee_id`, `group_id`, …, custom field ids) are sent as given: Zendesk
//! accepts numbers and numeric strings.

use serde_json::{json, Map, Value};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::flow::spec::{ParamSpec, ParamType};
use crate::providers::call::{
    config_err, contact_text, id_text, id_value, is_absent, opt, text_value, type_name, CallBody,
    HandoffCx, HeaderValue, ProviderCall, StartPlan,
};
use crate::providers::config::{
    ConfigError, Integration, ProviderKind, ProviderSettings, Secret, SettingsTable,
};
use crate::providers::http::{HttpResponse, Retry};
use crate::providers::provider::{
    malformed, transcript_undelivered, wrong_settings, ClientCx, CloseReason, Handoff, Provider,
};
use crate::providers::transcript;
use crate::providers::{ActionError, ErrorKind};

/// Largest transcript comment, in UTF-8 bytes. **Assumption**: the Tickets API reference
/// states no size for `comment.body`; Zendesk's help center and integrators cite 64 KB
/// per comment, so transcripts are cut well below it, at 60,000 bytes.
pub const TRANSCRIPT_COMMENT_LIMIT: usize = 60_000;

/// Its handle in the registry (`provider = "zendesk"`).
pub const KIND: ProviderKind = ProviderKind::of(&Zendesk);

/// Zendesk Support credentials: the keys of a `provider = "zendesk"` table.
#[derive(Debug, Clone)]
pub struct ZendeskSettings {
    /// `https://{subdomain}.zendesk.com` (no trailing slash), or a fake's URL.
    pub base_url: String,
    /// The API user's email (token auth is `{email}/token:{api_token}`).
    pub email: String,
    /// The API token.
    pub api_token: Secret,
    /// Webhook signing secret, used by the lifecycle service to verify webhooks.
    pub webhook_secret: Option<Secret>,
}

/// The parameters it understands besides the common ones, with types and descriptions:
/// the table the checks, the JSON Schema and docs/flow-authors.md come from.
pub fn param_specs() -> Vec<ParamSpec> {
    let id = |name, what: &str| {
        ParamSpec::new(
            name,
            ParamType::Id,
            format!("{what}, as in the Support API; kept as given."),
        )
    };
    vec![
        ParamSpec::new(
            "subject",
            ParamType::OneOf(vec![ParamType::String, ParamType::Number, ParamType::Boolean]),
            "The ticket subject; required by Zendesk.",
        )
        .required(),
        ParamSpec::new("tags", ParamType::strings(), "Ticket tags."),
        ParamSpec::new(
            "custom_fields",
            ParamType::ArrayOf(Box::new(ParamType::fields(vec![
                ParamSpec::new("id", ParamType::Id, "The ticket field id.").required(),
                ParamSpec::new("value", ParamType::Any, "The value.").required(),
            ]))),
            "Ticket fields `[{id, value}]`.",
        ),
        ParamSpec::new(
            "user_fields",
            ParamType::Object,
            "User fields set on the requester, visible to agents only.",
        ),
        id("assignee_id", "The agent to assign"),
        id("brand_id", "The brand"),
        id(
            "requester_id",
            "Use this user as the requester (and `PUT` its `user_fields`); without it the requester is created or updated from the contact",
        ),
        id("ticket_form_id", "The ticket form"),
        id("group_id", "The group"),
    ]
}

/// First comment when neither `start_message` nor `subject` is set.
pub const DEFAULT_COMMENT: &str = "Atendimento transferido pelo chatbot";

const ID_PARAMS: &[&str] = &[
    "assignee_id",
    "brand_id",
    "group_id",
    "ticket_form_id",
    "requester_id",
];

/// Validates one literal parameter value (load-time check and run time share it).
pub fn check_value(name: &str, v: &Value) -> Result<(), ActionError> {
    if is_absent(v) {
        return Ok(());
    }
    match name {
        "subject" | "start_message" => text_value(name, v).map(|_| ()),
        "tags" => tags(v).map(|_| ()),
        "custom_fields" => custom_fields(v).map(|_| ()),
        "user_fields" => match v {
            Value::Object(_) => Ok(()),
            _ => Err(config_err(format!(
                "`user_fields` must be an object of user field keys to values, got {}",
                type_name(v)
            ))),
        },
        n if ID_PARAMS.contains(&n) => id_value(n, v).map(|_| ()),
        _ => Ok(()),
    }
}

fn tags(v: &Value) -> Result<Value, ActionError> {
    match v {
        Value::Array(a) => {
            for (i, t) in a.iter().enumerate() {
                if !t.is_string() {
                    return Err(config_err(format!(
                        "`tags` must be an array of strings; item {i} is {}",
                        type_name(t)
                    )));
                }
            }
            Ok(v.clone())
        }
        _ => Err(config_err(format!(
            "`tags` must be an array of strings, got {}",
            type_name(v)
        ))),
    }
}

fn custom_fields(v: &Value) -> Result<Value, ActionError> {
    let Value::Array(a) = v else {
        return Err(config_err(format!(
            "`custom_fields` must be an array of {{id, value}} objects, got {}",
            type_name(v)
        )));
    };
    for (i, f) in a.iter().enumerate() {
        let ok = match f {
            Value::Object(o) => {
                o.contains_key("value")
                    && o.get("id").is_some_and(|id| id_value("id", id).is_ok())
                    && o.keys().all(|k| k == "id" || k == "value")
            }
            _ => false,
        };
        if !ok {
            return Err(config_err(format!(
                "`custom_fields` must be an array of {{id, value}} objects; item {i} is not (id must be a number or string, and only `id` and `value` are allowed)"
            )));
        }
    }
    Ok(v.clone())
}

/// How the ticket gets its requester.
#[derive(Debug, Clone, PartialEq)]
pub enum Requester {
    /// A known Zendesk user id; `Some(body)` = a user update to send first.
    Id(Value, Option<Value>),
    /// Upsert this user (`{"user":{…}}`) and use the returned `user.id`.
    Upsert(Value),
    /// No requester: the API user is the requester.
    None,
}

/// Everything a handoff sends, computed once from the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ZdStart {
    /// How the requester is found.
    pub requester: Requester,
    /// The `ticket` object without `requester_id` (added by [`ticket_body`]).
    pub ticket: Map<String, Value>,
    /// The transcript comments, in order (empty without a transcript).
    pub transcript: Vec<String>,
    /// Warnings for the trace.
    pub warnings: Vec<String>,
}

/// Builds the handoff's bodies from the rendered parameters.
pub fn prepare_start(params: &Map<String, Value>, cx: &HandoffCx) -> Result<ZdStart, ActionError> {
    let mut warnings = Vec::new();
    for (k, v) in params {
        // `check_value` knows exactly this provider's parameters (and `start_message`).
        check_value(k, v)?;
    }
    let subject = match opt(params, "subject") {
        Some(v) => Some(text_value("subject", v)?).filter(|s| !s.is_empty()),
        None => None,
    };
    if subject.is_none() {
        warnings.push(
            "`subject` is empty: Zendesk derives the ticket subject from the first comment"
                .to_string(),
        );
    }
    let start = match opt(params, "start_message") {
        Some(v) => Some(text_value("start_message", v)?).filter(|s| !s.is_empty()),
        None => None,
    };
    let comment = start
        .or_else(|| subject.clone())
        .unwrap_or_else(|| DEFAULT_COMMENT.to_string());

    let mut t = Map::new();
    if let Some(s) = &subject {
        t.insert("subject".into(), json!(s));
    }
    t.insert(
        "comment".into(),
        json!({ "body": comment, "public": false }),
    );
    if let Some(v) = opt(params, "tags") {
        t.insert("tags".into(), tags(v)?);
    }
    if let Some(v) = opt(params, "custom_fields") {
        t.insert("custom_fields".into(), custom_fields(v)?);
    }
    for k in ["assignee_id", "brand_id", "group_id", "ticket_form_id"] {
        if let Some(v) = opt(params, k) {
            t.insert(k.into(), id_value(k, v)?);
        }
    }
    t.insert("external_id".into(), json!(cx.handoff_id));

    let user_fields = opt(params, "user_fields").cloned();
    let requester = if let Some(id) = opt(params, "requester_id") {
        let id = id_value("requester_id", id)?;
        Requester::Id(
            id,
            user_fields.map(|uf| json!({ "user": { "user_fields": uf } })),
        )
    } else {
        let email = contact_text(&cx.contact, "email");
        let phone = contact_text(&cx.contact, "phone");
        let external = contact_text(&cx.contact, "id");
        if email.is_some() || phone.is_some() || external.is_some() {
            let name = contact_text(&cx.contact, "name")
                .or_else(|| email.clone())
                .or_else(|| phone.clone())
                .or_else(|| external.clone())
                .unwrap_or_default();
            let mut u = Map::new();
            u.insert("name".into(), json!(name));
            if let Some(e) = email {
                u.insert("email".into(), json!(e));
            }
            if let Some(p) = phone {
                u.insert("phone".into(), json!(p));
            }
            if let Some(x) = external {
                u.insert("external_id".into(), json!(x));
            }
            if let Some(uf) = user_fields {
                u.insert("user_fields".into(), uf);
            }
            Requester::Upsert(json!({ "user": u }))
        } else {
            warnings.push(
                "the contact has no email, phone or id: the ticket is created without a requester (the API user)"
                    .to_string(),
            );
            if user_fields.is_some() {
                warnings.push(
                    "`user_fields` ignored: there is no requester to set them on".to_string(),
                );
            }
            Requester::None
        }
    };
    let (transcript, tw) = transcript::text_for(params, TRANSCRIPT_COMMENT_LIMIT)?;
    warnings.extend(tw);
    Ok(ZdStart {
        requester,
        ticket: t,
        transcript,
        warnings,
    })
}

/// The ticket create body with the requester (if any) in place.
pub fn ticket_body(p: &ZdStart, requester_id: Option<Value>) -> Value {
    let mut t = p.ticket.clone();
    if let Some(r) = requester_id {
        // requester_id goes right after the fields given by the flow, before external_id.
        let at = t.keys().position(|k| k == "external_id").unwrap_or(t.len());
        t.shift_insert(at, "requester_id".into(), r);
    }
    json!({ "ticket": t })
}

fn headers() -> Vec<(String, HeaderValue)> {
    vec![
        ("Authorization".into(), HeaderValue::Secret),
        (
            "Content-Type".into(),
            HeaderValue::Plain("application/json".into()),
        ),
        (
            "Accept".into(),
            HeaderValue::Plain("application/json".into()),
        ),
    ]
}

/// `PUT /api/v2/users/{id}.json` (user fields on an existing requester).
pub fn update_user_call(s: &ZendeskSettings, user_id: &Value, body: Value) -> ProviderCall {
    ProviderCall {
        step: "user_update",
        method: "PUT",
        url: format!("{}/api/v2/users/{}.json", s.base_url, id_text(user_id)),
        headers: headers(),
        body: CallBody::Json(body),
    }
}

/// `POST /api/v2/users/create_or_update.json`.
pub fn upsert_user_call(s: &ZendeskSettings, body: Value) -> ProviderCall {
    ProviderCall {
        step: "user_upsert",
        method: "POST",
        url: format!("{}/api/v2/users/create_or_update.json", s.base_url),
        headers: headers(),
        body: CallBody::Json(body),
    }
}

/// `POST /api/v2/tickets.json` with `Idempotency-Key`.
pub fn ticket_call(s: &ZendeskSettings, body: Value, idempotency_key: &str) -> ProviderCall {
    let mut h = headers();
    h.push((
        "Idempotency-Key".into(),
        HeaderValue::Plain(idempotency_key.to_string()),
    ));
    ProviderCall {
        step: "ticket",
        method: "POST",
        url: format!("{}/api/v2/tickets.json", s.base_url),
        headers: h,
        body: CallBody::Json(body),
    }
}

/// `PUT /api/v2/tickets/{id}.json` adding a public comment authored by the requester.
pub fn comment_call(
    s: &ZendeskSettings,
    ticket_id: &str,
    author_id: Option<&Value>,
    text: &str,
) -> ProviderCall {
    comment_with_uploads_call(s, ticket_id, author_id, text, &[])
}

/// [`comment_call`] carrying `uploads` tokens (the files uploaded for it).
pub fn comment_with_uploads_call(
    s: &ZendeskSettings,
    ticket_id: &str,
    author_id: Option<&Value>,
    text: &str,
    uploads: &[String],
) -> ProviderCall {
    let mut c = Map::new();
    c.insert("body".into(), json!(text));
    if let Some(a) = author_id {
        c.insert("author_id".into(), a.clone());
    }
    c.insert("public".into(), json!(true));
    if !uploads.is_empty() {
        c.insert("uploads".into(), json!(uploads));
    }
    ProviderCall {
        step: "comment",
        method: "PUT",
        url: format!("{}/api/v2/tickets/{ticket_id}.json", s.base_url),
        headers: headers(),
        body: CallBody::Json(json!({ "ticket": { "comment": c } })),
    }
}

/// The largest file Zendesk takes (50 MB, not configurable).
pub const MAX_UPLOAD_BYTES: u64 = 50 * 1024 * 1024;

/// `POST /api/v2/uploads?filename=…[&token=…]` with the raw bytes; later files of one
/// comment pass the first upload's token so one token carries them all.
pub fn upload_call(
    s: &ZendeskSettings,
    filename: &str,
    content_type: &str,
    token: Option<&str>,
    data: Vec<u8>,
) -> ProviderCall {
    use crate::providers::http::form_encode;
    let mut url = format!(
        "{}/api/v2/uploads?filename={}",
        s.base_url,
        form_encode(filename)
    );
    if let Some(t) = token {
        url.push_str(&format!("&token={}", form_encode(t)));
    }
    ProviderCall {
        step: "upload",
        method: "POST",
        url,
        headers: vec![
            (
                "Content-Type".into(),
                HeaderValue::Plain(content_type.to_string()),
            ),
            ("Authorization".into(), HeaderValue::Secret),
        ],
        body: CallBody::Bytes(data),
    }
}

/// `PUT /api/v2/tickets/{id}.json` adding a transcript part as a private comment.
pub fn transcript_call(s: &ZendeskSettings, ticket_id: &str, text: &str) -> ProviderCall {
    ProviderCall {
        step: "transcript",
        method: "PUT",
        url: format!("{}/api/v2/tickets/{ticket_id}.json", s.base_url),
        headers: headers(),
        body: CallBody::Json(json!({ "ticket": { "comment": { "body": text, "public": false } } })),
    }
}

/// `PUT /api/v2/tickets/{id}.json` setting the status (`solved` to close).
pub fn status_call(s: &ZendeskSettings, ticket_id: &str, status: &str) -> ProviderCall {
    ProviderCall {
        step: "status",
        method: "PUT",
        url: format!("{}/api/v2/tickets/{ticket_id}.json", s.base_url),
        headers: headers(),
        body: CallBody::Json(json!({ "ticket": { "status": status } })),
    }
}

/// `GET /api/v2/tickets/{id}.json` (status polling).
pub fn show_ticket_call(s: &ZendeskSettings, ticket_id: &str) -> ProviderCall {
    ProviderCall {
        step: "ticket_show",
        method: "GET",
        url: format!("{}/api/v2/tickets/{ticket_id}.json", s.base_url),
        headers: headers(),
        body: CallBody::None,
    }
}

/// `GET /api/v2/tickets.json?external_id=…` (research 2026-12 §4a: several tickets may
/// share one; up to 100 a page; its own limit of 100 requests a minute).
pub fn tickets_by_external_id_call(s: &ZendeskSettings, external_id: &str) -> ProviderCall {
    let base = format!("{}/api/v2/tickets.json", s.base_url);
    let url = match reqwest::Url::parse(&base) {
        Ok(mut u) => {
            u.query_pairs_mut().append_pair("external_id", external_id);
            u.to_string()
        }
        // A base URL the transport refuses anyway; the id is left as is.
        Err(_) => format!("{base}?external_id={external_id}"),
    };
    ProviderCall {
        step: "tickets_by_external_id",
        method: "GET",
        url,
        headers: headers(),
        body: CallBody::None,
    }
}

/// `PUT /api/v2/tickets/{id}.json`: solved, with a private note saying why.
pub fn close_with_note_call(s: &ZendeskSettings, ticket_id: &str, note: &str) -> ProviderCall {
    ProviderCall {
        step: "close_with_note",
        method: "PUT",
        url: format!("{}/api/v2/tickets/{ticket_id}.json", s.base_url),
        headers: headers(),
        body: CallBody::Json(
            json!({ "ticket": { "status": "solved", "comment": { "body": note, "public": false } } }),
        ),
    }
}

/// A ticket found by its `external_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketRef {
    /// The ticket id.
    pub id: String,
    /// `new`, `open`, `pending`, `hold`, `solved`, `closed`.
    pub status: String,
    /// Its requester (the author of the user's comments).
    pub requester_id: Option<Value>,
}

/// The tickets whose `external_id` is `external_id` (our create sets the handoff id), every
/// page (at most 10: a handoff makes one ticket, a few with retries).
pub(crate) async fn tickets_by_external_id(
    client: ClientCx<'_>,
    integration: &Integration,
    external_id: &str,
) -> Result<Vec<TicketRef>, ActionError> {
    let s = settings(integration)?;
    let label = "zendesk tickets by external_id";
    let mut call = tickets_by_external_id_call(s, external_id);
    let mut out = Vec::new();
    for _ in 0..10 {
        let r = send(client, s, label, &call, Retry::Safe).await?;
        let j = r.json.as_ref().ok_or_else(|| malformed(label, &r))?;
        let tickets = j
            .get("tickets")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(label, &r))?;
        for t in tickets {
            let id = match t.get("id") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(malformed(label, &r)),
            };
            // The list is filtered by the server; a ticket of another handoff is not ours.
            if t.get("external_id").and_then(Value::as_str) != Some(external_id) {
                continue;
            }
            out.push(TicketRef {
                id,
                status: t
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("open")
                    .to_string(),
                requester_id: t.get("requester_id").filter(|v| !v.is_null()).cloned(),
            });
        }
        // Only a next page on the same host is followed (never a credential elsewhere).
        match j.get("next_page").and_then(Value::as_str) {
            Some(next) if next.starts_with(&format!("{}/", s.base_url)) => {
                call.url = next.to_string();
            }
            _ => return Ok(out),
        }
    }
    Ok(out)
}

/// Solves a ticket with a private note (the reconcile's close of a ticket it does not adopt).
pub(crate) async fn close_with_note(
    client: ClientCx<'_>,
    integration: &Integration,
    ticket_id: &str,
    note: &str,
) -> Result<(), ActionError> {
    let s = settings(integration)?;
    let call = close_with_note_call(s, ticket_id, note);
    send(client, s, "zendesk close", &call, Retry::Safe)
        .await
        .map(|_| ())
}

/// The plan: user calls (if any) then the ticket; an upserted requester is `"{user.id}"`.
pub fn plan(
    s: &ZendeskSettings,
    params: &Map<String, Value>,
    cx: &HandoffCx,
) -> Result<StartPlan, ActionError> {
    let p = prepare_start(params, cx)?;
    let mut calls = Vec::new();
    let requester = match &p.requester {
        Requester::Id(id, update) => {
            if let Some(body) = update {
                calls.push(update_user_call(s, id, body.clone()));
            }
            Some(id.clone())
        }
        Requester::Upsert(body) => {
            calls.push(upsert_user_call(s, body.clone()));
            Some(json!("{user.id}"))
        }
        Requester::None => None,
    };
    calls.push(ticket_call(s, ticket_body(&p, requester), &cx.handoff_id));
    for text in &p.transcript {
        calls.push(transcript_call(s, "{ticket.id}", text));
    }
    Ok(StartPlan {
        calls,
        warnings: p.warnings,
    })
}

// ---- the provider --------------------------------------------------------------------

/// Zendesk Support: a ticket per handoff.
pub struct Zendesk;

fn settings(i: &Integration) -> Result<&ZendeskSettings, ActionError> {
    i.settings
        .get::<ZendeskSettings>()
        .ok_or_else(|| wrong_settings(KIND, i))
}

/// Sends a call with `Basic {email}/token:{api_token}`.
async fn send(
    client: ClientCx<'_>,
    s: &ZendeskSettings,
    label: &str,
    call: &ProviderCall,
    retry: Retry,
) -> Result<HttpResponse, ActionError> {
    let auth = format!(
        "Basic {}",
        STANDARD.encode(format!("{}/token:{}", s.email, s.api_token.expose()))
    );
    client
        .transport
        .send(label, call, retry, &move |_| Some(auth.clone()))
        .await
}

/// A ticket's status (`new`, `open`, `pending`, `hold`, `solved`, `closed`).
pub(crate) async fn ticket_status(
    client: ClientCx<'_>,
    integration: &Integration,
    ticket_id: &str,
) -> Result<String, ActionError> {
    let s = settings(integration)?;
    let call = show_ticket_call(s, ticket_id);
    let r = send(client, s, "zendesk ticket", &call, Retry::Safe).await?;
    r.json
        .as_ref()
        .and_then(|j| j.pointer("/ticket/status"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| malformed("zendesk ticket", &r))
}

#[async_trait]
impl Provider for Zendesk {
    fn name(&self) -> &'static str {
        "zendesk"
    }

    fn settings_keys(&self) -> &'static [&'static str] {
        &["base_url", "email", "api_token", "webhook_secret"]
    }

    fn parse_settings(&self, t: &SettingsTable<'_>) -> Result<ProviderSettings, ConfigError> {
        let base_url = t.required_url("base_url")?;
        let webhook_secret = t.optional_secret("webhook_secret")?;
        Ok(ProviderSettings::new(ZendeskSettings {
            base_url,
            email: t.required_string("email")?,
            api_token: t.required_secret("api_token")?,
            webhook_secret,
        }))
    }

    fn public_settings(&self, settings: &ProviderSettings) -> Value {
        match settings.get::<ZendeskSettings>() {
            Some(zd) => json!({"base_url": zd.base_url, "email": zd.email}),
            None => json!({}),
        }
    }

    fn webhooks(&self) -> Option<&'static dyn crate::providers::webhooks::WebhookReceiver> {
        Some(&webhooks::Receiver)
    }

    fn display_name(&self) -> &'static str {
        "Zendesk"
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        param_specs()
    }

    fn check_value(&self, name: &str, v: &Value) -> Result<(), ActionError> {
        check_value(name, v)
    }

    fn unsupported_note(&self, name: &str) -> Option<String> {
        match name {
            "extra_info" => {
                Some("`extra_info` is not supported by Zendesk and is ignored".to_string())
            }
            "contact_info" => {
                Some("`contact_info` is only sent to altu_sdk; ignored on zendesk".to_string())
            }
            _ => None,
        }
    }

    fn transcript_note(&self) -> Option<String> {
        Some(format!(
            "private comments, at most {TRANSCRIPT_COMMENT_LIMIT} bytes each"
        ))
    }

    fn plan(
        &self,
        integration: &Integration,
        params: &Map<String, Value>,
        cx: &HandoffCx,
    ) -> Result<StartPlan, ActionError> {
        plan(settings(integration)?, params, cx)
    }

    fn ok_result(&self, body: Value) -> Value {
        json!({ "response": { "body": body, "status": "ok" } })
    }

    fn error_result(&self, e: &ActionError) -> Value {
        json!({ "response": { "status": "error", "error": e.to_error_object() } })
    }

    fn simulated_result(&self, handoff_id: &str) -> Value {
        json!({"response": {"body": {"ticket": {"id": 0, "status": "new", "external_id": handoff_id}}, "status": "ok"}})
    }

    fn secrets(&self, settings: &ProviderSettings) -> Vec<String> {
        let Some(s) = settings.get::<ZendeskSettings>() else {
            return Vec::new();
        };
        let mut v = vec![
            s.api_token.expose().to_string(),
            STANDARD.encode(format!("{}/token:{}", s.email, s.api_token.expose())),
        ];
        if let Some(w) = &s.webhook_secret {
            v.push(w.expose().to_string());
        }
        v
    }

    async fn start(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        params: &Map<String, Value>,
        cx: &HandoffCx,
        warnings: &mut Vec<String>,
    ) -> Result<(Value, Handoff), ActionError> {
        let s = settings(integration)?;
        let p = prepare_start(params, cx)?;
        warnings.extend(p.warnings.iter().cloned());
        let requester = match &p.requester {
            Requester::Id(id, update) => {
                if let Some(body) = update {
                    let call = update_user_call(s, id, body.clone());
                    if let Err(e) = send(client, s, "zendesk user_update", &call, Retry::Safe).await
                    {
                        if matches!(e.kind, ErrorKind::Auth | ErrorKind::Config) {
                            return Err(e);
                        }
                        warnings.push(format!("`user_fields` not set: {}", e.message));
                    }
                }
                Some(id.clone())
            }
            Requester::Upsert(body) => {
                let call = upsert_user_call(s, body.clone());
                let label = "zendesk user_upsert";
                match send(client, s, label, &call, Retry::Safe).await {
                    Ok(r) => match r.json.as_ref().and_then(|j| j.pointer("/user/id")) {
                        Some(id @ (Value::Number(_) | Value::String(_))) => Some(id.clone()),
                        _ => {
                            warnings.push(format!(
                                "{label}: answer without user.id; the ticket is created without a requester"
                            ));
                            None
                        }
                    },
                    Err(e) if matches!(e.kind, ErrorKind::Auth | ErrorKind::Config) => {
                        return Err(e)
                    }
                    Err(e) => {
                        warnings.push(format!(
                            "{}; the ticket is created without a requester",
                            e.message
                        ));
                        None
                    }
                }
            }
            Requester::None => None,
        };
        let call = ticket_call(s, ticket_body(&p, requester.clone()), &cx.handoff_id);
        let label = "zendesk ticket";
        let r = send(client, s, label, &call, Retry::Safe).await?;
        let body = r.json.clone().ok_or_else(|| malformed(label, &r))?;
        let ticket_id = match body.pointer("/ticket/id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            _ => return Err(malformed(label, &r)),
        };
        let n = p.transcript.len();
        for (i, text) in p.transcript.iter().enumerate() {
            let call = transcript_call(s, &ticket_id, text);
            if let Err(e) = send(client, s, "zendesk transcript", &call, Retry::Unsafe).await {
                warnings.push(transcript_undelivered(i, n, &e));
                break;
            }
        }
        Ok((
            body,
            Handoff {
                requester_id: requester,
                ..Handoff::new(KIND, integration, ticket_id, cx)
            },
        ))
    }

    async fn send_user_message(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        text: &str,
    ) -> Result<(), ActionError> {
        let s = settings(integration)?;
        let call = comment_call(
            s,
            &handoff.provider_conversation_id,
            handoff.requester_id.as_ref(),
            text,
        );
        send(client, s, "zendesk comment", &call, Retry::Unsafe)
            .await
            .map(|_| ())
    }

    fn attachment_rule(
        &self,
        _integration: &Integration,
        _name: &str,
        _content_type: &str,
    ) -> Result<
        crate::providers::attachments::AttachmentRule,
        crate::providers::attachments::AttachmentRefusal,
    > {
        // The account's "Allowed file types" is an admin setting we cannot see: a type it
        // refuses comes back as the upload's error.
        Ok(crate::providers::attachments::AttachmentRule::Upload {
            max_bytes: MAX_UPLOAD_BYTES,
            takes: "files up to 50 MB (52428800 bytes)".into(),
        })
    }

    async fn send_user_content(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        msg: &crate::providers::attachments::UserMessage,
    ) -> Result<(), ActionError> {
        let s = settings(integration)?;
        // Uploads first, under one token; the one comment that carries it is what the
        // agent sees, so a failed upload announces nothing (Zendesk drops unused uploads).
        let mut token: Option<String> = None;
        let mut links = Vec::new();
        for a in &msg.attachments {
            if let Some(l) = &a.link {
                links.push(format!("{}: {l}", a.name));
                continue;
            }
            let label = "zendesk upload";
            let call = upload_call(
                s,
                &a.name,
                &a.content_type,
                token.as_deref(),
                a.data.clone(),
            );
            let r = send(client, s, label, &call, Retry::Unsafe).await?;
            let t = r
                .json
                .as_ref()
                .and_then(|j| j.pointer("/upload/token"))
                .and_then(Value::as_str)
                .ok_or_else(|| malformed(label, &r))?;
            token = Some(t.to_string());
        }
        let mut body = msg.text.clone().unwrap_or_default();
        for l in links {
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str(&l);
        }
        if body.is_empty() {
            // A comment needs a body; the files speak for themselves.
            body = msg
                .attachments
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
        }
        let uploads: Vec<String> = token.into_iter().collect();
        let call = comment_with_uploads_call(
            s,
            &handoff.provider_conversation_id,
            handoff.requester_id.as_ref(),
            &body,
            &uploads,
        );
        send(client, s, "zendesk comment", &call, Retry::Unsafe)
            .await
            .map(|_| ())
    }

    async fn close(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        _reason: CloseReason,
    ) -> Result<(), ActionError> {
        let s = settings(integration)?;
        let call = status_call(s, &handoff.provider_conversation_id, "solved");
        send(client, s, "zendesk close", &call, Retry::Safe)
            .await
            .map(|_| ())
    }
}

/// Its webhooks (`POST /webhooks/zendesk/{integration_id}`):
/// `x-zendesk-webhook-signature` is the base64 HMAC-SHA256 of timestamp + body keyed by
/// `webhook_secret` (none configured: refused), the timestamp within the replay window.
mod webhooks {
    use super::ZendeskSettings;
    use crate::providers::auth;
    use crate::providers::webhooks::{
        parse_zendesk, Refusal, Verified, WebhookReceiver, WebhookRequest,
    };

    pub(super) struct Receiver;

    impl WebhookReceiver for Receiver {
        fn segment(&self) -> &'static str {
            "zendesk"
        }

        fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Refusal> {
            let secret = req.secret(|s: &ZendeskSettings| s.webhook_secret.as_ref())?;
            auth::verify_zendesk(
                secret,
                req.header("x-zendesk-webhook-signature"),
                req.header("x-zendesk-webhook-signature-timestamp"),
                req.body,
                req.now_ms,
                req.config.zendesk_replay_window_s,
            )?;
            Ok(Verified::events(parse_zendesk(req.body)?))
        }
    }
}
