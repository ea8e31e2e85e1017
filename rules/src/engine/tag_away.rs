//! The `tag_away` rule (High, off unless turned on): a resident who carries a BLE tag is
//! expected to be heard by one of the home's receivers at night. Not heard by any of
//! `tag_away.receivers` for `after_s` within the local window `[from, until)` opens it; the
//! next sighting by a home receiver resolves it ("seen by {place}").
//!
//! The silence counts from the later of the last home sighting and the moment the rule began
//! to watch (turned on, or staff resolved its alert), and only within the window: last heard
//! at 18:00 with a window from 22:00 and 30 minutes, the alert opens at 22:30. A window
//! shorter than `after_s` never opens it. Sightings elsewhere (a station, a volunteer's
//! phone) do not count as home; they are the geofence rule's.

use chrono::{DateTime, Utc};
use mimamori_protocol::settings::{LocalTime, TagAwaySettings};
use mimamori_protocol::{AlertKind, Severity};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{later, secs, Decision, Out, Resident};
use crate::clock;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct TagAwayState {
    /// Since when the rule watches; `None` while it is off.
    #[serde(with = "crate::stamp::option")]
    watch_since: Option<DateTime<Utc>>,
    /// The newest sighting by a home receiver.
    #[serde(with = "crate::stamp::option")]
    home_seen_at: Option<DateTime<Utc>>,
    /// The tag device that home receiver heard.
    tag: Option<String>,
    open: bool,
}

/// The window's local times, parsed once.
pub(super) fn window(s: &TagAwaySettings) -> (LocalTime, LocalTime) {
    let d = TagAwaySettings::default();
    let parse = |v: &str, fallback: &str| {
        LocalTime::parse(v)
            .or_else(|| LocalTime::parse(fallback))
            .unwrap_or(LocalTime { hour: 0, minute: 0 })
    };
    (parse(&s.from, &d.from), parse(&s.until, &d.until))
}

impl Resident {
    fn tag_away_settings(&self) -> &TagAwaySettings {
        &self.c.settings().tag_away
    }

    /// When the silence at home reaches `after_s` within a window, if the rule watches.
    pub(super) fn tag_away_deadline(&self) -> Option<DateTime<Utc>> {
        let st = &self.state.tag_away;
        let s = self.tag_away_settings();
        if st.open || !s.enabled {
            return None;
        }
        let reference = later(st.home_seen_at, st.watch_since)?;
        let (from, until) = self.c.tag_away;
        let tz = self.c.tz();
        let inside = clock::in_window(
            clock::local_secs(tz, reference),
            clock::secs(from),
            clock::secs(until),
        );
        let start = if inside {
            reference
        } else {
            clock::next_local(tz, reference, from)?
        };
        let due_in = |start: DateTime<Utc>| -> Option<DateTime<Utc>> {
            let due = start.checked_add_signed(secs(s.after_s))?;
            (due < clock::next_local(tz, start, until)?).then_some(due)
        };
        due_in(start).or_else(|| {
            let end = clock::next_local(tz, start, until)?;
            due_in(clock::next_local(tz, end, from)?)
        })
    }

    /// A sighting of the resident's tag by `receiver` at `place`.
    pub(super) fn on_sighting(
        &mut self,
        tag: &str,
        receiver: &str,
        place: &str,
        ts: DateTime<Utc>,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        if !self
            .tag_away_settings()
            .receivers
            .iter()
            .any(|r| r == receiver)
        {
            return;
        }
        let st = &mut self.state.tag_away;
        st.home_seen_at = later(st.home_seen_at, Some(ts));
        st.tag = Some(tag.to_owned());
        if std::mem::take(&mut st.open) {
            self.resolve(out, AlertKind::TagAway, "", now, format!("seen by {place}"));
        }
    }

    /// Starts or stops watching as the settings say; turning the rule off resolves its alert.
    pub(super) fn apply_tag_away_config(&mut self, now: DateTime<Utc>, out: &mut Out) {
        let enabled = self.tag_away_settings().enabled;
        let st = &mut self.state.tag_away;
        match (enabled, st.watch_since) {
            (true, None) => st.watch_since = Some(now),
            (false, Some(_)) => {
                st.watch_since = None;
                if std::mem::take(&mut st.open) {
                    self.resolve(out, AlertKind::TagAway, "", now, "tag away rule turned off");
                }
            }
            _ => {}
        }
    }

    pub(super) fn fire_tag_away(&mut self, now: DateTime<Utc>, out: &mut Out) {
        let Some(due) = self.tag_away_deadline().filter(|t| *t <= now) else {
            return;
        };
        let s = self.tag_away_settings();
        let details = json!({
            "last_seen_home_at": self.state.tag_away.home_seen_at,
            "after_s": s.after_s,
            "receivers": s.receivers,
        });
        let st = &mut self.state.tag_away;
        st.open = true;
        out.push_back(Decision::Open {
            key: self.c.key(AlertKind::TagAway, ""),
            device_id: st.tag.clone(),
            severity: Severity::High,
            at: due,
            details,
        });
    }

    /// Staff accounted for the resident: the silence counts afresh from now.
    pub(super) fn tag_away_closed(&mut self, now: DateTime<Utc>) {
        let st = &mut self.state.tag_away;
        if std::mem::take(&mut st.open) {
            st.watch_since = st.watch_since.map(|_| now);
        }
    }

    pub(super) fn tag_away_open(&self) -> bool {
        self.state.tag_away.open
    }
}
