//! The resident's last working activity sensor going offline: from then on the inactivity
//! rule can see nothing, so its alert opens at once (or, if open, says so), High like any
//! inactivity alert and so climbing the escalation ladder, which a `device_offline`
//! warning never does. It is not raised during a pause or while the resident is out.

use chrono::{DateTime, Utc};
use mimamori_protocol::{AlertKind, DeviceKind, Severity};
use serde_json::json;

use super::{Decision, Out, Resident};

/// What the inactivity alert says while no activity sensor works.
pub const NO_SENSOR: &str = "no working activity sensor";

impl Resident {
    /// The activity sensors (motion, door) that are offline, while every one of them is.
    fn all_sensors_offline(&self) -> Option<Vec<String>> {
        let sensors: Vec<&str> = self
            .c
            .cfg
            .devices
            .iter()
            .filter(|d| matches!(d.kind, DeviceKind::Motion | DeviceKind::Door))
            .map(|d| d.id.as_str())
            .collect();
        let offline = |id: &&str| {
            self.state
                .devices
                .get(*id)
                .is_some_and(|d| d.offline.is_some())
        };
        (!sensors.is_empty() && sensors.iter().all(offline))
            .then(|| sensors.iter().map(|s| (*s).to_owned()).collect())
    }

    fn blind_details(&self, sensors: &[String]) -> serde_json::Value {
        json!({
            "reason": NO_SENSOR,
            "offline_sensors": sensors,
            "last_activity_at": self.state.inactivity.last_activity_at,
        })
    }

    /// Follows a change of device health into the inactivity alert.
    pub(super) fn check_sensors(&mut self, now: DateTime<Utc>, out: &mut Out) {
        let watching = self.c.inactivity_applies() && !self.paused() && !self.is_out();
        let blind = self.all_sensors_offline().filter(|_| watching);
        match (blind, self.state.inactivity.blind) {
            (Some(sensors), false) => {
                self.state.inactivity.blind = true;
                let details = self.blind_details(&sensors);
                let key = self.c.key(AlertKind::Inactivity, "");
                if std::mem::replace(&mut self.state.inactivity.open, true) {
                    out.push_back(Decision::Update {
                        key,
                        device_id: None,
                        severity: Severity::High,
                        at: now,
                        details,
                    });
                } else {
                    self.open(out, AlertKind::Inactivity, "", Severity::High, now, details);
                }
            }
            (None, true) => {
                self.state.inactivity.blind = false;
                let due = self
                    .inactivity_reference()
                    .and_then(|r| self.inactivity_deadline_from(r));
                if self.state.inactivity.open && due.is_none_or(|(t, _)| t > now) {
                    self.state.inactivity.open = false;
                    self.resolve(
                        out,
                        AlertKind::Inactivity,
                        "",
                        now,
                        "an activity sensor counts as working again",
                    );
                }
            }
            _ => {}
        }
    }
}
