//! Family notifications end to end: a real SMTP server (aiosmtpd) and an HTTP receiver
//! on loopback, the real hub process, devices over MQTT.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

/// One request the receiver saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Plan {
    seen: Vec<Seen>,
    /// Answer 500 to the first N requests of a path.
    fail_first: HashMap<String, usize>,
    /// Never answer the first request of these paths.
    hang_first: Vec<String>,
    delay: Duration,
}

/// A local HTTP receiver for webhooks and ntfy that records every request.
#[derive(Clone, Default)]
pub struct Receiver {
    plan: Arc<Mutex<Plan>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    pub base: String,
}

async fn hit(State(r): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = r.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    r.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let path = uri.path().to_string();
    let (hang, fail, delay) = {
        let mut p = r.plan.lock().unwrap_or_else(|e| e.into_inner());
        let earlier = p.seen.iter().filter(|s| s.path == path).count();
        p.seen.push(Seen {
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: body.to_vec(),
        });
        let hang = earlier == 0 && p.hang_first.contains(&path);
        let fail = earlier < p.fail_first.get(&path).copied().unwrap_or(0);
        (hang, fail, p.delay)
    };
    if hang {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(delay).await;
    r.in_flight.fetch_sub(1, Ordering::SeqCst);
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

impl Receiver {
    pub async fn start() -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let r = Receiver {
            base: format!("http://{}", listener.local_addr()?),
            ..Receiver::default()
        };
        let app = axum::Router::new().fallback(hit).with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(r)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn with_plan<T>(&self, f: impl FnOnce(&mut Plan) -> T) -> T {
        f(&mut self.plan.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn fail_first(&self, path: &str, n: usize) {
        self.with_plan(|p| p.fail_first.insert(path.to_string(), n));
    }

    pub fn hang_first(&self, path: &str) {
        self.with_plan(|p| p.hang_first.push(path.to_string()));
    }

    pub fn delay(&self, d: Duration) {
        self.with_plan(|p| p.delay = d);
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.with_plan(|p| p.seen.iter().filter(|s| s.path == path).cloned().collect())
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

/// aiosmtpd on a port it picks, writing each message as JSON into a folder.
pub struct SmtpSink {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _child: Child,
}

impl SmtpSink {
    pub async fn start() -> Result<SmtpSink> {
        let dir = tempfile::tempdir()?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start python3 for the SMTP sink")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("SMTP sink did not start (is aiosmtpd installed? pip install aiosmtpd)")??
            .ok_or_else(|| {
                anyhow!("SMTP sink exited; is aiosmtpd installed? pip install aiosmtpd")
            })?;
        let port = line
            .strip_prefix("smtp-sink listening on ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| anyhow!("unexpected SMTP sink output {line:?}"))?;
        Ok(SmtpSink {
            port,
            dir,
            _child: child,
        })
    }

    pub fn args(&self) -> Vec<String> {
        [
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            &self.port.to_string(),
            "--smtp-security",
            "plain",
            "--smtp-from",
            "mimamori@hub.test",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Result<Vec<Value>> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?))
            .collect()
    }
}

async fn hub_with(args: &[String]) -> Result<TestHub> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestHub::start_with(Backend::Sqlite, &args).await
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

pub(crate) async fn add_contact(hub: &TestHub, rid: i64, body: Value) -> Result<Value> {
    hub.expect(
        Method::POST,
        &format!("/residents/{rid}/contacts"),
        Some(body),
        201,
    )
    .await
}

pub(crate) async fn deliveries(hub: &TestHub, alert_id: i64) -> Result<Vec<Value>> {
    let v = hub
        .expect(Method::GET, &format!("/alerts/{alert_id}"), None, 200)
        .await?;
    Ok(v["deliveries"].as_array().cloned().unwrap_or_default())
}

/// Waits until the alert's deliveries satisfy `done`; returns them.
pub(crate) async fn wait_deliveries(
    hub: &TestHub,
    alert_id: i64,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Result<Vec<Value>> {
    eventually(what, Duration::from_secs(30), || async {
        let d = deliveries(hub, alert_id).await.ok()?;
        done(&d).then_some(d)
    })
    .await
}

fn all_delivered(d: &[Value]) -> bool {
    !d.is_empty() && d.iter().all(|x| x["state"] == "delivered")
}

pub(crate) async fn press_sos(hub: &TestHub, rid: i64) -> Result<i64> {
    let dev = hub.device(rid, "button").await?;
    let mut mqtt = connect_device(hub, &dev).await?;
    mqtt.publish_acked(&topic(&dev, "sos"), "{}").await?;
    let alert = hub
        .wait_alert(rid, "sos", "open", Duration::from_secs(20))
        .await?;
    alert["id"]
        .as_i64()
        .ok_or_else(|| anyhow!("no id in {alert}"))
}

pub(crate) fn hmac_hex(secret: &str, ts: &str, body: &[u8]) -> Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// The receiver-side verification example of docs/notifications.md, run on a real request.
async fn docs_example_verifies(secret: &str, req: &Seen) -> Result<bool> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/notifications.md"),
    )?;
    let code = doc
        .split("<!-- verify-example -->")
        .nth(1)
        .and_then(|s| s.split("```python").nth(1))
        .and_then(|s| s.split("```").next())
        .ok_or_else(|| anyhow!("no verify example in docs/notifications.md"))?;
    let driver = "\nimport os, sys\nheaders = {'X-Mimamori-Timestamp': os.environ['TS'], 'X-Mimamori-Signature': os.environ['SIG']}\nprint(verify(os.environ['SECRET'], headers, sys.stdin.buffer.read()))\n";
    let mut child = Command::new("python3")
        .args(["-c", &format!("{code}{driver}")])
        .env("SECRET", secret)
        .env("TS", req.header("X-Mimamori-Timestamp"))
        .env("SIG", req.header("X-Mimamori-Signature"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        tokio::io::AsyncWriteExt::write_all(&mut stdin, &req.body).await?;
    }
    let out = child.wait_with_output().await?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "True" => Ok(true),
        "False" => Ok(false),
        other => bail!("verify example printed {other:?}"),
    }
}

/// A family contact gets exactly one e-mail (Japanese) and one webhook (English) for an
/// SOS, with a valid signature, the idempotency key, and who/what/where/since/what to do.
#[tokio::test]
async fn sos_reaches_family_once_by_email_and_signed_webhook() -> Result<()> {
    let smtp = SmtpSink::start().await?;
    let rx = Receiver::start().await?;
    let hub = hub_with(&smtp.args()).await?;
    let rid = hub
        .resident(json!({"name": "Tanaka Hanako", "home": {"lat": 35.7074, "lon": 139.6638}}))
        .await?;
    let gps = hub.device(rid, "gps").await?;
    let mut tracker = connect_device(&hub, &gps).await?;
    tracker
        .publish_acked(
            &topic(&gps, "gps"),
            r#"{"lat":35.7081,"lon":139.6645,"accuracy_m":8}"#,
        )
        .await?;
    add_contact(
        &hub,
        rid,
        json!({
            "name": "Tanaka Yuki", "relation": "family", "channel": "email",
            "address": "yuki@family.test", "language": "ja"
        }),
    )
    .await?;
    let hook = add_contact(
        &hub,
        rid,
        json!({
            "name": "Tanaka Yuki", "relation": "family", "channel": "webhook",
            "address": rx.url("/yuki"), "language": "en", "kinds": ["sos", "geofence_exit"]
        }),
    )
    .await?;
    let secret = hook["secret"]
        .as_str()
        .ok_or_else(|| anyhow!("no secret in {hook}"))?
        .to_string();
    let listed = hub
        .expect(
            Method::GET,
            &format!("/residents/{rid}/contacts"),
            None,
            200,
        )
        .await?;
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.len() == 2 && l.iter().all(|c| c.get("secret").is_none())),
        "secret never shown again: {listed}"
    );

    let alert_id = press_sos(&hub, rid).await?;
    let done = wait_deliveries(&hub, alert_id, "both deliveries", |d| {
        d.len() == 2 && all_delivered(d)
    })
    .await?;
    assert!(
        done.iter()
            .all(|d| d["attempts"] == 1 && d["contact_name"] == "Tanaka Yuki"),
        "{done:?}"
    );

    let mails = smtp.messages()?;
    assert_eq!(mails.len(), 1, "exactly one e-mail: {mails:?}");
    let mail = &mails[0];
    assert_eq!(mail["rcpt_tos"], json!(["yuki@family.test"]));
    let subject = mail["subject"].as_str().unwrap_or("");
    assert!(
        subject.contains("緊急") && subject.contains("Tanaka Hanakoさん"),
        "{subject}"
    );
    let text = mail["text"].as_str().unwrap_or("");
    for expected in [
        "SOSボタンが押されました",
        "(Asia/Tokyo)",
        "https://www.openstreetmap.org/?mlat=35.708100&mlon=139.664500",
        "119",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
    assert!(mail["html"]
        .as_str()
        .is_some_and(|h| h.contains("<a href=\"https://www.openstreetmap.org/")));
    assert_eq!(
        mail["message_id"],
        format!("<alert-{alert_id}-opened-contact-1@mimamori.hub>")
    );

    let hooks = rx.seen("/yuki");
    assert_eq!(hooks.len(), 1, "exactly one webhook");
    let req = &hooks[0];
    let expected = hmac_hex(&secret, req.header("X-Mimamori-Timestamp"), &req.body)?;
    assert_eq!(req.header("X-Mimamori-Signature"), expected);
    assert!(
        docs_example_verifies(&secret, req).await?,
        "the documented check accepts it"
    );
    let mut forged = req.clone();
    forged.body = req
        .body
        .iter()
        .map(|b| if *b == b'S' { b'X' } else { *b })
        .collect();
    assert!(
        !docs_example_verifies(&secret, &forged).await?,
        "and refuses an altered body"
    );
    assert_eq!(
        req.header("Idempotency-Key"),
        format!("alert-{alert_id}-opened-contact-2")
    );
    let body = req.json();
    assert_eq!(body["event"], "opened");
    assert_eq!(body["alert"]["kind"], "sos");
    assert_eq!(body["resident"]["name"], "Tanaka Hanako");
    let en = body["message"]["text"].as_str().unwrap_or("");
    assert!(
        en.contains("SOS button pressed") && en.contains("What to do"),
        "{en}"
    );
    Ok(())
}

/// "HH:MM-HH:MM" covering the current time in Tokyo.
fn quiet_hours_around_now() -> String {
    let now = chrono::Utc::now() + chrono::Duration::hours(9);
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    format!(
        "{}-{}",
        fmt(now - chrono::Duration::hours(1)),
        fmt(now + chrono::Duration::hours(1))
    )
}

/// Quiet hours hold back a low-battery alert but let an SOS through.
#[tokio::test]
async fn quiet_hours_hold_back_low_battery_but_not_sos() -> Result<()> {
    let rx = Receiver::start().await?;
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Suzuki Ken"})).await?;
    add_contact(
        &hub,
        rid,
        json!({
            "name": "Suzuki Mari", "relation": "family", "channel": "ntfy",
            "address": rx.url("/suzuki-family"), "quiet_hours": quiet_hours_around_now()
        }),
    )
    .await?;
    let dev = hub.device(rid, "motion").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    mqtt.publish_acked(&topic(&dev, "heartbeat"), r#"{"battery":5}"#)
        .await?;
    let battery = hub
        .wait_alert(rid, "low_battery", "open", Duration::from_secs(20))
        .await?;
    let sos_id = press_sos(&hub, rid).await?;
    wait_deliveries(&hub, sos_id, "SOS delivered", all_delivered).await?;
    let battery_id = battery["id"].as_i64().ok_or_else(|| anyhow!("no id"))?;
    assert_eq!(
        deliveries(&hub, battery_id).await?,
        Vec::<Value>::new(),
        "battery alert held back"
    );
    let pushes = rx.seen("/suzuki-family");
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].header("Priority"), "5");
    assert!(
        pushes[0].header("Title").starts_with("=?UTF-8?B?"),
        "Japanese title encoded"
    );
    assert!(String::from_utf8_lossy(&pushes[0].body).contains("SOSボタン"));
    Ok(())
}

/// An unacknowledged critical alert climbs to the supervisor; an acknowledged one does
/// not; resolution reaches everyone who was told.
async fn escalates_unacknowledged_critical(backend: Backend) -> Result<()> {
    let rx = Receiver::start().await?;
    let hub = TestHub::start_with(backend, &["--escalate-critical-secs", "3"]).await?;
    let mut ids = Vec::new();
    for who in ["acked", "ignored"] {
        let rid = hub
            .resident(json!({"name": format!("Resident {who}")}))
            .await?;
        add_contact(&hub, rid, json!({"name": "Family", "relation": "family", "channel": "webhook", "address": rx.url(&format!("/{who}/family"))})).await?;
        add_contact(&hub, rid, json!({"name": "Supervisor", "relation": "supervisor", "channel": "webhook", "address": rx.url(&format!("/{who}/supervisor"))})).await?;
        ids.push((rid, press_sos(&hub, rid).await?));
        if who == "acked" {
            hub.expect(
                Method::POST,
                &format!("/alerts/{}/ack", ids[0].1),
                None,
                200,
            )
            .await?;
        }
    }
    let (acked, ignored) = (ids[0].1, ids[1].1);
    // The ignored alert opened after the acknowledged one, so by the time it escalates the
    // acknowledged one's timeout has passed too.
    let escalated = wait_deliveries(&hub, ignored, "escalation delivered", |d| {
        d.iter()
            .any(|x| x["event"] == "escalated" && x["state"] == "delivered")
    })
    .await?;
    assert!(escalated
        .iter()
        .any(|x| x["event"] == "escalated" && x["contact_name"] == "Supervisor"));
    let alert = hub
        .expect(Method::GET, &format!("/alerts/{ignored}"), None, 200)
        .await?;
    assert_eq!(alert["escalated"], true);
    assert!(alert["history"].as_array().is_some_and(|h| h
        .iter()
        .any(|e| e["action"] == "escalated" && e["actor"] == "hub")));
    assert_eq!(
        rx.seen("/ignored/supervisor")[0].json()["event"],
        "escalated"
    );
    assert_eq!(
        rx.seen("/ignored/family").len(),
        1,
        "family told once, at the start"
    );

    let calm = hub
        .expect(Method::GET, &format!("/alerts/{acked}"), None, 200)
        .await?;
    assert_eq!(calm["escalated"], false);
    assert!(calm["deliveries"]
        .as_array()
        .is_some_and(|d| d.iter().all(|x| x["event"] == "opened")));
    assert!(rx.seen("/acked/supervisor").is_empty());

    hub.expect(
        Method::POST,
        &format!("/alerts/{ignored}/resolve"),
        Some(json!({"note": "found at the neighbour's"})),
        200,
    )
    .await?;
    wait_deliveries(&hub, ignored, "resolution delivered", |d| {
        d.iter()
            .filter(|x| x["event"] == "resolved" && x["state"] == "delivered")
            .count()
            == 2
    })
    .await?;
    let last = rx
        .seen("/ignored/supervisor")
        .pop()
        .ok_or_else(|| anyhow!("nothing"))?;
    assert_eq!(last.json()["event"], "resolved");
    assert!(last.json()["message"]["text"]
        .as_str()
        .is_some_and(|t| t.contains("found at the neighbour's")));
    Ok(())
}

/// A receiver that fails twice gets the message on the third attempt, the same each time.
#[tokio::test]
async fn a_failing_receiver_gets_it_on_the_third_attempt() -> Result<()> {
    let rx = Receiver::start().await?;
    rx.fail_first("/flaky", 2);
    let hub = hub_with(&strings(&["--notify-retry-base-ms", "200"])).await?;
    let rid = hub.resident(json!({"name": "Ito Jiro"})).await?;
    add_contact(&hub, rid, json!({"name": "Ito Aya", "relation": "family", "channel": "webhook", "address": rx.url("/flaky")})).await?;
    let alert_id = press_sos(&hub, rid).await?;
    let d = wait_deliveries(&hub, alert_id, "delivered after retries", all_delivered).await?;
    assert_eq!(d[0]["attempts"], 3);
    let seen = rx.seen("/flaky");
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.body == seen[0].body
        && s.header("Idempotency-Key") == seen[0].header("Idempotency-Key")));
    Ok(())
}

/// Failures are given up after the configured time and shown on the alert; without an
/// SMTP relay, e-mail fails at once with a clear reason and the hub keeps running.
async fn gives_up_and_shows_failures(backend: Backend) -> Result<()> {
    let rx = Receiver::start().await?;
    rx.fail_first("/down", usize::MAX);
    let hub = TestHub::start_with(
        backend,
        &[
            "--notify-retry-base-ms",
            "100",
            "--notify-give-up-secs",
            "1",
        ],
    )
    .await?;
    let rid = hub.resident(json!({"name": "Kato Ume"})).await?;
    add_contact(&hub, rid, json!({"name": "Kato Ken", "relation": "family", "channel": "webhook", "address": rx.url("/down")})).await?;
    add_contact(&hub, rid, json!({"name": "Kato Rie", "relation": "family", "channel": "email", "address": "rie@family.test"})).await?;
    let alert_id = press_sos(&hub, rid).await?;
    let d = wait_deliveries(&hub, alert_id, "both failed", |d| {
        d.len() == 2 && d.iter().all(|x| x["state"] == "failed")
    })
    .await?;
    let mail = d
        .iter()
        .find(|x| x["channel"] == "email")
        .ok_or_else(|| anyhow!("no e-mail delivery"))?;
    assert_eq!(mail["last_error"], "SMTP not configured");
    assert_eq!(mail["attempts"], 1);
    let hook = d
        .iter()
        .find(|x| x["channel"] == "webhook")
        .ok_or_else(|| anyhow!("no webhook delivery"))?;
    assert!(
        hook["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{hook}"
    );
    assert!(hook["attempts"].as_i64().is_some_and(|n| n >= 2));
    let alert = hub
        .expect(Method::GET, &format!("/alerts/{alert_id}"), None, 200)
        .await?;
    let failures = alert["history"].as_array().map(|h| {
        h.iter()
            .filter(|e| e["action"] == "notification_failed")
            .count()
    });
    assert_eq!(failures, Some(2));
    Ok(())
}

/// SIGKILL right after an alert opens (even mid-delivery) loses no notification: after
/// restart it is sent again with the same idempotency key and delivered.
#[tokio::test]
async fn sigkill_after_an_alert_opens_still_delivers() -> Result<()> {
    let rx = Receiver::start().await?;
    rx.hang_first("/after-crash");
    let mut hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Mori Sachi"})).await?;
    add_contact(&hub, rid, json!({"name": "Mori Taro", "relation": "family", "channel": "webhook", "address": rx.url("/after-crash")})).await?;
    let dev = hub.device(rid, "button").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    mqtt.publish_acked(&topic(&dev, "sos"), "{}").await?;
    hub.kill().await?;
    hub.restart().await?;
    let alert = hub
        .wait_alert(rid, "sos", "open", Duration::from_secs(20))
        .await?;
    let alert_id = alert["id"].as_i64().ok_or_else(|| anyhow!("no id"))?;
    wait_deliveries(&hub, alert_id, "delivered after restart", all_delivered).await?;
    let seen = rx.seen("/after-crash");
    assert!(
        !seen.is_empty() && seen.len() <= 2,
        "{} requests",
        seen.len()
    );
    assert!(seen
        .iter()
        .all(|s| s.header("Idempotency-Key") == format!("alert-{alert_id}-opened-contact-1")));
    Ok(())
}

/// Many alerts at once: deliveries run concurrently but never above the bound, all
/// arrive, and a device's messages keep being acknowledged meanwhile.
#[tokio::test]
async fn many_alerts_deliver_within_the_concurrency_bound() -> Result<()> {
    const ALERTS: usize = 200;
    const BOUND: usize = 8;
    let rx = Receiver::start().await?;
    rx.delay(Duration::from_millis(40));
    let hub = hub_with(&strings(&["--notify-concurrency", &BOUND.to_string()])).await?;
    let rid = hub.resident(json!({"name": "Many Buttons"})).await?;
    add_contact(&hub, rid, json!({"name": "Desk", "relation": "family", "channel": "webhook", "address": rx.url("/desk")})).await?;
    let mut buttons = Vec::new();
    for _ in 0..ALERTS {
        let dev = hub.device(rid, "button").await?;
        buttons.push((connect_device(&hub, &dev).await?, dev));
    }
    let probe_dev = hub.device(rid, "motion").await?;
    let mut probe = connect_device(&hub, &probe_dev).await?;
    let started = Instant::now();
    for (mqtt, dev) in &buttons {
        mqtt.client
            .publish(topic(dev, "sos"), rumqttc::QoS::AtLeastOnce, false, "{}")
            .await?;
    }
    let mut probe_acks = 0;
    let mut probe_worst = Duration::ZERO;
    while rx.seen("/desk").len() < ALERTS && started.elapsed() < Duration::from_secs(120) {
        let t = Instant::now();
        probe
            .publish_acked(&topic(&probe_dev, "motion"), r#"{"motion":true}"#)
            .await?;
        probe_worst = probe_worst.max(t.elapsed());
        probe_acks += 1;
    }
    let elapsed = started.elapsed();
    let alerts = hub
        .expect(
            Method::GET,
            &format!("/alerts?resident_id={rid}&kind=sos&limit=1000"),
            None,
            200,
        )
        .await?;
    assert_eq!(alerts.as_array().map(Vec::len), Some(ALERTS));
    assert_eq!(rx.seen("/desk").len(), ALERTS, "every alert delivered");
    assert!(
        rx.max_in_flight() <= BOUND,
        "in flight {} > bound {BOUND}",
        rx.max_in_flight()
    );
    assert!(rx.max_in_flight() > 1, "deliveries ran concurrently");
    assert!(probe_acks > 0);
    eprintln!(
        "{ALERTS} SOS alerts: all delivered in {elapsed:?} with at most {} in flight (bound {BOUND}); \
         {probe_acks} probe messages acknowledged meanwhile, slowest PUBACK {probe_worst:?}",
        rx.max_in_flight()
    );
    Ok(())
}

#[tokio::test]
async fn unacknowledged_critical_escalates_to_the_supervisor() -> Result<()> {
    escalates_unacknowledged_critical(Backend::Sqlite).await
}

#[tokio::test]
async fn unacknowledged_critical_escalates_to_the_supervisor_postgres() -> Result<()> {
    if skip_postgres("unacknowledged_critical_escalates_to_the_supervisor_postgres") {
        return Ok(());
    }
    escalates_unacknowledged_critical(Backend::Postgres).await
}

#[tokio::test]
async fn failures_are_given_up_and_visible_on_the_alert() -> Result<()> {
    gives_up_and_shows_failures(Backend::Sqlite).await
}

#[tokio::test]
async fn failures_are_given_up_and_visible_on_the_alert_postgres() -> Result<()> {
    if skip_postgres("failures_are_given_up_and_visible_on_the_alert_postgres") {
        return Ok(());
    }
    gives_up_and_shows_failures(Backend::Postgres).await
}

/// Tokyo's local time `secs` seconds from now, as "HH:MM:SS": a daily summary time that
/// falls due while the test waits.
fn tokyo_in(secs: i64) -> String {
    let soon = chrono::Utc::now() + chrono::Duration::hours(9) + chrono::Duration::seconds(secs);
    soon.format("%H:%M:%S").to_string()
}

/// Every daily summary the receiver has seen at `path`.
fn summaries_at(rx: &Receiver, path: &str) -> Vec<Seen> {
    rx.seen(path)
        .into_iter()
        .filter(|s| s.header("X-Mimamori-Event") == "daily_summary")
        .collect()
}

/// A family contact gets one summary of the resident's day at their chosen time, with the
/// day's activity and alerts read from the store.
async fn daily_summary_arrives_once_with_the_day(backend: Backend) -> Result<()> {
    let rx = Receiver::start().await?;
    let hub = TestHub::start_with(backend, &[]).await?;
    let rid = hub.resident(json!({"name": "Kimura Sachi"})).await?;
    let motion = hub.device(rid, "motion").await?;
    let mut mqtt = connect_device(&hub, &motion).await?;
    mqtt.publish_acked(
        &topic(&motion, "motion"),
        r#"{"motion":true,"room":"kitchen"}"#,
    )
    .await?;
    press_sos(&hub, rid).await?;
    let family = |name: &str, path: &str, at: String| {
        json!({"name": name, "relation": "family", "channel": "webhook", "language": "en",
               "address": rx.url(path), "kinds": ["inactivity"], "daily_summary_at": at})
    };
    add_contact(&hub, rid, family("Kimura Jun", "/kimura", tokyo_in(3))).await?;
    // The worker sleeps until the chosen second, not until its next look.
    let summary = eventually("the daily summary", Duration::from_secs(30), || async {
        summaries_at(&rx, "/kimura").into_iter().next()
    })
    .await?;
    let body = summary.json();
    assert!(
        summary
            .header("Idempotency-Key")
            .starts_with(&format!("summary-{rid}-")),
        "{:?}",
        summary.headers
    );
    let text = body.to_string();
    assert!(text.contains("Kimura Sachi"), "{text}");
    assert!(
        body["summary"].is_object(),
        "the summary's facts travel with it: {text}"
    );
    assert!(
        text.to_lowercase().contains("sos"),
        "the day's SOS is in the summary: {text}"
    );
    // A second contact makes the worker look at every contact again, at once and at the
    // second one's time: the first one's day, already summarised, is not sent again.
    add_contact(&hub, rid, family("Kimura Aya", "/aya", tokyo_in(2))).await?;
    eventually(
        "the second contact's summary",
        Duration::from_secs(30),
        || async { summaries_at(&rx, "/aya").into_iter().next() },
    )
    .await?;
    assert_eq!(summaries_at(&rx, "/kimura").len(), 1);
    Ok(())
}

#[tokio::test]
async fn daily_summary_arrives_once_with_the_day_sqlite() -> Result<()> {
    daily_summary_arrives_once_with_the_day(Backend::Sqlite).await
}

#[tokio::test]
async fn daily_summary_arrives_once_with_the_day_postgres() -> Result<()> {
    if skip_postgres("daily_summary_arrives_once_with_the_day_postgres") {
        return Ok(());
    }
    daily_summary_arrives_once_with_the_day(Backend::Postgres).await
}

/// A family user may read their resident's contacts, but not the addresses of the
/// supervisor or neighbours, and may not change them.
#[tokio::test]
async fn families_read_contacts_without_outsiders_addresses() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Ono Kazu"})).await?;
    let mine = json!({"name": "Ono Rie", "relation": "family", "channel": "email", "address": "rie@example.org"});
    let boss = json!({"name": "Centre", "relation": "supervisor", "channel": "email", "address": "centre@example.org"});
    add_contact(&hub, rid, mine).await?;
    add_contact(&hub, rid, boss.clone()).await?;
    let family = hub.user("ono.rie", "family", &[rid]).await?;
    let (status, listed) = hub
        .call(
            Some(&family),
            Method::GET,
            &format!("/residents/{rid}/contacts"),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    let addresses: Vec<(&str, &str)> = listed
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default(),
                c["address"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        addresses,
        [("Ono Rie", "rie@example.org"), ("Centre", "(hidden)")]
    );
    let (status, _) = hub
        .call(
            Some(&family),
            Method::POST,
            &format!("/residents/{rid}/contacts"),
            Some(boss),
        )
        .await?;
    assert_eq!(status, 403);
    Ok(())
}

/// Contacts cannot make the hub a proxy into its own network. Under the default host policy
/// a webhook or ntfy address at a private, loopback or link-local address is refused when
/// the contact is created, and one whose *name* resolves to loopback is refused at delivery,
/// once, with the reason on the delivery: the receiver never hears of the resident.
#[tokio::test]
async fn webhooks_reach_only_hosts_the_policy_allows() -> Result<()> {
    let rx = Receiver::start().await?;
    let hub = hub_with(&strings(&["--webhook-hosts", ""])).await?;
    let rid = hub.resident(json!({"name": "Mori Hana"})).await?;
    let port = rx.base.rsplit(':').next().unwrap_or_default().to_string();
    for (channel, address) in [
        ("webhook", rx.url("/direct")),
        (
            "webhook",
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ),
        ("ntfy", format!("http://[::1]:{port}/topic")),
        ("webhook", "http://10.0.0.5/admin".to_string()),
    ] {
        let body = json!({"name": "Mori Ken", "relation": "family", "channel": channel, "address": address});
        let refused = hub
            .expect(
                Method::POST,
                &format!("/residents/{rid}/contacts"),
                Some(body),
                422,
            )
            .await?;
        let message = refused["message"].as_str().unwrap_or_default();
        assert!(message.contains("not public"), "{address}: {refused}");
    }
    let by_name = format!("http://localhost:{port}/by-name");
    add_contact(
        &hub,
        rid,
        json!({"name": "Mori Ken", "relation": "family", "channel": "webhook", "address": by_name}),
    )
    .await?;
    let alert_id = press_sos(&hub, rid).await?;
    let d = wait_deliveries(&hub, alert_id, "the delivery refused", |d| {
        d.len() == 1 && d[0]["state"] == "failed"
    })
    .await?;
    let error = d[0]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("refused") && error.contains("not allowed"),
        "{d:?}"
    );
    assert_eq!(d[0]["attempts"], 1, "a refusal is not retried: {d:?}");
    assert!(rx.seen("/by-name").is_empty() && rx.seen("/direct").is_empty());
    Ok(())
}
