//! Request bodies read into typed values.
//!
//! Both API surfaces (native and Unkey-shaped) parse a body with
//! [`parse`] into a `serde` type that refuses unknown fields, so a
//! mistake is reported with the JSON path of the value it concerns
//! (`limits.rates[1].window_ms`) and nothing is ignored. Checks that serde
//! cannot express (a range, a CIDR, a permission's grammar) are made while
//! the typed value is turned into the engine's, and name their path with
//! [`Path`].

use std::fmt;

use serde::de::value::{MapAccessDeserializer, MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Why a body could not be read: where (a JSON path; empty for the whole
/// body) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BodyError {
    pub path: String,
    pub message: String,
}

/// Reads `bytes` as a `T`. An error names the path of the offending value
/// and says what is wrong with it, without serde_json's line and column
/// (bodies are one line; the path says more).
///
/// An object is only ever read from a JSON object: serde's derived structs
/// would also take an array of their fields in order, which no client
/// means to send.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    // Syntax and repeated keys first, then the type.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Unique(value) = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        BodyError { path: if path == "." { String::new() } else { path }, message: message_of(&inner) }
    })?;
    // Trailing characters after the value.
    de.end().map_err(|e| BodyError { path: String::new(), message: message_of(&e) })?;
    from_value(&value)
}

/// A JSON value none of whose objects repeats a key: a struct read
/// straight from the text would refuse a repeated field, and one read
/// through a [`Value`] must not quietly keep the last.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(v) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}

/// Reads a JSON value already parsed as a `T`, as [`parse`] does; error
/// paths are relative to `value`.
pub(crate) fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, BodyError> {
    serde_path_to_error::deserialize(Strict(value)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        BodyError { path: if path == "." { String::new() } else { path }, message: message_of(&inner) }
    })
}

/// A JSON value as serde's data model, except that a struct is only read
/// from an object.
#[derive(Clone, Copy)]
struct Strict<'a>(&'a Value);

impl<'de> Deserializer<'de> for Strict<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, Some(f)) => visitor.visit_f64(f),
                (None, None, None) => Err(de::Error::custom("a number out of range")),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.iter().map(Strict));
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::Object(map) => {
                let mut map = MapDeserializer::new(map.iter().map(|(k, v)| (k.as_str(), Strict(v))));
                let out = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(out)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            // A unit variant: its name.
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            // A variant with data: `{"name": data}`.
            Value::Object(map) if map.len() == 1 => {
                let entry = MapDeserializer::new(map.iter().map(|(k, v)| (k.as_str(), Strict(v))));
                visitor.visit_enum(MapAccessDeserializer::new(entry))
            }
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

impl<'de> IntoDeserializer<'de, serde_json::Error> for Strict<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            _ => Unexpected::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// serde_json's message without its ` at line L column C` suffix.
fn message_of(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(m) => m.to_owned(),
        None => text,
    }
}

/// A JSON path being built while a typed body is checked: `Path::root()
/// .field("limits").field("rates").index(1).field("window_ms")` reads
/// `limits.rates[1].window_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Path(String);

impl Path {
    /// The whole body.
    pub(crate) fn root() -> Self {
        Self(String::new())
    }

    /// Under a prefix that is already a path (`keys[3]`).
    pub(crate) fn at(prefix: impl Into<String>) -> Self {
        Self(prefix.into())
    }

    /// A field of the value at this path.
    #[must_use]
    pub(crate) fn field(&self, name: &str) -> Self {
        if self.0.is_empty() { Self(name.to_owned()) } else { Self(format!("{}.{name}", self.0)) }
    }

    /// An element of the array at this path.
    #[must_use]
    pub(crate) fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A field of a change (PATCH): absent (left as it is), `null` (cleared)
/// or a value. Declare it `#[serde(default)]` so an absent field is
/// [`Patch::Keep`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Patch<T> {
    /// Not in the body: unchanged.
    #[default]
    Keep,
    /// `null`: cleared.
    Clear,
    /// A new value.
    Set(T),
}

impl<T> Patch<T> {
    /// `None` when unchanged; `Some(None)` when cleared.
    pub(crate) fn into_change(self) -> Option<Option<T>> {
        match self {
            Self::Keep => None,
            Self::Clear => Some(None),
            Self::Set(v) => Some(Some(v)),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only called when the field is present.
        Ok(match Option::<T>::deserialize(d)? {
            None => Self::Clear,
            Some(v) => Self::Set(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Rate {
        limit: u64,
        window_ms: u64,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        #[serde(default)]
        rates: Vec<Rate>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Spec {
        name: String,
        #[serde(default)]
        limits: Option<Limits>,
        #[serde(default)]
        expires_at: Patch<u64>,
    }

    #[test]
    fn errors_name_the_path_of_the_value() {
        let e = parse::<Spec>(
            br#"{"name":"a","limits":{"rates":[{"limit":1,"window_ms":1},{"limit":1,"window_ms":"x"}]}}"#,
        )
        .unwrap_err();
        assert_eq!(e.path, "limits.rates[1].window_ms");
        assert_eq!(e.message, "invalid type: string \"x\", expected u64");
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = parse::<Spec>(br#"{"name":"a","limits":{"rates":[],"rate":{}}}"#).unwrap_err();
        assert_eq!(e.path, "limits.rate");
        assert_eq!(e.message, "unknown field `rate`, expected `rates`");
    }

    #[test]
    fn missing_fields_and_bad_json() {
        let e = parse::<Spec>(b"{}").unwrap_err();
        assert_eq!(e, BodyError { path: String::new(), message: "missing field `name`".into() });
        let e = parse::<Spec>(br#"{"name":"a"} x"#).unwrap_err();
        assert_eq!(e, BodyError { path: String::new(), message: "trailing characters".into() });
        let e = parse::<Spec>(br#"{"name":"a""#).unwrap_err();
        assert_eq!(e.message, "EOF while parsing an object");
    }

    #[test]
    fn enums_read_as_serde_writes_them() {
        #[derive(Deserialize, Debug, PartialEq)]
        #[serde(rename_all = "lowercase", deny_unknown_fields)]
        enum Refill {
            Daily,
            Monthly { day: u8 },
        }
        assert_eq!(
            parse::<Vec<Refill>>(br#"["daily", {"monthly": {"day": 3}}]"#).unwrap(),
            [Refill::Daily, Refill::Monthly { day: 3 }]
        );
        let e = parse::<Vec<Refill>>(br#"[{"monthly": {"day": 3, "hour": 1}}]"#).unwrap_err();
        assert_eq!(e.path, "[0].monthly.hour");
        let e = parse::<Vec<Refill>>(br#"["weekly"]"#).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("[0]", "unknown variant `weekly`, expected `daily` or `monthly`")
        );
    }

    #[test]
    fn a_repeated_field_is_refused() {
        let e = parse::<Spec>(br#"{"name":"a","limits":{"rates":[],"rates":[]}}"#).unwrap_err();
        assert_eq!(e, BodyError { path: "limits".into(), message: "duplicate field `rates`".into() });
    }

    #[test]
    fn an_object_is_only_read_from_an_object() {
        let e = parse::<Spec>(br#"["a", null, 5]"#).unwrap_err();
        assert_eq!(
            e,
            BodyError { path: String::new(), message: "invalid type: sequence, expected struct Spec".into() }
        );
        let e = parse::<Spec>(br#"{"name":"a","limits":[[]]}"#).unwrap_err();
        assert_eq!(e.path, "limits");
        assert_eq!(e.message, "invalid type: sequence, expected struct Limits");
        let e = parse::<Spec>(br#"{"name":"a","limits":{"rates":[[1, 2]]}}"#).unwrap_err();
        assert_eq!(e.path, "limits.rates[0]");
    }

    #[test]
    fn a_patch_tells_absent_from_null() {
        let keep = parse::<Spec>(br#"{"name":"a"}"#).unwrap();
        assert_eq!(keep.expires_at, Patch::Keep);
        assert_eq!(keep.expires_at.into_change(), None);
        let clear = parse::<Spec>(br#"{"name":"a","expires_at":null}"#).unwrap();
        assert_eq!(clear.expires_at.into_change(), Some(None));
        let set = parse::<Spec>(br#"{"name":"a","expires_at":5}"#).unwrap();
        assert_eq!(set.expires_at.into_change(), Some(Some(5)));
    }

    #[test]
    fn paths_read_as_json_paths() {
        let p = Path::root().field("limits").field("rates").index(1).field("window_ms");
        assert_eq!(p.to_string(), "limits.rates[1].window_ms");
        assert_eq!(Path::at("keys[3]").field("name").as_str(), "keys[3].name");
        assert_eq!(Path::root().index(0).as_str(), "[0]");
    }
}
