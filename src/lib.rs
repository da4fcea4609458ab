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
pub mod registry;
pub mod retention;
pub mod schedules;
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
        build::queue::start_workers(&app, stop.clone()).await?;
        registry::sync::spawn_initial_sync(&app);
        retention::spawn_pruning(&app, stop.clone());
        schedules::spawn_scheduler(&app, stop.clone());
        notify::deliver::start(&app, stop.clone());
        let router = http::router::create_router(app.clone());
        let task = tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Server {
            addr,
            app,
            admin_token,
            task: Some(task),
            stop,
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

impl Drop for Server {
    /// Stops serving and stops the build workers (a running build is dropped: the next start marks it
    /// interrupted).
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
