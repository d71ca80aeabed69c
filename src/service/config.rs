//! The service configuration file (TOML). See `examples/service.toml`.
//!
//! Relative paths (`database`, `integrations`, `flows_dir`) are relative to the config
//! file's directory. String values written `"${NAME}"` are read from the environment.

use crate::flow::json::line_col;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::store::Database;
use crate::actions::HttpGuard;
pub use crate::providers::webhooks::WebhookConfig;
use crate::providers::Integrations;

/// A config file that cannot be used. Messages carry `file:line:col` where the problem
/// has a position, and never the value of a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file cannot be read.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Invalid TOML or a bad value.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based.
        line: usize,
        /// 1-based.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A command-line flag that overrides the config is not acceptable.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag (`--listen`).
        flag: String,
        /// What is wrong.
        message: String,
    },
    /// The integrations file named by the config is invalid.
    #[error("integrations file {path}: {message}")]
    Integrations {
        /// The file.
        path: String,
        /// The loader's message.
        message: String,
    },
}

/// The builder's side: where events go and how they are signed.
#[derive(Clone)]
pub struct BuilderConfig {
    /// Events are POSTed here.
    pub callback_url: String,
    /// Key of `X-Transbordo-Signature` (never printed).
    pub signing_secret: String,
}

impl std::fmt::Debug for BuilderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuilderConfig")
            .field("callback_url", &self.callback_url)
            .field("signing_secret", &"[redacted]")
            .finish()
    }
}

/// Outbox delivery knobs.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryConfig {
    /// First retry delay; doubles per failed attempt.
    pub initial_backoff: Duration,
    /// Retry delay cap.
    pub max_backoff: Duration,
    /// Per-attempt HTTP timeout.
    pub timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The builder API's protection (`[api]`).
#[derive(Clone)]
pub struct ApiConfig {
    /// Bearer tokens accepted on `/v1/…` (several, so they can be rotated). Empty: the
    /// API is open, which is only allowed on a loopback `listen` address.
    pub tokens: Vec<String>,
    /// Largest body of `POST /v1/conversations/{id}/run` (bytes).
    pub max_run_body_bytes: usize,
    /// Largest body of the other `/v1/…` routes (bytes).
    pub max_body_bytes: usize,
    /// Largest body of `POST /v1/conversations/{id}/messages` (bytes, default 8 MiB):
    /// attachments sent inline (`data_base64`) count against it.
    pub max_message_body_bytes: usize,
    /// Sustained user messages per conversation per minute on `/messages` (0: no limit).
    pub messages_per_minute: u32,
    /// Messages a conversation may send in a burst above that rate.
    pub messages_burst: u32,
    /// `/v1/…` requests served at once (more wait up to 5 s for a slot, then get
    /// `503 busy`): with the body limits, what the API can hold in memory.
    pub max_in_flight: usize,
    /// Every run's budgets (`[limits]`; kept here, with the API's other protections):
    /// `max_bytes` (default 16 MiB of values built by templates and actions),
    /// `max_work` (evaluation work units, default sized for ~250 ms of CPU),
    /// `deadline_ms` (wall time of a run, provider calls included, default 30000) and
    /// `http_timeout_max_s` (largest `http_request` timeout, default 60). A spent budget
    /// fails the action with kind `limit`; the response stays a 200.
    pub run_limits: crate::template::RunLimits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            tokens: Vec::new(),
            max_run_body_bytes: 1 << 20,
            max_body_bytes: 64 << 10,
            max_message_body_bytes: 8 << 20,
            messages_per_minute: 60,
            messages_burst: 20,
            max_in_flight: 256,
            run_limits: crate::template::RunLimits::default(),
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("tokens", &format!("[{} redacted]", self.tokens.len()))
            .field("max_run_body_bytes", &self.max_run_body_bytes)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_message_body_bytes", &self.max_message_body_bytes)
            .field("messages_per_minute", &self.messages_per_minute)
            .field("messages_burst", &self.messages_burst)
            .field("max_in_flight", &self.max_in_flight)
            .field("run_limits", &self.run_limits)
            .finish()
    }
}

/// The per-conversation timeline (`[timeline]`).
#[derive(Debug, Clone, Copy)]
pub struct TimelineConfig {
    /// Entries, and builder events delivered, older than this many days are deleted
    /// (checked hourly).
    pub retention_days: u32,
    /// Keep the text of relayed messages (default: only their length).
    pub include_text: bool,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            retention_days: 30,
            include_text: false,
        }
    }
}

/// The reconcile of handoffs cut by a crash (`[reconcile]`).
#[derive(Debug, Clone, Copy)]
pub struct ReconcileConfig {
    /// An intent still not settled this long after its handoff began is reported
    /// unresolved (metric, timeline, error log, `transbordo intents`) and kept.
    pub unresolved_after_s: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            unresolved_after_s: 900,
        }
    }
}

/// Most statement connections the replicas of one database may share
/// (`database_connections`).
pub const MAX_DATABASE_CONNECTIONS: u32 = 1000;

/// Shortest accepted API token: guessing must be hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

/// Everything `transbordo serve` needs.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Address to bind (`127.0.0.1:8920`).
    pub listen: SocketAddr,
    /// Where the state lives: an SQLite file (created on first start) or a PostgreSQL URL.
    pub database: Database,
    /// `database_connections`: statement connections to PostgreSQL that all the
    /// replicas on the database share (8); each keeps ⌈this / replicas⌉, at least 2
    /// ([`crate::service::store::postgres::PgStore::rebalance`]).
    pub database_connections: u32,
    /// The integrations file it was loaded from.
    pub integrations_path: PathBuf,
    /// The live chat integrations.
    pub integrations: Arc<Integrations>,
    /// Flow files the builder may name with `flow_file` (none: inline flows only).
    pub flows_dir: Option<PathBuf>,
    /// Events out.
    pub builder: BuilderConfig,
    /// Outbox retry policy.
    pub delivery: DeliveryConfig,
    /// Webhook authentication windows, body limit and the top-level `public_url`.
    pub webhooks: WebhookConfig,
    /// Builder API tokens, body limits and the message rate limit.
    pub api: ApiConfig,
    /// Where `http_request` may go (`[http_request] allow`).
    pub http_guard: HttpGuard,
    /// Timeline retention and content.
    pub timeline: TimelineConfig,
    /// What the re-entry input tells the bot about the human part (`[reentry]`).
    pub reentry: crate::service::store::ReentryOptions,
    /// `[reconcile]`.
    pub reconcile: ReconcileConfig,
}

impl ServiceConfig {
    /// Binds `listen` instead of the config's (`serve --listen`), under the same rule:
    /// a non-loopback address needs `[api] tokens`.
    pub fn set_listen(&mut self, listen: SocketAddr) -> Result<(), ConfigError> {
        if self.api.tokens.is_empty() && !listen.ip().is_loopback() {
            return Err(ConfigError::Flag {
                flag: "--listen".into(),
                message: format!(
                    "{listen} is not a loopback address and `[api] tokens` is empty: the \
                     builder API would be open to anyone who reaches the port"
                ),
            });
        }
        self.listen = listen;
        Ok(())
    }
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("listen", &self.listen)
            .field("database", &self.database)
            .field("database_connections", &self.database_connections)
            .field("integrations_path", &self.integrations_path)
            .field("flows_dir", &self.flows_dir)
            .field("builder", &self.builder)
            .field("delivery", &self.delivery)
            .field("webhooks", &self.webhooks)
            .field("api", &self.api)
            .field("http_guard", &self.http_guard)
            .field("timeline", &self.timeline)
            .field("reentry", &self.reentry)
            .field("reconcile", &self.reconcile)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    database_connections: Option<Spanned<u32>>,
    integrations: Spanned<String>,
    flows_dir: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    builder: RawBuilder,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    webhooks: RawWebhooks,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    http_request: RawHttpRequest,
    #[serde(default)]
    timeline: RawTimeline,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    reentry: RawReentry,
    #[serde(default)]
    reconcile: RawReconcile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReentry {
    #[serde(default)]
    details: bool,
    #[serde(default)]
    transcript: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReconcile {
    unresolved_after_s: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_bytes: Option<Spanned<u64>>,
    max_work: Option<Spanned<u64>>,
    deadline_ms: Option<Spanned<u64>>,
    http_timeout_max_s: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeline {
    retention_days: Option<Spanned<u32>>,
    include_text: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    tokens: Option<Spanned<Vec<Spanned<String>>>>,
    max_run_body_bytes: Option<Spanned<usize>>,
    max_body_bytes: Option<Spanned<usize>>,
    max_message_body_bytes: Option<Spanned<usize>>,
    messages_per_minute: Option<u32>,
    messages_burst: Option<u32>,
    max_in_flight: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttpRequest {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuilder {
    callback_url: Spanned<String>,
    signing_secret: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    zendesk_replay_window_s: Option<u64>,
    jwt_clock_skew_s: Option<u64>,
    max_body_bytes: Option<Spanned<usize>>,
    max_in_flight: Option<Spanned<usize>>,
}

impl ServiceConfig {
    /// Reads and validates a config file (and the integrations file it names).
    pub fn from_file(path: &Path) -> Result<ServiceConfig, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        ServiceConfig::from_toml_str(&src, &path.display().to_string(), base)
    }

    /// Parses a config document; `name` labels errors, `base_dir` anchors relative paths.
    pub fn from_toml_str(
        src: &str,
        name: &str,
        base_dir: &Path,
    ) -> Result<ServiceConfig, ConfigError> {
        let invalid = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map(|s| line_col(src, s.start)).unwrap_or((1, 1));
            ConfigError::Invalid {
                file: name.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawConfig =
            toml::from_str(src).map_err(|e| invalid(e.span(), e.message().to_string()))?;
        let expand = |v: &Spanned<String>, key: &str| -> Result<String, ConfigError> {
            let s = v.get_ref();
            match s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                Some(var) => match std::env::var(var) {
                    Ok(val) if !val.is_empty() => Ok(val),
                    _ => Err(invalid(
                        Some(v.span()),
                        format!("`{key}`: environment variable {var} is not set"),
                    )),
                },
                None => Ok(s.clone()),
            }
        };
        let resolve = |p: String| -> PathBuf {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base_dir.join(p)
            }
        };
        let listen_s = match &raw.listen {
            Some(l) => expand(l, "listen")?,
            None => "127.0.0.1:8920".to_string(),
        };
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            invalid(
                raw.listen.as_ref().map(|l| l.span()),
                format!("`listen`: `{listen_s}` is not an address like 127.0.0.1:8920"),
            )
        })?;
        let database = Database::parse(
            &match &raw.database {
                Some(d) => expand(d, "database")?,
                None => "transbordo.db".to_string(),
            },
            base_dir,
        );
        let database_connections = match &raw.database_connections {
            None => crate::service::store::postgres::DEFAULT_CONNECTIONS,
            Some(n) if matches!(database, Database::Sqlite(_)) => {
                return Err(invalid(
                    Some(n.span()),
                    "`database_connections` applies to a PostgreSQL `database`; SQLite \
                     keeps one writer and two readers"
                        .into(),
                ))
            }
            Some(n) if (1..=MAX_DATABASE_CONNECTIONS).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                return Err(invalid(
                    Some(n.span()),
                    format!(
                        "`database_connections` must be from 1 to {MAX_DATABASE_CONNECTIONS} \
                         (PostgreSQL allows 100 connections in all by default)"
                    ),
                ))
            }
        };
        let integrations_path = resolve(expand(&raw.integrations, "integrations")?);
        let isrc = std::fs::read_to_string(&integrations_path).map_err(|e| {
            invalid(
                Some(raw.integrations.span()),
                format!(
                    "`integrations`: cannot read {}: {e}",
                    integrations_path.display()
                ),
            )
        })?;
        let integrations =
            Integrations::from_toml_str(&isrc, &integrations_path.display().to_string()).map_err(
                |e| ConfigError::Integrations {
                    path: integrations_path.display().to_string(),
                    message: e.to_string(),
                },
            )?;
        let flows_dir = match &raw.flows_dir {
            Some(f) => {
                let dir = resolve(expand(f, "flows_dir")?);
                if !dir.is_dir() {
                    return Err(invalid(
                        Some(f.span()),
                        format!("`flows_dir`: {} is not a directory", dir.display()),
                    ));
                }
                Some(dir)
            }
            None => None,
        };
        let public_url = match &raw.public_url {
            Some(u) => Some(
                parse_public_url(&expand(u, "public_url")?)
                    .map_err(|m| invalid(Some(u.span()), format!("`public_url`: {m}")))?,
            ),
            None => None,
        };
        let callback_url = expand(&raw.builder.callback_url, "builder.callback_url")?;
        if reqwest::Url::parse(&callback_url)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            return Err(invalid(
                Some(raw.builder.callback_url.span()),
                format!("`builder.callback_url`: `{callback_url}` is not an http(s) URL"),
            ));
        }
        let signing_secret = expand(&raw.builder.signing_secret, "builder.signing_secret")?;
        if signing_secret.is_empty() {
            return Err(invalid(
                Some(raw.builder.signing_secret.span()),
                "`builder.signing_secret` is empty".into(),
            ));
        }
        let d = DeliveryConfig::default();
        let ms = Duration::from_millis;
        let delivery = DeliveryConfig {
            initial_backoff: raw
                .delivery
                .initial_backoff_ms
                .map(ms)
                .unwrap_or(d.initial_backoff),
            max_backoff: raw.delivery.max_backoff_ms.map(ms).unwrap_or(d.max_backoff),
            timeout: raw.delivery.timeout_ms.map(ms).unwrap_or(d.timeout),
        };
        let w = WebhookConfig::default();
        let mut tokens = Vec::new();
        for t in raw.api.tokens.iter().flat_map(|t| t.get_ref()) {
            let v = expand(t, "api.tokens")?;
            if v.chars().count() < MIN_TOKEN_LEN || v.chars().any(|c| c.is_whitespace()) {
                return Err(invalid(
                    Some(t.span()),
                    format!("`api.tokens`: a token must be at least {MIN_TOKEN_LEN} characters without spaces"),
                ));
            }
            tokens.push(v);
        }
        if tokens.is_empty() && !listen.ip().is_loopback() {
            return Err(invalid(
                raw.api
                    .tokens
                    .as_ref()
                    .map(|t| t.span())
                    .or(raw.listen.as_ref().map(|l| l.span())),
                format!(
                    "`listen` {listen} is not a loopback address and `[api] tokens` is empty: \
                     the builder API would be open to anyone who reaches the port; set \
                     `[api] tokens = [\"${{BUILDER_API_TOKEN}}\"]`"
                ),
            ));
        }
        let size = |v: &Option<Spanned<usize>>, key: &str, default: usize| match v {
            None => Ok(default),
            Some(s) if *s.get_ref() >= 1024 => Ok(*s.get_ref()),
            Some(s) => Err(invalid(
                Some(s.span()),
                format!("`{key}` must be at least 1024 bytes"),
            )),
        };
        let slots = |v: &Option<Spanned<usize>>, key: &str, default: usize| match v {
            None => Ok(default),
            Some(s) if *s.get_ref() >= 1 => Ok(*s.get_ref()),
            Some(s) => Err(invalid(
                Some(s.span()),
                format!("`{key}` must be at least 1"),
            )),
        };
        let a = ApiConfig::default();
        let api = ApiConfig {
            tokens,
            max_run_body_bytes: size(
                &raw.api.max_run_body_bytes,
                "api.max_run_body_bytes",
                a.max_run_body_bytes,
            )?,
            max_body_bytes: size(
                &raw.api.max_body_bytes,
                "api.max_body_bytes",
                a.max_body_bytes,
            )?,
            max_message_body_bytes: size(
                &raw.api.max_message_body_bytes,
                "api.max_message_body_bytes",
                a.max_message_body_bytes,
            )?,
            messages_per_minute: raw.api.messages_per_minute.unwrap_or(a.messages_per_minute),
            messages_burst: raw.api.messages_burst.unwrap_or(a.messages_burst).max(1),
            max_in_flight: slots(&raw.api.max_in_flight, "api.max_in_flight", a.max_in_flight)?,
            run_limits: {
                let l = &raw.limits;
                let d = a.run_limits;
                // A bound below these would fail every real flow: refused as a typo.
                let at_least = |v: &Option<Spanned<u64>>, key: &str, min: u64, default: u64| match v
                {
                    None => Ok(default),
                    Some(s) if *s.get_ref() >= min => Ok(*s.get_ref()),
                    Some(s) => Err(invalid(
                        Some(s.span()),
                        format!("`limits.{key}` must be at least {min}"),
                    )),
                };
                crate::template::RunLimits {
                    bytes: at_least(&l.max_bytes, "max_bytes", 65536, d.bytes)?,
                    work: at_least(&l.max_work, "max_work", 100_000, d.work)?,
                    deadline: Duration::from_millis(at_least(
                        &l.deadline_ms,
                        "deadline_ms",
                        100,
                        d.deadline.as_millis() as u64,
                    )?),
                    http_timeout_max: Duration::from_secs(at_least(
                        &l.http_timeout_max_s,
                        "http_timeout_max_s",
                        1,
                        d.http_timeout_max.as_secs(),
                    )?),
                }
            },
        };
        let mut allow = Vec::new();
        for entry in &raw.http_request.allow {
            let v = expand(entry, "http_request.allow")?;
            if let Err(e) = HttpGuard::new(&[&v]) {
                return Err(invalid(
                    Some(entry.span()),
                    format!("`http_request.allow`: {e}"),
                ));
            }
            allow.push(v);
        }
        let http_guard = HttpGuard::new(&allow).map_err(|e| invalid(None, e.to_string()))?;
        let t = TimelineConfig::default();
        let timeline = TimelineConfig {
            retention_days: match &raw.timeline.retention_days {
                None => t.retention_days,
                Some(d) if *d.get_ref() >= 1 => *d.get_ref(),
                Some(d) => {
                    return Err(invalid(
                        Some(d.span()),
                        "`timeline.retention_days` must be at least 1".into(),
                    ))
                }
            },
            include_text: raw.timeline.include_text.unwrap_or(t.include_text),
        };
        Ok(ServiceConfig {
            listen,
            database,
            database_connections,
            integrations_path,
            integrations: Arc::new(integrations),
            flows_dir,
            builder: BuilderConfig {
                callback_url,
                signing_secret,
            },
            delivery,
            webhooks: WebhookConfig {
                zendesk_replay_window_s: raw
                    .webhooks
                    .zendesk_replay_window_s
                    .unwrap_or(w.zendesk_replay_window_s),
                jwt_clock_skew_s: raw.webhooks.jwt_clock_skew_s.unwrap_or(w.jwt_clock_skew_s),
                max_body_bytes: size(
                    &raw.webhooks.max_body_bytes,
                    "webhooks.max_body_bytes",
                    w.max_body_bytes,
                )?,
                max_in_flight: slots(
                    &raw.webhooks.max_in_flight,
                    "webhooks.max_in_flight",
                    w.max_in_flight,
                )?,
                public_url,
            },
            api,
            http_guard,
            timeline,
            reentry: crate::service::store::ReentryOptions {
                // The transcript is part of the details: asking for it turns them on.
                details: raw.reentry.details || raw.reentry.transcript,
                transcript: raw.reentry.transcript,
            },
            reconcile: ReconcileConfig {
                unresolved_after_s: match &raw.reconcile.unresolved_after_s {
                    None => ReconcileConfig::default().unresolved_after_s,
                    Some(v) if *v.get_ref() >= 60 => *v.get_ref(),
                    Some(v) => {
                        return Err(invalid(
                            Some(v.span()),
                            "`reconcile.unresolved_after_s` must be at least 60 (the handoff's own lease is 30 s)".into(),
                        ))
                    }
                },
            },
        })
    }
}

/// Checks and normalizes `public_url`: an absolute http(s) URL without user name,
/// password, query or fragment. A trailing `/` is dropped (`https://h/tb/` →
/// `https://h/tb`), so the request path is appended to it as is.
fn parse_public_url(v: &str) -> Result<reqwest::Url, String> {
    let example = "like https://bots.example.com or https://example.com/transbordo";
    // A value with `@` may carry a password: it is not repeated in the message.
    let shown = if v.contains('@') {
        "the value".to_string()
    } else {
        format!("`{v}`")
    };
    let not_url = || format!("{shown} is not an absolute http(s) URL ({example})");
    let mut url = reqwest::Url::parse(v).map_err(|_| not_url())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(not_url());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{shown} has a user name or password; give only the URL the providers call ({example})"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{shown} has a query or a fragment; give only the URL the providers call, up to this service's root ({example})"
        ));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}
