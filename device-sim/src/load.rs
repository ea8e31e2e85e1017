//! The MQTT load generator: N device connections publishing QoS 1 heartbeats at a total rate,
//! reporting messages sent and acknowledged per second, errors and PUBACK latency.
//!
//! The hub binds client id = username = device id, so every device has its own connection.
//! A gateway carrying many devices over one connection needs a gateway protocol on the hub
//! and is not simulated here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mimamori_protocol::topic::{device_topic, MessageKind};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::mqtt::DeviceLogin;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub devices: Vec<DeviceLogin>,
    /// Messages per second, all connections together.
    pub rate: f64,
    pub duration: Duration,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Messages in one second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub second: u64,
    pub sent: u64,
    pub acked: u64,
}

/// The result, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub devices: usize,
    pub connections: usize,
    pub connect_errors: u64,
    pub target_rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub per_second: Vec<Second>,
    pub ack_latency_ms_p50: Option<f64>,
    pub ack_latency_ms_p99: Option<f64>,
    pub ack_latency_ms_max: Option<f64>,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
}

struct Conn {
    client: AsyncClient,
    /// Topics by [`Mix`] slot: motion, heartbeat, GPS fix.
    topics: [String; 3],
}

/// The share of each message kind, as whole-number weights: motion sensors firing,
/// heartbeats, GPS fixes. Every message is QoS 1 and carries a battery level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub motion: u32,
    pub heartbeat: u32,
    pub gps: u32,
}

impl Mix {
    /// Heartbeats only: what `device-sim load` sends.
    pub const HEARTBEATS: Mix = Mix {
        motion: 0,
        heartbeat: 1,
        gps: 0,
    };
    /// A ward's traffic: mostly motion, some heartbeats, one GPS fix in ten.
    pub const WARD: Mix = Mix {
        motion: 6,
        heartbeat: 3,
        gps: 1,
    };

    /// The topic slot and payload of the `n`th message.
    fn message(&self, n: usize) -> (usize, String) {
        let total = (self.motion + self.heartbeat + self.gps).max(1) as usize;
        let battery = 50 + n % 50;
        let slot = n % total;
        if slot < self.motion as usize {
            (
                0,
                format!(r#"{{"motion":true,"room":"kitchen","battery":{battery}}}"#),
            )
        } else if slot < (self.motion + self.heartbeat) as usize {
            (1, format!(r#"{{"battery":{battery}}}"#))
        } else {
            // Fixes spread over a few hundred metres of Setagaya.
            let lat = 35.6466 + (n % 97) as f64 * 0.00003;
            let lon = 139.6532 + (n % 89) as f64 * 0.00003;
            (
                2,
                format!(
                    r#"{{"lat":{lat:.6},"lon":{lon:.6},"accuracy_m":12.0,"battery":{battery}}}"#
                ),
            )
        }
    }
}

/// Runs the load (heartbeats only) and returns what happened.
pub async fn run(cfg: LoadConfig) -> Result<LoadReport> {
    run_mix(cfg, Mix::HEARTBEATS).await
}

/// Runs the load with the given mix of message kinds and returns what happened.
pub async fn run_mix(cfg: LoadConfig, mix: Mix) -> Result<LoadReport> {
    if cfg.devices.is_empty() || cfg.rate <= 0.0 || !cfg.rate.is_finite() {
        bail!("a load needs at least one device and a positive rate");
    }
    let counts = Arc::new(Counts::default());
    let mut tasks = JoinSet::new();
    let mut conns = Vec::with_capacity(cfg.devices.len());
    let mut connect_errors = 0;
    let mut pending = JoinSet::new();
    for login in cfg.devices.clone() {
        pending.spawn(connect(login));
    }
    while let Some(r) = pending.join_next().await {
        match r? {
            Ok((conn, eventloop)) => {
                let counts = counts.clone();
                tasks.spawn(drive(eventloop, counts));
                conns.push(conn);
            }
            Err(_) => connect_errors += 1,
        }
    }
    if conns.is_empty() {
        bail!("no device could connect ({connect_errors} refused or failed)");
    }
    let bar = progress_bar(&cfg);
    let per_second = pace(&cfg, mix, &conns, &counts, &bar).await;
    // Give outstanding PUBACKs a moment to arrive before hanging up.
    let until = Instant::now() + Duration::from_secs(10);
    while counts.acked.load(Ordering::Relaxed) < counts.sent.load(Ordering::Relaxed)
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bar.finish_and_clear();
    for c in &conns {
        let _ = c.client.disconnect().await;
    }
    let mut latencies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r?);
    }
    latencies.sort_by(f64::total_cmp);
    let q = |f: f64| {
        (!latencies.is_empty())
            .then(|| latencies[((latencies.len() - 1) as f64 * f).round() as usize])
    };
    Ok(LoadReport {
        devices: cfg.devices.len(),
        connections: conns.len(),
        connect_errors,
        target_rate: cfg.rate,
        duration_s: cfg.duration.as_secs_f64(),
        sent: counts.sent.load(Ordering::Relaxed),
        acked: counts.acked.load(Ordering::Relaxed),
        errors: counts.errors.load(Ordering::Relaxed),
        per_second,
        ack_latency_ms_p50: q(0.5),
        ack_latency_ms_p99: q(0.99),
        ack_latency_ms_max: latencies.last().copied(),
    })
}

fn progress_bar(cfg: &LoadConfig) -> ProgressBar {
    let bar = ProgressBar::new(cfg.duration.as_secs().max(1));
    if !cfg.progress {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Publishes at the target rate until the duration is over; returns the per-second counts.
async fn pace(
    cfg: &LoadConfig,
    mix: Mix,
    conns: &[Conn],
    counts: &Counts,
    bar: &ProgressBar,
) -> Vec<Second> {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut owed, mut next, mut last) = (0.0f64, 0usize, start);
    let mut seconds = Vec::new();
    let (mut sec_sent, mut sec_acked) = (0, 0);
    while start.elapsed() < cfg.duration {
        tick.tick().await;
        let now = Instant::now();
        owed += cfg.rate * (now - last).as_secs_f64();
        last = now;
        while owed >= 1.0 {
            owed -= 1.0;
            let c = &conns[next % conns.len()];
            next += 1;
            let (slot, payload) = mix.message(next);
            // try_publish: a full queue means the hub is not keeping up, which is an error to count.
            match c
                .client
                .try_publish(&c.topics[slot], QoS::AtLeastOnce, false, payload)
            {
                Ok(()) => counts.sent.fetch_add(1, Ordering::Relaxed),
                Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
            };
        }
        let elapsed = start.elapsed().as_secs();
        if elapsed > seconds.len() as u64 {
            let (s, a) = (
                counts.sent.load(Ordering::Relaxed),
                counts.acked.load(Ordering::Relaxed),
            );
            seconds.push(Second {
                second: elapsed,
                sent: s - sec_sent,
                acked: a - sec_acked,
            });
            (sec_sent, sec_acked) = (s, a);
            bar.set_position(elapsed);
            bar.set_message(format!(
                "sent {s}, acked {a}, errors {}",
                counts.errors.load(Ordering::Relaxed)
            ));
        }
    }
    seconds
}

async fn connect(login: DeviceLogin) -> Result<(Conn, rumqttc::EventLoop)> {
    let mut opts = MqttOptions::new(&login.device_id, &login.host, login.port);
    opts.set_credentials(&login.device_id, &login.password);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) if c.code == ConnectReturnCode::Success => {
                    return Ok(())
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) => bail!("refused: {:?}", c.code),
                Ok(_) => {}
                Err(e) => bail!("{e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await??;
    let topics = [
        MessageKind::Motion,
        MessageKind::Heartbeat,
        MessageKind::Gps,
    ]
    .map(|kind| device_topic(&login.device_id, kind));
    Ok((Conn { client, topics }, eventloop))
}

/// Polls one connection; counts acks and returns PUBACK latencies in milliseconds.
async fn drive(mut eventloop: rumqttc::EventLoop, counts: Arc<Counts>) -> Vec<f64> {
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                in_flight.insert(pkid, Instant::now());
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                counts.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(t) = in_flight.remove(&ack.pkid) {
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return latencies,
            Ok(_) => {}
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                return latencies;
            }
        }
    }
}
