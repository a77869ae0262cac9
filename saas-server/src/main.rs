//! `saas`: the all-in-one saas-rs server and its admin commands.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use saas_core::cache::MemoryCache;
use saas_core::{config::Config, db, observe};
use tokio_util::sync::CancellationToken;

/// The all-in-one saas-rs server.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (default: the file `SAAS_CONFIG` names, else ./saas.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Directory for embedded data (overrides `data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default command).
    Serve {
        /// Address to listen on (overrides `server.addr`), e.g. 0.0.0.0:8080.
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Platform administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Access-token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every chain (or one tenant's) from its first entry; exits 1 when one is broken,
    /// naming its first altered or missing entry.
    Verify {
        /// Only this tenant's chain: its id (`ten_…`), or `platform`.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Print the id and public key (Ed25519, base64url) that sign the checkpoints.
    Key,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a new signing key; it signs from the next reload (1 min), older keys keep
    /// verifying until their tokens expire.
    Rotate,
    /// Remove a signing key at once (a key that may have leaked): its tokens stop verifying
    /// on every server within a minute.
    Revoke {
        /// The key's `kid`, as in `/.well-known/jwks.json`. A kid may start with `-`
        /// (it is base64url), so it is taken as a value, not as a flag.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create the first platform-admin token and print it once (only its hash is stored).
    Bootstrap {
        /// A name for the token, e.g. who holds it.
        #[arg(long, default_value = "bootstrap")]
        name: String,
        /// Create another token even if one exists already.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate and print the effective configuration, secrets redacted.
    Check,
}

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    let mut config = Config::load(cli.config.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match load(&cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match cli.command.unwrap_or(Command::Serve { addr: None }) {
        Command::Serve { addr } => {
            if let Some(addr) = addr {
                config.server.addr = addr;
            }
            observe::init_tracing(&config.log);
            serve(config).await
        }
        Command::Migrate => {
            observe::init_tracing(&config.log);
            migrate(config).await
        }
        // No log subscriber: logs go to stdout, which carries only the token here.
        Command::Admin { command: AdminCommand::Bootstrap { name, force } } => bootstrap(config, &name, force).await,
        Command::Keys { command } => keys(config, command).await,
        Command::Audit { command } => audit(config, command).await,
        Command::Config { command: ConfigCommand::Check } => {
            print!("{}", config.to_redacted_toml());
            eprintln!("configuration is valid");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.server.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (server.addr): {e}", config.server.addr))?;
    let app = saas_server::App::build(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    app.serve(listener, shutdown).await
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested; draining in-flight requests");
    shutdown.cancel();
}

async fn connect(config: &Config) -> anyhow::Result<db::Db> {
    db::Db::connect(&config.database_url(), db::PoolSettings::from(&config.database))
        .await
        .map_err(saas_core::Error::into_cause)
        .context("cannot open the database (database.url)")
}

async fn bootstrap(config: Config, name: &str, force: bool) -> anyhow::Result<()> {
    let database = connect(&config).await?;
    saas_server::migrate_with_owner(&config, &database).await?;
    let admins = saas_tenancy::admin::PlatformAdmins::new(database.clone(), None);
    let token = admins.bootstrap(name, force).await.map_err(|e| {
        if e.status().is_server_error() { e.into_cause() } else { anyhow::anyhow!("{}", e.detail().to_owned()) }
    })?;
    eprintln!("platform-admin token `{name}` created; it is shown only now, store it safely:");
    println!("{}", secrecy::ExposeSecret::expose_secret(&token));
    database.close().await;
    Ok(())
}

async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let database = connect(&config).await?;
    saas_server::migrate_with_owner(&config, &database).await?;
    let auth = saas_auth::service::Auth::from_config(database.clone(), Arc::new(MemoryCache::new(10)), &config)
        .await
        .map_err(saas_core::Error::into_cause)?;
    let result = match command {
        KeysCommand::Rotate => auth.keys().rotate().await.map(|kid| {
            println!("new signing key {kid}: it signs from the servers' next reload, within a minute");
        }),
        KeysCommand::Revoke { kid } => match auth.keys().revoke(&kid).await {
            Ok(true) => {
                println!("revoked {kid}: its tokens stop verifying on every server within a minute");
                Ok(())
            }
            Ok(false) => {
                Err(saas_core::Error::internal(anyhow::anyhow!("no signing key {kid} (or it is revoked already)")))
            }
            Err(e) => Err(e),
        },
    };
    database.close().await;
    result.map_err(saas_core::Error::into_cause)
}

async fn audit(config: Config, command: AuditCommand) -> anyhow::Result<()> {
    let chain = match &command {
        AuditCommand::Verify { tenant: Some(t) } => Some(
            saas_auth::audit::chain_of(t)
                .ok_or_else(|| anyhow::anyhow!("--tenant: expected a tenant id (`ten_…`) or `platform`, got `{t}`"))?,
        ),
        _ => None,
    };
    // Read-only: no migration, no key made or rotated.
    let key =
        saas_auth::keys::KeyEncryptionKey::from_config(&config).map_err(saas_core::Error::into_cause)?.audit_key();
    let database = connect(&config).await?;
    let log = &saas_auth::audit::AuditLog::new(database.clone(), key);
    let result = match command {
        AuditCommand::Key => {
            println!("key id:     {}", log.key().id());
            println!("public key: {} (Ed25519, base64url)", log.key().public_key());
            Ok(true)
        }
        AuditCommand::Verify { .. } => verify_chains(log, chain).await,
    };
    database.close().await;
    match result.map_err(saas_core::Error::into_cause)? {
        true => Ok(()),
        false => Err(anyhow::anyhow!("the audit log has been tampered with (see above)")),
    }
}

/// Verifies one chain (`Some`) or all; prints a line per chain; `false` when one is broken.
async fn verify_chains(
    log: &saas_auth::audit::AuditLog,
    only: Option<Option<saas_core::id::TenantId>>,
) -> saas_core::error::Result<bool> {
    let mut intact = true;
    let chains = match only {
        Some(chain) => vec![chain],
        None => {
            let names = log.chains().await?;
            eprintln!("verifying {} chain(s) with audit key {}", names.len(), log.key().id());
            let mut chains = Vec::with_capacity(names.len());
            for name in names {
                match saas_auth::audit::chain_of(&name) {
                    Some(chain) => chains.push(chain),
                    None => {
                        intact = false;
                        println!("{name}: BROKEN: a chain that names no tenant (rows written outside the server)");
                    }
                }
            }
            chains
        }
    };
    for chain in chains {
        let report = log.verify(chain).await?;
        let checkpoint = report
            .latest_checkpoint
            .as_ref()
            .map_or("no checkpoint yet".to_owned(), |c| format!("latest checkpoint at {} hash {}", c.seq, c.hash));
        match &report.breach {
            None => println!("{}: intact, {} entries, {checkpoint}", report.chain, report.entries),
            Some(breach) => {
                intact = false;
                let event = match (&breach.event_id, &breach.event_type) {
                    (Some(id), Some(kind)) => format!(" (event {id}, {kind})"),
                    _ => String::new(),
                };
                println!("{}: BROKEN at entry {}{event}: {}", report.chain, breach.seq, breach.reason);
            }
        }
    }
    Ok(intact)
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let database = connect(&config).await?;
    let applied = saas_server::migrate_with_owner(&config, &database).await?;
    if applied.is_empty() {
        println!("database is up to date ({})", database.backend().name());
    }
    for m in applied {
        println!("applied {}/{} {}", m.component, m.version, m.name);
    }
    Ok(())
}
