//! Login, refresh-token rotation with reuse detection and its grace window, logout, and
//! what a revoked session does to its access tokens: with sessions in SQLite, in PostgreSQL
//! and in Redis.

use axum::{Router, body::Body, routing::get};
use http::Request;
use saas_auth::{
    principal::{AuthLayer, Principal},
    service::Auth,
    session::Sessions,
};
use saas_core::{
    config::{AuthConfig, CacheConfig, Config, SessionStoreKind},
    db::{Db, migrate},
    id::TenantId,
    tenant::TenantContext,
    testing::TestDatabase,
};
use secrecy::SecretString;
use tower::ServiceExt;

/// Where the sessions live: the database, or the Redis at this URL.
#[derive(Clone)]
enum Store {
    Sql,
    Redis(String),
}

async fn auth(db: Db, dir: &tempfile::TempDir, store: &Store, grace_secs: u64) -> Auth {
    let (session_store, cache) = match store {
        Store::Sql => (SessionStoreKind::Sql, CacheConfig::default()),
        Store::Redis(url) => {
            (SessionStoreKind::Redis, CacheConfig { url: Some(url.clone().into()), ..Default::default() })
        }
    };
    let config = Config {
        data_dir: dir.path().to_owned(),
        cache,
        auth: AuthConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            refresh_reuse_grace_secs: grace_secs,
            session_store,
            ..Default::default()
        },
        ..Default::default()
    };
    Auth::from_config(db, std::sync::Arc::new(saas_core::cache::MemoryCache::new(1000)), &config).await.unwrap()
}

async fn status_with(auth: &Auth, access_token: &str) -> u16 {
    status_through(auth.layer(), access_token).await
}

async fn status_through(layer: AuthLayer, access_token: &str) -> u16 {
    let app = Router::new().route("/v1/me", get(|p: Principal| async move { p.session.to_string() })).layer(layer);
    let request =
        Request::get("/v1/me").header("authorization", format!("Bearer {access_token}")).body(Body::empty()).unwrap();
    app.oneshot(request).await.unwrap().status().as_u16()
}

async fn suite(db: Db, dir: &tempfile::TempDir, store: Store) {
    let password = SecretString::from("correct horse battery");
    let tenant = TenantContext { id: TenantId::new(), slug: "acme".into(), plan: "free".into() };

    // Reuse beyond the grace window (0 s here) revokes the whole session.
    let strict = auth(db.clone(), dir, &store, 0).await;
    assert_eq!(strict.sessions().store().name(), if matches!(store, Store::Sql) { "sql" } else { "redis" });
    strict.create_user(tenant.id, "ada@acme.test", None, &password, &["owner"]).await.unwrap();
    let again = strict.create_user(tenant.id, "ADA@acme.test", None, &password, &[]).await.unwrap_err();
    assert_eq!(again.code(), "email_taken");
    let login = strict.login(&tenant, "ada@acme.test", &password, None).await.unwrap();
    assert!(login.refresh_token.starts_with("srt_") && login.refresh_expires_in == 30 * 86400);
    let first = strict.refresh(&tenant, &login.refresh_token).await.unwrap();
    assert_ne!(first.refresh_token, login.refresh_token, "each refresh hands out a new refresh token");
    assert_eq!(status_with(&strict, &first.access_token).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let reused = strict.refresh(&tenant, &login.refresh_token).await.unwrap_err();
    assert_eq!((reused.status().as_u16(), reused.code()), (401, "refresh_token_reused"));
    let family = strict.refresh(&tenant, &first.refresh_token).await.unwrap_err();
    assert_eq!(family.code(), "invalid_refresh_token", "the whole family is revoked");
    assert_eq!(status_with(&strict, &first.access_token).await, 401, "and the session's access tokens");

    // Within the grace window, a second use (concurrent refreshes of one client) works.
    let lenient = auth(db.clone(), dir, &store, 60).await;
    let login = lenient.login(&tenant, "ada@acme.test", &password, None).await.unwrap();
    let (a, b) =
        tokio::join!(lenient.refresh(&tenant, &login.refresh_token), lenient.refresh(&tenant, &login.refresh_token));
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    assert!(lenient.refresh(&tenant, &a.unwrap().refresh_token).await.is_ok());

    // Tokens of one tenant mean nothing in another, and junk is refused.
    let other = TenantContext { id: TenantId::new(), slug: "globex".into(), plan: "free".into() };
    let login = lenient.login(&tenant, "ada@acme.test", &password, None).await.unwrap();
    assert_eq!(lenient.refresh(&other, &login.refresh_token).await.unwrap_err().code(), "invalid_refresh_token");
    for junk in ["", "srt_nope", "x".repeat(1000).as_str()] {
        assert_eq!(lenient.refresh(&tenant, junk).await.unwrap_err().code(), "invalid_refresh_token");
    }

    // A password change signs out the user's other sessions, not this one.
    let here = lenient.login(&tenant, "ada@acme.test", &password, None).await.unwrap();
    let elsewhere = lenient.login(&tenant, "ada@acme.test", &password, None).await.unwrap();
    for _ in 0..3 {
        assert_eq!(status_with(&lenient, &elsewhere.access_token).await, 200, "in use before the change");
    }
    let me = lenient.tokens().verify(&here.access_token).await.unwrap();
    let actor = saas_auth::principal::Principal::from(&*me);
    let new_password = SecretString::from("even better horse");
    let wrong = lenient.change_password(&actor, &SecretString::from("not it at all"), &new_password, None).await;
    assert_eq!(wrong.unwrap_err().code(), "invalid_credentials");
    let short = lenient.change_password(&actor, &password, &SecretString::from("short"), None).await;
    assert_eq!(short.unwrap_err().field_errors()[0].field, "new_password");
    let signed_out = lenient.change_password(&actor, &password, &new_password, None).await.unwrap();
    assert!(signed_out >= 2, "the other sessions: {signed_out}");
    assert_eq!(status_with(&lenient, &elsewhere.access_token).await, 401, "signed out elsewhere");
    assert_eq!(lenient.refresh(&tenant, &elsewhere.refresh_token).await.unwrap_err().code(), "invalid_refresh_token");
    assert_eq!(status_with(&lenient, &here.access_token).await, 200, "this session stays");
    assert_eq!(
        lenient.login(&tenant, "ada@acme.test", &password, None).await.unwrap_err().code(),
        "invalid_credentials"
    );
    let login = lenient.login(&tenant, "ada@acme.test", &new_password, None).await.unwrap();

    // Logout: the refresh token stops, and so do the access tokens, also one used just
    // before (whose session the token cache then remembers as live).
    for _ in 0..3 {
        assert_eq!(status_with(&lenient, &login.access_token).await, 200);
    }
    let principal = lenient.tokens().verify(&login.access_token).await.unwrap();
    lenient.logout(tenant.id, principal.sub, &principal.sid).await.unwrap();
    assert_eq!(lenient.refresh(&tenant, &login.refresh_token).await.unwrap_err().code(), "invalid_refresh_token");
    assert_eq!(status_with(&lenient, &login.access_token).await, 401);

    // A session nobody asked about is revoked, and a revocation reaches a second server
    // (its own cache of session states) once it looks the session up.
    assert!(lenient.sessions().is_revoked(tenant.id, "ses_unknown").await.unwrap());
    let login = lenient.login(&tenant, "ada@acme.test", &new_password, None).await.unwrap();
    let claims = lenient.tokens().verify(&login.access_token).await.unwrap();
    let second_server = auth(db.clone(), dir, &store, 60).await;
    assert!(!second_server.sessions().is_revoked(tenant.id, &claims.sid).await.unwrap());
    let third_server = auth(db.clone(), dir, &store, 60).await;
    lenient.logout(tenant.id, claims.sub, &claims.sid).await.unwrap();
    assert!(third_server.sessions().is_revoked(tenant.id, &claims.sid).await.unwrap(), "read from the store");
    assert!(!lenient.sessions().store().revoke(tenant.id, &claims.sid).await.unwrap(), "revoked once");

    // Two layers sharing one token cache but not one `Sessions` (an app may build them so):
    // what the token cache remembers for the first never stands in for the second's own
    // revocations, even when both have counted as many.
    let shared = auth(db.clone(), dir, &store, 60).await;
    let first = shared.layer();
    let second_sessions = Sessions::new(
        shared.sessions().store().clone(),
        db.clone(),
        std::time::Duration::from_secs(3600),
        std::time::Duration::ZERO,
        std::time::Duration::from_secs(60),
    );
    let second = AuthLayer::new(shared.tokens().clone(), second_sessions.clone(), shared.api_keys().clone());
    let (login, other) = (
        shared.login(&tenant, "ada@acme.test", &new_password, None).await.unwrap(),
        shared.login(&tenant, "ada@acme.test", &new_password, None).await.unwrap(),
    );
    let session = shared.tokens().verify(&login.access_token).await.unwrap().sid.clone();
    let other_session = shared.tokens().verify(&other.access_token).await.unwrap().sid.clone();
    assert_eq!(status_through(second.clone(), &login.access_token).await, 200);
    shared.sessions().revoke(tenant.id, &other_session).await.unwrap();
    for _ in 0..3 {
        assert_eq!(status_through(first.clone(), &login.access_token).await, 200);
    }
    second_sessions.revoke(tenant.id, &session).await.unwrap();
    assert_eq!(status_through(second, &login.access_token).await, 401, "revoked through the second layer's sessions");
}

#[tokio::test]
async fn sessions_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/s.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    suite(db, &dir, Store::Sql).await;
}

/// With the sessions in the database, a session commits with its caller's transaction or
/// not at all: a login's session and its `UserAuthenticated` event are one write.
#[tokio::test]
async fn a_session_in_the_database_commits_with_its_callers_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/s.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    let auth = auth(db.clone(), &dir, &Store::Sql, 0).await;
    let tenant = TenantContext { id: TenantId::new(), slug: "acme".into(), plan: "free".into() };
    let user = saas_core::id::UserId::new();
    let mut tx = db.tenant_tx(tenant.id).await.unwrap();
    let (dropped, token) = auth.sessions().open(&mut tx, tenant.id, user).await.unwrap();
    drop(tx);
    assert!(auth.sessions().store().is_revoked(tenant.id, &dropped).await.unwrap(), "gone with its transaction");
    assert_eq!(auth.refresh(&tenant, &token).await.unwrap_err().code(), "invalid_refresh_token");
    let mut tx = db.tenant_tx(tenant.id).await.unwrap();
    let (kept, _) = auth.sessions().open(&mut tx, tenant.id, user).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!auth.sessions().store().is_revoked(tenant.id, &kept).await.unwrap(), "committed with it");
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn sessions_on_postgres_under_row_level_security() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::postgres().await;
    let owner = database.connect().await;
    migrate::run(&owner, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    suite(database.connect_as_app_role().await, &dir, Store::Sql).await;
}

#[tokio::test]
#[ignore = "needs redis: set SAAS_TEST_REDIS_URL or run .ci/run"]
async fn sessions_in_redis() {
    let url = std::env::var("SAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/s.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    suite(db, &dir, Store::Redis(url)).await;
}

/// A deleted tenant's sessions are erased from Redis, and only that tenant's.
#[tokio::test]
#[ignore = "needs redis: set SAAS_TEST_REDIS_URL or run .ci/run"]
async fn erasing_a_tenant_in_redis_keeps_the_others() {
    use saas_auth::session::{RedisSessionStore, SessionStore, StoredRefresh};
    let url = std::env::var("SAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = RedisSessionStore::connect(&url).await.unwrap();
    let (gone, kept, user) = (TenantId::new(), TenantId::new(), saas_core::id::UserId::new());
    let later = saas_core::db::now_millis() + 60_000;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/s.db", dir.path().display()), Default::default()).await.unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    for tenant in [gone, kept] {
        let refresh = StoredRefresh { hash: format!("h{tenant}"), expires_at: later };
        store.open(&mut conn, tenant, "ses_a", user, &refresh).await.unwrap();
        assert!(!store.is_revoked(tenant, "ses_a").await.unwrap());
    }
    store.erase_tenant(&mut conn, gone).await.unwrap();
    assert!(store.is_revoked(gone, "ses_a").await.unwrap(), "erased");
    assert!(!store.is_revoked(kept, "ses_a").await.unwrap(), "another tenant's session stays");
    let next = StoredRefresh { hash: "next".into(), expires_at: later };
    let now = saas_core::db::now_millis();
    assert_eq!(
        store.rotate(gone, &format!("h{gone}"), &next, now, 0).await.unwrap(),
        saas_auth::session::Rotation::Invalid
    );
}
