//! A node that dies mid-call does not strand its calls: a surviving node closes them.
//!
//! # When a node is dead
//!
//! Every node writes its heartbeat into `nodes` every `cluster.heartbeat_secs`
//! ([`super::heartbeat`]). A node whose last heartbeat is older than
//! `cluster.dead_after_secs` is dead ([`dead_nodes`], a pure function of the rows, the
//! time and the timeout). Every node looks every heartbeat period ([`spawn`]); the first
//! to see a dead node that left work open takes it over ([`take_over`]):
//!
//! 1. its recordings in progress whose files this node reaches (one `recording.dir` on
//!    shared storage) are repaired, hashed and chained `incomplete`, as the dead node's
//!    own restart would ([`crate::recording::recover_for_dead_node`]); a file it does not
//!    find is left for that restart;
//! 2. its `active` sessions are closed as the node's restart would close them
//!    ([`crate::session::cdr::close_dead_node_sessions`]): reason `system` (or the
//!    reason of a cut already recorded), charges exactly as the ledger committed them,
//!    ended when last known alive;
//! 3. each closed session is audited (`session.takeover`, naming the dead node and this
//!    one), so an investigator sees who closed it and why.
//!
//! Closing is race-safe without a lock or a claim row: each session is closed by one
//! conditional `UPDATE … WHERE state = 'active' AND` (its node's heartbeat still stale),
//! so of two survivors, or a survivor and the node's own restart, exactly one closes a
//! session and only that one audits it; a node that came back in the meantime (its
//! heartbeat fresh again) keeps its calls. A recording is finished once the same way
//! (a second finish is a conflict, taken as "already done").
//!
//! Once its sessions are closed, the one-live-call rule lets the inmate call again from
//! any node, and a terminate or listen sent to any node about such a session gets the
//! closed-session answer (409 `call_ended`).
//!
//! # Clocks
//!
//! Heartbeats are written with each node's wall clock and judged with the judge's: the
//! nodes' clocks must agree to well within `cluster.dead_after_secs` (NTP), as they must
//! already for the inter-node credential. A node cut off from the database long enough
//! to be presumed dead ends its own calls (see [`super::heartbeat`]), so a survivor's
//! takeover and the node's own calls do not both go on.
//!
//! # Counted
//!
//! What this node took over since it started is in `/metrics` ([`TakeoverStats`]):
//! `sallyport_takeover_nodes_total` (dead nodes it found with work left open and took
//! over), `sallyport_takeover_sessions_total` (sessions it closed for them) and
//! `sallyport_takeover_recordings_total`. A takeover that lost the race for every
//! session to another survivor closed nothing and counts nothing.
//!
//! Owns: the takeover decision and its driver. Calls: the store, the session and
//! recording recoveries. Called by: [`crate::server`].

use crate::call::checks::SYSTEM_ACTOR;
use crate::money::Money;
use crate::session::cdr::{self, ClosedOrphan};
use crate::store::{AuditEntry, NodeRecord, Store, StoreError};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What this process took over since it started (one process is one node). Process-wide,
/// as both the periodic look ([`spawn`]) and a terminate or listen forwarded to a dead
/// node ([`super::Cluster`]) take over.
#[derive(Debug, Default)]
pub struct TakeoverStats {
    nodes: AtomicU64,
    sessions: AtomicU64,
    recordings: AtomicU64,
}

/// This process's takeovers.
pub static TAKEOVERS: TakeoverStats = TakeoverStats {
    nodes: AtomicU64::new(0),
    sessions: AtomicU64::new(0),
    recordings: AtomicU64::new(0),
};

impl TakeoverStats {
    fn record(&self, t: &Takeover) {
        if t.sessions.is_empty() && t.recordings == 0 {
            return;
        }
        self.nodes.fetch_add(1, Ordering::Relaxed);
        self.sessions
            .fetch_add(t.sessions.len() as u64, Ordering::Relaxed);
        self.recordings
            .fetch_add(t.recordings as u64, Ordering::Relaxed);
    }

    /// (dead nodes taken over, sessions closed, recordings finished).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.nodes.load(Ordering::Relaxed),
            self.sessions.load(Ordering::Relaxed),
            self.recordings.load(Ordering::Relaxed),
        )
    }
}

/// Why a takeover stopped short (it is tried again at the next look).
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("reading or closing a dead node's sessions: {0}")]
    Sessions(#[from] sqlx::Error),
    #[error("closing a dead node's recordings: {0}")]
    Recordings(#[from] crate::recording::RecordingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The nodes to take over: every node but `me` that left work open (`open_work`, the
/// ids of nodes with open sessions or recordings) and whose last heartbeat is older than
/// `now - dead_after`. A node with open work that never registered (no row) is not
/// judged: nothing says when it was last alive.
pub fn dead_nodes<'a>(
    nodes: &'a [NodeRecord],
    open_work: &[String],
    me: &str,
    now: DateTime<Utc>,
    dead_after: Duration,
) -> Vec<&'a NodeRecord> {
    let Some(cutoff) = cutoff(now, dead_after) else {
        return Vec::new();
    };
    nodes
        .iter()
        .filter(|n| n.id != me && n.heartbeat_at < cutoff)
        .filter(|n| open_work.contains(&n.id))
        .collect()
}

/// The heartbeat time before which a node is dead, judged at `now`.
pub fn cutoff(now: DateTime<Utc>, dead_after: Duration) -> Option<DateTime<Utc>> {
    let d = chrono::Duration::from_std(dead_after).ok()?;
    now.checked_sub_signed(d)
}

/// What one takeover did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Takeover {
    /// The sessions this node closed (another closer's are not here).
    pub sessions: Vec<ClosedOrphan>,
    /// Recordings finished `incomplete`.
    pub recordings: usize,
}

/// Takes over node `dead` (its heartbeat older than `silent_before`) for node `me`:
/// its reachable recordings finished, its open sessions closed and audited (module doc).
pub async fn take_over(
    store: &Store,
    recordings_dir: &std::path::Path,
    me: &str,
    dead: &str,
    silent_before: DateTime<Utc>,
) -> Result<Takeover, TakeoverError> {
    // Recordings first: a session ends where its repaired recording ends, when that is
    // its last sign of life (as at a restart).
    let recordings = crate::recording::recover_for_dead_node(store, recordings_dir, dead).await?;
    let now = store.clock().wall();
    let sessions = cdr::close_dead_node_sessions(store.db(), dead, silent_before, now).await?;
    for s in &sessions {
        audit(store, me, dead, silent_before, s).await;
    }
    if !sessions.is_empty() || recordings > 0 {
        tracing::warn!(
            node = dead,
            sessions = sessions.len(),
            recordings,
            "took over a dead node: its open sessions closed (reason system), its \
             recordings finished as incomplete"
        );
    }
    let done = Takeover {
        sessions,
        recordings,
    };
    TAKEOVERS.record(&done);
    Ok(done)
}

/// The audit entry of a session closed by a takeover; a failure to write it is logged
/// (the session is closed either way).
async fn audit(
    store: &Store,
    me: &str,
    dead: &str,
    silent_before: DateTime<Utc>,
    s: &ClosedOrphan,
) {
    let detail = serde_json::json!({
        "node": dead,
        "closed_by": me,
        "silent_before": silent_before,
        "reason": s.reason,
        "billed_increments": s.increments,
        "amount": Money::from_minor(s.amount_minor),
    });
    let e = AuditEntry {
        actor: SYSTEM_ACTOR,
        action: "session.takeover",
        target: &s.id,
        facility_id: Some(&s.facility_id),
        detail,
        remote_addr: None,
    };
    if let Err(err) = store.audit(e).await {
        tracing::error!(error = %err, session = %s.id, "audit write failed");
    }
}

/// One look: the dead nodes that left work open, each taken over. Returns what was
/// closed, by node.
pub async fn look(
    store: &Store,
    recordings_dir: &std::path::Path,
    me: &str,
    dead_after: Duration,
) -> Result<Vec<(String, Takeover)>, TakeoverError> {
    let open_work = store.nodes_with_open_work().await?;
    if open_work.iter().all(|n| n == me) {
        return Ok(Vec::new());
    }
    let nodes = store.nodes().await?;
    let now = store.clock().wall();
    let Some(silent_before) = cutoff(now, dead_after) else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    for node in dead_nodes(&nodes, &open_work, me, now, dead_after) {
        let t = take_over(store, recordings_dir, me, &node.id, silent_before).await?;
        done.push((node.id.clone(), t));
    }
    Ok(done)
}

/// Looks for dead nodes every `every`, for as long as the process runs. A failed look is
/// logged and tried again at the next.
pub fn spawn(
    store: Store,
    recordings_dir: PathBuf,
    me: String,
    every: Duration,
    dead_after: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut forgot: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            if let Err(e) = look(&store, &recordings_dir, &me, dead_after).await {
                tracing::warn!(error = %e, "looking for dead nodes failed; trying again");
            }
            // Once an hour: the handset INVITEs taken over a day ago (no failover comes
            // that late; see cdr::open_handset_call).
            if forgot.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                forgot = Some(std::time::Instant::now());
                let day_ago = store.clock().wall() - chrono::Duration::days(1);
                if let Err(e) = cdr::forget_invites_before(store.db(), day_ago).await {
                    tracing::warn!(error = %e, "forgetting old handset INVITEs failed");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::db::testing::TestDb;
    use chrono::TimeZone;
    use std::sync::Arc;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap()
    }

    fn node(id: &str, beat_secs_ago: i64) -> NodeRecord {
        let at = t0() - chrono::Duration::seconds(beat_secs_ago);
        NodeRecord {
            id: id.into(),
            api_url: format!("http://{id}:8080"),
            started_at: at - chrono::Duration::hours(1),
            heartbeat_at: at,
        }
    }

    fn ids(v: Vec<&NodeRecord>) -> Vec<&str> {
        v.into_iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn a_node_is_dead_when_its_heartbeat_is_older_than_the_timeout_and_it_left_work() {
        let nodes = [
            node("a", 31),
            node("b", 29),
            node("c", 3600),
            node("me", 900),
        ];
        let open: Vec<String> = ["a", "b", "me", "ghost"].map(String::from).to_vec();
        let thirty = Duration::from_secs(30);
        // a: stale, with work. b: beating. c: stale, nothing open. me: never myself.
        // ghost: work but no row, never judged.
        assert_eq!(ids(dead_nodes(&nodes, &open, "me", t0(), thirty)), ["a"]);
        // Exactly the timeout is not yet dead.
        let nodes = [node("a", 30)];
        assert!(dead_nodes(&nodes, &open, "me", t0(), thirty).is_empty());
        // Time passes: b too.
        let later = t0() + chrono::Duration::seconds(2);
        let nodes = [node("a", 31), node("b", 29)];
        assert_eq!(
            ids(dead_nodes(&nodes, &open, "me", later, thirty)),
            ["a", "b"]
        );
    }

    /// Facility F1 and an inmate with $10.00: the account that pays.
    async fn funded_account(store: &Store) -> String {
        use crate::ledger::{DepositMethod, DepositRequest, RequestKey};
        let m = |units: i64| Money::from_minor(units * crate::money::MINOR_PER_UNIT);
        store
            .create_facility(crate::store::NewFacility {
                id: "F1".into(),
                name: "F1".into(),
                time_zone: "UTC".into(),
                country_code: "1".into(),
                cap_category: "prison".into(),
                calling_hours_start: "00:00".into(),
                calling_hours_end: "00:00".into(),
                deposit_max: m(300),
                deposit_daily_max: m(500),
                daily_call_limit: 0,
                recording_retention_days: 365,
            })
            .await
            .unwrap();
        let b = crate::store::Booking {
            booking_number: "B-1".into(),
            first_name: "A".into(),
            last_name: "B".into(),
            pin: None,
            calling_id: None,
            housing_unit: None,
        };
        let inmate = store.book_inmate("F1", b).await.unwrap();
        let deposit = DepositRequest {
            account_id: inmate.account_id.clone(),
            method: DepositMethod::Online,
            amount: m(10),
            depositor: "family".into(),
            reference: "test".into(),
        };
        let key = RequestKey::new("test", "deposit-1").unwrap();
        store.ledger().deposit(&key, deposit).await.unwrap();
        inmate.account_id
    }

    /// A session row of node `node`, accepted, with `paid` increments of 0.25 debited.
    async fn live_session(store: &Store, account: &str, id: &str, node: &str, paid: u32) {
        sqlx::query(
            "INSERT INTO sessions (id, kind, facility_id, state, node_id, invite_at, accepted_at, \
             increment_secs) VALUES ($1, 'call', 'F1', 'active', $2, $3, $3, 60)",
        )
        .bind(id)
        .bind(node)
        .bind(crate::db::to_micros(store.clock().wall()))
        .execute(store.db().pool())
        .await
        .unwrap();
        for increment in 1..=paid {
            let debit = crate::ledger::SessionDebit {
                session_id: id.into(),
                increment,
                account_id: account.into(),
                amount: Money::from_minor(2500),
                service: crate::ledger::Service::Audio,
                facility_id: "F1".into(),
            };
            store.ledger().debit_session(debit).await.unwrap();
        }
    }

    /// Two survivors take over one dead node at once, each through its own pool (`b`):
    /// every session is closed once, audited once, with the charges the ledger holds; a
    /// node that beats again keeps its calls; the dead node's restart closes nothing.
    async fn two_survivors_close_each_session_once(t: TestDb, second: crate::db::Db) {
        let clock = Arc::new(ManualClock::new(t0()));
        let a = Store::new(t.db.clone(), clock.clone() as Arc<dyn Clock>, "pepper");
        let b = Store::new(second.clone(), clock.clone() as Arc<dyn Clock>, "pepper");
        let account = funded_account(&a).await;
        a.register_node("dead", "http://dead:1").await.unwrap();
        a.register_node("back", "http://back:1").await.unwrap();
        for k in 0..12 {
            live_session(&a, &account, &format!("s{k}"), "dead", k % 3).await;
        }
        live_session(&a, &account, "kept", "back", 1).await;
        // "dead" last beat 31 s ago; "back" was as silent, and has just beaten again.
        clock.advance(Duration::from_secs(31));
        a.node_heartbeat("back", "http://back:1").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let after = Duration::from_secs(30);
        // The dead node's debits still in flight race the two closers (as a node cut off
        // from the database, not yet knowing it is presumed dead, would send them).
        let late_debits = async {
            let mut outcomes = Vec::new();
            for k in 0..12 {
                let debit = crate::ledger::SessionDebit {
                    session_id: format!("s{k}"),
                    increment: 9,
                    account_id: account.clone(),
                    amount: Money::from_minor(2500),
                    service: crate::ledger::Service::Audio,
                    facility_id: "F1".into(),
                };
                outcomes.push(b.ledger().debit_session(debit).await.unwrap());
                tokio::task::yield_now().await;
            }
            outcomes
        };
        let (ra, rb, late) = tokio::join!(
            look(&a, dir.path(), "a", after),
            look(&b, dir.path(), "b", after),
            late_debits
        );
        let committed_late = late
            .iter()
            .filter(|o| matches!(o, crate::ledger::DebitOutcome::Committed { .. }))
            .count() as i64;
        let closed: Vec<ClosedOrphan> = ra
            .unwrap()
            .into_iter()
            .chain(rb.unwrap())
            .flat_map(|(n, t)| {
                assert_eq!(n, "dead");
                t.sessions
            })
            .collect();
        let mut ids: Vec<&str> = closed.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        let mut want: Vec<String> = (0..12).map(|k| format!("s{k}")).collect();
        want.sort();
        assert_eq!(ids, want, "each closed once, by one of the two");
        // Every record holds exactly what the ledger holds for it: a late debit either
        // committed before the close (and is counted) or was refused after it.
        let mut late_counted = 0;
        for c in &closed {
            let k: i64 = c.id[1..].parse().unwrap();
            assert_eq!(c.reason, "system");
            let late = c.increments - k % 3;
            assert!(late == 0 || late == 1, "{c:?}");
            late_counted += late;
            assert_eq!(c.amount_minor, 2500 * c.increments, "{c:?}");
            let ledger: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(e.amount_minor), 0) AS BIGINT) FROM ledger_transactions t \
                 JOIN ledger_entries e ON e.transaction_id = t.id \
                 WHERE t.session_id = $1 AND e.balance_after_minor IS NULL",
            )
            .bind(&c.id)
            .fetch_one(t.db.pool())
            .await
            .unwrap();
            assert_eq!(ledger, c.amount_minor, "{c:?}");
        }
        assert_eq!(late_counted, committed_late);
        // After the close, a debit is refused; a committed one still reads as committed.
        let debit = |increment: u32| crate::ledger::SessionDebit {
            session_id: "s1".into(),
            increment,
            account_id: account.clone(),
            amount: Money::from_minor(2500),
            service: crate::ledger::Service::Audio,
            facility_id: "F1".into(),
        };
        let refused = a.ledger().debit_session(debit(10)).await.unwrap();
        assert!(
            matches!(refused, crate::ledger::DebitOutcome::Refused { .. }),
            "{refused:?}"
        );
        let again = a.ledger().debit_session(debit(1)).await.unwrap();
        assert!(
            matches!(again, crate::ledger::DebitOutcome::AlreadyCommitted { .. }),
            "{again:?}"
        );
        let (n, audited): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM sessions WHERE state = 'ended' \
             AND end_reason = 'system'), \
             (SELECT COUNT(*) FROM audit_log WHERE action = 'session.takeover')",
        )
        .fetch_one(t.db.pool())
        .await
        .unwrap();
        assert_eq!((n, audited), (12, 12));
        let state: String = sqlx::query_scalar("SELECT state FROM sessions WHERE id = 'kept'")
            .fetch_one(t.db.pool())
            .await
            .unwrap();
        assert_eq!(state, "active", "a node that beats keeps its calls");
        // Even from a survivor that judged it on an older row: the close checks the
        // heartbeat in the same statement.
        let stale_judgement = clock.wall() - chrono::Duration::seconds(1);
        let none = take_over(&b, dir.path(), "b", "back", stale_judgement).await;
        assert_eq!(none.unwrap(), Takeover::default());
        // The dead node's restart finds nothing left to close; nor does a second look.
        let restart = cdr::close_orphans(&t.db, "dead", clock.wall()).await;
        assert_eq!(restart.unwrap(), 0);
        let again = look(&a, dir.path(), "a", after).await.unwrap();
        assert!(
            again.iter().all(|(_, t)| t.sessions.is_empty()),
            "{again:?}"
        );
        assert!(a.ledger().check_invariants().await.unwrap().is_healthy());
        second.close().await;
        t.cleanup().await;
    }

    #[tokio::test]
    async fn two_survivors_on_sqlite() {
        let t = TestDb::sqlite().await;
        let second = t.db.clone();
        two_survivors_close_each_session_once(t, second).await;
    }

    #[tokio::test]
    async fn two_survivors_on_postgres() {
        let Some(t) = TestDb::postgres().await else {
            return;
        };
        let url = t.postgres_url().unwrap();
        let second = crate::db::Db::connect(&url, 5).await.unwrap();
        two_survivors_close_each_session_once(t, second).await;
    }
}
