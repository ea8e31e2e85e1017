//! Jobs that must run on exactly one hub at a time: the client of The Things Stack (each
//! hub's own client would ingest every uplink once per hub) and the retention job. In
//! cluster mode each runs under a lease of its own in PostgreSQL, taken by whichever hub
//! asks first and moved to another when its holder stops renewing it; a single hub runs
//! them all itself.
//!
//! A holder renews its job leases in the same lease round as its partitions, and stops
//! the jobs under the same rule: before its own view of the leases runs out.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::LEASE_TTL;
use crate::metrics::{JobLabel, Metrics};
use crate::store::cluster::LeaseStore;
use crate::store::StoreError;

/// The name of The Things Stack client's lease.
pub const TTS: &str = "tts";
/// The name of the retention job's lease.
pub const RETENTION: &str = "retention";

type Start = Arc<dyn Fn() -> JoinHandle<()> + Send + Sync>;

/// A background job that the installation runs once, and how to start it again.
#[derive(Clone)]
pub struct Job {
    pub name: &'static str,
    start: Start,
}

impl Job {
    /// `make` builds the job's future each time it is (re)started; the job runs until its
    /// task is aborted.
    pub fn new<F, Fut>(name: &'static str, make: F) -> Job
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Job {
            name,
            start: Arc::new(move || tokio::spawn(make())),
        }
    }

    pub fn spawn(&self) -> JoinHandle<()> {
        (self.start)()
    }
}

struct Held {
    token: i64,
    task: JoinHandle<()>,
}

/// The jobs of one hub and the leases it holds for them.
pub struct Singletons {
    jobs: Vec<Job>,
    held: BTreeMap<&'static str, Held>,
    metrics: Arc<Metrics>,
}

impl Singletons {
    pub fn new(jobs: Vec<Job>, metrics: Arc<Metrics>) -> Singletons {
        for job in &jobs {
            running(&metrics, job.name).set(0);
        }
        Singletons {
            jobs,
            held: BTreeMap::new(),
            metrics,
        }
    }

    /// One lease round: extends what is held, stops what was lost, and takes what is free.
    pub async fn round(&mut self, leases: &LeaseStore, me: &str) -> Result<(), StoreError> {
        let held: Vec<(String, i64)> = self
            .held
            .iter()
            .map(|(n, h)| (n.to_string(), h.token))
            .collect();
        let kept = leases.renew_singletons(me, &held, LEASE_TTL).await?;
        for (name, _) in held.iter().filter(|(n, _)| !kept.contains(n)) {
            warn!(job = %name, "job lease lost to another hub; stopping the job");
            self.stop_named(name);
        }
        let free: Vec<Job> = self
            .jobs
            .iter()
            .filter(|j| !self.held.contains_key(j.name))
            .cloned()
            .collect();
        for job in free {
            if let Some(token) = leases.claim_singleton(job.name, me, LEASE_TTL).await? {
                info!(
                    job = job.name,
                    token, "job lease taken; the job runs on this hub"
                );
                running(&self.metrics, job.name).set(1);
                self.held.insert(
                    job.name,
                    Held {
                        token,
                        task: job.spawn(),
                    },
                );
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Stops every job held here without releasing its lease (which runs out by itself).
    pub fn stop_all(&mut self) {
        let names: Vec<&'static str> = self.held.keys().copied().collect();
        for name in names {
            self.stop_named(name);
        }
    }

    /// Stops every job and frees its lease, so another hub takes it at once.
    pub async fn hand_over(&mut self, leases: &LeaseStore, me: &str) {
        let held: Vec<(&'static str, i64)> = self.held.iter().map(|(n, h)| (*n, h.token)).collect();
        self.stop_all();
        for (name, token) in held {
            if let Err(e) = leases.release_singleton(name, me, token).await {
                warn!(job = name, error = %e, "cannot free a job lease; it runs out by itself");
            }
        }
    }

    fn stop_named(&mut self, name: &str) {
        if let Some((name, held)) = self.held.remove_entry(name) {
            held.task.abort();
            running(&self.metrics, name).set(0);
            info!(job = name, "job stopped on this hub");
        }
    }
}

fn running(
    metrics: &Metrics,
    job: &str,
) -> prometheus_client::metrics::gauge::Gauge<i64, std::sync::atomic::AtomicI64> {
    metrics
        .job_running
        .get_or_create(&JobLabel {
            job: job.to_string(),
        })
        .clone()
}

/// A single hub runs every job itself, for as long as it runs.
pub fn run_all_here(jobs: &[Job], metrics: &Metrics) {
    for job in jobs {
        running(metrics, job.name).set(1);
        // Detached: the job lives as long as the hub's runtime.
        drop(job.spawn());
    }
}
