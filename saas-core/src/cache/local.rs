//! [`LocalCache`]: values kept in this process for a short time, for lookups on the path of
//! every request.

use std::{
    borrow::Borrow,
    hash::{BuildHasher, Hash},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::{Duration, Instant},
};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

const SHARDS: usize = 16;

/// A bounded in-process map whose entries expire `ttl` after they were inserted, for
/// lookups on the path of every request (verified tokens, session revocations, resolved
/// tenants).
///
/// A general cache (moka) spends more per lookup than these callers can afford: it keeps
/// access order and frequency for its eviction policy, which costs atomic queues and epoch
/// bookkeeping on every read. Here a read is one shared lock of one shard, one hash (which
/// picks both the shard and the slot in it) and one clock read; a full shard drops its
/// expired entries, then arbitrary live ones until it is three quarters full (so the next
/// quarter of inserts scans nothing). That suits values which are cheap to get again and
/// expire within seconds or a minute.
///
/// ```
/// use std::time::Duration;
/// use saas_core::cache::LocalCache;
///
/// let plans: LocalCache<String, u32> = LocalCache::new(10_000, Duration::from_secs(1));
/// plans.insert("pro".to_owned(), 10);
/// assert_eq!(plans.get("pro"), Some(10)); // looked up by `&str`: no allocation
/// assert_eq!(plans.get_or_insert("pro".to_owned(), 20), 10, "a live entry stays");
/// plans.invalidate("pro");
/// assert_eq!(plans.get("pro"), None);
/// ```
pub struct LocalCache<K, V> {
    shards: Box<[Shard<K, V>]>,
    // foldhash, randomly seeded: several times faster than SipHash on these keys. Only
    // values that were verified or found are inserted, so clients cannot choose the keys
    // that fill a shard.
    hasher: RandomState,
    per_shard: usize,
    ttl: Duration,
}

// A table, not a map: the hash that picked the shard finds the slot too (a map would hash
// the key again).
type Map<K, V> = HashTable<Entry<K, V>>;
type Shard<K, V> = RwLock<Map<K, V>>;

struct Entry<K, V> {
    key: K,
    value: V,
    expires: Instant,
}

/// Which of `shards` sharded hash tables holds a key of `hash`: picked by bits a table does
/// not use for a slot (its low bits) or for its tag (the top seven), so that keys sharing a
/// shard still spread over its slots, and one hash serves both.
pub(crate) fn shard_of(hash: u64, shards: usize) -> usize {
    (hash >> 32) as usize % shards
}

impl<K, V> std::fmt::Debug for LocalCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache").field("capacity", &(self.per_shard * SHARDS)).field("ttl", &self.ttl).finish()
    }
}

impl<K: Hash + Eq, V: Clone> LocalCache<K, V> {
    /// Holds about `capacity` entries (at least one per shard), each for `ttl` (at most a
    /// year: a larger one would overflow the clock arithmetic).
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let ttl = ttl.min(Duration::from_secs(365 * 86_400));
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            hasher: RandomState::default(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl,
        }
    }

    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &Shard<K, V> {
        &self.shards[shard_of(hash, SHARDS)]
    }

    // A panic while a lock was held cannot leave a map half-changed in a way that matters
    // here (at worst an entry is missing), so a poisoned lock is used as it is.
    fn read(shard: &Shard<K, V>) -> RwLockReadGuard<'_, Map<K, V>> {
        shard.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Map<K, V>> {
        self.shard(hash).write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether an entry is the one of `key`.
    fn is<Q>(key: &Q) -> impl Fn(&Entry<K, V>) -> bool + '_
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        move |entry| entry.key.borrow() == key
    }

    /// The value under `key`, unless missing or expired.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_at(key, Instant::now())
    }

    /// The value under `key`, unless missing or expired at `now`. For a lookup at the start
    /// of a request, pass [`arrival_or_now`](crate::observe::request::arrival_or_now): the
    /// clock read once by the edge serves every such lookup.
    pub fn get_at<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read_at(key, now, V::clone)
    }

    /// `read` of the value under `key`, unless missing or expired at `now`, called while
    /// the value is held: for a caller that needs a part of it (cloning all of a value
    /// that holds reference counts costs an atomic operation for each, on every lookup).
    ///
    /// ```
    /// use std::{sync::Arc, time::{Duration, Instant}};
    /// use saas_core::cache::LocalCache;
    ///
    /// let tenants: LocalCache<u32, (Arc<str>, Arc<str>)> = LocalCache::new(100, Duration::from_secs(1));
    /// tenants.insert(7, ("acme".into(), "pro".into()));
    /// let plan = tenants.read_at(&7, Instant::now(), |(_, plan)| plan.clone());
    /// assert_eq!(plan.as_deref(), Some("pro"));
    /// ```
    pub fn read_at<Q, R>(&self, key: &Q, now: Instant, read: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read_expiring_at(key, now, |value, _| read(value))
    }

    /// As [`read_at`](Self::read_at), also given when the entry expires: for a caller that
    /// remembers what it read, for no longer than the entry holds it.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use saas_core::cache::LocalCache;
    ///
    /// let sessions: LocalCache<&str, bool> = LocalCache::new(100, Duration::from_secs(5));
    /// sessions.insert("ses_1", false);
    /// let now = Instant::now();
    /// let until = sessions.read_expiring_at("ses_1", now, |_, expires| expires).unwrap();
    /// assert!(until > now && until <= now + Duration::from_secs(5));
    /// ```
    pub fn read_expiring_at<Q, R>(&self, key: &Q, now: Instant, read: impl FnOnce(&V, Instant) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let shard = Self::read(self.shard(hash));
        let entry = shard.find(hash, Self::is(key))?;
        (entry.expires > now).then(|| read(&entry.value, entry.expires))
    }

    /// Puts `value` under `key` for the cache's time to live, replacing what was there.
    pub fn insert(&self, key: K, value: V) {
        let now = Instant::now();
        let hash = self.hash(&key);
        self.store(&mut self.write(hash), hash, Entry { key, value, expires: now + self.ttl }, now);
    }

    /// The live value under `key`, else `value` after putting it there: a value written
    /// meanwhile (a revocation) is kept, not replaced by one read before it.
    pub fn get_or_insert(&self, key: K, value: V) -> V {
        let now = Instant::now();
        let hash = self.hash(&key);
        let mut shard = self.write(hash);
        if let Some(entry) = shard.find(hash, Self::is(&key)).filter(|e| e.expires > now) {
            return entry.value.clone();
        }
        self.store(&mut shard, hash, Entry { key, value: value.clone(), expires: now + self.ttl }, now);
        value
    }

    /// Puts `entry` (whose key has `hash`) into `shard`: in place of the key's entry when
    /// there is one, else after making room.
    fn store(&self, shard: &mut Map<K, V>, hash: u64, entry: Entry<K, V>, now: Instant) {
        match shard.find_mut(hash, Self::is(&entry.key)) {
            Some(slot) => *slot = entry,
            None => {
                self.make_room(shard, now);
                shard.insert_unique(hash, entry, |entry| self.hash(&entry.key));
            }
        }
    }

    /// When a new key would overfill `shard`: drops its expired entries, then arbitrary
    /// live ones down to three quarters, whatever expiry freed (a shard left one short of
    /// full would be scanned again on the next insert).
    fn make_room(&self, shard: &mut Map<K, V>, now: Instant) {
        if shard.len() < self.per_shard {
            return;
        }
        shard.retain(|entry| entry.expires > now);
        let mut excess = shard.len().saturating_sub(self.per_shard * 3 / 4);
        if excess > 0 {
            shard.retain(|_| {
                let keep = excess == 0;
                excess = excess.saturating_sub(1);
                keep
            });
        }
    }

    /// Removes the entry under `key`.
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        if let Ok(entry) = self.write(hash).find_entry(hash, Self::is(key)) {
            entry.remove();
        }
    }

    /// Removes every entry.
    pub fn clear(&self) {
        for shard in &self.shards {
            shard.write().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
        }
    }

    /// How many entries are held, expired ones included until they are dropped.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| Self::read(shard).len()).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_time_to_live_is_capped_not_an_overflow() {
        let cache = LocalCache::new(10, Duration::MAX);
        cache.insert(1, 1);
        assert_eq!(cache.get(&1), Some(1));
    }

    #[test]
    fn a_read_sees_only_live_entries() {
        let cache = LocalCache::new(100, Duration::from_secs(60));
        cache.insert("a", (1, String::from("one")));
        let now = Instant::now();
        assert_eq!(cache.read_at("a", now, |(n, _)| *n), Some(1));
        assert_eq!(cache.read_at("b", now, |(n, _)| *n), None, "missing");
        assert_eq!(cache.read_at("a", now + Duration::from_secs(61), |(n, _)| *n), None, "expired at that time");
    }

    #[test]
    fn entries_expire_after_the_time_to_live() {
        let cache = LocalCache::new(100, Duration::from_millis(50));
        cache.insert("a", 1);
        assert_eq!(cache.get("a"), Some(1));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.get_or_insert("a", 2), 2, "an expired entry is replaced");
        assert_eq!(cache.get("a"), Some(2));
        assert_eq!(cache.len(), 1, "the expired entry was replaced in place");
    }

    #[test]
    fn get_or_insert_keeps_a_live_value_and_insert_replaces_it() {
        let cache = LocalCache::new(100, Duration::from_secs(60));
        assert!(cache.get_or_insert(("t", "s"), true));
        assert!(cache.get_or_insert(("t", "s"), false), "the revocation stays");
        cache.insert(("t", "s"), false);
        assert_eq!(cache.get(&("t", "s")), Some(false));
        assert_eq!(cache.len(), 1, "replaced, not added beside");
        cache.invalidate(&("t", "s"));
        assert!(cache.is_empty());
        cache.insert(("t", "s"), true);
        cache.insert(("u", "s"), true);
        cache.clear();
        assert!(cache.is_empty() && cache.get(&("t", "s")).is_none());
    }

    #[test]
    fn the_size_stays_bounded_and_recent_entries_are_kept() {
        let cache = LocalCache::new(160, Duration::from_secs(60));
        for i in 0..10_000 {
            cache.insert(i, i);
            assert_eq!(cache.get(&i), Some(i), "the entry just inserted is there");
        }
        assert!(cache.len() <= 160, "{} entries", cache.len());
        assert!(cache.len() >= 160 / 2, "a full shard drops a quarter, not all: {}", cache.len());
    }

    #[test]
    fn a_full_shard_makes_room_for_a_quarter_more_inserts_at_once() {
        // One shard's worth: 8 entries a shard, so a full shard keeps 6.
        let cache = LocalCache::new(8 * SHARDS, Duration::from_secs(60));
        for i in 0..100_000 {
            cache.insert(i, ());
        }
        let sizes: Vec<usize> = cache.shards.iter().map(|s| s.read().unwrap().len()).collect();
        assert!(sizes.iter().all(|&n| (6..=8).contains(&n)), "{sizes:?}");
    }

    #[test]
    fn expired_entries_make_room_before_live_ones_are_dropped() {
        let cache = LocalCache::new(SHARDS, Duration::from_millis(30));
        let old: Vec<u32> = (0..SHARDS as u32 * 4).collect();
        for &i in &old {
            cache.insert(i, i);
        }
        std::thread::sleep(Duration::from_millis(50));
        cache.insert(1000, 1000);
        assert_eq!(cache.get(&1000), Some(1000));
        assert!(old.iter().all(|i| cache.get(i).is_none()));
    }
}
