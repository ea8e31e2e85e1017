//! The cluster stage: three hubs in cluster mode, on a NATS JetStream server and a
//! PostgreSQL database of their own, beside one hub on PostgreSQL, in one run on one
//! machine: the same ingest ladder, then alert latency at the same background rate.
//!
//! The cluster's devices are provisioned through hub-1 and connect to the hubs in turn;
//! a step counts as seen when the accepted counters of the three hubs together rose by
//! the acknowledged count (see [`crate::ingest::climb_hubs`]). The alert buttons connect
//! to the hubs in turn too, while the WebSocket client watches hub-1, so the alerts of
//! residents in partitions that hub-1 does not own reach it from another hub's pipeline
//! through the live stream.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use device_sim::mqtt::DeviceLogin;
use mimamori_protocol::DeviceKind;
use serde::Serialize;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::alerts::{self, AlertLatency};
use crate::ingest::{self, Group, Ladder, Plan};
use crate::process::{watch_output, HubProcess};
use crate::provision;
use crate::report::{alert_figures, ladder_table};

/// Hubs in the cluster.
const HUBS: usize = 3;
/// The hub's default, and enough for three hubs to hold more than one each.
const PARTITIONS: usize = 16;

/// How big the stage is: the same ladder and alert load as the other stages.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub devices: usize,
    pub plan: Plan,
    pub buttons: usize,
    /// The background rate of the alert measurements, if both ladders sustained it.
    pub background_rate: f64,
    pub presses_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterFigures {
    pub hubs: usize,
    pub partitions: usize,
    /// Partitions each hub owned when the ladder started, hub-1 first.
    pub owned: Vec<usize>,
    /// From the last hub's ready line until every hub held its share of the partitions.
    pub spread_s: f64,
    pub single: Ladder,
    pub cluster: Ladder,
    /// CPU per acknowledged message at the highest rate both ladders sustained.
    pub cpu_compared: Option<CpuCompared>,
    /// The planned background rate, or the highest rate both ladders sustained if lower.
    pub alert_rate: f64,
    pub single_alerts: AlertLatency,
    /// Buttons on every hub in turn, the WebSocket client on hub-1.
    pub cluster_alerts: AlertLatency,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuCompared {
    pub rate: f64,
    pub single_us: f64,
    /// The cluster's hubs and NATS server together.
    pub cluster_us: f64,
    pub hubs_us: Option<f64>,
    pub nats_us: Option<f64>,
    /// Cluster over single hub.
    pub ratio: f64,
}

/// The stage's two fresh databases: one for the single hub, one for the cluster.
pub struct Databases {
    admin_url: String,
    /// URL and name of each.
    single: (String, String),
    cluster: (String, String),
}

impl Databases {
    /// Drops both, unless they are to stay for a look after the run.
    async fn clean_up(self, keep: bool) {
        for (_, name) in [&self.single, &self.cluster] {
            if keep {
                eprintln!("[bench] the cluster stage's database {name} stays");
            } else {
                crate::drop_database(&self.admin_url, name).await;
            }
        }
    }
}

/// The stage's databases on the PostgreSQL server at `admin_url`, or why the stage
/// cannot run on this machine (no nats-server, or no PostgreSQL server).
pub async fn prepare(admin_url: &str) -> Result<Databases> {
    Command::new("nats-server")
        .arg("--version")
        .output()
        .await
        .context("nats-server not found (Debian package nats-server)")?;
    let single = crate::postgres_database(admin_url).await?;
    let cluster = match crate::postgres_database(admin_url).await {
        Ok(c) => c,
        Err(e) => {
            crate::drop_database(admin_url, &single.1).await;
            return Err(e);
        }
    };
    Ok(Databases {
        admin_url: admin_url.to_string(),
        single,
        cluster,
    })
}

/// Runs the stage on `databases`, which are dropped afterwards unless `keep`.
pub async fn run(
    binary: &Path,
    databases: Databases,
    dir: &Path,
    plan: &ClusterPlan,
    keep: bool,
) -> Result<ClusterFigures> {
    let figures = compare(binary, &databases.single.0, &databases.cluster.0, dir, plan).await;
    databases.clean_up(keep).await;
    figures
}

async fn compare(
    binary: &Path,
    single_url: &str,
    cluster_url: &str,
    dir: &Path,
    plan: &ClusterPlan,
) -> Result<ClusterFigures> {
    crate::note("cluster: one hub on PostgreSQL, ingest ladder");
    let (single, single_devices) = single_ladder(binary, single_url, dir, plan).await?;
    crate::note("cluster: three hubs on NATS JetStream and PostgreSQL, ingest ladder");
    let cluster = Cluster::start(binary, cluster_url, dir).await?;
    let measured = cluster.measure(plan, &single).await;
    cluster.stop().await?;
    let c = measured?;
    crate::note("cluster: alert latency on the one hub, started again on its database");
    let hub = launch_single(binary, single_url, dir, "alerts").await?;
    let latency = alert_latency(&hub, &[&hub], &single_devices, c.alert_rate, plan).await;
    hub.kill().await?;
    Ok(ClusterFigures {
        hubs: HUBS,
        partitions: PARTITIONS,
        owned: c.owned,
        spread_s: c.spread_s,
        cpu_compared: cpu_compared(&single, &c.ladder),
        single,
        cluster: c.ladder,
        alert_rate: c.alert_rate,
        single_alerts: latency?,
        cluster_alerts: c.alerts,
    })
}

/// What the cluster gave.
struct ClusterRun {
    owned: Vec<usize>,
    spread_s: f64,
    ladder: Ladder,
    alert_rate: f64,
    alerts: AlertLatency,
}

/// Ingest devices and alert buttons, created through one hub's API.
struct Devices {
    ingest: Vec<DeviceLogin>,
    buttons: Vec<DeviceLogin>,
}

impl Devices {
    async fn provision(hub: &HubProcess, plan: &ClusterPlan) -> Result<Devices> {
        let api = provision::admin(hub).await?;
        let ingest = crate::mixed_devices(hub, &api, plan.devices).await?;
        let buttons =
            provision::devices_via_api(hub, &api, DeviceKind::Button, plan.buttons).await?;
        Ok(Devices { ingest, buttons })
    }
}

/// The same logins, device `i` connecting to hub `i % hubs.len()`.
fn spread(logins: &[DeviceLogin], hubs: &[&HubProcess]) -> Vec<DeviceLogin> {
    logins
        .iter()
        .zip(hubs.iter().cycle())
        .map(|(login, hub)| DeviceLogin {
            host: hub.mqtt_host.clone(),
            port: hub.mqtt_port,
            ..login.clone()
        })
        .collect()
}

async fn launch_single(binary: &Path, url: &str, dir: &Path, what: &str) -> Result<HubProcess> {
    HubProcess::launch(binary, url, &dir.join(format!("cluster-single-{what}.log"))).await
}

/// The one hub's ladder; the hub stops after it, so that the cluster has the machine.
async fn single_ladder(
    binary: &Path,
    url: &str,
    dir: &Path,
    plan: &ClusterPlan,
) -> Result<(Ladder, Devices)> {
    let hub = launch_single(binary, url, dir, "ladder").await?;
    let devices = Devices::provision(&hub, plan).await?;
    let ladder = ingest::climb_hub(&hub, "1 hub, PostgreSQL", &devices.ingest, &plan.plan).await;
    hub.kill().await?;
    Ok((ladder?, devices))
}

/// Alert latency with the devices spread over `hubs` and the WebSocket client on `viewer`.
async fn alert_latency(
    viewer: &HubProcess,
    hubs: &[&HubProcess],
    devices: &Devices,
    rate: f64,
    plan: &ClusterPlan,
) -> Result<AlertLatency> {
    let token = crate::login_token(viewer).await?;
    let buttons = spread(&devices.buttons, hubs);
    let background = spread(&devices.ingest, hubs);
    let load = alerts::Background {
        devices: &background,
        rate,
        presses_per_s: plan.presses_per_s,
    };
    alerts::measure(viewer, &token, &buttons, &load).await
}

/// The planned background rate, unless a ladder fell short of it: then the highest rate
/// both sustained, or the plan's lowest if one sustained none.
fn alert_rate(plan: &ClusterPlan, single: &Ladder, cluster: &Ladder) -> f64 {
    let both = single.sustained_rate.min(cluster.sustained_rate);
    if both > 0.0 {
        return plan.background_rate.min(both);
    }
    plan.plan
        .rates
        .iter()
        .copied()
        .fold(plan.background_rate, f64::min)
}

fn cpu_compared(single: &Ladder, cluster: &Ladder) -> Option<CpuCompared> {
    let rate = single.sustained_rate.min(cluster.sustained_rate);
    let single_us = single.at(rate)?.cpu_us_per_msg?;
    let step = cluster.at(rate)?;
    let cluster_us = step.cpu_us_per_msg?;
    let part = |name: &str| step.cpu_of(name).and_then(|p| p.cpu_us_per_msg);
    Some(CpuCompared {
        rate,
        single_us,
        cluster_us,
        hubs_us: part(HUB_GROUP),
        nats_us: part(NATS_GROUP),
        ratio: cluster_us / single_us,
    })
}

const HUB_GROUP: &str = "hubs";
const NATS_GROUP: &str = "nats-server";

/// A `nats-server` with JetStream, listening on a port it picked.
struct Nats {
    url: String,
    pid: u32,
    child: Child,
}

impl Nats {
    async fn start(store: &Path) -> Result<Nats> {
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nats-server (Debian package nats-server)")?;
        let pid = child.id().context("nats-server exited at once")?;
        let log = child.stderr.take().context("nats-server has no stderr")?;
        let mut listening: Option<u16> = None;
        let port = watch_output(log, Duration::from_secs(20), |line| {
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                listening = addr
                    .trim()
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok());
            }
            let ready = line.contains("Server is ready");
            ready.then(|| listening.context("nats-server named no client port"))
        })
        .await
        .context("nats-server did not start")?;
        Ok(Nats {
            url: format!("nats://127.0.0.1:{port}"),
            pid,
            child,
        })
    }
}

fn node_id(index: usize) -> String {
    format!("hub-{}", index + 1)
}

/// The cluster's processes.
struct Cluster {
    nats: Nats,
    hubs: Vec<HubProcess>,
    /// When the last hub said it was ready.
    started: Instant,
}

impl Cluster {
    async fn start(binary: &Path, database_url: &str, dir: &Path) -> Result<Cluster> {
        let store = dir.join("cluster-nats");
        std::fs::create_dir_all(&store)?;
        let nats = Nats::start(&store).await?;
        let mut hubs = Vec::with_capacity(HUBS);
        // One after the other: the first runs the migrations before the others start.
        for index in 0..HUBS {
            let node = node_id(index);
            let settings = [
                "env".to_string(),
                format!("MIMAMORI_NATS_URL={}", nats.url),
                format!("MIMAMORI_NODE_ID={node}"),
                format!("MIMAMORI_PARTITIONS={PARTITIONS}"),
            ];
            let log = dir.join(format!("cluster-{node}.log"));
            hubs.push(HubProcess::launch_under(&settings, binary, database_url, &log).await?);
        }
        Ok(Cluster {
            nats,
            hubs,
            started: Instant::now(),
        })
    }

    fn hubs(&self) -> Vec<&HubProcess> {
        self.hubs.iter().collect()
    }

    fn groups(&self) -> [Group; 2] {
        [
            Group {
                name: HUB_GROUP.into(),
                pids: self.hubs.iter().map(|h| h.pid).collect(),
            },
            Group {
                name: NATS_GROUP.into(),
                pids: vec![self.nats.pid],
            },
        ]
    }

    /// The cluster's ladder, then its alert latency at the rate both ladders sustain.
    async fn measure(&self, plan: &ClusterPlan, single: &Ladder) -> Result<ClusterRun> {
        let owned = self.wait_spread(Duration::from_secs(60)).await?;
        let spread_s = self.started.elapsed().as_secs_f64();
        let hubs = self.hubs();
        let devices = Devices::provision(hubs[0], plan).await?;
        let target = format!("{HUBS} hubs + NATS, PostgreSQL");
        let ingest = spread(&devices.ingest, &hubs);
        let ladder =
            ingest::climb_hubs(&hubs, &self.groups(), &target, &ingest, &plan.plan).await?;
        let alert_rate = alert_rate(plan, single, &ladder);
        crate::note("cluster: alert latency, buttons on every hub, WebSocket on hub-1");
        let alerts = alert_latency(hubs[0], &hubs, &devices, alert_rate, plan).await?;
        Ok(ClusterRun {
            owned,
            spread_s,
            ladder,
            alert_rate,
            alerts,
        })
    }

    /// Waits until every partition is owned and each hub holds its fair share, so that no
    /// partition changes hands during the ladder; returns each hub's count.
    async fn wait_spread(&self, within: Duration) -> Result<Vec<usize>> {
        let http = reqwest::Client::new();
        let token = crate::login_token(&self.hubs[0]).await?;
        let until = Instant::now() + within;
        loop {
            let owners = owners(&http, &self.hubs[0], &token).await;
            if let Some(counts) = owners.as_ref().ok().and_then(|o| fair_split(o)) {
                return Ok(counts);
            }
            if Instant::now() >= until {
                bail!(
                    "the partitions were not spread over the {HUBS} hubs within {} s: {owners:?}",
                    within.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(self) -> Result<()> {
        for hub in self.hubs {
            hub.kill().await?;
        }
        let mut child = self.nats.child;
        child.kill().await?;
        Ok(())
    }
}

/// Each partition's owner as hub-1 sees the leases (`None` while it changes hands).
async fn owners(
    http: &reqwest::Client,
    hub: &HubProcess,
    token: &str,
) -> Result<Vec<Option<String>>> {
    let view: Value = http
        .get(hub.url("/cluster"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let leases = view["leases"]
        .as_array()
        .with_context(|| format!("GET /cluster answered without leases: {view}"))?;
    Ok(leases
        .iter()
        .map(|l| l["owner"].as_str().map(String::from))
        .collect())
}

/// How many partitions each hub owns, if every partition is owned and each hub holds
/// exactly the share the hubs' own plan gives it.
fn fair_split(owners: &[Option<String>]) -> Option<Vec<usize>> {
    let nodes: Vec<String> = (0..HUBS).map(node_id).collect();
    let counts: Vec<usize> = nodes
        .iter()
        .map(|n| owners.iter().filter(|o| o.as_ref() == Some(n)).count())
        .collect();
    let fair = nodes
        .iter()
        .zip(&counts)
        .all(|(n, &c)| c == hub::cluster::plan::fair_share(PARTITIONS, &nodes, n));
    (owners.len() == PARTITIONS && fair).then_some(counts)
}

/// The stage's section of the text report.
pub fn table(c: &ClusterFigures, out: &mut String) {
    let owned: Vec<String> = c.owned.iter().map(usize::to_string).collect();
    let _ = writeln!(
        out,
        "\nCluster: {} hubs in cluster mode + nats-server -js ({} partitions, {} per hub, spread {:.1} s after the last start) beside 1 hub; both on PostgreSQL, whose CPU counts in neither",
        c.hubs,
        c.partitions,
        owned.join("/"),
        c.spread_s
    );
    ladder_table(&[&c.single, &c.cluster], out);
    cpu_split_rows(&c.cluster, out);
    let _ = writeln!(out, "  {}", cpu_comparison(c.cpu_compared.as_ref()));
    let _ = writeln!(
        out,
        "  Alert latency, 1 hub: {}",
        alert_figures(&c.single_alerts)
    );
    let _ = writeln!(
        out,
        "  Alert latency, cluster (buttons on every hub, WebSocket on hub-1, which owns {} of {} partitions): {}",
        c.owned.first().copied().unwrap_or(0),
        c.partitions,
        alert_figures(&c.cluster_alerts)
    );
}

/// Each step's CPU of the hubs and of the NATS server.
fn cpu_split_rows(cluster: &Ladder, out: &mut String) {
    let _ = writeln!(
        out,
        "  {:<24}{:>9} {:>8} {:>8} {:>12} {:>12}",
        "CPU of the cluster by", "rate/s", "hubs %", "NATS %", "hubs us/msg", "NATS us/msg"
    );
    for s in &cluster.steps {
        let (hubs, nats) = (s.cpu_of(HUB_GROUP), s.cpu_of(NATS_GROUP));
        let pct =
            |p: Option<&ingest::ProcessCpu>| p.map_or("-".into(), |p| format!("{:.0}", p.cpu_pct));
        let per_msg = |p: Option<&ingest::ProcessCpu>| us(p.and_then(|p| p.cpu_us_per_msg));
        let _ = writeln!(
            out,
            "  {:<24}{:>9.0} {:>8} {:>8} {:>12} {:>12}",
            "",
            s.rate,
            pct(hubs),
            pct(nats),
            per_msg(hubs),
            per_msg(nats)
        );
    }
}

fn cpu_comparison(cmp: Option<&CpuCompared>) -> String {
    let Some(cmp) = cmp else {
        return "CPU per message not compared: no rate was sustained by both".into();
    };
    format!(
        "CPU per message at {:.0} msg/s (the highest rate both sustained): 1 hub {:.1} us, cluster {:.1} us (hubs {} + NATS {}), {:.2} x",
        cmp.rate,
        cmp.single_us,
        cmp.cluster_us,
        us(cmp.hubs_us),
        us(cmp.nats_us),
        cmp.ratio
    )
}

fn us(v: Option<f64>) -> String {
    v.map_or("-".into(), |u| format!("{u:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(counts: [usize; HUBS]) -> Vec<Option<String>> {
        counts
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| std::iter::repeat_n(Some(node_id(i)), n))
            .collect()
    }

    #[test]
    fn the_ladder_waits_for_each_hub_to_hold_its_fair_share() {
        assert_eq!(fair_split(&owners([6, 5, 5])), Some(vec![6, 5, 5]));
        assert_eq!(fair_split(&owners([16, 0, 0])), None);
        assert_eq!(fair_split(&owners([6, 6, 4])), None);
        let mut changing_hands = owners([6, 5, 5]);
        changing_hands[3] = None;
        assert_eq!(fair_split(&changing_hands), None);
    }

    fn ladder(sustained_rate: f64) -> Ladder {
        Ladder {
            target: "t".into(),
            devices: 1,
            steps: Vec::new(),
            sustained_rate,
        }
    }

    #[test]
    fn alerts_run_at_the_planned_rate_unless_a_ladder_fell_short_of_it() {
        let plan = ClusterPlan {
            devices: 1,
            plan: Plan {
                rates: vec![2_000.0, 5_000.0, 10_000.0],
                step: Duration::from_secs(1),
            },
            buttons: 1,
            background_rate: 5_000.0,
            presses_per_s: 1.0,
        };
        assert_eq!(
            alert_rate(&plan, &ladder(10_000.0), &ladder(5_000.0)),
            5_000.0
        );
        assert_eq!(
            alert_rate(&plan, &ladder(10_000.0), &ladder(2_000.0)),
            2_000.0
        );
        assert_eq!(alert_rate(&plan, &ladder(0.0), &ladder(10_000.0)), 2_000.0);
    }
}
