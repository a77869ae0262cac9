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
//! (see the benchmarks chapter of the book). A task-local costs two pointer swaps per poll,
//! and the ids are formatted only when a line is written.
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
    sync::{Arc, OnceLock},
};

use http::HeaderValue;
use tracing_subscriber::fmt::MakeWriter;

use crate::id::{RequestId, TenantId, UserId};

tokio::task_local! {
    static CURRENT: Arc<RequestIds>;
}

/// The ids of one request. The tenant and the user are set once: the first recorded wins.
#[derive(Debug)]
pub(crate) struct RequestIds {
    id: Id,
    tenant: OnceLock<TenantId>,
    user: OnceLock<UserId>,
}

/// A request id: the client's, or a new [`RequestId`] kept inline (a header value would be
/// one more allocation per request, and cloning it another).
#[derive(Debug)]
enum Id {
    Given(HeaderValue),
    Generated { text: [u8; 32], len: usize },
}

impl RequestIds {
    /// The ids of a request whose client sent `X-Request-Id` `given`, or with a new id.
    pub(crate) fn new(given: Option<HeaderValue>) -> Arc<Self> {
        let id = given.map_or_else(Id::generate, Id::Given);
        Arc::new(Self { id, tenant: OnceLock::new(), user: OnceLock::new() })
    }

    /// The request id, as the `X-Request-Id` response header.
    pub(crate) fn header_value(&self) -> HeaderValue {
        match &self.id {
            Id::Given(value) => value.clone(),
            Id::Generated { .. } => HeaderValue::from_bytes(self.id.as_bytes()).expect("ids are ASCII"),
        }
    }

    /// Runs `f` (the synchronous part of handling the request) as part of this request.
    pub(crate) fn enter<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), f)
    }

    /// Runs `future` (the rest of handling the request) as part of this request.
    pub(crate) fn scope<F: Future>(self: Arc<Self>, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }
}

impl Id {
    fn generate() -> Self {
        struct Inline([u8; 32], usize);
        impl std::fmt::Write for Inline {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                let end = self.1 + s.len();
                self.0.get_mut(self.1..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
                self.1 = end;
                Ok(())
            }
        }
        let mut inline = Inline([0; 32], 0);
        std::fmt::Write::write_fmt(&mut inline, format_args!("{}", RequestId::new())).expect("a request id fits");
        Self::Generated { text: inline.0, len: inline.1 }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Given(value) => value.as_bytes(),
            Self::Generated { text, len } => &text[..*len],
        }
    }
}

/// Records the tenant of the request the current task handles, for its log lines; outside a
/// request it does nothing. A request's first recorded tenant stays.
pub fn record_tenant(tenant: TenantId) {
    let _ = CURRENT.try_with(|ids| ids.tenant.set(tenant));
}

/// Records the signed-in user of the request the current task handles, for its log lines;
/// outside a request it does nothing. A request's first recorded user stays.
pub fn record_user(user: UserId) {
    let _ = CURRENT.try_with(|ids| ids.user.set(user));
}

/// The `X-Request-Id` of the request the current task handles; `None` outside a request.
pub fn current_id() -> Option<HeaderValue> {
    CURRENT.try_with(|ids| ids.header_value()).ok()
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
        match CURRENT.try_with(|ids| with_ids(line, ids, self.json)) {
            Ok(Some(line)) => self.inner.write_all(&line),
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
        ("tenant_id", ids.tenant.get().map(ToString::to_string)),
        ("user_id", ids.user.get().map(ToString::to_string)),
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
    use std::sync::Mutex;

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

    fn ids(id: &str) -> Arc<RequestIds> {
        RequestIds::new(Some(HeaderValue::from_str(id).unwrap()))
    }

    #[test]
    fn generated_ids_are_request_ids() {
        let ids = RequestIds::new(None);
        let id = ids.header_value();
        let id = id.to_str().unwrap();
        assert!(id.starts_with("req_") && id.len() == 30, "{id}");
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
