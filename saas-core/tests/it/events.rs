//! Outbox, relay and inbox: nothing uncommitted is published, nothing committed is lost,
//! and consumers handle each event once even when the relay crashes mid-batch.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use saas_core::{
    db::{Db, migrate},
    events::{Envelope, EventBus, EventHandler, InProcessBus, Inbox, OutboxRelay, Subscription, outbox},
    id::TenantId,
};

static TEST_TABLES: migrate::Migrations = migrate::Migrations {
    component: "events-test",
    list: &[migrate::Migration::portable(1, "handled events", "CREATE TABLE handled_events (event_id TEXT NOT NULL)")],
};

async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/events.db", dir.path().display()), Default::default()).await.unwrap();
    (db, dir)
}

async fn prepare(db: &Db) {
    migrate::run(db, &[&saas_core::events::MIGRATIONS, &TEST_TABLES]).await.unwrap();
}

async fn commit_events(db: &Db, tenant: TenantId, n: usize) -> Vec<Envelope> {
    let mut events = Vec::new();
    for i in 0..n {
        let mut tx = db.tenant_tx(tenant).await.unwrap();
        let e = Envelope::new("test.thing_happened.v1", Some(tenant), serde_json::json!({ "i": i }));
        outbox::append(&mut tx, &e).await.unwrap();
        tx.commit().await.unwrap();
        events.push(e);
    }
    events
}

/// Counts deliveries and records handled events through the inbox.
struct Recorder {
    db: Db,
    inbox: Inbox,
    delivered: AtomicUsize,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &Envelope) -> anyhow::Result<()> {
        self.delivered.fetch_add(1, Ordering::SeqCst);
        if let Some(mut tx) = self.inbox.begin(event).await? {
            sqlx::query("INSERT INTO handled_events (event_id) VALUES ($1)")
                .bind(event.id.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        let _ = &self.db;
        Ok(())
    }
}

async fn subscribe(db: &Db, bus: &InProcessBus) -> (Arc<Recorder>, Subscription) {
    let recorder = Arc::new(Recorder {
        db: db.clone(),
        inbox: Inbox::new(db.clone(), "recorder"),
        delivered: AtomicUsize::new(0),
    });
    let sub = bus.subscribe("recorder", &["test"], recorder.clone()).await.unwrap();
    (recorder, sub)
}

async fn handled(db: &Db) -> (i64, i64) {
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM handled_events").fetch_one(db.pool()).await.unwrap();
    let distinct: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT event_id) FROM handled_events").fetch_one(db.pool()).await.unwrap();
    (total, distinct)
}

async fn wait_for(db: &Db, n: i64) {
    for _ in 0..200 {
        if handled(db).await.1 >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("only {:?} of {n} events handled", handled(db).await);
}

async fn rolled_back_events_are_never_published(db: Db) {
    prepare(&db).await;
    let bus = InProcessBus::new();
    let (recorder, _sub) = subscribe(&db, &bus).await;
    let tenant = TenantId::new();

    let mut tx = db.tenant_tx(tenant).await.unwrap();
    outbox::append(&mut tx, &Envelope::new("test.rolled_back.v1", Some(tenant), serde_json::json!({}))).await.unwrap();
    tx.rollback().await.unwrap();
    {
        let mut tx = db.tenant_tx(tenant).await.unwrap();
        outbox::append(&mut tx, &Envelope::new("test.dropped.v1", Some(tenant), serde_json::json!({}))).await.unwrap();
        // Dropped without commit.
    }
    let committed = commit_events(&db, tenant, 1).await;

    let relay = OutboxRelay::new(db.clone(), Arc::new(bus.clone()));
    assert_eq!(relay.drain().await.unwrap(), 1, "only the committed event is relayed");
    wait_for(&db, 1).await;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM handled_events").fetch_all(db.pool()).await.unwrap();
    assert_eq!(ids, vec![committed[0].id.to_string()]);
    assert_eq!(recorder.delivered.load(Ordering::SeqCst), 1);
    assert_eq!(outbox::pending(&db).await.unwrap(), 0);
}

/// A bus that forwards part of a batch, then hangs, as a relay process would when killed
/// between publishing and marking the batch published.
struct CrashingBus {
    inner: InProcessBus,
    forward: usize,
}

#[async_trait]
impl EventBus for CrashingBus {
    async fn publish(&self, events: &[Envelope]) -> saas_core::Result<()> {
        self.inner.publish(&events[..self.forward.min(events.len())]).await?;
        std::future::pending().await
    }
    async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
        handler: Arc<dyn EventHandler>,
    ) -> saas_core::Result<Subscription> {
        self.inner.subscribe(group, topics, handler).await
    }
    async fn ping(&self) -> saas_core::Result<()> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "crashing"
    }
}

async fn a_relay_killed_mid_batch_loses_nothing_and_duplicates_nothing(db: Db) {
    prepare(&db).await;
    let bus = InProcessBus::new();
    let (recorder, _sub) = subscribe(&db, &bus).await;
    let tenant = TenantId::new();
    commit_events(&db, tenant, 25).await;

    let crashing =
        OutboxRelay::new(db.clone(), Arc::new(CrashingBus { inner: bus.clone(), forward: 6 })).with_batch_size(10);
    let task = tokio::spawn(crashing.run(tokio_util::sync::CancellationToken::new()));
    wait_for(&db, 6).await;
    task.abort(); // killed mid-batch
    let _ = task.await;
    assert_eq!(outbox::pending(&db).await.unwrap(), 25, "nothing was marked published");

    let relay = OutboxRelay::new(db.clone(), Arc::new(bus.clone())).with_batch_size(10);
    assert_eq!(relay.drain().await.unwrap(), 25);
    wait_for(&db, 25).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(recorder.delivered.load(Ordering::SeqCst), 31, "the first 6 were delivered twice");
    assert_eq!(handled(&db).await, (25, 25), "and handled once each");
}

#[tokio::test]
async fn sqlite_rolled_back_events_are_never_published() {
    let (db, _dir) = sqlite().await;
    rolled_back_events_are_never_published(db).await;
}

#[tokio::test]
async fn sqlite_relay_killed_mid_batch() {
    let (db, _dir) = sqlite().await;
    a_relay_killed_mid_batch_loses_nothing_and_duplicates_nothing(db).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run or set SAAS_TEST_DATABASE_URL"]
async fn postgres_rolled_back_events_are_never_published() {
    let test_db = saas_core::testing::TestDatabase::postgres().await;
    rolled_back_events_are_never_published(test_db.connect().await).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run or set SAAS_TEST_DATABASE_URL"]
async fn postgres_relay_killed_mid_batch() {
    let test_db = saas_core::testing::TestDatabase::postgres().await;
    a_relay_killed_mid_batch_loses_nothing_and_duplicates_nothing(test_db.connect().await).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run or set SAAS_TEST_DATABASE_URL"]
async fn postgres_relays_on_two_instances_split_the_work() {
    let test_db = saas_core::testing::TestDatabase::postgres().await;
    let db = test_db.connect().await;
    prepare(&db).await;
    let bus = InProcessBus::new();
    let (recorder, _sub) = subscribe(&db, &bus).await;
    commit_events(&db, TenantId::new(), 200).await;
    let a = OutboxRelay::new(db.clone(), Arc::new(bus.clone())).with_batch_size(7);
    let b = OutboxRelay::new(db.clone(), Arc::new(bus.clone())).with_batch_size(7);
    let (na, nb) = tokio::join!(a.drain(), b.drain());
    assert_eq!(na.unwrap() + nb.unwrap(), 200, "SKIP LOCKED: no batch relayed twice");
    wait_for(&db, 200).await;
    assert_eq!(recorder.delivered.load(Ordering::SeqCst), 200);
}
