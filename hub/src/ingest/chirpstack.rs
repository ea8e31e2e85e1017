//! The ChirpStack v4 adapter: the events its MQTT integration publishes on
//! `application/{application_id}/device/{dev_eui}/event/{event}`, with a gateway
//! device's credentials, turned into events of the hub devices registered by DevEUI on
//! that gateway ([`super::lorawan`]).
//!
//! ChirpStack encodes events with the Protocol Buffers JSON mapping; since v4.1 it
//! emits every field, zero values included (`"fCnt": 0`, `"object": null`), before
//! that it left them out, so every field but the DevEUI is optional here.

use chrono::{DateTime, Utc};
use mimamori_protocol::native::{battery_pct, check_ts, RejectReason, Rejection};
use mimamori_protocol::{DeviceEvent, DeviceKind, Reading};
use serde::Deserialize;
use serde_json::Value;

use super::lorawan::LoraMap;
use super::{check_publisher, DeviceCtx};

/// The first level of every ChirpStack topic.
pub const ROOT: &str = "application";

/// Whether `topic` (or a filter, with `+` levels) has the shape of a ChirpStack
/// integration topic whose fifth level is `channel` (`event` or `command`).
pub fn is_topic(topic: &str, channel: &str) -> bool {
    let levels: Vec<&str> = topic.split('/').collect();
    matches!(
        levels.as_slice(),
        [ROOT, app, "device", eui, c, name]
            if *c == channel && [app, eui, name].iter().all(|l| !l.is_empty())
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceInfo {
    dev_eui: Option<String>,
}

/// The fields of `up`, `status` and `join` events the hub uses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    time: Option<DateTime<Utc>>,
    device_info: Option<DeviceInfo>,
    object: Option<Value>,
    battery_level: Option<f64>,
    battery_level_unavailable: Option<bool>,
    external_power_source: Option<bool>,
}

/// Validates one event a gateway's ChirpStack published; `Ok(None)` for events of no use
/// (`ack`, `txack`, `log`, `location`, `integration`).
pub fn classify(
    map: &LoraMap,
    gateway: &DeviceCtx,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<DeviceEvent>, Rejection> {
    check_publisher(gateway, DeviceKind::Gateway, "ChirpStack events", payload)?;
    let levels: Vec<&str> = topic.split('/').collect();
    let (dev_eui, event) = match levels.as_slice() {
        [ROOT, _, "device", eui, "event", ev] => (*eui, *ev),
        _ => {
            return Err(Rejection::new(
                RejectReason::BadTopic,
                format!("topic {topic:?} is not application/{{application_id}}/device/{{dev_eui}}/event/{{event}}"),
            ))
        }
    };
    if !matches!(event, "up" | "status" | "join") {
        return Ok(None);
    }
    let device = map.lookup(&gateway.id, dev_eui)?;
    let ev = parse(payload)?;
    check_dev_eui(&ev, dev_eui)?;
    let (reading, battery) = match event {
        "up" => match &ev.object {
            Some(object) => map.reading(&device, object)?,
            None => (Reading::Heartbeat, None),
        },
        "status" => (Reading::Heartbeat, status_battery(&ev)?),
        _ => (Reading::Heartbeat, None),
    };
    Ok(Some(DeviceEvent {
        device_id: device.device_id,
        device_kind: device.kind,
        resident_id: device.resident_id,
        ts: check_ts(ev.time, now)?,
        received_at: now,
        reading,
        battery,
    }))
}

fn parse(payload: &[u8]) -> Result<Event, Rejection> {
    serde_json::from_slice(payload).map_err(|e| {
        let reason = if e.is_syntax() || e.is_eof() {
            RejectReason::NotJson
        } else {
            RejectReason::BadField
        };
        Rejection::new(reason, e.to_string())
    })
}

/// The payload's `deviceInfo.devEui`, when present, must be the topic's.
fn check_dev_eui(ev: &Event, topic_eui: &str) -> Result<(), Rejection> {
    let named = ev.device_info.as_ref().and_then(|d| d.dev_eui.as_deref());
    match named {
        Some(eui) if !eui.eq_ignore_ascii_case(topic_eui) => Err(Rejection::new(
            RejectReason::BadField,
            format!("deviceInfo.devEui {eui} is not the topic's {topic_eui}"),
        )),
        _ => Ok(()),
    }
}

/// A `status` event's battery level, unless the device cannot measure it or is on mains.
fn status_battery(ev: &Event) -> Result<Option<u8>, Rejection> {
    let unknown =
        ev.battery_level_unavailable == Some(true) || ev.external_power_source == Some(true);
    match ev.battery_level {
        Some(level) if !unknown => battery_pct(level).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimamori_protocol::gateway::LorawanDevice;

    use crate::ingest::lorawan::resolve_fields;

    fn gateway() -> DeviceCtx {
        DeviceCtx {
            id: "gw".into(),
            resident_id: 1,
            kind: DeviceKind::Gateway,
        }
    }

    fn map() -> LoraMap {
        let m = LoraMap::default();
        m.replace_all(&[LorawanDevice {
            gateway_id: "gw".into(),
            dev_eui: "0101010101010101".into(),
            device_id: "dev-pir".into(),
            device_kind: DeviceKind::Motion,
            resident_id: 5,
            fields: resolve_fields(DeviceKind::Motion, None),
            profile: None,
            created_at: Utc::now(),
        }]);
        m
    }

    const TOPIC: &str =
        "application/17c82e96-be03-4f38-aef3-f83d48582d97/device/0101010101010101/event";

    fn run(event: &str, payload: &str) -> Result<Option<DeviceEvent>, RejectReason> {
        classify(
            &map(),
            &gateway(),
            &format!("{TOPIC}/{event}"),
            payload.as_bytes(),
            Utc::now(),
        )
        .map_err(|r| r.reason)
    }

    #[test]
    fn topics_have_chirpstacks_shape() {
        assert!(is_topic(
            "application/a/device/0101010101010101/event/up",
            "event"
        ));
        assert!(is_topic("application/+/device/+/command/+", "command"));
        assert!(!is_topic(
            "application/a/device/0101010101010101/command/down",
            "event"
        ));
        assert!(!is_topic("application//device/x/event/up", "event"));
        assert!(!is_topic("application/a/device/x/event/up/more", "event"));
    }

    #[test]
    fn events_without_an_object_are_signs_of_life() {
        let ev = run(
            "join",
            r#"{"deviceInfo":{"devEui":"0101010101010101"},"devAddr":"00189440"}"#,
        );
        let ev = ev.ok().flatten();
        assert_eq!(
            ev.as_ref()
                .map(|e| (&e.reading, e.device_id.as_str(), e.resident_id)),
            Some((&Reading::Heartbeat, "dev-pir", 5))
        );
        let st = run("status", r#"{"margin":10,"batteryLevel":88.3}"#)
            .ok()
            .flatten();
        assert_eq!(st.and_then(|e| e.battery), Some(88));
        let mains = run(
            "status",
            r#"{"margin":0,"externalPowerSource":true,"batteryLevelUnavailable":false,"batteryLevel":0}"#,
        );
        assert_eq!(mains.ok().flatten().map(|e| e.battery), Some(None));
        assert_eq!(run("txack", "{}"), Ok(None));
    }

    #[test]
    fn bad_events_are_refused() {
        assert_eq!(run("up", "{").err(), Some(RejectReason::NotJson));
        let other = r#"{"deviceInfo":{"devEui":"0202020202020202"}}"#;
        assert_eq!(run("up", other).err(), Some(RejectReason::BadField));
        let future = r#"{"time":"2999-01-01T00:00:00+00:00"}"#;
        assert_eq!(run("up", future).err(), Some(RejectReason::FutureTimestamp));
        let unknown = classify(
            &map(),
            &gateway(),
            "application/a/device/0303030303030303/event/up",
            b"{}",
            Utc::now(),
        );
        assert_eq!(
            unknown.map_err(|r| r.reason).err(),
            Some(RejectReason::UnknownDevice)
        );
        let motion = DeviceCtx {
            kind: DeviceKind::Motion,
            ..gateway()
        };
        let refused = classify(&map(), &motion, &format!("{TOPIC}/up"), b"{}", Utc::now());
        assert_eq!(
            refused.map_err(|r| r.reason).err(),
            Some(RejectReason::NotAuthorized)
        );
    }
}
