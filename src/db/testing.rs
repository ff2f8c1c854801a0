//! Fresh databases for tests: a temporary SQLite file, or a new PostgreSQL database per
//! test when `SALLYPORT_TEST_DATABASE_URL` is set. With `SALLYPORT_REQUIRE_EXTERNAL=1`
//! (CI) a missing PostgreSQL is a failure instead of a skip.
//!
//! Test support only (the tests' own fixtures): a database that cannot be made is a
//! failed test, so panicking here is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{Backend, Db};

async fn migrate(db: &Db, version: Option<i64>) {
    match version {
        None => db.migrate().await.expect("migrate"),
        Some(v) => db.migrate_to(v).await.expect("migrate to a version"),
    }
}

/// The environment variable naming a PostgreSQL server for tests.
pub const PG_URL_VAR: &str = "SALLYPORT_TEST_DATABASE_URL";
/// Set to 1 in CI: a test that would skip for a missing external tool fails instead.
pub const REQUIRE_VAR: &str = "SALLYPORT_REQUIRE_EXTERNAL";

/// A migrated test database that cleans up after itself (the SQLite file lives in a
/// temporary directory; the PostgreSQL database is dropped on [`TestDb::cleanup`], or
/// when the `TestDb` is dropped: a test that ends without its cleanup, or panics, leaves
/// no database behind on the server).
pub struct TestDb {
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        TestDb::sqlite_at(None).await
    }

    /// Migrated up to `version` only (all migrations: `None`).
    async fn sqlite_at(version: Option<i64>) -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/test.db", dir.path().display());
        let db = Db::connect(&url, 8).await.expect("connect sqlite");
        migrate(&db, version).await;
        TestDb {
            db,
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A new PostgreSQL database, or `None` (with the reason printed) when no server is
    /// configured. Panics when the server is required (`SALLYPORT_REQUIRE_EXTERNAL=1`).
    pub async fn postgres() -> Option<TestDb> {
        TestDb::postgres_at(None).await
    }

    async fn postgres_at(version: Option<i64>) -> Option<TestDb> {
        let Some(admin_url) = std::env::var(PG_URL_VAR).ok().filter(|u| !u.is_empty()) else {
            skip_or_fail(&format!("{PG_URL_VAR} is not set: PostgreSQL test skipped"));
            return None;
        };
        let name = format!("sallyport_t_{}", uuid::Uuid::new_v4().simple());
        let admin = Db::connect(&admin_url, 1)
            .await
            .expect("connect postgres admin");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(admin.pool())
            .await
            .expect("create test database");
        admin.close().await;
        let url = with_database(&admin_url, &name);
        let db = Db::connect(&url, 20).await.expect("connect test database");
        migrate(&db, version).await;
        Some(TestDb {
            db,
            _dir: None,
            pg: Some((admin_url, name)),
        })
    }

    pub async fn of(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(TestDb::sqlite().await),
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    /// A database migrated up to `version` only, as an older release left it (to test
    /// the migrations after it on its data: [`Db::migrate`] applies them).
    pub async fn of_version(backend: Backend, version: i64) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(TestDb::sqlite_at(Some(version)).await),
            Backend::Postgres => TestDb::postgres_at(Some(version)).await,
        }
    }

    /// The URL of the PostgreSQL database (for a gateway subprocess on it); `None` on
    /// SQLite.
    pub fn postgres_url(&self) -> Option<String> {
        self.pg
            .as_ref()
            .map(|(admin_url, name)| with_database(admin_url, name))
    }

    /// Closes the pool and drops the PostgreSQL database.
    pub async fn cleanup(mut self) {
        self.db.close().await;
        if let Some((admin_url, name)) = self.pg.take() {
            drop_database(&admin_url, &name).await;
        }
    }
}

impl Drop for TestDb {
    /// A PostgreSQL database not dropped by [`TestDb::cleanup`] is dropped here, on a
    /// thread of its own with its own runtime (`drop` cannot await, and the test's
    /// runtime may be single-threaded or shutting down). `WITH (FORCE)` ends the pool's
    /// sessions, still open at this point.
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.pg.take() else {
            return;
        };
        let dropper = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&admin_url, &name));
            }
        });
        let _ = dropper.join();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(admin) = Db::connect(admin_url, 1).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(admin.pool())
            .await;
        admin.close().await;
    }
}

/// Prints why a test is skipped, or panics if external tools are required.
pub fn skip_or_fail(reason: &str) {
    if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
        panic!("{reason} (and {REQUIRE_VAR}=1)");
    }
    eprintln!("SKIPPED: {reason}");
}

/// `postgres://u@h:5432/orig?x` → `postgres://u@h:5432/<name>?x`
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}
