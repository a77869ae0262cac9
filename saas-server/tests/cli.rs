//! The `saas` binary as a user runs it: serve on port 0, probe it, stop it with SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

fn saas() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_saas"));
    // Start from a clean environment: no SAAS_* from the developer's shell.
    for (key, _) in std::env::vars() {
        if key.starts_with("SAAS_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Starts `saas serve` and returns the child, its base URL and its log lines so far.
fn serve(data_dir: &std::path::Path, envs: &[(&str, &str)]) -> (Child, String, mpsc::Receiver<String>) {
    let mut child = saas()
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start saas");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the server logs its URL");
        let json: serde_json::Value = serde_json::from_str(&line).expect("logs are JSON lines");
        if json["fields"]["message"] == "listening" {
            assert_eq!(
                json["fields"]["database"],
                envs.iter().find(|(k, _)| *k == "SAAS_DATABASE_URL").map_or("sqlite", |_| "postgres")
            );
            break json["fields"]["url"].as_str().unwrap().to_owned();
        }
    };
    (child, url, rx)
}

fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

async fn probe(url: &str) {
    let client = reqwest::Client::new();
    let ready = client.get(format!("{url}/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    for component in ["database", "cache", "event_bus"] {
        assert_eq!(body["components"][component]["status"], "up", "{component}: {body}");
    }

    let metrics = client.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    assert!(text.contains("# TYPE http_requests_total counter"), "{text}");
    assert!(text.contains(r#"http_requests_total{method="GET",route="/health/ready",status="200"} 1"#), "{text}");
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"), "{text}");
}

#[tokio::test]
async fn serve_on_embedded_defaults_then_stop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, logs) = serve(dir.path(), &[]);
    probe(&url).await;
    assert!(dir.path().join("saas.db").exists(), "SQLite file under --data-dir");

    terminate(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = logs.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("outbox flushed on shutdown")), "{rest:#?}");
    assert!(rest.iter().any(|l| l.contains("shut down cleanly")), "{rest:#?}");
}

#[tokio::test]
#[ignore = "needs postgres and redis: run .ci/run"]
async fn serve_on_postgres_and_redis() {
    let db = saas_core::testing::TestDatabase::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let redis = saas_core::testing::redis_url();
    let (mut child, url, _logs) = serve(dir.path(), &[("SAAS_DATABASE_URL", &db.url), ("SAAS_CACHE_URL", &redis)]);
    probe(&url).await;
    let body: serde_json::Value = reqwest::get(format!("{url}/health/ready")).await.unwrap().json().await.unwrap();
    assert_eq!(body["components"]["database"]["backend"], "postgres");
    assert_eq!(body["components"]["cache"]["backend"], "redis");
    terminate(&child);
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_invalid_value_fails_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = saas()
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("SAAS_RATE_LIMIT_REQUESTS_PER_SECOND", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rate_limit.requests_per_second"), "{stderr}");

    let file = dir.path().join("saas.toml");
    std::fs::write(&file, "[server]\naddr = \"nowhere\"\n").unwrap();
    let out = saas().args(["config", "check", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.addr"));
}

#[test]
fn config_check_redacts_secrets() {
    let out = saas()
        .args(["config", "check"])
        .env("SAAS_DATABASE_URL", "postgres://app:hunter2@db.internal/saas")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("hunter2") && !stdout.contains("db.internal"), "{stdout}");
    assert!(stdout.contains("[redacted]"), "{stdout}");
    assert!(stdout.contains("[rate_limit]"), "{stdout}");
}

#[test]
fn migrate_applies_then_reports_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let run = || saas().arg("migrate").arg("--data-dir").arg(dir.path()).output().unwrap();
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).contains("applied saas-core/1"));
    let second = run();
    assert!(String::from_utf8_lossy(&second.stdout).contains("database is up to date"));
}

#[test]
fn admin_bootstrap_prints_a_token_once_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let first = saas().args(["admin", "bootstrap", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let token = String::from_utf8(first.stdout).unwrap();
    assert!(token.trim().starts_with("sap_") && token.trim().len() > 40, "{token}");
    assert!(String::from_utf8_lossy(&first.stderr).contains("shown only now"));

    let second = saas().args(["admin", "bootstrap", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(second.stdout.is_empty(), "no second token");
    assert!(String::from_utf8_lossy(&second.stderr).contains("--force"));
    let forced =
        saas().args(["admin", "bootstrap", "--force", "--name", "backup", "--data-dir"]).arg(dir.path()).output();
    assert!(forced.unwrap().status.success());
}

#[test]
fn keys_rotate_makes_a_new_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let rotate = || saas().args(["keys", "rotate", "--data-dir"]).arg(dir.path()).output().unwrap();
    let first = rotate();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let second = rotate();
    let (a, b) = (String::from_utf8(first.stdout).unwrap(), String::from_utf8(second.stdout).unwrap());
    assert!(a.starts_with("new signing key ") && b.starts_with("new signing key ") && a != b, "{a} {b}");
    assert!(dir.path().join("auth-kek").exists(), "the embedded key-encryption key was created");
}

#[test]
fn keys_revoke_removes_a_key_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let rotated = saas().args(["keys", "rotate", "--data-dir"]).arg(dir.path()).output().unwrap();
    let line = String::from_utf8(rotated.stdout).unwrap();
    let kid = line.trim_start_matches("new signing key ").split(':').next().unwrap().to_owned();
    let revoked = saas().args(["keys", "revoke", &kid, "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    assert!(String::from_utf8_lossy(&revoked.stdout).contains(&format!("revoked {kid}")));
    let again = saas().args(["keys", "revoke", &kid, "--data-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no signing key"));
    // Kids are base64url, so one in 64 starts with `-`: it must read as a kid, not a flag.
    let dashed = saas().args(["keys", "revoke", "-V0nsense", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(dashed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dashed.stderr).contains("no signing key -V0nsense"));
}

/// Runs `saas audit …` on `dir`; returns the exit code, stdout and stderr.
fn audit(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = saas().arg("audit").args(args).arg("--data-dir").arg(dir).output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test]
async fn audit_verify_names_the_entry_someone_altered_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    // Admin actions from the command line wait in the outbox until a server relays them.
    let bootstrap = saas().args(["admin", "bootstrap", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(bootstrap.status.success(), "{}", String::from_utf8_lossy(&bootstrap.stderr));
    let (mut child, url, _logs) = serve(dir.path(), &[]);
    let client = reqwest::Client::new();
    let owner = serde_json::json!({"email": "ada@acme.test", "password": "correct horse battery"});
    let signup = serde_json::json!({"slug": "acme", "name": "Acme", "owner": owner});
    let created: serde_json::Value =
        client.post(format!("{url}/v1/signup")).json(&signup).send().await.unwrap().json().await.unwrap();
    let tenant = created["tenant"]["id"].as_str().unwrap().to_owned();
    let login = client.post(format!("{url}/v1/auth/login")).header("x-tenant-id", "acme").json(&owner);
    assert_eq!(login.send().await.unwrap().status(), 200);
    terminate(&child); // drains the outbox and signs the last checkpoints
    assert!(child.wait().unwrap().success());

    let (code, out, err) = audit(dir.path(), &["verify"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("platform: intact, 2 entries"), "token created, signing key created: {out}");
    let line = out.lines().find(|l| l.starts_with(&tenant)).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(": intact, ") && line.contains("latest checkpoint at "), "{line}");

    // Someone with write access to the database rewrites the tenant's second entry.
    let db = saas_core::db::Db::connect(&format!("sqlite://{}/saas.db", dir.path().display()), Default::default())
        .await
        .unwrap();
    let event_id: String = sqlx::query_scalar("SELECT event_id FROM audit_log WHERE tenant_id = $1 AND seq = 2")
        .bind(&tenant)
        .fetch_one(db.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET entry = REPLACE(entry, 'acme', 'evil') WHERE tenant_id = $1 AND seq = 2")
        .bind(&tenant)
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;
    let (code, out, err) = audit(dir.path(), &["verify", "--tenant", &tenant]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains(&format!("{tenant}: BROKEN at entry 2 (event {event_id}, ")), "{out}");
    assert!(err.contains("tampered with"), "{err}");
    let (code, out, _) = audit(dir.path(), &["verify", "--tenant", "platform"]);
    assert_eq!((code, out.starts_with("platform: intact")), (Some(0), true), "{out}");

    let (code, _, err) = audit(dir.path(), &["verify", "--tenant", "acme; DROP TABLE"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--tenant: expected a tenant id"), "{err}");
    let (code, out, _) = audit(dir.path(), &["key"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("key id:") && out.contains("(Ed25519, base64url)"), "{out}");
}
