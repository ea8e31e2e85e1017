//! `TestHub`: the real hub binary on free ports with its own database, and typed
//! helpers to drive it over HTTP and MQTT the way users and devices do.
//!
//! Every wait is for a condition ([`eventually`]), never a fixed sleep. Set
//! `TEST_LOG=1` to see the hub's log on stderr; otherwise it is kept in the test's
//! temporary folder and printed if the hub fails to start.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mimamori_protocol::api::DeviceCreated;
use reqwest::Method;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// Which store a test hub uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// True when PostgreSQL tests were told to skip, with `MIMAMORI_TEST_PG=skip`; then it says
/// so on stderr for `test`. Without that word a missing server fails the tests: a run that
/// skips them does so on purpose, and loudly.
pub fn skip_postgres(test: &str) -> bool {
    let skip = std::env::var("MIMAMORI_TEST_PG").is_ok_and(|v| v == "skip");
    if skip {
        eprintln!("SKIPPED {test}: MIMAMORI_TEST_PG=skip, this PostgreSQL test did not run");
    }
    skip
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("MIMAMORI_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A running hub process and what a test needs to talk to it.
pub struct TestHub {
    pub base: String,
    pub mqtt_port: u16,
    /// The MQTT-over-TLS port, when the hub was started with a TLS listener.
    pub mqtts_port: Option<u16>,
    pub db_url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub admin_token: String,
    child: Option<Child>,
    /// Dropped after the hub process is killed (fields drop after `Drop::drop`).
    _pg_db: Option<PgDatabase>,
    extra_args: Vec<String>,
}

impl TestHub {
    /// A hub on a fresh SQLite file.
    pub async fn start() -> Result<TestHub> {
        Self::start_with(Backend::Sqlite, &[]).await
    }

    /// A hub on the given backend (a fresh database each time) with extra flags.
    pub async fn start_with(backend: Backend, extra_args: &[&str]) -> Result<TestHub> {
        let dir = tempfile::tempdir()?;
        let (db_url, pg_db) = match backend {
            Backend::Sqlite => (
                format!("sqlite:{}", dir.path().join("hub.db").display()),
                None,
            ),
            Backend::Postgres => {
                let db = PgDatabase::create("mimamori_test").await?;
                (db.url.clone(), Some(db))
            }
        };
        Self::start_in(dir, db_url, pg_db, extra_args).await
    }

    /// A hub on a database other hubs share (cluster mode); the caller keeps the database.
    pub async fn start_sharing(db_url: &str, extra_args: &[&str]) -> Result<TestHub> {
        Self::start_in(tempfile::tempdir()?, db_url.to_string(), None, extra_args).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        db_url: String,
        pg_db: Option<PgDatabase>,
        extra_args: &[&str],
    ) -> Result<TestHub> {
        let mut hub = TestHub {
            base: String::new(),
            mqtt_port: 0,
            mqtts_port: None,
            db_url,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            admin_token: String::new(),
            child: None,
            _pg_db: pg_db,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        hub.launch().await?;
        hub.admin_token = hub.login("admin", ADMIN_PASSWORD).await?;
        Ok(hub)
    }

    /// Starts the hub process on new free ports and waits until it says it is ready.
    pub async fn launch(&mut self) -> Result<()> {
        let log = self
            .dir
            .path()
            .join(format!("hub-{}.log", rand::random::<u32>()));
        let stderr = if std::env::var("TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::from(std::fs::File::create(&log)?)
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_mimamori-test-hub"))
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--mqtt-addr",
                "127.0.0.1:0",
                "--database-url",
                &self.db_url,
            ])
            .args(["--dashboard-dir", &dashboard_dir().display().to_string()])
            .args(&self.extra_args)
            .env("MIMAMORI_ADMIN_PASSWORD", ADMIN_PASSWORD)
            // The tests' webhook and ntfy receivers listen on loopback, which the default
            // host policy refuses; `--webhook-hosts` in extra_args overrides this.
            .env("MIMAMORI_WEBHOOK_HOSTS", "127.0.0.1, ::1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,hub=debug".into()),
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the hub binary")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("mimamori hub ready: ") {
                    return Ok::<_, anyhow::Error>(rest.to_string());
                }
            }
            bail!("hub exited before it was ready")
        })
        .await;
        let ready = match ready {
            Ok(Ok(r)) => r,
            other => {
                let logged = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("hub did not start: {other:?}\n--- hub log ---\n{logged}");
            }
        };
        // Keep draining stdout so the hub never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let mut http = None;
        let mut mqtt = None;
        for part in ready.split_whitespace() {
            if let Some(v) = part.strip_prefix("http=") {
                http = Some(v.to_string());
            }
            if let Some(v) = part.strip_prefix("mqtt=") {
                mqtt = v.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
            }
            if let Some(v) = part.strip_prefix("mqtts=") {
                self.mqtts_port = v.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
            }
        }
        self.base = http.ok_or_else(|| anyhow!("no http address in {ready:?}"))?;
        self.mqtt_port = mqtt.ok_or_else(|| anyhow!("no mqtt port in {ready:?}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// The hub process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// SIGKILL: the process gets no chance to flush or say goodbye.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Kills the hub if it runs, then starts it again on the same database.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        self.launch().await?;
        self.admin_token = self.login("admin", ADMIN_PASSWORD).await?;
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<String> {
        let (status, body) = self
            .call(
                None,
                Method::POST,
                "/auth/login",
                Some(json!({"username": username, "password": password})),
            )
            .await?;
        if status != 200 {
            bail!("login of {username} failed: {status} {body}");
        }
        body["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no token in {body}"))
    }

    /// One API call with any token (or none); returns the status and the JSON body
    /// (`Value::Null` for an empty or non-JSON body).
    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// An API call as the admin.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        self.call(Some(&self.admin_token), method, path, body).await
    }

    /// An admin call that must answer with `expected`; returns the body.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: u16,
    ) -> Result<Value> {
        let (status, v) = self.admin(method.clone(), path, body).await?;
        if status != expected {
            bail!("{method} {path}: expected {expected}, got {status} {v}");
        }
        Ok(v)
    }

    /// Creates a user (password from [`password_of`]) and logs in as them; returns the token.
    pub async fn user(&self, username: &str, role: &str, resident_ids: &[i64]) -> Result<String> {
        let body = json!({"username": username, "password": password_of(username), "role": role, "resident_ids": resident_ids});
        self.expect(Method::POST, "/users", Some(body), 201).await?;
        self.login(username, &password_of(username)).await
    }

    /// Creates a resident from a JSON body and records their consent (without which the
    /// hub registers no device of theirs); returns its id.
    pub async fn resident(&self, body: Value) -> Result<i64> {
        let id = self.resident_without_consent(body).await?;
        self.consent(id).await?;
        Ok(id)
    }

    /// Creates a resident and nothing else; returns its id.
    pub async fn resident_without_consent(&self, body: Value) -> Result<i64> {
        let v = self
            .expect(Method::POST, "/residents", Some(body), 201)
            .await?;
        v["id"].as_i64().ok_or_else(|| anyhow!("no id in {v}"))
    }

    /// Records a resident's consent to being watched by care staff and family.
    pub async fn consent(&self, resident_id: i64) -> Result<Value> {
        let body = json!({
            "given_on": "2026-01-05",
            "given_by": "resident",
            "giver_name": "the resident",
            "purposes": ["watch-over"],
            "recipients": ["care staff", "family"],
            "document_ref": "test form",
        });
        self.expect(
            Method::POST,
            &format!("/residents/{resident_id}/consent"),
            Some(body),
            201,
        )
        .await
    }

    /// Registers a device of `kind` for a resident; returns its credentials.
    pub async fn device(&self, resident_id: i64, kind: &str) -> Result<DeviceCreated> {
        let v = self
            .expect(Method::POST, "/devices", Some(json!({"resident_id": resident_id, "kind": kind, "name": format!("{kind} sensor")})), 201)
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Alerts of a resident, newest first.
    pub async fn alerts(&self, resident_id: i64) -> Result<Vec<Value>> {
        let v = self
            .expect(
                Method::GET,
                &format!("/alerts?resident_id={resident_id}"),
                None,
                200,
            )
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Waits until the resident has an alert of `kind` in `state`; returns it.
    pub async fn wait_alert(
        &self,
        resident_id: i64,
        kind: &str,
        state: &str,
        within: Duration,
    ) -> Result<Value> {
        eventually(
            &format!("{kind} alert {state} for resident {resident_id}"),
            within,
            || async {
                let alerts = self.alerts(resident_id).await.ok()?;
                alerts
                    .into_iter()
                    .find(|a| a["kind"] == kind && a["state"] == state)
            },
        )
        .await
    }

    /// Stored readings of a resident, newest first.
    pub async fn readings(&self, resident_id: i64) -> Result<Vec<Value>> {
        let v = self
            .expect(
                Method::GET,
                &format!("/residents/{resident_id}/readings?limit=1000"),
                None,
                200,
            )
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// The value of one metric line, e.g. `mimamori_messages_rejected_total{reason="not_json"}`.
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0))
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A database of its own on the test PostgreSQL server, dropped with this value.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create(prefix: &str) -> Result<PgDatabase> {
        let name = format!("{prefix}_{}", rand::random::<u64>());
        psql(&format!("CREATE DATABASE {name}")).await?;
        let admin = postgres_admin_url();
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin);
        Ok(PgDatabase {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Blocking is fine in a test's teardown; databases must not pile up.
        let _ = std::process::Command::new("psql")
            .args([
                &postgres_admin_url(),
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The rows a query returns on a test database, one `|`-separated line each.
pub async fn pg_rows(db_url: &str, sql: &str) -> Result<Vec<String>> {
    let out = Command::new("psql")
        .args([db_url, "-qAt", "-c", sql])
        .output()
        .await
        .context("psql not found")?;
    if !out.status.success() {
        bail!(
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

async fn psql(sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args([&postgres_admin_url(), "-q", "-c", sql])
        .output()
        .await
        .context("psql not found")?;
    if !out.status.success() {
        bail!(
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The password [`TestHub::user`] gives a user: long enough for the hub's rules.
pub fn password_of(username: &str) -> String {
    format!("{username}-password")
}

/// The dashboard folder of the repository.
pub fn dashboard_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboard")
}

/// A `PATH` on which `hub` and `device-sim` are the programs under test, as the docs'
/// examples call them; the links live in `dir/bin`.
pub fn path_with_tools(dir: &std::path::Path) -> Result<String> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    for (name, program) in [
        ("hub", env!("CARGO_BIN_EXE_mimamori-test-hub")),
        ("device-sim", env!("CARGO_BIN_EXE_mimamori-test-device-sim")),
    ] {
        std::os::unix::fs::symlink(program, bin.join(name))?;
    }
    Ok(format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    ))
}

/// Polls `probe` until it yields a value, or fails after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An MQTT client (rumqttc) connected to the hub, with its events on a channel.
pub struct MqttClient {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<Packet>,
}

/// Connects and waits for the CONNACK; `Err` carries the refusal.
pub async fn mqtt_connect(
    port: u16,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<MqttClient, MqttRefusal> {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_credentials(username, password);
    mqtt_connect_with(opts).await
}

/// Connects with these options and waits for the CONNACK; `Err` carries the refusal.
pub async fn mqtt_connect_with(mut opts: MqttOptions) -> Result<MqttClient, MqttRefusal> {
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    first_connack(&mut eventloop).await?;
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(_) => return,
            }
        }
    });
    Ok(MqttClient { client, events })
}

/// Why a CONNECT did not succeed.
#[derive(Debug, PartialEq)]
pub enum MqttRefusal {
    Refused(ConnectReturnCode),
    Other(String),
}

async fn first_connack(eventloop: &mut EventLoop) -> Result<(), MqttRefusal> {
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) if c.code == ConnectReturnCode::Success => {
                    return Ok(())
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    return Err(MqttRefusal::Refused(c.code))
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    return Err(MqttRefusal::Refused(code))
                }
                Err(e) => return Err(MqttRefusal::Other(e.to_string())),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .map_err(|_| MqttRefusal::Other("no CONNACK in 30 s".into()))?
}

/// A device connected with the credentials the hub issued.
pub async fn connect_device(hub: &TestHub, creds: &DeviceCreated) -> Result<MqttClient> {
    mqtt_connect(
        hub.mqtt_port,
        &creds.mqtt.username,
        &creds.mqtt.username,
        &creds.mqtt.password,
    )
    .await
    .map_err(|e| anyhow!("device {} could not connect: {e:?}", creds.id))
}

impl MqttClient {
    /// Publishes at QoS 1 and waits for the hub's PUBACK.
    pub async fn publish_acked(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await?;
        self.next_matching(Duration::from_secs(20), |p| matches!(p, Packet::PubAck(_)))
            .await
            .map(|_| ())
    }

    /// Waits for the next incoming packet that `pred` accepts.
    pub async fn next_matching(
        &mut self,
        within: Duration,
        pred: impl Fn(&Packet) -> bool,
    ) -> Result<Packet> {
        tokio::time::timeout(within, async {
            while let Some(p) = self.events.recv().await {
                if pred(&p) {
                    return Ok(p);
                }
            }
            bail!("connection closed")
        })
        .await
        .map_err(|_| anyhow!("nothing matching within {within:?}"))?
    }

    /// Waits until the connection is closed by the hub.
    pub async fn closed(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            while self.events.recv().await.is_some() {}
        })
        .await
        .is_ok()
    }
}

/// The native topic of a device.
pub fn topic(creds: &DeviceCreated, kind: &str) -> String {
    format!("{}{kind}", creds.mqtt.topic_prefix)
}

/// A bare MQTT 3.1.1 client on raw bytes, for what rumqttc will not send: keep-alive
/// 0, packet ids and DUP flags of the test's choosing, a socket dropped mid-flow.
pub struct RawClient {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

/// What a [`RawClient`] puts in its CONNECT.
pub struct RawLogin<'a> {
    pub client_id: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub keep_alive: u16,
    pub clean_session: bool,
    pub will: Option<mqttrs::LastWill<'a>>,
}

impl<'a> RawLogin<'a> {
    /// A device's login: its id as client id and username, clean session, keep-alive 60 s.
    pub fn device(creds: &'a DeviceCreated) -> RawLogin<'a> {
        RawLogin {
            client_id: &creds.id,
            username: &creds.mqtt.username,
            password: &creds.mqtt.password,
            keep_alive: 60,
            clean_session: true,
            will: None,
        }
    }
}

/// The CONNACK a [`RawClient`] got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawConnack {
    pub code: mqttrs::ConnectReturnCode,
    pub session_present: bool,
}

impl RawClient {
    /// Connects and reads the CONNACK, whatever it says.
    pub async fn connect(port: u16, login: RawLogin<'_>) -> Result<(RawClient, RawConnack)> {
        let mut c = RawClient {
            stream: tokio::net::TcpStream::connect(("127.0.0.1", port)).await?,
            buf: Vec::new(),
        };
        c.send(&mqttrs::Packet::Connect(mqttrs::Connect {
            protocol: mqttrs::Protocol::MQTT311,
            keep_alive: login.keep_alive,
            client_id: login.client_id,
            clean_session: login.clean_session,
            last_will: login.will,
            username: Some(login.username),
            password: Some(login.password.as_bytes()),
        }))
        .await?;
        match c.next().await? {
            mqttrs::Packet::Connack(a) => {
                let ack = RawConnack {
                    code: a.code,
                    session_present: a.session_present,
                };
                Ok((c, ack))
            }
            other => bail!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects and fails unless the hub accepts.
    pub async fn accepted(port: u16, login: RawLogin<'_>) -> Result<(RawClient, RawConnack)> {
        let (c, ack) = Self::connect(port, login).await?;
        if ack.code != mqttrs::ConnectReturnCode::Accepted {
            bail!("CONNECT refused: {:?}", ack.code);
        }
        Ok((c, ack))
    }

    pub async fn send(&mut self, p: &mqttrs::Packet<'_>) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut buf = vec![0u8; 64 * 1024];
        let n = mqttrs::encode_slice(p, &mut buf).map_err(|e| anyhow!("encode: {e:?}"))?;
        self.stream.write_all(&buf[..n]).await?;
        Ok(())
    }

    /// The next whole packet within 20 s.
    pub async fn next(&mut self) -> Result<mqttrs::Packet<'static>> {
        self.next_within(Duration::from_secs(20))
            .await?
            .ok_or_else(|| anyhow!("no packet within 20 s"))
    }

    /// The next whole packet, or `None` when none comes within `within`; an error when
    /// the hub closes the connection.
    pub async fn next_within(
        &mut self,
        within: Duration,
    ) -> Result<Option<mqttrs::Packet<'static>>> {
        use tokio::io::AsyncReadExt;
        let read = async {
            loop {
                if let Some(len) = raw_frame_len(&self.buf) {
                    if self.buf.len() >= len {
                        let frame: Vec<u8> = self.buf.drain(..len).collect();
                        // Leaked so the packet may borrow it for the rest of the test.
                        let frame: &'static [u8] = Box::leak(frame.into_boxed_slice());
                        return mqttrs::decode_slice(frame)
                            .map_err(|e| anyhow!("decode: {e:?}"))?
                            .ok_or_else(|| anyhow!("incomplete packet"));
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("the hub closed the connection");
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        match tokio::time::timeout(within, read).await {
            Ok(p) => p.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The next packet `pred` accepts, skipping others.
    pub async fn next_matching(
        &mut self,
        pred: impl Fn(&mqttrs::Packet<'_>) -> bool,
    ) -> Result<mqttrs::Packet<'static>> {
        loop {
            let p = self.next().await?;
            if pred(&p) {
                return Ok(p);
            }
        }
    }

    /// Subscribes to one filter and returns the granted code.
    pub async fn subscribe(
        &mut self,
        pid: u16,
        filter: &str,
        qos: mqttrs::QoS,
    ) -> Result<mqttrs::SubscribeReturnCodes> {
        self.send(&mqttrs::Packet::Subscribe(mqttrs::Subscribe {
            pid: raw_pid(pid)?,
            topics: vec![mqttrs::SubscribeTopic {
                topic_path: filter.to_string(),
                qos,
            }],
        }))
        .await?;
        match self
            .next_matching(|p| matches!(p, mqttrs::Packet::Suback(_)))
            .await?
        {
            mqttrs::Packet::Suback(s) => s
                .return_codes
                .first()
                .copied()
                .ok_or_else(|| anyhow!("empty SUBACK")),
            _ => unreachable!(),
        }
    }

    /// Publishes and, at QoS 1 or 2, waits for the PUBACK or PUBREC.
    pub async fn publish(
        &mut self,
        qospid: mqttrs::QosPid,
        retain: bool,
        topic: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.send(&mqttrs::Packet::Publish(mqttrs::Publish {
            dup: false,
            qospid,
            retain,
            topic_name: topic,
            payload,
        }))
        .await?;
        match qospid {
            mqttrs::QosPid::AtMostOnce => Ok(()),
            mqttrs::QosPid::AtLeastOnce(pid) => self
                .next_matching(|p| matches!(p, mqttrs::Packet::Puback(x) if *x == pid))
                .await
                .map(|_| ()),
            mqttrs::QosPid::ExactlyOnce(pid) => self
                .next_matching(|p| matches!(p, mqttrs::Packet::Pubrec(x) if *x == pid))
                .await
                .map(|_| ()),
        }
    }
}

pub fn raw_pid(n: u16) -> Result<mqttrs::Pid> {
    mqttrs::Pid::try_from(n).map_err(|e| anyhow!("pid {n}: {e:?}"))
}

fn raw_frame_len(buf: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let byte = *buf.get(1 + i)?;
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(2 + i + remaining);
        }
    }
    None
}
