//! A client of the Confluent Schema Registry REST API, for the JSON Schemas of events.
//!
//! Each versioned event type is a subject, `<topic prefix><type>`
//! (`saas.tenancy.tenant_provisioned.v1`), with `FORWARD` compatibility: producers are
//! deployed before consumers, so a consumer still on the older schema must read the new
//! events (Confluent's `BACKWARD` would refuse even a new optional property of our open
//! JSON Schemas). A compatible change within a version registers as the subject's next
//! schema; an incompatible one is refused (bump the event's version instead, which makes a
//! new subject). A schema registered already (a rollback, a second server) passes as is. Speaks the
//! documented wire format: `application/vnd.schemaregistry.v1+json` bodies, errors as
//! `{"error_code": …, "message": …}`.
//!
//! ```no_run
//! # async fn demo(catalog: Vec<saas_core::events::EventSchema>) -> saas_core::error::Result<()> {
//! let registry = saas_core::events::SchemaRegistry::new("http://127.0.0.1:8081")?;
//! // Checks every schema first: nothing is registered when one of them is incompatible.
//! for registered in registry.publish(&catalog, "saas.").await? {
//!     println!("{} is schema id {}", registered.subject, registered.id);
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::EventSchema;
use crate::error::{Error, Result};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A Schema Registry at one base URL.
#[derive(Clone)]
pub struct SchemaRegistry {
    http: reqwest::Client,
    base: String,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold credentials.
        f.debug_struct("SchemaRegistry").finish_non_exhaustive()
    }
}

/// What the registry says of a schema for a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    /// The subject does not exist yet: any schema starts it.
    NewSubject,
    /// Compatible with the subject's latest schema.
    Compatible,
    /// Not compatible; the registry's reasons, when it gives them.
    Incompatible(Vec<String>),
}

/// A schema the registry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The subject, `<prefix><event type>`.
    pub subject: String,
    /// The registry's schema id (the same for the same schema under any subject).
    pub id: i64,
}

/// A schema's id, as the registry answers a registration or a lookup.
#[derive(Deserialize)]
struct SchemaId {
    id: i64,
}

/// The request body that carries `schema` (a JSON Schema).
fn schema_body(schema: &Value) -> Value {
    json!({ "schemaType": "JSON", "schema": schema.to_string() })
}

/// An error body of the registry.
#[derive(Debug, Deserialize)]
struct RegistryError {
    error_code: i64,
    message: String,
}

impl SchemaRegistry {
    /// A client of the registry at `url` (`http://HOST:PORT`, optionally with
    /// `USER:PASSWORD@` for basic authentication); 10 s per request.
    pub fn new(url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::internal(anyhow::anyhow!("schema registry client: {e}")))?;
        Ok(Self { http, base: url.trim_end_matches('/').to_owned() })
    }

    /// Registers `schema` (a JSON Schema) under `subject`; returns its id. Registering the
    /// same schema again returns the same id.
    pub async fn register(&self, subject: &str, schema: &Value) -> Result<i64> {
        let request = self.http.post(self.url(&format!("/subjects/{subject}/versions")));
        let response = self.send(request, &schema_body(schema)).await?;
        Ok(self.read::<SchemaId>(response, &format!("registering {subject}")).await?.id)
    }

    /// The id of `schema` when `subject` holds it already (any version), else `None`.
    pub async fn lookup(&self, subject: &str, schema: &Value) -> Result<Option<i64>> {
        let response =
            self.send(self.http.post(self.url(&format!("/subjects/{subject}"))), &schema_body(schema)).await?;
        // 40401: no such subject; 40403: not this schema.
        let doing = format!("looking up {subject}");
        let found = self.read_unless_missing::<SchemaId>(response, &doing, &[40401, 40403]).await?;
        Ok(found.map(|found| found.id))
    }

    /// Whether `schema` is compatible with the latest schema of `subject`.
    pub async fn check(&self, subject: &str, schema: &Value) -> Result<Compatibility> {
        let request =
            self.http.post(self.url(&format!("/compatibility/subjects/{subject}/versions/latest?verbose=true")));
        let response = self.send(request, &schema_body(schema)).await?;
        #[derive(Deserialize)]
        struct Answer {
            is_compatible: bool,
            #[serde(default)]
            messages: Vec<String>,
        }
        // 40401: no such subject; 40402: no version yet. Either way, a new subject.
        let doing = format!("checking {subject}");
        let answer = self.read_unless_missing::<Answer>(response, &doing, &[40401, 40402]).await?;
        Ok(match answer {
            None => Compatibility::NewSubject,
            Some(answer) if answer.is_compatible => Compatibility::Compatible,
            Some(answer) => Compatibility::Incompatible(answer.messages),
        })
    }

    /// Sets the compatibility level of `subject` (`BACKWARD`, `FULL`, `NONE`, …).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<()> {
        let response = self
            .send(self.http.put(self.url(&format!("/config/{subject}"))), &json!({ "compatibility": level }))
            .await?;
        self.read::<Value>(response, &format!("configuring {subject}")).await.map(drop)
    }

    /// Checks every event of `catalog` under `<prefix><event type>`, then, when all are
    /// compatible, registers them (a new subject gets `FORWARD` compatibility first).
    /// Schemas the registry holds already pass unchecked. Fails naming every incompatible
    /// event, and registers nothing then.
    pub async fn publish(&self, catalog: &[EventSchema], prefix: &str) -> Result<Vec<Registered>> {
        /// What to do with one event's schema once all are checked.
        enum Plan {
            Held(i64),
            Register,
            RegisterNewSubject,
        }
        let subject = |event: &EventSchema| format!("{prefix}{}", event.event_type);
        let mut plans = Vec::with_capacity(catalog.len());
        let mut refused = Vec::new();
        for event in catalog {
            let subject = subject(event);
            if let Some(id) = self.lookup(&subject, &event.schema).await? {
                plans.push(Plan::Held(id));
                continue;
            }
            match self.check(&subject, &event.schema).await? {
                Compatibility::Compatible => plans.push(Plan::Register),
                Compatibility::NewSubject => plans.push(Plan::RegisterNewSubject),
                Compatibility::Incompatible(why) => refused.push(format!("{subject}: {}", why.join("; "))),
            }
        }
        if !refused.is_empty() {
            return Err(Error::internal(anyhow::anyhow!(
                "the schema registry refuses incompatible event schemas (bump the event's version instead): {}",
                refused.join(" | ")
            )));
        }
        let mut registered = Vec::with_capacity(catalog.len());
        for (event, plan) in catalog.iter().zip(plans) {
            let subject = subject(event);
            let id = match plan {
                Plan::Held(id) => id,
                Plan::Register => self.register(&subject, &event.schema).await?,
                Plan::RegisterNewSubject => {
                    self.set_compatibility(&subject, "FORWARD").await?;
                    self.register(&subject, &event.schema).await?
                }
            };
            registered.push(Registered { subject, id });
        }
        Ok(registered)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder, body: &Value) -> Result<reqwest::Response> {
        request
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .body(body.to_string())
            .send()
            .await
            // Without the URL: it may hold credentials.
            .map_err(|e| Error::internal(anyhow::anyhow!("cannot reach the schema registry: {}", e.without_url())))
    }

    /// The answer, or `None` when the registry answers 404 with one of `missing` codes.
    async fn read_unless_missing<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
        doing: &str,
        missing: &[i64],
    ) -> Result<Option<T>> {
        if response.status() != reqwest::StatusCode::NOT_FOUND {
            return self.read(response, doing).await.map(Some);
        }
        let error = response.json::<RegistryError>().await.ok();
        match error {
            Some(e) if missing.contains(&e.error_code) => Ok(None),
            error => Err(registry_error(doing, 404, error)),
        }
    }

    async fn read<T: serde::de::DeserializeOwned>(&self, response: reqwest::Response, doing: &str) -> Result<T> {
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::internal(anyhow::anyhow!("schema registry, {doing}: {}", e.without_url())))?;
        if !status.is_success() {
            return Err(registry_error(doing, status.as_u16(), serde_json::from_slice(&bytes).ok()));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            Error::internal(anyhow::anyhow!("schema registry, {doing}: unexpected answer ({e}): {shown}"))
        })
    }
}

fn registry_error(doing: &str, status: u16, error: Option<RegistryError>) -> Error {
    Error::internal(match error {
        Some(e) => {
            let message: String = e.message.chars().take(500).collect();
            anyhow::anyhow!("schema registry, {doing}: {status} (error {}): {message}", e.error_code)
        }
        None => anyhow::anyhow!("schema registry, {doing}: HTTP {status}"),
    })
}
