use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::{future::Cache, ops::compute::Op};

use super::{Decision, Quota, RateLimiter, gcra};
use crate::error::Result;

/// GCRA state in this process; entries expire once they equal a fresh state.
#[derive(Clone)]
pub struct MemoryRateLimiter {
    state: Cache<String, u64>,
    epoch: Instant,
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRateLimiter {
    /// Tracks up to one million keys (the least recently seen are dropped first).
    pub fn new() -> Self {
        Self {
            // One hour covers the refill time of any sane quota.
            state: Cache::builder().max_capacity(1_000_000).time_to_idle(Duration::from_secs(3600)).build(),
            epoch: Instant::now(),
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, quota: &Quota) -> Result<Decision> {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut decision = None;
        self.state
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let (d, new_tat) = gcra(quota, now, current.map(|e| e.into_value()));
                decision = Some(d);
                std::future::ready(match new_tat {
                    Some(tat) => Op::Put(tat),
                    None => Op::Nop,
                })
            })
            .await;
        Ok(decision.expect("compute closure ran"))
    }
}
