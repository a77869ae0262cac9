//! Events of user management, to be published through the outbox on topic `users`.
//!
//! These are the contracts only: nothing emits them yet. The issue that builds profiles,
//! preferences and deactivation emits them as defined here (or bumps a version). Each event
//! is a type deriving `DomainEvent` (saas-macros); its envelope carries the tenant and, as
//! subject, the user. The constants are the versioned types, for consumers that match on
//! `Envelope::event_type`. [`catalog`] lists them with their JSON Schemas (committed under
//! `schemas/`).

use saas_core::{
    events::EventSchema,
    id::{TenantId, UserId},
};
use saas_macros::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A user's profile was created: [`ProfileCreated`].
pub const PROFILE_CREATED: &str = "users.profile_created.v1";
/// A user's profile changed: [`ProfileUpdated`].
pub const PROFILE_UPDATED: &str = "users.profile_updated.v1";
/// A user set or reset one preference: [`PreferenceChanged`].
pub const PREFERENCE_CHANGED: &str = "users.preference_changed.v1";
/// A user was deactivated: [`UserDeactivated`].
pub const USER_DEACTIVATED: &str = "users.user_deactivated.v1";

/// A user's profile was created (once per user, after `auth.user_registered`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "users.profile_created", version = 1)]
pub struct ProfileCreated {
    /// The user's tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The user.
    #[event(subject)]
    pub user_id: UserId,
    /// The name shown to other users.
    pub display_name: String,
    /// The user's language, a BCP 47 tag such as `en-GB`.
    pub locale: String,
    /// The user's time zone, an IANA name such as `Europe/Paris`.
    pub timezone: String,
}

/// A user's profile changed: the new values, and which of them changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "users.profile_updated", version = 1)]
pub struct ProfileUpdated {
    /// The user's tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The user.
    #[event(subject)]
    pub user_id: UserId,
    /// The names of the fields that changed, e.g. `["display_name"]`.
    pub changed: Vec<String>,
    /// The name shown to other users.
    pub display_name: String,
    /// The user's language, a BCP 47 tag such as `en-GB`.
    pub locale: String,
    /// The user's time zone, an IANA name such as `Europe/Paris`.
    pub timezone: String,
    /// The administrator who made the change; absent when the user changed their own profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<UserId>,
}

/// A user set one preference, or reset it to its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "users.preference_changed", version = 1)]
pub struct PreferenceChanged {
    /// The user's tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The user.
    #[event(subject)]
    pub user_id: UserId,
    /// The preference's name, e.g. `notify.email.digest`.
    pub key: String,
    /// The new value; absent when reset to the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// A user was deactivated: they can no longer sign in; their data stays until erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "users.user_deactivated", version = 1)]
pub struct UserDeactivated {
    /// The user's tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The user.
    #[event(subject)]
    pub user_id: UserId,
    /// Why, as written by whoever deactivated the user; absent when none was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The administrator who deactivated the user; absent when the user closed their own
    /// account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_by: Option<UserId>,
}

/// Every event of saas-users with its JSON Schema.
pub fn catalog() -> Vec<EventSchema> {
    vec![
        EventSchema::of::<ProfileCreated>(),
        EventSchema::of::<ProfileUpdated>(),
        EventSchema::of::<PreferenceChanged>(),
        EventSchema::of::<UserDeactivated>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_are_the_types_of_the_catalog() {
        let types: Vec<String> = catalog().into_iter().map(|e| e.event_type).collect();
        assert_eq!(types, [PROFILE_CREATED, PROFILE_UPDATED, PREFERENCE_CHANGED, USER_DEACTIVATED]);
    }
}
