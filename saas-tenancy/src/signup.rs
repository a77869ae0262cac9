//! Self-serve sign-up: a tenant and its first owner in one transaction.

use async_trait::async_trait;
use saas_core::error::Result;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::tenant::{Tenant, TenantView};

/// Creates the owner account of a tenant being signed up, inside the sign-up transaction:
/// if it fails, the tenant is not created either. saas-auth implements it; a server
/// without one refuses sign-ups that carry an `owner`.
///
/// In two steps, so that the transaction holds its locks (on SQLite, the database's one
/// write lock) only for its writes: [`prepare_owner`](Self::prepare_owner) checks the
/// owner and hashes the password before the transaction begins,
/// [`register_owner`](Self::register_owner) writes inside it.
#[async_trait]
pub trait OwnerRegistrar: Send + Sync + 'static {
    /// Checks `owner` (a refusal answers before anything is written) and hashes its
    /// password.
    async fn prepare_owner(&self, owner: OwnerSignup) -> Result<PreparedOwner>;

    /// Creates the prepared `owner` for `tenant` on `conn` (the open transaction) and
    /// returns the owner's public representation, sent back in the sign-up response.
    async fn register_owner(
        &self,
        conn: &mut AnyConnection,
        tenant: &Tenant,
        owner: PreparedOwner,
    ) -> Result<serde_json::Value>;
}

/// An owner checked and with its password hashed, ready to be written: what
/// [`OwnerRegistrar::prepare_owner`] returns and [`OwnerRegistrar::register_owner`] takes.
#[derive(Debug)]
pub struct PreparedOwner {
    /// E-mail address, the login.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// The registrar's hash of the password (for saas-auth, an argon2id PHC string).
    pub password_hash: String,
}

/// `POST /v1/signup` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// The new tenant's slug (its subdomain).
    #[schema(example = "acme")]
    pub slug: String,
    /// The new tenant's display name.
    #[schema(example = "Acme Corporation")]
    pub name: String,
    /// The first owner; needs the server's owner registrar (saas-auth).
    #[serde(default)]
    pub owner: Option<OwnerSignup>,
}

/// The first owner of a tenant being signed up.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerSignup {
    /// E-mail address, the login.
    #[schema(example = "ada@acme.example")]
    pub email: String,
    /// Password; never stored or logged in clear.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v1/signup` response.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignupResponse {
    /// The new tenant.
    pub tenant: TenantView,
    /// The owner as the registrar describes it; `null` when none was requested.
    #[schema(value_type = Option<Object>)]
    pub owner: Option<serde_json::Value>,
}
