//! Sustained ingest: the same publishers and message mix at increasing rates, first
//! against a bare rumqttd with a plain subscriber (the machine's ceiling), then against
//! the hub, stopping at the first rate the target cannot sustain.
//!
//! A rate counts as sustained when every message sent was acknowledged, the load
//! generator never found a connection's queue full, the full seconds in between together
//! acknowledged at least 98 % of the rate and none of them less than 90 %, and the other
//! end saw every message: the subscriber received it (baseline), or the hub counted it
//! accepted with nothing rejected (hub; the hubs together, for a cluster).
//!
//! The rate is judged over the full seconds together, not second by second: a target that
//! acknowledges in batches (a commit every 10–30 ms) moves a few per cent of one
//! second's acknowledgements into the next whenever a commit takes a little longer, which
//! says nothing of what it can carry. A target that cannot carry the rate falls behind
//! over the whole window and fails there; one that stalls fails the 90 % floor.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use device_sim::load::{self, LoadConfig, LoadReport, Mix};
use device_sim::mqtt::DeviceLogin;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use rumqttd::Config;
use serde::Serialize;

use crate::process::{HubProcess, Sample};

/// One rate tried.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: f64,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    /// Messages the far end saw: the subscriber's count, or the hub's accepted counter.
    pub seen: u64,
    pub rejected: u64,
    pub slowest_second: u64,
    /// Acknowledgements per second over the full seconds together.
    pub window_rate: f64,
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    /// The target's CPU in percent of one core (of 100 × cores) during the step.
    pub cpu_pct: Option<f64>,
    pub rss_mib: Option<f64>,
    /// The target's CPU time (user + system) per acknowledged message, in microseconds.
    pub cpu_us_per_msg: Option<f64>,
    /// The CPU figures above split by kind of process, for a target of several kinds (a
    /// cluster's hubs and its NATS server); empty for one process.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu_split: Vec<ProcessCpu>,
    /// The harness's own CPU in percent of one core over the step's load (connecting,
    /// sending, waiting for the last PUBACKs): the load generator and, for the baseline,
    /// its subscriber, which share the machine's cores with the target.
    pub load_cpu_pct: Option<f64>,
    pub sustained: bool,
}

/// The share of one kind of process in a step's CPU.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    pub name: String,
    pub cpu_pct: f64,
    pub cpu_us_per_msg: Option<f64>,
}

impl Step {
    /// Fills in the target's CPU and memory from samples taken around the step.
    fn measured(mut self, before: &Sample, after: &Sample) -> Step {
        self.cpu_pct = Some(after.cpu_pct_since(before));
        self.rss_mib = Some(after.rss_bytes as f64 / (1 << 20) as f64);
        self.cpu_us_per_msg = self.us_per_msg(before, after);
        self
    }

    /// The share of the processes of this name, for a target of several kinds.
    pub fn cpu_of(&self, name: &str) -> Option<&ProcessCpu> {
        self.cpu_split.iter().find(|p| p.name == name)
    }

    fn us_per_msg(&self, before: &Sample, after: &Sample) -> Option<f64> {
        (self.acked > 0).then(|| (after.cpu_s - before.cpu_s) * 1e6 / self.acked as f64)
    }

    /// [`Step::measured`] over every group together, and each group's own share.
    fn measured_by_group(mut self, groups: &[Group], before: &[Sample], after: &[Sample]) -> Step {
        self = self.measured(&Sample::sum(before), &Sample::sum(after));
        if groups.len() > 1 {
            self.cpu_split = groups
                .iter()
                .zip(before.iter().zip(after))
                .map(|(g, (b, a))| ProcessCpu {
                    name: g.name.clone(),
                    cpu_pct: a.cpu_pct_since(b),
                    cpu_us_per_msg: self.us_per_msg(b, a),
                })
                .collect();
        }
        self
    }
}

/// A ladder of rates and what each gave.
#[derive(Debug, Clone, Serialize)]
pub struct Ladder {
    pub target: String,
    pub devices: usize,
    pub steps: Vec<Step>,
    /// The highest sustained rate, 0 if none was.
    pub sustained_rate: f64,
}

impl Ladder {
    fn new(target: &str, devices: usize) -> Ladder {
        Ladder {
            target: target.into(),
            devices,
            steps: Vec::new(),
            sustained_rate: 0.0,
        }
    }

    fn push(&mut self, step: Step) -> bool {
        let ok = step.sustained;
        if ok {
            self.sustained_rate = self.sustained_rate.max(step.rate);
        }
        self.steps.push(step);
        ok
    }

    /// The step at this rate, if the ladder climbed to it.
    pub fn at(&self, rate: f64) -> Option<&Step> {
        self.steps.iter().find(|s| s.rate == rate)
    }

    /// The step at the highest sustained rate.
    pub fn best(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.sustained)
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
    }
}

/// How long each step runs and at which rates.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rates: Vec<f64>,
    pub step: Duration,
}

/// Acknowledgements in each full second: the first and last seconds are partial
/// (connections warming up, the end of the run), so they are left out, unless the run
/// has no more than two seconds and nothing else to judge by.
fn full_seconds(r: &LoadReport) -> Vec<u64> {
    let acked = r.per_second.iter().map(|s| s.acked);
    match r.per_second.len() {
        n if n <= 2 => acked.collect(),
        n => acked.skip(1).take(n - 2).collect(),
    }
}

/// A sustained step's full seconds together carry this share of the rate.
const WINDOW_SHARE: f64 = 0.98;
/// No full second of a sustained step falls under this share: below it, the target stalled.
const SECOND_FLOOR: f64 = 0.90;

fn step_from(rate: f64, r: &LoadReport, seen: u64, rejected: u64) -> Step {
    let seconds = full_seconds(r);
    let slowest = seconds.iter().copied().min().unwrap_or(0);
    let window_rate = seconds.iter().sum::<u64>() as f64 / seconds.len().max(1) as f64;
    let sustained = r.errors == 0
        && r.connect_errors == 0
        && r.acked == r.sent
        && seen == r.acked
        && rejected == 0
        && window_rate >= WINDOW_SHARE * rate
        && slowest as f64 >= SECOND_FLOOR * rate;
    Step {
        rate,
        sent: r.sent,
        acked: r.acked,
        errors: r.errors + r.connect_errors,
        seen,
        rejected,
        slowest_second: slowest,
        window_rate,
        ack_p50_ms: r.ack_latency_ms_p50,
        ack_p99_ms: r.ack_latency_ms_p99,
        cpu_pct: None,
        rss_mib: None,
        cpu_us_per_msg: None,
        cpu_split: Vec::new(),
        load_cpu_pct: None,
        sustained,
    }
}

/// A bare rumqttd (`mimamori-bench-broker`, a process of its own so that its CPU time is
/// measured as the hub's is), configured as the hub's embedded router but without
/// authentication, and a plain subscriber on `watch/v1/#` that counts what it receives.
pub struct Baseline {
    pub addr: SocketAddr,
    pub pid: u32,
    received: Arc<AtomicU64>,
    _child: tokio::process::Child,
}

impl Baseline {
    /// Starts `binary` (optionally under `wrapper`, e.g. valgrind) and its subscriber.
    pub async fn start(wrapper: &[String], binary: &std::path::Path) -> Result<Baseline> {
        let addr = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => tokio::process::Command::new(binary),
        };
        let child = command
            .arg(addr.to_string())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the baseline broker")?;
        let pid = child.id().context("the baseline broker exited at once")?;
        let received = Arc::new(AtomicU64::new(0));
        subscribe_counting(addr, received.clone()).await?;
        Ok(Baseline {
            addr,
            pid,
            received,
            _child: child,
        })
    }

    /// Messages the subscriber has received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Logins for `count` devices; the bare broker takes any credentials.
    pub fn logins(&self, count: usize) -> Vec<DeviceLogin> {
        self.logins_named("baseline", count)
    }

    /// Logins for `count` devices whose ids start with `prefix`.
    pub fn logins_named(&self, prefix: &str, count: usize) -> Vec<DeviceLogin> {
        (0..count)
            .map(|i| DeviceLogin {
                host: self.addr.ip().to_string(),
                port: self.addr.port(),
                device_id: format!("{prefix}-{i}"),
                password: "none".into(),
            })
            .collect()
    }

    /// Runs the ladder against the bare broker.
    pub async fn climb(&self, devices: &[DeviceLogin], plan: &Plan) -> Result<Ladder> {
        let mut ladder = Ladder::new("rumqttd 0.20 + subscriber", devices.len());
        for &rate in &plan.rates {
            let before = self.received.load(Ordering::Relaxed);
            let cpu_before = Sample::of(self.pid)?;
            let (r, load_cpu) = load_measured(devices, rate, plan.step).await?;
            let cpu_after = Sample::of(self.pid)?;
            // The subscriber may trail the PUBACKs a little.
            let expect = before + r.acked;
            wait_for(
                || self.received.load(Ordering::Relaxed) >= expect,
                Duration::from_secs(10),
            )
            .await;
            let seen = self.received.load(Ordering::Relaxed) - before;
            let mut step = step_from(rate, &r, seen, 0).measured(&cpu_before, &cpu_after);
            step.load_cpu_pct = Some(load_cpu);
            if !ladder.push(step) {
                break;
            }
        }
        Ok(ladder)
    }
}

/// The hub's own router settings, without its authentication: the same broker, bare.
pub fn bare_config(addr: SocketAddr) -> Config {
    let mut config = hub::edge::router::router_config(addr, "", 60_000, hub::edge::MAX_PACKET);
    for server in config
        .v4
        .iter_mut()
        .flat_map(|servers| servers.values_mut())
    {
        server.connections.auth = None;
    }
    config
}

async fn subscribe_counting(addr: SocketAddr, received: Arc<AtomicU64>) -> Result<()> {
    // The broker starts on its own thread; its first CONNACK says it is up.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let (client, mut eventloop) = loop {
        match connect_client(
            addr.ip().to_string(),
            addr.port(),
            "baseline-subscriber",
            None,
            1000,
        )
        .await
        {
            Ok(c) => break c,
            Err(_) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e),
        }
    };
    client.subscribe("watch/v1/#", QoS::AtLeastOnce).await?;
    tokio::spawn(async move {
        // Keep the client alive with its event loop.
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    received.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Ok(())
}

/// A rumqttc client that has its CONNACK.
pub async fn connect_client(
    host: String,
    port: u16,
    client_id: &str,
    credentials: Option<(&str, &str)>,
    inflight: u16,
) -> Result<(AsyncClient, rumqttc::EventLoop)> {
    let mut opts = MqttOptions::new(client_id, host, port);
    if let Some((u, p)) = credentials {
        opts.set_credentials(u, p);
    }
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_inflight(inflight);
    let (client, mut eventloop) = AsyncClient::new(opts, usize::from(inflight).max(10));
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c)))
                    if c.code == rumqttc::ConnectReturnCode::Success =>
                {
                    return Ok(())
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    anyhow::bail!("{client_id}: refused ({:?})", c.code)
                }
                Ok(_) => {}
                Err(e) => anyhow::bail!("{client_id}: cannot connect: {e}"),
            }
        }
    })
    .await
    .with_context(|| format!("{client_id}: no CONNACK in 30 s"))??;
    Ok((client, eventloop))
}

/// One step's load, and the harness's own CPU in percent of one core meanwhile.
async fn load_measured(
    devices: &[DeviceLogin],
    rate: f64,
    duration: Duration,
) -> Result<(LoadReport, f64)> {
    let before = Sample::of(std::process::id())?;
    let r = load::run_mix(config(devices, rate, duration), Mix::WARD).await?;
    let after = Sample::of(std::process::id())?;
    Ok((r, after.cpu_pct_since(&before)))
}

fn config(devices: &[DeviceLogin], rate: f64, duration: Duration) -> LoadConfig {
    LoadConfig {
        devices: devices.to_vec(),
        rate,
        duration,
        progress: false,
    }
}

/// Waits until `done` or the timeout, polling.
pub async fn wait_for(done: impl Fn() -> bool, timeout: Duration) -> bool {
    let until = tokio::time::Instant::now() + timeout;
    while !done() {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Processes of one kind whose CPU and memory a hub ladder reports together.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub pids: Vec<u32>,
}

fn sample_groups(groups: &[Group]) -> Result<Vec<Sample>> {
    groups.iter().map(|g| Sample::of_all(&g.pids)).collect()
}

const ACCEPTED: &str = "mimamori_messages_accepted_total";
const REJECTED: &str = "mimamori_messages_rejected_total";

/// One counter summed over the hubs.
async fn total(hubs: &[&HubProcess], http: &reqwest::Client, name: &str) -> Result<f64> {
    let mut sum = 0.0;
    for hub in hubs {
        sum += hub.metric(http, name).await?;
    }
    Ok(sum)
}

/// The hubs' accepted count once it reaches `expected` or stops rising. A single hub
/// counts a message before its PUBACK; in a cluster the PUBACK follows JetStream's
/// acknowledgement and the partition's owner counts the message when it commits it, a
/// moment later, or much later behind a backlog the step left, which this also lets drain
/// before the next step.
async fn settled_accepted(
    hubs: &[&HubProcess],
    http: &reqwest::Client,
    expected: f64,
) -> Result<f64> {
    const STILL: Duration = Duration::from_secs(3);
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut seen = total(hubs, http, ACCEPTED).await?;
    let mut moved = Instant::now();
    while seen < expected && moved.elapsed() < STILL && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total(hubs, http, ACCEPTED).await?;
        if now != seen {
            (seen, moved) = (now, Instant::now());
        }
    }
    Ok(seen)
}

/// Runs the ladder against the hub, reading its counters and /proc around each step.
pub async fn climb_hub(
    hub: &HubProcess,
    target: &str,
    devices: &[DeviceLogin],
    plan: &Plan,
) -> Result<Ladder> {
    let hub_only = Group {
        name: "hub".into(),
        pids: vec![hub.pid],
    };
    climb_hubs(&[hub], &[hub_only], target, devices, plan).await
}

/// Runs the ladder against hubs that share the load, `devices` spread over them: the far
/// end of a step is their accepted and rejected counters summed; its CPU and memory are
/// those of `groups` (the hubs, and what serves them), sampled from the step's start until
/// the hubs have counted what was acknowledged.
pub async fn climb_hubs(
    hubs: &[&HubProcess],
    groups: &[Group],
    target: &str,
    devices: &[DeviceLogin],
    plan: &Plan,
) -> Result<Ladder> {
    let http = reqwest::Client::new();
    let mut ladder = Ladder::new(target, devices.len());
    for &rate in &plan.rates {
        let accepted = total(hubs, &http, ACCEPTED).await?;
        let rejected = total(hubs, &http, REJECTED).await?;
        let before = sample_groups(groups)?;
        let (r, load_cpu) = load_measured(devices, rate, plan.step).await?;
        let seen = settled_accepted(hubs, &http, accepted + r.acked as f64).await? - accepted;
        let after = sample_groups(groups)?;
        let rejected = total(hubs, &http, REJECTED).await? - rejected;
        let mut step = step_from(rate, &r, seen as u64, rejected as u64)
            .measured_by_group(groups, &before, &after);
        step.load_cpu_pct = Some(load_cpu);
        if !ladder.push(step) {
            break;
        }
    }
    Ok(ladder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_sim::load::Second;

    /// A run at `rate` whose seconds acknowledged `acked`, every message in the end.
    fn run(rate: f64, acked: &[u64]) -> LoadReport {
        let total = acked.iter().sum();
        LoadReport {
            devices: 100,
            connections: 100,
            connect_errors: 0,
            target_rate: rate,
            duration_s: acked.len() as f64,
            sent: total,
            acked: total,
            errors: 0,
            per_second: (0..)
                .zip(acked)
                .map(|(second, &acked)| Second {
                    second,
                    sent: rate as u64,
                    acked,
                })
                .collect(),
            ack_latency_ms_p50: None,
            ack_latency_ms_p99: None,
            ack_latency_ms_max: None,
        }
    }

    fn sustained(rate: f64, acked: &[u64]) -> bool {
        let r = run(rate, acked);
        step_from(rate, &r, r.acked, 0).sustained
    }

    #[test]
    fn a_batching_target_that_keeps_up_is_sustained_though_one_second_falls_short() {
        // One slow commit moves 3 % of a second's acknowledgements into the next, which
        // a second-by-second 98 % rule would fail.
        let acked = [
            40_000, 48_500, 51_500, 50_000, 50_000, 50_000, 50_000, 60_000,
        ];
        assert!(sustained(50_000.0, &acked));
    }

    #[test]
    fn a_target_that_falls_behind_over_the_window_is_not_sustained() {
        let acked = [
            40_000, 48_500, 48_500, 48_500, 48_500, 48_500, 48_500, 80_000,
        ];
        assert!(!sustained(50_000.0, &acked));
    }

    #[test]
    fn a_stall_is_not_sustained_though_the_window_catches_up() {
        let acked = [
            40_000, 50_000, 40_000, 60_000, 50_000, 50_000, 50_000, 60_000,
        ];
        assert!(!sustained(50_000.0, &acked));
    }

    #[test]
    fn an_unacknowledged_message_is_not_sustained() {
        let mut r = run(1_000.0, &[1_000; 8]);
        r.sent += 1;
        assert!(!step_from(1_000.0, &r, r.acked, 0).sustained);
    }
}
