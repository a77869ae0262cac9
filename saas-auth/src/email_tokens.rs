//! Single-use, expiring tokens sent by e-mail (address verification, password reset),
//! stored only as hashes.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use saas_core::{
    db::{TenantTx, now_millis},
    error::{Error, Result},
    id::{TenantId, UserId},
};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use crate::keys::random;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Proves an e-mail address; lives 24 h.
    VerifyEmail,
    /// Sets a new password; lives 1 h (an invitation's: [`INVITATION_MS`]).
    ResetPassword,
}

/// How long the password code of an invitation lives: 7 days.
pub(crate) const INVITATION_MS: i64 = 7 * 24 * 3600 * 1000;

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }

    fn lifetime_ms(self) -> i64 {
        match self {
            Self::VerifyEmail => 24 * 3600 * 1000,
            Self::ResetPassword => 3600 * 1000,
        }
    }
}

fn hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// Makes a token for `user` of `tenant` and `purpose` on `conn` (a transaction bound to
/// the tenant); earlier unused ones of the same purpose stop working.
pub(crate) async fn issue(
    conn: &mut AnyConnection,
    tenant: TenantId,
    user: UserId,
    purpose: Purpose,
) -> Result<String> {
    issue_for(conn, tenant, user, purpose, purpose.lifetime_ms()).await
}

/// As [`issue`], living `lifetime_ms`.
pub(crate) async fn issue_for(
    conn: &mut AnyConnection,
    tenant: TenantId,
    user: UserId,
    purpose: Purpose,
    lifetime_ms: i64,
) -> Result<String> {
    let token = format!("emt_{}", URL_SAFE_NO_PAD.encode(random::<32>()?));
    let now = now_millis();
    sqlx::query("UPDATE auth_email_tokens SET used_at = $4 WHERE tenant_id = $1 AND user_id = $2 AND purpose = $3 AND used_at IS NULL")
        .bind(tenant.to_string())
        .bind(user.to_string())
        .bind(purpose.name())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO auth_email_tokens (tenant_id, token_hash, user_id, purpose, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.to_string())
    .bind(hash(&token))
    .bind(user.to_string())
    .bind(purpose.name())
    .bind(now + lifetime_ms)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// Uses up `token` for `purpose` and answers its user; 400 `invalid_email_token` for an
/// unknown, expired, used or other-purpose token.
pub(crate) async fn redeem(tx: &mut TenantTx, token: &str, purpose: Purpose) -> Result<UserId> {
    let invalid = || Error::bad_request("invalid_email_token", "the link is invalid, expired or used already");
    if !token.starts_with("emt_") || token.len() > 100 {
        return Err(invalid());
    }
    let now = now_millis();
    // Written first: of two concurrent uses, one claims it (and SQLite takes its write lock
    // before reading).
    let claimed = sqlx::query(
        "UPDATE auth_email_tokens SET used_at = $4 WHERE tenant_id = $1 AND token_hash = $2 AND purpose = $3 \
         AND used_at IS NULL AND expires_at > $4",
    )
    .bind(tx.tenant().to_string())
    .bind(hash(token))
    .bind(purpose.name())
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        return Err(invalid());
    }
    let user: String =
        sqlx::query_scalar("SELECT user_id FROM auth_email_tokens WHERE tenant_id = $1 AND token_hash = $2")
            .bind(tx.tenant().to_string())
            .bind(hash(token))
            .fetch_one(&mut **tx)
            .await?;
    user.parse().map_err(Error::internal)
}
