//! The all-in-one server on Kafka (feature `kafka`): its event schemas registered with a
//! schema registry at start, its events through real topics to its consumers (the audit log,
//! the verification mail), as a client sees it.
#![cfg(feature = "kafka")]

use std::{net::SocketAddr, time::Duration};

use saas_core::config::Config;
use saas_server::App;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

#[tokio::test]
#[ignore = "needs a Kafka broker (SAAS_TEST_KAFKA_URL, default kafka://127.0.0.1:9092): run .ci/run"]
async fn the_server_runs_on_kafka_with_its_event_schemas_registered() {
    let (registry_url, registry) = saas_core::testing::schema_registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_owned(), ..Default::default() };
    config.server.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.rate_limit.enabled = false;
    config.event_bus.url = std::env::var("SAAS_TEST_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:9092".into());
    // Fresh topics and groups for this run.
    let prefix =
        format!("e2e{}.", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    config.event_bus.topic_prefix = prefix.clone();
    config.event_bus.schema_registry_url = Some(SecretString::from(registry_url));

    let listener = tokio::net::TcpListener::bind(config.server.addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = App::build(config).await.unwrap();
    let subjects: Vec<String> = registry.lock().unwrap().subjects.keys().cloned().collect();
    assert_eq!(subjects.len(), saas_server::event_catalog().len(), "{subjects:?}");
    assert!(subjects.contains(&format!("{prefix}tenancy.tenant_provisioned.v1")), "{subjects:?}");
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, stop.clone()));

    let client = reqwest::Client::new();
    let owner = serde_json::json!({"email": "ada@acme.test", "password": "correct horse battery"});
    let signup = serde_json::json!({"slug": "acme", "name": "Acme", "owner": owner});
    let response = client.post(format!("{url}/v1/signup")).json(&signup).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let login = client.post(format!("{url}/v1/auth/login")).header("x-tenant-id", "acme").json(&owner);
    let tokens: serde_json::Value = login.send().await.unwrap().json().await.unwrap();
    let token = tokens["access_token"].as_str().unwrap().to_owned();

    // The events go out through Kafka and come back to the server's consumers.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let report: serde_json::Value =
            client.get(format!("{url}/v1/audit")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        let mailed = std::fs::read_dir(dir.path().join("mail")).map(|d| d.count()).unwrap_or(0);
        if report["entries"].as_i64() >= Some(3) && mailed >= 1 {
            assert_eq!(report["intact"], true, "{report}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events did not come back through Kafka: {report}, {mailed} mails"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entries: serde_json::Value =
        client.get(format!("{url}/v1/audit/entries")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let mut types: Vec<&str> =
        entries["data"].as_array().unwrap().iter().map(|e| e["event"]["type"].as_str().unwrap()).collect();
    // Kafka keeps order within a topic, not across the `tenancy` and `auth` topics.
    types.sort();
    assert_eq!(types, ["auth.user_authenticated.v1", "auth.user_registered.v1", "tenancy.tenant_provisioned.v1"]);
    stop.cancel();
    server.await.unwrap().unwrap();
}
