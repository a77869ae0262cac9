//! The reference servers of saas-rs.
//!
//! The `saas` binary runs every domain in one process on embedded defaults (SQLite under the
//! data directory, the in-process event bus, the in-memory cache) and switches to
//! PostgreSQL and Redis by configuration alone:
//!
//! ```text
//! saas serve [--addr HOST:PORT] [--data-dir DIR] [--config FILE]   # the default command
//! saas migrate                                                      # apply migrations and exit
//! saas config check                                                 # print the effective config
//! ```
//!
//! As a library, [`App`] is the same server for tests and for embedding:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = saas_core::config::Config::load(None)?;
//! let app = saas_server::App::build(config).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! app.serve(listener, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

mod app;

pub use app::{App, MIGRATIONS, event_catalog, migrate_with_owner};
