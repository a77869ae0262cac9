//! Who is calling: the [`Principal`] of a verified access token, put into the request by
//! [`AuthLayer`].

use std::sync::Arc;

use http::request::Parts;
use saas_core::{
    caller::Caller,
    error::{Error, Result},
    http::guard::{Guard, GuardService},
    id::{TenantId, UserId},
    tenant::TenantContext,
};
use saas_tenancy::{api::TenantMembership, resolve::TokenTenant};

use crate::{
    api_keys::ApiKeys,
    session::Sessions,
    token::{AccessTokens, Claims},
};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user.
    pub user: UserId,
    /// The user's tenant.
    pub tenant: TenantId,
    /// The session the token was issued in.
    pub session: Arc<str>,
    /// The user's roles.
    pub roles: Arc<[String]>,
    /// The permissions the roles (or the API key) grant (see [`crate::rbac`]).
    pub permissions: Arc<[String]>,
    /// The API key the request came with (its id), when it was not a user's token; `user`
    /// is then the key's creator and `session` the key id.
    pub api_key: Option<Arc<str>>,
}

impl From<&Claims> for Principal {
    /// The signed-in user of a verified access token. Cheap: the roles and permissions are
    /// shared with the claims, not copied.
    fn from(claims: &Claims) -> Self {
        Self {
            user: claims.sub,
            tenant: claims.tid,
            session: claims.sid.clone(),
            roles: claims.roles.clone(),
            permissions: claims.perms.clone(),
            api_key: None,
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        Self::of(parts).cloned()
    }
}

impl Principal {
    /// The principal [`AuthLayer`] put into the request (in its [`Caller`]); 401 without
    /// one, `invalid_token` when the credential sent was bad.
    pub fn of(parts: &Parts) -> Result<&Principal> {
        Self::signed_in(parts, Caller::record)
    }

    /// [`of`](Self::of), shared (a reference count, not a copy).
    pub(crate) fn shared_of(parts: &Parts) -> Result<Arc<Principal>> {
        Self::signed_in(parts, Caller::shared_record)
    }

    /// `read` of the request's caller: the principal as it wants it, or the refusal.
    fn signed_in<'a, T>(parts: &'a Parts, read: impl FnOnce(&'a Caller) -> Option<T>) -> Result<T> {
        if let Some(principal) = Caller::of(&parts.extensions).and_then(read) {
            return Ok(principal);
        }
        if parts.extensions.get::<InvalidToken>().is_some() {
            return Err(crate::token::invalid());
        }
        Err(Error::unauthorized("unauthorized", "sign in: send `Authorization: Bearer <access token>`"))
    }
}

/// Verifies `Authorization: Bearer <access token>` and puts a [`Caller`] into the request,
/// whose record is the [`Principal`] (see [`Principal::of`]). Requests without a valid
/// token pass on without one: routes that need a principal answer 401 (`invalid_token`
/// when the token was bad), and public routes (login, sign-up, JWKS) work even when a
/// client still sends an expired token. Other bearer credentials (platform-admin tokens)
/// are left to the routes' extractors. Put it outside (after, in `.layer` order) the tenant
/// layer, whose `token` source reads the principal's tenant.
#[derive(Clone)]
pub struct AuthLayer {
    tokens: AccessTokens,
    sessions: Sessions,
    api_keys: ApiKeys,
    /// Whether `tokens` remember the answers of `sessions` (see
    /// `AccessTokens::remembers_sessions_of`); if not, every request looks its session up.
    remembered: bool,
}

impl AuthLayer {
    /// Verifies access tokens with `tokens` (and that their session is not revoked in
    /// `sessions`), and API keys (`sak_…`) with `api_keys`.
    pub fn new(tokens: AccessTokens, sessions: Sessions, api_keys: ApiKeys) -> Self {
        let remembered = tokens.remembers_sessions_of(sessions.revocation_counter());
        Self { tokens, sessions, api_keys, remembered }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    saas_core::http::bearer_token(&parts.headers)
}

// A compact JWS has two dots; platform-admin tokens (`sap_…`) and API keys have none.
/// Whether `token` holds exactly two dots: one pass over a kilobyte-long token, with the
/// `memchr` crate's vectorised search (`str::find` and `contains` go a word at a time, and
/// showed in the profile of every request).
fn has_two_dots(token: &[u8]) -> bool {
    let mut dots = memchr::memchr_iter(b'.', token);
    dots.next().is_some() && dots.next().is_some() && dots.next().is_none()
}

impl Guard for AuthLayer {
    async fn check(&self, parts: &mut Parts) -> Result<()> {
        // Read once: checking a kilobyte-long token is ASCII shows on every request.
        let Some(credential) = bearer(parts) else { return Ok(()) };
        if credential.starts_with("sak_") {
            match self.api_keys.verify(credential).await? {
                Some(principal) => signed_in_as(parts, principal),
                None => {
                    parts.extensions.insert(InvalidToken);
                }
            }
            return Ok(());
        }
        if !has_two_dots(credential.as_bytes()) {
            return Ok(());
        }
        let Ok(claims) = self.tokens.verify(credential).await else {
            parts.extensions.insert(InvalidToken);
            return Ok(());
        };
        if self.sessions.is_revoked(claims.tid, &claims.sid).await? {
            parts.extensions.insert(InvalidToken);
            return Ok(());
        }
        signed_in(parts, &claims);
        Ok(())
    }

    /// A bearer token verified and its session checked within the caches' time, or an API
    /// key verified within its cache's time, is decided here; anything else (a token,
    /// session or key to look up) goes to `check`.
    fn check_now(&self, parts: &mut Parts) -> Option<Result<()>> {
        // Unchecked bytes: only a token equal to a cached (valid) one is decided here, and
        // checking a kilobyte-long token for ASCII cost more than finding it in the cache.
        let Some(credential) = saas_core::http::bearer_bytes(&parts.headers) else { return Some(Ok(())) };
        if credential.starts_with(b"sak_") {
            let principal = self.api_keys.verify_cached(credential)?;
            signed_in_as(parts, principal);
            return Some(Ok(()));
        }
        // Read before the session is looked up: a revocation after it moves it on, and the
        // lookup's answer is remembered with it.
        let revocations = self.sessions.revocations();
        // A token found in the cache equals one verified before, so it is a JWS: its dots
        // need counting only when it is not there.
        let Some((principal, live)) = self.tokens.principal_cached(credential, revocations) else {
            return (!has_two_dots(credential)).then_some(Ok(()));
        };
        if !(live && self.remembered) {
            match self.sessions.live_until_cached(principal.tenant, &principal.session)? {
                Some(until) if self.remembered => self.tokens.remember_live_session(credential, revocations, until),
                Some(_) => {}
                None => {
                    parts.extensions.insert(InvalidToken);
                    return Some(Ok(()));
                }
            }
        }
        signed_in_as(parts, principal);
        Some(Ok(()))
    }
}

/// Marks the request as the token's user's.
fn signed_in(parts: &mut Parts, claims: &Claims) {
    signed_in_as(parts, Arc::new(Principal::from(claims)));
}

/// Marks the request as `principal`'s. Shared, not copied: a principal made once for a
/// token (or API key) serves each of its requests for one reference count.
fn signed_in_as(parts: &mut Parts, principal: Arc<Principal>) {
    saas_core::observe::request::record_user(principal.user);
    parts.extensions.insert(Caller::new(principal.user, principal.tenant, principal));
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = GuardService<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(self.clone(), inner)
    }
}

/// Marks a request whose bearer token failed verification.
#[derive(Debug, Clone, Copy)]
struct InvalidToken;

/// The `token` source of tenant resolution, and tenant membership, from the [`Principal`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PrincipalTenant;

impl TokenTenant for PrincipalTenant {
    fn tenant_of(&self, parts: &Parts) -> Option<TenantId> {
        Caller::of(&parts.extensions).map(|caller| caller.tenant)
    }
}

impl TenantMembership for PrincipalTenant {
    fn is_member(&self, parts: &Parts, tenant: &TenantContext) -> bool {
        Caller::of(&parts.extensions).is_some_and(|caller| caller.tenant == tenant.id)
    }
}

impl PrincipalTenant {
    /// As the two hooks saas-tenancy takes.
    pub fn hooks() -> (Arc<dyn TokenTenant>, Arc<dyn TenantMembership>) {
        (Arc::new(Self), Arc::new(Self))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_jws_has_exactly_two_dots() {
        for (token, jws) in
            [("a.b.c", true), ("..", true), ("a.b", false), ("a.b.c.d", false), ("sap_x", false), ("", false)]
        {
            assert_eq!(super::has_two_dots(token.as_bytes()), jws, "{token}");
        }
    }
}
