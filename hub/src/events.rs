//! The live event bus: every alert change, accepted fix and status change, numbered
//! with a monotonically increasing `seq`, fanned out to WebSocket clients and kept
//! in a bounded window so that a client reconnecting with `since` gets what it missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use mimamori_protocol::Alert;
use mimamori_rules::ResidentStatus;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// How many recent frames are kept for clients that reconnect.
pub const REPLAY_WINDOW: usize = 10_000;

/// What happened, without its sequence number.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubEvent {
    Alert {
        alert: Alert,
    },
    Position {
        resident_id: i64,
        device_id: String,
        lat: f64,
        lon: f64,
        accuracy_m: Option<f64>,
        ts: DateTime<Utc>,
    },
    Status {
        status: ResidentStatus,
    },
    /// A resident was created or changed: views that show names by id learn them here.
    Resident {
        resident_id: i64,
        name: String,
    },
}

impl HubEvent {
    /// The resident the event is about, for scoping what a family user receives.
    pub fn resident_id(&self) -> i64 {
        match self {
            HubEvent::Alert { alert } => alert.resident_id,
            HubEvent::Position { resident_id, .. } => *resident_id,
            HubEvent::Status { status } => status.resident_id,
            HubEvent::Resident { resident_id, .. } => *resident_id,
        }
    }
}

/// An event with its place in the stream.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    pub seq: u64,
    #[serde(flatten)]
    pub event: HubEvent,
}

struct Window {
    next_seq: u64,
    recent: VecDeque<Arc<Frame>>,
}

/// A live subscription, the backlog since the requested `seq` (`None`: resync from a
/// snapshot) and the last `seq` sent so far.
pub type Subscription = (
    broadcast::Receiver<Arc<Frame>>,
    Option<Vec<Arc<Frame>>>,
    u64,
);

/// The bus: cheap to clone, shared by the pipeline, the API and the WebSocket handler.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Frame>>,
    /// Wakes the notification worker on alert changes without making it a subscriber,
    /// so that `has_subscribers` means "a WebSocket client is listening".
    alert_changed: Arc<tokio::sync::Notify>,
    /// Wakes the notification worker when a contact or a resident's time zone changed,
    /// so it works out again when the next daily summary is due.
    summaries_moved: Arc<tokio::sync::Notify>,
    window: Arc<Mutex<Window>>,
}

impl Bus {
    /// A bus whose first frame is `first_seq`. The hub starts it from the clock
    /// (milliseconds × 1000), so numbers keep rising across restarts and a client
    /// that reconnects after one is resynced rather than told it missed nothing.
    pub fn new(first_seq: u64) -> Self {
        let (tx, _) = broadcast::channel(4096);
        let first_seq = first_seq.max(1);
        Bus {
            tx,
            alert_changed: Arc::new(tokio::sync::Notify::new()),
            summaries_moved: Arc::new(tokio::sync::Notify::new()),
            window: Arc::new(Mutex::new(Window {
                next_seq: first_seq,
                recent: VecDeque::new(),
            })),
        }
    }

    /// Numbers an event, keeps it for replay and sends it to every subscriber.
    pub fn publish(&self, event: HubEvent) {
        self.push(None, event)
    }

    /// Puts a frame numbered elsewhere on the bus (cluster mode: by the live stream, so
    /// that every hub gives a frame the same number). Numbers must rise; a frame below
    /// the next expected one is a repeat and is dropped.
    pub fn publish_at(&self, seq: u64, event: HubEvent) {
        self.push(Some(seq), event)
    }

    fn push(&self, at: Option<u64>, event: HubEvent) {
        if matches!(event, HubEvent::Alert { .. }) {
            // A stored permit: a change while the worker is busy still wakes it once.
            self.alert_changed.notify_one();
        }
        let mut w = self.lock();
        let seq = match at {
            None => w.next_seq,
            Some(s) if s < w.next_seq => return,
            Some(s) => s,
        };
        let frame = Arc::new(Frame { seq, event });
        w.next_seq = seq + 1;
        if w.recent.len() == REPLAY_WINDOW {
            w.recent.pop_front();
        }
        w.recent.push_back(frame.clone());
        // Sending under the lock keeps the broadcast order equal to the seq order.
        let _ = self.tx.send(frame);
    }

    /// The number of the last frame sent (one less than the first, before any).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Waits until frame `seq` has been sent, for at most `within`; says whether it was.
    pub async fn reached(&self, seq: u64, within: std::time::Duration) -> bool {
        let mut rx = self.tx.subscribe();
        let waited = tokio::time::timeout(within, async {
            while self.last_seq() < seq {
                match rx.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let _ = waited.await;
        self.last_seq() >= seq
    }

    /// Resolves after the next alert change (or at once if one happened unobserved).
    pub async fn alert_changed(&self) {
        self.alert_changed.notified().await
    }

    /// Says that the next daily summary may be due at another time than was worked out.
    pub fn move_summaries(&self) {
        self.summaries_moved.notify_one();
    }

    /// Resolves after the next [`Bus::move_summaries`] (or at once if one was not awaited).
    pub async fn summaries_moved(&self) {
        self.summaries_moved.notified().await
    }

    /// Whether anyone is listening; lets the pipeline skip building status frames.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A live subscription plus the frames after `since` it would otherwise have missed.
    /// `None` for the backlog means `since` is older than the window: resync from a snapshot.
    pub fn subscribe_since(&self, since: Option<u64>) -> Subscription {
        let w = self.lock();
        let rx = self.tx.subscribe();
        let last = w.next_seq - 1;
        let backlog = match since {
            None => Some(Vec::new()),
            Some(s) if s == last => Some(Vec::new()),
            Some(s) if s > last => None,
            Some(s) => match w.recent.front() {
                Some(first) if first.seq <= s + 1 => {
                    Some(w.recent.iter().filter(|f| f.seq > s).cloned().collect())
                }
                _ => None,
            },
        };
        (rx, backlog, last)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: i64) -> HubEvent {
        HubEvent::Position {
            resident_id: id,
            device_id: "d".into(),
            lat: 0.0,
            lon: 0.0,
            accuracy_m: None,
            ts: Utc::now(),
        }
    }

    #[test]
    fn a_reconnecting_client_gets_exactly_what_it_missed() {
        let bus = Bus::new(100);
        for i in 0..5 {
            bus.publish(status(i));
        }
        let (_rx, backlog, last) = bus.subscribe_since(Some(102));
        assert_eq!(last, 104);
        let seqs: Vec<u64> = backlog.unwrap_or_default().iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![103, 104]);
    }

    #[test]
    fn frames_numbered_elsewhere_keep_their_numbers_and_repeats_are_dropped() {
        let bus = Bus::new(50);
        bus.publish_at(50, status(1));
        bus.publish_at(57, status(2));
        bus.publish_at(57, status(3));
        bus.publish_at(52, status(4));
        assert_eq!(bus.last_seq(), 57);
        let (_rx, backlog, _) = bus.subscribe_since(Some(50));
        let seqs: Vec<u64> = backlog.unwrap_or_default().iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![57]);
    }

    #[test]
    fn too_old_or_future_positions_ask_for_a_resync() {
        let bus = Bus::new(1);
        for i in 0..(REPLAY_WINDOW as i64 + 10) {
            bus.publish(status(i));
        }
        assert!(bus.subscribe_since(Some(3)).1.is_none());
        assert!(bus.subscribe_since(Some(u64::MAX)).1.is_none());
        assert_eq!(bus.subscribe_since(None).1.map(|b| b.len()), Some(0));
    }
}
