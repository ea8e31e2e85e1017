//! BLE tags (issue 18): an ESPresense node at a station and a volunteer's phone report a
//! resident's tag to the real hub; the sightings place the resident, open and resolve
//! `geofence_exit` with the receiver's place, and make the passage history.
//!
//! The ESPresense client is configured as the firmware connects (src/main.cpp of
//! ESPresense/ESPresense: client id `espresense-{room}`, will `offline` retained on
//! `espresense/rooms/{room}/status`); the payloads are read from docs/gateways.md.

use anyhow::{anyhow, Result};
use mimamori_protocol::api::DeviceCreated;
use reqwest::Method;
use rumqttc::{LastWill, MqttOptions, QoS};
use serde_json::{json, Value};

use crate::gateways::{doc_example, WAIT};
use crate::helpers::{
    connect_device, eventually, mqtt_connect_with, skip_postgres, Backend, MqttClient, TestHub,
};

const TAG: &str = "iBeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0-1-7";
const ROOM: &str = "koenji_north";

/// An ESPresense node of `room` connected with the receiver's credentials.
async fn espresense_node(hub: &TestHub, rx: &DeviceCreated, room: &str) -> Result<MqttClient> {
    let mut opts = MqttOptions::new(format!("espresense-{room}"), "127.0.0.1", hub.mqtt_port);
    opts.set_credentials(rx.id.clone(), rx.mqtt.password.clone());
    let status = format!("espresense/rooms/{room}/status");
    opts.set_last_will(LastWill::new(status, "offline", QoS::AtMostOnce, true));
    mqtt_connect_with(opts)
        .await
        .map_err(|e| anyhow!("the ESPresense node could not connect: {e:?}"))
}

async fn put_receiver(hub: &TestHub, rx: &str, example: &str) -> Result<Value> {
    let body: Value = serde_json::from_str(&doc_example(example)?)?;
    hub.expect(
        Method::PUT,
        &format!("/devices/{rx}/receiver"),
        Some(body),
        200,
    )
    .await
}

pub(crate) async fn sightings(hub: &TestHub, rid: i64) -> Option<Vec<Value>> {
    let v = hub
        .expect(
            Method::GET,
            &format!("/residents/{rid}/sightings"),
            None,
            200,
        )
        .await
        .ok()?;
    v.as_array().cloned()
}

#[tokio::test]
async fn a_tag_seen_at_a_station_opens_geofence_exit_there_and_a_phone_at_home_resolves_it(
) -> Result<()> {
    station_then_home(Backend::Sqlite).await
}

/// The same on PostgreSQL: its migration and queries for receivers, tags and sightings.
#[tokio::test]
async fn ble_sightings_on_postgres() -> Result<()> {
    if skip_postgres("ble_sightings_on_postgres") {
        return Ok(());
    }
    station_then_home(Backend::Postgres).await
}

async fn station_then_home(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &[]).await?;
    let rid = hub
        .resident(json!({"name": "Tanaka", "rules": {"geofence": {"confirm_fixes": 1}}}))
        .await?;
    hub.expect(
        Method::POST,
        &format!("/residents/{rid}/geofences"),
        Some(json!({"name": "home", "circle": {"lat": 35.7074, "lon": 139.6638, "radius_m": 200}})),
        201,
    )
    .await?;
    // The station belongs to the network's own record, not to the resident.
    let network = hub
        .resident(json!({"name": "Koenji receiver network"}))
        .await?;
    let tag = hub.device(rid, "tag").await?;
    let station = hub.device(network, "receiver").await?;
    let phone = hub.device(network, "receiver").await?;
    let body: Value = serde_json::from_str(&doc_example("ble-tag")?)?;
    let created = hub
        .expect(
            Method::POST,
            &format!("/devices/{}/tag", tag.id),
            Some(body),
            201,
        )
        .await?;
    assert_eq!(
        (created["tag_id"].as_str(), created["resident_id"].as_i64()),
        (Some(TAG), Some(rid))
    );
    let placed = put_receiver(&hub, &station.id, "ble-receiver").await?;
    assert_eq!(placed["room"], ROOM);
    assert_eq!(
        put_receiver(&hub, &phone.id, "ble-receiver-phone").await?["lat"],
        Value::Null
    );

    let mut node = espresense_node(&hub, &station, ROOM).await?;
    node.publish_acked(&format!("espresense/rooms/{ROOM}/status"), "online")
        .await?;
    // A phone the node also hears is no one's tag: ignored.
    node.publish_acked(
        &format!("espresense/devices/apple:1006:10-12/{ROOM}"),
        r#"{"id":"apple:1006:10-12"}"#,
    )
    .await?;
    node.publish_acked(
        &format!("espresense/devices/{TAG}/{ROOM}"),
        doc_example("espresense-report")?,
    )
    .await?;

    let exit = hub.wait_alert(rid, "geofence_exit", "open", WAIT).await?;
    assert_eq!(
        exit["details"]["place"], "Koenji station, north exit",
        "{exit}"
    );
    let seen = eventually("the station sighting", WAIT, || async {
        sightings(&hub, rid).await.filter(|s| !s.is_empty())
    })
    .await?;
    assert_eq!(seen.len(), 1, "only the tag: {seen:?}");
    let last = &seen[0];
    assert_eq!(last["device_id"], tag.id.as_str());
    assert_eq!(last["data"]["place"], "Koenji station, north exit");
    assert_eq!(last["data"]["receiver"], station.id.as_str());
    assert_eq!(last["accuracy_m"], 30.0, "the receiver's range");

    // A volunteer's phone hears the tag at home; its example's `ts` is made now, since
    // a fix older than the last one says nothing new about where the resident is.
    let now = chrono::Utc::now().to_rfc3339();
    let sighting = doc_example("ble-sighting")?.replace("2025-11-25T01:00:00Z", &now);
    let mut app = connect_device(&hub, &phone).await?;
    app.publish_acked(&format!("watch/v1/{}/sighting", phone.id), sighting)
        .await?;
    let back = hub
        .wait_alert(rid, "geofence_exit", "resolved", WAIT)
        .await?;
    assert_eq!(back["id"], exit["id"]);
    let history = eventually("two sightings", WAIT, || async {
        sightings(&hub, rid).await.filter(|s| s.len() == 2)
    })
    .await?;
    assert_eq!(history[0]["data"]["place"], "volunteer app", "newest first");
    assert_eq!(history[0]["lat"], 35.7074);
    let track = hub
        .expect(Method::GET, &format!("/residents/{rid}/track"), None, 200)
        .await?;
    assert_eq!(
        track.as_array().map(Vec::len),
        Some(2),
        "the map draws sightings: {track}"
    );
    Ok(())
}

/// The night rule's home receivers must be the resident's own receivers: a station of the
/// town's network, or a device of another kind, is refused with the reason.
#[tokio::test]
async fn tag_away_takes_only_the_residents_own_receivers() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Ito Yoshiko"})).await?;
    let network = hub
        .resident(json!({"name": "Koenji receiver network"}))
        .await?;
    let home = hub.device(rid, "receiver").await?;
    let tag = hub.device(rid, "tag").await?;
    let station = hub.device(network, "receiver").await?;
    let rule = |rx: &str| json!({"rules": {"tag_away": {"enabled": true, "receivers": [rx]}}});
    let path = format!("/residents/{rid}");
    for (rx, why) in [
        (station.id.as_str(), "is not a receiver of resident"),
        (tag.id.as_str(), "is not a receiver of resident"),
        ("dev_nobody", "does not exist"),
    ] {
        let refused = hub
            .expect(Method::PATCH, &path, Some(rule(rx)), 422)
            .await?;
        assert!(refused.to_string().contains(why), "{rx}: {refused}");
    }
    let none = json!({"rules": {"tag_away": {"enabled": true}}});
    let refused = hub.expect(Method::PATCH, &path, Some(none), 422).await?;
    assert!(
        refused.to_string().contains("tag_away.receivers"),
        "{refused}"
    );
    let patched = hub
        .expect(Method::PATCH, &path, Some(rule(&home.id)), 200)
        .await?;
    assert_eq!(patched["rules"]["tag_away"]["receivers"], json!([home.id]));
    assert_eq!(patched["rules"]["tag_away"]["after_s"], 1800, "the default");
    Ok(())
}
