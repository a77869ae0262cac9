//! Prometheus metrics.
//!
//! The recorder is installed once per process by [`handle`]; every crate records with the
//! `metrics` macros. HTTP metrics are labelled by route template (`/v1/tenants/{id}`), never
//! by raw path, so label cardinality stays bounded: the templates are those given to
//! [`HttpStack::routes`](crate::http::HttpStack::routes), and a request that matches none is
//! labelled `unmatched`.

use std::{
    cell::Cell,
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process's Prometheus recorder, installed on first use. HTTP request metrics are kept
/// apart (in atomics, see `HttpStats`) and rendered before the recorder's.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by the application); then its
        // metrics go there and this handle renders only what it saw.
        let _ = metrics::set_global_recorder(recorder);
        // Histogram samples queue up until drained into their buckets; without this they
        // would grow with every request between scrapes (or forever, with no scraper).
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        });
        handle
    })
}

/// The route templates of an API (`/v1/tenants/{id}`), matched against a request's path the
/// way axum's router matches it (both use `matchit`). The layers run around the whole router,
/// before it routes, so they cannot read axum's `MatchedPath`: they find the template here.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTemplates(Arc<matchit::Router<&'static str>>);

impl RouteTemplates {
    /// Matches `templates`; a template given twice counts once.
    ///
    /// # Panics
    /// On a template axum would refuse too (bad syntax, or a conflict with another one), as
    /// `Router::route` does: a programming error, found at start-up.
    pub(crate) fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> Self {
        let mut router = matchit::Router::new();
        for template in templates {
            let template = intern(template);
            match router.insert(template, template) {
                Ok(()) => {}
                Err(matchit::InsertError::Conflict { with }) if with == template => {}
                Err(error) => panic!("route template `{template}`: {error}"),
            }
        }
        Self(Arc::new(router))
    }

    /// The template `path` matches, if any.
    pub(crate) fn find(&self, path: &str) -> Option<&'static str> {
        self.0.at(path).ok().map(|found| *found.value)
    }
}

/// `template`, kept for the life of the process: labels outlive every stack (their metrics
/// do), and each distinct template is kept once however many stacks name it.
fn intern(template: &str) -> &'static str {
    static TEMPLATES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut templates = TEMPLATES.lock().unwrap_or_else(|p| p.into_inner());
    match templates.get(template) {
        Some(kept) => kept,
        None => {
            let kept: &'static str = Box::leak(template.into());
            templates.insert(kept);
            kept
        }
    }
}

/// The method and route labels of one request.
pub(crate) struct RequestLabels {
    method: &'static str,
    route: Option<&'static str>,
}

impl RequestLabels {
    pub(crate) fn of<B>(req: &http::Request<B>, routes: &RouteTemplates) -> Self {
        Self { method: method_label(req.method()), route: routes.find(req.uri().path()) }
    }

    /// Counts the request and records its duration.
    pub(crate) fn record(self, status: http::StatusCode, start: Instant) {
        HttpStats::record(self.method, status.as_u16(), self.route.unwrap_or("unmatched"), start.elapsed());
    }
}

/// Upper bounds of the duration histogram's buckets, in seconds.
const DURATION_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The requests of one method, status and route: a count and a duration histogram, in
/// atomics. Recording is a few atomic additions; the `metrics` crate's Prometheus histogram
/// queued every sample (with epoch-based reclamation) until its upkeep folded them, which
/// cost more than the rest of the metrics on every request.
#[derive(Default)]
struct HttpStats {
    route: Box<str>,
    /// Requests whose duration fell at most at each bound (not cumulative; rendered so).
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

type StatsKey = (&'static str, u16, Box<str>);
// Entries live as long as the process (their number is bounded by methods × statuses ×
// routes), so a thread can keep a plain reference to the last one it used.
type StatsMap = HashMap<(&'static str, u16), HashMap<Box<str>, &'static HttpStats, FoldHasher>, FoldHasher>;
type FoldHasher = foldhash::fast::RandomState;

fn stats() -> &'static RwLock<StatsMap> {
    static STATS: OnceLock<RwLock<StatsMap>> = OnceLock::new();
    STATS.get_or_init(Default::default)
}

impl HttpStats {
    /// Counts a request of `(method, status, route)` that took `duration`; the entry is
    /// registered on first use.
    fn record(method: &'static str, status: u16, route: &str, duration: Duration) {
        thread_local! {
            // Consecutive requests on a thread are mostly of one route and status: they
            // skip the shared map's lock and hashing.
            static LAST: Cell<Option<(&'static str, u16, &'static HttpStats)>> = const { Cell::new(None) };
        }
        if let Some((m, s, stats)) = LAST.get()
            && (m, s) == (method, status)
            && *stats.route == *route
        {
            return stats.add(duration);
        }
        let stats = Self::entry(method, status, route);
        LAST.set(Some((method, status, stats)));
        stats.add(duration);
    }

    /// The entry of `(method, status, route)`, registered on first use.
    fn entry(method: &'static str, status: u16, route: &str) -> &'static HttpStats {
        let read = stats().read().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = read.get(&(method, status)).and_then(|by_route| by_route.get(route)) {
            return found;
        }
        drop(read);
        let mut write = stats().write().unwrap_or_else(|p| p.into_inner());
        write
            .entry((method, status))
            .or_default()
            .entry(route.into())
            .or_insert_with(|| Box::leak(Box::new(HttpStats { route: route.into(), ..Default::default() })))
    }

    fn add(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// `http_requests_total` per method, route and status, and `http_request_duration_seconds`
/// per method and route, in the Prometheus text format.
fn render_http(out: &mut String) {
    let stats = stats().read().unwrap_or_else(|p| p.into_inner());
    let mut entries: Vec<(StatsKey, &HttpStats)> = stats
        .iter()
        .flat_map(|(&(method, status), by_route)| {
            by_route.iter().map(move |(route, s)| ((method, status, route.clone()), *s))
        })
        .collect();
    entries.sort_by(|a, b| (&a.0.2, a.0.0, a.0.1).cmp(&(&b.0.2, b.0.0, b.0.1)));
    if entries.is_empty() {
        return;
    }
    out.push_str("# HELP http_requests_total Requests answered, by method, route template and status.\n");
    out.push_str("# TYPE http_requests_total counter\n");
    for ((method, status, route), s) in &entries {
        let _ = writeln!(
            out,
            "http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
            escape(route),
            s.count.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP http_request_duration_seconds Time to answer a request, by method and route template.\n");
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    // One histogram per method and route: the statuses' entries (adjacent once sorted) summed.
    for group in entries.chunk_by(|a, b| (a.0.0, &a.0.2) == (b.0.0, &b.0.2)) {
        let ((method, _, route), _) = &group[0];
        let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
        let mut cumulative = 0;
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += group.iter().map(|(_, s)| s.buckets[i].load(Ordering::Relaxed)).sum::<u64>();
            let _ = writeln!(out, "http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count: u64 = group.iter().map(|(_, s)| s.count.load(Ordering::Relaxed)).sum();
        let sum: u64 = group.iter().map(|(_, s)| s.sum_nanos.load(Ordering::Relaxed)).sum();
        let _ = writeln!(out, "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "http_request_duration_seconds_sum{{{labels}}} {}", sum as f64 / 1e9);
        let _ = writeln!(out, "http_request_duration_seconds_count{{{labels}}} {count}");
    }
}

/// A label value as the text format has it: backslash, quote and newline escaped.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    match value.contains(['\\', '"', '\n']) {
        false => value.into(),
        true => value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into(),
    }
}

fn method_label(method: &http::Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT"];
    // Arbitrary extension methods would be unbounded label values.
    KNOWN.iter().find(|m| **m == method.as_str()).copied().unwrap_or("OTHER")
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
pub async fn render() -> impl IntoResponse {
    let mut text = String::new();
    render_http(&mut text);
    text.push_str(&handle().render());
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_render_as_counters_and_cumulative_histograms() {
        HttpStats::record("GET", 200, "/test/{id}", Duration::from_micros(300));
        HttpStats::record("GET", 200, "/test/{id}", Duration::from_millis(2));
        HttpStats::record("GET", 404, "/test/{id}", Duration::from_secs(10));
        HttpStats::record("POST", 201, "/test/\"q\"", Duration::from_millis(1));
        let mut text = String::new();
        render_http(&mut text);
        for line in [
            "# TYPE http_requests_total counter",
            r#"http_requests_total{method="GET",route="/test/{id}",status="200"} 2"#,
            r#"http_requests_total{method="GET",route="/test/{id}",status="404"} 1"#,
            r#"http_requests_total{method="POST",route="/test/\"q\"",status="201"} 1"#,
            "# TYPE http_request_duration_seconds histogram",
            r#"http_request_duration_seconds_bucket{method="GET",route="/test/{id}",le="0.0005"} 1"#,
            r#"http_request_duration_seconds_bucket{method="GET",route="/test/{id}",le="0.0025"} 2"#,
            r#"http_request_duration_seconds_bucket{method="GET",route="/test/{id}",le="5"} 2"#,
            r#"http_request_duration_seconds_bucket{method="GET",route="/test/{id}",le="+Inf"} 3"#,
            r#"http_request_duration_seconds_sum{method="GET",route="/test/{id}"} 10.0023"#,
            r#"http_request_duration_seconds_count{method="GET",route="/test/{id}"} 3"#,
            r#"http_request_duration_seconds_count{method="POST",route="/test/\"q\""} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE http_request_duration_seconds histogram").count(), 1);
    }

    #[test]
    fn paths_are_labelled_with_the_template_they_match() {
        let routes = RouteTemplates::new(["/v1/tenants", "/v1/tenants/{id}", "/docs/{*rest}", "/v1/tenants"]);
        assert_eq!(routes.find("/v1/tenants"), Some("/v1/tenants"));
        assert_eq!(routes.find("/v1/tenants/ten_1"), Some("/v1/tenants/{id}"));
        assert_eq!(routes.find("/docs/index.css"), Some("/docs/{*rest}"));
        assert_eq!(routes.find("/v1/tenants/ten_1/x"), None);
        assert_eq!(routes.find("/v1/tenants/"), None, "as axum routes it: no trailing-slash redirect");
        assert_eq!(RouteTemplates::default().find("/v1/tenants"), None);
        // As axum routes: a static segment before a parameter, whatever the order given.
        let routes = RouteTemplates::new(["/v1/users/{id}", "/v1/users/me"]);
        assert_eq!(routes.find("/v1/users/me"), Some("/v1/users/me"));
        assert_eq!(routes.find("/v1/users/usr_1"), Some("/v1/users/{id}"));
    }

    #[test]
    #[should_panic(expected = "route template `/v1/{ids}`")]
    fn conflicting_templates_are_refused_as_axum_refuses_them() {
        RouteTemplates::new(["/v1/{id}", "/v1/{ids}"]);
    }
}
