//! The Zigbee2MQTT adapter: what a Zigbee2MQTT gateway publishes under its base topic
//! `zigbee2mqtt/{gateway_id}/`, turned into events of the hub devices its Zigbee
//! devices are mapped to (by friendly name, through the API).
//!
//! Zigbee2MQTT publishes a device's whole cached state on every change, so a value
//! that is merely repeated is not news: a battery or link-quality report carries the
//! cached `occupancy` and `contact` along. Both therefore count only when they change
//! from the last value this hub saw: movement when `occupancy` turns `true`, a door
//! event when `contact` flips. A presence sensor that keeps `occupancy: true` while
//! someone lies still, or a stale `true` repeated with every battery report, would
//! otherwise mask inactivity. After a restart the first value is only remembered:
//! missing one event can at worst raise an alert early, whereas a repeated value taken
//! for news could hide a resident who has stopped moving. The price is that a
//! sensor which never reports `occupancy: false` (its Zigbee2MQTT `occupancy_timeout`
//! keeps being renewed) counts as one movement, at its start.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use mimamori_protocol::gateway::ZigbeeDevice;
use mimamori_protocol::native::{battery_pct, RejectReason, Rejection};
use mimamori_protocol::{DeviceEvent, DeviceKind, Reading};
use serde_json::{Map, Value};

use super::{below, check_publisher, DeviceCtx};

/// The first level of every Zigbee2MQTT topic the hub accepts.
pub const ROOT: &str = "zigbee2mqtt";

/// The base topic a gateway's Zigbee2MQTT must be configured with: `zigbee2mqtt/{gateway_id}`.
pub fn base_topic(gateway_id: &str) -> String {
    format!("{ROOT}/{gateway_id}")
}

/// The `action` values that raise SOS when a mapping names none.
pub fn default_sos_actions(kind: DeviceKind) -> Vec<String> {
    match kind {
        // `emergency` is what SOS buttons such as Tuya's TS0215A send.
        DeviceKind::Button => vec!["single".to_string(), "emergency".to_string()],
        _ => Vec::new(),
    }
}

/// The `action` values that answer "are you OK?" when a mapping names none: a button's
/// double press, which nobody makes by leaning on it.
pub fn default_ok_actions(kind: DeviceKind) -> Vec<String> {
    match kind {
        DeviceKind::Button => vec!["double".to_string()],
        _ => Vec::new(),
    }
}

/// A Zigbee device as the adapter needs it: the hub device it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub device_id: String,
    pub kind: DeviceKind,
    pub resident_id: i64,
    pub sos_actions: Vec<String>,
    pub ok_actions: Vec<String>,
}

impl From<&ZigbeeDevice> for Mapped {
    fn from(z: &ZigbeeDevice) -> Self {
        Mapped {
            device_id: z.device_id.clone(),
            kind: z.device_kind,
            resident_id: z.resident_id,
            sos_actions: z.sos_actions.clone(),
            ok_actions: z.ok_actions.clone(),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// gateway id -> friendly name -> mapped device.
    gateways: HashMap<String, HashMap<String, Mapped>>,
    /// Last contact value seen per mapped device id.
    contact: HashMap<String, bool>,
    /// Last occupancy value seen per mapped device id.
    occupancy: HashMap<String, bool>,
}

/// Every gateway's mappings, in memory: read on every message without touching the
/// store, replaced by the API whenever a mapping changes.
#[derive(Clone, Default)]
pub struct ZigbeeMap {
    inner: Arc<RwLock<Inner>>,
}

impl ZigbeeMap {
    /// Replaces every mapping (at start-up).
    pub fn replace_all(&self, rows: &[ZigbeeDevice]) {
        let mut inner = self.write();
        inner.gateways.clear();
        for z in rows {
            inner
                .gateways
                .entry(z.gateway_id.clone())
                .or_default()
                .insert(z.friendly_name.clone(), Mapped::from(z));
        }
    }

    /// Replaces the mappings of one gateway (after the API changed them).
    pub fn replace_gateway(&self, gateway_id: &str, rows: &[ZigbeeDevice]) {
        let names = rows
            .iter()
            .filter(|z| z.gateway_id == gateway_id)
            .map(|z| (z.friendly_name.clone(), Mapped::from(z)))
            .collect();
        self.write().gateways.insert(gateway_id.to_string(), names);
    }

    /// Forgets a deleted device, whether it was a gateway or a mapped sensor.
    pub fn forget_device(&self, device_id: &str) {
        let mut inner = self.write();
        inner.gateways.remove(device_id);
        for names in inner.gateways.values_mut() {
            names.retain(|_, m| m.device_id != device_id);
        }
        inner.contact.remove(device_id);
        inner.occupancy.remove(device_id);
    }

    // A poisoned lock still holds consistent maps: every update is a single insert or removal.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, gateway_id: &str, friendly_name: &str) -> Option<Mapped> {
        self.read()
            .gateways
            .get(gateway_id)
            .and_then(|names| names.get(friendly_name))
            .cloned()
    }

    /// Remembers a device's contact value; returns the one seen before.
    fn swap_contact(&self, device_id: &str, contact: bool) -> Option<bool> {
        self.write().contact.insert(device_id.to_string(), contact)
    }

    /// Remembers a device's occupancy value; returns the one seen before.
    fn swap_occupancy(&self, device_id: &str, occupancy: bool) -> Option<bool> {
        self.write()
            .occupancy
            .insert(device_id.to_string(), occupancy)
    }

    /// Validates one message a gateway published; `Ok(None)` for messages of no use.
    pub fn classify(
        &self,
        gateway: &DeviceCtx,
        topic: &str,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<DeviceEvent>, Rejection> {
        check_publisher(
            gateway,
            DeviceKind::Gateway,
            "Zigbee2MQTT messages",
            payload,
        )?;
        let rest = below(topic, &base_topic(&gateway.id), &gateway.id)?;
        let event = |device_id: &str, kind, resident_id, reading, battery| DeviceEvent {
            device_id: device_id.to_string(),
            device_kind: kind,
            resident_id,
            ts: now,
            received_at: now,
            reading,
            battery,
        };
        match route(rest) {
            Route::BridgeState => {
                let reading = availability(payload)?;
                Ok(Some(event(
                    &gateway.id,
                    gateway.kind,
                    gateway.resident_id,
                    reading,
                    None,
                )))
            }
            // Zigbee2MQTT's own messages (2.x publishes `bridge/health` every 10 min) are
            // the gateway's sign of life; without them it would be reported offline.
            Route::Bridge => Ok(Some(event(
                &gateway.id,
                gateway.kind,
                gateway.resident_id,
                Reading::Heartbeat,
                None,
            ))),
            Route::Ignored => Ok(None),
            Route::Availability(name) => {
                let m = self.mapped(gateway, name)?;
                let reading = availability(payload)?;
                Ok(Some(event(
                    &m.device_id,
                    m.kind,
                    m.resident_id,
                    reading,
                    None,
                )))
            }
            Route::State(name) => {
                let m = self.mapped(gateway, name)?;
                let state = parse_state(payload)?;
                let Some(reading) = self.reading_of(&m, &state)? else {
                    return Ok(None);
                };
                Ok(Some(event(
                    &m.device_id,
                    m.kind,
                    m.resident_id,
                    reading,
                    state.battery,
                )))
            }
        }
    }

    fn mapped(&self, gateway: &DeviceCtx, name: &str) -> Result<Mapped, Rejection> {
        self.lookup(&gateway.id, name).ok_or_else(|| {
            Rejection::new(
                RejectReason::UnknownDevice,
                format!(
                    "no Zigbee device {name:?} is mapped on gateway {}; map it with POST /api/v1/devices/{}/zigbee",
                    gateway.id, gateway.id
                ),
            )
        })
    }

    /// The reading a state message means for the mapped device's kind; `None` for the
    /// empty `action` Zigbee2MQTT adds for Home Assistant, which no button sent.
    fn reading_of(&self, m: &Mapped, s: &DeviceState) -> Result<Option<Reading>, Rejection> {
        Ok(Some(match m.kind {
            DeviceKind::Motion => match s.occupancy {
                Some(motion) => match self.swap_occupancy(&m.device_id, motion) {
                    Some(before) if before != motion => Reading::Motion { motion, room: None },
                    _ => Reading::Heartbeat,
                },
                None => Reading::Heartbeat,
            },
            DeviceKind::Door => match s.contact {
                Some(contact) => match self.swap_contact(&m.device_id, contact) {
                    // `contact: true` means the magnet is near: the door is closed.
                    Some(before) if before != contact => Reading::Door { open: !contact },
                    _ => Reading::Heartbeat,
                },
                None => Reading::Heartbeat,
            },
            DeviceKind::Button => match s.action.as_deref() {
                Some("") => return Ok(None),
                Some(a) if m.sos_actions.iter().any(|x| x == a) => Reading::Sos,
                Some(a) if m.ok_actions.iter().any(|x| x == a) => Reading::Ok,
                _ => Reading::Heartbeat,
            },
            DeviceKind::Gps | DeviceKind::Gateway | DeviceKind::Tag | DeviceKind::Receiver => {
                return Err(Rejection::new(
                    RejectReason::BadField,
                    format!(
                        "device {} is a {} device, which no Zigbee device can be",
                        m.device_id,
                        m.kind.as_str()
                    ),
                ))
            }
        }))
    }
}

/// What a topic below a gateway's base topic is.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    /// `bridge/state`: the gateway itself online or offline (its MQTT will says offline).
    BridgeState,
    /// `bridge/…` other than the state: a sign of life of the gateway, nothing more.
    Bridge,
    /// `…/set`, `…/get` commands: nothing for the rules.
    Ignored,
    /// `{friendly_name}/availability`.
    Availability(&'a str),
    /// `{friendly_name}`: the device's state.
    State(&'a str),
}

fn route(rest: &str) -> Route<'_> {
    if rest == "bridge/state" {
        return Route::BridgeState;
    }
    if rest == "bridge" || rest.starts_with("bridge/") {
        return Route::Bridge;
    }
    if let Some(name) = rest.strip_suffix("/availability") {
        return Route::Availability(name);
    }
    let is_command = ["/set", "/get"]
        .iter()
        .any(|c| rest.ends_with(c) || rest.contains(&format!("{c}/")));
    if is_command {
        return Route::Ignored;
    }
    Route::State(rest)
}

/// An availability or bridge state: `{"state":"online"}` (Zigbee2MQTT 2.x) or the plain
/// `online` of 1.x and of `legacy_availability_payload`.
fn availability(payload: &[u8]) -> Result<Reading, Rejection> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| Rejection::new(RejectReason::NotJson, "availability is not UTF-8"))?
        .trim();
    let state = if text.starts_with('{') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Rejection::new(RejectReason::NotJson, e.to_string()))?;
        v.get("state")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                Rejection::new(
                    RejectReason::BadField,
                    "availability JSON needs \"state\": \"online\" or \"offline\"",
                )
            })?
    } else {
        text.to_string()
    };
    match state.as_str() {
        "online" => Ok(Reading::Heartbeat),
        "offline" => Ok(Reading::Offline),
        other => Err(Rejection::new(
            RejectReason::BadField,
            format!("availability {other:?} is neither online nor offline"),
        )),
    }
}

/// The fields of a device state the hub uses; `illuminance`, `illuminance_lux`,
/// `linkquality`, `voltage` and the rest say nothing about the resident and are ignored.
#[derive(Debug, Default, PartialEq)]
struct DeviceState {
    occupancy: Option<bool>,
    contact: Option<bool>,
    action: Option<String>,
    battery: Option<u8>,
}

fn parse_state(payload: &[u8]) -> Result<DeviceState, Rejection> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| {
        let reason = if e.is_syntax() || e.is_eof() {
            RejectReason::NotJson
        } else {
            RejectReason::BadField
        };
        Rejection::new(reason, e.to_string())
    })?;
    let Value::Object(obj) = v else {
        return Err(Rejection::new(
            RejectReason::BadField,
            "a Zigbee2MQTT device state must be a JSON object",
        ));
    };
    Ok(DeviceState {
        occupancy: field(&obj, "occupancy", Value::as_bool, "true or false")?,
        contact: field(&obj, "contact", Value::as_bool, "true or false")?,
        action: field(
            &obj,
            "action",
            |v| v.as_str().map(str::to_string),
            "a string",
        )?,
        battery: field(&obj, "battery", Value::as_f64, "a number")?
            .map(battery_pct)
            .transpose()?,
    })
}

/// An optional field; `null` counts as absent, as Zigbee2MQTT publishes unknown values.
fn field<T>(
    obj: &Map<String, Value>,
    name: &str,
    get: impl Fn(&Value) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, Rejection> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => get(v).map(Some).ok_or_else(|| {
            Rejection::new(
                RejectReason::BadField,
                format!("{name} must be {expected}, got {v}"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: &str = "dev-gw";

    fn gateway() -> DeviceCtx {
        DeviceCtx {
            id: GW.into(),
            resident_id: 1,
            kind: DeviceKind::Gateway,
        }
    }

    fn mapping(name: &str, device_id: &str, kind: DeviceKind, sos: &[&str]) -> ZigbeeDevice {
        ZigbeeDevice {
            gateway_id: GW.into(),
            friendly_name: name.into(),
            device_id: device_id.into(),
            device_kind: kind,
            resident_id: 7,
            sos_actions: sos.iter().map(|s| s.to_string()).collect(),
            ok_actions: default_ok_actions(kind),
            created_at: Utc::now(),
        }
    }

    fn map() -> ZigbeeMap {
        let m = ZigbeeMap::default();
        m.replace_all(&[
            mapping("bedroom/motion", "dev-motion", DeviceKind::Motion, &[]),
            mapping("front door", "dev-door", DeviceKind::Door, &[]),
            mapping(
                "pendant",
                "dev-button",
                DeviceKind::Button,
                &["single", "hold"],
            ),
        ]);
        m
    }

    fn reading(m: &ZigbeeMap, name: &str, payload: &str) -> Result<Option<Reading>, RejectReason> {
        m.classify(
            &gateway(),
            &format!("zigbee2mqtt/{GW}/{name}"),
            payload.as_bytes(),
            Utc::now(),
        )
        .map(|e| e.map(|e| e.reading))
        .map_err(|r| r.reason)
    }

    #[test]
    fn occupancy_sensor_state_is_motion_of_the_mapped_device() -> Result<(), Rejection> {
        // Aqara RTCGQ11LM as Zigbee2MQTT 1.x publishes it (zigbee2mqtt.io/devices/RTCGQ11LM.html,
        // exposes occupancy, illuminance, illuminance_lux, battery, voltage, linkquality), keys sorted.
        let payload = br#"{"battery":100,"illuminance":11,"illuminance_lux":11,"linkquality":126,"occupancy":true,"voltage":3055}"#;
        let m = map();
        let idle = r#"{"battery":100,"occupancy":false}"#;
        assert_eq!(
            reading(&m, "bedroom/motion", idle).map_err(|r| Rejection::new(r, "idle"))?,
            Some(Reading::Heartbeat),
            "the first value is only remembered"
        );
        let ev = m
            .classify(
                &gateway(),
                "zigbee2mqtt/dev-gw/bedroom/motion",
                payload,
                Utc::now(),
            )?
            .ok_or_else(|| Rejection::new(RejectReason::BadField, "ignored"))?;
        assert_eq!(ev.device_id, "dev-motion");
        assert_eq!(ev.resident_id, 7);
        assert_eq!(ev.device_kind, DeviceKind::Motion);
        assert_eq!(
            ev.reading,
            Reading::Motion {
                motion: true,
                room: None
            }
        );
        assert_eq!(ev.battery, Some(100));
        Ok(())
    }

    #[test]
    fn a_cached_occupancy_repeated_with_a_battery_report_is_not_movement() {
        let m = map();
        let moved = r#"{"battery":100,"linkquality":126,"occupancy":true,"voltage":3055}"#;
        let report = r#"{"battery":99,"linkquality":102,"occupancy":true,"voltage":3045}"#;
        let idle = r#"{"battery":99,"linkquality":110,"occupancy":false,"voltage":3045}"#;
        let motion = |motion| Ok(Some(Reading::Motion { motion, room: None }));
        assert_eq!(
            reading(&m, "bedroom/motion", idle),
            Ok(Some(Reading::Heartbeat))
        );
        assert_eq!(reading(&m, "bedroom/motion", moved), motion(true));
        assert_eq!(
            reading(&m, "bedroom/motion", report),
            Ok(Some(Reading::Heartbeat))
        );
        assert_eq!(reading(&m, "bedroom/motion", idle), motion(false));
        assert_eq!(
            reading(&m, "bedroom/motion", idle),
            Ok(Some(Reading::Heartbeat))
        );
        assert_eq!(reading(&m, "bedroom/motion", moved), motion(true));
    }

    #[test]
    fn an_emergency_action_is_sos_by_default() {
        let m = ZigbeeMap::default();
        let defaults = default_sos_actions(DeviceKind::Button);
        let refs: Vec<&str> = defaults.iter().map(String::as_str).collect();
        m.replace_all(&[mapping("sos", "dev-sos", DeviceKind::Button, &refs)]);
        // Tuya TS0215A (zigbee2mqtt.io/devices/TS0215A_sos.html) exposes action "emergency".
        assert_eq!(
            reading(
                &m,
                "sos",
                r#"{"action":"emergency","battery":100,"linkquality":87}"#
            ),
            Ok(Some(Reading::Sos))
        );
        assert_eq!(
            reading(&m, "sos", r#"{"action":"single"}"#),
            Ok(Some(Reading::Sos))
        );
    }

    #[test]
    fn a_double_press_answers_are_you_ok_by_default() {
        let m = ZigbeeMap::default();
        m.replace_all(&[mapping(
            "pendant",
            "dev-sos",
            DeviceKind::Button,
            &["single"],
        )]);
        // Aqara WXKG11LM (zigbee2mqtt.io/devices/WXKG11LM.html) sends "single" and "double".
        assert_eq!(
            reading(&m, "pendant", r#"{"action":"double","battery":100}"#),
            Ok(Some(Reading::Ok))
        );
        assert_eq!(
            reading(&m, "pendant", r#"{"action":"single"}"#),
            Ok(Some(Reading::Sos))
        );
    }

    #[test]
    fn a_contact_sensor_counts_only_changes() {
        let m = map();
        // Aqara MCCGQ11LM (zigbee2mqtt.io/devices/MCCGQ11LM.html): contact true = closed.
        let closed = r#"{"battery":91,"contact":true,"linkquality":87,"voltage":2995}"#;
        let open = r#"{"battery":91,"contact":false,"linkquality":87,"voltage":2995}"#;
        assert_eq!(
            reading(&m, "front door", closed),
            Ok(Some(Reading::Heartbeat))
        );
        assert_eq!(
            reading(&m, "front door", closed),
            Ok(Some(Reading::Heartbeat))
        );
        assert_eq!(
            reading(&m, "front door", open),
            Ok(Some(Reading::Door { open: true }))
        );
        assert_eq!(
            reading(&m, "front door", closed),
            Ok(Some(Reading::Door { open: false }))
        );
    }

    #[test]
    fn button_actions_map_to_sos_ok_or_are_ignored() {
        let m = map();
        assert_eq!(
            reading(&m, "pendant", r#"{"action":"single"}"#),
            Ok(Some(Reading::Sos))
        );
        assert_eq!(
            reading(&m, "pendant", r#"{"action":"hold","battery":80}"#),
            Ok(Some(Reading::Sos))
        );
        assert_eq!(
            reading(&m, "pendant", r#"{"action":"triple"}"#),
            Ok(Some(Reading::Heartbeat))
        );
        // Home Assistant's legacy action sensor: an empty action after every press.
        assert_eq!(reading(&m, "pendant", r#"{"action":""}"#), Ok(None));
    }

    #[test]
    fn availability_in_both_forms() {
        let m = map();
        for (p, r) in [
            ("online", Reading::Heartbeat),
            ("offline", Reading::Offline),
            (r#"{"state":"online"}"#, Reading::Heartbeat),
            (r#"{"state":"offline"}"#, Reading::Offline),
        ] {
            assert_eq!(
                reading(&m, "bedroom/motion/availability", p),
                Ok(Some(r.clone()))
            );
            assert_eq!(reading(&m, "bridge/state", p), Ok(Some(r)));
        }
        assert_eq!(
            reading(&m, "bedroom/motion/availability", "maybe"),
            Err(RejectReason::BadField)
        );
    }

    #[test]
    fn bridge_messages_keep_the_gateway_alive_and_commands_are_ignored() {
        let m = map();
        assert_eq!(
            reading(&m, "bridge/devices", "[]"),
            Ok(Some(Reading::Heartbeat))
        );
        assert_eq!(
            reading(&m, "bridge/health", r#"{"healthy":true}"#),
            Ok(Some(Reading::Heartbeat))
        );
        assert_eq!(reading(&m, "bedroom/motion/set", "{}"), Ok(None));
    }

    #[test]
    fn unknown_names_bad_payloads_and_other_gateways_are_refused() {
        let m = map();
        assert_eq!(
            reading(&m, "kitchen", r#"{"occupancy":true}"#),
            Err(RejectReason::UnknownDevice)
        );
        assert_eq!(
            reading(&m, "bedroom/motion", "{"),
            Err(RejectReason::NotJson)
        );
        assert_eq!(
            reading(&m, "bedroom/motion", r#"{"occupancy":"yes"}"#),
            Err(RejectReason::BadField)
        );
        assert_eq!(
            reading(&m, "bedroom/motion", r#"{"battery":180}"#),
            Err(RejectReason::OutOfRange)
        );
        assert_eq!(
            reading(&m, "bedroom/motion", "[1]"),
            Err(RejectReason::BadField)
        );
        let other = m.classify(
            &gateway(),
            "zigbee2mqtt/dev-other/bedroom/motion",
            b"{}",
            Utc::now(),
        );
        assert_eq!(
            other.map_err(|r| r.reason),
            Err(RejectReason::NotAuthorized)
        );
        let not_gw = DeviceCtx {
            kind: DeviceKind::Motion,
            ..gateway()
        };
        let r = m.classify(
            &not_gw,
            "zigbee2mqtt/dev-gw/bedroom/motion",
            b"{}",
            Utc::now(),
        );
        assert_eq!(r.map_err(|r| r.reason), Err(RejectReason::NotAuthorized));
    }

    #[test]
    fn forgetting_a_device_unmaps_it() {
        let m = map();
        m.forget_device("dev-motion");
        assert_eq!(
            reading(&m, "bedroom/motion", r#"{"occupancy":true}"#),
            Err(RejectReason::UnknownDevice)
        );
        m.forget_device(GW);
        assert_eq!(
            reading(&m, "pendant", r#"{"action":"single"}"#),
            Err(RejectReason::UnknownDevice)
        );
    }
}
