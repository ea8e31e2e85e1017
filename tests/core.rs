//! Hub core: devices, credentials, ingest, store and API, end to end over real sockets.

use std::time::Duration;

use anyhow::Result;
use reqwest::Method;
use rumqttc::{ConnectReturnCode, Packet, QoS};
use serde_json::json;

use crate::helpers::*;

const NAKANO: (f64, f64) = (35.7074, 139.6638);

async fn resident_with_device(
    hub: &TestHub,
    kind: &str,
) -> Result<(i64, mimamori_protocol::api::DeviceCreated)> {
    let rid = hub
        .resident(json!({"name": "Tanaka Hanako", "home": {"lat": NAKANO.0, "lon": NAKANO.1}}))
        .await?;
    let dev = hub.device(rid, kind).await?;
    Ok((rid, dev))
}

/// Valid messages are stored; each bad one is refused with its reason and counted.
async fn stores_valid_and_dead_letters_invalid(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &[]).await?;
    let (rid, dev) = resident_with_device(&hub, "gps").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    mqtt.publish_acked(
        &topic(&dev, "motion"),
        r#"{"motion":true,"room":"kitchen"}"#,
    )
    .await?;
    // A fix taken an hour ago, delivered now: buffered history, well within a day.
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).timestamp_millis();
    mqtt.publish_acked(
        &topic(&dev, "gps"),
        format!(
            r#"{{"ts":{hour_ago},"lat":35.7074,"lon":139.6638,"accuracy_m":12.5,"battery":81}}"#
        ),
    )
    .await?;
    mqtt.publish_acked(&topic(&dev, "heartbeat"), r#"{"battery":55}"#)
        .await?;
    let bad = [
        ("motion", "not json", "not_json"),
        ("motion", r#"{"motion":"yes"}"#, "bad_field"),
        ("gps", r#"{"lat":91.0,"lon":0}"#, "out_of_range"),
        ("sos", r#"{"ts":4102444800000}"#, "future_timestamp"),
        (
            "motion",
            r#"{"ts":1764032400,"motion":true}"#,
            "ts_in_seconds",
        ),
        (
            "heartbeat",
            r#"{"ts":"2026-01-01T00:00:00Z"}"#,
            "stale_timestamp",
        ),
        ("temperature", r#"{"c":20}"#, "unknown_kind"),
    ];
    for (kind, payload, _) in bad {
        mqtt.publish_acked(&topic(&dev, kind), payload).await?;
    }
    let big = format!(r#"{{"motion":true,"room":"{}"}}"#, "x".repeat(17 * 1024));
    mqtt.publish_acked(&topic(&dev, "motion"), big).await?;

    let readings = hub.readings(rid).await?;
    let kinds: Vec<&str> = readings.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["heartbeat", "gps", "motion"],
        "newest first: {readings:?}"
    );
    assert_eq!(readings[1]["lat"], 35.7074);
    assert_eq!(readings[1]["battery"], 81);
    let rejected = hub.expect(Method::GET, "/rejected", None, 200).await?;
    let reasons: Vec<&str> = rejected
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    for (_, _, reason) in bad {
        assert!(
            reasons.contains(&reason),
            "{reason} missing from {reasons:?}"
        );
    }
    assert!(reasons.contains(&"too_large"));
    assert_eq!(hub.metric("mimamori_messages_accepted_total").await?, 3.0);
    assert_eq!(
        hub.metric(r#"mimamori_messages_rejected_total{reason="not_json"}"#)
            .await?,
        1.0
    );
    assert_eq!(
        hub.metric(r#"mimamori_messages_rejected_total{reason="too_large"}"#)
            .await?,
        1.0
    );
    let devices = hub.expect(Method::GET, "/devices", None, 200).await?;
    assert_eq!(
        devices[0]["battery"], 55,
        "last battery level kept per device"
    );
    Ok(())
}

#[tokio::test]
async fn sqlite_stores_valid_and_dead_letters_invalid() -> Result<()> {
    stores_valid_and_dead_letters_invalid(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_stores_valid_and_dead_letters_invalid() -> Result<()> {
    if skip_postgres("postgres_stores_valid_and_dead_letters_invalid") {
        return Ok(());
    }
    stores_valid_and_dead_letters_invalid(Backend::Postgres).await
}

#[tokio::test]
async fn wrong_secret_unknown_device_and_missing_credentials_are_refused() -> Result<()> {
    let hub = TestHub::start().await?;
    let (_, dev) = resident_with_device(&hub, "motion").await?;
    let id = &dev.mqtt.username;
    let wrong = mqtt_connect(hub.mqtt_port, id, id, "not-the-secret")
        .await
        .err();
    assert_eq!(
        wrong,
        Some(MqttRefusal::Refused(ConnectReturnCode::BadUserNamePassword))
    );
    let unknown = mqtt_connect(hub.mqtt_port, "dev-nobody", "dev-nobody", "x")
        .await
        .err();
    assert_eq!(
        unknown,
        Some(MqttRefusal::Refused(ConnectReturnCode::BadUserNamePassword))
    );
    let other_id = mqtt_connect(hub.mqtt_port, "someone-else", id, &dev.mqtt.password)
        .await
        .err();
    assert_eq!(
        other_id,
        Some(MqttRefusal::Refused(ConnectReturnCode::BadClientId))
    );
    assert!(
        hub.metric(r#"mimamori_mqtt_connects_refused_total{code="bad_username_or_password"}"#)
            .await?
            >= 2.0
    );
    Ok(())
}

#[tokio::test]
async fn a_revoked_device_is_disconnected_and_cannot_come_back() -> Result<()> {
    let hub = TestHub::start().await?;
    let (_, dev) = resident_with_device(&hub, "motion").await?;
    let mut live = connect_device(&hub, &dev).await?;
    live.publish_acked(&topic(&dev, "heartbeat"), "{}").await?;
    hub.expect(Method::DELETE, &format!("/devices/{}", dev.id), None, 204)
        .await?;
    assert!(
        live.closed(Duration::from_secs(10)).await,
        "live connection not closed on revocation"
    );
    let again = mqtt_connect(hub.mqtt_port, &dev.id, &dev.id, &dev.mqtt.password)
        .await
        .err();
    assert_eq!(
        again,
        Some(MqttRefusal::Refused(ConnectReturnCode::BadUserNamePassword))
    );
    Ok(())
}

#[tokio::test]
async fn a_rotated_secret_replaces_the_old_one() -> Result<()> {
    let hub = TestHub::start().await?;
    let (_, dev) = resident_with_device(&hub, "door").await?;
    let rotated = hub
        .expect(
            Method::POST,
            &format!("/devices/{}/rotate-secret", dev.id),
            None,
            200,
        )
        .await?;
    let new_secret = rotated["mqtt"]["password"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(new_secret, dev.mqtt.password);
    assert!(
        mqtt_connect(hub.mqtt_port, &dev.id, &dev.id, &dev.mqtt.password)
            .await
            .is_err()
    );
    assert!(mqtt_connect(hub.mqtt_port, &dev.id, &dev.id, &new_secret)
        .await
        .is_ok());
    Ok(())
}

#[tokio::test]
async fn publishing_as_another_device_is_refused_and_reaches_nobody() -> Result<()> {
    let hub = TestHub::start().await?;
    let (rid, a) = resident_with_device(&hub, "motion").await?;
    let b = hub.device(rid, "button").await?;
    hub.user("integrator", "staff", &[]).await?;
    let mut watcher = mqtt_connect(
        hub.mqtt_port,
        "watcher",
        "integrator",
        &password_of("integrator"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    watcher
        .client
        .subscribe("watch/v1/#", QoS::AtLeastOnce)
        .await?;
    watcher
        .next_matching(Duration::from_secs(10), |p| matches!(p, Packet::SubAck(_)))
        .await?;

    let mut attacker = connect_device(&hub, &a).await?;
    attacker
        .client
        .publish(topic(&b, "sos"), QoS::AtLeastOnce, false, "{}")
        .await?;
    assert!(
        attacker.closed(Duration::from_secs(10)).await,
        "MQTT 3.1.1: the connection is closed"
    );
    // The device's own, valid publish after reconnecting still reaches subscribers.
    let mut honest = connect_device(&hub, &a).await?;
    honest
        .publish_acked(&topic(&a, "motion"), r#"{"motion":true}"#)
        .await?;
    let seen = watcher
        .next_matching(Duration::from_secs(10), |p| matches!(p, Packet::Publish(_)))
        .await?;
    let Packet::Publish(p) = seen else {
        unreachable!()
    };
    assert_eq!(
        p.topic,
        topic(&a, "motion"),
        "the spoofed SOS must never reach a subscriber"
    );

    assert_eq!(
        hub.metric(r#"mimamori_messages_rejected_total{reason="not_authorized"}"#)
            .await?,
        1.0
    );
    assert!(
        hub.alerts(rid).await?.iter().all(|al| al["kind"] != "sos"),
        "no SOS alert from a spoofed message"
    );
    assert!(hub.readings(rid).await?.iter().all(|r| r["kind"] != "sos"));
    Ok(())
}

#[tokio::test]
async fn a_refused_connect_then_a_retry_with_the_same_client_id_leaves_the_broker_working(
) -> Result<()> {
    let hub = TestHub::start().await?;
    let (rid, dev) = resident_with_device(&hub, "motion").await?;
    let others: Vec<_> = futures_devices(&hub, rid, 3).await?;
    for _ in 0..3 {
        assert!(mqtt_connect(hub.mqtt_port, &dev.id, &dev.id, "wrong")
            .await
            .is_err());
        let mut ok = connect_device(&hub, &dev).await?;
        ok.publish_acked(&topic(&dev, "heartbeat"), "{}").await?;
    }
    // A device dropping its socket before CONNACK, then retrying, changes nothing either.
    for _ in 0..3 {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", hub.mqtt_port)).await?;
        drop(s);
    }
    for d in &others {
        let mut c = connect_device(&hub, d).await?;
        c.publish_acked(&topic(d, "heartbeat"), "{}").await?;
    }
    Ok(())
}

async fn futures_devices(
    hub: &TestHub,
    rid: i64,
    n: usize,
) -> Result<Vec<mimamori_protocol::api::DeviceCreated>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(hub.device(rid, "motion").await?);
    }
    Ok(out)
}

#[tokio::test]
async fn a_thousand_devices_connecting_at_once_all_get_in() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Many Sensors"})).await?;
    let mut creds = Vec::new();
    for _ in 0..1000 {
        creds.push(hub.device(rid, "motion").await?);
    }
    let port = hub.mqtt_port;
    let tasks: Vec<_> = creds
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                mqtt_connect(port, &c.id, &c.id, &c.mqtt.password)
                    .await
                    .map(|m| m.client)
            })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(
            t.await?
                .map_err(|e| anyhow::anyhow!("a device was refused: {e:?}"))?,
        );
    }
    assert_eq!(clients.len(), 1000);
    let health = hub.expect(Method::GET, "/healthz", None, 200).await?;
    assert_eq!(health["mqtt_connections"], 1000);
    Ok(())
}

#[tokio::test]
async fn sqlite_acknowledged_message_survives_sigkill() -> Result<()> {
    acknowledged_message_survives_sigkill(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_acknowledged_message_survives_sigkill() -> Result<()> {
    if skip_postgres("postgres_acknowledged_message_survives_sigkill") {
        return Ok(());
    }
    acknowledged_message_survives_sigkill(Backend::Postgres).await
}

async fn acknowledged_message_survives_sigkill(backend: Backend) -> Result<()> {
    let mut hub = TestHub::start_with(backend, &[]).await?;
    let (rid, dev) = resident_with_device(&hub, "gps").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    for i in 0..50 {
        let payload = json!({"lat": 35.70 + f64::from(i) * 1e-4, "lon": 139.66, "accuracy_m": 8.0})
            .to_string();
        mqtt.publish_acked(&topic(&dev, "gps"), payload).await?;
    }
    hub.kill().await?;
    hub.restart().await?;
    let stored = hub.readings(rid).await?;
    assert_eq!(
        stored.iter().filter(|r| r["kind"] == "gps").count(),
        50,
        "every PUBACKed fix is stored"
    );
    Ok(())
}

#[tokio::test]
async fn sqlite_acknowledged_messages_of_a_flood_survive_sigkill() -> Result<()> {
    acknowledged_messages_of_a_flood_survive_sigkill(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_acknowledged_messages_of_a_flood_survive_sigkill() -> Result<()> {
    if skip_postgres("postgres_acknowledged_messages_of_a_flood_survive_sigkill") {
        return Ok(());
    }
    acknowledged_messages_of_a_flood_survive_sigkill(Backend::Postgres).await
}

/// Fixes each flooding device sends, with this many unacknowledged at once.
const FLOOD_EACH: u16 = 900;
const FLOOD_WINDOW: u16 = 64;
/// Devices flooding at once: enough for batches of many messages.
const FLOOD_DEVICES: usize = 4;

/// How far a flood has got, and the signal that it is a third of the way.
#[derive(Default)]
struct FloodProgress {
    acked: std::sync::atomic::AtomicUsize,
    third: tokio::sync::Notify,
}

impl FloodProgress {
    fn one_more(&self) {
        let n = self
            .acked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n == FLOOD_DEVICES * usize::from(FLOOD_EACH) / 3 {
            self.third.notify_one();
        }
    }
}

/// Under a flood from several devices, messages are committed many to a batch and their
/// PUBACKs released together; a SIGKILL in the middle must still find every PUBACKed
/// message stored.
async fn acknowledged_messages_of_a_flood_survive_sigkill(backend: Backend) -> Result<()> {
    let mut hub = TestHub::start_with(backend, &[]).await?;
    let progress = std::sync::Arc::new(FloodProgress::default());
    let mut floods = Vec::new();
    for _ in 0..FLOOD_DEVICES {
        let (rid, dev) = resident_with_device(&hub, "gps").await?;
        let (device, _) = RawClient::accepted(hub.mqtt_port, RawLogin::device(&dev)).await?;
        let topic = topic(&dev, "gps");
        floods.push((rid, tokio::spawn(flood(device, topic, progress.clone()))));
    }
    tokio::time::timeout(Duration::from_secs(60), progress.third.notified())
        .await
        .map_err(|_| anyhow::anyhow!("a third of the flood was not acknowledged in 60 s"))?;
    let batches = hub.metric("mimamori_ingest_batches_total").await?;
    hub.kill().await?;
    let acked_before_kill = progress.acked.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        batches < acked_before_kill as f64,
        "messages were committed many to a batch ({batches} batches for {acked_before_kill})"
    );
    let mut acked = Vec::new();
    for (rid, flood) in floods {
        acked.push((rid, flood.await??));
    }
    let total: usize = acked.iter().map(|(_, a)| a.len()).sum();
    assert!(
        total < FLOOD_DEVICES * usize::from(FLOOD_EACH),
        "the kill came in the middle of the flood ({total} acknowledged)"
    );
    hub.restart().await?;
    for (rid, acked) in acked {
        let stored: std::collections::BTreeSet<u16> = hub
            .readings(rid)
            .await?
            .iter()
            .filter_map(|r| r["lat"].as_f64())
            .map(flood_index)
            .collect();
        let lost: Vec<&u16> = acked.iter().filter(|i| !stored.contains(i)).collect();
        assert!(
            lost.is_empty(),
            "resident {rid}: PUBACKed but not stored: {lost:?}"
        );
    }
    Ok(())
}

/// Publishes [`FLOOD_EACH`] fixes at QoS 1, keeping [`FLOOD_WINDOW`] unacknowledged, until
/// done or the hub goes away; returns the index of every fix the hub acknowledged.
async fn flood(
    mut device: RawClient,
    topic: String,
    progress: std::sync::Arc<FloodProgress>,
) -> Result<std::collections::BTreeSet<u16>> {
    let mut acked = std::collections::BTreeSet::new();
    let mut sent = 0u16;
    while acked.len() < usize::from(FLOOD_EACH) {
        if sent < FLOOD_EACH && usize::from(sent) - acked.len() < usize::from(FLOOD_WINDOW) {
            let payload =
                json!({"lat": 35.70 + f64::from(sent) * 1e-5, "lon": 139.66, "accuracy_m": 8.0})
                    .to_string();
            let publish = mqttrs::Packet::Publish(mqttrs::Publish {
                dup: false,
                qospid: mqttrs::QosPid::AtLeastOnce(raw_pid(sent + 1)?),
                retain: false,
                topic_name: &topic,
                payload: payload.as_bytes(),
            });
            if device.send(&publish).await.is_err() {
                break;
            }
            sent += 1;
            continue;
        }
        match device.next().await {
            Ok(mqttrs::Packet::Puback(pid)) => {
                if acked.insert(pid.get() - 1) {
                    progress.one_more();
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(acked)
}

fn flood_index(lat: f64) -> u16 {
    ((lat - 35.70) / 1e-5).round() as u16
}

#[tokio::test]
async fn every_call_needs_a_token_and_roles_limit_what_it_may_do() -> Result<()> {
    let hub = TestHub::start().await?;
    let mine = hub.resident(json!({"name": "Mother"})).await?;
    let other = hub.resident(json!({"name": "Someone else"})).await?;
    let (status, body) = hub.call(None, Method::GET, "/residents", None).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = hub
        .call(Some("forged"), Method::GET, "/residents", None)
        .await?;
    assert_eq!(status, 401);
    let family = hub.user("daughter", "family", &[mine]).await?;
    let (_, listed) = hub
        .call(Some(&family), Method::GET, "/residents", None)
        .await?;
    let ids: Vec<i64> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(ids, [mine]);
    let (status, _) = hub
        .call(
            Some(&family),
            Method::GET,
            &format!("/residents/{other}"),
            None,
        )
        .await?;
    assert_eq!(
        status, 404,
        "another family's resident does not exist for this user"
    );
    let (status, body) = hub
        .call(
            Some(&family),
            Method::POST,
            "/residents",
            Some(json!({"name": "x"})),
        )
        .await?;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, _) = hub
        .call(
            Some(&family),
            Method::POST,
            "/devices",
            Some(json!({"resident_id": mine, "kind": "gps", "name": "x"})),
        )
        .await?;
    assert_eq!(status, 403);
    let (status, _) = hub.call(Some(&family), Method::GET, "/users", None).await?;
    assert_eq!(status, 403);
    let audit = hub.expect(Method::GET, "/audit", None, 200).await?;
    let actions: Vec<&str> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"user.create") && actions.contains(&"resident.create"),
        "{actions:?}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_specific_json_errors() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Zones"})).await?;
    let cases = [
        (
            Method::POST,
            "/residents".to_string(),
            json!({"name": "x", "timezone": "Mars/Base"}),
            422,
            "timezone",
        ),
        (
            Method::POST,
            "/residents".to_string(),
            json!({"name": "x", "rules": {"inactivity": {"day_starts": "25:00"}}}),
            422,
            "day_starts",
        ),
        (
            Method::POST,
            "/devices".to_string(),
            json!({"resident_id": rid, "kind": "toaster", "name": "x"}),
            422,
            "kind",
        ),
        (
            Method::POST,
            format!("/residents/{rid}/geofences"),
            json!({"name": "home", "circle": {"lat": 35.7, "lon": 139.6, "radius_m": -5}}),
            422,
            "radius",
        ),
        (
            Method::POST,
            format!("/residents/{rid}/geofences"),
            json!({"name": "home", "polygon": {"type": "Polygon", "coordinates": [[[139.66, 35.70], [139.67, 35.70], [139.67, 35.71]]]}}),
            422,
            "ring",
        ),
        (
            Method::POST,
            format!("/residents/{rid}/geofences"),
            json!({"name": "home"}),
            422,
            "polygon",
        ),
        (
            Method::PATCH,
            format!("/residents/{rid}"),
            json!({"rules": {"geofence": {"confirm_fixes": 0}}}),
            422,
            "confirm_fixes",
        ),
        (
            Method::GET,
            "/residents/abc".to_string(),
            json!(null),
            400,
            "parse",
        ),
        (
            Method::GET,
            "/nothing-here".to_string(),
            json!(null),
            404,
            "endpoint",
        ),
    ];
    for (method, path, body, status, word) in cases {
        let body = (!body.is_null()).then_some(body);
        let (got, v) = hub.admin(method.clone(), &path, body).await?;
        assert_eq!(got, status, "{method} {path}: {v}");
        let message = v["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            message.contains(word),
            "{method} {path}: message {message:?} should mention {word}"
        );
    }
    let huge = "x".repeat(400 * 1024);
    let (status, v) = hub
        .admin(Method::POST, "/residents", Some(json!({"name": huge})))
        .await?;
    assert_eq!((status, v["error"].as_str()), (413, Some("too_large")));
    Ok(())
}

#[tokio::test]
async fn a_taken_port_is_named_in_a_one_line_error() -> Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mimamori-test-hub"))
        .args([
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--mqtt-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--database-url",
            &format!("sqlite:{}", dir.path().join("h.db").display()),
        ])
        .output()
        .await?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error_line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(error_line.contains(&port.to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn the_hub_serves_a_health_check_and_prometheus_metrics() -> Result<()> {
    let hub = TestHub::start().await?;
    let health = hub.expect(Method::GET, "/healthz", None, 200).await?;
    assert_eq!(health["status"], "ok");
    assert!(hub.metric("mimamori_messages_accepted_total").await? >= 0.0);
    let text = hub
        .http
        .get(hub.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        text.contains("# TYPE mimamori_messages_rejected counter"),
        "{text}"
    );
    Ok(())
}
