//! The benchmark harness: the hub against a bare rumqttd on the same machine, in one run.
//!
//! # Layout
//! - [`process`]: the hub as a child process on free ports; its CPU and RSS from /proc.
//! - [`provision`]: residents and devices through the API, or written in bulk into SQLite.
//! - [`ingest`]: the rate ladder, against the bare broker (baseline) and against the hub.
//! - [`alerts`]: SOS-to-WebSocket latency under background load.
//! - [`region`]: restart, inactivity timers, idle CPU and connections at region scale.
//! - [`instructions`]: instructions per message of hub and bare broker under callgrind.
//! - [`replay`]: `hub replay` over a simulated 60-day home, in-process on one thread.
//! - [`soak`]: a long run at half the sustained rate: WAL size, RSS and PUBACK p99 per period.
//! - [`privacy`]: ingest while retention purges a backlog, and desk reads with and without
//!   the read audit.
//! - [`cluster`]: three hubs in cluster mode on NATS JetStream beside one hub, both on
//!   PostgreSQL: the ladder and alert latency.
//! - [`report`]: the table and the JSON document.
//!
//! The load is `device_sim::load::run_mix`, the code behind `device-sim load`, so anyone
//! can point the same generator at their own installation.

pub mod alerts;
pub mod cluster;
pub mod ingest;
pub mod instructions;
pub mod privacy;
pub mod process;
pub mod provision;
pub mod region;
pub mod replay;
pub mod report;
pub mod soak;
pub mod stats;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mimamori_protocol::DeviceKind;
use sqlx::Connection;

use crate::ingest::{Baseline, Plan};
use crate::process::HubProcess;
use crate::region::RegionPlan;
use crate::report::{Machine, Report};

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// Every stage with tiny numbers: checks the harness itself (about a minute).
    Smoke,
    /// Smaller numbers, about three minutes.
    Quick,
    /// The figures in docs/performance.md, under ten minutes.
    Full,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub size: Size,
    /// The hub program to measure.
    pub hub_binary: std::path::PathBuf,
    /// The bare broker it is compared with (`mimamori-bench-broker`).
    pub broker_binary: std::path::PathBuf,
    /// PostgreSQL server on which a fresh database is created for the PostgreSQL ladder;
    /// skipped when it does not answer.
    pub postgres: String,
    /// Stages to run (`baseline`, `sqlite`, `alerts`, `postgres`, `region`, `replay`, `soak`,
    /// `instructions`, `privacy`, `cluster`); all but `soak`, `instructions` and `cluster` when
    /// empty (the soak takes half an hour in a full run, the count needs valgrind, and the
    /// cluster needs nats-server and runs two more ladders).
    pub stages: Vec<String>,
    /// Keep the databases and hub logs after the run (their folder is printed).
    pub keep: bool,
    /// The soak's rate instead of its size's (`--soak-rate=N`): half of what the SQLite
    /// ladder sustained on the machine at hand.
    pub soak_rate: Option<f64>,
}

impl Options {
    fn runs(&self, stage: &str) -> bool {
        (self.stages.is_empty() && !matches!(stage, "soak" | "instructions" | "cluster"))
            || self.stages.iter().any(|s| s == stage)
    }
}

struct Sizes {
    devices: usize,
    plan: Plan,
    buttons: usize,
    background_rate: f64,
    presses_per_s: f64,
    region: RegionPlan,
    soak: soak::SoakPlan,
    count: instructions::CountPlan,
    replay: replay::ReplayPlan,
}

fn sizes(size: Size) -> Sizes {
    let rates = |r: &[f64]| r.to_vec();
    match size {
        Size::Smoke => Sizes {
            devices: 20,
            plan: Plan {
                rates: rates(&[500.0, 1_000.0]),
                step: Duration::from_secs(3),
            },
            buttons: 20,
            background_rate: 500.0,
            presses_per_s: 20.0,
            region: RegionPlan {
                residents: 1_000,
                readings: 10_000,
                first_deadline_s: 8,
                spread_s: 4,
                idle_window: Duration::from_secs(3),
                connections: 200,
            },
            soak: soak::SoakPlan {
                rate: 250.0,
                period: Duration::from_secs(5),
                periods: 2,
            },
            count: instructions::CountPlan {
                devices: 10,
                rate: 100.0,
                duration: Duration::from_secs(5),
            },
            replay: replay::ReplayPlan { days: 60, runs: 1 },
        },
        Size::Quick => Sizes {
            devices: 200,
            plan: Plan {
                rates: rates(&[2_000.0, 5_000.0, 10_000.0, 20_000.0, 40_000.0]),
                step: Duration::from_secs(5),
            },
            buttons: 200,
            background_rate: 5_000.0,
            presses_per_s: 50.0,
            region: RegionPlan {
                residents: 10_000,
                readings: 200_000,
                first_deadline_s: 12,
                spread_s: 10,
                idle_window: Duration::from_secs(5),
                connections: 2_000,
            },
            soak: soak::SoakPlan {
                rate: 5_000.0,
                period: Duration::from_secs(60),
                periods: 3,
            },
            count: COUNT_PLAN,
            replay: replay::ReplayPlan { days: 60, runs: 3 },
        },
        Size::Full => Sizes {
            devices: 100,
            plan: Plan {
                rates: rates(&[
                    5_000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0, 50_000.0, 60_000.0, 80_000.0,
                    100_000.0, 125_000.0, 150_000.0, 175_000.0, 200_000.0, 225_000.0, 250_000.0,
                    300_000.0,
                ]),
                step: Duration::from_secs(8),
            },
            buttons: 1_000,
            background_rate: 10_000.0,
            presses_per_s: 100.0,
            region: RegionPlan {
                residents: 100_000,
                readings: 10_000_000,
                first_deadline_s: 20,
                spread_s: 30,
                idle_window: Duration::from_secs(10),
                connections: 10_000,
            },
            // Half the SQLite ladder's sustained rate on the machine of the last full run
            // (225,000 msg/s, 7 December 2026); `--soak-rate` for another machine.
            soak: soak::SoakPlan {
                rate: 112_500.0,
                period: Duration::from_secs(60),
                periods: 30,
            },
            count: COUNT_PLAN,
            replay: replay::ReplayPlan { days: 60, runs: 5 },
        },
    }
}

/// The fixed load counted under callgrind: slow enough for the hub to keep up there.
const COUNT_PLAN: instructions::CountPlan = instructions::CountPlan {
    devices: 20,
    rate: 300.0,
    duration: Duration::from_secs(30),
};

/// Runs every stage and returns the figures; progress goes to stderr.
pub async fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let mut s = sizes(opts.size);
    if let Some(rate) = opts.soak_rate.filter(|r| *r > 0.0) {
        s.soak.rate = rate;
    }
    let file_limit = process::raise_file_limit(4 * s.region.connections as u64 + 10_000)?;
    let dir = tempfile::Builder::new()
        .prefix("mimamori-bench-")
        .tempdir()?;
    if opts.keep {
        eprintln!(
            "[bench] databases and hub logs stay in {}",
            dir.path().display()
        );
    }
    let mut report = Report::new(opts.size, Machine::this()?, file_limit);
    // A device connection costs the hub one descriptor (the edge opens a router link only
    // for a session that subscribes or has subscribers) and the harness one; keep some
    // for the database, the listeners and the hub's other clients.
    let fits = file_limit.saturating_sub(2_000) as usize;
    if fits < s.region.connections {
        report.skipped.push(format!(
            "connections: {} instead of {} (open-file limit {file_limit}, not raisable without CAP_SYS_RESOURCE)",
            fits, s.region.connections
        ));
        s.region.connections = fits;
    }
    stages(opts, &s, dir.path(), &mut report).await?;
    if opts.keep {
        let _ = dir.keep();
    }
    report.finish(started.elapsed());
    Ok(report)
}

async fn stages(
    opts: &Options,
    s: &Sizes,
    dir: &std::path::Path,
    report: &mut Report,
) -> Result<()> {
    if opts.runs("baseline") {
        note("baseline: bare rumqttd");
        let baseline = Baseline::start(&[], &opts.broker_binary).await?;
        report.baseline = Some(baseline.climb(&baseline.logins(s.devices), &s.plan).await?);
    }
    if opts.runs("alerts") {
        note("alert latency's baseline: the same presses through the bare broker");
        let broker = Baseline::start(&[], &opts.broker_binary).await?;
        let load = alerts::Background {
            devices: &broker.logins(s.devices),
            rate: s.background_rate,
            presses_per_s: s.presses_per_s,
        };
        let buttons = broker.logins_named("button", s.buttons);
        report.alerts_baseline = Some(alerts::measure_broker(broker.addr, &buttons, &load).await?);
    }
    if opts.runs("sqlite") || opts.runs("alerts") {
        sqlite_stages(opts, s, dir, report).await?;
    }
    if opts.runs("postgres") {
        match postgres_database(&opts.postgres).await {
            Ok((url, name)) => {
                note("hub on PostgreSQL: ingest ladder");
                let pg = pg_ladder(&opts.hub_binary, &url, dir, s.devices, &s.plan).await;
                drop_database(&opts.postgres, &name).await;
                report.postgres = Some(pg?);
            }
            Err(e) => report.skipped.push(format!("PostgreSQL ladder: {e:#}")),
        }
    }
    if opts.runs("soak") {
        note("soak: half the sustained rate on SQLite");
        let db = dir.join("soak.db");
        let url = format!("sqlite:{}", db.display());
        let hub = HubProcess::launch(&opts.hub_binary, &url, &dir.join("soak.log")).await?;
        let api = provision::admin(&hub).await?;
        let devices = mixed_devices(&hub, &api, s.devices).await?;
        report.soak = Some(soak::run(&hub, &db, &devices, &s.soak).await?);
        hub.kill().await?;
    }
    if opts.runs("instructions") {
        note("instructions per message under callgrind: bare broker, then hub");
        report.instructions =
            Some(instructions::run(&opts.hub_binary, &opts.broker_binary, dir, &s.count).await?);
    }
    if opts.runs("replay") {
        note("replay: a simulated 60-day home through hub replay, one thread");
        let (plan, dir) = (s.replay, dir.to_path_buf());
        report.replay = Some(tokio::task::spawn_blocking(move || replay::run(&plan, &dir)).await??);
    }
    if opts.runs("region") {
        note("region: restart, timers, connections");
        report.region = Some(region::run(&opts.hub_binary, dir, &s.region).await?);
    }
    if opts.runs("privacy") {
        note("privacy: ingest during a retention pass; desk reads with and without the read audit");
        let plan = privacy::plan(opts.size);
        report.privacy = Some(privacy::run(&opts.hub_binary, dir, &plan).await?);
    }
    if opts.runs("cluster") {
        cluster_stage(opts, s, dir, report).await?;
    }
    Ok(())
}

/// The cluster beside one hub, skipped where nats-server or PostgreSQL is missing.
async fn cluster_stage(
    opts: &Options,
    s: &Sizes,
    dir: &std::path::Path,
    report: &mut Report,
) -> Result<()> {
    let databases = match cluster::prepare(&opts.postgres).await {
        Ok(d) => d,
        Err(e) => {
            report.skipped.push(format!("cluster: {e:#}"));
            return Ok(());
        }
    };
    let plan = cluster::ClusterPlan {
        devices: s.devices,
        plan: s.plan.clone(),
        buttons: s.buttons,
        background_rate: s.background_rate,
        presses_per_s: s.presses_per_s,
    };
    let figures = cluster::run(&opts.hub_binary, databases, dir, &plan, opts.keep).await?;
    report.cluster = Some(figures);
    Ok(())
}

/// The SQLite ladder, then alert latency on the same hub.
async fn sqlite_stages(
    opts: &Options,
    s: &Sizes,
    dir: &std::path::Path,
    report: &mut Report,
) -> Result<()> {
    let url = format!("sqlite:{}", dir.join("ingest.db").display());
    let hub = HubProcess::launch(&opts.hub_binary, &url, &dir.join("ingest.log")).await?;
    let api = provision::admin(&hub).await?;
    let devices = mixed_devices(&hub, &api, s.devices).await?;
    if opts.runs("sqlite") {
        note("hub on SQLite: ingest ladder");
        report.sqlite = Some(ingest::climb_hub(&hub, "hub, SQLite", &devices, &s.plan).await?);
    }
    if opts.runs("alerts") {
        note("alert latency under background load");
        let buttons = provision::devices_via_api(&hub, &api, DeviceKind::Button, s.buttons).await?;
        let token = login_token(&hub).await?;
        let load = alerts::Background {
            devices: &devices,
            rate: s.background_rate,
            presses_per_s: s.presses_per_s,
        };
        report.alerts = Some(alerts::measure(&hub, &token, &buttons, &load).await?);
    }
    hub.kill().await
}

fn note(stage: &str) {
    eprintln!("[bench] {stage}");
}

/// Ingest devices with the kinds of a ward: six motion sensors for every three
/// buttons' worth of heartbeats and one GPS tracker (the load picks each message's kind).
pub(crate) async fn mixed_devices(
    hub: &HubProcess,
    api: &device_sim::hub::HubApi,
    count: usize,
) -> Result<Vec<device_sim::mqtt::DeviceLogin>> {
    let gps = count / 10;
    let mut devices = provision::devices_via_api(hub, api, DeviceKind::Motion, count - gps).await?;
    devices.extend(provision::devices_via_api(hub, api, DeviceKind::Gps, gps).await?);
    Ok(devices)
}

async fn pg_ladder(
    binary: &std::path::Path,
    url: &str,
    dir: &std::path::Path,
    devices: usize,
    plan: &Plan,
) -> Result<ingest::Ladder> {
    let hub = HubProcess::launch(binary, url, &dir.join("pg.log")).await?;
    let api = provision::admin(&hub).await?;
    let devices = mixed_devices(&hub, &api, devices).await?;
    let ladder = ingest::climb_hub(&hub, "hub, PostgreSQL", &devices, plan).await;
    hub.kill().await?;
    ladder
}

/// A session token for the WebSocket.
async fn login_token(hub: &HubProcess) -> Result<String> {
    let body = serde_json::json!({"username": "admin", "password": process::ADMIN_PASSWORD});
    let res: serde_json::Value = reqwest::Client::new()
        .post(hub.url("/auth/login"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    match res["token"].as_str() {
        Some(t) => Ok(t.to_string()),
        None => bail!("login answered without a token: {res}"),
    }
}

/// Creates a fresh database on the server and returns its URL and name.
async fn postgres_database(admin_url: &str) -> Result<(String, String)> {
    let mut conn = tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::PgConnection::connect(admin_url),
    )
    .await
    .context("no answer from PostgreSQL within 3 s")?
    .with_context(|| format!("cannot connect to {admin_url}"))?;
    let name = format!("mimamori_bench_{}", rand::random::<u32>());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
    Ok((format!("{base}/{name}"), name))
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
        if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
        {
            eprintln!("warning: cannot drop the benchmark database {name}: {e}");
        }
    }
}
