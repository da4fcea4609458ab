use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kiln: continuous image builds. A signed git push in, an image in your registry out.
#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about,
    long_about = None,
    after_help = "`kiln serve` runs the service. Every other command is a client of a running kiln: it \
                  talks to KILN_URL (default http://127.0.0.1:8080) with the API token in KILN_TOKEN, \
                  prints tables for people and, with --json, JSON for scripts, and exits 0 only on \
                  success."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service in the foreground (HTTP API, inbound hooks, build workers).
    ///
    /// Every setting can come from a TOML file (--config) and is overridden by its KILN_* variable:
    /// KILN_LISTEN, KILN_DATA_DIR, KILN_DATABASE_URL, KILN_REGISTRY, KILN_REGISTRY_URL,
    /// KILN_REGISTRY_USERNAME, KILN_REGISTRY_PASSWORD, KILN_ADMIN_TOKEN, KILN_REGISTRY_EVENTS_TOKEN,
    /// KILN_PUBLIC_URL, KILN_BUILD_WORKERS, KILN_REPO_BUILD_LIMIT (builds of one repository at once, default 1),
    /// KILN_BUILD_TIMEOUT_MINUTES (a rule's default; KILN_BUILD_TIMEOUT_SECS wins when set),
    /// KILN_SHUTDOWN_GRACE_SECS (on SIGTERM/Ctrl-C, how long running builds may
    /// finish before they are stopped and queued again, default 60), KILN_HOOK_QUEUE (verified hook deliveries
    /// waiting to be stored; beyond it hooks answer 503 with Retry-After). DOCKER_HOST picks the Docker daemon;
    /// KILN_BUILD_WAIT_WHEN_DOWN_SECS (default 300) is how long a build waits for it or the registry.
    /// KILN_LOCAL_SOURCES (`:`-separated directories) allows local git repositories under them as
    /// sources; unset, none is allowed.
    Serve {
        /// TOML configuration file (see examples/kiln.toml).
        #[arg(long, short, env = "KILN_CONFIG")]
        config: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(kiln::cli::ClientCommand),
}

/// Logs go to standard error: as JSON with `KILN_LOG_FORMAT=json`, otherwise as text, coloured only
/// when standard error is a terminal (never in a file, a pipe or journald) and `NO_COLOR` is unset.
fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,sqlx=warn"));
    let json = std::env::var("KILN_LOG_FORMAT").is_ok_and(|v| v == "json");
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => {
            init_tracing();
            serve(config).await
        }
        Command::Client(command) => return kiln::cli::run(command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = kiln::Config::load(config_path.as_deref(), &kiln::config::ProcessEnv)?;
    let server = kiln::Server::start(config).await?;
    if let Some(token) = &server.admin_token {
        // Printed once, on the terminal only: it is stored hashed and never logged.
        println!("kiln: generated an admin token (shown only now, keep it):\n\n    {token}\n");
    }
    tracing::info!(addr = %server.addr, registry = %server.app.config.registry, "kiln is serving");
    server
        .serve_until(async {
            stop_signal().await;
            // A second signal while builds get their grace period: stop now. What was running goes
            // back to the queue at the next start, as after a crash.
            tokio::spawn(async {
                stop_signal().await;
                tracing::warn!("second stop signal: stopping now");
                std::process::exit(130);
            });
        })
        .await
}

/// SIGTERM (service managers, `docker stop`) or Ctrl-C.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
