//! ALTU SDK connector request builders: our own protocol, `docs/connector-protocol.md`.
//!
//! Every event is one `POST {webhook_url}` with a JSON envelope
//! `{"event","event_id","conversation_id","integration_id"?,"platform_conversation_id"?,"data"}`
//! and `Authorization: Bearer <HS256 JWT>` (filled in at send time). `event_id` is derived
//! from the handoff id, so a retried delivery carries the same id and the platform can
//! drop the duplicate.

use serde_json::{json, Map, Value};

use async_trait::async_trait;

use crate::flow::spec::{ParamSpec, ParamType};
use crate::providers::call::{
    config_err, contact_text, id_value, is_absent, limited_json, opt, text_value, type_name,
    CallBody, HandoffCx, HeaderValue, ProviderCall, StartPlan,
};
use crate::providers::config::{
    ConfigError, Integration, IntegrationId, ProviderKind, ProviderSettings, Secret, SettingsTable,
};
use crate::providers::http::{HttpResponse, Retry};
use crate::providers::jwt;
use crate::providers::provider::{
    malformed, wrong_settings, ClientCx, CloseReason, Handoff, Provider,
};
use crate::providers::transcript;
use crate::providers::ActionError;

/// The parameters it understands besides the common ones, with types and descriptions:
/// the table the checks, the JSON Schema and docs/flow-authors.md come from.
pub fn param_specs() -> Vec<ParamSpec> {
    let skill = "The skill for the platform's routing, kept as given";
    vec![
        ParamSpec::new("skill_id", ParamType::Id, format!("{skill}.")),
        ParamSpec::new(
            "skillId",
            ParamType::Id,
            format!("{skill} (the seed's spelling of `skill_id`)."),
        ),
        ParamSpec::new(
            "extra_info",
            ParamType::OneOf(vec![
                ParamType::Object,
                ParamType::ArrayOf(Box::new(ParamType::Any)),
                ParamType::String,
                ParamType::Number,
            ]),
            format!("Sent as compact JSON text; over {JSON_LIMIT} characters it is sent empty, with a warning."),
        ),
        ParamSpec::new(
            "contact_info",
            ParamType::OneOf(vec![
                ParamType::Object,
                ParamType::ArrayOf(Box::new(ParamType::Any)),
            ]),
            format!("Sent as compact JSON text; over {JSON_LIMIT} characters it is sent empty, with a warning."),
        ),
    ]
}

/// Seed rule: `extra_info` / `contact_info` JSON longer than this is sent empty.
pub const JSON_LIMIT: usize = 1024;

/// Largest `text` of one `transcript` entry of `OPEN_CONVERSATION`, in UTF-8 bytes (our
/// protocol's rule, `docs/connector-protocol.md` §4): a longer message is sent as
/// consecutive entries marked `"continued": true`.
pub const TRANSCRIPT_TEXT_LIMIT: usize = 4096;

/// Largest total `text` of the `transcript` of one `OPEN_CONVERSATION`, in UTF-8 bytes (our
/// protocol's rule): the oldest messages are left out beyond it, so the event stays well
/// under the 1 MiB body a platform must accept.
pub const TRANSCRIPT_TOTAL_LIMIT: usize = 256 * 1024;

/// Event names we send.
pub mod events {
    /// Opens a conversation with an agent.
    pub const OPEN_CONVERSATION: &str = "OPEN_CONVERSATION";
    /// A message from the user to the agent.
    pub const USER_MESSAGE: &str = "USER_MESSAGE";
    /// We end the conversation (user left, timeout, …).
    pub const CLOSE_CONVERSATION: &str = "CLOSE_CONVERSATION";
    /// The user started or stopped typing (protocol v1.2).
    pub const USER_TYPING: &str = "USER_TYPING";
}

/// The largest attachment a `USER_MESSAGE` carries inline (protocol v1.2): 10 MiB.
pub const MAX_ATTACHMENT_BYTES: u64 = 10 << 20;

/// A v1.2 `USER_MESSAGE` with attachments inline (`data.attachments[]` of
/// `{name, content_type, size, data_base64}`); `text` may be absent.
pub fn user_content_event(
    handoff_id: &str,
    platform_conversation_id: &str,
    message_id: &str,
    msg: &crate::providers::attachments::UserMessage,
) -> Value {
    use base64::Engine as _;
    let attachments: Vec<Value> = msg
        .attachments
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "content_type": a.content_type,
                "size": a.data.len(),
                "data_base64": base64::engine::general_purpose::STANDARD.encode(&a.data),
            })
        })
        .collect();
    let mut data = json!({ "attachments": attachments });
    if let Some(t) = &msg.text {
        data["text"] = json!(t);
    }
    json!({
        "event": events::USER_MESSAGE,
        "event_id": format!("{handoff_id}:msg:{message_id}"),
        "conversation_id": handoff_id,
        "platform_conversation_id": platform_conversation_id,
        "data": data,
    })
}

/// A v1.2 `USER_TYPING` event.
pub fn user_typing_event(
    handoff_id: &str,
    platform_conversation_id: &str,
    message_id: &str,
    typing: bool,
) -> Value {
    json!({
        "event": events::USER_TYPING,
        "event_id": format!("{handoff_id}:typing:{message_id}"),
        "conversation_id": handoff_id,
        "platform_conversation_id": platform_conversation_id,
        "data": { "typing": typing },
    })
}

/// Validates one literal parameter value (load-time check and run time share it).
pub fn check_value(name: &str, v: &Value) -> Result<(), ActionError> {
    if is_absent(v) {
        return Ok(());
    }
    match name {
        "skill_id" | "skillId" => id_value(name, v).map(|_| ()),
        "start_message" => text_value(name, v).map(|_| ()),
        "extra_info" => match v {
            Value::Object(_) | Value::Array(_) | Value::String(_) | Value::Number(_) => Ok(()),
            _ => Err(config_err(format!(
                "`extra_info` must be an object, array, string or number, got {}",
                type_name(v)
            ))),
        },
        "contact_info" => match v {
            Value::Object(_) | Value::Array(_) => Ok(()),
            _ => Err(config_err(format!(
                "`contact_info` must be an object or an array, got {}",
                type_name(v)
            ))),
        },
        _ => Ok(()),
    }
}

/// The `OPEN_CONVERSATION` event and the warnings it produced.
pub fn open_event(
    integration_id: &IntegrationId,
    params: &Map<String, Value>,
    cx: &HandoffCx,
) -> Result<(Value, Vec<String>), ActionError> {
    let mut warnings = Vec::new();
    for (k, v) in params {
        // `check_value` knows exactly this provider's parameters (and `start_message`).
        check_value(k, v)?;
    }
    let mut data = Map::new();
    let skill = match (opt(params, "skill_id"), opt(params, "skillId")) {
        (Some(a), Some(_)) => {
            warnings.push("both `skill_id` and `skillId` given: `skill_id` is used".to_string());
            Some(a)
        }
        (a, b) => a.or(b),
    };
    if let Some(s) = skill {
        data.insert("skill_id".into(), id_value("skill_id", s)?);
    }
    if let Some(m) = opt(params, "start_message") {
        let t = text_value("start_message", m)?;
        data.insert("start_message".into(), json!(t));
    }
    for k in ["extra_info", "contact_info"] {
        if let Some(v) = opt(params, k) {
            let s = limited_json(k, v, JSON_LIMIT, KIND.as_str(), &mut warnings);
            data.insert(k.into(), json!(s));
        }
    }
    let (transcript, tw) =
        transcript::json_for(params, TRANSCRIPT_TEXT_LIMIT, TRANSCRIPT_TOTAL_LIMIT)?;
    warnings.extend(tw);
    if let Some(t) = transcript {
        data.insert("transcript".into(), t);
    }
    let mut user = Map::new();
    for k in ["name", "email", "phone"] {
        if let Some(v) = contact_text(&cx.contact, k) {
            user.insert(k.into(), json!(v));
        }
    }
    if !user.is_empty() {
        data.insert("user".into(), Value::Object(user));
    }
    data.insert("bot_conversation_id".into(), json!(cx.conversation_id));
    let ev = json!({
        "event": events::OPEN_CONVERSATION,
        "event_id": format!("{}:open", cx.handoff_id),
        "conversation_id": cx.handoff_id,
        "integration_id": integration_id.as_str(),
        "data": data,
    });
    Ok((ev, warnings))
}

/// A `USER_MESSAGE` event; `message_id` is unique per user message, so `event_id` stays
/// the same across retries of one delivery and differs between messages.
pub fn user_message_event(
    handoff_id: &str,
    platform_conversation_id: &str,
    message_id: &str,
    text: &str,
) -> Value {
    json!({
        "event": events::USER_MESSAGE,
        "event_id": format!("{handoff_id}:msg:{message_id}"),
        "conversation_id": handoff_id,
        "platform_conversation_id": platform_conversation_id,
        "data": { "text": text },
    })
}

/// A `CLOSE_CONVERSATION` event; `reason` is `user_closed`, `timeout`,
/// `user_inactivity_timeout` or `error`.
pub fn close_event(handoff_id: &str, platform_conversation_id: &str, reason: &str) -> Value {
    json!({
        "event": events::CLOSE_CONVERSATION,
        "event_id": format!("{handoff_id}:close"),
        "conversation_id": handoff_id,
        "platform_conversation_id": platform_conversation_id,
        "data": { "reason": reason },
    })
}

/// One event delivery: `POST {webhook_url}` with a Bearer JWT.
pub fn event_call(s: &AltuSettings, step: &'static str, event: Value) -> ProviderCall {
    ProviderCall {
        step,
        method: "POST",
        url: s.webhook_url.clone(),
        headers: vec![
            (
                "Content-Type".into(),
                HeaderValue::Plain("application/json".into()),
            ),
            ("Authorization".into(), HeaderValue::Secret),
        ],
        body: CallBody::Json(event),
    }
}

/// The plan: one `OPEN_CONVERSATION` delivery.
pub fn plan(
    s: &AltuSettings,
    integration_id: &IntegrationId,
    params: &Map<String, Value>,
    cx: &HandoffCx,
) -> Result<StartPlan, ActionError> {
    let (ev, warnings) = open_event(integration_id, params, cx)?;
    Ok(StartPlan {
        calls: vec![event_call(s, "open", ev)],
        warnings,
    })
}

// ---- the provider --------------------------------------------------------------------

/// `iss` of the JWTs we sign for the connector.
pub const CONNECTOR_ISSUER: &str = "transbordo";

/// Its handle in the registry (`provider = "altu_sdk"`).
pub const KIND: ProviderKind = ProviderKind::of(&AltuSdk);

/// ALTU SDK connector settings (`docs/connector-protocol.md`): the keys of a
/// `provider = "altu_sdk"` table.
#[derive(Debug, Clone)]
pub struct AltuSettings {
    /// Where our events are POSTed.
    pub webhook_url: String,
    /// The identifier the platform issued for this integration (JWT claim `sub`).
    pub access_token: Secret,
    /// The HS256 key both sides use to sign and verify event JWTs.
    pub access_key: Secret,
}

/// Any agent platform through the ALTU SDK connector protocol.
pub struct AltuSdk;

fn settings(i: &Integration) -> Result<&AltuSettings, ActionError> {
    i.settings
        .get::<AltuSettings>()
        .ok_or_else(|| wrong_settings(KIND, i))
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Delivers one event with a fresh token (new `jti`) per attempt: the receiver refuses
/// replayed `jti`s.
async fn send(
    client: ClientCx<'_>,
    s: &AltuSettings,
    call: &ProviderCall,
    conversation_id: &str,
    label: &str,
) -> Result<HttpResponse, ActionError> {
    let key = s.access_key.expose().to_string();
    let sub = s.access_token.expose().to_string();
    let aud = s.webhook_url.clone();
    let conv = conversation_id.to_string();
    client
        .transport
        .send(label, call, Retry::Safe, &move |_| {
            let claims = jwt::connector_claims(CONNECTOR_ISSUER, &aud, &sub, &conv, now_s(), 60);
            Some(format!(
                "Bearer {}",
                jwt::sign_hs256(&claims, key.as_bytes())
            ))
        })
        .await
}

#[async_trait]
impl Provider for AltuSdk {
    fn name(&self) -> &'static str {
        "altu_sdk"
    }

    fn settings_keys(&self) -> &'static [&'static str] {
        &["webhook_url", "access_token", "access_key"]
    }

    fn parse_settings(&self, t: &SettingsTable<'_>) -> Result<ProviderSettings, ConfigError> {
        let webhook_url = t.required_url("webhook_url")?;
        Ok(ProviderSettings::new(AltuSettings {
            webhook_url,
            access_token: t.required_secret("access_token")?,
            access_key: t.required_secret("access_key")?,
        }))
    }

    fn public_settings(&self, settings: &ProviderSettings) -> Value {
        match settings.get::<AltuSettings>() {
            Some(a) => json!({"webhook_url": a.webhook_url}),
            None => json!({}),
        }
    }

    fn webhooks(&self) -> Option<&'static dyn crate::providers::webhooks::WebhookReceiver> {
        Some(&webhooks::Receiver)
    }

    fn display_name(&self) -> &'static str {
        "ALTU SDK"
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        param_specs()
    }

    fn check_value(&self, name: &str, v: &Value) -> Result<(), ActionError> {
        check_value(name, v)
    }

    fn transcript_note(&self) -> Option<String> {
        Some(format!(
            "the `transcript` array of OPEN_CONVERSATION, at most {TRANSCRIPT_TEXT_LIMIT} bytes of text per entry"
        ))
    }

    fn json_limit(&self, name: &str) -> Option<usize> {
        matches!(name, "extra_info" | "contact_info").then_some(JSON_LIMIT)
    }

    fn plan(
        &self,
        integration: &Integration,
        params: &Map<String, Value>,
        cx: &HandoffCx,
    ) -> Result<StartPlan, ActionError> {
        plan(settings(integration)?, &integration.id, params, cx)
    }

    fn simulated_result(&self, handoff_id: &str) -> Value {
        json!({"status": "ok", "body": {"conversationId": format!("{handoff_id}-conversation")}})
    }

    fn secrets(&self, settings: &ProviderSettings) -> Vec<String> {
        match settings.get::<AltuSettings>() {
            Some(s) => vec![
                s.access_key.expose().to_string(),
                s.access_token.expose().to_string(),
            ],
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
        let (ev, w) = open_event(&integration.id, params, cx)?;
        warnings.extend(w);
        let call = event_call(s, "open", ev);
        let label = "altu_sdk open";
        let r = send(client, s, &call, &cx.handoff_id, label).await?;
        let conv = r
            .json
            .as_ref()
            .and_then(|j| j.get("conversation_id"))
            .and_then(|c| match c {
                Value::String(t) if !t.is_empty() => Some(t.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| malformed(label, &r))?;
        Ok((
            json!({ "conversationId": conv }),
            Handoff::new(KIND, integration, conv, cx),
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
        let ev = user_message_event(
            &handoff.handoff_id,
            &handoff.provider_conversation_id,
            &uuid::Uuid::new_v4().to_string(),
            text,
        );
        let call = event_call(s, "user_message", ev);
        send(
            client,
            s,
            &call,
            &handoff.handoff_id,
            "altu_sdk user_message",
        )
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
        // The connector gets the bytes inline and decides itself what its platform takes.
        Ok(crate::providers::attachments::AttachmentRule::Upload {
            max_bytes: MAX_ATTACHMENT_BYTES,
            takes: "files of any type up to 10 MiB (10485760 bytes), inline".into(),
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
        // One event carries the text and every file: nothing is announced half-way.
        let ev = user_content_event(
            &handoff.handoff_id,
            &handoff.provider_conversation_id,
            &uuid::Uuid::new_v4().to_string(),
            msg,
        );
        let call = event_call(s, "user_message", ev);
        send(
            client,
            s,
            &call,
            &handoff.handoff_id,
            "altu_sdk user_message",
        )
        .await
        .map(|_| ())
    }

    async fn send_typing(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        typing: bool,
    ) -> Result<bool, ActionError> {
        let s = settings(integration)?;
        let ev = user_typing_event(
            &handoff.handoff_id,
            &handoff.provider_conversation_id,
            &uuid::Uuid::new_v4().to_string(),
            typing,
        );
        let call = event_call(s, "user_typing", ev);
        send(
            client,
            s,
            &call,
            &handoff.handoff_id,
            "altu_sdk user_typing",
        )
        .await
        .map(|_| true)
    }

    async fn close(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        reason: CloseReason,
    ) -> Result<(), ActionError> {
        let s = settings(integration)?;
        let ev = close_event(
            &handoff.handoff_id,
            &handoff.provider_conversation_id,
            reason.as_str(),
        );
        let call = event_call(s, "close", ev);
        send(client, s, &call, &handoff.handoff_id, "altu_sdk close")
            .await
            .map(|_| ())
    }
}

/// Its webhooks (`POST /webhooks/altu/{integration_id}`, `docs/connector-protocol.md`
/// §3, §5): `Authorization: Bearer` an HS256 JWT keyed by `access_key`, checked for
/// signature, times, `sub` (`access_token`), `iss`, `aud` (this receiver: its full URL
/// under the config's `public_url`, else its path, see [`crate::providers::auth::Audience`])
/// and `conversation_id`; its `jti` is single-use; the event must be about a known live
/// chat.
mod webhooks {
    use super::AltuSettings;
    use crate::providers::auth;
    use crate::providers::webhooks::{
        parse_altu, Ack, Refusal, SingleUse, Verified, WebhookReceiver, WebhookRequest,
    };

    pub(super) struct Receiver;

    impl WebhookReceiver for Receiver {
        fn segment(&self) -> &'static str {
            "altu"
        }

        fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Refusal> {
            let key = req.secret(|s: &AltuSettings| Some(&s.access_key))?;
            let access_token = req.secret(|s: &AltuSettings| Some(&s.access_token))?;
            let claims = auth::verify_jwt(
                key,
                req.header("authorization"),
                req.now_ms / 1000,
                req.config.jwt_clock_skew_s as i64,
            )?;
            let ev = parse_altu(req.body)?;
            let url = req
                .config
                .public_url
                .as_ref()
                .map(|u| auth::receiver_url(u, req.path));
            let audience = match &url {
                Some(u) => auth::Audience::Url(u),
                None => auth::Audience::Path(req.path),
            };
            auth::check_connector_binding(&claims, access_token, audience, &ev.conversation_id)?;
            Ok(Verified {
                sightings: Vec::new(),
                conversation: Some((
                    ev.event.provider_conversation_id.clone(),
                    ev.conversation_id,
                )),
                events: vec![ev.event],
                single_use: Some(SingleUse::of(
                    format!("altu-jti:{}", req.integration.id),
                    claims.jti,
                    req.body,
                    "token already used (jti replay)",
                )),
                ack: Ack::Connector,
            })
        }
    }
}

/// The platform conversation of a handoff after a crash lost its answer (the reconcile
/// of a handoff intent): the OPEN is sent again with its `event_id` (`{handoff_id}:open`),
/// and the platform answers a replayed `event_id` with its first answer
/// (`docs/connector-protocol.md`, retries). When the first OPEN never arrived this one
/// opens the conversation, so the two cannot be told apart: the caller closes it.
pub async fn replay_open(
    client: ClientCx<'_>,
    integration: &Integration,
    handoff_id: &str,
    bot_conversation_id: &str,
) -> Result<String, ActionError> {
    let s = settings(integration)?;
    let ev = json!({
        "event": events::OPEN_CONVERSATION,
        "event_id": format!("{handoff_id}:open"),
        "conversation_id": handoff_id,
        "integration_id": integration.id.as_str(),
        "data": { "bot_conversation_id": bot_conversation_id },
    });
    let call = event_call(s, "open", ev);
    let label = "altu_sdk open (reconcile)";
    let r = send(client, s, &call, handoff_id, label).await?;
    r.json
        .as_ref()
        .and_then(|j| j.get("conversation_id"))
        .and_then(|c| match c {
            Value::String(t) if !t.is_empty() => Some(t.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .ok_or_else(|| malformed(label, &r))
}
