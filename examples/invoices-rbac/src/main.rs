//! Serves the example on 127.0.0.1:3001 with one tenant and two users, `owner@acme.test`
//! (owner) and `clerk@acme.test` (custom role `clerk`: `invoices:read`, `invoices:write`),
//! and prints a token for each:
//!
//! ```text
//! cargo run -p example-invoices-rbac
//! curl -H "Authorization: Bearer $CLERK" -H 'content-type: application/json' -d '{"amount":1999}' localhost:3001/v1/invoices
//! curl -X POST -H "Authorization: Bearer $CLERK" localhost:3001/v1/invoices/void-all   # 403: clerks cannot void
//! curl -X POST -H "Authorization: Bearer $OWNER" localhost:3001/v1/invoices/void-all   # voided
//! ```

use saas_core::{config::Config, db::Db};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let config = Config { data_dir: dir.clone(), ..Default::default() };
    let db = Db::connect(&format!("sqlite://{}/app.db", dir.display()), Default::default())
        .await
        .map_err(saas_core::Error::into_cause)?;
    let (auth, tokens) = example_invoices_rbac::seed(db, &config).await.map_err(saas_core::Error::into_cause)?;
    for (name, token) in tokens {
        println!("{name}={token}");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    axum::serve(listener, example_invoices_rbac::app(&auth)).await?;
    Ok(())
}

/// A fresh data directory per run: the example starts from nothing each time.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("invoices-rbac-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
