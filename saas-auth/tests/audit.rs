//! The audit log: events recorded once each in their tenant's chain, checkpoints signed, and
//! tampering with the stored rows (altering, deleting, truncating, forging a checkpoint)
//! named by the verification; on SQLite and on PostgreSQL under row-level security.

use std::{sync::Arc, time::Duration};

use saas_auth::{audit::AuditLog, events::RoleAssigned, service::Auth};
use saas_core::{
    db::{Db, migrate},
    events::{Envelope, EventBus, InProcessBus},
    id::{TenantId, UserId},
    testing::TestDatabase,
};

mod common;

async fn audit_log(db: Db, dir: &tempfile::TempDir) -> AuditLog {
    let auth =
        Auth::from_config(db, Arc::new(saas_core::cache::MemoryCache::new(100)), &common::quick_config(dir.path()))
            .await
            .unwrap();
    auth.audit().clone()
}

fn role_change(tenant: TenantId, role: &str) -> Envelope {
    Envelope::of(&RoleAssigned { tenant_id: tenant, user_id: UserId::new(), roles: vec![role.into()] }).unwrap()
}

/// Waits until `tenant`'s chain has `n` verified entries.
async fn wait_for(log: &AuditLog, tenant: Option<TenantId>, n: i64) {
    for _ in 0..200 {
        if log.verify(tenant).await.unwrap().entries >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the chain of {tenant:?} did not reach {n} entries: {:?}", log.verify(tenant).await);
}

/// `app` writes as the application (under row-level security on PostgreSQL); `owner` plays
/// the attacker with write access to the tables.
async fn suite(app: Db, owner: Db) {
    let dir = tempfile::tempdir().unwrap();
    let log = audit_log(app.clone(), &dir).await;
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new());
    let subscription = log.record(&bus).await.unwrap();
    let [altered, deleted, truncated, forged, untouched] = [(); 5].map(|_| TenantId::new());
    let tenants = [altered, deleted, truncated, forged, untouched];

    // Five events per tenant, one platform event, and one event delivered twice.
    let mut events: Vec<Envelope> = ["member", "admin", "owner", "member", "admin"]
        .iter()
        .flat_map(|role| tenants.map(|t| role_change(t, role)))
        .collect();
    events.push(Envelope::new("auth.signing_key_rotated.v1", None, serde_json::json!({"kid": "k1"})));
    events.push(events[0].clone());
    bus.publish(&events).await.unwrap();
    for tenant in tenants {
        wait_for(&log, Some(tenant), 5).await;
    }
    wait_for(&log, None, 1).await;

    let report = log.verify(Some(untouched)).await.unwrap();
    assert!(report.intact && report.breach.is_none(), "{report:?}");
    assert_eq!(report.entries, 5, "the event delivered twice is recorded once");
    assert_eq!(log.verify(None).await.unwrap().entries, 1, "the platform chain");
    let chains = log.chains().await.unwrap();
    assert_eq!(chains.len(), 6, "{chains:?}");

    // Entries are listed per tenant, in order, with their events.
    let entries = log.entries(untouched, 0, 100).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(entries.iter().all(|e| e.event["tenantid"] == untouched.to_string()));
    assert_eq!(entries[1].event["data"]["roles"][0], "admin");
    assert_eq!(entries[1].prev_hash, entries[0].hash);
    assert_eq!(log.entries(untouched, 3, 100).await.unwrap().len(), 2);

    // Another tenant's transaction sees none of these rows (row-level security on PostgreSQL).
    let mut tx = app.tenant_tx(altered).await.unwrap();
    let leaked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE tenant_id = $1")
        .bind(untouched.to_string())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    if app.backend() == saas_core::db::Backend::Postgres {
        assert_eq!(leaked, 0, "tenant A read tenant B's audit entries");
    }

    assert_eq!(log.checkpoint().await.unwrap(), 6, "one checkpoint per chain");
    assert_eq!(log.checkpoint().await.unwrap(), 0, "nothing grew since");
    let report = log.verify(Some(untouched)).await.unwrap();
    assert_eq!((report.intact, report.checkpoints), (true, 1));
    assert_eq!(report.latest_checkpoint.as_ref().unwrap().seq, 5);

    // The attacker rewrites entry 2 of one tenant: "admin" becomes "owner".
    let changed = sqlx::query(
        "UPDATE audit_log SET entry = REPLACE(entry, '\"admin\"', '\"owner\"') WHERE tenant_id = $1 AND seq = 2",
    )
    .bind(altered.to_string())
    .execute(owner.pool())
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1);
    let report = log.verify(Some(altered)).await.unwrap();
    let breach = report.breach.expect("the altered entry is found");
    assert!(!report.intact);
    assert_eq!(breach.seq, 2, "{breach:?}");
    assert_eq!(breach.event_id.as_deref(), Some(entries_of(&owner, altered).await[1].as_str()));
    assert_eq!(breach.event_type.as_deref(), Some("auth.role_assigned.v1"));
    assert_eq!(report.entries, 1, "entry 1 still verifies");

    // … and cannot get a state of its making signed: the head must name a genuine entry.
    sqlx::query("DELETE FROM audit_checkpoints WHERE tenant_id = $1")
        .bind(altered.to_string())
        .execute(owner.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE audit_heads SET hash = $2 WHERE tenant_id = $1")
        .bind(altered.to_string())
        .bind("e".repeat(64))
        .execute(owner.pool())
        .await
        .unwrap();
    assert_eq!(log.checkpoint().await.unwrap(), 0, "a head that names no genuine entry is not signed");

    // … deletes entry 3 of another.
    sqlx::query("DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 3")
        .bind(deleted.to_string())
        .execute(owner.pool())
        .await
        .unwrap();
    let breach = log.verify(Some(deleted)).await.unwrap().breach.unwrap();
    assert_eq!(breach.seq, 3, "{breach:?}");
    assert!(breach.reason.contains("missing"), "{}", breach.reason);

    // … deletes the newest two entries of a third, and its head row too.
    sqlx::query("DELETE FROM audit_log WHERE tenant_id = $1 AND seq >= 4")
        .bind(truncated.to_string())
        .execute(owner.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_heads WHERE tenant_id = $1")
        .bind(truncated.to_string())
        .execute(owner.pool())
        .await
        .unwrap();
    let breach = log.verify(Some(truncated)).await.unwrap().breach.unwrap();
    assert_eq!(breach.seq, 4, "the signed checkpoint still names entry 5: {breach:?}");

    // … and re-signs a checkpoint without the key.
    sqlx::query("UPDATE audit_checkpoints SET hash = $2 WHERE tenant_id = $1")
        .bind(forged.to_string())
        .bind("f".repeat(64))
        .execute(owner.pool())
        .await
        .unwrap();
    let breach = log.verify(Some(forged)).await.unwrap().breach.unwrap();
    assert!(breach.reason.contains("invalid signature"), "{breach:?}");

    assert!(log.verify(Some(untouched)).await.unwrap().intact, "the other chains stay intact");
    subscription.stop().await;
}

/// The event ids of `tenant`'s chain in order, read as the owner.
async fn entries_of(owner: &Db, tenant: TenantId) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id FROM audit_log WHERE tenant_id = $1 ORDER BY seq")
        .bind(tenant.to_string())
        .fetch_all(owner.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn audit_log_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/a.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    suite(db.clone(), db).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn audit_log_on_postgres_under_row_level_security() {
    let database = TestDatabase::postgres().await;
    let owner = database.connect().await;
    migrate::run(&owner, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    suite(database.connect_as_app_role().await, owner).await;
}

#[tokio::test]
async fn the_checkpoint_key_follows_the_key_encryption_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/k.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    let first = audit_log(db.clone(), &dir).await;
    let again = audit_log(db.clone(), &dir).await;
    assert_eq!(first.key().id(), again.key().id(), "same key-encryption key file, same checkpoint key");
    let other_dir = tempfile::tempdir().unwrap();
    let other_db =
        Db::connect(&format!("sqlite://{}/k.db", other_dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&other_db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    let other = audit_log(other_db, &other_dir).await;
    assert_ne!(first.key().id(), other.key().id());
    assert_eq!(first.key().public_key().len(), 43, "32 bytes, base64url");
}

#[tokio::test]
async fn a_chain_longer_than_a_page_verifies_and_names_a_gap_past_the_first_page() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/long.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    let log = audit_log(db.clone(), &dir).await;
    let tenant = TenantId::new();
    let mut tx = db.tenant_tx(tenant).await.unwrap();
    for i in 0..1200 {
        let seq = log.append(&mut tx, &role_change(tenant, "member")).await.unwrap();
        assert_eq!(seq, i + 1);
        if seq % 400 == 0 {
            tx.commit().await.unwrap();
            assert_eq!(log.checkpoint().await.unwrap(), 1);
            tx = db.tenant_tx(tenant).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
    let report = log.verify(Some(tenant)).await.unwrap();
    assert_eq!((report.intact, report.entries, report.checkpoints), (true, 1200, 3), "{report:?}");
    assert_eq!(report.latest_checkpoint.unwrap().seq, 1200);

    sqlx::query("DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 777")
        .bind(tenant.to_string())
        .execute(db.pool())
        .await
        .unwrap();
    let breach = log.verify(Some(tenant)).await.unwrap().breach.unwrap();
    assert_eq!(breach.seq, 777, "{breach:?}");
}

/// Verification reads one snapshot: entries and checkpoints written while it runs never
/// look like a moved head or a missing entry.
async fn verification_while_appending(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let log = audit_log(db.clone(), &dir).await;
    let tenant = TenantId::new();
    let writer = {
        let (db, log) = (db.clone(), log.clone());
        tokio::spawn(async move {
            for i in 0..150 {
                let mut tx = db.tenant_tx(tenant).await.unwrap();
                log.append(&mut tx, &role_change(tenant, "member")).await.unwrap();
                tx.commit().await.unwrap();
                if i % 10 == 0 {
                    log.checkpoint().await.unwrap();
                }
            }
        })
    };
    let mut reports = 0;
    while !writer.is_finished() {
        let report = log.verify(Some(tenant)).await.unwrap();
        assert!(report.intact, "verified during appends: {report:?}");
        reports += 1;
    }
    writer.await.unwrap();
    let report = log.verify(Some(tenant)).await.unwrap();
    assert_eq!((report.intact, report.entries), (true, 150), "{report:?}");
    assert!(reports > 1, "verification ran beside the appends ({reports} times)");
}

#[tokio::test]
async fn verification_beside_appends_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/busy.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    verification_while_appending(db).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn verification_beside_appends_on_postgres() {
    let database = TestDatabase::postgres().await;
    migrate::run(&database.connect().await, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    verification_while_appending(database.connect_as_app_role().await).await;
}
