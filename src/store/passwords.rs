//! Password hashes: argon2id (version 0x13, the crate's defaults: 19 MiB, 2 passes, one
//! lane, as OWASP recommends) in the PHC string form `$argon2id$v=19$m=…`, with a random
//! 16-byte salt. Hashing and checking take tens of milliseconds of CPU on purpose, so
//! callers run them on the blocking pool ([`hash`], [`verify`] are async for that reason).
//!
//! A login for a user that does not exist (or has no password, or is locked) still checks
//! the password against a fixed dummy hash, so the answer takes as long as a wrong
//! password and its timing does not tell which usernames exist.

use super::StoreError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::OnceLock;

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

/// The argon2id hash of `password` (on the blocking pool).
pub async fn hash(password: &str) -> Result<String, StoreError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .map_err(|e| StoreError::Corrupt {
            what: "password hashing task",
            message: e.to_string(),
        })?
}

/// Whether `password` matches `stored`; with `None` checks against the dummy hash (same
/// work) and answers `false`.
pub async fn verify(password: &str, stored: Option<&str>) -> bool {
    let password = password.to_string();
    let stored = stored.map(str::to_string);
    tokio::task::spawn_blocking(move || match stored {
        Some(s) => verify_now(&password, &s),
        None => {
            let _ = verify_now(&password, dummy());
            false
        }
    })
    .await
    .unwrap_or(false)
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

    #[test]
    fn rules() {
        assert!(check_rules("short").is_err());
        assert!(check_rules("twelve chars").is_ok());
        assert!(check_rules(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
