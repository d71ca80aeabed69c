//! `transbordo sandbox …`: run the fakes, or play the agent against a running sandbox.

use super::output::outln;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use serde::Serialize;

use crate::sandbox::Sandbox;
use crate::sandbox::{
    ActionResult, CloseReason, ConversationStatus, ConversationView, Fault, FaultRule, JoinRequest,
    NotificationView, Provider, SandboxOptions, SignatureOrder, TokenSettings, WebhookPatch,
};
use crate::sandbox::{ControlError, SandboxControl};

/// Arguments of `transbordo sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SandboxCommand,
}

/// How to reach a running sandbox.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Base URL of the running sandbox.
    #[arg(long, default_value = "http://127.0.0.1:8910", global = true)]
    pub url: String,
    /// Print raw JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Options of `sandbox serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to bind (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 8910)]
    pub port: u16,
    /// Where LivePerson webhooks go.
    #[arg(long)]
    pub lp_webhook_url: Option<String>,
    /// Where Zendesk webhooks go.
    #[arg(long)]
    pub zendesk_webhook_url: Option<String>,
    /// Where ALTU agent events go.
    #[arg(long)]
    pub altu_webhook_url: Option<String>,
    /// What the Zendesk webhook signature covers.
    #[arg(long, value_enum, default_value_t = SignatureOrder::TimestampBody)]
    pub zendesk_signature_order: SignatureOrder,
    /// LivePerson account id.
    #[arg(long, default_value = "12345678")]
    pub lp_account_id: String,
    /// LivePerson app client_id.
    #[arg(long, default_value = "sandbox-client")]
    pub lp_client_id: String,
    /// LivePerson app client_secret.
    #[arg(long, default_value = "sandbox-secret")]
    pub lp_client_secret: String,
    /// LivePerson AppJWT lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub lp_token_ttl_s: u64,
    /// How a second conversation request by a consumer with one open is answered
    /// (LivePerson documents none; the reconcile handles each).
    #[arg(long, value_enum, default_value_t = crate::sandbox::SecondConversation::RefuseNamed)]
    pub lp_second_conversation: crate::sandbox::SecondConversation,
    /// The Messaging Interactions search leaves out conversations younger than this (ms):
    /// its indexing lag.
    #[arg(long, default_value_t = 0)]
    pub lp_search_lag_ms: u64,
    /// Zendesk API user email.
    #[arg(long, default_value = "bot@example.com")]
    pub zendesk_email: String,
    /// Zendesk API token.
    #[arg(long, default_value = "sandbox-token")]
    pub zendesk_api_token: String,
    /// Zendesk webhook signing secret.
    #[arg(long, default_value = "sandbox-webhook-secret")]
    pub zendesk_webhook_secret: String,
    /// ALTU access token.
    #[arg(long, default_value = "sandbox-access-token")]
    pub altu_access_token: String,
    /// ALTU access key (JWT HS256 key).
    #[arg(long, default_value = "sandbox-access-key")]
    pub altu_access_key: String,
}

impl ServeArgs {
    /// The sandbox options these arguments describe.
    pub fn options(&self) -> SandboxOptions {
        let mut o = SandboxOptions {
            bind: SocketAddr::new(self.host, self.port),
            ..SandboxOptions::default()
        };
        o.liveperson.account_id = self.lp_account_id.clone();
        if let Some(app) = o.liveperson.apps.first_mut() {
            app.client_id = self.lp_client_id.clone();
            app.client_secret = self.lp_client_secret.clone();
        }
        o.liveperson.token_ttl_s = self.lp_token_ttl_s;
        o.liveperson.second_conversation = self.lp_second_conversation;
        o.liveperson.search_lag_ms = self.lp_search_lag_ms;
        o.zendesk.email = self.zendesk_email.clone();
        o.zendesk.api_token = self.zendesk_api_token.clone();
        o.zendesk.webhook_secret = self.zendesk_webhook_secret.clone();
        o.altu.access_token = self.altu_access_token.clone();
        o.altu.access_key = self.altu_access_key.clone();
        o.webhooks.liveperson.url = self.lp_webhook_url.clone();
        o.webhooks.zendesk.url = self.zendesk_webhook_url.clone();
        o.webhooks.zendesk.signature_order = self.zendesk_signature_order;
        o.webhooks.altu.url = self.altu_webhook_url.clone();
        o
    }
}

/// Options of `sandbox faults add`.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    /// Provider whose requests are hit.
    #[arg(long, value_enum)]
    pub provider: Provider,
    /// Endpoint (`token`, `consumer`, `conversation`, `send`, `csds`, `users`, `tickets`, `events`, `*`).
    #[arg(long, default_value = "*")]
    pub endpoint: String,
    /// Answer with this HTTP status and the provider's error body.
    #[arg(long)]
    pub status: Option<u16>,
    /// `Retry-After` seconds.
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Body to send instead of the provider's.
    #[arg(long)]
    pub body: Option<String>,
    /// Delay before handling, in ms.
    #[arg(long)]
    pub delay_ms: Option<u64>,
    /// Cut the answer's body in half.
    #[arg(long)]
    pub malformed: bool,
    /// Expire LivePerson AppJWTs first.
    #[arg(long)]
    pub expire_tokens: bool,
    /// How many matching requests it applies to.
    #[arg(long, default_value_t = 1)]
    pub times: u32,
}

/// `sandbox faults …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FaultsCommand {
    /// Add a fault rule.
    Add(FaultArgs),
    /// List pending rules.
    List,
    /// Remove all rules.
    Clear,
}

/// Subcommands of `transbordo sandbox`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SandboxCommand {
    /// Run the fakes until Ctrl-C / SIGTERM.
    Serve(ServeArgs),
    /// List conversations of all providers.
    Conversations {
        /// Only this provider.
        #[arg(long, value_enum)]
        provider: Option<Provider>,
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<ConversationStatus>,
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// Show one conversation with its transcript.
    Show {
        /// Conversation id (provider side).
        id: String,
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// Join a conversation as the agent.
    Join {
        /// Conversation id.
        id: String,
        /// Agent id.
        #[arg(long)]
        agent_id: Option<String>,
        /// Agent name.
        #[arg(long)]
        agent_name: Option<String>,
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// Send an agent message, or a file (`--file PATH`, the text its caption).
    Say {
        /// Conversation id.
        id: String,
        /// The message (words are joined with spaces).
        #[arg(required_unless_present = "file")]
        text: Vec<String>,
        /// A file the agent sends (its type guessed from the extension).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// Close a conversation.
    Close {
        /// Conversation id.
        id: String,
        /// Who closes it.
        #[arg(long, value_enum, default_value_t = CloseReason::Agent)]
        by: CloseReason,
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// Every webhook notification produced so far.
    Notifications {
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// Notifications whose delivery failed.
    Outbox {
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// Redeliver one notification, or all failed ones.
    Redeliver {
        /// Notification id (all failed ones if absent).
        id: Option<u64>,
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// Show or change a provider's webhook target and switches.
    Webhook {
        /// Provider.
        #[arg(value_enum)]
        provider: Provider,
        /// New target URL.
        #[arg(long, conflicts_with = "no_target")]
        target: Option<String>,
        /// Remove the target (record only).
        #[arg(long)]
        no_target: bool,
        /// More targets beside `--target`, tried in turn (round-robin, as a balancer in
        /// front of several replicas); repeat it, or give `--spread ''` to remove them.
        #[arg(long)]
        spread: Vec<String>,
        /// Deliver every notification twice.
        #[arg(long)]
        duplicate: Option<bool>,
        /// Re-send the previous notification after each new one.
        #[arg(long)]
        out_of_order: Option<bool>,
        /// Zendesk signature order.
        #[arg(long, value_enum)]
        signature_order: Option<SignatureOrder>,
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// Fault injection.
    Faults {
        /// What to do.
        #[command(subcommand)]
        command: FaultsCommand,
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// LivePerson AppJWT lifetime and early expiry.
    Tokens {
        /// New lifetime in seconds.
        #[arg(long)]
        ttl_s: Option<u64>,
        /// Expire every issued token now.
        #[arg(long)]
        expire_now: bool,
        /// Connection.
        #[command(flatten)]
        conn: Connection,
    },
}

/// Runs `transbordo sandbox …`.
pub async fn run_cli(args: SandboxArgs) -> ExitCode {
    match run(args.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot start the sandbox on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot read {0}: {1}")]
    File(String, std::io::Error),
}

fn print_json<T: Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("error: {e}"),
    }
}

fn status_name(s: ConversationStatus) -> &'static str {
    match s {
        ConversationStatus::Waiting => "waiting",
        ConversationStatus::WithAgent => "with_agent",
        ConversationStatus::Closed => "closed",
    }
}

fn line(c: &ConversationView) -> String {
    let agent = c.agent.as_ref().map(|a| a.name.as_str()).unwrap_or("-");
    let last = c
        .transcript
        .last()
        .map(|t| format!("{}: {}", t.role, t.text.lines().next().unwrap_or_default()))
        .unwrap_or_default();
    format!(
        "{:<10} {:<42} {:<10} {:<14} {}",
        c.provider,
        c.id,
        status_name(c.status),
        agent,
        last
    )
}

fn print_conversation(c: &ConversationView) {
    outln!("{}", line(c));
    if let Some(e) = &c.external_id {
        outln!("  external id: {e}");
    }
    if let Some(r) = c.close_reason {
        outln!(
            "  closed by: {}",
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        );
    }
    if let Some(t) = c.typing.filter(|t| t.consumer || t.agent) {
        let who: Vec<&str> = [("user", t.consumer), ("agent", t.agent)]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(w, _)| *w)
            .collect();
        outln!("  typing: {}", who.join(", "));
    }
    for f in &c.files {
        outln!(
            "  file [{}] {} ({}, {} bytes, sha256 {})",
            f.role,
            f.name,
            f.content_type,
            f.size,
            &f.sha256[..f.sha256.len().min(16)]
        );
    }
    for t in &c.transcript {
        // A multi-line message (a transcript block) stays one indented block.
        let prefix = format!("  [{}] ", t.role);
        let pad = " ".repeat(prefix.chars().count());
        for (i, l) in t.text.lines().enumerate() {
            outln!("{}{l}", if i == 0 { &prefix } else { &pad });
        }
    }
}

fn note_line(n: &NotificationView) -> String {
    let state = serde_json::to_value(n.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let status = n
        .last_status
        .map(|s| s.to_string())
        .or_else(|| n.last_error.clone())
        .unwrap_or_default();
    format!(
        "#{:<4} {:<10} {:<24} {:<10} attempts={} {}",
        n.id, n.provider, n.kind, state, n.attempts, status
    )
}

fn print_notes(ns: &[NotificationView], json: bool) {
    if json {
        print_json(&ns);
    } else if ns.is_empty() {
        outln!("(none)");
    } else {
        for n in ns {
            outln!("{}", note_line(n));
        }
    }
}

fn print_action(r: &ActionResult, json: bool) {
    if json {
        print_json(r);
    } else {
        print_conversation(&r.conversation);
        for n in &r.notifications {
            outln!("  -> {}", note_line(n));
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let opts = args.options();
    let bind = opts.bind;
    let sb = Sandbox::start(opts)
        .await
        .map_err(|e| CliError::Bind(bind, e))?;
    let b = sb.base_url();
    outln!("transbordo sandbox listening on {b}");
    outln!(
        "  LivePerson  csds_url = \"{b}\"  account_id = \"{}\"",
        args.lp_account_id
    );
    outln!("  Zendesk     base_url = \"{b}\"");
    outln!("  ALTU        webhook_url = \"{b}/altu/events\"");
    outln!("  control     {b}/_sandbox  (transbordo sandbox conversations --url {b})");
    wait_for_signal().await;
    outln!("shutting down");
    sb.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn run(cmd: SandboxCommand) -> Result<(), CliError> {
    match cmd {
        SandboxCommand::Serve(a) => serve(a).await?,
        SandboxCommand::Conversations {
            provider,
            status,
            conn,
        } => {
            let cs = SandboxControl::new(&conn.url)
                .conversations(provider, status)
                .await?;
            if conn.json {
                print_json(&cs);
            } else if cs.is_empty() {
                outln!("(no conversations)");
            } else {
                for c in &cs {
                    outln!("{}", line(c));
                }
            }
        }
        SandboxCommand::Show { id, conn } => {
            let c = SandboxControl::new(&conn.url).conversation(&id).await?;
            if conn.json {
                print_json(&c);
            } else {
                print_conversation(&c);
            }
        }
        SandboxCommand::Join {
            id,
            agent_id,
            agent_name,
            conn,
        } => {
            let r = SandboxControl::new(&conn.url)
                .join(
                    &id,
                    &JoinRequest {
                        agent_id,
                        agent_name,
                    },
                )
                .await?;
            print_action(&r, conn.json);
        }
        SandboxCommand::Say {
            id,
            text,
            file: None,
            conn,
        } => {
            let r = SandboxControl::new(&conn.url)
                .say(&id, &text.join(" "))
                .await?;
            print_action(&r, conn.json);
        }
        SandboxCommand::Say {
            id,
            text,
            file: Some(path),
            conn,
        } => {
            use base64::Engine as _;
            let bytes =
                std::fs::read(&path).map_err(|e| CliError::File(path.display().to_string(), e))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let file = crate::sandbox::SayFile {
                content_type: crate::providers::attachments::content_type_for(&name).to_string(),
                name,
                data_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            };
            let r = SandboxControl::new(&conn.url)
                .say_file(&id, &text.join(" "), file)
                .await?;
            print_action(&r, conn.json);
        }
        SandboxCommand::Close { id, by, conn } => {
            let r = SandboxControl::new(&conn.url).close(&id, by).await?;
            print_action(&r, conn.json);
        }
        SandboxCommand::Notifications { conn } => {
            print_notes(
                &SandboxControl::new(&conn.url).notifications().await?,
                conn.json,
            );
        }
        SandboxCommand::Outbox { conn } => {
            print_notes(&SandboxControl::new(&conn.url).outbox().await?, conn.json);
        }
        SandboxCommand::Redeliver { id, conn } => {
            let c = SandboxControl::new(&conn.url);
            let ns = match id {
                Some(i) => vec![c.redeliver(i).await?],
                None => c.redeliver_all().await?,
            };
            print_notes(&ns, conn.json);
        }
        SandboxCommand::Webhook {
            provider,
            target,
            no_target,
            spread,
            duplicate,
            out_of_order,
            signature_order,
            conn,
        } => {
            let c = SandboxControl::new(&conn.url);
            let patch = WebhookPatch {
                url: if no_target {
                    Some(None)
                } else {
                    target.map(Some)
                },
                spread: (!spread.is_empty())
                    .then(|| spread.into_iter().filter(|u| !u.is_empty()).collect()),
                duplicate,
                out_of_order,
                signature_order,
            };
            let s = c.set_webhook(provider, &patch).await?;
            print_json(&s);
        }
        SandboxCommand::Faults { command, conn } => {
            let c = SandboxControl::new(&conn.url);
            let rules = match command {
                FaultsCommand::Add(a) => {
                    let rule = FaultRule {
                        provider: a.provider,
                        endpoint: a.endpoint,
                        fault: Fault {
                            status: a.status,
                            retry_after: a.retry_after,
                            body: a.body,
                            delay_ms: a.delay_ms,
                            malformed: a.malformed,
                            expire_tokens: a.expire_tokens,
                        },
                        times: a.times,
                    };
                    c.add_fault(&rule).await?
                }
                FaultsCommand::List => c.faults().await?,
                FaultsCommand::Clear => {
                    c.clear_faults().await?;
                    Vec::new()
                }
            };
            print_json(&rules);
        }
        SandboxCommand::Tokens {
            ttl_s,
            expire_now,
            conn,
        } => {
            let v = SandboxControl::new(&conn.url)
                .liveperson_tokens(&TokenSettings { ttl_s, expire_now })
                .await?;
            print_json(&v);
        }
    }
    Ok(())
}

/// Default bind address of `serve`.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8910);
