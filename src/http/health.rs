//! `GET /healthz`: the database, the Docker daemon and the registry, each checked now. Any of them
//! failing makes it `degraded` (still 200: kiln itself is up and keeps the queued work), with the
//! reasons listed.

use std::time::Duration;

use axum::extract::State;
use serde_json::{Value, json};

use crate::app::App;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

async fn check<F, T>(f: F) -> Result<T, String>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

fn part<T>(r: &Result<T, String>, detail: impl FnOnce(&T) -> Value) -> Value {
    match r {
        Ok(v) => json!({"status": "ok", "detail": detail(v)}),
        Err(e) => json!({"status": "error", "error": e}),
    }
}

pub async fn healthz(State(app): State<App>) -> axum::Json<Value> {
    let db = check(async {
        Ok(sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&app.db)
            .await?)
    });
    let docker = check(app.docker.ping());
    let registry = check(app.registry.ping());
    let (db, docker, registry) = tokio::join!(db, docker, registry);
    let all_ok = db.is_ok() && docker.is_ok() && registry.is_ok();
    // Why it is degraded, one line per part that failed: what an operator (or a probe) reads first.
    let reasons: Vec<String> = [
        ("database", &db.as_ref().err()),
        ("docker", &docker.as_ref().err()),
        ("registry", &registry.as_ref().err()),
    ]
    .into_iter()
    .filter_map(|(name, e)| e.map(|e| format!("{name}: {e}")))
    .collect();
    axum::Json(json!({
        "status": if all_ok { "ok" } else { "degraded" },
        "reasons": reasons,
        "database": part(&db, |_| json!("sqlite")),
        "docker": part(&docker, |v| json!(v)),
        "registry": part(&registry, |_| json!(app.config.registry_url)),
    }))
}
