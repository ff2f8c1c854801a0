//! The session runner: a session's database work, carried out beside the task that drives
//! the session, one item at a time, in the order it was asked, with each result handed
//! back as an input.
//!
//! # Why
//!
//! A session's driver (the call task, next the visit task) selects over its signalling,
//! its control input (terminate, listen, shutdown), its media events and the core's next
//! timeout. If it awaited a debit inline, a database that stalls — a row lock held by
//! another connection, a pool with no free connection — would stop that loop: the charging
//! core's `DebitTimeout` could not fire, and a BYE or a terminate would wait behind the
//! database. So the driver never awaits the database: it [`Runner::submit`]s the work and
//! goes on; the loop polls [`Runner::next_done`] as one more input; the result is fed to the
//! core like any other event.
//!
//! # Order
//!
//! Items run one after another, never two at once, in submission order, so a session's
//! writes land as the core decided them: the cut ([`SessionDb::media_ended`]) before the
//! close, a debit before the CDR that counts it, the close after every debit already in
//! flight (the CDR's charges are read from the ledger, so a debit that commits late is
//! still in the CDR). A stalled item delays the ones behind it, never the driver.
//!
//! # Cancel safety
//!
//! [`Runner::next_done`] keeps the running item inside the runner: a `select!` that takes
//! another branch drops only the `next` future, never the work, which resumes at the next
//! poll.

use super::cdr::{self, CallEnd, SessionEnd};
use super::{EndReason, Service};
use crate::db::to_micros;
use crate::ledger::{DebitOutcome, LedgerError, SessionDebit};
use crate::money::Money;
use crate::recording::{self, Capture, Closing, Recorder, RecordingError};
use crate::store::{FinishedRecording, NewRecording, Recording, Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::{info, warn};

type Job<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A queue of a session's work, run in order (module doc).
pub struct Runner<T> {
    current: Option<Job<T>>,
    queue: VecDeque<Job<T>>,
}

impl<T> Default for Runner<T> {
    fn default() -> Self {
        Runner {
            current: None,
            queue: VecDeque::new(),
        }
    }
}

impl<T> std::fmt::Debug for Runner<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("running", &self.current.is_some())
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl<T> Runner<T> {
    pub fn new() -> Runner<T> {
        Runner::default()
    }

    /// Queues `job`; it starts when every item submitted before it has finished.
    pub fn submit(&mut self, job: impl Future<Output = T> + Send + 'static) {
        self.queue.push_back(Box::pin(job));
    }

    /// Whether nothing is running or queued.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    /// Items running or queued.
    pub fn len(&self) -> usize {
        self.queue.len() + usize::from(self.current.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.is_idle()
    }

    /// Drives the running item (starting the next queued one if none runs): `Ready` with
    /// its result when it finishes, `Pending` while it runs — or forever while the runner
    /// is idle (guard the `select!` branch with `!is_idle()`).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        if self.current.is_none() {
            self.current = self.queue.pop_front();
        }
        let Some(job) = self.current.as_mut() else {
            return Poll::Pending;
        };
        match job.as_mut().poll(cx) {
            Poll::Ready(out) => {
                self.current = None;
                Poll::Ready(out)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next finished item's result (cancel-safe: module doc).
    pub fn next_done(&mut self) -> impl Future<Output = T> + '_ {
        std::future::poll_fn(move |cx| self.poll_next(cx))
    }
}

/// What a session's database work came to: the inputs its driver feeds back to its core.
#[derive(Debug)]
pub enum SessionDone {
    /// The ledger's answer to an increment's debit.
    Debited {
        increment: u32,
        amount: Money,
        result: Result<DebitOutcome, LedgerError>,
    },
    /// The paying account's balance for the funds warning (`None`: unreadable).
    BalanceRead {
        after_increment: u32,
        balance: Option<Money>,
    },
    /// A free increment was counted on the session; `Ok(false)`: the account is closed
    /// (the inmate was released).
    IncrementCounted {
        increment: u32,
        result: Result<bool, StoreError>,
    },
    /// The recording's file is open and its row registered: attach `tap` to the media.
    RecordingStarted(Box<StartedRecording>),
    /// The recording could not be started (logged; the file, if any, was removed): the
    /// session goes on unrecorded.
    RecordingFailed,
    /// A write whose failure only costs a detail (progress for live views, the cut's
    /// mark that the close writes again): already logged.
    Noted,
    /// The CDR is closed (or could not be, after retries: logged, and the node's next
    /// start closes it) and the recording finished.
    Closed,
}

/// A recording begun and registered (see [`SessionDb::start_recording`]).
#[derive(Debug)]
pub struct StartedRecording {
    pub id: String,
    pub capture: Capture,
    pub tap: crate::media::engine::Tap,
    pub started_at: DateTime<Utc>,
}

/// A session's recording after its end, while the recorder closes the file.
#[derive(Debug)]
pub struct FinishingRecording {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub closing: Closing,
}

/// How a session ended, owned, for [`SessionDb::close`] (the CDR's times are wall-clock).
#[derive(Debug, Clone)]
pub struct Closure {
    pub reason: EndReason,
    pub inmate_id: Option<String>,
    pub number_e164: Option<String>,
    pub privileged: bool,
    pub recorded: bool,
    pub answer_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub end_at: DateTime<Utc>,
    pub media_end_at: Option<DateTime<Utc>>,
    pub counted_increments: u32,
    pub charged: Money,
    /// Time billing was paused (a visit's side dropped out); `None` for calls.
    pub paused: Option<Duration>,
}

/// How often a close (CDR, recording) is tried before it is left to the next start.
const CLOSE_ATTEMPTS: u32 = 3;

/// One session's handle on the database: builds the work a [`Runner`] carries out. Cheap
/// to clone (what it holds is shared).
#[derive(Clone)]
pub struct SessionDb {
    store: Store,
    session_id: Arc<str>,
    facility_id: Arc<str>,
    service: Service,
    /// The acceptance time a recording start wrote with its row (Unix µs; `NONE`: not
    /// written), so the acceptance's own progress write can be left out.
    accepted_written: Arc<AtomicI64>,
}

/// [`SessionDb::accepted_written`] before anything was written.
const NONE: i64 = i64::MIN;

impl SessionDb {
    pub fn new(store: Store, session_id: &str, facility_id: &str, service: Service) -> SessionDb {
        SessionDb {
            store,
            session_id: session_id.into(),
            facility_id: facility_id.into(),
            service,
            accepted_written: Arc::new(AtomicI64::new(NONE)),
        }
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// What the session is charged as.
    pub fn service(&self) -> Service {
        self.service
    }

    /// Debits increment `increment` of `amount` from `account_id` (idempotent per session
    /// and increment).
    pub fn debit(
        &self,
        account_id: String,
        increment: u32,
        amount: Money,
    ) -> impl Future<Output = SessionDone> + Send + 'static {
        let (store, debit) = (
            self.store.clone(),
            SessionDebit {
                session_id: self.session_id.to_string(),
                increment,
                account_id,
                amount,
                service: self.service,
                facility_id: self.facility_id.to_string(),
            },
        );
        async move {
            let result = store.ledger().debit_session(debit).await;
            SessionDone::Debited {
                increment,
                amount,
                result,
            }
        }
    }

    /// Reads the paying account's balance (the funds warning re-checks it before it plays).
    pub fn check_balance(
        &self,
        account_id: Option<String>,
        after_increment: u32,
    ) -> impl Future<Output = SessionDone> + Send + 'static {
        let store = self.store.clone();
        async move {
            let balance = match account_id {
                Some(account) => match store.ledger().balance(&account).await {
                    Ok(b) => Some(b),
                    Err(e) => {
                        warn!(error = %e, "cannot read the balance for the funds warning");
                        None
                    }
                },
                None => None,
            };
            SessionDone::BalanceRead {
                after_increment,
                balance,
            }
        }
    }

    /// Counts a free increment on the session (the CDR's billed increments).
    pub fn count_increment(&self, increment: u32) -> impl Future<Output = SessionDone> + Send {
        let (store, id) = (self.store.clone(), self.session_id.clone());
        async move {
            let result = cdr::count_increment(store.db(), &id, increment)
                .await
                .map_err(StoreError::from);
            SessionDone::IncrementCounted { increment, result }
        }
    }

    /// Appends to the session's timeline (a visit's joins, drops and pauses); a failed
    /// write only costs the entry (logged).
    pub fn event(
        &self,
        at: DateTime<Utc>,
        kind: cdr::SessionEventKind,
        side: &'static str,
    ) -> impl Future<Output = SessionDone> + Send {
        let (store, id) = (self.store.clone(), self.session_id.clone());
        async move {
            if let Err(e) = cdr::add_event(store.db(), &id, at, kind, side).await {
                warn!(error = %e, kind = kind.as_str(), side, "cannot write the session's event");
            }
            SessionDone::Noted
        }
    }

    /// Appends to a call's timeline (a PIN entry's outcome, the checks' verdict, the
    /// announcement, a warning: [`super::timeline`]); a failed write only costs the entry
    /// (logged).
    pub fn call_events(
        &self,
        events: Vec<super::timeline::PendingEvent>,
    ) -> impl Future<Output = SessionDone> + Send {
        let (store, id) = (self.store.clone(), self.session_id.clone());
        async move {
            if let Err(e) = super::timeline::add_call_events(store.db(), &id, &events).await {
                warn!(error = %e, events = events.len(), "cannot write the call's events");
            }
            SessionDone::Noted
        }
    }

    /// Marks the cut on the live session: reason and media end (`cdr` module doc, "A cut
    /// before a crash").
    pub fn media_ended(
        &self,
        reason: EndReason,
        at: DateTime<Utc>,
    ) -> impl Future<Output = SessionDone> + Send {
        let (store, id) = (self.store.clone(), self.session_id.clone());
        async move {
            match cdr::record_media_end(store.db(), &id, reason.as_str(), at).await {
                Ok(()) => tracing::debug!(reason = reason.as_str(), "media end recorded"),
                Err(e) => {
                    warn!(error = %e, reason = reason.as_str(), "cannot record the media end")
                }
            }
            SessionDone::Noted
        }
    }

    /// Records how far the live session got (for live views). An acceptance that the
    /// recording's start already wrote is not written again: the call core asks for the
    /// recording first, at the acceptance, and the recording's row carries that moment
    /// into the session in its own commit (this write's time would be the driver's
    /// clock read a few µs later, and the close writes the core's acceptance anyway).
    pub fn progress(
        &self,
        answer_at: Option<DateTime<Utc>>,
        accepted_at: Option<DateTime<Utc>>,
    ) -> impl Future<Output = SessionDone> + Send {
        let (store, id) = (self.store.clone(), self.session_id.clone());
        let written = self.accepted_written.clone();
        async move {
            // Read when the job runs: the recording's start ran before it (runner order).
            let done = written.load(Ordering::Acquire) != NONE;
            if answer_at.is_none() && accepted_at.is_some() && done {
                return SessionDone::Noted;
            }
            let p = cdr::Progress {
                answer_at,
                accepted_at,
                ..Default::default()
            };
            if let Err(e) = cdr::progress(store.db(), &id, &p).await {
                warn!(error = %e, "cannot record the session's progress");
            }
            SessionDone::Noted
        }
    }

    /// Opens the recording's file on the recorder and registers its row (marking the
    /// session recorded); a row that cannot be written undoes the file (no file without a
    /// row). `start` is the acceptance on the media workers' clock.
    pub fn start_recording(
        &self,
        recorder: Recorder,
        law: crate::media::g711::Law,
        started_at: DateTime<Utc>,
        start: Instant,
        node_id: String,
    ) -> impl Future<Output = SessionDone> + Send {
        let (store, id, facility) = (
            self.store.clone(),
            self.session_id.clone(),
            self.facility_id.clone(),
        );
        let written = self.accepted_written.clone();
        async move {
            let relative = recording::relative_path(
                &id,
                recording::MediaKind::CallAudio,
                recording::Participant::Both,
                started_at,
            );
            let (capture, tap) = match recorder.begin(relative, law, start).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the recording");
                    return SessionDone::RecordingFailed;
                }
            };
            let row = NewRecording {
                session_id: &id,
                facility_id: &facility,
                path: &capture.relative_path,
                format: recording::wav::format_name(law),
                node_id: &node_id,
                started_at,
            };
            match store.start_recording_accepted(row, Some(started_at)).await {
                Ok(rec) => {
                    written.store(to_micros(started_at), Ordering::Release);
                    SessionDone::RecordingStarted(Box::new(StartedRecording {
                        id: rec,
                        capture,
                        tap,
                        started_at,
                    }))
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot register the recording");
                    abandon_recording(&recorder, capture).await;
                    SessionDone::RecordingFailed
                }
            }
        }
    }

    /// Closes the CDR, then waits for the recording's file, hashes and chains it. Each is
    /// retried; what still fails stays open and this node's next start closes it.
    pub fn close(
        &self,
        c: Closure,
        recording: Option<FinishingRecording>,
    ) -> impl Future<Output = SessionDone> + Send {
        let (store, id) = (self.store.clone(), self.session_id.clone());
        async move {
            let closed_at = store.clock().wall();
            close_cdr(&store, &id, &c, closed_at).await;
            if let Some(r) = recording {
                finish_recording(&store, r).await;
            }
            SessionDone::Closed
        }
    }
}

async fn close_cdr(store: &Store, id: &str, c: &Closure, closed_at: DateTime<Utc>) {
    let end = SessionEnd {
        reason: c.reason.as_str(),
        inmate_id: c.inmate_id.as_deref(),
        number_e164: c.number_e164.as_deref(),
        privileged: c.privileged,
        recorded: c.recorded,
        answer_at: c.answer_at,
        accepted_at: c.accepted_at,
        end_at: c.end_at,
    };
    let call = CallEnd {
        media_end_at: c.media_end_at,
        counted_increments: c.counted_increments,
        closed_at: Some(closed_at),
        paused: c.paused,
    };
    for attempt in 0..CLOSE_ATTEMPTS {
        match cdr::close_with(store.db(), id, &end, &call).await {
            Ok(_) => {
                return info!(
                    reason = c.reason.as_str(),
                    increments = c.counted_increments,
                    charged = %c.charged,
                    "session ended"
                );
            }
            Err(e) => {
                warn!(error = %e, attempt, "cannot close the session");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}

/// Waits for the file, hashes it and chains it.
async fn finish_recording(store: &Store, r: FinishingRecording) {
    let file = match r.closing.finish().await {
        Ok(f) => f,
        Err(e) => {
            return tracing::error!(recording = %r.id, error = %e, "cannot close the recording");
        }
    };
    if file.closed.dropped > 0 || file.closed.write_failed {
        warn!(recording = %r.id, dropped = file.closed.dropped,
            write_failed = file.closed.write_failed, "recording lost audio");
    }
    let finished: FinishedRecording = file.finished(r.started_at, true);
    for attempt in 0..CLOSE_ATTEMPTS {
        match store.finish_recording(&r.id, &finished).await {
            Ok(rec) => return finished_log(&rec),
            Err(e) => {
                warn!(recording = %r.id, error = %e, attempt, "cannot finish the recording");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}

fn finished_log(rec: &Recording) {
    info!(recording = %rec.id, sha256 = ?rec.sha256, bytes = ?rec.bytes,
        status = rec.status.as_str(), "recording finished");
}

/// Undoes a recording that could not be registered: the recorder closes the file, which
/// is then removed (a file without a row would be an unexplained `added` file).
async fn abandon_recording(recorder: &Recorder, capture: Capture) {
    let path = recorder.dir().join(&capture.relative_path);
    let _: Result<_, RecordingError> = recorder.close(capture, Instant::now()).finish().await; // clock-ok
    if let Err(e) = tokio::fs::remove_file(&path).await {
        warn!(path = %path.display(), error = %e, "cannot remove an abandoned recording file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn items_run_one_at_a_time_in_order() {
        let running = Arc::new(AtomicUsize::new(0));
        let mut r: Runner<u32> = Runner::new();
        let (release, held) = oneshot::channel::<()>();
        let mut held = Some(held);
        for i in 0..3u32 {
            let running = running.clone();
            let wait = held.take();
            r.submit(async move {
                assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "one at a time");
                if let Some(h) = wait {
                    let _ = h.await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                i
            });
        }
        assert_eq!(r.len(), 3);
        // The first item is stalled: `next` stays pending, and dropping it (a select
        // taking another branch) loses nothing.
        let stalled = tokio::time::timeout(Duration::from_millis(20), r.next_done()).await;
        assert!(stalled.is_err());
        assert_eq!(r.len(), 3, "the running item is kept");
        release.send(()).unwrap();
        assert_eq!(r.next_done().await, 0);
        assert_eq!(r.next_done().await, 1);
        assert_eq!(r.next_done().await, 2);
        assert!(r.is_idle());
        let idle = tokio::time::timeout(Duration::from_millis(5), r.next_done()).await;
        assert!(idle.is_err(), "an idle runner never finishes anything");
    }
}
