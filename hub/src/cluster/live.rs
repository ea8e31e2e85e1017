//! The live view across hubs: partition owners append what they committed to the stream
//! `MIMAMORI_LIVE`; every hub follows it into its own WebSocket bus (numbered by the
//! stream's sequence, the same on every hub, so `since` resumes anywhere) and publishes
//! alerts to its own MQTT subscribers.
//!
//! A client that resumes on another hub than the one it watched may be ahead of this
//! hub's bus by a few frames, or behind the start of its window (the hub started after
//! the client lost its connection): [`subscribe_since`] waits for the first and reads
//! the second from the stream, so the client gets exactly what it missed either way.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mimamori_protocol::topic::alerts_topic;
use tracing::{info, warn};

use super::log::{LIVE, LIVE_SUBJECT};
use crate::edge::router::HubPublisher;
use crate::events::{Bus, Frame, HubEvent, Subscription, REPLAY_WINDOW};

/// How long a resuming client waits for this hub to reach the frame it saw elsewhere.
const CATCH_UP: Duration = Duration::from_secs(3);
/// How long reading missed frames from the stream may take before the client is resynced.
const READ_MISSED: Duration = Duration::from_secs(5);

/// The owner's side: appends one committed change.
#[derive(Clone)]
pub struct LiveSink {
    js: async_nats::jetstream::Context,
}

impl LiveSink {
    pub fn new(js: async_nats::jetstream::Context) -> LiveSink {
        LiveSink { js }
    }

    /// Appends without waiting for the acknowledgement: the change is already committed,
    /// and a pipeline must not stall on viewers. Order is kept: one connection, in order.
    pub async fn publish(&self, event: &HubEvent) {
        let payload = match serde_json::to_vec(event) {
            Ok(p) => p,
            Err(e) => return warn!(error = %e, "live frame not encodable"),
        };
        match self.js.publish(LIVE_SUBJECT, payload.into()).await {
            Ok(ack) => {
                tokio::spawn(async move {
                    if let Err(e) = ack.await {
                        warn!(error = %e, "live frame not stored; viewers will resync");
                    }
                });
            }
            Err(e) => warn!(error = %e, "live frame not sent; viewers will resync"),
        }
    }
}

/// The sequence the next live frame will get, to start this hub's bus there.
pub async fn next_sequence(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(LIVE).await?;
    let info = stream.info().await?;
    Ok(info.state.last_sequence + 1)
}

/// The last sequence the live stream holds.
async fn stream_last(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    Ok(next_sequence(js).await?.saturating_sub(1))
}

/// [`Bus::subscribe_since`] for a client that may come from another hub: a `since` this
/// hub has not reached yet is waited for, one older than its bus's window is read from the
/// stream (as far as the window's size). Otherwise, as on a single hub, `None` asks for
/// a snapshot.
pub async fn subscribe_since(
    js: &async_nats::jetstream::Context,
    bus: &Bus,
    since: Option<u64>,
) -> Subscription {
    let Some(since) = since else {
        return bus.subscribe_since(None);
    };
    if since > bus.last_seq() && stream_last(js).await.is_ok_and(|l| since <= l) {
        bus.reached(since, CATCH_UP).await;
    }
    let (rx, backlog, last) = bus.subscribe_since(Some(since));
    if backlog.is_some() || since >= last || last - since > REPLAY_WINDOW as u64 {
        return (rx, backlog, last);
    }
    match tokio::time::timeout(READ_MISSED, read_range(js, since + 1, last)).await {
        Ok(Ok(frames)) => (rx, Some(frames), last),
        Ok(Err(e)) => {
            info!(since, error = %e, "missed frames no longer in the live stream; resyncing");
            (rx, None, last)
        }
        Err(_) => {
            warn!(
                since,
                "reading missed frames from the live stream took too long; resyncing"
            );
            (rx, None, last)
        }
    }
}

/// Frames `first..=last` of the live stream; an error if any of them is gone.
async fn read_range(
    js: &async_nats::jetstream::Context,
    first: u64,
    last: u64,
) -> anyhow::Result<Vec<Arc<Frame>>> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    let stream = js.get_stream(LIVE).await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: first,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut frames = Vec::new();
    let mut expected = first;
    while expected <= last {
        let Some(msg) = messages.next().await else {
            anyhow::bail!("the live stream ended at {expected}");
        };
        let msg = msg?;
        let seq = msg
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        anyhow::ensure!(seq == expected, "frame {expected} is gone (next is {seq})");
        expected += 1;
        // An unreadable frame is skipped here as the follower skips it.
        if let Ok(event) = serde_json::from_slice::<HubEvent>(&msg.payload) {
            frames.push(Arc::new(Frame { seq, event }));
        }
    }
    Ok(frames)
}

/// Follows the live stream from now on, for as long as the hub runs; an ordered
/// consumer recreates itself after a gap or a reconnect.
pub async fn follow(js: async_nats::jetstream::Context, bus: Bus, publisher: HubPublisher) {
    loop {
        if let Err(e) = follow_once(&js, &bus, &publisher).await {
            warn!(error = %e, "live stream interrupted; following again");
        }
        tokio::time::sleep(super::TICK).await;
    }
}

async fn follow_once(
    js: &async_nats::jetstream::Context,
    bus: &Bus,
    publisher: &HubPublisher,
) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    let stream = js.get_stream(LIVE).await?;
    // The bus starts at the stream's end, and after an interruption resumes where it was.
    let deliver_policy = DeliverPolicy::ByStartSequence {
        start_sequence: bus.last_seq() + 1,
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    info!("following the live stream");
    while let Some(msg) = messages.next().await {
        let msg = msg?;
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        let event: HubEvent = match serde_json::from_slice(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, seq, "unreadable live frame skipped");
                continue;
            }
        };
        if let HubEvent::Alert { alert } = &event {
            if let Ok(json) = serde_json::to_vec(alert) {
                publisher.publish(alerts_topic(alert.resident_id), json);
            }
        }
        bus.publish_at(seq, event);
    }
    Ok(())
}
