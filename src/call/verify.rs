//! The call that proves a family's number is theirs ([`crate::family::linking`] says why
//! it works this way): the gateway calls the number through the trunk, plays
//! `verify_number` ("enter the code shown on your screen, followed by the pound key"),
//! collects the keys (RFC 4733 or SIP INFO, as handsets key PINs), has the store judge
//! them ([`crate::store::Store::link_keyed`]), plays `number_confirmed` or
//! `code_not_right` and hangs up.
//!
//! No inmate is on it: no session, no CDR, no charge. One entry per call; the call ends
//! on its own when nobody answers (`RING_TIMEOUT`), nobody keys anything
//! (`FIRST_KEY_TIMEOUT`), or a closing prompt does not finish (`CLOSE_GUARD`). What
//! happened is audited (`family.link_call_*`, the request id as target; never the code).

use super::driver::{CallInput, Switchboard, ALLOW};
use super::trunk::{Placing, TrunkEvent, TrunkLeg};
use crate::family::linking::{self, Keyed};
use crate::media::dtmf::{parse_sip_info, Collected, CollectorConfig, DigitCollector};
use crate::media::engine::MediaEvent;
use crate::media::prompts::PromptId;
use crate::media::relay::{LatchPolicy, Side};
use crate::media::sdp::{self, LocalMedia};
use crate::sip::message::{new_tag, Method, Response};
use crate::sip::transport::{Event, Transport};
use crate::store::AuditEntry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn, Instrument};

/// How long the number may ring before the gateway gives up (CANCEL).
const RING_TIMEOUT: Duration = Duration::from_secs(45);
/// How long after the answer the first key may come (the prompt takes about 13 s).
const FIRST_KEY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long between keys.
const INTER_KEY_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a closing prompt may take before the gateway hangs up anyway.
const CLOSE_GUARD: Duration = Duration::from_secs(15);
/// Shorter than any closing prompt (the shortest, `goodbye`, is 0.7 s).
const STALE_PROMPT_END: Duration = Duration::from_millis(300);

/// Places verification calls (one task each) through this node's trunk.
#[derive(Clone)]
pub struct NumberCalls {
    sb: Arc<Switchboard>,
}

impl std::fmt::Debug for NumberCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NumberCalls")
    }
}

/// The key codes are hashed under: derived from `security.pin_pepper`, the same on
/// every node configured alike (any node may place the call another node's API asked).
pub fn code_key(config: &crate::config::Config) -> [u8; 32] {
    crate::config::derive_key(
        config.security.pin_pepper.as_bytes(),
        b"sallyport family number code",
        &[],
    )
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    Collecting,
    Closing,
    Done,
}

impl NumberCalls {
    pub fn new(sb: Arc<Switchboard>) -> NumberCalls {
        NumberCalls { sb }
    }

    /// Calls `number` (E.164) for link request `request_id`, as facility `facility_id`;
    /// returns at once, the call goes on in its own task.
    pub fn place(&self, request_id: String, number: String, facility_id: String) {
        let sb = self.sb.clone();
        let span = tracing::info_span!("number_call", request = %request_id);
        tokio::spawn(
            async move {
                let outcome = run(&sb, &request_id, &number, &facility_id).await;
                info!(outcome, "verification call over");
                audit(&sb, &request_id, &format!("family.link_call_{outcome}")).await;
            }
            .instrument(span),
        );
    }
}

async fn audit(sb: &Switchboard, request_id: &str, action: &str) {
    let entry = AuditEntry {
        actor: "gateway",
        action,
        target: request_id,
        facility_id: None,
        detail: serde_json::json!({}),
        remote_addr: None,
    };
    if let Err(e) = sb.store.audit(entry).await {
        tracing::error!(error = %e, action, "audit write failed");
    }
}

/// The call, start to end; what became of it (`verified`, `wrong_code`, `failed`,
/// `expired`, `no_answer`, `refused`, `no_code`, `hung_up`, `error`).
async fn run(
    sb: &Arc<Switchboard>,
    request_id: &str,
    number: &str,
    facility: &str,
) -> &'static str {
    let (tx, mut rx) = mpsc::unbounded_channel::<CallInput>();
    let (mut media, mut media_rx) = sb.media.open_call();
    let addr = match media.allocate(Side::B) {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "no media ports for a verification call");
            return "error";
        }
    };
    let local = LocalMedia::new(addr, rand::random::<u32>().into());
    let placing = Placing {
        number,
        trunk: sb.config.sip.trunk,
        from_user: facility,
        advertised_ip: &sb.config.rtp.advertised_ip,
        sent_by: &sb.sent_by,
        allow: ALLOW,
    };
    let Ok(mut leg) = TrunkLeg::new(&placing, sdp::offer(&local, None)) else {
        return "error";
    };
    let call_id = leg.call_id().to_string();
    let branch = leg.branch().to_string();
    sb.routes.add_call_id(&call_id, &tx);
    sb.routes.add_branch(&branch, &tx);
    let trunk = sb.config.sip.trunk;
    let outcome = match sb
        .sip
        .send_request(leg.invite().clone(), trunk, Transport::Udp)
        .await
    {
        Ok(key) => {
            leg.sent(key);
            let mut call = VerifyCall {
                sb,
                request_id,
                leg,
                phase: Phase::Ringing,
                deadline: sb.now() + RING_TIMEOUT,
                collector: None,
                closing_since: sb.now(),
                outcome: "no_answer",
            };
            call.drive(&mut rx, &mut media, &mut media_rx).await;
            call.outcome
        }
        Err(e) => {
            warn!(error = %e, "verification INVITE not sent");
            "error"
        }
    };
    sb.routes.remove(&[call_id], &[branch]);
    outcome
}

struct VerifyCall<'a> {
    sb: &'a Arc<Switchboard>,
    request_id: &'a str,
    leg: TrunkLeg,
    phase: Phase,
    /// When the phase gives up.
    deadline: Instant,
    collector: Option<DigitCollector>,
    /// When the closing prompt was asked for.
    closing_since: Instant,
    outcome: &'static str,
}

impl VerifyCall<'_> {
    async fn drive(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<CallInput>,
        media: &mut crate::media::engine::CallMedia,
        media_rx: &mut mpsc::UnboundedReceiver<MediaEvent>,
    ) {
        while self.phase != Phase::Done {
            let wake = self
                .collector
                .as_ref()
                .and_then(DigitCollector::poll_timeout)
                .map_or(self.deadline, |t| t.min(self.deadline));
            let sleep = self.sb.store.clock().sleep_until(wake);
            tokio::select! {
                biased;
                input = rx.recv() => match input {
                    Some(CallInput::Sip(ev)) => self.on_sip(ev, false, media).await,
                    Some(CallInput::AnsweredBye(ev)) => self.on_sip(ev, true, media).await,
                    None => self.phase = Phase::Done,
                },
                Some(ev) = media_rx.recv() => match ev {
                    MediaEvent::Digit { side: Side::B, digit } => self.on_digit(digit, media).await,
                    MediaEvent::Digit { .. } => {}
                    MediaEvent::PromptsDone { .. } => {
                        // The closing prompt is done; a `PromptsDone` of the request
                        // prompt that crossed the last key (an INFO read first) comes
                        // sooner than any closing prompt can end, and is not it.
                        let stale = self.sb.now() < self.closing_since + STALE_PROMPT_END;
                        if self.phase == Phase::Closing && !stale {
                            self.hang_up().await;
                        }
                    }
                },
                () = sleep => self.on_timeout(media).await,
            }
        }
    }

    async fn flush(&mut self) {
        let trunk = self.sb.config.sip.trunk;
        while let Some(req) = self.leg.poll_transmit() {
            if let Err(e) = self.sb.sip.send_request(req, trunk, Transport::Udp).await {
                warn!(error = %e, "request to the trunk not sent");
            }
        }
    }

    async fn hang_up(&mut self) {
        self.leg.hang_up();
        self.flush().await;
        self.phase = Phase::Done;
    }

    async fn on_timeout(&mut self, media: &mut crate::media::engine::CallMedia) {
        let now = self.sb.now();
        if let Some(c) = self.collector.as_mut() {
            if let Some(collected) = c.handle_timeout(now) {
                self.on_collected(collected, media).await;
                return;
            }
        }
        if now < self.deadline {
            return;
        }
        match self.phase {
            Phase::Ringing => {
                info!("no answer: cancelling the verification call");
                self.leg.cancel();
                self.flush().await;
                // Wait (bounded) for the INVITE's final answer so a crossing 2xx is hung up.
                self.phase = Phase::Closing;
                self.deadline = now + CLOSE_GUARD;
            }
            Phase::Collecting | Phase::Closing => self.hang_up().await,
            Phase::Done => {}
        }
    }

    async fn on_digit(&mut self, digit: char, media: &mut crate::media::engine::CallMedia) {
        let now = self.sb.now();
        let collected = self.collector.as_mut().and_then(|c| c.on_digit(digit, now));
        if let Some(collected) = collected {
            self.on_collected(collected, media).await;
        }
    }

    async fn on_collected(
        &mut self,
        collected: Collected,
        media: &mut crate::media::engine::CallMedia,
    ) {
        self.collector = None;
        media.stop(Side::B);
        let prompt = match collected {
            Collected::Complete(d) | Collected::InterDigitTimeout(d) => {
                let key = code_key(&self.sb.config);
                let hash = linking::code_hash(&key, self.request_id, d.as_str());
                let attempts = self.sb.config.family.verify_code_attempts;
                match self
                    .sb
                    .store
                    .link_keyed(self.request_id, &hash, attempts)
                    .await
                {
                    Ok(Keyed::Verified) => {
                        self.outcome = "verified";
                        PromptId::NumberConfirmed
                    }
                    Ok(Keyed::Wrong { .. }) => {
                        self.outcome = "wrong_code";
                        PromptId::CodeNotRight
                    }
                    Ok(Keyed::Failed) => {
                        self.outcome = "failed";
                        PromptId::CodeNotRight
                    }
                    Ok(Keyed::Expired) => {
                        self.outcome = "expired";
                        PromptId::CodeNotRight
                    }
                    Err(e) => {
                        warn!(error = %e, "the keyed code could not be judged");
                        self.outcome = "error";
                        PromptId::Goodbye
                    }
                }
            }
            Collected::TimedOut => {
                self.outcome = "no_code";
                PromptId::Goodbye
            }
        };
        media.play(Side::B, prompt);
        self.phase = Phase::Closing;
        self.closing_since = self.sb.now();
        self.deadline = self.closing_since + CLOSE_GUARD;
    }

    async fn on_sip(
        &mut self,
        ev: Event,
        answered: bool,
        media: &mut crate::media::engine::CallMedia,
    ) {
        let now = self.sb.now();
        match ev {
            Event::Response { key, response } => {
                let live = matches!(self.phase, Phase::Ringing);
                let event = self.leg.on_response(&key, &response, live);
                self.flush().await;
                match event {
                    Some(TrunkEvent::Answered(m)) => {
                        info!("verification call answered");
                        media.set_leg(Side::B, m, LatchPolicy::Exact);
                        media.play(Side::B, PromptId::VerifyNumber);
                        let config = CollectorConfig {
                            max_digits: linking::CODE_DIGITS,
                            terminator: Some('#'),
                            first_digit_timeout: FIRST_KEY_TIMEOUT,
                            inter_digit_timeout: INTER_KEY_TIMEOUT,
                        };
                        self.collector = Some(DigitCollector::new(config, now));
                        self.phase = Phase::Collecting;
                        self.outcome = "no_code";
                        self.deadline = now + FIRST_KEY_TIMEOUT + CLOSE_GUARD;
                    }
                    Some(TrunkEvent::Failed(f)) => {
                        info!(?f, "verification call not answered");
                        if self.phase == Phase::Ringing {
                            self.outcome = "refused";
                        }
                        self.phase = Phase::Done;
                    }
                    Some(TrunkEvent::Ringing) | None => {
                        if self.phase == Phase::Closing && !self.leg.is_pending() {
                            // The cancelled INVITE got its final answer (or a crossing
                            // 2xx was hung up).
                            if self.collector.is_none() && self.outcome == "no_answer" {
                                self.phase = Phase::Done;
                            }
                        }
                    }
                }
            }
            Event::Timeout { key } => {
                if let Some(TrunkEvent::Failed(_)) = self.leg.on_timeout(&key) {
                    self.outcome = "refused";
                    self.phase = Phase::Done;
                }
            }
            Event::Request { key, request, .. } => {
                let ok = Response::for_request(&request, 200, "OK");
                match request.method {
                    Method::Bye => {
                        if !answered {
                            self.sb.respond(&key, ok).await;
                        }
                        self.leg.bye_received();
                        if self.phase == Phase::Collecting {
                            self.outcome = "hung_up";
                        }
                        self.phase = Phase::Done;
                    }
                    Method::Info => {
                        let ctype = request
                            .headers
                            .get("Content-Type")
                            .unwrap_or_default()
                            .to_string();
                        let body = String::from_utf8_lossy(&request.body).to_string();
                        match parse_sip_info(&ctype, &body) {
                            Ok(d) => {
                                self.sb.respond(&key, ok).await;
                                self.on_digit(d.digit, media).await;
                            }
                            Err(e) => {
                                let r = Response::for_request(
                                    &request,
                                    415,
                                    &format!("Bad INFO ({e})"),
                                );
                                self.sb.respond(&key, r).await;
                            }
                        }
                    }
                    Method::Invite if request.headers.to().is_ok_and(|t| t.tag().is_some()) => {
                        let body = self.leg.offer().to_string().into_bytes();
                        let mut resp = ok.with_body("application/sdp", body);
                        resp.headers
                            .push("Contact", format!("<sip:sallyport@{}>", self.sb.sent_by));
                        self.sb.respond(&key, resp).await;
                    }
                    Method::Options => self.sb.respond(&key, ok).await,
                    _ => {
                        let mut r = Response::for_request(&request, 405, "Method Not Allowed")
                            .with_to_tag(&new_tag());
                        r.headers.push("Allow", ALLOW);
                        self.sb.respond(&key, r).await;
                    }
                }
            }
            Event::Ack { .. } | Event::Cancel { .. } | Event::AckTimeout { .. } => {}
        }
    }
}
