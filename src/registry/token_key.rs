//! The key kiln signs registry tokens with, kept in the data directory: `registry-token.key`
//! (PKCS#8 PEM, mode 0600), made at first start, and its self-signed certificate
//! `registry-token.pem`, which the registry's `auth.token.rootcertbundle` names.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The private key's file in the data directory.
pub const KEY_FILE: &str = "registry-token.key";
/// The certificate's file in the data directory (for `auth.token.rootcertbundle`).
pub const CERT_FILE: &str = "registry-token.pem";

/// The signing key, as the token issuer takes it.
pub struct SigningKey {
    /// PKCS#8 DER of the P-256 private key.
    pub pkcs8_der: Vec<u8>,
    /// SubjectPublicKeyInfo DER of its public key.
    pub public_key_der: Vec<u8>,
    /// Where the certificate is.
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// Loads the key from `data_dir`, making it first when there is none (two processes racing here
/// end up with the same key: the file is linked into place only when absent). Writes the
/// certificate when it is missing or names another key.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<SigningKey> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let key_path = data_dir.join(KEY_FILE);
    if !key_path.exists() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("cannot make a registry token key")?;
        // NamedTempFile is created with mode 0600.
        let mut tmp = tempfile::NamedTempFile::new_in(data_dir)
            .with_context(|| format!("cannot write in {}", data_dir.display()))?;
        tmp.write_all(key.serialize_pem().as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("cannot write {}", key_path.display()))?;
        match tmp.persist_noclobber(&key_path) {
            Ok(_) => tracing::info!(path = %key_path.display(), "made the registry token key"),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e.error)
                    .with_context(|| format!("cannot write {}", key_path.display()));
            }
        }
    }
    let pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read {}", key_path.display()))?;
    let key = rcgen::KeyPair::from_pem(&pem)
        .with_context(|| format!("{} is not a PKCS#8 PEM private key", key_path.display()))?;
    if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
        bail!(
            "{} is not a P-256 (ES256) key; move it away and kiln makes a new one",
            key_path.display()
        );
    }
    let public_key_der = rcgen::PublicKeyData::subject_public_key_info(&key);
    let cert_path = data_dir.join(CERT_FILE);
    if !certificate_names_key(&cert_path, &public_key_der) {
        write_certificate(&key, &cert_path)?;
    }
    Ok(SigningKey {
        pkcs8_der: key.serialize_der(),
        public_key_der,
        cert_path,
    })
}

/// Is there a certificate at `path` for this public key? The key's SubjectPublicKeyInfo appears
/// byte for byte inside the DER of a certificate for it.
fn certificate_names_key(path: &Path, public_key_der: &[u8]) -> bool {
    let Ok(text) = std::fs::read(path) else {
        return false;
    };
    let Ok(blocks) = pem::parse_many(text) else {
        return false;
    };
    blocks.iter().any(|block| {
        block.tag() == "CERTIFICATE"
            && block
                .contents()
                .windows(public_key_der.len())
                .any(|w| w == public_key_der)
    })
}

fn write_certificate(key: &rcgen::KeyPair, path: &Path) -> anyhow::Result<()> {
    let mut params = rcgen::CertificateParams::new(vec!["kiln".to_string()])
        .context("cannot make the registry token certificate")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kiln registry token signer");
    let cert = params
        .self_signed(key)
        .context("cannot sign the registry token certificate")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(cert.pem().as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // A certificate is public: the registry (maybe another user) must read it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "wrote the registry token certificate");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_kept_private_and_its_certificate_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(certificate_names_key(
            &first.cert_path,
            &first.public_key_der
        ));
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(again.public_key_der, first.public_key_der);

        // A certificate of another key (the key file was replaced) is written again.
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let other = load_or_create(dir.path()).unwrap();
        assert_ne!(other.public_key_der, first.public_key_der);
        assert!(certificate_names_key(
            &other.cert_path,
            &other.public_key_der
        ));
        assert!(!certificate_names_key(
            &other.cert_path,
            &first.public_key_der
        ));

        // A key file that is not a key is an error naming it, never replaced silently.
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains(KEY_FILE), "{err:#}");
    }
}
