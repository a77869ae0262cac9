use sqlx::{Any, Transaction};

use super::Envelope;
use crate::{
    db::{Db, now_millis},
    error::Result,
};

/// Makes a consumer handle each event once, however often the bus delivers it.
///
/// [`Inbox::begin`] opens a transaction and records the event id for this consumer in it.
/// The handler does its work in that transaction and commits: work and record land together.
/// If the event was already handled, `begin` returns `None`; if the handler fails, the
/// rollback removes the record and the retry handles it again.
///
/// ```no_run
/// # async fn demo(db: saas_core::db::Db, event: saas_core::events::Envelope) -> saas_core::error::Result<()> {
/// let inbox = saas_core::events::Inbox::new(db, "welcome-mailer");
/// if let Some(mut tx) = inbox.begin(&event).await? {
///     // … write with `&mut *tx` …
///     tx.commit().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Inbox {
    db: Db,
    consumer: String,
}

impl Inbox {
    /// The inbox of `consumer` (usually the consumer group name).
    pub fn new(db: Db, consumer: impl Into<String>) -> Self {
        Self { db, consumer: consumer.into() }
    }

    /// Starts handling `event`: `None` if this consumer already handled it. On PostgreSQL
    /// the transaction is bound to the event's tenant for row-level security.
    pub async fn begin(&self, event: &Envelope) -> Result<Option<Transaction<'static, Any>>> {
        let mut tx = self.db.begin().await?;
        if let Some(tenant) = event.tenant {
            self.db.bind_tenant(&mut tx, tenant).await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO saas_inbox (consumer, event_id, handled_at) VALUES ($1, $2, $3) ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(&self.consumer)
        .bind(event.id.to_string())
        .bind(now_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok((inserted == 1).then_some(tx))
    }

    /// Forgets that this consumer handled `event`, so its next delivery is handled again:
    /// for work that must happen after the commit (a mail sent) and failed.
    pub async fn forget(&self, event: &Envelope) -> Result<()> {
        sqlx::query("DELETE FROM saas_inbox WHERE consumer = $1 AND event_id = $2")
            .bind(&self.consumer)
            .bind(event.id.to_string())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}
