//! Access tokens: compact JWS (JWT) signed with Ed25519 (`alg: EdDSA`) by default, or
//! ES256 or RS256 (`auth.token_algorithm`), verified strictly.
//!
//! Verification accepts exactly one form: a header `{"alg":…,"typ":"JWT","kid":…}` with
//! a `kid` this server published and the `alg` of that key, a valid signature (Ed25519
//! checked with `verify_strict`), and
//! claims with this server's `iss` and `aud`, `nbf <= now < exp` (60 s leeway), and a
//! lifetime (`exp - iat`) no longer than this server issues. Anything else
//! — `alg: none`, HS256, an unknown `kid`, a tampered payload — is 401 `invalid_token`,
//! with no detail saying which check failed. A verified token is cached until it expires (at
//! most 60 s), so checking the same token again costs a hash-map lookup.

use std::{
    sync::{
        Arc, LazyLock, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use saas_core::{
    cache::CredentialCache,
    error::{Error, Result},
    id::{TenantId, UserId},
};
use serde::{Deserialize, Serialize};

use crate::{keys::SigningKeys, principal::Principal};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 60;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: UserId,
    /// The user's tenant.
    pub tid: TenantId,
    /// The session the token was issued in.
    pub sid: Arc<str>,
    /// The user's roles in the tenant. Shared: every request's [`Principal`] holds them.
    ///
    /// [`Principal`]: crate::principal::Principal
    #[serde(default)]
    pub roles: Arc<[String]>,
    /// The permissions (and patterns) the roles grant, expanded at issue time.
    #[serde(default)]
    pub perms: Arc<[String]>,
    /// Issuer (`auth.issuer`).
    pub iss: String,
    /// Audience (`auth.audience`).
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    kid: String,
}

/// Issues and verifies access tokens; cheap to clone.
#[derive(Clone)]
pub struct AccessTokens {
    keys: SigningKeys,
    issuer: Arc<str>,
    audience: Arc<str>,
    ttl: Duration,
    /// Verified tokens, found by their signature (which differs between tokens: hashing
    /// the whole token on every request cost more than everything else the lookup does),
    /// for 60 s; see [`AccessTokens::verify`].
    verified: Arc<CredentialCache<Verified>>,
    /// The revocation counter of the sessions whose answers the cache remembers (see
    /// [`LiveSession`]): the first `AuthLayer` made with these tokens binds its sessions.
    session_counter: Arc<OnceLock<Arc<AtomicU64>>>,
}

/// What a verified token is cached with: its claims, and the principal every request with
/// it carries (made once, shared).
#[derive(Clone)]
struct Verified {
    claims: Arc<Claims>,
    principal: Arc<Principal>,
    /// When the token expires (with the leeway), on the monotonic clock: a cache hit then
    /// reads no wall clock. Entries live a minute, so a wall clock step moves this by at
    /// most what it stepped in that minute.
    expires: Instant,
    /// Until when the token's session was last found live; see [`LiveSession`].
    session: LiveSession,
}

/// When a token's session was last found live in the session revocations cached here: until
/// when, and at which count of revocations made here (see `Sessions::revocations`). While
/// neither has moved on, the next request with the token needs no lookup of its session:
/// one word read from the entry the token was found in, where the lookup hashed the
/// session id and took a lock of another cache.
///
/// One word, so that a reader never pairs one check's time with another's count: the time
/// in milliseconds after [`LIVE_SINCE`] (rounded down) in the upper 40 bits (35 years), the
/// count's lower 24 bits below. Sixteen million revocations within one session check time
/// would be taken for none. Zero, the start, holds for no request.
#[derive(Debug, Default)]
struct LiveSession(AtomicU64);

/// The origin of [`LiveSession`]'s times.
static LIVE_SINCE: LazyLock<Instant> = LazyLock::new(Instant::now);

const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

impl LiveSession {
    fn millis(at: Instant) -> u64 {
        at.saturating_duration_since(*LIVE_SINCE).as_millis() as u64
    }

    /// Whether the session was found live at `revocations`, until after `at`.
    fn holds(&self, revocations: u64, at: Instant) -> bool {
        let word = self.0.load(Ordering::Relaxed);
        // `millis(at) < until` (both rounded down) means `at < until`.
        word & COUNT_MASK == revocations & COUNT_MASK && Self::millis(at) < word >> COUNT_BITS
    }

    /// Remembers that the session was found live at `revocations`, until `until`.
    fn remember(&self, revocations: u64, until: Instant) {
        self.0.store(Self::millis(until) << COUNT_BITS | revocations & COUNT_MASK, Ordering::Relaxed);
    }
}

impl Clone for LiveSession {
    fn clone(&self) -> Self {
        Self(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl AccessTokens {
    /// Tokens signed by `keys` for `issuer` and `audience`, living `ttl`.
    pub fn new(keys: SigningKeys, issuer: &str, audience: &str, ttl: Duration) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            ttl,
            verified: Arc::new(CredentialCache::new(100_000, Duration::from_secs(60))),
            session_counter: Arc::default(),
        }
    }

    /// Seconds a token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed token for `user` of `tenant` in session `session`.
    pub async fn issue(
        &self,
        user: UserId,
        tenant: TenantId,
        session: &str,
        roles: Vec<String>,
        perms: Vec<String>,
    ) -> Result<String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: user,
            tid: tenant,
            sid: session.into(),
            roles: roles.into(),
            perms: perms.into(),
            iss: self.issuer.to_string(),
            aud: self.audience.to_string(),
            exp: now + self.ttl.as_secs() as i64,
            iat: now,
            nbf: now,
        };
        self.sign(&claims).await
    }

    /// Signs `claims` as they are, with the current key (for tools and tests that need a
    /// token of a given shape; `issue` is the normal way).
    pub async fn sign(&self, claims: &Claims) -> Result<String> {
        let (kid, key) = self.keys.signer().await?;
        let header = Header { alg: key.public().algorithm().as_str().into(), typ: Some("JWT".into()), kid };
        let signing_input = format!("{}.{}", encode_json(&header)?, encode_json(claims)?);
        let signature = key.sign(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// The claims of a valid token; 401 `invalid_token` for anything else.
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>> {
        let at = Instant::now();
        if let Some(claims) = self.verified_at(token.as_bytes(), at, |hit| hit.claims.clone()) {
            return Ok(claims);
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = signature_of(token.as_bytes());
        let claims = Arc::new(self.verify_uncached(token, now).await.ok_or_else(invalid)?);
        // Cached for at most the cache's 60 s, never past the token's expiry.
        if claims.exp > now {
            let expires = at + Duration::from_secs((claims.exp + LEEWAY_SECS - now) as u64);
            let principal = Arc::new(Principal::from(&*claims));
            let session = LiveSession::default();
            self.verified.insert(
                signature,
                token.as_bytes(),
                Verified { claims: claims.clone(), principal, expires, session },
            );
        }
        Ok(claims)
    }

    /// The claims of `token` when it was verified within the last minute and has not
    /// expired; `None` when it must be verified (or is invalid). Never waits. For the start
    /// of a request: the cache's minute is counted to the request's arrival.
    ///
    /// `token` may be any bytes (such as [`bearer_bytes`](saas_core::http::bearer_bytes)
    /// gives): only a token equal to a verified one is found.
    pub fn verify_cached(&self, token: impl AsRef<[u8]>) -> Option<Arc<Claims>> {
        let at = saas_core::observe::request::arrival_or_now();
        self.verified_at(token.as_ref(), at, |hit| hit.claims.clone())
    }

    /// The principal of `token` as [`verify_cached`](Self::verify_cached) finds it (made
    /// once per token, shared by its requests), and whether its session is known live at
    /// `revocations` (see [`remember_live_session`](Self::remember_live_session)).
    pub(crate) fn principal_cached(&self, token: &[u8], revocations: u64) -> Option<(Arc<Principal>, bool)> {
        let at = saas_core::observe::request::arrival_or_now();
        self.verified_at(token, at, |hit| (hit.principal.clone(), hit.session.holds(revocations, at)))
    }

    /// Whether this cache remembers the answers of `sessions` (whose count of revocations
    /// it compares): true for the first sessions asked about, and their clones; false for
    /// any other, whose counts mean nothing here (an app may pair these tokens with two
    /// `Sessions` in two layers: only one of them may use what is remembered).
    pub(crate) fn remembers_sessions_of(&self, sessions: &Arc<AtomicU64>) -> bool {
        Arc::ptr_eq(self.session_counter.get_or_init(|| sessions.clone()), sessions)
    }

    /// Remembers with the cached `token` that its session was found live, at `revocations`
    /// (read before the lookup), until `until`.
    pub(crate) fn remember_live_session(&self, token: &[u8], revocations: u64, until: Instant) {
        let at = saas_core::observe::request::arrival_or_now();
        self.verified_at(token, at, |hit| hit.session.remember(revocations, until));
    }

    /// `read` of the cache entry of `token`, if it was cached within the cache's time
    /// before `at` and has not expired at `at`.
    fn verified_at<R>(&self, token: &[u8], at: Instant, read: impl FnOnce(&Verified) -> R) -> Option<R> {
        self.verified.read_at(signature_of(token), token, at, |hit| (at < hit.expires).then(|| read(hit))).flatten()
    }

    async fn verify_uncached(&self, token: &str, now: i64) -> Option<Claims> {
        // Tokens carry their permissions; 64 KiB is far above what a role set yields.
        if token.len() > 64 * 1024 {
            return None;
        }
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.typ.as_deref().is_some_and(|t| t != "JWT") {
            return None;
        }
        let key = self.keys.verifier(&header.kid).await.ok()??;
        // The key decides the algorithm; a header naming another is a forgery attempt.
        if header.alg != key.algorithm().as_str() {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let signing_input = &token[..token.len() - token.rsplit('.').next()?.len() - 1];
        if !key.verify(signing_input.as_bytes(), &signature) {
            return None;
        }
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        // A token living longer than this server issues was not issued by it.
        let valid = *claims.iss == *self.issuer
            && *claims.aud == *self.audience
            && claims.exp - claims.iat <= self.ttl.as_secs() as i64 + LEEWAY_SECS
            && claims.nbf <= now + LEEWAY_SECS
            && now < claims.exp + LEEWAY_SECS;
        valid.then_some(claims)
    }
}

/// The part of `token` after its last dot (the signature of a JWS), found with a vectorised
/// search: this runs on every request.
fn signature_of(token: &[u8]) -> &[u8] {
    memchr::memrchr(b'.', token).map_or(token, |dot| &token[dot + 1..])
}

fn encode_json(value: &impl Serialize) -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).map_err(Error::internal)?))
}

/// The answer to every bad token: no hint which check failed.
pub(crate) fn invalid() -> Error {
    Error::unauthorized("invalid_token", "the access token is invalid or expired")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_session_holds_for_its_count_of_revocations_until_its_time() {
        let now = Instant::now();
        let live = LiveSession::default();
        assert!(!live.holds(0, now), "nothing remembered");
        live.remember(7, now + Duration::from_secs(5));
        assert!(live.holds(7, now) && live.holds(7, now + Duration::from_millis(4_998)));
        assert!(!live.holds(7, now + Duration::from_secs(5)), "its time has passed");
        assert!(!live.holds(8, now), "a revocation since");
        assert!(live.holds(7 + (1 << COUNT_BITS), now), "only the count's low bits are kept");
        live.remember(9, now);
        assert!(!live.holds(9, now), "live until now is not live now");
        live.remember(9, now + Duration::from_secs(1));
        assert!(live.clone().holds(9, now), "a copy remembers the same");
    }
}
