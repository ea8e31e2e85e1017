//! The Things Stack v3 (issue 18): the hub's own MQTT client takes uplinks from a TTS
//! MQTT server — a `mosquitto` started here on a free port stands in for it — and
//! reconnects after the server restarts.
//!
//! The uplink is TTS's documented example (TheThingsIndustries/lorawan-stack-docs,
//! doc/content/reference/data-formats/_index.md), byte for byte, read from docs/gateways.md.

use std::time::Instant;

use anyhow::{anyhow, Result};
use mimamori_protocol::api::DeviceCreated;
use reqwest::Method;
use rumqttc::{Packet, QoS};
use serde_json::{json, Value};

use crate::gateways::{doc_example, WAIT};
use crate::helpers::{eventually, mqtt_connect, Backend, MqttClient, TestHub};
use crate::lorawan::Mosquitto;

/// The topic TTS publishes the documented uplink on (application `app1` on The Things Network).
const UPLINK_TOPIC: &str = "v3/app1@ttn/devices/dev1/up";

/// The documented uplink with its decoded fields made a PIR trigger (a motion reading).
pub(crate) fn pir_uplink() -> Result<String> {
    let moved = doc_example("tts-uplink")?.replace(
        r#""temperature": 1.0,
      "luminosity": 0.64"#,
        r#""pir": "trigger""#,
    );
    if !moved.contains("trigger") {
        return Err(anyhow!(
            "the documented uplink's fields changed; no PIR trigger made"
        ));
    }
    Ok(moved)
}

/// The hub's flags from the documented configuration, pointed at the stand-in server.
pub(crate) fn tts_flags(port: u16) -> Result<Vec<String>> {
    let conf: toml::Value = toml::from_str(&doc_example("tts-config")?)?;
    let field = |k: &str| {
        conf[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {k} in the example"))
    };
    let server = field("tts_server")?;
    assert!(server.ends_with(":1883"), "plain MQTT: {server}");
    let username = field("tts_username")?;
    assert_eq!(UPLINK_TOPIC.split('/').nth(1), Some(username.as_str()));
    Ok(vec![
        "--tts-server".into(),
        format!("127.0.0.1:{port}"),
        "--tts-username".into(),
        username,
        "--tts-api-key".into(),
        field("tts_api_key")?,
    ])
}

/// Publishes as TTS would, retained so that it reaches the hub's subscription whenever
/// that is (re)made: TTS itself does not retain, but the test must not race the client.
pub(crate) async fn publish_uplink(server: &Mosquitto, payload: String) -> Result<()> {
    let mut tts: MqttClient = mqtt_connect(server.port, "tts-stand-in", "app1@ttn", "key")
        .await
        .map_err(|e| anyhow!("cannot connect to mosquitto: {e:?}"))?;
    tts.client
        .publish(UPLINK_TOPIC, QoS::AtLeastOnce, true, payload)
        .await?;
    tts.next_matching(WAIT, |p| matches!(p, Packet::PubAck(_)))
        .await?;
    Ok(())
}

/// A resident with a motion sensor registered as the documented uplink's DevEUI behind a
/// gateway, its `pir` field saying motion; returns the resident and the sensor.
pub(crate) async fn resident_with_pir(hub: &TestHub) -> Result<(i64, DeviceCreated)> {
    let rid = hub.resident(json!({"name": "Yamada"})).await?;
    let gw = hub.device(rid, "gateway").await?;
    let pir = hub.device(rid, "motion").await?;
    let body = json!({"dev_eui": "0004A30B001C0530", "device_id": pir.id, "fields": {"state": "pir", "on": ["trigger"]}});
    hub.expect(
        Method::POST,
        &format!("/devices/{}/lorawan", gw.id),
        Some(body),
        201,
    )
    .await?;
    Ok((rid, pir))
}

#[tokio::test]
async fn the_hub_takes_tts_uplinks_and_reconnects_after_the_server_restarts() -> Result<()> {
    let mut server = Mosquitto::start("").await?;
    let flags = tts_flags(server.port)?;
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let hub = TestHub::start_with(Backend::Sqlite, &args).await?;
    let (rid, pir) = resident_with_pir(&hub).await?;

    publish_uplink(&server, doc_example("tts-uplink")?).await?;
    let readings = |pred: fn(&Value) -> bool| {
        let hub = &hub;
        let pir = pir.id.clone();
        async move {
            let all = hub.readings(rid).await.ok()?;
            all.into_iter()
                .find(|r| r["device_id"] == pir.as_str() && pred(r))
        }
    };
    let alive = eventually("the documented uplink", WAIT, || {
        readings(|r| r["kind"] == "heartbeat")
    })
    .await?;
    assert!(
        alive["ts"]
            .as_str()
            .is_some_and(|t| t.starts_with("2020-02-12T15:15:45.789")),
        "uplink_message.received_at is the reading's time: {alive}"
    );

    // TTS restarts: the hub's client reconnects and subscribes again.
    let restarted = Instant::now();
    server.restart().await?;
    publish_uplink(&server, pir_uplink()?).await?;
    eventually("an uplink after the restart", WAIT, || {
        readings(|r| r["kind"] == "motion")
    })
    .await
    .map_err(|e| anyhow!("{e}\n--- mosquitto log ---\n{}", server.log()))?;
    eprintln!(
        "TTS uplink after a server restart stored within {} ms",
        restarted.elapsed().as_millis()
    );
    Ok(())
}
