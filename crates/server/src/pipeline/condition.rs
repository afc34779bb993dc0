//! CEL conditions and the variables a publish exposes to them.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};

use acteon_core::{Headers, TopicName};
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::types::{CelBool, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use thiserror::Error;

use crate::limits::LimitsConfig;

/// CEL's standard functions and macros, built once: building them takes
/// tens of microseconds, far more than evaluating a condition. `matches`
/// is Acteon's own, which compiles each pattern once ([`regex`]).
static STANDARD_ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(|| {
    let mut env = cel::Env::stdlib();
    cel::add_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>, id = "matches")
        .expect("matches is declared once");
    cel::add_member_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>)
        .expect("string.matches is declared once");
    Arc::new(env)
});

/// Compiled patterns of `matches`, by pattern. CEL's own `matches` compiles
/// its pattern on every call; a condition evaluated on every publish would
/// pay that each time. Callers' conditions may only match literal patterns
/// ([`Condition::compile_bounded`]), so the patterns in use are those the
/// rules and silences spell out. Bounded: it is emptied when full.
static REGEXES: LazyLock<Mutex<HashMap<String, Arc<regex::Regex>>>> = LazyLock::new(Mutex::default);
const MAX_CACHED_REGEXES: usize = 256;
/// Largest compiled pattern, and largest matching cache of one: bound the
/// time and memory one pattern costs.
const MAX_REGEX_BYTES: usize = 256 * 1024;

fn regex(pattern: &str) -> Result<Arc<regex::Regex>, regex::Error> {
    let cached = REGEXES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(pattern)
        .cloned();
    if let Some(regex) = cached {
        return Ok(regex);
    }
    let regex = Arc::new(
        regex::RegexBuilder::new(pattern)
            .size_limit(MAX_REGEX_BYTES)
            .dfa_size_limit(MAX_REGEX_BYTES)
            .build()?,
    );
    let mut cache = REGEXES.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= MAX_CACHED_REGEXES {
        cache.clear();
    }
    cache.insert(pattern.to_owned(), Arc::clone(&regex));
    Ok(regex)
}

/// CEL's `matches`: whether `pattern` matches somewhere in `text`. The
/// `regex` crate matches in time linear in the text.
fn matches(text: &CelString<'_>, pattern: &CelString<'_>) -> Result<CelBool, cel::ExecutionError> {
    let regex = regex(pattern.inner())
        .map_err(|error| cel::ExecutionError::function_error("matches", error))?;
    Ok(CelBool::from(regex.is_match(text.inner())))
}

/// A CEL expression that did not parse, or is over a bound.
#[derive(Debug, Error)]
#[error("condition {source_text:?} {message}")]
pub struct ConditionError {
    pub source_text: String,
    pub message: String,
}

/// Bounds on a condition a caller supplies, so that its evaluation on
/// every publish stays cheap: its length, its nesting, and at most one
/// comprehension (`all`, `exists`, `map`, ...) on any path, which keeps the
/// cost linear in the size of the message.
#[derive(Debug, Clone, Copy)]
pub struct ConditionBounds {
    pub max_bytes: usize,
    pub max_depth: usize,
}

impl From<&LimitsConfig> for ConditionBounds {
    fn from(limits: &LimitsConfig) -> Self {
        Self {
            max_bytes: limits.max_condition_bytes,
            max_depth: limits.max_condition_depth,
        }
    }
}

/// The deepest bracket nesting of `text`, counted before parsing so that a
/// deeply nested text cannot exhaust the parser's stack.
fn bracket_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for byte in text.bytes() {
        match byte {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Why `expression` is over `bounds`, if it is. `depth` counts the calls,
/// selections and literals above it; `in_comprehension` whether one of them
/// is a comprehension.
fn over_bounds(
    expression: &IdedExpr,
    bounds: &ConditionBounds,
    depth: usize,
    in_comprehension: bool,
) -> Option<String> {
    // Macros expand into several nodes per level: allow for them.
    if depth > bounds.max_depth * 4 {
        return Some(format!("nests deeper than {} levels", bounds.max_depth));
    }
    let within = |child: &IdedExpr, in_comprehension| {
        over_bounds(child, bounds, depth + 1, in_comprehension)
    };
    match &expression.expr {
        Expr::Call(call)
            if call.func_name == "matches"
                && !call.args.last().is_some_and(|pattern| {
                    matches!(pattern.expr, Expr::Literal(LiteralValue::String(_)))
                }) =>
        {
            Some("calls matches() with a pattern that is not a string literal".to_owned())
        }
        Expr::Call(call) => call
            .target
            .iter()
            .map(|target| target.as_ref())
            .chain(&call.args)
            .find_map(|child| within(child, in_comprehension)),
        Expr::Comprehension(comprehension) => {
            if in_comprehension {
                return Some(
                    "nests a comprehension (all, exists, exists_one, map, filter) in another"
                        .to_owned(),
                );
            }
            within(&comprehension.iter_range, false).or_else(|| {
                [
                    &comprehension.accu_init,
                    &comprehension.loop_cond,
                    &comprehension.loop_step,
                    &comprehension.result,
                ]
                .into_iter()
                .find_map(|child| within(child, true))
            })
        }
        Expr::List(list) => list
            .elements
            .iter()
            .find_map(|child| within(child, in_comprehension)),
        Expr::Map(map) => map.entries.iter().find_map(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => within(&entry.key, in_comprehension)
                .or_else(|| within(&entry.value, in_comprehension)),
            EntryExpr::StructField(field) => within(&field.value, in_comprehension),
        }),
        Expr::Struct(structure) => structure
            .entries
            .iter()
            .find_map(|entry| match &entry.expr {
                EntryExpr::MapEntry(entry) => within(&entry.key, in_comprehension)
                    .or_else(|| within(&entry.value, in_comprehension)),
                EntryExpr::StructField(field) => within(&field.value, in_comprehension),
            }),
        Expr::Select(select) => within(&select.operand, in_comprehension),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => None,
    }
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
    /// Compiles a condition from the configuration file.
    pub fn compile(source_text: &str) -> Result<Self, ConditionError> {
        let program = STANDARD_ENV
            .compile(source_text)
            .map_err(|error| ConditionError {
                source_text: source_text.to_owned(),
                message: format!("does not parse: {error}"),
            })?;
        Ok(Self {
            source_text: source_text.to_owned(),
            program,
        })
    }

    /// Compiles a condition a caller supplied, within `bounds`.
    pub fn compile_bounded(
        source_text: &str,
        bounds: &ConditionBounds,
    ) -> Result<Self, ConditionError> {
        let refuse = |message: String| ConditionError {
            source_text: source_text.chars().take(80).collect(),
            message,
        };
        if source_text.len() > bounds.max_bytes {
            return Err(refuse(format!(
                "is {} bytes long; at most max_condition_bytes ({}) are allowed",
                source_text.len(),
                bounds.max_bytes
            )));
        }
        if bracket_depth(source_text) > bounds.max_depth {
            return Err(refuse(format!(
                "nests brackets deeper than max_condition_depth ({})",
                bounds.max_depth
            )));
        }
        let condition = Self::compile(source_text)?;
        if let Some(reason) = over_bounds(condition.program.expression(), bounds, 0, false) {
            return Err(refuse(reason));
        }
        Ok(condition)
    }

    pub fn source_text(&self) -> &str {
        &self.source_text
    }

    /// Whether the condition holds for `message`. A condition that fails to
    /// evaluate (a missing payload field, a type mismatch) or yields a
    /// non-boolean does not hold: a rule about `payload.amount` does not
    /// apply to messages without an amount.
    pub fn holds(&self, message: &MessageFacts<'_>) -> bool {
        let mut context = cel::Context::with_env(Arc::clone(&STANDARD_ENV));
        context.set_variable_resolver(message);
        match self.program.execute(&context) {
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
///
/// Variables are resolved when a condition names them: the strings are
/// borrowed, and `headers` and `payload` are converted into CEL values
/// once, by the first condition that reads them. Converting every variable
/// up front cost more than the rest of a publish.
pub struct MessageFacts<'a> {
    pub topic: &'a TopicName,
    key: Option<&'a str>,
    headers: &'a Headers,
    payload: &'a serde_json::Value,
    headers_value: OnceLock<Box<dyn Val>>,
    payload_value: OnceLock<Box<dyn Val>>,
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
            headers_value: OnceLock::new(),
            payload_value: OnceLock::new(),
        }
    }
}

/// `value` as a CEL value, converted into `cell` by the first caller and
/// borrowed from it by the rest.
fn converted_once<'b>(
    cell: &'b OnceLock<Box<dyn Val>>,
    value: &impl serde::Serialize,
) -> Option<CowVal<'b, 'b>> {
    let converted = cell.get_or_init(|| {
        cel::to_value(value)
            .expect("headers and JSON convert to CEL")
            .try_into()
            .expect("a CEL value is a Val")
    });
    Some(CowVal::Borrowed(converted.as_ref()))
}

impl VariableResolver for MessageFacts<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let text = |text: &'b str| Some(CowVal::owned(CelString::from(text)));
        match variable {
            "tenant" => text(self.topic.tenant()),
            "ns" => text(self.topic.namespace()),
            "topic" => text(self.topic.name()),
            "kafka_topic" => text(self.topic.kafka_topic_name()),
            "key" => text(self.key.unwrap_or_default()),
            "headers" => converted_once(&self.headers_value, self.headers),
            "payload" => converted_once(&self.payload_value, self.payload),
            _ => None,
        }
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
        let (headers, payload) = (
            headers(),
            json!({ "amount": 1500, "kind": "refund", "items": [1, 3] }),
        );
        let message = MessageFacts::new(&topic, Some("k-1"), &headers, &payload);
        for condition in [
            "tenant == \"demo\" && payload.amount > 1000",
            "ns == \"agents\" && topic == \"inbox\"",
            "kafka_topic == \"agents.demo.inbox\"",
            "key == \"k-1\" && headers[\"x-env\"] == \"prod\"",
            "payload.kind.startsWith(\"ref\")",
            "payload.items.exists(item, item == 3) && size(payload) == 3",
            // A comprehension's own variable hides the publish's.
            "[1].exists(tenant, tenant == 1)",
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
        assert!(!Condition::compile("unknown == 1").unwrap().holds(&message));
    }

    #[test]
    fn matches_uses_each_pattern_compiled_once() {
        let topic = TopicName::new("agents", "demo", "inbox").unwrap();
        let (headers, payload) = (headers(), json!({ "kind": "refund-42" }));
        let message = MessageFacts::new(&topic, None, &headers, &payload);
        let condition = Condition::compile("payload.kind.matches('^refund-[0-9]+$')").unwrap();
        assert!(condition.holds(&message));
        let first = regex("^refund-[0-9]+$").unwrap();
        assert!(condition.holds(&message));
        assert!(Arc::ptr_eq(&first, &regex("^refund-[0-9]+$").unwrap()));
        assert!(
            Condition::compile("matches(tenant, 'de')")
                .unwrap()
                .holds(&message)
        );
        assert!(
            !Condition::compile("tenant.matches('(')")
                .unwrap()
                .holds(&message)
        );
    }

    #[test]
    fn caller_conditions_are_bounded() {
        let bounds = ConditionBounds::from(&LimitsConfig::default());
        let refused = |text: &str| {
            Condition::compile_bounded(text, &bounds)
                .unwrap_err()
                .to_string()
        };
        let long = format!("tenant == '{}'", "x".repeat(bounds.max_bytes));
        assert!(refused(&long).contains("max_condition_bytes"));
        let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        assert!(refused(&deep).contains("max_condition_depth"));
        assert!(refused("key.matches(payload.pattern)").contains("literal"));
        let nested = "payload.items.all(x, payload.items.exists(y, x == y))";
        assert!(
            refused(nested).contains("comprehension"),
            "{}",
            refused(nested)
        );
        for fine in [
            "payload.items.all(x, x > 1)",
            "payload.items.exists(x, x > 1) && payload.tags.all(t, t != 'a')",
            "tenant == 'demo' && headers['x-env'].matches('^prod')",
        ] {
            Condition::compile_bounded(fine, &bounds).unwrap();
        }
    }

    #[test]
    fn a_bad_expression_is_refused() {
        let error = Condition::compile("tenant == ").unwrap_err();
        assert!(error.to_string().contains("does not parse"), "{error}");
    }
}
