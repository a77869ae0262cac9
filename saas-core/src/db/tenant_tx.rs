use std::ops::{Deref, DerefMut};

use sqlx::{Any, AnyConnection, Transaction};

use super::Db;
use crate::{error::Result, id::TenantId};

/// A database transaction bound to one tenant.
///
/// Stores take a `TenantTx` (or a tenant id) first and bind [`TenantTx::tenant`] in every
/// query, which is what isolates tenants on SQLite. On PostgreSQL the transaction also runs
/// `set_config('app.tenant_id', <id>, true)`, so row-level security policies of the form
/// `USING (tenant_id = current_setting('app.tenant_id'))` hide every other tenant's rows even
/// from hand-written SQL. The setting is transaction-local: it cannot leak to the next user
/// of the pooled connection. On SQLite it holds the write lock from its start (see
/// [`Db::begin`]), so keep it short: no hashing or network calls inside.
///
/// Dereferences to the connection, so `query.execute(&mut *tx)` works. Dropped without
/// [`commit`](Self::commit), it rolls back.
#[derive(Debug)]
pub struct TenantTx {
    tx: Transaction<'static, Any>,
    tenant: TenantId,
}

impl TenantTx {
    pub(super) async fn begin(db: &Db, tenant: TenantId) -> Result<Self> {
        Self::bind(db, db.begin().await?, tenant).await
    }

    /// A transaction for reads: on SQLite it does not take the write lock (see
    /// [`Db::tenant_read`]).
    pub(super) async fn begin_read(db: &Db, tenant: TenantId) -> Result<Self> {
        Self::bind(db, db.pool.begin().await?, tenant).await
    }

    async fn bind(db: &Db, mut tx: Transaction<'static, Any>, tenant: TenantId) -> Result<Self> {
        db.bind_tenant(&mut tx, tenant).await?;
        Ok(Self { tx, tenant })
    }

    /// The tenant every statement in this transaction belongs to.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Rolls the transaction back.
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

impl Deref for TenantTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}
