//! [`Tenants`]: the tenant lifecycle, with every change and its event in one transaction.

use std::{sync::Arc, time::Duration};

use saas_core::{
    cache::{Cache, CacheExt, LocalCache},
    db::Db,
    error::{Error, FieldError, Result},
    events::{Envelope, outbox},
    id::TenantId,
    page::{Page, PageQuery},
    tenant::TenantContext,
};
use serde::Deserialize;
use sqlx::AnyConnection;

use crate::{
    events::{TenantDeleted, TenantProvisioned, TenantReactivated, TenantSuspended, TenantUpdated},
    slug::SlugPolicy,
    store,
    tenant::{Tenant, TenantRef, TenantStatus},
};

/// The plan of a tenant provisioned without one.
pub const DEFAULT_PLAN: &str = "free";

/// What provisioning needs.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Unique slug: 3 to 63 of `a-z`, `0-9`, `-`, starting with a letter; not reserved.
    #[schema(example = "acme")]
    pub slug: String,
    /// Display name, 1 to 200 characters.
    #[schema(example = "Acme Corporation")]
    pub name: String,
    /// Plan (default `free`).
    #[serde(default)]
    pub plan: Option<String>,
}

/// A partial update; absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New plan.
    #[serde(default)]
    pub plan: Option<String>,
}

/// The tenant lifecycle: provision, read, list, update, suspend, reactivate, delete.
///
/// Every change writes its [event](crate::events) to the outbox in the same transaction and
/// drops the tenant's entries from the resolution cache.
///
/// ```no_run
/// # async fn demo(db: saas_core::db::Db, cache: std::sync::Arc<dyn saas_core::cache::Cache>) -> saas_core::Result<()> {
/// use saas_tenancy::{NewTenant, Tenants};
///
/// let tenants = Tenants::new(db, cache);
/// let acme = tenants.provision(NewTenant { slug: "acme".into(), name: "Acme".into(), plan: None }).await?;
/// tenants.suspend(acme.id, "unpaid invoice").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tenants {
    db: Db,
    cache: Arc<dyn Cache>,
    /// Resolved tenants as values, for [`LOCAL_TTL`]: most requests resolve their tenant
    /// here, without decoding it from `cache`.
    // Shared: a hit hands out the tenant without copying its strings.
    local: Arc<LocalCache<TenantRef, Resolved>>,
    slugs: SlugPolicy,
    cache_ttl: Duration,
}

/// A tenant as resolution hands it out: the record, and the context every request of the
/// tenant carries, made once (cloning either is a few reference counts).
#[derive(Clone)]
pub(crate) struct Resolved {
    pub(crate) tenant: Arc<Tenant>,
    pub(crate) context: TenantContext,
}

impl From<Tenant> for Resolved {
    fn from(tenant: Tenant) -> Self {
        Self { context: tenant.context(), tenant: Arc::new(tenant) }
    }
}

/// How long each server keeps a resolved tenant in memory, in front of the cache: a change
/// made on another server reaches this one at most this much later than the shared cache.
pub const LOCAL_TTL: Duration = Duration::from_secs(1);

impl Tenants {
    /// Tenants stored in `db`, resolved tenants cached in `cache` for 30 s (and in this
    /// process for [`LOCAL_TTL`]).
    pub fn new(db: Db, cache: Arc<dyn Cache>) -> Self {
        let local = Arc::new(LocalCache::new(10_000, LOCAL_TTL));
        Self { db, cache, local, slugs: SlugPolicy::default(), cache_ttl: Duration::from_secs(30) }
    }

    /// Uses `policy` for slugs (extra reserved names).
    pub fn with_slug_policy(mut self, policy: SlugPolicy) -> Self {
        self.slugs = policy;
        self
    }

    /// Caches resolved tenants for `ttl`.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The slug policy (reserved names).
    pub fn slug_policy(&self) -> &SlugPolicy {
        &self.slugs
    }

    /// The database the tenants live in.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Provisions a tenant in a transaction of its own.
    pub async fn provision(&self, new: NewTenant) -> Result<Tenant> {
        let mut tx = self.db.begin().await?;
        let tenant = self.provision_in(&mut tx, new, "admin").await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Provisions a tenant inside the caller's transaction (sign-up creates the owner in
    /// the same one). `via` is recorded in the event (`signup`, `admin`).
    pub async fn provision_in(&self, conn: &mut AnyConnection, new: NewTenant, via: &str) -> Result<Tenant> {
        let mut errors = Vec::new();
        let slug = self.slugs.parse("slug", &new.slug).map_err(|e| errors.extend_from_slice(e.field_errors())).ok();
        let name = valid_name(&new.name).map_err(|e| errors.push(e)).ok();
        let plan = valid_plan(new.plan.as_deref().unwrap_or(DEFAULT_PLAN)).map_err(|e| errors.push(e)).ok();
        let (Some(slug), Some(name), Some(plan)) = (slug, name, plan) else { return Err(Error::validation(errors)) };
        let now = store::now();
        let tenant = Tenant {
            id: TenantId::new(),
            slug: slug.to_string(),
            name,
            plan,
            status: TenantStatus::Active,
            suspended_reason: None,
            created_at: now,
            updated_at: now,
        };
        store::insert(conn, &tenant).await?;
        let event = TenantProvisioned {
            tenant_id: tenant.id,
            slug: tenant.slug.clone(),
            name: tenant.name.clone(),
            plan: tenant.plan.clone(),
            via: via.to_owned(),
        };
        outbox::append(conn, &Envelope::of(&event)?).await?;
        Ok(tenant)
    }

    /// The tenant with `id`; 404 `tenant_not_found` when there is none or it was deleted.
    pub async fn get(&self, id: TenantId) -> Result<Tenant> {
        let mut conn = self.db.pool().acquire().await?;
        match store::find(&mut conn, &TenantRef::Id(id)).await? {
            Some(t) if t.status != TenantStatus::Deleted => Ok(t),
            _ => Err(not_found()),
        }
    }

    /// The tenant `by` names, in any status, read through the resolution cache.
    pub async fn resolve(&self, by: &TenantRef) -> Result<Option<Tenant>> {
        Ok(self.resolve_shared(by).await?.map(|resolved| Arc::unwrap_or_clone(resolved.tenant)))
    }

    /// [`resolve`](Self::resolve), shared with the resolution cache: what tenant resolution
    /// runs on every request.
    pub(crate) async fn resolve_shared(&self, by: &TenantRef) -> Result<Option<Resolved>> {
        if let Some(resolved) = self.local.get(by) {
            return Ok(Some(resolved));
        }
        let key = cache_key(by);
        if let Some(tenant) = self.cache.get_json::<Tenant>(&key).await? {
            let resolved = Resolved::from(tenant);
            self.local.insert(by.clone(), resolved.clone());
            return Ok(Some(resolved));
        }
        let mut conn = self.db.pool().acquire().await?;
        let found = store::find(&mut conn, by).await?;
        if let Some(tenant) = &found {
            // Only if absent: a change committed since our read has written the newer
            // tenant, which a stale copy must not replace.
            let bytes = serde_json::to_vec(tenant).map_err(Error::internal)?;
            self.cache.set_if_absent(&key, &bytes, self.cache_ttl).await?;
        }
        Ok(found.map(Resolved::from))
    }

    /// The tenant `by` names when the in-process cache holds it (checked at the request's
    /// arrival: no clock read), for the start of a request; `None` when it must be looked up.
    pub(crate) fn cached(&self, by: &TenantRef) -> Option<Resolved> {
        self.cached_with(by, Resolved::clone)
    }

    /// `read` of what [`cached`](Self::cached) finds, without cloning the rest of it.
    pub(crate) fn cached_with<R>(&self, by: &TenantRef, read: impl FnOnce(&Resolved) -> R) -> Option<R> {
        self.local.read_at(by, saas_core::observe::request::arrival_or_now(), read)
    }

    /// A page of tenants in creation order, optionally of one status (deleted tenants are
    /// listed only when `status` asks for them).
    pub async fn list(&self, query: &PageQuery, status: Option<TenantStatus>) -> Result<Page<Tenant>> {
        let limit = query.limit()?;
        let after = query.after()?;
        let mut conn = self.db.pool().acquire().await?;
        let items = store::list(&mut conn, after.as_deref(), status, limit + 1).await?;
        Ok(Page::from_overfetch(items, limit, |t| t.id.to_string()))
    }

    /// Changes the name and/or plan.
    pub async fn update(&self, id: TenantId, patch: TenantPatch) -> Result<Tenant> {
        let mut errors = Vec::new();
        let name = patch.name.as_deref().map(valid_name).transpose().map_err(|e| errors.push(e)).ok().flatten();
        let plan = patch.plan.as_deref().map(valid_plan).transpose().map_err(|e| errors.push(e)).ok().flatten();
        if !errors.is_empty() {
            return Err(Error::validation(errors));
        }
        let mut tx = self.db.begin().await?;
        // Absent fields keep the stored value in the same statement: concurrent patches of
        // different fields both take effect.
        if !store::update_details(&mut tx, id, name.as_deref(), plan.as_deref()).await? {
            return Err(not_found());
        }
        let updated = store::find(&mut tx, &TenantRef::Id(id)).await?.ok_or_else(not_found)?;
        let event = TenantUpdated { tenant_id: id, name: updated.name.clone(), plan: updated.plan.clone() };
        outbox::append(&mut tx, &Envelope::of(&event)?).await?;
        tx.commit().await?;
        self.changed(id).await
    }

    /// Suspends an active tenant: every request naming it gets 403 until [`reactivate`](Self::reactivate).
    pub async fn suspend(&self, id: TenantId, reason: &str) -> Result<Tenant> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(Error::validation([FieldError::new("reason", "length", "expected 1 to 500 characters")]));
        }
        let event = Envelope::of(&TenantSuspended { tenant_id: id, reason: reason.to_owned() })?;
        self.transition(id, TenantStatus::Active, TenantStatus::Suspended, Some(reason), event).await
    }

    /// Reactivates a suspended tenant.
    pub async fn reactivate(&self, id: TenantId) -> Result<Tenant> {
        let event = Envelope::of(&TenantReactivated { tenant_id: id })?;
        self.transition(id, TenantStatus::Suspended, TenantStatus::Active, None, event).await
    }

    /// Soft-deletes a tenant (active or suspended): it answers 404 from now on, and every
    /// domain erases its rows when it handles the [`TENANT_DELETED`](crate::events::TENANT_DELETED)
    /// event. The slug stays taken.
    pub async fn delete(&self, id: TenantId) -> Result<()> {
        let current = self.get(id).await?;
        let mut tx = self.db.begin().await?;
        if !store::transition(&mut tx, id, current.status, TenantStatus::Deleted, None).await? {
            return Err(Error::conflict("tenant_changed", "the tenant changed meanwhile; try again"));
        }
        outbox::append(&mut tx, &Envelope::of(&TenantDeleted { tenant_id: id })?).await?;
        tx.commit().await?;
        self.changed(id).await.map(drop)
    }

    async fn transition(
        &self,
        id: TenantId,
        from: TenantStatus,
        to: TenantStatus,
        reason: Option<&str>,
        event: Envelope,
    ) -> Result<Tenant> {
        let current = self.get(id).await?;
        if current.status != from {
            return Err(Error::conflict(
                "invalid_tenant_status",
                format!("the tenant is {}, not {}", current.status.as_str(), from.as_str()),
            ));
        }
        let mut tx = self.db.begin().await?;
        if !store::transition(&mut tx, id, from, to, reason).await? {
            return Err(Error::conflict("tenant_changed", "the tenant changed meanwhile; try again"));
        }
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        self.changed(id).await
    }

    /// Re-reads a changed tenant (in any status) and writes it over its cache entries, so
    /// resolution sees the change at once.
    async fn changed(&self, id: TenantId) -> Result<Tenant> {
        let mut conn = self.db.pool().acquire().await?;
        let tenant = store::find(&mut conn, &TenantRef::Id(id)).await?.ok_or_else(not_found)?;
        drop(conn);
        let resolved = Resolved::from(tenant.clone());
        for by in [TenantRef::Id(tenant.id), TenantRef::Slug(tenant.slug.clone())] {
            let key = cache_key(&by);
            self.local.insert(by, resolved.clone());
            // The change is committed, so a cache failure must not turn into an error now;
            // the entry then stays stale for at most the TTL.
            if let Err(e) = self.cache.set_json(&key, &tenant, self.cache_ttl).await {
                tracing::warn!(error = %e.into_cause(), key, "cannot update a tenant in the cache");
            }
        }
        Ok(tenant)
    }
}

fn cache_key(by: &TenantRef) -> String {
    match by {
        TenantRef::Id(id) => format!("tenancy:tenant:{id}"),
        TenantRef::Slug(slug) => format!("tenancy:tenant:slug:{slug}"),
    }
}

pub(crate) fn not_found() -> Error {
    Error::not_found("tenant_not_found", "no such tenant")
}

fn valid_name(name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(FieldError::new("name", "length", "expected 1 to 200 printable characters"));
    }
    Ok(name.to_owned())
}

fn valid_plan(plan: &str) -> Result<String, FieldError> {
    let ok = (1..=64).contains(&plan.len())
        && plan.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(FieldError::new("plan", "format", "expected 1 to 64 of a-z, 0-9, `-` and `_`"));
    }
    Ok(plan.to_owned())
}
