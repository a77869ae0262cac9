//! The tenant-isolation conformance suite for a [`TenantScoped`] type.
//!
//! Run it in your own tests for each tenant-owned type, on SQLite and on PostgreSQL
//! connected as the application role ([`TestDatabase::connect_as_app_role`](super::TestDatabase::connect_as_app_role)):
//!
//! ```ignore
//! saas_core::testing::isolation::run(&db, |tenant| Note::new(tenant, "hello"), |n| Note { body: "changed".into(), ..n.clone() }).await;
//! ```
//!
//! It panics, naming the broken guarantee, when tenant A can list, read, update or delete
//! tenant B's rows through any store method, and on PostgreSQL when raw SQL inside A's
//! [`TenantTx`](crate::db::TenantTx), or outside any tenant transaction, sees or changes B's rows.

use std::fmt::Debug;

use crate::{
    db::{Backend, Db, TenantScoped},
    id::TenantId,
    page::PageQuery,
};

/// Runs the suite. `new_row(tenant)` makes a fresh row of `tenant` (a new key each call);
/// `changed(row)` returns it with some column changed. The table must exist and be empty.
pub async fn run<T, N, C>(db: &Db, new_row: N, changed: C)
where
    T: TenantScoped + Debug + PartialEq + Clone,
    N: Fn(TenantId) -> T,
    C: Fn(&T) -> T,
{
    let (a, b) = (TenantId::new(), TenantId::new());
    let a_rows = [new_row(a), new_row(a)];
    let b_row = new_row(b);
    for row in a_rows.iter().chain([&b_row]) {
        let mut tx = db.tenant_tx(row.tenant_id()).await.unwrap();
        T::insert(&mut tx, row).await.expect("insert into the row's own tenant");
        tx.commit().await.unwrap();
    }

    let mut tx = db.tenant_tx(a).await.unwrap();
    let listed = T::list(&mut tx, &PageQuery { limit: Some(100), cursor: None }).await.unwrap().data;
    assert_eq!(listed.len(), 2, "list shows exactly A's rows: {listed:?}");
    assert!(listed.iter().all(|r| r.tenant_id() == a), "list shows only A's rows");
    assert_eq!(T::get(&mut tx, &a_rows[0].key()).await.unwrap().as_ref(), Some(&a_rows[0]), "A reads its row");
    assert_eq!(T::get(&mut tx, &b_row.key()).await.unwrap(), None, "get of B's key in A's transaction");
    assert!(T::update(&mut tx, &changed(&b_row)).await.is_err(), "update of B's row in A's transaction is refused");
    assert!(!T::delete(&mut tx, &b_row.key()).await.unwrap(), "delete of B's key in A's transaction");
    assert!(T::insert(&mut tx, &new_row(b)).await.is_err(), "insert of a B row in A's transaction is refused");
    assert!(T::update(&mut tx, &changed(&a_rows[0])).await.unwrap(), "A updates its own row");
    tx.commit().await.unwrap();

    let mut tx = db.tenant_tx(b).await.unwrap();
    assert_eq!(T::get(&mut tx, &b_row.key()).await.unwrap().as_ref(), Some(&b_row), "B's row is unchanged");
    assert_eq!(T::list(&mut tx, &PageQuery::default()).await.unwrap().data, std::slice::from_ref(&b_row));
    tx.rollback().await.unwrap();

    if db.backend() == Backend::Postgres {
        raw_sql_is_isolated::<T>(db, a, b).await;
    }

    let mut tx = db.tenant_tx(a).await.unwrap();
    assert_eq!(T::erase_tenant(&mut tx, a).await.unwrap(), 2, "erasing A removes A's two rows");
    tx.commit().await.unwrap();
    let mut tx = db.tenant_tx(b).await.unwrap();
    assert_eq!(T::get(&mut tx, &b_row.key()).await.unwrap().as_ref(), Some(&b_row), "and leaves B's");
}

/// Row-level security: hand-written SQL sees and changes only the bound tenant's rows.
async fn raw_sql_is_isolated<T: TenantScoped>(db: &Db, a: TenantId, b: TenantId) {
    let table = T::TABLE;
    let mut tx = db.tenant_tx(a).await.unwrap();
    let visible: Vec<String> =
        sqlx::query_scalar(&format!("SELECT DISTINCT tenant_id FROM {table}")).fetch_all(&mut *tx).await.unwrap();
    assert_eq!(
        visible,
        [a.to_string()],
        "raw SELECT in A's transaction sees only A (is RLS on, and is the role NOSUPERUSER NOBYPASSRLS?)"
    );
    let touched = sqlx::query(&format!("UPDATE {table} SET tenant_id = tenant_id")).execute(&mut *tx).await.unwrap();
    assert_eq!(touched.rows_affected(), 2, "raw UPDATE in A's transaction touches only A's rows");
    let moved = sqlx::query(&format!("UPDATE {table} SET tenant_id = $1")).bind(b.to_string()).execute(&mut *tx).await;
    assert!(moved.is_err(), "moving A's rows to B is refused (WITH CHECK)");
    tx.rollback().await.unwrap();

    let mut tx = db.tenant_tx(a).await.unwrap();
    let deleted = sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
        .bind(b.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0, "raw DELETE of B's rows in A's transaction");
    tx.rollback().await.unwrap();

    let outside: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(db.pool()).await.unwrap();
    assert_eq!(outside, 0, "outside a tenant transaction no row is visible");
}
