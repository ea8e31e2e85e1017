//! The OsmAnd adapter: the HTTP reports of Traccar Client, OsmAnd and GPS pendants
//! that speak their protocol (traccar.org/osmand), turned into fixes.
//!
//! Two forms arrive: query or form parameters (`id`, `lat`, `lon` or `location=lat,lon`,
//! `timestamp`, `accuracy` or `hacc`, `batt`, `alarm`, …; OsmAnd, Traccar Client before
//! 9.0 and OsmAnd-protocol pendants) and the JSON of Traccar Client 9
//! (`{"location":{"timestamp","coords":{…},"battery":{"level"},"extras":{"alarm"}},"device_id"}`).
//! `alarm=sos` is what SOS pendants send through this protocol: the report is the fix
//! and an SOS. Traccar's other alarms (`fall`, `lowBattery`, …) have no reading of
//! their own here and are ignored. Parsing is pure; authentication and storing are the
//! HTTP handler's.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use mimamori_protocol::native::{battery_pct, check_ts, position, RejectReason, Rejection};
use mimamori_protocol::{DeviceEvent, Reading};
use serde::Deserialize;

use super::DeviceCtx;

/// One report, before its sender is authenticated.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub device_id: String,
    /// A position, or a heartbeat for a report without a valid fix.
    pub reading: Reading,
    pub ts: Option<DateTime<Utc>>,
    pub battery: Option<u8>,
    /// The report carries `alarm=sos`.
    pub sos: bool,
}

impl Report {
    /// The events of the authenticated device, the time checked against the hub's
    /// clock: the fix (or heartbeat), and after it the SOS when the report raises one,
    /// so that the alert finds the resident's latest position already stored.
    pub fn into_events(
        self,
        device: &DeviceCtx,
        now: DateTime<Utc>,
    ) -> Result<Vec<DeviceEvent>, Rejection> {
        let ts = check_ts(self.ts, now)?;
        let event = |reading| DeviceEvent {
            device_id: device.id.clone(),
            device_kind: device.kind,
            resident_id: device.resident_id,
            ts,
            received_at: now,
            reading,
            battery: self.battery,
        };
        let mut events = Vec::with_capacity(2);
        if !(self.sos && self.reading == Reading::Heartbeat) {
            events.push(event(self.reading.clone()));
        }
        if self.sos {
            events.push(event(Reading::Sos));
        }
        Ok(events)
    }
}

/// Whether an `alarm` value is an SOS (Traccar names it `sos`; case is not kept by every pendant).
fn is_sos(alarm: Option<&str>) -> bool {
    alarm.is_some_and(|a| a.trim().eq_ignore_ascii_case("sos"))
}

/// A report given as query or form parameters; later duplicates win, as in a form.
pub fn from_params(params: &[(String, String)]) -> Result<Report, Rejection> {
    let get = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let device_id = get("id")
        .or_else(|| get("deviceid"))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad("the device id (id or deviceid) is missing"))?
        .to_string();
    let (lat, lon) = match (get("lat"), get("lon"), get("location")) {
        (None, None, Some(location)) => {
            let (lat, lon) = location
                .split_once(',')
                .ok_or_else(|| bad(format!("location must be lat,lon, not {location:?}")))?;
            (Some(number("lat", lat)?), Some(number("lon", lon)?))
        }
        (lat, lon, _) => (
            lat.map(|v| number("lat", v)).transpose()?,
            lon.map(|v| number("lon", v)).transpose()?,
        ),
    };
    let accuracy = match get("accuracy") {
        Some(v) => Some(number("accuracy", v)?),
        None => get("hacc").map(|v| number("hacc", v)).transpose()?,
    };
    let valid = match get("valid") {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(v) => return Err(bad(format!("valid must be true, false, 1 or 0, not {v:?}"))),
    };
    let reading = fix(lat, lon, accuracy, valid)?;
    let ts = get("timestamp").map(timestamp).transpose()?;
    let battery = get("batt")
        .map(|v| number("batt", v))
        .transpose()?
        .map(battery_pct)
        .transpose()?;
    Ok(Report {
        device_id,
        reading,
        ts,
        battery,
        sos: is_sos(get("alarm")),
    })
}

#[derive(Debug, Deserialize)]
struct JsonReport {
    device_id: String,
    location: JsonLocation,
}

#[derive(Debug, Deserialize)]
struct JsonLocation {
    timestamp: Option<String>,
    coords: Option<JsonCoords>,
    battery: Option<JsonBattery>,
    extras: Option<JsonExtras>,
}

#[derive(Debug, Deserialize)]
struct JsonExtras {
    alarm: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JsonCoords {
    latitude: f64,
    longitude: f64,
    accuracy: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct JsonBattery {
    /// 0 to 1; -1 when the phone does not know.
    level: Option<f64>,
}

/// A report in Traccar Client 9's JSON form.
pub fn from_json(body: &[u8]) -> Result<Report, Rejection> {
    let r: JsonReport = serde_json::from_slice(body).map_err(|e| {
        let reason = if e.is_syntax() || e.is_eof() {
            RejectReason::NotJson
        } else {
            RejectReason::BadField
        };
        Rejection::new(reason, e.to_string())
    })?;
    if r.device_id.is_empty() {
        return Err(bad("device_id is empty"));
    }
    let (lat, lon, accuracy) = match r.location.coords {
        Some(c) => (Some(c.latitude), Some(c.longitude), c.accuracy),
        None => (None, None, None),
    };
    let battery = r
        .location
        .battery
        .and_then(|b| b.level)
        .filter(|l| *l >= 0.0)
        .map(|l| battery_pct(l * 100.0))
        .transpose()?;
    Ok(Report {
        device_id: r.device_id,
        reading: fix(lat, lon, accuracy, true)?,
        ts: r.location.timestamp.as_deref().map(timestamp).transpose()?,
        battery,
        sos: is_sos(r.location.extras.and_then(|e| e.alarm).as_deref()),
    })
}

/// A position from both coordinates, or a heartbeat when there is none or the
/// client marked it invalid; one coordinate without the other is an error.
fn fix(
    lat: Option<f64>,
    lon: Option<f64>,
    accuracy: Option<f64>,
    valid: bool,
) -> Result<Reading, Rejection> {
    match (lat, lon) {
        (Some(lat), Some(lon)) if valid => position(lat, lon, accuracy),
        (Some(_), Some(_)) | (None, None) => Ok(Reading::Heartbeat),
        _ => Err(bad("lat and lon come together: one of them is missing")),
    }
}

/// Epoch seconds (milliseconds from 2^31 on, as Traccar reads them), RFC 3339, or
/// `yyyy-MM-dd HH:mm:ss` in UTC.
fn timestamp(v: &str) -> Result<DateTime<Utc>, Rejection> {
    let out_of_range = || {
        Rejection::new(
            RejectReason::OutOfRange,
            format!("timestamp {v} is not a time"),
        )
    };
    if let Ok(n) = v.parse::<i64>() {
        let t = if n < i64::from(i32::MAX) {
            Utc.timestamp_opt(n, 0).single()
        } else {
            Utc.timestamp_millis_opt(n).single()
        };
        return t.ok_or_else(out_of_range);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc())
        .map_err(|_| {
            bad(format!(
                "timestamp {v:?} is neither epoch seconds nor an ISO 8601 time"
            ))
        })
}

fn number(name: &str, v: &str) -> Result<f64, Rejection> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| bad(format!("{name} must be a number, not {v:?}")))
}

fn bad(detail: impl Into<String>) -> Rejection {
    Rejection::new(RejectReason::BadField, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn traccar_client_query_is_a_fix() -> Result<(), Rejection> {
        // The parameters Traccar Client (Android, before 9.0) sends, per
        // traccar-client-android issue #459 as quoted on traccar.org/forums/topic/units-of-speed-of-accuracy-in-osmand-url:
        // id, timestamp, lat, lon, speed, bearing, altitude, accuracy, batt.
        let r = from_params(&params("id=dev-pendant&timestamp=1764032400&lat=35.7074&lon=139.6638&speed=0.0&bearing=0.0&altitude=40.0&accuracy=12.0&batt=81.0"))?;
        assert_eq!(r.device_id, "dev-pendant");
        assert_eq!(
            r.reading,
            Reading::Position {
                lat: 35.7074,
                lon: 139.6638,
                accuracy_m: Some(12.0)
            }
        );
        assert_eq!(r.ts.map(|t| t.timestamp()), Some(1_764_032_400));
        assert_eq!(r.battery, Some(81));
        Ok(())
    }

    #[test]
    fn traccar_client_9_json_is_a_fix() -> Result<(), Rejection> {
        // The JSON form documented on traccar.org/osmand ("Traccar Client, starting from version 9.0.0").
        let body = br#"{"location":{"timestamp":"2025-11-25T01:00:00.000Z","coords":{"latitude":35.7074,"longitude":139.6638,"accuracy":12,"speed":0,"heading":0,"altitude":40},"is_moving":false,"odometer":0,"event":"motionchange","battery":{"level":0.81,"is_charging":false},"activity":{"type":"still"},"extras":{}},"device_id":"dev-pendant"}"#;
        let r = from_json(body)?;
        assert_eq!(r.device_id, "dev-pendant");
        assert_eq!(
            r.reading,
            Reading::Position {
                lat: 35.7074,
                lon: 139.6638,
                accuracy_m: Some(12.0)
            }
        );
        assert_eq!(r.battery, Some(81));
        assert_eq!(
            r.ts.map(|t| t.to_rfc3339()),
            Some("2025-11-25T01:00:00+00:00".into())
        );
        Ok(())
    }

    #[test]
    fn an_sos_alarm_is_the_fix_and_an_sos() -> Result<(), Rejection> {
        let dev = DeviceCtx {
            id: "d".into(),
            resident_id: 1,
            kind: mimamori_protocol::DeviceKind::Gps,
        };
        let now = Utc::now();
        let kinds = |r: Report| -> Result<Vec<&'static str>, Rejection> {
            Ok(r.into_events(&dev, now)?
                .iter()
                .map(|e| e.reading.kind_str())
                .collect())
        };
        // A pendant's report: position as location=lat,lon, accuracy as hacc.
        let r = from_params(&params("id=d&location=35.7074,139.6638&hacc=25&alarm=sos"))?;
        assert_eq!(
            r.reading,
            Reading::Position {
                lat: 35.7074,
                lon: 139.6638,
                accuracy_m: Some(25.0)
            }
        );
        assert_eq!(kinds(r)?, ["gps", "sos"]);
        assert_eq!(kinds(from_params(&params("id=d&alarm=SOS"))?)?, ["sos"]);
        assert_eq!(
            kinds(from_params(&params("id=d&lat=1&lon=2&alarm=lowBattery"))?)?,
            ["gps"]
        );
        let json = br#"{"location":{"coords":{"latitude":35.7,"longitude":139.6},"extras":{"alarm":"sos"}},"device_id":"d"}"#;
        assert_eq!(kinds(from_json(json)?)?, ["gps", "sos"]);
        assert_eq!(
            from_params(&params("id=d&location=35.7"))
                .map_err(|r| r.reason)
                .err(),
            Some(RejectReason::BadField)
        );
        Ok(())
    }

    #[test]
    fn time_forms_and_heartbeats() -> Result<(), Rejection> {
        assert_eq!(timestamp("1764032400000")?.timestamp(), 1_764_032_400);
        assert_eq!(timestamp("2025-11-25 01:00:00")?.timestamp(), 1_764_032_400);
        assert_eq!(
            from_params(&params("deviceid=d&valid=false&lat=1&lon=2"))?.reading,
            Reading::Heartbeat
        );
        assert_eq!(
            from_params(&params("id=d&batt=50"))?.reading,
            Reading::Heartbeat
        );
        Ok(())
    }

    #[test]
    fn bad_reports_say_why() {
        let reason = |q: &str| from_params(&params(q)).map_err(|r| r.reason).err();
        assert_eq!(reason("lat=1&lon=2"), Some(RejectReason::BadField));
        assert_eq!(reason("id=d&lat=1"), Some(RejectReason::BadField));
        assert_eq!(reason("id=d&lat=abc&lon=2"), Some(RejectReason::BadField));
        assert_eq!(reason("id=d&lat=91&lon=2"), Some(RejectReason::OutOfRange));
        assert_eq!(
            reason("id=d&lat=1&lon=2&batt=140"),
            Some(RejectReason::OutOfRange)
        );
        assert_eq!(
            reason("id=d&lat=1&lon=2&timestamp=soon"),
            Some(RejectReason::BadField)
        );
        assert_eq!(reason("id=d&valid=maybe"), Some(RejectReason::BadField));
        assert_eq!(
            from_json(b"{").map_err(|r| r.reason).err(),
            Some(RejectReason::NotJson)
        );
        assert_eq!(
            from_json(br#"{"device_id":"d"}"#)
                .map_err(|r| r.reason)
                .err(),
            Some(RejectReason::BadField)
        );
    }

    #[test]
    fn a_future_time_is_refused_once_authenticated() {
        let r = Report {
            device_id: "d".into(),
            reading: Reading::Heartbeat,
            ts: Utc.timestamp_opt(1_900_000_000, 0).single(),
            battery: None,
            sos: false,
        };
        let dev = DeviceCtx {
            id: "d".into(),
            resident_id: 1,
            kind: mimamori_protocol::DeviceKind::Gps,
        };
        let now = Utc
            .timestamp_opt(1_764_032_400, 0)
            .single()
            .unwrap_or_default();
        assert_eq!(
            r.into_events(&dev, now).map_err(|r| r.reason).err(),
            Some(RejectReason::FutureTimestamp)
        );
    }
}
