//! The User aggregate: an account inside one tenant. The same e-mail address can be two
//! different users in two tenants.

use saas_core::{
    db::{TenantScoped, TenantTx, now_millis},
    error::{Error, FieldError, Result},
    id::{TenantId, UserId},
};
use saas_macros::TenantScoped;
use serde::Serialize;

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A user account (tenant-owned row of `users`).
#[derive(Debug, Clone, PartialEq, TenantScoped)]
#[tenant_scoped(table = "users")]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The tenant the account belongs to.
    pub tenant_id: TenantId,
    /// Normalised e-mail address (trimmed, lower case): the login.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Roles in the tenant, comma-separated (`owner`, `admin`, `member`).
    pub roles: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When the address was proven (Unix milliseconds); `None` until then.
    pub email_verified_at: Option<i64>,
}

/// What a client sees of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UserView {
    /// The user's id.
    #[schema(value_type = String)]
    pub id: UserId,
    /// The tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// E-mail address.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Roles in the tenant.
    pub roles: Vec<String>,
    /// Whether the address is proven.
    pub email_verified: bool,
}

impl User {
    /// A new user of `tenant`.
    pub fn new(
        tenant: TenantId,
        email: &str,
        name: Option<String>,
        password_hash: String,
        roles: &[&str],
    ) -> Result<Self> {
        let name = normalise_name(name)?;
        Ok(Self {
            id: UserId::new(),
            tenant_id: tenant,
            email: normalise_email(email)?,
            name,
            password_hash,
            roles: roles.join(","),
            created_at: now_millis(),
            email_verified_at: None,
        })
    }

    /// The roles as a list.
    pub fn role_list(&self) -> Vec<String> {
        self.roles.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect()
    }

    /// What a client sees.
    pub fn view(&self) -> UserView {
        UserView {
            id: self.id,
            tenant_id: self.tenant_id,
            email: self.email.clone(),
            name: self.name.clone(),
            roles: self.role_list(),
            email_verified: self.email_verified_at.is_some(),
        }
    }

    /// The transaction's tenant's user with this e-mail address.
    pub async fn by_email(tx: &mut TenantTx, email: &str) -> Result<Option<Self>> {
        let Ok(email) = normalise_email(email) else { return Ok(None) };
        let row = sqlx::query("SELECT * FROM users WHERE tenant_id = $1 AND email = $2")
            .bind(tx.tenant().to_string())
            .bind(email)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(row.map(|r| Self::from_row(&r)).transpose()?)
    }

    /// The transaction's tenant's user with this e-mail address and whether MFA is on for
    /// them, in one query: what a login reads before it checks the password (the same
    /// single query whether the account exists or not).
    pub(crate) async fn by_email_with_mfa(tx: &mut TenantTx, email: &str) -> Result<Option<(Self, bool)>> {
        let Ok(email) = normalise_email(email) else { return Ok(None) };
        let row = sqlx::query(
            "SELECT u.*, m.confirmed_at AS mfa_confirmed_at FROM users u \
             LEFT JOIN auth_mfa m ON m.tenant_id = u.tenant_id AND m.user_id = u.id \
             WHERE u.tenant_id = $1 AND u.email = $2",
        )
        .bind(tx.tenant().to_string())
        .bind(email)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mfa = crate::mfa::in_force(saas_core::db::scoped::column(&row, "mfa_confirmed_at")?);
        Ok(Some((Self::from_row(&row)?, mfa)))
    }
}

/// Trims a display name (an empty one is none) and checks it: at most [`MAX_NAME_CHARS`]
/// characters, no control characters; the field is `name`.
pub fn normalise_name(name: Option<String>) -> Result<Option<String>> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control)) {
        return Err(Error::validation([FieldError::new(
            "name",
            "invalid",
            format!("expected at most {MAX_NAME_CHARS} characters, without control characters"),
        )]));
    }
    Ok(name)
}

/// Trims and lower-cases an address and checks its shape (`local@domain`, at most 254 bytes);
/// the field is `email`.
pub fn normalise_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(Error::validation([FieldError::new("email", "format", "expected an e-mail address")]));
    }
    Ok(email)
}

#[cfg(test)]
mod tests {
    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(super::normalise_email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in ["ada", "@example.com", "ada@", "ada@example", "a b@example.com", "ada@.com", "a@b@c.com"] {
            assert!(super::normalise_email(bad).is_err(), "{bad}");
        }
    }
}
