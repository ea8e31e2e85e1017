//! LoRaWAN devices behind a network server: which DevEUI on which gateway is which hub
//! device, and how the fields of its decoded payload become a reading. The network
//! server adapters ([`super::chirpstack`]) parse their own envelopes and hand the
//! decoded object here, so the mapping is the same whichever server carried it.
//!
//! A door sensor's periodic report repeats the door's state, which is not news: as with
//! Zigbee2MQTT, a door counts only when its state changes from the last value this hub
//! saw, and the first value after a restart is only remembered. A motion sensor's
//! report says what it sees at that moment, so each one counts as it is.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use mimamori_protocol::gateway::{LoraFields, LorawanDevice, NewLoraFields};
use mimamori_protocol::native::{battery_pct, position, RejectReason, Rejection};
use mimamori_protocol::{DeviceKind, Reading};
use serde_json::{Map, Value};

/// The field mapping a kind of device gets when its registration names none.
pub fn default_fields(kind: DeviceKind) -> LoraFields {
    let (state, on): (&str, &[&str]) = match kind {
        // Milesight's WS202 decoder says `pir: trigger`, others `occupancy: occupied`.
        DeviceKind::Motion => ("motion", &["trigger", "occupied", "motion"]),
        // Milesight's WS301 decoder says `door: open` / `door: close`.
        DeviceKind::Door => ("door", &["open"]),
        // Milesight's WS101 decoder says `button: short` (or `long`, `double`).
        DeviceKind::Button => ("button", &["short", "long", "double", "sos", "alarm"]),
        _ => ("", &[]),
    };
    LoraFields {
        state: state.to_string(),
        on: on.iter().map(|s| s.to_string()).collect(),
        // ChirpStack's own integrations take `latitude`/`longitude` as a location.
        latitude: "latitude".to_string(),
        longitude: "longitude".to_string(),
        accuracy: "accuracy".to_string(),
        battery: "battery".to_string(),
    }
}

/// A registration's fields over the defaults of the device's kind.
pub fn resolve_fields(kind: DeviceKind, given: Option<NewLoraFields>) -> LoraFields {
    let d = default_fields(kind);
    let g = given.unwrap_or_default();
    LoraFields {
        state: g.state.unwrap_or(d.state),
        on: g.on.unwrap_or(d.on),
        latitude: g.latitude.unwrap_or(d.latitude),
        longitude: g.longitude.unwrap_or(d.longitude),
        accuracy: g.accuracy.unwrap_or(d.accuracy),
        battery: g.battery.unwrap_or(d.battery),
    }
}

/// A DevEUI as topics carry it: 16 hex digits, compared in lower case.
pub fn normalise_dev_eui(dev_eui: &str) -> Option<String> {
    (dev_eui.len() == 16 && dev_eui.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| dev_eui.to_ascii_lowercase())
}

/// A registered device as the adapters need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub device_id: String,
    pub kind: DeviceKind,
    pub resident_id: i64,
    pub fields: LoraFields,
}

impl From<&LorawanDevice> for Mapped {
    fn from(l: &LorawanDevice) -> Self {
        Mapped {
            device_id: l.device_id.clone(),
            kind: l.device_kind,
            resident_id: l.resident_id,
            fields: l.fields.clone(),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// gateway id -> DevEUI -> mapped device.
    gateways: HashMap<String, HashMap<String, Mapped>>,
    /// Last door state seen per mapped device id.
    door_open: HashMap<String, bool>,
}

/// Every gateway's registrations, in memory, replaced by the API on every change.
#[derive(Clone, Default)]
pub struct LoraMap {
    inner: Arc<RwLock<Inner>>,
}

impl LoraMap {
    /// Replaces every registration (at start-up).
    pub fn replace_all(&self, rows: &[LorawanDevice]) {
        let mut inner = self.write();
        inner.gateways.clear();
        for l in rows {
            inner
                .gateways
                .entry(l.gateway_id.clone())
                .or_default()
                .insert(l.dev_eui.clone(), Mapped::from(l));
        }
    }

    /// Replaces the registrations of one gateway (after the API changed them).
    pub fn replace_gateway(&self, gateway_id: &str, rows: &[LorawanDevice]) {
        let euis = rows
            .iter()
            .filter(|l| l.gateway_id == gateway_id)
            .map(|l| (l.dev_eui.clone(), Mapped::from(l)))
            .collect();
        self.write().gateways.insert(gateway_id.to_string(), euis);
    }

    /// Forgets a deleted device, whether it was a gateway or a registered sensor.
    pub fn forget_device(&self, device_id: &str) {
        let mut inner = self.write();
        inner.gateways.remove(device_id);
        for euis in inner.gateways.values_mut() {
            euis.retain(|_, m| m.device_id != device_id);
        }
        inner.door_open.remove(device_id);
    }

    // A poisoned lock still holds consistent maps: every update is a single insert or removal.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The device registered as `dev_eui` on `gateway_id`.
    pub fn lookup(&self, gateway_id: &str, dev_eui: &str) -> Result<Mapped, Rejection> {
        let eui = dev_eui.to_ascii_lowercase();
        self.read()
            .gateways
            .get(gateway_id)
            .and_then(|euis| euis.get(&eui))
            .cloned()
            .ok_or_else(|| {
                Rejection::new(
                    RejectReason::UnknownDevice,
                    format!("DevEUI {eui} is not registered on gateway {gateway_id}"),
                )
            })
    }

    /// The device registered as `dev_eui` on any gateway: The Things Stack's uplinks come
    /// over the hub's own connection, not a gateway's, and a DevEUI is unique worldwide.
    pub fn lookup_any(&self, dev_eui: &str) -> Result<Mapped, Rejection> {
        let eui = dev_eui.to_ascii_lowercase();
        self.read()
            .gateways
            .values()
            .find_map(|euis| euis.get(&eui))
            .cloned()
            .ok_or_else(|| {
                Rejection::new(
                    RejectReason::UnknownDevice,
                    format!("DevEUI {eui} is not registered on any gateway"),
                )
            })
    }

    /// The reading and battery level a decoded payload of `m` says.
    pub fn reading(&self, m: &Mapped, object: &Value) -> Result<(Reading, Option<u8>), Rejection> {
        let Value::Object(obj) = object else {
            return Err(Rejection::new(
                RejectReason::BadField,
                format!("the decoded payload must be a JSON object, got {object}"),
            ));
        };
        let battery = number(obj, &m.fields.battery)?
            .map(battery_pct)
            .transpose()?;
        let reading = match m.kind {
            DeviceKind::Motion => match is_on(obj, &m.fields)? {
                Some(motion) => Reading::Motion { motion, room: None },
                None => Reading::Heartbeat,
            },
            DeviceKind::Door => match is_on(obj, &m.fields)? {
                Some(open) => self.door_change(&m.device_id, open),
                None => Reading::Heartbeat,
            },
            DeviceKind::Button => match is_on(obj, &m.fields)? {
                Some(true) => Reading::Sos,
                _ => Reading::Heartbeat,
            },
            DeviceKind::Gps => fix(obj, &m.fields)?.unwrap_or(Reading::Heartbeat),
            DeviceKind::Gateway | DeviceKind::Tag | DeviceKind::Receiver => {
                return Err(Rejection::new(
                    RejectReason::BadField,
                    format!(
                        "device {} is a {} device, which no LoRaWAN device can be",
                        m.device_id,
                        m.kind.as_str()
                    ),
                ))
            }
        };
        Ok((reading, battery))
    }

    fn door_change(&self, device_id: &str, open: bool) -> Reading {
        let before = self.write().door_open.insert(device_id.to_string(), open);
        match before {
            Some(b) if b != open => Reading::Door { open },
            _ => Reading::Heartbeat,
        }
    }
}

/// The value at a dotted path; `null` counts as absent, as decoders emit unknown values.
fn lookup_path<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    let mut parts = path.split('.');
    let first = obj.get(parts.next()?)?;
    parts
        .try_fold(first, |v, p| v.get(p))
        .filter(|v| !v.is_null())
}

/// Whether the state field says on; `None` when the payload does not carry it.
fn is_on(obj: &Map<String, Value>, f: &LoraFields) -> Result<Option<bool>, Rejection> {
    let Some(v) = lookup_path(obj, &f.state) else {
        return Ok(None);
    };
    match v {
        Value::Bool(b) => Ok(Some(*b)),
        Value::Number(n) => Ok(Some(n.as_f64().is_some_and(|x| x != 0.0))),
        Value::String(s) => Ok(Some(f.on.iter().any(|o| o.eq_ignore_ascii_case(s)))),
        other => Err(Rejection::new(
            RejectReason::BadField,
            format!(
                "{} must be a boolean, number or string, got {other}",
                f.state
            ),
        )),
    }
}

fn number(obj: &Map<String, Value>, path: &str) -> Result<Option<f64>, Rejection> {
    match lookup_path(obj, path) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            Rejection::new(
                RejectReason::BadField,
                format!("{path} must be a number, got {v}"),
            )
        }),
    }
}

/// A position when both coordinates are present.
fn fix(obj: &Map<String, Value>, f: &LoraFields) -> Result<Option<Reading>, Rejection> {
    let (Some(lat), Some(lon)) = (number(obj, &f.latitude)?, number(obj, &f.longitude)?) else {
        return Ok(None);
    };
    position(lat, lon, number(obj, &f.accuracy)?).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn registered(kind: DeviceKind, fields: Option<NewLoraFields>) -> LorawanDevice {
        LorawanDevice {
            gateway_id: "gw".into(),
            dev_eui: "24e124538b223213".into(),
            device_id: "dev-1".into(),
            device_kind: kind,
            resident_id: 4,
            fields: resolve_fields(kind, fields),
            profile: None,
            created_at: Utc::now(),
        }
    }

    fn map_of(l: &LorawanDevice) -> (LoraMap, Mapped) {
        let m = LoraMap::default();
        m.replace_all(std::slice::from_ref(l));
        let mapped = m.lookup("gw", "24E124538B223213");
        (m, mapped.unwrap_or_else(|r| panic!("{r:?}")))
    }

    #[test]
    fn a_pir_trigger_is_motion_with_a_configured_field() {
        let fields = NewLoraFields {
            state: Some("pir".into()),
            ..Default::default()
        };
        let (m, d) = map_of(&registered(DeviceKind::Motion, Some(fields)));
        // Milesight WS202 decoder example (TheThingsNetwork/lorawan-devices ws202-codec.yaml).
        let r = m.reading(&d, &json!({"pir": "trigger"}));
        assert_eq!(
            r,
            Ok((
                Reading::Motion {
                    motion: true,
                    room: None
                },
                None
            ))
        );
        let r = m.reading(&d, &json!({"pir": "idle", "battery": 92}));
        assert_eq!(
            r,
            Ok((
                Reading::Motion {
                    motion: false,
                    room: None
                },
                Some(92)
            ))
        );
        let r = m.reading(&d, &json!({"light": "dark"}));
        assert_eq!(r, Ok((Reading::Heartbeat, None)));
    }

    #[test]
    fn a_door_counts_only_changes_and_nested_fields_are_reached() {
        let fields = NewLoraFields {
            state: Some("digitalInput.1".into()),
            ..Default::default()
        };
        let (m, d) = map_of(&registered(DeviceKind::Door, Some(fields)));
        let at = |v: i64| {
            m.reading(&d, &json!({"digitalInput": {"1": v}}))
                .map(|r| r.0)
        };
        assert_eq!(
            at(0),
            Ok(Reading::Heartbeat),
            "the first value is remembered"
        );
        assert_eq!(at(0), Ok(Reading::Heartbeat));
        assert_eq!(at(1), Ok(Reading::Door { open: true }));
        assert_eq!(at(0), Ok(Reading::Door { open: false }));
    }

    #[test]
    fn buttons_trackers_and_bad_values() {
        let (m, d) = map_of(&registered(DeviceKind::Button, None));
        // Milesight WS101 decoder example (ws101-codec.yaml).
        assert_eq!(
            m.reading(&d, &json!({"button": "short"})).map(|r| r.0),
            Ok(Reading::Sos)
        );
        let (m, g) = map_of(&registered(DeviceKind::Gps, None));
        let fix = m.reading(
            &g,
            &json!({"latitude": 33.59, "longitude": 130.40, "accuracy": 25}),
        );
        assert_eq!(
            fix.map(|r| r.0),
            Ok(Reading::Position {
                lat: 33.59,
                lon: 130.40,
                accuracy_m: Some(25.0)
            })
        );
        let bad = m.reading(&g, &json!({"latitude": 133.0, "longitude": 0.0}));
        assert_eq!(bad.map_err(|r| r.reason), Err(RejectReason::OutOfRange));
        let bad = m.reading(&g, &json!({"battery": "full"}));
        assert_eq!(bad.map_err(|r| r.reason), Err(RejectReason::BadField));
        let bad = m.reading(&g, &json!([1]));
        assert_eq!(bad.map_err(|r| r.reason), Err(RejectReason::BadField));
    }

    #[test]
    fn dev_euis_are_16_hex_digits_and_other_gateways_do_not_see_them() {
        assert_eq!(
            normalise_dev_eui("0101010101010ABC"),
            Some("0101010101010abc".into())
        );
        assert_eq!(normalise_dev_eui("0101"), None);
        assert_eq!(normalise_dev_eui("zz01010101010101"), None);
        let (m, _) = map_of(&registered(DeviceKind::Motion, None));
        let other = m.lookup("gw-2", "24e124538b223213");
        assert_eq!(
            other.map_err(|r| r.reason),
            Err(RejectReason::UnknownDevice)
        );
        m.forget_device("dev-1");
        let gone = m.lookup("gw", "24e124538b223213");
        assert_eq!(gone.map_err(|r| r.reason), Err(RejectReason::UnknownDevice));
    }
}
