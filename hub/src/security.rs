//! Secrets: user passwords, device secrets and API tokens, and how they are hashed.
//!
//! User passwords are chosen by people, so they get a slow, salted hash (Argon2id).
//! Device secrets and API tokens are 256-bit random values made here; for those a
//! single SHA-256 is as strong as a slow hash and lets a thousand devices
//! authenticate at once without burning seconds of CPU on CONNECT storms.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh random secret, hex-encoded (64 characters, 256 bits).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A short random identifier made of lowercase letters and digits.
pub fn random_id(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    let tail: String = (0..len)
        .map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// The stored form of a generated secret or token.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` matches a hash made by [`hash_token`], in constant time.
pub fn verify_token(secret: &[u8], stored: &str) -> bool {
    let candidate = hex::encode(Sha256::digest(secret));
    candidate.as_bytes().ct_eq(stored.as_bytes()).into()
}

/// The stored form of a user's password.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash password: {e}"))
}

/// Whether `password` matches a stored Argon2 hash; a malformed hash never matches.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when a username is unknown, so that a login for an
/// unknown user costs as long as one with a wrong password.
pub fn decoy_password_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password that matches nothing").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_against_their_own_hash() {
        let s = random_secret();
        assert_eq!(s.len(), 64);
        let h = hash_token(&s);
        assert!(verify_token(s.as_bytes(), &h));
        assert!(!verify_token(b"wrong", &h));
        assert_ne!(random_secret(), s);
    }

    #[test]
    fn passwords_verify_and_bad_hashes_never_match() -> anyhow::Result<()> {
        let h = hash_password("correct horse")?;
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct hors", &h));
        assert!(!verify_password("x", "not a hash"));
        Ok(())
    }

    #[test]
    fn ids_use_the_prefix_and_unambiguous_characters() {
        let id = random_id("dev-", 10);
        assert!(id.starts_with("dev-"));
        assert_eq!(id.len(), 14);
        assert!(!id[4..].contains(['l', 'o', '0', '1', '/', '+', '#']));
    }
}
