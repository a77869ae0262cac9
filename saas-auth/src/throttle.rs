//! Brute-force protection for logins: per account and per client address, exponential
//! back-off, then a temporary lock-out.
//!
//! After `auth.login_backoff_after` failures of one account from one client address, each
//! further attempt from there must wait 1 s, then 2 s, 4 s, …; after
//! `auth.login_lockout_after` failures the account is locked for that address for
//! `auth.login_lockout_secs`. Failures from all addresses together only slow the account
//! down (back-off of at most [`MAX_ACCOUNT_WAIT`]), so nobody can lock a victim out from
//! elsewhere. A client address with `auth.login_ip_lockout_after` failures (any accounts) is
//! locked; IPv6 addresses count by their /64. An early attempt gets 429 `login_throttled` with
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
        let account = match self.account(tenant, email).await {
            Ok(account) => account,
            Err(e) => return fail_open(e),
        };
        let mut keys = vec![format!("{account}:any"), format!("{account}:{}", ip.map_or("none".into(), address))];
        keys.extend(ip.map(|ip| format!("auth:login:ip:{}", address(ip))));
        // The longest of the waits that apply.
        let mut latest = None;
        for key in keys {
            let until = match self.cache.get(&format!("{key}:wait")).await {
                Ok(value) => value.and_then(|v| String::from_utf8(v).ok()).and_then(|v| v.parse::<i64>().ok()),
                Err(e) => return fail_open(e),
            };
            latest = latest.max(until);
        }
        match latest.filter(|&until| until > now_millis()) {
            None => Ok(()),
            Some(until) => Err(Error::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "login_throttled",
                "too many failed sign-ins; wait for the time in Retry-After",
            )
            .with_retry_after(Duration::from_millis((until - now_millis()).max(1000) as u64))),
        }
    }

    /// Counts a failed attempt and sets the wait the next attempt must respect:
    /// - the account from this address: back-off, then lock-out;
    /// - the account from anywhere: back-off only, at most [`MAX_ACCOUNT_WAIT`], so that
    ///   nobody can lock a victim out from elsewhere;
    /// - the address, on any accounts: lock-out.
    pub async fn failed(&self, tenant: TenantId, email: &str, ip: Option<&str>) {
        let result = async {
            let account = self.account(tenant, email).await?;
            let from = ip.map_or("none".into(), address);
            self.count(&format!("{account}:{from}"), self.backoff_after, self.lockout_after, self.lockout).await?;
            self.count(&format!("{account}:any"), self.backoff_after, u32::MAX, MAX_ACCOUNT_WAIT).await?;
            if let Some(ip) = ip {
                // Addresses only lock (no back-off): one address may carry many honest users.
                let key = format!("auth:login:ip:{}", address(ip));
                self.count(&key, self.ip_lockout_after, self.ip_lockout_after, self.lockout).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e.into_cause(), "login throttle unavailable");
        }
    }

    async fn count(&self, key: &str, backoff_after: u32, lockout_after: u32, cap: Duration) -> Result<()> {
        let failures = self.cache.increment(&format!("{key}:failures"), 1, self.lockout).await?;
        let failures = u32::try_from(failures).unwrap_or(u32::MAX);
        let wait = if failures >= lockout_after {
            self.lockout
        } else if failures >= backoff_after {
            Duration::from_secs(1 << (failures - backoff_after).min(20))
        } else {
            return Ok(());
        };
        let wait = wait.min(cap);
        let until = now_millis() + wait.as_millis() as i64;
        self.cache.set(&format!("{key}:wait"), until.to_string().as_bytes(), wait).await
    }

    /// Clears the account's failures and waits, from every address (after a successful
    /// login, or by an admin): its counters start a new epoch.
    pub async fn clear(&self, tenant: TenantId, email: &str) -> Result<()> {
        let base = account_key(tenant, email);
        self.cache.increment(&format!("{base}:epoch"), 1, self.lockout * 2).await.map(drop)
    }

    /// The account's key prefix in its current epoch.
    async fn account(&self, tenant: TenantId, email: &str) -> Result<String> {
        let base = account_key(tenant, email);
        let epoch = self.cache.get(&format!("{base}:epoch")).await?;
        let epoch = epoch.and_then(|v| String::from_utf8(v).ok()).unwrap_or_default();
        Ok(format!("{base}:{epoch}"))
    }
}

/// The longest wait failures elsewhere can impose on an account.
pub const MAX_ACCOUNT_WAIT: Duration = Duration::from_secs(30);

fn fail_open(e: Error) -> Result<()> {
    tracing::warn!(error = %e.into_cause(), "login throttle unavailable; letting the attempt through");
    Ok(())
}

/// The address as counted: IPv4 whole, IPv6 by its /64 (one host usually holds the whole /64).
fn address(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_default(),
        Ok(v4) => v4.to_string(),
        Err(_) => "unknown".into(),
    }
}

/// The account's key: the address is hashed so that cache keys hold no e-mail addresses.
fn account_key(tenant: TenantId, email: &str) -> String {
    let normalised = email.trim().to_lowercase();
    let digest = Sha256::digest(normalised.as_bytes());
    format!("auth:login:{tenant}:{}", hex_prefix(&digest))
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
