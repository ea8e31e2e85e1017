//! The documentation's examples, run as written against a real hub, and the packaging
//! files checked against the hub's own configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The ```sh blocks of a markdown file, in order.
pub fn shell_blocks(markdown_path: &str) -> Result<Vec<String>> {
    fenced_blocks(markdown_path, |l| l.starts_with("```sh"))
}

/// The fenced blocks of a markdown file whose opening line `opens` accepts, in order.
fn fenced_blocks(markdown_path: &str, opens: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(repo_file(markdown_path))
        .with_context(|| format!("cannot read {markdown_path}"))?;
    Ok(fenced_blocks_of(&text, opens))
}

/// The ```sh blocks of markdown text, in order.
pub fn shell_blocks_of(text: &str) -> Vec<String> {
    fenced_blocks_of(text, |l| l.starts_with("```sh"))
}

/// The fenced blocks of markdown text whose opening line `opens` accepts, in order.
pub fn fenced_blocks_of(text: &str, opens: impl Fn(&str) -> bool) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if opens(l) => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

async fn bash(script: &str, env: &BTreeMap<&str, String>) -> Result<String> {
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .envs(env)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "script failed ({}):\n{script}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

#[tokio::test]
async fn protocol_md_examples_work_with_mosquitto_pub() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Docs Example"})).await?;
    let dev = hub.device(rid, "gps").await?;
    let env = BTreeMap::from([
        ("MQTT_PORT", hub.mqtt_port.to_string()),
        ("DEVICE_ID", dev.id.clone()),
        ("SECRET", dev.mqtt.password.clone()),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
    ]);
    let blocks = shell_blocks("docs/protocol.md")?;
    let (subs, pubs): (Vec<_>, Vec<_>) = blocks.iter().partition(|b| b.contains("mosquitto_sub"));
    assert_eq!(
        (subs.len(), pubs.len()),
        (1, 6),
        "the examples this test expects"
    );
    let sub = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{}", subs[0]))
        .envs(&env)
        .stdout(Stdio::piped())
        .spawn()?;
    // The subscriber must be in place before the SOS that it waits for.
    eventually(
        "the example subscriber connected",
        Duration::from_secs(20),
        || async {
            let h = hub.expect(Method::GET, "/healthz", None, 200).await.ok()?;
            (h["mqtt_connections"].as_u64()? >= 1).then_some(())
        },
    )
    .await?;
    for block in pubs {
        bash(block, &env).await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(40), sub.wait_with_output()).await??;
    assert!(
        out.status.success(),
        "mosquitto_sub example did not receive the alert"
    );
    let alert: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(alert["kind"], "sos");

    let kinds: Vec<String> = hub
        .readings(rid)
        .await?
        .iter()
        .filter_map(|r| r["kind"].as_str().map(str::to_string))
        .collect();
    for kind in ["motion", "door", "gps", "heartbeat", "sos"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} not stored: {kinds:?}"
        );
    }
    let rejected = hub.expect(Method::GET, "/rejected", None, 200).await?;
    assert_eq!(rejected[0]["reason"], "out_of_range");
    Ok(())
}

#[tokio::test]
async fn api_md_and_rules_md_examples_run_in_order() -> Result<()> {
    let hub = TestHub::start().await?;
    let env = BTreeMap::from([
        ("HUB", hub.base.clone()),
        ("MQTT_PORT", hub.mqtt_port.to_string()),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
    ]);
    let mut script = shell_blocks("docs/api.md")?.join("\n");
    script.push_str(&shell_blocks("docs/rules.md")?.join("\n"));
    bash(&script, &env).await?;

    let residents = hub.expect(Method::GET, "/residents", None, 200).await?;
    let r = &residents[0];
    assert_eq!(r["name"], "田中 花子");
    assert_eq!(
        r["rules"]["inactivity"]["morning_deadline"], "10:00",
        "rules.md's PATCH came last"
    );
    assert_eq!(r["rules"]["inactivity"]["day_starts"], "06:30");
    assert_eq!(r["rules"]["tag_away"]["enabled"], true);
    let home_rx = r["rules"]["tag_away"]["receivers"][0]
        .as_str()
        .unwrap_or_default();
    let rx = hub
        .expect(Method::GET, &format!("/devices/{home_rx}"), None, 200)
        .await?;
    assert_eq!(rx["kind"], "receiver", "{rx}");
    let rid = r["id"].as_i64().unwrap_or_default();
    let zones = hub
        .expect(
            Method::GET,
            &format!("/residents/{rid}/geofences"),
            None,
            200,
        )
        .await?;
    assert_eq!(zones.as_array().map(Vec::len), Some(2));
    let alerts = hub.alerts(rid).await?;
    assert_eq!(
        (alerts.len(), alerts[0]["state"].as_str()),
        (1, Some("resolved"))
    );
    let users = hub.expect(Method::GET, "/users", None, 200).await?;
    assert!(users
        .as_array()
        .into_iter()
        .flatten()
        .any(|u| u["username"] == "hanako.family" && u["role"] == "family"));
    Ok(())
}

#[tokio::test]
async fn docker_compose_matches_the_hub_configuration() -> Result<()> {
    let text = std::fs::read_to_string(repo_file("docker-compose.yml"))?;
    let compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
    let hub = &compose["services"]["hub"];
    let pg = &compose["services"]["postgres"];
    assert!(
        pg["image"]
            .as_str()
            .unwrap_or_default()
            .starts_with("postgres"),
        "a PostgreSQL service"
    );
    let env = hub["environment"].as_mapping().context("hub environment")?;
    let var = |k: &str| {
        env.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let db = var("DATABASE_URL");
    assert!(
        db.starts_with("postgres://") && db.contains("@postgres:5432/"),
        "hub talks to the postgres service: {db}"
    );
    let (user, pass, name) = (
        pg["environment"]["POSTGRES_USER"].as_str(),
        pg["environment"]["POSTGRES_PASSWORD"].as_str(),
        pg["environment"]["POSTGRES_DB"].as_str(),
    );
    assert_eq!(
        db,
        format!(
            "postgres://{}:{}@postgres:5432/{}",
            user.unwrap_or_default(),
            pass.unwrap_or_default(),
            name.unwrap_or_default()
        )
    );

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_mimamori-test-hub"))
        .arg("--help")
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    for key in env.keys().filter_map(|k| k.as_str()) {
        assert!(
            help.contains(key),
            "compose sets {key}, which the hub does not read"
        );
    }
    let ports: Vec<String> = hub["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    for (var_name, port) in [
        ("MIMAMORI_HTTP_ADDR", "8080"),
        ("MIMAMORI_MQTT_ADDR", "1883"),
    ] {
        let addr = var(var_name);
        assert!(
            addr.starts_with("0.0.0.0:") && addr.ends_with(port),
            "{var_name} must listen on all interfaces inside the container"
        );
        assert!(
            ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
            "port {port} published: {ports:?}"
        );
    }
    let volume = hub["volumes"][0].as_str().unwrap_or_default();
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile"))?;
    let data_dir = volume.split(':').nth(1).unwrap_or_default();
    assert!(
        !data_dir.is_empty() && dockerfile.contains(&format!("sqlite:{data_dir}")),
        "the volume holds the hub's data dir"
    );
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("USER ") && !l.contains("root")),
        "runs as a non-root user"
    );
    assert!(
        dockerfile.matches("FROM ").count() >= 2,
        "multi-stage build"
    );
    Ok(())
}

/// The cluster compose file's hubs set only settings the hub reads, each its own node id,
/// and the cluster example of docs/operations.md names only flags the hub has.
#[tokio::test]
async fn cluster_compose_and_operations_example_match_the_hub() -> Result<()> {
    let text = std::fs::read_to_string(repo_file("docker-compose.cluster.yml"))?;
    let compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_mimamori-test-hub"))
        .arg("--help")
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let mut nodes = Vec::new();
    for name in ["hub-1", "hub-2", "hub-3"] {
        let env = compose["services"][name]["environment"]
            .as_mapping()
            .with_context(|| format!("{name} environment"))?;
        for key in env.keys().filter_map(|k| k.as_str()).filter(|k| *k != "<<") {
            assert!(
                help.contains(key),
                "compose sets {key}, which the hub does not read"
            );
        }
        let node = env
            .get("MIMAMORI_NODE_ID")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        nodes.push(node.unwrap_or_else(|| "hub-1".into()));
    }
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "every hub has a node id of its own");
    let ops = std::fs::read_to_string(repo_file("docs/operations.md"))?;
    let section = ops
        .split("## Cluster mode")
        .nth(1)
        .context("a cluster section in operations.md")?;
    let example = shell_blocks_of(section).join(" ").replace("\\\n", " ");
    for flag in example.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(flag),
            "operations.md uses {flag}, which the hub does not have"
        );
    }
    assert!(example.contains("--nats-url"), "{example}");
    Ok(())
}

/// replay.md before its section on stored history (replays of files), and that section.
fn replay_md_parts() -> Result<(String, String)> {
    let text = std::fs::read_to_string(repo_file("docs/replay.md"))?;
    let (files, stored) = text
        .split_once("## Replaying the stored history")
        .context("replay.md has a section on stored history")?;
    Ok((files.to_owned(), stored.to_owned()))
}

/// The ```sh blocks of markdown text, each with the ```json block that shows its output;
/// `n` of them.
fn commands_with_outputs(text: &str, n: usize) -> Vec<(String, String)> {
    let scripts = shell_blocks_of(text);
    let outputs = fenced_blocks_of(text, |l| l == "```json");
    assert_eq!(
        (scripts.len(), outputs.len()),
        (n, n),
        "each command has its output"
    );
    scripts.into_iter().zip(outputs).collect()
}

/// What a replay's output says, without the times that depend on the day it ran: each
/// change's kind and change, and the summary's counts.
fn replay_gist(output: &str) -> Result<Vec<serde_json::Value>> {
    output
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).with_context(|| l.to_owned())?;
            let s = &v["summary"];
            Ok(if s.is_null() {
                json!([v["kind"], v["change"], v["severity"]])
            } else {
                json!([
                    s["alerts"],
                    s["asked"],
                    s["confirmed"],
                    s["events"],
                    s["history"]["readings"]
                ])
            })
        })
        .collect()
}

/// The stored-history session of replay.md, run on a home recorded through MQTT two
/// days ago: the same changes and counts as the page shows (its dates are those of the
/// day the page was written).
#[tokio::test]
async fn replay_md_stored_history_session_prints_what_the_page_shows() -> Result<()> {
    let hub = TestHub::start_with(Backend::Sqlite, &["--max-age-s", "1209600"]).await?;
    let day = crate::replay_stored::recorded_day();
    let rid = crate::replay_stored::recorded_home(&hub, day).await?;
    let dir = tempfile::tempdir()?;
    let path = path_with_tools(dir.path())?;
    let (_, stored) = replay_md_parts()?;
    let env = BTreeMap::from([
        ("PATH", path),
        ("DATABASE_URL", hub.db_url.clone()),
        ("RESIDENT", rid.to_string()),
    ]);
    for (script, want) in commands_with_outputs(&stored, 2) {
        let got = bash(&script, &env).await?;
        let shown = replay_gist(&want).with_context(|| {
            format!("the page's output is not JSON lines; the command printed:\n{got}")
        })?;
        assert_eq!(replay_gist(&got)?, shown, "{script}\n{got}");
    }
    Ok(())
}

#[tokio::test]
async fn replay_md_what_if_session_prints_what_the_page_shows() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = path_with_tools(dir.path())?;
    let (files, _) = replay_md_parts()?;
    for (script, want) in commands_with_outputs(&files, 6) {
        let out = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .current_dir(dir.path())
            .env("PATH", &path)
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout, want, "{script}");
    }
    Ok(())
}
