//! Set-up shared by the saas-auth tests.
#![allow(dead_code)] // each test binary uses part of it

use saas_auth::{principal::Principal, users::User};
use saas_core::config::{AuthConfig, Config};

/// A configuration with data under `dir` and argon2 cheap enough for tests.
pub(crate) fn quick_config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        auth: AuthConfig { argon2_memory_kib: 64, argon2_iterations: 1, ..Default::default() },
        ..Default::default()
    }
}

/// The status `app` answers to `method uri` with `token` as bearer and `body` as JSON.
pub(crate) async fn status(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> u16 {
    use tower::ServiceExt;
    let mut request =
        http::Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map_or_else(axum::body::Body::empty, |b| axum::body::Body::from(b.to_string()));
    app.clone().oneshot(request.body(body).unwrap()).await.unwrap().status().as_u16()
}

/// `user` signed in, as the handlers see it.
pub(crate) fn principal_of(user: &User) -> Principal {
    Principal {
        user: user.id,
        tenant: user.tenant_id,
        session: "".into(),
        roles: user.role_list().into(),
        permissions: std::sync::Arc::new([]),
        api_key: None,
    }
}
