use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::{Expiry, future::Cache as Moka, ops::compute::Op};

use super::Cache;
use crate::error::Result;

#[derive(Clone)]
struct Entry {
    value: Vec<u8>,
    ttl: Duration,
    /// Counters keep the expiry of their creation.
    keep_expiry: bool,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(&self, _: &String, entry: &Entry, _: Instant, left: Option<Duration>) -> Option<Duration> {
        if entry.keep_expiry { left } else { Some(entry.ttl) }
    }
}

/// In-process cache on moka: bounded by entry count, per-entry expiry, atomic per key.
#[derive(Clone)]
pub struct MemoryCache {
    inner: Moka<String, Entry>,
}

impl MemoryCache {
    /// A cache holding at most `max_entries` entries (least recently used go first).
    pub fn new(max_entries: u64) -> Self {
        Self { inner: Moka::builder().max_capacity(max_entries).expire_after(PerEntryTtl).build() }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.get(key).await.map(|e| e.value))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.inner.insert(key.to_owned(), Entry { value: value.to_vec(), ttl, keep_expiry: false }).await;
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let entry = self
            .inner
            .entry(key.to_owned())
            .or_insert_with(async { Entry { value: value.to_vec(), ttl, keep_expiry: false } })
            .await;
        Ok(entry.is_fresh())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.invalidate(key).await;
        Ok(())
    }

    async fn increment(&self, key: &str, delta: i64, ttl: Duration) -> Result<i64> {
        let mut result = 0;
        self.inner
            .entry(key.to_owned())
            .and_compute_with(|current| {
                let (now, ttl) = match current {
                    Some(e) => {
                        let old: i64 =
                            std::str::from_utf8(&e.value().value).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                        (old.saturating_add(delta), e.value().ttl)
                    }
                    None => (delta, ttl),
                };
                result = now;
                let entry = Entry { value: now.to_string().into_bytes(), ttl, keep_expiry: true };
                std::future::ready(Op::Put(entry))
            })
            .await;
        Ok(result)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::cache::conformance::run(&super::MemoryCache::new(10_000)).await;
    }
}
