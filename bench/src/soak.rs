//! Soak: the ward mix at half the sustained rate for a long run on one SQLite hub,
//! sampled every period — the write-ahead log's size, the hub's RSS and PUBACK p99 — so
//! that growth, not just speed, shows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use device_sim::load::{self, LoadConfig, Mix};
use device_sim::mqtt::DeviceLogin;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::process::HubProcess;

/// How long and how hard.
#[derive(Debug, Clone, Copy)]
pub struct SoakPlan {
    pub rate: f64,
    /// One sample per period (a minute in a full run).
    pub period: Duration,
    pub periods: u32,
}

/// One period's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    pub index: u32,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub ack_p99_ms: Option<f64>,
    /// The log's length at the end of the period.
    pub wal_mib: f64,
    /// The longest it was during the period, looked at every [`WAL_LOOK`].
    pub wal_max_mib: f64,
    pub rss_mib: f64,
}

/// How often the log's length is looked at between samples: the log can grow and be
/// cut back well within a period, so one sample a period would miss its peaks.
const WAL_LOOK: Duration = Duration::from_millis(50);

/// Keeps the longest length the file reached since it was last taken, until the returned
/// set is dropped (which aborts its task however the run ends).
fn watch_length(file: PathBuf) -> (Arc<AtomicU64>, JoinSet<()>) {
    let longest = Arc::new(AtomicU64::new(0));
    let seen = longest.clone();
    let mut watcher = JoinSet::new();
    watcher.spawn(async move {
        let mut tick = tokio::time::interval(WAL_LOOK);
        loop {
            tick.tick().await;
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            seen.fetch_max(len, Ordering::Relaxed);
        }
    });
    (longest, watcher)
}

#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    pub rate: f64,
    pub period_s: f64,
    pub periods: Vec<Period>,
    /// The longest the write-ahead log was at any look.
    pub max_wal_mib: f64,
    /// RSS of the last period over the first.
    pub rss_growth: Option<f64>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Runs the plan against `hub`, whose SQLite file is `db`.
pub async fn run(
    hub: &HubProcess,
    db: &Path,
    devices: &[DeviceLogin],
    plan: &SoakPlan,
) -> Result<Soak> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let (longest, _watcher) = watch_length(wal.clone());
    let mut periods = Vec::new();
    for index in 1..=plan.periods {
        let cfg = LoadConfig {
            devices: devices.to_vec(),
            rate: plan.rate,
            duration: plan.period,
            progress: false,
        };
        let r = load::run_mix(cfg, Mix::WARD).await?;
        let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let p = Period {
            index,
            sent: r.sent,
            acked: r.acked,
            errors: r.errors,
            ack_p99_ms: r.ack_latency_ms_p99,
            wal_mib: mib(wal_bytes),
            wal_max_mib: mib(longest.swap(0, Ordering::Relaxed).max(wal_bytes)),
            rss_mib: mib(hub.sample()?.rss_bytes),
        };
        eprintln!(
            "[bench] soak {index}/{}: {} acked of {}, PUBACK p99 {:?} ms, WAL {:.1} MiB (longest {:.1}), RSS {:.0} MiB",
            plan.periods, p.acked, p.sent, p.ack_p99_ms, p.wal_mib, p.wal_max_mib, p.rss_mib
        );
        periods.push(p);
    }
    let max_wal_mib = periods.iter().map(|p| p.wal_max_mib).fold(0.0, f64::max);
    let rss_growth = match (periods.first(), periods.last()) {
        (Some(a), Some(b)) if a.rss_mib > 0.0 => Some(b.rss_mib / a.rss_mib),
        _ => None,
    };
    Ok(Soak {
        rate: plan.rate,
        period_s: plan.period.as_secs_f64(),
        periods,
        max_wal_mib,
        rss_growth,
    })
}
