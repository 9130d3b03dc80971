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

use serde::de::DeserializeOwned;
use serde::de::Visitor;
use serde::{Deserialize, Deserializer};

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
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        BodyError { path: if path == "." { String::new() } else { path }, message: message_of(&inner) }
    })?;
    // Trailing characters after the value.
    de.end().map_err(|e| BodyError { path: String::new(), message: message_of(&e) })?;
    Ok(value)
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

    /// Whether the field was in the body (as `null` or a value).
    pub(crate) fn is_given(&self) -> bool {
        !matches!(self, Self::Keep)
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

/// Reads a struct from a JSON object only. serde's derived `Deserialize`
/// also reads a struct from an array, field after field (`[5, null]` as
/// `{"remaining": 5, "refill": null}`), which no client means. A type
/// derives with `#[serde(remote = "Self")]` (serde then writes an inherent
/// `deserialize` instead of the trait) and gets the trait from
/// [`objects_only!`](crate::body::objects_only), which calls that inherent
/// function through this wrapper.
pub(crate) struct ObjectOnly<D>(pub D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// `Deserialize` for types that derive it with `#[serde(remote = "Self")]`,
/// reading them from JSON objects only ([`ObjectOnly`]).
macro_rules! objects_only {
    ($($t:ty),+ $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // The inherent function serde derived (`remote = "Self"`).
                <$t>::deserialize($crate::body::ObjectOnly(d))
            }
        }
    )+};
}
pub(crate) use objects_only;

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
    fn a_patch_tells_absent_from_null() {
        let keep = parse::<Spec>(br#"{"name":"a"}"#).unwrap();
        assert_eq!(keep.expires_at, Patch::Keep);
        assert!(!keep.expires_at.is_given());
        let clear = parse::<Spec>(br#"{"name":"a","expires_at":null}"#).unwrap();
        assert_eq!(clear.expires_at.into_change(), Some(None));
        let set = parse::<Spec>(br#"{"name":"a","expires_at":5}"#).unwrap();
        assert_eq!(set.expires_at.into_change(), Some(Some(5)));
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, remote = "Self")]
    struct Pair {
        a: u64,
        #[serde(default)]
        b: Option<Inner>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, remote = "Self")]
    struct Inner {
        c: u64,
    }

    objects_only!(Pair, Inner);

    #[test]
    fn structs_are_read_from_objects_only() {
        assert_eq!(parse::<Pair>(br#"{"a":1,"b":{"c":2}}"#).unwrap(), Pair { a: 1, b: Some(Inner { c: 2 }) });
        let plain = parse::<Spec>(br#"["a", null, null]"#);
        assert!(plain.is_ok(), "what derived serde does alone");
        let e = parse::<Pair>(b"[1]").unwrap_err();
        assert_eq!(
            e,
            BodyError { path: String::new(), message: "invalid type: sequence, expected struct Pair".into() }
        );
        let e = parse::<Pair>(br#"{"a":1,"b":[2]}"#).unwrap_err();
        assert_eq!((e.path.as_str(), e.message.as_str()), ("b", "invalid type: sequence, expected struct Inner"));
        let e = parse::<Pair>(br#"{"a":1,"d":2}"#).unwrap_err();
        assert_eq!((e.path.as_str(), e.message.as_str()), ("d", "unknown field `d`, expected `a` or `b`"));
    }

    #[test]
    fn paths_read_as_json_paths() {
        let p = Path::root().field("limits").field("rates").index(1).field("window_ms");
        assert_eq!(p.to_string(), "limits.rates[1].window_ms");
        assert_eq!(Path::at("keys[3]").field("name").as_str(), "keys[3].name");
        assert_eq!(Path::root().index(0).as_str(), "[0]");
    }
}
