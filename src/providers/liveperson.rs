//! LivePerson Connector API request builders (provider-contracts §1).
//!
//! Call order: CSDS → AppJWT (Sentinel) → ConsumerJWS (IdP) → CONVERSATION → SEND.
//!
//! Mapping decisions (also in the appendix of `docs/connector-protocol.md`):
//! - `ext_consumer_id` = `contact.id`, else `contact.phone`, else `contact.email`, else the
//!   builder's conversation id: the most stable identifier of the person we have.
//! - The contact goes into `userprofile.SetUserProfile`: `firstName`/`lastName` (name split
//!   at the first space), `privateData.mobileNum`/`mail`, and the `personal` SDE
//!   (`firstname`, `lastname`, `contacts[{email,phone}]`) so agents see it in the
//!   consumer-info widget.
//! - `extra_info` (compact JSON, ≤ 256 characters, else `""` and a warning) goes into the
//!   SetUserProfile `description`, the free-text field shown to agents.
//! - `agent` (number or string, kept as given) goes into
//!   `cm.ConsumerRequestConversation.body.conversationContext` as
//!   `{"type":"CustomContext","agentId":…}`, with `ttrDefName` left at LivePerson's
//!   default; routing rules on the account match it. **\[INFERRED\]**: confirm on a sandbox.
//! - `skill_id` (kept as given) → `skillId`, default `"-1"`; `campaign_info.campaign_id` /
//!   `engagement_id` → `campaignInfo` (left out when both are unset).
//! - `transcript` → consumer text messages (`ms.PublishEvent`, `text/plain`) published right
//!   after `start_message`, each a block of lines under a header, at most
//!   [`TRANSCRIPT_MESSAGE_LIMIT`] bytes. Not a conversation SDE: the contract has only the
//!   `ctmrinfo` and `personal` SDE types (provider-contracts §1.3), neither holds a list
//!   of messages, and the free-text `description` is 256 characters and already carries
//!   `extra_info`. Messages are what every agent workspace shows, in order.

use serde_json::{json, Map, Value};

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::flow::spec::{ParamSpec, ParamType};
use crate::providers::attachments::{AttachmentRefusal, AttachmentRule, UserMessage};
use crate::providers::call::{
    config_err, contact_text, id_value, is_absent, limited_json, opt, text_value, type_name,
    CallBody, HandoffCx, HeaderValue, ProviderCall, StartPlan, REDACTED,
};
use crate::providers::config::{
    ConfigError, Integration, ProviderKind, ProviderSettings, Secret, SettingsTable,
};
use crate::providers::http::{HttpResponse, Retry};
use crate::providers::jwt;
use crate::providers::provider::{
    malformed, transcript_undelivered, wrong_settings, ClientCx, CloseReason, Handoff, Provider,
};
use crate::providers::transcript;
use crate::providers::{ActionError, ErrorKind};

/// Default CSDS (domain discovery) base URL.
pub const DEFAULT_CSDS_URL: &str = "https://api.liveperson.net";

/// Its handle in the registry (`provider = "liveperson"`).
pub const KIND: ProviderKind = ProviderKind::of(&LivePerson);

/// LivePerson credentials and endpoints: the keys of a `provider = "liveperson"` table.
#[derive(Debug, Clone)]
pub struct LivePersonSettings {
    /// The LivePerson account (site) id; also the `brandId`.
    pub account_id: String,
    /// The app install's client id (Sentinel client credentials).
    pub client_id: String,
    /// The app install's client secret; also the webhook signing key.
    pub client_secret: Secret,
    /// CSDS base URL (default [`DEFAULT_CSDS_URL`]); a plain `http://` URL (local fake)
    /// makes the discovered domains `http://` too.
    pub csds_url: String,
    /// Send a user's file LivePerson cannot host (not JPG/PNG/GIF) as a link: a
    /// `text/plain` message with the `url` the builder gave (default `false`: refused).
    pub attachments_as_links: bool,
    /// Brand API keys for the Messaging Interactions API (the crash reconcile's consumer
    /// search); `None` when not configured (all four `interactions_*` keys or none).
    pub interactions: Option<InteractionsKeys>,
    /// How long after a handoff began an empty search is not trusted (the API's
    /// indexing lag; `interactions_lag_s`, default 60).
    pub interactions_lag_s: u64,
}

/// OAuth 1.0a brand API keys (LivePerson "API key" of the Messaging Interactions API).
#[derive(Debug, Clone)]
pub struct InteractionsKeys {
    /// App key (`oauth_consumer_key`).
    pub app_key: Secret,
    /// Secret.
    pub app_secret: Secret,
    /// Access token (`oauth_token`).
    pub access_token: Secret,
    /// Access token secret.
    pub access_token_secret: Secret,
}

/// The `interactions_*` keys, all required together.
const INTERACTIONS_KEYS: [&str; 4] = [
    "interactions_app_key",
    "interactions_app_secret",
    "interactions_access_token",
    "interactions_access_token_secret",
];

/// The largest file LivePerson hosts (`hosted/file`): 3 MB.
pub const MAX_HOSTED_FILE_BYTES: u64 = 3 * 1024 * 1024;

/// A `hosted/file` preview must stay under 30 KB: an image that small is its own preview.
const MAX_PREVIEW_BYTES: usize = 30 * 1000;

/// The LivePerson `fileType` of a MIME type it hosts.
fn hosted_file_type(content_type: &str) -> Option<&'static str> {
    match content_type {
        "image/jpeg" | "image/jpg" => Some("JPG"),
        "image/png" => Some("PNG"),
        "image/gif" => Some("GIF"),
        _ => None,
    }
}

/// SEND `ms.GenerateURLForUploadFile` (`fileSize` is a string, as documented).
pub fn upload_url_call(
    s: &LivePersonSettings,
    msg_base: &str,
    req_id: &str,
    size: usize,
    file_type: &str,
) -> ProviderCall {
    send_call(
        s,
        msg_base,
        "upload_url",
        json!({
            "kind": "req", "id": req_id, "type": "ms.GenerateURLForUploadFile",
            "body": { "fileSize": size.to_string(), "fileType": file_type }
        }),
    )
}

/// SEND `ms.GenerateURLForDownloadFile`.
pub fn download_url_call(
    s: &LivePersonSettings,
    msg_base: &str,
    req_id: &str,
    relative_path: &str,
) -> ProviderCall {
    send_call(
        s,
        msg_base,
        "download_url",
        json!({
            "kind": "req", "id": req_id, "type": "ms.GenerateURLForDownloadFile",
            "body": { "relativePath": relative_path }
        }),
    )
}

/// SEND a `ms.PublishEvent` with any event on the MAIN dialog.
pub fn event_call(
    s: &LivePersonSettings,
    msg_base: &str,
    step: &'static str,
    conversation_id: &str,
    req_id: &str,
    event: Value,
) -> ProviderCall {
    send_call(
        s,
        msg_base,
        step,
        json!({
            "kind": "req", "id": req_id, "type": "ms.PublishEvent",
            "body": { "dialogId": conversation_id, "event": event }
        }),
    )
}

/// The storage (`swift`) URL of a file: `{swift}{relativePath}?temp_url_sig=…&temp_url_expires=…`
/// from a GenerateURLFor…File answer's body.
fn storage_url(swift: &str, body: &Value) -> Option<String> {
    let path = body.get("relativePath").and_then(Value::as_str)?;
    let q = body.get("queryParams")?;
    let sig = q.get("temp_url_sig").and_then(Value::as_str)?;
    let exp = match q.get("temp_url_expires")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let sep = if path.starts_with('/') { "" } else { "/" };
    Some(format!(
        "{swift}{sep}{path}?temp_url_sig={}&temp_url_expires={}",
        crate::providers::http::form_encode(sig),
        crate::providers::http::form_encode(&exp)
    ))
}

/// The parameters it understands besides the common ones, with types and descriptions:
/// the table the checks, the JSON Schema and docs/flow-authors.md come from.
pub fn param_specs() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new(
            "skill_id",
            ParamType::Id,
            "Routing skill (`skillId`), kept as given; unset: \"-1\", any skill.",
        ),
        ParamSpec::new(
            "agent",
            ParamType::Id,
            "An agent id, sent as `conversationContext {\"type\":\"CustomContext\",\"agentId\":…}` for the account's routing rules.",
        ),
        ParamSpec::new(
            "campaign_info",
            ParamType::fields(vec![
                ParamSpec::new("campaign_id", ParamType::Id, "`campaignInfo.campaignId`."),
                ParamSpec::new("engagement_id", ParamType::Id, "`campaignInfo.engagementId`."),
            ]),
            "`campaignInfo` of the conversation request; left out when both ids are unset.",
        ),
        ParamSpec::new(
            "extra_info",
            ParamType::OneOf(vec![
                ParamType::Object,
                ParamType::ArrayOf(Box::new(ParamType::Any)),
                ParamType::String,
                ParamType::Number,
            ]),
            format!("Compact JSON in the user profile `description` shown to agents; over {EXTRA_INFO_LIMIT} characters it is sent empty, with a warning."),
        ),
    ]
}

/// Seed rule: `extra_info` JSON longer than this is replaced by an empty value.
pub const EXTRA_INFO_LIMIT: usize = 256;

/// Largest transcript message, in UTF-8 bytes. **Assumption**: LivePerson documents no
/// size limit for a `text/plain` `ContentEvent` sent through the Send API
/// (provider-contracts §1.4 is silent); 4,000 bytes stays well under the limits of the
/// channels agents answer on and keeps each message readable in the agent workspace.
pub const TRANSCRIPT_MESSAGE_LIMIT: usize = 4000;

/// `reqId` of the first transcript `ms.PublishEvent`; later parts count up from it.
pub const TRANSCRIPT_FIRST_REQ_ID: u64 = 4;

/// `reqId` of the SetUserProfile entry in the CONVERSATION array.
pub const PROFILE_REQ_ID: &str = "1";
/// `reqId` of the ConsumerRequestConversation entry; the result is matched on it.
pub const REQUEST_CONVERSATION_REQ_ID: &str = "2";

/// Everything a handoff sends, computed once from the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LpStart {
    /// The consumer identity for the ConsumerJWS.
    pub ext_consumer_id: String,
    /// The CONVERSATION request array.
    pub conversation_body: Value,
    /// The first message to the agent, when non-empty.
    pub start_message: Option<String>,
    /// The transcript messages, in order (empty without a transcript).
    pub transcript: Vec<String>,
    /// Warnings for the trace.
    pub warnings: Vec<String>,
}

/// Validates one literal parameter value (load-time check and run time share it).
pub fn check_value(name: &str, v: &Value) -> Result<(), ActionError> {
    if is_absent(v) {
        return Ok(());
    }
    match name {
        "skill_id" | "agent" => id_value(name, v).map(|_| ()),
        "start_message" => text_value(name, v).map(|_| ()),
        "campaign_info" => campaign_info(v).map(|_| ()),
        "extra_info" => extra_info_type(v),
        _ => Ok(()),
    }
}

fn extra_info_type(v: &Value) -> Result<(), ActionError> {
    match v {
        Value::Object(_) | Value::Array(_) | Value::String(_) | Value::Number(_) => Ok(()),
        _ => Err(config_err(format!(
            "`extra_info` must be an object, array, string or number, got {}",
            type_name(v)
        ))),
    }
}

fn campaign_info(v: &Value) -> Result<Option<Value>, ActionError> {
    let Value::Object(o) = v else {
        return Err(config_err(format!(
            "`campaign_info` must be an object {{campaign_id, engagement_id}}, got {}",
            type_name(v)
        )));
    };
    let mut out = Map::new();
    for (k, wire) in [
        ("campaign_id", "campaignId"),
        ("engagement_id", "engagementId"),
    ] {
        if let Some(x) = o.get(k).filter(|x| !is_absent(x)) {
            out.insert(wire.into(), id_value(&format!("campaign_info.{k}"), x)?);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// The consumer identity: contact id, phone, email, else the conversation id.
pub fn ext_consumer_id(cx: &HandoffCx) -> String {
    ["id", "phone", "email"]
        .iter()
        .find_map(|k| contact_text(&cx.contact, k))
        .unwrap_or_else(|| cx.conversation_id.clone())
}

/// Builds the handoff's bodies from the rendered parameters.
pub fn prepare_start(
    s: &LivePersonSettings,
    params: &Map<String, Value>,
    cx: &HandoffCx,
) -> Result<LpStart, ActionError> {
    let mut warnings = Vec::new();
    for (k, v) in params {
        // `check_value` knows exactly this provider's parameters (and `start_message`).
        check_value(k, v)?;
    }

    let mut profile = Map::new();
    let name = contact_text(&cx.contact, "name");
    let (first, last) = match &name {
        Some(n) => match n.split_once(' ') {
            Some((f, l)) => (Some(f.to_string()), Some(l.trim().to_string())),
            None => (Some(n.clone()), None),
        },
        None => (None, None),
    };
    let email = contact_text(&cx.contact, "email");
    let phone = contact_text(&cx.contact, "phone");
    if let Some(f) = &first {
        profile.insert("firstName".into(), json!(f));
    }
    if let Some(l) = &last {
        profile.insert("lastName".into(), json!(l));
    }
    if let Some(x) = opt(params, "extra_info") {
        let text = limited_json(
            "extra_info",
            x,
            EXTRA_INFO_LIMIT,
            KIND.as_str(),
            &mut warnings,
        );
        profile.insert("description".into(), json!(text));
    }
    let mut private = Map::new();
    if let Some(p) = &phone {
        private.insert("mobileNum".into(), json!(p));
    }
    if let Some(e) = &email {
        private.insert("mail".into(), json!(e));
    }
    if !private.is_empty() {
        profile.insert("privateData".into(), Value::Object(private));
    }
    let mut personal = Map::new();
    if let Some(f) = &first {
        personal.insert("firstname".into(), json!(f));
    }
    if let Some(l) = &last {
        personal.insert("lastname".into(), json!(l));
    }
    let mut contact = Map::new();
    if let Some(e) = &email {
        contact.insert("email".into(), json!(e));
    }
    if let Some(p) = &phone {
        contact.insert("phone".into(), json!(p));
    }
    if !contact.is_empty() {
        personal.insert("contacts".into(), json!([contact]));
    }
    if !personal.is_empty() {
        profile.insert(
            "authenticatedData".into(),
            json!({ "lp_sdes": [ { "type": "personal", "personal": personal } ] }),
        );
    }

    let mut req = Map::new();
    req.insert("brandId".into(), json!(s.account_id));
    req.insert("channelType".into(), json!("MESSAGING"));
    let skill = match opt(params, "skill_id") {
        Some(v) => id_value("skill_id", v)?,
        None => json!("-1"),
    };
    req.insert("skillId".into(), skill);
    if let Some(ci) = opt(params, "campaign_info") {
        if let Some(c) = campaign_info(ci)? {
            req.insert("campaignInfo".into(), c);
        }
    }
    if let Some(a) = opt(params, "agent") {
        req.insert(
            "conversationContext".into(),
            json!({ "type": "CustomContext", "agentId": id_value("agent", a)? }),
        );
    }

    let conversation_body = json!([
        { "kind": "req", "id": PROFILE_REQ_ID, "type": "userprofile.SetUserProfile", "body": profile },
        { "kind": "req", "id": REQUEST_CONVERSATION_REQ_ID, "type": "cm.ConsumerRequestConversation", "body": req },
    ]);
    let start_message = match opt(params, "start_message") {
        Some(v) => Some(text_value("start_message", v)?).filter(|t| !t.is_empty()),
        None => None,
    };
    let (transcript, tw) = transcript::text_for(params, TRANSCRIPT_MESSAGE_LIMIT)?;
    warnings.extend(tw);
    Ok(LpStart {
        ext_consumer_id: ext_consumer_id(cx),
        conversation_body,
        start_message,
        transcript,
        warnings,
    })
}

/// `https` normally; `http` when the CSDS URL is plain http (a local fake).
pub fn scheme(s: &LivePersonSettings) -> &'static str {
    if s.csds_url.starts_with("http://") {
        "http"
    } else {
        "https"
    }
}

/// The base URL of a discovered service domain (`{scheme}://{host}`).
pub fn service_base(s: &LivePersonSettings, host: &str) -> String {
    format!("{}://{}", scheme(s), host)
}

/// CSDS: all service domains of the account.
pub fn csds_call(s: &LivePersonSettings) -> ProviderCall {
    ProviderCall {
        step: "csds",
        method: "GET",
        url: format!(
            "{}/api/account/{}/service/baseURI.json?version=1.0",
            s.csds_url, s.account_id
        ),
        headers: vec![(
            "Accept".into(),
            HeaderValue::Plain("application/json".into()),
        )],
        body: CallBody::None,
    }
}

/// Sentinel AppJWT (client credentials in the form body; both redacted here).
pub fn app_jwt_call(s: &LivePersonSettings, sentinel_base: &str) -> ProviderCall {
    ProviderCall {
        step: "app_jwt",
        method: "POST",
        url: format!(
            "{sentinel_base}/sentinel/api/account/{}/app/token?v=1.0&grant_type=client_credentials",
            s.account_id
        ),
        headers: vec![(
            "Content-Type".into(),
            HeaderValue::Plain("application/x-www-form-urlencoded".into()),
        )],
        body: CallBody::Form(vec![
            ("client_id".into(), REDACTED.into()),
            ("client_secret".into(), REDACTED.into()),
        ]),
    }
}

/// IdP ConsumerJWS for one consumer (`Authorization` = AppJWT).
pub fn consumer_jws_call(
    s: &LivePersonSettings,
    idp_base: &str,
    ext_consumer_id: &str,
) -> ProviderCall {
    ProviderCall {
        step: "consumer_jws",
        method: "POST",
        url: format!("{idp_base}/api/account/{}/consumer?v=1.0", s.account_id),
        headers: vec![
            (
                "Content-Type".into(),
                HeaderValue::Plain("application/json".into()),
            ),
            ("Authorization".into(), HeaderValue::Secret),
        ],
        body: CallBody::Json(json!({ "ext_consumer_id": ext_consumer_id })),
    }
}

fn send_api_headers() -> Vec<(String, HeaderValue)> {
    vec![
        (
            "Content-Type".into(),
            HeaderValue::Plain("application/json".into()),
        ),
        ("Authorization".into(), HeaderValue::Secret),
        ("X-LP-ON-BEHALF".into(), HeaderValue::Secret),
    ]
}

/// CONVERSATION: SetUserProfile + ConsumerRequestConversation.
pub fn conversation_call(s: &LivePersonSettings, msg_base: &str, body: Value) -> ProviderCall {
    ProviderCall {
        step: "conversation",
        method: "POST",
        url: format!(
            "{msg_base}/api/account/{}/messaging/consumer/conversation?v=3",
            s.account_id
        ),
        headers: send_api_headers(),
        body: CallBody::Json(body),
    }
}

fn send_call(
    s: &LivePersonSettings,
    msg_base: &str,
    step: &'static str,
    body: Value,
) -> ProviderCall {
    ProviderCall {
        step,
        method: "POST",
        url: format!(
            "{msg_base}/api/account/{}/messaging/consumer/conversation/send?v=3",
            s.account_id
        ),
        headers: send_api_headers(),
        body: CallBody::Json(body),
    }
}

/// SEND `ms.PublishEvent` text message on the MAIN dialog.
pub fn publish_call(
    s: &LivePersonSettings,
    msg_base: &str,
    conversation_id: &str,
    req_id: &str,
    text: &str,
) -> ProviderCall {
    text_call(s, msg_base, "send", conversation_id, req_id, text)
}

/// SEND part `index` (from 0) of the transcript, a consumer text message.
pub fn transcript_call(
    s: &LivePersonSettings,
    msg_base: &str,
    conversation_id: &str,
    index: usize,
    text: &str,
) -> ProviderCall {
    let req_id = (TRANSCRIPT_FIRST_REQ_ID + index as u64).to_string();
    text_call(s, msg_base, "transcript", conversation_id, &req_id, text)
}

fn text_call(
    s: &LivePersonSettings,
    msg_base: &str,
    step: &'static str,
    conversation_id: &str,
    req_id: &str,
    text: &str,
) -> ProviderCall {
    send_call(
        s,
        msg_base,
        step,
        json!({
            "kind": "req", "id": req_id, "type": "ms.PublishEvent",
            "body": {
                "dialogId": conversation_id,
                "event": { "type": "ContentEvent", "contentType": "text/plain", "message": text }
            }
        }),
    )
}

/// SEND `cm.UpdateConversationField` CLOSE (the object form, as LivePerson's examples).
pub fn close_call(
    s: &LivePersonSettings,
    msg_base: &str,
    conversation_id: &str,
    req_id: &str,
) -> ProviderCall {
    send_call(
        s,
        msg_base,
        "close",
        json!({
            "kind": "req", "id": req_id, "type": "cm.UpdateConversationField",
            "body": {
                "conversationId": conversation_id,
                "conversationField": { "field": "ConversationStateField", "conversationState": "CLOSE" }
            }
        }),
    )
}

/// The plan: every call with discovered domains and tokens as placeholders.
pub fn plan(
    s: &LivePersonSettings,
    params: &Map<String, Value>,
    cx: &HandoffCx,
) -> Result<StartPlan, ActionError> {
    let p = prepare_start(s, params, cx)?;
    let sentinel = service_base(s, "{sentinel}");
    let idp = service_base(s, "{idp}");
    let msg = service_base(s, "{asyncMessagingEnt}");
    let mut calls = vec![
        csds_call(s),
        app_jwt_call(s, &sentinel),
        consumer_jws_call(s, &idp, &p.ext_consumer_id),
        conversation_call(s, &msg, p.conversation_body.clone()),
    ];
    if let Some(text) = &p.start_message {
        calls.push(publish_call(s, &msg, "{conversationId}", "3", text));
    }
    for (i, text) in p.transcript.iter().enumerate() {
        calls.push(transcript_call(s, &msg, "{conversationId}", i, text));
    }
    Ok(StartPlan {
        calls,
        warnings: p.warnings,
    })
}

/// The four `interactions_*` keys: all or none (an error names the missing ones, at the
/// first given key).
fn interactions_keys(t: &SettingsTable<'_>) -> Result<Option<InteractionsKeys>, ConfigError> {
    let given: Vec<&str> = INTERACTIONS_KEYS
        .iter()
        .copied()
        .filter(|k| t.get(k).is_some())
        .collect();
    if given.is_empty() {
        return Ok(None);
    }
    if given.len() < INTERACTIONS_KEYS.len() {
        let missing: Vec<String> = INTERACTIONS_KEYS
            .iter()
            .filter(|k| !given.contains(k))
            .map(|k| format!("`{k}`"))
            .collect();
        return Err(t.error(
            t.get(given[0]).map(|v| v.span()),
            format!(
                "the Messaging Interactions API keys go together: {} missing (give all four \
                 `interactions_*` keys, or none)",
                missing.join(", ")
            ),
        ));
    }
    Ok(Some(InteractionsKeys {
        app_key: t.required_secret(INTERACTIONS_KEYS[0])?,
        app_secret: t.required_secret(INTERACTIONS_KEYS[1])?,
        access_token: t.required_secret(INTERACTIONS_KEYS[2])?,
        access_token_secret: t.required_secret(INTERACTIONS_KEYS[3])?,
    }))
}

// ---- the provider --------------------------------------------------------------------

/// LivePerson Messaging through the Connector API.
pub struct LivePerson;

fn settings(i: &Integration) -> Result<&LivePersonSettings, ActionError> {
    i.settings
        .get::<LivePersonSettings>()
        .ok_or_else(|| wrong_settings(KIND, i))
}

#[async_trait]
impl Provider for LivePerson {
    fn name(&self) -> &'static str {
        "liveperson"
    }

    fn settings_keys(&self) -> &'static [&'static str] {
        &[
            "account_id",
            "client_id",
            "client_secret",
            "csds_url",
            "attachments_as_links",
            "interactions_app_key",
            "interactions_app_secret",
            "interactions_access_token",
            "interactions_access_token_secret",
            "interactions_lag_s",
        ]
    }

    fn parse_settings(&self, t: &SettingsTable<'_>) -> Result<ProviderSettings, ConfigError> {
        let account_id = t.required_id("account_id")?;
        let csds_url = t
            .optional_url("csds_url")?
            .unwrap_or_else(|| DEFAULT_CSDS_URL.to_string());
        Ok(ProviderSettings::new(LivePersonSettings {
            account_id,
            client_id: t.required_string("client_id")?,
            client_secret: t.required_secret("client_secret")?,
            csds_url,
            attachments_as_links: t.optional_bool("attachments_as_links")?.unwrap_or(false),
            interactions: interactions_keys(t)?,
            interactions_lag_s: match t.get("interactions_lag_s") {
                None => 60,
                Some(v) => {
                    match v.get_ref().as_integer() {
                        Some(n) if (0..=3600).contains(&n) => n as u64,
                        _ => return Err(t.error(
                            Some(v.span()),
                            "`interactions_lag_s` must be a whole number of seconds from 0 to 3600",
                        )),
                    }
                }
            },
        }))
    }

    fn public_settings(&self, settings: &ProviderSettings) -> Value {
        match settings.get::<LivePersonSettings>() {
            Some(lp) => json!({
                "account_id": lp.account_id, "client_id": lp.client_id,
                "csds_url": lp.csds_url, "attachments_as_links": lp.attachments_as_links,
                "interactions": lp.interactions.is_some(), "interactions_lag_s": lp.interactions_lag_s,
            }),
            None => json!({}),
        }
    }

    fn webhooks(&self) -> Option<&'static dyn crate::providers::webhooks::WebhookReceiver> {
        Some(&webhooks::Receiver)
    }

    fn display_name(&self) -> &'static str {
        "LivePerson"
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        param_specs()
    }

    fn check_value(&self, name: &str, v: &Value) -> Result<(), ActionError> {
        check_value(name, v)
    }

    fn transcript_note(&self) -> Option<String> {
        Some(format!("consumer messages after `start_message`, at most {TRANSCRIPT_MESSAGE_LIMIT} bytes each"))
    }

    fn json_limit(&self, name: &str) -> Option<usize> {
        (name == "extra_info").then_some(EXTRA_INFO_LIMIT)
    }

    fn unsupported_note(&self, name: &str) -> Option<String> {
        (name == "contact_info")
            .then(|| "`contact_info` is only sent to altu_sdk; ignored on liveperson".to_string())
    }

    fn plan(
        &self,
        integration: &Integration,
        params: &Map<String, Value>,
        cx: &HandoffCx,
    ) -> Result<StartPlan, ActionError> {
        plan(settings(integration)?, params, cx)
    }

    fn simulated_result(&self, handoff_id: &str) -> Value {
        json!({"status": "ok", "body": {"reqId": REQUEST_CONVERSATION_REQ_ID, "code": "OK", "body": {"conversationId": format!("{handoff_id}-conversation")}}})
    }

    fn secrets(&self, settings: &ProviderSettings) -> Vec<String> {
        match settings.get::<LivePersonSettings>() {
            Some(s) => {
                let mut v = vec![s.client_secret.expose().to_string()];
                if let Some(k) = &s.interactions {
                    v.extend(
                        [
                            &k.app_key,
                            &k.app_secret,
                            &k.access_token,
                            &k.access_token_secret,
                        ]
                        .map(|x| x.expose().to_string()),
                    );
                }
                v
            }
            None => Vec::new(),
        }
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
        let p = prepare_start(s, params, cx)?;
        warnings.extend(p.warnings.iter().cloned());
        let d = domains(client, s).await?;
        let call = conversation_call(s, &d.msg, p.conversation_body.clone());
        let label = "liveperson conversation";
        let r = send(
            client,
            s,
            &d,
            &p.ext_consumer_id,
            &call,
            Retry::Unsafe,
            label,
        )
        .await?;
        let entries = r
            .json
            .as_ref()
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(label, &r))?;
        let entry = entries
            .iter()
            .find(|e| {
                e.get("reqId").map(req_id_text).as_deref() == Some(REQUEST_CONVERSATION_REQ_ID)
            })
            .ok_or_else(|| malformed(label, &r))?;
        let code_ok = entry.get("code").is_some_and(|c| c == "OK" || c == 200);
        if !code_ok {
            return Err(ActionError::new(
                ErrorKind::Rejected,
                format!("{label}: conversation request refused"),
            )
            .with_status(r.status)
            .with_body(r.body_value()));
        }
        let conversation_id = entry
            .pointer("/body/conversationId")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty() && c.len() <= 64)
            .ok_or_else(|| malformed(label, &r))?
            .to_string();
        if let Some(text) = &p.start_message {
            let call = publish_call(s, &d.msg, &conversation_id, "3", text);
            let sent = send_checked(
                client,
                s,
                &d,
                &p.ext_consumer_id,
                &call,
                Retry::Unsafe,
                "liveperson send",
            )
            .await;
            if let Err(e) = sent {
                warnings.push(format!(
                    "the conversation was opened but `start_message` was not delivered: {}",
                    e.message
                ));
            }
        }
        let n = p.transcript.len();
        for (i, text) in p.transcript.iter().enumerate() {
            let call = transcript_call(s, &d.msg, &conversation_id, i, text);
            let sent = send_checked(
                client,
                s,
                &d,
                &p.ext_consumer_id,
                &call,
                Retry::Unsafe,
                "liveperson transcript",
            )
            .await;
            if let Err(e) = sent {
                // Later parts without the earlier ones would mislead the agent.
                warnings.push(transcript_undelivered(i, n, &e));
                break;
            }
        }
        let body = json!({
            "reqId": entry.get("reqId").cloned().unwrap_or(Value::Null),
            "code": entry.get("code").cloned().unwrap_or(Value::Null),
            "body": { "conversationId": conversation_id },
        });
        Ok((
            body,
            Handoff {
                consumer_token_key: Some(p.ext_consumer_id),
                ..Handoff::new(KIND, integration, conversation_id, cx)
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
        let d = domains(client, s).await?;
        let call = publish_call(
            s,
            &d.msg,
            &handoff.provider_conversation_id,
            &uuid::Uuid::new_v4().to_string(),
            text,
        );
        let ext = consumer_key(handoff)?;
        send_checked(client, s, &d, ext, &call, Retry::Unsafe, "liveperson send").await
    }

    fn attachment_rule(
        &self,
        integration: &Integration,
        name: &str,
        content_type: &str,
    ) -> Result<AttachmentRule, AttachmentRefusal> {
        let links = settings(integration).is_ok_and(|s| s.attachments_as_links);
        if hosted_file_type(content_type).is_some() {
            return Ok(AttachmentRule::Upload {
                max_bytes: MAX_HOSTED_FILE_BYTES,
                takes: "JPG, PNG and GIF images up to 3 MB (3145728 bytes)".into(),
            });
        }
        if links {
            return Ok(AttachmentRule::Link);
        }
        Err(AttachmentRefusal::Type {
            name: name.to_string(),
            content_type: content_type.to_string(),
            provider: "LivePerson".into(),
            takes: "JPG, PNG and GIF images up to 3 MB (other files go as links, with a `url`, \
                    where the integration sets `attachments_as_links = true`)"
                .into(),
        })
    }

    async fn send_user_content(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        msg: &UserMessage,
    ) -> Result<(), ActionError> {
        let s = settings(integration)?;
        let d = domains(client, s).await?;
        let ext = consumer_key(handoff)?;
        let conv = &handoff.provider_conversation_id;
        // Every file is stored first; the events announcing them are published only once
        // all are stored, so a failed upload leaves no message pointing at nothing.
        let mut events = Vec::new();
        for a in &msg.attachments {
            if let Some(link) = &a.link {
                events.push(json!({"type": "ContentEvent", "contentType": "text/plain",
                                   "message": format!("{}: {link}", a.name)}));
                continue;
            }
            let file_type = hosted_file_type(&a.content_type).ok_or_else(|| {
                ActionError::new(
                    ErrorKind::Config,
                    format!("LivePerson does not host `{}`", a.content_type),
                )
            })?;
            let swift = d.swift.as_deref().ok_or_else(|| {
                ActionError::new(
                    ErrorKind::Unavailable,
                    "liveperson csds: service `swift` (file storage) not listed for the account",
                )
            })?;
            let label = "liveperson upload_url";
            let call = upload_url_call(
                s,
                &d.msg,
                &uuid::Uuid::new_v4().to_string(),
                a.data.len(),
                file_type,
            );
            let r = send(client, s, &d, ext, &call, Retry::Safe, label).await?;
            check_code(&r, label)?;
            let body = r
                .json
                .as_ref()
                .and_then(|j| j.get("body"))
                .cloned()
                .unwrap_or(Value::Null);
            let url = storage_url(swift, &body).ok_or_else(|| malformed(label, &r))?;
            let relative_path = body.get("relativePath").cloned().unwrap_or(Value::Null);
            let put = ProviderCall {
                step: "upload",
                method: "PUT",
                url,
                headers: vec![(
                    "Content-Type".into(),
                    HeaderValue::Plain(a.content_type.clone()),
                )],
                body: CallBody::Bytes(a.data.clone()),
            };
            // The signed URL is the credential: no header carries a secret.
            client
                .transport
                .send("liveperson upload", &put, Retry::Safe, &|_| None)
                .await?;
            let mut file =
                json!({"caption": a.name, "relativePath": relative_path, "fileType": file_type});
            if a.data.len() <= MAX_PREVIEW_BYTES {
                use base64::Engine as _;
                file["preview"] = json!(format!(
                    "data:{};base64,{}",
                    a.content_type,
                    base64::engine::general_purpose::STANDARD.encode(&a.data)
                ));
            }
            events.push(
                json!({"type": "ContentEvent", "contentType": "hosted/file", "message": file}),
            );
        }
        if let Some(t) = &msg.text {
            events.push(json!({"type": "ContentEvent", "contentType": "text/plain", "message": t}));
        }
        for ev in events {
            let call = event_call(
                s,
                &d.msg,
                "send",
                conv,
                &uuid::Uuid::new_v4().to_string(),
                ev,
            );
            send_checked(client, s, &d, ext, &call, Retry::Unsafe, "liveperson send").await?;
        }
        Ok(())
    }

    async fn send_typing(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        typing: bool,
    ) -> Result<bool, ActionError> {
        let s = settings(integration)?;
        let d = domains(client, s).await?;
        let ext = consumer_key(handoff)?;
        // Anything but COMPOSING clears the indicator; ACTIVE says the user is still here.
        let state = if typing { "COMPOSING" } else { "ACTIVE" };
        let call = event_call(
            s,
            &d.msg,
            "typing",
            &handoff.provider_conversation_id,
            &uuid::Uuid::new_v4().to_string(),
            json!({"type": "ChatStateEvent", "chatState": state}),
        );
        send_checked(client, s, &d, ext, &call, Retry::Safe, "liveperson typing").await?;
        Ok(true)
    }

    async fn download_file(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        path: &str,
    ) -> Result<Vec<u8>, ActionError> {
        let s = settings(integration)?;
        let d = domains(client, s).await?;
        let ext = consumer_key(handoff)?;
        let swift = d.swift.clone().ok_or_else(|| {
            ActionError::new(
                ErrorKind::Unavailable,
                "liveperson csds: service `swift` (file storage) not listed for the account",
            )
        })?;
        let label = "liveperson download_url";
        let call = download_url_call(s, &d.msg, &uuid::Uuid::new_v4().to_string(), path);
        let r = send(client, s, &d, ext, &call, Retry::Safe, label).await?;
        check_code(&r, label)?;
        let body = r
            .json
            .as_ref()
            .and_then(|j| j.get("body"))
            .cloned()
            .unwrap_or(Value::Null);
        let url = storage_url(&swift, &body).ok_or_else(|| malformed(label, &r))?;
        let get = ProviderCall {
            step: "download",
            method: "GET",
            url,
            headers: vec![],
            body: CallBody::None,
        };
        let r = client
            .transport
            .send("liveperson download", &get, Retry::Safe, &|_| None)
            .await?;
        Ok(r.bytes)
    }

    async fn close(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        _reason: CloseReason,
    ) -> Result<(), ActionError> {
        let s = settings(integration)?;
        let d = domains(client, s).await?;
        let call = close_call(
            s,
            &d.msg,
            &handoff.provider_conversation_id,
            &uuid::Uuid::new_v4().to_string(),
        );
        let ext = consumer_key(handoff)?;
        send_checked(client, s, &d, ext, &call, Retry::Safe, "liveperson close").await
    }
}

// ---- the client's state and calls ---------------------------------------------------

#[derive(Debug, Clone)]
struct Domains {
    sentinel: String,
    idp: String,
    msg: String,
    /// File storage; only files need it, so an account without it still hands off.
    swift: Option<String>,
    /// Messaging Interactions API (`msgHist`); only the crash reconcile's search needs it.
    msg_hist: Option<String>,
}

/// Domains and tokens, shared by every handoff of a client.
#[derive(Debug, Default)]
struct Caches {
    /// (csds_url, account) → service base URLs.
    domains: Mutex<HashMap<(String, String), Domains>>,
    /// (account, client_id) → (AppJWT, expiry unix seconds).
    app_jwt: Mutex<HashMap<(String, String), (String, u64)>>,
    /// (account, ext_consumer_id) → ConsumerJWS (never expires).
    consumer: Mutex<HashMap<(String, String), String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn domains(client: ClientCx<'_>, s: &LivePersonSettings) -> Result<Domains, ActionError> {
    let caches = client.states.get::<Caches>();
    let key = (s.csds_url.clone(), s.account_id.clone());
    if let Some(d) = lock(&caches.domains).get(&key) {
        return Ok(d.clone());
    }
    let label = "liveperson csds";
    let r = client
        .transport
        .send(label, &csds_call(s), Retry::Safe, &|_| None)
        .await?;
    let list = r
        .json
        .as_ref()
        .and_then(|j| j.get("baseURIs"))
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(label, &r))?;
    let find = |svc: &str| -> Result<String, ActionError> {
        let host = list
            .iter()
            .find(|e| e.get("service").and_then(Value::as_str) == Some(svc))
            .and_then(|e| e.get("baseURI"))
            .and_then(Value::as_str)
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| {
                ActionError::new(
                    ErrorKind::Unavailable,
                    format!("{label}: service `{svc}` not listed for the account"),
                )
                .with_status(r.status)
                .with_body(r.body_value())
            })?;
        let host = host.trim().trim_end_matches('/');
        Ok(if host.contains("://") {
            host.to_string()
        } else {
            service_base(s, host)
        })
    };
    let d = Domains {
        sentinel: find("sentinel")?,
        idp: find("idp")?,
        msg: find("asyncMessagingEnt")?,
        swift: find("swift").ok(),
        msg_hist: find("msgHist").ok(),
    };
    lock(&caches.domains).insert(key, d.clone());
    Ok(d)
}

async fn app_jwt(
    client: ClientCx<'_>,
    s: &LivePersonSettings,
    d: &Domains,
) -> Result<String, ActionError> {
    let caches = client.states.get::<Caches>();
    let key = (s.account_id.clone(), s.client_id.clone());
    if let Some((tok, exp)) = lock(&caches.app_jwt).get(&key) {
        if now_s() + client.token_refresh_margin_s < *exp {
            return Ok(tok.clone());
        }
    }
    let label = "liveperson app_jwt";
    let call = app_jwt_call(s, &d.sentinel);
    let client_id = s.client_id.clone();
    let secret = s.client_secret.expose().to_string();
    let r = client
        .transport
        .send(label, &call, Retry::Safe, &move |k| match k {
            "client_id" => Some(client_id.clone()),
            "client_secret" => Some(secret.clone()),
            _ => None,
        })
        .await?;
    let tok = r
        .json
        .as_ref()
        .and_then(|j| j.get("access_token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed(label, &r))?
        .to_string();
    let exp = jwt::decode_claims_unverified(&tok)
        .and_then(|c| c.get("exp").and_then(Value::as_u64))
        .or_else(|| {
            r.json
                .as_ref()
                .and_then(|j| j.get("expires_in"))
                .and_then(Value::as_u64)
                .map(|e| now_s() + e)
        })
        .unwrap_or_else(|| now_s() + 3600);
    lock(&caches.app_jwt).insert(key, (tok.clone(), exp));
    Ok(tok)
}

async fn consumer_jws(
    client: ClientCx<'_>,
    s: &LivePersonSettings,
    d: &Domains,
    ext: &str,
) -> Result<(String, String), ActionError> {
    let caches = client.states.get::<Caches>();
    let key = (s.account_id.clone(), ext.to_string());
    let cached = lock(&caches.consumer).get(&key).cloned();
    let label = "liveperson consumer_jws";
    for round in 0..2 {
        let app = app_jwt(client, s, d).await?;
        if let Some(c) = &cached {
            return Ok((app, c.clone()));
        }
        let call = consumer_jws_call(s, &d.idp, ext);
        let a = app.clone();
        match client
            .transport
            .send(label, &call, Retry::Safe, &move |_| Some(a.clone()))
            .await
        {
            Ok(r) => {
                let c = r
                    .json
                    .as_ref()
                    .and_then(|j| j.get("token"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| malformed(label, &r))?
                    .to_string();
                lock(&caches.consumer).insert(key, c.clone());
                return Ok((app, c));
            }
            Err(e) if round == 0 && e.http_status == Some(401) => {
                lock(&caches.app_jwt).remove(&(s.account_id.clone(), s.client_id.clone()));
            }
            Err(e) => return Err(e),
        }
    }
    Err(ActionError::new(
        ErrorKind::Auth,
        format!("{label}: refused"),
    ))
}

/// A Send API call with AppJWT + ConsumerJWS; on a 401 the stale token is dropped and
/// the call is made once more with a fresh one.
async fn send(
    client: ClientCx<'_>,
    s: &LivePersonSettings,
    d: &Domains,
    ext: &str,
    call: &ProviderCall,
    retry: Retry,
    label: &str,
) -> Result<HttpResponse, ActionError> {
    let caches = client.states.get::<Caches>();
    let mut last = None;
    for round in 0..2 {
        let (app, cons) = consumer_jws(client, s, d, ext).await?;
        let r = client
            .transport
            .send(label, call, retry, &move |h| {
                if h.eq_ignore_ascii_case("X-LP-ON-BEHALF") {
                    Some(cons.clone())
                } else {
                    Some(app.clone())
                }
            })
            .await;
        match r {
            Err(e) if round == 0 && e.http_status == Some(401) => {
                let code = e
                    .body
                    .as_ref()
                    .and_then(|b| b.pointer("/body/errorCode"))
                    .and_then(Value::as_u64);
                if matches!(code, Some(40103) | Some(40104)) {
                    lock(&caches.consumer).remove(&(s.account_id.clone(), ext.to_string()));
                } else {
                    lock(&caches.app_jwt).remove(&(s.account_id.clone(), s.client_id.clone()));
                }
                last = Some(e);
            }
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| ActionError::new(ErrorKind::Auth, format!("{label}: refused"))))
}

/// [`send`], then the answer's `code` must be OK.
async fn send_checked(
    client: ClientCx<'_>,
    s: &LivePersonSettings,
    d: &Domains,
    ext: &str,
    call: &ProviderCall,
    retry: Retry,
    label: &str,
) -> Result<(), ActionError> {
    let r = send(client, s, d, ext, call, retry, label).await?;
    check_code(&r, label)
}

fn consumer_key(h: &Handoff) -> Result<&str, ActionError> {
    h.consumer_token_key.as_deref().ok_or_else(|| {
        ActionError::new(
            ErrorKind::Config,
            "LivePerson handoff without a consumer id (consumer_token_key)",
        )
    })
}

fn req_id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_code(r: &HttpResponse, label: &str) -> Result<(), ActionError> {
    match r.json.as_ref().and_then(|j| j.get("code")) {
        Some(c) if c == "OK" || c == 200 => Ok(()),
        Some(_) => Err(
            ActionError::new(ErrorKind::Rejected, format!("{label}: refused"))
                .with_status(r.status)
                .with_body(r.body_value()),
        ),
        None => Err(malformed(label, r)),
    }
}

/// Its webhooks (`POST /webhooks/liveperson/{integration_id}`): `x-liveperson-signature`
/// is `sha1=` and the base64 HMAC-SHA1 of the body keyed by `client_secret`.
mod webhooks {
    use super::LivePersonSettings;
    use crate::providers::auth;
    use crate::providers::webhooks::{
        liveperson_sightings, parse_liveperson, Refusal, Verified, WebhookReceiver, WebhookRequest,
    };

    pub(super) struct Receiver;

    impl WebhookReceiver for Receiver {
        fn segment(&self) -> &'static str {
            "liveperson"
        }

        fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Refusal> {
            let secret = req.secret(|s: &LivePersonSettings| Some(&s.client_secret))?;
            auth::verify_liveperson(secret, req.header("x-liveperson-signature"), req.body)?;
            Ok(Verified {
                sightings: liveperson_sightings(req.body),
                ..Verified::events(parse_liveperson(req.body)?)
            })
        }
    }
}

/// What a second conversation request for a consumer answered ([`second_request`]).
/// LivePerson documents none of these (research 2026-12 §1e): each is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondRequest {
    /// Refused, naming the consumer's open conversation (`body.conversationId`).
    Named(String),
    /// Refused without naming one: something is open, which one is unknown.
    RefusedUnnamed,
    /// Granted: this conversation was just opened (the caller closes it at once). Either
    /// none was open, or LivePerson grants a second conversation.
    Granted(String),
}

/// Asks for a conversation again for `ext_consumer_id` (the reconcile of a handoff whose
/// conversation id a crash lost, when no webhook named it). The answer is read under
/// every plausible behaviour: see [`SecondRequest`]. A failure (network, auth, 5xx) is
/// an error and the caller tries again later.
pub async fn second_request(
    client: ClientCx<'_>,
    integration: &Integration,
    ext_consumer_id: &str,
) -> Result<SecondRequest, ActionError> {
    let s = settings(integration)?;
    let d = domains(client, s).await?;
    let body = json!([
        { "kind": "req", "id": "1", "type": "userprofile.SetUserProfile", "body": {} },
        { "kind": "req", "id": REQUEST_CONVERSATION_REQ_ID, "type": "cm.ConsumerRequestConversation",
          "body": { "brandId": s.account_id, "channelType": "MESSAGING", "skillId": "-1" } },
    ]);
    let call = conversation_call(s, &d.msg, body);
    let label = "liveperson conversation lookup";
    // A refusal is one of the answers looked for: read the body whatever the status.
    let r = match send(client, s, &d, ext_consumer_id, &call, Retry::Unsafe, label).await {
        Ok(r) => r.json,
        Err(e) if e.http_status == Some(400) => e.body,
        Err(e) => return Err(e),
    };
    let entry = r.as_ref().and_then(Value::as_array).and_then(|a| {
        a.iter().find(|e| {
            e.get("reqId").map(req_id_text).as_deref() == Some(REQUEST_CONVERSATION_REQ_ID)
        })
    });
    let Some(entry) = entry else {
        // A 400 without per-request answers: refused, nothing named.
        return Ok(SecondRequest::RefusedUnnamed);
    };
    let id = entry
        .pointer("/body/conversationId")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .map(str::to_string);
    let ok = entry.get("code").is_some_and(|c| c == "OK" || c == 200);
    Ok(match (ok, id) {
        (true, Some(id)) => SecondRequest::Granted(id),
        (true, None) => {
            return Err(ActionError::new(
                ErrorKind::Rejected,
                format!("{label}: granted without a conversation id"),
            ))
        }
        (false, Some(id)) => SecondRequest::Named(id),
        (false, None) => SecondRequest::RefusedUnnamed,
    })
}

/// LivePerson's id of the consumer `ext_consumer_id` (the `lp_consumer_id` claim of its
/// ConsumerJWS, research 2026-12 §1a): what the connector's webhooks name as the
/// CONSUMER participant, and what the Messaging Interactions API searches by.
pub async fn lp_consumer_id(
    client: ClientCx<'_>,
    integration: &Integration,
    ext_consumer_id: &str,
) -> Result<String, ActionError> {
    let s = settings(integration)?;
    let d = domains(client, s).await?;
    let (_, jws) = consumer_jws(client, s, &d, ext_consumer_id).await?;
    jwt::decode_claims_unverified(&jws)
        .and_then(|c| {
            c.get("lp_consumer_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            ActionError::new(
                ErrorKind::Rejected,
                "liveperson consumer_jws: the token carries no lp_consumer_id",
            )
        })
}

/// The Messaging Interactions API search (`conversations/consumer/search`) for the
/// `OPEN` conversations of a consumer (research 2026-12 §1b).
pub fn consumer_search_call(
    s: &LivePersonSettings,
    msg_hist_base: &str,
    lp_consumer_id: &str,
) -> ProviderCall {
    ProviderCall {
        step: "consumer_search",
        method: "POST",
        url: format!(
            "{msg_hist_base}/messaging_history/api/account/{}/conversations/consumer/search?offset=0&limit=100&source=transbordo",
            s.account_id
        ),
        headers: vec![
            (
                "Content-Type".into(),
                HeaderValue::Plain("application/json".into()),
            ),
            ("Authorization".into(), HeaderValue::Secret),
        ],
        body: CallBody::Json(json!({ "consumer": lp_consumer_id, "status": ["OPEN"] })),
    }
}

/// An `OPEN` conversation the consumer search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundConversation {
    /// `info.conversationId`.
    pub conversation_id: String,
    /// `info.startTimeL` (epoch ms), when given.
    pub started_at_ms: Option<i64>,
}

/// What the consumer search answered; `None` when the integration has no
/// `interactions_*` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSearch {
    /// The consumer's `OPEN` conversations (the first page, at most 100).
    pub open: Vec<FoundConversation>,
    /// `_metadata.count`: all that matched (more than `open` when over a page).
    pub count: u64,
}

/// Searches the consumer's `OPEN` conversations with the Messaging Interactions API,
/// signed with OAuth 1.0a (the brand's API keys). `Ok(None)` when no keys are
/// configured. Errors are typed like the other calls (401 auth, 429 rate limited, 5xx
/// unavailable); `msgHist` missing from CSDS is unavailable.
pub async fn consumer_search(
    client: ClientCx<'_>,
    integration: &Integration,
    lp_consumer_id: &str,
) -> Result<Option<ConsumerSearch>, ActionError> {
    let s = settings(integration)?;
    let Some(keys) = s.interactions.clone() else {
        return Ok(None);
    };
    let d = domains(client, s).await?;
    let label = "liveperson consumer_search";
    let Some(base) = d.msg_hist.as_deref() else {
        return Err(ActionError::new(
            ErrorKind::Unavailable,
            format!(
                "{label}: service `msgHist` (Messaging Interactions) not listed for the account"
            ),
        ));
    };
    let call = consumer_search_call(s, base, lp_consumer_id);
    let url = call.url.clone();
    let r = client
        .transport
        .send(label, &call, Retry::Safe, &move |_| {
            let k = crate::providers::oauth1::Keys {
                consumer_key: keys.app_key.expose(),
                consumer_secret: keys.app_secret.expose(),
                token: keys.access_token.expose(),
                token_secret: keys.access_token_secret.expose(),
            };
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            Some(crate::providers::oauth1::authorization(
                k,
                "POST",
                &url,
                &nonce,
                now_s(),
            ))
        })
        .await?;
    let j = r.json.as_ref().ok_or_else(|| malformed(label, &r))?;
    let records = match j.get("conversationHistoryRecords") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(malformed(label, &r)),
    };
    let mut open = Vec::new();
    for rec in &records {
        let info = rec.get("info").ok_or_else(|| malformed(label, &r))?;
        let id = info
            .get("conversationId")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty() && c.len() <= 64)
            .ok_or_else(|| malformed(label, &r))?;
        // Asked for OPEN only; anything else is left alone.
        if info.get("status").and_then(Value::as_str) != Some("OPEN") {
            continue;
        }
        open.push(FoundConversation {
            conversation_id: id.to_string(),
            started_at_ms: info.get("startTimeL").and_then(Value::as_i64),
        });
    }
    let count = j
        .pointer("/_metadata/count")
        .and_then(Value::as_u64)
        .unwrap_or(open.len() as u64);
    Ok(Some(ConsumerSearch { open, count }))
}
