//! The fence between a handoff's run and the reconcile (issue 17), on both stores: an
//! intent is claimed with every other intent of its consumer, all or nothing, never while
//! one is still held by its run; a claimed intent's run can no longer record its live
//! chat; the reconcile's adoption records it only under its own, still-held claim; two
//! replicas racing for one group get it once. Sightings keep their first `seen_at`.

mod pg_support;

use std::sync::Arc;

use transbordo::service::store::{
    Database, HandoffIntent, IntentNote, LiveChatStore, NewLiveChat, Sighting, StoreError,
};

enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(pg_support::TestDb),
}

impl Db {
    fn database(&self) -> Database {
        match self {
            Db::Sqlite(d) => Database::Sqlite(d.path().join("r.db")),
            Db::Postgres(t) => Database::Postgres(t.url.clone()),
        }
    }

    async fn open(&self) -> Arc<dyn LiveChatStore> {
        self.database().open().await.unwrap()
    }
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::Db::Sqlite(tempfile::tempdir().unwrap())).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = super::pg_support::test_db().await else { return };
                super::$name(super::Db::Postgres(db)).await
            }
        }
    )*};
}

both_stores!(
    group_claim_waits_for_a_running_handoff_and_fences_its_run,
    two_replicas_claim_a_group_once,
    sightings_keep_their_first_sighting,
);

fn intent(id: &str, conv: &str, consumer: &str, at: i64) -> HandoffIntent {
    HandoffIntent {
        handoff_id: id.into(),
        conversation_id: conv.into(),
        integration_id: "7".into(),
        provider: "liveperson".into(),
        consumer_key: Some(consumer.into()),
        created_at: at,
    }
}

fn chat(id: &str, conv: &str, pc: &str) -> NewLiveChat {
    NewLiveChat {
        handoff: None,
        id: id.into(),
        conversation_id: conv.into(),
        provider: "liveperson".into(),
        integration_id: "7".into(),
        provider_conversation_id: pc.into(),
        wait_timeout_s: 0,
        user_inactivity_timeout_s: 0,
    }
}

/// A cut handoff (h1, lease over at 31_000) and a newer one of the same consumer still
/// running (h2, lease to 40_000): no claim while h2 runs. After h2's lease, one claim takes
/// both; h2's run then cannot record its live chat (it would race the reconcile); the
/// adoption records h1's under the claim, once, and not under a claim that is not held.
async fn group_claim_waits_for_a_running_handoff_and_fences_its_run(db: Db) {
    let s = db.open().await;
    s.intent_begin(&intent("h1", "c1", "ana", 1_000), 30_000)
        .await
        .unwrap();
    s.intent_begin(&intent("h2", "c1", "ana", 10_000), 30_000)
        .await
        .unwrap();
    s.intent_begin(&intent("other", "c9", "bia", 1_000), 30_000)
        .await
        .unwrap();
    // h2 is still held by its run: nothing is claimed, whichever intent is asked for.
    assert_eq!(
        s.intent_group_claim("h1", 35_000, 5_000, "r1")
            .await
            .unwrap(),
        None
    );
    let group = s
        .intent_group_claim("h1", 40_000, 5_000, "r1")
        .await
        .unwrap()
        .expect("claimed");
    let ids: Vec<_> = group.iter().map(|g| g.handoff_id.as_str()).collect();
    assert_eq!(ids, ["h1", "h2"], "the consumer's intents, oldest first");
    assert!(group.iter().all(|g| g.claim.as_deref() == Some("r1")));
    // Another replica cannot take the group (or part of it) while r1 holds it.
    assert_eq!(
        s.intent_group_claim("h2", 44_999, 5_000, "r2")
            .await
            .unwrap(),
        None
    );
    // h2's run, slower than its lease, cannot record its live chat any more.
    match s.create(chat("h2", "c1", "pc-2"), 41_000).await {
        Err(StoreError::IntentClaimed) => {}
        other => panic!("the run's create went through a claimed intent: {other:?}"),
    }
    assert!(s.get("h2").await.unwrap().is_none(), "rolled back");
    // A claim that is not held adopts nothing.
    match s.adopt(chat("h1", "c1", "pc-1"), 41_000, "r2").await {
        Err(StoreError::IntentClaimed) => {}
        other => panic!("adopted under a foreign claim: {other:?}"),
    }
    // Notes go only through the held claim.
    let note = IntentNote {
        lp_consumer_id: Some("lp-ana".into()),
        ..IntentNote::default()
    };
    assert!(!s.intent_note("h1", "r2", &note).await.unwrap());
    assert!(s.intent_note("h1", "r1", &note).await.unwrap());
    let rec = s
        .adopt(chat("h1", "c1", "pc-1"), 41_000, "r1")
        .await
        .expect("adopted");
    assert_eq!(rec.provider_conversation_id, "pc-1");
    // Once adopted the intent is gone: a second adoption fails, the live chat is one.
    match s.adopt(chat("h1", "c1", "pc-1"), 41_001, "r1").await {
        Err(StoreError::IntentClaimed) | Err(StoreError::AlreadyOpen) => {}
        other => panic!("adopted twice: {other:?}"),
    }
    assert!(s.intent_release("h2", "r1").await.unwrap());
    let left: Vec<_> = s
        .intents()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.handoff_id)
        .collect();
    assert_eq!(left, ["other"]);
    // A run whose intent nobody claimed still records its live chat.
    s.intent_begin(&intent("h3", "c3", "cid", 50_000), 30_000)
        .await
        .unwrap();
    s.create(chat("h3", "c3", "pc-3"), 50_001).await.unwrap();
    assert_eq!(s.stats().await.unwrap().intents_pending, 1);
    // Unresolved is set once and counted.
    let g = s
        .intent_group_claim("other", 60_000, 5_000, "r3")
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(g.len(), 1);
    let late = IntentNote {
        unresolved_at: Some(60_000),
        note: Some("why".into()),
        ..IntentNote::default()
    };
    assert!(s.intent_note("other", "r3", &late).await.unwrap());
    let later = IntentNote {
        unresolved_at: Some(70_000),
        ..IntentNote::default()
    };
    assert!(s.intent_note("other", "r3", &later).await.unwrap());
    let i = &s.intents().await.unwrap()[0];
    assert_eq!(i.unresolved_at, Some(60_000));
    assert_eq!(i.note.as_deref(), Some("why"));
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.intents_pending, stats.intents_unresolved), (1, 1));
}

/// Two replicas (handles) race for the same expired group, 20 times: exactly one gets it.
async fn two_replicas_claim_a_group_once(db: Db) {
    let a = db.open().await;
    let b = db.open().await;
    for n in 0..20 {
        let (x, y) = (format!("x{n}"), format!("y{n}"));
        let consumer = format!("k{n}");
        a.intent_begin(&intent(&x, "c", &consumer, 1_000), 1_000)
            .await
            .unwrap();
        a.intent_begin(&intent(&y, "c", &consumer, 1_500), 1_000)
            .await
            .unwrap();
        let (ra, rb) = tokio::join!(
            a.intent_group_claim(&x, 10_000, 5_000, "A"),
            b.intent_group_claim(&y, 10_000, 5_000, "B"),
        );
        let won = [ra.unwrap(), rb.unwrap()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        assert_eq!(won.len(), 1, "round {n}: {won:?}");
        assert_eq!(won[0].len(), 2);
    }
}

async fn sightings_keep_their_first_sighting(db: Db) {
    let s = db.open().await;
    let seen = |pc: &str, open: bool, at: i64| Sighting {
        integration_id: "7".into(),
        provider_conversation_id: pc.into(),
        consumer_id: "lp-ana".into(),
        open,
        seen_at: at,
    };
    s.sighting_record(&seen("pc-1", true, 1_000)).await.unwrap();
    s.sighting_record(&seen("pc-2", true, 2_000)).await.unwrap();
    s.sighting_record(&seen("pc-1", false, 3_000))
        .await
        .unwrap();
    let got = s.sightings("7", "lp-ana").await.unwrap();
    assert_eq!(
        got,
        vec![seen("pc-1", false, 1_000), seen("pc-2", true, 2_000)]
    );
    assert!(s.sightings("8", "lp-ana").await.unwrap().is_empty());
    // A conversation a live chat tracks is not a sighting (the store checks, in the
    // same statement as the insert).
    s.create(chat("h9", "c9", "pc-9"), 2_500).await.unwrap();
    s.sighting_record(&seen("pc-9", true, 2_600)).await.unwrap();
    assert_eq!(s.sightings("7", "lp-ana").await.unwrap().len(), 2);
    assert_eq!(s.sightings_prune(1_500).await.unwrap(), 1);
    assert_eq!(s.sightings("7", "lp-ana").await.unwrap().len(), 1);
}

/// The sightings a LivePerson conversation-change notification gives: every conversation
/// with its CONSUMER participant, open unless `CLOSE` or `DELETE`; other notifications,
/// and changes without a consumer, give none.
#[test]
fn liveperson_sightings_name_the_consumer_participant() {
    use transbordo::providers::webhooks::{liveperson_sightings, ConversationSighting};
    let body = serde_json::json!({"kind": "notification", "type": "cqm.ExConversationChangeNotification",
    "body": {"changes": [
        {"type": "UPSERT", "result": {"convId": "c-1", "conversationDetails": {"state": "OPEN",
            "participants": [{"id": "a.1", "role": "ASSIGNED_AGENT"}, {"id": "lp-ana", "role": "CONSUMER"}]}}},
        {"type": "UPSERT", "result": {"convId": "c-2", "conversationDetails": {"state": "CLOSE",
            "participants": [{"id": "lp-bia", "role": "CONSUMER"}]}}},
        {"type": "DELETE", "result": {"convId": "c-3", "conversationDetails": {
            "participants": [{"id": "lp-cid", "role": "CONSUMER"}]}}},
        {"type": "UPSERT", "result": {"convId": "c-4", "conversationDetails": {"state": "OPEN",
            "participants": [{"id": "a.1", "role": "ASSIGNED_AGENT"}]}}}
    ]}});
    let seen = |c: &str, k: &str, open: bool| ConversationSighting {
        provider_conversation_id: c.into(),
        consumer_id: k.into(),
        open,
    };
    assert_eq!(
        liveperson_sightings(body.to_string().as_bytes()),
        vec![
            seen("c-1", "lp-ana", true),
            seen("c-2", "lp-bia", false),
            seen("c-3", "lp-cid", false)
        ]
    );
    let message =
        serde_json::json!({"type": "ms.MessagingEventNotification", "body": {"changes": []}});
    assert!(liveperson_sightings(message.to_string().as_bytes()).is_empty());
    assert!(liveperson_sightings(b"not json").is_empty());
}

/// `transbordo intents`: lists only unresolved intents by default (`--all`: every one),
/// as lines or JSON, and `--forget` drops one (an unknown id is an error, exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_command_lists_unresolved_and_forgets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("integrations.toml"), "").unwrap();
    let cfg = dir.path().join("service.toml");
    std::fs::write(
        &cfg,
        "database = \"i.db\"\nintegrations = \"integrations.toml\"\n[builder]\ncallback_url = \"http://127.0.0.1:9/e\"\nsigning_secret = \"s\"\n[api]\ntokens = [\"0123456789abcdef0123\"]\n",
    )
    .unwrap();
    let store = Database::Sqlite(dir.path().join("i.db"))
        .open()
        .await
        .unwrap();
    store
        .intent_begin(&intent("h-late", "c1", "ana", 1_000), 1_000)
        .await
        .unwrap();
    store
        .intent_begin(&intent("h-new", "c2", "bia", 2_000), 1_000)
        .await
        .unwrap();
    store
        .intent_group_claim("h-late", 10_000, 5_000, "r")
        .await
        .unwrap()
        .expect("claimed");
    let late = IntentNote {
        unresolved_at: Some(900_000),
        note: Some("refused without a name".into()),
        ..IntentNote::default()
    };
    assert!(store.intent_note("h-late", "r", &late).await.unwrap());
    drop(store);
    let bin = env!("CARGO_BIN_EXE_transbordo");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("intents")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .expect("transbordo intents");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) = run(&[]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("h-late provider=liveperson integration=7 consumer=ana"),
        "{out}"
    );
    assert!(out.contains("note=refused without a name"), "{out}");
    assert!(!out.contains("h-new"), "{out}");
    let (_, out, _) = run(&["--all", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(v[0]["unresolved_at_ms"], 900_000);
    let (code, _, err) = run(&["--forget", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no pending handoff intent `nope`"), "{err}");
    let (code, out, _) = run(&["--forget", "h-late"]);
    assert_eq!(code, Some(0), "{out}");
    let (_, out, _) = run(&[]);
    assert_eq!(out.trim(), "no unresolved handoff intents");
}
