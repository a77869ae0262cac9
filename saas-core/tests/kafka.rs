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
