//! Relational database access shared by every domain crate.
//!
//! One [`Db`] handle speaks to SQLite (the embedded default) or PostgreSQL/CockroachDB through
//! sqlx's `Any` driver, so each store is written once in portable SQL with `$1, $2, …`
//! placeholders. The few places where the dialects differ are named methods on [`Backend`].
//!
//! - [`migrate`]: each crate embeds its own migrations; [`migrate::run`] applies them.
//! - [`TenantTx`]: a transaction bound to one tenant. On PostgreSQL it sets `app.tenant_id`
//!   for row-level security policies; stores also bind the tenant in every query.
//! - [`TenantScoped`]: tenant-safe store methods for a type of tenant-owned rows, and
//!   [`rls_policy!`](crate::rls_policy) for its table's PostgreSQL policy.
//!
//! ```no_run
//! # async fn demo() -> saas_core::error::Result<()> {
//! use saas_core::{db::Db, id::TenantId};
//!
//! let db = Db::connect("sqlite://data/saas.db", Default::default()).await?;
//! let tenant = TenantId::new();
//! let mut tx = db.tenant_tx(tenant).await?;
//! sqlx::query("SELECT 1").execute(&mut *tx).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```

pub mod migrate;
pub mod scoped;
mod tenant_tx;

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    Any, AnyPool, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub use scoped::TenantScoped;
pub use tenant_tx::TenantTx;

use crate::{error::Result, id::TenantId};

/// Which SQL engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (embedded).
    Sqlite,
    /// PostgreSQL or CockroachDB.
    Postgres,
}

impl Backend {
    /// The backend a database URL names, if supported.
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// The clause that lets concurrent workers claim different rows
    /// (`FOR UPDATE SKIP LOCKED`); empty on SQLite, which has a single writer.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The clause that locks the rows a `SELECT` read until the transaction ends
    /// (`FOR UPDATE`); empty on SQLite, where the first write locks the whole database.
    pub fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }

    /// Name for logs and health reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Maximum open connections.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing with 503.
    pub acquire_timeout: Duration,
    /// A PostgreSQL connection idle at least this long is pinged before it is handed out
    /// (and replaced if the server hung up); one used more recently is handed out as it
    /// is, as HikariCP does. `Duration::ZERO` pings on every checkout (sqlx's default), a
    /// network round trip before each transaction. SQLite connections are never pinged:
    /// an embedded database cannot hang up.
    pub ping_after_idle: Duration,
}

/// The `[database]` section's defaults: 10 connections, 5 s, 1 s.
impl Default for PoolSettings {
    fn default() -> Self {
        Self::from(&crate::config::DatabaseConfig::default())
    }
}

impl From<&crate::config::DatabaseConfig> for PoolSettings {
    fn from(config: &crate::config::DatabaseConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            acquire_timeout: Duration::from_secs(config.acquire_timeout_secs),
            ping_after_idle: Duration::from_millis(config.ping_after_idle_ms),
        }
    }
}

/// A pooled database handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Connects to `sqlite://PATH` (creating the file and its directory) or `postgres://…`.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)
            .ok_or_else(|| crate::error::Error::internal(anyhow::anyhow!("unsupported database URL scheme")))?;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url).map_err(crate::error::Error::internal)?;
        // sqlx pings every connection it hands out: a round trip to SQLite's worker thread,
        // or over the network, before every transaction. It pings it again when it takes
        // it back, so only one idle for a while needs it; SQLite's never do.
        let mut pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .test_before_acquire(false);
        if backend == Backend::Postgres {
            let after = settings.ping_after_idle;
            pool = pool.before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= after {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            });
        }
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|e| crate::error::Error::internal(anyhow::Error::new(e).context("connecting to the database")))?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the single writer; it persists in the file.
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        }
        Ok(Self { pool, backend })
    }

    /// The engine behind this handle.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for queries that are not tenant data (outbox relay, migrations).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction not bound to a tenant, for platform-level tables.
    ///
    /// On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), waiting up to the busy
    /// timeout for it. A deferred transaction that reads and then writes fails at once with
    /// "database is locked" when another writer committed since its read; waiting first
    /// cannot fail that way. PostgreSQL starts an ordinary transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    /// A read-only transaction in which every statement sees the same snapshot of the
    /// database, bound to `tenant` for row-level security when given: for reads that must
    /// agree with each other while writers go on (verifying a chain against its head).
    /// PostgreSQL runs it at `REPEATABLE READ`; SQLite (WAL) keeps the snapshot of its first
    /// read until the transaction ends. Drop it when done; it wrote nothing.
    pub async fn snapshot(&self, tenant: Option<TenantId>) -> Result<Transaction<'static, Any>> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        }
        if let Some(tenant) = tenant {
            self.bind_tenant(&mut tx, tenant).await?;
        }
        Ok(tx)
    }

    /// A transaction bound to `tenant` (see [`TenantTx`]).
    pub async fn tenant_tx(&self, tenant: TenantId) -> Result<TenantTx> {
        TenantTx::begin(self, tenant).await
    }

    /// A transaction bound to `tenant` for reads only. On SQLite it does not take the write
    /// lock (a deferred `BEGIN`), so it runs beside a writer instead of waiting for it; a
    /// write in it could fail with "database is locked", so write in a
    /// [`tenant_tx`](Self::tenant_tx). On PostgreSQL it is the same as `tenant_tx`.
    pub async fn tenant_read(&self, tenant: TenantId) -> Result<TenantTx> {
        TenantTx::begin_read(self, tenant).await
    }

    /// Binds the transaction `conn` belongs to to `tenant` for row-level security
    /// (`app.tenant_id`, transaction-local); nothing to do on SQLite. [`TenantTx`] does this
    /// itself; call it for a transaction that starts tenant-less and then writes one
    /// tenant's rows (sign-up creating a tenant and its owner).
    pub async fn bind_tenant(&self, conn: &mut sqlx::AnyConnection, tenant: TenantId) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT set_config('app.tenant_id', $1, true)").bind(tenant.to_string()).execute(conn).await?;
        }
        Ok(())
    }

    /// On PostgreSQL, the name of the connected role when it bypasses row-level security
    /// (a superuser or `BYPASSRLS` role); `None` when policies apply to it, and on SQLite.
    pub async fn role_bypassing_rls(&self) -> Result<Option<String>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let bypass: Option<String> = sqlx::query_scalar(
            "SELECT rolname::text FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolbypassrls)",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(bypass)
    }

    /// Runs `SELECT 1`; used by `/health/ready`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Ensures the SQLite file's directory exists and the file is created on first use.
fn sqlite_url(url: &str) -> Result<String> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" {
        if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                crate::error::Error::internal(anyhow::Error::new(e).context(format!("creating {}", dir.display())))
            })?;
        }
    }
    let mode = if query.contains("mode=") { String::new() } else { "mode=rwc".into() };
    let sep = if query.is_empty() || mode.is_empty() { "" } else { "&" };
    Ok(format!("sqlite://{path}?{query}{sep}{mode}"))
}

/// Milliseconds since the Unix epoch: the portable timestamp of internal tables.
pub fn now_millis() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/x.db");
        let url = sqlite_url(&format!("sqlite://{}", path.display())).unwrap();
        assert_eq!(url, format!("sqlite://{}?mode=rwc", path.display()));
        assert!(path.parent().unwrap().is_dir());
        assert_eq!(sqlite_url("sqlite://x.db?mode=ro").unwrap(), "sqlite://x.db?mode=ro");
    }
}
