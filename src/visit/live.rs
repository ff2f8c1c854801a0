//! The visits this node runs: one [`VisitTask`] per visit in progress, started when its
//! first page joins, and the forwarding hubs whose rooms carry them.
//!
//! Owns: the hubs (each a thread with its UDP socket), the map from a visit to its task's
//! input channel, and the routing of the hubs' room events to the task of the room.
//! Calls: `visit::task`, `sfu`, the store (the visit, its inmate, its facility's rate plan).
//! Called by: the WebSocket endpoint of the visit pages (`api::routes::visit_ws`), after the
//! page's pass was checked; the console's watch and terminate routes
//! (`api::routes::visit_watch`), after the caller was checked.
//!
//! A visit is rated with its facility plan's `local` video tariff: a visit has no
//! destination number, so the class of the visitor's phone does not apply, and `local` is
//! the plan's base class. A plan without a video tariff cannot bill a visit, and the visit
//! does not start (`no_video_rate`): free visits are a plan with a video rate of 0.

use super::task::{VisitInput, VisitSetup, VisitTask, VisitTaskError, WatchRefusal, Watching};
use crate::charging::ChargingPlan;
use crate::clock::Clock;
use crate::rating::CallClass;
use crate::session::{payer, Service, DEBIT_TIMEOUT};
use crate::sfu::{spawn_hub, HubHandle, RoomEvent, RoomId};
use crate::store::{Role, Store, StoreError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Why a page could not be attached to its visit.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the facility's rate plan has no video rate: the visit cannot be billed")]
    NoVideoRate,
    #[error("the visit could not start: {0}")]
    Task(#[from] VisitTaskError),
}

impl LiveError {
    pub fn code(&self) -> &'static str {
        match self {
            LiveError::Store(_) => "store",
            LiveError::NoVideoRate => "no_video_rate",
            LiveError::Task(VisitTaskError::AlreadyLive) => "visit_live_elsewhere",
            LiveError::Task(_) => "visit_not_started",
        }
    }
}

/// How long the API waits for a visit's task to answer a watcher's offer or removal
/// (the task gives the forwarding hub 5 s to answer).
const WATCH_WAIT: Duration = Duration::from_secs(8);

/// Why a watcher could not be let into a visit.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the visit does not run on this node")]
    NotHere,
    #[error("{0}")]
    Refused(WatchRefusal),
}

/// How this node runs visits.
#[derive(Debug, Clone)]
pub struct VisitOptions {
    pub node_id: String,
    /// Where recordings go; `None`: visits are not recorded.
    pub recordings_dir: Option<PathBuf>,
    /// A side with no media this long after the slot opens is a no-show.
    pub no_show_after: Duration,
    /// How long before the end its warning reaches both pages.
    pub warning_lead: Duration,
}

/// The visits this node runs. Cheap to clone.
#[derive(Clone)]
pub struct LiveVisits {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    /// The forwarding hubs, each a thread with its own UDP socket; a visit runs on one.
    hubs: Vec<Hub>,
    options: VisitOptions,
    /// Visit id → its task's inputs.
    visits: Mutex<HashMap<String, mpsc::Sender<VisitInput>>>,
    /// Room → its task's inputs (the hub's events are routed by room).
    rooms: Mutex<HashMap<RoomId, mpsc::Sender<VisitInput>>>,
    next_room: AtomicU64,
    /// Visits start one at a time, so two pages joining at once find one task.
    starting: tokio::sync::Mutex<()>,
}

/// One forwarding hub and how many visits it carries now.
struct Hub {
    handle: HubHandle,
    visits: AtomicUsize,
}

impl std::fmt::Debug for LiveVisits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveVisits")
            .field("hubs", &self.media_addresses())
            .finish()
    }
}

impl LiveVisits {
    /// Starts one forwarding hub on each of `sockets` (answers advertise `advertised`)
    /// and the routing of their events. Inside a tokio runtime.
    ///
    /// A hub is one thread: it carries its visits' media, DTLS and SRTP for all of them,
    /// so one hub saturates about one core (`bench/README.md`, "Visits"). A new visit goes
    /// to the hub with the fewest visits.
    pub fn start(
        store: Store,
        clock: Arc<dyn Clock>,
        sockets: Vec<UdpSocket>,
        advertised: IpAddr,
        options: VisitOptions,
    ) -> std::io::Result<LiveVisits> {
        if sockets.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "video visits need at least one media socket",
            ));
        }
        let (events_tx, mut events) = mpsc::channel::<(RoomId, RoomEvent)>(1024);
        let mut hubs = Vec::with_capacity(sockets.len());
        for socket in sockets {
            let handle = spawn_hub(socket, advertised, clock.clone(), events_tx.clone())?;
            info!(address = %handle.local(), "video visits: a forwarding hub");
            hubs.push(Hub {
                handle,
                visits: AtomicUsize::new(0),
            });
        }
        let inner = Arc::new(Inner {
            store,
            clock,
            hubs,
            options,
            visits: Mutex::new(HashMap::new()),
            rooms: Mutex::new(HashMap::new()),
            next_room: AtomicU64::new(1),
            starting: tokio::sync::Mutex::new(()),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some((room, event)) = events.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let tx = lock(&inner.rooms).get(&room).cloned();
                if let Some(tx) = tx {
                    // A task that stopped reading is ending: its events no longer matter.
                    let _ = tx.try_send(VisitInput::Room(event));
                }
            }
        });
        Ok(LiveVisits { inner })
    }

    /// The forwarding hubs' addresses (what answers advertise), one per hub.
    pub fn media_addresses(&self) -> Vec<std::net::SocketAddr> {
        self.inner.hubs.iter().map(|h| h.handle.local()).collect()
    }

    /// The input channel of `visit_id`'s task, starting the task if the visit is not
    /// running here yet.
    pub async fn attach(&self, visit_id: &str) -> Result<mpsc::Sender<VisitInput>, LiveError> {
        if let Some(tx) = self.running(visit_id) {
            return Ok(tx);
        }
        let inner = &self.inner;
        let _starting = inner.starting.lock().await;
        if let Some(tx) = self.running(visit_id) {
            return Ok(tx);
        }
        let v = inner.store.visit(visit_id).await?;
        let inmate = inner.store.inmate(&v.inmate_id).await?;
        let facility = inner.store.facility(&v.facility_id).await?;
        let plan_id = facility
            .rate_plan_id
            .clone()
            .ok_or(LiveError::NoVideoRate)?;
        let plan = inner
            .store
            .load_rate_plan(&plan_id, &facility.cap_category)
            .await?;
        let tariff = plan
            .tariff(CallClass::Local, Service::Video)
            .ok_or(LiveError::NoVideoRate)?;
        let charging = ChargingPlan::for_tariff(
            &tariff,
            Duration::ZERO, // the slot's end is the limit (visit::core)
            inner.options.warning_lead,
            DEBIT_TIMEOUT,
        );
        // The payer: the prepaid account of the family member who booked the visit, or
        // the inmate's, in the facility's order (`session::payer`).
        let family = match v.requested_role {
            Role::Family => {
                inner
                    .store
                    .family_payer(&v.requested_by, &v.facility_id)
                    .await?
            }
            _ => None,
        };
        let own = payer::Candidate {
            account_id: inmate.account_id.clone(),
            balance: inner
                .store
                .ledger()
                .balance(&inmate.account_id)
                .await
                .map_err(StoreError::from)?,
        };
        let payer = payer::choose(
            facility.payer_order,
            own,
            family,
            tariff.cost_of_increment(),
        );
        let room = inner.next_room.fetch_add(1, Ordering::Relaxed);
        let no_show = chrono::Duration::from_std(inner.options.no_show_after).unwrap_or_default();
        let setup = VisitSetup {
            visit_id: v.id.clone(),
            session_id: uuid::Uuid::now_v7().to_string(),
            facility_id: v.facility_id.clone(),
            inmate_id: v.inmate_id.clone(),
            contact_id: v.contact_id.clone(),
            account_id: payer.account_id,
            privileged: v.privileged,
            node_id: inner.options.node_id.clone(),
            recordings_dir: inner.options.recordings_dir.clone(),
            opens_at: v.starts_at,
            ends_at: v.ends_at,
            no_show_at: (v.starts_at + no_show).min(v.ends_at),
            room,
        };
        // The hub with the fewest visits (the first of those tied).
        let hub = inner
            .hubs
            .iter()
            .enumerate()
            .min_by_key(|(_, h)| h.visits.load(Ordering::Relaxed))
            .map_or(0, |(i, _)| i);
        // A task for this visit on another node is refused by the database.
        let task = VisitTask::new(
            setup,
            charging,
            inner.store.clone(),
            inner.hubs[hub].handle.clone(),
            inner.clock.clone(),
        )
        .await?;
        inner.hubs[hub].visits.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(256);
        lock(&inner.visits).insert(visit_id.to_string(), tx.clone());
        lock(&inner.rooms).insert(room, tx.clone());
        let (weak, id) = (Arc::downgrade(inner), visit_id.to_string());
        tokio::spawn(async move {
            let summary = task.run(rx).await;
            info!(visit = %id, reason = summary.reason.as_str(), increments = summary.increments,
                charged = %summary.charged, "visit task ended");
            if let Some(inner) = weak.upgrade() {
                inner.hubs[hub].visits.fetch_sub(1, Ordering::Relaxed);
                lock(&inner.rooms).remove(&room);
                let mut visits = lock(&inner.visits);
                if visits.get(&id).is_some_and(|t| t.is_closed()) {
                    visits.remove(&id);
                }
            }
        });
        Ok(tx)
    }

    /// Whether `visit_id` is running on this node.
    pub fn contains(&self, visit_id: &str) -> bool {
        self.running(visit_id).is_some()
    }

    /// Lets an investigator's receive-only peer into a visit running here.
    pub async fn watch(&self, visit_id: &str, sdp: String) -> Result<Watching, WatchError> {
        let tx = self.running(visit_id).ok_or(WatchError::NotHere)?;
        let (done, answer) = oneshot::channel();
        tx.send(VisitInput::Watch { sdp, done })
            .await
            .map_err(|_| WatchError::Refused(WatchRefusal::Ended))?;
        // A task that ends before answering drops `done`.
        match tokio::time::timeout(WATCH_WAIT, answer).await {
            Ok(Ok(r)) => r.map_err(WatchError::Refused),
            Ok(Err(_)) => Err(WatchError::Refused(WatchRefusal::Ended)),
            Err(_) => Err(WatchError::Refused(WatchRefusal::Timeout)),
        }
    }

    /// Removes a watcher of a visit running here; false when there is no such watcher
    /// (or no such visit) here.
    pub async fn unwatch(&self, visit_id: &str, watcher_id: &str) -> bool {
        let Some(tx) = self.running(visit_id) else {
            return false;
        };
        let (done, had) = oneshot::channel();
        let input = VisitInput::Unwatch {
            watcher_id: watcher_id.to_string(),
            done,
        };
        if tx.send(input).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(WATCH_WAIT, had).await, Ok(Ok(true)))
    }

    /// Ends a visit running here (reason `terminated`) and waits up to `wait` for its
    /// end (its session closed). False when the visit does not run here.
    pub async fn terminate(&self, visit_id: &str, wait: Duration) -> bool {
        let Some(tx) = self.running(visit_id) else {
            return false;
        };
        let (done, over) = oneshot::channel();
        if tx.send(VisitInput::Terminate { done }).await.is_err() {
            return true; // it is ending already
        }
        let _ = tokio::time::timeout(wait, over).await;
        true
    }

    /// How many visits run on this node now (a drain waits for none).
    pub fn running_count(&self) -> usize {
        lock(&self.inner.visits)
            .values()
            .filter(|t| !t.is_closed())
            .count()
    }

    fn running(&self, visit_id: &str) -> Option<mpsc::Sender<VisitInput>> {
        lock(&self.inner.visits)
            .get(visit_id)
            .filter(|t| !t.is_closed())
            .cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| {
        warn!("a visit registry lock was poisoned; going on with its data");
        e.into_inner()
    })
}
