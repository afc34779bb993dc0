//! The persistent state store: one SQLite file, in WAL mode.
//!
//! rusqlite is synchronous, so every call runs on the blocking pool, with a
//! connection behind a mutex. The audit trail has a connection of its own:
//! its batch writes and prunes would otherwise hold up topic writes,
//! silences and readiness probes behind the same lock. SQLite serialises
//! the two connections' writes (WAL mode lets reads go on meanwhile).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::{KeyKind, StateError, StateStore};
use crate::pipeline::{AuditFilter, AuditRecord, Outcome, Retention};

/// Timestamps are stored as fixed-width RFC 3339 text, so they sort as text.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

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
    CREATE TABLE IF NOT EXISTS audit (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        at        TEXT NOT NULL,
        tenant    TEXT NOT NULL,
        namespace TEXT NOT NULL,
        topic     TEXT NOT NULL,
        outcome   TEXT NOT NULL,
        record    TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, id);
    CREATE INDEX IF NOT EXISTS audit_by_at ON audit (at);
";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    audit: Arc<Mutex<AuditTable>>,
}

/// The audit connection and how many rows the table holds, in all and per
/// tenant. Counted once at open and kept by every append and prune, so a
/// prune knows how many of the oldest rows to drop without counting (a
/// count, like an OFFSET, walks the whole index).
#[derive(Debug)]
struct AuditTable {
    connection: Connection,
    rows: u64,
    rows_by_tenant: HashMap<String, u64>,
}

impl AuditTable {
    fn open(connection: Connection) -> rusqlite::Result<Self> {
        let rows_by_tenant: HashMap<String, u64> = connection
            .prepare("SELECT tenant, COUNT(*) FROM audit GROUP BY tenant")?
            .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Self {
            rows: rows_by_tenant.values().sum(),
            rows_by_tenant,
            connection,
        })
    }

    /// Deletes with `sql` (which returns each deleted row's tenant) and
    /// takes the deleted rows off the counts.
    fn delete(&mut self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<()> {
        let tenants = self
            .connection
            .prepare_cached(sql)?
            .query_map(params, |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for tenant in tenants {
            self.forget(&tenant, 1);
        }
        Ok(())
    }

    /// Deletes the `excess` oldest rows of `tenant`. The tenant is known,
    /// so no row comes back to say whose it was.
    fn delete_oldest_of(&mut self, tenant: &str, excess: u64) -> rusqlite::Result<()> {
        let deleted = self
            .connection
            .prepare_cached(
                "DELETE FROM audit WHERE id IN (
                     SELECT id FROM audit WHERE tenant = ?1 ORDER BY id LIMIT ?2)",
            )?
            .execute(params![tenant, i64::try_from(excess).unwrap_or(i64::MAX)])?;
        self.forget(tenant, deleted as u64);
        Ok(())
    }

    /// Takes `deleted` rows of `tenant` off the counts.
    fn forget(&mut self, tenant: &str, deleted: u64) {
        self.rows -= deleted;
        if let Some(count) = self.rows_by_tenant.get_mut(tenant) {
            *count -= deleted;
            if *count == 0 {
                self.rows_by_tenant.remove(tenant);
            }
        }
    }
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
        let rows: Vec<_> = records
            .iter()
            .map(|record| {
                let text = serde_json::to_string(record).expect("audit records serialise");
                let r = record;
                (
                    timestamp(r.at),
                    r.tenant.clone(),
                    r.namespace.clone(),
                    r.topic.clone(),
                    r.outcome.as_str(),
                    text,
                )
            })
            .collect();
        self.with_audit("append", move |table| {
            // One transaction per batch: one fsync for many records. It
            // takes the write lock at once, so waiting for the other
            // connection's write goes through the busy timeout.
            let transaction = table
                .connection
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut insert = transaction.prepare_cached(
                    "INSERT INTO audit (at, tenant, namespace, topic, outcome, record)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (at, tenant, namespace, topic, outcome, text) in &rows {
                    insert.execute(params![at, tenant, namespace, topic, outcome, text])?;
                }
            }
            transaction.commit()?;
            table.rows += rows.len() as u64;
            for (_, tenant, ..) in rows {
                *table.rows_by_tenant.entry(tenant).or_default() += 1;
            }
            Ok(())
        })
        .await
    }

    async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StateError> {
        let mut sql = String::from("SELECT id, record FROM audit WHERE 1 = 1");
        let mut values: Vec<String> = Vec::new();
        // `topic` holds Kafka names, whose last part is the short name.
        let mut equal = |expression: &str, value: Option<&str>| {
            if let Some(value) = value {
                values.push(value.to_owned());
                sql.push_str(&format!(" AND {expression} = ?{}", values.len()));
            }
        };
        let scope = &filter.scope;
        equal("tenant", scope.tenant.exact());
        equal("namespace", scope.namespace.exact());
        equal(
            "substr(topic, length(namespace) + length(tenant) + 3)",
            scope.name.exact(),
        );
        equal("outcome", filter.outcome.map(Outcome::as_str));
        if let Some(before) = filter.before {
            values.push(before.to_string());
            sql.push_str(&format!(" AND id < CAST(?{} AS INTEGER)", values.len()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit));
        let rows = self
            .with_audit("query", move |table| {
                let mut statement = table.connection.prepare_cached(&sql)?;
                statement
                    .query_map(params_from_iter(values.iter()), |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(id, text)| {
                let mut record: AuditRecord =
                    serde_json::from_str(&text).map_err(|source| StateError::Audit {
                        operation: "decode",
                        source: Box::new(source),
                    })?;
                record.id = id as u64;
                Ok(record)
            })
            .collect()
    }

    async fn prune_audit(&self, retention: &Retention) -> Result<(), StateError> {
        let cutoff = timestamp(retention.cutoff);
        let (keep, keep_per_tenant) = (retention.keep as u64, retention.keep_per_tenant as u64);
        self.with_audit("prune", move |table| {
            // The oldest rows go first, found from the start of an index:
            // each delete walks only the rows it drops.
            table.delete(
                "DELETE FROM audit WHERE at < ?1 RETURNING tenant",
                params![cutoff],
            )?;
            let over: Vec<(String, u64)> = table
                .rows_by_tenant
                .iter()
                .filter(|(_, rows)| **rows > keep_per_tenant)
                .map(|(tenant, rows)| (tenant.clone(), rows - keep_per_tenant))
                .collect();
            for (tenant, excess) in over {
                table.delete_oldest_of(&tenant, excess)?;
            }
            if table.rows > keep {
                let excess = table.rows - keep;
                table.delete(
                    "DELETE FROM audit WHERE id IN (SELECT id FROM audit ORDER BY id LIMIT ?1)
                     RETURNING tenant",
                    params![i64::try_from(excess).unwrap_or(i64::MAX)],
                )?;
            }
            Ok(())
        })
        .await
    }
}
