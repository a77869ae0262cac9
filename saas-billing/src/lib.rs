//! Subscription management for saas-rs (bounded context *Subscription Management*).
//!
//! **Status: not built yet.** This crate will hold the `Plan`, `Subscription` and `Invoice`
//! aggregates: the plan catalog, the subscription lifecycle (trial, active, past due, paused,
//! cancelled), usage metering, proration, invoices, payment gateways (Stripe first) and dunning.
//! Only the contracts of its domain events are defined so far, in [`events`]; nothing emits
//! them yet.

pub mod events;
