//! [`LiveChatStore`] over one SQLite file (rusqlite, bundled SQLite). Statements run on
//! a fixed set of dedicated threads, each owning one connection: one writer (every
//! write, `BEGIN IMMEDIATE`) and a few readers (WAL lets them read while it writes).
//! Calls reach them over channels, so the async runtime never blocks on disk and the
//! thread count (and memory) stays bounded whatever the load. WAL journal: a killed
//! process loses nothing that was committed. Write transactions begin `IMMEDIATE` (take
//! the write lock first), so that several handles on one file (tests) wait for each
//! other instead of failing to upgrade.

use std::cell::Cell;
use std::path::Path;
use std::str::FromStr;
use std::sync::{mpsc, Arc, Mutex};

use async_trait::async_trait;
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::{
    Applied, Change, ChatState, Deadline, DeadlineKind, DueDeadline, Guard, HandoffIntent,
    IntentNote, IntentState, LiveChatRecord, LiveChatStore, NewLiveChat, OutboxEvent,
    ReentryOptions, RunKey, Sighting, StoreError, StoreStats, TimelineEntry,
};
use crate::service::events;

/// Schema migrations (sqlx's migrator, recorded in `_sqlx_migrations`).
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../migrations/sqlite/0001_init.sql"),
    ),
    (
        "0002_handoff",
        include_str!("../../../migrations/sqlite/0002_handoff.sql"),
    ),
    (
        "0003_timeline",
        include_str!("../../../migrations/sqlite/0003_timeline.sql"),
    ),
    (
        "0004_leases",
        include_str!("../../../migrations/sqlite/0004_leases.sql"),
    ),
    (
        "0005_run_keys",
        include_str!("../../../migrations/sqlite/0005_run_keys.sql"),
    ),
    (
        "0006_handoff_intents",
        include_str!("../../../migrations/sqlite/0006_handoff_intents.sql"),
    ),
    (
        "0007_reentry",
        include_str!("../../../migrations/sqlite/0007_reentry.sql"),
    ),
    (
        "0008_intent_recovery",
        include_str!("../../../migrations/sqlite/0008_intent_recovery.sql"),
    ),
    (
        "0009_single_use_digest",
        include_str!("../../../migrations/sqlite/0009_single_use_digest.sql"),
    ),
];

/// Seen-event ids older than this are pruned at start (providers stop retrying long before).
const SEEN_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Reader threads of a file database (an in-memory one has only the writer: its
/// shared-cache connections would lock each other out instead of waiting).
const READERS: usize = 2;

/// A call to run on a database thread, with that thread's connection.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

thread_local! {
    /// Statements run by the current call on this database thread (see [`count_statement`]).
    static STATEMENTS: Cell<u64> = const { Cell::new(0) };
}

/// SQLite's trace hook: counts each statement that starts (not trigger subprograms), so
/// every call can report how many statements it ran.
fn count_statement(e: TraceEvent<'_>) {
    if let TraceEvent::Stmt(_, sql) = e {
        if !sql.starts_with("--") {
            STATEMENTS.with(|c| c.set(c.get() + 1));
        }
    }
}

/// Runs jobs from `jobs` on `conn` until every sender is gone (the store was dropped).
fn serve(mut conn: Connection, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    // Every statement text is prepared once per connection and kept.
    conn.set_prepared_statement_cache_capacity(64);
    conn.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(count_statement));
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panicking job fails its caller (its answer channel drops), not the thread.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
    }
}

/// Starts a database thread serving `jobs` with `conn`.
fn spawn(
    name: &str,
    conn: Connection,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(move || serve(conn, jobs))
        .map(|_| ())
        .map_err(|e| StoreError::Task(format!("cannot start a database thread: {e}")))
}

/// The SQLite store. Cheap to clone; its threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    /// The writer thread (every call that writes).
    write: mpsc::Sender<Job>,
    /// The reader threads (the writer's own channel for an in-memory database).
    read: mpsc::Sender<Job>,
    /// `[reentry]` ([`LiveChatStore::set_reentry`]).
    reentry: Arc<Mutex<ReentryOptions>>,
}

impl SqliteStore {
    /// Opens (creating on first start) the database file and applies pending migrations.
    /// `:memory:` is a database of this process only (the playground's).
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        // An in-memory database is shared by name between the connection kept here and
        // the migrator's, and lives as long as the kept one.
        let memory = (path == Path::new(":memory:"))
            .then(|| format!("file:transbordo-memory-{}", uuid::Uuid::new_v4().simple()));
        if memory.is_none() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Database(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        let (p, mem) = (path.to_path_buf(), memory.clone());
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let conn = match &mem {
                Some(name) => Connection::open_with_flags(
                    format!("{name}?mode=memory&cache=shared"),
                    rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_URI,
                )?,
                None => Connection::open(&p)?,
            };
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            if mem.is_none() {
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
            }
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        let opts = match &memory {
            Some(name) => sqlx::sqlite::SqliteConnectOptions::from_str(&format!(
                "sqlite:{name}?mode=memory&cache=shared"
            ))?,
            None => sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true),
        };
        migrate(opts).await?;
        let p = path.to_path_buf();
        let file = memory.is_none();
        let (conn, readers) = tokio::task::spawn_blocking(
            move || -> Result<(Connection, Vec<Connection>), StoreError> {
                conn.pragma_update(None, "foreign_keys", "ON")?;
                let cutoff = crate::service::now_ms() - SEEN_RETENTION_MS;
                conn.execute("DELETE FROM seen_events WHERE seen_at < ?1", [cutoff])?;
                // One process owns an SQLite file: claims left by a previous (killed) run of
                // it are void, so its work resumes at once instead of after the lease.
                conn.execute("UPDATE deadlines SET claimed_until = NULL", [])?;
                conn.execute("UPDATE outbox SET leased_until = NULL", [])?;
                let mut readers = Vec::new();
                for _ in 0..if file { READERS } else { 0 } {
                    let r = Connection::open_with_flags(
                        &p,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    r.busy_timeout(std::time::Duration::from_secs(5))?;
                    readers.push(r);
                }
                Ok((conn, readers))
            },
        )
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        let (write, write_rx) = mpsc::channel::<Job>();
        spawn("transbordo-db-write", conn, Arc::new(Mutex::new(write_rx)))?;
        let read = if readers.is_empty() {
            write.clone()
        } else {
            let (read, read_rx) = mpsc::channel::<Job>();
            let read_rx = Arc::new(Mutex::new(read_rx));
            for r in readers {
                spawn("transbordo-db-read", r, read_rx.clone())?;
            }
            read
        };
        Ok(SqliteStore {
            write,
            read,
            reentry: Arc::default(),
        })
    }

    /// Applied migration versions (for tests and diagnostics).
    pub async fn migrations(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.read(|c| {
            let mut st =
                c.prepare("SELECT version, description FROM _sqlx_migrations ORDER BY version")?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Deletes the rows of `table` (keyed by `seq`) whose `time` column is before
    /// `before`, [`super::PRUNE_CHUNK`] at a time in `seq` order
    /// ([`super::prune_in_chunks`]), each its own write (other writes go between them);
    /// returns how many went.
    async fn prune_by_seq(
        &self,
        table: &'static str,
        time: &'static str,
        before: i64,
    ) -> Result<u64, StoreError> {
        let sql: Arc<str> = format!(
            "DELETE FROM {table} WHERE seq IN (
               SELECT seq FROM {table} WHERE seq > ?1 AND {time} < ?2 ORDER BY seq LIMIT ?3)
             RETURNING seq"
        )
        .into();
        super::prune_in_chunks(|after| {
            let sql = sql.clone();
            self.call(move |c| {
                let mut st = c.prepare_cached(&sql)?;
                let seqs = st
                    .query_map([after, before, super::PRUNE_CHUNK], |r| r.get::<_, i64>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((seqs.len() as i64, seqs.into_iter().max().unwrap_or(after)))
            })
        })
        .await
    }

    /// Runs `f` on the writer thread.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_on(&self.write, f).await
    }

    /// Runs `f`, which only reads, on a reader thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_on(&self.read, f).await
    }
}

/// Sends `f` to a database thread and waits for its answer. Each call is one round trip
/// to that thread; it reports the statements it ran as a `transbordo::store` trace event
/// (what the statement-count test reads).
async fn run_on<T, F>(jobs: &mpsc::Sender<Job>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |c| {
        STATEMENTS.with(|n| n.set(0));
        let r = f(c);
        let n = STATEMENTS.with(|n| n.get());
        let _ = tx.send((r, n));
    });
    jobs.send(job)
        .map_err(|_| StoreError::Task("the database thread stopped".into()))?;
    let (r, n) = rx
        .await
        .map_err(|_| StoreError::Task("the database call failed".into()))?;
    tracing::trace!(target: "transbordo::store", statements = n, round_trips = 1u64, "sqlite call");
    r
}

/// Applies pending migrations with sqlx's migrator. A database made by the runner of
/// earlier versions (its own `schema_migrations` table, same SQL) has its versions
/// marked as applied first, so it opens as it is.
async fn migrate(opts: sqlx::sqlite::SqliteConnectOptions) -> Result<(), StoreError> {
    use sqlx::Connection as _;
    let opts = opts.busy_timeout(std::time::Duration::from_secs(5));
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
    let migrator = super::migrator(MIGRATIONS);
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table'
         AND name IN ('schema_migrations', '_sqlx_migrations')",
    )
    .fetch_all(&mut conn)
    .await?;
    if tables.iter().any(|t| t == "schema_migrations")
        && !tables.iter().any(|t| t == "_sqlx_migrations")
    {
        let legacy: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut conn)
                .await?;
        let known = MIGRATIONS.len() as i64;
        if legacy > known {
            return Err(StoreError::TooNew {
                found: legacy,
                known,
            });
        }
        migrator
            .run_direct(Some(legacy), &mut conn, true)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
    }
    super::run_migrations(&migrator, &mut conn).await?;
    conn.close().await?;
    Ok(())
}

const CHAT_COLUMNS: &str =
    "id, conversation_id, provider, integration_id, provider_conversation_id, \
     state, pending_end, end_status, wait_timeout_s, user_inactivity_timeout_s, last_provider_ts, \
     created_at, agent_joined_at, last_user_message_at, ended_at, handoff";

fn read_chat(r: &Row<'_>) -> rusqlite::Result<Result<LiveChatRecord, StoreError>> {
    let state: String = r.get(5)?;
    let pending: Option<String> = r.get(6)?;
    let end: Option<String> = r.get(7)?;
    let id: String = r.get(0)?;
    let Some(state) = ChatState::parse(&state) else {
        return Ok(Err(StoreError::Corrupt(format!(
            "live chat {id}: unknown state `{state}`"
        ))));
    };
    let (pending_end, end_status) = match (super::parse_status(pending), super::parse_status(end)) {
        (Ok(p), Ok(e)) => (p, e),
        (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
    };
    let wait: i64 = r.get(8)?;
    let inactivity: i64 = r.get(9)?;
    Ok(Ok(LiveChatRecord {
        id,
        conversation_id: r.get(1)?,
        provider: r.get(2)?,
        integration_id: r.get(3)?,
        provider_conversation_id: r.get(4)?,
        state,
        pending_end,
        end_status,
        wait_timeout_s: wait.max(0) as u64,
        user_inactivity_timeout_s: inactivity.max(0) as u64,
        last_provider_ts: r.get(10)?,
        created_at: r.get(11)?,
        agent_joined_at: r.get(12)?,
        last_user_message_at: r.get(13)?,
        ended_at: r.get(14)?,
        handoff: r.get(15)?,
        version: 0,
    }))
}

fn query_chat(
    c: &Connection,
    where_sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Option<LiveChatRecord>, StoreError> {
    let sql = format!("SELECT {CHAT_COLUMNS} FROM live_chats WHERE {where_sql}");
    let row = c
        .prepare_cached(&sql)?
        .query_row(args, read_chat)
        .optional()?;
    row.transpose()
}

fn chat_by_id(c: &Connection, id: &str) -> Result<Option<LiveChatRecord>, StoreError> {
    query_chat(c, "id = ?1", &[&id])
}

/// Runs an `UPDATE live_chats` and returns the row as it wrote it (`RETURNING`), so a
/// change never reads back what it just wrote; `None` when no row matched.
fn update_chat(
    c: &Connection,
    update_sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Option<LiveChatRecord>, StoreError> {
    let sql = format!("{update_sql} RETURNING {CHAT_COLUMNS}");
    let row = c
        .prepare_cached(&sql)?
        .query_row(args, read_chat)
        .optional()?;
    row.transpose()
}

/// `execute` with the connection's prepared-statement cache (parsed once, not per call).
fn exec<P: rusqlite::Params>(c: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

fn set_deadline(
    tx: &Transaction<'_>,
    id: &str,
    kind: DeadlineKind,
    due: i64,
) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO deadlines (live_chat_id, kind, due_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (live_chat_id, kind) DO UPDATE SET due_at = excluded.due_at,
           claimed_until = NULL",
        params![id, kind.as_str(), due],
    )?;
    Ok(())
}

fn drop_deadline(tx: &Transaction<'_>, id: &str, kind: DeadlineKind) -> Result<(), StoreError> {
    exec(
        tx,
        "DELETE FROM deadlines WHERE live_chat_id = ?1 AND kind = ?2",
        params![id, kind.as_str()],
    )?;
    Ok(())
}

fn enqueue(
    tx: &Transaction<'_>,
    conversation_id: &str,
    event_id: &str,
    body: &serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO outbox (event_id, conversation_id, body, created_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![event_id, conversation_id, body.to_string(), now],
    )?;
    Ok(())
}

/// Joins: waiting → with_agent, wait deadline dropped, inactivity deadline set.
fn join(
    tx: &Transaction<'_>,
    chat: &LiveChatRecord,
    agent: &super::AgentInfo,
    now: i64,
) -> Result<Option<LiveChatRecord>, StoreError> {
    let after = update_chat(
        tx,
        "UPDATE live_chats SET state = 'with_agent', agent_joined_at = ?2 WHERE id = ?1 AND state = 'waiting'",
        params![chat.id, now],
    )?;
    note_agent(tx, &chat.id, agent)?;
    drop_deadline(tx, &chat.id, DeadlineKind::Wait)?;
    if let Some(due) = super::inactivity_due(chat, now) {
        set_deadline(tx, &chat.id, DeadlineKind::Inactivity, due)?;
    }
    let event_id = events::new_event_id();
    let body = events::agent_joined(chat, agent, &event_id, now);
    enqueue(tx, &chat.conversation_id, &event_id, &body, now)?;
    Ok(after)
}

/// Keeps who the agent is (the one who joined, then whoever writes), for the re-entry.
fn note_agent(tx: &Transaction<'_>, id: &str, agent: &super::AgentInfo) -> Result<(), StoreError> {
    if agent.id.is_some() || agent.name.is_some() {
        tx.execute(
            "UPDATE live_chats SET agent_id = ?2, agent_name = ?3 WHERE id = ?1",
            params![id, agent.id, agent.name],
        )?;
    }
    Ok(())
}

fn keep_message(
    tx: &Transaction<'_>,
    id: &str,
    from: &str,
    text: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO live_chat_messages (live_chat_id, sender, text, at) VALUES (?1, ?2, ?3, ?4)",
        params![id, from, text, now],
    )?;
    Ok(())
}

/// The human part of a chat as stored (the re-entry details).
fn human_part(
    tx: &Transaction<'_>,
    id: &str,
    transcript: bool,
) -> Result<super::HumanPart, StoreError> {
    let mut part = tx.query_row(
        "SELECT agent_id, agent_name, user_messages, agent_messages FROM live_chats WHERE id = ?1",
        [id],
        |r| {
            Ok(super::HumanPart {
                agent_id: r.get(0)?,
                agent_name: r.get(1)?,
                user_messages: r.get(2)?,
                agent_messages: r.get(3)?,
                transcript: Vec::new(),
            })
        },
    )?;
    if transcript {
        let mut st = tx.prepare(
            "SELECT sender, text, at FROM (SELECT seq, sender, text, at FROM live_chat_messages
               WHERE live_chat_id = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
        )?;
        part.transcript = st
            .query_map(params![id, super::TRANSCRIPT_MAX as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
    }
    Ok(part)
}

fn apply_tx(
    c: &mut Connection,
    id: &str,
    change: Change,
    guard: Guard,
    now: i64,
    reentry: ReentryOptions,
) -> Result<Applied, StoreError> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let Some(chat) = chat_by_id(&tx, id)? else {
        return Ok(Applied::NotFound);
    };
    if let Some((source, event_id)) = &guard.dedup {
        let n = exec(
            &tx,
            "INSERT OR IGNORE INTO seen_events (source, event_id, seen_at) VALUES (?1, ?2, ?3)",
            params![source, event_id, now],
        )?;
        if n == 0 {
            return Ok(Applied::Duplicate);
        }
    }
    // The row as the change leaves it (each UPDATE returns it): nothing is read back.
    let mut after = None;
    if let Some(ts) = guard.provider_ts {
        if chat.last_provider_ts.is_some_and(|last| ts < last) {
            tx.commit()?; // keep the dedup record
            return Ok(Applied::Stale);
        }
        after = update_chat(
            &tx,
            "UPDATE live_chats SET last_provider_ts = ?2 WHERE id = ?1",
            params![id, ts],
        )?;
    }
    let applied = match change {
        Change::AgentJoined { agent } => {
            if chat.state == ChatState::Waiting {
                after = join(&tx, &chat, &agent, now)?.or(after);
                true
            } else {
                false
            }
        }
        Change::AgentMessage { text, agent, extra } => {
            if chat.state.is_open() {
                if chat.state == ChatState::Waiting {
                    after = join(&tx, &chat, &agent, now)?.or(after);
                }
                let event_id = events::new_event_id();
                let body = events::agent_message_with(&chat, &text, &agent, &extra, &event_id, now);
                enqueue(&tx, &chat.conversation_id, &event_id, &body, now)?;
                // The agent answered: the unanswered stretch (if any) is over.
                tx.execute(
                    "UPDATE live_chats SET agent_messages = agent_messages + 1,
                       awaiting_reply_since = NULL WHERE id = ?1",
                    [id],
                )?;
                drop_deadline(&tx, id, DeadlineKind::Reply)?;
                note_agent(&tx, id, &agent)?;
                if reentry.transcript {
                    keep_message(&tx, id, "agent", &text, now)?;
                }
                true
            } else {
                false
            }
        }
        Change::UserActivity => {
            if chat.state.is_open() {
                after = update_chat(
                    &tx,
                    "UPDATE live_chats SET last_user_message_at = ?2 WHERE id = ?1",
                    params![id, now],
                )?
                .or(after);
                if let (ChatState::WithAgent, Some(due)) =
                    (chat.state, super::inactivity_due(&chat, now))
                {
                    set_deadline(&tx, id, DeadlineKind::Inactivity, due)?;
                }
                true
            } else {
                false
            }
        }
        Change::UserMessage {
            text,
            reply_timeout_s,
        } => {
            if chat.state.is_open() {
                tx.execute(
                    "UPDATE live_chats SET last_user_message_at = ?2,
                       user_messages = user_messages + 1 WHERE id = ?1",
                    params![id, now],
                )?;
                if let (ChatState::WithAgent, Some(due)) =
                    (chat.state, super::inactivity_due(&chat, now))
                {
                    set_deadline(&tx, id, DeadlineKind::Inactivity, due)?;
                }
                if reentry.transcript {
                    keep_message(&tx, id, "user", &text, now)?;
                }
                if chat.state == ChatState::WithAgent && reply_timeout_s > 0 {
                    // Only the first message of a stretch starts its timer.
                    let started = tx.execute(
                        "UPDATE live_chats SET awaiting_reply_since = ?2, reply_timeout_s = ?3
                         WHERE id = ?1 AND awaiting_reply_since IS NULL",
                        params![id, now, reply_timeout_s as i64],
                    )?;
                    if started == 1 {
                        let due = now + (reply_timeout_s as i64).saturating_mul(1000);
                        set_deadline(&tx, id, DeadlineKind::Reply, due)?;
                    }
                }
                true
            } else {
                false
            }
        }
        Change::ReplyOverdue { deadline } => {
            let due: Option<i64> = tx
                .query_row(
                    "SELECT due_at FROM deadlines WHERE live_chat_id = ?1 AND kind = 'reply'",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            let (since, timeout_s, agent_id, agent_name): (
                Option<i64>,
                i64,
                Option<String>,
                Option<String>,
            ) = tx.query_row(
                "SELECT awaiting_reply_since, reply_timeout_s, agent_id, agent_name
                 FROM live_chats WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            drop_deadline(&tx, id, DeadlineKind::Reply)?;
            match (chat.state, due == Some(deadline.due_at), since) {
                (ChatState::WithAgent, true, Some(since)) => {
                    let agent = super::AgentInfo {
                        id: agent_id,
                        name: agent_name,
                    };
                    let event_id = events::new_event_id();
                    let body = events::agent_reply_overdue(
                        &chat,
                        &agent,
                        since,
                        timeout_s.max(0) as u64,
                        &event_id,
                        now,
                    );
                    enqueue(&tx, &chat.conversation_id, &event_id, &body, now)?;
                    true
                }
                _ => false,
            }
        }
        Change::Claim {
            pending,
            expect,
            deadline,
        } => {
            let state_ok = super::claim_allowed(&chat, expect);
            let deadline_ok = match deadline {
                None => true,
                Some(d) => {
                    let due: Option<i64> = tx
                        .query_row(
                            "SELECT due_at FROM deadlines WHERE live_chat_id = ?1 AND kind = ?2",
                            params![id, d.kind.as_str()],
                            |r| r.get(0),
                        )
                        .optional()?;
                    due == Some(d.due_at)
                }
            };
            if state_ok && deadline_ok {
                after = update_chat(
                    &tx,
                    "UPDATE live_chats SET state = 'closing', pending_end = ?2 WHERE id = ?1",
                    params![id, pending.as_str()],
                )?
                .or(after);
                exec(&tx, "DELETE FROM deadlines WHERE live_chat_id = ?1", [id])?;
                // Watchdog: if this close is interrupted (crash), the scheduler resumes it.
                set_deadline(&tx, id, DeadlineKind::Close, now + 30_000)?;
                true
            } else {
                false
            }
        }
        Change::End {
            status,
            pending_wins,
        } => {
            if chat.state == ChatState::Ended {
                false
            } else {
                let status = super::end_status(&chat, status, pending_wins);
                let ended = update_chat(
                    &tx,
                    "UPDATE live_chats SET state = 'ended', end_status = ?2, ended_at = ?3
                     WHERE id = ?1 AND state != 'ended'",
                    params![id, status.as_str(), now],
                )?;
                let n = usize::from(ended.is_some());
                after = ended.or(after);
                if n == 1 {
                    exec(&tx, "DELETE FROM deadlines WHERE live_chat_id = ?1", [id])?;
                    let event_id = events::new_event_id();
                    let mut body = events::live_chat_ended(&chat, status, &event_id, now);
                    if reentry.details {
                        let part = human_part(&tx, id, reentry.transcript)?;
                        super::add_reentry_details(&mut body, &chat, &part, reentry, now);
                    }
                    enqueue(&tx, &chat.conversation_id, &event_id, &body, now)?;
                }
                n == 1
            }
        }
    };
    let after = after.unwrap_or(chat);
    tx.commit()?;
    Ok(if applied {
        Applied::Done(after)
    } else {
        Applied::Ignored(after)
    })
}

const OUTBOX_HEADS: &str = "FROM outbox o WHERE o.delivered_at IS NULL AND o.seq = (
       SELECT MIN(i.seq) FROM outbox i
       WHERE i.conversation_id = o.conversation_id AND i.delivered_at IS NULL)";

/// Records a live chat and finishes its intent in one transaction. The intent must be
/// held by `claim` (`None`: its run; an intent already gone is fine for a run): the fence
/// between a run and the reconcile that took its intent over.
fn create_tx(
    c: &mut Connection,
    chat: NewLiveChat,
    now: i64,
    claim: Option<String>,
) -> Result<LiveChatRecord, StoreError> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // RETURNING: the record as inserted, instead of reading it back.
    let insert = format!(
        "{} RETURNING {CHAT_COLUMNS}",
        "INSERT INTO live_chats (id, conversation_id, provider, integration_id,
           provider_conversation_id, state, wait_timeout_s, user_inactivity_timeout_s, created_at,
           handoff)
         VALUES (?1, ?2, ?3, ?4, ?5, 'waiting', ?6, ?7, ?8, ?9)"
    );
    let res = tx.prepare_cached(&insert)?.query_row(
        params![
            chat.id,
            chat.conversation_id,
            chat.provider,
            chat.integration_id,
            chat.provider_conversation_id,
            chat.wait_timeout_s as i64,
            chat.user_inactivity_timeout_s as i64,
            now,
            chat.handoff
        ],
        read_chat,
    );
    let rec = match res {
        Ok(rec) => rec?,
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(StoreError::AlreadyOpen)
        }
        Err(e) => return Err(e.into()),
    };
    if chat.wait_timeout_s > 0 {
        let due = now + (chat.wait_timeout_s as i64) * 1000;
        set_deadline(&tx, &chat.id, DeadlineKind::Wait, due)?;
    }
    // Dropping the transaction rolls the insert back when the fence says no.
    let held: Option<Option<String>> = tx
        .prepare_cached("DELETE FROM handoff_intents WHERE handoff_id = ?1 RETURNING claim")?
        .query_row([&chat.id], |r| r.get(0))
        .optional()?;
    match (&held, &claim) {
        (None, None) => {}
        (Some(h), c) if h == c => {}
        _ => return Err(StoreError::IntentClaimed),
    }
    tx.commit()?;
    Ok(rec)
}

fn read_intent(r: &Row<'_>) -> rusqlite::Result<IntentState> {
    Ok(IntentState {
        handoff_id: r.get(0)?,
        conversation_id: r.get(1)?,
        integration_id: r.get(2)?,
        provider: r.get(3)?,
        consumer_key: r.get(4)?,
        created_at: r.get(5)?,
        lease_until: r.get(6)?,
        claim: r.get(7)?,
        lp_consumer_id: r.get(8)?,
        probe_conversation_id: r.get(9)?,
        unresolved_at: r.get(10)?,
        note: r.get(11)?,
    })
}

const INTENT_COLUMNS: &str = "handoff_id, conversation_id, integration_id, provider, consumer_key,
    created_at, lease_until, claim, lp_consumer_id, probe_conversation_id, unresolved_at, note";

#[async_trait]
impl LiveChatStore for SqliteStore {
    fn set_reentry(&self, opts: ReentryOptions) {
        if let Ok(mut r) = self.reentry.lock() {
            *r = opts;
        }
    }

    async fn create(&self, chat: NewLiveChat, now: i64) -> Result<LiveChatRecord, StoreError> {
        self.call(move |c| create_tx(c, chat, now, None)).await
    }

    async fn latest_for_conversation(
        &self,
        conversation_id: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        let conv = conversation_id.to_string();
        self.read(move |c| {
            query_chat(
                c,
                "conversation_id = ?1 ORDER BY (state != 'ended') DESC, created_at DESC, rowid DESC LIMIT 1",
                &[&conv],
            )
        })
        .await
    }

    async fn find_by_provider(
        &self,
        integration_id: &str,
        provider_conversation_id: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        let (i, p) = (
            integration_id.to_string(),
            provider_conversation_id.to_string(),
        );
        self.read(move |c| {
            query_chat(
                c,
                "integration_id = ?1 AND provider_conversation_id = ?2
                 ORDER BY (state != 'ended') DESC, created_at DESC, rowid DESC LIMIT 1",
                &[&i, &p],
            )
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<LiveChatRecord>, StoreError> {
        let id = id.to_string();
        self.read(move |c| chat_by_id(c, &id)).await
    }

    async fn deadlines(&self, id: &str) -> Result<Vec<Deadline>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT kind, due_at FROM deadlines WHERE live_chat_id = ?1 ORDER BY due_at",
            )?;
            let rows = st
                .query_map([&id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(k, d)| super::read_deadline(k, d))
                .collect()
        })
        .await
    }

    async fn apply(
        &self,
        id: &str,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError> {
        let id = id.to_string();
        let reentry = self.reentry.lock().map(|r| *r).unwrap_or_default();
        self.call(move |c| apply_tx(c, &id, change, guard, now, reentry))
            .await
    }

    async fn event_seen(&self, source: &str, event_id: &str, now: i64) -> Result<bool, StoreError> {
        let (s, i) = (source.to_string(), event_id.to_string());
        self.call(move |c| {
            let n = exec(
                c,
                "INSERT OR IGNORE INTO seen_events (source, event_id, seen_at) VALUES (?1, ?2, ?3)",
                params![s, i, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn mark_seen(
        &self,
        source: &str,
        id: &str,
        digest: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (s, i, d) = (source.to_string(), id.to_string(), digest.to_string());
        self.call(move |c| {
            // A conflict updates (and so counts) only when the body is the same.
            let n = exec(
                c,
                "INSERT INTO seen_events (source, event_id, seen_at, digest) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source, event_id) DO UPDATE SET seen_at = seen_events.seen_at
                 WHERE seen_events.digest = excluded.digest",
                params![s, i, now, d],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn drop_deadline(&self, id: &str, deadline: Deadline) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            exec(
                c,
                "DELETE FROM deadlines WHERE live_chat_id = ?1 AND kind = ?2 AND due_at = ?3",
                params![id, deadline.kind.as_str(), deadline.due_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn claim_deadlines(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDeadline>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let rows = {
                let mut st = tx.prepare_cached(
                    "UPDATE deadlines SET claimed_until = ?2 WHERE rowid IN (
                       SELECT rowid FROM deadlines
                       WHERE due_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1)
                       ORDER BY due_at LIMIT ?3)
                     RETURNING live_chat_id, kind, due_at",
                )?;
                let rows = st
                    .query_map(params![now, now + lease_ms, limit as i64], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            };
            tx.commit()?;
            let mut due = rows
                .into_iter()
                .map(|(id, k, d)| {
                    Ok(DueDeadline {
                        live_chat_id: id,
                        deadline: super::read_deadline(k, d)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            due.sort_by_key(|d| d.deadline.due_at);
            Ok(due)
        })
        .await
    }

    async fn next_deadline(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT MIN(MAX(due_at, COALESCE(claimed_until, 0))) FROM deadlines",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn outbox_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut rows = {
                let sql = format!(
                    "UPDATE outbox SET leased_until = ?2 WHERE seq IN (
                       SELECT o.seq {OUTBOX_HEADS} AND o.next_attempt_at <= ?1
                       AND (o.leased_until IS NULL OR o.leased_until <= ?1)
                       ORDER BY o.seq LIMIT ?3)
                     RETURNING seq, event_id, conversation_id, body, attempts"
                );
                let mut st = tx.prepare_cached(&sql)?;
                let rows = st
                    .query_map(params![now, now + lease_ms, limit as i64], |r| {
                        Ok(OutboxEvent {
                            seq: r.get(0)?,
                            event_id: r.get(1)?,
                            conversation_id: r.get(2)?,
                            body: r.get(3)?,
                            attempts: r.get::<_, i64>(4)?.clamp(0, u32::MAX as i64) as u32,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            };
            tx.commit()?;
            rows.sort_by_key(|e| e.seq);
            Ok(rows)
        })
        .await
    }

    async fn outbox_next_wake(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            let sql = format!(
                "SELECT MIN(MAX(o.next_attempt_at, COALESCE(o.leased_until, 0))) {OUTBOX_HEADS}"
            );
            Ok(c.query_row(&sql, [], |r| r.get(0))?)
        })
        .await
    }

    async fn outbox_delivered(&self, seqs: &[i64], now: i64) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        const MARK: &str = "UPDATE outbox SET delivered_at = ?2, leased_until = NULL
                            WHERE seq = ?1 AND delivered_at IS NULL";
        let seqs = seqs.to_vec();
        self.call(move |c| {
            if let [seq] = seqs[..] {
                exec(c, MARK, params![seq, now])?;
                return Ok(());
            }
            // Several: one transaction, one commit.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(MARK)?;
                for seq in &seqs {
                    st.execute(params![seq, now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn intent_begin(&self, intent: &HandoffIntent, lease_ms: i64) -> Result<(), StoreError> {
        let i = intent.clone();
        self.call(move |c| {
            exec(
                c,
                "INSERT INTO handoff_intents (handoff_id, conversation_id, integration_id,
                   provider, consumer_key, created_at, lease_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    i.handoff_id,
                    i.conversation_id,
                    i.integration_id,
                    i.provider,
                    i.consumer_key,
                    i.created_at,
                    i.created_at + lease_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn intent_drop(&self, handoff_id: &str) -> Result<(), StoreError> {
        let id = handoff_id.to_string();
        self.call(move |c| {
            exec(c, "DELETE FROM handoff_intents WHERE handoff_id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    async fn intent_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<HandoffIntent>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let rows = {
                let mut st = tx.prepare(
                    "UPDATE handoff_intents SET lease_until = ?2 WHERE handoff_id IN (
                       SELECT handoff_id FROM handoff_intents WHERE lease_until <= ?1
                       ORDER BY created_at LIMIT ?3)
                     RETURNING handoff_id, conversation_id, integration_id, provider,
                       consumer_key, created_at",
                )?;
                let rows = st
                    .query_map(params![now, now + lease_ms, limit as i64], |r| {
                        Ok(HandoffIntent {
                            handoff_id: r.get(0)?,
                            conversation_id: r.get(1)?,
                            integration_id: r.get(2)?,
                            provider: r.get(3)?,
                            consumer_key: r.get(4)?,
                            created_at: r.get(5)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            };
            tx.commit()?;
            Ok(rows)
        })
        .await
    }

    async fn intent_group_claim(
        &self,
        handoff_id: &str,
        now: i64,
        lease_ms: i64,
        claim: &str,
    ) -> Result<Option<Vec<IntentState>>, StoreError> {
        let (id, claim) = (handoff_id.to_string(), claim.to_string());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let group = {
                let mut st = tx.prepare(&format!(
                    "SELECT {INTENT_COLUMNS} FROM handoff_intents i WHERE handoff_id = ?1
                     OR (consumer_key IS NOT NULL AND EXISTS (SELECT 1 FROM handoff_intents o
                         WHERE o.handoff_id = ?1 AND o.integration_id = i.integration_id
                           AND o.consumer_key = i.consumer_key))
                     ORDER BY created_at, handoff_id"
                ))?;
                let rows = st
                    .query_map([&id], read_intent)?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            };
            let held = |i: &IntentState| i.lease_until > now && i.claim.as_deref() != Some(&claim);
            if group.is_empty() || group.iter().any(held) {
                return Ok(None);
            }
            for i in &group {
                tx.execute(
                    "UPDATE handoff_intents SET claim = ?2, lease_until = ?3 WHERE handoff_id = ?1",
                    params![i.handoff_id, claim, now + lease_ms],
                )?;
            }
            tx.commit()?;
            Ok(Some(
                group
                    .into_iter()
                    .map(|i| IntentState {
                        claim: Some(claim.clone()),
                        lease_until: now + lease_ms,
                        ..i
                    })
                    .collect(),
            ))
        })
        .await
    }

    async fn intent_note(
        &self,
        handoff_id: &str,
        claim: &str,
        note: &IntentNote,
    ) -> Result<bool, StoreError> {
        let (id, claim, n) = (handoff_id.to_string(), claim.to_string(), note.clone());
        self.call(move |c| {
            let changed = c.execute(
                "UPDATE handoff_intents SET lp_consumer_id = COALESCE(?3, lp_consumer_id),
                   probe_conversation_id = COALESCE(?4, probe_conversation_id),
                   unresolved_at = COALESCE(unresolved_at, ?5), note = COALESCE(?6, note)
                 WHERE handoff_id = ?1 AND claim = ?2",
                params![
                    id,
                    claim,
                    n.lp_consumer_id,
                    n.probe_conversation_id,
                    n.unresolved_at,
                    n.note
                ],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    async fn intent_release(&self, handoff_id: &str, claim: &str) -> Result<bool, StoreError> {
        let (id, claim) = (handoff_id.to_string(), claim.to_string());
        self.call(move |c| {
            let n = c.execute(
                "DELETE FROM handoff_intents WHERE handoff_id = ?1 AND claim = ?2",
                params![id, claim],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn intents(&self) -> Result<Vec<IntentState>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {INTENT_COLUMNS} FROM handoff_intents ORDER BY created_at, handoff_id"
            ))?;
            let rows = st
                .query_map([], read_intent)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn adopt(
        &self,
        chat: NewLiveChat,
        now: i64,
        claim: &str,
    ) -> Result<LiveChatRecord, StoreError> {
        let claim = claim.to_string();
        self.call(move |c| create_tx(c, chat, now, Some(claim)))
            .await
    }

    async fn sighting_record(&self, sighting: &Sighting) -> Result<(), StoreError> {
        // Most conversation-change webhooks are of tracked conversations: a reader says
        // so without taking the one writer (the insert re-checks, so a chat recorded
        // in between is still left out).
        if self
            .find_by_provider(&sighting.integration_id, &sighting.provider_conversation_id)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let s = sighting.clone();
        self.call(move |c| {
            // Only a conversation no live chat tracks (one statement, no look-up first).
            c.execute(
                "INSERT INTO provider_sightings (integration_id, provider_conversation_id,
                   consumer_id, open, seen_at)
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM live_chats
                   WHERE integration_id = ?1 AND provider_conversation_id = ?2)
                 ON CONFLICT (integration_id, provider_conversation_id)
                 DO UPDATE SET open = excluded.open",
                params![
                    s.integration_id,
                    s.provider_conversation_id,
                    s.consumer_id,
                    s.open,
                    s.seen_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn sightings(
        &self,
        integration_id: &str,
        consumer_id: &str,
    ) -> Result<Vec<Sighting>, StoreError> {
        let (i, k) = (integration_id.to_string(), consumer_id.to_string());
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT integration_id, provider_conversation_id, consumer_id, open, seen_at
                 FROM provider_sightings WHERE integration_id = ?1 AND consumer_id = ?2
                 ORDER BY seen_at, provider_conversation_id",
            )?;
            let rows = st
                .query_map(params![i, k], |r| {
                    Ok(Sighting {
                        integration_id: r.get(0)?,
                        provider_conversation_id: r.get(1)?,
                        consumer_id: r.get(2)?,
                        open: r.get(3)?,
                        seen_at: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn sightings_prune(&self, before: i64) -> Result<u64, StoreError> {
        self.call(move |c| {
            let n = c.execute(
                "DELETE FROM provider_sightings WHERE seen_at < ?1",
                [before],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn run_key_begin(
        &self,
        conversation_id: &str,
        key: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<RunKey, StoreError> {
        let (conv, key) = (conversation_id.to_string(), key.to_string());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = exec(&tx,
                "INSERT OR IGNORE INTO run_keys (conversation_id, idem_key, created_at, lease_until)
                 VALUES (?1, ?2, ?3, ?4)",
                params![conv, key, now, now + lease_ms],
            )?;
            let r = if n == 1 {
                RunKey::Fresh
            } else {
                let (status, body, lease): (Option<i64>, Option<String>, i64) = tx.query_row(
                    "SELECT status, body, lease_until FROM run_keys
                     WHERE conversation_id = ?1 AND idem_key = ?2",
                    params![conv, key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                match (status, body) {
                    (Some(status), Some(body)) => RunKey::Done {
                        status: status.clamp(100, 599) as u16,
                        body,
                    },
                    _ if lease <= now => {
                        exec(
                            &tx,
                            "UPDATE run_keys SET lease_until = ?3
                             WHERE conversation_id = ?1 AND idem_key = ?2",
                            params![conv, key, now + lease_ms],
                        )?;
                        RunKey::Fresh
                    }
                    _ => RunKey::Running,
                }
            };
            tx.commit()?;
            Ok(r)
        })
        .await
    }

    async fn run_key_finish(
        &self,
        conversation_id: &str,
        key: &str,
        answer: Option<(u16, String)>,
    ) -> Result<(), StoreError> {
        let (conv, key) = (conversation_id.to_string(), key.to_string());
        self.call(move |c| {
            match answer {
                Some((status, body)) => exec(
                    c,
                    "UPDATE run_keys SET status = ?3, body = ?4
                     WHERE conversation_id = ?1 AND idem_key = ?2",
                    params![conv, key, status as i64, body],
                )?,
                None => exec(
                    c,
                    "DELETE FROM run_keys WHERE conversation_id = ?1 AND idem_key = ?2",
                    params![conv, key],
                )?,
            };
            Ok(())
        })
        .await
    }

    async fn timeline_append(&self, entries: Vec<TimelineEntry>) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO timeline (live_chat_id, conversation_id, at, kind, data)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for e in &entries {
                    st.execute(params![
                        e.live_chat_id,
                        e.conversation_id,
                        e.at,
                        e.kind,
                        e.data.to_string()
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn timeline(&self, conversation_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let conv = conversation_id.to_string();
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT live_chat_id, conversation_id, at, kind, data FROM timeline
                 WHERE conversation_id = ?1 ORDER BY seq",
            )?;
            let rows = st
                .query_map([conv], |r| {
                    let data: String = r.get(4)?;
                    Ok(TimelineEntry {
                        live_chat_id: r.get(0)?,
                        conversation_id: r.get(1)?,
                        at: r.get(2)?,
                        kind: r.get(3)?,
                        data: serde_json::from_str(&data)
                            .unwrap_or(serde_json::Value::String(data)),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn outbox_prune(&self, before: i64) -> Result<u64, StoreError> {
        self.prune_by_seq("outbox", "delivered_at", before).await
    }

    async fn timeline_prune(&self, before: i64) -> Result<u64, StoreError> {
        self.prune_by_seq("timeline", "at", before).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT provider, state, COUNT(*) FROM live_chats WHERE state != 'ended'
                 GROUP BY provider, state ORDER BY provider, state",
            )?;
            let open = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let (outbox_pending, outbox_oldest_created_at) = c.query_row(
                "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let (intents_pending, intents_unresolved) = c.query_row(
                "SELECT COUNT(*), COUNT(unresolved_at) FROM handoff_intents",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(StoreStats {
                open,
                outbox_pending,
                outbox_oldest_created_at,
                intents_pending,
                intents_unresolved,
            })
        })
        .await
    }

    async fn outbox_failed(&self, seq: i64, next_at: i64, error: &str) -> Result<(), StoreError> {
        let error = error.chars().take(500).collect::<String>();
        self.call(move |c| {
            exec(
                c,
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3,
                   leased_until = NULL
                 WHERE seq = ?1 AND delivered_at IS NULL",
                params![seq, next_at, error],
            )?;
            Ok(())
        })
        .await
    }
}
