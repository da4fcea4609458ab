use super::Db;

pub struct Counts {
    pub builds: Vec<(String, i64)>,
    pub deliveries: Vec<(String, i64)>,
    pub versions: i64,
    pub repositories: i64,
}

/// Every known status appears, with 0 when none has it.
pub async fn counts(db: &Db) -> Result<Counts, sqlx::Error> {
    let by_status = |rows: Vec<(String, i64)>, all: &[&str]| -> Vec<(String, i64)> {
        all.iter()
            .map(|s| {
                (
                    s.to_string(),
                    rows.iter().find(|(r, _)| r == s).map_or(0, |(_, n)| *n),
                )
            })
            .collect()
    };
    let builds: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM builds GROUP BY status")
            .fetch_all(db)
            .await?;
    let deliveries: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
            .fetch_all(db)
            .await?;
    let (versions,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM versions")
        .fetch_one(db)
        .await?;
    let (repositories,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM repositories")
        .fetch_one(db)
        .await?;
    Ok(Counts {
        builds: by_status(
            builds,
            &[
                "queued",
                "building",
                "succeeded",
                "failed",
                "cancelled",
                "skipped",
            ],
        ),
        deliveries: by_status(deliveries, &["pending", "succeeded", "failed"]),
        versions,
        repositories,
    })
}
