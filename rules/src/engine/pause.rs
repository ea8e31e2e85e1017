//! Dated pauses: while one runs, the rules that watch a resident at home (inactivity, the
//! morning check, dwell, night exit, away by the door) and the geofence are quiet; SOS and
//! device health are not. A pause's start and end are deadlines of the engine like any
//! other, so nothing polls: the engine wakes at the boundary, quiets or resumes the rules,
//! and the resumed rules count afresh from the pause's end.

use chrono::{DateTime, Utc};
use mimamori_protocol::pause::Pause;
use mimamori_protocol::AlertKind;
use serde::{Deserialize, Serialize};

use super::{Out, Resident};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct PauseState {
    /// The pause running now, as it was when last looked at.
    pub(super) current: Option<Running>,
    /// Up to when pause boundaries have been looked at: pauses that ended before it are done.
    #[serde(with = "crate::stamp::option")]
    pub(super) synced_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Running {
    pub(super) id: String,
    #[serde(with = "crate::stamp")]
    pub(super) until: DateTime<Utc>,
}

impl Resident {
    pub(super) fn paused(&self) -> bool {
        self.state.pause.current.is_some()
    }

    /// The next instant a pause starts or ends.
    pub(super) fn pause_boundary(&self) -> Option<DateTime<Utc>> {
        if let Some(running) = &self.state.pause.current {
            return Some(running.until);
        }
        let synced = self.state.pause.synced_at;
        self.c
            .cfg
            .pauses
            .iter()
            .filter(|p| synced.is_none_or(|s| p.until > s))
            .map(|p| p.from)
            .min()
    }

    /// Brings the rules in line with the pauses at `now`: quiet inside one, resumed with
    /// fresh timers once it ended (at its end, even if the hub looks later) or was removed.
    pub(super) fn sync_pause(&mut self, now: DateTime<Utc>, out: &mut Out) {
        let covering = self
            .c
            .cfg
            .pauses
            .iter()
            .filter(|p| p.covers(now))
            .max_by_key(|p| p.until)
            .cloned();
        match (self.state.pause.current.take(), covering) {
            (None, Some(p)) => self.enter_pause(&p, now, out),
            (Some(_), Some(p)) => self.state.pause.current = Some(running(&p)),
            (Some(was), None) => self.leave_pause(was.until.min(now)),
            (None, None) => {}
        }
        // Only pauses need it: without any, the state stays as it was (a stale fix changes
        // nothing).
        if !self.c.cfg.pauses.is_empty() {
            self.state.pause.synced_at = Some(now);
        }
    }

    /// Resolves what the pause makes moot: staff know where the resident is.
    fn enter_pause(&mut self, p: &Pause, now: DateTime<Utc>, out: &mut Out) {
        self.state.pause.current = Some(running(p));
        let reason = format!("rules paused ({})", p.reason.as_str());
        let st = &mut self.state;
        let mut ended = Vec::new();
        if std::mem::take(&mut st.inactivity.open) {
            ended.push(AlertKind::Inactivity);
        }
        if st.morning.open_since.take().is_some() {
            ended.push(AlertKind::NoMorningActivity);
        }
        if std::mem::take(&mut st.dwell.open) {
            ended.push(AlertKind::Dwell);
        }
        st.night_exit.door_at = None;
        if std::mem::take(&mut st.night_exit.open) {
            ended.push(AlertKind::NightExit);
        }
        st.geofence.out_streak = 0;
        st.geofence.in_streak = 0;
        if std::mem::take(&mut st.geofence.open) {
            ended.push(AlertKind::GeofenceExit);
        }
        st.away.door_at = None;
        st.away.out_since = None;
        if std::mem::take(&mut st.away.too_long) {
            ended.push(AlertKind::AwayTooLong);
        }
        if std::mem::take(&mut st.rhythm.open) {
            ended.push(AlertKind::Rhythm);
        }
        for kind in ended {
            self.resolve(out, kind, "", now, reason.clone());
        }
    }

    /// Every quiet rule starts counting again from `at`, as on the day it was installed.
    fn leave_pause(&mut self, at: DateTime<Utc>) {
        let st = &mut self.state;
        st.inactivity.watch_since = st.inactivity.watch_since.map(|_| at);
        st.dwell.since = st.dwell.room.as_ref().map(|_| at);
        st.night_exit.door_at = None;
        st.geofence.out_streak = 0;
        st.geofence.in_streak = 0;
        st.away.door_at = None;
        st.away.out_since = None;
    }
}

fn running(p: &Pause) -> Running {
    Running {
        id: p.id.clone(),
        until: p.until,
    }
}
