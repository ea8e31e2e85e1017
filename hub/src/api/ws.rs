//! The live stream `GET /api/v1/ws`: a snapshot, then every alert change, accepted
//! fix and status change the caller may see, each numbered with the bus's `seq`.
//!
//! Invariants:
//! - A connection subscribes to the bus BEFORE it reads the snapshot, so nothing
//!   that happens while the snapshot is built is lost (at worst a frame repeats a
//!   change the snapshot already shows; every frame is a whole state, so applying
//!   it twice is harmless).
//! - A slow client never slows ingest or other clients: the bus is a broadcast
//!   ring that never waits for a receiver. A client that falls more than the ring
//!   behind is told so (`resync`) and given a fresh snapshot; one whose socket
//!   accepts nothing for [`SEND_TIMEOUT`] is dropped and reconnects with `since`.
//! - A family user receives only frames about their own residents.
//! - In cluster mode `seq` is the live stream's, the same on every hub, so `since`
//!   resumes on any hub ([`crate::cluster::live::subscribe_since`]).
//! - A revocation (logout, deleted user, new password, a resident taken away) closes
//!   the stream at once ([`crate::revocation`]); the session is also checked again at
//!   every ping, so an expired session ends it too.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use mimamori_protocol::api::{Role, User};
use mimamori_protocol::{Alert, AlertState};
use mimamori_rules::ResidentStatus;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

use super::error::{ApiError, ApiQuery, ApiResult};
use super::AppState;
use crate::events::Frame;
use crate::revocation::Revoked;
use crate::security;
use crate::store::AlertFilter;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

/// How often an idle connection is pinged, well under the 60 s idle timeout of
/// common reverse proxies.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// How long one frame may wait for the client's socket before the client is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client without `?token=` has to send its `auth` frame.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most alerts of each live state a snapshot carries.
const SNAPSHOT_ALERTS: i64 = 1000;
/// Close code for a missing, wrong or ended session (4000–4999 are the application's).
const CLOSE_UNAUTHORIZED: u16 = 4401;

#[derive(Debug, Deserialize)]
struct WsQuery {
    token: Option<String>,
    since: Option<u64>,
}

/// Frames the stream sends besides the bus's own.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    /// Everything live the viewer may see, as of `seq`.
    Snapshot {
        seq: u64,
        alerts: Vec<Alert>,
        residents: Vec<ResidentStatus>,
    },
    /// The client fell behind; a snapshot follows at once.
    Resync {
        seq: u64,
        reason: &'static str,
        missed: u64,
    },
}

/// The first frame of a client that did not put its token in the URL.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AuthFrame {
    Auth { token: String },
}

/// Who is watching, and the session that lets them.
struct Viewer {
    user: User,
    token_hash: String,
}

impl Viewer {
    fn scope(&self) -> Option<Vec<i64>> {
        match self.user.role {
            Role::Family => Some(self.user.resident_ids.clone()),
            Role::Admin | Role::Staff => None,
        }
    }

    fn sees(&self, resident_id: i64) -> bool {
        match self.user.role {
            Role::Family => self.user.resident_ids.contains(&resident_id),
            Role::Admin | Role::Staff => true,
        }
    }
}

async fn viewer_for(st: &AppState, token: &str) -> ApiResult<Option<Viewer>> {
    let token_hash = security::hash_token(token);
    let user = st.store.session_user(&token_hash, st.clock.now()).await?;
    // An admin who must still set up one-time codes sees nothing live either.
    let user = user.filter(|u| !super::totp::must_enrol(st, u));
    Ok(user.map(|user| Viewer { user, token_hash }))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

/// A wrong token is refused before the upgrade, with the API's usual 401; no token
/// at all means the client will authenticate in its first frame.
async fn upgrade(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let viewer = match q.token.or_else(|| bearer(&headers)) {
        Some(token) => Some(
            viewer_for(&st, &token)
                .await?
                .ok_or(ApiError::Unauthorized)?,
        ),
        None => None,
    };
    let since = q.since;
    Ok(ws
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve(st, socket, viewer, since)))
}

async fn serve(st: AppState, mut socket: WebSocket, viewer: Option<Viewer>, since: Option<u64>) {
    let viewer = match viewer {
        Some(v) => v,
        None => match first_frame_auth(&st, &mut socket).await {
            Some(v) => v,
            None => {
                close(&mut socket, CLOSE_UNAUTHORIZED, "authentication required").await;
                return;
            }
        },
    };
    let username = viewer.user.username.clone();
    info!(user = %username, ?since, "live stream opened");
    let mut conn = Connection { st, socket, viewer };
    match conn.run(since).await {
        Ok(()) => info!(user = %username, "live stream closed"),
        Err(why) => info!(user = %username, %why, "live stream ended"),
    }
}

async fn first_frame_auth(st: &AppState, socket: &mut WebSocket) -> Option<Viewer> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, async {
        loop {
            match socket.recv().await? {
                Ok(Message::Text(text)) => return Some(text),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .ok()??;
    let AuthFrame::Auth { token } = serde_json::from_str(first.as_str()).ok()?;
    viewer_for(st, &token).await.ok()?
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("the client did not read for {0:?}")]
    Stalled(Duration),
    #[error("socket: {0}")]
    Socket(#[from] axum::Error),
    #[error("cannot build the snapshot: {0}")]
    Snapshot(#[from] ApiError),
    #[error("the session ended")]
    SessionEnded,
}

struct Connection {
    st: AppState,
    socket: WebSocket,
    viewer: Viewer,
}

impl Connection {
    async fn run(&mut self, since: Option<u64>) -> Result<(), End> {
        // Subscribed first, so a revocation during the snapshot is not missed.
        let mut revoked = self.st.revocations.subscribe();
        let (mut rx, backlog, last) = match &self.st.cluster {
            Some(cluster) => {
                crate::cluster::live::subscribe_since(&cluster.js, &self.st.bus, since).await
            }
            None => self.st.bus.subscribe_since(since),
        };
        match backlog {
            Some(missed) if since.is_some() => {
                for frame in missed {
                    self.forward(&frame).await?;
                }
            }
            _ => self.snapshot(last).await?,
        }
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Ok(frame) => self.forward(&frame).await?,
                    Err(RecvError::Lagged(missed)) => {
                        rx = self.resync(missed).await?;
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = ping.tick() => self.keep_alive().await?,
                notice = revoked.recv() => match notice {
                    Ok(r) if !self.names_me(&r) => {}
                    // Too many notices to read them all: the session check decides.
                    Err(RecvError::Lagged(_)) => self.keep_alive().await?,
                    Err(RecvError::Closed) => {}
                    Ok(_) => {
                        close(&mut self.socket, CLOSE_UNAUTHORIZED, "session ended").await;
                        return Err(End::SessionEnded);
                    }
                },
                incoming = self.socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    // Pongs need nothing; clients have nothing else to say.
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Tells a client that fell behind, and starts it again from a fresh snapshot.
    async fn resync(
        &mut self,
        missed: u64,
    ) -> Result<tokio::sync::broadcast::Receiver<std::sync::Arc<Frame>>, End> {
        warn!(user = %self.viewer.user.username, missed, "live client fell behind; resyncing");
        let (rx, _, last) = self.st.bus.subscribe_since(None);
        self.send_json(&Control::Resync {
            seq: last,
            reason: "lagged",
            missed,
        })
        .await?;
        self.snapshot(last).await?;
        Ok(rx)
    }

    async fn snapshot(&mut self, seq: u64) -> Result<(), End> {
        let scope = self.viewer.scope();
        let mut alerts = Vec::new();
        for state in [
            AlertState::Unanswered,
            AlertState::Open,
            AlertState::Pending,
            AlertState::Acknowledged,
        ] {
            let filter = AlertFilter {
                state: Some(state),
                within: scope.clone(),
                limit: SNAPSHOT_ALERTS,
                ..AlertFilter::default()
            };
            alerts.extend(
                self.st
                    .store
                    .list_alerts(&filter)
                    .await
                    .map_err(ApiError::from)?,
            );
        }
        let residents = self
            .st
            .store
            .list_residents(scope.as_deref())
            .await
            .map_err(ApiError::from)?;
        let statuses = self
            .st
            .pipeline
            .statuses(residents.iter().map(|r| r.id).collect())
            .await;
        // Each resident's status (last position among it) and live alerts were read.
        for status in &statuses {
            let rid = status.resident_id;
            let alerts_of = alerts.iter().filter(|a| a.resident_id == rid).count();
            self.st.privacy.access.record(
                &self.viewer.user,
                rid,
                crate::privacy::access::Read::Snapshot,
                1 + alerts_of,
            );
        }
        self.send_json(&Control::Snapshot {
            seq,
            alerts,
            residents: statuses,
        })
        .await
    }

    async fn forward(&mut self, frame: &Frame) -> Result<(), End> {
        if self.viewer.sees(frame.event.resident_id()) {
            self.send_json(frame).await?;
        }
        Ok(())
    }

    fn names_me(&self, r: &Revoked) -> bool {
        match r {
            Revoked::User(id) => *id == self.viewer.user.id,
            Revoked::Session(hash) => *hash == self.viewer.token_hash,
        }
    }

    /// Pings, after checking the session still stands.
    async fn keep_alive(&mut self) -> Result<(), End> {
        let session = self
            .st
            .store
            .session_user(&self.viewer.token_hash, self.st.clock.now())
            .await;
        match session {
            Ok(None) => {
                close(&mut self.socket, CLOSE_UNAUTHORIZED, "session ended").await;
                return Err(End::SessionEnded);
            }
            // A database hiccup is no reason to drop a watching client.
            Err(e) => debug!(error = %e, "cannot recheck session; keeping the stream"),
            Ok(Some(_)) => {}
        }
        self.send(Message::Ping(Default::default())).await
    }

    async fn send_json(&mut self, value: &impl Serialize) -> Result<(), End> {
        let text = serde_json::to_string(value).map_err(|e| ApiError::Internal(e.into()))?;
        self.send(Message::Text(text.into())).await
    }

    async fn send(&mut self, msg: Message) -> Result<(), End> {
        tokio::time::timeout(SEND_TIMEOUT, self.socket.send(msg))
            .await
            .map_err(|_| End::Stalled(SEND_TIMEOUT))??;
        Ok(())
    }
}
