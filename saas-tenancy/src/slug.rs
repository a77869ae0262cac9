//! Tenant slugs: the tenant's name in URLs and subdomains (`acme` in `acme.example.com`).

use std::{fmt, sync::Arc};

use saas_core::error::{Error, FieldError};
use serde::Serialize;

/// Slugs nobody may take: names of the platform's own hosts and pages.
pub const RESERVED_SLUGS: &[&str] = &[
    "about",
    "account",
    "accounts",
    "admin",
    "api",
    "app",
    "apps",
    "assets",
    "auth",
    "billing",
    "blog",
    "cdn",
    "dashboard",
    "dev",
    "docs",
    "help",
    "internal",
    "login",
    "logout",
    "mail",
    "metrics",
    "oauth",
    "platform",
    "root",
    "saas",
    "settings",
    "signup",
    "smtp",
    "static",
    "status",
    "support",
    "system",
    "tenant",
    "tenants",
    "test",
    "www",
];

/// A valid, unreserved tenant slug: 3 to 63 characters of `a-z`, `0-9` and single hyphens,
/// starting with a letter and not ending with a hyphen, so that it is a DNS label and can
/// never be mistaken for an id (ids contain `_`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Slug(String);

/// The slug policy: the built-in reserved list plus the configured one.
#[derive(Debug, Clone, Default)]
pub struct SlugPolicy {
    extra_reserved: Arc<[String]>,
}

impl SlugPolicy {
    /// Reserves `extra` in addition to [`RESERVED_SLUGS`].
    pub fn new(extra: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { extra_reserved: extra.into_iter().map(|s| s.into().to_ascii_lowercase()).collect() }
    }

    /// Validates `text` (the value of request field `field`) as a slug.
    pub fn parse(&self, field: &str, text: &str) -> Result<Slug, Error> {
        let invalid = |code: &str, message: &str| Error::validation([FieldError::new(field, code, message)]);
        if !(3..=63).contains(&text.len()) {
            return Err(invalid("length", "expected 3 to 63 characters"));
        }
        let bytes = text.as_bytes();
        let allowed = bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !allowed || !bytes[0].is_ascii_lowercase() || text.ends_with('-') || text.contains("--") {
            return Err(invalid(
                "format",
                "expected lowercase letters, digits and single hyphens, starting with a letter and not ending with a hyphen",
            ));
        }
        if self.is_reserved(text) {
            return Err(invalid("reserved", "this name is reserved; choose another"));
        }
        Ok(Slug(text.to_owned()))
    }
}

impl SlugPolicy {
    /// Whether `text` is reserved (built in or configured).
    pub fn is_reserved(&self, text: &str) -> bool {
        RESERVED_SLUGS.contains(&text) || self.extra_reserved.iter().any(|r| r == text)
    }
}

/// Whether `text` has the form of a slug (reserved or not): what resolution looks up.
pub fn could_be_slug(text: &str) -> bool {
    let bytes = text.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Slug {
    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        let policy = SlugPolicy::default();
        for ok in ["acme", "acme-corp", "a1b", &"a".repeat(63)] {
            assert_eq!(policy.parse("slug", ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_malformed_and_reserved_slugs_naming_the_field() {
        let policy = SlugPolicy::new(["acme"]);
        for (bad, code) in [
            ("ab", "length"),
            (&"a".repeat(64) as &str, "length"),
            ("Acme", "format"),
            ("1acme", "format"),
            ("acme-", "format"),
            ("xn--acme", "format"),
            ("ac_me", "format"),
            ("ac.me", "format"),
            ("www", "reserved"),
            ("admin", "reserved"),
            ("acme", "reserved"),
        ] {
            let e = policy.parse("slug", bad).unwrap_err();
            assert_eq!(e.status(), 422, "{bad}");
            assert_eq!(e.field_errors()[0].field, "slug");
            assert_eq!(e.field_errors()[0].code, code, "{bad}");
        }
    }
}
