//! Away by the entrance door, for residents without a tracker: the entrance door (a door
//! device marked `"role": "entrance"`) opening with no indoor motion after it for
//! `away.confirm_s` means the resident went out. While out, the inactivity rules, the
//! morning check and dwell wait; indoor motion or the door again ends it. Out longer than
//! `away.max_s` opens `away_too_long` (High).

use chrono::{DateTime, Utc};
use mimamori_protocol::{AlertKind, DeviceKind, DeviceRole, Reading, Severity};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{secs, Out, Resident, DOOR_PASSING};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct DoorAwayState {
    /// When the entrance door opened with no indoor motion since.
    #[serde(with = "crate::stamp::option")]
    pub(super) door_at: Option<DateTime<Utc>>,
    /// Since when the resident is out: the door's time.
    #[serde(with = "crate::stamp::option")]
    pub(super) out_since: Option<DateTime<Utc>>,
    /// Whether `away_too_long` is open.
    pub(super) too_long: bool,
}

impl Resident {
    /// Whether the resident is out: confirmed outside the safe zones by the tracker, or
    /// out through the entrance door.
    pub(super) fn is_out(&self) -> bool {
        self.away() || self.state.away.out_since.is_some()
    }

    fn door_away_applies(&self) -> bool {
        self.c.settings().away.enabled && self.c.cfg.devices.iter().any(is_marked_entrance)
    }

    fn is_marked_entrance(&self, id: &str) -> bool {
        self.c.device(id).is_some_and(is_marked_entrance)
    }

    /// When the door's exit confirms, or when being out turns too long.
    pub(super) fn away_deadline(&self) -> Option<DateTime<Utc>> {
        let a = &self.state.away;
        let s = &self.c.settings().away;
        if self.paused() || !self.door_away_applies() {
            return None;
        }
        match (a.door_at, a.out_since) {
            (Some(door), _) => door.checked_add_signed(secs(s.confirm_s)),
            (None, Some(since)) if !a.too_long => since.checked_add_signed(secs(s.max_s)),
            _ => None,
        }
    }

    /// Follows the newest activity: the entrance door opening, and indoor motion.
    pub(super) fn track_away(
        &mut self,
        ts: DateTime<Utc>,
        device: &str,
        reading: &Reading,
        room: Option<&str>,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        if self.paused() || !self.door_away_applies() {
            return;
        }
        match reading {
            Reading::Door { open: true } if self.is_marked_entrance(device) => {
                if self.state.away.out_since.is_some() {
                    self.back(now, "back through the entrance door".into(), out);
                } else {
                    self.state.away.door_at = Some(ts);
                }
            }
            Reading::Motion { .. } => {
                let a = &mut self.state.away;
                if a.door_at.is_some_and(|d| ts > d + DOOR_PASSING) {
                    a.door_at = None;
                }
                if a.out_since.is_some() {
                    let at = room.map(|r| format!(" ({r})")).unwrap_or_default();
                    self.back(now, format!("motion indoors{at}"), out);
                }
            }
            _ => {}
        }
    }

    fn back(&mut self, now: DateTime<Utc>, reason: String, out: &mut Out) {
        let a = &mut self.state.away;
        a.out_since = None;
        a.door_at = None;
        if std::mem::take(&mut a.too_long) {
            self.resolve(out, AlertKind::AwayTooLong, "", now, reason);
        }
    }

    /// Confirms an exit whose door is `confirm_s` old, and opens `away_too_long`.
    pub(super) fn fire_away(&mut self, now: DateTime<Utc>, out: &mut Out) {
        if self.paused() || !self.door_away_applies() {
            return;
        }
        let s = self.c.settings().away.clone();
        let a = &mut self.state.away;
        if let Some(door) = a.door_at.filter(|d| {
            d.checked_add_signed(secs(s.confirm_s))
                .is_some_and(|t| t <= now)
        }) {
            a.door_at = None;
            a.out_since = Some(door);
        }
        let Some(since) = a.out_since.filter(|_| !a.too_long) else {
            return;
        };
        let Some(due) = since
            .checked_add_signed(secs(s.max_s))
            .filter(|t| *t <= now)
        else {
            return;
        };
        a.too_long = true;
        let details = json!({ "out_since": since, "max_s": s.max_s });
        self.open(
            out,
            AlertKind::AwayTooLong,
            "",
            Severity::High,
            due,
            details,
        );
    }

    /// Forgets being out when the rule no longer applies (turned off, entrance unmarked).
    pub(super) fn apply_away_config(&mut self, now: DateTime<Utc>, out: &mut Out) {
        if self.door_away_applies() {
            return;
        }
        let a = &mut self.state.away;
        a.door_at = None;
        a.out_since = None;
        if std::mem::take(&mut a.too_long) {
            self.resolve(out, AlertKind::AwayTooLong, "", now, "away rule turned off");
        }
    }
}

fn is_marked_entrance(d: &super::DeviceInfo) -> bool {
    d.kind == DeviceKind::Door && d.role == Some(DeviceRole::Entrance)
}
