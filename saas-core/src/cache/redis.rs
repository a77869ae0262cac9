use std::time::Duration;

use async_trait::async_trait;
use redis::{
    AsyncCommands, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::Cache;
use crate::error::{Error, Result};

/// Cache on Redis through a multiplexed, auto-reconnecting connection.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    increment: Script,
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::unavailable("cache_unavailable", "the cache is not reachable").with_source(e)
}

fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl RedisCache {
    /// Connects to `redis://host:port/db`.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        // Fail fast: a Redis that does not answer must not stall start-up or requests.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2)
            .set_exponent_base(2)
            .set_factor(100)
            .set_max_delay(1000);
        let connecting = ConnectionManager::new_with_config(client, config);
        let conn = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| Error::unavailable("cache_unavailable", "the cache did not answer within 10 s"))?
            .map_err(unavailable)?;
        // INCRBY and set the expiry only on creation, in one atomic step.
        let increment = Script::new(
            "local v = redis.call('INCRBY', KEYS[1], ARGV[1])
             if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
             return v",
        );
        Ok(Self { conn, increment })
    }

    /// The connection, for adapters that need other commands (e.g. the rate limiter).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// Deletes every key matching the glob `pattern` (SCAN in batches, never `KEYS`, so a large
/// keyspace does not block the server); how adapters erase a deleted tenant's keys.
pub async fn delete_matching(conn: &mut ConnectionManager, pattern: &str) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(500).query_async(conn).await?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query_async::<()>(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.conn.clone().get(key).await.map_err(unavailable)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.conn.clone().pset_ex::<_, _, ()>(key, value, millis(ttl)).await.map_err(unavailable)
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let reply: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(reply.is_some())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.conn.clone().del::<_, ()>(key).await.map_err(unavailable)
    }

    async fn increment(&self, key: &str, delta: i64, ttl: Duration) -> Result<i64> {
        self.increment
            .key(key)
            .arg(delta)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<()> {
        redis::cmd("PING").query_async::<String>(&mut self.conn.clone()).await.map_err(unavailable)?;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn an_unreachable_redis_fails_fast() {
        let start = std::time::Instant::now();
        let error = super::RedisCache::connect("redis://127.0.0.1:1").await.err().expect("nothing listens on port 1");
        assert_eq!(error.code(), "cache_unavailable");
        assert!(start.elapsed() < std::time::Duration::from_secs(15), "gave up after {:?}", start.elapsed());
    }

    #[tokio::test]
    #[ignore = "needs redis: set SAAS_TEST_REDIS_URL or run .ci/run"]
    async fn passes_the_conformance_suite() {
        let url = std::env::var("SAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let cache = super::RedisCache::connect(&url).await.expect("redis reachable");
        crate::cache::conformance::run(&cache).await;
    }
}
