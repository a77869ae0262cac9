use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, aio::ConnectionManager};

use super::{Decision, Quota, RateLimiter};
use crate::error::{Error, Result};

/// GCRA state in Redis, shared by every instance: one Lua script per check, using the
/// Redis server's clock so instances with skewed clocks agree.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: ConnectionManager,
    script: Script,
    prefix: String,
}

const GCRA: &str = r"
local t = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + t
if new_tat - now > tolerance then
  return {0, 0, new_tat - tolerance - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((tolerance - (new_tat - now)) / t), 0, new_tat - now}
";

impl RedisRateLimiter {
    /// Uses `conn`; keys are `ratelimit:<key>`.
    pub fn new(conn: ConnectionManager) -> Self {
        Self { conn, script: Script::new(GCRA), prefix: "ratelimit:".into() }
    }

    /// Connects to `redis://…`.
    pub async fn connect(url: &str) -> Result<Self> {
        let cache = crate::cache::RedisCache::connect(url).await?;
        Ok(Self::new(cache.connection()))
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, quota: &Quota) -> Result<Decision> {
        // Microseconds: Lua numbers are doubles, exact to 2^53.
        let t = (quota.emission_interval.as_micros() as u64).max(1);
        let (allowed, remaining, retry, reset): (i64, i64, i64, i64) = self
            .script
            .key(format!("{}{key}", self.prefix))
            .arg(t)
            .arg(t * u64::from(quota.burst))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| {
                Error::unavailable("rate_limiter_unavailable", "the rate limiter store is not reachable").with_source(e)
            })?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: quota.burst,
            remaining: remaining.max(0) as u32,
            retry_after: Duration::from_micros(retry.max(0) as u64),
            reset_after: Duration::from_micros(reset.max(0) as u64),
        })
    }
}
