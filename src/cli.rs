//! The command line: `serve`, `migrate`, `drain`, `demo`, and admin subcommands that mirror the API
//! for operators who script (booking, PINs, contacts, deposits, release, statements,
//! tokens, users),
//! and the integrity checks (`verify-audit`, `verify-recordings`, and `verify-package`,
//! which needs neither configuration nor database).

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::db::Db;
use crate::ledger::{DepositMethod, DepositRequest, RequestKey};
use crate::money::Money;
use crate::policy::pin::CredentialRules;
use crate::store::{
    Booking, CallFilter, ContactStatus, NewContact, NewUser, Role, Store, TokenBinding,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "sallyport",
    version,
    about = "SIP/WebRTC gateway for correctional facilities"
)]
pub struct Cli {
    /// Configuration file (every key can be overridden by SALLYPORT_<SECTION>_<KEY>).
    #[arg(
        long,
        global = true,
        default_value = "config/sallyport.toml",
        env = "SALLYPORT_CONFIG"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default when no command is given).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Drain the `serve` of this configuration (same node.id and node.data_dir) before an
    /// upgrade: it stops taking new calls (SIP OPTIONS and new INVITEs answer 503), lets
    /// the calls in progress finish, then exits. Sends it SIGUSR1.
    Drain {
        /// Wait until the node has exited.
        #[arg(long)]
        wait: bool,
    },
    /// Seed the demo facility (idempotent) and print what it made.
    Demo {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Book an inmate (opens the debit account).
    Book {
        #[arg(long)]
        facility: String,
        #[arg(long)]
        booking: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
        #[arg(long)]
        pin: Option<String>,
        /// The calling ID keyed before the PIN (default: a random free one).
        #[arg(long)]
        calling_id: Option<String>,
    },
    /// Set an inmate's PIN (and with --calling-id their calling ID); clears a PIN lock.
    SetPin {
        #[arg(long)]
        facility: String,
        #[arg(long)]
        booking: String,
        #[arg(long)]
        pin: String,
        #[arg(long)]
        calling_id: Option<String>,
    },
    /// Add a contact to an inmate's list (approved at once with --approve).
    AddContact {
        #[arg(long)]
        facility: String,
        #[arg(long)]
        booking: String,
        #[arg(long)]
        number: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        relationship: String,
        #[arg(long)]
        privileged: bool,
        #[arg(long)]
        approve: bool,
    },
    /// Approve a pending contact by id.
    ApproveContact { id: String },
    /// Post a deposit to an inmate's account.
    Deposit {
        #[arg(long)]
        facility: String,
        #[arg(long)]
        booking: String,
        /// Amount as the API writes it: digits, optionally a point and 1 to 4 decimals
        /// (deposits take at most 2), e.g. 25.00
        #[arg(long)]
        amount: String,
        /// online, kiosk or money_order
        #[arg(long, default_value = "online")]
        method: String,
        /// Idempotency key (1-200 printable ASCII characters without spaces): the same key
        /// never posts twice from the CLI; API callers' keys are their own.
        #[arg(long)]
        key: String,
        #[arg(long, default_value = "")]
        depositor: String,
    },
    /// Release an inmate: refund the balance and close the account (as
    /// `POST /inmates/{id}/release`). A live call this process cannot reach (it runs in
    /// `serve`) ends with reason `released` at its next increment, refused by the closed
    /// account, uncharged; release through the API to end it at once.
    Release {
        #[arg(long)]
        facility: String,
        #[arg(long)]
        booking: String,
        /// Idempotency key: a retry under it finishes the same release.
        #[arg(long)]
        key: String,
    },
    /// Print an inmate's statement (JSON, or CSV with --csv).
    Statement {
        #[arg(long)]
        facility: String,
        #[arg(long)]
        booking: String,
        /// RFC 3339 start, default 31 days ago
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// RFC 3339 end, default now
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        #[arg(long)]
        csv: bool,
    },
    /// Issue an API bearer token.
    Token {
        #[arg(long)]
        username: String,
        /// admin, investigator, family or kiosk
        #[arg(long)]
        role: String,
        /// Facility the token may act on (repeat for several; none = all, admins only)
        #[arg(long)]
        facility: Vec<String>,
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: i64,
        /// A family user: a contact it visits as (repeat for several; replaces the ones it
        /// had, none given keeps them)
        #[arg(long)]
        contact: Vec<String>,
        /// A kiosk user: the visit station it is
        #[arg(long)]
        station: Option<String>,
    },
    /// Users who log in with a password (investigators, staff).
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Walk the audit log's hash chain; name every entry changed, removed or moved
    /// (exit status 1 when any is).
    VerifyAudit,
    /// Walk the recordings hash chain and the files under `[recording] dir`; name every
    /// file changed, removed or added and every entry moved or edited (exit status 1
    /// when any is).
    VerifyRecordings,
    /// Check an evidence package (a tar from `POST /api/v1/evidence-packages`): every
    /// file against its SHA-256, every recording against its chain entry, the chain links
    /// around each recording, and the head anchored in the audit log. Needs no
    /// configuration, database or network; prints every check and exits 0 when all pass,
    /// 1 when any fails (naming the file or the chain entry), 2 when the file cannot be
    /// read as a package.
    VerifyPackage {
        /// The package file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user with a password (at least 12 characters), read from the environment
    /// variable named by --password-env, or else from the first line of standard input.
    Add {
        #[arg(long)]
        username: String,
        /// admin, investigator, family or kiosk
        #[arg(long)]
        role: String,
        /// Facility the user may act on (repeat for several; none = all, admins only)
        #[arg(long)]
        facility: Vec<String>,
        /// Name of an environment variable holding the password (keeps it out of `ps`).
        #[arg(long)]
        password_env: Option<String>,
    },
}

/// Whose idempotency keys the CLI's are: the operator at the console, a caller of its own
/// (an API token reusing a key the CLI used gets its own answer, and the other way round).
pub const CLI_CALLER: &str = "cli";

/// Loads the config, connects and migrates: what every command needs first.
pub async fn open(config: &Config) -> anyhow::Result<Store> {
    let mut db = Db::connect(&config.database.url, config.database.max_connections)
        .await
        .with_context(|| {
            format!(
                "connecting to {}",
                crate::db::redact_url(&config.database.url)
            )
        })?;
    if !config.database.group_commit {
        db.commit_alone();
    }
    db.migrate().await.context("applying migrations")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut store = Store::new(db, clock, &config.security.pin_pepper)
        .with_credential_rules(CredentialRules::from_config(&config.security));
    if let Some(caps) = cap_tables(&config.billing.cap_tables_dir)? {
        store = store.with_cap_schedule(caps);
    }
    // The data step of migration 0005: calling IDs for inmates booked before them.
    store
        .assign_calling_ids()
        .await
        .context("giving calling IDs to inmates booked before them")?;
    Ok(store)
}

/// The rate cap tables of `billing.cap_tables_dir`, if set: every `*.toml` in it.
fn cap_tables(dir: &std::path::Path) -> anyhow::Result<Option<crate::rating::CapSchedule>> {
    if dir.as_os_str().is_empty() {
        return Ok(None);
    }
    let key = "billing.cap_tables_dir";
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{key}: {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("{key}: {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    if files.is_empty() {
        anyhow::bail!("{key}: no *.toml rate cap table in {}", dir.display());
    }
    files.sort();
    let caps = crate::rating::CapSchedule::from_files(&files).with_context(|| key.to_string())?;
    Ok(Some(caps))
}

/// Runs one admin command (everything but `serve`).
pub async fn run_admin(command: Command, config: &Config) -> anyhow::Result<()> {
    let store = open(config).await?;
    match command {
        Command::Serve => unreachable_serve(),
        Command::Drain { wait } => crate::cluster::drain::request(config, wait)?,
        Command::Migrate => println!("migrations applied"),
        Command::VerifyAudit => verify_audit(&store).await?,
        Command::VerifyRecordings => verify_recordings(&store, config).await?,
        Command::VerifyPackage { file } => {
            let code = verify_package(&file);
            if code != 0 {
                anyhow::bail!("the evidence package {} does not verify", file.display());
            }
        }
        Command::User { action } => user(&store, action).await?,
        Command::Demo { json } => {
            let info = crate::demo::seed(&store, config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", info.describe());
            }
        }
        Command::Book {
            facility,
            booking,
            first_name,
            last_name,
            pin,
            calling_id,
        } => {
            let b = Booking {
                booking_number: booking,
                first_name,
                last_name,
                pin,
                calling_id,
                housing_unit: None,
            };
            print_json(&store.book_inmate(&facility, b).await?)?;
        }
        Command::SetPin {
            facility,
            booking,
            pin,
            calling_id,
        } => {
            let i = store.inmate_by_booking(&facility, &booking).await?;
            let i = store
                .set_credentials(&i.id, &pin, calling_id.as_deref())
                .await?;
            print_json(&i)?;
        }
        Command::AddContact {
            facility,
            booking,
            number,
            name,
            relationship,
            privileged,
            approve,
        } => {
            let i = store.inmate_by_booking(&facility, &booking).await?;
            let c = NewContact {
                number,
                name,
                relationship,
                privileged,
                video_allowed: false,
            };
            let mut c = store.add_contact(&i.id, c).await?;
            if approve {
                c = store
                    .decide_contact(&c.id, ContactStatus::Approved, "cli")
                    .await?;
            }
            print_json(&c)?;
        }
        Command::ApproveContact { id } => {
            print_json(
                &store
                    .decide_contact(&id, ContactStatus::Approved, "cli")
                    .await?,
            )?;
        }
        Command::Deposit {
            facility,
            booking,
            amount,
            method,
            key,
            depositor,
        } => {
            let i = store.inmate_by_booking(&facility, &booking).await?;
            let amount = Money::parse_amount(&amount).context("--amount")?;
            let method: DepositMethod = serde_json::from_value(serde_json::Value::String(method))
                .context("--method must be online, kiosk or money_order")?;
            let req = DepositRequest {
                account_id: i.account_id,
                method,
                amount,
                depositor,
                reference: "cli".into(),
            };
            let key = RequestKey::new(CLI_CALLER, &key).context("--key")?;
            print_json(&store.ledger().deposit(&key, req).await?)?;
        }
        Command::Release {
            facility,
            booking,
            key,
        } => {
            let i = store.inmate_by_booking(&facility, &booking).await?;
            let live = CallFilter {
                inmate_id: Some(i.id.clone()),
                active: true,
                ..CallFilter::default()
            };
            let live = store.calls(&live, None).await?;
            let key = RequestKey::new(CLI_CALLER, &key).context("--key")?;
            let (inmate, release) = store.release_inmate(&key, &i.id).await?;
            for c in &live {
                eprintln!(
                    "note: the live call {} (node {}) ends with reason released at its next \
                     increment, refused by the closed account",
                    c.id, c.node_id
                );
            }
            let elsewhere: Vec<&str> = live.iter().map(|c| c.id.as_str()).collect();
            print_json(&serde_json::json!({ "inmate": inmate, "release": release,
                "ended_calls": [], "calls_elsewhere": elsewhere }))?;
        }
        Command::Statement {
            facility,
            booking,
            from,
            to,
            csv,
        } => {
            let i = store.inmate_by_booking(&facility, &booking).await?;
            let to = to.unwrap_or_else(|| Utc::now() + chrono::Duration::microseconds(1));
            let from = from.unwrap_or(to - chrono::Duration::days(31));
            let st = store.ledger().statement(&i.account_id, from, to).await?;
            if csv {
                print!("{}", st.to_csv());
            } else {
                print_json(&st)?;
            }
        }
        Command::Token {
            username,
            role,
            facility,
            ttl_secs,
            contact,
            station,
        } => {
            let role = Role::parse(&role)
                .context("--role must be admin, investigator, family or kiosk")?;
            let binding = TokenBinding {
                contacts: (!contact.is_empty()).then_some(contact),
                station_id: station,
            };
            println!(
                "{}",
                store
                    .issue_bound_token(&username, role, &facility, ttl_secs, &binding)
                    .await?
            );
        }
    }
    store.db().close().await;
    Ok(())
}

async fn user(store: &Store, action: UserCommand) -> anyhow::Result<()> {
    match action {
        UserCommand::Add {
            username,
            role,
            facility,
            password_env,
        } => {
            let role = Role::parse(&role)
                .context("--role must be admin, investigator, family or kiosk")?;
            let password = read_password(password_env.as_deref())?;
            let u = NewUser {
                username,
                password,
                role,
                facilities: facility,
            };
            print_json(&store.create_user(&u).await?)
        }
    }
}

/// The password from the named environment variable, or the first line of stdin.
fn read_password(env: Option<&str>) -> anyhow::Result<String> {
    if let Some(var) = env {
        return std::env::var(var).with_context(|| format!("--password-env: {var} is not set"));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn verify_audit(store: &Store) -> anyhow::Result<()> {
    let v = store.verify_audit().await?;
    for p in &v.problems {
        let what = match p.fault {
            crate::store::AuditFault::Changed => "changed (its fields no longer match its hash)",
            crate::store::AuditFault::BrokenLink => {
                "does not follow the entry before it (entries removed, inserted or reordered)"
            }
        };
        println!("audit entry {}: {what}", p.id);
    }
    if !v.intact() {
        anyhow::bail!(
            "the audit log's hash chain is broken at {} place(s) over {} entries",
            v.problems.len(),
            v.entries
        );
    }
    println!("audit log intact: {} entries, head {}", v.entries, v.head);
    Ok(())
}

/// One line per problem, then a summary; an error (exit status 1) when any problem.
async fn verify_recordings(store: &Store, config: &Config) -> anyhow::Result<()> {
    let dir = &config.recording.dir;
    let r = crate::recording::chain::verify_all(store, dir)
        .await
        .with_context(|| format!("verifying the recordings in {}", dir.display()))?;
    for p in &r.problems {
        println!("{p}");
    }
    println!(
        "recordings chain: {} entries, {} recordings ({} purged), {} files under {}; {} problem(s)",
        r.entries,
        r.recordings,
        r.purged,
        r.files,
        dir.display(),
        r.problems.len()
    );
    if !r.ok {
        anyhow::bail!(
            "the recordings do not verify: {} problem(s)",
            r.problems.len()
        );
    }
    println!("recordings intact, head {}", r.head);
    Ok(())
}

/// `sallyport verify-package FILE`: one line per check, then the verdict; the exit
/// status (0 intact, 1 a check failed, 2 not readable as a package). Reads nothing but
/// the file: no configuration, no database, no network.
pub fn verify_package(file: &std::path::Path) -> u8 {
    let report = match crate::evidence::verify_file(file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    for c in &report.checks {
        println!("{c}");
    }
    println!(
        "package {} ({} bytes), SHA-256 {}",
        file.display(),
        report.package_bytes,
        report.package_sha256
    );
    let failed = report.failures().count();
    if report.intact() {
        println!(
            "evidence package {} INTACT: all {} checks passed",
            report.package_id.as_deref().unwrap_or("?"),
            report.checks.len()
        );
        0
    } else {
        println!(
            "evidence package {} NOT INTACT: {failed} of {} checks failed",
            report.package_id.as_deref().unwrap_or("?"),
            report.checks.len()
        );
        for c in report.failures() {
            println!("  {c}");
        }
        1
    }
}

fn unreachable_serve() {
    eprintln!("serve is handled by main");
}

/// An error and its causes on one line, each said once: a cause whose text the message
/// before it already holds (an error whose message quotes its `source`, as "cannot read
/// prompt X: No such file" does) is not repeated.
pub fn error_report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_tables_come_from_the_configured_directory_and_errors_name_the_key() {
        assert!(cap_tables(std::path::Path::new("")).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let e = error_report(&cap_tables(dir.path()).unwrap_err());
        assert!(
            e.contains("billing.cap_tables_dir") && e.contains("no *.toml"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("puc.toml"),
            "name = \"PUC\"\n[caps.prison]\naudio = \"0.05\"\n",
        )
        .unwrap();
        let caps = cap_tables(dir.path()).unwrap().unwrap();
        assert_eq!(caps.tables().len(), 1);
        std::fs::write(dir.path().join("bad.toml"), "name = 1\n").unwrap();
        let e = error_report(&cap_tables(dir.path()).unwrap_err());
        assert!(
            e.contains("billing.cap_tables_dir") && e.contains("bad.toml"),
            "{e}"
        );
    }

    #[test]
    fn an_error_report_says_each_cause_once() {
        let os = std::io::Error::from(std::io::ErrorKind::NotFound);
        let inner = crate::media::prompts::PromptError::Io {
            path: "config/prompts/welcome.wav".into(),
            source: os,
        };
        let e = anyhow::Error::new(inner).context("loading rtp.prompts_dir config/prompts");
        let report = error_report(&e);
        assert_eq!(report.matches("not found").count(), 1, "{report}");
        assert!(report.starts_with("loading rtp.prompts_dir config/prompts: cannot read prompt"));
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_report(&plain), "outer: inner");
    }
}
