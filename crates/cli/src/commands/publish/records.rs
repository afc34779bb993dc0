//! The rule that turns a line of `acteon publish TOPIC -` into a record.
//!
//! Each line is one record. By default the line is the payload itself, any
//! JSON value. With `--envelope` it is an object whose `payload` is the
//! payload, with an optional `key` (string or null) and `headers` (object
//! of strings); other fields are ignored, so the lines `acteon tail --json`
//! prints can be published again. `--key` and `--header` apply to every
//! record: an envelope's own key wins over `--key`, and its headers are
//! added to `--header`'s, winning on the same name. Blank lines are
//! skipped; line numbers count them.

use acteon_core::{Headers, OutgoingMessage};
use serde::Deserialize;

/// What `--key` and `--header` give every record.
#[derive(Debug, Clone, Default)]
pub(super) struct Defaults {
    pub(super) key: Option<String>,
    pub(super) headers: Headers,
}

impl Defaults {
    pub(super) fn message(&self, payload: serde_json::Value) -> OutgoingMessage {
        OutgoingMessage {
            key: self.key.clone(),
            payload,
            headers: self.headers.clone(),
        }
    }
}

/// A line that is not a record.
#[derive(Debug, thiserror::Error)]
pub(super) enum LineError {
    #[error("not JSON: {0}")]
    Json(serde_json::Error),
    #[error("not an envelope {{\"payload\", \"key\", \"headers\"}}: {0}")]
    Envelope(serde_json::Error),
    #[error("not an envelope {{\"payload\", \"key\", \"headers\"}}: not an object")]
    NotObject,
    #[error("longer than {0} bytes")]
    TooLong(usize),
}

#[derive(Deserialize)]
struct Envelope {
    // No default: a line without `payload` is a mistake, not a null.
    payload: serde_json::Value,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    headers: Headers,
}

/// The record of one line; `None` for a blank one.
pub(super) fn parse(
    line: &[u8],
    envelope: bool,
    defaults: &Defaults,
) -> Option<Result<OutgoingMessage, LineError>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if !envelope {
        return Some(
            serde_json::from_slice(line)
                .map(|payload| defaults.message(payload))
                .map_err(LineError::Json),
        );
    }
    let value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(error) => return Some(Err(LineError::Json(error))),
    };
    // Serde would also read a struct from an array of its fields.
    if !value.is_object() {
        return Some(Err(LineError::NotObject));
    }
    Some(
        serde_json::from_value::<Envelope>(value)
            .map(|envelope| {
                let mut headers = defaults.headers.clone();
                headers.extend(envelope.headers);
                OutgoingMessage {
                    key: envelope.key.or_else(|| defaults.key.clone()),
                    payload: envelope.payload,
                    headers,
                }
            })
            .map_err(LineError::Envelope),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            key: Some("k0".into()),
            headers: Headers::from([
                ("source".to_owned(), "cli".to_owned()),
                ("x".to_owned(), "1".to_owned()),
            ]),
        }
    }

    #[test]
    fn a_bare_line_is_the_payload_whatever_its_shape() {
        let message = parse(br#"{"payload": 1, "key": "a"}"#, false, &defaults())
            .unwrap()
            .unwrap();
        assert_eq!(message.payload, json!({"payload": 1, "key": "a"}));
        assert_eq!(message.key.as_deref(), Some("k0"));
        let string = parse(b"\"text\"\r\n", false, &defaults()).unwrap().unwrap();
        assert_eq!(string.payload, json!("text"));
    }

    #[test]
    fn an_envelope_brings_its_key_and_adds_its_headers() {
        let line = br#"{"payload":{"seq":1},"key":"k1","headers":{"x":"2"},"offset":7}"#;
        let message = parse(line, true, &defaults()).unwrap().unwrap();
        assert_eq!(message.payload, json!({"seq": 1}));
        assert_eq!(message.key.as_deref(), Some("k1"));
        assert_eq!(message.headers["x"], "2");
        assert_eq!(message.headers["source"], "cli");
        let keyless = parse(br#"{"payload":null,"key":null}"#, true, &defaults())
            .unwrap()
            .unwrap();
        assert_eq!(keyless.key.as_deref(), Some("k0"));
        assert_eq!(keyless.payload, json!(null));
    }

    #[test]
    fn bad_and_blank_lines() {
        assert!(parse(b"  \t\r\n", false, &defaults()).is_none());
        assert!(matches!(
            parse(b"{nope", false, &defaults()),
            Some(Err(LineError::Json(_)))
        ));
        for line in [
            &br#"{"key":"a"}"#[..],
            b"[1]",
            br#"{"payload":1,"headers":{"a":1}}"#,
        ] {
            assert!(
                matches!(
                    parse(line, true, &defaults()),
                    Some(Err(LineError::Envelope(_) | LineError::NotObject))
                ),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
