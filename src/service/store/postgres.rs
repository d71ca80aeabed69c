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
//! - Triggers `pg_notify('transbordo', 'outbox' | 'timers')` when work appears;
//!   its [`LiveChatStore::listen`] turns that into wake-ups (workers poll too).

use std::str::FromStr;
use std::time::Duration;

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
        "0006_single_use_digest",
        include_str!("../../../migrations/postgres/0006_single_use_digest.sql"),
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
    pool: PgPool,
    /// `[reentry]` ([`LiveChatStore::set_reentry`]).
    reentry: std::sync::Arc<std::sync::Mutex<super::ReentryOptions>>,
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
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await?;
        let store = PgStore {
            pool,
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

async fn delete_deadlines(c: &mut PgConnection, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM deadlines WHERE live_chat_id = $1")
        .bind(id)
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

/// Joins: waiting → with_agent, wait deadline dropped, inactivity deadline set.
async fn join(
    c: &mut PgConnection,
    chat: &LiveChatRecord,
    agent: &AgentInfo,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE live_chats SET state = 'with_agent', agent_joined_at = $2
         WHERE id = $1 AND state = 'waiting'",
    )
    .bind(&chat.id)
    .bind(now)
    .execute(&mut *c)
    .await?;
    note_agent(c, &chat.id, agent).await?;
    delete_deadline(c, &chat.id, DeadlineKind::Wait).await?;
    if let Some(due) = super::inactivity_due(chat, now) {
        set_deadline(c, &chat.id, DeadlineKind::Inactivity, due).await?;
    }
    let event_id = events::new_event_id();
    let body = events::agent_joined(chat, agent, &event_id, now);
    enqueue(c, &chat.conversation_id, &event_id, &body, now).await
}

/// Keeps who the agent is (the one who joined, then whoever writes), for the re-entry.
async fn note_agent(c: &mut PgConnection, id: &str, agent: &AgentInfo) -> Result<(), StoreError> {
    if agent.id.is_some() || agent.name.is_some() {
        sqlx::query("UPDATE live_chats SET agent_id = $2, agent_name = $3 WHERE id = $1")
            .bind(id)
            .bind(&agent.id)
            .bind(&agent.name)
            .execute(c)
            .await?;
    }
    Ok(())
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

/// Undelivered events that are the oldest undelivered one of their conversation.
const HEADS: &str = "FROM outbox o WHERE o.delivered_at IS NULL AND NOT EXISTS (
       SELECT 1 FROM outbox p WHERE p.conversation_id = o.conversation_id
       AND p.delivered_at IS NULL AND p.seq < o.seq)";

impl PgStore {
    async fn apply_tx(
        &self,
        id: &str,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError> {
        let reentry = self.reentry.lock().map(|r| *r).unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        // The row lock serialises every change of this chat across replicas.
        let Some(chat) = query_chat(&mut tx, "id = $1 FOR UPDATE", &[id]).await? else {
            return Ok(Applied::NotFound);
        };
        if let Some((source, event_id)) = &guard.dedup {
            let n = sqlx::query(
                "INSERT INTO seen_events (source, event_id, seen_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(source)
            .bind(event_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(Applied::Duplicate);
            }
        }
        if let Some(ts) = guard.provider_ts {
            if chat.last_provider_ts.is_some_and(|last| ts < last) {
                tx.commit().await?; // keep the dedup record
                return Ok(Applied::Stale);
            }
            sqlx::query("UPDATE live_chats SET last_provider_ts = $2 WHERE id = $1")
                .bind(id)
                .bind(ts)
                .execute(&mut *tx)
                .await?;
        }
        let applied = match change {
            Change::AgentJoined { agent } => {
                if chat.state == ChatState::Waiting {
                    join(&mut tx, &chat, &agent, now).await?;
                    true
                } else {
                    false
                }
            }
            Change::AgentMessage { text, agent, extra } => {
                if chat.state.is_open() {
                    if chat.state == ChatState::Waiting {
                        join(&mut tx, &chat, &agent, now).await?;
                    }
                    let event_id = events::new_event_id();
                    let body =
                        events::agent_message_with(&chat, &text, &agent, &extra, &event_id, now);
                    enqueue(&mut tx, &chat.conversation_id, &event_id, &body, now).await?;
                    // The agent answered: the unanswered stretch (if any) is over.
                    sqlx::query(
                        "UPDATE live_chats SET agent_messages = agent_messages + 1,
                           awaiting_reply_since = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    delete_deadline(&mut tx, id, DeadlineKind::Reply).await?;
                    note_agent(&mut tx, id, &agent).await?;
                    if reentry.transcript {
                        keep_message(&mut tx, id, "agent", &text, now).await?;
                    }
                    true
                } else {
                    false
                }
            }
            Change::UserActivity => {
                if chat.state.is_open() {
                    sqlx::query("UPDATE live_chats SET last_user_message_at = $2 WHERE id = $1")
                        .bind(id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    if let (ChatState::WithAgent, Some(due)) =
                        (chat.state, super::inactivity_due(&chat, now))
                    {
                        set_deadline(&mut tx, id, DeadlineKind::Inactivity, due).await?;
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
                    sqlx::query(
                        "UPDATE live_chats SET last_user_message_at = $2,
                           user_messages = user_messages + 1 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if let (ChatState::WithAgent, Some(due)) =
                        (chat.state, super::inactivity_due(&chat, now))
                    {
                        set_deadline(&mut tx, id, DeadlineKind::Inactivity, due).await?;
                    }
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
                    true
                } else {
                    false
                }
            }
            Change::ReplyOverdue { deadline } => {
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
                delete_deadline(&mut tx, id, DeadlineKind::Reply).await?;
                match (chat.state, due == Some(deadline.due_at), since) {
                    (ChatState::WithAgent, true, Some(since)) => {
                        let event_id = events::new_event_id();
                        let body = events::agent_reply_overdue(
                            &chat,
                            &agent,
                            since,
                            timeout_s.max(0) as u64,
                            &event_id,
                            now,
                        );
                        enqueue(&mut tx, &chat.conversation_id, &event_id, &body, now).await?;
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
                        let due: Option<i64> = sqlx::query_scalar(
                            "SELECT due_at FROM deadlines WHERE live_chat_id = $1 AND kind = $2",
                        )
                        .bind(id)
                        .bind(d.kind.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                        due == Some(d.due_at)
                    }
                };
                if state_ok && deadline_ok {
                    sqlx::query(
                        "UPDATE live_chats SET state = 'closing', pending_end = $2 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(pending.as_str())
                    .execute(&mut *tx)
                    .await?;
                    delete_deadlines(&mut tx, id).await?;
                    // Watchdog: if this close is interrupted (crash), a scheduler resumes it.
                    set_deadline(&mut tx, id, DeadlineKind::Close, now + 30_000).await?;
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
                    let n = sqlx::query(
                        "UPDATE live_chats SET state = 'ended', end_status = $2, ended_at = $3
                         WHERE id = $1 AND state <> 'ended'",
                    )
                    .bind(id)
                    .bind(status.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n == 1 {
                        delete_deadlines(&mut tx, id).await?;
                        let event_id = events::new_event_id();
                        let mut body = events::live_chat_ended(&chat, status, &event_id, now);
                        if reentry.details {
                            let part = human_part(&mut tx, id, reentry.transcript).await?;
                            super::add_reentry_details(&mut body, &chat, &part, reentry, now);
                        }
                        enqueue(&mut tx, &chat.conversation_id, &event_id, &body, now).await?;
                    }
                    n == 1
                }
            }
        };
        let after = chat_by_id(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("{id} vanished")))?;
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

impl PgStore {
    /// Records a live chat and finishes its intent in one transaction. The intent must be
    /// held by `claim` (`None`: its run; an intent already gone is fine for a run): the
    /// fence between a run and the reconcile that took its intent over. The DELETE locks
    /// the intent's row, so a concurrent claim waits for this transaction or wins before it.
    async fn create_fenced(
        &self,
        chat: NewLiveChat,
        now: i64,
        claim: Option<String>,
    ) -> Result<LiveChatRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "INSERT INTO live_chats (id, conversation_id, provider, integration_id,
               provider_conversation_id, state, wait_timeout_s, user_inactivity_timeout_s,
               created_at, handoff)
             VALUES ($1, $2, $3, $4, $5, 'waiting', $6, $7, $8, $9)",
        )
        .bind(&chat.id)
        .bind(&chat.conversation_id)
        .bind(&chat.provider)
        .bind(&chat.integration_id)
        .bind(&chat.provider_conversation_id)
        .bind(chat.wait_timeout_s as i64)
        .bind(chat.user_inactivity_timeout_s as i64)
        .bind(now)
        .bind(&chat.handoff)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            // The unique index decides, whichever replica inserts first.
            Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyOpen),
            Err(e) => return Err(e.into()),
        }
        if chat.wait_timeout_s > 0 {
            let due = now + (chat.wait_timeout_s as i64) * 1000;
            set_deadline(&mut tx, &chat.id, DeadlineKind::Wait, due).await?;
        }
        let held: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM handoff_intents WHERE handoff_id = $1 RETURNING claim")
                .bind(&chat.id)
                .fetch_optional(&mut *tx)
                .await?;
        // Dropping the transaction rolls the insert back when the fence says no.
        match (&held, &claim) {
            (None, None) => {}
            (Some(h), c) if h == c => {}
            _ => return Err(StoreError::IntentClaimed),
        }
        let rec = chat_by_id(&mut tx, &chat.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("inserted live chat not found".into()))?;
        tx.commit().await?;
        Ok(rec)
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
        let mut c = self.pool.acquire().await?;
        query_chat(
            &mut c,
            "conversation_id = $1
             ORDER BY (state <> 'ended') DESC, created_at DESC, row_seq DESC LIMIT 1",
            &[conversation_id],
        )
        .await
    }

    async fn find_by_provider(
        &self,
        integration_id: &str,
        provider_conversation_id: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        let mut c = self.pool.acquire().await?;
        query_chat(
            &mut c,
            "integration_id = $1 AND provider_conversation_id = $2
             ORDER BY (state <> 'ended') DESC, created_at DESC, row_seq DESC LIMIT 1",
            &[integration_id, provider_conversation_id],
        )
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<LiveChatRecord>, StoreError> {
        let mut c = self.pool.acquire().await?;
        chat_by_id(&mut c, id).await
    }

    async fn deadlines(&self, id: &str) -> Result<Vec<Deadline>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, due_at FROM deadlines WHERE live_chat_id = $1 ORDER BY due_at",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| super::read_deadline(r.try_get(0)?, r.try_get(1)?))
            .collect()
    }

    async fn apply(
        &self,
        id: &str,
        change: Change,
        guard: Guard,
        now: i64,
    ) -> Result<Applied, StoreError> {
        self.apply_tx(id, change, guard, now).await
    }

    async fn mark_seen(
        &self,
        source: &str,
        id: &str,
        digest: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        // A conflict updates (and so counts) only when the body is the same.
        let n = sqlx::query(
            "INSERT INTO seen_events (source, event_id, seen_at, digest) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, event_id) DO UPDATE SET seen_at = seen_events.seen_at
             WHERE seen_events.digest = EXCLUDED.digest",
        )
        .bind(source)
        .bind(id)
        .bind(now)
        .bind(digest)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn drop_deadline(&self, id: &str, deadline: Deadline) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM deadlines WHERE live_chat_id = $1 AND kind = $2 AND due_at = $3")
            .bind(id)
            .bind(deadline.kind.as_str())
            .bind(deadline.due_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_deadlines(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDeadline>, StoreError> {
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
        .fetch_all(&self.pool)
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

    async fn next_deadline(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(GREATEST(due_at, COALESCE(claimed_until, 0))) FROM deadlines",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn outbox_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
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
            .fetch_all(&self.pool)
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

    async fn outbox_next_wake(&self) -> Result<Option<i64>, StoreError> {
        let sql =
            format!("SELECT MIN(GREATEST(o.next_attempt_at, COALESCE(o.leased_until, 0))) {HEADS}");
        Ok(sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?)
    }

    async fn outbox_delivered(&self, seq: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET delivered_at = $2, leased_until = NULL
             WHERE seq = $1 AND delivered_at IS NULL",
        )
        .bind(seq)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn outbox_failed(&self, seq: i64, next_at: i64, error: &str) -> Result<(), StoreError> {
        let error = error.chars().take(500).collect::<String>();
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3,
               leased_until = NULL
             WHERE seq = $1 AND delivered_at IS NULL",
        )
        .bind(seq)
        .bind(next_at)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn intent_begin(&self, intent: &HandoffIntent, lease_ms: i64) -> Result<(), StoreError> {
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn intent_drop(&self, handoff_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM handoff_intents WHERE handoff_id = $1")
            .bind(handoff_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn intent_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<HandoffIntent>, StoreError> {
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
        .fetch_all(&self.pool)
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

    async fn intent_group_claim(
        &self,
        handoff_id: &str,
        now: i64,
        lease_ms: i64,
        claim: &str,
    ) -> Result<Option<Vec<IntentState>>, StoreError> {
        let mut tx = self.pool.begin().await?;
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

    async fn intent_note(
        &self,
        handoff_id: &str,
        claim: &str,
        note: &IntentNote,
    ) -> Result<bool, StoreError> {
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
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn intent_release(&self, handoff_id: &str, claim: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM handoff_intents WHERE handoff_id = $1 AND claim = $2")
            .bind(handoff_id)
            .bind(claim)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn intents(&self) -> Result<Vec<IntentState>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {INTENT_COLUMNS} FROM handoff_intents ORDER BY created_at, handoff_id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read_intent).collect()
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
        sqlx::query(
            "INSERT INTO provider_sightings (integration_id, provider_conversation_id,
               consumer_id, open, seen_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (integration_id, provider_conversation_id)
             DO UPDATE SET open = excluded.open",
        )
        .bind(&sighting.integration_id)
        .bind(&sighting.provider_conversation_id)
        .bind(&sighting.consumer_id)
        .bind(sighting.open)
        .bind(sighting.seen_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn sightings(
        &self,
        integration_id: &str,
        consumer_id: &str,
    ) -> Result<Vec<Sighting>, StoreError> {
        let rows = sqlx::query(
            "SELECT integration_id, provider_conversation_id, consumer_id, open, seen_at
             FROM provider_sightings WHERE integration_id = $1 AND consumer_id = $2
             ORDER BY seen_at, provider_conversation_id",
        )
        .bind(integration_id)
        .bind(consumer_id)
        .fetch_all(&self.pool)
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
    }

    async fn sightings_prune(&self, before: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM provider_sightings WHERE seen_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn run_key_begin(
        &self,
        conversation_id: &str,
        key: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<RunKey, StoreError> {
        // The primary key decides which request runs, whichever replica it reached.
        let n = sqlx::query(
            "INSERT INTO run_keys (conversation_id, idem_key, created_at, lease_until)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(conversation_id)
        .bind(key)
        .bind(now)
        .bind(now + lease_ms)
        .execute(&self.pool)
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
        .fetch_optional(&self.pool)
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
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(if taken == 1 {
            RunKey::Fresh
        } else {
            RunKey::Running
        })
    }

    async fn run_key_finish(
        &self,
        conversation_id: &str,
        key: &str,
        answer: Option<(u16, String)>,
    ) -> Result<(), StoreError> {
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
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query("DELETE FROM run_keys WHERE conversation_id = $1 AND idem_key = $2")
                    .bind(conversation_id)
                    .bind(key)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(())
    }

    async fn timeline_append(&self, entries: Vec<TimelineEntry>) -> Result<(), StoreError> {
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
        qb.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn timeline(&self, conversation_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT live_chat_id, conversation_id, at, kind, data FROM timeline
             WHERE conversation_id = $1 ORDER BY seq",
        )
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let data: String = r.try_get(4)?;
                Ok(TimelineEntry {
                    live_chat_id: r.try_get(0)?,
                    conversation_id: r.try_get(1)?,
                    at: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    data: serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data)),
                })
            })
            .collect()
    }

    async fn timeline_prune(&self, before: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM timeline WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    fn shared(&self) -> bool {
        true
    }

    fn set_reentry(&self, opts: super::ReentryOptions) {
        if let Ok(mut r) = self.reentry.lock() {
            *r = opts;
        }
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
        let rows = sqlx::query(
            "SELECT provider, state, COUNT(*) FROM live_chats WHERE state <> 'ended'
             GROUP BY provider, state ORDER BY provider, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let open = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let row =
            sqlx::query("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
        let intents = sqlx::query("SELECT COUNT(*), COUNT(unresolved_at) FROM handoff_intents")
            .fetch_one(&self.pool)
            .await?;
        Ok(StoreStats {
            open,
            outbox_pending: row.try_get(0)?,
            outbox_oldest_created_at: row.try_get(1)?,
            intents_pending: intents.try_get(0)?,
            intents_unresolved: intents.try_get(1)?,
        })
    }
}
