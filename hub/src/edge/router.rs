//! The embedded rumqttd router: fan-out to subscribers, retained messages, wills,
//! QoS and shared subscriptions. It listens on loopback only, behind the edge.
//!
//! rumqttd 0.20 needs every `RouterConfig` field set (its `Default` refuses every
//! connection); segments are kept at 1 MiB because its shipped 100 MiB segments
//! grow to gigabytes under load; metrics, console and prometheus stay off (setting
//! only some of them panics its timer thread). Only the edge may connect: a secret
//! made at each start is the one username/password the router accepts.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::Context;
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info};

/// The username the edge presents to the router.
pub const EDGE_USER: &str = "mimamori-edge";

/// The envelope of every message the router carries: one byte before the payload
/// with the QoS its publisher sent it at.
///
/// rumqttd delivers each message at the QoS of the subscription it matched, so a QoS 0
/// publish would reach a QoS 2 subscriber at QoS 2; MQTT 3.1.1 §3.8.4 asks for the
/// lower of the two. The router is the edge's alone, so the edge seals what it passes
/// on, opens what the router delivers and downgrades it to `min(publish, granted)`.
/// An empty payload stays empty: that is how rumqttd clears a retained message.
pub fn seal(qos: mqttrs::QoS, payload: &[u8]) -> Vec<u8> {
    if payload.is_empty() {
        return Vec::new();
    }
    let mut sealed = Vec::with_capacity(payload.len() + 1);
    sealed.push(qos_level(qos));
    sealed.extend_from_slice(payload);
    sealed
}

/// The publisher's QoS and the payload of a message from the router; `None` for an
/// empty payload, which carries no envelope.
pub fn open(payload: &[u8]) -> (Option<mqttrs::QoS>, &[u8]) {
    match payload.split_first() {
        Some((&0, rest)) => (Some(mqttrs::QoS::AtMostOnce), rest),
        Some((&1, rest)) => (Some(mqttrs::QoS::AtLeastOnce), rest),
        Some((&2, rest)) => (Some(mqttrs::QoS::ExactlyOnce), rest),
        _ => (None, payload),
    }
}

/// A QoS as its number, 0 to 2.
pub fn qos_level(qos: mqttrs::QoS) -> u8 {
    match qos {
        mqttrs::QoS::AtMostOnce => 0,
        mqttrs::QoS::AtLeastOnce => 1,
        mqttrs::QoS::ExactlyOnce => 2,
    }
}

/// Where the router listens and the secret it accepts.
#[derive(Clone)]
pub struct RouterHandle {
    pub addr: SocketAddr,
    pub secret: String,
}

/// Starts the router on its own threads; [`HubPublisher::connect`] then waits until it accepts connections.
pub async fn start(max_connections: usize, max_packet: usize) -> anyhow::Result<RouterHandle> {
    let addr = free_loopback_port().context("no free loopback port for the embedded broker")?;
    let secret = crate::security::random_secret();
    let config = router_config(addr, &secret, max_connections, max_packet);
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                error!(error = %e, "embedded broker stopped");
            }
        })
        .context("cannot start the embedded broker thread")?;
    Ok(RouterHandle { addr, secret })
}

/// The embedded router's settings, which the benchmark's bare broker shares.
pub fn router_config(
    addr: SocketAddr,
    secret: &str,
    max_connections: usize,
    max_packet: usize,
) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        // The envelope adds a byte to what the edge accepted from a client.
        max_payload_size: max_packet + 1,
        max_inflight_count: 500,
        auth: Some(HashMap::from([(EDGE_USER.to_string(), secret.to_string())])),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "edge".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            // Room for every edge connection plus the hub's own publisher.
            max_connections: max_connections + 16,
            max_outgoing_packet_count: 200,
            max_segment_size: 1 << 20,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("edge".to_string(), server)])),
        ..Config::default()
    }
}

/// rumqttd binds its own socket and cannot be handed one, so a port is reserved and
/// released just before it starts; loopback ports are not contended in practice.
fn free_loopback_port() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind(("127.0.0.1", 0))?;
    l.local_addr()
}

/// The hub's own connection to the router, for what it publishes itself (alerts).
#[derive(Clone)]
pub struct HubPublisher {
    client: rumqttc::AsyncClient,
}

impl HubPublisher {
    /// Connects as `mimamori-hub`, keeps the connection alive on a task of its own, and
    /// returns once the router has accepted it: that first CONNACK is how the hub knows
    /// the embedded broker is up (a bare TCP probe would make rumqttd log an error).
    pub async fn connect(router: &RouterHandle) -> anyhow::Result<HubPublisher> {
        let mut opts = rumqttc::MqttOptions::new(
            "mimamori-hub",
            router.addr.ip().to_string(),
            router.addr.port(),
        );
        opts.set_credentials(EDGE_USER, router.secret.clone());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 4096);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    // Before the first CONNACK the broker is still starting: retry quickly.
                    Err(_) if ready_tx.is_some() => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "hub publisher lost the router; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the embedded broker on {} did not accept the hub within 10 s",
                    router.addr
                )
            })?
            .map_err(|_| anyhow::anyhow!("the hub's broker connection task stopped"))?;
        info!(addr = %router.addr, "embedded broker ready (loopback, edge only)");
        Ok(HubPublisher { client })
    }

    /// Publishes at QoS 1 without waiting; a full queue drops the message with a warning
    /// rather than stall the pipeline that calls this.
    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        self.send(topic, payload, false)
    }

    /// Publishes at QoS 1, retained: a client that subscribes later still gets the last one.
    pub fn publish_retained(&self, topic: String, payload: Vec<u8>) {
        self.send(topic, payload, true)
    }

    /// Publishes a device's will for it, at the will's QoS as far as subscribers see.
    pub fn publish_will(&self, topic: String, payload: Vec<u8>, qos: mqttrs::QoS, retain: bool) {
        self.send_as(topic, &payload, qos, retain)
    }

    fn send(&self, topic: String, payload: Vec<u8>, retain: bool) {
        self.send_as(topic, &payload, mqttrs::QoS::AtLeastOnce, retain)
    }

    fn send_as(&self, topic: String, payload: &[u8], qos: mqttrs::QoS, retain: bool) {
        let sealed = seal(qos, payload);
        if let Err(e) = self
            .client
            .try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, sealed)
        {
            tracing::warn!(error = %e, "hub message not published on MQTT");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqttrs::QoS;

    #[test]
    fn the_envelope_keeps_the_publishers_qos_and_leaves_empty_payloads_empty() {
        let sealed = seal(QoS::AtMostOnce, br#"{"motion":true}"#);
        assert_eq!(
            open(&sealed),
            (Some(QoS::AtMostOnce), &br#"{"motion":true}"#[..])
        );
        assert_eq!(
            open(&seal(QoS::ExactlyOnce, b"x")),
            (Some(QoS::ExactlyOnce), &b"x"[..])
        );
        assert!(seal(QoS::AtLeastOnce, b"").is_empty());
        assert_eq!(open(b""), (None, &b""[..]));
    }
}
