//! What the alert core asks the shell to do: the rows of one commit, and after it the
//! frames and MQTT messages of every alert that changed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mimamori_protocol::contact::Contact;
use mimamori_protocol::{Alert, Severity};

use crate::notify::policy::NoticeEvent;
use crate::store::AuditEntry;

/// An alert as it is to be stored: the whole row, written over any earlier version.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub alert: Alert,
    /// The device id for sos, device_offline and low_battery; empty otherwise.
    pub subject: String,
    /// The ladder's progress as JSON while the alert is live; `None` once resolved.
    pub ladder: Option<String>,
}

/// One line of an alert's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub alert_id: i64,
    pub at: DateTime<Utc>,
    pub action: &'static str,
    pub actor: String,
    pub note: Option<String>,
    /// The alert's details after the change, as JSON, when they changed.
    pub details: Option<String>,
}

/// One notification for the outbox, rendered and addressed.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Unique per notification: a row already written is never written twice.
    pub key: String,
    pub resident_id: i64,
    pub alert_id: Option<i64>,
    pub contact: Contact,
    /// The contact's webhook signing secret.
    pub secret: Option<String>,
    pub event: NoticeEvent,
    /// The [`crate::notify::message::Notice`] as JSON.
    pub payload: String,
    /// When it falls due: now, or when the contact's quiet hours end.
    pub created_at: DateTime<Utc>,
}

/// A dated pause added or removed: the pipeline writes it with the rules state it changes.
#[derive(Debug, Clone, PartialEq)]
pub enum PauseChange {
    Add(mimamori_protocol::pause::Pause),
    Remove { resident_id: i64, id: String },
}

impl PauseChange {
    pub fn resident_id(&self) -> i64 {
        match self {
            PauseChange::Add(p) => p.resident_id,
            PauseChange::Remove { resident_id, .. } => *resident_id,
        }
    }
}

/// Everything one commit writes, and what the shell announces after it.
#[derive(Debug, Default)]
pub struct Effects {
    /// The final version of each alert that changed, by id (so written in id order: a
    /// resolved alert is stored before a new one of the same key).
    pub alerts: BTreeMap<i64, AlertRecord>,
    pub history: Vec<HistoryRow>,
    pub audit: Vec<AuditEntry>,
    pub outbox: Vec<OutboxEntry>,
    pub pauses: Vec<PauseChange>,
    /// Questions to devices (`watch/v1/{id}/cmd`), published after the commit.
    pub commands: Vec<(String, Vec<u8>)>,
    /// Time to acknowledge of each alert acknowledged, for the service-level histogram.
    pub acknowledged: Vec<(Severity, f64)>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
            && self.history.is_empty()
            && self.audit.is_empty()
            && self.outbox.is_empty()
            && self.pauses.is_empty()
            && self.commands.is_empty()
    }

    /// Every resident the effects write for.
    pub fn residents(&self) -> impl Iterator<Item = i64> + '_ {
        self.alerts
            .values()
            .map(|r| r.alert.resident_id)
            .chain(self.outbox.iter().map(|o| o.resident_id))
            .chain(self.pauses.iter().map(PauseChange::resident_id))
    }
}
