//! Events of analytics and reporting, to be published through the outbox on topic
//! `analytics`.
//!
//! These are the contracts only: nothing emits them yet. The issue that builds activity
//! tracking, reports, dashboards and anomaly detection emits them as defined here (or bumps
//! a version). Each event is a type deriving `DomainEvent` (saas-macros); its envelope
//! carries the tenant and, as subject, the user, report, metric or dashboard. Dates are
//! RFC 3339 strings. The constants are the versioned types, for consumers that match on
//! `Envelope::event_type`. [`catalog`] lists them with their JSON Schemas (committed under
//! `schemas/`).

use saas_core::{
    events::EventSchema,
    id::{DashboardId, ReportId, TenantId, UserId},
};
use saas_macros::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A user's activity was recorded: [`UserActivityRecorded`].
pub const USER_ACTIVITY_RECORDED: &str = "analytics.user_activity_recorded.v1";
/// A report is ready: [`ReportGenerated`].
pub const REPORT_GENERATED: &str = "analytics.report_generated.v1";
/// A metric left its expected range: [`AnomalyDetected`].
pub const ANOMALY_DETECTED: &str = "analytics.anomaly_detected.v1";
/// A user opened a dashboard: [`DashboardViewed`].
pub const DASHBOARD_VIEWED: &str = "analytics.dashboard_viewed.v1";

/// A user's activity was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "analytics.user_activity_recorded", version = 1)]
pub struct UserActivityRecorded {
    /// The user's tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The user.
    #[event(subject)]
    pub user_id: UserId,
    /// What they did, e.g. `invoice_viewed`.
    pub activity: String,
    /// The entity they did it to, e.g. an invoice id; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// A report was generated and can be downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "analytics.report_generated", version = 1)]
pub struct ReportGenerated {
    /// The tenant it reports on.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The report.
    #[event(subject)]
    pub report_id: ReportId,
    /// Its kind, e.g. `monthly_usage`.
    pub report: String,
    /// The start of the period it covers.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub period_start: OffsetDateTime,
    /// The end of the period it covers.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub period_end: OffsetDateTime,
    /// The user who asked for it; absent for a scheduled report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<UserId>,
}

/// A metric's value left its expected range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "analytics.anomaly_detected", version = 1)]
pub struct AnomalyDetected {
    /// The tenant whose metric it is.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The metric's name, e.g. `api_requests` (also the subject).
    #[event(subject)]
    pub metric: String,
    /// The value observed over the window.
    pub observed: f64,
    /// The value expected from the metric's history.
    pub expected: f64,
    /// How far `observed` is from `expected`, in standard deviations; negative below it.
    pub deviation: f64,
    /// The start of the window observed.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub window_start: OffsetDateTime,
    /// The end of the window observed.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub window_end: OffsetDateTime,
}

/// A user opened a dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "analytics.dashboard_viewed", version = 1)]
pub struct DashboardViewed {
    /// The tenant that owns the dashboard.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The dashboard.
    #[event(subject)]
    pub dashboard_id: DashboardId,
    /// The user who opened it.
    pub user_id: UserId,
}

/// Every event of saas-analytics with its JSON Schema.
pub fn catalog() -> Vec<EventSchema> {
    vec![
        EventSchema::of::<UserActivityRecorded>(),
        EventSchema::of::<ReportGenerated>(),
        EventSchema::of::<AnomalyDetected>(),
        EventSchema::of::<DashboardViewed>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_are_the_types_of_the_catalog() {
        let types: Vec<String> = catalog().into_iter().map(|e| e.event_type).collect();
        assert_eq!(types, [USER_ACTIVITY_RECORDED, REPORT_GENERATED, ANOMALY_DETECTED, DASHBOARD_VIEWED]);
    }
}
