//! `hub replay` throughput: a simulated home (`device-sim record`, with absences and
//! incidents) replayed in-process on one thread, from its files to its output, as the
//! command does. Timed on the thread's own CPU clock where the kernel keeps one, so other
//! work on a shared machine does not count against it.

use std::time::Instant;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use device_sim::record::{self, RecordSpec};
use serde::Serialize;

/// How much to replay.
#[derive(Debug, Clone, Copy)]
pub struct ReplayPlan {
    /// Days of the simulated home.
    pub days: u32,
    /// Replays of it; the figures are the median's.
    pub runs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayFigures {
    pub days: u32,
    pub events: usize,
    /// Alert changes the replay wrote.
    pub changes: usize,
    pub runs: usize,
    /// Median wall time of one replay.
    pub wall_s: f64,
    /// Median CPU time of the replaying thread, when the kernel reports it.
    pub cpu_s: Option<f64>,
    /// Events per second of that thread's CPU time (wall time without it).
    pub events_per_s: f64,
}

/// Records the home, then replays it `plan.runs` times.
pub fn run(plan: &ReplayPlan, dir: &std::path::Path) -> Result<ReplayFigures> {
    let rec = record::record(&RecordSpec {
        days: plan.days,
        seed: 7,
        start: NaiveDate::from_ymd_opt(2026, 1, 5).context("start date")?,
        incidents: 6,
    })?;
    let resident = dir.join("replay-resident.json");
    let events = dir.join("replay-events.jsonl");
    std::fs::write(&resident, serde_json::to_vec(&rec.resident)?)?;
    std::fs::write(&events, rec.events.join("\n") + "\n")?;
    let mut walls = Vec::with_capacity(plan.runs);
    let mut cpus = Vec::with_capacity(plan.runs);
    let mut changes = 0;
    for _ in 0..plan.runs.max(1) {
        let mut out = Vec::new();
        let cpu0 = thread_cpu_s();
        let t0 = Instant::now();
        hub::replay::run_files(&resident, &events, None, &mut out)?;
        walls.push(t0.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu0, thread_cpu_s()) {
            cpus.push(b - a);
        }
        changes = out
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            .saturating_sub(1);
    }
    let wall_s = median(&mut walls);
    let cpu_s = (cpus.len() == walls.len()).then(|| median(&mut cpus));
    let per = cpu_s.unwrap_or(wall_s).max(1e-9);
    Ok(ReplayFigures {
        days: plan.days,
        events: rec.events.len(),
        changes,
        runs: walls.len(),
        wall_s,
        cpu_s,
        events_per_s: rec.events.len() as f64 / per,
    })
}

/// This thread's time on a CPU, in seconds: the first field of its schedstat (nanoseconds).
fn thread_cpu_s() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
