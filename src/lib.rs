//! kiln: a self-hosted continuous image-build service. See `design.md` for the data flow.

pub mod app;
pub mod build;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod db;
pub mod domain;
pub mod forge;
pub mod http;
pub mod ingest;
pub mod local_sources;
pub mod notify;
pub mod rate_limit;
pub mod registry;
pub mod retention;
pub mod schedules;
pub mod secrets;
pub mod source_index;
pub mod versions;

use anyhow::Context;
use tokio::net::TcpListener;

pub use app::App;
pub use config::Config;

/// A running kiln: its address and the state behind it.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub app: App,
    pub admin_token: Option<String>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    stop: tokio_util::sync::CancellationToken,
    /// Cancelled: the HTTP server finishes the requests it has and stops.
    stop_http: tokio_util::sync::CancellationToken,
    workers: Option<build::queue::Workers>,
    /// Declared last, so it is released only after everything above is dropped.
    _data_dir_lock: data_dir::DataDirLock,
}

impl Server {
    /// Locks the data directory, binds the HTTP listener, opens the database, starts the workers, serves.
    /// Fails when another kiln holds the data directory, before touching anything in it.
    pub async fn start(mut config: Config) -> anyhow::Result<Server> {
        let data_dir_lock = data_dir::DataDirLock::acquire(&config.data_dir)?;
        let listen = config.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        // The default public URL names the address actually bound (KILN_LISTEN may ask for port 0).
        if config.public_url == format!("http://{listen}") {
            config.public_url = format!("http://{addr}");
        }
        let app = App::open(config).await?;
        let admin_token = app.bootstrap_admin_token().await?;
        let stop = tokio_util::sync::CancellationToken::new();
        ingest::start(&app, stop.clone()).await?;
        let workers = build::queue::start_workers(&app, stop.clone()).await?;
        registry::sync::spawn_initial_sync(&app);
        retention::spawn_pruning(&app, stop.clone());
        schedules::spawn_scheduler(&app, stop.clone());
        notify::deliver::start(&app, stop.clone());
        forge::statuses::start(&app, stop.clone());
        let router = http::router::create_router(app.clone());
        let stop_http = tokio_util::sync::CancellationToken::new();
        let graceful = stop_http.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            // The peer's address reaches handlers (the audit log records it).
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(graceful)
            .await
        });
        Ok(Server {
            addr,
            app,
            admin_token,
            task: Some(task),
            stop,
            stop_http,
            workers: Some(workers),
            _data_dir_lock: data_dir_lock,
        })
    }

    /// Serves until the process is stopped.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        match self.task.take() {
            Some(task) => task
                .await
                .context("server task failed")?
                .context("server failed"),
            None => Ok(()),
        }
    }
}

impl Server {
    /// Serves until `signal` resolves, then shuts down gracefully (see [`Server::shutdown`]).
    pub async fn serve_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        tokio::select! {
            r = &mut task => return r.context("server task failed")?.context("server failed"),
            () = signal => {}
        }
        self.task = Some(task);
        self.shutdown().await;
        Ok(())
    }

    /// A graceful stop: workers claim no new build; running builds get `KILN_SHUTDOWN_GRACE_SECS` to
    /// finish, then are stopped and queued again (they run again at the next start). The HTTP server keeps
    /// answering meanwhile (status, logs, cancels; hooks and "build now" still queue builds, which the next
    /// start runs), then finishes the requests it has (at most 5 s more) and stops; the other tasks stop
    /// and the database is closed.
    pub async fn shutdown(&mut self) {
        let grace = self.app.config.shutdown_grace;
        if let Some(workers) = self.workers.take() {
            tracing::info!(
                grace_secs = grace.as_secs(),
                "stopping: no new builds start; running builds may finish within the grace period"
            );
            let drained = workers.drain(&self.app, grace).await;
            tracing::info!(stopped = drained.stopped, "build workers stopped");
        }
        self.stop_http.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            // Long-lived answers (a followed log) would keep it open: end them.
            task.abort();
        }
        self.stop.cancel();
        self.app.db.close().await;
    }
}

impl Drop for Server {
    /// Stops serving and stops the build workers at once (a running build is dropped: the next start
    /// queues it again).
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
