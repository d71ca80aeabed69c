//! The real provider clients: execute the same requests [`plan_start`] lists (the builders
//! are shared), filling in discovered domains and tokens, under one [`RetryPolicy`].
//!
//! [`plan_start`]: crate::providers::plan_start

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::actions::{ActionError, ErrorKind};
use crate::providers::config::{
    AltuSettings, Integration, IntegrationId, LivePersonSettings, ProviderKind, ProviderSettings,
    ZendeskSettings,
};
use crate::providers::http::{HttpResponse, Retry, RetryPolicy, Transport};
use crate::providers::jwt;
use crate::providers::request::{HandoffCx, ProviderCall, REDACTED};
use crate::providers::{altu, liveperson, zendesk};

/// `iss` of the JWTs we sign for the ALTU SDK connector.
pub const CONNECTOR_ISSUER: &str = "transbordo";

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

#[derive(Debug, Clone)]
struct Domains {
    sentinel: String,
    idp: String,
    msg: String,
}

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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The provider clients. Cheap to clone (shares the HTTP pool and token caches).
#[derive(Debug, Clone)]
pub struct ProviderClient {
    transport: Transport,
    caches: Arc<Caches>,
    token_refresh_margin_s: u64,
}

impl ProviderClient {
    /// A client with `policy` (use `RetryPolicy::default()` in production).
    pub fn new(policy: RetryPolicy) -> Result<Self, ActionError> {
        Ok(ProviderClient {
            transport: Transport::new(policy)?,
            caches: Arc::default(),
            token_refresh_margin_s: 60,
        })
    }

    /// Refresh a cached AppJWT this many seconds before it expires (default 60).
    pub fn with_token_refresh_margin(mut self, seconds: u64) -> Self {
        self.token_refresh_margin_s = seconds;
        self
    }

    /// Runs `start_live_chat` on `integration` with the rendered `params`.
    /// Never fails: errors are in `result` (`"status":"error"`) per the spec's shapes.
    pub async fn start_live_chat(
        &self,
        integration: &Integration,
        params: &Map<String, Value>,
        cx: &HandoffCx,
    ) -> StartOutcome {
        let mut warnings = Vec::new();
        let outcome = match &integration.settings {
            ProviderSettings::LivePerson(s) => {
                self.lp_start(integration, s, params, cx, &mut warnings)
                    .await
            }
            ProviderSettings::Zendesk(s) => {
                self.zd_start(integration, s, params, cx, &mut warnings)
                    .await
            }
            ProviderSettings::AltuSdk(s) => {
                self.altu_start(integration, s, params, cx, &mut warnings)
                    .await
            }
        };
        let secrets = secrets_of(integration);
        let (mut result, handoff) = match outcome {
            Ok((body, handoff)) => (ok_result(integration.provider, body), Some(handoff)),
            Err(e) => (error_result(integration.provider, &e), None),
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
        let r = match &integration.settings {
            ProviderSettings::LivePerson(s) => {
                let d = self.lp_domains(s).await?;
                let call = liveperson::publish_call(
                    s,
                    &d.msg,
                    &handoff.provider_conversation_id,
                    &uuid::Uuid::new_v4().to_string(),
                    text,
                );
                let r = self
                    .lp_call(
                        s,
                        &d,
                        consumer_key(handoff)?,
                        &call,
                        Retry::Unsafe,
                        "liveperson send",
                    )
                    .await?;
                lp_check_code(&r, "liveperson send")
            }
            ProviderSettings::Zendesk(s) => {
                let call = zendesk::comment_call(
                    s,
                    &handoff.provider_conversation_id,
                    handoff.requester_id.as_ref(),
                    text,
                );
                self.zd_send(s, "zendesk comment", &call, Retry::Unsafe)
                    .await
                    .map(|_| ())
            }
            ProviderSettings::AltuSdk(s) => {
                let ev = altu::user_message_event(
                    &handoff.handoff_id,
                    &handoff.provider_conversation_id,
                    &uuid::Uuid::new_v4().to_string(),
                    text,
                );
                let call = altu::event_call(s, "user_message", ev);
                self.altu_send(s, &call, &handoff.handoff_id, "altu_sdk user_message")
                    .await
                    .map(|_| ())
            }
        };
        r.map_err(|mut e| {
            scrub_error(&mut e, &secrets_of(integration));
            e
        })
    }

    /// Closes the provider conversation (LivePerson CLOSE, Zendesk `solved`, ALTU
    /// `CLOSE_CONVERSATION`).
    pub async fn close(
        &self,
        integration: &Integration,
        handoff: &Handoff,
        reason: CloseReason,
    ) -> Result<(), ActionError> {
        let r = match &integration.settings {
            ProviderSettings::LivePerson(s) => {
                let d = self.lp_domains(s).await?;
                let call = liveperson::close_call(
                    s,
                    &d.msg,
                    &handoff.provider_conversation_id,
                    &uuid::Uuid::new_v4().to_string(),
                );
                let r = self
                    .lp_call(
                        s,
                        &d,
                        consumer_key(handoff)?,
                        &call,
                        Retry::Safe,
                        "liveperson close",
                    )
                    .await?;
                lp_check_code(&r, "liveperson close")
            }
            ProviderSettings::Zendesk(s) => {
                let call = zendesk::status_call(s, &handoff.provider_conversation_id, "solved");
                self.zd_send(s, "zendesk close", &call, Retry::Safe)
                    .await
                    .map(|_| ())
            }
            ProviderSettings::AltuSdk(s) => {
                let ev = altu::close_event(
                    &handoff.handoff_id,
                    &handoff.provider_conversation_id,
                    reason.as_str(),
                );
                let call = altu::event_call(s, "close", ev);
                self.altu_send(s, &call, &handoff.handoff_id, "altu_sdk close")
                    .await
                    .map(|_| ())
            }
        };
        r.map_err(|mut e| {
            scrub_error(&mut e, &secrets_of(integration));
            e
        })
    }

    /// A Zendesk ticket's status (`new`, `open`, `pending`, `hold`, `solved`, `closed`).
    pub async fn ticket_status(
        &self,
        integration: &Integration,
        ticket_id: &str,
    ) -> Result<String, ActionError> {
        let ProviderSettings::Zendesk(s) = &integration.settings else {
            return Err(ActionError::new(
                ErrorKind::Config,
                format!(
                    "integration {} is not a Zendesk integration",
                    integration.id
                ),
            ));
        };
        let call = zendesk::show_ticket_call(s, ticket_id);
        let r = self
            .zd_send(s, "zendesk ticket", &call, Retry::Safe)
            .await?;
        r.json
            .as_ref()
            .and_then(|j| j.pointer("/ticket/status"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| malformed("zendesk ticket", &r))
    }

    // ---- LivePerson -----------------------------------------------------------------

    async fn lp_start(
        &self,
        integration: &Integration,
        s: &LivePersonSettings,
        params: &Map<String, Value>,
        cx: &HandoffCx,
        warnings: &mut Vec<String>,
    ) -> Result<(Value, Handoff), ActionError> {
        let p = liveperson::prepare_start(s, params, cx)?;
        warnings.extend(p.warnings.iter().cloned());
        let d = self.lp_domains(s).await?;
        let call = liveperson::conversation_call(s, &d.msg, p.conversation_body.clone());
        let label = "liveperson conversation";
        let r = self
            .lp_call(s, &d, &p.ext_consumer_id, &call, Retry::Unsafe, label)
            .await?;
        let entries = r
            .json
            .as_ref()
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(label, &r))?;
        let entry = entries
            .iter()
            .find(|e| {
                e.get("reqId").map(req_id_text).as_deref()
                    == Some(liveperson::REQUEST_CONVERSATION_REQ_ID)
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
            let call = liveperson::publish_call(s, &d.msg, &conversation_id, "3", text);
            let sent = match self
                .lp_call(
                    s,
                    &d,
                    &p.ext_consumer_id,
                    &call,
                    Retry::Unsafe,
                    "liveperson send",
                )
                .await
            {
                Ok(r) => lp_check_code(&r, "liveperson send"),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                warnings.push(format!(
                    "the conversation was opened but `start_message` was not delivered: {}",
                    e.message
                ));
            }
        }
        let n = p.transcript.len();
        for (i, text) in p.transcript.iter().enumerate() {
            let call = liveperson::transcript_call(s, &d.msg, &conversation_id, i, text);
            let label = "liveperson transcript";
            let sent = match self
                .lp_call(s, &d, &p.ext_consumer_id, &call, Retry::Unsafe, label)
                .await
            {
                Ok(r) => lp_check_code(&r, label),
                Err(e) => Err(e),
            };
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
                provider: ProviderKind::LivePerson,
                integration_id: integration.id.clone(),
                provider_conversation_id: conversation_id,
                consumer_token_key: Some(p.ext_consumer_id),
                handoff_id: cx.handoff_id.clone(),
                requester_id: None,
            },
        ))
    }

    async fn lp_domains(&self, s: &LivePersonSettings) -> Result<Domains, ActionError> {
        let key = (s.csds_url.clone(), s.account_id.clone());
        if let Some(d) = lock(&self.caches.domains).get(&key) {
            return Ok(d.clone());
        }
        let label = "liveperson csds";
        let r = self
            .transport
            .send(label, &liveperson::csds_call(s), Retry::Safe, &|_| None)
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
                liveperson::service_base(s, host)
            })
        };
        let d = Domains {
            sentinel: find("sentinel")?,
            idp: find("idp")?,
            msg: find("asyncMessagingEnt")?,
        };
        lock(&self.caches.domains).insert(key, d.clone());
        Ok(d)
    }

    async fn app_jwt(&self, s: &LivePersonSettings, d: &Domains) -> Result<String, ActionError> {
        let key = (s.account_id.clone(), s.client_id.clone());
        if let Some((tok, exp)) = lock(&self.caches.app_jwt).get(&key) {
            if now_s() + self.token_refresh_margin_s < *exp {
                return Ok(tok.clone());
            }
        }
        let label = "liveperson app_jwt";
        let call = liveperson::app_jwt_call(s, &d.sentinel);
        let client_id = s.client_id.clone();
        let secret = s.client_secret.expose().to_string();
        let r = self
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
        lock(&self.caches.app_jwt).insert(key, (tok.clone(), exp));
        Ok(tok)
    }

    async fn consumer_jws(
        &self,
        s: &LivePersonSettings,
        d: &Domains,
        ext: &str,
    ) -> Result<(String, String), ActionError> {
        let key = (s.account_id.clone(), ext.to_string());
        let cached = lock(&self.caches.consumer).get(&key).cloned();
        let label = "liveperson consumer_jws";
        for round in 0..2 {
            let app = self.app_jwt(s, d).await?;
            if let Some(c) = &cached {
                return Ok((app, c.clone()));
            }
            let call = liveperson::consumer_jws_call(s, &d.idp, ext);
            let a = app.clone();
            match self
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
                    lock(&self.caches.consumer).insert(key, c.clone());
                    return Ok((app, c));
                }
                Err(e) if round == 0 && e.http_status == Some(401) => {
                    lock(&self.caches.app_jwt).remove(&(s.account_id.clone(), s.client_id.clone()));
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
    async fn lp_call(
        &self,
        s: &LivePersonSettings,
        d: &Domains,
        ext: &str,
        call: &ProviderCall,
        retry: Retry,
        label: &str,
    ) -> Result<HttpResponse, ActionError> {
        let mut last = None;
        for round in 0..2 {
            let (app, cons) = self.consumer_jws(s, d, ext).await?;
            let r = self
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
                        lock(&self.caches.consumer)
                            .remove(&(s.account_id.clone(), ext.to_string()));
                    } else {
                        lock(&self.caches.app_jwt)
                            .remove(&(s.account_id.clone(), s.client_id.clone()));
                    }
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ActionError::new(ErrorKind::Auth, format!("{label}: refused"))))
    }

    // ---- Zendesk --------------------------------------------------------------------

    async fn zd_send(
        &self,
        s: &ZendeskSettings,
        label: &str,
        call: &ProviderCall,
        retry: Retry,
    ) -> Result<HttpResponse, ActionError> {
        let auth = format!(
            "Basic {}",
            STANDARD.encode(format!("{}/token:{}", s.email, s.api_token.expose()))
        );
        self.transport
            .send(label, call, retry, &move |_| Some(auth.clone()))
            .await
    }

    async fn zd_start(
        &self,
        integration: &Integration,
        s: &ZendeskSettings,
        params: &Map<String, Value>,
        cx: &HandoffCx,
        warnings: &mut Vec<String>,
    ) -> Result<(Value, Handoff), ActionError> {
        let p = zendesk::prepare_start(params, cx)?;
        warnings.extend(p.warnings.iter().cloned());
        let requester = match &p.requester {
            zendesk::Requester::Id(id, update) => {
                if let Some(body) = update {
                    let call = zendesk::update_user_call(s, id, body.clone());
                    if let Err(e) = self
                        .zd_send(s, "zendesk user_update", &call, Retry::Safe)
                        .await
                    {
                        if matches!(e.kind, ErrorKind::Auth | ErrorKind::Config) {
                            return Err(e);
                        }
                        warnings.push(format!("`user_fields` not set: {}", e.message));
                    }
                }
                Some(id.clone())
            }
            zendesk::Requester::Upsert(body) => {
                let call = zendesk::upsert_user_call(s, body.clone());
                let label = "zendesk user_upsert";
                match self.zd_send(s, label, &call, Retry::Safe).await {
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
            zendesk::Requester::None => None,
        };
        let call = zendesk::ticket_call(
            s,
            zendesk::ticket_body(&p, requester.clone()),
            &cx.handoff_id,
        );
        let label = "zendesk ticket";
        let r = self.zd_send(s, label, &call, Retry::Safe).await?;
        let body = r.json.clone().ok_or_else(|| malformed(label, &r))?;
        let ticket_id = match body.pointer("/ticket/id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            _ => return Err(malformed(label, &r)),
        };
        let n = p.transcript.len();
        for (i, text) in p.transcript.iter().enumerate() {
            let call = zendesk::transcript_call(s, &ticket_id, text);
            if let Err(e) = self
                .zd_send(s, "zendesk transcript", &call, Retry::Unsafe)
                .await
            {
                warnings.push(transcript_undelivered(i, n, &e));
                break;
            }
        }
        Ok((
            body,
            Handoff {
                provider: ProviderKind::Zendesk,
                integration_id: integration.id.clone(),
                provider_conversation_id: ticket_id,
                consumer_token_key: None,
                handoff_id: cx.handoff_id.clone(),
                requester_id: requester,
            },
        ))
    }

    // ---- ALTU SDK -------------------------------------------------------------------

    async fn altu_send(
        &self,
        s: &AltuSettings,
        call: &ProviderCall,
        conversation_id: &str,
        label: &str,
    ) -> Result<HttpResponse, ActionError> {
        let key = s.access_key.expose().to_string();
        let sub = s.access_token.expose().to_string();
        let aud = s.webhook_url.clone();
        let conv = conversation_id.to_string();
        // A fresh token (new jti) per attempt: the receiver refuses replayed jtis.
        self.transport
            .send(label, call, Retry::Safe, &move |_| {
                let claims =
                    jwt::connector_claims(CONNECTOR_ISSUER, &aud, &sub, &conv, now_s(), 60);
                Some(format!(
                    "Bearer {}",
                    jwt::sign_hs256(&claims, key.as_bytes())
                ))
            })
            .await
    }

    async fn altu_start(
        &self,
        integration: &Integration,
        s: &AltuSettings,
        params: &Map<String, Value>,
        cx: &HandoffCx,
        warnings: &mut Vec<String>,
    ) -> Result<(Value, Handoff), ActionError> {
        let (ev, w) = altu::open_event(&integration.id, params, cx)?;
        warnings.extend(w);
        let call = altu::event_call(s, "open", ev);
        let label = "altu_sdk open";
        let r = self.altu_send(s, &call, &cx.handoff_id, label).await?;
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
            Handoff {
                provider: ProviderKind::AltuSdk,
                integration_id: integration.id.clone(),
                provider_conversation_id: conv,
                consumer_token_key: None,
                handoff_id: cx.handoff_id.clone(),
                requester_id: None,
            },
        ))
    }
}

/// The warning for a transcript part the provider refused; the handoff itself stands.
fn transcript_undelivered(index: usize, parts: usize, e: &ActionError) -> String {
    format!(
        "the conversation was opened but the transcript was not delivered from part {} of {parts} on: {}",
        index + 1,
        e.message
    )
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

fn lp_check_code(r: &HttpResponse, label: &str) -> Result<(), ActionError> {
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

/// A 2xx answer that is not the documented shape.
fn malformed(label: &str, r: &HttpResponse) -> ActionError {
    ActionError::new(
        ErrorKind::Unavailable,
        format!("{label}: unexpected answer from the provider"),
    )
    .with_status(r.status)
    .with_body(r.body_value())
}

/// Success result in the provider's exact shape (live-chat spec §2).
pub fn ok_result(kind: ProviderKind, body: Value) -> Value {
    match kind {
        ProviderKind::Zendesk => json!({ "response": { "body": body, "status": "ok" } }),
        _ => json!({ "status": "ok", "body": body }),
    }
}

/// Failure result mirroring the success shape (Zendesk's sits under `response`).
pub fn error_result(kind: ProviderKind, e: &ActionError) -> Value {
    match kind {
        ProviderKind::Zendesk => {
            json!({ "response": { "status": "error", "error": e.to_error_object() } })
        }
        _ => json!({ "status": "error", "error": e.to_error_object() }),
    }
}

fn secrets_of(i: &Integration) -> Vec<String> {
    let mut v = match &i.settings {
        ProviderSettings::LivePerson(s) => vec![s.client_secret.expose().to_string()],
        ProviderSettings::Zendesk(s) => {
            let mut v = vec![
                s.api_token.expose().to_string(),
                STANDARD.encode(format!("{}/token:{}", s.email, s.api_token.expose())),
            ];
            if let Some(w) = &s.webhook_secret {
                v.push(w.expose().to_string());
            }
            v
        }
        ProviderSettings::AltuSdk(s) => vec![
            s.access_key.expose().to_string(),
            s.access_token.expose().to_string(),
        ],
    };
    v.retain(|s| s.len() >= 4);
    v
}

/// Replaces any secret that a provider echoed back by `[redacted]`.
fn scrub(v: &mut Value, secrets: &[String]) {
    match v {
        Value::String(s) => {
            for sec in secrets {
                if s.contains(sec.as_str()) {
                    *s = s.replace(sec.as_str(), REDACTED);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| scrub(x, secrets)),
        Value::Object(o) => o.values_mut().for_each(|x| scrub(x, secrets)),
        _ => {}
    }
}

fn scrub_error(e: &mut ActionError, secrets: &[String]) {
    let mut m = Value::String(std::mem::take(&mut e.message));
    scrub(&mut m, secrets);
    e.message = m.as_str().unwrap_or_default().to_string();
    if let Some(b) = &mut e.body {
        scrub(b, secrets);
    }
}
