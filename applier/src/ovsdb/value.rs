//! OVSDB's JSON value encodings (RFC 7047 section 5.1): atoms, `["set", [...]]` (or a bare atom
//! for a one-element set), `["map", [[k, v], ...]]` and `["uuid", "..."]`. Encoded as
//! [`Value`]s for transactions; decoded straight from a reply's text by the serde types
//! [`Uuid`], [`UuidSet`] and [`StrMap`] (the read of every row builds no `Value` tree: at 1,000
//! tunnels that cost more than the rest of the read).

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The elements of a set column (a bare atom is a one-element set).
pub fn set(v: &Value) -> Vec<Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, items]) if tag == "set" => items.as_array().cloned().unwrap_or_default(),
        _ => vec![v.clone()],
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

/// The tag of an encoded OVSDB value, decoded without allocating.
#[derive(Deserialize, PartialEq, Eq, Clone, Copy, Debug)]
#[serde(rename_all = "lowercase")]
enum Tag {
    Uuid,
    Set,
    Map,
    #[serde(rename = "named-uuid")]
    NamedUuid,
}

const UUID: &str = r#"an OVSDB UUID ["uuid", "..."]"#;
const UUID_SET: &str = r#"an OVSDB set of UUIDs ["set", [["uuid", "..."], ...]]"#;
const MAP: &str = r#"an OVSDB map ["map", [["key", "value"], ...]]"#;

/// The tag of a `[tag, payload]` pair.
fn tag<'de, A: SeqAccess<'de>>(seq: &mut A, what: &'static str) -> Result<Tag, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::invalid_length(0, &what))
}

/// The payload of a `[tag, payload]` pair; refuses a third element.
fn payload<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    mut seq: A,
    what: &'static str,
) -> Result<T, A::Error> {
    let payload = seq
        .next_element()?
        .ok_or_else(|| de::Error::invalid_length(1, &what))?;
    if seq.next_element::<de::IgnoredAny>()?.is_some() {
        return Err(de::Error::invalid_length(3, &what));
    }
    Ok(payload)
}

fn wrong_tag<E: de::Error>(what: &str, found: Tag) -> E {
    E::custom(format_args!("expected {what}, found a {found:?} value"))
}

/// `["uuid", "..."]`: a row's UUID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uuid(pub String);

impl<'de> Deserialize<'de> for Uuid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Uuid;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(UUID)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Uuid, A::Error> {
                match tag(&mut seq, UUID)? {
                    Tag::Uuid => payload(seq, UUID).map(Uuid),
                    other => Err(wrong_tag(UUID, other)),
                }
            }
        }
        d.deserialize_seq(V)
    }
}

/// A set of UUIDs: `["set", [["uuid", "..."], ...]]`, or a bare `["uuid", "..."]` for one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UuidSet(pub Vec<String>);

impl<'de> Deserialize<'de> for UuidSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UuidSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(UUID_SET)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UuidSet, A::Error> {
                match tag(&mut seq, UUID_SET)? {
                    Tag::Uuid => payload(seq, UUID_SET).map(|u| UuidSet(vec![u])),
                    Tag::Set => {
                        let set: Vec<Uuid> = payload(seq, UUID_SET)?;
                        Ok(UuidSet(set.into_iter().map(|u| u.0).collect()))
                    }
                    other => Err(wrong_tag(UUID_SET, other)),
                }
            }
        }
        d.deserialize_seq(V)
    }
}

/// A string-to-string map column: `["map", [["key", "value"], ...]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StrMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for StrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(MAP)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrMap, A::Error> {
                match tag(&mut seq, MAP)? {
                    Tag::Map => payload::<A, Pairs>(seq, MAP).map(|p| StrMap(p.0)),
                    other => Err(wrong_tag(MAP, other)),
                }
            }
        }
        d.deserialize_seq(V)
    }
}

/// A map's `[["key", "value"], ...]`, straight into the map: no list of pairs to sort first
/// (4,000 small maps in the read of 1,000 tunnels). A key given twice keeps its last value.
struct Pairs(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(MAP)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pairs, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((k, v)) = seq.next_element::<(String, String)>()? {
                    map.insert(k, v);
                }
                Ok(Pairs(map))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_encodes_the_value_encodings() {
        assert_eq!(optional(&json!(["set", []])), None);
        assert_eq!(optional(&json!(5)), Some(json!(5)));
        let m = BTreeMap::from([("k".to_string(), "v".to_string()), ("x".into(), "y".into())]);
        assert_eq!(encode_map(&m), json!(["map", [["k", "v"], ["x", "y"]]]));
        let back: StrMap = serde_json::from_value(encode_map(&m)).unwrap();
        assert_eq!(back.0, m);
        let back: UuidSet =
            serde_json::from_value(encode_uuid_set([json!(["uuid", "a"])])).unwrap();
        assert_eq!(back.0, ["a"]);
    }

    #[test]
    fn typed_decoding_reads_the_encodings() {
        let u: Uuid = serde_json::from_str(r#"["uuid", "abc"]"#).unwrap();
        assert_eq!(u.0, "abc");
        let one: UuidSet = serde_json::from_str(r#"["uuid", "a"]"#).unwrap();
        assert_eq!(one.0, ["a"]);
        let two: UuidSet =
            serde_json::from_str(r#"["set", [["uuid", "a"], ["uuid", "b"]]]"#).unwrap();
        assert_eq!(two.0, ["a", "b"]);
        let none: UuidSet = serde_json::from_str(r#"["set", []]"#).unwrap();
        assert!(none.0.is_empty());
        let m: StrMap = serde_json::from_str(r#"["map", [["k", "v"], ["x", "y"]]]"#).unwrap();
        assert_eq!(m.0.get("x").map(String::as_str), Some("y"));
        let empty: StrMap = serde_json::from_str(r#"["map", []]"#).unwrap();
        assert!(empty.0.is_empty());
        // Out of order, and a key twice: sorted, the last value kept.
        let m: StrMap =
            serde_json::from_str(r#"["map", [["x", "1"], ["k", "v"], ["x", "2"]]]"#).unwrap();
        assert_eq!(
            m.0.into_iter().collect::<Vec<_>>(),
            [("k".into(), "v".into()), ("x".into(), "2".into())]
        );
    }

    #[test]
    fn typed_decoding_refuses_malformed_values_saying_what_it_expected() {
        for (bad, says) in [
            (r#"["set", []]"#, "expected an OVSDB map"),
            (r#"["map"]"#, "invalid length 1"),
            (r#"[]"#, "invalid length 0"),
            (r#"["map", [["k", 5]]]"#, "invalid type: integer"),
            (r#"["map", [["k", "v", "w"]]]"#, "trailing"),
            (r#"["map", [], 1]"#, "invalid length 3"),
            (r#"{"map": 1}"#, "expected an OVSDB map"),
            (r#""map""#, "expected an OVSDB map"),
            (r#"["bogus", []]"#, "unknown variant"),
            (r#"["map", [["k", "v"]]"#, "EOF"),
        ] {
            let e = serde_json::from_str::<StrMap>(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = serde_json::from_str::<Uuid>(r#"["set", []]"#).unwrap_err();
        assert!(e.to_string().contains("expected an OVSDB UUID"), "{e}");
        let e = serde_json::from_str::<UuidSet>(r#"["set", [["uuid", 1]]]"#).unwrap_err();
        assert!(e.to_string().contains("invalid type: integer"), "{e}");
        let e = serde_json::from_str::<UuidSet>(r#"["map", []]"#).unwrap_err();
        assert!(
            e.to_string().contains("expected an OVSDB set of UUIDs"),
            "{e}"
        );
        // From a `Value` the same.
        let e = serde_json::from_value::<StrMap>(json!(["map", [["k", 1]]])).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
