//! The calls this node carries right now, by session id: how the API reaches a call task
//! to terminate it or attach a live listener, and how shutdown ends every call cleanly.
//!
//! Only a handle per call lives here (a channel sender); the call's state stays in its own
//! task. What must be shared across nodes — that a session is live, its charges — is in
//! the database; this registry only knows the calls of this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::media::engine::Tap;

/// What a call task can be told from outside the SIP and media paths.
#[derive(Debug)]
pub enum Control {
    /// An investigator or operator ends the call (reason `terminated`); `done` is told
    /// once the CDR is closed.
    Terminate { done: Option<oneshot::Sender<()>> },
    /// The inmate was released: end the call at once (reason `released`); `done` is told
    /// once the CDR is closed.
    Release { done: Option<oneshot::Sender<()>> },
    /// The gateway is shutting down: end the call (reason `system`).
    Shutdown { done: Option<oneshot::Sender<()>> },
    /// A live listener wants the call's audio: attach `tap` to the call's media unless
    /// the call may not be listened to.
    Listen {
        tap: Tap,
        reply: oneshot::Sender<Result<(), ListenRefusal>>,
    },
}

/// Why a call task refused a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListenRefusal {
    /// Attorney calls and the like are never monitored.
    #[error("the call is privileged")]
    Privileged,
    /// Not accepted and bridged yet, or already ending.
    #[error("the call is not connected")]
    NotConnected,
}

/// Why a listen request could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error("no such call on this node")]
    NotHere,
    #[error("the call has ended")]
    AlreadyEnded,
    #[error(transparent)]
    Refused(#[from] ListenRefusal),
}

/// Why a terminate could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateError {
    /// No call with this session id on this node.
    NotHere,
    /// The call ended before it heard the request.
    AlreadyEnded,
}

/// Handles of the live calls of this node.
#[derive(Clone, Default)]
pub struct LiveCalls {
    inner: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>>,
}

impl std::fmt::Debug for LiveCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCalls")
            .field("calls", &self.len())
            .finish()
    }
}

impl LiveCalls {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Control>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a call; the receiver is the call task's control input.
    pub fn register(&self, session_id: &str) -> mpsc::UnboundedReceiver<Control> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.map().insert(session_id.to_string(), tx);
        rx
    }

    /// Removes a call (its task is ending).
    pub fn remove(&self, session_id: &str) {
        self.map().remove(session_id);
    }

    /// Calls carried now.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this node carries the session.
    pub fn contains(&self, session_id: &str) -> bool {
        self.map().contains_key(session_id)
    }

    /// Asks the call to end (reason `terminated`) and waits up to `wait` for its CDR to
    /// be closed.
    pub async fn terminate(&self, session_id: &str, wait: Duration) -> Result<(), TerminateError> {
        self.end(session_id, wait, |done| Control::Terminate { done })
            .await
    }

    /// Asks the call to end because its inmate is being released (reason `released`) and
    /// waits up to `wait` for its CDR to be closed.
    pub async fn release(&self, session_id: &str, wait: Duration) -> Result<(), TerminateError> {
        self.end(session_id, wait, |done| Control::Release { done })
            .await
    }

    async fn end(
        &self,
        session_id: &str,
        wait: Duration,
        control: impl FnOnce(Option<oneshot::Sender<()>>) -> Control,
    ) -> Result<(), TerminateError> {
        let tx = self
            .map()
            .get(session_id)
            .cloned()
            .ok_or(TerminateError::NotHere)?;
        let (done, rx) = oneshot::channel();
        tx.send(control(Some(done)))
            .map_err(|_| TerminateError::AlreadyEnded)?;
        // A call that ends on its own meanwhile drops `done`: it ended either way.
        let _ = tokio::time::timeout(wait, rx).await;
        Ok(())
    }

    /// Asks the call to attach a listener's tap; the call task decides (see [`Control::Listen`]).
    pub async fn listen(&self, session_id: &str, tap: Tap) -> Result<(), ListenError> {
        let tx = self
            .map()
            .get(session_id)
            .cloned()
            .ok_or(ListenError::NotHere)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Control::Listen { tap, reply })
            .map_err(|_| ListenError::AlreadyEnded)?;
        match rx.await {
            Ok(r) => r.map_err(ListenError::from),
            Err(_) => Err(ListenError::AlreadyEnded),
        }
    }

    /// Ends every call (reason `system`) and waits up to `wait` for their CDRs.
    pub async fn shutdown(&self, wait: Duration) {
        let senders: Vec<_> = self.map().values().cloned().collect();
        let mut waits = Vec::with_capacity(senders.len());
        for tx in senders {
            let (done, rx) = oneshot::channel();
            if tx.send(Control::Shutdown { done: Some(done) }).is_ok() {
                waits.push(rx);
            }
        }
        let all = async {
            for rx in waits {
                let _ = rx.await;
            }
        };
        let _ = tokio::time::timeout(wait, all).await;
    }
}
