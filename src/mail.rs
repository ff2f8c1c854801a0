//! Outgoing email: the family portal's verification and password-reset links.
//!
//! Owns: building a message (plain text, one recipient) and handing it to a transport
//! through lettre. By default (`mail.transport = "file"`) each message is written as an
//! `.eml` file under `<node.data_dir>/mail` (or `mail.dir`), so the two-command set-up
//! needs no mail server and an operator (or a test) reads the links there (lettre
//! encodes a body with lines over 76 characters, as every link is, as quoted-printable:
//! a mail client shows it plainly; `sed -e ':a;/=$/{N;s/=\n//;ba}' -e 's/=3D/=/g'` too). With
//! `mail.transport = "smtp"` messages go to `mail.smtp_host`: STARTTLS by default, TLS on
//! connect, or plain text to a relay on the same machine (`mail.smtp_tls = "none"`).
//!
//! Called by: the family routes ([`crate::api`]), which send in a background task so an
//! answer never waits for (or reveals by its timing) an email; a failure is logged.

use crate::config::Config;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The `[mail]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// `file` (the default: `.eml` files under `dir`) or `smtp`.
    pub transport: String,
    /// Where `file` writes; empty: `<node.data_dir>/mail`.
    pub dir: PathBuf,
    /// The sender, `Name <address>` or a bare address.
    pub from: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `starttls` (the default), `tls` (TLS on connect, usually port 465) or `none`
    /// (plain text: only to a relay on this machine or a trusted network).
    pub smtp_tls: String,
    /// Empty: no authentication.
    pub smtp_username: String,
    pub smtp_password: String,
    /// How long one delivery may take before it is given up (and logged).
    pub smtp_timeout_secs: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            transport: "file".into(),
            dir: PathBuf::new(),
            from: "sallyport <no-reply@localhost>".into(),
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_tls: "starttls".into(),
            smtp_username: String::new(),
            smtp_password: String::new(),
            smtp_timeout_secs: 30,
        }
    }
}

impl MailConfig {
    /// The first key out of bounds and what is wrong with it.
    pub(crate) fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.from.parse::<Mailbox>().is_err() {
            return Err(("mail.from", "must be an address or 'Name <address>'"));
        }
        match self.transport.as_str() {
            "file" => Ok(()),
            "smtp" => {
                if self.smtp_host.is_empty() {
                    return Err((
                        "mail.smtp_host",
                        "must be set when mail.transport = \"smtp\"",
                    ));
                }
                if !["starttls", "tls", "none"].contains(&self.smtp_tls.as_str()) {
                    return Err(("mail.smtp_tls", "must be starttls, tls or none"));
                }
                if !(1..=600).contains(&self.smtp_timeout_secs) {
                    return Err(("mail.smtp_timeout_secs", "must be 1 to 600"));
                }
                Ok(())
            }
            _ => Err(("mail.transport", "must be file or smtp")),
        }
    }
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("bad address: {0}")]
    Address(#[from] lettre::address::AddressError),
    #[error("message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("writing the message file: {0}")]
    File(#[from] lettre::transport::file::Error),
    #[error("creating the mail directory {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
}

/// One plain-text email to one recipient.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The directory `file` delivery writes to.
pub fn mail_dir(config: &Config) -> PathBuf {
    if config.mail.dir.as_os_str().is_empty() {
        config.node.data_dir.join("mail")
    } else {
        config.mail.dir.clone()
    }
}

/// Sends `email` as the config says (file or SMTP).
pub async fn send(config: &Config, email: &Email) -> Result<(), MailError> {
    let c = &config.mail;
    let message = Message::builder()
        .from(c.from.parse::<Mailbox>()?)
        .to(email.to.parse::<Mailbox>()?)
        .subject(email.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(email.body.clone())?;
    if c.transport == "smtp" {
        let builder = match c.smtp_tls.as_str() {
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.smtp_host)?,
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.smtp_host),
            _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.smtp_host)?,
        };
        let mut builder = builder
            .port(c.smtp_port)
            .timeout(Some(Duration::from_secs(c.smtp_timeout_secs)));
        if !c.smtp_username.is_empty() {
            builder = builder.credentials(Credentials::new(
                c.smtp_username.clone(),
                c.smtp_password.clone(),
            ));
        }
        builder.build().send(message).await?;
    } else {
        let dir = mail_dir(config);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| MailError::Dir {
                dir: dir.display().to_string(),
                source,
            })?;
        AsyncFileTransport::<Tokio1Executor>::new(dir)
            .send(message)
            .await?;
    }
    Ok(())
}

/// Sends `email` in a background task; a failure is logged (never the address or the
/// body, which holds a secret link).
pub fn send_later(config: std::sync::Arc<Config>, email: Email) {
    tokio::spawn(async move {
        if let Err(e) = send(&config, &email).await {
            tracing::error!(error = %e, subject = %email.subject, "email not sent");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_check_and_bad_values_name_their_key() {
        assert!(MailConfig::default().check().is_ok());
        let smtp = MailConfig {
            transport: "smtp".into(),
            ..MailConfig::default()
        };
        assert_eq!(smtp.check().unwrap_err().0, "mail.smtp_host");
        let bad = MailConfig {
            transport: "pigeon".into(),
            ..MailConfig::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "mail.transport");
        let from = MailConfig {
            from: "not an address".into(),
            ..MailConfig::default()
        };
        assert_eq!(from.check().unwrap_err().0, "mail.from");
    }
}
