//! The command line: `provision`, `run`, `backfill`, `load`, `record` and `check`. Kept in the library so that other
//! binaries (the test harness, a benchmark) start exactly the same program.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::Timelike;
use clap::{Args, Parser, Subcommand};
use mimamori_protocol::api::{LatLon, NewDevice, NewResident};
use mimamori_protocol::DeviceKind;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

use crate::backfill;
use crate::client::Client;
use crate::expect::{self, Expectations};
use crate::fleet::Fleet;
use crate::home::{self, Role};
use crate::hub::HubApi;
use crate::life::HOUR;
use crate::load;
use crate::mqtt::{host_port, DeviceLogin};
use crate::play::{self, Player, RunConfig};
use crate::provision::{self, FleetSpec};
use crate::record::{self, RecordSpec};
use crate::report::Reporter;
use crate::rules::{self, Stillness};
use crate::scenario::{self, ScenarioName, Setting};

#[derive(Debug, Parser)]
#[command(
    name = "device-sim",
    version,
    about = "Simulated residents, homes and trackers for the Mimamori hub"
)]
pub struct Cli {
    /// Print one JSON object per line instead of sentences.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create residents with homes, safe zones and devices; write their credentials to a fleet file.
    Provision(ProvisionArgs),
    /// Play daily life for a fleet and/or scenarios; with --expect, check the hub's alerts.
    Run(RunArgs),
    /// Open device connections and publish at a fixed total rate.
    Load(LoadArgs),
    /// Send a fleet's last days of motion, backdated, so the hub has a history to show.
    Backfill(BackfillArgs),
    /// Write weeks of one simulated home's life as `hub replay` events (to stdout), with its
    /// resident.json and the alerts the replay should raise.
    Record(RecordArgs),
    /// Check `hub replay`'s output against the alerts a recording should raise; exit 1 if
    /// they differ.
    Check(CheckArgs),
}

/// How to reach the hub.
#[derive(Debug, Clone, Args)]
pub struct HubArgs {
    /// The hub's HTTP address.
    #[arg(long, env = "MIMAMORI_HUB")]
    pub hub: Option<String>,
    /// The hub's MQTT address, host:port.
    #[arg(long, env = "MIMAMORI_MQTT")]
    pub mqtt: Option<String>,
    /// A staff or admin user for the API.
    #[arg(long, env = "MIMAMORI_USER", default_value = "admin")]
    pub user: String,
    /// That user's password.
    #[arg(long, env = "MIMAMORI_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// How many residents to create.
    #[arg(long)]
    pub residents: usize,
    /// Where to write the credentials (readable by you only).
    #[arg(long, default_value = "fleet.json")]
    pub fleet: PathBuf,
    /// Centre of the neighbourhood, "LAT,LON" (default: Nakano, Tokyo).
    #[arg(long, default_value = "35.7074,139.6638")]
    pub centre: String,
    /// Homes lie within this many metres of the centre.
    #[arg(long, default_value_t = 1500.0)]
    pub spread_m: f64,
    /// Share of residents who carry a GPS tracker.
    #[arg(long, default_value_t = 0.5)]
    pub gps_share: f64,
    /// Share of safe zones drawn as polygons rather than circles.
    #[arg(long, default_value_t = 0.3)]
    pub polygon_share: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The client the devices speak as; zigbee2mqtt maps each home's sensors on its gateway.
    #[arg(long = "as", value_enum, default_value_t = Client::Native)]
    pub speak_as: Client,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// The fleet whose residents live their daily life.
    #[arg(long)]
    pub fleet: Option<PathBuf>,
    /// Scenarios to play, each with a resident of its own (repeat the flag for several).
    #[arg(long, value_enum)]
    pub scenario: Vec<ScenarioName>,
    /// Simulated days of daily life for the fleet.
    #[arg(long, default_value_t = 1.0)]
    pub days: f64,
    /// Simulated local time the fleet's day starts at, "HH:MM" (default: now).
    #[arg(long)]
    pub start: Option<String>,
    /// Time compression: 60 plays an hour in a minute; rule thresholds scale with it.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Check that the hub raised exactly the expected alerts; exit 1 otherwise.
    #[arg(long)]
    pub expect: bool,
    /// Longest wait, in seconds, for an alert a scenario waits for.
    #[arg(long, default_value_t = 120)]
    pub wait_s: u64,
    /// The client the devices speak as (default: the fleet's, else native).
    #[arg(long = "as", value_enum)]
    pub speak_as: Option<Client>,
    /// Play each scenario with the resident the fleet file keeps for it (created and saved
    /// on the first such run), so that repeated runs add nobody to the hub. Needs --fleet.
    #[arg(long, requires = "fleet")]
    pub same_residents: bool,
    /// Real seconds an alert a scenario waits for stays as raised before the story goes on
    /// (the carer arrives and it resolves), unless staff acknowledge it sooner.
    #[arg(long, default_value_t = 0)]
    pub resolve_after_s: u64,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// The fleet whose history is sent.
    #[arg(long)]
    pub fleet: PathBuf,
    /// How many days back from now.
    #[arg(long, default_value_t = 7.0)]
    pub days: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Days to record (at most 1000).
    #[arg(long)]
    pub days: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The local date the recording starts on, at midnight (Asia/Tokyo).
    #[arg(long, default_value = "2026-01-05")]
    pub start: String,
    /// Incidents the seed places: in turn a fall, an evening collapse, a long bath, a morning
    /// not up, a night exit and an SOS press, in an order the seed chooses.
    #[arg(long, default_value_t = 0)]
    pub incidents: usize,
    /// Where to write the home's resident.json for `hub replay --resident`.
    #[arg(long)]
    pub resident_out: Option<PathBuf>,
    /// Where to write the alerts the replay should raise, for `device-sim check`.
    #[arg(long)]
    pub expect_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The alerts the replay should raise (`record --expect-out`).
    #[arg(long)]
    pub expect: PathBuf,
    /// `hub replay`'s output; standard input when not given.
    #[arg(long)]
    pub alerts: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Device connections to open.
    #[arg(long)]
    pub devices: usize,
    /// Messages per second, all devices together.
    #[arg(long)]
    pub rate: f64,
    /// How long to publish, e.g. "30s", "2m" or plain seconds.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,
    /// Use this fleet's devices instead of registering new ones.
    #[arg(long)]
    pub fleet: Option<PathBuf>,
}

/// Parses "30s", "2m", "1h" or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 2m or 1h"))?;
    let mult = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("{s:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(n * mult))
}

/// The exit code when the hub refused the API password: scripts stop instead of retrying.
pub const EXIT_LOGIN_REFUSED: u8 = 3;

/// Parses the command line and runs the command; exit code 1 on error or failed expectation,
/// [`EXIT_LOGIN_REFUSED`] when the hub refused the password.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rep = Reporter { json: cli.json };
    match runtime.block_on(dispatch(cli.command, rep)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<crate::hub::LoginRefused>().is_some() {
                ExitCode::from(EXIT_LOGIN_REFUSED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn dispatch(cmd: Command, rep: Reporter) -> Result<bool> {
    match cmd {
        Command::Provision(a) => provision_cmd(a, rep).await,
        Command::Run(a) => run_cmd(a, rep).await,
        Command::Load(a) => load_cmd(a, rep).await,
        Command::Backfill(a) => backfill_cmd(a, rep).await,
        Command::Record(a) => record_cmd(a, rep),
        Command::Check(a) => check_cmd(a, rep),
    }
}

/// The hub's HTTP and MQTT addresses: flags and environment first, then the fleet file.
fn addresses(h: &HubArgs, fleet: Option<&Fleet>) -> Result<(String, String)> {
    let hub = h.hub.clone().or_else(|| fleet.map(|f| f.hub.clone()));
    let mqtt = h.mqtt.clone().or_else(|| fleet.map(|f| f.mqtt.clone()));
    match (hub, mqtt) {
        (Some(hub), Some(mqtt)) => Ok((hub, mqtt)),
        _ => bail!("say where the hub is: --hub http://HOST:PORT and --mqtt HOST:PORT (or MIMAMORI_HUB, MIMAMORI_MQTT)"),
    }
}

async fn login(h: &HubArgs, hub: &str) -> Result<HubApi> {
    let password = h
        .password
        .as_deref()
        .ok_or_else(|| anyhow!("the API needs a password: --password or MIMAMORI_PASSWORD"))?;
    HubApi::login(hub, &h.user, password).await
}

fn parse_centre(s: &str) -> Result<LatLon> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| anyhow!("--centre must be LAT,LON, got {s:?}"))?;
    let lat: f64 = lat
        .trim()
        .parse()
        .with_context(|| format!("--centre: bad latitude {lat:?}"))?;
    let lon: f64 = lon
        .trim()
        .parse()
        .with_context(|| format!("--centre: bad longitude {lon:?}"))?;
    if !((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
        bail!("--centre {s:?} is not a place on Earth");
    }
    Ok(LatLon { lat, lon })
}

async fn provision_cmd(a: ProvisionArgs, rep: Reporter) -> Result<bool> {
    let (hub, mqtt) = addresses(&a.hub, None)?;
    let api = login(&a.hub, &hub).await?;
    let spec = FleetSpec {
        residents: a.residents,
        centre: parse_centre(&a.centre)?,
        spread_m: a.spread_m,
        gps_share: a.gps_share,
        polygon_share: a.polygon_share,
        seed: a.seed,
        client: a.speak_as,
    };
    let mut rng = StdRng::seed_from_u64(a.seed);
    let fleet = provision::fleet(&api, &mut rng, &spec, &hub, &mqtt, |r| {
        let tracker = if r.roles().contains(&Role::Tracker) {
            ", GPS tracker"
        } else {
            ""
        };
        let zone = if r.geo.zone.polygon.is_some() {
            "polygon"
        } else {
            "circle"
        };
        rep.progress(&format!(
            "resident {} {}: {} devices{tracker}, {zone} safe zone",
            r.id,
            r.name,
            r.devices.len()
        ));
    })
    .await?;
    fleet.save(&a.fleet)?;
    let devices: usize = fleet.residents.iter().map(|r| r.devices.len()).sum();
    let summary = json!({"residents": fleet.residents.len(), "devices": devices, "fleet": a.fleet.display().to_string()});
    rep.summary(
        &summary,
        &[format!(
            "{} residents and {devices} devices; credentials in {}",
            fleet.residents.len(),
            a.fleet.display()
        )],
    );
    Ok(true)
}

/// The real local time of day in the simulator's time zone, in seconds after midnight.
fn local_now_tod() -> f64 {
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Tokyo);
    f64::from(now.num_seconds_from_midnight()) + f64::from(now.nanosecond() % 1_000_000_000) / 1e9
}

fn parse_hhmm(s: &str) -> Result<f64> {
    let t = mimamori_protocol::settings::LocalTime::parse(s)
        .ok_or_else(|| anyhow!("--start must be HH:MM, got {s:?}"))?;
    Ok(f64::from(t.minutes_of_day()) * 60.0)
}

/// The simulated time of day a scenario's story starts at.
fn story_start(name: ScenarioName, now_tod: f64) -> f64 {
    match name {
        ScenarioName::Fall => 10.0 * HOUR,
        ScenarioName::NoMorning => now_tod,
        ScenarioName::Wander => 2.5 * HOUR,
        ScenarioName::GpsJitter => 15.0 * HOUR,
        ScenarioName::BatteryDies => 9.0 * HOUR,
        ScenarioName::Sos => 19.0 * HOUR,
        ScenarioName::OfflineGateway => 14.0 * HOUR,
    }
}

async fn run_cmd(a: RunArgs, rep: Reporter) -> Result<bool> {
    if !(a.speed.is_finite() && a.speed >= 1.0) {
        bail!("--speed must be 1 or more");
    }
    if !(a.days.is_finite() && a.days > 0.0) {
        bail!("--days must be positive");
    }
    let mut fleet = a.fleet.as_deref().map(Fleet::load).transpose()?;
    if fleet.is_none() && a.scenario.is_empty() {
        bail!("nothing to run: give --fleet FILE, --scenario NAME, or both");
    }
    let client = speaking_as(a.speak_as, fleet.as_ref(), &a.scenario)?;
    let (hub, mqtt) = addresses(&a.hub, fleet.as_ref())?;
    let (mqtt_host, mqtt_port) = host_port(&mqtt)?;
    let api = login(&a.hub, &hub).await?;
    let start_tod = a
        .start
        .as_deref()
        .map(parse_hhmm)
        .transpose()?
        .unwrap_or_else(local_now_tod);
    let mut players = Vec::new();
    if let Some(f) = &fleet {
        for (i, r) in f.residents.iter().enumerate() {
            let mut rng =
                StdRng::seed_from_u64(a.seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
            let act = scenario::daily(&mut rng, &r.geo, &r.roles(), start_tod, a.days);
            players.push(Player {
                resident: r.clone(),
                label: r.name.clone(),
                speed: a.speed,
                start_tod,
                rules: rules::scaled(a.speed, Stillness::Night),
                acts: vec![act],
                expect: vec![],
                client,
            });
        }
    }
    let centre = fleet.as_ref().map_or(
        LatLon {
            lat: 35.7074,
            lon: 139.6638,
        },
        |f| f.centre,
    );
    let mut cast_grew = false;
    for (i, name) in a.scenario.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(a.seed.wrapping_add(1_000 + i as u64));
        let fresh_geo = home::place_home(&mut rng, centre, 1500.0, 0.0);
        let kept = fleet
            .as_ref()
            .filter(|_| a.same_residents)
            .and_then(|f| f.scenario_residents.get(name.as_str()))
            .cloned();
        let geo = kept.as_ref().map_or(fresh_geo, |r| r.geo.clone());
        let now_tod = local_now_tod();
        let s = scenario::script(
            &mut rng,
            *name,
            Setting {
                geo: &geo,
                speed: a.speed,
                now_tod,
            },
        );
        let resident = match kept {
            Some(r) => r,
            None => {
                let person = match &fleet {
                    Some(f) => provision::unique_name(&mut rng, |n| {
                        f.residents.iter().any(|r| r.name.starts_with(n))
                            || f.scenario_residents.values().any(|r| r.name.starts_with(n))
                    }),
                    None => home::resident_name(&mut rng),
                };
                let made = provision::resident(
                    &api,
                    format!("{person} ({})", name.as_str()),
                    geo,
                    &s.roles,
                    client,
                )
                .await?;
                if let (true, Some(f)) = (a.same_residents, fleet.as_mut()) {
                    f.scenario_residents
                        .insert(name.as_str().to_string(), made.clone());
                    cast_grew = true;
                }
                made
            }
        };
        rep.progress(&format!(
            "scenario {}: resident {} {} at x{}",
            name.as_str(),
            resident.id,
            resident.name,
            s.speed
        ));
        players.push(Player {
            label: resident.name.clone(),
            resident,
            speed: s.speed,
            start_tod: story_start(*name, now_tod),
            rules: s.rules,
            acts: s.acts,
            expect: s.expect,
            client,
        });
    }
    if cast_grew {
        if let (Some(f), Some(path)) = (&fleet, a.fleet.as_deref()) {
            f.save(path)?;
        }
    }
    let cfg = RunConfig {
        hub: hub.clone(),
        mqtt_host,
        mqtt_port,
        wait: Duration::from_secs(a.wait_s),
        resolve_after: Duration::from_secs(a.resolve_after_s),
    };
    let out = play::run(&api, players, &cfg, rep).await?;
    let mut lines = vec![format!(
        "{} residents, {} devices: {} messages sent, {} acked, {} errors",
        out.residents, out.devices, out.sent, out.acked, out.errors
    )];
    for v in &out.verdicts {
        let ok = v.missing.is_empty() && v.unexpected.is_empty() && v.differing.is_empty();
        if ok && v.expected.is_empty() && fleet.is_some() && !a.expect {
            continue;
        }
        let mut line = format!(
            "{} {}: expected [{}], raised [{}]",
            if ok { "ok  " } else { "FAIL" },
            v.resident,
            v.expected.join(", "),
            v.raised.join(", ")
        );
        if !v.missing.is_empty() {
            line.push_str(&format!("; missing [{}]", v.missing.join(", ")));
        }
        if !v.unexpected.is_empty() {
            line.push_str(&format!("; unexpected [{}]", v.unexpected.join(", ")));
        }
        if !v.differing.is_empty() {
            line.push_str(&format!("; differing [{}]", v.differing.join(", ")));
        }
        lines.push(line);
    }
    lines.push(if out.as_expected {
        "the hub raised exactly the expected alerts".into()
    } else {
        "the hub's alerts differ from the expected ones".into()
    });
    rep.summary(&serde_json::to_value(&out)?, &lines);
    Ok(out.as_expected || !a.expect)
}

/// The client a run speaks as: `--as`, else the fleet's. A fleet provisioned for one client
/// cannot speak as another (Zigbee2MQTT needs its mappings), and a Zigbee2MQTT home whose
/// gateway loses power loses its sensors too, which `offline-gateway` does not expect.
fn speaking_as(
    flag: Option<Client>,
    fleet: Option<&Fleet>,
    scenarios: &[ScenarioName],
) -> Result<Client> {
    let client = match (flag, fleet) {
        (Some(c), Some(f)) if c != f.client => bail!(
            "the fleet was provisioned to speak as {}, not {}: provision another with --as {}",
            f.client.as_str(),
            c.as_str(),
            c.as_str()
        ),
        (Some(c), _) => c,
        (None, Some(f)) => f.client,
        (None, None) => Client::Native,
    };
    let bridged = matches!(
        client,
        Client::Zigbee2mqtt | Client::Chirpstack | Client::Echonet
    );
    if bridged && scenarios.contains(&ScenarioName::OfflineGateway) {
        bail!("--scenario offline-gateway cannot play --as {}: the sensors behind a gateway without power fall silent too, which the scenario does not expect", client.as_str());
    }
    Ok(client)
}

async fn backfill_cmd(a: BackfillArgs, rep: Reporter) -> Result<bool> {
    if !(a.days.is_finite() && a.days > 0.0 && a.days <= 90.0) {
        bail!("--days must be more than 0 and at most 90");
    }
    let fleet = Fleet::load(&a.fleet)?;
    let (_, mqtt) = addresses(&a.hub, Some(&fleet))?;
    let (host, port) = host_port(&mqtt)?;
    rep.progress(&format!(
        "sending {} days of motion for {} residents",
        a.days,
        fleet.residents.len()
    ));
    let report = backfill::run(&fleet, &host, port, a.days, a.seed, chrono::Utc::now()).await?;
    let line = format!(
        "{} residents, {} days back: {} readings sent, {} acked, {} errors",
        report.residents, report.days, report.sent, report.acked, report.errors
    );
    rep.summary(&serde_json::to_value(&report)?, &[line]);
    Ok(report.errors == 0 && report.acked == report.sent)
}

fn record_cmd(a: RecordArgs, rep: Reporter) -> Result<bool> {
    let start = chrono::NaiveDate::parse_from_str(&a.start, "%Y-%m-%d")
        .with_context(|| format!("--start must be a date like 2026-01-05, got {:?}", a.start))?;
    let rec = record::record(&RecordSpec {
        days: a.days,
        seed: a.seed,
        start,
        incidents: a.incidents,
    })?;
    if let Some(path) = &a.resident_out {
        write_json(path, &rec.resident)?;
    }
    if let Some(path) = &a.expect_out {
        write_json(path, &serde_json::to_value(&rec.expected)?)?;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in &rec.events {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    // The events own stdout: what was recorded goes to stderr.
    let s = &rec.summary;
    if rep.json {
        eprintln!("{}", json!({"type": "summary", "summary": s}));
    } else {
        eprintln!(
            "{} days, {} events: {} day-service visits, {} long outings, {} night away (paused), {} battery swaps, {} incidents",
            s.days,
            s.events,
            s.day_service_visits,
            s.long_outings,
            s.nights_away,
            s.battery_swaps,
            s.incidents.len()
        );
        for i in &s.incidents {
            eprintln!("  {i}");
        }
    }
    Ok(true)
}

fn write_json(path: &std::path::Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v)? + "\n";
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn check_cmd(a: CheckArgs, rep: Reporter) -> Result<bool> {
    let text = std::fs::read_to_string(&a.expect)
        .with_context(|| format!("cannot read {}", a.expect.display()))?;
    let expected: Expectations =
        serde_json::from_str(&text).with_context(|| format!("{}", a.expect.display()))?;
    let (raised, summary) = match &a.alerts {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            expect::read_replay(std::io::BufReader::new(file))
        }
        None => expect::read_replay(std::io::stdin().lock()),
    }?;
    if summary.is_none() {
        bail!("the replay's output ends without its summary line: did hub replay finish?");
    }
    let j = expect::judge(&expected.alerts, &expected.ignore, &raised);
    let mut lines = Vec::new();
    for (tag, list) in [
        ("ok        ", &j.matched),
        ("DIFFERS   ", &j.differing),
        ("MISSING   ", &j.missing),
        ("UNEXPECTED", &j.unexpected),
    ] {
        lines.extend(list.iter().map(|l| format!("{tag} {l}")));
    }
    let ignored: Vec<String> = j
        .ignored
        .iter()
        .map(|(k, n)| format!("{n} {}", k.as_str()))
        .collect();
    lines.push(format!(
        "{} of {} expected alerts as expected, {} differing, {} missing, {} unexpected{}",
        j.matched.len(),
        expected.alerts.len(),
        j.differing.len(),
        j.missing.len(),
        j.unexpected.len(),
        if ignored.is_empty() {
            String::new()
        } else {
            format!(" (not judged: {})", ignored.join(", "))
        }
    ));
    let ok = j.as_expected();
    let value = json!({"as_expected": ok, "judgement": j});
    rep.summary(&value, &lines);
    Ok(ok)
}

async fn load_cmd(a: LoadArgs, rep: Reporter) -> Result<bool> {
    if a.devices == 0 {
        bail!("--devices must be at least 1");
    }
    let fleet = a.fleet.as_deref().map(Fleet::load).transpose()?;
    let (hub, mqtt) = addresses(&a.hub, fleet.as_ref())?;
    let (host, port) = host_port(&mqtt)?;
    let creds: Vec<(String, String)> = match &fleet {
        Some(f) => {
            let all: Vec<(String, String)> = f
                .residents
                .iter()
                .flat_map(|r| &r.devices)
                .map(|d| (d.mqtt.username.clone(), d.mqtt.password.clone()))
                .collect();
            if all.len() < a.devices {
                bail!(
                    "the fleet has {} devices, fewer than --devices {}",
                    all.len(),
                    a.devices
                );
            }
            all.into_iter().take(a.devices).collect()
        }
        None => register_load_devices(&a.hub, &hub, a.devices, rep).await?,
    };
    let devices = creds
        .into_iter()
        .map(|(id, password)| DeviceLogin {
            host: host.clone(),
            port,
            device_id: id,
            password,
        })
        .collect();
    let report = load::run(load::LoadConfig {
        devices,
        rate: a.rate,
        duration: a.duration,
        progress: !rep.json,
    })
    .await?;
    let mut lines = vec![format!(
        "{} connections ({} failed), {:.0} msg/s for {:.0} s: sent {}, acked {}, errors {}",
        report.connections,
        report.connect_errors,
        report.target_rate,
        report.duration_s,
        report.sent,
        report.acked,
        report.errors
    )];
    for s in &report.per_second {
        lines.push(format!(
            "  second {:>3}: sent {:>6}, acked {:>6}",
            s.second, s.sent, s.acked
        ));
    }
    if let (Some(p50), Some(p99)) = (report.ack_latency_ms_p50, report.ack_latency_ms_p99) {
        lines.push(format!("PUBACK latency: p50 {p50:.1} ms, p99 {p99:.1} ms"));
    }
    rep.summary(&serde_json::to_value(&report)?, &lines);
    Ok(report.errors == 0 && report.connect_errors == 0)
}

/// Devices per load-test resident: a home's handful, so that the rules engine sees the
/// shape of a real ward rather than one resident with thousands of sensors.
const LOAD_DEVICES_PER_RESIDENT: usize = 4;

/// Registers `n` motion sensors, four to a resident, on residents named for the load test.
async fn register_load_devices(
    h: &HubArgs,
    hub: &str,
    n: usize,
    rep: Reporter,
) -> Result<Vec<(String, String)>> {
    let api = login(h, hub).await?;
    let residents = n.div_ceil(LOAD_DEVICES_PER_RESIDENT);
    rep.progress(&format!("registering {n} devices on {residents} residents"));
    let mut out = Vec::with_capacity(n);
    let mut resident_id = 0;
    for i in 0..n {
        if i % LOAD_DEVICES_PER_RESIDENT == 0 {
            let home = i / LOAD_DEVICES_PER_RESIDENT + 1;
            resident_id = api
                .create_resident(&NewResident {
                    name: format!("load test home {home} of {residents}"),
                    timezone: None,
                    home: None,
                    rules: None,
                })
                .await?
                .id;
        }
        let d = api
            .create_device(&NewDevice {
                resident_id,
                kind: DeviceKind::Motion,
                name: format!("load sensor {i}"),
                room: None,
                role: None,
            })
            .await?;
        out.push((d.mqtt.username, d.mqtt.password));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn the_command_line_parses_the_documented_forms() {
        let c = Cli::try_parse_from([
            "device-sim",
            "run",
            "--scenario",
            "fall",
            "--scenario",
            "gps-jitter",
            "--speed",
            "1800",
            "--expect",
        ]);
        assert!(c.is_ok());
        assert!(Cli::try_parse_from(["device-sim", "run", "--scenario", "flood"]).is_err());
        assert!(Cli::try_parse_from([
            "device-sim",
            "run",
            "--as",
            "owntracks",
            "--scenario",
            "wander"
        ])
        .is_ok());
        assert!(Cli::try_parse_from([
            "device-sim",
            "provision",
            "--as",
            "zigbee2mqtt",
            "--residents",
            "3"
        ])
        .is_ok());
        assert!(
            Cli::try_parse_from(["device-sim", "run", "--as", "lora", "--scenario", "sos"])
                .is_err()
        );
        assert!(parse_centre("35.7,139.6").is_ok());
        assert!(parse_centre("95,0").is_err());
    }

    #[test]
    fn a_run_speaks_as_its_fleet_and_refuses_what_cannot_play() -> Result<()> {
        let fleet = |client| Fleet {
            version: crate::fleet::FORMAT_VERSION,
            hub: String::new(),
            mqtt: String::new(),
            centre: LatLon { lat: 0.0, lon: 0.0 },
            seed: 1,
            client,
            residents: vec![],
            scenario_residents: Default::default(),
        };
        let z2m = fleet(Client::Zigbee2mqtt);
        assert_eq!(speaking_as(None, None, &[])?, Client::Native);
        assert_eq!(speaking_as(None, Some(&z2m), &[])?, Client::Zigbee2mqtt);
        assert_eq!(
            speaking_as(Some(Client::Osmand), None, &[])?,
            Client::Osmand
        );
        assert!(speaking_as(Some(Client::Native), Some(&z2m), &[]).is_err());
        let cut = [ScenarioName::OfflineGateway];
        assert!(speaking_as(Some(Client::Zigbee2mqtt), None, &cut).is_err());
        assert_eq!(
            speaking_as(Some(Client::Owntracks), None, &cut)?,
            Client::Owntracks
        );
        Ok(())
    }
}
