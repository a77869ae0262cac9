//! Layered configuration: defaults < `saas.toml` < `SAAS_*` environment variables.
//!
//! Every key has a default, so the server starts with no file at all. Environment variables
//! are the key in upper case with the section joined by `_`: `database.url` is
//! `SAAS_DATABASE_URL`, `rate_limit.burst` is `SAAS_RATE_LIMIT_BURST`, `data_dir` is
//! `SAAS_DATA_DIR`. A bus or cache URL can be given by the section name alone
//! (`SAAS_EVENT_BUS=memory://`). An unknown `SAAS_*` variable fails start-up (it is most
//! likely a typo); `SAAS_CONFIG` (the file) and `SAAS_TEST_*` (the test suite) are exempt.
//!
//! Secret values (`database.url`, `cache.url`) may be literal or a reference resolved at
//! start: `env:NAME` reads another environment variable, `file:/path` reads a file (trimmed),
//! as mounted by Kubernetes or Docker secrets. They are held as [`SecretString`] and shown as
//! `[redacted]` by `saas config check`.
//!
//! ```
//! let config = saas_core::config::Config::load(None).unwrap();
//! assert_eq!(config.server.addr.port(), 8080);
//! ```
//!
//! The full reference is in the book's configuration chapter (`docs/src/configuration.md`).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::db::Backend;

/// A configuration value that is missing, malformed or inconsistent.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: `{key}`: {message}")]
pub struct ConfigError {
    /// The offending key, in `section.field` form.
    pub key: String,
    /// What is wrong and the expected form.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

/// The whole configuration of a saas-rs server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for embedded data (the SQLite file). Created if missing.
    pub data_dir: PathBuf,
    /// HTTP listener.
    pub server: ServerConfig,
    /// Relational database.
    pub database: DatabaseConfig,
    /// Cache and counters.
    pub cache: CacheConfig,
    /// Event bus.
    pub event_bus: EventBusConfig,
    /// Transactional outbox relay.
    pub outbox: OutboxConfig,
    /// Request limits.
    pub http: HttpConfig,
    /// Rate limiting per client.
    pub rate_limit: RateLimitConfig,
    /// `Idempotency-Key` handling.
    pub idempotency: IdempotencyConfig,
    /// Logging.
    pub log: LogConfig,
    /// Tenant resolution and platform administration.
    pub tenancy: TenancyConfig,
    /// Identity: passwords and access tokens.
    pub auth: AuthConfig,
    /// The tamper-evident audit log.
    pub audit: AuditConfig,
}

/// `[audit]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Append every domain event to its tenant's hash chain. Default `true`.
    pub enabled: bool,
    /// Seconds between signed checkpoints of the chains that grew. Default 300; 1 to 86 400.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { enabled: true, checkpoint_interval_secs: 300 }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The `iss` of access tokens. Default `saas-rs`.
    pub issuer: String,
    /// The `aud` of access tokens. Default `saas-rs`.
    pub audience: String,
    /// Lifetime of an access token in seconds. Default 900 (15 min).
    pub access_token_ttl_secs: u64,
    /// Days a signing key signs before a new one replaces it. Default 30.
    pub key_rotation_days: u64,
    /// Lifetime of a refresh token in seconds (each use replaces it). Default 2 592 000
    /// (30 days).
    pub refresh_token_ttl_secs: u64,
    /// Seconds after a refresh token was used during which using it again (two concurrent
    /// refreshes of one client) is allowed; later reuse revokes the whole session. Default 10.
    pub refresh_reuse_grace_secs: u64,
    /// Seconds a server may take to notice that a session was revoked on another server
    /// (its access tokens stop working then). Default 30.
    pub session_check_secs: u64,
    /// Failed logins of one account after which each further attempt must wait, doubling
    /// from 1 s. Default 3.
    pub login_backoff_after: u32,
    /// Failed logins of one account that lock it for `login_lockout_secs`. Default 10.
    pub login_lockout_after: u32,
    /// Seconds an account (or address) stays locked, and the window failures are counted
    /// in. Default 900.
    pub login_lockout_secs: u64,
    /// Failed logins from one client address, any account, that lock the address. Default 100.
    pub login_ip_lockout_after: u32,
    /// 32 bytes, base64, that encrypt the signing keys at rest (secret). Default: generated
    /// once into `<data_dir>/auth-kek` (set it explicitly when several servers share a
    /// database).
    #[serde(serialize_with = "redact")]
    pub key_encryption_key: Option<SecretString>,
    /// Argon2id memory in KiB. Default 19 456 (19 MiB, OWASP).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations. Default 2 (OWASP).
    pub argon2_iterations: u32,
    /// Argon2id lanes. Default 1 (OWASP).
    pub argon2_parallelism: u32,
    /// Password hashes computed at once; more are refused with 503 and `Retry-After`.
    /// Default 0: the number of CPU cores.
    pub max_concurrent_hashes: usize,
    /// Password hashes that may wait for a hashing thread besides those computed, so that
    /// a thread starts its next hash the moment it finishes one; beyond, 503 and
    /// `Retry-After`. Default unset: one for each hashing thread. `0`: none wait.
    pub queued_hashes: Option<usize>,
    /// The algorithm new signing keys use: `EdDSA` (Ed25519, default), `ES256` (ECDSA
    /// P-256) or `RS256` (RSA 2048, PKCS#1 v1.5). Changing it rotates the key at the next
    /// start; tokens of the old key verify until they expire.
    pub token_algorithm: TokenAlgorithm,
    /// Where sessions and refresh tokens live: `sql` (default; the database) or `redis`
    /// (`cache.url`; run Redis with persistence, or a restart signs everyone out).
    pub session_store: SessionStoreKind,
    /// Whether each new user (the owner at sign-up, users created later) is sent the code
    /// that proves their e-mail address at once. Default true.
    pub send_verification_on_signup: bool,
}

/// The JWS algorithm of access tokens (`auth.token_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TokenAlgorithm {
    /// Ed25519 (RFC 8037): small, fast, constant-time. The default.
    #[default]
    EdDSA,
    /// ECDSA over P-256 with SHA-256 (RFC 7518 3.4).
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key (RFC 7518 3.3), for verifiers
    /// that know nothing else.
    RS256,
}

impl TokenAlgorithm {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    /// The algorithm of a JWS `alg` name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::EdDSA, Self::ES256, Self::RS256].into_iter().find(|a| a.as_str() == name)
    }
}

/// Where sessions live (`auth.session_store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStoreKind {
    /// In the database (default).
    #[default]
    Sql,
    /// In Redis at `cache.url`.
    Redis,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "saas-rs".into(),
            audience: "saas-rs".into(),
            access_token_ttl_secs: 900,
            key_rotation_days: 30,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            refresh_reuse_grace_secs: 10,
            session_check_secs: 30,
            login_backoff_after: 3,
            login_lockout_after: 10,
            login_lockout_secs: 900,
            login_ip_lockout_after: 100,
            key_encryption_key: None,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            max_concurrent_hashes: 0,
            queued_hashes: None,
            token_algorithm: TokenAlgorithm::EdDSA,
            session_store: SessionStoreKind::Sql,
            send_verification_on_signup: true,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Seconds to let in-flight requests finish after SIGTERM/Ctrl-C. Default 30.
    pub shutdown_grace_secs: u64,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://user:pass@host/db`. Default: `saas.db` in `data_dir`.
    #[serde(serialize_with = "redact")]
    pub url: Option<SecretString>,
    /// The URL migrations run with (secret), when the tables' owner is not the role the
    /// server queries as. On PostgreSQL, `url` should name a `NOSUPERUSER NOBYPASSRLS`
    /// role that owns no table, and this one the owner. Default: `url`.
    #[serde(serialize_with = "redact")]
    pub migrate_url: Option<SecretString>,
    /// Maximum pooled connections. Default 10.
    pub max_connections: u32,
    /// Seconds to wait for a free connection before answering 503. Default 5.
    pub acquire_timeout_secs: u64,
    /// Milliseconds a PostgreSQL connection may sit idle in the pool and still be handed
    /// out without a ping; one idle longer is pinged first, and replaced if the server hung
    /// up. `0` pings on every checkout. Default 1000. SQLite connections are never pinged.
    pub ping_after_idle_ms: u64,
}

/// `[cache]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `memory://` (default) or `redis://host:port/db`.
    #[serde(serialize_with = "redact")]
    pub url: Option<SecretString>,
    /// Maximum entries of the in-memory cache. Default 100 000.
    pub max_entries: u64,
}

/// `[event_bus]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventBusConfig {
    /// `memory://` (in-process, the default) or `kafka://HOST:PORT[,HOST:PORT…]` (builds
    /// with the `kafka` feature).
    pub url: String,
    /// Prefix of the Kafka topic names: `<prefix><context>`. Default `saas.`.
    pub topic_prefix: String,
    /// Partitions of the topics the Kafka adapter creates. Default 3.
    pub partitions: i32,
    /// Replication factor of the topics the Kafka adapter creates. Default 1 (use 3 on a
    /// production cluster).
    pub replication_factor: i32,
    /// A Confluent Schema Registry (`http://HOST:PORT`, credentials as
    /// `http://USER:PASSWORD@HOST:PORT`; secret). When set, the server checks each event
    /// schema it publishes against the registry at start, refuses to start on an
    /// incompatible one, and registers the rest under `<topic_prefix><event type>`.
    /// Needs the `kafka` feature. Default: none.
    #[serde(serialize_with = "redact")]
    pub schema_registry_url: Option<SecretString>,
}

/// `[outbox]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Milliseconds between relay polls when the outbox is empty. Default 200.
    pub poll_interval_ms: u64,
    /// Events published per relay batch. Default 100.
    pub batch_size: u32,
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body in bytes. Default 1 MiB.
    pub body_limit_bytes: usize,
    /// Seconds before a request is answered 408. Default 30.
    pub request_timeout_secs: u64,
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitStore {
    /// In this process (per instance).
    Memory,
    /// In Redis at `cache.url` (shared by all instances).
    Redis,
}

/// `[rate_limit]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Whether requests are rate limited. Default true.
    pub enabled: bool,
    /// Sustained requests per second per client. Default 50.
    pub requests_per_second: u32,
    /// Requests a client may send at once (the bucket size, sent as `q` of `RateLimit-Policy`).
    /// Default 100.
    pub burst: u32,
    /// `memory` or `redis`; default `redis` when `cache.url` is Redis, else `memory`.
    pub store: Option<RateLimitStore>,
}

/// `[idempotency]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// Seconds a stored response is replayed for. Default 86 400 (24 h).
    pub ttl_secs: u64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (default).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (default) or `pretty`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `saas_core=debug,info`. `RUST_LOG` overrides it.
    pub level: String,
}

/// Where a request's tenant can come from; see `[tenancy] resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantSource {
    /// The verified access token's tenant claim (filled in by saas-auth).
    Token,
    /// The first label of the `Host` under `tenancy.base_domain` (`acme.example.com`).
    Subdomain,
    /// The `X-Tenant-ID` header, holding the tenant's id or slug.
    Header,
    /// A `/t/{tenant}` path prefix, id or slug, stripped before routing.
    Path,
}

/// `[tenancy]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenancyConfig {
    /// Sources of a request's tenant, in the order they are read. Every source present
    /// must name the same tenant (else 400). Default `["token", "subdomain", "header", "path"]`.
    pub resolution: Vec<TenantSource>,
    /// Base domain under which tenants get subdomains, e.g. `example.com`. Subdomain
    /// resolution is off while unset.
    pub base_domain: Option<String>,
    /// Seconds a resolved tenant is cached. Changes made through this server invalidate
    /// the entry at once; the TTL bounds staleness across servers sharing a memory cache.
    /// Default 30.
    pub cache_ttl_secs: u64,
    /// A platform-admin bearer token (secret; `env:`/`file:` references work), as an
    /// alternative to `saas admin bootstrap`. At least 32 characters.
    #[serde(serialize_with = "redact")]
    pub platform_admin_token: Option<SecretString>,
    /// Slugs nobody may take, in addition to the built-in list (`www`, `api`, `admin`, …).
    pub reserved_slugs: Vec<String>,
    /// Where quota usage is counted: `sql` (default; the database) or `redis` (`cache.url`).
    pub quota_store: QuotaStore,
    /// Resource quotas by name, e.g. `[tenancy.quotas.api_calls] period = "month"`.
    pub quotas: BTreeMap<String, QuotaConfig>,
    /// Feature flags by name, e.g. `[tenancy.features.reports] default = false`.
    pub features: BTreeMap<String, FeatureConfig>,
    /// Databases a large tenant can be placed in (`TenantRouter`), by name; secrets
    /// (`env:`/`file:` references work), e.g. `eu-1 = "env:SHARD_EU_1_URL"`.
    #[serde(serialize_with = "redact_map")]
    pub shards: BTreeMap<String, SecretString>,
    /// Per-plan quota limits and feature values, e.g.
    /// `[tenancy.plans.pro] quotas = { seats = 50 }, features = { reports = true }`.
    pub plans: BTreeMap<String, PlanConfig>,
}

/// Where quota usage is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaStore {
    /// Rows in the database (default).
    #[default]
    Sql,
    /// Counters in Redis (`cache.url` must be Redis).
    Redis,
}

/// Length of a quota's period: usage starts again from zero at each period's start (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    /// Each minute.
    Minute,
    /// Each hour.
    Hour,
    /// Each day.
    Day,
    /// Each calendar month.
    Month,
}

/// `[tenancy.quotas.<name>]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// When usage resets; absent for quotas that are held and released (seats, storage).
    pub period: Option<QuotaPeriod>,
    /// The limit of plans that do not set one; absent means unlimited.
    pub default_limit: Option<u64>,
}

/// Who a percentage rollout is stable for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutBy {
    /// The same answer for every user of a tenant (default).
    #[default]
    Tenant,
    /// The same answer for one user, whatever the request.
    User,
}

/// `[tenancy.features.<name>]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// The value everyone gets unless a rollout, plan or override says otherwise: a boolean,
    /// a number or a variant name (string).
    pub default: serde_json::Value,
    /// Percentage (0 to 100) of tenants or users who get `rollout_value` instead of the default.
    #[serde(default)]
    pub rollout_percent: Option<f64>,
    /// The value of the rollout; default `true`.
    #[serde(default)]
    pub rollout_value: Option<serde_json::Value>,
    /// Whether the rollout picks tenants (default) or users.
    #[serde(default)]
    pub rollout_by: RolloutBy,
}

impl FeatureConfig {
    /// A flag whose value is `default` for everyone (until a rollout, plan or override).
    pub fn new(default: serde_json::Value) -> Self {
        Self { default, rollout_percent: None, rollout_value: None, rollout_by: RolloutBy::Tenant }
    }

    /// Gives `true` to `percent` % of tenants or users, picked by a stable hash.
    pub fn rollout(mut self, percent: f64, by: RolloutBy) -> Self {
        self.rollout_percent = Some(percent);
        self.rollout_by = by;
        self
    }
}

/// `[tenancy.plans.<plan>]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanConfig {
    /// Quota limits of the plan, by quota name.
    pub quotas: BTreeMap<String, u64>,
    /// Feature values of the plan, by feature name.
    pub features: BTreeMap<String, serde_json::Value>,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        Self {
            resolution: vec![TenantSource::Token, TenantSource::Subdomain, TenantSource::Header, TenantSource::Path],
            base_domain: None,
            cache_ttl_secs: 30,
            platform_admin_token: None,
            reserved_slugs: Vec::new(),
            quota_store: QuotaStore::Sql,
            quotas: BTreeMap::new(),
            features: BTreeMap::new(),
            shards: BTreeMap::new(),
            plans: BTreeMap::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("saas-data"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            cache: CacheConfig::default(),
            event_bus: EventBusConfig::default(),
            outbox: OutboxConfig::default(),
            http: HttpConfig::default(),
            rate_limit: RateLimitConfig::default(),
            idempotency: IdempotencyConfig::default(),
            log: LogConfig::default(),
            tenancy: TenancyConfig::default(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { addr: SocketAddr::from(([127, 0, 0, 1], 8080)), shutdown_grace_secs: 30 }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, migrate_url: None, max_connections: 10, acquire_timeout_secs: 5, ping_after_idle_ms: 1000 }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { url: None, max_entries: 100_000 }
    }
}

impl Default for EventBusConfig {
    fn default() -> Self {
        Self {
            url: "memory://".into(),
            topic_prefix: "saas.".into(),
            partitions: 3,
            replication_factor: 1,
            schema_registry_url: None,
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { poll_interval_ms: 200, batch_size: 100 }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { body_limit_bytes: 1024 * 1024, request_timeout_secs: 30 }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { enabled: true, requests_per_second: 50, burst: 100, store: None }
    }
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self { ttl_secs: 24 * 60 * 60 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Json, level: "info".into() }
    }
}

fn redact_map<S: serde::Serializer>(value: &BTreeMap<String, SecretString>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(value.len()))?;
    for key in value.keys() {
        map.serialize_entry(key, "[redacted]")?;
    }
    map.end()
}

fn redact<S: serde::Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("[redacted]"),
        None => s.serialize_none(),
    }
}

/// Sections whose keys `SAAS_<SECTION>_<KEY>` maps to; longest first so `event_bus` wins
/// over a hypothetical `event`.
const SECTIONS: [&str; 12] = [
    "rate_limit",
    "idempotency",
    "event_bus",
    "database",
    "tenancy",
    "outbox",
    "server",
    "cache",
    "http",
    "audit",
    "auth",
    "log",
];

/// Maps `database_url` to `database.url` and `event_bus` to `event_bus.url`.
fn env_key(key: &str) -> String {
    let key = key.to_ascii_lowercase();
    for section in SECTIONS {
        if key == section && matches!(section, "event_bus" | "cache" | "database") {
            return format!("{section}.url");
        }
        if let Some(rest) = key.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
            return format!("{section}.{rest}");
        }
    }
    key
}

impl Config {
    /// Loads defaults, then `file` (else the file `SAAS_CONFIG` names, else `./saas.toml` if
    /// it exists), then `SAAS_*` variables, resolves secret references and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let from_env = std::env::var_os("SAAS_CONFIG").map(std::path::PathBuf::from);
        match file.or(from_env.as_deref()) {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::new(
                        "--config or SAAS_CONFIG",
                        format!("file {} not found", path.display()),
                    ));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new("saas.toml").exists() => figment = figment.merge(Toml::file_exact("saas.toml")),
            None => {}
        }
        // `SAAS_CONFIG` names the file itself, and `SAAS_TEST_*` is reserved for the test
        // suite; neither is a key. Any other unknown `SAAS_*` variable is refused (typos).
        let env = Env::prefixed("SAAS_")
            .filter(|k| {
                let k = k.as_str().to_ascii_lowercase();
                k != "config" && !k.starts_with("test_")
            })
            .map(|k| env_key(k.as_str()).into());
        Self::from_figment(figment.merge(env))
    }

    /// Extracts, resolves and validates a figment (for apps that add their own providers).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let mut config: Config = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let mut message = e.kind.to_string();
            if let Some(source) = e.metadata.as_ref().map(|m| m.name.to_string()) {
                message.push_str(&format!(" (from {source})"));
            }
            ConfigError::new(if key.is_empty() { "<root>".into() } else { key }, message)
        })?;
        config.database.url = resolve_secret("database.url", config.database.url.take())?;
        config.cache.url = resolve_secret("cache.url", config.cache.url.take())?;
        config.event_bus.schema_registry_url =
            resolve_secret("event_bus.schema_registry_url", config.event_bus.schema_registry_url.take())?;
        config.database.migrate_url = resolve_secret("database.migrate_url", config.database.migrate_url.take())?;
        for (name, url) in std::mem::take(&mut config.tenancy.shards) {
            let key = format!("tenancy.shards.{name}");
            let url = resolve_secret(&key, Some(url))?.expect("a value was given");
            if Backend::from_url(url.expose_secret()).is_none() {
                return Err(ConfigError::new(key, "expected `postgres://…` or `sqlite://…`"));
            }
            config.tenancy.shards.insert(name, url);
        }
        config.auth.key_encryption_key =
            resolve_secret("auth.key_encryption_key", config.auth.key_encryption_key.take())?;
        config.tenancy.platform_admin_token =
            resolve_secret("tenancy.platform_admin_token", config.tenancy.platform_admin_token.take())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let db = self.database_url();
        if !(db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return Err(ConfigError::new("database.url", "expected `sqlite://PATH` or `postgres://USER@HOST/DB`"));
        }
        if let Some(migrate) = &self.database.migrate_url {
            if Backend::from_url(migrate.expose_secret()) != Backend::from_url(&db) {
                return Err(ConfigError::new(
                    "database.migrate_url",
                    "expected a URL of the same engine as `database.url`",
                ));
            }
        }
        let cache = self.cache_url();
        if !(cache == "memory://" || cache.starts_with("redis://")) {
            return Err(ConfigError::new(
                "cache.url",
                "expected `memory://` or `redis://HOST:PORT` (TLS `rediss://` is not supported by this build)",
            ));
        }
        let bus = &self.event_bus;
        if bus.url.starts_with("kafka://") {
            if crate::events::kafka_brokers(&bus.url).is_none() {
                return Err(ConfigError::new("event_bus.url", "expected `kafka://HOST:PORT[,HOST:PORT]`"));
            }
            if !cfg!(feature = "kafka") {
                return Err(ConfigError::new(
                    "event_bus.url",
                    "this build has no Kafka adapter: build with the `kafka` feature (`cargo build -p saas-server --features kafka`)",
                ));
            }
        } else if bus.url != "memory://" {
            return Err(ConfigError::new("event_bus.url", "expected `memory://` or `kafka://HOST:PORT[,HOST:PORT]`"));
        }
        let valid_prefix = bus.topic_prefix.len() <= 100
            && bus.topic_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid_prefix {
            return Err(ConfigError::new(
                "event_bus.topic_prefix",
                "expected at most 100 of a-z, A-Z, 0-9, `.`, `_`, `-`",
            ));
        }
        if !(1..=1000).contains(&bus.partitions) {
            return Err(ConfigError::new("event_bus.partitions", "expected 1 to 1000"));
        }
        if !(1..=10).contains(&bus.replication_factor) {
            return Err(ConfigError::new("event_bus.replication_factor", "expected 1 to 10"));
        }
        if let Some(registry) = &bus.schema_registry_url {
            if !registry.expose_secret().starts_with("http://") {
                return Err(ConfigError::new(
                    "event_bus.schema_registry_url",
                    "expected `http://HOST:PORT` (TLS `https://` is not supported by this build)",
                ));
            }
            if !cfg!(feature = "kafka") {
                return Err(ConfigError::new(
                    "event_bus.schema_registry_url",
                    "this build has no Schema Registry client: build with the `kafka` feature",
                ));
            }
        }
        if self.rate_limit_store() == RateLimitStore::Redis && !cache.starts_with("redis") {
            return Err(ConfigError::new("rate_limit.store", "`redis` needs `cache.url` to be a redis:// URL"));
        }
        for (key, value) in [
            ("rate_limit.requests_per_second", u64::from(self.rate_limit.requests_per_second)),
            ("rate_limit.burst", u64::from(self.rate_limit.burst)),
            ("database.max_connections", u64::from(self.database.max_connections)),
            ("http.body_limit_bytes", self.http.body_limit_bytes as u64),
            ("http.request_timeout_secs", self.http.request_timeout_secs),
            ("outbox.batch_size", u64::from(self.outbox.batch_size)),
            ("outbox.poll_interval_ms", self.outbox.poll_interval_ms),
            ("idempotency.ttl_secs", self.idempotency.ttl_secs),
            ("tenancy.cache_ttl_secs", self.tenancy.cache_ttl_secs),
            ("auth.access_token_ttl_secs", self.auth.access_token_ttl_secs),
            ("auth.key_rotation_days", self.auth.key_rotation_days),
            ("auth.refresh_token_ttl_secs", self.auth.refresh_token_ttl_secs),
            ("auth.session_check_secs", self.auth.session_check_secs),
            ("auth.login_lockout_after", u64::from(self.auth.login_lockout_after)),
            ("auth.login_lockout_secs", self.auth.login_lockout_secs),
            ("auth.login_ip_lockout_after", u64::from(self.auth.login_ip_lockout_after)),
            ("auth.argon2_iterations", u64::from(self.auth.argon2_iterations)),
            ("auth.argon2_parallelism", u64::from(self.auth.argon2_parallelism)),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "expected a number greater than 0"));
            }
        }
        self.validate_tenancy()?;
        if !(1..=86_400).contains(&self.audit.checkpoint_interval_secs) {
            return Err(ConfigError::new("audit.checkpoint_interval_secs", "expected 1 to 86400"));
        }
        if self.auth.argon2_memory_kib < 8 * self.auth.argon2_parallelism.max(1) {
            return Err(ConfigError::new("auth.argon2_memory_kib", "expected at least 8 KiB per lane"));
        }
        if let Some(kek) = &self.auth.key_encryption_key {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD.decode(kek.expose_secret().trim());
            if decoded.map(|k| k.len()) != Ok(32) {
                return Err(ConfigError::new(
                    "auth.key_encryption_key",
                    "expected 32 bytes in base64 (e.g. `openssl rand -base64 32`)",
                ));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::new("log.level", format!("expected a tracing filter such as `info`: {e}")));
        }
        Ok(())
    }

    fn validate_tenancy(&self) -> Result<(), ConfigError> {
        let tenancy = &self.tenancy;
        if tenancy.resolution.is_empty() {
            return Err(ConfigError::new(
                "tenancy.resolution",
                "expected at least one of token, subdomain, header, path",
            ));
        }
        if let Some((i, dup)) =
            tenancy.resolution.iter().enumerate().find(|(i, s)| tenancy.resolution[..*i].contains(s))
        {
            return Err(ConfigError::new(format!("tenancy.resolution[{i}]"), format!("`{dup:?}` is listed twice")));
        }
        if let Some(domain) = &tenancy.base_domain {
            let valid = !domain.is_empty()
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            if !valid {
                return Err(ConfigError::new(
                    "tenancy.base_domain",
                    "expected a lowercase domain name such as `example.com`, without scheme or port",
                ));
            }
        }
        if tenancy.platform_admin_token.as_ref().is_some_and(|t| t.expose_secret().len() < 32) {
            return Err(ConfigError::new("tenancy.platform_admin_token", "expected at least 32 characters"));
        }
        if self.auth.session_store == SessionStoreKind::Redis && !self.cache_url().starts_with("redis") {
            return Err(ConfigError::new("auth.session_store", "`redis` needs `cache.url` to be a redis:// URL"));
        }
        if tenancy.quota_store == QuotaStore::Redis && !self.cache_url().starts_with("redis") {
            return Err(ConfigError::new("tenancy.quota_store", "`redis` needs `cache.url` to be a redis:// URL"));
        }
        for (name, feature) in &tenancy.features {
            let key = format!("tenancy.features.{name}");
            check_flag_value(&format!("{key}.default"), &feature.default, None)?;
            if let Some(value) = &feature.rollout_value {
                check_flag_value(&format!("{key}.rollout_value"), value, Some(&feature.default))?;
            }
            if feature.rollout_percent.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
                return Err(ConfigError::new(format!("{key}.rollout_percent"), "expected 0 to 100"));
            }
        }
        for (plan, limits) in &tenancy.plans {
            for quota in limits.quotas.keys() {
                if !tenancy.quotas.contains_key(quota) {
                    return Err(ConfigError::new(
                        format!("tenancy.plans.{plan}.quotas.{quota}"),
                        "no such quota: define it under [tenancy.quotas]",
                    ));
                }
            }
            for (feature, value) in &limits.features {
                let key = format!("tenancy.plans.{plan}.features.{feature}");
                let Some(definition) = tenancy.features.get(feature) else {
                    return Err(ConfigError::new(key, "no such feature: define it under [tenancy.features]"));
                };
                check_flag_value(&key, value, Some(&definition.default))?;
            }
        }
        Ok(())
    }

    /// The database URL, defaulting to `sqlite://<data_dir>/saas.db`.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.expose_secret().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("saas.db").display()),
        }
    }

    /// The URL migrations run with: `database.migrate_url`, else the database URL.
    pub fn migrate_url(&self) -> String {
        match &self.database.migrate_url {
            Some(url) => url.expose_secret().to_owned(),
            None => self.database_url(),
        }
    }

    /// The cache URL, defaulting to `memory://`.
    pub fn cache_url(&self) -> String {
        match &self.cache.url {
            Some(url) => url.expose_secret().to_owned(),
            None => "memory://".into(),
        }
    }

    /// Where rate-limit counters live: the configured store, else Redis iff the cache is.
    pub fn rate_limit_store(&self) -> RateLimitStore {
        self.rate_limit.store.unwrap_or(if self.cache_url().starts_with("redis") {
            RateLimitStore::Redis
        } else {
            RateLimitStore::Memory
        })
    }

    /// The effective configuration as TOML, with secrets shown as `[redacted]`.
    pub fn to_redacted_toml(&self) -> String {
        toml_string(self)
    }
}

fn toml_string(config: &Config) -> String {
    // figment re-reads TOML; serde_json → toml keeps this free of another dependency.
    let value = serde_json::to_value(config).unwrap_or_default();
    let mut out = String::new();
    let mut sections = Vec::new();
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            match v {
                serde_json::Value::Object(inner) => sections.push((k, inner)),
                other => out.push_str(&format!("{k} = {}\n", toml_value(&other))),
            }
        }
        for (name, inner) in sections {
            out.push_str(&format!("\n[{name}]\n"));
            for (k, v) in inner {
                match v {
                    serde_json::Value::Null => out.push_str(&format!("# {k} = (default)\n")),
                    other => out.push_str(&format!("{k} = {}\n", toml_value(&other))),
                }
            }
        }
    }
    out
}

fn toml_value(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("[{}]", items.iter().map(toml_value).collect::<Vec<_>>().join(", ")),
        // Inline tables; nulls (unset options) are left out, as TOML has no null.
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k:?} = {}", toml_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A flag value is a boolean, a number or a variant name, of the same kind as `like`.
fn check_flag_value(key: &str, value: &serde_json::Value, like: Option<&serde_json::Value>) -> Result<(), ConfigError> {
    use serde_json::Value;
    let kind = |v: &Value| match v {
        Value::Bool(_) => Some("a boolean"),
        Value::Number(_) => Some("a number"),
        Value::String(s) if !s.is_empty() => Some("a variant name"),
        _ => None,
    };
    match (kind(value), like.and_then(kind)) {
        (None, _) => Err(ConfigError::new(key, "expected a boolean, a number or a variant name")),
        (Some(found), Some(expected)) if found != expected => {
            Err(ConfigError::new(key, format!("expected {expected}, like the feature's default")))
        }
        _ => Ok(()),
    }
}

/// Resolves `env:NAME` and `file:PATH` references; other values are literal.
fn resolve_secret(key: &str, value: Option<SecretString>) -> Result<Option<SecretString>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let raw = value.expose_secret();
    if let Some(name) = raw.strip_prefix("env:") {
        return std::env::var(name)
            .map(|v| Some(SecretString::from(v)))
            .map_err(|_| ConfigError::new(key, format!("environment variable `{name}` is not set")));
    }
    if let Some(path) = raw.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|v| Some(SecretString::from(v.trim().to_owned())))
            .map_err(|e| ConfigError::new(key, format!("cannot read secret file `{path}`: {e}")));
    }
    if raw.starts_with("vault:") {
        return Err(ConfigError::new(
            key,
            "`vault:` secret references are not supported by this build; use `env:` or `file:`",
        ));
    }
    Ok(Some(value))
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn env_keys_map_to_sections() {
        assert_eq!(env_key("DATABASE_URL"), "database.url");
        assert_eq!(env_key("RATE_LIMIT_BURST"), "rate_limit.burst");
        assert_eq!(env_key("EVENT_BUS"), "event_bus.url");
        assert_eq!(env_key("DATA_DIR"), "data_dir");
        assert_eq!(env_key("SERVER_ADDR"), "server.addr");
        assert_eq!(env_key("AUDIT_CHECKPOINT_INTERVAL_SECS"), "audit.checkpoint_interval_secs");
        assert_eq!(env_key("EVENT_BUS_SCHEMA_REGISTRY_URL"), "event_bus.schema_registry_url");
    }

    #[test]
    fn layers_apply_in_order_and_secrets_resolve() {
        Jail::expect_with(|jail| {
            jail.create_file("saas.toml", "[rate_limit]\nburst = 7\nrequests_per_second = 3\n")?;
            jail.create_file("db-url", "postgres://app:s3cret@db/saas\n")?;
            jail.set_env("SAAS_RATE_LIMIT_BURST", "9");
            jail.set_env("SAAS_DATABASE_URL", "file:db-url");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.rate_limit.burst, 9);
            assert_eq!(c.rate_limit.requests_per_second, 3);
            assert_eq!(c.database_url(), "postgres://app:s3cret@db/saas");
            let shown = c.to_redacted_toml();
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("url = \"[redacted]\""), "{shown}");
            Ok(())
        });
    }

    #[test]
    fn the_migration_url_is_a_secret_of_the_same_engine() {
        Jail::expect_with(|jail| {
            jail.set_env("SAAS_DATABASE_URL", "postgres://app@db/saas");
            jail.set_env("SAAS_DATABASE_MIGRATE_URL", "postgres://owner:hunter2@db/saas");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.migrate_url(), "postgres://owner:hunter2@db/saas");
            assert!(!c.to_redacted_toml().contains("hunter2"));
            jail.set_env("SAAS_DATABASE_MIGRATE_URL", "sqlite://x.db");
            assert_eq!(Config::load(None).unwrap_err().key, "database.migrate_url");
            Ok(())
        });
    }

    #[test]
    fn quotas_features_and_plans_are_checked_against_each_other() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "saas.toml",
                r#"
                [tenancy.quotas.api_calls]
                period = "month"
                default_limit = 1000
                [tenancy.quotas.seats]
                [tenancy.features.reports]
                default = false
                rollout_percent = 10
                [tenancy.plans.pro]
                quotas = { seats = 50, api_calls = 100000 }
                features = { reports = true }
                "#,
            )?;
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.tenancy.quotas["api_calls"].period, Some(QuotaPeriod::Month));
            assert_eq!(c.tenancy.plans["pro"].quotas["seats"], 50);
            // What `saas config check` prints reads back as the same configuration.
            jail.create_file("printed.toml", &c.to_redacted_toml())?;
            let again = Config::load(Some(Path::new("printed.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(again.tenancy.plans["pro"].features["reports"], serde_json::json!(true));

            jail.create_file("saas.toml", "[tenancy.plans.pro]\nquotas = { sets = 5 }\n")?;
            assert_eq!(Config::load(None).unwrap_err().key, "tenancy.plans.pro.quotas.sets");
            jail.create_file(
                "saas.toml",
                "[tenancy.features.reports]\ndefault = false\n[tenancy.plans.pro]\nfeatures = { reports = 3 }\n",
            )?;
            assert_eq!(Config::load(None).unwrap_err().key, "tenancy.plans.pro.features.reports");
            jail.create_file("saas.toml", "[tenancy.features.reports]\ndefault = false\nrollout_percent = 101\n")?;
            assert_eq!(Config::load(None).unwrap_err().key, "tenancy.features.reports.rollout_percent");
            Ok(())
        });
    }

    #[test]
    fn the_event_bus_is_memory_or_kafka() {
        Jail::expect_with(|jail| {
            jail.set_env("SAAS_EVENT_BUS", "kafka://127.0.0.1:9092");
            match Config::load(None) {
                Ok(c) => assert!(cfg!(feature = "kafka") && c.event_bus.url == "kafka://127.0.0.1:9092"),
                Err(e) => assert!(
                    !cfg!(feature = "kafka") && e.key == "event_bus.url" && e.to_string().contains("`kafka` feature")
                ),
            }
            for (key, value, bad) in [
                ("SAAS_EVENT_BUS", "kafka://nohost", "event_bus.url"),
                ("SAAS_EVENT_BUS", "nats://x:4222", "event_bus.url"),
                ("SAAS_EVENT_BUS_TOPIC_PREFIX", "bad prefix", "event_bus.topic_prefix"),
                ("SAAS_EVENT_BUS_PARTITIONS", "0", "event_bus.partitions"),
                ("SAAS_EVENT_BUS_REPLICATION_FACTOR", "11", "event_bus.replication_factor"),
            ] {
                jail.clear_env();
                jail.set_env(key, value);
                assert_eq!(Config::load(None).unwrap_err().key, bad, "{key}={value}");
            }
            Ok(())
        });
    }

    #[test]
    fn tenancy_settings_are_validated() {
        Jail::expect_with(|jail| {
            jail.set_env("SAAS_TENANCY_RESOLUTION", "[header, subdomain]");
            jail.set_env("SAAS_TENANCY_BASE_DOMAIN", "example.com");
            jail.set_env("SAAS_TENANCY_PLATFORM_ADMIN_TOKEN", "env:ADMIN_TOKEN");
            jail.set_env("ADMIN_TOKEN", "x".repeat(40));
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.tenancy.resolution, [TenantSource::Header, TenantSource::Subdomain]);
            assert!(!c.to_redacted_toml().contains("xxxx"));

            jail.set_env("ADMIN_TOKEN", "short");
            assert_eq!(Config::load(None).unwrap_err().key, "tenancy.platform_admin_token");
            jail.set_env("ADMIN_TOKEN", "y".repeat(40));
            jail.set_env("SAAS_TENANCY_RESOLUTION", "[header, header]");
            assert_eq!(Config::load(None).unwrap_err().key, "tenancy.resolution[1]");
            jail.set_env("SAAS_TENANCY_RESOLUTION", "[cookie]");
            assert!(Config::load(None).unwrap_err().key.starts_with("tenancy.resolution"));
            jail.set_env("SAAS_TENANCY_RESOLUTION", "[header]");
            jail.set_env("SAAS_TENANCY_BASE_DOMAIN", "https://Example.com");
            assert_eq!(Config::load(None).unwrap_err().key, "tenancy.base_domain");
            Ok(())
        });
    }

    #[test]
    fn invalid_values_name_their_key() {
        Jail::expect_with(|jail| {
            jail.set_env("SAAS_SERVER_ADDR", "not-an-address");
            let e = Config::load(None).unwrap_err();
            assert_eq!(e.key, "server.addr", "{e}");
            jail.set_env("SAAS_SERVER_ADDR", "127.0.0.1:0");

            jail.set_env("SAAS_RATE_LIMIT_BURST", "0");
            let e = Config::load(None).unwrap_err();
            assert_eq!(e.key, "rate_limit.burst", "{e}");
            jail.set_env("SAAS_RATE_LIMIT_BURST", "5");

            jail.set_env("SAAS_AUDIT_CHECKPOINT_INTERVAL_SECS", "0");
            let e = Config::load(None).unwrap_err();
            assert_eq!(e.key, "audit.checkpoint_interval_secs", "{e}");
            jail.set_env("SAAS_AUDIT_CHECKPOINT_INTERVAL_SECS", "60");
            jail.set_env("SAAS_AUDIT_ENABLED", "false");
            assert!(!Config::load(None).map_err(|e| e.to_string())?.audit.enabled);

            jail.set_env("SAAS_EVENT_BUS_SCHEMA_REGISTRY_URL", "https://registry:8081");
            let e = Config::load(None).unwrap_err();
            assert_eq!(e.key, "event_bus.schema_registry_url", "{e}");
            assert!(e.to_string().contains("TLS"), "{e}");
            jail.clear_env();

            jail.set_env("SAAS_CACHE_URL", "memcached://x");
            let e = Config::load(None).unwrap_err();
            assert_eq!(e.key, "cache.url", "{e}");
            assert!(e.to_string().contains("redis://"), "{e}");
            jail.set_env("SAAS_CACHE_URL", "env:MISSING_SECRET_VAR");
            let e = Config::load(None).unwrap_err();
            assert!(e.message.contains("MISSING_SECRET_VAR"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn saas_config_names_the_file_and_saas_test_variables_are_ignored() {
        Jail::expect_with(|jail| {
            jail.create_file("custom.toml", "[rate_limit]\nburst = 3\n")?;
            jail.set_env("SAAS_CONFIG", "custom.toml");
            jail.set_env("SAAS_TEST_DATABASE_URL", "postgres://elsewhere/x");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.rate_limit.burst, 3, "read from the file SAAS_CONFIG names");
            assert_eq!(c.database_url(), "sqlite://saas-data/saas.db", "SAAS_TEST_* is not a key");
            jail.set_env("SAAS_DATABSE_URL", "sqlite://typo.db");
            let e = Config::load(None).unwrap_err();
            assert!(e.to_string().contains("databse_url"), "a typo is refused: {e}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        Jail::expect_with(|jail| {
            jail.create_file("saas.toml", "[server]\nadress = \"127.0.0.1:1\"\n")?;
            let e = Config::load(None).unwrap_err();
            assert!(e.to_string().contains("adress"), "{e}");
            Ok(())
        });
    }
}
