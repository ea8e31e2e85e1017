//! The learned rhythm (advisory): which hours of the day the resident is usually active in,
//! learned from the last `rhythm.days` days, and a `rhythm` warning when an hour that had
//! activity on at least `rhythm.share` of those days passes without any today. Silent until
//! `rhythm.min_days` days of data. Hours of the day rather than of the week: with 28 days a
//! weekday hour has only four samples, while the daily habit ("up by 07:30") has 28.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use mimamori_protocol::settings::LocalTime;
use mimamori_protocol::{AlertKind, DeviceKind, Severity};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Out, Resident};
use crate::clock;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct RhythmState {
    /// Local day (days since 0001-01-01) → the hours (bits 0–23) with activity.
    hours: BTreeMap<i32, u32>,
    /// Up to when the hours have been checked.
    #[serde(with = "crate::stamp::option")]
    checked: Option<DateTime<Utc>>,
    pub(super) open: bool,
}

/// How often an hour was active on the learned days.
struct Habit {
    active: usize,
    days: usize,
}

impl Resident {
    fn rhythm_watches(&self) -> bool {
        self.c.settings().rhythm.enabled
            && self
                .c
                .cfg
                .devices
                .iter()
                .any(|d| matches!(d.kind, DeviceKind::Motion | DeviceKind::Door))
    }

    fn local_day_hour(&self, t: DateTime<Utc>) -> Option<(i32, u32)> {
        let local = clock::local(self.c.tz(), t)?;
        Some((local.date().num_days_from_ce(), local.hour()))
    }

    /// Records an activity at `ts` (history delivered late counts too), keeping only the
    /// days the rule learns from.
    pub(super) fn learn(&mut self, ts: DateTime<Utc>) {
        let Some((day, hour)) = self.local_day_hour(ts) else {
            return;
        };
        let keep = i32::try_from(self.c.settings().rhythm.days).unwrap_or(i32::MAX);
        let r = &mut self.state.rhythm;
        *r.hours.entry(day).or_default() |= 1 << hour;
        let newest = r.hours.keys().next_back().copied().unwrap_or(day);
        r.hours.retain(|d, _| *d >= newest.saturating_sub(keep));
    }

    /// How often `hour` was active on the learned days before `today`.
    fn habit(&self, today: i32, hour: u32) -> Habit {
        let keep = i32::try_from(self.c.settings().rhythm.days).unwrap_or(i32::MAX);
        let past = self
            .state
            .rhythm
            .hours
            .range(today.saturating_sub(keep)..today)
            .map(|(_, bits)| *bits);
        let (mut active, mut days) = (0, 0);
        for bits in past {
            days += 1;
            active += usize::from(bits & (1 << hour) != 0);
        }
        Habit { active, days }
    }

    fn usual(&self, h: &Habit) -> bool {
        let s = &self.c.settings().rhythm;
        h.days >= s.min_days as usize && h.active as f64 >= s.share * h.days as f64
    }

    /// The hours of the day (bits 0–23) that were usual on the learned days before `today`,
    /// counted in one pass over the days: this runs after every event.
    fn usual_hours(&self, today: i32) -> u32 {
        let s = &self.c.settings().rhythm;
        let keep = i32::try_from(s.days).unwrap_or(i32::MAX);
        let (mut active, mut days) = ([0usize; 24], 0usize);
        for bits in self
            .state
            .rhythm
            .hours
            .range(today.saturating_sub(keep)..today)
            .map(|(_, bits)| *bits)
        {
            days += 1;
            for (hour, count) in active.iter_mut().enumerate() {
                *count += usize::from(bits & (1 << hour) != 0);
            }
        }
        (0..24u32)
            .filter(|h| {
                self.usual(&Habit {
                    active: active[*h as usize],
                    days,
                })
            })
            .fold(0, |mask, h| mask | 1 << h)
    }

    /// The end of the next usual hour after the last check.
    pub(super) fn rhythm_deadline(&self) -> Option<DateTime<Utc>> {
        let r = &self.state.rhythm;
        if !self.rhythm_watches() || r.open || self.paused() || self.is_out() {
            return None;
        }
        let from = r.checked?;
        // The habit as of the newest day known: the state cannot know today otherwise.
        let (checked_day, checked_hour) = self.local_day_hour(from)?;
        let newest = r.hours.keys().next_back().copied().unwrap_or(checked_day);
        let usual = self.usual_hours(checked_day.max(newest));
        // Hours in the order their ends follow `from` on the local clock, starting with the
        // hour `from` is in; the first two usual ones are enough even where a change of UTC
        // offset makes a local hour's end come early or late.
        (0..24)
            .map(|k| (checked_hour + k) % 24)
            .filter(|h| usual & (1 << h) != 0)
            .take(2)
            .filter_map(|h| {
                let end = LocalTime {
                    hour: u8::try_from((h + 1) % 24).ok()?,
                    minute: 0,
                };
                clock::next_local(self.c.tz(), from, end)
            })
            .min()
    }

    /// Starts the clock of the checks (at configuration) if it has none.
    pub(super) fn start_rhythm(&mut self, now: DateTime<Utc>) {
        self.state.rhythm.checked.get_or_insert(now);
    }

    /// Checks the hour that just ended; an hour that ended long ago (the hub was down, a
    /// pause) is only marked checked.
    pub(super) fn fire_rhythm(&mut self, now: DateTime<Utc>, out: &mut Out) {
        let Some(due) = self.rhythm_deadline().filter(|t| *t <= now) else {
            return;
        };
        self.state.rhythm.checked = Some(now);
        if now - due >= Duration::hours(1) {
            return;
        }
        let Some((day, hour)) = self.local_day_hour(due - Duration::seconds(1)) else {
            return;
        };
        let habit = self.habit(day, hour);
        let seen = self
            .state
            .rhythm
            .hours
            .get(&day)
            .is_some_and(|bits| bits & (1 << hour) != 0);
        if seen || !self.usual(&habit) {
            return;
        }
        self.state.rhythm.open = true;
        let reason = format!(
            "usually active between {hour:02}:00 and {:02}:00 — {} of {} days — nothing today",
            (hour + 1) % 24,
            habit.active,
            habit.days
        );
        let details = json!({
            "hour": format!("{hour:02}:00"),
            "usual_days": habit.active,
            "of_days": habit.days,
            "reason": reason,
        });
        self.open(out, AlertKind::Rhythm, "", Severity::Warning, due, details);
    }

    /// Any activity ends a rhythm warning; the hours before it are past checking (a
    /// warning's quiet hours are not raised again one by one once it ends).
    pub(super) fn rhythm_activity(&mut self, reason: &str, now: DateTime<Utc>, out: &mut Out) {
        let r = &mut self.state.rhythm;
        r.checked = Some(r.checked.map_or(now, |c| c.max(now)));
        if std::mem::take(&mut self.state.rhythm.open) {
            self.resolve(out, AlertKind::Rhythm, "", now, reason.to_owned());
        }
    }
}
