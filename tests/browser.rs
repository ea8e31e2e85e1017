//! The dashboard in a real browser: headless Debian Chromium driven by
//! `dashboard/tests/e2e.mjs` (playwright-core) against a real hub. This side sets
//! up users, residents and devices, and publishes the MQTT alert when the script
//! is ready for it. Screenshots go to `test-artifacts/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::helpers::*;

/// The safe zone's name: markup that would run a script if it reached `innerHTML`.
const ZONE_NAME: &str = "Home <img src=x onerror=\"window.__xss=1\">";

/// Longest the whole browser script may run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(420);

/// The resident created while the dashboards are open, and their card.
const LATE_NAME: &str = "Ogawa Fumi";
const LATE_ADDRESS: &str = "2-14-5 Chuo, Nakano-ku, Tokyo";
const LATE_PHONE: &str = "03-5555-0123";
const LATE_KEY_HOLDER: &str = "Mrs Sato next door (flat 102)";

fn late_card() -> serde_json::Value {
    json!({
        "address": LATE_ADDRESS,
        "phone": LATE_PHONE,
        "key_holder": LATE_KEY_HOLDER,
        "key_box": "Left of the gate, code 4821",
        "care_level": "care_2",
        "doctor": "Nakano Clinic, Dr Yamada",
        "care_notes": "Hard of hearing: ring long.\nA small dog.",
        "emergency_contacts": [
            {"name": "Ogawa Keiko", "relation": "daughter", "phone": "090-1111-2222"},
            {"name": "Sato Ichiro", "relation": "neighbour volunteer", "phone": "03-2222-3333"}
        ]
    })
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fails with the command to run when something the browser test needs is missing.
fn check_prerequisites(dashboard: &Path) -> Result<()> {
    let setup = "run `scripts/setup-dashboard.sh` (it installs Debian's chromium and \
                 the dashboard's npm packages)";
    if !chromium().exists() {
        bail!("{} not found: {setup}", chromium().display());
    }
    for pkg in ["leaflet", "playwright-core", "axe-core"] {
        if !dashboard.join("node_modules").join(pkg).exists() {
            bail!("dashboard/node_modules/{pkg} is missing: {setup}");
        }
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("node is not installed: {setup}");
    }
    Ok(())
}

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-artifacts/screenshots")
}

/// Log in; the blocked-sound banner; a resident created after login presses SOS and is
/// named within 2 s; the critical alarm repeats until acknowledged from the keyboard;
/// the card and one-click call records on the alert page; resolve; map, board, resident
/// page, handover, Japanese, admin (rules tried on the last 30 days), family; every page
/// in both languages, axe-core clean.
#[tokio::test]
async fn dashboard_in_a_real_browser() -> Result<()> {
    let dashboard = dashboard_dir();
    check_prerequisites(&dashboard)?;
    let hub = TestHub::start().await?;
    let mother = hub
        .resident(json!({"name": "Tanaka Hanako", "home": {"lat": 35.7074, "lon": 139.6638}}))
        .await?;
    let other = hub.resident(json!({"name": "Suzuki Jiro"})).await?;
    hub.expect(
        Method::POST,
        &format!("/residents/{mother}/geofences"),
        // A name written as markup: it must show as text, never run (stored XSS).
        Some(json!({"name": ZONE_NAME, "circle": {"lat": 35.7074, "lon": 139.6638, "radius_m": 300}})),
        201,
    )
    .await?;
    let users = [
        ("staff-a", "staff-a-password", "staff", vec![]),
        ("staff-b", "staff-b-password", "staff", vec![]),
        ("daughter", "daughter-password", "family", vec![mother]),
    ];
    for (name, password, role, ids) in &users {
        hub.expect(
            Method::POST,
            "/users",
            Some(
                json!({"username": name, "password": password, "role": role, "resident_ids": ids}),
            ),
            201,
        )
        .await?;
    }
    let tracker = hub.device(mother, "gps").await?;
    let motion = hub.device(mother, "motion").await?;
    let mut tracker_dev = connect_device(&hub, &tracker).await?;
    tracker_dev
        .publish_acked(
            &topic(&tracker, "gps"),
            r#"{"lat":35.7080,"lon":139.6640,"accuracy_m":15}"#,
        )
        .await?;
    let mut motion_dev = connect_device(&hub, &motion).await?;
    let now = chrono::Utc::now().timestamp_millis();
    for hours_ago in [3, 5, 26, 29, 50] {
        let ts = now - hours_ago * 3_600_000;
        motion_dev
            .publish_acked(
                &topic(&motion, "motion"),
                json!({"ts": ts, "motion": true, "room": "kitchen"}).to_string(),
            )
            .await?;
    }

    // A low battery: a warning the board puts first and its battery filter finds.
    motion_dev
        .publish_acked(&topic(&motion, "heartbeat"), r#"{"battery":10}"#)
        .await?;
    let shots = screenshot_dir();
    let mut node = Command::new("node")
        .arg(dashboard.join("tests/e2e.mjs"))
        .current_dir(&dashboard)
        .env("HUB_URL", &hub.base)
        .env("SCREENSHOT_DIR", &shots)
        .env("ADMIN_USER", "admin")
        .env("ADMIN_PASS", ADMIN_PASSWORD)
        .env("STAFF1_USER", users[0].0)
        .env("STAFF1_PASS", users[0].1)
        .env("STAFF2_USER", users[1].0)
        .env("STAFF2_PASS", users[1].1)
        .env("FAMILY_USER", users[2].0)
        .env("FAMILY_PASS", users[2].1)
        .env("FAMILY_RESIDENT_NAME", "Tanaka Hanako")
        .env("OTHER_RESIDENT_NAME", "Suzuki Jiro")
        .env("OTHER_RESIDENT_ID", other.to_string())
        .env("ZONE_NAME", ZONE_NAME)
        .env("LATE_RESIDENT_NAME", LATE_NAME)
        .env("LATE_ADDRESS", LATE_ADDRESS)
        .env("LATE_PHONE", LATE_PHONE)
        .env("LATE_KEY_HOLDER", LATE_KEY_HOLDER)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start node")?;
    let mut stdin = node.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
    let stdout = node.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let stderr = node.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            text.push_str(&l);
            text.push('\n');
        }
        text
    });

    let run = async {
        let mut output = String::new();
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            output.push_str(&line);
            output.push('\n');
            if line == "READY" {
                // Created while the dashboards are open: its alert must still carry its name.
                let late = hub.resident(json!({"name": LATE_NAME})).await?;
                hub.expect(
                    Method::PATCH,
                    &format!("/residents/{late}"),
                    Some(json!({"card": late_card()})),
                    200,
                )
                .await?;
                let button = hub.device(late, "button").await?;
                let mut button_dev = connect_device(&hub, &button).await?;
                stdin.write_all(b"PUBLISHING\n").await?;
                stdin.flush().await?;
                button_dev
                    .publish_acked(&topic(&button, "sos"), "{}")
                    .await?;
            }
            // The mother walks out of her safe zone, then on: two accurate fixes confirm
            // the exit, one more moves her on the alert's map.
            let walk: &[f64] = match line.as_str() {
                "WANDER" => &[35.7150, 35.7152],
                "MOVE" => &[35.7165],
                _ => &[],
            };
            for lat in walk {
                let ts = chrono::Utc::now().timestamp_millis();
                tracker_dev
                    .publish_acked(
                        &topic(&tracker, "gps"),
                        json!({"lat": lat, "lon": 139.6638, "accuracy_m": 10, "ts": ts})
                            .to_string(),
                    )
                    .await?;
            }
            if !walk.is_empty() {
                stdin.write_all(b"WALKED\n").await?;
                stdin.flush().await?;
            }
        }
        Ok::<_, anyhow::Error>(output)
    };
    let output = tokio::time::timeout(SCRIPT_LIMIT, run)
        .await
        .map_err(|_| anyhow!("the browser script ran longer than {SCRIPT_LIMIT:?}"))??;
    let status = node.wait().await?;
    let errors = errors.await.unwrap_or_default();
    println!("{output}");
    if !status.success() {
        bail!("browser test failed ({status})\n--- stdout ---\n{output}\n--- stderr ---\n{errors}");
    }
    assert!(output.contains("e2e: all checks passed"), "{output}");
    println!("screenshots in {}", shots.display());
    Ok(())
}

/// The passage history on the resident page, as the resident's family sees it: where the
/// tag was last heard ("Last seen at Koenji station, north exit, 12 min ago") and the list.
#[tokio::test]
async fn family_sees_the_passage_history_in_a_real_browser() -> Result<()> {
    const STATION: &str = "Koenji station, north exit";
    let dashboard = dashboard_dir();
    check_prerequisites(&dashboard)?;
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Ito Yoshiko"})).await?;
    let (user, password) = ("son", "son-password-1");
    let family =
        json!({"username": user, "password": password, "role": "family", "resident_ids": [rid]});
    hub.expect(Method::POST, "/users", Some(family), 201)
        .await?;
    let tag = hub.device(rid, "tag").await?;
    let tag_id = "iBeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0-1-7";
    let body = json!({"tag_id": tag_id});
    hub.expect(
        Method::POST,
        &format!("/devices/{}/tag", tag.id),
        Some(body),
        201,
    )
    .await?;
    let phone = hub.device(rid, "receiver").await?;
    let station = hub.device(rid, "receiver").await?;
    let places = [
        (&phone, json!({"place": "volunteer app", "range_m": 50})),
        (
            &station,
            json!({"place": STATION, "lat": 35.7056, "lon": 139.6496, "range_m": 30}),
        ),
    ];
    for (rx, place) in places {
        let path = format!("/devices/{}/receiver", rx.id);
        hub.expect(Method::PUT, &path, Some(place), 200).await?;
    }
    let minutes_ago =
        |m: i64| (chrono::Utc::now() - chrono::Duration::minutes(m)).timestamp_millis();
    let heard = [
        (
            &phone,
            json!({"tag": tag_id, "rssi": -80, "ts": minutes_ago(30), "lat": 35.7080, "lon": 139.6600}),
        ),
        (
            &station,
            json!({"tag": tag_id, "rssi": -77, "ts": minutes_ago(12)}),
        ),
    ];
    for (rx, sighting) in heard {
        let mut client = connect_device(&hub, rx).await?;
        client
            .publish_acked(&topic(rx, "sighting"), sighting.to_string())
            .await?;
    }
    eventually("both passages stored", Duration::from_secs(10), || async {
        (crate::ble::sightings(&hub, rid).await?.len() == 2).then_some(())
    })
    .await?;

    let out = Command::new("node")
        .arg(dashboard.join("tests/sightings.mjs"))
        .current_dir(&dashboard)
        .env("HUB_URL", &hub.base)
        .env("SCREENSHOT_DIR", screenshot_dir())
        .env("FAMILY_USER", user)
        .env("FAMILY_PASS", password)
        .env("RESIDENT_ID", rid.to_string())
        .env("LAST_PLACE", STATION)
        .env("PASSAGES", "2")
        .env("CHROMIUM", chromium())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRIPT_LIMIT, out).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "sightings browser test failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(stdout.contains("sightings: all checks passed"), "{stdout}");
    Ok(())
}
