//! Ingest: verified hook deliveries go through one writer that stores them in group commits.
//!
//! A hook handler verifies and parses a delivery, then hands it to the writer over a bounded queue and
//! awaits its answer. The writer takes everything waiting (up to [`MAX_BATCH`]) into one
//! `BEGIN IMMEDIATE` transaction on its own connection. Nothing on this path holds a write
//! transaction while it waits for anything else (a pooled connection, a lock, another task), which
//! is what stalled concurrent deliveries before.
//!
//! The writer is the one serial step, so it runs on a thread of its own (`kiln-ingest`, with a
//! runtime of its own: it is never queued behind the handlers' tasks), and it runs the statements
//! of a batch on that thread, on its sqlx connection's own handle
//! ([`SqliteConnection::lock_handle`], through rusqlite), instead of one round trip to sqlx's
//! worker thread per statement: `BEGIN IMMEDIATE`, the inserts and `COMMIT` of a common batch
//! cost one. Repositories and rules are read through sqlx, only when another connection has
//! written since the writer last read them (SQLite's `data_version`); so are the rare follow-ups
//! (queueing builds, counting a redelivery), in the same transaction.
//!
//! Durability, and the rule kiln keeps for it: **a delivery is answered only once the WAL frames
//! of its commit are on disk** (`fdatasync` of the database's `-wal` file, issued after the commit
//! returned). The writer's connection commits with `synchronous=NORMAL`, then hands the batch's
//! answers to a syncer thread and goes on with the next batch while the disk works: one `fdatasync`
//! serves every batch committed before it started (group commit across batches, as PostgreSQL's
//! WAL flush does). What SQLite's `synchronous=FULL` would do inside the commit, the syncer does
//! beside it, so the disk's latency is not also the writer's. After a power loss SQLite's recovery
//! keeps every commit whose frames are on disk: every answered delivery.
//!
//! Checkpoints (copying the WAL into the database) are kept off the writer: its connection has
//! `wal_autocheckpoint=0`, and a checkpointer task runs a `PASSIVE` checkpoint from the pool every
//! [`CHECKPOINT_EVERY`] while deliveries come in. Under a load that never pauses, a passive
//! checkpoint may never catch up with the writer, and the WAL could only grow; when the WAL holds
//! more than [`WAL_FRAMES_BEFORE_WRITER_CHECKPOINT`] frames after a checkpoint, the writer copies
//! the little that is left itself between two batches, so its next transaction starts the WAL over.
//!
//! A delivery is stored once per repository: a redelivery (the same delivery id) or a replay (the same
//! body, by its SHA-256, under a new delivery id) is counted on the stored event and queues nothing.
//!
//! A full queue (by count, or by the bytes of the bodies waiting) refuses at once: the handler answers
//! 503 with `Retry-After`, never an unbounded backlog.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::build::queue::BuildQueue;
use crate::db::{self, repos::RepoRow, sources::SourceRow};
use crate::domain::rules::{
    BuildPlan, GitRef, PlanContext, PushEvent, RuleOutcome, RuleSpec, plan_builds,
};
use crate::forge::Outcome;

/// Deliveries stored in one transaction at most.
pub const MAX_BATCH: usize = 256;

/// Bodies up to this size are compressed on the handler's thread; larger ones on the blocking pool.
const COMPRESS_INLINE_LIMIT: usize = 64 * 1024;

/// How often the checkpointer copies the WAL into the database while deliveries come in.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// WAL frames (pages) beyond which the writer copies the rest itself when the checkpointer could
/// not copy them all: 16k frames of 4 KiB, 64 MiB.
pub const WAL_FRAMES_BEFORE_WRITER_CHECKPOINT: i64 = 16 * 1024;

/// A delivery whose signature matched these sources, ready to store.
pub struct Delivery {
    pub provider: &'static str,
    pub delivery_id: String,
    pub event: String,
    pub outcome: Outcome,
    /// The body as received; [`IngestQueue::submit`] takes it to compress it for the events table.
    pub body: Bytes,
    /// The SHA-256 of `body` (hex), computed by the handler: a replay of a stored body under a new
    /// delivery id is a duplicate, like a redelivery.
    pub body_sha256: String,
    pub sources: Vec<SourceRow>,
}

/// What storing a delivery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Builds queued, over every source.
    pub build_ids: Vec<String>,
    /// Sources for which this delivery id, or this body, was stored already (a redelivery or a
    /// replay).
    pub duplicates: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the ingest queue is full")]
    Full,
    #[error("kiln is shutting down")]
    Closed,
    #[error("cannot store the delivery: {0}")]
    Failed(String),
    #[error("cannot store the delivery: the disk is full")]
    StorageFull,
}

impl SubmitError {
    /// The writer's failure to store, as the handler answers it (a full disk is not our bug).
    fn stored(e: &WriteError) -> SubmitError {
        if e.is_storage_full() {
            SubmitError::StorageFull
        } else {
            SubmitError::Failed(e.to_string())
        }
    }
}

struct Job {
    delivery: Delivery,
    /// The body as the events table keeps it (compressed by the handler, not the writer).
    payload: db::events::StoredPayload,
    reply: oneshot::Sender<Result<Stored, SubmitError>>,
    _bytes: OwnedSemaphorePermit,
}

/// The handlers' side of the queue.
pub struct IngestQueue {
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    /// Permits are KiB of bodies waiting in the queue.
    bytes: Arc<Semaphore>,
    budget_kib: u32,
}

impl IngestQueue {
    /// A queue of at most `capacity` deliveries and `byte_budget` bytes of bodies.
    pub fn new(capacity: usize, byte_budget: usize) -> IngestQueue {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let budget_kib = u32::try_from(byte_budget / 1024).unwrap_or(u32::MAX).max(1);
        IngestQueue {
            tx,
            rx: Mutex::new(Some(rx)),
            bytes: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
        }
    }

    /// Queues a delivery and waits until the transaction that stores it is committed.
    pub async fn submit(&self, mut delivery: Delivery) -> Result<Stored, SubmitError> {
        let kib = u32::try_from(delivery.body.len() / 1024 + 1)
            .unwrap_or(u32::MAX)
            .min(self.budget_kib);
        let bytes = self
            .bytes
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| SubmitError::Full)?;
        // The writer needs only the compressed body: the handler's thread compresses it (a large
        // one on the blocking pool, as its verification was).
        let body = std::mem::take(&mut delivery.body);
        let payload = if body.len() <= COMPRESS_INLINE_LIMIT {
            db::events::StoredPayload::compress(&body)
        } else {
            tokio::task::spawn_blocking(move || db::events::StoredPayload::compress(&body))
                .await
                .map_err(|e| SubmitError::Failed(format!("compressing the body failed: {e}")))?
        };
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Job {
                delivery,
                payload,
                reply,
                _bytes: bytes,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::Full,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
            })?;
        answer.await.map_err(|_| SubmitError::Closed)?
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<Job>> {
        self.rx.lock().expect("ingest receiver poisoned").take()
    }
}

/// What the writer needs besides its connection.
struct Writer {
    conn: SqliteConnection,
    /// To open the connection again when a failed transaction left it unusable (a full disk).
    database_url: String,
    registry: String,
    builds: Arc<BuildQueue>,
    /// Batches committed and waiting for their WAL frames to reach the disk.
    committed: mpsc::UnboundedSender<Committed>,
    /// Shared with the checkpointer.
    wal: Arc<WalState>,
    /// Repositories and rules, from batch to batch.
    repos: RepoCache,
}

/// What the writer and the checkpointer share.
#[derive(Default)]
struct WalState {
    /// Batches committed so far: the checkpointer skips its turn when nothing new was written.
    commits: AtomicU64,
    /// The checkpointer left more than [`WAL_FRAMES_BEFORE_WRITER_CHECKPOINT`] frames behind.
    lagging: AtomicBool,
}

/// A delivery's answer and where it goes.
type Answer = (
    oneshot::Sender<Result<Stored, SubmitError>>,
    Result<Stored, SubmitError>,
);

/// A committed batch's answers, given once its WAL frames are on disk.
struct Committed(Vec<Answer>);

/// Opens the writer's own connection and starts it, its syncer and its checkpointer. They stop
/// when `stop` is cancelled; deliveries still waiting then are answered "shutting down" (503),
/// never stored half.
pub async fn start(app: &App, stop: CancellationToken) -> anyhow::Result<()> {
    let rx = app
        .ingest
        .take_receiver()
        .ok_or_else(|| anyhow::anyhow!("the ingest writer is already running"))?;
    let mut conn = db::connect_writer(&app.config.database_url).await?;
    let wal_file = WalFile::open(db::wal_path(&mut conn).await?)?;
    let (committed, to_sync) = mpsc::unbounded_channel();
    let wal = Arc::new(WalState::default());
    let writer = Writer {
        conn,
        database_url: app.config.database_url.clone(),
        registry: app.config.registry.clone(),
        builds: app.builds.clone(),
        committed,
        wal: wal.clone(),
        repos: RepoCache::default(),
    };
    // The writer is the one serial step of ingest: on its own thread (with a runtime of its own) it
    // is never queued behind the handlers' tasks between its round trips to SQLite.
    let writer_stop = stop.clone();
    std::thread::Builder::new()
        .name("kiln-ingest".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(writer.run(rx, writer_stop)),
                Err(e) => tracing::error!(error = %e, "cannot start the ingest writer's runtime"),
            }
        })?;
    std::thread::Builder::new()
        .name("kiln-wal-sync".into())
        .spawn(move || sync_and_answer(to_sync, wal_file))?;
    tokio::spawn(checkpoints(app.db.clone(), wal, stop));
    Ok(())
}

/// The database's WAL file, opened to be synced.
struct WalFile {
    path: PathBuf,
    file: std::fs::File,
}

impl WalFile {
    /// Opens the WAL (it exists while any connection has the database open, and the writer's
    /// does) and syncs its directory once, so the file itself is found after a power loss.
    fn open(path: PathBuf) -> anyhow::Result<WalFile> {
        use anyhow::Context;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the WAL {}", path.display()))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("cannot sync {}", dir.display()))?;
        }
        Ok(WalFile { path, file })
    }

    /// `fdatasync`.
    fn sync(&self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("cannot sync {}: {e}", self.path.display()))
    }
}

/// Answers committed batches once their frames are on disk: each `fdatasync` covers every batch
/// that was committed before it started, however many arrived while the previous one ran. A failed
/// sync answers its batches with an error (a redelivery of a delivery that was stored after all is a
/// duplicate, not lost). Runs on a thread of its own (it blocks on the disk) until the writer ends.
fn sync_and_answer(mut committed: mpsc::UnboundedReceiver<Committed>, wal: WalFile) {
    let mut waiting = Vec::new();
    while let Some(first) = committed.blocking_recv() {
        waiting.push(first);
        while let Ok(more) = committed.try_recv() {
            waiting.push(more);
        }
        let synced = wal.sync();
        if let Err(e) = &synced {
            tracing::error!(error = %e, "committed deliveries could not be made durable");
        }
        for Committed(answers) in waiting.drain(..) {
            for (reply, result) in answers {
                let result = match (&synced, result) {
                    (Err(e), Ok(_)) => Err(SubmitError::Failed(e.clone())),
                    (_, result) => result,
                };
                // The handler may have gone (client hung up): its delivery is stored all the same.
                let _ = reply.send(result);
            }
        }
    }
}

/// Copies the WAL into the database from the pool while deliveries come in (see the module's
/// doc); asks the writer to finish the job when a checkpoint leaves too much behind.
async fn checkpoints(db: db::Db, wal: Arc<WalState>, stop: CancellationToken) {
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        let commits = wal.commits.load(Ordering::Relaxed);
        if commits == seen {
            continue;
        }
        seen = commits;
        match db::checkpoint(&db).await {
            // A WAL copied whole starts over at the writer's next transaction; a long one that
            // could not be (the writer went on meanwhile) is finished by the writer.
            Ok(c) => wal.lagging.store(
                c.wal_frames > WAL_FRAMES_BEFORE_WRITER_CHECKPOINT && c.copied < c.wal_frames,
                Ordering::Relaxed,
            ),
            Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
        }
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                n = rx.recv_many(&mut batch, MAX_BATCH) => if n == 0 { break },
            }
            self.commit(&mut batch).await;
            if self.wal.lagging.swap(false, Ordering::Relaxed) {
                // Only what the checkpointer left: its next transaction starts the WAL over.
                if let Err(e) = db::checkpoint(&mut self.conn).await {
                    tracing::warn!(error = %e, "the ingest writer's checkpoint failed");
                }
            }
        }
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "cannot close the ingest connection");
        }
    }

    /// Stores a batch in one transaction and hands its answers to the syncer. If the batch fails,
    /// each delivery is stored on its own so that one bad delivery cannot refuse the others.
    async fn commit(&mut self, batch: &mut Vec<Job>) {
        let results = match self.store(batch).await {
            Ok(stored) => stored.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::warn!(error = %e, deliveries = batch.len(), "group commit failed; storing one by one");
                let mut results = Vec::with_capacity(batch.len());
                for job in batch.iter() {
                    let result = self.store(std::slice::from_ref(job)).await;
                    results.push(result.map(|mut s| s.remove(0)).map_err(|e| {
                        tracing::error!(error = %e, delivery = %job.delivery.delivery_id, "cannot store a delivery");
                        SubmitError::stored(&e)
                    }));
                }
                results
            }
        };
        self.wal.commits.fetch_add(1, Ordering::Relaxed);
        if results.iter().any(|r: &Result<Stored, SubmitError>| {
            r.as_ref().is_ok_and(|s| !s.build_ids.is_empty())
        }) {
            self.builds.wake_workers();
        }
        let answers = batch
            .drain(..)
            .zip(results)
            .map(|(job, result)| (job.reply, result))
            .collect();
        // The syncer ends only once the writer has gone (its sender is ours).
        let _ = self.committed.send(Committed(answers));
    }

    /// One transaction for the batch; rolled back whole when any part of it fails.
    async fn store(&mut self, jobs: &[Job]) -> Result<Vec<Stored>, WriteError> {
        let result = self.store_in_transaction(jobs).await;
        if result.is_err() {
            self.roll_back().await;
        }
        result
    }

    /// Plans every delivery's event per source and inserts them all, then queues the builds of those
    /// stored (and counts the redeliveries).
    ///
    /// The common batch (its repositories known, nothing to build, no redelivery) is one round
    /// trip to sqlx's worker thread: the writer borrows the connection's handle
    /// ([`SqliteConnection::lock_handle`]) and runs `BEGIN IMMEDIATE`, the inserts and `COMMIT` on
    /// its own thread. Measured under the ingest bench, each round trip cost 0.2–0.35 ms of
    /// waiting on a busy machine, and a batch made five of them.
    async fn store_in_transaction(&mut self, jobs: &[Job]) -> Result<Vec<Stored>, WriteError> {
        let known = {
            let mut handle = self.conn.lock_handle().await?;
            let repos = &mut self.repos;
            on_handle(&mut handle, |sqlite| {
                sqlite.execute_batch("BEGIN IMMEDIATE")?;
                let version = sqlite.query_row("PRAGMA data_version", [], |r| r.get(0))?;
                repos.keep_if_unchanged(version);
                if repos.missing(jobs).is_empty() {
                    insert_batch(sqlite, repos, jobs).map(Some)
                } else {
                    Ok(None)
                }
            })?
        };
        let Inserted {
            planned,
            stored: ids,
            committed,
        } = match known {
            Some(inserted) => inserted,
            None => {
                // Repositories not read since another connection last wrote: through sqlx, in the
                // same transaction, then back on the handle.
                for id in self.repos.missing(jobs) {
                    self.repos.load(&mut self.conn, &id).await?;
                }
                let mut handle = self.conn.lock_handle().await?;
                let repos = &self.repos;
                on_handle(&mut handle, |sqlite| insert_batch(sqlite, repos, jobs))?
            }
        };
        let mut stored = vec![Stored::default(); jobs.len()];
        // Only what `insert_batch` left to do (nothing, when it committed).
        for (i, p) in planned.iter().filter(|(_, p)| p.follows_up(&ids)) {
            let (i, d) = (*i, &jobs[*i].delivery);
            if ids.contains(&p.event_id) {
                let ids = queue_builds(&mut self.conn, &self.registry, p).await?;
                stored[i].build_ids.extend(ids);
            } else {
                db::events::count_duplicate(
                    &mut self.conn,
                    d.provider,
                    &d.delivery_id,
                    &d.body_sha256,
                    &p.repo.0.id,
                )
                .await?;
                stored[i].duplicates += 1;
            }
        }
        if !committed {
            sqlx::raw_sql("COMMIT").execute(&mut self.conn).await?;
        }
        Ok(stored)
    }

    /// Ends a failed batch's transaction, if SQLite has not ended it already (a failed `COMMIT` on a
    /// full disk may have). A connection that cannot end it is replaced, so the writer stores again
    /// once the cause (a full disk) is gone.
    async fn roll_back(&mut self) {
        let clean = match self.conn.lock_handle().await {
            Ok(mut handle) => on_handle(&mut handle, |sqlite| {
                if !sqlite.is_autocommit()
                    && let Err(e) = sqlite.execute_batch("ROLLBACK")
                {
                    tracing::warn!(error = %e, "cannot roll the failed batch back");
                }
                Ok(sqlite.is_autocommit())
            })
            .unwrap_or(false),
            Err(_) => false,
        };
        if clean {
            return;
        }
        match db::connect_writer(&self.database_url).await {
            Ok(conn) => {
                tracing::warn!(
                    "the ingest connection could not end its transaction; opened a new one"
                );
                let stuck = std::mem::replace(&mut self.conn, conn);
                let _ = stuck.close_hard().await;
                // `data_version` is the connection's own count.
                self.repos = RepoCache::default();
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot open a new ingest connection; keeping the old one")
            }
        }
    }
}

/// Why the writer could not store a batch: from sqlx, or from the statements it runs on the
/// connection's handle.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl WriteError {
    fn is_storage_full(&self) -> bool {
        match self {
            WriteError::Sqlx(e) => db::is_storage_full(e),
            WriteError::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
        }
    }
}

/// Runs `f` with the writer's connection as rusqlite sees it, on this thread, while `handle` keeps
/// sqlx's worker thread off it.
fn on_handle<R>(
    handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>,
    f: impl FnOnce(&rusqlite::Connection) -> Result<R, WriteError>,
) -> Result<R, WriteError> {
    // SAFETY: the handle is open and stays open while it is locked (sqlx closes it only when the
    // connection goes, which the borrow behind `handle` prevents); no other thread uses it while the
    // lock is held; the rusqlite connection does not own it (it never closes it) and is dropped
    // here, before the lock, with the statements it prepared.
    let sqlite = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }?;
    f(&sqlite)
}

/// A batch's events, inserted.
struct Inserted {
    /// Each planned event, with the index of its delivery in the batch.
    planned: Vec<(usize, PlannedEvent)>,
    /// The ids of the events stored (the others were redeliveries or replays).
    stored: HashSet<String>,
    /// Committed already: nothing was left to do in the transaction.
    committed: bool,
}

/// Plans and inserts a batch's events on the handle, and commits when nothing else is to be done
/// in the transaction (no build to queue, no duplicate to count).
fn insert_batch(
    sqlite: &rusqlite::Connection,
    repos: &RepoCache,
    jobs: &[Job],
) -> Result<Inserted, WriteError> {
    let mut planned = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        for source in &job.delivery.sources {
            if let Some(repo) = repos.get(&source.repository_id) {
                planned.push((i, plan_event(repo, &job.delivery)));
            }
        }
    }
    let rows: Vec<db::events::NewEvent> = planned
        .iter()
        .map(|(i, p)| p.row(&jobs[*i].delivery, &jobs[*i].payload))
        .collect();
    let stored = db::events::insert_new(sqlite, &rows)?;
    drop(rows);
    let rest = planned.iter().any(|(_, p)| p.follows_up(&stored));
    if !rest {
        sqlite.execute_batch("COMMIT")?;
    }
    Ok(Inserted {
        planned,
        stored,
        committed: !rest,
    })
}

/// Repositories and their rules as the writer read them (None: gone), kept from batch to batch
/// while no other connection has committed. Only other connections write repositories and rules;
/// SQLite's `PRAGMA data_version`, read inside each batch's transaction, changes exactly when one
/// has committed since the previous read, and then the cache starts over.
#[derive(Default)]
struct RepoCache {
    version: Option<i64>,
    repos: HashMap<String, Option<Arc<RepoEntry>>>,
}

impl RepoCache {
    /// Repositories kept at most: beyond, the cache starts over.
    const MAX: usize = 4096;

    fn keep_if_unchanged(&mut self, version: i64) {
        if self.version != Some(version) || self.repos.len() > Self::MAX {
            self.repos.clear();
            self.version = Some(version);
        }
    }

    /// The batch's repositories not read yet.
    fn missing(&self, jobs: &[Job]) -> Vec<String> {
        let mut ids: Vec<String> = jobs
            .iter()
            .flat_map(|j| &j.delivery.sources)
            .map(|s| &s.repository_id)
            .filter(|id| !self.repos.contains_key(*id))
            .cloned()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Reads a repository and its rules (None: gone since the delivery was verified).
    async fn load(
        &mut self,
        conn: &mut SqliteConnection,
        repository_id: &str,
    ) -> Result<(), sqlx::Error> {
        let entry = match db::repos::by_id(&mut *conn, repository_id).await? {
            Some(repo) => {
                let rules = db::rules::list(&mut *conn, repository_id).await?;
                Some(Arc::new((repo, rules.iter().map(|r| r.spec()).collect())))
            }
            None => None,
        };
        self.repos.insert(repository_id.to_string(), entry);
        Ok(())
    }

    fn get(&self, repository_id: &str) -> Option<&Arc<RepoEntry>> {
        self.repos.get(repository_id)?.as_ref()
    }
}

/// A repository and the specs of its rules, as the writer plans with them.
type RepoEntry = (RepoRow, Vec<RuleSpec>);

/// One source's share of a delivery, planned: its event row and the builds its rules make.
struct PlannedEvent {
    event_id: String,
    repo: Arc<RepoEntry>,
    summary: String,
    git_ref: Option<String>,
    commit: Option<String>,
    plan_json: String,
    builds: Vec<BuildPlan>,
    /// The push's `before`, for path filters.
    before: Option<String>,
}

impl PlannedEvent {
    /// Whether the transaction has more to do for this event after the inserts: queue its builds
    /// (stored, with builds planned), or count a redelivery (not stored).
    fn follows_up(&self, stored: &HashSet<String>) -> bool {
        !stored.contains(&self.event_id) || !self.builds.is_empty()
    }

    fn row<'a>(
        &'a self,
        d: &'a Delivery,
        payload: &'a db::events::StoredPayload,
    ) -> db::events::NewEvent<'a> {
        db::events::NewEvent {
            id: &self.event_id,
            repository_id: &self.repo.0.id,
            provider: d.provider,
            delivery_id: &d.delivery_id,
            kind: &d.event,
            git_ref: self.git_ref.as_deref(),
            commit_sha: self.commit.as_deref(),
            outcome: &self.summary,
            plan: &self.plan_json,
            payload,
            body_sha256: &d.body_sha256,
        }
    }
}

/// Plans one source's share of a delivery.
fn plan_event(entry: &Arc<RepoEntry>, d: &Delivery) -> PlannedEvent {
    let (repo, specs) = (&entry.0, &entry.1);
    let (summary, git_ref, commit, plan) = match &d.outcome {
        Outcome::Ping => ("ping".to_string(), None, None, None),
        Outcome::Ignore(why) => (why.clone(), None, None, None),
        Outcome::Push(p) if p.deleted => (
            "ref deleted: nothing to build".into(),
            Some(&p.git_ref),
            None,
            None,
        ),
        Outcome::Push(p) => match GitRef::parse(&p.git_ref) {
            None => (
                format!("{} is neither a branch nor a tag", p.git_ref),
                Some(&p.git_ref),
                Some(&p.commit),
                None,
            ),
            Some(git_ref) => {
                let push = PushEvent {
                    git_ref,
                    commit: p.commit.clone(),
                    message: p.message.clone(),
                    date: chrono::Utc::now().date_naive(),
                };
                let plan = plan_builds(
                    specs,
                    &push,
                    &PlanContext {
                        repository_hidden: repo.hidden,
                    },
                );
                let summary = format!(
                    "{} build(s) planned from {} rule(s)",
                    plan.builds.len(),
                    specs.len()
                );
                (summary, Some(&p.git_ref), Some(&p.commit), Some(plan))
            }
        },
    };
    let plan_json = plan
        .as_ref()
        .map_or_else(|| "[]".to_string(), |p| decisions_json(&p.outcomes));
    // Builds need both the ref and the commit.
    let builds = match (plan, git_ref, commit) {
        (Some(plan), Some(_), Some(_)) => plan.builds,
        _ => vec![],
    };
    let before = match &d.outcome {
        Outcome::Push(p) => Some(p.before.clone()),
        _ => None,
    };
    PlannedEvent {
        before,
        event_id: db::new_id(),
        repo: entry.clone(),
        summary,
        git_ref: git_ref.cloned(),
        commit: commit.cloned(),
        plan_json,
        builds,
    }
}

/// Queues the builds of a stored event. A newer push supersedes the same rule's queued builds of
/// that ref.
async fn queue_builds(
    conn: &mut SqliteConnection,
    registry: &str,
    p: &PlannedEvent,
) -> Result<Vec<String>, sqlx::Error> {
    let (Some(git_ref), Some(commit)) = (&p.git_ref, &p.commit) else {
        return Ok(vec![]);
    };
    let repo = &p.repo.0;
    let image = crate::app::image_name(registry, &repo.namespace, &repo.name);
    let mut ids = Vec::with_capacity(p.builds.len());
    for b in &p.builds {
        let settings = p
            .repo
            .1
            .iter()
            .find(|r| r.id == b.rule_id)
            .map(|r| r.settings.clone())
            .unwrap_or_default();
        // Superseding queued builds of the rule: diff from the oldest one's `before`, so the files
        // that push changed still count (path filters).
        let before = match db::builds::queued_before(conn, &repo.id, &b.rule_id, git_ref).await? {
            Some(oldest) => oldest,
            None => p.before.clone(),
        };
        let id = db::builds::insert(
            conn,
            &db::builds::NewBuild {
                repository_id: &repo.id,
                rule_id: Some(&b.rule_id),
                event_id: Some(&p.event_id),
                trigger: "push",
                git_ref,
                commit_sha: Some(commit),
                tag: Some(&b.tag),
                image: Some(&format!("{image}:{}", b.tag)),
                dockerfile: &b.dockerfile,
                context: &b.context,
                version: &b.version,
                overwrite: true,
                settings: &settings,
                before_sha: before.as_deref(),
            },
        )
        .await?;
        db::builds::supersede_queued(conn, &repo.id, &b.rule_id, git_ref, &id).await?;
        ids.push(id);
    }
    Ok(ids)
}

/// What each rule decided, as the "why didn't it build?" view shows it: the outcome plus a sentence.
pub fn decisions_json(outcomes: &[RuleOutcome]) -> String {
    let decisions: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            let skipped = o.skipped.as_ref().map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_else(|_| serde_json::json!({}));
                v["message"] = serde_json::json!(r.message());
                v
            });
            serde_json::json!({"rule_id": o.rule_id, "matched": o.matched, "tag": o.tag, "skipped": skipped})
        })
        .collect();
    serde_json::Value::Array(decisions).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(body_len: usize) -> Delivery {
        Delivery {
            provider: "github",
            delivery_id: "d".into(),
            event: "ping".into(),
            outcome: Outcome::Ping,
            body: Bytes::from(vec![b'x'; body_len]),
            body_sha256: String::new(),
            sources: vec![],
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        // No writer runs: the queue fills and stays full.
        let queue = Arc::new(IngestQueue::new(2, 1 << 20));
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let q = queue.clone();
            waiting.push(tokio::spawn(async move { q.submit(delivery(10)).await }));
        }
        // Both are queued once the channel holds them.
        for _ in 0..100 {
            if queue.tx.capacity() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(queue.tx.capacity(), 0);
        assert!(matches!(
            queue.submit(delivery(10)).await,
            Err(SubmitError::Full)
        ));
        // Dropping the receiver (the writer's end) answers the waiting ones: closed, not stored.
        drop(queue.take_receiver());
        for w in waiting {
            assert!(matches!(w.await.unwrap(), Err(SubmitError::Closed)));
        }
        assert!(matches!(
            queue.submit(delivery(10)).await,
            Err(SubmitError::Closed)
        ));
    }

    #[tokio::test]
    async fn bodies_beyond_the_byte_budget_are_refused() {
        let queue = Arc::new(IngestQueue::new(100, 64 * 1024));
        let q = queue.clone();
        let first = tokio::spawn(async move { q.submit(delivery(60 * 1024)).await });
        for _ in 0..100 {
            if queue.bytes.available_permits() < 64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            queue.submit(delivery(8 * 1024)).await,
            Err(SubmitError::Full)
        ));
        drop(queue.take_receiver());
        assert!(matches!(first.await.unwrap(), Err(SubmitError::Closed)));
    }
}
