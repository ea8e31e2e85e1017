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
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        AlertKind::Inactivity,
        AlertKind::NoMorningActivity,
        AlertKind::GeofenceExit,
        AlertKind::Sos,
        AlertKind::DeviceOffline,
        AlertKind::LowBattery,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Inactivity => "inactivity",
            AlertKind::NoMorningActivity => "no_morning_activity",
            AlertKind::GeofenceExit => "geofence_exit",
            AlertKind::Sos => "sos",
            AlertKind::DeviceOffline => "device_offline",
            AlertKind::LowBattery => "low_battery",
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

/// Where an alert is in its life: open → acknowledged → resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        [
            AlertState::Open,
            AlertState::Acknowledged,
            AlertState::Resolved,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
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
}

/// One change in an alert's life: the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub at: DateTime<Utc>,
    /// `opened`, `updated`, `acknowledged`, `resolved`, `escalated`.
    pub action: String,
    /// The user who acted, or `hub` for the rules engine.
    pub actor: String,
    pub note: Option<String>,
}
