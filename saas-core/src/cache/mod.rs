//! The cache port: bytes with a time to live, plus atomic counters.
//!
//! Adapters: [`MemoryCache`] (moka, in this process) and, with feature `redis`,
//! [`RedisCache`] (shared by all instances). Both pass the same conformance suite
//! (`conformance::run`, feature `testing`).
//!
//! [`LocalCache`] is not an adapter of the port: a bounded map in this process for short-lived
//! values read on every request (verified tokens, resolved tenants), with no I/O and no
//! serialisation. [`CredentialCache`] builds on it for values found by a secret (verified
//! access tokens and API keys): the secret is compared only in constant time.
//!
//! ```
//! # async fn demo() -> saas_core::error::Result<()> {
//! use std::time::Duration;
//! use saas_core::cache::{Cache, CacheExt, MemoryCache};
//!
//! let cache = MemoryCache::new(10_000);
//! cache.set_json("plan:pro", &serde_json::json!({"seats": 10}), Duration::from_secs(60)).await?;
//! let plan: Option<serde_json::Value> = cache.get_json("plan:pro").await?;
//! assert_eq!(plan.unwrap()["seats"], 10);
//! assert_eq!(cache.increment("logins:usr_1", 1, Duration::from_secs(60)).await?, 1);
//! # Ok(()) }
//! ```

#[cfg(feature = "testing")]
pub mod conformance;
mod credential;
mod local;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};

#[cfg(feature = "redis")]
pub use self::redis::{RedisCache, delete_matching};
pub use credential::CredentialCache;
pub use local::LocalCache;
pub(crate) use local::shard_of;
pub use memory::MemoryCache;

use crate::error::{Error, Result};

/// A key-value cache with per-entry expiry and atomic counters.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, unless missing or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `value` under `key` for `ttl`, replacing any value.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()>;

    /// Stores `value` only if `key` holds nothing; true if it stored. Atomic: of several
    /// concurrent callers exactly one gets true.
    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool>;

    /// Removes `key`.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Adds `delta` to the counter at `key` and returns the new value. A missing counter
    /// starts at 0 and expires `ttl` after its creation; increments do not extend it.
    /// The stored value reads back through [`get`](Self::get) as decimal text.
    async fn increment(&self, key: &str, delta: i64, ttl: Duration) -> Result<i64>;

    /// Checks that the cache answers; used by `/health/ready`.
    async fn ping(&self) -> Result<()>;

    /// Name for logs and health reports, e.g. `memory` or `redis`.
    fn name(&self) -> &'static str;
}

/// JSON helpers for any [`Cache`].
#[async_trait]
pub trait CacheExt: Cache {
    /// Reads and deserializes a JSON value; an undecodable entry counts as missing.
    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        Ok(self.get(key).await?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Serializes and stores a JSON value.
    async fn set_json<T: Serialize + Sync>(&self, key: &str, value: &T, ttl: Duration) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(Error::internal)?;
        self.set(key, &bytes, ttl).await
    }
}

impl<C: Cache + ?Sized> CacheExt for C {}

/// Connects the cache a URL names: `memory://` or `redis://…`.
pub async fn connect(url: &str, max_entries: u64) -> Result<std::sync::Arc<dyn Cache>> {
    if url == "memory://" {
        return Ok(std::sync::Arc::new(MemoryCache::new(max_entries)));
    }
    #[cfg(feature = "redis")]
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        return Ok(std::sync::Arc::new(RedisCache::connect(url).await?));
    }
    Err(Error::internal(anyhow::anyhow!("unsupported cache URL scheme (is the `redis` feature enabled?)")))
}
