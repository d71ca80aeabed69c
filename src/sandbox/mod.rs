//! Faithful local fakes of LivePerson, Zendesk and an agent platform, on one loopback port,
//! and a control API with which a person (or a test) plays the agent.
//!
//! One axum server serves:
//! - the **LivePerson** Connector API: CSDS (`/api/account/{account}/service/baseURI.json`),
//!   Sentinel (`/sentinel/api/account/{account}/app/token`), IdP (`/api/account/{account}/consumer`),
//!   CONVERSATION and SEND (`/api/account/{account}/messaging/consumer/conversation[/send]`),
//!   and the Messaging Interactions consumer search (CSDS `msgHist`,
//!   `/messaging_history/api/account/{account}/conversations/consumer/search`, OAuth 1.0a
//!   signature checked against [`LivePersonConfig`]'s `interactions` keys, 401 otherwise);
//! - the **Zendesk** Support API: `/api/v2/users/create_or_update`, `/api/v2/users/{id}`,
//!   `/api/v2/tickets`, `/api/v2/tickets/{id}` (all with or without `.json`);
//! - the **ALTU** agent platform: `POST /altu/events` (`docs/connector-protocol.md`);
//! - the **control API** under `/_sandbox` (see [`SandboxControl`]).
//!
//! Agent actions produce each provider's own signed webhook notifications towards the
//! configured targets; failed ones wait in an outbox for redelivery.
//!
//! # Control API
//!
//! | route | what |
//! |---|---|
//! | `GET /_sandbox` | [`SandboxInfo`]: URLs to put in an integrations file, webhook settings |
//! | `GET /_sandbox/conversations?provider=&status=` | `{"conversations": [ConversationView]}` |
//! | `GET /_sandbox/conversations/{id}` | one [`ConversationView`] (id = provider-side id) |
//! | `POST /_sandbox/conversations/{id}/join` | [`JoinRequest`] → [`ActionResult`] |
//! | `POST /_sandbox/conversations/{id}/say` | [`SayRequest`] → [`ActionResult`] (409 before a join) |
//! | `POST /_sandbox/conversations/{id}/close` | [`CloseRequest`] `{"by":"agent"\|"user"\|"system"}` → [`ActionResult`] |
//! | `GET /_sandbox/notifications` | every notification, `{"notifications": [NotificationView]}` |
//! | `GET /_sandbox/outbox` | notifications whose last delivery failed |
//! | `POST /_sandbox/outbox/redeliver`, `POST /_sandbox/outbox/{n}/redeliver` | deliver again |
//! | `GET /_sandbox/webhooks`, `PUT /_sandbox/webhooks/{provider}` | [`WebhookTargets`] / [`WebhookPatch`] |
//! | `GET`/`POST`/`DELETE /_sandbox/faults` | list / add a [`FaultRule`] / clear |
//! | `POST /_sandbox/liveperson/tokens` | [`TokenSettings`]: AppJWT lifetime, expire issued tokens |
//! | `GET`/`PUT /_sandbox/liveperson/second_conversation` | `{"behaviour": …}`: [`SecondConversation`] |
//! | `GET`/`PUT /_sandbox/liveperson/search_lag` | `{"lag_ms": n}`: the Messaging Interactions search leaves out conversations younger than `n` ms |
//!
//! Control errors are `{"error": "…"}` with 400, 404 or 409. The join/say/close answers come
//! after the delivery attempts, so they show whether the target accepted each notification.
//! Webhooks caused by provider API calls (a LivePerson conversation opened, a consumer
//! message echoed or a consumer close, a Zendesk status changed through `PUT`) are delivered
//! in the background.
//!
//! # Webhooks emitted
//!
//! - **LivePerson** (`x-liveperson-account-id`, `x-liveperson-client-id`,
//!   `x-liveperson-signature: sha1=<base64 HMAC-SHA1(client_secret, body)>`):
//!   `cqm.ExConversationChangeNotification` UPSERT on open (CONSUMER only), on join (with the
//!   ASSIGNED_AGENT participant and `conversationHandlerDetails`) and on close (`state`/`stage`
//!   `CLOSE`, `closeReason` AGENT (+ `closeReasonDescription: MANUAL_CLOSE`) / CONSUMER /
//!   SYSTEM, dialog `closedBy`); `ms.MessagingEventNotification` ContentEvent for agent
//!   messages (role ASSIGNED_AGENT) and the consumer's own echo (role CONSUMER; switch
//!   [`LivePersonConfig::consumer_echo`]).
//! - **Zendesk** (`X-Zendesk-Webhook-Signature` over timestamp ‖ body, or body ‖ timestamp
//!   with [`SignatureOrder::BodyTimestamp`]; `X-Zendesk-Webhook-Signature-Timestamp`):
//!   the event-subscribed envelope `{"type","account_id","id","subject":"zen:ticket:N","time",
//!   "zendesk_event_version","detail":{…string ids, upper-case status…},"event":…}` with
//!   `zen:event-type:ticket.status_changed` (`event: {"previous","current"}`, on join NEW→OPEN,
//!   agent close →SOLVED, user/system close →CLOSED, and any status change through the API),
//!   and `zen:event-type:ticket.comment_added` (`event: {"comment": {"id","body","is_public",
//!   "author": {"id","is_staff","name"}}}`) for agent messages only (comments the API caller
//!   adds do not produce one).
//! - **ALTU** (`docs/connector-protocol.md` §5; `Authorization: Bearer <HS256 JWT>` signed
//!   with `access_key`, claims `iss: "altu"`, `aud` = the target URL, `sub` = `access_token`,
//!   `iat`, `exp` = `iat` + 60, a fresh `jti` per attempt, `conversation_id`): the envelope
//!   `{"event","event_id","conversation_id" (the caller's id),"platform_conversation_id",
//!   "data"}` with `AGENT_JOINED` (`data.agent {id,name}`), `AGENT_MESSAGE` (`data.text`,
//!   `data.agent`), `AGENT_CLOSED` (`data.reason`: `"agent"` | `"system"`) and
//!   `USER_CLOSED` (`data: {}`, a close with `by: user`).
//!
//! With `duplicate`, every notification is sent twice; with `out_of_order`, after each
//! notification the previous one of the same conversation is sent again (older after newer).
//! With `spread` (more URLs beside `url`), delivery attempts go to each target in turn, as
//! a load balancer with no affinity in front of several replicas would send them.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use transbordo::sandbox::{Sandbox, SandboxOptions};
//! let sb = Sandbox::start(SandboxOptions::ephemeral()).await?;
//! println!("LivePerson csds_url = {}", sb.base_url());
//! let control = sb.control();
//! # let _ = control;
//! sb.shutdown().await;
//! # Ok(()) }
//! ```

// Handlers return a ready provider-shaped `Response` as their error: boxing it would only
// add noise to code that runs once per request of a test fake.
#![allow(clippy::result_large_err)]

mod altu;
mod client;
mod control;
mod faults;
mod files;
mod liveperson;
mod model;
pub mod signing;
mod state;
pub(crate) mod util;
mod webhooks;
mod zendesk;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use client::{ControlError, SandboxControl};
pub use model::SandboxOptions;
pub use model::{
    ActionResult, AgentView, AltuConfig, CloseReason, CloseRequest, ConversationStatus,
    ConversationView, DeliveryState, Fault, FaultRule, FileView, JoinRequest, LivePersonApiKeys,
    LivePersonApp, LivePersonConfig, NotificationView, Provider, SandboxInfo, SayFile, SayRequest,
    SecondConversation, SignatureOrder, TokenSettings, TranscriptEntry, TypingRequest, TypingView,
    WebhookPatch, WebhookSettings, WebhookTargets, ZendeskConfig,
};

use state::AppState;

/// A running sandbox server.
pub struct Sandbox {
    addr: SocketAddr,
    base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn not_found() -> Response {
    util::json(StatusCode::NOT_FOUND, json!({"error": "not found"}))
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(liveperson::routes())
        .merge(zendesk::routes())
        .merge(altu::routes())
        .merge(control::routes())
        .merge(files::routes())
        .fallback(not_found)
        // Uploads go up to Zendesk's 50 MB (and ALTU's inline base64 of 10 MiB).
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::layer,
        ))
        .with_state(state)
}

impl Sandbox {
    /// Binds `opts.bind`, starts serving in the background and returns at once.
    pub async fn start(opts: SandboxOptions) -> std::io::Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        let addr = listener.local_addr()?;
        let visible = if addr.ip().is_unspecified() {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        } else {
            addr
        };
        let base_url = format!("http://{visible}");
        let state = Arc::new(AppState::new(&opts, base_url.clone(), visible.to_string()));
        let app = router(state);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Sandbox {
            addr,
            base_url,
            shutdown: Some(tx),
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A control client for this sandbox.
    pub fn control(&self) -> SandboxControl {
        SandboxControl::new(self.base_url())
    }

    /// Stops accepting requests and waits (at most 5 s) for in-flight ones.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}
