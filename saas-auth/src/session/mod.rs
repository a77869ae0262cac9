//! Sessions and refresh tokens.
//!
//! A login opens a session and hands out a refresh token: opaque (`srt_` and 32 random
//! bytes), stored only as its SHA-256, living `auth.refresh_token_ttl_secs`. Every refresh
//! uses the token up and hands out a new one in the same session. A token used again within
//! `auth.refresh_reuse_grace_secs` (two concurrent refreshes of one client) still works; used
//! again later, it has been stolen or replayed, and the whole session is revoked.
//!
//! A revoked session's access tokens stop working: on the server that revoked it at once,
//! on the others within `auth.session_check_secs` (each server re-checks a session that often).
//!
//! Sessions live in a [`SessionStore`]: the database ([`SqlSessionStore`], the default) or
//! Redis ([`RedisSessionStore`], `auth.session_store = "redis"`). Both pass the same tests
//! (`saas-auth/tests/sessions.rs`).

#[cfg(feature = "redis")]
mod redis;
mod sql;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use saas_core::{
    cache::LocalCache,
    db::{Db, now_millis},
    error::{Error, Result},
    events::{Envelope, outbox},
    id::{TenantId, UserId},
};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

#[cfg(feature = "redis")]
pub use self::redis::RedisSessionStore;
pub use self::sql::SqlSessionStore;
use crate::{events, keys::random};

/// A refresh token as a store keeps it: only its hash, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRefresh {
    /// SHA-256 of the token, base64url.
    pub hash: String,
    /// Expiry, Unix milliseconds.
    pub expires_at: i64,
}

/// What using a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was valid: the new one is stored in its session.
    Rotated {
        /// The session.
        session: String,
        /// Its user.
        user: UserId,
    },
    /// The token had been used before the grace window: its session is now revoked.
    Reused {
        /// The revoked session.
        session: String,
        /// Its user.
        user: UserId,
    },
    /// Unknown, expired, or of a revoked session: nothing changed.
    Invalid,
}

/// Where sessions and their refresh tokens live. Every method is scoped to one tenant: a
/// token or session of another tenant is unknown.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Records the new session `session` of `user` with its first refresh token. `conn` is
    /// the caller's transaction, bound to the tenant: a store in the database writes through
    /// it, so that the session commits with what the caller writes beside it (the login's
    /// event) or not at all; others ignore it.
    async fn open(
        &self,
        conn: &mut AnyConnection,
        tenant: TenantId,
        session: &str,
        user: UserId,
        refresh: &StoredRefresh,
    ) -> Result<()>;

    /// Uses up the refresh token hashed `used` and stores `next` in its session, in one
    /// atomic step: of two concurrent uses, exactly one is the first. A token already used
    /// more than `grace_ms` before `now` revokes its session ([`Rotation::Reused`]).
    async fn rotate(
        &self,
        tenant: TenantId,
        used: &str,
        next: &StoredRefresh,
        now: i64,
        grace_ms: i64,
    ) -> Result<Rotation>;

    /// Revokes `session` and its refresh tokens; false when it was unknown or revoked.
    async fn revoke(&self, tenant: TenantId, session: &str) -> Result<bool>;

    /// Revokes every live session of `user` but `keep`; returns the ones it revoked.
    async fn revoke_user(&self, tenant: TenantId, user: UserId, keep: &str) -> Result<Vec<String>>;

    /// Whether `session` is revoked, expired or unknown.
    async fn is_revoked(&self, tenant: TenantId, session: &str) -> Result<bool>;

    /// Erases every session of a deleted tenant. `conn` is the purge transaction, bound to
    /// the tenant: a store in the database deletes through it, others ignore it.
    async fn erase_tenant(&self, conn: &mut AnyConnection, tenant: TenantId) -> Result<()>;

    /// Name for logs and health reports: `sql` or `redis`.
    fn name(&self) -> &'static str;
}

/// What a refresh resolved to: whose session it is, and its new refresh token.
#[derive(Debug)]
pub struct Refreshed {
    /// The session's user.
    pub user: UserId,
    /// The session.
    pub session: String,
    /// The new refresh token.
    pub refresh_token: String,
}

/// Sessions of all tenants; cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    /// For the events of reuse detection.
    db: Db,
    refresh_ttl: Duration,
    grace: Duration,
    /// Whether a session (by id, with its tenant) is revoked, as last read.
    revoked: Arc<LocalCache<Box<str>, (TenantId, bool)>>,
    /// How many revocations this process has written into `revoked`: what was read from it
    /// as live holds while this has not moved (see [`revocations`](Self::revocations)).
    revocations: Arc<AtomicU64>,
}

impl Sessions {
    /// Sessions in `store`; refresh tokens live `refresh_ttl`, may be reused within `grace`;
    /// revocations by other servers are seen within `check`. Events go to `db`'s outbox.
    pub fn new(store: Arc<dyn SessionStore>, db: Db, refresh_ttl: Duration, grace: Duration, check: Duration) -> Self {
        Self {
            store,
            db,
            refresh_ttl,
            grace,
            revoked: Arc::new(LocalCache::new(100_000, check)),
            revocations: Arc::default(),
        }
    }

    /// Seconds a refresh token lives.
    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// Opens a session for `user` of `tenant` in `conn`, the caller's transaction bound to
    /// the tenant (see [`SessionStore::open`]); returns its id and first refresh token.
    pub async fn open(&self, conn: &mut AnyConnection, tenant: TenantId, user: UserId) -> Result<(String, String)> {
        let session = format!("ses_{}", URL_SAFE_NO_PAD.encode(random::<16>()?));
        let (token, stored) = self.new_refresh()?;
        self.store.open(conn, tenant, &session, user, &stored).await?;
        Ok((session, token))
    }

    fn new_refresh(&self) -> Result<(String, StoredRefresh)> {
        let token = format!("srt_{}", URL_SAFE_NO_PAD.encode(random::<32>()?));
        let stored =
            StoredRefresh { hash: hash(&token), expires_at: now_millis() + self.refresh_ttl.as_millis() as i64 };
        Ok((token, stored))
    }

    /// Uses `token` up for a new one in the same session; see the [module docs](self) for
    /// reuse. 401 `invalid_refresh_token` for an unknown, expired or revoked token or session,
    /// 401 `refresh_token_reused` when reuse revoked the session.
    pub async fn refresh(&self, tenant: TenantId, token: &str) -> Result<Refreshed> {
        let invalid =
            || Error::unauthorized("invalid_refresh_token", "the refresh token is invalid, expired or revoked");
        if !token.starts_with("srt_") || token.len() > 100 {
            return Err(invalid());
        }
        let (refresh_token, next) = self.new_refresh()?;
        let grace = self.grace.as_millis() as i64;
        match self.store.rotate(tenant, &hash(token), &next, now_millis(), grace).await? {
            Rotation::Rotated { session, user } => Ok(Refreshed { user, session, refresh_token }),
            Rotation::Invalid => Err(invalid()),
            Rotation::Reused { session, user } => {
                self.revoked_here(tenant, &session);
                let mut tx = self.db.tenant_tx(tenant).await?;
                let event = Envelope::of(&events::RefreshTokenReused {
                    tenant_id: tenant,
                    user_id: user,
                    session: session.clone(),
                })?;
                outbox::append(&mut tx, &event).await?;
                tx.commit().await?;
                tracing::warn!(tenant_id = %tenant, "a used refresh token was presented again; its session is revoked");
                Err(Error::unauthorized(
                    "refresh_token_reused",
                    "this refresh token was used already; the session is revoked, sign in again",
                ))
            }
        }
    }

    /// Revokes `session` of `tenant` and its refresh tokens.
    pub async fn revoke(&self, tenant: TenantId, session: &str) -> Result<()> {
        self.store.revoke(tenant, session).await?;
        self.revoked_here(tenant, session);
        Ok(())
    }

    /// Revokes every session of `user` but `keep` (after a password change), with their
    /// refresh tokens. Returns how many were revoked.
    pub async fn revoke_others(&self, tenant: TenantId, user: UserId, keep: &str) -> Result<u64> {
        let sessions = self.store.revoke_user(tenant, user, keep).await?;
        for session in &sessions {
            self.revoked_here(tenant, session);
        }
        Ok(sessions.len() as u64)
    }

    /// Whether `session` of `tenant` is revoked (or unknown), as read at most
    /// `auth.session_check_secs` ago.
    pub async fn is_revoked(&self, tenant: TenantId, session: &str) -> Result<bool> {
        if let Some(live_until) = self.live_until_at(tenant, session, Instant::now()) {
            return Ok(live_until.is_none());
        }
        let revoked = self.store.is_revoked(tenant, session).await?;
        // Only if absent: a revocation made meanwhile has written `true`, which a read that
        // began before it must not replace.
        let (owner, cached) = self.revoked.get_or_insert(session.into(), (tenant, revoked));
        if revoked {
            self.revocations.fetch_add(1, Ordering::Release);
        }
        Ok(if owner == tenant { cached } else { revoked })
    }

    /// [`is_revoked`](Self::is_revoked) from the in-process cache alone: `None` when the
    /// session was not checked within the cache's time. Never waits. For the start of a
    /// request: the cache's time is counted to the request's arrival.
    pub fn is_revoked_cached(&self, tenant: TenantId, session: &str) -> Option<bool> {
        self.live_until_cached(tenant, session).map(|live_until| live_until.is_none())
    }

    /// How many revocations this process has cached so far. A session found live by
    /// [`live_until_cached`](Self::live_until_cached) is still live (as far as this process
    /// knows) while this number has not moved and the time it gave has not passed: read it
    /// before the lookup, and the lookup's answer may be remembered with it.
    pub(crate) fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    /// The counter behind [`revocations`](Self::revocations), shared by this value's clones:
    /// what a remembered answer is bound to (see `AccessTokens::remembers_sessions_of`).
    pub(crate) fn revocation_counter(&self) -> &Arc<AtomicU64> {
        &self.revocations
    }

    /// As [`is_revoked_cached`](Self::is_revoked_cached): `Some(Some(until))` when the
    /// session is live until `until` as far as this process knows (when it must be checked
    /// again), `Some(None)` when it is revoked, `None` when it must be looked up.
    pub(crate) fn live_until_cached(&self, tenant: TenantId, session: &str) -> Option<Option<Instant>> {
        self.live_until_at(tenant, session, saas_core::observe::request::arrival_or_now())
    }

    /// What the cache holds of `session` of `tenant` at `at`, as
    /// [`live_until_cached`](Self::live_until_cached) gives it; another tenant's session is
    /// not there.
    fn live_until_at(&self, tenant: TenantId, session: &str, at: Instant) -> Option<Option<Instant>> {
        let (owner, live_until) = self
            .revoked
            .read_expiring_at(session, at, |&(owner, revoked), expires| (owner, (!revoked).then_some(expires)))?;
        (owner == tenant).then_some(live_until)
    }

    /// Caches the revocation of `session` of `tenant`, made here, and counts it (after
    /// caching it: a check that reads the new count finds the revocation).
    fn revoked_here(&self, tenant: TenantId, session: &str) {
        self.revoked.insert(session.into(), (tenant, true));
        self.revocations.fetch_add(1, Ordering::Release);
    }
}

fn hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}
