//! `TenantTx` on PostgreSQL sets `app.tenant_id` for the transaction only.

use saas_core::{db::PoolSettings, id::TenantId};

#[tokio::test]
#[ignore = "needs postgres: run .ci/run or set SAAS_TEST_DATABASE_URL"]
async fn tenant_setting_is_scoped_to_the_transaction() {
    let test_db = saas_core::testing::TestDatabase::postgres().await;
    // One connection, so the second transaction reuses the first one's session.
    let db = saas_core::db::Db::connect(&test_db.url, PoolSettings { max_connections: 1, ..Default::default() })
        .await
        .unwrap();
    let tenant = TenantId::new();
    let mut tx = db.tenant_tx(tenant).await.unwrap();
    let seen: String =
        sqlx::query_scalar("SELECT current_setting('app.tenant_id', true)").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(seen, tenant.to_string());
    tx.commit().await.unwrap();

    let mut plain = db.begin().await.unwrap();
    let after: Option<String> = sqlx::query_scalar("SELECT NULLIF(current_setting('app.tenant_id', true), '')")
        .fetch_one(&mut *plain)
        .await
        .unwrap();
    assert_eq!(after, None, "the tenant does not leak to the next user of the connection");
}

/// A SQLite database in a temporary directory (kept while the first value lives) with an
/// empty `counters (tenant_id, n)` table.
async fn sqlite_with_counters() -> (tempfile::TempDir, saas_core::db::Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let db = saas_core::db::Db::connect(&url, PoolSettings::default()).await.unwrap();
    sqlx::query("CREATE TABLE counters (tenant_id TEXT NOT NULL, n INTEGER NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    (dir, db)
}

/// Two writers on SQLite: one reads, then writes while the other has committed in between.
/// A deferred transaction fails that write at once with "database is locked" (its snapshot
/// is stale, and waiting cannot help); `tenant_tx` takes the write lock first, so the other
/// writer waits its turn and both commit.
#[tokio::test]
async fn sqlite_writers_that_read_first_wait_instead_of_failing() {
    let (_dir, db) = sqlite_with_counters().await;
    let tenant = TenantId::new();
    sqlx::query("INSERT INTO counters (tenant_id, n) VALUES ($1, 0)")
        .bind(tenant.to_string())
        .execute(db.pool())
        .await
        .unwrap();

    let read_then_write = |db: saas_core::db::Db, pause: std::time::Duration| async move {
        let mut tx = db.tenant_tx(tenant).await?;
        let n: i64 = sqlx::query_scalar("SELECT n FROM counters WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_one(&mut *tx)
            .await?;
        tokio::time::sleep(pause).await;
        sqlx::query("UPDATE counters SET n = $2 WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .bind(n + 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    };
    let slow = tokio::spawn(read_then_write(db.clone(), std::time::Duration::from_millis(100)));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let fast = tokio::spawn(read_then_write(db.clone(), std::time::Duration::ZERO));
    let (slow, fast) = (slow.await.unwrap(), fast.await.unwrap());
    assert!(slow.is_ok() && fast.is_ok(), "{slow:?} {fast:?}");
    let n: i64 = sqlx::query_scalar("SELECT n FROM counters").fetch_one(db.pool()).await.unwrap();
    assert_eq!(n, 2, "no update was lost");
}

/// A read on SQLite does not wait for a writer: `tenant_read` is deferred, so it reads the
/// last committed state while a `tenant_tx` holds the write lock.
#[tokio::test]
async fn sqlite_reads_run_beside_a_writer() {
    let (_dir, db) = sqlite_with_counters().await;
    let tenant = TenantId::new();
    let mut writer = db.tenant_tx(tenant).await.unwrap();
    sqlx::query("INSERT INTO counters (tenant_id, n) VALUES ($1, 1)")
        .bind(tenant.to_string())
        .execute(&mut *writer)
        .await
        .unwrap();
    let read = async {
        let mut reader = db.tenant_read(tenant).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM counters").fetch_one(&mut *reader).await?;
        reader.rollback().await?;
        Ok::<_, saas_core::Error>(n)
    };
    let seen = tokio::time::timeout(std::time::Duration::from_secs(1), read).await;
    assert_eq!(seen.expect("the read did not wait for the writer").unwrap(), 0, "not the uncommitted row");
    writer.commit().await.unwrap();
}
