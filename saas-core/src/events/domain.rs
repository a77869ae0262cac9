//! Typed domain events: a Rust type per event and version, with its JSON Schema.
//!
//! Derive [`DomainEvent`] with `saas_macros::DomainEvent` (the type must also be
//! `Serialize`, `Deserialize` and `schemars::JsonSchema`):
//!
//! ```
//! use saas_core::{events::{DomainEvent, Envelope}, id::TenantId};
//!
//! /// An invoice was paid.
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, saas_macros::DomainEvent)]
//! #[event(name = "billing.invoice_paid", version = 1)]
//! struct InvoicePaid {
//!     /// The tenant (also the envelope's `tenantid`, and the Kafka record key).
//!     #[event(tenant)]
//!     tenant_id: TenantId,
//!     /// The invoice (also the envelope's `subject`).
//!     #[event(subject)]
//!     invoice: String,
//!     /// The amount paid.
//!     cents: u64,
//! }
//!
//! let tenant = TenantId::new();
//! let paid = InvoicePaid { tenant_id: tenant, invoice: "inv_1".into(), cents: 4200 };
//! let envelope = Envelope::of(&paid).unwrap();
//! assert_eq!(envelope.event_type, "billing.invoice_paid.v1");
//! assert_eq!((envelope.context(), envelope.tenant), ("billing", Some(tenant)));
//! assert_eq!(envelope.subject.as_deref(), Some("inv_1"));
//! let back: InvoicePaid = envelope.decode().unwrap().unwrap();
//! assert_eq!(back.cents, 4200);
//! ```
//!
//! The tenant field may be `TenantId` or `Option<TenantId>`; without one the event is a
//! platform event. The subject field may be any `Display` type, or an `Option` of one.

use serde::{Serialize, de::DeserializeOwned};

use super::Envelope;
use crate::{
    error::{Error, Result},
    id::TenantId,
};

/// A domain event type: its versioned name, context (topic), tenant and JSON Schema.
pub trait DomainEvent: Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static {
    /// `context.name`, e.g. `tenancy.tenant_provisioned`.
    const NAME: &'static str;
    /// The payload's version: bump it for every change that is not backward compatible.
    const VERSION: u32;

    /// The tenant the event belongs to (`None` for platform events).
    fn tenant(&self) -> Option<TenantId>;

    /// The entity the event is about, if any.
    fn subject(&self) -> Option<String> {
        None
    }

    /// The versioned type, `context.name.vN`.
    fn event_type() -> String {
        format!("{}.v{}", Self::NAME, Self::VERSION)
    }

    /// The bounded context, which names the topic.
    fn context() -> &'static str {
        Self::NAME.split('.').next().unwrap_or(Self::NAME)
    }
}

impl Envelope {
    /// The envelope of a typed event, happening now.
    pub fn of<E: DomainEvent>(event: &E) -> Result<Self> {
        let data = serde_json::to_value(event).map_err(Error::internal)?;
        let envelope = Self::new(E::event_type(), event.tenant(), data);
        Ok(match event.subject() {
            Some(subject) => envelope.with_subject(subject),
            None => envelope,
        })
    }

    /// The typed event, when this envelope is of type `E` (`None` otherwise).
    pub fn decode<E: DomainEvent>(&self) -> Option<Result<E>> {
        (self.event_type == E::event_type()).then(|| serde_json::from_value(self.data.clone()).map_err(Error::internal))
    }
}

/// One event of a catalog: its type and the JSON Schema of its data.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// `context.name.vN`.
    pub event_type: String,
    /// The JSON Schema (2020-12) of the envelope's `data`.
    pub schema: serde_json::Value,
}

impl EventSchema {
    /// The entry of `E`.
    pub fn of<E: DomainEvent>() -> Self {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<E>().to_value();
        Self { event_type: E::event_type(), schema }
    }
}

/// Why `new` cannot replace `old` under the same version, if it cannot: a property
/// removed or retyped, a new required property (old events lack it), or a required one
/// made optional (consumers rely on it). Compares the top-level properties, following
/// `$ref`s into `$defs`, so a changed definition counts as a retyped property.
pub fn incompatibility(old: &serde_json::Value, new: &serde_json::Value) -> Option<String> {
    let properties =
        |s: &serde_json::Value| s.get("properties").and_then(|p| p.as_object()).cloned().unwrap_or_default();
    let required = |s: &serde_json::Value| -> Vec<String> {
        s.get("required")
            .and_then(|r| r.as_array())
            .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let (old_properties, new_properties) = (properties(old), properties(new));
    for (name, old_type) in &old_properties {
        match new_properties.get(name) {
            None => return Some(format!("property `{name}` was removed")),
            Some(new_type) if shape(new_type, new, 0) != shape(old_type, old, 0) => {
                return Some(format!("property `{name}` changed type"));
            }
            Some(_) => {}
        }
    }
    let (old_required, new_required) = (required(old), required(new));
    if let Some(name) = new_required.iter().find(|name| !old_required.contains(name)) {
        return Some(format!("property `{name}` became required"));
    }
    old_required
        .iter()
        .find(|name| !new_required.contains(name))
        .map(|name| format!("property `{name}` became optional"))
}

/// What a property's schema says about its type, without descriptions or examples, with
/// `#/$defs/…` references replaced by what they name (`root` holds the definitions).
fn shape(schema: &serde_json::Value, root: &serde_json::Value, depth: u32) -> serde_json::Value {
    const MAX_DEPTH: u32 = 32; // a recursive type stops being expanded here
    match schema {
        serde_json::Value::Object(map) => {
            let target = map
                .get("$ref")
                .and_then(|r| r.as_str())
                .and_then(|r| r.strip_prefix("#/$defs/"))
                .and_then(|name| root.get("$defs")?.get(name));
            if let (Some(target), true) = (target, depth < MAX_DEPTH) {
                return shape(target, root, depth + 1);
            }
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "description" | "title" | "examples" | "default" | "format"))
                .map(|(k, v)| (k.clone(), shape(v, root, depth + 1)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
        serde_json::Value::Array(items) => items.iter().map(|item| shape(item, root, depth + 1)).collect(),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::incompatibility;

    fn schema(properties: serde_json::Value, required: &[&str]) -> serde_json::Value {
        serde_json::json!({ "type": "object", "properties": properties, "required": required })
    }

    #[test]
    fn compatible_and_incompatible_changes() {
        let old = schema(serde_json::json!({ "a": { "type": "string" }, "b": { "type": "integer" } }), &["a"]);
        let added_optional = schema(
            serde_json::json!({ "a": { "type": "string", "description": "now documented" }, "b": { "type": "integer" }, "c": { "type": "string" } }),
            &["a"],
        );
        assert_eq!(incompatibility(&old, &added_optional), None);
        let removed = schema(serde_json::json!({ "a": { "type": "string" } }), &["a"]);
        assert_eq!(incompatibility(&old, &removed).unwrap(), "property `b` was removed");
        let retyped = schema(serde_json::json!({ "a": { "type": "integer" }, "b": { "type": "integer" } }), &["a"]);
        assert_eq!(incompatibility(&old, &retyped).unwrap(), "property `a` changed type");
        let required =
            schema(serde_json::json!({ "a": { "type": "string" }, "b": { "type": "integer" } }), &["a", "b"]);
        assert_eq!(incompatibility(&old, &required).unwrap(), "property `b` became required");
        let optional = schema(serde_json::json!({ "a": { "type": "string" }, "b": { "type": "integer" } }), &[]);
        assert_eq!(incompatibility(&old, &optional).unwrap(), "property `a` became optional");
    }

    #[test]
    fn a_changed_definition_is_a_retyped_property() {
        let with_channel = |variants: serde_json::Value| {
            serde_json::json!({
                "type": "object",
                "properties": { "channel": { "$ref": "#/$defs/Channel", "description": "where" } },
                "required": ["channel"],
                "$defs": { "Channel": { "type": "string", "enum": variants } }
            })
        };
        let old = with_channel(serde_json::json!(["email", "sms"]));
        let documented = {
            let mut s = with_channel(serde_json::json!(["email", "sms"]));
            s["$defs"]["Channel"]["description"] = "documented now".into();
            s
        };
        assert_eq!(incompatibility(&old, &documented), None);
        let narrowed = with_channel(serde_json::json!(["email"]));
        assert_eq!(incompatibility(&old, &narrowed).unwrap(), "property `channel` changed type");
        // A definition inlined under the same shape is no change.
        let inlined = serde_json::json!({
            "type": "object",
            "properties": { "channel": { "type": "string", "enum": ["email", "sms"] } },
            "required": ["channel"]
        });
        assert_eq!(incompatibility(&old, &inlined), None);
    }
}
