//! Group commit on SQLite's local connection: writers that queue for the write turn share
//! one commit.
//!
//! # Why
//!
//! A commit in WAL mode writes every page the transaction dirtied to the log. The short
//! transactions of calls in flight (a PIN attempt, a session row, a debit) dirty mostly the
//! same pages (the right edges of the same tables and indexes), so ten transactions committed
//! one by one write those pages ten times. A group writes them once.
//!
//! # How
//!
//! A writer ([`super::Db::begin`]) joins the open group (`SAVEPOINT`) or opens one
//! (`BEGIN IMMEDIATE` + `SAVEPOINT`). Its [`super::Conn::commit`] releases its savepoint and
//! then either commits the group itself, when nobody is queued behind it for the turn (so a
//! writer alone waits for nothing, as before), the group is [`MAX_MEMBERS`] strong or older
//! than [`MAX_AGE`]; or it hands the turn to the next writer and waits for the group's
//! outcome. A member's commit returns only once the group is on disk as the single commit
//! of before would have been: **a write is durable before the caller goes on**, a debit
//! before the increment it pays for begins. A member that fails rolls back to its savepoint
//! and leaves the others' work standing; a group whose `COMMIT` fails fails every member.
//!
//! Writers on other connections never wait on a group for long: taking the write turn for
//! them ([`super::Db::write_turn`], [`super::Db::write_conn`]) commits the open group first,
//! and a waiting member commits it itself after [`MAX_AGE`] should the writer it counted on
//! have gone away (a cancelled task). Reads on the local connection see a group's work
//! before its commit; reads on the pool's connections see it after, as with any commit.

use super::local::LocalConn;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex, OwnedMutexGuard};

/// A group commits once this many writers are in it.
pub const MAX_MEMBERS: u32 = 32;

/// A group commits once it is this old, and a member waiting on it commits it itself after
/// this long without an outcome.
pub const MAX_AGE: Duration = Duration::from_millis(2);

/// Failed groups remembered for members that have yet to read their outcome.
const FAILURES_KEPT: usize = 64;

/// The group's state on the connection (guarded by the local connection's lock).
#[derive(Debug, Default)]
pub struct GroupState {
    /// A group transaction is open.
    open: bool,
    /// The open (or last) group's number.
    epoch: u64,
    /// Writers whose work is in the open group.
    members: u32,
    /// When the open group began.
    opened_at: Option<Instant>,
}

impl GroupState {
    /// Whether a group transaction is open.
    pub fn is_open(&self) -> bool {
        self.open
    }
}

/// What the process's writers share: the turn, the connection, and the outcome of groups.
#[derive(Debug)]
pub struct Groups {
    gate: Arc<Mutex<()>>,
    local: Arc<Mutex<LocalConn>>,
    /// Writers waiting for the turn right now.
    queued: AtomicUsize,
    /// The newest group whose outcome is known.
    settled: watch::Sender<u64>,
    /// Groups whose `COMMIT` failed: (epoch, SQLite code, message).
    failures: std::sync::Mutex<VecDeque<(u64, i32, String)>>,
    commits: AtomicU64,
    members: AtomicU64,
    /// [`MAX_AGE`], longer in tests that must see a group shared on a loaded machine.
    max_age: Duration,
}

/// Counters of the groups committed, for `/metrics` and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// `COMMIT`s of groups (successful or not).
    pub commits: u64,
    /// Writers' transactions in those groups.
    pub members: u64,
}

/// The turn, queued for and counted while waiting.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Groups {
    pub fn new(gate: Arc<Mutex<()>>, local: Arc<Mutex<LocalConn>>) -> Groups {
        Groups {
            gate,
            local,
            queued: AtomicUsize::new(0),
            settled: watch::channel(0).0,
            failures: std::sync::Mutex::new(VecDeque::new()),
            commits: AtomicU64::new(0),
            members: AtomicU64::new(0),
            max_age: MAX_AGE,
        }
    }

    pub fn stats(&self) -> GroupStats {
        GroupStats {
            commits: self.commits.load(Ordering::Relaxed),
            members: self.members.load(Ordering::Relaxed),
        }
    }

    /// Waits for the write turn, counted among the queued while it waits.
    pub async fn turn(&self) -> OwnedMutexGuard<()> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let _queued = Queued(&self.queued);
        self.gate.clone().lock_owned().await
    }

    /// The local connection.
    pub async fn conn(&self) -> OwnedMutexGuard<LocalConn> {
        self.local.clone().lock_owned().await
    }

    /// The turn with no group open: for a writer that does not join one (an autocommit
    /// statement, a transaction on another connection).
    /// A failed group commit is its members' error, told to them.
    pub async fn turn_alone(&self) -> OwnedMutexGuard<()> {
        let turn = self.turn().await;
        let mut conn = self.conn().await;
        if conn.group.open {
            if let Err(e) = self.commit(&mut conn) {
                tracing::error!(error = %e, "committing a group before a lone writer failed");
            }
        }
        turn
    }

    /// Joins the open group, or opens one (the caller holds the turn).
    pub fn join(&self, conn: &mut LocalConn) -> Result<(), sqlx::Error> {
        if conn.group.open {
            return conn.batch("SAVEPOINT member");
        }
        if conn.in_transaction() {
            // A transaction left open by a cancelled caller: nothing of it stands.
            conn.batch("ROLLBACK")?;
        }
        conn.batch("BEGIN IMMEDIATE")?;
        if let Err(e) = conn.batch("SAVEPOINT member") {
            let _ = conn.batch("ROLLBACK");
            return Err(e);
        }
        let g = &mut conn.group;
        g.open = true;
        g.epoch += 1;
        g.members = 0;
        g.opened_at = Some(Instant::now());
        Ok(())
    }

    /// A member is done: its work stays in the group. `Some(epoch)` when the caller must
    /// wait for that group's outcome ([`Groups::settle`]) after giving up the turn; `None`
    /// when it is already committed.
    pub fn done(&self, conn: &mut LocalConn) -> Result<Option<u64>, sqlx::Error> {
        if let Err(e) = conn.batch("RELEASE member") {
            self.abandon(conn);
            return Err(e);
        }
        conn.group.members += 1;
        let g = &conn.group;
        let full = g.members >= MAX_MEMBERS;
        let old = g.opened_at.is_some_and(|t| t.elapsed() >= self.max_age);
        if self.queued.load(Ordering::Acquire) == 0 || full || old {
            self.commit(conn)?;
            return Ok(None);
        }
        Ok(Some(g.epoch))
    }

    /// A member gives up: its work is undone, the others' stands. The group is committed
    /// now if nobody queued for the turn would otherwise commit it.
    pub fn abandon(&self, conn: &mut LocalConn) {
        if !conn.group.open {
            if conn.in_transaction() {
                let _ = conn.batch("ROLLBACK");
            }
            return;
        }
        if let Err(e) = conn.batch("ROLLBACK TO member; RELEASE member") {
            tracing::error!(error = %e, "cannot roll a writer back to its savepoint; the group is rolled back");
            self.fail(conn, &e);
            return;
        }
        if conn.group.members == 0 {
            // Nobody else's work is in it: end it.
            conn.group.open = false;
            if let Err(e) = conn.batch("ROLLBACK") {
                tracing::error!(error = %e, "rolling back an empty group failed");
            }
            self.settled.send_replace(conn.group.epoch);
            return;
        }
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Err(e) = self.commit(conn) {
                tracing::error!(error = %e, "committing a group after a member gave up failed");
            }
        }
    }

    /// Commits the open group and tells its members.
    pub fn commit(&self, conn: &mut LocalConn) -> Result<(), sqlx::Error> {
        let epoch = conn.group.epoch;
        conn.group.open = false;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.members
            .fetch_add(u64::from(conn.group.members), Ordering::Relaxed);
        let r = conn.batch("COMMIT");
        match &r {
            Ok(()) => {
                self.settled.send_replace(epoch);
            }
            Err(e) => self.fail(conn, e),
        }
        r
    }

    /// The open group is lost: rolled back, and every member told.
    fn fail(&self, conn: &mut LocalConn, e: &sqlx::Error) {
        let epoch = conn.group.epoch;
        conn.group.open = false;
        if conn.in_transaction() {
            let _ = conn.batch("ROLLBACK");
        }
        let (code, message) = match e {
            sqlx::Error::Database(d) => (
                d.code().and_then(|c| c.parse().ok()).unwrap_or(1),
                d.message().to_string(),
            ),
            other => (1, other.to_string()),
        };
        if let Ok(mut f) = self.failures.lock() {
            f.push_back((epoch, code, message));
            while f.len() > FAILURES_KEPT {
                f.pop_front();
            }
        }
        self.settled.send_replace(epoch);
    }

    /// Waits until group `epoch` is committed (or failed). Should no writer commit it
    /// within [`MAX_AGE`], takes the turn and commits it itself.
    pub async fn settle(&self, epoch: u64) -> Result<(), sqlx::Error> {
        let mut rx = self.settled.subscribe();
        loop {
            if *rx.borrow_and_update() >= epoch {
                return self.outcome(epoch);
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(sqlx::Error::PoolClosed);
                    }
                }
                () = tokio::time::sleep(self.max_age) => {
                    let _turn = self.turn().await;
                    let mut conn = self.conn().await;
                    if conn.group.open && conn.group.epoch == epoch {
                        // The error, if any, reaches every member through `outcome`.
                        let _ = self.commit(&mut conn);
                    }
                }
            }
        }
    }

    fn outcome(&self, epoch: u64) -> Result<(), sqlx::Error> {
        let failed = self.failures.lock().ok().and_then(|f| {
            f.iter()
                .find(|(e, _, _)| *e == epoch)
                .map(|(_, code, message)| (*code, message.clone()))
        });
        match failed {
            None => Ok(()),
            Some((code, message)) => Err(super::local::error_of(
                code,
                format!("the group commit failed: {message}"),
            )),
        }
    }

    /// Commits any open group now (shutdown).
    pub async fn flush(&self) {
        let _turn = self.gate.clone().lock_owned().await;
        let mut conn = self.conn().await;
        if conn.group.open {
            if let Err(e) = self.commit(&mut conn) {
                tracing::error!(error = %e, "committing the last group failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Db;
    use sqlx::Row;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/g.db", dir.path().display());
        let db = Db::connect(&url, 4).await.unwrap();
        sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT)")
            .execute(db.pool())
            .await
            .unwrap();
        (dir, db)
    }

    /// A writer in the open group with its row written, not yet committed.
    async fn member(db: &Db, id: &str) -> super::super::Conn {
        let mut w = db.write().await.unwrap();
        sqlx::query("INSERT INTO t (id, n) VALUES ($1, 1)")
            .bind(id)
            .execute(&mut w)
            .await
            .unwrap();
        w
    }

    async fn insert(db: &Db, id: &str) -> Result<(), sqlx::Error> {
        let mut w = db.write().await?;
        sqlx::query("INSERT INTO t (id, n) VALUES ($1, 1)")
            .bind(id)
            .execute(&mut w)
            .await?;
        w.commit().await
    }

    /// Seen by another connection (the pool's): committed, not merely in the group.
    async fn committed(db: &Db, id: &str) -> bool {
        sqlx::query("SELECT COUNT(*) AS n FROM t WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get::<i64, _>("n")
            == 1
    }

    /// Groups that never grow old: a test of sharing stays true however slow the machine.
    async fn patient_db() -> (tempfile::TempDir, Db) {
        let (d, mut db) = db().await;
        let groups = db.groups.take().unwrap();
        let mut g = super::Groups::new(groups.gate.clone(), groups.local.clone());
        g.max_age = Duration::from_secs(3600);
        db.groups = Some(std::sync::Arc::new(g));
        (d, db)
    }

    async fn until_queued(db: &Db, n: usize) {
        let groups = db.groups.clone().unwrap();
        while groups.queued.load(Ordering::Acquire) < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_writer_alone_commits_at_once() {
        let (_d, db) = db().await;
        insert(&db, "a").await.unwrap();
        assert!(committed(&db, "a").await);
        let s = db.group_stats();
        assert_eq!((s.commits, s.members), (1, 1));
    }

    #[tokio::test]
    async fn a_writer_queued_behind_shares_the_commit_and_both_return_committed() {
        let (_d, db) = patient_db().await;
        let a = member(&db, "a").await;
        let db2 = db.clone();
        let b = tokio::spawn(async move {
            insert(&db2, "b").await.unwrap();
            committed(&db2, "b").await
        });
        until_queued(&db, 1).await;
        // B waits for the turn: A leaves the group open for it and waits for B's commit.
        a.commit().await.unwrap();
        assert!(
            committed(&db, "a").await,
            "A returned before its group was committed"
        );
        assert!(b.await.unwrap());
        let s = db.group_stats();
        assert_eq!((s.commits, s.members), (1, 2));
    }

    #[tokio::test]
    async fn a_member_that_gives_up_undoes_only_its_own_work() {
        let (_d, db) = db().await;
        let a = member(&db, "a").await;
        let db2 = db.clone();
        let b = tokio::spawn(async move {
            let w = member(&db2, "b").await;
            drop(w); // an error path: never committed
        });
        until_queued(&db, 1).await;
        a.commit().await.unwrap();
        b.await.unwrap();
        assert!(committed(&db, "a").await);
        assert!(!committed(&db, "b").await);
        // A unique violation inside a member leaves the group usable.
        assert!(insert(&db, "a").await.is_err());
        insert(&db, "c").await.unwrap();
        assert!(committed(&db, "c").await);
    }

    #[tokio::test]
    async fn a_waiting_member_commits_the_group_itself_when_the_writer_behind_it_goes_away() {
        let (_d, db) = db().await;
        let a = member(&db, "a").await;
        // A writer queued behind A, cancelled after A decided to wait for it.
        let lone = db.clone();
        let b = tokio::spawn(async move {
            let _w = lone.write().await;
        });
        until_queued(&db, 1).await;
        let db3 = db.clone();
        let a_done = tokio::spawn(async move {
            a.commit().await.unwrap();
            committed(&db3, "a").await
        });
        b.abort();
        let _ = b.await;
        let seen = tokio::time::timeout(Duration::from_secs(10), a_done)
            .await
            .expect("the waiting member committed its group itself")
            .unwrap();
        assert!(seen);
    }

    #[tokio::test]
    async fn a_writer_on_another_connection_finds_the_group_committed() {
        let (_d, db) = db().await;
        let a = member(&db, "a").await;
        let db2 = db.clone();
        let pool_writer = tokio::spawn(async move {
            // The turn for a transaction on a pool connection: the group is committed
            // first, so its BEGIN IMMEDIATE never waits on a lock nobody can release.
            let _turn = db2.write_turn().await;
            let mut tx = db2.begin_write().await.unwrap();
            sqlx::query("INSERT INTO t (id, n) VALUES ('p', 1)")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        });
        until_queued(&db, 1).await;
        a.commit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), pool_writer)
            .await
            .expect("the pool writer was not blocked by the group")
            .unwrap();
        assert!(committed(&db, "a").await && committed(&db, "p").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_writers_all_commit_in_fewer_commits() {
        let (_d, db) = db().await;
        let mut tasks = Vec::new();
        for i in 0..200 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("w{i}");
                insert(&db, &id).await.unwrap();
                committed(&db, &id).await
            }));
        }
        for t in tasks {
            assert!(
                t.await.unwrap(),
                "a writer returned before its row was committed"
            );
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM t")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get("n");
        assert_eq!(n, 200);
        let s = db.group_stats();
        assert_eq!(s.members, 200);
        println!("200 writers, {} commits", s.commits);
        assert!(s.commits <= 200);
    }
}
