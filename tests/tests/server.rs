//! End to end: the all-in-one server on a random port, as a client sees it.

use std::{net::SocketAddr, time::Duration};

use saas_core::config::Config;
use saas_server::App;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

struct Running {
    url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn embedded_config(dir: &tempfile::TempDir) -> Config {
    let mut config = Config { data_dir: dir.path().to_owned(), ..Default::default() };
    config.server.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config
}

async fn start(config: Config, dir: tempfile::TempDir) -> Running {
    let listener = tokio::net::TcpListener::bind(config.server.addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = App::build(config).await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.serve(listener, stop.clone()));
    Running { url, stop, task, _dir: dir }
}

async fn start_embedded() -> Running {
    let dir = tempfile::tempdir().unwrap();
    start(embedded_config(&dir), dir).await
}

fn substitute_params(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "ten_01h455vb4pex5vsknk084sn02q" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_documented_route_is_served_and_the_document_is_committed() {
    let server = start_embedded().await;
    let client = reqwest::Client::new();
    let doc: serde_json::Value =
        client.get(format!("{}/openapi.json", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    let paths = doc["paths"].as_object().unwrap();
    for required in ["/health/live", "/health/ready", "/metrics"] {
        assert!(paths.contains_key(required), "{required} is documented");
    }
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = client
                .request(method.clone(), format!("{}{}", server.url, substitute_params(path)))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                status != 405 && !body.contains("route_not_found"),
                "{method} {path} is documented but not served ({status}: {body})"
            );
        }
    }
    for path in saas_core::openapi::UNDOCUMENTED_PATHS {
        let response = client.get(format!("{}{path}", server.url)).send().await.unwrap();
        assert!(response.status().is_success(), "{path} is served");
    }

    // The other direction: every route that served a request in this test binary (the
    // route labels of `/metrics`) is documented, or one of the deliberate exceptions.
    let metrics = client.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    let served: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .filter(|route| *route != "unmatched")
        .collect();
    assert!(served.contains("/health/ready") && served.len() >= 4, "{served:?}");
    for route in served {
        let exempt = saas_core::openapi::UNDOCUMENTED_PATHS
            .iter()
            .any(|p| route == *p || route.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')));
        assert!(paths.contains_key(route) || exempt, "{route} is served but missing from /openapi.json");
    }

    // The committed document (docs/openapi.json) must match the code; regenerate with
    // UPDATE_OPENAPI=1 cargo test -p saas-e2e.
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let generated = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    assert!(committed == generated, "docs/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p saas-e2e");
    server.shutdown().await;
}

#[tokio::test]
async fn the_docs_page_works_offline() {
    let server = start_embedded().await;
    let page = reqwest::get(format!("{}/docs/", server.url)).await.unwrap().text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(!page.contains("https://"), "no asset comes from a CDN");
    let init = reqwest::get(format!("{}/docs/swagger-initializer.js", server.url)).await.unwrap().text().await.unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    server.shutdown().await;
}

#[tokio::test]
async fn errors_from_the_real_server_are_problem_json() {
    let server = start_embedded().await;
    let client = reqwest::Client::new();
    let cases = [
        (client.get(format!("{}/v1/no-such-thing", server.url)), 404, "route_not_found"),
        (client.delete(format!("{}/health/live", server.url)), 405, "method_not_allowed"),
        (client.get(format!("{}/v7/anything", server.url)), 404, "unsupported_api_version"),
        (
            client.post(format!("{}/v1/anything", server.url)).body(vec![b'x'; 2 * 1024 * 1024]),
            413,
            "payload_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], code);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn readiness_is_503_when_the_database_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = embedded_config(&dir);
    config.database.acquire_timeout_secs = 1;
    let app = App::build(config).await.unwrap();
    let router = app.router();
    app.db().close().await;
    let response = tower::ServiceExt::oneshot(
        router,
        http::Request::get("/health/ready").body(axum::body::Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 503);
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["components"]["database"]["status"], "down");
    assert_eq!(body["components"]["cache"]["status"], "up");
}

async fn rate_limit_applies_but_not_to_probes(server: &Running) {
    let client = reqwest::Client::new();
    for _ in 0..20 {
        assert_eq!(
            client.get(format!("{}/health/live", server.url)).send().await.unwrap().status(),
            200,
            "probes are exempt"
        );
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = client.get(format!("{}/openapi.json", server.url)).send().await.unwrap();
        statuses.push((r.status().as_u16(), r.headers().get("retry-after").is_some()));
    }
    assert_eq!(statuses, [(200, false), (200, false), (200, false), (429, true)]);
}

#[tokio::test]
async fn the_fourth_request_over_a_burst_of_three_is_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = embedded_config(&dir);
    config.rate_limit.burst = 3;
    config.rate_limit.requests_per_second = 1;
    let server = start(config, dir).await;
    rate_limit_applies_but_not_to_probes(&server).await;
    server.shutdown().await;
}

#[tokio::test]
#[ignore = "needs postgres and redis: run .ci/run"]
async fn on_postgres_and_redis() {
    let db = saas_core::testing::TestDatabase::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = embedded_config(&dir);
    config.database.url = Some(SecretString::from(db.url.clone()));
    config.cache.url = Some(SecretString::from(saas_core::testing::redis_url()));
    config.rate_limit.burst = 3;
    config.rate_limit.requests_per_second = 1;
    let server = start(config, dir).await;

    let ready: serde_json::Value =
        reqwest::get(format!("{}/health/ready", server.url)).await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["components"]["database"]["backend"], "postgres");
    assert_eq!(ready["components"]["cache"]["backend"], "redis");
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_requests_total"));

    // A fresh Redis key space per run: the limiter keys by client IP, so clear ours first.
    let client = redis_client().await;
    let _: () = redis::cmd("DEL").arg("ratelimit:ip:127.0.0.1").query_async(&mut client.clone()).await.unwrap();
    rate_limit_applies_but_not_to_probes(&server).await;
    let ttl: i64 = redis::cmd("PTTL").arg("ratelimit:ip:127.0.0.1").query_async(&mut client.clone()).await.unwrap();
    assert!(ttl > 0, "the limiter state lives in Redis");
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.shutdown().await;
}

async fn redis_client() -> redis::aio::ConnectionManager {
    let client = redis::Client::open(saas_core::testing::redis_url()).unwrap();
    redis::aio::ConnectionManager::new(client).await.unwrap()
}
