//! The resident check: an alert of a chosen kind first asks the resident "are you OK?"
//! through every device of theirs (`watch/v1/{device_id}/cmd`) and waits. The resident's
//! answer (a native `ok` message) closes it as `resident_confirmed`, nobody else having
//! been bothered; no answer within the timeout opens it to staff, and its ladder counts
//! from the condition's own time. SOS is never held back: the settings refuse it.

use chrono::Duration;
use mimamori_protocol::topic::command_topic;
use mimamori_protocol::{AlertKind, RuleSettings};
use serde_json::json;

/// How a resident is asked before staff are.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckPlan {
    /// The kinds of alert that ask first.
    pub kinds: Vec<AlertKind>,
    /// How long the resident has to answer.
    pub timeout: Duration,
    /// Where the question goes: every device of the resident.
    pub devices: Vec<String>,
}

impl CheckPlan {
    /// The plan the settings ask for, if they turn the check on and a device can ask.
    pub fn of(settings: &RuleSettings, devices: Vec<String>) -> Option<CheckPlan> {
        let c = &settings.check;
        (c.enabled && !devices.is_empty()).then(|| CheckPlan {
            kinds: c.kinds.clone(),
            timeout: Duration::seconds(i64::try_from(c.timeout_s).unwrap_or(i64::MAX / 1_000)),
            devices,
        })
    }

    pub fn applies(&self, kind: AlertKind) -> bool {
        kind != AlertKind::Sos && self.kinds.contains(&kind)
    }

    /// The question, one message per device.
    pub fn questions(&self, alert_id: i64) -> Vec<(String, Vec<u8>)> {
        let body = json!({"ask": "are_you_ok", "alert_id": alert_id}).to_string();
        self.devices
            .iter()
            .map(|d| (command_topic(d), body.clone().into_bytes()))
            .collect()
    }
}
