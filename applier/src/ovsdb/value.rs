//! OVSDB's JSON value encodings (RFC 7047 section 5.1): atoms, `["set", [...]]` (or a bare atom
//! for a one-element set), `["map", [[k, v], ...]]` and `["uuid", "..."]`.

use serde_json::{json, Value};
use std::collections::BTreeMap;

pub fn uuid(v: &Value) -> Option<String> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, id]) if tag == "uuid" => id.as_str().map(str::to_string),
        _ => None,
    }
}

/// The elements of a set column (a bare atom is a one-element set).
pub fn set(v: &Value) -> Vec<Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, items]) if tag == "set" => items.as_array().cloned().unwrap_or_default(),
        _ => vec![v.clone()],
    }
}

pub fn uuid_set(v: &Value) -> Vec<String> {
    set(v).iter().filter_map(uuid).collect()
}

/// A string-to-string map column.
pub fn string_map(v: &Value) -> BTreeMap<String, String> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, pairs]) if tag == "map" => pairs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// An optional (0- or 1-element set) column's value.
pub fn optional(v: &Value) -> Option<Value> {
    set(v).into_iter().next()
}

pub fn encode_map(m: &BTreeMap<String, String>) -> Value {
    json!([
        "map",
        m.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}

pub fn encode_uuid_set<I: IntoIterator<Item = Value>>(refs: I) -> Value {
    json!(["set", refs.into_iter().collect::<Vec<_>>()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_encodings() {
        assert_eq!(uuid(&json!(["uuid", "abc"])), Some("abc".into()));
        assert_eq!(uuid_set(&json!(["uuid", "a"])), vec!["a"]);
        assert_eq!(
            uuid_set(&json!(["set", [["uuid", "a"], ["uuid", "b"]]])),
            vec!["a", "b"]
        );
        assert!(uuid_set(&json!(["set", []])).is_empty());
        let m = string_map(&json!(["map", [["k", "v"], ["x", "y"]]]));
        assert_eq!(m.get("x").map(String::as_str), Some("y"));
        assert_eq!(optional(&json!(["set", []])), None);
        assert_eq!(optional(&json!(5)), Some(json!(5)));
        assert_eq!(encode_map(&m), json!(["map", [["k", "v"], ["x", "y"]]]));
    }
}
