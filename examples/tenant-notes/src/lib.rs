//! Tenancy added to a plain axum app: the resolution layer, the `TenantContext` extractor,
//! and one tenant-owned table (`notes`) under row-level security. `main.rs` serves it.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, routing::get};
use saas_core::{
    cache::MemoryCache,
    config::TenantSource,
    db::{
        Db, TenantScoped,
        migrate::{self, Migration, Migrations},
    },
    http::{Json, Path},
    id::TenantId,
    tenant::TenantContext,
};
use saas_macros::TenantScoped;
use saas_tenancy::{TenantLayer, Tenants};
use serde::{Deserialize, Serialize};

saas_core::define_id!(NoteId, "note", "A note.");

/// A tenant-owned row: `#[derive(TenantScoped)]` gives it tenant-safe store methods.
#[derive(Debug, Clone, Serialize, TenantScoped)]
#[tenant_scoped(table = "notes")]
pub struct Note {
    id: NoteId,
    #[serde(skip)]
    tenant_id: TenantId,
    body: String,
}

macro_rules! notes_table {
    () => {
        "CREATE TABLE notes (tenant_id TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id));"
    };
}

/// The notes table; on PostgreSQL under row-level security.
pub static MIGRATIONS: Migrations = Migrations {
    component: "notes",
    list: &[Migration::per_engine(
        1,
        "notes",
        notes_table!(),
        concat!(notes_table!(), saas_core::rls_policy!("notes")),
    )],
};

#[derive(Deserialize)]
struct NewNote {
    body: String,
}

async fn create(
    State(db): State<Db>,
    tenant: TenantContext,
    Json(new): Json<NewNote>,
) -> saas_core::Result<(StatusCode, Json<Note>)> {
    let note = Note { id: NoteId::new(), tenant_id: tenant.id, body: new.body };
    let mut tx = db.tenant_tx(tenant.id).await?;
    Note::insert(&mut tx, &note).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(note)))
}

async fn list(State(db): State<Db>, tenant: TenantContext) -> saas_core::Result<Json<Vec<Note>>> {
    let mut tx = db.tenant_read(tenant.id).await?;
    Ok(Json(Note::list(&mut tx, &Default::default()).await?.data))
}

async fn read(State(db): State<Db>, tenant: TenantContext, Path(id): Path<NoteId>) -> saas_core::Result<Json<Note>> {
    let mut tx = db.tenant_read(tenant.id).await?;
    let note = Note::get(&mut tx, &id).await?;
    note.map(Json).ok_or_else(|| saas_core::Error::not_found("note_not_found", "no such note"))
}

/// The app: migrations applied, tenants resolved from `X-Tenant-ID` or `<slug>.localhost`.
pub async fn app(db: Db) -> anyhow::Result<(Router, Tenants)> {
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_tenancy::MIGRATIONS, &MIGRATIONS]).await?;
    let tenants = Tenants::new(db.clone(), Arc::new(MemoryCache::new(10_000)));
    let router = Router::new()
        .route("/v1/notes", get(list).post(create))
        .route("/v1/notes/{id}", get(read))
        .layer(TenantLayer::new(tenants.clone(), &[TenantSource::Header, TenantSource::Subdomain], Some("localhost")))
        .with_state(db);
    Ok((router, tenants))
}
