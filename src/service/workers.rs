//! Background tasks: the deadline scheduler and the outbox delivery worker. Both claim
//! their work from the store with a lease (so they pick up where a previous process
//! stopped, and replicas on one database never both take the same unit), sleep until
//! the next due time or a notification, and stop between units of work when shutdown
//! is signalled. On a shared database they also poll every [`SHARED_POLL`], since a
//! notification from another replica can be lost. Beside them, the pruner deletes the
//! history past its retention (timeline entries and delivered events).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::events::sign_event;
use super::lifecycle::{now_ms, ServiceState};
use super::store::OutboxEvent;

/// How long to sleep when there is nothing scheduled (a safety net; notifications wake earlier).
const IDLE: Duration = Duration::from_secs(30);
/// The longest sleep on a database other processes share: a deadline fires within
/// about this long of being due even when its notification was lost.
pub const SHARED_POLL: Duration = Duration::from_millis(500);
/// The longest wait of the outbox worker while deliveries are in flight.
const BUSY_POLL: Duration = Duration::from_secs(1);
/// Pause after a storage error before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How long a claimed deadline is ours: firing it takes one store change (the claim
/// of the chat, or dropping the deadline); a replica that dies loses it after this.
pub const TIMER_LEASE_MS: i64 = 5_000;
/// Due deadlines claimed at a time.
const TIMER_BATCH: usize = 256;
/// How often history past its retention is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

fn idle(state: &ServiceState) -> Duration {
    if state.store().shared() {
        SHARED_POLL
    } else {
        IDLE
    }
}

fn until(state: &ServiceState, at: Option<i64>) -> Duration {
    let idle = idle(state);
    match at {
        Some(t) => Duration::from_millis((t - now_ms()).clamp(0, idle.as_millis() as i64) as u64),
        None => idle,
    }
}

/// Turns the store's notifications (work added by other replicas) into wake-ups of
/// this process's workers, until shutdown.
pub async fn run_listener(state: ServiceState, stop: watch::Receiver<bool>) {
    let st = state.clone();
    let wake: super::store::WakeFn = std::sync::Arc::new(move |w| match w {
        super::store::Wake::Timers => st.timers_notify().notify_one(),
        super::store::Wake::Outbox => st.outbox_notify().notify_one(),
    });
    state.store().listen(wake, stop).await;
}

/// Waits for `d`, a notification or shutdown. Returns false on shutdown.
async fn pause(
    d: Duration,
    notify: &tokio::sync::Notify,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = notify.notified() => true,
        r = stop.changed() => r.is_ok() && !*stop.borrow(),
    }
}

/// Fires due deadlines until shutdown. Overdue deadlines (from before a restart) fire at once.
pub async fn run_scheduler(state: ServiceState, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        // Working: any deadline set meanwhile wakes it (see `ServiceState::changed`).
        state.set_timer_at(i64::MAX);
        let claimed = state
            .store()
            .claim_deadlines(now_ms(), TIMER_LEASE_MS, TIMER_BATCH)
            .await;
        let due = match claimed {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "scheduler: the store failed");
                if !pause(ERROR_PAUSE, state.timers_notify(), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        if !due.is_empty() {
            let mut set = JoinSet::new();
            for d in due {
                let st = state.clone();
                // Its own span: what one timer costs (the statement-count test).
                set.spawn(
                    async move {
                        let r = st.fire(&d).await;
                        if let Err(e) = &r {
                            tracing::error!(handoff_id = %d.live_chat_id, error = %e, "timer failed");
                        }
                        r.is_ok()
                    }
                    .instrument(tracing::trace_span!("timer_fire")),
                );
            }
            let mut failed = false;
            while let Some(r) = set.join_next().await {
                failed |= !matches!(r, Ok(true));
            }
            if failed && !pause(ERROR_PAUSE, state.timers_notify(), &mut stop).await {
                return;
            }
            continue;
        }
        let next = state.store().next_deadline().await.ok().flatten();
        let wait = until(&state, next);
        state.set_timer_at(now_ms().saturating_add(wait.as_millis() as i64));
        if !pause(wait, state.timers_notify(), &mut stop).await {
            return;
        }
    }
}

/// An outbox head is leased for the delivery timeout plus this: a replica killed
/// mid-delivery leaves it to another after that long (same `event_id`).
const OUTBOX_LEASE_MARGIN_MS: i64 = 5_000;

fn backoff(state: &ServiceState, attempts: u32) -> Duration {
    let d = state.config().delivery;
    let factor = 1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX);
    d.initial_backoff.saturating_mul(factor).min(d.max_backoff)
}

async fn deliver(state: &ServiceState, ev: &OutboxEvent) -> Result<u16, String> {
    let cfg = &state.config().builder;
    let ts = (now_ms() / 1000).to_string();
    let sig = sign_event(&cfg.signing_secret, &ts, ev.body.as_bytes());
    let resp = state
        .http()
        .post(&cfg.callback_url)
        .header("content-type", "application/json")
        .header("x-transbordo-event-id", &ev.event_id)
        .header("x-transbordo-timestamp", &ts)
        .header("x-transbordo-signature", sig)
        .body(ev.body.clone())
        .send()
        .await
        .map_err(|e| format!("request failed: {}", e.without_url()))?;
    if resp.status().is_success() {
        Ok(resp.status().as_u16())
    } else {
        Err(format!("builder answered {}", resp.status()))
    }
}

/// Takes a finished delivery out of `inflight`, its event into `delivered` when the
/// builder took it.
fn finished(
    done: Result<(tokio::task::Id, Option<i64>), tokio::task::JoinError>,
    inflight: &mut HashMap<tokio::task::Id, String>,
    delivered: &mut Vec<i64>,
) {
    match done {
        Ok((id, seq)) => {
            inflight.remove(&id);
            delivered.extend(seq);
        }
        Err(e) => {
            inflight.remove(&e.id());
        }
    }
}

/// Marks the events in `delivered` delivered, in one write (emptied once written; on a
/// storage error they stay for the next try, their heads still leased).
async fn mark_delivered(state: &ServiceState, delivered: &mut Vec<i64>) {
    if delivered.is_empty() {
        return;
    }
    let marked = state
        .store()
        .outbox_delivered(delivered, now_ms())
        .instrument(tracing::trace_span!("outbox_results"))
        .await;
    match marked {
        Ok(()) => delivered.clear(),
        Err(e) => {
            tracing::error!(error = %e, events = delivered.len(), "outbox: recording deliveries failed")
        }
    }
}

/// Delivers outbox events until shutdown: the oldest undelivered event of each
/// conversation, conversations in parallel; a failing (or slow) event holds back only
/// its own conversation. On shutdown, attempts in flight are finished first.
///
/// Deliveries that finish together are recorded together (one write, before the next
/// claim, which only then sees their conversations' next events as heads): one
/// statement per delivery was a tenth of all the statements of a loaded service.
pub async fn run_outbox(state: ServiceState, mut stop: watch::Receiver<bool>) {
    let mut inflight: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut set: JoinSet<Option<i64>> = JoinSet::new();
    let mut delivered: Vec<i64> = Vec::new();
    loop {
        if *stop.borrow() {
            break;
        }
        // Deliveries that finished are recorded (and forgotten) before claiming.
        while let Some(done) = set.try_join_next_with_id() {
            finished(done, &mut inflight, &mut delivered);
        }
        mark_delivered(&state, &mut delivered).await;
        let lease = state.config().delivery.timeout.as_millis() as i64 + OUTBOX_LEASE_MARGIN_MS;
        let mut wait = match state.store().outbox_claim(now_ms(), lease, 64).await {
            Ok(heads) => {
                // A claimed head whose conversation still shows a delivery in flight is
                // delivered too: that delivery's result is already recorded (a failure by
                // the attempt, a delivery by the write above; only then is another event
                // the head, or the same one claimable again). Skipping it left it leased,
                // its conversation stalled for the whole lease.
                for ev in heads {
                    let st = state.clone();
                    let conv = ev.conversation_id.clone();
                    let handle = set.spawn(
                        async move { attempt(&st, &ev).await }
                            .instrument(tracing::trace_span!("outbox_delivery")),
                    );
                    inflight.insert(handle.id(), conv);
                }
                if inflight.is_empty() {
                    until(
                        &state,
                        state.store().outbox_next_wake().await.ok().flatten(),
                    )
                } else {
                    // Deliveries in flight wake this loop as they finish (and it claims
                    // again): no look-up of the next due head per delivery, only a
                    // short cap so a retry due meanwhile waits at most this long.
                    idle(&state).min(BUSY_POLL)
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox: the store failed");
                ERROR_PAUSE
            }
        };
        if !inflight.is_empty() && wait.is_zero() {
            // Heads due now are all in flight: wait for one of them instead of spinning.
            wait = idle(&state);
        }
        tokio::select! {
            Some(done) = set.join_next_with_id(), if !set.is_empty() => {
                finished(done, &mut inflight, &mut delivered);
                // Every delivery finished by now, so one write and one claim serve
                // them all.
                while let Some(done) = set.try_join_next_with_id() {
                    finished(done, &mut inflight, &mut delivered);
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = state.outbox_notify().notified() => {}
            r = stop.changed() => if r.is_err() { break },
        }
    }
    while let Some(done) = set.join_next_with_id().await {
        finished(done, &mut inflight, &mut delivered);
    }
    mark_delivered(&state, &mut delivered).await;
}

/// The delivery attempt in the timeline of the event's live chat.
async fn timeline_delivery(
    st: &ServiceState,
    ev: &OutboxEvent,
    attempt: u32,
    delivered: bool,
    answer: &str,
    duration_ms: f64,
) {
    let body: serde_json::Value = serde_json::from_str(&ev.body).unwrap_or_default();
    let Some(handoff_id) = body["handoff_id"].as_str() else {
        return;
    };
    st.record(vec![super::store::TimelineEntry {
        live_chat_id: handoff_id.to_string(),
        conversation_id: ev.conversation_id.clone(),
        at: now_ms(),
        kind: "delivery".into(),
        data: serde_json::json!({
            "event_type": body["type"],
            "event_id": ev.event_id,
            "attempt": attempt,
            "result": if delivered { "delivered" } else { "failed" },
            "answer": answer,
            "duration_ms": super::timeline::round_ms(duration_ms),
        }),
    }])
    .await;
}

/// One delivery attempt: `Some(seq)` when the builder took the event (the caller
/// records it, see [`run_outbox`]); a failure is recorded here with its retry time.
async fn attempt(st: &ServiceState, ev: &OutboxEvent) -> Option<i64> {
    let start = std::time::Instant::now();
    let res = deliver(st, ev).await;
    let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    let store = st.store();
    let attempt = ev.attempts + 1;
    let answer = match &res {
        Ok(status) => format!("builder answered {status}"),
        Err(msg) => msg.clone(),
    };
    timeline_delivery(st, ev, attempt, res.is_ok(), &answer, duration_ms).await;
    match res {
        Ok(_) => {
            st.metrics().delivery("delivered");
            tracing::info!(
                conversation_id = %ev.conversation_id,
                event_id = %ev.event_id,
                attempt,
                duration_ms,
                result = "delivered",
                "outbox delivery"
            );
            Some(ev.seq)
        }
        Err(msg) => {
            let wait = backoff(st, ev.attempts);
            let next = now_ms() + wait.as_millis() as i64;
            st.metrics().delivery("failed");
            tracing::warn!(
                conversation_id = %ev.conversation_id,
                event_id = %ev.event_id,
                attempt,
                duration_ms,
                result = "failed",
                error = %msg,
                retry_in_ms = wait.as_millis() as u64,
                "outbox delivery"
            );
            if let Err(e) = store.outbox_failed(ev.seq, next, &msg).await {
                tracing::error!(event_id = %ev.event_id, error = %e, "outbox: recording the attempt failed");
            }
            None
        }
    }
}

/// Deletes what is past `[timeline] retention_days`, at start and then hourly, until
/// shutdown: timeline entries, and builder events delivered that long ago (the
/// timeline's `delivery` entries are what is told about them, so both go at one age).
/// Undelivered events stay whatever their age.
pub async fn run_pruner(state: ServiceState, mut stop: watch::Receiver<bool>) {
    loop {
        let days = i64::from(state.config().timeline.retention_days);
        let before = now_ms() - days * 24 * 3600 * 1000;
        let store = state.store();
        for (what, pruned) in [
            ("timeline", store.timeline_prune(before).await),
            ("delivered events", store.outbox_prune(before).await),
        ] {
            match pruned {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, retention_days = days, "{what} pruned"),
                Err(e) => tracing::warn!(error = %e, "{what}: pruning failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}
