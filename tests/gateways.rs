//! Gateways (issue 7): Zigbee2MQTT, OwnTracks and OsmAnd clients against the real hub.
//!
//! The payloads are the ones these clients publish, taken from their documentation
//! (the source is named at each), and are read from `docs/gateways.md`, so that every
//! example of that page is run here. OwnTracks on Android speaks MQTT 3.1, which
//! rumqttc cannot: its CONNECT is written byte by byte below, the way the app sends it.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mimamori_protocol::api::DeviceCreated;
use mqttrs::{Packet, Pid, QoS, QosPid, Subscribe, SubscribeTopic};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{eventually, mqtt_connect, MqttClient, TestHub};

pub(crate) const WAIT: Duration = Duration::from_secs(30);
/// Where the resident lives: the centre of their safe zone.
const HOME: (f64, f64) = (35.7074, 139.6638);

/// The fenced block that follows `<!-- example: {name} -->` in docs/gateways.md.
pub(crate) fn doc_example(name: &str) -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/gateways.md");
    let text = std::fs::read_to_string(path).context("docs/gateways.md")?;
    let marker = format!("<!-- example: {name} -->");
    let after = text
        .split_once(&marker)
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("no example {name} in docs/gateways.md"))?;
    let fence_start = after
        .find("```")
        .ok_or_else(|| anyhow!("no block after {name}"))?;
    let body = &after[fence_start..];
    let body = body.split_once('\n').map(|(_, b)| b).unwrap_or_default();
    let end = body
        .find("```")
        .ok_or_else(|| anyhow!("unclosed block {name}"))?;
    Ok(body[..end].trim().to_string())
}

/// Every example the page shows; the test below fails when one is added without a test.
const DOC_EXAMPLES: [&str; 28] = [
    "z2m-config",
    "z2m-map",
    "z2m-map-button",
    "z2m-occupancy",
    "z2m-button",
    "owntracks-location",
    "owntracks-lwt",
    "owntracks-waypoints",
    "osmand-server-url",
    "osmand-request",
    "osmand-json",
    // Run by tests/lorawan.rs.
    "chirpstack-toml",
    "chirpstack-bridge",
    "chirpstack-register",
    "chirpstack-profile",
    "chirpstack-register-profile",
    "chirpstack-up",
    "chirpstack-status",
    "chirpstack-up-object",
    // Run by tests/ble.rs.
    "ble-tag",
    "ble-receiver",
    "ble-receiver-phone",
    "espresense-report",
    "ble-sighting",
    // Run by tests/tts.rs.
    "tts-config",
    "tts-uplink",
    // Run by tests/echonet.rs.
    "echonet-map",
    "echonet-env",
];

#[test]
fn every_example_of_the_gateways_page_is_run_by_a_test() -> Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/gateways.md");
    let text = std::fs::read_to_string(path)?;
    let mut found: Vec<&str> = text
        .split("<!-- example: ")
        .skip(1)
        .filter_map(|s| s.split_once(" -->").map(|(n, _)| n))
        .collect();
    found.sort_unstable();
    let mut known: Vec<&str> = DOC_EXAMPLES.to_vec();
    known.sort_unstable();
    assert_eq!(
        found, known,
        "docs/gateways.md examples and the tests differ"
    );
    Ok(())
}

/// A resident whose inactivity alert fires after 3 s of silence, day and night.
pub(crate) async fn quick_resident(hub: &TestHub) -> Result<i64> {
    hub.resident(json!({"name": "Tanaka", "rules": {"inactivity": {"day_threshold_s": 3, "night_threshold_s": 3}}}))
        .await
}

async fn map_zigbee(
    hub: &TestHub,
    gateway: &str,
    body: &str,
    device: &str,
    placeholder: &str,
) -> Result<Value> {
    let body: Value = serde_json::from_str(&body.replace(placeholder, device))?;
    hub.expect(
        Method::POST,
        &format!("/devices/{gateway}/zigbee"),
        Some(body),
        201,
    )
    .await
}

/// The gateway connected as its Zigbee2MQTT is configured by the documented `mqtt:` section.
async fn connect_zigbee2mqtt(hub: &TestHub, gw: &DeviceCreated) -> Result<(MqttClient, String)> {
    let yaml = doc_example("z2m-config")?
        .replace("GATEWAY_ID", &gw.id)
        .replace("GATEWAY_SECRET", &gw.mqtt.password)
        .replace("HUB", "127.0.0.1");
    let cfg: Value = serde_yaml_ng::from_str(&yaml)?;
    let mqtt = &cfg["mqtt"];
    let field = |k: &str| {
        mqtt[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no mqtt.{k}"))
    };
    assert_eq!(field("server")?, "mqtt://127.0.0.1:1883");
    let client = mqtt_connect(
        hub.mqtt_port,
        &field("client_id")?,
        &field("user")?,
        &field("password")?,
    )
    .await
    .map_err(|e| anyhow!("gateway could not connect: {e:?}"))?;
    Ok((client, field("base_topic")?))
}

pub(crate) async fn rejected(hub: &TestHub, reason: &str) -> Result<f64> {
    hub.metric(&format!(
        "mimamori_messages_rejected_total{{reason=\"{reason}\"}}"
    ))
    .await
}

/// Waits until the metric has grown past `before`.
pub(crate) async fn rejected_grows(hub: &TestHub, reason: &str, before: f64) -> Result<()> {
    eventually(&format!("{reason} counted"), WAIT, || async {
        (rejected(hub, reason).await.ok()? > before).then_some(())
    })
    .await
}

#[tokio::test]
async fn zigbee2mqtt_occupancy_resets_the_inactivity_timer_until_it_stops() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = quick_resident(&hub).await?;
    let gw = hub.device(rid, "gateway").await?;
    let motion = hub.device(rid, "motion").await?;
    let mapped = map_zigbee(
        &hub,
        &gw.id,
        &doc_example("z2m-map")?,
        &motion.id,
        "MOTION_DEVICE_ID",
    )
    .await?;
    assert_eq!(mapped["device_kind"], "motion");
    let (mut z2m, base) = connect_zigbee2mqtt(&hub, &gw).await?;
    assert_eq!(base, format!("zigbee2mqtt/{}", gw.id));
    let topic = format!("{base}/bedroom motion");

    // Nothing moved for 3 s: the rule fires.
    let first = hub.wait_alert(rid, "inactivity", "open", WAIT).await?;
    // Zigbee2MQTT publishes `occupancy:false` itself after the sensor's timeout: not movement.
    let no_motion =
        doc_example("z2m-occupancy")?.replace("\"occupancy\":true", "\"occupancy\":false");
    z2m.publish_acked(&topic, no_motion).await?;
    let still = hub.alerts(rid).await?;
    assert!(
        still
            .iter()
            .any(|a| a["id"] == first["id"] && a["state"] == "open"),
        "{still:?}"
    );
    // The documented occupancy message is movement of the mapped device: the alert resolves.
    z2m.publish_acked(&topic, doc_example("z2m-occupancy")?)
        .await?;
    let resolved = hub.wait_alert(rid, "inactivity", "resolved", WAIT).await?;
    assert_eq!(resolved["id"], first["id"]);
    let readings = hub.readings(rid).await?;
    let latest = readings.first().ok_or_else(|| anyhow!("no reading"))?;
    assert_eq!(
        (latest["device_id"].as_str(), latest["kind"].as_str()),
        (Some(motion.id.as_str()), Some("motion"))
    );
    assert_eq!(latest["battery"], 100);
    // And when the messages stop, the timer runs out again: a new alert.
    eventually("a second inactivity alert", WAIT, || async {
        let alerts = hub.alerts(rid).await.ok()?;
        alerts
            .into_iter()
            .find(|a| a["kind"] == "inactivity" && a["state"] == "open" && a["id"] != first["id"])
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn zigbee2mqtt_button_raises_sos_and_availability_in_both_forms_marks_devices() -> Result<()>
{
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Sato"})).await?;
    let gw = hub.device(rid, "gateway").await?;
    let button = hub.device(rid, "button").await?;
    map_zigbee(
        &hub,
        &gw.id,
        &doc_example("z2m-map-button")?,
        &button.id,
        "BUTTON_DEVICE_ID",
    )
    .await?;
    let (mut z2m, base) = connect_zigbee2mqtt(&hub, &gw).await?;

    // The empty action of Home Assistant's legacy action sensor is not a press.
    z2m.publish_acked(&format!("{base}/pendant"), r#"{"action":""}"#)
        .await?;
    assert!(hub.alerts(rid).await?.iter().all(|a| a["kind"] != "sos"));
    z2m.publish_acked(&format!("{base}/pendant"), doc_example("z2m-button")?)
        .await?;
    let sos = hub.wait_alert(rid, "sos", "open", WAIT).await?;
    assert_eq!(sos["device_id"], button.id.as_str());

    // Availability: Zigbee2MQTT 1.x's plain form, then 2.x's JSON form.
    let availability = format!("{base}/pendant/availability");
    z2m.publish_acked(&availability, "offline").await?;
    let offline = hub.wait_alert(rid, "device_offline", "open", WAIT).await?;
    assert_eq!(offline["device_id"], button.id.as_str());
    z2m.publish_acked(&availability, r#"{"state":"online"}"#)
        .await?;
    hub.wait_alert(rid, "device_offline", "resolved", WAIT)
        .await?;
    z2m.publish_acked(&availability, r#"{"state":"offline"}"#)
        .await?;
    hub.wait_alert(rid, "device_offline", "open", WAIT).await?;
    z2m.publish_acked(&availability, "online").await?;

    // The bridge's own state (its will says offline) is the gateway's.
    z2m.publish_acked(&format!("{base}/bridge/state"), r#"{"state":"offline"}"#)
        .await?;
    eventually("the gateway offline", WAIT, || async {
        let alerts = hub.alerts(rid).await.ok()?;
        alerts.into_iter().find(|a| {
            a["kind"] == "device_offline"
                && a["state"] == "open"
                && a["device_id"] == gw.id.as_str()
        })
    })
    .await?;
    // Any other bridge message (2.x sends `bridge/health` every 10 min) is the gateway's
    // sign of life: stored as its heartbeat, refused never, and it ends the offline alert.
    let refused = rejected(&hub, "bad_field").await? + rejected(&hub, "not_json").await?;
    z2m.publish_acked(
        &format!("{base}/bridge/info"),
        r#"{"version":"2.1.1","log_level":"info"}"#,
    )
    .await?;
    let latest = hub.readings(rid).await?;
    assert_eq!(
        (latest[0]["device_id"].as_str(), latest[0]["kind"].as_str()),
        (Some(gw.id.as_str()), Some("heartbeat"))
    );
    assert_eq!(
        rejected(&hub, "bad_field").await? + rejected(&hub, "not_json").await?,
        refused
    );
    eventually("the gateway back online", WAIT, || async {
        let alerts = hub.alerts(rid).await.ok()?;
        alerts.into_iter().find(|a| {
            a["kind"] == "device_offline"
                && a["state"] == "resolved"
                && a["device_id"] == gw.id.as_str()
        })
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn zigbee2mqtt_spoofed_unmapped_and_malformed_messages_are_refused_and_counted() -> Result<()>
{
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Suzuki"})).await?;
    let gw = hub.device(rid, "gateway").await?;
    let other_gw = hub.device(rid, "gateway").await?;
    let motion = hub.device(rid, "motion").await?;
    map_zigbee(
        &hub,
        &other_gw.id,
        &doc_example("z2m-map")?,
        &motion.id,
        "MOTION_DEVICE_ID",
    )
    .await?;
    let (mut z2m, base) = connect_zigbee2mqtt(&hub, &gw).await?;

    let unknown = rejected(&hub, "unknown_device").await?;
    z2m.publish_acked(
        &format!("{base}/bedroom motion"),
        doc_example("z2m-occupancy")?,
    )
    .await?;
    rejected_grows(&hub, "unknown_device", unknown).await?;

    let not_json = rejected(&hub, "not_json").await?;
    z2m.publish_acked(&format!("{base}/bridge/state"), "{\"state\":")
        .await?;
    rejected_grows(&hub, "not_json", not_json).await?;
    assert!(hub.readings(rid).await?.is_empty());

    // Speaking on another gateway's base topic closes the connection and reaches no one.
    let spoofed = rejected(&hub, "not_authorized").await?;
    z2m.client
        .publish(
            format!("zigbee2mqtt/{}/bedroom motion", other_gw.id),
            rumqttc::QoS::AtLeastOnce,
            false,
            doc_example("z2m-occupancy")?,
        )
        .await?;
    assert!(
        z2m.closed(WAIT).await,
        "the spoofing gateway stayed connected"
    );
    rejected_grows(&hub, "not_authorized", spoofed).await?;
    assert!(hub.readings(rid).await?.is_empty());
    let dead = hub.expect(Method::GET, "/rejected", None, 200).await?;
    assert!(
        dead.as_array().is_some_and(|d| d
            .iter()
            .any(|r| r["reason"] == "unknown_device" && r["device_id"] == gw.id.as_str())),
        "{dead}"
    );

    // Mapping rules: a name Zigbee2MQTT reserves, and a gps device, are refused.
    let (status, _) = hub
        .admin(
            Method::POST,
            &format!("/devices/{}/zigbee", gw.id),
            Some(json!({"friendly_name": "bridge/state", "device_id": motion.id})),
        )
        .await?;
    assert_eq!(status, 422);
    let phone = hub.device(rid, "gps").await?;
    let (status, _) = hub
        .admin(
            Method::POST,
            &format!("/devices/{}/zigbee", gw.id),
            Some(json!({"friendly_name": "x", "device_id": phone.id})),
        )
        .await?;
    assert_eq!(status, 422);
    Ok(())
}

/// A bare MQTT client speaking exactly what OwnTracks on Android sends.
struct RawMqtt {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// MQTT's variable-length "remaining length".
fn remaining_length(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

impl RawMqtt {
    /// MQTT 3.1 CONNECT as OwnTracks for Android sends it: protocol `MQIsdp` level 3,
    /// clean session off, keep-alive 3600 s, a will `{"_type":"lwt",…}` on its base topic.
    async fn connect_owntracks(
        port: u16,
        device: &DeviceCreated,
        will_topic: &str,
        will: &[u8],
    ) -> Result<RawMqtt> {
        let mut var = string(b"MQIsdp");
        // username, password, will QoS 1, will flag; clean session bit (0x02) left off.
        var.extend_from_slice(&[3, 0x80 | 0x40 | 0x08 | 0x04]);
        var.extend_from_slice(&3600u16.to_be_bytes());
        for field in [
            device.id.as_bytes(),
            will_topic.as_bytes(),
            will,
            device.mqtt.username.as_bytes(),
            device.mqtt.password.as_bytes(),
        ] {
            var.extend(string(field));
        }
        let mut packet = vec![0x10];
        packet.extend(remaining_length(var.len()));
        packet.extend(var);
        let mut c = RawMqtt {
            stream: TcpStream::connect(("127.0.0.1", port)).await?,
            buf: Vec::new(),
        };
        c.stream.write_all(&packet).await?;
        match c.next().await? {
            Packet::Connack(a) if a.code == mqttrs::ConnectReturnCode::Accepted => Ok(c),
            other => bail!("expected an accepting CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, p: &Packet<'_>) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = mqttrs::encode_slice(p, &mut buf).map_err(|e| anyhow!("encode: {e:?}"))?;
        self.stream.write_all(&buf[..n]).await?;
        Ok(())
    }

    /// The next whole packet, as the app's own client library reads it.
    async fn next(&mut self) -> Result<Packet<'static>> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(len) = frame_len(&self.buf) {
                    if self.buf.len() >= len {
                        let frame: Vec<u8> = self.buf.drain(..len).collect();
                        let frame: &'static [u8] = Box::leak(frame.into_boxed_slice());
                        return mqttrs::decode_slice(frame)
                            .map_err(|e| anyhow!("decode: {e:?}"))?
                            .ok_or_else(|| anyhow!("incomplete packet"));
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("the hub closed the connection");
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .map_err(|_| anyhow!("no packet within {WAIT:?}"))?
    }

    /// Publishes at QoS 1 and waits for the hub's PUBACK, i.e. until it is stored.
    async fn publish_acked(&mut self, topic: &str, payload: &[u8], pid: u16) -> Result<()> {
        let pid = Pid::try_from(pid).map_err(|e| anyhow!("pid: {e:?}"))?;
        self.send(&Packet::Publish(mqttrs::Publish {
            dup: false,
            qospid: QosPid::AtLeastOnce(pid),
            retain: false,
            topic_name: topic,
            payload,
        }))
        .await?;
        loop {
            match self.next().await? {
                Packet::Puback(p) if p == pid => return Ok(()),
                Packet::Publish(p) => self.ack(&p).await?,
                _ => {}
            }
        }
    }

    /// The next command the hub publishes to the phone, acknowledged as the app does.
    async fn next_command(&mut self) -> Result<(String, Value)> {
        loop {
            if let Packet::Publish(p) = self.next().await? {
                self.ack(&p).await?;
                return Ok((p.topic_name.to_string(), serde_json::from_slice(p.payload)?));
            }
        }
    }

    async fn ack(&mut self, p: &mqttrs::Publish<'_>) -> Result<()> {
        match p.qospid {
            QosPid::AtMostOnce => Ok(()),
            QosPid::AtLeastOnce(pid) => self.send(&Packet::Puback(pid)).await,
            QosPid::ExactlyOnce(pid) => self.send(&Packet::Pubrec(pid)).await,
        }
    }
}

fn frame_len(buf: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let byte = *buf.get(1 + i)?;
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(2 + i + remaining);
        }
    }
    None
}

/// The documented Android location with another position and time.
fn location_at(lat: f64, lon: f64, tst: i64) -> Result<Vec<u8>> {
    let doc = doc_example("owntracks-location")?;
    Ok(doc
        .replace(&format!("\"lat\":{}", HOME.0), &format!("\"lat\":{lat}"))
        .replace(&format!("\"lon\":{}", HOME.1), &format!("\"lon\":{lon}"))
        .replace("\"tst\":1764032390", &format!("\"tst\":{tst}"))
        .into_bytes())
}

#[tokio::test]
async fn owntracks_over_mqtt_3_1_gets_its_zones_walks_out_and_goes_offline() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Watanabe"})).await?;
    let zone = hub
        .expect(Method::POST, &format!("/residents/{rid}/geofences"), Some(json!({"name": "home", "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 200.0}})), 201)
        .await?;
    let zone_id = zone["id"].as_i64().ok_or_else(|| anyhow!("no zone id"))?;
    let phone = hub.device(rid, "gps").await?;
    let base = format!("owntracks/{}/phone", phone.id);
    let mut app = RawMqtt::connect_owntracks(
        hub.mqtt_port,
        &phone,
        &base,
        doc_example("owntracks-lwt")?.as_bytes(),
    )
    .await?;

    // The app subscribes at QoS 2 to its command topic and, by default, to its friends.
    let cmd = format!("{base}/cmd");
    let topics = vec![
        SubscribeTopic {
            topic_path: cmd.clone(),
            qos: QoS::ExactlyOnce,
        },
        SubscribeTopic {
            topic_path: "owntracks/+/+".into(),
            qos: QoS::ExactlyOnce,
        },
    ];
    let pid = Pid::try_from(1).map_err(|e| anyhow!("{e:?}"))?;
    app.send(&Packet::Subscribe(Subscribe { pid, topics }))
        .await?;
    let (topic, waypoints) = loop {
        match app.next().await? {
            Packet::Suback(s) => {
                assert_ne!(s.return_codes[0], mqttrs::SubscribeReturnCodes::Failure);
                assert_eq!(
                    s.return_codes[1],
                    mqttrs::SubscribeReturnCodes::Failure,
                    "a phone may not read others"
                );
            }
            Packet::Publish(p) => {
                app.ack(&p).await?;
                break (
                    p.topic_name.to_string(),
                    serde_json::from_slice::<Value>(p.payload)?,
                );
            }
            _ => {}
        }
    };
    assert_eq!(topic, cmd);
    let documented: Value = serde_json::from_str(
        &doc_example("owntracks-waypoints")?.replace("ZONE_ID", &zone_id.to_string()),
    )?;
    assert_eq!(waypoints, documented);

    // At home, then two accurate fixes 1.4 km north: geofence_exit.
    let now = chrono::Utc::now().timestamp();
    app.publish_acked(&base, doc_example("owntracks-location")?.as_bytes(), 10)
        .await?;
    app.publish_acked(&base, &location_at(35.7200, HOME.1, now - 20)?, 11)
        .await?;
    app.publish_acked(&base, &location_at(35.7210, HOME.1, now - 10)?, 12)
        .await?;
    let exit = hub.wait_alert(rid, "geofence_exit", "open", WAIT).await?;
    assert_eq!(exit["device_id"], phone.id.as_str());
    let fix = hub.readings(rid).await?;
    assert_eq!(
        fix.first()
            .map(|r| (r["lat"].clone(), r["battery"].clone())),
        Some((json!(35.721), json!(81)))
    );

    // A new zone reaches the phone at once: clear, then the whole list.
    hub.expect(Method::POST, &format!("/residents/{rid}/geofences"), Some(json!({"name": "day centre", "circle": {"lat": 35.72, "lon": 139.66, "radius_m": 150.0}})), 201)
        .await?;
    let (_, clear) = app.next_command().await?;
    assert_eq!(clear, json!({"_type": "cmd", "action": "clearWaypoints"}));
    let (_, list) = app.next_command().await?;
    let names: Vec<&str> = list["waypoints"]["waypoints"]
        .as_array()
        .map(|w| w.iter().filter_map(|x| x["desc"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["home", "day centre"]);

    // The phone vanishes without DISCONNECT: its will, `_type: lwt`, marks it offline.
    drop(app);
    let offline = hub.wait_alert(rid, "device_offline", "open", WAIT).await?;
    assert_eq!(offline["device_id"], phone.id.as_str());
    Ok(())
}

#[tokio::test]
async fn owntracks_on_another_users_topic_is_refused_and_counted() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Ito"})).await?;
    let phone = hub.device(rid, "gps").await?;
    let other = hub.device(rid, "gps").await?;
    let base = format!("owntracks/{}/phone", phone.id);
    let mut app = RawMqtt::connect_owntracks(
        hub.mqtt_port,
        &phone,
        &base,
        doc_example("owntracks-lwt")?.as_bytes(),
    )
    .await?;
    let bad = rejected(&hub, "not_json").await?;
    app.publish_acked(&base, b"{\"_type\":\"location\",", 1)
        .await?;
    rejected_grows(&hub, "not_json", bad).await?;
    let spoofed = rejected(&hub, "not_authorized").await?;
    let topic = format!("owntracks/{}/phone", other.id);
    let payload = doc_example("owntracks-location")?;
    let pid = Pid::try_from(2).map_err(|e| anyhow!("{e:?}"))?;
    app.send(&Packet::Publish(mqttrs::Publish {
        dup: false,
        qospid: QosPid::AtLeastOnce(pid),
        retain: false,
        topic_name: &topic,
        payload: payload.as_bytes(),
    }))
    .await?;
    assert!(
        app.next().await.is_err(),
        "the hub must close a spoofing phone's connection"
    );
    rejected_grows(&hub, "not_authorized", spoofed).await?;
    assert!(hub.readings(rid).await?.iter().all(|r| r["kind"] != "gps"));
    Ok(())
}

/// The documented request with this hub's address and this device's id and secret.
fn osmand_url(hub: &TestHub, doc: &str, device: &DeviceCreated) -> String {
    doc.replace("http://HUB:8080", &hub.base)
        .replace("DEVICE_SECRET", &device.mqtt.password)
        .replace("DEVICE_ID", &device.id)
}

#[tokio::test]
async fn osmand_get_and_post_move_the_resident_and_bad_reports_are_refused() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Kobayashi"})).await?;
    let pendant = hub.device(rid, "gps").await?;

    // GET, exactly as documented (the Traccar Client parameters).
    let url = osmand_url(&hub, &doc_example("osmand-request")?, &pendant);
    let server_url = osmand_url(&hub, &doc_example("osmand-server-url")?, &pendant);
    assert!(
        url.starts_with(&server_url),
        "the request is the server URL plus the client's parameters"
    );
    let res = hub.http.get(&url).send().await?;
    assert_eq!(res.status(), 200);
    let readings = hub.readings(rid).await?;
    let fix = readings.first().ok_or_else(|| anyhow!("no reading"))?;
    assert_eq!(
        (
            fix["lat"].as_f64(),
            fix["lon"].as_f64(),
            fix["accuracy_m"].as_f64()
        ),
        (Some(HOME.0), Some(HOME.1), Some(12.0))
    );
    assert_eq!(
        (fix["ts"].as_str(), fix["battery"].as_i64()),
        (Some("2025-11-25T01:00:00Z"), Some(81))
    );

    // POST with the same parameters as a form, authenticated by basic auth.
    let now = chrono::Utc::now().timestamp();
    let form = format!(
        "id={}&timestamp={now}&lat=35.71&lon=139.67&accuracy=8",
        pendant.id
    );
    let res = hub
        .http
        .post(format!("{}/api/v1/osmand", hub.base))
        .basic_auth(&pendant.id, Some(&pendant.mqtt.password))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(
        hub.readings(rid).await?.first().map(|r| r["lat"].clone()),
        Some(json!(35.71))
    );

    // Traccar Client 9's JSON, posted to the server URL.
    let body = doc_example("osmand-json")?
        .replace("DEVICE_ID", &pendant.id)
        .replace("2025-11-25T01:00:00.000Z", &chrono::Utc::now().to_rfc3339());
    let res = hub
        .http
        .post(&server_url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(hub.readings(rid).await?.len(), 3);

    // Refusals: each answered with its status and reason, and counted.
    let cases = [
        (
            url.replace(&pendant.mqtt.password, "wrong-secret"),
            401,
            "not_authorized",
        ),
        (
            url.replace(&pendant.id, "dev-nobody"),
            401,
            "unknown_device",
        ),
        (url.replace("&lat=35.7074", ""), 400, "bad_field"),
        (url.replace("lat=35.7074", "lat=95"), 400, "out_of_range"),
    ];
    for (bad_url, status, reason) in cases {
        let before = rejected(&hub, reason).await?;
        let res = hub.http.get(&bad_url).send().await?;
        assert_eq!(res.status(), status, "{bad_url}");
        let body: Value = res.json().await?;
        assert_eq!(body["error"], reason);
        rejected_grows(&hub, reason, before).await?;
    }
    let motion = hub.device(rid, "motion").await?;
    let res = hub
        .http
        .get(osmand_url(&hub, &doc_example("osmand-request")?, &motion))
        .send()
        .await?;
    assert_eq!(res.status(), 403);
    assert_eq!(hub.readings(rid).await?.len(), 3);
    let dead = hub.expect(Method::GET, "/rejected", None, 200).await?;
    assert!(
        !dead.to_string().contains("wrong-secret"),
        "a secret reached the dead letters: {dead}"
    );
    Ok(())
}

/// Zigbee2MQTT with `client_id` left out connects as MQTT.js's random `mqttjs_…`: the
/// gateway's credentials say who it is, so it is accepted; other devices are not.
#[tokio::test]
async fn zigbee2mqtt_without_a_client_id_connects_as_mqttjs() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Mqttjs"})).await?;
    let gw = hub.device(rid, "gateway").await?;
    let mut z2m = mqtt_connect(hub.mqtt_port, "mqttjs_5f3a9c1e", &gw.id, &gw.mqtt.password)
        .await
        .map_err(|e| anyhow!("gateway refused: {e:?}"))?;
    z2m.publish_acked(
        &format!("zigbee2mqtt/{}/bridge/state", gw.id),
        r#"{"state":"online"}"#,
    )
    .await?;
    assert_eq!(hub.readings(rid).await?.len(), 1);
    let motion = hub.device(rid, "motion").await?;
    let refused = mqtt_connect(
        hub.mqtt_port,
        "mqttjs_5f3a9c1e",
        &motion.id,
        &motion.mqtt.password,
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(crate::helpers::MqttRefusal::Refused(
                rumqttc::ConnectReturnCode::BadClientId
            ))
        ),
        "only a gateway brings its own client id"
    );
    Ok(())
}

/// Tuya TS0215A and similar SOS buttons send the action `emergency`: SOS with the
/// default mapping.
#[tokio::test]
async fn zigbee2mqtt_emergency_action_raises_sos_by_default() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Emergency"})).await?;
    let gw = hub.device(rid, "gateway").await?;
    let button = hub.device(rid, "button").await?;
    hub.expect(
        Method::POST,
        &format!("/devices/{}/zigbee", gw.id),
        Some(json!({"friendly_name": "sos button", "device_id": button.id})),
        201,
    )
    .await?;
    let (mut z2m, base) = connect_zigbee2mqtt(&hub, &gw).await?;
    // As zigbee2mqtt.io/devices/TS0215A_sos.html exposes it.
    z2m.publish_acked(
        &format!("{base}/sos button"),
        r#"{"action":"emergency","battery":100,"linkquality":87}"#,
    )
    .await?;
    let sos = hub.wait_alert(rid, "sos", "open", WAIT).await?;
    assert_eq!(sos["device_id"], button.id.as_str());
    Ok(())
}

/// With the resident asked first, a Zigbee button's double press (the default answer)
/// is "I'm OK": the pending inactivity alert is resolved by the resident and no SOS opens.
#[tokio::test]
async fn zigbee2mqtt_double_press_answers_are_you_ok() -> Result<()> {
    let hub = TestHub::start().await?;
    let rules = json!({
        "inactivity": {"day_threshold_s": 2, "night_threshold_s": 2, "morning_deadline": null},
        "check": {"enabled": true, "timeout_s": 600}
    });
    let rid = hub
        .resident(json!({"name": "Answer", "rules": rules}))
        .await?;
    let gw = hub.device(rid, "gateway").await?;
    let button = hub.device(rid, "button").await?;
    let mapped = hub
        .expect(
            Method::POST,
            &format!("/devices/{}/zigbee", gw.id),
            Some(json!({"friendly_name": "pendant", "device_id": button.id})),
            201,
        )
        .await?;
    assert_eq!(
        (&mapped["sos_actions"], &mapped["ok_actions"]),
        (&json!(["single", "emergency"]), &json!(["double"]))
    );
    let (mut z2m, base) = connect_zigbee2mqtt(&hub, &gw).await?;
    let pir = hub.device(rid, "motion").await?;
    let mut sensor = crate::helpers::connect_device(&hub, &pir).await?;
    sensor
        .publish_acked(&crate::helpers::topic(&pir, "motion"), r#"{"motion":true}"#)
        .await?;
    let pending = hub.wait_alert(rid, "inactivity", "pending", WAIT).await?;
    // As zigbee2mqtt.io/devices/WXKG11LM.html exposes a double click.
    z2m.publish_acked(
        &format!("{base}/pendant"),
        r#"{"action":"double","battery":90,"linkquality":102}"#,
    )
    .await?;
    let confirmed = hub.wait_alert(rid, "inactivity", "resolved", WAIT).await?;
    assert_eq!(confirmed["id"], pending["id"]);
    assert_eq!(confirmed["resolution"], "resident_confirmed");
    let alerts = hub
        .expect(
            Method::GET,
            &format!("/alerts?resident_id={rid}"),
            None,
            200,
        )
        .await?;
    assert!(
        !alerts.to_string().contains("\"sos\""),
        "a double press is not SOS: {alerts}"
    );
    let both = json!({"friendly_name": "other", "device_id": button.id,
        "sos_actions": ["single"], "ok_actions": ["single"]});
    let (status, body) = hub
        .call(
            Some(&hub.admin_token),
            Method::POST,
            &format!("/devices/{}/zigbee", gw.id),
            Some(both),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    Ok(())
}

/// A battery or link-quality report carries the cached `occupancy: true` along: it is
/// the device's sign of life, not new movement.
#[tokio::test]
async fn zigbee2mqtt_cached_occupancy_is_not_new_movement() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Cached"})).await?;
    let gw = hub.device(rid, "gateway").await?;
    let motion = hub.device(rid, "motion").await?;
    map_zigbee(
        &hub,
        &gw.id,
        &doc_example("z2m-map")?,
        &motion.id,
        "MOTION_DEVICE_ID",
    )
    .await?;
    let (mut z2m, base) = connect_zigbee2mqtt(&hub, &gw).await?;
    let topic = format!("{base}/bedroom motion");
    let moved = doc_example("z2m-occupancy")?;
    let idle = moved.replace("\"occupancy\":true", "\"occupancy\":false");
    let battery_report = moved
        .replace("\"battery\":100", "\"battery\":99")
        .replace("\"linkquality\":126", "\"linkquality\":102");
    for payload in [&idle, &moved, &battery_report] {
        z2m.publish_acked(&topic, payload.as_str()).await?;
    }
    let kinds: Vec<String> = hub
        .readings(rid)
        .await?
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["kind"].as_str().unwrap_or("?"),
                r["data"]["motion"]
            )
        })
        .collect();
    assert_eq!(
        kinds,
        ["heartbeat null", "motion true", "heartbeat null"],
        "newest first"
    );
    Ok(())
}

/// OwnTracks sends `"batt":-1` when the phone does not know its battery: the fix is
/// kept, without a battery level.
#[tokio::test]
async fn owntracks_battery_minus_one_keeps_the_fix() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Unknown Battery"})).await?;
    let phone = hub.device(rid, "gps").await?;
    let base = format!("owntracks/{}/phone", phone.id);
    let mut app = RawMqtt::connect_owntracks(
        hub.mqtt_port,
        &phone,
        &base,
        doc_example("owntracks-lwt")?.as_bytes(),
    )
    .await?;
    let now = chrono::Utc::now().timestamp();
    let fix = String::from_utf8(location_at(HOME.0, HOME.1, now - 5)?)?
        .replace("\"batt\":81", "\"batt\":-1");
    app.publish_acked(&base, fix.as_bytes(), 1).await?;
    let readings = hub.readings(rid).await?;
    let stored = readings
        .first()
        .ok_or_else(|| anyhow!("the fix was lost"))?;
    assert_eq!(stored["kind"], "gps");
    assert_eq!(stored["battery"], Value::Null);
    Ok(())
}

/// SOS pendants speaking the OsmAnd protocol send `alarm=sos`, often with the position
/// as `location=lat,lon` and its accuracy as `hacc`; Traccar Client's JSON says it in
/// `extras.alarm`. Each is the fix and an SOS.
#[tokio::test]
async fn osmand_alarm_sos_raises_sos_with_the_pendants_position() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Pendant"})).await?;
    let pendant = hub.device(rid, "gps").await?;
    let now = chrono::Utc::now().timestamp();
    let url = format!(
        "{}/api/v1/osmand?id={}&key={}&timestamp={now}&location=35.7074,139.6638&hacc=25&alarm=sos",
        hub.base, pendant.id, pendant.mqtt.password
    );
    assert_eq!(hub.http.get(&url).send().await?.status(), 200);
    let sos = hub.wait_alert(rid, "sos", "open", WAIT).await?;
    assert_eq!(sos["device_id"], pendant.id.as_str());
    let readings = hub.readings(rid).await?;
    let fix = readings
        .iter()
        .find(|r| r["kind"] == "gps")
        .ok_or_else(|| anyhow!("no fix in {readings:?}"))?;
    assert_eq!(
        (
            fix["lat"].as_f64(),
            fix["lon"].as_f64(),
            fix["accuracy_m"].as_f64()
        ),
        (Some(35.7074), Some(139.6638), Some(25.0))
    );

    // The JSON form, after the first alert is acknowledged by nobody: a second SOS
    // reading is stored all the same.
    let body = doc_example("osmand-json")?
        .replace("DEVICE_ID", &pendant.id)
        .replace("2025-11-25T01:00:00.000Z", &chrono::Utc::now().to_rfc3339())
        .replace("\"extras\":{}", "\"extras\":{\"alarm\":\"sos\"}");
    let res = hub
        .http
        .post(format!(
            "{}/api/v1/osmand?key={}",
            hub.base, pendant.mqtt.password
        ))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let sos_readings = hub
        .readings(rid)
        .await?
        .iter()
        .filter(|r| r["kind"] == "sos")
        .count();
    assert_eq!(sos_readings, 2);
    Ok(())
}

/// Zigbee2MQTT's defaults publish outside the gateway's prefix: its default base topic
/// (its will is on `zigbee2mqtt/bridge/state`, so CONNECT is refused with code 5) and
/// Home Assistant discovery (the connection is closed). The dead letter says which
/// setting to change.
#[tokio::test]
async fn zigbee2mqtt_defaults_are_refused_with_the_setting_to_change() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Defaults"})).await?;
    let gw = hub.device(rid, "gateway").await?;
    let mut opts = rumqttc::MqttOptions::new("mqttjs_0a1b2c3d", "127.0.0.1", hub.mqtt_port);
    opts.set_credentials(gw.id.clone(), gw.mqtt.password.clone());
    opts.set_last_will(rumqttc::LastWill::new(
        "zigbee2mqtt/bridge/state",
        r#"{"state":"offline"}"#,
        rumqttc::QoS::AtLeastOnce,
        true,
    ));
    let refused = crate::helpers::mqtt_connect_with(opts).await;
    assert!(
        matches!(
            refused,
            Err(crate::helpers::MqttRefusal::Refused(
                rumqttc::ConnectReturnCode::NotAuthorized
            ))
        ),
        "the default base topic's will is refused"
    );

    let (mut z2m, _) = connect_zigbee2mqtt(&hub, &gw).await?;
    z2m.client
        .publish(
            "homeassistant/binary_sensor/0x00158d0001/occupancy/config",
            rumqttc::QoS::AtLeastOnce,
            true,
            r#"{"name":null,"device_class":"motion"}"#,
        )
        .await?;
    assert!(z2m.closed(WAIT).await);
    let dead = eventually("the discovery message dead-lettered", WAIT, || async {
        let dead = hub.expect(Method::GET, "/rejected", None, 200).await.ok()?;
        dead.as_array()?
            .iter()
            .find(|r| {
                r["topic"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("homeassistant/"))
            })
            .cloned()
    })
    .await?;
    assert_eq!(dead["reason"], "not_authorized");
    assert!(
        dead["detail"]
            .as_str()
            .is_some_and(|d| d.contains("homeassistant: false")),
        "{dead}"
    );
    Ok(())
}
