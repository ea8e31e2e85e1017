//! The rule settings the simulator gives its residents for a time compression `speed`.
//!
//! The hub runs on real time. At `--speed X` every threshold in seconds is divided by X
//! (rounded up, at least 1 s), so alerts come after the same *simulated* time as in a real home.
//! Times of day ("HH:MM") cannot be compressed: the hub's day and night windows stay on its real
//! clock while a simulated day passes in minutes, so at X > 1 both inactivity thresholds get the
//! same value — the night's for ordinary life (a simulated night's sleep must fit whatever the
//! hub's clock says), the day's for scenarios that play a daytime situation.
//!
//! Offline thresholds are never compressed below [`OFFLINE_FLOOR_S`]: a device's silence is
//! judged against wall-clock gaps, and on a busy machine the hub or the simulator can stall for
//! most of a second, which a 1 s threshold would report as a device going offline. Tags and
//! receivers keep at least [`BLE_OFFLINE_FLOOR_S`].

use mimamori_protocol::settings::{InactivitySettings, OfflineSettings};
use mimamori_protocol::RuleSettings;
use serde_json::{json, Value};

/// Which inactivity threshold both periods get when time is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stillness {
    /// Ordinary life: a whole night's sleep must pass without an alert.
    Night,
    /// A daytime situation: the day's threshold applies.
    Day,
}

/// Shortest offline threshold a compressed run provisions, in seconds.
pub const OFFLINE_FLOOR_S: u64 = 5;
/// Shortest offline threshold of tags and receivers: the hub counts a tag's sightings at one
/// receiver, and an ESPresense node's telemetry, at most once a minute of its own clock,
/// which no speed compresses.
pub const BLE_OFFLINE_FLOOR_S: u64 = 120;

/// `secs / speed`, rounded up, at least 1 s.
pub fn scale(secs: u64, speed: f64) -> u64 {
    if speed <= 1.0 {
        return secs.max(1);
    }
    ((secs as f64 / speed).ceil() as u64).max(1)
}

/// The partial rule settings (a PATCH body's `rules`) for `speed`, starting from the defaults.
pub fn scaled(speed: f64, stillness: Stillness) -> Value {
    let i = InactivitySettings::default();
    let o = OfflineSettings::default();
    let off = |secs: u64| {
        if speed <= 1.0 {
            secs
        } else {
            scale(secs, speed).max(OFFLINE_FLOOR_S)
        }
    };
    let (day, night) = if speed <= 1.0 {
        (i.day_threshold_s, i.night_threshold_s)
    } else {
        let t = match stillness {
            Stillness::Night => i.night_threshold_s,
            Stillness::Day => i.day_threshold_s,
        };
        (scale(t, speed), scale(t, speed))
    };
    json!({
        "inactivity": {"day_threshold_s": day, "night_threshold_s": night},
        "offline": {
            "motion_s": off(o.motion_s),
            "door_s": off(o.door_s),
            "button_s": off(o.button_s),
            "gps_s": off(o.gps_s),
            "gateway_s": off(o.gateway_s),
            "tag_s": off(o.tag_s).max(BLE_OFFLINE_FLOOR_S.min(o.tag_s)),
            "receiver_s": off(o.receiver_s).max(BLE_OFFLINE_FLOOR_S.min(o.receiver_s)),
        },
    })
}

/// The settings a real installation has: what the simulator restores after a compressed run.
pub fn real_time() -> Value {
    scaled(1.0, Stillness::Night)
}

/// Checks that a partial settings body is one the hub accepts, merged onto the defaults.
pub fn check(partial: &Value) -> Result<(), String> {
    let mut base = serde_json::to_value(RuleSettings::default()).map_err(|e| e.to_string())?;
    merge(&mut base, partial);
    let s: RuleSettings = serde_json::from_value(base).map_err(|e| e.to_string())?;
    s.validate()
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_scale_with_a_floor_of_one_second() {
        assert_eq!(scale(3600, 1440.0), 3);
        assert_eq!(scale(900, 3600.0), 1);
        assert_eq!(scale(10800, 1.0), 10800);
        let v = scaled(600.0, Stillness::Day);
        assert_eq!(v["inactivity"]["day_threshold_s"], 18);
        assert_eq!(v["inactivity"]["night_threshold_s"], 18);
        assert_eq!(v["offline"]["gps_s"], OFFLINE_FLOOR_S);
        assert_eq!(v["offline"]["button_s"], 36);
        assert_eq!(
            scaled(600.0, Stillness::Night)["inactivity"]["day_threshold_s"],
            72
        );
        for speed in [1.0, 60.0, 1440.0, 1e6] {
            assert_eq!(check(&scaled(speed, Stillness::Night)), Ok(()));
        }
        assert_eq!(real_time()["offline"]["motion_s"], 3600);
    }
}
