//! Handoffs cut by a crash (guarantee 6): `start_live_chat` records the handoff's intent
//! in the store before its first provider call ([`StoreJournal`]); the transaction that
//! records the live chat finishes it. An intent still there after its lease
//! ([`HANDOFF_LEASE_MS`], then [`INTENT_LEASE_MS`] per reconcile attempt) is a handoff whose process died between the provider call and
//! the live chat (or whose live chat could not be stored). Any replica claims it (a lease
//! again, so a reconciler that dies loses it too) and settles it with the provider:
//!
//! - **LivePerson**: the Connector API has no lookup; the consumer's open conversation is
//!   found by asking for a second one ([`crate::providers::liveperson::find_open_conversation`]).
//!   Untracked → adopted (the live chat exists from now on and ends normally); already
//!   tracked by a newer live chat → nothing left behind; none open → the conversation the
//!   lookup opened is closed.
//! - **ALTU SDK**: the OPEN is replayed with its `event_id`
//!   ([`crate::providers::altu::replay_open`]), which names the platform conversation; a
//!   replay cannot tell an old conversation from one it opened, so it is closed, never
//!   adopted.
//! - **Zendesk**: the ticket create is idempotent on the handoff id, but finding the ticket
//!   again needs its exact create body or a lookup by `external_id`, neither built: the
//!   intent is dropped with a warning (the ticket, if any, stays open at Zendesk).
//!
//! Where the conversation cannot be adopted and the builder's conversation has no newer
//! live chat, the handoff becomes a live chat that ends with `error` at once
//! (`live_chat_ended` through the outbox, like any ending), so the builder hears of it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::lifecycle::{now_ms, LifecycleError, ServiceState};
use super::store::{HandoffIntent, LiveChatStore};
use crate::interp::{HandoffJournal, HandoffStart};
use crate::providers::liveperson::{self, ConsumerConversation};
use crate::providers::{altu, CloseReason, Handoff, IntegrationId};

/// How long an intent belongs to the run that wrote it (a handoff's provider calls take
/// well under this), and how long a reconciler holds one it claimed.
pub const INTENT_LEASE_MS: i64 = 5_000;
/// The lease a handoff takes on its own intent when it begins: longer than its provider
/// calls may take with retries (10 s budget each), so no reconcile takes over a handoff
/// that is still running.
pub const HANDOFF_LEASE_MS: i64 = 30_000;
/// How often a replica looks for intents whose lease ran out.
const POLL: Duration = Duration::from_secs(1);
/// Intents claimed at a time.
const BATCH: usize = 32;
/// An intent this old that still cannot be settled (the provider keeps failing) is given up.
const GIVE_UP_MS: i64 = 24 * 3600 * 1000;

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

/// Claims and settles intents whose lease ran out, at start and then every second,
/// until shutdown.
pub async fn run_reconciler(state: ServiceState, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        match state
            .store()
            .intent_claim(now_ms(), INTENT_LEASE_MS, BATCH)
            .await
        {
            Ok(intents) => {
                for intent in intents {
                    if *stop.borrow() {
                        return;
                    }
                    settle(&state, &intent).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "handoff intents not claimed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

/// What became of one intent (logged).
async fn settle(state: &ServiceState, intent: &HandoffIntent) {
    match reconcile(state, intent).await {
        Ok(what) => {
            tracing::info!(
                handoff_id = %intent.handoff_id,
                conversation_id = %intent.conversation_id,
                provider = %intent.provider,
                outcome = what,
                "interrupted handoff reconciled"
            );
        }
        Err(e) if now_ms() - intent.created_at > GIVE_UP_MS => {
            tracing::error!(handoff_id = %intent.handoff_id, error = %e,
                "interrupted handoff given up: its provider conversation may stay open");
            let _ = state.store().intent_drop(&intent.handoff_id).await;
        }
        // The lease runs out and another try comes.
        Err(e) => tracing::warn!(handoff_id = %intent.handoff_id, error = %e,
            "interrupted handoff not reconciled yet"),
    }
}

/// Why an intent could not be settled this time.
#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("provider: {0}")]
    Provider(String),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
}

async fn reconcile(
    state: &ServiceState,
    intent: &HandoffIntent,
) -> Result<&'static str, ReconcileError> {
    let store = state.store();
    let integrations = state.config().integrations.clone();
    let Some(integration) = integrations.get(&IntegrationId::new(intent.integration_id.clone()))
    else {
        store.intent_drop(&intent.handoff_id).await?;
        return Ok("integration no longer configured");
    };
    let client = &state.engine().services().providers;
    let perr = |e: crate::actions::ActionError| ReconcileError::Provider(e.message);
    // (provider conversation, may it be adopted)
    let kind = integration.provider;
    let (pcid, adoptable) = if kind == liveperson::KIND {
        let Some(key) = intent.consumer_key.as_deref() else {
            store.intent_drop(&intent.handoff_id).await?;
            return Ok("no consumer id");
        };
        match client
            .liveperson_open_conversation(integration, key)
            .await
            .map_err(perr)?
        {
            ConsumerConversation::Open(id) => (id, true),
            ConsumerConversation::Opened(id) => (id, false),
        }
    } else if kind == altu::KIND {
        (
            client
                .altu_replay_open(integration, &intent.handoff_id, &intent.conversation_id)
                .await
                .map_err(perr)?,
            false,
        )
    } else {
        // Zendesk (and a provider registered later): no lookup of the interrupted
        // handoff's conversation is built.
        tracing::warn!(handoff_id = %intent.handoff_id, provider = %kind,
            "the provider conversation of an interrupted handoff is not looked up (not built)");
        store.intent_drop(&intent.handoff_id).await?;
        return Ok("provider not reconciled");
    };
    if adoptable
        && store
            .find_by_provider(&intent.integration_id, &pcid)
            .await?
            .is_some()
    {
        // The consumer's one open conversation is a tracked live chat (a retry's): the
        // interrupted handoff's conversation is no longer open.
        store.intent_drop(&intent.handoff_id).await?;
        return Ok("tracked by another live chat");
    }
    let handoff = Handoff {
        provider: integration.provider,
        integration_id: integration.id.clone(),
        provider_conversation_id: pcid,
        consumer_token_key: intent.consumer_key.clone(),
        handoff_id: intent.handoff_id.clone(),
        requester_id: None,
    };
    // A newer live chat of the builder's conversation: the builder moved on, so no ending
    // for this handoff; only the provider conversation is closed.
    let newer = store
        .latest_for_conversation(&intent.conversation_id)
        .await?
        .is_some_and(|c| c.created_at >= intent.created_at || c.state.is_open());
    if newer {
        client
            .close(integration, &handoff, CloseReason::Error)
            .await
            .map_err(perr)?;
        store.intent_drop(&intent.handoff_id).await?;
        return Ok("closed (the conversation has a newer live chat)");
    }
    // Recording the live chat finishes the intent in the same transaction.
    let chat = match state
        .start_live_chat(&intent.conversation_id, &handoff)
        .await
    {
        Ok(c) => c,
        Err(LifecycleError::AlreadyOpen) => {
            client
                .close(integration, &handoff, CloseReason::Error)
                .await
                .map_err(perr)?;
            store.intent_drop(&intent.handoff_id).await?;
            return Ok("closed (the conversation has another live chat)");
        }
        Err(e) => return Err(e.into()),
    };
    if adoptable {
        return Ok("adopted");
    }
    state.end_with_error(&chat).await?;
    Ok("closed, ended with error")
}
