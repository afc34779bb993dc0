//! `acteon audit`: the audit trail, newest first, or followed as it grows.
//!
//! The API reads newest first, a page at a time below a cursor, and has no
//! cursor for "newer than": `--follow` asks for the newest records every
//! `--interval` and keeps those above the newest id it has seen, paging
//! back until it reaches that id. Each poll holds at most
//! [`MAX_FOLLOW_BATCH`] records; when more were written since the last
//! one, the older ones are skipped and the skip is said on stderr.

use std::time::Duration;

use acteon_client::{AuditQuery, AuditRecord, Client, Error};
use anyhow::Context as _;

use super::Context;
use crate::args::AuditArgs;
use crate::output;

/// The most records the server gives in one page.
const MAX_PAGE: usize = 1000;
/// The most new records one poll of `--follow` holds.
const MAX_FOLLOW_BATCH: usize = 10_000;
/// The first page of a poll: usually little is new, so a small page
/// answers it; later pages of the same poll grow to [`MAX_PAGE`].
const FIRST_FOLLOW_PAGE: usize = 20;
/// Printed without --limit.
const DEFAULT_LIMIT: usize = 100;
/// Printed before following, without --limit.
const DEFAULT_FOLLOW_BACKLOG: usize = 10;

pub(super) async fn run(context: &Context, args: AuditArgs) -> anyhow::Result<()> {
    let client = context.client()?;
    let query = AuditQuery {
        tenant: args.tenant,
        namespace: args.namespace,
        topic: args.topic,
        outcome: args.outcome,
        limit: None,
        before: None,
    };
    if args.follow {
        let backlog = args.limit.unwrap_or(DEFAULT_FOLLOW_BACKLOG);
        return follow(context, &client, &query, backlog, args.interval).await;
    }
    let records = newest(&client, &query, args.limit.unwrap_or(DEFAULT_LIMIT))
        .await
        .context("read the audit trail")?;
    if context.json() {
        return output::json(&records);
    }
    output::table(
        &[
            "ID",
            "AT",
            "OUTCOME",
            "TOPIC",
            "KEY",
            "RECORD",
            "BY",
            "PRINCIPAL",
            "ERROR",
        ],
        records.iter().map(|record| {
            [
                record.id.to_string(),
                output::time(&record.at),
                record.outcome.to_string(),
                record.topic.clone(),
                output::or_dash(record.key.as_deref()),
                output::or_dash(position(record)),
                output::or_dash(decided_by(record)),
                output::or_dash(record.principal.as_deref()),
                output::or_dash(record.error.as_deref()),
            ]
        }),
    )
}

/// The newest `count` records, newest first.
async fn newest(
    client: &Client,
    query: &AuditQuery,
    count: usize,
) -> Result<Vec<AuditRecord>, Error> {
    let mut records = Vec::new();
    let mut before = None;
    while records.len() < count {
        let page = client
            .query_audit(&AuditQuery {
                limit: Some((count - records.len()).min(MAX_PAGE)),
                before,
                ..query.clone()
            })
            .await?;
        records.extend(page.records);
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    Ok(records)
}

/// Prints the newest `backlog` records, then every new one, oldest first,
/// until stopped.
async fn follow(
    context: &Context,
    client: &Client,
    query: &AuditQuery,
    backlog: usize,
    interval: Duration,
) -> anyhow::Result<()> {
    // At least one, to learn where "new" begins.
    let initial = newest(client, query, backlog.max(1))
        .await
        .context("read the audit trail")?;
    let mut last_seen = initial.first().map(|record| record.id);
    for record in initial.iter().take(backlog).rev() {
        print_line(context, record)?;
    }
    loop {
        tokio::time::sleep(interval).await;
        match since(client, query, last_seen).await {
            Ok(New { records, truncated }) => {
                if truncated {
                    eprintln!(
                        "more than {MAX_FOLLOW_BATCH} records were written since the last poll; \
                         only the newest {MAX_FOLLOW_BATCH} are shown"
                    );
                }
                if let Some(newest) = records.first() {
                    last_seen = Some(newest.id);
                }
                for record in records.iter().rev() {
                    print_line(context, record)?;
                }
            }
            // A restarting or busy server: the next poll may succeed.
            Err(error) if error.is_retriable() => eprintln!("audit poll failed: {error}"),
            Err(error) => return Err(error).context("follow the audit trail"),
        }
    }
}

/// The records of one poll, newest first.
struct New {
    records: Vec<AuditRecord>,
    /// More were new than [`MAX_FOLLOW_BATCH`]; the oldest are left out.
    truncated: bool,
}

/// The records with an id above `last_seen` (every record when `None`).
async fn since(client: &Client, query: &AuditQuery, last_seen: Option<u64>) -> Result<New, Error> {
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut before = None;
    let mut page_size = FIRST_FOLLOW_PAGE;
    loop {
        let page = client
            .query_audit(&AuditQuery {
                limit: Some(page_size),
                before,
                ..query.clone()
            })
            .await?;
        let fetched = page.records.len();
        let held = records.len();
        records.extend(
            page.records
                .into_iter()
                .take_while(|record| last_seen.is_none_or(|seen| record.id > seen)),
        );
        let reached_seen = records.len() - held < fetched;
        if reached_seen || page.next_before.is_none() {
            return Ok(New {
                records,
                truncated: false,
            });
        }
        if records.len() >= MAX_FOLLOW_BATCH {
            return Ok(New {
                records,
                truncated: true,
            });
        }
        before = page.next_before;
        page_size = (page_size * 4)
            .min(MAX_PAGE)
            .min(MAX_FOLLOW_BATCH - records.len());
    }
}

/// One record on one line, for --follow: JSON, or its fields.
fn print_line(context: &Context, record: &AuditRecord) -> anyhow::Result<()> {
    if context.json() {
        return output::json_line(record);
    }
    let mut line = format!(
        "{} {} {} {} key={}",
        record.id,
        output::time(&record.at),
        record.outcome,
        record.topic,
        output::or_dash(record.key.as_deref()),
    );
    for (name, value) in [
        ("record", position(record)),
        ("by", decided_by(record)),
        ("principal", record.principal.clone()),
        ("error", record.error.clone()),
    ] {
        if let Some(value) = value {
            line.push_str(&format!(" {name}={value}"));
        }
    }
    output::line(line)
}

/// `partition/offset` of a produced record.
fn position(record: &AuditRecord) -> Option<String> {
    match (record.partition, record.offset) {
        (Some(partition), Some(offset)) => Some(format!("{partition}/{offset}")),
        _ => None,
    }
}

/// The rule or silence that decided.
fn decided_by(record: &AuditRecord) -> Option<String> {
    match (&record.rule, &record.silence) {
        (Some(rule), _) => Some(format!("rule:{rule}")),
        (None, Some(silence)) => Some(format!("silence:{silence}")),
        (None, None) => None,
    }
}
