//! What commands print: tables for people, JSON for programs, and lines
//! that stop quietly when stdout is closed.

use std::fmt::Display;
use std::io::Write;

use comfy_table::{Cell, Table, presets};
use serde::Serialize;

use crate::exit::StdoutClosed;

/// Writes `text` and a newline to stdout. A reader that went away ends
/// the command quietly instead of failing it.
pub(crate) fn line(text: impl Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(error) => Err(error.into()),
    }
}

/// A document, pretty-printed.
pub(crate) fn json(value: &impl Serialize) -> anyhow::Result<()> {
    line(serde_json::to_string_pretty(value)?)
}

/// One JSON object on one line, for streams (NDJSON).
pub(crate) fn json_line(value: &impl Serialize) -> anyhow::Result<()> {
    line(serde_json::to_string(value)?)
}

/// A borderless table with a header, aligned like `kubectl get`: easy to
/// read, to `grep` and to `awk`.
pub(crate) fn table<R>(header: &[&str], rows: impl IntoIterator<Item = R>) -> anyhow::Result<()>
where
    R: IntoIterator,
    R::Item: Into<Cell>,
{
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    print(&table)
}

/// A two-column table of field names and values.
pub(crate) fn fields<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> anyhow::Result<()> {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    for (name, value) in rows {
        table.add_row([name.to_owned(), value]);
    }
    print(&table)
}

fn print(table: &Table) -> anyhow::Result<()> {
    // Each cell has a space of padding either side; the lines' own
    // leading space and trailing spaces are noise.
    let text = table.to_string();
    let trimmed: Vec<&str> = text
        .lines()
        .map(|row| row.strip_prefix(' ').unwrap_or(row).trim_end())
        .collect();
    line(trimmed.join("\n"))
}

/// A value for a table cell: `-` when absent.
pub(crate) fn or_dash(value: Option<impl Display>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// A time as people read it in a table: seconds, UTC.
pub(crate) fn time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
