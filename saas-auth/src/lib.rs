//! Identity and access for saas-rs (bounded context *Identity & Access*).
//!
//! Built so far:
//!
//! | piece | what it does |
//! |---|---|
//! | [`password`] | argon2id (OWASP parameters) off the runtime behind a bounded semaphore; 503 when saturated; dummy verify for unknown users |
//! | [`users`] | the User aggregate, tenant-owned (`#[derive(TenantScoped)]`, row-level security) |
//! | [`keys`] | signing keys (Ed25519, P-256 or RSA), encrypted at rest, rotated, published at `/.well-known/jwks.json` |
//! | [`token`] | access tokens (JWT, `EdDSA`, `ES256` or `RS256`), strict verification, verified-token cache |
//! | [`principal`] | [`AuthLayer`](principal::AuthLayer) and the [`Principal`](principal::Principal) extractor; the hooks saas-tenancy takes |
//! | [`session`] | sessions, refresh-token rotation with reuse detection, revocation; the [`SessionStore`](session::SessionStore) port with SQL and Redis adapters |
//! | [`service`] | [`Auth`](service::Auth): login, refresh, logout, users, the sign-up owner |
//! | [`api`] | the routes under `/v1/auth/…` and `GET /.well-known/jwks.json` |
//! | [`throttle`] | brute-force protection: back-off and lock-out per account and address |
//! | [`mfa`] | TOTP (RFC 6238) with otpauth URI and QR code, single-use codes, recovery codes, the login challenge |
//! | [`api_keys`] | API keys: per tenant, scoped to permissions, hashed, expiring, revocable |
//! | [`rbac`] | permissions (`permissions!`), built-in and custom roles, [`RequirePermission`](rbac::RequirePermission), `#[require_permission]` |
//! | [`audit`] | the tamper-evident audit log: every event in a hash chain per tenant, signed checkpoints, verification |
//! | [`mail`] | the `Mailer` port (e-mail verification, password reset) and a file transport |

// Lets `#[require_permission]`, which names `::saas_auth`, work inside this crate too.
extern crate self as saas_auth;

pub mod api;
pub mod api_keys;
pub mod audit;
mod email_tokens;
pub mod events;
mod jws;
pub mod keys;
pub mod mail;
pub mod mfa;
pub mod password;
pub mod principal;
pub mod rbac;
pub mod service;
pub mod session;
pub mod throttle;
pub mod token;
pub mod users;

use saas_core::db::migrate::{Migration, Migrations};

/// The tables, one text for both engines (PostgreSQL adds row-level security to the tenant-owned ones).
macro_rules! tables {
    () => {
        "CREATE TABLE users (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            email TEXT NOT NULL,
            name TEXT,
            password_hash TEXT NOT NULL,
            roles TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            email_verified_at BIGINT,
            PRIMARY KEY (tenant_id, id),
            UNIQUE (tenant_id, email)
        );
        CREATE TABLE auth_sessions (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT,
            PRIMARY KEY (tenant_id, id)
        );
        CREATE TABLE auth_refresh_tokens (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            used_at BIGINT,
            revoked_at BIGINT,
            PRIMARY KEY (tenant_id, id)
        );
        CREATE INDEX auth_refresh_tokens_session ON auth_refresh_tokens (tenant_id, session_id);
        CREATE TABLE auth_roles (
            tenant_id TEXT NOT NULL,
            name TEXT NOT NULL,
            permissions TEXT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, name)
        );
        CREATE TABLE auth_api_keys (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            permissions TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT,
            last_used_at BIGINT,
            revoked_at BIGINT,
            PRIMARY KEY (tenant_id, id)
        );
        CREATE TABLE auth_mfa (
            tenant_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            secret TEXT NOT NULL,
            confirmed_at BIGINT,
            last_step BIGINT NOT NULL,
            recovery_codes TEXT NOT NULL,
            PRIMARY KEY (tenant_id, user_id)
        );
        CREATE TABLE auth_email_tokens (
            tenant_id TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            user_id TEXT NOT NULL,
            purpose TEXT NOT NULL,
            expires_at BIGINT NOT NULL,
            used_at BIGINT,
            PRIMARY KEY (tenant_id, token_hash)
        );
        CREATE TABLE auth_signing_keys (
            kid TEXT PRIMARY KEY,
            algorithm TEXT NOT NULL,
            public_key TEXT NOT NULL,
            private_key TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            activates_at BIGINT NOT NULL,
            retired_at BIGINT,
            revoked_at BIGINT
        );"
    };
}

/// The audit log's tables: entries are tenant-owned; heads and checkpoints hold only hashes
/// and signatures and are read across tenants by the checkpoint signer.
macro_rules! audit_tables {
    () => {
        "CREATE TABLE audit_log (
            tenant_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            entry TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            mac TEXT NOT NULL,
            recorded_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, seq)
        );
        CREATE TABLE audit_heads (
            tenant_id TEXT PRIMARY KEY,
            seq BIGINT NOT NULL,
            hash TEXT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        CREATE TABLE audit_checkpoints (
            tenant_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            hash TEXT NOT NULL,
            signed_at BIGINT NOT NULL,
            key_id TEXT NOT NULL,
            signature TEXT NOT NULL,
            PRIMARY KEY (tenant_id, seq)
        );"
    };
}
/// Row-level security on `audit_log`: a transaction bound to a tenant sees that tenant's
/// chain; one bound to none sees only the `platform` chain.
macro_rules! audit_log_policy {
    () => {
        "
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = current_setting('app.tenant_id', true)
        OR (tenant_id = 'platform' AND COALESCE(current_setting('app.tenant_id', true), '') = ''))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true)
        OR (tenant_id = 'platform' AND COALESCE(current_setting('app.tenant_id', true), '') = ''));
"
    };
}

/// Tables of saas-auth; part of `saas migrate`.
pub static MIGRATIONS: Migrations = Migrations {
    component: "saas-auth",
    list: &[
        Migration::per_engine(
            1,
            "users, sessions and signing keys",
            tables!(),
            concat!(
                tables!(),
                saas_core::rls_policy!("users"),
                saas_core::rls_policy!("auth_sessions"),
                saas_core::rls_policy!("auth_refresh_tokens"),
                saas_core::rls_policy!("auth_roles"),
                saas_core::rls_policy!("auth_api_keys"),
                saas_core::rls_policy!("auth_mfa"),
                saas_core::rls_policy!("auth_email_tokens")
            ),
        ),
        Migration::per_engine(2, "audit log", audit_tables!(), concat!(audit_tables!(), audit_log_policy!())),
    ],
};
