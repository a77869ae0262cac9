use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::ServiceExt as _;
use saas_auth::{principal::PrincipalTenant, service::Auth};
use saas_core::{
    cache::{self, Cache},
    config::{Config, QuotaStore, RateLimitStore},
    db::{
        Db, PoolSettings,
        migrate::{self, Migrations},
    },
    events::{EventBus, OutboxRelay, Subscription},
    http::{
        HttpStack, IdempotencyLayer, RateLimitLayer,
        rate_limit::{MemoryRateLimiter, Quota, RateLimiter},
    },
    observe::health::{self, Health},
    openapi,
};
use saas_tenancy::{
    PathPrefixStripped, TenantLayer, Tenants,
    admin::PlatformAdmins,
    api::TenancyState,
    feature::Features,
    quota::{QuotaCounter, Quotas, RedisCounter, SqlCounter},
    slug::SlugPolicy,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// Every migration set the all-in-one server applies, in order.
pub static MIGRATIONS: &[&Migrations] =
    &[&saas_core::events::MIGRATIONS, &saas_tenancy::MIGRATIONS, &saas_auth::MIGRATIONS];

/// The all-in-one server: every domain, its stores and workers, behind one HTTP stack.
pub struct App {
    config: Config,
    db: Db,
    cache: Arc<dyn Cache>,
    bus: Arc<dyn EventBus>,
    relay: OutboxRelay,
    subscriptions: Vec<Subscription>,
    tenants: Tenants,
    auth: Auth,
    router: PathPrefixStripped,
    openapi: OpenApi,
}

impl App {
    /// Connects every backend the configuration names, applies migrations and assembles
    /// the routes. Fails with a message naming the backend that cannot be reached.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db_url = config.database_url();
        let db = Db::connect(&db_url, PoolSettings::from(&config.database))
            .await
            .map_err(saas_core::Error::into_cause)
            .context("cannot open the database (database.url)")?;
        migrate_with_owner(&config, &db).await?;
        if let Some(role) = db.role_bypassing_rls().await.map_err(saas_core::Error::into_cause)? {
            tracing::warn!(
                role,
                "the database role bypasses row-level security, so tenant isolation rests on the stores alone; \
                 connect as a NOSUPERUSER NOBYPASSRLS role that owns no table (see the operations chapter)"
            );
        }
        let cache = cache::connect(&config.cache_url(), config.cache.max_entries)
            .await
            .map_err(saas_core::Error::into_cause)
            .context("cannot connect to the cache (cache.url)")?;
        let bus = saas_core::events::connect(&config.event_bus)
            .await
            .map_err(saas_core::Error::into_cause)
            .context("cannot connect to the event bus (event_bus.url)")?;
        #[cfg(feature = "kafka")]
        if let Some(url) = &config.event_bus.schema_registry_url {
            let registry = saas_core::events::SchemaRegistry::new(secrecy::ExposeSecret::expose_secret(url))
                .map_err(saas_core::Error::into_cause)?;
            let registered = registry
                .publish(&event_catalog(), &config.event_bus.topic_prefix)
                .await
                .map_err(saas_core::Error::into_cause)
                .context("cannot register the event schemas (event_bus.schema_registry_url)")?;
            tracing::info!(schemas = registered.len(), "event schemas registered with the schema registry");
        }
        let relay = OutboxRelay::new(db.clone(), bus.clone())
            .with_batch_size(config.outbox.batch_size)
            .with_poll_interval(Duration::from_millis(config.outbox.poll_interval_ms));

        let health = {
            let (db, cache, bus) = (db.clone(), cache.clone(), bus.clone());
            Health::new()
                .component("database", db.backend().name(), move || {
                    let db = db.clone();
                    async move { db.ping().await }
                })
                .component("cache", cache.name(), move || {
                    let cache = cache.clone();
                    async move { cache.ping().await }
                })
                .component("event_bus", bus.name(), move || {
                    let bus = bus.clone();
                    async move { bus.ping().await }
                })
        };

        let tenants = Tenants::new(db.clone(), cache.clone())
            .with_slug_policy(SlugPolicy::new(config.tenancy.reserved_slugs.iter().cloned()))
            .with_cache_ttl(Duration::from_secs(config.tenancy.cache_ttl_secs));
        let counter: Arc<dyn QuotaCounter> = match config.tenancy.quota_store {
            QuotaStore::Sql => Arc::new(SqlCounter::new(db.clone())),
            QuotaStore::Redis => Arc::new(
                RedisCounter::connect(&config.cache_url())
                    .await
                    .map_err(saas_core::Error::into_cause)
                    .context("cannot connect the quota store to Redis (cache.url)")?,
            ),
        };
        let auth = Auth::from_config(db.clone(), cache.clone(), &config)
            .await
            .map_err(saas_core::Error::into_cause)
            .context("cannot start saas-auth (token signing keys, session store)")?;
        let admins = PlatformAdmins::new(db.clone(), config.tenancy.platform_admin_token.as_ref());
        let tenancy = TenancyState {
            tenants: tenants.clone(),
            admins: admins.clone(),
            owners: Some(auth.owner_registrar()),
            quotas: Quotas::new(db.clone(), &config.tenancy, counter.clone()),
            features: Features::new(db.clone(), &config.tenancy),
            members: Some(Arc::new(PrincipalTenant)),
        };
        let mut subscriptions = vec![
            saas_tenancy::purge::erase_tenancy_rows(&bus, db.clone(), counter.clone())
                .await
                .map_err(saas_core::Error::into_cause)
                .context("cannot subscribe to tenant deletions")?,
            saas_auth::service::erase_auth_rows(&bus, &auth)
                .await
                .map_err(saas_core::Error::into_cause)
                .context("cannot subscribe to tenant deletions")?,
        ];
        if config.audit.enabled {
            subscriptions.push(
                auth.audit()
                    .record(&bus)
                    .await
                    .map_err(saas_core::Error::into_cause)
                    .context("cannot subscribe the audit log to the event bus")?,
            );
        }
        if config.auth.send_verification_on_signup {
            subscriptions.push(
                auth.send_verification_on_registration(&bus)
                    .await
                    .map_err(saas_core::Error::into_cause)
                    .context("cannot subscribe to user registrations")?,
            );
        }

        let (routes, openapi) =
            OpenApiRouter::with_openapi(openapi::base_document("saas-rs", env!("CARGO_PKG_VERSION")))
                .merge(health::router(health))
                .merge(saas_tenancy::api::router(tenancy))
                .merge(saas_auth::api::router(auth.clone(), admins.clone()))
                .split_for_parts();
        // In this order: the token is verified, then the tenant resolved (its `token` source
        // is the verified principal's tenant).
        let mut stack = HttpStack::new()
            .routes(openapi::route_templates(&openapi))
            .guard(auth.layer())
            .guard(
                TenantLayer::new(tenants.clone(), &config.tenancy.resolution, config.tenancy.base_domain.as_deref())
                    .with_token(Arc::new(PrincipalTenant)),
            )
            .body_limit(config.http.body_limit_bytes)
            .timeout(Duration::from_secs(config.http.request_timeout_secs))
            .idempotency(
                IdempotencyLayer::new(cache.clone(), Duration::from_secs(config.idempotency.ttl_secs))
                    // Login answers hold access tokens, which must not sit in the cache.
                    .skip(|req| req.uri().path().starts_with("/v1/auth/"))
                    // Sign-up bodies hold passwords: fingerprint them under a server secret.
                    .with_fingerprint_key(&auth.keys().fingerprint_secret()),
            );
        if config.rate_limit.enabled {
            let limiter: Arc<dyn RateLimiter> = match config.rate_limit_store() {
                RateLimitStore::Memory => Arc::new(MemoryRateLimiter::new()),
                RateLimitStore::Redis => Arc::new(
                    saas_core::http::rate_limit::RedisRateLimiter::connect(&config.cache_url())
                        .await
                        .map_err(saas_core::Error::into_cause)
                        .context("cannot connect the rate limiter to Redis (cache.url)")?,
                ),
            };
            let quota = Quota::per_second(config.rate_limit.requests_per_second).burst(config.rate_limit.burst);
            // Probes and scrapers poll from one address; they must never be throttled.
            let layer = RateLimitLayer::new(limiter, quota).skip(|req| {
                let path = req.uri().path();
                path.starts_with("/health/") || path == "/metrics"
            });
            stack = stack.rate_limit(layer);
        }
        let router = saas_tenancy::strip_path_prefix(stack.apply(openapi::serve_docs(routes, openapi.clone())));
        Ok(Self { config, db, cache, bus, relay, subscriptions, tenants, auth, router, openapi })
    }

    /// The OpenAPI document of every served route.
    pub fn openapi(&self) -> &OpenApi {
        &self.openapi
    }

    /// The database handle.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The event bus.
    pub fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    /// The cache.
    pub fn cache(&self) -> Arc<dyn Cache> {
        self.cache.clone()
    }

    /// The tenant lifecycle.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// Identity: logins, users, tokens and signing keys.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The outbox relay (runs inside [`serve`](Self::serve)).
    pub fn relay(&self) -> &OutboxRelay {
        &self.relay
    }

    /// The complete service (the router behind the `/t/{tenant}` prefix), for tests that
    /// call it without a socket.
    pub fn router(&self) -> PathPrefixStripped {
        self.router.clone()
    }

    /// Serves on `listener` until `shutdown` is cancelled, then stops accepting, lets
    /// in-flight requests finish (up to `server.shutdown_grace_secs`), flushes the outbox
    /// and closes the database.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        tracing::info!(
            url = format!("http://{addr}"),
            database = self.db.backend().name(),
            cache = self.cache.name(),
            event_bus = self.bus.name(),
            "listening"
        );
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(self.relay.clone().run(relay_stop.clone()));
        let keys = self.auth.keys().clone();
        let rotation = tokio::spawn(async move {
            // Picks up keys other servers made or revoked, and rotates when due.
            let mut every = tokio::time::interval(keys.reload_interval());
            loop {
                every.tick().await;
                if let Err(e) = keys.rotate_if_due().await {
                    tracing::error!(error = %e.into_cause(), "cannot rotate the token signing key");
                }
            }
        });

        let checkpoints_stop = CancellationToken::new();
        let checkpoints = self.config.audit.enabled.then(|| {
            let every = Duration::from_secs(self.config.audit.checkpoint_interval_secs);
            tokio::spawn(self.auth.audit().clone().run_checkpoints(every, checkpoints_stop.clone()))
        });

        let server = axum::serve(listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let grace = Duration::from_secs(self.config.server.shutdown_grace_secs);
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = &mut server => result?,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; stopping anyway");
            }
        }
        tracing::info!("HTTP server stopped; flushing the outbox");
        relay_stop.cancel();
        relay.await?;
        rotation.abort();
        for subscription in self.subscriptions {
            subscription.stop().await;
        }
        // Signs what the consumers appended last.
        checkpoints_stop.cancel();
        if let Some(checkpoints) = checkpoints {
            checkpoints.await?;
        }
        self.db.close().await;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

use std::future::IntoFuture;

/// The events this server publishes, with their JSON Schemas.
pub fn event_catalog() -> Vec<saas_core::events::EventSchema> {
    [saas_tenancy::events::catalog(), saas_auth::events::catalog()].concat()
}

/// Applies [`MIGRATIONS`] as `database.migrate_url` when set (the tables' owner), else on `db`.
pub async fn migrate_with_owner(config: &Config, db: &Db) -> anyhow::Result<Vec<migrate::Applied>> {
    let owner = match &config.database.migrate_url {
        None => None,
        Some(_) => Some(
            Db::connect(
                &config.migrate_url(),
                PoolSettings { max_connections: 1, ..PoolSettings::from(&config.database) },
            )
            .await
            .map_err(saas_core::Error::into_cause)
            .context("cannot open the database (database.migrate_url)")?,
        ),
    };
    let applied = migrate::run(owner.as_ref().unwrap_or(db), MIGRATIONS)
        .await
        .map_err(saas_core::Error::into_cause)
        .context("cannot migrate the database");
    if let Some(owner) = owner {
        owner.close().await;
    }
    applied
}
