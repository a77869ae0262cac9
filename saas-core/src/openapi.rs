//! The OpenAPI 3.1 document and the interactive docs page.
//!
//! Every crate exposes its routes as a `utoipa_axum::router::OpenApiRouter`, where each
//! route is registered with `routes!(handler)` from the handler's `#[utoipa::path]`: the path
//! served and the path documented come from the same attribute, so they cannot drift.
//! [`serve_docs`] adds `/openapi.json` and `/docs` (Swagger UI, assets compiled in: no CDN).

use axum::Router;
use utoipa::openapi::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{FieldError, Problem};

/// The base document: title, version, and the shared `Problem` schemas.
pub fn base_document(title: &str, version: &str) -> OpenApi {
    use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApiBuilder};
    use utoipa::{PartialSchema, ToSchema};
    let components = ComponentsBuilder::new()
        .schema(Problem::name(), Problem::schema())
        .schema(FieldError::name(), FieldError::schema())
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(title)
                .version(version)
                .description(Some("Errors are `application/problem+json` (RFC 9457) bodies of the `Problem` schema.")),
        )
        .components(Some(components))
        .build()
}

/// Paths that are served but deliberately not part of the document (with what is below
/// them, e.g. the docs page's assets under `/docs/`).
pub const UNDOCUMENTED_PATHS: [&str; 2] = ["/openapi.json", "/docs"];

/// The route templates of what [`serve_docs`] serves for `api`: each documented path, and the
/// docs page's own routes. What [`HttpStack::routes`](crate::http::HttpStack::routes) labels
/// metrics with.
pub fn route_templates(api: &OpenApi) -> impl Iterator<Item = &str> {
    // As `SwaggerUi::new("/docs")` routes it: `/docs` redirects to `/docs/`, which serves
    // the page, and `/docs/{*rest}` its assets.
    const DOCS_ROUTES: [&str; 4] = ["/openapi.json", "/docs", "/docs/", "/docs/{*rest}"];
    api.paths.paths.keys().map(String::as_str).chain(DOCS_ROUTES)
}

/// Adds `GET /openapi.json` (the document) and `/docs` (Swagger UI) to `router`.
pub fn serve_docs(router: Router, api: OpenApi) -> Router {
    router.merge(SwaggerUi::new("/docs").url("/openapi.json", api))
}
