//! Quotas (atomic under concurrency, on SQL and Redis) and feature flags (evaluation
//! order, rollout, overrides, the guards).

use std::{collections::BTreeMap, sync::Arc};

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use saas_core::{
    caller::Caller,
    config::{FeatureConfig, PlanConfig, QuotaConfig, QuotaPeriod, RolloutBy, TenancyConfig},
    db::{Db, migrate},
    id::{TenantId, UserId},
    tenant::TenantContext,
    testing::TestDatabase,
};
use saas_tenancy::{
    events,
    feature::{Features, RequireFeature},
    quota::{QuotaCounter, Quotas, RequireQuota, SqlCounter},
};
use serde_json::json;
use tower::ServiceExt;

fn config() -> TenancyConfig {
    let mut config = TenancyConfig::default();
    config.quotas.insert("seats".into(), QuotaConfig { period: None, default_limit: Some(3) });
    config.quotas.insert("api_calls".into(), QuotaConfig { period: Some(QuotaPeriod::Hour), default_limit: Some(10) });
    config.quotas.insert("storage".into(), QuotaConfig::default());
    config.features.insert("reports".into(), FeatureConfig::new(json!(false)));
    config.features.insert("theme".into(), FeatureConfig::new(json!("light")));
    config.features.insert("beta".into(), FeatureConfig::new(json!(false)).rollout(50.0, RolloutBy::Tenant));
    config.plans.insert(
        "pro".into(),
        PlanConfig {
            quotas: BTreeMap::from([("seats".into(), 50)]),
            features: BTreeMap::from([("reports".into(), json!(true)), ("theme".into(), json!("dark"))]),
        },
    );
    config
}

async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/q.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_tenancy::MIGRATIONS]).await.unwrap();
    (db, dir)
}

fn tenant(plan: &str) -> TenantContext {
    TenantContext { id: TenantId::new(), slug: "acme".into(), plan: plan.into() }
}

/// 50 concurrent consumers of a limit of 10: exactly 10 get a unit, and usage is 10.
async fn exactly_the_limit_is_granted(quotas: Quotas) {
    let free = tenant("free");
    quotas.set_override(free.id, "seats", Some(10)).await.unwrap();
    let attempts = (0..50).map(|_| {
        let (quotas, free) = (quotas.clone(), free.clone());
        tokio::spawn(async move { quotas.consume(&free, "seats", 1).await })
    });
    let results = futures::future::join_all(attempts).await;
    let granted = results.iter().filter(|r| r.as_ref().unwrap().is_ok()).count();
    assert_eq!(granted, 10, "exactly the limit is granted");
    for refused in results.iter().filter_map(|r| r.as_ref().unwrap().as_ref().err()) {
        assert_eq!((refused.status(), refused.code()), (StatusCode::FORBIDDEN, "quota_exceeded"));
    }
    let usage = quotas.usage(&free).await.unwrap();
    let seats = usage.iter().find(|u| u.quota == "seats").unwrap();
    assert_eq!((seats.used, seats.limit), (10, Some(10)));
    quotas.release(&free, "seats", 3).await.unwrap();
    assert_eq!(quotas.consume(&free, "seats", 3).await.unwrap(), 10, "released units can be taken again");
    quotas.release(&free, "seats", 100).await.unwrap();
    assert_eq!(quotas.consume(&free, "seats", 1).await.unwrap(), 1, "usage never goes below zero");
}

async fn limits_and_periods(db: &Db, quotas: Quotas) {
    let (free, pro) = (tenant("free"), tenant("pro"));
    assert_eq!(quotas.limit(&free, "seats").await.unwrap(), Some(3), "the quota's default");
    assert_eq!(quotas.limit(&pro, "seats").await.unwrap(), Some(50), "the plan's limit");
    assert_eq!(quotas.limit(&pro, "storage").await.unwrap(), None, "unlimited");
    quotas.set_override(pro.id, "seats", Some(7)).await.unwrap();
    assert_eq!(quotas.limit(&pro, "seats").await.unwrap(), Some(7), "the tenant's override");
    quotas.set_override(pro.id, "seats", None).await.unwrap();
    assert_eq!(quotas.limit(&pro, "seats").await.unwrap(), Some(50), "override removed");
    assert_eq!(quotas.limit(&pro, "sets").await.unwrap_err().code(), "quota_not_found");
    let events: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM saas_outbox").fetch_all(db.pool()).await.unwrap();
    assert_eq!(events, [events::RESOURCE_QUOTA_UPDATED; 2]);

    for _ in 0..10 {
        quotas.consume(&free, "api_calls", 1).await.unwrap();
    }
    let over = quotas.consume(&free, "api_calls", 1).await.unwrap_err();
    assert_eq!((over.status(), over.code()), (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"));
    assert!(over.to_problem().detail.unwrap().contains("until"));
    let usage = quotas.usage(&free).await.unwrap();
    let calls = usage.iter().find(|u| u.quota == "api_calls").unwrap();
    assert_eq!(calls.used, 10);
    assert!(calls.resets_at.unwrap() > time::OffsetDateTime::now_utc());
    assert_eq!(quotas.consume(&pro, "storage", 1 << 40).await.unwrap(), 1 << 40, "unlimited still counts");
}

#[tokio::test]
async fn quotas_on_sqlite() {
    let (db, _dir) = sqlite().await;
    limits_and_periods(&db, Quotas::new(db.clone(), &config(), Arc::new(SqlCounter::new(db.clone())))).await;
    exactly_the_limit_is_granted(Quotas::new(db.clone(), &config(), Arc::new(SqlCounter::new(db.clone())))).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn quotas_on_postgres_under_row_level_security() {
    let database = TestDatabase::postgres().await;
    let owner = database.connect().await;
    migrate::run(&owner, &[&saas_core::events::MIGRATIONS, &saas_tenancy::MIGRATIONS]).await.unwrap();
    let db = database.connect_as_app_role().await;
    limits_and_periods(&db, Quotas::new(db.clone(), &config(), Arc::new(SqlCounter::new(db.clone())))).await;
    exactly_the_limit_is_granted(Quotas::new(db.clone(), &config(), Arc::new(SqlCounter::new(db.clone())))).await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quota_usage").fetch_one(db.pool()).await.unwrap();
    assert_eq!(rows, 0, "usage rows are invisible outside a tenant transaction");
}

#[tokio::test]
#[ignore = "needs redis: run .ci/run"]
async fn quotas_on_redis() {
    let (db, _dir) = sqlite().await;
    let counter: Arc<dyn QuotaCounter> =
        Arc::new(saas_tenancy::quota::RedisCounter::connect(&saas_core::testing::redis_url()).await.unwrap());
    limits_and_periods(&db, Quotas::new(db.clone(), &config(), counter.clone())).await;
    exactly_the_limit_is_granted(Quotas::new(db.clone(), &config(), counter.clone())).await;

    // A deleted tenant's counters are erased from Redis.
    let quotas = Quotas::new(db.clone(), &config(), counter.clone());
    let gone = tenant("free");
    quotas.consume(&gone, "seats", 2).await.unwrap();
    quotas.consume(&gone, "api_calls", 1).await.unwrap();
    counter.erase_tenant(gone.id).await.unwrap();
    assert!(quotas.usage(&gone).await.unwrap().iter().all(|u| u.used == 0));
}

async fn call(app: &Router, tenant: Option<&TenantContext>, user: Option<UserId>) -> (StatusCode, String) {
    let mut request = Request::get("/v1/x").body(Body::empty()).unwrap();
    if let Some(tenant) = tenant {
        request.extensions_mut().insert(tenant.clone());
    }
    if let Some(user) = user {
        // As saas-auth signs a user in; the tenant of the caller does not matter here.
        request.extensions_mut().insert(Caller::new(user, TenantId::new(), Arc::new(())));
    }
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(json!(null));
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn require_quota_refuses_once_used_up() {
    let (db, _dir) = sqlite().await;
    let quotas = Quotas::new(db.clone(), &config(), Arc::new(SqlCounter::new(db.clone())));
    let app = Router::new()
        .route("/v1/x", get(|| async { "ok" }))
        .route_layer(RequireQuota::new(quotas, "api_calls").units(5));
    let free = tenant("free");
    assert_eq!(call(&app, Some(&free), None).await.0, StatusCode::OK);
    assert_eq!(call(&app, Some(&free), None).await.0, StatusCode::OK);
    assert_eq!(call(&app, Some(&free), None).await, (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded".into()));
    assert_eq!(call(&app, None, None).await, (StatusCode::BAD_REQUEST, "tenant_required".into()));
}

#[tokio::test]
async fn flags_evaluate_default_then_plan_then_tenant_then_user() {
    let (db, _dir) = sqlite().await;
    let features = Features::new(db.clone(), &config());
    let (free, pro) = (tenant("free"), tenant("pro"));
    let (ada, bob) = (UserId::new(), UserId::new());
    assert_eq!(features.evaluate(&free, None, "theme").await.unwrap(), json!("light"), "default");
    assert_eq!(features.evaluate(&pro, None, "theme").await.unwrap(), json!("dark"), "plan");
    features.set_override(pro.id, None, "theme", Some(json!("solarized"))).await.unwrap();
    assert_eq!(features.evaluate(&pro, Some(bob), "theme").await.unwrap(), json!("solarized"), "tenant override");
    features.set_override(pro.id, Some(ada), "theme", Some(json!("contrast"))).await.unwrap();
    assert_eq!(features.evaluate(&pro, Some(ada), "theme").await.unwrap(), json!("contrast"), "user override");
    assert_eq!(features.evaluate(&pro, Some(bob), "theme").await.unwrap(), json!("solarized"), "only for that user");
    features.set_override(pro.id, None, "theme", None).await.unwrap();
    assert_eq!(features.evaluate(&pro, Some(bob), "theme").await.unwrap(), json!("dark"), "override removed");

    let mismatched = features.set_override(pro.id, None, "reports", Some(json!("yes"))).await.unwrap_err();
    assert_eq!(
        (mismatched.status(), mismatched.field_errors()[0].field.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "value")
    );
    assert_eq!(features.evaluate(&pro, None, "nope").await.unwrap_err().code(), "feature_not_found");
    features.set_override(free.id, None, "reports", Some(json!(true))).await.unwrap();
    let types: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM saas_outbox ORDER BY seq").fetch_all(db.pool()).await.unwrap();
    assert_eq!(
        types,
        [events::FEATURE_CHANGED, events::FEATURE_CHANGED, events::FEATURE_CHANGED, events::FEATURE_ENABLED]
    );

    // A 50 % rollout by tenant: stable per tenant, about half of them.
    let tenants: Vec<TenantContext> = (0..400).map(|_| tenant("free")).collect();
    let mut on = 0;
    for t in &tenants {
        let first = features.is_enabled(t, Some(UserId::new()), "beta").await.unwrap();
        assert_eq!(features.is_enabled(t, Some(UserId::new()), "beta").await.unwrap(), first, "same for every user");
        on += usize::from(first);
    }
    assert!((140..=260).contains(&on), "{on} of 400");
}

#[tokio::test]
async fn require_feature_follows_overrides_at_once() {
    let (db, _dir) = sqlite().await;
    let features = Features::new(db.clone(), &config());
    let app = Router::new()
        .route("/v1/x", get(|| async { "ok" }))
        .route_layer(RequireFeature::new(features.clone(), "reports"));
    let free = tenant("free");
    assert_eq!(call(&app, Some(&free), None).await, (StatusCode::FORBIDDEN, "feature_disabled".into()));
    features.set_override(free.id, None, "reports", Some(json!(true))).await.unwrap();
    assert_eq!(call(&app, Some(&free), None).await.0, StatusCode::OK, "the cache is invalidated on change");
    let ada = UserId::new();
    features.set_override(free.id, Some(ada), "reports", Some(json!(false))).await.unwrap();
    assert_eq!(call(&app, Some(&free), Some(ada)).await.1, "feature_disabled", "the user's override");
    assert_eq!(call(&app, Some(&tenant("pro")), None).await.0, StatusCode::OK, "the plan");
    assert_eq!(call(&app, None, None).await.1, "tenant_required");
}
