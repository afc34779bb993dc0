//! Whether every document one JSON Schema accepts is accepted by another.
//!
//! The registry's compatibility modes reduce to this one question:
//! `backward` asks whether the new schema accepts everything the old one
//! did, `forward` the reverse, `full` both. The answer here is
//! conservative. [`accepts_all_of`] proves acceptance keyword by keyword
//! over the keywords it understands, and refuses, with its reason, what
//! it cannot prove; it never accepts a pair where some document valid
//! under the old schema is refused by the new one.
//!
//! Soundness rests on one property of JSON Schema: every keyword is a
//! further condition on the document. Leaving out a condition of the
//! schema whose documents are being covered only makes that set larger, so
//! that side's unknown keywords may be ignored; the covering side's may
//! not, and a keyword there that is not understood is refused unless the
//! two schemas are identical at that place.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Keywords that carry no condition: annotations, and the dialect.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$anchor",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
];

/// Keywords of a covering schema that are compared here.
const COMPARED: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "allOf",
    "anyOf",
];

/// Keywords whose meaning depends on the rest of the document, compared
/// only as whole schemas.
const REFERENCES: &[&str] = &["$ref", "$dynamicRef", "$recursiveRef"];

/// The JSON types a schema names; `integer` is a kind of `number`.
const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "integer", "string",
];

/// Why a document `old` accepted might be refused by `new`: one message
/// per place, naming it by its JSON pointer in the schema. Empty when
/// every document valid under `old` is valid under `new`.
pub fn accepts_all_of(new: &Value, old: &Value) -> Vec<String> {
    let mut reasons = Vec::new();
    if contains_reference(new) || contains_reference(old) {
        if new != old {
            reasons.push("a schema with $ref is compared only with an identical schema".to_owned());
        }
        return reasons;
    }
    covers(new, old, "", &mut reasons);
    reasons
}

fn contains_reference(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| REFERENCES.contains(&key.as_str()) || contains_reference(value)),
        Value::Array(items) => items.iter().any(contains_reference),
        _ => false,
    }
}

/// Adds to `reasons` why `wide` may refuse a document `narrow` accepts.
fn covers(wide: &Value, narrow: &Value, at: &str, reasons: &mut Vec<String>) {
    if wide == narrow || narrow == &Value::Bool(false) || wide == &Value::Bool(true) {
        return;
    }
    let empty = Map::new();
    let narrow_map = match narrow {
        Value::Object(map) => map,
        Value::Bool(true) => &empty,
        _ => return reasons.push(format!("{}: not a schema", pointer(at))),
    };
    let wide_map = match wide {
        Value::Object(map) => map,
        Value::Bool(false) => {
            return reasons.push(format!("{}: refuses every document now", pointer(at)));
        }
        _ => return reasons.push(format!("{}: not a schema", pointer(at))),
    };
    // Listed values are checked exactly, by a validator.
    if let Some(values) = listed_values(narrow_map) {
        return covers_values(wide, &values, at, reasons);
    }
    let before = reasons.len();
    for key in wide_map.keys() {
        let key = key.as_str();
        if !COMPARED.contains(&key) && !ANNOTATIONS.contains(&key) && key != "$defs" {
            reasons.push(format!(
                "{}: `{key}` is not compared; only an unchanged schema is accepted here",
                pointer(at)
            ));
        }
    }
    if reasons.len() > before {
        return;
    }
    if wide_map.contains_key("enum") || wide_map.contains_key("const") {
        return reasons.push(format!(
            "{}: only listed values are accepted now",
            pointer(at)
        ));
    }
    let narrow_types = types(narrow_map);
    let wide_types = types(wide_map);
    let lost: Vec<&str> = narrow_types
        .iter()
        .copied()
        .filter(|kind| {
            !(wide_types.contains(kind) || *kind == "integer" && wide_types.contains("number"))
        })
        .collect();
    if !lost.is_empty() {
        reasons.push(format!(
            "{}: type {} no longer accepted",
            pointer(at),
            lost.join(", ")
        ));
    }
    let admits = |kind: &str| {
        narrow_types.contains(kind) && wide_types.contains(kind)
            || kind == "number" && narrow_types.contains("integer") && wide_types.contains("number")
    };
    if admits("string") {
        covers_strings(wide_map, narrow_map, at, reasons);
    }
    if admits("number") || admits("integer") {
        covers_numbers(wide_map, narrow_map, at, reasons);
    }
    if admits("object") {
        covers_objects(wide_map, narrow_map, at, reasons);
    }
    if admits("array") {
        covers_arrays(wide_map, narrow_map, at, reasons);
    }
    if let Some(Value::Array(parts)) = wide_map.get("allOf") {
        for (index, part) in parts.iter().enumerate() {
            covers(part, narrow, &format!("{at}/allOf/{index}"), reasons);
        }
    }
    if let Some(Value::Array(parts)) = wide_map.get("anyOf") {
        let one_covers = parts.iter().any(|part| {
            let mut unproven = Vec::new();
            covers(part, narrow, at, &mut unproven);
            unproven.is_empty()
        });
        if !one_covers {
            reasons.push(format!(
                "{}: no branch of anyOf accepts everything accepted before",
                pointer(at)
            ));
        }
    }
}

/// The only values a schema accepts, if it lists them.
fn listed_values(schema: &Map<String, Value>) -> Option<Vec<Value>> {
    if let Some(value) = schema.get("const") {
        return Some(vec![value.clone()]);
    }
    match schema.get("enum") {
        Some(Value::Array(values)) => Some(values.clone()),
        _ => None,
    }
}

/// A narrow schema that lists its values is covered when the wide schema
/// accepts each of them, which a validator can tell exactly.
fn covers_values(wide: &Value, values: &[Value], at: &str, reasons: &mut Vec<String>) {
    let validator = match jsonschema::draft202012::new(wide) {
        Ok(validator) => validator,
        Err(error) => return reasons.push(format!("{}: {error}", pointer(at))),
    };
    for value in values {
        if !validator.is_valid(value) {
            reasons.push(format!(
                "{}: value {value} is no longer accepted",
                pointer(at)
            ));
        }
    }
}

/// The types a schema names, or every type.
fn types(schema: &Map<String, Value>) -> BTreeSet<&'static str> {
    let named = |name: &str| TYPES.iter().copied().find(|kind| *kind == name);
    match schema.get("type") {
        Some(Value::String(name)) => named(name).into_iter().collect(),
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .filter_map(named)
            .collect(),
        _ => TYPES.into_iter().collect(),
    }
}

fn pointer(at: &str) -> &str {
    if at.is_empty() { "/" } else { at }
}

fn number(schema: &Map<String, Value>, keyword: &str) -> Option<f64> {
    schema.get(keyword).and_then(Value::as_f64)
}

/// A lower (or upper) bound at least as loose in `wide` as in `narrow`.
fn covers_bound(
    wide: &Map<String, Value>,
    narrow: &Map<String, Value>,
    [inclusive, exclusive]: [&str; 2],
    looser: fn(f64, f64) -> bool,
) -> bool {
    let bound = |schema: &Map<String, Value>| {
        let inclusive = number(schema, inclusive).map(|at| (at, false));
        let exclusive = number(schema, exclusive).map(|at| (at, true));
        match (inclusive, exclusive) {
            // The tighter of the two; at one value, the exclusive one.
            (Some(a), Some(b)) => Some(if looser(a.0, b.0) || a.0 == b.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    };
    match (bound(wide), bound(narrow)) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some((wide_at, wide_open)), Some((narrow_at, narrow_open))) => {
            looser(wide_at, narrow_at) || wide_at == narrow_at && (!wide_open || narrow_open)
        }
    }
}

/// A count keyword (`minLength`, `maxItems`, ...) as the validator reads
/// it: a whole number, also when written as a float (`3.0`), saturating
/// past `u64::MAX` (`1e20`). `Err` for anything else, which is then not
/// compared.
fn count(schema: &Map<String, Value>, keyword: &str) -> Result<Option<u64>, ()> {
    let Some(value) = schema.get(keyword) else {
        return Ok(None);
    };
    if let Some(whole) = value.as_u64() {
        return Ok(Some(whole));
    }
    match value.as_f64() {
        // `as` saturates, as the validator does.
        Some(float) if float >= 0.0 && float.fract() == 0.0 => Ok(Some(float as u64)),
        _ => Err(()),
    }
}

/// A count bound (`minLength`, `maxItems`, ...) as loose in `wide`.
fn covers_count(
    wide: &Map<String, Value>,
    narrow: &Map<String, Value>,
    [minimum, maximum]: [&str; 2],
    at: &str,
    reasons: &mut Vec<String>,
) {
    let read = |keyword| match (count(wide, keyword), count(narrow, keyword)) {
        (Ok(wide), Ok(narrow)) => Some((wide, narrow)),
        _ => None,
    };
    let (Some(minimums), Some(maximums)) = (read(minimum), read(maximum)) else {
        if wide.get(minimum) != narrow.get(minimum) || wide.get(maximum) != narrow.get(maximum) {
            reasons.push(format!(
                "{}: {minimum} or {maximum} is not a whole number and changed",
                pointer(at)
            ));
        }
        return;
    };
    if minimums.0.unwrap_or(0) > minimums.1.unwrap_or(0) {
        reasons.push(format!("{}: {minimum} is higher now", pointer(at)));
    }
    if let (Some(most), before) = maximums
        && before.is_none_or(|before| before > most)
    {
        reasons.push(format!("{}: {maximum} is lower now", pointer(at)));
    }
}

fn covers_strings(
    wide: &Map<String, Value>,
    narrow: &Map<String, Value>,
    at: &str,
    reasons: &mut Vec<String>,
) {
    covers_count(wide, narrow, ["minLength", "maxLength"], at, reasons);
    for keyword in ["pattern", "format"] {
        if let Some(now) = wide.get(keyword)
            && narrow.get(keyword) != Some(now)
        {
            reasons.push(format!("{}: {keyword} is new or changed", pointer(at)));
        }
    }
}

/// Keywords that bound numbers.
const NUMERIC: [&str; 5] = [
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
];

/// Integers past 2^53 lose precision as `f64`, which the bounds are
/// compared in; the validator compares them exactly.
fn imprecise(value: Option<&Value>) -> bool {
    const EXACT: u64 = 1 << 53;
    value.is_some_and(|value| {
        value.as_u64().is_some_and(|n| n > EXACT)
            || value.as_i64().is_some_and(|n| n.unsigned_abs() > EXACT)
    })
}

fn covers_numbers(
    wide: &Map<String, Value>,
    narrow: &Map<String, Value>,
    at: &str,
    reasons: &mut Vec<String>,
) {
    if NUMERIC
        .iter()
        .any(|keyword| imprecise(wide.get(*keyword)) || imprecise(narrow.get(*keyword)))
    {
        if NUMERIC
            .iter()
            .any(|keyword| wide.get(*keyword) != narrow.get(*keyword))
        {
            reasons.push(format!(
                "{}: a numeric bound past 2^53 changed, which is not compared",
                pointer(at)
            ));
        }
        return;
    }
    if !covers_bound(wide, narrow, ["minimum", "exclusiveMinimum"], |a, b| a < b) {
        reasons.push(format!("{}: the lower bound is higher now", pointer(at)));
    }
    if !covers_bound(wide, narrow, ["maximum", "exclusiveMaximum"], |a, b| a > b) {
        reasons.push(format!("{}: the upper bound is lower now", pointer(at)));
    }
    if let Some(step) = number(wide, "multipleOf") {
        // A multiple of a multiple of `step` is one of `step`; proven only
        // for whole numbers, where the remainder is exact.
        let divides = number(narrow, "multipleOf").is_some_and(|before| {
            before == step || before.fract() == 0.0 && step.fract() == 0.0 && before % step == 0.0
        });
        if !divides {
            reasons.push(format!("{}: multipleOf is new or changed", pointer(at)));
        }
    }
}

/// The schema a property `name` gets from `schema`; `true` where the
/// schema says nothing that can be relied on.
fn property_schema<'a>(schema: &'a Map<String, Value>, name: Option<&str>) -> &'a Value {
    const ANY: &Value = &Value::Bool(true);
    if let Some(named) = name.and_then(|name| schema.get("properties")?.get(name)) {
        return named;
    }
    // With patternProperties, additionalProperties does not apply to the
    // names that match; which ones do is not worked out here.
    if schema.contains_key("patternProperties") {
        return ANY;
    }
    schema.get("additionalProperties").unwrap_or(ANY)
}

fn covers_objects(
    wide: &Map<String, Value>,
    narrow: &Map<String, Value>,
    at: &str,
    reasons: &mut Vec<String>,
) {
    let required = |schema: &Map<String, Value>| -> BTreeSet<String> {
        match schema.get("required") {
            Some(Value::Array(names)) => names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => BTreeSet::new(),
        }
    };
    let before = required(narrow);
    for name in required(wide).difference(&before) {
        reasons.push(format!(
            "{}: property {name:?} is required now",
            pointer(at)
        ));
    }
    covers_count(
        wide,
        narrow,
        ["minProperties", "maxProperties"],
        at,
        reasons,
    );
    let names = |schema: &Map<String, Value>| -> BTreeSet<String> {
        match schema.get("properties") {
            Some(Value::Object(properties)) => properties.keys().cloned().collect(),
            _ => BTreeSet::new(),
        }
    };
    for name in names(wide).union(&names(narrow)) {
        covers(
            property_schema(wide, Some(name)),
            property_schema(narrow, Some(name)),
            &format!("{at}/properties/{}", escape(name)),
            reasons,
        );
    }
    covers(
        property_schema(wide, None),
        property_schema(narrow, None),
        &format!("{at}/additionalProperties"),
        reasons,
    );
}

fn covers_arrays(
    wide: &Map<String, Value>,
    narrow: &Map<String, Value>,
    at: &str,
    reasons: &mut Vec<String>,
) {
    const ANY: &Value = &Value::Bool(true);
    // After prefixItems, items covers only the rest of the array.
    let narrow_items = if narrow.contains_key("prefixItems") {
        ANY
    } else {
        narrow.get("items").unwrap_or(ANY)
    };
    covers(
        wide.get("items").unwrap_or(ANY),
        narrow_items,
        &format!("{at}/items"),
        reasons,
    );
    covers_count(wide, narrow, ["minItems", "maxItems"], at, reasons);
    if wide.get("uniqueItems") == Some(&Value::Bool(true))
        && narrow.get("uniqueItems") != Some(&Value::Bool(true))
    {
        reasons.push(format!("{}: items must be unique now", pointer(at)));
    }
}

/// A property name as a JSON pointer token.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn accepted(new: Value, old: Value) -> bool {
        accepts_all_of(&new, &old).is_empty()
    }

    fn object(properties: Value, required: &[&str]) -> Value {
        json!({ "type": "object", "properties": properties, "required": required })
    }

    #[test]
    fn counts_written_as_floats_or_past_u64_are_read_as_the_validator_reads_them() {
        let string = json!({ "type": "string" });
        assert!(!accepted(
            json!({ "type": "string", "maxLength": 3.0 }),
            string.clone()
        ));
        assert!(!accepted(
            json!({ "type": "string", "minLength": 1e20 }),
            string.clone()
        ));
        assert!(accepted(
            json!({ "type": "string", "maxLength": 4.0 }),
            json!({ "type": "string", "maxLength": 3 })
        ));
        assert!(!accepted(
            json!({ "type": "array", "maxItems": 2.0 }),
            json!({ "type": "array", "maxItems": 3 })
        ));
    }

    #[test]
    fn bounds_past_2_to_the_53_must_be_unchanged() {
        let big = |n: u64| json!({ "type": "integer", "maximum": n });
        let limit = 1_u64 << 53;
        assert!(!accepted(big(limit), big(limit + 1)));
        assert!(!accepted(big(limit + 2), big(limit + 1)));
        assert!(accepted(big(limit + 1), big(limit + 1)));
        assert!(accepted(big(limit), big(limit - 1)));
        let step = |n: u64| json!({ "type": "integer", "multipleOf": n });
        // 2^53 + 1 is odd, but rounds to an even f64.
        assert!(!accepted(step(2), step(limit + 1)));
        assert!(accepted(step(limit + 1), step(limit + 1)));
    }

    #[test]
    fn an_optional_property_may_be_added_to_a_closed_object_only() {
        let closed = json!({
            "type": "object", "properties": { "a": { "type": "string" } },
            "additionalProperties": false,
        });
        let mut added = closed.clone();
        added["properties"]["b"] = json!({ "type": "integer" });
        assert!(accepted(added, closed));
        // Open, an old document may hold any `b` at all.
        let open = object(json!({ "a": { "type": "string" } }), &[]);
        let added = object(
            json!({ "a": { "type": "string" }, "b": { "type": "integer" } }),
            &[],
        );
        let reasons = accepts_all_of(&added, &open);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].starts_with("/properties/b:"), "{reasons:?}");
    }

    #[test]
    fn a_new_required_property_is_refused_and_dropping_one_is_accepted() {
        let before = object(json!({ "a": { "type": "string" } }), &["a"]);
        let after = object(json!({ "a": { "type": "string" } }), &[]);
        assert!(accepted(after.clone(), before.clone()));
        let reasons = accepts_all_of(&before, &after);
        assert_eq!(reasons, ["/: property \"a\" is required now"]);
    }

    #[test]
    fn types_may_widen_and_not_narrow() {
        let integer = json!({ "type": "integer" });
        let number = json!({ "type": "number" });
        let either = json!({ "type": ["string", "integer"] });
        assert!(accepted(number.clone(), integer.clone()));
        assert!(!accepted(integer.clone(), number));
        assert!(accepted(either.clone(), integer.clone()));
        assert!(!accepted(integer, either));
        assert!(accepted(json!(true), json!({ "type": "string" })));
        assert!(!accepted(json!({ "type": "string" }), json!(true)));
    }

    #[test]
    fn bounds_may_loosen_and_not_tighten() {
        let between =
            |low: Value, high: Value| json!({ "type": "number", "minimum": low, "maximum": high });
        assert!(accepted(
            between(json!(0), json!(10)),
            between(json!(1), json!(9))
        ));
        assert!(!accepted(
            between(json!(1), json!(10)),
            between(json!(0), json!(10))
        ));
        assert!(!accepted(
            between(json!(0), json!(9)),
            between(json!(0), json!(10))
        ));
        let open_above_zero = json!({ "type": "number", "exclusiveMinimum": 0 });
        let from_zero = json!({ "type": "number", "minimum": 0 });
        assert!(accepted(from_zero.clone(), open_above_zero.clone()));
        assert!(!accepted(open_above_zero, from_zero));
        let short = json!({ "type": "string", "maxLength": 5 });
        let long = json!({ "type": "string", "maxLength": 50 });
        assert!(accepted(long.clone(), short.clone()));
        assert!(!accepted(short, long));
        let six = json!({ "type": "integer", "multipleOf": 6 });
        let three = json!({ "type": "integer", "multipleOf": 3 });
        assert!(accepted(three.clone(), six.clone()));
        assert!(!accepted(six, three));
    }

    #[test]
    fn listed_values_are_checked_one_by_one() {
        let colours = json!({ "enum": ["red", "green"] });
        assert!(accepted(
            json!({ "enum": ["red", "green", "blue"] }),
            colours.clone()
        ));
        assert!(accepted(
            json!({ "type": "string", "maxLength": 5 }),
            colours.clone()
        ));
        assert!(!accepted(json!({ "enum": ["red"] }), colours.clone()));
        assert!(!accepted(colours, json!({ "type": "string" })));
    }

    #[test]
    fn nested_changes_are_named_by_their_place() {
        let before = object(
            json!({ "items": { "type": "array", "items": { "type": "integer" } } }),
            &[],
        );
        let after = object(
            json!({ "items": { "type": "array", "items": { "type": "string" } } }),
            &[],
        );
        assert_eq!(
            accepts_all_of(&after, &before),
            ["/properties/items/items: type integer no longer accepted"]
        );
    }

    #[test]
    fn what_is_not_compared_is_accepted_only_unchanged() {
        let before = json!({ "type": "object", "propertyNames": { "maxLength": 3 } });
        assert!(accepted(before.clone(), before.clone()));
        let after = json!({ "type": "object", "propertyNames": { "maxLength": 4 } });
        assert!(!accepted(after, before));
        let referring = json!({
            "$defs": { "id": { "type": "string" } },
            "type": "object", "properties": { "id": { "$ref": "#/$defs/id" } },
        });
        assert!(accepted(referring.clone(), referring.clone()));
        assert!(!accepted(json!({ "type": "object" }), referring));
        // A condition of the old schema that is not understood is only
        // left out, which cannot make a refused change look accepted.
        let with_not = json!({ "type": "string", "not": { "const": "x" } });
        assert!(accepted(json!({ "type": "string" }), with_not));
    }

    #[test]
    fn combinators_of_the_new_schema_are_followed() {
        let string = json!({ "type": "string" });
        let either = json!({ "anyOf": [{ "type": "integer" }, { "type": "string" }] });
        assert!(accepted(either.clone(), string.clone()));
        assert!(!accepted(
            json!({ "anyOf": [{ "type": "integer" }] }),
            string.clone()
        ));
        let both = json!({ "allOf": [{ "type": "string" }, { "maxLength": 3 }] });
        assert!(!accepted(both, string));
    }
}
