//! The transactional outbox: events written in the caller's transaction.
//!
//! [`append`] inserts the event into `saas_outbox` on the same connection as the state
//! change. If the transaction rolls back, the event is gone with it; once it commits, the
//! [`OutboxRelay`](super::OutboxRelay) publishes it.

use sqlx::AnyConnection;

use super::Envelope;
use crate::{
    db::now_millis,
    error::{Error, Result},
};

/// Writes `event` to the outbox inside the transaction that `conn` belongs to.
pub async fn append(conn: &mut AnyConnection, event: &Envelope) -> Result<()> {
    let envelope = serde_json::to_string(event).map_err(Error::internal)?;
    sqlx::query(
        "INSERT INTO saas_outbox (id, tenant_id, event_type, envelope, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event.id.to_string())
    .bind(event.tenant.map(|t| t.to_string()))
    .bind(&event.event_type)
    .bind(envelope)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Number of committed events not yet published.
pub async fn pending(db: &crate::db::Db) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM saas_outbox WHERE published_at IS NULL").fetch_one(db.pool()).await?)
}
