//! The database: one pool, two backends.
//!
//! sallyport runs on SQLite (one node, embedded, the default) or PostgreSQL (many nodes).
//! Both are reached through sqlx's `Any` driver so every query is written once:
//! placeholders are `$1, $2, …` (PostgreSQL's syntax, which SQLite also accepts), amounts
//! are `BIGINT` minor units ([`crate::money`]), times are `BIGINT` Unix microseconds (UTC),
//! flags are `BIGINT` 0/1 (Any cannot decode SQLite `BOOLEAN`), sums are
//! `CAST(SUM(x) AS BIGINT)` (PostgreSQL sums `BIGINT` to `NUMERIC`, which Any cannot decode), ids are `TEXT`. The schema lives in `migrations/sqlite` and
//! `migrations/postgres`; the two differ only where the dialects must (auto-increment
//! keys, triggers).
//!
//! Owns: connecting, SQLite pragmas, migrations, and test databases ([`testing`]).
//! Called by: the ledger, the record stores, the API and the CLI.

pub mod group;
pub mod local;
pub mod schema;
pub mod testing;

use chrono::{DateTime, TimeZone, Utc};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use group::{GroupStats, Groups};
use local::LocalConn;
use sqlx::any::{
    AnyConnectOptions, AnyPoolOptions, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo,
};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Either, Execute, Executor, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors at the database boundary.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL '{0}' is neither sqlite:// nor postgres://")]
    UnsupportedUrl(String),
    #[error("cannot create the directory for the SQLite file {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
}

/// A connection pool and the backend behind it.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// SQLite's writers take turns here ([`Db::write_turn`]); shared by clones.
    write_gate: Option<Arc<Mutex<()>>>,
    /// SQLite's local connection ([`local`]): short statements run in the caller's thread.
    local: Option<Arc<Mutex<LocalConn>>>,
    /// SQLite's writers on the local connection share commits ([`group`]).
    groups: Option<Arc<Groups>>,
    /// Alive while any clone is: the WAL checkpointer thread stops when it is gone.
    _alive: Arc<()>,
}

/// A connection for short statements ([`Db::conn`], [`Db::write_conn`], [`Db::begin`]):
/// on SQLite the process's local connection, run in the caller's thread ([`local`]); on
/// PostgreSQL (or from [`Db::pooled`]) a connection of the pool. `&mut Conn` is a sqlx
/// executor: `sqlx::query(..).fetch_one(&mut conn)`. A transaction begun with
/// [`Db::begin`] ends with [`Conn::commit`]; dropped without it, it rolls back.
pub struct Conn {
    inner: ConnInner,
    backend: Backend,
    /// The write turn, held for as long as the connection is (writers and transactions).
    turn: Option<OwnedMutexGuard<()>>,
    /// The group commit a local transaction belongs to.
    groups: Option<Arc<Groups>>,
}

enum ConnInner {
    Local {
        conn: OwnedMutexGuard<LocalConn>,
        /// A transaction this handle began and has not ended.
        open: bool,
    },
    Pooled(PoolConnection<Any>),
    Tx(Transaction<'static, Any>),
    /// Committed or rolled back.
    Closed,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            ConnInner::Local { .. } => "local",
            ConnInner::Pooled(_) => "pooled",
            ConnInner::Tx(_) => "transaction",
            ConnInner::Closed => "closed",
        };
        f.debug_struct("Conn").field("kind", &kind).finish()
    }
}

impl Conn {
    /// The database this connection talks to (for the few statements whose dialects differ).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Commits the transaction [`Db::begin`] opened (a no-op on a plain connection).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        match &mut self.inner {
            ConnInner::Local { conn, open } => {
                if !std::mem::take(open) {
                    return Ok(());
                }
                let Some(groups) = self.groups.clone() else {
                    return conn.batch("COMMIT");
                };
                let Some(epoch) = groups.done(conn)? else {
                    return Ok(());
                };
                // Others are queued for the turn: let the next one in, and wait for the
                // group to be committed (by the last of them, or by this member after
                // `group::MAX_AGE`).
                self.inner = ConnInner::Closed;
                self.turn = None;
                groups.settle(epoch).await
            }
            ConnInner::Pooled(_) | ConnInner::Closed => Ok(()),
            ConnInner::Tx(_) => {
                let ConnInner::Tx(tx) = std::mem::replace(&mut self.inner, ConnInner::Closed)
                else {
                    return Ok(());
                };
                tx.commit().await
            }
        }
    }

    /// Rolls the transaction back now (dropping the handle does the same).
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        match std::mem::replace(&mut self.inner, ConnInner::Closed) {
            ConnInner::Local { mut conn, open } => {
                if open {
                    match &self.groups {
                        Some(groups) => groups.abandon(&mut conn),
                        None => conn.batch("ROLLBACK")?,
                    }
                }
                Ok(())
            }
            ConnInner::Tx(tx) => tx.rollback().await,
            _ => Ok(()),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let ConnInner::Local { conn, open: true } = &mut self.inner {
            match &self.groups {
                Some(groups) => groups.abandon(conn),
                None => {
                    if let Err(e) = conn.batch("ROLLBACK") {
                        tracing::error!(error = %e, "rolling back an abandoned local transaction failed");
                    }
                }
            }
        }
    }
}

fn closed() -> sqlx::Error {
    sqlx::Error::Protocol("the connection's transaction has already ended".into())
}

impl<'c> Executor<'c> for &'c mut Conn {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &mut self.inner {
            ConnInner::Local { conn, .. } => (&mut **conn).fetch_many(query),
            ConnInner::Pooled(c) => (&mut **c).fetch_many(query),
            ConnInner::Tx(tx) => (&mut **tx).fetch_many(query),
            ConnInner::Closed => Box::pin(futures_util::stream::once(async { Err(closed()) })),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &mut self.inner {
            ConnInner::Local { conn, .. } => (&mut **conn).fetch_optional(query),
            ConnInner::Pooled(c) => (&mut **c).fetch_optional(query),
            ConnInner::Tx(tx) => (&mut **tx).fetch_optional(query),
            ConnInner::Closed => Box::pin(async { Err(closed()) }),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        match &mut self.inner {
            ConnInner::Local { conn, .. } => (&mut **conn).prepare_with(sql, parameters),
            ConnInner::Pooled(c) => (&mut **c).prepare_with(sql, parameters),
            ConnInner::Tx(tx) => (&mut **tx).prepare_with(sql, parameters),
            ConnInner::Closed => Box::pin(async { Err(closed()) }),
        }
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        match &mut self.inner {
            ConnInner::Local { conn, .. } => (&mut **conn).describe(sql),
            ConnInner::Pooled(c) => (&mut **c).describe(sql),
            ConnInner::Tx(tx) => (&mut **tx).describe(sql),
            ConnInner::Closed => Box::pin(async { Err(closed()) }),
        }
    }
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Backend, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(DbError::UnsupportedUrl(redact_url(url)))
        }
    }
}

impl Db {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`), creating the SQLite
    /// file and its directory if needed. Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; busy_timeout makes writers
                        // queue instead of failing; foreign keys are off by default in SQLite.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        let write_gate = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        let alive = Arc::new(());
        let local = match (backend, local::file_of_url(&url)) {
            (Backend::Sqlite, Some(path)) => {
                let conn = LocalConn::open(&path)?;
                local::spawn_checkpointer(path, Arc::downgrade(&alive));
                Some(Arc::new(Mutex::new(conn)))
            }
            _ => None,
        };
        let groups = match (&write_gate, &local) {
            (Some(gate), Some(local)) => Some(Arc::new(Groups::new(gate.clone(), local.clone()))),
            _ => None,
        };
        Ok(Db {
            pool,
            backend,
            write_gate,
            local,
            groups,
            _alive: alive,
        })
    }

    /// On SQLite, waits this process's turn to write; hold the guard until the write
    /// (statement or transaction) is over. SQLite has one writer at a time, and a writer
    /// that finds the lock taken sleeps in the busy handler (1, 2, 5, 10 … ms) however
    /// soon the lock is free: under load those sleeps were the set-up's long tail. Writers
    /// queued here instead go in turn (first come, first served) the moment the previous
    /// one is done. Take the turn **before** a connection (a task holding a connection
    /// while it waits here could starve the turn-holder of one). `None` on PostgreSQL,
    /// where row locks do the work. Other processes (the CLI) still meet the busy handler.
    ///
    /// With the local connection, the open group ([`group`]) is committed first: the holder
    /// of this turn writes on its own, and must not wait on a group nobody else can commit.
    pub async fn write_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match (&self.groups, &self.write_gate) {
            (Some(groups), _) => Some(groups.turn_alone().await),
            (None, Some(g)) => Some(g.clone().lock_owned().await),
            (None, None) => None,
        }
    }

    /// Every write on SQLite's local connection commits on its own (`database.group_commit
    /// = false`): no group commit.
    pub fn commit_alone(&mut self) {
        self.groups = None;
    }

    /// The group commits so far (SQLite's local connection; zero elsewhere).
    pub fn group_stats(&self) -> GroupStats {
        self.groups.as_ref().map(|g| g.stats()).unwrap_or_default()
    }

    /// Applies the migrations of this backend that have not run yet.
    /// Refuses a database whose schema is newer than this build knows
    /// ([`schema::refuse_newer`]): another node was upgraded first.
    pub async fn migrate(&self) -> Result<(), DbError> {
        schema::refuse_newer(self).await?;
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// The migrations of this backend.
    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies this backend's migrations up to and including `version` only: a database
    /// as it was before a later migration, for testing that migration on its data.
    pub async fn migrate_to(&self, version: i64) -> Result<(), DbError> {
        let all = self.migrator();
        let migrator = Migrator {
            migrations: all
                .migrations
                .iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
            ..Migrator::DEFAULT
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection for short reads and single autocommit writes ([`Conn`]): SQLite's local
    /// connection, or a pooled one. A writer takes [`Db::write_conn`] instead. Never hold it
    /// while waiting for the write turn or another [`Db::conn`]: on SQLite there is one.
    pub async fn conn(&self) -> Result<Conn, sqlx::Error> {
        self.conn_with(None).await
    }

    /// [`Db::conn`] for a write: the write turn first, then the connection.
    pub async fn write_conn(&self) -> Result<Conn, sqlx::Error> {
        let turn = self.write_turn().await;
        self.conn_with(turn).await
    }

    /// A short write whose commit may be shared with other writers' ([`group`]): on
    /// SQLite's local connection a member of a group commit, ended by [`Conn::commit`]
    /// (which returns once it is durable) and undone if dropped without it; elsewhere
    /// [`Db::write_conn`], where each statement commits itself and `commit` is a no-op.
    /// For the writes of a session's life; run one statement or a few, then commit.
    pub async fn write(&self) -> Result<Conn, sqlx::Error> {
        match &self.groups {
            Some(_) => self.begin().await,
            None => self.write_conn().await,
        }
    }

    /// A write transaction on a [`Conn`]: the write turn, then `BEGIN IMMEDIATE` on
    /// SQLite's local connection, or a pooled transaction on PostgreSQL. Ends with
    /// [`Conn::commit`]; dropped, it rolls back.
    ///
    /// On SQLite the transaction is a member of a group commit ([`group`]): its
    /// [`Conn::commit`] returns once the group holding it is committed.
    pub async fn begin(&self) -> Result<Conn, sqlx::Error> {
        if let Some(groups) = &self.groups {
            let turn = groups.turn().await;
            let mut conn = groups.conn().await;
            groups.join(&mut conn)?;
            return Ok(Conn {
                inner: ConnInner::Local { conn, open: true },
                backend: self.backend,
                turn: Some(turn),
                groups: Some(groups.clone()),
            });
        }
        let turn = self.write_turn().await;
        match &self.local {
            Some(local) => {
                let mut conn = local.clone().lock_owned().await;
                if conn.in_transaction() {
                    // A transaction left open by a cancelled caller: nothing of it stands.
                    conn.batch("ROLLBACK")?;
                }
                conn.batch("BEGIN IMMEDIATE")?;
                Ok(Conn {
                    inner: ConnInner::Local { conn, open: true },
                    backend: self.backend,
                    turn,
                    groups: None,
                })
            }
            None => Ok(Conn {
                inner: ConnInner::Tx(self.begin_write().await.map_err(|e| match e {
                    DbError::Sqlx(e) => e,
                    other => sqlx::Error::Protocol(other.to_string()),
                })?),
                backend: self.backend,
                turn,
                groups: None,
            }),
        }
    }

    /// A connection of the pool even on SQLite, for work too long to run in the caller's
    /// thread (statements, scans) that still wants a [`Conn`].
    pub async fn pooled(&self) -> Result<Conn, sqlx::Error> {
        Ok(Conn {
            inner: ConnInner::Pooled(self.pool.acquire().await?),
            backend: self.backend,
            turn: None,
            groups: None,
        })
    }

    /// A transaction on a connection of the pool, opened with `begin` (a read snapshot:
    /// invariant checks, statements), with no write turn.
    pub async fn pooled_tx(&self, begin: &str) -> Result<Conn, sqlx::Error> {
        Ok(Conn {
            inner: ConnInner::Tx(self.pool.begin_with(begin.to_string()).await?),
            backend: self.backend,
            turn: None,
            groups: None,
        })
    }

    async fn conn_with(&self, turn: Option<OwnedMutexGuard<()>>) -> Result<Conn, sqlx::Error> {
        let inner = match &self.local {
            Some(local) => {
                let mut conn = local.clone().lock_owned().await;
                if conn.in_transaction() && !conn.group.is_open() {
                    // A transaction left open by a cancelled caller: nothing of it stands.
                    conn.batch("ROLLBACK")?;
                }
                ConnInner::Local { conn, open: false }
            }
            None => ConnInner::Pooled(self.pool.acquire().await?),
        };
        Ok(Conn {
            inner,
            backend: self.backend,
            turn,
            groups: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens a transaction that takes the write lock at once on SQLite (`BEGIN IMMEDIATE`),
    /// so two writers queue on the busy timeout instead of one failing when it upgrades a
    /// read lock. On PostgreSQL it is a plain `BEGIN` (row locks do the work).
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, DbError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    pub async fn close(&self) {
        if let Some(groups) = &self.groups {
            groups.flush().await;
        }
        self.pool.close().await;
    }
}

/// Unix microseconds, the storage form of every time in the schema.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Back from storage; a value out of chrono's range becomes the epoch rather than a panic.
pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// Makes sure the SQLite file can be created: its directory exists and `mode=rwc` is set.
fn prepare_sqlite_url(url: &str) -> Result<String, DbError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" && !path.is_empty() {
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
                    path: path.to_string(),
                    source,
                })?;
            }
        }
    }
    let query = if query.contains("mode=") {
        query.to_string()
    } else if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// A database URL with its password hidden, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// True when `e` is a unique-constraint violation (either backend).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(d.kind(), sqlx::error::ErrorKind::UniqueViolation),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Backend::of_url("sqlite://data/x.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::of_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://h/db").is_err());
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            prepare_sqlite_url("sqlite::memory:").unwrap(),
            "sqlite://:memory:?mode=rwc"
        );
    }
}
