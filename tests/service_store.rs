//! The SQLite store directly: migrations, exactly-once endings under concurrency,
//! conditional timers, dedup, per-conversation outbox heads.

use std::sync::Arc;

use transbordo::service::store::{
    AgentInfo, Applied, Change, ChatState, Deadline, DeadlineKind, EndStatus, Guard, LiveChatStore,
    NewLiveChat,
};
use transbordo::service::SqliteStore;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_recorded_and_reopen_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/t.db");
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        s.migrations().await.unwrap(),
        vec![
            (1, "0001_init".to_string()),
            (2, "0002_handoff".to_string()),
            (3, "0003_timeline".to_string())
        ]
    );
    s.create(chat("h1", "c1", 10), 1_000).await.unwrap();
    drop(s);
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(s.migrations().await.unwrap().len(), 3);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_endings_apply_once_with_one_outbox_event() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
    s.create(chat("h1", "c1", 0), 0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = s.clone();
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
    let heads = s.outbox_heads(10, 100).await.unwrap();
    assert_eq!(heads.len(), 1);
    assert!(heads[0].body.contains("live_chat_ended"));
    s.outbox_delivered(heads[0].seq, 11).await.unwrap();
    assert!(s.outbox_heads(10, 100).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_claims_are_conditional_and_dedup_holds() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
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
    let h = s.outbox_heads(10_000, 10).await.unwrap();
    assert_eq!(h.len(), 1);
    assert!(h[0].body.contains("agent_joined"));
}

/// Two different LivePerson changes stamped in the same millisecond (a join, then the
/// close) must both apply; only strictly older updates are stale.
#[tokio::test]
async fn same_millisecond_changes_both_apply_older_ones_are_stale() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
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
