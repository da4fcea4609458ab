//! The hook path's view of the sources: every source by (provider, normalized clone URL), and by its
//! repository's name (`namespace/repo`, for a plain git server's notifications, whose URL names the
//! source), held in memory so that routing a delivery costs no database round trip.
//!
//! It is loaded from the database on first use and again after any change: the handlers that write
//! sources (link, unlink, delete a repository) call [`SourceIndex::invalidate`] once their write is
//! committed. A generation counter keeps a load that raced with a change from being taken as current.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::db::{self, Db, sources::SourceRow};
use crate::secrets::Cipher;

#[derive(Default)]
struct Sources {
    by_url: HashMap<(String, String), Vec<SourceRow>>,
    /// `namespace/repo` → its source.
    by_name: HashMap<String, SourceRow>,
}

#[derive(Default)]
pub struct SourceIndex {
    /// Bumped by every change.
    generation: AtomicU64,
    /// The sources as loaded at a generation.
    loaded: RwLock<Option<(u64, Arc<Sources>)>>,
}

impl SourceIndex {
    /// Sources of this provider whose normalized clone URL is one of `match_urls`.
    pub async fn candidates(
        &self,
        db: &Db,
        cipher: &Cipher,
        provider: &str,
        match_urls: &[String],
    ) -> Result<Vec<SourceRow>, sqlx::Error> {
        let sources = self.current(db, cipher).await?;
        let mut found: Vec<SourceRow> = Vec::new();
        for url in match_urls {
            if let Some(rows) = sources.by_url.get(&(provider.to_string(), url.clone())) {
                for row in rows {
                    if !found.iter().any(|f| f.repository_id == row.repository_id) {
                        found.push(row.clone());
                    }
                }
            }
        }
        Ok(found)
    }

    /// The source of the repository named `full_name` (`namespace/repo`), if it is of `provider`.
    pub async fn named(
        &self,
        db: &Db,
        cipher: &Cipher,
        provider: &str,
        full_name: &str,
    ) -> Result<Option<SourceRow>, sqlx::Error> {
        let sources = self.current(db, cipher).await?;
        Ok(sources
            .by_name
            .get(full_name)
            .filter(|s| s.provider == provider)
            .cloned())
    }

    /// Sources changed: the next lookup loads them again.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    async fn current(&self, db: &Db, cipher: &Cipher) -> Result<Arc<Sources>, sqlx::Error> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((at, sources)) = self.loaded.read().expect("source index poisoned").as_ref()
            && *at == generation
        {
            return Ok(sources.clone());
        }
        let mut sources = Sources::default();
        let rows = db::sources::all(db, cipher).await?;
        let mut by_id: HashMap<&str, &SourceRow> = HashMap::with_capacity(rows.len());
        for row in &rows {
            by_id.insert(&row.repository_id, row);
        }
        for (id, namespace, name) in db::repos::names_with_source(db).await? {
            if let Some(row) = by_id.get(id.as_str()) {
                sources
                    .by_name
                    .insert(format!("{namespace}/{name}"), (*row).clone());
            }
        }
        drop(by_id);
        for row in rows {
            sources
                .by_url
                .entry((row.provider.clone(), row.match_url.clone()))
                .or_default()
                .push(row);
        }
        let sources = Arc::new(sources);
        // Loaded after `generation` was read: if a change came in meanwhile, this load may miss it,
        // and it is kept under the older generation, so the next lookup loads again.
        *self.loaded.write().expect("source index poisoned") = Some((generation, sources.clone()));
        Ok(sources)
    }
}
