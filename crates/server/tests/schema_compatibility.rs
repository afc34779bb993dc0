//! The compatibility checker may refuse a compatible change; it must never
//! accept an incompatible one. Random schemas, random changes to them and
//! random documents: whenever the checker says a new schema accepts all
//! that an old one did, every document valid under the old one must be
//! valid under the new one.

use acteon_server::schemas::compatibility::accepts_all_of;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn documents() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-4i64..5).prop_map(|n| json!(n)),
        (-4.0f64..4.0).prop_map(|x| json!((x * 2.0).round() / 2.0)),
        "[ab]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn type_names() -> impl Strategy<Value = Value> {
    let name = prop::sample::select(vec![
        "null", "boolean", "integer", "number", "string", "object", "array",
    ]);
    prop_oneof![
        name.clone().prop_map(|n| json!(n)),
        prop::collection::vec(name, 1..3).prop_map(|names| json!(names)),
    ]
}

/// A schema with optional `type`, bounds, lengths and listed values.
fn leaf_schemas() -> impl Strategy<Value = Value> {
    let bound = prop::option::of(-3i64..4);
    // Lengths are also written as floats (`2.0`), which the validator
    // reads as whole numbers.
    let length = prop::option::of(
        (0u64..4, any::<bool>()).prop_map(
            |(n, float)| {
                if float { json!(n as f64) } else { json!(n) }
            },
        ),
    );
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        (
            prop::option::of(type_names()),
            bound.clone(),
            bound.clone(),
            bound,
            length.clone(),
            length,
            prop::option::of(prop::sample::select(vec![1i64, 2, 4])),
        )
            .prop_map(|(kind, min, max, exclusive, min_len, max_len, step)| {
                let mut schema = Map::new();
                let mut put = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        schema.insert(key.to_owned(), value);
                    }
                };
                put("type", kind);
                put("minimum", min.map(|n| json!(n)));
                put("maximum", max.map(|n| json!(n)));
                put("exclusiveMinimum", exclusive.map(|n| json!(n)));
                put("minLength", min_len);
                put("maxLength", max_len);
                put("multipleOf", step.map(|n| json!(n)));
                Value::Object(schema)
            }),
        prop::collection::vec(documents(), 1..4).prop_map(|values| json!({ "enum": values })),
    ]
}

fn schemas() -> impl Strategy<Value = Value> {
    leaf_schemas().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            (
                prop::collection::btree_map("[a-d]", inner.clone(), 0..4),
                prop::collection::btree_set("[a-d]", 0..3),
                prop::option::of(inner.clone()),
            )
                .prop_map(|(properties, required, additional)| {
                    let mut schema = json!({
                        "type": "object",
                        "properties": properties.into_iter().collect::<Map<_, _>>(),
                        "required": required,
                    });
                    if let Some(additional) = additional {
                        schema["additionalProperties"] = additional;
                    }
                    schema
                }),
            (
                inner.clone(),
                prop::option::of(0u64..3),
                prop::option::of(0u64..3)
            )
                .prop_map(|(items, min, max)| {
                    let mut schema = json!({ "type": "array", "items": items });
                    if let Some(min) = min {
                        schema["minItems"] = json!(min);
                    }
                    if let Some(max) = max {
                        schema["maxItems"] = json!(max);
                    }
                    schema
                }),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|parts| json!({ "anyOf": parts })),
            prop::collection::vec(inner, 1..3).prop_map(|parts| json!({ "allOf": parts })),
        ]
    })
}

/// `schema` with the edits `choices` pick: numbers moved by one (down
/// also as a float), names
/// dropped from `required`, keywords removed, subschemas loosened to
/// `true`. Most such changes are small, so the checker accepts some.
fn edited(schema: &Value, choices: &mut dyn Iterator<Item = u8>) -> Value {
    fn pick(choices: &mut dyn Iterator<Item = u8>) -> u8 {
        choices.next().unwrap_or(u8::MAX)
    }
    match schema {
        Value::Object(_) if pick(choices) % 12 == 0 => Value::Bool(true),
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                if pick(choices) % 8 == 0 {
                    continue;
                }
                let value = match (key.as_str(), value) {
                    ("required", Value::Array(names)) => Value::Array(
                        names
                            .iter()
                            .filter(|_| pick(choices) % 3 != 0)
                            .cloned()
                            .collect(),
                    ),
                    (_, Value::Number(n)) => match (n.as_i64(), pick(choices) % 4) {
                        (Some(n), 0) => json!(n - 1),
                        (Some(n), 1) => json!(n + 1),
                        (Some(n), 2) => json!((n - 1) as f64),
                        _ => value.clone(),
                    },
                    ("properties", Value::Object(properties)) => Value::Object(
                        properties
                            .iter()
                            .map(|(name, sub)| (name.clone(), edited(sub, choices)))
                            .collect(),
                    ),
                    (_, Value::Object(_) | Value::Bool(_)) => edited(value, choices),
                    (_, Value::Array(parts)) if key == "anyOf" || key == "allOf" => {
                        Value::Array(parts.iter().map(|part| edited(part, choices)).collect())
                    }
                    _ => value.clone(),
                };
                out.insert(key.clone(), value);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn an_accepted_change_accepts_every_document_the_old_schema_did(
        old in schemas(),
        other in schemas(),
        choices in prop::collection::vec(any::<u8>(), 64),
        edit in any::<bool>(),
        documents in prop::collection::vec(documents(), 48),
    ) {
        let new = if edit { edited(&old, &mut choices.into_iter()) } else { other };
        // An edit may leave a schema the registry would refuse to store
        // (a negative length), which the checker never sees.
        let (Ok(old_validator), Ok(new_validator)) =
            (jsonschema::draft202012::new(&old), jsonschema::draft202012::new(&new))
        else {
            return Ok(());
        };
        if accepts_all_of(&new, &old).is_empty() {
            for document in documents.iter().filter(|d| old_validator.is_valid(d)) {
                prop_assert!(
                    new_validator.is_valid(document),
                    "accepted {new} over {old}, which refuses {document}"
                );
            }
        }
    }
}
