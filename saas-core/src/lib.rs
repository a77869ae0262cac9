//! The shared kernel of [saas-rs](https://github.com/saas-rs/saas-rs): what every domain
//! crate and every saas-rs server is built on.
//!
//! | module | what it gives you |
//! |---|---|
//! | [`id`] | typed, prefixed UUIDv7 ids (`ten_…`, `usr_…`) and [`define_id!`] for your own |
//! | [`error`] | one [`Error`] rendering RFC 9457 problem+json with a stable `code` |
//! | [`config`] | layered configuration: defaults < `saas.toml` < `SAAS_*` env, validated |
//! | [`db`] | SQLite / PostgreSQL pools, embedded migrations, [`TenantTx`](db::TenantTx) |
//! | [`events`] | event envelope, bus port, in-process bus, transactional outbox, inbox |
//! | [`cache`] | cache port with memory and Redis adapters |
//! | [`caller`] | [`Caller`](caller::Caller), who a request comes from (set by the authentication layer) |
//! | [`http`] | problem+json extractors and the layer stack (request id, rate limit, idempotency…) |
//! | [`observe`] | JSON logs, Prometheus metrics, health endpoints |
//! | [`tenant`] | [`TenantContext`](tenant::TenantContext), the tenant a request acts for |
//! | [`page`] | cursor pagination (`?limit=&cursor=`) |
//! | [`openapi`] | the OpenAPI document and offline docs page |
//!
//! # Features
//! - `sqlite` (default): SQLite through sqlx.
//! - `postgres` (default): PostgreSQL and CockroachDB through sqlx.
//! - `redis` (default): Redis adapters for the cache and the rate limiter.
//! - `testing`: conformance suites for adapter authors.
//!
//! The book (`docs/` in the repository) explains the architecture and every config key.

pub mod cache;
pub mod caller;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod id;
pub mod observe;
pub mod openapi;
pub mod page;
pub mod tenant;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};

/// Re-exports used by [`define_id!`]; not part of the public API.
#[doc(hidden)]
pub mod reexport {
    pub use schemars;
    pub use serde;
    pub use serde_json;
    pub use sqlx;
    pub use utoipa;
    pub use uuid;
}
