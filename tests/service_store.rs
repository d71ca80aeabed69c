//! One store test suite, run against both backends: SQLite (a temporary file) and
//! PostgreSQL (a fresh database per test, see `pg_support`; skipped with a message when
//! no server answers, failing instead under `TRANSBORDO_REQUIRE_PG=1`). Several store
//! handles on one database stand for replicas: exactly-once endings, one open live chat
//! per conversation, conditional timers, dedup, timer claims (10,000 due timers over 8
//! handles, each fire recorded under a UNIQUE constraint), per-conversation outbox heads
//! with leases, and old SQLite databases still opening.

mod pg_support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use transbordo::service::store::{
    AgentInfo, Applied, Change, ChatState, Database, Deadline, DeadlineKind, DueDeadline,
    EndStatus, Guard, HandoffIntent, LiveChatStore, NewLiveChat, TimelineEntry, PRUNE_CHUNK,
};
use transbordo::service::{now_ms, SqliteStore, StoreError};

/// Lease for claims in these tests (ms).
const LEASE: i64 = 60_000;

/// One database of one backend; `open` gives another handle on it.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(pg_support::TestDb),
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres() -> Option<Db> {
        pg_support::test_db().await.map(Db::Postgres)
    }

    fn database(&self) -> Database {
        match self {
            Db::Sqlite(d) => Database::Sqlite(d.path().join("sub/dir/t.db")),
            Db::Postgres(t) => Database::Postgres(t.url.clone()),
        }
    }

    async fn open(&self) -> Arc<dyn LiveChatStore> {
        self.database().open().await.unwrap()
    }

    async fn handles(&self, n: usize) -> Vec<Arc<dyn LiveChatStore>> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(self.open().await);
        }
        v
    }
}

/// Each test twice: `<name>::sqlite` and `<name>::postgres`.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::Db::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = super::Db::postgres().await else { return };
                super::$name(db).await
            }
        }
    )*};
}

both_stores!(
    migrations_recorded_and_reopen_is_idempotent,
    concurrent_endings_apply_once_with_one_outbox_event,
    timer_claims_are_conditional_and_dedup_holds,
    same_millisecond_changes_both_apply_older_ones_are_stale,
    one_open_live_chat_per_conversation_across_handles,
    deadline_claims_are_exclusive_until_the_lease_ends,
    outbox_heads_in_order_with_leases,
    ten_thousand_timers_over_eight_handles_fire_once,
    handoff_intents_are_leased_and_finished_by_the_live_chat,
    single_use_ids_refuse_another_body_and_let_the_same_request_retry,
    a_change_refused_midway_leaves_no_lock_behind,
    racing_changes_of_one_chat_apply_once_and_never_after_its_end,
    delivered_events_are_pruned_undelivered_ones_stay,
    prunes_walk_history_longer_than_one_statement,
);

fn chat(id: &str, conv: &str, wait: u64) -> NewLiveChat {
    NewLiveChat {
        handoff: None,
        id: id.into(),
        conversation_id: conv.into(),
        provider: "liveperson".into(),
        integration_id: "7".into(),
        provider_conversation_id: format!("pc-{conv}"),
        wait_timeout_s: wait,
        user_inactivity_timeout_s: 5,
    }
}

fn end(status: EndStatus) -> Change {
    Change::End {
        status,
        pending_wins: true,
    }
}

/// 16 handles race to open a live chat for one conversation: the unique index lets one
/// in, the others get `AlreadyOpen`; after the end a new one may open.
async fn one_open_live_chat_per_conversation_across_handles(db: Db) {
    let handles = db.handles(4).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = handles[i % handles.len()].clone();
        tasks.push(tokio::spawn(async move {
            s.create(chat(&format!("h{i}"), "c1", 0), 1).await
        }));
    }
    let mut ok = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => ok.push(r.id),
            Err(StoreError::AlreadyOpen) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok.len(), 1, "{ok:?}");
    let s = &handles[0];
    assert!(matches!(
        s.create(chat("again", "c1", 0), 2).await,
        Err(StoreError::AlreadyOpen)
    ));
    s.apply(&ok[0], end(EndStatus::UserClosed), Guard::default(), 3)
        .await
        .unwrap();
    let next = s.create(chat("next", "c1", 0), 4).await.unwrap();
    assert_eq!(
        s.latest_for_conversation("c1").await.unwrap().unwrap().id,
        next.id
    );
}

/// A claimed deadline is nobody else's until its lease ends; then it is claimable again
/// (its claimant died). Moving a deadline frees it.
async fn deadline_claims_are_exclusive_until_the_lease_ends(db: Db) {
    let handles = db.handles(2).await;
    let (a, b) = (&handles[0], &handles[1]);
    a.create(chat("h1", "c1", 1), 0).await.unwrap();
    assert!(a.claim_deadlines(999, 5_000, 10).await.unwrap().is_empty());
    let got = a.claim_deadlines(1_000, 5_000, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].deadline.due_at, 1_000);
    assert!(b
        .claim_deadlines(1_000, 5_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(b
        .claim_deadlines(5_999, 5_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(b.next_deadline().await.unwrap(), Some(6_000));
    let again = b.claim_deadlines(6_000, 5_000, 10).await.unwrap();
    assert_eq!(again, got);
}

/// Only the oldest undelivered event of a conversation is claimable; a leased or
/// retrying head holds back its own conversation only; a lease that runs out hands the
/// same event (same `event_id`) to another handle.
async fn outbox_heads_in_order_with_leases(db: Db) {
    let handles = db.handles(2).await;
    let (a, b) = (&handles[0], &handles[1]);
    for c in ["c1", "c2"] {
        let id = format!("h-{c}");
        a.create(chat(&id, c, 0), 0).await.unwrap();
        for (i, text) in ["one", "two"].iter().enumerate() {
            let change = Change::AgentMessage {
                text: text.to_string(),
                agent: AgentInfo::default(),
                extra: Default::default(),
            };
            a.apply(&id, change, Guard::default(), 10 + i as i64)
                .await
                .unwrap();
        }
        a.apply(&id, end(EndStatus::AgentClosed), Guard::default(), 20)
            .await
            .unwrap();
    }
    let kinds = |b: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(b).unwrap();
        format!(
            "{}:{}",
            v["type"].as_str().unwrap(),
            v["text"].as_str().unwrap_or("")
        )
    };
    // Heads: c1's agent_joined and c2's.
    let first = a.outbox_claim(100, 1_000, 10).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|e| kinds(&e.body) == "agent_joined:"));
    // Both leased: nothing for b, not even c1's second event.
    assert!(b.outbox_claim(100, 1_000, 10).await.unwrap().is_empty());
    assert_eq!(b.outbox_next_wake().await.unwrap(), Some(1_100));
    // c1 delivered; c2 fails and retries at 5_000: c1 goes on, c2 waits.
    let (c1, c2) = if first[0].conversation_id == "c1" {
        (&first[0], &first[1])
    } else {
        (&first[1], &first[0])
    };
    a.outbox_delivered(&[c1.seq], 101).await.unwrap();
    a.outbox_failed(c2.seq, 5_000, "builder answered 500")
        .await
        .unwrap();
    let next = b.outbox_claim(200, 1_000, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        (
            next[0].conversation_id.as_str(),
            kinds(&next[0].body).as_str()
        ),
        ("c1", "agent_message:one")
    );
    // b dies holding it: after the lease a gets the same event.
    assert!(a.outbox_claim(1_199, 1_000, 10).await.unwrap().is_empty());
    let retaken = a.outbox_claim(1_200, 1_000, 10).await.unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].event_id, next[0].event_id);
    a.outbox_delivered(&[retaken[0].seq], 1_201).await.unwrap();
    // c2's head comes back at its retry time, with its attempt counted (and c1 goes on).
    let at_retry = a.outbox_claim(5_000, 1_000, 10).await.unwrap();
    assert_eq!(at_retry.len(), 2);
    let c2_again = at_retry
        .iter()
        .find(|e| e.conversation_id == "c2")
        .expect("c2's head");
    assert_eq!(c2_again.event_id, c2.event_id);
    assert_eq!(c2_again.attempts, 1);
    // Drain both: each conversation's order is joined, one, two, ended.
    let mut order: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let c1_so_far = ["agent_joined:", "agent_message:one"];
    order
        .entry("c1".into())
        .or_default()
        .extend(c1_so_far.map(String::from));
    // Deliveries that finish together are marked in one call; one marked before (c1's
    // first message, at 1_201) keeps its time.
    for e in &at_retry {
        order
            .entry(e.conversation_id.clone())
            .or_default()
            .push(kinds(&e.body));
    }
    let mut seqs: Vec<i64> = at_retry.iter().map(|e| e.seq).collect();
    seqs.push(retaken[0].seq);
    a.outbox_delivered(&seqs, 5_001).await.unwrap();
    loop {
        let got = b.outbox_claim(6_000, 1_000, 10).await.unwrap();
        if got.is_empty() {
            break;
        }
        for e in &got {
            order
                .entry(e.conversation_id.clone())
                .or_default()
                .push(kinds(&e.body));
        }
        let seqs: Vec<i64> = got.iter().map(|e| e.seq).collect();
        b.outbox_delivered(&seqs, 6_001).await.unwrap();
    }
    // Delivered before 5_000: c1's joined (101) and first message (1_201), not re-marked.
    assert_eq!(a.outbox_prune(5_000).await.unwrap(), 2);
    for c in ["c1", "c2"] {
        assert_eq!(
            order[c],
            [
                "agent_joined:",
                "agent_message:one",
                "agent_message:two",
                "live_chat_ended:"
            ],
            "{c}"
        );
    }
    assert_eq!(b.outbox_next_wake().await.unwrap(), None);
}

/// Where fires are recorded, under a UNIQUE constraint: a second fire of one deadline
/// is a failed insert.
enum FireLog {
    Pg(sqlx::PgPool),
    Sqlite(Mutex<rusqlite::Connection>),
}

impl FireLog {
    async fn new(db: &Db) -> FireLog {
        match db {
            Db::Postgres(t) => {
                let pool = sqlx::PgPool::connect(&t.url).await.unwrap();
                sqlx::query(
                    "CREATE TABLE fire_log (live_chat_id TEXT NOT NULL, kind TEXT NOT NULL,
                     due_at BIGINT NOT NULL, UNIQUE (live_chat_id, kind, due_at))",
                )
                .execute(&pool)
                .await
                .unwrap();
                FireLog::Pg(pool)
            }
            Db::Sqlite(d) => {
                let c = rusqlite::Connection::open(d.path().join("fires.db")).unwrap();
                c.execute_batch(
                    "CREATE TABLE fire_log (live_chat_id TEXT NOT NULL, kind TEXT NOT NULL,
                     due_at INTEGER NOT NULL, UNIQUE (live_chat_id, kind, due_at))",
                )
                .unwrap();
                FireLog::Sqlite(Mutex::new(c))
            }
        }
    }

    async fn record(&self, d: &DueDeadline) -> Result<(), String> {
        match self {
            FireLog::Pg(pool) => {
                sqlx::query("INSERT INTO fire_log (live_chat_id, kind, due_at) VALUES ($1, $2, $3)")
                    .bind(&d.live_chat_id)
                    .bind(d.deadline.kind.as_str())
                    .bind(d.deadline.due_at)
                    .execute(pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            FireLog::Sqlite(c) => c
                .lock()
                .unwrap()
                .execute(
                    "INSERT INTO fire_log (live_chat_id, kind, due_at) VALUES (?1, ?2, ?3)",
                    rusqlite::params![d.live_chat_id, d.deadline.kind.as_str(), d.deadline.due_at],
                )
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

/// 10,000 due timers, 8 handles claiming concurrently (`FOR UPDATE SKIP LOCKED` on
/// PostgreSQL): every timer fires once, none twice (the fire log's UNIQUE constraint).
async fn ten_thousand_timers_over_eight_handles_fire_once(db: Db) {
    const N: usize = 10_000;
    let handles = db.handles(8).await;
    let log = Arc::new(FireLog::new(&db).await);
    // Created with a 1 s wait timeout at t=0: all due long ago.
    let mut tasks = Vec::new();
    for (h, s) in handles.iter().enumerate() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in (h..N).step_by(8) {
                s.create(chat(&format!("h{i}"), &format!("c{i}"), 1), 0)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for s in &handles {
        let (s, log) = (s.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let mut fired = Vec::new();
            loop {
                let due = s.claim_deadlines(now_ms(), LEASE, 64).await.unwrap();
                if due.is_empty() {
                    return fired;
                }
                for d in due {
                    if let Err(e) = log.record(&d).await {
                        panic!("{} fired twice: {e}", d.live_chat_id);
                    }
                    s.drop_deadline(&d.live_chat_id, d.deadline).await.unwrap();
                    fired.push(d.live_chat_id);
                }
            }
        }));
    }
    let mut all = HashSet::new();
    let mut per_handle = Vec::new();
    for t in tasks {
        let fired = t.await.unwrap();
        per_handle.push(fired.len());
        for id in fired {
            assert!(all.insert(id), "fired twice");
        }
    }
    eprintln!(
        "{N} timers over 8 handles in {:?}; per handle: {per_handle:?}",
        start.elapsed()
    );
    assert_eq!(all.len(), N);
    assert_eq!(handles[0].next_deadline().await.unwrap(), None);
}

/// A database created by the hand-run migrations of earlier versions (its own
/// `schema_migrations` table) opens as it is, keeps its rows, and gets the new ones.
#[tokio::test]
async fn sqlite_database_from_the_old_migration_runner_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_migrations (
               version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        for (v, name, sql) in [
            (
                1,
                "0001_init",
                include_str!("../migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "0002_handoff",
                include_str!("../migrations/sqlite/0002_handoff.sql"),
            ),
            (
                3,
                "0003_timeline",
                include_str!("../migrations/sqlite/0003_timeline.sql"),
            ),
        ] {
            c.execute_batch(sql).unwrap();
            c.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                rusqlite::params![v, name],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO live_chats (id, conversation_id, provider, integration_id,
               provider_conversation_id, state, wait_timeout_s, user_inactivity_timeout_s,
               created_at) VALUES ('old', 'c-old', 'zendesk', '9', 't1', 'waiting', 60, 0, 5)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO deadlines (live_chat_id, kind, due_at) VALUES ('old', 'wait', 60005)",
            [],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        s.migrations().await.unwrap(),
        vec![
            (1, "init".to_string()),
            (2, "handoff".to_string()),
            (3, "timeline".to_string()),
            (4, "leases".to_string()),
            (5, "run_keys".to_string()),
            (6, "handoff_intents".to_string()),
            (7, "reentry".to_string()),
            (8, "intent_recovery".to_string()),
            (9, "single_use_digest".to_string()),
        ]
    );
    let old = s.get("old").await.unwrap().unwrap();
    assert_eq!(old.state, ChatState::Waiting);
    let due = s.claim_deadlines(60_005, LEASE, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    drop(s);
    // And again, now under the new runner.
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(s.migrations().await.unwrap().len(), 9);
}

/// A database with a migration this program does not know is refused, not altered.
#[tokio::test]
async fn sqlite_database_from_a_newer_program_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqliteStore::open(&path).await.unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum,
               execution_time) VALUES (99, 'future', 1, x'00', 0)",
            [],
        )
        .unwrap();
    }
    let e = SqliteStore::open(&path).await.err().unwrap();
    assert!(matches!(e, StoreError::TooNew { found: 99, .. }), "{e}");
}

async fn migrations_recorded_and_reopen_is_idempotent(db: Db) {
    let applied = db.database().migrate().await.unwrap();
    assert!(!applied.is_empty());
    assert_eq!(db.database().migrate().await.unwrap(), applied);
    let s = db.open().await;
    s.create(chat("h1", "c1", 10), 1_000).await.unwrap();
    drop(s);
    let s = db.open().await;
    assert_eq!(db.database().migrate().await.unwrap(), applied);
    let c = s.get("h1").await.unwrap().unwrap();
    assert_eq!(c.state, ChatState::Waiting);
    assert_eq!(
        s.deadlines("h1").await.unwrap(),
        vec![Deadline {
            kind: DeadlineKind::Wait,
            due_at: 11_000
        }]
    );
    // One open chat per conversation.
    assert!(s.create(chat("h2", "c1", 0), 2_000).await.is_err());
}

/// A single-use id (an ALTU `jti`) is taken once per body: the same request again is
/// let through (its first attempt may have died before applying its events), another
/// body with it is a replay. Ids are per scope.
async fn single_use_ids_refuse_another_body_and_let_the_same_request_retry(db: Db) {
    let s = db.open().await;
    assert!(s
        .mark_seen("altu-jti:3", "j1", "body-a", 1_000)
        .await
        .unwrap());
    assert!(s
        .mark_seen("altu-jti:3", "j1", "body-a", 2_000)
        .await
        .unwrap());
    assert!(!s
        .mark_seen("altu-jti:3", "j1", "body-b", 3_000)
        .await
        .unwrap());
    assert!(s
        .mark_seen("altu-jti:4", "j1", "body-b", 3_000)
        .await
        .unwrap());
    assert!(s
        .mark_seen("altu-jti:3", "j2", "body-b", 3_000)
        .await
        .unwrap());
}

/// A change that stops inside its transaction (a duplicate, a stale event) holds the
/// chat's row lock only until it returns: another replica's change of the same chat
/// goes through at once (a kept connection once sat idle with the transaction open,
/// stalling the chat for the database's lock timeout).
async fn a_change_refused_midway_leaves_no_lock_behind(db: Db) {
    let h = db.handles(2).await;
    h[0].create(chat("h1", "c1", 0), 0).await.unwrap();
    let guard = |id: &str, ts: i64| Guard {
        dedup: Some(("lp".into(), id.into())),
        provider_ts: Some(ts),
    };
    let joined = || Change::AgentJoined {
        agent: AgentInfo::default(),
    };
    assert!(matches!(
        h[0].apply("h1", joined(), guard("e1", 10), 1_000)
            .await
            .unwrap(),
        Applied::Done(_)
    ));
    assert!(matches!(
        h[0].apply("h1", joined(), guard("e0", 5), 1_002)
            .await
            .unwrap(),
        Applied::Stale
    ));
    assert!(matches!(
        h[0].apply("h1", joined(), guard("e1", 10), 1_001)
            .await
            .unwrap(),
        Applied::Duplicate
    ));
    let other = tokio::time::timeout(
        Duration::from_secs(3),
        h[1].apply("h1", end(EndStatus::AgentClosed), Guard::default(), 1_003),
    )
    .await
    .expect("the other handle's change waited for a lock left behind");
    assert!(matches!(other.unwrap(), Applied::Done(_)));
}

/// Every event queued for the builder so far, in delivery order (delivered as taken).
async fn drain_outbox(s: &Arc<dyn LiveChatStore>) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for _ in 0..1_000 {
        let heads = s.outbox_claim(10_000, LEASE, 100).await.unwrap();
        if heads.is_empty() {
            return events;
        }
        for h in heads {
            events.push(serde_json::from_str(&h.body).unwrap());
            s.outbox_delivered(&[h.seq], 10_001).await.unwrap();
        }
    }
    panic!("the outbox never emptied");
}

/// Changes of one chat race in from 4 handles (replicas), each webhook twice: a change
/// is read without a lock and written only if the row is still as read (PostgreSQL), so
/// each webhook applies once, and nothing applies after the end that won its race.
async fn racing_changes_of_one_chat_apply_once_and_never_after_its_end(db: Db) {
    let handles = db.handles(4).await;
    let s = handles[0].clone();
    s.create(chat("h1", "c1", 0), 0).await.unwrap();
    let message = |i: usize| Change::AgentMessage {
        text: format!("m{i}"),
        agent: AgentInfo::default(),
        extra: Default::default(),
    };
    let guard = |i: usize| Guard {
        dedup: Some(("lp".into(), format!("e{i}"))),
        provider_ts: None,
    };
    let race = |range: std::ops::Range<usize>, with_end: bool| {
        let mut tasks = Vec::new();
        for i in range {
            for copy in 0..2 {
                let s = handles[(i + copy) % handles.len()].clone();
                let change = message(i);
                let guard = guard(i);
                tasks.push(tokio::spawn(async move {
                    s.apply("h1", change, guard, 100 + i as i64).await.unwrap()
                }));
            }
            if with_end && i % 10 == 5 {
                let s = handles[i % handles.len()].clone();
                tasks.push(tokio::spawn(async move {
                    s.apply("h1", end(EndStatus::AgentClosed), Guard::default(), 500)
                        .await
                        .unwrap()
                }));
            }
        }
        tasks
    };

    // 30 webhooks, each delivered twice at once: 30 apply, 30 are duplicates.
    let mut outcomes = Vec::new();
    for t in race(0..30, false) {
        outcomes.push(t.await.unwrap());
    }
    let done = outcomes
        .iter()
        .filter(|a| matches!(a, Applied::Done(_)))
        .count();
    let dup = outcomes
        .iter()
        .filter(|a| **a == Applied::Duplicate)
        .count();
    assert_eq!((done, dup), (30, 30), "{outcomes:?}");
    let events = drain_outbox(&s).await;
    let mut texts: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "agent_message")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    let sent = texts.len();
    texts.sort();
    texts.dedup();
    assert_eq!((sent, texts.len()), (30, 30));

    // 30 more with ends racing in: one end applies, and no message event follows it.
    for t in race(30..60, true) {
        t.await.unwrap();
    }
    let events = drain_outbox(&s).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let ended: Vec<usize> = (0..kinds.len())
        .filter(|&i| kinds[i] == "live_chat_ended")
        .collect();
    assert_eq!(ended, vec![kinds.len() - 1], "{kinds:?}");
    assert_eq!(s.get("h1").await.unwrap().unwrap().state, ChatState::Ended);
}

/// Endings race in from 4 handles (replicas): one applies, one event.
async fn concurrent_endings_apply_once_with_one_outbox_event(db: Db) {
    let handles = db.handles(4).await;
    let s = handles[0].clone();
    s.create(chat("h1", "c1", 0), 0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = handles[i % handles.len()].clone();
        let status = [
            EndStatus::AgentClosed,
            EndStatus::UserClosed,
            EndStatus::Error,
        ][i % 3];
        tasks.push(tokio::spawn(async move {
            s.apply("h1", end(status), Guard::default(), 5)
                .await
                .unwrap()
        }));
    }
    let mut done = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Applied::Done(_)) {
            done += 1;
        }
    }
    assert_eq!(done, 1);
    let heads = s.outbox_claim(10, LEASE, 100).await.unwrap();
    assert_eq!(heads.len(), 1);
    assert!(heads[0].body.contains("live_chat_ended"));
    s.outbox_delivered(&[heads[0].seq], 11).await.unwrap();
    assert!(s.outbox_claim(10, LEASE, 100).await.unwrap().is_empty());
}

async fn timer_claims_are_conditional_and_dedup_holds(db: Db) {
    let s = db.open().await;
    s.create(chat("h1", "c1", 1), 0).await.unwrap();
    let wait = Deadline {
        kind: DeadlineKind::Wait,
        due_at: 1_000,
    };
    let guard = |id: &str| Guard {
        dedup: Some(("lp".into(), id.into())),
        provider_ts: None,
    };
    let joined = s
        .apply(
            "h1",
            Change::AgentJoined {
                agent: AgentInfo::default(),
            },
            guard("e1"),
            500,
        )
        .await
        .unwrap();
    assert!(matches!(joined, Applied::Done(ref c) if c.state == ChatState::WithAgent));
    assert_eq!(
        s.apply(
            "h1",
            Change::AgentJoined {
                agent: AgentInfo::default()
            },
            guard("e1"),
            600
        )
        .await
        .unwrap(),
        Applied::Duplicate
    );
    // The wait timer fires after the join: nothing.
    let claim = Change::Claim {
        pending: EndStatus::Timeout,
        expect: Some(ChatState::Waiting),
        deadline: Some(wait),
    };
    assert!(matches!(
        s.apply("h1", claim, Guard::default(), 1_000).await.unwrap(),
        Applied::Ignored(_)
    ));
    // An inactivity timer superseded by a user message: nothing either.
    let old = Deadline {
        kind: DeadlineKind::Inactivity,
        due_at: 5_500,
    };
    s.apply("h1", Change::UserActivity, Guard::default(), 2_000)
        .await
        .unwrap();
    let claim = Change::Claim {
        pending: EndStatus::UserInactivityTimeout,
        expect: Some(ChatState::WithAgent),
        deadline: Some(old),
    };
    assert!(matches!(
        s.apply("h1", claim, Guard::default(), 5_500).await.unwrap(),
        Applied::Ignored(_)
    ));
    let current = Deadline {
        kind: DeadlineKind::Inactivity,
        due_at: 7_000,
    };
    assert_eq!(s.deadlines("h1").await.unwrap(), vec![current]);
    let claim = Change::Claim {
        pending: EndStatus::UserInactivityTimeout,
        expect: Some(ChatState::WithAgent),
        deadline: Some(current),
    };
    let c = match s.apply("h1", claim, Guard::default(), 7_000).await.unwrap() {
        Applied::Done(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (c.state, c.pending_end),
        (ChatState::Closing, Some(EndStatus::UserInactivityTimeout))
    );
    assert_eq!(
        s.deadlines("h1").await.unwrap()[0].kind,
        DeadlineKind::Close
    );
    // The provider's close echo ends it with the pending status.
    let r = s
        .apply("h1", end(EndStatus::UserClosed), Guard::default(), 7_100)
        .await
        .unwrap();
    assert!(
        matches!(r, Applied::Done(ref c) if c.end_status == Some(EndStatus::UserInactivityTimeout))
    );
    assert!(s.deadlines("h1").await.unwrap().is_empty());
    // Outbox order for c1: joined, ended.
    let h = s.outbox_claim(10_000, LEASE, 10).await.unwrap();
    assert_eq!(h.len(), 1);
    assert!(h[0].body.contains("agent_joined"));
}

/// Two different LivePerson changes stamped in the same millisecond (a join, then the
/// close) must both apply; only strictly older updates are stale.
async fn same_millisecond_changes_both_apply_older_ones_are_stale(db: Db) {
    let s = db.open().await;
    s.create(chat("h1", "c1", 0), 0).await.unwrap();
    let guard = |id: &str, ts: i64| Guard {
        dedup: Some(("lp".into(), id.into())),
        provider_ts: Some(ts),
    };
    let joined = s
        .apply(
            "h1",
            Change::AgentJoined {
                agent: AgentInfo::default(),
            },
            guard("join", 5_000),
            10,
        )
        .await
        .unwrap();
    assert!(matches!(joined, Applied::Done(ref c) if c.state == ChatState::WithAgent));
    let older = s
        .apply(
            "h1",
            Change::AgentMessage {
                text: "old".into(),
                agent: AgentInfo::default(),
                extra: Default::default(),
            },
            guard("old", 4_999),
            11,
        )
        .await
        .unwrap();
    assert_eq!(older, Applied::Stale);
    let closed = s
        .apply(
            "h1",
            Change::End {
                status: EndStatus::AgentClosed,
                pending_wins: false,
            },
            guard("close", 5_000),
            12,
        )
        .await
        .unwrap();
    assert!(
        matches!(closed, Applied::Done(ref c) if c.state == ChatState::Ended),
        "{closed:?}"
    );
}

/// A handoff's intent: nobody may claim it while its run holds the lease; after, one of
/// 4 handles (replicas) gets it, for a new lease; recording the live chat finishes it.
async fn handoff_intents_are_leased_and_finished_by_the_live_chat(db: Db) {
    let handles = db.handles(4).await;
    let s = &handles[0];
    let intent = |id: &str, conv: &str| HandoffIntent {
        handoff_id: id.into(),
        conversation_id: conv.into(),
        integration_id: "7".into(),
        provider: "liveperson".into(),
        consumer_key: Some(format!("consumer-{conv}")),
        created_at: 1_000,
    };
    s.intent_begin(&intent("h1", "c1"), 5_000).await.unwrap();
    s.intent_begin(&intent("h2", "c2"), 5_000).await.unwrap();
    s.intent_begin(&intent("h3", "c3"), 5_000).await.unwrap();
    assert_eq!(s.stats().await.unwrap().intents_pending, 3);
    // The run holds it until 6_000.
    assert!(s.intent_claim(5_999, 5_000, 10).await.unwrap().is_empty());
    // h1's live chat is recorded (intent finished in that transaction); h2's start failed.
    s.create(chat("h1", "c1", 0), 2_000).await.unwrap();
    s.intent_drop("h2").await.unwrap();
    let mut tasks = Vec::new();
    for h in &handles {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.intent_claim(6_000, 5_000, 10).await
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap().unwrap());
    }
    assert_eq!(claimed, vec![intent("h3", "c3")]);
    // Claimed until 11_000: a reconciler that dies loses it then.
    assert!(s.intent_claim(10_999, 5_000, 10).await.unwrap().is_empty());
    assert_eq!(s.intent_claim(11_000, 5_000, 10).await.unwrap().len(), 1);
    s.intent_drop("h3").await.unwrap();
    assert_eq!(s.stats().await.unwrap().intents_pending, 0);
}

/// Events delivered before the cutoff are deleted; undelivered ones stay whatever their
/// age (a failed head and the event queued behind it) and are still delivered in order.
async fn delivered_events_are_pruned_undelivered_ones_stay(db: Db) {
    let s = db.open().await;
    for c in ["p1", "p2"] {
        let id = format!("h-{c}");
        s.create(chat(&id, c, 0), 0).await.unwrap();
        let change = Change::AgentMessage {
            text: "one".into(),
            agent: AgentInfo::default(),
            extra: Default::default(),
        };
        s.apply(&id, change, Guard::default(), 10).await.unwrap();
    }
    // Two events each (agent_joined, agent_message): p1's delivered at 1,000 and 3,000,
    // p2's head failed (its retry at 5,000), so both of p2's are undelivered.
    let heads = s.outbox_claim(100, 1_000, 10).await.unwrap();
    assert_eq!(heads.len(), 2);
    for h in &heads {
        if h.conversation_id == "p1" {
            s.outbox_delivered(&[h.seq], 1_000).await.unwrap();
        } else {
            s.outbox_failed(h.seq, 5_000, "builder answered 500")
                .await
                .unwrap();
        }
    }
    let next = s.outbox_claim(2_000, 1_000, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].conversation_id, "p1");
    s.outbox_delivered(&[next[0].seq], 3_000).await.unwrap();
    assert_eq!(s.stats().await.unwrap().outbox_pending, 2);

    // The cutoff is exclusive; each delivered event goes once.
    assert_eq!(s.outbox_prune(1_000).await.unwrap(), 0);
    assert_eq!(s.outbox_prune(2_000).await.unwrap(), 1);
    assert_eq!(s.outbox_prune(i64::MAX).await.unwrap(), 1);
    assert_eq!(s.outbox_prune(i64::MAX).await.unwrap(), 0);
    assert_eq!(s.stats().await.unwrap().outbox_pending, 2);

    // p2's events are all there, in order, its failed attempt counted.
    let mut got = Vec::new();
    let mut now = 5_000;
    loop {
        let claimed = s.outbox_claim(now, 1_000, 10).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        for e in claimed {
            let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
            got.push((
                e.conversation_id.clone(),
                v["type"].as_str().unwrap().to_string(),
                e.attempts,
            ));
            s.outbox_delivered(&[e.seq], now).await.unwrap();
        }
        now += 1;
    }
    assert_eq!(
        got,
        [
            ("p2".to_string(), "agent_joined".to_string(), 1),
            ("p2".to_string(), "agent_message".to_string(), 0),
        ]
    );
    assert_eq!(s.outbox_next_wake().await.unwrap(), None);
}

/// The outbox and timeline prunes delete [`PRUNE_CHUNK`] rows per statement, walking the
/// table by `seq`: history of more than two statements' worth goes whole, and what is
/// undelivered or recent, before, between and after it, stays.
async fn prunes_walk_history_longer_than_one_statement(db: Db) {
    let s = db.open().await;
    // Chats 0..=old_chats, two events each; all but three chats' delivered before the
    // cutoff: 2 × PRUNE_CHUNK + 2 events, three statements' worth.
    let old_chats = PRUNE_CHUNK as usize + 3;
    let undelivered = |i: usize| i == 0 || i == old_chats / 2;
    for i in 0..=old_chats {
        let (id, conv) = (format!("h-{i}"), format!("c-{i}"));
        s.create(chat(&id, &conv, 0), 0).await.unwrap();
        let change = Change::AgentMessage {
            text: "one".into(),
            agent: AgentInfo::default(),
            extra: Default::default(),
        };
        s.apply(&id, change, Guard::default(), 10).await.unwrap();
    }
    // Every event delivered at 1,000, but for two chats' (the first, one in the middle)
    // and the last chat's, delivered at 9,000.
    let mut delivered = 0;
    for _ in 0..2 {
        let heads = s.outbox_claim(100, 1_000, 100_000).await.unwrap();
        let (mut at_1000, mut at_9000) = (Vec::new(), Vec::new());
        for h in heads {
            let i: usize = h.conversation_id[2..].parse().unwrap();
            if i == old_chats {
                at_9000.push(h.seq);
            } else if !undelivered(i) {
                at_1000.push(h.seq);
            }
        }
        delivered += at_1000.len();
        s.outbox_delivered(&at_1000, 1_000).await.unwrap();
        s.outbox_delivered(&at_9000, 9_000).await.unwrap();
    }
    assert_eq!(delivered, 2 * PRUNE_CHUNK as usize + 2);
    let entry = |conv: &str, at: i64| TimelineEntry {
        live_chat_id: "h".into(),
        conversation_id: conv.into(),
        at,
        kind: "state".into(),
        data: serde_json::json!({}),
    };
    let mut entries: Vec<_> = (0..2 * PRUNE_CHUNK + 1)
        .map(|_| entry("t", 1_000))
        .collect();
    entries.insert(PRUNE_CHUNK as usize, entry("t", 9_000));
    entries.push(entry("t", 9_001));
    s.timeline_append(entries).await.unwrap();

    assert_eq!(s.outbox_prune(2_000).await.unwrap(), delivered as u64);
    assert_eq!(
        s.timeline_prune(2_000).await.unwrap(),
        2 * PRUNE_CHUNK as u64 + 1
    );
    assert_eq!(s.stats().await.unwrap().outbox_pending, 4);
    let left: Vec<i64> = s
        .timeline("t")
        .await
        .unwrap()
        .iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(left, [9_000, 9_001]);
    // The last chat's two events were delivered after the cutoff: a later prune takes them.
    assert_eq!(s.outbox_prune(2_000).await.unwrap(), 0);
    assert_eq!(s.outbox_prune(10_000).await.unwrap(), 2);
    let heads = s.outbox_claim(20_000, 1_000, 100).await.unwrap();
    let mut convs: Vec<_> = heads.iter().map(|h| h.conversation_id.clone()).collect();
    convs.sort();
    assert_eq!(convs, ["c-0".to_string(), format!("c-{}", old_chats / 2)]);
}

/// `database_connections` bounds what one replica holds on PostgreSQL: with the
/// `outbox` table locked from outside, 12 concurrent calls of a handle opened with 2
/// connections wait on exactly 2 backends (the other 10 wait for a connection, not the
/// server), then all finish once the lock goes; the default handle waits on 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statement_connections_are_bounded_by_the_setting() {
    use sqlx::Connection as _;
    let Some(Db::Postgres(t)) = Db::postgres().await else {
        return;
    };
    let (admin, name) = t.admin_and_name();
    for (connections, expect) in [(Some(2), 2), (None, 8)] {
        let store: Arc<dyn LiveChatStore> = match connections {
            Some(n) => Database::Postgres(t.url.clone())
                .open_with(n)
                .await
                .unwrap(),
            None => Database::Postgres(t.url.clone()).open().await.unwrap(),
        };
        let mut locker = sqlx::PgConnection::connect(&t.url).await.unwrap();
        let mut tx = locker.begin().await.unwrap();
        sqlx::query("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .unwrap();
        let calls: Vec<_> = (0..12)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.stats().await })
            })
            .collect();
        let mut watcher = sqlx::PgConnection::connect(&admin).await.unwrap();
        let q =
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'";
        // The calls reach the lock within a moment; give stragglers time to show.
        let start = std::time::Instant::now();
        let mut seen = 0;
        while start.elapsed() < Duration::from_secs(3) {
            seen = sqlx::query_scalar::<_, i64>(q)
                .bind(&name)
                .fetch_one(&mut watcher)
                .await
                .unwrap();
            if seen >= expect {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let settled = sqlx::query_scalar::<_, i64>(q)
            .bind(&name)
            .fetch_one(&mut watcher)
            .await
            .unwrap();
        assert_eq!(
            (seen, settled),
            (expect, expect),
            "backends waiting on the lock with {connections:?} connections"
        );
        tx.rollback().await.unwrap();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        drop(watcher);
    }
}

/// How many backends of database `name` wait on a lock, once `expect` do (or 5 s
/// passed) and stragglers had time to show.
async fn waiting_on_lock(w: &mut sqlx::PgConnection, name: &str, expect: i64) -> i64 {
    let q = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'";
    let start = std::time::Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(q)
            .bind(name)
            .fetch_one(&mut *w)
            .await
            .unwrap();
        if n >= expect || start.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query_scalar(q)
        .bind(name)
        .fetch_one(&mut *w)
        .await
        .unwrap()
}

/// `database_connections` is what all the replicas on one database share: a replica
/// alone holds it all; when a second one starts, each counts two replicas (within a
/// second) and keeps half. Here replica A has all 8 lent, waiting on a locked `outbox`,
/// when B arrives: A's share shrinks while they are lent, and the surplus goes as they
/// come back (their permits and their connections). Then 12 concurrent calls on each
/// wait on 4 backends each, 8 in all, as one replica alone did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_share_the_statement_connections() {
    use sqlx::Connection as _;
    let Some(Db::Postgres(t)) = Db::postgres().await else {
        return;
    };
    let (admin, name) = t.admin_and_name();
    let mut watcher = sqlx::PgConnection::connect(&admin).await.unwrap();
    let lock = async || {
        let mut c = sqlx::PgConnection::connect(&t.url).await.unwrap();
        // Simple queries (no parameters): both in one, the lock held until `c` closes.
        sqlx::raw_sql("BEGIN; LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            .execute(&mut c)
            .await
            .unwrap();
        c
    };
    let calls = |s: &Arc<dyn LiveChatStore>, n: usize| -> Vec<_> {
        (0..n)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.stats().await })
            })
            .collect()
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let replica = async || {
        let s = Database::Postgres(t.url.clone()).open().await.unwrap();
        let wake: transbordo::service::store::WakeFn = Arc::new(|_| {});
        let l = tokio::spawn({
            let (s, stop) = (s.clone(), stop.clone());
            async move { s.listen(wake, stop).await }
        });
        (s, l)
    };

    let (a, a_listen) = replica().await;
    let locker = lock().await;
    // As many calls as connections: none waits for one (it would give up after 5 s).
    let a_calls = calls(&a, 8);
    assert_eq!(
        waiting_on_lock(&mut watcher, &name, 8).await,
        8,
        "A alone: all 8"
    );
    let (b, b_listen) = replica().await;
    // A counts again within a second, while its 8 are lent.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    drop(locker);
    for c in a_calls {
        c.await.unwrap().unwrap();
    }
    // A's surplus connections are closed as they came back: 4 for statements at most,
    // besides sqlx's pool (listener, migrations).
    let per_replica = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1
         AND application_name LIKE 'transbordo %' GROUP BY application_name
         ORDER BY 1 DESC LIMIT 1";
    let start = std::time::Instant::now();
    let mut most = i64::MAX;
    while start.elapsed() < Duration::from_secs(5) {
        most = sqlx::query_scalar(per_replica)
            .bind(&name)
            .fetch_one(&mut watcher)
            .await
            .unwrap();
        if most <= 4 + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(most <= 6, "a replica still holds {most} connections");

    let locker = lock().await;
    let both: Vec<_> = calls(&a, 12).into_iter().chain(calls(&b, 12)).collect();
    assert_eq!(
        waiting_on_lock(&mut watcher, &name, 8).await,
        8,
        "two replicas: 4 each"
    );
    drop(locker);
    for c in both {
        c.await.unwrap().unwrap();
    }
    stop_tx.send(true).unwrap();
    a_listen.await.unwrap();
    b_listen.await.unwrap();
}
