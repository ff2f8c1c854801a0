//! SQLite in the caller's own thread: the process's local connection for the short
//! statements of a session's life (an index lookup, a one-row write, a debit).
//!
//! # Why
//!
//! sqlx's SQLite driver gives every connection a thread of its own: each statement is a
//! command sent to that thread and a result sent back, two thread wake-ups around work that
//! takes SQLite a few microseconds. A call set-up makes about 25 statements, so at a few
//! hundred set-ups a second those wake-ups were most of the gateway's CPU (issue 10's
//! profile: the `sqlx-sqlite` threads and the context switches around them, about half of
//! it). [`LocalConn`] runs the statement where the caller is, with no hop: SQLite is a
//! library in this process, and a statement that reads a few pages from its cache is cheaper
//! than the wake-up that would carry it elsewhere.
//!
//! # What runs here, and what does not
//!
//! Only short statements: they block the calling tokio worker while they run. Searches,
//! reports, statements and integrity scans stay on the pool ([`super::Db::pool`]), whose
//! threads may take as long as they need. A writer takes the process's write turn first
//! ([`super::Db::write_turn`]), as every writer does, so the local connection never waits
//! in SQLite's busy handler behind another connection of this process. It runs no
//! checkpoints itself (`wal_autocheckpoint = 0`): a checkpoint copies pages and syncs the
//! file, which must not stall a worker; a thread of its own checkpoints the WAL instead
//! ([`spawn_checkpointer`]).
//!
//! # The sqlx face
//!
//! `&mut LocalConn` is a sqlx [`Executor`] for the `Any` driver: the queries written for
//! both databases (`sqlx::query(..).bind(..)`) run on it unchanged, their arguments bound
//! as sqlx's SQLite driver binds them (`$N` by number) and their rows decoded as the `Any`
//! driver decodes SQLite's (INTEGER → `BigInt`, REAL → `Double`, by the value's own type).

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use rusqlite::types::ValueRef;
use rusqlite::OpenFlags;
use sqlx::any::{
    Any, AnyArguments, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo, AnyTypeInfoKind, AnyValue,
};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::{Describe, Either, Execute, Executor};
use sqlx_core::any::{AnyColumn, AnyValueKind};
use sqlx_core::ext::ustr::UStr;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the checkpointer thread moves the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Result shapes kept at most (one per distinct SQL text).
const MAX_SHAPES: usize = 1024;

/// The column names and columns of one statement's result, built once per SQL text.
struct Shape {
    names: Arc<sqlx_core::HashMap<UStr, usize>>,
    columns: Vec<AnyColumn>,
}

/// The process's local SQLite connection (module doc).
pub struct LocalConn {
    conn: rusqlite::Connection,
    shapes: HashMap<Box<str>, Arc<Shape>>,
    /// The group commit this connection carries ([`super::group`]).
    pub(super) group: super::group::GroupState,
}

impl std::fmt::Debug for LocalConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalConn").finish_non_exhaustive()
    }
}

/// A SQLite error as sqlx reports its own: the extended code, the message, and the kind
/// that [`super::is_unique_violation`] and friends look at.
#[derive(Debug)]
pub struct LocalError {
    code: i32,
    message: String,
}

impl std::fmt::Display for LocalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for LocalError {}

impl DatabaseError for LocalError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// A SQLite error code and message as the sqlx error sqlx's driver would give.
pub(super) fn error_of(code: i32, message: String) -> sqlx::Error {
    sqlx::Error::Database(Box::new(LocalError { code, message }))
}

/// rusqlite's error as the sqlx error the same failure gives through sqlx's driver.
fn db_error(e: rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(f, message) => {
            let message = message.unwrap_or_else(|| f.to_string());
            sqlx::Error::Database(Box::new(LocalError {
                code: f.extended_code,
                message,
            }))
        }
        other => sqlx::Error::Database(Box::new(LocalError {
            code: rusqlite::ffi::SQLITE_ERROR,
            message: other.to_string(),
        })),
    }
}

impl LocalConn {
    /// Opens the database file at `path` (which the pool has created and set to WAL).
    pub fn open(path: &Path) -> Result<LocalConn, sqlx::Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(db_error)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db_error)?;
        // temp_store = MEMORY: each member of a group commit is a SAVEPOINT, and SQLite keeps
        // the pages a savepoint changes in a sub-journal, which spills to a temporary file
        // past 64 KiB: a `pwrite` per page, 6-7 % of the gateway's CPU at 300 set-ups a
        // second. A group's sub-journal is a few MiB at most (32 members of a few pages), so
        // it stays in memory. Only this connection: the pool's report queries keep their
        // large sorts on disk.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY;",
        )
        .map_err(db_error)?;
        conn.set_prepared_statement_cache_capacity(256);
        Ok(LocalConn {
            conn,
            shapes: HashMap::new(),
            group: super::group::GroupState::default(),
        })
    }

    /// Runs `sql` with `args`: its rows (at most `limit`) and what it changed.
    fn run(
        &mut self,
        sql: &str,
        args: Option<AnyArguments<'_>>,
        limit: Option<usize>,
    ) -> Result<(Vec<AnyRow>, AnyQueryResult), sqlx::Error> {
        let started = std::time::Instant::now();
        let r = self.run_statement(sql, args, limit);
        log_statement(sql, &r, started.elapsed());
        r
    }

    fn run_statement(
        &mut self,
        sql: &str,
        args: Option<AnyArguments<'_>>,
        limit: Option<usize>,
    ) -> Result<(Vec<AnyRow>, AnyQueryResult), sqlx::Error> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_error)?;
        let values = args.map(|a| a.values.0).unwrap_or_default();
        for i in 1..=stmt.parameter_count() {
            // `$N` and `?N` bind argument N (as sqlx's SQLite driver does); a bare `?` the
            // next one in order.
            let n = stmt
                .parameter_name(i)
                .and_then(|name| name.get(1..))
                .and_then(|digits| digits.parse::<usize>().ok())
                .unwrap_or(i);
            let Some(v) = n.checked_sub(1).and_then(|k| values.get(k)) else {
                return Err(sqlx::Error::Protocol(format!(
                    "statement parameter {i} has no argument ({} bound): {sql}",
                    values.len()
                )));
            };
            let r = match v {
                AnyValueKind::Null(_) => stmt.raw_bind_parameter(i, rusqlite::types::Null),
                AnyValueKind::Bool(b) => stmt.raw_bind_parameter(i, i64::from(*b)),
                AnyValueKind::SmallInt(x) => stmt.raw_bind_parameter(i, i64::from(*x)),
                AnyValueKind::Integer(x) => stmt.raw_bind_parameter(i, i64::from(*x)),
                AnyValueKind::BigInt(x) => stmt.raw_bind_parameter(i, *x),
                AnyValueKind::Real(x) => stmt.raw_bind_parameter(i, f64::from(*x)),
                AnyValueKind::Double(x) => stmt.raw_bind_parameter(i, *x),
                AnyValueKind::Text(t) => stmt.raw_bind_parameter(i, t.as_ref()),
                AnyValueKind::Blob(b) => stmt.raw_bind_parameter(i, b.as_ref()),
                other => {
                    return Err(sqlx::Error::Protocol(format!(
                        "cannot bind {other:?} to SQLite"
                    )))
                }
            };
            r.map_err(db_error)?;
        }
        let shape = match self.shapes.get(sql) {
            Some(s) => s.clone(),
            None => {
                let names: Vec<String> =
                    stmt.column_names().iter().map(|s| s.to_string()).collect();
                let shape = Arc::new(Shape {
                    names: Arc::new(
                        names
                            .iter()
                            .enumerate()
                            .map(|(i, n)| (UStr::new(n), i))
                            .collect(),
                    ),
                    columns: names
                        .iter()
                        .enumerate()
                        .map(|(ordinal, n)| AnyColumn {
                            ordinal,
                            name: UStr::new(n),
                            type_info: AnyTypeInfo {
                                kind: AnyTypeInfoKind::Null,
                            },
                        })
                        .collect(),
                });
                if self.shapes.len() >= MAX_SHAPES {
                    // SQL built at run time (IN lists of any length) must not grow this
                    // without bound: start again.
                    self.shapes.clear();
                }
                self.shapes.insert(sql.into(), shape.clone());
                shape
            }
        };
        let mut out = Vec::new();
        let width = shape.columns.len();
        {
            let mut rows = stmt.raw_query();
            while limit.is_none_or(|l| out.len() < l) {
                let Some(row) = rows.next().map_err(db_error)? else {
                    break;
                };
                let mut values = Vec::with_capacity(width);
                for i in 0..width {
                    let kind = match row.get_ref(i).map_err(db_error)? {
                        ValueRef::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
                        ValueRef::Integer(x) => AnyValueKind::BigInt(x),
                        ValueRef::Real(x) => AnyValueKind::Double(x),
                        ValueRef::Text(t) => AnyValueKind::Text(Cow::Owned(
                            std::str::from_utf8(t)
                                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
                                .to_string(),
                        )),
                        ValueRef::Blob(b) => AnyValueKind::Blob(Cow::Owned(b.to_vec())),
                    };
                    values.push(AnyValue { kind });
                }
                out.push(AnyRow {
                    column_names: shape.names.clone(),
                    columns: shape.columns.clone(),
                    values,
                });
            }
        }
        // A statement stopped early (`limit`) is reset when the cached statement returns
        // to the cache; its changes are counted either way.
        let result = AnyQueryResult {
            rows_affected: self.conn.changes(),
            last_insert_id: Some(self.conn.last_insert_rowid()),
        };
        Ok((out, result))
    }

    /// Runs statements with no arguments and no rows (`BEGIN IMMEDIATE`, `COMMIT`).
    pub(super) fn batch(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        self.conn.execute_batch(sql).map_err(db_error)
    }

    /// Whether a transaction is open on the connection.
    pub(super) fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    fn run_query<'q>(
        &mut self,
        mut query: impl Execute<'q, Any>,
        limit: Option<usize>,
    ) -> Result<(Vec<AnyRow>, AnyQueryResult), sqlx::Error> {
        let args = query.take_arguments().map_err(sqlx::Error::Encode)?;
        self.run(query.sql(), args, limit)
    }
}

impl<'c> Executor<'c> for &'c mut LocalConn {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self.run_query(query, None) {
            Ok((rows, done)) => stream::iter(
                rows.into_iter()
                    .map(|r| Ok(Either::Right(r)))
                    .chain(std::iter::once(Ok(Either::Left(done)))),
            )
            .boxed(),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
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
        let r = self
            .run_query(query, Some(1))
            .map(|(rows, _)| rows.into_iter().next());
        Box::pin(async move { r })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        _sql: &'q str,
        _parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async {
            Err(sqlx::Error::Protocol(
                "the local SQLite connection does not prepare statements for reuse".into(),
            ))
        })
    }

    fn describe<'e, 'q: 'e>(
        self,
        _sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async {
            Err(sqlx::Error::Protocol(
                "the local SQLite connection does not describe statements".into(),
            ))
        })
    }
}

/// A statement that took longer than this is logged at `warn`, as sqlx logs its own.
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// Logs a statement as sqlx's own driver does (target `sqlx::query`, `debug`; `warn` when
/// slow), so `SALLYPORT_LOG=sqlx::query=debug` shows (and `bench/call_setups.sh COUNT=1`
/// counts) the local connection's statements too.
fn log_statement(
    sql: &str,
    r: &Result<(Vec<AnyRow>, AnyQueryResult), sqlx::Error>,
    elapsed: Duration,
) {
    let slow = elapsed >= SLOW_STATEMENT;
    if !slow && !tracing::enabled!(target: "sqlx::query", tracing::Level::DEBUG) {
        return;
    }
    let mut summary = sql.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
    if summary != sql {
        summary.push_str(" …");
    }
    let (rows_affected, rows_returned) = match r {
        Ok((rows, done)) => (done.rows_affected, rows.len()),
        Err(_) => (0, 0),
    };
    if slow {
        tracing::warn!(target: "sqlx::query", summary, db.statement = sql, rows_affected,
            rows_returned, ?elapsed, "slow statement: execution time exceeded alert threshold");
    } else {
        tracing::debug!(target: "sqlx::query", summary, db.statement = sql, rows_affected,
            rows_returned, ?elapsed);
    }
}

/// The SQLite file a `sqlite://path?…` URL names; `None` for an in-memory database (which
/// a second connection could not share).
pub fn file_of_url(url: &str) -> Option<PathBuf> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:" && !rest.contains("mode=memory"))
        .then(|| PathBuf::from(path))
}

/// Checkpoints the WAL of the database at `path` every [`CHECKPOINT_EVERY`], in a thread
/// of its own, for as long as `alive` can be upgraded (the database is open). Passive: it
/// never waits for readers or blocks writers; what it cannot copy yet it copies next time.
pub fn spawn_checkpointer(path: PathBuf, alive: Weak<()>) {
    let spawned = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let conn = match rusqlite::Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "the WAL checkpointer cannot open the database: the WAL will grow");
                    return;
                }
            };
            let _ = conn.busy_timeout(Duration::from_secs(1));
            while alive.upgrade().is_some() {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; trying again");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the WAL checkpointer thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    fn conn() -> (tempfile::TempDir, LocalConn) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LocalConn::open(&dir.path().join("t.db")).unwrap();
        c.batch("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, x REAL, b BLOB)")
            .unwrap();
        (dir, c)
    }

    #[tokio::test]
    async fn binds_by_number_and_decodes_as_the_any_driver() {
        let (_d, mut c) = conn();
        let done = sqlx::query("INSERT INTO t (id, n, x, b) VALUES ($2, $1, $3, $4)")
            .bind(7_i64)
            .bind("a")
            .bind(1.5_f64)
            .bind(vec![1_u8, 2])
            .execute(&mut c)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
        sqlx::query("INSERT INTO t (id, n) VALUES ($1, $2)")
            .bind("b")
            .bind(None::<i64>)
            .execute(&mut c)
            .await
            .unwrap();
        let r = sqlx::query("SELECT id, n, x, b FROM t WHERE id = $1")
            .bind("a")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(r.try_get::<String, _>("id").unwrap(), "a");
        assert_eq!(r.try_get::<i64, _>("n").unwrap(), 7);
        assert_eq!(r.try_get::<f64, _>(2).unwrap(), 1.5);
        assert_eq!(r.try_get::<Vec<u8>, _>("b").unwrap(), vec![1, 2]);
        let r = sqlx::query("SELECT n, x FROM t WHERE id = 'b'")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(r.try_get::<Option<i64>, _>("n").unwrap(), None);
        assert!(r.try_get::<i64, _>("n").is_err());
        let all = sqlx::query("SELECT id FROM t ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        let none = sqlx::query("SELECT id FROM t WHERE id = 'z'")
            .fetch_optional(&mut c)
            .await
            .unwrap();
        assert!(none.is_none());
    }

    #[tokio::test]
    async fn a_duplicate_key_is_a_unique_violation_and_a_missing_argument_an_error() {
        let (_d, mut c) = conn();
        let q = || sqlx::query("INSERT INTO t (id) VALUES ($1)").bind("a");
        q().execute(&mut c).await.unwrap();
        let e = q().execute(&mut c).await.unwrap_err();
        assert!(super::super::is_unique_violation(&e), "{e}");
        let e = sqlx::query("SELECT $2").bind(1_i64).fetch_one(&mut c).await;
        assert!(e.is_err());
    }
}
