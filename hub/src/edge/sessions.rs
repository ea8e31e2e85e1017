//! What an MQTT session keeps between its connections, beyond what the router keeps.
//!
//! The router holds a persistent session's subscriptions and the messages queued for
//! it; the edge holds the packet-id state of the QoS flows it answers itself (those of
//! deliveries it downgraded, see [`super::router::seal`]) and of the client's own QoS 2
//! publishes, which MQTT 3.1.1 §4.1 makes part of the session: a QoS 2 message stored and PUBREC'd
//! before the socket dropped is answered again, and stored no second time, when the
//! client resends it with DUP after reconnecting with clean session off. A clean
//! session starts empty and is forgotten when its connection ends. Like the router's
//! sessions, these live in memory and do not survive a hub restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The packet-id state of one session.
#[derive(Debug, Default)]
pub struct SessionState {
    /// QoS 2 publishes of the client stored and PUBREC'd, waiting for its PUBREL.
    pub qos2_received: HashSet<u16>,
    /// Router packet ids of QoS 2 deliveries passed to the client at QoS 1: its PUBACK
    /// becomes the PUBREC the router waits for.
    pub qos2_as_qos1: HashSet<u16>,
    /// Router packet ids delivered to the client at QoS 1 or 2 and not yet PUBACK'd or
    /// PUBREC'd: when the router sends one again after a reconnect, the edge flags it
    /// DUP (MQTT 3.1.1 §3.3.1.1), which rumqttd does not.
    pub unacked_deliveries: HashSet<u16>,
    /// Router packet ids whose PUBREL the edge answers itself, because the client got
    /// the message at a lower QoS and knows nothing of a QoS 2 flow.
    pub pubrel_answered_here: HashSet<u16>,
}

/// A session's state, shared by the connections that take it over one after another.
pub type Shared = Arc<Mutex<SessionState>>;

/// Every live or persistent session's state, by router client id.
#[derive(Default)]
pub struct Sessions {
    /// Each client's state, and whether it is a persistent session's.
    by_client: Mutex<HashMap<String, (Shared, bool)>>,
}

impl Sessions {
    /// The state a new connection of `client_id` works on: the persistent session's
    /// own, or a fresh one when there is none or the client asked for a clean session
    /// (a clean session's state never carries over, even to a connection taking it over).
    pub fn attach(&self, client_id: &str, clean_session: bool) -> Shared {
        let mut map = lock(&self.by_client);
        if let Some((state, true)) = map.get(client_id) {
            if !clean_session {
                return state.clone();
            }
        }
        let fresh = Shared::default();
        map.insert(client_id.to_string(), (fresh.clone(), !clean_session));
        fresh
    }

    /// A connection ended: a clean session's state goes with it, unless a newer
    /// connection has taken the client id over since.
    pub fn detach(&self, client_id: &str, state: &Shared, clean_session: bool) {
        if !clean_session {
            return;
        }
        let mut map = lock(&self.by_client);
        if map
            .get(client_id)
            .is_some_and(|(s, _)| Arc::ptr_eq(s, state))
        {
            map.remove(client_id);
        }
    }
}

/// Locks a session's state; a poisoned lock still holds a consistent set (every
/// update is a single insert or removal).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_persistent_session_keeps_its_qos2_ids_and_a_clean_one_starts_empty() {
        let s = Sessions::default();
        let first = s.attach("dev", false);
        lock(&first).qos2_received.insert(7);
        s.detach("dev", &first, false);
        let again = s.attach("dev", false);
        assert!(lock(&again).qos2_received.contains(&7));
        let clean = s.attach("dev", true);
        assert!(lock(&clean).qos2_received.is_empty());
        s.detach("dev", &clean, true);
        assert!(lock(&s.attach("dev", false)).qos2_received.is_empty());
    }

    #[test]
    fn an_old_clean_connection_ending_leaves_the_new_one_alone() {
        let s = Sessions::default();
        let old = s.attach("dev", true);
        let new = s.attach("dev", false);
        lock(&new).qos2_received.insert(1);
        s.detach("dev", &old, true);
        assert!(lock(&s.attach("dev", false)).qos2_received.contains(&1));
    }
}
