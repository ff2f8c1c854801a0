//! The media layer: everything the gateway does with RTP, as pure cores.
//!
//! The gateway anchors media: each call leg's RTP flows to a port on the gateway and is
//! relayed to the other leg without transcoding, so the gateway can play prompts, detect
//! DTMF (PIN entry, press-1-to-accept), record, and cut a call at funds exhaustion.
//!
//! # What this layer owns
//!
//! | module | owns |
//! |---|---|
//! | [`sdp`] | RFC 4566 SDP parse/serialize; RFC 3264 offer/answer that anchors media here |
//! | [`rtp`] | zero-copy RTP/RTCP header views over the receive buffer, in-place rewrite |
//! | [`relay`] | per-call relay core: symmetric-RTP latching, SSRC/seq/ts continuity, counters |
//! | [`dtmf`] | RFC 4733 telephone-events, SIP INFO digit bodies, PIN collection with timeouts |
//! | [`g711`] | μ-law / A-law encode and decode (for prompts; relayed audio is never decoded) |
//! | [`prompts`] | WAV loading of `config/prompts/`, PCMU/PCMA encoding once, paced playback |
//! | [`ports`] | the RTP port allocator over the configured range (even RTP, RTP+1 RTCP) |
//! | [`engine`] | **the driver**: worker threads owning every leg's sockets, relaying, pacing prompts and ringback, reporting digits |
//!
//! # What calls it
//!
//! The call flow (`call`, the B2BUA state machine) uses [`sdp`] to answer the handset and
//! offer to the trunk, [`dtmf::DigitCollector`] for PINs, and decides which prompt plays and
//! when legs are bridged, through [`engine::CallMedia`]. The [`engine`] is the one driver
//! here: its worker threads own the UDP sockets, allocate ports from
//! [`ports::PortAllocator`], feed each received datagram to [`relay::Relay::on_packet`] and
//! carry out the returned [`relay::RelayDecision`], and pace [`prompts::PromptPlayer`] frames
//! through [`relay::Relay::stamp_local`]. Everything else here is a core: nothing reads the
//! clock, touches a socket or a file on the packet path, or spawns a task; callers pass
//! `now`.
//!
//! # Hot-path rules (per relayed packet)
//!
//! - No allocation: headers are read and rewritten in place in the receive buffer
//!   ([`rtp::RtpViewMut`]); the relay's state is plain fields sized at call set-up.
//!   `tests/relay_no_alloc.rs` proves it with a counting allocator over 100,000 packets.
//! - No lock shared between calls: a [`relay::Relay`] is one call's state, owned by one task
//!   (`&mut self`); prompts shared between calls are immutable `Arc<[u8]>`, cloned at play
//!   start, not per packet.
//! - Never panic on peer input: every parser returns a typed error; malformed packets are
//!   dropped and counted.

pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod opus;
pub mod ports;
pub mod prompts;
pub mod relay;
pub mod rtp;
pub mod sdp;
