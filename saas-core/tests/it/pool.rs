//! The pool hands out a PostgreSQL connection without a ping when it was used moments ago,
//! and pings (and replaces) one that sat idle longer than `ping_after_idle`.

use std::time::Duration;

use saas_core::db::{Db, PoolSettings};

/// One connection, pinged after `ping_after_idle` of idleness, and an admin connection.
async fn one_connection(ping_after_idle: Duration) -> (saas_core::testing::TestDatabase, Db, Db) {
    let test_db = saas_core::testing::TestDatabase::postgres().await;
    let settings = PoolSettings { max_connections: 1, ping_after_idle, ..Default::default() };
    let db = Db::connect(&test_db.url, settings).await.unwrap();
    let admin = test_db.connect().await;
    (test_db, db, admin)
}

async fn backend_pid(db: &Db) -> saas_core::error::Result<i32> {
    Ok(sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(db.pool()).await?)
}

/// Ends the server side of connection `pid` of `db`, as a server restart or an idle
/// timeout would, once the pool has it back (sqlx pings a returned connection in a task of
/// its own).
async fn terminate(db: &Db, admin: &Db, pid: i32) {
    for _ in 0..100 {
        if db.pool().num_idle() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(db.pool().num_idle(), 1, "the connection is back in the pool");
    let ended: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(admin.pool()).await.unwrap();
    assert!(ended, "backend {pid} terminated");
    // pg_terminate_backend only signals; wait until the backend is gone.
    for _ in 0..100 {
        let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(admin.pool())
            .await
            .unwrap();
        if alive == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("backend {pid} still alive");
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run or set SAAS_TEST_DATABASE_URL"]
async fn an_idle_connection_the_server_dropped_is_replaced_before_use() {
    let (_test_db, db, admin) = one_connection(Duration::from_millis(50)).await;
    let first = backend_pid(&db).await.unwrap();
    terminate(&db, &admin, first).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let second = backend_pid(&db).await.expect("the dead connection was pinged and replaced, not handed out");
    assert_ne!(second, first);
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run or set SAAS_TEST_DATABASE_URL"]
async fn a_connection_used_moments_ago_is_handed_out_without_a_ping() {
    let (_test_db, db, admin) = one_connection(Duration::from_secs(3600)).await;
    let first = backend_pid(&db).await.unwrap();
    terminate(&db, &admin, first).await;

    // Not pinged, so the query meets the dead connection: the round trip it saves on every
    // checkout is what a server restart costs once a connection.
    let error = backend_pid(&db).await.expect_err("the connection was handed out without a ping");
    assert_eq!(error.status(), http::StatusCode::SERVICE_UNAVAILABLE, "{error:?}");
    // Returning it to the pool found it broken (sqlx pings on release): the next query
    // gets a new connection.
    let second = backend_pid(&db).await.unwrap();
    assert_ne!(second, first);
}
