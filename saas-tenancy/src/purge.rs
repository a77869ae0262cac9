//! Erasing a deleted tenant's rows, in every domain.
//!
//! Deleting a tenant publishes [`TENANT_DELETED`]. Each domain
//! that owns tenant rows subscribes with [`on_tenant_deleted`] and erases them; the inbox
//! makes the erasure run once per domain however often the event is delivered, and a
//! failed erasure is retried by the bus.
//!
//! ```no_run
//! # async fn demo(db: saas_core::db::Db, bus: std::sync::Arc<dyn saas_core::events::EventBus>) -> saas_core::Result<()> {
//! saas_tenancy::purge::on_tenant_deleted(&bus, db, "invoices", |conn, tenant| Box::pin(async move {
//!     sqlx::query("DELETE FROM invoices WHERE tenant_id = $1").bind(tenant.to_string()).execute(conn).await?;
//!     Ok(())
//! })).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use futures::future::BoxFuture;
use saas_core::{
    db::Db,
    error::Result,
    events::{Envelope, EventBus, Inbox, Subscription},
    id::TenantId,
};
use sqlx::AnyConnection;

use crate::{events::TENANT_DELETED, store};

/// Subscribes saas-tenancy itself: erases its own rows of a deleted tenant (quota overrides
/// and usage, feature overrides) and records when (`tenants.purged_at`). The `tenants` row
/// itself stays, so the slug stays taken.
pub async fn erase_tenancy_rows(
    bus: &Arc<dyn EventBus>,
    db: Db,
    counter: Arc<dyn crate::quota::QuotaCounter>,
) -> Result<Subscription> {
    on_tenant_deleted(bus, db, "saas-tenancy", move |conn, tenant| {
        let counter = counter.clone();
        Box::pin(async move {
            counter.erase_tenant(tenant).await?;
            for table in ["quota_overrides", "quota_usage", "feature_overrides"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                    .bind(tenant.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            store::mark_purged(conn, tenant).await
        })
    })
    .await
}

/// Erases one tenant's rows of one domain, on the given connection (inside a transaction
/// bound to that tenant).
pub type Erase = dyn for<'c> Fn(&'c mut AnyConnection, TenantId) -> BoxFuture<'c, Result<()>> + Send + Sync;

/// Subscribes `domain` (its consumer group is `<domain>.tenant-purge`) to tenant deletions,
/// running `erase` once per deleted tenant.
pub async fn on_tenant_deleted<F>(bus: &Arc<dyn EventBus>, db: Db, domain: &str, erase: F) -> Result<Subscription>
where
    F: for<'c> Fn(&'c mut AnyConnection, TenantId) -> BoxFuture<'c, Result<()>> + Send + Sync + 'static,
{
    let group = format!("{domain}.tenant-purge");
    let inbox = Inbox::new(db, group.clone());
    let erase: Arc<Erase> = Arc::new(erase);
    let handler = move |event: Envelope| {
        let (inbox, erase) = (inbox.clone(), erase.clone());
        async move {
            let Some(tenant) = event.tenant.filter(|_| event.event_type == TENANT_DELETED) else { return Ok(()) };
            let Some(mut tx) = inbox.begin(&event).await.map_err(saas_core::Error::into_cause)? else {
                return Ok(()); // already erased
            };
            erase(&mut tx, tenant).await.map_err(saas_core::Error::into_cause)?;
            tx.commit().await?;
            tracing::info!(tenant_id = %tenant, "erased the deleted tenant's rows");
            anyhow::Ok(())
        }
    };
    bus.subscribe(&group, &["tenancy"], Arc::new(handler)).await
}
