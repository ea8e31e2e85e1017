//! The figures of a run: one JSON document (`--json`) to compare across commits, and a
//! table for people, each target marked met or missed.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::alerts::AlertLatency;
use crate::ingest::Ladder;
use crate::region::Region;
use crate::Size;

/// Where the figures came from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub ram_gib: f64,
    /// 1-minute load average when the run started: other work on the machine skews figures.
    pub load_avg_1m: f64,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Result<Machine> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let load_avg_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Ok(Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            ram_gib: ram_kib / (1 << 20) as f64,
            load_avg_1m,
            kernel,
        })
    }
}

/// One target of the issue, and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub size: Size,
    pub machine: Machine,
    pub file_limit: u64,
    pub commit: Option<String>,
    pub baseline: Option<Ladder>,
    pub sqlite: Option<Ladder>,
    pub postgres: Option<Ladder>,
    pub alerts: Option<AlertLatency>,
    /// The same presses through the bare broker to a plain subscriber.
    pub alerts_baseline: Option<AlertLatency>,
    pub region: Option<Region>,
    pub soak: Option<crate::soak::Soak>,
    pub instructions: Option<crate::instructions::Instructions>,
    pub replay: Option<crate::replay::ReplayFigures>,
    pub privacy: Option<crate::privacy::PrivacyFigures>,
    pub cluster: Option<crate::cluster::ClusterFigures>,
    pub targets: Vec<Target>,
    pub skipped: Vec<String>,
    pub total_s: f64,
}

impl Report {
    pub fn new(size: Size, machine: Machine, file_limit: u64) -> Report {
        // `-dirty` when the figures come from changes not yet committed.
        let commit = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty", "--abbrev=7"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string());
        Report {
            size,
            machine,
            file_limit,
            commit,
            baseline: None,
            sqlite: None,
            postgres: None,
            alerts: None,
            alerts_baseline: None,
            region: None,
            soak: None,
            instructions: None,
            replay: None,
            privacy: None,
            cluster: None,
            targets: Vec::new(),
            skipped: Vec::new(),
            total_s: 0.0,
        }
    }

    pub fn finish(&mut self, took: Duration) {
        self.total_s = took.as_secs_f64();
        self.targets = targets(self);
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "Mimamori benchmark ({:?}) on {} x {} , {:.1} GiB RAM, load average {:.2} at start, commit {}, {:.0} s",
            self.size,
            m.cpus,
            m.cpu_model,
            m.ram_gib,
            m.load_avg_1m,
            self.commit.as_deref().unwrap_or("?"),
            self.total_s
        );
        let ladders: Vec<&Ladder> = [&self.baseline, &self.sqlite, &self.postgres]
            .into_iter()
            .flatten()
            .collect();
        if !ladders.is_empty() {
            let _ = writeln!(
                out,
                "\nIngest (QoS 1, mix 60 % motion / 30 % heartbeat / 10 % GPS)"
            );
            ladder_table(&ladders, &mut out);
        }
        if let Some(a) = &self.alerts_baseline {
            let _ = writeln!(
                out,
                "\nBaseline, SOS publish -> subscriber of the bare broker, {:.0} msg/s background ({}): {} of {} presses, {}",
                a.background_rate,
                if a.background_sustained { "sustained" } else { "NOT sustained" },
                a.alerts_seen,
                a.alerts_sent,
                quantiles_ms(a.latency_ms.as_ref())
            );
        }
        if let Some(a) = &self.alerts {
            let _ = writeln!(out, "\nAlert latency, {}", alert_figures(a));
        }
        if let Some(r) = &self.region {
            let st = &r.restart;
            let _ = writeln!(
                out,
                "\nRestart with {} residents and {} stored readings (written in {:.1} s): ready in {:.2} s (rules restored, timers armed), healthy in {:.2} s, RSS {:.0} MiB",
                st.residents, st.stored_readings, st.bulk_write_s, st.ready_s, st.healthy_s, st.rss_mib_ready
            );
            let t = &r.timers;
            let _ = writeln!(
                out,
                "Timers: {} residents, idle CPU {:.2} % over {:.0} s; {} fired, lateness {}; RSS after {:.0} MiB",
                t.residents,
                t.idle_cpu_pct,
                t.idle_window_s,
                t.fired,
                quantiles_ms(t.lateness_ms.as_ref()),
                t.rss_mib_after
            );
            let c = &r.connections;
            let _ = writeln!(
                out,
                "Connections: {} of {} connected at once in {:.2} s ({} on a later try; hub counts {:.0}, file limit {}); RSS {:.0} -> {:.0} MiB, {:.0} MiB per 10,000",
                c.connected,
                c.attempted,
                c.connect_all_s,
                c.retried,
                c.hub_reports,
                c.hub_file_limit.map_or("?".into(), |l| l.to_string()),
                c.rss_mib_before,
                c.rss_mib_after,
                c.rss_mib_per_10k
            );
        }
        if let Some(soak) = &self.soak {
            let _ = writeln!(
                out,
                "\nSoak on SQLite at {:.0} msg/s, one sample per {:.0} s",
                soak.rate, soak.period_s
            );
            let _ = writeln!(
                out,
                "{:>6} {:>9} {:>9} {:>6} {:>9} {:>9} {:>11} {:>8}",
                "period", "sent", "acked", "errors", "ack p99", "WAL MiB", "WAL longest", "RSS MiB"
            );
            for p in &soak.periods {
                let _ = writeln!(
                    out,
                    "{:>6} {:>9} {:>9} {:>6} {:>9} {:>9.1} {:>11.1} {:>8.0}",
                    p.index,
                    p.sent,
                    p.acked,
                    p.errors,
                    opt_ms(p.ack_p99_ms),
                    p.wal_mib,
                    p.wal_max_mib,
                    p.rss_mib
                );
            }
        }
        if let Some(i) = &self.instructions {
            let _ = writeln!(
                out,
                "\nInstructions per message under callgrind (user space, {:.0} msg/s ward mix)",
                i.rate
            );
            for c in [&i.baseline, &i.hub] {
                let _ = writeln!(
                    out,
                    "  {:<9} {:>8} messages {:>16} instructions {:>10.0} per message  ({})",
                    c.target,
                    c.messages,
                    c.instructions,
                    c.per_message,
                    c.profile.display()
                );
            }
            let _ = writeln!(out, "  hub / baseline: {:.2}", i.ratio);
        }
        if let Some(r) = &self.replay {
            let _ = writeln!(
                out,
                "\nReplay, one thread: {} days of a simulated home, {} events -> {} alert changes in {:.3} s wall{} (median of {}): {:.0} events/s",
                r.days,
                r.events,
                r.changes,
                r.wall_s,
                r.cpu_s.map_or(String::new(), |c| format!(", {c:.3} s CPU")),
                r.runs,
                r.events_per_s
            );
        }
        if let Some(p) = &self.privacy {
            crate::privacy::table(p, &mut out);
        }
        if let Some(c) = &self.cluster {
            crate::cluster::table(c, &mut out);
        }
        let _ = writeln!(out, "\nTargets");
        for t in &self.targets {
            let _ = writeln!(
                out,
                "  [{}] {:<40} goal {:<28} measured {}",
                if t.met { "met" } else { "MISSED" },
                t.name,
                t.goal,
                t.measured
            );
        }
        for s in &self.skipped {
            let _ = writeln!(out, "  skipped: {s}");
        }
        out
    }
}

/// The rows of ingest ladders under one header, each ladder with its highest sustained rate.
pub(crate) fn ladder_table(ladders: &[&Ladder], out: &mut String) {
    let _ = writeln!(
        out,
        "{:<26} {:>7} {:>9} {:>9} {:>9} {:>6} {:>9} {:>8} {:>9} {:>9} {:>7} {:>8} {:>10} {:>6}  sustained",
        "target",
        "devices",
        "rate/s",
        "acked",
        "seen",
        "errors",
        "window/s",
        "slowest",
        "ack p50",
        "ack p99",
        "CPU %",
        "RSS MiB",
        "CPU us/msg",
        "load %",
    );
    for ladder in ladders {
        for s in &ladder.steps {
            let _ = writeln!(
                out,
                "{:<26} {:>7} {:>9.0} {:>9} {:>9} {:>6} {:>9.0} {:>8} {:>9} {:>9} {:>7} {:>8} {:>10} {:>6}  {}",
                ladder.target,
                ladder.devices,
                s.rate,
                s.acked,
                s.seen,
                s.errors,
                s.window_rate,
                s.slowest_second,
                opt_ms(s.ack_p50_ms),
                opt_ms(s.ack_p99_ms),
                s.cpu_pct.map_or("-".into(), |c| format!("{c:.0}")),
                s.rss_mib.map_or("-".into(), |r| format!("{r:.0}")),
                s.cpu_us_per_msg.map_or("-".into(), |c| format!("{c:.1}")),
                s.load_cpu_pct.map_or("-".into(), |c| format!("{c:.0}")),
                if s.sustained { "yes" } else { "NO" }
            );
        }
        let _ = writeln!(
            out,
            "{:<26} highest sustained: {:.0} msg/s",
            ladder.target, ladder.sustained_rate
        );
    }
}

/// An alert measurement in two lines: the whole latency, then the hub's part of it.
pub(crate) fn alert_figures(a: &AlertLatency) -> String {
    format!(
        "SOS publish -> WebSocket frame, {:.0} msg/s background ({}): {} of {} alerts, {}\n  of which from the pipeline taking the press (opened_at) to the frame: {}",
        a.background_rate,
        if a.background_sustained { "sustained" } else { "NOT sustained" },
        a.alerts_seen,
        a.alerts_sent,
        quantiles_ms(a.latency_ms.as_ref()),
        quantiles_ms(a.in_hub_ms.as_ref())
    )
}

pub(crate) fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}ms"))
}

fn quantiles_ms(q: Option<&crate::stats::Quantiles>) -> String {
    q.map_or("none measured".into(), |q| {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
            q.p50, q.p99, q.max, q.count
        )
    })
}

/// The rate at which the hub's CPU per message is compared with the bare broker's.
const CPU_COMPARED_AT: f64 = 20_000.0;

/// Hub CPU per message over the bare broker's, at [`CPU_COMPARED_AT`] in both ladders.
fn cpu_ratio_target(hub: &Ladder, base: &Ladder, push: &mut impl FnMut(&str, &str, String, bool)) {
    let name = "CPU per message at 20,000 msg/s, hub / baseline";
    let per_msg = |l: &Ladder| l.at(CPU_COMPARED_AT).and_then(|s| s.cpu_us_per_msg);
    match (per_msg(hub), per_msg(base)) {
        (Some(h), Some(b)) if b > 0.0 => push(
            name,
            "<= 2.0",
            format!("{:.2} ({h:.1} / {b:.1} us per message)", h / b),
            h / b <= 2.0,
        ),
        (h, b) => push(
            name,
            "<= 2.0",
            format!(
                "not measured: a ladder did not reach 20,000 msg/s (hub {}, baseline {})",
                h.map_or("-".into(), |v| format!("{v:.1} us")),
                b.map_or("-".into(), |v| format!("{v:.1} us"))
            ),
            false,
        ),
    }
}

/// The targets, judged on this run's figures.
fn targets(r: &Report) -> Vec<Target> {
    let mut t = Vec::new();
    let mut push = |name: &str, goal: &str, measured: String, met: bool| {
        t.push(Target {
            name: name.into(),
            goal: goal.into(),
            measured,
            met,
        })
    };
    if let Some(sql) = &r.sqlite {
        push(
            "ingest, SQLite",
            ">= 50,000 msg/s",
            format!("{:.0} msg/s", sql.sustained_rate),
            sql.sustained_rate >= 50_000.0,
        );
        if let Some(base) = r.baseline.as_ref().filter(|b| b.sustained_rate > 0.0) {
            let ratio = sql.sustained_rate / base.sustained_rate;
            push(
                "ingest, SQLite / baseline",
                ">= 90 %",
                format!("{:.0} % of {:.0} msg/s", ratio * 100.0, base.sustained_rate),
                ratio >= 0.9,
            );
            cpu_ratio_target(sql, base, &mut push);
        }
    }
    if let Some(a) = &r.alerts {
        let p99 = a.latency_ms.map(|q| q.p99);
        push(
            "alert latency p99 under background load",
            "<= 20 ms at 10,000 msg/s",
            format!(
                "{} at {:.0} msg/s (bare broker, same load: {})",
                opt_ms(p99),
                a.background_rate,
                opt_ms(
                    r.alerts_baseline
                        .as_ref()
                        .and_then(|b| b.latency_ms.map(|q| q.p99))
                )
            ),
            p99.is_some_and(|p| p <= 20.0)
                && a.alerts_seen == a.alerts_sent
                && a.background_rate >= 10_000.0,
        );
    }
    if let Some(soak) = &r.soak {
        push(
            "soak: write-ahead log bounded",
            "<= 64 MiB",
            format!(
                "longest {:.1} MiB over {} periods, looked at every 50 ms",
                soak.max_wal_mib,
                soak.periods.len()
            ),
            soak.max_wal_mib <= 64.0 && soak.periods.iter().all(|p| p.acked == p.sent),
        );
        if let Some(g) = soak.rss_growth {
            push(
                "soak: RSS flat",
                "last / first <= 1.2",
                format!("{g:.2}"),
                g <= 1.2,
            );
        }
    }
    if let Some(rp) = &r.replay {
        push(
            "replay of a simulated 60-day home",
            "< 5 s",
            format!(
                "{:.3} s for {} days ({:.0} events/s)",
                rp.wall_s, rp.days, rp.events_per_s
            ),
            rp.wall_s < 5.0 && rp.days >= 60,
        );
    }
    if let Some(reg) = &r.region {
        let late = reg.timers.lateness_ms.map(|q| q.p99);
        push(
            "timer lateness p99",
            "<= 1 s at 100,000 residents",
            format!(
                "{} at {} residents, {} fired",
                opt_ms(late),
                reg.timers.residents,
                reg.timers.fired
            ),
            late.is_some_and(|l| l <= 1000.0)
                && reg.timers.fired == reg.timers.residents
                && reg.timers.residents >= 100_000,
        );
        let rss = reg.connections.rss_mib_after;
        push(
            "RSS with 100,000 residents + 10,000 connections",
            "< 1 GiB",
            format!(
                "{rss:.0} MiB ({} residents, {} connections)",
                reg.restart.residents, reg.connections.connected
            ),
            rss < 1024.0 && reg.restart.residents >= 100_000 && reg.connections.connected >= 10_000,
        );
        push(
            "ready after restart",
            "< 5 s at 100,000 residents",
            format!(
                "{:.2} s at {} residents",
                reg.restart.ready_s, reg.restart.residents
            ),
            reg.restart.ready_s < 5.0 && reg.restart.residents >= 100_000,
        );
    }
    t
}
