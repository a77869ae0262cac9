//! MFA: enrolment, confirmation, the login challenge, each code once, recovery codes once,
//! and the reset by an administrator.

mod common;

use std::sync::Arc;

use saas_auth::{
    mfa::{STEP_SECS, totp},
    service::{Auth, LoginOutcome},
};
use saas_core::{
    cache::MemoryCache,
    db::{Db, migrate},
    id::TenantId,
    tenant::TenantContext,
};
use secrecy::SecretString;

fn decode_base32(text: &str) -> Vec<u8> {
    let (mut buffer, mut bits, mut out) = (0u32, 0, Vec::new());
    for c in text.bytes() {
        let value = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".iter().position(|&a| a == c).unwrap() as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    out
}

fn code_now(secret: &[u8], offset: i64) -> String {
    let step = (time::OffsetDateTime::now_utc().unix_timestamp() as u64 / STEP_SECS) as i64 + offset;
    format!("{:06}", totp(secret, step as u64))
}

#[tokio::test]
async fn mfa_guards_the_login_and_each_code_works_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/m.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    mfa_suite(db, &dir).await;
}

/// The same on PostgreSQL, as the application's role under row-level security: the login
/// reads the user and the MFA row in one join.
#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn mfa_guards_the_login_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let database = saas_core::testing::TestDatabase::postgres().await;
    let owner = database.connect().await;
    migrate::run(&owner, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    mfa_suite(database.connect_as_app_role().await, &dir).await;
}

async fn mfa_suite(db: Db, dir: &tempfile::TempDir) {
    let config = common::quick_config(dir.path());
    let auth = Auth::from_config(db, Arc::new(MemoryCache::new(100)), &config).await.unwrap();
    let tenant = TenantContext { id: TenantId::new(), slug: "acme".into(), plan: "free".into() };
    let password = SecretString::from("correct horse battery");
    let user = auth.create_user(tenant.id, "ada@acme.test", None, &password, &["owner"]).await.unwrap();
    let ada = common::principal_of(&user);

    let enrolment = auth.enroll_mfa(&ada).await.unwrap();
    assert!(
        enrolment.otpauth_uri.starts_with("otpauth://totp/saas-rs:ada@acme.test?secret="),
        "{}",
        enrolment.otpauth_uri
    );
    assert!(enrolment.qr_svg.contains("<svg"));
    let secret = decode_base32(&enrolment.secret);
    assert_eq!(secret.len(), 20);
    // Not in force until confirmed: the login still answers tokens.
    assert!(matches!(
        auth.begin_login(&tenant, "ada@acme.test", &password, None).await.unwrap(),
        LoginOutcome::Tokens(_)
    ));
    assert_eq!(auth.confirm_mfa(&ada, "000000").await.unwrap_err().code(), "invalid_mfa_code");
    let recovery = auth.confirm_mfa(&ada, &code_now(&secret, 0)).await.unwrap();
    assert_eq!(recovery.len(), 10);
    assert_eq!(auth.enroll_mfa(&ada).await.unwrap_err().code(), "mfa_already_enabled");

    // Now the password alone yields a challenge; a code turns it into tokens.
    let challenge = |outcome| match outcome {
        LoginOutcome::MfaRequired { mfa_token, .. } => mfa_token,
        LoginOutcome::Tokens(_) => panic!("expected a challenge"),
    };
    assert_eq!(auth.login(&tenant, "ada@acme.test", &password, None).await.unwrap_err().code(), "mfa_required");
    let token = challenge(auth.begin_login(&tenant, "ada@acme.test", &password, None).await.unwrap());
    let next = code_now(&secret, 1);
    let tokens = auth.verify_mfa(&tenant, &token, &next, None).await.unwrap();
    assert!(auth.tokens().verify(&tokens.access_token).await.is_ok());
    assert_eq!(
        auth.verify_mfa(&tenant, &token, &next, None).await.unwrap_err().code(),
        "invalid_mfa_token",
        "challenges are single-use"
    );

    // The same code (or an older one) is refused on the next challenge: each step once.
    for used in [next.clone(), code_now(&secret, 0)] {
        let token = challenge(auth.begin_login(&tenant, "ada@acme.test", &password, None).await.unwrap());
        assert_eq!(auth.verify_mfa(&tenant, &token, &used, None).await.unwrap_err().code(), "invalid_mfa_code");
    }

    // A recovery code works once.
    let token = challenge(auth.begin_login(&tenant, "ada@acme.test", &password, None).await.unwrap());
    assert!(auth.verify_mfa(&tenant, &token, &recovery[0], None).await.is_ok());
    let token = challenge(auth.begin_login(&tenant, "ada@acme.test", &password, None).await.unwrap());
    assert_eq!(auth.verify_mfa(&tenant, &token, &recovery[0], None).await.unwrap_err().code(), "invalid_mfa_code");
    // A challenge of one tenant means nothing in another.
    let token = challenge(auth.begin_login(&tenant, "ada@acme.test", &password, None).await.unwrap());
    let other = TenantContext { id: TenantId::new(), slug: "globex".into(), plan: "free".into() };
    assert_eq!(auth.verify_mfa(&other, &token, &recovery[1], None).await.unwrap_err().code(), "invalid_mfa_token");

    // Turning it off takes a valid code; then the password alone signs in again.
    assert_eq!(auth.disable_mfa(&ada, "000000").await.unwrap_err().code(), "invalid_mfa_code");
    auth.disable_mfa(&ada, &recovery[1]).await.unwrap();
    assert!(matches!(
        auth.begin_login(&tenant, "ada@acme.test", &password, None).await.unwrap(),
        LoginOutcome::Tokens(_)
    ));
    assert_eq!(auth.disable_mfa(&ada, &recovery[2]).await.unwrap_err().code(), "mfa_not_enrolled");
}

/// Enrols `user` in MFA and returns its secret.
async fn enrol(auth: &Auth, user: &saas_auth::users::User) -> Vec<u8> {
    let principal = common::principal_of(user);
    let secret = decode_base32(&auth.enroll_mfa(&principal).await.unwrap().secret);
    auth.confirm_mfa(&principal, &code_now(&secret, 0)).await.unwrap();
    secret
}

#[tokio::test]
async fn an_admin_resets_the_mfa_of_a_member_but_not_of_an_owner() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/m.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    let config = common::quick_config(dir.path());
    let auth = Auth::from_config(db.clone(), Arc::new(MemoryCache::new(100)), &config).await.unwrap();
    let app =
        axum::Router::from(saas_auth::api::router(auth.clone(), saas_tenancy::admin::PlatformAdmins::new(db, None)))
            .layer(auth.layer());
    let tenant = TenantContext { id: TenantId::new(), slug: "acme".into(), plan: "free".into() };
    let password = SecretString::from("correct horse battery");
    let ada = auth.create_user(tenant.id, "ada@acme.test", None, &password, &["owner"]).await.unwrap();
    auth.create_user(tenant.id, "bob@acme.test", None, &password, &["admin"]).await.unwrap();
    let carol = auth.create_user(tenant.id, "carol@acme.test", None, &password, &["member"]).await.unwrap();
    enrol(&auth, &ada).await;
    let carol_secret = enrol(&auth, &carol).await;
    let bob = auth.login(&tenant, "bob@acme.test", &password, None).await.unwrap().access_token;
    let carol_token = match auth.begin_login(&tenant, "carol@acme.test", &password, None).await.unwrap() {
        LoginOutcome::MfaRequired { mfa_token, .. } => {
            auth.verify_mfa(&tenant, &mfa_token, &code_now(&carol_secret, 1), None).await.unwrap().access_token
        }
        LoginOutcome::Tokens(_) => panic!("carol has MFA on"),
    };
    assert_eq!(common::status(&app, "GET", "/v1/auth/me", &carol_token, None).await, 200);

    // A member cannot reset anyone's MFA, not even their own: that takes a code.
    let reset = |user: &saas_auth::users::User| format!("/v1/auth/users/{}/mfa", user.id);
    assert_eq!(common::status(&app, "DELETE", &reset(&carol), &carol_token, None).await, 403);
    // An admin resets a member's: the password alone signs in, every session is signed out.
    assert_eq!(common::status(&app, "DELETE", &reset(&carol), &bob, None).await, 204);
    assert!(matches!(
        auth.begin_login(&tenant, "carol@acme.test", &password, None).await.unwrap(),
        LoginOutcome::Tokens(_)
    ));
    assert_eq!(common::status(&app, "GET", "/v1/auth/me", &carol_token, None).await, 401);
    assert_eq!(common::status(&app, "DELETE", &reset(&carol), &bob, None).await, 204, "again: nothing to do");
    // Not one's own (that takes a code), not an owner's, and not a user that does not exist.
    let bob_id = auth.tokens().verify(&bob).await.unwrap().sub;
    assert_eq!(common::status(&app, "DELETE", &format!("/v1/auth/users/{bob_id}/mfa"), &bob, None).await, 403);
    assert_eq!(common::status(&app, "DELETE", &reset(&ada), &bob, None).await, 403);
    assert!(matches!(
        auth.begin_login(&tenant, "ada@acme.test", &password, None).await.unwrap(),
        LoginOutcome::MfaRequired { .. }
    ));
    let nobody = format!("/v1/auth/users/{}/mfa", saas_core::id::UserId::new());
    assert_eq!(common::status(&app, "DELETE", &nobody, &bob, None).await, 404);
}
