//! The hub's MQTT edge: it owns the network side of MQTT.
//!
//! Devices never reach rumqttd directly. The edge accepts each connection (TCP, or
//! TLS with a handshake timeout on the connection's own task), checks CONNECT
//! against the store and answers refusals with the proper return code, binds the
//! client id to the device, enforces the topic ACL on PUBLISH, SUBSCRIBE and the
//! will, passes every device PUBLISH through ingest, and acknowledges QoS 1 and 2
//! only once the pipeline has committed it. Everything else is proxied to the
//! embedded router ([`router`]), which serves subscribers. What the router does not do
//! as MQTT 3.1.1 asks, the edge does around it: keep-alive 0 (the router link gets a
//! keep-alive of its own), delivered QoS `min(publish, granted)` (every message the
//! router carries is sealed with its publisher's QoS, [`router::seal`]), DUP on a
//! persistent session's redeliveries, and QoS 2 packet-id state that belongs to the
//! session rather than the connection ([`sessions`]).

pub mod acl;
pub mod codec;
pub mod interest;
pub mod maps;
pub mod router;
mod session;
pub mod sessions;
pub mod waypoints;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mimamori_protocol::DeviceKind;
use mqttrs::{Connect, ConnectReturnCode};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, warn};

use crate::config::Limits;
use crate::ingest::Ingest;
use crate::limits::{Gate, Ticket};
use crate::metrics::Metrics;
use crate::security;
use crate::store::Store;
use crate::throttle::Throttle;
use acl::Principal;
use router::RouterHandle;

/// Largest MQTT packet the edge reads; native payloads over 16 KiB are refused by ingest.
pub const MAX_PACKET: usize = 256 * 1024;
/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection of the edge shares.
pub struct EdgeCtx {
    pub store: Arc<dyn Store>,
    pub ingest: Ingest,
    pub metrics: Arc<Metrics>,
    pub router: RouterHandle,
    pub registry: Registry,
    /// The filters the router holds, to skip it when nobody listens.
    pub interest: interest::Interest,
    pub waypoints: waypoints::Waypoints,
    /// The hub's own router connection, which publishes the will of a device that never
    /// needed a router connection of its own.
    pub publisher: router::HubPublisher,
    pub max_packet: usize,
    /// Established connections of anyone.
    slots: Arc<Semaphore>,
    /// Established connections of people: whatever they cannot take stays for devices.
    people: Arc<Semaphore>,
    /// Sockets whose CONNECT has not yet been accepted.
    pub pending: Arc<Gate>,
    connect_timeout: Duration,
    /// Packet-id state of sessions, kept across a persistent session's connections.
    sessions: sessions::Sessions,
    /// Where people's passwords are checked, bounded.
    pub passwords: security::PasswordPool,
    /// Failed logins of people, shared with the HTTP login.
    pub throttle: Arc<Throttle>,
}

impl EdgeCtx {
    pub fn new(
        store: Arc<dyn Store>,
        ingest: Ingest,
        metrics: Arc<Metrics>,
        router: RouterHandle,
        publisher: router::HubPublisher,
        max_connections: usize,
        limits: &Limits,
    ) -> Self {
        EdgeCtx {
            waypoints: waypoints::Waypoints::new(store.clone(), publisher.clone()),
            publisher,
            store,
            ingest,
            metrics,
            router,
            registry: Registry::default(),
            interest: interest::Interest::default(),
            max_packet: MAX_PACKET,
            slots: Arc::new(Semaphore::new(max_connections)),
            people: Arc::new(Semaphore::new(
                limits.max_people_connections.min(max_connections),
            )),
            pending: Gate::new(limits.mqtt_max_pending, limits.mqtt_pending_per_source),
            connect_timeout: limits.mqtt_connect_timeout,
            sessions: sessions::Sessions::default(),
            passwords: security::PasswordPool::start(),
            throttle: Arc::new(Throttle::default()),
        }
    }

    /// Checks a CONNECT's credentials: a device by its id and secret, or a user by name and password.
    async fn authenticate(
        &self,
        c: &Connect<'_>,
        peer: std::net::IpAddr,
    ) -> Result<Principal, ConnectReturnCode> {
        let (Some(username), Some(password)) = (c.username, c.password) else {
            return Err(ConnectReturnCode::NotAuthorized);
        };
        let device = self.store.device_auth(username).await.map_err(|e| {
            warn!(error = %e, "store unavailable during CONNECT");
            ConnectReturnCode::ServerUnavailable
        })?;
        if let Some(d) = device {
            if !security::verify_token(password, &d.secret_hash) {
                return Err(ConnectReturnCode::BadUsernamePassword);
            }
            if !client_id_fits(c.client_id, &d.id, d.kind) {
                return Err(ConnectReturnCode::RefusedIdentifierRejected);
            }
            return Ok(Principal::Device {
                id: d.id,
                resident_id: d.resident_id,
                kind: d.kind,
            });
        }
        self.authenticate_user(username, password, peer).await
    }

    async fn authenticate_user(
        &self,
        username: &str,
        password: &[u8],
        peer: std::net::IpAddr,
    ) -> Result<Principal, ConnectReturnCode> {
        let now = std::time::Instant::now();
        if let Err(limited) = self.throttle.check(peer, username, now) {
            self.metrics.limit_login("mqtt", limited.by);
            return Err(ConnectReturnCode::NotAuthorized);
        }
        let record = self
            .store
            .user_by_name(username)
            .await
            .map_err(|_| ConnectReturnCode::ServerUnavailable)?;
        let Some(record) = record else {
            self.passwords.refuse_unknown().await;
            self.throttle.failed(peer, username, now);
            return Err(ConnectReturnCode::BadUsernamePassword);
        };
        let password = String::from_utf8_lossy(password).into_owned();
        // Argon2 is deliberately slow: it runs on the bounded pool, and a full pool is
        // "server unavailable" (the client retries) rather than a wrong password.
        let ok = self
            .passwords
            .verify(password, record.password_hash.clone())
            .await
            .map_err(|_| {
                self.metrics.refuse_connect("hashing_busy");
                ConnectReturnCode::ServerUnavailable
            })?;
        if !ok {
            self.throttle.failed(peer, username, now);
            return Err(ConnectReturnCode::BadUsernamePassword);
        }
        if record.totp_secret.is_some() {
            // MQTT has no place for a one-time code, and a password alone is not enough
            // for this account: its subscriptions go through another account or the API.
            // The answer is the wrong password's, so that MQTT cannot confirm a guessed
            // password that the API would then ask a code for.
            tracing::info!(username = %username.escape_debug(), %peer, "MQTT login refused: the account has one-time codes");
            return Err(ConnectReturnCode::BadUsernamePassword);
        }
        self.throttle.succeeded(peer, username);
        Ok(Principal::User {
            username: record.user.username,
            role: record.user.role,
            resident_ids: record.user.resident_ids,
        })
    }

    /// A place for an authenticated connection: people only within their share, so
    /// that devices always find one. `None` when there is none.
    fn admit(&self, principal: &Principal) -> Option<Established> {
        let person = match principal {
            Principal::User { .. } => Some(self.people.clone().try_acquire_owned().ok()?),
            Principal::Device { .. } => None,
        };
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        Some(Established {
            _slot: slot,
            _person: person,
        })
    }

    /// Whether established connections fill every place (devices' or people's).
    pub fn saturated(&self) -> bool {
        self.slots.available_permits() == 0 || self.people.available_permits() == 0
    }

    /// Closes every connection of a device at once (deleted or secret rotated).
    pub fn kick(&self, client_id: &str) {
        self.registry.kick(client_id);
    }

    /// Closes every MQTT connection of a person (their client ids all start so).
    pub fn kick_user(&self, username: &str) {
        self.registry
            .kick_prefix(&session::user_client_id_prefix(username));
    }
}

/// The places an established connection holds, given back when it ends.
struct Established {
    _slot: tokio::sync::OwnedSemaphorePermit,
    _person: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A socket's place among the pending ones, and the signal that it must give it up.
struct Pending {
    ticket: Ticket,
    evicted: oneshot::Receiver<()>,
}

/// Whether a device may connect with this client id. The router knows every device by
/// its id whatever the client id says, so the client id only guards against a device
/// configured with another's name: it must be the device's id, or empty. A gateway is
/// the exception: Zigbee2MQTT, when `client_id` is left out of its configuration,
/// connects as MQTT.js's random `mqttjs_…`, and its credentials already say which
/// gateway it is. So is a BLE receiver: ESPresense's firmware connects as
/// `espresense-{room}`, which no setting changes.
fn client_id_fits(client_id: &str, device_id: &str, kind: DeviceKind) -> bool {
    client_id.is_empty()
        || client_id == device_id
        || matches!(kind, DeviceKind::Gateway | DeviceKind::Receiver)
}

/// Live connections by router client id, so that a takeover or a revocation can close them.
#[derive(Default)]
pub struct Registry {
    live: Mutex<HashMap<String, (u64, oneshot::Sender<()>)>>,
    next: AtomicU64,
}

impl Registry {
    /// Registers a connection, closing any earlier one with the same client id.
    fn register(&self, client_id: &str) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let old = self.lock().insert(client_id.to_string(), (id, tx));
        if let Some((_, kick)) = old {
            let _ = kick.send(());
        }
        (id, rx)
    }

    fn unregister(&self, client_id: &str, conn: u64) {
        let mut live = self.lock();
        if live.get(client_id).is_some_and(|(id, _)| *id == conn) {
            live.remove(client_id);
        }
    }

    fn kick(&self, client_id: &str) {
        if let Some((_, kick)) = self.lock().remove(client_id) {
            let _ = kick.send(());
        }
    }

    fn kick_prefix(&self, prefix: &str) {
        let mut live = self.lock();
        let ids: Vec<String> = live
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for id in ids {
            if let Some((_, kick)) = live.remove(&id) {
                let _ = kick.send(());
            }
        }
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, oneshot::Sender<()>)>> {
        // A poisoned map is still a consistent map: every update is a single insert or remove.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Binds the plain MQTT listener, naming the address if it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen for MQTT on {addr} (port {} in use?)",
            addr.port()
        )
    })
}

/// Accepts connections until the task is dropped: plain TCP, or TLS when an acceptor
/// is given. Each TLS handshake runs on its connection's own task with a timeout, so a
/// silent peer cannot hold up anyone else's connection.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<EdgeCtx>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let pending = match ctx.pending.admit_pending(peer.ip()) {
            Ok((ticket, evicted)) => Pending { ticket, evicted },
            Err(refusal) => {
                ctx.metrics.refuse_connection("mqtt", refusal.label());
                // Over TLS a plain CONNACK would be noise to the client: just close.
                if tls.is_none() {
                    tokio::spawn(refuse_full(stream));
                }
                continue;
            }
        };
        let (ctx, tls) = (ctx.clone(), tls.clone());
        tokio::spawn(async move {
            let mut pending = pending;
            match tls {
                None => session::serve(stream, peer, pending, ctx).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(tls)) => session::serve(tls, peer, pending, ctx).await,
                            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        },
                        _ = &mut pending.evicted => debug!(%peer, "silent TLS connection closed to make room"),
                    }
                }
            }
        });
    }
}

/// Loads a PEM certificate chain and key into a TLS acceptor.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert)
            .with_context(|| format!("cannot open TLS certificate {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("TLS certificate {} is not valid PEM", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key)
            .with_context(|| format!("cannot open TLS key {}", key.display()))?,
    ))
    .with_context(|| format!("TLS key {} is not valid PEM", key.display()))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("TLS certificate and key do not match")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Tells a client over the connection limit so, instead of leaving it hanging.
async fn refuse_full(stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut stream = stream;
    // CONNACK, return code 3 (server unavailable); sent without reading the CONNECT.
    let packet = mqttrs::Packet::Connack(mqttrs::Connack {
        session_present: false,
        code: ConnectReturnCode::ServerUnavailable,
    });
    if let Ok(bytes) = codec::encode(&packet) {
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&bytes)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_gateway_or_a_receiver_may_bring_a_client_id_of_its_own() {
        assert!(client_id_fits("", "dev-a", DeviceKind::Motion));
        assert!(client_id_fits("dev-a", "dev-a", DeviceKind::Motion));
        assert!(!client_id_fits("dev-b", "dev-a", DeviceKind::Motion));
        assert!(client_id_fits(
            "mqttjs_5f3a9c1e",
            "dev-gw",
            DeviceKind::Gateway
        ));
        assert!(client_id_fits(
            "espresense-koenji_north",
            "dev-rx",
            DeviceKind::Receiver
        ));
        assert!(!client_id_fits("espresense-x", "dev-tag", DeviceKind::Tag));
    }
}
