//! Standard Webhooks: `whsec_` secrets and the `webhook-signature` header.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::domain::FieldError;

pub const PREFIX: &str = "whsec_";

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The HMAC key of a secret: its decoded bytes. Refuses other forms (field "secret").
pub fn secret_key(secret: &str) -> Result<Vec<u8>, FieldError> {
    let bad = |m: &str| FieldError::new("secret", "invalid_secret", m.to_string());
    let encoded = secret
        .strip_prefix(PREFIX)
        .ok_or_else(|| bad("secret must have the Standard Webhooks form whsec_<base64>"))?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| bad("the part after whsec_ must be standard base64"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(bad("the secret must decode to 24 to 64 bytes"));
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn signature(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks reference implementations' tests.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_round_trip_and_bad_forms_are_refused() {
        let s = generate_secret();
        assert!(s.starts_with(PREFIX));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert_ne!(s, generate_secret());
        for bad in [
            "",
            "whsec_",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            "whsec_c2hvcnQ=",
            &format!("whsec_{}", STANDARD.encode([7u8; 65])),
        ] {
            let e = secret_key(bad).unwrap_err();
            assert_eq!(e.field, "secret", "{bad}");
        }
        assert!(secret_key(&format!("whsec_{}", STANDARD.encode([7u8; 24]))).is_ok());
        assert!(secret_key(&format!("whsec_{}", STANDARD.encode([7u8; 64]))).is_ok());
    }
}
