//! [`CredentialCache`]: what a verified credential (an access token, an API key) stands for,
//! kept in this process so that the next request with it is decided without verifying it
//! again.

use std::{hash::BuildHasher, sync::Arc, time::Duration};

use foldhash::fast::RandomState;

use super::LocalCache;

/// Values cached for credentials, each found by a hash of a part of its credential and used
/// only when the whole credential presented is the cached one, compared in constant time.
///
/// The hash is keyed at random for each cache, so clients cannot aim at an entry, and no
/// byte of a credential is compared any other way: keyed by the credential's bytes, a
/// lookup would compare them one by one first. Two credentials whose parts hash alike only
/// cost each other a verification. The part hashed is whatever differs between credentials
/// and is cheapest to hash: a JWS's signature rather than the whole token, a short API key
/// whole. Entries expire as in [`LocalCache`].
///
/// ```
/// use std::time::{Duration, Instant};
/// use saas_core::cache::CredentialCache;
///
/// let tokens: CredentialCache<&str> = CredentialCache::new(1_000, Duration::from_secs(60));
/// let token = b"header.payload.signature";
/// tokens.insert(b"signature", token, "ada");
/// let now = Instant::now();
/// assert_eq!(tokens.read_at(b"signature", token, now, |user| *user), Some("ada"));
/// assert_eq!(tokens.read_at(b"signature", b"header.forged.signature", now, |user| *user), None);
/// ```
pub struct CredentialCache<V> {
    entries: LocalCache<u64, Entry<V>>,
    hasher: RandomState,
}

#[derive(Clone)]
struct Entry<V> {
    credential: Arc<[u8]>,
    value: V,
}

impl<V> std::fmt::Debug for CredentialCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache").field("entries", &self.entries).finish()
    }
}

impl<V: Clone> CredentialCache<V> {
    /// Holds about `capacity` credentials, each for `ttl` (see [`LocalCache::new`]).
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { entries: LocalCache::new(capacity, ttl), hasher: RandomState::default() }
    }

    fn key(&self, part: &[u8]) -> u64 {
        self.hasher.hash_one(part)
    }

    /// Caches `value` for `credential`, found by its `part`; replaces the entry of any
    /// credential whose part hashes alike.
    pub fn insert(&self, part: &[u8], credential: &[u8], value: V) {
        self.entries.insert(self.key(part), Entry { credential: credential.into(), value });
    }

    /// `read` of the value cached for `credential` (found by its `part`), unless there is
    /// none, it expired at `now`, or another credential's is there. For a lookup at the
    /// start of a request, pass [`arrival_or_now`](crate::observe::request::arrival_or_now).
    pub fn read_at<R>(
        &self,
        part: &[u8],
        credential: &[u8],
        now: std::time::Instant,
        read: impl FnOnce(&V) -> R,
    ) -> Option<R> {
        self.entries
            .read_at(&self.key(part), now, |entry| {
                constant_time_eq::constant_time_eq(&entry.credential, credential).then(|| read(&entry.value))
            })
            .flatten()
    }

    /// Removes the entry found by `part`.
    pub fn invalidate(&self, part: &[u8]) {
        self.entries.invalidate(&self.key(part));
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_credential_is_taken_even_when_parts_hash_alike() {
        let cache = CredentialCache::new(100, Duration::from_secs(60));
        let now = std::time::Instant::now();
        // Two credentials sharing the part hashed, as two keys whose hashes clash would.
        cache.insert(b"part", b"sak_genuine", 1);
        assert_eq!(cache.read_at(b"part", b"sak_other", now, |n| *n), None, "another credential is not taken for it");
        assert_eq!(cache.read_at(b"part", b"sak_genuine", now, |n| *n), Some(1));
        assert_eq!(cache.read_at(b"other part", b"sak_genuine", now, |n| *n), None, "found only by its part");
        assert_eq!(cache.read_at(b"part", b"sak_genuine", now + Duration::from_secs(61), |n| *n), None, "expired");
        cache.invalidate(b"part");
        assert_eq!(cache.read_at(b"part", b"sak_genuine", now, |n| *n), None, "invalidated");
    }
}
