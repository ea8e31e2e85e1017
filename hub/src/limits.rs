//! Connection admission: how many connections each listener holds, in total and per
//! source address, and which of them may be dropped to make room.
//!
//! A connection that has not yet proved who it is (an HTTP socket before its first
//! request, an MQTT socket before its CONNECT is accepted) is *pending*. When a gate is
//! full, a newcomer takes the place of the oldest pending connection instead of being
//! refused: a flood of silent sockets then only ever pushes out other silent sockets,
//! and a pendant that sends its CONNECT at once always gets its turn. Only when every
//! held connection has proved itself is a newcomer refused, and that is counted as
//! saturation, which `/healthz` reports.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

/// How long after its last refusal a gate still counts as saturated.
const SATURATION_MEMORY: Duration = Duration::from_secs(30);

/// The per-source key: the address, or for IPv6 its /64, which one host usually owns whole.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every place is held by a connection that proved itself.
    Full,
    /// This source already holds its share.
    SourceFull,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::SourceFull => "source_full",
        }
    }
}

struct Entry {
    source: IpAddr,
    /// Present while the connection is pending: firing it closes the connection.
    evict: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<u64, Entry>,
    by_source: HashMap<IpAddr, usize>,
    next: u64,
    last_full: Option<Instant>,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.by_source.get_mut(&entry.source) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&entry.source);
            }
        }
        Some(entry)
    }

    /// Closes the oldest pending connection, if there is one.
    fn evict_oldest_pending(&mut self) -> bool {
        let oldest = self
            .entries
            .iter()
            .find(|(_, e)| e.evict.is_some())
            .map(|(id, _)| *id);
        let Some(id) = oldest else { return false };
        if let Some(Entry {
            evict: Some(tx), ..
        }) = self.remove(id)
        {
            let _ = tx.send(());
        }
        true
    }
}

/// What `/healthz` shows of a gate.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct GateStatus {
    pub open: usize,
    pub limit: usize,
    pub per_source: usize,
    /// Newcomers refused (or let in by evicting a pending one) since the start.
    pub refused: u64,
    pub evicted: u64,
    /// Full in the last 30 s: a newcomer found no place.
    pub saturated: bool,
}

/// The admission of one listener (or of one class of its connections).
pub struct Gate {
    limit: usize,
    per_source: usize,
    state: Mutex<State>,
    refused: AtomicU64,
    evicted: AtomicU64,
}

impl Gate {
    pub fn new(limit: usize, per_source: usize) -> Arc<Gate> {
        Arc::new(Gate {
            limit: limit.max(1),
            per_source: per_source.max(1),
            state: Mutex::new(State::default()),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// Admits a pending connection from `source`; the receiver fires if it is evicted.
    pub fn admit_pending(
        self: &Arc<Self>,
        source: IpAddr,
    ) -> Result<(Ticket, oneshot::Receiver<()>), Refusal> {
        let (tx, rx) = oneshot::channel();
        let ticket = self.admit_entry(source, Some(tx))?;
        Ok((ticket, rx))
    }

    /// Admits a connection that already proved itself; it is never evicted.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Ticket, Refusal> {
        self.admit_entry(source, None)
    }

    fn admit_entry(
        self: &Arc<Self>,
        source: IpAddr,
        evict: Option<oneshot::Sender<()>>,
    ) -> Result<Ticket, Refusal> {
        let source = source_key(source);
        let mut st = self.lock();
        if st.by_source.get(&source).copied().unwrap_or(0) >= self.per_source {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::SourceFull);
        }
        if st.entries.len() >= self.limit {
            st.last_full = Some(Instant::now());
            if !st.evict_oldest_pending() {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Full);
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let id = st.next;
        st.next += 1;
        st.entries.insert(id, Entry { source, evict });
        *st.by_source.entry(source).or_default() += 1;
        Ok(Ticket {
            gate: self.clone(),
            id,
        })
    }

    pub fn status(&self) -> GateStatus {
        let st = self.lock();
        GateStatus {
            open: st.entries.len(),
            limit: self.limit,
            per_source: self.per_source,
            refused: self.refused.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            saturated: st.entries.len() >= self.limit
                || st
                    .last_full
                    .is_some_and(|t| t.elapsed() < SATURATION_MEMORY),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update keeps the map and the counts in step before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A held place in a [`Gate`], given back when dropped.
pub struct Ticket {
    gate: Arc<Gate>,
    id: u64,
}

impl Ticket {
    /// The connection proved itself: it can no longer be evicted.
    pub fn promote(&self) {
        if let Some(e) = self.gate.lock().entries.get_mut(&self.id) {
            e.evict = None;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_full_gate_evicts_the_oldest_pending_and_never_a_proven_one() {
        let gate = Gate::new(2, 10);
        let proven = gate.admit(ip(1)).expect("room");
        let (_old, mut old_evicted) = gate.admit_pending(ip(2)).expect("room");
        let (_new, mut new_evicted) = gate.admit_pending(ip(2)).expect("evicts");
        assert!(old_evicted.try_recv().is_ok(), "the oldest pending went");
        assert!(new_evicted.try_recv().is_err());
        _new.promote();
        assert_eq!(gate.admit(ip(3)).err(), Some(Refusal::Full));
        assert!(gate.status().saturated);
        drop(proven);
        assert!(gate.admit(ip(3)).is_ok());
    }

    #[test]
    fn each_source_gets_its_share_and_gives_it_back() {
        let gate = Gate::new(10, 2);
        let a = gate.admit(ip(1)).expect("room");
        let _b = gate.admit(ip(1)).expect("room");
        assert_eq!(gate.admit(ip(1)).err(), Some(Refusal::SourceFull));
        assert!(gate.admit(ip(2)).is_ok(), "another source is not held back");
        drop(a);
        assert!(gate.admit(ip(1)).is_ok());
        assert!(!gate.status().saturated);
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let a: IpAddr = "2001:db8::1".parse().expect("v6");
        let b: IpAddr = "2001:db8::2:3".parse().expect("v6");
        assert_eq!(source_key(a), source_key(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("v6");
        assert_eq!(source_key(mapped), IpAddr::from([10, 0, 0, 1]));
    }
}
