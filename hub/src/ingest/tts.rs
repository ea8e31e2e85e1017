//! The Things Stack v3 adapter: the uplinks its MQTT server publishes on
//! `v3/{application}@{tenant}/devices/{device}/up`, which the hub's own client
//! ([`crate::tts`]) subscribes to, turned into events of the LoRaWAN devices registered
//! by DevEUI ([`super::lorawan`]).
//!
//! The Things Stack leaves empty fields out (`""`, `0`, `false`), so every field but the
//! DevEUI is optional. `frm_payload` is the raw frame in base64; without a payload
//! formatter there is no `decoded_payload`, and the uplink is only a sign of life.

use base64::Engine;
use chrono::{DateTime, Utc};
use mimamori_protocol::native::{check_ts, RejectReason, Rejection};
use mimamori_protocol::{DeviceEvent, Reading};
use serde::Deserialize;
use serde_json::Value;

use super::check_size;
use super::lorawan::LoraMap;

/// The topic filter of every uplink of `username` (`{application}@{tenant}`).
pub fn uplink_filter(username: &str) -> String {
    format!("v3/{username}/devices/+/up")
}

#[derive(Debug, Deserialize)]
struct EndDeviceIds {
    dev_eui: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct UplinkMessage {
    frm_payload: Option<String>,
    decoded_payload: Option<Value>,
    received_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct Uplink {
    end_device_ids: EndDeviceIds,
    received_at: Option<DateTime<Utc>>,
    #[serde(default)]
    uplink_message: UplinkMessage,
}

/// Validates one message from The Things Stack; `Ok(None)` for other topics.
pub fn classify(
    map: &LoraMap,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<DeviceEvent>, Rejection> {
    let levels: Vec<&str> = topic.split('/').collect();
    if !matches!(levels.as_slice(), ["v3", _, "devices", _, "up"]) {
        return Ok(None);
    }
    check_size(payload)?;
    let up: Uplink = serde_json::from_slice(payload).map_err(|e| {
        let reason = if e.is_syntax() || e.is_eof() {
            RejectReason::NotJson
        } else {
            RejectReason::BadField
        };
        Rejection::new(reason, e.to_string())
    })?;
    let eui = up.end_device_ids.dev_eui.as_deref().ok_or_else(|| {
        Rejection::new(
            RejectReason::BadField,
            "end_device_ids.dev_eui is missing: the device has no DevEUI to be registered by",
        )
    })?;
    let device = map.lookup_any(eui)?;
    let msg = &up.uplink_message;
    if let Some(frame) = &msg.frm_payload {
        base64::engine::general_purpose::STANDARD
            .decode(frame)
            .map_err(|e| {
                Rejection::new(
                    RejectReason::BadField,
                    format!("frm_payload is not base64: {e}"),
                )
            })?;
    }
    let (reading, battery) = match &msg.decoded_payload {
        Some(object) => map.reading(&device, object)?,
        None => (Reading::Heartbeat, None),
    };
    Ok(Some(DeviceEvent {
        device_id: device.device_id,
        device_kind: device.kind,
        resident_id: device.resident_id,
        ts: check_ts(msg.received_at.or(up.received_at), now)?,
        received_at: now,
        reading,
        battery,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimamori_protocol::gateway::LorawanDevice;
    use mimamori_protocol::DeviceKind;

    use crate::ingest::lorawan::resolve_fields;

    fn map() -> LoraMap {
        let m = LoraMap::default();
        m.replace_all(&[LorawanDevice {
            gateway_id: "gw".into(),
            dev_eui: "0004a30b001c0530".into(),
            device_id: "dev-door".into(),
            device_kind: DeviceKind::Door,
            resident_id: 2,
            fields: resolve_fields(DeviceKind::Door, None),
            profile: None,
            created_at: Utc::now(),
        }]);
        m
    }

    const TOPIC: &str = "v3/app1@ttn/devices/dev1/up";

    fn run(payload: &str) -> Result<Option<Reading>, RejectReason> {
        classify(&map(), TOPIC, payload.as_bytes(), Utc::now())
            .map(|e| e.map(|e| e.reading))
            .map_err(|r| r.reason)
    }

    #[test]
    fn uplinks_map_by_dev_eui_and_only_uplinks_count() {
        let up = r#"{"end_device_ids":{"device_id":"dev1","dev_eui":"0004A30B001C0530"},"uplink_message":{"frm_payload":"gkHe","decoded_payload":{"temperature":1.0}}}"#;
        assert_eq!(run(up), Ok(Some(Reading::Heartbeat)));
        let bare = r#"{"end_device_ids":{"device_id":"dev1","dev_eui":"0004A30B001C0530"}}"#;
        assert_eq!(run(bare), Ok(Some(Reading::Heartbeat)));
        let other = classify(&map(), "v3/app1@ttn/devices/dev1/join", b"{}", Utc::now());
        assert_eq!(other.map_err(|r| r.reason), Ok(None));
    }

    #[test]
    fn bad_uplinks_are_refused() {
        assert_eq!(run("{"), Err(RejectReason::NotJson));
        assert_eq!(
            run(r#"{"end_device_ids":{"device_id":"dev1"}}"#),
            Err(RejectReason::BadField)
        );
        let stranger = r#"{"end_device_ids":{"dev_eui":"0101010101010101"}}"#;
        assert_eq!(run(stranger), Err(RejectReason::UnknownDevice));
        let garbled = r#"{"end_device_ids":{"dev_eui":"0004A30B001C0530"},"uplink_message":{"frm_payload":"!!"}}"#;
        assert_eq!(run(garbled), Err(RejectReason::BadField));
    }
}
