//! `kiln secrets rotate`: every stored secret re-encrypted with a new key, kiln stopped.
//!
//! With the key file: the new key is written beside it (`secret.key.new`), the database is
//! re-encrypted in one transaction, then the new file replaces the old one. With `KILN_SECRET_KEY`:
//! the database is re-encrypted, and the operator sets the variable to the new key before the next
//! start.

use std::path::PathBuf;

use anyhow::{Context, bail};

use super::Cipher;
use super::key::{self, KeySource, SecretKey};
use super::upgrade::{self, Resealed};
use crate::config::Config;

/// What a rotation did.
#[derive(Debug)]
pub struct Rotated {
    pub resealed: Resealed,
    /// The key file now holding the new key; None when the key is configured (`KILN_SECRET_KEY`).
    pub key_file: Option<PathBuf>,
    /// The new key, when kiln made it and it is not kept in a key file: to show once.
    pub generated: Option<SecretKey>,
}

/// Re-encrypts every stored secret with `new_key` (a new random key when None). Refuses while a
/// kiln runs over the data directory, and when the old key does not open every stored secret.
pub async fn rotate_key(config: &Config, new_key: Option<SecretKey>) -> anyhow::Result<Rotated> {
    let _lock = crate::data_dir::DataDirLock::acquire(&config.data_dir)?;
    let path = key::key_file(&config.data_dir);
    let (old_key, source) = match &config.secret_key {
        Some(k) => (k.clone(), KeySource::Configured),
        None => match key::read_key_file(&path)? {
            Some(k) => (k, KeySource::File(path.clone())),
            None => bail!(
                "no key to rotate: KILN_SECRET_KEY is unset and {} does not exist (kiln creates it \
                 at its first start)",
                path.display()
            ),
        },
    };
    let generated = new_key.is_none();
    let new_key = new_key.unwrap_or_else(SecretKey::generate);
    if new_key == old_key {
        bail!("the new key is the key in use: give another one");
    }
    let db = crate::db::connect(&config.database_url).await?;
    let next = path.with_extension("key.new");
    if source != KeySource::Configured {
        let _ = std::fs::remove_file(&next);
        key::write_new_key_file(&next, &new_key)?;
    }
    let result =
        upgrade::rotate(&db, &Cipher::new(&old_key), &Cipher::new(&new_key), &source).await;
    db.close().await;
    let resealed = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&next);
            return Err(e.context("nothing was changed"));
        }
    };
    if source == KeySource::Configured {
        return Ok(Rotated {
            resealed,
            key_file: None,
            generated: generated.then_some(new_key),
        });
    }
    std::fs::rename(&next, &path).with_context(|| {
        format!(
            "the secrets are encrypted with the key in {}, but it could not replace {}: move it there by hand",
            next.display(),
            path.display()
        )
    })?;
    Ok(Rotated {
        resealed,
        key_file: Some(path),
        generated: None,
    })
}
