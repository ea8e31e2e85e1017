//! Soak: the ward mix at half the sustained rate for a long run on one SQLite hub,
//! sampled every period — the write-ahead log's size, the hub's RSS and PUBACK p99 — so
//! that growth, not just speed, shows.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use device_sim::load::{self, LoadConfig, Mix};
use device_sim::mqtt::DeviceLogin;
use serde::Serialize;

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
    pub wal_mib: f64,
    pub rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    pub rate: f64,
    pub period_s: f64,
    pub periods: Vec<Period>,
    /// The largest write-ahead log seen at a sample.
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
            rss_mib: mib(hub.sample()?.rss_bytes),
        };
        eprintln!(
            "[bench] soak {index}/{}: {} acked of {}, PUBACK p99 {:?} ms, WAL {:.1} MiB, RSS {:.0} MiB",
            plan.periods, p.acked, p.sent, p.ack_p99_ms, p.wal_mib, p.rss_mib
        );
        periods.push(p);
    }
    let max_wal_mib = periods.iter().map(|p| p.wal_mib).fold(0.0, f64::max);
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
