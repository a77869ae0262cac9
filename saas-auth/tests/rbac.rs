//! RBAC: permissions carried by the token, built-in and custom roles, the layer and the
//! attribute; every protected route answers 403 without its permission and works with it.

mod common;

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    routing::{get, post},
};
use http::Request;
use saas_auth::{principal::Principal, rbac::RequirePermission, service::Auth};
use saas_core::{
    cache::MemoryCache,
    db::{Db, migrate},
    id::TenantId,
    tenant::TenantContext,
};
use saas_macros::require_permission;
use secrecy::SecretString;
use tower::ServiceExt;

mod perms {
    saas_auth::permissions! { invoices: [read, write], reports: [read] }
}

#[require_permission("reports:read")]
async fn report(principal: Principal) -> String {
    format!("report for {}", principal.user)
}

/// `invoices:write`, for the extractor that hands the handler the principal.
struct InvoicesWrite;

impl saas_auth::rbac::PermissionName for InvoicesWrite {
    const NAME: &'static str = "invoices:write";
}

async fn invoice_owner(authorized: saas_auth::rbac::Authorized<InvoicesWrite>) -> String {
    authorized.0.user.to_string()
}

async fn setup() -> (Auth, Db, TenantContext, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/r.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_tenancy::MIGRATIONS, &saas_auth::MIGRATIONS])
        .await
        .unwrap();
    let config = common::quick_config(dir.path());
    let auth = Auth::from_config(db.clone(), Arc::new(MemoryCache::new(100)), &config).await.unwrap();
    let tenant = TenantContext { id: TenantId::new(), slug: "acme".into(), plan: "free".into() };
    (auth, db, tenant, dir)
}

async fn token(auth: &Auth, tenant: &TenantContext, email: &str, roles: &[&str]) -> (String, saas_core::id::UserId) {
    let password = SecretString::from("correct horse battery");
    let user = auth.create_user(tenant.id, email, None, &password, roles).await.unwrap();
    (auth.login(tenant, email, &password, None).await.unwrap().access_token, user.id)
}

use common::status;

#[tokio::test]
async fn routes_answer_403_without_the_permission_and_work_with_it() {
    let (auth, db, tenant, _dir) = setup().await;
    assert_eq!(perms::invoices::write.name(), "invoices:write");
    let app = Router::new()
        .route(
            "/v1/invoices",
            post(|| async { "created" }).route_layer(RequirePermission::new(perms::invoices::write.name())),
        )
        .route("/v1/reports", get(report))
        .route("/v1/invoices/owner", get(invoice_owner))
        .merge(Router::from(saas_auth::api::router(auth.clone(), saas_tenancy::admin::PlatformAdmins::new(db, None))))
        .layer(auth.layer());

    let (owner, _) = token(&auth, &tenant, "owner@acme.test", &["owner"]).await;
    let (member, member_id) = token(&auth, &tenant, "member@acme.test", &["member"]).await;
    let billing_role = serde_json::json!({"permissions": ["invoices:*"]});
    let roles_of = |roles: &[&str]| serde_json::json!({ "roles": roles });

    // Built-in roles: the owner has everything, a member reads.
    assert_eq!(status(&app, "POST", "/v1/invoices", &owner, None).await, 200);
    assert_eq!(status(&app, "POST", "/v1/invoices", &member, None).await, 403);
    assert_eq!(status(&app, "GET", "/v1/reports", &member, None).await, 200, "*:read covers reports:read");
    assert_eq!(status(&app, "GET", "/v1/invoices/owner", &owner, None).await, 200, "the Authorized extractor");
    assert_eq!(status(&app, "GET", "/v1/invoices/owner", &member, None).await, 403);
    assert_eq!(status(&app, "GET", "/v1/invoices/owner", "", None).await, 401);
    assert_eq!(status(&app, "GET", "/v1/auth/roles", &member, None).await, 200);
    assert_eq!(status(&app, "PUT", "/v1/auth/roles/billing", &member, Some(billing_role.clone())).await, 403);
    let assign = format!("/v1/auth/users/{member_id}/roles");
    assert_eq!(status(&app, "PUT", &assign, &member, Some(roles_of(&["owner"]))).await, 403, "no self-promotion");

    // Invitations need `users:write`.
    let invite = serde_json::json!({"email": "grace@acme.test"});
    assert_eq!(status(&app, "POST", "/v1/auth/users", &member, Some(invite.clone())).await, 403);
    assert_eq!(status(&app, "POST", "/v1/auth/users", &owner, Some(invite.clone())).await, 201);
    assert_eq!(status(&app, "POST", "/v1/auth/users", &owner, Some(invite)).await, 409);

    // A custom role, assigned by the owner, reaches the member with its next token.
    assert_eq!(status(&app, "PUT", "/v1/auth/roles/billing", &owner, Some(billing_role)).await, 204);
    assert_eq!(
        status(&app, "PUT", "/v1/auth/roles/owner", &owner, Some(serde_json::json!({"permissions": []}))).await,
        422
    );
    assert_eq!(
        status(&app, "PUT", "/v1/auth/roles/x", &owner, Some(serde_json::json!({"permissions": ["Bad One"]}))).await,
        422
    );
    assert_eq!(status(&app, "PUT", &assign, &owner, Some(roles_of(&["member", "billing"]))).await, 200);
    assert_eq!(status(&app, "PUT", &assign, &owner, Some(roles_of(&["ghost"]))).await, 422);
    assert_eq!(
        status(&app, "POST", "/v1/invoices", &member, None).await,
        403,
        "the old token still carries the old roles"
    );
    let password = SecretString::from("correct horse battery");
    let renewed = auth.login(&tenant, "member@acme.test", &password, None).await.unwrap().access_token;
    assert_eq!(status(&app, "POST", "/v1/invoices", &renewed, None).await, 200);
    let claims = auth.tokens().verify(&renewed).await.unwrap();
    assert_eq!(*claims.perms, ["*:read", "invoices:*"]);

    // Without a token: 401; with a bad one: 401 too.
    assert_eq!(status(&app, "GET", "/v1/reports", "", None).await, 401);
    assert_eq!(status(&app, "GET", "/v1/reports", "a.b.c", None).await, 401);
}

#[tokio::test]
async fn api_keys_work_within_their_scopes_until_revoked_or_expired() {
    let (auth, db, tenant, _dir) = setup().await;
    let app = Router::new()
        .route("/v1/invoices", post(|| async { "created" }).route_layer(RequirePermission::new("invoices:write")))
        .route("/v1/reports", get(report))
        .merge(Router::from(saas_auth::api::router(
            auth.clone(),
            saas_tenancy::admin::PlatformAdmins::new(db.clone(), None),
        )))
        .layer(auth.layer());
    let (owner, owner_id) = token(&auth, &tenant, "owner@acme.test", &["owner"]).await;
    let (member, _) = token(&auth, &tenant, "member@acme.test", &["member"]).await;

    let create = |token: &str, body: serde_json::Value| {
        let request = Request::post("/v1/auth/api-keys")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
            (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default())
        }
    };
    let (code, created) =
        create(&owner, serde_json::json!({"name": "reports bot", "permissions": ["reports:read"]})).await;
    assert_eq!(code, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("sak_{}_", tenant.id)), "recognisable, carries its tenant");

    // Within its scope it works; outside, 403.
    assert_eq!(status(&app, "GET", "/v1/reports", &key, None).await, 200);
    assert_eq!(status(&app, "POST", "/v1/invoices", &key, None).await, 403);
    // Once verified, the key is decided from the cache (without waiting), and only the
    // exact key is found there.
    let keys = auth.api_keys();
    assert!(keys.verify_cached(&key).is_some_and(|p| p.can("reports:read") && !p.can("invoices:write")));
    let mut tampered = key.clone().into_bytes();
    *tampered.last_mut().unwrap() ^= 1;
    let padded = format!("{key}{}", "x".repeat(100_000));
    for other in
        [&tampered[..], &key.as_bytes()[..key.len() - 1], format!("{key} ").as_bytes(), b"sak_", padded.as_bytes()]
    {
        assert!(keys.verify_cached(other).is_none(), "{}", String::from_utf8_lossy(other));
    }
    // Nobody grants more than they have, and keys do not make keys.
    assert_eq!(create(&member, serde_json::json!({"name": "x", "permissions": ["invoices:write"]})).await.0, 403);
    assert_eq!(create(&key, serde_json::json!({"name": "x", "permissions": ["reports:read"]})).await.0, 403);
    assert_eq!(create(&owner, serde_json::json!({"name": "", "permissions": ["reports:read"]})).await.0, 422);

    // Listed without its secret, with its last use.
    let listing = auth.api_keys().list(tenant.id).await.unwrap();
    assert_eq!(listing.len(), 1);
    assert!(listing[0].last_used_at.is_some());
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT token_hash FROM auth_api_keys").fetch_all(db.pool()).await.unwrap();
    let secret = &key["sak_".len() + tenant.id.to_string().len() + 1..];
    assert_eq!(secret.len(), 43, "32 random bytes");
    assert!(!stored[0].contains(secret) && stored[0].len() == 43, "only a hash is stored");

    // Revoked: it stops at once.
    let id = created["id"].as_str().unwrap();
    assert_eq!(status(&app, "DELETE", &format!("/v1/auth/api-keys/{id}"), &owner, None).await, 204);
    assert_eq!(status(&app, "GET", "/v1/reports", &key, None).await, 401);
    assert!(keys.verify_cached(&key).is_none(), "forgotten by the cache");
    assert_eq!(status(&app, "DELETE", &format!("/v1/auth/api-keys/{id}"), &owner, None).await, 404);

    // Expired: it stops too.
    let (expiring, _) = auth
        .api_keys()
        .create(
            tenant.id,
            owner_id,
            &["*".to_owned()],
            "short",
            &["reports:read".to_owned()],
            Some(std::time::Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert_eq!(status(&app, "GET", "/v1/reports", &expiring, None).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(keys.verify_cached(&expiring).is_none(), "expired in the cache too");
    assert_eq!(status(&app, "GET", "/v1/reports", &expiring, None).await, 401, "expired, though verified a moment ago");
    let fresh_keys = saas_auth::api_keys::ApiKeys::new(db.clone());
    assert!(fresh_keys.verify(&expiring).await.unwrap().is_none(), "and refused when read afresh");
    for junk in ["sak_", "sak_ten_x_y", &format!("sak_{}_nope", tenant.id)] {
        assert_eq!(status(&app, "GET", "/v1/reports", junk, None).await, 401, "{junk}");
    }
}

#[tokio::test]
async fn nobody_grants_more_than_they_hold() {
    let (auth, db, tenant, _dir) = setup().await;
    let app = Router::new()
        .merge(Router::from(saas_auth::api::router(
            auth.clone(),
            saas_tenancy::admin::PlatformAdmins::new(db.clone(), None),
        )))
        .layer(auth.layer());
    let (owner, owner_id) = token(&auth, &tenant, "owner@acme.test", &["owner"]).await;
    let (admin, admin_id) = token(&auth, &tenant, "admin@acme.test", &["admin"]).await;
    let put = |uri: String, token: String, body: serde_json::Value| {
        let app = app.clone();
        async move { status(&app, "PUT", &uri, &token, Some(body)).await }
    };
    // The owner defines an editor role that may manage roles and users, but not everything.
    let editor = serde_json::json!({"permissions": ["*:read", "roles:write", "users:write"]});
    assert_eq!(put("/v1/auth/roles/editor".into(), owner.clone(), editor).await, 204);
    let (editor, editor_id) = token(&auth, &tenant, "editor@acme.test", &["editor"]).await;

    // The editor cannot widen its own role, define a wider one, or take a wider role.
    for permissions in [serde_json::json!(["*"]), serde_json::json!(["invoices:write"]), serde_json::json!(["*:write"])]
    {
        let body = serde_json::json!({ "permissions": permissions });
        assert_eq!(put("/v1/auth/roles/editor".into(), editor.clone(), body.clone()).await, 403, "{body}");
        assert_eq!(put("/v1/auth/roles/wider".into(), editor.clone(), body).await, 403);
    }
    let own_roles = format!("/v1/auth/users/{editor_id}/roles");
    for roles in [["owner"], ["admin"]] {
        assert_eq!(
            put(own_roles.clone(), editor.clone(), serde_json::json!({ "roles": roles })).await,
            403,
            "{roles:?}"
        );
    }
    // It may grant what it holds.
    assert_eq!(
        put("/v1/auth/roles/reader".into(), editor.clone(), serde_json::json!({"permissions": ["*:read"]})).await,
        204
    );

    // Only an owner touches the owner role, and the last owner keeps it.
    let admin_roles = format!("/v1/auth/users/{admin_id}/roles");
    let owner_roles = format!("/v1/auth/users/{owner_id}/roles");
    assert_eq!(put(admin_roles.clone(), admin.clone(), serde_json::json!({"roles": ["owner"]})).await, 403);
    assert_eq!(put(owner_roles.clone(), admin.clone(), serde_json::json!({"roles": ["member"]})).await, 403);
    assert_eq!(put(owner_roles, owner.clone(), serde_json::json!({"roles": ["member"]})).await, 409, "last owner");

    // A key loses what its creator loses.
    let created = auth
        .api_keys()
        .create(tenant.id, admin_id, &["*".to_owned()], "admin key", &["invoices:write".to_owned()], None)
        .await
        .unwrap()
        .0;
    assert!(auth.api_keys().verify(&created).await.unwrap().unwrap().can("invoices:write"));
    assert_eq!(put(admin_roles, owner.clone(), serde_json::json!({"roles": ["member"]})).await, 200);
    let fresh = saas_auth::api_keys::ApiKeys::new(db.clone());
    let principal = fresh.verify(&created).await.unwrap().unwrap();
    assert!(!principal.can("invoices:write"), "the demoted creator's key is demoted too");
}
