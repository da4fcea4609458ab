//! `App`: the state that handlers and workers share.

use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::build::docker::DockerClient;
use crate::build::queue::BuildQueue;
use crate::config::Config;
use crate::db::{self, Db};
use crate::http::auth;
use crate::ingest::IngestQueue;
use crate::notify::deliver::Notifier;
use crate::registry::client::RegistryClient;
use crate::registry::token::TokenIssuer;
use crate::source_index::SourceIndex;

/// The shared state, behind one `Arc`: a handler's copy of it (axum clones the state into every
/// request) is one reference count, not a copy of each part.
#[derive(Clone)]
pub struct App(Arc<AppState>);

impl std::ops::Deref for App {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.0
    }
}

pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub docker: DockerClient,
    pub registry: RegistryClient,
    pub builds: Arc<BuildQueue>,
    pub notifier: Arc<Notifier>,
    /// Verified hook deliveries on their way to the ingest writer.
    pub ingest: Arc<IngestQueue>,
    /// The sources hooks are routed to, in memory; invalidate after writing sources.
    pub sources: Arc<SourceIndex>,
    /// SHA-256 of `KILN_ADMIN_TOKEN`, when set.
    pub admin_token_hash: Option<String>,
    /// Encrypts and decrypts the secrets kept in the database (`crate::secrets`).
    pub secrets: crate::secrets::Cipher,
    /// Signs the registry's tokens (kiln is its token server; issue 11).
    pub registry_tokens: Arc<TokenIssuer>,
    /// Per-address budgets of failed requests on the unauthenticated surfaces (issue 11).
    pub rate_limits: Arc<crate::rate_limit::RateLimits>,
}

impl App {
    /// Opens the database (migrating it), prepares the data dir and the clients. Fails fast with one clear
    /// line when the database cannot be opened; Docker and the registry are only checked when used.
    pub async fn open(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        std::fs::create_dir_all(config.mirrors_dir())
            .with_context(|| format!("cannot create {}", config.mirrors_dir().display()))?;
        let db = db::connect(&config.database_url).await?;
        move_credentials_out_of_clone_urls(&db, &config.mirrors_dir()).await?;
        let secrets = open_secrets(&db, &config).await?;
        static GIT_TIMEOUTS: std::sync::Once = std::sync::Once::new();
        GIT_TIMEOUTS.call_once(|| {
            if let Err(e) = crate::build::git::set_network_timeouts() {
                tracing::warn!(error = %e, "cannot set git network timeouts");
            }
            if let Err(e) = crate::build::git::bound_object_reads() {
                tracing::warn!(error = %e, "cannot bound libgit2's pack windows");
            }
        });
        let registry_tokens = Arc::new(registry_token_issuer(&config)?);
        let registry = RegistryClient::new(
            &config.registry_url,
            config.registry_username.clone(),
            config.registry_password.clone(),
        )?
        .with_page_size(config.registry_page_size)
        .with_token_issuer(registry_tokens.clone());
        let admin_token_hash = config
            .admin_token
            .as_ref()
            .map(|t| auth::hash_token(t.expose_secret()));
        Ok(App(Arc::new(AppState {
            db,
            docker: DockerClient::from_env(),
            registry,
            builds: Arc::new(BuildQueue::default()),
            notifier: Arc::new(Notifier::new(&config)?),
            sources: Arc::new(SourceIndex::default()),
            ingest: Arc::new(IngestQueue::new(
                config.hook_queue,
                (2 * config.hook_body_limit).max(64 << 20),
            )),
            admin_token_hash,
            secrets,
            registry_tokens,
            rate_limits: Arc::new(crate::rate_limit::RateLimits::new(config.rate_limit)),
            config: Arc::new(config),
        })))
    }

    /// With no `KILN_ADMIN_TOKEN` and no admin token stored yet, makes one and returns it (to print once).
    pub async fn bootstrap_admin_token(&self) -> anyhow::Result<Option<String>> {
        if self.admin_token_hash.is_some() {
            return Ok(None);
        }
        let (admins,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM tokens WHERE role = 'admin' AND namespace IS NULL",
        )
        .fetch_one(&self.db)
        .await?;
        if admins > 0 {
            return Ok(None);
        }
        let token = auth::generate_token();
        db::tokens::insert(
            &self.db,
            &db::tokens::NewToken {
                name: "admin (generated at first start)",
                namespace: None,
                role: "admin",
                token_hash: &auth::hash_token(&token),
                expires_at: None,
            },
        )
        .await?;
        Ok(Some(token))
    }

    /// `{registry}/{namespace}/{repo}`.
    pub fn image_name(&self, namespace: &str, repo: &str) -> String {
        image_name(&self.config.registry, namespace, repo)
    }
}

/// The registry token issuer, with the key in the data directory (made at first start).
pub fn registry_token_issuer(config: &Config) -> anyhow::Result<TokenIssuer> {
    let key = crate::registry::token_key::load_or_create(&config.data_dir)?;
    Ok(TokenIssuer::new(
        &key.pkcs8_der,
        &key.public_key_der,
        crate::registry::token::IssuerSettings {
            issuer: config.registry_token_issuer.clone(),
            service: config.registry_token_service.clone(),
            lifetime: config.registry_token_lifetime,
            anonymous_pull: config.registry_anonymous_pull,
        },
    ))
}

/// `{registry}/{namespace}/{repo}`: the name images of a repository are pushed as.
pub fn image_name(registry: &str, namespace: &str, repo: &str) -> String {
    format!("{registry}/{namespace}/{repo}")
}

/// The key (configured, or the key file's, created at first start), the secrets of an older
/// database encrypted, every encrypted one checked to open. The configuration's secrets are
/// registered with the masker. Fails, naming the row and where the key came from, when a stored
/// secret does not open with the key (a key file created just now is removed again).
async fn open_secrets(db: &Db, config: &Config) -> anyhow::Result<crate::secrets::Cipher> {
    use crate::secrets::{self, key::KeySource};
    let configured = [
        config.registry_password.as_ref(),
        config.admin_token.as_ref(),
        config.registry_events_token.as_ref(),
    ];
    secrets::mask::register_all(configured.into_iter().flatten().map(|s| s.expose_secret()));
    let (key, source) = secrets::key::load_or_create(config.secret_key.as_ref(), &config.data_dir)?;
    let cipher = secrets::Cipher::new(&key);
    match secrets::upgrade::seal_plaintext(db, &cipher, &source).await {
        Ok(done) => {
            if done.encrypted > 0 {
                tracing::info!(
                    encrypted = done.encrypted,
                    "plaintext secrets of an older kiln encrypted"
                );
            }
            Ok(cipher)
        }
        Err(e) => {
            if let KeySource::Created(path) = &source {
                let _ = std::fs::remove_file(path);
            }
            let mut e = e.context("cannot open the secrets kept in the database");
            let pending = secrets::key::key_file(&config.data_dir).with_extension("key.new");
            if pending.exists() {
                e = e.context(format!(
                    "{} exists: a `kiln secrets rotate` may have stopped after re-encrypting the \
                     secrets with it; if so, move it over {}",
                    pending.display(),
                    secrets::key::KEY_FILE
                ));
            }
            Err(e)
        }
    }
}

/// Sources stored before credentials were kept apart hold them in their clone URL: move them to
/// their own column (idempotent, at every start), and remove the mirrors named after those URLs
/// (git may have written the URL into them; the next build fetches into a mirror named after the
/// URL without credentials).
async fn move_credentials_out_of_clone_urls(
    db: &Db,
    mirrors: &std::path::Path,
) -> anyhow::Result<()> {
    let moved = db::sources::move_embedded_credentials(db)
        .await
        .context("cannot move credentials out of stored clone URLs")?;
    for old_url in &moved {
        let mirror = crate::build::git::mirror_path(mirrors, old_url);
        if mirror.exists()
            && let Err(e) = std::fs::remove_dir_all(&mirror)
        {
            tracing::warn!(mirror = %mirror.display(), error = %e, "cannot remove an old mirror");
        }
    }
    if !moved.is_empty() {
        tracing::info!(
            sources = moved.len(),
            "credentials moved out of stored clone URLs"
        );
    }
    Ok(())
}
