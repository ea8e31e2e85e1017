//! What privacy costs the desk and the devices, each measured against a baseline in the
//! same run:
//!
//! - **Retention under ingest**: PUBACK latency of the ward mix at a fixed rate while a
//!   retention pass purges a large backlog of old position fixes, against the same load
//!   without a pass just before and just after it. The backlog is written into the
//!   stopped hub's SQLite file; the hub runs passes only when asked
//!   (`MIMAMORI_RETENTION_INTERVAL_S=0`), and the stage asks with
//!   `POST /api/v1/retention/run` as the load starts.
//! - **The read audit**: desk reads (`GET /residents/{id}/track`, each a day of fixes)
//!   per second and their latency with every read logged, against the same reads of a
//!   copy of the same database by a hub whose reads are not logged. The hub program has
//!   no setting for that; only the benchmark's own build of it turns the log off
//!   (`MIMAMORI_BENCH_UNLOGGED_READS`, see `hub_main.rs`). The two hubs take turns, in
//!   alternating order, so drift on the machine falls on both.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use device_sim::load::{self, LoadConfig, LoadReport, Mix};
use mimamori_protocol::DeviceKind;
use serde::Serialize;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use crate::process::HubProcess;
use crate::stats::Quantiles;
use crate::{mixed_devices, provision, Size};

/// The environment variable the benchmark's hub binary reads to leave reads unlogged.
pub const UNLOGGED_READS: &str = "MIMAMORI_BENCH_UNLOGGED_READS";

/// How big the stage is.
#[derive(Debug, Clone, Copy)]
pub struct PrivacyPlan {
    pub devices: usize,
    /// Ward-mix messages per second during every ingest phase.
    pub rate: f64,
    pub phase: Duration,
    /// Position fixes 31 days old and older, for the pass to purge.
    pub backlog: u64,
    /// Residents with a GPS tracker, and the fixes of each in the last day.
    pub residents: usize,
    pub fixes: u64,
    /// Desk clients reading at once, each one read after another.
    pub readers: usize,
    pub read_phase: Duration,
    /// Turns of each hub.
    pub rounds: usize,
}

pub fn plan(size: Size) -> PrivacyPlan {
    match size {
        Size::Smoke => PrivacyPlan {
            devices: 20,
            rate: 200.0,
            phase: Duration::from_secs(4),
            backlog: 30_000,
            residents: 20,
            fixes: 50,
            readers: 4,
            read_phase: Duration::from_secs(2),
            rounds: 1,
        },
        Size::Quick => PrivacyPlan {
            devices: 200,
            rate: 2_000.0,
            phase: Duration::from_secs(20),
            backlog: 200_000,
            residents: 200,
            fixes: 100,
            readers: 8,
            read_phase: Duration::from_secs(5),
            rounds: 2,
        },
        Size::Full => PrivacyPlan {
            devices: 100,
            rate: 5_000.0,
            phase: Duration::from_secs(45),
            backlog: 600_000,
            residents: 500,
            fixes: 100,
            readers: 8,
            read_phase: Duration::from_secs(10),
            rounds: 3,
        },
    }
}

/// One ingest phase.
#[derive(Debug, Clone, Serialize)]
pub struct IngestPhase {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
}

impl From<&LoadReport> for IngestPhase {
    fn from(r: &LoadReport) -> Self {
        IngestPhase {
            sent: r.sent,
            acked: r.acked,
            errors: r.errors + r.connect_errors,
            ack_p50_ms: r.ack_latency_ms_p50,
            ack_p99_ms: r.ack_latency_ms_p99,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RetentionUnderIngest {
    pub rate: f64,
    pub devices: usize,
    pub phase_s: f64,
    pub backlog: u64,
    pub before: IngestPhase,
    pub during: IngestPhase,
    pub after: IngestPhase,
    /// How long the pass ran, and what it removed (positions, of which the backlog).
    pub pass_s: f64,
    pub removed: u64,
    /// Whether the pass ended before the load measured during it did; if not, the end
    /// of the pass (the last batch reads to the end of the table) went unmeasured.
    pub pass_within_phase: bool,
    /// PUBACK p99 during the pass over the mean of before and after.
    pub p99_ratio: Option<f64>,
}

/// One hub's desk reads over all its turns.
#[derive(Debug, Clone, Serialize)]
pub struct Reads {
    pub reads: u64,
    pub errors: u64,
    pub per_s: f64,
    pub latency_ms: Option<Quantiles>,
    /// The hub's CPU time per read.
    pub cpu_us_per_read: f64,
    /// Reads the hub wrote to its access log.
    pub logged: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadAudit {
    pub residents: usize,
    pub fixes: u64,
    pub readers: usize,
    pub turn_s: f64,
    pub rounds: usize,
    pub logged: Reads,
    pub unlogged: Reads,
    /// Logged over unlogged.
    pub per_s_ratio: f64,
    pub p99_ratio: Option<f64>,
    pub cpu_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrivacyFigures {
    pub retention: RetentionUnderIngest,
    pub reads: ReadAudit,
}

/// Runs both measurements on hubs of their own in `dir`.
pub async fn run(binary: &Path, dir: &Path, p: &PrivacyPlan) -> Result<PrivacyFigures> {
    let retention = retention_under_ingest(binary, dir, p).await?;
    let reads = read_audit(binary, dir, p).await?;
    Ok(PrivacyFigures { retention, reads })
}

/// The hub on `db`, running retention only when asked, with reads logged or not.
async fn launch(binary: &Path, db: &Path, log: &Path, logged: bool) -> Result<HubProcess> {
    let mut env = vec![
        "env".to_string(),
        "MIMAMORI_RETENTION_INTERVAL_S=0".to_string(),
    ];
    if !logged {
        env.push(format!("{UNLOGGED_READS}=1"));
    }
    let url = format!("sqlite:{}", db.display());
    HubProcess::launch_under(&env, binary, &url, log).await
}

async fn open(db: &Path) -> Result<SqliteConnection> {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(db))
        .await
        .with_context(|| format!("cannot open {}", db.display()))
}

/// What [`readings`] writes: GPS fixes of the trackers, or heartbeats of the motion sensors.
#[derive(Clone, Copy)]
enum Rows {
    Fixes,
    Heartbeats,
}

/// Writes `count` readings of the hub's devices of one kind, in turn, one every `step_ms`
/// going back from `newest_ms`, in transactions of a million rows.
async fn readings(
    conn: &mut SqliteConnection,
    rows: Rows,
    count: u64,
    newest_ms: i64,
    step_ms: i64,
) -> Result<()> {
    const CHUNK: u64 = 1_000_000;
    let (device, kind) = match rows {
        Rows::Fixes => ("gps", "gps"),
        Rows::Heartbeats => ("motion", "heartbeat"),
    };
    let mut done = 0;
    while done < count {
        let n = CHUNK.min(count - done);
        // language=SQLite
        sqlx::query(
            "WITH RECURSIVE seq(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM seq WHERE x < ?2),
                  dev AS (SELECT id, resident_id, ROW_NUMBER() OVER (ORDER BY id) - 1 AS k
                          FROM devices WHERE kind = ?5),
                  n AS (SELECT COUNT(*) AS c FROM dev)
             INSERT INTO readings (resident_id, device_id, kind, ts, received_at, lat, lon, accuracy_m, battery)
             SELECT dev.resident_id, dev.id, ?6, ?3 - x * ?4, ?3 - x * ?4,
                    CASE WHEN ?6 = 'gps' THEN 35.7 + (x % 100) * 0.0001 END,
                    CASE WHEN ?6 = 'gps' THEN 139.6 END,
                    CASE WHEN ?6 = 'gps' THEN 12.0 END, 80
             FROM seq JOIN dev ON dev.k = x % (SELECT c FROM n)",
        )
        .bind(done as i64)
        .bind((done + n - 1) as i64)
        .bind(newest_ms)
        .bind(step_ms)
        .bind(device)
        .bind(kind)
        .execute(&mut *conn)
        .await?;
        done += n;
    }
    Ok(())
}

async fn ward_load(
    devices: &[device_sim::mqtt::DeviceLogin],
    p: &PrivacyPlan,
) -> Result<LoadReport> {
    load::run_mix(
        LoadConfig {
            devices: devices.to_vec(),
            rate: p.rate,
            duration: p.phase,
            progress: false,
        },
        Mix::WARD,
    )
    .await
}

/// An API call with the admin's token, answered with JSON.
async fn as_admin(req: reqwest::RequestBuilder, token: &str) -> Result<serde_json::Value> {
    Ok(req
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Ingest alone, ingest while a pass purges the backlog, ingest alone again.
async fn retention_under_ingest(
    binary: &Path,
    dir: &Path,
    p: &PrivacyPlan,
) -> Result<RetentionUnderIngest> {
    let db = dir.join("privacy-retention.db");
    let log = dir.join("privacy-retention.log");
    let hub = launch(binary, &db, &log, true).await?;
    let api = provision::admin(&hub).await?;
    let devices = mixed_devices(&hub, &api, p.devices).await?;
    hub.kill().await?;
    // The backlog is the oldest data, as in a store that has run for months; as many
    // heartbeats of the last weeks stay, and the pass reads past them to find the end.
    let now = chrono::Utc::now().timestamp_millis();
    let month_ago = now - 31 * 86_400_000;
    let mut conn = open(&db).await?;
    readings(&mut conn, Rows::Fixes, p.backlog, month_ago, 1_000).await?;
    readings(&mut conn, Rows::Heartbeats, p.backlog, now, 1_000).await?;
    conn.close().await?;
    let hub = launch(binary, &db, &log, true).await?;
    let devices = provision::logins(
        &hub,
        &devices
            .iter()
            .map(|d| (d.device_id.clone(), d.password.clone()))
            .collect::<Vec<_>>(),
    );
    let token = crate::login_token(&hub).await?;
    let http = reqwest::Client::new();

    let before = ward_load(&devices, p).await?;
    let asked = as_admin(http.post(hub.url("/retention/run")), &token).await?;
    let pass = asked["pass"].as_u64().context("no pass number")?;
    let during = ward_load(&devices, p).await?;
    let done = loop {
        let status = as_admin(http.get(hub.url("/retention")), &token).await?;
        if status["last"]["pass"].as_u64() >= Some(pass) {
            break status["last"].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let after = ward_load(&devices, p).await?;
    hub.kill().await?;

    if let Some(e) = done["error"].as_str() {
        bail!("the retention pass failed: {e}");
    }
    let at = |k: &str| {
        done[k]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let pass_s = match (at("started_at"), at("finished_at")) {
        (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => bail!("the pass has no times: {done}"),
    };
    let removed = done["removed"]["positions"].as_u64().unwrap_or(0);
    let p99_ratio = match (
        before.ack_latency_ms_p99,
        during.ack_latency_ms_p99,
        after.ack_latency_ms_p99,
    ) {
        (Some(b), Some(d), Some(a)) if b + a > 0.0 => Some(d / ((b + a) / 2.0)),
        _ => None,
    };
    Ok(RetentionUnderIngest {
        rate: p.rate,
        devices: devices.len(),
        phase_s: p.phase.as_secs_f64(),
        backlog: p.backlog,
        before: (&before).into(),
        during: (&during).into(),
        after: (&after).into(),
        pass_s,
        removed,
        pass_within_phase: pass_s <= p.phase.as_secs_f64(),
        p99_ratio,
    })
}

/// A hub taking desk reads, and what it has read so far.
struct Desk {
    hub: HubProcess,
    token: String,
    residents: Vec<i64>,
    latencies_ms: Vec<f64>,
    reads: u64,
    errors: u64,
    busy: Duration,
    cpu_s: f64,
}

impl Desk {
    async fn start(binary: &Path, db: &Path, log: &Path, logged: bool) -> Result<Desk> {
        let hub = launch(binary, db, log, logged).await?;
        let token = crate::login_token(&hub).await?;
        let list = as_admin(reqwest::Client::new().get(hub.url("/residents")), &token).await?;
        let residents = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["id"].as_i64())
            .collect();
        Ok(Desk {
            hub,
            token,
            residents,
            latencies_ms: Vec::new(),
            reads: 0,
            errors: 0,
            busy: Duration::ZERO,
            cpu_s: 0.0,
        })
    }

    /// `readers` clients reading tracks one after another for `turn`.
    async fn turn(&mut self, readers: usize, turn: Duration) -> Result<()> {
        let http = reqwest::Client::new();
        let before = self.hub.sample()?;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for r in 0..readers {
            let (http, token) = (http.clone(), self.token.clone());
            let urls: Arc<Vec<String>> = Arc::new(
                self.residents
                    .iter()
                    .map(|id| self.hub.url(&format!("/residents/{id}/track")))
                    .collect(),
            );
            tasks.spawn(async move {
                let (mut ms, mut errors) = (Vec::new(), 0u64);
                let mut i = r;
                while started.elapsed() < turn {
                    let t = Instant::now();
                    let ok = match http
                        .get(&urls[i % urls.len()])
                        .bearer_auth(&token)
                        .send()
                        .await
                    {
                        Ok(res) if res.status().is_success() => res.bytes().await.is_ok(),
                        _ => false,
                    };
                    if ok {
                        ms.push(t.elapsed().as_secs_f64() * 1e3);
                    } else {
                        errors += 1;
                    }
                    i += readers;
                }
                (ms, errors)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (ms, errors) = done?;
            self.reads += ms.len() as u64;
            self.errors += errors;
            self.latencies_ms.extend(ms);
        }
        self.busy += started.elapsed();
        self.cpu_s += self.hub.sample()?.cpu_s - before.cpu_s;
        Ok(())
    }

    /// Waits for the access log's writer to catch up, then stops the hub.
    async fn finish(mut self, logged: bool) -> Result<Reads> {
        let http = reqwest::Client::new();
        let name = "mimamori_access_log_rows_total";
        let want = if logged { self.reads as f64 } else { 0.0 };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut written = self.hub.metric(&http, name).await?;
        while written < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            written = self.hub.metric(&http, name).await?;
        }
        if written != want {
            bail!(
                "{} reads, but {written} written to the access log (expected {want})",
                self.reads
            );
        }
        self.hub.kill().await?;
        Ok(Reads {
            reads: self.reads,
            errors: self.errors,
            per_s: self.reads as f64 / self.busy.as_secs_f64().max(1e-9),
            latency_ms: Quantiles::of(&mut self.latencies_ms),
            cpu_us_per_read: self.cpu_s * 1e6 / self.reads.max(1) as f64,
            logged: written as u64,
        })
    }
}

/// The same reads against two hubs on copies of one database, one logging them.
async fn read_audit(binary: &Path, dir: &Path, p: &PrivacyPlan) -> Result<ReadAudit> {
    let db = dir.join("privacy-reads.db");
    let copy = dir.join("privacy-reads-unlogged.db");
    let setup = launch(binary, &db, &dir.join("privacy-reads-setup.log"), true).await?;
    let api = provision::admin(&setup).await?;
    provision::devices_via_api(&setup, &api, DeviceKind::Gps, p.residents).await?;
    setup.kill().await?;
    // A fix a minute per tracker over the last hours, all within the track's default day.
    let mut conn = open(&db).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let total = p.fixes * p.residents as u64;
    let step = 60_000 / p.residents.max(1) as i64;
    readings(&mut conn, Rows::Fixes, total, now - 60_000, step).await?;
    conn.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let from = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            std::fs::copy(&from, format!("{}{suffix}", copy.display()))?;
        }
    }
    let mut logged = Desk::start(binary, &db, &dir.join("privacy-reads.log"), true).await?;
    let mut unlogged = Desk::start(
        binary,
        &copy,
        &dir.join("privacy-reads-unlogged.log"),
        false,
    )
    .await?;
    for round in 0..p.rounds {
        let (first, second) = if round % 2 == 0 {
            (&mut logged, &mut unlogged)
        } else {
            (&mut unlogged, &mut logged)
        };
        first.turn(p.readers, p.read_phase).await?;
        second.turn(p.readers, p.read_phase).await?;
    }
    let logged = logged.finish(true).await?;
    let unlogged = unlogged.finish(false).await?;
    let p99 = |r: &Reads| r.latency_ms.map(|q| q.p99);
    Ok(ReadAudit {
        residents: p.residents,
        fixes: p.fixes,
        readers: p.readers,
        turn_s: p.read_phase.as_secs_f64(),
        rounds: p.rounds,
        per_s_ratio: logged.per_s / unlogged.per_s.max(1e-9),
        p99_ratio: match (p99(&logged), p99(&unlogged)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        },
        cpu_ratio: logged.cpu_us_per_read / unlogged.cpu_us_per_read.max(1e-9),
        logged,
        unlogged,
    })
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}ms"))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// The stage's lines of the table.
pub fn table(f: &PrivacyFigures, out: &mut String) {
    use std::fmt::Write as _;
    let r = &f.retention;
    let _ = writeln!(
        out,
        "\nRetention under ingest ({:.0} msg/s ward mix, {} devices, {:.0} s each; pass over {} old fixes)",
        r.rate, r.devices, r.phase_s, r.backlog
    );
    for (name, ph) in [
        ("before the pass", &r.before),
        ("during the pass", &r.during),
        ("after the pass", &r.after),
    ] {
        let _ = writeln!(
            out,
            "  {name:<16} acked {:>8} of {:>8}, errors {:>3}, PUBACK p50 {:>8} p99 {:>8}",
            ph.acked,
            ph.sent,
            ph.errors,
            ms(ph.ack_p50_ms),
            ms(ph.ack_p99_ms)
        );
    }
    let _ = writeln!(
        out,
        "  the pass removed {} fixes in {:.1} s ({}); PUBACK p99 during / around it: {}",
        r.removed,
        r.pass_s,
        if r.pass_within_phase {
            "all of it within the phase"
        } else {
            "it outlasted the phase: its end went unmeasured"
        },
        ratio(r.p99_ratio)
    );
    let a = &f.reads;
    let _ = writeln!(
        out,
        "\nRead audit ({} readers of GET track, {} residents x {} fixes, {} x {:.0} s turns per hub)",
        a.readers, a.residents, a.fixes, a.rounds, a.turn_s
    );
    for (name, r) in [("logged", &a.logged), ("not logged", &a.unlogged)] {
        let _ = writeln!(
            out,
            "  {name:<11} {:>7} reads {:>8.0}/s  p50 {:>8} p99 {:>8}  CPU {:>6.0} us/read  logged {}  errors {}",
            r.reads,
            r.per_s,
            ms(r.latency_ms.map(|q| q.p50)),
            ms(r.latency_ms.map(|q| q.p99)),
            r.cpu_us_per_read,
            r.logged,
            r.errors
        );
    }
    let _ = writeln!(
        out,
        "  logged / not logged: reads/s {:.2}, p99 {}, CPU per read {:.2}",
        a.per_s_ratio,
        ratio(a.p99_ratio),
        a.cpu_ratio
    );
}
