//! A small HTTP/1.1 load generator on keep-alive connections, for a fixed time:
//! - closed loop ([`run`]): each connection sends its next request as soon as the previous
//!   response is read;
//! - paced ([`run_paced`]): the connections together offer a fixed rate, whatever the
//!   server answers, as a flood of clients would.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// The request each connection sends, parsed once: the generator shares the machine with
/// the server, so each request it sends costs only clones of these (reference counts, and
/// the header map's two tables), not parsing and checking a kilobyte-long token again.
#[derive(Clone)]
pub(crate) struct Target {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Target {
    /// `GET path`.
    pub(crate) fn get(path: &str) -> Self {
        Self::new(http::Method::GET, path, Bytes::new())
    }

    /// `POST path` with a JSON body.
    pub(crate) fn post_json(path: &str, body: &serde_json::Value) -> Self {
        Self::new(http::Method::POST, path, Bytes::from(body.to_string())).header("content-type", "application/json")
    }

    fn new(method: http::Method, path: &str, body: Bytes) -> Self {
        let uri = path.parse().expect("a benchmark path is a URI");
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, http::HeaderValue::from_static("bench"));
        Self { method, uri, headers, body }
    }

    /// With one more header.
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let value = http::HeaderValue::try_from(value.into()).expect("a benchmark header value is valid");
        self.headers.append(http::HeaderName::from_static(name), value);
        self
    }

    fn request(&self) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// What one load run measured.
pub(crate) struct Report {
    /// Requests answered 2xx.
    pub(crate) requests: u64,
    /// Requests answered otherwise.
    pub(crate) errors: u64,
    /// Answers by status code.
    pub(crate) statuses: BTreeMap<u16, u64>,
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
    /// How many answers had `status`.
    pub(crate) fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
    /// All answers.
    pub(crate) fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// Loads `target` on `addr` for `duration`, closed loop.
pub(crate) async fn run(
    addr: SocketAddr,
    target: &Target,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Report> {
    drive(addr, target, connections, duration, None).await
}

/// Offers `target` to `addr` at `rate` requests/s in total for `duration`, spread over
/// `connections`; a connection still waiting for an answer when its next turn comes skips
/// that turn (the report's `answered()` says what was actually sent).
pub(crate) async fn run_paced(
    addr: SocketAddr,
    target: &Target,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Report> {
    let every = Duration::from_secs_f64(connections as f64 / rate);
    drive(addr, target, connections, duration, Some(every)).await
}

async fn drive(
    addr: SocketAddr,
    target: &Target,
    connections: usize,
    duration: Duration,
    every: Option<Duration>,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for i in 0..connections {
        let target = target.clone();
        // Paced connections start evenly spread over one period.
        let offset = every.map(|e| e.mul_f64(i as f64 / connections as f64));
        tasks.push(tokio::spawn(async move { connection(addr, target, deadline, every, offset).await }));
    }
    let mut report = Report {
        requests: 0,
        errors: 0,
        statuses: BTreeMap::new(),
        elapsed: Duration::ZERO,
        latencies: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
    };
    for task in tasks {
        let (latencies, statuses) = task.await??;
        report.latencies.add(latencies)?;
        for (status, n) in statuses {
            *report.statuses.entry(status).or_default() += n;
            if (200..300).contains(&status) { report.requests += n } else { report.errors += n }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

type Measured = (Histogram<u64>, BTreeMap<u16, u64>);

async fn connection(
    addr: SocketAddr,
    target: Target,
    deadline: Instant,
    every: Option<Duration>,
    offset: Option<Duration>,
) -> anyhow::Result<Measured> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut statuses = BTreeMap::new();
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut ticks = every.map(|every| {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset.unwrap_or_default(), every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticks
    });
    while Instant::now() < deadline {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
            if Instant::now() >= deadline {
                break;
            }
        }
        let request = target.request();
        let sent = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        histogram.record(sent.elapsed().as_micros().max(1) as u64)?;
        *statuses.entry(status).or_default() += 1;
    }
    Ok((histogram, statuses))
}
