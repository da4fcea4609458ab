//! Failures on console pages: an error page in the viewer's language, with the API's status code.
//! Handlers return `ConsoleError` (or an [`ApiError`] through `?`); [`render_errors`] turns it into
//! the page, because only the request knows the language.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::i18n::Lang;
use crate::http::error::ApiError;

#[derive(Debug, Clone)]
pub struct ConsoleError {
    pub status: StatusCode,
    /// A catalogue key (`errors.csrf`) for errors of the console itself.
    pub key: Option<&'static str>,
    /// The API's error, for failures of the shared handlers' checks.
    pub code: Option<&'static str>,
    pub message: Option<String>,
}

impl ConsoleError {
    pub fn status(status: StatusCode, key: &'static str) -> Self {
        ConsoleError {
            status,
            key: Some(key),
            code: None,
            message: None,
        }
    }

    /// A form that does not parse (a field of the wrong kind).
    pub fn bad_form(detail: String) -> Self {
        ConsoleError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            key: Some("errors.bad_form"),
            code: None,
            message: Some(detail),
        }
    }

    pub fn not_found() -> Self {
        Self::status(StatusCode::NOT_FOUND, "errors.not_found")
    }

    /// The sentence shown: the console's own text, else the API's error in the viewer's language.
    pub fn text(&self, lang: Lang) -> String {
        if let Some(key) = self.key {
            return lang.text(key);
        }
        api_text(
            lang,
            self.code.unwrap_or(""),
            self.message.as_deref().unwrap_or(""),
        )
    }
}

/// An API error's sentence for a person reading `lang`: English keeps the API's exact sentence;
/// another language uses the catalogue's text for the error code (`errors.{code}`), falling back to
/// the API's sentence when the code has none.
pub fn api_text(lang: Lang, code: &str, message: &str) -> String {
    if lang == Lang::En || code.is_empty() {
        return message.to_string();
    }
    lang.lookup(&format!("errors.{code}"))
        .unwrap_or_else(|| message.to_string())
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        ConsoleError {
            status: e.status,
            key: None,
            code: Some(e.code),
            message: Some(e.message),
        }
    }
}

impl From<sqlx::Error> for ConsoleError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl From<anyhow::Error> for ConsoleError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Middleware of the console's routes: renders a [`ConsoleError`] as the error page, and remembers
/// a language picked with `?lang=` in a cookie.
pub async fn render_errors(
    axum::extract::State(app): axum::extract::State<crate::app::App>,
    request: Request,
    next: Next,
) -> Response {
    let query = request.uri().query().map(str::to_string);
    let lang = Lang::of_request(query.as_deref(), request.headers());
    let uri = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let mut response = next.run(request).await;
    if let Some(err) = response.extensions_mut().remove::<ConsoleError>() {
        let mut ctx = tera::Context::new();
        ctx.insert("status", &err.status.as_u16());
        ctx.insert("message", &err.text(lang));
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .cloned();
        response = super::render::guest_page(lang, &uri, "error.html", ctx, err.status);
        if let Some(v) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
    }
    if let Some(picked) = super::i18n::query_lang(query.as_deref()) {
        response.headers_mut().append(
            axum::http::header::SET_COOKIE,
            super::session::set_cookie(
                &app,
                super::i18n::LANG_COOKIE,
                picked.code(),
                Some(std::time::Duration::from_secs(365 * 86_400)),
            ),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_in_the_viewers_language() {
        assert_eq!(
            api_text(Lang::En, "not_found", "repository a/b not found"),
            "repository a/b not found"
        );
        assert_ne!(
            api_text(Lang::ZhCn, "not_found", "repository a/b not found"),
            "repository a/b not found"
        );
        assert_eq!(api_text(Lang::ZhCn, "no_such_code_xyz", "as is"), "as is");
    }
}
