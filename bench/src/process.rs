//! The hub as a separate process on free ports, so that the CPU time and memory the
//! benchmark reports are the hub's own and not the load generator's.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// The password the benchmark gives the hub's `admin` user.
pub const ADMIN_PASSWORD: &str = "bench-admin-password";

/// A running hub.
pub struct HubProcess {
    pub base: String,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub pid: u32,
    /// From spawning the process to its ready line (broker up, rules restored).
    pub ready_after: Duration,
    child: Child,
}

impl HubProcess {
    /// Starts the hub on `database_url` and waits for its ready line; the log goes to `log`.
    pub async fn launch(binary: &Path, database_url: &str, log: &Path) -> Result<HubProcess> {
        HubProcess::launch_under(&[], binary, database_url, log).await
    }

    /// [`HubProcess::launch`] under a program that runs the hub as its own process image
    /// (`valgrind --tool=callgrind`), so `pid` is still the hub's.
    pub async fn launch_under(
        wrapper: &[String],
        binary: &Path,
        database_url: &str,
        log: &Path,
    ) -> Result<HubProcess> {
        let started = Instant::now();
        let stderr = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"])
            .args(["--database-url", database_url])
            .args(["--max-connections", "50000"])
            .env("MIMAMORI_ADMIN_PASSWORD", ADMIN_PASSWORD)
            // As the image and `scripts/start.sh` run it (docs/operations.md).
            .env(
                "MALLOC_ARENA_MAX",
                std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".into()),
            )
            .env(
                "RUST_LOG",
                std::env::var("BENCH_HUB_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the hub binary")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("hub has no stdout"))?;
        let ready = watch_output(stdout, Duration::from_secs(300), |line| {
            line.strip_prefix("mimamori hub ready: ")
                .map(|rest| Ok(rest.to_string()))
        })
        .await;
        let ready = match ready {
            Ok(r) => r,
            Err(e) => {
                let logged = std::fs::read_to_string(log).unwrap_or_default();
                bail!("hub did not start: {e:#}\n--- hub log ---\n{logged}");
            }
        };
        let ready_after = started.elapsed();
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the hub exited at once"))?;
        let (base, mqtt) = parse_ready(&ready)?;
        let (mqtt_host, mqtt_port) = device_sim::mqtt::host_port(&mqtt)?;
        Ok(HubProcess {
            base,
            mqtt_host,
            mqtt_port,
            pid,
            ready_after,
            child,
        })
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// CPU time and resident memory of the hub right now.
    pub fn sample(&self) -> Result<Sample> {
        Sample::of(self.pid)
    }

    /// The hub's own limit of open files (each device connection costs it three).
    pub fn file_limit(&self) -> Option<u64> {
        std::fs::read_to_string(format!("/proc/{}/limits", self.pid))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// One counter or gauge from `GET /api/v1/metrics` (0 when absent).
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> Result<f64> {
        let text = http.get(self.url("/metrics")).send().await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
            .sum())
    }
}

/// Reads a child's output line by line until `found` makes something of a line (or an
/// error), for at most `within`; then drains the rest in the background, so that the
/// child never blocks on a full pipe.
pub async fn watch_output<T>(
    output: impl AsyncRead + Unpin + Send + 'static,
    within: Duration,
    mut found: impl FnMut(&str) -> Option<Result<T>>,
) -> Result<T> {
    let mut lines = BufReader::new(output).lines();
    let outcome = tokio::time::timeout(within, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(outcome) = found(&line) {
                return outcome;
            }
        }
        bail!("the process exited before it was ready")
    })
    .await
    .map_err(|_| anyhow!("not ready within {} s", within.as_secs()))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(outcome)
}

fn parse_ready(line: &str) -> Result<(String, String)> {
    let (mut http, mut mqtt) = (None, None);
    for part in line.split_whitespace() {
        if let Some(v) = part.strip_prefix("http=") {
            http = Some(v.to_string());
        }
        if let Some(v) = part.strip_prefix("mqtt=") {
            mqtt = Some(v.to_string());
        }
    }
    match (http, mqtt) {
        (Some(h), Some(m)) => Ok((h, m)),
        _ => bail!("unexpected ready line {line:?}"),
    }
}

/// CPU time used so far and resident memory of one process, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub cpu_s: f64,
    pub rss_bytes: u64,
}

impl Sample {
    pub fn of(pid: u32) -> Result<Sample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid} is gone"))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks = |i: usize| -> Result<f64> {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| anyhow!("no field {i} in /proc/{pid}/stat"))
        };
        let cpu_s = (ticks(11)? + ticks(12)?) / clock_ticks_per_s();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
        Ok(Sample {
            at: Instant::now(),
            cpu_s,
            rss_bytes: rss_kib * 1024,
        })
    }

    /// Several processes as one: their CPU time and resident memory added up.
    pub fn of_all(pids: &[u32]) -> Result<Sample> {
        let each: Vec<Sample> = pids
            .iter()
            .map(|&pid| Sample::of(pid))
            .collect::<Result<_>>()?;
        Ok(Sample::sum(&each))
    }

    /// Samples of several processes taken together, as one; now when there are none.
    pub fn sum(samples: &[Sample]) -> Sample {
        Sample {
            at: samples.last().map_or_else(Instant::now, |s| s.at),
            cpu_s: samples.iter().map(|s| s.cpu_s).sum(),
            rss_bytes: samples.iter().map(|s| s.rss_bytes).sum(),
        }
    }

    /// CPU used between `earlier` and this sample, in percent of one core.
    pub fn cpu_pct_since(&self, earlier: &Sample) -> f64 {
        let wall = (self.at - earlier.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        (self.cpu_s - earlier.cpu_s) / wall * 100.0
    }
}

/// USER_HZ: 100 on every Linux the hub targets; `getconf` confirms it where available.
fn clock_ticks_per_s() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|hz| *hz > 0.0)
            .unwrap_or(100.0)
    })
}

/// Lets the benchmark and the hub it spawns hold tens of thousands of sockets: each
/// device costs the hub three (device, edge-to-router, router side).
pub fn raise_file_limit(want: u64) -> Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft >= want {
        return Ok(soft);
    }
    // Raising the hard limit needs privilege; without it, go as high as allowed.
    if rlimit::Resource::NOFILE.set(want, want.max(hard)).is_ok() {
        return Ok(want);
    }
    rlimit::Resource::NOFILE.set(hard, hard)?;
    Ok(hard)
}
