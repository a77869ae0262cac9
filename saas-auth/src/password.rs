//! Password hashing: argon2id off the async runtime, behind a bounded semaphore.
//!
//! Hashing costs tens of milliseconds of CPU by design. At most
//! `auth.max_concurrent_hashes` run at once (default: the number of cores), each on a
//! hashing thread of its own, and `auth.queued_hashes` more may wait for a thread (default:
//! one a thread), so that a thread starts its next hash the moment it finishes one rather
//! than idling while the next login reads its user. A request that finds every place taken
//! is refused at once with 503 `auth_busy` and `Retry-After: 1` instead of queueing without
//! bound, before the request does any other work. On Linux the hashing threads run under
//! `SCHED_IDLE`: they get only CPU time nothing else wants, so alone they use every core,
//! and under a login flood authenticated requests keep the CPU they need. A check that has
//! not finished within [`HASH_DEADLINE`] (a machine busy with other work) answers 503 too,
//! rather than leaving the client to time out. Unknown users cost the same as known ones:
//! their check runs against a dummy hash.

use std::{
    cell::RefCell,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
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
    places: usize,
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

thread_local! {
    /// This hashing thread's argon2 memory (19 MiB with the default parameters), kept from
    /// one hash to the next. Allocated for each hash, as `Argon2::hash_password` does, it
    /// cost a fill and, as the allocator gave it back to the system every time, a page
    /// fault for each of its 4,864 pages: about two fifths of a hash's time went to the
    /// kernel. Argon2 writes every block before it reads it, so the memory needs no
    /// clearing between hashes.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Argon2's output for `password` and `salt` into `out`, in this thread's kept memory
/// when `argon2` needs no more than `kept_blocks` (the configured parameters'), else in
/// memory of its own (a hash stored with other parameters must not pin more memory).
fn argon2_output(argon2: &Argon2<'_>, kept_blocks: usize, password: &[u8], salt: &[u8], out: &mut [u8]) -> Result<()> {
    let blocks = argon2.params().block_count();
    let hashed = if blocks <= kept_blocks {
        MEMORY.with_borrow_mut(|memory| {
            if memory.len() < blocks {
                memory.resize(blocks, Block::default());
            }
            argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
        })
    } else {
        argon2.hash_password_into_with_memory(password, salt, out, vec![Block::default(); blocks])
    };
    hashed.map_err(argon2_error)
}

/// The PHC string of `password` hashed by `argon2` (argon2id, v19) with a random salt.
fn phc_hash(argon2: &Argon2<'_>, kept_blocks: usize, password: &[u8]) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(argon2_error)?;
    let output_len = argon2.params().output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let mut out = vec![0u8; output_len];
    argon2_output(argon2, kept_blocks, password, salt_bytes, &mut out)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(argon2_error)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(argon2_error)?),
    };
    Ok(hash.to_string())
}

/// Whether `password` hashes to `stored` with `stored`'s own algorithm, version, parameters
/// and salt; the outputs are compared in constant time.
fn phc_matches(kept_blocks: usize, password: &[u8], stored: &PasswordHash<'_>) -> Result<bool> {
    // As `PasswordVerifier::verify_password`: a hash this crate cannot check matches nothing.
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else { return Ok(false) };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(stored.algorithm),
        stored.version.map_or(Ok(Version::V0x13), Version::try_from),
        Params::try_from(stored),
    ) else {
        return Ok(false);
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(phc_error)?;
    let mut out = vec![0u8; expected.len()];
    argon2_output(&argon2, kept_blocks, password, salt_bytes, &mut out)?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(&out).map_err(phc_error)? == *expected)
}

fn phc_error(e: impl std::fmt::Display) -> Error {
    Error::internal(anyhow::anyhow!("stored hash: {e}"))
}

fn argon2_error(e: impl std::fmt::Display) -> Error {
    Error::internal(anyhow::anyhow!("argon2: {e}"))
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
        let threads = match config.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let places = threads + config.queued_hashes.unwrap_or(threads);
        // Made on this thread in memory of its own, which this thread does not keep.
        let dummy = phc_hash(&argon2, 0, b"dummy password for unknown users")?;
        Ok(Self {
            argon2: Arc::new(argon2),
            permits: Arc::new(Semaphore::new(places)),
            places,
            hashers: Arc::new(start_hashers(threads)?),
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

    /// Reserves a place (a hashing thread, or a place waiting for one), or answers 503
    /// `auth_busy` at once when all are taken. A request that will hash reserves first, so
    /// that it is refused before doing any other work (a database lookup, say): under a
    /// login flood, refusing costs next to nothing.
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

    /// How many hashes may be admitted at once: those computed (one a hashing thread) and
    /// those waiting for a thread. One more is refused with 503 `auth_busy`.
    pub fn places(&self) -> usize {
        self.places
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

/// A place reserved by [`Passwords::reserve`], for one hash or check.
pub struct HashSlot {
    passwords: Passwords,
    permit: OwnedSemaphorePermit,
}

impl HashSlot {
    /// The PHC string of `password` (argon2id, random salt).
    pub async fn hash(self, password: &SecretString) -> Result<String> {
        let password = password.clone();
        self.run(move |argon2| phc_hash(argon2, argon2.params().block_count(), password.expose_secret().as_bytes()))
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
                let parsed = PasswordHash::new(&hash).map_err(phc_error)?;
                if password.expose_secret().len() > MAX_PASSWORD_BYTES {
                    return Ok(false);
                }
                phc_matches(argon2.params().block_count(), password.expose_secret().as_bytes(), &parsed)
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
        AuthConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            max_concurrent_hashes: 1,
            queued_hashes: Some(0),
            ..Default::default()
        }
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

    /// Argon2id with `m` KiB, the cheapest that still fills several pages.
    fn argon2_of(m: u32) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(m, 1, 1, None).unwrap())
    }

    #[test]
    fn kept_memory_gives_what_fresh_memory_gives() {
        // The crate's own hashing, in memory of its own, is the reference; this thread's
        // kept memory is left dirty by other passwords and salts before each comparison.
        let argon2 = argon2_of(256);
        let kept = argon2.params().block_count();
        for (password, salt) in [(&b"first password"[..], b"saltsaltsaltsalt"), (b"second one", b"another salt 123")] {
            let mut fresh = [0u8; 32];
            argon2.hash_password_into(password, salt, &mut fresh).unwrap();
            let mut reused = [0u8; 32];
            argon2_output(&argon2, kept, b"something else", b"dirtying salt 12", &mut reused).unwrap();
            argon2_output(&argon2, kept, password, salt, &mut reused).unwrap();
            assert_eq!(reused, fresh);
        }
        assert!(MEMORY.with_borrow(|memory| memory.len()) == kept, "the memory is kept");
    }

    #[test]
    fn hashes_check_both_ways_with_the_argon2_crate() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let argon2 = argon2_of(64);
        let kept = argon2.params().block_count();
        let ours = phc_hash(&argon2, kept, b"correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2.verify_password(b"correct horse", &parsed).is_ok());
        assert!(argon2.verify_password(b"wrong horse", &parsed).is_err());
        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2.hash_password(b"correct horse", &salt).unwrap();
        assert!(phc_matches(kept, b"correct horse", &theirs).unwrap());
        assert!(!phc_matches(kept, b"wrong horse", &theirs).unwrap());
        // A hash stored with more memory than is kept is checked in memory of its own.
        let bigger = argon2_of(128).hash_password(b"correct horse", &salt).unwrap();
        assert!(phc_matches(kept, b"correct horse", &bigger).unwrap());
        assert!(MEMORY.with_borrow(|memory| memory.len()) == kept, "the bigger hash's memory is not kept");
        // A PHC string of another algorithm matches nothing, as with the crate's verifier.
        let other = PasswordHash::new(
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
        )
        .unwrap();
        assert!(!phc_matches(kept, b"correct horse", &other).unwrap());
    }

    #[tokio::test]
    async fn hashes_wait_in_their_places_and_beyond_them_are_refused() {
        let config = AuthConfig { argon2_memory_kib: 65536, queued_hashes: Some(2), ..quick() };
        let passwords = Passwords::new(&config).unwrap();
        assert_eq!(passwords.places(), 3);
        let secret = SecretString::from("correct horse battery");
        // One thread: the first hashes while the next two wait for it; the fourth finds
        // every place taken.
        let [a, b, c] = [(); 3].map(|_| passwords.reserve().unwrap());
        let busy = passwords.reserve().err().unwrap();
        assert_eq!((busy.status().as_u16(), busy.code()), (503, "auth_busy"));
        let hashes = tokio::join!(a.hash(&secret), b.hash(&secret), c.hash(&secret));
        for hash in [hashes.0, hashes.1, hashes.2] {
            assert!(passwords.verify(Some(&hash.unwrap()), &secret).await.unwrap());
        }
        // Their places are free again.
        assert!(passwords.reserve().is_ok());
    }

    #[test]
    fn by_default_each_hashing_thread_has_one_waiting_place() {
        let config = AuthConfig { max_concurrent_hashes: 3, queued_hashes: None, ..quick() };
        assert_eq!(Passwords::new(&config).unwrap().places(), 6);
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
