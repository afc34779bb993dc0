//! Log output: `[log] format` and `level`, `RUST_LOG` winning when set.
//!
//! Each request's lines carry its context (`request_id`, `method`,
//! `route`, and `tenant` once a handler knows it): a text line ends with
//! them, a JSON line has them under `span`. Paths are logged without their
//! query, where subscribe tokens travel, and no header is logged.

use std::fmt;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tracing::{Event, Subscriber};
use tracing_serde::AsSerde;
use tracing_serde::fields::AsMap;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::request_context::{self, RequestContext};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A level (`info`) or filter directives (`info,acteon_server=debug`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Logs to stderr as `config` says.
pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => EnvFilter::try_new(&config.level)
            .with_context(|| format!("[log] level {:?} is not a level or filter", config.level))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(RequestLines::new(config.format))
        .try_init()
        .map_err(|error| anyhow::anyhow!("installing the logger: {error}"))
}

/// Writes each event in the configured format, with the context of the
/// request being handled when there is one.
struct RequestLines {
    format: LogFormat,
    /// tracing-subscriber's own text line; it colours what it writes to a
    /// terminal, and `coloured_text` colours what it writes to a buffer.
    text: Format,
    coloured_text: Format,
}

impl RequestLines {
    fn new(format: LogFormat) -> Self {
        Self {
            format,
            text: Format::default(),
            coloured_text: Format::default().with_ansi(true),
        }
    }

    fn write<S, N>(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
        request: Option<&RequestContext>,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        match (self.format, request) {
            (LogFormat::Text, None) => self.text.format_event(ctx, writer, event),
            (LogFormat::Text, Some(request)) => self.write_text(ctx, writer, event, request),
            (LogFormat::Json, request) => write_json(writer, event, request),
        }
    }

    /// tracing-subscriber's text line with the request's fields appended.
    fn write_text<S, N>(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
        request: &RequestContext,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let format = if writer.has_ansi_escapes() {
            &self.coloured_text
        } else {
            &self.text
        };
        let mut line = String::new();
        format.format_event(ctx, Writer::new(&mut line), event)?;
        writeln!(writer, "{} {request}", line.trim_end())
    }
}

/// One JSON object: timestamp, level, the event's fields, its target, and
/// the request's context as `span`.
fn write_json(
    mut writer: Writer<'_>,
    event: &Event<'_>,
    request: Option<&RequestContext>,
) -> fmt::Result {
    #[derive(Serialize)]
    struct Line<'a> {
        timestamp: &'a str,
        level: tracing_serde::SerializeLevel<'a>,
        fields: tracing_serde::fields::SerializeFieldMap<'a, Event<'a>>,
        target: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        span: Option<&'a RequestContext>,
    }
    let mut timestamp = String::new();
    SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
    let metadata = event.metadata();
    let line = Line {
        timestamp: &timestamp,
        level: metadata.level().as_serde(),
        fields: event.field_map(),
        target: metadata.target(),
        span: request,
    };
    let json = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
    writeln!(writer, "{json}")
}

impl<S, N> FormatEvent<S, N> for RequestLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let written = request_context::with_current(|request| {
            self.write(ctx, writer.by_ref(), event, Some(request))
        });
        written.unwrap_or_else(|| self.write(ctx, writer, event, None))
    }
}
