//! Family accounts (`family_accounts`), the links emailed to them (`family_links`) and the
//! attempts counted for their rate limits (`family_rate_events`).
//!
//! An account is a `users` row of role `family` with a random `fam_…` username, so its
//! password, failure count, lock and sessions are the investigators' own
//! ([`Store::login`], `api_tokens`); this module adds the address and its verification,
//! the single-use expiring links, the changes that end every session, and closing.

use super::principals::token_hash;
use super::{conflict_on_unique, new_id, passwords, Store, StoreError};
use crate::db::from_micros;
use crate::family::LinkPurpose;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// An open family account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyAccount {
    pub user_id: String,
    /// The `users` username (`fam_…`): what logs in and what the audit log names.
    pub username: String,
    pub email: String,
    pub verified: bool,
    pub created_at: DateTime<Utc>,
}

/// What a registration came to (the API answers both alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Created(FamilyAccount),
    /// The address already has an open account (nothing was changed). `password_hash`
    /// is this registration's, for a new verification link of an unverified account.
    Existing {
        account: FamilyAccount,
        password_hash: String,
    },
}

/// A link that was valid and is now used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedLink {
    pub user_id: String,
    /// The address the link was sent to (the new one, for a change of email).
    pub email: String,
    /// The password a verification link sets (see [`Store::family_new_link`]).
    pub password_hash: Option<String>,
}

/// Which limit an attempt counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    /// A peer address.
    Address,
    /// An email address (stored as its SHA-256).
    Account,
}

const ACCOUNT_COLUMNS: &str = "f.user_id, u.username, f.email, f.email_verified_at, f.created_at";

fn account(row: &sqlx::any::AnyRow) -> Result<FamilyAccount, StoreError> {
    let verified: Option<i64> = row.try_get("email_verified_at")?;
    Ok(FamilyAccount {
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        verified: verified.is_some(),
        created_at: from_micros(row.try_get("created_at")?),
    })
}

impl Store {
    /// Registers `email` (normalized by the caller) with `password`, unless it already has
    /// an open account. The password is hashed either way, so both take as long.
    pub async fn family_register(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Registration, StoreError> {
        passwords::check_rules(password)?;
        let hash = passwords::hash(password).await?;
        if let Some(a) = self.family_account_by_email(email).await? {
            return Ok(Registration::Existing {
                account: a,
                password_hash: hash,
            });
        }
        let user_id = new_id("usr");
        let username = new_id("fam");
        let now = self.now_us();
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, username, role, password_hash, created_at) \
             VALUES ($1, $2, 'family', $3, $4)",
        )
        .bind(&user_id)
        .bind(&username)
        .bind(&hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO family_accounts (user_id, email, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&user_id)
        .bind(email)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on_unique(e, "address taken"));
        match inserted {
            Ok(_) => tx.commit().await?,
            Err(StoreError::Conflict(_)) => {
                // Registered by a concurrent request meanwhile.
                drop(tx);
                return match self.family_account_by_email(email).await? {
                    Some(a) => Ok(Registration::Existing {
                        account: a,
                        password_hash: hash,
                    }),
                    None => Err(StoreError::Conflict("try again".into())),
                };
            }
            Err(e) => return Err(e),
        }
        Ok(Registration::Created(FamilyAccount {
            user_id,
            username,
            email: email.to_string(),
            verified: false,
            created_at: from_micros(now),
        }))
    }

    /// The open account of `email` (normalized), if any.
    pub async fn family_account_by_email(
        &self,
        email: &str,
    ) -> Result<Option<FamilyAccount>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM family_accounts f JOIN users u ON u.id = f.user_id \
             WHERE f.email = $1 AND f.closed_at IS NULL"
        ))
        .bind(email)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(account).transpose()
    }

    /// The open account of user `user_id`, if it is one.
    pub async fn family_account(&self, user_id: &str) -> Result<Option<FamilyAccount>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM family_accounts f JOIN users u ON u.id = f.user_id \
             WHERE f.user_id = $1 AND f.closed_at IS NULL"
        ))
        .bind(user_id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(account).transpose()
    }

    /// A new single-use link secret for `user_id`, valid `ttl_secs`, sent to `email`. The
    /// user's earlier unused links of the same purpose stop working: only the newest
    /// email's link does. `password_hash`, on a verification link, is set as the
    /// account's password when the link is used (a repeated registration's password).
    pub async fn family_new_link(
        &self,
        user_id: &str,
        purpose: LinkPurpose,
        email: &str,
        ttl_secs: u64,
        password_hash: Option<&str>,
    ) -> Result<String, StoreError> {
        let secret = crate::family::new_secret();
        let now = self.now_us();
        let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2_000_000);
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE family_links SET used_at = $1 \
             WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .bind(purpose.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO family_links \
             (token_hash, user_id, purpose, email, created_at, expires_at, password_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token_hash(&secret))
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(email)
        .bind(now)
        .bind(now.saturating_add(ttl.saturating_mul(1_000_000)))
        .bind(password_hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(secret)
    }

    /// Uses a link: valid (right purpose, unused, unexpired, its account open) marks it
    /// used in the same statement that checks it, so two uses cannot both succeed.
    pub async fn family_use_link(
        &self,
        secret: &str,
        purpose: LinkPurpose,
    ) -> Result<Option<UsedLink>, StoreError> {
        let now = self.now_us();
        let row = sqlx::query(
            "UPDATE family_links SET used_at = $1 \
             WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 \
             AND user_id IN (SELECT user_id FROM family_accounts WHERE closed_at IS NULL) \
             RETURNING user_id, email, password_hash",
        )
        .bind(now)
        .bind(token_hash(secret))
        .bind(purpose.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(UsedLink {
            user_id: row.try_get("user_id")?,
            email: row.try_get("email")?,
            password_hash: row.try_get("password_hash")?,
        }))
    }

    /// Sets an already hashed password (a verification link's) and ends every session.
    pub async fn family_set_password_hash(
        &self,
        user_id: &str,
        hash: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL \
             WHERE id = $2 AND role = 'family'",
        )
        .bind(hash)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        end_sessions(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the account's address verified (if it is still `email`).
    pub async fn family_verify(&self, user_id: &str, email: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE family_accounts SET email_verified_at = $1 \
             WHERE user_id = $2 AND email = $3 AND closed_at IS NULL",
        )
        .bind(self.now_us())
        .bind(user_id)
        .bind(email)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `password` is the account's (after the same work either way).
    pub async fn family_check_password(
        &self,
        user_id: &str,
        password: &str,
    ) -> Result<bool, StoreError> {
        let hash: Option<String> =
            sqlx::query("SELECT password_hash FROM users WHERE id = $1 AND role = 'family'")
                .bind(user_id)
                .fetch_optional(self.db.pool())
                .await?
                .map(|r| r.try_get("password_hash"))
                .transpose()?
                .flatten();
        Ok(passwords::verify(password, hash.as_deref()).await)
    }

    /// Sets a new password, clears the failure count and lock, and ends every session of
    /// the account, in one transaction.
    pub async fn family_set_password(
        &self,
        user_id: &str,
        password: &str,
    ) -> Result<(), StoreError> {
        passwords::check_rules(password)?;
        let hash = passwords::hash(password).await?;
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL \
             WHERE id = $2 AND role = 'family'",
        )
        .bind(&hash)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        end_sessions(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves the account to `email` (verified: the link proved it) and ends every session.
    /// `false` when another open account took the address meanwhile.
    pub async fn family_change_email(
        &self,
        user_id: &str,
        email: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE family_accounts SET email = $1, email_verified_at = $2 \
             WHERE user_id = $3 AND closed_at IS NULL",
        )
        .bind(email)
        .bind(self.now_us())
        .bind(user_id)
        .execute(&mut *tx)
        .await;
        match moved.map_err(|e| conflict_on_unique(e, "address taken")) {
            Ok(done) if done.rows_affected() == 1 => {}
            Ok(_) | Err(StoreError::Conflict(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        end_sessions(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A new session (login token) of the account, valid `ttl_secs`: the one that replaces
    /// the caller's own after a change of password. Returns the token and its expiry.
    pub async fn family_new_session(
        &self,
        user_id: &str,
        ttl_secs: i64,
    ) -> Result<(String, DateTime<Utc>), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let (token, expires) =
            super::principals::insert_token(&mut tx, user_id, self.now_us(), ttl_secs, "login")
                .await?;
        tx.commit().await?;
        Ok((token, from_micros(expires)))
    }

    /// Ends every session of the account (logs out everywhere).
    pub async fn family_end_sessions(&self, user_id: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        end_sessions(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes the account: no password, no session, no working link, and its address free
    /// for a new registration. The rows stay for what refers to the user.
    pub async fn family_close(&self, user_id: &str) -> Result<(), StoreError> {
        let now = self.now_us();
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE family_accounts SET closed_at = $1 WHERE user_id = $2 AND closed_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET password_hash = NULL WHERE id = $1 AND role = 'family'")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE family_links SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        end_sessions(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts one attempt against `scope`/`subject` unless `limit` attempts were counted
    /// in the last `window_secs`; whether it was allowed. Older attempts are deleted.
    pub async fn family_rate(
        &self,
        scope: RateScope,
        subject: &str,
        limit: u32,
        window_secs: u64,
    ) -> Result<bool, StoreError> {
        let (scope, subject) = match scope {
            RateScope::Address => ("address", subject.to_string()),
            RateScope::Account => ("account", hex::encode(Sha256::digest(subject.as_bytes()))),
        };
        let now = self.now_us();
        let window = i64::try_from(window_secs).unwrap_or(86_400) * 1_000_000;
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "DELETE FROM family_rate_events WHERE scope = $1 AND subject = $2 AND at <= $3",
        )
        .bind(scope)
        .bind(&subject)
        .bind(now - window)
        .execute(&mut *tx)
        .await?;
        let count: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM family_rate_events WHERE scope = $1 AND subject = $2",
        )
        .bind(scope)
        .bind(&subject)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if count >= i64::from(limit) {
            return Ok(false);
        }
        sqlx::query("INSERT INTO family_rate_events (scope, subject, at) VALUES ($1, $2, $3)")
            .bind(scope)
            .bind(&subject)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn end_sessions(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM api_tokens WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
