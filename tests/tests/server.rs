//! End to end: the all-in-one server on a random port, as a client sees it.

use std::{net::SocketAddr, time::Duration};

use saas_core::config::{Config, FeatureConfig, QuotaConfig, TokenAlgorithm};
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

    // The other direction. Requests are labelled with the documented templates (and the
    // docs page's), so a route served but not documented shows up as `unmatched` with the
    // status it answered. The unknown routes this test binary calls are answered 404 (by the
    // router, or for an unserved version) or 413 (an oversized body, by the edge): any
    // other status labelled `unmatched` came from a route missing from the document.
    let metrics = client.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    let labelled = |l: &&str| l.starts_with("http_requests_total{");
    let served: std::collections::BTreeSet<&str> =
        metrics.lines().filter(labelled).filter_map(|l| l.split("route=\"").nth(1)?.split('"').next()).collect();
    assert!(served.contains("/health/ready") && served.contains("/docs/"), "{served:?}");
    assert!(served.iter().any(|route| route.contains("/{")), "parameterised routes by template: {served:?}");
    let undocumented: Vec<&str> = metrics
        .lines()
        .filter(labelled)
        .filter(|l| l.contains(r#"route="unmatched""#))
        .filter(|l| !l.contains(r#"status="404""#) && !l.contains(r#"status="413""#))
        .collect();
    assert!(undocumented.is_empty(), "served but missing from /openapi.json: {undocumented:?}");

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

const ADMIN_TOKEN: &str = "test-platform-admin-token-0123456789abcdef";

/// A server with a configured platform-admin token and subdomains under `example.test`;
/// on the given database and cache URLs, else embedded.
async fn start_with_tenancy(backends: Option<(&str, &str)>) -> Running {
    start_with_tenancy_and(backends, |_| {}).await
}

/// As [`start_with_tenancy`], with `adjust` applied to the configuration last.
async fn start_with_tenancy_and(backends: Option<(&str, &str)>, adjust: impl FnOnce(&mut Config)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = embedded_config(&dir);
    if let Some((database, cache)) = backends {
        config.database.url = Some(SecretString::from(database));
        config.cache.url = Some(SecretString::from(cache));
    }
    config.tenancy.platform_admin_token = Some(SecretString::from(ADMIN_TOKEN));
    config.tenancy.base_domain = Some("example.test".into());
    config.rate_limit.enabled = false;
    config.tenancy.quotas.insert("seats".into(), QuotaConfig { period: None, default_limit: Some(3) });
    config.tenancy.features.insert("reports".into(), FeatureConfig::new(serde_json::json!(false)));
    adjust(&mut config);
    start(config, dir).await
}

/// Sends `request` and returns the status and the JSON body (`null` when empty).
async fn json(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (status, if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
}

#[tokio::test]
async fn two_tenants_sign_up_and_each_sees_only_itself() {
    two_tenants_sign_up(start_with_tenancy(None).await).await;
}

#[tokio::test]
async fn platform_admins_manage_tenants_and_suspension_blocks_every_route() {
    platform_admins_manage_tenants(start_with_tenancy(None).await).await;
}

#[tokio::test]
#[ignore = "needs postgres and redis: run .ci/run"]
async fn tenancy_on_postgres_and_redis() {
    let redis = saas_core::testing::redis_url();
    // Each run has a fresh database but shares Redis: forget tenants cached by earlier runs.
    let forget_cached_tenants = || async {
        let mut client = redis_client().await;
        let keys: Vec<String> = redis::cmd("KEYS").arg("tenancy:tenant:*").query_async(&mut client).await.unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut client).await.unwrap();
        }
    };
    forget_cached_tenants().await;
    let db = saas_core::testing::TestDatabase::postgres().await;
    two_tenants_sign_up(start_with_tenancy(Some((&db.url, &redis))).await).await;
    forget_cached_tenants().await;
    let db = saas_core::testing::TestDatabase::postgres().await;
    platform_admins_manage_tenants(start_with_tenancy(Some((&db.url, &redis))).await).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn the_server_queries_as_a_role_under_row_level_security() {
    let database = saas_core::testing::TestDatabase::postgres().await;
    let app_role = database.app_role_url().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = embedded_config(&dir);
    config.database.url = Some(SecretString::from(app_role));
    config.database.migrate_url = Some(SecretString::from(database.url.clone()));
    config.tenancy.platform_admin_token = Some(SecretString::from(ADMIN_TOKEN));
    let app = App::build(config).await.unwrap();
    assert_eq!(app.db().role_bypassing_rls().await.unwrap(), None, "the server's role is under RLS");
    let owner = database.connect().await;
    assert!(owner.role_bypassing_rls().await.unwrap().is_some(), "the owner (a superuser here) is not");
    let owns: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE tableowner = current_user")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(owns, 0, "the server's role owns no table");
    let signup = tower::ServiceExt::oneshot(
        app.router(),
        http::Request::post("/v1/signup")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                r#"{"slug":"acme","name":"Acme","owner":{"email":"ada@acme.test","password":"correct horse battery"}}"#,
            ))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(signup.status(), 201, "the role can write what migrations created, the owner under RLS included");
}

async fn two_tenants_sign_up(server: Running) {
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let mut ids = Vec::new();
    for (slug, email) in [("acme", "ada@acme.test"), ("globex", "bob@globex.test")] {
        let body = serde_json::json!({"slug": slug, "name": slug, "owner": {"email": email, "password": "correct horse battery"}});
        let (status, body) = json(client.post(url("/v1/signup")).json(&body)).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!((body["tenant"]["slug"].as_str(), body["owner"]["email"].as_str()), (Some(slug), Some(email)));
        assert_eq!(body["owner"]["roles"], serde_json::json!(["owner"]));
        assert!(body["tenant"].get("status").is_none() && !body.to_string().contains("correct horse"), "{body}");
        ids.push(body["tenant"]["id"].as_str().unwrap().to_owned());
    }

    let (status, body) =
        json(client.post(url("/v1/signup")).json(&serde_json::json!({"slug": "acme", "name": "x"}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("slug_taken")));
    let (status, body) =
        json(client.post(url("/v1/signup")).json(&serde_json::json!({"slug": "api", "name": ""}))).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");
    // A bad owner creates nothing: the tenant and its owner are one transaction.
    let weak = serde_json::json!({"slug": "initech", "name": "Initech", "owner": {"email": "peter@initech.test", "password": "short"}});
    let (status, body) = json(client.post(url("/v1/signup")).json(&weak)).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("owner.password")), "{body}");
    let (status, _) = json(client.get(url("/v1/tenant")).header("x-tenant-id", "initech")).await;
    assert_eq!(status, 404, "no tenant was left behind");

    // Sign in: the same answer for a wrong password and an unknown account.
    let login = |tenant: &str, email: &str, password: &str| {
        client
            .post(url("/v1/auth/login"))
            .header("x-tenant-id", tenant)
            .json(&serde_json::json!({"email": email, "password": password}))
    };
    let wrong = json(login("acme", "ada@acme.test", "wrong password!")).await;
    let unknown = json(login("acme", "nobody@acme.test", "wrong password!")).await;
    let elsewhere = json(login("globex", "ada@acme.test", "correct horse battery")).await;
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.1["code"], "invalid_credentials");
    assert_eq!((wrong.0, &wrong.1["detail"]), (unknown.0, &unknown.1["detail"]), "no user enumeration");
    assert_eq!((wrong.0, &wrong.1["detail"]), (elsewhere.0, &elsewhere.1["detail"]), "accounts belong to one tenant");
    let (status, tokens) = json(login("acme", " ADA@acme.test", "correct horse battery")).await;
    assert_eq!(
        (status, tokens["token_type"].as_str(), tokens["expires_in"].as_u64()),
        (200, Some("Bearer"), Some(900)),
        "{tokens}"
    );
    let ada = tokens["access_token"].as_str().unwrap().to_owned();

    // The token names the tenant by itself, and makes its holder a member.
    let (status, me) = json(client.get(url("/v1/auth/me")).bearer_auth(&ada)).await;
    assert_eq!(
        (status, me["email"].as_str(), me["tenant_id"].as_str()),
        (200, Some("ada@acme.test"), Some(ids[0].as_str()))
    );
    let (status, tenant) = json(client.get(url("/v1/tenant")).bearer_auth(&ada)).await;
    assert_eq!((status, tenant["id"].as_str()), (200, Some(ids[0].as_str())));
    assert_eq!(json(client.get(url("/v1/tenant/quotas")).bearer_auth(&ada)).await.0, 200);

    // Every attempt to reach globex with acme's credentials is 404, not 403.
    for request in [
        client.get(url("/v1/tenant")).header("x-tenant-id", "globex"),
        client.get(url("/v1/tenant")).header("x-tenant-id", &ids[1]),
        client.get(url("/v1/tenant")).header("host", "globex.example.test"),
        client.get(url("/t/globex/v1/tenant")),
        client.get(url("/v1/tenant/quotas")).header("x-tenant-id", "globex"),
        client.get(url("/v1/tenant/features")).header("x-tenant-id", "globex"),
        client.get(url("/v1/auth/me")).header("x-tenant-id", "globex"),
    ] {
        let (status, body) = json(request.bearer_auth(&ada)).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("tenant_not_found")), "{body}");
    }
    // Without credentials the tenant's own routes need a member or a platform admin.
    for path in ["/v1/tenant", "/v1/tenant/quotas", "/v1/tenant/features"] {
        let (status, body) = json(client.get(url(path)).header("x-tenant-id", "acme")).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{path}");
    }
    let (status, body) = json(client.get(url("/v1/auth/me")).bearer_auth(format!("{ada}x"))).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")));
    // A stale token does not stand in the way of signing in again.
    let (status, _) =
        json(login("acme", "ada@acme.test", "correct horse battery").bearer_auth(format!("{ada}x"))).await;
    assert_eq!(status, 200);
    // Logins are never replayed from the idempotency cache: they hold fresh tokens.
    let replayed = || login("acme", "ada@acme.test", "correct horse battery").header("idempotency-key", "same-key");
    let (first, second) = (json(replayed()).await.1, json(replayed()).await.1);
    assert_ne!(first["access_token"], second["access_token"]);

    // Refresh, then sign out: both tokens of the session stop working.
    let refresh = |token: &serde_json::Value| {
        client
            .post(url("/v1/auth/refresh"))
            .header("x-tenant-id", "acme")
            .json(&serde_json::json!({"refresh_token": token}))
    };
    let (status, renewed) = json(refresh(&first["refresh_token"])).await;
    assert_eq!(status, 200, "{renewed}");
    let session = renewed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(json(client.get(url("/v1/auth/me")).bearer_auth(&session)).await.0, 200);
    assert_eq!(json(client.post(url("/v1/auth/logout")).bearer_auth(&session)).await.0, 204);
    let (status, body) = json(client.get(url("/v1/auth/me")).bearer_auth(&session)).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")));
    let (status, body) = json(refresh(&renewed["refresh_token"])).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_refresh_token")));
    assert_eq!(json(client.post(url("/v1/auth/logout"))).await.0, 401);

    // Each tenant, named by header, subdomain or path prefix, is the one served.
    for (slug, id) in ["acme", "globex"].iter().zip(&ids) {
        for request in [
            client.get(url("/v1/tenant")).header("x-tenant-id", *slug),
            client.get(url("/v1/tenant")).header("x-tenant-id", id),
            client.get(url("/v1/tenant")).header("host", format!("{slug}.example.test")),
            client.get(url(&format!("/t/{slug}/v1/tenant"))),
        ] {
            let (status, body) = json(request.bearer_auth(ADMIN_TOKEN)).await;
            assert_eq!((status, body["id"].as_str()), (200, Some(id.as_str())), "{body}");
        }
    }
    let (status, body) = json(
        client
            .get(url("/v1/tenant"))
            .header("host", "acme.example.test")
            .header("x-tenant-id", "globex")
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("tenant_mismatch")));
    let (status, body) = json(client.get(url("/v1/tenant")).header("x-tenant-id", "umbrella")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("tenant_not_found")));
    let (status, body) = json(client.get(url("/v1/tenant"))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("tenant_required")));

    let (status, jwks) = json(client.get(url("/.well-known/jwks.json"))).await;
    assert_eq!((status, jwks["keys"][0]["crv"].as_str()), (200, Some("Ed25519")));
    server.shutdown().await;
}

async fn platform_admins_manage_tenants(server: Running) {
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(ADMIN_TOKEN);

    for request in [client.get(url("/v1/tenants")), client.get(url("/v1/tenants")).bearer_auth("sap_guess")] {
        let (status, body) = json(request).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    }
    let (status, tenant) = json(
        admin(client.post(url("/v1/tenants")))
            .json(&serde_json::json!({"slug": "acme", "name": "Acme", "plan": "pro"})),
    )
    .await;
    assert_eq!((status, tenant["plan"].as_str()), (201, Some("pro")), "{tenant}");
    let id = tenant["id"].as_str().unwrap();
    let one = url(&format!("/v1/tenants/{id}"));
    let (status, listed) = json(admin(client.get(url("/v1/tenants?limit=10")))).await;
    assert_eq!(
        (status, listed["data"][0]["id"].as_str(), &listed["next_cursor"]),
        (200, Some(id), &serde_json::Value::Null)
    );
    let (status, body) = json(admin(client.get(url("/v1/tenants?limit=1000")))).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("limit")));
    let (status, body) = json(admin(client.get(url("/v1/tenants/not-an-id")))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = json(admin(client.patch(&one)).json(&serde_json::json!({"name": "Acme Corp"}))).await;
    assert_eq!((status, body["name"].as_str(), body["plan"].as_str()), (200, Some("Acme Corp"), Some("pro")));

    let tenant_routes = [url("/v1/tenant"), url("/v1/signup"), url("/health/live")];
    let as_acme = |u: &String| client.get(u).header("x-tenant-id", "acme").bearer_auth(ADMIN_TOKEN);
    assert_eq!(json(as_acme(&tenant_routes[0])).await.0, 200);

    let (status, body) =
        json(admin(client.post(format!("{one}/suspend"))).json(&serde_json::json!({"reason": "unpaid"}))).await;
    assert_eq!(
        (status, body["status"].as_str(), body["suspended_reason"].as_str()),
        (200, Some("suspended"), Some("unpaid"))
    );
    for route in &tenant_routes {
        let (status, body) = json(as_acme(route)).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("tenant_suspended")), "{route}");
        assert!(!body.to_string().contains("unpaid"), "the reason is for admins only");
    }
    let (status, body) =
        json(admin(client.post(format!("{one}/suspend"))).json(&serde_json::json!({"reason": "again"}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("invalid_tenant_status")));

    let (status, _) = json(admin(client.post(format!("{one}/reactivate")))).await;
    assert_eq!(status, 200);
    assert_eq!(json(as_acme(&tenant_routes[0])).await.0, 200, "works again");

    // Quotas and flags: the tenant sees its own; admins override them.
    let (status, quotas) = json(as_acme(&url("/v1/tenant/quotas"))).await;
    assert_eq!(
        (status, &quotas[0]["quota"], &quotas[0]["limit"], &quotas[0]["used"]),
        (200, &"seats".into(), &3.into(), &0.into())
    );
    let (status, quotas) =
        json(admin(client.put(format!("{one}/quotas/seats"))).json(&serde_json::json!({"limit": 25}))).await;
    assert_eq!((status, &quotas[0]["limit"]), (200, &25.into()));
    let (status, body) =
        json(admin(client.put(format!("{one}/quotas/sets"))).json(&serde_json::json!({"limit": 1}))).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("quota_not_found")));
    assert_eq!(json(as_acme(&url("/v1/tenant/features"))).await, (200, serde_json::json!({"reports": false})));
    let enable = serde_json::json!({"value": true});
    assert_eq!(json(admin(client.put(format!("{one}/features/reports"))).json(&enable)).await.0, 204);
    assert_eq!(json(as_acme(&url("/v1/tenant/features"))).await, (200, serde_json::json!({"reports": true})));
    let (status, body) =
        json(admin(client.put(format!("{one}/features/reports"))).json(&serde_json::json!({"value": 3}))).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("value")));
    assert_eq!(json(admin(client.get(format!("{one}/features")))).await, (200, serde_json::json!({"reports": true})));

    let (status, body) = json(admin(client.delete(&one))).await;
    assert_eq!((status, body), (204, serde_json::Value::Null));
    let (status, body) = json(as_acme(&tenant_routes[0])).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("tenant_not_found")));
    assert_eq!(json(admin(client.get(&one))).await.0, 404);
    server.shutdown().await;
}

/// Runs `tests/scripts/verify_jwt.py` (PyJWT) on `token` with the server's JWKS.
fn verify_with_pyjwt(jwks: &serde_json::Value, token: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let (jwks_file, token_file) = (dir.path().join("jwks.json"), dir.path().join("token"));
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    std::fs::write(&token_file, token).unwrap();
    let python = std::env::var("SAAS_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify_jwt.py");
    let output = std::process::Command::new(python)
        .args([script, jwks_file.to_str().unwrap(), token_file.to_str().unwrap(), "saas-rs", "saas-rs"])
        .output()
        .expect("python runs");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
#[ignore = "needs PyJWT (SAAS_TEST_PYTHON): run .ci/run"]
async fn tokens_verify_with_pyjwt_using_only_the_jwks() {
    for algorithm in [TokenAlgorithm::EdDSA, TokenAlgorithm::ES256, TokenAlgorithm::RS256] {
        verify_with_pyjwt_using(algorithm).await;
    }
}

async fn verify_with_pyjwt_using(algorithm: TokenAlgorithm) {
    let server = start_with_tenancy_and(None, |config| config.auth.token_algorithm = algorithm).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let owner = serde_json::json!({"email": "ada@acme.test", "password": "correct horse battery"});
    let signup = serde_json::json!({"slug": "acme", "name": "Acme", "owner": owner});
    assert_eq!(json(client.post(url("/v1/signup")).json(&signup)).await.0, 201);
    let (_, tokens) = json(client.post(url("/v1/auth/login")).header("x-tenant-id", "acme").json(&owner)).await;
    let token = tokens["access_token"].as_str().unwrap();
    let (_, jwks) = json(client.get(url("/.well-known/jwks.json"))).await;

    assert_eq!(jwks["keys"][0]["alg"], algorithm.as_str());
    let (ok, out) = verify_with_pyjwt(&jwks, token);
    assert!(ok, "PyJWT refused our {algorithm:?} token: {out}");
    let claims: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(claims["roles"], serde_json::json!(["owner"]));
    assert!(claims["tid"].as_str().unwrap().starts_with("ten_"));

    // And PyJWT refuses a tampered one: the check is real.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1]).unwrap(),
    )
    .unwrap();
    payload["roles"] = serde_json::json!(["admin"]);
    parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload.to_string());
    let (ok, out) = verify_with_pyjwt(&jwks, &parts.join("."));
    assert!(!ok && out.contains("Signature"), "{algorithm:?}: {out}");
    server.shutdown().await;
}

/// The code in the newest e-mail to `to` written under `<data_dir>/mail`, waiting up to 10 s
/// for it (the verification mail is sent by an event consumer, after the sign-up answered).
async fn wait_for_code_mailed_to(dir: &std::path::Path, to: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mails = std::fs::read_dir(dir.join("mail")).into_iter().flatten().flatten();
        let texts: Vec<String> = mails.filter_map(|entry| std::fs::read_to_string(entry.path()).ok()).collect();
        let code = texts
            .iter()
            .filter(|text| text.starts_with(&format!("To: {to}\n")))
            .find_map(|text| text.split_whitespace().find(|word| word.starts_with("emt_")).map(str::to_owned));
        if let Some(code) = code {
            return code;
        }
        assert!(std::time::Instant::now() < deadline, "no e-mail to {to} within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_owner_is_sent_a_verification_code_at_sign_up() {
    let server = start_with_tenancy(None).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let owner = serde_json::json!({"email": "ada@acme.test", "password": "correct horse battery"});
    let signup = serde_json::json!({"slug": "acme", "name": "Acme", "owner": owner});
    assert_eq!(json(client.post(url("/v1/signup")).json(&signup)).await.0, 201);
    let code = wait_for_code_mailed_to(server._dir.path(), "ada@acme.test").await;

    let (_, tokens) = json(client.post(url("/v1/auth/login")).header("x-tenant-id", "acme").json(&owner)).await;
    let bearer = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    let me = || client.get(url("/v1/auth/me")).header("authorization", &bearer);
    assert_eq!(json(me()).await.1["email_verified"], false);
    let verify = |token: &str| {
        client
            .post(url("/v1/auth/email/verify"))
            .header("x-tenant-id", "acme")
            .json(&serde_json::json!({"token": token}))
    };
    assert_eq!(json(verify(&code)).await.0, 204);
    assert_eq!(json(me()).await.1["email_verified"], true);
    let (status, body) = json(verify(&code)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_email_token")), "the code works once");
    server.shutdown().await;
}

#[tokio::test]
async fn the_audit_log_records_admin_actions_and_reports_tampering() {
    let server = start_with_tenancy(None).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let owner = serde_json::json!({"email": "ada@acme.test", "password": "correct horse battery"});
    let signup = serde_json::json!({"slug": "acme", "name": "Acme", "owner": owner});
    let (_, created) = json(client.post(url("/v1/signup")).json(&signup)).await;
    let tenant = created["tenant"]["id"].as_str().unwrap().to_owned();
    let (_, tokens) = json(client.post(url("/v1/auth/login")).header("x-tenant-id", "acme").json(&owner)).await;
    let ada = tokens["access_token"].as_str().unwrap().to_owned();

    // Admin actions: a read-only API key is created, then another is created and revoked.
    let new_key = |name: &str| {
        client
            .post(url("/v1/auth/api-keys"))
            .bearer_auth(&ada)
            .json(&serde_json::json!({"name": name, "permissions": ["*:read"]}))
    };
    let (status, reader) = json(new_key("reader")).await;
    assert_eq!(status, 201, "{reader}");
    let reader = reader["key"].as_str().unwrap().to_owned();
    let (_, doomed) = json(new_key("doomed")).await;
    let doomed_id = doomed["id"].as_str().unwrap().to_owned();
    let revoked = client.delete(url(&format!("/v1/auth/api-keys/{doomed_id}"))).bearer_auth(&ada).send().await.unwrap();
    assert_eq!(revoked.status(), 204);

    // The events arrive in the chain (through the outbox, the bus and the audit consumer).
    let expected = [
        "tenancy.tenant_provisioned.v1",
        "auth.user_registered.v1",
        "auth.user_authenticated.v1",
        "auth.api_key_created.v1",
        "auth.api_key_created.v1",
        "auth.api_key_revoked.v1",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let report = loop {
        let (status, report) = json(client.get(url("/v1/audit")).bearer_auth(&ada)).await;
        assert_eq!(status, 200, "{report}");
        if report["entries"].as_i64() >= Some(expected.len() as i64) {
            break report;
        }
        assert!(std::time::Instant::now() < deadline, "the audit log did not catch up: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((report["chain"].as_str(), report["intact"].as_bool()), (Some(tenant.as_str()), Some(true)), "{report}");
    assert!(report["breach"].is_null(), "{report}");

    // Entries page by page, oldest first.
    let mut types = Vec::new();
    let mut next = Some(url("/v1/audit/entries?limit=4"));
    while let Some(page_url) = next {
        let (status, page) = json(client.get(page_url).bearer_auth(&ada)).await;
        assert_eq!(status, 200, "{page}");
        for entry in page["data"].as_array().unwrap() {
            assert_eq!(entry["event"]["tenantid"], tenant.as_str());
            types.push(entry["event"]["type"].as_str().unwrap().to_owned());
        }
        next = page["next_cursor"].as_str().map(|c| url(&format!("/v1/audit/entries?limit=4&cursor={c}")));
    }
    // The verification mail consumer may interleave nothing here: it publishes no event.
    assert_eq!(types, expected);
    let revoked = |t: &serde_json::Value| t["event"]["data"]["revoked_by"].clone();
    let (_, page) = json(client.get(url("/v1/audit/entries?limit=100")).bearer_auth(&ada)).await;
    assert_eq!(revoked(&page["data"][5]), tokens_user(&client, &url("/v1/auth/me"), &ada).await);

    // `*:read` does not grant the audit log, and bad queries are refused.
    let (status, body) = json(client.get(url("/v1/audit")).bearer_auth(&reader)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("permission_denied")), "{body}");
    let (status, _) = json(client.get(url("/v1/audit"))).await;
    assert_eq!(status, 401);
    let (status, body) = json(client.get(url("/v1/audit/entries?cursor=bm90LWEtbnVtYmVy")).bearer_auth(&ada)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_cursor")), "{body}");
    let (status, _) = json(client.get(url("/v1/audit/entries?limit=0")).bearer_auth(&ada)).await;
    assert_eq!(status, 422);

    // Someone deletes the third entry straight from the database: the report names it.
    let db =
        saas_core::db::Db::connect(&format!("sqlite://{}/saas.db", server._dir.path().display()), Default::default())
            .await
            .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 3")
        .bind(&tenant)
        .execute(db.pool())
        .await
        .unwrap();
    let (_, report) = json(client.get(url("/v1/audit")).bearer_auth(&ada)).await;
    assert_eq!(report["intact"], false, "{report}");
    assert_eq!(report["breach"]["seq"], 3, "{report}");
    assert!(report["breach"]["reason"].as_str().unwrap().contains("missing"), "{report}");
    db.close().await;
    server.shutdown().await;
}

/// The signed-in user's id.
async fn tokens_user(client: &reqwest::Client, me: &str, token: &str) -> serde_json::Value {
    json(client.get(me).bearer_auth(token)).await.1["id"].clone()
}
