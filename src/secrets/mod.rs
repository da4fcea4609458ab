//! Secrets kiln keeps: encrypted at rest, masked wherever they could surface.
//!
//! - [`key`]: the 32-byte key, from `KILN_SECRET_KEY` or `{data_dir}/secret.key` (created at first start).
//! - [`cipher`]: ChaCha20-Poly1305 (an AEAD) with a random nonce per value and the row and column as
//!   associated data; stored as `enc:v1:BASE64`, so plaintext rows of an older database are recognised.
//! - [`mask`]: the process-wide set of known secret values and `***` masking (build logs, errors,
//!   `tracing` output).
//! - [`upgrade`]: encrypts plaintext rows at start, and re-encrypts every row for a key rotation.

pub mod cipher;
pub mod key;
pub mod mask;
pub mod rotation;
pub mod upgrade;

pub use cipher::{Cipher, OpenError};
pub use key::SecretKey;
