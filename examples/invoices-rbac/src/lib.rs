//! An app whose own routes are protected by saas-auth: the [`AuthLayer`](saas_auth::principal::AuthLayer)
//! verifies tokens and API keys, handlers take the `Principal`, and each route names the
//! permission it needs, with the `#[require_permission]` attribute or the
//! `RequirePermission` layer. `main.rs` serves it; `tests/` shows who gets what.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use saas_auth::{principal::Principal, rbac::RequirePermission, service::Auth};
use saas_core::http::Json;
use saas_macros::require_permission;
use serde::{Deserialize, Serialize};

/// The permissions this app declares.
pub mod perms {
    saas_auth::permissions! { invoices: [read, write, void] }
}

/// An invoice (kept in memory: the example is about access, not storage).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invoice {
    /// Sequence number.
    pub number: u64,
    /// Amount in minor units.
    pub amount: i64,
    /// Who created it.
    pub created_by: String,
}

type Invoices = Arc<Mutex<Vec<Invoice>>>;

#[derive(Deserialize)]
struct NewInvoice {
    amount: i64,
}

/// Anyone with `invoices:read` (members have `*:read`).
#[require_permission("invoices:read")]
async fn list(State(invoices): State<Invoices>, principal: Principal) -> Json<Vec<Invoice>> {
    let _ = principal.tenant; // a real app reads the tenant's rows here
    Json(invoices.lock().expect("lock").clone())
}

/// Only with `invoices:write`.
#[require_permission("invoices:write")]
async fn create(State(invoices): State<Invoices>, principal: Principal, Json(new): Json<NewInvoice>) -> Json<Invoice> {
    let mut all = invoices.lock().expect("lock");
    let invoice = Invoice { number: all.len() as u64 + 1, amount: new.amount, created_by: principal.user.to_string() };
    all.push(invoice.clone());
    Json(invoice)
}

/// The app's routes behind `auth`'s layer; `invoices:void` is required by a layer instead
/// of the attribute, to show both.
pub fn app(auth: &Auth) -> Router {
    Router::new()
        .route("/v1/invoices", get(list).post(create))
        .route(
            "/v1/invoices/void-all",
            post(|State(invoices): State<Invoices>| async move {
                invoices.lock().expect("lock").clear();
                "voided"
            })
            .route_layer(RequirePermission::new(perms::invoices::void.name())),
        )
        .with_state(Invoices::default())
        .layer(auth.layer())
}

/// Migrates `db` and creates tenant `acme` with an owner and a clerk (custom role `clerk`:
/// read and write invoices); returns the service and a token for each user.
pub async fn seed(
    db: saas_core::db::Db,
    config: &saas_core::config::Config,
) -> saas_core::Result<(Auth, Vec<(&'static str, String)>)> {
    use saas_core::{cache::MemoryCache, id::TenantId, tenant::TenantContext};
    saas_core::db::migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await?;
    let auth = Auth::from_config(db, Arc::new(MemoryCache::new(10_000)), config).await?;
    let tenant = TenantContext { id: TenantId::new(), slug: "acme".into(), plan: "free".into() };
    let password = secrecy::SecretString::from("correct horse battery");
    let owner = auth.create_user(tenant.id, "owner@acme.test", None, &password, &["owner"]).await?;
    let as_owner = Principal {
        user: owner.id,
        tenant: tenant.id,
        session: "".into(),
        roles: owner.role_list().into(),
        permissions: Arc::new(["*".into()]),
        api_key: None,
    };
    let clerk_grants = [perms::invoices::read.name().to_owned(), perms::invoices::write.name().to_owned()];
    auth.set_role(&as_owner, "clerk", &clerk_grants).await?;
    auth.create_user(tenant.id, "clerk@acme.test", None, &password, &["clerk"]).await?;
    let mut tokens = Vec::new();
    for (name, email) in [("OWNER", "owner@acme.test"), ("CLERK", "clerk@acme.test")] {
        tokens.push((name, auth.login(&tenant, email, &password, None).await?.access_token));
    }
    Ok((auth, tokens))
}
