//! The example as a client sees it: each tenant sees only its notes; another tenant's
//! note is 404, by header or by subdomain.

use axum::{Router, body::Body};
use http::Request;
use saas_tenancy::NewTenant;
use tower::ServiceExt;

async fn send(app: &Router, request: Request<Body>) -> (u16, serde_json::Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn each_tenant_sees_only_its_notes() {
    let dir = tempfile::tempdir().unwrap();
    let db = saas_core::db::Db::connect(&format!("sqlite://{}/n.db", dir.path().display()), Default::default())
        .await
        .unwrap();
    let (app, tenants) = example_tenant_notes::app(db).await.unwrap();
    for slug in ["acme", "globex"] {
        tenants.provision(NewTenant { slug: slug.into(), name: slug.into(), plan: None }).await.unwrap();
    }
    let post = Request::post("/v1/notes")
        .header("x-tenant-id", "acme")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"body":"secret plan"}"#))
        .unwrap();
    let (status, note) = send(&app, post).await;
    assert_eq!(status, 201, "{note}");
    let id = note["id"].as_str().unwrap();

    let get = |tenant: &str, path: &str| Request::get(path).header("x-tenant-id", tenant).body(Body::empty()).unwrap();
    assert_eq!(send(&app, get("acme", "/v1/notes")).await.1[0]["body"], "secret plan");
    assert_eq!(send(&app, get("globex", "/v1/notes")).await, (200, serde_json::json!([])));
    let (status, problem) = send(&app, get("globex", &format!("/v1/notes/{id}"))).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("note_not_found")));
    let by_host =
        Request::get(format!("/v1/notes/{id}")).header("host", "globex.localhost:3000").body(Body::empty()).unwrap();
    assert_eq!(send(&app, by_host).await.0, 404);
    assert_eq!(send(&app, get("initech", "/v1/notes")).await.1["code"], "tenant_not_found");
}
