//! Replaying a resident's stored history: the description (time zone, rules, devices with
//! room and role, geofences, pauses) and the readings, read from the hub's database and
//! run through [`Replayer`] exactly as [`super::replay`] runs a file. Used by `hub replay
//! --database-url` and `POST /residents/{id}/replay`.
//!
//! Only reads. Readings come in pages in time order while the replay runs on a blocking
//! thread beside the reader, so a long history neither sits in memory whole nor holds
//! an async worker of the hub. What the store no longer holds (retention purges old rows)
//! is said in the summary's `history.notes`.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use mimamori_protocol::{DeviceEvent, DeviceKind};
use serde::Serialize;
use serde_json::Value;

use super::{Outcome, Replayer};
use crate::privacy::retention::Retention;
use crate::store::{Store, StoreError, StoredReading};

/// Readings read per page.
const PAGE: i64 = 5_000;
/// Days replayed when no start is given.
pub const DEFAULT_DAYS: i64 = 30;

/// What to replay.
#[derive(Debug, Clone)]
pub struct StoredReplay {
    pub resident_id: i64,
    /// A date (`YYYY-MM-DD`, from the resident's local midnight) or an RFC 3339 time;
    /// `None` is [`DEFAULT_DAYS`] before `until`.
    pub from: Option<String>,
    /// A date (up to the end of that local day) or an RFC 3339 time; `None` is `now`.
    pub until: Option<String>,
    /// Rule settings merged over the resident's, as `PATCH /residents/{id}` takes them.
    pub rules: Option<Value>,
    /// The replay never runs past this.
    pub now: DateTime<Utc>,
    /// The longest range allowed, if there is a limit.
    pub max_days: Option<i64>,
    /// The most readings read, if there is a limit.
    pub max_readings: Option<usize>,
    /// The most change lines listed, if there is a limit (the summary counts them all).
    pub max_changes: Option<usize>,
    /// The store's retention, when known, to say what it has removed.
    pub retention: Option<Retention>,
}

/// What was asked for, and what the store held of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    pub resident_id: i64,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub first_reading: Option<DateTime<Utc>>,
    pub last_reading: Option<DateTime<Utc>>,
    /// Readings read from the store.
    pub readings: usize,
    /// Readings of devices no longer registered, left out (their rooms and kinds are gone).
    pub skipped: usize,
    /// Why the history may be shorter than asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Why a stored replay did not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no resident {0}")]
    UnknownResident(i64),
    /// A bad date or rules patch.
    #[error("{0}")]
    Invalid(String),
    /// A range or history larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("the replay stopped unexpectedly: {0}")]
    Stopped(String),
}

/// Replays the stored history `req` asks for.
pub async fn replay_stored(store: &dyn Store, req: &StoredReplay) -> Result<Outcome, ReplayError> {
    let id = req.resident_id;
    let mut setup = store.resident_setup(id).await.map_err(|e| match e {
        StoreError::NotFound => ReplayError::UnknownResident(id),
        other => ReplayError::Store(other),
    })?;
    let tz: Tz = setup
        .resident
        .timezone
        .parse()
        .unwrap_or(chrono_tz::Asia::Tokyo);
    let (from, until) = range(req, tz)?;
    setup.resident.rules =
        crate::api::residents::merge_rules(&setup.resident.rules, req.rules.as_ref())
            .map_err(|e| ReplayError::Invalid(e.to_string()))?;
    let kinds: HashMap<String, DeviceKind> = setup
        .devices
        .iter()
        .map(|d| (d.id.clone(), d.kind))
        .collect();
    let cfg = crate::pipeline::resident_config(&setup);

    let (pages, mut inbox) = tokio::sync::mpsc::channel::<Vec<DeviceEvent>>(2);
    let keep = req.max_changes.unwrap_or(usize::MAX);
    let worker = tokio::task::spawn_blocking(move || {
        let mut replayer = Replayer::new(cfg).keeping(keep);
        while let Some(events) = inbox.blocking_recv() {
            events.iter().for_each(|ev| replayer.feed(ev));
        }
        replayer.finish(Some(until))
    });
    let mut history = History {
        resident_id: id,
        from,
        until,
        first_reading: None,
        last_reading: None,
        readings: 0,
        skipped: 0,
        notes: Vec::new(),
    };
    let mut after = None;
    loop {
        let page = store
            .readings_between(id, from, until, after, PAGE)
            .await
            .map_err(ReplayError::Store)?;
        let Some(last) = page.last() else { break };
        after = Some((last.ts, last.id));
        history.first_reading = history.first_reading.or(Some(page[0].ts));
        history.last_reading = Some(last.ts);
        history.readings += page.len();
        if let Some(max) = req.max_readings.filter(|max| history.readings > *max) {
            return Err(ReplayError::TooLarge(format!(
                "the range holds more than {max} readings, more than one replay reads: choose a shorter range"
            )));
        }
        let events: Vec<DeviceEvent> = page
            .iter()
            .filter_map(|r| event_of(r, &kinds, id))
            .collect();
        history.skipped += page.len() - events.len();
        let full = page.len() as i64 == PAGE;
        if pages.send(events).await.is_err() || !full {
            break;
        }
    }
    drop(pages);
    let mut outcome = worker
        .await
        .map_err(|e| ReplayError::Stopped(e.to_string()))?;
    history.notes = notes(&history, req.retention.as_ref(), req.now);
    outcome.summary.history = Some(history);
    Ok(outcome)
}

/// The range asked for, checked; `until` never past `now`, rounded up to a whole second
/// so that a reading stored a moment before the request is in it.
fn range(req: &StoredReplay, tz: Tz) -> Result<(DateTime<Utc>, DateTime<Utc>), ReplayError> {
    let whole = req.now.trunc_subsecs(0);
    let now = if whole < req.now {
        whole + Duration::seconds(1)
    } else {
        whole
    };
    let until = match &req.until {
        Some(text) => parse_bound("until", text, tz, true)?.min(now),
        None => now,
    };
    let from = match &req.from {
        Some(text) => parse_bound("from", text, tz, false)?,
        None => until - Duration::days(DEFAULT_DAYS),
    };
    if from >= until {
        return Err(ReplayError::Invalid(format!(
            "from ({from}) must be before until ({until}) and before now"
        )));
    }
    if let Some(max) = req.max_days {
        let days = (until - from).num_seconds() as f64 / 86_400.0;
        if days > max as f64 {
            return Err(ReplayError::TooLarge(format!(
                "the range is {days:.1} days; at most {max} days are replayed at once: choose a shorter range"
            )));
        }
    }
    Ok((from, until))
}

/// A date (local midnight in `tz`; with `end`, the end of that day) or an RFC 3339 time.
pub fn parse_bound(
    name: &str,
    text: &str,
    tz: Tz,
    end: bool,
) -> Result<DateTime<Utc>, ReplayError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        ReplayError::Invalid(format!(
            "{name}: {text:?} is neither a date (YYYY-MM-DD) nor a time (RFC 3339, e.g. 2026-11-01T09:00:00+09:00)"
        ))
    };
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad())?;
    let day = if end {
        day.succ_opt().ok_or_else(bad)?
    } else {
        day
    };
    // A day that starts in a daylight-saving gap starts at the gap's end.
    let midnight = day.and_hms_opt(0, 0, 0).ok_or_else(bad)?;
    (0..=2)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + Duration::hours(h)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(bad)
}

/// The event a stored reading was, arriving at its own `ts`; `None` for a device no longer
/// registered or a row this hub cannot read back.
fn event_of(
    r: &StoredReading,
    kinds: &HashMap<String, DeviceKind>,
    resident_id: i64,
) -> Option<DeviceEvent> {
    Some(DeviceEvent {
        device_id: r.device_id.clone(),
        device_kind: *kinds.get(&r.device_id)?,
        resident_id,
        ts: r.ts,
        received_at: r.ts,
        reading: r.reading()?,
        battery: r.battery,
    })
}

/// What a reader of the summary should know about gaps in the history.
fn notes(h: &History, retention: Option<&Retention>, now: DateTime<Utc>) -> Vec<String> {
    let mut notes = Vec::new();
    let late = h
        .first_reading
        .is_none_or(|first| first - h.from > Duration::days(1));
    match h.first_reading {
        None => notes.push(format!(
            "no readings are stored between {} and {}",
            h.from, h.until
        )),
        Some(first) if late => notes.push(format!(
            "the stored history starts at {first}, {} days after the start asked for",
            (first - h.from).num_days()
        )),
        Some(_) => {}
    }
    let classes = retention.map(|r| {
        [
            ("sensor readings", r.sensors_days),
            ("positions (GPS fixes, BLE sightings)", r.positions_days),
        ]
    });
    match classes {
        Some(classes) => {
            for (what, days) in classes.into_iter().filter(|(_, d)| *d > 0) {
                let cutoff = now - Duration::days(i64::from(days));
                if h.from < cutoff {
                    notes.push(format!(
                        "{what} are kept {days} days (retention): none before {cutoff} was replayed"
                    ));
                }
            }
        }
        None if late => notes.push(
            "retention (docs/privacy.md) may have removed older readings, or the devices started later".into(),
        ),
        None => {}
    }
    if h.skipped > 0 {
        notes.push(format!(
            "{} readings of devices no longer registered were left out",
            h.skipped
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_default()
    }

    fn request(from: Option<&str>, until: Option<&str>) -> StoredReplay {
        StoredReplay {
            resident_id: 7,
            from: from.map(str::to_owned),
            until: until.map(str::to_owned),
            rules: None,
            now: at("2026-12-07T03:00:00Z"),
            max_days: Some(92),
            max_readings: None,
            max_changes: None,
            retention: None,
        }
    }

    #[test]
    fn dates_are_local_days_and_times_are_exact() -> Result<(), ReplayError> {
        let tokyo = chrono_tz::Asia::Tokyo;
        assert_eq!(
            parse_bound("from", "2026-11-01", tokyo, false)?,
            at("2026-10-31T15:00:00Z")
        );
        assert_eq!(
            parse_bound("until", "2026-11-30", tokyo, true)?,
            at("2026-11-30T15:00:00Z")
        );
        assert_eq!(
            parse_bound("from", "2026-11-01T09:00:00+09:00", tokyo, false)?,
            at("2026-11-01T00:00:00Z")
        );
        // New York's clocks went forward at 02:00 on 8 March 2026: that day still starts
        // at its midnight; a day whose midnight is skipped would start at the gap's end.
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            parse_bound("from", "2026-03-08", ny, false)?,
            at("2026-03-08T05:00:00Z")
        );
        let bad = parse_bound("from", "2026-13-01", tokyo, false).map_err(|e| e.to_string());
        assert_eq!(
            bad,
            Err("from: \"2026-13-01\" is neither a date (YYYY-MM-DD) nor a time (RFC 3339, e.g. 2026-11-01T09:00:00+09:00)".into())
        );
        Ok(())
    }

    #[test]
    fn ranges_default_to_the_last_thirty_days_and_stay_bounded() -> Result<(), ReplayError> {
        let tokyo = chrono_tz::Asia::Tokyo;
        let (from, until) = range(&request(None, None), tokyo)?;
        assert_eq!(
            (from, until),
            (at("2026-11-07T03:00:00Z"), at("2026-12-07T03:00:00Z"))
        );
        // An end in the future stops at now.
        let (_, until) = range(&request(Some("2026-12-01"), Some("2027-01-01")), tokyo)?;
        assert_eq!(until, at("2026-12-07T03:00:00Z"));
        let long = range(&request(Some("2026-08-01"), None), tokyo).map_err(|e| e.to_string());
        assert_eq!(
            long,
            Err("the range is 128.5 days; at most 92 days are replayed at once: choose a shorter range".into())
        );
        assert!(matches!(
            range(&request(Some("2026-12-05"), Some("2026-12-01")), tokyo),
            Err(ReplayError::Invalid(_))
        ));
        assert!(matches!(
            range(&request(Some("2026-12-08"), None), tokyo),
            Err(ReplayError::Invalid(_))
        ));
        Ok(())
    }

    fn history(from: &str, first: Option<&str>) -> History {
        History {
            resident_id: 7,
            from: at(from),
            until: at("2026-12-07T03:00:00Z"),
            first_reading: first.map(at),
            last_reading: first.map(at),
            readings: usize::from(first.is_some()),
            skipped: 0,
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_history_shorter_than_asked_says_why_it_may_be() {
        let now = at("2026-12-07T03:00:00Z");
        let whole = history("2026-11-07T00:00:00Z", Some("2026-11-07T00:10:00Z"));
        assert!(notes(&whole, None, now).is_empty());
        let short = history("2026-11-07T00:00:00Z", Some("2026-11-20T00:00:00Z"));
        assert_eq!(
            notes(&short, None, now),
            [
                "the stored history starts at 2026-11-20 00:00:00 UTC, 13 days after the start asked for",
                "retention (docs/privacy.md) may have removed older readings, or the devices started later",
            ]
        );
        let kept = Retention::default();
        let old = history("2026-10-01T00:00:00Z", Some("2026-10-01T00:10:00Z"));
        assert_eq!(
            notes(&old, Some(&kept), now),
            ["positions (GPS fixes, BLE sightings) are kept 30 days (retention): none before 2026-11-07 03:00:00 UTC was replayed"]
        );
        let empty = history("2026-11-08T00:00:00Z", None);
        assert_eq!(
            notes(&empty, Some(&kept), now),
            ["no readings are stored between 2026-11-08 00:00:00 UTC and 2026-12-07 03:00:00 UTC"]
        );
    }
}
