//! Events of identity, published through the outbox on topic `auth`.

/// A user account was created. Data: `email`, `roles`; subject: the user id.
pub const USER_REGISTERED: &str = "auth.user_registered.v1";
/// A user signed in. Data: `session`; subject: the user id.
pub const USER_AUTHENTICATED: &str = "auth.user_authenticated.v1";
/// A used refresh token was presented again: its session was revoked. Data: `session`.
pub const REFRESH_TOKEN_REUSED: &str = "auth.refresh_token_reused.v1";
/// A user signed out. Data: `session`.
pub const USER_SIGNED_OUT: &str = "auth.user_signed_out.v1";
/// A user's roles were set. Data: `roles`; subject: the user id.
pub const ROLE_ASSIGNED: &str = "auth.role_assigned.v1";
/// A custom role was defined or changed. Data: `role`, `permissions`.
pub const PERMISSION_GRANTED: &str = "auth.permission_granted.v1";
/// A user changed their password; their other sessions were signed out. Data: `{}`.
pub const PASSWORD_CHANGED: &str = "auth.password_changed.v1";
/// A user turned MFA on. Data: `{}`; subject: the user id.
pub const MFA_ENABLED: &str = "auth.mfa_enabled.v1";
/// A user proved their e-mail address. Data: `{}`; subject: the user id.
pub const EMAIL_VERIFIED: &str = "auth.email_verified.v1";
/// A user set a new password through a reset link; all their sessions were signed out.
/// Data: `{}`; subject: the user id.
pub const PASSWORD_RESET: &str = "auth.password_reset.v1";
/// A user turned MFA off. Data: `{}`; subject: the user id.
pub const MFA_DISABLED: &str = "auth.mfa_disabled.v1";
