//! Live listening: an investigator's browser hears a call in progress over WebRTC,
//! receive-only, with the G.711 the relay already sends (no transcoding).
//!
//! Owns: one WebRTC peer per listening browser (`peer::Peer`, sans-IO, ICE-lite,
//! DTLS-SRTP), the tokio task that drives it with its own UDP sockets (`task`), the
//! registry of open listeners and their counters for `/metrics`.
//! Calls: the media engine's taps only through what it is handed (a [`Tap`] whose
//! receiver it keeps); the str0m crate. It never reaches a call itself.
//! Called by: the API (`POST/DELETE /api/v1/calls/{id}/listen`), which checks who may
//! listen, asks the call's task to attach the tap (that task owns the call's media and
//! refuses privileged or not yet accepted calls), then starts the listener here.
//!
//! # One listener
//! The browser offers one or two `recvonly` audio m-lines; the answer is `sendonly`,
//! ICE-lite, with a host candidate `[rtp] advertised_ip` and the port of a UDP socket
//! bound on `[rtp] listen_ip`, port chosen by the kernel (ephemeral) so listeners never
//! take the relay's port pairs. When `listen_ip` is a wildcard (0.0.0.0 or ::) the
//! answer also offers every other address of the host's interfaces of that family,
//! loopback included (IPv6 link-local excepted), each with a socket bound on it: a
//! browser that reaches the gateway on another address than the advertised one still
//! connects (Firefox without camera or microphone permission offers only its non-loopback
//! addresses, so it never pairs with a loopback-only answer). One socket per address,
//! rather than `IP_PKTINFO` on the wildcard one, tells str0m which candidate a datagram
//! reached, and its answers leave from that candidate's socket. Track 1 is the inmate (what the gateway sends toward the
//! called party), track 2 the called party and the gateway's prompts (what it sends
//! toward the inmate); one m-line gets the inmate only. Tapped packets are written with
//! their RTP timestamps (so gaps and pacing are the call's own) as PCMU or PCMA, whichever
//! the leg uses. The listener ends when the call ends (the tap closes), on `DELETE`, when
//! ICE reports the browser gone, after 15 s without a datagram from it, or if it has not
//! connected within 20 s.
//!
//! # Why str0m (and not the `webrtc` crate)
//! Both candidates are sans-IO now: `webrtc` 0.21.1 is a tokio wrapper over webrtc-rs'
//! `rtc` 0.21.1 core (checked on crates.io, November 2026). Measured for a minimal
//! answering program in a scratch crate on this 2-core machine (release, `-j2`, clean
//! target; the machine was shared with other builds, so wall times are upper bounds and
//! user CPU is the steadier figure):
//!
//! | stack (crypto backend)                 | crates in lock | clean build: wall / user CPU |
//! |----------------------------------------|----------------|------------------------------|
//! | str0m 0.24 (`openssl`, system libssl)  | 64             | 243 s / 100 s                |
//! | str0m 0.24 (`rust-crypto`)             | 143            | 455 s / 163 s                |
//! | rtc 0.21.1 (`crypto-ring`, default)    | 196            | 242 s / 139 s                |
//!
//! - Build cost for CI (2 cores, 90 min): str0m with OpenSSL adds the fewest crates and
//!   the least compile time; its DTLS is OpenSSL's, which Chromium has interoperated with
//!   for a decade. str0m's `rust-crypto` backend still pulls aws-lc-sys (a large C build)
//!   through rcgen in this release, so it is not the lean option it sounds. OpenSSL needs
//!   `libssl-dev` and `pkg-config` at build time (`.ci/run` installs them when absent).
//!   str0m 0.25 could not be used: its backend crates 0.7 are not on the registry yet;
//!   0.24 needs Rust 1.85 (the crate's `rust-version`).
//! - API fit: our drivers run sans-IO cores handed `now` (call, charging, SIP). str0m is
//!   built the same way — `handle_input(now)`, `poll_output` until `Timeout` — and for an
//!   SFU: a writer per m-line taking a payload with its media time, so forwarding a tapped
//!   G.711 packet is one call, and the unit tests connect two peers in memory on a virtual
//!   clock. `rtc` mirrors the W3C RTCPeerConnection (offer/answer, transceivers, tracks,
//!   interceptors): more surface than a server that only answers offers needs.
//! - Interop with Debian's Chromium 156: `tests/live_listen.rs` negotiates with
//!   `/usr/bin/chromium` (ICE-lite, DTLS 1.2, SRTP) and reads `getStats()`: inbound-rtp
//!   packets on both tracks, codec `audio/PCMU`, audio level 0.24 (the tones sipp plays).
//!   The `webrtc` crate was not put through the same test: str0m passed first time.
//! - CPU per stream: with nine Chromium listeners on one call, the gateway used 0.44 to
//!   0.69 % of one core more per listener over four runs (two 50 packet/s SRTP streams
//!   each), so 0.2 to 0.35 % per stream (`/proc/<pid>/stat` over 5 s, same test; the
//!   machine was shared with other builds).
//!
//! Video visits will reuse this choice: str0m also does Opus, VP8/VP9/H.264 and simulcast.

mod peer;
mod task;

pub use peer::{audio_mids, Closed, PeerError, CONNECT_TIMEOUT, IDLE_TIMEOUT};
pub use task::Ended;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::media::engine::{Tap, TapPacket, TapSink};
use peer::Peer;

/// Tapped packets a listener may fall behind by before the engine drops (about 2.5 s of
/// both directions at 20 ms).
const TAP_QUEUE: usize = 256;

/// Largest offer accepted (Chromium's two-m-line audio offer is about 3 KB).
pub const MAX_OFFER: usize = 64 * 1024;

/// Why a listener could not be opened or found.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("the offer cannot be answered: {0}")]
    Offer(#[from] PeerError),
    #[error("the offer is larger than {MAX_OFFER} bytes")]
    OfferTooLarge,
    #[error("binding the listener's UDP socket on {ip}: {source}")]
    Socket {
        ip: IpAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no listener {0} on this call")]
    NoSuchListener(String),
}

/// Where listeners bind and what they advertise (from `[rtp]`).
#[derive(Debug, Clone, Copy)]
pub struct MonitorConfig {
    pub bind_ip: IpAddr,
    pub advertised_ip: IpAddr,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MonitorStats {
    open: AtomicU64,
    opened: AtomicU64,
    packets_sent: AtomicU64,
    /// Payload types the browser did not accept, and tap drops of closed listeners.
    dropped: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorSnapshot {
    /// Listeners open now.
    pub open: u64,
    /// Listeners opened since start.
    pub opened: u64,
    /// RTP packets sent to browsers.
    pub packets_sent: u64,
    /// Packets a listener lost: its tap was full, or the browser took no such codec.
    pub dropped: u64,
}

/// An open listener, as the registry knows it.
struct Entry {
    call_id: String,
    stop: oneshot::Sender<()>,
    tap_dropped: Arc<AtomicU64>,
}

struct Inner {
    config: MonitorConfig,
    clock: Arc<dyn Clock>,
    stats: Arc<MonitorStats>,
    listeners: Mutex<HashMap<String, Entry>>,
}

/// The live listeners of this node (cheap to clone).
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("config", &self.inner.config)
            .field("open", &self.snapshot().open)
            .finish()
    }
}

/// A listener whose answer is ready, waiting for its call to attach the tap.
pub struct Prepared {
    pub listener_id: String,
    /// The SDP answer for the browser.
    pub answer: String,
    tap: Tap,
    peer: Peer,
    /// Each host candidate of the answer and the socket that receives for it.
    sockets: Vec<(SocketAddr, UdpSocket)>,
    taps: mpsc::Receiver<TapPacket>,
}

impl Prepared {
    /// The tap the call must attach (a clone: the call keeps it, the listener keeps
    /// the receiver).
    pub fn tap(&self) -> Tap {
        self.tap.clone()
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("listener_id", &self.listener_id)
            .field("peer", &self.peer)
            .finish()
    }
}

impl Monitor {
    pub fn new(config: MonitorConfig, clock: Arc<dyn Clock>) -> Monitor {
        Monitor {
            inner: Arc::new(Inner {
                config,
                clock,
                stats: Arc::default(),
                listeners: Mutex::default(),
            }),
        }
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Binds the listener's sockets and answers the browser's `offer`; nothing runs until
    /// [`Monitor::start`].
    pub async fn prepare(&self, offer: &str) -> Result<Prepared, MonitorError> {
        if offer.len() > MAX_OFFER {
            return Err(MonitorError::OfferTooLarge);
        }
        let MonitorConfig {
            bind_ip,
            advertised_ip,
        } = self.inner.config;
        let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0))
            .await
            .and_then(|s| Ok((s.local_addr()?, s)))
            .map_err(|source| MonitorError::Socket {
                ip: bind_ip,
                source,
            });
        let (bound, socket) = socket?;
        let mut sockets = vec![(SocketAddr::new(advertised_ip, bound.port()), socket)];
        if bind_ip.is_unspecified() {
            let interfaces = interface_addresses().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot list this host's addresses: the listener \
                    offers rtp.advertised_ip only");
                Vec::new()
            });
            for ip in extra_candidates(bind_ip, advertised_ip, &interfaces) {
                // An address that cannot be bound (going away, IPv6 not yet usable) is
                // left out; the others still serve.
                match UdpSocket::bind(SocketAddr::new(ip, 0)).await {
                    Ok(s) => match s.local_addr() {
                        Ok(a) => sockets.push((a, s)),
                        Err(e) => tracing::debug!(%ip, error = %e, "listener socket unusable"),
                    },
                    Err(e) => tracing::debug!(%ip, error = %e, "listener candidate not bound"),
                }
            }
        }
        let locals: Vec<SocketAddr> = sockets.iter().map(|(a, _)| *a).collect();
        let (peer, answer) = Peer::answer(offer, &locals, self.inner.clock.now())?;
        let key = rand::random::<u64>();
        let (tx, taps) = mpsc::channel(TAP_QUEUE);
        Ok(Prepared {
            listener_id: format!("lsn_{key:016x}"),
            answer,
            tap: Tap::new(key, TapSink::Async(tx)),
            peer,
            sockets,
            taps,
        })
    }

    /// Starts the listener (its call has attached the tap); it runs until the call ends,
    /// the browser goes away or [`Monitor::stop`].
    pub fn start(&self, p: Prepared, call_id: &str) {
        let (stop, stop_rx) = oneshot::channel();
        let id = p.listener_id.clone();
        let entry = Entry {
            call_id: call_id.to_string(),
            stop,
            tap_dropped: p.tap.dropped.clone(),
        };
        self.listeners().insert(id.clone(), entry);
        let stats = &self.inner.stats;
        stats.open.fetch_add(1, Ordering::Relaxed);
        stats.opened.fetch_add(1, Ordering::Relaxed);
        let listener = task::Listener {
            peer: p.peer,
            sockets: p.sockets,
            taps: p.taps,
            stop: stop_rx,
            clock: self.inner.clock.clone(),
            stats: stats.clone(),
        };
        let this = self.clone();
        let call_id = call_id.to_string();
        tokio::spawn(async move {
            listener.run(id.clone(), call_id).await;
            this.finished(&id);
        });
    }

    /// Closes listener `listener_id` of call `call_id`.
    pub fn stop(&self, call_id: &str, listener_id: &str) -> Result<(), MonitorError> {
        let mut map = self.listeners();
        let mine = map.get(listener_id).is_some_and(|e| e.call_id == call_id);
        let entry = mine.then(|| map.remove(listener_id)).flatten();
        drop(map);
        let entry = entry.ok_or_else(|| MonitorError::NoSuchListener(listener_id.to_string()))?;
        self.retire(&entry);
        let _ = entry.stop.send(());
        Ok(())
    }

    /// The listeners open on `call_id`.
    pub fn listeners_of(&self, call_id: &str) -> Vec<String> {
        let map = self.listeners();
        let mut ids: Vec<String> = map
            .iter()
            .filter(|(_, e)| e.call_id == call_id)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// A listener's task ended on its own (or after `stop`, which already retired it).
    fn finished(&self, listener_id: &str) {
        let entry = self.listeners().remove(listener_id);
        if let Some(e) = entry {
            self.retire(&e);
        }
    }

    fn retire(&self, e: &Entry) {
        let stats = &self.inner.stats;
        stats.open.fetch_sub(1, Ordering::Relaxed);
        let lost = e.tap_dropped.load(Ordering::Relaxed);
        stats.dropped.fetch_add(lost, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MonitorSnapshot {
        let s = &self.inner.stats;
        let live_drops: u64 = self
            .listeners()
            .values()
            .map(|e| e.tap_dropped.load(Ordering::Relaxed))
            .sum();
        MonitorSnapshot {
            open: s.open.load(Ordering::Relaxed),
            opened: s.opened.load(Ordering::Relaxed),
            packets_sent: s.packets_sent.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed) + live_drops,
        }
    }
}

/// The addresses a listener offers besides `advertised` when its sockets bind the wildcard
/// `bind` (0.0.0.0 or ::): every address of this host's interfaces (`interfaces`) of
/// `bind`'s family, loopback included, that a socket can bind and a browser can send to.
/// IPv6 link-local addresses are left out (they need an interface index no SDP carries),
/// and so is `advertised` itself (the wildcard socket answers for it). In the order given,
/// each once. A specific `bind` offers nothing more: the operator chose that address.
fn extra_candidates(bind: IpAddr, advertised: IpAddr, interfaces: &[IpAddr]) -> Vec<IpAddr> {
    if !bind.is_unspecified() {
        return Vec::new();
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for &ip in interfaces {
        let usable = match (bind, ip) {
            (IpAddr::V4(_), IpAddr::V4(v4)) => !v4.is_unspecified() && !v4.is_multicast(),
            (IpAddr::V6(_), IpAddr::V6(v6)) => {
                let link_local = v6.segments()[0] & 0xffc0 == 0xfe80;
                !v6.is_unspecified() && !v6.is_multicast() && !link_local
            }
            _ => false,
        };
        if usable && ip != advertised && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The addresses of this host's interfaces that are up (`getifaddrs`).
fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        if !up || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a non-null `ifa_addr` points to a sockaddr whose family says which
        // sockaddr_* it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: AF_INET: the address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            out.push(IpAddr::from(
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
            ));
        } else if family == libc::AF_INET6 {
            // SAFETY: AF_INET6: the address is a sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use str0m::media::{Direction, MediaKind};

    fn offer() -> String {
        let mut rtc = str0m::Rtc::builder()
            .clear_codecs()
            .enable_pcmu(true, false)
            .build(std::time::Instant::now());
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        change.apply().map(|(o, _)| o.to_sdp_string()).unwrap()
    }

    #[tokio::test]
    async fn listeners_are_registered_stopped_by_their_call_and_end_with_their_tap() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let config = MonitorConfig {
            bind_ip: ip,
            advertised_ip: ip,
        };
        let m = Monitor::new(config, Arc::new(SystemClock));
        let p = m.prepare(&offer()).await.unwrap();
        assert!(p.answer.contains("a=candidate:") && p.answer.contains("127.0.0.1"));
        let (id, tap) = (p.listener_id.clone(), p.tap());
        m.start(p, "call-1");
        assert_eq!(m.listeners_of("call-1"), std::slice::from_ref(&id));
        assert_eq!((m.snapshot().open, m.snapshot().opened), (1, 1));
        assert!(matches!(
            m.stop("call-2", &id),
            Err(MonitorError::NoSuchListener(_))
        ));
        m.stop("call-1", &id).unwrap();
        assert_eq!(m.snapshot().open, 0);
        assert!(m.listeners_of("call-1").is_empty());

        // A second listener ends on its own when its call drops the tap.
        let p = m.prepare(&offer()).await.unwrap();
        let (id2, tap2) = (p.listener_id.clone(), p.tap());
        m.start(p, "call-1");
        drop((tap, tap2));
        for _ in 0..100 {
            if m.listeners_of("call-1").is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            m.listeners_of("call-1").is_empty(),
            "{id2} outlived its tap"
        );
        assert_eq!(m.snapshot().open, 0);
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_wildcard_bind_offers_every_usable_address_of_its_family() {
        let host = ips(&[
            "127.0.0.1",
            "::1",
            "192.0.2.2",
            "fd00::2",
            "fe80::fc:ff:fe00:1",
            "10.1.2.3",
            "192.0.2.2",
        ]);
        let (v4, v6) = (ips(&["0.0.0.0"])[0], ips(&["::"])[0]);
        // The advertised address is the wildcard socket's; the others get their own.
        assert_eq!(
            extra_candidates(v4, ips(&["127.0.0.1"])[0], &host),
            ips(&["192.0.2.2", "10.1.2.3"])
        );
        // An advertised address not on the host (NAT): every local one besides it.
        assert_eq!(
            extra_candidates(v4, ips(&["203.0.113.9"])[0], &host),
            ips(&["127.0.0.1", "192.0.2.2", "10.1.2.3"])
        );
        // IPv6: loopback and the unique local address, not the link-local one.
        assert_eq!(
            extra_candidates(v6, ips(&["fd00::2"])[0], &host),
            ips(&["::1"])
        );
        // A specific bind address is the operator's choice: nothing more.
        for bind in ips(&["127.0.0.1", "192.0.2.2", "::1"]) {
            assert!(extra_candidates(bind, bind, &host).is_empty());
        }
    }

    /// The `(address, port)` of each candidate of an SDP.
    fn candidates(sdp: &str) -> Vec<SocketAddr> {
        sdp.lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                SocketAddr::new(f[4].parse().unwrap(), f[5].parse().unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn a_listener_bound_on_the_wildcard_offers_each_address_of_the_host() {
        let config = MonitorConfig {
            bind_ip: ips(&["0.0.0.0"])[0],
            advertised_ip: ips(&["127.0.0.1"])[0],
        };
        let m = Monitor::new(config, Arc::new(SystemClock));
        let p = m.prepare(&offer()).await.unwrap();
        let offered = candidates(&p.answer);
        let mut want = ips(&["127.0.0.1"]);
        let host = interface_addresses().unwrap();
        want.extend(extra_candidates(
            config.bind_ip,
            config.advertised_ip,
            &host,
        ));
        let mut got: Vec<IpAddr> = offered.iter().map(SocketAddr::ip).collect();
        got.dedup();
        assert_eq!(got, want, "{}", p.answer);
        println!("offered: {offered:?}");
        // Each candidate is a socket of the listener: the advertised one on the wildcard,
        // every other bound on its own address.
        let bound: Vec<(SocketAddr, SocketAddr)> = p
            .sockets
            .iter()
            .map(|(c, s)| (*c, s.local_addr().unwrap()))
            .collect();
        assert_eq!(bound.len(), want.len());
        for (i, (candidate, local)) in bound.iter().enumerate() {
            assert!(offered.contains(candidate), "{candidate} in {offered:?}");
            assert_eq!(candidate.port(), local.port());
            if i == 0 {
                assert!(local.ip().is_unspecified());
            } else {
                assert_eq!(candidate.ip(), local.ip());
            }
        }
        // Bound on one address, the listener offers the advertised address only.
        let one = ips(&["127.0.0.1"])[0];
        let m = Monitor::new(
            MonitorConfig {
                bind_ip: one,
                advertised_ip: one,
            },
            Arc::new(SystemClock),
        );
        let p = m.prepare(&offer()).await.unwrap();
        let offered: Vec<IpAddr> = candidates(&p.answer).iter().map(SocketAddr::ip).collect();
        assert!(offered.iter().all(|&ip| ip == one), "{offered:?}");
    }

    #[tokio::test]
    async fn offers_too_large_or_unanswerable_are_refused_before_anything_runs() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let m = Monitor::new(
            MonitorConfig {
                bind_ip: ip,
                advertised_ip: ip,
            },
            Arc::new(SystemClock),
        );
        let big = "a".repeat(MAX_OFFER + 1);
        assert!(matches!(
            m.prepare(&big).await,
            Err(MonitorError::OfferTooLarge)
        ));
        assert!(matches!(
            m.prepare("v=0\r\n").await,
            Err(MonitorError::Offer(PeerError::NoAudio))
        ));
        assert_eq!(m.snapshot(), MonitorSnapshot::default());
    }
}
