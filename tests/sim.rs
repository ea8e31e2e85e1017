//! device-sim against a real hub: every scenario with `--expect`, a fleet's day with no false
//! alerts, the load generator, speaking as Zigbee2MQTT, OwnTracks and Traccar Client (`--as`),
//! and the commands and snippets of docs/simulator.md, which these tests take from the page
//! itself so the page cannot drift from what is tested.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::Method;
use serde_json::Value;
use tokio::process::Command;

use crate::helpers::*;

fn doc() -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/simulator.md");
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// Every `device-sim …` command line of the page.
fn doc_commands() -> Result<Vec<String>> {
    Ok(doc()?
        .lines()
        .filter(|l| l.starts_with("device-sim "))
        .map(str::to_string)
        .collect())
}

/// The one documented command that starts with `prefix`, as arguments.
fn doc_command(prefix: &str) -> Result<Vec<String>> {
    let found: Vec<String> = doc_commands()?
        .into_iter()
        .filter(|l| l.starts_with(prefix))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.split_whitespace().skip(1).map(str::to_string).collect()),
        _ => bail!(
            "docs/simulator.md has {} commands starting with {prefix:?}",
            found.len()
        ),
    }
}

/// The documented command for one scenario.
fn scenario_command(name: &str) -> Result<Vec<String>> {
    doc_command(&format!("device-sim run --scenario {name} "))
}

/// Runs device-sim against `hub` in the hub's temporary folder.
async fn sim(hub: &TestHub, args: &[String]) -> Result<Output> {
    let out = Command::new(env!("CARGO_BIN_EXE_mimamori-test-device-sim"))
        .args(args)
        .current_dir(hub.dir.path())
        .env("MIMAMORI_HUB", &hub.base)
        .env("MIMAMORI_MQTT", format!("127.0.0.1:{}", hub.mqtt_port))
        .env("MIMAMORI_PASSWORD", ADMIN_PASSWORD)
        .kill_on_drop(true)
        .output()
        .await?;
    Ok(out)
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Alert kinds the hub holds for the residents whose name contains `marker`.
async fn kinds_of(hub: &TestHub, marker: &str) -> Result<Vec<String>> {
    let residents = hub.expect(Method::GET, "/residents", None, 200).await?;
    let ids: Vec<i64> = residents
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.contains(marker)))
        .filter_map(|r| r["id"].as_i64())
        .collect();
    if ids.is_empty() {
        bail!("no resident named like {marker:?}");
    }
    let mut kinds = Vec::new();
    for id in ids {
        for a in hub.alerts(id).await? {
            kinds.push(a["kind"].as_str().unwrap_or_default().to_string());
        }
    }
    kinds.sort();
    Ok(kinds)
}

/// Runs the documented command of a scenario; it must pass `--expect`, and the hub's alerts
/// seen through the API must be `want` (checked here too, not only by the simulator).
async fn scenario(name: &str, want: &[&str]) -> Result<()> {
    let hub = TestHub::start().await?;
    let out = sim(&hub, &scenario_command(name)?).await?;
    if !out.status.success() {
        bail!("scenario {name} failed its expectation:\n{}", show(&out));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    for kind in want {
        assert!(
            stdout.contains(&format!("=> expect {kind}")),
            "{name} announces {kind}:\n{stdout}"
        );
    }
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        kinds_of(&hub, &format!("({name})")).await?,
        want,
        "{}",
        show(&out)
    );
    Ok(())
}

#[tokio::test]
async fn sim_scenario_fall_raises_inactivity() -> Result<()> {
    scenario("fall", &["inactivity"]).await
}

#[tokio::test]
async fn sim_scenario_no_morning_raises_no_morning_activity() -> Result<()> {
    scenario("no-morning", &["no_morning_activity"]).await
}

#[tokio::test]
async fn sim_scenario_wander_raises_geofence_exit() -> Result<()> {
    scenario("wander", &["geofence_exit"]).await
}

#[tokio::test]
async fn sim_scenario_gps_jitter_raises_nothing() -> Result<()> {
    scenario("gps-jitter", &[]).await
}

#[tokio::test]
async fn sim_scenario_battery_dies_raises_low_battery_and_offline() -> Result<()> {
    scenario("battery-dies", &["device_offline", "low_battery"]).await
}

#[tokio::test]
async fn sim_scenario_sos_raises_sos() -> Result<()> {
    scenario("sos", &["sos"]).await
}

#[tokio::test]
async fn sim_scenario_offline_gateway_raises_device_offline() -> Result<()> {
    scenario("offline-gateway", &["device_offline"]).await
}

#[tokio::test]
async fn sim_bad_api_credentials_exit_3_at_once() -> Result<()> {
    // The smoke test must be able to fail: refused API credentials are an error of their
    // own, exit 3, given at the first refusal (asking again with the same password is no use).
    let hub = TestHub::start().await?;
    let mut args = scenario_command("sos")?;
    args.extend(["--password".to_string(), "not-the-password".to_string()]);
    let out = sim(&hub, &args).await?;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot log in"),
        "{}",
        show(&out)
    );
    Ok(())
}

/// The documented fleet: 20 residents, a day at 1440x with a fixed seed and the gps-jitter
/// scenario mixed in. No alert at all may come of it; then an integrator's own device sends
/// with credentials from the fleet file, as the page shows.
#[tokio::test]
async fn sim_fleet_day_raises_no_false_alerts() -> Result<()> {
    let hub = TestHub::start().await?;
    let out = sim(&hub, &doc_command("device-sim provision --residents ")?).await?;
    assert!(out.status.success(), "{}", show(&out));
    let fleet: Value =
        serde_json::from_str(&std::fs::read_to_string(hub.dir.path().join("fleet.json"))?)?;
    let residents = fleet["residents"].as_array().cloned().unwrap_or_default();
    assert_eq!(residents.len(), 20);
    assert!(residents.iter().any(|r| r["devices"]
        .as_array()
        .is_some_and(|d| d.iter().any(|d| d["kind"] == "gps"))));
    assert!(residents.iter().all(|r| r["devices"][0]["mqtt"]["password"]
        .as_str()
        .is_some_and(|p| !p.is_empty())));

    let out = sim(&hub, &doc_command("device-sim run --fleet fleet.json ")?).await?;
    assert!(
        out.status.success(),
        "the fleet's day raised alerts:\n{}",
        show(&out)
    );
    let all = hub.expect(Method::GET, "/alerts", None, 200).await?;
    assert_eq!(all.as_array().map(Vec::len), Some(0), "alerts: {all}");
    let accepted = hub.metric("mimamori_messages_accepted_total").await?;
    assert!(
        accepted > 20.0 * 500.0,
        "a day of life is thousands of messages, got {accepted}"
    );

    integrator_snippet(&hub, &residents).await
}

async fn integrator_snippet(hub: &TestHub, residents: &[Value]) -> Result<()> {
    let page = doc()?;
    let snippet = page
        .split("```sh\n")
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("mosquitto_pub"))
        .ok_or_else(|| anyhow!("no mosquitto_pub snippet in the page"))?;
    let rid = residents[0]["id"]
        .as_i64()
        .ok_or_else(|| anyhow!("no resident id"))?;
    let before = hub.readings(rid).await?.len();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", snippet])
        .current_dir(hub.dir.path())
        .env("MIMAMORI_MQTT", format!("127.0.0.1:{}", hub.mqtt_port))
        .output()
        .await?;
    assert!(out.status.success(), "{}", show(&out));
    let newest = eventually(
        "the integrator's door message",
        Duration::from_secs(10),
        || async {
            let r = hub.readings(rid).await.ok()?;
            (r.len() > before || r.len() == 1000)
                .then(|| r.first().cloned())
                .flatten()
        },
    )
    .await?;
    assert_eq!(newest["kind"], "door", "{newest}");
    Ok(())
}

#[tokio::test]
async fn sim_load_reports_sent_and_acked() -> Result<()> {
    let hub = TestHub::start().await?;
    let out = sim(&hub, &doc_command("device-sim load ")?).await?;
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .ok_or_else(|| anyhow!("no JSON summary in {stdout}"))?;
    let s = &summary["summary"];
    assert_eq!(s["connections"], 20);
    assert_eq!(s["errors"], 0);
    let sent = s["sent"].as_u64().unwrap_or(0);
    assert!(sent >= 300, "200 msg/s for 3 s, sent {sent}");
    assert_eq!(s["acked"].as_u64(), Some(sent));
    assert!(s["per_second"].as_array().is_some_and(|p| p.len() >= 2));
    assert!(s["ack_latency_ms_p99"].as_f64().is_some());
    assert!(hub.metric("mimamori_messages_accepted_total").await? >= sent as f64);
    Ok(())
}

#[test]
fn sim_docs_commands_are_the_tested_ones() -> Result<()> {
    let mut tested = vec![
        doc_command("device-sim provision --residents ")?,
        doc_command("device-sim run --fleet fleet.json ")?,
        doc_command("device-sim load ")?,
        doc_command(BACKFILL)?,
        doc_command(ZIGBEE_PROVISION)?,
        doc_command(ZIGBEE_FLEET_RUN)?,
    ];
    // Recording a home and checking its replay: tests/replay_sim.rs runs the page's block.
    tested.push(doc_command("device-sim record ")?);
    tested.push(doc_command("device-sim check ")?);
    for (client, name) in AS_SCENARIOS {
        tested.push(as_command(client, name)?);
    }
    for name in [
        "fall",
        "no-morning",
        "wander",
        "gps-jitter",
        "battery-dies",
        "sos",
        "offline-gateway",
    ] {
        tested.push(scenario_command(name)?);
    }
    // Every command on the page is one of these: none is shown that no test runs.
    assert_eq!(doc_commands()?.len(), tested.len());
    Ok(())
}

const BACKFILL: &str = "device-sim backfill ";

/// The documented backfill on a small fleet: every resident gets motion on each of the last
/// 7 days, stored at its own time, and no alert comes of it.
#[tokio::test]
async fn sim_backfill_gives_a_week_of_history_and_no_alert() -> Result<()> {
    // As docs/simulator.md says: a week of history is older than the day a `ts` may lie
    // in the past by default.
    let hub = TestHub::start_with(Backend::Sqlite, &["--max-age-s", "691200"]).await?;
    let provision: Vec<String> = ["provision", "--residents", "2", "--fleet", "fleet.json"]
        .map(String::from)
        .to_vec();
    let out = sim(&hub, &provision).await?;
    assert!(out.status.success(), "{}", show(&out));
    let out = sim(&hub, &doc_command(BACKFILL)?).await?;
    assert!(out.status.success(), "{}", show(&out));
    let residents = hub.expect(Method::GET, "/residents", None, 200).await?;
    let now = chrono::Utc::now();
    for r in residents.as_array().into_iter().flatten() {
        let id = r["id"].as_i64().ok_or_else(|| anyhow!("no id in {r}"))?;
        let act = hub
            .expect(
                Method::GET,
                &format!("/residents/{id}/activity?days=8"),
                None,
                200,
            )
            .await?;
        let days: std::collections::BTreeSet<i64> = act["hours"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["hour"].as_str())
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (now - t.with_timezone(&chrono::Utc)).num_days())
            .collect();
        assert!(
            (1..7).all(|d| days.contains(&d)),
            "resident {id}: activity {days:?} days ago"
        );
    }
    let all = hub.expect(Method::GET, "/alerts", None, 200).await?;
    assert_eq!(all.as_array().map(Vec::len), Some(0), "alerts: {all}");
    Ok(())
}

// -- `--as`: the simulator speaking as the clients of docs/gateways.md --

const ZIGBEE_PROVISION: &str = "device-sim provision --as zigbee2mqtt ";
const ZIGBEE_FLEET_RUN: &str = "device-sim run --fleet zigbee.json ";
/// The documented `--as` scenario commands.
const AS_SCENARIOS: [(&str, &str); 6] = [
    ("zigbee2mqtt", "fall"),
    ("chirpstack", "fall"),
    ("echonet", "fall"),
    ("ble", "wander"),
    ("owntracks", "wander"),
    ("osmand", "wander"),
];

fn as_command(client: &str, name: &str) -> Result<Vec<String>> {
    doc_command(&format!("device-sim run --as {client} --scenario {name} "))
}

/// The one resident whose name contains `marker`, and its devices.
async fn resident_named(hub: &TestHub, marker: &str) -> Result<(i64, Vec<Value>)> {
    let residents = hub.expect(Method::GET, "/residents", None, 200).await?;
    let ids: Vec<i64> = residents
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.contains(marker)))
        .filter_map(|r| r["id"].as_i64())
        .collect();
    let [id] = ids[..] else {
        bail!("{} residents named like {marker:?}", ids.len());
    };
    let devices = hub.expect(Method::GET, "/devices", None, 200).await?;
    let devices = devices
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["resident_id"] == id)
        .cloned()
        .collect();
    Ok((id, devices))
}

fn device_of<'a>(devices: &'a [Value], kind: &str, name: &str) -> Result<&'a str> {
    devices
        .iter()
        .find(|d| d["kind"] == kind && d["name"] == name)
        .and_then(|d| d["id"].as_str())
        .ok_or_else(|| anyhow!("no {kind} device named {name:?} in {devices:?}"))
}

/// Runs a documented `--as` scenario, which must pass `--expect` and leave exactly `want`
/// raised; nothing the clients sent may have been refused. Returns the resident and devices.
async fn as_scenario(
    hub: &TestHub,
    client: &str,
    name: &str,
    want: &str,
) -> Result<(i64, Vec<Value>)> {
    let out = sim(hub, &as_command(client, name)?).await?;
    if !out.status.success() {
        bail!(
            "--as {client} --scenario {name} failed its expectation:\n{}",
            show(&out)
        );
    }
    assert_eq!(
        kinds_of(hub, &format!("({name})")).await?,
        vec![want.to_string()],
        "{}",
        show(&out)
    );
    let refused = hub.expect(Method::GET, "/rejected", None, 200).await?;
    assert_eq!(
        refused.as_array().map(Vec::len),
        Some(0),
        "refused: {refused}"
    );
    resident_named(hub, &format!("({name})")).await
}

/// OwnTracks' `tst` and OsmAnd's `timestamp` are whole seconds; the native tracker sends no
/// time, so its fixes carry the hub's receive time to the millisecond.
async fn tracker_fixes_are_whole_seconds(hub: &TestHub, rid: i64, tracker: &str) -> Result<usize> {
    let fixes: Vec<Value> = hub
        .readings(rid)
        .await?
        .into_iter()
        .filter(|r| r["kind"] == "gps")
        .collect();
    assert!(fixes.iter().all(|r| r["device_id"] == tracker), "{fixes:?}");
    for f in &fixes {
        let ts = f["ts"].as_str().unwrap_or_default();
        let ts = chrono::DateTime::parse_from_rfc3339(ts)?;
        assert_eq!(
            ts.timestamp_subsec_millis(),
            0,
            "a client's fix has whole seconds: {f}"
        );
    }
    Ok(fixes.len())
}

/// What the home gateway has registered of one family (`lorawan`, `echonet`).
async fn on_the_gateway(hub: &TestHub, devices: &[Value], family: &str) -> Result<Vec<Value>> {
    let gateway = device_of(devices, "gateway", "home gateway")?;
    let path = format!("/devices/{gateway}/{family}");
    let listed = hub.expect(Method::GET, &path, None, 200).await?;
    Ok(listed.as_array().cloned().unwrap_or_default())
}

/// The resident's motion readings, newest first.
async fn motion_of(hub: &TestHub, rid: i64) -> Result<Vec<Value>> {
    let all = hub.readings(rid).await?;
    Ok(all.into_iter().filter(|r| r["kind"] == "motion").collect())
}

#[tokio::test]
async fn sim_as_chirpstack_fall_raises_inactivity_through_the_registered_sensors() -> Result<()> {
    let hub = TestHub::start().await?;
    let (rid, devices) = as_scenario(&hub, "chirpstack", "fall", "inactivity").await?;
    let registered = on_the_gateway(&hub, &devices, "lorawan").await?;
    assert_eq!(
        registered.len(),
        6,
        "four motion sensors, the door and the pendant"
    );
    let bathroom = device_of(&devices, "motion", "bathroom motion sensor")?;
    assert!(registered
        .iter()
        .any(|r| r["device_id"] == bathroom && r["dev_eui"].as_str().map(str::len) == Some(16)));
    // Motion came as ChirpStack `up` events over the gateway's connection, attributed to
    // the sensors the DevEUIs are registered as.
    let motion = motion_of(&hub, rid).await?;
    assert!(!motion.is_empty());
    assert!(motion.iter().all(|r| devices
        .iter()
        .any(|d| d["id"] == r["device_id"] && d["kind"] == "motion")));
    Ok(())
}

#[tokio::test]
async fn sim_as_echonet_fall_raises_inactivity_through_the_mapped_sensors() -> Result<()> {
    let hub = TestHub::start().await?;
    let (rid, devices) = as_scenario(&hub, "echonet", "fall", "inactivity").await?;
    let mapped = on_the_gateway(&hub, &devices, "echonet").await?;
    assert_eq!(
        mapped.len(),
        5,
        "four human detection sensors and the emergency button: {mapped:?}"
    );
    let pendant = device_of(&devices, "button", "SOS pendant")?;
    assert!(mapped.iter().any(|m| m["device_id"] == pendant
        && m["echonet_id"]
            .as_str()
            .is_some_and(|i| i.ends_with("_000301"))));
    // Motion came as echonetlite2mqtt's `detection`, which names no room.
    let motion = motion_of(&hub, rid).await?;
    assert!(
        motion.iter().any(|r| r["data"]["motion"] == true),
        "{motion:?}"
    );
    for r in &motion {
        assert!(
            mapped.iter().any(|m| m["device_id"] == r["device_id"]),
            "{r}"
        );
        assert!(r["data"]["room"].is_null(), "detection names no room: {r}");
    }
    Ok(())
}

#[tokio::test]
async fn sim_as_ble_wander_raises_geofence_exit_from_sightings() -> Result<()> {
    let hub = TestHub::start().await?;
    let (rid, devices) = as_scenario(&hub, "ble", "wander", "geofence_exit").await?;
    let tag = device_of(&devices, "tag", "GPS tracker")?;
    let node = device_of(&devices, "receiver", "home BLE receiver")?;
    let app = device_of(&devices, "receiver", "volunteer app")?;
    assert!(devices.iter().all(|d| d["kind"] != "gps"), "{devices:?}");
    let alert = hub.alerts(rid).await?;
    assert_eq!(alert[0]["device_id"], tag, "{alert:?}");
    // The passage history: the home node before the walk, then the volunteers' phones.
    let seen = hub
        .expect(
            Method::GET,
            &format!("/residents/{rid}/sightings?limit=500"),
            None,
            200,
        )
        .await?;
    let seen = seen.as_array().cloned().unwrap_or_default();
    let by = |rx: &str| seen.iter().filter(|s| s["data"]["receiver"] == rx).count();
    assert!(by(node) >= 1, "the home node heard the tag: {seen:?}");
    assert!(
        by(app) >= 4,
        "the volunteers' phones follow the walk out and back: {seen:?}"
    );
    assert!(seen
        .iter()
        .filter(|s| s["data"]["receiver"] == app)
        .all(|s| s["data"]["place"] == "volunteer app" && s["device_id"] == tag));
    Ok(())
}

#[tokio::test]
async fn sim_as_zigbee2mqtt_fall_raises_inactivity_through_the_mapped_sensors() -> Result<()> {
    let hub = TestHub::start().await?;
    let (rid, devices) = as_scenario(&hub, "zigbee2mqtt", "fall", "inactivity").await?;
    let gateway = device_of(&devices, "gateway", "home gateway")?;
    let mapped = hub
        .expect(
            Method::GET,
            &format!("/devices/{gateway}/zigbee"),
            None,
            200,
        )
        .await?;
    let mapped: Vec<(String, String)> = mapped
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["friendly_name"].as_str().unwrap_or_default().to_string(),
                m["device_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let bathroom = device_of(&devices, "motion", "bathroom motion sensor")?;
    assert!(
        mapped.contains(&("bathroom motion sensor".to_string(), bathroom.to_string())),
        "{mapped:?}"
    );
    assert!(mapped.contains(&(
        "SOS pendant".to_string(),
        device_of(&devices, "button", "SOS pendant")?.to_string()
    )));
    assert_eq!(
        mapped.len(),
        6,
        "four motion sensors, the door and the pendant: {mapped:?}"
    );
    // Motion came as Zigbee2MQTT occupancy, which names no room (the native payload does),
    // attributed to the sensors the gateway's friendly names are mapped to.
    let motion: Vec<Value> = hub
        .readings(rid)
        .await?
        .into_iter()
        .filter(|r| r["kind"] == "motion")
        .collect();
    assert!(
        motion.iter().any(|r| r["device_id"] == bathroom),
        "{motion:?}"
    );
    for r in &motion {
        assert!(
            mapped.iter().any(|(_, id)| r["device_id"] == id.as_str()),
            "{r}"
        );
        assert!(r["data"]["motion"].is_boolean(), "{r}");
        assert!(r["data"]["room"].is_null(), "occupancy names no room: {r}");
    }
    Ok(())
}

#[tokio::test]
async fn sim_as_owntracks_wander_raises_geofence_exit_from_the_phone() -> Result<()> {
    let hub = TestHub::start().await?;
    let (rid, devices) = as_scenario(&hub, "owntracks", "wander", "geofence_exit").await?;
    let tracker = device_of(&devices, "gps", "GPS tracker")?;
    assert!(tracker_fixes_are_whole_seconds(&hub, rid, tracker).await? > 10);
    let alert = hub.alerts(rid).await?;
    assert_eq!(alert[0]["device_id"], tracker, "{alert:?}");
    Ok(())
}

#[tokio::test]
async fn sim_as_osmand_wander_raises_geofence_exit_from_http_reports() -> Result<()> {
    let hub = TestHub::start().await?;
    let (rid, devices) = as_scenario(&hub, "osmand", "wander", "geofence_exit").await?;
    let tracker = device_of(&devices, "gps", "GPS tracker")?;
    assert!(tracker_fixes_are_whole_seconds(&hub, rid, tracker).await? > 10);
    Ok(())
}

/// A fleet provisioned as Zigbee2MQTT homes records the client and the friendly names, and
/// its day raises nothing (the gateways' sensors and heartbeats keep every device alive).
#[tokio::test]
async fn sim_as_zigbee2mqtt_fleet_is_mapped_and_its_day_raises_nothing() -> Result<()> {
    let hub = TestHub::start().await?;
    let out = sim(&hub, &doc_command(ZIGBEE_PROVISION)?).await?;
    assert!(out.status.success(), "{}", show(&out));
    let fleet: Value = serde_json::from_str(&std::fs::read_to_string(
        hub.dir.path().join("zigbee.json"),
    )?)?;
    assert_eq!(fleet["as"], "zigbee2mqtt");
    let residents = fleet["residents"].as_array().cloned().unwrap_or_default();
    assert_eq!(residents.len(), 3);
    for r in &residents {
        let devices = r["devices"].as_array().cloned().unwrap_or_default();
        let gateway = devices
            .iter()
            .find(|d| d["kind"] == "gateway")
            .and_then(|d| d["id"].as_str())
            .ok_or_else(|| anyhow!("no gateway in {r}"))?;
        let mapped = hub
            .expect(
                Method::GET,
                &format!("/devices/{gateway}/zigbee"),
                None,
                200,
            )
            .await?;
        let named: Vec<&Value> = devices
            .iter()
            .filter(|d| d["friendly_name"].is_string())
            .collect();
        assert_eq!(named.len(), 6, "{r}");
        for d in named {
            assert!(
                mapped
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["friendly_name"] == d["friendly_name"] && m["device_id"] == d["id"]),
                "{d} is mapped on {gateway}: {mapped}"
            );
        }
    }
    let out = sim(&hub, &doc_command(ZIGBEE_FLEET_RUN)?).await?;
    assert!(
        out.status.success(),
        "the Zigbee2MQTT fleet's day raised alerts:\n{}",
        show(&out)
    );
    let all = hub.expect(Method::GET, "/alerts", None, 200).await?;
    assert_eq!(all.as_array().map(Vec::len), Some(0), "alerts: {all}");
    let refused = hub.expect(Method::GET, "/rejected", None, 200).await?;
    assert_eq!(
        refused.as_array().map(Vec::len),
        Some(0),
        "refused: {refused}"
    );
    // A fleet speaks as what it was provisioned for.
    let mut other = doc_command(ZIGBEE_FLEET_RUN)?;
    other.extend(["--as".to_string(), "native".to_string()]);
    let out = sim(&hub, &other).await?;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("provisioned to speak as zigbee2mqtt"),
        "{}",
        show(&out)
    );
    Ok(())
}
