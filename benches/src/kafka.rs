//! The event benchmarks (feature `kafka`), against the broker at `--kafka URL`:
//!
//! 1. Publisher: the SDK's `KafkaBus::publish` (batches of 100 envelopes, as the outbox
//!    relay sends them) against a raw rdkafka `FutureProducer` with the same settings
//!    (idempotent, `acks=all`, `linger.ms=5`), both sending 200-byte payloads in one run,
//!    in alternating rounds. Ratio SDK / raw.
//! 2. End to end: events committed to the outbox (SQLite) move through the relay to Kafka
//!    and to a consumer group; events/s from the first commit to the last event handled,
//!    and the lag (handled time minus event time) percentiles.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use saas_core::{
    config::EventBusConfig,
    db::{Db, migrate},
    events::{Envelope, EventBus, KafkaBus, OutboxRelay, outbox},
    id::TenantId,
};
use tokio_util::sync::CancellationToken;

/// Messages per publisher round.
const MESSAGES: usize = 50_000;

/// A 200-byte JSON payload.
fn payload(i: usize) -> serde_json::Value {
    let filler = "x".repeat(200 - 40);
    serde_json::json!({ "n": i, "filler": filler })
}

async fn raw_round(producer: &FutureProducer, topic: &str) -> anyhow::Result<f64> {
    let body: Vec<u8> = serde_json::to_vec(&payload(0))?;
    let key = TenantId::new().to_string();
    let start = Instant::now();
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(1000) {
        let sends = chunk.iter().map(|_| {
            producer.send(FutureRecord::to(topic).key(&key).payload(&body), Timeout::After(Duration::from_secs(30)))
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e)?;
        }
    }
    Ok(MESSAGES as f64 / start.elapsed().as_secs_f64())
}

/// The SDK publishing `batch` events a call (the raw producer sends 1000 at a time).
async fn sdk_round(bus: &KafkaBus, batch: usize) -> anyhow::Result<f64> {
    let tenant = TenantId::new();
    let events: Vec<Envelope> =
        (0..MESSAGES).map(|i| Envelope::new("bench.thing_happened.v1", Some(tenant), payload(i))).collect();
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        bus.publish(chunk).await?;
    }
    Ok(MESSAGES as f64 / start.elapsed().as_secs_f64())
}

/// Runs both benchmarks against `url`.
pub(crate) async fn run(url: &str, rounds: usize) -> anyhow::Result<()> {
    let prefix = format!("bench{}.", std::process::id());
    let config = EventBusConfig { url: url.into(), topic_prefix: prefix, ..Default::default() };
    let bus = KafkaBus::connect(&config).await?;
    let brokers = saas_core::events::kafka_brokers(url).ok_or_else(|| anyhow::anyhow!("not a kafka:// URL"))?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    // The SDK creates its topic on first publish; the raw producer writes to the same one.
    bus.publish(&[Envelope::new("bench.warm_up.v1", None, serde_json::json!({}))]).await?;
    let topic = bus.topic_of("bench");

    println!("== publisher: {MESSAGES} messages of 200 bytes per round, acks=all, idempotent, 1000 in flight ==");
    let (mut raw, mut sdk, mut relay_sized) = (vec![], vec![], vec![]);
    for round in 1..=rounds {
        let r = raw_round(&producer, &topic).await?;
        let s = sdk_round(&bus, 1000).await?;
        let small = sdk_round(&bus, 100).await?;
        println!(
            "round {round}  raw rdkafka {r:>9.0} msg/s   saas KafkaBus {s:>9.0} msg/s   (batches of 100: {small:>7.0} msg/s)"
        );
        raw.push(r);
        sdk.push(s);
        relay_sized.push(small);
    }
    let (r, s, small) = (crate::stats::median(raw), crate::stats::median(sdk), crate::stats::median(relay_sized));
    println!(
        "median     raw rdkafka {r:>9.0} msg/s   saas KafkaBus {s:>9.0} msg/s   (batches of 100: {small:>7.0} msg/s)"
    );
    println!("publisher ratio saas/raw: {:.3} (goal >= 0.70)", s / r);

    end_to_end(&bus).await
}

/// What the consumer saw: lags (ms) and how many events.
type Seen = Arc<Mutex<(Histogram<u64>, usize)>>;

/// Outbox → relay → Kafka → consumer: a burst (throughput), then a steady rate (lag).
async fn end_to_end(bus: &KafkaBus) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::connect(&format!("sqlite://{}/e2e.db", dir.path().display()), Default::default()).await?;
    migrate::run(&db, &[&saas_core::events::MIGRATIONS]).await?;
    let bus: Arc<dyn EventBus> = Arc::new(bus.clone());
    let seen: Seen = Arc::new(Mutex::new((Histogram::new_with_bounds(1, 600_000, 3)?, 0)));
    let recorder = seen.clone();
    let handler = Arc::new(move |event: Envelope| {
        let recorder = recorder.clone();
        async move {
            let lag = (time::OffsetDateTime::now_utc() - event.time).whole_milliseconds().max(1) as u64;
            let mut seen = recorder.lock().expect("seen");
            seen.0.record(lag.min(600_000))?;
            seen.1 += 1;
            Ok(())
        }
    });
    let subscription = bus.subscribe("bench.e2e", &["e2e"], handler).await?;
    let stop = CancellationToken::new();
    let relay = OutboxRelay::new(db.clone(), bus.clone()).with_batch_size(500);
    let relay = tokio::spawn(relay.run(stop.clone()));
    let tenant = TenantId::new();
    let commit = |n: usize| {
        let db = db.clone();
        async move {
            let mut tx = db.tenant_tx(tenant).await?;
            for i in 0..n {
                outbox::append(&mut tx, &Envelope::new("e2e.thing_happened.v1", Some(tenant), payload(i))).await?;
            }
            tx.commit().await?;
            anyhow::Ok(())
        }
    };
    let wait_for = |expected: usize| {
        let seen = seen.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while seen.lock().expect("seen").1 < expected {
                anyhow::ensure!(Instant::now() < deadline, "events missing after 120 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(())
        }
    };
    let reset = || -> anyhow::Result<()> {
        *seen.lock().expect("seen") = (Histogram::new_with_bounds(1, 600_000, 3)?, 0);
        Ok(())
    };

    const BURST: usize = 20_000;
    println!("\n== end to end: outbox (SQLite) → relay (batches of 500) → Kafka → consumer group ==");
    let start = Instant::now();
    for _ in 0..BURST / 100 {
        commit(100).await?;
    }
    let committed = start.elapsed();
    wait_for(BURST).await?;
    let total = start.elapsed();
    println!(
        "burst:  {BURST} events committed in {:.2} s; all handled after {:.2} s: {:.0} events/s end to end",
        committed.as_secs_f64(),
        total.as_secs_f64(),
        BURST as f64 / total.as_secs_f64()
    );

    // Steady state: 1 000 events/s (10 every 10 ms) for 10 s.
    reset()?;
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..1000 {
        ticks.tick().await;
        commit(10).await?;
    }
    wait_for(10_000).await?;
    let lags = seen.lock().expect("seen").0.clone();
    println!(
        "steady: 1000 events/s for 10 s; lag (handled − event time) p50 {} ms, p99 {} ms, max {} ms",
        lags.value_at_quantile(0.5),
        lags.value_at_quantile(0.99),
        lags.max()
    );
    subscription.stop().await;
    stop.cancel();
    relay.await?;
    Ok(())
}
