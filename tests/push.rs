//! Web Push end to end: a local push service (an HTTP receiver on a free port) that
//! reads each message as a browser would, decrypting it with the subscription's private
//! keys and checking the VAPID signature; the real hub process; an SOS over MQTT.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256PublicKey};
use web_push_native::jwt_simple::claims::NoCustomClaims;
use web_push_native::jwt_simple::common::VerificationOptions;
use web_push_native::p256;

use crate::helpers::*;
use crate::notify::{add_contact, press_sos, wait_deliveries};

const SUBJECT: &str = "mailto:ops@example.org";

/// One message the push service received for one subscription.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct Plan {
    received: HashMap<String, Vec<Received>>,
    /// Statuses to answer next, per subscription; 201 when none is left.
    answers: HashMap<String, VecDeque<u16>>,
}

/// A push service: `POST /push/{subscription}`.
#[derive(Clone, Default)]
struct PushService {
    plan: Arc<Mutex<Plan>>,
    origin: String,
}

async fn receive(
    State(svc): State<PushService>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    svc.with_plan(|p| {
        p.received.entry(name.clone()).or_default().push(Received {
            headers,
            body: body.to_vec(),
        });
        let status = p
            .answers
            .get_mut(&name)
            .and_then(VecDeque::pop_front)
            .unwrap_or(201);
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    })
}

impl PushService {
    async fn start() -> Result<PushService> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let svc = PushService {
            origin: format!("http://{}", listener.local_addr()?),
            ..PushService::default()
        };
        let app = axum::Router::new()
            .route("/push/{name}", axum::routing::post(receive))
            .with_state(svc.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(svc)
    }

    fn with_plan<T>(&self, f: impl FnOnce(&mut Plan) -> T) -> T {
        f(&mut self.plan.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn answer(&self, name: &str, statuses: &[u16]) {
        self.with_plan(|p| p.answers.entry(name.into()).or_default().extend(statuses));
    }

    fn received(&self, name: &str) -> Vec<Received> {
        self.with_plan(|p| p.received.get(name).cloned().unwrap_or_default())
    }
}

/// A browser's side of a subscription: its key pair and authentication secret.
struct Browser {
    name: String,
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new(name: &str) -> Browser {
        Browser {
            name: name.into(),
            secret: p256::SecretKey::random(&mut rand::rngs::OsRng),
            auth: rand::random(),
        }
    }

    /// `PushSubscription.toJSON()` as a browser gives it.
    fn subscription(&self, svc: &PushService) -> Value {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let public = self.secret.public_key().to_encoded_point(false);
        json!({
            "endpoint": format!("{}/push/{}", svc.origin, self.name),
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(public.as_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            },
        })
    }

    /// Decrypts a message as the browser would (RFC 8291) and reads its JSON.
    fn open(&self, r: &Received) -> Result<Value> {
        let auth = web_push_native::Auth::clone_from_slice(&self.auth);
        let plain = web_push_native::decrypt(r.body.clone(), &self.secret, &auth)
            .map_err(|e| anyhow!("cannot decrypt for {}: {e}", self.name))?;
        Ok(serde_json::from_slice(&plain)?)
    }
}

/// Checks the RFC 8292 `Authorization: vapid t=…, k=…` header of one message.
fn check_vapid(r: &Received, svc: &PushService, public_key: &str) -> Result<()> {
    let header = r.header("authorization");
    let rest = header
        .strip_prefix("vapid t=")
        .ok_or_else(|| anyhow!("not a vapid authorization: {header:?}"))?;
    let (token, k) = rest
        .split_once(", k=")
        .ok_or_else(|| anyhow!("no k= in {header:?}"))?;
    assert_eq!(k, public_key, "k is the key browsers subscribed with");
    let key = ES256PublicKey::from_bytes(&URL_SAFE_NO_PAD.decode(k)?)?;
    let opts = VerificationOptions {
        allowed_audiences: Some([svc.origin.clone()].into()),
        ..VerificationOptions::default()
    };
    let claims = key
        .verify_token::<NoCustomClaims>(token, Some(opts))
        .map_err(|e| anyhow!("VAPID token refused: {e}"))?;
    assert_eq!(claims.subject.as_deref(), Some(SUBJECT));
    let exp = claims.expires_at.map(|t| t.as_secs()).unwrap_or(0);
    let now = chrono::Utc::now().timestamp().unsigned_abs();
    if !(exp > now && exp <= now + 24 * 3600) {
        bail!("exp {exp} is not within 24 hours of now {now}");
    }
    Ok(())
}

async fn subscribe(hub: &TestHub, token: &str, body: Value) -> Result<(u16, Value)> {
    hub.call(Some(token), Method::POST, "/push/subscriptions", Some(body))
        .await
}

/// An SOS reaches the care worker's two browsers and the daughter's phone as encrypted
/// Web Push messages, each signed for its push service, with TTL and high urgency; a
/// 503 is retried, a 410 removes that subscription. Subscriptions are checked and
/// belong to the user who made them.
#[tokio::test]
async fn push_sos_reaches_each_browser_encrypted_and_signed() -> Result<()> {
    sos_reaches_each_browser(Backend::Sqlite).await
}

#[tokio::test]
async fn push_sos_reaches_each_browser_encrypted_and_signed_postgres() -> Result<()> {
    if skip_postgres("push_sos_reaches_each_browser_encrypted_and_signed_postgres") {
        return Ok(());
    }
    sos_reaches_each_browser(Backend::Postgres).await
}

async fn sos_reaches_each_browser(backend: Backend) -> Result<()> {
    let svc = PushService::start().await?;
    let hub = TestHub::start_with(
        backend,
        &[
            "--push-subject",
            SUBJECT,
            "--push-allow-http-loopback",
            "true",
            "--push-max-subscriptions",
            "2",
            "--notify-retry-base-ms",
            "100",
        ],
    )
    .await?;
    let rid = hub.resident(json!({"name": "Tanaka Hana"})).await?;
    let other = hub.resident(json!({"name": "Suzuki Jiro"})).await?;
    let care = hub.user("care1", "staff", &[]).await?;
    let yuki = hub.user("yuki", "family", &[rid]).await?;
    hub.user("jiro-son", "family", &[other]).await?;

    let (status, key) = hub
        .call(Some(&care), Method::GET, "/push/key", None)
        .await?;
    assert_eq!(status, 200, "{key}");
    let public_key = key["public_key"].as_str().unwrap_or("").to_string();
    assert_eq!(URL_SAFE_NO_PAD.decode(&public_key)?.len(), 65);
    assert_eq!(hub.call(None, Method::GET, "/push/key", None).await?.0, 401);

    // The care worker's phone and laptop (the laptop's service fails once), and the daughter's
    // old tablet (unsubscribed since: 410) and phone.
    let (phone, laptop) = (Browser::new("care-phone"), Browser::new("care-laptop"));
    let (tablet, yuki_phone) = (Browser::new("yuki-tablet"), Browser::new("yuki-phone"));
    svc.answer("care-laptop", &[503]);
    svc.answer("yuki-tablet", &[410]);
    for (token, b) in [
        (&care, &phone),
        (&care, &laptop),
        (&yuki, &tablet),
        (&yuki, &yuki_phone),
    ] {
        let (status, v) = subscribe(&hub, token, b.subscription(&svc)).await?;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["endpoint"], b.subscription(&svc)["endpoint"]);
        assert!(v.get("keys").is_none(), "keys are not shown back: {v}");
    }
    // Subscribing the same browser again is no new subscription; a third one is too many.
    assert_eq!(
        subscribe(&hub, &care, phone.subscription(&svc)).await?.0,
        201
    );
    let (status, v) = subscribe(&hub, &care, Browser::new("care-tv").subscription(&svc)).await?;
    assert_eq!(status, 409, "{v}");
    let mine = hub
        .call(Some(&care), Method::GET, "/push/subscriptions", None)
        .await?
        .1;
    assert_eq!(mine.as_array().map(Vec::len), Some(2), "{mine}");

    // Endpoints and keys are checked.
    let mut bad = Browser::new("x").subscription(&svc);
    bad["endpoint"] = json!("http://push.example.org/push/x");
    assert_eq!(subscribe(&hub, &yuki, bad.clone()).await?.0, 422);
    bad["endpoint"] = json!("ftp://127.0.0.1/push/x");
    assert_eq!(subscribe(&hub, &yuki, bad).await?.0, 422);
    let mut bad = Browser::new("x").subscription(&svc);
    bad["keys"]["p256dh"] = json!("BCVxsr7N_eNgVRqvHtD0zTZsEc6");
    let (status, v) = subscribe(&hub, &yuki, bad).await?;
    assert_eq!(status, 422);
    assert!(
        v["message"].as_str().unwrap_or("").contains("p256dh"),
        "{v}"
    );

    // Nobody removes another's subscription.
    let theirs = mine[0]["id"].as_i64().unwrap_or(0);
    let path = format!("/push/subscriptions/{theirs}");
    assert_eq!(
        hub.call(Some(&yuki), Method::DELETE, &path, None).await?.0,
        404
    );

    // Push contacts name users; a family user only for a resident they may see.
    let contact = |name: &str, relation: &str, user: &str, lang: &str| json!({"name": name, "relation": relation, "tier": 1, "channel": "push", "address": user, "language": lang});
    add_contact(&hub, rid, contact("Care worker", "staff", "care1", "en")).await?;
    add_contact(&hub, rid, contact("Sato Yuki", "family", "yuki", "ja")).await?;
    let path = format!("/residents/{rid}/contacts");
    for (user, why) in [("nobody", "no user"), ("jiro-son", "may not see")] {
        let (status, v) = hub
            .admin(
                Method::POST,
                &path,
                Some(contact("x", "family", user, "ja")),
            )
            .await?;
        assert_eq!(status, 422, "{v}");
        assert!(v["message"].as_str().unwrap_or("").contains(why), "{v}");
    }

    let alert_id = press_sos(&hub, rid).await?;
    let d = wait_deliveries(&hub, alert_id, "both push deliveries delivered", |d| {
        d.len() == 2 && d.iter().all(|x| x["state"] == "delivered")
    })
    .await?;
    assert!(d.iter().all(|x| x["channel"] == "push"));
    let attempts: Vec<i64> = d
        .iter()
        .map(|x| x["attempts"].as_i64().unwrap_or(0))
        .collect();
    let care_d = d
        .iter()
        .find(|x| x["contact_name"] == "Care worker")
        .ok_or_else(|| anyhow!("no delivery to the care worker: {d:?}"))?;
    assert_eq!(care_d["attempts"], 2, "the 503 was retried: {attempts:?}");

    let expect = [
        (&phone, "en", 2),
        (&laptop, "en", 2),
        (&tablet, "ja", 1),
        (&yuki_phone, "ja", 1),
    ];
    for (browser, lang, count) in expect {
        let got = svc.received(&browser.name);
        assert_eq!(got.len(), count, "messages to {}", browser.name);
        for r in &got {
            assert_eq!(r.header("content-encoding"), "aes128gcm");
            assert_eq!(r.header("ttl"), "86400", "a critical alert is kept a day");
            assert_eq!(r.header("urgency"), "high");
            assert_eq!(r.header("topic"), format!("alert-{alert_id}"));
            check_vapid(r, &svc, &public_key)?;
            let n = browser.open(r)?;
            assert_eq!(n["resident"], "Tanaka Hana", "{n}");
            assert_eq!(n["lang"], lang, "{n}");
            assert_eq!(n["url"], format!("/#/alert/{alert_id}"), "{n}");
            assert_eq!(n["tag"], format!("alert-{alert_id}"), "{n}");
            assert_eq!(n["severity"], "critical");
            let text = format!("{} {}", n["title"], n["body"]);
            assert!(
                text.contains("Tanaka Hana") && text.contains("SOS"),
                "{text}"
            );
        }
    }

    // The tablet's 410 removed its subscription; the phone's is kept.
    let left = hub
        .call(Some(&yuki), Method::GET, "/push/subscriptions", None)
        .await?
        .1;
    let endpoints: Vec<&str> = left
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["endpoint"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(endpoints, [format!("{}/push/yuki-phone", svc.origin)]);
    assert_eq!(
        hub.metric("mimamori_push_subscriptions_expired_total")
            .await?,
        1.0
    );
    // Accepted: the phone twice (first try and retry), the laptop once (after its 503),
    // the daughter's phone once.
    assert_eq!(hub.metric("mimamori_push_messages_total").await?, 4.0);
    Ok(())
}

/// A user's browsers all gone (410) gives the delivery up with that reason; a user may
/// remove their own subscription; the service worker is served as JavaScript from `/`.
#[tokio::test]
async fn push_to_expired_browsers_fails_and_subscriptions_can_be_removed() -> Result<()> {
    let svc = PushService::start().await?;
    let hub = TestHub::start_with(
        Backend::Sqlite,
        &[
            "--push-subject",
            SUBJECT,
            "--push-allow-http-loopback",
            "true",
        ],
    )
    .await?;
    let rid = hub.resident(json!({"name": "Tanaka Hana"})).await?;
    let care = hub.user("care2", "staff", &[]).await?;
    let old = Browser::new("gone");
    svc.answer("gone", &[410]);
    let (status, sub) = subscribe(&hub, &care, old.subscription(&svc)).await?;
    assert_eq!(status, 201, "{sub}");
    add_contact(
        &hub,
        rid,
        json!({"name": "Care worker", "relation": "staff", "tier": 1, "channel": "push", "address": "care2"}),
    )
    .await?;
    let alert_id = press_sos(&hub, rid).await?;
    let d = wait_deliveries(&hub, alert_id, "the push delivery given up", |d| {
        d.len() == 1 && d[0]["state"] == "failed"
    })
    .await?;
    let error = d[0]["last_error"].as_str().unwrap_or("");
    assert!(error.contains("expired"), "{error}");
    assert_eq!(svc.received("gone").len(), 1);

    // A new browser, removed by its owner.
    let (status, sub) = subscribe(&hub, &care, Browser::new("new").subscription(&svc)).await?;
    assert_eq!(status, 201, "{sub}");
    let path = format!("/push/subscriptions/{}", sub["id"]);
    assert_eq!(
        hub.call(Some(&care), Method::DELETE, &path, None).await?.0,
        204
    );
    assert_eq!(
        hub.call(Some(&care), Method::DELETE, &path, None).await?.0,
        404
    );
    let audit = hub
        .expect(Method::GET, "/audit?limit=50", None, 200)
        .await?;
    let actions: Vec<&str> = audit
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        actions.contains(&"push.subscribe") && actions.contains(&"push.unsubscribe"),
        "{actions:?}"
    );

    let sw = hub.http.get(format!("{}/sw.js", hub.base)).send().await?;
    assert_eq!(sw.status(), 200);
    let ct = sw
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.contains("javascript"), "{ct}");
    assert!(sw.text().await?.contains("notificationclick"));
    Ok(())
}
