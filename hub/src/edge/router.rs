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

/// Where the router listens and the secret it accepts.
#[derive(Clone)]
pub struct RouterHandle {
    pub addr: SocketAddr,
    pub secret: String,
}

/// Starts the router on its own threads and waits until it accepts connections.
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
    wait_until_listening(addr, &secret).await?;
    info!(%addr, "embedded broker ready (loopback, edge only)");
    Ok(RouterHandle { addr, secret })
}

fn router_config(
    addr: SocketAddr,
    secret: &str,
    max_connections: usize,
    max_packet: usize,
) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: max_packet,
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

/// Waits for a full MQTT handshake, not just an open port: rumqttd logs an error for
/// every connection that closes before its CONNECT.
async fn wait_until_listening(addr: SocketAddr, secret: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if probe(addr, secret).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("embedded broker did not start listening on {addr}")
}

async fn probe(addr: SocketAddr, secret: &str) -> Result<(), super::codec::CodecError> {
    use mqttrs::{Connect, Packet, Protocol};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (rd, mut wr) = stream.into_split();
    let connect = Packet::Connect(Connect {
        protocol: Protocol::MQTT311,
        keep_alive: 10,
        client_id: "mimamori-probe",
        clean_session: true,
        last_will: None,
        username: Some(EDGE_USER),
        password: Some(secret.as_bytes()),
    });
    super::codec::write_packet(&mut wr, &connect).await?;
    let mut reader = super::codec::PacketReader::new(rd, 1024);
    let reply = tokio::time::timeout(Duration::from_secs(2), reader.next())
        .await
        .map_err(|_| super::codec::CodecError::Malformed("no CONNACK".into()))??;
    super::codec::write_packet(&mut wr, &Packet::Disconnect).await?;
    match reply.as_deref().map(super::codec::decode) {
        Some(Ok(Packet::Connack(_))) => Ok(()),
        _ => Err(super::codec::CodecError::Malformed("no CONNACK".into())),
    }
}

/// The hub's own connection to the router, for what it publishes itself (alerts).
#[derive(Clone)]
pub struct HubPublisher {
    client: rumqttc::AsyncClient,
}

impl HubPublisher {
    /// Connects as `mimamori-hub` and keeps the connection alive on a task of its own.
    pub fn connect(router: &RouterHandle) -> HubPublisher {
        let mut opts = rumqttc::MqttOptions::new(
            "mimamori-hub",
            router.addr.ip().to_string(),
            router.addr.port(),
        );
        opts.set_credentials(EDGE_USER, router.secret.clone());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 4096);
        tokio::spawn(async move {
            loop {
                if let Err(e) = eventloop.poll().await {
                    tracing::warn!(error = %e, "hub publisher lost the router; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        HubPublisher { client }
    }

    /// Publishes at QoS 1 without waiting; a full queue drops the message with a warning
    /// rather than stall the pipeline that calls this.
    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        if let Err(e) = self
            .client
            .try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
        {
            tracing::warn!(error = %e, "alert not published on MQTT");
        }
    }
}
