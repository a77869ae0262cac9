//! Domain events: the envelope, the bus port, and reliable delivery.
//!
//! - [`Envelope`]: CloudEvents 1.0 attributes plus the tenant, with a JSON `data` payload.
//! - [`EventBus`]: the port (publish; subscribe with a consumer group). [`InProcessBus`] is
//!   the embedded adapter.
//! - [`outbox`]: events are written in the same transaction as the state change, so a
//!   rolled-back change never publishes and a committed one always does; [`OutboxRelay`]
//!   moves committed events to the bus (at least once).
//! - [`Inbox`]: turns at-least-once delivery into exactly-once handling for a consumer.
//!
//! ```
//! # async fn demo(db: saas_core::db::Db) -> saas_core::error::Result<()> {
//! use saas_core::{events::{Envelope, outbox}, id::TenantId};
//!
//! let tenant = TenantId::new();
//! let mut tx = db.tenant_tx(tenant).await?;
//! // … change state with `&mut *tx` …
//! let event = Envelope::new("tenancy.tenant_provisioned.v1", Some(tenant), serde_json::json!({"slug": "acme"}));
//! outbox::append(&mut tx, &event).await?;
//! tx.commit().await?; // the relay publishes it from here
//! # Ok(()) }
//! ```

mod bus;
mod domain;
mod envelope;
mod in_process;
mod inbox;
#[cfg(feature = "kafka")]
mod kafka;
pub mod outbox;
#[cfg(feature = "kafka")]
mod registry;
mod relay;

use std::sync::Arc;

pub use bus::{EventBus, EventHandler, Subscription};
pub use domain::{DomainEvent, EventSchema, incompatibility};
pub use envelope::Envelope;
pub use in_process::InProcessBus;
pub use inbox::Inbox;
#[cfg(feature = "kafka")]
pub use kafka::KafkaBus;
#[cfg(feature = "kafka")]
pub use registry::{Compatibility, Registered, SchemaRegistry};
pub use relay::OutboxRelay;

/// The brokers of `kafka://host:port[,host:port…]`, or `None` when it is not such a URL.
pub fn kafka_brokers(url: &str) -> Option<&str> {
    let brokers = url.strip_prefix("kafka://")?.trim_end_matches('/');
    let valid = !brokers.is_empty()
        && brokers
            .split(',')
            .all(|b| b.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()));
    valid.then_some(brokers)
}

/// The bus `config.url` names: [`InProcessBus`] for `memory://`, `KafkaBus` for
/// `kafka://…` (feature `kafka`).
pub async fn connect(config: &crate::config::EventBusConfig) -> crate::error::Result<Arc<dyn EventBus>> {
    #[cfg(feature = "kafka")]
    if config.url.starts_with("kafka://") {
        return Ok(Arc::new(KafkaBus::connect(config).await?));
    }
    match config.url.as_str() {
        "memory://" => Ok(Arc::new(InProcessBus::new())),
        other => Err(crate::error::Error::internal(anyhow::anyhow!(
            "event_bus.url: no adapter in this build for {other} (Kafka needs the `kafka` feature)"
        ))),
    }
}

use crate::db::migrate::{Migration, Migrations};

/// Tables of the outbox and the inbox; part of `saas migrate`.
pub static MIGRATIONS: Migrations = Migrations {
    component: "saas-core",
    list: &[Migration::per_engine(
        1,
        "outbox and inbox",
        "CREATE TABLE saas_outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            tenant_id TEXT,
            event_type TEXT NOT NULL,
            envelope TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            published_at BIGINT
        );
        CREATE INDEX saas_outbox_pending ON saas_outbox (seq) WHERE published_at IS NULL;
        CREATE TABLE saas_inbox (
            consumer TEXT NOT NULL,
            event_id TEXT NOT NULL,
            handled_at BIGINT NOT NULL,
            PRIMARY KEY (consumer, event_id)
        );",
        "CREATE TABLE saas_outbox (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            tenant_id TEXT,
            event_type TEXT NOT NULL,
            envelope TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            published_at BIGINT
        );
        CREATE INDEX saas_outbox_pending ON saas_outbox (seq) WHERE published_at IS NULL;
        CREATE TABLE saas_inbox (
            consumer TEXT NOT NULL,
            event_id TEXT NOT NULL,
            handled_at BIGINT NOT NULL,
            PRIMARY KEY (consumer, event_id)
        );",
    )],
};

#[cfg(test)]
mod kafka_url_tests {
    use super::kafka_brokers;

    #[test]
    fn broker_urls() {
        assert_eq!(kafka_brokers("kafka://127.0.0.1:9092"), Some("127.0.0.1:9092"));
        assert_eq!(kafka_brokers("kafka://a:9092,b:9093/"), Some("a:9092,b:9093"));
        for bad in ["kafka://", "kafka://host", "kafka://host:port", "redis://h:1", "kafka://:9092"] {
            assert_eq!(kafka_brokers(bad), None, "{bad}");
        }
    }
}
