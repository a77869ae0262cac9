//! Path-based API versions: `/v1/…`.
//!
//! A request to `/vN/…` with a version the server does not serve answers 404
//! `unsupported_api_version` listing the served ones; responses to versioned paths carry
//! `API-Version: vN`. Paths outside the versioned API (`/health/…`, `/metrics`) pass.

use http::{HeaderName, HeaderValue};

use crate::error::Error;

/// The `API-Version` response header.
pub const API_VERSION: HeaderName = HeaderName::from_static("api-version");

/// The `API-Version` value for `path` (`None` outside the versioned API), or the 404 for a
/// version that is not served. `served` are the versions as header values, made once: a
/// clone shares its bytes.
pub(crate) fn check(served: &[HeaderValue], path: &str) -> Result<Option<HeaderValue>, Error> {
    let Some(version) = version_of(path) else { return Ok(None) };
    match served.iter().find(|v| v.as_bytes() == version.as_bytes()) {
        Some(value) => Ok(Some(value.clone())),
        None => {
            let names: Vec<&str> = served.iter().filter_map(|v| v.to_str().ok()).collect();
            Err(Error::not_found(
                "unsupported_api_version",
                format!("API version `{version}` is not served; served versions: {}", names.join(", ")),
            ))
        }
    }
}

/// The version segment of a path, if it is `/v<digits>` or `/v<digits>/…`.
fn version_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    // By bytes: `split('/')` sets up a general searcher for one character, on every request.
    let segment = &rest[..rest.bytes().position(|b| b == b'/').unwrap_or(rest.len())];
    let digits = segment.strip_prefix('v')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(segment)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_version_segments() {
        assert_eq!(super::version_of("/v1/tenants"), Some("v1"));
        assert_eq!(super::version_of("/v12"), Some("v12"));
        assert_eq!(super::version_of("/vx/tenants"), None);
        assert_eq!(super::version_of("/health/live"), None);
        assert_eq!(super::version_of("/v/"), None);
        assert_eq!(super::version_of("/"), None);
        assert_eq!(super::version_of("v1/x"), None);
    }
}
