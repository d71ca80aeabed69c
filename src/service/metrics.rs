//! `GET /metrics`: Prometheus / OpenMetrics text (`prometheus-client`).
//!
//! Counters and histograms count what *this process* saw; the gauges of open live chats
//! and of the outbox are read from the store at each scrape, so they are right whichever
//! replica is scraped.
//!
//! Every labelled series this code can produce is exposed from the start, at 0: each
//! registered provider × each value of the label's enum ([`ErrorKind`], [`EndStatus`],
//! [`ChatState`], [`DeadlineKind`], [`Operation`], [`WebhookResult`]). So `rate()` sees
//! the first event, and an alert or a dashboard reads 0 rather than "no data" before
//! anything happened. A series only appears later for a provider name the registry does
//! not know (a stored live chat of a provider no longer registered).

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::lifecycle::EventOutcome;
use super::store::{ChatState, DeadlineKind, EndStatus, LiveChatStore, StoreError};
use crate::actions::ErrorKind;

/// Every variant of a field-less enum, as an array. The exhaustive `match` (no `_` arm)
/// makes a variant added to the enum a build error here until it is listed, so the label
/// sets exposed at 0 cannot fall behind the enum.
macro_rules! every {
    ($t:ident: $($v:ident),+ $(,)?) => {{
        #[allow(dead_code)]
        const fn listed(x: $t) {
            match x {
                $($t::$v)|+ => {}
            }
        }
        [$($t::$v),+]
    }};
}

/// Error kinds: the `outcome` of failed handoffs and provider operations.
const ERROR_KINDS: [ErrorKind; 9] = every!(ErrorKind: Config, Auth, RateLimited, Rejected,
    Unavailable, Timeout, Limit, Template, Forbidden);

/// End statuses: `status` of ended live chats.
const END_STATUSES: [EndStatus; 5] = every!(EndStatus: AgentClosed, UserClosed, Timeout,
    UserInactivityTimeout, Error);

/// The states of a live chat that is not over: `state` of the open gauge (`ended` is
/// listed in [`every!`]'s check only; ended chats are counted by
/// `transbordo_live_chats_ended_total`).
const OPEN_STATES: [ChatState; 3] = {
    let all = every!(ChatState: Waiting, WithAgent, Closing, Ended);
    [all[0], all[1], all[2]]
};

/// Timer kinds: `kind` of fired deadlines.
const DEADLINE_KINDS: [DeadlineKind; 4] = every!(DeadlineKind: Wait, Inactivity, Close, Reply);

/// The `outcome` of a successful handoff.
pub const STARTED: &str = "started";

/// The `outcome` of a provider operation that succeeded.
pub const OK: &str = "ok";

/// A provider operation, the `operation` label of
/// `transbordo_provider_request_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `start_live_chat` (every HTTP request of the handoff).
    Start,
    /// Relaying a user message to the agent.
    Send,
    /// Closing the provider conversation.
    Close,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 3] = every!(Operation: Start, Send, Close);

    /// The label value (also used in logs and timelines).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Send => "send",
            Operation::Close => "close",
        }
    }
}

/// What became of a webhook (of each of its events), the `result` label of
/// `transbordo_webhooks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    /// The event changed a live chat.
    Applied,
    /// Seen before (same dedup key).
    Duplicate,
    /// Older than what was already applied.
    Stale,
    /// Nothing to do in the chat's state, or no event for us in the body.
    Ignored,
    /// No live chat for that provider conversation.
    UnknownConversation,
    /// Signature or token refused (`401`).
    Unauthorized,
    /// Not the documented shape (`400`).
    Malformed,
    /// No integration of that provider with that id (`404`).
    UnknownIntegration,
    /// Over `[webhooks] max_body_bytes` (`413`).
    TooLarge,
    /// The service failed (`5xx`).
    Error,
    /// Answered 2xx without a more precise result.
    Ok,
}

impl WebhookResult {
    /// Every result.
    pub const ALL: [WebhookResult; 11] = every!(WebhookResult: Applied, Duplicate, Stale,
        Ignored, UnknownConversation, Unauthorized, Malformed, UnknownIntegration, TooLarge,
        Error, Ok);

    /// The label value (also the event outcome in webhook answers and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Applied => "applied",
            WebhookResult::Duplicate => "duplicate",
            WebhookResult::Stale => "stale",
            WebhookResult::Ignored => "ignored",
            WebhookResult::UnknownConversation => "unknown_conversation",
            WebhookResult::Unauthorized => "unauthorized",
            WebhookResult::Malformed => "malformed",
            WebhookResult::UnknownIntegration => "unknown_integration",
            WebhookResult::TooLarge => "too_large",
            WebhookResult::Error => "error",
            WebhookResult::Ok => "ok",
        }
    }
}

impl From<EventOutcome> for WebhookResult {
    fn from(o: EventOutcome) -> Self {
        match o {
            EventOutcome::Applied => WebhookResult::Applied,
            EventOutcome::Duplicate => WebhookResult::Duplicate,
            EventOutcome::Stale => WebhookResult::Stale,
            EventOutcome::Ignored => WebhookResult::Ignored,
            EventOutcome::Unknown => WebhookResult::UnknownConversation,
        }
    }
}

/// Every registered provider's name.
fn provider_names() -> Vec<&'static str> {
    crate::providers::all()
        .into_iter()
        .map(|k| k.as_str())
        .collect()
}

/// `ok`/`started` and every error kind.
fn outcomes(success: &'static str) -> impl Iterator<Item = &'static str> {
    std::iter::once(success).chain(ERROR_KINDS.iter().map(|k| k.as_str()))
}

/// `provider`, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderOutcome {
    provider: String,
    outcome: String,
}

/// `provider`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderStatus {
    provider: String,
    status: String,
}

/// `provider`, `state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderState {
    provider: String,
    state: String,
}

/// `provider`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderOnly {
    provider: String,
}

/// `provider`, `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderResult {
    provider: String,
    result: String,
}

/// `provider`, `operation`, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderCall {
    provider: String,
    operation: String,
    outcome: String,
}

/// `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultOnly {
    result: String,
}

/// `part` (`api`, `webhooks`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartOnly {
    part: String,
}

/// `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOnly {
    kind: String,
}

impl ProviderOutcome {
    fn new(provider: &str, outcome: &str) -> Self {
        ProviderOutcome {
            provider: provider.into(),
            outcome: outcome.into(),
        }
    }
}

impl ProviderStatus {
    fn new(provider: &str, status: EndStatus) -> Self {
        ProviderStatus {
            provider: provider.into(),
            status: status.as_str().into(),
        }
    }
}

impl ProviderResult {
    fn new(provider: &str, result: WebhookResult) -> Self {
        ProviderResult {
            provider: provider.into(),
            result: result.as_str().into(),
        }
    }
}

impl ProviderCall {
    fn new(provider: &str, operation: Operation, outcome: &str) -> Self {
        ProviderCall {
            provider: provider.into(),
            operation: operation.as_str().into(),
            outcome: outcome.into(),
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Waiting for an agent, chat lengths: 1 s … ~9 h.
fn long_buckets() -> Histogram {
    Histogram::new([
        1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 32400.0,
    ])
}

/// Provider requests: 5 ms … 30 s.
fn request_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    handoffs: Family<ProviderOutcome, Counter>,
    ended: Family<ProviderStatus, Counter>,
    open: Family<ProviderState, Gauge>,
    time_to_agent: HistogramFamily<ProviderOnly>,
    duration: HistogramFamily<ProviderStatus>,
    webhooks: Family<ProviderResult, Counter>,
    provider_requests: HistogramFamily<ProviderCall>,
    outbox_pending: Gauge,
    intents_pending: Gauge,
    intents_unresolved: Gauge,
    outbox_oldest: Gauge<f64, AtomicU64>,
    deliveries: Family<ResultOnly, Counter>,
    timers: Family<KindOnly, Counter>,
    reply_overdue: Family<ProviderOnly, Counter>,
    shed: Family<PartOnly, Counter>,
    /// Held while the store's gauges are rewritten and encoded, so two scrapes at once
    /// cannot expose the open gauge half rewritten.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, with every known label set at zero (the providers
    /// registered now: [`crate::providers::register`] comes before the service starts).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            handoffs: Family::default(),
            ended: Family::default(),
            open: Family::default(),
            time_to_agent: Family::new_with_constructor(long_buckets),
            duration: Family::new_with_constructor(long_buckets),
            webhooks: Family::default(),
            provider_requests: Family::new_with_constructor(request_buckets),
            outbox_pending: Gauge::default(),
            intents_pending: Gauge::default(),
            intents_unresolved: Gauge::default(),
            outbox_oldest: Gauge::default(),
            deliveries: Family::default(),
            timers: Family::default(),
            reply_overdue: Family::default(),
            shed: Family::default(),
            registry: Registry::default(),
            scrape: Mutex::new(()),
        };
        registry.register(
            "transbordo_handoffs",
            "start_live_chat attempts by outcome (started or the error kind)",
            m.handoffs.clone(),
        );
        registry.register(
            "transbordo_live_chats_ended",
            "Live chats ended, by end status",
            m.ended.clone(),
        );
        registry.register(
            "transbordo_live_chats_open",
            "Live chats not ended, by state (from the store)",
            m.open.clone(),
        );
        registry.register(
            "transbordo_time_to_agent_seconds",
            "From the handoff to the agent joining",
            m.time_to_agent.clone(),
        );
        registry.register(
            "transbordo_live_chat_duration_seconds",
            "From the handoff to the end, by end status",
            m.duration.clone(),
        );
        registry.register(
            "transbordo_webhooks",
            "Provider webhooks by result",
            m.webhooks.clone(),
        );
        registry.register(
            "transbordo_provider_request_duration_seconds",
            "Provider operations (start, send, close), by outcome",
            m.provider_requests.clone(),
        );
        registry.register(
            "transbordo_outbox_pending",
            "Events not yet delivered to the builder (from the store)",
            m.outbox_pending.clone(),
        );
        registry.register(
            "transbordo_handoff_intents_pending",
            "Handoffs recorded before their provider call and not finished: in flight, or cut by a crash and not reconciled yet (from the store)",
            m.intents_pending.clone(),
        );
        registry.register(
            "transbordo_handoff_intents_unresolved",
            "Handoffs cut by a crash that the reconcile could not settle by their deadline: a provider conversation may be open and untracked; `transbordo intents` lists them (from the store)",
            m.intents_unresolved.clone(),
        );
        registry.register(
            "transbordo_outbox_oldest_pending_seconds",
            "Age of the oldest undelivered event (from the store; 0 when none)",
            m.outbox_oldest.clone(),
        );
        registry.register(
            "transbordo_outbox_deliveries",
            "Delivery attempts to the builder by result",
            m.deliveries.clone(),
        );
        registry.register(
            "transbordo_timers_fired",
            "Deadlines that fired, by kind",
            m.timers.clone(),
        );
        registry.register(
            "transbordo_agent_reply_overdue",
            "Unanswered stretches: the user wrote and the joined agent did not answer within agent_reply_timeout_s",
            m.reply_overdue.clone(),
        );
        registry.register(
            "transbordo_requests_shed",
            "Requests answered 503 busy: max_in_flight of their part (api, webhooks) were being served and none finished within 5 s",
            m.shed.clone(),
        );
        m.zero_known_series();
        Metrics { registry, ..m }
    }

    /// Creates every known label set (at 0), so each appears before its first event.
    fn zero_known_series(&self) {
        for part in ["api", "webhooks"] {
            drop(self.shed.get_or_create(&PartOnly { part: part.into() }));
        }
        let providers = provider_names();
        let with_webhooks: Vec<&str> = crate::providers::all()
            .into_iter()
            .filter(|k| k.provider().webhooks().is_some())
            .map(|k| k.as_str())
            .collect();
        for &provider in &providers {
            for outcome in outcomes(STARTED) {
                drop(
                    self.handoffs
                        .get_or_create(&ProviderOutcome::new(provider, outcome)),
                );
            }
            for status in END_STATUSES {
                let l = ProviderStatus::new(provider, status);
                drop(self.ended.get_or_create(&l));
                drop(self.duration.get_or_create(&l));
            }
            drop(self.time_to_agent.get_or_create(&ProviderOnly {
                provider: provider.into(),
            }));
            drop(self.reply_overdue.get_or_create(&ProviderOnly {
                provider: provider.into(),
            }));
            for operation in Operation::ALL {
                for outcome in outcomes(OK) {
                    drop(
                        self.provider_requests
                            .get_or_create(&ProviderCall::new(provider, operation, outcome)),
                    );
                }
            }
        }
        for &provider in &with_webhooks {
            for result in WebhookResult::ALL {
                drop(
                    self.webhooks
                        .get_or_create(&ProviderResult::new(provider, result)),
                );
            }
        }
        for kind in DEADLINE_KINDS {
            drop(self.timers.get_or_create(&KindOnly {
                kind: kind.as_str().into(),
            }));
        }
        for result in [DELIVERED, FAILED] {
            drop(self.deliveries.get_or_create(&ResultOnly {
                result: result.into(),
            }));
        }
    }

    /// A `start_live_chat` outcome: [`STARTED`] or the error kind.
    pub fn handoff(&self, provider: &str, outcome: &str) {
        self.handoffs
            .get_or_create(&ProviderOutcome::new(provider, outcome))
            .inc();
    }

    /// A live chat ended after `seconds`.
    pub fn ended(&self, provider: &str, status: EndStatus, seconds: f64) {
        let l = ProviderStatus::new(provider, status);
        self.ended.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(seconds);
    }

    /// An agent joined `seconds` after the handoff.
    pub fn agent_joined(&self, provider: &str, seconds: f64) {
        self.time_to_agent
            .get_or_create(&ProviderOnly {
                provider: provider.into(),
            })
            .observe(seconds);
    }

    /// A webhook's result (one per event of its body).
    pub fn webhook(&self, provider: &str, result: WebhookResult) {
        self.webhooks
            .get_or_create(&ProviderResult::new(provider, result))
            .inc();
    }

    /// A provider operation took `seconds`; `outcome` is [`OK`] or the error kind.
    pub fn provider_request(
        &self,
        provider: &str,
        operation: Operation,
        outcome: &str,
        seconds: f64,
    ) {
        self.provider_requests
            .get_or_create(&ProviderCall::new(provider, operation, outcome))
            .observe(seconds);
    }

    /// An outbox delivery attempt ([`DELIVERED`] or [`FAILED`]).
    pub fn delivery(&self, result: &str) {
        self.deliveries
            .get_or_create(&ResultOnly {
                result: result.into(),
            })
            .inc();
    }

    /// An `agent_reply_overdue` event was queued.
    pub fn reply_overdue(&self, provider: &str) {
        self.reply_overdue
            .get_or_create(&ProviderOnly {
                provider: provider.into(),
            })
            .inc();
    }

    /// A request answered `503 busy` (no slot of its part within the wait).
    pub fn shed(&self, part: &str) {
        self.shed
            .get_or_create(&PartOnly { part: part.into() })
            .inc();
    }

    /// A deadline fired.
    pub fn timer(&self, kind: DeadlineKind) {
        self.timers
            .get_or_create(&KindOnly {
                kind: kind.as_str().into(),
            })
            .inc();
    }

    /// The text exposition, with the store's gauges read now (`now` in Unix ms).
    pub async fn render(&self, store: &dyn LiveChatStore, now: i64) -> Result<String, StoreError> {
        let stats = store.stats().await?;
        let _scrape = match self.scrape.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Cleared so a provider that has no open chat any more reads 0 (known providers)
        // or disappears (others), then every known provider × state is set.
        self.open.clear();
        for provider in provider_names() {
            for state in OPEN_STATES {
                drop(self.open.get_or_create(&ProviderState {
                    provider: provider.into(),
                    state: state.as_str().into(),
                }));
            }
        }
        for (provider, state, n) in stats.open {
            self.open
                .get_or_create(&ProviderState { provider, state })
                .set(n);
        }
        self.outbox_pending.set(stats.outbox_pending);
        self.intents_pending.set(stats.intents_pending);
        self.intents_unresolved.set(stats.intents_unresolved);
        self.outbox_oldest.set(
            stats
                .outbox_oldest_created_at
                .map(|t| (now - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| StoreError::Database(format!("encoding metrics: {e}")))?;
        Ok(out)
    }
}

/// `result` of a delivery the builder accepted.
pub const DELIVERED: &str = "delivered";
/// `result` of a delivery attempt that failed (retried later).
pub const FAILED: &str = "failed";
