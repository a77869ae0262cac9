//! User management for saas-rs (bounded context *User Management*).
//!
//! **Status: not built yet.** This crate will hold the `UserProfile` and `Preference`
//! aggregates: profile CRUD, preferences, activity tracking, deactivation, and personal data
//! export and erasure. Only the contracts of its domain events are defined so far, in
//! [`events`]; nothing emits them yet.

pub mod events;
