use std::{hash::BuildHasher, net::IpAddr, sync::Mutex, time::Instant};

// Seeded per process; keys are client addresses or what `key_by` picks.
use foldhash::fast::RandomState;
use hashbrown::HashTable;

use async_trait::async_trait;

use super::{Decision, Quota, RateLimiter, gcra};
use crate::error::Result;

const SHARDS: usize = 64;

/// GCRA state in this process: one theoretical arrival time per key, in sharded tables.
///
/// A key whose arrival time has passed is in the same state as a key never seen, so such
/// entries are dropped whenever a shard fills up; memory stays bounded by `max_keys`. If
/// a shard is full of live keys, one of them is dropped, which at worst grants that key
/// a fresh burst.
///
/// Client addresses (the default key of [`RateLimitLayer`](super::RateLimitLayer)) are
/// kept as addresses, not written out as `ip:…` text: apart from the text keys that
/// [`key_by`](super::RateLimitLayer::key_by) picks, even one that reads the same.
pub struct MemoryRateLimiter {
    shards: Box<[Mutex<Table>]>,
    hasher: RandomState,
    per_shard: usize,
    epoch: Instant,
}

// A table, not a map: the hash that picked the shard finds the slot too (see `shard_of`).
type Table = HashTable<Slot>;

/// A key's theoretical arrival time, nanoseconds after `epoch`.
struct Slot {
    key: Key,
    tat: u64,
}

/// What a slot is kept under: a client address (`None`: the peer is unknown), or text.
#[derive(PartialEq, Eq)]
enum Key {
    Peer(Option<IpAddr>),
    Text(Box<str>),
}

/// A [`Key`] as it is looked up, without an allocation; the only form that is hashed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum KeyRef<'a> {
    Peer(Option<IpAddr>),
    Text(&'a str),
}

impl Key {
    fn as_ref(&self) -> KeyRef<'_> {
        match self {
            Key::Peer(ip) => KeyRef::Peer(*ip),
            Key::Text(text) => KeyRef::Text(text),
        }
    }
}

impl KeyRef<'_> {
    fn to_owned(self) -> Key {
        match self {
            KeyRef::Peer(ip) => Key::Peer(ip),
            KeyRef::Text(text) => Key::Text(text.into()),
        }
    }
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
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            hasher: RandomState::default(),
            per_shard: (max_keys / SHARDS).max(1),
            epoch: Instant::now(),
        }
    }

    /// Decides synchronously; the lock is held for a table lookup and a few additions.
    fn decide(&self, key: KeyRef<'_>, quota: &Quota) -> Decision {
        // GCRA counts a request at its arrival, which the edge read; a clock read saved.
        let arrival = crate::observe::request::arrival_or_now();
        let now = arrival.saturating_duration_since(self.epoch).as_nanos() as u64;
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[crate::cache::shard_of(hash, SHARDS)];
        let mut table = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slot) = table.find_mut(hash, |slot| slot.key.as_ref() == key) {
            let (decision, new_tat) = gcra(quota, now, Some(slot.tat));
            if let Some(tat) = new_tat {
                slot.tat = tat;
            }
            return decision;
        }
        let (decision, new_tat) = gcra(quota, now, None);
        if let Some(tat) = new_tat {
            if table.len() >= self.per_shard {
                table.retain(|slot| slot.tat > now);
            }
            if table.len() >= self.per_shard {
                // Dropped unfinished, the iterator removes the one it returned and stops.
                table.extract_if(|_| true).next();
            }
            table
                .insert_unique(hash, Slot { key: key.to_owned(), tat }, |slot| self.hasher.hash_one(slot.key.as_ref()));
        }
        decision
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, quota: &Quota) -> Result<Decision> {
        Ok(self.decide(KeyRef::Text(key), quota))
    }

    fn check_now(&self, key: &str, quota: &Quota) -> Option<Decision> {
        Some(self.decide(KeyRef::Text(key), quota))
    }

    fn check_peer_now(&self, peer: Option<IpAddr>, quota: &Quota) -> Option<Decision> {
        Some(self.decide(KeyRef::Peer(peer), quota))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stays_bounded_and_expired_keys_go_first() {
        let limiter = MemoryRateLimiter::with_max_keys(SHARDS * 4);
        let quota = Quota::per_second(1_000_000).burst(1);
        for i in 0..10_000u32 {
            assert!(limiter.decide(KeyRef::Text(&format!("k{i}")), &quota).allowed);
            assert!(limiter.decide(KeyRef::Peer(Some(IpAddr::from(i.to_be_bytes()))), &quota).allowed);
        }
        let stored: usize = limiter.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(stored <= SHARDS * 4, "{stored} keys stored");
    }

    #[test]
    fn a_full_shard_of_live_keys_drops_one_to_take_a_new_one() {
        let limiter = MemoryRateLimiter::with_max_keys(1);
        let quota = Quota::per_minute(1);
        let peer = |i: u32| KeyRef::Peer(Some(IpAddr::from(i.to_be_bytes())));
        // Whichever shard each lands in, each is counted (stored), and no shard holds more
        // than one key.
        for i in 1..200 {
            assert!(limiter.decide(peer(i), &quota).allowed);
            assert!(!limiter.decide(peer(i), &quota).allowed, "{i} counted");
        }
        assert!(limiter.shards.iter().all(|s| s.lock().unwrap().len() <= 1));
    }

    #[test]
    fn keys_are_independent() {
        let limiter = MemoryRateLimiter::new();
        let quota = Quota::per_minute(1);
        let peer = Some(IpAddr::from([10, 0, 0, 1]));
        for key in [KeyRef::Text("a"), KeyRef::Text("b"), KeyRef::Peer(peer), KeyRef::Peer(None)] {
            assert!(limiter.decide(key, &quota).allowed);
            assert!(!limiter.decide(key, &quota).allowed);
        }
        assert!(limiter.check_now("ip:10.0.0.2", &quota).unwrap().allowed);
        assert!(
            limiter.check_peer_now(Some(IpAddr::from([10, 0, 0, 2])), &quota).unwrap().allowed,
            "an address is not the text that reads like it"
        );
        assert!(!limiter.check_peer_now(Some(IpAddr::from([10, 0, 0, 2])), &quota).unwrap().allowed);
    }
}
