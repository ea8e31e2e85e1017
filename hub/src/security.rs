//! Secrets: user passwords, device secrets and API tokens, and how they are hashed.
//!
//! User passwords are chosen by people, so they get a slow, salted hash (Argon2id).
//! Device secrets and API tokens are 256-bit random values made here; for those a
//! single SHA-256 is as strong as a slow hash and lets a thousand devices
//! authenticate at once without burning seconds of CPU on CONNECT storms.
//!
//! Argon2id needs 19 MiB and tens of milliseconds of a core per password. Anyone can ask
//! the hub to check a password (a login, an MQTT CONNECT naming a person), so every check
//! and every new hash runs on [`PasswordPool`]: two worker threads of its own (memory
//! bounded by two computations, reused rather than piling up in a thread pool's arenas)
//! behind a short queue; when the queue is full the caller is told the hub is busy at
//! once, which costs nothing.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

/// Shortest password accepted for a person's account.
pub const MIN_PASSWORD: usize = 12;

/// Passwords too common to accept, shipped with the hub.
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// Why a new password is refused, in words for the person choosing it; `Ok` when it may be used.
pub fn check_password_policy(username: &str, password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD} characters"
        ));
    }
    let lower = password.to_lowercase();
    if lower == username.to_lowercase() {
        return Err("the password must not be the username".into());
    }
    let mut chars = lower.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err("the password must not be one character repeated".into());
    }
    let common = COMMON_PASSWORDS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| l.trim() == lower);
    if common {
        return Err("this password is one of the most common ones; choose another".into());
    }
    Ok(())
}

/// Password computations that run at once.
const HASHING_THREADS: usize = 2;
/// Password computations that may wait for a thread; beyond this the hub answers "busy".
const HASHING_QUEUE: usize = 16;

/// The hub cannot check a password now: too many are waiting. Worth a retry in a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingBusy;

enum Job {
    Verify(String, String, tokio::sync::oneshot::Sender<bool>),
    Hash(String, tokio::sync::oneshot::Sender<anyhow::Result<String>>),
}

/// The bounded place where Argon2 runs (see the module docs).
#[derive(Clone)]
pub struct PasswordPool {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// How long a check usually takes, in microseconds: what a refusal of an unknown
    /// user waits, so that it costs no Argon2 yet takes as long as a wrong password.
    typical_us: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PasswordPool {
    /// Starts the worker threads.
    pub fn start() -> PasswordPool {
        // A first measure of a check's time, before any was made.
        let started = std::time::Instant::now();
        let _ = decoy_password_hash();
        let typical_us = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        ));
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(HASHING_QUEUE);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for n in 0..HASHING_THREADS {
            let rx = rx.clone();
            let typical = typical_us.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("passwords-{n}"))
                .spawn(move || {
                    let mut scratch = Scratch::default();
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(Job::Verify(password, hash, reply)) => {
                                let started = std::time::Instant::now();
                                let _ = reply.send(scratch.verify(&password, &hash));
                                observe(&typical, started.elapsed());
                            }
                            Ok(Job::Hash(password, reply)) => {
                                let _ = reply.send(hash_password(&password));
                            }
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password thread");
            }
        }
        PasswordPool { jobs, typical_us }
    }

    /// Refuses a login for a user who does not exist: no Argon2, only the wait a
    /// wrong password would have had, so timing does not tell who has an account.
    pub async fn refuse_unknown(&self) {
        let us = self.typical_us.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_micros(us)).await;
    }

    /// Whether `password` matches `hash`; `Err` when the queue is full.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, HashingBusy> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .try_send(Job::Verify(password, hash, reply))
            .map_err(|_| HashingBusy)?;
        answer.await.map_err(|_| HashingBusy)
    }

    /// The stored form of a new password; `Err` when the queue is full.
    pub async fn hash(&self, password: String) -> Result<anyhow::Result<String>, HashingBusy> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .try_send(Job::Hash(password, reply))
            .map_err(|_| HashingBusy)?;
        answer.await.map_err(|_| HashingBusy)
    }
}

/// Folds one check's time into the typical one (an average weighted to recent checks).
fn observe(typical_us: &std::sync::atomic::AtomicU64, took: std::time::Duration) {
    use std::sync::atomic::Ordering;
    let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let old = typical_us.load(Ordering::Relaxed);
    typical_us.store(
        (old.saturating_mul(7) / 8).saturating_add(took / 8),
        Ordering::Relaxed,
    );
}

/// A password thread's Argon2 working memory, kept from one check to the next: the
/// allocator would otherwise keep each freed 19 MiB around in the thread's arena and
/// take fresh memory for the next.
#[derive(Default)]
struct Scratch(Vec<Block>);

impl Scratch {
    fn blocks(&mut self, n: usize) -> &mut [Block] {
        if self.0.len() < n {
            self.0.resize(n, Block::default());
        }
        &mut self.0[..n]
    }

    /// [`verify_password`] in this memory.
    fn verify(&mut self, password: &str, stored: &str) -> bool {
        let Ok(h) = PasswordHash::new(stored) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
            return false;
        };
        let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(h.algorithm), Params::try_from(&h))
        else {
            return false;
        };
        let version = match h.version.map(Version::try_from).transpose() {
            Ok(v) => v.unwrap_or_default(),
            Err(_) => return false,
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let blocks = params.block_count();
        let argon = Argon2::new(algorithm, version, params);
        let mut out = vec![0u8; expected.len()];
        argon
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                self.blocks(blocks),
            )
            .is_ok()
            && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
    }
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
        let mut scratch = Scratch::default();
        for _ in 0..2 {
            assert!(
                scratch.verify("correct horse", &h),
                "the reused memory verifies alike"
            );
            assert!(!scratch.verify("correct hors", &h));
        }
        assert!(!scratch.verify("x", "not a hash"));
        Ok(())
    }

    #[test]
    fn the_policy_refuses_short_common_and_username_passwords() {
        assert!(check_password_policy("alice", "aaaaaaaaaa").is_err());
        assert!(check_password_policy("alice", "aaaaaaaaaaaaaa").is_err());
        assert!(check_password_policy("alice.tanaka", "Alice.Tanaka").is_err());
        assert!(check_password_policy("alice", "Password1234").is_err());
        assert!(check_password_policy("alice", "a long family password").is_ok());
        assert!(check_password_policy("admin", "admin-password-for-tests").is_ok());
    }

    #[test]
    fn ids_use_the_prefix_and_unambiguous_characters() {
        let id = random_id("dev-", 10);
        assert!(id.starts_with("dev-"));
        assert_eq!(id.len(), 14);
        assert!(!id[4..].contains(['l', 'o', '0', '1', '/', '+', '#']));
    }
}
