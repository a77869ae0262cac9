use std::{collections::HashMap, hash::BuildHasher, sync::Mutex, time::Instant};

// Seeded per process; keys are client addresses or what `key_by` picks.
use foldhash::fast::RandomState;

use async_trait::async_trait;

use super::{Decision, Quota, RateLimiter, gcra};
use crate::error::Result;

const SHARDS: usize = 64;

/// GCRA state in this process: one theoretical arrival time per key, in sharded maps.
///
/// A key whose arrival time has passed is in the same state as a key never seen, so such
/// entries are dropped whenever a shard fills up; memory stays bounded by `max_keys`. If
/// a shard is full of live keys, one of them is dropped, which at worst grants that key
/// a fresh burst.
pub struct MemoryRateLimiter {
    shards: Box<[Mutex<HashMap<String, u64, RandomState>>]>,
    hasher: RandomState,
    per_shard: usize,
    epoch: Instant,
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRateLimiter {
    /// Tracks up to one million keys.
    pub fn new() -> Self {
        Self::with_max_keys(1_000_000)
    }

    /// Tracks up to `max_keys` keys.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
            hasher: RandomState::default(),
            per_shard: (max_keys / SHARDS).max(1),
            epoch: Instant::now(),
        }
    }

    /// Decides synchronously; the lock is held for a hash lookup and a few additions.
    fn decide(&self, key: &str, quota: &Quota) -> Decision {
        // GCRA counts a request at its arrival, which the edge read; a clock read saved.
        let arrival = crate::observe::request::arrival_or_now();
        let now = arrival.saturating_duration_since(self.epoch).as_nanos() as u64;
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // One lookup for a known key; a new key is looked up again to insert it.
        if let Some(slot) = map.get_mut(key) {
            let (decision, new_tat) = gcra(quota, now, Some(*slot));
            if let Some(tat) = new_tat {
                *slot = tat;
            }
            return decision;
        }
        let (decision, new_tat) = gcra(quota, now, None);
        if let Some(tat) = new_tat {
            if map.len() >= self.per_shard {
                map.retain(|_, tat| *tat > now);
                if map.len() >= self.per_shard
                    && let Some(victim) = map.keys().next().cloned()
                {
                    map.remove(&victim);
                }
            }
            map.insert(key.to_owned(), tat);
        }
        decision
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, quota: &Quota) -> Result<Decision> {
        Ok(self.decide(key, quota))
    }

    fn check_now(&self, key: &str, quota: &Quota) -> Option<Decision> {
        Some(self.decide(key, quota))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stays_bounded_and_expired_keys_go_first() {
        let limiter = MemoryRateLimiter::with_max_keys(SHARDS * 4);
        let quota = Quota::per_second(1_000_000).burst(1);
        for i in 0..10_000 {
            assert!(limiter.decide(&format!("k{i}"), &quota).allowed);
        }
        let stored: usize = limiter.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(stored <= SHARDS * 4, "{stored} keys stored");
    }

    #[test]
    fn keys_are_independent() {
        let limiter = MemoryRateLimiter::new();
        let quota = Quota::per_minute(1);
        assert!(limiter.decide("a", &quota).allowed);
        assert!(!limiter.decide("a", &quota).allowed);
        assert!(limiter.decide("b", &quota).allowed);
    }
}
