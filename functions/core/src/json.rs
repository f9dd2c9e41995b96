//! JSON as a person wrote it: a key given twice in one object is an error naming where, not a
//! silent "the last one wins" (`serde_json::Value` keeps the last `"worker"` of two and drops
//! the first, with everything in it).

use crate::problem;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::fmt;

/// A key that appears twice: the pointer of the object holding it, and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub pointer: String,
    pub key: String,
}

/// Why the bytes are not one JSON value with unique keys.
#[derive(Debug)]
pub enum Error {
    /// Broken JSON (or a duplicate key): serde_json's error, with its line and column.
    Syntax(serde_json::Error),
    /// The first key given twice, with serde_json's error for where it is.
    Duplicate(Duplicate, serde_json::Error),
}

/// Parses `bytes` like `serde_json::from_slice::<Value>`, refusing a key given twice.
pub fn parse(bytes: &[u8]) -> Result<Value, Error> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Node {
        pointer: String::new(),
        found: &found,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match (value, found.into_inner()) {
        (Err(e), Some(dup)) => Err(Error::Duplicate(dup, e)),
        (Err(e), None) => Err(Error::Syntax(e)),
        (Ok(v), _) => Ok(v),
    }
}

/// One value at `pointer`; the first duplicate found is written to `found`.
struct Node<'a> {
    pointer: String,
    found: &'a RefCell<Option<Duplicate>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Node {
            pointer: format!("{}/{}", self.pointer, items.len()),
            found: self.found,
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let dup = Duplicate {
                    pointer: self.pointer.clone(),
                    key: key.clone(),
                };
                *self.found.borrow_mut() = Some(dup);
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = map.next_value_seed(Node {
                pointer: problem::join(&self.pointer, &key),
                found: self.found,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(text: &str) -> (Duplicate, usize) {
        match parse(text.as_bytes()) {
            Err(Error::Duplicate(d, e)) => (d, e.line()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_given_twice_is_named_with_its_object_and_line() {
        let text = "{\"instances\": {\n  \"worker\": {\"type\": \"t3.micro\"},\n  \"worker\": {\"type\": \"t3.large\"}\n}}";
        let (d, line) = duplicate(text);
        assert_eq!(d.pointer, "/instances");
        assert_eq!(d.key, "worker");
        assert_eq!(line, 3);
    }

    #[test]
    fn duplicates_are_found_at_any_depth_and_in_arrays() {
        assert_eq!(
            duplicate(r#"{"a": [1, {"b/c": {"x": 1, "x": 2}}]}"#).0,
            Duplicate {
                pointer: "/a/1/b~1c".into(),
                key: "x".into()
            }
        );
        assert_eq!(duplicate(r#"{"": 1, "": 2}"#).0.pointer, "");
    }

    #[test]
    fn without_duplicates_it_is_serde_json_value_exactly() {
        for text in [
            r#"{"a": 1, "b": [true, null, -2, 1.5, 18446744073709551615, "é\n"], "c": {}}"#,
            "[]",
            "\"s\"",
            r#"{"same": {"x": 1}, "other": {"x": 1}}"#,
        ] {
            let want: Value = serde_json::from_str(text).unwrap();
            assert_eq!(parse(text.as_bytes()).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn broken_json_is_serde_json_error() {
        for text in ["{", "{\"a\": 1} x", "[1,]", ""] {
            assert!(
                matches!(parse(text.as_bytes()), Err(Error::Syntax(_))),
                "{text}"
            );
        }
    }
}
