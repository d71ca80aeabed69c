//! [`LiveChatStore`] on PostgreSQL (sqlx, runtime-checked queries), for several
//! replicas on one database.
//!
//! - Every change is one transaction that first locks the live chat's row
//!   (`SELECT … FOR UPDATE`), so changes of one chat are serialised whichever replica
//!   makes them, and its outbox events get `seq`s in commit order.
//! - One open live chat per conversation and webhook dedupe are unique indexes
//!   (`live_chats_one_open`, `seen_events` primary key), not read-then-write checks.
//! - Due deadlines and outbox heads are claimed with `FOR UPDATE SKIP LOCKED` and a
//!   lease (`claimed_until`, `leased_until`): two replicas never hold the same one, and
//!   a replica that dies loses its claims when the lease runs out.
//! - `Idempotency-Key`s of `/run` are rows under a primary key (`run_keys`).
//! - Work is woken in the process that adds it; replicas poll for the rest (work of a
//!   replica that died). The `pg_notify` triggers of earlier versions are dropped
//!   (migration 0004): every commit woke every replica for work only one could take.
//!   [`LiveChatStore::listen`] still turns notifications into wake-ups.
//! - Statements run on connections this store keeps (`Conns`), not sqlx's pool,
//!   which pings a connection on every lend and return; a change is one transaction of
//!   four round trips, and a handoff's record one statement.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};

use super::{
    AgentInfo, Applied, Change, ChatState, Deadline, DeadlineKind, DueDeadline, Guard,
    HandoffIntent, LiveChatRecord, LiveChatStore, NewLiveChat, OutboxEvent, RunKey, StoreError,
    StoreStats, TimelineEntry, Wake, WakeFn,
};
use crate::service::events;

/// Schema migrations (sqlx's migrator, recorded in `_sqlx_migrations`; it holds
/// `pg_advisory_lock` while it runs, so replicas starting together apply them once).
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_run_keys",
        include_str!("../../../migrations/postgres/0002_run_keys.sql"),
    ),
    (
        "0003_handoff_intents",
        include_str!("../../../migrations/postgres/0003_handoff_intents.sql"),
    ),
    (
        "0004_quiet_wakeups",
        include_str!("../../../migrations/postgres/0004_quiet_wakeups.sql"),
    ),
];

/// Seen-event ids older than this are pruned at start (providers stop retrying long before).
const SEEN_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// Connections per replica: small, since every replica has its own pool and the
/// server's `max_connections` (100 by default) is shared.
const POOL_SIZE: u32 = 8;

/// How long a request waits for a connection before it is answered 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The notification channel of the wake-up triggers.
const CHANNEL: &str = "transbordo";

/// The PostgreSQL store. Cheap to clone (a pool).
#[derive(Clone)]
pub struct PgStore {
    /// sqlx's pool: migrations, the listener and tests. Statements use [`PgStore::conns`].
    pool: PgPool,
    /// The connections statements run on.
    conns: Arc<Conns>,
}

/// This replica's connections for statements, kept here rather than in sqlx's pool:
/// the pool pings a connection when it lends it and again when it takes it back, two
/// extra round trips on every store call. Here a connection is lent as it is and put
/// back only after a call that ended cleanly (see [`Conn::settle`]); one whose call
/// failed on the connection, or was cancelled midway, is dropped and replaced by a new
/// one on demand. A connection is checked (pinged) before it is lent only when it sat
/// idle longer than [`CHECK_AFTER`] or a call found the database unreachable in the
/// last [`CHECK_AFTER`] (a cut or a restart kills the idle ones too): then a dead one
/// is replaced instead of failing a request. Each keeps sqlx's prepared-statement cache,
/// so a statement is parsed once per connection.
struct Conns {
    opts: PgConnectOptions,
    idle: Mutex<Vec<(PgConnection, std::time::Instant)>>,
    permits: Semaphore,
    /// Until when (Unix ms) lent connections are checked, after a failure.
    suspect_until: std::sync::atomic::AtomicI64,
}

/// See [`Conns`].
const CHECK_AFTER: Duration = Duration::from_secs(10);

/// A connection lent by [`Conns`].
struct Conn<'a> {
    conn: Option<PgConnection>,
    conns: &'a Conns,
    _permit: SemaphorePermit<'a>,
    keep: bool,
}

impl Conns {
    async fn get(&self) -> Result<Conn<'_>, StoreError> {
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire())
            .await
            .map_err(|_| StoreError::Unavailable("no database connection free".into()))?
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let suspect = self
            .suspect_until
            .load(std::sync::atomic::Ordering::Relaxed)
            > crate::service::now_ms();
        let mut idle = None;
        loop {
            let next = self.idle.lock().ok().and_then(|mut v| v.pop());
            let Some((mut c, since)) = next else { break };
            if suspect || since.elapsed() > CHECK_AFTER {
                use sqlx::Connection as _;
                if c.ping().await.is_err() {
                    continue; // dead: dropped, try the next
                }
            }
            idle = Some(c);
            break;
        }
        let conn = match idle {
            Some(c) => c,
            None => {
                use sqlx::ConnectOptions as _;
                tokio::time::timeout(ACQUIRE_TIMEOUT, self.opts.connect())
                    .await
                    .map_err(|_| StoreError::Unavailable("connecting timed out".into()))??
            }
        };
        Ok(Conn {
            conn: Some(conn),
            conns: self,
            _permit: permit,
            keep: false,
        })
    }
}

impl Conn<'_> {
    /// Passes `r` on; the connection goes back for reuse unless the call failed on it
    /// (cut, protocol) rather than in the database (a constraint, a missing row).
    fn settle<T>(mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        self.keep = !matches!(r, Err(StoreError::Unavailable(_) | StoreError::Task(_)));
        if !self.keep {
            let until = crate::service::now_ms() + CHECK_AFTER.as_millis() as i64;
            self.conns
                .suspect_until
                .store(until, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl std::ops::Deref for Conn<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("a lent connection is present until dropped")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a lent connection is present until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let (true, Some(c)) = (self.keep, self.conn.take()) {
            if let Ok(mut idle) = self.conns.idle.lock() {
                idle.push((c, std::time::Instant::now()));
            }
        }
    }
}

/// The URL with its password (and any secret query value) replaced by `[redacted]`, for
/// logs and errors: [`crate::redact::url`].
pub fn redact_url(url: &str) -> String {
    crate::redact::url(url)
}

impl PgStore {
    /// Connects (a pool of 8 connections) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        // sqlx's parse errors may quote the URL: say which URL without its password.
        let opts = PgConnectOptions::from_str(url).map_err(|_| {
            StoreError::Database(format!(
                "`database`: {} is not a valid PostgreSQL URL",
                redact_url(url)
            ))
        })?;
        // sqlx's pool serves the listener and migrations only: two connections.
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts.clone())
            .await?;
        let conns = Arc::new(Conns {
            opts,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(POOL_SIZE as usize),
            suspect_until: std::sync::atomic::AtomicI64::new(0),
        });
        let store = PgStore { pool, conns };
        {
            let mut conn = store.pool.acquire().await?;
            super::run_migrations(&super::migrator(MIGRATIONS), &mut *conn).await?;
        }
        let cutoff = crate::service::now_ms() - SEEN_RETENTION_MS;
        sqlx::query("DELETE FROM seen_events WHERE seen_at < $1")
            .bind(cutoff)
            .execute(&store.pool)
            .await?;
        Ok(store)
    }

    /// Lends a statement connection.
    async fn conn(&self) -> Result<Conn<'_>, StoreError> {
        self.conns.get().await
    }

    /// Applied migration versions (for tests and `transbordo migrate`).
    pub async fn migrations(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT version, description FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The connection pool (for tests that inspect or break the database).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

const CHAT_COLUMNS: &str =
    "id, conversation_id, provider, integration_id, provider_conversation_id, \
     state, pending_end, end_status, wait_timeout_s, user_inactivity_timeout_s, last_provider_ts, \
     created_at, agent_joined_at, last_user_message_at, ended_at, handoff";

fn read_chat(r: &PgRow) -> Result<LiveChatRecord, StoreError> {
    let id: String = r.try_get(0)?;
    let state: String = r.try_get(5)?;
    let Some(state) = ChatState::parse(&state) else {
        return Err(StoreError::Corrupt(format!(
            "live chat {id}: unknown state `{state}`"
        )));
    };
    let wait: i64 = r.try_get(8)?;
    let inactivity: i64 = r.try_get(9)?;
    Ok(LiveChatRecord {
        conversation_id: r.try_get(1)?,
        provider: r.try_get(2)?,
        integration_id: r.try_get(3)?,
        provider_conversation_id: r.try_get(4)?,
        state,
        pending_end: super::parse_status(r.try_get(6)?)?,
        end_status: super::parse_status(r.try_get(7)?)?,
        wait_timeout_s: wait.max(0) as u64,
        user_inactivity_timeout_s: inactivity.max(0) as u64,
        last_provider_ts: r.try_get(10)?,
        created_at: r.try_get(11)?,
        agent_joined_at: r.try_get(12)?,
        last_user_message_at: r.try_get(13)?,
        ended_at: r.try_get(14)?,
        handoff: r.try_get(15)?,
        id,
    })
}

/// One chat by a `WHERE` clause whose parameters are all text (`$1`, `$2`, …).
async fn query_chat(
    c: &mut PgConnection,
    where_sql: &str,
    args: &[&str],
) -> Result<Option<LiveChatRecord>, StoreError> {
    let sql = format!("SELECT {CHAT_COLUMNS} FROM live_chats WHERE {where_sql}");
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for a in args {
        q = q.bind(*a);
    }
    q.fetch_optional(c)
        .await?
        .as_ref()
        .map(read_chat)
        .transpose()
}

async fn chat_by_id(c: &mut PgConnection, id: &str) -> Result<Option<LiveChatRecord>, StoreError> {
    query_chat(c, "id = $1", &[id]).await
}

/// A value bound in a change's write statement.
enum Val {
    Int(i64),
    Text(&'static str),
}

/// What one change writes, sent as ONE statement (data-modifying CTEs): the chat's
/// columns, its deadlines and its outbox events.
#[derive(Default)]
struct Writes {
    /// `live_chats` columns to set (`RETURNING` the row as written).
    set: Vec<(&'static str, Val)>,
    /// Extra condition of that UPDATE (`state = 'waiting'`).
    only_if: Option<&'static str>,
    /// Deadlines to drop: `Some(None)` all but the one `upsert` sets, `Some(Some(k))` kind `k`.
    drop: Option<Option<DeadlineKind>>,
    /// A deadline to set.
    upsert: Option<(DeadlineKind, i64)>,
    /// Outbox events `(event_id, body)`, in order (one multi-row INSERT keeps their `seq`s
    /// in this order).
    events: Vec<(String, String)>,
}

impl Writes {
    fn join(&mut self, chat: &LiveChatRecord, agent: &AgentInfo, now: i64) {
        self.set.push(("state", Val::Text("with_agent")));
        self.set.push(("agent_joined_at", Val::Int(now)));
        self.only_if = Some("state = 'waiting'");
        self.drop = Some(Some(DeadlineKind::Wait));
        if let Some(due) = super::inactivity_due(chat, now) {
            self.upsert = Some((DeadlineKind::Inactivity, due));
        }
        let event_id = events::new_event_id();
        let body = events::agent_joined(chat, agent, &event_id, now);
        self.events.push((event_id, body.to_string()));
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.drop.is_none()
            && self.upsert.is_none()
            && self.events.is_empty()
    }

    /// Runs them; the chat's row as written when a column was set.
    async fn run(
        self,
        c: &mut PgConnection,
        chat: &LiveChatRecord,
        now: i64,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        if self.is_empty() {
            return Ok(None);
        }
        let returns = !self.set.is_empty();
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("WITH ");
        let mut ctes = 0;
        let mut next = |qb: &mut sqlx::QueryBuilder<sqlx::Postgres>, name: &str| {
            if ctes > 0 {
                qb.push(", ");
            }
            ctes += 1;
            qb.push(name).push(" AS (");
        };
        if !self.set.is_empty() {
            next(&mut qb, "u");
            qb.push("UPDATE live_chats SET ");
            for (i, (col, v)) in self.set.into_iter().enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                qb.push(col).push(" = ");
                match v {
                    Val::Int(n) => qb.push_bind(n),
                    Val::Text(t) => qb.push_bind(t),
                };
            }
            qb.push(" WHERE id = ").push_bind(chat.id.clone());
            if let Some(cond) = self.only_if {
                qb.push(" AND ").push(cond);
            }
            qb.push(" RETURNING ").push(CHAT_COLUMNS).push(")");
        }
        if let Some(kind) = self.drop {
            next(&mut qb, "d");
            qb.push("DELETE FROM deadlines WHERE live_chat_id = ")
                .push_bind(chat.id.clone());
            match kind {
                Some(k) => {
                    qb.push(" AND kind = ").push_bind(k.as_str());
                }
                // Not the row the upsert writes: one statement must not touch a row twice.
                None => {
                    if let Some((k, _)) = self.upsert {
                        qb.push(" AND kind <> ").push_bind(k.as_str());
                    }
                }
            }
            qb.push(")");
        }
        if let Some((kind, due)) = self.upsert {
            next(&mut qb, "s");
            qb.push("INSERT INTO deadlines (live_chat_id, kind, due_at) VALUES (")
                .push_bind(chat.id.clone())
                .push(", ")
                .push_bind(kind.as_str())
                .push(", ")
                .push_bind(due)
                .push(
                    ") ON CONFLICT (live_chat_id, kind) DO UPDATE SET due_at = excluded.due_at,
                       claimed_until = NULL)",
                );
        }
        if !self.events.is_empty() {
            next(&mut qb, "o");
            qb.push(
                "INSERT INTO outbox (event_id, conversation_id, body, created_at, next_attempt_at) ",
            );
            qb.push_values(self.events, |mut b, (event_id, body)| {
                b.push_bind(event_id)
                    .push_bind(chat.conversation_id.clone())
                    .push_bind(body)
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.push(")");
        }
        if returns {
            qb.push(" SELECT ").push(CHAT_COLUMNS).push(" FROM u");
        } else {
            qb.push(" SELECT 1");
        }
        let row = qb.build().fetch_optional(c).await?;
        match row {
            Some(r) if returns => Ok(Some(read_chat(&r)?)),
            _ => Ok(None),
        }
    }
}

/// Undelivered events that are the oldest undelivered one of their conversation.
const HEADS: &str = "FROM outbox o WHERE o.delivered_at IS NULL AND NOT EXISTS (
       SELECT 1 FROM outbox p WHERE p.conversation_id = o.conversation_id
       AND p.delivered_at IS NULL AND p.seq < o.seq)";

/// Emits the `transbordo::store` trace event of a round trip that sqlx does not log
/// (`BEGIN`), for the statement-count test.
fn count_begin() {
    tracing::trace!(target: "transbordo::store", statements = 1u64, round_trips = 1u64, "BEGIN");
}

impl PgStore {
    /// One change in one transaction and four round trips: `BEGIN`; the row lock that
    /// also records the dedup key and reads the deadline a timer claim checks; one
    /// statement with every write (row, deadlines, outbox); `COMMIT`.
    async fn apply_tx(
        &self,
        c: &mut PgConnection,
        id: &str,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError> {
        use sqlx::Connection as _;
        let mut tx = c.begin().await?;
        count_begin();
        let check = match &change {
            Change::Claim {
                deadline: Some(d), ..
            } => Some(d.kind),
            _ => None,
        };
        // The row lock serialises every change of this chat across replicas.
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("");
        if let Some((source, event_id)) = &guard.dedup {
            qb.push("WITH seen AS (INSERT INTO seen_events (source, event_id, seen_at) VALUES (")
                .push_bind(source.clone())
                .push(", ")
                .push_bind(event_id.clone())
                .push(", ")
                .push_bind(now)
                .push(") ON CONFLICT DO NOTHING RETURNING 1) ");
        }
        qb.push("SELECT ").push(CHAT_COLUMNS);
        if guard.dedup.is_some() {
            qb.push(", EXISTS (SELECT 1 FROM seen)");
        } else {
            qb.push(", TRUE");
        }
        if let Some(kind) = check {
            qb.push(
                ", (SELECT due_at FROM deadlines WHERE live_chat_id = live_chats.id AND kind = ",
            )
            .push_bind(kind.as_str())
            .push(")");
        } else {
            qb.push(", NULL::BIGINT");
        }
        qb.push(" FROM live_chats WHERE id = ")
            .push_bind(id.to_string())
            .push(" FOR UPDATE");
        let Some(row) = qb.build().fetch_optional(&mut *tx).await? else {
            return Ok(Applied::NotFound);
        };
        let chat = read_chat(&row)?;
        let fresh: bool = row.try_get(16)?;
        let due: Option<i64> = row.try_get(17)?;
        if !fresh {
            return Ok(Applied::Duplicate);
        }
        let mut w = Writes::default();
        if let Some(ts) = guard.provider_ts {
            if chat.last_provider_ts.is_some_and(|last| ts < last) {
                tx.commit().await?; // keep the dedup record
                return Ok(Applied::Stale);
            }
            w.set.push(("last_provider_ts", Val::Int(ts)));
        }
        let applied = match change {
            Change::AgentJoined { agent } => {
                if chat.state == ChatState::Waiting {
                    w.join(&chat, &agent, now);
                    true
                } else {
                    false
                }
            }
            Change::AgentMessage { text, agent } => {
                if chat.state.is_open() {
                    if chat.state == ChatState::Waiting {
                        w.join(&chat, &agent, now);
                    }
                    let event_id = events::new_event_id();
                    let body = events::agent_message(&chat, &text, &agent, &event_id, now);
                    w.events.push((event_id, body.to_string()));
                    true
                } else {
                    false
                }
            }
            Change::UserActivity => {
                if chat.state.is_open() {
                    w.set.push(("last_user_message_at", Val::Int(now)));
                    if let (ChatState::WithAgent, Some(due)) =
                        (chat.state, super::inactivity_due(&chat, now))
                    {
                        w.upsert = Some((DeadlineKind::Inactivity, due));
                    }
                    true
                } else {
                    false
                }
            }
            Change::Claim {
                pending,
                expect,
                deadline,
            } => {
                let state_ok = super::claim_allowed(&chat, expect);
                let deadline_ok = deadline.is_none_or(|d| due == Some(d.due_at));
                if state_ok && deadline_ok {
                    w.set.push(("state", Val::Text("closing")));
                    w.set.push(("pending_end", Val::Text(pending.as_str())));
                    w.drop = Some(None);
                    // Watchdog: if this close is interrupted (crash), a scheduler resumes it.
                    w.upsert = Some((DeadlineKind::Close, now + 30_000));
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
                    w.set.push(("state", Val::Text("ended")));
                    w.set.push(("end_status", Val::Text(status.as_str())));
                    w.set.push(("ended_at", Val::Int(now)));
                    w.drop = Some(None);
                    let event_id = events::new_event_id();
                    let body = events::live_chat_ended(&chat, status, &event_id, now);
                    w.events.push((event_id, body.to_string()));
                    true
                }
            }
        };
        let after = w.run(&mut tx, &chat, now).await?.unwrap_or(chat);
        tx.commit().await?;
        Ok(if applied {
            Applied::Done(after)
        } else {
            Applied::Ignored(after)
        })
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

#[async_trait]
impl LiveChatStore for PgStore {
    async fn create(&self, chat: NewLiveChat, now: i64) -> Result<LiveChatRecord, StoreError> {
        let mut c = self.conn().await?;
        // One statement, so one round trip and atomic without BEGIN/COMMIT: the row
        // (RETURNING it as inserted), its wait deadline, and the end of its intent.
        let due = (chat.wait_timeout_s > 0).then(|| now + (chat.wait_timeout_s as i64) * 1000);
        let sql = format!(
            "WITH i AS (
               INSERT INTO live_chats (id, conversation_id, provider, integration_id,
                 provider_conversation_id, state, wait_timeout_s, user_inactivity_timeout_s,
                 created_at, handoff)
               VALUES ($1, $2, $3, $4, $5, 'waiting', $6, $7, $8, $9)
               RETURNING {CHAT_COLUMNS}),
             w AS (
               INSERT INTO deadlines (live_chat_id, kind, due_at)
               SELECT id, 'wait', $10 FROM i WHERE $10::BIGINT IS NOT NULL),
             x AS (DELETE FROM handoff_intents WHERE handoff_id = $1)
             SELECT {CHAT_COLUMNS} FROM i"
        );
        let res = sqlx::query(AssertSqlSafe(sql))
            .bind(&chat.id)
            .bind(&chat.conversation_id)
            .bind(&chat.provider)
            .bind(&chat.integration_id)
            .bind(&chat.provider_conversation_id)
            .bind(chat.wait_timeout_s as i64)
            .bind(chat.user_inactivity_timeout_s as i64)
            .bind(now)
            .bind(&chat.handoff)
            .bind(due)
            .fetch_one(&mut *c)
            .await;
        let r = match res {
            Ok(row) => read_chat(&row),
            // The unique index decides, whichever replica inserts first.
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyOpen),
            Err(e) => Err(e.into()),
        };
        c.settle(r)
    }

    async fn latest_for_conversation(
        &self,
        conversation_id: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            query_chat(
                &mut c,
                "conversation_id = $1
             ORDER BY (state <> 'ended') DESC, created_at DESC, row_seq DESC LIMIT 1",
                &[conversation_id],
            )
            .await
        }
        .await;
        c.settle(r)
    }

    async fn find_by_provider(
        &self,
        integration_id: &str,
        provider_conversation_id: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            query_chat(
                &mut c,
                "integration_id = $1 AND provider_conversation_id = $2
             ORDER BY (state <> 'ended') DESC, created_at DESC, row_seq DESC LIMIT 1",
                &[integration_id, provider_conversation_id],
            )
            .await
        }
        .await;
        c.settle(r)
    }

    async fn get(&self, id: &str) -> Result<Option<LiveChatRecord>, StoreError> {
        let mut c = self.conn().await?;
        let r = async { chat_by_id(&mut c, id).await }.await;
        c.settle(r)
    }

    async fn deadlines(&self, id: &str) -> Result<Vec<Deadline>, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            let rows = sqlx::query(
                "SELECT kind, due_at FROM deadlines WHERE live_chat_id = $1 ORDER BY due_at",
            )
            .bind(id)
            .fetch_all(&mut *c)
            .await?;
            rows.iter()
                .map(|r| super::read_deadline(r.try_get(0)?, r.try_get(1)?))
                .collect()
        }
        .await;
        c.settle(r)
    }

    async fn apply(
        &self,
        id: &str,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError> {
        let mut c = self.conn().await?;
        let r = self.apply_tx(&mut c, id, change, guard, now).await;
        c.settle(r)
    }

    async fn mark_seen(&self, source: &str, id: &str, now: i64) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            let n = sqlx::query(
                "INSERT INTO seen_events (source, event_id, seen_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            )
            .bind(source)
            .bind(id)
            .bind(now)
            .execute(&mut *c)
            .await?
            .rows_affected();
            Ok(n == 1)
        }
        .await;
        c.settle(r)
    }

    async fn drop_deadline(&self, id: &str, deadline: Deadline) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            sqlx::query(
                "DELETE FROM deadlines WHERE live_chat_id = $1 AND kind = $2 AND due_at = $3",
            )
            .bind(id)
            .bind(deadline.kind.as_str())
            .bind(deadline.due_at)
            .execute(&mut *c)
            .await?;
            Ok(())
        }
        .await;
        c.settle(r)
    }

    async fn claim_deadlines(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDeadline>, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            // The CTE is a fence: its LIMIT and row locks are evaluated once.
            let rows = sqlx::query(
                "WITH due AS (
               SELECT live_chat_id, kind FROM deadlines
               WHERE due_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)
               ORDER BY due_at LIMIT $3
               FOR UPDATE SKIP LOCKED)
             UPDATE deadlines d SET claimed_until = $2 FROM due
             WHERE d.live_chat_id = due.live_chat_id AND d.kind = due.kind
             RETURNING d.live_chat_id, d.kind, d.due_at",
            )
            .bind(now)
            .bind(now + lease_ms)
            .bind(limit as i64)
            .fetch_all(&mut *c)
            .await?;
            let mut due = rows
                .iter()
                .map(|r| {
                    Ok(DueDeadline {
                        live_chat_id: r.try_get(0)?,
                        deadline: super::read_deadline(r.try_get(1)?, r.try_get(2)?)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            due.sort_by_key(|d| d.deadline.due_at);
            Ok(due)
        }
        .await;
        c.settle(r)
    }

    async fn next_deadline(&self) -> Result<Option<i64>, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            Ok(sqlx::query_scalar(
                "SELECT MIN(GREATEST(due_at, COALESCE(claimed_until, 0))) FROM deadlines",
            )
            .fetch_one(&mut *c)
            .await?)
        }
        .await;
        c.settle(r)
    }

    async fn outbox_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            // Only heads qualify, so a head that is leased (in flight elsewhere) or waiting
            // for its retry holds back its own conversation and no other.
            let sql = format!(
                "WITH heads AS (
               SELECT o.seq {HEADS} AND o.next_attempt_at <= $1
               AND (o.leased_until IS NULL OR o.leased_until <= $1)
               ORDER BY o.seq LIMIT $3
               FOR UPDATE SKIP LOCKED)
             UPDATE outbox o SET leased_until = $2 FROM heads WHERE o.seq = heads.seq
             RETURNING o.seq, o.event_id, o.conversation_id, o.body, o.attempts"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(now)
                .bind(now + lease_ms)
                .bind(limit as i64)
                .fetch_all(&mut *c)
                .await?;
            let mut events = rows
                .iter()
                .map(|r| {
                    Ok(OutboxEvent {
                        seq: r.try_get(0)?,
                        event_id: r.try_get(1)?,
                        conversation_id: r.try_get(2)?,
                        body: r.try_get(3)?,
                        attempts: r.try_get::<i64, _>(4)?.clamp(0, u32::MAX as i64) as u32,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            events.sort_by_key(|e| e.seq);
            Ok(events)
        }
        .await;
        c.settle(r)
    }

    async fn outbox_next_wake(&self) -> Result<Option<i64>, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            let sql = format!(
                "SELECT MIN(GREATEST(o.next_attempt_at, COALESCE(o.leased_until, 0))) {HEADS}"
            );
            Ok(sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut *c)
                .await?)
        }
        .await;
        c.settle(r)
    }

    async fn outbox_delivered(&self, seq: i64, now: i64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            sqlx::query(
                "UPDATE outbox SET delivered_at = $2, leased_until = NULL
             WHERE seq = $1 AND delivered_at IS NULL",
            )
            .bind(seq)
            .bind(now)
            .execute(&mut *c)
            .await?;
            Ok(())
        }
        .await;
        c.settle(r)
    }

    async fn outbox_failed(&self, seq: i64, next_at: i64, error: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            let error = error.chars().take(500).collect::<String>();
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3,
               leased_until = NULL
             WHERE seq = $1 AND delivered_at IS NULL",
            )
            .bind(seq)
            .bind(next_at)
            .bind(error)
            .execute(&mut *c)
            .await?;
            Ok(())
        }
        .await;
        c.settle(r)
    }

    async fn intent_begin(&self, intent: &HandoffIntent, lease_ms: i64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            sqlx::query(
                "INSERT INTO handoff_intents (handoff_id, conversation_id, integration_id,
               provider, consumer_key, created_at, lease_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&intent.handoff_id)
            .bind(&intent.conversation_id)
            .bind(&intent.integration_id)
            .bind(&intent.provider)
            .bind(&intent.consumer_key)
            .bind(intent.created_at)
            .bind(intent.created_at + lease_ms)
            .execute(&mut *c)
            .await?;
            Ok(())
        }
        .await;
        c.settle(r)
    }

    async fn intent_drop(&self, handoff_id: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            sqlx::query("DELETE FROM handoff_intents WHERE handoff_id = $1")
                .bind(handoff_id)
                .execute(&mut *c)
                .await?;
            Ok(())
        }
        .await;
        c.settle(r)
    }

    async fn intent_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<HandoffIntent>, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            // SKIP LOCKED: replicas reconciling at once each take other intents.
            let rows = sqlx::query(
                "UPDATE handoff_intents SET lease_until = $2 WHERE handoff_id IN (
               SELECT handoff_id FROM handoff_intents WHERE lease_until <= $1
               ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING handoff_id, conversation_id, integration_id, provider,
               consumer_key, created_at",
            )
            .bind(now)
            .bind(now + lease_ms)
            .bind(limit as i64)
            .fetch_all(&mut *c)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(HandoffIntent {
                        handoff_id: r.try_get(0)?,
                        conversation_id: r.try_get(1)?,
                        integration_id: r.try_get(2)?,
                        provider: r.try_get(3)?,
                        consumer_key: r.try_get(4)?,
                        created_at: r.try_get(5)?,
                    })
                })
                .collect()
        }
        .await;
        c.settle(r)
    }

    async fn run_key_begin(
        &self,
        conversation_id: &str,
        key: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<RunKey, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            // The primary key decides which request runs, whichever replica it reached.
            let n = sqlx::query(
                "INSERT INTO run_keys (conversation_id, idem_key, created_at, lease_until)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(conversation_id)
            .bind(key)
            .bind(now)
            .bind(now + lease_ms)
            .execute(&mut *c)
            .await?
            .rows_affected();
            if n == 1 {
                return Ok(RunKey::Fresh);
            }
            let row = sqlx::query(
                "SELECT status, body FROM run_keys WHERE conversation_id = $1 AND idem_key = $2",
            )
            .bind(conversation_id)
            .bind(key)
            .fetch_optional(&mut *c)
            .await?;
            if let Some(row) = row {
                let status: Option<i32> = row.try_get(0)?;
                let body: Option<String> = row.try_get(1)?;
                if let (Some(status), Some(body)) = (status, body) {
                    return Ok(RunKey::Done {
                        status: status.clamp(100, 599) as u16,
                        body,
                    });
                }
            }
            // Still running, unless its lease ran out (the replica died): then take it over.
            let taken = sqlx::query(
                "UPDATE run_keys SET lease_until = $4
             WHERE conversation_id = $1 AND idem_key = $2 AND status IS NULL
               AND lease_until <= $3",
            )
            .bind(conversation_id)
            .bind(key)
            .bind(now)
            .bind(now + lease_ms)
            .execute(&mut *c)
            .await?
            .rows_affected();
            Ok(if taken == 1 {
                RunKey::Fresh
            } else {
                RunKey::Running
            })
        }
        .await;
        c.settle(r)
    }

    async fn run_key_finish(
        &self,
        conversation_id: &str,
        key: &str,
        answer: Option<(u16, String)>,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            match answer {
                Some((status, body)) => {
                    sqlx::query(
                        "UPDATE run_keys SET status = $3, body = $4
                     WHERE conversation_id = $1 AND idem_key = $2",
                    )
                    .bind(conversation_id)
                    .bind(key)
                    .bind(status as i32)
                    .bind(body)
                    .execute(&mut *c)
                    .await?
                }
                None => {
                    sqlx::query("DELETE FROM run_keys WHERE conversation_id = $1 AND idem_key = $2")
                        .bind(conversation_id)
                        .bind(key)
                        .execute(&mut *c)
                        .await?
                }
            };
            Ok(())
        }
        .await;
        c.settle(r)
    }

    async fn timeline_append(&self, entries: Vec<TimelineEntry>) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            if entries.is_empty() {
                return Ok(());
            }
            let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO timeline (live_chat_id, conversation_id, at, kind, data) ",
            );
            qb.push_values(&entries, |mut b, e| {
                b.push_bind(&e.live_chat_id)
                    .push_bind(&e.conversation_id)
                    .push_bind(e.at)
                    .push_bind(&e.kind)
                    .push_bind(e.data.to_string());
            });
            qb.build().execute(&mut *c).await?;
            Ok(())
        }
        .await;
        c.settle(r)
    }

    async fn timeline(&self, conversation_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            let rows = sqlx::query(
                "SELECT live_chat_id, conversation_id, at, kind, data FROM timeline
             WHERE conversation_id = $1 ORDER BY seq",
            )
            .bind(conversation_id)
            .fetch_all(&mut *c)
            .await?;
            rows.iter()
                .map(|r| {
                    let data: String = r.try_get(4)?;
                    Ok(TimelineEntry {
                        live_chat_id: r.try_get(0)?,
                        conversation_id: r.try_get(1)?,
                        at: r.try_get(2)?,
                        kind: r.try_get(3)?,
                        data: serde_json::from_str(&data)
                            .unwrap_or(serde_json::Value::String(data)),
                    })
                })
                .collect()
        }
        .await;
        c.settle(r)
    }

    async fn timeline_prune(&self, before: i64) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            Ok(sqlx::query("DELETE FROM timeline WHERE at < $1")
                .bind(before)
                .execute(&mut *c)
                .await?
                .rows_affected())
        }
        .await;
        c.settle(r)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn listen(&self, wake: WakeFn, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if let Ok(mut listener) = PgListener::connect_with(&self.pool).await {
                if listener.listen(CHANNEL).await.is_ok() {
                    // Whatever was notified while not listening is lost: look now.
                    wake(Wake::Timers);
                    wake(Wake::Outbox);
                    loop {
                        tokio::select! {
                            n = listener.try_recv() => match n {
                                Ok(Some(n)) => wake(if n.payload() == "outbox" {
                                    Wake::Outbox
                                } else {
                                    Wake::Timers
                                }),
                                // Connection lost: the next call reconnects; look again.
                                Ok(None) => {
                                    wake(Wake::Timers);
                                    wake(Wake::Outbox);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %StoreError::from(e), "database listener failed");
                                    break;
                                }
                            },
                            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
        }
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut c = self.conn().await?;
        let r = async {
            let rows = sqlx::query(
                "SELECT provider, state, COUNT(*) FROM live_chats WHERE state <> 'ended'
             GROUP BY provider, state ORDER BY provider, state",
            )
            .fetch_all(&mut *c)
            .await?;
            let open = rows
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            let row = sqlx::query(
                "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL",
            )
            .fetch_one(&mut *c)
            .await?;
            let intents_pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM handoff_intents")
                .fetch_one(&mut *c)
                .await?;
            Ok(StoreStats {
                open,
                outbox_pending: row.try_get(0)?,
                outbox_oldest_created_at: row.try_get(1)?,
                intents_pending,
            })
        }
        .await;
        c.settle(r)
    }
}
