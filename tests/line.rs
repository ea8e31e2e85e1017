//! The LINE channel end to end: a local stand-in for the Messaging API that checks each
//! push as LINE's published API describes it and answers 200, 429 or 400 on demand; the
//! real hub process; an SOS over MQTT; and LINE's signed postback coming back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;
use crate::notify::{add_contact, deliveries, press_sos, wait_deliveries};

const TOKEN: &str = "test-channel-access-token/abc+def=";
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const USER: &str = "U4af4980629a1b2c3d4e5f60718293a4b";
const OTHER_USER: &str = "U00000000000000000000000000000000";
const PUBLIC_URL: &str = "https://mimamori.example.org";

/// One push the stand-in received, with when.
#[derive(Debug, Clone)]
struct Push {
    at: Instant,
    headers: HashMap<String, String>,
    body: Value,
}

impl Push {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// How the stand-in answers the next pushes: status and `Retry-After`.
#[derive(Debug, Clone, Copy)]
enum Answer {
    TooMany { retry_after_s: u64 },
    BadRequest,
}

#[derive(Default)]
struct Plan {
    pushes: Vec<Push>,
    /// Requests that LINE would not have accepted, and why.
    problems: Vec<String>,
    answers: VecDeque<Answer>,
}

/// A local LINE Messaging API: `POST /v2/bot/message/push` only.
#[derive(Clone, Default)]
struct LineApi {
    plan: Arc<Mutex<Plan>>,
    base: String,
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(usize::MAX, |s| s.chars().count())
}

/// What is wrong with a push, by the Messaging API reference (push message, message
/// objects, buttons template, actions); empty when nothing is.
fn check_push(headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if header("authorization") != format!("Bearer {TOKEN}") {
        problems.push(format!(
            "Authorization is not the bearer token: {:?}",
            header("authorization")
        ));
    }
    if !header("content-type").starts_with("application/json") {
        problems.push(format!("Content-Type is {:?}", header("content-type")));
    }
    if !is_uuid(&header("x-line-retry-key")) {
        problems.push(format!(
            "X-Line-Retry-Key is not a UUID: {:?}",
            header("x-line-retry-key")
        ));
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        problems.push("body is not JSON".into());
        return problems;
    };
    let to_ok = v["to"].as_str().is_some_and(|t| {
        t.len() == 33 && (t.starts_with('U') || t.starts_with('C') || t.starts_with('R'))
    });
    if !to_ok {
        problems.push(format!("to is not a user, group or room id: {}", v["to"]));
    }
    let messages = v["messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() || messages.len() > 5 {
        problems.push(format!(
            "messages has {} entries, not 1 to 5",
            messages.len()
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        match m["type"].as_str() {
            Some("text") => {
                if !(1..=5000).contains(&chars(&m["text"])) {
                    problems.push(format!("messages[{i}].text must be 1 to 5000 characters"));
                }
            }
            Some("template") => {
                if !(1..=400).contains(&chars(&m["altText"])) {
                    problems.push(format!("messages[{i}].altText must be 1 to 400 characters"));
                }
                let t = &m["template"];
                if t["type"] != "buttons" || !(1..=160).contains(&chars(&t["text"])) {
                    problems.push(format!(
                        "messages[{i}].template is not a valid buttons template"
                    ));
                }
                let actions = t["actions"].as_array().cloned().unwrap_or_default();
                if actions.is_empty() || actions.len() > 4 {
                    problems.push(format!("messages[{i}] has {} actions", actions.len()));
                }
                for a in &actions {
                    let label_ok = (1..=20).contains(&chars(&a["label"]));
                    let ok = label_ok
                        && match a["type"].as_str() {
                            Some("postback") => (1..=300).contains(&chars(&a["data"])),
                            Some("uri") => a["uri"].as_str().is_some_and(|u| {
                                u.starts_with("https://") || u.starts_with("http://")
                            }),
                            _ => false,
                        };
                    if !ok {
                        problems.push(format!("messages[{i}] has an invalid action {a}"));
                    }
                }
            }
            other => problems.push(format!(
                "messages[{i}].type {other:?} is not used by the hub"
            )),
        }
    }
    problems
}

async fn push(State(api): State<LineApi>, headers: HeaderMap, body: Bytes) -> Response {
    let problems = check_push(&headers, &body);
    let mut plan = api.plan.lock().unwrap_or_else(|e| e.into_inner());
    plan.pushes.push(Push {
        at: Instant::now(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if !problems.is_empty() {
        let details: Vec<Value> = problems.iter().map(|p| json!({"message": p})).collect();
        plan.problems.extend(problems);
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"message": "The request body has error(s)", "details": details})),
        )
            .into_response();
    }
    match plan.answers.pop_front() {
        Some(Answer::TooMany { retry_after_s }) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after_s.to_string())],
            axum::Json(json!({"message": "Too many requests"})),
        )
            .into_response(),
        Some(Answer::BadRequest) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "message": "The property, 'to', in the request body is invalid (line 1, column 7)"
            })),
        )
            .into_response(),
        None => (
            StatusCode::OK,
            axum::Json(json!({"sentMessages": [{"id": "461230966842064897", "quoteToken": "IStG5h1Tz7b"}]})),
        )
            .into_response(),
    }
}

async fn elsewhere(State(api): State<LineApi>, method: HttpMethod, uri: Uri) -> StatusCode {
    let mut plan = api.plan.lock().unwrap_or_else(|e| e.into_inner());
    plan.problems.push(format!("unexpected {method} {uri}"));
    StatusCode::NOT_FOUND
}

impl LineApi {
    async fn start() -> Result<LineApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = LineApi {
            base: format!("http://{}", listener.local_addr()?),
            ..LineApi::default()
        };
        let app = axum::Router::new()
            .route("/v2/bot/message/push", axum::routing::post(push))
            .fallback(elsewhere)
            .with_state(api.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(api)
    }

    fn answer(&self, a: Answer) {
        self.with_plan(|p| p.answers.push_back(a));
    }

    fn with_plan<T>(&self, f: impl FnOnce(&mut Plan) -> T) -> T {
        f(&mut self.plan.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn pushes(&self) -> Vec<Push> {
        self.with_plan(|p| p.pushes.clone())
    }

    fn problems(&self) -> Vec<String> {
        self.with_plan(|p| p.problems.clone())
    }
}

async fn hub_for(api: &LineApi) -> Result<TestHub> {
    hub_on(Backend::Sqlite, api).await
}

async fn hub_on(backend: Backend, api: &LineApi) -> Result<TestHub> {
    TestHub::start_with(
        backend,
        &[
            "--line-channel-access-token",
            TOKEN,
            "--line-channel-secret",
            SECRET,
            "--line-api-base",
            &api.base,
            "--public-url",
            PUBLIC_URL,
            "--notify-retry-base-ms",
            "100",
        ],
    )
    .await
}

/// A resident with one family contact on LINE; returns the resident's and contact's ids.
async fn resident_on_line(hub: &TestHub, language: &str) -> Result<(i64, i64)> {
    let rid = hub.resident(json!({"name": "Tanaka Hana"})).await?;
    let contact = add_contact(
        hub,
        rid,
        json!({"name": "Tanaka Ken", "relation": "family", "channel": "line", "address": USER, "language": language}),
    )
    .await?;
    let cid = contact["id"]
        .as_i64()
        .ok_or_else(|| anyhow!("no id in {contact}"))?;
    Ok((rid, cid))
}

fn signed(body: &Value, secret: &str) -> Result<(String, String)> {
    let raw = body.to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(raw.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok((raw, sig))
}

/// LINE's webhook call for a postback, as LINE sends it.
fn postback(user: &str, data: &str) -> Value {
    json!({
        "destination": "Uffffffffffffffffffffffffffffffff",
        "events": [{
            "type": "postback",
            "mode": "active",
            "timestamp": 1_764_547_200_000_i64,
            "webhookEventId": "01FZ74A0TDDPYRVKNK77XKC3ZR",
            "deliveryContext": {"isRedelivery": false},
            "replyToken": "b60d432864f44d079f6d8efe86cf404b",
            "source": {"type": "user", "userId": user},
            "postback": {"data": data},
        }]
    })
}

async fn call_webhook(hub: &TestHub, raw: String, signature: &str) -> Result<u16> {
    let res = reqwest::Client::new()
        .post(hub.url("/line/webhook"))
        .header("content-type", "application/json")
        .header("x-line-signature", signature)
        .body(raw)
        .send()
        .await?;
    Ok(res.status().as_u16())
}

async fn history_actions(hub: &TestHub, alert_id: i64) -> Result<Vec<(String, String, String)>> {
    let v = hub
        .expect(Method::GET, &format!("/alerts/{alert_id}"), None, 200)
        .await?;
    Ok(v["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("action"), s("actor"), s("note"))
        })
        .collect())
}

/// An SOS reaches the LINE contact once, in Japanese, with the resident, what happened,
/// a link to the alert and a "確認しました" button; a correctly signed press of that
/// button confirms the alert for that contact, a wrong signature is refused with 401,
/// and the same button sent by another LINE user changes nothing.
#[tokio::test]
async fn line_sos_arrives_and_its_signed_confirm_button_confirms() -> Result<()> {
    sos_arrives_and_confirms(Backend::Sqlite).await
}

#[tokio::test]
async fn line_sos_arrives_and_its_signed_confirm_button_confirms_postgres() -> Result<()> {
    if skip_postgres("line_sos_arrives_and_its_signed_confirm_button_confirms_postgres") {
        return Ok(());
    }
    sos_arrives_and_confirms(Backend::Postgres).await
}

async fn sos_arrives_and_confirms(backend: Backend) -> Result<()> {
    let api = LineApi::start().await?;
    let mut hub = hub_on(backend, &api).await?;
    let (rid, cid) = resident_on_line(&hub, "ja").await?;
    let alert_id = press_sos(&hub, rid).await?;
    let d = wait_deliveries(&hub, alert_id, "LINE delivered", |d| {
        !d.is_empty() && d.iter().all(|x| x["state"] == "delivered")
    })
    .await?;
    assert_eq!((d.len(), d[0]["channel"].as_str()), (1, Some("line")));
    assert_eq!(api.problems(), Vec::<String>::new());
    let pushes = api.pushes();
    assert_eq!(pushes.len(), 1);
    let body = &pushes[0].body;
    assert_eq!(body["to"], USER);
    let text = body["messages"][0]["text"].as_str().unwrap_or("");
    assert!(text.contains("Tanaka Hana"), "{text}");
    assert!(text.contains("SOS"), "{text}");
    assert!(
        text.contains(&format!("{PUBLIC_URL}/#/alert/{alert_id}")),
        "{text}"
    );
    let actions = &body["messages"][1]["template"]["actions"];
    assert_eq!(actions[0]["type"], "postback");
    assert_eq!(actions[0]["label"], "確認しました");
    assert_eq!(
        actions[1]["uri"],
        format!("{PUBLIC_URL}/#/alert/{alert_id}")
    );
    let data = actions[0]["data"]
        .as_str()
        .ok_or_else(|| anyhow!("no postback data in {body}"))?;
    assert!(
        data.contains(&format!("alert={alert_id}")) && data.contains(&format!("contact={cid}"))
    );

    // A wrong signature, or none, is refused and changes nothing.
    let (raw, _) = signed(&postback(USER, data), SECRET)?;
    let (_, wrong) = signed(&postback(USER, data), "not-the-channel-secret")?;
    assert_eq!(call_webhook(&hub, raw.clone(), &wrong).await?, 401);
    assert_eq!(call_webhook(&hub, raw, "").await?, 401);
    // A body past the webhook's bound is refused before anything reads it.
    let huge = "x".repeat(70 * 1024);
    let (raw, sig) = signed(&postback(USER, &huge), SECRET)?;
    assert_eq!(call_webhook(&hub, raw, &sig).await?, 413);
    // LINE's other events (a new friend here) are answered and leave the alert alone.
    let follow = json!({"destination": "Uffffffffffffffffffffffffffffffff", "events": [{
        "type": "follow", "mode": "active", "timestamp": 1_764_547_200_000_i64,
        "source": {"type": "user", "userId": OTHER_USER}, "replyToken": "x"}]});
    let (raw, sig) = signed(&follow, SECRET)?;
    assert_eq!(call_webhook(&hub, raw, &sig).await?, 200);
    // Signed, but pressed by someone the message was not sent to: answered, not taken.
    let (raw, sig) = signed(&postback(OTHER_USER, data), SECRET)?;
    assert_eq!(call_webhook(&hub, raw, &sig).await?, 200);
    assert!(history_actions(&hub, alert_id)
        .await?
        .iter()
        .all(|(a, _, _)| a != "confirmed"));

    let (raw, sig) = signed(&postback(USER, data), SECRET)?;
    assert_eq!(call_webhook(&hub, raw, &sig).await?, 200);
    let history = history_actions(&hub, alert_id).await?;
    let confirmed: Vec<_> = history
        .iter()
        .filter(|(a, _, _)| a == "confirmed")
        .collect();
    assert_eq!(
        confirmed,
        [&(
            "confirmed".to_string(),
            "family:Tanaka Ken".to_string(),
            "確認しました (LINE)".to_string()
        )],
        "{history:?}"
    );
    // Pressed again: LINE still gets 200, the history has it once.
    let (raw, sig) = signed(&postback(USER, data), SECRET)?;
    assert_eq!(call_webhook(&hub, raw, &sig).await?, 200);
    assert_eq!(
        history_actions(&hub, alert_id)
            .await?
            .iter()
            .filter(|(a, _, _)| a == "confirmed")
            .count(),
        1
    );
    assert_eq!(hub.metric("mimamori_line_messages_total").await?, 1.0);
    assert_eq!(hub.metric("mimamori_line_messages_this_month").await?, 1.0);
    // The month's count survives a restart: it resumes from the store.
    hub.restart().await?;
    eventually(
        "this month's LINE count after a restart",
        Duration::from_secs(10),
        || async {
            let n = hub.metric("mimamori_line_messages_this_month").await.ok()?;
            (n == 1.0).then_some(())
        },
    )
    .await?;
    Ok(())
}

/// A 429 is retried no earlier than its Retry-After, with the same retry key and body,
/// and is delivered once LINE accepts it.
#[tokio::test]
async fn line_429_waits_for_retry_after_and_retries_with_the_same_key() -> Result<()> {
    let api = LineApi::start().await?;
    api.answer(Answer::TooMany { retry_after_s: 2 });
    let hub = hub_for(&api).await?;
    let (rid, _) = resident_on_line(&hub, "en").await?;
    let alert_id = press_sos(&hub, rid).await?;
    let d = wait_deliveries(&hub, alert_id, "LINE delivered after a 429", |d| {
        !d.is_empty() && d.iter().all(|x| x["state"] == "delivered")
    })
    .await?;
    assert_eq!(d[0]["attempts"], 2);
    assert_eq!(api.problems(), Vec::<String>::new());
    let pushes = api.pushes();
    assert_eq!(pushes.len(), 2);
    let key = pushes[0].header("x-line-retry-key");
    assert!(is_uuid(key), "{key:?}");
    assert_eq!(pushes[1].header("x-line-retry-key"), key);
    assert_eq!(pushes[1].body, pushes[0].body);
    assert_eq!(
        pushes[0].body["messages"][1]["template"]["actions"][0]["label"],
        "I've got it"
    );
    let waited = pushes[1].at.duration_since(pushes[0].at);
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, before Retry-After"
    );
    Ok(())
}

/// A 400 is given up at once, with LINE's reason on the alert's delivery and history.
#[tokio::test]
async fn line_400_is_given_up_with_lines_reason_on_the_alert() -> Result<()> {
    let api = LineApi::start().await?;
    api.answer(Answer::BadRequest);
    let hub = hub_for(&api).await?;
    let (rid, _) = resident_on_line(&hub, "ja").await?;
    let alert_id = press_sos(&hub, rid).await?;
    let d = wait_deliveries(&hub, alert_id, "LINE given up", |d| {
        !d.is_empty() && d.iter().all(|x| x["state"] == "failed")
    })
    .await?;
    assert_eq!(d[0]["attempts"], 1);
    let error = d[0]["last_error"].as_str().unwrap_or("");
    assert!(error.contains("400"), "{error}");
    assert!(
        error.contains("The property, 'to', in the request body is invalid"),
        "{error}"
    );
    assert_eq!(api.pushes().len(), 1);
    let history = history_actions(&hub, alert_id).await?;
    assert!(
        history
            .iter()
            .any(|(a, _, n)| a == "notification_failed" && n.contains("'to'")),
        "{history:?}"
    );
    assert_eq!(deliveries(&hub, alert_id).await?.len(), 1);
    Ok(())
}

/// Reminders every second; the hub's LINE settings come from flags.
const REMINDING: &str = r#"
[notify]
notify_retry_base_ms = 100

[notify.ladder.critical]
steps = [{ after_s = 0, tier = 1 }]
remind_every_s = 1
"#;

/// After 確認しました the contact who pressed it gets no more reminders, while another
/// family member, who did not, still does.
#[tokio::test]
async fn line_confirm_stops_reminders_to_that_contact_only() -> Result<()> {
    let api = LineApi::start().await?;
    let rx = crate::notify::Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, REMINDING)?;
    let config = config.display().to_string();
    let hub = TestHub::start_with(
        Backend::Sqlite,
        &[
            "--config",
            &config,
            "--line-channel-access-token",
            TOKEN,
            "--line-channel-secret",
            SECRET,
            "--line-api-base",
            &api.base,
        ],
    )
    .await?;
    let (rid, cid) = resident_on_line(&hub, "ja").await?;
    add_contact(
        &hub,
        rid,
        json!({"name": "Tanaka Mai", "relation": "family", "channel": "webhook", "address": rx.url("/mai")}),
    )
    .await?;
    let alert_id = press_sos(&hub, rid).await?;
    let first = eventually("the LINE push", Duration::from_secs(20), || async {
        api.pushes().into_iter().next()
    })
    .await?;
    let data = first.body["messages"][1]["template"]["actions"][0]["data"]
        .as_str()
        .ok_or_else(|| anyhow!("no postback data in {}", first.body))?
        .to_string();
    let (raw, sig) = signed(&postback(USER, &data), SECRET)?;
    assert_eq!(call_webhook(&hub, raw, &sig).await?, 200);
    // The confirmation is committed before the answer: what the core decides from now
    // on is for the others only.
    let to_line = |d: &[Value]| d.iter().filter(|x| x["contact_id"] == cid).count();
    let at_confirm = to_line(&deliveries(&hub, alert_id).await?);
    let mai_then = rx.seen("/mai").len();
    eventually(
        "two more reminders to the other family member",
        Duration::from_secs(20),
        || async { (rx.seen("/mai").len() >= mai_then + 2).then_some(()) },
    )
    .await?;
    assert_eq!(to_line(&deliveries(&hub, alert_id).await?), at_confirm);
    assert_eq!(api.problems(), Vec::<String>::new());
    Ok(())
}
