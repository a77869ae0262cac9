//! Which tenant a request acts for: [`TenantLayer`].
//!
//! The layer reads every configured source (token claim, subdomain, `X-Tenant-ID`, `/t/{tenant}`
//! path prefix), resolves what they name through the cache, and then:
//!
//! | case | answer |
//! |---|---|
//! | no source names a tenant | passes; [`TenantContext`] extractors answer 400 `tenant_required` |
//! | subdomain, header and path name different tenants | 400 `tenant_mismatch` |
//! | the access token's tenant differs from another source | 404 `tenant_not_found` (another tenant's data is never confirmed to exist) |
//! | unknown or deleted tenant | 404 `tenant_not_found` (the same answer, so existence is not revealed) |
//! | suspended tenant | 403 `tenant_suspended` |
//! | active tenant | inserts [`TenantContext`], records `tenant_id` on the request span |
//!
//! The path prefix is stripped before routing by [`strip_path_prefix`], which wraps the
//! whole router.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, Uri, header};
use saas_core::{
    config::TenantSource,
    error::Error,
    http::{
        HttpService,
        guard::{Guard, GuardService},
    },
    id::TenantId,
    tenant::TenantContext,
};
use tower::Layer;

use crate::{
    service::{Resolved, Tenants, not_found},
    tenant::{TenantRef, TenantStatus},
};

/// The tenants a request names: one slot per configured source, in the configured order
/// (`TenantLayer::new` keeps each of the four sources once).
#[derive(Default)]
struct References([Option<(TenantSource, TenantRef)>; 4]);

impl IntoIterator for References {
    type Item = (TenantSource, TenantRef);
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<(TenantSource, TenantRef)>, 4>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().flatten()
    }
}

/// The header naming the tenant, by id or slug.
pub const X_TENANT_ID: &str = "x-tenant-id";

// A `&str` name is parsed on every lookup; a constant `HeaderName` is not.
const TENANT_HEADER: header::HeaderName = header::HeaderName::from_static(X_TENANT_ID);

/// Reads the tenant id claim of an already verified access token; supplied by saas-auth.
pub trait TokenTenant: Send + Sync + 'static {
    /// The tenant the request's token belongs to, if it carries a valid token.
    fn tenant_of(&self, parts: &http::request::Parts) -> Option<TenantId>;
}

/// The tenant named by a `/t/{tenant}` prefix that [`strip_path_prefix`] removed.
#[derive(Debug, Clone)]
struct PathTenant(String);

/// Resolves the request's tenant; see the [module docs](self).
#[derive(Clone)]
pub struct TenantLayer {
    tenants: Tenants,
    sources: Arc<[TenantSource]>,
    base_domain: Option<Arc<str>>,
    token: Option<Arc<dyn TokenTenant>>,
}

impl TenantLayer {
    /// Reads `sources` in order (a source listed again is read once, where it first
    /// appears); subdomains count only under `base_domain`.
    pub fn new(tenants: Tenants, sources: &[TenantSource], base_domain: Option<&str>) -> Self {
        let mut unique = Vec::with_capacity(sources.len());
        for &source in sources {
            if !unique.contains(&source) {
                unique.push(source);
            }
        }
        Self {
            tenants,
            sources: unique.into(),
            base_domain: base_domain.map(|d| Arc::from(format!(".{}", d.trim_start_matches('.')))),
            token: None,
        }
    }

    /// Reads the token claim through `token` (the `token` source).
    pub fn with_token(mut self, token: Arc<dyn TokenTenant>) -> Self {
        self.token = Some(token);
        self
    }

    /// What each configured source names, in order.
    fn references(&self, parts: &http::request::Parts) -> Result<References, Error> {
        // On the stack: a `Vec` was an allocation on every request.
        let mut found = References::default();
        for (slot, &source) in found.0.iter_mut().zip(self.sources.iter()) {
            let reference = match source {
                TenantSource::Token => self.token.as_ref().and_then(|t| t.tenant_of(parts)).map(TenantRef::Id),
                TenantSource::Subdomain => self.subdomain(parts).map(TenantRef::parse),
                TenantSource::Header => match saas_core::http::first_header(&parts.headers, &TENANT_HEADER) {
                    None => None,
                    Some(value) => {
                        let text = value.to_str().ok().map(str::trim).filter(|t| !t.is_empty() && t.len() <= 100);
                        Some(TenantRef::parse(text.ok_or_else(|| {
                            Error::bad_request("invalid_tenant_header", "`X-Tenant-ID` must be a tenant id or slug")
                        })?))
                    }
                },
                TenantSource::Path => parts.extensions.get::<PathTenant>().map(|p| TenantRef::parse(&p.0)),
            };
            *slot = reference.map(|reference| (source, reference));
        }
        Ok(found)
    }

    /// The first label of `Host` when it is directly under the base domain.
    fn subdomain<'a>(&self, parts: &'a http::request::Parts) -> Option<&'a str> {
        let base = self.base_domain.as_deref()?;
        // HTTP/2 carries the host in `:authority` (the URI), usually without a Host header.
        let host = match saas_core::http::first_header(&parts.headers, &header::HOST) {
            Some(value) => value.to_str().ok()?,
            None => parts.uri.host()?,
        };
        let host =
            host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
        let label = host.strip_suffix(base)?;
        (!label.is_empty() && !label.contains('.')).then_some(label)
    }

    async fn resolve(&self, parts: &http::request::Parts) -> Result<Option<TenantContext>, Error> {
        let lookup = |reference: &TenantRef| {
            let (reference, tenants) = (reference.clone(), &self.tenants);
            async move { tenants.resolve_shared(&reference).await }
        };
        self.resolve_with(parts, lookup).await
    }

    /// [`resolve`](Self::resolve) from the in-process cache alone; `None` when a tenant
    /// named is not in it.
    fn resolve_cached(&self, parts: &http::request::Parts) -> Option<Result<Option<TenantContext>, Error>> {
        if let Some(tenant) = self.named_by_token_alone(parts) {
            let (status, context) = self
                .tenants
                .cached_with(&TenantRef::Id(tenant), |resolved| (resolved.tenant.status, resolved.context.clone()))?;
            return Some(answer(status, context).map(Some));
        }
        let missed = std::cell::Cell::new(false);
        let lookup = |reference: &TenantRef| {
            let found = self.tenants.cached(reference);
            missed.set(missed.get() || found.is_none());
            std::future::ready(Ok(found))
        };
        // Every lookup is ready, so one poll finishes it.
        let resolving = std::pin::pin!(self.resolve_with(parts, lookup));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match resolving.poll(&mut context) {
            std::task::Poll::Ready(resolved) if !missed.get() => Some(resolved),
            _ => None,
        }
    }

    /// The tenant of the request's access token when nothing else could name one (no
    /// `X-Tenant-ID`, no path prefix, no host under the base domain): what most API
    /// requests are, decided without comparing sources. `None` sends the request through
    /// the general resolution, which decides the same for these requests.
    fn named_by_token_alone(&self, parts: &http::request::Parts) -> Option<TenantId> {
        if !self.sources.contains(&TenantSource::Token)
            || saas_core::http::first_header(&parts.headers, &TENANT_HEADER).is_some()
            || parts.extensions.get::<PathTenant>().is_some()
            || self.subdomain(parts).is_some()
        {
            return None;
        }
        self.token.as_ref()?.tenant_of(parts)
    }

    /// Resolution with `lookup` finding each tenant named.
    async fn resolve_with<F, Fut>(
        &self,
        parts: &http::request::Parts,
        lookup: F,
    ) -> Result<Option<TenantContext>, Error>
    where
        F: Fn(&TenantRef) -> Fut,
        Fut: Future<Output = Result<Option<Resolved>, Error>>,
    {
        let references = self.references(parts)?;
        let mut resolved: Option<(TenantSource, Resolved)> = None;
        for (source, reference) in references {
            if let TenantRef::Slug(slug) = &reference {
                // Reserved names (`www`, `api`, configured ones) as subdomains are the
                // platform's own hosts.
                if source == TenantSource::Subdomain && self.tenants.slug_policy().is_reserved(slug) {
                    continue;
                }
                // What cannot be a slug names no tenant: answer without a lookup.
                if !crate::slug::could_be_slug(slug) {
                    return Err(not_found());
                }
            }
            if let Some((first, Resolved { tenant, .. })) = &resolved {
                if reference_matches(&reference, tenant) {
                    continue;
                }
                if lookup(&reference).await?.is_some_and(|t| t.tenant.id == tenant.id) {
                    continue;
                }
                // A token of one tenant naming another is an attempt to reach the other
                // tenant's data: answer as if it did not exist.
                if *first == TenantSource::Token || source == TenantSource::Token {
                    return Err(not_found());
                }
                return Err(Error::bad_request(
                    "tenant_mismatch",
                    format!("the {} and the {} name different tenants", name(*first), name(source)),
                ));
            }
            let tenant = lookup(&reference).await?.ok_or_else(not_found)?;
            resolved = Some((source, tenant));
        }
        let Some((_, Resolved { tenant, context })) = resolved else { return Ok(None) };
        // A verified token of another tenant is refused even when `token` is not a
        // configured source (it then only names no tenant by itself).
        if !self.sources.contains(&TenantSource::Token) {
            if let Some(claimed) = self.token.as_ref().and_then(|t| t.tenant_of(parts)) {
                if claimed != tenant.id {
                    return Err(not_found());
                }
            }
        }
        answer(tenant.status, context).map(Some)
    }
}

/// The request's tenant as its status lets it through, or the refusal.
fn answer(status: TenantStatus, context: TenantContext) -> Result<TenantContext, Error> {
    match status {
        TenantStatus::Active => Ok(context),
        TenantStatus::Deleted => Err(not_found()),
        TenantStatus::Suspended => Err(Error::forbidden("tenant_suspended", "this tenant is suspended")),
    }
}

fn reference_matches(reference: &TenantRef, tenant: &crate::Tenant) -> bool {
    match reference {
        TenantRef::Id(id) => *id == tenant.id,
        TenantRef::Slug(slug) => *slug == tenant.slug,
    }
}

fn name(source: TenantSource) -> &'static str {
    match source {
        TenantSource::Token => "access token",
        TenantSource::Subdomain => "subdomain",
        TenantSource::Header => "X-Tenant-ID header",
        TenantSource::Path => "path prefix",
    }
}

impl Guard for TenantLayer {
    async fn check(&self, parts: &mut http::request::Parts) -> Result<(), Error> {
        let resolved = self.resolve(parts).await?;
        admit(parts, resolved);
        Ok(())
    }

    /// Decides here when every tenant the request names is in the in-process cache.
    fn check_now(&self, parts: &mut http::request::Parts) -> Option<Result<(), Error>> {
        Some(self.resolve_cached(parts)?.map(|resolved| admit(parts, resolved)))
    }
}

/// Hands the resolved tenant, if any, to the handlers and the log lines.
fn admit(parts: &mut http::request::Parts, resolved: Option<TenantContext>) {
    if let Some(context) = resolved {
        saas_core::observe::request::record_tenant(context.id);
        parts.extensions.insert(context);
    }
}

impl<S> Layer<S> for TenantLayer {
    type Service = GuardService<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(self.clone(), inner)
    }
}

/// `app` (a router behind [`HttpStack`](saas_core::http::HttpStack), or any service of
/// axum requests) with `/t/{tenant}/…` also reachable: the prefix is removed before routing
/// and its tenant handed to [`TenantLayer`] (the `path` source).
///
/// The result is a service, not a `Router`: a router whose fallback is the stripped router
/// would route every request twice (about 2,250 instructions more a request, see the
/// benchmarks chapter of the book). Serve it as it is, with the peer address the rate
/// limiter keys by:
///
/// ```no_run
/// use axum::{Router, ServiceExt as _, routing::get};
/// use saas_core::http::HttpStack;
///
/// # async fn run() -> std::io::Result<()> {
/// let routes = Router::new().route("/v1/hello", get(|| async { "hi" }));
/// let app = saas_tenancy::strip_path_prefix(HttpStack::new().routes(["/v1/hello"]).apply(routes));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
/// # }
/// ```
pub fn strip_path_prefix<S>(app: S) -> PathPrefixStripped<S> {
    PathPrefixStripped::new(app, strip)
}

/// What [`strip_path_prefix`] makes of a service: a `tower` service of axum requests.
pub type PathPrefixStripped<S = HttpService> = tower::util::MapRequest<S, fn(Request<Body>) -> Request<Body>>;

fn strip(mut req: Request<Body>) -> Request<Body> {
    let Some(rest) = req.uri().path().strip_prefix("/t/") else { return req };
    let (tenant, path) = rest.split_once('/').map_or((rest, ""), |(t, p)| (t, p));
    if tenant.is_empty() {
        return req;
    }
    let (tenant, path) = (tenant.to_owned(), format!("/{path}"));
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut uri = req.uri().clone().into_parts();
    match path_and_query.parse() {
        Ok(pq) => uri.path_and_query = Some(pq),
        Err(_) => return req,
    }
    if let Ok(uri) = Uri::from_parts(uri) {
        let original = std::mem::replace(req.uri_mut(), uri);
        // Layers that key on the path (Idempotency-Key) see the tenant through this.
        req.extensions_mut().insert(axum::extract::OriginalUri(original));
        req.extensions_mut().insert(PathTenant(tenant));
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_prefix_is_stripped_with_the_query_kept() {
        let req = strip(Request::get("/t/acme/v1/tenant?x=1").body(Body::empty()).unwrap());
        assert_eq!(req.uri(), "/v1/tenant?x=1");
        assert_eq!(req.extensions().get::<PathTenant>().unwrap().0, "acme");
        assert_eq!(req.extensions().get::<axum::extract::OriginalUri>().unwrap().0, "/t/acme/v1/tenant?x=1");
        let req = strip(Request::get("/v1/tenant").body(Body::empty()).unwrap());
        assert_eq!(req.uri(), "/v1/tenant");
        assert!(req.extensions().get::<PathTenant>().is_none());
    }
}
