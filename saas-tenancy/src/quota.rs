//! Resource quotas (aggregate ResourceQuota): named limits per tenant.
//!
//! A quota is defined in `[tenancy.quotas.<name>]`: held-and-released quotas (seats,
//! storage bytes) have no period; rate-like quotas (API calls) reset every minute, hour,
//! day or calendar month. A tenant's limit is, first found: its override (set by a platform
//! admin), its plan's value (`[tenancy.plans.<plan>] quotas`), the quota's `default_limit`;
//! else unlimited (usage is still counted).
//!
//! [`Quotas::consume`] is atomic: however many requests race, usage never passes the limit.
//! Usage lives in the database ([`SqlCounter`]) or in Redis ([`RedisCounter`]).
//!
//! ```no_run
//! # async fn demo(quotas: saas_tenancy::quota::Quotas, tenant: saas_core::tenant::TenantContext) -> saas_core::Result<()> {
//! quotas.consume(&tenant, "seats", 1).await?;   // 403 `quota_exceeded` when full
//! quotas.release(&tenant, "seats", 1).await?;   // when the seat is given back
//! # Ok(()) }
//! ```

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use saas_core::{
    config::{PlanConfig, QuotaConfig, QuotaPeriod, TenancyConfig},
    db::{Db, now_millis},
    error::{Error, FieldError, Result},
    events::{Envelope, outbox},
    http::guard::{Guard, GuardService},
    id::TenantId,
    tenant::TenantContext,
};
use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, Time};

use crate::events::ResourceQuotaUpdated;

/// One quota's usage in one period.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The quota's name.
    pub quota: String,
    /// Start of the period (Unix milliseconds); 0 for quotas without a period.
    pub period_start: i64,
    /// When the period ends, for counters that expire; `None` without a period.
    pub period_end: Option<OffsetDateTime>,
}

/// Where usage is counted. Both adapters pass the same concurrency test.
#[async_trait]
pub trait QuotaCounter: Send + Sync + 'static {
    /// Adds `n` unless that would pass `limit`: the new usage, or `None` (nothing added).
    async fn consume(&self, key: &UsageKey, n: u64, limit: u64) -> Result<Option<u64>>;
    /// Subtracts `n`, not below zero.
    async fn release(&self, key: &UsageKey, n: u64) -> Result<()>;
    /// Current usage.
    async fn used(&self, key: &UsageKey) -> Result<u64>;
    /// Forgets every counter of a deleted tenant that lives outside the database (the
    /// `quota_usage` rows go with the tenancy purge). Nothing to do by default.
    async fn erase_tenant(&self, _tenant: TenantId) -> Result<()> {
        Ok(())
    }
    /// Name for logs, e.g. `sql`.
    fn name(&self) -> &'static str;
}

/// A quota's state for one tenant, as `GET /v1/tenant/quotas` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuotaUsage {
    /// The quota's name.
    pub quota: String,
    /// The tenant's limit; `null` when unlimited.
    pub limit: Option<u64>,
    /// Usage in the current period (or held now, without a period).
    pub used: u64,
    /// `minute`, `hour`, `day` or `month`; `null` for held-and-released quotas.
    #[schema(value_type = Option<String>)]
    pub period: Option<QuotaPeriod>,
    /// When usage starts again from zero.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resets_at: Option<OffsetDateTime>,
}

/// Quota limits and usage; see the [module docs](self).
#[derive(Clone)]
pub struct Quotas {
    db: Db,
    definitions: Arc<BTreeMap<String, QuotaConfig>>,
    plans: Arc<BTreeMap<String, PlanConfig>>,
    counter: Arc<dyn QuotaCounter>,
}

impl Quotas {
    /// Quotas and plans of `config`, overrides in `db`, usage in `counter`.
    pub fn new(db: Db, config: &TenancyConfig, counter: Arc<dyn QuotaCounter>) -> Self {
        Self { db, definitions: Arc::new(config.quotas.clone()), plans: Arc::new(config.plans.clone()), counter }
    }

    fn definition(&self, quota: &str) -> Result<&QuotaConfig> {
        self.definitions
            .get(quota)
            .ok_or_else(|| Error::not_found("quota_not_found", format!("there is no quota `{quota}`")))
    }

    /// The tenant's limit of `quota`: override, else plan, else default; `None` is unlimited.
    pub async fn limit(&self, tenant: &TenantContext, quota: &str) -> Result<Option<u64>> {
        let definition = self.definition(quota)?;
        let mut tx = self.db.tenant_read(tenant.id).await?;
        let overridden: Option<i64> =
            sqlx::query_scalar("SELECT limit_value FROM quota_overrides WHERE tenant_id = $1 AND quota = $2")
                .bind(tenant.id.to_string())
                .bind(quota)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        let plan = self.plans.get(&*tenant.plan).and_then(|p| p.quotas.get(quota)).copied();
        Ok(overridden.map(|l| l.max(0) as u64).or(plan).or(definition.default_limit))
    }

    /// Takes `n` units of `quota` for the tenant, or fails with `quota_exceeded` (429 with
    /// `Retry-After` for quotas with a period, 403 otherwise) having taken nothing.
    pub async fn consume(&self, tenant: &TenantContext, quota: &str, n: u64) -> Result<u64> {
        let definition = self.definition(quota)?;
        let limit = self.limit(tenant, quota).await?;
        let key = usage_key(tenant.id, quota, definition.period, OffsetDateTime::now_utc());
        match self.counter.consume(&key, n, limit.unwrap_or(MAX_COUNT)).await? {
            Some(used) => Ok(used),
            None => Err(exceeded(quota, limit.unwrap_or(MAX_COUNT), &key)),
        }
    }

    /// Gives back `n` units of `quota` (for held quotas such as seats).
    pub async fn release(&self, tenant: &TenantContext, quota: &str, n: u64) -> Result<()> {
        let definition = self.definition(quota)?;
        self.counter.release(&usage_key(tenant.id, quota, definition.period, OffsetDateTime::now_utc()), n).await
    }

    /// Every quota's limit and current usage for the tenant.
    pub async fn usage(&self, tenant: &TenantContext) -> Result<Vec<QuotaUsage>> {
        let now = OffsetDateTime::now_utc();
        let mut out = Vec::with_capacity(self.definitions.len());
        for (name, definition) in self.definitions.iter() {
            let key = usage_key(tenant.id, name, definition.period, now);
            out.push(QuotaUsage {
                quota: name.clone(),
                limit: self.limit(tenant, name).await?,
                used: self.counter.used(&key).await?,
                period: definition.period,
                resets_at: key.period_end,
            });
        }
        Ok(out)
    }

    /// Sets (`Some`) or removes (`None`) the tenant's override of `quota`, publishing
    /// `ResourceQuotaUpdated` in the same transaction.
    pub async fn set_override(&self, tenant: TenantId, quota: &str, limit: Option<u64>) -> Result<()> {
        self.definition(quota)?;
        let stored = limit
            .map(|l| {
                i64::try_from(l).map_err(|_| {
                    Error::validation([FieldError::new("limit", "out_of_range", "expected at most 2^63 - 1")])
                })
            })
            .transpose()?;
        let mut tx = self.db.tenant_tx(tenant).await?;
        match stored {
            Some(limit) => {
                sqlx::query(
                    "INSERT INTO quota_overrides (tenant_id, quota, limit_value, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id, quota) DO UPDATE SET limit_value = excluded.limit_value, updated_at = excluded.updated_at",
                )
                .bind(tenant.to_string())
                .bind(quota)
                .bind(limit)
                .bind(now_millis())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM quota_overrides WHERE tenant_id = $1 AND quota = $2")
                    .bind(tenant.to_string())
                    .bind(quota)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let event = ResourceQuotaUpdated { tenant_id: tenant, quota: quota.to_owned(), limit };
        outbox::append(&mut tx, &Envelope::of(&event)?).await?;
        tx.commit().await
    }
}

/// The largest count both counters handle exactly (Lua numbers are doubles).
const MAX_COUNT: u64 = 1 << 53;

fn exceeded(quota: &str, limit: u64, key: &UsageKey) -> Error {
    let detail = format!("the `{quota}` quota of {limit} is used up");
    match key.period_end {
        None => Error::forbidden("quota_exceeded", detail),
        Some(end) => {
            let wait = (end - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
            Error::new(http::StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", format!("{detail} until {end}"))
                .with_retry_after(Duration::from_secs(wait.whole_seconds().max(1) as u64))
        }
    }
}

/// The usage key of `quota` at `now`: the period containing it, in UTC.
pub fn usage_key(tenant: TenantId, quota: &str, period: Option<QuotaPeriod>, now: OffsetDateTime) -> UsageKey {
    let (start, end) = match period {
        None => return UsageKey { tenant, quota: quota.to_owned(), period_start: 0, period_end: None },
        Some(period) => period_bounds(period, now),
    };
    UsageKey { tenant, quota: quota.to_owned(), period_start: millis(start), period_end: Some(end) }
}

fn period_bounds(period: QuotaPeriod, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let now = now.to_offset(time::UtcOffset::UTC);
    let day = now.replace_time(Time::MIDNIGHT);
    match period {
        QuotaPeriod::Minute => {
            let start = now.replace_time(Time::from_hms(now.hour(), now.minute(), 0).expect("valid time"));
            (start, start + time::Duration::MINUTE)
        }
        QuotaPeriod::Hour => {
            let start = now.replace_time(Time::from_hms(now.hour(), 0, 0).expect("valid time"));
            (start, start + time::Duration::HOUR)
        }
        QuotaPeriod::Day => (day, day + time::Duration::DAY),
        QuotaPeriod::Month => {
            let first = Date::from_calendar_date(now.year(), now.month(), 1).expect("the 1st exists");
            let (year, month) = if now.month() == Month::December {
                (now.year() + 1, Month::January)
            } else {
                (now.year(), now.month().next())
            };
            let next = Date::from_calendar_date(year, month, 1).expect("the 1st exists");
            (first.midnight().assume_utc(), next.midnight().assume_utc())
        }
    }
}

fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Usage counted in the `quota_usage` table, in a transaction bound to the tenant.
#[derive(Clone)]
pub struct SqlCounter {
    db: Db,
}

impl SqlCounter {
    /// Counts in `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl QuotaCounter for SqlCounter {
    async fn consume(&self, key: &UsageKey, n: u64, limit: u64) -> Result<Option<u64>> {
        let (n, limit) = (n.min(MAX_COUNT) as i64, limit.min(MAX_COUNT) as i64);
        let mut tx = self.db.tenant_tx(key.tenant).await?;
        sqlx::query(
            "INSERT INTO quota_usage (tenant_id, quota, period_start, used) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (tenant_id, quota, period_start) DO NOTHING",
        )
        .bind(key.tenant.to_string())
        .bind(&key.quota)
        .bind(key.period_start)
        .execute(&mut *tx)
        .await?;
        // The condition is checked on the locked row: concurrent consumers queue on it and
        // each sees the others' increments (PostgreSQL re-evaluates it after the lock).
        let used: Option<i64> = sqlx::query_scalar(
            "UPDATE quota_usage SET used = used + $4 \
             WHERE tenant_id = $1 AND quota = $2 AND period_start = $3 AND used + $4 <= $5 RETURNING used",
        )
        .bind(key.tenant.to_string())
        .bind(&key.quota)
        .bind(key.period_start)
        .bind(n)
        .bind(limit)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(used.map(|u| u as u64))
    }

    async fn release(&self, key: &UsageKey, n: u64) -> Result<()> {
        let mut tx = self.db.tenant_tx(key.tenant).await?;
        sqlx::query(
            "UPDATE quota_usage SET used = CASE WHEN used > $4 THEN used - $4 ELSE 0 END \
             WHERE tenant_id = $1 AND quota = $2 AND period_start = $3",
        )
        .bind(key.tenant.to_string())
        .bind(&key.quota)
        .bind(key.period_start)
        .bind(n.min(MAX_COUNT) as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    async fn used(&self, key: &UsageKey) -> Result<u64> {
        let mut tx = self.db.tenant_read(key.tenant).await?;
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT used FROM quota_usage WHERE tenant_id = $1 AND quota = $2 AND period_start = $3",
        )
        .bind(key.tenant.to_string())
        .bind(&key.quota)
        .bind(key.period_start)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(used.unwrap_or(0).max(0) as u64)
    }

    fn name(&self) -> &'static str {
        "sql"
    }
}

/// Usage counted in Redis, one key per tenant, quota and period, expiring with the period.
#[cfg(feature = "redis")]
#[derive(Clone)]
pub struct RedisCounter {
    conn: redis::aio::ConnectionManager,
    consume: redis::Script,
    release: redis::Script,
}

#[cfg(feature = "redis")]
impl RedisCounter {
    /// Connects to `redis://…`.
    pub async fn connect(url: &str) -> Result<Self> {
        let conn = saas_core::cache::RedisCache::connect(url).await?.connection();
        // Check and add in one atomic step: no other client runs between GET and INCRBY.
        let consume = redis::Script::new(
            "local used = tonumber(redis.call('GET', KEYS[1]) or '0')
             if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return -1 end
             local v = redis.call('INCRBY', KEYS[1], ARGV[1])
             if tonumber(ARGV[3]) > 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
             return v",
        );
        let release = redis::Script::new(
            "local used = tonumber(redis.call('GET', KEYS[1]) or '0')
             if used == 0 then return 0 end
             local v = math.max(used - tonumber(ARGV[1]), 0)
             redis.call('SET', KEYS[1], v, 'KEEPTTL')
             return v",
        );
        Ok(Self { conn, consume, release })
    }

    fn key(key: &UsageKey) -> String {
        format!("quota:{}:{}:{}", key.tenant, key.quota, key.period_start)
    }
}

#[cfg(feature = "redis")]
fn counter_unavailable(e: redis::RedisError) -> Error {
    Error::unavailable("quota_store_unavailable", "the quota store is not reachable").with_source(e)
}

#[cfg(feature = "redis")]
#[async_trait]
impl QuotaCounter for RedisCounter {
    async fn consume(&self, key: &UsageKey, n: u64, limit: u64) -> Result<Option<u64>> {
        // Keep the key a little past its period so late readers still see the final count.
        let expire_at = key.period_end.map_or(0, |end| millis(end) + 60_000);
        let used: i64 = self
            .consume
            .key(Self::key(key))
            .arg(n.min(MAX_COUNT))
            .arg(limit.min(MAX_COUNT))
            .arg(expire_at)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(counter_unavailable)?;
        Ok((used >= 0).then_some(used as u64))
    }

    async fn release(&self, key: &UsageKey, n: u64) -> Result<()> {
        let _: i64 = self
            .release
            .key(Self::key(key))
            .arg(n.min(MAX_COUNT))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(counter_unavailable)?;
        Ok(())
    }

    async fn used(&self, key: &UsageKey) -> Result<u64> {
        let used: Option<u64> =
            redis::AsyncCommands::get(&mut self.conn.clone(), Self::key(key)).await.map_err(counter_unavailable)?;
        Ok(used.unwrap_or(0))
    }

    async fn erase_tenant(&self, tenant: TenantId) -> Result<()> {
        saas_core::cache::delete_matching(&mut self.conn.clone(), &format!("quota:{tenant}:*"))
            .await
            .map_err(counter_unavailable)
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn periods_are_utc_calendar_units() {
        let now = datetime!(2026-12-31 23:59:30.5 UTC);
        let bounds = |p| period_bounds(p, now);
        assert_eq!(bounds(QuotaPeriod::Minute), (datetime!(2026-12-31 23:59 UTC), datetime!(2027-01-01 00:00 UTC)));
        assert_eq!(bounds(QuotaPeriod::Hour), (datetime!(2026-12-31 23:00 UTC), datetime!(2027-01-01 00:00 UTC)));
        assert_eq!(bounds(QuotaPeriod::Day), (datetime!(2026-12-31 00:00 UTC), datetime!(2027-01-01 00:00 UTC)));
        assert_eq!(bounds(QuotaPeriod::Month), (datetime!(2026-12-01 00:00 UTC), datetime!(2027-01-01 00:00 UTC)));
        let feb = period_bounds(QuotaPeriod::Month, datetime!(2028-02-29 12:00 +02:00));
        assert_eq!(feb, (datetime!(2028-02-01 00:00 UTC), datetime!(2028-03-01 00:00 UTC)));
        let key = usage_key(TenantId::new(), "seats", None, now);
        assert_eq!((key.period_start, key.period_end), (0, None));
    }
}

/// Takes `n` units of a quota for every request it guards (e.g. API calls): the request
/// goes on when they were available, else it gets `quota_exceeded`. The tenant comes from
/// the resolution layer (400 `tenant_required` without one).
///
/// ```no_run
/// # fn demo(quotas: saas_tenancy::quota::Quotas) {
/// use axum::{Router, routing::post};
/// use saas_tenancy::quota::RequireQuota;
///
/// let app: Router = Router::new()
///     .route("/v1/exports", post(|| async { "started" }))
///     .route_layer(RequireQuota::new(quotas, "exports"));
/// # }
/// ```
#[derive(Clone)]
pub struct RequireQuota {
    quotas: Quotas,
    quota: Arc<str>,
    units: u64,
}

impl RequireQuota {
    /// Takes one unit of `quota` per request.
    pub fn new(quotas: Quotas, quota: &str) -> Self {
        Self { quotas, quota: quota.into(), units: 1 }
    }

    /// Takes `units` per request instead of one.
    pub fn units(mut self, units: u64) -> Self {
        self.units = units;
        self
    }
}

impl Guard for RequireQuota {
    async fn check(&self, parts: &mut http::request::Parts) -> Result<()> {
        let tenant = TenantContext::of(parts)?;
        self.quotas.consume(&tenant, &self.quota, self.units).await.map(drop)
    }
}

impl<S> tower::Layer<S> for RequireQuota {
    type Service = GuardService<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(self.clone(), inner)
    }
}
