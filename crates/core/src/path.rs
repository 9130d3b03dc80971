//! One rule for request paths, at the edge and in the engine's gateway: a
//! path is decoded once and is refused, not tidied, when it could be read
//! two ways.
//!
//! Proxies, routers and runtimes disagree on `//`, `.` and `..` segments,
//! an encoded `/` (`%2F`) and an encoded `%` (`%25`, a second round of
//! decoding waiting to happen): one collapses `//`, another decodes twice.
//! A path that means one tool to one of them and another to the next is how
//! a check is bypassed, so such a path names no tool at all: it is
//! `MALFORMED`.

use crate::credentials::check_tool_name;

/// Why a request path is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path must start with /")]
    NotAbsolute,
    /// Two slashes in a row (`//`).
    #[error("path has an empty segment (//)")]
    EmptySegment,
    /// A `.` or `..` segment, plain or percent-encoded.
    #[error("path has a . or .. segment")]
    DotSegment,
    /// `%2F`: a slash that is not a separator.
    #[error("path has an encoded / (%2F)")]
    EncodedSlash,
    /// `%25`: the decoded path would decode again.
    #[error("path is percent-encoded twice (%25)")]
    DoubleEncoded,
    /// `%` not followed by two hex digits.
    #[error("path has a % not followed by two hex digits")]
    BadEscape,
    /// The decoded bytes are not UTF-8.
    #[error("path is not UTF-8 once decoded")]
    NotUtf8,
    /// A control character or a backslash, plain or encoded.
    #[error("path has a control character or a backslash")]
    BadCharacter,
}

/// What a path means to the gateway (`/api/v2/{tool}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayPath {
    /// Not under `/api/v2/`: no tool.
    Elsewhere,
    /// `/api/v2/{tool}` or `/api/v2/{tool}/{rest…}` with a valid tool name
    /// (the rest goes to the tool's upstream).
    Tool(String),
    /// Under `/api/v2/` with what is no tool name (empty, characters outside
    /// the name alphabet): it names an unknown tool, not no tool, so
    /// verification answers `UNKNOWN_TOOL`.
    Invalid(String),
}

/// The path of a request target, decoded once: the query (`?…`) and
/// fragment (`#…`) are dropped, each `%XX` becomes its byte, and anything
/// another reader could take differently is an error ([`PathError`]). A
/// trailing `/` is kept (it is an empty last segment, not a collapse).
pub fn canonical_path(target: &str) -> Result<String, PathError> {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let path = target.get(..end).unwrap_or(target);
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut out = String::with_capacity(path.len());
    let mut segments = rest.split('/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        if raw.is_empty() && !last {
            return Err(PathError::EmptySegment);
        }
        let segment = decode_segment(raw)?;
        if segment == "." || segment == ".." {
            return Err(PathError::DotSegment);
        }
        out.push('/');
        out.push_str(&segment);
    }
    Ok(out)
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let byte = if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|&c| char::from(c).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|&c| char::from(c).to_digit(16));
            let (Some(hi), Some(lo)) = (hi, lo) else { return Err(PathError::BadEscape) };
            i += 3;
            // Two hex digits: at most 0xff.
            let decoded = u8::try_from((hi << 4) | lo).map_err(|_| PathError::BadEscape)?;
            match decoded {
                b'/' => return Err(PathError::EncodedSlash),
                b'%' => return Err(PathError::DoubleEncoded),
                other => other,
            }
        } else {
            i += 1;
            b
        };
        if byte.is_ascii_control() || byte == b'\\' {
            return Err(PathError::BadCharacter);
        }
        out.push(byte);
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

/// The tool a request target names at the gateway, by [`canonical_path`]:
/// its first segment after `/api/v2/`. `/api/v2/gl%5Fping` and
/// `/api/v2/gl_ping/a/b` are `gl_ping` (decoded once, as every router does),
/// `/api/v2/a%2Fb` and `/api//v2/x` are errors.
pub fn gateway_tool(target: &str) -> Result<GatewayPath, PathError> {
    let path = canonical_path(target)?;
    Ok(match path.strip_prefix("/api/v2/") {
        None => GatewayPath::Elsewhere,
        Some(rest) => {
            let tool = rest.split('/').next().unwrap_or(rest);
            if check_tool_name(tool).is_ok() {
                GatewayPath::Tool(tool.into())
            } else {
                GatewayPath::Invalid(tool.into())
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// The table the edge's tests read too (`wasm/test/paths.test.mjs`).
    const TABLE: &str = include_str!("../tests/data/gateway_paths.json");

    #[test]
    fn the_shared_table() {
        let rows: serde_json::Value = serde_json::from_str(TABLE).unwrap();
        let rows = rows["cases"].as_array().unwrap();
        assert!(rows.len() >= 20);
        for row in rows {
            let target = row["path"].as_str().unwrap();
            let got = gateway_tool(target);
            let want = match (row.get("error"), row.get("tool")) {
                (Some(e), _) => {
                    assert_eq!(row["code"], "MALFORMED", "{target}");
                    assert_eq!(got.as_ref().err().map(ToString::to_string).as_deref(), e.as_str(), "{target}");
                    continue;
                }
                (None, Some(serde_json::Value::Null)) => GatewayPath::Elsewhere,
                (None, Some(t)) => {
                    let t = t.as_str().unwrap();
                    if check_tool_name(t).is_ok() {
                        GatewayPath::Tool(t.into())
                    } else {
                        GatewayPath::Invalid(t.into())
                    }
                }
                (None, None) => panic!("row without tool or error: {row}"),
            };
            assert_eq!(got, Ok(want), "{target}");
        }
    }

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical_path("/"), Ok("/".into()));
        assert_eq!(canonical_path("/a/b/"), Ok("/a/b/".into()));
        assert_eq!(canonical_path("/a%20b?x=%2F#y"), Ok("/a b".into()));
        assert_eq!(canonical_path("/caf%C3%A9"), Ok("/café".into()));
        assert_eq!(canonical_path(""), Err(PathError::NotAbsolute));
        assert_eq!(canonical_path("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(canonical_path("//"), Err(PathError::EmptySegment));
        assert_eq!(canonical_path("/%"), Err(PathError::BadEscape));
        assert_eq!(canonical_path("/%4"), Err(PathError::BadEscape));
        assert_eq!(canonical_path("/%+1"), Err(PathError::BadEscape));
        assert_eq!(canonical_path("/%C3"), Err(PathError::NotUtf8));
        assert_eq!(canonical_path("/a%00"), Err(PathError::BadCharacter));
        assert_eq!(canonical_path("/a%5Cb"), Err(PathError::BadCharacter));
        assert_eq!(canonical_path("/a\\b"), Err(PathError::BadCharacter));
        assert_eq!(canonical_path("/%2e%2E"), Err(PathError::DotSegment));
        assert_eq!(canonical_path("/..."), Ok("/...".into()));
    }
}
