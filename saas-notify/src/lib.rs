//! Notifications for saas-rs (bounded context *Notification*).
//!
//! **Status: not built yet.** This crate will hold the `Notification`, `Template` and
//! `Channel` aggregates: e-mail, SMS, push and in-app dispatch, templates per tenant and locale,
//! user preferences, delivery tracking and retries. Only the contracts of its domain events
//! are defined so far, in [`events`]; nothing emits them yet.

pub mod events;
