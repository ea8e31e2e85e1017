//! Configuration: defaults, then an optional TOML file, then flags and environment.
//!
//! Every setting has a flag and an environment variable (`--http-addr` /
//! `MIMAMORI_HTTP_ADDR`, …); the file (`--config FILE`) uses the same names in
//! snake_case. A flag or variable overrides the file, which overrides the default.
//! `hub default-config` prints a commented file to start from.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(
    name = "hub",
    version,
    about = "Mimamori hub: MQTT broker, rules, alerts and API for watching over residents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a commented configuration file with every default.
    DefaultConfig,
    /// Look after the hub's users from the command line (works while the hub runs).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run the rules over a home's recorded events in virtual time and print each alert
    /// change as a JSON line, then a summary (see docs/replay.md): from files
    /// (--resident, --events) or from a hub's database (--database-url, --resident-id,
    /// --from), which is only read.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["resident", "database"])))]
    Replay {
        /// The home: {"timezone","rules","devices":[{"id","kind","room"}],"geofences":[…]}.
        #[arg(
            long,
            value_name = "FILE",
            requires = "events",
            required_unless_present = "database"
        )]
        resident: Option<std::path::PathBuf>,
        /// One native message per line, with "device" and "kind" added; any order.
        #[arg(long, value_name = "FILE", requires = "resident")]
        events: Option<std::path::PathBuf>,
        /// A hub's database (sqlite:… or postgres://…), opened read-only.
        #[arg(long = "database-url", value_name = "URL", conflicts_with_all = ["resident", "events"], requires_all = ["resident_id", "from"])]
        database: Option<String>,
        /// The resident whose stored history is replayed.
        #[arg(long = "resident-id", value_name = "ID", requires = "database")]
        resident_id: Option<i64>,
        /// Start: a date (YYYY-MM-DD, the resident's local midnight) or an RFC 3339 time.
        #[arg(long, value_name = "DATE", requires = "database")]
        from: Option<String>,
        /// End: a date (up to the end of that local day) or an RFC 3339 time; default now.
        #[arg(long, value_name = "DATE", requires = "database")]
        until: Option<String>,
        /// Rule settings merged over the resident's, to try a change.
        #[arg(long, value_name = "JSON")]
        rules: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Give a user a new password and end their sessions; prints a generated one unless
    /// --password-stdin is given.
    ResetPassword {
        /// The user whose password is reset.
        #[arg(long, default_value = "admin")]
        user: String,
        /// Read the new password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// The hub's database (default: DATABASE_URL, the configuration file, then sqlite:mimamori.db).
        #[arg(long = "database-url", value_name = "URL")]
        database: Option<String>,
    },
}

/// Settings as given on the command line or in the environment; unset ones fall back.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// TOML configuration file.
    #[arg(long, env = "MIMAMORI_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API and dashboard.
    #[arg(long, env = "MIMAMORI_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Address of the MQTT listener for devices (plain TCP).
    #[arg(long, env = "MIMAMORI_MQTT_ADDR")]
    pub mqtt_addr: Option<SocketAddr>,
    /// Address of the MQTT-over-TLS listener; needs --tls-cert and --tls-key.
    #[arg(long, env = "MIMAMORI_MQTT_TLS_ADDR")]
    pub mqtt_tls_addr: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listener.
    #[arg(long, env = "MIMAMORI_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    #[arg(long, env = "MIMAMORI_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// `sqlite:FILE` (the default, created on first start) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Password of the `admin` user created on first start; generated and printed once if unset.
    #[arg(long, env = "MIMAMORI_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Folder with the dashboard's files.
    #[arg(long, env = "MIMAMORI_DASHBOARD_DIR")]
    pub dashboard_dir: Option<PathBuf>,
    /// Folder of map tiles (`{z}/{x}/{y}.png`) the hub serves itself at `/tiles/`, for
    /// networks without internet; unset, the hub serves no tiles.
    #[arg(long, env = "MIMAMORI_TILES_DIR")]
    pub tiles_dir: Option<PathBuf>,
    /// Most MQTT connections held at once; further CONNECTs get "server unavailable".
    #[arg(long, env = "MIMAMORI_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Hours an API login stays valid.
    #[arg(long, env = "MIMAMORI_SESSION_HOURS")]
    pub session_hours: Option<u32>,
    /// Admins must log in with a one-time code (TOTP); one without may only set it up.
    #[arg(long, env = "MIMAMORI_REQUIRE_ADMIN_TOTP")]
    pub require_admin_totp: Option<bool>,
    /// Most MQTT connections people (staff, family) hold at once; the rest of
    /// --max-connections stays for devices.
    #[arg(long, env = "MIMAMORI_MAX_PEOPLE_CONNECTIONS")]
    pub max_people_connections: Option<usize>,
    /// Most MQTT sockets that have not yet had their CONNECT accepted; past it the oldest gives way.
    #[arg(long, env = "MIMAMORI_MQTT_MAX_PENDING")]
    pub mqtt_max_pending: Option<usize>,
    /// Most such sockets from one address (one /64 for IPv6).
    #[arg(long, env = "MIMAMORI_MQTT_PENDING_PER_SOURCE")]
    pub mqtt_pending_per_source: Option<usize>,
    /// Seconds a new MQTT connection may take to send CONNECT (at most 5).
    #[arg(long, env = "MIMAMORI_MQTT_CONNECT_TIMEOUT")]
    pub mqtt_connect_timeout: Option<u64>,
    /// Most HTTP connections held at once.
    #[arg(long, env = "MIMAMORI_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Most HTTP connections from one address (one /64 for IPv6).
    #[arg(long, env = "MIMAMORI_HTTP_PER_SOURCE")]
    pub http_per_source: Option<usize>,
    /// Seconds an HTTP connection may take to send a request's head, and may stay idle between requests.
    #[arg(long, env = "MIMAMORI_HTTP_HEADER_TIMEOUT")]
    pub http_header_timeout: Option<u64>,
    /// Cluster mode: the NATS JetStream server(s) holding the event log, e.g.
    /// `nats://127.0.0.1:4222` (comma-separated for several). Needs a PostgreSQL store.
    #[arg(long, env = "MIMAMORI_NATS_URL")]
    pub nats_url: Option<String>,
    /// Cluster mode: this hub's name among the others (default: the host name).
    #[arg(long, env = "MIMAMORI_NODE_ID")]
    pub node_id: Option<String>,
    /// Cluster mode: how many partitions the residents are spread over (fixed for the
    /// life of a cluster; default 16).
    #[arg(long, env = "MIMAMORI_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Cluster mode: copies JetStream keeps of each stream (1, or 3 on a NATS cluster of three).
    #[arg(long, env = "MIMAMORI_NATS_REPLICAS")]
    pub nats_replicas: Option<usize>,
    /// The Things Stack MQTT server, `host:port` (plain MQTT), to take LoRaWAN uplinks from.
    #[arg(long, env = "MIMAMORI_TTS_SERVER")]
    pub tts_server: Option<String>,
    /// The Things Stack MQTT username: `{application id}@{tenant id}`.
    #[arg(long, env = "MIMAMORI_TTS_USERNAME")]
    pub tts_username: Option<String>,
    /// The Things Stack API key of that application (its MQTT password).
    #[arg(long, env = "MIMAMORI_TTS_API_KEY", hide_env_values = true)]
    pub tts_api_key: Option<String>,
    /// Seconds overdue rule deadlines wait after a start for devices to reconnect and deliver
    /// what they buffered.
    #[arg(long, env = "MIMAMORI_RESTART_GRACE_S")]
    pub restart_grace_s: Option<u32>,
    /// Whether devices may be registered for a resident before their consent is recorded
    /// (`true`/`false`; default false).
    #[arg(long, env = "MIMAMORI_DEVICES_BEFORE_CONSENT")]
    pub devices_before_consent: Option<bool>,
    /// Days raw position fixes and BLE sightings are kept (0: for ever; default 30).
    #[arg(long, env = "MIMAMORI_RETENTION_POSITIONS_DAYS")]
    pub retention_positions_days: Option<u32>,
    /// Days motion, door and other sensor readings are kept (default 180).
    #[arg(long, env = "MIMAMORI_RETENTION_SENSORS_DAYS")]
    pub retention_sensors_days: Option<u32>,
    /// Days the hourly activity rolled up from purged readings is kept (default 730).
    #[arg(long, env = "MIMAMORI_RETENTION_ACTIVITY_DAYS")]
    pub retention_activity_days: Option<u32>,
    /// Days refused device messages are kept (default 30).
    #[arg(long, env = "MIMAMORI_RETENTION_DEAD_LETTERS_DAYS")]
    pub retention_dead_letters_days: Option<u32>,
    /// Days resolved alerts, their history and deliveries are kept (default 1825).
    #[arg(long, env = "MIMAMORI_RETENTION_ALERTS_DAYS")]
    pub retention_alerts_days: Option<u32>,
    /// Days the audit trail of staff actions is kept (default 1825).
    #[arg(long, env = "MIMAMORI_RETENTION_AUDIT_DAYS")]
    pub retention_audit_days: Option<u32>,
    /// Days the log of who read whose data is kept (default 1825).
    #[arg(long, env = "MIMAMORI_RETENTION_ACCESS_LOG_DAYS")]
    pub retention_access_log_days: Option<u32>,
    /// Seconds between retention passes (default 3600); 0 runs them only when an admin
    /// asks (`POST /api/v1/retention/run`).
    #[arg(long, env = "MIMAMORI_RETENTION_INTERVAL_S")]
    pub retention_interval_s: Option<u32>,
    /// A file holding the key ring webhook signing secrets are sealed with: lines of
    /// `ID:BASE64` (32 bytes each), the first one sealing (docs/privacy.md).
    #[arg(long, env = "MIMAMORI_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// The same key ring given directly (`;` may separate its lines).
    #[arg(long, env = "MIMAMORI_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// Seconds a reading's `ts` may lie before its receipt; older messages are refused as
    /// `stale_timestamp`. Raise it to load days of history (`device-sim backfill`).
    #[arg(long, env = "MIMAMORI_MAX_AGE_S")]
    pub max_age_s: Option<u32>,
    /// Notifications, escalation and SMTP: the `[notify]` table of the file.
    #[command(flatten)]
    pub notify: crate::notify::config::NotifySettings,
}

/// The settings in force, every one resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub mqtt_addr: SocketAddr,
    pub mqtt_tls: Option<TlsSettings>,
    pub database_url: String,
    pub admin_password: Option<String>,
    pub dashboard_dir: PathBuf,
    /// Map tiles served at `/tiles/`.
    pub tiles_dir: Option<PathBuf>,
    pub max_connections: usize,
    pub session_hours: u32,
    pub require_admin_totp: bool,
    pub limits: Limits,
    /// Set in cluster mode: several hubs share a NATS JetStream log and PostgreSQL.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    pub restart_grace_s: u32,
    /// How old a reading's `ts` may be, in seconds.
    pub max_age_s: u32,
    pub notify: crate::notify::config::NotifyConfig,
    /// The Things Stack server the hub takes LoRaWAN uplinks from, if one is configured.
    pub tts: Option<TtsConfig>,
    /// Consent and retention (docs/privacy.md).
    pub privacy: crate::privacy::PrivacyConfig,
}

/// How to reach The Things Stack's MQTT server.
#[derive(Debug, Clone)]
pub struct TtsConfig {
    pub host: String,
    pub port: u16,
    /// `{application id}@{tenant id}` (`@ttn` on The Things Network).
    pub username: String,
    /// An API key of the application with the right to read its traffic.
    pub api_key: String,
    pub client_id: String,
}

/// Connection limits of the listeners (see `docs/operations.md`, Security).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_people_connections: usize,
    pub mqtt_max_pending: usize,
    pub mqtt_pending_per_source: usize,
    pub mqtt_connect_timeout: std::time::Duration,
    pub http_max_connections: usize,
    pub http_per_source: usize,
    pub http_header_timeout: std::time::Duration,
}

impl Limits {
    /// The defaults for a hub holding `max_connections` MQTT connections.
    pub fn defaults(max_connections: usize) -> Limits {
        Limits {
            max_people_connections: (max_connections / 10).max(1),
            mqtt_max_pending: 1024,
            mqtt_pending_per_source: 1024,
            mqtt_connect_timeout: std::time::Duration::from_secs(5),
            http_max_connections: 4096,
            http_per_source: 256,
            http_header_timeout: std::time::Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub const DEFAULT_CONFIG: &str = r#"# Mimamori hub configuration. Every key can also be given as a flag
# (--http-addr) or an environment variable (MIMAMORI_HTTP_ADDR); those win.

# HTTP API and dashboard.
http_addr = "127.0.0.1:8080"
# MQTT for devices and gateways (MQTT 3.1 and 3.1.1).
mqtt_addr = "0.0.0.0:1883"
# MQTT over TLS: set all three to enable.
# mqtt_tls_addr = "0.0.0.0:8883"
# tls_cert = "/etc/mimamori/cert.pem"
# tls_key = "/etc/mimamori/key.pem"
# sqlite:FILE (created on first start) or postgres://user@host/db (env DATABASE_URL).
database_url = "sqlite:mimamori.db"
# admin_password = "…"   # better: MIMAMORI_ADMIN_PASSWORD
dashboard_dir = "dashboard"
# tiles_dir = "/srv/tiles"   # offline map tiles {z}/{x}/{y}.png, served at /tiles/
max_connections = 20000
session_hours = 12
require_admin_totp = false   # true: admins log in with a one-time code (docs/api.md)
# Connection limits (docs/operations.md, Security). People's MQTT connections may hold at
# most max_people_connections (default a tenth of max_connections); the rest is for devices.
# max_people_connections = 2000
mqtt_max_pending = 1024
mqtt_pending_per_source = 1024
mqtt_connect_timeout = 5
http_max_connections = 4096
http_per_source = 256
http_header_timeout = 10
# Cluster mode (several hubs, no single point of failure): a NATS JetStream URL and a
# postgres:// database_url; see docs/operations.md.
# nats_url = "nats://127.0.0.1:4222"
# node_id = "hub-1"
# partitions = 16
# nats_replicas = 1
# Seconds overdue rule deadlines wait after a start for devices to deliver what they buffered.
restart_grace_s = 60
# Privacy (docs/privacy.md): devices only for residents whose consent is recorded, and
# how many days each class of data is kept (0 keeps it for ever).
devices_before_consent = false
retention_positions_days = 30
retention_sensors_days = 180
retention_activity_days = 730
retention_dead_letters_days = 30
retention_alerts_days = 1825
retention_audit_days = 1825
retention_access_log_days = 1825
# Seconds between retention passes; 0: only when an admin asks (POST /api/v1/retention/run).
retention_interval_s = 3600
# Key ring webhook signing secrets are sealed with at rest (docs/privacy.md#at-rest):
# a file of ID:BASE64 lines readable by the hub's user only; better than secrets_key here.
# secrets_key_file = "/etc/mimamori/secrets.keys"
# Seconds a reading's ts may lie in the past before it is refused (stale_timestamp).
max_age_s = 86400
"#;

impl Settings {
    /// Values from `self` win over those of `file`.
    fn over(self, file: Settings) -> Settings {
        Settings {
            config: self.config,
            http_addr: self.http_addr.or(file.http_addr),
            mqtt_addr: self.mqtt_addr.or(file.mqtt_addr),
            mqtt_tls_addr: self.mqtt_tls_addr.or(file.mqtt_tls_addr),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            database_url: self.database_url.or(file.database_url),
            admin_password: self.admin_password.or(file.admin_password),
            dashboard_dir: self.dashboard_dir.or(file.dashboard_dir),
            tiles_dir: self.tiles_dir.or(file.tiles_dir),
            max_connections: self.max_connections.or(file.max_connections),
            session_hours: self.session_hours.or(file.session_hours),
            require_admin_totp: self.require_admin_totp.or(file.require_admin_totp),
            max_people_connections: self.max_people_connections.or(file.max_people_connections),
            mqtt_max_pending: self.mqtt_max_pending.or(file.mqtt_max_pending),
            mqtt_pending_per_source: self
                .mqtt_pending_per_source
                .or(file.mqtt_pending_per_source),
            mqtt_connect_timeout: self.mqtt_connect_timeout.or(file.mqtt_connect_timeout),
            http_max_connections: self.http_max_connections.or(file.http_max_connections),
            http_per_source: self.http_per_source.or(file.http_per_source),
            http_header_timeout: self.http_header_timeout.or(file.http_header_timeout),
            nats_url: self.nats_url.or(file.nats_url),
            node_id: self.node_id.or(file.node_id),
            partitions: self.partitions.or(file.partitions),
            nats_replicas: self.nats_replicas.or(file.nats_replicas),
            restart_grace_s: self.restart_grace_s.or(file.restart_grace_s),
            max_age_s: self.max_age_s.or(file.max_age_s),
            notify: self.notify.over(file.notify),
            tts_server: self.tts_server.or(file.tts_server),
            tts_username: self.tts_username.or(file.tts_username),
            tts_api_key: self.tts_api_key.or(file.tts_api_key),
            devices_before_consent: self.devices_before_consent.or(file.devices_before_consent),
            secrets_key_file: self.secrets_key_file.or(file.secrets_key_file),
            secrets_key: self.secrets_key.or(file.secrets_key),
            retention_positions_days: self
                .retention_positions_days
                .or(file.retention_positions_days),
            retention_sensors_days: self.retention_sensors_days.or(file.retention_sensors_days),
            retention_activity_days: self
                .retention_activity_days
                .or(file.retention_activity_days),
            retention_dead_letters_days: self
                .retention_dead_letters_days
                .or(file.retention_dead_letters_days),
            retention_alerts_days: self.retention_alerts_days.or(file.retention_alerts_days),
            retention_audit_days: self.retention_audit_days.or(file.retention_audit_days),
            retention_access_log_days: self
                .retention_access_log_days
                .or(file.retention_access_log_days),
            retention_interval_s: self.retention_interval_s.or(file.retention_interval_s),
        }
    }

    fn privacy(&self) -> anyhow::Result<crate::privacy::PrivacyConfig> {
        let d = crate::privacy::retention::Retention::default();
        let retention = crate::privacy::retention::Retention {
            positions_days: self.retention_positions_days.unwrap_or(d.positions_days),
            sensors_days: self.retention_sensors_days.unwrap_or(d.sensors_days),
            activity_days: self.retention_activity_days.unwrap_or(d.activity_days),
            dead_letters_days: self
                .retention_dead_letters_days
                .unwrap_or(d.dead_letters_days),
            alerts_days: self.retention_alerts_days.unwrap_or(d.alerts_days),
            audit_days: self.retention_audit_days.unwrap_or(d.audit_days),
            access_log_days: self.retention_access_log_days.unwrap_or(d.access_log_days),
        };
        retention.validate().map_err(anyhow::Error::msg)?;
        let every = self
            .retention_interval_s
            .map_or(crate::privacy::retention::DEFAULT_EVERY, |s| {
                std::time::Duration::from_secs(u64::from(s))
            });
        if every > std::time::Duration::from_secs(7 * 86_400) {
            anyhow::bail!("retention_interval_s must be at most 604800 (a week); 0 runs passes only when asked");
        }
        Ok(crate::privacy::PrivacyConfig {
            devices_before_consent: self.devices_before_consent.unwrap_or(false),
            retention,
            retention_every: (!every.is_zero()).then_some(every),
            read_audit: true,
            secrets: self.secrets()?.map(std::sync::Arc::new),
        })
    }

    /// The key ring for secrets at rest, from the file or the setting; the file must be
    /// the hub's user's only.
    fn secrets(&self) -> anyhow::Result<Option<crate::privacy::seal::Sealer>> {
        use std::os::unix::fs::PermissionsExt;
        let text = match (&self.secrets_key_file, &self.secrets_key) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => anyhow::bail!("give secrets_key_file or secrets_key, not both"),
            (None, Some(ring)) => ring.replace(';', "\n"),
            (Some(path), None) => {
                let mode = std::fs::metadata(path)
                    .with_context(|| format!("cannot read secrets key file {}", path.display()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    anyhow::bail!(
                        "secrets key file {} is readable by others (mode {:o}): chmod 600 it",
                        path.display(),
                        mode & 0o777
                    );
                }
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read secrets key file {}", path.display()))?
            }
        };
        crate::privacy::seal::Sealer::parse(&text)
            .map(Some)
            .map_err(anyhow::Error::msg)
    }

    /// Reads the file, if one is named, and resolves every setting.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let merged = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read configuration file {}", path.display())
                })?;
                let file: Settings = toml::from_str(&text)
                    .with_context(|| format!("configuration file {} is invalid", path.display()))?;
                self.over(file)
            }
            None => self,
        };
        merged.finish()
    }

    /// The Things Stack's settings: all three, or none.
    fn tts(&self) -> anyhow::Result<Option<TtsConfig>> {
        let (server, username, api_key) =
            match (&self.tts_server, &self.tts_username, &self.tts_api_key) {
                (None, None, None) => return Ok(None),
                (Some(s), Some(u), Some(k)) => (s, u, k),
                _ => anyhow::bail!("tts_server, tts_username and tts_api_key come together"),
            };
        let (host, port) = server
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| anyhow::anyhow!("tts_server {server:?} must be host:port"))?;
        if username.is_empty() || username.contains(['/', '+', '#']) {
            anyhow::bail!("tts_username {username:?} must be {{application id}}@{{tenant id}}");
        }
        Ok(Some(TtsConfig {
            host,
            port,
            username: username.clone(),
            api_key: api_key.clone(),
            client_id: crate::security::random_id("mimamori-", 8),
        }))
    }

    fn finish(self) -> anyhow::Result<Config> {
        let tts = self.tts()?;
        let privacy = self.privacy()?;
        let max_connections = self.max_connections.unwrap_or(20_000);
        let limits = self.limits(max_connections)?;
        let mqtt_tls = match (self.mqtt_tls_addr, self.tls_cert, self.tls_key) {
            (None, _, _) => None,
            (Some(addr), Some(cert), Some(key)) => Some(TlsSettings { addr, cert, key }),
            (Some(_), _, _) => anyhow::bail!("mqtt_tls_addr needs both tls_cert and tls_key"),
        };
        if max_connections == 0 {
            anyhow::bail!("max_connections must be at least 1");
        }
        let session_hours = self.session_hours.unwrap_or(12);
        if session_hours == 0 || session_hours > 24 * 30 {
            anyhow::bail!("session_hours must be between 1 and 720");
        }
        let database_url = self
            .database_url
            .unwrap_or_else(|| "sqlite:mimamori.db".into());
        let cluster = crate::cluster::ClusterConfig::from_settings(
            self.nats_url,
            self.node_id,
            self.partitions,
            self.nats_replicas,
            &database_url,
        )?;
        let restart_grace_s = self.restart_grace_s.unwrap_or(60);
        if restart_grace_s > 600 {
            anyhow::bail!("restart_grace_s must be between 0 and 600");
        }
        let max_age_s = self.max_age_s.unwrap_or(86_400);
        if !(60..=366 * 86_400).contains(&max_age_s) {
            anyhow::bail!("max_age_s must be between 60 and 31622400 (366 days)");
        }
        Ok(Config {
            restart_grace_s,
            max_age_s,
            http_addr: self
                .http_addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            mqtt_addr: self
                .mqtt_addr
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 1883))),
            mqtt_tls,
            database_url,
            admin_password: self.admin_password.filter(|p| !p.is_empty()),
            dashboard_dir: self
                .dashboard_dir
                .unwrap_or_else(|| PathBuf::from("dashboard")),
            tiles_dir: self.tiles_dir,
            max_connections,
            session_hours,
            require_admin_totp: self.require_admin_totp.unwrap_or(false),
            limits,
            cluster,
            notify: crate::notify::config::NotifyConfig {
                secrets: privacy.secrets.clone().unwrap_or_default(),
                ..self.notify.finish()?
            },
            tts,
            privacy,
        })
    }

    fn limits(&self, max_connections: usize) -> anyhow::Result<Limits> {
        let d = Limits::defaults(max_connections);
        let secs = std::time::Duration::from_secs;
        let limits = Limits {
            max_people_connections: self
                .max_people_connections
                .unwrap_or(d.max_people_connections),
            mqtt_max_pending: self.mqtt_max_pending.unwrap_or(d.mqtt_max_pending),
            mqtt_pending_per_source: self
                .mqtt_pending_per_source
                .unwrap_or(d.mqtt_pending_per_source),
            mqtt_connect_timeout: self
                .mqtt_connect_timeout
                .map_or(d.mqtt_connect_timeout, secs),
            http_max_connections: self.http_max_connections.unwrap_or(d.http_max_connections),
            http_per_source: self.http_per_source.unwrap_or(d.http_per_source),
            http_header_timeout: self.http_header_timeout.map_or(d.http_header_timeout, secs),
        };
        let counts = [
            ("max_people_connections", limits.max_people_connections),
            ("mqtt_max_pending", limits.mqtt_max_pending),
            ("mqtt_pending_per_source", limits.mqtt_pending_per_source),
            ("http_max_connections", limits.http_max_connections),
            ("http_per_source", limits.http_per_source),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            anyhow::bail!("{name} must be at least 1");
        }
        if !(1..=5).contains(&limits.mqtt_connect_timeout.as_secs()) {
            anyhow::bail!("mqtt_connect_timeout must be between 1 and 5 seconds");
        }
        if !(1..=300).contains(&limits.http_header_timeout.as_secs()) {
            anyhow::bail!("http_header_timeout must be between 1 and 300 seconds");
        }
        Ok(limits)
    }
}

impl Config {
    /// A configuration for tests and embedding: every port chosen by the OS, one SQLite file.
    pub fn ephemeral(database_url: impl Into<String>) -> Config {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt_tls: None,
            database_url: database_url.into(),
            admin_password: None,
            dashboard_dir: PathBuf::from("dashboard"),
            tiles_dir: None,
            max_connections: 20_000,
            session_hours: 12,
            require_admin_totp: false,
            limits: Limits::defaults(20_000),
            cluster: None,
            restart_grace_s: 60,
            max_age_s: 86_400,
            notify: crate::notify::config::NotifyConfig::default(),
            tts: None,
            privacy: crate::privacy::PrivacyConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_file_parses_and_matches_the_defaults() -> anyhow::Result<()> {
        let file: Settings = toml::from_str(DEFAULT_CONFIG)?;
        let from_file = Settings::default().over(file).finish()?;
        let built_in = Settings::default().finish()?;
        assert_eq!(from_file.http_addr, built_in.http_addr);
        assert_eq!(from_file.mqtt_addr, built_in.mqtt_addr);
        assert_eq!(from_file.database_url, built_in.database_url);
        assert_eq!(from_file.max_connections, built_in.max_connections);
        assert_eq!(from_file.privacy.retention, built_in.privacy.retention);
        assert_eq!(
            from_file.privacy.retention_every,
            built_in.privacy.retention_every
        );
        assert_eq!(
            from_file.privacy.devices_before_consent,
            built_in.privacy.devices_before_consent
        );
        Ok(())
    }

    #[test]
    fn flags_win_over_the_file() -> anyhow::Result<()> {
        let file: Settings = toml::from_str("http_addr = \"127.0.0.1:9000\"\nmax_connections = 5")?;
        let flags = Settings {
            max_connections: Some(7),
            ..Settings::default()
        };
        let cfg = flags.over(file).finish()?;
        assert_eq!(cfg.http_addr.port(), 9000);
        assert_eq!(cfg.max_connections, 7);
        Ok(())
    }

    #[test]
    fn retention_runs_hourly_by_default_and_zero_waits_to_be_asked() -> anyhow::Result<()> {
        let every = |s: Option<u32>| {
            Settings {
                retention_interval_s: s,
                ..Settings::default()
            }
            .finish()
            .map(|c| c.privacy.retention_every)
        };
        assert_eq!(every(None)?, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(every(Some(0))?, None);
        assert_eq!(every(Some(30))?, Some(std::time::Duration::from_secs(30)));
        assert!(every(Some(8 * 86_400)).is_err());
        Ok(())
    }

    #[test]
    fn unknown_keys_and_half_tls_are_refused() {
        assert!(toml::from_str::<Settings>("http_adr = \"x\"").is_err());
        let half = Settings {
            mqtt_tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8883))),
            ..Settings::default()
        };
        assert!(half.finish().is_err());
    }
}
