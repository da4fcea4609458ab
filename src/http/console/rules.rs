//! Console pages of this area (see `mod.rs`).

use axum::Router;

use crate::app::App;

pub fn routes() -> Router<App> {
    Router::new()
}
