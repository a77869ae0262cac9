//! Events of notifications, to be published through the outbox on topic `notify`.
//!
//! These are the contracts only: nothing emits them yet. The issue that builds dispatch,
//! templates and delivery tracking emits them as defined here (or bumps a version). Each
//! event is a type deriving `DomainEvent` (saas-macros); its envelope carries the tenant and,
//! as subject, the notification or the template. A notification's rendered content and the
//! template's variables are not carried: they may hold personal data. The constants are the
//! versioned types, for consumers that match on `Envelope::event_type`. [`catalog`] lists
//! them with their JSON Schemas (committed under `schemas/`).

use saas_core::{
    events::EventSchema,
    id::{NotificationId, TemplateId, TenantId, UserId},
};
use saas_macros::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A notification was asked for: [`NotificationRequested`].
pub const NOTIFICATION_REQUESTED: &str = "notify.notification_requested.v1";
/// A notification was handed to its provider: [`NotificationSent`].
pub const NOTIFICATION_SENT: &str = "notify.notification_sent.v1";
/// The provider confirmed a notification reached its recipient: [`DeliveryConfirmed`].
pub const DELIVERY_CONFIRMED: &str = "notify.delivery_confirmed.v1";
/// A tenant's template was created or changed: [`TemplateUpdated`].
pub const TEMPLATE_UPDATED: &str = "notify.template_updated.v1";

/// How a notification reaches its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// An e-mail.
    Email,
    /// A text message.
    Sms,
    /// A push notification to the user's devices.
    Push,
    /// A message in the application's notification centre.
    InApp,
}

/// A notification was asked for, by another domain or in code; it is queued for dispatch
/// (unless the recipient's preferences turn its channel off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "notify.notification_requested", version = 1)]
pub struct NotificationRequested {
    /// The recipient's tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The new notification.
    #[event(subject)]
    pub notification_id: NotificationId,
    /// Its recipient.
    pub recipient: UserId,
    /// The channel asked for.
    pub channel: Channel,
    /// The template's key, e.g. `invoice_ready`; the recipient's locale picks its version.
    pub template: String,
}

/// A notification was handed to its provider (the mail relay, the SMS or push gateway, or
/// the in-app store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "notify.notification_sent", version = 1)]
pub struct NotificationSent {
    /// The recipient's tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The notification.
    #[event(subject)]
    pub notification_id: NotificationId,
    /// Its recipient.
    pub recipient: UserId,
    /// The channel it went out on.
    pub channel: Channel,
    /// The provider that accepted it, e.g. `smtp` or `twilio`.
    pub provider: String,
    /// The provider's id of the message, to match its delivery reports; absent when it
    /// gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// Which attempt this was, from 1; retries increase it.
    pub attempt: u32,
}

/// The provider confirmed that a notification reached its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "notify.delivery_confirmed", version = 1)]
pub struct DeliveryConfirmed {
    /// The recipient's tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The notification.
    #[event(subject)]
    pub notification_id: NotificationId,
    /// Its recipient.
    pub recipient: UserId,
    /// The channel it was delivered on.
    pub channel: Channel,
}

/// A tenant's template for one channel and locale was created or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "notify.template_updated", version = 1)]
pub struct TemplateUpdated {
    /// The tenant that owns the template.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The template.
    #[event(subject)]
    pub template_id: TemplateId,
    /// Its key, e.g. `invoice_ready`, as notifications name it.
    pub key: String,
    /// The channel it renders for.
    pub channel: Channel,
    /// Its language, a BCP 47 tag such as `en-GB`.
    pub locale: String,
    /// Its revision, from 1, increased by every change.
    pub revision: u32,
    /// The user who changed it; absent when it was changed in code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<UserId>,
}

/// Every event of saas-notify with its JSON Schema.
pub fn catalog() -> Vec<EventSchema> {
    vec![
        EventSchema::of::<NotificationRequested>(),
        EventSchema::of::<NotificationSent>(),
        EventSchema::of::<DeliveryConfirmed>(),
        EventSchema::of::<TemplateUpdated>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_are_the_types_of_the_catalog() {
        let types: Vec<String> = catalog().into_iter().map(|e| e.event_type).collect();
        assert_eq!(types, [NOTIFICATION_REQUESTED, NOTIFICATION_SENT, DELIVERY_CONFIRMED, TEMPLATE_UPDATED]);
    }

    #[test]
    fn channels_are_snake_case() {
        let names: Vec<String> = [Channel::Email, Channel::Sms, Channel::Push, Channel::InApp]
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        assert_eq!(names, ["\"email\"", "\"sms\"", "\"push\"", "\"in_app\""]);
    }
}
