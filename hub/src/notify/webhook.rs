//! The webhook channel: a JSON POST signed with HMAC-SHA256, so that the receiver can
//! check it came from this hub and was not altered, and refuse replays.
//!
//! Signature: `X-Mimamori-Signature: sha256=<hex>` where `<hex>` is the HMAC-SHA256,
//! keyed with the contact's secret, of `<X-Mimamori-Timestamp>.<raw body>`. The
//! timestamp (Unix seconds) is that of the attempt; the body and `Idempotency-Key` are
//! the same on every attempt, so a receiver can drop a retry it has already handled.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::message::{Message, Notice};
use super::SendError;
use crate::store::OutboxItem;

pub const SIGNATURE_HEADER: &str = "X-Mimamori-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Mimamori-Timestamp";
pub const EVENT_HEADER: &str = "X-Mimamori-Event";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// `sha256=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty tag would never verify.
    let tag = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map(|mut mac| {
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        })
        .unwrap_or_default();
    format!("sha256={tag}")
}

/// The JSON body: the facts for machines, and the rendered message for people.
pub fn body(item: &OutboxItem, notice: &Notice, msg: &Message) -> Vec<u8> {
    json!({
        "event": notice.event,
        "idempotency_key": item.idempotency_key,
        "language": item.language,
        "resident": notice.resident,
        "alert": notice.alert,
        "position": notice.position,
        "map_url": msg.map_url,
        "summary": notice.summary,
        "message": { "subject": msg.subject, "text": msg.text },
    })
    .to_string()
    .into_bytes()
}

/// Sends one notice, signed with the contact's secret (in clear).
pub async fn send(
    http: &reqwest::Client,
    item: &OutboxItem,
    secret: Option<&str>,
    notice: &Notice,
    msg: &Message,
    now: DateTime<Utc>,
) -> Result<(), SendError> {
    let secret =
        secret.ok_or_else(|| SendError::permanent("webhook contact has no signing secret"))?;
    let body = body(item, notice, msg);
    let ts = now.timestamp();
    let res = http
        .post(&item.address)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_HEADER, &item.idempotency_key)
        .header(EVENT_HEADER, notice.event.as_str())
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(SIGNATURE_HEADER, sign(secret, ts, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| super::request_failed("webhook", e))?;
    super::check_status(res.status(), "webhook")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hmac_of_timestamp_dot_body() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            sign("s3cret", 1_700_000_000, br#"{"a":1}"#),
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
        assert_ne!(sign("s3cret", 1, b"x"), sign("s3cret", 2, b"x"));
        assert_ne!(sign("s3cret", 1, b"x"), sign("other", 1, b"x"));
    }
}
