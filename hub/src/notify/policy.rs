//! Who is told what, and when: the pure decisions of family notification.
//!
//! Nothing here reads the clock or touches I/O; the store calls [`recipients`] inside the
//! transaction that changes an alert, and the delivery worker calls [`after_attempt`]
//! after each try. Every time is passed in.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use mimamori_protocol::contact::Contact;
use mimamori_protocol::{Alert, AlertState, Severity};
use serde::{Deserialize, Serialize};

/// The change of an alert (or the daily tick) a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeEvent {
    Opened,
    Escalated,
    Resolved,
    DailySummary,
}

impl NoticeEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::Opened => "opened",
            NoticeEvent::Escalated => "escalated",
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

/// Parses a 24-hour `"HH:MM"` with two digits each.
pub fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

/// The tier told of an event: tier 1 when an alert opens, tier 2 when it escalates.
fn tier_for(event: NoticeEvent) -> Option<u8> {
    match event {
        NoticeEvent::Opened => Some(1),
        NoticeEvent::Escalated => Some(2),
        NoticeEvent::Resolved | NoticeEvent::DailySummary => None,
    }
}

/// Whether `contact` wants to hear that `alert` opened or escalated, at local time `local`.
pub fn wants(contact: &Contact, alert: &Alert, event: NoticeEvent, local: NaiveTime) -> bool {
    let right_tier = tier_for(event) == Some(contact.tier);
    let right_kind = contact.kinds.is_empty() || contact.kinds.contains(&alert.kind);
    let severe_enough = alert.severity >= contact.min_severity;
    // Quiet hours hold back everything but critical alerts: a low battery can wait
    // for the morning, a fall cannot.
    let quiet = alert.severity != Severity::Critical
        && contact
            .quiet_hours
            .as_deref()
            .and_then(QuietHours::parse)
            .is_some_and(|q| q.contains(local));
    right_tier && right_kind && severe_enough && !quiet
}

/// The contacts to tell that `alert` opened or escalated at `at`, judged in the resident's zone.
pub fn recipients<'a>(
    contacts: &'a [Contact],
    alert: &Alert,
    event: NoticeEvent,
    at: DateTime<Utc>,
    tz: Tz,
) -> Vec<&'a Contact> {
    let local = at.with_timezone(&tz).time();
    contacts
        .iter()
        .filter(|c| wants(c, alert, event, local))
        .collect()
}

/// The resident's time zone; a name the hub cannot read (refused at entry, so only a
/// hand-edited database) falls back to Japan's, where the hub is used.
pub fn zone_of(name: &str) -> Tz {
    name.parse().unwrap_or(chrono_tz::Asia::Tokyo)
}

/// How long staff have to acknowledge an alert of each severity before it climbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    pub critical: Option<Duration>,
    pub high: Option<Duration>,
}

impl Default for Escalation {
    /// Critical 2 min (answered within 60 s is the aim, so 2 min unanswered is late);
    /// high 10 min; warnings never escalate.
    fn default() -> Self {
        Escalation {
            critical: Some(Duration::minutes(2)),
            high: Some(Duration::minutes(10)),
        }
    }
}

impl Escalation {
    pub fn ack_timeout(&self, severity: Severity) -> Option<Duration> {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Warning => None,
        }
    }

    /// Whether `alert` is overdue for escalation at `now`.
    pub fn is_due(&self, alert: &Alert, now: DateTime<Utc>) -> bool {
        alert.state == AlertState::Open
            && !alert.escalated
            && self
                .ack_timeout(alert.severity)
                .is_some_and(|t| now - alert.opened_at >= t)
    }
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
pub fn after_attempt(
    outcome: Outcome,
    attempts: i64,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
    retry: &Retry,
) -> Next {
    match outcome {
        Outcome::Ok => Next::Delivered,
        Outcome::Permanent => Next::GiveUp,
        Outcome::Transient => {
            let at = now + backoff(attempts, retry.base, retry.cap);
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
    let local = now.with_timezone(&tz);
    let date = local.date_naive();
    let due_local = date.and_time(daily_at);
    // A time skipped by a DST jump falls back to the first valid instant after it.
    let due = tz
        .from_local_datetime(&due_local)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(due_local + Duration::hours(1)))
                .earliest()
        })?
        .with_timezone(&Utc);
    (now >= due && contact_created < due).then_some(date)
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
    use mimamori_protocol::AlertKind;

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
        }
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
    }

    #[test]
    fn quiet_hours_across_midnight_hold_back_all_but_critical() {
        let c = contact(1, vec![], Severity::Warning, Some("22:00-07:00"));
        let battery = alert(AlertKind::LowBattery, Severity::Warning);
        let sos = alert(AlertKind::Sos, Severity::Critical);
        assert!(!wants(&c, &battery, NoticeEvent::Opened, hm(23, 30)));
        assert!(!wants(&c, &battery, NoticeEvent::Opened, hm(6, 59)));
        assert!(wants(&c, &battery, NoticeEvent::Opened, hm(7, 0)));
        assert!(wants(&c, &sos, NoticeEvent::Opened, hm(23, 30)));
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
    fn kinds_severity_and_tier_filter() {
        let only_sos = contact(1, vec![AlertKind::Sos], Severity::Warning, None);
        assert!(wants(
            &only_sos,
            &alert(AlertKind::Sos, Severity::Critical),
            NoticeEvent::Opened,
            hm(12, 0)
        ));
        assert!(!wants(
            &only_sos,
            &alert(AlertKind::Inactivity, Severity::High),
            NoticeEvent::Opened,
            hm(12, 0)
        ));
        let high_up = contact(1, vec![], Severity::High, None);
        assert!(!wants(
            &high_up,
            &alert(AlertKind::LowBattery, Severity::Warning),
            NoticeEvent::Opened,
            hm(12, 0)
        ));
        assert!(wants(
            &high_up,
            &alert(AlertKind::Inactivity, Severity::High),
            NoticeEvent::Opened,
            hm(12, 0)
        ));
        let supervisor = contact(2, vec![], Severity::Warning, None);
        let sos = alert(AlertKind::Sos, Severity::Critical);
        assert!(!wants(&supervisor, &sos, NoticeEvent::Opened, hm(12, 0)));
        assert!(wants(&supervisor, &sos, NoticeEvent::Escalated, hm(12, 0)));
        assert!(!wants(&only_sos, &sos, NoticeEvent::Escalated, hm(12, 0)));
    }

    #[test]
    fn recipients_judge_quiet_hours_in_the_residents_zone() {
        let contacts = [contact(1, vec![], Severity::Warning, Some("22:00-07:00"))];
        let battery = alert(AlertKind::LowBattery, Severity::Warning);
        // 14:00 UTC is 23:00 in Tokyo but 14:00 in London (winter).
        let at = DateTime::parse_from_rfc3339("2025-01-15T14:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert!(recipients(
            &contacts,
            &battery,
            NoticeEvent::Opened,
            at,
            chrono_tz::Asia::Tokyo
        )
        .is_empty());
        assert_eq!(
            recipients(
                &contacts,
                &battery,
                NoticeEvent::Opened,
                at,
                chrono_tz::Europe::London
            )
            .len(),
            1
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
            after_attempt(Outcome::Ok, 1, t0, t0, &retry),
            Next::Delivered
        );
        assert_eq!(
            after_attempt(Outcome::Transient, 1, t0, t0, &retry),
            Next::RetryAt(t0 + Duration::seconds(10))
        );
        assert_eq!(
            after_attempt(
                Outcome::Transient,
                9,
                t0,
                t0 + Duration::minutes(25),
                &retry
            ),
            Next::GiveUp
        );
        assert_eq!(
            after_attempt(Outcome::Permanent, 1, t0, t0, &retry),
            Next::GiveUp
        );
    }

    #[test]
    fn escalation_defaults_and_acknowledgement() {
        let e = Escalation::default();
        let mut sos = alert(AlertKind::Sos, Severity::Critical);
        let t0 = sos.opened_at;
        assert!(!e.is_due(&sos, t0 + Duration::seconds(119)));
        assert!(e.is_due(&sos, t0 + Duration::seconds(120)));
        sos.state = AlertState::Acknowledged;
        assert!(!e.is_due(&sos, t0 + Duration::hours(1)));
        let battery = alert(AlertKind::LowBattery, Severity::Warning);
        assert!(!e.is_due(&battery, t0 + Duration::days(3)));
        assert_eq!(e.ack_timeout(Severity::High), Some(Duration::minutes(10)));
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
}
