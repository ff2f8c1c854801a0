//! The dialogs the endpoint has seen established, so that their in-dialog
//! requests pass flood control (RFC 3261 §12 dialog identity: Call-ID, local
//! tag, remote tag).
//!
//! A dialog enters when a 2xx to an INVITE passes through the endpoint: one
//! we send (we are its UAS) or one we receive (we are its UAC). It starts to
//! end when a BYE in it is sent or received, and is forgotten 32 s (64·T1)
//! later, so a BYE crossing ours or a retransmitted request still passes. A
//! dialog that never sees a BYE is forgotten [`MAX_AGE`] after it began: no
//! call lasts that long (plans cap a call's duration), and forgetting it
//! only means its requests are counted again like anyone's. The table is
//! bounded by [`MAX_DIALOGS`]; past it new dialogs simply are not exempt.
//!
//! A request matches only with its Call-ID *and* both tags, which only the
//! parties of the dialog know: a To tag alone buys nothing.
//!
//! Being a party is no licence to flood: each dialog has its own budget of
//! [`DIALOG_RATE`] requests a second (burst [`DIALOG_BURST`]) past flood
//! control, ample for INFO digits and re-INVITEs; past it a dialog's requests
//! are counted like anyone's. Only its BYE is never counted, so a call can
//! always be hung up.

use super::ConnId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most dialogs remembered at once.
pub(super) const MAX_DIALOGS: usize = 65_536;
/// A dialog with no BYE is forgotten this long after it began.
pub(super) const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long an ended dialog still matches (64·T1).
pub(super) const LINGER: Duration = Duration::from_secs(32);
/// Requests a second a live dialog may send past flood control (BYE aside) ...
pub(super) const DIALOG_RATE: f64 = 10.0;
/// ... and how many at once.
pub(super) const DIALOG_BURST: f64 = 20.0;

#[derive(Debug, Clone)]
struct Entry {
    local_tag: String,
    remote_tag: String,
    /// The TCP connection the dialog's INVITE came on or went out on.
    conn: Option<ConnId>,
    /// When this entry stops matching.
    expires: Instant,
    /// A BYE was seen.
    ending: bool,
    /// The dialog's budget (see the module doc): tokens left, as of `refilled`.
    tokens: f64,
    refilled: Instant,
}

/// Live dialogs by Call-ID (see the module doc).
#[derive(Debug, Default)]
pub struct LiveDialogs {
    by_call_id: HashMap<String, Vec<Entry>>,
    len: usize,
    /// Sweep expired entries when `len` reaches this (amortised O(1)).
    next_sweep: usize,
}

impl LiveDialogs {
    /// A 2xx to an INVITE established (or confirmed) this dialog.
    pub fn established(
        &mut self,
        now: Instant,
        call_id: &str,
        local_tag: &str,
        remote_tag: &str,
        conn: Option<ConnId>,
    ) {
        if let Some(e) = self.find_mut(call_id, local_tag, remote_tag) {
            if !e.ending {
                return; // a re-INVITE's 2xx, or a retransmission
            }
        }
        if self.len >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = (self.len * 2).max(1024);
        }
        if self.len >= MAX_DIALOGS {
            return;
        }
        self.remove(call_id, local_tag, remote_tag);
        self.by_call_id
            .entry(call_id.to_owned())
            .or_default()
            .push(Entry {
                local_tag: local_tag.to_owned(),
                remote_tag: remote_tag.to_owned(),
                conn,
                expires: now + MAX_AGE,
                ending: false,
                tokens: DIALOG_BURST,
                refilled: now,
            });
        self.len += 1;
    }

    /// A BYE in this dialog was sent or received: it matches for `LINGER` (32 s) more.
    pub fn ending(&mut self, now: Instant, call_id: &str, local_tag: &str, remote_tag: &str) {
        if let Some(e) = self.find_mut(call_id, local_tag, remote_tag) {
            if !e.ending {
                e.ending = true;
                e.expires = e.expires.min(now + LINGER);
            }
        }
    }

    /// True when the dialog is live at `now`.
    pub fn is_live(&self, now: Instant, call_id: &str, local_tag: &str, remote_tag: &str) -> bool {
        self.by_call_id.get(call_id).is_some_and(|v| {
            v.iter()
                .any(|e| e.local_tag == local_tag && e.remote_tag == remote_tag && e.expires > now)
        })
    }

    /// A request of this dialog at `now`: true when the dialog is live and, unless the
    /// request is `free` (a BYE), its budget has room (which it spends).
    pub fn admit(
        &mut self,
        now: Instant,
        call_id: &str,
        local_tag: &str,
        remote_tag: &str,
        free: bool,
    ) -> bool {
        let Some(e) = self.find_mut(call_id, local_tag, remote_tag) else {
            return false;
        };
        if e.expires <= now {
            return false;
        }
        if free {
            return true;
        }
        let elapsed = now.saturating_duration_since(e.refilled).as_secs_f64();
        e.tokens = (e.tokens + elapsed * DIALOG_RATE).min(DIALOG_BURST);
        e.refilled = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when some Call-ID entry exists (a cheap first filter).
    pub fn knows_call_id(&self, call_id: &str) -> bool {
        self.by_call_id.contains_key(call_id)
    }

    /// True when a live dialog was set up over connection `conn`.
    pub fn uses_conn(&self, now: Instant, conn: ConnId) -> bool {
        self.by_call_id
            .values()
            .flatten()
            .any(|e| e.conn == Some(conn) && e.expires > now)
    }

    /// Dialogs remembered (live or not yet swept).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no dialog is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every entry expired at `now`.
    pub fn sweep(&mut self, now: Instant) {
        let mut len = 0;
        self.by_call_id.retain(|_, v| {
            v.retain(|e| e.expires > now);
            len += v.len();
            !v.is_empty()
        });
        self.len = len;
    }

    fn find_mut(&mut self, call_id: &str, local: &str, remote: &str) -> Option<&mut Entry> {
        self.by_call_id
            .get_mut(call_id)?
            .iter_mut()
            .find(|e| e.local_tag == local && e.remote_tag == remote)
    }

    fn remove(&mut self, call_id: &str, local: &str, remote: &str) {
        let Some(v) = self.by_call_id.get_mut(call_id) else {
            return;
        };
        let before = v.len();
        v.retain(|e| !(e.local_tag == local && e.remote_tag == remote));
        self.len -= before - v.len();
        if v.is_empty() {
            self.by_call_id.remove(call_id);
        }
    }
}
