//! Events of subscriptions and billing, to be published through the outbox on topic
//! `billing`.
//!
//! These are the contracts only: nothing emits them yet. The issue that builds
//! subscriptions, invoices and payments emits them as defined here (or bumps a version).
//! Each event is a type deriving `DomainEvent` (saas-macros); its envelope carries the
//! tenant (the paying customer) and, as subject, the subscription, invoice or payment.
//! Money is an integer amount in the currency's minor unit (`amount_minor`, cents for
//! `USD`) with its ISO 4217 code (`currency`), never a float. Dates are RFC 3339 strings.
//! The constants are the versioned types, for consumers that match on
//! `Envelope::event_type`. [`catalog`] lists them with their JSON Schemas (committed under
//! `schemas/`).

use saas_core::{
    events::EventSchema,
    id::{InvoiceId, PaymentId, SubscriptionId, TenantId},
};
use saas_macros::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A tenant subscribed to a plan: [`SubscriptionCreated`].
pub const SUBSCRIPTION_CREATED: &str = "billing.subscription_created.v1";
/// A subscription moved to a higher plan: [`PlanUpgraded`].
pub const PLAN_UPGRADED: &str = "billing.plan_upgraded.v1";
/// An invoice was issued: [`InvoiceGenerated`].
pub const INVOICE_GENERATED: &str = "billing.invoice_generated.v1";
/// A payment attempt succeeded or failed: [`PaymentProcessed`].
pub const PAYMENT_PROCESSED: &str = "billing.payment_processed.v1";

/// How often a subscription is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BillingInterval {
    /// Every month.
    Month,
    /// Every year.
    Year,
}

/// How a payment attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    /// The money was captured; the invoice is paid.
    Succeeded,
    /// The gateway declined or failed; dunning retries later.
    Failed,
}

/// A tenant subscribed to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "billing.subscription_created", version = 1)]
pub struct SubscriptionCreated {
    /// The subscribing tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The new subscription.
    #[event(subject)]
    pub subscription_id: SubscriptionId,
    /// The plan's name, as in the tenant's `plan`.
    pub plan: String,
    /// How often it is charged.
    pub interval: BillingInterval,
    /// The price per interval, in the currency's minor unit.
    pub amount_minor: i64,
    /// The ISO 4217 code of the currency, e.g. `EUR`.
    pub currency: String,
    /// When the trial ends and the first charge is due; absent without a trial.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub trial_ends_at: Option<OffsetDateTime>,
    /// When the current period (the trial, if any) ends and the subscription renews.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub current_period_end: OffsetDateTime,
}

/// A subscription moved to a higher plan, with immediate effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "billing.plan_upgraded", version = 1)]
pub struct PlanUpgraded {
    /// The subscribing tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The subscription.
    #[event(subject)]
    pub subscription_id: SubscriptionId,
    /// The plan before.
    pub previous_plan: String,
    /// The plan from now on.
    pub plan: String,
    /// The new price per interval, in the currency's minor unit.
    pub amount_minor: i64,
    /// The ISO 4217 code of the currency, e.g. `EUR`.
    pub currency: String,
    /// What is charged now for the rest of the current period, in the currency's minor
    /// unit; `0` when nothing is prorated.
    pub prorated_minor: i64,
}

/// An invoice was issued to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "billing.invoice_generated", version = 1)]
pub struct InvoiceGenerated {
    /// The invoiced tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The invoice.
    #[event(subject)]
    pub invoice_id: InvoiceId,
    /// The subscription it bills; absent for a one-off invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<SubscriptionId>,
    /// The invoice number printed on it, sequential per tenant.
    pub number: String,
    /// The total due, tax included, in the currency's minor unit.
    pub amount_minor: i64,
    /// The tax included in `amount_minor`, in the currency's minor unit.
    pub tax_minor: i64,
    /// The ISO 4217 code of the currency, e.g. `EUR`.
    pub currency: String,
    /// The start of the billed period.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub period_start: OffsetDateTime,
    /// The end of the billed period.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub period_end: OffsetDateTime,
    /// When payment is due.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub due_at: OffsetDateTime,
}

/// A payment attempt against an invoice succeeded or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "billing.payment_processed", version = 1)]
pub struct PaymentProcessed {
    /// The paying tenant.
    #[event(tenant)]
    pub tenant_id: TenantId,
    /// The payment attempt.
    #[event(subject)]
    pub payment_id: PaymentId,
    /// The invoice it pays.
    pub invoice_id: InvoiceId,
    /// How it ended.
    pub outcome: PaymentOutcome,
    /// The amount attempted, in the currency's minor unit.
    pub amount_minor: i64,
    /// The ISO 4217 code of the currency, e.g. `EUR`.
    pub currency: String,
    /// The payment gateway, e.g. `stripe`.
    pub gateway: String,
    /// The gateway's id of the charge, for reconciliation.
    pub gateway_reference: String,
    /// The gateway's reason for a failure, e.g. `card_declined`; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// Every event of saas-billing with its JSON Schema.
pub fn catalog() -> Vec<EventSchema> {
    vec![
        EventSchema::of::<SubscriptionCreated>(),
        EventSchema::of::<PlanUpgraded>(),
        EventSchema::of::<InvoiceGenerated>(),
        EventSchema::of::<PaymentProcessed>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_are_the_types_of_the_catalog() {
        let types: Vec<String> = catalog().into_iter().map(|e| e.event_type).collect();
        assert_eq!(types, [SUBSCRIPTION_CREATED, PLAN_UPGRADED, INVOICE_GENERATED, PAYMENT_PROCESSED]);
    }
}
