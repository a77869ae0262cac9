//! Cost of a feature-flag check once the tenant's overrides are cached (goal: under 1 µs).
//!
//! `cargo bench -p saas-tenancy --bench features`. Next to it, as a baseline in the same
//! run, one `HashMap` lookup of a boolean, the least any flag check can cost.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::{collections::HashMap, hint::black_box};

use criterion::{Criterion, criterion_group, criterion_main};
use saas_core::{
    config::{FeatureConfig, PlanConfig, RolloutBy, TenancyConfig},
    db::{Db, migrate},
    id::{TenantId, UserId},
    tenant::TenantContext,
};
use saas_tenancy::feature::Features;
use serde_json::json;

fn config() -> TenancyConfig {
    let mut config = TenancyConfig::default();
    for i in 0..20 {
        config.features.insert(format!("flag_{i}"), FeatureConfig::new(json!(false)));
    }
    config.features.insert("reports".into(), FeatureConfig::new(json!(false)).rollout(30.0, RolloutBy::User));
    config
        .plans
        .insert("pro".into(), PlanConfig { features: [("flag_3".into(), json!(true))].into(), ..Default::default() });
    config
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (features, tenant) = rt.block_on(async {
        let db = Db::connect(&format!("sqlite://{}/b.db", dir.path().display()), Default::default()).await.unwrap();
        migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_tenancy::MIGRATIONS]).await.unwrap();
        let features = Features::new(db, &config());
        let tenant = TenantContext { id: TenantId::new(), slug: "acme".into(), plan: "pro".into() };
        features.set_override(tenant.id, None, "flag_7", Some(json!(true))).await.unwrap();
        features.is_enabled(&tenant, None, "flag_7").await.unwrap(); // fills the cache
        (features, tenant)
    });
    let user = Some(UserId::new());

    let mut group = c.benchmark_group("feature_check");
    let baseline: HashMap<String, bool> = (0..20).map(|i| (format!("flag_{i}"), i % 2 == 0)).collect();
    group.bench_function("baseline_hashmap_lookup", |b| b.iter(|| black_box(baseline.get(black_box("flag_7")))));
    group.bench_function("tenant_override", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(features.is_enabled(&tenant, user, black_box("flag_7")).await.unwrap()) })
    });
    group.bench_function("plan_value", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(features.is_enabled(&tenant, user, black_box("flag_3")).await.unwrap()) })
    });
    group.bench_function("user_rollout", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(features.is_enabled(&tenant, user, black_box("reports")).await.unwrap()) })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
