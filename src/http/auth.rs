//! Bearer tokens: `kiln_` + 32 random bytes (hex); only their SHA-256 is stored.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::{ApiError, ApiResult};
use crate::app::App;
use crate::db;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// Who is calling: the role of their token and the namespace it is limited to (None: all), and which
/// token it is (for the audit log).
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    pub namespace: Option<String>,
    /// The token's id; None for the admin token of `KILN_ADMIN_TOKEN` (it has no row).
    pub token_id: Option<String>,
    /// The token's name ([`ENV_ADMIN_NAME`] for `KILN_ADMIN_TOKEN`).
    pub token_name: String,
}

/// How the audit log names the admin token set by `KILN_ADMIN_TOKEN`.
pub const ENV_ADMIN_NAME: &str = "admin (KILN_ADMIN_TOKEN)";

impl Caller {
    /// Fails with 403 unless the caller has at least `role` over `namespace` (None: kiln-wide).
    pub fn require(&self, role: Role, namespace: Option<&str>) -> ApiResult<()> {
        if self.role < role {
            return Err(ApiError::forbidden(format!(
                "this needs a token with the '{}' role",
                role.as_str()
            )));
        }
        match (&self.namespace, namespace) {
            (None, _) => Ok(()),
            (Some(mine), Some(ns)) if mine == ns => Ok(()),
            (Some(mine), Some(ns)) => Err(ApiError::forbidden(format!(
                "this token is limited to namespace '{mine}', not '{ns}'"
            ))),
            (Some(mine), None) => Err(ApiError::forbidden(format!(
                "this token is limited to namespace '{mine}'; this needs a kiln-wide token"
            ))),
        }
    }

    /// Can this caller see namespace `ns` at all?
    pub fn sees(&self, ns: &str) -> bool {
        self.namespace.as_deref().is_none_or(|mine| mine == ns)
    }
}

pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("kiln_{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The caller the access layer ([`crate::http::access`]) authenticated for this request; a request
/// that did not pass it (no route of the API's table) is authenticated here from its header.
impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        // A refused token counts against the caller's address (429 once its budget is spent).
        let peer = crate::rate_limit::peer(parts, app);
        authenticate(app, &parts.headers).await.map_err(|e| {
            crate::rate_limit::refuse(&app.rate_limits, crate::rate_limit::Surface::Api, peer, e)
        })
    }
}

/// The caller named by the request's `Authorization: Bearer TOKEN` (401 without one, or for a token
/// that is unknown or expired).
pub async fn authenticate(app: &App, headers: &axum::http::HeaderMap) -> ApiResult<Caller> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer TOKEN"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer TOKEN'"))?;
    caller_for_token(app, token).await
}

pub async fn caller_for_token(app: &App, token: &str) -> ApiResult<Caller> {
    caller_for_hash(app, &hash_token(token)).await
}

/// The caller whose token has this SHA-256 (a console session keeps only the hash).
pub async fn caller_for_hash(app: &App, hash: &str) -> ApiResult<Caller> {
    if app.admin_token_hash.as_deref() == Some(hash) {
        return Ok(Caller {
            role: Role::Admin,
            namespace: None,
            token_id: None,
            token_name: ENV_ADMIN_NAME.to_string(),
        });
    }
    let row = db::tokens::by_hash(&app.db, hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    if let Some(expires) = &row.expires_at
        && expires.as_str() <= db::now().as_str()
    {
        return Err(ApiError::unauthorized("this token has expired"));
    }
    let role = Role::parse(&row.role)
        .ok_or_else(|| ApiError::internal(format!("token {} has role {}", row.id, row.role)))?;
    Ok(Caller {
        role,
        namespace: row.namespace,
        token_id: Some(row.id),
        token_name: row.name,
    })
}
