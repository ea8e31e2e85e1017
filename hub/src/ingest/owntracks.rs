//! The OwnTracks adapter: what the OwnTracks app (MQTT mode) publishes on
//! `owntracks/{device_id}/{phone}`, and the `setWaypoints` command through which the
//! hub shows the phone its resident's safe zones.
//!
//! The MQTT username is the hub's device id, and OwnTracks puts it as the second topic
//! level, so a phone can publish only as itself. Message types (owntracks.org/booklet/tech/json):
//! `location` is a fix; `transition` (on `…/event`) is the phone's own enter/leave
//! verdict, which the hub takes only as a hint: its position becomes a fix and the
//! hub's geofence rule decides; `lwt` means the phone went offline. Cards, status,
//! waypoint exports and the like are of no use to the rules and are ignored.

use chrono::{DateTime, TimeZone, Utc};
use mimamori_protocol::native::{battery_pct, check_ts, position, RejectReason, Rejection};
use mimamori_protocol::zone::{Zone, ZoneShape};
use mimamori_protocol::{DeviceEvent, DeviceKind, Reading};
use serde::Deserialize;
use serde_json::json;

use super::{check_publisher, DeviceCtx};

/// The first level of every OwnTracks topic.
pub const ROOT: &str = "owntracks";

/// Everything a phone may publish and subscribe under: `owntracks/{device_id}/`.
pub fn user_prefix(device_id: &str) -> String {
    format!("{ROOT}/{device_id}/")
}

/// The topic a phone subscribes to for remote commands: `owntracks/{device_id}/{phone}/cmd`.
pub fn cmd_topic(device_id: &str, phone: &str) -> String {
    format!("{ROOT}/{device_id}/{phone}/cmd")
}

/// The phone name in a subscription to the phone's own command topic, if it is one.
pub fn phone_of_cmd_filter<'a>(device_id: &str, filter: &'a str) -> Option<&'a str> {
    let rest = filter.strip_prefix(ROOT)?.strip_prefix('/')?;
    let rest = rest.strip_prefix(device_id)?.strip_prefix('/')?;
    let phone = rest.strip_suffix("/cmd")?;
    (!phone.is_empty() && !phone.contains(['/', '+', '#'])).then_some(phone)
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(rename = "_type")]
    kind: String,
    lat: Option<f64>,
    lon: Option<f64>,
    /// Epoch seconds.
    tst: Option<i64>,
    acc: Option<f64>,
    batt: Option<f64>,
}

/// Validates one message of a phone; `Ok(None)` for message types of no use.
pub fn classify(
    device: &DeviceCtx,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<DeviceEvent>, Rejection> {
    check_publisher(device, DeviceKind::Gps, "OwnTracks messages", payload)?;
    let prefix = user_prefix(&device.id);
    let rest = topic.strip_prefix(&prefix).ok_or_else(|| {
        Rejection::new(
            RejectReason::NotAuthorized,
            format!("{} may publish only under {prefix}", device.id),
        )
    })?;
    let levels: Vec<&str> = rest.split('/').collect();
    let (on_base, on_event) = match levels.as_slice() {
        [phone] if !phone.is_empty() => (true, false),
        [phone, "event"] if !phone.is_empty() => (false, true),
        [phone, _] if !phone.is_empty() => return Ok(None),
        _ => {
            return Err(Rejection::new(
                RejectReason::BadTopic,
                format!("topic {topic:?} is not {prefix}{{phone}}[/{{subtopic}}]"),
            ))
        }
    };
    let msg: Message = serde_json::from_slice(payload).map_err(|e| {
        let reason = if e.is_syntax() || e.is_eof() {
            RejectReason::NotJson
        } else {
            RejectReason::BadField
        };
        Rejection::new(reason, e.to_string())
    })?;
    let reading = match (msg.kind.as_str(), on_base, on_event) {
        ("location", true, _) | ("transition", _, true) => {
            let (Some(lat), Some(lon)) = (msg.lat, msg.lon) else {
                return Err(Rejection::new(
                    RejectReason::BadField,
                    format!("a {} needs lat and lon", msg.kind),
                ));
            };
            position(lat, lon, msg.acc)?
        }
        // The lwt's tst is when the phone connected, not when it was lost: the receive time counts.
        ("lwt", true, _) => {
            return Ok(Some(event(device, Reading::Offline, now, now, None)));
        }
        ("encrypted", _, _) => {
            return Err(Rejection::new(
                RejectReason::BadField,
                "encrypted OwnTracks payloads cannot be read by the hub; clear the app's encryption key",
            ))
        }
        (
            "card" | "cmd" | "configuration" | "status" | "steps" | "beacon" | "waypoint"
            | "waypoints" | "request" | "location" | "transition" | "lwt",
            _,
            _,
        ) => return Ok(None),
        (other, _, _) => {
            return Err(Rejection::new(
                RejectReason::UnknownKind,
                format!("unknown OwnTracks _type {other:?}"),
            ))
        }
    };
    let ts = msg
        .tst
        .map(|s| {
            Utc.timestamp_opt(s, 0).single().ok_or_else(|| {
                Rejection::new(RejectReason::OutOfRange, format!("tst {s} is not a time"))
            })
        })
        .transpose()?;
    let ts = check_ts(ts, now)?;
    // OwnTracks sends `batt: -1` when the phone cannot tell its battery level.
    let battery = msg
        .batt
        .filter(|b| *b != -1.0)
        .map(battery_pct)
        .transpose()?;
    Ok(Some(event(device, reading, ts, now, battery)))
}

fn event(
    device: &DeviceCtx,
    reading: Reading,
    ts: DateTime<Utc>,
    now: DateTime<Utc>,
    battery: Option<u8>,
) -> DeviceEvent {
    DeviceEvent {
        device_id: device.id.clone(),
        device_kind: device.kind,
        resident_id: device.resident_id,
        ts,
        received_at: now,
        reading,
        battery,
    }
}

/// The `setWaypoints` command listing a resident's safe zones.
///
/// OwnTracks regions are circles: a polygon zone is sent as the circle around its
/// vertices. The phone only displays and reports them; the hub's own geofence rule
/// decides. A waypoint's `tst` is its key on the phone, so the zone id is used: sending
/// the list again replaces the waypoints instead of adding copies.
pub fn set_waypoints(zones: &[Zone]) -> Vec<u8> {
    let waypoints: Vec<_> = zones
        .iter()
        .map(|z| {
            let (lat, lon, rad) = circle_of(&z.shape);
            json!({
                "_type": "waypoint",
                "desc": z.name,
                "lat": lat,
                "lon": lon,
                "rad": rad.ceil() as i64,
                "tst": z.id,
                "rid": format!("mimamori-zone-{}", z.id),
            })
        })
        .collect();
    json!({
        "_type": "cmd",
        "action": "setWaypoints",
        "waypoints": {"_type": "waypoints", "waypoints": waypoints},
    })
    .to_string()
    .into_bytes()
}

/// The `clearWaypoints` command, sent before a new list so deleted zones disappear.
pub fn clear_waypoints() -> Vec<u8> {
    json!({"_type": "cmd", "action": "clearWaypoints"})
        .to_string()
        .into_bytes()
}

/// Centre and radius (metres) of a circle holding the whole zone.
fn circle_of(shape: &ZoneShape) -> (f64, f64, f64) {
    match shape {
        ZoneShape::Circle(c) => (c.lat, c.lon, c.radius_m),
        ZoneShape::Polygon(p) => {
            let points: Vec<(f64, f64)> = p
                .coordinates
                .first()
                .map(|ring| {
                    ring.iter()
                        .filter_map(|pt| Some((*pt.get(1)?, *pt.first()?)))
                        .collect()
                })
                .unwrap_or_default();
            let n = points.len().max(1) as f64;
            let lat = points.iter().map(|p| p.0).sum::<f64>() / n;
            let lon = points.iter().map(|p| p.1).sum::<f64>() / n;
            let rad = points
                .iter()
                .map(|p| metres(lat, lon, p.0, p.1))
                .fold(0.0, f64::max);
            (lat, lon, rad)
        }
    }
}

/// Great-circle distance in metres (haversine).
fn metres(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * a.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimamori_protocol::zone::{Circle, GeoJsonPolygon};

    fn phone() -> DeviceCtx {
        DeviceCtx {
            id: "dev-phone".into(),
            resident_id: 4,
            kind: DeviceKind::Gps,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_764_032_400, 0)
            .single()
            .unwrap_or_default()
    }

    fn classify_str(topic: &str, payload: &str) -> Result<Option<DeviceEvent>, RejectReason> {
        classify(&phone(), topic, payload.as_bytes(), now()).map_err(|r| r.reason)
    }

    #[test]
    fn a_location_is_a_fix_with_its_time_accuracy_and_battery() -> Result<(), RejectReason> {
        // Shape of OwnTracks Android's location message (owntracks.org/booklet/tech/json,
        // _type=location: acc, alt, batt, bs, conn, lat, lon, t, tid, topic, tst, vac, vel).
        let p = r#"{"_type":"location","acc":12,"alt":40,"batt":81,"bs":1,"conn":"m","created_at":1764032399,"lat":35.7074,"lon":139.6638,"m":1,"t":"u","tid":"ph","topic":"owntracks/dev-phone/phone","tst":1764032390,"vac":3,"vel":0}"#;
        let ev = classify_str("owntracks/dev-phone/phone", p)?.ok_or(RejectReason::BadField)?;
        assert_eq!(
            ev.reading,
            Reading::Position {
                lat: 35.7074,
                lon: 139.6638,
                accuracy_m: Some(12.0)
            }
        );
        assert_eq!(ev.ts.timestamp(), 1_764_032_390);
        assert_eq!(ev.battery, Some(81));
        assert_eq!(ev.resident_id, 4);
        Ok(())
    }

    #[test]
    fn battery_minus_one_is_unknown_and_the_fix_is_kept() -> Result<(), RejectReason> {
        let p = r#"{"_type":"location","acc":12,"batt":-1,"lat":35.7074,"lon":139.6638,"tst":1764032390}"#;
        let ev = classify_str("owntracks/dev-phone/phone", p)?.ok_or(RejectReason::BadField)?;
        assert_eq!(ev.battery, None);
        assert!(matches!(ev.reading, Reading::Position { .. }));
        let bad = r#"{"_type":"location","batt":-2,"lat":35.7074,"lon":139.6638}"#;
        assert_eq!(
            classify_str("owntracks/dev-phone/phone", bad).err(),
            Some(RejectReason::OutOfRange)
        );
        Ok(())
    }

    #[test]
    fn lwt_is_offline_at_receive_time_and_transitions_are_fixes() -> Result<(), RejectReason> {
        let lwt = classify_str(
            "owntracks/dev-phone/phone",
            r#"{"_type":"lwt","tst":1764000000}"#,
        )?;
        let lwt = lwt.ok_or(RejectReason::BadField)?;
        assert_eq!((lwt.reading, lwt.ts), (Reading::Offline, now()));
        let t = r#"{"_type":"transition","acc":20,"desc":"home","event":"leave","lat":35.71,"lon":139.67,"t":"c","tid":"ph","tst":1764032000,"wtst":1763000000}"#;
        let ev =
            classify_str("owntracks/dev-phone/phone/event", t)?.ok_or(RejectReason::BadField)?;
        assert_eq!(
            ev.reading,
            Reading::Position {
                lat: 35.71,
                lon: 139.67,
                accuracy_m: Some(20.0)
            }
        );
        Ok(())
    }

    #[test]
    fn other_types_are_ignored_and_bad_ones_refused() {
        assert_eq!(
            classify_str(
                "owntracks/dev-phone/phone/info",
                r#"{"_type":"card","name":"x"}"#
            ),
            Ok(None)
        );
        assert_eq!(
            classify_str(
                "owntracks/dev-phone/phone/waypoint",
                r#"{"_type":"waypoint","desc":"x","lat":1,"lon":2,"rad":3,"tst":4}"#
            ),
            Ok(None)
        );
        assert_eq!(
            classify_str("owntracks/dev-phone/phone", r#"{"_type":"status"}"#),
            Ok(None)
        );
        assert_eq!(
            classify_str(
                "owntracks/dev-phone/phone",
                r#"{"_type":"encrypted","data":"…"}"#
            )
            .err(),
            Some(RejectReason::BadField)
        );
        assert_eq!(
            classify_str("owntracks/dev-phone/phone", r#"{"_type":"teleport"}"#).err(),
            Some(RejectReason::UnknownKind)
        );
        assert_eq!(
            classify_str("owntracks/dev-phone/phone", r#"{"lat":1,"lon":2}"#).err(),
            Some(RejectReason::BadField)
        );
        assert_eq!(
            classify_str(
                "owntracks/dev-phone/phone",
                r#"{"_type":"location","lat":95,"lon":2,"tst":1}"#
            )
            .err(),
            Some(RejectReason::OutOfRange)
        );
        assert_eq!(
            classify_str(
                "owntracks/dev-phone/phone",
                r#"{"_type":"location","lat":1,"lon":2,"tst":1900000000}"#
            )
            .err(),
            Some(RejectReason::FutureTimestamp)
        );
        assert_eq!(
            classify_str("owntracks/dev-phone/phone", "{"),
            Err(RejectReason::NotJson)
        );
        assert_eq!(
            classify_str("owntracks/dev-other/phone", r#"{"_type":"lwt"}"#),
            Err(RejectReason::NotAuthorized)
        );
        assert_eq!(
            classify_str("owntracks/dev-phone/a/b/c", r#"{"_type":"lwt"}"#),
            Err(RejectReason::BadTopic)
        );
    }

    #[test]
    fn cmd_subscriptions_name_the_phone() {
        assert_eq!(
            phone_of_cmd_filter("dev-phone", "owntracks/dev-phone/pixel/cmd"),
            Some("pixel")
        );
        assert_eq!(
            phone_of_cmd_filter("dev-phone", "owntracks/dev-phone/+/cmd"),
            None
        );
        assert_eq!(
            phone_of_cmd_filter("dev-phone", "owntracks/dev-other/pixel/cmd"),
            None
        );
        assert_eq!(phone_of_cmd_filter("dev-phone", "owntracks/+/+"), None);
    }

    #[test]
    fn waypoints_list_every_zone_as_a_circle() -> Result<(), serde_json::Error> {
        let zones = vec![
            Zone {
                id: 3,
                resident_id: 4,
                name: "home".into(),
                shape: ZoneShape::Circle(Circle {
                    lat: 35.7,
                    lon: 139.6,
                    radius_m: 200.0,
                }),
            },
            Zone {
                id: 5,
                resident_id: 4,
                name: "park".into(),
                shape: ZoneShape::Polygon(GeoJsonPolygon {
                    kind: "Polygon".into(),
                    coordinates: vec![vec![
                        vec![139.0, 35.0],
                        vec![139.002, 35.0],
                        vec![139.002, 35.002],
                        vec![139.0, 35.002],
                    ]],
                }),
            },
        ];
        let cmd: serde_json::Value = serde_json::from_slice(&set_waypoints(&zones))?;
        assert_eq!(cmd["action"], "setWaypoints");
        let wps = &cmd["waypoints"]["waypoints"];
        assert_eq!(wps[0]["desc"], "home");
        assert_eq!(wps[0]["rad"], 200);
        assert_eq!(wps[0]["tst"], 3);
        // A 0.002° square (about 180 m × 222 m) fits in a circle of about 143 m around its centre.
        let rad = wps[1]["rad"].as_i64().unwrap_or_default();
        assert!((140..=146).contains(&rad), "{rad}");
        Ok(())
    }
}
