//! Password hashing: argon2id off the async runtime, behind a bounded semaphore.
//!
//! Hashing costs tens of milliseconds of CPU by design. At most
//! `auth.max_concurrent_hashes` run at once (default: the number of cores), each on a
//! hashing thread of its own; a request that finds them all busy is refused at once with
//! 503 `auth_busy` and `Retry-After: 1` instead of queueing without bound, before the
//! request does any other work. On Linux the hashing threads run under `SCHED_IDLE`: they
//! get only CPU time nothing else wants, so alone they use every core, and under a login
//! flood authenticated requests keep the CPU they need. A check that has not finished
//! within [`HASH_DEADLINE`] (a machine busy with other work) answers 503 too, rather than
//! leaving the client to time out. Unknown users cost the same as known ones: their check
//! runs against a dummy hash.

use std::{
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use saas_core::{
    config::AuthConfig,
    error::{Error, FieldError, Result},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shortest accepted password, in characters (NIST SP 800-63B).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password, in bytes: hashing cost must not depend on client input size.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// How long a request waits for its hash or check before it is answered 503 `auth_busy`.
pub const HASH_DEADLINE: Duration = Duration::from_secs(5);

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    argon2: Arc<Argon2<'static>>,
    permits: Arc<Semaphore>,
    hashers: Arc<mpsc::Sender<Job>>,
    dummy: Arc<str>,
}

type Job = Box<dyn FnOnce() + Send>;

/// Starts `threads` hashing threads taking jobs from the returned sender; they end when
/// it is dropped.
fn start_hashers(threads: usize) -> Result<mpsc::Sender<Job>> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let receiver = Arc::new(Mutex::new(receiver));
    for i in 0..threads {
        let receiver = receiver.clone();
        let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
            lower_priority();
            loop {
                // The lock is held only while waiting, never while hashing.
                let job = match receiver.lock() {
                    Ok(receiver) => receiver.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                // A panicking job drops its result sender (the caller gets an error); the
                // thread lives on.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        });
        spawned.map_err(|e| Error::internal(anyhow::Error::new(e).context("cannot start a hashing thread")))?;
    }
    Ok(sender)
}

/// Puts the calling thread under `SCHED_IDLE`: it runs only when no other thread wants the
/// core, and yields it at once when one does (a lower nice value would not: the scheduler
/// lets a running thread finish its slice first).
#[cfg(target_os = "linux")]
fn lower_priority() {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle) {
        tracing::warn!(error = ?e, "cannot lower the priority of a password-hashing thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

impl Passwords {
    /// Argon2id with the parameters of `config`.
    pub fn new(config: &AuthConfig) -> Result<Self> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism, None)
            .map_err(|e| Error::internal(anyhow::anyhow!("argon2 parameters: {e}")))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let permits = match config.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let dummy = argon2
            .hash_password(b"dummy password for unknown users", &SaltString::generate(&mut OsRng))
            .map_err(|e| Error::internal(anyhow::anyhow!("argon2: {e}")))?
            .to_string();
        Ok(Self {
            argon2: Arc::new(argon2),
            permits: Arc::new(Semaphore::new(permits)),
            hashers: Arc::new(start_hashers(permits)?),
            dummy: dummy.into(),
        })
    }

    /// Checks a new password's length; the field is `password`.
    pub fn check_new(password: &SecretString) -> Result<()> {
        let text = password.expose_secret();
        if text.chars().count() < MIN_PASSWORD_CHARS || text.len() > MAX_PASSWORD_BYTES {
            return Err(Error::validation([FieldError::new(
                "password",
                "length",
                format!("expected {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes' worth of characters"),
            )]));
        }
        Ok(())
    }

    /// Reserves a hashing thread, or answers 503 `auth_busy` at once when all are taken. A
    /// request that will hash reserves first, so that it is refused before doing any other
    /// work (a database lookup, say): under a login flood, refusing costs next to nothing.
    pub fn reserve(&self) -> Result<HashSlot> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            Error::unavailable("auth_busy", "too many sign-ins at once; retry shortly")
                .with_retry_after(Duration::from_secs(1))
        })?;
        Ok(HashSlot { passwords: self.clone(), permit })
    }

    /// The PHC string of `password` (argon2id, random salt); 503 `auth_busy` when every
    /// hashing thread is taken.
    pub async fn hash(&self, password: &SecretString) -> Result<String> {
        self.reserve()?.hash(password).await
    }

    /// Whether `password` matches `hash`; with `None` (unknown user) it checks a dummy hash
    /// and answers false, taking as long as a real check. 503 `auth_busy` when every hashing
    /// thread is taken.
    pub async fn verify(&self, hash: Option<&str>, password: &SecretString) -> Result<bool> {
        self.reserve()?.verify(hash, password).await
    }

    /// Whether `hash` was made with other parameters than the configured ones (then the
    /// password is re-hashed at the next successful login, so every account costs the same
    /// to check as the dummy one).
    pub fn needs_rehash(&self, hash: &str) -> bool {
        let current = self.argon2.params();
        PasswordHash::new(hash).ok().and_then(|h| Params::try_from(&h).ok()).is_none_or(|p| {
            (p.m_cost(), p.t_cost(), p.p_cost()) != (current.m_cost(), current.t_cost(), current.p_cost())
        })
    }
}

/// A hashing thread reserved by [`Passwords::reserve`], for one hash or check.
pub struct HashSlot {
    passwords: Passwords,
    permit: OwnedSemaphorePermit,
}

impl HashSlot {
    /// The PHC string of `password` (argon2id, random salt).
    pub async fn hash(self, password: &SecretString) -> Result<String> {
        let password = password.clone();
        self.run(move |argon2| {
            argon2
                .hash_password(password.expose_secret().as_bytes(), &SaltString::generate(&mut OsRng))
                .map(|h| h.to_string())
                .map_err(|e| Error::internal(anyhow::anyhow!("argon2: {e}")))
        })
        .await
    }

    /// Whether `password` matches `hash`; with `None` (unknown user) it checks a dummy hash
    /// and answers false, taking as long as a real check.
    pub async fn verify(self, hash: Option<&str>, password: &SecretString) -> Result<bool> {
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.passwords.dummy.to_string(), str::to_owned);
        let password = password.clone();
        let matches = self
            .run(move |argon2| {
                let parsed =
                    PasswordHash::new(&hash).map_err(|e| Error::internal(anyhow::anyhow!("stored hash: {e}")))?;
                if password.expose_secret().len() > MAX_PASSWORD_BYTES {
                    return Ok(false);
                }
                Ok(argon2.verify_password(password.expose_secret().as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce(&Argon2<'static>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let Self { passwords, permit } = self;
        let argon2 = passwords.argon2.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = work(&argon2);
            // Released before the caller hears back, so its next hash finds the permit free.
            drop(permit);
            let _ = done.send(result);
        });
        passwords.hashers.send(job).map_err(|_| Error::internal(anyhow::anyhow!("the hashing threads are gone")))?;
        match tokio::time::timeout(HASH_DEADLINE, result).await {
            Ok(done) => done.map_err(|_| Error::internal(anyhow::anyhow!("a password hash failed")))?,
            // The hash goes on (and keeps its thread) until done; only this answer gives up.
            Err(_) => {
                Err(Error::unavailable("auth_busy", "the server is too busy to check passwords now; retry shortly")
                    .with_retry_after(Duration::from_secs(1)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> AuthConfig {
        AuthConfig { argon2_memory_kib: 64, argon2_iterations: 1, max_concurrent_hashes: 1, ..Default::default() }
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let passwords = Passwords::new(&quick()).unwrap();
        let secret = SecretString::from("correct horse battery");
        let hash = passwords.hash(&secret).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(passwords.verify(Some(&hash), &secret).await.unwrap());
        assert!(!passwords.verify(Some(&hash), &SecretString::from("wrong")).await.unwrap());
        assert!(!passwords.verify(None, &SecretString::from("dummy password for unknown users")).await.unwrap());
    }

    #[tokio::test]
    async fn a_saturated_hasher_answers_503_at_once() {
        let passwords = Passwords::new(&AuthConfig { argon2_memory_kib: 65536, ..quick() }).unwrap();
        let secret = SecretString::from("correct horse battery");
        let (first, second) = tokio::join!(passwords.hash(&secret), async {
            tokio::task::yield_now().await;
            passwords.hash(&secret).await
        });
        assert!(first.is_ok());
        let busy = second.unwrap_err();
        assert_eq!((busy.status().as_u16(), busy.code()), (503, "auth_busy"));
        assert!(busy.to_problem().status == 503);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_below_the_priority_of_requests() {
        use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy};
        let passwords = Passwords::new(&quick()).unwrap();
        let policy =
            |_: &Argon2<'static>| thread_schedule_policy().map_err(|e| Error::internal(anyhow::anyhow!("{e:?}")));
        let normal = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
        assert_eq!(policy(&passwords.argon2).unwrap(), normal, "request handling stays normal");
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        assert_eq!(passwords.reserve().unwrap().run(policy).await.unwrap(), idle);
    }

    #[test]
    fn new_passwords_have_a_length_window() {
        assert!(Passwords::check_new(&SecretString::from("short")).is_err());
        assert!(Passwords::check_new(&SecretString::from("x".repeat(2000))).is_err());
        assert!(Passwords::check_new(&SecretString::from("long enough")).is_ok());
    }
}
