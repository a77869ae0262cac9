//! The Kafka adapter against a real Kafka-protocol broker (`bash scripts/kafka.sh` starts
//! tansu on 127.0.0.1:9092; `SAAS_TEST_KAFKA_URL` names another).
#![cfg(feature = "kafka")]

use std::{sync::Arc, time::Duration};

use saas_core::{
    config::EventBusConfig,
    events::{Envelope, EventBus, KafkaBus},
    id::TenantId,
};
use tokio::sync::mpsc;

/// A bus on the test broker whose topics no other test run shares.
async fn bus() -> KafkaBus {
    let url = std::env::var("SAAS_TEST_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:9092".into());
    let prefix = format!("test{}.", uuid::Uuid::new_v4().simple());
    let config = EventBusConfig { url, topic_prefix: prefix, ..Default::default() };
    KafkaBus::connect(&config).await.expect("a broker answers: run `bash scripts/kafka.sh`")
}

/// A handler forwarding each event it gets.
fn forward(tx: mpsc::UnboundedSender<Envelope>) -> Arc<dyn saas_core::events::EventHandler> {
    Arc::new(move |event: Envelope| {
        let tx = tx.clone();
        async move {
            tx.send(event).ok();
            Ok(())
        }
    })
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Envelope>) -> Envelope {
    tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("an event within 30 s").unwrap()
}

#[tokio::test]
#[ignore = "needs kafka: run `bash scripts/kafka.sh` or .ci/run"]
async fn events_arrive_whole_and_in_order_per_tenant() {
    let bus = bus().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let subscription = bus.subscribe("readers", &["tenancy"], forward(tx)).await.unwrap();
    let (acme, globex) = (TenantId::new(), TenantId::new());
    let events: Vec<Envelope> = (0..6)
        .map(|i| {
            let tenant = if i % 2 == 0 { acme } else { globex };
            Envelope::new("tenancy.tenant_updated.v1", Some(tenant), serde_json::json!({ "n": i, "name": "Acmé ✓" }))
                .with_subject(format!("subject-{i}"))
        })
        .chain([Envelope::new("tenancy.platform_note.v1", None, serde_json::json!(null))])
        .collect();
    bus.publish(&events).await.unwrap();
    let mut received = Vec::new();
    for _ in 0..events.len() {
        received.push(next(&mut rx).await);
    }
    // Everything the envelope holds survives the trip, CloudEvents headers included.
    for sent in &events {
        let got = received.iter().find(|e| e.id == sent.id).expect("every event arrives");
        assert_eq!(got, sent);
    }
    // One tenant's events keep their order (they share a partition, keyed by tenant).
    let order = |tenant| -> Vec<i64> {
        received.iter().filter(|e| e.tenant == Some(tenant)).map(|e| e.data["n"].as_i64().unwrap()).collect()
    };
    assert_eq!(order(acme), [0, 2, 4]);
    assert_eq!(order(globex), [1, 3, 5]);
    subscription.stop().await;
}

#[tokio::test]
#[ignore = "needs kafka: run `bash scripts/kafka.sh` or .ci/run"]
async fn a_group_resumes_after_what_it_handled_and_failures_go_to_the_dead_letter_topic() {
    let bus = bus().await;
    let tenant = TenantId::new();
    let event = |n: i64| Envelope::new("auth.thing_happened.v1", Some(tenant), serde_json::json!({ "n": n }));

    // The first subscription handles two events, then stops: their offsets are committed.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = bus.subscribe("workers", &["auth"], forward(tx)).await.unwrap();
    bus.publish(&[event(1), event(2)]).await.unwrap();
    assert_eq!(next(&mut rx).await.data["n"], 1);
    assert_eq!(next(&mut rx).await.data["n"], 2);
    first.stop().await;

    // The group's next subscription starts after them. Its handler refuses event 4 every
    // time: after its retries, event 4 goes to `<topic>.dlq` and the group moves on to 5.
    bus.publish(&[event(3), event(4), event(5)]).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
    let picky = Arc::new(move |e: Envelope| {
        let tx = tx.clone();
        async move {
            if e.data["n"] == 4 {
                anyhow::bail!("cannot handle 4");
            }
            tx.send(e).ok();
            Ok(())
        }
    });
    let second = bus.subscribe("workers", &["auth"], picky).await.unwrap();
    assert_eq!(next(&mut rx).await.data["n"], 3, "1 and 2 are not handled again");
    assert_eq!(next(&mut rx).await.data["n"], 5);
    second.stop().await;

    let (tx, mut dead) = mpsc::unbounded_channel();
    let topic = KafkaBus::dead_letter_topic(&bus.topic_of("auth"));
    let context = topic.strip_prefix(&*bus.topic_of("")).unwrap().to_owned();
    let reader = bus.subscribe("dlq-reader", &[&context], forward(tx)).await.unwrap();
    let failed = next(&mut dead).await;
    assert_eq!((failed.data["n"].as_i64(), failed.tenant), (Some(4), Some(tenant)));
    reader.stop().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_an_error_not_a_hang() {
    let config = EventBusConfig { url: "kafka://127.0.0.1:1".into(), ..Default::default() };
    let started = std::time::Instant::now();
    let error = KafkaBus::connect(&config).await.err().expect("nothing listens on port 1");
    assert_eq!(error.code(), "event_bus_unavailable");
    assert!(started.elapsed() < Duration::from_secs(15), "gave up after {:?}", started.elapsed());
}

/// A tansu broker of this test's own, on a free port, so it can be frozen without
/// disturbing other tests.
struct Broker {
    child: std::process::Child,
    url: String,
}

impl Broker {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listener = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new("tansu")
            .args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu on PATH: run `bash scripts/kafka.sh` once");
        let broker = Self { child, url: format!("kafka://127.0.0.1:{port}") };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return broker;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tansu did not listen on {port}");
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the broker: unreachable, its data kept.
    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests keep committing events while the broker is frozen for 12 s (longer than a
/// publish waits): no request fails, every event arrives once the broker is back, and the
/// inbox handles each exactly once.
#[tokio::test]
#[ignore = "needs tansu: run `bash scripts/kafka.sh` or .ci/run"]
async fn a_frozen_broker_loses_nothing_and_nothing_is_handled_twice() {
    frozen_broker(Duration::from_secs(12)).await;
}

/// The same through a 60 s outage, longer than the consumer's session (45 s): the group
/// takes the consumer's partitions away, and the consumer gets them back.
#[tokio::test]
#[ignore = "needs tansu: run `bash scripts/kafka.sh` or .ci/run"]
async fn a_consumer_evicted_during_a_long_outage_rejoins_and_loses_nothing() {
    frozen_broker(Duration::from_secs(60)).await;
}

/// Commits an event every 50 ms, at least 300 and until the broker, frozen from the 60th
/// for `freeze`, is back; then checks each was handled exactly once.
async fn frozen_broker(freeze: Duration) {
    use std::collections::HashMap;

    use saas_core::{
        db::{Db, migrate},
        events::{Inbox, OutboxRelay, outbox},
    };
    use tokio_util::sync::CancellationToken;

    let _ = tracing_subscriber::fmt().with_env_filter("saas_core=debug,rdkafka=info").with_test_writer().try_init();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/events.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS]).await.unwrap();
    let config = EventBusConfig { url: broker.url.clone(), ..Default::default() };
    let bus: Arc<dyn EventBus> = Arc::new(KafkaBus::connect(&config).await.unwrap());
    let stop = CancellationToken::new();
    let relay = OutboxRelay::new(db.clone(), bus.clone()).with_poll_interval(Duration::from_millis(20));
    let relay = tokio::spawn(relay.run(stop.clone()));

    // The consumer counts what it really handles: only when the inbox lets it in.
    let handled: Arc<std::sync::Mutex<HashMap<String, u32>>> = Arc::default();
    let inbox = Inbox::new(db.clone(), "orders.counter");
    let counts = handled.clone();
    let handler = Arc::new(move |event: Envelope| {
        let (inbox, counts) = (inbox.clone(), counts.clone());
        async move {
            if let Some(tx) = inbox.begin(&event).await? {
                tx.commit().await?;
                *counts.lock().unwrap().entry(event.id.to_string()).or_default() += 1;
            }
            Ok(())
        }
    });
    let subscription = bus.subscribe("orders.counter", &["orders"], handler).await.unwrap();

    let tenant = TenantId::new();
    let mut sent = Vec::new();
    let mut frozen_at = None;
    let mut i = 0;
    while i < 300 || frozen_at.is_some() {
        if i == 60 {
            broker.signal("-STOP");
            frozen_at = Some(std::time::Instant::now());
        }
        if frozen_at.is_some_and(|t| t.elapsed() >= freeze) {
            broker.signal("-CONT");
            frozen_at = None;
        }
        i += 1;
        let event = Envelope::new("orders.order_placed.v1", Some(tenant), serde_json::json!({ "n": i }));
        let mut tx = db.tenant_tx(tenant).await.unwrap();
        outbox::append(&mut tx, &event).await.expect("a request never fails because the broker is down");
        tx.commit().await.unwrap();
        sent.push(event.id.to_string());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if frozen_at.is_some() {
        broker.signal("-CONT");
    }

    // An evicted consumer rejoins once the group has noticed (up to its 45 s session) and
    // rebalanced; on a busy two-core machine that took more than a minute.
    let wait = Duration::from_secs(150);
    let deadline = std::time::Instant::now() + wait;
    while handled.lock().unwrap().len() < sent.len() {
        if std::time::Instant::now() >= deadline {
            let pending = outbox::pending(&db).await.unwrap();
            let handled = handled.lock().unwrap().len();
            panic!("{handled} of {} handled after {wait:?}; {pending} still in the outbox", sent.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handled = handled.lock().unwrap().clone();
    for id in &sent {
        assert_eq!(handled.get(id), Some(&1), "event {id} handled once");
    }
    assert_eq!(outbox::pending(&db).await.unwrap(), 0);
    subscription.stop().await;
    stop.cancel();
    relay.await.unwrap();
}

/// Another client (Python confluent-kafka, `SAAS_TEST_KAFKA_PYTHON`) reads what the bus
/// wrote: the tenant as key, the CloudEvents attributes as headers, the data as JSON.
#[tokio::test]
#[ignore = "needs kafka and Python confluent-kafka (SAAS_TEST_KAFKA_PYTHON): run .ci/run"]
async fn a_client_we_did_not_write_reads_our_events() {
    let bus = bus().await;
    let tenant = TenantId::new();
    let event =
        Envelope::new("billing.invoice_paid.v1", Some(tenant), serde_json::json!({ "cents": 4200, "note": "é" }))
            .with_subject("inv_1");
    bus.publish(std::slice::from_ref(&event)).await.unwrap();

    let python = std::env::var("SAAS_TEST_KAFKA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/read_kafka.py");
    let url = std::env::var("SAAS_TEST_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:9092".into());
    let bootstrap = saas_core::events::kafka_brokers(&url).unwrap().to_owned();
    let topic = bus.topic_of("billing");
    let output = tokio::process::Command::new(python).args([script, &bootstrap, &topic, "1"]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let record: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(record["key"], tenant.to_string());
    assert_eq!(record["value"], event.data);
    let headers = &record["headers"];
    assert_eq!(headers["ce_specversion"], "1.0");
    assert_eq!(headers["ce_id"], event.id.to_string());
    assert_eq!(headers["ce_type"], "billing.invoice_paid.v1");
    assert_eq!(headers["ce_source"], "/saas/billing");
    assert_eq!(headers["ce_tenantid"], tenant.to_string());
    assert_eq!(headers["ce_subject"], "inv_1");
    assert_eq!(headers["content-type"], "application/json");
    let time = headers["ce_time"].as_str().unwrap();
    assert!(time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_ok(), "{time}");
}
