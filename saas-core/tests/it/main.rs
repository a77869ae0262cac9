//! Integration tests of saas-core: one binary, one module per area.

mod events;
mod http_stack;
mod idempotency;
mod lines;
mod pool;
mod rate_limit;
mod tenant_tx;

use axum::body::Body;
use http::{Request, Response};
use http_body_util::BodyExt;
pub(crate) use lines::Lines;

/// Reads a response into status, headers and body bytes.
pub async fn read(response: Response<Body>) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

/// A JSON POST.
pub fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri).header("content-type", "application/json").body(Body::from(body.to_owned())).unwrap()
}
