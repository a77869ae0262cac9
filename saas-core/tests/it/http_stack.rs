//! Every kind of bad request answers problem+json with the right status and code.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    routing::{get, post},
};
use axum_extra::headers::UserAgent;
use futures::stream;
use http::{Request, StatusCode};
use saas_core::http::{HttpService, HttpStack, Json, Path, Query, TypedHeader};
use serde::Deserialize;
use tower::ServiceExt;

use crate::{Lines, post_json, read};

#[derive(Deserialize)]
#[allow(dead_code)]
struct NewItem {
    name: String,
    quantity: u32,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Search {
    limit: u32,
}

fn app() -> HttpService {
    let routes = Router::new()
        .route("/v1/items", post(|Json(item): Json<NewItem>| async move { (StatusCode::CREATED, item.name) }))
        .route("/v1/items/{id}", get(|Path(id): Path<u32>| async move { id.to_string() }))
        .route("/v1/search", get(|Query(q): Query<Search>| async move { q.limit.to_string() }))
        .route("/v1/agent", get(|TypedHeader(ua): TypedHeader<UserAgent>| async move { ua.to_string() }))
        .route(
            "/v1/panic",
            get(|| async {
                if true {
                    panic!("secret panic detail")
                }
                "unreachable"
            }),
        )
        .route(
            "/v1/sleepy",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    HttpStack::new().body_limit(1024).timeout(Duration::from_millis(200)).apply(routes)
}

async fn expect_problem(req: Request<Body>, status: u16, code: &str) -> serde_json::Value {
    let label = format!("{} {}", req.method(), req.uri());
    let (got, headers, body) = read(app().oneshot(req).await.unwrap()).await;
    assert_eq!(got.as_u16(), status, "{label}: {}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/problem+json", "{label}");
    assert!(headers.contains_key("x-request-id"), "{label}: request id echoed");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{label}: JSON body"));
    assert_eq!(json["status"], status, "{label}");
    assert_eq!(json["code"], code, "{label}");
    assert_eq!(json["type"], format!("/problems/{code}"), "{label}");
    assert!(json["title"].is_string() && json["detail"].is_string(), "{label}");
    json
}

#[tokio::test]
async fn malformed_and_mistyped_json() {
    expect_problem(post_json("/v1/items", r#"{"name": "a", "#), 400, "malformed_json").await;
    let json =
        expect_problem(post_json("/v1/items", r#"{"name": "a", "quantity": -1}"#), 422, "validation_failed").await;
    assert_eq!(json["errors"][0]["field"], "quantity");
    let json = expect_problem(post_json("/v1/items", r#"{"name": "a"}"#), 422, "validation_failed").await;
    assert_eq!(json["errors"][0]["field"], "quantity");
    assert_eq!(json["errors"][0]["code"], "required");
}

#[tokio::test]
async fn wrong_or_missing_content_type() {
    let req = Request::post("/v1/items").header("content-type", "text/plain").body(Body::from("{}")).unwrap();
    expect_problem(req, 415, "unsupported_media_type").await;
    let req = Request::post("/v1/items").body(Body::from(r#"{"name":"a","quantity":1}"#)).unwrap();
    expect_problem(req, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn oversized_bodies_with_and_without_length() {
    let big = format!(r#"{{"name": "{}", "quantity": 1}}"#, "x".repeat(4096));
    expect_problem(post_json("/v1/items", &big), 413, "payload_too_large").await;
    let chunks: Vec<Result<String, std::io::Error>> = (0..8).map(|_| Ok("x".repeat(512))).collect();
    let req = Request::post("/v1/items")
        .header("content-type", "application/json")
        .body(Body::from_stream(stream::iter(chunks)))
        .unwrap();
    expect_problem(req, 413, "payload_too_large").await;
}

/// axum's extractors stop at 2 MiB by themselves: a larger stack limit must reach them, for
/// bodies of known and of unknown length, and still hold above it.
#[tokio::test]
async fn a_limit_above_the_extractors_default_is_theirs_too() {
    let mib = 1024 * 1024;
    let routes =
        Router::new().route("/v1/items", post(|Json(item): Json<NewItem>| async move { item.name.len().to_string() }));
    let app = HttpStack::new().body_limit(3 * mib).apply(routes);
    let body = |name_len: usize| format!(r#"{{"name": "{}", "quantity": 1}}"#, "x".repeat(name_len));
    let streamed = |text: String| {
        let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(text)];
        Request::post("/v1/items")
            .header("content-type", "application/json")
            .body(Body::from_stream(stream::iter(chunks)))
            .unwrap()
    };
    for req in [post_json("/v1/items", &body(2 * mib + 10)), streamed(body(2 * mib + 10))] {
        let (status, _, answer) = read(app.clone().oneshot(req).await.unwrap()).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer[..answer.len().min(300)]));
        assert_eq!(answer, (2 * mib + 10).to_string());
    }
    for req in [post_json("/v1/items", &body(3 * mib)), streamed(body(3 * mib))] {
        let (status, _, _) = read(app.clone().oneshot(req).await.unwrap()).await;
        assert_eq!(status, 413);
    }
}

#[tokio::test]
async fn unknown_route_wrong_method_and_version() {
    expect_problem(Request::get("/v1/nothing-here").body(Body::empty()).unwrap(), 404, "route_not_found").await;
    expect_problem(Request::get("/v9/items").body(Body::empty()).unwrap(), 404, "unsupported_api_version").await;
    let req = Request::delete("/v1/items").body(Body::empty()).unwrap();
    let (status, headers, _) = read(app().oneshot(req).await.unwrap()).await;
    assert_eq!(status, 405);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["allow"], "POST");
}

#[tokio::test]
async fn bad_path_query_and_header() {
    expect_problem(Request::get("/v1/items/abc").body(Body::empty()).unwrap(), 400, "invalid_path_parameter").await;
    expect_problem(Request::get("/v1/search?limit=many").body(Body::empty()).unwrap(), 400, "invalid_query").await;
    expect_problem(Request::get("/v1/search").body(Body::empty()).unwrap(), 400, "invalid_query").await;
    expect_problem(Request::get("/v1/agent").body(Body::empty()).unwrap(), 400, "missing_header").await;
}

#[tokio::test]
async fn panics_and_timeouts_leak_nothing() {
    let json = expect_problem(Request::get("/v1/panic").body(Body::empty()).unwrap(), 500, "internal_error").await;
    assert!(!json.to_string().contains("secret panic detail"));
    expect_problem(Request::get("/v1/sleepy").body(Body::empty()).unwrap(), 408, "request_timeout").await;
}

#[tokio::test]
async fn answers_of_the_edge_carry_the_version_too() {
    /// A guard that panics while the request is dispatched, before any handler runs.
    #[derive(Clone)]
    struct Panics;
    impl saas_core::http::guard::Guard for Panics {
        async fn check(&self, _: &mut http::request::Parts) -> Result<(), saas_core::Error> {
            panic!("guard panicked")
        }
    }
    let panicking = HttpStack::new().guard(Panics).apply(Router::new().route("/v1/x", get(|| async { "x" })));
    let cases = [(app(), "/v1/sleepy", 408), (app(), "/v1/panic", 500), (panicking, "/v1/x", 500)];
    for (app, uri, status) in cases {
        let (got, headers, _) = read(app.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap()).await;
        assert_eq!((got.as_u16(), headers["api-version"].to_str().unwrap()), (status, "v1"), "{uri}");
    }
}

#[tokio::test]
async fn good_requests_pass_and_carry_the_version() {
    let (status, headers, body) =
        read(app().oneshot(post_json("/v1/items", r#"{"name":"a","quantity":2}"#)).await.unwrap()).await;
    assert_eq!(status, 201);
    assert_eq!(&body[..], b"a");
    assert_eq!(headers["api-version"], "v1");
    let req = Request::get("/v1/items/7").header("x-request-id", "req_from_client").body(Body::empty()).unwrap();
    let (_, headers, _) = read(app().oneshot(req).await.unwrap()).await;
    assert_eq!(headers["x-request-id"], "req_from_client", "a client's request id is kept");
    for unusable in ["x".repeat(129), "with space".into()] {
        let req = Request::get("/v1/items/7").header("x-request-id", &unusable).body(Body::empty()).unwrap();
        let (_, headers, _) = read(app().oneshot(req).await.unwrap()).await;
        let id = headers["x-request-id"].to_str().unwrap();
        assert!(id.starts_with("req_") && id.len() == 30, "{unusable:?} replaced by a new id, not {id}");
    }
}

/// Credentials reach handlers marked sensitive, every value of a repeated header too, so
/// that a handler logging the headers with `Debug` does not write them.
#[tokio::test]
async fn credentials_reach_handlers_marked_sensitive() {
    let routes = Router::new().route(
        "/v1/headers",
        get(|headers: http::HeaderMap| async move {
            let sensitive = |name| headers.get_all(name).iter().map(|v: &http::HeaderValue| v.is_sensitive()).collect();
            let flags: Vec<Vec<bool>> = vec![sensitive("authorization"), sensitive("cookie"), sensitive("accept")];
            format!("{flags:?} {headers:?}")
        }),
    );
    let req = Request::get("/v1/headers")
        .header("accept", "application/json")
        .header("cookie", "session=first-secret")
        .header("authorization", "Bearer token-secret")
        .header("cookie", "theme=second-secret")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = read(HttpStack::new().apply(routes).oneshot(req).await.unwrap()).await;
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("[[true], [true, true], [false]] "), "{body}");
    assert!(!body.contains("secret"), "no credential in the Debug output: {body}");
    assert!(body.contains("application/json"), "other values as they are: {body}");
}

/// The first `X-Request-Id` decides: kept when acceptable, replaced by a new id when not,
/// whatever the values after it.
#[tokio::test]
async fn the_first_request_id_header_decides() {
    let cases = [(["req_first", "req_second"], Some("req_first")), (["with space", "req_second"], None)];
    for (values, kept) in cases {
        let req = Request::get("/v1/items/7")
            .header("x-request-id", values[0])
            .header("x-request-id", values[1])
            .body(Body::empty())
            .unwrap();
        let (_, headers, _) = read(app().oneshot(req).await.unwrap()).await;
        let id = headers["x-request-id"].to_str().unwrap();
        match kept {
            Some(kept) => assert_eq!(id, kept),
            None => assert!(id.starts_with("req_") && id.len() == 30, "{values:?}: a new id, not {id}"),
        }
    }
}

/// A stack without the optional layers passes requests through them untouched: no
/// `RateLimit` header, and a repeated `Idempotency-Key` runs the handler again.
#[tokio::test]
async fn layers_left_out_of_the_stack_do_nothing() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let routes = Router::new().route(
        "/v1/orders",
        post(move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move { (StatusCode::CREATED, n.to_string()) }
        }),
    );
    let app = HttpStack::new().routes(["/v1/orders"]).apply(routes);
    for expected in ["1", "2"] {
        let req = Request::post("/v1/orders").header("idempotency-key", "same-key").body(Body::empty()).unwrap();
        let (status, headers, body) = read(app.clone().oneshot(req).await.unwrap()).await;
        assert_eq!((status.as_u16(), &body[..]), (201, expected.as_bytes()), "the handler ran again");
        assert!(!headers.contains_key("ratelimit"), "no limiter, no RateLimit header: {headers:?}");
        assert_eq!(headers["api-version"], "v1", "the edge still answers");
    }
}

/// Log lines written while a request is handled, by guards before the handler and by the
/// handler itself, carry its request id and its tenant.
#[tokio::test]
async fn log_lines_of_a_request_carry_its_ids() {
    use saas_core::{
        id::TenantId,
        observe::request::{RequestIdsWriter, record_tenant},
    };

    /// A guard that finishes at once, so it runs inside the stack's `call`.
    #[derive(Clone)]
    struct Resolve(TenantId);
    impl saas_core::http::guard::Guard for Resolve {
        async fn check(&self, _: &mut http::request::Parts) -> Result<(), saas_core::Error> {
            tracing::info!("resolving");
            record_tenant(self.0);
            Ok(())
        }
    }
    impl<S> tower::Layer<S> for Resolve {
        type Service = saas_core::http::guard::GuardService<Self, S>;
        fn layer(&self, inner: S) -> Self::Service {
            saas_core::http::guard::GuardService::new(self.clone(), inner)
        }
    }

    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber =
        tracing_subscriber::fmt().json().with_writer(RequestIdsWriter::json(move || writer.clone())).finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let tenant = TenantId::new();
    let routes = Router::new()
        .route(
            "/v1/logged",
            get(|| async {
                tokio::task::yield_now().await;
                tracing::info!("handled");
                "ok"
            }),
        )
        .layer(Resolve(tenant));
    let app = HttpStack::new().routes(["/v1/logged"]).apply(routes);
    let (status, headers, _) =
        read(app.oneshot(Request::get("/v1/logged").body(Body::empty()).unwrap()).await.unwrap()).await;
    assert_eq!(status, 200);
    tracing::info!("after the request");

    let text = lines.text();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let messages: Vec<&str> = lines.iter().map(|l| l["fields"]["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["resolving", "handled", "after the request"], "{text}");
    let request_id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(lines[0]["request_id"], request_id, "{text}");
    assert_eq!(lines[0].get("tenant_id"), None, "not known yet when the line was written");
    assert_eq!(lines[1]["request_id"], request_id);
    assert_eq!(lines[1]["tenant_id"], tenant.to_string());
    assert_eq!(lines[2].get("request_id"), None, "outside the request");
}

/// A 503 that declines work on purpose (`Retry-After`, no cause) is not logged as a failure,
/// so that a flood of them does not flood the log; a 503 for a dependency that is down
/// (with its cause) and a 500 are.
#[tokio::test]
async fn shed_requests_are_not_logged_as_failures() {
    use saas_core::{Error, observe::request::RequestIdsWriter};

    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(RequestIdsWriter::json(move || writer.clone()))
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let busy = || Error::unavailable("auth_busy", "too many sign-ins at once").with_retry_after(Duration::from_secs(1));
    let routes = Router::new()
        .route("/v1/busy", get(move || async move { Err::<(), _>(busy()) }))
        .route(
            "/v1/down",
            get(|| async {
                Err::<(), _>(
                    Error::unavailable("database_unavailable", "the database is not reachable")
                        .with_retry_after(Duration::from_secs(1))
                        .with_source(anyhow::anyhow!("pool timed out")),
                )
            }),
        )
        .route("/v1/broken", get(|| async { Err::<(), _>(Error::internal(anyhow::anyhow!("a bug"))) }));
    let app = HttpStack::new().routes(["/v1/busy", "/v1/down", "/v1/broken"]).apply(routes);
    let mut logged = Vec::new();
    for (uri, status) in [("/v1/busy", 503), ("/v1/down", 503), ("/v1/broken", 500)] {
        let before = lines.text().lines().count();
        let (got, headers, _) =
            read(app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap()).await;
        assert_eq!(got, status, "{uri}");
        assert_eq!(headers.contains_key("retry-after"), status == 503, "{uri}");
        logged.push(lines.text().lines().count() - before);
    }
    assert!(busy().is_shed());
    let text = lines.text();
    assert_eq!(logged, [0, 2, 2], "shed: nothing; failures: the error's cause and the edge's line\n{text}");
    assert!(!text.contains("/v1/busy"), "{text}");
    assert!(text.contains("pool timed out") && text.contains("a bug"), "{text}");
}

#[tokio::test]
async fn metrics_label_requests_with_the_route_template_they_match() {
    use axum::response::IntoResponse;
    let routes =
        Router::new().route("/v1/labelled/{id}", get(|Path(id): Path<u32>| async move { id.to_string() })).route(
            "/v1/unlabelled",
            get(|| async { (StatusCode::NON_AUTHORITATIVE_INFORMATION, "not given to `routes`") }),
        );
    let app = HttpStack::new().routes(["/v1/labelled/{id}", "/v1/other"]).apply(routes);
    for (uri, status) in [
        ("/v1/labelled/1", 200),
        ("/v1/labelled/2", 200),
        ("/v1/labelled/x", 400),
        ("/v1/labelled/1/more", 404),
        ("/v1/unlabelled", 203),
    ] {
        let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), status, "{uri}");
    }
    let (_, _, text) = read(saas_core::observe::metrics::render().await.into_response()).await;
    let text = String::from_utf8(text.to_vec()).unwrap();
    for line in [
        r#"http_requests_total{method="GET",route="/v1/labelled/{id}",status="200"} 2"#,
        r#"http_requests_total{method="GET",route="/v1/labelled/{id}",status="400"} 1"#,
        r#"http_request_duration_seconds_count{method="GET",route="/v1/labelled/{id}"} 3"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    // Raw paths never become labels: what no template matches is `unmatched`.
    assert!(!text.contains("/v1/labelled/1") && !text.contains("/v1/unlabelled"), "{text}");
    assert!(text.contains(r#"http_requests_total{method="GET",route="unmatched",status="203"} 1"#), "{text}");
    assert!(!text.contains("/v1/other"), "a template no request matched has no series");
}
