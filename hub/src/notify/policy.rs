//! Who is told what, and when: the pure decisions of family notification.
//!
//! Nothing here reads the clock or touches I/O; the alert core calls [`wants`] and
//! [`quiet_until`] as its ladder tells each tier, and the delivery worker calls
//! [`after_attempt`] after each try. Every time is passed in.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use mimamori_protocol::contact::Contact;
use mimamori_protocol::{Alert, Severity};
use serde::{Deserialize, Serialize};

/// The change of an alert (or the daily tick) a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeEvent {
    Opened,
    Escalated,
    /// Still nobody acknowledged: everyone told so far hears again.
    Reminder,
    Resolved,
    DailySummary,
}

impl NoticeEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::Opened => "opened",
            NoticeEvent::Escalated => "escalated",
            NoticeEvent::Reminder => "reminder",
            NoticeEvent::Resolved => "resolved",
            NoticeEvent::DailySummary => "daily_summary",
        }
    }
}

/// A daily span of local time, possibly across midnight (`22:00-07:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    /// Parses `"HH:MM-HH:MM"`; start and end must differ.
    pub fn parse(s: &str) -> Option<QuietHours> {
        let (a, b) = s.split_once('-')?;
        let q = QuietHours {
            start: parse_hhmm(a.trim())?,
            end: parse_hhmm(b.trim())?,
        };
        (q.start != q.end).then_some(q)
    }

    /// Whether `t` falls inside: the start is included, the end is not.
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// Parses a 24-hour `"HH:MM"` or `"HH:MM:SS"` with two digits each.
pub fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    let mut parts = s.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next());
    if h.len() != 2 || m.len() != 2 || sec.is_some_and(|s| s.len() != 2) || parts.next().is_some() {
        return None;
    }
    let sec = match sec {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, sec)
}

/// Whether `contact` wants to hear about `alert` at all: its kinds and least severity.
/// The tier is the ladder's business.
pub fn wants(contact: &Contact, alert: &Alert) -> bool {
    let right_kind = contact.kinds.is_empty() || contact.kinds.contains(&alert.kind);
    right_kind && alert.severity >= contact.min_severity
}

/// When a notice about `alert` to `contact` may go out, if not at `now`: quiet hours
/// hold back everything but critical alerts until they end — a low battery can wait for
/// the morning, a fall cannot.
pub fn quiet_until(
    contact: &Contact,
    alert: &Alert,
    now: DateTime<Utc>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    if alert.severity == Severity::Critical {
        return None;
    }
    let q = contact.quiet_hours.as_deref().and_then(QuietHours::parse)?;
    let local = now.with_timezone(&tz);
    if !q.contains(local.time()) {
        return None;
    }
    let mut date = local.date_naive();
    if local.time() >= q.end {
        date = date.succ_opt()?;
    }
    // A time skipped by a DST jump falls back to the first valid instant after it.
    let end = date.and_time(q.end);
    tz.from_local_datetime(&end)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(end + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}

/// The resident's time zone; a name the hub cannot read (refused at entry, so only a
/// hand-edited database) falls back to Japan's, where the hub is used.
pub fn zone_of(name: &str) -> Tz {
    name.parse().unwrap_or(chrono_tz::Asia::Tokyo)
}

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait after the first failure; doubled after each further one.
    pub base: Duration,
    /// Longest wait between two attempts.
    pub cap: Duration,
    /// Time after the notification was due at which the hub stops trying.
    pub give_up_after: Duration,
}

/// The wait after the `attempts`-th failed attempt: base, 2×base, 4×base, … up to the cap.
pub fn backoff(attempts: i64, base: Duration, cap: Duration) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let factor = 1_i32.checked_shl(doublings).unwrap_or(i32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// The result of one attempt, as the channel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Worth trying again (network error, timeout, error status).
    Transient,
    /// Will never work as configured (no SMTP relay, unusable address).
    Permanent,
}

/// Decides the next step after attempt number `attempts` of a delivery created at `created_at`.
/// `not_before` is the earliest time the receiver asked to be tried again (LINE's 429
/// with `Retry-After`): the retry waits for it even when the backoff is shorter, and a
/// wait beyond the give-up time gives up.
pub fn after_attempt(
    outcome: Outcome,
    attempts: i64,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
    retry: &Retry,
    not_before: Option<DateTime<Utc>>,
) -> Next {
    match outcome {
        Outcome::Ok => Next::Delivered,
        Outcome::Permanent => Next::GiveUp,
        Outcome::Transient => {
            let backed_off = now + backoff(attempts, retry.base, retry.cap);
            let at = not_before.map_or(backed_off, |t| t.max(backed_off));
            if at - created_at > retry.give_up_after {
                Next::GiveUp
            } else {
                Next::RetryAt(at)
            }
        }
    }
}

/// The local date whose summary is due at `now`, if one is: the chosen time has passed
/// today, and the contact already existed then (so creating one does not send at once).
pub fn summary_due(
    daily_at: NaiveTime,
    tz: Tz,
    contact_created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<NaiveDate> {
    let date = now.with_timezone(&tz).date_naive();
    let due = summary_instant(date, daily_at, tz)?;
    (now >= due && contact_created < due).then_some(date)
}

/// The first instant after `now` at which [`summary_due`] names a date it did not name
/// at `now`: today's chosen time if still ahead, else tomorrow's.
pub fn next_summary_at(daily_at: NaiveTime, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let today = now.with_timezone(&tz).date_naive();
    let due = summary_instant(today, daily_at, tz)?;
    if due > now {
        return Some(due);
    }
    summary_instant(today.succ_opt()?, daily_at, tz)
}

/// `daily_at` on the local `date`, as an instant.
fn summary_instant(date: NaiveDate, daily_at: NaiveTime, tz: Tz) -> Option<DateTime<Utc>> {
    let due_local = date.and_time(daily_at);
    // A time skipped by a DST jump falls back to the first valid instant after it.
    let due = tz.from_local_datetime(&due_local).earliest().or_else(|| {
        tz.from_local_datetime(&(due_local + Duration::hours(1)))
            .earliest()
    })?;
    Some(due.with_timezone(&Utc))
}

/// The UTC span of a local calendar day in `tz`.
pub fn local_day(date: NaiveDate, tz: Tz) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let start = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_time(NaiveTime::MIN))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    };
    Some((start(date)?, start(date.succ_opt()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimamori_protocol::contact::{Channel, Language};
    use mimamori_protocol::{AlertKind, AlertState};

    fn contact(tier: u8, kinds: Vec<AlertKind>, min: Severity, quiet: Option<&str>) -> Contact {
        Contact {
            id: 1,
            resident_id: 1,
            name: "Sato Yuki".into(),
            relation: "family".into(),
            tier,
            channel: Channel::Email,
            address: "yuki@example.org".into(),
            kinds,
            min_severity: min,
            quiet_hours: quiet.map(str::to_string),
            language: Language::Ja,
            daily_summary_at: None,
            created_at: DateTime::UNIX_EPOCH,
        }
    }

    fn alert(kind: AlertKind, severity: Severity) -> Alert {
        Alert {
            id: 7,
            resident_id: 1,
            device_id: None,
            kind,
            severity,
            state: AlertState::Open,
            escalated: false,
            opened_at: DateTime::UNIX_EPOCH,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            resolution: None,
            details: serde_json::json!({}),
            updated_at: DateTime::UNIX_EPOCH,
            assigned_to: None,
            snoozed_until: None,
            tier: 0,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
    }

    #[test]
    fn quiet_hours_across_midnight_hold_all_but_critical_until_they_end() {
        let c = contact(1, vec![], Severity::Warning, Some("22:00-07:00"));
        let battery = alert(AlertKind::LowBattery, Severity::Warning);
        let sos = alert(AlertKind::Sos, Severity::Critical);
        let tokyo = chrono_tz::Asia::Tokyo;
        // 23:30 and 06:59 Tokyo are held until 07:00 Tokyo (22:00 UTC).
        let morning = Some(utc("2025-01-15T22:00:00Z"));
        assert_eq!(
            quiet_until(&c, &battery, utc("2025-01-15T14:30:00Z"), tokyo),
            morning
        );
        assert_eq!(
            quiet_until(&c, &battery, utc("2025-01-15T21:59:00Z"), tokyo),
            morning
        );
        assert_eq!(
            quiet_until(&c, &battery, utc("2025-01-15T22:00:00Z"), tokyo),
            None
        );
        assert_eq!(
            quiet_until(&c, &sos, utc("2025-01-15T14:30:00Z"), tokyo),
            None
        );
    }

    #[test]
    fn quiet_hours_parse_strictly() {
        assert_eq!(
            QuietHours::parse("09:00-17:30"),
            Some(QuietHours {
                start: hm(9, 0),
                end: hm(17, 30)
            })
        );
        for bad in [
            "9:00-17:00",
            "09:00",
            "09:00-09:00",
            "25:00-07:00",
            "22:00-07:60",
        ] {
            assert_eq!(QuietHours::parse(bad), None, "{bad}");
        }
        let day = QuietHours::parse("09:00-17:00");
        assert!(day.is_some_and(|q| q.contains(hm(9, 0)) && !q.contains(hm(17, 0))));
    }

    #[test]
    fn kinds_and_severity_filter() {
        let only_sos = contact(1, vec![AlertKind::Sos], Severity::Warning, None);
        assert!(wants(&only_sos, &alert(AlertKind::Sos, Severity::Critical)));
        assert!(!wants(
            &only_sos,
            &alert(AlertKind::Inactivity, Severity::High)
        ));
        let high_up = contact(1, vec![], Severity::High, None);
        assert!(!wants(
            &high_up,
            &alert(AlertKind::LowBattery, Severity::Warning)
        ));
        assert!(wants(
            &high_up,
            &alert(AlertKind::Inactivity, Severity::High)
        ));
    }

    #[test]
    fn quiet_hours_are_judged_in_the_residents_zone() {
        let c = contact(1, vec![], Severity::Warning, Some("22:00-07:00"));
        let battery = alert(AlertKind::LowBattery, Severity::Warning);
        // 14:00 UTC is 23:00 in Tokyo but 14:00 in London (winter).
        let at = utc("2025-01-15T14:00:00Z");
        assert!(quiet_until(&c, &battery, at, chrono_tz::Asia::Tokyo).is_some());
        assert_eq!(
            quiet_until(&c, &battery, at, chrono_tz::Europe::London),
            None
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::seconds(1);
        let cap = Duration::seconds(60);
        let waits: Vec<i64> = (1..=8)
            .map(|n| backoff(n, base, cap).num_seconds())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(1_000_000, base, cap), cap);
    }

    #[test]
    fn gives_up_after_the_configured_time_or_at_once_when_permanent() {
        let retry = Retry {
            base: Duration::seconds(10),
            cap: Duration::minutes(10),
            give_up_after: Duration::minutes(30),
        };
        let t0 = DateTime::UNIX_EPOCH;
        assert_eq!(
            after_attempt(Outcome::Ok, 1, t0, t0, &retry, None),
            Next::Delivered
        );
        assert_eq!(
            after_attempt(Outcome::Transient, 1, t0, t0, &retry, None),
            Next::RetryAt(t0 + Duration::seconds(10))
        );
        assert_eq!(
            after_attempt(
                Outcome::Transient,
                9,
                t0,
                t0 + Duration::minutes(25),
                &retry,
                None
            ),
            Next::GiveUp
        );
        // A receiver's "not before" wins over a shorter backoff, and never comes earlier.
        assert_eq!(
            after_attempt(
                Outcome::Transient,
                1,
                t0,
                t0,
                &retry,
                Some(t0 + Duration::seconds(42))
            ),
            Next::RetryAt(t0 + Duration::seconds(42))
        );
        assert_eq!(
            after_attempt(
                Outcome::Transient,
                1,
                t0,
                t0,
                &retry,
                Some(t0 + Duration::seconds(1))
            ),
            Next::RetryAt(t0 + Duration::seconds(10))
        );
        assert_eq!(
            after_attempt(
                Outcome::Transient,
                1,
                t0,
                t0,
                &retry,
                Some(t0 + Duration::hours(1))
            ),
            Next::GiveUp
        );
        assert_eq!(
            after_attempt(Outcome::Permanent, 1, t0, t0, &retry, None),
            Next::GiveUp
        );
    }

    #[test]
    fn summary_is_due_once_the_local_time_passes_and_not_for_new_contacts() {
        let tz = chrono_tz::Asia::Tokyo;
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let created = at("2025-03-01T00:00:00Z");
        // 20:00 in Tokyo is 11:00 UTC.
        assert_eq!(
            summary_due(hm(20, 0), tz, created, at("2025-03-10T10:59:00Z")),
            None
        );
        assert_eq!(
            summary_due(hm(20, 0), tz, created, at("2025-03-10T11:00:00Z")),
            NaiveDate::from_ymd_opt(2025, 3, 10)
        );
        let late_contact = at("2025-03-10T11:30:00Z");
        assert_eq!(
            summary_due(hm(20, 0), tz, late_contact, at("2025-03-10T12:00:00Z")),
            None
        );
        let (from, to) = local_day(NaiveDate::from_ymd_opt(2025, 3, 10).unwrap_or_default(), tz)
            .unwrap_or((created, created));
        assert_eq!(from, at("2025-03-09T15:00:00Z"));
        assert_eq!(to - from, Duration::hours(24));
    }

    #[test]
    fn the_next_summary_is_todays_time_if_ahead_else_tomorrows_across_dst() {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let tokyo = chrono_tz::Asia::Tokyo;
        let eight = parse_hhmm("20:00:30");
        assert_eq!(eight, NaiveTime::from_hms_opt(20, 0, 30));
        let eight = eight.unwrap_or_default();
        assert_eq!(
            next_summary_at(eight, tokyo, at("2025-03-10T10:00:00Z")),
            Some(at("2025-03-10T11:00:30Z"))
        );
        // At the very instant it is due, the next one is tomorrow's.
        assert_eq!(
            next_summary_at(eight, tokyo, at("2025-03-10T11:00:30Z")),
            Some(at("2025-03-11T11:00:30Z"))
        );
        // Due at the deadline it names, not a moment before.
        let due = at("2025-03-10T11:00:30Z");
        let created = at("2025-03-01T00:00:00Z");
        assert_eq!(
            summary_due(eight, tokyo, created, due - Duration::milliseconds(1)),
            None
        );
        assert!(summary_due(eight, tokyo, created, due).is_some());
        // New York springs forward on 9 March 2025: 02:30 does not exist that day and falls
        // to 03:30 EDT (07:30 UTC); the day after, 02:30 EDT is 06:30 UTC.
        let ny = chrono_tz::America::New_York;
        let half_past_two = hm(2, 30);
        assert_eq!(
            next_summary_at(half_past_two, ny, at("2025-03-09T05:00:00Z")),
            Some(at("2025-03-09T07:30:00Z"))
        );
        assert_eq!(
            next_summary_at(half_past_two, ny, at("2025-03-09T08:00:00Z")),
            Some(at("2025-03-10T06:30:00Z"))
        );
    }

    #[test]
    fn summary_times_take_optional_seconds_and_nothing_else() {
        assert_eq!(parse_hhmm("07:05"), NaiveTime::from_hms_opt(7, 5, 0));
        assert_eq!(parse_hhmm("07:05:09"), NaiveTime::from_hms_opt(7, 5, 9));
        for bad in [
            "7:05",
            "07:5",
            "07:05:9",
            "07:05:09:00",
            "24:00",
            "07:60",
            "07:05:60",
            "aa:bb",
        ] {
            assert_eq!(parse_hhmm(bad), None, "{bad}");
        }
    }
}
