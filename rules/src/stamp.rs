//! How the stored [`crate::ResidentState`] writes its instants: integer nanoseconds since
//! the epoch. The shell stores every changed resident's state with each commit, and
//! formatting RFC 3339 text was a seventh of the hub's instructions per message. Both that
//! and the RFC 3339 text of states stored before are read back, exactly.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Visitor};
use serde::{Deserializer, Serialize, Serializer};

/// An instant as it is written: nanoseconds, or text outside the years 1677–2262.
struct Written<'a>(&'a DateTime<Utc>);

impl Serialize for Written<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.timestamp_nanos_opt() {
            Some(n) => s.serialize_i64(n),
            None => self.0.serialize(s),
        }
    }
}

struct Instant;

impl<'de> Visitor<'de> for Instant {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("nanoseconds since the epoch or an RFC 3339 time")
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(DateTime::from_timestamp_nanos(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        let n = i64::try_from(n).map_err(|_| E::custom("instant out of range"))?;
        self.visit_i64(n)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(E::custom)
    }
}

struct MaybeInstant;

impl<'de> Visitor<'de> for MaybeInstant {
    type Value = Option<DateTime<Utc>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or an instant")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Instant).map(Some)
    }
}

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    Written(t).serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_any(Instant)
}

/// The same for an optional instant.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&Written(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        d.deserialize_option(MaybeInstant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Stamps {
        #[serde(with = "super")]
        at: DateTime<Utc>,
        #[serde(default, with = "option")]
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn instants_round_trip_to_the_nanosecond_and_old_text_still_reads() {
        let at = DateTime::from_timestamp_nanos(1_764_633_600_123_456_789);
        let s = Stamps {
            at,
            maybe: Some(at),
        };
        let json = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"at":1764633600123456789,"maybe":1764633600123456789}"#
        );
        assert_eq!(serde_json::from_str::<Stamps>(&json).ok(), Some(s));
        let old = r#"{"at":"2025-12-02T00:00:00.123456789Z","maybe":null}"#;
        let read = serde_json::from_str::<Stamps>(old).ok();
        assert_eq!(
            read.map(|s| (s.at.timestamp_nanos_opt(), s.maybe)),
            Some((Some(1_764_633_600_123_456_789), None))
        );
        assert_eq!(
            serde_json::from_str::<Stamps>(r#"{"at":"2025-12-02T00:00:00Z"}"#)
                .map(|s| s.maybe)
                .ok(),
            Some(None)
        );
        assert!(serde_json::from_str::<Stamps>(r#"{"at":"yesterday"}"#).is_err());
    }
}
