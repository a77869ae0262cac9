//! Who a request comes from, as every crate sees it: the [`Caller`] the authentication
//! layer (saas-auth's `AuthLayer`) puts into the request when its credential is valid.
//!
//! Crates that need only the user (feature flags and quotas per user in saas-tenancy) read
//! [`Caller::user`]; the authentication crate keeps its own record of the caller in it
//! (saas-auth's `Principal`, with roles and permissions), which its extractors give out.
//! One extension for both: each extension a request carries costs an allocation, a map
//! insert and a drop, on every request.
//!
//! ```
//! use std::sync::Arc;
//! use saas_core::{caller::Caller, id::{TenantId, UserId}};
//!
//! struct Session { roles: Vec<String> }
//!
//! let mut request = http::Request::new(());
//! let (user, tenant) = (UserId::new(), TenantId::new());
//! request.extensions_mut().insert(Caller::new(user, tenant, Arc::new(Session { roles: vec!["member".into()] })));
//!
//! let caller = Caller::of(request.extensions()).unwrap();
//! assert_eq!(caller.user, user);
//! assert_eq!(caller.record::<Session>().unwrap().roles, ["member"]);
//! assert!(caller.record::<String>().is_none(), "another type");
//! ```

use std::{any::Any, sync::Arc};

use crate::id::{TenantId, UserId};

/// The signed-in caller of a request; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct Caller {
    /// The user (for an API key, the user who created it).
    pub user: UserId,
    /// The user's tenant.
    pub tenant: TenantId,
    record: Arc<dyn Any + Send + Sync>,
}

impl Caller {
    /// `user` of `tenant`, with the authentication crate's `record` of the caller.
    pub fn new<R: Any + Send + Sync>(user: UserId, tenant: TenantId, record: Arc<R>) -> Self {
        Self { user, tenant, record }
    }

    /// The caller of the request whose extensions these are, if it is signed in.
    pub fn of(extensions: &http::Extensions) -> Option<&Self> {
        extensions.get::<Self>()
    }

    /// The authentication crate's record, if it is an `R`.
    pub fn record<R: Any>(&self) -> Option<&R> {
        (*self.record).downcast_ref()
    }

    /// The record, shared, if it is an `R`.
    pub fn shared_record<R: Any + Send + Sync>(&self) -> Option<Arc<R>> {
        self.record.clone().downcast().ok()
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("user", &self.user).field("tenant", &self.tenant).finish_non_exhaustive()
    }
}
