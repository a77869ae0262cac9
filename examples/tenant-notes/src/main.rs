//! Serves the example on 127.0.0.1:3000 with two tenants, `acme` and `globex`:
//!
//! ```text
//! cargo run -p example-tenant-notes
//! curl -H 'X-Tenant-ID: acme' -H 'content-type: application/json' -d '{"body":"hi"}' localhost:3000/v1/notes
//! curl -H 'X-Tenant-ID: globex' localhost:3000/v1/notes      # [] — acme's note is not globex's
//! ```
//!
//! `DATABASE_URL=postgres://…` uses PostgreSQL (connect as a role under RLS to see the
//! policies at work) instead of `notes.db`.

use example_tenant_notes::app;
use saas_tenancy::NewTenant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://notes.db".into());
    let db = saas_core::db::Db::connect(&url, Default::default()).await.map_err(saas_core::Error::into_cause)?;
    let (router, tenants) = app(db).await?;
    for slug in ["acme", "globex"] {
        // Already there on the second start: the slug is taken.
        let _ = tenants.provision(NewTenant { slug: slug.into(), name: slug.into(), plan: None }).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("serving tenants acme and globex on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
