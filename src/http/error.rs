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
    /// Seconds for a `Retry-After` header (503 answers).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
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

/// How long a client is told to wait after a full disk refused its request.
pub const STORAGE_FULL_RETRY_SECS: u64 = 60;

impl ApiError {
    /// The disk holding kiln's data is full: nothing of the request was stored (its transaction was
    /// rolled back), and the same request succeeds once space is freed. 503 with `Retry-After`, so
    /// senders that retry (the registry's notifications, forges' redeliveries) come back.
    pub fn storage_full(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "the disk holding kiln's data is full; the request was not stored");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_full",
            "kiln's data disk is full: nothing was stored; retry once space is freed",
        )
        .retry_after(STORAGE_FULL_RETRY_SECS)
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.field, e.code, e.message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_storage_full(&e) {
            return ApiError::storage_full(&e);
        }
        ApiError::internal(format!("database: {e}"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        if crate::db::chain_is_storage_full(e.as_ref()) {
            return ApiError::storage_full(&format!("{e:#}"));
        }
        ApiError::internal(format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "field": self.field}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
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

/// One JSON object, strictly: anything that is not well-formed JSON (trailing data included) is 400;
/// well-formed JSON that is not an object, or a field of the wrong kind, is 422 naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        field_error(&path, &err.into_inner().to_string(), "invalid_field")
    })
}

/// A serde data error as a 422 naming the field: serde names a missing or unknown field only in its
/// message, and the path then points at its parent.
fn field_error(path: &str, message: &str, code: &'static str) -> ApiError {
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| {
            message
                .split_once(p)
                .and_then(|(_, rest)| rest.split('`').next())
        })
        .map(str::to_string);
    let field = match (named, path) {
        (Some(f), "." | "" | "?") => Some(f),
        (Some(f), p) if p == f || p.ends_with(&format!(".{f}")) => Some(p.to_string()),
        (Some(f), parent) => Some(format!("{parent}.{f}")),
        (None, "." | "" | "?") => None,
        (None, p) => Some(p.to_string()),
    };
    let mut e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
    e.field = field;
    e
}

/// Query string parameters, with errors as `ApiError`s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Query parameters; an error names the parameter.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> ApiResult<T> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        field_error(&path, &err.into_inner().to_string(), "invalid_query")
    })
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
            (r#"{"name": "x"} trailing"#, StatusCode::BAD_REQUEST, None),
            (
                r#"{"name": "x"}{"name": "y"}"#,
                StatusCode::BAD_REQUEST,
                None,
            ),
            (r#"{"name": 6"#, StatusCode::BAD_REQUEST, None),
            (r#"["x"]"#, StatusCode::UNPROCESSABLE_ENTITY, None),
            (r#""name""#, StatusCode::UNPROCESSABLE_ENTITY, None),
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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Query {
        limit: Option<i64>,
        #[serde(default)]
        include_hidden: bool,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        for (q, field) in [
            ("limit=abc", Some("limit")),
            ("include_hidden=maybe", Some("include_hidden")),
            ("lmit=3", Some("lmit")),
        ] {
            let e = parse_query::<Query>(q).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{q}");
            assert_eq!(e.field.as_deref(), field, "{q}: {e:?}");
        }
        let ok: Query = parse_query("limit=5&include_hidden=true").unwrap();
        assert_eq!((ok.limit, ok.include_hidden), (Some(5), true));
        let empty: Query = parse_query("").unwrap();
        assert_eq!((empty.limit, empty.include_hidden), (None, false));
    }

    #[test]
    fn a_full_disk_anywhere_in_the_chain_is_503_storage_full_with_retry_after() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let e = ApiError::from(anyhow::Error::from(full).context("cannot write the mirror"));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code, "storage_full");
        assert_eq!(e.retry_after, Some(STORAGE_FULL_RETRY_SECS));
        assert!(
            !e.message.contains("mirror"),
            "the detail goes to the log only"
        );

        let quota = std::io::Error::from(std::io::ErrorKind::QuotaExceeded);
        assert_eq!(
            ApiError::from(anyhow::Error::from(quota)).code,
            "storage_full"
        );
        assert_eq!(
            ApiError::from(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::StorageFull
            )))
            .code,
            "storage_full"
        );

        let other = ApiError::from(anyhow::anyhow!("something else"));
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(other.code, "internal");
        let other = ApiError::from(sqlx::Error::RowNotFound);
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
