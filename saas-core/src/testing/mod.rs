//! Helpers for tests against real servers (feature `testing`).
//!
//! Tests that need PostgreSQL or Redis are `#[ignore = "needs …"]` and read the server from
//! `SAAS_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! `SAAS_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). `.ci/run` starts both and runs
//! them with `--include-ignored`.

use crate::db::{Db, PoolSettings};

/// The PostgreSQL server tests use (an admin connection to it).
pub fn postgres_admin_url() -> String {
    std::env::var("SAAS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis server tests use.
pub fn redis_url() -> String {
    std::env::var("SAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub mod isolation;
#[cfg(feature = "kafka")]
pub mod schema_registry;

/// A database of its own for one test, dropped when this value is dropped (with the
/// roles [`connect_as_app_role`](Self::connect_as_app_role) created).
pub struct TestDatabase {
    /// URL of the new database.
    pub url: String,
    name: String,
    admin: String,
    roles: std::sync::Mutex<Vec<String>>,
}

impl TestDatabase {
    /// Creates `saas_test_<random>` on the test server.
    pub async fn postgres() -> Self {
        let admin = postgres_admin_url();
        let name = format!("saas_test_{}", uuid::Uuid::new_v4().simple());
        let db = Db::connect(&admin, PoolSettings { max_connections: 1, ..Default::default() })
            .await
            .expect("PostgreSQL reachable at SAAS_TEST_DATABASE_URL");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(db.pool()).await.expect("CREATE DATABASE");
        db.close().await;
        let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
        Self { url: format!("{base}/{name}"), name, admin, roles: Default::default() }
    }

    /// Connects to it as the admin (a superuser, which bypasses row-level security: use it
    /// to migrate, never to prove isolation).
    pub async fn connect(&self) -> Db {
        Db::connect(&self.url, PoolSettings::default()).await.expect("connect to the test database")
    }

    /// Creates a login role as the application should run, `NOSUPERUSER NOBYPASSRLS` and
    /// owner of no table, allowed to read and write the tables that exist now and those the
    /// admin creates later (the setup the operations chapter describes); returns its URL.
    pub async fn app_role_url(&self) -> String {
        let role = format!("saas_app_{}", uuid::Uuid::new_v4().simple());
        let owner = self.connect().await;
        for statement in [
            format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"),
            format!("GRANT USAGE ON SCHEMA public TO {role}"),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"),
            format!(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
            ),
            format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}"),
        ] {
            sqlx::query(&statement).execute(owner.pool()).await.expect("create the application role");
        }
        owner.close().await;
        self.roles.lock().expect("roles").push(role.clone());
        let (scheme, rest) = self.url.split_once("://").expect("URL has a scheme");
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{role}@{host}")
    }

    /// A pool connected as a new [application role](Self::app_role_url).
    pub async fn connect_as_app_role(&self) -> Db {
        Db::connect(&self.app_role_url().await, PoolSettings::default())
            .await
            .expect("connect as the application role (trust authentication)")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let roles = std::mem::take(&mut *self.roles.lock().unwrap_or_else(|e| e.into_inner()));
        // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let db = Db::connect(&admin, PoolSettings { max_connections: 1, ..Default::default() }).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(db.pool()).await.ok()?;
                // The role's privileges were in the dropped database; nothing else refers to it.
                for role in roles {
                    sqlx::query(&format!("DROP ROLE IF EXISTS {role}")).execute(db.pool()).await.ok()?;
                }
                db.close().await;
                Some(())
            })
        })
        .join();
    }
}
