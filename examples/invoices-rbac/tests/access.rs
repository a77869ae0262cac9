//! Who gets what: the owner everything, the clerk reads and writes but cannot void, a
//! request without a token nothing.

use axum::body::Body;
use http::Request;
use tower::ServiceExt;

async fn call(app: &axum::Router, method: &str, uri: &str, token: Option<&str>, body: Option<&str>) -> u16 {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_owned()));
    app.clone().oneshot(request.body(body).unwrap()).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn each_route_answers_403_without_its_permission() {
    let dir = tempfile::tempdir().unwrap();
    let config = saas_core::config::Config {
        data_dir: dir.path().to_owned(),
        auth: saas_core::config::AuthConfig { argon2_memory_kib: 64, argon2_iterations: 1, ..Default::default() },
        ..Default::default()
    };
    let db = saas_core::db::Db::connect(&format!("sqlite://{}/a.db", dir.path().display()), Default::default())
        .await
        .unwrap();
    let (auth, tokens) = example_invoices_rbac::seed(db, &config).await.unwrap();
    let app = example_invoices_rbac::app(&auth);
    let (owner, clerk) = (tokens[0].1.as_str(), tokens[1].1.as_str());

    assert_eq!(call(&app, "POST", "/v1/invoices", Some(clerk), Some(r#"{"amount":1999}"#)).await, 200);
    assert_eq!(call(&app, "GET", "/v1/invoices", Some(clerk), None).await, 200);
    assert_eq!(call(&app, "POST", "/v1/invoices/void-all", Some(clerk), None).await, 403);
    assert_eq!(call(&app, "POST", "/v1/invoices/void-all", Some(owner), None).await, 200);
    for (method, uri) in [("GET", "/v1/invoices"), ("POST", "/v1/invoices"), ("POST", "/v1/invoices/void-all")] {
        assert_eq!(call(&app, method, uri, None, Some(r#"{"amount":1}"#)).await, 401, "{method} {uri}");
    }
    let _ = serde_json::Value::Null;
}
