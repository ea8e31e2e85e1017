//! One-time codes (TOTP, RFC 6238) as a person's second factor: making a secret, the
//! `otpauth://` address an authenticator app reads, and checking a code. Pure: the time is
//! given, and the caller records which step a code was used for, so a code works once.

use rand::RngCore;
use totp_rs::{Algorithm, Secret, TOTP};

/// Seconds per code, and digits per code: what every authenticator app shows by default.
pub const STEP_S: u64 = 30;
const DIGITS: usize = 6;
/// Steps either side of now a code may come from: a phone's clock a little off, or a code
/// typed as it changed.
const SKEW: i64 = 1;
const ISSUER: &str = "Mimamori";

/// A new random secret (160 bits, as RFC 4226 recommends), base32 as apps take it.
pub fn new_secret() -> String {
    let mut bytes = vec![0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    match Secret::Raw(bytes).to_encoded() {
        Secret::Encoded(s) => s,
        Secret::Raw(_) => String::new(),
    }
}

/// The address an authenticator app scans or opens to add the account.
pub fn otpauth_url(secret: &str, username: &str) -> String {
    let label: String =
        form_urlencoded::byte_serialize(format!("{ISSUER}:{username}").as_bytes()).collect();
    format!(
        "otpauth://totp/{label}?secret={secret}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_S}"
    )
}

/// The time step of `code` when it is a good code of `secret` at `now`, else `None`.
pub fn check(secret: &str, code: &str, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    let unix_s = u64::try_from(now.timestamp()).ok()?;
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bytes = Secret::Encoded(secret.to_string()).to_bytes().ok()?;
    let totp = TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 0, STEP_S, bytes);
    let now = i64::try_from(unix_s / STEP_S).ok()?;
    (now - SKEW..=now + SKEW)
        .filter(|step| *step >= 0)
        .find(|step| {
            let at = u64::try_from(*step).unwrap_or(0) * STEP_S;
            same(&totp.generate(at), code)
        })
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 secret ("12345678901234567890"), six digits.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn at(unix_s: u64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(unix_s as i64, 0).unwrap_or_default()
    }

    #[test]
    fn rfc_6238_vectors_are_accepted_at_their_step() {
        for (t, code) in [
            (59u64, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(
                check(RFC_SECRET, code, at(t)),
                Some((t / STEP_S) as i64),
                "t={t}"
            );
        }
    }

    #[test]
    fn a_code_is_good_one_step_either_side_and_no_further() {
        let t = 1_234_567_890;
        assert!(check(RFC_SECRET, "005924", at(t + STEP_S)).is_some());
        assert!(check(RFC_SECRET, "005924", at(t - STEP_S)).is_some());
        assert!(check(RFC_SECRET, "005924", at(t + 2 * STEP_S)).is_none());
        assert!(check(RFC_SECRET, "005925", at(t)).is_none());
        assert!(check(RFC_SECRET, "05924", at(t)).is_none());
        assert!(check(RFC_SECRET, "00592a", at(t)).is_none());
        assert!(check("not base32!", "005924", at(t)).is_none());
    }

    #[test]
    fn new_secrets_differ_and_read_back() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let url = otpauth_url(&a, "sato hana");
        assert!(
            url.starts_with("otpauth://totp/Mimamori%3Asato+hana?secret="),
            "{url}"
        );
    }
}
