//! Access tokens: what verifies, what is rejected, and key rotation.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use saas_auth::{
    keys::{KeyEncryptionKey, SigningKeys},
    token::{AccessTokens, Claims},
};
use saas_core::{
    config::TokenAlgorithm,
    db::{Db, migrate},
    id::{TenantId, UserId},
};

async fn setup() -> (Db, SigningKeys, AccessTokens, tempfile::TempDir) {
    setup_with(TokenAlgorithm::EdDSA).await
}

async fn setup_with(algorithm: TokenAlgorithm) -> (Db, SigningKeys, AccessTokens, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/a.db", dir.path().display()), Default::default()).await.unwrap();
    migrate::run(&db, &[&saas_core::events::MIGRATIONS, &saas_auth::MIGRATIONS]).await.unwrap();
    let kek = KeyEncryptionKey::load_or_create(&dir.path().join("kek")).unwrap();
    let ttl = Duration::from_secs(900);
    let keys = SigningKeys::load(db.clone(), kek, algorithm, Duration::from_secs(30 * 86400), ttl).await.unwrap();
    let tokens = AccessTokens::new(keys.clone(), "saas-rs", "saas-rs", ttl);
    (db, keys, tokens, dir)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims() -> Claims {
    Claims {
        sub: UserId::new(),
        tid: TenantId::new(),
        sid: "ses_x".into(),
        roles: vec!["owner".into()].into(),
        perms: vec!["*".into()].into(),
        iss: "saas-rs".into(),
        aud: "saas-rs".into(),
        exp: now() + 900,
        iat: now(),
        nbf: now(),
    }
}

fn b64(json: serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap())
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[tokio::test]
async fn a_token_verifies_and_every_forgery_is_rejected() {
    for algorithm in [TokenAlgorithm::EdDSA, TokenAlgorithm::ES256, TokenAlgorithm::RS256] {
        forgeries_are_rejected(algorithm).await;
    }
}

async fn forgeries_are_rejected(algorithm: TokenAlgorithm) {
    let (_db, keys, tokens, _dir) = setup_with(algorithm).await;
    let user = UserId::new();
    let tenant = TenantId::new();
    let token = tokens.issue(user, tenant, "ses_1", vec!["owner".into()], vec!["*".into()]).await.unwrap();
    let verified = tokens.verify(&token).await.unwrap();
    assert_eq!((verified.sub, verified.tid, &*verified.sid), (user, tenant, "ses_1"));
    assert_eq!(verified.exp - verified.iat, 900);
    let (header, payload, _) = {
        let mut parts = token.split('.');
        (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned())
    };
    let header_json: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&header).unwrap()).unwrap();
    assert_eq!(header_json["alg"], algorithm.as_str());
    let kid = header_json["kid"].as_str().unwrap().to_owned();
    let jwks = keys.jwks().await;
    assert_eq!(jwks.keys.len(), 1);
    let jwk = &jwks.keys[0];
    let expected = match algorithm {
        TokenAlgorithm::EdDSA => ("OKP", Some("Ed25519")),
        TokenAlgorithm::ES256 => ("EC", Some("P-256")),
        TokenAlgorithm::RS256 => ("RSA", None),
    };
    assert_eq!((jwk.kid.as_str(), jwk.alg.as_str()), (kid.as_str(), algorithm.as_str()));
    assert_eq!((jwk.kty.as_str(), jwk.crv.as_deref()), expected);

    let mut forged = Vec::new();
    // Expired, and not yet valid (beyond the 60 s leeway).
    forged.push((
        "expired",
        tokens.sign(&Claims { exp: now() - 120, iat: now() - 1000, nbf: now() - 1000, ..claims() }).await.unwrap(),
    ));
    forged.push((
        "not yet valid",
        tokens.sign(&Claims { nbf: now() + 3600, exp: now() + 7200, ..claims() }).await.unwrap(),
    ));
    // Tampered payload: another tenant, the original signature. The genuine token is cached
    // by now (under its signature): forgeries that carry it must not be taken from there.
    let mut other = serde_json::from_slice::<serde_json::Value>(&URL_SAFE_NO_PAD.decode(&payload).unwrap()).unwrap();
    other["tid"] = TenantId::new().to_string().into();
    let signature = token.rsplit('.').next().unwrap();
    forged.push(("tampered", format!("{header}.{}.{signature}", b64(other))));
    // alg none.
    forged.push((
        "alg none",
        format!("{}.{payload}.", b64(serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid}))),
    ));
    // HS256 with the public key as the HMAC secret (algorithm confusion).
    let public = URL_SAFE_NO_PAD.decode(jwk.x.as_ref().or(jwk.n.as_ref()).unwrap()).unwrap();
    let hs_header = b64(serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid}));
    let mac = hmac_sha256(&public, format!("{hs_header}.{payload}").as_bytes());
    forged.push(("HS256 with the public key", format!("{hs_header}.{payload}.{}", URL_SAFE_NO_PAD.encode(mac))));
    // The genuine signature under a header naming another asymmetric algorithm.
    for other in ["EdDSA", "ES256", "RS256", "PS256", "ES384"].into_iter().filter(|a| *a != algorithm.as_str()) {
        let swapped = b64(serde_json::json!({"alg": other, "typ": "JWT", "kid": kid}));
        forged.push(("alg swapped", format!("{swapped}.{payload}.{signature}")));
    }
    // Unknown kid, otherwise genuine.
    let unknown = b64(serde_json::json!({"alg": algorithm.as_str(), "typ": "JWT", "kid": "nope"}));
    forged.push(("unknown kid", format!("{unknown}.{payload}.{signature}")));
    // Wrong audience and issuer.
    forged.push(("wrong audience", tokens.sign(&Claims { aud: "another-app".into(), ..claims() }).await.unwrap()));
    forged.push(("wrong issuer", tokens.sign(&Claims { iss: "evil".into(), ..claims() }).await.unwrap()));
    forged.push((
        "longer-lived than issued",
        tokens.sign(&Claims { exp: now() + 30 * 86400, ..claims() }).await.unwrap(),
    ));
    forged.push(("garbage", "a.b.c".into()));
    forged.push(("two parts", format!("{header}.{payload}")));
    for (what, token) in forged {
        let error = tokens.verify(&token).await.unwrap_err();
        assert_eq!((error.status().as_u16(), error.code()), (401, "invalid_token"), "{algorithm:?}: {what}");
        assert!(tokens.verify_cached(&token).is_none(), "{algorithm:?}: {what} is not found in the cache");
    }
    // The cache answers for the genuine token alone, whatever bytes come with its signature
    // (the request path looks it up with the header's bytes unchecked).
    assert_eq!(tokens.verify_cached(&token).map(|claims| claims.tid), Some(tenant), "cached once verified");
    let mut non_ascii = token.clone().into_bytes();
    non_ascii[1] = 0xe9;
    for bytes in [non_ascii, format!("{token} ").into_bytes(), token.as_bytes()[1..].to_vec()] {
        assert!(tokens.verify_cached(&bytes).is_none(), "{algorithm:?}: {bytes:?}");
    }
    assert_eq!(tokens.verify(&token).await.unwrap().tid, tenant, "the genuine token still verifies");
}

#[tokio::test]
async fn changing_the_algorithm_rotates_and_old_tokens_keep_verifying() {
    let (db, _keys, tokens, dir) = setup().await;
    let old = tokens.issue(UserId::new(), TenantId::new(), "ses_1", vec![], vec![]).await.unwrap();
    let kek = KeyEncryptionKey::load_or_create(&dir.path().join("kek")).unwrap();
    let ttl = Duration::from_secs(900);
    let keys =
        SigningKeys::load(db.clone(), kek, TokenAlgorithm::ES256, Duration::from_secs(86400), ttl).await.unwrap();
    let algorithms: Vec<String> = keys.jwks().await.keys.into_iter().map(|k| k.alg).collect();
    assert_eq!(algorithms, ["ES256", "EdDSA"], "a P-256 key is published beside the old one");
    let restarted = AccessTokens::new(keys, "saas-rs", "saas-rs", ttl);
    assert!(restarted.verify(&old).await.is_ok(), "tokens of the Ed25519 key still verify");
}

fn kid_of(token: &str) -> String {
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_and_keys_are_encrypted_at_rest() {
    let (db, keys, _, dir) = setup().await;
    let keys = keys.with_reload_interval(Duration::from_millis(300));
    let tokens = AccessTokens::new(keys.clone(), "saas-rs", "saas-rs", Duration::from_secs(900));
    let before = tokens.issue(UserId::new(), TenantId::new(), "ses_1", vec![], vec![]).await.unwrap();
    let new_kid = keys.rotate().await.unwrap();
    // Published at once, signing only after every server has had a reload to learn it.
    assert_eq!(keys.jwks().await.keys.len(), 2);
    let meanwhile = tokens.issue(UserId::new(), TenantId::new(), "ses_2", vec![], vec![]).await.unwrap();
    assert_eq!(kid_of(&meanwhile), kid_of(&before), "the old key signs until the new one activates");
    tokio::time::sleep(Duration::from_millis(400)).await;
    keys.reload().await.unwrap();
    let after = tokens.issue(UserId::new(), TenantId::new(), "ses_3", vec![], vec![]).await.unwrap();
    assert_eq!(kid_of(&after), new_kid, "then the new key signs");
    for token in [&before, &meanwhile, &after] {
        assert!(tokens.verify(token).await.is_ok(), "tokens of both keys verify");
    }

    // Revoking a key (suspected leak) stops its tokens at once on this server.
    let fresh = AccessTokens::new(keys.clone(), "saas-rs", "saas-rs", Duration::from_secs(900));
    assert!(keys.revoke(&kid_of(&before)).await.unwrap());
    assert_eq!(fresh.verify(&before).await.unwrap_err().code(), "invalid_token");
    assert!(fresh.verify(&after).await.is_ok());
    assert!(!keys.revoke("no-such-kid").await.unwrap());
    // Revoking the signing key puts a new one in its place at once.
    assert!(keys.revoke(&new_kid).await.unwrap());
    let replacement = fresh.issue(UserId::new(), TenantId::new(), "ses_4", vec![], vec![]).await.unwrap();
    assert_ne!(kid_of(&replacement), new_kid);
    assert!(fresh.verify(&replacement).await.is_ok());

    // Another server (same database and key-encryption key) verifies both.
    let kek = KeyEncryptionKey::load_or_create(&dir.path().join("kek")).unwrap();
    let other_keys =
        SigningKeys::load(db.clone(), kek, TokenAlgorithm::EdDSA, Duration::from_secs(86400), Duration::from_secs(900))
            .await
            .unwrap();
    let other = AccessTokens::new(other_keys, "saas-rs", "saas-rs", Duration::from_secs(900));
    assert!(other.verify(&replacement).await.is_ok() && other.verify(&before).await.is_err());

    // The stored private keys are sealed, and useless under another key-encryption key.
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT private_key FROM auth_signing_keys").fetch_all(db.pool()).await.unwrap();
    assert!(stored.iter().all(|s| URL_SAFE_NO_PAD.decode(s).unwrap().len() == 12 + 32 + 16), "nonce, sealed seed, tag");
    let wrong = KeyEncryptionKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap();
    assert!(
        SigningKeys::load(
            db.clone(),
            wrong,
            TokenAlgorithm::EdDSA,
            Duration::from_secs(86400),
            Duration::from_secs(900)
        )
        .await
        .is_err()
    );
}
