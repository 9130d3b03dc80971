//! Permission queries: `documents.read AND (documents.write OR admin)`.
//!
//! A request may require a boolean combination of permissions instead of a
//! flat list (Unkey's `permissions` query string). The grammar, with `AND`
//! binding tighter than `OR`:
//!
//! ```text
//! query   = any
//! any     = all ( "OR" all )*
//! all     = primary ( "AND" primary )*
//! primary = permission | "(" any ")"
//! ```
//!
//! Keywords are case-insensitive; permissions follow [`Permission::parse`]
//! (so a permission cannot be named `and` or `or`). Terms are separated by
//! ASCII whitespace or parentheses. Input is bounded ([`MAX_QUERY_LEN`] bytes,
//! [`MAX_QUERY_DEPTH`] nested parentheses) and every malformed query is a
//! typed [`QueryError`] with the byte position of the problem.
//!
//! A term is satisfied when a held permission covers it ([`Permission::covers`]):
//! `billing:*` satisfies `billing:read`, and a wildcard term such as
//! `billing:*` is satisfied only by `billing:*` or a broader wildcard.
//!
//! ```
//! use keyward_core::permission::Permission;
//! use keyward_core::query::PermissionQuery;
//!
//! let q = PermissionQuery::parse("docs.read AND (docs.write OR admin)").unwrap();
//! let held = |ps: &[&str]| ps.iter().map(|p| Permission::parse(p).unwrap()).collect::<Vec<_>>();
//! assert!(q.allows(&held(&["docs.read", "admin"])));
//! assert!(!q.allows(&held(&["docs.read"])));
//! assert_eq!(q.to_string(), "docs.read AND (docs.write OR admin)");
//! ```

use core::fmt;
use core::str::FromStr;

use crate::permission::{Permission, PermissionError};

/// Longest accepted query, in bytes, both as given and in canonical
/// (`Display`) form, so a parsed query always re-parses from its text.
pub const MAX_QUERY_LEN: usize = 1024;
/// Deepest accepted nesting of parentheses.
pub const MAX_QUERY_DEPTH: usize = 16;

/// Longest excerpt of the input quoted in an error.
const MAX_QUOTE: usize = 32;

/// Why a permission query is invalid. Positions are byte offsets into the query.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Nothing but whitespace.
    #[error("permission query is empty")]
    Empty,
    /// Longer than [`MAX_QUERY_LEN`] bytes (as given or in canonical form).
    #[error("permission query is longer than {MAX_QUERY_LEN} bytes")]
    TooLong,
    /// Parentheses nested deeper than [`MAX_QUERY_DEPTH`].
    #[error("permission query nests parentheses deeper than {MAX_QUERY_DEPTH} at position {at}")]
    TooDeep {
        /// Position of the `(` that went too deep.
        at: usize,
    },
    /// A term that is not a valid permission.
    #[error("invalid permission at position {at}: {error}")]
    Permission {
        /// Position of the term.
        at: usize,
        /// What is wrong with it.
        error: PermissionError,
    },
    /// A token where another was expected (or the end of the query).
    #[error("unexpected {found} at position {at}; expected {expected}")]
    Unexpected {
        /// Position of the token (the query's length for its end).
        at: usize,
        /// The token, quoted, or `end of query`.
        found: String,
        /// What would have been valid there.
        expected: &'static str,
    },
}

impl QueryError {
    /// Byte position of the problem, when it has one.
    pub fn position(&self) -> Option<usize> {
        match self {
            QueryError::Empty | QueryError::TooLong => None,
            QueryError::TooDeep { at } | QueryError::Permission { at, .. } | QueryError::Unexpected { at, .. } => {
                Some(*at)
            }
        }
    }
}

/// A node of a parsed query. `All` and `Any` have at least two children, and
/// never a child of their own kind (`a AND (b AND c)` is `All[a, b, c]`), so
/// every query has one canonical form and `Display` round-trips.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Node {
    Term(Permission),
    All(Vec<Node>),
    Any(Vec<Node>),
}

/// A parsed permission query. See the [module docs](self) for the grammar.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PermissionQuery(Node);

impl PermissionQuery {
    /// Parses a query strictly: any input that is not a well-formed query
    /// within the bounds is an error, never a panic.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        if text.len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLong);
        }
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return Err(QueryError::Empty);
        }
        let mut p = Parser { text, tokens, next: 0 };
        let node = p.any(0)?;
        if let Some(t) = p.peek() {
            return Err(p.unexpected(t, "`AND`, `OR` or the end of the query"));
        }
        let query = Self(node);
        // Canonical spacing can add a byte per parenthesis: `(a OR b)AND c`.
        if query.to_string().len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLong);
        }
        Ok(query)
    }

    /// Whether holding `held` satisfies the query.
    pub fn allows(&self, held: &[Permission]) -> bool {
        node_allows(&self.0, held)
    }

    /// Every permission the query names, in order of appearance.
    pub fn permissions(&self) -> Vec<&Permission> {
        let mut out = Vec::new();
        collect(&self.0, &mut out);
        out
    }
}

fn node_allows(node: &Node, held: &[Permission]) -> bool {
    match node {
        Node::Term(p) => held.iter().any(|h| h.covers(p)),
        Node::All(children) => children.iter().all(|c| node_allows(c, held)),
        Node::Any(children) => children.iter().any(|c| node_allows(c, held)),
    }
}

fn collect<'a>(node: &'a Node, out: &mut Vec<&'a Permission>) {
    match node {
        Node::Term(p) => out.push(p),
        Node::All(children) | Node::Any(children) => children.iter().for_each(|c| collect(c, out)),
    }
}

impl FromStr for PermissionQuery {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for PermissionQuery {
    /// The canonical form: single spaces, upper-case keywords, parentheses
    /// only around an `OR` inside an `AND`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_node(&self.0, f)
    }
}

fn write_node(node: &Node, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match node {
        Node::Term(p) => f.write_str(p.as_str()),
        Node::Any(children) => write_joined(children, " OR ", f),
        Node::All(children) => write_joined(children, " AND ", f),
    }
}

fn write_joined(children: &[Node], sep: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, c) in children.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        // Only an OR under an AND needs parentheses: AND binds tighter.
        if matches!(c, Node::Any(_)) {
            f.write_str("(")?;
            write_node(c, f)?;
            f.write_str(")")?;
        } else {
            write_node(c, f)?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok<'a> {
    Open,
    Close,
    And,
    Or,
    Word(&'a str),
}

/// Splits on ASCII whitespace and around parentheses. `at` is a byte offset.
fn tokenize(text: &str) -> Vec<(usize, Tok<'_>)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b if b.is_ascii_whitespace() => i += 1,
            b'(' => {
                out.push((i, Tok::Open));
                i += 1;
            }
            b')' => {
                out.push((i, Tok::Close));
                i += 1;
            }
            _ => {
                let start = i;
                while bytes.get(i).is_some_and(|&c| !c.is_ascii_whitespace() && !matches!(c, b'(' | b')')) {
                    i += 1;
                }
                // Splits only at ASCII bytes, so both ends are char boundaries.
                let word = text.get(start..i).unwrap_or_default();
                let tok = if word.eq_ignore_ascii_case("and") {
                    Tok::And
                } else if word.eq_ignore_ascii_case("or") {
                    Tok::Or
                } else {
                    Tok::Word(word)
                };
                out.push((start, tok));
            }
        }
    }
    out
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<(usize, Tok<'a>)>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<(usize, Tok<'a>)> {
        self.tokens.get(self.next).copied()
    }

    fn bump(&mut self) -> Option<(usize, Tok<'a>)> {
        let t = self.peek();
        if t.is_some() {
            self.next += 1;
        }
        t
    }

    fn unexpected(&self, (at, tok): (usize, Tok<'a>), expected: &'static str) -> QueryError {
        let found = match tok {
            Tok::Open => "`(`".to_owned(),
            Tok::Close => "`)`".to_owned(),
            Tok::And | Tok::Or | Tok::Word(_) => {
                let word = match tok {
                    Tok::Word(w) => w,
                    // The keyword as the user wrote it.
                    _ => self.text.get(at..at + 2 + usize::from(tok == Tok::And)).unwrap_or_default(),
                };
                format!("`{}`", word.chars().take(MAX_QUOTE).collect::<String>())
            }
        };
        QueryError::Unexpected { at, found, expected }
    }

    fn end(&self) -> QueryError {
        QueryError::Unexpected {
            at: self.text.len(),
            found: "end of query".to_owned(),
            expected: "a permission or `(`",
        }
    }

    fn any(&mut self, depth: usize) -> Result<Node, QueryError> {
        let mut items = vec![self.all(depth)?];
        while let Some((_, Tok::Or)) = self.peek() {
            self.bump();
            items.push(self.all(depth)?);
        }
        Ok(join(items, false))
    }

    fn all(&mut self, depth: usize) -> Result<Node, QueryError> {
        let mut items = vec![self.primary(depth)?];
        while let Some((_, Tok::And)) = self.peek() {
            self.bump();
            items.push(self.primary(depth)?);
        }
        Ok(join(items, true))
    }

    fn primary(&mut self, depth: usize) -> Result<Node, QueryError> {
        let Some(tok) = self.bump() else { return Err(self.end()) };
        match tok {
            (at, Tok::Word(w)) => {
                Permission::parse(w).map(Node::Term).map_err(|error| QueryError::Permission { at, error })
            }
            (at, Tok::Open) => {
                if depth >= MAX_QUERY_DEPTH {
                    return Err(QueryError::TooDeep { at });
                }
                let inner = self.any(depth + 1)?;
                match self.bump() {
                    Some((_, Tok::Close)) => Ok(inner),
                    Some(t) => Err(self.unexpected(t, "`AND`, `OR` or `)`")),
                    None => Err(QueryError::Unexpected {
                        at: self.text.len(),
                        found: "end of query".to_owned(),
                        expected: "`)`",
                    }),
                }
            }
            t => Err(self.unexpected(t, "a permission or `(`")),
        }
    }
}

/// Builds an `All` (or `Any`) of `items`, flattening children of the same kind.
fn join(mut items: Vec<Node>, all: bool) -> Node {
    if items.len() == 1
        && let Some(only) = items.pop()
    {
        return only;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Node::All(children) if all => out.extend(children),
            Node::Any(children) if !all => out.extend(children),
            other => out.push(other),
        }
    }
    if all { Node::All(out) } else { Node::Any(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(ps: &[&str]) -> Vec<Permission> {
        ps.iter().map(|p| Permission::parse(p).unwrap()).collect()
    }

    fn q(text: &str) -> PermissionQuery {
        PermissionQuery::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn canonical_forms() {
        for (input, canonical) in [
            ("a", "a"),
            ("  a  ", "a"),
            ("(a)", "a"),
            ("((a))", "a"),
            ("a and b", "a AND b"),
            ("a AND b AND c", "a AND b AND c"),
            ("(a AND b) AND c", "a AND b AND c"),
            ("a AND (b AND c)", "a AND b AND c"),
            ("a OR b or c", "a OR b OR c"),
            ("a OR b AND c", "a OR b AND c"),
            ("(a OR b) AND c", "(a OR b) AND c"),
            ("a AND b OR c AND d", "a AND b OR c AND d"),
            ("a AND (b OR (c AND d))", "a AND (b OR c AND d)"),
            ("(docs.read OR docs.write)AND users.view", "(docs.read OR docs.write) AND users.view"),
            ("billing:* Or keys:write", "billing:* OR keys:write"),
            ("a\tAND\nb", "a AND b"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input:?}");
            assert_eq!(q(canonical), q(input), "{canonical:?} re-parses");
        }
    }

    #[test]
    fn precedence_and_evaluation() {
        let query = q("a OR b AND c");
        assert!(query.allows(&held(&["a"])));
        assert!(!query.allows(&held(&["b"])));
        assert!(query.allows(&held(&["b", "c"])));
        let query = q("(a OR b) AND c");
        assert!(!query.allows(&held(&["a"])));
        assert!(query.allows(&held(&["a", "c"])));
        assert!(query.allows(&held(&["b", "c"])));
        assert!(!query.allows(&held(&[])));
        let query = q("docs.read AND (docs.write OR admin)");
        assert!(query.allows(&held(&["docs.read", "docs.write"])));
        assert!(!query.allows(&held(&["docs.write", "admin"])));
    }

    #[test]
    fn wildcards() {
        assert!(q("billing:read").allows(&held(&["billing:*"])));
        assert!(q("billing:read AND keys:write").allows(&held(&["*"])));
        assert!(!q("billing:*").allows(&held(&["billing:read"])), "a wildcard term needs a wildcard");
        assert!(q("billing:*").allows(&held(&["billing:*"])));
        assert!(q("billing:x:*").allows(&held(&["billing:*"])));
        assert!(!q("billingx").allows(&held(&["billing:*"])));
    }

    #[test]
    fn permissions_listed_in_order() {
        let query = q("a AND (b OR c:*) AND a");
        let names: Vec<&str> = query.permissions().iter().map(|p| p.as_str()).collect();
        assert_eq!(names, ["a", "b", "c:*", "a"]);
    }

    #[test]
    fn errors_are_exact() {
        let unexpected = |at, found: &str, expected| QueryError::Unexpected { at, found: found.to_owned(), expected };
        let long_term = "x".repeat(129);
        let cases: Vec<(&str, QueryError)> = vec![
            ("", QueryError::Empty),
            (" \t\n", QueryError::Empty),
            ("AND", unexpected(0, "`AND`", "a permission or `(`")),
            ("a AND", unexpected(5, "end of query", "a permission or `(`")),
            ("a and or b", unexpected(6, "`or`", "a permission or `(`")),
            ("a b", unexpected(2, "`b`", "`AND`, `OR` or the end of the query")),
            ("(a", unexpected(2, "end of query", "`)`")),
            ("(a b)", unexpected(3, "`b`", "`AND`, `OR` or `)`")),
            ("a)", unexpected(1, "`)`", "`AND`, `OR` or the end of the query")),
            ("()", unexpected(1, "`)`", "a permission or `(`")),
            ("a OR ()", unexpected(6, "`)`", "a permission or `(`")),
            ("a AND b*c", QueryError::Permission { at: 6, error: PermissionError::Character("b*c".into()) }),
            ("a AND dé", QueryError::Permission { at: 6, error: PermissionError::Character("dé".into()) }),
            (&long_term, QueryError::Permission { at: 0, error: PermissionError::Length }),
        ];
        for (input, want) in cases {
            assert_eq!(PermissionQuery::parse(input), Err(want.clone()), "{input:?}");
            assert_eq!(want.position().is_some(), !matches!(want, QueryError::Empty | QueryError::TooLong));
        }
        let long = format!("a OR {}", "b".repeat(MAX_QUERY_LEN));
        assert_eq!(PermissionQuery::parse(&long), Err(QueryError::TooLong));
        // 1 020 bytes as given, 1 204 in canonical form.
        let tight = format!("{}(a OR b)", "(a OR b)AND".repeat(92));
        assert_eq!(tight.len(), 1_020);
        assert_eq!(PermissionQuery::parse(&tight), Err(QueryError::TooLong));
        let quoted = "y".repeat(100);
        assert_eq!(
            PermissionQuery::parse(&format!("a {quoted}")),
            Err(unexpected(2, &format!("`{}`", "y".repeat(MAX_QUOTE)), "`AND`, `OR` or the end of the query"))
        );
    }

    #[test]
    fn depth_is_bounded() {
        let ok = format!("{}a{}", "(".repeat(MAX_QUERY_DEPTH), ")".repeat(MAX_QUERY_DEPTH));
        assert_eq!(q(&ok).to_string(), "a");
        let deep = format!("{}a{}", "(".repeat(MAX_QUERY_DEPTH + 1), ")".repeat(MAX_QUERY_DEPTH + 1));
        assert_eq!(PermissionQuery::parse(&deep), Err(QueryError::TooDeep { at: MAX_QUERY_DEPTH }));
        // Far past the bound, still an error rather than a stack overflow.
        let huge = "(".repeat(MAX_QUERY_LEN);
        assert_eq!(PermissionQuery::parse(&huge), Err(QueryError::TooDeep { at: MAX_QUERY_DEPTH }));
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        /// A query tree, rendered fully parenthesised so its meaning is unambiguous.
        #[derive(Clone, Debug)]
        enum Tree {
            Term(&'static str),
            And(Vec<Tree>),
            Or(Vec<Tree>),
        }

        const TERMS: [&str; 6] = ["a", "b:read", "b:*", "c.x", "d-1", "*"];

        fn tree() -> impl Strategy<Value = Tree> {
            let leaf = proptest::sample::select(&TERMS[..]).prop_map(Tree::Term);
            leaf.prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 1..4).prop_map(Tree::And),
                    proptest::collection::vec(inner, 1..4).prop_map(Tree::Or),
                ]
            })
        }

        fn render(t: &Tree, lower: bool) -> String {
            let (and, or) = if lower { (" and ", " or ") } else { (" AND ", " OR ") };
            match t {
                Tree::Term(s) => (*s).to_owned(),
                Tree::And(c) => format!("({})", c.iter().map(|x| render(x, lower)).collect::<Vec<_>>().join(and)),
                Tree::Or(c) => format!("({})", c.iter().map(|x| render(x, lower)).collect::<Vec<_>>().join(or)),
            }
        }

        fn eval(t: &Tree, held: &[Permission]) -> bool {
            match t {
                Tree::Term(s) => held.iter().any(|h| Permission::parse(s).is_ok_and(|p| h.covers(&p))),
                Tree::And(c) => c.iter().all(|x| eval(x, held)),
                Tree::Or(c) => c.iter().any(|x| eval(x, held)),
            }
        }

        fn words() -> impl Strategy<Value = String> {
            let token = prop_oneof![
                Just("AND".to_owned()),
                Just("or".to_owned()),
                Just("(".to_owned()),
                Just(")".to_owned()),
                Just(" ".to_owned()),
                "[a-z:*.]{1,5}",
                ".{0,3}",
            ];
            proptest::collection::vec(token, 0..40).prop_map(|v| v.join(" "))
        }

        proptest! {
            #[test]
            fn never_panics_and_display_round_trips(text in prop_oneof![".{0,200}", words()]) {
                if let Ok(q) = PermissionQuery::parse(&text) {
                    let shown = q.to_string();
                    prop_assert_eq!(PermissionQuery::parse(&shown), Ok(q.clone()), "{:?} → {:?}", text, shown);
                    prop_assert!(shown.len() <= MAX_QUERY_LEN, "canonical form stays within the bound");
                } else if let Err(e) = PermissionQuery::parse(&text) {
                    prop_assert!(e.position().is_none_or(|at| at <= text.len()));
                }
            }

            #[test]
            fn meaning_matches_the_tree(t in tree(), lower in any::<bool>(), mask in any::<u8>()) {
                let text = render(&t, lower);
                let q = PermissionQuery::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
                prop_assert_eq!(PermissionQuery::parse(&q.to_string()), Ok(q.clone()));
                let held: Vec<Permission> = TERMS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask >> i & 1 == 1)
                    .map(|(_, p)| Permission::parse(p).unwrap())
                    .collect();
                prop_assert_eq!(q.allows(&held), eval(&t, &held), "{} with {:?}", text, held);
            }
        }
    }
}
