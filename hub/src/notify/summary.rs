//! The daily summary of a resident's day for family contacts, built from stored facts.

use chrono::{DateTime, NaiveDate, Utc};
use mimamori_protocol::{Alert, AlertKind, AlertState, Severity};
use serde::{Deserialize, Serialize};

/// What the store knows about one local day of a resident.
#[derive(Debug, Clone, Default)]
pub struct DayFacts {
    /// First and last activity reading (motion seen, door used) of the day.
    pub first_activity: Option<DateTime<Utc>>,
    pub last_activity: Option<DateTime<Utc>>,
    /// Hours of the day with any activity, as (hour start, readings).
    pub active_hours: Vec<(DateTime<Utc>, i64)>,
    /// Alerts opened that day.
    pub alerts: Vec<Alert>,
}

/// How one of the day's alerts ended, or that it is still live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertOutcome {
    pub kind: AlertKind,
    pub severity: Severity,
    pub opened_at: DateTime<Utc>,
    pub state: AlertState,
    pub resolution: Option<String>,
}

/// The summary as it travels in the outbox and in webhook bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaySummary {
    pub date: NaiveDate,
    pub first_activity: Option<DateTime<Utc>>,
    pub last_activity: Option<DateTime<Utc>>,
    /// Hours of the day in which the resident was seen moving.
    pub hours_active: usize,
    /// Times the resident left a safe zone.
    pub outings: usize,
    pub alerts: Vec<AlertOutcome>,
}

impl DaySummary {
    pub fn build(date: NaiveDate, facts: &DayFacts) -> DaySummary {
        let mut alerts: Vec<AlertOutcome> = facts
            .alerts
            .iter()
            .map(|a| AlertOutcome {
                kind: a.kind,
                severity: a.severity,
                opened_at: a.opened_at,
                state: a.state,
                resolution: a.resolution.clone(),
            })
            .collect();
        alerts.sort_by_key(|a| a.opened_at);
        DaySummary {
            date,
            first_activity: facts.first_activity,
            last_activity: facts.last_activity,
            hours_active: facts.active_hours.iter().filter(|(_, n)| *n > 0).count(),
            outings: facts
                .alerts
                .iter()
                .filter(|a| a.kind == AlertKind::GeofenceExit)
                .count(),
            alerts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn alert(kind: AlertKind, minutes: i64, state: AlertState) -> Alert {
        let t = DateTime::UNIX_EPOCH + Duration::minutes(minutes);
        Alert {
            id: minutes,
            resident_id: 1,
            device_id: None,
            kind,
            severity: Severity::High,
            state,
            escalated: false,
            opened_at: t,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            resolution: (state == AlertState::Resolved).then(|| "back home".to_string()),
            details: serde_json::json!({}),
            updated_at: t,
            assigned_to: None,
            snoozed_until: None,
            tier: 0,
        }
    }

    #[test]
    fn counts_active_hours_outings_and_orders_alerts() {
        let t0 = DateTime::UNIX_EPOCH;
        let facts = DayFacts {
            first_activity: Some(t0 + Duration::hours(6)),
            last_activity: Some(t0 + Duration::hours(21)),
            active_hours: vec![
                (t0 + Duration::hours(6), 4),
                (t0 + Duration::hours(7), 0),
                (t0 + Duration::hours(9), 12),
            ],
            alerts: vec![
                alert(AlertKind::GeofenceExit, 600, AlertState::Resolved),
                alert(AlertKind::LowBattery, 60, AlertState::Open),
                alert(AlertKind::GeofenceExit, 900, AlertState::Acknowledged),
            ],
        };
        let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let s = DaySummary::build(date, &facts);
        assert_eq!(s.hours_active, 2);
        assert_eq!(s.outings, 2);
        let kinds: Vec<AlertKind> = s.alerts.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                AlertKind::LowBattery,
                AlertKind::GeofenceExit,
                AlertKind::GeofenceExit
            ]
        );
        assert_eq!(s.alerts[1].resolution.as_deref(), Some("back home"));
    }

    #[test]
    fn a_quiet_day_is_an_empty_summary() {
        let date = NaiveDate::from_ymd_opt(2025, 5, 1).unwrap_or_default();
        let s = DaySummary::build(date, &DayFacts::default());
        assert_eq!((s.hours_active, s.outings, s.alerts.len()), (0, 0, 0));
        assert_eq!(s.first_activity, None);
    }
}
