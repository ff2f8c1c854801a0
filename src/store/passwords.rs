//! Password hashes: argon2id (version 0x13, the crate's defaults: 19 MiB, 2 passes, one
//! lane, as OWASP recommends) in the PHC string form `$argon2id$v=19$m=…`, with a random
//! 16-byte salt. Hashing and checking take tens of milliseconds of CPU on purpose, so
//! callers run them on the blocking pool ([`hash`], [`verify`] are async for that reason).
//!
//! A login for a user that does not exist (or has no password, or is locked) still checks
//! the password against a fixed dummy hash, so the answer takes as long as a wrong
//! password and its timing does not tell which usernames exist.
//!
//! At most [`hashing_permits`] hashes or checks run at once (one per CPU); the others
//! wait for a permit, so a flood of logins queues instead of taking every blocking thread
//! and 19 MiB of memory per attempt.

use super::StoreError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::OnceLock;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Shortest password accepted for a user.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (bounds the work one request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks the password rules.
pub fn check_rules(password: &str) -> Result<(), StoreError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(StoreError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(StoreError::invalid(
            "password",
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn hash_now(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(corrupt)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(corrupt)?
        .to_string())
}

fn corrupt(e: argon2::password_hash::Error) -> StoreError {
    StoreError::Corrupt {
        what: "password hash",
        message: e.to_string(),
    }
}

/// Whether `password` matches the stored PHC string; a hash that cannot be parsed matches
/// nothing (and is logged).
fn verify_now(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "stored password hash cannot be parsed");
            false
        }
    }
}

/// A hash of a random password, checked against when there is no real one.
fn dummy() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_now(&hex::encode(rand::random::<[u8; 16]>())).unwrap_or_else(|_| {
            // A valid hash, so the work done stays the same.
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$2Kq1MU1D3Sg1YbOoQ5sTyJeq7Ghu0iVAbQqyXG0XJ3U"
                .into()
        })
    })
}

/// How many password hashes or checks may run at once: the available parallelism.
pub fn hashing_permits() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn hashing_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| Semaphore::new(hashing_permits()))
}

/// Waits for a hashing permit (the semaphore is never closed, so this only fails if it
/// were).
async fn hashing_permit() -> Result<SemaphorePermit<'static>, StoreError> {
    hashing_slots()
        .acquire()
        .await
        .map_err(|e| StoreError::Corrupt {
            what: "password hashing semaphore",
            message: e.to_string(),
        })
}

/// Runs argon2 work on the blocking pool while holding a hashing permit.
async fn run_bounded<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    let _permit = hashing_permit().await?;
    tokio::task::spawn_blocking(move || {
        let _busy = busy::Busy::enter();
        work()
    })
    .await
    .map_err(|e| StoreError::Corrupt {
        what: "password hashing task",
        message: e.to_string(),
    })
}

/// The argon2id hash of `password` (on the blocking pool, bounded).
pub async fn hash(password: &str) -> Result<String, StoreError> {
    let password = password.to_string();
    run_bounded(move || hash_now(&password)).await?
}

/// Whether `password` matches `stored`; with `None` checks against the dummy hash (same
/// work) and answers `false`.
pub async fn verify(password: &str, stored: Option<&str>) -> bool {
    let password = password.to_string();
    let stored = stored.map(str::to_string);
    run_bounded(move || match stored {
        Some(s) => verify_now(&password, &s),
        None => {
            let _ = verify_now(&password, dummy());
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// How many argon2 computations run right now, and the most seen at once (tests only).
mod busy {
    #[cfg(test)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[cfg(test)]
    pub(super) static NOW: AtomicUsize = AtomicUsize::new(0);
    #[cfg(test)]
    pub(super) static PEAK: AtomicUsize = AtomicUsize::new(0);

    /// Marks one computation running while it lives.
    pub(super) struct Busy;

    impl Busy {
        pub(super) fn enter() -> Busy {
            #[cfg(test)]
            {
                let n = NOW.fetch_add(1, Ordering::SeqCst) + 1;
                PEAK.fetch_max(n, Ordering::SeqCst);
            }
            Busy
        }
    }

    impl Drop for Busy {
        fn drop(&mut self) {
            #[cfg(test)]
            NOW.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_now("correct horse battery").unwrap();
        let b = hash_now("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(verify_now("correct horse battery", &a));
        assert!(!verify_now("correct horse batterY", &a));
        assert!(!verify_now("x", "not a hash"));
        assert!(!verify_now("x", dummy()));
    }

    /// A flood of checks runs at most one per CPU at a time; the rest wait their turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_are_bounded_by_the_permits() {
        let n = hashing_permits() * 4 + 4;
        let checks: Vec<_> = (0..n)
            .map(|i| tokio::spawn(async move { verify(&format!("guess {i}"), None).await }))
            .collect();
        for c in checks {
            assert!(!c.await.unwrap());
        }
        let peak = busy::PEAK.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (1..=hashing_permits()).contains(&peak),
            "peak {peak} with {} permits",
            hashing_permits()
        );
    }

    #[test]
    fn rules() {
        assert!(check_rules("short").is_err());
        assert!(check_rules("twelve chars").is_ok());
        assert!(check_rules(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
