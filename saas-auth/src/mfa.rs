//! Multi-factor authentication: TOTP (RFC 6238) and recovery codes.
//!
//! Enrolment makes a 160-bit secret (stored sealed under the key-encryption key) and answers
//! it with an `otpauth://` URI and the same as an SVG QR code; confirming it with a first code
//! turns MFA on and answers 10 single-use recovery codes (stored as hashes). From then on a
//! login answers a short-lived MFA challenge instead of tokens; the tokens come with a code:
//! 6 digits, 30-second steps, one step of clock skew either way, each step usable once.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use saas_core::{
    db::{TenantTx, now_millis},
    error::{Error, Result},
    id::UserId,
};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::keys::{KeyEncryptionKey, random};

/// Seconds a TOTP code stands for.
pub const STEP_SECS: u64 = 30;
/// Recovery codes made at confirmation.
pub const RECOVERY_CODES: usize = 10;

/// The 6-digit TOTP code of `secret` for time step `step` (RFC 6238 with HMAC-SHA-1).
pub fn totp(secret: &[u8], step: u64) -> u32 {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let binary =
        u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    binary % 1_000_000
}

/// RFC 4648 base32 without padding, as authenticator apps read secrets.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// What enrolment answers.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Enrolment {
    /// The secret in base32, for typing into an app.
    pub secret: String,
    /// `otpauth://totp/…`, for apps that take a link.
    pub otpauth_uri: String,
    /// The URI as an SVG QR code.
    pub qr_svg: String,
}

fn current_step() -> u64 {
    (now_millis().max(0) as u64 / 1000) / STEP_SECS
}

fn hash(code: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(code.trim().to_ascii_lowercase().as_bytes()))
}

/// Starts (or restarts) enrolment of `user`: a new secret, not yet in force.
pub(crate) async fn enroll(
    tx: &mut TenantTx,
    kek: &KeyEncryptionKey,
    user: UserId,
    issuer: &str,
    account: &str,
) -> Result<Enrolment> {
    if enabled(tx, user).await? {
        return Err(Error::conflict("mfa_already_enabled", "MFA is on already"));
    }
    let secret = random::<20>()?;
    sqlx::query(
        "INSERT INTO auth_mfa (tenant_id, user_id, secret, last_step, recovery_codes) VALUES ($1, $2, $3, 0, '') \
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET secret = excluded.secret",
    )
    .bind(tx.tenant().to_string())
    .bind(user.to_string())
    .bind(kek.seal(&secret)?)
    .execute(&mut **tx)
    .await?;
    let label = format!("{issuer}:{account}").replace(' ', "%20");
    let secret_text = base32(&secret);
    let otpauth_uri = format!(
        "otpauth://totp/{label}?secret={secret_text}&issuer={}&algorithm=SHA1&digits=6&period={STEP_SECS}",
        issuer.replace(' ', "%20")
    );
    let qr = qrcode::QrCode::new(otpauth_uri.as_bytes()).map_err(Error::internal)?;
    let qr_svg = qr.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).build();
    Ok(Enrolment { secret: secret_text, otpauth_uri, qr_svg })
}

/// Turns MFA off for `user` after checking `code` (a TOTP or recovery code).
pub(crate) async fn disable(tx: &mut TenantTx, kek: &KeyEncryptionKey, user: UserId, code: &str) -> Result<()> {
    check(tx, kek, user, code, false).await?;
    sqlx::query("DELETE FROM auth_mfa WHERE tenant_id = $1 AND user_id = $2")
        .bind(tx.tenant().to_string())
        .bind(user.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether MFA is on for `user`.
async fn enabled(tx: &mut TenantTx, user: UserId) -> Result<bool> {
    let confirmed: Option<Option<i64>> =
        sqlx::query_scalar("SELECT confirmed_at FROM auth_mfa WHERE tenant_id = $1 AND user_id = $2")
            .bind(tx.tenant().to_string())
            .bind(user.to_string())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(in_force(confirmed.flatten()))
}

/// Whether MFA with this `confirmed_at` is on: enrolment puts it in force only once
/// confirmed with a first code.
pub(crate) fn in_force(confirmed_at: Option<i64>) -> bool {
    confirmed_at.is_some()
}

/// Checks `code` for `user` (a TOTP code, or with `allow_recovery` a recovery code) and uses
/// it up. With `confirming`, the pending secret is put in force and recovery codes are
/// made and returned.
pub(crate) async fn check(
    tx: &mut TenantTx,
    kek: &KeyEncryptionKey,
    user: UserId,
    code: &str,
    confirming: bool,
) -> Result<Option<Vec<String>>> {
    let invalid = || Error::unauthorized("invalid_mfa_code", "the code is wrong, expired or used already");
    let row: Option<(String, i64, String, Option<i64>)> = sqlx::query_as(
        "SELECT secret, last_step, recovery_codes, confirmed_at FROM auth_mfa WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tx.tenant().to_string())
    .bind(user.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some((sealed, last_step, recovery, confirmed_at)) = row else {
        return Err(Error::conflict("mfa_not_enrolled", "start with POST /v1/auth/mfa/enroll"));
    };
    if confirming == confirmed_at.is_some() {
        return Err(Error::conflict("mfa_state", if confirming { "MFA is on already" } else { "MFA is not on" }));
    }
    let code = code.trim();
    let secret = kek.open(&sealed)?;
    let step = current_step();
    let matching = (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| code.parse::<u32>().ok())
        .flatten()
        .and_then(|wanted| [step - 1, step, step + 1].into_iter().find(|&s| totp(&secret, s) == wanted));
    let tenant = tx.tenant().to_string();
    match matching {
        // Each step once: a code seen before (or an older one) is refused.
        Some(found) if found as i64 > last_step => {
            sqlx::query("UPDATE auth_mfa SET last_step = $3 WHERE tenant_id = $1 AND user_id = $2")
                .bind(&tenant)
                .bind(user.to_string())
                .bind(found as i64)
                .execute(&mut **tx)
                .await?;
            if !confirming {
                return Ok(None);
            }
            let fresh: Vec<String> = (0..RECOVERY_CODES)
                .map(|_| random::<8>().map(|b| hex::encode(b)[..12].to_owned()))
                .collect::<Result<_>>()?;
            let hashed: Vec<String> = fresh.iter().map(|c| hash(c)).collect();
            sqlx::query(
                "UPDATE auth_mfa SET confirmed_at = $3, recovery_codes = $4 WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(&tenant)
            .bind(user.to_string())
            .bind(now_millis())
            .bind(hashed.join(","))
            .execute(&mut **tx)
            .await?;
            Ok(Some(fresh))
        }
        Some(_) => Err(invalid()),
        None if !confirming => {
            // A recovery code, used up.
            let wanted = hash(code);
            let remaining: Vec<&str> = recovery.split(',').filter(|c| !c.is_empty()).collect();
            if !remaining.contains(&wanted.as_str()) {
                return Err(invalid());
            }
            let left: Vec<&str> = remaining.into_iter().filter(|c| *c != wanted).collect();
            sqlx::query("UPDATE auth_mfa SET recovery_codes = $3 WHERE tenant_id = $1 AND user_id = $2")
                .bind(&tenant)
                .bind(user.to_string())
                .bind(left.join(","))
                .execute(&mut **tx)
                .await?;
            Ok(None)
        }
        None => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha1_vectors() {
        // Appendix B: the ASCII key "12345678901234567890"; the last 6 of the 8 digits.
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(totp(secret, time / STEP_SECS), code % 1_000_000, "T = {time}");
        }
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b""), "");
    }
}
