//! A small closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each
//! sending the next request as soon as the previous response is read, for a fixed time.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// What one load run measured.
pub(crate) struct Report {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    latencies: Histogram<u64>,
}

impl Report {
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    pub(crate) fn p50_ms(&self) -> f64 {
        self.latencies.value_at_quantile(0.50) as f64 / 1000.0
    }
    pub(crate) fn p99_ms(&self) -> f64 {
        self.latencies.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// Loads `GET path` on `addr` for `duration`.
pub(crate) async fn run(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move { connection(addr, path, deadline).await }));
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut requests, mut errors) = (0, 0);
    for task in tasks {
        let (h, ok, failed) = task.await??;
        latencies.add(h)?;
        requests += ok;
        errors += failed;
    }
    Ok(Report { requests, errors, elapsed: start.elapsed(), latencies })
}

async fn connection(addr: SocketAddr, path: String, deadline: Instant) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ok, mut failed) = (0u64, 0u64);
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    while Instant::now() < deadline {
        let request = http::Request::get(path.as_str()).header("host", "bench").body(Empty::<Bytes>::new())?;
        let sent = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        histogram.record(sent.elapsed().as_micros().max(1) as u64)?;
        if status.is_success() { ok += 1 } else { failed += 1 }
    }
    Ok((histogram, ok, failed))
}
