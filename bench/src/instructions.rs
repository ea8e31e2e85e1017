//! Instructions per message (`--only=instructions`): the hub and the bare broker each run
//! under callgrind while the same fixed load passes through them, so the figure does not
//! move with whatever else the machine is doing, as CPU time does. Kernel work (the
//! loopback sockets) is not counted; callgrind sees user space only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use device_sim::load::{self, LoadConfig, Mix};
use device_sim::mqtt::DeviceLogin;
use serde::Serialize;

use crate::ingest::Baseline;
use crate::process::HubProcess;

/// The fixed load: slow enough that the hub keeps up under callgrind (about 50 times slower).
#[derive(Debug, Clone, Copy)]
pub struct CountPlan {
    pub devices: usize,
    pub rate: f64,
    pub duration: Duration,
}

/// One target's count.
#[derive(Debug, Clone, Serialize)]
pub struct Count {
    pub target: String,
    pub messages: u64,
    pub instructions: u64,
    pub per_message: f64,
    /// The callgrind profile of the measured window, for `callgrind_annotate`.
    pub profile: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Instructions {
    pub rate: f64,
    pub hub: Count,
    pub baseline: Count,
    /// Hub instructions per message over the bare broker's.
    pub ratio: f64,
}

fn callgrind(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}/{name}.callgrind.%p", dir.display()),
    ]
}

/// Zeroes the counters of callgrind in process `pid`, or dumps them (`-z` / `-d`).
fn control(flag: &str, pid: u32) -> Result<()> {
    let status = std::process::Command::new("callgrind_control")
        .args([flag, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run callgrind_control (install valgrind)")?;
    if !status.success() {
        bail!("callgrind_control {flag} {pid} failed");
    }
    Ok(())
}

/// The newest dump of process `pid` and its instruction total.
fn read_dump(dir: &Path, name: &str, pid: u32) -> Result<(PathBuf, u64)> {
    let prefix = format!("{name}.callgrind.{pid}.");
    let newest = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .with_context(|| format!("no callgrind dump {prefix}* in {}", dir.display()))?;
    let text = std::fs::read_to_string(&newest)?;
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no instruction total in {}", newest.display()))?;
    Ok((newest, total))
}

/// Counts from zeroing `pid`'s counters to the dump taken once `done` says the far end
/// has every message sent so far (warm-up included).
async fn measure(
    name: &str,
    dir: &Path,
    pid: u32,
    devices: &[DeviceLogin],
    plan: &CountPlan,
    done: impl AsyncFn(u64) -> bool,
) -> Result<Count> {
    let config = |duration| LoadConfig {
        devices: devices.to_vec(),
        rate: plan.rate,
        duration,
        progress: false,
    };
    // A first run warms caches, pages and the database before the window.
    let warm = load::run_mix(config(Duration::from_secs(2)), Mix::WARD).await?;
    control("-z", pid)?;
    let r = load::run_mix(config(plan.duration), Mix::WARD).await?;
    if r.acked != r.sent || r.errors > 0 {
        bail!(
            "{name} under callgrind did not keep up: {} of {} acknowledged, {} errors; lower the rate",
            r.acked,
            r.sent,
            r.errors
        );
    }
    let mut arrived = false;
    for _ in 0..300 {
        if done(warm.acked + r.acked).await {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !arrived {
        bail!("{name}: the far end did not see all {} messages", r.acked);
    }
    control("-d", pid)?;
    // callgrind writes the dump when the process next runs its scheduler.
    let mut found = None;
    for _ in 0..100 {
        if let Ok(d) = read_dump(dir, name, pid) {
            found = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (profile, instructions) = found.with_context(|| format!("{name}: no dump appeared"))?;
    Ok(Count {
        target: name.into(),
        messages: r.acked,
        instructions,
        per_message: instructions as f64 / r.acked.max(1) as f64,
        profile,
    })
}

/// Runs the fixed load through the bare broker and then the hub, each under callgrind.
pub async fn run(
    hub_binary: &Path,
    broker_binary: &Path,
    dir: &Path,
    plan: &CountPlan,
) -> Result<Instructions> {
    let baseline = Baseline::start(&callgrind(dir, "baseline"), broker_binary).await?;
    let logins = baseline.logins(plan.devices);
    let base = measure(
        "baseline",
        dir,
        baseline.pid,
        &logins,
        plan,
        async |acked| baseline.received() >= acked,
    )
    .await?;
    drop(baseline);
    let url = format!("sqlite:{}", dir.join("instructions.db").display());
    let hub = HubProcess::launch_under(
        &callgrind(dir, "hub"),
        hub_binary,
        &url,
        &dir.join("instructions.log"),
    )
    .await?;
    let api = crate::provision::admin(&hub).await?;
    let devices = crate::mixed_devices(&hub, &api, plan.devices).await?;
    let http = reqwest::Client::new();
    let before = hub
        .metric(&http, "mimamori_messages_accepted_total")
        .await?;
    let counted = measure("hub", dir, hub.pid, &devices, plan, async |acked| {
        let now = hub
            .metric(&http, "mimamori_messages_accepted_total")
            .await
            .unwrap_or(0.0);
        now - before >= acked as f64
    })
    .await;
    hub.kill().await?;
    let counted = counted?;
    Ok(Instructions {
        rate: plan.rate,
        ratio: counted.per_message / base.per_message.max(1.0),
        hub: counted,
        baseline: base,
    })
}
