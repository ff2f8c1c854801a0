//! `/metrics` in Prometheus text format: HTTP requests by route and status, and latency.
//! One mutex-guarded map updated once per request (the API is not a hot path; the media
//! relay keeps its own lock-free counters).

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::Instrument;

/// (method, matched route, status).
type RouteKey = (String, String, u16);

#[derive(Debug, Default)]
pub struct Metrics {
    /// Per route: requests and seconds spent.
    http: Mutex<BTreeMap<RouteKey, (u64, f64)>>,
}

impl Metrics {
    pub fn record_http(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut m = self.http.lock().unwrap_or_else(|e| e.into_inner());
        let e = m
            .entry((method.to_string(), route.to_string(), status))
            .or_insert((0, 0.0));
        e.0 += 1;
        e.1 += secs;
    }

    /// The Prometheus exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP sallyport_up 1 while the gateway runs.\n# TYPE sallyport_up gauge\nsallyport_up 1\n");
        let _ = writeln!(
            out,
            "# HELP sallyport_build_info Version of the running gateway.\n# TYPE sallyport_build_info gauge\nsallyport_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out.push_str("# HELP sallyport_http_requests_total API requests by route and status.\n# TYPE sallyport_http_requests_total counter\n");
        let m = self.http.lock().unwrap_or_else(|e| e.into_inner());
        for ((method, route, status), (count, _)) in m.iter() {
            let _ = writeln!(
                out,
                "sallyport_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP sallyport_http_request_seconds_sum Time spent answering API requests.\n# TYPE sallyport_http_request_seconds_sum counter\n");
        for ((method, route, status), (_, secs)) in m.iter() {
            let _ = writeln!(
                out,
                "sallyport_http_request_seconds_sum{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {secs:.6}"
            );
        }
        out
    }
}

/// Middleware: counts every request under its matched route (never the raw path, so ids
/// do not explode the label set) and opens a tracing span for it.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let span = tracing::info_span!("http", method = %method, route = %route);
    let start = Instant::now(); // clock-ok: latency measurement in a driver
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    metrics.record_http(&method, &route, status, start.elapsed().as_secs_f64());
    tracing::debug!(parent: &span, status, "request done");
    resp
}

/// SIP transport counters and live calls (and the media engine's counters).
pub fn render_gateway(out: &mut String, g: &super::Gateway) {
    let sip = g.sip_stats.snapshot();
    let counters = [
        (
            "sallyport_sip_received_total",
            "SIP messages received.",
            sip.received,
        ),
        ("sallyport_sip_sent_total", "SIP messages sent.", sip.sent),
        (
            "sallyport_sip_malformed_total",
            "Malformed SIP requests answered 400.",
            sip.malformed_400,
        ),
        (
            "sallyport_sip_dropped_total",
            "SIP input dropped and output not sent.",
            sip.dropped,
        ),
        (
            "sallyport_sip_throttled_total",
            "SIP requests answered 503 by flood control.",
            sip.throttled_503,
        ),
        (
            "sallyport_sip_stray_responses_total",
            "SIP responses matching no transaction.",
            sip.stray_responses,
        ),
        (
            "sallyport_sip_retransmitted_unanswered_total",
            "Retransmitted SIP requests that arrived before the final answer was sent.",
            sip.retransmitted_unanswered,
        ),
        (
            "sallyport_sip_retransmitted_answered_total",
            "Retransmitted SIP requests that arrived after the final answer (sent again).",
            sip.retransmitted_answered,
        ),
        (
            "sallyport_sip_unsupported_total",
            "New SIP requests refused 405/501/416/420/415/406 (RFC 3261 section 8.2).",
            sip.refused_unsupported,
        ),
        (
            "sallyport_sip_tcp_accepted_total",
            "SIP TCP connections accepted.",
            sip.tcp_accepted,
        ),
    ];
    write_family(out, "counter", &counters);
    render_sip_tcp(out, &sip);
    let m = g.media.stats();
    let gauges = [
        ("sallyport_media_calls", "Calls with media open.", m.calls),
        (
            "sallyport_media_legs",
            "Call legs with bound RTP sockets.",
            m.legs,
        ),
        (
            "sallyport_media_port_pairs_in_use",
            "RTP/RTCP port pairs in use.",
            m.port_pairs_in_use,
        ),
        (
            "sallyport_media_port_pairs_total",
            "RTP/RTCP port pairs in the range.",
            m.port_pairs_total,
        ),
    ];
    write_family(out, "gauge", &gauges);
    let media = [
        (
            "sallyport_media_port_exhausted_total",
            "Calls refused (503) because every RTP/RTCP port pair was in use.",
            m.port_exhausted,
        ),
        (
            "sallyport_rtp_received_total",
            "RTP/RTCP datagrams received.",
            m.received,
        ),
        (
            "sallyport_rtp_relayed_total",
            "RTP packets relayed to the other leg.",
            m.relayed,
        ),
        (
            "sallyport_rtp_consumed_total",
            "Valid packets kept (not bridged, muted, DTMF, RTCP).",
            m.consumed,
        ),
        (
            "sallyport_rtp_prompt_frames_total",
            "Prompt frames sent.",
            m.prompt_frames,
        ),
        (
            "sallyport_rtp_ringback_frames_total",
            "Ringback frames sent.",
            m.ringback_frames,
        ),
        (
            "sallyport_rtp_digits_total",
            "Key presses detected (RFC 4733).",
            m.digits,
        ),
        (
            "sallyport_rtp_tap_dropped_total",
            "Packets a recorder or live listener could not take in time (the call went on).",
            m.tap_dropped,
        ),
        (
            "sallyport_media_wakeups_total",
            "Times a media worker came back from waiting (an idle engine does not wake).",
            m.wakeups,
        ),
        (
            "sallyport_media_receive_buffers_exhausted_total",
            "Times a media worker's receive found its buffer pool empty and was re-armed (the worker was past its capacity).",
            m.rx_no_buffers,
        ),
    ];
    write_family(out, "counter", &media);
    let _ = writeln!(out, "# HELP sallyport_rtp_dropped_total RTP/RTCP datagrams dropped, by reason.\n# TYPE sallyport_rtp_dropped_total counter");
    for (reason, value) in [
        ("wrong_source", m.dropped_wrong_source),
        ("malformed", m.dropped_malformed),
        ("payload_type", m.dropped_payload_type),
        ("no_leg", m.dropped_no_leg),
        ("send_failed", m.dropped_send),
        ("late", m.dropped_late),
        ("queue_full", m.dropped_queue_full),
    ] {
        let _ = writeln!(
            out,
            "sallyport_rtp_dropped_total{{reason=\"{reason}\"}} {value}"
        );
    }
    let r = g.recorder.stats();
    let load = |v: &std::sync::atomic::AtomicU64| v.load(std::sync::atomic::Ordering::Relaxed);
    write_family(
        out,
        "gauge",
        &[(
            "sallyport_recordings_open",
            "Recordings being captured now.",
            load(&r.open),
        )],
    );
    let recorder = [
        (
            "sallyport_recorder_packets_total",
            "Packets the recorder took from the calls' taps.",
            load(&r.packets),
        ),
        (
            "sallyport_recorder_late_packets_total",
            "Packets that reached the recorder after their place in the file was written.",
            load(&r.late),
        ),
        (
            "sallyport_recorder_bytes_written_total",
            "Audio bytes written to recording files.",
            load(&r.bytes_written),
        ),
        (
            "sallyport_recorder_write_errors_total",
            "Recording files that stopped growing after a write error.",
            load(&r.write_errors),
        ),
        (
            "sallyport_recorder_start_errors_total",
            "Recordings whose file could not be created; their calls went on unrecorded.",
            load(&r.start_errors),
        ),
    ];
    write_family(out, "counter", &recorder);
    render_listeners(out, &g.monitor.snapshot());
    g.calls.render(out);
    let (nodes, sessions, recordings) = crate::cluster::takeover::TAKEOVERS.snapshot();
    let takeovers = [
        (
            "sallyport_takeover_nodes_total",
            "Dead nodes (heartbeat older than cluster.dead_after_secs, work left open) this node took over.",
            nodes,
        ),
        (
            "sallyport_takeover_sessions_total",
            "Sessions of dead nodes this node closed (reason system).",
            sessions,
        ),
        (
            "sallyport_takeover_recordings_total",
            "Recordings of dead nodes this node finished as incomplete.",
            recordings,
        ),
    ];
    write_family(out, "counter", &takeovers);
    let _ = writeln!(
        out,
        "# HELP sallyport_calls_live Calls carried by this node now.\n# TYPE sallyport_calls_live gauge\nsallyport_calls_live {}",
        g.live.len()
    );
}

/// SQLite's group commits (all zero on PostgreSQL): writes per commit is their ratio.
pub fn render_db(out: &mut String, g: &crate::db::group::GroupStats) {
    let counters = [
        (
            "sallyport_db_group_commits_total",
            "Commits of grouped writes on SQLite's local connection.",
            g.commits,
        ),
        (
            "sallyport_db_group_writes_total",
            "Writes (transactions) those commits carried.",
            g.members,
        ),
    ];
    write_family(out, "counter", &counters);
}

/// SIP over TCP under its bounds: connections refused and closed by reason, and gauges.
fn render_sip_tcp(out: &mut String, sip: &crate::sip::transport::StatsSnapshot) {
    let _ = writeln!(out, "# HELP sallyport_sip_tcp_refused_total SIP TCP connections closed at once, by the bound they met.\n# TYPE sallyport_sip_tcp_refused_total counter");
    for (reason, value) in [
        ("total_cap", sip.tcp_refused_total_cap),
        ("source_cap", sip.tcp_refused_source_cap),
        ("descriptors", sip.tcp_refused_descriptors),
    ] {
        let _ = writeln!(
            out,
            "sallyport_sip_tcp_refused_total{{reason=\"{reason}\"}} {value}"
        );
    }
    let _ = writeln!(out, "# HELP sallyport_sip_tcp_closed_total SIP TCP connections closed by the gateway, by reason.\n# TYPE sallyport_sip_tcp_closed_total counter");
    for (reason, value) in [
        ("idle", sip.tcp_closed_idle),
        ("slow_message", sip.tcp_closed_slow),
        ("buffer_pool", sip.tcp_closed_buffer),
    ] {
        let _ = writeln!(
            out,
            "sallyport_sip_tcp_closed_total{{reason=\"{reason}\"}} {value}"
        );
    }
    let gauges = [
        (
            "sallyport_sip_tcp_connections",
            "SIP TCP connections open now.",
            sip.tcp_open,
        ),
        (
            "sallyport_sip_tcp_buffer_pool_bytes",
            "Bytes of unfinished SIP TCP messages held beyond each connection's own 8 KiB.",
            sip.tcp_pool_bytes,
        ),
    ];
    write_family(out, "gauge", &gauges);
}

/// Live listeners (WebRTC) of this node.
fn render_listeners(out: &mut String, l: &crate::monitor::MonitorSnapshot) {
    write_family(
        out,
        "gauge",
        &[(
            "sallyport_listeners_open",
            "Live listeners (browsers) open now.",
            l.open,
        )],
    );
    let counters = [
        (
            "sallyport_listeners_opened_total",
            "Live listeners opened.",
            l.opened,
        ),
        (
            "sallyport_listen_packets_sent_total",
            "RTP packets sent to live listeners.",
            l.packets_sent,
        ),
        (
            "sallyport_listen_dropped_total",
            "Packets live listeners lost (tap full, or a codec the browser refused).",
            l.dropped,
        ),
    ];
    write_family(out, "counter", &counters);
}

/// One unlabelled metric per row: HELP, TYPE and the value.
fn write_family(out: &mut String, kind: &str, rows: &[(&str, &str, u64)]) {
    for (name, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}
