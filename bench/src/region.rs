//! A region's worth of residents on one hub: restart with 100,000 residents and millions
//! of stored readings, every resident's inactivity timer running, how late those timers
//! fire, CPU while they wait, and 10,000 devices connecting at once on top.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use device_sim::mqtt::DeviceLogin;
use mimamori_protocol::{Alert, AlertKind, AlertState};
use rumqttc::{Event, Packet, QoS};
use serde::Serialize;

use crate::ingest::{connect_client, wait_for};
use crate::process::{HubProcess, ADMIN_PASSWORD};
use crate::provision;
use crate::stats::Quantiles;

/// The sizes of the region.
#[derive(Debug, Clone)]
pub struct RegionPlan {
    pub residents: usize,
    pub readings: u64,
    /// The earliest inactivity deadline, in seconds after the hub restores its residents;
    /// the idle CPU is measured before it.
    pub first_deadline_s: u64,
    /// Deadlines spread over this many seconds after the first.
    pub spread_s: u64,
    pub idle_window: Duration,
    pub connections: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    pub residents: usize,
    pub stored_readings: u64,
    pub bulk_write_s: f64,
    /// Process start to the ready line; the rules engine is restored and every timer armed by then.
    pub ready_s: f64,
    /// Process start to `/api/v1/healthz` answering 200.
    pub healthy_s: f64,
    pub rss_mib_ready: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timers {
    pub residents: usize,
    pub idle_cpu_pct: f64,
    pub idle_window_s: f64,
    pub fired: usize,
    /// Arrival on MQTT minus the alert's deadline (`opened_at`), in milliseconds.
    pub lateness_ms: Option<Quantiles>,
    pub rss_mib_after: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    pub attempted: usize,
    pub connected: usize,
    pub connect_all_s: f64,
    /// Devices that connected only on a later try: the edge holds at most
    /// `mqtt_max_pending` sockets before their CONNECT and closes the oldest beyond that,
    /// so a burst larger than that connects in waves, as devices retry.
    pub retried: usize,
    pub rss_mib_before: f64,
    pub rss_mib_after: f64,
    pub rss_mib_per_10k: f64,
    pub hub_reports: f64,
    pub hub_file_limit: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Region {
    pub restart: Restart,
    pub timers: Timers,
    pub connections: Connections,
}

/// Runs the region stage in `dir` (which holds the database) and stops its hub.
pub async fn run(binary: &Path, dir: &Path, plan: &RegionPlan) -> Result<Region> {
    let db = dir.join("region.db");
    let url = format!("sqlite:{}", db.display());
    // The first start creates the schema and the admin user; then the hub stops and the
    // region is written into its file.
    let first = HubProcess::launch(binary, &url, &dir.join("region-first.log")).await?;
    first.kill().await?;
    let t = Instant::now();
    let bulk = provision::bulk_sqlite(
        &db,
        plan.residents,
        plan.readings,
        plan.first_deadline_s,
        plan.spread_s,
    )
    .await?;
    let bulk_write_s = t.elapsed().as_secs_f64();

    let hub = HubProcess::launch(binary, &url, &dir.join("region.log")).await?;
    let restored_at = chrono::Utc::now();
    let healthy_s = healthy_after(&hub).await?;
    let restart = Restart {
        residents: plan.residents,
        stored_readings: plan.readings,
        bulk_write_s,
        ready_s: hub.ready_after.as_secs_f64(),
        healthy_s,
        rss_mib_ready: mib(hub.sample()?.rss_bytes),
    };
    let timers = timers(&hub, plan, restored_at).await?;
    let logins = provision::logins(
        &hub,
        &bulk.devices[..plan.connections.min(bulk.devices.len())],
    );
    let connections = connect_all(&hub, logins).await?;
    hub.kill().await?;
    Ok(Region {
        restart,
        timers,
        connections,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Seconds from process start until the health check answers 200.
async fn healthy_after(hub: &HubProcess) -> Result<f64> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(hub.url("/healthz")).send().await {
            if r.status().is_success() {
                return Ok(hub.ready_after.as_secs_f64() + started.elapsed().as_secs_f64());
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(anyhow!("the hub did not become healthy within 120 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Subscribes to every alert as admin, measures idle CPU while the timers wait, then
/// collects how late each inactivity alert arrived against its deadline.
async fn timers(
    hub: &HubProcess,
    plan: &RegionPlan,
    restored_at: chrono::DateTime<chrono::Utc>,
) -> Result<Timers> {
    let lateness = Arc::new(Mutex::new(Vec::<f64>::with_capacity(plan.residents)));
    let (client, mut eventloop) = connect_client(
        hub.mqtt_host.clone(),
        hub.mqtt_port,
        "bench-alert-watcher",
        Some(("admin", ADMIN_PASSWORD)),
        1000,
    )
    .await?;
    client
        .subscribe("watch/v1/alerts/+", QoS::AtLeastOnce)
        .await?;
    let reader = {
        let lateness = lateness.clone();
        tokio::spawn(async move {
            let _client = client;
            let mut seen = HashSet::new();
            while let Ok(ev) = eventloop.poll().await {
                let Event::Incoming(Packet::Publish(p)) = ev else {
                    continue;
                };
                let now = chrono::Utc::now();
                let Ok(alert) = serde_json::from_slice::<Alert>(&p.payload) else {
                    continue;
                };
                if alert.kind == AlertKind::Inactivity
                    && alert.state == AlertState::Open
                    && seen.insert(alert.id)
                {
                    let late = (now - alert.opened_at)
                        .num_microseconds()
                        .unwrap_or(i64::MAX) as f64
                        / 1000.0;
                    if let Ok(mut l) = lateness.lock() {
                        l.push(late);
                    }
                }
            }
        })
    };
    // Idle: every timer pending, no traffic, the first deadline still ahead.
    let before = hub.sample()?;
    tokio::time::sleep(plan.idle_window).await;
    let after = hub.sample()?;
    let idle_cpu_pct = after.cpu_pct_since(&before);
    if (chrono::Utc::now() - restored_at).num_seconds() as u64 >= plan.first_deadline_s {
        eprintln!(
            "warning: the idle window reached the first deadline; idle CPU includes firing timers"
        );
    }
    let last_deadline =
        restored_at + chrono::Duration::seconds((plan.first_deadline_s + plan.spread_s) as i64);
    let wait = (last_deadline - chrono::Utc::now())
        .to_std()
        .unwrap_or_default()
        + Duration::from_secs(30);
    let expected = plan.residents;
    wait_for(
        || lateness.lock().map(|l| l.len() >= expected).unwrap_or(true),
        wait,
    )
    .await;
    reader.abort();
    let mut l = lateness
        .lock()
        .map_err(|_| anyhow!("lateness table poisoned"))?;
    Ok(Timers {
        residents: plan.residents,
        idle_cpu_pct,
        idle_window_s: plan.idle_window.as_secs_f64(),
        fired: l.len(),
        lateness_ms: Quantiles::of(&mut l),
        rss_mib_after: mib(hub.sample()?.rss_bytes),
    })
}

/// How often a device whose connection was closed before its CONNACK tries again, and
/// how long it waits first: a device's own reconnect back-off.
const CONNECT_TRIES: u32 = 20;
const CONNECT_RETRY: Duration = Duration::from_millis(250);

/// Connects one device, trying again as a device would; returns how many tries it took.
async fn connect_retrying(
    login: &DeviceLogin,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop, u32)> {
    let creds = (login.device_id.as_str(), login.password.as_str());
    let mut tries = 1;
    loop {
        let host = login.host.clone();
        match connect_client(host, login.port, &login.device_id, Some(creds), 10).await {
            Ok((client, eventloop)) => return Ok((client, eventloop, tries)),
            Err(_) if tries < CONNECT_TRIES => {
                tries += 1;
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Connects every device at once and holds the connections while memory is read.
async fn connect_all(hub: &HubProcess, logins: Vec<DeviceLogin>) -> Result<Connections> {
    let http = reqwest::Client::new();
    let rss_before = hub.sample()?.rss_bytes;
    let attempted = logins.len();
    let started = Instant::now();
    let mut pending = tokio::task::JoinSet::new();
    for login in logins {
        pending.spawn(async move {
            let (client, mut eventloop, tries) = connect_retrying(&login).await?;
            // Keep the connection open (and answering pings) until the task is dropped.
            let held = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
            Ok::<_, anyhow::Error>((client, held, tries))
        });
    }
    let mut held = Vec::with_capacity(attempted);
    let mut retried = 0;
    while let Some(r) = pending.join_next().await {
        if let Ok(Ok((client, task, tries))) = r {
            retried += usize::from(tries > 1);
            held.push((client, task));
        }
    }
    let connect_all_s = started.elapsed().as_secs_f64();
    // Let the hub settle its buffers before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = hub.sample()?.rss_bytes;
    let hub_reports = hub.metric(&http, "mimamori_mqtt_connections").await?;
    let connected = held.len();
    for (client, task) in held {
        let _ = client.try_disconnect();
        task.abort();
    }
    let grown = mib(rss_after.saturating_sub(rss_before));
    Ok(Connections {
        attempted,
        connected,
        connect_all_s,
        retried,
        rss_mib_before: mib(rss_before),
        rss_mib_after: mib(rss_after),
        rss_mib_per_10k: if connected == 0 {
            0.0
        } else {
            grown * 10_000.0 / connected as f64
        },
        hub_reports,
        hub_file_limit: hub.file_limit(),
    })
}
