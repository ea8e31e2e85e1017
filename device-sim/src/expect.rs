//! What a simulated home should have raised, and the check of the alerts raised against it:
//! each expected alert by kind (and device), with its severity, its opening moment to the
//! second where the story knows it, and how it ended (still open, or resolved and why).
//!
//! Pure: the alerts come in as [`Raised`], from the hub's API after a live run
//! (`device-sim run --expect`) or from `hub replay`'s output (`device-sim check`).

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use anyhow::{bail, Context};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use mimamori_protocol::{Alert, AlertKind, AlertState, Severity};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How far an alert may open from the moment the story gives it, in milliseconds.
pub const TOLERANCE_MS: i64 = 1_000;

/// The alerts a recording (or a scenario) should raise: `expected.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// What was recorded, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub about: String,
    /// Kinds the check leaves out: advisory ones whose moment depends on the learned weeks.
    #[serde(default)]
    pub ignore: Vec<AlertKind>,
    pub alerts: Vec<Expectation>,
}

/// One alert that should be raised. Fields left out are not checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub kind: AlertKind,
    /// The device a per-device alert (`sos`, `device_offline`, `low_battery`) is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// When it should open, to within [`TOLERANCE_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// What happened in the home, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incident: String,
}

/// How an expected alert ends: `"open"` (still open at the end), or resolved by its
/// condition clearing, at a moment and for a reason when they are given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Resolution {
    Open(StillOpen),
    Resolved {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
        /// The start of the reason the hub gives, e.g. "motion resumed".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// The word `"open"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StillOpen {
    Open,
}

impl Resolution {
    pub fn open() -> Resolution {
        Resolution::Open(StillOpen::Open)
    }

    /// Resolved, for any reason, at any moment.
    pub fn resolved() -> Resolution {
        Resolution::Resolved {
            at: None,
            reason: None,
        }
    }

    /// Resolved for a reason that starts with `reason`, at any moment.
    pub fn because(reason: &str) -> Resolution {
        Resolution::Resolved {
            at: None,
            reason: Some(reason.to_owned()),
        }
    }
}

/// One alert as it was raised.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub kind: AlertKind,
    pub device: Option<String>,
    pub severity: Severity,
    pub opened_at: DateTime<Utc>,
    /// When it was resolved and why.
    pub resolved: Option<(DateTime<Utc>, String)>,
}

/// The prefix the hub gives a resolution its rules decided.
const CLEARED: &str = "condition_cleared: ";

impl Raised {
    /// An alert read from the hub's API.
    pub fn from_alert(a: &Alert) -> Raised {
        let resolved = (a.state == AlertState::Resolved).then(|| {
            let text = a.resolution.clone().unwrap_or_default();
            let reason = match text.strip_prefix(CLEARED) {
                Some(r) => r.to_owned(),
                None => format!(
                    "by {}: {text}",
                    a.resolved_by.as_deref().unwrap_or("someone")
                ),
            };
            (a.resolved_at.unwrap_or(a.updated_at), reason)
        });
        Raised {
            kind: a.kind,
            device: a.device_id.clone(),
            severity: a.severity,
            opened_at: a.opened_at,
            resolved,
        }
    }
}

/// One line of `hub replay`'s output: an alert change (the summary line has no `change`).
#[derive(Debug, Deserialize)]
struct ChangeLine {
    at: DateTime<Utc>,
    kind: AlertKind,
    severity: Severity,
    change: String,
    #[serde(default)]
    details: Value,
}

/// The alerts of `hub replay`'s output, and its summary line. A `pending` alert (the
/// resident is being asked) counts as raised from then; `confirmed` (the resident answered)
/// resolves it with the reason `resident_confirmed`. Other changes are not about opening
/// or closing and are skipped.
pub fn read_replay(input: impl BufRead) -> anyhow::Result<(Vec<Raised>, Option<Value>)> {
    let mut raised: Vec<Raised> = Vec::new();
    let mut live: HashMap<(AlertKind, Option<String>), usize> = HashMap::new();
    let mut summary = None;
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("alerts line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("alerts line {}: not JSON", n + 1))?;
        if let Some(s) = v.get("summary") {
            summary = Some(s.clone());
            continue;
        }
        let c: ChangeLine = serde_json::from_value(v).with_context(|| {
            format!(
                "alerts line {}: neither an alert change nor the summary",
                n + 1
            )
        })?;
        let device = c.details["device"].as_str().map(str::to_owned);
        let key = (c.kind, device.clone());
        match c.change.as_str() {
            "opened" | "pending" if !live.contains_key(&key) => {
                live.insert(key, raised.len());
                raised.push(Raised {
                    kind: c.kind,
                    device,
                    severity: c.severity,
                    opened_at: c.at,
                    resolved: None,
                });
            }
            "resolved" | "confirmed" => {
                let Some(i) = live.remove(&key) else {
                    bail!(
                        "alerts line {}: {} resolved but never opened",
                        n + 1,
                        c.kind.as_str()
                    );
                };
                let reason = match c.details["reason"].as_str() {
                    Some(r) => r.to_owned(),
                    None if c.change == "confirmed" => "resident_confirmed".to_owned(),
                    None => String::new(),
                };
                raised[i].resolved = Some((c.at, reason));
            }
            _ => {}
        }
    }
    Ok((raised, summary))
}

/// How the raised alerts compare with the expected ones; each entry a line for people.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Judgement {
    /// Expected and raised as expected.
    pub matched: Vec<String>,
    /// Raised, but with another severity, moment or end than expected.
    pub differing: Vec<String>,
    /// Expected and not raised.
    pub missing: Vec<String>,
    /// Raised and not expected.
    pub unexpected: Vec<String>,
    /// Alerts of the ignored kinds, counted.
    pub ignored: BTreeMap<AlertKind, usize>,
}

impl Judgement {
    pub fn as_expected(&self) -> bool {
        self.differing.is_empty() && self.missing.is_empty() && self.unexpected.is_empty()
    }
}

/// Pairs raised alerts with expected ones — same kind and device, the closest in time first —
/// and says where they differ.
pub fn judge(expected: &[Expectation], ignore: &[AlertKind], raised: &[Raised]) -> Judgement {
    let mut j = Judgement::default();
    let judged: Vec<&Raised> = raised
        .iter()
        .filter(|r| {
            let skip = ignore.contains(&r.kind);
            if skip {
                *j.ignored.entry(r.kind).or_insert(0) += 1;
            }
            !skip
        })
        .collect();
    let mut pairs: Vec<(i64, usize, usize)> = Vec::new();
    for (ei, e) in expected.iter().enumerate() {
        for (ri, r) in judged.iter().enumerate() {
            let same_device = e.device.is_none() || e.device == r.device;
            if e.kind == r.kind && same_device {
                let gap =
                    e.at.map_or(0, |at| (r.opened_at - at).num_milliseconds().abs());
                pairs.push((gap, ei, ri));
            }
        }
    }
    pairs.sort();
    let mut partner_of_expected: Vec<Option<usize>> = vec![None; expected.len()];
    let mut taken = vec![false; judged.len()];
    for (_, ei, ri) in pairs {
        if partner_of_expected[ei].is_none() && !taken[ri] {
            partner_of_expected[ei] = Some(ri);
            taken[ri] = true;
        }
    }
    for (e, partner) in expected.iter().zip(&partner_of_expected) {
        let story = if e.incident.is_empty() {
            String::new()
        } else {
            format!(" — {}", e.incident)
        };
        match partner.map(|ri| judged[ri]) {
            None => j.missing.push(format!("{}{story}", describe_expected(e))),
            Some(r) => {
                let wrong = differences(e, r);
                if wrong.is_empty() {
                    j.matched.push(format!("{}{story}", describe(r)));
                } else {
                    j.differing.push(format!(
                        "{}: {}{story}",
                        describe_expected(e),
                        wrong.join("; ")
                    ));
                }
            }
        }
    }
    for (r, _) in judged.iter().zip(&taken).filter(|(_, t)| !**t) {
        j.unexpected.push(describe(r));
    }
    j
}

fn differences(e: &Expectation, r: &Raised) -> Vec<String> {
    let mut wrong = Vec::new();
    if let Some(at) = e.at.filter(|at| off(r.opened_at, *at)) {
        wrong.push(format!(
            "opened at {} ({} from the expected moment)",
            stamp(r.opened_at),
            signed_secs(r.opened_at - at)
        ));
    }
    if let Some(s) = e.severity.filter(|s| *s != r.severity) {
        wrong.push(format!(
            "severity {} instead of {}",
            r.severity.as_str(),
            s.as_str()
        ));
    }
    match (&e.resolution, &r.resolved) {
        (None, _) | (Some(Resolution::Open(_)), None) => {}
        (Some(Resolution::Open(_)), Some((at, why))) => wrong.push(format!(
            "resolved at {} ({why}) instead of staying open",
            stamp(*at)
        )),
        (Some(Resolution::Resolved { .. }), None) => wrong.push("still open".into()),
        (Some(Resolution::Resolved { at, reason }), Some((rat, why))) => {
            if let Some(at) = at.filter(|at| off(*rat, *at)) {
                wrong.push(format!(
                    "resolved at {} ({} from the expected moment)",
                    stamp(*rat),
                    signed_secs(*rat - at)
                ));
            }
            if let Some(reason) = reason.as_deref().filter(|r| !why.starts_with(r)) {
                wrong.push(format!("resolved because {why:?}, not {reason:?}"));
            }
        }
    }
    wrong
}

fn off(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    (a - b).num_milliseconds().abs() > TOLERANCE_MS
}

fn signed_secs(d: Duration) -> String {
    format!("{:+.1} s", d.num_milliseconds() as f64 / 1000.0)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn head(kind: AlertKind, device: Option<&str>, severity: Option<Severity>) -> String {
    let mut s = kind.as_str().to_owned();
    if let Some(d) = device {
        s.push_str(&format!(" ({d})"));
    }
    if let Some(sev) = severity {
        s.push_str(&format!(", {}", sev.as_str()));
    }
    s
}

/// A raised alert in a line: kind, device, severity, when it opened and how it ended.
pub fn describe(r: &Raised) -> String {
    let mut s = head(r.kind, r.device.as_deref(), Some(r.severity));
    s.push_str(&format!(", opened {}", stamp(r.opened_at)));
    match &r.resolved {
        Some((at, why)) => s.push_str(&format!(", resolved {} ({why})", stamp(*at))),
        None => s.push_str(", still open"),
    }
    s
}

/// An expected alert in a line, with only what is checked.
pub fn describe_expected(e: &Expectation) -> String {
    let mut s = head(e.kind, e.device.as_deref(), e.severity);
    if let Some(at) = e.at {
        s.push_str(&format!(", opening {}", stamp(at)));
    }
    match &e.resolution {
        None => {}
        Some(Resolution::Open(_)) => s.push_str(", staying open"),
        Some(Resolution::Resolved { at, reason }) => {
            s.push_str(", resolved");
            if let Some(at) = at {
                s.push_str(&format!(" {}", stamp(*at)));
            }
            if let Some(r) = reason {
                s.push_str(&format!(" ({r}…)"));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn fall() -> Expectation {
        Expectation {
            kind: AlertKind::Inactivity,
            device: None,
            severity: Some(Severity::High),
            at: Some(t("2026-01-17T05:20:03.120Z")),
            resolution: Some(Resolution::Resolved {
                at: Some(t("2026-01-17T06:00:00Z")),
                reason: Some("door opened".into()),
            }),
            incident: "falls in the kitchen".into(),
        }
    }

    fn raised(at: &str, resolved: Option<(&str, &str)>) -> Raised {
        Raised {
            kind: AlertKind::Inactivity,
            device: None,
            severity: Severity::High,
            opened_at: t(at),
            resolved: resolved.map(|(a, w)| (t(a), w.to_owned())),
        }
    }

    #[test]
    fn an_alert_within_a_second_with_its_end_matches() {
        let r = raised(
            "2026-01-17T05:20:04Z",
            Some(("2026-01-17T06:00:00.500Z", "door opened")),
        );
        let j = judge(&[fall()], &[], &[r]);
        assert!(j.as_expected(), "{j:?}");
        assert_eq!(j.matched.len(), 1);
    }

    #[test]
    fn moment_severity_and_end_are_each_named_when_they_differ() {
        let mut r = raised(
            "2026-01-17T05:20:05.200Z",
            Some(("2026-01-17T06:00:00Z", "motion resumed (kitchen)")),
        );
        r.severity = Severity::Warning;
        let j = judge(&[fall()], &[], &[r]);
        assert!(!j.as_expected());
        let line = &j.differing[0];
        assert!(line.contains("+2.1 s from the expected moment"), "{line}");
        assert!(line.contains("severity warning instead of high"), "{line}");
        assert!(
            line.contains("resolved because \"motion resumed (kitchen)\", not \"door opened\""),
            "{line}"
        );
        let open = judge(&[fall()], &[], &[raised("2026-01-17T05:20:03Z", None)]);
        assert!(open.differing[0].contains("still open"), "{open:?}");
    }

    #[test]
    fn the_closest_alert_pairs_and_the_rest_are_missing_or_unexpected() {
        let early = raised("2026-01-10T01:00:00Z", None);
        let right = raised(
            "2026-01-17T05:20:03Z",
            Some(("2026-01-17T06:00:00Z", "door opened")),
        );
        let mut rhythm = raised("2026-01-17T05:00:00Z", None);
        rhythm.kind = AlertKind::Rhythm;
        let mut sos = fall();
        sos.kind = AlertKind::Sos;
        sos.device = Some("pendant".into());
        let j = judge(
            &[fall(), sos],
            &[AlertKind::Rhythm],
            &[early, right, rhythm],
        );
        assert_eq!(j.matched.len(), 1, "{j:?}");
        assert_eq!(j.missing.len(), 1);
        assert!(j.missing[0].starts_with("sos (pendant), high"), "{j:?}");
        assert_eq!(j.unexpected.len(), 1);
        assert!(j.unexpected[0].contains("2026-01-10T01:00:00Z"));
        assert_eq!(j.ignored.get(&AlertKind::Rhythm), Some(&1));
    }

    #[test]
    fn an_api_alert_tells_a_cleared_condition_from_a_staff_resolution() {
        let alert = |state, resolution: Option<&str>| Alert {
            id: 1,
            resident_id: 1,
            device_id: Some("gw".into()),
            kind: AlertKind::DeviceOffline,
            severity: Severity::Warning,
            state,
            escalated: false,
            opened_at: t("2026-01-17T05:00:00Z"),
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: Some(t("2026-01-17T05:10:00Z")),
            resolved_by: Some("carer".into()),
            resolution: resolution.map(str::to_owned),
            details: Value::Null,
            updated_at: t("2026-01-17T05:10:00Z"),
            assigned_to: None,
            snoozed_until: None,
            tier: 0,
        };
        let cleared = Raised::from_alert(&alert(
            AlertState::Resolved,
            Some("condition_cleared: device reported again"),
        ));
        let by_staff = Raised::from_alert(&alert(AlertState::Resolved, Some("visited, fine")));
        let open = Raised::from_alert(&alert(AlertState::Acknowledged, None));
        let want = [Expectation {
            kind: AlertKind::DeviceOffline,
            device: Some("gw".into()),
            severity: Some(Severity::Warning),
            at: None,
            resolution: Some(Resolution::because("device reported again")),
            incident: String::new(),
        }];
        assert!(judge(&want, &[], &[cleared]).as_expected());
        let j = judge(&want, &[], &[by_staff]);
        assert!(
            j.differing[0].contains("\"by carer: visited, fine\""),
            "{j:?}"
        );
        assert!(judge(&want, &[], &[open]).differing[0].ends_with("still open"));
    }

    #[test]
    fn replay_output_reads_as_alerts_with_their_ends() -> anyhow::Result<()> {
        let out = r#"{"at":"2026-12-01T11:30:00Z","kind":"dwell","severity":"high","change":"opened","details":{"limit_s":3600,"room":"bathroom"}}
{"at":"2026-12-01T11:31:00Z","kind":"sos","severity":"critical","change":"opened","details":{"device":"pendant","presses":1}}
{"at":"2026-12-01T11:31:10Z","kind":"sos","severity":"critical","change":"updated","details":{"device":"pendant","presses":2}}
{"at":"2026-12-01T11:45:00Z","kind":"dwell","severity":"high","change":"resolved","details":{"reason":"moved to bedroom"}}
{"summary":{"alerts":{"dwell":1,"sos":1},"days":1.0,"events":15,"per_day":{"all":2.0}}}
"#;
        let (raised, summary) = read_replay(out.as_bytes())?;
        assert_eq!(raised.len(), 2);
        assert_eq!(
            raised[0].resolved,
            Some((t("2026-12-01T11:45:00Z"), "moved to bedroom".to_owned()))
        );
        assert_eq!(raised[1].device.as_deref(), Some("pendant"));
        assert_eq!(raised[1].resolved, None);
        assert_eq!(summary.map(|s| s["events"].clone()), Some(15.into()));
        let bad = read_replay("{\"at\":1}\n".as_bytes());
        let why = bad.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(why.contains("alerts line 1"), "{why}");
        Ok(())
    }

    #[test]
    fn expectations_read_and_write_the_documented_shape() -> anyhow::Result<()> {
        let text = r#"{"ignore":["rhythm"],"alerts":[
            {"kind":"sos","device":"pendant","severity":"critical","at":"2026-01-20T03:00:00Z","resolution":"open"},
            {"kind":"dwell","resolution":{"reason":"moved to"}},
            {"kind":"inactivity"}]}"#;
        let e: Expectations = serde_json::from_str(text)?;
        assert_eq!(e.alerts[0].resolution, Some(Resolution::open()));
        assert_eq!(
            e.alerts[1].resolution,
            Some(Resolution::because("moved to"))
        );
        assert_eq!(e.alerts[2].resolution, None);
        let back: Expectations = serde_json::from_str(&serde_json::to_string(&e)?)?;
        assert_eq!(back, e);
        assert!(
            serde_json::from_str::<Expectations>(r#"{"alerts":[{"kind":"sos","when":1}]}"#)
                .is_err()
        );
        Ok(())
    }
}
