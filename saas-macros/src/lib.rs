//! Procedural macros for saas-rs.
//!
//! **Status: not built yet.** This crate will hold:
//! - `#[derive(DomainEvent)]`: event name with version, bounded context, JSON Schema and tenant;
//! - `#[derive(TenantScoped)]`: tenant-owned rows with the isolation guarantees of `saas-tenancy`;
//! - `#[require_permission("invoices:write")]` and `permissions! { … }` for `saas-auth`.
//!
//! It is part of the workspace so the layout is final; its macros arrive with the tenancy,
//! identity and events work (see the roadmap in the repository README).
