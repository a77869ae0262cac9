//! SQL of the `tenants` table. One text for SQLite and PostgreSQL.
//!
//! `tenants` is a platform table, not a tenant-owned one: it is the registry the resolution
//! layer reads before any tenant is known, so it has no row-level security.

use saas_core::{
    db::now_millis,
    error::{Error, Result},
    id::TenantId,
};
use sqlx::{AnyConnection, Row, any::AnyRow};
use time::OffsetDateTime;

use crate::tenant::{Tenant, TenantRef, TenantStatus};

const COLUMNS: &str = "id, slug, name, plan, status, suspended_reason, created_at, updated_at";

pub(crate) async fn insert(conn: &mut AnyConnection, tenant: &Tenant) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO tenants (id, slug, name, plan, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(tenant.id.to_string())
    .bind(&tenant.slug)
    .bind(&tenant.name)
    .bind(&tenant.plan)
    .bind(tenant.status.as_str())
    .bind(millis(tenant.created_at))
    .execute(conn)
    .await;
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(Error::conflict("slug_taken", format!("the slug `{}` is already taken", tenant.slug)))
        }
        other => Ok(other.map(drop)?),
    }
}

pub(crate) async fn find(conn: &mut AnyConnection, by: &TenantRef) -> Result<Option<Tenant>> {
    let row = match by {
        TenantRef::Id(id) => {
            sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
                .bind(id.to_string())
                .fetch_optional(conn)
                .await?
        }
        TenantRef::Slug(slug) => {
            sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE slug = $1"))
                .bind(slug)
                .fetch_optional(conn)
                .await?
        }
    };
    row.map(|r| from_row(&r)).transpose()
}

/// Tenants with ids after `after`, in id (creation) order, at most `limit`, optionally of
/// one status; deleted tenants only when asked for.
pub(crate) async fn list(
    conn: &mut AnyConnection,
    after: Option<&str>,
    status: Option<TenantStatus>,
    limit: u32,
) -> Result<Vec<Tenant>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tenants WHERE id > $1 AND (status = $2 OR ($2 = '' AND status <> 'deleted')) \
         ORDER BY id LIMIT $3"
    ))
    .bind(after.unwrap_or(""))
    .bind(status.map_or("", TenantStatus::as_str))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Sets the name and plan that are `Some`; false when there is no such (undeleted) tenant.
pub(crate) async fn update_details(
    conn: &mut AnyConnection,
    id: TenantId,
    name: Option<&str>,
    plan: Option<&str>,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE tenants SET name = COALESCE($2, name), plan = COALESCE($3, plan), updated_at = $4 \
         WHERE id = $1 AND status <> 'deleted'",
    )
    .bind(id.to_string())
    .bind(name)
    .bind(plan)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves `id` from status `from` to `to`; false when it was not in `from` (a concurrent
/// change, or a transition that does not apply).
pub(crate) async fn transition(
    conn: &mut AnyConnection,
    id: TenantId,
    from: TenantStatus,
    to: TenantStatus,
    reason: Option<&str>,
) -> Result<bool> {
    let now = now_millis();
    let done = sqlx::query(
        "UPDATE tenants SET status = $3, suspended_reason = $4, updated_at = $5, \
         deleted_at = CASE WHEN $3 = 'deleted' THEN $5 ELSE deleted_at END \
         WHERE id = $1 AND status = $2",
    )
    .bind(id.to_string())
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(reason)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn mark_purged(conn: &mut AnyConnection, id: TenantId) -> Result<()> {
    sqlx::query("UPDATE tenants SET purged_at = $2 WHERE id = $1 AND purged_at IS NULL")
        .bind(id.to_string())
        .bind(now_millis())
        .execute(conn)
        .await?;
    Ok(())
}

fn from_row(row: &AnyRow) -> Result<Tenant> {
    let id: String = row.try_get("id")?;
    Ok(Tenant {
        id: id.parse().map_err(|e| Error::internal(anyhow::anyhow!("bad tenant id `{id}` in the database: {e}")))?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        plan: row.try_get("plan")?,
        status: TenantStatus::parse(&row.try_get::<String, _>("status")?)?,
        suspended_reason: row.try_get("suspended_reason")?,
        created_at: time_of(row.try_get("created_at")?),
        updated_at: time_of(row.try_get("updated_at")?),
    })
}

pub(crate) fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Now, at the millisecond precision the tables keep, so a returned tenant equals a re-read one.
pub(crate) fn now() -> OffsetDateTime {
    time_of(now_millis())
}

fn time_of(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
