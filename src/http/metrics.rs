//! `GET /metrics`: Prometheus text format, read from the database at scrape time.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::db;

pub async fn metrics(State(app): State<App>) -> Response {
    match db::stats::counts(&app.db).await {
        Ok(c) => {
            let mut out = String::new();
            out.push_str("# HELP kiln_builds Builds by status.\n# TYPE kiln_builds gauge\n");
            for (status, n) in &c.builds {
                out.push_str(&format!("kiln_builds{{status=\"{status}\"}} {n}\n"));
            }
            out.push_str("# HELP kiln_deliveries Notification deliveries by status.\n# TYPE kiln_deliveries gauge\n");
            for (status, n) in &c.deliveries {
                out.push_str(&format!("kiln_deliveries{{status=\"{status}\"}} {n}\n"));
            }
            out.push_str(
                "# HELP kiln_versions Image versions known.\n# TYPE kiln_versions gauge\n",
            );
            out.push_str(&format!("kiln_versions {}\n", c.versions));
            out.push_str(
                "# HELP kiln_repositories Image repositories.\n# TYPE kiln_repositories gauge\n",
            );
            out.push_str(&format!("kiln_repositories {}\n", c.repositories));
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                out,
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read metrics");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}
