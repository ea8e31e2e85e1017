//! The pipeline: the single writer between ingest and the store, the one owner of
//! rules and alert state, and the shell around the pure [`Core`].
//!
//! It takes ingested items in batches and staff commands one at a time, runs them
//! through the core, and writes readings, dead letters, the engine's state and every
//! alert, history, audit and outbox row in ONE transaction; only then are the devices'
//! QoS 1/2 messages acknowledged, staff answered, and the alerts announced (one
//! [`Pipeline::announce`]). A crash before the commit loses nothing a device or a staff
//! member was told is safe, and the state on disk always matches the alerts on disk, so
//! a restart resumes every rule timer and ladder step from its stored deadline and
//! never opens an alert twice. Timers are the core's own: the loop sleeps until
//! `poll_timeout`.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mimamori_protocol::pause::Pause;
use mimamori_protocol::topic::alerts_topic;
use mimamori_protocol::{Alert, DeviceEvent, Reading};
use mimamori_rules::{ResidentConfig, ResidentState, SafeZone};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::alerts::lifecycle::Progress;
use crate::alerts::{Card, Core, Effects, Ladder, PauseCommand, PauseError, Refusal, StaffCommand};
use crate::clock::Clock;
use crate::cluster::live::LiveSink;
use crate::cluster::owner::Scope;
use crate::edge::router::HubPublisher;
use crate::events::{Bus, HubEvent};
use crate::ingest::{Envelope, Item};
use crate::metrics::Metrics;
use crate::store::{Batch, Fence, ResidentSetup, Store, StoreError};

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
/// Pause between attempts to reload from a store that failed a commit.
const RECOVER_PAUSE: Duration = Duration::from_secs(1);

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
    /// A staff action on an alert, answered once it is committed.
    Staff(StaffCommand, oneshot::Sender<Result<Alert, StaffError>>),
    /// A dated pause added or removed, answered once it is committed.
    Pause(PauseCommand, oneshot::Sender<Result<Pause, PauseError>>),
}

/// Why a staff command did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StaffError {
    Refused(Refusal),
    /// The store failed the commit; nothing changed.
    NotStored,
    /// The pipeline has stopped.
    Stopped,
}

/// Commands as the pipeline receives them, each with the signal that it was applied.
pub type Commands = mpsc::UnboundedReceiver<(Command, oneshot::Sender<()>)>;

/// How the API tells the pipeline about configuration changes.
#[derive(Clone)]
pub struct PipelineHandle {
    tx: mpsc::UnboundedSender<(Command, oneshot::Sender<()>)>,
}

impl PipelineHandle {
    /// A handle and the receiving end of its commands, for whoever serves them.
    pub fn channel() -> (PipelineHandle, Commands) {
        let (tx, rx) = mpsc::unbounded_channel();
        (PipelineHandle { tx }, rx)
    }

    /// Applies a command and waits until the engine has it, so that a device created
    /// by the API is known to the rules before its credentials are handed out.
    pub async fn send(&self, cmd: Command) {
        let (done, wait) = oneshot::channel();
        if self.tx.send((cmd, done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Carries out a staff action through the one owner of alerts; answers after the commit.
    pub async fn staff(&self, cmd: StaffCommand) -> Result<Alert, StaffError> {
        let (reply, answer) = oneshot::channel();
        let (done, _) = oneshot::channel();
        if self.tx.send((Command::Staff(cmd, reply), done)).is_err() {
            return Err(StaffError::Stopped);
        }
        answer.await.unwrap_or(Err(StaffError::Stopped))
    }

    /// Adds or removes a dated pause through the one owner of rules state; answers after
    /// the commit.
    pub async fn pause(&self, cmd: PauseCommand) -> Result<Pause, PauseError> {
        let (reply, answer) = oneshot::channel();
        let (done, _) = oneshot::channel();
        if self.tx.send((Command::Pause(cmd, reply), done)).is_err() {
            return Err(PauseError::Stopped);
        }
        answer.await.unwrap_or(Err(PauseError::Stopped))
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
    core: Core,
    ladder: Ladder,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    bus: Bus,
    publisher: HubPublisher,
    items: mpsc::Receiver<Envelope>,
    /// SOS presses: taken before `items`, committed without waiting for more.
    urgent: mpsc::Receiver<Envelope>,
    commands: Commands,
    /// Cluster mode: the partition this pipeline owns, and where its changes are shown.
    partition: Option<(Scope, LiveSink)>,
    /// Cluster mode: a commit failed, so the events handed over since the last commit are
    /// only in memory; the pipeline stops and the partition is read again from the log.
    stopped: bool,
    /// Residents whose status viewers have not seen since it changed.
    stale_statuses: BTreeSet<i64>,
    /// When the stale statuses go out.
    statuses_due: Option<tokio::time::Instant>,
    /// Messages in the last batch.
    last_batch: usize,
    /// How long overdue rule deadlines wait after the core is loaded from the store.
    restart_grace: chrono::Duration,
    /// Residents with a current consent; everyone else's messages are refused. Kept
    /// here, beside the residents the core watches, and changed by the same reload.
    consented: HashSet<i64>,
}

/// What one batch gathers before it is written.
#[derive(Default)]
struct Gathered {
    readings: Vec<DeviceEvent>,
    rejected: Vec<crate::store::RejectedRow>,
    acks: Vec<oneshot::Sender<bool>>,
    /// Cluster mode: the event-log sequences of the batch.
    seqs: Vec<u64>,
    messages: usize,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        ladder: Ladder,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        bus: Bus,
        publisher: HubPublisher,
        items: mpsc::Receiver<Envelope>,
        urgent: mpsc::Receiver<Envelope>,
    ) -> (Pipeline, PipelineHandle) {
        let (handle, commands) = PipelineHandle::channel();
        let p = Pipeline {
            store,
            core: Core::new(ladder.clone(), 1),
            ladder,
            clock,
            metrics,
            bus,
            publisher,
            items,
            urgent,
            commands,
            partition: None,
            stopped: false,
            stale_statuses: BTreeSet::new(),
            statuses_due: None,
            last_batch: 0,
            restart_grace: chrono::Duration::seconds(60),
            consented: HashSet::new(),
        };
        (p, handle)
    }

    /// Cluster mode: this pipeline owns one partition's residents, commits under its
    /// lease and announces through the live stream.
    pub fn in_partition(&mut self, scope: Scope, live: LiveSink) {
        self.partition = Some((scope, live));
    }

    fn holds(&self, resident_id: i64) -> bool {
        self.partition
            .as_ref()
            .is_none_or(|(scope, _)| scope.holds(resident_id))
    }

    /// Sets how long overdue rule deadlines wait after the core is loaded from the store.
    pub fn set_restart_grace(&mut self, grace: chrono::Duration) {
        self.restart_grace = grace;
    }

    /// Loads every resident with its stored rules state and every live alert, then fires
    /// what fell due while the hub was down. Returns how many residents are watched.
    pub async fn restore(&mut self) -> anyhow::Result<usize> {
        self.load().await?;
        let now = self.clock.now();
        self.core.handle_timeout(now);
        self.commit(Gathered::default(), now).await;
        Ok(self.core.resident_count())
    }

    /// Builds the core afresh from the store.
    async fn load(&mut self) -> anyhow::Result<()> {
        let now = self.clock.now();
        let mut core = Core::new(self.ladder.clone(), self.store.next_alert_id().await?);
        if let Some((scope, _)) = &self.partition {
            core.share_alert_ids(i64::from(scope.partitions), i64::from(scope.part));
        }
        core.set_restart_grace(self.restart_grace);
        let mut setups = self.store.all_resident_setups().await?;
        setups.retain(|s| self.holds(s.resident.id));
        let mut states: std::collections::HashMap<i64, String> =
            self.store.rule_states().await?.into_iter().collect();
        let mut consented: HashSet<i64> = self
            .store
            .consented_residents()
            .await?
            .into_iter()
            .collect();
        consented.retain(|id| self.holds(*id));
        for setup in setups {
            let state = states
                .remove(&setup.resident.id)
                .and_then(|s| parse_state(setup.resident.id, &s));
            core.restore_resident(resident_config(&setup), resident_card(&setup), state, now);
        }
        for stored in self.store.live_alerts().await? {
            if !self.holds(stored.alert.resident_id) {
                continue;
            }
            let progress = stored
                .ladder
                .as_deref()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_else(|| Progress::resumed(&stored.alert));
            core.restore_alert(stored.alert, stored.subject, progress);
        }
        self.core = core;
        self.consented = consented;
        Ok(())
    }

    pub async fn run(mut self) {
        while !self.stopped {
            let deadline = self.core.poll_timeout();
            tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some((cmd, done)) => {
                        self.command(cmd).await;
                        let _ = done.send(());
                    }
                    None => break,
                },
                Some(first) = self.urgent.recv() => self.ingest_urgent(first).await,
                first = self.items.recv() => match first {
                    Some(first) => self.ingest(first).await,
                    None => break,
                },
                _ = sleep_until_instant(self.statuses_due) => self.send_statuses().await,
                _ = sleep_until(deadline, self.clock.now()) => {
                    let now = self.clock.now();
                    self.core.handle_timeout(now);
                    self.commit(Gathered::default(), now).await;
                }
            }
        }
        info!("pipeline stopped");
    }

    async fn command(&mut self, cmd: Command) {
        let now = self.clock.now();
        match cmd {
            Command::Reload(id) if !self.holds(id) => return,
            Command::Reload(id) => {
                match self.store.resident_setup(id).await {
                    Ok(setup) => {
                        self.core
                            .configure(resident_config(&setup), resident_card(&setup), now);
                        if self.has_viewers() {
                            let name = setup.resident.name.clone();
                            self.show(HubEvent::Resident {
                                resident_id: id,
                                name,
                            })
                            .await;
                        }
                    }
                    Err(e) => warn!(resident = id, error = %e, "cannot reload resident"),
                }
                self.reload_consent(id).await;
            }
            Command::Remove(id) => {
                self.core.remove_resident(id);
                self.consented.remove(&id);
            }
            Command::Statuses(ids, reply) => {
                let _ = reply.send(ids.iter().filter_map(|id| self.core.status(*id)).collect());
                return;
            }
            Command::Staff(cmd, reply) => {
                let result = self.core.staff(cmd, now).map_err(StaffError::Refused);
                let stored = self.commit(Gathered::default(), now).await;
                let _ = reply.send(match result {
                    Ok(_) if !stored => Err(StaffError::NotStored),
                    other => other,
                });
                return;
            }
            Command::Pause(cmd, reply) if !self.holds(cmd.resident_id()) => {
                let _ = reply.send(Err(PauseError::Stopped));
                return;
            }
            Command::Pause(cmd, reply) => {
                let result = self.core.pause(cmd, now);
                let stored = self.commit(Gathered::default(), now).await;
                let _ = reply.send(match result {
                    Ok(_) if !stored => Err(PauseError::NotStored),
                    other => other,
                });
                return;
            }
        }
        self.commit(Gathered::default(), now).await;
    }

    /// Learns whether a resident has a current consent. A store that cannot say keeps
    /// what was known: a failed read must not start collecting, nor stop it.
    async fn reload_consent(&mut self, id: i64) {
        match self.store.has_consent(id).await {
            Ok(true) => {
                self.consented.insert(id);
            }
            Ok(false) => {
                self.consented.remove(&id);
            }
            Err(e) => warn!(resident = id, error = %e, "cannot read the resident's consent"),
        }
    }

    /// Commits the urgent items queued now, alone: the bulk queued before them waits for
    /// the next batch.
    async fn ingest_urgent(&mut self, first: Envelope) {
        let mut batch = Gathered::default();
        self.gather(first, &mut batch);
        while batch.messages < MAX_BATCH {
            match self.urgent.try_recv() {
                Ok(e) => self.gather(e, &mut batch),
                Err(_) => break,
            }
        }
        self.finish(batch).await;
    }

    /// Takes everything already queued (up to a batch) and commits it as one; under
    /// load, waits up to [`LINGER`] for more unless an alert is to be written.
    async fn ingest(&mut self, first: Envelope) {
        let mut batch = Gathered::default();
        self.gather(first, &mut batch);
        let linger_until =
            (self.last_batch >= LINGER_AFTER).then(|| tokio::time::Instant::now() + LINGER);
        loop {
            // An alert decided, or an urgent item waiting, ends the batch: an alarm must
            // not wait behind more readings.
            while batch.messages < MAX_BATCH
                && !self.core.has_alert_changes()
                && self.urgent.is_empty()
            {
                match self.items.try_recv() {
                    Ok(e) => self.gather(e, &mut batch),
                    Err(_) => break,
                }
            }
            let Some(until) = linger_until else { break };
            if batch.messages >= MAX_BATCH
                || self.core.has_alert_changes()
                || !self.urgent.is_empty()
            {
                break;
            }
            tokio::select! {
                biased;
                // Joins this batch, which then commits at once.
                Some(e) = self.urgent.recv() => self.gather(e, &mut batch),
                next = tokio::time::timeout_at(until, self.items.recv()) => match next {
                    Ok(Some(e)) => self.gather(e, &mut batch),
                    _ => break,
                },
            }
        }
        self.last_batch = batch.messages;
        self.finish(batch).await;
    }

    /// Fires what fell due and commits a gathered batch.
    async fn finish(&mut self, batch: Gathered) {
        let now = self.clock.now();
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.commit(batch, now).await;
    }

    /// Runs one message through the rules and adds it to the batch.
    fn gather(&mut self, env: Envelope, batch: &mut Gathered) {
        batch.messages += 1;
        if env.seq != 0 {
            batch.seqs.push(env.seq);
        }
        match env.item {
            Item::Accepted(ev) if !self.consented.contains(&ev.resident_id) => {
                batch.rejected.push(no_consent(&ev));
            }
            Item::Accepted(ev) => {
                self.core.handle_event(&ev, self.clock.now());
                batch.readings.push(ev);
            }
            Item::Rejected(r) => batch.rejected.push(r),
            Item::Ignored => {}
        }
        batch.acks.extend(env.ack);
    }

    /// Takes the core's effects and the changed rules state into one batch.
    fn take_batch(
        &mut self,
        readings: Vec<DeviceEvent>,
        rejected: Vec<crate::store::RejectedRow>,
        now: DateTime<Utc>,
    ) -> (Batch, Vec<i64>) {
        let effects = self.core.take_effects();
        let dirty = self.core.take_dirty();
        let rule_states = dirty
            .iter()
            .filter_map(|id| {
                self.core
                    .rule_state(*id)
                    .and_then(|s| serde_json::to_string(s).ok())
                    .map(|s| (*id, s))
            })
            .collect();
        let batch = Batch {
            readings,
            rejected,
            rule_states,
            effects,
            at: now,
            fence: None,
        };
        (batch, dirty)
    }

    /// The lease a cluster commit is made under, reaching as far into the log as the
    /// events `seqs` let it.
    fn fence(&self, seqs: &[u64]) -> Option<Fence> {
        let (scope, _) = self.partition.as_ref()?;
        Some(Fence {
            partition: scope.part,
            owner: scope.owner.clone(),
            token: scope.token,
            applied_seq: scope.cursor().watermark(seqs),
        })
    }

    async fn write(&self, batch: &Batch) -> Result<(), crate::store::StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let written = self.store.commit_batch(batch).await;
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        written
    }

    /// Writes one batch with the core's effects and state, then acknowledges and
    /// announces; `false` if the store refused it (nothing of it is kept).
    async fn commit(&mut self, gathered: Gathered, now: DateTime<Utc>) -> bool {
        let Gathered {
            readings,
            rejected,
            acks,
            seqs,
            ..
        } = gathered;
        let (mut batch, dirty) = self.take_batch(readings, rejected, now);
        if !batch.is_empty() {
            batch.fence = self.fence(&seqs);
        }
        match self.write(&batch).await {
            Ok(()) => {
                if let Some((scope, _)) = &self.partition {
                    scope.cursor().applied(&seqs);
                }
                if !batch.is_empty() {
                    self.metrics.batches.inc();
                    self.metrics
                        .batch_items
                        .observe((batch.readings.len() + batch.rejected.len()) as f64);
                }
                self.metrics.accepted.inc_by(batch.readings.len() as u64);
                batch
                    .rejected
                    .iter()
                    .for_each(|r| self.metrics.reject(r.reason));
                for a in acks {
                    let _ = a.send(true);
                }
                self.announce(&batch, &dirty).await;
                true
            }
            Err(e) if self.partition.is_some() => {
                if matches!(e, StoreError::Fenced(_)) {
                    self.metrics.cluster_fenced.inc();
                }
                error!(error = %e, "partition commit refused; the partition is read again from the event log");
                self.stopped = true;
                false
            }
            Err(e) => {
                error!(error = %e, items = batch.readings.len() + batch.rejected.len(), "batch not stored; devices will resend");
                self.metrics.batch_failures.inc();
                for a in acks {
                    let _ = a.send(false);
                }
                self.recover().await;
                false
            }
        }
    }

    /// After a failed commit the core is ahead of the store: rebuild it from what is
    /// stored, and retry until the store takes the decisions that follow from it.
    async fn recover(&mut self) {
        loop {
            match self.load().await {
                Ok(()) => {
                    let now = self.clock.now();
                    self.core.handle_timeout(now);
                    let (batch, dirty) = self.take_batch(Vec::new(), Vec::new(), now);
                    match self.write(&batch).await {
                        Ok(()) => {
                            self.announce(&batch, &dirty).await;
                            return;
                        }
                        Err(e) => error!(error = %e, "store still refuses writes"),
                    }
                }
                Err(e) => error!(error = %e, "cannot reload from the store"),
            }
            tokio::time::sleep(RECOVER_PAUSE).await;
        }
    }

    /// The one place that tells WebSocket clients and MQTT subscribers what a committed
    /// batch changed.
    async fn announce(&mut self, batch: &Batch, dirty: &[i64]) {
        self.observe(&batch.effects);
        for record in batch.effects.alerts.values() {
            let alert = &record.alert;
            if self.partition.is_none() {
                if let Ok(json) = serde_json::to_vec(alert) {
                    self.publisher
                        .publish(alerts_topic(alert.resident_id), json);
                }
            }
            self.show(HubEvent::Alert {
                alert: alert.clone(),
            })
            .await;
        }
        // Questions go to devices on this hub's broker (in cluster mode, to those
        // connected here).
        for (topic, payload) in &batch.effects.commands {
            self.publisher.publish(topic.clone(), payload.clone());
        }
        if !self.has_viewers() {
            return;
        }
        for ev in &batch.readings {
            if let Reading::Position {
                lat,
                lon,
                accuracy_m,
            }
            | Reading::Sighting {
                lat,
                lon,
                accuracy_m,
                ..
            } = ev.reading
            {
                self.show(HubEvent::Position {
                    resident_id: ev.resident_id,
                    device_id: ev.device_id.clone(),
                    lat,
                    lon,
                    accuracy_m,
                    ts: ev.ts,
                })
                .await;
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

    fn observe(&self, effects: &Effects) {
        self.metrics
            .alerts_changed
            .inc_by(effects.alerts.len() as u64);
        for (severity, seconds) in &effects.acknowledged {
            self.metrics.observe_ack(*severity, *seconds);
        }
    }

    /// The current status of every resident that changed since the last time.
    async fn send_statuses(&mut self) {
        self.statuses_due = None;
        let stale = std::mem::take(&mut self.stale_statuses);
        if !self.has_viewers() {
            return;
        }
        for id in stale {
            if let Some(status) = self.core.status(id) {
                self.show(HubEvent::Status { status }).await;
            }
        }
    }

    /// Viewers may be on any hub in cluster mode, so there they are always assumed.
    fn has_viewers(&self) -> bool {
        self.partition.is_some() || self.bus.has_subscribers()
    }

    /// Puts a committed change before the viewers: on this hub's bus, or in cluster mode
    /// on the live stream every hub follows (which also publishes alerts on MQTT).
    async fn show(&self, event: HubEvent) {
        match &self.partition {
            Some((_, live)) => live.publish(&event).await,
            None => self.bus.publish(event),
        }
    }
}

/// The dead letter of a message from a resident without a current consent: who sent
/// what kind, and nothing of its content, which may not be collected.
fn no_consent(ev: &DeviceEvent) -> crate::store::RejectedRow {
    crate::store::RejectedRow {
        received_at: ev.received_at,
        device_id: Some(ev.device_id.clone()),
        topic: format!(
            "{}{}",
            mimamori_protocol::topic::device_prefix(&ev.device_id),
            ev.reading.kind_str()
        ),
        reason: mimamori_protocol::native::RejectReason::NoConsent,
        detail: format!(
            "resident {} has no current consent on record; nothing of the message is kept",
            ev.resident_id
        ),
        payload: String::new(),
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

/// What the alert core's notices need of a resident: name, time zone, contacts.
pub fn resident_card(setup: &ResidentSetup) -> Card {
    let r = &setup.resident;
    Card {
        name: r.name.clone(),
        timezone: r.timezone.clone(),
        tz: crate::notify::policy::zone_of(&r.timezone),
        contacts: setup.contacts.clone(),
        check: crate::alerts::CheckPlan::of(
            &r.rules,
            setup.devices.iter().map(|d| d.id.clone()).collect(),
        ),
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
    ResidentConfig {
        resident_id: r.id,
        timezone,
        settings: r.rules.clone(),
        zones,
        devices: setup.devices.clone(),
        pauses: setup.pauses.clone(),
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
