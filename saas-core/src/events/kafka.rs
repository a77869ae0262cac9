//! The Kafka adapter of the [`EventBus`] port (feature `kafka`, rdkafka).
//!
//! - **Topics**: one per bounded context, `<prefix><context>` (`saas.tenancy`), created at
//!   start with the admin API when missing (some brokers do not create topics on first use),
//!   with `partitions` partitions; failed events go to `<topic>.dlq`.
//! - **Records**: key = the tenant id (`platform` for events without one), so one tenant's
//!   events stay in order on one partition; value = the event's JSON `data`; the CloudEvents
//!   attributes travel as headers (binary content mode of the CloudEvents Kafka binding):
//!   `ce_specversion`, `ce_id`, `ce_type`, `ce_source`, `ce_time`, `ce_subject`,
//!   `ce_tenantid`, and `content-type: application/json`.
//! - **Producer**: idempotent (`enable.idempotence`, `acks=all`); [`publish`](EventBus::publish)
//!   returns once the broker has acknowledged every event, else an error, and the outbox
//!   relay tries again later.
//! - **Consumers**: one consumer group per subscription. An event's offset is stored only
//!   after its handler succeeded (or the event went to the dead-letter topic), and stored
//!   offsets are committed every 5 s, on rebalance and on [`Subscription::stop`]. A failing
//!   handler is retried with back-off (5 attempts from 50 ms); an event that still fails, or
//!   that cannot be decoded, is copied to `<topic>.dlq` with the headers `saas_group` and
//!   `saas_error`, and the group moves on. Delivery is at least once: use
//!   [`Inbox`](super::Inbox) for exactly-once handling.
//! - A new consumer group starts at the earliest retained event of its topics.

use std::{collections::HashSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use rdkafka::{
    ClientConfig, Message,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::ClientContext,
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::{BorrowedMessage, Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{Envelope, EventBus, EventHandler, Subscription, in_process::deliver};
use crate::{
    config::EventBusConfig,
    error::{Error, Result},
};

/// How long a publish waits for the broker's acknowledgements.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a consumer whose partitions were taken away waits for the group to give it
/// some (or none, explicitly) before it rejoins with a new consumer.
const REJOIN_AFTER: Duration = Duration::from_secs(60);

/// Watches a consumer's group membership. In a rebalance, a revocation is always followed
/// by an assignment (perhaps empty); librdkafka rejoins by itself after losing its
/// partitions, but some brokers (tansu 0.6) never complete that rejoin after an outage longer
/// than the session timeout, and the consumer would wait forever.
#[derive(Default)]
struct GroupContext {
    revoked_at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl GroupContext {
    /// How long the consumer has been without the assignment that should follow a revocation.
    fn unassigned_for(&self) -> Duration {
        self.revoked_at.lock().expect("membership lock").map_or(Duration::ZERO, |at| at.elapsed())
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut revoked_at = self.revoked_at.lock().expect("membership lock");
        match rebalance {
            Rebalance::Revoke(_) => *revoked_at = revoked_at.or(Some(std::time::Instant::now())),
            Rebalance::Assign(_) => *revoked_at = None,
            Rebalance::Error(_) => {}
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// The event bus on Kafka; cheap to clone.
#[derive(Clone)]
pub struct KafkaBus {
    brokers: Arc<str>,
    prefix: Arc<str>,
    partitions: i32,
    replication: i32,
    /// Replaced when it fails for good (an idempotent producer is fenced after a delivery
    /// timed out, and must start again with a new producer id).
    producer: Arc<std::sync::RwLock<FutureProducer>>,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Topics known to exist.
    topics: Arc<Mutex<HashSet<String>>>,
}

fn unavailable(e: KafkaError) -> Error {
    Error::unavailable("event_bus_unavailable", format!("the event bus is not reachable: {e}")).with_source(e)
}

impl KafkaBus {
    /// Connects to the brokers of `config.url` (`kafka://host:port[,host:port…]`).
    pub async fn connect(config: &EventBusConfig) -> Result<Self> {
        let brokers = super::kafka_brokers(&config.url).ok_or_else(|| {
            Error::internal(anyhow::anyhow!(
                "event_bus.url: expected kafka://HOST:PORT[,HOST:PORT], got {}",
                config.url
            ))
        })?;
        let producer = new_producer(brokers).map_err(unavailable)?;
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", brokers).create().map_err(unavailable)?;
        let bus = Self {
            brokers: brokers.into(),
            prefix: config.topic_prefix.as_str().into(),
            partitions: config.partitions,
            replication: config.replication_factor,
            producer: Arc::new(std::sync::RwLock::new(producer)),
            admin: Arc::new(admin),
            topics: Arc::default(),
        };
        bus.ping().await?;
        Ok(bus)
    }

    fn producer(&self) -> FutureProducer {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces `failed` with a new producer when it can no longer send: a fatal error, or
    /// an idempotence state the broker refuses (after a delivery timed out, librdkafka bumps
    /// the producer epoch, and some brokers then answer `ProducerFenced` to every record).
    fn renew_if_stuck(&self, failed: &FutureProducer, error: &KafkaError) {
        use RDKafkaErrorCode::{InvalidProducerEpoch, OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId};
        let stuck = matches!(
            error.rdkafka_error_code(),
            Some(ProducerFenced | InvalidProducerEpoch | UnknownProducerId | OutOfOrderSequenceNumber)
        );
        let fatal = failed.client().fatal_error();
        if !stuck && fatal.is_none() {
            return;
        }
        let mut current = self.producer.write().expect("producer lock");
        // Publishers that failed together all get here: only the first replaces the producer
        // they shared, the others would throw away its fresh successor.
        if !std::ptr::eq(current.client(), failed.client()) {
            return;
        }
        tracing::warn!(error = %error, ?fatal, "the Kafka producer cannot send any more; starting a new one");
        match new_producer(&self.brokers) {
            Ok(fresh) => *current = fresh,
            Err(e) => tracing::error!(error = %e, "cannot start a new Kafka producer"),
        }
    }

    /// The topic of bounded context `context`.
    pub fn topic_of(&self, context: &str) -> String {
        format!("{}{context}", self.prefix)
    }

    /// The dead-letter topic of `topic`.
    pub fn dead_letter_topic(topic: &str) -> String {
        format!("{topic}.dlq")
    }

    /// Creates the topics that do not exist yet.
    async fn ensure_topics(&self, names: impl IntoIterator<Item = String>) -> Result<()> {
        let mut known = self.topics.lock().await;
        let missing: Vec<String> = names.into_iter().filter(|n| !known.contains(n)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|name| NewTopic::new(name, self.partitions, TopicReplication::Fixed(self.replication)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self.admin.create_topics(&new, &options).await.map_err(unavailable)?;
        for result in results {
            match result {
                Ok(name) | Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    known.insert(name);
                }
                Err((name, code)) => {
                    return Err(Error::unavailable("event_bus_unavailable", format!("cannot create topic {name}"))
                        .with_source(KafkaError::AdminOp(code)));
                }
            }
        }
        Ok(())
    }

    /// A consumer of `group` subscribed to `topics`.
    fn consumer(&self, group: &str, topics: &[String]) -> Result<GroupConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", &*self.brokers)
            // Prefixed like the topics: deployments sharing a cluster keep their groups apart.
            .set("group.id", format!("{}{group}", self.prefix))
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "5000")
            // Offsets are stored by hand, after the handler succeeded.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Some brokers (tansu) hold a fetch this long even when records are waiting.
            .set("fetch.wait.max.ms", "50")
            .create_with_context(GroupContext::default())
            .and_then(|consumer: GroupConsumer| {
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer.subscribe(&topics)?;
                Ok(consumer)
            })
            .map_err(unavailable)
    }
}

/// An idempotent producer: `acks=all`, each record delivered at most once per producer id.
fn new_producer(brokers: &str) -> rdkafka::error::KafkaResult<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
        .create()
}

/// The record headers of `event` (CloudEvents binary mode).
fn headers_of(event: &Envelope) -> OwnedHeaders {
    let time = event.time.format(&Rfc3339).unwrap_or_default();
    let id = event.id.to_string();
    let tenant = event.tenant.map(|t| t.to_string());
    let mut headers = OwnedHeaders::new()
        .insert(Header { key: "ce_specversion", value: Some(&event.specversion) })
        .insert(Header { key: "ce_id", value: Some(&id) })
        .insert(Header { key: "ce_type", value: Some(&event.event_type) })
        .insert(Header { key: "ce_source", value: Some(&event.source) })
        .insert(Header { key: "ce_time", value: Some(&time) })
        .insert(Header { key: "content-type", value: Some(&event.datacontenttype) });
    if let Some(tenant) = &tenant {
        headers = headers.insert(Header { key: "ce_tenantid", value: Some(tenant) });
    }
    if let Some(subject) = &event.subject {
        headers = headers.insert(Header { key: "ce_subject", value: Some(subject) });
    }
    headers
}

/// The event a record carries.
fn decode(message: &BorrowedMessage<'_>) -> anyhow::Result<Envelope> {
    let header = |name: &str| -> Option<String> {
        let headers = message.headers()?;
        headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let required = |name: &str| header(name).ok_or_else(|| anyhow::anyhow!("header {name} is missing"));
    let data = match message.payload() {
        Some(bytes) => serde_json::from_slice(bytes)?,
        None => serde_json::Value::Null,
    };
    Ok(Envelope {
        specversion: required("ce_specversion")?,
        id: required("ce_id")?.parse().map_err(|e| anyhow::anyhow!("ce_id: {e}"))?,
        event_type: required("ce_type")?,
        source: required("ce_source")?,
        time: OffsetDateTime::parse(&required("ce_time")?, &Rfc3339)?,
        tenant: header("ce_tenantid")
            .map(|t| t.parse())
            .transpose()
            .map_err(|e| anyhow::anyhow!("ce_tenantid: {e}"))?,
        subject: header("ce_subject"),
        datacontenttype: header("content-type").unwrap_or_else(|| "application/json".into()),
        data,
    })
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn publish(&self, events: &[Envelope]) -> Result<()> {
        self.ensure_topics(events.iter().map(|e| self.topic_of(e.context()))).await?;
        let records: Vec<(String, String, Vec<u8>, OwnedHeaders)> = events
            .iter()
            .map(|e| {
                let key = e.tenant.map_or_else(|| "platform".to_owned(), |t| t.to_string());
                let payload = serde_json::to_vec(&e.data).map_err(Error::internal)?;
                Ok((self.topic_of(e.context()), key, payload, headers_of(e)))
            })
            .collect::<Result<_>>()?;
        // All sent at once, then awaited together: one at a time would wait `linger.ms` each.
        let producer = self.producer();
        let sends = records.iter().map(|(topic, key, payload, headers)| {
            let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers.clone());
            producer.send(record, Timeout::After(DELIVERY_TIMEOUT))
        });
        let failed = futures::future::join_all(sends).await.into_iter().find_map(|r| r.err());
        match failed {
            None => Ok(()),
            Some((e, _)) => {
                self.renew_if_stuck(&producer, &e);
                Err(unavailable(e))
            }
        }
    }

    async fn subscribe(&self, group: &str, topics: &[&str], handler: Arc<dyn EventHandler>) -> Result<Subscription> {
        let names: Vec<String> = topics.iter().map(|t| self.topic_of(t)).collect();
        self.ensure_topics(names.clone()).await?;
        let mut consumer = self.consumer(group, &names)?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let bus = self.clone();
        let group = group.to_owned();
        let task = tokio::spawn(async move {
            let mut watchdog = tokio::time::interval(Duration::from_secs(10));
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = watchdog.tick() => {
                        if consumer.context().unassigned_for() >= REJOIN_AFTER {
                            tracing::warn!(group, "the group took this consumer's partitions and gave none back; rejoining with a new consumer");
                            match bus.consumer(&group, &names) {
                                Ok(fresh) => consumer = fresh,
                                Err(e) => tracing::warn!(group, error = %e, "cannot start a new consumer; retrying"),
                            }
                        }
                        continue;
                    }
                    next = consumer.recv() => next,
                };
                let message = match message {
                    Ok(message) => message,
                    Err(e) => {
                        tracing::warn!(group, error = %e, "cannot read from the event bus; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let failure = match decode(&message) {
                    Ok(event) => match deliver(&*handler, &event, &stop).await {
                        true => None,
                        false if stop.is_cancelled() => break, // not stored: delivered again later
                        false => Some(format!("the handler of {group} failed every attempt")),
                    },
                    Err(e) => Some(format!("cannot decode the event: {e:#}")),
                };
                if let Some(error) = failure {
                    tracing::error!(
                        group,
                        topic = message.topic(),
                        offset = message.offset(),
                        error,
                        "event moved to the dead-letter topic"
                    );
                    if !bus.dead_letter(&message, &group, &error, &stop).await {
                        break;
                    }
                }
                if let Err(e) = consumer.store_offset_from_message(&message) {
                    tracing::warn!(group, error = %e, "cannot store a consumer offset");
                }
            }
            // Commits the stored offsets and leaves the group (rdkafka closes on drop).
            if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
                tracing::debug!(group, error = %e, "final offset commit");
            }
        });
        Ok(Subscription::new(cancel, task))
    }

    async fn ping(&self) -> Result<()> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, Duration::from_secs(3)).map(drop))
            .await
            .map_err(Error::internal)?
            .map_err(unavailable)
    }

    fn name(&self) -> &'static str {
        "kafka"
    }
}

impl KafkaBus {
    /// Copies `message` to its topic's dead-letter topic, retrying until the broker takes
    /// it; false when stopped first.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        group: &str,
        error: &str,
        stop: &CancellationToken,
    ) -> bool {
        let topic = Self::dead_letter_topic(message.topic());
        let mut headers = message.headers().map(|h| h.detach()).unwrap_or_default();
        headers = headers
            .insert(Header { key: "saas_group", value: Some(group) })
            .insert(Header { key: "saas_error", value: Some(error) });
        let mut delay = Duration::from_millis(200);
        loop {
            let sent = match self.ensure_topics([topic.clone()]).await {
                Ok(()) => {
                    let mut record = FutureRecord::to(&topic).headers(headers.clone());
                    if let Some(key) = message.key() {
                        record = record.key(key);
                    }
                    if let Some(payload) = message.payload() {
                        record = record.payload(payload);
                    }
                    let producer = self.producer();
                    let sent = producer.send(record, Timeout::After(DELIVERY_TIMEOUT)).await;
                    if let Err((e, _)) = &sent {
                        self.renew_if_stuck(&producer, e);
                    }
                    sent.map(drop).map_err(|(e, _)| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => return true,
                Err(e) => tracing::warn!(topic, error = e, "cannot write to the dead-letter topic; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}
