//! Residents and devices for a run: through the API for a few thousand, and straight
//! into a stopped hub's SQLite file for a region's worth (100,000 residents, millions of
//! stored readings), which the API would take minutes to create.

use std::path::Path;

use anyhow::{Context, Result};
use device_sim::hub::HubApi;
use device_sim::mqtt::DeviceLogin;
use futures_util::{stream, StreamExt, TryStreamExt};
use mimamori_protocol::api::{NewDevice, NewResident};
use mimamori_protocol::{DeviceKind, RuleSettings};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

use crate::process::{HubProcess, ADMIN_PASSWORD};

/// Logs in to a running hub as admin.
pub async fn admin(hub: &HubProcess) -> Result<HubApi> {
    HubApi::login(&hub.base, "admin", ADMIN_PASSWORD).await
}

/// Creates `count` residents through the API, each with one device of `kind`, and
/// returns the devices' MQTT logins.
pub async fn devices_via_api(
    hub: &HubProcess,
    api: &HubApi,
    kind: DeviceKind,
    count: usize,
) -> Result<Vec<DeviceLogin>> {
    let host = hub.mqtt_host.clone();
    let port = hub.mqtt_port;
    stream::iter(0..count)
        .map(|i| {
            let host = host.clone();
            async move {
                let resident = api
                    .create_resident(&NewResident {
                        name: format!("Bench resident {i}"),
                        timezone: Some("Asia/Tokyo".into()),
                        home: None,
                        rules: None,
                    })
                    .await?;
                let device = api
                    .create_device(&NewDevice {
                        resident_id: resident.id,
                        kind,
                        name: format!("bench {}", kind.as_str()),
                        room: None,
                        role: None,
                    })
                    .await?;
                Ok::<_, anyhow::Error>(DeviceLogin {
                    host,
                    port,
                    device_id: device.id,
                    password: device.mqtt.password,
                })
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await
}

/// What [`bulk_sqlite`] wrote.
pub struct Bulk {
    /// Device id and MQTT password of every resident's motion sensor, in resident order.
    pub devices: Vec<(String, String)>,
}

/// Writes `residents` residents (one motion sensor each) and `readings` stored readings
/// into the SQLite file of a hub that has run once (so the schema exists) and is stopped.
///
/// Resident `i` gets an inactivity threshold of `first_deadline_s + i % spread_s`, day and
/// night, with no morning check, so that every resident's timer falls due within the
/// `spread_s` seconds after `first_deadline_s` from the moment the hub restores them.
pub async fn bulk_sqlite(
    db: &Path,
    residents: usize,
    readings: u64,
    first_deadline_s: u64,
    spread_s: u64,
) -> Result<Bulk> {
    let opts = SqliteConnectOptions::new()
        .filename(db)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let mut conn = SqliteConnection::connect_with(&opts)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut devices = Vec::with_capacity(residents);
    let mut tx = conn.begin().await?;
    for i in 0..residents {
        let id = i as i64 + 1;
        let mut rules = RuleSettings::default();
        let threshold = first_deadline_s + i as u64 % spread_s.max(1);
        rules.inactivity.day_threshold_s = threshold;
        rules.inactivity.night_threshold_s = threshold;
        rules.inactivity.morning_deadline = None;
        // language=SQLite
        sqlx::query("INSERT INTO residents (id, name, timezone, rules, created_at) VALUES (?, ?, 'Asia/Tokyo', ?, ?)")
            .bind(id)
            .bind(format!("Bench resident {id}"))
            .bind(serde_json::to_string(&rules)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let device_id = format!("bench-motion-{id}");
        let secret = hub::security::random_secret();
        // language=SQLite
        sqlx::query("INSERT INTO devices (id, resident_id, kind, name, secret_hash, created_at) VALUES (?, ?, 'motion', 'bench motion', ?, ?)")
            .bind(&device_id)
            .bind(id)
            .bind(hub::security::hash_token(&secret))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        devices.push((device_id, secret));
    }
    tx.commit().await?;
    insert_readings(&mut conn, residents.max(1) as i64, readings, now).await?;
    conn.close().await?;
    Ok(Bulk { devices })
}

/// Heartbeats spread over the residents and the last 30 days, generated inside SQLite in
/// transactions of a million rows.
async fn insert_readings(
    conn: &mut SqliteConnection,
    residents: i64,
    total: u64,
    now: i64,
) -> Result<()> {
    const CHUNK: u64 = 1_000_000;
    let month_ms: i64 = 30 * 24 * 3600 * 1000;
    let mut done = 0;
    while done < total {
        let n = CHUNK.min(total - done);
        // language=SQLite
        sqlx::query(
            "WITH RECURSIVE seq(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM seq WHERE x < ?2)
             INSERT INTO readings (resident_id, device_id, kind, ts, received_at, battery)
             SELECT x % ?3 + 1, 'bench-motion-' || (x % ?3 + 1), 'heartbeat',
                    ?4 - (x * 7919) % ?5, ?4 - (x * 7919) % ?5, 50 + x % 50
             FROM seq",
        )
        .bind(done as i64)
        .bind((done + n - 1) as i64)
        .bind(residents)
        .bind(now)
        .bind(month_ms)
        .execute(&mut *conn)
        .await?;
        done += n;
    }
    Ok(())
}

/// The device logins of bulk-written devices, for a hub listening on `hub`.
pub fn logins(hub: &HubProcess, devices: &[(String, String)]) -> Vec<DeviceLogin> {
    devices
        .iter()
        .map(|(id, secret)| DeviceLogin {
            host: hub.mqtt_host.clone(),
            port: hub.mqtt_port,
            device_id: id.clone(),
            password: secret.clone(),
        })
        .collect()
}
