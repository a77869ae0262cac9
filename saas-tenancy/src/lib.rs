//! Tenant management for saas-rs (bounded context *Tenant Management*).
//!
//! **Status: not built yet.** This crate will hold the `Tenant`, `ResourceQuota` and `Feature`
//! aggregates; tenant lifecycle (provision, suspend, reactivate, delete); the `TenantLayer`
//! and `Tenant` extractor that resolve the tenant from subdomain, header, path or token;
//! tenant-scoped database access with PostgreSQL row-level security; quotas and feature flags.
//!
//! The shared kernel it builds on (ids, errors, `TenantTx`, events) is in `saas-core`.
