//! Identity and access for saas-rs (bounded context *Identity & Access*).
//!
//! **Status: not built yet.** This crate will hold the `User`, `Role` and `Permission`
//! aggregates; password credentials (argon2id); JWT access tokens with rotating keys and a
//! JWKS endpoint; refresh-token rotation; sessions; TOTP MFA and recovery codes; API keys;
//! RBAC as a `Principal` extractor, a `RequirePermission` layer and a
//! `#[require_permission]` attribute; brute-force protection.
