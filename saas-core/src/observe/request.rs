//! The request a log line belongs to: its id, its tenant and its user, kept by the task that
//! handles the request and added to every log line that task writes.
//!
//! The [edge](crate::http::edge) of [`HttpStack`](crate::http::HttpStack) sets the request
//! id; tenant resolution and authentication call [`record_tenant`] and [`record_user`] once
//! they know them. [`RequestIdsWriter`] (installed by [`init_tracing`](super::init_tracing))
//! appends them to each line: a JSON line gets `request_id`, `tenant_id` and `user_id`
//! members, a text line `request_id=… tenant_id=… user_id=…`.
//!
//! They are not fields of a tracing span because a span per request is created, entered,
//! formatted and closed on every request, which cost more than the rest of the layer stack
//! (see the benchmarks chapter of the book). The ids live inline in the request's future,
//! which points a thread-local at them while it is polled (two pointer writes per poll, no
//! allocation), and they are formatted only when a line is written.
//!
//! ```
//! use saas_core::{id::TenantId, observe::request};
//!
//! // Outside a request there is nothing to record to, and nothing happens.
//! request::record_tenant(TenantId::new());
//! assert!(request::current_id().is_none());
//! ```

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        LazyLock,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::HeaderValue;
use tracing_subscriber::fmt::MakeWriter;

use crate::{
    http::header_value::Inline,
    id::{RequestId, TenantId, UserId},
};

// The ids of the request being handled on this thread: set while the request's future is
// polled (and while the edge calls the layers below), not a task-local: those need the
// value owned in two places (the synchronous call and the future), which took an `Arc`,
// one allocation per request.
scoped_tls::scoped_thread_local!(static CURRENT: RequestIds);

/// `f` of the ids of the request being handled on this thread, if any.
fn with_current<R>(f: impl FnOnce(&RequestIds) -> R) -> Option<R> {
    CURRENT.is_set().then(|| CURRENT.with(f))
}

/// The ids of one request. The tenant and the user are set once: the first recorded wins.
#[derive(Debug)]
pub(crate) struct RequestIds {
    id: Id,
    // Nanoseconds after `START`: moved on when the request resumes after a long wait.
    arrival: AtomicU64,
    tenant: FirstId,
    user: FirstId,
}

/// An id that is set once (the first set wins) and read by the log writer: two atomic halves
/// behind a state. A `OnceLock` runs its initialisation protocol on every request.
#[derive(Debug, Default)]
struct FirstId {
    state: AtomicU8,
    high: AtomicU64,
    low: AtomicU64,
}

impl FirstId {
    const WRITING: u8 = 1;
    const SET: u8 = 2;

    fn set(&self, id: uuid::Uuid) {
        if self.state.compare_exchange(0, Self::WRITING, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            let (high, low) = id.as_u64_pair();
            self.high.store(high, Ordering::Relaxed);
            self.low.store(low, Ordering::Relaxed);
            self.state.store(Self::SET, Ordering::Release);
        }
    }

    fn get(&self) -> Option<uuid::Uuid> {
        (self.state.load(Ordering::Acquire) == Self::SET)
            .then(|| uuid::Uuid::from_u64_pair(self.high.load(Ordering::Relaxed), self.low.load(Ordering::Relaxed)))
    }
}

/// A request id: the client's, or a new [`RequestId`] kept inline (a header value would be
/// one more allocation per request, and cloning it another).
#[derive(Debug)]
enum Id {
    Given(HeaderValue),
    Generated(Inline<32>),
}

impl RequestIds {
    /// The ids of a request that arrived at `arrival`, whose client sent `X-Request-Id`
    /// `given`, or with a new id.
    pub(crate) fn new(given: Option<HeaderValue>, arrival: Instant) -> Self {
        let since_start = since_start(arrival);
        let id = given.map_or_else(|| Id::generate(since_start), Id::Given);
        let arrival = AtomicU64::new(since_start);
        Self { id, arrival, tenant: FirstId::default(), user: FirstId::default() }
    }

    /// The request id, as the `X-Request-Id` response header.
    pub(crate) fn header_value(&self) -> HeaderValue {
        match &self.id {
            Id::Given(value) => value.clone(),
            Id::Generated(_) => crate::http::header_value::shared(self.id.as_bytes()).expect("ids are ASCII"),
        }
    }

    /// Runs `f` (the synchronous part of handling the request) as part of this request.
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        CURRENT.set(self, f)
    }

    /// Runs `future` (the rest of handling the request) as part of this request.
    pub(crate) fn scope<F: Future>(self, future: F) -> Scoped<F> {
        Scoped { ids: self, future }
    }

    /// The request id of the request being handled on this thread, as the `X-Request-Id`
    /// response header.
    pub(crate) fn current_header_value() -> Option<HeaderValue> {
        with_current(Self::header_value)
    }
}

pin_project_lite::pin_project! {
    /// A request's future, polled as part of the request (see [`RequestIds::scope`]).
    pub(crate) struct Scoped<F> {
        ids: RequestIds,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        CURRENT.set(this.ids, || this.future.poll(cx))
    }
}

impl Id {
    /// A new id for a request that arrived `since_start` nanoseconds after [`START`].
    fn generate(since_start: u64) -> Self {
        // `RequestId`'s `Display`, written without the formatting machinery.
        let mut text = Inline::new();
        let id = new_request_id(since_start).as_uuid();
        crate::id::write_id(RequestId::PREFIX, id, |piece| text.push(piece)).expect("a request id fits");
        Self::Generated(text)
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Given(value) => value.as_bytes(),
            Self::Generated(text) => text.as_bytes(),
        }
    }
}

/// A UUIDv7 request id for a request that arrived `since_start` nanoseconds after [`START`]
/// (what the edge keeps anyway: the time is not measured again).
///
/// Not `RequestId::new()`: that reads the wall clock again and draws from a cryptographic
/// generator behind a shared counter, which shows on every request. A request id needs to
/// be unique and roughly time-ordered, not unpredictable: the arrival time (already read by
/// the edge) and 74 bits of a fast per-thread generator do.
///
/// The wall clock is read once per process and advanced by the monotonic clock, so the
/// ids' times drift from the wall clock as the monotonic clock does (a suspended machine,
/// a clock stepped after start); they order requests, nothing depends on them being exact.
fn new_request_id(since_start: u64) -> RequestId {
    let millis = START.1 + since_start / 1_000_000;
    let random: [u8; 16] = fastrand::u128(..).to_le_bytes();
    let random: &[u8; 10] = random[..10].try_into().expect("16 bytes hold 10");
    RequestId::from_uuid(uuid::Builder::from_unix_timestamp_millis(millis, random).into_uuid())
}

/// When this process started, on the monotonic clock and (in milliseconds) on the wall clock.
static START: LazyLock<(Instant, u64)> = LazyLock::new(|| {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (Instant::now(), since_epoch.as_millis() as u64)
});

fn since_start(at: Instant) -> u64 {
    at.saturating_duration_since(START.0).as_nanos() as u64
}

/// When the request the current task handles arrived (the edge read the clock then), or
/// resumed after a long wait (see [`resumed`]); `None` outside a request. For what needs
/// the time a request came in, such as the rate limiter, without reading the clock again.
pub(crate) fn arrival() -> Option<Instant> {
    with_current(|ids| START.0 + Duration::from_nanos(ids.arrival.load(Ordering::Relaxed)))
}

/// Marks the request the current task handles as arriving now: for a layer that waited
/// long before handing it on (reading a whole body), so that what follows does not take the
/// edge's time for the present.
pub(crate) fn resumed() {
    with_current(|ids| ids.arrival.store(since_start(Instant::now()), Ordering::Relaxed));
}

/// When the request the current task handles arrived, or now outside a request.
///
/// For expiry checks at the start of a request (the guards' decisions from memory), the
/// arrival is as good as the present and costs no clock read; layers that wait long before
/// the guards (reading a whole body for `Idempotency-Key`) move it on. Inside a handler,
/// or after anything that waits, read the clock.
///
/// ```
/// use saas_core::{cache::LocalCache, observe::request::arrival_or_now};
///
/// let tokens: LocalCache<String, u32> = LocalCache::new(1000, std::time::Duration::from_secs(60));
/// assert_eq!(tokens.get_at("unknown", arrival_or_now()), None);
/// ```
///
/// Outside a request scope, while the rate limiter or the guards decide a request, the
/// first call reads the clock and the others take that reading.
#[inline]
pub fn arrival_or_now() -> Instant {
    arrival().unwrap_or_else(moment_or_now)
}

/// The moment's instant, or the clock's without one.
fn moment_or_now() -> Instant {
    match MOMENT.get() {
        Moment::At(at) => at,
        Moment::Unread => {
            let now = Instant::now();
            MOMENT.set(Moment::At(now));
            now
        }
        Moment::Off => Instant::now(),
    }
}

/// The present as the checks of one synchronous call share it, where no edge read the
/// request's arrival: see [`one_moment`].
#[derive(Clone, Copy)]
enum Moment {
    Off,
    Unread,
    At(Instant),
}

thread_local! {
    static MOMENT: std::cell::Cell<Moment> = const { std::cell::Cell::new(Moment::Off) };
}

/// Makes [`arrival_or_now`] give one instant until the returned value is dropped, read
/// from the clock the first time it is asked (if it is), when the request has no edge scope:
/// the rate limiter and the guards without [`HttpStack`](crate::http::HttpStack)'s edge
/// decide from memory with up to four expiry checks a request, each of which read the
/// clock. A moment begun within another is the other's. For synchronous work only:
/// nothing that waits.
pub(crate) fn one_moment() -> OneMoment {
    let begun = !CURRENT.is_set() && matches!(MOMENT.get(), Moment::Off);
    if begun {
        MOMENT.set(Moment::Unread);
    }
    OneMoment { begun }
}

/// Ends the moment [`one_moment`] began, also when what ran in it panicked: a moment left
/// behind would be taken for the present by later calls on this thread.
pub(crate) struct OneMoment {
    begun: bool,
}

impl Drop for OneMoment {
    fn drop(&mut self) {
        if self.begun {
            MOMENT.set(Moment::Off);
        }
    }
}

/// Records the tenant of the request the current task handles, for its log lines; outside a
/// request it does nothing. A request's first recorded tenant stays.
pub fn record_tenant(tenant: TenantId) {
    with_current(|ids| ids.tenant.set(tenant.as_uuid()));
}

/// Records the signed-in user of the request the current task handles, for its log lines;
/// outside a request it does nothing. A request's first recorded user stays.
pub fn record_user(user: UserId) {
    with_current(|ids| ids.user.set(user.as_uuid()));
}

/// The `X-Request-Id` of the request the current task handles; `None` outside a request.
pub fn current_id() -> Option<HeaderValue> {
    // An owned value, not a slice of the shared buffer: the caller may keep it.
    with_current(|ids| HeaderValue::from_bytes(ids.id.as_bytes()).expect("ids are header values"))
}

/// Wraps a [`MakeWriter`] (stdout, a file) so that every line written while a request is
/// handled carries the request's ids; see the [module docs](self).
///
/// ```
/// use saas_core::observe::request::RequestIdsWriter;
///
/// tracing_subscriber::fmt().json().with_writer(RequestIdsWriter::json(std::io::stdout)).init();
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RequestIdsWriter<M> {
    make: M,
    json: bool,
}

impl<M> RequestIdsWriter<M> {
    /// For JSON lines: the ids become members of the line's object.
    pub fn json(make: M) -> Self {
        Self { make, json: true }
    }

    /// For text lines: the ids are appended as `key=value`.
    pub fn text(make: M) -> Self {
        Self { make, json: false }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RequestIdsWriter<M> {
    type Writer = LineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { inner: self.make.make_writer(), json: self.json }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        LineWriter { inner: self.make.make_writer_for(meta), json: self.json }
    }
}

/// The writer of [`RequestIdsWriter`]: one log line at a time.
#[derive(Debug)]
pub struct LineWriter<W> {
    inner: W,
    json: bool,
}

impl<W: io::Write> io::Write for LineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// The formatter hands over each line whole; it is written whole too, so lines of
    /// different threads do not interleave.
    fn write_all(&mut self, line: &[u8]) -> io::Result<()> {
        match with_current(|ids| with_ids(line, ids, self.json)) {
            Some(Some(line)) => self.inner.write_all(&line),
            _ => self.inner.write_all(line),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `line` with the ids inserted before its end: before the closing brace of a JSON object,
/// before the newline of a text line. `None` for a JSON line that is no object.
fn with_ids(line: &[u8], ids: &RequestIds, json: bool) -> Option<Vec<u8>> {
    let body_len = line.len() - line.iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
    let insert_at = match json {
        true => body_len.checked_sub(1).filter(|&last| line[last] == b'}' && line[0] == b'{')?,
        false => body_len,
    };
    let mut out = Vec::with_capacity(line.len() + 128);
    out.extend_from_slice(&line[..insert_at]);
    let id = String::from_utf8_lossy(ids.id.as_bytes());
    let fields = [
        ("request_id", Some(id.into_owned())),
        ("tenant_id", ids.tenant.get().map(|id| TenantId::from_uuid(id).to_string())),
        ("user_id", ids.user.get().map(|id| UserId::from_uuid(id).to_string())),
    ];
    let mut first = json && insert_at == 1; // `{}`: no member to follow
    for (name, value) in fields {
        let Some(value) = value else { continue };
        if json {
            out.extend_from_slice(if first { b"\"" } else { b",\"" });
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            serde_json::to_writer(&mut out, &value).ok()?;
        } else {
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
        first = false;
    }
    out.extend_from_slice(&line[insert_at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn ids(id: &str) -> RequestIds {
        RequestIds::new(Some(HeaderValue::from_str(id).unwrap()), Instant::now())
    }

    #[tokio::test]
    async fn a_request_that_resumes_after_a_wait_arrives_again() {
        let arrived = Instant::now();
        let ids = RequestIds::new(None, arrived);
        ids.scope(async move {
            assert_eq!(arrival(), Some(arrived).map(|a| a.max(START.0)));
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(arrival_or_now() < arrived + Duration::from_millis(30), "the edge's time until resumed");
            resumed();
            assert!(arrival().unwrap() >= arrived + Duration::from_millis(30));
        })
        .await;
        assert!(arrival().is_none(), "outside a request");
    }

    #[test]
    fn the_checks_of_one_call_share_one_moment_outside_a_request() {
        let later = |at: Instant| {
            std::thread::sleep(Duration::from_millis(2));
            assert!(Instant::now() > at);
        };
        let first = {
            let _moment = one_moment();
            let first = arrival_or_now();
            later(first);
            assert_eq!(arrival_or_now(), first, "the same moment");
            let _nested = one_moment();
            assert_eq!(arrival_or_now(), first, "a moment begun within shares it");
            first
        };
        assert!(arrival_or_now() > first, "the present again after the moment");
        let panicked = std::panic::catch_unwind(|| {
            let _moment = one_moment();
            panic!("{:?}", arrival_or_now())
        });
        assert!(panicked.is_err());
        let after = arrival_or_now();
        later(after);
        assert!(arrival_or_now() > after, "a panic ends the moment too");
    }

    #[test]
    fn generated_ids_are_request_ids() {
        let ids = RequestIds::new(None, Instant::now());
        let id = ids.header_value();
        let id = id.to_str().unwrap();
        assert!(id.starts_with("req_") && id.len() == 30, "{id}");
        let parsed: RequestId = id.parse().unwrap();
        assert_eq!(parsed.to_string(), id, "written as `RequestId` writes itself");
        let age = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
            - parsed.as_uuid().get_timestamp().unwrap().to_unix().0 * 1000;
        assert!(age < 60_000, "a UUIDv7 of about now: {age} ms old");
        assert_eq!(ids.header_value(), id, "the same each time");
    }

    #[tokio::test]
    async fn json_lines_of_a_request_carry_its_ids_and_others_do_not() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber =
            tracing_subscriber::fmt().json().with_writer(RequestIdsWriter::json(move || writer.clone())).finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let (tenant, user) = (TenantId::new(), UserId::new());
        let request = ids("req-\"1\"");
        request.enter(|| {
            tracing::info!("called");
            record_tenant(tenant);
        });
        request
            .scope(async {
                tracing::info!("polled");
                record_user(user);
                record_user(UserId::new()); // the first user stays
                tracing::info!("signed in");
            })
            .await;
        tracing::info!("outside");

        let text = lines.text();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0]["request_id"], "req-\"1\"");
        assert_eq!(lines[0].get("tenant_id"), None);
        assert_eq!(lines[1]["tenant_id"], tenant.to_string());
        assert_eq!(lines[1].get("user_id"), None);
        assert_eq!(lines[2]["user_id"], user.to_string());
        assert_eq!(lines[2]["fields"]["message"], "signed in");
        assert_eq!(lines[3].get("request_id"), None, "{text}");
    }

    #[tokio::test]
    async fn text_lines_end_with_the_ids() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .compact()
            .with_ansi(false)
            .with_writer(RequestIdsWriter::text(move || writer.clone()))
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let tenant = TenantId::new();
        ids("req_2")
            .scope(async {
                record_tenant(tenant);
                tracing::info!(n = 1, "hello");
            })
            .await;
        let text = lines.text();
        assert!(text.ends_with(&format!("hello n=1 request_id=req_2 tenant_id={tenant}\n")), "{text}");
    }

    #[test]
    fn odd_lines_pass_unchanged() {
        let request = ids("r");
        assert_eq!(with_ids(b"not json\n", &request, true), None);
        assert_eq!(with_ids(b"{}\n", &request, true).unwrap(), b"{\"request_id\":\"r\"}\n");
        assert_eq!(with_ids(b"", &request, false).unwrap(), b" request_id=r");
        assert_eq!(current_id(), None);
    }
}
