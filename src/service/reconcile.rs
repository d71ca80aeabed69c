//! Handoffs cut by a crash (guarantee 6, issue 17): `start_live_chat` records the
//! handoff's intent in the store before its first provider call ([`StoreJournal`]); the
//! transaction that records the live chat finishes it. An intent still there after its
//! lease ([`HANDOFF_LEASE_MS`]) is a handoff whose process died between the provider call
//! and the live chat. The reconcile settles it with what the providers document only:
//!
//! - **LivePerson**: the connector's `cqm.ExConversationChangeNotification` webhooks
//!   announce every conversation of the app with its CONSUMER participant; one no live
//!   chat tracks is recorded as a *sighting* ([`record_sighting`]; the webhook never
//!   closes anything). The intent's consumer (`lp_consumer_id`, the ConsumerJWS claim) is
//!   matched to its sightings: the newest is adopted (the live chat exists from then on),
//!   the others closed; all are closed when the builder moved on. Without a sighting, a
//!   second conversation request is read under every plausible behaviour
//!   ([`crate::providers::liveperson::SecondRequest`]): refused naming one → that one;
//!   granted → closed at once, and once its own webhook arrives (webhooks do reach us)
//!   nothing of the handoff's was open; refused unnamed → unresolved until a webhook
//!   names it. With the integration's Messaging Interactions API keys, the consumer
//!   search ([`crate::providers::liveperson::consumer_search`]) replaces both: it lists
//!   the consumer's `OPEN` conversations, webhook or not, and no second request is sent
//!   (`search_settle`).
//! - **Zendesk**: the tickets whose `external_id` is the handoff id (several possible):
//!   none → the create never happened; one open and the builder did not move on →
//!   adopted; otherwise solved with a private note saying why.
//! - **ALTU SDK**: the OPEN is replayed with its `event_id`
//!   ([`crate::providers::altu::replay_open`]); a replay cannot tell an old conversation
//!   from one it opened, so it is closed (ended with `error`), never adopted.
//!
//! Fencing (two replicas, a handoff still running elsewhere): an intent is claimed with
//! every other intent of the same consumer, all or nothing, and only when none is still
//! held by its run ([`LiveChatStore::intent_group_claim`]); a claimed intent can no longer
//! be finished by its run, and the adoption records the live chat only under the claim.
//! Sightings are taken only if seen before the claim (their handoff began before it, so
//! it is in the group or already tracked). A conversation about to be tracked is thus
//! never closed, and never tracked twice.
//!
//! An intent not settled [`ReconcileConfig::unresolved_after_s`] after its handoff
//! began is reported once (metric `transbordo_handoff_intents_unresolved`, a timeline
//! entry, an error log with what an operator needs) and kept: the reconcile keeps trying,
//! and `transbordo intents` lists it.
//!
//! [`ReconcileConfig::unresolved_after_s`]: super::config::ReconcileConfig

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::watch;

use super::lifecycle::{now_ms, LifecycleError, ServiceState};
use super::store::{
    HandoffIntent, IntentNote, IntentState, LiveChatStore, Sighting, StoreError, TimelineEntry,
};
use crate::interp::{HandoffJournal, HandoffStart};
use crate::providers::liveperson::{self, SecondRequest};
use crate::providers::webhooks::ConversationSighting;
use crate::providers::{altu, zendesk, CloseReason, Handoff, Integration, IntegrationId};

/// How long a reconciler holds the intents it claimed.
pub const INTENT_LEASE_MS: i64 = 5_000;
/// The lease a handoff takes on its own intent when it begins: longer than its provider
/// calls may take with retries (10 s budget each), so no reconcile takes over a handoff
/// that is still running (one that outlives it loses its live chat to the reconcile).
pub const HANDOFF_LEASE_MS: i64 = 30_000;
/// How often a replica looks for intents whose lease ran out.
const POLL: Duration = Duration::from_secs(1);
/// Intents looked at per round.
const BATCH: usize = 32;
/// Clocks of replicas and providers may differ this much.
const SKEW_MS: i64 = 5_000;
/// Sightings older than this are forgotten (a cut handoff is settled long before).
const SIGHTING_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// The service's [`HandoffJournal`]: intents in the store.
pub struct StoreJournal {
    store: Arc<dyn LiveChatStore>,
}

impl StoreJournal {
    /// A journal writing to `store`.
    pub fn new(store: Arc<dyn LiveChatStore>) -> StoreJournal {
        StoreJournal { store }
    }
}

#[async_trait]
impl HandoffJournal for StoreJournal {
    async fn begin(&self, start: &HandoffStart) -> Result<(), String> {
        let intent = HandoffIntent {
            handoff_id: start.handoff_id.clone(),
            conversation_id: start.conversation_id.clone(),
            integration_id: start.integration_id.clone(),
            provider: start.provider.to_string(),
            consumer_key: start.consumer_key.clone(),
            created_at: now_ms(),
        };
        self.store
            .intent_begin(&intent, HANDOFF_LEASE_MS)
            .await
            .map_err(|e| e.to_string())
    }

    async fn abandon(&self, handoff_id: &str) {
        // Left behind, the reconcile settles it after the lease: nothing is lost.
        if let Err(e) = self.store.intent_drop(handoff_id).await {
            tracing::warn!(handoff_id, error = %e, "handoff intent not dropped");
        }
    }
}

/// Records a conversation a webhook announced, unless a live chat tracks it.
pub async fn record_sighting(
    state: &ServiceState,
    integration_id: &str,
    seen: &ConversationSighting,
) -> Result<(), StoreError> {
    // The store leaves out a conversation a live chat tracks.
    state
        .store()
        .sighting_record(&Sighting {
            integration_id: integration_id.to_string(),
            provider_conversation_id: seen.provider_conversation_id.clone(),
            consumer_id: seen.consumer_id.clone(),
            open: seen.open,
            seen_at: now_ms(),
        })
        .await
}

/// Claims and settles intents whose lease ran out, at start and then every second,
/// until shutdown.
pub async fn run_reconciler(state: ServiceState, mut stop: watch::Receiver<bool>) {
    let mut last_prune = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        if now_ms() - last_prune > 3_600_000 {
            last_prune = now_ms();
            if let Err(e) = state
                .store()
                .sightings_prune(last_prune - SIGHTING_RETENTION_MS)
                .await
            {
                tracing::warn!(error = %e, "sightings not pruned");
            }
        }
        round(&state, &stop).await;
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

/// One pass over the intents whose lease ran out.
async fn round(state: &ServiceState, stop: &watch::Receiver<bool>) {
    let store = state.store();
    let intents = match store.intents().await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "handoff intents not listed");
            return;
        }
    };
    let now = now_ms();
    let mut seen: HashSet<String> = HashSet::new();
    for i in intents.iter().filter(|i| i.lease_until <= now).take(BATCH) {
        if *stop.borrow() {
            return;
        }
        if seen.contains(&i.handoff_id) {
            continue;
        }
        let claim = uuid::Uuid::new_v4().to_string();
        match store
            .intent_group_claim(&i.handoff_id, now_ms(), INTENT_LEASE_MS, &claim)
            .await
        {
            Ok(Some(group)) if !group.is_empty() => {
                seen.extend(group.iter().map(|g| g.handoff_id.clone()));
                settle(state, &group, &claim).await;
            }
            // Gone, or another handoff of the consumer is still running: next round.
            Ok(_) => {}
            Err(e) => tracing::warn!(handoff_id = %i.handoff_id, error = %e,
                "handoff intent not claimed"),
        }
    }
}

/// What a reconcile attempt came to.
enum Outcome {
    /// Settled: the intents are gone.
    Settled(&'static str),
    /// Not yet: why (kept, tried again after the lease).
    Pending(String),
}

/// Why an intent could not be settled this time.
#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("provider: {0}")]
    Provider(String),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn perr(e: crate::actions::ActionError) -> ReconcileError {
    ReconcileError::Provider(e.message)
}

/// Settles one claimed group (logged; unresolved past the deadline is reported once).
async fn settle(state: &ServiceState, group: &[IntentState], claim: &str) {
    let Some(target) = group.last() else { return };
    let why = match reconcile(state, group, claim).await {
        Ok(Outcome::Settled(what)) => {
            tracing::info!(
                handoff_id = %target.handoff_id,
                conversation_id = %target.conversation_id,
                provider = %target.provider,
                integration_id = %target.integration_id,
                intents = group.len(),
                outcome = what,
                "interrupted handoff reconciled"
            );
            record(
                state,
                target,
                json!({"outcome": what, "intents": group.len()}),
            )
            .await;
            return;
        }
        Ok(Outcome::Pending(why)) => why,
        Err(e) => e.to_string(),
    };
    let now = now_ms();
    let after_ms = (state.config().reconcile.unresolved_after_s as i64) * 1000;
    for i in group {
        let late = now - i.created_at > after_ms;
        let note = IntentNote {
            unresolved_at: (late && i.unresolved_at.is_none()).then_some(now),
            note: Some(why.clone()),
            ..IntentNote::default()
        };
        if let Err(e) = state.store().intent_note(&i.handoff_id, claim, &note).await {
            tracing::warn!(handoff_id = %i.handoff_id, error = %e, "handoff intent not noted");
        }
        if note.unresolved_at.is_some() {
            tracing::error!(
                provider = %i.provider,
                integration_id = %i.integration_id,
                consumer = i.consumer_key.as_deref().unwrap_or(""),
                lp_consumer_id = i.lp_consumer_id.as_deref().unwrap_or(""),
                handoff_id = %i.handoff_id,
                conversation_id = %i.conversation_id,
                started_at_ms = i.created_at,
                unresolved_at_ms = now,
                reason = %why,
                "interrupted handoff unresolved: a provider conversation of this consumer may \
                 be open and untracked; close it at the provider, then `transbordo intents \
                 --config FILE --forget HANDOFF_ID` (docs/operations.md)"
            );
            record(
                state,
                i,
                json!({"outcome": "unresolved", "reason": why,
                       "started_at_ms": i.created_at}),
            )
            .await;
        } else {
            tracing::warn!(handoff_id = %i.handoff_id, reason = %why,
                "interrupted handoff not reconciled yet");
        }
    }
}

/// A `reconcile` timeline entry for the handoff's conversation.
async fn record(state: &ServiceState, i: &IntentState, mut data: serde_json::Value) {
    data["provider"] = json!(i.provider);
    data["integration_id"] = json!(i.integration_id);
    state
        .record(vec![TimelineEntry {
            live_chat_id: i.handoff_id.clone(),
            conversation_id: i.conversation_id.clone(),
            at: now_ms(),
            kind: "reconcile".into(),
            data,
        }])
        .await;
}

async fn release_all(
    state: &ServiceState,
    group: &[IntentState],
    claim: &str,
) -> Result<(), StoreError> {
    for i in group {
        state.store().intent_release(&i.handoff_id, claim).await?;
    }
    Ok(())
}

/// The builder's conversation has a live chat newer than the intent (or an open one):
/// the builder moved on, so the cut handoff's conversation is not adopted.
async fn moved_on(state: &ServiceState, i: &IntentState) -> Result<bool, StoreError> {
    Ok(state
        .store()
        .latest_for_conversation(&i.conversation_id)
        .await?
        .is_some_and(|c| c.created_at >= i.created_at || c.state.is_open()))
}

fn handoff_for(integration: &Integration, i: &IntentState, pcid: &str) -> Handoff {
    Handoff {
        provider: integration.provider,
        integration_id: integration.id.clone(),
        provider_conversation_id: pcid.to_string(),
        consumer_token_key: i.consumer_key.clone(),
        handoff_id: i.handoff_id.clone(),
        requester_id: None,
    }
}

async fn close(
    state: &ServiceState,
    integration: &Integration,
    i: &IntentState,
    pcid: &str,
) -> Result<(), ReconcileError> {
    state
        .engine()
        .services()
        .providers
        .close(
            integration,
            &handoff_for(integration, i, pcid),
            CloseReason::Error,
        )
        .await
        .map_err(perr)
}

async fn reconcile(
    state: &ServiceState,
    group: &[IntentState],
    claim: &str,
) -> Result<Outcome, ReconcileError> {
    let Some(target) = group.last() else {
        return Ok(Outcome::Settled("nothing to do"));
    };
    let integrations = state.config().integrations.clone();
    let Some(integration) = integrations.get(&IntegrationId::new(target.integration_id.clone()))
    else {
        release_all(state, group, claim).await?;
        return Ok(Outcome::Settled("integration no longer configured"));
    };
    let kind = integration.provider;
    if kind == liveperson::KIND {
        liveperson_reconcile(state, integration, group, claim).await
    } else if kind == altu::KIND {
        altu_reconcile(state, integration, target, claim).await
    } else if kind == zendesk::KIND {
        zendesk_reconcile(state, integration, target, claim).await
    } else {
        Ok(Outcome::Pending(format!(
            "no lookup of an interrupted handoff is built for provider `{kind}`"
        )))
    }
}

async fn liveperson_reconcile(
    state: &ServiceState,
    integration: &Integration,
    group: &[IntentState],
    claim: &str,
) -> Result<Outcome, ReconcileError> {
    let store = state.store();
    let client = &state.engine().services().providers;
    let Some(target) = group.last() else {
        return Ok(Outcome::Settled("nothing to do"));
    };
    let Some(ext) = target.consumer_key.clone() else {
        release_all(state, group, claim).await?;
        return Ok(Outcome::Settled("no consumer id"));
    };
    // When the group was claimed: a sighting after it may be a newer handoff's.
    let claimed_at = target.lease_until - INTENT_LEASE_MS;
    let lp_id = match group.iter().find_map(|g| g.lp_consumer_id.clone()) {
        Some(id) => id,
        None => {
            let id = client
                .liveperson_consumer_id(integration, &ext)
                .await
                .map_err(perr)?;
            let note = IntentNote {
                lp_consumer_id: Some(id.clone()),
                ..IntentNote::default()
            };
            store.intent_note(&target.handoff_id, claim, &note).await?;
            id
        }
    };
    let probes: HashSet<String> = group
        .iter()
        .filter_map(|g| g.probe_conversation_id.clone())
        .collect();
    let oldest = group.iter().map(|g| g.created_at).min().unwrap_or(0);
    let sightings = store.sightings(&target.integration_id, &lp_id).await?;
    let mut candidates = Vec::new();
    for s in &sightings {
        if probes.contains(&s.provider_conversation_id) {
            // A probe whose close failed: closed again.
            if s.open {
                close(state, integration, target, &s.provider_conversation_id).await?;
            }
            continue;
        }
        if !s.open || s.seen_at < oldest - SKEW_MS || s.seen_at > claimed_at {
            continue;
        }
        if store
            .find_by_provider(&target.integration_id, &s.provider_conversation_id)
            .await?
            .is_none()
        {
            candidates.push(s.provider_conversation_id.clone());
        }
    }
    if let Some(search) = client
        .liveperson_consumer_search(integration, &lp_id)
        .await
        .map_err(perr)?
    {
        // With the Interactions API keys the search answers (it sees what the sightings
        // saw, and what lost webhooks did not): no second request, ever.
        return search_settle(state, integration, group, claim, &probes, search).await;
    }
    if !candidates.is_empty() {
        return decide(state, integration, group, claim, candidates).await;
    }
    if let Some(probe) = &target.probe_conversation_id {
        return Ok(
            if sightings
                .iter()
                .any(|s| &s.provider_conversation_id == probe)
            {
                // Its webhook came, and none for a conversation of the handoff's: the
                // provider never opened one (or it closed before).
                release_all(state, group, claim).await?;
                Outcome::Settled(
                    "nothing open (the second request's webhook came, none of the handoff's)",
                )
            } else {
                Outcome::Pending(
                    "waiting for the webhook of the second request's conversation".into(),
                )
            },
        );
    }
    match client
        .liveperson_second_request(integration, &ext)
        .await
        .map_err(perr)?
    {
        SecondRequest::Named(id) => {
            // A handoff of this consumer that began meanwhile may own it: then wait.
            let now = now_ms();
            let again = store
                .intent_group_claim(&target.handoff_id, now, INTENT_LEASE_MS, claim)
                .await?;
            let same = again.as_ref().is_some_and(|a| {
                a.len() == group.len()
                    && a.iter()
                        .zip(group)
                        .all(|(x, y)| x.handoff_id == y.handoff_id)
            });
            if !same {
                return Ok(Outcome::Pending(
                    "another handoff of the consumer began; tried again later".into(),
                ));
            }
            if store
                .find_by_provider(&target.integration_id, &id)
                .await?
                .is_some()
            {
                release_all(state, group, claim).await?;
                return Ok(Outcome::Settled(
                    "nothing open (the consumer's open conversation is tracked)",
                ));
            }
            decide(state, integration, group, claim, vec![id]).await
        }
        SecondRequest::Granted(id) => {
            let note = IntentNote {
                probe_conversation_id: Some(id.clone()),
                note: Some("a second request was granted and closed at once".into()),
                ..IntentNote::default()
            };
            store.intent_note(&target.handoff_id, claim, &note).await?;
            close(state, integration, target, &id).await?;
            Ok(Outcome::Pending(
                "a second request was granted (closed at once); waiting for its webhook".into(),
            ))
        }
        SecondRequest::RefusedUnnamed if tracked_open(state, target, &ext).await? => {
            // A refusal means one conversation at a time: the consumer's is the tracked one.
            release_all(state, group, claim).await?;
            Ok(Outcome::Settled(
                "nothing open (the consumer's open conversation is tracked)",
            ))
        }
        SecondRequest::RefusedUnnamed => Ok(Outcome::Pending(
            "LivePerson refused a second conversation without naming the open one, and no \
             webhook named one yet"
                .into(),
        )),
    }
}

/// Whether the group can still be claimed as it was (no handoff of the consumer began
/// since): then a conversation found now is one of the group's or an older one.
async fn same_group(
    state: &ServiceState,
    group: &[IntentState],
    claim: &str,
) -> Result<bool, StoreError> {
    let Some(target) = group.last() else {
        return Ok(false);
    };
    let again = state
        .store()
        .intent_group_claim(&target.handoff_id, now_ms(), INTENT_LEASE_MS, claim)
        .await?;
    Ok(again.as_ref().is_some_and(|a| {
        a.len() == group.len()
            && a.iter()
                .zip(group)
                .all(|(x, y)| x.handoff_id == y.handoff_id)
    }))
}

/// Settles the group from the Messaging Interactions search, authoritative when its keys
/// are configured (past its lag it lists every open conversation, sighted or not): the
/// consumer's untracked `OPEN` conversations that started after the
/// group's first handoff began are the cut handoffs' (the newest adopted, the rest
/// closed). Older untracked ones are left alone: nothing ties them to these handoffs
/// (another channel of the brand, or one an operator handles). The search lags behind
/// (`interactions_lag_s`): until every handoff of the group is older than that, its
/// answer is not trusted and the group is tried again later.
async fn search_settle(
    state: &ServiceState,
    integration: &Integration,
    group: &[IntentState],
    claim: &str,
    probes: &HashSet<String>,
    search: liveperson::ConsumerSearch,
) -> Result<Outcome, ReconcileError> {
    let Some(target) = group.last() else {
        return Ok(Outcome::Settled("nothing to do"));
    };
    let lag_ms = integration
        .settings
        .get::<liveperson::LivePersonSettings>()
        .map_or(60_000, |s| (s.interactions_lag_s as i64) * 1000);
    let newest = group.iter().map(|g| g.created_at).max().unwrap_or(0);
    if now_ms() - newest < lag_ms {
        return Ok(Outcome::Pending(format!(
            "the Messaging Interactions search lags up to {} s behind; tried again then",
            lag_ms / 1000
        )));
    }
    if search.count > search.open.len() as u64 {
        tracing::warn!(handoff_id = %target.handoff_id, count = search.count,
            "the consumer has more open conversations than one search page; the first page is settled");
    }
    let oldest = group.iter().map(|g| g.created_at).min().unwrap_or(0);
    let mut found: Vec<(String, i64)> = Vec::new();
    for f in &search.open {
        if probes.contains(&f.conversation_id) {
            close(state, integration, target, &f.conversation_id).await?;
            continue;
        }
        let start = f.started_at_ms.unwrap_or(oldest);
        if start < oldest - SKEW_MS || found.iter().any(|(c, _)| c == &f.conversation_id) {
            continue;
        }
        found.push((f.conversation_id.clone(), start));
    }
    if !same_group(state, group, claim).await? {
        return Ok(Outcome::Pending(
            "another handoff of the consumer began; tried again later".into(),
        ));
    }
    let mut untracked = Vec::new();
    for (c, start) in found {
        if state
            .store()
            .find_by_provider(&target.integration_id, &c)
            .await?
            .is_none()
        {
            untracked.push((c, start));
        }
    }
    if untracked.is_empty() {
        release_all(state, group, claim).await?;
        return Ok(Outcome::Settled(
            "nothing open (the Messaging Interactions search found none untracked)",
        ));
    }
    // Oldest first: `decide` adopts the last, the newest.
    untracked.sort_by_key(|(_, start)| *start);
    decide(
        state,
        integration,
        group,
        claim,
        untracked.into_iter().map(|(c, _)| c).collect(),
    )
    .await
}

/// The builder's conversation has an open (waiting, with agent) LivePerson live chat of
/// the same consumer on the same integration.
async fn tracked_open(
    state: &ServiceState,
    i: &IntentState,
    ext: &str,
) -> Result<bool, StoreError> {
    Ok(state
        .store()
        .latest_for_conversation(&i.conversation_id)
        .await?
        .is_some_and(|c| {
            c.state.is_open()
                && c.integration_id == i.integration_id
                && c.handoff
                    .as_deref()
                    .and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok())
                    .is_some_and(|h| h["consumer_token_key"] == ext)
        }))
}

/// Adopts the newest candidate for the newest intent, closes the others (all of them
/// when the builder moved on).
async fn decide(
    state: &ServiceState,
    integration: &Integration,
    group: &[IntentState],
    claim: &str,
    mut candidates: Vec<String>,
) -> Result<Outcome, ReconcileError> {
    let Some(target) = group.last() else {
        return Ok(Outcome::Settled("nothing to do"));
    };
    if moved_on(state, target).await? {
        for c in &candidates {
            close(state, integration, target, c).await?;
        }
        release_all(state, group, claim).await?;
        return Ok(Outcome::Settled("closed (the builder moved on)"));
    }
    let Some(adopt) = candidates.pop() else {
        return Ok(Outcome::Settled("nothing to do"));
    };
    for c in &candidates {
        close(state, integration, target, c).await?;
    }
    match state
        .adopt_live_chat(
            &target.conversation_id,
            &handoff_for(integration, target, &adopt),
            claim,
        )
        .await
    {
        Ok(_) => {
            release_all(state, group, claim).await?;
            Ok(Outcome::Settled("adopted"))
        }
        Err(LifecycleError::AlreadyOpen) => {
            close(state, integration, target, &adopt).await?;
            release_all(state, group, claim).await?;
            Ok(Outcome::Settled(
                "closed (the conversation has another live chat)",
            ))
        }
        Err(LifecycleError::Store(StoreError::IntentClaimed)) => Ok(Outcome::Pending(
            "the claim ran out before the adoption; tried again".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn altu_reconcile(
    state: &ServiceState,
    integration: &Integration,
    i: &IntentState,
    claim: &str,
) -> Result<Outcome, ReconcileError> {
    let client = &state.engine().services().providers;
    let pcid = client
        .altu_replay_open(integration, &i.handoff_id, &i.conversation_id)
        .await
        .map_err(perr)?;
    if moved_on(state, i).await? {
        close(state, integration, i, &pcid).await?;
        release_all(state, std::slice::from_ref(i), claim).await?;
        return Ok(Outcome::Settled(
            "closed (the conversation has a newer live chat)",
        ));
    }
    let handoff = handoff_for(integration, i, &pcid);
    match state
        .adopt_live_chat(&i.conversation_id, &handoff, claim)
        .await
    {
        Ok(chat) => {
            // Recorded so that its ending reaches the builder (`live_chat_ended` error).
            state.end_with_error(&chat).await?;
            Ok(Outcome::Settled("closed, ended with error"))
        }
        Err(LifecycleError::AlreadyOpen) => {
            close(state, integration, i, &pcid).await?;
            release_all(state, std::slice::from_ref(i), claim).await?;
            Ok(Outcome::Settled(
                "closed (the conversation has another live chat)",
            ))
        }
        Err(LifecycleError::Store(StoreError::IntentClaimed)) => Ok(Outcome::Pending(
            "the claim ran out before the live chat was recorded".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn zendesk_reconcile(
    state: &ServiceState,
    integration: &Integration,
    i: &IntentState,
    claim: &str,
) -> Result<Outcome, ReconcileError> {
    let client = &state.engine().services().providers;
    let tickets = client
        .zendesk_tickets_by_external_id(integration, &i.handoff_id)
        .await
        .map_err(perr)?;
    let mut open: Vec<String> = tickets
        .iter()
        .filter(|t| !matches!(t.status.as_str(), "solved" | "closed"))
        .map(|t| t.id.clone())
        .collect();
    if tickets.is_empty() {
        release_all(state, std::slice::from_ref(i), claim).await?;
        return Ok(Outcome::Settled("no ticket (the create never happened)"));
    }
    if open.is_empty() {
        release_all(state, std::slice::from_ref(i), claim).await?;
        return Ok(Outcome::Settled("its tickets are already solved"));
    }
    let note = |why: &str| {
        format!(
            "transbordo: this ticket was opened by a handoff (id {}) that a crash cut before \
             it was tracked; {why}. Closed automatically.",
            i.handoff_id
        )
    };
    if moved_on(state, i).await? {
        let text = note("the bot conversation has moved on (its handoff was retried)");
        for t in &open {
            client
                .zendesk_close_with_note(integration, t, &text)
                .await
                .map_err(perr)?;
        }
        release_all(state, std::slice::from_ref(i), claim).await?;
        return Ok(Outcome::Settled(
            "closed with a note (the builder moved on)",
        ));
    }
    // Oldest first (the create's); the others are duplicates of the same handoff.
    open.sort_by_key(|t| t.parse::<u64>().unwrap_or(u64::MAX));
    let adopt = open.remove(0);
    let requester = tickets
        .iter()
        .find(|t| t.id == adopt)
        .and_then(|t| t.requester_id.clone());
    let text = note(&format!("ticket {adopt} is the one tracked"));
    for t in &open {
        client
            .zendesk_close_with_note(integration, t, &text)
            .await
            .map_err(perr)?;
    }
    match state
        .adopt_live_chat(
            &i.conversation_id,
            &Handoff {
                requester_id: requester,
                ..handoff_for(integration, i, &adopt)
            },
            claim,
        )
        .await
    {
        Ok(_) => Ok(Outcome::Settled("adopted")),
        Err(LifecycleError::AlreadyOpen) => {
            let text = note("the bot conversation has another live chat");
            client
                .zendesk_close_with_note(integration, &adopt, &text)
                .await
                .map_err(perr)?;
            release_all(state, std::slice::from_ref(i), claim).await?;
            Ok(Outcome::Settled("closed with a note (another live chat)"))
        }
        Err(LifecycleError::Store(StoreError::IntentClaimed)) => Ok(Outcome::Pending(
            "the claim ran out before the adoption".into(),
        )),
        Err(e) => Err(e.into()),
    }
}
