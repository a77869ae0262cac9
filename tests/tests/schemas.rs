//! The JSON Schema of every event, committed under `schemas/<type>.json`: a change to an
//! event's data that is not backward compatible (a property removed or retyped, a new
//! required property) fails unless the event's version is bumped; a compatible change fails
//! until the committed file is regenerated (`UPDATE_SCHEMAS=1 cargo test -p saas-e2e --test
//! schemas`). Files of older versions stay, for consumers still reading them.

use saas_core::events::{EventSchema, incompatibility};

/// Every event the domains define: the built ones, and the contracts of those not built yet.
fn catalog() -> Vec<EventSchema> {
    [
        saas_tenancy::events::catalog(),
        saas_auth::events::catalog(),
        saas_users::events::catalog(),
        saas_billing::events::catalog(),
        saas_notify::events::catalog(),
        saas_analytics::events::catalog(),
    ]
    .concat()
}

#[test]
fn event_schemas_are_committed_and_compatible() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut problems = Vec::new();
    for event in catalog() {
        let path = dir.join(format!("{}.json", event.event_type));
        let text = serde_json::to_string_pretty(&event.schema).unwrap() + "\n";
        let committed = std::fs::read_to_string(&path).ok();
        if let Some(committed) = &committed {
            let old: serde_json::Value = serde_json::from_str(committed).unwrap();
            if let Some(why) = incompatibility(&old, &event.schema) {
                problems.push(format!("{}: {why}: bump the event's version instead", event.event_type));
                continue;
            }
        }
        if committed.as_deref() == Some(text.as_str()) {
            continue;
        }
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, text).unwrap();
        } else {
            let what = if committed.is_some() { "is stale" } else { "is missing" };
            problems.push(format!(
                "schemas/{}.json {what}: run UPDATE_SCHEMAS=1 cargo test -p saas-e2e --test schemas",
                event.event_type
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_event_type_is_versioned_and_unique() {
    let types: Vec<String> = catalog().into_iter().map(|e| e.event_type).collect();
    let mut unique = types.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), types.len(), "an event type is defined twice");
    for event_type in &types {
        let (name, version) = event_type.rsplit_once(".v").unwrap();
        assert!(name.contains('.') && version.parse::<u32>().is_ok_and(|v| v >= 1), "{event_type}");
    }
}
