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
    /// sources; unset, none is allowed. KILN_SECRET_KEY (base64 or 64 hex digits of 32 bytes) encrypts
    /// the secrets kept in the database; unset, the key is {KILN_DATA_DIR}/secret.key, created at
    /// first start (see `kiln secrets rotate`). kiln is the registry's token server (GET /registry/token):
    /// KILN_REGISTRY_TOKEN_ISSUER, KILN_REGISTRY_TOKEN_SERVICE (both `kiln`),
    /// KILN_REGISTRY_TOKEN_LIFETIME_SECS (300), KILN_REGISTRY_ANONYMOUS_PULL (false).
    /// KILN_RATE_LIMIT_PER_MINUTE / KILN_RATE_LIMIT_BURST (failed
    /// hooks, sign-ins and API tokens per address before 429, default 30 a minute, 10 at once; 0: off).
    /// KILN_BUILD_MEMORY (e.g. 2g, at most 2g; default none), KILN_BUILD_CPU_SHARES (2-262144; default
    /// the daemon's), KILN_BUILD_NETWORK (default, none or host: the network of RUN steps).
    Serve {
        /// TOML configuration file (see examples/kiln.toml).
        #[arg(long, short, env = "KILN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Manage the key kiln's stored secrets are encrypted with (run with kiln stopped).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    #[command(flatten)]
    Client(kiln::cli::ClientCommand),
    /// kiln as the registry's token server: the key tokens are signed with.
    #[command(subcommand)]
    RegistryAuth(RegistryAuthCommand),
}

#[derive(Subcommand)]
enum RegistryAuthCommand {
    /// Make the registry token key and its certificate in the data directory when missing (kiln
    /// also does at start), and print the certificate's path: the registry's
    /// `auth.token.rootcertbundle`. Reads KILN_DATA_DIR (or --config) like `kiln serve`.
    Init {
        /// TOML configuration file (see examples/kiln.toml).
        #[arg(long, short, env = "KILN_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Re-encrypt every stored secret (sources' webhook secrets and git credentials, webhooks'
    /// secrets) with a new key, in one transaction. The new key is KILN_NEW_SECRET_KEY (base64 or
    /// 64 hex digits of 32 bytes), or a new random one. With the key file in the data directory, the
    /// file is replaced; with KILN_SECRET_KEY, set it to the new key before starting kiln again (a
    /// generated key is printed once).
    Rotate {
        /// TOML configuration file (see examples/kiln.toml).
        #[arg(long, short, env = "KILN_CONFIG")]
        config: Option<PathBuf>,
    },
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
        // Every secret kiln knows is masked (`***`) in every line, at every level.
        .with_writer(kiln::secrets::mask::MaskingWriter::new(std::io::stderr));
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
        Command::Secrets(SecretsCommand::Rotate { config }) => {
            init_tracing();
            rotate_secret_key(config).await
        }
        Command::Client(command) => return kiln::cli::run(command).await,
        Command::RegistryAuth(RegistryAuthCommand::Init { config }) => registry_auth_init(config),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {}", kiln::secrets::mask::mask(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

fn registry_auth_init(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = kiln::Config::load(config_path.as_deref(), &kiln::config::ProcessEnv)?;
    let key = kiln::registry::token_key::load_or_create(&config.data_dir)?;
    println!("{}", key.cert_path.display());
    Ok(())
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

async fn rotate_secret_key(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = kiln::Config::load(config_path.as_deref(), &kiln::config::ProcessEnv)?;
    let new_key = match std::env::var("KILN_NEW_SECRET_KEY") {
        Ok(text) => Some(
            kiln::secrets::SecretKey::parse(&text)
                .map_err(|e| anyhow::anyhow!("KILN_NEW_SECRET_KEY: {e}"))?,
        ),
        Err(_) => None,
    };
    let rotated = kiln::secrets::rotation::rotate_key(&config, new_key).await?;
    let count = rotated.resealed.rotated + rotated.resealed.encrypted;
    match (&rotated.key_file, &rotated.generated) {
        (Some(path), _) => println!(
            "kiln: {count} secrets re-encrypted; the new key is in {}",
            path.display()
        ),
        (None, Some(key)) => println!(
            "kiln: {count} secrets re-encrypted with a new key (shown only now): set KILN_SECRET_KEY \
             to it before starting kiln again:\n\n    {}\n",
            key.encode()
        ),
        (None, None) => println!(
            "kiln: {count} secrets re-encrypted: set KILN_SECRET_KEY to KILN_NEW_SECRET_KEY's value \
             before starting kiln again"
        ),
    }
    Ok(())
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
