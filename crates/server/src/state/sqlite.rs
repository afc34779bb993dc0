//! The persistent state store: one SQLite file, in WAL mode.
//!
//! rusqlite is synchronous, so every call runs on the blocking pool, with a
//! connection behind a mutex. The audit trail has a connection of its own:
//! its batch writes and prunes would otherwise hold up topic writes,
//! silences and readiness probes behind the same lock. SQLite serialises
//! the two connections' writes (WAL mode lets reads go on meanwhile).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::sqlite_audit::AuditTable;
use super::{KeyKind, StateError, StateStore};
use crate::pipeline::{AuditFilter, AuditRecord, Retention};

/// Settings of each connection: `synchronous` is a connection's own, so the
/// audit connection needs it as much as the first (in WAL mode, NORMAL syncs
/// at checkpoints rather than at every commit).
const CONNECTION_SETTINGS: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
";

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS records (
        kind  TEXT NOT NULL,
        id    TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;
";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    audit: Arc<Mutex<AuditTable>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its directory.
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| {
                rusqlite::Error::InvalidPath(format!("{}: {error}", dir.display()).into())
            })?;
        }
        let open = || -> rusqlite::Result<Connection> {
            let connection = Connection::open(path)?;
            connection.busy_timeout(std::time::Duration::from_secs(5))?;
            connection.execute_batch(CONNECTION_SETTINGS)?;
            Ok(connection)
        };
        let connection = open()?;
        connection.execute_batch(SCHEMA)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            audit: Arc::new(Mutex::new(AuditTable::open(open()?)?)),
        })
    }

    /// Runs audit `work` on the blocking pool with the audit table.
    async fn with_audit<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&mut AuditTable) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let table = Arc::clone(&self.audit);
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolls it back when the connection
            // is next used; the connection itself stays sound.
            let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut table)
        })
        .await
        .expect("sqlite task panicked")
        .map_err(|source| StateError::Audit {
            operation,
            source: Box::new(source),
        })
    }

    /// Runs `work` on the blocking pool with the connection.
    async fn with_connection<T: Send + 'static>(
        &self,
        operation: &'static str,
        kind: KeyKind,
        id: &str,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let connection = Arc::clone(&self.connection);
        let result = tokio::task::spawn_blocking(move || {
            let connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&connection)
        })
        .await
        .expect("sqlite task panicked");
        result.map_err(|source| StateError::Storage {
            operation,
            kind,
            id: id.to_owned(),
            source: Box::new(source),
        })
    }
}

fn parse(kind: KeyKind, id: &str, text: &str) -> Result<serde_json::Value, StateError> {
    serde_json::from_str(text).map_err(|source| StateError::Corrupt {
        kind,
        id: id.to_owned(),
        source,
    })
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn insert_new(
        &self,
        kind: KeyKind,
        id: &str,
        value: &serde_json::Value,
    ) -> Result<bool, StateError> {
        let (owned_id, text) = (id.to_owned(), value.to_string());
        self.with_connection("insert", kind, id, move |connection| {
            connection
                .execute(
                    "INSERT OR IGNORE INTO records (kind, id, value) VALUES (?1, ?2, ?3)",
                    params![kind.as_str(), owned_id, text],
                )
                .map(|inserted| inserted == 1)
        })
        .await
    }

    async fn put(
        &self,
        kind: KeyKind,
        id: &str,
        value: &serde_json::Value,
    ) -> Result<(), StateError> {
        let (owned_id, text) = (id.to_owned(), value.to_string());
        self.with_connection("write", kind, id, move |connection| {
            connection
                .execute(
                    "INSERT OR REPLACE INTO records (kind, id, value) VALUES (?1, ?2, ?3)",
                    params![kind.as_str(), owned_id, text],
                )
                .map(drop)
        })
        .await
    }

    async fn get(&self, kind: KeyKind, id: &str) -> Result<Option<serde_json::Value>, StateError> {
        let owned_id = id.to_owned();
        let text = self
            .with_connection("read", kind, id, move |connection| {
                connection
                    .query_row(
                        "SELECT value FROM records WHERE kind = ?1 AND id = ?2",
                        params![kind.as_str(), owned_id],
                        |row| row.get::<_, String>(0),
                    )
                    .optional()
            })
            .await?;
        text.map(|text| parse(kind, id, &text)).transpose()
    }

    async fn delete(&self, kind: KeyKind, id: &str) -> Result<bool, StateError> {
        let owned_id = id.to_owned();
        self.with_connection("delete", kind, id, move |connection| {
            connection
                .execute(
                    "DELETE FROM records WHERE kind = ?1 AND id = ?2",
                    params![kind.as_str(), owned_id],
                )
                .map(|deleted| deleted == 1)
        })
        .await
    }

    async fn list(&self, kind: KeyKind) -> Result<Vec<serde_json::Value>, StateError> {
        let rows = self
            .with_connection("list", kind, "*", move |connection| {
                let mut statement = connection
                    .prepare_cached("SELECT id, value FROM records WHERE kind = ?1 ORDER BY id")?;
                statement
                    .query_map(params![kind.as_str()], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.iter()
            .map(|(id, text)| parse(kind, id, text))
            .collect()
    }

    async fn check_ready(&self) -> Result<(), StateError> {
        self.with_connection("health check", KeyKind::BusTopic, "*", |connection| {
            connection.query_row("SELECT 1", [], |_| Ok(()))
        })
        .await
    }

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StateError> {
        let records = records.to_vec();
        self.with_audit("append", move |table| table.append(records))
            .await
    }

    async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StateError> {
        let filter = filter.clone();
        self.with_audit("query", move |table| table.query(&filter))
            .await
    }

    async fn prune_audit(&self, retention: &Retention) -> Result<(), StateError> {
        let retention = retention.clone();
        self.with_audit("prune", move |table| table.prune(&retention))
            .await
    }
}
