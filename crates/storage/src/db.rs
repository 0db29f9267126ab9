//! Opening the database and running a service's migrations at start-up.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }
}

/// Opens a pool to `url`. For SQLite the file's directory is created, and the database is put
/// in WAL mode with a busy timeout so the services of one process can share it.
pub async fn connect(url: &str) -> Result<DatabaseConnection, Error> {
    let backend = Backend::of(url);
    if backend == Backend::Sqlite
        && let Some(path) = sqlite_path(url)
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Other(format!("create {}: {e}", dir.display())))?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        // A ping before every query is a round trip on the hot path, so only a connection idle
        // for a second is checked. Longer let a restarted database's dead connections fail one
        // request each, by then on a path that retries nothing (a join, a chat message).
        .test_before_acquire_if_idle_for(Duration::from_secs(1))
        .sqlx_logging(false);
    match backend {
        // A few connections are kept open. Opening one is slow with TLS: sqlx 0.9.0 leaves
        // Nagle's algorithm on, and two TLS handshake flights each wait out the server's delayed
        // ACK (fixed upstream, not yet released). On demand, that landed on the first spawns
        // after a start (a spawn and its vm-agent's link need several connections at once).
        Backend::Postgres => options.max_connections(16).min_connections(4),
        // Every connection of the pool gets these (a `PRAGMA` run once set them on one
        // connection only: the others waited out a full sync on every commit).
        Backend::Sqlite => options
            .max_connections(8)
            .min_connections(1)
            .map_sqlx_sqlite_opts(|sqlite| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                sqlite
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10))
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
            }),
    };
    Ok(Database::connect(options).await?)
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Applies a service's pending migrations.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), Error> {
    M::up(db, None).await?;
    Ok(())
}

/// An id (or any value stored as text) read back from a row; a malformed one is a database
/// error naming it.
pub fn parse_stored<T: std::str::FromStr>(s: &str) -> Result<T, sea_orm::DbErr> {
    s.parse()
        .map_err(|_| sea_orm::DbErr::Custom(format!("bad id in database: {s}")))
}

/// A `NOT NULL` string column of at most `len` characters, for the services' migrations.
pub fn text_column(name: &str, len: u32) -> sea_orm_migration::prelude::ColumnDef {
    use sea_orm_migration::prelude::{Alias, ColumnDef};
    ColumnDef::new(Alias::new(name))
        .string_len(len)
        .not_null()
        .to_owned()
}

/// Whether `err` means the database could not be reached (down, restarting, no connection to
/// be had) rather than a refused statement or a bug: the caller may try again.
pub fn db_unavailable(err: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::{DbErr, RuntimeErr};
    let runtime = match err {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return false,
    };
    let RuntimeErr::SqlxError(sqlx) = runtime else {
        return matches!(err, DbErr::Conn(_));
    };
    match sqlx.as_ref() {
        Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::WorkerCrashed => true,
        // PostgreSQL shutting down or starting up (class 57: operator intervention).
        Sqlx::Database(db) => db.code().is_some_and(|code| code.starts_with("57P")),
        _ => matches!(err, DbErr::Conn(_)),
    }
}
