//! The Schema Registry client against `saas_core::testing::schema_registry`, a stand-in that
//! follows the Confluent wire format (no Schema Registry server installs on these machines).
#![cfg(feature = "kafka")]

use saas_core::{
    events::{Compatibility, EventSchema, SchemaRegistry},
    testing::schema_registry,
};
use serde_json::{Value, json};

fn schema(required: &[&str], optional: &[&str]) -> Value {
    let properties: serde_json::Map<String, Value> =
        required.iter().chain(optional).map(|p| (p.to_string(), json!({"type": "string"}))).collect();
    json!({ "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": properties, "required": required })
}

fn event(event_type: &str, schema: Value) -> EventSchema {
    EventSchema { event_type: event_type.into(), schema }
}

#[tokio::test]
async fn publishing_registers_each_event_under_its_subject_with_backward_compatibility() {
    let (url, store) = schema_registry::start().await;
    let registry = SchemaRegistry::new(&url).unwrap();
    let catalog = [
        event("tenancy.tenant_provisioned.v1", schema(&["slug"], &[])),
        event("auth.user_registered.v1", schema(&["email"], &[])),
    ];
    let registered = registry.publish(&catalog, "saas.").await.unwrap();
    assert_eq!(
        registered.iter().map(|r| (r.subject.as_str(), r.id)).collect::<Vec<_>>(),
        [("saas.tenancy.tenant_provisioned.v1", 1), ("saas.auth.user_registered.v1", 2)]
    );
    assert_eq!(store.lock().unwrap().levels["saas.auth.user_registered.v1"], "FORWARD");

    // Publishing the same catalog again changes nothing.
    assert_eq!(registry.publish(&catalog, "saas.").await.unwrap(), registered);
    assert_eq!(store.lock().unwrap().subjects["saas.auth.user_registered.v1"].len(), 1);

    // A compatible change (a new optional property) is the subject's next schema.
    let grown = event("auth.user_registered.v1", schema(&["email"], &["name"]));
    assert_eq!(registry.check("saas.auth.user_registered.v1", &grown.schema).await.unwrap(), Compatibility::Compatible);
    let again = registry.publish(std::slice::from_ref(&grown), "saas.").await.unwrap();
    assert_eq!(again[0].id, 3);
    assert_eq!(store.lock().unwrap().subjects["saas.auth.user_registered.v1"].len(), 2);

    // A rollback (a server still on the older schema) starts: its schema is held already.
    let requests = store.lock().unwrap().requests.len();
    assert_eq!(registry.publish(&catalog, "saas.").await.unwrap(), registered);
    assert_eq!(store.lock().unwrap().requests.len(), requests, "nothing registered or configured again");
    assert_eq!(registry.lookup("saas.auth.user_registered.v1", &grown.schema).await.unwrap(), Some(3));
    assert_eq!(registry.lookup("saas.nothing.v1", &grown.schema).await.unwrap(), None);
    assert!(!format!("{registry:?}").contains("127.0.0.1"), "Debug shows no URL (it may hold credentials)");
}

#[tokio::test]
async fn an_incompatible_schema_is_refused_and_nothing_is_registered() {
    let (url, store) = schema_registry::start().await;
    let registry = SchemaRegistry::new(&url).unwrap();
    registry.publish(&[event("auth.user_registered.v1", schema(&["email", "name"], &[]))], "saas.").await.unwrap();
    let before = store.lock().unwrap().requests.len();

    // `name` removed under the same version, and a brand-new event beside it.
    let catalog = [
        event("billing.invoice_generated.v1", schema(&["number"], &[])),
        event("auth.user_registered.v1", schema(&["email"], &[])),
    ];
    let refused = registry.check("saas.auth.user_registered.v1", &catalog[1].schema).await.unwrap();
    assert!(
        matches!(&refused, Compatibility::Incompatible(why) if why.iter().any(|w| w.contains("name"))),
        "{refused:?}"
    );
    let e = registry.publish(&catalog, "saas.").await.unwrap_err().into_cause().to_string();
    assert!(e.contains("saas.auth.user_registered.v1") && e.contains("bump the event's version"), "{e}");
    assert_eq!(
        store.lock().unwrap().requests.len(),
        before,
        "checked only: nothing registered, not even the new event"
    );
    assert_eq!(
        registry.check("saas.billing.invoice_generated.v1", &catalog[0].schema).await.unwrap(),
        Compatibility::NewSubject
    );

    // The registry's own refusal (409) reaches the caller with its code and message.
    let e = registry
        .register("saas.auth.user_registered.v1", &catalog[1].schema)
        .await
        .unwrap_err()
        .into_cause()
        .to_string();
    assert!(e.contains("409") && e.contains("incompatible with an earlier schema"), "{e}");
    let e = registry
        .set_compatibility("saas.auth.user_registered.v1", "SIDEWAYS")
        .await
        .unwrap_err()
        .into_cause()
        .to_string();
    assert!(e.contains("42203") && e.contains("Invalid compatibility level"), "{e}");
}

#[tokio::test]
async fn an_unreachable_registry_is_named_without_its_credentials() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let registry = SchemaRegistry::new(&format!("http://user:s3cret@127.0.0.1:{port}")).unwrap();
    let e = registry.check("saas.x.y.v1", &schema(&[], &[])).await.unwrap_err().into_cause().to_string();
    assert!(e.contains("cannot reach the schema registry"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
}
