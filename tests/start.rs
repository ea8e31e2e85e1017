//! `scripts/start.sh`, the README's first command, run as a new user would: in a clean copy
//! of the checkout (its tracked files only: no database, no stored password, no fleet), on
//! free ports, with the test package's own hub and device-sim binaries, and the demo at a
//! pace that plays a loop in seconds.
//!
//! Proves that the demo started twice in a row logs in both times with the password it
//! stored (readable by the user only), that its neighbourhood stays the same size across
//! loops and runs with no duplicate names, that it starts with a backdated history and its
//! broker on loopback, that a password not of its database is refused naming the reset
//! command, and that a port held by another program makes it fail with a clear message.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Residents the test's demo provisions, and the scenarios that each get one more.
const DEMO_RESIDENTS: usize = 3;
const SCENARIOS: usize = 3;
/// Longest a start or a demo loop may take on a loaded machine.
const WITHIN: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A copy of the checkout's tracked files (with edits not yet committed), as a fresh
/// clone would have them; the dashboard's installed npm packages are linked in, if there
/// are any, so that the script does not download them again.
fn clean_copy(dest: &Path) -> Result<()> {
    let listed = std::process::Command::new("git")
        .arg("-C")
        .arg(repo_root())
        .args(["ls-files", "-z"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let files: Vec<PathBuf> = match listed {
        Some(out) => out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| std::str::from_utf8(p).map(PathBuf::from))
            .collect::<Result<_, _>>()?,
        // Not a git checkout (an unpacked archive): what start.sh reads, no local files.
        None => {
            let mut files = vec![PathBuf::from("scripts/start.sh")];
            files_under(Path::new("dashboard"), &mut files)?;
            files
        }
    };
    for rel in &files {
        let from = repo_root().join(rel);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let to = dest.join(rel);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", rel.display()))?;
    }
    let modules = repo_root().join("dashboard/node_modules");
    if modules.is_dir() {
        std::os::unix::fs::symlink(modules, dest.join("dashboard/node_modules"))?;
    }
    Ok(())
}

/// Every file under the repository's `rel`, but installed npm packages.
fn files_under(rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(repo_root().join(rel))? {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "node_modules" {
                files_under(&path, out)?;
            }
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// A folder with `hub` and `device-sim`: the test package's builds of the same programs.
fn bin_dir(dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mimamori-test-hub"), dest.join("hub"))?;
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_mimamori-test-device-sim"),
        dest.join("device-sim"),
    )?;
    Ok(())
}

/// A running `scripts/start.sh` in its own process group, so that stopping it stops the
/// hub and the simulator it started, too.
struct Start {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stderr_log: PathBuf,
}

impl Start {
    fn spawn(clone: &Path, bins: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Start> {
        let stderr_log = clone.join(format!("start-{}.log", rand::random::<u32>()));
        let stderr = if std::env::var("TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::from(std::fs::File::create(&stderr_log)?)
        };
        let mut cmd = Command::new("bash");
        cmd.arg(clone.join("scripts/start.sh"))
            .args(args)
            .current_dir(clone)
            .env("MIMAMORI_BIN_DIR", bins)
            .env("RUST_LOG", "warn")
            .env_remove("MIMAMORI_ADMIN_PASSWORD")
            .env_remove("MIMAMORI_HTTP_ADDR")
            .env_remove("MIMAMORI_MQTT_ADDR")
            .env_remove("MIMAMORI_HTTP_PORT")
            .env_remove("MIMAMORI_MQTT_PORT")
            .env_remove("MIMAMORI_DATA_DIR")
            .env_remove("DATABASE_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("cannot run scripts/start.sh with bash")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        Ok(Start {
            child,
            lines: BufReader::new(stdout).lines(),
            stderr_log,
        })
    }

    /// The rest of the first line of stdout that starts with `prefix`.
    async fn line(&mut self, prefix: &str) -> Result<String> {
        let lines = &mut self.lines;
        let found = tokio::time::timeout(WITHIN, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok::<_, anyhow::Error>(rest.to_string());
                }
            }
            bail!("start.sh ended without printing {prefix:?}")
        })
        .await;
        match found {
            Ok(Ok(rest)) => Ok(rest),
            other => bail!(
                "waiting for {prefix:?}: {other:?}\n--- start.sh stderr ---\n{}",
                self.stderr()
            ),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// SIGTERM to the whole group, as Ctrl-C would; waits for the script to end.
    async fn stop(mut self) -> Result<ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status();
        }
        Ok(tokio::time::timeout(WITHIN, self.child.wait()).await??)
    }

    /// Waits for the script to end by itself; its exit status, stdout and stderr.
    async fn exit(mut self) -> Result<(ExitStatus, String, String)> {
        let mut out = String::new();
        let lines = &mut self.lines;
        tokio::time::timeout(WITHIN, async {
            while let Some(line) = lines.next_line().await? {
                out.push_str(&line);
                out.push('\n');
            }
            Ok::<_, anyhow::Error>(())
        })
        .await??;
        let status = tokio::time::timeout(WITHIN, self.child.wait()).await??;
        Ok((status, out, self.stderr()))
    }
}

impl Drop for Start {
    /// A failed test leaves no hub behind: the whole group goes.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

async fn login(http: &reqwest::Client, base: &str, password: &str) -> Result<String> {
    let res = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if status != 200 {
        bail!("login at {base} refused: {status} {body}");
    }
    body["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no token in {body}"))
}

async fn get(http: &reqwest::Client, base: &str, token: &str, path: &str) -> Result<Value> {
    let res = http
        .get(format!("{base}/api/v1{path}"))
        .bearer_auth(token)
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("GET {path}: {}", res.status());
    }
    Ok(res.json().await?)
}

/// The residents' names; fails on a duplicate.
async fn residents(http: &reqwest::Client, base: &str, token: &str) -> Result<Vec<String>> {
    let all = get(http, base, token, "/residents").await?;
    let names: Vec<String> = all
        .as_array()
        .ok_or_else(|| anyhow!("residents: {all}"))?
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    if unique.len() != names.len() {
        bail!("duplicate resident names: {names:?}");
    }
    Ok(names)
}

/// The demo's pace for tests: a loop is a few simulated hours at 3600×.
const FAST_DEMO: [(&str, &str); 5] = [
    ("MIMAMORI_DEMO_SPEED", "3600"),
    ("MIMAMORI_DEMO_DAYS", "0.05"),
    ("MIMAMORI_DEMO_RESIDENTS", "3"),
    ("MIMAMORI_DEMO_HISTORY_DAYS", "2"),
    ("MIMAMORI_DEMO_RESOLVE_AFTER_S", "0"),
];

#[tokio::test]
async fn start_sh_demo_twice_logs_in_both_times_and_keeps_its_neighbourhood() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clone = dir.path().join("mimamori");
    clean_copy(&clone)?;
    let bins = dir.path().join("bin");
    bin_dir(&bins)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let ports = ["--demo", "--http-port", "0", "--mqtt-port", "0"];

    // First start: a new database, a new password, stored for the user only.
    let mut env = FAST_DEMO.to_vec();
    env.push(("MIMAMORI_DEMO_LOOPS", "2"));
    let mut first = Start::spawn(&clone, &bins, &ports, &env)?;
    let announced = first
        .line("Admin password for this hub (user admin): ")
        .await?;
    let dashboard = first.line("Dashboard: ").await?;
    let base = dashboard
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("no address in {dashboard:?}"))?
        .to_string();
    let creds = clone.join(".mimamori-admin");
    let stored = std::fs::read_to_string(&creds)?.trim().to_string();
    assert!(
        announced.starts_with(&stored),
        "{announced:?} vs {stored:?}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&creds)?.permissions());
    assert_eq!(mode & 0o077, 0, "{} is readable by others", creds.display());
    assert!(
        dashboard.contains("MQTT: 127.0.0.1:"),
        "the demo's broker is on loopback only: {dashboard}"
    );
    let token = login(&http, &base, &stored).await?;

    first.line("Demo: loop 1 finished").await?;
    let after_one = residents(&http, &base, &token).await?;
    assert_eq!(after_one.len(), DEMO_RESIDENTS + SCENARIOS, "{after_one:?}");
    first.line("Demo: loop 2 finished").await?;
    let after_two = residents(&http, &base, &token).await?;
    assert_eq!(
        after_one, after_two,
        "the second loop changed the neighbourhood"
    );

    // The history: activity more than a day before the demo started, for everyone of the fleet.
    let list = get(&http, &base, &token, "/residents").await?;
    let day_ago = chrono::Utc::now() - chrono::Duration::hours(25);
    let mut with_history = 0;
    for r in list.as_array().into_iter().flatten() {
        let id = r["id"].as_i64().unwrap_or_default();
        let act = get(
            &http,
            &base,
            &token,
            &format!("/residents/{id}/activity?days=3"),
        )
        .await?;
        let old = act["hours"].as_array().into_iter().flatten().any(|h| {
            h["hour"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t < day_ago)
        });
        with_history += usize::from(old);
    }
    assert_eq!(
        with_history, DEMO_RESIDENTS,
        "residents with a backdated history"
    );
    first.stop().await?;

    // Second start on the same folder: the stored password is reused and still works.
    let mut env = FAST_DEMO.to_vec();
    env.push(("MIMAMORI_DEMO_LOOPS", "1"));
    let mut second = Start::spawn(&clone, &bins, &ports, &env)?;
    let dashboard = second.line("Dashboard: ").await?;
    let base = dashboard
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("no address in {dashboard:?}"))?
        .to_string();
    let token = login(&http, &base, &stored).await?;
    second.line("Demo: loop 1 finished").await?;
    let after_restart = residents(&http, &base, &token).await?;
    assert_eq!(
        after_one, after_restart,
        "a restart changed the neighbourhood"
    );
    second.stop().await?;

    // A password that is not this database's: a clear refusal that names the way out.
    let mut env = FAST_DEMO.to_vec();
    env.push((
        "MIMAMORI_ADMIN_PASSWORD",
        "not the password of this database",
    ));
    let third = Start::spawn(&clone, &bins, &ports, &env)?;
    let (status, stdout, stderr) = third.exit().await?;
    assert!(
        !status.success(),
        "a wrong password went unnoticed: {stdout}"
    );
    assert!(
        stderr.contains("is not the admin password") && stderr.contains("admin reset-password"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn start_sh_fails_clearly_when_its_port_is_taken() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clone = dir.path().join("mimamori");
    clean_copy(&clone)?;
    let bins = dir.path().join("bin");
    bin_dir(&bins)?;
    // Another program holds the port, and answers on it like a hub would.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = other.local_addr()?.port().to_string();
    let answering = tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "ok" });
        let _ = axum::serve(other, app).await;
    });

    let start = Start::spawn(
        &clone,
        &bins,
        &["--demo", "--http-port", &port, "--mqtt-port", "0"],
        &FAST_DEMO,
    )?;
    let (status, stdout, stderr) = start.exit().await?;
    answering.abort();
    assert!(!status.success(), "start.sh succeeded: {stderr}");
    assert!(
        !stdout.contains("Dashboard:"),
        "start.sh announced a hub that is not there: {stdout}"
    );
    assert!(
        stderr.contains(&format!("port {port} (HTTP")) && stderr.contains("in use"),
        "no clear message: {stderr}"
    );
    assert!(stderr.contains("--http-port"), "no way out named: {stderr}");
    Ok(())
}

/// `hub admin reset-password`, the way out that start.sh names: on the database of a
/// running hub, the old password and its sessions stop working and the new one logs in.
#[tokio::test]
async fn start_reset_password_from_the_command_line_ends_old_sessions() -> Result<()> {
    use crate::helpers::{TestHub, ADMIN_PASSWORD};
    let hub = TestHub::start().await?;
    let old_token = hub.admin_token.clone();
    let run = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mimamori-test-hub"))
            .args(["admin", "reset-password", "--database-url", &hub.db_url])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut input) = child.stdin.take() {
            std::io::Write::write_all(&mut input, stdin.as_bytes())?;
        }
        Ok::<_, anyhow::Error>(child.wait_with_output()?)
    };

    let out = run(&[], "")?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = stdout
        .lines()
        .find_map(|l| l.strip_prefix("New password for user 'admin': "))
        .ok_or_else(|| anyhow!("no new password in {stdout:?}"))?
        .to_string();
    assert!(stdout.contains("Ended 1 session"), "{stdout}");
    assert!(
        hub.login("admin", ADMIN_PASSWORD).await.is_err(),
        "the old password still works"
    );
    let (status, _) = hub
        .call(Some(&old_token), reqwest::Method::GET, "/residents", None)
        .await?;
    assert_eq!(status, 401, "a session of the old password still works");
    hub.login("admin", &generated).await?;

    let chosen = "a chosen password, long enough";
    let out = run(&["--password-stdin"], &format!("{chosen}\n"))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub.login("admin", chosen).await?;

    let short = run(&["--password-stdin"], "short\n")?;
    assert!(!short.status.success());
    let nobody = run(&["--user", "nobody"], "")?;
    assert!(!nobody.status.success());
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("no user named"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
    Ok(())
}
