//! Revocation: when a person loses access (deleted, logged out, new password, a
//! resident taken away), every live connection they hold ends at once, not at its next
//! periodic check.
//!
//! REST calls look the session up each time and need nothing. What stays open is
//! told here: the MQTT edge closes the person's connections, and each WebSocket
//! listens on [`Revocations::subscribe`] and closes itself when the notice names it.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::edge::EdgeCtx;

/// Notices kept for WebSockets that are busy sending; one that lags rechecks its session.
const NOTICES: usize = 256;

/// Who lost access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Every connection of this user.
    User(i64),
    /// The streams opened with this session (by its token's hash).
    Session(String),
}

/// Where revocations are announced.
#[derive(Clone)]
pub struct Revocations {
    edge: Arc<EdgeCtx>,
    tx: broadcast::Sender<Arc<Revoked>>,
}

impl Revocations {
    pub fn new(edge: Arc<EdgeCtx>) -> Revocations {
        let (tx, _) = broadcast::channel(NOTICES);
        Revocations { edge, tx }
    }

    /// Ends everything `username` (user `user_id`) holds open: MQTT and WebSockets.
    pub fn user(&self, user_id: i64, username: &str) {
        self.edge.kick_user(username);
        let _ = self.tx.send(Arc::new(Revoked::User(user_id)));
        tracing::info!(user = %username.escape_debug(), "live connections of the user closed");
    }

    /// Ends the WebSockets opened with one session (a logout).
    pub fn session(&self, token_hash: &str) {
        let _ = self
            .tx
            .send(Arc::new(Revoked::Session(token_hash.to_string())));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Revoked>> {
        self.tx.subscribe()
    }
}
