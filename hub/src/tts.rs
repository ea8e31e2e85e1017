//! The hub's MQTT client to The Things Stack v3: connects to the configured server with
//! an application's credentials, subscribes to its uplinks, and hands each one to
//! ingest as a device's message would be ([`crate::ingest::tts`] classifies it).
//!
//! The Things Stack's MQTT server offers QoS 0 only, so nothing is acknowledged and an
//! uplink published while the hub is disconnected is lost: reconnecting soon matters
//! more than anything else here. Every failed attempt doubles the pause before the next,
//! from [`MIN_BACKOFF`] up to [`MAX_BACKOFF`], and a successful CONNACK resets it.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tracing::{info, warn};

use crate::config::TtsConfig;
use crate::ingest::{tts, Ingest, Item};

pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The pause after a failed attempt that followed a pause of `previous`.
pub fn next_backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
}

/// Runs the client until the hub stops; it never gives up on the server.
pub async fn run(cfg: TtsConfig, ingest: Ingest) {
    let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    opts.set_credentials(cfg.username.clone(), cfg.api_key.clone());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let filter = tts::uplink_filter(&cfg.username);
    let mut backoff = Duration::ZERO;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!(server = %cfg.host, port = cfg.port, "connected to The Things Stack");
                backoff = Duration::ZERO;
                // A clean session forgets subscriptions: subscribe on every connection.
                if let Err(e) = client.try_subscribe(&filter, QoS::AtMostOnce) {
                    warn!(error = %e, "cannot subscribe to The Things Stack's uplinks");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let item = classify(&ingest, &p.topic, &p.payload);
                if !matches!(item, Item::Ignored) {
                    ingest.submit(item, false).await;
                }
            }
            Ok(_) => {}
            Err(e) => {
                backoff = next_backoff(backoff);
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "The Things Stack connection lost");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

fn classify(ingest: &Ingest, topic: &str, payload: &[u8]) -> Item {
    match tts::classify(ingest.lorawan(), topic, payload, ingest.now()) {
        Ok(Some(ev)) => Item::Accepted(ev),
        Ok(None) => Item::Ignored,
        Err(r) => ingest.refuse(None, topic, payload, r.reason, r.detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_ceiling() {
        assert_eq!(next_backoff(Duration::ZERO), MIN_BACKOFF);
        assert_eq!(next_backoff(MIN_BACKOFF), Duration::from_secs(1));
        assert_eq!(next_backoff(Duration::from_secs(20)), MAX_BACKOFF);
        assert_eq!(next_backoff(MAX_BACKOFF), MAX_BACKOFF);
    }
}
