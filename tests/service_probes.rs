//! `/readyz` and `/metrics` when the store stops answering: 503 with a JSON error
//! (snapshotted), and back to 200 when it answers again. `/healthz` stays 200.

mod service_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use service_common::*;
use transbordo::service::store::{
    Applied, Change, Deadline, DueDeadline, Guard, NewLiveChat, OutboxEvent, StoreStats,
    TimelineEntry,
};
use transbordo::service::{
    serve_with, LiveChatRecord, LiveChatStore, ServiceConfig, ServiceState, SqliteStore, StoreError,
};

/// The SQLite store, except that the probes' queries fail while `down`.
struct Flaky {
    inner: SqliteStore,
    down: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Database("disk I/O error".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl LiveChatStore for Flaky {
    async fn create(&self, c: NewLiveChat, now: i64) -> Result<LiveChatRecord, StoreError> {
        self.inner.create(c, now).await
    }
    async fn latest_for_conversation(&self, c: &str) -> Result<Option<LiveChatRecord>, StoreError> {
        self.inner.latest_for_conversation(c).await
    }
    async fn find_by_provider(
        &self,
        i: &str,
        p: &str,
    ) -> Result<Option<LiveChatRecord>, StoreError> {
        self.inner.find_by_provider(i, p).await
    }
    async fn get(&self, id: &str) -> Result<Option<LiveChatRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn deadlines(&self, id: &str) -> Result<Vec<Deadline>, StoreError> {
        self.inner.deadlines(id).await
    }
    async fn apply(&self, id: &str, c: Change, g: Guard, now: i64) -> Result<Applied, StoreError> {
        self.inner.apply(id, c, g, now).await
    }
    async fn event_seen(&self, s: &str, id: &str, now: i64) -> Result<bool, StoreError> {
        self.inner.event_seen(s, id, now).await
    }
    async fn mark_seen(&self, s: &str, id: &str, d: &str, now: i64) -> Result<bool, StoreError> {
        self.inner.mark_seen(s, id, d, now).await
    }
    async fn drop_deadline(&self, id: &str, d: Deadline) -> Result<(), StoreError> {
        self.inner.drop_deadline(id, d).await
    }
    async fn claim_deadlines(
        &self,
        now: i64,
        lease: i64,
        limit: usize,
    ) -> Result<Vec<DueDeadline>, StoreError> {
        self.inner.claim_deadlines(now, lease, limit).await
    }
    async fn next_deadline(&self) -> Result<Option<i64>, StoreError> {
        self.check()?;
        self.inner.next_deadline().await
    }
    async fn outbox_claim(
        &self,
        now: i64,
        lease: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        self.inner.outbox_claim(now, lease, limit).await
    }
    async fn outbox_next_wake(&self) -> Result<Option<i64>, StoreError> {
        self.inner.outbox_next_wake().await
    }
    async fn outbox_delivered(&self, seqs: &[i64], now: i64) -> Result<(), StoreError> {
        self.inner.outbox_delivered(seqs, now).await
    }
    async fn outbox_failed(&self, seq: i64, next: i64, e: &str) -> Result<(), StoreError> {
        self.inner.outbox_failed(seq, next, e).await
    }
    async fn timeline_append(&self, e: Vec<TimelineEntry>) -> Result<(), StoreError> {
        self.inner.timeline_append(e).await
    }
    async fn timeline(&self, c: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        self.inner.timeline(c).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.check()?;
        self.inner.stats().await
    }
}

async fn probe(base: &str, path: &str) -> (u16, Value) {
    let r = client().get(format!("{base}{path}")).send().await.unwrap();
    let s = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _rx) = Receiver::default().start().await;
    let cfg = ServiceConfig::from_file(&write_config(dir.path(), &url, "")).unwrap();
    let store = Arc::new(Flaky {
        inner: SqliteStore::open(cfg.database.sqlite_path().unwrap())
            .await
            .unwrap(),
        down: AtomicBool::new(false),
    });
    let state = ServiceState::new(
        cfg.clone(),
        engine(&cfg),
        store.clone(),
        Arc::new(Recorder::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_with(state, listener, async {
        let _ = rx.await;
    }));

    assert_eq!(probe(&base, "/readyz").await.0, 200);
    assert_eq!(probe(&base, "/metrics").await.0, 200);
    store.down.store(true, Ordering::SeqCst);
    let (s, ready) = probe(&base, "/readyz").await;
    assert_eq!(s, 503);
    let (s, metrics) = probe(&base, "/metrics").await;
    assert_eq!(s, 503);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    settings.bind(|| {
        insta::assert_json_snapshot!("readyz_store_down", ready);
        insta::assert_json_snapshot!("metrics_store_down", metrics);
    });
    assert_eq!(
        probe(&base, "/healthz").await.0,
        200,
        "the process is alive"
    );
    store.down.store(false, Ordering::SeqCst);
    assert_eq!(probe(&base, "/readyz").await.0, 200);
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}
