//! Login back-off: failed password checks counted per source address and per account,
//! so that guessing is slow whichever of the two an attacker varies.
//!
//! A few failures cost nothing. Past [`Policy::free_failures`] each further failure
//! doubles the wait before the next attempt is even looked at (1 s, 2 s, 4 s … up to
//! [`Policy::max_backoff`]); while waiting, attempts are refused at once, without a
//! password check: HTTP 429 with `Retry-After`, MQTT CONNACK 5. A success clears the
//! account's count; a source's count fades after a quiet [`Policy::forget_after`].
//! The core is pure: every call is given the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::limits::source_key;

/// The numbers of the back-off.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures an account may have before it waits.
    pub free_failures: u32,
    /// Failures a source may have before it waits (offices share an address).
    pub free_source_failures: u32,
    pub max_backoff: Duration,
    /// A record with no failure for this long is dropped.
    pub forget_after: Duration,
    /// Most records kept per kind; the oldest go first (memory stays bounded).
    pub max_records: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            free_failures: 5,
            free_source_failures: 20,
            max_backoff: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
            max_records: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Which limit held an attempt back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Source(Duration),
    Account(Duration),
}

impl Limited {
    /// How long to wait, rounded up to whole seconds for `Retry-After`.
    pub fn retry_after_secs(self) -> u64 {
        let d = match self {
            Limited::Source(d) | Limited::Account(d) => d,
        };
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }

    pub fn label(self) -> &'static str {
        match self {
            Limited::Source(_) => "source",
            Limited::Account(_) => "account",
        }
    }
}

#[derive(Default)]
struct Book {
    sources: HashMap<IpAddr, Record>,
    accounts: HashMap<String, Record>,
}

/// Failed logins, shared by the HTTP login and MQTT CONNECT.
#[derive(Default)]
pub struct Throttle {
    policy: Policy,
    book: Mutex<Book>,
}

impl Throttle {
    pub fn new(policy: Policy) -> Throttle {
        Throttle {
            policy,
            book: Mutex::new(Book::default()),
        }
    }

    /// `Err` when this attempt must wait; checked before any password work.
    pub fn check(&self, source: IpAddr, account: &str, now: Instant) -> Result<(), Limited> {
        let book = self.lock();
        let waiting = |r: Option<&Record>| {
            r.and_then(|r| r.blocked_until)
                .filter(|until| *until > now)
                .map(|until| until - now)
        };
        if let Some(d) = waiting(book.sources.get(&source_key(source))) {
            return Err(Limited::Source(d));
        }
        if let Some(d) = waiting(book.accounts.get(&account_key(account))) {
            return Err(Limited::Account(d));
        }
        Ok(())
    }

    /// Counts a wrong password (or unknown user) from `source` for `account`.
    pub fn failed(&self, source: IpAddr, account: &str, now: Instant) {
        let p = self.policy;
        let mut book = self.lock();
        bump(&mut book.sources, source_key(source), p.free_source_failures, &p, now);
        bump(&mut book.accounts, account_key(account), p.free_failures, &p, now);
    }

    /// The account logged in: its count starts again.
    pub fn succeeded(&self, account: &str) {
        self.lock().accounts.remove(&account_key(account));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // Each update is one insert or remove: a poisoned book is still consistent.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn account_key(account: &str) -> String {
    account.to_lowercase()
}

fn bump<K: std::hash::Hash + Eq + Clone>(
    records: &mut HashMap<K, Record>,
    key: K,
    free: u32,
    p: &Policy,
    now: Instant,
) {
    if records.len() >= p.max_records && !records.contains_key(&key) {
        records.retain(|_, r| now.saturating_duration_since(r.last) < p.forget_after);
        if records.len() >= p.max_records {
            // Still full of fresh records: drop the oldest tenth.
            let mut ages: Vec<_> = records.iter().map(|(k, r)| (r.last, k.clone())).collect();
            ages.sort_by_key(|(last, _)| *last);
            for (_, k) in ages.into_iter().take(p.max_records / 10 + 1) {
                records.remove(&k);
            }
        }
    }
    let r = records.entry(key).or_insert(Record {
        failures: 0,
        last: now,
        blocked_until: None,
    });
    if now.saturating_duration_since(r.last) >= p.forget_after {
        r.failures = 0;
    }
    r.failures = r.failures.saturating_add(1);
    r.last = now;
    if r.failures > free {
        let doublings = (r.failures - free - 1).min(20);
        let wait = Duration::from_secs(1u64 << doublings).min(p.max_backoff);
        r.blocked_until = Some(now + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn an_account_waits_longer_after_each_failure_past_the_free_ones() {
        let t = Throttle::new(Policy::default());
        let now = Instant::now();
        for n in 0..5u8 {
            assert!(t.check(ip(n), "alice", now).is_ok());
            t.failed(ip(n), "alice", now);
        }
        assert!(t.check(ip(9), "Alice", now).is_ok(), "five are free");
        t.failed(ip(9), "alice", now);
        assert_eq!(
            t.check(ip(10), "alice", now),
            Err(Limited::Account(Duration::from_secs(1)))
        );
        let later = now + Duration::from_secs(1);
        assert!(t.check(ip(10), "alice", later).is_ok());
        t.failed(ip(10), "alice", later);
        assert_eq!(
            t.check(ip(11), "alice", later).map_err(Limited::retry_after_secs),
            Err(2)
        );
        assert!(t.check(ip(11), "bob", later).is_ok(), "others are not held back");
        t.succeeded("alice");
        assert!(t.check(ip(11), "alice", later).is_ok());
    }

    #[test]
    fn a_source_spraying_many_accounts_waits_too() {
        let t = Throttle::new(Policy::default());
        let now = Instant::now();
        for n in 0..21 {
            t.failed(ip(1), &format!("user{n}"), now);
        }
        assert!(matches!(
            t.check(ip(1), "someone-new", now),
            Err(Limited::Source(_))
        ));
        assert!(t.check(ip(2), "someone-new", now).is_ok());
    }

    #[test]
    fn the_book_stays_bounded() {
        let t = Throttle::new(Policy {
            max_records: 100,
            ..Policy::default()
        });
        let now = Instant::now();
        for n in 0..1000 {
            t.failed(ip(1), &format!("user{n}"), now);
        }
        assert!(t.lock().accounts.len() <= 100);
    }
}
