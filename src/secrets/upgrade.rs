//! At start: every plaintext secret an older kiln stored is encrypted, and every encrypted one is
//! checked to open with the key (kiln refuses to start, naming the row and the key's origin, when
//! one does not). For a key rotation: every value is re-encrypted with the new key. Each runs in one
//! transaction, on a connection that overwrites the replaced values.

use anyhow::Context;
use sqlx::Connection;

use super::cipher::{Cipher, place};
use super::key::KeySource;
use crate::db::{self, Db};

/// What a pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Plaintext values encrypted.
    pub encrypted: usize,
    /// Encrypted values re-encrypted with a new key.
    pub rotated: usize,
    /// Encrypted values that opened and were left as they are.
    pub checked: usize,
}

/// Encrypts plaintext values; checks that every encrypted value opens with `cipher`. Idempotent.
pub async fn seal_plaintext(db: &Db, cipher: &Cipher, key: &KeySource) -> anyhow::Result<Resealed> {
    reseal(db, cipher, cipher, false, key).await
}

/// Re-encrypts every value with `new` (plaintext ones too); every encrypted value must open with
/// `old`, else nothing is changed.
pub async fn rotate(
    db: &Db,
    old: &Cipher,
    new: &Cipher,
    key: &KeySource,
) -> anyhow::Result<Resealed> {
    reseal(db, old, new, true, key).await
}

async fn reseal(
    db: &Db,
    old: &Cipher,
    new: &Cipher,
    all: bool,
    key: &KeySource,
) -> anyhow::Result<Resealed> {
    let mut conn = db::secrets::overwriting_connection(db)
        .await
        .context("cannot open the database to encrypt secrets")?;
    let mut done = Resealed::default();
    let result = async {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let stored = db::secrets::all(&mut tx).await?;
        let mut opened = Vec::new();
        for value in &stored {
            let at = place(value.column, &value.row_id);
            if !Cipher::is_sealed(&value.stored) {
                done.encrypted += 1;
                opened.push(value.stored.clone());
                continue;
            }
            match old.open(&value.stored, &at) {
                Ok(plain) => opened.push(plain),
                Err(e) => anyhow::bail!(
                    "the secret in {} of row {} {e}: {key} is not the key this database's secrets \
                     were encrypted with; start kiln with that key (KILN_SECRET_KEY, or the {} file \
                     of the data directory it ran with)",
                    value.column,
                    value.row_id,
                    crate::secrets::key::KEY_FILE,
                ),
            }
            if all {
                done.rotated += 1;
            } else {
                done.checked += 1;
            }
        }
        for (value, plain) in stored.iter().zip(&opened) {
            if all || !Cipher::is_sealed(&value.stored) {
                let sealed = new.seal(plain, &place(value.column, &value.row_id));
                db::secrets::store(&mut tx, value, &sealed).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
    .await;
    let changed = result.is_ok() && done.encrypted + done.rotated > 0;
    let finished = db::secrets::finish_overwriting(&mut conn, changed).await;
    result?;
    finished.context("cannot checkpoint the database after encrypting secrets")?;
    Ok(done)
}
