//! Encrypting one secret value for the database: ChaCha20-Poly1305 (aws-lc-rs, already kiln's crypto
//! library) with a random 96-bit nonce per value, and the value's place (`table.column:row id`) as
//! associated data, so a value copied into another row or column does not decrypt. Stored as
//! `enc:v1:` + base64(nonce ‖ ciphertext ‖ tag): self-describing, so a plaintext value written by an
//! older kiln is told apart.

use std::sync::Arc;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;

use super::key::SecretKey;
use super::mask;

/// The stored form's prefix (version 1: ChaCha20-Poly1305).
pub const PREFIX: &str = "enc:v1:";

/// Seals and opens secret values with one key. Cheap to clone.
#[derive(Clone)]
pub struct Cipher {
    key: Arc<LessSafeKey>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher([redacted])")
    }
}

/// Why a stored value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("is not encrypted")]
    Plaintext,
    #[error("is not a well-formed encrypted value")]
    Malformed,
    #[error("cannot be decrypted with this key (it was encrypted with another key, or altered)")]
    WrongKey,
}

/// Where a value is kept: its associated data.
pub fn place(column: &str, row_id: &str) -> String {
    format!("{column}:{row_id}")
}

impl Cipher {
    pub fn new(key: &SecretKey) -> Cipher {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key.bytes())
            .expect("a 32-byte key is a valid ChaCha20-Poly1305 key");
        Cipher {
            key: Arc::new(LessSafeKey::new(unbound)),
        }
    }

    /// True when `stored` is in the encrypted form (whether or not this key opens it).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// Encrypts `plaintext` kept at `place` (see [`place`]); registers it with the masker.
    pub fn seal(&self, plaintext: &str, place: &str) -> String {
        mask::register(plaintext);
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system's random source works");
        let mut in_out = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(place.as_bytes()),
                &mut in_out,
            )
            .expect("sealing into a Vec cannot fail");
        let mut blob = Vec::with_capacity(NONCE_LEN + in_out.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&in_out);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(blob)
        )
    }

    /// Decrypts a value stored at `place`; registers it with the masker.
    pub fn open(&self, stored: &str, place: &str) -> Result<String, OpenError> {
        let encoded = stored.strip_prefix(PREFIX).ok_or(OpenError::Plaintext)?;
        let mut blob = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| OpenError::Malformed)?;
        if blob.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(OpenError::Malformed);
        }
        let mut in_out = blob.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&blob).map_err(|_| OpenError::Malformed)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(place.as_bytes()), &mut in_out)
            .map_err(|_| OpenError::WrongKey)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| OpenError::Malformed)?;
        mask::register(&text);
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_place() {
        let cipher = Cipher::new(&SecretKey::generate());
        let place = place("sources.webhook_secret", "r1");
        let sealed = cipher.seal("s3cret-s3cret-s3cret", &place);
        assert!(Cipher::is_sealed(&sealed));
        assert!(!sealed.contains("s3cret"), "{sealed}");
        assert_eq!(
            cipher.open(&sealed, &place).unwrap(),
            "s3cret-s3cret-s3cret"
        );
        // A new nonce each time: the same value never looks the same twice.
        assert_ne!(cipher.seal("s3cret-s3cret-s3cret", &place), sealed);
        // Another row, another key, a changed byte, a plaintext value: refused, never a panic.
        assert_eq!(
            cipher.open(&sealed, "sources.webhook_secret:r2"),
            Err(OpenError::WrongKey)
        );
        let other = Cipher::new(&SecretKey::generate());
        assert_eq!(other.open(&sealed, &place), Err(OpenError::WrongKey));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            cipher.open(std::str::from_utf8(&altered).unwrap(), &place),
            Err(OpenError::WrongKey)
        );
        assert_eq!(
            cipher.open("s3cret-s3cret-s3cret", &place),
            Err(OpenError::Plaintext)
        );
        for bad in ["enc:v1:", "enc:v1:!!!", "enc:v1:AAAA"] {
            assert_eq!(cipher.open(bad, &place), Err(OpenError::Malformed), "{bad}");
        }
        // The empty value round-trips too.
        assert_eq!(cipher.open(&cipher.seal("", &place), &place).unwrap(), "");
    }
}
