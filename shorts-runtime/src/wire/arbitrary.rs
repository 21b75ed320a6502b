//! Strategies for the property tests: arbitrary JSON values.

use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value serde_json can hold: nested up to four levels, strings of any characters.
pub(crate) fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A JSON object of arbitrary fields.
pub(crate) fn json_object() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    prop::collection::vec((any::<String>(), json()), 0..6).prop_map(|entries| entries.into_iter().collect())
}
