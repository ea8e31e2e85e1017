//! The pipeline's pure core: the rules engine and the alert book side by side, driven
//! by device events, staff commands and one clock, with one [`Core::poll_timeout`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mimamori_protocol::pause::Pause;
use mimamori_protocol::{Alert, DeviceEvent};
use mimamori_rules::{Engine, ResidentConfig, ResidentState, ResidentStatus};

use super::effects::{Effects, PauseChange};
use super::ladder::Ladder;
use super::lifecycle::{AlertBook, Card, Progress, Refusal, StaffCommand, World};
use super::pauses::{check_add, PauseCommand, PauseError};
use crate::notify::message::Position;
use crate::store::AuditEntry;

/// Everything the pipeline owns, without I/O.
#[derive(Debug)]
pub struct Core {
    engine: Engine,
    book: AlertBook,
    cards: HashMap<i64, Card>,
}

struct View<'a> {
    cards: &'a HashMap<i64, Card>,
    engine: &'a Engine,
}

impl World for View<'_> {
    fn card(&self, resident_id: i64) -> Option<&Card> {
        self.cards.get(&resident_id)
    }

    fn position(&self, resident_id: i64) -> Option<Position> {
        self.engine.last_position(resident_id).map(|p| Position {
            lat: p.lat,
            lon: p.lon,
            at: p.ts,
        })
    }
}

impl Core {
    /// An empty core; its first alert gets `next_alert_id`.
    pub fn new(ladder: Ladder, next_alert_id: i64) -> Core {
        Core {
            engine: Engine::new(),
            book: AlertBook::new(ladder, next_alert_id),
            cards: HashMap::new(),
        }
    }

    /// Makes every alert id this core opens equal `offset` modulo `step` (cluster mode:
    /// a partition's residue).
    pub fn share_alert_ids(&mut self, step: i64, offset: i64) {
        self.book.share_ids(step, offset);
    }

    /// Installs a resident at start-up with its stored rules state.
    /// How long overdue rule deadlines wait after a restore (see `Engine::set_restart_grace`).
    pub fn set_restart_grace(&mut self, grace: chrono::Duration) {
        self.engine.set_restart_grace(grace);
    }

    pub fn restore_resident(
        &mut self,
        cfg: ResidentConfig,
        card: Card,
        state: Option<ResidentState>,
        now: DateTime<Utc>,
    ) {
        self.cards.insert(cfg.resident_id, card);
        self.engine.restore(cfg, state, now);
    }

    /// Puts back a live alert read from the store at start-up.
    pub fn restore_alert(&mut self, alert: Alert, subject: String, progress: Progress) {
        self.book.restore(alert, subject, progress);
    }

    /// Adds a resident or applies a changed configuration (settings, zones, devices, contacts).
    pub fn configure(&mut self, cfg: ResidentConfig, card: Card, now: DateTime<Utc>) {
        self.cards.insert(cfg.resident_id, card);
        self.engine.configure(cfg, now);
        self.settle(now);
    }

    /// Forgets a deleted resident and its alerts.
    pub fn remove_resident(&mut self, resident_id: i64) {
        self.engine.remove_resident(resident_id);
        self.book.remove_resident(resident_id);
        self.cards.remove(&resident_id);
    }

    /// Feeds one accepted device event; the resident's "I'm OK" closes what asks them.
    pub fn handle_event(&mut self, ev: &DeviceEvent, now: DateTime<Utc>) {
        if ev.reading == mimamori_protocol::Reading::Ok {
            let view = View {
                cards: &self.cards,
                engine: &self.engine,
            };
            self.book.resident_ok(ev.resident_id, &view, now);
        }
        self.engine.handle_event(ev, now);
        self.settle(now);
    }

    /// Fires every rule deadline and ladder step due at `now`.
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        self.settle(now);
        let view = View {
            cards: &self.cards,
            engine: &self.engine,
        };
        self.book.handle_timeout(&view, now);
    }

    /// The earliest deadline of rules and ladders together.
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        [self.engine.poll_timeout(), self.book.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Carries out a staff command; its effects join the next commit.
    pub fn staff(&mut self, cmd: StaffCommand, now: DateTime<Utc>) -> Result<Alert, Refusal> {
        let view = View {
            cards: &self.cards,
            engine: &self.engine,
        };
        let result = self.book.staff(cmd, &view, now);
        self.settle(now);
        result
    }

    /// Adds or removes a dated pause; the pause row, its audit entry and whatever the
    /// rules decide because of it join the next commit.
    pub fn pause(&mut self, cmd: PauseCommand, now: DateTime<Utc>) -> Result<Pause, PauseError> {
        let rid = cmd.resident_id();
        let mut pauses = self
            .engine
            .pauses(rid)
            .ok_or_else(|| PauseError::NotFound(format!("no resident {rid}")))?
            .to_vec();
        let (pause, change, actor, action) = match cmd {
            PauseCommand::Add(p) => {
                check_add(&pauses, &p, now)?;
                pauses.push(p.clone());
                let actor = p.created_by.clone();
                (p.clone(), PauseChange::Add(p), actor, "pause.create")
            }
            PauseCommand::Remove {
                id, actor, only_by, ..
            } => {
                let at = pauses
                    .iter()
                    .position(|p| p.id == id && only_by.as_ref().is_none_or(|u| *u == p.created_by))
                    .ok_or_else(|| PauseError::NotFound(format!("no pause {id}")))?;
                let p = pauses.remove(at);
                let change = PauseChange::Remove {
                    resident_id: rid,
                    id,
                };
                (p, change, actor, "pause.delete")
            }
        };
        self.engine.set_pauses(rid, pauses, now);
        let audit = AuditEntry {
            at: now,
            actor,
            action: action.into(),
            target: format!("resident/{rid}/pauses/{}", pause.id),
            details: serde_json::to_value(&pause).ok(),
        };
        self.book.note_pause(change, audit);
        self.settle(now);
        Ok(pause)
    }

    /// Whether this commit decides an alert (and so must not wait for more messages).
    pub fn has_alert_changes(&self) -> bool {
        self.book.has_effects()
    }

    /// The rows and announcements gathered since the last call.
    pub fn take_effects(&mut self) -> Effects {
        self.book.take_effects()
    }

    /// Residents whose rules state changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<i64> {
        self.engine.take_dirty()
    }

    pub fn rule_state(&self, resident_id: i64) -> Option<&ResidentState> {
        self.engine.state(resident_id)
    }

    pub fn status(&self, resident_id: i64) -> Option<ResidentStatus> {
        self.engine.status(resident_id)
    }

    pub fn resident_count(&self) -> usize {
        self.engine.resident_count()
    }

    /// The alert book, to read.
    pub fn book(&self) -> &AlertBook {
        &self.book
    }

    /// Passes the engine's decisions to the book, and staff resolutions back to the engine.
    fn settle(&mut self, now: DateTime<Utc>) {
        loop {
            let decisions: Vec<_> = std::iter::from_fn(|| self.engine.poll_decision()).collect();
            let view = View {
                cards: &self.cards,
                engine: &self.engine,
            };
            for d in decisions.iter().cloned() {
                self.book.decide(d, &view, now);
            }
            let closed = self.book.take_closed();
            for key in &closed {
                self.engine.staff_closed(key, now);
            }
            if decisions.is_empty() && closed.is_empty() {
                break;
            }
        }
    }
}
