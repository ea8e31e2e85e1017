//! Per-resident rule settings, with the defaults documented in `docs/rules.md`.
//!
//! Every field has a default, so a resident created with no settings is watched
//! sensibly, and a PATCH may name only the fields it changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alert::AlertKind;
use crate::event::DeviceKind;

/// All rule settings of one resident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSettings {
    pub inactivity: InactivitySettings,
    pub geofence: GeofenceSettings,
    pub offline: OfflineSettings,
    pub dwell: DwellSettings,
    pub night_exit: NightExitSettings,
    pub tag_away: TagAwaySettings,
    pub away: AwaySettings,
    pub check: CheckSettings,
    pub rhythm: RhythmSettings,
    /// Below this battery percentage a `low_battery` alert opens; it resolves above it + 5.
    pub low_battery_pct: u8,
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            inactivity: InactivitySettings::default(),
            geofence: GeofenceSettings::default(),
            offline: OfflineSettings::default(),
            dwell: DwellSettings::default(),
            night_exit: NightExitSettings::default(),
            tag_away: TagAwaySettings::default(),
            away: AwaySettings::default(),
            check: CheckSettings::default(),
            rhythm: RhythmSettings::default(),
            low_battery_pct: 15,
        }
    }
}

/// The inactivity rule and the morning check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InactivitySettings {
    pub enabled: bool,
    /// Longest allowed stillness while it is day at the resident's home.
    pub day_threshold_s: u64,
    /// Longest allowed stillness while it is night.
    pub night_threshold_s: u64,
    /// Local time ("HH:MM") at which day starts.
    pub day_starts: String,
    /// Local time ("HH:MM") at which night starts.
    pub night_starts: String,
    /// Local time ("HH:MM") by which some activity must have been seen since `day_starts`.
    pub morning_deadline: Option<String>,
    /// Pause the inactivity rule while the resident is confirmed outside every safe zone.
    pub pause_when_away: bool,
    /// Rooms a resident sleeps in. Once a sensor in one of them is known, the night threshold
    /// applies only while the last activity was in one; elsewhere the day threshold runs on.
    pub sleep_rooms: Vec<String>,
}

impl Default for InactivitySettings {
    fn default() -> Self {
        InactivitySettings {
            enabled: true,
            day_threshold_s: 3 * 3600,
            night_threshold_s: 12 * 3600,
            day_starts: "06:00".into(),
            night_starts: "22:00".into(),
            morning_deadline: Some("10:00".into()),
            pause_when_away: true,
            sleep_rooms: vec!["bedroom".into()],
        }
    }
}

/// The geofence rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeofenceSettings {
    /// Consecutive outside (or inside) fixes needed to open (or resolve) the alert.
    pub confirm_fixes: u32,
    /// Fixes less accurate than this never count towards a change of state.
    pub max_accuracy_m: f64,
    /// A fix must lie this far inside a zone to count as back inside.
    pub reentry_margin_m: f64,
    /// Local time ("HH:MM") from which an exit is critical rather than high.
    pub night_starts: String,
    /// Local time ("HH:MM") until which an exit is critical.
    pub night_ends: String,
    /// The uncertainty assumed for a fix that gives no `accuracy_m`: unknown is not exact.
    pub unknown_accuracy_m: f64,
    /// While an exit alert is live, a fix whose accuracy is worse than this many times the
    /// alert's current fix does not move the alert's position.
    pub position_worsening_factor: f64,
}

impl Default for GeofenceSettings {
    fn default() -> Self {
        GeofenceSettings {
            confirm_fixes: 2,
            max_accuracy_m: 100.0,
            reentry_margin_m: 50.0,
            night_starts: "18:00".into(),
            night_ends: "06:00".into(),
            unknown_accuracy_m: 50.0,
            position_worsening_factor: 5.0,
        }
    }
}

/// The room dwell rule: too long in one room (a bath, the toilet) with no sign of any other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DwellSettings {
    pub enabled: bool,
    /// Longest continuous stay per room name, in seconds; rooms not named have no limit.
    pub limits_s: BTreeMap<String, u64>,
}

impl Default for DwellSettings {
    fn default() -> Self {
        // Opt-in: silence after a bathroom visit is also what a night's sleep looks like
        // in a home without a sensor in the bedroom, so switched on for everyone it
        // raises a false dwell alert after most night-time visits.
        DwellSettings {
            enabled: false,
            limits_s: [("bathroom".to_owned(), 3600), ("toilet".to_owned(), 1800)]
                .into_iter()
                .collect(),
        }
    }
}

/// The night exit rule, for residents at risk of wandering: off unless turned on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NightExitSettings {
    pub enabled: bool,
    /// Local time ("HH:MM") from which an entrance door opening is watched.
    pub from: String,
    /// Local time ("HH:MM") until which it is watched.
    pub until: String,
    /// No indoor motion this long after the door opened means the resident went out.
    pub confirm_s: u64,
}

impl Default for NightExitSettings {
    fn default() -> Self {
        NightExitSettings {
            enabled: false,
            from: "22:00".into(),
            until: "05:00".into(),
            confirm_s: 180,
        }
    }
}

/// The night-time "tag not seen at home" rule, for residents who carry a BLE tag and have
/// a receiver at home: off unless turned on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TagAwaySettings {
    pub enabled: bool,
    /// The device ids of the receivers at home: only their sightings count as "home".
    pub receivers: Vec<String>,
    /// Local time ("HH:MM") from which the tag is expected to be heard at home.
    pub from: String,
    /// Local time ("HH:MM") until which it is.
    pub until: String,
    /// Not heard by a home receiver for this long within the window raises `tag_away`.
    pub after_s: u64,
}

impl Default for TagAwaySettings {
    fn default() -> Self {
        TagAwaySettings {
            enabled: false,
            receivers: Vec::new(),
            from: "22:00".into(),
            until: "06:00".into(),
            after_s: 1800,
        }
    }
}

/// Out through the entrance door: the door opening with no indoor motion after it means the
/// resident went out. Needs a door device marked `"role": "entrance"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwaySettings {
    pub enabled: bool,
    /// No indoor motion this long after the entrance door opened means the resident is out.
    pub confirm_s: u64,
    /// Out longer than this opens `away_too_long`.
    pub max_s: u64,
}

impl Default for AwaySettings {
    fn default() -> Self {
        AwaySettings {
            enabled: true,
            confirm_s: 600,
            max_s: 12 * 3600,
        }
    }
}

/// Most home receivers one resident's rule names.
pub const MAX_HOME_RECEIVERS: usize = 10;
/// The resident check: chosen alerts first ask the resident "are you OK?" through their
/// devices, and reach staff only without an answer. Off unless turned on: it needs a
/// device that can ask (a voice or screen device, a pendant with a button to answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckSettings {
    pub enabled: bool,
    /// The kinds that ask first.
    pub kinds: Vec<AlertKind>,
    /// How long the resident has to answer.
    pub timeout_s: u64,
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            enabled: false,
            kinds: vec![
                AlertKind::Inactivity,
                AlertKind::NoMorningActivity,
                AlertKind::Dwell,
            ],
            timeout_s: 120,
        }
    }
}

/// The learned rhythm: a warning when an hour the resident is nearly always active in
/// passes without activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RhythmSettings {
    pub enabled: bool,
    /// Days learned from.
    pub days: u32,
    /// Days of data needed before the rule says anything.
    pub min_days: u32,
    /// Share of the learned days an hour must have had activity on to be usual.
    pub share: f64,
}

impl Default for RhythmSettings {
    fn default() -> Self {
        RhythmSettings {
            enabled: true,
            days: 28,
            min_days: 14,
            share: 0.9,
        }
    }
}

/// Alerts the resident can answer at home; an SOS, an exit or a device fault never waits.
const CHECKABLE: [AlertKind; 4] = [
    AlertKind::Inactivity,
    AlertKind::NoMorningActivity,
    AlertKind::Dwell,
    AlertKind::AwayTooLong,
];

/// How long each kind of device may stay silent before `device_offline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineSettings {
    pub motion_s: u64,
    pub door_s: u64,
    pub button_s: u64,
    pub gps_s: u64,
    pub gateway_s: u64,
    /// A tag no receiver has seen for this long.
    pub tag_s: u64,
    pub receiver_s: u64,
}

impl Default for OfflineSettings {
    fn default() -> Self {
        OfflineSettings {
            motion_s: 3600,
            door_s: 3600,
            button_s: 6 * 3600,
            gps_s: 900,
            gateway_s: 900,
            tag_s: 24 * 3600,
            receiver_s: 3600,
        }
    }
}

impl OfflineSettings {
    /// The silence allowed for one kind of device, in seconds.
    pub fn after_s(&self, kind: DeviceKind) -> u64 {
        match kind {
            DeviceKind::Motion => self.motion_s,
            DeviceKind::Door => self.door_s,
            DeviceKind::Button => self.button_s,
            DeviceKind::Gps => self.gps_s,
            DeviceKind::Gateway => self.gateway_s,
            DeviceKind::Tag => self.tag_s,
            DeviceKind::Receiver => self.receiver_s,
        }
    }
}

/// A local time of day parsed from "HH:MM".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalTime {
    pub hour: u8,
    pub minute: u8,
}

impl LocalTime {
    pub fn parse(s: &str) -> Option<LocalTime> {
        let (h, m) = s.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (hour, minute) = (h.parse::<u8>().ok()?, m.parse::<u8>().ok()?);
        (hour < 24 && minute < 60).then_some(LocalTime { hour, minute })
    }

    pub fn minutes_of_day(self) -> u32 {
        u32::from(self.hour) * 60 + u32::from(self.minute)
    }
}

impl RuleSettings {
    /// Checks what serde cannot: times of day, non-zero thresholds, sane ranges.
    /// The message names the field, so an API caller knows what to fix.
    pub fn validate(&self) -> Result<(), String> {
        let i = &self.inactivity;
        let times = [
            ("inactivity.day_starts", Some(&i.day_starts)),
            ("inactivity.night_starts", Some(&i.night_starts)),
            ("inactivity.morning_deadline", i.morning_deadline.as_ref()),
            ("geofence.night_starts", Some(&self.geofence.night_starts)),
            ("geofence.night_ends", Some(&self.geofence.night_ends)),
            ("night_exit.from", Some(&self.night_exit.from)),
            ("night_exit.until", Some(&self.night_exit.until)),
            ("tag_away.from", Some(&self.tag_away.from)),
            ("tag_away.until", Some(&self.tag_away.until)),
        ];
        for (name, value) in times {
            if let Some(v) = value {
                if LocalTime::parse(v).is_none() {
                    return Err(format!("{name} must be a time of day \"HH:MM\", got {v:?}"));
                }
            }
        }
        if i.day_starts == i.night_starts {
            return Err("inactivity.day_starts and inactivity.night_starts must differ".into());
        }
        if i.day_threshold_s == 0 || i.night_threshold_s == 0 {
            return Err("inactivity thresholds must be at least 1 second".into());
        }
        let g = &self.geofence;
        if g.confirm_fixes == 0 || g.confirm_fixes > 100 {
            return Err("geofence.confirm_fixes must be between 1 and 100".into());
        }
        if !(g.max_accuracy_m.is_finite() && g.max_accuracy_m > 0.0) {
            return Err("geofence.max_accuracy_m must be a positive number of metres".into());
        }
        if !(g.reentry_margin_m.is_finite() && g.reentry_margin_m >= 0.0) {
            return Err("geofence.reentry_margin_m must be zero or more metres".into());
        }
        if !(g.unknown_accuracy_m.is_finite() && g.unknown_accuracy_m >= 0.0) {
            return Err("geofence.unknown_accuracy_m must be zero or more metres".into());
        }
        if !(g.position_worsening_factor.is_finite() && g.position_worsening_factor >= 1.0) {
            return Err("geofence.position_worsening_factor must be a number of at least 1".into());
        }
        if i.sleep_rooms.len() > 20 || i.sleep_rooms.iter().any(|r| r.is_empty() || r.len() > 64) {
            return Err(
                "inactivity.sleep_rooms must be at most 20 room names of 1 to 64 characters".into(),
            );
        }
        let o = &self.offline;
        if [o.motion_s, o.door_s, o.button_s, o.gps_s, o.gateway_s].contains(&0) {
            return Err("offline thresholds must be at least 1 second".into());
        }
        let d = &self.dwell;
        if d.limits_s.len() > 20
            || d.limits_s
                .iter()
                .any(|(room, s)| room.is_empty() || room.len() > 64 || *s == 0)
        {
            return Err(
                "dwell.limits_s must map at most 20 room names to at least 1 second each".into(),
            );
        }
        if !(1..=3600).contains(&self.night_exit.confirm_s) {
            return Err("night_exit.confirm_s must be between 1 and 3600 seconds".into());
        }
        let t = &self.tag_away;
        if !(60..=12 * 3600).contains(&t.after_s) {
            return Err("tag_away.after_s must be between 60 and 43200 seconds".into());
        }
        if t.receivers.len() > MAX_HOME_RECEIVERS
            || t.receivers.iter().any(|r| r.is_empty() || r.len() > 64)
        {
            return Err(format!(
                "tag_away.receivers must be at most {MAX_HOME_RECEIVERS} device ids of 1 to 64 characters"
            ));
        }
        if t.enabled && t.receivers.is_empty() {
            return Err(
                "tag_away.receivers must name the home's receivers when the rule is enabled".into(),
            );
        }
        if t.from == t.until {
            return Err("tag_away.from and tag_away.until must differ".into());
        }
        let a = &self.away;
        if !(1..=7200).contains(&a.confirm_s) {
            return Err("away.confirm_s must be between 1 and 7200 seconds".into());
        }
        if a.max_s <= a.confirm_s || a.max_s > 7 * 24 * 3600 {
            return Err("away.max_s must be longer than away.confirm_s and at most 7 days".into());
        }
        let c = &self.check;
        if !(1..=1800).contains(&c.timeout_s) {
            return Err("check.timeout_s must be between 1 and 1800 seconds".into());
        }
        if let Some(k) = c.kinds.iter().find(|k| !CHECKABLE.contains(k)) {
            return Err(format!(
                "check.kinds may hold inactivity, no_morning_activity, dwell and away_too_long, not {}: an SOS, an exit or a device fault is never held back",
                k.as_str()
            ));
        }
        let r = &self.rhythm;
        if !(7..=60).contains(&r.days) || r.min_days == 0 || r.min_days > r.days {
            return Err(
                "rhythm.days must be between 7 and 60, rhythm.min_days between 1 and rhythm.days"
                    .into(),
            );
        }
        if !(r.share.is_finite() && r.share > 0.5 && r.share <= 1.0) {
            return Err("rhythm.share must be above 0.5 and at most 1".into());
        }
        if self.low_battery_pct > 95 {
            return Err("low_battery_pct must be between 0 and 95".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_partial_json_fills_the_rest() -> Result<(), serde_json::Error> {
        assert_eq!(RuleSettings::default().validate(), Ok(()));
        let s: RuleSettings = serde_json::from_str(r#"{"inactivity":{"day_threshold_s":60}}"#)?;
        assert_eq!(s.inactivity.day_threshold_s, 60);
        assert_eq!(s.inactivity.night_threshold_s, 12 * 3600);
        assert_eq!(s.geofence.confirm_fixes, 2);
        Ok(())
    }

    #[test]
    fn validation_names_the_bad_field() {
        let mut s = RuleSettings::default();
        s.inactivity.morning_deadline = Some("25:00".into());
        assert!(s
            .validate()
            .err()
            .unwrap_or_default()
            .contains("morning_deadline"));
        let mut s = RuleSettings::default();
        s.geofence.confirm_fixes = 0;
        assert!(s
            .validate()
            .err()
            .unwrap_or_default()
            .contains("confirm_fixes"));
        assert!(serde_json::from_str::<RuleSettings>(r#"{"inactivty":{}}"#).is_err());
    }

    #[test]
    fn local_times_parse_strictly() {
        assert_eq!(
            LocalTime::parse("06:30"),
            Some(LocalTime {
                hour: 6,
                minute: 30
            })
        );
        assert_eq!(LocalTime::parse("6:30"), None);
        assert_eq!(LocalTime::parse("24:00"), None);
        assert_eq!(LocalTime::parse("12:60"), None);
    }
}
