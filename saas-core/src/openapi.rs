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

/// Where [`serve_docs`] serves the document.
const DOCUMENT_PATH: &str = "/openapi.json";
/// Where [`serve_docs`] serves the docs page.
const DOCS_PAGE_PATH: &str = "/docs";

/// Paths that are served but deliberately not part of the document (with what is below
/// them, e.g. the docs page's assets under `/docs/`).
pub const UNDOCUMENTED_PATHS: [&str; 2] = [DOCUMENT_PATH, DOCS_PAGE_PATH];

/// The routes of what [`serve_docs`] adds, as `SwaggerUi` routes the docs page: `/docs`
/// redirects to `/docs/`, which serves the page, and `/docs/{*rest}` its assets.
const DOCS_ROUTES: [&str; 4] = [DOCUMENT_PATH, DOCS_PAGE_PATH, "/docs/", "/docs/{*rest}"];

/// The route templates of what [`serve_docs`] serves for `api`: each documented path, and the
/// docs page's own routes. What [`HttpStack::routes`](crate::http::HttpStack::routes) labels
/// metrics with.
pub fn route_templates(api: &OpenApi) -> impl Iterator<Item = &str> {
    // utoipa-axum routes a path documented as "" (the root of a nested router) at "/".
    let paths = api.paths.paths.keys().map(|path| if path.is_empty() { "/" } else { path.as_str() });
    paths.chain(DOCS_ROUTES)
}

/// Adds `GET /openapi.json` (the document) and `/docs` (Swagger UI) to `router`.
pub fn serve_docs(router: Router, api: OpenApi) -> Router {
    router.merge(SwaggerUi::new(DOCS_PAGE_PATH).url(DOCUMENT_PATH, api))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn the_docs_routes_are_what_serve_docs_serves() {
        let app = serve_docs(Router::new(), base_document("test", "1"));
        let templates = crate::observe::metrics::RouteTemplates::new(DOCS_ROUTES);
        for (path, template) in [("/openapi.json", 0), ("/docs", 1), ("/docs/", 2), ("/docs/swagger-ui.css", 3)] {
            let response = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
            let served = response.status().is_success() || response.status().is_redirection();
            assert!(served, "{path}: {}", response.status());
            assert_eq!(templates.find(path), Some(DOCS_ROUTES[template]), "{path}");
        }
    }

    #[test]
    fn a_nested_root_is_labelled_as_routed() {
        let mut api = base_document("test", "1");
        api.paths.paths.insert(String::new(), Default::default());
        assert!(route_templates(&api).any(|t| t == "/"));
    }
}
