//! `hub replay`: the hub's own rules engine run over a home's recorded history in virtual
//! time, so settings can be tried on real days before they go live.
//!
//! Pure apart from [`run_files`]: a resident description and event lines in, one JSON line per
//! alert change and a summary out. Events are put in time order first (a gateway delivers them
//! in any order); each one arrives at its own `ts`, and every deadline in between fires at its
//! own instant, exactly as the hub's pipeline drives the engine.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use mimamori_protocol::native::{parse_native, Timestamp};
use mimamori_protocol::pause::{NewPause, Pause};
use mimamori_protocol::zone::NewZone;
use mimamori_protocol::{AlertKind, DeviceEvent, DeviceKind, RuleSettings, Severity};
use mimamori_rules::{Decision, DeviceInfo, Engine, ResidentConfig, SafeZone};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
    /// Alerts opened, by kind.
    pub alerts: BTreeMap<AlertKind, u64>,
    /// Alerts opened per day, by kind, and `all`.
    pub per_day: BTreeMap<String, f64>,
    /// Events replayed.
    pub events: usize,
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
        _ => bail!("\"kind\" (motion, door, gps, sos, heartbeat or status) is required"),
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

/// Replays `events` (any order) through the engine for the home `cfg` describes.
pub fn replay(cfg: ResidentConfig, mut events: Vec<DeviceEvent>) -> Outcome {
    events.sort_by_key(|e| e.ts);
    let (Some(start), Some(end)) = (events.first().map(|e| e.ts), events.last().map(|e| e.ts))
    else {
        return Outcome {
            changes: Vec::new(),
            summary: summarise(&[], 0.0, 0),
        };
    };
    let mut engine = Engine::new();
    engine.configure(cfg, start);
    let mut rec = Recorder::default();
    rec.take(&mut engine);
    for ev in &events {
        advance(&mut engine, ev.ts, &mut rec);
        engine.handle_event(ev, ev.ts);
        rec.take(&mut engine);
    }
    advance(&mut engine, end, &mut rec);
    let days = (end - start).num_seconds() as f64 / 86_400.0;
    let summary = summarise(&rec.changes, days, events.len());
    Outcome {
        changes: rec.changes,
        summary,
    }
}

/// Fires every deadline up to `until`, each at its own instant.
fn advance(engine: &mut Engine, until: DateTime<Utc>, rec: &mut Recorder) {
    while let Some(due) = engine.poll_timeout().filter(|t| *t <= until) {
        engine.handle_timeout(due);
        rec.take(engine);
    }
}

#[derive(Default)]
struct Recorder {
    changes: Vec<Change>,
    /// The severity of each open condition, for its resolution line.
    open: HashMap<(AlertKind, String), Severity>,
}

impl Recorder {
    fn take(&mut self, engine: &mut Engine) {
        while let Some(d) = engine.poll_decision() {
            let change = match d {
                Decision::Open {
                    key,
                    severity,
                    at,
                    details,
                    ..
                } => {
                    self.open.insert((key.kind, key.subject.clone()), severity);
                    change(key.kind, &key.subject, severity, "opened", at, details)
                }
                Decision::Update {
                    key,
                    severity,
                    at,
                    details,
                    ..
                } => change(key.kind, &key.subject, severity, "updated", at, details),
                Decision::Resolve { key, at, reason } => {
                    let severity = self
                        .open
                        .remove(&(key.kind, key.subject.clone()))
                        .unwrap_or(Severity::Warning);
                    let details = json!({ "reason": reason });
                    change(key.kind, &key.subject, severity, "resolved", at, details)
                }
            };
            self.changes.push(change);
        }
        engine.take_dirty();
    }
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

fn summarise(changes: &[Change], days: f64, events: usize) -> Summary {
    let mut alerts = BTreeMap::new();
    for c in changes.iter().filter(|c| c.change == "opened") {
        *alerts.entry(c.kind).or_insert(0_u64) += 1;
    }
    let rate = |n: u64| {
        if days > 0.0 {
            (n as f64 / days * 1000.0).round() / 1000.0
        } else {
            0.0
        }
    };
    let mut per_day: BTreeMap<String, f64> = alerts
        .iter()
        .map(|(k, n)| (k.as_str().to_owned(), rate(*n)))
        .collect();
    per_day.insert("all".into(), rate(alerts.values().sum()));
    Summary {
        days: (days * 10.0).round() / 10.0,
        alerts,
        per_day,
        events,
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
    for c in &outcome.changes {
        serde_json::to_writer(&mut *out, c)?;
        out.write_all(b"\n")?;
    }
    serde_json::to_writer(&mut *out, &json!({ "summary": outcome.summary }))?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(outcome.summary)
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
