//! `GET /metrics`: Prometheus / OpenMetrics text (`prometheus-client`).
//!
//! Counters and histograms count what *this process* saw; the gauges of open live chats
//! and of the outbox are read from the store at each scrape, so they are right whichever
//! replica is scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::store::{LiveChatStore, StoreError};

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

/// `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOnly {
    kind: String,
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
    outbox_oldest: Gauge<f64, AtomicU64>,
    deliveries: Family<ResultOnly, Counter>,
    timers: Family<KindOnly, Counter>,
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
    /// Every metric registered, at zero.
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
            outbox_oldest: Gauge::default(),
            deliveries: Family::default(),
            timers: Family::default(),
            registry: Registry::default(),
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
        // Series without a provider label start at 0, so `rate()` sees the first event.
        for kind in ["wait", "inactivity", "close"] {
            drop(m.timers.get_or_create(&KindOnly { kind: kind.into() }));
        }
        for result in ["delivered", "failed"] {
            drop(m.deliveries.get_or_create(&ResultOnly {
                result: result.into(),
            }));
        }
        Metrics { registry, ..m }
    }

    /// A `start_live_chat` outcome: `started` or the error kind.
    pub fn handoff(&self, provider: &str, outcome: &str) {
        self.handoffs
            .get_or_create(&ProviderOutcome {
                provider: provider.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// A live chat ended after `seconds`.
    pub fn ended(&self, provider: &str, status: &str, seconds: f64) {
        let l = ProviderStatus {
            provider: provider.into(),
            status: status.into(),
        };
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

    /// A webhook's result (`applied`, `duplicate`, `stale`, `ignored`, `unknown_conversation`,
    /// `unauthorized`, `malformed`, `unknown_integration`, `too_large`).
    pub fn webhook(&self, provider: &str, result: &str) {
        self.webhooks
            .get_or_create(&ProviderResult {
                provider: provider.into(),
                result: result.into(),
            })
            .inc();
    }

    /// A provider operation took `seconds`.
    pub fn provider_request(&self, provider: &str, operation: &str, outcome: &str, seconds: f64) {
        self.provider_requests
            .get_or_create(&ProviderCall {
                provider: provider.into(),
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .observe(seconds);
    }

    /// An outbox delivery attempt (`delivered` or `failed`).
    pub fn delivery(&self, result: &str) {
        self.deliveries
            .get_or_create(&ResultOnly {
                result: result.into(),
            })
            .inc();
    }

    /// A deadline fired.
    pub fn timer(&self, kind: &str) {
        self.timers
            .get_or_create(&KindOnly { kind: kind.into() })
            .inc();
    }

    /// The text exposition, with the store's gauges read now (`now` in Unix ms).
    pub async fn render(&self, store: &dyn LiveChatStore, now: i64) -> Result<String, StoreError> {
        let stats = store.stats().await?;
        self.open.clear();
        for (provider, state, n) in stats.open {
            self.open
                .get_or_create(&ProviderState { provider, state })
                .set(n);
        }
        self.outbox_pending.set(stats.outbox_pending);
        self.intents_pending.set(stats.intents_pending);
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
