//! Integration tests of saas-core: one binary, one module per area.

mod events;
mod http_stack;
mod idempotency;
mod rate_limit;
mod tenant_tx;

use axum::body::Body;
use http::{Request, Response};
use http_body_util::BodyExt;

/// Reads a response into status, headers and body bytes.
pub async fn read(response: Response<Body>) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

/// A JSON POST.
pub fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri).header("content-type", "application/json").body(Body::from(body.to_owned())).unwrap()
}

/// Log output kept in memory, for a `tracing_subscriber` writer: clone it into the
/// subscriber and read [`text`](Self::text) after.
#[derive(Clone, Default)]
pub struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Lines {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
