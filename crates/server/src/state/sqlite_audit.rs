//! The SQLite store's audit trail, kept in pages: one row holds one
//! tenant's records of one write, as a JSON array.
//!
//! A row per record cost each publish a table insert, two index inserts and,
//! once pruned, as many deletes: the largest part of a publish's CPU time
//! after the socket's. A page costs that once per tenant and write (up to
//! `audit.batch_size` records), so a record costs little more than its JSON.
//!
//! A write numbers its records in order, one run of ids. Its pages share
//! that run (they carry its first id as `write_id`) and interleave within
//! it; two writes' pages never do. So the trail read newest first is the
//! writes read by id downwards, each write's pages merged by id, and one
//! tenant's trail is its pages read backwards. Prunes drop whole pages and
//! rewrite those a limit cuts through, so they keep exactly what
//! [`Retention`] says.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::pipeline::{AuditFilter, AuditRecord, Outcome, Retention};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS audit_pages (
        first_id  INTEGER PRIMARY KEY,
        -- The first id of the write that stored the page.
        write_id  INTEGER NOT NULL,
        tenant    TEXT NOT NULL,
        -- The page's oldest and newest record, in microseconds since 1970.
        oldest_at INTEGER NOT NULL,
        newest_at INTEGER NOT NULL,
        rows      INTEGER NOT NULL,
        -- A bit per outcome the page holds, so that a query for one
        -- outcome skips the pages without it unread.
        outcomes  INTEGER NOT NULL,
        -- Last, so that reading the columns before it leaves it unread.
        records   TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS audit_pages_by_tenant ON audit_pages (tenant, first_id);
    CREATE INDEX IF NOT EXISTS audit_pages_by_age ON audit_pages (oldest_at);
    -- The next record's id, kept apart from the pages so that ids go on
    -- growing after every page was pruned.
    CREATE TABLE IF NOT EXISTS audit_sequence (next_id INTEGER NOT NULL);
";

/// The bit of `outcome` in a page's `outcomes`.
fn outcome_bit(outcome: Outcome) -> i64 {
    1 << outcome as u32
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// One stored page, without its records.
#[derive(Debug)]
struct PageRow {
    first_id: i64,
    write_id: i64,
    tenant: String,
    rows: u64,
}

/// The audit connection, the next id, and how many records the pages hold.
#[derive(Debug)]
pub(super) struct AuditTable {
    connection: Connection,
    next_id: i64,
    counts: Counts,
}

/// How many records the pages hold, in all and per tenant: counted once at
/// open and kept by every append and prune, so a prune knows how many of
/// the oldest to drop without counting.
#[derive(Debug, Clone)]
struct Counts {
    rows: u64,
    rows_by_tenant: HashMap<String, u64>,
}

impl Counts {
    fn add(&mut self, tenant: &str, added: u64) {
        self.rows += added;
        match self.rows_by_tenant.get_mut(tenant) {
            Some(count) => *count += added,
            None => drop(self.rows_by_tenant.insert(tenant.to_owned(), added)),
        }
    }

    /// Takes `gone` records of `tenant` off the counts.
    fn forget(&mut self, tenant: &str, gone: u64) {
        self.rows -= gone;
        if let Some(count) = self.rows_by_tenant.get_mut(tenant) {
            *count -= gone;
            if *count == 0 {
                self.rows_by_tenant.remove(tenant);
            }
        }
    }
}

impl AuditTable {
    /// Opens the trail on `connection`, first moving the records of the
    /// table of one row per record, if the file has one, into pages.
    pub(super) fn open(mut connection: Connection) -> rusqlite::Result<Self> {
        connection.execute_batch(SCHEMA)?;
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: Option<i64> = transaction
            .query_row("SELECT next_id FROM audit_sequence", [], |row| row.get(0))
            .optional()?;
        let next_id = match stored {
            Some(next_id) => next_id,
            None => {
                transaction.execute("INSERT INTO audit_sequence (next_id) VALUES (1)", [])?;
                1
            }
        };
        let next_id = migrate_rows(&transaction, next_id)?;
        transaction.execute("UPDATE audit_sequence SET next_id = ?1", [next_id])?;
        transaction.commit()?;
        let rows_by_tenant: HashMap<String, u64> = connection
            .prepare("SELECT tenant, SUM(rows) FROM audit_pages GROUP BY tenant")?
            .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Self {
            counts: Counts {
                rows: rows_by_tenant.values().sum(),
                rows_by_tenant,
            },
            next_id,
            connection,
        })
    }

    /// Numbers `records` in order and stores them, a page per tenant, in
    /// one transaction.
    pub(super) fn append(&mut self, mut records: Vec<AuditRecord>) -> rusqlite::Result<()> {
        let write_id = self.next_id;
        for (record, id) in records.iter_mut().zip(write_id..) {
            record.id = id as u64;
        }
        let next_id = write_id + records.len() as i64;
        // Taking the write lock at once makes waiting for the other
        // connection's write go through the busy timeout.
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pages = insert_pages(&transaction, write_id, records)?;
        transaction.execute("UPDATE audit_sequence SET next_id = ?1", [next_id])?;
        transaction.commit()?;
        self.next_id = next_id;
        for (tenant, rows) in pages {
            self.counts.add(&tenant, rows);
        }
        Ok(())
    }

    /// The records `filter` matches, newest first: pages are read from the
    /// newest down until the page of records is full.
    pub(super) fn query(&self, filter: &AuditFilter) -> rusqlite::Result<Vec<AuditRecord>> {
        let tenant = filter.scope.tenant.exact();
        let before = filter
            .before
            .map_or(i64::MAX, |before| i64::try_from(before).unwrap_or(i64::MAX));
        let outcomes = filter.outcome.map_or(-1, outcome_bit);
        // Two statements rather than `?1 IS NULL OR tenant = ?1`, which
        // would keep the planner off the tenant's index.
        let (mut statement, mut pages);
        match tenant {
            Some(tenant) => {
                statement = self.connection.prepare_cached(
                    "SELECT write_id, records FROM audit_pages
                     WHERE tenant = ?1 AND first_id < ?2 AND outcomes & ?3 != 0
                     ORDER BY first_id DESC",
                )?;
                pages = statement.query(params![tenant, before, outcomes])?;
            }
            None => {
                statement = self.connection.prepare_cached(
                    "SELECT write_id, records FROM audit_pages
                     WHERE first_id < ?1 AND outcomes & ?2 != 0
                     ORDER BY first_id DESC",
                )?;
                pages = statement.query(params![before, outcomes])?;
            }
        }
        // The pages of one write come one after another: gathered, then
        // taken newest first.
        let mut found = Vec::new();
        let mut write: Option<(i64, Vec<AuditRecord>)> = None;
        loop {
            let page = pages.next()?;
            let write_id = page.map(|page| page.get::<_, i64>(0)).transpose()?;
            if let Some((_, mut records)) = write.take_if(|(current, _)| Some(*current) != write_id)
            {
                records.sort_unstable_by_key(|record| std::cmp::Reverse(record.id));
                let wanted = filter.limit - found.len();
                found.extend(
                    records
                        .into_iter()
                        .filter(|record| filter.matches(record))
                        .take(wanted),
                );
                if found.len() == filter.limit {
                    break;
                }
            }
            let (Some(page), Some(write_id)) = (page, write_id) else {
                break;
            };
            let records = decode(page.get_ref(1)?.as_str()?)?;
            match &mut write {
                Some((_, gathered)) => gathered.extend(records),
                None => write = Some((write_id, records)),
            }
        }
        Ok(found)
    }

    /// Drops what `retention` does not keep, in one transaction.
    pub(super) fn prune(&mut self, retention: &Retention) -> rusqlite::Result<()> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The counts as they will be once the transaction commits.
        let mut counts = self.counts.clone();
        let cutoff = micros(retention.cutoff);
        // Pages with a record past the age limit: found from the start of
        // their index, so the prune walks only the pages it changes.
        let aged: Vec<PageRow> = transaction
            .prepare_cached(
                "SELECT first_id, write_id, tenant, rows FROM audit_pages
                 WHERE oldest_at < ?1 ORDER BY oldest_at",
            )?
            .query_map([cutoff], page_row)?
            .collect::<rusqlite::Result<_>>()?;
        for page in aged {
            let gone = trim(&transaction, &page, |records| {
                records.retain(|record| micros(record.at) >= cutoff);
            })?;
            counts.forget(&page.tenant, gone);
        }
        // Then each tenant over its share, then the whole trail over its
        // limit, oldest records first.
        let keep_per_tenant = retention.keep_per_tenant as u64;
        let over: Vec<(String, u64)> = counts
            .rows_by_tenant
            .iter()
            .filter(|(_, rows)| **rows > keep_per_tenant)
            .map(|(tenant, rows)| (tenant.clone(), rows - keep_per_tenant))
            .collect();
        for (tenant, excess) in over {
            drop_oldest(&transaction, Some(&tenant), excess, &mut counts)?;
        }
        let keep = retention.keep as u64;
        if counts.rows > keep {
            let excess = counts.rows - keep;
            drop_oldest(&transaction, None, excess, &mut counts)?;
        }
        transaction.commit()?;
        self.counts = counts;
        Ok(())
    }
}

fn page_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PageRow> {
    Ok(PageRow {
        first_id: row.get(0)?,
        write_id: row.get(1)?,
        tenant: row.get(2)?,
        rows: row.get::<_, i64>(3)? as u64,
    })
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, error.into())
    })
}

/// Stores one write's `records`, numbered, a page per tenant; returns
/// each tenant's count.
fn insert_pages(
    transaction: &Transaction<'_>,
    write_id: i64,
    mut records: Vec<AuditRecord>,
) -> rusqlite::Result<Vec<(String, u64)>> {
    // Stable, so each tenant's records stay in id order.
    records.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    records
        .chunk_by(|a, b| a.tenant == b.tenant)
        .map(|page| {
            insert_page(transaction, write_id, page)?;
            Ok((page[0].tenant.clone(), page.len() as u64))
        })
        .collect()
}

/// Stores one tenant's records of one write, numbered and in id order.
fn insert_page(
    transaction: &Transaction<'_>,
    write_id: i64,
    page: &[AuditRecord],
) -> rusqlite::Result<()> {
    let (mut oldest, mut newest) = (i64::MAX, i64::MIN);
    let mut outcomes = 0;
    for record in page {
        let at = micros(record.at);
        (oldest, newest) = (oldest.min(at), newest.max(at));
        outcomes |= outcome_bit(record.outcome);
    }
    let text = serde_json::to_string(page).expect("audit records serialise");
    transaction
        .prepare_cached(
            "INSERT INTO audit_pages
                 (first_id, write_id, tenant, oldest_at, newest_at, rows, outcomes, records)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            page[0].id as i64,
            write_id,
            page[0].tenant,
            oldest,
            newest,
            page.len() as i64,
            outcomes,
            text
        ])?;
    Ok(())
}

/// Deletes `page`, returning its records.
fn take_page(transaction: &Transaction<'_>, page: &PageRow) -> rusqlite::Result<Vec<AuditRecord>> {
    let text: String = transaction
        .prepare_cached("DELETE FROM audit_pages WHERE first_id = ?1 RETURNING records")?
        .query_row([page.first_id], |row| row.get(0))?;
    decode(&text)
}

/// Removes `page`'s records that `keep` takes out of the list, rewriting
/// the page with the rest, if any; returns how many went.
fn trim(
    transaction: &Transaction<'_>,
    page: &PageRow,
    keep: impl FnOnce(&mut Vec<AuditRecord>),
) -> rusqlite::Result<u64> {
    let mut records = take_page(transaction, page)?;
    keep(&mut records);
    if !records.is_empty() {
        insert_page(transaction, page.write_id, &records)?;
    }
    Ok(page.rows - records.len() as u64)
}

/// Drops the `excess` oldest records, of `tenant` or of all, taking them
/// off `counts`: whole writes' pages while they fit, then the oldest
/// records of the next write's, merged by id.
fn drop_oldest(
    transaction: &Transaction<'_>,
    tenant: Option<&str>,
    mut excess: u64,
    counts: &mut Counts,
) -> rusqlite::Result<()> {
    let (mut statement, mut pages);
    match tenant {
        Some(tenant) => {
            statement = transaction.prepare_cached(
                "SELECT first_id, write_id, tenant, rows FROM audit_pages WHERE tenant = ?1
                 ORDER BY first_id",
            )?;
            pages = statement.query([tenant])?;
        }
        None => {
            statement = transaction.prepare_cached(
                "SELECT first_id, write_id, tenant, rows FROM audit_pages ORDER BY first_id",
            )?;
            pages = statement.query([])?;
        }
    }
    // The pages to drop whole, and those of the write the limit cuts;
    // a write's pages come one after another.
    let mut whole: Vec<PageRow> = Vec::new();
    let mut cut: Vec<PageRow> = Vec::new();
    let mut write: Vec<PageRow> = Vec::new();
    let mut write_rows = 0;
    loop {
        let page = pages.next()?.map(page_row).transpose()?;
        let write_ends = match (&page, write.first()) {
            (Some(page), Some(first)) => page.write_id != first.write_id,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if write_ends {
            if write_rows <= excess {
                excess -= write_rows;
                whole.append(&mut write);
                write_rows = 0;
            } else {
                cut = write;
                break;
            }
        }
        match page {
            Some(page) if excess > 0 => {
                write_rows += page.rows;
                write.push(page);
            }
            _ => break,
        }
    }
    drop(pages);
    for page in whole {
        transaction
            .prepare_cached("DELETE FROM audit_pages WHERE first_id = ?1")?
            .execute([page.first_id])?;
        counts.forget(&page.tenant, page.rows);
    }
    let Some(write_id) = cut.first().map(|page| page.write_id) else {
        return Ok(());
    };
    let mut records = Vec::new();
    for page in &cut {
        records.extend(take_page(transaction, page)?);
    }
    records.sort_unstable_by_key(|record| record.id);
    for record in records.drain(..excess as usize) {
        counts.forget(&record.tenant, 1);
    }
    insert_pages(transaction, write_id, records)?;
    Ok(())
}

/// Moves the records of the table of one row per record, which files
/// written before pages have, into pages, and drops it; returns the next
/// id, `next_id` without the table. Records keep their ids unless pages
/// already hold records (an older server, run again on the file, made the
/// table anew): then they are numbered from `next_id`, after the pages.
fn migrate_rows(transaction: &Transaction<'_>, next_id: i64) -> rusqlite::Result<i64> {
    let exists: bool = transaction.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit')",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(next_id);
    }
    // AUTOINCREMENT kept the highest id ever given, pruned or not.
    let highest: i64 = transaction
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'audit'",
            [],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let mut records = transaction
        .prepare("SELECT id, record FROM audit ORDER BY id")?
        .query_map([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?
        .map(|row| {
            let (id, text) = row?;
            let mut record: AuditRecord = decode(&text)?;
            record.id = id as u64;
            Ok(record)
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let paged: bool =
        transaction.query_row("SELECT EXISTS (SELECT 1 FROM audit_pages)", [], |row| {
            row.get(0)
        })?;
    if paged {
        for (record, id) in records.iter_mut().zip(next_id..) {
            record.id = id as u64;
        }
    }
    // A run of one tenant's records makes a page and a write of its own,
    // so that writes do not overlap in ids.
    for run in records.chunk_by(|a, b| a.tenant == b.tenant) {
        for page in run.chunks(MIGRATED_PAGE_RECORDS) {
            insert_page(transaction, page[0].id as i64, page)?;
        }
    }
    transaction.execute_batch("DROP TABLE audit")?;
    let last = records.last().map_or(0, |record| record.id as i64);
    Ok(next_id.max(highest + 1).max(last + 1))
}

/// Records per page when moving a table of one row per record.
const MIGRATED_PAGE_RECORDS: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{SqliteStore, StateStore};

    /// Writes `tenants`' records into the table of one row per record, as
    /// servers before pages did, creating it if need be.
    fn write_rows_as_before_pages(path: &std::path::Path, tenants: &[&str]) {
        let old = Connection::open(path).unwrap();
        old.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit (
                 id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, tenant TEXT NOT NULL,
                 namespace TEXT NOT NULL, topic TEXT NOT NULL, outcome TEXT NOT NULL,
                 record TEXT NOT NULL);",
        )
        .unwrap();
        for tenant in tenants {
            let record = serde_json::json!({
                "id": 0, "at": "2026-12-01T10:00:00.000000Z", "tenant": tenant,
                "namespace": "ns", "topic": format!("ns.{tenant}.t"), "key": null,
                "outcome": "produced",
            });
            old.execute(
                "INSERT INTO audit (at, tenant, namespace, topic, outcome, record)
                 VALUES ('2026-12-01T10:00:00.000000Z', ?1, 'ns', 'ns.x.t', 'produced', ?2)",
                params![tenant, record.to_string()],
            )
            .unwrap();
        }
    }

    fn ids_and_tenants(records: Vec<AuditRecord>) -> Vec<(u64, String)> {
        records.into_iter().map(|r| (r.id, r.tenant)).collect()
    }

    /// A file from before pages keeps its records, their ids, and the ids
    /// of records already pruned.
    #[tokio::test]
    async fn rows_of_the_table_before_pages_are_moved_into_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        write_rows_as_before_pages(&path, &["a", "a", "b", "a", "gone"]);
        let old = Connection::open(&path).unwrap();
        old.execute("DELETE FROM audit WHERE tenant = 'gone'", [])
            .unwrap();
        drop(old);

        let store = SqliteStore::open(&path).unwrap();
        let all = store.query_audit(&AuditFilter::default()).await.unwrap();
        let expected = [(4, "a"), (3, "b"), (2, "a"), (1, "a")].map(|(id, t)| (id, t.to_owned()));
        assert_eq!(ids_and_tenants(all), expected);
        let record = AuditRecord {
            id: 0,
            ..store.query_audit(&AuditFilter::default()).await.unwrap()[0].clone()
        };
        store.append_audit(&[record]).await.unwrap();
        let newest = store.query_audit(&AuditFilter::default()).await.unwrap();
        assert_eq!(newest[0].id, 6, "the pruned record's id is not given again");
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(
            reopened
                .query_audit(&AuditFilter::default())
                .await
                .unwrap()
                .len(),
            5
        );
    }

    /// An older server run again on a converted file makes the table anew
    /// and numbers from 1: its records come after the pages' when the file
    /// is opened again.
    #[tokio::test]
    async fn rows_written_again_by_an_older_server_come_after_the_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        write_rows_as_before_pages(&path, &["a"]);
        let store = SqliteStore::open(&path).unwrap();
        let record = store.query_audit(&AuditFilter::default()).await.unwrap()[0].clone();
        store.append_audit(&[record.clone(), record]).await.unwrap();
        drop(store);
        write_rows_as_before_pages(&path, &["b", "c"]);

        let store = SqliteStore::open(&path).unwrap();
        let all = store.query_audit(&AuditFilter::default()).await.unwrap();
        let expected = [(5, "c"), (4, "b"), (3, "a"), (2, "a"), (1, "a")];
        assert_eq!(
            ids_and_tenants(all),
            expected.map(|(id, t)| (id, t.to_owned()))
        );
    }
}
