//! The three JWS signature algorithms access tokens can use (`auth.token_algorithm`): key
//! generation, the stored form of keys, signing, verification and the public JWK.
//!
//! | `alg` | key | stored private / public | JWK |
//! |---|---|---|---|
//! | `EdDSA` | Ed25519 | 32-byte seed / 32 bytes | `OKP`, `crv` `Ed25519`, `x` |
//! | `ES256` | P-256 | 32-byte scalar / SEC1 uncompressed point | `EC`, `crv` `P-256`, `x`, `y` |
//! | `RS256` | RSA 2048, e = 65537 | PKCS#8 DER / SPKI DER | `RSA`, `n`, `e` |
//!
//! A key verifies only signatures of its own algorithm: a token's `alg` header must name the
//! algorithm of the key its `kid` names, which rules out algorithm confusion.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::Signer as _;
use rsa::{
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey},
    signature::{SignatureEncoding, Verifier as _},
    traits::PublicKeyParts,
};
use saas_core::{
    config::TokenAlgorithm,
    error::{Error, Result},
};
use sha2::Sha256;

use crate::keys::{Jwk, random};

/// Bits of generated RSA keys.
const RSA_BITS: usize = 2048;

/// A private signing key of one of the algorithms.
#[derive(Clone)]
pub(crate) enum PrivateKey {
    EdDSA(ed25519_dalek::SigningKey),
    ES256(p256::ecdsa::SigningKey),
    RS256(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
}

/// A public verifying key of one of the algorithms.
#[derive(Clone)]
pub(crate) enum PublicKey {
    EdDSA(ed25519_dalek::VerifyingKey),
    ES256(p256::ecdsa::VerifyingKey),
    RS256(Box<rsa::pkcs1v15::VerifyingKey<Sha256>>),
}

fn bad(what: &str) -> Error {
    Error::internal(anyhow::anyhow!("a stored signing key is malformed: {what}"))
}

impl PrivateKey {
    /// A fresh random key.
    pub(crate) fn generate(algorithm: TokenAlgorithm) -> Result<Self> {
        Ok(match algorithm {
            TokenAlgorithm::EdDSA => Self::EdDSA(ed25519_dalek::SigningKey::from_bytes(&random::<32>()?)),
            TokenAlgorithm::ES256 => loop {
                // A random 32-byte string is a valid scalar but with probability ~2^-32.
                if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&random::<32>()?) {
                    break Self::ES256(key);
                }
            },
            TokenAlgorithm::RS256 => {
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS).map_err(Error::internal)?;
                Self::RS256(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
            }
        })
    }

    /// The private key as stored (before sealing).
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(match self {
            Self::EdDSA(key) => key.to_bytes().to_vec(),
            Self::ES256(key) => key.to_bytes().to_vec(),
            Self::RS256(key) => key.as_ref().as_ref().to_pkcs8_der().map_err(Error::internal)?.as_bytes().to_vec(),
        })
    }

    /// The key of `algorithm` stored as `bytes`.
    pub(crate) fn from_bytes(algorithm: TokenAlgorithm, bytes: &[u8]) -> Result<Self> {
        Ok(match algorithm {
            TokenAlgorithm::EdDSA => {
                Self::EdDSA(ed25519_dalek::SigningKey::from_bytes(bytes.try_into().map_err(|_| bad("Ed25519 seed"))?))
            }
            TokenAlgorithm::ES256 => {
                Self::ES256(p256::ecdsa::SigningKey::from_slice(bytes).map_err(|_| bad("P-256 scalar"))?)
            }
            TokenAlgorithm::RS256 => {
                let key = rsa::RsaPrivateKey::from_pkcs8_der(bytes).map_err(|_| bad("RSA PKCS#8"))?;
                Self::RS256(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
            }
        })
    }

    /// Its public half.
    pub(crate) fn public(&self) -> PublicKey {
        match self {
            Self::EdDSA(key) => PublicKey::EdDSA(key.verifying_key()),
            Self::ES256(key) => PublicKey::ES256(*key.verifying_key()),
            Self::RS256(key) => {
                let public = key.as_ref().as_ref().to_public_key();
                PublicKey::RS256(Box::new(rsa::pkcs1v15::VerifyingKey::new(public)))
            }
        }
    }

    /// The JWS signature of `message` (for ES256, `r || s` as RFC 7518 3.4 asks).
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::EdDSA(key) => key.sign(message).to_bytes().to_vec(),
            Self::ES256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            // Blinded (randomised) RSA: the private-key operation's timing does not depend on
            // the message (RUSTSEC-2023-0071, the Marvin attack).
            Self::RS256(key) => {
                use rsa::signature::RandomizedSigner;
                key.sign_with_rng(&mut rand_core::OsRng, message).to_vec()
            }
        }
    }
}

impl PublicKey {
    /// The algorithm this key verifies.
    pub(crate) fn algorithm(&self) -> TokenAlgorithm {
        match self {
            Self::EdDSA(_) => TokenAlgorithm::EdDSA,
            Self::ES256(_) => TokenAlgorithm::ES256,
            Self::RS256(_) => TokenAlgorithm::RS256,
        }
    }

    /// The public key as stored.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(match self {
            Self::EdDSA(key) => key.as_bytes().to_vec(),
            Self::ES256(key) => key.to_encoded_point(false).as_bytes().to_vec(),
            Self::RS256(key) => key.as_ref().as_ref().to_public_key_der().map_err(Error::internal)?.into_vec(),
        })
    }

    /// The key of `algorithm` stored as `bytes`.
    pub(crate) fn from_bytes(algorithm: TokenAlgorithm, bytes: &[u8]) -> Result<Self> {
        Ok(match algorithm {
            TokenAlgorithm::EdDSA => Self::EdDSA(
                ed25519_dalek::VerifyingKey::from_bytes(bytes.try_into().map_err(|_| bad("Ed25519 public key"))?)
                    .map_err(|_| bad("Ed25519 public key"))?,
            ),
            TokenAlgorithm::ES256 => {
                Self::ES256(p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(|_| bad("P-256 point"))?)
            }
            TokenAlgorithm::RS256 => {
                let key = rsa::RsaPublicKey::from_public_key_der(bytes).map_err(|_| bad("RSA SPKI"))?;
                Self::RS256(Box::new(rsa::pkcs1v15::VerifyingKey::new(key)))
            }
        })
    }

    /// Whether `signature` is this key's signature of `message`. Ed25519 is checked
    /// strictly (no small-order keys or non-canonical encodings).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::EdDSA(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify_strict(message, &signature).is_ok()),
            Self::ES256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
            Self::RS256(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
        }
    }

    /// The JWK publishing this key as `kid`.
    pub(crate) fn jwk(&self, kid: &str) -> Jwk {
        let b64 = |bytes: &[u8]| Some(URL_SAFE_NO_PAD.encode(bytes));
        let mut jwk = Jwk {
            kty: String::new(),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            kid: kid.to_owned(),
            alg: self.algorithm().as_str().to_owned(),
            use_: "sig".into(),
        };
        match self {
            Self::EdDSA(key) => {
                jwk.kty = "OKP".into();
                jwk.crv = Some("Ed25519".into());
                jwk.x = b64(key.as_bytes());
            }
            Self::ES256(key) => {
                let point = key.to_encoded_point(false);
                jwk.kty = "EC".into();
                jwk.crv = Some("P-256".into());
                jwk.x = point.x().and_then(|x| b64(x));
                jwk.y = point.y().and_then(|y| b64(y));
            }
            Self::RS256(key) => {
                let public: &rsa::RsaPublicKey = key.as_ref().as_ref();
                jwk.kty = "RSA".into();
                jwk.n = b64(&public.n().to_bytes_be());
                jwk.e = b64(&public.e().to_bytes_be());
            }
        }
        jwk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_signs_verifies_and_survives_storage() {
        for algorithm in [TokenAlgorithm::EdDSA, TokenAlgorithm::ES256, TokenAlgorithm::RS256] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let stored = PrivateKey::from_bytes(algorithm, &key.to_bytes().unwrap()).unwrap();
            let public = PublicKey::from_bytes(algorithm, &stored.public().to_bytes().unwrap()).unwrap();
            let signature = key.sign(b"header.payload");
            assert!(public.verify(b"header.payload", &signature), "{algorithm:?}");
            assert!(!public.verify(b"header.payloaD", &signature), "{algorithm:?}: another message");
            assert!(!public.verify(b"header.payload", &signature[1..]), "{algorithm:?}: a truncated signature");
            let other = PrivateKey::generate(algorithm).unwrap();
            assert!(!public.verify(b"header.payload", &other.sign(b"header.payload")), "{algorithm:?}: another key");
            assert_eq!(public.jwk("k").alg, algorithm.as_str());
        }
        let es = PrivateKey::generate(TokenAlgorithm::ES256).unwrap();
        assert_eq!(es.sign(b"m").len(), 64, "ES256 signatures are r || s");
        let rs = PrivateKey::generate(TokenAlgorithm::RS256).unwrap().public().jwk("k");
        assert_eq!((rs.kty.as_str(), rs.e.as_deref()), ("RSA", Some("AQAB")));
        assert_eq!(URL_SAFE_NO_PAD.decode(rs.n.unwrap()).unwrap().len(), 256, "2048-bit modulus");
    }

    #[test]
    fn a_key_refuses_signatures_of_another_algorithm() {
        let ed = PrivateKey::generate(TokenAlgorithm::EdDSA).unwrap();
        let es = PrivateKey::generate(TokenAlgorithm::ES256).unwrap();
        // Both signatures are 64 bytes: the ES256 key must not take an Ed25519 one.
        assert!(!es.public().verify(b"m", &ed.sign(b"m")));
        assert!(!ed.public().verify(b"m", &es.sign(b"m")));
    }
}
