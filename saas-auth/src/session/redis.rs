//! Sessions in Redis (`auth.session_store = "redis"`).
//!
//! Keys, all of one tenant under one hash tag so that each script touches a single slot of
//! a Redis Cluster:
//! - `auth:{<tenant>}:ses:<session>`: hash `user`, `revoked` (`0` or `1`);
//! - `auth:{<tenant>}:srt:<token hash>`: hash `session`, `user`, `expires`, `used`;
//! - `auth:{<tenant>}:usr:<user>`: set of the user's sessions.
//!
//! Every key expires with the newest refresh token of its session: a session nobody can
//! refresh any more is gone, and an unknown session counts as revoked. Each operation is one
//! Lua script, so concurrent refreshes of one token are decided atomically.

use async_trait::async_trait;
use redis::{Script, aio::ConnectionManager};
use saas_core::{
    error::{Error, Result},
    id::{TenantId, UserId},
};
use sqlx::AnyConnection;

use super::{Rotation, SessionStore, StoredRefresh};

/// Sessions in Redis; cheap to clone.
#[derive(Clone)]
pub struct RedisSessionStore {
    conn: ConnectionManager,
    open: Script,
    rotate: Script,
    revoke: Script,
    revoke_user: Script,
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::unavailable("session_store_unavailable", "the session store is not reachable").with_source(e)
}

fn prefix(tenant: TenantId) -> String {
    format!("auth:{{{tenant}}}:")
}

impl RedisSessionStore {
    /// Connects to `redis://…` (usually `cache.url`).
    pub async fn connect(url: &str) -> Result<Self> {
        let conn = saas_core::cache::RedisCache::connect(url).await?.connection();
        Ok(Self {
            conn,
            // KEYS: session, refresh token, user set. ARGV: user, session, expires.
            open: Script::new(
                "redis.call('HSET', KEYS[1], 'user', ARGV[1], 'revoked', '0')
                 redis.call('PEXPIREAT', KEYS[1], ARGV[3])
                 redis.call('HSET', KEYS[2], 'session', ARGV[2], 'user', ARGV[1], 'expires', ARGV[3])
                 redis.call('PEXPIREAT', KEYS[2], ARGV[3])
                 redis.call('SADD', KEYS[3], ARGV[2])
                 redis.call('PEXPIREAT', KEYS[3], ARGV[3])
                 return 1",
            ),
            // KEYS: used token, next token. ARGV: key prefix, now, grace, next expires.
            rotate: Script::new(
                "local r = redis.call('HMGET', KEYS[1], 'session', 'user', 'expires', 'used')
                 if not r[1] then return {'invalid'} end
                 local now = tonumber(ARGV[2])
                 local session = ARGV[1] .. 'ses:' .. r[1]
                 if redis.call('HGET', session, 'revoked') ~= '0' or tonumber(r[3]) <= now then
                   return {'invalid'}
                 end
                 if r[4] then
                   if now - tonumber(r[4]) > tonumber(ARGV[3]) then
                     redis.call('HSET', session, 'revoked', '1')
                     return {'reused', r[1], r[2]}
                   end
                 else
                   redis.call('HSET', KEYS[1], 'used', ARGV[2])
                 end
                 redis.call('HSET', KEYS[2], 'session', r[1], 'user', r[2], 'expires', ARGV[4])
                 redis.call('PEXPIREAT', KEYS[2], ARGV[4])
                 redis.call('PEXPIREAT', session, ARGV[4])
                 redis.call('PEXPIREAT', ARGV[1] .. 'usr:' .. r[2], ARGV[4])
                 return {'rotated', r[1], r[2]}",
            ),
            // KEYS: session.
            revoke: Script::new(
                "if redis.call('HGET', KEYS[1], 'revoked') == '0' then
                   redis.call('HSET', KEYS[1], 'revoked', '1')
                   return 1
                 end
                 return 0",
            ),
            // KEYS: user set. ARGV: key prefix, session to keep. Forgets expired sessions.
            revoke_user: Script::new(
                "local revoked = {}
                 for _, s in ipairs(redis.call('SMEMBERS', KEYS[1])) do
                   local key = ARGV[1] .. 'ses:' .. s
                   local state = redis.call('HGET', key, 'revoked')
                   if not state then
                     redis.call('SREM', KEYS[1], s)
                   elseif state == '0' and s ~= ARGV[2] then
                     redis.call('HSET', key, 'revoked', '1')
                     table.insert(revoked, s)
                   end
                 end
                 return revoked",
            ),
        })
    }
}

fn parse_user(user: &str) -> Result<UserId> {
    user.parse().map_err(|_| Error::internal(anyhow::anyhow!("a session in Redis names a bad user id")))
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn open(
        &self,
        _: &mut AnyConnection,
        tenant: TenantId,
        session: &str,
        user: UserId,
        refresh: &StoredRefresh,
    ) -> Result<()> {
        let p = prefix(tenant);
        let _: i64 = self
            .open
            .key(format!("{p}ses:{session}"))
            .key(format!("{p}srt:{}", refresh.hash))
            .key(format!("{p}usr:{user}"))
            .arg(user.to_string())
            .arg(session)
            .arg(refresh.expires_at)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn rotate(
        &self,
        tenant: TenantId,
        used: &str,
        next: &StoredRefresh,
        now: i64,
        grace_ms: i64,
    ) -> Result<Rotation> {
        let p = prefix(tenant);
        let reply: Vec<String> = self
            .rotate
            .key(format!("{p}srt:{used}"))
            .key(format!("{p}srt:{}", next.hash))
            .arg(&p)
            .arg(now)
            .arg(grace_ms)
            .arg(next.expires_at)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(match reply.as_slice() {
            [outcome, session, user] if outcome == "rotated" => {
                Rotation::Rotated { session: session.clone(), user: parse_user(user)? }
            }
            [outcome, session, user] if outcome == "reused" => {
                Rotation::Reused { session: session.clone(), user: parse_user(user)? }
            }
            _ => Rotation::Invalid,
        })
    }

    async fn revoke(&self, tenant: TenantId, session: &str) -> Result<bool> {
        let revoked: i64 = self
            .revoke
            .key(format!("{}ses:{session}", prefix(tenant)))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(revoked == 1)
    }

    async fn revoke_user(&self, tenant: TenantId, user: UserId, keep: &str) -> Result<Vec<String>> {
        let p = prefix(tenant);
        self.revoke_user
            .key(format!("{p}usr:{user}"))
            .arg(&p)
            .arg(keep)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn is_revoked(&self, tenant: TenantId, session: &str) -> Result<bool> {
        let state: Option<String> = redis::cmd("HGET")
            .arg(format!("{}ses:{session}", prefix(tenant)))
            .arg("revoked")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(state.as_deref() != Some("0"))
    }

    async fn erase_tenant(&self, _conn: &mut AnyConnection, tenant: TenantId) -> Result<()> {
        saas_core::cache::delete_matching(&mut self.conn.clone(), &format!("{}*", prefix(tenant)))
            .await
            .map_err(unavailable)
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
