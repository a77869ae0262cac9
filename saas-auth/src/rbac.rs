//! Role-based access control.
//!
//! Permissions are `resource:action` strings the app declares in code with
//! [`permissions!`](crate::permissions). Roles grant permissions, with patterns: `*` (all),
//! `invoices:*`, `*:read`. Each tenant has the built-in roles `owner` and `admin` (`*`) and
//! `member` (`*:read`), plus custom roles of its own. A user's permissions are expanded from
//! its roles when a token is issued and carried in the token (`perms`), so a check costs no
//! database round-trip; a change of roles reaches a user with its next token (at most
//! `auth.access_token_ttl_secs` later, or at once after a refresh).
//!
//! Protect a route with the [`RequirePermission`] layer, or a handler with the
//! `#[require_permission("invoices:write")]` attribute of saas-macros; either answers 403
//! `permission_denied` without the permission and 401 without a signed-in user.
//!
//! ```
//! mod perms {
//!     saas_auth::permissions! { invoices: [read, write], reports: [read] }
//! }
//! assert_eq!(perms::invoices::write.name(), "invoices:write");
//! assert_eq!(perms::ALL.len(), 3);
//! ```

use std::{marker::PhantomData, sync::Arc};

use http::request::Parts;
use saas_core::{
    error::{Error, Result},
    http::guard::{Guard, GuardService},
};

use crate::principal::Principal;

/// A permission, `resource:action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission(pub &'static str);

impl Permission {
    /// The permission's name.
    pub fn name(self) -> &'static str {
        self.0
    }
}

/// Declares permissions as constants, `resource::action`, plus `ALL`; see the
/// [module docs](crate::rbac).
#[macro_export]
macro_rules! permissions {
    ($($resource:ident: [$($action:ident),* $(,)?]),* $(,)?) => {
        $(
            #[allow(non_snake_case, missing_docs)]
            pub mod $resource {
                $(
                    #[allow(non_upper_case_globals)]
                    #[doc = concat!("`", stringify!($resource), ":", stringify!($action), "`")]
                    pub const $action: $crate::rbac::Permission =
                        $crate::rbac::Permission(concat!(stringify!($resource), ":", stringify!($action)));
                )*
            }
        )*
        /// Every permission declared here.
        pub const ALL: &[$crate::rbac::Permission] =
            &[$($($crate::rbac::Permission(concat!(stringify!($resource), ":", stringify!($action))),)*)*];
    };
}

/// The most permissions a custom role grants (tokens carry them).
pub const MAX_ROLE_PERMISSIONS: usize = 50;
/// The most roles a user has.
pub const MAX_USER_ROLES: usize = 10;

/// The permissions `roles` grant in the transaction's tenant: built-in roles from code,
/// custom ones from `auth_roles`; sorted, without duplicates.
pub async fn permissions_of(tx: &mut saas_core::db::TenantTx, roles: &[String]) -> Result<Vec<String>> {
    let mut permissions: Vec<String> = Vec::new();
    for role in roles {
        match builtin_role(role) {
            Some(grants) => permissions.extend(grants.iter().map(|p| (*p).to_owned())),
            None => {
                let granted: Option<String> =
                    sqlx::query_scalar("SELECT permissions FROM auth_roles WHERE tenant_id = $1 AND name = $2")
                        .bind(tx.tenant().to_string())
                        .bind(role)
                        .fetch_optional(&mut **tx)
                        .await?;
                permissions
                    .extend(granted.iter().flat_map(|g| g.split(',')).filter(|p| !p.is_empty()).map(str::to_owned));
            }
        }
    }
    permissions.sort();
    permissions.dedup();
    Ok(permissions)
}

/// Whether the grants `held` cover the whole of `grant` (itself possibly a pattern):
/// `*:read` is covered by `*` or `*:read`, not by `invoices:*`.
pub fn covers_all(held: &[String], grant: &str) -> bool {
    held.iter().any(|h| {
        if h == "*" || h == grant {
            return true;
        }
        match (h.split_once(':'), grant.split_once(':')) {
            (Some((h_res, h_act)), Some((g_res, g_act))) => {
                (h_res == "*" || h_res == g_res) && (h_act == "*" || h_act == g_act)
            }
            _ => false,
        }
    })
}

/// The permissions of the built-in roles; `None` for a custom role.
pub fn builtin_role(role: &str) -> Option<&'static [&'static str]> {
    match role {
        "owner" | "admin" => Some(&["*"]),
        "member" => Some(&["*:read"]),
        _ => None,
    }
}

/// Whether `granted` (a permission or a pattern: `*`, `invoices:*`, `*:read`) covers `wanted`.
pub fn covers(granted: &str, wanted: &str) -> bool {
    if granted == "*" || granted == wanted {
        return true;
    }
    let (Some((g_res, g_act)), Some((w_res, w_act))) = (split_grant(granted), split_grant(wanted)) else {
        return false;
    };
    (g_res == "*" || g_res == w_res) && (g_act == "*" || g_act == w_act)
}

/// `resource:action` split at its colon. By bytes: `split_once(':')` sets up a general
/// searcher, which on these short names cost more than the comparisons, on every request a
/// permission guards.
fn split_grant(grant: &str) -> Option<(&str, &str)> {
    let colon = grant.bytes().position(|b| b == b':')?;
    Some((&grant[..colon], &grant[colon + 1..]))
}

/// Whether `name` is a valid permission or pattern: `resource:action` of `a-z`, `0-9`, `_`,
/// `-` (either side may be `*`), or `*`.
pub fn is_valid_grant(name: &str) -> bool {
    let part = |s: &str| {
        s == "*"
            || (!s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'))
    };
    name == "*" || split_grant(name).is_some_and(|(r, a)| part(r) && part(a))
}

impl Principal {
    /// Whether the principal's token grants `permission`.
    pub fn can(&self, permission: &str) -> bool {
        self.permissions.iter().any(|granted| covers(granted, permission))
    }

    /// `Ok` when the principal has `permission`, else 403 `permission_denied`.
    pub fn require(&self, permission: &str) -> Result<()> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(Error::forbidden("permission_denied", format!("this needs the `{permission}` permission")))
        }
    }
}

/// Lets through only signed-in users with a permission; see the [module docs](self).
///
/// ```no_run
/// use axum::{Router, routing::post};
/// use saas_auth::rbac::RequirePermission;
///
/// let app: Router = Router::new()
///     .route("/v1/invoices", post(|| async { "created" }))
///     .route_layer(RequirePermission::new("invoices:write"));
/// ```
#[derive(Debug, Clone)]
pub struct RequirePermission {
    permission: Arc<str>,
}

impl RequirePermission {
    /// Requires `permission`.
    pub fn new(permission: impl Into<Arc<str>>) -> Self {
        Self { permission: permission.into() }
    }
}

impl Guard for RequirePermission {
    async fn check(&self, parts: &mut Parts) -> Result<()> {
        Principal::of(parts)?.require(&self.permission)
    }

    /// Never waits.
    fn check_now(&self, parts: &mut Parts) -> Option<Result<()>> {
        Some(Principal::of(parts).and_then(|principal| principal.require(&self.permission)))
    }
}

impl<S> tower::Layer<S> for RequirePermission {
    type Service = GuardService<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(self.clone(), inner)
    }
}

/// A permission named at compile time, for [`Permitted`] (what `#[require_permission]`
/// generates) and [`Authorized`].
pub trait PermissionName: Send + Sync + 'static {
    /// The permission.
    const NAME: &'static str;
}

/// Extractor that succeeds only for a signed-in user with permission `P`, holding the
/// request's principal (for a handler that checks its permission in its parameters and
/// uses the principal too; the attribute adds [`Permitted`]).
#[derive(Debug)]
pub struct Authorized<P: PermissionName>(pub Arc<Principal>, PhantomData<P>);

/// Extractor that succeeds only for a signed-in user with permission `P`, and holds
/// nothing: the first parameter the `#[require_permission("…")]` attribute adds to a
/// handler. Checks the principal where it is, without taking a share of it (an atomic
/// count on each request); take [`Authorized`] or [`Principal`] for the principal itself.
#[derive(Debug)]
pub struct Permitted<P: PermissionName>(PhantomData<P>);

impl<S: Send + Sync, P: PermissionName> axum::extract::FromRequestParts<S> for Permitted<P> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        Principal::of(parts)?.require(P::NAME)?;
        Ok(Self(PhantomData))
    }
}

impl<S: Send + Sync, P: PermissionName> axum::extract::FromRequestParts<S> for Authorized<P> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        let principal = Principal::shared_of(parts)?;
        principal.require(P::NAME)?;
        Ok(Self(principal, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_cover_what_they_say() {
        for (granted, wanted, yes) in [
            ("*", "invoices:write", true),
            ("invoices:*", "invoices:write", true),
            ("invoices:*", "reports:read", false),
            ("*:read", "reports:read", true),
            ("*:read", "reports:write", false),
            ("invoices:write", "invoices:write", true),
            ("invoices:write", "invoices:read", false),
            ("invoices", "invoices:read", false),
            ("*:read", "invoices", false),
            (":read", "invoices:read", false),
            ("invoices:", "invoices:read", false),
        ] {
            assert_eq!(covers(granted, wanted), yes, "{granted} / {wanted}");
        }
    }

    #[test]
    fn grants_are_validated() {
        for ok in ["*", "invoices:write", "*:read", "invoices:*", "a-b:c_d"] {
            assert!(is_valid_grant(ok), "{ok}");
        }
        for bad in ["", "invoices", "Invoices:write", "a:b:c", ":read", "invoices:", "in voices:read"] {
            assert!(!is_valid_grant(bad), "{bad}");
        }
    }
}
