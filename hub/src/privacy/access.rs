//! The read audit: who read which resident's positions, track, readings, activity or
//! alert details, when, and how many rows, appended to the store's `access_log`.
//!
//! A request only puts its entry on a bounded queue and goes on; one writer task takes
//! whatever is queued and appends it in one transaction, so a desk that reads all day
//! costs one small write every so often, never a wait. The writer gathers for a moment
//! ([`LINGER`]) after the first read of a batch: at a few hundred reads a second a
//! transaction per read or two cost the desk more than a quarter of its reads
//! (`cargo bench -p mimamori-bench -- --only=privacy`). A full queue (the store down for
//! long) drops the entry and counts it in `mimamori_access_log_dropped_total` rather
//! than slow the desk down.

use std::sync::Arc;
use std::time::Duration;

use mimamori_protocol::api::User;
use tokio::sync::mpsc;
use tracing::warn;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::privacy::Access;
use crate::store::Store;

/// Reads that may wait for the writer.
const QUEUE: usize = 65_536;
/// Most reads appended in one transaction.
const BATCH: usize = 1_000;
/// How long the writer waits after a read for more to append with it: a log entry is on
/// record this much later, and a busy desk's reads share transactions.
pub const LINGER: Duration = Duration::from_millis(200);
/// Attempts at one batch before it is given up.
const ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Readings,
    Track,
    Positions,
    Activity,
    Alert,
    Snapshot,
    Export,
    /// Readings read to try rule settings on them (`POST /residents/{id}/replay`).
    Replay,
}

impl Read {
    pub fn as_str(self) -> &'static str {
        match self {
            Read::Readings => "readings",
            Read::Track => "track",
            Read::Positions => "positions",
            Read::Activity => "activity",
            Read::Alert => "alert",
            Read::Snapshot => "snapshot",
            Read::Export => "export",
            Read::Replay => "replay",
        }
    }

    /// How a family summary names it.
    pub fn plain(what: &str) -> &'static str {
        match what {
            "track" | "positions" => "the map",
            "readings" => "the sensor readings",
            "activity" => "the daily rhythm",
            "alert" => "an alert's details",
            "snapshot" => "the live overview",
            "export" => "a full export of the data",
            "replay" => "the sensor readings, to try alert settings on them",
            _ => "the data",
        }
    }
}

/// The handle requests log their reads through.
#[derive(Clone)]
pub struct AccessLog {
    /// `None` only in the benchmark's baseline, which measures what logging costs.
    tx: Option<mpsc::Sender<Access>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Starts the writer; it ends once every handle is dropped and the queue is written.
    pub fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(store, rx, metrics.clone()));
        AccessLog {
            tx: Some(tx),
            clock,
            metrics,
        }
    }

    /// A log that keeps nothing: the baseline the benchmark compares the read audit with.
    /// Nothing in the hub program turns the audit off (see [`super::PrivacyConfig`]).
    pub fn unlogged(clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        AccessLog {
            tx: None,
            clock,
            metrics,
        }
    }

    /// Logs that `who` read `rows` rows of `what` about a resident; never waits.
    pub fn record(&self, who: &User, resident_id: i64, what: Read, rows: usize) {
        let Some(tx) = &self.tx else { return };
        let entry = Access {
            at: self.clock.now(),
            resident_id,
            actor: who.username.clone(),
            role: who.role.as_str().to_string(),
            what: what.as_str().to_string(),
            rows: i64::try_from(rows).unwrap_or(i64::MAX),
        };
        if tx.try_send(entry).is_err() {
            self.metrics.access_dropped.inc();
            warn!(
                resident = resident_id,
                "access log queue full; a read was not logged"
            );
        }
    }
}

async fn write(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Access>, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < BATCH {
            tokio::time::sleep(LINGER).await;
            while batch.len() < BATCH {
                let Ok(read) = rx.try_recv() else { break };
                batch.push(read);
            }
        }
        let mut attempt = 1;
        loop {
            match store.append_access(&batch).await {
                Ok(()) => {
                    metrics.access_logged.inc_by(batch.len() as u64);
                    break;
                }
                Err(e) if attempt < ATTEMPTS => {
                    warn!(error = %e, attempt, "cannot append to the access log; retrying");
                    attempt += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = batch.len(), "access log entries lost");
                    metrics.access_dropped.inc_by(batch.len() as u64);
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// A family's plain account of who read their relative's data: one line per person,
/// thing read and local day, newest first ("staff tanaka viewed the map 3 times on
/// 1 Dec 2026").
pub fn summarise(entries: &[Access], tz: chrono_tz::Tz) -> Vec<String> {
    // (role, actor, what was seen, local day) and how often, in order of first sight.
    type Line = (String, String, &'static str, chrono::NaiveDate);
    let mut lines: Vec<(Line, usize)> = Vec::new();
    for e in entries {
        let key = (
            e.role.clone(),
            e.actor.clone(),
            Read::plain(&e.what),
            e.at.with_timezone(&tz).date_naive(),
        );
        match lines.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => lines.push((key, 1)),
        }
    }
    lines
        .into_iter()
        .map(|((role, actor, what, day), n)| {
            let times = match n {
                1 => "once".to_string(),
                n => format!("{n} times"),
            };
            format!(
                "{role} {actor} viewed {what} {times} on {}",
                day.format("%-d %b %Y")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn read(actor: &str, what: &str, at: chrono::DateTime<Utc>) -> Access {
        Access {
            at,
            resident_id: 1,
            actor: actor.into(),
            role: "staff".into(),
            what: what.into(),
            rows: 10,
        }
    }

    #[test]
    fn a_family_summary_counts_views_per_person_thing_and_local_day() {
        let at = |d, h| {
            Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0)
                .single()
                .unwrap_or_default()
        };
        // 16:00 UTC on 30 Nov is 1 Dec in Tokyo.
        let entries = vec![
            read("tanaka", "track", at(1, 3)),
            read("tanaka", "positions", at(1, 2)),
            read(
                "tanaka",
                "track",
                Utc.with_ymd_and_hms(2026, 11, 30, 16, 0, 0)
                    .single()
                    .unwrap_or_default(),
            ),
            read("sato", "readings", at(1, 1)),
            read("tanaka", "track", at(2, 1)),
        ];
        assert_eq!(
            summarise(&entries, chrono_tz::Asia::Tokyo),
            vec![
                "staff tanaka viewed the map 3 times on 1 Dec 2026",
                "staff sato viewed the sensor readings once on 1 Dec 2026",
                "staff tanaka viewed the map once on 2 Dec 2026",
            ]
        );
    }
}
