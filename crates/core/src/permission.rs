//! Permissions: `keys:write`, `tools:gl_ping`, `billing:*`, `*`.

use core::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted permission.
pub const MAX_PERMISSION_LEN: usize = 128;

/// Why a permission string is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PermissionError {
    /// Empty or longer than 128 bytes.
    #[error("permission must be 1 to {MAX_PERMISSION_LEN} characters")]
    Length,
    /// A character outside `A-Z a-z 0-9 : . _ - *`, or a `*` that is not last.
    #[error("permission `{0}` has an invalid character (a `*` may only end it)")]
    Character(String),
}

/// A permission a key holds or a request requires.
///
/// A trailing `*` makes it a wildcard: `billing:*` grants `billing:read`, and
/// `*` alone grants everything.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Permission(String);

impl Permission {
    /// Parses a permission.
    pub fn parse(text: &str) -> Result<Self, PermissionError> {
        if text.is_empty() || text.len() > MAX_PERMISSION_LEN {
            return Err(PermissionError::Length);
        }
        let bytes = text.as_bytes();
        let last = bytes.len() - 1;
        for (i, &b) in bytes.iter().enumerate() {
            let ok = b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-') || (b == b'*' && i == last);
            if !ok {
                return Err(PermissionError::Character(text.chars().take(MAX_PERMISSION_LEN).collect()));
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The permission text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether holding `self` grants the concrete permission `required`.
    pub fn grants(&self, required: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(stem) => required.starts_with(stem),
            None => self.0 == required,
        }
    }

    /// Whether holding `self` allows handing out `other` (which may itself be a
    /// wildcard): `billing:*` covers `billing:read` and `billing:x:*`, but
    /// `billing:read` never covers `billing:*`.
    pub fn covers(&self, other: &Permission) -> bool {
        match self.0.strip_suffix('*') {
            Some(stem) => other.0.starts_with(stem),
            None => self.0 == other.0,
        }
    }
}

impl TryFrom<String> for Permission {
    type Error = PermissionError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Permission> for String {
    fn from(value: Permission) -> Self {
        value.0
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Whether a set of held permissions grants `required`.
pub fn granted(held: &[Permission], required: &str) -> bool {
    held.iter().any(|p| p.grants(required))
}

/// Whether a creator holding `held` may hand out every permission in `wanted`.
/// Returns the first one it may not.
pub fn first_uncovered<'a>(held: &[Permission], wanted: &'a [Permission]) -> Option<&'a Permission> {
    wanted.iter().find(|w| !held.iter().any(|h| h.covers(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    #[test]
    fn parsing() {
        assert!(Permission::parse("keys:write").is_ok());
        assert!(Permission::parse("*").is_ok());
        assert!(Permission::parse("billing:*").is_ok());
        assert_eq!(Permission::parse(""), Err(PermissionError::Length));
        assert_eq!(Permission::parse(&"a".repeat(129)), Err(PermissionError::Length));
        assert!(matches!(Permission::parse("a*b"), Err(PermissionError::Character(_))));
        assert!(matches!(Permission::parse("a b"), Err(PermissionError::Character(_))));
        assert!(matches!(Permission::parse("**"), Err(PermissionError::Character(_))));
    }

    #[test]
    fn grants() {
        assert!(p("*").grants("anything:at:all"));
        assert!(p("billing:*").grants("billing:read"));
        assert!(!p("billing:*").grants("billingx"));
        assert!(!p("billing:*").grants("billing"));
        assert!(p("keys:write").grants("keys:write"));
        assert!(!p("keys:write").grants("keys:writer"));
        assert!(!p("keys:write").grants("keys:*"));
    }

    #[test]
    fn creator_bounds() {
        let held = [p("billing:*"), p("keys:read")];
        assert_eq!(first_uncovered(&held, &[p("billing:read"), p("billing:x:*"), p("keys:read")]), None);
        let wanted = [p("keys:read"), p("keys:*")];
        assert_eq!(first_uncovered(&held, &wanted), Some(&wanted[1]));
        assert_eq!(first_uncovered(&[p("*")], &[p("*")]), None);
        assert_eq!(first_uncovered(&[p("billing:*")], &[p("*")]).map(|x| x.as_str()), Some("*"));
    }
}
