//! `Idempotency-Key`: a retried write returns the first response instead of acting twice.
//!
//! For `POST`, `PUT`, `PATCH` and `DELETE` requests carrying `Idempotency-Key` (1–255
//! printable ASCII characters), the first request runs and its response (status, headers,
//! body) is stored in the [`Cache`] for the configured time. Then:
//! - the same key and body again → the stored response, byte for byte, with
//!   `Idempotent-Replayed: true`;
//! - the same key while the first is still running → 409 `idempotency_key_in_use`;
//! - the same key with a different body → 422 `idempotency_key_reused`;
//! - a first response of 5xx or 429 is not stored, so the client may retry.
//!
//! Keys are scoped by the caller's `Authorization`, `X-Tenant-ID` and `Host` headers, the
//! method and the path, so one client can never replay another's response. A response
//! that cannot be stored (larger than 1 MiB, or the cache is down) is still returned; the
//! key is released or expires after a minute.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use futures::future::{BoxFuture, Either};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

use crate::{cache::Cache, error::Error, http::extract::payload_too_large};

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a replayed response.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long an in-flight marker lives if the server dies mid-request.
const IN_FLIGHT_TTL: Duration = Duration::from_secs(60);
/// Responses larger than this are not stored (the key is released instead).
const MAX_STORED_BODY: usize = 1024 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    InFlight { fingerprint: String },
    Done { fingerprint: String, status: u16, headers: Vec<(String, String)>, body: String },
}

/// Which requests [`IdempotencyLayer::skip`] leaves alone.
type SkipRule = dyn Fn(&Request) -> bool + Send + Sync;

/// Stores first responses of keyed writes; see the [module docs](self).
#[derive(Clone)]
pub struct IdempotencyLayer {
    cache: Arc<dyn Cache>,
    ttl: Duration,
    body_limit: usize,
    skip: Option<Arc<SkipRule>>,
    fingerprint_key: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer").field("ttl", &self.ttl).field("body_limit", &self.body_limit).finish()
    }
}

impl IdempotencyLayer {
    /// Stores responses in `cache` for `ttl`. Request bodies up to 1 MiB are fingerprinted;
    /// put the body limit layer outside this one.
    pub fn new(cache: Arc<dyn Cache>, ttl: Duration) -> Self {
        Self { cache, ttl, body_limit: 1024 * 1024, skip: None, fingerprint_key: None }
    }

    /// Leaves requests for which `skip` is true alone (e.g. logins: their responses hold
    /// tokens that must not sit in a cache).
    pub fn skip(mut self, skip: impl Fn(&Request) -> bool + Send + Sync + 'static) -> Self {
        self.skip = Some(Arc::new(skip));
        self
    }

    /// Fingerprints request bodies with HMAC-SHA-256 under `key` instead of plain SHA-256,
    /// so a body holding a secret (a password at sign-up) is not stored in a form that can
    /// be brute-forced offline. Servers sharing a cache must share the key.
    pub fn with_fingerprint_key(mut self, key: &[u8]) -> Self {
        self.fingerprint_key = Some(key.into());
        self
    }

    /// Sets the largest request body it reads.
    pub fn with_body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Idempotency<S> {
        Idempotency::optional(Some(self.clone()), inner)
    }
}

/// The service of [`IdempotencyLayer`].
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    // One reference count to touch when the service is cloned for a request; `None` in a
    // stack without the layer (see `optional`).
    layer: Option<Arc<IdempotencyLayer>>,
}

impl<S> Idempotency<S> {
    /// `inner` behind `layer`, or passed through without one: how
    /// [`HttpStack`](super::HttpStack) leaves the layer out (see `Stacked` there).
    pub(crate) fn optional(layer: Option<IdempotencyLayer>, inner: S) -> Self {
        Self { inner, layer: layer.map(Arc::new) }
    }
}

impl<S> Service<Request> for Idempotency<S>
where
    S: Service<Request, Response = Response, Error = std::convert::Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    /// Requests without a key get the inner service's future as it is, unboxed.
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Some(layer) = &self.layer else { return Either::Left(self.inner.call(req)) };
        let writes = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
        let key = writes.then(|| req.headers().get(&IDEMPOTENCY_KEY)).flatten();
        let skipped = || layer.skip.as_ref().is_some_and(|skip| skip(&req));
        let Some(key) = key.filter(|_| !skipped()).cloned() else {
            // Most requests: no key, nothing to do.
            return Either::Left(self.inner.call(req));
        };
        let layer = layer.clone();
        let mut inner = crate::http::take_ready(&mut self.inner);
        Either::Right(Box::pin(async move {
            Ok(match handle(&layer, key, req, &mut inner).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            })
        }))
    }
}

async fn handle<S>(layer: &IdempotencyLayer, key: HeaderValue, req: Request, inner: &mut S) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    let key = key
        .to_str()
        .ok()
        .filter(|k| super::is_visible_ascii(k.as_bytes(), 255))
        .ok_or_else(|| {
            Error::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable ASCII characters")
        })?
        .to_owned();
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, layer.body_limit)
        .collect()
        .await
        .map_err(|_| payload_too_large())?
        .to_bytes();

    let mut scope = Sha256::new();
    for header in [http::header::AUTHORIZATION, HeaderName::from_static("x-tenant-id"), http::header::HOST] {
        scope.update(parts.headers.get(&header).map(|v| v.as_bytes()).unwrap_or_default());
        scope.update([0]);
    }
    scope.update(parts.method.as_str());
    scope.update([0]);
    // The path as the client sent it: a layer that rewrote it (e.g. removing a `/t/{tenant}`
    // prefix) keeps the original in `OriginalUri`, and the tenant in it must count.
    let original = parts.extensions.get::<axum::extract::OriginalUri>().map(|o| &o.0);
    scope.update(original.unwrap_or(&parts.uri).path());
    scope.update([0]);
    scope.update(key.as_bytes());
    let cache_key = format!("idempotency:{}", hex::encode(scope.finalize()));
    let fingerprint = match &layer.fingerprint_key {
        Some(secret) => hex::encode(hmac_sha256(secret, &body)),
        None => hex::encode(Sha256::digest(&body)),
    };

    let marker = serde_json::to_vec(&Record::InFlight { fingerprint: fingerprint.clone() }).map_err(Error::internal)?;
    if !layer.cache.set_if_absent(&cache_key, &marker, IN_FLIGHT_TTL).await? {
        let stored = layer.cache.get(&cache_key).await?;
        let reused = || {
            Error::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            )
        };
        return match stored.and_then(|b| serde_json::from_slice::<Record>(&b).ok()) {
            Some(Record::Done { fingerprint: f, status, headers, body }) if f == fingerprint => {
                replay(status, headers, &body)
            }
            Some(Record::Done { .. }) => Err(reused()),
            Some(Record::InFlight { fingerprint: f }) if f != fingerprint => Err(reused()),
            // Still running (or it finished and expired between the two reads).
            _ => Err(Error::conflict(
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry later",
            )
            .with_retry_after(Duration::from_secs(1))),
        };
    }

    // The body and the cache took their time: what follows must not take the edge's.
    crate::observe::request::resumed();
    let response = match inner.call(Request::from_parts(parts, Body::from(body))).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        release(layer, &cache_key).await;
        return Ok(response);
    }
    let fits = http_body::Body::size_hint(response.body()).upper().is_some_and(|n| n <= MAX_STORED_BODY as u64);
    if !fits {
        release(layer, &cache_key).await;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            release(layer, &cache_key).await;
            return Err(Error::internal(anyhow::anyhow!("reading the response body: {e}")));
        }
    };
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| !n.as_str().starts_with("ratelimit") && *n != http::header::DATE)
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let record = Record::Done { fingerprint, status: status.as_u16(), headers, body: STANDARD.encode(&bytes) };
    let stored = match serde_json::to_vec(&record) {
        Ok(json) => layer.cache.set(&cache_key, &json, layer.ttl).await,
        Err(e) => Err(Error::internal(e)),
    };
    if let Err(e) = stored {
        // The work is done: answer it. A retry within a minute gets 409, then runs again.
        tracing::warn!(error = %e, "could not store the response for Idempotency-Key");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Frees a key whose response will not be stored, so a retry runs again.
async fn release(layer: &IdempotencyLayer, cache_key: &str) {
    if let Err(e) = layer.cache.delete(cache_key).await {
        tracing::warn!(error = %e, "could not release an Idempotency-Key; it expires in a minute");
    }
}

fn replay(status: u16, headers: Vec<(String, String)>, body: &str) -> Result<Response, Error> {
    let body = STANDARD.decode(body).map_err(Error::internal)?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).map_err(Error::internal)?;
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().append(n, v);
        }
    }
    response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    Ok(response)
}

/// HMAC-SHA-256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod hmac_tests {
    #[test]
    fn matches_rfc_4231_test_case_2() {
        let mac = super::hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
