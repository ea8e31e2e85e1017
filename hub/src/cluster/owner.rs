//! Partition ownership: the lease loop that claims, renews and hands over partitions
//! (and, in the same round, the leases of the jobs that run on one hub at a time,
//! [`super::singleton`]), and the runner that gives each owned partition a pipeline fed
//! from the event log.
//!
//! Safety rests on two rules. A hub renews its leases only while it reaches both NATS
//! and PostgreSQL, and stops its pipelines before its own view of the leases runs out,
//! so normally nobody writes for a partition it no longer owns. Should it still try (a
//! pause, a slow disk), the commit carries the lease's token and the store refuses it
//! once the token moved on ([`crate::store::Fence`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::live::LiveSink;
use super::log::{subject, EVENTS};
use super::plan::{alive_nodes, plan};
use super::singleton::{Job, Singletons};
use super::{Cluster, LEASE_TTL, TICK};
use crate::alerts::Ladder;
use crate::clock::Clock;
use crate::edge::router::HubPublisher;
use crate::events::Bus;
use crate::ingest::{is_urgent, Envelope, Item};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::cluster::Granted;
use crate::store::Store;

/// Events of one partition that may wait for its pipeline.
const PARTITION_QUEUE: usize = 16_384;
/// SOS presses of one partition that may wait.
const PARTITION_URGENT: usize = 1_024;
/// How long a taken-over partition's overdue deadlines wait for the log's last events.
const TAKEOVER_GRACE: chrono::Duration = chrono::Duration::seconds(2);
/// How often the outbox is searched for claims a dead hub left.
const FREE_CLAIMS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// How far into a partition's log its pipeline has got: what was handed to it, and what
/// of that is not committed yet. Shared by the log reader and the pipeline.
#[derive(Debug, Default)]
pub struct Cursor {
    delivered: u64,
    in_flight: BTreeSet<u64>,
}

impl Cursor {
    pub fn starting_after(applied: u64) -> Cursor {
        Cursor {
            delivered: applied,
            in_flight: BTreeSet::new(),
        }
    }

    fn deliver(&mut self, seq: u64) {
        self.delivered = self.delivered.max(seq);
        self.in_flight.insert(seq);
    }

    /// The sequence up to which every event is applied once `committing` is: SOS presses
    /// overtake readings, so it stops below the first event still waiting.
    pub fn watermark(&self, committing: &[u64]) -> u64 {
        let committing: HashSet<u64> = committing.iter().copied().collect();
        self.in_flight
            .iter()
            .find(|s| !committing.contains(s))
            .map(|s| s - 1)
            .unwrap_or(self.delivered)
    }

    pub fn applied(&mut self, seqs: &[u64]) {
        for s in seqs {
            self.in_flight.remove(s);
        }
    }
}

/// What a partition's pipeline commits under.
#[derive(Debug, Clone)]
pub struct Scope {
    pub part: u32,
    pub partitions: u32,
    pub owner: String,
    pub token: i64,
    pub cursor: Arc<Mutex<Cursor>>,
}

impl Scope {
    pub fn holds(&self, resident_id: i64) -> bool {
        super::plan::partition_of(resident_id, self.partitions) == self.part
    }

    pub fn cursor(&self) -> std::sync::MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a partition's pipeline is built from.
#[derive(Clone)]
pub struct PipelineParts {
    pub store: Arc<dyn Store>,
    pub ladder: Ladder,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub bus: Bus,
    pub publisher: HubPublisher,
}

struct Running {
    token: i64,
    reader: JoinHandle<()>,
    pipeline: JoinHandle<()>,
}

/// The lease loop of one hub.
pub struct Owner {
    cluster: Cluster,
    parts: PipelineParts,
    running: BTreeMap<u32, Running>,
    singletons: Singletons,
    last_renewed: Option<Instant>,
    last_freed: Option<Instant>,
    http_addr: String,
    mqtt_addr: String,
}

impl Owner {
    pub fn new(
        cluster: Cluster,
        parts: PipelineParts,
        http_addr: String,
        mqtt_addr: String,
        jobs: Vec<Job>,
    ) -> Owner {
        let singletons = Singletons::new(jobs, parts.metrics.clone());
        Owner {
            cluster,
            parts,
            running: BTreeMap::new(),
            singletons,
            last_renewed: None,
            last_freed: None,
            http_addr,
            mqtt_addr,
        }
    }

    fn me(&self) -> &str {
        &self.cluster.config.node_id
    }

    /// Runs the lease loop until `stop` is notified, then hands every partition over.
    pub async fn run(mut self, stop: Arc<Notify>) {
        // A previous run of this node may have died holding leases: free them now rather
        // than after they run out.
        if let Err(e) = self.cluster.leases.release_all(self.me()).await {
            warn!(error = %e, "cannot free this node's earlier leases");
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.notified() => break,
                _ = tick.tick() => self.tick().await,
            }
        }
        let parts: Vec<u32> = self.running.keys().copied().collect();
        for part in parts {
            self.stop(part).await;
        }
        let me = self.me().to_string();
        self.singletons.hand_over(&self.cluster.leases, &me).await;
        info!("all partitions and jobs handed over");
    }

    async fn tick(&mut self) {
        self.reap().await;
        if !self.cluster.nats_connected() {
            warn!("NATS unreachable: leases are not renewed");
            return self.give_up_if_overdue().await;
        }
        match self.renew().await {
            Ok(()) => self
                .cluster
                .store_ok
                .store(true, std::sync::atomic::Ordering::Relaxed),
            Err(e) => {
                warn!(error = %e, "PostgreSQL unreachable: leases are not renewed");
                self.cluster
                    .store_ok
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                return self.give_up_if_overdue().await;
            }
        }
        if let Err(e) = self.rebalance().await {
            warn!(error = %e, "cannot plan the partitions");
        }
        self.free_stale_claims().await;
        self.parts
            .metrics
            .cluster_partitions
            .set(i64::try_from(self.running.len()).unwrap_or(0));
    }

    /// Heartbeats and extends every lease held; stops the pipelines whose lease was lost.
    async fn renew(&mut self) -> Result<(), crate::store::StoreError> {
        let leases = self.cluster.leases.clone();
        let me = self.me().to_string();
        leases
            .heartbeat(&me, &self.http_addr, &self.mqtt_addr)
            .await?;
        let held: Vec<(u32, i64)> = self.running.iter().map(|(p, r)| (*p, r.token)).collect();
        let started = Instant::now();
        let kept = leases.renew(&me, &held, LEASE_TTL).await?;
        self.last_renewed = Some(started);
        for (part, _) in held.iter().filter(|(p, _)| !kept.contains(p)) {
            warn!(part, "lease lost to another hub; stopping the partition");
            self.stop(*part).await;
        }
        self.singletons.round(&leases, &me).await
    }

    async fn rebalance(&mut self) -> Result<(), crate::store::StoreError> {
        let view = self.cluster.leases.view().await?;
        let node_ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(5000);
        let alive = alive_nodes(&view, self.me(), node_ttl);
        self.parts
            .metrics
            .cluster_nodes
            .set(i64::try_from(alive.len()).unwrap_or(0));
        let plan = plan(self.me(), &alive, &view.leases, view.now_ms);
        for part in plan.release {
            info!(part, "handing a partition to a hub that joined");
            self.stop(part).await;
        }
        for part in plan.claim {
            let me = self.me().to_string();
            if let Some(granted) = self.cluster.leases.claim(part, &me, LEASE_TTL).await? {
                self.start(granted).await;
            }
        }
        Ok(())
    }

    /// Deliveries a dead hub's notifier had claimed are freed by whichever hub sees them
    /// first (a single hub does it at start instead).
    async fn free_stale_claims(&mut self) {
        if self
            .last_freed
            .is_some_and(|t| t.elapsed() < FREE_CLAIMS_EVERY)
        {
            return;
        }
        self.last_freed = Some(Instant::now());
        let now = self.parts.clock.now();
        match self
            .parts
            .store
            .release_claims(now - crate::notify::STALE_CLAIM, now)
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(deliveries = n, "freed deliveries a stopped hub had claimed"),
            Err(e) => warn!(error = %e, "cannot free stale delivery claims"),
        }
    }

    /// Without a renewal for most of a lease, others may take the partitions any moment:
    /// stop writing before they do.
    async fn give_up_if_overdue(&mut self) {
        let overdue = self
            .last_renewed
            .is_none_or(|t| t.elapsed() + TICK >= LEASE_TTL);
        if overdue && !self.singletons.is_empty() {
            warn!("job leases running out unrenewed; stopping the jobs held here");
            self.singletons.stop_all();
        }
        if overdue && !self.running.is_empty() {
            warn!(
                partitions = self.running.len(),
                "leases running out unrenewed; stopping every partition"
            );
            let parts: Vec<u32> = self.running.keys().copied().collect();
            for part in parts {
                self.stop(part).await;
            }
            self.parts.metrics.cluster_partitions.set(0);
        }
    }

    /// Hands over the partitions whose pipeline stopped by itself (a refused commit).
    async fn reap(&mut self) {
        let ended: Vec<u32> = self
            .running
            .iter()
            .filter(|(_, r)| r.pipeline.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for part in ended {
            warn!(
                part,
                "partition pipeline stopped; handing the partition over"
            );
            self.stop(part).await;
        }
    }

    async fn start(&mut self, granted: Granted) {
        let part = granted.part;
        let scope = Scope {
            part,
            partitions: self.cluster.config.partitions,
            owner: self.me().to_string(),
            token: granted.token,
            cursor: Arc::new(Mutex::new(Cursor::starting_after(granted.applied_seq))),
        };
        let (items_tx, items_rx) = mpsc::channel(PARTITION_QUEUE);
        let (urgent_tx, urgent_rx) = mpsc::channel(PARTITION_URGENT);
        let p = &self.parts;
        let (mut pipeline, handle) = Pipeline::new(
            p.store.clone(),
            p.ladder.clone(),
            p.clock.clone(),
            p.metrics.clone(),
            p.bus.clone(),
            p.publisher.clone(),
            items_rx,
            urgent_rx,
        );
        pipeline.in_partition(scope.clone(), LiveSink::new(self.cluster.js.clone()));
        // A takeover is not an outage: the devices kept publishing into the log, so the
        // few events behind the last commit arrive within moments, not after a restart.
        pipeline.set_restart_grace(TAKEOVER_GRACE);
        let watched = match pipeline.restore().await {
            Ok(n) => n,
            Err(e) => {
                warn!(part, error = %e, "cannot restore a partition; handing it back");
                let _ = self
                    .cluster
                    .leases
                    .release(part, self.me(), granted.token)
                    .await;
                return;
            }
        };
        let reader = tokio::spawn(read_log(
            self.cluster.js.clone(),
            scope,
            items_tx,
            urgent_tx,
        ));
        let pipeline = tokio::spawn(pipeline.run());
        self.cluster
            .owned
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(part, handle);
        info!(
            part,
            token = granted.token,
            from_seq = granted.applied_seq + 1,
            residents = watched,
            "partition taken"
        );
        self.running.insert(
            part,
            Running {
                token: granted.token,
                reader,
                pipeline,
            },
        );
    }

    /// Stops a partition's reader and pipeline, then frees its lease for another hub.
    async fn stop(&mut self, part: u32) {
        self.cluster
            .owned
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&part);
        let Some(run) = self.running.remove(&part) else {
            return;
        };
        // The pipeline ends once the reader, its only feeder, is gone, after finishing the
        // batch at hand.
        run.reader.abort();
        let mut pipeline = run.pipeline;
        if tokio::time::timeout(LEASE_TTL, &mut pipeline)
            .await
            .is_err()
        {
            pipeline.abort();
        }
        if let Err(e) = self
            .cluster
            .leases
            .release(part, self.me(), run.token)
            .await
        {
            warn!(part, error = %e, "cannot free a lease; it runs out by itself");
        }
        info!(part, "partition handed over");
    }
}

/// Feeds a partition's pipeline from the event log, from the first event not yet applied;
/// after an interruption it goes on from the last event handed over.
async fn read_log(
    js: async_nats::jetstream::Context,
    scope: Scope,
    items: mpsc::Sender<Envelope>,
    urgent: mpsc::Sender<Envelope>,
) {
    loop {
        let from = scope.cursor().delivered + 1;
        match read_from(&js, &scope, from, &items, &urgent).await {
            Ok(()) => return,
            Err(e) => warn!(part = scope.part, error = %e, "event log interrupted; reading on"),
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Returns `Ok` once the pipeline is gone.
async fn read_from(
    js: &async_nats::jetstream::Context,
    scope: &Scope,
    from: u64,
    items: &mpsc::Sender<Envelope>,
    urgent: &mpsc::Sender<Envelope>,
) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    let stream = js.get_stream(EVENTS).await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject(scope.part),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(msg) = messages.next().await {
        let msg = msg?;
        let seq = msg
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        let item: Item = serde_json::from_slice(&msg.payload).unwrap_or_else(|e| {
            warn!(seq, error = %e, "unreadable event in the log; skipped");
            Item::Ignored
        });
        scope.cursor().deliver(seq);
        let lane = if is_urgent(&item) { urgent } else { items };
        let env = Envelope {
            item,
            ack: None,
            seq,
        };
        if lane.send(env).await.is_err() {
            return Ok(());
        }
    }
    anyhow::bail!("the event log's consumer ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_stops_below_the_first_event_still_waiting() {
        let mut c = Cursor::starting_after(10);
        assert_eq!(c.watermark(&[]), 10);
        for s in [12, 15, 19, 23] {
            c.deliver(s);
        }
        // An SOS at 19 committed before the readings at 12 and 15.
        assert_eq!(c.watermark(&[19]), 11);
        c.applied(&[19]);
        assert_eq!(c.watermark(&[12, 15]), 22);
        c.applied(&[12, 15]);
        assert_eq!(c.watermark(&[23]), 23);
    }
}
