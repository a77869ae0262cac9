//! Tenant isolation of a user's own tenant-owned type, derived with one line, on SQLite
//! and on PostgreSQL with row-level security (connected as a non-owner, non-superuser role).

use saas_core::{
    db::{
        Db, TenantScoped,
        migrate::{self, Migration, Migrations},
    },
    id::TenantId,
    testing::{TestDatabase, isolation},
};
use saas_macros::TenantScoped;

saas_core::define_id!(NoteId, "note", "A note.");

#[derive(Debug, Clone, PartialEq, TenantScoped)]
#[tenant_scoped(table = "notes")]
struct Note {
    id: NoteId,
    tenant_id: TenantId,
    body: String,
    stars: i64,
    archived: bool,
}

const NOTES: &str = "CREATE TABLE notes (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    stars BIGINT NOT NULL,
    archived INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);";

static MIGRATIONS: Migrations = Migrations {
    component: "notes",
    list: &[Migration::per_engine(
        1,
        "notes",
        NOTES,
        concat!(
            "CREATE TABLE notes (tenant_id TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, stars BIGINT NOT NULL, \
             archived BOOLEAN NOT NULL, PRIMARY KEY (tenant_id, id));",
            saas_core::rls_policy!("notes")
        ),
    )],
};

fn note(tenant: TenantId) -> Note {
    Note { id: NoteId::new(), tenant_id: tenant, body: "hello".into(), stars: 1, archived: false }
}

fn changed(note: &Note) -> Note {
    Note { body: "changed".into(), stars: note.stars + 1, archived: true, ..note.clone() }
}

/// The key of another tenant's row, carried by a row of one's own tenant: the store still
/// binds the transaction's tenant, so nothing of the other tenant changes.
async fn a_stolen_key_changes_nothing(db: &Db) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let theirs = note(b);
    let mut tx = db.tenant_tx(b).await.unwrap();
    Note::insert(&mut tx, &theirs).await.unwrap();
    tx.commit().await.unwrap();

    let forged = Note { tenant_id: a, ..changed(&theirs) };
    let mut tx = db.tenant_tx(a).await.unwrap();
    assert!(!Note::update(&mut tx, &forged).await.unwrap());
    assert!(!Note::delete(&mut tx, &theirs.id).await.unwrap());
    tx.commit().await.unwrap();
    let mut tx = db.tenant_tx(b).await.unwrap();
    assert_eq!(Note::get(&mut tx, &theirs.id).await.unwrap(), Some(theirs.clone()));
    Note::erase_tenant(&mut tx, b).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn isolation_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/n.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&MIGRATIONS]).await.unwrap();
    a_stolen_key_changes_nothing(&db).await;
    isolation::run(&db, note, changed).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn isolation_on_postgres_with_row_level_security() {
    let database = TestDatabase::postgres().await;
    let owner = database.connect().await;
    migrate::run(&owner, &[&MIGRATIONS]).await.unwrap();
    owner.close().await;
    let app = database.connect_as_app_role().await;
    a_stolen_key_changes_nothing(&app).await;
    isolation::run(&app, note, changed).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn a_superuser_bypasses_row_level_security_so_the_suite_would_fail() {
    // The reason the suite must run as the application role: proven, not assumed.
    let database = TestDatabase::postgres().await;
    let owner = database.connect().await;
    migrate::run(&owner, &[&MIGRATIONS]).await.unwrap();
    let (a, b) = (TenantId::new(), TenantId::new());
    for tenant in [a, b] {
        let mut tx = owner.tenant_tx(tenant).await.unwrap();
        Note::insert(&mut tx, &note(tenant)).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = owner.tenant_tx(a).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notes").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(seen, 2, "superusers bypass RLS");
}
