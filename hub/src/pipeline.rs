//! The pipeline: the single writer between ingest and the store, and the shell
//! around the pure rules engine.
//!
//! It takes ingested items in batches, runs them through the engine, and writes
//! readings, dead letters, the engine's state and every alert change in ONE
//! transaction; only then are the devices' QoS 1/2 messages acknowledged and the
//! alerts published. A crash before the commit loses nothing a device was told is
//! safe, and the state on disk always matches the alerts on disk, so a restart
//! resumes every timer from its stored deadline and never opens an alert twice.
//! Timers are the engine's own: the loop sleeps until `poll_timeout`.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mimamori_protocol::topic::alerts_topic;
use mimamori_protocol::{Alert, DeviceEvent, Reading};
use mimamori_rules::{Decision, DeviceInfo, Engine, ResidentConfig, ResidentState, SafeZone};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::edge::router::HubPublisher;
use crate::events::{Bus, HubEvent};
use crate::ingest::{Envelope, Item};
use crate::metrics::Metrics;
use crate::store::{AlertChange, Batch, ResidentSetup, Store};

/// Most items written in one transaction.
const MAX_BATCH: usize = 2_000;
/// Under load, how long a batch waits for more messages before it commits. Every commit
/// rewrites the pages it touches (the readings index, devices, rules state), so a few
/// large commits write far less than many small ones; a batch that decides an alert
/// commits at once.
const LINGER: Duration = Duration::from_millis(10);
/// A batch this big means the hub is under load, and the next one lingers.
const LINGER_AFTER: usize = 64;
/// How often WebSocket viewers get a resident's status at most. A status is a snapshot,
/// so the latest one says all: under a burst of readings, building and sending one per
/// batch would queue thousands of frames ahead of the next alert. Alerts and positions
/// still go out with the batch that stored them.
const STATUS_PERIOD: Duration = Duration::from_millis(250);

/// A change of configuration the engine must learn about.
#[derive(Debug)]
pub enum Command {
    /// A resident, its zones or its devices changed: reload them from the store.
    Reload(i64),
    /// A resident was deleted.
    Remove(i64),
    /// The current status of these residents, for a WebSocket snapshot.
    Statuses(
        Vec<i64>,
        oneshot::Sender<Vec<mimamori_rules::ResidentStatus>>,
    ),
}

/// How the API tells the pipeline about configuration changes.
#[derive(Clone)]
pub struct PipelineHandle {
    tx: mpsc::UnboundedSender<(Command, oneshot::Sender<()>)>,
}

impl PipelineHandle {
    /// Applies a command and waits until the engine has it, so that a device created
    /// by the API is known to the rules before its credentials are handed out.
    pub async fn send(&self, cmd: Command) {
        let (done, wait) = oneshot::channel();
        if self.tx.send((cmd, done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// The live status of these residents, as the engine sees them now.
    pub async fn statuses(&self, ids: Vec<i64>) -> Vec<mimamori_rules::ResidentStatus> {
        let (reply, answer) = oneshot::channel();
        let (done, _) = oneshot::channel();
        if self.tx.send((Command::Statuses(ids, reply), done)).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

pub struct Pipeline {
    store: Arc<dyn Store>,
    engine: Engine,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    bus: Bus,
    publisher: HubPublisher,
    items: mpsc::Receiver<Envelope>,
    commands: mpsc::UnboundedReceiver<(Command, oneshot::Sender<()>)>,
    /// Residents whose status viewers have not seen since it changed.
    stale_statuses: BTreeSet<i64>,
    /// When the stale statuses go out.
    statuses_due: Option<tokio::time::Instant>,
    /// Messages in the last batch.
    last_batch: usize,
}

/// What one batch gathers before it is written.
#[derive(Default)]
struct Gathered {
    readings: Vec<DeviceEvent>,
    rejected: Vec<crate::store::RejectedRow>,
    acks: Vec<oneshot::Sender<bool>>,
    messages: usize,
}

impl Pipeline {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        bus: Bus,
        publisher: HubPublisher,
        items: mpsc::Receiver<Envelope>,
    ) -> (Pipeline, PipelineHandle) {
        let (tx, commands) = mpsc::unbounded_channel();
        let p = Pipeline {
            store,
            engine: Engine::new(),
            clock,
            metrics,
            bus,
            publisher,
            items,
            commands,
            stale_statuses: BTreeSet::new(),
            statuses_due: None,
            last_batch: 0,
        };
        (p, PipelineHandle { tx })
    }

    /// Loads every resident and its stored rules state, then fires what fell due while
    /// the hub was down. Returns how many residents are watched.
    pub async fn restore(&mut self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let setups = self.store.all_resident_setups().await?;
        let mut states: std::collections::HashMap<i64, String> =
            self.store.rule_states().await?.into_iter().collect();
        for setup in setups {
            let state = states
                .remove(&setup.resident.id)
                .and_then(|s| parse_state(setup.resident.id, &s));
            self.engine.restore(resident_config(&setup), state, now);
        }
        self.engine.handle_timeout(now);
        self.commit(Vec::new(), Vec::new(), Vec::new(), now).await;
        Ok(self.engine.resident_count())
    }

    pub async fn run(mut self) {
        loop {
            let deadline = self.engine.poll_timeout();
            tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some((cmd, done)) => {
                        self.command(cmd).await;
                        let _ = done.send(());
                    }
                    None => break,
                },
                first = self.items.recv() => match first {
                    Some(first) => self.ingest(first).await,
                    None => break,
                },
                _ = sleep_until_instant(self.statuses_due) => self.send_statuses(),
                _ = sleep_until(deadline, self.clock.now()) => {
                    let now = self.clock.now();
                    self.engine.handle_timeout(now);
                    self.commit(Vec::new(), Vec::new(), Vec::new(), now).await;
                }
            }
        }
        info!("pipeline stopped");
    }

    async fn command(&mut self, cmd: Command) {
        let now = self.clock.now();
        match cmd {
            Command::Reload(id) => match self.store.resident_setup(id).await {
                Ok(setup) => self.engine.configure(resident_config(&setup), now),
                Err(e) => warn!(resident = id, error = %e, "cannot reload resident"),
            },
            Command::Remove(id) => self.engine.remove_resident(id),
            Command::Statuses(ids, reply) => {
                let _ = reply.send(
                    ids.iter()
                        .filter_map(|id| self.engine.status(*id))
                        .collect(),
                );
                return;
            }
        }
        self.commit(Vec::new(), Vec::new(), Vec::new(), now).await;
    }

    /// Takes everything already queued (up to a batch) and commits it as one; under
    /// load, waits up to [`LINGER`] for more unless an alert is to be written.
    async fn ingest(&mut self, first: Envelope) {
        let mut batch = Gathered::default();
        self.gather(first, &mut batch);
        let linger_until =
            (self.last_batch >= LINGER_AFTER).then(|| tokio::time::Instant::now() + LINGER);
        loop {
            while batch.messages < MAX_BATCH {
                match self.items.try_recv() {
                    Ok(e) => self.gather(e, &mut batch),
                    Err(_) => break,
                }
            }
            let Some(until) = linger_until else { break };
            if batch.messages >= MAX_BATCH || self.engine.has_decisions() {
                break;
            }
            match tokio::time::timeout_at(until, self.items.recv()).await {
                Ok(Some(e)) => self.gather(e, &mut batch),
                _ => break,
            }
        }
        self.last_batch = batch.messages;
        let now = self.clock.now();
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        self.commit(batch.readings, batch.rejected, batch.acks, now)
            .await;
    }

    /// Runs one message through the rules and adds it to the batch.
    fn gather(&mut self, env: Envelope, batch: &mut Gathered) {
        batch.messages += 1;
        match env.item {
            Item::Accepted(ev) => {
                self.engine.handle_event(&ev, self.clock.now());
                batch.readings.push(ev);
            }
            Item::Rejected(r) => batch.rejected.push(r),
            Item::Ignored => {}
        }
        batch.acks.extend(env.ack);
    }

    /// Writes one batch with the engine's decisions and state, then acknowledges and publishes.
    async fn commit(
        &mut self,
        readings: Vec<DeviceEvent>,
        rejected: Vec<crate::store::RejectedRow>,
        acks: Vec<oneshot::Sender<bool>>,
        now: DateTime<Utc>,
    ) {
        let mut changes = Vec::new();
        while let Some(d) = self.engine.poll_decision() {
            changes.push(alert_change(d));
        }
        let dirty = self.engine.take_dirty();
        let rule_states = dirty
            .iter()
            .filter_map(|id| {
                self.engine
                    .state(*id)
                    .and_then(|s| serde_json::to_string(s).ok())
                    .map(|s| (*id, s))
            })
            .collect();
        let batch = Batch {
            readings,
            rejected,
            rule_states,
            alert_changes: changes,
            at: now,
        };
        if batch.is_empty() {
            for a in acks {
                let _ = a.send(true);
            }
            return;
        }
        let started = std::time::Instant::now();
        let written = self.store.commit_batch(&batch).await;
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        match written {
            Ok(alerts) => {
                self.metrics.batches.inc();
                self.metrics
                    .batch_items
                    .observe((batch.readings.len() + batch.rejected.len()) as f64);
                self.metrics.accepted.inc_by(batch.readings.len() as u64);
                batch
                    .rejected
                    .iter()
                    .for_each(|r| self.metrics.reject(r.reason));
                for a in acks {
                    let _ = a.send(true);
                }
                self.announce(&batch, alerts, &dirty);
            }
            Err(e) => {
                error!(error = %e, items = batch.readings.len() + batch.rejected.len(), "batch not stored; devices will resend");
                self.metrics.batch_failures.inc();
                for a in acks {
                    let _ = a.send(false);
                }
                self.reload_after_failure(&dirty).await;
            }
        }
    }

    /// Tells WebSocket clients and MQTT subscribers what the committed batch changed.
    fn announce(&mut self, batch: &Batch, alerts: Vec<Alert>, dirty: &[i64]) {
        self.metrics.alerts_changed.inc_by(alerts.len() as u64);
        for alert in alerts {
            if let Ok(json) = serde_json::to_vec(&alert) {
                self.publisher
                    .publish(alerts_topic(alert.resident_id), json);
            }
            self.bus.publish(HubEvent::Alert { alert });
        }
        if !self.bus.has_subscribers() {
            return;
        }
        for ev in &batch.readings {
            if let Reading::Position {
                lat,
                lon,
                accuracy_m,
            } = ev.reading
            {
                self.bus.publish(HubEvent::Position {
                    resident_id: ev.resident_id,
                    device_id: ev.device_id.clone(),
                    lat,
                    lon,
                    accuracy_m,
                    ts: ev.ts,
                });
            }
        }
        self.stale_statuses.extend(
            batch
                .readings
                .iter()
                .map(|r| r.resident_id)
                .chain(dirty.iter().copied()),
        );
        if self.statuses_due.is_none() {
            self.statuses_due = Some(tokio::time::Instant::now() + STATUS_PERIOD);
        }
    }

    /// The current status of every resident that changed since the last time.
    fn send_statuses(&mut self) {
        self.statuses_due = None;
        let stale = std::mem::take(&mut self.stale_statuses);
        if !self.bus.has_subscribers() {
            return;
        }
        for id in stale {
            if let Some(status) = self.engine.status(id) {
                self.bus.publish(HubEvent::Status { status });
            }
        }
    }

    /// After a failed commit the engine is ahead of the store: put the residents it
    /// changed back to their stored state, so memory and disk agree again.
    async fn reload_after_failure(&mut self, dirty: &[i64]) {
        let now = self.clock.now();
        for id in dirty {
            let setup = self.store.resident_setup(*id).await;
            let state = self.store.rule_state(*id).await;
            match (setup, state) {
                (Ok(setup), Ok(state)) => {
                    let state = state.and_then(|s| parse_state(*id, &s));
                    self.engine.restore(resident_config(&setup), state, now);
                }
                _ => warn!(
                    resident = id,
                    "cannot reload state after a failed commit; keeping memory"
                ),
            }
        }
        while self.engine.poll_decision().is_some() {}
        self.engine.take_dirty();
    }
}

fn parse_state(resident_id: i64, text: &str) -> Option<ResidentState> {
    match serde_json::from_str(text) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(resident = resident_id, error = %e, "stored rules state unreadable; starting afresh");
            None
        }
    }
}

/// The engine's view of a resident: settings, local time zone, zones and devices.
pub fn resident_config(setup: &ResidentSetup) -> ResidentConfig {
    let r = &setup.resident;
    let timezone = chrono_tz::Tz::from_str(&r.timezone).unwrap_or_else(|_| {
        warn!(resident = r.id, tz = %r.timezone, "unknown time zone; using Asia/Tokyo");
        chrono_tz::Asia::Tokyo
    });
    let zones = setup
        .zones
        .iter()
        .filter_map(|z| match SafeZone::new(z.id, z.name.clone(), &z.shape) {
            Ok(zone) => Some(zone),
            Err(e) => {
                warn!(zone = z.id, error = %e, "stored zone invalid; ignored");
                None
            }
        })
        .collect();
    let devices = setup
        .devices
        .iter()
        .map(|(id, kind)| DeviceInfo {
            id: id.clone(),
            kind: *kind,
        })
        .collect();
    ResidentConfig {
        resident_id: r.id,
        timezone,
        settings: r.rules.clone(),
        zones,
        devices,
    }
}

fn alert_change(d: Decision) -> AlertChange {
    match d {
        Decision::Open {
            key,
            device_id,
            severity,
            at,
            details,
        } => AlertChange::Open {
            resident_id: key.resident_id,
            kind: key.kind,
            subject: key.subject,
            device_id,
            severity,
            at,
            details,
        },
        Decision::Update { key, at, details } => AlertChange::Update {
            resident_id: key.resident_id,
            kind: key.kind,
            subject: key.subject,
            at,
            details,
        },
        Decision::Resolve { key, at, reason } => AlertChange::Resolve {
            resident_id: key.resident_id,
            kind: key.kind,
            subject: key.subject,
            at,
            reason,
        },
    }
}

async fn sleep_until_instant(due: Option<tokio::time::Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until the engine's next deadline on the wall clock, or forever without one.
async fn sleep_until(deadline: Option<DateTime<Utc>>, now: DateTime<Utc>) {
    match deadline {
        Some(d) => {
            let wait = (d - now).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await
        }
        None => std::future::pending().await,
    }
}
