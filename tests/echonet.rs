//! ECHONET Lite through echonetlite2mqtt (issue 18), against the real hub.
//!
//! The client connects as echonetlite2mqtt's MQTT.js does with `MQTT_CLIENT_ID` empty
//! (a random `mqttjs_…` id) and the documented environment. The property values are what
//! echonetlite2mqtt's `MqttController.getValueText` writes for the MRA 1.3.1 definitions
//! (banban525/echonetlite2mqtt, MRA_v1.3.1): a state as its `name` (`true`/`false` for
//! `detection` of 0x0007 and `occurrenceOfEmergency` of 0x0003), a number as its digits
//! (`instantaneousElectricPower` of 0x0288).

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use reqwest::Method;
use serde_json::{json, Value};

use crate::gateways::{doc_example, quick_resident, WAIT};
use crate::helpers::{eventually, mqtt_connect, TestHub};

const SENSOR: &str = "fe00000000000000000000000000000000_000701";

#[tokio::test]
async fn echonet_detection_emergency_and_smart_meter_power_watch_the_resident() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = quick_resident(&hub).await?;
    let gw = hub.device(rid, "gateway").await?;
    let sensor = hub.device(rid, "motion").await?;
    let button = hub.device(rid, "button").await?;
    let meter = hub.device(rid, "motion").await?;
    let body: Value =
        serde_json::from_str(&doc_example("echonet-map")?.replace("MOTION_DEVICE_ID", &sensor.id))?;
    let path = format!("/devices/{}/echonet", gw.id);
    let mapped = hub.expect(Method::POST, &path, Some(body), 201).await?;
    assert_eq!(mapped["activity_above_w"], 150.0);
    let pendant = json!({"echonet_id": "emergency_button", "device_id": button.id});
    hub.expect(Method::POST, &path, Some(pendant), 201).await?;
    let smart_meter =
        json!({"echonet_id": "smart_meter", "device_id": meter.id, "activity_above_w": 300});
    hub.expect(Method::POST, &path, Some(smart_meter), 201)
        .await?;

    let env: HashMap<String, String> = doc_example("echonet-env")?
        .replace("GATEWAY_ID", &gw.id)
        .replace("GATEWAY_SECRET", &gw.mqtt.password)
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(
        env.get("MQTT_BROKER").map(String::as_str),
        Some("mqtt://HUB:1883")
    );
    let var = |k: &str| env.get(k).cloned().ok_or_else(|| anyhow!("no {k}"));
    let base = var("MQTT_BASE_TOPIC")?;
    let mut client = mqtt_connect(
        hub.mqtt_port,
        "mqttjs_5e1d0c7a",
        &var("MQTT_USERNAME")?,
        &var("MQTT_PASSWORD")?,
    )
    .await
    .map_err(|e| anyhow!("echonetlite2mqtt could not connect: {e:?}"))?;
    let property = |device: &str, name: &str| format!("{base}/{device}/properties/{name}");

    // Nobody moved: inactivity opens; the sensor's detection resolves it.
    let first = hub.wait_alert(rid, "inactivity", "open", WAIT).await?;
    client
        .publish_acked(&property(SENSOR, "detection"), "true")
        .await?;
    let resolved = hub.wait_alert(rid, "inactivity", "resolved", WAIT).await?;
    assert_eq!(resolved["id"], first["id"]);

    // The smart meter: standby learned, a kettle's draw is activity of the meter's device.
    for watts in ["120", "95", "180", "1480"] {
        client
            .publish_acked(
                &property("smart_meter", "instantaneousElectricPower"),
                watts,
            )
            .await?;
    }
    let active = eventually("activity from the smart meter", WAIT, || async {
        let readings = hub.readings(rid).await.ok()?;
        let of_meter: Vec<Value> = readings
            .into_iter()
            .filter(|r| r["device_id"] == meter.id.as_str())
            .collect();
        (of_meter.len() == 4).then_some(of_meter)
    })
    .await?;
    let kinds: Vec<&str> = active.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["motion", "heartbeat", "heartbeat", "heartbeat"],
        "newest first"
    );

    // Other appliances and properties are no one's business here.
    client
        .publish_acked(&property("living_aircon", "operationStatus"), "true")
        .await?;
    client
        .publish_acked(
            &property("emergency_button", "occurrenceOfEmergency"),
            "true",
        )
        .await?;
    let sos = hub.wait_alert(rid, "sos", "open", WAIT).await?;
    assert_eq!(sos["device_id"], button.id.as_str());
    let refused = hub.expect(Method::GET, "/rejected", None, 200).await?;
    assert_eq!(refused.as_array().map(Vec::len), Some(0), "{refused}");
    Ok(())
}
