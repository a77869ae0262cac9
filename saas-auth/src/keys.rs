//! Signing keys: Ed25519 (or P-256, or RSA 2048: `auth.token_algorithm`), stored encrypted, rotated,
//! published as a JWKS.
//!
//! The private half of each key is stored in `auth_signing_keys` encrypted with
//! ChaCha20-Poly1305 under the key-encryption key (`auth.key_encryption_key`). New keys use
//! `auth.token_algorithm`; when it changes, the next start rotates to a key of the new
//! algorithm, and keys of the old one keep verifying until their tokens have expired.
//!
//! Every server re-reads the keys each [`RELOAD_INTERVAL`]. Rotation (on schedule,
//! `auth.key_rotation_days`, or `saas keys rotate`) is two-phase so that no server ever sees
//! a token it cannot verify: a new key is published for verification at once but signs only
//! from one reload interval later (its `activates_at`), when every server has loaded it; the
//! key it replaces signs until then and verifies until the longest-lived token it can have
//! signed has expired. `saas keys revoke` removes a key at once (every server within one
//! reload interval), for a key that may have leaked.

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, aead::Aead};
use saas_core::{
    config::TokenAlgorithm,
    db::{Db, now_millis},
    error::{Error, Result},
    events::{Envelope, outbox},
};
use secrecy::{ExposeSecret, SecretSlice};
use serde::Serialize;
use tokio::sync::{Mutex, RwLock};

use crate::jws::{PrivateKey, PublicKey};

/// How often every server re-reads the keys, and how long a new key waits before it signs.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// The key that encrypts signing keys at rest: 32 bytes.
#[derive(Clone)]
pub struct KeyEncryptionKey(Arc<SecretSlice<u8>>);

impl KeyEncryptionKey {
    /// From 32 bytes in base64 (`auth.key_encryption_key`).
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("the key-encryption key must be 32 bytes of base64")))?;
        Ok(Self(Arc::new(SecretSlice::from(bytes))))
    }

    /// The key `config` names: `auth.key_encryption_key`, else the file `<data_dir>/auth-kek`,
    /// which must exist (unlike [`load_or_create`](Self::load_or_create)): for commands that
    /// must not make a new key, such as `saas audit verify`.
    pub fn from_config(config: &saas_core::config::Config) -> Result<Self> {
        if let Some(key) = &config.auth.key_encryption_key {
            return Self::from_base64(key.expose_secret());
        }
        let path = config.data_dir.join("auth-kek");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::internal(anyhow::anyhow!(
                "no key-encryption key: auth.key_encryption_key is unset and {} cannot be read ({e}); use the servers' configuration and --data-dir",
                path.display()
            ))
        })?;
        Self::from_base64(&text)
    }

    /// Reads the key in `path`, or creates it there (mode 0600) with fresh random bytes: the
    /// embedded default, for one server with its data directory.
    pub fn load_or_create(path: &std::path::Path) -> Result<Self> {
        let context = |e: std::io::Error, what: &str| {
            Error::internal(anyhow::Error::new(e).context(format!("{what} {}", path.display())))
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                warn_if_readable_by_others(path);
                return Self::from_base64(&text);
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(context(e, "reading")),
            Err(_) => {}
        }
        let key = random::<32>()?;
        let text = base64::engine::general_purpose::STANDARD.encode(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| context(e, "creating the directory of"))?;
        }
        // Written whole under another name, then renamed: a crash never leaves a partial key.
        let partial = path.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        write_private(&partial, &text).map_err(|e| context(e, "writing"))?;
        std::fs::rename(&partial, path).map_err(|e| context(e, "renaming to"))?;
        tracing::warn!(path = %path.display(), "created a key-encryption key for signing keys; set auth.key_encryption_key when several servers share the database");
        Self::from_base64(&text)
    }

    /// The audit key (checkpoint signatures, entry MACs) derived from this key.
    pub fn audit_key(&self) -> crate::audit::AuditKey {
        crate::audit::AuditKey::from_seed(&self.derive("saas-rs audit key v1"))
    }

    /// A 32-byte key for `purpose` (HMAC-SHA256 under this key): the same on every server
    /// sharing this key, and unrelated to the keys of other purposes.
    pub(crate) fn derive(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.0.expose_secret()).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new_from_slice(self.0.expose_secret()).expect("32-byte key")
    }

    pub(crate) fn seal(&self, plaintext: &[u8]) -> Result<String> {
        let nonce = random::<12>()?;
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| Error::internal(anyhow::anyhow!("encryption failed")))?;
        Ok(URL_SAFE_NO_PAD.encode([nonce.as_slice(), &sealed].concat()))
    }

    pub(crate) fn open(&self, sealed: &str) -> Result<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(Error::internal)?;
        let (nonce, ciphertext) =
            bytes.split_at_checked(12).ok_or_else(|| Error::internal(anyhow::anyhow!("sealed key too short")))?;
        self.cipher().decrypt(Nonce::from_slice(nonce), ciphertext).map_err(|_| {
            Error::internal(anyhow::anyhow!(
                "cannot decrypt a signing key: is auth.key_encryption_key the one it was stored with?"
            ))
        })
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        tracing::warn!(path = %path.display(), "the key-encryption key file is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &std::path::Path) {}

/// Creates `path` (it must not exist) readable by its owner only, holding `text`.
#[cfg(unix)]
pub(crate) fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(text.as_bytes())
}

#[cfg(not(unix))]
pub(crate) fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(anyhow::anyhow!("no randomness: {e}")))?;
    Ok(bytes)
}

/// One public key of the JWKS (RFC 7517; Ed25519 as RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    /// `OKP` (EdDSA), `EC` (ES256) or `RSA` (RS256).
    pub kty: String,
    /// `Ed25519` or `P-256`; absent for RSA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// The Ed25519 public key, or the P-256 point's x coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// The P-256 point's y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// The RSA public exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Key id, as in the tokens' `kid` header.
    pub kid: String,
    /// `EdDSA`, `ES256` or `RS256`: the only `alg` this key verifies.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// `/.well-known/jwks.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Jwks {
    /// The keys that verify tokens now.
    pub keys: Vec<Jwk>,
}

struct Loaded {
    /// The key that signs now: kid, key, created_at.
    signing: Option<(String, PrivateKey, i64)>,
    /// The newest key's created_at and algorithm, for the rotation schedule.
    newest: Option<(i64, TokenAlgorithm)>,
    verifying: HashMap<String, PublicKey>,
    jwks: Jwks,
}

/// A row of `auth_signing_keys`: kid, algorithm, public key, sealed private key,
/// created_at, activates_at, retired_at.
type KeyRow = (String, String, String, String, i64, i64, Option<i64>);

/// The signing keys; cheap to clone.
#[derive(Clone)]
pub struct SigningKeys {
    db: Db,
    kek: KeyEncryptionKey,
    algorithm: TokenAlgorithm,
    rotation: Duration,
    token_ttl: Duration,
    loaded: Arc<RwLock<Loaded>>,
    /// Serialises reloads: an older read must never replace a newer one.
    reloading: Arc<Mutex<()>>,
    last_reload: Arc<Mutex<std::time::Instant>>,
    reload_interval: Duration,
}

impl SigningKeys {
    /// Keys of `algorithm` stored in `db`, rotated every `rotation`, verifying tokens that
    /// live `token_ttl`. Creates the first key, or rotates when the newest is due or of
    /// another algorithm.
    pub async fn load(
        db: Db,
        kek: KeyEncryptionKey,
        algorithm: TokenAlgorithm,
        rotation: Duration,
        token_ttl: Duration,
    ) -> Result<Self> {
        let empty = Loaded { signing: None, newest: None, verifying: HashMap::new(), jwks: Jwks { keys: vec![] } };
        let keys = Self {
            db,
            kek,
            algorithm,
            rotation,
            token_ttl,
            loaded: Arc::new(RwLock::new(empty)),
            reloading: Arc::new(Mutex::new(())),
            last_reload: Arc::new(Mutex::new(std::time::Instant::now())),
            reload_interval: RELOAD_INTERVAL,
        };
        keys.rotate_when_due(true).await?;
        Ok(keys)
    }

    /// Uses another reload interval than [`RELOAD_INTERVAL`] (tests): the delay before a
    /// new key signs, and the extra time a retired key verifies. The server must then
    /// reload (call [`rotate_if_due`](Self::rotate_if_due)) that often.
    pub fn with_reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// How often the keys should be re-read.
    pub fn reload_interval(&self) -> Duration {
        self.reload_interval
    }

    /// Creates a new signing key. It verifies at once and signs from one
    /// [`RELOAD_INTERVAL`] on (at once when no key can sign), when every server has loaded
    /// it; the key it replaces signs until then. Returns the new `kid`.
    pub async fn rotate(&self) -> Result<String> {
        // RSA key generation takes a good fraction of a second: off the async runtime.
        let algorithm = self.algorithm;
        let key =
            tokio::task::spawn_blocking(move || PrivateKey::generate(algorithm)).await.map_err(Error::internal)??;
        let kid = URL_SAFE_NO_PAD.encode(random::<12>()?);
        let now = now_millis();
        let mut tx = self.db.begin().await?;
        let signers: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM auth_signing_keys WHERE retired_at IS NULL AND revoked_at IS NULL",
        )
        .fetch_one(&mut *tx)
        .await?;
        let activates_at = if signers == 0 { now } else { now + self.reload_interval.as_millis() as i64 };
        sqlx::query("UPDATE auth_signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(activates_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO auth_signing_keys (kid, algorithm, public_key, private_key, created_at, activates_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&kid)
        .bind(algorithm.as_str())
        .bind(URL_SAFE_NO_PAD.encode(key.public().to_bytes()?))
        .bind(self.kek.seal(&key.to_bytes()?)?)
        .bind(now)
        .bind(activates_at)
        .execute(&mut *tx)
        .await?;
        let event = Envelope::of(&crate::events::SigningKeyRotated {
            kid: kid.clone(),
            algorithm: algorithm.as_str().to_owned(),
            activates_at,
        })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        tracing::info!(kid, algorithm = algorithm.as_str(), "rotated the token signing key");
        self.reload().await?;
        Ok(kid)
    }

    /// Removes key `kid` at once: tokens it signed stop verifying on every server within one
    /// [`RELOAD_INTERVAL`]. When it was the signing key, a new one replaces it immediately.
    /// For a key that may have leaked. False when there is no such key.
    pub async fn revoke(&self, kid: &str) -> Result<bool> {
        let now = now_millis();
        let mut tx = self.db.begin().await?;
        let done = sqlx::query(
            "UPDATE auth_signing_keys SET revoked_at = $2, retired_at = COALESCE(retired_at, $2) WHERE kid = $1 AND revoked_at IS NULL",
        )
        .bind(kid)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        outbox::append(&mut tx, &Envelope::of(&crate::events::SigningKeyRevoked { kid: kid.to_owned() })?).await?;
        tx.commit().await?;
        tracing::warn!(kid, "revoked a token signing key");
        let signers: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM auth_signing_keys WHERE revoked_at IS NULL AND (retired_at IS NULL OR retired_at > $1)",
        )
        .bind(now)
        .fetch_one(self.db.pool())
        .await?;
        if signers == 0 {
            self.rotate().await?;
        } else {
            self.reload().await?;
        }
        Ok(true)
    }

    /// Rotates when the newest key is older than `auth.key_rotation_days`, or no key can sign.
    ///
    /// A newest key of another algorithm than `auth.token_algorithm` is replaced only when
    /// a server starts: servers configured differently during a rolling change would
    /// otherwise replace each other's keys every minute.
    pub async fn rotate_if_due(&self) -> Result<()> {
        self.rotate_when_due(false).await
    }

    async fn rotate_when_due(&self, starting: bool) -> Result<()> {
        self.reload().await?;
        // One guard: a second read lock in the same expression would wait behind a queued
        // writer (a concurrent reload) that waits for the first one.
        let loaded = self.loaded.read().await;
        let due = match (&loaded.signing, loaded.newest) {
            (None, _) | (_, None) => true,
            (Some(_), Some((newest, algorithm))) => {
                now_millis() - newest >= self.rotation.as_millis() as i64 || (starting && algorithm != self.algorithm)
            }
        };
        drop(loaded); // rotating reloads, which takes the write lock
        if due { self.rotate().await.map(drop) } else { Ok(()) }
    }

    /// Re-reads the keys (every server does each [`RELOAD_INTERVAL`]).
    pub async fn reload(&self) -> Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let now = now_millis();
        // A retired key may still have signed until a server's next reload; its tokens
        // live `token_ttl` after that, plus a minute of clock skew.
        let oldest_alive = now - self.token_ttl.as_millis() as i64 - self.reload_interval.as_millis() as i64 - 60_000;
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, algorithm, public_key, private_key, created_at, activates_at, retired_at FROM auth_signing_keys \
             WHERE revoked_at IS NULL AND (retired_at IS NULL OR retired_at > $1) ORDER BY activates_at DESC",
        )
        .bind(oldest_alive)
        .fetch_all(self.db.pool())
        .await?;
        let algorithm_of = |kid: &str, name: &str| {
            TokenAlgorithm::from_name(name)
                .ok_or_else(|| Error::internal(anyhow::anyhow!("signing key {kid} has an unknown algorithm {name}")))
        };
        let newest = match rows.iter().max_by_key(|r| r.4) {
            Some(row) => Some((row.4, algorithm_of(&row.0, &row.1)?)),
            None => None,
        };
        // Rows come newest activation first: the first active key signs. A key still
        // waiting to activate signs only when no key is active (it was revoked meanwhile).
        let signs = |&(activates, retired): &(i64, Option<i64>)| activates <= now && retired.is_none_or(|r| r > now);
        let signer = rows.iter().position(|r| signs(&(r.5, r.6))).or_else(|| rows.iter().position(|r| r.6.is_none()));
        let mut loaded = Loaded { signing: None, newest, verifying: HashMap::new(), jwks: Jwks { keys: vec![] } };
        for (i, (kid, algorithm, public, private, created, _, _)) in rows.into_iter().enumerate() {
            let algorithm = algorithm_of(&kid, &algorithm)?;
            let public = URL_SAFE_NO_PAD
                .decode(&public)
                .map_err(|_| Error::internal(anyhow::anyhow!("bad public key {kid}")))
                .and_then(|bytes| PublicKey::from_bytes(algorithm, &bytes))?;
            if Some(i) == signer {
                let private = PrivateKey::from_bytes(algorithm, &self.kek.open(&private)?)?;
                loaded.signing = Some((kid.clone(), private, created));
            }
            loaded.jwks.keys.push(public.jwk(&kid));
            loaded.verifying.insert(kid, public);
        }
        *self.loaded.write().await = loaded;
        Ok(())
    }

    /// The current signing key and its `kid`.
    pub(crate) async fn signer(&self) -> Result<(String, PrivateKey)> {
        let loaded = self.loaded.read().await;
        let (kid, key, _) =
            loaded.signing.as_ref().ok_or_else(|| Error::internal(anyhow::anyhow!("no signing key")))?;
        Ok((kid.clone(), key.clone()))
    }

    /// The key that verifies tokens of `kid`. An unknown `kid` may be a key another server
    /// just created: the keys are re-read then, at most once every 5 s, so made-up `kid`s
    /// cannot load the database.
    pub(crate) async fn verifier(&self, kid: &str) -> Result<Option<PublicKey>> {
        if let Some(key) = self.loaded.read().await.verifying.get(kid) {
            return Ok(Some(key.clone()));
        }
        {
            let mut last = self.last_reload.lock().await;
            if last.elapsed() < Duration::from_secs(5) {
                return Ok(None);
            }
            *last = std::time::Instant::now();
        }
        self.reload().await?;
        Ok(self.loaded.read().await.verifying.get(kid).cloned())
    }

    /// The key-encryption key, for other secrets stored sealed (MFA secrets).
    pub(crate) fn kek(&self) -> &KeyEncryptionKey {
        &self.kek
    }

    /// A secret derived from the key-encryption key, for other keyed hashes the server
    /// needs (`Idempotency-Key` fingerprints); the same on every server sharing the key.
    pub fn fingerprint_secret(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"saas-rs idempotency fingerprint key v1\0");
        hasher.update(self.kek.0.expose_secret());
        hasher.finalize().into()
    }

    /// The public keys, for `/.well-known/jwks.json`.
    pub async fn jwks(&self) -> Jwks {
        self.loaded.read().await.jwks.clone()
    }
}
