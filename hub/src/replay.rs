//! `hub replay`: the hub's own alert core (rules engine, alert book, resident check) run
//! over a home's recorded history in virtual time, so settings can be tried on real days
//! before they go live.
//!
//! Pure apart from [`run_files`] and [`stored`]: a resident description and events in, one
//! JSON line per alert change and a summary out. Events are put in time order first (a
//! gateway delivers them in any order); each one arrives at its own `ts`, and every
//! deadline in between fires at its own instant, exactly as the hub's pipeline drives the
//! core. [`stored`] feeds it a resident's history from the hub's database.

pub mod stored;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use mimamori_protocol::native::{parse_native, Timestamp};
use mimamori_protocol::pause::{NewPause, Pause};
use mimamori_protocol::zone::NewZone;
use mimamori_protocol::{AlertKind, DeviceEvent, DeviceKind, RuleSettings, Severity};
use mimamori_rules::{DeviceInfo, ResidentConfig, SafeZone};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::alerts::{Card, CheckPlan, Core, Effects, Ladder};

/// The resident id replayed events carry; one home is replayed at a time.
const RESIDENT: i64 = 1;
/// Longest event line read; a native payload is at most 16 KiB.
const MAX_LINE: usize = 20 * 1024;

/// `resident.json`: the same shapes as the API's bodies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayResident {
    pub timezone: String,
    #[serde(default)]
    pub rules: Option<Value>,
    pub devices: Vec<ReplayDevice>,
    #[serde(default)]
    pub geofences: Vec<NewZone>,
    /// Dated pauses, as `POST /residents/{id}/pauses` takes them.
    #[serde(default)]
    pub pauses: Vec<NewPause>,
}

/// One device of the replayed home.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayDevice {
    pub id: String,
    pub kind: DeviceKind,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub role: Option<mimamori_protocol::DeviceRole>,
}

/// One line of output: an alert change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub at: DateTime<Utc>,
    pub kind: AlertKind,
    pub severity: Severity,
    pub change: &'static str,
    pub details: Value,
}

/// The last line of output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Days from the first event to the last.
    pub days: f64,
    /// Alerts opened to staff, by kind.
    pub alerts: BTreeMap<AlertKind, u64>,
    /// Alerts that first asked the resident "are you OK?", by kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub asked: BTreeMap<AlertKind, u64>,
    /// Of those, the ones the resident answered, so staff never saw them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub confirmed: BTreeMap<AlertKind, u64>,
    /// Alerts opened per day, by kind, and `all`.
    pub per_day: BTreeMap<String, f64>,
    /// Events replayed.
    pub events: usize,
    /// Changes counted but not listed, past the most a replay lists.
    #[serde(skip_serializing_if = "is_zero")]
    pub changes_left_out: usize,
    /// For a replay of stored history: what was asked for and what the store held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<stored::History>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub changes: Vec<Change>,
    pub summary: Summary,
}

/// The engine's configuration for the described home, with `rules_patch` merged over its rules.
pub fn resident_config(
    r: &ReplayResident,
    rules_patch: Option<&Value>,
) -> anyhow::Result<ResidentConfig> {
    let timezone: chrono_tz::Tz = r
        .timezone
        .parse()
        .map_err(|_| anyhow::anyhow!("timezone {:?} is not an IANA time zone", r.timezone))?;
    let merge = crate::api::residents::merge_rules;
    let mut settings = merge(&RuleSettings::default(), r.rules.as_ref())?;
    if rules_patch.is_some() {
        settings = merge(&settings, rules_patch).context("--rules")?;
    }
    let zones = r
        .geofences
        .iter()
        .enumerate()
        .map(|(n, z)| {
            let shape = z.shape().map_err(anyhow::Error::msg)?;
            SafeZone::new(n as i64 + 1, z.name.clone(), &shape)
                .map_err(|e| anyhow::anyhow!("geofence {:?}: {e}", z.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let devices = r
        .devices
        .iter()
        .map(|d| DeviceInfo {
            id: d.id.clone(),
            kind: d.kind,
            room: d.room.clone(),
            role: d.role,
        })
        .collect();
    let pauses = r
        .pauses
        .iter()
        .enumerate()
        .map(|(n, p)| {
            p.validate()
                .map_err(|e| anyhow::anyhow!("pause {}: {e}", n + 1))?;
            Ok(Pause {
                id: format!("pause-{}", n + 1),
                resident_id: RESIDENT,
                from: p.from,
                until: p.until,
                reason: p.reason,
                note: p.note.clone(),
                created_by: "replay".into(),
                created_at: p.from,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ResidentConfig {
        pauses,
        resident_id: RESIDENT,
        timezone,
        settings,
        zones,
        devices,
    })
}

/// Parses one event line: a native payload with its `device` and `kind` added, `ts` required.
pub fn parse_event(line: &str, kinds: &HashMap<String, DeviceKind>) -> anyhow::Result<DeviceEvent> {
    let mut v: serde_json::Map<String, Value> =
        serde_json::from_str(line).context("not a JSON object")?;
    let device = match v.remove("device") {
        Some(Value::String(d)) => d,
        _ => bail!("\"device\" (a device id string) is required"),
    };
    let kind = match v.remove("kind") {
        Some(Value::String(k)) => k,
        _ => bail!("\"kind\" (motion, door, gps, sos, heartbeat, status or ok) is required"),
    };
    let Some(&device_kind) = kinds.get(&device) else {
        bail!("device {device:?} is not among the resident's devices");
    };
    let ts: Timestamp = match v.get("ts") {
        Some(t) => serde_json::from_value(t.clone()).context("ts")?,
        None => bail!("\"ts\" is required: a replayed event arrives at its own time"),
    };
    let payload = serde_json::to_vec(&v)?;
    let msg = parse_native(&kind, &payload, ts.0).map_err(|r| anyhow::anyhow!("{}", r.detail))?;
    Ok(DeviceEvent {
        device_id: device,
        device_kind,
        resident_id: RESIDENT,
        ts: msg.ts,
        received_at: msg.ts,
        reading: msg.reading,
        battery: msg.battery,
    })
}

/// Replays `events` (any order) through the hub's alert core for the home `cfg` describes,
/// from the first event to the last.
pub fn replay(cfg: ResidentConfig, mut events: Vec<DeviceEvent>) -> Outcome {
    events.sort_by_key(|e| e.ts);
    let mut replayer = Replayer::new(cfg);
    for ev in &events {
        replayer.feed(ev);
    }
    replayer.finish(None)
}

/// The hub's pure alert core — the rules engine and the alert book, resident check
/// included — driven in virtual time by events fed in time order. Each event arrives at
/// its own `ts`; every deadline before it (rule timers, the resident's time to answer)
/// fires first, at its own instant, as the hub's pipeline does.
pub struct Replayer {
    core: Core,
    /// The configuration, until the first event says when the replay starts.
    unstarted: Option<ResidentConfig>,
    start: Option<DateTime<Utc>>,
    now: Option<DateTime<Utc>>,
    changes: Vec<Change>,
    /// Most change lines kept; the summary counts every change.
    keep: usize,
    counts: Counts,
    events: usize,
}

/// Changes counted per kind as they happen, kept lines or not.
#[derive(Default)]
struct Counts {
    opened: BTreeMap<AlertKind, u64>,
    pending: BTreeMap<AlertKind, u64>,
    confirmed: BTreeMap<AlertKind, u64>,
    left_out: usize,
}

impl Counts {
    fn add(&mut self, c: &Change) {
        let of = match c.change {
            "opened" => &mut self.opened,
            "pending" => &mut self.pending,
            "confirmed" => &mut self.confirmed,
            _ => return,
        };
        *of.entry(c.kind).or_insert(0) += 1;
    }
}

impl Replayer {
    pub fn new(cfg: ResidentConfig) -> Replayer {
        Replayer {
            core: Core::new(Ladder::default(), 1),
            unstarted: Some(cfg),
            start: None,
            now: None,
            changes: Vec::new(),
            keep: usize::MAX,
            counts: Counts::default(),
            events: 0,
        }
    }

    /// Keeps at most `lines` change lines (the first ones); later changes are only
    /// counted, so settings that raise an alert a minute cost no more than a summary.
    pub fn keeping(mut self, lines: usize) -> Replayer {
        self.keep = lines;
        self
    }

    /// Feeds the next event; one earlier than the last arrives at the last one's time.
    pub fn feed(&mut self, ev: &DeviceEvent) {
        let at = self.now.map_or(ev.ts, |now| now.max(ev.ts));
        if let Some(cfg) = self.unstarted.take() {
            let card = card_of(&cfg);
            self.core.configure(cfg, card, at);
            self.start = Some(at);
            self.take();
        }
        self.advance(at);
        self.core.handle_event(ev, at);
        self.take();
        self.now = Some(at);
        self.events += 1;
    }

    /// Runs the clock on to `end` (or stops at the last event) and sums up.
    pub fn finish(mut self, end: Option<DateTime<Utc>>) -> Outcome {
        let (Some(start), Some(last)) = (self.start, self.now) else {
            return Outcome {
                changes: Vec::new(),
                summary: summarise(Counts::default(), 0.0, 0),
            };
        };
        let end = end.map_or(last, |e| e.max(last));
        self.advance(end);
        let days = (end - start).num_seconds() as f64 / 86_400.0;
        Outcome {
            changes: self.changes,
            summary: summarise(self.counts, days, self.events),
        }
    }

    /// Fires every deadline up to `until`, each at its own instant.
    fn advance(&mut self, until: DateTime<Utc>) {
        while let Some(due) = self.core.poll_timeout().filter(|t| *t <= until) {
            self.core.handle_timeout(due);
            self.take();
        }
    }

    /// Turns what the core would have committed into change lines.
    fn take(&mut self) {
        self.core.take_dirty();
        let effects = self.core.take_effects();
        for c in changes_of(&effects) {
            self.counts.add(&c);
            if self.changes.len() < self.keep {
                self.changes.push(c);
            } else {
                self.counts.left_out += 1;
            }
        }
    }
}

/// What the alert core needs of the resident: the time zone and whether chosen alerts
/// first ask the resident (through every device, as the hub's pipeline builds it). No
/// contacts: a replay tells nobody.
fn card_of(cfg: &ResidentConfig) -> Card {
    Card {
        name: String::new(),
        timezone: cfg.timezone.name().to_owned(),
        tz: cfg.timezone,
        contacts: Vec::new(),
        check: CheckPlan::of(
            &cfg.settings,
            cfg.devices.iter().map(|d| d.id.clone()).collect(),
        ),
    }
}

/// The alert changes of one commit, read from the history rows it writes: an alert
/// that asks the resident first opens `pending`; `unconfirmed` (no answer in time) is
/// when staff would have seen it `opened`; the resident's answer resolves it as
/// `confirmed`.
fn changes_of(effects: &Effects) -> Vec<Change> {
    let asked: HashSet<i64> = effects
        .history
        .iter()
        .filter(|h| h.action == "asked")
        .map(|h| h.alert_id)
        .collect();
    effects
        .history
        .iter()
        .filter_map(|h| {
            let record = effects.alerts.get(&h.alert_id)?;
            let a = &record.alert;
            let written = || {
                h.details
                    .as_deref()
                    .and_then(|d| serde_json::from_str(d).ok())
                    .unwrap_or_else(|| a.details.clone())
            };
            let reason = || json!({ "reason": h.note });
            let resolved_at = a.resolved_at.unwrap_or(h.at);
            let (what, at, details) = match (h.action, h.actor.as_str()) {
                ("opened", _) if asked.contains(&h.alert_id) => ("pending", a.opened_at, written()),
                ("opened", _) => ("opened", a.opened_at, written()),
                ("unconfirmed", _) => ("opened", h.at, a.details.clone()),
                ("updated", _) => ("updated", h.at, written()),
                ("resolved", "resident") => ("confirmed", resolved_at, reason()),
                ("resolved", _) => ("resolved", resolved_at, reason()),
                _ => return None,
            };
            Some(change(
                a.kind,
                &record.subject,
                a.severity,
                what,
                at,
                details,
            ))
        })
        .collect()
}

fn change(
    kind: AlertKind,
    subject: &str,
    severity: Severity,
    change: &'static str,
    at: DateTime<Utc>,
    mut details: Value,
) -> Change {
    if let (Value::Object(m), false) = (&mut details, subject.is_empty()) {
        m.insert("device".into(), Value::String(subject.to_owned()));
    }
    Change {
        at,
        kind,
        severity,
        change,
        details,
    }
}

fn summarise(counts: Counts, days: f64, events: usize) -> Summary {
    let rate = |n: u64| {
        if days > 0.0 {
            (n as f64 / days * 1000.0).round() / 1000.0
        } else {
            0.0
        }
    };
    let mut per_day: BTreeMap<String, f64> = counts
        .opened
        .iter()
        .map(|(k, n)| (k.as_str().to_owned(), rate(*n)))
        .collect();
    per_day.insert("all".into(), rate(counts.opened.values().sum()));
    Summary {
        days: (days * 10.0).round() / 10.0,
        alerts: counts.opened,
        asked: counts.pending,
        confirmed: counts.confirmed,
        per_day,
        events,
        changes_left_out: counts.left_out,
        history: None,
    }
}

/// Reads event lines, naming the line of the first bad one.
pub fn read_events(
    input: impl BufRead,
    kinds: &HashMap<String, DeviceKind>,
) -> anyhow::Result<Vec<DeviceEvent>> {
    let mut events = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("events line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            bail!("events line {}: longer than {MAX_LINE} bytes", n + 1);
        }
        events.push(parse_event(&line, kinds).with_context(|| format!("events line {}", n + 1))?);
    }
    Ok(events)
}

/// The `hub replay` command: reads the files, writes the changes and the summary to `out`.
pub fn run_files(
    resident: &Path,
    events: &Path,
    rules: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<Summary> {
    let text = std::fs::read_to_string(resident)
        .with_context(|| format!("cannot read {}", resident.display()))?;
    let r: ReplayResident =
        serde_json::from_str(&text).with_context(|| format!("{}", resident.display()))?;
    let patch: Option<Value> = rules
        .map(serde_json::from_str)
        .transpose()
        .context("--rules is not JSON")?;
    let cfg = resident_config(&r, patch.as_ref())?;
    let kinds = r.devices.iter().map(|d| (d.id.clone(), d.kind)).collect();
    let file =
        std::fs::File::open(events).with_context(|| format!("cannot read {}", events.display()))?;
    let events = read_events(std::io::BufReader::new(file), &kinds)?;
    let outcome = replay(cfg, events);
    write_outcome(&outcome, out)?;
    Ok(outcome.summary)
}

/// `hub replay --database-url`: replays a resident's stored history, reading the
/// database only, and writes the changes and the summary to `out`.
pub async fn run_database(
    url: &str,
    resident_id: i64,
    from: Option<String>,
    until: Option<String>,
    rules: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let rules: Option<Value> = rules
        .map(serde_json::from_str)
        .transpose()
        .context("--rules is not JSON")?;
    let store = crate::store::open_read_only(url).await?;
    let req = stored::StoredReplay {
        resident_id,
        from,
        until,
        rules,
        now: crate::clock::Clock::now(&crate::clock::SystemClock),
        max_days: None,
        max_readings: None,
        max_changes: None,
        retention: None,
    };
    let outcome = stored::replay_stored(store.as_ref(), &req).await?;
    write_outcome(&outcome, out)
}

/// One JSON line per change, then the summary line.
fn write_outcome(outcome: &Outcome, out: &mut impl Write) -> anyhow::Result<()> {
    for c in &outcome.changes {
        serde_json::to_writer(&mut *out, c)?;
        out.write_all(b"\n")?;
    }
    serde_json::to_writer(&mut *out, &json!({ "summary": outcome.summary }))?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> ReplayResident {
        serde_json::from_value(json!({
            "timezone": "Asia/Tokyo",
            "rules": {
                "inactivity": {"morning_deadline": null},
                "offline": {"motion_s": 86400},
                "dwell": {"enabled": false}
            },
            "devices": [
                {"id": "bath-pir", "kind": "motion", "room": "bathroom"},
                {"id": "bed-pir", "kind": "motion", "room": "bedroom"}
            ]
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn kinds(r: &ReplayResident) -> HashMap<String, DeviceKind> {
        r.devices.iter().map(|d| (d.id.clone(), d.kind)).collect()
    }

    /// Each change as (when, kind, what), for comparing with a list.
    fn changes(out: &Outcome) -> Vec<(String, &str, &str)> {
        out.changes
            .iter()
            .map(|c| (c.at.to_rfc3339(), c.kind.as_str(), c.change))
            .collect()
    }

    #[test]
    fn an_evening_collapse_replays_in_any_order_of_arrival() -> anyhow::Result<()> {
        let r = home();
        // Delivered out of order: the 19:30 bathroom motion first, the morning's after it.
        let lines = [
            r#"{"device":"bath-pir","kind":"motion","ts":"2026-05-11T10:30:00Z","motion":true}"#,
            r#"{"device":"bed-pir","kind":"motion","ts":"2026-05-10T22:00:00Z","motion":true}"#,
            r#"{"device":"bath-pir","kind":"motion","ts":"2026-05-11T00:00:00Z","motion":true}"#,
            r#"{"device":"bath-pir","kind":"heartbeat","ts":"2026-05-11T14:00:00Z"}"#,
        ];
        let events = read_events(lines.join("\n").as_bytes(), &kinds(&r))?;
        let out = replay(resident_config(&r, None)?, events);
        let got = changes(&out);
        assert_eq!(
            got,
            [
                // 09:00 JST + 3 h, then 19:30 JST (10:30Z) + 3 h: the bathroom is not a bed.
                (
                    "2026-05-11T03:00:00+00:00".to_owned(),
                    "inactivity",
                    "opened"
                ),
                (
                    "2026-05-11T10:30:00+00:00".to_owned(),
                    "inactivity",
                    "resolved"
                ),
                (
                    "2026-05-11T13:30:00+00:00".to_owned(),
                    "inactivity",
                    "opened"
                ),
            ]
        );
        assert_eq!(out.summary.alerts.get(&AlertKind::Inactivity), Some(&2));
        assert_eq!(out.summary.events, 4);
        Ok(())
    }

    #[test]
    fn a_pause_in_resident_json_quiets_the_replay() -> anyhow::Result<()> {
        let mut r = home();
        r.pauses = serde_json::from_value(json!([{
            "from": "2026-05-11T09:00:00Z", "until": "2026-05-11T14:00:00Z",
            "reason": "hospital", "note": "check-up"
        }]))?;
        let lines = [
            r#"{"device":"bed-pir","kind":"motion","ts":"2026-05-10T22:00:00Z","motion":true}"#,
            r#"{"device":"bath-pir","kind":"motion","ts":"2026-05-11T10:30:00Z","motion":true}"#,
            r#"{"device":"bath-pir","kind":"heartbeat","ts":"2026-05-11T14:00:00Z"}"#,
        ];
        let events = read_events(lines.join("\n").as_bytes(), &kinds(&r))?;
        let out = replay(resident_config(&r, None)?, events);
        let got = changes(&out);
        assert_eq!(
            got,
            [
                (
                    "2026-05-11T01:00:00+00:00".to_owned(),
                    "inactivity",
                    "opened"
                ),
                (
                    "2026-05-11T09:00:00+00:00".to_owned(),
                    "inactivity",
                    "resolved"
                ),
            ]
        );
        assert_eq!(out.changes[1].details["reason"], "rules paused (hospital)");
        Ok(())
    }

    #[test]
    fn a_rules_patch_changes_the_outcome() -> anyhow::Result<()> {
        let r = home();
        let lines = r#"{"device":"bath-pir","kind":"motion","ts":"2026-05-11T00:00:00Z","motion":true}
{"device":"bath-pir","kind":"heartbeat","ts":"2026-05-11T04:00:00Z"}"#;
        let events = read_events(lines.as_bytes(), &kinds(&r))?;
        let patch = json!({"inactivity": {"day_threshold_s": 18000}});
        let out = replay(resident_config(&r, Some(&patch))?, events);
        assert!(out.changes.is_empty(), "{:?}", out.changes);
        Ok(())
    }

    /// The home with the resident check on: inactivity asks "are you OK?" first.
    fn checking_home() -> ReplayResident {
        let mut r = home();
        if let Some(Value::Object(rules)) = r.rules.as_mut() {
            rules.insert("check".into(), json!({"enabled": true, "timeout_s": 120}));
        }
        r
    }

    /// Replays event lines for the home with a rules patch; its inactivity changes as
    /// (time of day UTC, change).
    fn inactivity_of(
        r: &ReplayResident,
        lines: &[&str],
        patch: Option<&Value>,
    ) -> anyhow::Result<(Outcome, Vec<(String, &'static str)>)> {
        let events = read_events(lines.join("\n").as_bytes(), &kinds(r))?;
        let out = replay(resident_config(r, patch)?, events);
        let seen = out
            .changes
            .iter()
            .filter(|c| c.kind == AlertKind::Inactivity)
            .map(|c| (c.at.format("%H:%M").to_string(), c.change))
            .collect();
        Ok((out, seen))
    }

    fn at_times<'a>(v: &[(&str, &'a str)]) -> Vec<(String, &'a str)> {
        v.iter().map(|(t, c)| (t.to_string(), *c)).collect()
    }

    #[test]
    fn an_answered_check_is_confirmed_and_staff_never_see_it() -> anyhow::Result<()> {
        let lines = [
            r#"{"device":"bed-pir","kind":"motion","ts":"2026-05-11T00:00:00Z","motion":true}"#,
            // She presses "I'm OK" a minute after the question.
            r#"{"device":"bath-pir","kind":"ok","ts":"2026-05-11T03:01:00Z"}"#,
            r#"{"device":"bath-pir","kind":"heartbeat","ts":"2026-05-11T07:00:00Z"}"#,
        ];
        let (out, seen) = inactivity_of(&checking_home(), &lines, None)?;
        assert_eq!(
            seen,
            at_times(&[
                ("03:00", "pending"),
                ("03:01", "confirmed"),
                // The threshold counts afresh from her answer; this time nobody answers.
                ("06:01", "pending"),
                ("06:03", "opened"),
            ])
        );
        assert_eq!(
            out.changes[1].details["reason"],
            "the resident answered: I'm OK"
        );
        assert_eq!(out.summary.alerts.get(&AlertKind::Inactivity), Some(&1));
        assert_eq!(out.summary.asked.get(&AlertKind::Inactivity), Some(&2));
        assert_eq!(out.summary.confirmed.get(&AlertKind::Inactivity), Some(&1));
        Ok(())
    }

    #[test]
    fn without_an_answer_a_check_opens_to_staff_when_its_time_runs_out() -> anyhow::Result<()> {
        let lines = [
            r#"{"device":"bed-pir","kind":"motion","ts":"2026-05-11T00:00:00Z","motion":true}"#,
            // An answer after the time ran out closes nothing: staff were told already.
            r#"{"device":"bath-pir","kind":"ok","ts":"2026-05-11T03:05:00Z"}"#,
            r#"{"device":"bath-pir","kind":"motion","ts":"2026-05-11T03:30:00Z","motion":true}"#,
        ];
        let (_, seen) = inactivity_of(&checking_home(), &lines, None)?;
        assert_eq!(
            seen,
            at_times(&[
                ("03:00", "pending"),
                ("03:02", "opened"),
                ("03:30", "resolved")
            ])
        );
        // Without the check, the same history opens at once.
        let off = json!({"check": {"enabled": false}});
        let (out, seen) = inactivity_of(&checking_home(), &lines, Some(&off))?;
        assert_eq!(
            seen,
            at_times(&[("03:00", "opened"), ("03:30", "resolved")])
        );
        assert!(out.summary.asked.is_empty());
        Ok(())
    }

    #[test]
    fn past_its_limit_a_replay_counts_changes_without_listing_them() -> anyhow::Result<()> {
        let r = checking_home();
        let lines = [
            r#"{"device":"bed-pir","kind":"motion","ts":"2026-05-11T00:00:00Z","motion":true}"#,
            r#"{"device":"bath-pir","kind":"ok","ts":"2026-05-11T03:01:00Z"}"#,
            r#"{"device":"bath-pir","kind":"heartbeat","ts":"2026-05-11T07:00:00Z"}"#,
        ];
        let mut replayer = Replayer::new(resident_config(&r, None)?).keeping(1);
        for ev in read_events(lines.join("\n").as_bytes(), &kinds(&r))? {
            replayer.feed(&ev);
        }
        let out = replayer.finish(None);
        assert_eq!(out.changes.len(), 1);
        assert_eq!(out.summary.changes_left_out, 3);
        assert_eq!(out.summary.asked.get(&AlertKind::Inactivity), Some(&2));
        assert_eq!(out.summary.alerts.get(&AlertKind::Inactivity), Some(&1));
        Ok(())
    }

    #[test]
    fn bad_lines_are_named() {
        let r = home();
        let err = |line: &str| {
            read_events(format!("\n{line}").as_bytes(), &kinds(&r))
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        assert!(
            err(r#"{"device":"x","kind":"motion","ts":1,"motion":true}"#)
                .contains("line 2: device \"x\" is not among")
        );
        assert!(err(r#"{"device":"bed-pir","kind":"motion","motion":true}"#)
            .contains("\"ts\" is required"));
        assert!(
            err(r#"{"device":"bed-pir","kind":"motion","ts":1764032400,"motion":true}"#)
                .contains("looks like seconds")
        );
        assert!(
            err(r#"{"device":"bed-pir","kind":"motion","ts":"2026-05-11T00:00:00Z"}"#)
                .contains("motion")
        );
        let bad_rules = resident_config(&r, Some(&json!({"inactivity": {"day_threshold_s": 0}})));
        assert!(bad_rules.is_err());
    }

    /// Sixty days of an ordinary life (up at 07:00, out shopping through the entrance on two
    /// afternoons a week, a bath at 21:00, in bed by 21:30, the toilet at 02:00), with an
    /// evening collapse in the bathroom on day 30, as event lines.
    fn sixty_days() -> Vec<String> {
        let start = DateTime::parse_from_rfc3339("2026-01-05T00:00:00+09:00")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let mut lines = Vec::new();
        let mut motion = |dev: &str, at: DateTime<Utc>| {
            lines.push(format!(
                r#"{{"device":"{dev}","kind":"motion","ts":"{}","motion":true}}"#,
                at.to_rfc3339()
            ));
        };
        let min = chrono::Duration::minutes;
        let mut doors = Vec::new();
        for day in 0..60 {
            let d = start + chrono::Duration::days(day);
            let every = |from: i64, to: i64, step: i64| {
                (from..to).step_by(step as usize).map(move |m| d + min(m))
            };
            every(7 * 60, 7 * 60 + 10, 2).for_each(|t| motion("bed-pir", t));
            every(7 * 60 + 10, 8 * 60, 5).for_each(|t| motion("kitchen-pir", t));
            let out = day % 7 == 1 || day % 7 == 4;
            let home_until = if day == 30 { 19 * 60 + 30 } else { 21 * 60 };
            every(8 * 60, home_until, 10)
                .filter(|t| !out || *t < d + min(13 * 60) || *t >= d + min(15 * 60 + 30))
                .for_each(|t| motion("living-pir", t));
            if out {
                doors.push(d + min(13 * 60 + 5));
                doors.push(d + min(15 * 60 + 25));
            }
            if day == 30 {
                motion("bath-pir", d + min(19 * 60 + 30));
                continue;
            }
            every(21 * 60, 21 * 60 + 25, 3).for_each(|t| motion("bath-pir", t));
            every(21 * 60 + 30, 21 * 60 + 40, 3).for_each(|t| motion("bed-pir", t));
            motion("bath-pir", d + min(26 * 60));
            motion("bed-pir", d + min(26 * 60 + 5));
        }
        for t in doors {
            lines.push(format!(
                r#"{{"device":"front","kind":"door","ts":"{}","open":true}}"#,
                t.to_rfc3339()
            ));
        }
        lines
    }

    #[test]
    fn sixty_days_of_a_home_replay_quickly_and_raise_only_the_collapse_and_its_quiet_evening(
    ) -> anyhow::Result<()> {
        let r: ReplayResident = serde_json::from_value(json!({
            "timezone": "Asia/Tokyo",
            "devices": [
                {"id": "bed-pir", "kind": "motion", "room": "bedroom"},
                {"id": "kitchen-pir", "kind": "motion", "room": "kitchen"},
                {"id": "living-pir", "kind": "motion", "room": "living"},
                {"id": "bath-pir", "kind": "motion", "room": "bathroom"},
                {"id": "front", "kind": "door", "role": "entrance"}
            ],
            "rules": {"offline": {"motion_s": 172800, "door_s": 864000}, "dwell": {"enabled": true}}
        }))?;
        let mut lines = sixty_days();
        // A gateway delivers in any order: reverse them.
        lines.reverse();
        let started = std::time::Instant::now();
        let events = read_events(lines.join("\n").as_bytes(), &kinds(&r))?;
        let n = events.len();
        let out = replay(resident_config(&r, None)?, events);
        let took = started.elapsed();
        eprintln!(
            "replayed {n} events over {} days in {took:?}: {:.0} events/s",
            out.summary.days,
            n as f64 / took.as_secs_f64()
        );
        assert!(took < std::time::Duration::from_secs(5));
        let opened: Vec<(String, AlertKind)> = out
            .changes
            .iter()
            .filter(|c| c.change == "opened")
            .map(|c| (c.at.to_rfc3339(), c.kind))
            .collect();
        // Day 30 is 2026-02-04; 19:30 JST is 10:30Z. The learned rhythm notices the
        // quiet 20:00 hour (the living room every evening) before the inactivity threshold.
        assert_eq!(
            opened,
            [
                ("2026-02-04T11:30:00+00:00".to_owned(), AlertKind::Dwell),
                ("2026-02-04T12:00:00+00:00".to_owned(), AlertKind::Rhythm),
                (
                    "2026-02-04T13:30:00+00:00".to_owned(),
                    AlertKind::Inactivity
                ),
            ]
        );
        Ok(())
    }
}
