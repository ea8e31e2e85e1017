//! Playing simulated residents against the hub in (compressed) real time, watching the alerts
//! it raises, and checking them against what each resident should have caused.
//!
//! Order of a run, chosen so that compressed thresholds never judge a moment the simulator
//! did not play: connect every device (each says `{"online": true}`), send what happens at the
//! first instant (fresh activity), wait for the hub's acks, and only then switch each resident
//! to the run's rule settings, followed at once by a heartbeat from each of its devices.
//! When a resident's story ends (a scenario mixed into a longer fleet run ends first) it gets
//! real-time settings back and its devices say goodbye with DISCONNECT, so that devices quiet
//! only because their story is over are not judged on compressed time.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use mimamori_protocol::{Alert, AlertKind, AlertState, RuleSettings};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{self, Carrier, Client, Encoder, Identity, Wire};
use crate::expect::{self, Expectation, Raised};
use crate::fleet::FleetResident;
use crate::home::Role;
use crate::hub::HubApi;
use crate::mqtt::{Counters, DeviceLink, DeviceLogin, Speech};
use crate::report::Reporter;
use crate::scenario::{Act, Expected};
use crate::timeline::{Msg, Note};

/// One simulated resident and what to play for them.
#[derive(Debug, Clone)]
pub struct Player {
    pub resident: FleetResident,
    /// How the resident is named in the output.
    pub label: String,
    pub speed: f64,
    /// Simulated local time of day at the start, in seconds after midnight (for the clock shown).
    pub start_tod: f64,
    /// Partial rule settings while playing.
    pub rules: Value,
    pub acts: Vec<Act>,
    pub expect: Vec<Expected>,
    /// The client the home's devices speak as.
    pub client: Client,
}

/// Where the devices connect and how long to wait for the hub.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The hub's HTTP address, for OsmAnd reports.
    pub hub: String,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// Longest wait for an alert an act waits for.
    pub wait: Duration,
    /// How long an awaited alert stays as raised before the story goes on, unless staff
    /// acknowledge it sooner (a demo's visitors get the time to do it).
    pub resolve_after: Duration,
}

/// What the hub raised for one resident, against what it should have.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub resident: String,
    pub resident_id: i64,
    pub expected: Vec<String>,
    pub raised: Vec<String>,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// Raised, but with another severity or end than expected.
    pub differing: Vec<String>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub residents: usize,
    pub devices: usize,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub verdicts: Vec<Verdict>,
    /// True when every resident got exactly the alerts expected.
    pub as_expected: bool,
}

/// One home's devices as they reach the hub: its connections, what they speak, and HTTP.
struct Home {
    /// The devices with an MQTT connection of their own.
    links: BTreeMap<Role, DeviceLink>,
    /// Every device of the home, connected or not.
    roles: Vec<Role>,
    encoder: Encoder,
    http: reqwest::Client,
    osmand_url: String,
    counters: Arc<Counters>,
}

impl Home {
    /// Sends one message as the device's client, or cuts or restores its power.
    async fn send(&mut self, role: Role, msg: &Msg) {
        let has_link = self.encoder.connects(role);
        match msg {
            Msg::PowerLoss if has_link => {
                if let Some(link) = self.links.get(&role) {
                    link.power_loss();
                }
                return;
            }
            Msg::PowerBack if has_link => {
                if let Some(link) = self.links.get_mut(&role) {
                    if link.power_back().await.is_err() {
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return;
            }
            _ => {}
        }
        let now_s = chrono::Utc::now().timestamp();
        for wire in self.encoder.encode(role, msg, now_s) {
            // A failed send is counted; the run goes on as a real fleet would.
            match wire {
                Wire::Mqtt {
                    topic,
                    payload,
                    retain,
                } => {
                    let via = self.encoder.connection_of(role);
                    if let Some(link) = via.and_then(|r| self.links.get(&r)) {
                        let _ = link.publish_to(&topic, payload, retain).await;
                    }
                }
                Wire::Via {
                    via,
                    topic,
                    payload,
                } => {
                    if let Some(link) = self.links.get(&via) {
                        let _ = link.publish_to(&topic, payload, false).await;
                    }
                }
                Wire::Osmand { query } => self.report(&query).await,
            }
        }
    }

    /// One OsmAnd report; the hub answers 200 once the fix is stored.
    async fn report(&self, query: &str) {
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}?{query}", self.osmand_url);
        let stored = match self.http.get(&url).send().await {
            Ok(res) => res.status().is_success(),
            Err(_) => false,
        };
        let counter = if stored {
            &self.counters.acked
        } else {
            &self.counters.errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A heartbeat from every device that is not `silent`.
    async fn beat(&mut self, silent: &[Role]) {
        for role in self.roles.clone() {
            if !silent.contains(&role) {
                self.send(role, &Msg::Heartbeat { battery: None }).await;
            }
        }
    }

    async fn close(self) {
        for (_, link) in self.links {
            link.close().await;
        }
    }
}

/// Plays every player to the end and returns the verdict.
pub async fn run(
    api: &HubApi,
    players: Vec<Player>,
    cfg: &RunConfig,
    rep: Reporter,
) -> Result<Outcome> {
    let baseline = api.alerts().await?.iter().map(|a| a.id).max().unwrap_or(0);
    let counters = Arc::new(Counters::default());
    let mut homes = connect_all(&players, cfg, &counters).await?;
    let devices: usize = players.iter().map(|p| p.resident.devices.len()).sum();
    rep.progress(&format!(
        "{} residents, {devices} devices connected",
        players.len()
    ));
    for (p, home) in players.iter().zip(homes.iter_mut()) {
        for e in p
            .acts
            .first()
            .map_or(&[][..], |a| &a.timeline.emissions[..])
            .iter()
            .take_while(|e| e.at <= 0.0)
        {
            home.send(e.role, &e.msg).await;
        }
    }
    settle(&counters, Duration::from_secs(30)).await;

    let (alerts_tx, alerts_rx) = watch::channel(Vec::<Alert>::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let names: BTreeMap<i64, String> = players
        .iter()
        .map(|p| (p.resident.id, p.label.clone()))
        .collect();
    let watcher = tokio::spawn(watch_alerts(
        api.clone(),
        baseline,
        names,
        alerts_tx,
        stop_rx,
        counters.clone(),
        rep,
    ));

    let mut tasks = JoinSet::new();
    for (i, (p, mut home)) in players.iter().cloned().zip(homes.drain(..)).enumerate() {
        let (api, rx, wait, linger) = (api.clone(), alerts_rx.clone(), cfg.wait, cfg.resolve_after);
        tasks.spawn(async move {
            // The run's settings, then at once a word from every device: a compressed offline
            // threshold counts from the last message, which must not be older than the switch.
            if let Err(e) = api.patch_rules(p.resident.id, &p.rules).await {
                return (i, Some(home), Some(format!("{}: {e:#}", p.label)));
            }
            home.beat(&[]).await;
            let id = p.resident.id;
            let home = play(p, home, rx, wait, linger, rep).await;
            // This resident's story is over, though others may still play: real-time settings
            // and a goodbye, so that its quiet devices are not judged on compressed time.
            let failed = match serde_json::to_value(RuleSettings::default()) {
                Ok(real) => api
                    .patch_rules(id, &real)
                    .await
                    .err()
                    .map(|e| format!("{e:#}")),
                Err(e) => Some(e.to_string()),
            };
            home.close().await;
            (i, None, failed)
        });
    }
    let mut back: Vec<Option<Home>> = (0..players.len()).map(|_| None).collect();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, home, failed) = done?;
        back[i] = home;
        failures.extend(failed);
    }
    if !failures.is_empty() {
        for home in back.into_iter().flatten() {
            home.close().await;
        }
        anyhow::bail!(
            "cannot change the residents' rule settings: {}",
            failures.join("; ")
        );
    }
    settle(&counters, Duration::from_secs(10)).await;
    let _ = stop_tx.send(true);
    let _ = watcher.await;

    let mut verdicts = Vec::with_capacity(players.len());
    for p in &players {
        let raised: Vec<Alert> = api
            .resident_alerts(p.resident.id)
            .await?
            .into_iter()
            // An alert of an earlier run still open stands for this run's, as in the watch.
            .filter(|a| a.id > baseline || a.state != AlertState::Resolved)
            .collect();
        verdicts.push(verdict(p, &raised));
    }
    Ok(Outcome {
        residents: players.len(),
        devices,
        sent: counters.sent.load(Ordering::Relaxed),
        acked: counters.acked.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        as_expected: verdicts
            .iter()
            .all(|v| v.missing.is_empty() && v.unexpected.is_empty() && v.differing.is_empty()),
        verdicts,
    })
}

async fn connect_all(
    players: &[Player],
    cfg: &RunConfig,
    counters: &Arc<Counters>,
) -> Result<Vec<Home>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut homes: Vec<Home> = players
        .iter()
        .map(|p| Home {
            links: BTreeMap::new(),
            roles: p.resident.roles(),
            encoder: encoder_of(p),
            http: http.clone(),
            osmand_url: format!("{}/api/v1/osmand", cfg.hub.trim_end_matches('/')),
            counters: counters.clone(),
        })
        .collect();
    let mut set = JoinSet::new();
    let now_s = chrono::Utc::now().timestamp();
    for (i, (p, home)) in players.iter().zip(&homes).enumerate() {
        for d in &p.resident.devices {
            if !home.encoder.connects(d.role) {
                continue;
            }
            let login = DeviceLogin {
                host: cfg.mqtt_host.clone(),
                port: cfg.mqtt_port,
                device_id: d.mqtt.username.clone(),
                password: d.mqtt.password.clone(),
            };
            let speech = speech_of(&home.encoder, d.role, now_s);
            let (role, counters) = (d.role, counters.clone());
            set.spawn(async move { (i, role, DeviceLink::connect(login, speech, counters).await) });
        }
    }
    while let Some(done) = set.join_next().await {
        let (i, role, link) = done?;
        homes[i].links.insert(role, link?);
    }
    Ok(homes)
}

fn encoder_of(p: &Player) -> Encoder {
    let ids = p
        .resident
        .devices
        .iter()
        .map(|d| Identity {
            role: d.role,
            device_id: d.id.clone(),
            secret: d.mqtt.password.clone(),
        })
        .collect();
    Encoder::new(p.client, ids, p.resident.geo.home)
}

fn speech_of(encoder: &Encoder, role: Role, now_s: i64) -> Speech {
    let owntracks = encoder.client().carrier(role) == Carrier::OwnTracks;
    Speech {
        will: encoder.will(role, now_s),
        hello: encoder.hello(role),
        subscribe: owntracks.then(|| client::owntracks_cmd_topic(encoder.id_of(role))),
        persistent: owntracks,
    }
}

/// Waits until the hub acknowledged what was sent, or `within` passed.
async fn settle(c: &Counters, within: Duration) {
    let until = Instant::now() + within;
    while c.acked.load(Ordering::Relaxed) + c.errors.load(Ordering::Relaxed)
        < c.sent.load(Ordering::Relaxed)
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// "HH:MM:SS" of a simulated time of day, with the day number after the first day.
pub fn clock(tod: f64) -> String {
    let s = tod.max(0.0) as u64;
    let (day, rest) = (s / 86_400, s % 86_400);
    let hms = format!("{:02}:{:02}:{:02}", rest / 3600, rest / 60 % 60, rest % 60);
    if day == 0 {
        hms
    } else {
        format!("day {} {hms}", day + 1)
    }
}

/// Plays one resident's acts; returns the home for closing its connections.
async fn play(
    p: Player,
    mut home: Home,
    alerts: watch::Receiver<Vec<Alert>>,
    wait: Duration,
    linger: Duration,
    rep: Reporter,
) -> Home {
    let mut sim_before = 0.0;
    for (k, act) in p.acts.iter().enumerate() {
        let start = Instant::now();
        let real = |at: f64| start + Duration::from_secs_f64((at / p.speed).max(0.0));
        let mut notes = act.timeline.notes.iter().peekable();
        let skip = if k == 0 {
            act.timeline
                .emissions
                .iter()
                .take_while(|e| e.at <= 0.0)
                .count()
        } else {
            0
        };
        for e in &act.timeline.emissions[skip..] {
            while let Some(n) = notes.next_if(|n| n.at <= e.at) {
                tokio::time::sleep_until(real(n.at)).await;
                say(&p, rep, sim_before, n);
            }
            tokio::time::sleep_until(real(e.at)).await;
            home.send(e.role, &e.msg).await;
        }
        for n in notes {
            tokio::time::sleep_until(real(n.at)).await;
            say(&p, rep, sim_before, n);
        }
        tokio::time::sleep_until(real(act.timeline.end)).await;
        let held = hold(&p, act, &mut home, &alerts, wait, linger, rep).await;
        sim_before += act.timeline.end + held.as_secs_f64() * p.speed;
    }
    home
}

fn say(p: &Player, rep: Reporter, sim_before: f64, n: &Note) {
    let clock = clock(p.start_tod + sim_before + n.at);
    rep.note(&clock, &p.label, &n.text, n.expect.map(AlertKind::as_str));
}

/// Keeps the live devices beating until the hub raised what the act waits for, then for
/// `linger` more unless staff acknowledge every one of those alerts first.
async fn hold(
    p: &Player,
    act: &Act,
    home: &mut Home,
    alerts: &watch::Receiver<Vec<Alert>>,
    wait: Duration,
    linger: Duration,
    rep: Reporter,
) -> Duration {
    let start = Instant::now();
    if act.wait_for.is_empty() {
        return Duration::ZERO;
    }
    let awaited = |a: &&Alert| a.resident_id == p.resident.id && act.wait_for.contains(&a.kind);
    let seen = |all: &[Alert]| {
        act.wait_for.iter().all(|k| {
            all.iter()
                .any(|a| a.resident_id == p.resident.id && a.kind == *k)
        })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !seen(&alerts.borrow()) {
        if start.elapsed() > wait {
            let kinds: Vec<&str> = act.wait_for.iter().map(|k| k.as_str()).collect();
            rep.progress(&format!(
                "           {}: the hub did not raise {} within {wait:?}; going on",
                p.label,
                kinds.join(", ")
            ));
            return start.elapsed();
        }
        tick.tick().await;
        home.beat(&act.silent).await;
    }
    let raised = Instant::now();
    let handled = |all: &[Alert]| {
        all.iter()
            .filter(awaited)
            .all(|a| a.state != AlertState::Open)
    };
    while raised.elapsed() < linger && !handled(&alerts.borrow()) {
        tick.tick().await;
        home.beat(&act.silent).await;
    }
    start.elapsed()
}

/// Polls the hub's alerts, reports every new alert and change of state, and shares them.
async fn watch_alerts(
    api: HubApi,
    baseline: i64,
    names: BTreeMap<i64, String>,
    tx: watch::Sender<Vec<Alert>>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
    rep: Reporter,
) {
    let mut known: BTreeMap<i64, mimamori_protocol::AlertState> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let started = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if let Ok(all) = api.alerts().await {
            // Alerts raised during the run, and those of earlier runs still open: a resident
            // played again while an alert of theirs is open gets no second one.
            let mut new: Vec<Alert> = all
                .into_iter()
                .filter(|a| a.id > baseline || a.state != AlertState::Resolved)
                .collect();
            new.sort_by_key(|a| a.id);
            for a in new.iter().filter(|a| a.id > baseline) {
                if known.insert(a.id, a.state) != Some(a.state) {
                    let who = names
                        .get(&a.resident_id)
                        .cloned()
                        .unwrap_or_else(|| format!("resident {}", a.resident_id));
                    rep.alert(
                        &who,
                        a.kind.as_str(),
                        a.severity.as_str(),
                        a.state.as_str(),
                        a.device_id.as_deref(),
                    );
                }
            }
            let _ = tx.send(new);
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            rep.progress(&format!(
                "           [{:>4.0} s] messages sent {}, acked {}, errors {}",
                started.elapsed().as_secs_f64(),
                counters.sent.load(Ordering::Relaxed),
                counters.acked.load(Ordering::Relaxed),
                counters.errors.load(Ordering::Relaxed)
            ));
        }
    }
}

/// Judges the raised alerts against the expected ones: kind, device, severity and end.
fn verdict(p: &Player, raised: &[Alert]) -> Verdict {
    let device_of = |role: Role| {
        p.resident
            .devices
            .iter()
            .find(|d| d.role == role)
            .map(|d| d.id.clone())
    };
    let expected: Vec<Expectation> = p
        .expect
        .iter()
        .map(|e| Expectation {
            kind: e.kind,
            device: e.role.and_then(device_of),
            severity: Some(e.severity),
            at: None,
            resolution: e.resolution.clone(),
            incident: String::new(),
        })
        .collect();
    let raised: Vec<Raised> = raised.iter().map(Raised::from_alert).collect();
    let j = expect::judge(&expected, &[], &raised);
    Verdict {
        resident: p.label.clone(),
        resident_id: p.resident.id,
        expected: expected.iter().map(expect::describe_expected).collect(),
        raised: raised.iter().map(expect::describe).collect(),
        missing: j.missing,
        unexpected: j.unexpected,
        differing: j.differing,
    }
}

#[cfg(test)]
mod tests {
    use super::clock;

    #[test]
    fn clock_shows_day_after_the_first() {
        assert_eq!(clock(3661.0), "01:01:01");
        assert_eq!(clock(86_400.0 + 60.0), "day 2 00:01:00");
    }
}
