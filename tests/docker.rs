//! The Docker image and `docker compose up`, run for real where a Docker engine answers:
//! the image builds from this checkout, the hub comes up on PostgreSQL, answers its health
//! check and logs the admin in. Where `docker info` fails (no engine, as on machines with
//! only the client) the test says so on stderr and passes without running.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::helpers::eventually;

fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Why Docker cannot run here, or `None` when an engine and the compose plugin answer.
fn docker_unavailable() -> Option<String> {
    let first_line = |o: &Output| {
        let text = String::from_utf8_lossy(&o.stderr).to_string();
        text.lines().next().unwrap_or("").to_string()
    };
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => return Some(format!("no docker command ({e})")),
        Ok(o) if !o.status.success() => {
            return Some(format!("`docker info` failed: {}", first_line(&o)))
        }
        Ok(_) => {}
    }
    match Command::new("docker").args(["compose", "version"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("`docker compose` is missing: {}", first_line(&o))),
        Err(e) => Some(format!("`docker compose` cannot run ({e})")),
    }
}

/// A compose project of this test's own, taken down with its volumes when dropped.
struct Project {
    name: String,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.current_dir(repo_root())
            .args(["compose", "-p", &self.name])
            .args(args)
            .env("MIMAMORI_ADMIN_PASSWORD", "compose-test-password")
            .env("MIMAMORI_HTTP_PORT", "0")
            .env("MIMAMORI_MQTT_PORT", "0");
        c
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self
            .compose(args)
            .output()
            .with_context(|| format!("docker compose {args:?}"))?;
        if !out.status.success() {
            bail!(
                "docker compose {args:?} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans"]).output();
    }
}

#[tokio::test]
async fn docker_compose_up_serves_the_hub_on_postgres() -> Result<()> {
    if let Some(why) = docker_unavailable() {
        eprintln!("SKIPPED docker_compose_up_serves_the_hub_on_postgres: {why}");
        return Ok(());
    }
    let project = Project {
        name: format!("mimamori-test-{}", rand::random::<u32>()),
    };
    project.run(&["up", "-d", "--build", "--wait"])?;
    let published = project.run(&["port", "hub", "8080"])?;
    let port = published
        .trim()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("no published port in {published:?}"))?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let health = eventually(
        "the hub's health check",
        Duration::from_secs(120),
        || async {
            let res = http
                .get(format!("{base}/api/v1/healthz"))
                .send()
                .await
                .ok()?;
            res.status().is_success().then_some(res.text().await.ok()?)
        },
    )
    .await?;
    assert!(health.contains("postgres"), "healthz: {health}");
    let login = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": "compose-test-password"}))
        .send()
        .await?;
    assert_eq!(
        login.status(),
        200,
        "admin login through the published port"
    );
    Ok(())
}
