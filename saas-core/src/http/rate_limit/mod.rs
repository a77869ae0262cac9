//! Rate limiting with GCRA (the generic cell rate algorithm), in memory or on Redis.
//!
//! A [`Quota`] allows `burst` requests at once and refills at `per_second`. Both stores run
//! the same arithmetic, so the headers a client sees do not depend on the deployment. They
//! are the fields of the IETF draft "RateLimit header fields for HTTP"
//! (draft-ietf-httpapi-ratelimit-headers):
//!
//! - on every response that passed the limiter, `RateLimit: "default";r=<requests left>;t=<seconds
//!   until the full burst is available again>`;
//! - on a 429, also `RateLimit-Policy: "default";q=<burst>;w=<seconds to refill the burst>`
//!   and `Retry-After` (seconds until one request is allowed).
//!
//! ```
//! use std::sync::Arc;
//! use saas_core::http::rate_limit::{MemoryRateLimiter, Quota, RateLimitLayer};
//!
//! let layer = RateLimitLayer::new(Arc::new(MemoryRateLimiter::new()), Quota::per_second(50).burst(100));
//! let app: axum::Router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" })).layer(layer);
//! ```

mod layer;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::{net::IpAddr, time::Duration};

use async_trait::async_trait;

#[cfg(feature = "redis")]
pub use self::redis::RedisRateLimiter;
pub(crate) use layer::{Admission, AdmitNow, Remaining};
pub use layer::{KeyFn, RateLimit, RateLimitFuture, RateLimitLayer, client_ip_key};
pub use memory::MemoryRateLimiter;

use crate::error::Result;

/// How many requests a key may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed at once.
    pub burst: u32,
    /// Time for one request's allowance to refill.
    pub emission_interval: Duration,
}

impl Quota {
    /// `n` requests per second sustained, with a burst of `n`.
    pub fn per_second(n: u32) -> Self {
        let n = n.max(1);
        Self { burst: n, emission_interval: Duration::from_nanos(1_000_000_000 / u64::from(n)) }
    }

    /// `n` requests per minute sustained, with a burst of `n`.
    pub fn per_minute(n: u32) -> Self {
        let n = n.max(1);
        Self { burst: n, emission_interval: Duration::from_nanos(60_000_000_000 / u64::from(n)) }
    }

    /// Sets the burst.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    fn tolerance_nanos(&self) -> u64 {
        self.emission_interval.as_nanos() as u64 * u64::from(self.burst)
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The burst (`q` of `RateLimit-Policy`).
    pub limit: u32,
    /// Requests left right now (`r` of `RateLimit`).
    pub remaining: u32,
    /// When denied: how long until one request is allowed (`Retry-After`).
    pub retry_after: Duration,
    /// How long until the full burst is available again (`t` of `RateLimit`).
    pub reset_after: Duration,
}

/// GCRA step on a theoretical arrival time `tat` (nanoseconds); returns the decision and
/// the new `tat` to store when allowed.
pub(crate) fn gcra(quota: &Quota, now: u64, stored_tat: Option<u64>) -> (Decision, Option<u64>) {
    let t = quota.emission_interval.as_nanos() as u64;
    let tolerance = quota.tolerance_nanos();
    let tat = stored_tat.unwrap_or(now).max(now);
    let new_tat = tat + t;
    if new_tat - now > tolerance {
        let retry = new_tat - tolerance - now;
        let decision = Decision {
            allowed: false,
            limit: quota.burst,
            remaining: 0,
            retry_after: Duration::from_nanos(retry),
            reset_after: Duration::from_nanos(tat - now),
        };
        return (decision, None);
    }
    let remaining = ((tolerance - (new_tat - now)) / t) as u32;
    let decision = Decision {
        allowed: true,
        limit: quota.burst,
        remaining,
        retry_after: Duration::ZERO,
        reset_after: Duration::from_nanos(new_tat - now),
    };
    (decision, Some(new_tat))
}

/// Where GCRA state lives.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key` against `quota`.
    async fn check(&self, key: &str, quota: &Quota) -> Result<Decision>;

    /// The same, for stores that decide without waiting (in process); `None` means "use
    /// [`check`](Self::check)".
    fn check_now(&self, _key: &str, _quota: &Quota) -> Option<Decision> {
        None
    }

    /// [`check_now`](Self::check_now) of the client at `peer` (`None`: unknown), the
    /// default key, for a store that keeps addresses as they are; `None` (the default)
    /// means "check the key [`client_ip_key`] writes", `ip:<address>`.
    fn check_peer_now(&self, _peer: Option<IpAddr>, _quota: &Quota) -> Option<Decision> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_refills_at_the_rate() {
        let q = Quota::per_second(10).burst(3);
        let mut tat = None;
        let mut now = 1_000_000_000;
        for expected_remaining in [2, 1, 0] {
            let (d, new) = gcra(&q, now, tat);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = new;
        }
        let (d, new) = gcra(&q, now, tat);
        assert!(!d.allowed && new.is_none());
        assert_eq!(d.retry_after, Duration::from_millis(100));
        now += 100_000_000;
        let (d, _) = gcra(&q, now, tat);
        assert!(d.allowed, "one request refilled after 1/rate");
    }
}
