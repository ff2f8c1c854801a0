//! Family accounts: the rules of the family portal's first slice (issue 12), without IO.
//!
//! Owns: the `[family]` settings ([`FamilyConfig`]), what an email address must look like
//! and its one stored form ([`normalize_email`]), the links the gateway emails
//! ([`link`]), the CSRF token of a session ([`csrf_token`]) and the words of every email
//! ([`texts`], one place per language to come).
//!
//! How a family account is a caller: an account is a `users` row of role `family` whose
//! username is a random `fam_…` id (the address lives in `family_accounts`), so a session
//! is an ordinary login token of that user carried in a cookie. The API resolves the
//! cookie to the same [`crate::api::auth::Caller`] a bearer token gives (`Role::Family`,
//! `user_id` the account's user id), so every family-scoped route works for a logged-in
//! family, and later slices (links to inmates, deposits, statements) hang off that user
//! id. A new account has no facility: it reaches nothing until it is linked.
//!
//! Called by: the family routes and the store's family records.

pub mod linking;
pub mod notices;
pub mod texts;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The `[family]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FamilyConfig {
    /// The portal's address as families reach it (`https://portal.example.org`): the
    /// start of every emailed link, and `https://` makes the session cookie `Secure`.
    /// Empty: `http://` + `http.listen`.
    pub public_url: String,
    /// How long a verification link (new account or new address) works.
    pub verify_link_ttl_secs: u64,
    /// How long a password-reset link works.
    pub reset_link_ttl_secs: u64,
    /// Logins, registrations, reset requests and links tried from one peer address per
    /// `rate_window_secs`; past it, 429.
    pub attempts_per_address: u32,
    /// Emails sent to one address per `rate_window_secs`; past it, none (the answer is
    /// the same, so it tells nothing).
    pub emails_per_account: u32,
    pub rate_window_secs: u64,
    /// Roster searches one account may make per `rate_window_secs`; past it, 429.
    pub searches_per_account: u32,
    /// How long the code of a number's verification call works.
    pub verify_code_ttl_secs: u64,
    /// Wrong codes a link request takes before it fails (a new request is needed).
    pub verify_code_attempts: u32,
    /// Verification calls the gateway places to one number per day, whichever account
    /// asks (a number nobody wants called is not called over and over).
    pub verify_calls_per_number: u32,
    /// Verification calls one account may ask for per day.
    pub verify_calls_per_account: u32,
    /// Link requests one account may have waiting for verification at a time.
    pub open_link_requests: u32,
    /// Days a prepaid balance may sit untouched before its owner is told it is still
    /// theirs and how to have it refunded (`family::notices`); before 180.
    pub idle_notice_days: u32,
}

impl Default for FamilyConfig {
    fn default() -> Self {
        FamilyConfig {
            public_url: String::new(),
            verify_link_ttl_secs: 86_400,
            reset_link_ttl_secs: 3_600,
            attempts_per_address: 30,
            emails_per_account: 5,
            rate_window_secs: 3_600,
            searches_per_account: 60,
            verify_code_ttl_secs: 600,
            verify_code_attempts: 3,
            verify_calls_per_number: 3,
            verify_calls_per_account: 10,
            open_link_requests: 5,
            idle_notice_days: 150,
        }
    }
}

impl FamilyConfig {
    /// The first key out of bounds and what is wrong with it.
    pub(crate) fn check(&self) -> Result<(), (&'static str, &'static str)> {
        let url = &self.public_url;
        let scheme_ok = url.is_empty() || url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err((
                "family.public_url",
                "must be empty or an http:// or https:// URL",
            ));
        }
        if !(300..=7 * 86_400).contains(&self.verify_link_ttl_secs) {
            return Err(("family.verify_link_ttl_secs", "must be 300 to 604800"));
        }
        if !(300..=86_400).contains(&self.reset_link_ttl_secs) {
            return Err(("family.reset_link_ttl_secs", "must be 300 to 86400"));
        }
        if self.attempts_per_address == 0 {
            return Err(("family.attempts_per_address", "must be at least 1"));
        }
        if self.emails_per_account == 0 {
            return Err(("family.emails_per_account", "must be at least 1"));
        }
        if !(60..=86_400).contains(&self.rate_window_secs) {
            return Err(("family.rate_window_secs", "must be 60 to 86400"));
        }
        if self.searches_per_account == 0 {
            return Err(("family.searches_per_account", "must be at least 1"));
        }
        if !(60..=3_600).contains(&self.verify_code_ttl_secs) {
            return Err(("family.verify_code_ttl_secs", "must be 60 to 3600"));
        }
        if !(1..=10).contains(&self.verify_code_attempts) {
            return Err(("family.verify_code_attempts", "must be 1 to 10"));
        }
        if !(1..=20).contains(&self.verify_calls_per_number) {
            return Err(("family.verify_calls_per_number", "must be 1 to 20"));
        }
        if !(1..=100).contains(&self.verify_calls_per_account) {
            return Err(("family.verify_calls_per_account", "must be 1 to 100"));
        }
        if !(1..=50).contains(&self.open_link_requests) {
            return Err(("family.open_link_requests", "must be 1 to 50"));
        }
        if !(1..=179).contains(&self.idle_notice_days) {
            return Err((
                "family.idle_notice_days",
                "must be 1 to 179: the notice comes before a balance is 180 days idle",
            ));
        }
        Ok(())
    }
}

/// Where emailed links point: `family.public_url`, else `http://` + `http.listen`.
pub fn public_url(config: &crate::config::Config) -> String {
    let configured = &config.family.public_url;
    if configured.is_empty() {
        format!("http://{}", config.http.listen)
    } else {
        configured.trim_end_matches('/').to_string()
    }
}

/// Longest address accepted, in bytes (RFC 5321's path limit less the brackets).
pub const MAX_EMAIL_BYTES: usize = 254;

/// Why an address was refused (shown to the person typing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailProblem {
    #[error("enter an email address")]
    Empty,
    #[error("an email address is at most 254 characters")]
    TooLong,
    #[error("an email address looks like name@example.org")]
    Shape,
}

/// The one stored form of an address: trimmed and lower-cased (no provider treats the
/// case of its addresses as different people, and one account per person matters more
/// than the rare one that does), checked for the plain `local@domain.tld` shape in
/// printable ASCII. Internationalized addresses are refused for now.
pub fn normalize_email(raw: &str) -> Result<String, EmailProblem> {
    let e = raw.trim();
    if e.is_empty() {
        return Err(EmailProblem::Empty);
    }
    if e.len() > MAX_EMAIL_BYTES {
        return Err(EmailProblem::TooLong);
    }
    let Some((local, domain)) = e.rsplit_once('@') else {
        return Err(EmailProblem::Shape);
    };
    let allowed = |c: char| c.is_ascii_graphic() && !"@<>()[]\\,;:\"".contains(c);
    let labels_ok = domain.split('.').count() >= 2
        && domain.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if local.is_empty() || local.len() > 64 || !local.chars().all(allowed) || !labels_ok {
        return Err(EmailProblem::Shape);
    }
    Ok(e.to_ascii_lowercase())
}

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkPurpose {
    /// Verifies a new account's address.
    Verify,
    /// Resets a forgotten password.
    Reset,
    /// Confirms a new address (a change of email).
    Email,
}

impl LinkPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Verify => "verify",
            LinkPurpose::Reset => "reset",
            LinkPurpose::Email => "email",
        }
    }
}

/// The page address a link opens: the secret rides in the fragment (`#reset=…`), which a
/// browser never sends to a server, so it stays out of access logs and `Referer`.
pub fn link(public_url: &str, purpose: LinkPurpose, secret: &str) -> String {
    format!(
        "{}/family/#{}={secret}",
        public_url.trim_end_matches('/'),
        purpose.as_str()
    )
}

/// A fresh link secret (32 random bytes, hex).
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The CSRF token of the session whose token has SHA-256 `token_hash`: a MAC under the
/// gateway's key, so it needs no storage, differs per session and ends with it.
pub fn csrf_token(key: &[u8], token_hash: &str) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail; if it did, the token
    // would be empty, and the API refuses an empty token.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(b"sallyport family csrf v1\0");
            mac.update(token_hash.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_lowered_and_checked() {
        assert_eq!(
            normalize_email("  Ana.Diaz+jail@Example.ORG "),
            Ok("ana.diaz+jail@example.org".into())
        );
        assert_eq!(normalize_email(""), Err(EmailProblem::Empty));
        for bad in [
            "ana",
            "ana@",
            "@example.org",
            "ana@example",
            "ana@exa mple.org",
            "a b@example.org",
            "ana@-x.org",
            "ana@ex..org",
            "<ana>@example.org",
            "añа@example.org",
        ] {
            assert_eq!(normalize_email(bad), Err(EmailProblem::Shape), "{bad}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert_eq!(normalize_email(&long), Err(EmailProblem::TooLong));
    }

    #[test]
    fn links_carry_the_secret_in_the_fragment() {
        assert_eq!(
            link("https://portal.example.org/", LinkPurpose::Reset, "abc"),
            "https://portal.example.org/family/#reset=abc"
        );
    }

    #[test]
    fn csrf_tokens_differ_by_session_and_key() {
        let a = csrf_token(b"key-1", "h1");
        assert_eq!(a, csrf_token(b"key-1", "h1"));
        assert_ne!(a, csrf_token(b"key-1", "h2"));
        assert_ne!(a, csrf_token(b"key-2", "h1"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn the_defaults_check() {
        assert!(FamilyConfig::default().check().is_ok());
        let bad = FamilyConfig {
            public_url: "ftp://x".into(),
            ..FamilyConfig::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "family.public_url");
    }
}
