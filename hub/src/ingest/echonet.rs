//! The ECHONET Lite adapter: what echonetlite2mqtt publishes for a gateway, with its
//! base topic set to `echonetlite2mqtt/{gateway_id}/elapi/v2/devices`, turned into
//! events of the hub devices its ECHONET devices are mapped to.
//!
//! echonetlite2mqtt publishes each property on `{base}/{device}/properties/{name}` as
//! text: a state as its MRA name (`true`/`false` for the human detection sensor's
//! `detection` and the emergency button's `occurrenceOfEmergency`), a number as digits.
//! Three properties matter: `detection` (class 0x0007) is motion, `occurrenceOfEmergency`
//! (0x0003) set is SOS, and the low-voltage smart meter's `instantaneousElectricPower`
//! (0x0288) above the home's standby is a sign that someone uses electricity, as the
//! electricity-based watching services judge a home with no sensor in it.
//!
//! The standby is learned, not configured: it follows a lower reading at once and a
//! higher one only slowly ([`STANDBY_RISE`] of the gap per reading), so a fridge's cycle or
//! an evening of cooking does not become the standby, while a new appliance left on does
//! after a few hours. The first reading after a restart is only remembered.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use mimamori_protocol::gateway::EchonetDevice;
use mimamori_protocol::native::{RejectReason, Rejection};
use mimamori_protocol::{DeviceEvent, DeviceKind, Reading};

use super::{below, check_publisher, DeviceCtx};

/// The first level of every echonetlite2mqtt topic the hub accepts.
pub const ROOT: &str = "echonetlite2mqtt";
/// The share of the gap by which the standby rises towards a higher reading.
pub const STANDBY_RISE: f64 = 0.02;
/// Watts above standby that count as activity when a mapping names none.
pub const DEFAULT_ACTIVITY_ABOVE_W: f64 = 150.0;

/// The base topic a gateway's echonetlite2mqtt must be given (`MQTT_BASE_TOPIC`).
pub fn base_topic(gateway_id: &str) -> String {
    format!("{ROOT}/{gateway_id}/elapi/v2/devices")
}

#[derive(Debug, Clone)]
struct Mapped {
    device_id: String,
    kind: DeviceKind,
    resident_id: i64,
    activity_above_w: f64,
}

#[derive(Default)]
struct Inner {
    /// gateway id -> ECHONET id or alias -> mapped device.
    gateways: HashMap<String, HashMap<String, Mapped>>,
    /// Learned standby power per mapped device id, in watts.
    standby: HashMap<String, f64>,
}

/// Every gateway's ECHONET mappings, in memory, replaced by the API on every change.
#[derive(Clone, Default)]
pub struct EchonetMap {
    inner: Arc<RwLock<Inner>>,
}

impl EchonetMap {
    pub fn replace_all(&self, rows: &[EchonetDevice]) {
        let mut inner = self.write();
        inner.gateways.clear();
        for e in rows {
            let m = Mapped {
                device_id: e.device_id.clone(),
                kind: e.device_kind,
                resident_id: e.resident_id,
                activity_above_w: e.activity_above_w,
            };
            inner
                .gateways
                .entry(e.gateway_id.clone())
                .or_default()
                .insert(e.echonet_id.clone(), m);
        }
    }

    /// Forgets a deleted device, whether it was a gateway or a mapped one.
    pub fn forget_device(&self, device_id: &str) {
        let mut inner = self.write();
        inner.gateways.remove(device_id);
        for ids in inner.gateways.values_mut() {
            ids.retain(|_, m| m.device_id != device_id);
        }
        inner.standby.remove(device_id);
    }

    // A poisoned lock still holds consistent maps: every update is a single insert or removal.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates one message of a gateway's echonetlite2mqtt; `Ok(None)` for the many
    /// of no use (device descriptions, other properties, devices nobody mapped: an
    /// installation sees every appliance of the home).
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
            "echonetlite2mqtt messages",
            payload,
        )?;
        let rest = below(topic, &base_topic(&gateway.id), &gateway.id)?;
        let Some((device, "properties", property)) = split3(rest) else {
            return Ok(None);
        };
        let Some(m) = self.mapped(&gateway.id, device) else {
            return Ok(None);
        };
        let text = std::str::from_utf8(payload)
            .map_err(|_| Rejection::new(RejectReason::NotJson, "a property value is text"))?
            .trim();
        let Some(reading) = self.reading(&m, property, text)? else {
            return Ok(None);
        };
        Ok(Some(DeviceEvent {
            device_id: m.device_id,
            device_kind: m.kind,
            resident_id: m.resident_id,
            ts: now,
            received_at: now,
            reading,
            battery: None,
        }))
    }

    fn mapped(&self, gateway_id: &str, device: &str) -> Option<Mapped> {
        self.read().gateways.get(gateway_id)?.get(device).cloned()
    }

    fn reading(
        &self,
        m: &Mapped,
        property: &str,
        text: &str,
    ) -> Result<Option<Reading>, Rejection> {
        Ok(Some(match (m.kind, property) {
            (DeviceKind::Motion, "detection") => Reading::Motion {
                motion: state(property, text)?,
                room: None,
            },
            (DeviceKind::Button, "occurrenceOfEmergency") => match state(property, text)? {
                true => Reading::Sos,
                false => Reading::Heartbeat,
            },
            (DeviceKind::Motion, "instantaneousElectricPower") => {
                // The meter could not measure: it is alive, nothing more.
                if text == "noData" {
                    return Ok(Some(Reading::Heartbeat));
                }
                let watts: f64 = text
                    .parse()
                    .ok()
                    .filter(|w: &f64| w.is_finite())
                    .ok_or_else(|| {
                        Rejection::new(
                            RejectReason::BadField,
                            format!("instantaneousElectricPower must be watts, got {text:?}"),
                        )
                    })?;
                self.power(m, watts)
            }
            _ => return Ok(None),
        }))
    }

    /// Activity when `watts` is clearly above the learned standby; the standby learns.
    fn power(&self, m: &Mapped, watts: f64) -> Reading {
        let mut inner = self.write();
        let Some(standby) = inner.standby.get(&m.device_id).copied() else {
            inner.standby.insert(m.device_id.clone(), watts);
            return Reading::Heartbeat;
        };
        let active = watts > standby + m.activity_above_w;
        let learned = if watts < standby {
            watts
        } else {
            standby + (watts - standby) * STANDBY_RISE
        };
        inner.standby.insert(m.device_id.clone(), learned);
        if active {
            Reading::Motion {
                motion: true,
                room: None,
            }
        } else {
            Reading::Heartbeat
        }
    }
}

fn split3(rest: &str) -> Option<(&str, &str, &str)> {
    let mut parts = rest.splitn(3, '/');
    let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
    (!c.contains('/')).then_some((a, b, c))
}

/// An MRA state of two values, as echonetlite2mqtt names them.
fn state(property: &str, text: &str) -> Result<bool, Rejection> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Rejection::new(
            RejectReason::BadField,
            format!("{property} must be true or false, got {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> EchonetMap {
        let m = EchonetMap::default();
        let row = |id: &str, device: &str, kind| EchonetDevice {
            gateway_id: "gw".into(),
            echonet_id: id.into(),
            device_id: device.into(),
            device_kind: kind,
            resident_id: 3,
            activity_above_w: DEFAULT_ACTIVITY_ABOVE_W,
            created_at: Utc::now(),
        };
        m.replace_all(&[
            row("fe00-sensor", "dev-motion", DeviceKind::Motion),
            row("fe00-button", "dev-button", DeviceKind::Button),
            row("smart_meter", "dev-meter", DeviceKind::Motion),
        ]);
        m
    }

    fn gw() -> DeviceCtx {
        DeviceCtx {
            id: "gw".into(),
            resident_id: 3,
            kind: DeviceKind::Gateway,
        }
    }

    fn run(
        m: &EchonetMap,
        device: &str,
        property: &str,
        value: &str,
    ) -> Result<Option<Reading>, RejectReason> {
        let topic = format!("echonetlite2mqtt/gw/elapi/v2/devices/{device}/properties/{property}");
        m.classify(&gw(), &topic, value.as_bytes(), Utc::now())
            .map(|e| e.map(|e| e.reading))
            .map_err(|r| r.reason)
    }

    #[test]
    fn detection_and_emergency_are_motion_and_sos() {
        let m = map();
        let moved = Reading::Motion {
            motion: true,
            room: None,
        };
        assert_eq!(run(&m, "fe00-sensor", "detection", "true"), Ok(Some(moved)));
        assert_eq!(
            run(&m, "fe00-button", "occurrenceOfEmergency", "true"),
            Ok(Some(Reading::Sos))
        );
        assert_eq!(
            run(&m, "fe00-button", "occurrenceOfEmergency", "false"),
            Ok(Some(Reading::Heartbeat))
        );
        assert_eq!(
            run(&m, "fe00-sensor", "detection", "maybe"),
            Err(RejectReason::BadField)
        );
        assert_eq!(run(&m, "fe00-sensor", "thresholdLevel", "5"), Ok(None));
        assert_eq!(run(&m, "aircon", "operationStatus", "true"), Ok(None));
        let outside = m.classify(
            &gw(),
            "echonetlite2mqtt/gw-2/elapi/v2/devices/x/properties/detection",
            b"true",
            Utc::now(),
        );
        assert_eq!(
            outside.map_err(|r| r.reason).err(),
            Some(RejectReason::NotAuthorized)
        );
    }

    #[test]
    fn power_above_the_learned_standby_is_activity() {
        let m = map();
        let power = |w: &str| run(&m, "smart_meter", "instantaneousElectricPower", w);
        let active = Ok(Some(Reading::Motion {
            motion: true,
            room: None,
        }));
        assert_eq!(
            power("120"),
            Ok(Some(Reading::Heartbeat)),
            "the first reading is remembered"
        );
        assert_eq!(
            power("80"),
            Ok(Some(Reading::Heartbeat)),
            "standby follows down at once"
        );
        assert_eq!(
            power("200"),
            Ok(Some(Reading::Heartbeat)),
            "a fridge cycle is not activity"
        );
        assert_eq!(power("1200"), active, "a kettle is");
        assert_eq!(power("noData"), Ok(Some(Reading::Heartbeat)));
        assert_eq!(power("lots"), Err(RejectReason::BadField));
    }
}
