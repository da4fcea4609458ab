//! One `ApiError` for every failure an HTTP client sees: `{"error": {"code", "message", "field"}}`.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::domain::FieldError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn invalid(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// A failure of ours: the client sees a generic message, the log gets the detail.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.field, e.code, e.message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(format!("database: {e}"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "field": self.field}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON body whose errors are `ApiError`s naming the field: 400 for malformed JSON, 422 for a wrong
/// or missing field, 415 without a JSON content type. An empty body deserializes from `{}`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            });
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "body_unreadable", e.body_text()))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        if has_json_type == Some(false) && !bytes.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        parse_json(text).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            );
        }
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        // serde names a missing or unknown field only in its message; the path points at its parent.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| {
                message
                    .split_once(p)
                    .and_then(|(_, rest)| rest.split('`').next())
            })
            .map(str::to_string);
        let field = match (named, path.as_str()) {
            (Some(f), "." | "") => Some(f),
            (Some(f), p) if p == f || p.ends_with(&format!(".{f}")) => Some(p.to_string()),
            (Some(f), parent) => Some(format!("{parent}.{f}")),
            (None, "." | "") => None,
            (None, p) => Some(p.to_string()),
        };
        let mut e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
        e.field = field;
        e
    })
}

/// Query string parameters, with errors as `ApiError`s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_query",
                    e.body_text(),
                )
            })
    }
}

/// Path parameters, with errors as `ApiError`s.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    #[test]
    fn json_errors_name_the_field() {
        let cases: &[(&str, StatusCode, Option<&str>)] = &[
            ("{", StatusCode::BAD_REQUEST, None),
            ("not json", StatusCode::BAD_REQUEST, None),
            ("{}", StatusCode::UNPROCESSABLE_ENTITY, Some("name")),
            (
                r#"{"name": 5}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("name"),
            ),
            (
                r#"{"name": "x", "nmae": 1}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("nmae"),
            ),
            (
                r#"{"name": "x", "inner": {"count": -1}}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("inner.count"),
            ),
            (
                r#"{"name": "x", "inner": {}}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("inner.count"),
            ),
            ("[]", StatusCode::UNPROCESSABLE_ENTITY, None),
        ];
        for (body, status, field) in cases {
            let err = parse_json::<Body>(body.as_bytes()).unwrap_err();
            assert_eq!(err.status, *status, "{body}: {err:?}");
            assert_eq!(err.field.as_deref(), *field, "{body}: {err:?}");
            assert!(!err.message.is_empty());
        }
        assert_eq!(parse_json::<Body>(br#"{"name": "ok"}"#).unwrap().name, "ok");
    }
}
