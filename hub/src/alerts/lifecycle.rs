//! The alert book: every live alert, its escalation ladder and the staff actions on it.
//!
//! Inputs are the rules engine's decisions, staff commands and the passing of time, each
//! with `now`; outputs are [`Effects`]. A key (resident, kind, subject) has at most one
//! live alert. A condition detected while its alert is live joins it; once the alert is
//! resolved — by the condition clearing or by staff — the next detection opens a new
//! alert with a new id (a resolved alert is never reopened: its outcome and the time to
//! acknowledge it stay as they were). Staff resolutions are reported through
//! [`AlertBook::take_closed`] so the engine forgets the condition and can raise it again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use mimamori_protocol::contact::Contact;
use mimamori_protocol::{Alert, AlertKind, AlertState, Severity};
use mimamori_rules::{AlertKey, Decision};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::effects::{AlertRecord, Effects, HistoryRow, OutboxEntry};
use super::ladder::{Ladder, Plan};
use crate::notify::message::{Notice, Position, ResidentRef};
use crate::notify::policy::{self, NoticeEvent};
use crate::store::AuditEntry;

/// Longest snooze staff may set.
pub const MAX_SNOOZE: Duration = Duration::hours(24);

/// What notices need to know about a resident.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    pub name: String,
    /// The time zone's name, as stored.
    pub timezone: String,
    pub tz: Tz,
    /// Contacts with their webhook secrets.
    pub contacts: Vec<(Contact, Option<String>)>,
    /// Whether, and how, chosen alerts first ask the resident.
    pub check: Option<super::check::CheckPlan>,
}

/// The residents as the book sees them.
pub trait World {
    fn card(&self, resident_id: i64) -> Option<&Card>;
    /// The resident's newest position fix.
    fn position(&self, resident_id: i64) -> Option<Position>;
}

/// A notice held back by a contact's quiet hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub contact_id: i64,
    pub event: NoticeEvent,
    pub key: String,
    pub release_at: DateTime<Utc>,
}

/// How far a live alert's ladder has run; stored with the alert.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// Steps of the plan taken.
    pub steps_taken: usize,
    /// Reminders counted (a hub that was down counts those it missed, sending one).
    pub reminders: u32,
    /// Contacts told of the alert; they hear when it ends.
    pub told: BTreeSet<i64>,
    pub held: Vec<Held>,
    /// Contacts who confirmed from the message ("確認しました"): no more reminders for them.
    pub confirmed: BTreeSet<i64>,
    /// While the alert is pending: until when the resident may answer.
    pub pending_until: Option<DateTime<Utc>>,
}

impl Progress {
    /// The progress of a live alert stored before ladders were kept: its first step
    /// (and, if it escalated, its second) already taken, so nobody is told twice.
    pub fn resumed(alert: &Alert) -> Progress {
        Progress {
            steps_taken: if alert.escalated { 2 } else { 1 },
            ..Progress::default()
        }
    }
}

/// What staff do to an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StaffAction {
    Acknowledge,
    Resolve,
    /// Adds the command's note to the history.
    Note,
    /// Assigns the alert to a staff member, or clears the assignment.
    Assign(Option<String>),
    /// Pauses the ladder of a non-critical alert until then.
    Snooze(DateTime<Utc>),
    /// A contact who was told answered from the message that they have it in hand
    /// (LINE's "確認しました"): they get no more reminders; staff's ladder goes on.
    Confirm {
        contact_id: i64,
    },
}

impl StaffAction {
    fn name(&self) -> &'static str {
        match self {
            StaffAction::Acknowledge => "acknowledged",
            StaffAction::Resolve => "resolved",
            StaffAction::Note => "noted",
            StaffAction::Assign(_) => "assigned",
            StaffAction::Snooze(_) => "snoozed",
            StaffAction::Confirm { .. } => "confirmed",
        }
    }
}

/// A staff action with who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffCommand {
    pub alert_id: i64,
    pub action: StaffAction,
    pub actor: String,
    pub note: Option<String>,
}

/// Why a staff command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// No live alert has that id: it is resolved or does not exist (the shell, which can
    /// read the store, says which).
    NotLive,
    /// The alert's state forbids the action; the sentence says why.
    Forbidden(String),
}

#[derive(Debug, Clone)]
struct Live {
    alert: Alert,
    subject: String,
    progress: Progress,
    scheduled: Option<DateTime<Utc>>,
}

impl Live {
    fn key(&self) -> (i64, AlertKind, String) {
        (
            self.alert.resident_id,
            self.alert.kind,
            self.subject.clone(),
        )
    }
}

/// Every live alert, one owner.
#[derive(Debug)]
pub struct AlertBook {
    ladder: Ladder,
    live: BTreeMap<i64, Live>,
    by_key: HashMap<(i64, AlertKind, String), i64>,
    timers: BTreeSet<(DateTime<Utc>, i64)>,
    next_id: i64,
    /// Ids are `offset` modulo `step`: 0 modulo 1 on one hub; in cluster mode each
    /// partition's book draws from its own residue, so two owners never pick one id.
    id_step: i64,
    id_offset: i64,
    effects: Effects,
    closed: Vec<AlertKey>,
}

fn key_of(k: &AlertKey) -> (i64, AlertKind, String) {
    (k.resident_id, k.kind, k.subject.clone())
}

impl AlertBook {
    /// An empty book whose first alert gets `next_id`.
    pub fn new(ladder: Ladder, next_id: i64) -> AlertBook {
        AlertBook {
            ladder,
            live: BTreeMap::new(),
            by_key: HashMap::new(),
            timers: BTreeSet::new(),
            next_id: next_id.max(1),
            id_step: 1,
            id_offset: 0,
            effects: Effects::default(),
            closed: Vec::new(),
        }
    }

    /// Draws ids only from those equal to `offset` modulo `step`.
    pub fn share_ids(&mut self, step: i64, offset: i64) {
        self.id_step = step.max(1);
        self.id_offset = offset.rem_euclid(self.id_step);
        self.next_id = self.align(self.next_id);
    }

    /// The first id of this book's residue at or after `n`.
    fn align(&self, n: i64) -> i64 {
        n + (self.id_offset - n).rem_euclid(self.id_step)
    }

    /// Puts back a live alert read from the store at start-up.
    pub fn restore(&mut self, alert: Alert, subject: String, progress: Progress) {
        if !alert.state.is_live() {
            return;
        }
        let id = alert.id;
        self.next_id = self.next_id.max(self.align(id + 1));
        let live = Live {
            alert,
            subject,
            progress,
            scheduled: None,
        };
        self.by_key.insert(live.key(), id);
        self.live.insert(id, live);
        self.reschedule(id);
    }

    /// Forgets a deleted resident's alerts (the store deletes them with the resident).
    pub fn remove_resident(&mut self, resident_id: i64) {
        let ids: Vec<i64> = self
            .live
            .values()
            .filter(|l| l.alert.resident_id == resident_id)
            .map(|l| l.alert.id)
            .collect();
        for id in ids {
            if let Some(l) = self.live.remove(&id) {
                self.by_key.remove(&l.key());
                if let Some(t) = l.scheduled {
                    self.timers.remove(&(t, id));
                }
            }
            self.effects.alerts.remove(&id);
        }
    }

    /// The live alert of a key, if there is one.
    pub fn live_for(&self, key: &AlertKey) -> Option<&Alert> {
        let id = self.by_key.get(&key_of(key))?;
        self.live.get(id).map(|l| &l.alert)
    }

    /// Every live alert with its ladder progress, in id order.
    pub fn live(&self) -> impl Iterator<Item = (&Alert, &str, &Progress)> {
        self.live
            .values()
            .map(|l| (&l.alert, l.subject.as_str(), &l.progress))
    }

    /// The id the next alert will get.
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    /// The earliest ladder deadline of any live alert.
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// What the changes so far ask of the shell.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    /// Whether changes wait to be committed.
    pub fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }

    /// Conditions whose alert staff resolved since the last call.
    pub fn take_closed(&mut self) -> Vec<AlertKey> {
        std::mem::take(&mut self.closed)
    }

    /// Applies one decision of the rules engine.
    pub fn decide(&mut self, d: Decision, world: &dyn World, now: DateTime<Utc>) {
        match d {
            Decision::Open {
                key,
                device_id,
                severity,
                at,
                details,
            } => {
                if let Some(id) = self.by_key.get(&key_of(&key)).copied() {
                    self.update(id, details, "condition detected again", now);
                } else {
                    self.open(key, device_id, severity, at, details, world, now);
                }
            }
            Decision::Update {
                key,
                device_id,
                severity,
                at,
                details,
            } => match self.by_key.get(&key_of(&key)).copied() {
                Some(id) => self.update(id, details, update_note(key.kind), now),
                // The engine still follows a condition whose alert is gone: never swallow it.
                None => self.open(key, device_id, severity, at, details, world, now),
            },
            Decision::Resolve { key, at, reason } => {
                if let Some(id) = self.by_key.get(&key_of(&key)).copied() {
                    let resolution = format!("condition_cleared: {reason}");
                    self.resolve(id, "hub", resolution, Some(reason), at.min(now), world, now);
                }
            }
        }
    }

    /// Writes a pause change and its audit entry with the next commit.
    pub fn note_pause(&mut self, change: super::effects::PauseChange, audit: AuditEntry) {
        self.effects.pauses.push(change);
        self.effects.audit.push(audit);
    }

    /// Carries out a staff command; the alert as it is after it.
    pub fn staff(
        &mut self,
        cmd: StaffCommand,
        world: &dyn World,
        now: DateTime<Utc>,
    ) -> Result<Alert, Refusal> {
        let id = cmd.alert_id;
        let live = self.live.get_mut(&id).ok_or(Refusal::NotLive)?;
        if let Some(waited) = apply(live, &cmd, now)? {
            self.effects.acknowledged.push(waited);
        }
        let name = cmd.action.name();
        self.effects.audit.push(AuditEntry {
            at: now,
            actor: cmd.actor.clone(),
            action: format!("alert.{name}"),
            target: format!("alert/{id}"),
            details: audit_details(&cmd),
        });
        if cmd.action == StaffAction::Resolve {
            let resolution = cmd
                .note
                .clone()
                .unwrap_or_else(|| "resolved by staff".into());
            let key = live.key();
            self.closed.push(AlertKey {
                resident_id: key.0,
                kind: key.1,
                subject: key.2,
            });
            let alert = self.resolve(id, &cmd.actor, resolution, cmd.note, now, world, now);
            return alert.ok_or(Refusal::NotLive);
        }
        live.alert.updated_at = now;
        self.history(id, now, name, &cmd.actor, history_note(&cmd), None);
        if matches!(
            cmd.action,
            StaffAction::Acknowledge | StaffAction::Snooze(_)
        ) {
            self.reschedule(id);
        }
        self.record(id);
        self.live
            .get(&id)
            .map(|l| l.alert.clone())
            .ok_or(Refusal::NotLive)
    }

    /// Takes every ladder step, reminder and quiet-hours release due at `now`.
    pub fn handle_timeout(&mut self, world: &dyn World, now: DateTime<Utc>) {
        let mut due = Vec::new();
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, id));
            if let Some(l) = self.live.get_mut(&id) {
                l.scheduled = None;
            }
            due.push(id);
        }
        for id in due {
            self.advance(id, world, now);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        key: AlertKey,
        device_id: Option<String>,
        severity: Severity,
        at: DateTime<Utc>,
        details: serde_json::Value,
        world: &dyn World,
        now: DateTime<Utc>,
    ) {
        let id = self.next_id;
        self.next_id += self.id_step;
        let alert = Alert {
            id,
            resident_id: key.resident_id,
            device_id,
            kind: key.kind,
            severity,
            state: AlertState::Open,
            escalated: false,
            opened_at: at.min(now),
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            resolution: None,
            details,
            updated_at: now,
            assigned_to: None,
            snoozed_until: None,
            tier: 0,
        };
        let details = alert.details.to_string();
        let plan = world
            .card(key.resident_id)
            .and_then(|c| c.check.clone())
            .filter(|p| p.applies(key.kind));
        let mut live = Live {
            alert,
            subject: key.subject,
            progress: Progress::default(),
            scheduled: None,
        };
        if let Some(plan) = &plan {
            live.alert.state = AlertState::Pending;
            live.progress.pending_until = Some(now + plan.timeout);
        }
        self.by_key.insert(live.key(), id);
        self.live.insert(id, live);
        self.history(id, now, "opened", "hub", None, Some(details));
        if let Some(plan) = plan {
            let note = format!(
                "asking the resident \"are you OK?\" on {} device(s); staff are told if nobody answers within {} s",
                plan.devices.len(),
                plan.timeout.num_seconds()
            );
            self.history(id, now, "asked", "hub", Some(note), None);
            self.effects.commands.extend(plan.questions(id));
        }
        self.advance(id, world, now);
        self.record(id);
    }

    /// The resident answered "I'm OK": every alert asking them closes as
    /// `resident_confirmed`, and the rules count afresh, as after a staff resolve.
    pub fn resident_ok(&mut self, resident_id: i64, world: &dyn World, now: DateTime<Utc>) {
        let asking: Vec<i64> = self
            .live
            .values()
            .filter(|l| l.alert.resident_id == resident_id && l.alert.state == AlertState::Pending)
            .map(|l| l.alert.id)
            .collect();
        for id in asking {
            if let Some(l) = self.live.get(&id) {
                let key = l.key();
                self.closed.push(AlertKey {
                    resident_id: key.0,
                    kind: key.1,
                    subject: key.2,
                });
            }
            let note = Some("the resident answered: I'm OK".to_owned());
            self.resolve(
                id,
                "resident",
                "resident_confirmed".into(),
                note,
                now,
                world,
                now,
            );
        }
    }

    fn update(&mut self, id: i64, details: serde_json::Value, note: &str, now: DateTime<Utc>) {
        let Some(l) = self.live.get_mut(&id) else {
            return;
        };
        l.alert.details = details;
        l.alert.updated_at = now;
        let text = l.alert.details.to_string();
        self.history(id, now, "updated", "hub", Some(note.to_owned()), Some(text));
        self.record(id);
    }

    /// Ends a live alert and tells everyone who was told of it.
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &mut self,
        id: i64,
        by: &str,
        resolution: String,
        note: Option<String>,
        at: DateTime<Utc>,
        world: &dyn World,
        now: DateTime<Utc>,
    ) -> Option<Alert> {
        let mut l = self.live.remove(&id)?;
        self.by_key.remove(&l.key());
        if let Some(t) = l.scheduled.take() {
            self.timers.remove(&(t, id));
        }
        let a = &mut l.alert;
        a.state = AlertState::Resolved;
        a.resolved_at = Some(at);
        a.resolved_by = Some(by.to_owned());
        a.resolution = Some(resolution);
        a.updated_at = now;
        self.history(id, now, "resolved", by, note, None);
        // The end of a non-critical alert can wait for the morning too: the outbox row
        // falls due when the contact's quiet hours end (the alert itself is gone by then).
        let told: Vec<(i64, DateTime<Utc>)> = world
            .card(l.alert.resident_id)
            .map(|card| {
                card.contacts
                    .iter()
                    .filter(|(c, _)| l.progress.told.contains(&c.id))
                    .map(|(c, _)| {
                        (
                            c.id,
                            policy::quiet_until(c, &l.alert, now, card.tz).unwrap_or(now),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (c, due) in told {
            let key = format!("alert-{id}-resolved-contact-{c}");
            self.notify(&l, c, NoticeEvent::Resolved, key, world, due);
        }
        let alert = l.alert.clone();
        self.effects.alerts.insert(
            id,
            AlertRecord {
                alert: l.alert,
                subject: l.subject,
                ladder: None,
            },
        );
        Some(alert)
    }

    /// Runs the ladder of one alert up to `now`, then schedules its next deadline.
    fn advance(&mut self, id: i64, world: &dyn World, now: DateTime<Utc>) {
        let Some(mut l) = self.live.remove(&id) else {
            return;
        };
        let plan = self.ladder.plan(l.alert.severity).clone();
        let before = (l.alert.clone(), l.progress.clone());
        if l.alert.state == AlertState::Pending {
            if l.progress.pending_until.is_some_and(|t| t > now) {
                self.live.insert(id, l);
                self.reschedule(id);
                return;
            }
            // Nobody answered: staff are told, the ladder counting from the condition.
            l.alert.state = AlertState::Open;
            l.progress.pending_until = None;
            self.history(
                id,
                now,
                "unconfirmed",
                "hub",
                Some("the resident did not answer; staff told".into()),
                None,
            );
        }
        if l.alert.state.awaits_answer() && l.alert.snoozed_until.is_none_or(|s| s <= now) {
            // Reminders first: a tier told at this instant hears the step, not a reminder too.
            self.remind(&mut l, &plan, world, now);
            self.climb(&mut l, &plan, world, now);
            if l.alert.state == AlertState::Open
                && plan
                    .unanswered_due(l.alert.opened_at)
                    .is_some_and(|t| t <= now)
            {
                l.alert.state = AlertState::Unanswered;
                let waited = (now - l.alert.opened_at).num_minutes();
                self.history(
                    id,
                    now,
                    "unanswered",
                    "hub",
                    Some(format!("nobody acknowledged within {waited} min")),
                    None,
                );
            }
        }
        self.release_held(&mut l, world, now);
        if (l.alert.clone(), l.progress.clone()) != before {
            l.alert.updated_at = now;
            self.live.insert(id, l);
            self.record(id);
        } else {
            self.live.insert(id, l);
        }
        self.reschedule(id);
    }

    fn climb(&mut self, l: &mut Live, plan: &Plan, world: &dyn World, now: DateTime<Utc>) {
        let id = l.alert.id;
        while let Some((due, step)) = plan.step_due(l.alert.opened_at, l.progress.steps_taken) {
            if due > now {
                break;
            }
            let n = l.progress.steps_taken;
            l.progress.steps_taken += 1;
            l.alert.tier = l.alert.tier.max(step.tier);
            let event = if n == 0 && step.after == Duration::zero() {
                NoticeEvent::Opened
            } else {
                l.alert.escalated = true;
                let waited = step.after.num_seconds();
                self.history(
                    id,
                    now,
                    "escalated",
                    "hub",
                    Some(format!(
                        "not acknowledged within {waited} s; tier {} told",
                        step.tier
                    )),
                    None,
                );
                NoticeEvent::Escalated
            };
            let chosen: Vec<i64> = world
                .card(l.alert.resident_id)
                .map(|card| {
                    card.contacts
                        .iter()
                        .filter(|(c, _)| c.tier == step.tier && policy::wants(c, &l.alert))
                        .map(|(c, _)| c.id)
                        .collect()
                })
                .unwrap_or_default();
            for c in chosen {
                let key = match event {
                    NoticeEvent::Opened => format!("alert-{id}-opened-contact-{c}"),
                    _ => format!("alert-{id}-escalated-{n}-contact-{c}"),
                };
                self.tell(l, c, event, key, world, now);
            }
        }
    }

    fn remind(&mut self, l: &mut Live, plan: &Plan, world: &dyn World, now: DateTime<Utc>) {
        let mut due = 0;
        while plan
            .reminder_due(l.alert.opened_at, l.progress.reminders + due)
            .is_some_and(|t| t <= now)
        {
            due += 1;
        }
        if due == 0 {
            return;
        }
        l.progress.reminders += due;
        let n = l.progress.reminders;
        let id = l.alert.id;
        let awake: Vec<i64> = world
            .card(l.alert.resident_id)
            .map(|card| {
                card.contacts
                    .iter()
                    .filter(|(c, _)| {
                        l.progress.told.contains(&c.id)
                            && !l.progress.confirmed.contains(&c.id)
                            && policy::quiet_until(c, &l.alert, now, card.tz).is_none()
                    })
                    .map(|(c, _)| c.id)
                    .collect()
            })
            .unwrap_or_default();
        self.history(
            id,
            now,
            "reminded",
            "hub",
            Some(format!(
                "reminder {n}: still not acknowledged; {} told again",
                awake.len()
            )),
            None,
        );
        for c in awake {
            let key = format!("alert-{id}-reminder-{n}-contact-{c}");
            self.notify(l, c, NoticeEvent::Reminder, key, world, now);
        }
    }

    /// Tells one contact now, or holds the notice until their quiet hours end.
    fn tell(
        &mut self,
        l: &mut Live,
        contact_id: i64,
        event: NoticeEvent,
        key: String,
        world: &dyn World,
        now: DateTime<Utc>,
    ) {
        let Some(card) = world.card(l.alert.resident_id) else {
            return;
        };
        let Some((c, _)) = card.contacts.iter().find(|(c, _)| c.id == contact_id) else {
            return;
        };
        if let Some(release_at) = policy::quiet_until(c, &l.alert, now, card.tz) {
            let local = release_at.with_timezone(&card.tz).format("%H:%M");
            let note = format!("notice to {} held until {local} (quiet hours)", c.name);
            l.progress.held.push(Held {
                contact_id,
                event,
                key,
                release_at,
            });
            self.history(l.alert.id, now, "held", "hub", Some(note), None);
            return;
        }
        l.progress.told.insert(contact_id);
        self.notify(l, contact_id, event, key, world, now);
    }

    fn release_held(&mut self, l: &mut Live, world: &dyn World, now: DateTime<Utc>) {
        let (due, later): (Vec<Held>, Vec<Held>) = std::mem::take(&mut l.progress.held)
            .into_iter()
            .partition(|h| h.release_at <= now);
        l.progress.held = later;
        for h in due {
            l.progress.told.insert(h.contact_id);
            self.notify(l, h.contact_id, h.event, h.key, world, now);
        }
    }

    /// Writes one outbox row for one contact about the alert as it is now, due at `due`.
    fn notify(
        &mut self,
        l: &Live,
        contact_id: i64,
        event: NoticeEvent,
        key: String,
        world: &dyn World,
        due: DateTime<Utc>,
    ) {
        let a = &l.alert;
        let Some(card) = world.card(a.resident_id) else {
            return;
        };
        let Some((contact, secret)) = card.contacts.iter().find(|(c, _)| c.id == contact_id) else {
            return;
        };
        let notice = Notice {
            event,
            resident: ResidentRef {
                id: a.resident_id,
                name: card.name.clone(),
                timezone: card.timezone.clone(),
            },
            alert: Some(a.clone()),
            position: own_fix(a).or_else(|| world.position(a.resident_id)),
            summary: None,
        };
        let Ok(payload) = serde_json::to_string(&notice) else {
            return;
        };
        self.effects.outbox.push(OutboxEntry {
            key,
            resident_id: a.resident_id,
            alert_id: Some(a.id),
            contact: contact.clone(),
            secret: secret.clone(),
            event,
            payload,
            created_at: due,
        });
    }

    fn history(
        &mut self,
        alert_id: i64,
        at: DateTime<Utc>,
        action: &'static str,
        actor: &str,
        note: Option<String>,
        details: Option<String>,
    ) {
        self.effects.history.push(HistoryRow {
            alert_id,
            at,
            action,
            actor: actor.to_owned(),
            note,
            details,
        });
    }

    /// Queues the live alert's current version for the commit.
    fn record(&mut self, id: i64) {
        if let Some(l) = self.live.get(&id) {
            self.effects.alerts.insert(
                id,
                AlertRecord {
                    alert: l.alert.clone(),
                    subject: l.subject.clone(),
                    ladder: serde_json::to_string(&l.progress).ok(),
                },
            );
        }
    }

    fn next_deadline(&self, l: &Live) -> Option<DateTime<Utc>> {
        if l.alert.state == AlertState::Pending {
            return l.progress.pending_until;
        }
        let held = l.progress.held.iter().map(|h| h.release_at).min();
        if !l.alert.state.awaits_answer() {
            return held;
        }
        let plan = self.ladder.plan(l.alert.severity);
        let opened = l.alert.opened_at;
        let unanswered = (l.alert.state == AlertState::Open)
            .then(|| plan.unanswered_due(opened))
            .flatten();
        let ladder = plan
            .step_due(opened, l.progress.steps_taken)
            .map(|(t, _)| t)
            .into_iter()
            .chain(plan.reminder_due(opened, l.progress.reminders))
            .chain(unanswered)
            .min()
            .map(|t| l.alert.snoozed_until.map_or(t, |s| t.max(s)));
        ladder.into_iter().chain(held).min()
    }

    fn reschedule(&mut self, id: i64) {
        let Some(l) = self.live.get(&id) else {
            return;
        };
        let next = self.next_deadline(l);
        let old = l.scheduled;
        if next == old {
            return;
        }
        if let Some(t) = old {
            self.timers.remove(&(t, id));
        }
        if let Some(t) = next {
            self.timers.insert((t, id));
        }
        if let Some(l) = self.live.get_mut(&id) {
            l.scheduled = next;
        }
    }
}

/// Checks a staff command against the alert's state and applies it to the alert; the
/// time to acknowledge when it acknowledged.
fn apply(
    live: &mut Live,
    cmd: &StaffCommand,
    now: DateTime<Utc>,
) -> Result<Option<(Severity, f64)>, Refusal> {
    let id = cmd.alert_id;
    let a = &mut live.alert;
    match &cmd.action {
        StaffAction::Acknowledge => {
            // Staff may take on an alert while the resident is still being asked.
            if !a.state.awaits_answer() && a.state != AlertState::Pending {
                return Err(Refusal::Forbidden(format!(
                    "alert {id} was already acknowledged{}",
                    a.acknowledged_by
                        .as_deref()
                        .map(|b| format!(" by {b}"))
                        .unwrap_or_default()
                )));
            }
            a.state = AlertState::Acknowledged;
            a.acknowledged_at = Some(now);
            a.acknowledged_by = Some(cmd.actor.clone());
            let waited = (now - a.opened_at).num_milliseconds().max(0) as f64 / 1000.0;
            return Ok(Some((a.severity, waited)));
        }
        StaffAction::Resolve => {}
        StaffAction::Note => {
            if cmd.note.is_none() {
                return Err(Refusal::Forbidden("a note needs some text".into()));
            }
        }
        StaffAction::Assign(to) => a.assigned_to = to.clone(),
        StaffAction::Confirm { contact_id } => {
            if !live.progress.told.contains(contact_id) {
                return Err(Refusal::Forbidden(format!(
                    "contact {contact_id} was not told of alert {id}"
                )));
            }
            live.progress.confirmed.insert(*contact_id);
        }
        StaffAction::Snooze(until) => {
            if a.severity == Severity::Critical {
                return Err(Refusal::Forbidden(format!(
                    "alert {id} is critical and cannot be snoozed; acknowledge it instead"
                )));
            }
            if !a.state.awaits_answer() {
                return Err(Refusal::Forbidden(format!(
                    "alert {id} is already acknowledged; its ladder has stopped"
                )));
            }
            if *until <= now || *until - now > MAX_SNOOZE {
                return Err(Refusal::Forbidden(
                    "a snooze must end in the future and within 24 hours".into(),
                ));
            }
            a.snoozed_until = Some(*until);
        }
    }
    Ok(None)
}

/// The fix an alert carries in its details (a geofence exit), if any.
fn own_fix(a: &Alert) -> Option<Position> {
    let d = &a.details;
    let (lat, lon) = (d["lat"].as_f64()?, d["lon"].as_f64()?);
    let at = serde_json::from_value(d["ts"].clone()).unwrap_or(a.updated_at);
    Some(Position { lat, lon, at })
}

fn update_note(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::Sos => "pressed again",
        AlertKind::GeofenceExit => "new position",
        _ => "details changed",
    }
}

fn history_note(cmd: &StaffCommand) -> Option<String> {
    match &cmd.action {
        StaffAction::Assign(Some(to)) => Some(cmd.note.as_ref().map_or_else(
            || format!("assigned to {to}"),
            |n| format!("assigned to {to}: {n}"),
        )),
        StaffAction::Assign(None) => Some("assignment cleared".into()),
        StaffAction::Snooze(until) => Some(cmd.note.as_ref().map_or_else(
            || format!("ladder paused until {until}"),
            |n| format!("ladder paused until {until}: {n}"),
        )),
        _ => cmd.note.clone(),
    }
}

fn audit_details(cmd: &StaffCommand) -> Option<serde_json::Value> {
    let mut d = serde_json::Map::new();
    if let Some(n) = &cmd.note {
        d.insert("note".into(), json!(n));
    }
    match &cmd.action {
        StaffAction::Assign(to) => {
            d.insert("assigned_to".into(), json!(to));
        }
        StaffAction::Snooze(until) => {
            d.insert("until".into(), json!(until));
        }
        _ => {}
    }
    (!d.is_empty()).then_some(serde_json::Value::Object(d))
}
