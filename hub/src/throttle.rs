//! Login back-off: failed password checks counted per source address, per account
//! from one source, and per account from anywhere, so that guessing is slow whichever
//! an attacker varies, while one attacker cannot lock a person out for long.
//!
//! A few failures cost nothing. Past the free ones each further failure doubles the
//! wait before the next attempt is even looked at (1 s, 2 s, 4 s … up to a cap);
//! while waiting, attempts are refused at once, without a password check (HTTP 429
//! with `Retry-After`, MQTT CONNACK 5) and without counting. The account as a whole
//! has many free failures and a cap of a minute: enough to make guessing from many
//! addresses slow, short enough that the real person gets in. A success clears the
//! account's counts; any count fades after a quiet [`Policy::forget_after`]. The core
//! is pure: every call is given the time.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::limits::source_key;

/// The numbers of the back-off.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures one source may have, whatever the accounts (offices share an address).
    pub free_source: u32,
    /// Failures one account may have from one source.
    pub free_pair: u32,
    /// Failures one account may have from everywhere.
    pub free_account: u32,
    /// The longest wait for a source, or an account from one source.
    pub max_backoff: Duration,
    /// The longest wait for an account as a whole.
    pub max_account_backoff: Duration,
    /// A record with no failure for this long is dropped.
    pub forget_after: Duration,
    /// Most records kept per kind; the oldest go first (memory stays bounded).
    pub max_records: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            free_source: 20,
            free_pair: 5,
            free_account: 100,
            max_backoff: Duration::from_secs(15 * 60),
            max_account_backoff: Duration::from_secs(60),
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

/// Which limit held an attempt back, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// `source`, `account_from_source` or `account`.
    pub by: &'static str,
    pub wait: Duration,
}

impl Limited {
    /// How long to wait, rounded up to whole seconds for `Retry-After`.
    pub fn retry_after_secs(self) -> u64 {
        self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0)
    }
}

#[derive(Default)]
struct Book {
    sources: HashMap<IpAddr, Record>,
    pairs: HashMap<(String, IpAddr), Record>,
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
        let (source, account) = (source_key(source), account_key(account));
        let book = self.lock();
        let waiting = |by, r: Option<&Record>| match r.and_then(|r| r.blocked_until) {
            Some(until) if until > now => Err(Limited {
                by,
                wait: until - now,
            }),
            _ => Ok(()),
        };
        waiting("source", book.sources.get(&source))?;
        waiting(
            "account_from_source",
            book.pairs.get(&(account.clone(), source)),
        )?;
        waiting("account", book.accounts.get(&account))
    }

    /// Counts a wrong password (or unknown user) from `source` for `account`.
    pub fn failed(&self, source: IpAddr, account: &str, now: Instant) {
        let (source, account) = (source_key(source), account_key(account));
        let p = self.policy;
        let mut book = self.lock();
        bump(
            &mut book.sources,
            source,
            (p.free_source, p.max_backoff),
            &p,
            now,
        );
        bump(
            &mut book.pairs,
            (account.clone(), source),
            (p.free_pair, p.max_backoff),
            &p,
            now,
        );
        bump(
            &mut book.accounts,
            account,
            (p.free_account, p.max_account_backoff),
            &p,
            now,
        );
    }

    /// The account logged in from `source`: its counts start again.
    pub fn succeeded(&self, source: IpAddr, account: &str) {
        let (source, account) = (source_key(source), account_key(account));
        let mut book = self.lock();
        book.pairs.remove(&(account.clone(), source));
        book.accounts.remove(&account);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // Each update is one insert or remove: a poisoned book is still consistent.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn account_key(account: &str) -> String {
    account.to_lowercase()
}

/// Counts one failure under `key`; past `free` failures the key waits, up to `cap`.
fn bump<K: Hash + Eq + Clone>(
    records: &mut HashMap<K, Record>,
    key: K,
    (free, cap): (u32, Duration),
    p: &Policy,
    now: Instant,
) {
    if records.len() >= p.max_records && !records.contains_key(&key) {
        make_room(records, p, now);
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
        r.blocked_until = Some(now + Duration::from_secs(1u64 << doublings).min(cap));
    }
}

/// Drops faded records, then if need be the oldest tenth.
fn make_room<K: Hash + Eq + Clone>(records: &mut HashMap<K, Record>, p: &Policy, now: Instant) {
    records.retain(|_, r| now.saturating_duration_since(r.last) < p.forget_after);
    if records.len() >= p.max_records {
        let mut ages: Vec<_> = records.iter().map(|(k, r)| (r.last, k.clone())).collect();
        ages.sort_by_key(|(last, _)| *last);
        for (_, k) in ages.into_iter().take(p.max_records / 10 + 1) {
            records.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn one_source_guessing_one_account_waits_longer_after_each_failure() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..5 {
            assert!(t.check(ip(1), "alice", now).is_ok());
            t.failed(ip(1), "alice", now);
        }
        assert!(t.check(ip(1), "Alice", now).is_ok(), "five are free");
        t.failed(ip(1), "alice", now);
        let limited = t.check(ip(1), "alice", now).err();
        assert_eq!(
            limited.map(|l| (l.by, l.retry_after_secs())),
            Some(("account_from_source", 1))
        );
        let later = now + Duration::from_secs(1);
        assert!(t.check(ip(1), "alice", later).is_ok());
        t.failed(ip(1), "alice", later);
        assert_eq!(
            t.check(ip(1), "alice", later)
                .map_err(Limited::retry_after_secs),
            Err(2)
        );
        assert!(
            t.check(ip(2), "alice", later).is_ok(),
            "the person elsewhere still gets in"
        );
        assert!(
            t.check(ip(1), "bob", later).is_ok(),
            "others are not held back"
        );
        t.succeeded(ip(1), "alice");
        assert!(t.check(ip(1), "alice", later).is_ok());
    }

    #[test]
    fn a_source_spraying_many_accounts_waits_too() {
        let t = Throttle::default();
        let now = Instant::now();
        for n in 0..21 {
            t.failed(ip(1), &format!("user{n}"), now);
        }
        assert_eq!(
            t.check(ip(1), "someone-new", now).map_err(|l| l.by),
            Err("source")
        );
        assert!(t.check(ip(2), "someone-new", now).is_ok());
    }

    #[test]
    fn many_sources_guessing_one_account_slow_it_down_for_a_minute_at_most() {
        let t = Throttle::default();
        let now = Instant::now();
        for n in 0..=120u8 {
            t.failed(IpAddr::from([10, 0, 0, n]), "alice", now);
        }
        let limited = t.check(ip(1), "alice", now).err();
        assert_eq!(
            limited.map(|l| (l.by, l.retry_after_secs())),
            Some(("account", 60))
        );
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
        assert!(t.lock().pairs.len() <= 100);
    }
}
