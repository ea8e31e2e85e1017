//! Replaying a resident's stored history: a day recorded through real MQTT into a real
//! hub, then replayed with other rules through `POST /residents/{id}/replay` and through
//! `hub replay --database-url` on the hub's own database while it runs.

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Duration, FixedOffset, Offset, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use mimamori_protocol::api::DeviceCreated;

use crate::helpers::*;

/// Tokyo's time: nine hours ahead of UTC all year.
pub fn tokyo() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).unwrap_or_else(|| Utc.fix())
}

/// The day before yesterday in Tokyo, from its local midnight: the recorded day.
pub fn recorded_day() -> DateTime<Utc> {
    let tokyo = tokyo();
    let today = Utc::now().with_timezone(&tokyo).date_naive();
    (today - Duration::days(2))
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(tokyo).single())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn at(day: DateTime<Utc>, hour: i64, minute: i64) -> DateTime<Utc> {
    day + Duration::hours(hour) + Duration::minutes(minute)
}

/// Mrs Ishii in Tokyo, with motion sensors in her bedroom and kitchen, and her day the
/// day before yesterday: up at 07:00, in the kitchen from 08:00, a quiet spell from
/// 09:00 to 11:30 in which she answered "I'm OK" at 11:01, then about every hour until
/// 21:00, and to bed at 21:30: 16 readings. History two days old is sent as a backfill
/// sends it, so the hub must take it (`--max-age-s`).
pub async fn recorded_home(hub: &TestHub, day: DateTime<Utc>) -> Result<i64> {
    let rules = json!({"offline": {"motion_s": 86400}});
    let rid = hub
        .resident(json!({"name": "Ishii Toku", "timezone": "Asia/Tokyo", "rules": rules}))
        .await?;
    let sensor = |room: &str| json!({"resident_id": rid, "kind": "motion", "name": format!("{room} sensor"), "room": room});
    let created = hub
        .expect(Method::POST, "/devices", Some(sensor("bedroom")), 201)
        .await?;
    let bedroom: DeviceCreated = serde_json::from_value(created)?;
    let created = hub
        .expect(Method::POST, "/devices", Some(sensor("kitchen")), 201)
        .await?;
    let kitchen: DeviceCreated = serde_json::from_value(created)?;
    let moved = |t: DateTime<Utc>| json!({"ts": t.timestamp_millis(), "motion": true}).to_string();
    let mut bed = connect_device(hub, &bedroom).await?;
    let mut kit = connect_device(hub, &kitchen).await?;
    bed.publish_acked(&topic(&bedroom, "motion"), moved(at(day, 7, 0)))
        .await?;
    let hours = [(8, 0), (9, 0), (11, 30)]
        .into_iter()
        .chain((12..=21).map(|h| (h, 0)));
    for (h, m) in hours {
        kit.publish_acked(&topic(&kitchen, "motion"), moved(at(day, h, m)))
            .await?;
    }
    let ok = json!({"ts": at(day, 11, 1).timestamp_millis()}).to_string();
    kit.publish_acked(&topic(&kitchen, "ok"), ok).await?;
    bed.publish_acked(&topic(&bedroom, "motion"), moved(at(day, 21, 30)))
        .await?;
    Ok(rid)
}

/// Each change as (time, kind, change).
fn changes(v: &Value) -> Vec<(String, String, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (text("at"), text("kind"), text("change"))
        })
        .collect()
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn change(t: DateTime<Utc>, kind: &str, what: &str) -> (String, String, String) {
    (stamp(t), kind.to_owned(), what.to_owned())
}

/// `hub replay --database-url …` as a separate process: its changes and its summary.
async fn replay_binary(args: &[&str]) -> Result<(Vec<Value>, Value)> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mimamori-test-hub"))
        .arg("replay")
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        return Err(anyhow!(
            "hub replay {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut lines = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice::<Value>)
        .collect::<Result<Vec<_>, _>>()
        .context("hub replay printed a line that is not JSON")?;
    let summary = lines.pop().ok_or_else(|| anyhow!("no summary line"))?;
    Ok((lines, summary["summary"].clone()))
}

/// What `hub replay` says on stderr when it refuses.
async fn replay_refused(args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mimamori-test-hub"))
        .arg("replay")
        .args(args)
        .output()
        .await?;
    assert!(!out.status.success(), "hub replay {args:?} should fail");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn sqlite_stored_history_replays_with_other_rules_over_the_api_and_the_command_line(
) -> Result<()> {
    stored_history_replays(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_stored_history_replays_with_other_rules_over_the_api_and_the_command_line(
) -> Result<()> {
    if skip_postgres(
        "postgres_stored_history_replays_with_other_rules_over_the_api_and_the_command_line",
    ) {
        return Ok(());
    }
    stored_history_replays(Backend::Postgres).await
}

async fn stored_history_replays(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &["--max-age-s", "1209600"]).await?;
    let day = recorded_day();
    let rid = recorded_home(&hub, day).await?;
    let path = format!("/residents/{rid}/replay");
    let (from, until) = (stamp(day), stamp(at(day, 24, 0)));
    let replay = |rules: Value| {
        let body = json!({"from": from, "until": until, "rules": rules});
        hub.expect(Method::POST, &path, Some(body), 200)
    };

    // With her live settings (3 h) the quiet spell of 2.5 h raised nothing.
    let live = replay(Value::Null).await?;
    assert_eq!(changes(&live["changes"]), [], "{live}");
    let history = &live["summary"]["history"];
    assert_eq!(history["readings"], 16, "{live}");
    assert_eq!(history["first_reading"], json!(stamp(at(day, 7, 0))));

    // Two hours would have raised it at 11:00, and her movement at 11:30 ended it.
    let shorter = json!({"inactivity": {"day_threshold_s": 7200}});
    let tried = replay(shorter.clone()).await?;
    assert_eq!(
        changes(&tried["changes"]),
        [
            change(at(day, 11, 0), "inactivity", "opened"),
            change(at(day, 11, 30), "inactivity", "resolved"),
        ],
        "{tried}"
    );
    assert_eq!(tried["summary"]["alerts"], json!({"inactivity": 1}));

    // Asking her first: she answered at 11:01, so staff would never have seen it.
    let mut asking = shorter.clone();
    asking["check"] = json!({"enabled": true, "timeout_s": 120});
    let asked = replay(asking).await?;
    assert_eq!(
        changes(&asked["changes"]),
        [
            change(at(day, 11, 0), "inactivity", "pending"),
            change(at(day, 11, 1), "inactivity", "confirmed"),
        ],
        "{asked}"
    );
    assert_eq!(asked["summary"]["alerts"], json!({}));
    assert_eq!(asked["summary"]["confirmed"], json!({"inactivity": 1}));

    // The same from the command line, on the database the hub is using.
    let rules = shorter.to_string();
    let day_text = day.with_timezone(&tokyo()).format("%Y-%m-%d").to_string();
    let args = [
        "--database-url",
        &hub.db_url,
        "--resident-id",
        &rid.to_string(),
        "--from",
        &day_text,
        "--until",
        &until,
        "--rules",
        &rules,
    ];
    let (lines, summary) = replay_binary(&args).await?;
    assert_eq!(Value::Array(lines), tried["changes"]);
    assert_eq!(summary["alerts"], tried["summary"]["alerts"]);
    assert_eq!(summary["history"]["readings"], 16);
    let unknown = replay_refused(&[
        "--database-url",
        &hub.db_url,
        "--resident-id",
        "999999",
        "--from",
        &day_text,
    ])
    .await?;
    assert!(unknown.contains("no resident 999999"), "{unknown}");
    let bad_date = replay_refused(&[
        "--database-url",
        &hub.db_url,
        "--resident-id",
        &rid.to_string(),
        "--from",
        "2026-02-30",
    ])
    .await?;
    assert!(
        bad_date.contains("from: \"2026-02-30\" is neither a date (YYYY-MM-DD) nor a time"),
        "{bad_date}"
    );
    Ok(())
}

#[tokio::test]
async fn a_replay_is_for_staff_bounded_logged_and_audited() -> Result<()> {
    let hub = TestHub::start_with(Backend::Sqlite, &["--max-age-s", "1209600"]).await?;
    let rid = recorded_home(&hub, recorded_day()).await?;
    let path = format!("/residents/{rid}/replay");
    let daughter = hub.user("ishii-daughter", "family", &[rid]).await?;
    let (status, body) = hub
        .call(Some(&daughter), Method::POST, &path, Some(json!({})))
        .await?;
    assert_eq!(status, 403, "a family account does not replay: {body}");
    let carer = hub.user("carer-abe", "staff", &[]).await?;
    let (status, body) = hub
        .call(Some(&carer), Method::POST, &path, Some(json!({})))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["history"]["readings"], 16, "{body}");

    let logged = crate::privacy::logged(&hub, rid, "the replay in the access log", |e| {
        e["what"] == "replay" && e["actor"] == "carer-abe"
    })
    .await?;
    assert_eq!(logged["rows"], 16, "{logged}");
    let audit = hub
        .expect(Method::GET, "/audit?limit=20", None, 200)
        .await?;
    let replayed = audit
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["action"] == "resident.replay")
        .ok_or_else(|| anyhow!("no resident.replay in {audit}"))?;
    assert_eq!(
        (&replayed["actor"], &replayed["target"]),
        (&json!("carer-abe"), &json!(format!("resident/{rid}")))
    );

    let refused = |body: Value, status: u16| {
        let path = path.clone();
        let hub = &hub;
        async move {
            let (got, v) = hub.admin(Method::POST, &path, Some(body)).await?;
            assert_eq!(got, status, "{v}");
            Ok::<_, anyhow::Error>(v["message"].as_str().unwrap_or_default().to_owned())
        }
    };
    let long = refused(json!({"from": "2026-01-01", "until": "2026-06-01"}), 400).await?;
    assert!(
        long.contains("at most 92 days are replayed at once"),
        "{long}"
    );
    let bad = refused(json!({"from": "yesterday"}), 422).await?;
    assert!(
        bad.contains("from: \"yesterday\" is neither a date"),
        "{bad}"
    );
    let rules = refused(
        json!({"rules": {"inactivity": {"day_threshold_s": 0}}}),
        422,
    )
    .await?;
    assert!(rules.contains("at least 1 second"), "{rules}");
    let (status, _) = hub
        .admin(Method::POST, "/residents/999999/replay", Some(json!({})))
        .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn hub_replay_says_why_a_database_does_not_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = format!("sqlite:{}", dir.path().join("nothing.db").display());
    let args = [
        "--database-url",
        missing.as_str(),
        "--resident-id",
        "1",
        "--from",
        "2026-11-01",
    ];
    let err = replay_refused(&args).await?;
    assert!(err.contains("there is no SQLite database at"), "{err}");
    assert!(
        !dir.path().join("nothing.db").exists(),
        "a replay creates no database"
    );
    let other = dir.path().join("other.db");
    std::fs::write(&other, b"")?;
    let url = format!("sqlite:{}", other.display());
    let err = replay_refused(&[
        "--database-url",
        &url,
        "--resident-id",
        "1",
        "--from",
        "2026-11-01",
    ])
    .await?;
    assert!(err.contains("not a Mimamori hub database"), "{err}");
    let err = replay_refused(&[
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
        "--resident-id",
        "1",
        "--from",
        "2026-11-01",
    ])
    .await?;
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    Ok(())
}
