//! `sallyport serve`: load the prompts, connect, migrate, close what a previous run left
//! open, bind HTTP and register in the cluster, start the SIP side, seed the demo on first
//! start, start the retention purge, the heartbeat and the look for dead nodes, and serve
//! until Ctrl-C / SIGTERM, or until drained (SIGUSR1: [`crate::cluster::drain`]).
//!
//! What can fail for a reason of this machine (a prompts folder that is not there, a port
//! in use) is tried before the demo is seeded, and the prompts before the database is
//! even opened: a start that fails leaves no demo behind in a database it never served
//! (the next start would take it for an old one, not seed, and not print how to call).

use crate::api::{router, AppState, Gateway};
use crate::call::driver::Switchboard;
use crate::call::live::LiveCalls;
use crate::cluster::drain;
use crate::cluster::health::NodeHealth;
use crate::config::Config;
use crate::media::engine::{EngineConfig, MediaEngine};
use crate::media::prompts::PromptSet;
use crate::recording::{self, Recorder};
use crate::sip::transport::{fds, DriverOptions, SipDriver};
use anyhow::Context;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Logs, loudly, every shipped demo secret still in use (the demo keeps working out of
/// the box; real use must change them) and a ticket key derived from the PIN pepper.
fn warn_about_demo_secrets(config: &Config) {
    for key in config.demo_secrets_in_use() {
        tracing::warn!(
            key,
            "!!! {key} still holds the shipped demo value: anyone who has read \
             config/sallyport.toml knows it; change it before real use !!!"
        );
    }
    if config.http.ticket_secret.is_empty() {
        tracing::warn!(
            "http.ticket_secret is empty: recording tickets are keyed from \
             security.pin_pepper; set a separate secret"
        );
    }
}

/// Raises the soft descriptor limit to the hard one (20,000 idle SIP connections must not
/// be what stops RTP binds and the API) and returns the descriptors SIP over TCP leaves
/// free: `sip.tcp_fd_reserve`, or when 0 one per RTP port plus 256 for HTTP, the database
/// and recordings.
fn fd_reserve(config: &Config) -> u32 {
    match fds::raise_nofile_limit() {
        Ok(limit) => tracing::info!(limit, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    match config.sip.tcp_fd_reserve {
        0 => u32::from(config.rtp.port_max.saturating_sub(config.rtp.port_min)) + 1 + 256,
        n => n,
    }
}

/// Runs the gateway until it is told to stop.
pub async fn run(config: Config) -> anyhow::Result<()> {
    warn_about_demo_secrets(&config);
    let prompts = PromptSet::load_dir(&config.rtp.prompts_dir).with_context(|| {
        format!(
            "loading rtp.prompts_dir {}",
            config.rtp.prompts_dir.display()
        )
    })?;
    let store = crate::cli::open(&config).await?;
    // Recordings first: a session closed after a crash ends where its repaired recording
    // ends, if that is the last sign of life (`sessions` module doc).
    let recovered = recording::recover_in_progress(&store, &config.recording.dir, &config.node.id)
        .await
        .context("closing the recordings left in progress ([recording] dir)")?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "closed recordings left in progress as incomplete"
        );
    }
    let closed =
        crate::session::cdr::close_orphans(store.db(), &config.node.id, store.clock().wall())
            .await?;
    if closed > 0 {
        tracing::warn!(
            closed,
            "closed sessions left open by a previous run (reason: system)"
        );
    }
    // The facilities' rate decks and plans in memory before SIP takes a call: a 100,000-prefix
    // deck takes about 0.4 s to load, which the first call after a start would otherwise wait.
    // A deck that fails to load here is loaded (or refused) by the call that needs it.
    if let Err(e) = store.warm_rates().await {
        tracing::warn!(error = %e, "cannot load the facilities' rate decks and plans ahead of calls");
    }
    let config = Arc::new(config);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    // Registered (heartbeat fresh) before SIP takes a call: a node restarting under its
    // old id is never taken for dead while it opens new sessions.
    let api_url = register_in_cluster(&store, &config, addr).await?;
    let (gateway, health) = start_sip_side(&store, &config, prompts).await?;
    start_cluster_tasks(&store, &config, api_url, &gateway, &health);
    if config.demo.seed_on_first_start && store.facilities().await?.is_empty() {
        let info = crate::demo::seed(&store, &config)
            .await
            .context("seeding the demo")?;
        println!("{}", info.describe());
    }
    crate::recording::retention::spawn(
        store.clone(),
        config.recording.dir.clone(),
        Duration::from_secs(config.recording.purge_interval_secs),
    );
    crate::family::notices::spawn(store.clone(), config.clone());
    crate::messaging::purge::spawn(store.clone(), config.clone());
    // Report rollups: the days just ended summarised, off the call path.
    crate::reports::rollup::spawn(
        store.db().clone(),
        store.clock().clone(),
        Duration::from_secs(3600),
    );
    // Spoken keyword alerts: finished recordings, off the media path (unavailable: logged).
    let _ = crate::keywords::worker::spawn(
        store.clone(),
        config.keywords.clone(),
        config.node.id.clone(),
        config.recording.dir.clone(),
    );
    let _pid_file = drain::PidFile::write(drain::pid_file(&config))?;
    // Tests start the binary on port 0 and read this line to find the API.
    println!("sallyport: HTTP API listening on http://{addr}");
    tracing::info!(%addr, node = %config.node.id, "serving");
    let live = gateway.live.clone();
    let visits = gateway.visits.clone();
    let state = AppState::new(store.clone(), config.clone()).with_gateway(gateway);
    // Online deposits: the reconciliation (now, then periodically) and the test provider's
    // webhook deliveries to this node's own API.
    let own_api = crate::cluster::NodeUrl::parse(&crate::cluster::NodeUrl::of_listener(addr))
        .map_err(|e| anyhow::anyhow!("the API's own address {addr}: {e}"))?;
    state.payments.spawn(store.ledger().clone(), own_api);
    let app = router(state);
    // Bounded connections and request heads; the peer address reaches handlers (and the
    // audit log) as `ConnectInfo`.
    let limits = crate::api::serve::HttpLimits::from_config(&config.http);
    // Stop at SIGTERM / Ctrl-C, or once drained (SIGUSR1, `sallyport drain`).
    let drained = drain::drain_on_signal(health, live.clone(), visits, Duration::from_millis(200));
    let stop = async move {
        tokio::select! {
            _ = shutdown_signal() => {},
            _ = drained => {},
        }
    };
    crate::api::serve::serve(listener, app, limits, stop).await;
    // Calls in progress end with reason `system` and BYE to both legs, charges as committed
    // (none left after a drain).
    live.shutdown(Duration::from_secs(5)).await;
    store.db().close().await;
    Ok(())
}

/// Registers this node in `nodes` with the address of its API (`node.api_url`, or the
/// address `http.listen` is bound to) and returns that address ([`crate::cluster`]).
async fn register_in_cluster(
    store: &crate::store::Store,
    config: &Config,
    bound: std::net::SocketAddr,
) -> anyhow::Result<String> {
    let api_url = match config.node.api_url.as_str() {
        "" => crate::cluster::NodeUrl::of_listener(bound),
        url => url.to_string(),
    };
    let clustered = store.db().backend() == crate::db::Backend::Postgres;
    if clustered && config.node.api_url.is_empty() && bound.ip().is_unspecified() {
        tracing::warn!(
            api_url,
            "node.api_url is not set and http.listen is a wildcard address: other nodes \
             will try this node at {api_url}; set node.api_url to an address they reach"
        );
    }
    if clustered && config.cluster.secret.is_empty() {
        tracing::warn!(
            "cluster.secret is empty: the inter-node credential is keyed from \
             security.pin_pepper; set a separate secret, the same on every node"
        );
    }
    let every = Duration::from_secs(config.cluster.heartbeat_secs);
    crate::cluster::heartbeat::register(store, &config.node.id, &api_url, every)
        .await
        .context("registering this node in the nodes table")?;
    Ok(api_url)
}

/// The heartbeat (which also tells `health` whether the database answers, and ends this
/// node's calls after an outage long enough for others to take it over) and the look
/// for dead nodes to take over ([`crate::cluster::takeover`]).
fn start_cluster_tasks(
    store: &crate::store::Store,
    config: &Config,
    api_url: String,
    gateway: &Gateway,
    health: &NodeHealth,
) {
    let every = Duration::from_secs(config.cluster.heartbeat_secs);
    let dead_after = Duration::from_secs(config.cluster.dead_after_secs);
    let live = gateway.live.clone();
    let watch = crate::cluster::heartbeat::Watch {
        health: health.clone(),
        dead_after,
        presumed_dead: Box::new(move || {
            let live = live.clone();
            tokio::spawn(async move { live.shutdown(Duration::from_secs(5)).await });
        }),
    };
    let id = config.node.id.clone();
    crate::cluster::heartbeat::spawn(store.clone(), id.clone(), api_url, every, watch);
    let dir = config.recording.dir.clone();
    crate::cluster::takeover::spawn(store.clone(), dir, id, every, dead_after);
}

/// The media engine (with the prompts), the SIP transport and the switchboard that joins
/// them.
async fn start_sip_side(
    store: &crate::store::Store,
    config: &Arc<Config>,
    prompts: PromptSet,
) -> anyhow::Result<(Gateway, NodeHealth)> {
    let ip = |key: &str, v: &str| -> anyhow::Result<IpAddr> {
        v.parse()
            .with_context(|| format!("{key} `{v}` is not an IP address"))
    };
    let media = MediaEngine::start(
        EngineConfig {
            port_min: config.rtp.port_min,
            port_max: config.rtp.port_max,
            bind_ip: ip("rtp.listen_ip", &config.rtp.listen_ip)?,
            advertised_ip: ip("rtp.advertised_ip", &config.rtp.advertised_ip)?,
            workers: config.rtp.workers,
            max_queue: std::time::Duration::from_millis(config.rtp.max_queue_ms.into()),
        },
        Arc::new(prompts),
    )
    .context("starting the media engine")?;
    let options = DriverOptions {
        fd_reserve: fd_reserve(config),
        clock: store.clock().clone(),
        ..DriverOptions::default()
    };
    let (sip, events) = SipDriver::start_with(&config.sip, options)
        .await
        .context("starting SIP (sip.udp_listen / sip.tcp_listen)")?;
    // Tests start the binary on port 0 and read this line to find SIP.
    println!(
        "sallyport: SIP listening on udp://{} tcp://{}",
        sip.local_udp_addr(),
        sip.local_tcp_addr()
    );
    let recorder = Recorder::start(&config.recording).context("starting the recorder")?;
    let live = LiveCalls::default();
    let switchboard = Switchboard::new(
        store.clone(),
        config.clone(),
        sip.clone(),
        media.clone(),
        recorder.clone(),
        live.clone(),
    );
    let calls = switchboard.stats();
    let health = switchboard.health();
    let number_calls = crate::call::verify::NumberCalls::new(switchboard.clone());
    tokio::spawn(switchboard.run(events));
    let monitor = crate::monitor::Monitor::new(
        crate::monitor::MonitorConfig {
            bind_ip: ip("rtp.listen_ip", &config.rtp.listen_ip)?,
            advertised_ip: ip("rtp.advertised_ip", &config.rtp.advertised_ip)?,
        },
        store.clock().clone(),
    );
    let visits = start_visits(store, config).await?;
    let gateway = Gateway {
        live,
        sip_stats: sip.stats(),
        media,
        recorder,
        monitor,
        calls,
        visits: Some(visits),
        number_calls: Some(number_calls),
        health: health.clone(),
    };
    Ok((gateway, health))
}

/// The video visits' forwarding: `visits.hubs` hubs, each with its UDP socket.
async fn start_visits(
    store: &crate::store::Store,
    config: &Arc<Config>,
) -> anyhow::Result<crate::visit::live::LiveVisits> {
    let ip = |key: &str, v: &str| -> anyhow::Result<IpAddr> {
        v.parse()
            .with_context(|| format!("{key} `{v}` is not an IP address"))
    };
    let bind = ip("rtp.listen_ip", &config.rtp.listen_ip)?;
    let advertised = ip("rtp.advertised_ip", &config.rtp.advertised_ip)?;
    let hubs = match config.visits.hubs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => usize::from(n),
    };
    let mut sockets = Vec::with_capacity(hubs);
    for k in 0..hubs {
        // Hub k on media_port + k (each on a port of the kernel's choosing with 0).
        let port = match config.visits.media_port {
            0 => 0,
            p => u16::try_from(usize::from(p) + k).with_context(|| {
                format!("visits.media_port {p} + visits.hubs {hubs} runs past port 65535")
            })?,
        };
        let socket = tokio::net::UdpSocket::bind((bind, port))
            .await
            .with_context(|| {
                format!(
                    "binding the visits' media socket {k} (rtp.listen_ip {bind}, \
                     visits.media_port {} + {k})",
                    config.visits.media_port
                )
            })?;
        let want = config.visits.media_receive_buffer_bytes;
        match crate::sfu::set_receive_buffer(&socket, want) {
            Ok(granted) if granted < want => tracing::warn!(
                asked = want,
                granted,
                "a visits' media socket got a smaller receive buffer than \
                 visits.media_receive_buffer_bytes: raise net.core.rmem_max, or packets drop at \
                 a few dozen visits"
            ),
            Ok(granted) => tracing::info!(granted, "visits' media socket receive buffer"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot size the visits' media socket receive buffer")
            }
        }
        sockets.push(socket);
    }
    let options = crate::visit::live::VisitOptions {
        node_id: config.node.id.clone(),
        recordings_dir: Some(config.recording.dir.clone()),
        no_show_after: Duration::from_secs(u64::from(config.visits.no_show_after_secs)),
        warning_lead: Duration::from_secs(u64::from(config.billing.warning_lead_secs)),
    };
    let visits = crate::visit::live::LiveVisits::start(
        store.clone(),
        store.clock().clone(),
        sockets,
        advertised,
        options,
    )
    .context("starting the visits' forwarding hub")?;
    Ok(visits)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
