//! Secrets the hub must use again in clear (webhook signing secrets) are sealed at rest
//! with AES-256-GCM under a key from the environment or a file, never the database.
//!
//! A key ring is lines of `ID:BASE64` (32 random bytes each, `#` starts a comment); the
//! first key seals, every key opens. A sealed value reads `sealed:v1:{ID}:{BASE64 of
//! nonce and ciphertext}`; a value without that prefix is one stored before a key was
//! configured, and opens as itself. Rotation: put a new key first and restart (the hub
//! re-seals every stored secret under it), then drop the old line.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

const PREFIX: &str = "sealed:v1:";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SealError {
    #[error("sealed with key {0:?}, which the key ring does not hold")]
    UnknownKey(String),
    #[error("a sealed secret is damaged or was sealed with another key of that name")]
    Damaged,
}

/// The key ring; without keys, secrets are stored as they are.
#[derive(Default, Clone)]
pub struct Sealer {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish()
    }
}

impl Sealer {
    /// Reads a key ring (see the module's doc); an error names the bad line, never a key.
    pub fn parse(text: &str) -> Result<Sealer, String> {
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("secrets key ring, line {}: {why}", n + 1);
            let (id, key) = line
                .split_once(':')
                .ok_or_else(|| bad("expected ID:BASE64"))?;
            let id = id.trim();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad("the key's ID must be letters, digits, - or _"));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(bad("the key's ID is used twice"));
            }
            let bytes = STANDARD
                .decode(key.trim())
                .map_err(|_| bad("the key is not base64"))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| bad("the key must be 32 bytes (openssl rand -base64 32)"))?;
            keys.push((id.to_string(), cipher));
        }
        if keys.is_empty() {
            return Err("the secrets key ring holds no key".into());
        }
        Ok(Sealer { keys })
    }

    /// The ID of the key that seals, if any.
    pub fn current(&self) -> Option<&str> {
        self.keys.first().map(|(id, _)| id.as_str())
    }

    /// Seals a secret under the first key; without keys it stays as it is.
    pub fn seal(&self, plain: &str) -> String {
        let Some((id, cipher)) = self.keys.first() else {
            return plain.to_string();
        };
        let nonce: [u8; 12] = rand::random();
        // Encryption into a Vec fails only past GCM's length limit (64 GiB).
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend(sealed);
        format!("{PREFIX}{id}:{}", STANDARD.encode(blob))
    }

    /// The secret in clear: a sealed value opened with its key, any other as it is.
    pub fn open(&self, stored: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let (id, blob) = rest.split_once(':').ok_or(SealError::Damaged)?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_string()))?;
        let blob = STANDARD.decode(blob).map_err(|_| SealError::Damaged)?;
        if blob.len() < 12 {
            return Err(SealError::Damaged);
        }
        let (nonce, sealed) = blob.split_at(12);
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| SealError::Damaged)?;
        String::from_utf8(plain).map_err(|_| SealError::Damaged)
    }

    /// Whether a stored value should be sealed again: it is in clear, or under an older key.
    pub fn is_stale(&self, stored: &str) -> bool {
        match (self.current(), stored.strip_prefix(PREFIX)) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(id), Some(rest)) => !rest.starts_with(&format!("{id}:")),
        }
    }
}

/// Seals every stored webhook secret that is in clear or under an older key with the
/// current key; returns how many. Run at start, so a rotation completes by a restart.
pub async fn reseal(store: &dyn crate::store::Store, sealer: &Sealer) -> anyhow::Result<usize> {
    use anyhow::Context;
    let mut n = 0;
    for (id, stored) in store.webhook_secrets().await? {
        if !sealer.is_stale(&stored) {
            continue;
        }
        let plain = sealer
            .open(&stored)
            .with_context(|| format!("contact {id}'s webhook secret"))?;
        if store
            .replace_secret(id, &stored, &sealer.seal(&plain))
            .await?
        {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    #[test]
    fn a_sealed_secret_opens_under_its_key_and_a_rotated_ring_still_opens_it() -> Result<(), String>
    {
        let old = Sealer::parse(K1)?;
        let sealed = old.seal("whsec-123");
        assert!(sealed.starts_with("sealed:v1:k1:") && !sealed.contains("whsec"));
        assert_ne!(old.seal("whsec-123"), sealed, "a fresh nonce each time");
        assert_eq!(old.open(&sealed), Ok("whsec-123".to_string()));
        let rotated = Sealer::parse(&format!("# new first\n{K2}\n{K1}\n"))?;
        assert_eq!(rotated.open(&sealed), Ok("whsec-123".to_string()));
        assert!(rotated.is_stale(&sealed) && !rotated.is_stale(&rotated.seal("x")));
        assert!(rotated.is_stale("plain-legacy"));
        assert_eq!(rotated.open("plain-legacy"), Ok("plain-legacy".to_string()));
        let without_k1 = Sealer::parse(K2)?;
        assert_eq!(
            without_k1.open(&sealed),
            Err(SealError::UnknownKey("k1".into()))
        );
        let mut tampered = sealed.clone();
        tampered.replace_range(sealed.len() - 6..sealed.len() - 4, "AA");
        assert_eq!(old.open(&tampered), Err(SealError::Damaged));
        Ok(())
    }

    #[test]
    fn bad_rings_are_refused_without_showing_a_key() {
        for (text, says) in [
            ("", "no key"),
            ("k1 AAAA", "ID:BASE64"),
            ("k1:!!!", "not base64"),
            ("k1:AAAA", "32 bytes"),
            (&format!("{K1}\n{K1}"), "twice"),
        ] {
            let err = Sealer::parse(text).err().unwrap_or_default();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(!err.contains("AAEC"));
        }
        assert!(Sealer::default().current().is_none());
        assert_eq!(Sealer::default().seal("s"), "s");
    }
}
