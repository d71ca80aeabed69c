//! The live chat state machine: waiting → with_agent → (closing →) ended.
//!
//! All transitions go through [`LiveChatStore::apply`], which is conditional and atomic,
//! so every live chat ends exactly once whatever order events, timers and requests
//! race in. Rules:
//! - A timer only fires if its exact deadline is still pending and the chat is in the
//!   state it guards (a wait timer after the agent joined does nothing).
//! - Ending because of *us* (timeout, inactivity, user close) first claims the chat
//!   (`closing`, with the status it will end with), then closes the provider
//!   conversation, then ends: with that status if the close worked, `error` if not.
//!   A provider close event arriving meanwhile (the echo of our own close) ends it with
//!   the claimed status. A `close` watchdog deadline resumes an interrupted close after
//!   a crash.
//! - A failure relaying a user message ends the chat with `error` (best-effort close).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::config::ServiceConfig;
use super::limits::RateLimiter;
use super::metrics::{Metrics, Operation};
use super::provider::LiveChatTransport;
use super::store::TimelineEntry;
use super::store::{
    Applied, Change, ChatState, DeadlineKind, DueDeadline, EndStatus, Guard, LiveChatRecord,
    LiveChatStore, NewLiveChat, StoreError,
};
use super::timeline;
use super::webhooks::{EndHint, EventKind, ProviderEvent};
use crate::actions::ActionError;
use crate::interp::Engine;
use crate::providers::observe;
use crate::providers::Handoff;
use serde_json::json;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why a lifecycle operation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The conversation has no open live chat.
    #[error("the conversation has no open live chat")]
    NoLiveChat,
    /// The conversation already has an open live chat.
    #[error("the conversation already has an open live chat")]
    AlreadyOpen,
    /// The integration of a handoff is not configured.
    #[error("unknown integration `{0}`")]
    UnknownIntegration(String),
    /// The provider failed; the live chat ended with `error`.
    #[error("provider error: {0}")]
    Provider(ActionError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An attachment cannot be relayed; nothing was sent and the chat goes on.
    #[error(transparent)]
    Attachment(#[from] super::attach::AttachError),
}

/// What processing a provider event did (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventOutcome {
    /// State changed.
    Applied,
    /// A duplicate (dedup key seen before).
    Duplicate,
    /// Older than what was already applied.
    Stale,
    /// Not applicable in the current state (e.g. after the end).
    Ignored,
    /// No live chat for that provider conversation.
    Unknown,
}

struct Inner {
    config: ServiceConfig,
    engine: Engine,
    store: Arc<dyn LiveChatStore>,
    transport: Arc<dyn LiveChatTransport>,
    timers: Notify,
    /// When the scheduler plans to look next (Unix ms; `i64::MAX` while it works).
    timer_at: std::sync::atomic::AtomicI64,
    outbox: Notify,
    runs: Mutex<HashSet<String>>,
    /// Writes timeline entries in batches (see [`timeline::TimelineQueue`]).
    timeline: Option<timeline::TimelineQueue>,
    http: reqwest::Client,
    limiter: RateLimiter,
    metrics: Metrics,
}

/// Everything the handlers and background tasks share. Cheap to clone.
#[derive(Clone)]
pub struct ServiceState {
    inner: Arc<Inner>,
}

/// Marks a conversation's run in progress; released on drop.
pub(crate) struct RunGuard {
    state: ServiceState,
    conversation_id: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.state.inner.runs.lock() {
            runs.remove(&self.conversation_id);
        }
    }
}

impl ServiceState {
    /// Assembles the state. `engine` runs the flows (with the integrations and any host
    /// actions), `store` keeps the state, `transport` talks to providers.
    pub fn new(
        config: ServiceConfig,
        engine: Engine,
        store: Arc<dyn LiveChatStore>,
        transport: Arc<dyn LiveChatTransport>,
    ) -> ServiceState {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(config.delivery.timeout)
            .build()
            .unwrap_or_default();
        // The service's own credentials join the integrations' in the one redaction
        // policy, so no output (timeline, logs, errors) can print them.
        crate::redact::register_secrets(
            config
                .api
                .tokens
                .iter()
                .chain([&config.builder.signing_secret])
                .cloned()
                .chain(config.integrations.secret_values()),
        );
        store.set_reentry(config.reentry);
        // Handoffs record their intent first, so a crash mid-handoff can be reconciled.
        let engine = engine
            .with_handoff_journal(Arc::new(super::reconcile::StoreJournal::new(store.clone())));
        let timeline = timeline::TimelineQueue::start(store.clone());
        ServiceState {
            inner: Arc::new(Inner {
                engine,
                store,
                transport,
                timers: Notify::new(),
                timer_at: std::sync::atomic::AtomicI64::new(i64::MAX),
                outbox: Notify::new(),
                runs: Mutex::new(HashSet::new()),
                timeline,
                http,
                metrics: Metrics::new(),
                limiter: RateLimiter::new(
                    config.api.messages_per_minute,
                    config.api.messages_burst,
                ),
                config,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// The interpreter.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn LiveChatStore> {
        &self.inner.store
    }

    /// The metrics of this process.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Logs a state change and counts ends and agent joins; returns its timeline entry.
    fn observe(
        &self,
        before: &LiveChatRecord,
        after: &LiveChatRecord,
        cause: &str,
    ) -> Option<TimelineEntry> {
        if before.agent_joined_at.is_none() {
            if let Some(at) = after.agent_joined_at {
                let secs = (at - after.created_at).max(0) as f64 / 1000.0;
                self.inner.metrics.agent_joined(&after.provider, secs);
            }
        }
        if before.state == after.state {
            return None;
        }
        let status = after.end_status.or(after.pending_end).map(|s| s.as_str());
        tracing::info!(
            conversation_id = %after.conversation_id,
            handoff_id = %after.id,
            provider = %after.provider,
            integration_id = %after.integration_id,
            from = before.state.as_str(),
            to = after.state.as_str(),
            status,
            cause,
            "state change"
        );
        if after.state == ChatState::Ended {
            let secs =
                (after.ended_at.unwrap_or_else(now_ms) - after.created_at).max(0) as f64 / 1000.0;
            let end = after
                .end_status
                .or(after.pending_end)
                .unwrap_or(EndStatus::Error);
            self.inner.metrics.ended(&after.provider, end, secs);
        }
        Some(timeline::entry(
            after,
            "state",
            json!({"from": before.state.as_str(), "to": after.state.as_str(), "status": status,
                   "cause": cause}),
        ))
    }

    /// Runs a provider operation of the transport, timing and logging it.
    async fn provider_call<F>(
        &self,
        chat: &LiveChatRecord,
        operation: Operation,
        call: F,
    ) -> Result<(), ActionError>
    where
        F: std::future::Future<Output = Result<(), ActionError>>,
    {
        let start = std::time::Instant::now();
        let (r, attempts) = observe::collect(call).await;
        let secs = start.elapsed().as_secs_f64();
        let outcome = match &r {
            Ok(()) => super::metrics::OK,
            Err(e) => e.kind.as_str(),
        };
        self.inner
            .metrics
            .provider_request(&chat.provider, operation, outcome, secs);
        let operation = operation.as_str();
        let status = r.as_ref().err().and_then(|e| e.http_status);
        let error = r.as_ref().err().map(|e| e.message.as_str());
        tracing::info!(
            conversation_id = %chat.conversation_id,
            handoff_id = %chat.id,
            provider = %chat.provider,
            integration_id = %chat.integration_id,
            operation,
            outcome,
            status,
            error,
            duration_ms = secs * 1000.0,
            "provider call"
        );
        let mut entries = timeline::calls(&chat.id, &chat.conversation_id, operation, &attempts);
        if entries.is_empty() {
            // A transport without HTTP (or one that failed before sending): one summary line.
            entries.push(timeline::entry(
                chat,
                "provider_call",
                json!({"operation": operation, "outcome": outcome, "status": status,
                       "error": error, "duration_ms": timeline::round_ms(secs * 1000.0)}),
            ));
        }
        self.record(entries).await;
        r
    }

    pub(crate) fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn timers_notify(&self) -> &Notify {
        &self.inner.timers
    }

    pub(crate) fn outbox_notify(&self) -> &Notify {
        &self.inner.outbox
    }

    pub(crate) fn timeline_queue(&self) -> Option<&timeline::TimelineQueue> {
        self.inner.timeline.as_ref()
    }

    /// The scheduler's next look (see [`ServiceState::changed`]).
    pub(crate) fn set_timer_at(&self, at: i64) {
        self.inner
            .timer_at
            .store(at, std::sync::atomic::Ordering::SeqCst);
    }

    /// Wakes the workers a change gave work: the outbox worker when it queued events,
    /// the scheduler when it set a deadline `due` before the scheduler's next look.
    /// (Waking both after every change cost each one a claim and a look-up.)
    fn changed(&self, outbox: bool, due: Option<i64>) {
        let planned = self
            .inner
            .timer_at
            .load(std::sync::atomic::Ordering::SeqCst);
        if due.is_some_and(|d| d < planned) {
            self.inner.timers.notify_one();
        }
        if outbox {
            self.inner.outbox.notify_one();
        }
    }

    pub(crate) fn begin_run(&self, conversation_id: &str) -> Option<RunGuard> {
        let mut runs = self.inner.runs.lock().ok()?;
        if !runs.insert(conversation_id.to_string()) {
            return None;
        }
        Some(RunGuard {
            state: self.clone(),
            conversation_id: conversation_id.to_string(),
        })
    }

    /// The open (waiting, with_agent or closing) live chat of a conversation.
    pub async fn open_chat(
        &self,
        conversation_id: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        Ok(self
            .inner
            .store
            .latest_for_conversation(conversation_id)
            .await?
            .filter(|c| c.state != ChatState::Ended))
    }

    /// Starts tracking a live chat after a successful `start_live_chat`.
    pub async fn start_live_chat(
        &self,
        conversation_id: &str,
        handoff: &Handoff,
    ) -> Result<LiveChatRecord, LifecycleError> {
        self.record_live_chat(conversation_id, handoff, None).await
    }

    /// [`ServiceState::start_live_chat`] for the reconcile holding the handoff's intent
    /// with `claim` (fails with [`StoreError::IntentClaimed`] once it no longer does).
    pub(crate) async fn adopt_live_chat(
        &self,
        conversation_id: &str,
        handoff: &Handoff,
        claim: &str,
    ) -> Result<LiveChatRecord, LifecycleError> {
        self.record_live_chat(conversation_id, handoff, Some(claim))
            .await
    }

    async fn record_live_chat(
        &self,
        conversation_id: &str,
        handoff: &Handoff,
        claim: Option<&str>,
    ) -> Result<LiveChatRecord, LifecycleError> {
        let integration = self
            .inner
            .config
            .integrations
            .get(&handoff.integration_id)
            .ok_or_else(|| {
                LifecycleError::UnknownIntegration(handoff.integration_id.to_string())
            })?;
        let new = NewLiveChat {
            id: handoff.handoff_id.clone(),
            conversation_id: conversation_id.to_string(),
            provider: handoff.provider.as_str().to_string(),
            integration_id: handoff.integration_id.to_string(),
            provider_conversation_id: handoff.provider_conversation_id.clone(),
            wait_timeout_s: integration.wait_timeout_s,
            user_inactivity_timeout_s: integration.user_inactivity_timeout_s,
            handoff: serde_json::to_string(handoff).ok(),
        };
        let created = match claim {
            None => self.inner.store.create(new, now_ms()).await,
            Some(c) => self.inner.store.adopt(new, now_ms(), c).await,
        };
        let rec = match created {
            Ok(r) => r,
            Err(StoreError::AlreadyOpen) => return Err(LifecycleError::AlreadyOpen),
            // A run slower than its intent's lease: the reconcile took the handoff over and
            // adopts (or closes) its conversation; to the builder it is the open live chat.
            Err(StoreError::IntentClaimed) if claim.is_none() => {
                tracing::warn!(conversation_id, handoff_id = %handoff.handoff_id,
                    "handoff outlived its lease: the reconcile took it over");
                return Err(LifecycleError::AlreadyOpen);
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(
            conversation_id = %rec.conversation_id,
            handoff_id = %rec.id,
            provider = %rec.provider,
            integration_id = %rec.integration_id,
            to = rec.state.as_str(),
            "live chat started"
        );
        self.record(vec![timeline::entry(
            &rec,
            "state",
            json!({"from": null, "to": rec.state.as_str(), "cause": "handoff",
                   "provider_conversation_id": rec.provider_conversation_id}),
        )])
        .await;
        let wait =
            (rec.wait_timeout_s > 0).then(|| rec.created_at + rec.wait_timeout_s as i64 * 1000);
        self.changed(false, wait);
        Ok(rec)
    }

    /// Relays a user message; resets the inactivity deadline. A provider failure ends
    /// the chat with `error`.
    pub async fn user_message(
        &self,
        conversation_id: &str,
        text: &str,
    ) -> Result<LiveChatRecord, LifecycleError> {
        let chat = self
            .open_chat(conversation_id)
            .await?
            .filter(|c| c.state.is_open())
            .ok_or(LifecycleError::NoLiveChat)?;
        let sent = self.provider_call(
            &chat,
            Operation::Send,
            self.inner.transport.send_user_message(&chat, text),
        );
        match sent.await {
            Ok(()) => {
                tracing::debug!(
                    conversation_id = %chat.conversation_id,
                    handoff_id = %chat.id,
                    provider = %chat.provider,
                    integration_id = %chat.integration_id,
                    text_len = text.chars().count(),
                    "user message relayed"
                );
                let m = timeline::message(self, "to_agent", text);
                self.record(vec![timeline::entry(&chat, "message", m)])
                    .await;
                self.user_message_recorded(chat, text).await
            }
            Err(e) => {
                self.end_with_close(&chat, EndStatus::Error, None, None)
                    .await?;
                Err(LifecycleError::Provider(e))
            }
        }
    }

    /// Records a user message the provider took, with or without attachments: counts,
    /// transcript, the inactivity and agent-reply timers ([`Change::UserMessage`]), and wakes the scheduler when a
    /// timer it set comes before its next look.
    async fn user_message_recorded(
        &self,
        chat: LiveChatRecord,
        text: &str,
    ) -> Result<LiveChatRecord, LifecycleError> {
        let reply_timeout_s = self
            .inner
            .config
            .integrations
            .get(&crate::providers::IntegrationId::new(
                chat.integration_id.clone(),
            ))
            .map_or(0, |i| i.agent_reply_timeout_s);
        let change = Change::UserMessage {
            text: text.to_string(),
            reply_timeout_s,
        };
        let now = now_ms();
        let r = self
            .inner
            .store
            .apply_to(&chat, change, Guard::default(), now)
            .await?;
        if let Applied::Done(c) = &r {
            let with_agent = c.state == ChatState::WithAgent;
            let inactivity = with_agent
                .then(|| super::store::inactivity_due(c, now))
                .flatten();
            let reply = (with_agent && reply_timeout_s > 0)
                .then(|| now + (reply_timeout_s as i64).saturating_mul(1000));
            self.changed(false, inactivity.into_iter().chain(reply).min());
        }
        match r {
            Applied::Done(c) | Applied::Ignored(c) => Ok(c),
            _ => Ok(chat),
        }
    }

    /// Relays a user message with attachments: every attachment is checked against the
    /// provider and its bytes obtained before any provider call (a refusal sends
    /// nothing and leaves the chat as it was); then as [`ServiceState::user_message`].
    pub async fn user_content(
        &self,
        conversation_id: &str,
        text: Option<String>,
        inputs: Vec<super::attach::AttachmentInput>,
    ) -> Result<LiveChatRecord, LifecycleError> {
        let chat = self
            .open_chat(conversation_id)
            .await?
            .filter(|c| c.state.is_open())
            .ok_or(LifecycleError::NoLiveChat)?;
        let transport = &self.inner.transport;
        let provider = crate::providers::ProviderKind::parse(&chat.provider)
            .map(|k| k.provider().display_name().to_string())
            .unwrap_or_else(|| chat.provider.clone());
        let rules = super::attach::check_all(&inputs, &provider, |name, ct| {
            transport.attachment_rule(&chat, name, ct)
        })?;
        let files =
            super::attach::materialize(inputs, &rules, &provider, &self.config().http_guard)
                .await?;
        let view = super::attach::timeline_view(&files);
        let msg = super::attach::user_message(text, files);
        let sent = self.provider_call(
            &chat,
            Operation::Send,
            transport.send_user_content(&chat, &msg),
        );
        match sent.await {
            Ok(()) => {
                let mut m = timeline::message(self, "to_agent", msg.text.as_deref().unwrap_or(""));
                m["attachments"] = view;
                self.record(vec![timeline::entry(&chat, "message", m)])
                    .await;
                self.user_message_recorded(chat, msg.text.as_deref().unwrap_or(""))
                    .await
            }
            Err(e) => {
                self.end_with_close(&chat, EndStatus::Error, None, None)
                    .await?;
                Err(LifecycleError::Provider(e))
            }
        }
    }

    /// Relays the user's typing state: `Ok(false)` when the provider has no typing
    /// indicator. Best-effort: a provider failure is logged and answered `false`, the
    /// chat goes on (a lost "typing…" is not worth ending a conversation).
    pub async fn user_typing(
        &self,
        conversation_id: &str,
        typing: bool,
    ) -> Result<bool, LifecycleError> {
        let chat = self
            .open_chat(conversation_id)
            .await?
            .filter(|c| c.state.is_open())
            .ok_or(LifecycleError::NoLiveChat)?;
        match self.inner.transport.send_typing(&chat, typing).await {
            Ok(relayed) => Ok(relayed),
            Err(e) => {
                tracing::warn!(
                    conversation_id = %chat.conversation_id,
                    handoff_id = %chat.id,
                    provider = %chat.provider,
                    error = %e.message,
                    "typing not relayed"
                );
                Ok(false)
            }
        }
    }

    /// Downloads an agent's file for `GET /files/…` (the grant already checked).
    pub(crate) async fn download_file(
        &self,
        chat_id: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, LifecycleError> {
        let Some(chat) = self.inner.store.get(chat_id).await? else {
            return Ok(None);
        };
        self.inner
            .transport
            .download_file(&chat, path)
            .await
            .map(Some)
            .map_err(LifecycleError::Provider)
    }

    /// The public base of `/files/…` URLs: `public_url` when set, else the `listen`
    /// address.
    fn files_base(&self) -> String {
        match &self.config().webhooks.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_string(),
            None => format!("http://{}", self.config().listen),
        }
    }

    /// `agent_typing` to the builder, once, not stored: a late or lost "typing…" is
    /// harmless, a retried one would be wrong.
    fn send_agent_typing(
        &self,
        chat: &LiveChatRecord,
        typing: bool,
        agent: &super::store::AgentInfo,
    ) {
        let event_id = super::events::new_event_id();
        let body =
            super::events::agent_typing(chat, typing, agent, &event_id, now_ms()).to_string();
        let state = self.clone();
        tokio::spawn(async move {
            let cfg = &state.config().builder;
            let ts = (now_ms() / 1000).to_string();
            let sig = super::events::sign_event(&cfg.signing_secret, &ts, body.as_bytes());
            let r = state
                .http()
                .post(&cfg.callback_url)
                .header("content-type", "application/json")
                .header("x-transbordo-event-id", &event_id)
                .header("x-transbordo-timestamp", &ts)
                .header("x-transbordo-signature", sig)
                .body(body)
                .send()
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e.without_url(), "agent_typing not delivered");
            }
        });
    }

    /// The user closes: claim, close the provider conversation, end `user_closed`
    /// (`error` if the close failed).
    pub async fn user_close(
        &self,
        conversation_id: &str,
    ) -> Result<LiveChatRecord, LifecycleError> {
        let chat = self
            .open_chat(conversation_id)
            .await?
            .filter(|c| c.state.is_open())
            .ok_or(LifecycleError::NoLiveChat)?;
        match self
            .end_with_close(&chat, EndStatus::UserClosed, None, None)
            .await?
        {
            Some(c) => Ok(c),
            None => Err(LifecycleError::NoLiveChat),
        }
    }

    /// Closes an open live chat at the provider and ends it with `error` (the reconcile
    /// of a handoff it could not adopt).
    pub(crate) async fn end_with_error(
        &self,
        chat: &LiveChatRecord,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        self.end_with_close(chat, EndStatus::Error, None, None)
            .await
    }

    /// Claim → close → end. Returns the final record, or `None` when the claim lost
    /// (the chat had moved on).
    async fn end_with_close(
        &self,
        chat: &LiveChatRecord,
        pending: EndStatus,
        expect: Option<ChatState>,
        deadline: Option<super::store::Deadline>,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        let claim = Change::Claim {
            pending,
            expect,
            deadline,
        };
        let claimed = match self
            .inner
            .store
            .apply_to(chat, claim, Guard::default(), now_ms())
            .await?
        {
            Applied::Done(c) => c,
            _ => return Ok(None),
        };
        let state = self.observe(chat, &claimed, pending.as_str());
        // The close watchdog.
        self.changed(false, Some(now_ms() + 30_000));
        self.record(state.into_iter().collect()).await;
        self.finish_close(&claimed).await.map(Some)
    }

    /// Closes the provider conversation of a `closing` chat and ends it.
    async fn finish_close(&self, chat: &LiveChatRecord) -> Result<LiveChatRecord, StoreError> {
        let pending = chat.pending_end.unwrap_or(EndStatus::Error);
        let closed = self.provider_call(chat, Operation::Close, self.inner.transport.close(chat));
        let status = match closed.await {
            Ok(()) => pending,
            Err(_) => EndStatus::Error,
        };
        let change = Change::End {
            status,
            pending_wins: false,
        };
        let r = self
            .inner
            .store
            .apply_to(chat, change, Guard::default(), now_ms())
            .await?;
        if let Applied::Done(_) = &r {
            self.changed(true, None);
        }
        if let Applied::Done(c) = &r {
            let state = self.observe(chat, c, "closed");
            self.record(state.into_iter().collect()).await;
        }
        Ok(match r {
            Applied::Done(c) | Applied::Ignored(c) => c,
            _ => chat.clone(),
        })
    }

    /// Fires a due deadline (scheduler). A timer that finds nothing to do (the chat
    /// moved on) is dropped.
    pub async fn fire(&self, due: &DueDeadline) -> Result<(), StoreError> {
        let store = &self.inner.store;
        self.inner.metrics.timer(due.deadline.kind);
        let kind = due.deadline.kind.as_str();
        let Some(chat) = store.get(&due.live_chat_id).await? else {
            tracing::info!(handoff_id = %due.live_chat_id, kind, "timer fired (no such live chat)");
            return store.drop_deadline(&due.live_chat_id, due.deadline).await;
        };
        tracing::info!(
            conversation_id = %chat.conversation_id,
            handoff_id = %chat.id,
            provider = %chat.provider,
            integration_id = %chat.integration_id,
            kind,
            state = chat.state.as_str(),
            "timer fired"
        );
        self.record(vec![timeline::entry(
            &chat,
            "timer",
            json!({"timer": kind, "state": chat.state.as_str()}),
        )])
        .await;
        let (pending, expect) = match due.deadline.kind {
            DeadlineKind::Wait => (EndStatus::Timeout, ChatState::Waiting),
            DeadlineKind::Inactivity => (EndStatus::UserInactivityTimeout, ChatState::WithAgent),
            DeadlineKind::Reply => {
                let change = Change::ReplyOverdue {
                    deadline: due.deadline,
                };
                if let Applied::Done(_) = store
                    .apply_to(&chat, change, Guard::default(), now_ms())
                    .await?
                {
                    self.inner.metrics.reply_overdue(&chat.provider);
                    tracing::info!(
                        conversation_id = %chat.conversation_id,
                        handoff_id = %chat.id,
                        provider = %chat.provider,
                        integration_id = %chat.integration_id,
                        "agent reply overdue"
                    );
                    self.changed(true, None);
                }
                return Ok(());
            }
            DeadlineKind::Close => {
                if chat.state == ChatState::Closing {
                    self.finish_close(&chat).await?;
                } else {
                    store.drop_deadline(&chat.id, due.deadline).await?;
                }
                return Ok(());
            }
        };
        let done = self
            .end_with_close(&chat, pending, Some(expect), Some(due.deadline))
            .await?;
        if done.is_none() {
            store.drop_deadline(&chat.id, due.deadline).await?;
        }
        Ok(())
    }

    /// `attachments` (URLs the builder can download: the provider's, or a signed
    /// `/files/…` one for files behind the provider's credentials) and `rich_content`.
    fn content_fields(
        &self,
        chat: &LiveChatRecord,
        content: crate::providers::attachments::AgentContent,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut extra = serde_json::Map::new();
        if !content.attachments.is_empty() {
            let base = self.files_base();
            let secret = &self.config().builder.signing_secret;
            let list: Vec<serde_json::Value> = content
                .attachments
                .into_iter()
                .map(|mut a| {
                    if let Some(path) = a.provider_path.take() {
                        let grant = super::attach::FileGrant {
                            chat: chat.id.clone(),
                            path,
                            name: a.name.clone(),
                            content_type: a.content_type.clone(),
                            expires_ms: now_ms() + super::attach::FILE_URL_TTL_MS,
                        };
                        a.url =
                            format!("{base}/files/{}", super::attach::sign_grant(secret, &grant));
                    }
                    json!(a)
                })
                .collect();
            extra.insert("attachments".into(), serde_json::Value::Array(list));
        }
        if let Some(r) = content.rich_content {
            extra.insert("rich_content".into(), r);
        }
        extra
    }

    /// Applies an authenticated provider event. `source` namespaces its dedup key
    /// (e.g. `liveperson:7`).
    pub async fn provider_event(
        &self,
        integration_id: &str,
        source: &str,
        ev: ProviderEvent,
    ) -> Result<EventOutcome, StoreError> {
        let Some(chat) = self
            .inner
            .store
            .find_by_provider(integration_id, &ev.provider_conversation_id)
            .await?
        else {
            return Ok(EventOutcome::Unknown);
        };
        if let EventKind::AgentTyping { typing, agent } = &ev.kind {
            if !chat.state.is_open() {
                return Ok(EventOutcome::Ignored);
            }
            self.send_agent_typing(&chat, *typing, agent);
            return Ok(EventOutcome::Applied);
        }
        let cause = match &ev.kind {
            EventKind::AgentJoined(_) => "agent_joined",
            EventKind::AgentMessage { .. } | EventKind::AgentContent { .. } => "agent_message",
            EventKind::Ended(_) => "provider_ended",
            EventKind::AgentTyping { .. } => "agent_typing",
        };
        let relayed = match &ev.kind {
            EventKind::AgentMessage { text, .. } => Some(timeline::message(self, "to_user", text)),
            EventKind::AgentContent { text, content, .. } => {
                let mut m = timeline::message(self, "to_user", text);
                m["attachments"] = json!(content
                    .attachments
                    .iter()
                    .map(
                        |a| json!({"name": a.name, "content_type": a.content_type, "size": a.size})
                    )
                    .collect::<Vec<_>>());
                m["rich_content"] = json!(content.rich_content.is_some());
                Some(m)
            }
            _ => None,
        };
        let change = match ev.kind {
            EventKind::AgentJoined(agent) => Change::AgentJoined { agent },
            EventKind::AgentMessage { text, agent } => Change::AgentMessage {
                text,
                agent,
                extra: Default::default(),
            },
            EventKind::AgentContent {
                text,
                agent,
                content,
            } => Change::AgentMessage {
                text,
                agent,
                extra: self.content_fields(&chat, content),
            },
            EventKind::AgentTyping { .. } => return Ok(EventOutcome::Ignored),
            EventKind::Ended(hint) => Change::End {
                status: match hint {
                    EndHint::Status(s) => s,
                    EndHint::ProviderClosed => match chat.state {
                        ChatState::Waiting => EndStatus::Error,
                        _ => EndStatus::AgentClosed,
                    },
                },
                pending_wins: true,
            },
        };
        let r = if chat.state == ChatState::Ended {
            // Ended is final, so the change would be ignored: only its dedup key is
            // recorded (one statement, not a change's transaction), and it is answered
            // as `apply` would (duplicate, stale or ignored).
            let fresh = match &ev.dedup_id {
                Some(d) => self.inner.store.event_seen(source, d, now_ms()).await?,
                None => true,
            };
            let older = ev
                .provider_ts
                .is_some_and(|ts| chat.last_provider_ts.is_some_and(|last| ts < last));
            match (fresh, older) {
                (false, _) => Applied::Duplicate,
                (true, true) => Applied::Stale,
                (true, false) => Applied::Ignored(chat.clone()),
            }
        } else {
            let guard = Guard {
                dedup: ev.dedup_id.map(|d| (source.to_string(), d)),
                provider_ts: ev.provider_ts,
            };
            self.inner
                .store
                .apply_to(&chat, change, guard, now_ms())
                .await?
        };
        let outcome = match &r {
            Applied::Done(_) => EventOutcome::Applied,
            Applied::Duplicate => EventOutcome::Duplicate,
            Applied::Stale => EventOutcome::Stale,
            Applied::Ignored(_) => EventOutcome::Ignored,
            Applied::NotFound => EventOutcome::Unknown,
        };
        let result = match outcome {
            EventOutcome::Applied => "applied",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Stale => "stale",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Unknown => "unknown_conversation",
        };
        tracing::info!(
            conversation_id = %chat.conversation_id,
            handoff_id = %chat.id,
            provider = %chat.provider,
            integration_id = %chat.integration_id,
            event = cause,
            result,
            "webhook event"
        );
        let mut entries = vec![timeline::entry(
            &chat,
            "webhook",
            json!({"source": source, "event": cause, "result": result}),
        )];
        if let (Some(m), EventOutcome::Applied) = (relayed, &outcome) {
            entries.push(timeline::entry(&chat, "message", m));
        }
        if let Applied::Done(after) = &r {
            // Every applied provider event queues one; a join sets the inactivity deadline.
            let due = (after.state == ChatState::WithAgent)
                .then(|| super::store::inactivity_due(after, now_ms()))
                .flatten();
            self.changed(true, due);
            entries.extend(self.observe(&chat, after, cause));
        }
        self.record(entries).await;
        Ok(outcome)
    }
}
