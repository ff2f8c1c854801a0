//! The schema's version, checked before migrating: a node refuses to start against a
//! database whose schema is newer than it knows.
//!
//! In a rolling upgrade the first upgraded node migrates the shared database while the
//! others still serve. Migrations are additive (new tables, new nullable or defaulted
//! columns, new indexes; never a drop or a rename in the release that stops using a
//! column), so the nodes already running keep working on the newer schema. A node of
//! the old version that *starts* then, though, would run against tables it does not
//! know: it stops with both versions named ([`SchemaError`]) instead.

use super::{Backend, Db, DbError};
use sqlx::Row;

/// The database's schema is newer than this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the database's schema is at migration {database}, newer than this build of sallyport \
     knows (migrations up to {known}): a newer version has migrated it. Start this node with \
     that newer version (nodes already running may finish serving: migrations are additive)"
)]
pub struct SchemaError {
    /// The newest migration applied to the database.
    pub database: i64,
    /// The newest migration this build carries.
    pub known: i64,
}

/// Whether a build that knows migrations up to `known` may run on a database whose newest
/// applied migration is `applied` (`None`: a new database).
pub fn check(applied: Option<i64>, known: i64) -> Result<(), SchemaError> {
    match applied {
        Some(database) if database > known => Err(SchemaError { database, known }),
        _ => Ok(()),
    }
}

/// The newest migration this build carries for `db`'s backend.
pub fn known_version(db: &Db) -> i64 {
    db.migrator()
        .migrations
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// The newest migration applied to `db`; `None` when none ever ran.
pub async fn applied_version(db: &Db) -> Result<Option<i64>, sqlx::Error> {
    let exists = match db.backend() {
        Backend::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master \
             WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
        }
    };
    let n: i64 = sqlx::query(exists)
        .fetch_one(db.pool())
        .await?
        .try_get("n")?;
    if n == 0 {
        return Ok(None);
    }
    sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
        .fetch_one(db.pool())
        .await?
        .try_get("v")
}

/// Refuses (before any migration runs) a database migrated by a newer build.
pub async fn refuse_newer(db: &Db) -> Result<(), DbError> {
    let applied = applied_version(db).await?;
    check(applied, known_version(db))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::TestDb;

    #[test]
    fn only_a_newer_schema_is_refused() {
        assert_eq!(check(None, 17), Ok(()));
        assert_eq!(check(Some(5), 17), Ok(()), "older: migrated forward");
        assert_eq!(check(Some(17), 17), Ok(()));
        let e = check(Some(18), 17).unwrap_err();
        assert_eq!(
            e,
            SchemaError {
                database: 18,
                known: 17
            }
        );
        let m = e.to_string();
        assert!(m.contains("migration 18") && m.contains("up to 17"), "{m}");
    }

    /// Rolling upgrades: from the first cluster migration (0008, `nodes`) on, migrations
    /// only add, in both dialects, so nodes of the previous release keep serving on a
    /// database a newer node migrated. (0005 and 0007 dropped and renamed, before nodes
    /// shared a database.)
    #[test]
    fn migrations_since_the_cluster_only_add() {
        const FORBIDDEN: [&str; 6] = [
            "DROP TABLE",
            "DROP COLUMN",
            "DROP CONSTRAINT",
            "RENAME",
            "ALTER COLUMN",
            "DROP DEFAULT",
        ];
        let all = super::super::SQLITE_MIGRATIONS
            .migrations
            .iter()
            .chain(super::super::POSTGRES_MIGRATIONS.migrations.iter());
        let mut checked = 0;
        for m in all.filter(|m| m.version >= 8) {
            let sql: String = m
                .sql
                .lines()
                .map(|l| l.split("--").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase();
            let sql = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            for f in FORBIDDEN {
                assert!(
                    !sql.contains(f),
                    "migration {} ({}) has {f}: migrations must only add",
                    m.version,
                    m.description
                );
            }
            checked += 1;
        }
        assert!(
            checked >= 30,
            "both dialects' migrations were read: {checked}"
        );
    }

    /// A database another (newer) build migrated further: `migrate` names both versions
    /// and applies nothing.
    async fn refused_on(t: TestDb) {
        let known = known_version(&t.db);
        assert_eq!(applied_version(&t.db).await.unwrap(), Some(known));
        let newer = known + 1;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES ($1, 'from a newer build', TRUE, $2, 0)",
        )
        .bind(newer)
        .bind(vec![0u8; 48])
        .execute(t.db.pool())
        .await
        .unwrap();
        let e = t.db.migrate().await.unwrap_err().to_string();
        assert!(
            e.contains(&format!("migration {newer}")) && e.contains(&format!("up to {known}")),
            "{e}"
        );
        t.cleanup().await;
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_on_sqlite() {
        refused_on(TestDb::sqlite().await).await;
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_on_postgres() {
        if let Some(t) = TestDb::postgres().await {
            refused_on(t).await;
        }
    }
}
