//! Events of identity, published through the outbox on topic `auth`.
//!
//! Each event is a type deriving `DomainEvent` (saas-macros); its envelope carries the
//! tenant and, as subject, the user. The constants are the versioned types, for consumers
//! that match on `Envelope::event_type`. [`catalog`] lists them with their JSON Schemas
//! (committed under `schemas/`).

use saas_core::{
    events::EventSchema,
    id::{TenantId, UserId},
};
use saas_macros::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// [`UserRegistered`].
pub const USER_REGISTERED: &str = "auth.user_registered.v1";
/// [`UserAuthenticated`].
pub const USER_AUTHENTICATED: &str = "auth.user_authenticated.v1";
/// [`RefreshTokenReused`].
pub const REFRESH_TOKEN_REUSED: &str = "auth.refresh_token_reused.v1";
/// [`UserSignedOut`].
pub const USER_SIGNED_OUT: &str = "auth.user_signed_out.v1";
/// [`RoleAssigned`].
pub const ROLE_ASSIGNED: &str = "auth.role_assigned.v1";
/// [`PermissionGranted`].
pub const PERMISSION_GRANTED: &str = "auth.permission_granted.v1";
/// [`PasswordChanged`].
pub const PASSWORD_CHANGED: &str = "auth.password_changed.v1";
/// [`MfaEnabled`].
pub const MFA_ENABLED: &str = "auth.mfa_enabled.v1";
/// [`EmailVerified`].
pub const EMAIL_VERIFIED: &str = "auth.email_verified.v1";
/// [`PasswordReset`].
pub const PASSWORD_RESET: &str = "auth.password_reset.v1";
/// [`MfaDisabled`].
pub const MFA_DISABLED: &str = "auth.mfa_disabled.v1";
/// [`ApiKeyCreated`].
pub const API_KEY_CREATED: &str = "auth.api_key_created.v1";
/// [`ApiKeyRevoked`].
pub const API_KEY_REVOKED: &str = "auth.api_key_revoked.v1";
/// [`AccountUnlocked`].
pub const ACCOUNT_UNLOCKED: &str = "auth.account_unlocked.v1";
/// [`SigningKeyRotated`].
pub const SIGNING_KEY_ROTATED: &str = "auth.signing_key_rotated.v1";
/// [`SigningKeyRevoked`].
pub const SIGNING_KEY_REVOKED: &str = "auth.signing_key_revoked.v1";

/// Declares an event about one user: `tenant_id`, `user_id` (the subject) and more fields.
macro_rules! user_event {
    ($(#[$doc:meta])* $name:ident, $event:literal { $($(#[$field_doc:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
        #[event(name = $event, version = 1)]
        pub struct $name {
            /// The user's tenant.
            #[event(tenant)]
            pub tenant_id: TenantId,
            /// The user.
            #[event(subject)]
            pub user_id: UserId,
            $($(#[$field_doc])* pub $field: $ty,)*
        }
    };
}

user_event!(
    /// A user account was created: the owner at sign-up, a user created in code, or an
    /// invited one.
    UserRegistered, "auth.user_registered" {
        /// Its e-mail address.
        email: String,
        /// Its roles.
        roles: Vec<String>,
        /// Who invited the user (`POST /v1/auth/users`); absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invited_by: Option<UserId>,
    }
);
user_event!(
    /// A user signed in: a session was opened.
    UserAuthenticated, "auth.user_authenticated" {
        /// The new session.
        session: String,
    }
);
user_event!(
    /// A used refresh token was presented again: its session was revoked.
    RefreshTokenReused, "auth.refresh_token_reused" {
        /// The revoked session.
        session: String,
    }
);
user_event!(
    /// A user signed out.
    UserSignedOut, "auth.user_signed_out" {
        /// The ended session.
        session: String,
    }
);
user_event!(
    /// A user's roles were set.
    RoleAssigned, "auth.role_assigned" {
        /// The roles from now on.
        roles: Vec<String>,
    }
);
user_event!(
    /// A user changed their password; their other sessions were signed out.
    PasswordChanged, "auth.password_changed" {}
);
user_event!(
    /// A user turned MFA on.
    MfaEnabled, "auth.mfa_enabled" {}
);
user_event!(
    /// MFA was turned off: by the user with a code, or reset by an administrator.
    MfaDisabled, "auth.mfa_disabled" {
        /// The administrator who reset it; absent when the user turned it off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reset_by: Option<UserId>,
    }
);
user_event!(
    /// A user proved their e-mail address.
    EmailVerified, "auth.email_verified" {}
);
user_event!(
    /// A user set a new password with a reset (or invitation) code; all their sessions
    /// were signed out.
    PasswordReset, "auth.password_reset" {}
);

/// A custom role was defined or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "auth.permission_granted", version = 1)]
pub struct PermissionGranted {
    /// The tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The role (also the subject).
    #[event(subject)]
    pub role: String,
    /// What it grants from now on.
    pub permissions: Vec<String>,
}

/// An API key was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "auth.api_key_created", version = 1)]
pub struct ApiKeyCreated {
    /// The tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The key's id, `key_…` (also the subject); never the key itself.
    #[event(subject)]
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// What it grants.
    pub permissions: Vec<String>,
    /// Who created it.
    pub created_by: UserId,
    /// When it expires, Unix milliseconds; absent when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// An API key was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "auth.api_key_revoked", version = 1)]
pub struct ApiKeyRevoked {
    /// The tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The key's id (also the subject).
    #[event(subject)]
    pub key_id: String,
    /// Who revoked it.
    pub revoked_by: UserId,
}

/// A platform admin lifted the login back-off or lock-out of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "auth.account_unlocked", version = 1)]
pub struct AccountUnlocked {
    /// The tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The account's e-mail address (also the subject).
    #[event(subject)]
    pub email: String,
}

/// A new token signing key was created (on schedule, at a change of algorithm, or by
/// `saas keys rotate`). A platform event: it has no tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "auth.signing_key_rotated", version = 1)]
pub struct SigningKeyRotated {
    /// The new key's `kid` (also the subject).
    #[event(subject)]
    pub kid: String,
    /// `EdDSA`, `ES256` or `RS256`.
    pub algorithm: String,
    /// When it starts signing, Unix milliseconds.
    pub activates_at: i64,
}

/// A token signing key was revoked (`saas keys revoke`): its tokens stop verifying. A
/// platform event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "auth.signing_key_revoked", version = 1)]
pub struct SigningKeyRevoked {
    /// The key's `kid` (also the subject).
    #[event(subject)]
    pub kid: String,
}

/// Every event of saas-auth with its JSON Schema.
pub fn catalog() -> Vec<EventSchema> {
    vec![
        EventSchema::of::<UserRegistered>(),
        EventSchema::of::<UserAuthenticated>(),
        EventSchema::of::<RefreshTokenReused>(),
        EventSchema::of::<UserSignedOut>(),
        EventSchema::of::<RoleAssigned>(),
        EventSchema::of::<PermissionGranted>(),
        EventSchema::of::<PasswordChanged>(),
        EventSchema::of::<MfaEnabled>(),
        EventSchema::of::<EmailVerified>(),
        EventSchema::of::<PasswordReset>(),
        EventSchema::of::<MfaDisabled>(),
        EventSchema::of::<ApiKeyCreated>(),
        EventSchema::of::<ApiKeyRevoked>(),
        EventSchema::of::<AccountUnlocked>(),
        EventSchema::of::<SigningKeyRotated>(),
        EventSchema::of::<SigningKeyRevoked>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_are_the_types_of_the_catalog() {
        let types: Vec<String> = catalog().into_iter().map(|e| e.event_type).collect();
        assert_eq!(
            types,
            [
                USER_REGISTERED,
                USER_AUTHENTICATED,
                REFRESH_TOKEN_REUSED,
                USER_SIGNED_OUT,
                ROLE_ASSIGNED,
                PERMISSION_GRANTED,
                PASSWORD_CHANGED,
                MFA_ENABLED,
                EMAIL_VERIFIED,
                PASSWORD_RESET,
                MFA_DISABLED,
                API_KEY_CREATED,
                API_KEY_REVOKED,
                ACCOUNT_UNLOCKED,
                SIGNING_KEY_ROTATED,
                SIGNING_KEY_REVOKED
            ]
        );
    }
}
