//! Parsers of argument values that clap does not know, and the names given
//! either dotted (`agents.demo.inbox`) or as three words.

use std::time::Duration;

use acteon_core::{Fragment, FragmentKind, NameError, Pattern, TopicName};
use chrono::{DateTime, Utc};

use crate::exit::UsageError;

/// What `acteon publish` sends: one JSON payload, or NDJSON from stdin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    Json(serde_json::Value),
    Stdin,
}

pub(crate) fn payload(value: &str) -> Result<Payload, String> {
    if value == "-" {
        return Ok(Payload::Stdin);
    }
    serde_json::from_str(value)
        .map(Payload::Json)
        .map_err(|error| format!("not JSON ({error}); a string payload is quoted: '\"text\"'"))
}

/// `--header name=value`.
pub(crate) fn header(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{value:?} is not name=value")),
    }
}

/// A [`duration`] of at least 100 ms, so a poll cannot spin.
pub(crate) fn poll_interval(value: &str) -> Result<Duration, String> {
    let interval = duration(value)?;
    if interval < Duration::from_millis(100) {
        return Err(format!("{value:?} is shorter than 100ms"));
    }
    Ok(interval)
}

/// `500ms`, `30s`, `15m`, `2h`, `7d`: a number and its unit.
pub(crate) fn duration(value: &str) -> Result<Duration, String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a duration such as 500ms, 30s, 15m, 2h or 7d"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{value:?} needs a unit: ms, s, m, h or d")),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{value:?} is too long"))
}

/// An RFC 3339 time, such as `2030-01-01T00:00:00Z`.
pub(crate) fn time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| format!("{value:?} is not an RFC 3339 time ({error})"))
}

/// A grant's namespace: a name or `*`.
pub(crate) fn grant_namespace(value: &str) -> Result<String, NameError> {
    Pattern::parse_wildcard(FragmentKind::Namespace, value).map(|_| value.to_owned())
}

/// A grant's tenant: a name or `*`.
pub(crate) fn grant_tenant(value: &str) -> Result<String, NameError> {
    Pattern::parse_wildcard(FragmentKind::Tenant, value).map(|_| value.to_owned())
}

/// Three fragments given as one dotted word or as three words.
fn three<'a>(words: &'a [String], form: &str) -> Result<[&'a str; 3], UsageError> {
    let usage = || UsageError(format!("give {form} as one dotted word or as three words"));
    match words {
        [dotted] => {
            let mut parts = dotted.split('.');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), Some(c), None) => Ok([a, b, c]),
                _ => Err(usage()),
            }
        }
        [a, b, c] => Ok([a, b, c]),
        _ => Err(usage()),
    }
}

/// `agents.demo.inbox` or `agents demo inbox`.
pub(crate) fn topic_name(words: &[String]) -> Result<TopicName, UsageError> {
    let [namespace, tenant, name] = three(words, "NAMESPACE.TENANT.NAME")?;
    TopicName::new(namespace, tenant, name).map_err(|error| UsageError(error.to_string()))
}

/// A durable subscription: `agents.demo.workers` or `agents demo workers`.
pub(crate) fn subscription(words: &[String]) -> Result<acteon_client::DurableRef, UsageError> {
    let [namespace, tenant, id] = three(words, "NAMESPACE.TENANT.ID")?;
    let check =
        |kind, value| Fragment::parse(kind, value).map_err(|error| UsageError(error.to_string()));
    Ok(acteon_client::DurableRef::new(
        check(FragmentKind::Namespace, namespace)?.as_str(),
        check(FragmentKind::Tenant, tenant)?.as_str(),
        check(FragmentKind::Subscription, id)?.as_str(),
    ))
}

/// A subject: `agents.demo.calls`.
pub(crate) fn subject(value: &str) -> Result<acteon_client::SubjectRef, String> {
    let words = [value.to_owned()];
    let [namespace, tenant, subject] =
        three(&words, "NAMESPACE.TENANT.SUBJECT").map_err(|error| error.0)?;
    let check = |kind, value| Fragment::parse(kind, value).map_err(|error| error.to_string());
    Ok(acteon_client::SubjectRef::new(
        check(FragmentKind::Namespace, namespace)?.as_str(),
        check(FragmentKind::Tenant, tenant)?.as_str(),
        check(FragmentKind::Name, subject)?.as_str(),
    ))
}

/// `--schema calls` or `--schema calls:3`.
pub(crate) fn binding(value: &str) -> Result<acteon_core::SchemaBinding, String> {
    let (subject, version) = value.split_once(':').unwrap_or((value, "latest"));
    let binding = acteon_core::SchemaBinding {
        subject: subject.to_owned(),
        version: version.parse().map_err(|error| format!("{error}"))?,
    };
    binding.check().map_err(|error| error.to_string())?;
    Ok(binding)
}

/// A compatibility mode, as the server names it.
pub(crate) fn compatibility(value: &str) -> Result<acteon_core::Compatibility, String> {
    serde_json::from_value(serde_json::Value::String(value.to_owned())).map_err(|_| {
        format!(
            "{value:?} is not one of none, backward, backward_transitive, forward, \
             forward_transitive, full, full_transitive"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    #[test]
    fn names_come_dotted_or_as_three_words() {
        let dotted = topic_name(&words(&["agents.demo.inbox"])).unwrap();
        let spaced = topic_name(&words(&["agents", "demo", "inbox"])).unwrap();
        assert_eq!(dotted, spaced);
        assert!(topic_name(&words(&["agents", "demo"])).is_err());
        assert!(topic_name(&words(&["agents.demo"])).is_err());
        let bad = topic_name(&words(&["agents", "de mo", "inbox"])).unwrap_err();
        assert!(bad.to_string().contains("tenant"), "{bad}");

        let sub = subscription(&words(&["agents.demo.workers"])).unwrap();
        assert_eq!(
            (sub.namespace.as_str(), sub.id.as_str()),
            ("agents", "workers")
        );
        assert!(subscription(&words(&["a", "b", "c/d"])).is_err());
    }

    #[test]
    fn subjects_bindings_and_modes() {
        let subject = subject("agents.demo.calls").unwrap();
        assert_eq!(subject.subject, "calls");
        assert!(super::subject("agents.demo").is_err());
        assert_eq!(binding("calls").unwrap().to_string(), "calls:latest");
        assert_eq!(binding("calls:3").unwrap().to_string(), "calls:3");
        assert!(binding("calls:0").is_err());
        assert!(binding("no.dots").is_err());
        assert_eq!(
            compatibility("full_transitive"),
            Ok(acteon_core::Compatibility::FullTransitive)
        );
        assert!(compatibility("sideways").is_err());
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "10", "s", "1.5h", "-1s", "99999999999999999999d"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_and_payloads() {
        assert_eq!(header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(header("a="), Ok(("a".into(), String::new())));
        assert!(header("=b").is_err());
        assert!(header("ab").is_err());
        assert_eq!(payload("-"), Ok(Payload::Stdin));
        assert_eq!(
            payload(r#"{"seq":1}"#),
            Ok(Payload::Json(serde_json::json!({"seq": 1})))
        );
        assert!(payload("text").unwrap_err().contains("quoted"));
    }
}
