//! Feature flags (aggregate Feature): boolean, numeric and variant flags per tenant and user.
//!
//! A flag is defined in `[tenancy.features.<name>]`. Its value for a request is, last one
//! wins: the default (or, for the tenants or users a percentage rollout picks, the rollout
//! value) < the plan's value < the tenant's override < the user's override. Overrides are
//! set by platform admins.
//!
//! The tenant always comes from the server-side [`TenantContext`], never from client input.
//! A tenant's overrides are cached in memory (one database read per tenant per TTL), so a
//! check is a few map lookups; see the `features` criterion benchmark.
//!
//! ```no_run
//! # async fn demo(features: saas_tenancy::feature::Features, tenant: saas_core::tenant::TenantContext) -> saas_core::Result<()> {
//! if features.is_enabled(&tenant, None, "reports").await? {
//!     // …
//! }
//! let theme = features.evaluate(&tenant, None, "theme").await?; // e.g. "dark"
//! # Ok(()) }
//! ```

use std::{collections::BTreeMap, collections::HashMap, sync::Arc, time::Duration};

use http::request::Parts;
use saas_core::{
    cache::LocalCache,
    caller::Caller,
    config::{FeatureConfig, PlanConfig, RolloutBy, TenancyConfig},
    db::{Db, now_millis},
    error::{Error, Result},
    events::{Envelope, outbox},
    http::guard::{Guard, GuardService},
    id::{TenantId, UserId},
    tenant::TenantContext,
};
use serde_json::Value;

use crate::events::{FeatureChanged, FeatureDisabled, FeatureEnabled};

/// A tenant's overrides: tenant-wide, and per user.
#[derive(Debug, Default)]
struct Overrides {
    tenant: HashMap<String, Value>,
    users: HashMap<(String, UserId), Value>,
}

/// Flag evaluation; see the [module docs](self).
#[derive(Clone)]
pub struct Features {
    db: Db,
    definitions: Arc<BTreeMap<String, FeatureConfig>>,
    plans: Arc<BTreeMap<String, PlanConfig>>,
    overrides: Arc<LocalCache<TenantId, Arc<Overrides>>>,
    /// Bumped by every override change: a load that began before a change must not cache
    /// what it read.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Features {
    /// Flags and plans of `config`, overrides in `db`, cached for `tenancy.cache_ttl_secs`.
    pub fn new(db: Db, config: &TenancyConfig) -> Self {
        Self {
            db,
            definitions: Arc::new(config.features.clone()),
            plans: Arc::new(config.plans.clone()),
            overrides: Arc::new(LocalCache::new(100_000, Duration::from_secs(config.cache_ttl_secs))),
            generation: Default::default(),
        }
    }

    /// The flag's value for the tenant (and user, when known).
    pub async fn evaluate(&self, tenant: &TenantContext, user: Option<UserId>, feature: &str) -> Result<Value> {
        let definition = self
            .definitions
            .get(feature)
            .ok_or_else(|| Error::not_found("feature_not_found", format!("there is no feature `{feature}`")))?;
        let overrides = self.overrides_of(tenant.id).await?;
        Ok(self.value(definition, feature, tenant, user, &overrides).clone())
    }

    /// Whether the flag is on: `true`, a number other than 0, or a variant other than `off`.
    pub async fn is_enabled(&self, tenant: &TenantContext, user: Option<UserId>, feature: &str) -> Result<bool> {
        Ok(is_on(&self.evaluate(tenant, user, feature).await?))
    }

    /// Every flag's value for the tenant (and user).
    pub async fn all(&self, tenant: &TenantContext, user: Option<UserId>) -> Result<BTreeMap<String, Value>> {
        let overrides = self.overrides_of(tenant.id).await?;
        Ok(self
            .definitions
            .iter()
            .map(|(name, definition)| (name.clone(), self.value(definition, name, tenant, user, &overrides).clone()))
            .collect())
    }

    fn value<'a>(
        &'a self,
        definition: &'a FeatureConfig,
        feature: &str,
        tenant: &TenantContext,
        user: Option<UserId>,
        overrides: &'a Overrides,
    ) -> &'a Value {
        if let Some(value) = user.and_then(|u| overrides.users.get(&(feature.to_owned(), u))) {
            return value;
        }
        if let Some(value) = overrides.tenant.get(feature) {
            return value;
        }
        if let Some(value) = self.plans.get(&*tenant.plan).and_then(|p| p.features.get(feature)) {
            return value;
        }
        static TRUE: Value = Value::Bool(true);
        match definition.rollout_percent {
            Some(percent) => {
                let picked = match definition.rollout_by {
                    RolloutBy::Tenant => in_rollout(feature, &tenant.id.to_string(), percent),
                    RolloutBy::User => user.is_some_and(|u| in_rollout(feature, &u.to_string(), percent)),
                };
                if picked { definition.rollout_value.as_ref().unwrap_or(&TRUE) } else { &definition.default }
            }
            None => &definition.default,
        }
    }

    async fn overrides_of(&self, tenant: TenantId) -> Result<Arc<Overrides>> {
        if let Some(cached) = self.overrides.get(&tenant) {
            return Ok(cached);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut tx = self.db.tenant_read(tenant).await?;
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT feature, user_id, value FROM feature_overrides WHERE tenant_id = $1")
                .bind(tenant.to_string())
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        let mut overrides = Overrides::default();
        for (feature, user, value) in rows {
            let Ok(value) = serde_json::from_str::<Value>(&value) else { continue };
            match user.parse::<UserId>() {
                Ok(user) => overrides.users.insert((feature, user), value),
                Err(_) => overrides.tenant.insert(feature, value),
            };
        }
        let overrides = Arc::new(overrides);
        if self.generation.load(std::sync::atomic::Ordering::Acquire) == generation {
            self.overrides.insert(tenant, overrides.clone());
        }
        Ok(overrides)
    }

    /// Sets (`Some`) or removes (`None`) an override of `feature` for the tenant, or for one
    /// of its users, publishing `FeatureEnabled`, `FeatureDisabled` or `FeatureChanged`.
    pub async fn set_override(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        feature: &str,
        value: Option<Value>,
    ) -> Result<()> {
        let definition = self
            .definitions
            .get(feature)
            .ok_or_else(|| Error::not_found("feature_not_found", format!("there is no feature `{feature}`")))?;
        if let Some(value) = &value {
            if std::mem::discriminant(value) != std::mem::discriminant(&definition.default) {
                return Err(Error::validation([saas_core::error::FieldError::new(
                    "value",
                    "type",
                    format!("expected a value of the same type as the default, {}", definition.default),
                )]));
            }
        }
        let user_key = user.map(|u| u.to_string()).unwrap_or_default();
        let mut tx = self.db.tenant_tx(tenant).await?;
        match &value {
            Some(value) => {
                sqlx::query(
                    "INSERT INTO feature_overrides (tenant_id, feature, user_id, value, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, feature, user_id) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .bind(tenant.to_string())
                .bind(feature)
                .bind(&user_key)
                .bind(value.to_string())
                .bind(now_millis())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM feature_overrides WHERE tenant_id = $1 AND feature = $2 AND user_id = $3")
                    .bind(tenant.to_string())
                    .bind(feature)
                    .bind(&user_key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let (tenant_id, feature) = (tenant, feature.to_owned());
        let event = match &value {
            Some(Value::Bool(true)) => Envelope::of(&FeatureEnabled { tenant_id, feature, user })?,
            Some(Value::Bool(false)) => Envelope::of(&FeatureDisabled { tenant_id, feature, user })?,
            _ => Envelope::of(&FeatureChanged { tenant_id, feature, user, value: value.clone() })?,
        };
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        self.invalidate(tenant);
        Ok(())
    }

    /// Forgets the cached overrides of `tenant` (after changes made elsewhere). Other
    /// servers keep theirs until `tenancy.cache_ttl_secs` passes.
    pub fn invalidate(&self, tenant: TenantId) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.overrides.invalidate(&tenant);
    }
}

/// Whether a flag value means "on".
pub fn is_on(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty() && s != "off",
        _ => false,
    }
}

/// Whether `subject` (a tenant or user id) is among the `percent` % a rollout of `feature`
/// picks: a stable hash (FNV-1a, the same on every machine and release) of both, so the
/// same subject always gets the same answer and different flags pick different subjects.
pub fn in_rollout(feature: &str, subject: &str, percent: f64) -> bool {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in feature.bytes().chain([b':']).chain(subject.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    ((hash % 10_000) as f64) < percent * 100.0
}

/// Lets a request through only when a flag is on for its tenant (and user, when an
/// authentication layer has put a [`Caller`] into the request): 403 `feature_disabled`
/// otherwise, 400 `tenant_required` without a tenant.
///
/// ```no_run
/// # fn demo(features: saas_tenancy::feature::Features) {
/// use axum::{Router, routing::get};
/// use saas_tenancy::feature::RequireFeature;
///
/// let app: Router = Router::new()
///     .route("/v1/reports", get(|| async { "…" }))
///     .route_layer(RequireFeature::new(features, "reports"));
/// # }
/// ```
#[derive(Clone)]
pub struct RequireFeature {
    features: Features,
    feature: Arc<str>,
}

impl RequireFeature {
    /// Requires `feature` to be on.
    pub fn new(features: Features, feature: &str) -> Self {
        Self { features, feature: feature.into() }
    }
}

impl Guard for RequireFeature {
    async fn check(&self, parts: &mut Parts) -> Result<()> {
        let tenant = TenantContext::of(parts)?;
        let user = Caller::of(&parts.extensions).map(|caller| caller.user);
        if self.features.is_enabled(&tenant, user, &self.feature).await? {
            Ok(())
        } else {
            Err(Error::forbidden("feature_disabled", format!("the `{}` feature is not enabled", self.feature)))
        }
    }
}

impl<S> tower::Layer<S> for RequireFeature {
    type Service = GuardService<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(self.clone(), inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_mean_on() {
        for on in [Value::Bool(true), 1.into(), 0.5.into(), "dark".into()] {
            assert!(is_on(&on), "{on}");
        }
        for off in [Value::Bool(false), 0.into(), "off".into(), "".into(), Value::Null] {
            assert!(!is_on(&off), "{off}");
        }
    }

    #[test]
    fn rollouts_are_stable_and_near_their_percentage() {
        let ids: Vec<String> = (0..10_000).map(|_| UserId::new().to_string()).collect();
        for percent in [0.0, 5.0, 20.0, 50.0, 100.0] {
            let picked = ids.iter().filter(|id| in_rollout("reports", id, percent)).count();
            let expected = percent * 100.0;
            assert!((picked as f64 - expected).abs() <= 200.0, "{percent} %: {picked} of 10 000");
        }
        let first: Vec<bool> = ids.iter().map(|id| in_rollout("reports", id, 30.0)).collect();
        let again: Vec<bool> = ids.iter().map(|id| in_rollout("reports", id, 30.0)).collect();
        assert_eq!(first, again, "the same subject always gets the same answer");
        let other: Vec<bool> = ids.iter().map(|id| in_rollout("exports", id, 30.0)).collect();
        assert_ne!(first, other, "another flag picks other subjects");
        // Widening a rollout keeps everyone who had it.
        assert!(ids.iter().all(|id| !in_rollout("reports", id, 10.0) || in_rollout("reports", id, 30.0)));
    }
}
