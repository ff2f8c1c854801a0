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

/// Usernames: 1-64 printable ASCII characters without spaces.
fn check_username(username: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&username.len()) && username.bytes().all(|b| b.is_ascii_graphic());
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
    locked_until: Option<i64>,
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
        let row = sqlx::query(
            "SELECT id, role, password_hash, locked_until FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(StoredUser {
            id: r.try_get("id")?,
            role: super::principals::parse_role(r.try_get("role")?)?,
            password_hash: r.try_get("password_hash")?,
            locked_until: r.try_get("locked_until")?,
        }))
    }

    /// Checks a username and password; on success issues a token valid `ttl_secs`.
    /// Every refusal does the same password work (see [`passwords`]).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        ttl_secs: i64,
        policy: LockoutPolicy,
    ) -> Result<LoginOutcome, StoreError> {
        let now = self.now_us();
        let user = match self.stored_user(username).await? {
            Some(u) => u,
            None => return Ok(refuse(password, LoginRefusal::UnknownUser).await),
        };
        if user.locked_until.is_some_and(|t| t > now) {
            return Ok(refuse(password, LoginRefusal::Locked).await);
        }
        let Some(stored) = user.password_hash.as_deref() else {
            return Ok(refuse(password, LoginRefusal::NoPassword).await);
        };
        if !passwords::verify(password, Some(stored)).await {
            let locked = self.count_failure(&user.id, policy).await?;
            return Ok(LoginOutcome::Refused(if locked {
                LoginRefusal::WrongPasswordLocked
            } else {
                LoginRefusal::WrongPassword
            }));
        }
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = $1 \
             WHERE id = $2",
        )
        .bind(now)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
        let (token, expires) = insert_token(&mut tx, &user.id, now, ttl_secs, "login").await?;
        tx.commit().await?;
        Ok(LoginOutcome::Ok(LoginSession {
            token,
            expires_at: from_micros(expires),
            principal: Principal {
                subject: username.to_string(),
                role: user.role,
                facilities: self.facilities_of(&user.id, user.role).await?,
            },
        }))
    }

    /// Counts one failed login in one statement (concurrent failures all count); the one
    /// that reaches the limit locks the user and starts the count again. Returns whether
    /// it locked.
    async fn count_failure(
        &self,
        user_id: &str,
        policy: LockoutPolicy,
    ) -> Result<bool, StoreError> {
        let now = self.now_us();
        let lock_us = i64::try_from(policy.lock_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        let until = now.saturating_add(lock_us);
        let row = sqlx::query(
            "UPDATE users SET \
               locked_until = CASE WHEN failed_logins + 1 >= $1 THEN $2 ELSE locked_until END, \
               failed_logins = CASE WHEN failed_logins + 1 >= $1 THEN 0 ELSE failed_logins + 1 END \
             WHERE id = $3 RETURNING locked_until",
        )
        .bind(i64::from(policy.after_failures))
        .bind(until)
        .bind(user_id)
        .fetch_one(self.db.pool())
        .await?;
        let locked_until: Option<i64> = row.try_get("locked_until")?;
        Ok(locked_until == Some(until))
    }
}

/// A refusal after the same password work as a real check.
async fn refuse(password: &str, why: LoginRefusal) -> LoginOutcome {
    let _ = passwords::verify(password, None).await;
    LoginOutcome::Refused(why)
}
