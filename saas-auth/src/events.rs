//! Events of identity, published through the outbox on topic `auth`.

/// A user account was created. Data: `email`, `roles`; subject: the user id.
pub const USER_REGISTERED: &str = "auth.user_registered.v1";
/// A user signed in. Data: `session`; subject: the user id.
pub const USER_AUTHENTICATED: &str = "auth.user_authenticated.v1";
