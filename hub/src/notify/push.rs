//! The Web Push channel: a notification on the lock screen of every browser a hub user
//! subscribed (RFC 8030), encrypted for that browser (aes128gcm, RFC 8291) and signed
//! with the hub's VAPID key (RFC 8292).
//!
//! A contact of channel `push` names a hub user (staff or family); one delivery to it
//! is one POST to the push service of each of that user's subscriptions. The VAPID key
//! pair is made at first start and kept in the store ([`Vapid::load`]); browsers
//! subscribe with its public half (`GET /api/v1/push/key`, see [`crate::api::push`]).
//!
//! Answers, per subscription: 2xx delivered; 404 and 410 mean the browser unsubscribed or
//! the subscription expired, so it is removed; 429 waits for its `Retry-After`; 400,
//! 401, 403 and 413 are given up with the service's reason; anything else is retried.
//! A retry goes to every subscription again: the service worker shows each notice with
//! the alert's tag, so a repeat replaces the notification rather than adding one.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mimamori_protocol::Severity;
use serde_json::{json, Value};
use tracing::info;
use web_push_native::jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair,
};
use web_push_native::jwt_simple::claims::Claims;
use web_push_native::p256;

use super::line::{clip, retry_after};
use super::message::{Message, Notice};
use super::policy::NoticeEvent;
use super::SendError;
use crate::metrics::Metrics;
use crate::store::{OutboxItem, PushSubscriptionRow, Store};

/// How long a VAPID signature is valid; RFC 8292 allows at most 24 hours.
const JWT_VALID: Duration = Duration::from_secs(12 * 3600);
/// Push services must accept 4096 bytes of encrypted payload (RFC 8030 §7.2); aes128gcm
/// adds 103 bytes of header and tag, and the text is kept well under the rest.
const MAX_BODY_CHARS: usize = 600;
const MAX_TITLE_CHARS: usize = 120;
/// Longest endpoint URL accepted.
const MAX_ENDPOINT: usize = 2048;

/// Who may subscribe what.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The VAPID `sub` claim: a `mailto:` or `https:` address push services may use to
    /// reach the hub's operator. Apple's service refuses messages without one.
    pub subject: Option<String>,
    /// Accept `http://` endpoints on loopback addresses (for tests against a local push
    /// service); real push services are always `https://`.
    pub allow_http_loopback: bool,
    /// Subscriptions one user may have.
    pub max_per_user: i64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            subject: None,
            allow_http_loopback: false,
            max_per_user: 10,
        }
    }
}

/// The hub's VAPID key pair.
#[derive(Clone)]
pub struct Vapid {
    key: Arc<ES256KeyPair>,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vapid({})", self.public_key())
    }
}

impl Vapid {
    /// The stored key pair, or a new one stored now when the hub starts for the first time.
    pub async fn load(
        store: &dyn Store,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<Vapid> {
        let fresh = URL_SAFE_NO_PAD.encode(ES256KeyPair::generate().to_bytes());
        let stored = store.vapid_key(&fresh, now).await?;
        Vapid::from_private(&stored)
    }

    /// From base64url of the private scalar.
    pub fn from_private(b64: &str) -> anyhow::Result<Vapid> {
        let raw = decode_b64url(b64)
            .ok_or_else(|| anyhow::anyhow!("the stored VAPID key is not base64url"))?;
        let key = ES256KeyPair::from_bytes(&raw)
            .map_err(|e| anyhow::anyhow!("the stored VAPID key is not a P-256 key: {e}"))?;
        Ok(Vapid { key: Arc::new(key) })
    }

    /// The `applicationServerKey`: base64url of the uncompressed public point.
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.public_key().public_key().to_bytes_uncompressed())
    }

    /// `Authorization: vapid t=…, k=…` for a request to `endpoint`: the JWT's audience is
    /// the endpoint's origin, port included.
    pub fn authorization(
        &self,
        endpoint: &reqwest::Url,
        subject: Option<&str>,
    ) -> Result<String, String> {
        let origin = endpoint.origin().ascii_serialization();
        let mut claims = Claims::create(JWT_VALID.into()).with_audience(origin);
        if let Some(s) = subject {
            claims = claims.with_subject(s);
        }
        let token = self
            .key
            .sign(claims)
            .map_err(|e| format!("cannot sign the VAPID token: {e}"))?;
        Ok(format!("vapid t={token}, k={}", self.public_key()))
    }
}

/// Browsers send base64url without padding; some libraries pad it.
fn decode_b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim().trim_end_matches('=')).ok()
}

/// A browser's keys, decoded and checked.
pub struct BrowserKeys {
    pub public: p256::PublicKey,
    pub auth: web_push_native::Auth,
}

/// Checks `p256dh` (an uncompressed P-256 point) and `auth` (16 bytes).
pub fn browser_keys(p256dh: &str, auth: &str) -> Result<BrowserKeys, String> {
    let point = decode_b64url(p256dh).ok_or("keys.p256dh is not base64url")?;
    if point.len() != 65 || point.first() != Some(&4) {
        return Err("keys.p256dh must be an uncompressed P-256 public key (65 bytes)".into());
    }
    let public = p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|_| "keys.p256dh is not a point on P-256".to_string())?;
    let secret = decode_b64url(auth).ok_or("keys.auth is not base64url")?;
    if secret.len() != 16 {
        return Err("keys.auth must be 16 bytes".into());
    }
    Ok(BrowserKeys {
        public,
        auth: web_push_native::Auth::clone_from_slice(&secret),
    })
}

/// Checks a subscription's endpoint: `https://`, or `http://` to a loopback address when
/// the configuration allows it.
pub fn valid_endpoint(endpoint: &str, cfg: &PushConfig) -> Result<reqwest::Url, String> {
    if endpoint.len() > MAX_ENDPOINT {
        return Err(format!("endpoint is longer than {MAX_ENDPOINT} characters"));
    }
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| format!("endpoint {endpoint:?} is not a URL: {e}"))?;
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(format!("endpoint {endpoint:?} has no host"));
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback && cfg.allow_http_loopback => Ok(url),
        "http" if loopback => Err(format!(
            "endpoint {endpoint:?} is http://; allowed only with push_allow_http_loopback"
        )),
        _ => Err(format!("endpoint {endpoint:?} must be an https:// URL")),
    }
}

/// RFC 8030 `Urgency`: a critical alert wakes the phone, a summary may wait for Wi-Fi.
pub fn urgency(notice: &Notice) -> &'static str {
    match (notice.event, notice.alert.as_ref().map(|a| a.severity)) {
        (NoticeEvent::DailySummary, _) => "low",
        (NoticeEvent::Resolved, _) => "normal",
        (_, Some(Severity::Critical)) => "high",
        (_, Some(Severity::High)) => "normal",
        _ => "low",
    }
}

/// RFC 8030 `TTL`, seconds the push service keeps a message for a phone that is off.
/// A critical alert is worth telling a day late; "resolved" soon stops mattering.
pub fn ttl(notice: &Notice) -> u32 {
    match (notice.event, notice.alert.as_ref().map(|a| a.severity)) {
        (NoticeEvent::Resolved, _) => 3600,
        (NoticeEvent::DailySummary, _) => 12 * 3600,
        (_, Some(Severity::Critical)) => 24 * 3600,
        _ => 6 * 3600,
    }
}

/// The tag the service worker shows the notice under, and the `Topic` that lets the push
/// service replace a notice of the same alert still waiting for the phone.
pub fn tag(item: &OutboxItem, notice: &Notice) -> String {
    match &notice.alert {
        Some(a) => format!("alert-{}", a.id),
        // Summary keys are `summary-{resident}-{contact}-{date}`: only URL-safe characters.
        None => item.idempotency_key.chars().take(32).collect(),
    }
}

/// The JSON the service worker reads (`dashboard/sw.js`): rendered in the contact's
/// language, with the link that opens the alert.
pub fn payload(
    item: &OutboxItem,
    notice: &Notice,
    msg: &Message,
    public_url: Option<&reqwest::Url>,
) -> Value {
    let path = match &notice.alert {
        Some(a) => format!("/#/alert/{}", a.id),
        None => "/#/residents".to_string(),
    };
    let url = match public_url {
        Some(base) => format!("{}{path}", base.as_str().trim_end_matches('/')),
        None => path,
    };
    let severity = notice.alert.as_ref().map(|a| a.severity.as_str());
    json!({
        "title": clip(&msg.subject, MAX_TITLE_CHARS),
        "body": clip(msg.text.trim(), MAX_BODY_CHARS),
        "url": url,
        "tag": tag(item, notice),
        "event": notice.event.as_str(),
        "severity": severity,
        "resident": notice.resident.name,
        "alert_id": notice.alert.as_ref().map(|a| a.id),
        "lang": item.language.as_str(),
        "require_interaction": severity == Some("critical"),
    })
}

/// What one subscription's push service said.
enum Answer {
    Delivered,
    Gone,
    Failed(SendError),
}

/// What the channel needs besides the delivery itself.
pub struct Push {
    pub vapid: Vapid,
    pub cfg: PushConfig,
    pub public_url: Option<reqwest::Url>,
    pub metrics: Arc<Metrics>,
}

/// The headers of one push, the same for each of the user's browsers.
struct Envelope<'a> {
    body: &'a [u8],
    ttl: u32,
    urgency: &'static str,
    topic: String,
}

impl Push {
    pub async fn send(
        &self,
        http: &reqwest::Client,
        store: &dyn Store,
        item: &OutboxItem,
        notice: &Notice,
        msg: &Message,
    ) -> Result<(), SendError> {
        let user = store
            .user_by_name(&item.address)
            .await
            .map_err(|e| SendError::transient(format!("cannot read user {:?}: {e}", item.address)))?
            .ok_or_else(|| {
                SendError::permanent(format!("no user {:?} to push to", item.address))
            })?;
        let subs = store
            .push_subscriptions(user.user.id)
            .await
            .map_err(|e| SendError::transient(format!("cannot read push subscriptions: {e}")))?;
        if subs.is_empty() {
            return Err(SendError::permanent(format!(
                "user {:?} has no browser with notifications enabled",
                item.address
            )));
        }
        let body = payload(item, notice, msg, self.public_url.as_ref()).to_string();
        let env = Envelope {
            body: body.as_bytes(),
            ttl: ttl(notice),
            urgency: urgency(notice),
            topic: tag(item, notice),
        };
        let mut delivered = 0;
        let mut gone = 0;
        let mut failures = Vec::new();
        for sub in &subs {
            match self.send_one(http, sub, &env).await {
                Answer::Delivered => delivered += 1,
                Answer::Gone => {
                    gone += 1;
                    self.remove(store, sub).await;
                }
                Answer::Failed(e) => failures.push(e),
            }
        }
        outcome(delivered, gone, failures)
    }

    async fn remove(&self, store: &dyn Store, sub: &PushSubscriptionRow) {
        self.metrics.push_subscriptions_expired.inc();
        match store.delete_push_subscription(sub.id, sub.user_id).await {
            Ok(()) => info!(
                subscription = sub.id,
                user = sub.user_id,
                "push subscription expired; removed"
            ),
            Err(e) => {
                tracing::warn!(subscription = sub.id, error = %e, "cannot remove an expired push subscription")
            }
        }
    }

    async fn send_one(
        &self,
        http: &reqwest::Client,
        sub: &PushSubscriptionRow,
        env: &Envelope<'_>,
    ) -> Answer {
        let failed = |e: String| Answer::Failed(SendError::permanent(e));
        let keys = match browser_keys(&sub.p256dh, &sub.auth) {
            Ok(k) => k,
            Err(e) => return failed(format!("subscription {}: {e}", sub.id)),
        };
        let endpoint = match reqwest::Url::parse(&sub.endpoint) {
            Ok(u) => u,
            Err(e) => return failed(format!("subscription {}: endpoint: {e}", sub.id)),
        };
        let auth = match self
            .vapid
            .authorization(&endpoint, self.cfg.subject.as_deref())
        {
            Ok(a) => a,
            Err(e) => return failed(e),
        };
        let sealed = match web_push_native::encrypt(env.body.to_vec(), &keys.public, &keys.auth) {
            Ok(b) => b,
            Err(e) => return failed(format!("cannot encrypt the push message: {e}")),
        };
        let res = http
            .post(endpoint)
            .header("TTL", env.ttl.to_string())
            .header("Urgency", env.urgency)
            .header("Topic", &env.topic)
            .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::AUTHORIZATION, auth)
            .body(sealed)
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                return Answer::Failed(SendError::transient(format!("push request failed: {e}")))
            }
        };
        let status = res.status();
        if status.is_success() {
            self.metrics.push_messages.inc();
            return Answer::Delivered;
        }
        let wait = retry_after(res.headers());
        let why = clip(res.text().await.unwrap_or_default().trim(), 200);
        let why = if why.is_empty() {
            "no reason given".into()
        } else {
            why
        };
        match status.as_u16() {
            404 | 410 => Answer::Gone,
            400 | 401 | 403 | 413 => failed(format!(
                "push service refused the message ({status}): {why}"
            )),
            429 => Answer::Failed(
                SendError::transient(format!("push service answered {status}: {why}"))
                    .retry_after(wait),
            ),
            _ => Answer::Failed(SendError::transient(format!(
                "push service answered {status}: {why}"
            ))),
        }
    }
}

/// One delivery's result from its browsers' answers: retried while any browser may still
/// take it, given up when none can.
fn outcome(delivered: usize, gone: usize, failures: Vec<SendError>) -> Result<(), SendError> {
    let transient: Vec<&SendError> = failures
        .iter()
        .filter(|e| e.outcome == super::policy::Outcome::Transient)
        .collect();
    if let Some(first) = transient.first() {
        let wait = transient.iter().filter_map(|e| e.retry_after).max();
        return Err(SendError::transient(first.message.clone()).retry_after(wait));
    }
    if delivered > 0 {
        return Ok(());
    }
    match failures.into_iter().next() {
        Some(e) => Err(e),
        None => Err(SendError::permanent(format!(
            "every subscription ({gone}) had expired (404/410) and was removed"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        decode_b64url(s).unwrap_or_default()
    }

    /// RFC 8291 Appendix A, the worked example: the browser's keys, the application
    /// server's key and salt, and the message they give. The hub's encryption picks its
    /// own salt and key for each message, so the example is checked from the browser's
    /// side (what a browser must read), and the hub's output is then read the same way.
    #[test]
    fn rfc_8291_worked_example() -> Result<(), String> {
        let plaintext = b"When I grow up, I want to be a watermelon";
        let ua_private = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
        let ua_public = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
        let as_public = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
        let auth = "BTBZMqHH6r4Tts7J_aSIgg";
        let salt = "DGv6ra1nlYgDCS1FRnbzlw";
        let message = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

        let keys = browser_keys(ua_public, auth)?;
        let secret = p256::SecretKey::from_slice(&b64(ua_private)).map_err(|e| e.to_string())?;
        assert_eq!(secret.public_key(), keys.public);
        let body = b64(message);
        // The header: salt, record size 4096, the application server's public key.
        assert_eq!(body[..16], b64(salt)[..]);
        assert_eq!(body[16..20], 4096_u32.to_be_bytes());
        assert_eq!(usize::from(body[20]), 65);
        assert_eq!(body[21..86], b64(as_public)[..]);
        let opened = web_push_native::decrypt(body.clone(), &secret, &keys.auth)
            .map_err(|e| e.to_string())?;
        assert_eq!(opened, plaintext);
        // One changed byte and the record no longer authenticates.
        let mut bad = body;
        if let Some(b) = bad.last_mut() {
            *b ^= 1;
        }
        assert!(web_push_native::decrypt(bad, &secret, &keys.auth).is_err());

        let sealed = web_push_native::encrypt(plaintext.to_vec(), &keys.public, &keys.auth)
            .map_err(|e| e.to_string())?;
        assert_ne!(sealed[..16], b64(salt)[..], "a fresh salt per message");
        let opened =
            web_push_native::decrypt(sealed, &secret, &keys.auth).map_err(|e| e.to_string())?;
        assert_eq!(opened, plaintext);
        Ok(())
    }

    #[test]
    fn vapid_header_names_the_endpoint_origin_and_the_subject() -> anyhow::Result<()> {
        use web_push_native::jwt_simple::algorithms::ES256PublicKey;
        use web_push_native::jwt_simple::claims::NoCustomClaims;
        use web_push_native::jwt_simple::common::VerificationOptions;
        let vapid =
            Vapid::from_private(&URL_SAFE_NO_PAD.encode(ES256KeyPair::generate().to_bytes()))?;
        let again = Vapid::from_private(&URL_SAFE_NO_PAD.encode(vapid.key.to_bytes()))?;
        assert_eq!(vapid.public_key(), again.public_key());
        let endpoint = reqwest::Url::parse("http://127.0.0.1:8123/push/abc")?;
        let header = vapid
            .authorization(&endpoint, Some("mailto:ops@example.org"))
            .map_err(anyhow::Error::msg)?;
        let rest = header
            .strip_prefix("vapid t=")
            .ok_or_else(|| anyhow::anyhow!("{header}"))?;
        let (token, k) = rest
            .split_once(", k=")
            .ok_or_else(|| anyhow::anyhow!("{header}"))?;
        assert_eq!(k, vapid.public_key());
        let key = ES256PublicKey::from_bytes(&b64(k))?;
        let opts = VerificationOptions {
            allowed_audiences: Some(["http://127.0.0.1:8123".to_string()].into()),
            ..VerificationOptions::default()
        };
        let claims = key.verify_token::<NoCustomClaims>(token, Some(opts))?;
        assert_eq!(claims.subject.as_deref(), Some("mailto:ops@example.org"));
        let exp = claims.expires_at.map(|t| t.as_secs()).unwrap_or(0);
        let now = chrono::Utc::now().timestamp().unsigned_abs();
        assert!(exp > now && exp <= now + 24 * 3600, "exp {exp}, now {now}");
        let other = VerificationOptions {
            allowed_audiences: Some(["http://127.0.0.1".to_string()].into()),
            ..VerificationOptions::default()
        };
        assert!(key
            .verify_token::<NoCustomClaims>(token, Some(other))
            .is_err());
        Ok(())
    }

    #[test]
    fn endpoints_are_https_or_loopback_http_when_allowed() {
        let strict = PushConfig::default();
        let tests = PushConfig {
            allow_http_loopback: true,
            ..PushConfig::default()
        };
        assert!(valid_endpoint("https://fcm.googleapis.com/fcm/send/abc", &strict).is_ok());
        assert!(valid_endpoint("http://127.0.0.1:9/push", &strict).is_err());
        assert!(valid_endpoint("http://127.0.0.1:9/push", &tests).is_ok());
        assert!(valid_endpoint("http://[::1]:9/push", &tests).is_ok());
        assert!(valid_endpoint("http://localhost:9/push", &tests).is_ok());
        for bad in [
            "http://push.example.org/x",
            "ftp://127.0.0.1/x",
            "not a url",
            "https://",
            "mailto:a@b.example",
        ] {
            assert!(valid_endpoint(bad, &tests).is_err(), "{bad}");
        }
        assert!(
            valid_endpoint(&format!("https://a.example/{}", "x".repeat(3000)), &tests).is_err()
        );
    }

    #[test]
    fn browser_keys_are_checked() {
        let p = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
        let a = "BTBZMqHH6r4Tts7J_aSIgg";
        assert!(browser_keys(p, a).is_ok());
        assert!(browser_keys(p, &format!("{a}==")).is_ok());
        assert!(browser_keys(&p[..40], a).is_err());
        assert!(browser_keys(p, "BTBZMqHH6r4T").is_err());
        assert!(browser_keys("not base64!", a).is_err());
        // 65 bytes beginning with 4 but not on the curve.
        let off_curve = URL_SAFE_NO_PAD.encode([[4_u8].as_slice(), &[1_u8; 64]].concat());
        assert!(browser_keys(&off_curve, a).is_err());
    }

    #[test]
    fn transient_failures_win_then_any_delivery_then_the_first_reason() {
        let t = || SendError::transient("503").retry_after(Some(Duration::from_secs(3)));
        let p = || SendError::permanent("403");
        assert!(outcome(1, 0, vec![]).is_ok());
        assert!(outcome(1, 1, vec![p()]).is_ok());
        let e = outcome(1, 0, vec![t(), SendError::transient("x")]).err();
        assert_eq!(
            e.as_ref().and_then(|e| e.retry_after),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            e.map(|e| e.outcome),
            Some(super::super::policy::Outcome::Transient)
        );
        assert_eq!(
            outcome(0, 0, vec![p()]).err().map(|e| e.message),
            Some("403".into())
        );
        let gone = outcome(0, 2, vec![]).err();
        assert_eq!(
            gone.as_ref().map(|e| e.outcome),
            Some(super::super::policy::Outcome::Permanent)
        );
        assert!(gone
            .map(|e| e.message)
            .unwrap_or_default()
            .contains("expired"));
    }
}
