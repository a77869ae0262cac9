//! [`TenantRouter`]: which database (and schema) a tenant's rows live in.
//!
//! Every tenant starts in the shared database. A large tenant can be placed
//!
//! - in a **schema** of its own in the shared PostgreSQL database (`tenant_<id>`): the
//!   router creates the schema, applies the tenant-owned tables' migrations in it, and
//!   serves the tenant from a small pool whose `search_path` is that schema;
//! - in a **shard**: another database, named in `[tenancy.shards]`, with a pool of its own.
//!
//! Place a tenant before it has rows in the tenant-owned tables: rows already written
//! stay where they are (moving them is not automated yet). After adding migrations, call
//! [`TenantRouter::migrate_placements`] at start-up so every schema and shard gets them; purge
//! deleted tenants with [`TenantRouter::on_tenant_deleted`], which erases in every place.
//!
//! ```no_run
//! # async fn demo(router: saas_tenancy::routing::TenantRouter, tenant: saas_core::id::TenantId) -> saas_core::Result<()> {
//! router.place_in_schema(tenant).await?;
//! let mut tx = router.tenant_tx(tenant).await?;   // runs in the tenant's schema
//! # Ok(()) }
//! ```

use std::{collections::HashMap, sync::Arc};

use saas_core::{
    db::{Backend, Db, PoolSettings, TenantTx, migrate, migrate::Migrations, now_millis},
    error::{Error, Result},
    id::TenantId,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::RwLock;

/// Where a tenant's rows live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The shared database (the default).
    Shared,
    /// A schema of its own in the shared PostgreSQL database.
    Schema(String),
    /// A shard: a database of `[tenancy.shards]`, by name.
    Shard(String),
}

/// Maps tenants to databases; see the [module docs](self).
#[derive(Clone)]
pub struct TenantRouter {
    shared: Db,
    shared_url: Arc<SecretString>,
    owner_url: Option<Arc<SecretString>>,
    shards: Arc<HashMap<String, SecretString>>,
    /// Migrations of the tenant-owned tables, applied in every schema and shard.
    migrations: &'static [&'static Migrations],
    pools: Arc<RwLock<HashMap<String, Db>>>,
    placements: Arc<RwLock<HashMap<TenantId, Placement>>>,
}

impl TenantRouter {
    /// Routes between `shared` (reachable at `shared_url`) and `shards`; schemas and shards
    /// get `migrations` (your tenant-owned tables).
    pub fn new(
        shared: Db,
        shared_url: SecretString,
        shards: impl IntoIterator<Item = (String, SecretString)>,
        migrations: &'static [&'static Migrations],
    ) -> Self {
        Self {
            shared,
            shared_url: Arc::new(shared_url),
            owner_url: None,
            shards: Arc::new(shards.into_iter().collect()),
            migrations,
            pools: Default::default(),
            placements: Default::default(),
        }
    }

    /// Creates schemas and their tables as `owner_url` (`database.migrate_url`, the tables'
    /// owner) instead of the serving role, then grants the serving role the use of them.
    pub fn with_owner_url(mut self, owner_url: SecretString) -> Self {
        self.owner_url = Some(Arc::new(owner_url));
        self
    }

    /// The router a server configuration describes: `database.url` shared,
    /// `database.migrate_url` for schema DDL, `[tenancy.shards]`.
    pub fn from_config(
        shared: Db,
        config: &saas_core::config::Config,
        migrations: &'static [&'static Migrations],
    ) -> Self {
        Self::new(shared, SecretString::from(config.database_url()), config.tenancy.shards.clone(), migrations)
            .with_owner_url(SecretString::from(config.migrate_url()))
    }

    /// Where `tenant`'s rows live. A placement in a schema or shard is permanent and cached;
    /// "shared" is read every time, so a placement made by another server is seen at once.
    pub async fn placement(&self, tenant: TenantId) -> Result<Placement> {
        if let Some(placement) = self.placements.read().await.get(&tenant) {
            return Ok(placement.clone());
        }
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT kind, target FROM tenant_placements WHERE tenant_id = $1")
                .bind(tenant.to_string())
                .fetch_optional(self.shared.pool())
                .await?;
        let Some((kind, target)) = row else { return Ok(Placement::Shared) };
        let placement = placement_of(&kind, &target);
        self.placements.write().await.insert(tenant, placement.clone());
        Ok(placement)
    }

    /// The pool `tenant`'s rows are in.
    pub async fn db(&self, tenant: TenantId) -> Result<Db> {
        match self.placement(tenant).await? {
            Placement::Shared => Ok(self.shared.clone()),
            Placement::Schema(schema) => self.pool(&format!("schema:{schema}"), || self.schema_url(&schema)).await,
            Placement::Shard(name) => self.pool(&format!("shard:{name}"), || self.shard_url(&name)).await,
        }
    }

    /// A transaction bound to `tenant`, in the database (and schema) it is placed in.
    pub async fn tenant_tx(&self, tenant: TenantId) -> Result<TenantTx> {
        self.db(tenant).await?.tenant_tx(tenant).await
    }

    /// Gives `tenant` a schema of its own (PostgreSQL only), with the tenant-owned tables.
    pub async fn place_in_schema(&self, tenant: TenantId) -> Result<String> {
        if self.shared.backend() != Backend::Postgres {
            return Err(Error::bad_request("schemas_unsupported", "schema-per-tenant needs PostgreSQL"));
        }
        // The id is `ten_` and 26 lowercase base32 characters: a safe identifier as is.
        let schema = format!("tenant_{}", &tenant.to_string()[4..]);
        let owner_url = self.owner_url.as_deref().unwrap_or(&self.shared_url).expose_secret();
        let owner = Db::connect(owner_url, PoolSettings { max_connections: 1, ..Default::default() }).await?;
        let created = self.create_schema(&owner, &schema).await;
        owner.close().await;
        created?;
        self.record(tenant, "schema", &schema).await?;
        self.placements.write().await.insert(tenant, Placement::Schema(schema.clone()));
        Ok(schema)
    }

    /// Places `tenant` in shard `name` of `[tenancy.shards]`, with the tenant-owned tables.
    pub async fn place_in_shard(&self, tenant: TenantId, name: &str) -> Result<()> {
        let url = self.shard_url(name)?;
        self.migrate(&url).await?;
        self.record(tenant, "shard", name).await?;
        self.placements.write().await.insert(tenant, Placement::Shard(name.to_owned()));
        Ok(())
    }

    /// Applies the tenant-owned tables' migrations to every schema and shard tenants are
    /// placed in; call it at start-up after adding migrations. Returns how many it visited.
    pub async fn migrate_placements(&self) -> Result<usize> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT DISTINCT kind, target FROM tenant_placements").fetch_all(self.shared.pool()).await?;
        let owner_url = self.owner_url.as_deref().unwrap_or(&self.shared_url).expose_secret().to_owned();
        for (kind, target) in &rows {
            match placement_of(kind, target) {
                Placement::Schema(schema) => {
                    let owner =
                        Db::connect(&owner_url, PoolSettings { max_connections: 1, ..Default::default() }).await?;
                    let done = self.create_schema(&owner, &schema).await;
                    owner.close().await;
                    done?;
                }
                Placement::Shard(name) => self.migrate(&self.shard_url(&name)?).await?,
                Placement::Shared => {}
            }
        }
        Ok(rows.len())
    }

    /// Runs `erase` for a deleted tenant where its rows are: in its schema or shard, then
    /// in the shared database (rows written before the placement). Subscribes like
    /// [`purge::on_tenant_deleted`](crate::purge::on_tenant_deleted), which it extends.
    pub async fn on_tenant_deleted<F>(
        &self,
        bus: &Arc<dyn saas_core::events::EventBus>,
        domain: &str,
        erase: F,
    ) -> Result<saas_core::events::Subscription>
    where
        F: for<'c> Fn(&'c mut sqlx::AnyConnection, TenantId) -> futures::future::BoxFuture<'c, Result<()>>
            + Send
            + Sync
            + 'static,
    {
        let erase = Arc::new(erase);
        let router = self.clone();
        crate::purge::on_tenant_deleted(bus, self.shared.clone(), domain, move |conn, tenant| {
            let (router, erase) = (router.clone(), erase.clone());
            Box::pin(async move {
                if router.placement(tenant).await? != Placement::Shared {
                    // Erasing is idempotent, so doing it before the shared transaction
                    // commits is safe even if that transaction then fails and is retried.
                    let mut placed = router.tenant_tx(tenant).await?;
                    erase(&mut placed, tenant).await?;
                    placed.commit().await?;
                }
                erase(conn, tenant).await
            })
        })
        .await
    }

    async fn create_schema(&self, owner: &Db, schema: &str) -> Result<()> {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(owner.pool()).await?;
        let owner_url = self.owner_url.as_deref().unwrap_or(&self.shared_url).expose_secret();
        self.migrate(&with_search_path(owner_url, schema)).await?;
        let serving: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(self.shared.pool()).await?;
        let owning: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(owner.pool()).await?;
        if serving != owning {
            for grant in [
                format!("GRANT USAGE ON SCHEMA {schema} TO \"{serving}\""),
                format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO \"{serving}\""),
                format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO \"{serving}\""),
            ] {
                sqlx::query(&grant).execute(owner.pool()).await?;
            }
        }
        Ok(())
    }

    async fn migrate(&self, url: &str) -> Result<()> {
        let db = Db::connect(url, PoolSettings { max_connections: 1, ..Default::default() }).await?;
        let applied = migrate::run(&db, self.migrations).await;
        db.close().await;
        applied.map(drop)
    }

    async fn record(&self, tenant: TenantId, kind: &str, target: &str) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO tenant_placements (tenant_id, kind, target, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant.to_string())
        .bind(kind)
        .bind(target)
        .bind(now_millis())
        .execute(self.shared.pool())
        .await?;
        if done.rows_affected() == 0 && self.placement(tenant).await? != placement_of(kind, target) {
            return Err(Error::conflict("tenant_already_placed", "the tenant is placed elsewhere already"));
        }
        Ok(())
    }

    async fn pool(&self, key: &str, url: impl FnOnce() -> Result<String>) -> Result<Db> {
        if let Some(db) = self.pools.read().await.get(key) {
            return Ok(db.clone());
        }
        let mut pools = self.pools.write().await;
        if let Some(db) = pools.get(key) {
            return Ok(db.clone());
        }
        let db = Db::connect(&url()?, PoolSettings { max_connections: 4, ..Default::default() }).await?;
        pools.insert(key.to_owned(), db.clone());
        Ok(db)
    }

    fn schema_url(&self, schema: &str) -> Result<String> {
        Ok(with_search_path(self.shared_url.expose_secret(), schema))
    }

    fn shard_url(&self, name: &str) -> Result<String> {
        self.shards.get(name).map(|url| url.expose_secret().to_owned()).ok_or_else(|| {
            Error::not_found("shard_not_found", format!("there is no shard `{name}` in [tenancy.shards]"))
        })
    }
}

/// `url` with connections whose `search_path` is only `schema`: a table missing there is an
/// error, never a silent fall-back to the shared `public` one.
fn with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options[search_path]={schema}")
}

fn placement_of(kind: &str, target: &str) -> Placement {
    match kind {
        "schema" => Placement::Schema(target.to_owned()),
        _ => Placement::Shard(target.to_owned()),
    }
}
