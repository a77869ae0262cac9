use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::{EventId, TenantId};

/// A domain event as it travels: CloudEvents 1.0 attributes, the tenant, and JSON data.
///
/// The type carries a version (`tenancy.tenant_provisioned.v1`); its first segment is the
/// bounded context, which names the topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    /// CloudEvents spec version, always `1.0`.
    pub specversion: String,
    /// Unique id; consumers deduplicate on it.
    pub id: EventId,
    /// Versioned event type, `context.name.vN`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Producer, `/saas/<context>`.
    pub source: String,
    /// When the event happened (RFC 3339 UTC).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: OffsetDateTime,
    /// The tenant the event belongs to (CloudEvents extension `tenantid`); `None` for
    /// platform events.
    #[serde(rename = "tenantid", default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// The entity the event is about, e.g. a user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Media type of `data`, always `application/json`.
    pub datacontenttype: String,
    /// The event payload.
    pub data: serde_json::Value,
}

impl Envelope {
    /// A new event of `event_type` for `tenant`, happening now.
    pub fn new(event_type: impl Into<String>, tenant: Option<TenantId>, data: serde_json::Value) -> Self {
        let event_type = event_type.into();
        let source = format!("/saas/{}", context_of(&event_type));
        Self {
            specversion: "1.0".into(),
            id: EventId::new(),
            event_type,
            source,
            time: OffsetDateTime::now_utc(),
            tenant,
            subject: None,
            datacontenttype: "application/json".into(),
            data,
        }
    }

    /// Sets the subject.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The bounded context, i.e. the topic: the type up to the first `.`.
    pub fn context(&self) -> &str {
        context_of(&self.event_type)
    }
}

fn context_of(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or(event_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_a_cloudevent() {
        let tenant = TenantId::new();
        let e = Envelope::new("tenancy.tenant_provisioned.v1", Some(tenant), serde_json::json!({"slug": "acme"}))
            .with_subject("ten_x");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "tenancy.tenant_provisioned.v1");
        assert_eq!(json["source"], "/saas/tenancy");
        assert_eq!(json["tenantid"], tenant.to_string());
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(e.context(), "tenancy");
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
