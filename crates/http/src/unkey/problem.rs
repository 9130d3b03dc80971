//! Unkey's error responses, and engine errors mapped onto them.

use std::fmt::Display;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::respond;
use crate::body::{BodyError, Path};

/// Where Unkey documents its error types; the `type` of an error is this
/// followed by the error's code, as Unkey sends it.
pub(super) const ERROR_DOCS: &str = "https://unkey.com/docs/errors/";

/// One entry of a 400's `errors`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldError {
    location: String,
    message: String,
    fix: Option<String>,
}

/// An Unkey error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Problem {
    status: StatusCode,
    /// Unkey's error code path, e.g. `unkey/data/key_not_found`.
    code: &'static str,
    detail: String,
    /// Only for 400.
    errors: Vec<FieldError>,
}

impl Problem {
    pub(super) fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), errors: Vec::new() }
    }

    /// 400 naming the offending field.
    pub(super) fn invalid(location: impl Display, message: impl Into<String>) -> Self {
        let (location, message) = (location.to_string(), message.into());
        let detail = format!("{location}: {message}");
        let mut p = Self::new(StatusCode::BAD_REQUEST, "unkey/application/invalid_input", detail);
        p.errors.push(FieldError { location, message, fix: None });
        p
    }

    /// Adds a suggestion to the (single) field error.
    pub(super) fn fix(mut self, fix: impl Into<String>) -> Self {
        if let Some(e) = self.errors.last_mut() {
            e.fix = Some(fix.into());
        }
        self
    }

    pub(super) fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    fn title(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            413 => "Payload Too Large",
            429 => "Too Many Requests",
            _ => "Internal Server Error",
        }
    }

    fn body(&self) -> Value {
        let mut error = json!({
            "title": self.title(),
            "detail": self.detail,
            "status": self.status.as_u16(),
            "type": format!("{ERROR_DOCS}{}", self.code),
        });
        if self.status == StatusCode::BAD_REQUEST
            && let Value::Object(m) = &mut error
        {
            let errors: Vec<Value> = self
                .errors
                .iter()
                .map(|e| {
                    let mut v = json!({"location": e.location, "message": e.message});
                    if let (Some(fix), Value::Object(m)) = (&e.fix, &mut v) {
                        m.insert("fix".into(), fix.clone().into());
                    }
                    v
                })
                .collect();
            m.insert("errors".into(), errors.into());
        }
        json!({ "error": error })
    }
}

/// A body that does not read as the operation's request: 400 at the value's
/// location (`body.ratelimits[1].duration`). A missing field is named
/// itself, as Unkey does: `body.apiId`, "is required".
impl From<BodyError> for Problem {
    fn from(e: BodyError) -> Self {
        // A syntax error before a key is read leaves `?` for that key: the
        // location stops at the last value known.
        let known = match e.path.split_once('?') {
            Some((before, _)) => before.trim_end_matches('.'),
            None => &e.path,
        };
        let at = if known.is_empty() { super::body() } else { Path::at(format!("body.{known}")) };
        let missing = e.message.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`'));
        match missing {
            Some(field) => Self::invalid(at.field(field), "is required"),
            None => Self::invalid(at, e.message),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        respond(self.status, self.body())
    }
}

/// Maps an engine error onto Unkey's errors; a 400 names the field as Unkey
/// spells it.
pub(super) fn engine_problem(e: keyward::Error) -> Problem {
    use keyward::Error as E;
    match e {
        E::NotFound { kind: "key", id } => {
            Problem::not_found("unkey/data/key_not_found", format!("key {id} not found"))
        }
        E::NotFound { kind: "workspace", id } => {
            Problem::not_found("unkey/data/api_not_found", format!("API {id} not found"))
        }
        E::NotFound { kind, id } => Problem::not_found("unkey/data/not_found", format!("{kind} {id} not found")),
        E::Invalid { field, message } => Problem::invalid(super::body().field(unkey_field(field)), message),
        E::InsufficientPermissions(m) => {
            Problem::new(StatusCode::FORBIDDEN, "unkey/authorization/insufficient_permissions", m)
        }
        E::PlanInactive => Problem::new(
            StatusCode::FORBIDDEN,
            "unkey/authorization/workspace_disabled",
            "the workspace plan has no API access",
        ),
        E::AlreadyExists { kind, id } => {
            Problem::new(StatusCode::CONFLICT, "unkey/data/conflict", format!("{kind} {id} already exists"))
        }
        E::Conflict(m) => Problem::new(StatusCode::CONFLICT, "unkey/data/conflict", m),
        // The store's own message (file paths, server addresses) is for
        // operators: `/healthz` shows it; the client learns what to do.
        E::Storage(_) | E::Io(_) | E::Corrupt(_) => {
            crate::envelope::note_error(&e);
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unkey/application/service_unavailable", STORE_DOWN)
        }
        _ => {
            crate::envelope::note_error(&e);
            let detail = crate::envelope::internal_message(&crate::envelope::current_request_id());
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "unkey/application/unexpected_error", detail)
        }
    }
}

/// What a client is told when the store could not record a change.
pub(crate) const STORE_DOWN: &str = "not changed: the store is unavailable; retry later";

/// Unkey's name for a keyward field.
fn unkey_field(field: &str) -> &str {
    match field {
        "external_id" => "externalId",
        "expires_at" => "expires",
        "limits" => "ratelimits",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header;

    use super::*;

    #[test]
    fn problem_bodies() {
        let p = Problem::invalid("body.apiId", "is required").fix("send the workspace id");
        assert_eq!(
            p.body(),
            json!({"error": {
                "title": "Bad Request",
                "detail": "body.apiId: is required",
                "status": 400,
                "type": "https://unkey.com/docs/errors/unkey/application/invalid_input",
                "errors": [{"location": "body.apiId", "message": "is required", "fix": "send the workspace id"}],
            }})
        );
        let p = Problem::not_found("unkey/data/key_not_found", "key x not found");
        assert_eq!(
            p.body(),
            json!({"error": {
                "title": "Not Found",
                "detail": "key x not found",
                "status": 404,
                "type": "https://unkey.com/docs/errors/unkey/data/key_not_found",
            }})
        );
        let resp =
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "unkey/application/rate_limited", "slow down").into_response();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/problem+json");
        let resp = super::super::ok(json!({}));
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn engine_errors_map_to_unkey_statuses() {
        use keyward::Error as E;
        let cases = [
            (E::NotFound { kind: "key", id: "key_x".into() }, 404, "unkey/data/key_not_found"),
            (E::NotFound { kind: "workspace", id: "ws_x".into() }, 404, "unkey/data/api_not_found"),
            (E::Invalid { field: "external_id", message: "bad".into() }, 400, "unkey/application/invalid_input"),
            (E::InsufficientPermissions("no".into()), 403, "unkey/authorization/insufficient_permissions"),
            (E::PlanInactive, 403, "unkey/authorization/workspace_disabled"),
            (E::Conflict("rotated".into()), 409, "unkey/data/conflict"),
            (E::Storage("disk".into()), 503, "unkey/application/service_unavailable"),
            (E::NoSnapshotKey, 500, "unkey/application/unexpected_error"),
        ];
        for (e, status, code) in cases {
            let p = engine_problem(e);
            assert_eq!((p.status.as_u16(), p.code), (status, code));
        }
        let p = engine_problem(E::Invalid { field: "external_id", message: "bad".into() });
        assert_eq!(p.errors[0].location, "body.externalId");
    }

    /// The router end to end, without sockets: status, content type,
    /// request id and exact bodies.

    #[test]
    fn body_errors_name_the_location_unkey_spells() {
        let p = Problem::from(BodyError { path: "ratelimits[1].duration".into(), message: "bad".into() });
        assert_eq!(
            p.errors,
            [FieldError { location: "body.ratelimits[1].duration".into(), message: "bad".into(), fix: None }]
        );
        assert_eq!(p.detail, "body.ratelimits[1].duration: bad");
        let p = Problem::from(BodyError { path: "credits".into(), message: "missing field `cost`".into() });
        assert_eq!((p.errors[0].location.as_str(), p.errors[0].message.as_str()), ("body.credits.cost", "is required"));
        let p = Problem::from(BodyError { path: String::new(), message: "missing field `apiId`".into() });
        assert_eq!(p.errors[0].location, "body.apiId");
        let p = Problem::from(BodyError { path: "credits.?".into(), message: "EOF while parsing an object".into() });
        assert_eq!(p.errors[0].location, "body.credits");
        let p = Problem::from(BodyError { path: "?".into(), message: "EOF while parsing an object".into() });
        assert_eq!(p.errors[0].location, "body");
        let p = Problem::from(BodyError { path: String::new(), message: "trailing characters".into() });
        assert_eq!((p.status, p.errors[0].location.as_str()), (StatusCode::BAD_REQUEST, "body"));
    }
}
