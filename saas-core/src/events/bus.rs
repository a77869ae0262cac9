use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::Envelope;
use crate::error::Result;

/// Handles the events of one consumer group.
///
/// Return `Err` to have the event retried (with back-off); handlers must therefore be
/// idempotent, which [`Inbox`](super::Inbox) makes easy.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event.
    async fn handle(&self, event: &Envelope) -> anyhow::Result<()>;
}

#[async_trait]
impl<F, Fut> EventHandler for F
where
    F: Fn(Envelope) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    async fn handle(&self, event: &Envelope) -> anyhow::Result<()> {
        self(event.clone()).await
    }
}

/// The event bus port: in-process by default, Kafka when the system is split.
///
/// Adapters deliver what they accepted at least once (the in-process bus only while the
/// process lives) and keep the order in which one publisher published. Several outbox
/// relays running side by side may interleave batches, so consumers must not rely on a
/// global order across instances.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes events; returns once the bus has accepted all of them.
    async fn publish(&self, events: &[Envelope]) -> Result<()>;

    /// Delivers every event of `topics` (bounded contexts, e.g. `tenancy`) published from now
    /// on to `handler`, once per consumer `group`.
    async fn subscribe(&self, group: &str, topics: &[&str], handler: Arc<dyn EventHandler>) -> Result<Subscription>;

    /// Checks that the bus is reachable; used by `/health/ready`.
    async fn ping(&self) -> Result<()>;

    /// Name for logs and health reports, e.g. `in-process`.
    fn name(&self) -> &'static str;
}

/// A running subscription; dropping it keeps it running, [`Subscription::stop`] ends it.
#[derive(Debug)]
pub struct Subscription {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Wraps the worker task of a subscription.
    pub fn new(cancel: CancellationToken, task: tokio::task::JoinHandle<()>) -> Self {
        Self { cancel, task }
    }

    /// Stops consuming and waits for the worker: the in-process bus first handles what it has
    /// queued; the Kafka adapter stops after the event in hand (the rest stays in Kafka).
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}
