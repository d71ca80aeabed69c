//! The durable state behind ONE trait ([`LiveChatStore`]), with two backends: an
//! embedded SQLite file ([`sqlite::SqliteStore`], one process) and PostgreSQL
//! ([`postgres::PgStore`], any number of replicas on one database). Every state change,
//! its deadlines, its outbox events and its dedup record are written in one transaction
//! ([`LiveChatStore::apply`]). Work shared by replicas (due timers, outbox heads) is
//! claimed with a lease, so a claimant that dies loses it after the lease.

pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};

pub use crate::providers::webhooks::{AgentInfo, EndStatus};

/// Where a live chat is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatState {
    /// Handed off, no agent yet (the wait timeout runs).
    Waiting,
    /// An agent joined (the user inactivity timeout runs, where configured).
    WithAgent,
    /// We decided to end it and are closing the provider conversation.
    Closing,
    /// Ended; the `live_chat_ended` event is in the outbox. Terminal.
    Ended,
}

impl ChatState {
    /// The name stored in the database and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatState::Waiting => "waiting",
            ChatState::WithAgent => "with_agent",
            ChatState::Closing => "closing",
            ChatState::Ended => "ended",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<ChatState> {
        Some(match s {
            "waiting" => ChatState::Waiting,
            "with_agent" => ChatState::WithAgent,
            "closing" => ChatState::Closing,
            "ended" => ChatState::Ended,
            _ => return None,
        })
    }

    /// Waiting or with an agent: user messages are relayed.
    pub fn is_open(self) -> bool {
        matches!(self, ChatState::Waiting | ChatState::WithAgent)
    }
}

/// Which timer a deadline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineKind {
    /// No agent joined in time → `timeout`.
    Wait,
    /// The user was silent too long while with the agent → `user_inactivity_timeout`.
    Inactivity,
    /// Watchdog of a close in progress: resumes it after a crash or restart.
    Close,
    /// The user wrote and the joined agent has not answered within the integration's
    /// `agent_reply_timeout_s` → `agent_reply_overdue` (the chat goes on).
    Reply,
}

impl DeadlineKind {
    /// The database name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineKind::Wait => "wait",
            DeadlineKind::Inactivity => "inactivity",
            DeadlineKind::Close => "close",
            DeadlineKind::Reply => "reply",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<DeadlineKind> {
        Some(match s {
            "wait" => DeadlineKind::Wait,
            "inactivity" => DeadlineKind::Inactivity,
            "close" => DeadlineKind::Close,
            "reply" => DeadlineKind::Reply,
            _ => return None,
        })
    }
}

/// One live chat as stored. This is also what the transport gets to address the
/// provider conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveChatRecord {
    /// The handoff id (unique per `start_live_chat` success).
    pub id: String,
    /// The builder's conversation.
    pub conversation_id: String,
    /// `liveperson`, `zendesk` or `altu_sdk`.
    pub provider: String,
    /// The integration it runs on.
    pub integration_id: String,
    /// The provider's id (LivePerson conversationId, Zendesk ticket id, connector id).
    pub provider_conversation_id: String,
    /// The state.
    pub state: ChatState,
    /// For `closing`: the status it will end with.
    pub pending_end: Option<EndStatus>,
    /// For `ended`: how it ended.
    pub end_status: Option<EndStatus>,
    /// From the integration at handoff time (0 = none).
    pub wait_timeout_s: u64,
    /// From the integration at handoff time (0 = none).
    pub user_inactivity_timeout_s: u64,
    /// Newest provider ordering timestamp applied (LivePerson `metaDataLastUpdateTs`).
    pub last_provider_ts: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub agent_joined_at: Option<i64>,
    /// Unix ms.
    pub last_user_message_at: Option<i64>,
    /// Unix ms.
    pub ended_at: Option<i64>,
    /// The interpreter's handoff as JSON (what the provider transport needs).
    #[serde(skip)]
    pub handoff: Option<String>,
    /// How many changes wrote this row (PostgreSQL, whose changes write only a row
    /// still at the version they read); 0 on SQLite, whose one writer serialises them.
    #[serde(skip)]
    pub version: i64,
}

/// A pending timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// Which timer.
    pub kind: DeadlineKind,
    /// Unix ms.
    pub due_at: i64,
}

/// A due timer of some live chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDeadline {
    /// The live chat.
    pub live_chat_id: String,
    /// Which timer, when.
    pub deadline: Deadline,
}

/// A live chat to create after a successful `start_live_chat`.
#[derive(Debug, Clone)]
pub struct NewLiveChat {
    /// The handoff id.
    pub id: String,
    /// The builder's conversation.
    pub conversation_id: String,
    /// Provider name.
    pub provider: String,
    /// Integration id.
    pub integration_id: String,
    /// Provider conversation id.
    pub provider_conversation_id: String,
    /// 0 = none.
    pub wait_timeout_s: u64,
    /// 0 = none.
    pub user_inactivity_timeout_s: u64,
    /// The interpreter's handoff as JSON.
    pub handoff: Option<String>,
}

/// A state change. The store applies it only when it makes sense in the current state
/// (otherwise [`Applied::Ignored`]) and writes its deadlines and outbox events with it.
#[derive(Debug, Clone)]
pub enum Change {
    /// An agent took the conversation: waiting → with_agent, wait deadline dropped,
    /// inactivity deadline set; an `agent_joined` event is queued.
    AgentJoined {
        /// Who.
        agent: AgentInfo,
    },
    /// An agent message for the user; queued as `agent_message`. Implies
    /// [`Change::AgentJoined`] when still waiting. Dropped once closing or ended.
    AgentMessage {
        /// Message text.
        text: String,
        /// Who.
        agent: AgentInfo,
        /// More fields of the event (`attachments`, `rich_content`); empty for text.
        extra: serde_json::Map<String, serde_json::Value>,
    },
    /// The user sent a message: resets the inactivity deadline (with_agent only).
    UserActivity,
    /// [`Change::UserActivity`] for a relayed message: also counts it, keeps its text
    /// for the re-entry transcript (only with `[reentry] transcript = true`) and, with an
    /// agent joined and `reply_timeout_s > 0`, starts an unanswered stretch: a
    /// [`DeadlineKind::Reply`] deadline unless one stretch is already running.
    UserMessage {
        /// The message text.
        text: String,
        /// The integration's `agent_reply_timeout_s` (0 = none).
        reply_timeout_s: u64,
    },
    /// The reply deadline fired: queue `agent_reply_overdue` when the chat is still with
    /// an agent and that exact deadline is still pending. The stretch stays unanswered
    /// (no second event) until the agent writes.
    ReplyOverdue {
        /// The deadline that fired.
        deadline: Deadline,
    },
    /// Claim the chat for closing: waiting/with_agent → closing with `pending`; when
    /// `expect` is given the chat must be in that state and, with `deadline`, that
    /// exact deadline must still be pending (a timer that lost a race does nothing).
    Claim {
        /// The status to end with once closed.
        pending: EndStatus,
        /// Required current state.
        expect: Option<ChatState>,
        /// Required pending deadline.
        deadline: Option<Deadline>,
    },
    /// End the chat (exactly once): queue `live_chat_ended`, drop deadlines. When the
    /// chat is `closing` and `pending_wins`, its pending status is used instead (the
    /// provider's close event echoing our own close).
    End {
        /// The status.
        status: EndStatus,
        /// See above.
        pending_wins: bool,
    },
}

/// Conditions attached to a change coming from a provider.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// `(source, event id)`: applied at most once; recorded with the change.
    pub dedup: Option<(String, String)>,
    /// Provider ordering timestamp: a change older than the last applied one is stale
    /// (equal is not: two changes can share a millisecond; exact repeats are `dedup`'s job).
    pub provider_ts: Option<i64>,
}

/// What [`LiveChatStore::apply`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Applied; the record after the change.
    Done(LiveChatRecord),
    /// The dedup key was seen before; nothing changed.
    Duplicate,
    /// Older than what was already applied; nothing changed.
    Stale,
    /// Does not apply in the current state (e.g. a timer after the agent joined).
    Ignored(LiveChatRecord),
    /// No such live chat.
    NotFound,
}

/// An undelivered outbox event.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Delivery order (global; per conversation is what matters).
    pub seq: i64,
    /// `X-Transbordo-Event-Id`.
    pub event_id: String,
    /// The builder's conversation.
    pub conversation_id: String,
    /// The JSON body, exactly as it will be signed and sent.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// One line of a live chat's timeline (`GET /v1/conversations/{id}/timeline`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// The live chat (handoff id).
    pub live_chat_id: String,
    /// The builder's conversation.
    pub conversation_id: String,
    /// Unix ms.
    pub at: i64,
    /// `run`, `provider_call`, `webhook`, `state`, `timer`, `message`, `delivery`.
    pub kind: String,
    /// What happened (a JSON object; never a secret, message text only when configured).
    pub data: Value,
}

/// Counts for `GET /metrics`, read from the store so they hold across replicas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// `(provider, state, count)` of the live chats not ended.
    pub open: Vec<(String, String, i64)>,
    /// Undelivered outbox events.
    pub outbox_pending: i64,
    /// When the oldest undelivered event was queued (Unix ms).
    pub outbox_oldest_created_at: Option<i64>,
    /// Handoff intents not finished (in flight, or cut by a crash and not reconciled yet).
    pub intents_pending: i64,
    /// Of those, the ones reported unresolved (past their deadline, kept until settled).
    pub intents_unresolved: i64,
}

/// A handoff's intent: written before the first provider call of a `start_live_chat`,
/// gone once its live chat is recorded (same transaction, [`LiveChatStore::create`]) or
/// its start failed. One left behind was cut by a crash and is reconciled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffIntent {
    /// The handoff id (the live chat's id once recorded).
    pub handoff_id: String,
    /// The builder's conversation.
    pub conversation_id: String,
    /// The integration.
    pub integration_id: String,
    /// `liveperson`, `zendesk` or `altu_sdk`.
    pub provider: String,
    /// LivePerson: the `ext_consumer_id` the conversation is opened for.
    pub consumer_key: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

/// An intent with its reconcile state ([`LiveChatStore::intent_group_claim`],
/// [`LiveChatStore::intents`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntentState {
    /// The handoff id.
    pub handoff_id: String,
    /// The builder's conversation.
    pub conversation_id: String,
    /// The integration.
    pub integration_id: String,
    /// `liveperson`, `zendesk` or `altu_sdk`.
    pub provider: String,
    /// LivePerson: the `ext_consumer_id`.
    pub consumer_key: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms: until then its holder (the run, or `claim`) owns it.
    pub lease_until: i64,
    /// `None`: the run that wrote it; else the reconcile claim that holds it.
    #[serde(skip)]
    pub claim: Option<String>,
    /// LivePerson's consumer id (what webhooks name as the CONSUMER participant).
    pub lp_consumer_id: Option<String>,
    /// The conversation a second request opened and the reconcile closed at once.
    pub probe_conversation_id: Option<String>,
    /// Unix ms: when it was reported unresolved.
    pub unresolved_at: Option<i64>,
    /// Why it is not settled yet (the last try).
    pub note: Option<String>,
}

impl IntentState {
    /// The plain intent.
    pub fn intent(&self) -> HandoffIntent {
        HandoffIntent {
            handoff_id: self.handoff_id.clone(),
            conversation_id: self.conversation_id.clone(),
            integration_id: self.integration_id.clone(),
            provider: self.provider.clone(),
            consumer_key: self.consumer_key.clone(),
            created_at: self.created_at,
        }
    }
}

/// What the reconcile learned about an intent ([`LiveChatStore::intent_note`]); `None`
/// fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentNote {
    /// See [`IntentState::lp_consumer_id`].
    pub lp_consumer_id: Option<String>,
    /// See [`IntentState::probe_conversation_id`].
    pub probe_conversation_id: Option<String>,
    /// See [`IntentState::unresolved_at`].
    pub unresolved_at: Option<i64>,
    /// See [`IntentState::note`].
    pub note: Option<String>,
}

/// A provider conversation a webhook announced while no live chat tracked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sighting {
    /// The integration the webhook came to.
    pub integration_id: String,
    /// The provider's conversation id.
    pub provider_conversation_id: String,
    /// The provider's consumer id (LivePerson: the CONSUMER participant).
    pub consumer_id: String,
    /// Open at the last webhook.
    pub open: bool,
    /// Unix ms: first seen.
    pub seen_at: i64,
}

/// What became of a run's `Idempotency-Key` ([`LiveChatStore::run_key_begin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunKey {
    /// New (or taken over): this request runs.
    Fresh,
    /// Another request with this key is running.
    Running,
    /// Answered before: the status and the JSON body to answer again.
    Done {
        /// HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
}

/// What [`LiveChatStore::listen`] calls: `Wake::Timers` or `Wake::Outbox`.
pub type WakeFn = Arc<dyn Fn(Wake) + Send + Sync>;

/// What the `live_chat_ended` re-entry input carries besides `status` (`[reentry]` in
/// the service config). Off by default: the input stays `{"live_chat":{"status":…}}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReentryOptions {
    /// Adds provider, integration, agent, `wait_ms`, `duration_ms` and message counts.
    pub details: bool,
    /// Adds `transcript`: at most the last [`TRANSCRIPT_MAX`] messages of the human part
    /// (their text is stored only while this is on).
    pub transcript: bool,
}

/// Messages of the re-entry `transcript` at most.
pub const TRANSCRIPT_MAX: usize = 50;

/// Rows one statement of the outbox and timeline prunes deletes: they walk the table by
/// `seq` in statements of this many, so the first prune after months of history (or
/// after an upgrade that added it) is many short writes, not one that holds its locks,
/// or SQLite's one writer, for as long as it takes.
pub const PRUNE_CHUNK: i64 = 1_000;

/// Runs a chunked prune: `chunk(after)` deletes up to [`PRUNE_CHUNK`] rows with a `seq`
/// above `after` and answers how many went and the highest `seq` among them; this asks
/// for the next chunk until one comes back short. Returns how many went in all.
pub(crate) async fn prune_in_chunks<F, Fut>(mut chunk: F) -> Result<u64, StoreError>
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = Result<(i64, i64), StoreError>>,
{
    let (mut after, mut total) = (0i64, 0u64);
    loop {
        let (n, last) = chunk(after).await?;
        total += n.max(0) as u64;
        if n < PRUNE_CHUNK {
            return Ok(total);
        }
        after = last;
    }
}

/// The stored facts of a live chat's human part, for the re-entry details.
#[derive(Debug, Clone, Default)]
pub(crate) struct HumanPart {
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub user_messages: i64,
    pub agent_messages: i64,
    /// `(from, text, at)` oldest first.
    pub transcript: Vec<(String, String, i64)>,
}

/// Adds the re-entry details to a `live_chat_ended` body's `input.live_chat`.
pub(crate) fn add_reentry_details(
    body: &mut Value,
    chat: &LiveChatRecord,
    part: &HumanPart,
    opts: ReentryOptions,
    now: i64,
) {
    let Some(live) = body
        .get_mut("input")
        .and_then(|i| i.get_mut("live_chat"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    live.insert("provider".into(), json!(chat.provider));
    live.insert("integration_id".into(), json!(chat.integration_id));
    let agent = match (&part.agent_id, &part.agent_name) {
        (None, None) => Value::Null,
        (id, name) => {
            let mut a = serde_json::Map::new();
            a.insert("id".into(), json!(id));
            if let Some(n) = name {
                a.insert("name".into(), json!(n));
            }
            Value::Object(a)
        }
    };
    live.insert("agent".into(), agent);
    live.insert(
        "wait_ms".into(),
        json!(chat.agent_joined_at.map(|j| (j - chat.created_at).max(0))),
    );
    live.insert("duration_ms".into(), json!((now - chat.created_at).max(0)));
    live.insert(
        "messages".into(),
        json!({"user": part.user_messages, "agent": part.agent_messages}),
    );
    if opts.transcript {
        let t: Vec<Value> = part
            .transcript
            .iter()
            .map(|(from, text, at)| json!({"from": from, "text": text, "at": rfc3339_ms(*at)}))
            .collect();
        live.insert("transcript".into(), Value::Array(t));
    }
}

/// Unix ms as RFC 3339 UTC (`2026-12-23T15:04:05.123Z`).
fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Which worker has new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Deadlines were added or moved.
    Timers,
    /// Outbox events were queued.
    Outbox,
}

/// Where the state lives: `database` in the service config.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (created on first start): a path or a `sqlite:` URL.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl Database {
    /// Reads the `database` setting: a `postgres://` or `postgresql://` URL selects
    /// PostgreSQL, a `sqlite:` URL or anything else a file path (relative to `base`).
    pub fn parse(value: &str, base: &std::path::Path) -> Database {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Database::Postgres(value.to_string());
        }
        let path = value
            .strip_prefix("sqlite://")
            .or_else(|| value.strip_prefix("sqlite:"))
            .unwrap_or(value);
        let path = PathBuf::from(path);
        Database::Sqlite(if path.is_absolute() {
            path
        } else {
            base.join(path)
        })
    }

    /// The SQLite file, if this is SQLite.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres(_) => None,
        }
    }

    /// Opens the store, applying pending migrations.
    pub async fn open(&self) -> Result<Arc<dyn LiveChatStore>, StoreError> {
        self.open_with(postgres::DEFAULT_CONNECTIONS).await
    }

    /// Opens the store with up to `connections` statement connections on PostgreSQL
    /// (`database_connections`; SQLite keeps its one writer and two readers).
    pub async fn open_with(&self, connections: u32) -> Result<Arc<dyn LiveChatStore>, StoreError> {
        Ok(match self {
            Database::Sqlite(p) => Arc::new(sqlite::SqliteStore::open(p).await?),
            Database::Postgres(url) => {
                Arc::new(postgres::PgStore::connect_with(url, connections).await?)
            }
        })
    }

    /// Applies pending migrations and returns the versions now applied.
    pub async fn migrate(&self) -> Result<Vec<(i64, String)>, StoreError> {
        match self {
            Database::Sqlite(p) => sqlite::SqliteStore::open(p).await?.migrations().await,
            Database::Postgres(url) => postgres::PgStore::connect(url).await?.migrations().await,
        }
    }
}

/// Shown in logs: the file, or the URL without its password.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(url) => f.write_str(&postgres::redact_url(url)),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

/// The migrations of one backend, for sqlx's migrator (embedded in the binary, so the
/// program needs no migration files at run time). `files` are `(name, sql)` with names
/// like `0001_init`.
pub(crate) fn migrator(files: &[(&'static str, &'static str)]) -> sqlx::migrate::Migrator {
    let migrations = files
        .iter()
        .map(|(name, sql)| {
            let (num, desc) = name.split_once('_').unwrap_or((name, name));
            sqlx::migrate::Migration::new(
                num.parse().unwrap_or(0),
                std::borrow::Cow::Borrowed(desc),
                sqlx::migrate::MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*sql),
                false,
            )
        })
        .collect();
    sqlx::migrate::Migrator::with_migrations(migrations)
}

/// Runs `migrator` on `conn` and maps its failures (a newer database is [`StoreError::TooNew`]).
pub(crate) async fn run_migrations<C>(
    migrator: &sqlx::migrate::Migrator,
    conn: &mut C,
) -> Result<(), StoreError>
where
    C: sqlx::migrate::Migrate,
{
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match migrator.run_direct(None, conn, false).await {
        Ok(()) => Ok(()),
        Err(sqlx::migrate::MigrateError::Execute(e)) => Err(e.into()),
        Err(sqlx::migrate::MigrateError::VersionMissing(found)) => {
            Err(StoreError::TooNew { found, known })
        }
        Err(e) => Err(StoreError::Migrate(e.to_string())),
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => StoreError::Unavailable(e.to_string()),
            E::Database(db) => {
                let code = db.code().unwrap_or_default();
                // Class 08: connection exception; 57P01-03: the server shut the session
                // (pg_terminate_backend, shutdown, not accepting connections yet).
                if code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03") {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Database(e.to_string())
                }
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// Database failures. Never carries secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database said no.
    #[error("database error: {0}")]
    Database(String),
    /// The database cannot be reached right now (connection refused or cut, pool
    /// exhausted): the API answers 503 and the caller may retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Applying the schema migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// A row that cannot be read back (corrupt or written by a newer version).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database has migrations this binary does not know.
    #[error("database schema version {found} is newer than this program's ({known})")]
    TooNew {
        /// In the database.
        found: i64,
        /// Known here.
        known: i64,
    },
    /// This conversation already has an open live chat.
    #[error("conversation already has an open live chat")]
    AlreadyOpen,
    /// The handoff's intent is no longer this caller's (a reconcile took it over, or
    /// another reconcile did): its live chat is not recorded here.
    #[error("the handoff's intent was taken over by the reconcile")]
    IntentClaimed,
    /// The blocking task died.
    #[error("database task failed: {0}")]
    Task(String),
}

/// The durable state of the service. Implementations must make [`apply`] atomic
/// (state + deadlines + outbox + dedup in one transaction) and must not block the
/// async runtime.
///
/// [`apply`]: LiveChatStore::apply
#[async_trait]
pub trait LiveChatStore: Send + Sync {
    /// Creates a live chat in `waiting`, with its wait deadline when `wait_timeout_s > 0`,
    /// and finishes its handoff intent (same id) in the same transaction.
    async fn create(&self, chat: NewLiveChat, now: i64) -> Result<LiveChatRecord, StoreError>;
    /// The newest live chat of a conversation (open or ended).
    async fn latest_for_conversation(
        &self,
        conversation_id: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError>;
    /// The newest live chat for a provider conversation on an integration.
    async fn find_by_provider(
        &self,
        integration_id: &str,
        provider_conversation_id: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError>;
    /// A live chat by id.
    async fn get(&self, id: &str) -> Result<Option<LiveChatRecord>, StoreError>;
    /// Pending deadlines of a live chat.
    async fn deadlines(&self, id: &str) -> Result<Vec<Deadline>, StoreError>;
    /// Applies a change atomically (see [`Change`], [`Guard`]).
    async fn apply(
        &self,
        id: &str,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError>;
    /// [`LiveChatStore::apply`] to a chat the caller has just read: a store may start
    /// from `chat` instead of reading it again. The outcome is the same whether or not
    /// `chat` is still current (the store checks, and reads again when it is not).
    async fn apply_to(
        &self,
        chat: &LiveChatRecord,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError> {
        self.apply(&chat.id, change, guard, now).await
    }
    /// Records a provider event's dedup key outside a change, for a live chat that has
    /// ended (every change is ignored then, so no transaction is needed); false when it
    /// was already recorded (a duplicate).
    async fn event_seen(&self, source: &str, event_id: &str, now: i64) -> Result<bool, StoreError>;
    /// Records the single-use `(source, id)` for a request whose body hashes to
    /// `digest`; false when it was already recorded for another body (a replay). The
    /// same request again is let through: its first attempt may have died between this
    /// and applying its events, and its events are deduplicated by event id anyway.
    async fn mark_seen(
        &self,
        source: &str,
        id: &str,
        digest: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Drops one exact deadline (a timer that found nothing to do), so it does not fire again.
    async fn drop_deadline(&self, id: &str, deadline: Deadline) -> Result<(), StoreError>;
    /// Claims up to `limit` deadlines due at `now` that nobody holds, for `lease_ms`: no
    /// other caller (replica) gets them until the lease runs out. Firing one ends with it
    /// dropped or replaced (see [`Change::Claim`]); a claimant that dies loses it.
    async fn claim_deadlines(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDeadline>, StoreError>;
    /// When the earliest pending deadline can be claimed (due and its lease over).
    async fn next_deadline(&self) -> Result<Option<i64>, StoreError>;
    /// Claims, for `lease_ms`, the oldest undelivered event of up to `limit`
    /// conversations whose head is due at `now` and not leased. Only heads are leased, so
    /// a conversation's events go out in order whichever replica delivers them.
    async fn outbox_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError>;
    /// When the next head can be claimed (due and its lease over).
    async fn outbox_next_wake(&self) -> Result<Option<i64>, StoreError>;
    /// Marks events delivered (at `now`), in one write: the outbox worker gathers the
    /// deliveries that finished together. One already marked stays as it was.
    async fn outbox_delivered(&self, seqs: &[i64], now: i64) -> Result<(), StoreError>;
    /// Records a failed attempt and when to try again.
    async fn outbox_failed(&self, seq: i64, next_at: i64, error: &str) -> Result<(), StoreError>;
    /// Deletes events delivered before `before` (Unix ms); returns how many. An
    /// undelivered event is never deleted, whatever its age. Nothing reads a delivered
    /// event again (event ids are random, so none can come back as a duplicate): without
    /// this the outbox grew by every event of every live chat for as long as the
    /// service ran. The default keeps everything.
    async fn outbox_prune(&self, before: i64) -> Result<u64, StoreError> {
        let _ = before;
        Ok(0)
    }
    /// Appends timeline entries. The default says the store cannot keep them.
    async fn timeline_append(&self, entries: Vec<TimelineEntry>) -> Result<(), StoreError> {
        let _ = entries;
        Err(StoreError::Database(
            "this store does not keep timelines".into(),
        ))
    }
    /// A conversation's timeline, oldest first.
    async fn timeline(&self, conversation_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let _ = conversation_id;
        Err(StoreError::Database(
            "this store does not keep timelines".into(),
        ))
    }
    /// Deletes timeline entries older than `before` (Unix ms); returns how many.
    async fn timeline_prune(&self, before: i64) -> Result<u64, StoreError> {
        let _ = before;
        Ok(0)
    }
    /// Starts the run of `(conversation_id, key)` (`Idempotency-Key`), or tells what
    /// became of an earlier one: answered ([`RunKey::Done`]) or still running elsewhere
    /// ([`RunKey::Running`]). A running key whose lease ran out (its replica died) is
    /// taken over. The default keeps no keys: every run is [`RunKey::Fresh`].
    async fn run_key_begin(
        &self,
        conversation_id: &str,
        key: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<RunKey, StoreError> {
        let _ = (conversation_id, key, now, lease_ms);
        Ok(RunKey::Fresh)
    }
    /// Records the answer of a run begun with [`LiveChatStore::run_key_begin`]; `None`
    /// forgets the key (the run failed in a way a retry should redo).
    async fn run_key_finish(
        &self,
        conversation_id: &str,
        key: &str,
        answer: Option<(u16, String)>,
    ) -> Result<(), StoreError> {
        let _ = (conversation_id, key, answer);
        Ok(())
    }
    /// Records a handoff's intent, leased until `created_at + lease_ms` (a live run
    /// finishes it well before). The default keeps none (nothing to reconcile).
    async fn intent_begin(&self, intent: &HandoffIntent, lease_ms: i64) -> Result<(), StoreError> {
        let _ = (intent, lease_ms);
        Ok(())
    }
    /// Forgets an intent (its start failed, or the reconcile settled it).
    async fn intent_drop(&self, handoff_id: &str) -> Result<(), StoreError> {
        let _ = handoff_id;
        Ok(())
    }
    /// Claims up to `limit` intents whose lease ran out at `now` (a run cut by a crash, or
    /// an earlier reconcile that died) for `lease_ms`: no other replica gets them meanwhile.
    async fn intent_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<HandoffIntent>, StoreError> {
        let _ = (now, lease_ms, limit);
        Ok(Vec::new())
    }
    /// What `live_chat_ended` events queued from now on carry ([`ReentryOptions`]); set
    /// once by the service at start. A store that ignores it queues the plain input.
    fn set_reentry(&self, opts: ReentryOptions) {
        let _ = opts;
    }
    /// Claims for `lease_ms` the intent `handoff_id` together with every pending intent
    /// of the same consumer on the same integration (LivePerson `consumer_key`), all or
    /// nothing: `None` when one of them is still held (by its run or another claim), or
    /// the intent is gone. Claimed intents can no longer be finished by their runs
    /// ([`LiveChatStore::create`] fails with [`StoreError::IntentClaimed`]).
    async fn intent_group_claim(
        &self,
        handoff_id: &str,
        now: i64,
        lease_ms: i64,
        claim: &str,
    ) -> Result<Option<Vec<IntentState>>, StoreError> {
        let _ = (handoff_id, now, lease_ms, claim);
        Ok(None)
    }
    /// Records what the reconcile learned, if `claim` still holds the intent (false otherwise).
    async fn intent_note(
        &self,
        handoff_id: &str,
        claim: &str,
        note: &IntentNote,
    ) -> Result<bool, StoreError> {
        let _ = (handoff_id, claim, note);
        Ok(false)
    }
    /// Drops an intent `claim` holds (false when it no longer does).
    async fn intent_release(&self, handoff_id: &str, claim: &str) -> Result<bool, StoreError> {
        let _ = (handoff_id, claim);
        Ok(false)
    }
    /// Every pending intent, oldest first (`transbordo intents`).
    async fn intents(&self) -> Result<Vec<IntentState>, StoreError> {
        Ok(Vec::new())
    }
    /// [`LiveChatStore::create`] for a reconcile that holds the intent with `claim`: fails
    /// with [`StoreError::IntentClaimed`] unless the intent is still there under `claim`.
    async fn adopt(
        &self,
        chat: NewLiveChat,
        now: i64,
        claim: &str,
    ) -> Result<LiveChatRecord, StoreError> {
        let _ = (chat, now, claim);
        Err(StoreError::IntentClaimed)
    }
    /// Records (or updates the open flag of) a sighting of a conversation no live chat
    /// tracks (a tracked one is left out, in the same statement); its `seen_at` stays
    /// the first.
    async fn sighting_record(&self, sighting: &Sighting) -> Result<(), StoreError> {
        let _ = sighting;
        Ok(())
    }
    /// The sightings of a consumer on an integration, oldest first.
    async fn sightings(
        &self,
        integration_id: &str,
        consumer_id: &str,
    ) -> Result<Vec<Sighting>, StoreError> {
        let _ = (integration_id, consumer_id);
        Ok(Vec::new())
    }
    /// Forgets sightings first seen before `before` (Unix ms); returns how many.
    async fn sightings_prune(&self, before: i64) -> Result<u64, StoreError> {
        let _ = before;
        Ok(0)
    }
    /// True when other processes may share this database (then workers poll often
    /// besides waiting for [`LiveChatStore::listen`]).
    fn shared(&self) -> bool {
        false
    }
    /// Calls `wake` whenever another process adds work (new outbox events, deadlines),
    /// until `stop` is set. The default has nobody to hear from and returns at once.
    async fn listen(&self, wake: WakeFn, stop: tokio::sync::watch::Receiver<bool>) {
        let _ = (wake, stop);
    }
    /// Open live chats by provider and state, and the outbox backlog (for `/metrics`).
    /// The default says the store cannot tell (the gauges are then left out).
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Err(StoreError::Database(
            "this store does not report statistics".into(),
        ))
    }
}

// The decisions of a change, shared by the backends so that they cannot drift apart
// (each backend only does the SQL).

/// The user inactivity deadline set at `now`, if the chat has that timer.
pub(crate) fn inactivity_due(chat: &LiveChatRecord, now: i64) -> Option<i64> {
    (chat.user_inactivity_timeout_s > 0)
        .then(|| now + (chat.user_inactivity_timeout_s as i64) * 1000)
}

/// Whether a [`Change::Claim`] expecting `expect` may claim `chat` (its deadline aside).
pub(crate) fn claim_allowed(chat: &LiveChatRecord, expect: Option<ChatState>) -> bool {
    match expect {
        Some(s) => chat.state == s,
        None => chat.state.is_open(),
    }
}

/// The status a [`Change::End`] ends `chat` with: its pending one when it is closing and
/// the pending status wins (the provider's echo of our own close).
pub(crate) fn end_status(
    chat: &LiveChatRecord,
    status: EndStatus,
    pending_wins: bool,
) -> EndStatus {
    match (chat.state, chat.pending_end, pending_wins) {
        (ChatState::Closing, Some(p), true) => p,
        _ => status,
    }
}

/// A stored end status (`pending_end`, `end_status`).
pub(crate) fn parse_status(s: Option<String>) -> Result<Option<EndStatus>, StoreError> {
    match s {
        None => Ok(None),
        Some(s) => EndStatus::parse(&s)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("live chat: unknown status `{s}`"))),
    }
}

/// A stored deadline row.
pub(crate) fn read_deadline(kind: String, due_at: i64) -> Result<Deadline, StoreError> {
    let kind = DeadlineKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown deadline kind `{kind}`")))?;
    Ok(Deadline { kind, due_at })
}

/// The public JSON view of a live chat (`GET /v1/conversations/{id}/live_chat`).
pub fn record_json(r: &LiveChatRecord, deadlines: &[Deadline]) -> Value {
    let dl = |k: DeadlineKind| {
        deadlines
            .iter()
            .find(|d| d.kind == k)
            .map(|d| json!(d.due_at))
            .unwrap_or(Value::Null)
    };
    json!({
        "handoff_id": r.id,
        "conversation_id": r.conversation_id,
        "state": r.state.as_str(),
        "status": r.end_status.map(|s| s.as_str()),
        "pending_status": r.pending_end.map(|s| s.as_str()),
        "provider": r.provider,
        "integration_id": r.integration_id,
        "provider_conversation_id": r.provider_conversation_id,
        "wait_timeout_s": r.wait_timeout_s,
        "user_inactivity_timeout_s": r.user_inactivity_timeout_s,
        "created_at_ms": r.created_at,
        "agent_joined_at_ms": r.agent_joined_at,
        "last_user_message_at_ms": r.last_user_message_at,
        "ended_at_ms": r.ended_at,
        "deadlines": {
            "wait_ms": dl(DeadlineKind::Wait),
            "inactivity_ms": dl(DeadlineKind::Inactivity),
        },
    })
}
