//! Signing keys: Ed25519, stored encrypted, rotated, published as a JWKS.
//!
//! The private half of each key is stored in `auth_signing_keys` encrypted with
//! ChaCha20-Poly1305 under the key-encryption key (`auth.key_encryption_key`). The newest
//! key signs; every key whose tokens may still be alive verifies, so rotating (on schedule,
//! `auth.key_rotation_days`, or with `saas keys rotate`) never logs anyone out. Retired keys
//! leave the JWKS once the longest-lived token they signed has expired.

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, aead::Aead};
use ed25519_dalek::{SigningKey, VerifyingKey};
use saas_core::{
    db::{Db, now_millis},
    error::{Error, Result},
};
use secrecy::{ExposeSecret, SecretSlice};
use serde::Serialize;
use tokio::sync::RwLock;

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

    /// Reads the key in `path`, or creates it there (mode 0600) with fresh random bytes: the
    /// embedded default, for one server with its data directory.
    pub fn load_or_create(path: &std::path::Path) -> Result<Self> {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Self::from_base64(&text);
        }
        let key = random::<32>()?;
        let text = base64::engine::general_purpose::STANDARD.encode(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::internal)?;
        }
        write_private(path, &text)
            .map_err(|e| Error::internal(anyhow::Error::new(e).context(format!("writing {}", path.display()))))?;
        tracing::warn!(path = %path.display(), "created a key-encryption key for signing keys; set auth.key_encryption_key when several servers share the database");
        Self::from_base64(&text)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new_from_slice(self.0.expose_secret()).expect("32-byte key")
    }

    fn seal(&self, plaintext: &[u8]) -> Result<String> {
        let nonce = random::<12>()?;
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| Error::internal(anyhow::anyhow!("encryption failed")))?;
        Ok(URL_SAFE_NO_PAD.encode([nonce.as_slice(), &sealed].concat()))
    }

    fn open(&self, sealed: &str) -> Result<Vec<u8>> {
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
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(anyhow::anyhow!("no randomness: {e}")))?;
    Ok(bytes)
}

/// One public key of the JWKS (RFC 8037: `kty` OKP, `crv` Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// Key id, as in the tokens' `kid` header.
    pub kid: String,
    /// Always `EdDSA`.
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
    signing: Option<(String, SigningKey, i64)>,
    verifying: HashMap<String, VerifyingKey>,
    jwks: Jwks,
}

/// The signing keys; cheap to clone.
#[derive(Clone)]
pub struct SigningKeys {
    db: Db,
    kek: KeyEncryptionKey,
    rotation: Duration,
    token_ttl: Duration,
    loaded: Arc<RwLock<Loaded>>,
    last_reload: Arc<tokio::sync::Mutex<std::time::Instant>>,
}

impl SigningKeys {
    /// Keys stored in `db`, rotated every `rotation`, verifying tokens that live `token_ttl`.
    pub async fn load(db: Db, kek: KeyEncryptionKey, rotation: Duration, token_ttl: Duration) -> Result<Self> {
        let empty = Loaded { signing: None, verifying: HashMap::new(), jwks: Jwks { keys: vec![] } };
        let keys = Self {
            db,
            kek,
            rotation,
            token_ttl,
            loaded: Arc::new(RwLock::new(empty)),
            last_reload: Arc::new(tokio::sync::Mutex::new(std::time::Instant::now())),
        };
        keys.rotate_if_due().await?;
        Ok(keys)
    }

    /// Creates a new signing key now; the previous ones keep verifying until their tokens
    /// have expired. Returns the new `kid`.
    pub async fn rotate(&self) -> Result<String> {
        let seed = random::<32>()?;
        let key = SigningKey::from_bytes(&seed);
        let kid = URL_SAFE_NO_PAD.encode(random::<12>()?);
        let now = now_millis();
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE auth_signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO auth_signing_keys (kid, algorithm, public_key, private_key, created_at) VALUES ($1, 'EdDSA', $2, $3, $4)",
        )
        .bind(&kid)
        .bind(URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()))
        .bind(self.kek.seal(&seed)?)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(kid, "rotated the token signing key");
        self.reload().await?;
        Ok(kid)
    }

    /// Rotates when the signing key is older than `auth.key_rotation_days` (or there is none).
    pub async fn rotate_if_due(&self) -> Result<()> {
        self.reload().await?;
        let due = match &self.loaded.read().await.signing {
            None => true,
            Some((_, _, created)) => now_millis() - created >= self.rotation.as_millis() as i64,
        };
        if due { self.rotate().await.map(drop) } else { Ok(()) }
    }

    /// Re-reads the keys (e.g. after another server rotated them).
    pub async fn reload(&self) -> Result<()> {
        // Retired keys verify until the last token they signed has expired (plus a minute
        // of clock skew).
        let oldest_alive = now_millis() - self.token_ttl.as_millis() as i64 - 60_000;
        let rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT kid, public_key, private_key, created_at, retired_at FROM auth_signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC",
        )
        .bind(oldest_alive)
        .fetch_all(self.db.pool())
        .await?;
        let mut loaded = Loaded { signing: None, verifying: HashMap::new(), jwks: Jwks { keys: vec![] } };
        for (kid, public, private, created, retired) in rows {
            let public: [u8; 32] = URL_SAFE_NO_PAD
                .decode(&public)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::internal(anyhow::anyhow!("bad public key {kid}")))?;
            let verifying = VerifyingKey::from_bytes(&public).map_err(Error::internal)?;
            if retired.is_none() && loaded.signing.is_none() {
                let seed: [u8; 32] = self
                    .kek
                    .open(&private)?
                    .try_into()
                    .map_err(|_| Error::internal(anyhow::anyhow!("bad private key {kid}")))?;
                loaded.signing = Some((kid.clone(), SigningKey::from_bytes(&seed), created));
            }
            loaded.jwks.keys.push(Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(public),
                kid: kid.clone(),
                alg: "EdDSA".into(),
                use_: "sig".into(),
            });
            loaded.verifying.insert(kid, verifying);
        }
        *self.loaded.write().await = loaded;
        Ok(())
    }

    /// The current signing key and its `kid`.
    pub(crate) async fn signer(&self) -> Result<(String, SigningKey)> {
        let loaded = self.loaded.read().await;
        let (kid, key, _) =
            loaded.signing.as_ref().ok_or_else(|| Error::internal(anyhow::anyhow!("no signing key")))?;
        Ok((kid.clone(), key.clone()))
    }

    /// The key that verifies tokens of `kid`. An unknown `kid` may be a key another server
    /// just created: the keys are re-read then, at most once every 5 s, so made-up `kid`s
    /// cannot load the database.
    pub(crate) async fn verifier(&self, kid: &str) -> Result<Option<VerifyingKey>> {
        if let Some(key) = self.loaded.read().await.verifying.get(kid) {
            return Ok(Some(*key));
        }
        {
            let mut last = self.last_reload.lock().await;
            if last.elapsed() < Duration::from_secs(5) {
                return Ok(None);
            }
            *last = std::time::Instant::now();
        }
        self.reload().await?;
        Ok(self.loaded.read().await.verifying.get(kid).copied())
    }

    /// The public keys, for `/.well-known/jwks.json`.
    pub async fn jwks(&self) -> Jwks {
        self.loaded.read().await.jwks.clone()
    }
}
