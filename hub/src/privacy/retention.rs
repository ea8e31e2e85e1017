//! Retention by data class: a background job that purges what has outlived its class's
//! period, in small batches, so that ingest never waits behind it for long.
//!
//! What to purge is decided by [`cutoffs`], a pure function of the settings and `now`;
//! [`purge_once`] carries one pass out against the store for a given `now`, so tests
//! drive it with any clock. Sensor readings are counted into the hourly activity
//! roll-up as they go (in the same transaction), so the daily rhythm outlives them.
//!
//! Passes are run by one task, the [`Runner`]: on its schedule, and whenever an admin
//! asks through the [`RetentionJob`] handle (`POST /api/v1/retention/run`), so two
//! passes of one hub never overlap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::metrics::{ClassLabel, Metrics};
use crate::store::privacy::DataClass;
use crate::store::{Store, StoreResult};

/// Rows removed per transaction: small, so a commit of ingest waits a few milliseconds
/// at most for the store's writer.
pub const BATCH: i64 = 500;
/// Pause between batches, which lets ingest's commits in between.
const PAUSE: Duration = Duration::from_millis(20);
/// How often the job runs by itself unless configured otherwise.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(3600);
/// The first run waits this long after a start, so it does not add to the restore.
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// Days each class is kept; 0 keeps it for ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub positions_days: u32,
    pub sensors_days: u32,
    pub activity_days: u32,
    pub dead_letters_days: u32,
    pub alerts_days: u32,
    pub audit_days: u32,
    pub access_log_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            positions_days: 30,
            sensors_days: 180,
            activity_days: 730,
            dead_letters_days: 30,
            alerts_days: 5 * 365,
            audit_days: 5 * 365,
            access_log_days: 5 * 365,
        }
    }
}

impl Retention {
    pub fn days(&self, class: DataClass) -> u32 {
        match class {
            DataClass::Positions => self.positions_days,
            DataClass::Sensors => self.sensors_days,
            DataClass::Activity => self.activity_days,
            DataClass::DeadLetters => self.dead_letters_days,
            DataClass::Alerts => self.alerts_days,
            DataClass::Audit => self.audit_days,
            DataClass::AccessLog => self.access_log_days,
        }
    }

    /// The roll-up must outlive the readings it is made from, or the rhythm has a hole.
    pub fn validate(&self) -> Result<(), String> {
        let keeps = |d: u32| if d == 0 { u32::MAX } else { d };
        if keeps(self.activity_days) < keeps(self.sensors_days) {
            return Err(format!(
                "retention_activity_days ({}) must be at least retention_sensors_days ({})",
                self.activity_days, self.sensors_days
            ));
        }
        Ok(())
    }
}

/// Each class with a period, and the time before which its rows go.
pub fn cutoffs(now: DateTime<Utc>, r: &Retention) -> Vec<(DataClass, DateTime<Utc>)> {
    DataClass::ALL
        .into_iter()
        .filter(|c| r.days(*c) > 0)
        .map(|c| (c, now - chrono::Duration::days(i64::from(r.days(c)))))
        .collect()
}

/// One pass: purges every class down to its cutoff at `now`; returns what went.
pub async fn purge_once(
    store: &dyn Store,
    r: &Retention,
    now: DateTime<Utc>,
    metrics: &Metrics,
) -> StoreResult<Vec<(DataClass, u64)>> {
    let mut removed = Vec::new();
    for (class, cutoff) in cutoffs(now, r) {
        let mut total = 0;
        loop {
            let n = store.purge_batch(class, cutoff, BATCH).await?;
            total += n;
            metrics
                .retention_purged
                .get_or_create(&ClassLabel {
                    class: class.as_str().to_string(),
                })
                .inc_by(n);
            if n < BATCH as u64 {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        if total > 0 {
            info!(class = class.as_str(), rows = total, before = %cutoff, "retention purged");
        }
        removed.push((class, total));
    }
    Ok(removed)
}

/// One finished pass: when, and how many rows of each class went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pass {
    /// Passes are numbered from 1 at each start of the hub.
    pub pass: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Rows removed, by class; empty when the pass failed.
    pub removed: BTreeMap<String, u64>,
    /// Why the pass failed, if it did; the next pass retries.
    pub error: Option<String>,
}

/// Where the job is: passes finished, the one under way, the last one's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub passes: u64,
    pub running: Option<u64>,
    pub last: Option<Pass>,
}

/// The API's handle on the job: its settings, its status, and asking for a pass now.
#[derive(Clone)]
pub struct RetentionJob {
    pub retention: Retention,
    /// `None`: passes run only when asked for.
    pub every: Option<Duration>,
    wake: Arc<Notify>,
    status: watch::Receiver<JobStatus>,
}

impl RetentionJob {
    pub fn status(&self) -> JobStatus {
        self.status.borrow().clone()
    }

    /// Asks for a pass that starts after now; returns its number, which the status
    /// shows as `last.pass` once it is done. Requests made while one waits share it.
    pub fn request(&self) -> u64 {
        let next = {
            let s = self.status.borrow();
            // A pass under way may already be past some classes: the next one serves.
            s.running.map_or(s.passes + 1, |r| r + 1)
        };
        self.wake.notify_one();
        next
    }
}

/// The one task that runs passes; made with its handle by [`job`]. A clone starts the
/// job again on the hub that takes its lease over (cluster mode).
#[derive(Clone)]
pub struct Runner {
    retention: Retention,
    every: Option<Duration>,
    wake: Arc<Notify>,
    status: Arc<watch::Sender<JobStatus>>,
}

/// The job's handle and the runner that serves it (start it with [`Runner::run`]).
pub fn job(retention: Retention, every: Option<Duration>) -> (RetentionJob, Runner) {
    let wake = Arc::new(Notify::new());
    let (tx, rx) = watch::channel(JobStatus::default());
    let handle = RetentionJob {
        retention: retention.clone(),
        every,
        wake: wake.clone(),
        status: rx,
    };
    let runner = Runner {
        retention,
        every,
        wake,
        status: Arc::new(tx),
    };
    (handle, runner)
}

impl Runner {
    /// Runs a pass every `every` (the first a minute after start, or sooner if `every`
    /// is shorter) and whenever one is asked for, for as long as the hub runs.
    pub async fn run(self, store: Arc<dyn Store>, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) {
        let start = tokio::time::Instant::now();
        let mut due = self.every.map(|every| start + FIRST_AFTER.min(every));
        loop {
            let scheduled = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = scheduled => {
                    due = self.every.map(|every| tokio::time::Instant::now() + every);
                }
                () = self.wake.notified() => {}
            }
            self.pass(store.as_ref(), clock.as_ref(), &metrics).await;
        }
    }

    async fn pass(&self, store: &dyn Store, clock: &dyn Clock, metrics: &Metrics) {
        let pass = self.status.borrow().passes + 1;
        self.status.send_modify(|s| s.running = Some(pass));
        let started_at = clock.now();
        let outcome = purge_once(store, &self.retention, started_at, metrics).await;
        if let Err(e) = &outcome {
            warn!(error = %e, "retention pass failed; the next one retries");
        }
        let done = Pass {
            pass,
            started_at,
            finished_at: clock.now(),
            removed: outcome
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(c, n)| (c.as_str().to_string(), *n))
                        .collect()
                })
                .unwrap_or_default(),
            error: outcome.err().map(|e| e.to_string()),
        };
        self.status.send_modify(|s| {
            s.passes = pass;
            s.running = None;
            s.last = Some(done);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn each_class_is_cut_at_its_own_age_and_zero_keeps_for_ever() {
        let now = Utc
            .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let r = Retention {
            audit_days: 0,
            ..Retention::default()
        };
        let cuts = cutoffs(now, &r);
        let of = |c| cuts.iter().find(|(k, _)| *k == c).map(|(_, t)| *t);
        assert_eq!(
            of(DataClass::Positions),
            Some(now - chrono::Duration::days(30))
        );
        assert_eq!(
            of(DataClass::Sensors),
            Some(now - chrono::Duration::days(180))
        );
        assert_eq!(
            of(DataClass::DeadLetters),
            Some(now - chrono::Duration::days(30))
        );
        assert_eq!(
            of(DataClass::Alerts),
            Some(now - chrono::Duration::days(1825))
        );
        assert_eq!(of(DataClass::Audit), None);
    }

    #[test]
    fn a_request_is_served_by_the_next_pass_to_start() {
        let (job, runner) = job(Retention::default(), None);
        assert_eq!(job.request(), 1, "idle: the next pass");
        runner.status.send_modify(|s| s.running = Some(1));
        assert_eq!(
            job.request(),
            2,
            "a pass under way may be past some classes"
        );
        runner.status.send_modify(|s| {
            s.running = None;
            s.passes = 1;
        });
        assert_eq!(job.request(), 2);
    }

    #[test]
    fn the_activity_roll_up_must_outlive_the_readings() {
        let short = Retention {
            activity_days: 90,
            ..Retention::default()
        };
        assert!(short.validate().is_err());
        assert!(Retention::default().validate().is_ok());
        let forever = Retention {
            sensors_days: 0,
            ..Retention::default()
        };
        assert!(forever.validate().is_err());
    }
}
