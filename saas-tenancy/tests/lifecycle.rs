//! Tenant lifecycle, resolution and platform-admin tokens, on SQLite and (ignored without
//! it) PostgreSQL.

use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use saas_core::{
    cache::{Cache, MemoryCache},
    config::TenantSource,
    db::{Db, migrate},
    events::{Envelope, EventBus, InProcessBus, OutboxRelay},
    page::PageQuery,
    tenant::TenantContext,
    testing::TestDatabase,
};
use saas_tenancy::{
    NewTenant, PathPrefixStripped, TenantLayer, TenantPatch, TenantStatus, Tenants, admin::PlatformAdmins, events,
};
use secrecy::{ExposeSecret, SecretString};
use tower::ServiceExt;

async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/t.db", dir.path().display()), Default::default()).await.unwrap();
    (db, dir)
}

async fn tenants(db: &Db) -> Tenants {
    migrate::run(db, &[&saas_core::events::MIGRATIONS, &saas_tenancy::MIGRATIONS]).await.unwrap();
    let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(1000));
    Tenants::new(db.clone(), cache).with_cache_ttl(Duration::from_secs(3600))
}

fn new(slug: &str) -> NewTenant {
    NewTenant { slug: slug.into(), name: format!("{slug} Inc."), plan: None }
}

async fn outbox_types(db: &Db) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM saas_outbox ORDER BY seq").fetch_all(db.pool()).await.unwrap()
}

async fn lifecycle(db: Db) {
    let tenants = tenants(&db).await;
    let acme = tenants.provision(new("acme")).await.unwrap();
    assert_eq!((acme.slug.as_str(), acme.plan.as_str(), acme.status), ("acme", "free", TenantStatus::Active));
    assert_eq!(tenants.get(acme.id).await.unwrap(), acme);

    let taken = tenants.provision(new("acme")).await.unwrap_err();
    assert_eq!((taken.status(), taken.code()), (StatusCode::CONFLICT, "slug_taken"));
    let invalid =
        tenants.provision(NewTenant { slug: "www".into(), name: " ".into(), plan: Some("Gold!".into()) }).await;
    let fields: Vec<_> = invalid.unwrap_err().field_errors().iter().map(|f| f.field.clone()).collect();
    assert_eq!(fields, ["slug", "name", "plan"]);

    let renamed = tenants.update(acme.id, TenantPatch { name: Some("Acme".into()), plan: None }).await.unwrap();
    assert_eq!((renamed.name.as_str(), renamed.plan.as_str()), ("Acme", "free"));
    let upgraded = tenants.update(acme.id, TenantPatch { name: None, plan: Some("pro".into()) }).await.unwrap();
    assert_eq!((upgraded.name.as_str(), upgraded.plan.as_str()), ("Acme", "pro"), "absent fields keep their value");

    let suspended = tenants.suspend(acme.id, "unpaid invoice").await.unwrap();
    assert_eq!(suspended.status, TenantStatus::Suspended);
    assert_eq!(suspended.suspended_reason.as_deref(), Some("unpaid invoice"));
    let again = tenants.suspend(acme.id, "twice").await.unwrap_err();
    assert_eq!((again.status(), again.code()), (StatusCode::CONFLICT, "invalid_tenant_status"));
    let active = tenants.reactivate(acme.id).await.unwrap();
    assert_eq!((active.status, active.suspended_reason), (TenantStatus::Active, None));
    assert_eq!(tenants.reactivate(acme.id).await.unwrap_err().code(), "invalid_tenant_status");

    tenants.delete(acme.id).await.unwrap();
    assert_eq!(tenants.get(acme.id).await.unwrap_err().status(), StatusCode::NOT_FOUND);
    assert_eq!(tenants.delete(acme.id).await.unwrap_err().status(), StatusCode::NOT_FOUND);
    assert_eq!(tenants.provision(new("acme")).await.unwrap_err().code(), "slug_taken", "the slug stays taken");

    assert_eq!(
        outbox_types(&db).await,
        [
            events::TENANT_PROVISIONED,
            events::TENANT_UPDATED,
            events::TENANT_UPDATED,
            events::TENANT_SUSPENDED,
            events::TENANT_REACTIVATED,
            events::TENANT_DELETED
        ]
    );
}

async fn paging(db: Db) {
    let tenants = tenants(&db).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(tenants.provision(new(&format!("tenant-{i}"))).await.unwrap().id);
    }
    tenants.delete(created[2]).await.unwrap();
    let mut seen = Vec::new();
    let mut query = PageQuery { limit: Some(2), cursor: None };
    loop {
        let page = tenants.list(&query, None).await.unwrap();
        assert!(page.data.len() <= 2);
        seen.extend(page.data.iter().map(|t| t.id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, [created[0], created[1], created[3], created[4]], "creation order, deleted left out");
    let deleted = tenants.list(&PageQuery::default(), Some(TenantStatus::Deleted)).await.unwrap();
    assert_eq!(deleted.data.iter().map(|t| t.id).collect::<Vec<_>>(), [created[2]]);
}

#[tokio::test]
async fn lifecycle_on_sqlite() {
    let (db, _dir) = sqlite().await;
    lifecycle(db).await;
}

#[tokio::test]
async fn pages_on_sqlite() {
    let (db, _dir) = sqlite().await;
    paging(db).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn lifecycle_and_pages_on_postgres() {
    let database = TestDatabase::postgres().await;
    lifecycle(database.connect().await).await;
    let database = TestDatabase::postgres().await;
    paging(database.connect().await).await;
}

/// A router with one tenant route behind the resolution layer.
fn app(tenants: &Tenants, sources: &[TenantSource]) -> PathPrefixStripped<Router> {
    let routes = Router::new()
        .route("/v1/whoami", get(|tenant: TenantContext| async move { tenant.slug.to_string() }))
        .route(
            "/v1/public",
            get(|tenant: Option<TenantContext>| async move { format!("{:?}", tenant.map(|t| t.slug)) }),
        )
        .layer(TenantLayer::new(tenants.clone(), sources, Some("example.com")));
    saas_tenancy::strip_path_prefix(routes)
}

/// What `app` (a router, or one behind `strip_path_prefix`) answers a GET of `uri`.
async fn call<App>(app: &App, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String)
where
    App: tower::Service<Request<Body>, Response = axum::response::Response, Error = std::convert::Infallible> + Clone,
{
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    if !status.is_success() {
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        return (status, problem["code"].as_str().unwrap().to_owned());
    }
    (status, body)
}

#[tokio::test]
async fn every_source_resolves_and_disagreement_is_refused() {
    let (db, _dir) = sqlite().await;
    let tenants = tenants(&db).await;
    let acme = tenants.provision(new("acme")).await.unwrap();
    tenants.provision(new("globex")).await.unwrap();
    let app = app(&tenants, &[TenantSource::Subdomain, TenantSource::Header, TenantSource::Path]);
    let ok = (StatusCode::OK, "acme".to_owned());
    let id = acme.id.to_string();

    assert_eq!(call(&app, "/v1/whoami", &[("x-tenant-id", "acme")]).await, ok);
    assert_eq!(call(&app, "/v1/whoami", &[("x-tenant-id", &id)]).await, ok);
    assert_eq!(call(&app, "/v1/whoami", &[("host", "acme.example.com:8443")]).await, ok);
    assert_eq!(call(&app, "/t/acme/v1/whoami", &[]).await, ok);
    assert_eq!(call(&app, &format!("/t/{id}/v1/whoami"), &[]).await, ok);
    // Two sources naming the same tenant differently agree.
    assert_eq!(call(&app, "/v1/whoami", &[("host", "acme.example.com"), ("x-tenant-id", &id)]).await, ok);

    let mismatch = (StatusCode::BAD_REQUEST, "tenant_mismatch".to_owned());
    assert_eq!(call(&app, "/v1/whoami", &[("host", "acme.example.com"), ("x-tenant-id", "globex")]).await, mismatch);
    assert_eq!(call(&app, "/t/globex/v1/whoami", &[("x-tenant-id", "acme")]).await, mismatch);

    let unknown = (StatusCode::NOT_FOUND, "tenant_not_found".to_owned());
    assert_eq!(call(&app, "/v1/whoami", &[("x-tenant-id", "initech")]).await, unknown);
    assert_eq!(call(&app, &format!("/t/{}/v1/whoami", "a".repeat(500)), &[]).await, unknown, "no lookup of non-slugs");
    assert_eq!(call(&app, "/v1/whoami", &[("x-tenant-id", "Not A Slug!")]).await, unknown);
    assert_eq!(call(&app, "/v1/whoami", &[("x-tenant-id", "ten_01h455vb4pex5vsknk084sn02q")]).await, unknown);
    assert_eq!(call(&app, "/v1/whoami", &[("host", "initech.example.com")]).await, unknown);

    // No tenant named: tenant routes say so, platform routes run without one.
    assert_eq!(call(&app, "/v1/whoami", &[]).await, (StatusCode::BAD_REQUEST, "tenant_required".to_owned()));
    assert_eq!(call(&app, "/v1/whoami", &[("host", "www.example.com")]).await.1, "tenant_required");
    assert_eq!(call(&app, "/v1/whoami", &[("host", "acme.other.org")]).await.1, "tenant_required");
    assert_eq!(call(&app, "/v1/public", &[]).await, (StatusCode::OK, "None".to_owned()));
    assert_eq!(call(&app, "/v1/whoami", &[("x-tenant-id", "")]).await.1, "invalid_tenant_header");

    // HTTP/2 sends the host as `:authority`, without a Host header.
    let request = Request::get("http://acme.example.com/v1/whoami").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Configured reserved names are platform hosts, not unknown tenants.
    let reserving = Tenants::new(db.clone(), Arc::new(MemoryCache::new(10)))
        .with_slug_policy(saas_tenancy::slug::SlugPolicy::new(["portal"]));
    let with_portal = Router::new()
        .route(
            "/v1/public",
            get(|tenant: Option<TenantContext>| async move { format!("{:?}", tenant.map(|t| t.slug)) }),
        )
        .layer(TenantLayer::new(reserving, &[TenantSource::Subdomain], Some("example.com")));
    assert_eq!(
        call(&with_portal, "/v1/public", &[("host", "portal.example.com")]).await,
        (StatusCode::OK, "None".into())
    );

    // A source that is not configured is ignored.
    let header_only = self::app(&tenants, &[TenantSource::Header]);
    assert_eq!(call(&header_only, "/v1/whoami", &[("host", "acme.example.com")]).await.1, "tenant_required");
}

#[tokio::test]
async fn suspension_and_deletion_take_effect_at_once_despite_the_cache() {
    let (db, _dir) = sqlite().await;
    let tenants = tenants(&db).await;
    let acme = tenants.provision(new("acme")).await.unwrap();
    let app = app(&tenants, &[TenantSource::Header]);
    let by_slug = [("x-tenant-id", "acme")];
    assert_eq!(call(&app, "/v1/whoami", &by_slug).await.0, StatusCode::OK); // now cached

    tenants.suspend(acme.id, "abuse").await.unwrap();
    assert_eq!(call(&app, "/v1/whoami", &by_slug).await, (StatusCode::FORBIDDEN, "tenant_suspended".into()));
    assert_eq!(call(&app, "/v1/public", &by_slug).await.0, StatusCode::FORBIDDEN, "every route");
    tenants.reactivate(acme.id).await.unwrap();
    assert_eq!(call(&app, "/v1/whoami", &by_slug).await.0, StatusCode::OK);

    tenants.delete(acme.id).await.unwrap();
    assert_eq!(call(&app, "/v1/whoami", &by_slug).await, (StatusCode::NOT_FOUND, "tenant_not_found".into()));
}

#[tokio::test]
async fn platform_admin_tokens() {
    let (db, _dir) = sqlite().await;
    tenants(&db).await;
    let configured = SecretString::from("c".repeat(40));
    let admins = PlatformAdmins::new(db.clone(), Some(&configured));
    let token = admins.bootstrap("ops", false).await.unwrap();
    assert!(token.expose_secret().starts_with("sap_"));
    assert!(admins.verify(token.expose_secret()).await.unwrap());
    assert!(admins.verify(&"c".repeat(40)).await.unwrap());
    assert!(!admins.verify(&format!("{}x", token.expose_secret())).await.unwrap());
    assert!(!admins.verify("sap_").await.unwrap());

    let again = admins.bootstrap("ops", false).await.unwrap_err();
    assert_eq!(again.code(), "already_bootstrapped");
    let second = admins.bootstrap("backup", true).await.unwrap();
    assert_ne!(second.expose_secret(), token.expose_secret());
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT token_hash FROM platform_admin_tokens").fetch_all(db.pool()).await.unwrap();
    assert!(stored.iter().all(|h| h.len() == 64 && !h.contains(token.expose_secret())), "only hashes are stored");
}

#[tokio::test]
async fn deleting_a_tenant_erases_its_rows_in_every_subscribed_domain_once() {
    let (db, _dir) = sqlite().await;
    let tenants = tenants(&db).await;
    sqlx::query("CREATE TABLE notes (tenant_id TEXT NOT NULL, body TEXT NOT NULL)").execute(db.pool()).await.unwrap();
    let acme = tenants.provision(new("acme")).await.unwrap();
    let globex = tenants.provision(new("globex")).await.unwrap();
    for tenant in [acme.id, globex.id] {
        sqlx::query("INSERT INTO notes VALUES ($1, 'hello')")
            .bind(tenant.to_string())
            .execute(db.pool())
            .await
            .unwrap();
    }
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new());
    let erasures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = erasures.clone();
    let _notes = saas_tenancy::purge::on_tenant_deleted(&bus, db.clone(), "notes", move |conn, tenant| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            sqlx::query("DELETE FROM notes WHERE tenant_id = $1").bind(tenant.to_string()).execute(conn).await?;
            Ok(())
        })
    })
    .await
    .unwrap();
    let counter = Arc::new(saas_tenancy::quota::SqlCounter::new(db.clone()));
    let _tenancy = saas_tenancy::purge::erase_tenancy_rows(&bus, db.clone(), counter).await.unwrap();

    tenants.delete(acme.id).await.unwrap();
    OutboxRelay::new(db.clone(), bus.clone()).drain().await.unwrap();
    // Deliver the deletion a second time, as an at-least-once bus may.
    let deleted: String = sqlx::query_scalar("SELECT envelope FROM saas_outbox WHERE event_type = $1")
        .bind(events::TENANT_DELETED)
        .fetch_one(db.pool())
        .await
        .unwrap();
    bus.publish(&[serde_json::from_str::<Envelope>(&deleted).unwrap()]).await.unwrap();

    let left =
        || async { sqlx::query_scalar::<_, String>("SELECT tenant_id FROM notes").fetch_all(db.pool()).await.unwrap() };
    for _ in 0..100 {
        let purged: Option<i64> = sqlx::query_scalar("SELECT purged_at FROM tenants WHERE id = $1")
            .bind(acme.id.to_string())
            .fetch_one(db.pool())
            .await
            .unwrap();
        if left().await == [globex.id.to_string()] && purged.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left().await, [globex.id.to_string()], "only the deleted tenant's rows are erased");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(erasures.load(std::sync::atomic::Ordering::SeqCst), 1, "erased once despite two deliveries");
}

struct Claim(saas_core::id::TenantId);

impl saas_tenancy::resolve::TokenTenant for Claim {
    fn tenant_of(&self, parts: &http::request::Parts) -> Option<saas_core::id::TenantId> {
        parts.headers.contains_key("authorization").then_some(self.0)
    }
}

#[tokio::test]
async fn a_token_of_one_tenant_cannot_reach_another() {
    let (db, _dir) = sqlite().await;
    let tenants = tenants(&db).await;
    let acme = tenants.provision(new("acme")).await.unwrap();
    tenants.provision(new("globex")).await.unwrap();
    let layer = TenantLayer::new(tenants.clone(), &[TenantSource::Token, TenantSource::Header], None)
        .with_token(Arc::new(Claim(acme.id)));
    let app = Router::new().route("/v1/whoami", get(|t: TenantContext| async move { t.slug.to_string() })).layer(layer);
    let token = ("authorization", "Bearer x");
    assert_eq!(call(&app, "/v1/whoami", &[token]).await, (StatusCode::OK, "acme".into()));
    assert_eq!(call(&app, "/v1/whoami", &[token, ("x-tenant-id", "acme")]).await.0, StatusCode::OK);
    let swapped = call(&app, "/v1/whoami", &[token, ("x-tenant-id", "globex")]).await;
    assert_eq!(swapped, (StatusCode::NOT_FOUND, "tenant_not_found".into()), "404, not 403 or 400");

    // Also when `token` is not a configured source: it names no tenant, but still must match.
    let header_only =
        TenantLayer::new(tenants.clone(), &[TenantSource::Header], None).with_token(Arc::new(Claim(acme.id)));
    let app =
        Router::new().route("/v1/whoami", get(|t: TenantContext| async move { t.slug.to_string() })).layer(header_only);
    assert_eq!(call(&app, "/v1/whoami", &[token, ("x-tenant-id", "acme")]).await.0, StatusCode::OK);
    assert_eq!(call(&app, "/v1/whoami", &[token, ("x-tenant-id", "globex")]).await.1, "tenant_not_found");
    assert_eq!(call(&app, "/v1/whoami", &[token]).await.1, "tenant_required");
}

#[tokio::test]
async fn a_tenant_named_by_the_token_alone_is_answered_from_the_cache_as_in_full() {
    let (db, _dir) = sqlite().await;
    let tenants = tenants(&db).await;
    let acme = tenants.provision(new("acme")).await.unwrap();
    tenants.provision(new("globex")).await.unwrap();
    let sources = [TenantSource::Token, TenantSource::Subdomain, TenantSource::Header, TenantSource::Path];
    let layer = TenantLayer::new(tenants.clone(), &sources, Some("example.com")).with_token(Arc::new(Claim(acme.id)));
    let routes =
        Router::new().route("/v1/whoami", get(|t: TenantContext| async move { t.slug.to_string() })).layer(layer);
    let app = saas_tenancy::strip_path_prefix(routes);
    let token = ("authorization", "Bearer x");

    // The first request looks the tenant up; the next ones find it in this process's cache.
    for _ in 0..3 {
        assert_eq!(call(&app, "/v1/whoami", &[token]).await, (StatusCode::OK, "acme".into()));
    }
    // Every other source that names a tenant is still compared with the token's.
    for (uri, headers) in [
        ("/v1/whoami", vec![token, ("x-tenant-id", "globex")]),
        ("/t/globex/v1/whoami", vec![token]),
        ("/v1/whoami", vec![token, ("host", "globex.example.com")]),
    ] {
        assert_eq!(call(&app, uri, &headers).await.1, "tenant_not_found", "{uri} {headers:?}");
    }
    assert_eq!(call(&app, "/v1/whoami", &[token, ("host", "www.example.com")]).await.0, StatusCode::OK, "reserved");

    tenants.suspend(acme.id, "abuse").await.unwrap();
    for _ in 0..2 {
        assert_eq!(call(&app, "/v1/whoami", &[token]).await, (StatusCode::FORBIDDEN, "tenant_suspended".into()));
    }
    tenants.reactivate(acme.id).await.unwrap();
    assert_eq!(call(&app, "/v1/whoami", &[token]).await.0, StatusCode::OK);
    tenants.delete(acme.id).await.unwrap();
    for _ in 0..2 {
        assert_eq!(call(&app, "/v1/whoami", &[token]).await, (StatusCode::NOT_FOUND, "tenant_not_found".into()));
    }
}
