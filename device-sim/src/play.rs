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
use mimamori_protocol::topic::MessageKind;
use mimamori_protocol::{Alert, AlertKind, RuleSettings};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fleet::FleetResident;
use crate::home::Role;
use crate::hub::HubApi;
use crate::mqtt::{Counters, DeviceLink, DeviceLogin};
use crate::report::Reporter;
use crate::scenario::{Act, Expected};
use crate::timeline::{Emission, Msg, Note};

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
}

/// Where the devices connect and how long to wait for the hub.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// Longest wait for an alert an act waits for.
    pub wait: Duration,
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

type Links = BTreeMap<Role, DeviceLink>;

/// Plays every player to the end and returns the verdict.
pub async fn run(
    api: &HubApi,
    players: Vec<Player>,
    cfg: &RunConfig,
    rep: Reporter,
) -> Result<Outcome> {
    let baseline = api.alerts().await?.iter().map(|a| a.id).max().unwrap_or(0);
    let counters = Arc::new(Counters::default());
    let mut links = connect_all(&players, cfg, &counters).await?;
    let devices: usize = links.iter().map(BTreeMap::len).sum();
    rep.progress(&format!(
        "{} residents, {devices} devices connected",
        players.len()
    ));
    for (p, l) in players.iter().zip(&links) {
        for e in p
            .acts
            .first()
            .map_or(&[][..], |a| &a.timeline.emissions[..])
            .iter()
            .take_while(|e| e.at <= 0.0)
        {
            send(l, e).await;
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
    for (i, (p, l)) in players.iter().cloned().zip(links.drain(..)).enumerate() {
        let (api, rx, counters, wait) =
            (api.clone(), alerts_rx.clone(), counters.clone(), cfg.wait);
        tasks.spawn(async move {
            // The run's settings, then at once a word from every device: a compressed offline
            // threshold counts from the last message, which must not be older than the switch.
            if let Err(e) = api.patch_rules(p.resident.id, &p.rules).await {
                return (i, l, Some(format!("{}: {e:#}", p.label)));
            }
            for link in l.values() {
                let _ = link.publish(MessageKind::Heartbeat, "{}".into()).await;
            }
            let id = p.resident.id;
            let links = play(p, l, rx, counters, wait, rep).await;
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
            for (_, link) in links {
                link.close().await;
            }
            (i, Links::new(), failed)
        });
    }
    let mut back: Vec<Option<Links>> = (0..players.len()).map(|_| None).collect();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, l, failed) = done?;
        back[i] = Some(l);
        failures.extend(failed);
    }
    if !failures.is_empty() {
        for l in back.into_iter().flatten() {
            for (_, link) in l {
                link.close().await;
            }
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
            .filter(|a| a.id > baseline)
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
            .all(|v| v.missing.is_empty() && v.unexpected.is_empty()),
        verdicts,
    })
}

async fn connect_all(
    players: &[Player],
    cfg: &RunConfig,
    counters: &Arc<Counters>,
) -> Result<Vec<Links>> {
    let mut set = JoinSet::new();
    for (i, p) in players.iter().enumerate() {
        for d in &p.resident.devices {
            let login = DeviceLogin {
                host: cfg.mqtt_host.clone(),
                port: cfg.mqtt_port,
                device_id: d.mqtt.username.clone(),
                password: d.mqtt.password.clone(),
            };
            let (role, counters) = (d.role, counters.clone());
            set.spawn(async move { (i, role, DeviceLink::connect(login, counters).await) });
        }
    }
    let mut links: Vec<Links> = (0..players.len()).map(|_| Links::new()).collect();
    while let Some(done) = set.join_next().await {
        let (i, role, link) = done?;
        links[i].insert(role, link?);
    }
    Ok(links)
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

/// Sends one message or cuts a device's power; power coming back is the caller's (it needs
/// the link mutably).
async fn send(links: &Links, e: &Emission) {
    let Some(link) = links.get(&e.role) else {
        return;
    };
    if let Some((kind, payload)) = e.msg.wire() {
        // A failed publish is counted; the run goes on as a real fleet would.
        let _ = link.publish(kind, payload).await;
    } else if e.msg == Msg::PowerLoss {
        link.power_loss();
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

/// Plays one resident's acts; returns the links for closing.
async fn play(
    p: Player,
    mut links: Links,
    alerts: watch::Receiver<Vec<Alert>>,
    counters: Arc<Counters>,
    wait: Duration,
    rep: Reporter,
) -> Links {
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
            if e.msg == Msg::PowerBack {
                if let Some(link) = links.get_mut(&e.role) {
                    if link.power_back().await.is_err() {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            } else {
                send(&links, e).await;
            }
        }
        for n in notes {
            tokio::time::sleep_until(real(n.at)).await;
            say(&p, rep, sim_before, n);
        }
        tokio::time::sleep_until(real(act.timeline.end)).await;
        let held = hold(&p, act, &links, &alerts, wait, rep).await;
        sim_before += act.timeline.end + held.as_secs_f64() * p.speed;
    }
    links
}

fn say(p: &Player, rep: Reporter, sim_before: f64, n: &Note) {
    let clock = clock(p.start_tod + sim_before + n.at);
    rep.note(&clock, &p.label, &n.text, n.expect.map(AlertKind::as_str));
}

/// Keeps the live devices beating until the hub raised what the act waits for.
async fn hold(
    p: &Player,
    act: &Act,
    links: &Links,
    alerts: &watch::Receiver<Vec<Alert>>,
    wait: Duration,
    rep: Reporter,
) -> Duration {
    let start = Instant::now();
    if act.wait_for.is_empty() {
        return Duration::ZERO;
    }
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
            break;
        }
        tick.tick().await;
        for (role, link) in links {
            if !act.silent.contains(role) {
                let _ = link.publish(MessageKind::Heartbeat, "{}".into()).await;
            }
        }
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
            let mut new: Vec<Alert> = all.into_iter().filter(|a| a.id > baseline).collect();
            new.sort_by_key(|a| a.id);
            for a in &new {
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

fn describe(kind: AlertKind, device: Option<&str>) -> String {
    match device {
        Some(d) => format!("{} ({d})", kind.as_str()),
        None => kind.as_str().to_string(),
    }
}

/// Matches raised alerts one to one against the expected ones.
fn verdict(p: &Player, raised: &[Alert]) -> Verdict {
    let device_of = |role: Role| {
        p.resident
            .devices
            .iter()
            .find(|d| d.role == role)
            .map(|d| d.id.clone())
    };
    let mut left: Vec<&Alert> = raised.iter().collect();
    let mut missing = Vec::new();
    for e in &p.expect {
        let want = e.role.and_then(device_of);
        let pos = left
            .iter()
            .position(|a| a.kind == e.kind && (want.is_none() || a.device_id == want));
        match pos {
            Some(i) => {
                left.remove(i);
            }
            None => missing.push(describe(e.kind, want.as_deref())),
        }
    }
    Verdict {
        resident: p.label.clone(),
        resident_id: p.resident.id,
        expected: p
            .expect
            .iter()
            .map(|e| describe(e.kind, e.role.and_then(device_of).as_deref()))
            .collect(),
        raised: raised
            .iter()
            .map(|a| describe(a.kind, a.device_id.as_deref()))
            .collect(),
        missing,
        unexpected: left
            .iter()
            .map(|a| describe(a.kind, a.device_id.as_deref()))
            .collect(),
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
