//! Configuration: `config/sallyport.toml`, overridable key by key from the environment.
//!
//! Every key lives in a section (`[database] url = …`) and can be overridden by the
//! environment variable `SALLYPORT_<SECTION>_<KEY>` in upper case, e.g.
//! `SALLYPORT_DATABASE_URL` or `SALLYPORT_HTTP_ADMIN_TOKEN`. Unknown keys in the file are
//! refused (a typo must not silently fall back to a default), and every error names the
//! key and where it came from (the file, or the environment variable).
//!
//! # Relative paths
//!
//! A relative path is relative to where it was written. In the config file
//! ([`FILE_PATH_KEYS`]: `node.data_dir`, `database.url` of SQLite, `rtp.prompts_dir`,
//! `recording.dir`, `mail.dir`) it is relative to the directory of the file, so
//! `sallyport --config /srv/sallyport/config/sallyport.toml` finds its prompts and data
//! from any current directory. A value from the environment, a built-in default and the
//! `--config` path itself are relative to the current directory. The shipped
//! `config/sallyport.toml` therefore says `prompts_dir = "prompts"` and
//! `data_dir = "../data"`: from the repository root, where the README runs
//! `cargo run --release`, that is `config/prompts` and `data/`, as it always was.
//!
//! Owns: parsing and validation. Called by: `main`/the CLI, which hands the parts to the
//! drivers. The checked-in `config/sallyport.toml` is parsed by a test.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Environment variables starting with this prefix override keys.
pub const ENV_PREFIX: &str = "SALLYPORT_";

/// Shortest `rtp.media_timeout_secs` besides 0: below this, an ordinary network hiccup
/// (a second of loss, a Wi-Fi handover) would cut live calls.
const MEDIA_TIMEOUT_MIN_SECS: u32 = 2;
/// Longest `rtp.media_timeout_secs`: more than an hour of silence is no timeout at all, and
/// a larger figure is most likely milliseconds written as seconds.
const MEDIA_TIMEOUT_MAX_SECS: u32 = 3600;

/// Shortest `rtp.max_queue_ms` besides 0: below this, an ordinary scheduling delay of a
/// busy host would drop packets of a relay that keeps up.
const MAX_QUEUE_MIN_MS: u32 = 10;
/// Longest `rtp.max_queue_ms`: a packet a second late is of no use to a conversation.
const MAX_QUEUE_MAX_MS: u32 = 1000;

/// The demo secrets shipped in `config/sallyport.toml`: fine for trying the gateway out,
/// never for real use (`serve` warns loudly while one is in use).
pub const DEMO_SECRETS: [(&str, &str); 2] = [
    ("security.pin_pepper", "demo-pepper-change-me-0123456789"),
    ("http.admin_token", "demo-admin-token-change-me"),
];

/// The keys whose values are paths, resolved against the config file's directory when
/// they are written in the file (see the module doc).
pub const FILE_PATH_KEYS: [(&str, &str); 5] = [
    ("node", "data_dir"),
    ("database", "url"),
    ("rtp", "prompts_dir"),
    ("recording", "dir"),
    ("mail", "dir"),
];

/// A configuration error, naming the key and its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source} (give another with --config FILE or SALLYPORT_CONFIG)"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: key [{section}] {key} {message}")]
    Env {
        var: String,
        section: String,
        key: String,
        message: String,
    },
    #[error("config {source_name}: key {key}: {message}")]
    Invalid {
        source_name: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub cluster: ClusterConfig,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub sip: SipConfig,
    pub rtp: RtpConfig,
    pub security: SecurityConfig,
    pub billing: BillingConfig,
    pub visits: VisitsConfig,
    pub recording: RecordingConfig,
    pub demo: DemoConfig,
    /// The family portal's accounts ([`crate::family::FamilyConfig`]).
    pub family: crate::family::FamilyConfig,
    /// Outgoing email ([`crate::mail::MailConfig`]).
    pub mail: crate::mail::MailConfig,
    /// Online deposits' payment provider and its webhooks ([`crate::payments`]).
    pub payments: PaymentsConfig,
    /// Messages between inmates and contacts ([`crate::messaging::MessagingConfig`]).
    pub messaging: crate::messaging::MessagingConfig,
    /// Spoken keyword alerts ([`crate::keywords::KeywordConfig`]).
    pub keywords: crate::keywords::KeywordConfig,
}

/// This gateway process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Written on every session this node carries, so a restart closes only its own.
    pub id: String,
    /// Root of the node's files (the SQLite database by default, recordings later).
    pub data_dir: PathBuf,
    /// Where the other nodes reach this node's API (`http://host:port`), registered in
    /// the `nodes` table: a terminate or listen sent to another node is forwarded here
    /// when this node carries the call. Empty: `http://` + the address `http.listen` is
    /// bound to (a wildcard address becomes 127.0.0.1, reachable from this machine only).
    pub api_url: String,
}

/// What the nodes sharing one database (PostgreSQL) must agree on, so that any node's API
/// reaches the calls every node carries ([`crate::cluster`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Secret the inter-node credential's key is derived from (at least 16 characters;
    /// the same on every node). Empty: derived from `security.pin_pepper`, which every
    /// node sharing a database already shares.
    pub secret: String,
    /// How often a node writes its heartbeat (and its API address) into `nodes`, and
    /// looks for dead nodes to take over.
    pub heartbeat_secs: u64,
    /// A node whose last heartbeat is older than this is dead: a surviving node closes
    /// its open sessions (reason `system`) and finishes its recordings
    /// ([`crate::cluster::takeover`]). At least twice `heartbeat_secs`; a node that could
    /// not write its heartbeat this long ends its own calls.
    pub dead_after_secs: u64,
    /// How long a forwarded request may take, connecting included, before the node that
    /// got it answers 502 `node_unreachable`.
    pub forward_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://data/sallyport.db` (one node) or `postgres://user@host/db` (many nodes).
    pub url: String,
    pub max_connections: u32,
    /// SQLite: writers queued behind one another share a commit (`db::group`).
    pub group_commit: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer token of the built-in administrator. Empty disables it.
    pub admin_token: String,
    /// How long a token from `POST /api/v1/auth/login` stays valid.
    pub session_ttl_secs: u64,
    /// Wrong passwords in a row that lock a user out of logging in ...
    pub login_lockout_after_failures: u32,
    /// ... for this many seconds.
    pub login_lockout_secs: u64,
    /// How long a playback or download ticket for a recording stays valid, on top of the
    /// recording's own length (so seeking keeps working to the end of a listen).
    pub ticket_ttl_secs: u64,
    /// Secret the recording tickets' MAC key is derived from (at least 16 characters; the
    /// same on every node). Empty: derived from `security.pin_pepper`, with a warning.
    pub ticket_secret: String,
    /// HTTP connections open at once; past it the gateway stops accepting until one
    /// closes.
    pub max_connections: u32,
    /// HTTP connections one source address may hold; past it new ones are closed.
    pub max_connections_per_source: u32,
    /// Seconds a client has to send a request's head, and to start the next one on a
    /// kept-alive connection; slower or idle connections are closed.
    pub header_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub udp_listen: SocketAddr,
    pub tcp_listen: SocketAddr,
    /// Digest authentication realm for handsets.
    pub realm: String,
    /// Where outbound calls go (the carrier trunk).
    pub trunk: SocketAddr,
    /// New requests per second accepted before answering 503 with Retry-After (0: no
    /// limit). In-dialog requests of live calls (BYE, ACK, CANCEL, INFO, re-INVITE) never
    /// count.
    pub max_requests_per_second: u32,
    /// New requests per second from one source address (0: no per-source limit), asked
    /// before the global budget so that one source cannot spend all of it.
    pub per_source_requests_per_second: u32,
    /// Requests one source may send at once after a quiet spell.
    pub per_source_burst: u32,
    /// Most SIP TCP connections open at once (accepted and outbound).
    pub tcp_max_connections: u32,
    /// Most SIP TCP connections from one source address.
    pub tcp_max_connections_per_source: u32,
    /// A TCP connection with nothing received or sent for this long is closed, unless a
    /// live call's dialog was set up over it.
    pub tcp_idle_timeout_secs: u32,
    /// A message whose first byte has arrived must be complete within this time (a slow
    /// sender is cut: slow-loris).
    pub tcp_message_timeout_secs: u32,
    /// Bytes of unfinished messages all TCP connections may hold together beyond the 8 KiB
    /// each may always hold; a connection that needs more than is left is closed.
    pub tcp_buffer_pool_bytes: u64,
    /// File descriptors SIP over TCP never takes (for media, HTTP, the database and
    /// recordings); 0: the RTP range's ports plus 256.
    pub tcp_fd_reserve: u32,
    /// SIP proxies (a load balancer such as Kamailio) trusted to say where a handset's
    /// request came from: comma-separated CIDRs. A request from one of them is admitted on
    /// the trusted networks by the address of the hop before the proxy (its Via's
    /// `received`, else its sent-by), not the proxy's. Empty: no proxy is trusted.
    pub trusted_proxies: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtpConfig {
    pub port_min: u16,
    pub port_max: u16,
    /// The address written into SDP for the media the gateway anchors.
    pub advertised_ip: String,
    /// The address media sockets bind to.
    pub listen_ip: String,
    /// Media worker threads (0: one per CPU).
    pub workers: usize,
    /// Folder of the prompt WAVs (8 kHz mono 16-bit).
    pub prompts_dir: PathBuf,
    /// A bridged call ends (`media_timeout`) when either leg has sent no RTP for this
    /// many seconds: a peer gone without a BYE must not keep billing. 0 disables it.
    pub media_timeout_secs: u32,
    /// A received RTP packet that has waited longer than this many milliseconds (in the
    /// kernel's socket queue and the media worker) when its worker reads it is dropped,
    /// not forwarded, and counted: an overloaded engine sheds load instead of building a
    /// standing queue. 0: never (the kernel's default socket buffers, seconds of queue).
    pub max_queue_ms: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Key of the keyed hash (HMAC-SHA256) under which PINs are looked up. Changing it
    /// invalidates every PIN.
    pub pin_pepper: String,
    /// Digits of an inmate's calling ID, the number keyed before the PIN (facility-issued,
    /// random, unique per facility). A change applies to new IDs; issued ones keep working.
    pub calling_id_digits: u32,
    /// Shortest and longest PIN staff may set.
    pub pin_min_digits: u32,
    pub pin_max_digits: u32,
    /// Wrong ID + PIN pairs that end one call.
    pub pin_attempts_per_call: u32,
    /// Failed ID + PIN entries within `failure_window_secs` (across calls and nodes) that
    /// lock the inmate whose ID was keyed, and the handset they were keyed on ...
    pub lockout_after_failures: u32,
    /// ... for this many seconds; each further lock of the same inmate, handset or line
    /// that begins within a day of the last one's end lasts twice as long, up to
    /// `lockout_max_secs`.
    pub lockout_secs: u64,
    pub lockout_max_secs: u64,
    /// How long a failure counts: older failures are forgotten (a lock's own failures are
    /// forgotten when it ends).
    pub failure_window_secs: u64,
    /// Failed entries within the window from one source address (a line, whatever From
    /// user it claims) that lock that address. 0: addresses are not counted (only when
    /// every handset reaches the gateway through one proxy address).
    pub line_lockout_after_failures: u32,
    /// Failed entries within a day that lock an inmate, handset or line however slowly
    /// they were keyed (a guesser who stays under the hourly threshold). 0: off.
    pub daily_lockout_after_failures: u32,
    /// A facility-wide guessing alert (audit entry `pin.guessing_alert`, metric
    /// `sallyport_pin_guessing_alerts_total`) is raised when failed entries within
    /// `guess_alert_window_secs` name at least this many distinct IDs; at most one alert
    /// per facility per window.
    pub guess_alert_ids: u32,
    pub guess_alert_window_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Increment used when a rate plan does not set one.
    pub default_increment_secs: u32,
    /// How long before a funds or duration cut the warning prompt plays.
    pub warning_lead_secs: u32,
    /// How long the called party has to press 1.
    pub accept_timeout_secs: u32,
    /// A directory of rate cap tables (every `*.toml` in it, each with its
    /// `effective_from`) that replace the checked-in FCC tables. Empty: the checked-in
    /// `config/fcc_caps_2024.toml` and `config/fcc_caps_2025.toml`.
    pub cap_tables_dir: PathBuf,
}

/// Video visits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VisitsConfig {
    /// How long before its slot a visit can be joined (a join link or a kiosk confirmation
    /// works from then on), so that the camera and microphone are checked before the slot
    /// opens. At most [`JOIN_LEAD_MAX_SECS`].
    pub join_lead_secs: u32,
    /// The UDP port the visits' media use on `rtp.listen_ip`: the first hub's; hub `k`
    /// takes `media_port + k` (open `media_port` to `media_port + hubs - 1` in the
    /// firewall). 0: each hub's port chosen by the kernel at start (tests).
    pub media_port: u16,
    /// How many forwarding hubs (threads, each with its own socket) carry the visits; a
    /// new visit goes to the one with the fewest. 0: one per CPU core.
    pub hubs: u16,
    /// A side whose media has not reached the gateway this long after the slot opens is
    /// a no-show, and the visit ends without a charge.
    pub no_show_after_secs: u32,
    /// The receive buffer asked for the visits' socket: every participant's packets land
    /// in it, so the kernel's default (about 208 KiB) overflows at a few dozen visits.
    /// Linux grants at most `net.core.rmem_max`; the granted size is logged at start.
    pub media_receive_buffer_bytes: usize,
}

/// The longest [`VisitsConfig::join_lead_secs`]: an hour.
pub const JOIN_LEAD_MAX_SECS: u32 = 3_600;

impl Default for VisitsConfig {
    fn default() -> Self {
        VisitsConfig {
            join_lead_secs: 900,
            media_port: 0,
            hubs: 0,
            no_show_after_secs: 600,
            media_receive_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Root of the recordings: files go to `<dir>/YYYY/MM/DD/<session>.wav` (a call) and
    /// `<dir>/YYYY/MM/DD/<session>-<participant>.webm` (a visit). Empty (the default):
    /// `<node.data_dir>/recordings`.
    pub dir: PathBuf,
    /// Packets the relay may hand the recorder ahead of the disk before it drops (and
    /// counts) them rather than wait.
    pub queue_packets: usize,
    /// How often an open recording is flushed to disk with its header made valid: what
    /// a crash can lose at most.
    pub flush_interval_ms: u64,
    /// How often the retention job looks for expired recordings.
    pub purge_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Seed the demo facility on the first start (when the database has no facility).
    pub seed_on_first_start: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: "node-1".into(),
            data_dir: PathBuf::from("data"),
            api_url: String::new(),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            secret: String::new(),
            heartbeat_secs: 10,
            dead_after_secs: 30,
            forward_timeout_secs: 5,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://data/sallyport.db".into(),
            max_connections: 8,
            group_commit: true,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: String::new(),
            session_ttl_secs: 8 * 3600,
            login_lockout_after_failures: 5,
            login_lockout_secs: 900,
            ticket_ttl_secs: 900,
            ticket_secret: String::new(),
            max_connections: 2048,
            max_connections_per_source: 256,
            header_timeout_secs: 30,
        }
    }
}

impl SipConfig {
    /// The CIDRs of [`SipConfig::trusted_proxies`].
    pub fn trusted_proxy_list(&self) -> impl Iterator<Item = &str> {
        self.trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            udp_listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            tcp_listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            realm: "sallyport".into(),
            trunk: SocketAddr::from(([127, 0, 0, 1], 5080)),
            max_requests_per_second: 500,
            per_source_requests_per_second: 100,
            per_source_burst: 200,
            tcp_max_connections: 4096,
            tcp_max_connections_per_source: 256,
            tcp_idle_timeout_secs: 600,
            tcp_message_timeout_secs: 10,
            tcp_buffer_pool_bytes: 16 * 1024 * 1024,
            tcp_fd_reserve: 0,
            trusted_proxies: String::new(),
        }
    }
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            port_min: 20000,
            port_max: 29999,
            advertised_ip: "127.0.0.1".into(),
            listen_ip: "0.0.0.0".into(),
            workers: 0,
            prompts_dir: PathBuf::from("config/prompts"),
            media_timeout_secs: 60,
            max_queue_ms: 40,
        }
    }
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            dir: PathBuf::new(),
            queue_packets: 65_536,
            flush_interval_ms: 1_000,
            purge_interval_secs: 3_600,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            pin_pepper: String::new(),
            calling_id_digits: 6,
            pin_min_digits: 4,
            pin_max_digits: 8,
            pin_attempts_per_call: 3,
            lockout_after_failures: 6,
            lockout_secs: 900,
            lockout_max_secs: 86_400,
            failure_window_secs: 3_600,
            line_lockout_after_failures: 6,
            daily_lockout_after_failures: 10,
            guess_alert_ids: 10,
            guess_alert_window_secs: 600,
        }
    }
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            default_increment_secs: 60,
            warning_lead_secs: 60,
            accept_timeout_secs: 30,
            cap_tables_dir: PathBuf::new(),
        }
    }
}

/// The payment provider of online deposits ([`crate::payments`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// Which provider takes cards: `test` (the built-in test provider; test card numbers
    /// decide the outcome, no money moves anywhere) is the only one built in.
    pub provider: String,
    /// The secret the provider signs its webhooks with (HMAC-SHA256), as the provider
    /// gives it. Empty: derived from `security.pin_pepper` (enough for the test provider,
    /// which signs with the same value; a real provider's secret must be set here).
    pub webhook_secret: String,
    /// How old (or how far in the future) a webhook's signed timestamp may be: an older
    /// one is refused as a replay.
    pub webhook_tolerance_secs: u64,
    /// A deposit still waiting for its provider this long after its last change is
    /// looked up at the provider by the reconciliation (at start, then every
    /// `reconcile_interval_secs`).
    pub reconcile_after_secs: u64,
    pub reconcile_interval_secs: u64,
    /// Test provider: how long after a payment's change its webhook is delivered (and
    /// how long a "confirm later" card takes to settle).
    pub test_webhook_delay_ms: u64,
    /// Test provider: how many times each webhook is delivered (2 or more: duplicates).
    pub test_webhook_copies: u32,
    /// Test provider: deliver the events that fall due together newest first
    /// (out of order).
    pub test_webhook_reverse: bool,
    /// What the family page says about money orders: where to send them and how they
    /// are made out. Staff post them when they arrive.
    pub money_order_instructions: String,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        PaymentsConfig {
            provider: "test".into(),
            webhook_secret: String::new(),
            webhook_tolerance_secs: 300,
            reconcile_after_secs: 60,
            reconcile_interval_secs: 60,
            test_webhook_delay_ms: 2_000,
            test_webhook_copies: 1,
            test_webhook_reverse: false,
            money_order_instructions: "Mail a U.S. Postal Service money order, made out to the \
                facility and showing the inmate's full name and booking number, to the \
                facility's inmate trust account. It shows here as pending until staff post it."
                .into(),
        }
    }
}

impl PaymentsConfig {
    /// The first key out of bounds and what is wrong with it.
    pub(crate) fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.provider != "test" {
            return Err((
                "payments.provider",
                "must be \"test\" (the only provider built in)",
            ));
        }
        if !self.webhook_secret.is_empty() && self.webhook_secret.len() < 16 {
            return Err((
                "payments.webhook_secret",
                "must be empty or at least 16 characters",
            ));
        }
        if !(10..=3_600).contains(&self.webhook_tolerance_secs) {
            return Err(("payments.webhook_tolerance_secs", "must be 10 to 3600"));
        }
        if self.reconcile_after_secs > 86_400 {
            return Err(("payments.reconcile_after_secs", "must be 0 to 86400"));
        }
        if !(1..=86_400).contains(&self.reconcile_interval_secs) {
            return Err(("payments.reconcile_interval_secs", "must be 1 to 86400"));
        }
        if self.test_webhook_delay_ms > 600_000 {
            return Err(("payments.test_webhook_delay_ms", "must be 0 to 600000"));
        }
        if !(1..=5).contains(&self.test_webhook_copies) {
            return Err(("payments.test_webhook_copies", "must be 1 to 5"));
        }
        if self.money_order_instructions.len() > 2_000 {
            return Err((
                "payments.money_order_instructions",
                "must be at most 2000 bytes",
            ));
        }
        Ok(())
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            seed_on_first_start: true,
        }
    }
}

impl Config {
    /// Reads `path`, resolves the relative paths written in it against its directory,
    /// applies `SALLYPORT_*` overrides from the process environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let base = dir.canonicalize().map_err(read_err)?;
        let name = path.display().to_string();
        Config::parse(&text, &name, Some(&base), std::env::vars())
    }

    /// Parses TOML text alone (no environment); `source_name` is used in errors. Relative
    /// paths stay as written.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, source_name, std::iter::empty())
    }

    /// Parses TOML text, then applies the overrides found in `env`. Relative paths stay
    /// as written.
    pub fn from_toml_with_env(
        text: &str,
        source_name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::parse(text, source_name, None, env)
    }

    /// Parses TOML text whose relative paths are relative to `base` (when given), then
    /// applies the overrides found in `env`.
    fn parse(
        text: &str,
        source_name: &str,
        base: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: source_name.to_string(),
            message,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        // Check the file alone first so its errors are reported against the file.
        Config::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| parse_err(e.to_string()))?;
        if let Some(base) = base {
            resolve_file_paths(&mut table, base);
        }
        let defaults = defaults_table();
        // Which variable set which key, so that a bad value is reported where it was set.
        let mut set_by: Vec<(String, String)> = Vec::new();
        for (var, value) in env {
            if let Some(key) = apply_env(&mut table, &defaults, &var, &value)? {
                set_by.push((key, var));
            }
        }
        let mut cfg = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| parse_err(format!("after environment overrides: {e}")))?;
        if cfg.recording.dir.as_os_str().is_empty() {
            cfg.recording.dir = cfg.node.data_dir.join("recordings");
        }
        cfg.validate(source_name).map_err(|e| match e {
            ConfigError::Invalid {
                source_name,
                key,
                message,
            } => match set_by.iter().find(|(k, _)| *k == key) {
                Some((_, var)) => ConfigError::Invalid {
                    source_name: format!("environment variable {var} over {source_name}"),
                    key,
                    message,
                },
                None => ConfigError::Invalid {
                    source_name,
                    key,
                    message,
                },
            },
            other => other,
        })?;
        Ok(cfg)
    }

    fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                source_name: source_name.to_string(),
                key: key.to_string(),
                message: message.to_string(),
            })
        };
        if crate::db::Backend::of_url(&self.database.url).is_err() {
            return bad("database.url", "must start with sqlite:// or postgres://");
        }
        if self.rtp.port_min % 2 != 0 || self.rtp.port_min >= self.rtp.port_max {
            return bad("rtp.port_min", "must be even and below rtp.port_max");
        }
        if self.rtp.advertised_ip.parse::<std::net::IpAddr>().is_err() {
            return bad("rtp.advertised_ip", "must be an IP address");
        }
        if self.rtp.listen_ip.parse::<std::net::IpAddr>().is_err() {
            return bad("rtp.listen_ip", "must be an IP address");
        }
        let t = self.rtp.media_timeout_secs;
        if t != 0 && !(MEDIA_TIMEOUT_MIN_SECS..=MEDIA_TIMEOUT_MAX_SECS).contains(&t) {
            return bad(
                "rtp.media_timeout_secs",
                &format!(
                    "must be 0 (off) or {MEDIA_TIMEOUT_MIN_SECS} to {MEDIA_TIMEOUT_MAX_SECS} seconds"
                ),
            );
        }
        let q = self.rtp.max_queue_ms;
        if q != 0 && !(MAX_QUEUE_MIN_MS..=MAX_QUEUE_MAX_MS).contains(&q) {
            return bad(
                "rtp.max_queue_ms",
                &format!("must be 0 (off) or {MAX_QUEUE_MIN_MS} to {MAX_QUEUE_MAX_MS} ms"),
            );
        }
        self.validate_sip(source_name)?;
        if self.security.pin_pepper.len() < 16 {
            return bad("security.pin_pepper", "must be at least 16 characters");
        }
        if let Err((key, message)) = self.security.check() {
            return bad(key, &message);
        }
        if self.billing.default_increment_secs == 0 {
            return bad("billing.default_increment_secs", "must be at least 1");
        }
        if self.visits.join_lead_secs > JOIN_LEAD_MAX_SECS {
            return bad(
                "visits.join_lead_secs",
                &format!("must be at most {JOIN_LEAD_MAX_SECS} seconds"),
            );
        }
        if self.node.id.is_empty() {
            return bad("node.id", "must not be empty");
        }
        if let Err(e) = crate::text::SETTING.check("node.id", &self.node.id) {
            return bad("node.id", &e.problem.to_string());
        }
        if !self.node.api_url.is_empty() {
            if let Err(e) = crate::cluster::NodeUrl::parse(&self.node.api_url) {
                return bad("node.api_url", &e);
            }
        }
        if !self.cluster.secret.is_empty() && self.cluster.secret.len() < 16 {
            return bad("cluster.secret", "must be empty or at least 16 characters");
        }
        if !(1..=300).contains(&self.cluster.heartbeat_secs) {
            return bad("cluster.heartbeat_secs", "must be 1 to 300 seconds");
        }
        let beats = self.cluster.heartbeat_secs.saturating_mul(2);
        if !(beats..=3600).contains(&self.cluster.dead_after_secs) {
            return bad(
                "cluster.dead_after_secs",
                &format!("must be 2 x cluster.heartbeat_secs ({beats}) to 3600 seconds"),
            );
        }
        if !(1..=60).contains(&self.cluster.forward_timeout_secs) {
            return bad("cluster.forward_timeout_secs", "must be 1 to 60 seconds");
        }
        if !(64..=16_777_216).contains(&self.recording.queue_packets) {
            return bad("recording.queue_packets", "must be 64 to 16777216");
        }
        if !(100..=60_000).contains(&self.recording.flush_interval_ms) {
            return bad("recording.flush_interval_ms", "must be 100 to 60000");
        }
        if !(60..=31 * 86_400).contains(&self.http.session_ttl_secs) {
            return bad("http.session_ttl_secs", "must be 60 to 2678400 (31 days)");
        }
        if self.http.login_lockout_after_failures == 0 {
            return bad("http.login_lockout_after_failures", "must be at least 1");
        }
        if !self.http.ticket_secret.is_empty() && self.http.ticket_secret.len() < 16 {
            return bad(
                "http.ticket_secret",
                "must be empty or at least 16 characters",
            );
        }
        if !(1..=1_000_000).contains(&self.http.max_connections) {
            return bad("http.max_connections", "must be 1 to 1000000");
        }
        if !(1..=self.http.max_connections).contains(&self.http.max_connections_per_source) {
            return bad(
                "http.max_connections_per_source",
                "must be 1 to http.max_connections",
            );
        }
        if !(1..=3_600).contains(&self.http.header_timeout_secs) {
            return bad("http.header_timeout_secs", "must be 1 to 3600 seconds");
        }
        if !(10..=86_400).contains(&self.http.ticket_ttl_secs) {
            return bad("http.ticket_ttl_secs", "must be 10 to 86400");
        }
        if self.recording.purge_interval_secs == 0 {
            return bad("recording.purge_interval_secs", "must be at least 1");
        }
        if let Err((key, message)) = self
            .family
            .check()
            .and_then(|()| self.mail.check())
            .and_then(|()| self.payments.check())
            .and_then(|()| self.messaging.check())
            .and_then(|()| self.keywords.check())
        {
            return bad(key, message);
        }
        Ok(())
    }
}

impl SecurityConfig {
    /// The key and what is wrong with it, for the first value out of bounds.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let in_range = |key, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err((key, format!("must be {lo} to {hi}")))
            }
        };
        const DAY: u64 = 86_400;
        in_range(
            "security.calling_id_digits",
            self.calling_id_digits.into(),
            4,
            12,
        )?;
        in_range("security.pin_min_digits", self.pin_min_digits.into(), 4, 12)?;
        in_range(
            "security.pin_max_digits",
            self.pin_max_digits.into(),
            self.pin_min_digits.into(),
            12,
        )
        .map_err(|(k, m)| (k, format!("{m} (at least security.pin_min_digits)")))?;
        in_range(
            "security.pin_attempts_per_call",
            self.pin_attempts_per_call.into(),
            1,
            10,
        )?;
        in_range(
            "security.lockout_after_failures",
            self.lockout_after_failures.into(),
            1,
            1000,
        )?;
        in_range("security.lockout_secs", self.lockout_secs, 1, 7 * DAY)?;
        in_range(
            "security.lockout_max_secs",
            self.lockout_max_secs,
            self.lockout_secs,
            30 * DAY,
        )
        .map_err(|(k, m)| (k, format!("{m} (at least security.lockout_secs)")))?;
        in_range(
            "security.failure_window_secs",
            self.failure_window_secs,
            1,
            30 * DAY,
        )?;
        in_range(
            "security.line_lockout_after_failures",
            self.line_lockout_after_failures.into(),
            0,
            1000,
        )?;
        in_range(
            "security.daily_lockout_after_failures",
            self.daily_lockout_after_failures.into(),
            0,
            10_000,
        )?;
        in_range(
            "security.guess_alert_ids",
            self.guess_alert_ids.into(),
            2,
            100_000,
        )?;
        in_range(
            "security.guess_alert_window_secs",
            self.guess_alert_window_secs,
            1,
            DAY,
        )
    }
}

impl Config {
    fn validate_sip(&self, source_name: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                source_name: source_name.to_string(),
                key: format!("sip.{key}"),
                message: message.to_string(),
            })
        };
        let s = &self.sip;
        let global = s.max_requests_per_second;
        if s.per_source_requests_per_second > global && global != 0 {
            return bad(
                "per_source_requests_per_second",
                "must be 0 (off) or at most sip.max_requests_per_second",
            );
        }
        if s.per_source_requests_per_second != 0 && s.per_source_burst == 0 {
            return bad("per_source_burst", "must be at least 1");
        }
        if let Some(wrong) = s
            .trusted_proxy_list()
            .find(|c| !crate::policy::net::is_cidr(c))
        {
            return bad(
                "trusted_proxies",
                &format!("'{wrong}' is not a CIDR (such as 10.0.0.5/32)"),
            );
        }
        if s.tcp_max_connections == 0 {
            return bad("tcp_max_connections", "must be at least 1");
        }
        if s.tcp_max_connections_per_source == 0 {
            return bad("tcp_max_connections_per_source", "must be at least 1");
        }
        if !(1..=86_400).contains(&s.tcp_idle_timeout_secs) {
            return bad("tcp_idle_timeout_secs", "must be 1 to 86400");
        }
        if !(1..=300).contains(&s.tcp_message_timeout_secs) {
            return bad("tcp_message_timeout_secs", "must be 1 to 300");
        }
        if s.tcp_buffer_pool_bytes > 1 << 34 {
            return bad(
                "tcp_buffer_pool_bytes",
                "must be at most 17179869184 (16 GiB)",
            );
        }
        Ok(())
    }

    /// The keys that still hold a shipped demo secret (see [`DEMO_SECRETS`]).
    pub fn demo_secrets_in_use(&self) -> Vec<&'static str> {
        DEMO_SECRETS
            .iter()
            .filter(|(key, demo)| self.secret(key) == Some(*demo))
            .map(|(key, _)| *key)
            .collect()
    }

    fn secret(&self, key: &str) -> Option<&str> {
        match key {
            "security.pin_pepper" => Some(&self.security.pin_pepper),
            "http.admin_token" => Some(&self.http.admin_token),
            _ => None,
        }
    }
}

/// Rewrites the relative paths of [`FILE_PATH_KEYS`] present in `table` (as the file
/// wrote them) to paths under `base` (the file's directory, canonical).
fn resolve_file_paths(table: &mut toml::Table, base: &Path) {
    for (section, key) in FILE_PATH_KEYS {
        let Some(toml::Value::Table(t)) = table.get_mut(section) else {
            continue;
        };
        let Some(toml::Value::String(v)) = t.get_mut(key) else {
            continue;
        };
        if (section, key) == ("database", "url") {
            if let Some(resolved) = resolve_sqlite_url(v, base) {
                *v = resolved;
            }
        } else if !v.is_empty() {
            *v = resolve_path(base, v);
        }
    }
}

/// `path` against `base` unless it is absolute, with `.` and `..` folded (`base` is
/// canonical, so folding `..` lexically is what the file system would do).
fn resolve_path(base: &Path, path: &str) -> String {
    use std::path::Component;
    let p = Path::new(path);
    if p.is_absolute() {
        return path.to_string();
    }
    let mut out = PathBuf::from(base);
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

/// A `sqlite://` URL with a relative file resolved against `base`; `None` for any other
/// URL (PostgreSQL, an in-memory or absolute SQLite database).
fn resolve_sqlite_url(url: &str, base: &Path) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" || Path::new(path).is_absolute() {
        return None;
    }
    let resolved = resolve_path(base, path);
    Some(match query {
        Some(q) => format!("sqlite://{resolved}?{q}"),
        None => format!("sqlite://{resolved}"),
    })
}

fn defaults_table() -> toml::Table {
    match toml::Value::try_from(Config::default()) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

/// Applies one `SALLYPORT_SECTION_KEY=value` to the table, typed like the default value of
/// that key; the key it set (`section.key`). Variables whose section is not a config section are not config (for example
/// `SALLYPORT_TEST_DATABASE_URL`) and are ignored.
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    var: &str,
    value: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(None);
    };
    let Some((section, key)) = rest.split_once('_') else {
        return Ok(None);
    };
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let Some(toml::Value::Table(section_defaults)) = defaults.get(&section) else {
        return Ok(None);
    };
    let env_err = |message: String| ConfigError::Env {
        var: var.to_string(),
        section: section.clone(),
        key: key.clone(),
        message,
    };
    let Some(default) = section_defaults.get(&key) else {
        return Err(env_err("is not a known key".into()));
    };
    let typed = match default {
        toml::Value::Integer(_) => value
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| env_err(format!("expects an integer, got '{value}'")))?,
        toml::Value::Boolean(_) => match value.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(env_err(format!("expects true or false, got '{value}'"))),
        },
        _ => toml::Value::String(value.to_string()),
    };
    let entry = table
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => {
            t.insert(key.clone(), typed);
            Ok(Some(format!("{section}.{key}")))
        }
        _ => Err(env_err("its section is not a table in the file".into())),
    }
}

/// `HMAC-SHA256(secret, label ‖ data)`: how a node derives a key for one purpose from a
/// configured secret (SIP digest nonces, playback tickets), so that every node configured
/// alike derives the same key and no two purposes share one.
pub fn derive_key(secret: &[u8], label: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut out = [0u8; 32];
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    if let Ok(mut m) = Hmac::<sha2::Sha256>::new_from_slice(secret) {
        m.update(label);
        m.update(data);
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKED_IN: &str = include_str!("../config/sallyport.toml");

    #[test]
    fn checked_in_file_parses() {
        let c = Config::from_toml(CHECKED_IN, "config/sallyport.toml").unwrap();
        assert_eq!(c.database.url, "sqlite://../data/sallyport.db");
        assert_eq!(c.sip.udp_listen.port(), 5060);
        assert_eq!((c.rtp.port_min, c.rtp.port_max), (20000, 29999));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.sip.trunk.to_string(), "127.0.0.1:5080");
    }

    #[test]
    fn mail_and_family_settings_are_checked_and_name_their_key() {
        let c = Config::from_toml(CHECKED_IN, "f").unwrap();
        assert_eq!(c.mail.transport, "file");
        assert_eq!(c.family.reset_link_ttl_secs, 3600);
        let one = |k: &str, v: &str| std::iter::once((k.to_string(), v.to_string()));
        let e =
            Config::from_toml_with_env(CHECKED_IN, "f", one("SALLYPORT_MAIL_TRANSPORT", "smtp"))
                .unwrap_err()
                .to_string();
        assert!(e.contains("mail.smtp_host"), "{e}");
        let text = CHECKED_IN.replace("public_url = \"\"", "public_url = \"portal.example.org\"");
        let e = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("family.public_url"), "{e}");
    }

    #[test]
    fn payments_settings_are_checked_and_name_their_key() {
        let c = Config::from_toml(CHECKED_IN, "f").unwrap();
        assert_eq!(c.payments, PaymentsConfig::default());
        let one = |k: &str, v: &str| std::iter::once((k.to_string(), v.to_string()));
        for (var, value, key) in [
            ("SALLYPORT_PAYMENTS_PROVIDER", "stripe", "payments.provider"),
            (
                "SALLYPORT_PAYMENTS_WEBHOOK_SECRET",
                "short",
                "payments.webhook_secret",
            ),
            (
                "SALLYPORT_PAYMENTS_WEBHOOK_TOLERANCE_SECS",
                "5",
                "payments.webhook_tolerance_secs",
            ),
            (
                "SALLYPORT_PAYMENTS_TEST_WEBHOOK_COPIES",
                "0",
                "payments.test_webhook_copies",
            ),
            (
                "SALLYPORT_PAYMENTS_RECONCILE_INTERVAL_SECS",
                "0",
                "payments.reconcile_interval_secs",
            ),
        ] {
            let e = Config::from_toml_with_env(CHECKED_IN, "f", one(var, value))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{var}: {e}");
        }
        let c = Config::from_toml_with_env(
            CHECKED_IN,
            "f",
            one("SALLYPORT_PAYMENTS_TEST_WEBHOOK_DELAY_MS", "0"),
        )
        .unwrap();
        assert_eq!(c.payments.test_webhook_delay_ms, 0);
    }

    #[test]
    fn the_join_lead_is_bounded_and_overridable() {
        let c = Config::from_toml(CHECKED_IN, "f").unwrap();
        assert_eq!(c.visits.join_lead_secs, 900);
        let one = |k: &str, v: &str| std::iter::once((k.to_string(), v.to_string()));
        let c = Config::from_toml_with_env(
            CHECKED_IN,
            "f",
            one("SALLYPORT_VISITS_JOIN_LEAD_SECS", "300"),
        )
        .unwrap();
        assert_eq!(c.visits.join_lead_secs, 300);
        let text = CHECKED_IN.replace("join_lead_secs = 900", "join_lead_secs = 3601");
        let e = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("visits.join_lead_secs"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = format!("{CHECKED_IN}\n[extra]\nfoo = 1\n");
        let e = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("extra"), "{e}");
        let text = CHECKED_IN.replace("max_connections", "max_conections");
        let e = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("max_conections"), "{e}");
    }

    #[test]
    fn env_overrides_typed_and_named() {
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let c = Config::from_toml_with_env(
            CHECKED_IN,
            "f",
            env("SALLYPORT_DATABASE_URL", "postgres://u@h/db"),
        )
        .unwrap();
        assert_eq!(c.database.url, "postgres://u@h/db");
        let c = Config::from_toml_with_env(CHECKED_IN, "f", env("SALLYPORT_RTP_PORT_MIN", "10000"))
            .unwrap();
        assert_eq!(c.rtp.port_min, 10000);
        let e = Config::from_toml_with_env(CHECKED_IN, "f", env("SALLYPORT_RTP_PORT_MIN", "x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SALLYPORT_RTP_PORT_MIN") && e.contains("port_min"),
            "{e}"
        );
        // A value out of range names the variable that set it, not only the key.
        let e = Config::from_toml_with_env(
            CHECKED_IN,
            "f",
            env("SALLYPORT_SECURITY_LOCKOUT_SECS", "0"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SALLYPORT_SECURITY_LOCKOUT_SECS") && e.contains("security.lockout_secs"),
            "{e}"
        );
        let e = Config::from_toml_with_env(CHECKED_IN, "f", env("SALLYPORT_HTTP_LISTN", "1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
        // Not a config section: left alone.
        Config::from_toml_with_env(CHECKED_IN, "f", env("SALLYPORT_TEST_DATABASE_URL", "x"))
            .unwrap();
    }

    #[test]
    fn sip_flood_and_tcp_bounds_are_configurable_and_checked() {
        let env = |k: &str, v: &str| vec![(format!("SALLYPORT_SIP_{k}"), v.to_string())];
        let c = Config::from_toml(CHECKED_IN, "f").unwrap();
        assert_eq!(
            (c.sip.per_source_requests_per_second, c.sip.per_source_burst),
            (100, 200)
        );
        assert_eq!(
            c.sip,
            SipConfig::default(),
            "the file documents the defaults"
        );
        let c =
            Config::from_toml_with_env(CHECKED_IN, "f", env("TCP_MAX_CONNECTIONS", "10")).unwrap();
        assert_eq!(c.sip.tcp_max_connections, 10);
        for (key, value) in [
            ("PER_SOURCE_REQUESTS_PER_SECOND", "501"),
            ("PER_SOURCE_BURST", "0"),
            ("TCP_MAX_CONNECTIONS", "0"),
            ("TCP_MAX_CONNECTIONS_PER_SOURCE", "0"),
            ("TCP_IDLE_TIMEOUT_SECS", "0"),
            ("TCP_MESSAGE_TIMEOUT_SECS", "301"),
            ("TRUSTED_PROXIES", "10.0.0.5"),
            ("TRUSTED_PROXIES", "10.0.0.5/32, 10.0.0.0/33"),
        ] {
            let e = Config::from_toml_with_env(CHECKED_IN, "f", env(key, value))
                .unwrap_err()
                .to_string();
            let named = format!("sip.{}", key.to_ascii_lowercase());
            assert!(e.contains(&named), "{key}={value}: {e}");
        }
        // Off is allowed.
        Config::from_toml_with_env(CHECKED_IN, "f", env("PER_SOURCE_REQUESTS_PER_SECOND", "0"))
            .unwrap();
        let c = Config::from_toml_with_env(
            CHECKED_IN,
            "f",
            env("TRUSTED_PROXIES", "10.0.0.5/32, fd00::/8"),
        )
        .unwrap();
        let proxies: Vec<&str> = c.sip.trusted_proxy_list().collect();
        assert_eq!(proxies, ["10.0.0.5/32", "fd00::/8"]);
    }

    #[test]
    fn shipped_demo_secrets_are_reported_until_changed() {
        let c = Config::from_toml(CHECKED_IN, "f").unwrap();
        assert_eq!(
            c.demo_secrets_in_use(),
            vec!["security.pin_pepper", "http.admin_token"]
        );
        assert!(c.http.ticket_secret.is_empty());
        let env = vec![
            (
                "SALLYPORT_SECURITY_PIN_PEPPER".to_string(),
                "a-real-pepper-0123456789".to_string(),
            ),
            (
                "SALLYPORT_HTTP_ADMIN_TOKEN".to_string(),
                "a-real-admin-token".to_string(),
            ),
        ];
        let c = Config::from_toml_with_env(CHECKED_IN, "f", env).unwrap();
        assert!(c.demo_secrets_in_use().is_empty());
    }

    #[test]
    fn cluster_keys_are_checked_and_named() {
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let c = Config::from_toml(CHECKED_IN, "f").unwrap();
        assert_eq!(
            (c.node.api_url.as_str(), c.cluster.secret.as_str()),
            ("", "")
        );
        assert_eq!(
            (
                c.cluster.heartbeat_secs,
                c.cluster.dead_after_secs,
                c.cluster.forward_timeout_secs
            ),
            (10, 30, 5)
        );
        let c = Config::from_toml_with_env(
            CHECKED_IN,
            "f",
            env("SALLYPORT_NODE_API_URL", "http://10.0.0.5:8080"),
        )
        .unwrap();
        assert_eq!(c.node.api_url, "http://10.0.0.5:8080");
        for (var, value, key) in [
            ("SALLYPORT_NODE_API_URL", "10.0.0.5:8080", "node.api_url"),
            ("SALLYPORT_NODE_API_URL", "https://gw:8443", "node.api_url"),
            ("SALLYPORT_NODE_ID", "two\nlines", "node.id"),
            ("SALLYPORT_CLUSTER_SECRET", "short", "cluster.secret"),
            (
                "SALLYPORT_CLUSTER_HEARTBEAT_SECS",
                "0",
                "cluster.heartbeat_secs",
            ),
            (
                "SALLYPORT_CLUSTER_FORWARD_TIMEOUT_SECS",
                "61",
                "cluster.forward_timeout_secs",
            ),
            (
                "SALLYPORT_CLUSTER_DEAD_AFTER_SECS",
                "19",
                "cluster.dead_after_secs",
            ),
        ] {
            let e = Config::from_toml_with_env(CHECKED_IN, "f", env(var, value))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(var), "{var}={value}: {e}");
        }
    }

    #[test]
    fn a_short_ticket_secret_is_refused() {
        let env = |v: &str| vec![("SALLYPORT_HTTP_TICKET_SECRET".to_string(), v.to_string())];
        let e = Config::from_toml_with_env(CHECKED_IN, "f", env("short"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.ticket_secret"), "{e}");
        let c = Config::from_toml_with_env(CHECKED_IN, "f", env("sixteen-chars-ok")).unwrap();
        assert_eq!(c.http.ticket_secret, "sixteen-chars-ok");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let text = CHECKED_IN.replace("port_min = 20000", "port_min = 20001");
        let e = Config::from_toml(&text, "f").unwrap_err().to_string();
        assert!(e.contains("rtp.port_min"), "{e}");
        let text = CHECKED_IN.replace("listen = \"127.0.0.1:8080\"", "listen = \"nowhere\"");
        let e = Config::from_toml(&text, "f").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn pin_and_lockout_keys_are_checked_by_name() {
        let c = Config::from_toml(CHECKED_IN, "f").unwrap();
        assert_eq!(
            c.security,
            SecurityConfig {
                pin_pepper: c.security.pin_pepper.clone(),
                ..SecurityConfig::default()
            },
            "the shipped file says the defaults"
        );
        let with = |k: &str, v: &str| {
            let env = vec![(format!("SALLYPORT_SECURITY_{k}"), v.to_string())];
            Config::from_toml_with_env(CHECKED_IN, "f", env)
        };
        for (key, bad) in [
            ("CALLING_ID_DIGITS", "3"),
            ("CALLING_ID_DIGITS", "13"),
            ("PIN_MIN_DIGITS", "3"),
            ("PIN_MAX_DIGITS", "3"),
            ("PIN_ATTEMPTS_PER_CALL", "0"),
            ("LOCKOUT_AFTER_FAILURES", "0"),
            ("LOCKOUT_SECS", "0"),
            ("LOCKOUT_MAX_SECS", "10"),
            ("FAILURE_WINDOW_SECS", "0"),
            ("GUESS_ALERT_IDS", "1"),
            ("GUESS_ALERT_WINDOW_SECS", "0"),
        ] {
            let e = with(key, bad).unwrap_err().to_string();
            let named = format!("security.{}", key.to_ascii_lowercase());
            assert!(e.contains(&named), "{key}={bad}: {e}");
        }
        let e = with("PIN_MIN_DIGITS", "9").unwrap_err().to_string();
        assert!(e.contains("security.pin_max_digits"), "max below min: {e}");
        let c = with("LINE_LOCKOUT_AFTER_FAILURES", "0").unwrap();
        assert_eq!(
            c.security.line_lockout_after_failures, 0,
            "0 turns lines off"
        );
        let c = with("CALLING_ID_DIGITS", "8").unwrap();
        assert_eq!(c.security.calling_id_digits, 8);
    }

    #[test]
    fn media_timeout_is_zero_or_a_sane_number_of_seconds() {
        let c = Config::from_toml(CHECKED_IN, "f").unwrap();
        assert_eq!(c.rtp.media_timeout_secs, 60, "shipped and default");
        assert_eq!(Config::default().rtp.media_timeout_secs, 60);
        let with = |v: &str| {
            let env = vec![(
                "SALLYPORT_RTP_MEDIA_TIMEOUT_SECS".to_string(),
                v.to_string(),
            )];
            Config::from_toml_with_env(CHECKED_IN, "f", env)
        };
        for ok in [0, 2, 3, 60, 3600] {
            let c = with(&ok.to_string()).unwrap();
            assert_eq!(c.rtp.media_timeout_secs, ok);
        }
        for bad in ["1", "3601", "60000"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("rtp.media_timeout_secs"), "{bad}: {e}");
        }
        for (bad, named) in [("-5", "media_timeout_secs"), ("1m", "MEDIA_TIMEOUT_SECS")] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(named), "{bad}: {e}");
        }
        let text = CHECKED_IN.replace("media_timeout_secs = 60", "media_timeout_secs = 1");
        let e = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(
            e.contains("x.toml") && e.contains("rtp.media_timeout_secs"),
            "{e}"
        );
        let text = CHECKED_IN.replace("media_timeout_secs = 60", "media_timeout_secs = \"60s\"");
        let e = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("media_timeout_secs"), "{e}");
    }

    #[test]
    fn max_queue_is_zero_or_a_sane_number_of_milliseconds() {
        let c = Config::from_toml(CHECKED_IN, "f").unwrap();
        assert_eq!(c.rtp.max_queue_ms, 40, "shipped");
        assert_eq!(Config::default().rtp.max_queue_ms, 40);
        let with = |v: &str| {
            let env = vec![("SALLYPORT_RTP_MAX_QUEUE_MS".to_string(), v.to_string())];
            Config::from_toml_with_env(CHECKED_IN, "f", env)
        };
        for ok in [0, 10, 40, 1000] {
            assert_eq!(with(&ok.to_string()).unwrap().rtp.max_queue_ms, ok);
        }
        for bad in ["5", "1001", "60000"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("rtp.max_queue_ms"), "{bad}: {e}");
        }
    }

    /// The paths the shipped file writes are relative to the file: from the repository
    /// root they are `data/` and `config/prompts`, as `cargo run --release` expects, and
    /// loading the file by an absolute path from elsewhere finds the same ones.
    #[test]
    fn paths_in_the_file_are_relative_to_the_file() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .canonicalize()
            .unwrap();
        let c = Config::load(&repo.join("config/sallyport.toml")).unwrap();
        assert_eq!(c.node.data_dir, repo.join("data"));
        assert_eq!(c.rtp.prompts_dir, repo.join("config/prompts"));
        assert_eq!(c.recording.dir, repo.join("data/recordings"));
        let url = format!("sqlite://{}", repo.join("data/sallyport.db").display());
        assert_eq!(c.database.url, url);
        let base = Path::new("/srv/sp/config");
        assert_eq!(resolve_path(base, "../data"), "/srv/sp/data");
        assert_eq!(resolve_path(base, "./prompts"), "/srv/sp/config/prompts");
        assert_eq!(resolve_path(base, "/var/lib/sp"), "/var/lib/sp");
        assert_eq!(
            resolve_sqlite_url("sqlite://db/x.db?mode=rwc", base).as_deref(),
            Some("sqlite:///srv/sp/config/db/x.db?mode=rwc")
        );
        for untouched in ["sqlite:///abs/x.db", "sqlite::memory:", "postgres://u@h/db"] {
            assert_eq!(resolve_sqlite_url(untouched, base), None, "{untouched}");
        }
    }

    /// An environment override stays relative to the current directory (where it was
    /// written), and wins over the file.
    #[test]
    fn environment_paths_are_not_rebased() {
        let env = vec![(
            "SALLYPORT_RTP_PROMPTS_DIR".to_string(),
            "my/prompts".to_string(),
        )];
        let c = Config::parse(CHECKED_IN, "f", Some(Path::new("/srv/sp/config")), env).unwrap();
        assert_eq!(c.rtp.prompts_dir, PathBuf::from("my/prompts"));
        assert_eq!(c.node.data_dir, PathBuf::from("/srv/sp/data"));
    }
}
