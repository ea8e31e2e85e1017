//! The service level: how fast staff acknowledged the alerts opened in a period.

use chrono::{DateTime, Utc};
use mimamori_protocol::{Alert, AlertKind, AlertState, Severity};
use serde::{Deserialize, Serialize};

/// The target the share is measured against: an alarm answered within 60 s.
pub const TARGET_S: f64 = 60.0;

/// An alert nobody acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unacknowledged {
    pub id: i64,
    pub resident_id: i64,
    pub kind: AlertKind,
    pub state: AlertState,
    pub opened_at: DateTime<Utc>,
    /// Who resolved it without acknowledging first (`hub`: the condition cleared).
    pub resolved_by: Option<String>,
}

/// The figures of one severity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeverityLevel {
    pub severity: Severity,
    /// Alerts opened in the period.
    pub count: usize,
    pub acknowledged: usize,
    /// Share of all alerts acknowledged within [`TARGET_S`], 0–1 (`null` without alerts).
    pub within_target: Option<f64>,
    /// Median and 95th percentile of time to acknowledge, in seconds, over acknowledged alerts.
    pub p50_ack_s: Option<f64>,
    pub p95_ack_s: Option<f64>,
    pub unacknowledged: Vec<Unacknowledged>,
}

/// `GET /reports/response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub target_s: f64,
    pub severities: Vec<SeverityLevel>,
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn level(severity: Severity, alerts: &[&Alert]) -> SeverityLevel {
    let mut waits: Vec<f64> = alerts
        .iter()
        .filter_map(|a| {
            a.acknowledged_at
                .map(|t| (t - a.opened_at).num_milliseconds().max(0) as f64 / 1000.0)
        })
        .collect();
    waits.sort_by(f64::total_cmp);
    let within = waits.iter().filter(|w| **w <= TARGET_S).count();
    let unacknowledged = alerts
        .iter()
        .filter(|a| a.acknowledged_at.is_none())
        .map(|a| Unacknowledged {
            id: a.id,
            resident_id: a.resident_id,
            kind: a.kind,
            state: a.state,
            opened_at: a.opened_at,
            resolved_by: a.resolved_by.clone(),
        })
        .collect();
    SeverityLevel {
        severity,
        count: alerts.len(),
        acknowledged: waits.len(),
        within_target: (!alerts.is_empty()).then(|| within as f64 / alerts.len() as f64),
        p50_ack_s: percentile(&waits, 0.5),
        p95_ack_s: percentile(&waits, 0.95),
        unacknowledged,
    }
}

/// The report over alerts opened in `[from, to)`, most severe first.
pub fn response(alerts: &[Alert], from: DateTime<Utc>, to: DateTime<Utc>) -> ResponseReport {
    let severities = [Severity::Critical, Severity::High, Severity::Warning]
        .into_iter()
        .map(|s| {
            let of: Vec<&Alert> = alerts
                .iter()
                .filter(|a| a.severity == s && a.opened_at >= from && a.opened_at < to)
                .collect();
            level(s, &of)
        })
        .collect();
    ResponseReport {
        from,
        to,
        target_s: TARGET_S,
        severities,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn alert(id: i64, severity: Severity, ack_after_s: Option<i64>) -> Alert {
        let opened = DateTime::from_timestamp(1_800_000_000 + id * 1000, 0).unwrap_or_default();
        Alert {
            id,
            resident_id: 1,
            device_id: None,
            kind: AlertKind::Sos,
            severity,
            state: if ack_after_s.is_some() {
                AlertState::Acknowledged
            } else {
                AlertState::Unanswered
            },
            escalated: false,
            opened_at: opened,
            acknowledged_at: ack_after_s.map(|s| opened + Duration::seconds(s)),
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            resolution: None,
            details: serde_json::Value::Null,
            updated_at: opened,
            assigned_to: None,
            snoozed_until: None,
            tier: 1,
        }
    }

    #[test]
    fn shares_and_percentiles_per_severity() {
        let alerts: Vec<Alert> = [10, 20, 30, 50, 90]
            .into_iter()
            .enumerate()
            .map(|(i, s)| alert(i as i64 + 1, Severity::Critical, Some(s)))
            .chain([
                alert(9, Severity::Critical, None),
                alert(10, Severity::High, Some(5)),
            ])
            .collect();
        let from = DateTime::from_timestamp(0, 0).unwrap_or_default();
        let to = DateTime::from_timestamp(2_000_000_000, 0).unwrap_or_default();
        let r = response(&alerts, from, to);
        let c = &r.severities[0];
        assert_eq!(
            (c.severity, c.count, c.acknowledged),
            (Severity::Critical, 6, 5)
        );
        assert_eq!(c.within_target, Some(4.0 / 6.0));
        assert_eq!((c.p50_ack_s, c.p95_ack_s), (Some(30.0), Some(90.0)));
        assert_eq!(
            c.unacknowledged.iter().map(|u| u.id).collect::<Vec<_>>(),
            vec![9]
        );
        assert_eq!(r.severities[1].count, 1);
        assert_eq!(r.severities[2].within_target, None);
    }
}
