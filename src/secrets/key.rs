//! The key secrets are encrypted with: 32 bytes, given as `KILN_SECRET_KEY` (base64 of the 32 bytes,
//! standard or URL-safe alphabet, padded or not; or 64 hex digits), or kept in `{data_dir}/secret.key`
//! (base64, created with mode 0600 at first start when `KILN_SECRET_KEY` is unset).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "secret.key";

pub const KEY_LEN: usize = 32;

/// The key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> SecretKey {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source works");
        SecretKey(bytes)
    }

    /// 64 hex digits, or base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<SecretKey, String> {
        let text = text.trim();
        let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| e.to_string())?
        } else {
            let unpadded = text.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(unpadded)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded))
                .map_err(|_| {
                    "must be 32 bytes as base64 (e.g. `openssl rand -base64 32`) or as 64 hex digits"
                        .to_string()
                })?
        };
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "must be 32 bytes (base64 or 64 hex digits), got {} bytes",
                b.len()
            )
        })?;
        Ok(SecretKey(bytes))
    }

    /// Base64 (standard alphabet, padded): the key file's form.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// Where the key came from: what an error about it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `KILN_SECRET_KEY` (or `secret_key` in the config file).
    Configured,
    /// The key file, as found.
    File(PathBuf),
    /// The key file, created just now.
    Created(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Configured => f.write_str("KILN_SECRET_KEY"),
            KeySource::File(p) => write!(f, "the key file {}", p.display()),
            KeySource::Created(p) => write!(f, "the key file {} (created now)", p.display()),
        }
    }
}

/// `{data_dir}/secret.key`.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// The configured key, or the key file's, or a new key written to a new key file (mode 0600).
pub fn load_or_create(
    configured: Option<&SecretKey>,
    data_dir: &Path,
) -> anyhow::Result<(SecretKey, KeySource)> {
    if let Some(key) = configured {
        return Ok((key.clone(), KeySource::Configured));
    }
    let path = key_file(data_dir);
    match read_key_file(&path)? {
        Some(key) => Ok((key, KeySource::File(path))),
        None => {
            let key = SecretKey::generate();
            write_new_key_file(&path, &key)?;
            tracing::info!(path = %path.display(), "created the key that encrypts kiln's secrets: back it up apart from the database");
            Ok((key, KeySource::Created(path)))
        }
    }
}

/// The key in `path`, or None when there is no such file.
pub fn read_key_file(path: &Path) -> anyhow::Result<Option<SecretKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the key file {}", path.display()));
        }
    };
    warn_if_readable_by_others(path);
    SecretKey::parse(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("the key file {}: {e}", path.display()))
}

/// Writes `key` to a file that must not exist yet, readable by its owner only.
pub fn write_new_key_file(path: &Path, key: &SecretKey) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the key file {}", path.display()))?;
    file.write_all(format!("{}\n", key.encode()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the key file {}", path.display()))?;
    Ok(())
}

/// Replaces the key file with `key` (written beside it, then renamed over it: never half written).
pub fn replace_key_file(path: &Path, key: &SecretKey) -> anyhow::Result<()> {
    let next = path.with_extension("key.new");
    let _ = std::fs::remove_file(&next);
    write_new_key_file(&next, key)?;
    std::fs::rename(&next, path)
        .with_context(|| format!("cannot replace the key file {}", path.display()))?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the key file is readable by others: chmod 600 it");
    }
}

/// Checks `KILN_SECRET_KEY` as configuration does: a clear error naming what is wrong.
pub fn parse_configured(text: &str) -> anyhow::Result<SecretKey> {
    if text.trim().is_empty() {
        bail!("KILN_SECRET_KEY: is empty (unset it to use the key file in the data directory)");
    }
    SecretKey::parse(text).map_err(|e| anyhow::anyhow!("KILN_SECRET_KEY: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_base64_or_hex_and_bad_ones_say_why() {
        let key = SecretKey::generate();
        let b64 = key.encode();
        assert_eq!(SecretKey::parse(&b64).unwrap(), key);
        assert_eq!(SecretKey::parse(b64.trim_end_matches('=')).unwrap(), key);
        assert_eq!(SecretKey::parse(&format!(" {b64}\n")).unwrap(), key);
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(key.bytes());
        assert_eq!(SecretKey::parse(&url_safe).unwrap(), key);
        assert_eq!(SecretKey::parse(&hex::encode(key.bytes())).unwrap(), key);
        assert_eq!(
            SecretKey::parse(&hex::encode(key.bytes()).to_uppercase()).unwrap(),
            key
        );
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert_eq!(
            SecretKey::parse(&short).unwrap_err(),
            "must be 32 bytes (base64 or 64 hex digits), got 16 bytes"
        );
        assert!(
            SecretKey::parse("not a key!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            parse_configured("")
                .unwrap_err()
                .to_string()
                .starts_with("KILN_SECRET_KEY: is empty")
        );
        assert!(!format!("{key:?}").contains(&b64));
    }

    #[test]
    fn the_key_file_is_created_once_owner_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (key, source) = load_or_create(None, dir.path()).unwrap();
        let path = key_file(dir.path());
        assert_eq!(source, KeySource::Created(path.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, source) = load_or_create(None, dir.path()).unwrap();
        assert_eq!(
            (again, source),
            (key.clone(), KeySource::File(path.clone()))
        );
        // The configured key wins; the file is left alone.
        let other = SecretKey::generate();
        let (got, source) = load_or_create(Some(&other), dir.path()).unwrap();
        assert_eq!((got, source), (other.clone(), KeySource::Configured));
        replace_key_file(&path, &other).unwrap();
        assert_eq!(read_key_file(&path).unwrap(), Some(other));
        std::fs::write(&path, "garbage").unwrap();
        let err = read_key_file(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("the key file {}: ", path.display())),
            "{err}"
        );
    }
}
