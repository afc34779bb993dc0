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
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::{KeyKind, StateError, StateStore};
use crate::pipeline::{AuditFilter, AuditRecord, Outcome, Retention};

/// Timestamps are stored as fixed-width RFC 3339 text, so they sort as text.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
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
    audit: Arc<Mutex<Connection>>,
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
            Ok(connection)
        };
        let connection = open()?;
        connection.execute_batch(SCHEMA)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            audit: Arc::new(Mutex::new(open()?)),
        })
    }

    /// Runs audit `work` on the blocking pool with the connection.
    async fn with_audit<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let connection = Arc::clone(&self.audit);
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolls it back when the connection
            // is next used; the connection itself stays sound.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
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
        self.with_audit("append", move |connection| {
            // One transaction per batch: one fsync for many records. It
            // takes the write lock at once, so waiting for the other
            // connection's write goes through the busy timeout.
            let transaction =
                connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut insert = transaction.prepare_cached(
                    "INSERT INTO audit (at, tenant, namespace, topic, outcome, record)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (at, tenant, namespace, topic, outcome, text) in &rows {
                    insert.execute(params![at, tenant, namespace, topic, outcome, text])?;
                }
            }
            transaction.commit()
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
            .with_audit("query", move |connection| {
                let mut statement = connection.prepare_cached(&sql)?;
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
        let keep = retention.keep;
        let keep_per_tenant = retention.keep_per_tenant.max(1) as i64;
        let tenants = retention.tenants.clone();
        self.with_audit("prune", move |connection| {
            connection.execute("DELETE FROM audit WHERE at < ?1", params![cutoff])?;
            // Per tenant, below the id of its keep_per_tenant-th newest
            // record: one walk of that tenant's index entries.
            let mut per_tenant = connection.prepare_cached(
                "DELETE FROM audit WHERE tenant = ?1 AND id < (
                     SELECT id FROM audit WHERE tenant = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?;
            for tenant in &tenants {
                per_tenant.execute(params![tenant, keep_per_tenant - 1])?;
            }
            // Ids are AUTOINCREMENT: the newest `keep` records are those
            // above MAX(id) - keep, found with one index lookup (an OFFSET
            // would walk `keep` entries). Where the age prune above left
            // gaps among them (records are timed when published, numbered
            // when written), fewer than `keep` remain, never more.
            connection.execute(
                "DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?1",
                params![keep as i64],
            )?;
            Ok(())
        })
        .await
    }
}
