//! One MQTT connection through the edge: CONNECT checked here, then a proxy to the
//! router in which every packet from the device passes the ACL and every PUBLISH
//! passes ingest before the device is acknowledged or any subscriber sees it.
//!
//! Two packet-id spaces stay apart: ids the device chose for its publishes are
//! answered here (PUBACK/PUBREC), and the edge numbers its own publishes to the
//! router and drops the router's PUBACKs for them. Ids the router chose for its
//! publishes to the device pass through unchanged in both directions; when the edge
//! delivers such a publish at a lower QoS than the router's (MQTT's
//! `min(publish, granted)`, see [`super::router::seal`]), it answers the router's part
//! of the QoS flow itself.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use mimamori_protocol::native::RejectReason;
use mqttrs::{
    Connack, Connect, ConnectReturnCode, LastWill, Packet, Pid, Protocol, Publish, QoS, QosPid,
    Suback, Subscribe, SubscribeReturnCodes, SubscribeTopic,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use super::acl::Principal;
use super::codec::{decode, encode_into, write_frame, write_packet, CodecError, PacketReader};
use super::EdgeCtx;
use super::{router, sessions};
use crate::ingest::{owntracks, DeviceCtx, Item};

/// How long the router may take to answer the edge's CONNECT.
const ROUTER_TIMEOUT: Duration = Duration::from_secs(10);
/// An encoded PINGREQ, which the edge sends the router to keep an idle link open.
const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// Publishes a device may have waiting for storage before the edge stops reading it.
const MAX_PENDING_ACKS: usize = 256;
/// How long a persistent session's ended connection waits for its publishes to be stored.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The keep-alive the edge gives the router for a client that turned keep-alive off
/// (0): MQTT 3.1.1 allows that, rumqttd refuses it, and the edge pings the router
/// itself, so the router link stays open however long the client is silent.
const ROUTER_KEEP_ALIVE_S: u16 = 60;

/// The keep-alive of a client's router link: the client's own, or
/// [`ROUTER_KEEP_ALIVE_S`] when the client turned keep-alive off.
fn router_keep_alive(client: u16) -> u16 {
    if client == 0 {
        ROUTER_KEEP_ALIVE_S
    } else {
        client
    }
}

/// Why a connection ended; decides whether the device's will is delivered.
#[derive(Debug)]
enum End {
    /// The device sent DISCONNECT: no will.
    Clean,
    /// The socket closed, timed out or broke a rule: the will is delivered.
    Abnormal(String),
    /// Another connection took over this client id, or the device was revoked.
    Kicked,
}

type AckFuture = Pin<Box<dyn Future<Output = (PendingPublish, bool)> + Send>>;

/// A device PUBLISH waiting for the pipeline to store it.
struct PendingPublish {
    qospid: QosPid,
    retain: bool,
    /// What goes on to the router: an accepted message someone subscribed to when it
    /// arrived, or a retained one. The rest go only to the store, refused ones to the
    /// dead letters.
    copy: Option<RouterCopy>,
}

/// A device message's topic and payload, kept for the router until the message is stored.
struct RouterCopy {
    topic: String,
    payload: Bytes,
}

/// A will, owned, to replay through ingest when the connection ends abnormally.
struct Will {
    topic: String,
    payload: Vec<u8>,
    qos: mqttrs::QoS,
    retain: bool,
}

impl Will {
    fn of(w: &LastWill<'_>) -> Will {
        Will {
            topic: w.topic.to_string(),
            payload: w.message.to_vec(),
            qos: w.qos,
            retain: w.retain,
        }
    }
}

/// The session's own connection to the router.
struct RouterLink {
    rin: PacketReader<tokio::net::tcp::OwnedReadHalf>,
    out: tokio::net::tcp::OwnedWriteHalf,
}

/// What the router needs to open the session, kept to open it when first needed.
struct RouterLogin {
    client_id: String,
    keep_alive: u16,
    clean_session: bool,
    will: Option<Will>,
}

struct Session<S> {
    ctx: Arc<EdgeCtx>,
    principal: Principal,
    /// The router's name for this session.
    client_id: String,
    device: Option<DeviceCtx>,
    dev_in: PacketReader<ReadHalf<S>>,
    dev_out: WriteHalf<S>,
    /// Opened at CONNECT for people and persistent sessions; for a device on a clean
    /// session only once it subscribes or someone subscribes to what it sends, so that
    /// a fleet of sensors nobody listens to costs one socket per device, not three.
    router: Option<RouterLink>,
    login: RouterLogin,
    keep_alive: Duration,
    next_pid: Pid,
    /// SUBSCRIBE ids forwarded to the router, with which of their filters the ACL refused.
    pending_subs: HashMap<u16, Vec<bool>>,
    /// The session's packet-id state, shared with the connections before and after
    /// this one when the session is persistent.
    state: sessions::Shared,
    acks: FuturesOrdered<AckFuture>,
}

/// Serves one accepted connection to its end.
pub(super) async fn serve<S>(
    stream: S,
    peer: std::net::SocketAddr,
    mut pending: super::Pending,
    ctx: Arc<EdgeCtx>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, mut dev_out) = tokio::io::split(stream);
    let mut dev_in = PacketReader::new(rd, ctx.max_packet);
    let first = tokio::select! {
        r = timeout(ctx.connect_timeout, dev_in.next()) => r,
        _ = &mut pending.evicted => {
            ctx.metrics.refuse_connection("mqtt", "evicted");
            return debug!(%peer, "silent connection closed to make room");
        }
    };
    let frame = match first {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return debug!(%peer, error = %e, "connection closed before CONNECT"),
        Err(_) => {
            ctx.metrics.refuse_connection("mqtt", "connect_timeout");
            return debug!(%peer, "no CONNECT in time");
        }
    };
    // It spoke: its credentials are checked without the risk of being pushed out.
    pending.ticket.promote();
    let connect = match decode(&frame) {
        Ok(Packet::Connect(c)) => c,
        Err(CodecError::UnsupportedProtocol(name, level)) => {
            ctx.metrics.refuse_connect("unsupported_protocol");
            info!(%peer, %name, level, "refused: only MQTT 3.1 and 3.1.1 are spoken here");
            let _ = refuse(&mut dev_out, ConnectReturnCode::RefusedProtocolVersion).await;
            return;
        }
        Ok(other) => {
            return debug!(%peer, packet = ?other.get_type(), "first packet was not CONNECT")
        }
        Err(e) => return debug!(%peer, error = %e, "malformed CONNECT"),
    };
    // MQTT 3.1.1 §3.1.3.1: a zero-length client id needs a clean session.
    if connect.client_id.is_empty() && !connect.clean_session {
        ctx.metrics.refuse_connect("identifier_rejected");
        info!(%peer, "CONNECT refused: an empty client id with clean session off");
        let _ = refuse(&mut dev_out, ConnectReturnCode::RefusedIdentifierRejected).await;
        return;
    }
    let principal = match ctx.authenticate(&connect, peer.ip()).await {
        Ok(p) => p,
        Err(code) => {
            ctx.metrics.refuse_connect(code_name(code));
            let user = connect.username.unwrap_or("").escape_debug();
            info!(%peer, %user, code = code_name(code), "CONNECT refused");
            let _ = refuse(&mut dev_out, code).await;
            return;
        }
    };
    if let Some(w) = &connect.last_will {
        if !principal.may_publish(w.topic) {
            ctx.metrics.refuse_connect("not_authorized");
            let hint = super::acl::refusal_hint(&principal, w.topic);
            info!(%peer, who = principal.name(), topic = w.topic, hint, "CONNECT refused: will topic outside the device's prefix");
            let _ = refuse(&mut dev_out, ConnectReturnCode::NotAuthorized).await;
            return;
        }
    }
    let Some(_established) = ctx.admit(&principal) else {
        ctx.metrics.refuse_connect("server_unavailable");
        info!(%peer, who = principal.name(), "CONNECT refused: no connection place left");
        let _ = refuse(&mut dev_out, ConnectReturnCode::ServerUnavailable).await;
        return;
    };
    let client_id = internal_client_id(&principal, connect.client_id);
    let login = RouterLogin {
        client_id: client_id.clone(),
        keep_alive: connect.keep_alive,
        clean_session: connect.clean_session,
        will: connect.last_will.as_ref().map(Will::of),
    };
    // A clean session has nothing waiting in the router; a persistent one may, and a
    // person connects to subscribe.
    let eager = !connect.clean_session || matches!(principal, Principal::User { .. });
    let (router, session_present) = if eager {
        match open_router(&ctx, &login).await {
            Ok((link, present)) => (Some(link), present),
            Err(e) => {
                warn!(%peer, who = principal.name(), error = %e, "router did not accept the connection");
                ctx.metrics.refuse_connect("server_unavailable");
                let _ = refuse(&mut dev_out, ConnectReturnCode::ServerUnavailable).await;
                return;
            }
        }
    } else {
        (None, false)
    };
    let accepted = Packet::Connack(Connack {
        session_present,
        code: ConnectReturnCode::Accepted,
    });
    if write_packet(&mut dev_out, &accepted).await.is_err() {
        return;
    }
    drop(pending);
    let (conn_id, kicked) = ctx.registry.register(&client_id);
    ctx.interest
        .connected(&client_id, conn_id, connect.clean_session);
    ctx.metrics.connections.inc();
    debug!(%peer, who = principal.name(), "connected");
    let device = match &principal {
        Principal::Device {
            id,
            resident_id,
            kind,
        } => Some(DeviceCtx {
            id: id.clone(),
            resident_id: *resident_id,
            kind: *kind,
        }),
        Principal::User { .. } => None,
    };
    let mut session = Session {
        keep_alive: Duration::from_secs(u64::from(connect.keep_alive)),
        ctx: ctx.clone(),
        principal,
        client_id: client_id.clone(),
        device,
        dev_in,
        dev_out,
        router,
        login,
        next_pid: Pid::new(),
        pending_subs: HashMap::new(),
        state: ctx.sessions.attach(&client_id, connect.clean_session),
        acks: FuturesOrdered::new(),
    };
    let end = session.run(kicked).await;
    if !connect.clean_session {
        session.settle_qos2().await;
    }
    match &end {
        End::Abnormal(reason) => {
            debug!(%peer, who = session.principal.name(), %reason, "connection lost");
            session.deliver_will().await;
        }
        End::Clean | End::Kicked => {
            debug!(%peer, who = session.principal.name(), ?end, "disconnected")
        }
    }
    ctx.registry.unregister(&client_id, conn_id);
    ctx.interest.disconnected(&client_id, conn_id);
    ctx.sessions
        .detach(&client_id, &session.state, connect.clean_session);
    ctx.metrics.connections.dec();
}

async fn refuse<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: ConnectReturnCode,
) -> Result<(), CodecError> {
    write_packet(
        w,
        &Packet::Connack(Connack {
            session_present: false,
            code,
        }),
    )
    .await
}

fn code_name(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Accepted => "accepted",
        ConnectReturnCode::RefusedProtocolVersion => "unsupported_protocol",
        ConnectReturnCode::RefusedIdentifierRejected => "identifier_rejected",
        ConnectReturnCode::ServerUnavailable => "server_unavailable",
        ConnectReturnCode::BadUsernamePassword => "bad_username_or_password",
        ConnectReturnCode::NotAuthorized => "not_authorized",
    }
}

/// The client id the router knows the connection by: the device id for devices,
/// and a `user:` name for people, so neither can take over the other's session.
fn internal_client_id(principal: &Principal, requested: &str) -> String {
    match principal {
        Principal::Device { id, .. } => id.clone(),
        Principal::User { username, .. } if requested.is_empty() => {
            crate::security::random_id(&user_client_id_prefix(username), 8)
        }
        Principal::User { username, .. } => {
            format!("{}{requested}", user_client_id_prefix(username))
        }
    }
}

/// How every client id of a person begins (usernames hold no ':').
pub(super) fn user_client_id_prefix(username: &str) -> String {
    format!("user:{username}:")
}

/// Connects to the router on the device's behalf and waits for its CONNACK; returns
/// the link and whether the router had a session for it.
///
/// Waiting for the CONNACK whatever the device does keeps the router from ever
/// seeing a connection that drops before CONNACK (rumqttd 0.20 issue #1062).
async fn open_router(ctx: &EdgeCtx, login: &RouterLogin) -> Result<(RouterLink, bool), CodecError> {
    let stream = timeout(ROUTER_TIMEOUT, TcpStream::connect(ctx.router.addr))
        .await
        .map_err(|_| CodecError::Malformed("router connect timed out".into()))??;
    stream.set_nodelay(true)?;
    let (rd, mut out) = stream.into_split();
    // The envelope adds a byte to what the edge accepted from a client.
    let mut rin = PacketReader::new(rd, ctx.max_packet + 1);
    let sealed_will = login.will.as_ref().map(|w| router::seal(w.qos, &w.payload));
    let internal = Packet::Connect(Connect {
        protocol: Protocol::MQTT311,
        keep_alive: router_keep_alive(login.keep_alive),
        client_id: &login.client_id,
        clean_session: login.clean_session,
        last_will: login
            .will
            .as_ref()
            .zip(sealed_will.as_ref())
            .map(|(w, sealed)| LastWill {
                topic: &w.topic,
                message: sealed,
                qos: w.qos,
                retain: w.retain,
            }),
        username: Some(super::router::EDGE_USER),
        password: Some(ctx.router.secret.as_bytes()),
    });
    write_packet(&mut out, &internal).await?;
    let reply = timeout(ROUTER_TIMEOUT, rin.next())
        .await
        .map_err(|_| CodecError::Malformed("router CONNACK timed out".into()))??
        .ok_or_else(|| CodecError::Malformed("router closed before CONNACK".into()))?;
    match decode(&reply)? {
        Packet::Connack(Connack {
            code: ConnectReturnCode::Accepted,
            session_present,
        }) => Ok((RouterLink { rin, out }, session_present)),
        other => Err(CodecError::Malformed(format!("router answered {other:?}"))),
    }
}

/// The next packet from the router, or never when the session has no router link.
async fn router_next(link: &mut Option<RouterLink>) -> Result<Option<Bytes>, CodecError> {
    match link {
        Some(l) => l.rin.next().await,
        None => std::future::pending().await,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Session<S> {
    async fn run(&mut self, mut kicked: tokio::sync::oneshot::Receiver<()>) -> End {
        let mut device_deadline = self.idle_deadline();
        // The router link is pinged at half its keep-alive, whatever the device's is.
        let router_keep_alive =
            Duration::from_secs(u64::from(router_keep_alive(self.login.keep_alive)));
        let ping_every = (router_keep_alive / 2).max(Duration::from_secs(1));
        let mut router_ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        loop {
            let outcome = tokio::select! {
                frame = self.dev_in.next(), if self.acks.len() < MAX_PENDING_ACKS => {
                    device_deadline = self.idle_deadline();
                    match frame {
                        Ok(Some(f)) => self.on_device_packet(f).await,
                        Ok(None) => Err(End::Abnormal("device closed the connection".into())),
                        Err(e) => {
                            if let CodecError::TooLarge(n) = e {
                                self.ctx.metrics.reject(RejectReason::TooLarge);
                                warn!(who = self.principal.name(), bytes = n, "packet over the size limit; closing");
                            }
                            Err(End::Abnormal(e.to_string()))
                        }
                    }
                }
                frame = router_next(&mut self.router) => match frame {
                    Ok(Some(f)) => self.on_router_packet(f).await,
                    Ok(None) => Err(End::Abnormal("router closed the connection".into())),
                    Err(e) => Err(End::Abnormal(format!("router: {e}"))),
                },
                Some(done) = self.acks.next(), if !self.acks.is_empty() => self.stored_ready(done).await,
                _ = router_ping.tick(), if self.router.is_some() => {
                    self.forward_to_router(&Bytes::from_static(&PINGREQ)).await
                }
                _ = sleep_until_opt(device_deadline) => Err(End::Abnormal("keep-alive expired".into())),
                _ = &mut kicked => Err(End::Kicked),
            };
            if let Err(end) = outcome {
                return end;
            }
        }
    }

    /// The connection ended with publishes still on their way to the store: waits a
    /// little for them, so that a QoS 2 message stored after the socket dropped is
    /// known to the session when the client resends it with DUP.
    async fn settle_qos2(&mut self) {
        let state = self.state.clone();
        let settle = async {
            while let Some((p, stored)) = self.acks.next().await {
                if let (QosPid::ExactlyOnce(pid), true) = (p.qospid, stored) {
                    sessions::lock(&state).qos2_received.insert(pid.get());
                }
            }
        };
        let _ = timeout(SETTLE_TIMEOUT, settle).await;
    }

    /// MQTT allows one and a half keep-alive periods of silence.
    fn idle_deadline(&self) -> Option<Instant> {
        (!self.keep_alive.is_zero()).then(|| Instant::now() + self.keep_alive.mul_f32(1.5))
    }

    async fn on_device_packet(&mut self, frame: Bytes) -> Result<(), End> {
        let packet = decode(&frame).map_err(|e| End::Abnormal(e.to_string()))?;
        match packet {
            Packet::Publish(p) => self.device_publish(p).await,
            Packet::Pubrel(pid) => {
                sessions::lock(&self.state).qos2_received.remove(&pid.get());
                self.send_to_device(&Packet::Pubcomp(pid)).await
            }
            // MQTT 3.1.1 §3.8.3: a SUBSCRIBE must carry at least one filter.
            Packet::Subscribe(s) if s.topics.is_empty() => {
                Err(End::Abnormal("SUBSCRIBE without filters".into()))
            }
            Packet::Subscribe(s) => self.device_subscribe(s).await,
            Packet::Pingreq => {
                self.send_to_device(&Packet::Pingresp).await?;
                self.forward_to_router(&frame).await
            }
            Packet::Disconnect => {
                let _ = self.forward_to_router(&frame).await;
                Err(End::Clean)
            }
            Packet::Unsubscribe(u) => {
                self.ctx.interest.unsubscribed(&self.client_id, &u.topics);
                if self.router.is_some() {
                    self.forward_to_router(&frame).await
                } else {
                    // Never subscribed through the router: there is nothing to drop there.
                    self.send_to_device(&Packet::Unsuback(u.pid)).await
                }
            }
            // Acks of the router's publishes pass through, translated where the edge
            // delivered at a lower QoS than the router's.
            Packet::Puback(pid) => self.device_puback(pid, &frame).await,
            Packet::Pubrec(pid) => {
                sessions::lock(&self.state)
                    .unacked_deliveries
                    .remove(&pid.get());
                self.forward_to_router(&frame).await
            }
            Packet::Pubcomp(_) => self.forward_to_router(&frame).await,
            other => Err(End::Abnormal(format!(
                "unexpected {:?} from client",
                other.get_type()
            ))),
        }
    }

    async fn device_publish(&mut self, p: Publish<'_>) -> Result<(), End> {
        if !self.principal.may_publish(p.topic_name) {
            return self.unauthorized_publish(p).await;
        }
        let Some(device) = self.device.clone() else {
            return Err(End::Abnormal("users may not publish".into()));
        };
        if let QosPid::ExactlyOnce(pid) = p.qospid {
            if sessions::lock(&self.state)
                .qos2_received
                .contains(&pid.get())
            {
                // A retransmission of a QoS 2 message already stored: answer, store nothing.
                return self.send_to_device(&Packet::Pubrec(pid)).await;
            }
        }
        if p.retain && p.payload.is_empty() {
            return self.clear_retained(p).await;
        }
        let item = self.ctx.ingest.classify(&device, p.topic_name, p.payload);
        // Decided now, so that the copy for the router is made only when someone
        // subscribes (or the router keeps it as the retained message): most device
        // messages only go to the store.
        let forward = matches!(item, Item::Accepted(_))
            && (p.retain || self.ctx.interest.wanted(p.topic_name));
        let pending = PendingPublish {
            qospid: p.qospid,
            retain: p.retain,
            copy: forward.then(|| RouterCopy {
                topic: p.topic_name.to_string(),
                payload: Bytes::copy_from_slice(p.payload),
            }),
        };
        match p.qospid {
            QosPid::AtMostOnce => {
                self.ctx.ingest.submit(item, false).await;
                self.stored_ready((pending, true)).await
            }
            _ => {
                let rx = self.ctx.ingest.submit(item, true).await;
                self.acks.push_back(Box::pin(async move {
                    let stored = match rx {
                        Some(rx) => rx.await.unwrap_or(false),
                        None => false,
                    };
                    (pending, stored)
                }));
                Ok(())
            }
        }
    }

    /// An empty retained publish clears the topic's retained message (MQTT 3.1.1
    /// §3.3.1.3): nothing for the store or the rules, so it is acknowledged at once (in
    /// order behind any publish still being stored) and always passed to the router.
    async fn clear_retained(&mut self, p: Publish<'_>) -> Result<(), End> {
        let pending = PendingPublish {
            qospid: p.qospid,
            retain: true,
            copy: Some(RouterCopy {
                topic: p.topic_name.to_string(),
                payload: Bytes::new(),
            }),
        };
        if self.acks.is_empty() {
            return self.stored_ready((pending, true)).await;
        }
        self.acks
            .push_back(Box::pin(std::future::ready((pending, true))));
        Ok(())
    }

    /// A publish outside the device's prefix: counted, dead-lettered, never forwarded,
    /// and the connection closed (MQTT 3.1.1 has no way to refuse a single PUBLISH).
    async fn unauthorized_publish(&mut self, p: Publish<'_>) -> Result<(), End> {
        let who = self.principal.name().to_string();
        let hint = super::acl::refusal_hint(&self.principal, p.topic_name);
        warn!(who = %who, topic = p.topic_name, hint, "publish outside the client's prefix refused; closing");
        let detail = match hint {
            Some(h) => format!("{who} may not publish on {:?}: {h}", p.topic_name),
            None => format!("{who} may not publish on {:?}", p.topic_name),
        };
        let item = self.ctx.ingest.refuse(
            Some(&who),
            p.topic_name,
            p.payload,
            RejectReason::NotAuthorized,
            detail,
        );
        self.ctx.ingest.submit(item, false).await;
        Err(End::Abnormal("publish not authorized".into()))
    }

    /// Acknowledges, in order, every publish the pipeline has finished with, and passes
    /// on those someone subscribes to. A batch commit finishes a device's publishes
    /// together, so all that are ready go out in one write to each side.
    async fn stored_ready(&mut self, first: (PendingPublish, bool)) -> Result<(), End> {
        let mut to_device = Vec::new();
        let mut to_router = Vec::new();
        let mut outcome = Ok(());
        let mut next = Some(first);
        while let Some((publish, stored)) = next.take() {
            if !stored {
                // No ack: the device keeps the message and sends it again after reconnecting.
                outcome = Err(End::Abnormal(
                    "store failed; message left with the device".into(),
                ));
                break;
            }
            if let Err(e) = self.encode_outcome(&publish, &mut to_device, &mut to_router) {
                outcome = Err(End::Abnormal(e.to_string()));
                break;
            }
            next = self.acks.next().now_or_never().flatten();
        }
        // What was stored before a failure is still acknowledged.
        self.write_device(&to_device).await?;
        self.write_router(&to_router).await?;
        outcome
    }

    /// The acknowledgement a stored publish earns, and its copy for the router when the
    /// router has a subscriber for it or must keep it as the retained message.
    fn encode_outcome(
        &mut self,
        p: &PendingPublish,
        to_device: &mut Vec<u8>,
        to_router: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match p.qospid {
            QosPid::AtMostOnce => {}
            QosPid::AtLeastOnce(pid) => encode_into(&Packet::Puback(pid), to_device)?,
            QosPid::ExactlyOnce(pid) => {
                sessions::lock(&self.state).qos2_received.insert(pid.get());
                encode_into(&Packet::Pubrec(pid), to_device)?
            }
        }
        let Some(copy) = &p.copy else {
            return Ok(());
        };
        let qospid = match p.qospid {
            QosPid::AtMostOnce => QosPid::AtMostOnce,
            _ => {
                self.next_pid = self.next_pid + 1;
                QosPid::AtLeastOnce(self.next_pid)
            }
        };
        let published_at = match p.qospid {
            QosPid::AtMostOnce => QoS::AtMostOnce,
            QosPid::AtLeastOnce(_) => QoS::AtLeastOnce,
            QosPid::ExactlyOnce(_) => QoS::ExactlyOnce,
        };
        let sealed = router::seal(published_at, &copy.payload);
        let out = Packet::Publish(Publish {
            dup: false,
            qospid,
            retain: p.retain,
            topic_name: &copy.topic,
            payload: &sealed,
        });
        encode_into(&out, to_router)
    }

    async fn write_device(&mut self, bytes: &[u8]) -> Result<(), End> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.dev_out
            .write_all(bytes)
            .await
            .map_err(|e| End::Abnormal(e.to_string()))
    }

    /// Writes to the router, connecting the session there first if it is not yet.
    async fn write_router(&mut self, bytes: &[u8]) -> Result<(), End> {
        if bytes.is_empty() {
            return Ok(());
        }
        let link = match &mut self.router {
            Some(link) => link,
            None => {
                let (link, _) = open_router(&self.ctx, &self.login)
                    .await
                    .map_err(|e| End::Abnormal(format!("router: {e}")))?;
                self.router.insert(link)
            }
        };
        link.out
            .write_all(bytes)
            .await
            .map_err(|e| End::Abnormal(format!("router: {e}")))
    }

    async fn device_subscribe(&mut self, s: Subscribe) -> Result<(), End> {
        let allowed: Vec<bool> = s
            .topics
            .iter()
            .map(|t| self.principal.may_subscribe(&t.topic_path))
            .collect();
        if allowed.iter().any(|a| !a) {
            info!(who = self.principal.name(), filters = ?s.topics.iter().map(|t| &t.topic_path).collect::<Vec<_>>(), "some subscriptions refused");
        }
        let permitted: Vec<SubscribeTopic> = s
            .topics
            .into_iter()
            .zip(&allowed)
            .filter(|(_, ok)| **ok)
            .map(|(t, _)| t)
            .collect();
        if permitted.is_empty() {
            let codes = allowed
                .iter()
                .map(|_| SubscribeReturnCodes::Failure)
                .collect();
            return self
                .send_to_device(&Packet::Suback(Suback {
                    pid: s.pid,
                    return_codes: codes,
                }))
                .await;
        }
        self.pending_subs.insert(s.pid.get(), allowed);
        let phones: Vec<String> = match &self.device {
            Some(d) => permitted
                .iter()
                .filter_map(|t| owntracks::phone_of_cmd_filter(&d.id, &t.topic_path))
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        let filters: Vec<String> = permitted.iter().map(|t| t.topic_path.clone()).collect();
        self.ctx.interest.subscribed(&self.client_id, &filters);
        let fwd = Packet::Subscribe(Subscribe {
            pid: s.pid,
            topics: permitted,
        });
        let mut bytes = Vec::new();
        encode_into(&fwd, &mut bytes).map_err(|e| End::Abnormal(e.to_string()))?;
        self.write_router(&bytes).await?;
        if let Some(d) = &self.device {
            for phone in phones {
                self.ctx
                    .waypoints
                    .phone_subscribed(&d.id, d.resident_id, &phone)
                    .await;
            }
        }
        Ok(())
    }

    async fn on_router_packet(&mut self, frame: Bytes) -> Result<(), End> {
        let packet = decode(&frame).map_err(|e| End::Abnormal(format!("router: {e}")))?;
        match packet {
            // Acks of the edge's own publishes, and answers to its pings, end here.
            Packet::Puback(_) | Packet::Pingresp => Ok(()),
            Packet::Suback(s) => self.router_suback(s).await,
            Packet::Publish(p) => self.router_publish(p).await,
            Packet::Pubrel(pid)
                if sessions::lock(&self.state)
                    .pubrel_answered_here
                    .remove(&pid.get()) =>
            {
                self.send_to_router(&Packet::Pubcomp(pid)).await
            }
            Packet::Pubrel(_) | Packet::Unsuback(_) => write_frame(&mut self.dev_out, &frame)
                .await
                .map_err(|e| End::Abnormal(e.to_string())),
            other => Err(End::Abnormal(format!(
                "unexpected {:?} from router",
                other.get_type()
            ))),
        }
    }

    /// A message the router delivers: out of its envelope, at the lower of the QoS it
    /// was published with and the QoS the router delivers it at (the subscription's).
    /// Where that is lower than the router's, the edge answers the router's QoS flow
    /// itself, or turns the client's PUBACK into the PUBREC the router waits for.
    async fn router_publish(&mut self, p: Publish<'_>) -> Result<(), End> {
        let (published_at, payload) = router::open(p.payload);
        let delivered = match (p.qospid, published_at) {
            (QosPid::AtLeastOnce(pid), Some(QoS::AtMostOnce)) => {
                self.send_to_router(&Packet::Puback(pid)).await?;
                QosPid::AtMostOnce
            }
            (QosPid::ExactlyOnce(pid), Some(QoS::AtMostOnce)) => {
                sessions::lock(&self.state)
                    .pubrel_answered_here
                    .insert(pid.get());
                self.send_to_router(&Packet::Pubrec(pid)).await?;
                QosPid::AtMostOnce
            }
            (QosPid::ExactlyOnce(pid), Some(QoS::AtLeastOnce)) => {
                sessions::lock(&self.state).qos2_as_qos1.insert(pid.get());
                QosPid::AtLeastOnce(pid)
            }
            (as_routed, _) => as_routed,
        };
        let redelivered = match delivered {
            QosPid::AtMostOnce => false,
            QosPid::AtLeastOnce(pid) | QosPid::ExactlyOnce(pid) => !sessions::lock(&self.state)
                .unacked_deliveries
                .insert(pid.get()),
        };
        self.send_to_device(&Packet::Publish(Publish {
            dup: (p.dup || redelivered) && delivered != QosPid::AtMostOnce,
            qospid: delivered,
            retain: p.retain,
            topic_name: p.topic_name,
            payload,
        }))
        .await
    }

    /// The client's PUBACK of a QoS 2 delivery it got at QoS 1 is the router's PUBREC,
    /// whose PUBREL the edge then answers; any other ack passes through unchanged.
    async fn device_puback(&mut self, pid: Pid, frame: &Bytes) -> Result<(), End> {
        let downgraded = {
            let mut state = sessions::lock(&self.state);
            state.unacked_deliveries.remove(&pid.get());
            state.qos2_as_qos1.remove(&pid.get())
        };
        if !downgraded {
            return self.forward_to_router(frame).await;
        }
        sessions::lock(&self.state)
            .pubrel_answered_here
            .insert(pid.get());
        self.send_to_router(&Packet::Pubrec(pid)).await
    }

    async fn send_to_router(&mut self, p: &Packet<'_>) -> Result<(), End> {
        let Some(link) = &mut self.router else {
            return Ok(());
        };
        write_packet(&mut link.out, p)
            .await
            .map_err(|e| End::Abnormal(format!("router: {e}")))
    }

    /// Puts the refusals back into the router's SUBACK, in the device's order.
    async fn router_suback(&mut self, s: Suback) -> Result<(), End> {
        let Some(allowed) = self.pending_subs.remove(&s.pid.get()) else {
            return self.send_to_device(&Packet::Suback(s)).await;
        };
        let mut granted = s.return_codes.into_iter();
        let codes = allowed
            .iter()
            .map(|ok| {
                if *ok {
                    granted.next().unwrap_or(SubscribeReturnCodes::Failure)
                } else {
                    SubscribeReturnCodes::Failure
                }
            })
            .collect();
        self.send_to_device(&Packet::Suback(Suback {
            pid: s.pid,
            return_codes: codes,
        }))
        .await
    }

    async fn send_to_device(&mut self, p: &Packet<'_>) -> Result<(), End> {
        write_packet(&mut self.dev_out, p)
            .await
            .map_err(|e| End::Abnormal(e.to_string()))
    }

    /// Passes a packet on to the router; without a router link there is no one to tell
    /// (a ping or a DISCONNECT concerns only the link).
    async fn forward_to_router(&mut self, frame: &Bytes) -> Result<(), End> {
        let Some(link) = &mut self.router else {
            return Ok(());
        };
        write_frame(&mut link.out, frame)
            .await
            .map_err(|e| End::Abnormal(format!("router: {e}")))
    }

    /// Ingest must see the will, so that a device announcing its own death raises
    /// `device_offline` at once. Subscribers get it from the router, which has it since
    /// CONNECT, or, when the session never needed a router link, from the hub's own.
    async fn deliver_will(&mut self) {
        let (Some(will), Some(device)) = (self.login.will.take(), self.device.as_ref()) else {
            return;
        };
        let item = self.ctx.ingest.classify(device, &will.topic, &will.payload);
        let accepted = matches!(item, Item::Accepted(_));
        self.ctx.ingest.submit(item, false).await;
        if self.router.is_some() || !accepted {
            return;
        }
        if will.retain || self.ctx.interest.wanted(&will.topic) {
            self.ctx
                .publisher
                .publish_will(will.topic, will.payload, will.qos, will.retain);
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimamori_protocol::api::Role;
    use mimamori_protocol::DeviceKind;

    #[test]
    fn people_and_devices_get_separate_router_identities() {
        let d = Principal::Device {
            id: "dev-a".into(),
            resident_id: 1,
            kind: DeviceKind::Gps,
        };
        assert_eq!(internal_client_id(&d, "anything"), "dev-a");
        let u = Principal::User {
            username: "dev-a".into(),
            role: Role::Staff,
            resident_ids: vec![],
        };
        assert_eq!(internal_client_id(&u, "c1"), "user:dev-a:c1");
        assert!(internal_client_id(&u, "").starts_with("user:dev-a:"));
    }

    #[test]
    fn connack_codes_have_metric_names() {
        assert_eq!(
            code_name(ConnectReturnCode::BadUsernamePassword),
            "bad_username_or_password"
        );
        assert_eq!(
            code_name(ConnectReturnCode::NotAuthorized),
            "not_authorized"
        );
    }
}
