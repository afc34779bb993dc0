//! CEL conditions and the variables a publish exposes to them.

use std::cell::OnceCell;
use std::sync::{Arc, LazyLock};

use acteon_core::{Headers, TopicName};
use thiserror::Error;

/// CEL's standard functions and macros, built once: building them takes
/// tens of microseconds, far more than evaluating a condition.
static STANDARD_ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));

/// A CEL expression that did not parse.
#[derive(Debug, Error)]
#[error("condition {source_text:?} does not parse: {message}")]
pub struct ConditionError {
    pub source_text: String,
    pub message: String,
}

/// A compiled CEL condition.
pub struct Condition {
    source_text: String,
    program: cel::Program,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source_text).finish()
    }
}

impl Condition {
    pub fn compile(source_text: &str) -> Result<Self, ConditionError> {
        let program = cel::Program::compile(source_text).map_err(|error| ConditionError {
            source_text: source_text.to_owned(),
            message: error.to_string(),
        })?;
        Ok(Self {
            source_text: source_text.to_owned(),
            program,
        })
    }

    pub fn source_text(&self) -> &str {
        &self.source_text
    }

    /// Whether the condition holds for `message`. A condition that fails to
    /// evaluate (a missing payload field, a type mismatch) or yields a
    /// non-boolean does not hold: a rule about `payload.amount` does not
    /// apply to messages without an amount.
    pub fn holds(&self, message: &MessageFacts<'_>) -> bool {
        match self.program.execute(message.context()) {
            Ok(cel::Value::Bool(holds)) => holds,
            Ok(other) => {
                tracing::debug!(condition = %self.source_text, value = ?other, "condition is not boolean");
                false
            }
            Err(error) => {
                tracing::debug!(condition = %self.source_text, %error, "condition did not evaluate");
                false
            }
        }
    }
}

/// What conditions can see of a publish: `tenant`, `ns` (the namespace),
/// `topic` (short name), `kafka_topic`, `key` ("" when absent), `headers`
/// and `payload`. Made once per publish and shared by every condition.
///
/// `namespace` is a reserved word in CEL, so no CEL parser accepts it as a
/// variable; the namespace is `ns`.
pub struct MessageFacts<'a> {
    pub topic: &'a TopicName,
    key: Option<&'a str>,
    headers: &'a Headers,
    payload: &'a serde_json::Value,
    /// Built when a condition first needs it: converting the message into
    /// CEL values costs more than the rest of a publish, and a server
    /// without rules or silences never needs it.
    context: OnceCell<cel::Context<'static, 'static>>,
}

impl std::fmt::Debug for MessageFacts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageFacts")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl<'a> MessageFacts<'a> {
    pub fn new(
        topic: &'a TopicName,
        key: Option<&'a str>,
        headers: &'a Headers,
        payload: &'a serde_json::Value,
    ) -> Self {
        Self {
            topic,
            key,
            headers,
            payload,
            context: OnceCell::new(),
        }
    }

    fn context(&self) -> &cel::Context<'static, 'static> {
        self.context.get_or_init(|| {
            let topic = self.topic;
            let mut context = cel::Context::with_env(Arc::clone(&STANDARD_ENV));
            context.add_variable_from_value("tenant", topic.tenant().to_owned());
            context.add_variable_from_value("ns", topic.namespace().to_owned());
            context.add_variable_from_value("topic", topic.name().to_owned());
            context.add_variable_from_value("kafka_topic", topic.kafka_topic_name());
            context.add_variable_from_value("key", self.key.unwrap_or_default().to_owned());
            context
                .add_variable("headers", self.headers.clone())
                .expect("headers convert to CEL");
            context
                .add_variable(
                    "payload",
                    cel::to_value(self.payload).expect("JSON converts to CEL"),
                )
                .expect("payload converts to CEL");
            context
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn headers() -> Headers {
        Headers::from([("x-env".to_owned(), "prod".to_owned())])
    }

    #[test]
    fn conditions_see_every_variable() {
        let topic = TopicName::new("agents", "demo", "inbox").unwrap();
        let (headers, payload) = (headers(), json!({ "amount": 1500, "kind": "refund" }));
        let message = MessageFacts::new(&topic, Some("k-1"), &headers, &payload);
        for condition in [
            "tenant == \"demo\" && payload.amount > 1000",
            "ns == \"agents\" && topic == \"inbox\"",
            "kafka_topic == \"agents.demo.inbox\"",
            "key == \"k-1\" && headers[\"x-env\"] == \"prod\"",
            "payload.kind.startsWith(\"ref\")",
        ] {
            assert!(
                Condition::compile(condition).unwrap().holds(&message),
                "{condition}"
            );
        }
        assert!(
            !Condition::compile("payload.amount > 2000")
                .unwrap()
                .holds(&message)
        );
    }

    #[test]
    fn a_missing_field_or_a_non_boolean_does_not_hold() {
        let topic = TopicName::new("agents", "demo", "inbox").unwrap();
        let (headers, payload) = (headers(), json!({ "kind": "note" }));
        let message = MessageFacts::new(&topic, Some("k-1"), &headers, &payload);
        assert!(
            !Condition::compile("payload.amount > 1")
                .unwrap()
                .holds(&message)
        );
        assert!(!Condition::compile("tenant").unwrap().holds(&message));
    }

    #[test]
    fn a_bad_expression_is_refused() {
        let error = Condition::compile("tenant == ").unwrap_err();
        assert!(error.to_string().contains("does not parse"), "{error}");
    }
}
