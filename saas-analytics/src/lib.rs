//! Analytics and reporting for saas-rs (bounded context *Analytics & Reporting*).
//!
//! **Status: not built yet.** This crate will hold tracked events, metrics, reports and
//! dashboards, with anomaly detection and forecasting over the event stream. Only the
//! contracts of its domain events are defined so far, in [`events`]; nothing emits them yet.

pub mod events;
