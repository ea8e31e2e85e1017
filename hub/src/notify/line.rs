//! The LINE channel: a push message from the hub's LINE official account (Messaging
//! API) to a family member's LINE user id or a family group's id.
//!
//! One delivery is one `POST {line_api_base}/v2/bot/message/push` with the channel
//! access token as bearer token, carrying the rendered text and, while the alert still
//! needs someone, a buttons template whose "確認しました" postback comes back to
//! `POST /api/v1/line/webhook` (see [`crate::api::line`]). The `X-Line-Retry-Key` is a
//! UUID derived from the delivery's idempotency key, so every attempt of one delivery
//! carries the same key and LINE accepts it at most once (a repeat after acceptance is
//! answered 409, which counts as delivered).
//!
//! Answers: 2xx and 409 delivered; 429 retried no earlier than its `Retry-After`;
//! 400, 401, 403 and 404 given up with LINE's own reason; anything else retried with
//! backoff. Messages sent are counted per calendar month in Japan time (LINE's billing
//! month), and the log warns when the month reaches 80 % and 100 % of `line_monthly_quota`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::message::{Message, Notice};
use super::policy::NoticeEvent;
use super::SendError;
use crate::metrics::Metrics;
use crate::store::OutboxItem;

pub const PUSH_PATH: &str = "/v2/bot/message/push";
pub const RETRY_KEY_HEADER: &str = "X-Line-Retry-Key";
pub const SIGNATURE_HEADER: &str = "X-Line-Signature";
/// LINE's free plan: 200 messages a month.
pub const DEFAULT_MONTHLY_QUOTA: u64 = 200;
/// Longest text of one text message.
const MAX_TEXT: usize = 5000;
/// Longest text of a buttons template without a title or image.
const MAX_BUTTONS_TEXT: usize = 160;
/// Longest alternative text of a template message.
const MAX_ALT_TEXT: usize = 400;
/// The longest `Retry-After` honoured; beyond it the give-up time decides anyway.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A value that is never printed: `Debug` shows only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The LINE settings in force.
#[derive(Debug, Clone)]
pub struct LineConfig {
    /// The channel access token (long-lived or v2.1), sent as bearer token.
    pub access_token: Secret,
    /// The channel secret, which signs LINE's webhook calls; without it no
    /// "確認しました" button is offered.
    pub channel_secret: Option<Secret>,
    /// `https://api.line.me` unless a test points it elsewhere.
    pub api_base: reqwest::Url,
    /// Messages the plan includes per month.
    pub monthly_quota: u64,
}

/// Whether `s` is a LINE user id (`U` and 32 lowercase hex digits) or group id (`C` …).
pub fn valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('U' | 'C'))
        && s.len() == 33
        && chars.all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// The `X-Line-Retry-Key` of a delivery: a UUID (RFC 9562 version 8, the
/// application-defined kind) made of the first 16 bytes of the SHA-256 of its
/// idempotency key, so the same delivery always carries the same key.
pub fn retry_key(idempotency_key: &str) -> String {
    let digest = Sha256::digest(format!("mimamori-line-retry:{idempotency_key}").as_bytes());
    let mut b = [0_u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `X-Line-Signature` of a body: base64 of its HMAC-SHA256 under the channel secret.
pub fn signature(channel_secret: &str, body: &[u8]) -> String {
    use base64::Engine;
    // HMAC accepts keys of any length, so this cannot fail.
    Hmac::<Sha256>::new_from_slice(channel_secret.as_bytes())
        .map(|mut mac| {
            mac.update(body);
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        })
        .unwrap_or_default()
}

/// Whether `header` is the signature of `body` under the channel secret; the tags are
/// compared in constant time.
pub fn verify_signature(channel_secret: &str, body: &[u8], header: &str) -> bool {
    use base64::Engine;
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(header.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(channel_secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// What a "確認しました" postback carries: enough to find the alert, the contact who was
/// told, and the delivery that told them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub alert_id: i64,
    pub contact_id: i64,
    pub idempotency_key: String,
}

impl Confirm {
    /// `confirm?alert=…&contact=…&key=…`, at most 300 characters as LINE requires.
    pub fn data(&self) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("alert", &self.alert_id.to_string())
            .append_pair("contact", &self.contact_id.to_string())
            .append_pair("key", &self.idempotency_key)
            .finish();
        format!("confirm?{query}")
    }

    pub fn parse(data: &str) -> Option<Confirm> {
        let query = data.strip_prefix("confirm?")?;
        let (mut alert, mut contact, mut key) = (None, None, None);
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "alert" => alert = v.parse().ok(),
                "contact" => contact = v.parse().ok(),
                "key" => key = Some(v.into_owned()),
                _ => {}
            }
        }
        Some(Confirm {
            alert_id: alert?,
            contact_id: contact?,
            idempotency_key: key?,
        })
    }

    /// Whether the idempotency key is one the alert core gives a notice about this
    /// alert to this contact (`alert-{id}-…-contact-{contact}`).
    pub fn key_matches(&self) -> bool {
        self.idempotency_key
            .starts_with(&format!("alert-{}-", self.alert_id))
            && self
                .idempotency_key
                .ends_with(&format!("-contact-{}", self.contact_id))
    }
}

/// The words of the button, in the contact's language.
#[derive(Debug, Clone)]
pub struct ButtonWords {
    pub confirm: String,
    pub open: String,
}

/// `s` cut to `max` characters, with an ellipsis when cut.
pub(super) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The link to the alert on the dashboard, if the hub knows its public address.
pub fn alert_link(public_url: Option<&reqwest::Url>, notice: &Notice) -> Option<String> {
    let base = public_url?;
    let alert = notice.alert.as_ref()?;
    Some(format!(
        "{}/#/alert/{}",
        base.as_str().trim_end_matches('/'),
        alert.id
    ))
}

/// The push request's JSON body: the text, and the button while it can still matter.
pub fn body(
    item: &OutboxItem,
    notice: &Notice,
    msg: &Message,
    words: &ButtonWords,
    link: Option<&str>,
    offer_confirm: bool,
) -> Value {
    let mut text = msg.text.trim_end().to_string();
    if let Some(link) = link {
        text.push_str("\n\n");
        text.push_str(link);
    }
    let mut messages = vec![json!({ "type": "text", "text": clip(&text, MAX_TEXT) })];
    let open = matches!(
        notice.event,
        NoticeEvent::Opened | NoticeEvent::Escalated | NoticeEvent::Reminder
    );
    let confirm = match (offer_confirm && open, &notice.alert, item.contact_id) {
        (true, Some(alert), Some(contact_id)) => Some(Confirm {
            alert_id: alert.id,
            contact_id,
            idempotency_key: item.idempotency_key.clone(),
        }),
        _ => None,
    };
    if let Some(c) = confirm {
        let mut actions = vec![json!({
            "type": "postback",
            "label": clip(&words.confirm, 20),
            "data": c.data(),
            "displayText": words.confirm,
        })];
        if let Some(link) = link {
            actions.push(json!({ "type": "uri", "label": clip(&words.open, 20), "uri": link }));
        }
        messages.push(json!({
            "type": "template",
            "altText": clip(&msg.subject, MAX_ALT_TEXT),
            "template": {
                "type": "buttons",
                "text": clip(&msg.subject, MAX_BUTTONS_TEXT),
                "actions": actions,
            },
        }));
    }
    json!({ "to": item.address, "messages": messages })
}

/// Messages sent in the current month.
#[derive(Debug, Default)]
struct Month {
    /// Year and month in Japan time.
    month: (i32, u32),
    sent: u64,
    /// The share of the quota (80 or 100) last warned about this month.
    warned: u8,
}

/// Counts messages against the plan's monthly quota.
pub struct Quota {
    quota: u64,
    month: Mutex<Month>,
    metrics: Arc<Metrics>,
}

impl Quota {
    pub fn new(quota: u64, metrics: Arc<Metrics>) -> Quota {
        Quota {
            quota,
            month: Mutex::new(Month::default()),
            metrics,
        }
    }

    /// The start of the month (Japan time) that `now` falls in.
    pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
        let jst = now.with_timezone(&chrono_tz::Asia::Tokyo);
        jst.date_naive()
            .with_day(1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|t| t.and_local_timezone(chrono_tz::Asia::Tokyo).earliest())
            .map_or(now, |t| t.with_timezone(&Utc))
    }

    /// Starts the count of `now`'s month at `sent` (the messages the store shows
    /// delivered this month), warning at once if that is already near the quota.
    pub fn resume(&self, now: DateTime<Utc>, sent: u64) {
        let mut m = self.month.lock().unwrap_or_else(|e| e.into_inner());
        *m = Month {
            month: month_of(now),
            sent,
            warned: 0,
        };
        self.note(&mut m);
    }

    /// Counts one message sent at `now`; returns the month's count so far.
    pub fn record(&self, now: DateTime<Utc>) -> u64 {
        let key = month_of(now);
        let mut m = self.month.lock().unwrap_or_else(|e| e.into_inner());
        if m.month != key {
            *m = Month {
                month: key,
                ..Month::default()
            };
        }
        m.sent += 1;
        self.metrics.line_messages.inc();
        self.note(&mut m);
        m.sent
    }

    /// Shows the month's count and warns once per month at each threshold.
    fn note(&self, m: &mut Month) {
        self.metrics
            .line_messages_month
            .set(i64::try_from(m.sent).unwrap_or(i64::MAX));
        let share = if m.sent >= self.quota {
            100
        } else if m.sent.saturating_mul(5) >= self.quota.saturating_mul(4) {
            80
        } else {
            0
        };
        if share > m.warned {
            m.warned = share;
            warn!(
                sent = m.sent,
                quota = self.quota,
                "LINE messages this month have reached {share} % of line_monthly_quota; \
                 beyond the plan's allowance LINE refuses pushes (429) or charges for them"
            );
        }
    }
}

fn month_of(now: DateTime<Utc>) -> (i32, u32) {
    let jst = now.with_timezone(&chrono_tz::Asia::Tokyo);
    (jst.year(), jst.month())
}

/// LINE's error body: `{"message": "...", "details": [{"message", "property"}]}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    message: Option<String>,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    property: Option<String>,
}

/// LINE's reason from an error body, or the raw text (clipped) when it is not JSON.
fn reason(body: &str) -> String {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => {
            let mut out = e.message.unwrap_or_else(|| "no reason given".into());
            for d in e.details {
                let m = d.message.unwrap_or_default();
                match d.property {
                    Some(p) => out.push_str(&format!("; {p}: {m}")),
                    None => out.push_str(&format!("; {m}")),
                }
            }
            clip(&out, 500)
        }
        Err(_) if body.trim().is_empty() => "no reason given".into(),
        Err(_) => clip(body.trim(), 200),
    }
}

/// The seconds of a `Retry-After` answer, at most a day.
pub(super) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// What the channel needs besides the delivery itself.
pub struct Line {
    pub cfg: LineConfig,
    pub quota: Quota,
    pub public_url: Option<reqwest::Url>,
}

impl Line {
    pub async fn send(
        &self,
        http: &reqwest::Client,
        item: &OutboxItem,
        notice: &Notice,
        msg: &Message,
        words: &ButtonWords,
        now: DateTime<Utc>,
    ) -> Result<(), SendError> {
        let link = alert_link(self.public_url.as_ref(), notice);
        let body = body(
            item,
            notice,
            msg,
            words,
            link.as_deref(),
            self.cfg.channel_secret.is_some(),
        );
        let url =
            self.cfg.api_base.join(PUSH_PATH).map_err(|e| {
                SendError::permanent(format!("line_api_base cannot be joined: {e}"))
            })?;
        let res = http
            .post(url)
            .bearer_auth(self.cfg.access_token.expose())
            .header(RETRY_KEY_HEADER, retry_key(&item.idempotency_key))
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                SendError::transient(format!("LINE request failed: {}", e.without_url()))
            })?;
        let status = res.status();
        // 409: this retry key was accepted before (an earlier attempt whose answer was lost).
        if status.is_success() || status == reqwest::StatusCode::CONFLICT {
            self.quota.record(now);
            return Ok(());
        }
        let wait = retry_after(res.headers());
        let text = res.text().await.unwrap_or_default();
        let why = reason(&text);
        match status.as_u16() {
            429 => Err(
                SendError::transient(format!("LINE answered {status}: {why}")).retry_after(wait),
            ),
            400 | 401 | 403 | 404 => Err(SendError::permanent(format!(
                "LINE refused the message ({status}): {why}"
            ))),
            _ => Err(SendError::transient(format!(
                "LINE answered {status}: {why}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_group_ids_are_valid_and_nothing_else() {
        assert!(valid_id("U4af4980629a1b2c3d4e5f60718293a4b"));
        assert!(valid_id("C4af4980629a1b2c3d4e5f60718293a4b"));
        for bad in [
            "",
            "U",
            "U4af4980629a1b2c3d4e5f60718293a4",
            "U4af4980629a1b2c3d4e5f60718293a4bb",
            "U4AF4980629A1B2C3D4E5F60718293A4B",
            "R4af4980629a1b2c3d4e5f60718293a4b",
            "u4af4980629a1b2c3d4e5f60718293a4b",
            "U4af4980629a1b2c3d4e5f60718293a4g",
            "Uあf4980629a1b2c3d4e5f60718293a4",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_retry_key_is_a_stable_uuid_per_delivery() {
        let a = retry_key("alert-7-opened-contact-3");
        assert_eq!(a, retry_key("alert-7-opened-contact-3"));
        assert_ne!(a, retry_key("alert-7-reminder-1-contact-3"));
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert!(parts[2].starts_with('8'), "version 8: {a}");
        assert!(matches!(
            parts[3].chars().next(),
            Some('8' | '9' | 'a' | 'b')
        ));
    }

    #[test]
    fn the_signature_is_base64_of_the_hmac_and_checked() {
        // printf '{"events":[]}' | openssl dgst -sha256 -hmac s3cret -binary | base64
        let body = br#"{"events":[]}"#;
        let sig = signature("s3cret", body);
        assert_eq!(sig, "ZuVY0DkZxvoGXoj+QPBt7+gZL2ow1Kpy+nm913XvpIw=");
        assert!(verify_signature("s3cret", body, &sig));
        assert!(!verify_signature("other", body, &sig));
        assert!(!verify_signature("s3cret", br#"{"events":[1]}"#, &sig));
        assert!(!verify_signature("s3cret", body, ""));
        assert!(!verify_signature("s3cret", body, "not base64!"));
        assert!(!verify_signature("s3cret", body, &sig[..20]));
    }

    #[test]
    fn postback_data_round_trips_and_binds_key_to_alert_and_contact() {
        let c = Confirm {
            alert_id: 12,
            contact_id: 5,
            idempotency_key: "alert-12-escalated-1-contact-5".into(),
        };
        let data = c.data();
        assert!(data.len() <= 300);
        assert_eq!(Confirm::parse(&data), Some(c.clone()));
        assert!(c.key_matches());
        assert!(!Confirm {
            contact_id: 6,
            ..c.clone()
        }
        .key_matches());
        assert!(!Confirm { alert_id: 1, ..c }.key_matches());
        assert_eq!(Confirm::parse("alert=12&contact=5"), None);
        assert_eq!(Confirm::parse("confirm?alert=x&contact=5&key=k"), None);
    }

    #[test]
    fn line_reasons_come_from_the_json_body() {
        assert_eq!(
            reason(
                r#"{"message":"The request body has 1 error(s)","details":[{"message":"May not be empty","property":"messages[0].text"}]}"#
            ),
            "The request body has 1 error(s); messages[0].text: May not be empty"
        );
        assert_eq!(reason(""), "no reason given");
        assert_eq!(reason("Bad Gateway"), "Bad Gateway");
    }

    #[test]
    fn quota_warns_at_eighty_percent_and_starts_again_each_month() {
        let q = Quota::new(5, Arc::new(Metrics::new()));
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(DateTime::UNIX_EPOCH)
        };
        for _ in 0..3 {
            q.record(t("2026-11-30T10:00:00Z"));
        }
        assert_eq!(q.month.lock().map(|m| m.warned).unwrap_or(0), 0);
        assert_eq!(q.record(t("2026-11-30T10:00:00Z")), 4);
        assert_eq!(q.month.lock().map(|m| m.warned).unwrap_or(0), 80);
        // 15:00 UTC on the 30th is already December in Japan.
        assert_eq!(q.record(t("2026-11-30T15:00:00Z")), 1);
        assert_eq!(q.month.lock().map(|m| m.warned).unwrap_or(1), 0);
        assert_eq!(
            Quota::month_start(t("2026-11-30T15:00:00Z")),
            t("2026-11-30T15:00:00Z")
        );
        assert_eq!(
            Quota::month_start(t("2026-11-30T14:59:59Z")),
            t("2026-10-31T15:00:00Z")
        );
        // After a restart the month goes on from what the store shows delivered.
        q.resume(t("2026-12-02T00:00:00Z"), 4);
        assert_eq!(q.month.lock().map(|m| m.warned).unwrap_or(0), 80);
        assert_eq!(q.record(t("2026-12-02T00:01:00Z")), 5);
        assert_eq!(q.month.lock().map(|m| m.warned).unwrap_or(0), 100);
    }
}
