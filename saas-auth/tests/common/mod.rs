//! Set-up shared by the saas-auth tests.
#![allow(dead_code)] // each test binary uses part of it

use saas_auth::{principal::Principal, users::User};
use saas_core::config::{AuthConfig, Config};

/// A configuration with data under `dir` and argon2 cheap enough for tests.
pub(crate) fn quick_config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        auth: AuthConfig { argon2_memory_kib: 64, argon2_iterations: 1, ..Default::default() },
        ..Default::default()
    }
}

/// `user` signed in, as the handlers see it.
pub(crate) fn principal_of(user: &User) -> Principal {
    Principal {
        user: user.id,
        tenant: user.tenant_id,
        session: String::new(),
        roles: user.role_list(),
        permissions: Vec::new(),
        api_key: None,
    }
}
