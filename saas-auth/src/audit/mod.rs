//! The tamper-evident audit log: every domain event, in a hash chain per tenant, with signed
//! checkpoints.
//!
//! [`AuditLog::record`] subscribes to every bounded context ([`CONTEXTS`]) as the consumer
//! group `saas-audit` and appends each event once (the inbox) to its tenant's chain, or to the
//! `platform` chain for events without a tenant. Each entry commits to the previous entry's
//! hash over a canonical encoding ([`chain`](self) module docs give it byte for byte), so
//! changing, inserting or deleting an entry breaks every later link.
//!
//! Each entry also carries a MAC of its hash, and every `audit.checkpoint_interval_secs`
//! each chain's head gets signed with Ed25519 (a **checkpoint**), both under the audit key,
//! derived from the key-encryption key (`auth.key_encryption_key`, or `<data_dir>/auth-kek`),
//! which is not in the database. Someone who can write to the database but does not hold
//! that key can delete entries or rewrite them, but cannot do so without
//! [`AuditLog::verify`] naming the first entry affected. Keep the key apart from the
//! database, and keep copies of checkpoints elsewhere (`saas audit verify` prints the latest)
//! if you need to detect the deletion of a whole chain.
//!
//! Admin actions are audited because each of them publishes an event (role changes, MFA
//! resets, invitations, API keys, account unlocks, tenant suspension and deletion, quota and
//! flag overrides, signing-key rotation and revocation).
//!
//! Chains outlive the deletion of their tenant: erasing the audit trail is not something a
//! tenant's deletion should be able to do.
//!
//! ```no_run
//! # async fn demo(log: saas_auth::audit::AuditLog, tenant: saas_core::id::TenantId) -> saas_core::error::Result<()> {
//! let report = log.verify(Some(tenant)).await?;
//! match &report.breach {
//!     None => println!("{} entries, intact", report.entries),
//!     Some(breach) => println!("entry {} is bad: {}", breach.seq, breach.reason),
//! }
//! # Ok(()) }
//! ```

mod chain;

use std::{sync::Arc, time::Duration};

pub use chain::{AuditKey, Breach, Checkpoint, GENESIS, canonical, entry_hash};
use chain::{StoredCheckpoint, StoredEntry, Walk};
use saas_core::{
    db::{Db, now_millis},
    error::{Error, Result},
    events::{Envelope, EventBus, Inbox, Subscription},
    id::TenantId,
};
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use tokio_util::sync::CancellationToken;

/// The chain of events that belong to no tenant.
pub const PLATFORM: &str = "platform";
/// The consumer group that records events.
pub const CONSUMER: &str = "saas-audit";
/// The bounded contexts (topics) recorded: every domain of saas-rs.
pub const CONTEXTS: &[&str] = &["tenancy", "auth", "users", "billing", "notify", "analytics"];
/// Entries read per query while verifying.
const PAGE: i64 = 500;
/// Verifications run at once per process; more wait. Each holds a pooled connection (and,
/// on PostgreSQL, a snapshot) for the whole chain, so they must not crowd out requests.
pub const CONCURRENT_VERIFICATIONS: usize = 2;

/// The audit log; see the [module docs](self).
#[derive(Clone)]
pub struct AuditLog {
    db: Db,
    key: AuditKey,
    verifications: Arc<tokio::sync::Semaphore>,
}

/// One recorded event, as stored: listing does not verify it (`GET /v1/audit` does).
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Its position in the chain, from 1.
    pub seq: i64,
    /// The event as a CloudEvent (`id`, `type`, `time`, `tenantid`, `subject`, `data`, …).
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    /// The previous entry's hash (hex SHA-256).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// Whether a chain is intact, and if not, its first bad entry.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ChainReport {
    /// The tenant id, or `platform`.
    pub chain: String,
    /// `true` when every entry and checkpoint checked out.
    pub intact: bool,
    /// Entries verified (up to the first bad one).
    pub entries: i64,
    /// Checkpoints in the chain.
    pub checkpoints: i64,
    /// The newest checkpoint: keep a copy elsewhere to detect a chain deleted whole.
    pub latest_checkpoint: Option<SignedCheckpoint>,
    /// The first entry that is altered or missing; absent when intact.
    pub breach: Option<Breach>,
}

/// A checkpoint with its signature.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SignedCheckpoint {
    /// The last entry covered.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When it was signed, Unix milliseconds.
    pub signed_at: i64,
    /// The signing key's id.
    pub key_id: String,
    /// Ed25519 signature, base64url, over the message the `audit` module docs give.
    pub signature: String,
}

fn chain_name(tenant: Option<TenantId>) -> String {
    tenant.map_or_else(|| PLATFORM.to_owned(), |t| t.to_string())
}

/// What a chain's name stands for: `Some(Some(tenant))`, `Some(None)` for [`PLATFORM`], and
/// `None` for a name that is neither (not written by this code).
pub fn chain_of(name: &str) -> Option<Option<TenantId>> {
    match name {
        PLATFORM => Some(None),
        name => name.parse().ok().map(Some),
    }
}

/// A `(seq, hash)` row: a chain's head or newest entry.
fn seq_and_hash(row: &sqlx::any::AnyRow) -> std::result::Result<(i64, String), sqlx::Error> {
    Ok((row.try_get(0)?, row.try_get(1)?))
}

impl AuditLog {
    /// The audit log in `db`, signing checkpoints with `key`.
    pub fn new(db: Db, key: AuditKey) -> Self {
        Self { db, key, verifications: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS)) }
    }

    /// The checkpoint key (its id and public key, for outside verifiers).
    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    /// Appends `event` to its chain on `conn`, inside a transaction bound to the event's
    /// tenant; returns the entry's sequence number. The chain's head row is locked until the
    /// transaction ends, so concurrent appends to one chain queue up.
    pub async fn append(&self, conn: &mut AnyConnection, event: &Envelope) -> Result<i64> {
        let chain = chain_name(event.tenant);
        sqlx::query(
            "INSERT INTO audit_heads (tenant_id, seq, hash, updated_at) VALUES ($1, 0, $2, $3) ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(&chain)
        .bind(GENESIS)
        .bind(now_millis())
        .execute(&mut *conn)
        .await?;
        let head = seq_and_hash(
            &sqlx::query(&format!(
                "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1{}",
                self.db.backend().for_update()
            ))
            .bind(&chain)
            .fetch_one(&mut *conn)
            .await?,
        )?;
        // The newest entry decides where the chain goes on: a head row altered or deleted
        // must not stop the recording (verification reports it).
        let newest = sqlx::query("SELECT seq, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1")
            .bind(&chain)
            .fetch_optional(&mut *conn)
            .await?
            .as_ref()
            .map(seq_and_hash)
            .transpose()?
            .unwrap_or((0, GENESIS.to_owned()));
        if newest != head {
            tracing::error!(
                chain,
                head_seq = head.0,
                newest_seq = newest.0,
                "the audit chain head disagrees with its newest entry; someone changed it"
            );
        }
        let (previous_seq, previous) = newest;
        let seq = previous_seq + 1;
        let event_json = serde_json::to_value(event).map_err(Error::internal)?;
        let entry = canonical(&serde_json::json!({ "chain": chain, "seq": seq, "event": event_json }));
        let hash = entry_hash(&previous, &entry);
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, seq, event_id, event_type, entry, prev_hash, hash, mac, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&chain)
        .bind(seq)
        .bind(event.id.to_string())
        .bind(&event.event_type)
        .bind(&entry)
        .bind(&previous)
        .bind(&hash)
        .bind(self.key.entry_mac(&hash))
        .bind(now_millis())
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3, updated_at = $4 WHERE tenant_id = $1")
            .bind(&chain)
            .bind(seq)
            .bind(&hash)
            .bind(now_millis())
            .execute(&mut *conn)
            .await?;
        Ok(seq)
    }

    /// Records every event of [`CONTEXTS`] once, as consumer group [`CONSUMER`]. A failed
    /// append rolls back and is tried again for about a minute (database busy or briefly
    /// away) before the bus's own retries; an event still not recorded then is logged at
    /// ERROR with its id (and goes to the bus's dead letters).
    pub async fn record(&self, bus: &Arc<dyn EventBus>) -> Result<Subscription> {
        let inbox = Inbox::new(self.db.clone(), CONSUMER);
        let log = self.clone();
        let handler = move |event: Envelope| {
            let (inbox, log) = (inbox.clone(), log.clone());
            async move {
                let mut delay = Duration::from_millis(100);
                let mut attempt = 1;
                loop {
                    match log.record_once(&inbox, &event).await {
                        Ok(()) => return Ok(()),
                        Err(e) if attempt < 12 => {
                            tracing::warn!(event_id = %event.id, attempt, error = %e.into_cause(), "cannot append to the audit log; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(10));
                            attempt += 1;
                        }
                        Err(e) => {
                            tracing::error!(event_id = %event.id, event_type = event.event_type, "the audit log could not record an event");
                            return Err(e.into_cause());
                        }
                    }
                }
            }
        };
        bus.subscribe(CONSUMER, CONTEXTS, Arc::new(handler)).await
    }

    async fn record_once(&self, inbox: &Inbox, event: &Envelope) -> Result<()> {
        let Some(mut tx) = inbox.begin(event).await? else { return Ok(()) };
        self.append(&mut tx, event).await?;
        tx.commit().await?;
        metrics::counter!("saas_audit_entries_total").increment(1);
        Ok(())
    }

    /// Signs a checkpoint of every chain whose head has none yet; returns how many it
    /// signed. Several servers may run it at once: a checkpoint is signed once per head.
    ///
    /// Only a head that names a stored entry with that hash and a valid MAC is signed, so an
    /// altered head row cannot get a forged state signed.
    pub async fn checkpoint(&self) -> Result<usize> {
        let rows = sqlx::query(
            "SELECT h.tenant_id, h.seq, h.hash FROM audit_heads h
             WHERE h.seq > 0 AND NOT EXISTS
                (SELECT 1 FROM audit_checkpoints c WHERE c.tenant_id = h.tenant_id AND c.seq = h.seq)",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut signed = 0;
        for row in rows {
            let point = Checkpoint {
                chain: row.try_get(0)?,
                seq: row.try_get(1)?,
                hash: row.try_get(2)?,
                signed_at: now_millis(),
            };
            let Some(tenant) = chain_of(&point.chain) else {
                tracing::error!(chain = point.chain, "an audit chain head names no tenant; not signed");
                continue;
            };
            let mut snapshot = self.db.snapshot(tenant).await?;
            let entry = page(&mut snapshot, &point.chain, point.seq - 1, 1).await?.pop();
            drop(snapshot);
            let genuine = entry
                .is_some_and(|e| e.seq == point.seq && e.hash == point.hash && self.key.mac_matches(&e.hash, &e.mac));
            if !genuine {
                tracing::error!(
                    chain = point.chain,
                    seq = point.seq,
                    "the audit chain head names no genuine entry; not signed (run `saas audit verify`)"
                );
                continue;
            }
            let inserted = sqlx::query(
                "INSERT INTO audit_checkpoints (tenant_id, seq, hash, signed_at, key_id, signature)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, seq) DO NOTHING",
            )
            .bind(&point.chain)
            .bind(point.seq)
            .bind(&point.hash)
            .bind(point.signed_at)
            .bind(self.key.id())
            .bind(self.key.sign(&point))
            .execute(self.db.pool())
            .await?
            .rows_affected();
            signed += inserted as usize;
        }
        Ok(signed)
    }

    /// Signs checkpoints every `every` until `shutdown`, then once more.
    pub async fn run_checkpoints(self, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = ticks.tick() => false,
                _ = shutdown.cancelled() => true,
            };
            match self.checkpoint().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(chains = n, "audit checkpoints signed"),
                Err(e) => tracing::warn!(error = %e.into_cause(), "cannot sign audit checkpoints; retrying"),
            }
            if stopping {
                return;
            }
        }
    }

    /// Every chain the database knows of: tenant ids, and `platform`. On PostgreSQL under
    /// row-level security, a chain whose head and checkpoints were all deleted is not seen.
    pub async fn chains(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT tenant_id FROM audit_heads UNION SELECT tenant_id FROM audit_checkpoints
             UNION SELECT DISTINCT tenant_id FROM audit_log ORDER BY 1",
        )
        .fetch_all(self.db.pool())
        .await?)
    }

    /// Checks a tenant's chain (`None`: the platform's) from its first entry: the hashes,
    /// the sequence, the head, and each checkpoint's signature and hash. Everything is read
    /// from one snapshot, so entries appended meanwhile cannot look like a moved head. At
    /// most [`CONCURRENT_VERIFICATIONS`] run at once; others wait their turn.
    pub async fn verify(&self, tenant: Option<TenantId>) -> Result<ChainReport> {
        let chain = chain_name(tenant);
        let _turn = self.verifications.acquire().await.map_err(Error::internal)?;
        let mut snapshot = self.db.snapshot(tenant).await?;
        let db: &mut AnyConnection = &mut snapshot;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints WHERE tenant_id = $1")
            .bind(&chain)
            .fetch_one(&mut *db)
            .await?;
        let latest_checkpoint =
            stored_checkpoints(db, &chain, "ORDER BY seq DESC LIMIT 1", (0, 0)).await?.pop().map(|c| {
                SignedCheckpoint {
                    seq: c.point.seq,
                    hash: c.point.hash,
                    signed_at: c.point.signed_at,
                    key_id: c.key_id,
                    signature: c.signature,
                }
            });
        let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1")
            .bind(&chain)
            .fetch_optional(&mut *db)
            .await?
            .as_ref()
            .map(seq_and_hash)
            .transpose()?;
        // Checkpoints are read page by page with the entries they name: memory stays bounded
        // however many a chain has. First any that name no entry (seq <= 0).
        let nowhere = stored_checkpoints(db, &chain, "AND seq <= 0 ORDER BY seq LIMIT 1", (0, 0)).await?;
        let mut walk = Walk::new(&chain, &self.key, nowhere);
        let mut after = 0;
        'pages: loop {
            let batch = page(db, &chain, after, PAGE).await?;
            let full = batch.len() as i64 == PAGE;
            if let Some(last) = batch.last() {
                let range = "AND seq > $2 AND seq <= $3 ORDER BY seq";
                walk.add_checkpoints(stored_checkpoints(db, &chain, range, (after, last.seq)).await?);
            }
            for entry in batch {
                after = entry.seq;
                if !walk.step(entry) {
                    break 'pages;
                }
            }
            if !full {
                break;
            }
        }
        let entries = walk.verified();
        // The first checkpoint past the last entry, if any, names entries that are missing.
        let past = stored_checkpoints(db, &chain, "AND seq > $2 ORDER BY seq LIMIT 1", (entries, 0)).await?;
        walk.add_checkpoints(past);
        let breach = walk.finish(head);
        Ok(ChainReport { chain, intact: breach.is_none(), entries, checkpoints: count, latest_checkpoint, breach })
    }

    /// Up to `limit` entries of `tenant`'s chain after `after`, oldest first.
    pub async fn entries(&self, tenant: TenantId, after: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        let mut snapshot = self.db.snapshot(Some(tenant)).await?;
        let batch = page(&mut snapshot, &chain_name(Some(tenant)), after, i64::from(limit)).await?;
        Ok(batch
            .into_iter()
            .map(|e| {
                let mut text: serde_json::Value = serde_json::from_str(&e.entry).unwrap_or_default();
                let event = text.get_mut("event").map(serde_json::Value::take).unwrap_or_default();
                AuditEntry { seq: e.seq, event, prev_hash: e.prev_hash, hash: e.hash }
            })
            .collect())
    }
}

/// Up to `limit` entries of `chain` after `after`, oldest first.
async fn page(conn: &mut AnyConnection, chain: &str, after: i64, limit: i64) -> Result<Vec<StoredEntry>> {
    let rows = sqlx::query(
        "SELECT seq, event_id, event_type, entry, prev_hash, hash, mac FROM audit_log
         WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(chain)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredEntry {
                seq: row.try_get(0)?,
                event_id: row.try_get(1)?,
                event_type: row.try_get(2)?,
                entry: row.try_get(3)?,
                prev_hash: row.try_get(4)?,
                hash: row.try_get(5)?,
                mac: row.try_get(6)?,
            })
        })
        .collect()
}

/// Checkpoints of `chain` matching `filter` (SQL after `WHERE tenant_id = $1`, which may use
/// `$2` and `$3`, bound to `bounds`).
async fn stored_checkpoints(
    conn: &mut AnyConnection,
    chain: &str,
    filter: &str,
    bounds: (i64, i64),
) -> Result<Vec<StoredCheckpoint>> {
    let sql =
        format!("SELECT seq, hash, signed_at, key_id, signature FROM audit_checkpoints WHERE tenant_id = $1 {filter}");
    let mut query = sqlx::query(&sql).bind(chain);
    if filter.contains("$2") {
        query = query.bind(bounds.0);
    }
    if filter.contains("$3") {
        query = query.bind(bounds.1);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter()
        .map(|row| {
            Ok(StoredCheckpoint {
                point: Checkpoint {
                    chain: chain.to_owned(),
                    seq: row.try_get(0)?,
                    hash: row.try_get(1)?,
                    signed_at: row.try_get(2)?,
                },
                key_id: row.try_get(3)?,
                signature: row.try_get(4)?,
            })
        })
        .collect()
}
