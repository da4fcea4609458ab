//! Signing in to the console: a server-side session per sign-in, its cookie, CSRF tokens, and the
//! [`Viewer`] every console handler takes (the API's [`Caller`] plus the page's language).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use rand::RngCore;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::error::ConsoleError;
use super::i18n::Lang;
use crate::app::App;
use crate::db;
use crate::http::auth::{self, Caller, Role};

pub const SESSION_COOKIE: &str = "kiln_session";
/// The double-submit cookie of the sign-in form (there is no session to hold its CSRF token yet).
pub const LOGIN_COOKIE: &str = "kiln_login";
/// The largest form body a console page accepts.
const FORM_LIMIT: usize = 256 * 1024;
/// A session's `last_seen_at` is written at most this often.
const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The signed-in person looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub caller: Caller,
    pub csrf: String,
    pub lang: Lang,
    /// The request's path and query (for the language switch and `next=`).
    pub uri: String,
    session_hash: String,
}

impl Viewer {
    /// Can this viewer change things in namespace `ns` (the API's `write` role there)?
    pub fn can_write(&self, ns: &str) -> bool {
        self.caller.sees(ns) && self.caller.require(Role::Write, Some(ns)).is_ok()
    }
}

pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Equal without leaking where they differ (compares digests).
pub fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, `Secure` when kiln's public URL is https.
/// `max_age` None: a cookie that is removed.
pub fn set_cookie(
    app: &App,
    name: &str,
    value: &str,
    max_age: Option<std::time::Duration>,
) -> HeaderValue {
    let mut c = Cookie::build((name.to_string(), value.to_string()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(app.config.public_url.starts_with("https://"));
    c = match max_age {
        Some(d) => c.max_age(cookie::time::Duration::seconds(d.as_secs() as i64)),
        None => c.max_age(cookie::time::Duration::ZERO),
    };
    HeaderValue::from_str(&c.build().to_string()).expect("cookie is a valid header")
}

fn path_and_query(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string())
}

/// Where to go after signing in: a path on this site only (never `//host` or a URL).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

fn to_login(uri: &str) -> Response {
    let next: String = form_urlencoded::byte_serialize(uri.as_bytes()).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

/// The session the request's cookie opens, with its caller; None when there is none or it ended.
pub async fn current(
    app: &App,
    headers: &HeaderMap,
) -> Result<Option<(db::sessions::SessionRow, Caller)>, ConsoleError> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let id_hash = sha256_hex(&value);
    let idle_since = db::format_time(chrono::Utc::now() - app.config.session_idle);
    let Some(row) = db::sessions::live(&app.db, &id_hash, &idle_since).await? else {
        return Ok(None);
    };
    match auth::caller_for_hash(app, &row.token_hash).await {
        Ok(caller) => Ok(Some((row, caller))),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            // The token was deleted or expired: the session ends with it.
            db::sessions::delete(&app.db, &id_hash).await?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

impl FromRequestParts<App> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let lang = Lang::of_request(parts.uri.query(), &parts.headers);
        let uri = path_and_query(parts);
        let Some((row, caller)) = current(app, &parts.headers)
            .await
            .map_err(IntoResponse::into_response)?
        else {
            return Err(to_login(&uri));
        };
        let stale = chrono::DateTime::parse_from_rfc3339(&row.last_seen_at)
            .map(|t| chrono::Utc::now() - t.with_timezone(&chrono::Utc) > TOUCH_EVERY)
            .unwrap_or(true);
        if stale {
            db::sessions::touch(&app.db, &row.id_hash)
                .await
                .map_err(|e| ConsoleError::from(e).into_response())?;
        }
        Ok(Viewer {
            caller,
            csrf: row.csrf,
            lang,
            uri,
            session_hash: row.id_hash,
        })
    }
}

/// The fields of a form that sends only its CSRF token (`CsrfForm<NoFields>`).
#[derive(Debug, serde::Deserialize)]
pub struct NoFields {}

/// A submitted console form: the viewer, and the fields as `T`, after checking the form's `_csrf`
/// field against the session's token (403 otherwise). A field `T` cannot take is a 422 page naming it.
pub struct CsrfForm<T>(pub Viewer, pub T);

impl<T: DeserializeOwned> FromRequest<App> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, app).await?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
            ConsoleError::status(StatusCode::PAYLOAD_TOO_LARGE, "errors.form_too_large")
                .into_response()
        })?;
        let sent = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "_csrf")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !same_secret(&sent, &viewer.csrf) {
            return Err(ConsoleError::status(StatusCode::FORBIDDEN, "errors.csrf").into_response());
        }
        // The audit log names who made the change this form asks for.
        if let Some(slot) = parts.extensions.get::<crate::http::audit::AuditSlot>() {
            slot.fill(viewer.caller.clone(), None, None);
        }
        let fields = parse_form::<T>(&bytes).map_err(IntoResponse::into_response)?;
        Ok(CsrfForm(viewer, fields))
    }
}

/// A form body (up to the console's form limit) as `T`: what does not fit is the console's 413 page,
/// what `T` cannot take its 422 page (not axum's plain-text rejections). Any content type is read as
/// `application/x-www-form-urlencoded`, as browsers send it.
async fn read_form<T: DeserializeOwned>(body: axum::body::Body) -> Result<T, ConsoleError> {
    let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
        ConsoleError::status(StatusCode::PAYLOAD_TOO_LARGE, "errors.form_too_large")
    })?;
    parse_form(&bytes)
}

/// A urlencoded form as `T`: a 422 page when it is not UTF-8 once decoded (form_urlencoded would
/// replace the bytes silently) or when `T` cannot take a field.
fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConsoleError> {
    if !form_is_utf8(bytes) {
        return Err(ConsoleError::bad_form(
            "the form is not UTF-8 text".to_string(),
        ));
    }
    serde_urlencoded::from_bytes::<T>(bytes).map_err(|e| ConsoleError::bad_form(e.to_string()))
}

/// Whether a urlencoded body is UTF-8 once its `%XX` escapes are decoded. Decoding the whole body
/// at once is enough: the separators `&` and `=` are ASCII, which never continues a UTF-8
/// sequence.
fn form_is_utf8(bytes: &[u8]) -> bool {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            decoded.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`: the sign-in form (or home, when already signed in).
pub async fn login_page(
    axum::extract::State(app): axum::extract::State<App>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Result<Response, ConsoleError> {
    if current(&app, &headers).await?.is_some() {
        return Ok(Redirect::to(&safe_next(q.next.as_deref())).into_response());
    }
    let lang = Lang::of_request(uri.query(), &headers);
    Ok(login_form(
        &app,
        lang,
        &uri,
        q.next.as_deref(),
        StatusCode::OK,
        false,
    ))
}

fn login_form(
    app: &App,
    lang: Lang,
    uri: &axum::http::Uri,
    next: Option<&str>,
    status: StatusCode,
    failed: bool,
) -> Response {
    let csrf = random_hex();
    let mut ctx = tera::Context::new();
    ctx.insert("login_csrf", &csrf);
    ctx.insert("next", &safe_next(next));
    ctx.insert("failed", &failed);
    let uri = uri.path_and_query().map_or("/login", |p| p.as_str());
    let mut response = super::render::guest_page(lang, uri, "login.html", ctx, status);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            app,
            LOGIN_COOKIE,
            &csrf,
            Some(std::time::Duration::from_secs(3600)),
        ),
    );
    response
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
    next: Option<String>,
}

/// `POST /login`: opens a session for a valid API token. A failure says only that it failed.
pub async fn login(
    axum::extract::State(app): axum::extract::State<App>,
    crate::rate_limit::Peer(peer): crate::rate_limit::Peer,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Body,
) -> Result<Response, ConsoleError> {
    let form: LoginForm = read_form(body).await?;
    let lang = Lang::of_request(uri.query(), &headers);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_secret(&form.csrf, &expected) {
        return Err(ConsoleError::status(StatusCode::FORBIDDEN, "errors.csrf"));
    }
    let token = form.token.trim();
    let caller = if token.is_empty() {
        None
    } else {
        match auth::caller_for_token(&app, token).await {
            Ok(c) => Some(c),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => None,
            Err(e) => return Err(e.into()),
        }
    };
    if caller.is_none() {
        // A failed sign-in counts against the address; once its budget is spent: 429 (issue 11).
        if let Err(t) = app
            .rate_limits
            .note_failure(crate::rate_limit::Surface::Login, peer)
        {
            tracing::info!(
                retry_after = t.retry_after_secs,
                "console sign-in refused: too many failures from this address"
            );
            let mut response =
                ConsoleError::status(StatusCode::TOO_MANY_REQUESTS, "errors.rate_limited")
                    .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(t.retry_after_secs));
            return Ok(response);
        }
        tracing::info!("console sign-in refused");
        return Ok(login_form(
            &app,
            lang,
            &uri,
            form.next.as_deref(),
            StatusCode::UNAUTHORIZED,
            true,
        ));
    }
    let value = random_hex();
    let expires = chrono::Utc::now() + app.config.session_max;
    db::sessions::insert(
        &app.db,
        &sha256_hex(&value),
        &auth::hash_token(token),
        &random_hex(),
        expires,
    )
    .await?;
    let idle_since = db::format_time(chrono::Utc::now() - app.config.session_idle);
    if let Err(e) = db::sessions::delete_expired(&app.db, &idle_since).await {
        tracing::warn!(error = %e, "cannot forget expired console sessions");
    }
    let mut response = Redirect::to(&safe_next(form.next.as_deref())).into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&app, SESSION_COOKIE, &value, Some(app.config.session_max)),
    );
    h.append(header::SET_COOKIE, set_cookie(&app, LOGIN_COOKIE, "", None));
    Ok(response)
}

/// `POST /logout`: ends the session (its row is deleted) and drops the cookie.
pub async fn logout(
    axum::extract::State(app): axum::extract::State<App>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    db::sessions::delete(&app.db, &viewer.session_hash).await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&app, SESSION_COOKIE, "", None),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn forms_must_be_utf8_once_decoded() {
        for ok in [
            &b""[..],
            b"a=b&c=d",
            b"name=%C3%A9t%C3%A9",
            b"x=%zz%4",
            "é=ü".as_bytes(),
        ] {
            assert!(form_is_utf8(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"name=%FF"[..],
            b"name=%C3",
            b"a=%C3&b=%A9",
            b"a=\xff",
            b"%ED%A0%80=x",
        ] {
            assert!(!form_is_utf8(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/repos/a/b?x=1")), "/repos/a/b?x=1");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "evil",
            "/\\evil",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; kiln_session=abc".parse().unwrap());
        h.append(header::COOKIE, "kiln_lang=zh-CN".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "kiln_lang").as_deref(), Some("zh-CN"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("", "abc"));
    }
}
