use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Envelope, EventBus, EventHandler, Subscription};
use crate::error::{Error, Result};

const QUEUE: usize = 4096;
const ATTEMPTS: u32 = 5;

struct Group {
    topics: Vec<String>,
    queue: mpsc::Sender<Envelope>,
}

/// The embedded event bus: delivers events to consumer groups inside this process.
///
/// Each group has a bounded queue (publishers wait when it is full, so nothing is dropped)
/// and one worker that handles events in order. A failing handler is retried with
/// exponential back-off (5 attempts from 50 ms); an event that still fails is logged and kept
/// in [`dead_letters`](Self::dead_letters) (in memory).
///
/// Durability: the outbox keeps an event until this bus has *queued* it. Stopping a
/// subscription handles what is queued first; events queued but not yet handled when the
/// process dies are lost to in-process consumers; deployments that
/// need delivery across crashes use a persistent bus (the Kafka adapter, not built yet).
#[derive(Clone, Default)]
pub struct InProcessBus {
    groups: Arc<Mutex<HashMap<String, Group>>>,
    dead: Arc<Mutex<Vec<Envelope>>>,
}

impl InProcessBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events whose handler failed every attempt.
    pub fn dead_letters(&self) -> Vec<Envelope> {
        self.dead.lock().expect("dead-letter lock").clone()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, events: &[Envelope]) -> Result<()> {
        for event in events {
            let queues: Vec<_> = {
                let groups = self.groups.lock().expect("bus lock");
                groups
                    .values()
                    .filter(|g| g.topics.iter().any(|t| t == event.context()))
                    .map(|g| g.queue.clone())
                    .collect()
            };
            for queue in queues {
                // A closed queue belongs to a stopped subscription: nothing to deliver to.
                let _ = queue.send(event.clone()).await;
            }
        }
        Ok(())
    }

    async fn subscribe(&self, group: &str, topics: &[&str], handler: Arc<dyn EventHandler>) -> Result<Subscription> {
        let (tx, mut rx) = mpsc::channel::<Envelope>(QUEUE);
        {
            let mut groups = self.groups.lock().expect("bus lock");
            if groups.get(group).is_some_and(|g| !g.queue.is_closed()) {
                return Err(Error::conflict(
                    "group_already_subscribed",
                    format!("consumer group `{group}` is already subscribed on this bus"),
                ));
            }
            groups
                .insert(group.to_owned(), Group { topics: topics.iter().map(|t| t.to_string()).collect(), queue: tx });
        }
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let dead = self.dead.clone();
        let group = group.to_owned();
        let task = tokio::spawn(async move {
            let handle = |event: Envelope| {
                let (handler, stop, dead, group) = (&handler, &stop, &dead, &group);
                async move {
                    if !deliver(&**handler, &event, stop).await {
                        tracing::error!(group, event_id = %event.id, event_type = event.event_type, "event handler failed every attempt; moved to dead letters");
                        dead.lock().expect("dead-letter lock").push(event);
                    }
                }
            };
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => break,
                    next = rx.recv() => match next { Some(e) => e, None => return },
                };
                handle(event).await;
            }
            // Stopped: accept no more, but handle what publishers already queued (one
            // attempt each), so a clean shutdown loses nothing the outbox handed over.
            rx.close();
            while let Some(event) = rx.recv().await {
                handle(event).await;
            }
        });
        Ok(Subscription::new(cancel, task))
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}

/// Tries the handler with back-off; false when every attempt failed (or it was stopped).
pub(super) async fn deliver(handler: &dyn EventHandler, event: &Envelope, stop: &CancellationToken) -> bool {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=ATTEMPTS {
        // A panicking handler counts as a failed attempt instead of ending the subscription.
        let outcome = std::panic::AssertUnwindSafe(handler.handle(event)).catch_unwind().await;
        let outcome = outcome.unwrap_or_else(|panic| {
            let what =
                panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
            Err(anyhow::anyhow!("the handler panicked: {}", what.unwrap_or_default()))
        });
        match outcome {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(event_id = %event.id, attempt, error = format!("{e:#}"), "event handler failed");
                if attempt == ATTEMPTS || stop.is_cancelled() {
                    break;
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn event(t: &str) -> Envelope {
        Envelope::new(t, None, serde_json::json!({}))
    }

    /// A handler that sends each event's type to `tx`.
    fn forward_types(tx: mpsc::UnboundedSender<String>) -> Arc<dyn EventHandler> {
        Arc::new(move |e: Envelope| {
            let tx = tx.clone();
            async move {
                tx.send(e.event_type).unwrap();
                Ok(())
            }
        })
    }

    #[tokio::test]
    async fn each_group_gets_each_event_of_its_topics() {
        let bus = InProcessBus::new();
        let (tx_a, mut rx_a) = mpsc::unbounded_channel();
        let (tx_b, mut rx_b) = mpsc::unbounded_channel();
        let _a = bus.subscribe("a", &["tenancy"], forward_types(tx_a)).await.unwrap();
        let _b = bus.subscribe("b", &["identity", "tenancy"], forward_types(tx_b)).await.unwrap();
        bus.publish(&[event("tenancy.x.v1"), event("identity.y.v1")]).await.unwrap();
        assert_eq!(rx_a.recv().await.unwrap(), "tenancy.x.v1");
        assert_eq!(rx_b.recv().await.unwrap(), "tenancy.x.v1");
        assert_eq!(rx_b.recv().await.unwrap(), "identity.y.v1");
        assert!(tokio::time::timeout(Duration::from_millis(50), rx_a.recv()).await.is_err());
        assert!(bus.subscribe("a", &["x"], Arc::new(|_e: Envelope| async { Ok(()) })).await.is_err());
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_failed_attempt_and_the_group_goes_on() {
        let bus = InProcessBus::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handler = move |e: Envelope| {
            let tx = tx.clone();
            async move {
                if e.event_type == "t.boom.v1" {
                    panic!("boom");
                }
                tx.send(e.event_type).unwrap();
                Ok(())
            }
        };
        let _sub = bus.subscribe("g", &["t"], Arc::new(handler)).await.unwrap();
        bus.publish(&[event("t.boom.v1"), event("t.after.v1")]).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
        assert_eq!(next.as_deref(), Some("t.after.v1"), "the subscription survived the panic");
        assert_eq!(bus.dead_letters().iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(), ["t.boom.v1"]);
    }

    #[tokio::test]
    async fn stopping_handles_what_is_queued_first() {
        let bus = InProcessBus::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let slow = move |e: Envelope| {
            let tx = tx.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send(e.event_type).unwrap();
                Ok(())
            }
        };
        let sub = bus.subscribe("g", &["t"], Arc::new(slow)).await.unwrap();
        bus.publish(&[event("t.a.v1"), event("t.b.v1"), event("t.c.v1")]).await.unwrap();
        sub.stop().await;
        let handled: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(handled, ["t.a.v1", "t.b.v1", "t.c.v1"]);
        bus.publish(&[event("t.late.v1")]).await.unwrap(); // nobody listens: not an error
    }

    #[tokio::test]
    async fn failing_handlers_are_retried_then_dead_lettered() {
        let bus = InProcessBus::new();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let sub = bus
            .subscribe(
                "g",
                &["t"],
                Arc::new(move |_e: Envelope| {
                    let c = c.clone();
                    async move {
                        if c.fetch_add(1, Ordering::SeqCst) < 2 {
                            anyhow::bail!("transient")
                        }
                        Ok(())
                    }
                }),
            )
            .await
            .unwrap();
        bus.publish(&[event("t.ok.v1")]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(bus.dead_letters().is_empty());
        sub.stop().await;

        let _sub =
            bus.subscribe("g2", &["t"], Arc::new(|_e: Envelope| async { anyhow::bail!("always") })).await.unwrap();
        bus.publish(&[event("t.bad.v1")]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1800)).await;
        assert_eq!(bus.dead_letters().len(), 1);
    }
}
