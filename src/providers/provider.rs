//! One live chat provider, described in one place: its settings (its keys of the
//! integrations file) and secrets, its parameters, their checks, the requests of a handoff
//! (as data, for plans and dry runs), its result shapes, its client (open, relay a user
//! message, close) and, for the service, its webhook receiver. Each provider implements
//! [`Provider`] in its own module; [`crate::providers::all`] is the registry the rest of
//! the code goes through, so nothing outside a provider's module matches on which
//! provider it is.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::flow::spec::ParamSpec;
use crate::providers::call::{HandoffCx, StartPlan};
use crate::providers::config::{
    ConfigError, Integration, IntegrationId, ProviderKind, ProviderSettings, SettingsTable,
};
use crate::providers::http::Transport;
use crate::providers::ActionError;

/// A handoff in progress: what the lifecycle needs to talk to the provider later. It is
/// serializable so the lifecycle can store it and survive a restart (tokens are not kept:
/// they are fetched again from the credentials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// The provider.
    pub provider: ProviderKind,
    /// The integration used.
    pub integration_id: IntegrationId,
    /// LivePerson conversationId, Zendesk ticket id, ALTU platform conversation id.
    pub provider_conversation_id: String,
    /// LivePerson: the `ext_consumer_id` whose ConsumerJWS acts for the user.
    pub consumer_token_key: Option<String>,
    /// Our id for this handoff (idempotency keys, ALTU `conversation_id`).
    pub handoff_id: String,
    /// Zendesk: the requester's user id (author of the user's comments), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<Value>,
}

impl Handoff {
    /// The handoff `start` made on `integration` for the provider conversation
    /// `provider_conversation_id`, without the LivePerson and Zendesk extras.
    pub fn new(
        provider: ProviderKind,
        integration: &Integration,
        provider_conversation_id: String,
        cx: &HandoffCx,
    ) -> Self {
        Handoff {
            provider,
            integration_id: integration.id.clone(),
            provider_conversation_id,
            consumer_token_key: None,
            handoff_id: cx.handoff_id.clone(),
            requester_id: None,
        }
    }
}

/// Why we close a provider conversation (sent to the ALTU platform as `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The user ended the chat.
    UserClosed,
    /// No agent within `wait_timeout_s`.
    Timeout,
    /// The user was silent for `user_inactivity_timeout_s`.
    UserInactivityTimeout,
    /// Something went wrong on our side.
    Error,
}

impl CloseReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::UserClosed => "user_closed",
            CloseReason::Timeout => "timeout",
            CloseReason::UserInactivityTimeout => "user_inactivity_timeout",
            CloseReason::Error => "error",
        }
    }
}

/// Per-provider client state (token and domain caches), one value per type, shared by
/// the clones of a [`crate::providers::ProviderClient`]. A provider keeps its own caches
/// here without the client knowing about them.
#[derive(Debug, Default)]
pub struct States {
    by_type: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl States {
    /// The state of type `T`, created on first use.
    pub fn get<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut m = match self.by_type.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let entry = m
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()) as Arc<dyn Any + Send + Sync>)
            .clone();
        drop(m);
        // The map is keyed by the type id, so the value is always a `T`.
        entry
            .downcast::<T>()
            .unwrap_or_else(|_| Arc::new(T::default()))
    }
}

/// What a provider's client code works with: the HTTP transport (one retry policy for
/// all), its cached state, and the client's settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientCx<'a> {
    /// Sends requests under the retry policy.
    pub transport: &'a Transport,
    /// Per-provider caches.
    pub states: &'a States,
    /// Refresh a cached token this many seconds before it expires.
    pub token_refresh_margin_s: u64,
}

/// A live chat provider. Implemented by each provider module and listed once in
/// [`crate::providers`]'s registry (or added with [`crate::providers::register`]).
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Its name in the integrations file (`provider = "liveperson"`), in stored handoffs
    /// and in traces. Unique among the registered providers.
    fn name(&self) -> &'static str;

    /// Its keys in an `[[integration]]` table besides `id`, `provider`,
    /// `wait_timeout_s` and `user_inactivity_timeout_s`, in documentation order. Any other
    /// key in one of its tables is refused before [`Provider::parse_settings`].
    fn settings_keys(&self) -> &'static [&'static str];

    /// Reads and checks its keys of one `[[integration]]` table (errors at their place in
    /// the file); the value is what its other methods get back with
    /// [`ProviderSettings::get`].
    fn parse_settings(&self, table: &SettingsTable<'_>) -> Result<ProviderSettings, ConfigError>;

    /// The settings that may be shown (no secret), e.g. by the playground.
    fn public_settings(&self, settings: &ProviderSettings) -> Value;

    /// How the lifecycle service receives its webhooks (`POST
    /// /webhooks/{segment}/{integration_id}`): `None` when it sends none.
    fn webhooks(&self) -> Option<&'static dyn crate::providers::webhooks::WebhookReceiver> {
        None
    }

    /// The name people know it by (`LivePerson`), for descriptions.
    fn display_name(&self) -> &'static str;

    /// Its parameters besides the common ones ([`crate::providers::request::COMMON_PARAMS`]),
    /// with types and descriptions; those marked required must be given. The checks, the
    /// JSON Schema and the tables of docs/flow-authors.md come from this.
    fn param_specs(&self) -> Vec<ParamSpec>;

    /// Validates one literal parameter value (load time and run time share it).
    fn check_value(&self, name: &str, v: &Value) -> Result<(), ActionError>;

    /// The size limit, in characters of compact JSON, of a parameter sent as JSON text.
    fn json_limit(&self, name: &str) -> Option<usize> {
        let _ = name;
        None
    }

    /// How it delivers `transcript`, with its size limit, for the parameter's description
    /// (`consumer messages after …, at most 4000 bytes each`).
    fn transcript_note(&self) -> Option<String> {
        None
    }

    /// The warning for a known parameter this provider does not use, when it has a
    /// better one than the generic message.
    fn unsupported_note(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }

    /// Every request of a handoff, in order, from the rendered parameters, without
    /// network (discovered domains and tokens as placeholders).
    fn plan(
        &self,
        integration: &Integration,
        params: &Map<String, Value>,
        cx: &HandoffCx,
    ) -> Result<StartPlan, ActionError>;

    /// The success result of `start_live_chat`, in the provider's exact shape.
    fn ok_result(&self, body: Value) -> Value {
        json!({ "status": "ok", "body": body })
    }

    /// The failure result, mirroring the success shape.
    fn error_result(&self, e: &ActionError) -> Value {
        json!({ "status": "error", "error": e.to_error_object() })
    }

    /// The result a dry run reports (ids prefixed `dry-run-`), so later templates render
    /// as they would in production.
    fn simulated_result(&self, handoff_id: &str) -> Value;

    /// The secret values of an integration's settings, scrubbed from anything a provider
    /// echoes back and kept out of logs.
    fn secrets(&self, settings: &ProviderSettings) -> Vec<String>;

    /// Opens the conversation for real: the result body and the handoff.
    async fn start(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        params: &Map<String, Value>,
        cx: &HandoffCx,
        warnings: &mut Vec<String>,
    ) -> Result<(Value, Handoff), ActionError>;

    /// Relays a user's message to the agent.
    async fn send_user_message(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        text: &str,
    ) -> Result<(), ActionError>;

    /// How this provider carries an attachment of `content_type` (a bare, lower-case
    /// MIME type) named `name`, or why it cannot. The default: no attachments.
    fn attachment_rule(
        &self,
        integration: &Integration,
        name: &str,
        content_type: &str,
    ) -> Result<
        crate::providers::attachments::AttachmentRule,
        crate::providers::attachments::AttachmentRefusal,
    > {
        let _ = integration;
        Err(crate::providers::attachments::AttachmentRefusal::Type {
            name: name.to_string(),
            content_type: content_type.to_string(),
            provider: self.display_name().to_string(),
            takes: "no attachments".into(),
        })
    }

    /// Relays a user's message with attachments (each already checked against
    /// [`Provider::attachment_rule`]). Uploads come first and the message that announces
    /// them last, so a failed upload leaves nothing announced. The default relays text
    /// only.
    async fn send_user_content(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        msg: &crate::providers::attachments::UserMessage,
    ) -> Result<(), ActionError> {
        if !msg.attachments.is_empty() {
            return Err(ActionError::new(
                crate::providers::ErrorKind::Config,
                format!("{} does not take attachments", self.display_name()),
            ));
        }
        match &msg.text {
            Some(t) => {
                self.send_user_message(client, integration, handoff, t)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Tells the agent the user is typing (or stopped). `Ok(false)`: the provider has no
    /// typing indicator (the default).
    async fn send_typing(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        typing: bool,
    ) -> Result<bool, ActionError> {
        let _ = (client, integration, handoff, typing);
        Ok(false)
    }

    /// Downloads a file the provider holds behind its credentials (`path` as the
    /// provider's webhook named it, e.g. a LivePerson `relativePath`): its bytes. The
    /// default: no such files.
    async fn download_file(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        path: &str,
    ) -> Result<Vec<u8>, ActionError> {
        let _ = (client, integration, handoff, path);
        Err(ActionError::new(
            crate::providers::ErrorKind::Config,
            format!("{} keeps no files for download", self.display_name()),
        ))
    }

    /// Closes the provider conversation.
    async fn close(
        &self,
        client: ClientCx<'_>,
        integration: &Integration,
        handoff: &Handoff,
        reason: CloseReason,
    ) -> Result<(), ActionError>;
}

/// The error for an integration whose settings are not this provider's (a bug: the
/// registry picks the provider from the same integration).
pub(crate) fn wrong_settings(kind: ProviderKind, integration: &Integration) -> ActionError {
    ActionError::new(
        crate::providers::ErrorKind::Config,
        format!(
            "integration {} is not a {} integration",
            integration.id,
            kind.as_str()
        ),
    )
}

/// The warning for a transcript part the provider refused; the handoff itself stands.
pub(crate) fn transcript_undelivered(index: usize, parts: usize, e: &ActionError) -> String {
    format!(
        "the conversation was opened but the transcript was not delivered from part {} of {parts} on: {}",
        index + 1,
        e.message
    )
}

/// A 2xx answer that is not the documented shape.
pub(crate) fn malformed(label: &str, r: &crate::providers::http::HttpResponse) -> ActionError {
    ActionError::new(
        crate::providers::ErrorKind::Unavailable,
        format!("{label}: unexpected answer from the provider"),
    )
    .with_status(r.status)
    .with_body(r.body_value())
}
