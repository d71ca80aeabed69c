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
        let rec = match self.inner.store.create(new, now_ms()).await {
            Ok(r) => r,
            Err(StoreError::AlreadyOpen) => return Err(LifecycleError::AlreadyOpen),
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
                let now = now_ms();
                let r = self
                    .inner
                    .store
                    .apply(&chat.id, Change::UserActivity, Guard::default(), now)
                    .await?;
                if let Applied::Done(c) = &r {
                    let due = (c.state == ChatState::WithAgent)
                        .then(|| super::store::inactivity_due(c, now))
                        .flatten();
                    self.changed(false, due);
                }
                match r {
                    Applied::Done(c) | Applied::Ignored(c) => Ok(c),
                    _ => Ok(chat),
                }
            }
            Err(e) => {
                self.end_with_close(&chat, EndStatus::Error, None, None)
                    .await?;
                Err(LifecycleError::Provider(e))
            }
        }
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
            .apply(&chat.id, claim, Guard::default(), now_ms())
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
            .apply(&chat.id, change, Guard::default(), now_ms())
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
        let cause = match &ev.kind {
            EventKind::AgentJoined(_) => "agent_joined",
            EventKind::AgentMessage { .. } => "agent_message",
            EventKind::Ended(_) => "provider_ended",
        };
        let relayed = match &ev.kind {
            EventKind::AgentMessage { text, .. } => Some(timeline::message(self, "to_user", text)),
            _ => None,
        };
        let change = match ev.kind {
            EventKind::AgentJoined(agent) => Change::AgentJoined { agent },
            EventKind::AgentMessage { text, agent } => Change::AgentMessage { text, agent },
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
        let guard = Guard {
            dedup: ev.dedup_id.map(|d| (source.to_string(), d)),
            provider_ts: ev.provider_ts,
        };
        let r = self
            .inner
            .store
            .apply(&chat.id, change, guard, now_ms())
            .await?;
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
