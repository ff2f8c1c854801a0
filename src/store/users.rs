//! Users with passwords: creating them, logging in to a bearer token, and the lockout after
//! repeated failures (counted in `users`, so it holds across restarts and nodes).

use super::principals::{insert_token, Facilities, Principal, Role};
use super::{conflict_on_unique, new_id, passwords, Store, StoreError};
use crate::db::from_micros;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// A user to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    /// Facilities the user may act on; empty = every facility (admins only).
    #[serde(default)]
    pub facilities: Vec<String>,
}

/// A user as the API shows it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub facilities: Facilities,
    pub created_at: DateTime<Utc>,
}

/// How many failures lock a user, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub after_failures: u32,
    pub lock_secs: u64,
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSession {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub principal: Principal,
}

/// Why a login was refused. The API answers all of them alike; the audit log keeps which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginRefusal {
    UnknownUser,
    /// The user has no password (a token-only user).
    NoPassword,
    WrongPassword,
    /// This failure reached the limit: the user is locked from now.
    WrongPasswordLocked,
    /// Locked by earlier failures; the password was not checked.
    Locked,
}

/// What a login attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    Ok(LoginSession),
    Refused(LoginRefusal),
}

/// Longest username accepted, in bytes.
pub const MAX_USERNAME_BYTES: usize = 64;

/// Whether `username` follows the rules a user is created with (so it may exist).
pub fn valid_username(username: &str) -> bool {
    check_username(username).is_ok()
}

/// Usernames: 1-64 printable ASCII characters without spaces (a token's user too).
pub(super) fn check_username(username: &str) -> Result<(), StoreError> {
    let ok = (1..=MAX_USERNAME_BYTES).contains(&username.len())
        && username.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "username",
            "must be 1-64 printable ASCII characters without spaces",
        ))
    }
}

struct StoredUser {
    id: String,
    role: Role,
    password_hash: Option<String>,
}

impl Store {
    /// Creates a user with an argon2id password hash. Non-admins need at least one
    /// facility; every facility must exist; a taken username is a conflict.
    pub async fn create_user(&self, u: &NewUser) -> Result<User, StoreError> {
        check_username(&u.username)?;
        passwords::check_rules(&u.password)?;
        if u.facilities.is_empty() && u.role != Role::Admin {
            return Err(StoreError::invalid(
                "facilities",
                format!(
                    "a user of role {} needs at least one facility",
                    u.role.as_str()
                ),
            ));
        }
        for f in &u.facilities {
            self.facility(f).await?;
        }
        let hash = passwords::hash(&u.password).await?;
        let id = new_id("usr");
        let now = self.now_us();
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, username, role, password_hash, created_at) \
             VALUES ($1,$2,$3,$4,$5)",
        )
        .bind(&id)
        .bind(&u.username)
        .bind(u.role.as_str())
        .bind(&hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on_unique(e, format!("user {} exists", u.username)))?;
        for f in &u.facilities {
            sqlx::query("INSERT INTO user_facilities (user_id, facility_id) VALUES ($1, $2)")
                .bind(&id)
                .bind(f)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(User {
            facilities: self.facilities_of(&id, u.role).await?,
            id,
            username: u.username.clone(),
            role: u.role,
            created_at: from_micros(now),
        })
    }

    async fn stored_user(&self, username: &str) -> Result<Option<StoredUser>, StoreError> {
        let row = sqlx::query("SELECT id, role, password_hash FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(StoredUser {
            id: r.try_get("id")?,
            role: super::principals::parse_role(r.try_get("role")?)?,
            password_hash: r.try_get("password_hash")?,
        }))
    }

    /// Checks a username and password; on success issues a token valid `ttl_secs`.
    ///
    /// The attempt is counted (and the user locked when it reaches the limit) *before* the
    /// password is checked, in one conditional statement ([`Store::reserve_attempt`]), so
    /// concurrent guesses cannot all slip past the lock while the slow check runs. Every
    /// refusal does the same database statement and the same password work, so neither
    /// tells an unknown user from a wrong password.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        ttl_secs: i64,
        policy: LockoutPolicy,
    ) -> Result<LoginOutcome, StoreError> {
        let user = self.stored_user(username).await?;
        let candidate = user
            .as_ref()
            .and_then(|u| u.password_hash.as_deref().map(|h| (u, h)));
        let Some((user, stored)) = candidate else {
            // The same statement, matching no row.
            self.reserve_attempt(None, policy).await?;
            let why = if user.is_some() {
                LoginRefusal::NoPassword
            } else {
                LoginRefusal::UnknownUser
            };
            return Ok(refuse(password, why).await);
        };
        let Some(attempt) = self.reserve_attempt(Some(&user.id), policy).await? else {
            return Ok(refuse(password, LoginRefusal::Locked).await);
        };
        if !passwords::verify(password, Some(stored)).await {
            return Ok(LoginOutcome::Refused(if attempt.locked {
                LoginRefusal::WrongPasswordLocked
            } else {
                LoginRefusal::WrongPassword
            }));
        }
        self.succeed(username, user, attempt, ttl_secs, policy)
            .await
    }

    /// Counts one attempt for `user_id` unless it is locked, in one statement: the attempt
    /// that reaches the limit locks the user at once (before its password is checked); an
    /// expired lock starts the count again. `None` when refused (locked). `user_id` `None`
    /// runs the same statement against no row (unknown user: the same database work).
    async fn reserve_attempt(
        &self,
        user_id: Option<&str>,
        policy: LockoutPolicy,
    ) -> Result<Option<Attempt>, StoreError> {
        let now = self.now_us();
        let until = lock_end(now, policy);
        let limit = i64::from(policy.after_failures);
        let row = sqlx::query(
            "UPDATE users SET \
               failed_logins = (CASE WHEN failed_logins >= $1 THEN 0 ELSE failed_logins END) + 1, \
               locked_until = CASE \
                 WHEN (CASE WHEN failed_logins >= $1 THEN 0 ELSE failed_logins END) + 1 >= $1 \
                 THEN $2 ELSE locked_until END \
             WHERE id = $3 AND (locked_until IS NULL OR locked_until <= $4) \
             RETURNING failed_logins",
        )
        .bind(limit)
        .bind(until)
        .bind(user_id.unwrap_or(""))
        .bind(now)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let count: i64 = row.try_get("failed_logins")?;
        Ok(Some(Attempt {
            locked: count >= limit,
        }))
    }

    /// The right password: resets the count and issues the token in one transaction,
    /// unless a concurrent attempt locked the user meanwhile (refused as locked). An
    /// attempt that itself reached the limit and locked may unlock.
    async fn succeed(
        &self,
        username: &str,
        user: &StoredUser,
        attempt: Attempt,
        ttl_secs: i64,
        policy: LockoutPolicy,
    ) -> Result<LoginOutcome, StoreError> {
        let now = self.now_us();
        let mut tx = self.db.begin_write().await?;
        let reset = sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = $1 \
             WHERE id = $2 AND (failed_logins < $3 OR $4 = 1)",
        )
        .bind(now)
        .bind(&user.id)
        .bind(i64::from(policy.after_failures))
        .bind(i64::from(attempt.locked))
        .execute(&mut *tx)
        .await?;
        if reset.rows_affected() != 1 {
            return Ok(LoginOutcome::Refused(LoginRefusal::Locked));
        }
        let (token, expires) = insert_token(&mut tx, &user.id, now, ttl_secs, "login").await?;
        tx.commit().await?;
        Ok(LoginOutcome::Ok(LoginSession {
            token,
            expires_at: from_micros(expires),
            principal: Principal {
                subject: username.to_string(),
                role: user.role,
                facilities: self.facilities_of(&user.id, user.role).await?,
                user_id: Some(user.id.clone()),
            },
        }))
    }
}

/// A counted login attempt.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// This attempt reached the limit and locked the user.
    locked: bool,
}

/// When a lock taken at `now` (microseconds) ends.
fn lock_end(now: i64, policy: LockoutPolicy) -> i64 {
    let lock_us = i64::try_from(policy.lock_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000);
    now.saturating_add(lock_us)
}

/// A refusal after the same password work as a real check.
async fn refuse(password: &str, why: LoginRefusal) -> LoginOutcome {
    let _ = passwords::verify(password, None).await;
    LoginOutcome::Refused(why)
}
