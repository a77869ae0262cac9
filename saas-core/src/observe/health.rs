//! `/health/live` and `/health/ready`.
//!
//! Liveness says the process serves HTTP. Readiness checks every registered component (the
//! database, the cache, the event bus, …) concurrently, each within 2 s, and answers 503 when
//! any is down, so a load balancer stops sending traffic to an instance that cannot serve it.
//!
//! ```
//! use saas_core::observe::health::Health;
//!
//! let health = Health::new().component("cache", "memory", || async { Ok(()) });
//! let router: axum::Router = saas_core::observe::health::router(health).into();
//! ```

use std::{
    collections::BTreeMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Json, extract::State, response::IntoResponse};
use futures::future::BoxFuture;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::Result;

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

#[derive(Clone)]
struct Component {
    name: String,
    backend: String,
    check: Check,
}

/// The components `/health/ready` checks.
#[derive(Clone, Default)]
pub struct Health {
    components: Vec<Component>,
}

/// State of one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentStatus {
    /// `up` or `down`.
    pub status: String,
    /// Which adapter serves it, e.g. `sqlite`, `redis`, `in-process`.
    pub backend: String,
    /// How long the check took, in milliseconds.
    pub latency_ms: u64,
    /// Why it is down (`unreachable` or `timeout`); absent when up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Body of `/health/ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` when every component is up, else `unavailable`.
    pub status: String,
    /// Each component by name.
    pub components: BTreeMap<String, ComponentStatus>,
}

/// Body of `/health/live`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `alive`.
    pub status: String,
}

impl Health {
    /// No components yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a component; `check` returns `Ok` when it can serve.
    pub fn component<F, Fut>(mut self, name: &str, backend: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.components.push(Component {
            name: name.into(),
            backend: backend.into(),
            check: Arc::new(move || Box::pin(check())),
        });
        self
    }

    /// Checks every component.
    pub async fn readiness(&self) -> Readiness {
        let checks = self.components.iter().map(|c| async move {
            let start = Instant::now();
            let outcome = tokio::time::timeout(Duration::from_secs(2), (c.check)()).await;
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::warn!(component = c.name, error = %e, "health check failed");
                    Some("unreachable".to_owned())
                }
                Err(_) => Some("timeout".to_owned()),
            };
            let status = ComponentStatus {
                status: if error.is_none() { "up" } else { "down" }.into(),
                backend: c.backend.clone(),
                latency_ms: start.elapsed().as_millis() as u64,
                error,
            };
            (c.name.clone(), status)
        });
        let components: BTreeMap<_, _> = futures::future::join_all(checks).await.into_iter().collect();
        let ready = components.values().all(|c| c.status == "up");
        Readiness { status: if ready { "ready" } else { "unavailable" }.into(), components }
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, body = Liveness)))]
pub async fn live() -> Json<Liveness> {
    Json(Liveness { status: "alive".into() })
}

/// Readiness: every component is up (200) or at least one is down (503).
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Every component is up", body = Readiness),
        (status = 503, description = "At least one component is down", body = Readiness),
    )
)]
pub async fn ready(State(health): State<Health>) -> impl IntoResponse {
    let report = health.readiness().await;
    let status = if report.status == "ready" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report))
}

/// `/health/live`, `/health/ready` and `/metrics`, documented.
pub fn router(health: Health) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(crate::observe::metrics::render))
        .with_state(health)
}
