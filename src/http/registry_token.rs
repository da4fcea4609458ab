//! `GET /registry/token`: kiln as the registry's token server (Docker Registry v2 token
//! authentication). HTTP Basic credentials whose password is a kiln API token (any user name);
//! the scopes granted follow that token (see `registry::token::grant`).
//!
//! - wrong, unknown or expired token, or credentials that are not Basic: 401 with the JSON error
//!   and `WWW-Authenticate: Basic` (`docker login` fails, saying unauthorized);
//! - `service` other than kiln's (`KILN_REGISTRY_TOKEN_SERVICE`): 400 naming the field;
//! - no credentials: a token with pulls only when `KILN_REGISTRY_ANONYMOUS_PULL=true`, otherwise a
//!   token with no access at all (as the spec allows), so the registry answers `docker pull`
//!   with its usual "pull access denied … may require 'docker login'".

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;

use super::auth::caller_for_token;
use super::error::{ApiError, ApiResult};
use crate::app::App;
use crate::rate_limit::{self, Peer, Surface};
use crate::registry::token::{Requester, grant, parse_scopes};

#[derive(Debug, Serialize)]
struct TokenView {
    token: String,
    access_token: String,
    expires_in: u64,
    issued_at: String,
}

/// The query as the spec has it: `service`, `scope` (may repeat), `account`; others are ignored.
#[derive(Debug, Default)]
struct TokenQuery {
    service: Option<String>,
    scopes: Vec<String>,
    account: Option<String>,
}

fn parse_query(query: &str) -> TokenQuery {
    let mut q = TokenQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "service" => q.service = Some(value.into_owned()),
            "scope" => q.scopes.push(value.into_owned()),
            "account" => q.account = Some(value.into_owned()),
            _ => {}
        }
    }
    q
}

pub async fn issue_registry_token(
    State(app): State<App>,
    Peer(peer): Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let answer = token_for(&app, &headers, query.as_deref().unwrap_or_default())
        .await
        // A refused token counts against the caller's address, as on the API (429 past its budget).
        .map_err(|e| rate_limit::refuse(&app.rate_limits, Surface::Api, peer, e));
    match answer {
        Ok(view) => {
            let mut resp = Json(view).into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => {
            let unauthorized = e.status == axum::http::StatusCode::UNAUTHORIZED;
            let mut resp = e.into_response();
            if unauthorized {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"kiln\", charset=\"UTF-8\""),
                );
            }
            resp
        }
    }
}

async fn token_for(app: &App, headers: &HeaderMap, query: &str) -> ApiResult<TokenView> {
    let issuer = &app.registry_tokens;
    let query = parse_query(query);
    if let Some(service) = &query.service
        && *service != issuer.service
    {
        return Err(ApiError::bad_request(
            "unknown_service",
            format!(
                "kiln issues registry tokens for the service '{}', not '{service}'",
                issuer.service
            ),
        )
        .with_field("service"));
    }
    let requester = match headers.get(header::AUTHORIZATION) {
        None => Requester::Anonymous,
        Some(value) => {
            let password = basic_password(value).ok_or_else(|| {
                ApiError::unauthorized(
                    "send HTTP Basic credentials whose password is a kiln API token",
                )
            })?;
            Requester::Caller(caller_for_token(app, &password).await?)
        }
    };
    let scopes: Vec<_> = query.scopes.iter().flat_map(|s| parse_scopes(s)).collect();
    let access = grant(&requester, &scopes, issuer.anonymous_pull);
    let subject = match &requester {
        Requester::Anonymous => String::new(),
        _ => query
            .account
            .filter(|a| !a.is_empty() && a.len() <= 255 && !a.chars().any(char::is_control))
            .unwrap_or_else(|| "kiln-token".to_string()),
    };
    let issued = issuer
        .issue(&subject, &access)
        .map_err(ApiError::internal)?;
    tracing::info!(
        subject = %subject,
        asked = scopes.len(),
        granted = access.len(),
        "issued a registry token"
    );
    Ok(TokenView {
        access_token: issued.token.clone(),
        token: issued.token,
        expires_in: issued.expires_in.as_secs(),
        issued_at: chrono::DateTime::<chrono::Utc>::from(issued.issued_at)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The password of `Basic base64(user:password)`; None for anything else or an empty password.
fn basic_password(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, password) = decoded.split_once(':')?;
    (!password.is_empty()).then(|| password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_give_the_password() {
        let header = |s: &str| HeaderValue::from_str(s).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            basic_password(&header(&format!("Basic {}", b64("me:kiln_abc")))).as_deref(),
            Some("kiln_abc")
        );
        assert_eq!(
            basic_password(&header(&format!("basic {}", b64(":a:b")))).as_deref(),
            Some("a:b")
        );
        for bad in [
            format!("Basic {}", b64("me:")),
            format!("Basic {}", b64("no-colon")),
            "Basic !!!".to_string(),
            format!("Bearer {}", b64("me:kiln_abc")),
            "Basic".to_string(),
            String::new(),
        ] {
            assert_eq!(basic_password(&header(&bad)), None, "{bad}");
        }
    }

    #[test]
    fn the_query_keeps_every_scope() {
        let q = parse_query(
            "service=kiln&scope=repository%3Ared%2Fapp%3Apull&scope=registry:catalog:*&account=me&x=1",
        );
        assert_eq!(q.service.as_deref(), Some("kiln"));
        assert_eq!(q.scopes, ["repository:red/app:pull", "registry:catalog:*"]);
        assert_eq!(q.account.as_deref(), Some("me"));
        let q = parse_query("%ZZ=&&=");
        assert!(q.service.is_none() && q.scopes.is_empty());
    }
}
