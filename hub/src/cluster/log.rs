//! The event log: the JetStream streams of cluster mode, and the appender that puts what
//! the edge accepted into them before the device hears PUBACK.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context as JetStream;
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

use super::plan::partition_of;
use crate::ingest::{Envelope, Item};
use crate::metrics::Metrics;

/// The stream every accepted message is appended to.
pub const EVENTS: &str = "MIMAMORI_EVENTS";
/// The stream of committed changes every hub shows its viewers.
pub const LIVE: &str = "MIMAMORI_LIVE";
pub const LIVE_SUBJECT: &str = "mimamori.live";
/// How long events are kept: an owner must apply them within this, even after an outage.
const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Live frames are for viewers who reconnect, not for history.
const LIVE_MAX_AGE: Duration = Duration::from_secs(3600);
const LIVE_MAX_MESSAGES: i64 = 100_000;
/// Appends awaiting JetStream's acknowledgement at once; the edge waits beyond this.
const IN_FLIGHT: usize = 8_192;

/// The subject of a partition's events.
pub fn subject(part: u32) -> String {
    format!("mimamori.ev.{part}")
}

/// Creates the two streams if they are missing (every hub may try; the first wins).
pub async fn ensure_streams(js: &JetStream, replicas: usize) -> anyhow::Result<()> {
    js.get_or_create_stream(stream::Config {
        name: EVENTS.into(),
        subjects: vec!["mimamori.ev.*".into()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: EVENTS_MAX_AGE,
        // Refuse new events rather than drop ones no owner has applied yet.
        discard: DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .context("cannot create the JetStream stream MIMAMORI_EVENTS (is JetStream enabled: nats-server -js?)")?;
    js.get_or_create_stream(stream::Config {
        name: LIVE.into(),
        subjects: vec![LIVE_SUBJECT.into()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: LIVE_MAX_AGE,
        max_messages: LIVE_MAX_MESSAGES,
        discard: DiscardPolicy::Old,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .context("cannot create the JetStream stream MIMAMORI_LIVE")?;
    info!(replicas, "JetStream streams ready");
    Ok(())
}

/// Where an item goes: its resident's partition. Dead letters name no resident and go to
/// partition 0, whose owner writes them.
fn partition_for(item: &Item, partitions: u32) -> Option<u32> {
    match item {
        Item::Accepted(ev) => Some(partition_of(ev.resident_id, partitions)),
        Item::Rejected(_) => Some(0),
        Item::Ignored => None,
    }
}

/// Appends what ingest queues to the event log, SOS presses first; a device's ack fires
/// once JetStream has stored the event. Runs until ingest's senders are gone.
pub async fn append(
    js: JetStream,
    partitions: u32,
    mut items: mpsc::Receiver<Envelope>,
    mut urgent: mpsc::Receiver<Envelope>,
    metrics: Arc<Metrics>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let env = tokio::select! {
            biased;
            Some(e) = urgent.recv() => e,
            e = items.recv() => match e {
                Some(e) => e,
                None => break,
            },
        };
        let Some(part) = partition_for(&env.item, partitions) else {
            if let Some(ack) = env.ack {
                let _ = ack.send(true);
            }
            continue;
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let payload = match serde_json::to_vec(&env.item) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "event not encodable; dropped");
                continue;
            }
        };
        // Sent in order on one connection, so a device's events keep their order in the log.
        let sent = js.publish(subject(part), payload.into()).await;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let stored = match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if stored.is_ok() {
                metrics.cluster_appended.inc();
            }
            if let Err(e) = &stored {
                metrics.batch_failures.inc();
                warn!(error = %e, "event not appended to JetStream; the device will resend");
            }
            if let Some(ack) = env.ack {
                let _ = ack.send(stored.is_ok());
            }
            drop(permit);
        });
    }
    info!("event appender stopped");
}
