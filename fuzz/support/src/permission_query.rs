//! The `permission_query` target: the permission query parser and evaluator.

use keyward_core::permission::Permission;
use keyward_core::query::{MAX_QUERY_LEN, PermissionQuery, QueryError};

use crate::input::{Input, lossy};
use crate::seeds::must;

/// Permissions a `permission_query` case may hold, picked by the bits of its
/// first byte.
const QUERY_HELD: [&str; 8] = ["a", "b:read", "b:*", "c.x", "*", "docs.read", "docs.write", "admin"];

/// `permission_query` target: the permission query parser and evaluator.
///
/// Input: a byte whose bits pick the held permissions from a fixed set, then
/// the query text. Checks that parsing never panics; that a parsed query's
/// canonical form stays within the bound and re-parses to the same query;
/// that errors point inside the input; and that `allows` agrees with a plain
/// shunting-yard evaluation of the canonical form, holds when every named
/// permission is held, and fails when none is.
pub fn permission_query(data: &[u8]) {
    let mut input = Input::new(data);
    let pick = input.u8();
    let text = lossy(input.rest()).into_owned();
    let held: Vec<Permission> = QUERY_HELD
        .iter()
        .enumerate()
        .filter(|(i, _)| pick >> i & 1 == 1)
        .map(|(_, p)| must(Permission::parse(p)))
        .collect();
    match PermissionQuery::parse(&text) {
        Ok(q) => {
            let shown = q.to_string();
            assert!(shown.len() <= MAX_QUERY_LEN, "{shown:?}");
            assert_eq!(PermissionQuery::parse(&shown).as_ref(), Ok(&q), "{text:?} shows as {shown:?}");
            assert_eq!(Some(q.allows(&held)), query_model(&shown, &held), "{shown:?} holding {held:?}");
            let named: Vec<Permission> = q.permissions().into_iter().cloned().collect();
            assert!(q.allows(&named), "holding every permission {shown:?} names satisfies it");
            assert!(!q.allows(&[]), "{shown:?} needs some permission");
        }
        Err(e) => {
            assert!(e.position().is_none_or(|at| at <= text.len()), "{e:?} points outside {text:?}");
            if text.len() > MAX_QUERY_LEN {
                assert_eq!(e, QueryError::TooLong);
            }
        }
    }
}

/// Evaluates a query in canonical form (single spaces, `AND`/`OR`,
/// parentheses hugging their terms) with a shunting-yard: `AND` before `OR`.
/// `None` if the text is not such a query.
fn query_model(canonical: &str, held: &[Permission]) -> Option<bool> {
    let mut tokens: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in canonical.chars() {
        if matches!(c, '(' | ')' | ' ') {
            if !word.is_empty() {
                tokens.push(core::mem::take(&mut word));
            }
            if c != ' ' {
                tokens.push(c.to_string());
            }
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    fn apply(values: &mut Vec<bool>, op: &str) -> Option<()> {
        let (b, a) = (values.pop()?, values.pop()?);
        values.push(if op == "AND" { a && b } else { a || b });
        Some(())
    }
    let precedence = |op: &str| match op {
        "AND" => 2,
        "OR" => 1,
        _ => 0,
    };
    let mut values: Vec<bool> = Vec::new();
    let mut ops: Vec<&'static str> = Vec::new();
    for t in &tokens {
        match t.as_str() {
            "(" => ops.push("("),
            ")" => loop {
                match ops.pop()? {
                    "(" => break,
                    op => apply(&mut values, op)?,
                }
            },
            op @ ("AND" | "OR") => {
                while let Some(&top) = ops.last() {
                    if top == "(" || precedence(top) < precedence(op) {
                        break;
                    }
                    ops.pop();
                    apply(&mut values, top)?;
                }
                ops.push(if op == "AND" { "AND" } else { "OR" });
            }
            term => {
                let p = Permission::parse(term).ok()?;
                values.push(held.iter().any(|h| h.covers(&p)));
            }
        }
    }
    while let Some(op) = ops.pop() {
        apply(&mut values, op)?;
    }
    if values.len() == 1 { values.pop() } else { None }
}
