//! `transbordo playground`: one page, served by the binary, that makes the whole loop
//! visible: edit a flow and its context, see `check`'s diagnostics at their line and
//! column, the dry run (messages, provider requests, context, contact, warnings), then
//! run it for real against the in-process sandbox and play the agent.
//!
//! Nothing here re-implements the engine, the sandbox or the lifecycle service: the
//! playground starts
//! - the **sandbox** ([`crate::sandbox::Sandbox`]) on a free loopback port,
//! - the **lifecycle service** ([`crate::service::serve_with`]) on another, with an
//!   in-memory SQLite store, the sandbox's integrations
//!   (`examples/sandbox-integrations.toml` pointed at that sandbox) and its builder
//!   callback pointed back at the playground, which verifies each event's signature.
//!   Its `/v1` routes take a bearer token made up at each start and known only to the
//!   playground (the sandbox's webhooks keep their providers' signatures), it answers
//!   only to a loopback `Host` and JSON bodies, and `http_request` may reach public
//!   addresses and the sandbox's exact address, nothing else on this machine or its
//!   network,
//! - and the page's own server, which checks and renders with [`crate::Engine`], runs
//!   flows through the service's HTTP API, and plays the agent through the sandbox's
//!   control API.
//!
//! The page's assets (plain HTML, CSS and JavaScript in `src/playground/assets/`) are
//! embedded with `include_str!`: no build step, no CDN.
//!
//! # HTTP API
//!
//! Every error is `{"error":{"code","message"}}` (plus `diagnostics` for `flow_invalid`,
//! `context` for `context_invalid`). `POST` bodies must be `application/json`, at most
//! 2 MB.
//!
//! | route | |
//! |---|---|
//! | `GET /` | the page (`/assets/app.js`, `/assets/style.css`) |
//! | `GET /api/info` | integrations (id, provider, parameters, timers), examples, URLs |
//! | `POST /api/check` | `{"flow","context"}` (texts) → `{"diagnostics","human","errors","warnings","context_error"}` |
//! | `POST /api/render` | `{"flow","context","strict"}` → the `transbordo render` document plus `trace` |
//! | `POST /api/run` | same body → `{"conversation"}`: the flow runs on the service, for real |
//! | `GET /api/conversations` | `{"conversations": [...]}`: run, live chat, provider view, events, re-entry |
//! | `POST /api/conversations/{id}/join` | an agent joins (sandbox control) |
//! | `POST /api/conversations/{id}/agent_message` | `{"text"?, "attachments"?}` the agent writes and/or sends a file (the first of `attachments`, `{name, content_type, data_base64}`) |
//! | `POST /api/conversations/{id}/user_message` | `{"text"?, "attachments"?}` the user writes and/or sends files (through the service's `/messages`) |
//! | `POST /api/conversations/{id}/typing` | `{"who":"agent"\|"user","typing":bool}` (the user's through the service's `/typing`) |
//! | `POST /api/conversations/{id}/close` | `{"by":"agent"\|"user"}` |
//!
//! On loopback (the default) requests must name a loopback `Host`, so a web page the
//! person visits cannot reach the playground through DNS rebinding; `--listen` with
//! another address is an explicit choice to serve beyond this machine.

mod api;
mod world;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use world::World;

/// Default port of `transbordo playground`.
pub const DEFAULT_PORT: u16 = 8930;

/// How to start a [`Playground`].
#[derive(Debug, Clone)]
pub struct PlaygroundOptions {
    /// Address of the page's server.
    pub bind: SocketAddr,
    /// Accept a `bind` that is not loopback (the CLI's `--listen`).
    pub allow_non_loopback: bool,
}

impl Default for PlaygroundOptions {
    fn default() -> Self {
        PlaygroundOptions {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            allow_non_loopback: false,
        }
    }
}

impl PlaygroundOptions {
    /// Loopback, a free port: for tests.
    pub fn ephemeral() -> Self {
        PlaygroundOptions {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            allow_non_loopback: false,
        }
    }
}

/// Why the playground could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaygroundError {
    /// A non-loopback address without the explicit opt-in.
    #[error(
        "refusing to serve the playground on {0}: it is not a loopback address and the page \
         runs flows without authentication; use --listen {0} to mean it"
    )]
    NotLoopback(SocketAddr),
    /// Binding or serving failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The in-process sandbox or service could not start.
    #[error("cannot start the playground: {0}")]
    Startup(String),
}

/// A running playground: the page's server, the sandbox and the service.
pub struct Playground {
    addr: SocketAddr,
    base_url: String,
    world: World,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// `http://host:port` for a bound address, with `0.0.0.0`/`::` shown as loopback.
fn visible_url(addr: SocketAddr) -> String {
    let shown = if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    };
    format!("http://{shown}")
}

impl Playground {
    /// Binds `opts.bind`, starts the sandbox and the service, and serves in the background.
    pub async fn start(opts: PlaygroundOptions) -> Result<Playground, PlaygroundError> {
        let loopback = opts.bind.ip().is_loopback();
        if !loopback && !opts.allow_non_loopback {
            return Err(PlaygroundError::NotLoopback(opts.bind));
        }
        let listener = tokio::net::TcpListener::bind(opts.bind)
            .await
            .map_err(|source| PlaygroundError::Bind {
                addr: opts.bind,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| PlaygroundError::Bind {
                addr: opts.bind,
                source,
            })?;
        let base_url = visible_url(addr);
        let world = World::start(&base_url).await?;
        let app = api::router(world.clone(), loopback);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Playground {
            addr,
            base_url,
            world,
            shutdown: Some(tx),
            task,
        })
    }

    /// `http://127.0.0.1:PORT`: the page.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The in-process sandbox's base URL (its control API is under `/_sandbox`).
    pub fn sandbox_url(&self) -> String {
        self.world.sandbox_url()
    }

    /// The in-process lifecycle service's base URL. Its `/v1` routes need a token only
    /// the playground holds; shown so tests (and the curious) can see it refuse.
    pub fn service_url(&self) -> String {
        self.world.service_url()
    }

    /// Stops the page's server, then the service and the sandbox.
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
        self.world.shutdown().await;
    }
}
