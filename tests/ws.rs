//! The live stream `GET /api/v1/ws` over a real socket: snapshot first, exact replay
//! with `since`, a client that never reads slows nobody, family scoping, auth.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use rumqttc::{Packet, QoS};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::*;

/// How long any one expected frame may take; generous for a loaded CI machine.
const FRAME_WAIT: Duration = Duration::from_secs(20);

/// A WebSocket client of the hub's live stream.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Connects with `?token=` and, when given, `&since=`.
    pub async fn connect(hub: &TestHub, token: &str, since: Option<u64>) -> Result<WsClient> {
        let mut url = format!("{}?token={token}", ws_url(hub));
        if let Some(s) = since {
            url.push_str(&format!("&since={s}"));
        }
        let (stream, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(WsClient { stream })
    }

    /// The next JSON frame; pings and pongs are skipped.
    pub async fn next(&mut self) -> Result<Value> {
        self.try_next()
            .await?
            .ok_or_else(|| anyhow!("stream closed"))
    }

    /// The next JSON frame, or `None` once the hub closed the stream.
    pub async fn try_next(&mut self) -> Result<Option<Value>> {
        tokio::time::timeout(FRAME_WAIT, async {
            while let Some(msg) = self.stream.next().await {
                match msg? {
                    Message::Text(t) => return Ok(Some(serde_json::from_str(t.as_str())?)),
                    Message::Close(_) => return Ok(None),
                    _ => {}
                }
            }
            Ok(None)
        })
        .await
        .map_err(|_| anyhow!("no frame within {FRAME_WAIT:?}"))?
    }

    /// Skips frames until one `pred` accepts.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        loop {
            let f = self
                .next()
                .await
                .map_err(|e| anyhow!("waiting for {what}: {e}"))?;
            if pred(&f) {
                return Ok(f);
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.stream.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn close(mut self) -> Result<()> {
        self.stream.close(None).await?;
        Ok(())
    }
}

pub fn ws_url(hub: &TestHub) -> String {
    format!("{}/api/v1/ws", hub.base.replacen("http", "ws", 1))
}

fn seq(f: &Value) -> u64 {
    f["seq"].as_u64().unwrap_or(0)
}

fn is_position_at(f: &Value, lat: f64) -> bool {
    f["type"] == "position" && f["lat"].as_f64() == Some(lat)
}

fn gps(lat: f64) -> String {
    json!({"lat": lat, "lon": 139.6638, "accuracy_m": 10.0}).to_string()
}

/// The first frame is a snapshot of every live alert and visible resident; then
/// every alert change arrives whole, with a larger `seq`.
#[tokio::test]
async fn snapshot_first_then_every_change() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Sato Ume"})).await?;
    let button = hub.device(rid, "button").await?;
    let mut dev = connect_device(&hub, &button).await?;
    dev.publish_acked(&topic(&button, "sos"), "{}").await?;
    let first = hub
        .wait_alert(rid, "sos", "open", Duration::from_secs(10))
        .await?;

    let mut ws = WsClient::connect(&hub, &hub.admin_token, None).await?;
    let snap = ws.next().await?;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["alerts"][0]["id"], first["id"]);
    assert_eq!(snap["residents"][0]["resident_id"], rid);
    assert!(snap["residents"][0]["devices"][0]["online"].is_boolean());

    let (status, _) = hub
        .admin(
            Method::POST,
            &format!("/alerts/{}/ack", first["id"]),
            Some(json!({"note": "calling her"})),
        )
        .await?;
    assert_eq!(status, 200);
    let frame = ws.until("alert frame", |f| f["type"] == "alert").await?;
    assert_eq!(frame["alert"]["id"], first["id"]);
    assert_eq!(frame["alert"]["state"], "acknowledged");
    assert_eq!(frame["alert"]["acknowledged_by"], "admin");
    assert!(seq(&frame) > seq(&snap));
    Ok(())
}

/// A client that reconnects with `since` receives exactly the frames it missed:
/// the same frames, in the same order, as a client that stayed connected, and
/// nothing else before the next live frame.
#[tokio::test]
async fn reconnecting_with_since_replays_exactly_the_missed_frames() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Ito Kiyo"})).await?;
    let tracker = hub.device(rid, "gps").await?;
    let button = hub.device(rid, "button").await?;
    let mut gps_dev = connect_device(&hub, &tracker).await?;
    let mut button_dev = connect_device(&hub, &button).await?;

    let mut steady = WsClient::connect(&hub, &hub.admin_token, None).await?;
    let mut leaving = WsClient::connect(&hub, &hub.admin_token, None).await?;
    steady.next().await?;
    leaving.next().await?;
    gps_dev
        .publish_acked(&topic(&tracker, "gps"), gps(35.1))
        .await?;
    let seen = leaving
        .until("first fix", |f| is_position_at(f, 35.1))
        .await?;
    let seen = leaving
        .until("status after the fix", |f| {
            f["type"] == "status" && seq(f) > seq(&seen)
        })
        .await?;
    let since = seq(&seen);
    leaving.close().await?;

    button_dev
        .publish_acked(&topic(&button, "sos"), "{}")
        .await?;
    gps_dev
        .publish_acked(&topic(&tracker, "gps"), gps(35.2))
        .await?;
    gps_dev
        .publish_acked(&topic(&tracker, "gps"), gps(35.3))
        .await?;
    // What the steady client received after `since`, up to the status frame that
    // follows the last fix: that is what the leaving client missed.
    let mut missed = Vec::new();
    let mut last_fix_seen = false;
    loop {
        let f = steady.next().await?;
        if seq(&f) <= since {
            continue;
        }
        let done = last_fix_seen && f["type"] == "status";
        last_fix_seen |= is_position_at(&f, 35.3);
        missed.push(f);
        if done {
            break;
        }
    }
    assert!(
        missed.iter().any(|f| f["type"] == "alert"),
        "the SOS alert is among the missed frames: {missed:?}"
    );

    let mut back = WsClient::connect(&hub, &hub.admin_token, Some(since)).await?;
    let mut replayed = Vec::new();
    for _ in 0..missed.len() {
        replayed.push(back.next().await?);
    }
    assert_eq!(replayed, missed, "replay differs from what was missed");

    gps_dev
        .publish_acked(&topic(&tracker, "gps"), gps(35.4))
        .await?;
    let next_steady = steady.next().await?;
    let next_back = back.next().await?;
    assert_eq!(
        next_back, next_steady,
        "after the replay the stream goes on live, with nothing extra"
    );
    Ok(())
}

/// A `since` older than the replay window (or from the future) gets a fresh snapshot.
#[tokio::test]
async fn a_since_the_hub_cannot_replay_gets_a_snapshot() -> Result<()> {
    let hub = TestHub::start().await?;
    let mut ws = WsClient::connect(&hub, &hub.admin_token, Some(u64::MAX - 1)).await?;
    assert_eq!(ws.next().await?["type"], "snapshot");
    let mut ws = WsClient::connect(&hub, &hub.admin_token, Some(1)).await?;
    assert_eq!(ws.next().await?["type"], "snapshot");
    Ok(())
}

/// One client never reads its socket while thousands of fixes arrive: every PUBACK
/// still comes, and a reading client gets every frame in order with no resync.
#[tokio::test]
async fn a_client_that_never_reads_slows_neither_ingest_nor_others() -> Result<()> {
    const FIXES: usize = 3000;
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Kato Tome"})).await?;
    let tracker = hub.device(rid, "gps").await?;
    let mut dev = connect_device(&hub, &tracker).await?;

    let stuck = WsClient::connect(&hub, &hub.admin_token, None).await?;
    let mut reader = WsClient::connect(&hub, &hub.admin_token, None).await?;
    let snapshot = reader.next().await?;
    let reading = tokio::spawn(async move {
        let mut positions = 0;
        let mut last = seq(&snapshot);
        while positions < FIXES {
            let f = reader.next().await?;
            if f["type"] == "resync" {
                bail!("the reading client was told to resync: {f}");
            }
            if seq(&f) != last + 1 {
                bail!("gap in the stream: {last} then {}", seq(&f));
            }
            last = seq(&f);
            positions += usize::from(f["type"] == "position");
        }
        Ok(last)
    });

    let topic = topic(&tracker, "gps");
    let publishing = async {
        for i in 0..FIXES {
            let lat = 35.0 + i as f64 * 1e-5;
            dev.client
                .publish(&topic, QoS::AtLeastOnce, false, gps(lat))
                .await?;
        }
        let mut acks = 0;
        while acks < FIXES {
            dev.next_matching(FRAME_WAIT, |p| matches!(p, Packet::PubAck(_)))
                .await?;
            acks += 1;
        }
        Ok::<_, anyhow::Error>(acks)
    };
    assert_eq!(publishing.await?, FIXES);
    let last_seq = reading.await??;
    assert_eq!(
        hub.metric("mimamori_messages_accepted_total").await?,
        FIXES as f64
    );
    check_consistent(stuck, last_seq).await
}

/// Whatever the client that never read finally gets is consistent: seqs rise, and
/// any gap is announced by a `resync` followed by a snapshot.
async fn check_consistent(mut stuck: WsClient, last_seq: u64) -> Result<()> {
    let mut prev: Option<Value> = None;
    while let Some(f) = stuck.try_next().await? {
        if let Some(p) = &prev {
            let contiguous = seq(&f) == seq(p) + 1;
            let announced = p["type"] == "resync" && f["type"] == "snapshot";
            let after_snapshot = p["type"] == "snapshot" && seq(&f) > seq(p);
            let first_after_snapshot = p["type"] == "snapshot" && seq(&f) == seq(p) + 1;
            if !(contiguous || announced || after_snapshot || first_after_snapshot)
                && f["type"] != "resync"
            {
                bail!("unannounced gap: {} then {}", seq(p), seq(&f));
            }
        }
        if seq(&f) >= last_seq && f["type"] != "resync" && f["type"] != "snapshot" {
            return Ok(());
        }
        prev = Some(f);
    }
    // The hub dropped it for not reading: also fine, it will reconnect with `since`.
    Ok(())
}

/// A family user's stream carries only their own resident, in the snapshot and live.
#[tokio::test]
async fn family_users_receive_only_their_residents_frames() -> Result<()> {
    let hub = TestHub::start().await?;
    let mine = hub.resident(json!({"name": "Mother"})).await?;
    let other = hub.resident(json!({"name": "Someone else"})).await?;
    let my_button = hub.device(mine, "button").await?;
    let other_button = hub.device(other, "button").await?;
    hub.expect(
        Method::POST,
        "/users",
        Some(json!({"username": "daughter", "password": "family-password-1", "role": "family", "resident_ids": [mine]})),
        201,
    )
    .await?;
    let token = hub.login("daughter", "family-password-1").await?;
    let mut other_dev = connect_device(&hub, &other_button).await?;
    other_dev
        .publish_acked(&topic(&other_button, "sos"), "{}")
        .await?;
    hub.wait_alert(other, "sos", "open", Duration::from_secs(10))
        .await?;

    let mut family = WsClient::connect(&hub, &token, None).await?;
    let snap = family.next().await?;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["alerts"], json!([]), "another resident's alert leaked");
    let ids: Vec<&Value> = snap["residents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| &s["resident_id"])
        .collect();
    assert_eq!(ids, [&json!(mine)]);

    let mut admin = WsClient::connect(&hub, &hub.admin_token, None).await?;
    admin.next().await?;
    other_dev
        .publish_acked(&topic(&other_button, "heartbeat"), r#"{"battery":50}"#)
        .await?;
    admin
        .until("the other resident's status", |f| {
            f["type"] == "status" && f["status"]["resident_id"] == other
        })
        .await?;
    let mut my_dev = connect_device(&hub, &my_button).await?;
    my_dev
        .publish_acked(&topic(&my_button, "sos"), "{}")
        .await?;
    // Frames are sent in seq order, so had the other resident's frames (published
    // first) been forwarded, they would come before this alert.
    let f = family.next().await?;
    assert_eq!(f["type"], "alert", "{f}");
    assert_eq!(f["alert"]["resident_id"], mine);
    Ok(())
}

/// A wrong token is refused before the upgrade; a client may instead send its
/// token in the first frame; a logout ends the stream at the next check.
#[tokio::test]
async fn the_stream_needs_a_valid_session() -> Result<()> {
    let hub = TestHub::start().await?;
    let refused = tokio_tungstenite::connect_async(format!("{}?token=wrong", ws_url(&hub))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 401)
        }
        other => bail!("expected a 401, got {other:?}"),
    }

    let (stream, _) = tokio_tungstenite::connect_async(ws_url(&hub)).await?;
    let mut ws = WsClient { stream };
    ws.send_text(&json!({"type": "auth", "token": hub.admin_token}).to_string())
        .await?;
    assert_eq!(ws.next().await?["type"], "snapshot");

    let (stream, _) = tokio_tungstenite::connect_async(ws_url(&hub)).await?;
    let mut ws = WsClient { stream };
    ws.send_text(r#"{"type":"auth","token":"nope"}"#).await?;
    assert_eq!(
        ws.try_next().await?,
        None,
        "a bad first frame closes the stream"
    );
    Ok(())
}

/// Activity per hour counts motion seen and door use, by the hour, for 7 days; the
/// same SQL on both backends.
#[tokio::test]
async fn activity_per_hour_counts_motion_and_door_readings_sqlite() -> Result<()> {
    activity_and_track(Backend::Sqlite).await
}

#[tokio::test]
async fn activity_per_hour_counts_motion_and_door_readings_postgres() -> Result<()> {
    if skip_postgres("activity_per_hour_counts_motion_and_door_readings_postgres") {
        return Ok(());
    }
    activity_and_track(Backend::Postgres).await
}

async fn activity_and_track(backend: Backend) -> Result<()> {
    // History ten days old, as a backfill sends it: older than a `ts` may be by default.
    let hub = TestHub::start_with(backend, &["--max-age-s", "1209600"]).await?;
    let rid = hub.resident(json!({"name": "Mori Haru"})).await?;
    let motion = hub.device(rid, "motion").await?;
    let door = hub.device(rid, "door").await?;
    let tracker = hub.device(rid, "gps").await?;
    let mut m = connect_device(&hub, &motion).await?;
    let mut d = connect_device(&hub, &door).await?;
    let mut g = connect_device(&hub, &tracker).await?;
    let now = chrono::Utc::now();
    // The middle of an hour two days ago, so the three readings share one hour.
    let two_days_ago =
        (now - chrono::Duration::days(2)).timestamp_millis() / 3_600_000 * 3_600_000 + 1_800_000;
    let ten_days_ago = (now - chrono::Duration::days(10)).timestamp_millis();
    for (ts, motion_seen) in [
        (two_days_ago, true),
        (two_days_ago + 1, true),
        (two_days_ago + 2, false),
        (ten_days_ago, true),
    ] {
        m.publish_acked(
            &topic(&motion, "motion"),
            json!({"ts": ts, "motion": motion_seen, "room": "kitchen"}).to_string(),
        )
        .await?;
    }
    d.publish_acked(
        &topic(&door, "door"),
        json!({"ts": two_days_ago, "open": true}).to_string(),
    )
    .await?;
    g.publish_acked(&topic(&tracker, "gps"), gps(35.7)).await?;

    let v = hub
        .expect(
            Method::GET,
            &format!("/residents/{rid}/activity?days=7"),
            None,
            200,
        )
        .await?;
    let hour = two_days_ago / 3_600_000 * 3_600_000;
    let expected_hour = chrono::DateTime::from_timestamp_millis(hour)
        .ok_or_else(|| anyhow!("bad hour"))?
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert_eq!(
        v["hours"],
        json!([{"hour": expected_hour, "count": 3}]),
        "{v}"
    );
    let (status, _) = hub
        .admin(
            Method::GET,
            &format!("/residents/{rid}/activity?days=99"),
            None,
        )
        .await?;
    assert_eq!(status, 422);

    let track = hub
        .expect(Method::GET, &format!("/residents/{rid}/track"), None, 200)
        .await?;
    assert_eq!(track[0]["lat"], 35.7, "{track}");
    Ok(())
}

/// The keys of a JSON value, recursively: objects must have the same keys, and the
/// first elements of non-empty arrays the same shape. Free-form `details` are skipped.
fn same_shape(doc: &Value, real: &Value, path: &str) -> Result<()> {
    match (doc, real) {
        (Value::Object(d), Value::Object(r)) => {
            let dk: Vec<&String> = d.keys().collect();
            let rk: Vec<&String> = r.keys().collect();
            if dk != rk {
                bail!("{path}: the docs show keys {dk:?}, the hub sends {rk:?}");
            }
            for (k, v) in d {
                if k != "details" {
                    same_shape(v, &r[k], &format!("{path}.{k}"))?;
                }
            }
            Ok(())
        }
        (Value::Array(d), Value::Array(r)) => match (d.first(), r.first()) {
            (Some(d0), Some(r0)) => same_shape(d0, r0, &format!("{path}[0]")),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Every frame example in docs/dashboard.md has the shape of a frame the hub sends.
#[tokio::test]
async fn the_documented_frames_are_the_real_ones() -> Result<()> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.md"),
    )?;
    let examples: Vec<Value> = doc
        .split("```json")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let types: Vec<&str> = examples.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        ["snapshot", "alert", "position", "status", "resident", "resync"]
    );

    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Abe Chiyo"})).await?;
    let tracker = hub.device(rid, "gps").await?;
    let button = hub.device(rid, "button").await?;
    let mut ws = WsClient::connect(&hub, &hub.admin_token, None).await?;
    ws.next().await?;
    let mut g = connect_device(&hub, &tracker).await?;
    g.publish_acked(&topic(&tracker, "gps"), gps(35.708))
        .await?;
    let mut b = connect_device(&hub, &button).await?;
    b.publish_acked(&topic(&button, "sos"), "{}").await?;
    let mut real = std::collections::HashMap::new();
    while real.len() < 3 {
        let f = ws.next().await?;
        if let Some(t) = f["type"].as_str() {
            real.entry(t.to_string()).or_insert(f);
        }
    }
    let mut fresh = WsClient::connect(&hub, &hub.admin_token, None).await?;
    real.insert("snapshot".into(), fresh.next().await?);
    hub.resident(json!({"name": "Ogawa Fumi"})).await?;
    let named = ws
        .until("a resident frame", |f| f["type"] == "resident")
        .await?;
    real.insert("resident".into(), named);
    for example in &examples[..5] {
        let t = example["type"].as_str().unwrap_or_default();
        let frame = real.get(t).ok_or_else(|| anyhow!("no real {t} frame"))?;
        same_shape(example, frame, t)?;
    }
    Ok(())
}
