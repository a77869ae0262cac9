//! Tenant-owned rows: [`TenantScoped`] gives a type tenant-safe store methods.
//!
//! Every method takes a [`TenantTx`] and binds its tenant in the statement, so on SQLite a
//! store cannot read, change or delete another tenant's rows; on PostgreSQL row-level
//! security (see [`rls_policy!`](crate::rls_policy)) enforces the same for hand-written SQL.
//!
//! Implement it with one line, `#[derive(TenantScoped)]` from `saas-macros`:
//!
//! ```ignore
//! use saas_core::{db::TenantScoped, id::TenantId};
//!
//! saas_core::define_id!(NoteId, "note", "A note.");
//!
//! #[derive(saas_macros::TenantScoped)]
//! #[tenant_scoped(table = "notes")]          // the key column is `id` unless marked `#[tenant_scoped(key)]`
//! struct Note {
//!     id: NoteId,
//!     tenant_id: TenantId,                   // required
//!     body: String,
//! }
//!
//! let mut tx = db.tenant_tx(tenant).await?;
//! Note::insert(&mut tx, &note).await?;
//! let found = Note::get(&mut tx, &note.id).await?;    // None for another tenant's id
//! let page = Note::list(&mut tx, &PageQuery::default()).await?;
//! ```
//!
//! The table needs `tenant_id TEXT NOT NULL` and a text key column, with the tenant first in
//! its primary key and every index: `PRIMARY KEY (tenant_id, id)`.

use std::{fmt::Display, future::Future};

use sqlx::{
    Any, AnyConnection, Row,
    any::{AnyArguments, AnyRow},
    query::Query,
};

use super::TenantTx;
use crate::{
    error::{Error, Result},
    id::TenantId,
    page::{Page, PageQuery},
};

/// A query with its arguments, as [`TenantScoped::bind_columns`] extends it.
pub type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// A type stored as tenant-owned rows; see the [module docs](self).
///
/// The first five items describe the table (the derive writes them); the store methods are
/// provided.
pub trait TenantScoped: Sized + Send + Sync + Unpin + 'static {
    /// Table name.
    const TABLE: &'static str;
    /// Key column, unique within a tenant, stored as text.
    const KEY: &'static str;
    /// The other columns (neither `tenant_id` nor the key), in [`bind_columns`](Self::bind_columns) order.
    const COLUMNS: &'static [&'static str];

    /// The tenant the row belongs to (its `tenant_id` field).
    fn tenant_id(&self) -> TenantId;

    /// The row's key, as stored.
    fn key(&self) -> String;

    /// Binds the values of [`COLUMNS`](Self::COLUMNS), in order.
    fn bind_columns<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q>;

    /// Reads a row (every column, `tenant_id` included).
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error>;

    /// Inserts `row`, which must belong to the transaction's tenant.
    fn insert(tx: &mut TenantTx, row: &Self) -> impl Future<Output = Result<()>> + Send {
        async move {
            same_tenant(tx, row)?;
            let tenant = tx.tenant();
            Self::insert_on(tx, tenant, row).await
        }
    }

    /// Inserts `row` of `tenant` on `conn`: for a transaction that is not a [`TenantTx`]
    /// but is bound to the tenant (see [`Db::bind_tenant`](super::Db::bind_tenant)).
    fn insert_on(conn: &mut AnyConnection, tenant: TenantId, row: &Self) -> impl Future<Output = Result<()>> + Send {
        async move {
            if row.tenant_id() != tenant {
                return Err(Error::internal(anyhow::anyhow!("a `{}` row of another tenant", Self::TABLE)));
            }
            let columns = Self::COLUMNS.join(", ");
            let params: Vec<String> = (3..3 + Self::COLUMNS.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "INSERT INTO {} (tenant_id, {}{}{columns}) VALUES ($1, $2{}{})",
                Self::TABLE,
                Self::KEY,
                if columns.is_empty() { "" } else { ", " },
                if params.is_empty() { "" } else { ", " },
                params.join(", "),
            );
            let query = sqlx::query(&sql).bind(tenant.to_string()).bind(row.key());
            match row.bind_columns(query).execute(conn).await {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    Err(Error::conflict("already_exists", format!("`{}` exists already", row.key())))
                }
                other => Ok(other.map(drop)?),
            }
        }
    }

    /// The row with `key` of the transaction's tenant; `None` for another tenant's key.
    fn get(tx: &mut TenantTx, key: &(impl Display + Sync)) -> impl Future<Output = Result<Option<Self>>> + Send {
        let key = key.to_string();
        async move {
            let sql = format!("SELECT * FROM {} WHERE tenant_id = $1 AND {} = $2", Self::TABLE, Self::KEY);
            let row = sqlx::query(&sql).bind(tx.tenant().to_string()).bind(key).fetch_optional(&mut **tx).await?;
            Ok(row.map(|r| Self::from_row(&r)).transpose()?)
        }
    }

    /// A page of the transaction's tenant's rows, in key order.
    fn list(tx: &mut TenantTx, page: &PageQuery) -> impl Future<Output = Result<Page<Self>>> + Send {
        let (limit, after) = (page.limit(), page.after());
        async move {
            let (limit, after) = (limit?, after?);
            let sql = format!(
                "SELECT * FROM {table} WHERE tenant_id = $1 AND {key} > $2 ORDER BY {key} LIMIT $3",
                table = Self::TABLE,
                key = Self::KEY
            );
            let rows = sqlx::query(&sql)
                .bind(tx.tenant().to_string())
                .bind(after.unwrap_or_default())
                .bind(i64::from(limit) + 1)
                .fetch_all(&mut **tx)
                .await?;
            let items = rows.iter().map(Self::from_row).collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(Page::from_overfetch(items, limit, Self::key))
        }
    }

    /// Writes `row`'s columns over the stored row with its key; false when the
    /// transaction's tenant has no such row.
    fn update(tx: &mut TenantTx, row: &Self) -> impl Future<Output = Result<bool>> + Send {
        async move {
            same_tenant(tx, row)?;
            if Self::COLUMNS.is_empty() {
                return Ok(Self::get(tx, &row.key()).await?.is_some());
            }
            let sets: Vec<String> =
                Self::COLUMNS.iter().enumerate().map(|(i, c)| format!("{c} = ${}", i + 3)).collect();
            let sql =
                format!("UPDATE {} SET {} WHERE tenant_id = $1 AND {} = $2", Self::TABLE, sets.join(", "), Self::KEY);
            let query = sqlx::query(&sql).bind(tx.tenant().to_string()).bind(row.key());
            Ok(row.bind_columns(query).execute(&mut **tx).await?.rows_affected() == 1)
        }
    }

    /// Deletes the row with `key`; false when the transaction's tenant has no such row.
    fn delete(tx: &mut TenantTx, key: &(impl Display + Sync)) -> impl Future<Output = Result<bool>> + Send {
        let key = key.to_string();
        async move {
            let sql = format!("DELETE FROM {} WHERE tenant_id = $1 AND {} = $2", Self::TABLE, Self::KEY);
            let done = sqlx::query(&sql).bind(tx.tenant().to_string()).bind(key).execute(&mut **tx).await?;
            Ok(done.rows_affected() == 1)
        }
    }

    /// Erases every row of `tenant` on `conn` (a transaction bound to that tenant); for
    /// the purge of a deleted tenant.
    fn erase_tenant(conn: &mut AnyConnection, tenant: TenantId) -> impl Future<Output = Result<u64>> + Send {
        async move {
            let sql = format!("DELETE FROM {} WHERE tenant_id = $1", Self::TABLE);
            Ok(sqlx::query(&sql).bind(tenant.to_string()).execute(conn).await?.rows_affected())
        }
    }
}

/// A row of another tenant handed to a store is a bug in the caller: refuse it loudly.
fn same_tenant<T: TenantScoped>(tx: &TenantTx, row: &T) -> Result<()> {
    if row.tenant_id() == tx.tenant() {
        return Ok(());
    }
    Err(Error::internal(anyhow::anyhow!(
        "a `{}` row of tenant {} was written in a transaction of tenant {}",
        T::TABLE,
        row.tenant_id(),
        tx.tenant()
    )))
}

/// Reads column `name`; for derived [`TenantScoped::from_row`] implementations.
#[doc(hidden)]
pub fn column<'r, T>(row: &'r AnyRow, name: &str) -> std::result::Result<T, sqlx::Error>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(name)
}

/// Reads a `bool` column: a `BOOLEAN` on PostgreSQL, an `INTEGER` 0/1 on SQLite (sqlx's
/// `Any` driver cannot read SQLite's `BOOLEAN`, so declare it `INTEGER` there).
#[doc(hidden)]
pub fn bool_column(row: &AnyRow, name: &str) -> std::result::Result<bool, sqlx::Error> {
    row.try_get::<bool, _>(name).or_else(|_| row.try_get::<i64, _>(name).map(|n| n != 0))
}

/// [`bool_column`] for a nullable column.
#[doc(hidden)]
pub fn optional_bool_column(row: &AnyRow, name: &str) -> std::result::Result<Option<bool>, sqlx::Error> {
    row.try_get::<Option<bool>, _>(name).or_else(|_| row.try_get::<Option<i64>, _>(name).map(|n| n.map(|n| n != 0)))
}

/// PostgreSQL statements that put `table` under row-level security: enabled, forced (so
/// the owner is subject too), with a policy that shows and accepts only rows whose
/// `tenant_id` is the transaction's `app.tenant_id`. Outside a [`TenantTx`] no row is
/// visible. A string literal, for [`Migration`](super::migrate::Migration)s:
///
/// ```
/// use saas_core::db::migrate::Migration;
///
/// const NOTES: &str = "CREATE TABLE notes (tenant_id TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id));";
/// static M: Migration = Migration::per_engine(1, "notes", NOTES, concat!(
///     "CREATE TABLE notes (tenant_id TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id));",
///     saas_core::rls_policy!("notes"),
/// ));
/// ```
#[macro_export]
macro_rules! rls_policy {
    ($table:literal) => {
        concat!(
            "\nALTER TABLE ",
            $table,
            " ENABLE ROW LEVEL SECURITY;",
            "\nALTER TABLE ",
            $table,
            " FORCE ROW LEVEL SECURITY;",
            "\nCREATE POLICY tenant_isolation ON ",
            $table,
            " USING (tenant_id = current_setting('app.tenant_id', true))",
            " WITH CHECK (tenant_id = current_setting('app.tenant_id', true));\n"
        )
    };
}
