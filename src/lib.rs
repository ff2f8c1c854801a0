//! # sallyport
//!
//! An open-source SIP/WebRTC gateway for correctional facilities: inmates call approved
//! contacts from SIP handsets, every minute is charged in real time to a prepaid debit
//! account, and the call is cut the moment its funds run out.
//!
//! The crate is built from pure **cores** that decide and thin **drivers** that do:
//!
//! | module | kind | owns |
//! |---|---|---|
//! | [`money`] | core | exact amounts, their one written form and the one rounding rule |
//! | [`text`] | core | the limits on every string a client can store |
//! | [`rating`] | core | E.164, rate decks (longest prefix), plans, regulatory caps |
//! | [`charging`] | core | the per-session billing state machine (increments, warning, cut) |
//! | [`policy`] | core | calling IDs and PIN hashing, the PIN lockout, calling hours |
//! | [`media`] | core | SDP offer/answer for anchoring, RTP views, the relay core, DTMF, G.711, prompts, RTP ports |
//! | [`media::engine`] | driver | RTP/RTCP sockets on worker threads (epoll + io_uring): relaying, prompts, ringback, digits |
//! | [`ledger`] | driver | the double-entry, append-only, idempotent ledger |
//! | [`store`] | driver | facilities, inmates, handsets, PIN attempts and locks, contacts, block lists, rates, tokens, audit, visit stations and booked visits |
//! | [`family`] | core | family accounts: address rules, emailed links, CSRF tokens, the emails' words |
//! | [`messaging`] | core | messages between inmates and contacts: text and watch-word rules, review policy, price, photo cleaning |
//! | [`mail`] | driver | outgoing email through lettre: `.eml` files by default, SMTP by configuration |
//! | [`visit`] | core | video visit scheduling: the visiting rules (windows in the facility's zone, slot lengths, notice, horizon) and a booking's transitions |
//! | [`session`] | core + driver | end reasons, the session runner (database work beside the driver), CDR rows and crash recovery |
//! | [`keywords`] | core + driver | spoken keyword alerts: watch lists spotted in finished call recordings (PocketSphinx loaded at run time), the spotting queue's worker |
//! | [`leads`] | core | investigative leads: numbers many inmates call, numbers newly called by many, PIN sharing |
//! | [`recording`] | driver | call recording: capture, files, the hash-chain check, retention |
//! | [`reports`] | core + driver | facility reports: local-day/hour buckets, tables, CSV; their SQL; a generated facility-year |
//! | [`evidence`] | core + driver | evidence packages: building one (recordings, records, charges, the chain proof) and checking one with no database |
//! | [`monitor`] | driver | live listening: a WebRTC (str0m, ICE-lite) peer per browser fed by a call's tap |
//! | [`sfu`] | core + driver | video visits' media: rooms forwarding Opus/VP8 between two sides and watchers (str0m), many rooms on one UDP socket, a synthetic participant |
//! | [`api`] | driver | the HTTP API (axum) |
//! | [`cluster`] | driver | the node's heartbeat, and forwarding live-call requests to the node that carries the call |
//! | [`db`] | driver | one pool over SQLite or PostgreSQL, migrations |
//! | [`config`], [`cli`], [`server`], [`demo`] | | running it |
//!
//! Cores never read the clock: they take `now`. Drivers read it through [`clock::Clock`],
//! which tests replace with [`clock::ManualClock`].
pub mod api;
pub mod call;
pub mod charging;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod db;
pub mod demo;
pub mod evidence;
pub mod family;
pub mod keywords;
pub mod kiosk;
pub mod leads;
pub mod ledger;
pub mod mail;
pub mod media;
pub mod messaging;
pub mod money;
pub mod monitor;
pub mod payments;
pub mod policy;
pub mod rating;
pub mod recording;
pub mod reports;
pub mod server;
pub mod session;
pub mod sfu;
pub mod signed;
pub mod sip;
pub mod store;
pub mod text;
mod timers;
pub mod visit;
