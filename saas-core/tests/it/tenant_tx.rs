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
