//! Brute-force protection: back-off, lock-out, the per-address lock, the same behaviour
//! for unknown accounts, and unlocking.

use std::sync::Arc;

use saas_auth::service::Auth;
use saas_core::{
    cache::MemoryCache,
    config::{AuthConfig, Config},
    db::{Db, migrate},
    error::Error,
    id::TenantId,
    tenant::TenantContext,
};
use secrecy::SecretString;

async fn setup(limits: AuthConfig) -> (Auth, TenantContext, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/t.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig { argon2_memory_kib: 64, argon2_iterations: 1, ..limits },
        ..Default::default()
    };
    let auth = Auth::from_config(db, Arc::new(MemoryCache::new(1000)), &config).await.unwrap();
    let tenant = TenantContext { id: TenantId::new(), slug: "acme".into(), plan: "free".into() };
    auth.create_user(tenant.id, "ada@acme.test", None, &SecretString::from("correct horse battery"), &[])
        .await
        .unwrap();
    (auth, tenant, dir)
}

/// The error's code, and for a 429 the `Retry-After` seconds it sends.
fn code(result: Result<impl std::fmt::Debug, Error>) -> (String, Option<u64>) {
    let error = result.unwrap_err();
    let wait = error.retry_after().map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    (error.code().to_owned(), wait)
}

#[tokio::test]
async fn failures_back_off_for_known_and_unknown_accounts_alike() {
    let limits = AuthConfig { login_backoff_after: 1, login_lockout_after: 100, ..Default::default() };
    let (auth, tenant, _dir) = setup(limits).await;
    let (right, wrong) = (SecretString::from("correct horse battery"), SecretString::from("wrong password!"));
    for email in ["ada@acme.test", "nobody@acme.test"] {
        assert_eq!(code(auth.login(&tenant, email, &wrong, None).await).0, "invalid_credentials");
        let (code, wait) = code(auth.login(&tenant, email, &right, None).await);
        assert_eq!(
            (code.as_str(), wait),
            ("login_throttled", Some(1)),
            "{email}: the next attempt waits, even a right one"
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(auth.login(&tenant, "ada@acme.test", &right, None).await.is_ok(), "after the wait it works, and clears");
    assert_eq!(code(auth.login(&tenant, "ada@acme.test", &wrong, None).await).0, "invalid_credentials");
}

#[tokio::test]
async fn repeated_failures_lock_the_account_until_an_admin_unlocks_it() {
    let limits =
        AuthConfig { login_backoff_after: 50, login_lockout_after: 3, login_lockout_secs: 600, ..Default::default() };
    let (auth, tenant, _dir) = setup(limits).await;
    let (right, wrong) = (SecretString::from("correct horse battery"), SecretString::from("wrong password!"));
    for _ in 0..3 {
        assert_eq!(code(auth.login(&tenant, "ada@acme.test", &wrong, None).await).0, "invalid_credentials");
    }
    let (code_, wait) = code(auth.login(&tenant, "ADA@acme.test ", &right, None).await);
    assert_eq!(code_, "login_throttled");
    assert!(wait.unwrap() > 590, "locked for the lock-out time: {wait:?}");
    auth.unlock(tenant.id, "ada@acme.test").await.unwrap();
    assert!(auth.login(&tenant, "ada@acme.test", &right, None).await.is_ok());
}

#[tokio::test]
async fn an_address_failing_on_many_accounts_is_locked() {
    let limits = AuthConfig {
        login_backoff_after: 50,
        login_lockout_after: 50,
        login_ip_lockout_after: 3,
        ..Default::default()
    };
    let (auth, tenant, _dir) = setup(limits).await;
    let wrong = SecretString::from("wrong password!");
    for i in 0..3 {
        let email = format!("guess{i}@acme.test");
        assert_eq!(code(auth.login(&tenant, &email, &wrong, Some("203.0.113.9")).await).0, "invalid_credentials");
    }
    let right = SecretString::from("correct horse battery");
    assert_eq!(code(auth.login(&tenant, "ada@acme.test", &right, Some("203.0.113.9")).await).0, "login_throttled");
    assert!(
        auth.login(&tenant, "ada@acme.test", &right, Some("198.51.100.1")).await.is_ok(),
        "other addresses are not"
    );
}

#[tokio::test]
async fn failures_from_elsewhere_cannot_lock_the_owner_out() {
    let limits =
        AuthConfig { login_backoff_after: 2, login_lockout_after: 3, login_lockout_secs: 600, ..Default::default() };
    let (auth, tenant, _dir) = setup(limits).await;
    let (right, wrong) = (SecretString::from("correct horse battery"), SecretString::from("wrong password!"));
    let attacker = Some("203.0.113.9");
    for _ in 0..3 {
        let outcome = auth.login(&tenant, "ada@acme.test", &wrong, attacker).await;
        assert!(matches!(code(outcome).0.as_str(), "invalid_credentials" | "login_throttled"));
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let (locked, wait) = code(auth.login(&tenant, "ada@acme.test", &right, attacker).await);
    assert_eq!(locked, "login_throttled");
    assert!(wait.unwrap() > 30, "the attacker's address is locked out of the account: {wait:?}");
    // The owner, from her own address, waits at most the account-wide back-off.
    let owner = Some("2001:db8:1:2::10");
    match auth.login(&tenant, "ada@acme.test", &right, owner).await {
        Ok(_) => {}
        Err(e) => {
            assert_eq!(e.code(), "login_throttled");
            let wait = e.retry_after().unwrap();
            assert!(wait <= saas_auth::throttle::MAX_ACCOUNT_WAIT, "{wait:?}");
            tokio::time::sleep(wait).await;
            assert!(auth.login(&tenant, "ada@acme.test", &right, owner).await.is_ok());
        }
    }
}

/// A refusal for lack of hashing places comes before the throttle's lookups: with every
/// place taken, even a locked account is answered 503 `auth_busy` (nothing is checked, and
/// the flood's refusals cost no cache reads); once a place is free, the lock answers.
#[tokio::test]
async fn a_busy_hasher_refuses_before_the_throttle_is_read() {
    let limits = AuthConfig {
        login_backoff_after: 50,
        login_lockout_after: 1,
        login_lockout_secs: 600,
        max_concurrent_hashes: 1,
        queued_hashes: Some(0),
        ..Default::default()
    };
    let (auth, tenant, _dir) = setup(limits).await;
    let (right, wrong) = (SecretString::from("correct horse battery"), SecretString::from("wrong password!"));
    assert_eq!(code(auth.login(&tenant, "ada@acme.test", &wrong, None).await).0, "invalid_credentials");
    let held = auth.passwords().reserve().unwrap();
    assert_eq!(code(auth.login(&tenant, "ada@acme.test", &right, None).await), ("auth_busy".to_owned(), Some(1)));
    drop(held);
    assert_eq!(code(auth.login(&tenant, "ada@acme.test", &right, None).await).0, "login_throttled");
}
