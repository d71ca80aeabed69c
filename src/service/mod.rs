//! The lifecycle service (`transbordo serve`): runs flows for the builder, keeps each
//! live chat's state after `start_live_chat`, relays messages both ways, ends every live
//! chat exactly once, and calls the builder back with signed events.
//!
//! Pieces:
//! - [`config`]: the TOML config ([`ServiceConfig`]);
//! - [`store`]: the durable state behind [`LiveChatStore`]: SQLite ([`SqliteStore`], one
//!   process) or PostgreSQL ([`PgStore`], several replicas on one database);
//! - [`lifecycle`]: the state machine ([`ServiceState`]);
//! - [`webhooks`] and [`auth`]: provider events in, authenticated on the raw bytes (one
//!   route; each provider's [`webhooks::WebhookReceiver`] checks and parses its own);
//! - [`events`]: events out (shapes and signature); [`workers`]: timers and the outbox;
//! - [`provider`]: the [`LiveChatTransport`] seam to the provider clients.
//!
//! ## HTTP API
//! - `GET /healthz` → `{"status":"ok"}`
//! - `POST /v1/conversations/{id}/run` `{"flow": <doc> | "flow_file": "x.json",
//!   "context": {...}, "strict": false}` → the run document plus `live_chat`
//!   (409 `live_chat_open` while a live chat is open, 409 `run_in_progress`).
//! - `POST /v1/conversations/{id}/messages` `{"text"}` → relayed to the agent
//!   (409 `no_live_chat`; 502 `provider_error`, the chat then ends with `error`).
//! - `POST /v1/conversations/{id}/close` → the user closes (`user_closed`).
//! - `GET /v1/conversations/{id}/live_chat` → state, ids, timestamps, deadlines.
//! - `POST /webhooks/{liveperson|zendesk|altu}/{integration_id}` → provider events (the
//!   segment is the provider's [`webhooks::WebhookReceiver::segment`]).
//!
//! `/v1` posts take only `application/json` (`415 unsupported_media_type`), and a
//! loopback `listen` answers only to a loopback `Host` except on the webhooks (`403
//! forbidden_host`), so web pages cannot drive a local service (see [`api`]).

pub mod api;
pub mod attach;
pub use crate::providers::auth;
pub mod config;
pub mod events;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod provider;
pub mod reconcile;
pub mod store;
pub mod timeline;
pub use crate::providers::webhooks;
pub mod workers;

use std::future::Future;
use std::sync::Arc;

pub use config::{ConfigError, ServiceConfig};
pub use lifecycle::{now_ms, ServiceState};
pub use provider::LiveChatTransport;
pub use store::postgres::PgStore;
pub use store::sqlite::SqliteStore;
pub use store::{Database, LiveChatRecord, LiveChatStore, StoreError};

use crate::interp::Engine;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Binding or serving.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The HTTP clients could not be built.
    #[error("cannot start: {0}")]
    Startup(String),
}

/// The HTTP router over a state (for tests: serve it on any listener).
pub fn app(state: ServiceState) -> axum::Router {
    api::router(state)
}

/// Runs the service from a config: opens (creating) the database, binds `listen`,
/// serves until `shutdown` resolves, then finishes in-flight requests and stops the
/// timer and outbox workers.
pub async fn serve(
    config: ServiceConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let store = config
        .database
        .open_with(config.database_connections)
        .await?;
    let engine = Engine::try_new()
        .and_then(|e| e.with_http_guard(config.http_guard.clone()))
        .map_err(|e| ServiceError::Startup(e.to_string()))?
        .with_integrations((*config.integrations).clone())
        .with_limits(config.api.run_limits);
    let transport = provider::ProviderTransport::new(
        engine.services().providers.clone(),
        config.integrations.clone(),
    );
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let state = ServiceState::new(config, engine, store, Arc::new(transport));
    serve_with(state, listener, shutdown).await
}

/// Like [`serve`] with everything injected: the state (engine with host actions,
/// store, transport) and a bound listener. [`serve`] guards the engine's `http_request`
/// with [`Engine::with_http_guard`] and the config's `[http_request] allow`; do the same
/// with an engine of your own.
pub async fn serve_with(
    state: ServiceState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    if let Ok(addr) = listener.local_addr() {
        let cfg = state.config();
        tracing::info!(listen = %addr, database = %cfg.database, "listening");
        if cfg.api.tokens.is_empty() {
            tracing::warn!(
                listen = %addr,
                "the builder API is open: no [api] tokens, anyone who can reach this loopback \
                 address can run flows and close live chats"
            );
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Background work runs in a `background` trace span, so that what it costs the store
    // is told apart from what requests cost (the statement-count test reads it).
    use tracing::Instrument as _;
    let bg = || tracing::trace_span!("background");
    let listener_task =
        tokio::spawn(workers::run_listener(state.clone(), stop_rx.clone()).instrument(bg()));
    let scheduler =
        tokio::spawn(workers::run_scheduler(state.clone(), stop_rx.clone()).instrument(bg()));
    let outbox = tokio::spawn(workers::run_outbox(state.clone(), stop_rx.clone()).instrument(bg()));
    let reconciler =
        tokio::spawn(reconcile::run_reconciler(state.clone(), stop_rx.clone()).instrument(bg()));
    let pruner = tokio::spawn(workers::run_pruner(state.clone(), stop_rx).instrument(bg()));
    let state_for_flush = state.clone();
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    let _ = outbox.await;
    let _ = pruner.await;
    let _ = reconciler.await;
    let _ = listener_task.await;
    // The timeline lines of the last requests and deliveries.
    state_for_flush.flush_timeline().await;
    served.map_err(ServiceError::Io)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
