//! Embedded, per-crate migrations.
//!
//! Each crate declares its migrations as a [`Migrations`] set named after the crate, so two
//! crates' version numbers never collide. A migration has one SQL text for both engines, or
//! a PostgreSQL variant where the dialects differ. [`run`] applies what is missing, each in
//! its own transaction together with its bookkeeping row, and refuses to start when an
//! applied migration's text was edited afterwards (checksum mismatch).
//!
//! ```
//! use saas_core::db::migrate::{Migration, Migrations};
//!
//! pub static MIGRATIONS: Migrations = Migrations {
//!     component: "invoices",
//!     list: &[Migration::portable(1, "create invoices", "CREATE TABLE invoices (id TEXT PRIMARY KEY)")],
//! };
//! ```

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Backend, Db, now_millis};
use crate::error::{Error, Result};

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version within its component; applied in ascending order.
    pub version: i64,
    /// Short description, shown by `saas migrate`.
    pub name: &'static str,
    /// SQL for SQLite (and PostgreSQL when `postgres` is `None`). May hold several statements.
    pub sql: &'static str,
    /// PostgreSQL-specific SQL, when the dialects differ.
    pub postgres: Option<&'static str>,
}

impl Migration {
    /// A migration whose SQL runs on both engines.
    pub const fn portable(version: i64, name: &'static str, sql: &'static str) -> Self {
        Self { version, name, sql, postgres: None }
    }

    /// A migration with one text per engine.
    pub const fn per_engine(version: i64, name: &'static str, sqlite: &'static str, postgres: &'static str) -> Self {
        Self { version, name, sql: sqlite, postgres: Some(postgres) }
    }

    fn sql_for(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Postgres => self.postgres.unwrap_or(self.sql),
            Backend::Sqlite => self.sql,
        }
    }

    fn checksum(&self, backend: Backend) -> String {
        hex::encode(Sha256::digest(self.sql_for(backend).as_bytes()))
    }
}

/// The migrations of one component (usually one crate).
#[derive(Debug)]
pub struct Migrations {
    /// Component name, unique in the database.
    pub component: &'static str,
    /// Migrations in ascending version order.
    pub list: &'static [Migration],
}

/// A migration that [`run`] applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Its component.
    pub component: &'static str,
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: &'static str,
}

const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS saas_migrations (
    component TEXT NOT NULL,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (component, version)
)";

/// Applies every missing migration of `sets`, in order; returns what it applied.
pub async fn run(db: &Db, sets: &[&Migrations]) -> Result<Vec<Applied>> {
    let mut conn = db.pool().acquire().await?;
    if db.backend() == Backend::Postgres {
        // Serialises concurrent starts of several instances; released at the end.
        sqlx::query("SELECT pg_advisory_lock(7305111)").execute(&mut *conn).await?;
    }
    let result = apply_all(db.backend(), &mut conn, sets).await;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_unlock(7305111)").execute(&mut *conn).await?;
    }
    result
}

async fn apply_all(backend: Backend, conn: &mut sqlx::AnyConnection, sets: &[&Migrations]) -> Result<Vec<Applied>> {
    sqlx::raw_sql(BOOKKEEPING).execute(&mut *conn).await?;
    let mut applied = Vec::new();
    for set in sets {
        let rows = sqlx::query("SELECT version, checksum FROM saas_migrations WHERE component = $1")
            .bind(set.component)
            .fetch_all(&mut *conn)
            .await?;
        let done: Vec<(i64, String)> = rows.iter().map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1))).collect();
        for m in set.list {
            let checksum = m.checksum(backend);
            if let Some((_, recorded)) = done.iter().find(|(v, _)| *v == m.version) {
                if *recorded != checksum {
                    return Err(Error::internal(anyhow::anyhow!(
                        "migration {}/{} ({}) was changed after it was applied; restore its original SQL and add a new migration instead",
                        set.component,
                        m.version,
                        m.name
                    )));
                }
                continue;
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(m.sql_for(backend)).execute(&mut *tx).await.map_err(|e| {
                Error::internal(
                    anyhow::Error::new(e)
                        .context(format!("applying migration {}/{} ({})", set.component, m.version, m.name)),
                )
            })?;
            sqlx::query(
                "INSERT INTO saas_migrations (component, version, name, checksum, applied_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(set.component)
            .bind(m.version)
            .bind(m.name)
            .bind(checksum)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(component = set.component, version = m.version, name = m.name, "applied migration");
            applied.push(Applied { component: set.component, version: m.version, name: m.name });
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    static V1: Migrations = Migrations {
        component: "demo",
        list: &[Migration::portable(
            1,
            "items",
            "CREATE TABLE items (id TEXT PRIMARY KEY); CREATE INDEX items_id ON items (id)",
        )],
    };
    static V1_EDITED: Migrations = Migrations {
        component: "demo",
        list: &[Migration::portable(1, "items", "CREATE TABLE items (id TEXT PRIMARY KEY, x TEXT)")],
    };
    static BROKEN: Migrations = Migrations {
        component: "broken",
        list: &[Migration::portable(1, "bad", "CREATE TABLE ok_table (id TEXT); THIS IS NOT SQL")],
    };

    #[tokio::test]
    async fn applies_once_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/m.db", dir.path().display()), Default::default()).await.unwrap();
        assert_eq!(run(&db, &[&V1]).await.unwrap().len(), 1);
        assert!(run(&db, &[&V1]).await.unwrap().is_empty());
        let err = run(&db, &[&V1_EDITED]).await.unwrap_err();
        assert!(format!("{:?}", err).contains("was changed after it was applied"));
    }

    #[tokio::test]
    async fn a_failing_migration_leaves_nothing_half_applied() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/m.db", dir.path().display()), Default::default()).await.unwrap();
        assert!(run(&db, &[&BROKEN]).await.is_err());
        let tables: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'ok_table'")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(tables, 0);
    }
}
