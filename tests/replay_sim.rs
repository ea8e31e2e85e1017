//! `device-sim record` through the real `hub replay`: sixty days of a simulated home with
//! day-service visits, long outings, a night away and six incidents, replayed by the hub
//! program and checked with `device-sim check` — every incident alerted at its moment, with
//! its severity and its end, and nothing else. The commands are docs/simulator.md's own.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::docs::{fenced_blocks_of, shell_blocks};
use crate::helpers::*;

fn page() -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/simulator.md");
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// The page's block that records a home, replays it and checks it.
fn recording_block() -> Result<String> {
    shell_blocks("docs/simulator.md")?
        .into_iter()
        .find(|b| b.contains("device-sim record "))
        .context("docs/simulator.md has no `device-sim record` block")
}

/// Runs `script` with bash in `dir`, `hub` and `device-sim` being the programs under test.
async fn bash_in(dir: &Path, script: &str) -> Result<std::process::Output> {
    let path = path_with_tools(dir)?;
    Ok(tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .await?)
}

fn read_lines(path: &Path) -> Result<Vec<Value>> {
    std::fs::read_to_string(path)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: {l}", path.display())))
        .collect()
}

fn kind_counts<'a>(kinds: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for k in kinds {
        *m.entry(k.to_owned()).or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn replay_sim_sixty_days_alert_every_incident_at_its_moment_and_nothing_else() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = bash_in(dir.path(), &recording_block()?).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the documented recording failed its check:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The page shows the check's output as it is.
    let page = page()?;
    let shown = fenced_blocks_of(&page, |l| l == "```text");
    assert!(
        shown.iter().any(|b| *b == stdout),
        "docs/simulator.md shows another check output than:\n{stdout}"
    );

    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json"))?)?;
    let want = expected["alerts"].as_array().cloned().unwrap_or_default();
    assert_eq!(want.len(), 8, "six incidents, eight alerts: {expected:#}");
    // The page's example entry is one of them, as written.
    let example: Value = fenced_blocks_of(&page, |l| l == "```json")
        .iter()
        .find_map(|b| serde_json::from_str(b).ok())
        .context("docs/simulator.md has no JSON example")?;
    assert!(want.contains(&example), "{example} is not in {want:#?}");

    let events = std::fs::read_to_string(dir.path().join("events.jsonl"))?;
    let stamps: Vec<String> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["ts"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(stamps.len(), events.lines().count(), "every line has a ts");
    assert!(
        stamps.windows(2).any(|w| w[1] < w[0]),
        "some lines are delivered out of order"
    );

    let lines = read_lines(&dir.path().join("alerts.jsonl"))?;
    let summary = &lines.last().context("no output")?["summary"];
    assert_eq!(summary["events"].as_u64(), Some(stamps.len() as u64));
    let days = summary["days"].as_f64().unwrap_or_default();
    assert!((59.5..=60.0).contains(&days), "{summary}");
    // The summary's counts are the incidents' alerts; only the advisory rhythm comes on top.
    let mut counted: BTreeMap<String, u64> = summary["alerts"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or_default()))
        .collect();
    counted.remove("rhythm");
    let by_kind = kind_counts(want.iter().filter_map(|e| e["kind"].as_str()));
    assert_eq!(counted, by_kind, "{summary}");

    // Every stillness alert is an incident's: none from a day-service visit, an outing or
    // the night away.
    for l in lines.iter().filter(|l| l["change"] == "opened") {
        let kind = l["kind"].as_str().unwrap_or_default();
        if kind == "inactivity" || kind == "no_morning_activity" {
            assert!(
                want.iter()
                    .any(|e| e["kind"] == kind
                        && e["at"].as_str().is_some_and(|at| close(at, &l["at"]))),
                "a false {kind} alert: {l}"
            );
        }
    }
    Ok(())
}

/// Two RFC 3339 times within a second of each other.
fn close(a: &str, b: &Value) -> bool {
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    match (parse(a), b.as_str().and_then(parse)) {
        (Some(a), Some(b)) => (a - b).num_milliseconds().abs() <= 1_000,
        _ => false,
    }
}

/// Without the entrance door telling that the resident is out, the same sixty days raise
/// inactivity alerts during the day-service visits and outings, and the check says so.
#[tokio::test]
async fn replay_sim_without_away_detection_the_absences_raise_false_alerts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let record = recording_block()?
        .lines()
        .find(|l| l.starts_with("device-sim record "))
        .context("no record line")?
        .to_owned();
    let script = format!(
        "{record}\nhub replay --resident resident.json --events events.jsonl \
         --rules '{{\"away\": {{\"enabled\": false}}}}' > alerts.jsonl\n\
         device-sim check --expect expected.json --alerts alerts.jsonl || echo \"exit $?\""
    );
    let out = bash_in(dir.path(), &script).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("exit 1\n"), "the check fails:\n{stdout}");
    let unexpected: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("UNEXPECTED inactivity"))
        .collect();
    assert!(
        unexpected.len() >= 10,
        "day-service visits and long outings look like stillness without the door:\n{stdout}"
    );
    // The incidents themselves are still caught.
    assert!(!stdout.contains("MISSING"), "{stdout}");
    Ok(())
}
