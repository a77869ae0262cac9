//! A stand-in for the Confluent Schema Registry (features `testing` and `kafka`): the REST
//! endpoints the [`SchemaRegistry`](crate::events::SchemaRegistry) client uses, with the
//! documented wire format (`application/vnd.schemaregistry.v1+json`, errors as
//! `{"error_code", "message"}` with the documented codes), subjects and schemas in memory,
//! and [`incompatibility`] as its rule at every level but `NONE` (the real registry's rules
//! differ in detail: it judges open and closed content models apart).
//!
//! No Schema Registry server installs on the CI machines (Karapace is not on PyPI,
//! Confluent's needs Maven or Docker), so tests run against this.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{post, put},
};
use serde_json::{Value, json};

use crate::events::incompatibility;

/// What the stand-in holds: subjects with their schemas, compatibility levels, and a log of
/// the requests that changed something.
#[derive(Debug, Default)]
pub struct Store {
    /// Each subject's schemas, oldest first.
    pub subjects: HashMap<String, Vec<Value>>,
    /// Compatibility levels set per subject.
    pub levels: HashMap<String, String>,
    /// Every distinct schema; its id is its index plus one.
    pub ids: Vec<Value>,
    /// `register <subject>` and `config <subject> <level>`, in order.
    pub requests: Vec<String>,
}

/// The store, shared with the running stand-in.
pub type Shared = Arc<Mutex<Store>>;
type Answer = (StatusCode, Json<Value>);

fn error(status: StatusCode, code: i64, message: &str) -> Answer {
    (status, Json(json!({ "error_code": code, "message": message })))
}

/// The registry's 404 for a subject it does not hold.
fn missing_subject(subject: &str) -> Answer {
    error(StatusCode::NOT_FOUND, 40401, &format!("Subject '{subject}' not found."))
}

/// The JSON Schema a request body carries; the registry's 415 or 422 as the rejection.
struct SchemaBody(Value);

impl<S: Send + Sync> axum::extract::FromRequest<S> for SchemaBody {
    type Rejection = Answer;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Answer> {
        let content_type = request.headers().get("content-type").and_then(|v| v.to_str().ok());
        if content_type != Some("application/vnd.schemaregistry.v1+json") {
            return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, 415, "unsupported media type"));
        }
        let invalid = |what| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, what);
        let Json(body) = Json::<Value>::from_request(request, state).await.map_err(|_| invalid("Invalid schema"))?;
        if body["schemaType"] != "JSON" {
            return Err(invalid("Invalid schema type"));
        }
        let text = body["schema"].as_str().unwrap_or_default();
        serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_object)
            .map(Self)
            .ok_or_else(|| invalid("Invalid schema"))
    }
}

async fn register(State(store): State<Shared>, Path(subject): Path<String>, SchemaBody(schema): SchemaBody) -> Answer {
    let mut store = store.lock().unwrap();
    store.requests.push(format!("register {subject}"));
    // A schema the subject holds already (any version) is answered with its id.
    let checked = store.levels.get(&subject).is_none_or(|l| l != "NONE");
    let held = store.subjects.get(&subject).is_some_and(|v| v.contains(&schema));
    if let (Some(latest), false) = (store.subjects.get(&subject).and_then(|v| v.last()), held) {
        if checked && incompatibility(latest, &schema).is_some() {
            return error(StatusCode::CONFLICT, 409, "Schema being registered is incompatible with an earlier schema");
        }
    }
    let id = match store.ids.iter().position(|s| s == &schema) {
        Some(i) => i + 1,
        None => {
            store.ids.push(schema.clone());
            store.ids.len()
        }
    };
    let versions = store.subjects.entry(subject).or_default();
    if !versions.contains(&schema) {
        versions.push(schema);
    }
    (StatusCode::OK, Json(json!({ "id": id })))
}

async fn lookup(State(store): State<Shared>, Path(subject): Path<String>, SchemaBody(schema): SchemaBody) -> Answer {
    let store = store.lock().unwrap();
    let Some(versions) = store.subjects.get(&subject) else { return missing_subject(&subject) };
    match (versions.iter().position(|s| s == &schema), store.ids.iter().position(|s| s == &schema)) {
        (Some(version), Some(id)) => (
            StatusCode::OK,
            Json(json!({ "subject": subject, "id": id + 1, "version": version + 1, "schema": schema.to_string() })),
        ),
        _ => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn check(State(store): State<Shared>, Path(subject): Path<String>, SchemaBody(schema): SchemaBody) -> Answer {
    let store = store.lock().unwrap();
    let Some(latest) = store.subjects.get(&subject).and_then(|v| v.last()) else { return missing_subject(&subject) };
    let why = incompatibility(latest, &schema);
    (StatusCode::OK, Json(json!({ "is_compatible": why.is_none(), "messages": why.into_iter().collect::<Vec<_>>() })))
}

async fn configure(State(store): State<Shared>, Path(subject): Path<String>, Json(body): Json<Value>) -> Answer {
    let level = body["compatibility"].as_str().unwrap_or_default().to_owned();
    let levels =
        ["BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"];
    if !levels.contains(&level.as_str()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42203, "Invalid compatibility level");
    }
    let mut store = store.lock().unwrap();
    store.requests.push(format!("config {subject} {level}"));
    store.levels.insert(subject, level.clone());
    (StatusCode::OK, Json(json!({ "compatibility": level })))
}

/// Starts the stand-in on a free port; returns its URL and its store.
pub async fn start() -> (String, Shared) {
    let store = Shared::default();
    let app = Router::new()
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", post(register))
        .route("/compatibility/subjects/{subject}/versions/latest", post(check))
        .route("/config/{subject}", put(configure))
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, store)
}
