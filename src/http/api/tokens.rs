use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{PageQuery, paginate};
use crate::app::App;
use crate::db::{self, tokens::TokenRow};
use crate::http::auth::{Caller, Role, generate_token, hash_token};
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};

#[derive(Serialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub namespace: Option<String>,
    pub role: String,
    pub expires_at: Option<String>,
    pub created_at: String,
    /// Only in the answer to the POST that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<TokenRow> for TokenView {
    fn from(t: TokenRow) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            namespace: t.namespace,
            role: t.role,
            expires_at: t.expires_at,
            created_at: t.created_at,
            token: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub namespace: Option<String>,
    pub role: String,
    pub expires_at: Option<String>,
}

pub async fn create_token(
    State(app): State<App>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, axum::Json<TokenView>)> {
    let view = create(&app, &caller, body).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Makes a token (kiln-wide admins only); the view holds the token itself, the only time it is shown.
pub async fn create(app: &App, caller: &Caller, body: CreateToken) -> ApiResult<TokenView> {
    caller.require(Role::Admin, None)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid(
            "name",
            "invalid_length",
            "name must be 1 to 100 characters",
        ));
    }
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::invalid(
            "role",
            "invalid_value",
            "role must be one of: read, write, admin",
        )
    })?;
    if let Some(ns) = &body.namespace
        && db::namespaces::by_name(&app.db, ns).await?.is_none()
    {
        return Err(ApiError::invalid(
            "namespace",
            "not_found",
            format!("namespace '{ns}' does not exist"),
        ));
    }
    let expires_at = match &body.expires_at {
        None => None,
        Some(text) => {
            let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
                ApiError::invalid(
                    "expires_at",
                    "invalid_time",
                    "expires_at must be an RFC 3339 time, like 2027-01-01T00:00:00Z",
                )
            })?;
            let t = t.with_timezone(&chrono::Utc);
            if t <= chrono::Utc::now() {
                return Err(ApiError::invalid(
                    "expires_at",
                    "in_the_past",
                    "expires_at must be in the future",
                ));
            }
            Some(db::format_time(t))
        }
    };
    let token = generate_token();
    let row = db::tokens::insert(
        &app.db,
        &db::tokens::NewToken {
            name,
            namespace: body.namespace.as_deref(),
            role: role.as_str(),
            token_hash: &hash_token(&token),
            expires_at: expires_at.as_deref(),
        },
    )
    .await?;
    let mut view = TokenView::from(row);
    view.token = Some(token);
    Ok(view)
}

pub async fn list_tokens(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let views = list(&app, &caller).await?;
    paginate(views, &q, |t| t.id.clone(), |t| t)
}

pub async fn delete_token(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    delete(&app, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes token `id` (kiln-wide admins only); the sessions opened with it end with it.
pub async fn delete(app: &App, caller: &Caller, id: &str) -> ApiResult<()> {
    caller.require(Role::Admin, None)?;
    if db::tokens::delete(&app.db, id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found(&format!("token {id}")))
    }
}

/// Every token, newest first (kiln-wide admins only), never with the token itself.
pub async fn list(app: &App, caller: &Caller) -> ApiResult<Vec<TokenView>> {
    caller.require(Role::Admin, None)?;
    Ok(db::tokens::list(&app.db)
        .await?
        .into_iter()
        .map(TokenView::from)
        .collect())
}
