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
//!   (migration 0006): every commit woke every replica for work only one could take.
//!   [`LiveChatStore::listen`] still turns notifications into wake-ups.
//! - Statements run on connections this store keeps (`Conns`), not sqlx's pool,
//!   which pings a connection on every lend and return; a change is one transaction of
//!   four round trips, and a handoff's record one statement.
//! - The replicas on one database share `database_connections` between them: each
//!   counts the others every second and keeps its share ([`PgStore::rebalance`]), so
//!   adding replicas does not multiply the backends competing for the server's cores.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};

use super::{
    AgentInfo, Applied, Change, ChatState, Deadline, DeadlineKind, DueDeadline, Guard,
    HandoffIntent, IntentNote, IntentState, LiveChatRecord, LiveChatStore, NewLiveChat,
    OutboxEvent, RunKey, Sighting, StoreError, StoreStats, TimelineEntry, Wake, WakeFn,
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
        "0004_reentry",
        include_str!("../../../migrations/postgres/0004_reentry.sql"),
    ),
    (
        "0005_intent_recovery",
        include_str!("../../../migrations/postgres/0005_intent_recovery.sql"),
    ),
    (
        "0006_quiet_wakeups",
        include_str!("../../../migrations/postgres/0006_quiet_wakeups.sql"),
    ),
    (
        "0007_single_use_digest",
        include_str!("../../../migrations/postgres/0007_single_use_digest.sql"),
    ),
    (
        "0008_change_version",
        include_str!("../../../migrations/postgres/0008_change_version.sql"),
    ),
];

/// Seen-event ids older than this are pruned at start (providers stop retrying long before).
const SEEN_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// Statement connections of all the replicas on one database together, unless
/// `database_connections` says otherwise (each replica takes its share, see
/// [`PgStore::rebalance`]). What a database does at once is bounded by its cores, not by
/// how many replicas ask: three replicas of 8 each (24 backends) cost PostgreSQL 25 %
/// more CPU per operation than one of 8 on a two-core machine, three of 3 each 5 %.
pub const DEFAULT_CONNECTIONS: u32 = 8;

/// How often a replica counts the replicas on its database and retakes its share.
const REBALANCE_EVERY: Duration = Duration::from_secs(1);

/// The `application_name` prefix of every connection of a replica (then its id): how
/// replicas count each other in `pg_stat_activity`.
const APPLICATION: &str = "transbordo";

/// How long a request waits for a connection before it is answered 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The notification channel of the wake-up triggers.
const CHANNEL: &str = "transbordo";

/// The PostgreSQL store. Cheap to clone (a pool).
#[derive(Clone)]
pub struct PgStore {
    /// sqlx's pool: migrations, the listener and tests. Statements use [`PgStore::conns`].
    pool: PgPool,
    /// `[reentry]` ([`LiveChatStore::set_reentry`]).
    reentry: std::sync::Arc<std::sync::Mutex<super::ReentryOptions>>,
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
    /// `database_connections`: what all the replicas on the database share.
    budget: usize,
    /// This replica's share now: the permits, counting those still [`Conns::owed`].
    share: std::sync::atomic::AtomicUsize,
    /// Permits to forget as they come back: the share shrank while they were lent.
    owed: std::sync::atomic::AtomicUsize,
    /// Until when (Unix ms) lent connections are checked, after a failure.
    suspect_until: std::sync::atomic::AtomicI64,
}

/// See [`Conns`].
const CHECK_AFTER: Duration = Duration::from_secs(10);

/// A connection lent by [`Conns`].
struct Conn<'a> {
    conn: Option<PgConnection>,
    conns: &'a Conns,
    /// Given back on drop, or forgotten if the share shrank meanwhile.
    permit: Option<SemaphorePermit<'a>>,
    keep: bool,
}

/// One replica's share of `budget` statement connections among `replicas`:
/// ⌈budget / replicas⌉, but at least 2 (a replica with one connection queues all its
/// statements behind each other), or the whole budget if it is smaller.
fn share_of(budget: usize, replicas: usize) -> usize {
    budget.div_ceil(replicas.max(1)).max(budget.min(2))
}

/// Decrements `n` if it is above zero; true if it was.
fn take_one(n: &std::sync::atomic::AtomicUsize) -> bool {
    use std::sync::atomic::Ordering::{AcqRel, Acquire};
    n.fetch_update(AcqRel, Acquire, |v| v.checked_sub(1))
        .is_ok()
}

impl Conns {
    /// Sets this replica's share to `n` permits. A shrink forgets the free permits at
    /// once and the lent ones as they come back; idle connections beyond `n` are closed.
    async fn resize(&self, n: usize) {
        use std::sync::atomic::Ordering::AcqRel;
        let old = self.share.swap(n, AcqRel);
        if n > old {
            let mut grow = n - old;
            while grow > 0 && take_one(&self.owed) {
                grow -= 1;
            }
            self.permits.add_permits(grow);
        } else if n < old {
            let forgotten = self.permits.forget_permits(old - n);
            self.owed.fetch_add(old - n - forgotten, AcqRel);
        }
        let surplus: Vec<PgConnection> = match self.idle.lock() {
            Ok(mut idle) if idle.len() > n => {
                // The oldest returns are at the bottom: those go.
                let extra = idle.len() - n;
                idle.drain(..extra).map(|(c, _)| c).collect()
            }
            _ => Vec::new(),
        };
        for c in surplus {
            use sqlx::Connection as _;
            let _ = c.close().await;
        }
    }

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
            permit: Some(permit),
            keep: false,
        })
    }
}

impl Conn<'_> {
    /// Passes `r` on; the connection goes back for reuse unless the call failed on it
    /// (cut, protocol) rather than in the database (a constraint, a missing row).
    ///
    /// A transaction dropped without a commit (an early return: a duplicate, a stale
    /// event) only queues its `ROLLBACK`, which sqlx sends at the connection's next use:
    /// an idle connection would hold that transaction's row locks until then, and a
    /// replica that rarely reuses it would stall every change of those chats. So the
    /// queue is flushed here; with nothing queued this does no I/O.
    async fn settle<T>(mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        use sqlx::Connection as _;
        let mut keep = !matches!(r, Err(StoreError::Unavailable(_) | StoreError::Task(_)));
        if keep {
            if let Some(c) = self.conn.as_mut() {
                keep = c.flush().await.is_ok();
            }
        }
        self.keep = keep;
        if !keep {
            let until = crate::service::now_ms() + CHECK_AFTER.as_millis() as i64;
            self.conns
                .suspect_until
                .store(until, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

/// Runs `$body` (the statements of one store call, `?` allowed) on a connection lent as
/// `$c`, then gives the connection back through [`Conn::settle`].
macro_rules! on_conn {
    ($store:expr, $c:ident, $body:block) => {{
        let mut $c = $store.conn().await?;
        let r = async $body.await;
        $c.settle(r).await
    }};
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
        if take_one(&self.conns.owed) {
            // The share shrank while this was lent: its permit and its connection go.
            if let Some(p) = self.permit.take() {
                p.forget();
            }
            if let (Some(c), Ok(rt)) = (self.conn.take(), tokio::runtime::Handle::try_current()) {
                rt.spawn(async move {
                    use sqlx::Connection as _;
                    let _ = c.close().await;
                });
            }
            return;
        }
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
    /// Connects (up to [`DEFAULT_CONNECTIONS`] statement connections) and applies
    /// pending migrations.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        PgStore::connect_with(url, DEFAULT_CONNECTIONS).await
    }

    /// Connects with up to `connections` statement connections (at least 1; besides
    /// them, one listens and one applies migrations) and applies pending migrations.
    pub async fn connect_with(url: &str, connections: u32) -> Result<PgStore, StoreError> {
        // sqlx's parse errors may quote the URL: say which URL without its password.
        let opts = PgConnectOptions::from_str(url).map_err(|_| {
            StoreError::Database(format!(
                "`database`: {} is not a valid PostgreSQL URL",
                redact_url(url)
            ))
        })?;
        // Every connection of this replica is named alike, so replicas can count each
        // other (`rebalance`).
        let opts =
            opts.application_name(&format!("{APPLICATION} {}", uuid::Uuid::new_v4().simple()));
        // sqlx's pool serves the listener and migrations only: two connections.
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts.clone())
            .await?;
        let budget = connections.max(1) as usize;
        let conns = Arc::new(Conns {
            opts,
            idle: Mutex::new(Vec::new()),
            // The whole budget until the replicas are counted: alone, it is all ours.
            permits: Semaphore::new(budget),
            budget,
            share: std::sync::atomic::AtomicUsize::new(budget),
            owed: std::sync::atomic::AtomicUsize::new(0),
            suspect_until: std::sync::atomic::AtomicI64::new(0),
        });
        let store = PgStore {
            pool,
            conns,
            reentry: Default::default(),
        };
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

    /// Counts the replicas connected to this database (by their connections'
    /// `application_name`, this one included) and takes this replica's share of
    /// `database_connections`: ⌈budget / replicas⌉, at least 2 (or the budget, if
    /// smaller). Returns the share. Runs every second beside the listener;
    /// a replica that is gone stops counting when its connections close.
    pub async fn rebalance(&self) -> Result<usize, StoreError> {
        // On sqlx's pool, not a statement connection: all of those may be busy.
        let replicas: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT application_name) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE $1",
        )
        .bind(format!("{APPLICATION} %"))
        .fetch_one(&self.pool)
        .await?;
        let budget = self.conns.budget;
        let share = share_of(budget, replicas.max(1) as usize);
        let was = self.conns.share.load(std::sync::atomic::Ordering::Acquire);
        if share != was {
            tracing::info!(
                replicas,
                database_connections = budget,
                share,
                "database connections: this replica's share changed from {was}"
            );
            self.conns.resize(share).await;
        }
        Ok(share)
    }

    /// Retakes this replica's share ([`PgStore::rebalance`]) every [`REBALANCE_EVERY`],
    /// the first time at once, until shutdown.
    async fn keep_share(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut every = tokio::time::interval(REBALANCE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = every.tick() => if let Err(e) = self.rebalance().await {
                    tracing::warn!(error = %e, "counting the replicas on the database failed");
                },
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
        }
    }

    /// Turns notifications on [`CHANNEL`] into wake-ups until shutdown, reconnecting
    /// the listener when it fails ([`LiveChatStore::listen`]).
    async fn notifications(&self, wake: WakeFn, mut stop: tokio::sync::watch::Receiver<bool>) {
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

    /// Lends a statement connection.
    async fn conn(&self) -> Result<Conn<'_>, StoreError> {
        self.conns.get().await
    }

    /// Deletes the rows of `table` (keyed by `seq`) whose `time` column is before
    /// `before`, [`super::PRUNE_CHUNK`] at a time in `seq` order
    /// ([`super::prune_in_chunks`]); returns how many went.
    async fn prune_by_seq(
        &self,
        table: &'static str,
        time: &'static str,
        before: i64,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "WITH d AS (DELETE FROM {table} WHERE seq IN (
               SELECT seq FROM {table} WHERE seq > $1 AND {time} < $2 ORDER BY seq LIMIT $3)
             RETURNING seq)
             SELECT COUNT(*), COALESCE(MAX(seq), $1) FROM d"
        );
        super::prune_in_chunks(|after| {
            let sql = sql.clone();
            async move {
                on_conn!(self, c, {
                    Ok(sqlx::query_as(AssertSqlSafe(sql))
                        .bind(after)
                        .bind(before)
                        .bind(super::PRUNE_CHUNK)
                        .fetch_one(&mut *c)
                        .await?)
                })
            }
        })
        .await
    }

    /// Runs a retention `DELETE` whose one parameter is the cutoff (Unix ms); returns
    /// how many rows went.
    async fn delete_older(&self, sql: &'static str, before: i64) -> Result<u64, StoreError> {
        on_conn!(self, c, {
            Ok(sqlx::query(sql)
                .bind(before)
                .execute(&mut *c)
                .await?
                .rows_affected())
        })
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

impl PgStore {
    /// [`LiveChatStore::intent_group_claim`] on a lent connection.
    async fn intent_group_claim_tx(
        &self,
        c: &mut PgConnection,
        handoff_id: &str,
        now: i64,
        lease_ms: i64,
        claim: &str,
    ) -> Result<Option<Vec<IntentState>>, StoreError> {
        use sqlx::Connection as _;
        let mut tx = c.begin().await?;
        // FOR UPDATE: a run finishing one of them (its DELETE) or another claim waits.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {INTENT_COLUMNS} FROM handoff_intents i WHERE handoff_id = $1
             OR (consumer_key IS NOT NULL AND EXISTS (SELECT 1 FROM handoff_intents o
                 WHERE o.handoff_id = $1 AND o.integration_id = i.integration_id
                   AND o.consumer_key = i.consumer_key))
             ORDER BY created_at, handoff_id FOR UPDATE"
        )))
        .bind(handoff_id)
        .fetch_all(&mut *tx)
        .await?;
        let group = rows
            .iter()
            .map(read_intent)
            .collect::<Result<Vec<_>, _>>()?;
        let held = |i: &IntentState| i.lease_until > now && i.claim.as_deref() != Some(claim);
        if group.is_empty() || group.iter().any(held) {
            return Ok(None);
        }
        let ids: Vec<String> = group.iter().map(|i| i.handoff_id.clone()).collect();
        sqlx::query(
            "UPDATE handoff_intents SET claim = $2, lease_until = $3 WHERE handoff_id = ANY($1)",
        )
        .bind(&ids)
        .bind(claim)
        .bind(now + lease_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(
            group
                .into_iter()
                .map(|i| IntentState {
                    claim: Some(claim.to_string()),
                    lease_until: now + lease_ms,
                    ..i
                })
                .collect(),
        ))
    }
}

const CHAT_COLUMNS: &str =
    "id, conversation_id, provider, integration_id, provider_conversation_id, \
     state, pending_end, end_status, wait_timeout_s, user_inactivity_timeout_s, last_provider_ts, \
     created_at, agent_joined_at, last_user_message_at, ended_at, handoff, version";

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
        version: r.try_get(16)?,
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
    /// An SQL expression written as is (`agent_messages + 1`, `NULL`): never data.
    Raw(&'static str),
    /// A text from outside (bound, never written into the SQL), or NULL.
    Data(Option<String>),
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
    events: Vec<(String, serde_json::Value)>,
    /// Optimistic write: the row's `version` as read, which the UPDATE then requires.
    /// Every other write of the statement happens only if the UPDATE matched.
    fence: Option<i64>,
    /// Optimistic write from the caller's record: the deadline a timer claim requires
    /// still pending, as it was not read.
    deadline_pending: Option<Deadline>,
    /// Optimistic write: the dedup key, recorded by the statement (a locked change
    /// records it under its row lock, before deciding).
    seen: Option<(String, String)>,
}

async fn set_deadline(
    c: &mut PgConnection,
    id: &str,
    kind: DeadlineKind,
    due: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO deadlines (live_chat_id, kind, due_at) VALUES ($1, $2, $3)
         ON CONFLICT (live_chat_id, kind) DO UPDATE SET due_at = excluded.due_at,
           claimed_until = NULL",
    )
    .bind(id)
    .bind(kind.as_str())
    .bind(due)
    .execute(c)
    .await?;
    Ok(())
}

async fn delete_deadline(
    c: &mut PgConnection,
    id: &str,
    kind: DeadlineKind,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM deadlines WHERE live_chat_id = $1 AND kind = $2")
        .bind(id)
        .bind(kind.as_str())
        .execute(c)
        .await?;
    Ok(())
}

async fn enqueue(
    c: &mut PgConnection,
    conversation_id: &str,
    event_id: &str,
    body: &serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (event_id, conversation_id, body, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(event_id)
    .bind(conversation_id)
    .bind(body.to_string())
    .bind(now)
    .execute(c)
    .await?;
    Ok(())
}

impl Writes {
    /// Keeps who the agent is (the one who joined, then whoever writes), for the re-entry.
    fn note_agent(&mut self, agent: &AgentInfo) {
        if agent.id.is_some() || agent.name.is_some() {
            self.set.push(("agent_id", Val::Data(agent.id.clone())));
            self.set.push(("agent_name", Val::Data(agent.name.clone())));
        }
    }

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
        self.events.push((event_id, body));
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.drop.is_none()
            && self.upsert.is_none()
            && self.events.is_empty()
            && self.seen.is_none()
    }

    /// Runs them; the chat's row as written. `None`: the UPDATE matched nothing (with a
    /// `fence`: the row changed since it was read), and nothing was written.
    async fn run(
        mut self,
        c: &mut PgConnection,
        chat: &LiveChatRecord,
        now: i64,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        if self.is_empty() {
            return Ok(None);
        }
        // Every change that writes counts, so that an optimistic change sees any change
        // made since its read (a locked change's own statements, the re-entry's and the
        // reply timer's, touch nothing an optimistic change decides on).
        self.set.push(("version", Val::Raw("version + 1")));
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("WITH ");
        let mut ctes = 0;
        let mut next = |qb: &mut sqlx::QueryBuilder<sqlx::Postgres>, name: &str| {
            if ctes > 0 {
                qb.push(", ");
            }
            ctes += 1;
            qb.push(name).push(" AS (");
        };
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
                Val::Raw(sql) => qb.push(sql),
                Val::Data(t) => qb.push_bind(t),
            };
        }
        qb.push(" WHERE id = ").push_bind(chat.id.clone());
        if let Some(cond) = self.only_if {
            qb.push(" AND ").push(cond);
        }
        if let Some(v) = self.fence {
            qb.push(" AND version = ").push_bind(v);
        }
        if let Some(d) = self.deadline_pending {
            qb.push(" AND EXISTS (SELECT 1 FROM deadlines WHERE live_chat_id = ")
                .push_bind(chat.id.clone())
                .push(" AND kind = ")
                .push_bind(d.kind.as_str())
                .push(" AND due_at = ")
                .push_bind(d.due_at)
                .push(")");
        }
        // Belt and braces for a key recorded without a row write (an ended chat's).
        if let Some((source, event_id)) = &self.seen {
            qb.push(" AND NOT EXISTS (SELECT 1 FROM seen_events WHERE source = ")
                .push_bind(source.clone())
                .push(" AND event_id = ")
                .push_bind(event_id.clone())
                .push(")");
        }
        qb.push(" RETURNING ").push(CHAT_COLUMNS).push(")");
        if let Some((source, event_id)) = self.seen {
            next(&mut qb, "e");
            qb.push("INSERT INTO seen_events (source, event_id, seen_at) SELECT ")
                .push_bind(source)
                .push(", ")
                .push_bind(event_id)
                .push(", ")
                .push_bind(now)
                .push(" FROM u ON CONFLICT DO NOTHING)");
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
            qb.push(" AND EXISTS (SELECT 1 FROM u))");
        }
        if let Some((kind, due)) = self.upsert {
            next(&mut qb, "s");
            qb.push("INSERT INTO deadlines (live_chat_id, kind, due_at) SELECT ")
                .push_bind(chat.id.clone())
                .push(", ")
                .push_bind(kind.as_str())
                .push(", ")
                .push_bind(due)
                .push(" FROM u");
            qb.push(
                " ON CONFLICT (live_chat_id, kind) DO UPDATE SET due_at = excluded.due_at,
                   claimed_until = NULL)",
            );
        }
        if !self.events.is_empty() {
            next(&mut qb, "o");
            qb.push(
                "INSERT INTO outbox (event_id, conversation_id, body, created_at, next_attempt_at) ",
            );
            qb.push("SELECT v.* FROM (");
            qb.push_values(self.events, |mut b, (event_id, body)| {
                b.push_bind(event_id)
                    .push_bind(chat.conversation_id.clone())
                    .push_bind(body.to_string())
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.push(") v WHERE EXISTS (SELECT 1 FROM u))");
        }
        qb.push(" SELECT ").push(CHAT_COLUMNS).push(" FROM u");
        let row = qb.build().fetch_optional(c).await?;
        row.as_ref().map(read_chat).transpose()
    }
}

async fn keep_message(
    c: &mut PgConnection,
    id: &str,
    from: &str,
    text: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO live_chat_messages (live_chat_id, sender, text, at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(from)
    .bind(text)
    .bind(now)
    .execute(c)
    .await?;
    Ok(())
}

/// The human part of a chat as stored (the re-entry details).
async fn human_part(
    c: &mut PgConnection,
    id: &str,
    transcript: bool,
) -> Result<super::HumanPart, StoreError> {
    let r = sqlx::query(
        "SELECT agent_id, agent_name, user_messages, agent_messages FROM live_chats WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut *c)
    .await?;
    let mut part = super::HumanPart {
        agent_id: r.try_get(0)?,
        agent_name: r.try_get(1)?,
        user_messages: r.try_get(2)?,
        agent_messages: r.try_get(3)?,
        transcript: Vec::new(),
    };
    if transcript {
        let rows = sqlx::query(
            "SELECT sender, text, at FROM (SELECT seq, sender, text, at FROM live_chat_messages
               WHERE live_chat_id = $1 ORDER BY seq DESC LIMIT $2) m ORDER BY seq",
        )
        .bind(id)
        .bind(super::TRANSCRIPT_MAX as i64)
        .fetch_all(&mut *c)
        .await?;
        part.transcript = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
    }
    Ok(part)
}

/// Undelivered events that are the oldest undelivered one of their conversation (`h`),
/// as a `DISTINCT ON`: every plan of it is at worst a sort of the undelivered events.
/// The anti-join it replaces (`NOT EXISTS` an older undelivered event) was planned once
/// per connection while the outbox was nearly empty, as a nested loop whose inner side
/// scanned every undelivered event: with 7,000 queued (the builder slow, or a burst of
/// agent messages), one claim took 6 to 9 s and deliveries crawled, until an `ANALYZE`
/// (which nothing runs where autovacuum is off) changed the plan. Conversations are
/// grouped byte-wise (`COLLATE "C"`): only their equality matters, and that sort is
/// cheaper than one under the database's collation (with 5,000 events queued, a claim's
/// heads took 2.5 ms instead of 4.0 under C.UTF-8).
const HEADS: &str = "(SELECT DISTINCT ON (conversation_id COLLATE \"C\") seq, next_attempt_at,
       leased_until FROM outbox WHERE delivered_at IS NULL
       ORDER BY conversation_id COLLATE \"C\", seq) h";

/// Emits the `transbordo::store` trace event of a round trip that sqlx does not log
/// (`BEGIN`), for the statement-count test.
fn count_begin() {
    tracing::trace!(target: "transbordo::store", statements = 1u64, round_trips = 1u64, "BEGIN");
}

/// What a change decides from the chat as read (and the deadline a timer claim checks):
/// whether it applies, and the writes of its one write statement. The statements some
/// changes need besides ([`needs_lock`]) are [`PgStore::apply_tx`]'s.
fn plan(chat: &LiveChatRecord, due: Option<i64>, change: &Change, now: i64) -> (bool, Writes) {
    let mut w = Writes::default();
    let applied = match change {
        Change::AgentJoined { agent } => {
            if chat.state == ChatState::Waiting {
                w.join(chat, agent, now);
                w.note_agent(agent);
                true
            } else {
                false
            }
        }
        Change::AgentMessage { text, agent, extra } => {
            if chat.state.is_open() {
                if chat.state == ChatState::Waiting {
                    w.join(chat, agent, now);
                }
                let event_id = events::new_event_id();
                let body = events::agent_message_with(chat, text, agent, extra, &event_id, now);
                w.events.push((event_id, body));
                // The agent answered: the unanswered stretch (if any) is over.
                w.set
                    .push(("agent_messages", Val::Raw("agent_messages + 1")));
                w.set.push(("awaiting_reply_since", Val::Raw("NULL")));
                if chat.state == ChatState::WithAgent {
                    w.drop = Some(Some(DeadlineKind::Reply));
                }
                w.note_agent(agent);
                true
            } else {
                false
            }
        }
        Change::UserActivity | Change::UserMessage { .. } => {
            if chat.state.is_open() {
                w.set.push(("last_user_message_at", Val::Int(now)));
                if matches!(change, Change::UserMessage { .. }) {
                    w.set.push(("user_messages", Val::Raw("user_messages + 1")));
                }
                if let (ChatState::WithAgent, Some(due)) =
                    (chat.state, super::inactivity_due(chat, now))
                {
                    w.upsert = Some((DeadlineKind::Inactivity, due));
                }
                true
            } else {
                false
            }
        }
        // Decided under the lock, from columns the chat record does not carry.
        Change::ReplyOverdue { .. } => false,
        Change::Claim {
            pending,
            expect,
            deadline,
        } => {
            let state_ok = super::claim_allowed(chat, *expect);
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
                let status = super::end_status(chat, *status, *pending_wins);
                w.set.push(("state", Val::Text("ended")));
                w.set.push(("end_status", Val::Text(status.as_str())));
                w.set.push(("ended_at", Val::Int(now)));
                w.drop = Some(None);
                let event_id = events::new_event_id();
                let body = events::live_chat_ended(chat, status, &event_id, now);
                w.events.push((event_id, body));
                true
            }
        }
    };
    (applied, w)
}

/// Whether a change on this chat runs statements besides its one write (the re-entry
/// transcript and details, the reply timer), so it must hold the row lock.
fn needs_lock(chat: &LiveChatRecord, change: &Change, reentry: super::ReentryOptions) -> bool {
    match change {
        Change::ReplyOverdue { .. } => true,
        Change::AgentMessage { .. } => reentry.transcript && chat.state.is_open(),
        Change::UserMessage {
            reply_timeout_s, ..
        } => {
            chat.state.is_open()
                && (reentry.transcript
                    || (chat.state == ChatState::WithAgent && *reply_timeout_s > 0))
        }
        Change::End { .. } => reentry.details && chat.state != ChatState::Ended,
        _ => false,
    }
}

/// Tries of the optimistic write before a change takes the row lock instead.
const OPTIMISTIC_TRIES: usize = 3;

impl PgStore {
    fn reentry(&self) -> super::ReentryOptions {
        self.reentry.lock().map(|r| *r).unwrap_or_default()
    }

    /// One change in two round trips and no transaction: a plain read (the row with its
    /// `version`, whether the dedup key was seen, the deadline a timer claim checks),
    /// then ONE write statement fenced on that `version` (see [`Writes::run`]), atomic
    /// on its own. With the caller's `known` record the first try reads nothing: its
    /// write also requires the dedup key unseen and the claimed deadline pending, and
    /// any of these failing makes it read. A change that needs more statements, or
    /// whose row changed under it [`OPTIMISTIC_TRIES`] times, runs locked
    /// ([`PgStore::apply_tx`]).
    async fn apply_optimistic(
        &self,
        c: &mut PgConnection,
        id: &str,
        mut known: Option<LiveChatRecord>,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError> {
        let reentry = self.reentry();
        let claimed = match &change {
            Change::Claim { deadline, .. } => *deadline,
            _ => None,
        };
        for _ in 0..OPTIMISTIC_TRIES {
            let (chat, due, read) = match known.take() {
                Some(chat) => (chat, claimed.map(|d| d.due_at), false),
                None => {
                    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT ");
                    qb.push(CHAT_COLUMNS).push(", ");
                    push_seen(&mut qb, &guard);
                    push_due(&mut qb, &change);
                    qb.push(" FROM live_chats WHERE id = ")
                        .push_bind(id.to_string());
                    let Some(row) = qb.build().fetch_optional(&mut *c).await? else {
                        return Ok(Applied::NotFound);
                    };
                    if row.try_get::<bool, _>(17)? {
                        return Ok(Applied::Duplicate);
                    }
                    (read_chat(&row)?, row.try_get(18)?, true)
                }
            };
            if needs_lock(&chat, &change, reentry) {
                break;
            }
            let stale = guard
                .provider_ts
                .is_some_and(|ts| chat.last_provider_ts.is_some_and(|last| ts < last));
            let (applied, mut w) = if stale {
                (false, Writes::default())
            } else {
                plan(&chat, due, &change, now)
            };
            if let (false, Some(ts)) = (stale, guard.provider_ts) {
                w.set.push(("last_provider_ts", Val::Int(ts)));
            }
            w.seen = guard.dedup.clone();
            if w.is_empty() {
                if !read {
                    continue; // nothing to write: answer from the row as it is
                }
                return Ok(if stale {
                    Applied::Stale
                } else {
                    Applied::Ignored(chat)
                });
            }
            w.fence = Some(chat.version);
            if !read && applied {
                w.deadline_pending = claimed;
            }
            let Some(after) = w.run(&mut *c, &chat, now).await? else {
                continue; // changed since it was read: read again
            };
            return Ok(if stale {
                Applied::Stale
            } else if applied {
                Applied::Done(after)
            } else {
                Applied::Ignored(after)
            });
        }
        self.apply_tx(c, id, change, guard, now).await
    }

    /// One change in one transaction and four round trips: `BEGIN`; the row lock that
    /// also records the dedup key and reads the deadline a timer claim checks; one
    /// statement with every write (row, deadlines, outbox); `COMMIT`. Plus the
    /// statements of the changes that need them ([`needs_lock`]).
    async fn apply_tx(
        &self,
        c: &mut PgConnection,
        id: &str,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError> {
        let reentry = self.reentry();
        use sqlx::Connection as _;
        let mut tx = c.begin().await?;
        count_begin();
        // The row lock serialises every change of this chat across replicas.
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT ");
        // `FALSE` holds column 17 (the optimistic read's "dedup key seen"), so that the
        // due time is column 18 in both reads: the key is checked below, by inserting it.
        qb.push(CHAT_COLUMNS).push(", FALSE");
        push_due(&mut qb, &change);
        qb.push(" FROM live_chats WHERE id = ")
            .push_bind(id.to_string())
            .push(" FOR UPDATE");
        let Some(row) = qb.build().fetch_optional(&mut *tx).await? else {
            return Ok(Applied::NotFound);
        };
        let chat = read_chat(&row)?;
        let due: Option<i64> = row.try_get(18)?;
        // The dedup key is taken under the row lock, as an optimistic write takes it
        // under its UPDATE's: row first, then key (the other order could deadlock).
        // Inserted, not looked up: a look-up in the locking read would use the snapshot
        // from before the lock wait and miss the key of the change it waited for.
        if let Some((source, event_id)) = &guard.dedup {
            let fresh = sqlx::query(
                "INSERT INTO seen_events (source, event_id, seen_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(source)
            .bind(event_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                return Ok(Applied::Duplicate);
            }
        }
        if let Some(ts) = guard.provider_ts {
            if chat.last_provider_ts.is_some_and(|last| ts < last) {
                tx.commit().await?; // keep the dedup record
                return Ok(Applied::Stale);
            }
        }
        let (mut applied, mut w) = plan(&chat, due, &change, now);
        if let Some(ts) = guard.provider_ts {
            w.set.push(("last_provider_ts", Val::Int(ts)));
        }
        match change {
            Change::AgentMessage { text, .. } if applied && reentry.transcript => {
                keep_message(&mut tx, id, "agent", &text, now).await?;
            }
            Change::UserMessage {
                text,
                reply_timeout_s,
            } if applied => {
                if reentry.transcript {
                    keep_message(&mut tx, id, "user", &text, now).await?;
                }
                if chat.state == ChatState::WithAgent && reply_timeout_s > 0 {
                    // Only the first message of a stretch starts its timer.
                    let started = sqlx::query(
                        "UPDATE live_chats SET awaiting_reply_since = $2, reply_timeout_s = $3
                         WHERE id = $1 AND awaiting_reply_since IS NULL",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(reply_timeout_s as i64)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if started == 1 {
                        let due = now + (reply_timeout_s as i64).saturating_mul(1000);
                        set_deadline(&mut tx, id, DeadlineKind::Reply, due).await?;
                    }
                }
            }
            Change::ReplyOverdue { deadline } => {
                applied = reply_overdue(&mut tx, &chat, deadline, now).await?;
            }
            Change::End { .. } if applied && reentry.details => {
                let part = human_part(&mut tx, id, reentry.transcript).await?;
                if let Some((_, body)) = w.events.last_mut() {
                    super::add_reentry_details(body, &chat, &part, reentry, now);
                }
            }
            _ => {}
        }
        let after = w.run(&mut tx, &chat, now).await?.unwrap_or(chat);
        tx.commit().await?;
        Ok(if applied {
            Applied::Done(after)
        } else {
            Applied::Ignored(after)
        })
    }
}

/// The read's column 17: whether the change's dedup key was seen before.
fn push_seen(qb: &mut sqlx::QueryBuilder<sqlx::Postgres>, guard: &Guard) {
    match &guard.dedup {
        Some((source, event_id)) => {
            qb.push("EXISTS (SELECT 1 FROM seen_events WHERE source = ")
                .push_bind(source.clone())
                .push(" AND event_id = ")
                .push_bind(event_id.clone())
                .push(")");
        }
        None => {
            qb.push("FALSE");
        }
    }
}

/// The read's column 18: the due time of the deadline a timer claim checks (else NULL).
fn push_due(qb: &mut sqlx::QueryBuilder<sqlx::Postgres>, change: &Change) {
    match change {
        Change::Claim {
            deadline: Some(d), ..
        } => {
            qb.push(
                ", (SELECT due_at FROM deadlines WHERE live_chat_id = live_chats.id AND kind = ",
            )
            .push_bind(d.kind.as_str())
            .push(")");
        }
        _ => {
            qb.push(", NULL::BIGINT");
        }
    }
}

/// The reply deadline fired (under the row lock): queue `agent_reply_overdue` when the
/// chat is still with an agent and that exact deadline is still pending.
async fn reply_overdue(
    tx: &mut PgConnection,
    chat: &LiveChatRecord,
    deadline: Deadline,
    now: i64,
) -> Result<bool, StoreError> {
    let id = chat.id.as_str();
    let due: Option<i64> = sqlx::query_scalar(
        "SELECT due_at FROM deadlines WHERE live_chat_id = $1 AND kind = 'reply'",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let r = sqlx::query(
        "SELECT awaiting_reply_since, reply_timeout_s, agent_id, agent_name
         FROM live_chats WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let since: Option<i64> = r.try_get(0)?;
    let timeout_s: i64 = r.try_get(1)?;
    let agent = AgentInfo {
        id: r.try_get(2)?,
        name: r.try_get(3)?,
    };
    delete_deadline(&mut *tx, id, DeadlineKind::Reply).await?;
    match (chat.state, due == Some(deadline.due_at), since) {
        (ChatState::WithAgent, true, Some(since)) => {
            let event_id = events::new_event_id();
            let body = events::agent_reply_overdue(
                chat,
                &agent,
                since,
                timeout_s.max(0) as u64,
                &event_id,
                now,
            );
            enqueue(&mut *tx, &chat.conversation_id, &event_id, &body, now).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

impl PgStore {
    /// Records a live chat and finishes its intent in ONE statement (one round trip,
    /// atomic without BEGIN/COMMIT): the row (RETURNING it as inserted), its wait
    /// deadline, and the end of its intent. The intent must be held by `claim` (`None`:
    /// its run; an intent already gone is fine for a run): the fence between a run and
    /// the reconcile that took its intent over. The DELETE takes the intent's row lock
    /// and re-reads a row a concurrent claim changed, so it deletes only an intent still
    /// held by `claim`; the INSERT happens only if it did, or (for a run) if the intent
    /// was already gone. Nothing inserted: [`StoreError::IntentClaimed`].
    async fn create_fenced(
        &self,
        chat: NewLiveChat,
        now: i64,
        claim: Option<String>,
    ) -> Result<LiveChatRecord, StoreError> {
        let mut c = self.conn().await?;
        let due = (chat.wait_timeout_s > 0).then(|| now + (chat.wait_timeout_s as i64) * 1000);
        let sql = format!(
            "WITH x AS (
               DELETE FROM handoff_intents WHERE handoff_id = $1 AND claim IS NOT DISTINCT FROM $11
               RETURNING 1),
             held AS (SELECT 1 FROM handoff_intents WHERE handoff_id = $1),
             i AS (
               INSERT INTO live_chats (id, conversation_id, provider, integration_id,
                 provider_conversation_id, state, wait_timeout_s, user_inactivity_timeout_s,
                 created_at, handoff)
               SELECT $1, $2, $3, $4, $5, 'waiting', $6, $7, $8, $9
               WHERE EXISTS (SELECT 1 FROM x)
                  OR ($11::TEXT IS NULL AND NOT EXISTS (SELECT 1 FROM held))
               RETURNING {CHAT_COLUMNS}),
             w AS (
               INSERT INTO deadlines (live_chat_id, kind, due_at)
               SELECT id, 'wait', $10 FROM i WHERE $10::BIGINT IS NOT NULL)
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
            .bind(claim)
            .fetch_optional(&mut *c)
            .await;
        let r = match res {
            Ok(Some(row)) => read_chat(&row),
            Ok(None) => Err(StoreError::IntentClaimed),
            // The unique index decides, whichever replica inserts first (the whole
            // statement fails, so the intent stays).
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyOpen),
            Err(e) => Err(e.into()),
        };
        c.settle(r).await
    }
}

fn read_intent(r: &PgRow) -> Result<IntentState, StoreError> {
    Ok(IntentState {
        handoff_id: r.try_get(0)?,
        conversation_id: r.try_get(1)?,
        integration_id: r.try_get(2)?,
        provider: r.try_get(3)?,
        consumer_key: r.try_get(4)?,
        created_at: r.try_get(5)?,
        lease_until: r.try_get(6)?,
        claim: r.try_get(7)?,
        lp_consumer_id: r.try_get(8)?,
        probe_conversation_id: r.try_get(9)?,
        unresolved_at: r.try_get(10)?,
        note: r.try_get(11)?,
    })
}

const INTENT_COLUMNS: &str = "handoff_id, conversation_id, integration_id, provider, consumer_key,
    created_at, lease_until, claim, lp_consumer_id, probe_conversation_id, unresolved_at, note";

#[async_trait]
impl LiveChatStore for PgStore {
    async fn create(&self, chat: NewLiveChat, now: i64) -> Result<LiveChatRecord, StoreError> {
        self.create_fenced(chat, now, None).await
    }

    async fn latest_for_conversation(
        &self,
        conversation_id: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        on_conn!(self, c, {
            query_chat(
                &mut c,
                "conversation_id = $1
             ORDER BY (state <> 'ended') DESC, created_at DESC, row_seq DESC LIMIT 1",
                &[conversation_id],
            )
            .await
        })
    }

    async fn find_by_provider(
        &self,
        integration_id: &str,
        provider_conversation_id: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        on_conn!(self, c, {
            query_chat(
                &mut c,
                "integration_id = $1 AND provider_conversation_id = $2
             ORDER BY (state <> 'ended') DESC, created_at DESC, row_seq DESC LIMIT 1",
                &[integration_id, provider_conversation_id],
            )
            .await
        })
    }

    async fn get(&self, id: &str) -> Result<Option<LiveChatRecord>, StoreError> {
        let mut c = self.conn().await?;
        let r = async { chat_by_id(&mut c, id).await }.await;
        c.settle(r).await
    }

    async fn deadlines(&self, id: &str) -> Result<Vec<Deadline>, StoreError> {
        on_conn!(self, c, {
            let rows = sqlx::query(
                "SELECT kind, due_at FROM deadlines WHERE live_chat_id = $1 ORDER BY due_at",
            )
            .bind(id)
            .fetch_all(&mut *c)
            .await?;
            rows.iter()
                .map(|r| super::read_deadline(r.try_get(0)?, r.try_get(1)?))
                .collect()
        })
    }

    async fn apply(
        &self,
        id: &str,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError> {
        let mut c = self.conn().await?;
        let r = self
            .apply_optimistic(&mut c, id, None, change, guard, now)
            .await;
        c.settle(r).await
    }

    async fn apply_to(
        &self,
        chat: &LiveChatRecord,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError> {
        let mut c = self.conn().await?;
        let r = self
            .apply_optimistic(&mut c, &chat.id, Some(chat.clone()), change, guard, now)
            .await;
        c.settle(r).await
    }

    async fn event_seen(&self, source: &str, event_id: &str, now: i64) -> Result<bool, StoreError> {
        on_conn!(self, c, {
            let n = sqlx::query(
                "INSERT INTO seen_events (source, event_id, seen_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(source)
            .bind(event_id)
            .bind(now)
            .execute(&mut *c)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    async fn mark_seen(
        &self,
        source: &str,
        id: &str,
        digest: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        on_conn!(self, c, {
            // A conflict updates (and so counts) only when the body is the same.
            let n = sqlx::query(
                "INSERT INTO seen_events (source, event_id, seen_at, digest)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (source, event_id) DO UPDATE SET seen_at = seen_events.seen_at
                 WHERE seen_events.digest = EXCLUDED.digest",
            )
            .bind(source)
            .bind(id)
            .bind(now)
            .bind(digest)
            .execute(&mut *c)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    async fn drop_deadline(&self, id: &str, deadline: Deadline) -> Result<(), StoreError> {
        on_conn!(self, c, {
            sqlx::query(
                "DELETE FROM deadlines WHERE live_chat_id = $1 AND kind = $2 AND due_at = $3",
            )
            .bind(id)
            .bind(deadline.kind.as_str())
            .bind(deadline.due_at)
            .execute(&mut *c)
            .await?;
            Ok(())
        })
    }

    async fn claim_deadlines(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDeadline>, StoreError> {
        on_conn!(self, c, {
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
        })
    }

    async fn next_deadline(&self) -> Result<Option<i64>, StoreError> {
        on_conn!(self, c, {
            Ok(sqlx::query_scalar(
                "SELECT MIN(GREATEST(due_at, COALESCE(claimed_until, 0))) FROM deadlines",
            )
            .fetch_one(&mut *c)
            .await?)
        })
    }

    async fn outbox_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        on_conn!(self, c, {
            // Only heads qualify, so a head that is leased (in flight elsewhere) or waiting
            // for its retry holds back its own conversation and no other.
            // The claimable heads (up to 4 × `limit`) as one array, evaluated once, then
            // taken by primary key: no plan of this joins the outbox to itself. Locked
            // rows (another replica's claim) are skipped, and a row's lease and delivery
            // are checked again on its newest version once locked.
            let sql = format!(
                "WITH c AS (
               SELECT o.seq FROM outbox o WHERE o.seq = ANY (ARRAY(
                 SELECT h.seq FROM {HEADS} WHERE h.next_attempt_at <= $1
                 AND (h.leased_until IS NULL OR h.leased_until <= $1)
                 ORDER BY h.seq LIMIT $3 * 4))
               AND o.delivered_at IS NULL AND o.next_attempt_at <= $1
               AND (o.leased_until IS NULL OR o.leased_until <= $1)
               ORDER BY o.seq LIMIT $3
               FOR UPDATE SKIP LOCKED)
             UPDATE outbox o SET leased_until = $2 FROM c WHERE o.seq = c.seq
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
        })
    }

    async fn outbox_next_wake(&self) -> Result<Option<i64>, StoreError> {
        on_conn!(self, c, {
            let sql = format!(
                "SELECT MIN(GREATEST(h.next_attempt_at, COALESCE(h.leased_until, 0))) FROM {HEADS}"
            );
            Ok(sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut *c)
                .await?)
        })
    }

    async fn outbox_delivered(&self, seqs: &[i64], now: i64) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        on_conn!(self, c, {
            sqlx::query(
                "UPDATE outbox SET delivered_at = $2, leased_until = NULL
             WHERE seq = ANY($1) AND delivered_at IS NULL",
            )
            .bind(seqs)
            .bind(now)
            .execute(&mut *c)
            .await?;
            Ok(())
        })
    }

    async fn outbox_failed(&self, seq: i64, next_at: i64, error: &str) -> Result<(), StoreError> {
        on_conn!(self, c, {
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
        })
    }

    async fn intent_begin(&self, intent: &HandoffIntent, lease_ms: i64) -> Result<(), StoreError> {
        on_conn!(self, c, {
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
        })
    }

    async fn intent_drop(&self, handoff_id: &str) -> Result<(), StoreError> {
        on_conn!(self, c, {
            sqlx::query("DELETE FROM handoff_intents WHERE handoff_id = $1")
                .bind(handoff_id)
                .execute(&mut *c)
                .await?;
            Ok(())
        })
    }

    async fn intent_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<HandoffIntent>, StoreError> {
        on_conn!(self, c, {
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
        })
    }

    async fn intent_group_claim(
        &self,
        handoff_id: &str,
        now: i64,
        lease_ms: i64,
        claim: &str,
    ) -> Result<Option<Vec<IntentState>>, StoreError> {
        let mut c = self.conn().await?;
        let r = self
            .intent_group_claim_tx(&mut c, handoff_id, now, lease_ms, claim)
            .await;
        c.settle(r).await
    }

    async fn intent_note(
        &self,
        handoff_id: &str,
        claim: &str,
        note: &IntentNote,
    ) -> Result<bool, StoreError> {
        on_conn!(self, c, {
            let r = sqlx::query(
                "UPDATE handoff_intents SET lp_consumer_id = COALESCE($3, lp_consumer_id),
                   probe_conversation_id = COALESCE($4, probe_conversation_id),
                   unresolved_at = COALESCE(unresolved_at, $5), note = COALESCE($6, note)
                 WHERE handoff_id = $1 AND claim = $2",
            )
            .bind(handoff_id)
            .bind(claim)
            .bind(&note.lp_consumer_id)
            .bind(&note.probe_conversation_id)
            .bind(note.unresolved_at)
            .bind(&note.note)
            .execute(&mut *c)
            .await?;
            Ok(r.rows_affected() > 0)
        })
    }

    async fn intent_release(&self, handoff_id: &str, claim: &str) -> Result<bool, StoreError> {
        on_conn!(self, c, {
            let r = sqlx::query("DELETE FROM handoff_intents WHERE handoff_id = $1 AND claim = $2")
                .bind(handoff_id)
                .bind(claim)
                .execute(&mut *c)
                .await?;
            Ok(r.rows_affected() > 0)
        })
    }

    async fn intents(&self) -> Result<Vec<IntentState>, StoreError> {
        on_conn!(self, c, {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT {INTENT_COLUMNS} FROM handoff_intents ORDER BY created_at, handoff_id"
            )))
            .fetch_all(&mut *c)
            .await?;
            rows.iter().map(read_intent).collect()
        })
    }

    async fn adopt(
        &self,
        chat: NewLiveChat,
        now: i64,
        claim: &str,
    ) -> Result<LiveChatRecord, StoreError> {
        self.create_fenced(chat, now, Some(claim.to_string())).await
    }

    async fn sighting_record(&self, sighting: &Sighting) -> Result<(), StoreError> {
        on_conn!(self, c, {
            // Only a conversation no live chat tracks (one statement, no look-up first).
            sqlx::query(
                "INSERT INTO provider_sightings (integration_id, provider_conversation_id,
                   consumer_id, open, seen_at)
                 SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM live_chats
                   WHERE integration_id = $1 AND provider_conversation_id = $2)
                 ON CONFLICT (integration_id, provider_conversation_id)
                 DO UPDATE SET open = excluded.open",
            )
            .bind(&sighting.integration_id)
            .bind(&sighting.provider_conversation_id)
            .bind(&sighting.consumer_id)
            .bind(sighting.open)
            .bind(sighting.seen_at)
            .execute(&mut *c)
            .await?;
            Ok(())
        })
    }

    async fn sightings(
        &self,
        integration_id: &str,
        consumer_id: &str,
    ) -> Result<Vec<Sighting>, StoreError> {
        on_conn!(self, c, {
            let rows = sqlx::query(
                "SELECT integration_id, provider_conversation_id, consumer_id, open, seen_at
                 FROM provider_sightings WHERE integration_id = $1 AND consumer_id = $2
                 ORDER BY seen_at, provider_conversation_id",
            )
            .bind(integration_id)
            .bind(consumer_id)
            .fetch_all(&mut *c)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(Sighting {
                        integration_id: r.try_get(0)?,
                        provider_conversation_id: r.try_get(1)?,
                        consumer_id: r.try_get(2)?,
                        open: r.try_get(3)?,
                        seen_at: r.try_get(4)?,
                    })
                })
                .collect()
        })
    }

    async fn sightings_prune(&self, before: i64) -> Result<u64, StoreError> {
        self.delete_older("DELETE FROM provider_sightings WHERE seen_at < $1", before)
            .await
    }

    async fn run_key_begin(
        &self,
        conversation_id: &str,
        key: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<RunKey, StoreError> {
        on_conn!(self, c, {
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
        })
    }

    async fn run_key_finish(
        &self,
        conversation_id: &str,
        key: &str,
        answer: Option<(u16, String)>,
    ) -> Result<(), StoreError> {
        on_conn!(self, c, {
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
        })
    }

    async fn timeline_append(&self, entries: Vec<TimelineEntry>) -> Result<(), StoreError> {
        on_conn!(self, c, {
            if entries.is_empty() {
                return Ok(());
            }
            // One statement text whatever the batch size (arrays, not a VALUES row per
            // entry): a text per size would be prepared and cached per connection, and
            // those caches (here and in the server's backends) held tens of MB.
            let mut cols: (Vec<String>, Vec<String>, Vec<i64>, Vec<String>, Vec<String>) =
                Default::default();
            for e in entries {
                cols.0.push(e.live_chat_id);
                cols.1.push(e.conversation_id);
                cols.2.push(e.at);
                cols.3.push(e.kind);
                cols.4.push(e.data.to_string());
            }
            sqlx::query(
                "INSERT INTO timeline (live_chat_id, conversation_id, at, kind, data)
                 SELECT l, c, a, k, d FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[],
                   $4::TEXT[], $5::TEXT[]) WITH ORDINALITY AS t(l, c, a, k, d, n) ORDER BY n",
            )
            .bind(cols.0)
            .bind(cols.1)
            .bind(cols.2)
            .bind(cols.3)
            .bind(cols.4)
            .execute(&mut *c)
            .await?;
            Ok(())
        })
    }

    async fn timeline(&self, conversation_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        on_conn!(self, c, {
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
        })
    }

    async fn outbox_prune(&self, before: i64) -> Result<u64, StoreError> {
        self.prune_by_seq("outbox", "delivered_at", before).await
    }

    async fn timeline_prune(&self, before: i64) -> Result<u64, StoreError> {
        self.prune_by_seq("timeline", "at", before).await
    }

    fn shared(&self) -> bool {
        true
    }

    fn set_reentry(&self, opts: super::ReentryOptions) {
        if let Ok(mut r) = self.reentry.lock() {
            *r = opts;
        }
    }

    async fn listen(&self, wake: WakeFn, stop: tokio::sync::watch::Receiver<bool>) {
        tokio::join!(
            self.notifications(wake, stop.clone()),
            self.keep_share(stop)
        );
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        on_conn!(self, c, {
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
            let intents = sqlx::query("SELECT COUNT(*), COUNT(unresolved_at) FROM handoff_intents")
                .fetch_one(&mut *c)
                .await?;
            Ok(StoreStats {
                open,
                outbox_pending: row.try_get(0)?,
                outbox_oldest_created_at: row.try_get(1)?,
                intents_pending: intents.try_get(0)?,
                intents_unresolved: intents.try_get(1)?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::share_of;

    #[test]
    fn a_replica_takes_an_even_share_of_at_least_two() {
        let shares: Vec<_> = [
            (8, 1),
            (8, 2),
            (8, 3),
            (8, 5),
            (8, 10),
            (1, 3),
            (2, 3),
            (0, 0),
        ]
        .iter()
        .map(|&(budget, replicas)| share_of(budget, replicas))
        .collect();
        assert_eq!(shares, [8, 4, 3, 2, 2, 1, 2, 0]);
    }
}
