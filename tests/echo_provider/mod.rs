//! A fourth live chat provider, "echo", defined entirely in this file: what adding a
//! provider takes. Its settings table (`base_url`, `token`), its parameter (`room`), its
//! plan, its client (open, relay, close over real HTTP) and its webhooks
//! (`POST /webhooks/echo/{integration_id}`, `x-echo-token`) are all here; [`register`]
//! is the registration line (a built-in provider has it in `src/providers/mod.rs`).
//!
//! The echo API: `POST {base_url}/conversations` `{"handoff_id","room","start_message"}`
//! → `{"id"}`; `POST {base_url}/conversations/{id}/messages` `{"text"}`;
//! `POST {base_url}/conversations/{id}/close` `{"reason"}`; all with
//! `Authorization: Bearer {token}`. Its webhooks are `{"event":"agent_message","id",
//! "conversation_id","text"}` or `{"event":"closed","id","conversation_id"}`.
#![allow(dead_code)]

use std::sync::OnceLock;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use transbordo::actions::spec::{ParamSpec, ParamType};
use transbordo::actions::{ActionError, ErrorKind};
use transbordo::providers::http::Retry;
use transbordo::providers::provider::ClientCx;
use transbordo::providers::{
    CallBody, CloseReason, ConfigError, Handoff, HandoffCx, HeaderValue, Integration, Provider,
    ProviderCall, ProviderKind, ProviderSettings, Secret, SettingsTable, StartPlan,
};
use transbordo::service::auth::AuthError;
use transbordo::service::store::{AgentInfo, EndStatus};
use transbordo::service::webhooks::{
    EndHint, EventKind, ParseError, ProviderEvent, Refusal, Verified, WebhookReceiver,
    WebhookRequest,
};

/// The provider.
pub struct Echo;

/// Its handle.
pub const KIND: ProviderKind = ProviderKind::of(&Echo);

/// Registers it once per process; its kind.
pub fn register() -> ProviderKind {
    static ONCE: OnceLock<ProviderKind> = OnceLock::new();
    *ONCE.get_or_init(|| transbordo::providers::register(&Echo).expect("`echo` is free"))
}

/// The keys of a `provider = "echo"` table.
#[derive(Debug)]
pub struct EchoSettings {
    /// The API's base URL.
    pub base_url: String,
    /// Bearer token of the API, also the `x-echo-token` of its webhooks.
    pub token: Secret,
}

fn settings(i: &Integration) -> Result<&EchoSettings, ActionError> {
    i.settings
        .get::<EchoSettings>()
        .ok_or_else(|| ActionError::new(ErrorKind::Config, "not an echo integration".to_string()))
}

fn call(s: &EchoSettings, step: &'static str, path: &str, body: Value) -> ProviderCall {
    ProviderCall {
        step,
        method: "POST",
        url: format!("{}{path}", s.base_url),
        headers: vec![
            ("Authorization".into(), HeaderValue::Secret),
            (
                "Content-Type".into(),
                HeaderValue::Plain("application/json".into()),
            ),
        ],
        body: CallBody::Json(body),
    }
}

fn open_call(s: &EchoSettings, params: &Map<String, Value>, cx: &HandoffCx) -> ProviderCall {
    call(
        s,
        "open",
        "/conversations",
        json!({
            "handoff_id": cx.handoff_id,
            "room": params.get("room"),
            "start_message": params.get("start_message"),
        }),
    )
}

async fn send(
    client: ClientCx<'_>,
    s: &EchoSettings,
    c: &ProviderCall,
    retry: Retry,
) -> Result<Value, ActionError> {
    let bearer = format!("Bearer {}", s.token.expose());
    let r = client
        .transport
        .send(&format!("echo {}", c.step), c, retry, &move |_| {
            Some(bearer.clone())
        })
        .await?;
    Ok(r.body_value())
}

#[async_trait]
impl Provider for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn display_name(&self) -> &'static str {
        "Echo"
    }

    fn settings_keys(&self) -> &'static [&'static str] {
        &["base_url", "token"]
    }

    fn parse_settings(&self, t: &SettingsTable<'_>) -> Result<ProviderSettings, ConfigError> {
        Ok(ProviderSettings::new(EchoSettings {
            base_url: t.required_url("base_url")?,
            token: t.required_secret("token")?,
        }))
    }

    fn public_settings(&self, settings: &ProviderSettings) -> Value {
        match settings.get::<EchoSettings>() {
            Some(s) => json!({"base_url": s.base_url}),
            None => json!({}),
        }
    }

    fn webhooks(&self) -> Option<&'static dyn WebhookReceiver> {
        Some(&Receiver)
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![ParamSpec::new("room", ParamType::String, "The room the agents watch.").required()]
    }

    fn check_value(&self, name: &str, v: &Value) -> Result<(), ActionError> {
        match (name, v) {
            ("room", Value::String(s)) if !s.trim().is_empty() => Ok(()),
            ("room", _) => Err(ActionError::new(
                ErrorKind::Config,
                "`room` must be a non-empty string",
            )),
            _ => Ok(()),
        }
    }

    fn plan(
        &self,
        integration: &Integration,
        params: &Map<String, Value>,
        cx: &HandoffCx,
    ) -> Result<StartPlan, ActionError> {
        Ok(StartPlan {
            calls: vec![open_call(settings(integration)?, params, cx)],
            warnings: Vec::new(),
        })
    }

    fn simulated_result(&self, handoff_id: &str) -> Value {
        json!({"status": "ok", "body": {"id": format!("{handoff_id}-conversation")}})
    }

    fn secrets(&self, settings: &ProviderSettings) -> Vec<String> {
        settings
            .get::<EchoSettings>()
            .map(|s| vec![s.token.expose().to_string()])
            .unwrap_or_default()
    }

    async fn start(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        params: &Map<String, Value>,
        cx: &HandoffCx,
        _warnings: &mut Vec<String>,
    ) -> Result<(Value, Handoff), ActionError> {
        let s = settings(integration)?;
        let body = send(client, s, &open_call(s, params, cx), Retry::Unsafe).await?;
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ActionError::new(ErrorKind::Unavailable, "echo open: no `id`"))?
            .to_string();
        Ok((json!({"id": id}), Handoff::new(KIND, integration, id, cx)))
    }

    async fn send_user_message(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        text: &str,
    ) -> Result<(), ActionError> {
        let s = settings(integration)?;
        let path = format!(
            "/conversations/{}/messages",
            handoff.provider_conversation_id
        );
        send(
            client,
            s,
            &call(s, "message", &path, json!({"text": text})),
            Retry::Unsafe,
        )
        .await
        .map(|_| ())
    }

    async fn close(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        reason: CloseReason,
    ) -> Result<(), ActionError> {
        let s = settings(integration)?;
        let path = format!("/conversations/{}/close", handoff.provider_conversation_id);
        let body = json!({"reason": reason.as_str()});
        send(client, s, &call(s, "close", &path, body), Retry::Safe)
            .await
            .map(|_| ())
    }
}

/// Its webhooks: `x-echo-token` must be the integration's token.
struct Receiver;

impl WebhookReceiver for Receiver {
    fn segment(&self) -> &'static str {
        "echo"
    }

    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Refusal> {
        let token = req.secret(|s: &EchoSettings| Some(&s.token))?;
        match req.header("x-echo-token") {
            None => return Err(AuthError::Missing("x-echo-token").into()),
            Some(t) if t != token => return Err(AuthError::BadSignature.into()),
            Some(_) => {}
        }
        let v: Value =
            serde_json::from_slice(req.body).map_err(|e| ParseError(format!("not JSON: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ParseError(format!("missing `{k}`")))
        };
        let kind = match field("event")?.as_str() {
            "agent_message" => EventKind::AgentMessage {
                text: field("text")?,
                agent: AgentInfo {
                    id: None,
                    name: Some("Echo agent".into()),
                },
            },
            "closed" => EventKind::Ended(EndHint::Status(EndStatus::AgentClosed)),
            other => return Err(ParseError(format!("unknown event `{other}`")).into()),
        };
        Ok(Verified::events(vec![ProviderEvent {
            provider_conversation_id: field("conversation_id")?,
            kind,
            dedup_id: Some(field("id")?),
            provider_ts: None,
        }]))
    }
}
