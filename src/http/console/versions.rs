//! A repository's Versions tab (`GET /repos/{ns}/{repo}/versions[?hidden=1]`): every tag with its
//! digest, compressed size (from the registry, see `image_sizes`), source, time, build and the
//! digests it held before; hiding and unhiding single versions.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::error::ConsoleError;
use super::render;
use super::session::{CsrfForm, Viewer};
use crate::app::App;
use crate::http::api::versions::{self, VersionView};
use crate::http::auth::Role;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/repos/{ns}/{repo}/versions", get(versions_tab))
        .route("/repos/{ns}/{repo}/versions/{tag}/hide", post(hide_version))
        .route(
            "/repos/{ns}/{repo}/versions/{tag}/unhide",
            post(unhide_version),
        )
}

/// A path segment with everything but letters, digits and `*-._` percent-encoded.
pub fn path_part(s: &str) -> String {
    // The form encoding writes a space as `+` (and a `+` as `%2B`): in a path it is `%20`.
    query_part(s).replace('+', "%20")
}

/// A query value, percent-encoded.
pub fn query_part(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[derive(Deserialize, Default)]
pub struct VersionsQuery {
    hidden: Option<String>,
}

fn wants_hidden(v: Option<&str>) -> bool {
    v.is_some_and(|v| v == "1" || v == "on" || v == "true")
}

#[derive(Serialize)]
struct VersionRow {
    #[serde(flatten)]
    version: VersionView,
    /// Compressed size in bytes; None when the registry could not tell.
    size: Option<u64>,
    /// `/repos/ns/repo/versions/TAG` (the tag percent-encoded).
    path: String,
}

/// `GET /repos/{ns}/{repo}/versions[?hidden=1]`.
async fn versions_tab(
    State(app): State<App>,
    viewer: Viewer,
    Path((ns, repo)): Path<(String, String)>,
    Query(q): Query<VersionsQuery>,
) -> Result<Response, ConsoleError> {
    let show_hidden = wants_hidden(q.hidden.as_deref());
    let (_, mut ctx) = super::repo_tab(&app, &viewer, &ns, &repo, Role::Read, "versions").await?;
    let list = versions::list_with_history(&app, &viewer.caller, &ns, &repo, show_hidden).await?;
    let digests: Vec<String> = list.iter().map(|v| v.digest.clone()).collect();
    let sizes = super::image_sizes::sizes(&app.registry, &format!("{ns}/{repo}"), &digests).await;
    let base = format!("/repos/{}/{}", path_part(&ns), path_part(&repo));
    let rows: Vec<VersionRow> = list
        .into_iter()
        .map(|v| VersionRow {
            size: sizes.get(&v.digest).copied(),
            path: format!("{base}/versions/{}", path_part(&v.tag)),
            version: v,
        })
        .collect();
    ctx.insert("versions", &rows);
    ctx.insert("show_hidden", &show_hidden);
    ctx.insert("base", &base);
    Ok(render::page(&viewer, "repo/versions.html", ctx))
}

#[derive(Deserialize)]
pub struct HideForm {
    /// The list showed hidden versions: go back to that view.
    #[serde(default)]
    show_hidden: Option<String>,
}

async fn set_hidden(
    app: App,
    viewer: Viewer,
    ns: String,
    repo: String,
    tag: String,
    form: HideForm,
    hidden: bool,
) -> Result<Response, ConsoleError> {
    versions::set_hidden(&app, &viewer.caller, &ns, &repo, &tag, hidden).await?;
    let mut to = format!("/repos/{}/{}/versions", path_part(&ns), path_part(&repo));
    if wants_hidden(form.show_hidden.as_deref()) {
        to.push_str("?hidden=1");
    }
    let flash = if hidden {
        "versions_hidden"
    } else {
        "versions_unhidden"
    };
    Ok(super::done(&to, flash))
}

async fn hide_version(
    State(app): State<App>,
    Path((ns, repo, tag)): Path<(String, String, String)>,
    CsrfForm(viewer, form): CsrfForm<HideForm>,
) -> Result<Response, ConsoleError> {
    set_hidden(app, viewer, ns, repo, tag, form, true).await
}

async fn unhide_version(
    State(app): State<App>,
    Path((ns, repo, tag)): Path<(String, String, String)>,
    CsrfForm(viewer, form): CsrfForm<HideForm>,
) -> Result<Response, ConsoleError> {
    set_hidden(app, viewer, ns, repo, tag, form, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_names_are_encoded_for_paths() {
        assert_eq!(path_part("v1.2.3-rc.1"), "v1.2.3-rc.1");
        assert_eq!(path_part("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
        assert_eq!(query_part("a b&c"), "a+b%26c");
    }
}
