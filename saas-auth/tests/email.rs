//! E-mail verification and password reset: codes by e-mail, single use, no enumeration,
//! and a reset signs out every session.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use saas_auth::{
    mail::{Email, Mailer},
    service::Auth,
};
use saas_core::{
    cache::MemoryCache,
    db::{Db, migrate},
    id::TenantId,
    tenant::TenantContext,
};
use secrecy::SecretString;

#[derive(Default)]
struct Outbox(Mutex<Vec<Email>>);

#[async_trait]
impl Mailer for Outbox {
    async fn send(&self, email: &Email) -> saas_core::Result<()> {
        self.0.lock().unwrap().push(email.clone());
        Ok(())
    }
}

fn code_in(email: &Email) -> String {
    email.text.split_whitespace().find(|w| w.starts_with("emt_")).unwrap().to_owned()
}

#[tokio::test]
async fn verification_and_reset_codes_work_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/e.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    flows(db, &dir).await;
}

#[tokio::test]
#[ignore = "needs postgres: run .ci/run"]
async fn verification_and_reset_on_postgres_under_row_level_security() {
    let dir = tempfile::tempdir().unwrap();
    let database = saas_core::testing::TestDatabase::postgres().await;
    let owner = database.connect().await;
    migrate::run(&owner, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    flows(database.connect_as_app_role().await, &dir).await;
}

/// The service on `db`, mailing into the returned outbox.
async fn auth_with_outbox(db: Db, dir: &tempfile::TempDir) -> (Auth, Arc<Outbox>) {
    let config = common::quick_config(dir.path());
    let outbox = Arc::new(Outbox::default());
    let auth =
        Auth::from_config(db, Arc::new(MemoryCache::new(100)), &config).await.unwrap().with_mailer(outbox.clone());
    (auth, outbox)
}

async fn flows(db: Db, dir: &tempfile::TempDir) {
    let (auth, outbox) = auth_with_outbox(db, dir).await;
    let tenant = TenantContext { id: TenantId::new(), slug: "acme".into(), plan: "free".into() };
    let password = SecretString::from("correct horse battery");
    let user = auth.create_user(tenant.id, "ada@acme.test", None, &password, &["member"]).await.unwrap();
    let ada = common::principal_of(&user);

    // Verification.
    auth.request_email_verification(&ada).await.unwrap();
    let code = code_in(&outbox.0.lock().unwrap()[0]);
    assert_eq!(outbox.0.lock().unwrap()[0].to, "ada@acme.test");
    assert!(!auth.user(tenant.id, user.id).await.unwrap().view().email_verified);
    auth.verify_email(tenant.id, &code).await.unwrap();
    assert!(auth.user(tenant.id, user.id).await.unwrap().view().email_verified);
    assert_eq!(auth.verify_email(tenant.id, &code).await.unwrap_err().code(), "invalid_email_token", "single use");

    // Reset: the same answer for unknown addresses, and a message only for the real one.
    let before = auth.login(&tenant, "ada@acme.test", &password, None).await.unwrap();
    auth.request_password_reset(tenant.id, "nobody@acme.test").await.unwrap();
    assert_eq!(outbox.0.lock().unwrap().len(), 1, "no message for an unknown address");
    auth.request_password_reset(tenant.id, "ada@acme.test").await.unwrap();
    let reset = code_in(&outbox.0.lock().unwrap()[1]);
    assert_eq!(
        auth.verify_email(tenant.id, &reset).await.unwrap_err().code(),
        "invalid_email_token",
        "codes have one purpose"
    );
    let other = TenantId::new();
    let new_password = SecretString::from("a brand new horse");
    assert_eq!(auth.reset_password(other, &reset, &new_password).await.unwrap_err().code(), "invalid_email_token");
    assert_eq!(
        auth.reset_password(tenant.id, &reset, &SecretString::from("short")).await.unwrap_err().status().as_u16(),
        422
    );
    auth.reset_password(tenant.id, &reset, &new_password).await.unwrap();
    assert_eq!(auth.reset_password(tenant.id, &reset, &new_password).await.unwrap_err().code(), "invalid_email_token");
    assert!(auth.login(&tenant, "ada@acme.test", &new_password, None).await.is_ok());
    assert_eq!(auth.login(&tenant, "ada@acme.test", &password, None).await.unwrap_err().code(), "invalid_credentials");
    assert_eq!(
        auth.refresh(&tenant, &before.refresh_token).await.unwrap_err().code(),
        "invalid_refresh_token",
        "every session was signed out"
    );
    // A newer code replaces an older one.
    auth.request_password_reset(tenant.id, "ada@acme.test").await.unwrap();
    auth.request_password_reset(tenant.id, "ada@acme.test").await.unwrap();
    let (older, newer) = {
        let sent = outbox.0.lock().unwrap();
        (code_in(&sent[2]), code_in(&sent[3]))
    };
    assert_eq!(auth.reset_password(tenant.id, &older, &password).await.unwrap_err().code(), "invalid_email_token");
    assert!(auth.reset_password(tenant.id, &newer, &password).await.is_ok());
}

#[tokio::test]
async fn the_file_mailer_writes_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let mailer = saas_auth::mail::FileMailer::new(dir.path().join("mail"));
    mailer.send(&Email { to: "a@b.test".into(), subject: "Hi".into(), text: "secret emt_x".into() }).await.unwrap();
    let file = std::fs::read_dir(mailer.dir()).unwrap().next().unwrap().unwrap().path();
    assert!(std::fs::read_to_string(&file).unwrap().contains("Subject: Hi"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[tokio::test]
async fn an_invited_user_chooses_a_password_with_the_mailed_code() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/e.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    let (auth, outbox) = auth_with_outbox(db, &dir).await;
    let tenant = TenantContext { id: TenantId::new(), slug: "acme".into(), plan: "free".into() };
    let password = SecretString::from("correct horse battery");
    let owner = auth.create_user(tenant.id, "ada@acme.test", None, &password, &["owner"]).await.unwrap();
    let admin = auth.create_user(tenant.id, "bob@acme.test", None, &password, &["admin"]).await.unwrap();
    let (ada, bob) = (common::principal_of(&owner), common::principal_of(&admin));
    let member = vec!["member".to_owned()];

    let grace = auth.invite_user(&bob, "Grace@Acme.test", Some("Grace".into()), &member).await.unwrap();
    assert_eq!((grace.email.as_str(), grace.role_list()), ("grace@acme.test", member.clone()));
    let mail = outbox.0.lock().unwrap().last().unwrap().clone();
    assert_eq!(mail.to, "grace@acme.test");
    // No password works until she chooses one; the code sets it and proves her address.
    let chosen = SecretString::from("grace's own passphrase");
    assert_eq!(
        auth.login(&tenant, "grace@acme.test", &password, None).await.unwrap_err().code(),
        "invalid_credentials"
    );
    auth.reset_password(tenant.id, &code_in(&mail), &chosen).await.unwrap();
    assert!(auth.login(&tenant, "grace@acme.test", &chosen, None).await.is_ok());
    assert!(auth.user(tenant.id, grace.id).await.unwrap().view().email_verified);

    // Bad invitations.
    let taken = auth.invite_user(&bob, "grace@acme.test", None, &member).await.unwrap_err();
    assert_eq!((taken.status().as_u16(), taken.code()), (409, "email_taken"));
    let owner_role = auth.invite_user(&bob, "eve@acme.test", None, &["owner".to_owned()]).await.unwrap_err();
    assert_eq!(owner_role.status().as_u16(), 403, "only an owner invites an owner");
    assert!(auth.invite_user(&ada, "olga@acme.test", None, &["owner".to_owned()]).await.is_ok());
    let ghost = auth.invite_user(&bob, "eve@acme.test", None, &["ghost".to_owned()]).await.unwrap_err();
    assert_eq!(ghost.field_errors()[0].field, "roles[0]");
    let bad = auth.invite_user(&bob, "not an address", None, &member).await.unwrap_err();
    assert_eq!(bad.field_errors()[0].field, "email");
    let long = auth.invite_user(&bob, "eve@acme.test", Some("x".repeat(201)), &member).await.unwrap_err();
    assert_eq!(long.field_errors()[0].field, "name");
    let mut key = common::principal_of(&admin);
    key.api_key = Some("key_1".into());
    assert_eq!(auth.invite_user(&key, "eve@acme.test", None, &member).await.unwrap_err().status().as_u16(), 403);
}
