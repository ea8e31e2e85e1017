//! BLE tag sightings: a `receiver` device (an ESPresense node, a station reader, a
//! volunteer's phone) saw a resident's `tag`, which places the resident at the
//! receiver — at its fixed place, or where the volunteer's phone says it is — within
//! the receiver's range. Sightings arrive as ESPresense publishes them
//! (`espresense/devices/{tag_id}/{room}`) or in the native form
//! (`watch/v1/{receiver}/sighting`).
//!
//! A receiver reports a tag it keeps seeing every few seconds; one passage is what the
//! rules and the history need, so a tag seen again at the same receiver within
//! [`REPEAT`] is dropped — unless the receiver has no fixed place and has carried the tag
//! farther than its range since (a volunteer walking with a lost person: every such
//! sighting is a new place). Receivers see every BLE device around (phones, watches), so a
//! tag id nobody registered is ignored rather than kept as a dead letter.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};
use mimamori_protocol::gateway::{BleTag, Receiver};
use mimamori_protocol::native::{check_ts, position, RejectReason, Rejection, Timestamp};
use mimamori_protocol::topic::split_device_topic;
use mimamori_protocol::{DeviceEvent, DeviceKind, Reading};
use mimamori_rules::zone::metres_between;
use serde::Deserialize;
use serde_json::Value;

use super::{check_size, DeviceCtx};

/// The first level of every ESPresense topic.
pub const ESPRESENSE_ROOT: &str = "espresense";
/// The native message kind of a sighting: `watch/v1/{receiver}/sighting`.
pub const SIGHTING_KIND: &str = "sighting";
/// Sightings of one tag at one receiver closer together than this are one passage.
pub const REPEAT: Duration = Duration::seconds(60);

#[derive(Debug, Clone)]
struct TagOf {
    device_id: String,
    resident_id: i64,
}

#[derive(Default)]
struct Inner {
    /// receiver device id -> where it is.
    receivers: HashMap<String, Receiver>,
    /// tag id -> the tag device.
    tags: HashMap<String, TagOf>,
    /// (tag id, receiver id) -> when and where that pair last made a sighting.
    last: HashMap<(String, String), Passage>,
}

/// When and where a tag was last seen at one receiver.
#[derive(Debug, Clone, Copy)]
struct Passage {
    at: DateTime<Utc>,
    place: Option<(f64, f64)>,
}

/// Receivers and tags, in memory, replaced by the API on every change.
#[derive(Clone, Default)]
pub struct BleMap {
    inner: Arc<RwLock<Inner>>,
}

/// A native sighting: `{"tag","rssi","ts","lat"?,"lon"?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeSighting {
    tag: String,
    // Part of the documented form and checked to be a number; the receiver's range, not
    // the signal strength, gives a sighting's accuracy.
    #[allow(dead_code)]
    rssi: Option<f64>,
    ts: Option<Timestamp>,
    lat: Option<f64>,
    lon: Option<f64>,
}

impl BleMap {
    pub fn replace_receivers(&self, rows: &[Receiver]) {
        self.write().receivers = rows
            .iter()
            .map(|r| (r.device_id.clone(), r.clone()))
            .collect();
    }

    pub fn replace_tags(&self, rows: &[BleTag]) {
        self.write().tags = rows
            .iter()
            .map(|t| {
                let of = TagOf {
                    device_id: t.device_id.clone(),
                    resident_id: t.resident_id,
                };
                (t.tag_id.clone(), of)
            })
            .collect();
    }

    /// Forgets a deleted device, whether it was a receiver or a tag.
    pub fn forget_device(&self, device_id: &str) {
        let mut inner = self.write();
        inner.receivers.remove(device_id);
        inner.tags.retain(|_, t| t.device_id != device_id);
        inner.last.retain(|(_, r), _| r != device_id);
    }

    // A poisoned lock still holds consistent maps: every update is a single insert or removal.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The receiver a message came from; only receivers publish sightings.
    fn receiver(&self, device: &DeviceCtx) -> Result<Receiver, Rejection> {
        if device.kind != DeviceKind::Receiver {
            return Err(Rejection::new(
                RejectReason::NotAuthorized,
                format!(
                    "{} is a {} device; only receivers publish sightings",
                    device.id,
                    device.kind.as_str()
                ),
            ));
        }
        self.read()
            .receivers
            .get(&device.id)
            .cloned()
            .ok_or_else(|| {
                Rejection::new(
                    RejectReason::UnknownDevice,
                    format!(
                        "receiver {} has no place yet: PUT /api/v1/devices/{}/receiver",
                        device.id, device.id
                    ),
                )
            })
    }

    /// Validates one ESPresense message of a receiver; `Ok(None)` for messages of no use.
    pub fn classify_espresense(
        &self,
        device: &DeviceCtx,
        topic: &str,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<DeviceEvent>, Rejection> {
        check_size(payload)?;
        let rx = self.receiver(device)?;
        let levels: Vec<&str> = topic.split('/').collect();
        let own_room = |room: &str| {
            if rx.room.as_deref() == Some(room) {
                Ok(())
            } else {
                Err(Rejection::new(
                    RejectReason::NotAuthorized,
                    format!(
                        "receiver {} reports as room {:?}, not {room:?}",
                        rx.device_id, rx.room
                    ),
                ))
            }
        };
        match levels.as_slice() {
            [ESPRESENSE_ROOT, "devices", tag, room] => {
                own_room(room)?;
                espresense_reading(payload)?;
                self.sighting(&rx, tag, None, now, now)
            }
            [ESPRESENSE_ROOT, "rooms", room, "status"] => {
                own_room(room)?;
                let reading = match payload {
                    b"online" => Reading::Heartbeat,
                    b"offline" => Reading::Offline,
                    _ => {
                        return Err(Rejection::new(
                            RejectReason::BadField,
                            "an ESPresense status is online or offline",
                        ))
                    }
                };
                Ok(Some(receiver_event(&rx, device, reading, now)))
            }
            [ESPRESENSE_ROOT, "rooms", room, "telemetry"] => {
                own_room(room)?;
                Ok(self
                    .fresh("", &rx.device_id, None, now)
                    .then(|| receiver_event(&rx, device, Reading::Heartbeat, now)))
            }
            // Sub-reports, sensor values, settings and the companion topics say nothing here.
            _ => Ok(None),
        }
    }

    /// Validates one native sighting, `watch/v1/{receiver}/sighting`.
    pub fn classify_native(
        &self,
        device: &DeviceCtx,
        topic: &str,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<DeviceEvent>, Rejection> {
        check_size(payload)?;
        match split_device_topic(topic) {
            Some((id, SIGHTING_KIND)) if id == device.id => {}
            _ => {
                return Err(Rejection::new(
                    RejectReason::NotAuthorized,
                    format!(
                        "device {} publishes sightings only on watch/v1/{}/sighting",
                        device.id, device.id
                    ),
                ))
            }
        }
        let rx = self.receiver(device)?;
        let s: NativeSighting = serde_json::from_slice(payload).map_err(|e| {
            let reason = if e.is_syntax() || e.is_eof() {
                RejectReason::NotJson
            } else {
                RejectReason::BadField
            };
            Rejection::new(reason, e.to_string())
        })?;
        let at = match (s.lat, s.lon) {
            (Some(lat), Some(lon)) => Some((lat, lon)),
            (None, None) => None,
            _ => {
                return Err(Rejection::new(
                    RejectReason::BadField,
                    "lat and lon come together",
                ))
            }
        };
        let ts = check_ts(s.ts.map(|t| t.0), now)?;
        self.sighting(&rx, &s.tag, at, ts, now)
    }

    /// The sighting of `tag` at `rx`, unless the tag is unknown or was just seen there.
    fn sighting(
        &self,
        rx: &Receiver,
        tag: &str,
        at: Option<(f64, f64)>,
        ts: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<DeviceEvent>, Rejection> {
        let Some(of) = self.read().tags.get(tag).cloned() else {
            return Ok(None);
        };
        let (lat, lon) = at.or(rx.lat.zip(rx.lon)).ok_or_else(|| {
            Rejection::new(
                RejectReason::BadField,
                format!(
                    "receiver {} has no fixed place, so its sightings need lat and lon",
                    rx.device_id
                ),
            )
        })?;
        // Validates the coordinates as any fix's.
        position(lat, lon, Some(rx.range_m))?;
        let moving = rx.lat.is_none().then_some(((lat, lon), rx.range_m));
        if !self.fresh(tag, &rx.device_id, moving, now) {
            return Ok(None);
        }
        Ok(Some(DeviceEvent {
            device_id: of.device_id,
            device_kind: DeviceKind::Tag,
            resident_id: of.resident_id,
            ts,
            received_at: now,
            reading: Reading::Sighting {
                lat,
                lon,
                accuracy_m: Some(rx.range_m),
                receiver: rx.device_id.clone(),
                place: rx.place.clone(),
            },
            battery: None,
        }))
    }

    /// Whether the pair was not seen within [`REPEAT`], or (for a receiver that moves, with
    /// its place and range) was seen farther away than its range; remembers it now if so.
    fn fresh(
        &self,
        tag: &str,
        receiver: &str,
        moving: Option<((f64, f64), f64)>,
        now: DateTime<Utc>,
    ) -> bool {
        let key = (tag.to_string(), receiver.to_string());
        let mut inner = self.write();
        let moved = |last: &Passage| match (moving, last.place) {
            (Some((here, range_m)), Some(there)) => metres_between(here, there) > range_m,
            _ => false,
        };
        if inner
            .last
            .get(&key)
            .is_some_and(|last| now - last.at < REPEAT && !moved(last))
        {
            return false;
        }
        let place = moving.map(|(here, _)| here);
        inner.last.insert(key, Passage { at: now, place });
        true
    }
}

fn receiver_event(
    rx: &Receiver,
    device: &DeviceCtx,
    reading: Reading,
    now: DateTime<Utc>,
) -> DeviceEvent {
    DeviceEvent {
        device_id: rx.device_id.clone(),
        device_kind: DeviceKind::Receiver,
        resident_id: device.resident_id,
        ts: now,
        received_at: now,
        reading,
        battery: None,
    }
}

/// An ESPresense device report must be a JSON object (`BleFingerprint::fill`).
fn espresense_reading(payload: &[u8]) -> Result<(), Rejection> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(_) => Err(Rejection::new(
            RejectReason::BadField,
            "an ESPresense report is a JSON object",
        )),
        Err(e) => Err(Rejection::new(RejectReason::NotJson, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "iBeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0-1-7";

    fn map() -> BleMap {
        let m = BleMap::default();
        m.replace_receivers(&[
            Receiver {
                device_id: "rx-station".into(),
                resident_id: 1,
                place: "Koenji station, north exit".into(),
                room: Some("koenji_north".into()),
                lat: Some(35.7056),
                lon: Some(139.6496),
                range_m: 30.0,
                created_at: Utc::now(),
            },
            Receiver {
                device_id: "rx-phone".into(),
                resident_id: 1,
                place: "volunteer app".into(),
                room: None,
                lat: None,
                lon: None,
                range_m: 50.0,
                created_at: Utc::now(),
            },
        ]);
        m.replace_tags(&[BleTag {
            tag_id: TAG.into(),
            device_id: "dev-tag".into(),
            resident_id: 9,
            created_at: Utc::now(),
        }]);
        m
    }

    fn rx(id: &str) -> DeviceCtx {
        DeviceCtx {
            id: id.into(),
            resident_id: 1,
            kind: DeviceKind::Receiver,
        }
    }

    // Field order and number formats of ESPresense's BleFingerprint::fill() (src/BleFingerprint.cpp).
    const REPORT: &str = r#"{"mac":"e4c2a1b0f9d8","id":"iBeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0-1-7","rssi@1m":-59,"rssi":-77.50,"rxAdj":0,"rssiVar":2.10,"distance":4.12,"var":0.35,"int":1015}"#;

    #[test]
    fn an_espresense_report_places_the_tag_at_the_receiver_once_per_passage() {
        let m = map();
        let topic = format!("espresense/devices/{TAG}/koenji_north");
        let now = Utc::now();
        let ev = m.classify_espresense(&rx("rx-station"), &topic, REPORT.as_bytes(), now);
        let ev = ev.ok().flatten();
        assert_eq!(
            ev.as_ref().map(|e| (e.device_id.as_str(), e.resident_id)),
            Some(("dev-tag", 9))
        );
        assert_eq!(
            ev.map(|e| e.reading),
            Some(Reading::Sighting {
                lat: 35.7056,
                lon: 139.6496,
                accuracy_m: Some(30.0),
                receiver: "rx-station".into(),
                place: "Koenji station, north exit".into(),
            })
        );
        let again = m.classify_espresense(
            &rx("rx-station"),
            &topic,
            REPORT.as_bytes(),
            now + Duration::seconds(5),
        );
        assert_eq!(again.map_err(|r| r.reason), Ok(None), "the same passage");
        let later =
            m.classify_espresense(&rx("rx-station"), &topic, REPORT.as_bytes(), now + REPEAT);
        assert!(matches!(later, Ok(Some(_))));
    }

    #[test]
    fn rooms_unknown_tags_and_other_kinds() {
        let m = map();
        let other_room = m.classify_espresense(
            &rx("rx-station"),
            &format!("espresense/devices/{TAG}/kitchen"),
            REPORT.as_bytes(),
            Utc::now(),
        );
        assert_eq!(
            other_room.map_err(|r| r.reason),
            Err(RejectReason::NotAuthorized)
        );
        let phone = m.classify_espresense(
            &rx("rx-station"),
            "espresense/devices/apple:1006:10-12/koenji_north",
            b"{}",
            Utc::now(),
        );
        assert_eq!(phone.map_err(|r| r.reason), Ok(None));
        let status = m.classify_espresense(
            &rx("rx-station"),
            "espresense/rooms/koenji_north/status",
            b"offline",
            Utc::now(),
        );
        assert_eq!(
            status.ok().flatten().map(|e| e.reading),
            Some(Reading::Offline)
        );
        let motion = DeviceCtx {
            kind: DeviceKind::Motion,
            ..rx("rx-station")
        };
        let r = m.classify_espresense(
            &motion,
            "espresense/rooms/koenji_north/status",
            b"online",
            Utc::now(),
        );
        assert_eq!(r.map_err(|r| r.reason), Err(RejectReason::NotAuthorized));
    }

    #[test]
    fn a_volunteers_phone_gives_its_own_position() {
        let m = map();
        let body = format!(
            r#"{{"tag":"{TAG}","rssi":-80,"ts":"2025-11-25T01:00:00Z","lat":35.70,"lon":139.64}}"#
        );
        let ev = m.classify_native(
            &rx("rx-phone"),
            "watch/v1/rx-phone/sighting",
            body.as_bytes(),
            Utc::now(),
        );
        let reading = ev.ok().flatten().map(|e| e.reading);
        assert!(
            matches!(reading, Some(Reading::Sighting { lat, accuracy_m: Some(a), .. }) if lat == 35.70 && a == 50.0)
        );
        let blind = format!(r#"{{"tag":"{TAG}","rssi":-80}}"#);
        let r = m.classify_native(
            &rx("rx-phone"),
            "watch/v1/rx-phone/sighting",
            blind.as_bytes(),
            Utc::now(),
        );
        assert_eq!(r.map_err(|r| r.reason), Err(RejectReason::BadField));
        let r = m.classify_native(
            &rx("rx-phone"),
            "watch/v1/rx-station/sighting",
            blind.as_bytes(),
            Utc::now(),
        );
        assert_eq!(r.map_err(|r| r.reason), Err(RejectReason::NotAuthorized));
    }

    #[test]
    fn a_phone_walking_with_the_tag_reports_each_new_place_and_a_station_does_not() {
        let m = map();
        let now = Utc::now();
        let at = |lat: f64| format!(r#"{{"tag":"{TAG}","rssi":-80,"lat":{lat},"lon":139.64}}"#);
        let seen = |body: String, secs: i64| {
            m.classify_native(
                &rx("rx-phone"),
                "watch/v1/rx-phone/sighting",
                body.as_bytes(),
                now + Duration::seconds(secs),
            )
            .ok()
            .flatten()
            .is_some()
        };
        assert!(seen(at(35.7000), 0));
        // 22 m on: within the phone's 50 m range, the same passage.
        assert!(!seen(at(35.7002), 1));
        // 111 m on from the last kept sighting: a new place.
        assert!(seen(at(35.7010), 2));
        assert!(!seen(at(35.7010), 3));
        assert!(seen(at(35.7010), 63));
        // A fixed station's reports stay one a minute however often they come.
        let report = |secs: i64| {
            m.classify_espresense(
                &rx("rx-station"),
                &format!("espresense/devices/{TAG}/koenji_north"),
                REPORT.as_bytes(),
                now + Duration::seconds(secs),
            )
            .ok()
            .flatten()
            .is_some()
        };
        assert!(report(0));
        assert!(!report(5));
    }
}
