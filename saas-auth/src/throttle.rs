//! Brute-force protection for logins: per account and per client address, exponential
//! back-off, then a temporary lock-out.
//!
//! After `auth.login_backoff_after` failures of one account, each further attempt must wait
//! 1 s, then 2 s, 4 s, …; after `auth.login_lockout_after` failures the account is locked for
//! `auth.login_lockout_secs`. A client address with `auth.login_ip_lockout_after` failures
//! (any accounts) is locked the same way. An early attempt gets 429 `login_throttled` with
//! `Retry-After`, without checking the password. Accounts are keyed by tenant and e-mail
//! address whether they exist or not, so the throttle reveals nothing about existence. A
//! success clears the account's failures; a platform admin can unlock an account.
//!
//! Counters live in the cache port (Redis when `cache.url` is Redis, shared by every server).
//! When the cache fails, logins are let through (the rate limiter still applies) and a
//! warning is logged.

use std::{sync::Arc, time::Duration};

use saas_core::{
    cache::Cache,
    config::AuthConfig,
    db::now_millis,
    error::{Error, Result},
    id::TenantId,
};
use sha2::{Digest, Sha256};

/// The login throttle; cheap to clone.
#[derive(Clone)]
pub struct LoginThrottle {
    cache: Arc<dyn Cache>,
    backoff_after: u32,
    lockout_after: u32,
    lockout: Duration,
    ip_lockout_after: u32,
}

impl LoginThrottle {
    /// With the limits of `config`, counting in `cache`.
    pub fn new(cache: Arc<dyn Cache>, config: &AuthConfig) -> Self {
        Self {
            cache,
            backoff_after: config.login_backoff_after,
            lockout_after: config.login_lockout_after,
            lockout: Duration::from_secs(config.login_lockout_secs),
            ip_lockout_after: config.login_ip_lockout_after,
        }
    }

    /// 429 `login_throttled` when the account or the address must wait.
    pub async fn check(&self, tenant: TenantId, email: &str, ip: Option<&str>) -> Result<()> {
        let mut keys = vec![account_key(tenant, email)];
        keys.extend(ip.map(ip_key));
        for key in keys {
            let until = match self.cache.get(&format!("{key}:wait")).await {
                Ok(value) => value.and_then(|v| String::from_utf8(v).ok()).and_then(|v| v.parse::<i64>().ok()),
                Err(e) => {
                    tracing::warn!(error = %e.into_cause(), "login throttle unavailable; letting the attempt through");
                    return Ok(());
                }
            };
            if let Some(until) = until.filter(|&until| until > now_millis()) {
                let wait = Duration::from_millis((until - now_millis()).max(1000) as u64);
                return Err(Error::new(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    "login_throttled",
                    "too many failed sign-ins; wait for the time in Retry-After",
                )
                .with_retry_after(wait));
            }
        }
        Ok(())
    }

    /// Counts a failed attempt and sets the wait the next attempt must respect.
    pub async fn failed(&self, tenant: TenantId, email: &str, ip: Option<&str>) {
        let account = account_key(tenant, email);
        if let Err(e) = self.count(&account, self.backoff_after, self.lockout_after).await {
            tracing::warn!(error = %e.into_cause(), "login throttle unavailable");
        }
        if let Some(ip) = ip {
            // Addresses only lock (no back-off): one address may carry many honest users.
            if let Err(e) = self.count(&ip_key(ip), self.ip_lockout_after, self.ip_lockout_after).await {
                tracing::warn!(error = %e.into_cause(), "login throttle unavailable");
            }
        }
    }

    async fn count(&self, key: &str, backoff_after: u32, lockout_after: u32) -> Result<()> {
        let failures = self.cache.increment(&format!("{key}:failures"), 1, self.lockout).await?;
        let failures = u32::try_from(failures).unwrap_or(u32::MAX);
        let wait = if failures >= lockout_after {
            self.lockout
        } else if failures >= backoff_after {
            Duration::from_secs(1 << (failures - backoff_after).min(20)).min(self.lockout)
        } else {
            return Ok(());
        };
        let until = now_millis() + wait.as_millis() as i64;
        self.cache.set(&format!("{key}:wait"), until.to_string().as_bytes(), wait).await
    }

    /// Clears the account's failures (after a successful login, or by an admin).
    pub async fn clear(&self, tenant: TenantId, email: &str) -> Result<()> {
        let account = account_key(tenant, email);
        self.cache.delete(&format!("{account}:failures")).await?;
        self.cache.delete(&format!("{account}:wait")).await
    }
}

/// The account's key: the address is hashed so that cache keys hold no e-mail addresses.
fn account_key(tenant: TenantId, email: &str) -> String {
    let normalised = email.trim().to_lowercase();
    let digest = Sha256::digest(normalised.as_bytes());
    format!("auth:login:{tenant}:{}", hex_prefix(&digest))
}

fn ip_key(ip: &str) -> String {
    format!("auth:login:ip:{ip}")
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
