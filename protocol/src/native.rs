//! The native JSON payloads and their validation.
//!
//! `parse_native` turns the bytes a device published on `watch/v1/{id}/{kind}`
//! into a [`ParsedMessage`] or a [`Rejection`] whose reason is counted and
//! dead-lettered by the hub. It never panics on any input.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::event::Reading;
use crate::topic::MessageKind;

/// Largest payload the hub accepts on a native topic.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// How far in the future a device clock may be before its message is refused.
pub const MAX_FUTURE_SKEW: Duration = Duration::minutes(10);
/// How old a reading's `ts` may be before the message is refused (`stale_timestamp`), unless
/// the hub is set otherwise: a day, so a device that buffered through a night's outage still
/// delivers, while a clock a day behind is caught.
pub const MAX_AGE: Duration = Duration::hours(24);
/// Epoch milliseconds below this (March 1973) are taken for seconds sent by mistake.
const SECONDS_LOOK_BELOW_MS: i64 = 100_000_000_000;

/// Why a message was refused; `as_str` is the `reason` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    NotJson,
    BadField,
    OutOfRange,
    FutureTimestamp,
    TooLarge,
    UnknownKind,
    BadTopic,
    NotAuthorized,
    UnknownDevice,
    TsInSeconds,
    /// The resident has no current consent on record: nothing of theirs is collected.
    NoConsent,
    StaleTimestamp,
}

impl RejectReason {
    pub const ALL: [RejectReason; 12] = [
        RejectReason::NotJson,
        RejectReason::BadField,
        RejectReason::OutOfRange,
        RejectReason::FutureTimestamp,
        RejectReason::TooLarge,
        RejectReason::UnknownKind,
        RejectReason::BadTopic,
        RejectReason::NotAuthorized,
        RejectReason::UnknownDevice,
        RejectReason::TsInSeconds,
        RejectReason::NoConsent,
        RejectReason::StaleTimestamp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotJson => "not_json",
            RejectReason::BadField => "bad_field",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnknownKind => "unknown_kind",
            RejectReason::BadTopic => "bad_topic",
            RejectReason::NotAuthorized => "not_authorized",
            RejectReason::UnknownDevice => "unknown_device",
            RejectReason::TsInSeconds => "ts_in_seconds",
            RejectReason::NoConsent => "no_consent",
            RejectReason::StaleTimestamp => "stale_timestamp",
        }
    }
}

/// A refused message: the counted reason and a sentence for the integrator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason:?}: {detail}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// A message that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedMessage {
    pub ts: DateTime<Utc>,
    pub reading: Reading,
    pub battery: Option<u8>,
}

/// A device timestamp: epoch milliseconds as an integer, or an RFC 3339 string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timestamp(pub DateTime<Utc>);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Utc
                .timestamp_millis_opt(ms)
                .single()
                .map(Timestamp)
                .ok_or_else(|| serde::de::Error::custom("ts: epoch milliseconds out of range")),
            Raw::Text(s) => DateTime::parse_from_rfc3339(&s)
                .map(|t| Timestamp(t.with_timezone(&Utc)))
                .map_err(|e| serde::de::Error::custom(format!("ts: not RFC 3339 ({e})"))),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0.timestamp_millis())
    }
}

#[derive(Debug, Deserialize, Serialize)]
pub struct MotionPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Timestamp>,
    pub motion: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct GpsPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Timestamp>,
    pub lat: f64,
    pub lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct DoorPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Timestamp>,
    pub open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
}

/// The payload of `sos` and `heartbeat`: a time and perhaps a battery level.
#[derive(Debug, Deserialize, Serialize)]
pub struct BarePayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
}

/// The payload of `status`: whether the device is online (a will says `false`).
#[derive(Debug, Deserialize, Serialize)]
pub struct StatusPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Timestamp>,
    pub online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
}

/// Validates one native message. `received_at` stands in for a missing `ts`.
pub fn parse_native(
    kind: &str,
    payload: &[u8],
    received_at: DateTime<Utc>,
) -> Result<ParsedMessage, Rejection> {
    check_size(payload)?;
    let kind = MessageKind::parse(kind).ok_or_else(|| {
        Rejection::new(
            RejectReason::UnknownKind,
            format!("unknown message kind {kind:?}; expected motion, gps, sos, heartbeat, door, status or ok"),
        )
    })?;
    let (ts, reading, battery) = match kind {
        MessageKind::Motion => {
            let p: MotionPayload = decode(payload)?;
            let room = p.room.filter(|r| !r.is_empty());
            (
                p.ts,
                Reading::Motion {
                    motion: p.motion,
                    room,
                },
                p.battery,
            )
        }
        MessageKind::Door => {
            let p: DoorPayload = decode(payload)?;
            (p.ts, Reading::Door { open: p.open }, p.battery)
        }
        MessageKind::Gps => {
            let p: GpsPayload = decode(payload)?;
            let reading = position(p.lat, p.lon, p.accuracy_m)?;
            (p.ts, reading, p.battery)
        }
        MessageKind::Sos => {
            let p: BarePayload = decode(payload)?;
            (p.ts, Reading::Sos, p.battery)
        }
        MessageKind::Heartbeat => {
            let p: BarePayload = decode(payload)?;
            (p.ts, Reading::Heartbeat, p.battery)
        }
        MessageKind::Ok => {
            let p: BarePayload = decode(payload)?;
            (p.ts, Reading::Ok, p.battery)
        }
        MessageKind::Status => {
            let p: StatusPayload = decode(payload)?;
            let reading = if p.online {
                Reading::Heartbeat
            } else {
                Reading::Offline
            };
            (p.ts, reading, p.battery)
        }
    };
    Ok(ParsedMessage {
        ts: check_ts(ts.map(|t| t.0), received_at)?,
        reading,
        battery: battery.map(battery_pct).transpose()?,
    })
}

/// Builds a position reading, refusing coordinates no place on Earth has.
pub fn position(lat: f64, lon: f64, accuracy_m: Option<f64>) -> Result<Reading, Rejection> {
    if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            format!("lat {lat} is not within -90..90"),
        ));
    }
    if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            format!("lon {lon} is not within -180..180"),
        ));
    }
    if let Some(a) = accuracy_m {
        if !a.is_finite() || a < 0.0 {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                format!("accuracy_m {a} must be a non-negative number"),
            ));
        }
    }
    Ok(Reading::Position {
        lat,
        lon,
        accuracy_m,
    })
}

/// A battery level as a whole percentage, refusing values outside 0..=100.
pub fn battery_pct(b: f64) -> Result<u8, Rejection> {
    if !b.is_finite() || !(0.0..=100.0).contains(&b) {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            format!("battery {b} is not within 0..100"),
        ));
    }
    // In range and finite, so the cast cannot truncate.
    Ok(b.round() as u8)
}

/// The reading's time: its own `ts` unless absent, never far in the future, and never a count
/// of seconds read as milliseconds (which would date the reading to January 1970).
pub fn check_ts(
    ts: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, Rejection> {
    let ts = ts.unwrap_or(received_at);
    let ms = ts.timestamp_millis();
    if (0..SECONDS_LOOK_BELOW_MS).contains(&ms) {
        return Err(Rejection::new(
            RejectReason::TsInSeconds,
            format!("ts {ms} looks like seconds since 1970; send epoch milliseconds or RFC 3339"),
        ));
    }
    if ts > received_at + MAX_FUTURE_SKEW {
        return Err(Rejection::new(
            RejectReason::FutureTimestamp,
            format!(
                "ts {} is more than 10 minutes after the hub's clock ({})",
                ts.to_rfc3339(),
                received_at.to_rfc3339()
            ),
        ));
    }
    Ok(ts)
}

/// Refuses a reading taken more than `max_age` before it was received.
pub fn check_age(
    ts: DateTime<Utc>,
    received_at: DateTime<Utc>,
    max_age: Duration,
) -> Result<(), Rejection> {
    if ts < received_at - max_age {
        return Err(Rejection::new(
            RejectReason::StaleTimestamp,
            format!(
                "ts {} is more than {} h before the hub's clock ({}); the device clock is wrong or the reading too old to act on",
                ts.to_rfc3339(),
                max_age.num_hours(),
                received_at.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, Rejection> {
    serde_json::from_slice(payload).map_err(|e| {
        let reason = if e.is_syntax() || e.is_eof() {
            RejectReason::NotJson
        } else {
            RejectReason::BadField
        };
        Rejection::new(reason, e.to_string())
    })
}

/// A payload within [`MAX_PAYLOAD_BYTES`], the bound of every device message.
pub fn check_size(payload: &[u8]) -> Result<(), Rejection> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Rejection::new(
            RejectReason::TooLarge,
            format!(
                "payload is {} bytes, the limit is {MAX_PAYLOAD_BYTES}",
                payload.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 1, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn reason(kind: &str, payload: &str) -> RejectReason {
        match parse_native(kind, payload.as_bytes(), now()) {
            Err(r) => r.reason,
            Ok(m) => panic!("accepted {m:?}"),
        }
    }

    #[test]
    fn accepts_documented_examples() -> Result<(), Rejection> {
        let m = parse_native(
            "motion",
            br#"{"ts":1764032400000,"motion":true,"room":"kitchen"}"#,
            now(),
        )?;
        assert_eq!(
            m.reading,
            Reading::Motion {
                motion: true,
                room: Some("kitchen".into())
            }
        );
        assert_eq!(m.ts.timestamp_millis(), 1764032400000);
        let g = parse_native("gps", br#"{"ts":"2026-11-25T09:59:00+09:00","lat":35.7074,"lon":139.6638,"accuracy_m":12.5,"battery":81}"#, now())?;
        assert_eq!(
            g.reading,
            Reading::Position {
                lat: 35.7074,
                lon: 139.6638,
                accuracy_m: Some(12.5)
            }
        );
        assert_eq!(g.battery, Some(81));
        assert_eq!(
            g.ts,
            Utc.with_ymd_and_hms(2026, 11, 25, 0, 59, 0)
                .single()
                .unwrap_or_default()
        );
        assert_eq!(parse_native("sos", b"{}", now())?.ts, now());
        assert_eq!(
            parse_native("heartbeat", br#"{"battery":55}"#, now())?.battery,
            Some(55)
        );
        assert_eq!(
            parse_native("door", br#"{"open":true}"#, now())?.reading,
            Reading::Door { open: true }
        );
        Ok(())
    }

    #[test]
    fn rejects_each_kind_of_bad_message_with_its_reason() {
        assert_eq!(reason("motion", "not json"), RejectReason::NotJson);
        assert_eq!(
            reason("motion", r#"{"motion":"yes"}"#),
            RejectReason::BadField
        );
        assert_eq!(
            reason("motion", r#"{"room":"kitchen"}"#),
            RejectReason::BadField
        );
        assert_eq!(
            reason("gps", r#"{"lat":91,"lon":0}"#),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason("gps", r#"{"lat":0,"lon":-180.5}"#),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason("gps", r#"{"lat":0,"lon":0,"accuracy_m":-1}"#),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason("heartbeat", r#"{"battery":101}"#),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason("sos", r#"{"ts":1900000000000}"#),
            RejectReason::FutureTimestamp
        );
        assert_eq!(
            reason("sos", r#"{"ts":"yesterday"}"#),
            RejectReason::BadField
        );
        assert_eq!(reason("temperature", "{}"), RejectReason::UnknownKind);
        let big = format!(
            r#"{{"motion":true,"room":"{}"}}"#,
            "x".repeat(MAX_PAYLOAD_BYTES)
        );
        assert_eq!(reason("motion", &big), RejectReason::TooLarge);
    }

    #[test]
    fn nan_cannot_be_smuggled_in() {
        // JSON has no NaN literal; the parser must refuse it rather than read 0.
        assert_eq!(
            reason("gps", r#"{"lat":NaN,"lon":0}"#),
            RejectReason::NotJson
        );
        assert!(position(f64::NAN, 0.0, None).is_err());
        assert!(position(0.0, f64::INFINITY, None).is_err());
    }

    #[test]
    fn ten_minutes_of_clock_skew_is_tolerated() {
        let edge = now() + MAX_FUTURE_SKEW;
        assert_eq!(check_ts(Some(edge), now()), Ok(edge));
        assert!(check_ts(Some(edge + Duration::seconds(1)), now()).is_err());
    }

    #[test]
    fn a_reading_older_than_max_age_is_stale() {
        let day = now() - MAX_AGE;
        assert_eq!(check_age(day, now(), MAX_AGE), Ok(()));
        let stale = check_age(day - Duration::milliseconds(1), now(), MAX_AGE);
        assert_eq!(
            stale.map_err(|r| r.reason),
            Err(RejectReason::StaleTimestamp)
        );
    }

    #[test]
    fn seconds_sent_as_milliseconds_are_refused_with_their_own_reason() {
        assert_eq!(
            reason("motion", r#"{"ts":1764032400,"motion":true}"#),
            RejectReason::TsInSeconds
        );
        assert!(parse_native("motion", br#"{"ts":1764032400000,"motion":true}"#, now()).is_ok());
    }
}
