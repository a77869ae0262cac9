//! A small HTTP/1.1 load generator on keep-alive connections, for a fixed time:
//! - closed loop ([`run`], [`Connections::run`]): each connection sends its next request as
//!   soon as the previous response is read;
//! - paced ([`Connections::run_paced`]): the connections together offer a fixed rate,
//!   whatever the server answers, as a flood of clients would.

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
    /// A report of nothing yet, to [`absorb`](Self::absorb) runs into.
    pub(crate) fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            requests: 0,
            errors: 0,
            statuses: BTreeMap::new(),
            elapsed: Duration::ZERO,
            latencies: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
        })
    }
    /// Counts one answer with `status` that took `latency`.
    fn record(&mut self, status: u16, latency: Duration) -> anyhow::Result<()> {
        self.latencies.record(latency.as_micros().max(1) as u64)?;
        *self.statuses.entry(status).or_default() += 1;
        if (200..300).contains(&status) {
            self.requests += 1
        } else {
            self.errors += 1
        }
        Ok(())
    }
    /// Adds `other`'s answers, time and latencies to these: one report of two runs.
    pub(crate) fn absorb(&mut self, other: Report) -> anyhow::Result<()> {
        self.requests += other.requests;
        self.errors += other.errors;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.elapsed += other.elapsed;
        self.latencies.add(other.latencies)?;
        Ok(())
    }
}

/// Loads `target` on `addr` for `duration`, closed loop, on `connections` new connections.
pub(crate) async fn run(
    addr: SocketAddr,
    target: &Target,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Report> {
    Connections::open(addr, connections).await?.run(target, duration).await
}

/// Keep-alive connections to one server, kept open from one run to the next: runs of a
/// fraction of a second (the overhead test's slices) on new connections would count the
/// handshakes as time without requests, and leave thousands of sockets in `TIME_WAIT`.
pub(crate) struct Connections {
    senders: Vec<Sender>,
}

impl Connections {
    /// Opens `n` connections to `addr`.
    pub(crate) async fn open(addr: SocketAddr, n: usize) -> anyhow::Result<Self> {
        let opening: Vec<_> = (0..n).map(|_| tokio::spawn(connect(addr))).collect();
        let mut senders = Vec::with_capacity(n);
        for connection in opening {
            senders.push(connection.await??);
        }
        Ok(Self { senders })
    }

    /// Loads `target` for `duration`, closed loop: each connection sends its next request
    /// as soon as the previous response is read.
    pub(crate) async fn run(&mut self, target: &Target, duration: Duration) -> anyhow::Result<Report> {
        self.drive(target, duration, None).await
    }

    /// Offers `target` at `rate` requests/s in total for `duration`, spread over the
    /// connections; a connection still waiting for an answer when its next turn comes skips
    /// that turn (the report's `answered()` says what was actually sent).
    pub(crate) async fn run_paced(&mut self, target: &Target, rate: f64, duration: Duration) -> anyhow::Result<Report> {
        let every = Duration::from_secs_f64(self.senders.len() as f64 / rate);
        self.drive(target, duration, Some(every)).await
    }

    /// Runs every connection until `duration` has passed and its last answer is read: when
    /// this returns, nothing is in flight.
    async fn drive(&mut self, target: &Target, duration: Duration, every: Option<Duration>) -> anyhow::Result<Report> {
        let connections = self.senders.len();
        let start = Instant::now();
        let deadline = start + duration;
        let tasks: Vec<_> = std::mem::take(&mut self.senders)
            .into_iter()
            .enumerate()
            .map(|(i, sender)| {
                // Paced connections start evenly spread over one period.
                let offset = every.map(|e| e.mul_f64(i as f64 / connections as f64));
                tokio::spawn(connection(sender, target.clone(), deadline, every, offset))
            })
            .collect();
        let mut report = Report::empty()?;
        for task in tasks {
            let (answers, sender) = task.await??;
            self.senders.push(sender);
            report.absorb(answers)?;
        }
        report.elapsed = start.elapsed();
        Ok(report)
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A keep-alive HTTP/1.1 connection to `addr`.
async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn connection(
    mut sender: Sender,
    target: Target,
    deadline: Instant,
    every: Option<Duration>,
    offset: Option<Duration>,
) -> anyhow::Result<(Report, Sender)> {
    // The connection's answers; the caller sets the time they took.
    let mut answers = Report::empty()?;
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
        answers.record(status, sent.elapsed())?;
    }
    Ok((answers, sender))
}
