//! `acteon tail TOPIC`: a topic's records as they arrive, one line each.

use acteon_core::{BusMessage, SubscriptionEvent};
use anyhow::Context as _;
use futures::StreamExt;

use super::Context;
use crate::args::TailArgs;
use crate::output;

pub(super) async fn run(context: &Context, args: TailArgs) -> anyhow::Result<()> {
    let client = context.client()?;
    // A fresh id by default: two tails sharing one would split the records
    // between them.
    let id = match args.subscription {
        Some(id) => id,
        None => format!("acteon-tail-{}", random_suffix()?),
    };
    let (from, mode) = (args.from.position(), args.mode.mode());
    let mut events = client
        .subscribe_in_mode(&id, &args.topic, from, mode)
        .await
        .with_context(|| format!("subscribe to {}", args.topic))?;
    // Status goes to stderr, so stdout holds only records.
    eprintln!(
        "tailing {} as {id} ({}, from {from})",
        args.topic,
        mode.as_str()
    );
    let mut printed = 0;
    while args.count.is_none_or(|count| printed < count) {
        let Some(event) = events.next().await else {
            // Asked for a count, the tail did not get it.
            if let Some(count) = args.count {
                anyhow::bail!("the server ended the stream after {printed} of {count} records");
            }
            eprintln!("the server ended the stream");
            return Ok(());
        };
        match event.with_context(|| format!("tail {}", args.topic))? {
            SubscriptionEvent::Message(message) => {
                if context.json() {
                    output::json_line(&*message)?;
                } else {
                    output::line(pretty(&message))?;
                }
                printed += 1;
            }
            SubscriptionEvent::Assigned(partitions) => {
                eprintln!("assigned partitions {partitions:?}");
            }
            SubscriptionEvent::Lagged { partition, skipped } => {
                eprintln!(
                    "partition {partition}: {skipped} records were removed by retention before they were read"
                );
            }
        }
    }
    Ok(())
}

/// `2026-01-01T00:00:00.000Z 2/17 key=task-1 [x-trace-id=abc] {"seq":1}`:
/// time, partition/offset, key, headers, payload.
fn pretty(message: &BusMessage) -> String {
    let time = message
        .timestamp
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let key = message.key.as_deref().map_or_else(|| "-".to_owned(), word);
    let headers: Vec<String> = message
        .headers
        .iter()
        .map(|(name, value)| format!("{}={}", word(name), word(value)))
        .collect();
    format!(
        "{time} {}/{} key={key} [{}] {}",
        message.partition,
        message.offset,
        headers.join(" "),
        message.payload
    )
}

/// A key or header as one word: quoted as JSON when it is empty or has
/// spaces, brackets, `=` or control characters, so a line reads unambiguously.
fn word(text: &str) -> String {
    let plain = !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '[' | ']'));
    if plain {
        text.to_owned()
    } else {
        serde_json::Value::from(text).to_string()
    }
}

/// Eight hex digits from the operating system's random source.
fn random_suffix() -> anyhow::Result<String> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).context("random source")?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_as_one_line() {
        let message = BusMessage {
            topic: "agents.demo.inbox".into(),
            key: Some("task 1".into()),
            payload: serde_json::json!({ "seq": 1 }),
            headers: [
                ("x-trace-id".to_owned(), "abc".to_owned()),
                ("e".to_owned(), String::new()),
            ]
            .into(),
            partition: 2,
            offset: 17,
            timestamp: "2026-01-01T00:00:00Z".parse().unwrap(),
        };
        assert_eq!(
            pretty(&message),
            r#"2026-01-01T00:00:00.000Z 2/17 key="task 1" [e="" x-trace-id=abc] {"seq":1}"#
        );
    }
}
