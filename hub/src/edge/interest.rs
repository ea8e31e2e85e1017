//! Who listens: every topic filter the router holds for a session, so the edge can
//! tell whether an accepted device message has anyone to go to.
//!
//! Passing a message to the router costs a loopback write, the router's decoding and
//! routing, and its acknowledgement back; most messages have no MQTT subscriber at all
//! (the store and the WebSocket feed are how people see them). The edge sees every
//! SUBSCRIBE and UNSUBSCRIBE on their way to the router, so it keeps the same set of
//! filters and forwards a message only when one of them matches its topic. The set errs
//! on the side of forwarding: a filter stays until the router has certainly dropped it
//! (an UNSUBSCRIBE, or the end of a clean session), and persistent sessions keep theirs
//! while disconnected, because the router queues messages for them.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// The filters of every session, and an index of them for matching topics.
#[derive(Default)]
pub struct Interest {
    index: RwLock<FilterTree>,
    sessions: Mutex<HashMap<String, SessionFilters>>,
}

struct SessionFilters {
    /// The connection that owns the session now; an older one ending must not clear it.
    conn: u64,
    persistent: bool,
    filters: Vec<String>,
}

impl Interest {
    /// A connection took over `client_id`. A clean session starts with no filters; a
    /// persistent one keeps those the router kept for it.
    pub fn connected(&self, client_id: &str, conn: u64, clean_session: bool) {
        let mut sessions = lock(&self.sessions);
        let entry = sessions
            .entry(client_id.to_string())
            .or_insert(SessionFilters {
                conn,
                persistent: !clean_session,
                filters: Vec::new(),
            });
        entry.conn = conn;
        entry.persistent = !clean_session;
        if clean_session {
            let dropped = std::mem::take(&mut entry.filters);
            self.remove_from_index(&dropped);
        }
    }

    /// The connection ended: a clean session's filters go with it.
    pub fn disconnected(&self, client_id: &str, conn: u64) {
        let mut sessions = lock(&self.sessions);
        let Some(entry) = sessions.get(client_id) else {
            return;
        };
        if entry.conn != conn || entry.persistent {
            return;
        }
        if let Some(gone) = sessions.remove(client_id) {
            self.remove_from_index(&gone.filters);
        }
    }

    pub fn subscribed(&self, client_id: &str, filters: &[String]) {
        let mut sessions = lock(&self.sessions);
        let Some(entry) = sessions.get_mut(client_id) else {
            return;
        };
        let mut index = write(&self.index);
        for f in filters {
            // Subscribing again to the same filter replaces it (MQTT 3.1.1 §3.8.4).
            if !entry.filters.contains(f) {
                entry.filters.push(f.clone());
                index.insert(f);
            }
        }
    }

    pub fn unsubscribed(&self, client_id: &str, filters: &[String]) {
        let mut sessions = lock(&self.sessions);
        let Some(entry) = sessions.get_mut(client_id) else {
            return;
        };
        let mut index = write(&self.index);
        for f in filters {
            if let Some(i) = entry.filters.iter().position(|g| g == f) {
                entry.filters.swap_remove(i);
                index.remove(f);
            }
        }
    }

    /// Whether any session's filter matches this topic name.
    pub fn wanted(&self, topic: &str) -> bool {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .matches(topic)
    }

    fn remove_from_index(&self, filters: &[String]) {
        let mut index = write(&self.index);
        for f in filters {
            index.remove(f);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update leaves the maps consistent before anything can panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Topic filters as a tree of levels, counted, so that matching a topic costs its
/// number of levels and not the number of filters.
#[derive(Default)]
struct FilterTree {
    root: Node,
}

#[derive(Default)]
struct Node {
    children: HashMap<String, Node>,
    /// Filters ending exactly here.
    ends: usize,
}

impl FilterTree {
    fn insert(&mut self, filter: &str) {
        let mut node = &mut self.root;
        for level in levels(filter) {
            node = node.children.entry(level.to_string()).or_default();
        }
        node.ends += 1;
    }

    fn remove(&mut self, filter: &str) {
        remove_from(&mut self.root, &levels(filter).collect::<Vec<_>>());
    }

    /// Called for every accepted message: allocates nothing.
    fn matches(&self, topic: &str) -> bool {
        if self.root.children.is_empty() {
            return false;
        }
        // MQTT 3.1.1 §4.7.2: wildcards at the first level do not match `$` topics.
        let system = topic.starts_with('$');
        matches_from(&self.root, topic.split('/'), system)
    }
}

/// The levels of a filter, without a shared subscription's `$share/group/` prefix.
fn levels(filter: &str) -> std::str::Split<'_, char> {
    let plain = filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f);
    plain.split('/')
}

/// Removes one count of the filter; returns whether `node` is now empty.
fn remove_from(node: &mut Node, levels: &[&str]) -> bool {
    match levels.split_first() {
        None => node.ends = node.ends.saturating_sub(1),
        Some((first, rest)) => {
            if let Some(child) = node.children.get_mut(*first) {
                if remove_from(child, rest) {
                    node.children.remove(*first);
                }
            }
        }
    }
    node.ends == 0 && node.children.is_empty()
}

fn matches_from(node: &Node, mut levels: std::str::Split<'_, char>, first_system: bool) -> bool {
    // `a/#` also matches `a` (MQTT 3.1.1 §4.7.1.2).
    if !first_system && node.children.get("#").is_some_and(|n| n.ends > 0) {
        return true;
    }
    let Some(level) = levels.next() else {
        return node.ends > 0;
    };
    let exact = node
        .children
        .get(level)
        .is_some_and(|n| matches_from(n, levels.clone(), false));
    exact
        || (!first_system
            && node
                .children
                .get("+")
                .is_some_and(|n| matches_from(n, levels, false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(filters: &[&str]) -> FilterTree {
        let mut t = FilterTree::default();
        filters.iter().for_each(|f| t.insert(f));
        t
    }

    #[test]
    fn filters_match_as_mqtt_says() {
        let t = tree(&["watch/v1/devices/+/motion", "zigbee2mqtt/#"]);
        assert!(t.matches("watch/v1/devices/d1/motion"));
        assert!(!t.matches("watch/v1/devices/d1/door"));
        assert!(!t.matches("watch/v1/devices/d1/motion/extra"));
        assert!(t.matches("zigbee2mqtt"));
        assert!(t.matches("zigbee2mqtt/hall/motion"));
        assert!(!t.matches("owntracks/u/phone"));
        assert!(tree(&["#"]).matches("owntracks/u/phone"));
        assert!(!tree(&["#"]).matches("$SYS/uptime"));
        assert!(!tree(&["+/uptime"]).matches("$SYS/uptime"));
        assert!(tree(&["$SYS/#"]).matches("$SYS/uptime"));
        assert!(tree(&["$share/g/owntracks/+/+"]).matches("owntracks/u/phone"));
        assert!(tree(&["a//b"]).matches("a//b"));
        assert!(!tree(&[]).matches("a"));
    }

    #[test]
    fn a_filter_counts_once_per_holder() {
        let mut t = tree(&["a/+", "a/+"]);
        t.remove("a/+");
        assert!(t.matches("a/b"));
        t.remove("a/+");
        assert!(!t.matches("a/b"));
        assert!(t.root.children.is_empty(), "an empty tree keeps no nodes");
        t.remove("never/added");
    }

    #[test]
    fn clean_sessions_drop_their_filters_and_persistent_ones_keep_them() {
        let i = Interest::default();
        i.connected("clean", 1, true);
        i.subscribed("clean", &["a/#".into()]);
        i.connected("kept", 2, false);
        i.subscribed("kept", &["b/#".into()]);
        assert!(i.wanted("a/x") && i.wanted("b/x"));
        i.disconnected("clean", 1);
        i.disconnected("kept", 2);
        assert!(!i.wanted("a/x"), "a clean session's filters end with it");
        assert!(
            i.wanted("b/x"),
            "the router still queues for a persistent session"
        );
        i.connected("kept", 3, true);
        assert!(
            !i.wanted("b/x"),
            "reconnecting clean discards the old session"
        );
    }

    #[test]
    fn an_old_connection_ending_leaves_the_new_one_alone() {
        let i = Interest::default();
        i.connected("dev", 1, true);
        i.connected("dev", 2, true);
        i.subscribed("dev", &["a/+".into()]);
        i.disconnected("dev", 1);
        assert!(i.wanted("a/b"));
        i.unsubscribed("dev", &["a/+".into()]);
        assert!(!i.wanted("a/b"));
    }
}
