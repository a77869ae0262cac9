//! Tenant routing on PostgreSQL: a tenant in a schema of its own, another in a shard, the
//! rest shared; row-level security holds in the schema.

use saas_core::{
    db::{
        TenantScoped,
        migrate::{self, Migration, Migrations},
    },
    id::TenantId,
    testing::{TestDatabase, isolation},
};
use saas_macros::TenantScoped;
use saas_tenancy::routing::{Placement, TenantRouter};
use secrecy::SecretString;

saas_core::define_id!(DocId, "doc", "A document.");

#[derive(Debug, Clone, PartialEq, TenantScoped)]
#[tenant_scoped(table = "docs")]
struct Doc {
    id: DocId,
    tenant_id: TenantId,
    title: String,
}

static DOCS: Migrations = Migrations {
    component: "docs",
    list: &[Migration::per_engine(
        1,
        "docs",
        "CREATE TABLE docs (tenant_id TEXT NOT NULL, id TEXT NOT NULL, title TEXT NOT NULL, PRIMARY KEY (tenant_id, id));",
        concat!(
            "CREATE TABLE docs (tenant_id TEXT NOT NULL, id TEXT NOT NULL, title TEXT NOT NULL, PRIMARY KEY (tenant_id, id));",
            saas_core::rls_policy!("docs")
        ),
    )],
};
static TENANT_TABLES: &[&Migrations] = &[&DOCS];

fn doc(tenant: TenantId) -> Doc {
    Doc { id: DocId::new(), tenant_id: tenant, title: "hello".into() }
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn tenants_in_their_own_schema_and_shard() {
    let shared = TestDatabase::postgres().await;
    let shard = TestDatabase::postgres().await;
    let owner = shared.connect().await;
    migrate::run(&owner, &[&saas_core::events::MIGRATIONS, &saas_tenancy::MIGRATIONS, &DOCS]).await.unwrap();
    let app_url = shared.app_role_url().await;
    let app = saas_core::db::Db::connect(&app_url, Default::default()).await.unwrap();
    let router = TenantRouter::new(
        app,
        SecretString::from(app_url),
        [("eu".to_owned(), SecretString::from(shard.url.clone()))],
        TENANT_TABLES,
    )
    .with_owner_url(SecretString::from(shared.url.clone()));

    let (big, eu, small) = (TenantId::new(), TenantId::new(), TenantId::new());
    let schema = router.place_in_schema(big).await.unwrap();
    router.place_in_shard(eu, "eu").await.unwrap();
    assert_eq!(router.placement(big).await.unwrap(), Placement::Schema(schema.clone()));
    assert_eq!(router.placement(small).await.unwrap(), Placement::Shared);
    assert_eq!(router.place_in_shard(big, "eu").await.unwrap_err().code(), "tenant_already_placed");
    assert_eq!(router.place_in_shard(small, "mars").await.unwrap_err().code(), "shard_not_found");

    for tenant in [big, eu, small] {
        let mut tx = router.tenant_tx(tenant).await.unwrap();
        Doc::insert(&mut tx, &doc(tenant)).await.unwrap();
        tx.commit().await.unwrap();
    }
    let count = |db: saas_core::db::Db, table: String| async move {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(db.pool()).await.unwrap();
        n
    };
    assert_eq!(count(owner.clone(), format!("{schema}.docs")).await, 1, "the big tenant's row is in its schema");
    assert_eq!(count(owner.clone(), "public.docs".into()).await, 1, "the small tenant's row is shared");
    assert_eq!(count(shard.connect().await, "docs".into()).await, 1, "the eu tenant's row is in the shard");

    // Row-level security holds inside the schema, for the serving role.
    let big_db = router.db(big).await.unwrap();
    let mut tx = router.tenant_tx(big).await.unwrap();
    assert_eq!(Doc::list(&mut tx, &Default::default()).await.unwrap().data.len(), 1);
    tx.rollback().await.unwrap();
    let mut tx = big_db.tenant_tx(big).await.unwrap();
    Doc::erase_tenant(&mut tx, big).await.unwrap();
    tx.commit().await.unwrap();
    isolation::run(&big_db, doc, |d| Doc { title: "changed".into(), ..d.clone() }).await;

    // A schema's tables are its own: a table missing there is an error, not the shared one.
    let mut tx = router.tenant_tx(big).await.unwrap();
    let fallback = sqlx::query("SELECT COUNT(*) FROM tenants").execute(&mut *tx).await;
    assert!(fallback.is_err(), "no fall-back to public");
    tx.rollback().await.unwrap();
    assert_eq!(router.migrate_placements().await.unwrap(), 2, "the schema and the shard are migrated again");

    // Deleting purges every place the tenant's rows are.
    let bus: std::sync::Arc<dyn saas_core::events::EventBus> =
        std::sync::Arc::new(saas_core::events::InProcessBus::new());
    let _purge = router
        .on_tenant_deleted(&bus, "docs", |conn, tenant| {
            Box::pin(async move { Doc::erase_tenant(conn, tenant).await.map(drop) })
        })
        .await
        .unwrap();
    let mut tx = router.tenant_tx(eu).await.unwrap();
    Doc::insert(&mut tx, &doc(eu)).await.unwrap();
    tx.commit().await.unwrap();
    let deleted =
        saas_core::events::Envelope::new(saas_tenancy::events::TENANT_DELETED, Some(eu), serde_json::json!({}));
    bus.publish(&[deleted]).await.unwrap();
    let shard_db = shard.connect().await;
    for _ in 0..100 {
        if count(shard_db.clone(), "docs".into()).await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(count(shard_db, "docs".into()).await, 0, "the shard's rows are erased");
}

#[tokio::test]
async fn schemas_need_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/r.db", dir.path().display());
    let db = saas_core::db::Db::connect(&url, Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_tenancy::MIGRATIONS]).await.unwrap();
    let router = TenantRouter::new(db, SecretString::from(url), [], TENANT_TABLES);
    let tenant = TenantId::new();
    assert_eq!(router.place_in_schema(tenant).await.unwrap_err().code(), "schemas_unsupported");
    assert_eq!(router.placement(tenant).await.unwrap(), Placement::Shared);
}
