//! `acteon publish TOPIC PAYLOAD|-`: one record, or NDJSON from stdin
//! published many at a time.

mod records;

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::Duration;

use acteon_client::{Client, Error, PublishOutcome};
use acteon_core::{OutgoingMessage, TopicName};
use anyhow::Context as _;
use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use self::records::Defaults;
use super::Context;
use crate::args::PublishArgs;
use crate::exit::UsageError;
use crate::output;
use crate::parse::Payload;

/// Failed lines the summary names; the others are only counted.
const REPORTED_FAILURES: usize = 10;

/// Tries of a publish that a quota throttled (429: nothing was produced),
/// and the wait before the second (doubled after each, at most
/// [`MAX_THROTTLED_WAIT`]). No other failure is tried again, since it may
/// have produced the record.
const THROTTLED_TRIES: u32 = 6;
const FIRST_THROTTLED_WAIT: Duration = Duration::from_millis(250);
const MAX_THROTTLED_WAIT: Duration = Duration::from_secs(8);

/// The longest stdin line read; a longer one fails without being held. As
/// much as the server takes in one batch request (8 MiB by default).
const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

pub(super) async fn run(context: &Context, args: PublishArgs) -> anyhow::Result<()> {
    let client = context.client()?;
    let defaults = Defaults {
        key: args.key,
        headers: args.headers.into_iter().collect(),
    };
    match args.payload {
        Payload::Json(_) if args.envelope => Err(UsageError(
            "--envelope is how stdin's lines are read: give - as the payload".to_owned(),
        )
        .into()),
        Payload::Json(payload) => {
            // The one record as a batch of one, so it is tried again when
            // throttled as stdin's records are.
            let outcome = publish_records(&client, &args.topic, vec![defaults.message(payload)])
                .await
                .and_then(|mut answers| answers.pop().expect("one record, one answer"))
                .with_context(|| format!("publish to {}", args.topic))?;
            print_outcome(context, &args.topic, &outcome)
        }
        Payload::Stdin => {
            // A large buffer, so the lines at hand fill batches: stdin is
            // read a buffer at a time.
            let stdin = tokio::io::BufReader::with_capacity(1024 * 1024, tokio::io::stdin());
            let lines = lines(stdin);
            let batch = Batch {
                client: &client,
                topic: &args.topic,
                defaults: &defaults,
                envelope: args.envelope,
                concurrency: usize::from(args.concurrency),
                batch_size: usize::from(args.batch_size),
            };
            let summary = batch.publish(lines).await;
            summary.print(context)
        }
    }
}

fn print_outcome(
    context: &Context,
    topic: &TopicName,
    outcome: &PublishOutcome,
) -> anyhow::Result<()> {
    match (outcome, context.json()) {
        (PublishOutcome::Produced(receipt), true) => output::json(receipt),
        (PublishOutcome::Produced(receipt), false) => output::line(format!(
            "produced to {topic} partition {} offset {}",
            receipt.partition, receipt.offset
        )),
        (PublishOutcome::Suppressed { rule, silence }, true) => {
            output::json(&json!({ "outcome": "suppressed", "rule": rule, "silence": silence }))
        }
        (PublishOutcome::Suppressed { rule, silence }, false) => {
            let by = match (rule, silence) {
                (Some(rule), _) => format!("by rule {rule}"),
                (None, Some(silence)) => format!("by silence {silence}"),
                (None, None) => "by the server".to_owned(),
            };
            output::line(format!("suppressed {by}: nothing was produced"))
        }
    }
}

/// Stdin's lines, numbered from 1, as they are read: a line is held only
/// while its batch is in flight, and `None` stands for a line over
/// [`MAX_LINE_BYTES`], which is skipped unread.
fn lines(
    reader: impl AsyncBufRead + Unpin,
) -> impl Stream<Item = std::io::Result<(usize, Option<Vec<u8>>)>> {
    futures::stream::unfold(Some((reader, 0)), |state| async move {
        let (mut reader, number) = state?;
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        let read = match read {
            Ok(_) if line.len() > MAX_LINE_BYTES && !line.ends_with(b"\n") => {
                skip_line(&mut reader).await.map(|()| Some(None))
            }
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(Some(line))),
            Err(error) => Err(error),
        };
        match read {
            Ok(None) => None,
            Ok(Some(line)) => Some((Ok((number + 1, line)), Some((reader, number + 1)))),
            // Nothing more can be read after a failed read.
            Err(error) => Some((Err(error), None)),
        }
    })
}

/// Reads past the rest of a line without keeping it.
async fn skip_line(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<()> {
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(());
        }
        let (used, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (buffer.len(), false),
        };
        reader.consume(used);
        if done {
            return Ok(());
        }
    }
}

/// The most line bytes in one batch request: well under the server's batch
/// body limit (8 MiB by default). A longer line goes alone.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What happened to one line.
enum LineOutcome {
    Blank,
    Invalid(records::LineError),
    Sent(Result<PublishOutcome, Error>),
    /// The server refused the line's whole batch: every later one would
    /// meet the same.
    BatchRefused(Error),
}

/// A line read and parsed, before it is sent.
enum Parsed {
    Done(LineOutcome),
    Record {
        message: OutgoingMessage,
        bytes: usize,
    },
}

/// Lines of one request, by number.
type Chunk = Vec<std::io::Result<(usize, Parsed)>>;

/// A stream of lines to publish to one topic.
struct Batch<'a> {
    client: &'a Client,
    topic: &'a TopicName,
    defaults: &'a Defaults,
    envelope: bool,
    concurrency: usize,
    batch_size: usize,
}

impl Batch<'_> {
    /// Publishes every line, in batches of up to `batch_size` of the lines
    /// at hand, `concurrency` batches at a time, and counts what
    /// happened. A failure that every later record would meet too (no
    /// such topic, no valid key, no server) stops reading; the batches in
    /// flight still finish and are counted.
    async fn publish(
        &self,
        lines: impl Stream<Item = std::io::Result<(usize, Option<Vec<u8>>)>>,
    ) -> Summary {
        let progress = progress_bar();
        let stop = Cell::new(false);
        let mut summary = Summary::default();
        let mut results = std::pin::pin!(
            lines
                .take_while(|_| futures::future::ready(!stop.get()))
                .map(|line| line.map(|(number, bytes)| (number, self.parse(bytes))))
                .ready_chunks(self.batch_size)
                .flat_map(|chunk| futures::stream::iter(split_by_bytes(chunk)))
                .map(|chunk| self.send(chunk))
                .buffer_unordered(self.concurrency)
        );
        while let Some(outcomes) = results.next().await {
            for outcome in outcomes {
                match outcome {
                    Ok((number, outcome)) => {
                        summary.count(number, outcome);
                        stop.set(summary.stopped_at.is_some());
                    }
                    Err(error) => {
                        stop.set(true);
                        summary.read_error = Some(error.to_string());
                    }
                }
            }
            progress.set_position(summary.published + summary.suppressed + summary.failed);
            progress.set_message(summary.counts());
        }
        progress.finish_and_clear();
        summary
    }

    fn parse(&self, bytes: Option<Vec<u8>>) -> Parsed {
        let Some(bytes) = bytes else {
            let error = records::LineError::TooLong(MAX_LINE_BYTES);
            return Parsed::Done(LineOutcome::Invalid(error));
        };
        match records::parse(&bytes, self.envelope, self.defaults) {
            None => Parsed::Done(LineOutcome::Blank),
            Some(Err(error)) => Parsed::Done(LineOutcome::Invalid(error)),
            Some(Ok(message)) => Parsed::Record {
                message,
                bytes: bytes.len(),
            },
        }
    }

    /// Sends a chunk's records in one request; each line's outcome.
    async fn send(&self, chunk: Chunk) -> Vec<std::io::Result<(usize, LineOutcome)>> {
        let mut outcomes = Vec::with_capacity(chunk.len());
        let mut numbers = Vec::new();
        let mut messages = Vec::new();
        for line in chunk {
            match line {
                Ok((number, Parsed::Record { message, .. })) => {
                    numbers.push(number);
                    messages.push(message);
                }
                Ok((number, Parsed::Done(outcome))) => outcomes.push(Ok((number, outcome))),
                Err(error) => outcomes.push(Err(error)),
            }
        }
        if messages.is_empty() {
            return outcomes;
        }
        match publish_records(self.client, self.topic, messages).await {
            Ok(sent) => outcomes.extend(
                numbers
                    .into_iter()
                    .zip(sent)
                    .map(|(number, outcome)| Ok((number, LineOutcome::Sent(outcome)))),
            ),
            Err(error) => outcomes.extend(
                numbers
                    .into_iter()
                    .map(|number| Ok((number, LineOutcome::BatchRefused(error.duplicate())))),
            ),
        }
        outcomes
    }
}

/// A chunk split so that no request holds more than [`BATCH_BYTES`] of
/// records (a longer record goes alone).
fn split_by_bytes(chunk: Chunk) -> Vec<Chunk> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for line in chunk {
        let size = match &line {
            Ok((_, Parsed::Record { bytes, .. })) => *bytes,
            _ => 0,
        };
        if bytes + size > BATCH_BYTES && bytes > 0 {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        chunks.last_mut().expect("never empty").push(line);
    }
    chunks
}

/// Publishes `messages` in one batch request; each record's outcome, in
/// order, or the batch's refusal. Throttled records (429, nothing
/// produced) are sent again, in a batch of their own, after a wait.
async fn publish_records(
    client: &Client,
    topic: &TopicName,
    messages: Vec<OutgoingMessage>,
) -> Result<Vec<Result<PublishOutcome, Error>>, Error> {
    let mut outcomes: Vec<Option<Result<PublishOutcome, Error>>> =
        messages.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut wait = FIRST_THROTTLED_WAIT;
    for tries in 1..=THROTTLED_TRIES {
        let batch: Vec<OutgoingMessage> = pending.iter().map(|&i| messages[i].clone()).collect();
        let answers = match client.publish_batch(topic, &batch).await {
            Ok(answers) => answers,
            Err(error) if tries == 1 => return Err(error),
            // Records sent before were not refused as a batch; the retry's
            // failure is theirs.
            Err(error) => pending.iter().map(|_| Err(error.duplicate())).collect(),
        };
        let mut throttled = Vec::new();
        for (index, answer) in pending.into_iter().zip(answers) {
            match answer {
                Err(Error::Api { status: 429, .. }) if tries < THROTTLED_TRIES => {
                    throttled.push(index);
                }
                answer => outcomes[index] = Some(answer),
            }
        }
        if throttled.is_empty() {
            break;
        }
        pending = throttled;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_THROTTLED_WAIT);
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every record is answered"))
        .collect())
}

/// Whether every later record would fail the same way.
fn stops_the_batch(error: &Error) -> bool {
    match error {
        Error::Api { status, .. } => matches!(status, 401 | 404),
        Error::Transport(_) | Error::InvalidBaseUrl(_) => true,
        Error::Decode(_) | Error::Stream(_) => false,
    }
}

/// A spinner on stderr when it is a terminal; the number of lines is not
/// known in advance.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} records, {per_sec}, {elapsed}: {msg}")
            .expect("the progress template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// One failed line.
#[derive(Debug, Serialize)]
struct LineFailure {
    line: usize,
    /// The HTTP status, when the server refused the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    error: String,
}

/// What a batch did.
#[derive(Debug, Default, Serialize)]
struct Summary {
    published: u64,
    suppressed: u64,
    failed: u64,
    /// The first failed lines, by line number.
    errors: Vec<LineFailure>,
    /// The line whose failure stopped the batch, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_at: Option<usize>,
    /// That failure, which decides the exit code.
    #[serde(skip)]
    stop_error: Option<Error>,
    /// Stdin could not be read to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    read_error: Option<String>,
}

impl Summary {
    fn count(&mut self, line: usize, outcome: LineOutcome) {
        let batch_refused = matches!(outcome, LineOutcome::BatchRefused(_));
        let failure = match outcome {
            LineOutcome::Blank => return,
            LineOutcome::Sent(Ok(PublishOutcome::Produced(_))) => {
                self.published += 1;
                return;
            }
            LineOutcome::Sent(Ok(PublishOutcome::Suppressed { .. })) => {
                self.suppressed += 1;
                return;
            }
            LineOutcome::Invalid(error) => LineFailure {
                line,
                status: None,
                error: error.to_string(),
            },
            LineOutcome::Sent(Err(error)) | LineOutcome::BatchRefused(error) => {
                let failure = LineFailure {
                    line,
                    status: error.status(),
                    error: error.to_string(),
                };
                let stops = batch_refused || stops_the_batch(&error);
                if stops && self.stopped_at.is_none_or(|first| line < first) {
                    self.stopped_at = Some(line);
                    self.stop_error = Some(error);
                }
                failure
            }
        };
        self.failed += 1;
        // Results come in any order: keep the lowest line numbers.
        self.errors.push(failure);
        if self.errors.len() > REPORTED_FAILURES {
            self.errors.sort_by_key(|failure| failure.line);
            self.errors.truncate(REPORTED_FAILURES);
        }
    }

    fn counts(&self) -> String {
        format!(
            "published {}, suppressed {}, failed {}",
            self.published, self.suppressed, self.failed
        )
    }

    /// Prints the summary; an error when records failed or stdin broke.
    fn print(mut self, context: &Context) -> anyhow::Result<()> {
        self.errors.sort_by_key(|failure| failure.line);
        if context.json() {
            output::json(&self)?;
        } else {
            output::line(self.counts())?;
            for (lines, error) in grouped(&self.errors) {
                eprintln!("{lines}: {error}");
            }
            let unnamed = self.failed.saturating_sub(self.errors.len() as u64);
            if unnamed > 0 {
                eprintln!("and {unnamed} more failed lines");
            }
        }
        if let Some(error) = self.read_error {
            anyhow::bail!("reading stdin: {error}");
        }
        if let (Some(line), Some(error)) = (self.stopped_at, self.stop_error) {
            return Err(anyhow::Error::new(error).context(format!(
                "stopped at line {line}, as every later record would fail the same way"
            )));
        }
        if self.failed > 0 {
            let total = self.published + self.suppressed + self.failed;
            anyhow::bail!("{} of {total} records failed", self.failed);
        }
        Ok(())
    }
}

/// Failures in line order, those with the same error next to each other
/// told once: `lines 1-3, 7: 404: ...`.
fn grouped(failures: &[LineFailure]) -> Vec<(String, &str)> {
    let mut groups: Vec<(Vec<usize>, &str)> = Vec::new();
    for failure in failures {
        match groups.last_mut() {
            Some((lines, error)) if *error == failure.error => lines.push(failure.line),
            _ => groups.push((vec![failure.line], &failure.error)),
        }
    }
    groups
        .into_iter()
        .map(|(lines, error)| (line_ranges(&lines), error))
        .collect()
}

/// `line 4`, `lines 1-3, 7`.
fn line_ranges(lines: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &line in lines {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == line => *end = line,
            _ => ranges.push((line, line)),
        }
    }
    let text: Vec<String> = ranges
        .iter()
        .map(|&(start, end)| {
            if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            }
        })
        .collect();
    let noun = if lines.len() == 1 { "line" } else { "lines" };
    format!("{noun} {}", text.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(number: usize, bytes: usize) -> std::io::Result<(usize, Parsed)> {
        let message = OutgoingMessage {
            key: None,
            payload: serde_json::Value::Null,
            headers: Default::default(),
        };
        Ok((number, Parsed::Record { message, bytes }))
    }

    #[test]
    fn no_request_holds_more_than_its_share_of_bytes() {
        let mb = 1024 * 1024;
        let chunk = vec![
            record(1, mb),
            record(2, 2 * mb),
            Ok((3, Parsed::Done(LineOutcome::Blank))),
            record(4, 2 * mb),
            record(5, 6 * mb),
            record(6, 1),
        ];
        let numbers: Vec<Vec<usize>> = split_by_bytes(chunk)
            .into_iter()
            .map(|chunk| chunk.into_iter().map(|line| line.unwrap().0).collect())
            .collect();
        assert_eq!(numbers, [vec![1, 2, 3], vec![4], vec![5], vec![6]]);
    }

    fn failure(line: usize, error: &str) -> LineFailure {
        LineFailure {
            line,
            status: None,
            error: error.to_owned(),
        }
    }

    #[test]
    fn failures_with_one_error_are_told_once() {
        let failures = [
            failure(1, "404"),
            failure(2, "404"),
            failure(3, "404"),
            failure(5, "404"),
            failure(6, "not JSON"),
            failure(8, "404"),
        ];
        assert_eq!(
            grouped(&failures),
            [
                ("lines 1-3, 5".to_owned(), "404"),
                ("line 6".to_owned(), "not JSON"),
                ("line 8".to_owned(), "404"),
            ]
        );
    }
}
