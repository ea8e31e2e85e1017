//! The live view across hubs: partition owners append what they committed to the stream
//! `MIMAMORI_LIVE`; every hub follows it into its own WebSocket bus (numbered by the
//! stream's sequence, the same on every hub, so `since` resumes anywhere) and publishes
//! alerts to its own MQTT subscribers.

use futures_util::StreamExt;
use mimamori_protocol::topic::alerts_topic;
use tracing::{info, warn};

use super::log::{LIVE, LIVE_SUBJECT};
use crate::edge::router::HubPublisher;
use crate::events::{Bus, HubEvent};

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
