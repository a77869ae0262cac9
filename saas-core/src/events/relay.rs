use std::{sync::Arc, time::Duration};

use sqlx::{AnyConnection, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Envelope, EventBus};
use crate::{
    db::{Backend, Db, now_millis},
    error::{Error, Result},
};

/// Publishes committed outbox events to the bus, oldest first, at least once.
///
/// On PostgreSQL a batch is claimed in a transaction with `FOR UPDATE SKIP LOCKED`, so
/// several instances can relay side by side, published, then marked published in the same
/// transaction. On SQLite (one process) claim and mark run without a held transaction.
/// A crash between publishing and marking leaves the batch pending, and it is
/// published again on restart: consumers deduplicate with the [`Inbox`](super::Inbox).
#[derive(Clone)]
pub struct OutboxRelay {
    db: Db,
    bus: Arc<dyn EventBus>,
    batch_size: u32,
    poll_interval: Duration,
    wake: Arc<Notify>,
}

impl OutboxRelay {
    /// A relay from `db`'s outbox to `bus`, 100 events a batch, polling every 200 ms.
    pub fn new(db: Db, bus: Arc<dyn EventBus>) -> Self {
        Self { db, bus, batch_size: 100, poll_interval: Duration::from_millis(200), wake: Arc::new(Notify::new()) }
    }

    /// Sets the batch size.
    pub fn with_batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets how long the relay sleeps when the outbox is empty.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Wakes a sleeping relay now, e.g. right after a commit that appended events.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Publishes one batch; returns how many events it published.
    pub async fn relay_batch(&self) -> Result<usize> {
        match self.db.backend() {
            Backend::Postgres => {
                let mut tx = self.db.begin().await?;
                let n = self.publish_batch(&mut tx).await?;
                tx.commit().await?;
                Ok(n)
            }
            // One relay per SQLite file. A transaction held across the publish would go
            // stale as consumers write (SQLITE_BUSY_SNAPSHOT), so claim and mark autocommit.
            Backend::Sqlite => {
                let mut conn = self.db.pool().acquire().await?;
                self.publish_batch(&mut conn).await
            }
        }
    }

    async fn publish_batch(&self, conn: &mut AnyConnection) -> Result<usize> {
        let sql = format!(
            "SELECT seq, envelope FROM saas_outbox WHERE published_at IS NULL ORDER BY seq LIMIT {}{}",
            self.batch_size,
            self.db.backend().skip_locked()
        );
        let rows = sqlx::query(&sql).fetch_all(&mut *conn).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut seqs = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            seqs.push(row.try_get::<i64, _>(0)?);
            let text: String = row.try_get(1)?;
            events.push(serde_json::from_str::<Envelope>(&text).map_err(Error::internal)?);
        }
        self.bus.publish(&events).await?;
        let placeholders: Vec<String> = (0..seqs.len()).map(|i| format!("${}", i + 2)).collect();
        let update = format!("UPDATE saas_outbox SET published_at = $1 WHERE seq IN ({})", placeholders.join(", "));
        let mut query = sqlx::query(&update).bind(now_millis());
        for seq in &seqs {
            query = query.bind(*seq);
        }
        query.execute(&mut *conn).await?;
        metrics::counter!("saas_outbox_published_total").increment(events.len() as u64);
        Ok(events.len())
    }

    /// Publishes until the outbox is empty; returns the total.
    pub async fn drain(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            match self.relay_batch().await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// Relays until `shutdown`, then drains what is left and returns.
    ///
    /// Errors (database or bus down) are logged and retried with back-off up to 5 s; no event
    /// is lost, it waits in the outbox.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.poll_interval;
        loop {
            match self.relay_batch().await {
                Ok(n) if n > 0 => {
                    backoff = self.poll_interval;
                    continue;
                }
                Ok(_) => backoff = self.poll_interval,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(backoff) => {}
            }
        }
        match self.drain().await {
            Ok(n) => tracing::info!(published = n, "outbox flushed on shutdown"),
            Err(e) => {
                tracing::error!(error = %e, "outbox flush on shutdown failed; the events stay pending for the next start")
            }
        }
    }
}
