//! Alerts as the API, the MQTT alerts topic and the WebSocket stream show them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What condition an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Inactivity,
    NoMorningActivity,
    GeofenceExit,
    Sos,
    DeviceOffline,
    LowBattery,
    Dwell,
    NightExit,
    TagAway,
    /// Out through the entrance door for longer than `away.max_s`.
    AwayTooLong,
    /// An hour the resident is usually active in passed without activity (advisory).
    Rhythm,
}

impl AlertKind {
    pub const ALL: [AlertKind; 11] = [
        AlertKind::Inactivity,
        AlertKind::NoMorningActivity,
        AlertKind::GeofenceExit,
        AlertKind::Sos,
        AlertKind::DeviceOffline,
        AlertKind::LowBattery,
        AlertKind::Dwell,
        AlertKind::NightExit,
        AlertKind::TagAway,
        AlertKind::AwayTooLong,
        AlertKind::Rhythm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Inactivity => "inactivity",
            AlertKind::NoMorningActivity => "no_morning_activity",
            AlertKind::GeofenceExit => "geofence_exit",
            AlertKind::Sos => "sos",
            AlertKind::DeviceOffline => "device_offline",
            AlertKind::LowBattery => "low_battery",
            AlertKind::Dwell => "dwell",
            AlertKind::NightExit => "night_exit",
            AlertKind::TagAway => "tag_away",
            AlertKind::AwayTooLong => "away_too_long",
            AlertKind::Rhythm => "rhythm",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How urgently staff must act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Warning, Severity::High, Severity::Critical]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where an alert is in its life: (pending →) open → (unanswered →) acknowledged → resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The resident is being asked "are you OK?"; staff are told only without an answer.
    Pending,
    Open,
    /// The escalation ladder ran out and still nobody acknowledged: loud until someone does.
    Unanswered,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Open => "open",
            AlertState::Unanswered => "unanswered",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        [
            AlertState::Pending,
            AlertState::Open,
            AlertState::Unanswered,
            AlertState::Acknowledged,
            AlertState::Resolved,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Open or unanswered: nobody has taken the alert on yet.
    pub fn awaits_answer(self) -> bool {
        matches!(self, AlertState::Open | AlertState::Unanswered)
    }

    /// Not resolved yet.
    pub fn is_live(self) -> bool {
        self != AlertState::Resolved
    }
}

/// One alert, whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: i64,
    pub resident_id: i64,
    pub device_id: Option<String>,
    pub kind: AlertKind,
    pub severity: Severity,
    pub state: AlertState,
    /// Set once nobody acknowledged the alert in time.
    #[serde(default)]
    pub escalated: bool,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    /// `condition_cleared` with the reason, or the note staff left.
    pub resolution: Option<String>,
    pub details: serde_json::Value,
    pub updated_at: DateTime<Utc>,
    /// The staff member who took the alert on, if someone was assigned.
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// Until when staff paused the escalation ladder of a non-critical alert.
    #[serde(default)]
    pub snoozed_until: Option<DateTime<Utc>>,
    /// The highest tier of contacts told so far (0: nobody yet).
    #[serde(default)]
    pub tier: u8,
}

/// One change in an alert's life: the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub at: DateTime<Utc>,
    /// `opened`, `updated`, `acknowledged`, `resolved`, `escalated`, `reminded`,
    /// `unanswered`, `noted`, `assigned`, `snoozed`, `held`.
    pub action: String,
    /// The user who acted, or `hub` for the rules engine.
    pub actor: String,
    pub note: Option<String>,
}
