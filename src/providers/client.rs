//! The real provider clients: execute the same requests [`plan_start`] lists (the builders
//! are shared), filling in discovered domains and tokens, under one [`RetryPolicy`].
//! Which provider does what is in its own module ([`crate::providers::Provider`]); this
//! is the provider-independent part: the shared transport and caches, the warnings for
//! ignored parameters, and scrubbing any secret a provider echoes back.
//!
//! [`plan_start`]: crate::providers::plan_start

use std::sync::Arc;

use serde_json::{Map, Value};

pub use crate::providers::altu::CONNECTOR_ISSUER;
pub use crate::providers::provider::{CloseReason, Handoff};

use crate::providers::call::HandoffCx;
use crate::providers::config::Integration;
use crate::providers::http::{RetryPolicy, Transport};
use crate::providers::provider::{ClientCx, States};
use crate::providers::request::ignored_param_warnings;
use crate::providers::ActionError;
use crate::redact::Policy;

/// What `start_live_chat` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StartOutcome {
    /// The action's result object, in the exact shape of live-chat spec §2.
    pub result: Value,
    /// The handoff, when the provider accepted it.
    pub handoff: Option<Handoff>,
    /// Warnings for the trace.
    pub warnings: Vec<String>,
}

/// The provider clients. Cheap to clone (shares the HTTP pool and token caches).
#[derive(Debug, Clone)]
pub struct ProviderClient {
    transport: Transport,
    states: Arc<States>,
    token_refresh_margin_s: u64,
}

impl ProviderClient {
    /// A client with `policy` (use `RetryPolicy::default()` in production).
    pub fn new(policy: RetryPolicy) -> Result<Self, ActionError> {
        Ok(ProviderClient {
            transport: Transport::new(policy)?,
            states: Arc::default(),
            token_refresh_margin_s: 60,
        })
    }

    /// Refresh a cached AppJWT this many seconds before it expires (default 60).
    pub fn with_token_refresh_margin(mut self, seconds: u64) -> Self {
        self.token_refresh_margin_s = seconds;
        self
    }

    fn cx(&self) -> ClientCx<'_> {
        ClientCx {
            transport: &self.transport,
            states: &self.states,
            token_refresh_margin_s: self.token_refresh_margin_s,
        }
    }

    /// Runs `start_live_chat` on `integration` with the rendered `params`.
    /// Never fails: errors are in `result` (`"status":"error"`) per the spec's shapes.
    pub async fn start_live_chat(
        &self,
        integration: &Integration,
        params: &Map<String, Value>,
        cx: &HandoffCx,
    ) -> StartOutcome {
        let provider = crate::providers::provider(integration.provider);
        let mut warnings = ignored_param_warnings(integration.provider, params);
        let outcome = provider
            .start(self.cx(), integration, params, cx, &mut warnings)
            .await;
        let secrets = secrets_of(integration);
        let (mut result, handoff) = match outcome {
            Ok((body, handoff)) => (provider.ok_result(body), Some(handoff)),
            Err(e) => (provider.error_result(&e), None),
        };
        scrub(&mut result, &secrets);
        for w in &mut warnings {
            let mut v = Value::String(std::mem::take(w));
            scrub(&mut v, &secrets);
            *w = v.as_str().unwrap_or_default().to_string();
        }
        StartOutcome {
            result,
            handoff,
            warnings,
        }
    }

    /// Sends a user's message to the agent (LivePerson `ms.PublishEvent`, Zendesk public
    /// comment authored by the requester, ALTU `USER_MESSAGE`).
    pub async fn send_user_message(
        &self,
        integration: &Integration,
        handoff: &Handoff,
        text: &str,
    ) -> Result<(), ActionError> {
        crate::providers::provider(integration.provider)
            .send_user_message(self.cx(), integration, handoff, text)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// Relays a user's message with attachments ([`crate::providers::Provider::send_user_content`]).
    pub async fn send_user_content(
        &self,
        integration: &Integration,
        handoff: &Handoff,
        msg: &crate::providers::attachments::UserMessage,
    ) -> Result<(), ActionError> {
        crate::providers::provider(integration.provider)
            .send_user_content(self.cx(), integration, handoff, msg)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// Relays the user's typing state; `Ok(false)` where the provider has none.
    pub async fn send_typing(
        &self,
        integration: &Integration,
        handoff: &Handoff,
        typing: bool,
    ) -> Result<bool, ActionError> {
        crate::providers::provider(integration.provider)
            .send_typing(self.cx(), integration, handoff, typing)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// Downloads a file the provider keeps behind its credentials.
    pub async fn download_file(
        &self,
        integration: &Integration,
        handoff: &Handoff,
        path: &str,
    ) -> Result<Vec<u8>, ActionError> {
        crate::providers::provider(integration.provider)
            .download_file(self.cx(), integration, handoff, path)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// Closes the provider conversation (LivePerson CLOSE, Zendesk `solved`, ALTU
    /// `CLOSE_CONVERSATION`).
    pub async fn close(
        &self,
        integration: &Integration,
        handoff: &Handoff,
        reason: CloseReason,
    ) -> Result<(), ActionError> {
        crate::providers::provider(integration.provider)
            .close(self.cx(), integration, handoff, reason)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// LivePerson: a second conversation request for a consumer whose handoff a crash
    /// cut ([`crate::providers::liveperson::second_request`]).
    pub async fn liveperson_second_request(
        &self,
        integration: &Integration,
        ext_consumer_id: &str,
    ) -> Result<crate::providers::liveperson::SecondRequest, ActionError> {
        crate::providers::liveperson::second_request(self.cx(), integration, ext_consumer_id)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// LivePerson: the consumer's `OPEN` conversations by the Messaging Interactions API
    /// (`None` without its keys; [`crate::providers::liveperson::consumer_search`]).
    pub async fn liveperson_consumer_search(
        &self,
        integration: &Integration,
        lp_consumer_id: &str,
    ) -> Result<Option<crate::providers::liveperson::ConsumerSearch>, ActionError> {
        crate::providers::liveperson::consumer_search(self.cx(), integration, lp_consumer_id)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// LivePerson: the consumer's LivePerson id
    /// ([`crate::providers::liveperson::lp_consumer_id`]).
    pub async fn liveperson_consumer_id(
        &self,
        integration: &Integration,
        ext_consumer_id: &str,
    ) -> Result<String, ActionError> {
        crate::providers::liveperson::lp_consumer_id(self.cx(), integration, ext_consumer_id)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// ALTU SDK: the platform conversation of a handoff whose answer a crash lost
    /// ([`crate::providers::altu::replay_open`]).
    pub async fn altu_replay_open(
        &self,
        integration: &Integration,
        handoff_id: &str,
        bot_conversation_id: &str,
    ) -> Result<String, ActionError> {
        crate::providers::altu::replay_open(self.cx(), integration, handoff_id, bot_conversation_id)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// Zendesk: the tickets whose `external_id` is `external_id`
    /// (`GET /api/v2/tickets.json?external_id=…`, every page).
    pub async fn zendesk_tickets_by_external_id(
        &self,
        integration: &Integration,
        external_id: &str,
    ) -> Result<Vec<crate::providers::zendesk::TicketRef>, ActionError> {
        crate::providers::zendesk::tickets_by_external_id(self.cx(), integration, external_id)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// Zendesk: solves a ticket with a private note
    /// (`PUT /api/v2/tickets/{id}.json`: `solved` and a private comment).
    pub async fn zendesk_close_with_note(
        &self,
        integration: &Integration,
        ticket_id: &str,
        note: &str,
    ) -> Result<(), ActionError> {
        crate::providers::zendesk::close_with_note(self.cx(), integration, ticket_id, note)
            .await
            .map_err(|e| scrubbed(e, integration))
    }

    /// A Zendesk ticket's status (`new`, `open`, `pending`, `hold`, `solved`, `closed`).
    pub async fn ticket_status(
        &self,
        integration: &Integration,
        ticket_id: &str,
    ) -> Result<String, ActionError> {
        crate::providers::zendesk::ticket_status(self.cx(), integration, ticket_id).await
    }
}

/// Success result in the provider's exact shape (live-chat spec §2).
pub fn ok_result(kind: crate::providers::ProviderKind, body: Value) -> Value {
    crate::providers::provider(kind).ok_result(body)
}

/// Failure result mirroring the success shape (Zendesk's sits under `response`).
pub fn error_result(kind: crate::providers::ProviderKind, e: &ActionError) -> Value {
    crate::providers::provider(kind).error_result(e)
}

fn secrets_of(i: &Integration) -> Vec<String> {
    crate::providers::provider(i.provider).secrets(&i.settings)
}

/// Replaces any secret that a provider echoed back by `[redacted]`: this integration's
/// and every registered one ([`crate::redact`]).
fn scrub(v: &mut Value, secrets: &[String]) {
    let p = Policy::current().with_values(secrets);
    scrub_with(v, &p);
}

fn scrub_with(v: &mut Value, p: &Policy) {
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(o) = p.text(s) {
                *s = o;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| scrub_with(x, p)),
        Value::Object(o) => o.values_mut().for_each(|x| scrub_with(x, p)),
        _ => {}
    }
}

fn scrubbed(mut e: ActionError, integration: &Integration) -> ActionError {
    let secrets = secrets_of(integration);
    let mut m = Value::String(std::mem::take(&mut e.message));
    scrub(&mut m, &secrets);
    e.message = m.as_str().unwrap_or_default().to_string();
    if let Some(b) = &mut e.body {
        scrub(b, &secrets);
    }
    e
}
