//! Privacy by law, against the real hub: consent decides whether a resident's devices
//! are heard, reads are logged, retention purges by class (with a fake clock), and an
//! export holds everything of one resident and nothing of another.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use chrono::{TimeZone, Utc};
use hub::alerts::{AlertRecord, Effects, HistoryRow};
use hub::metrics::Metrics;
use hub::privacy::retention::{purge_once, Retention};
use hub::store::privacy::{Access, DataClass};
use hub::store::{self, AuditEntry, Batch, NewResidentRow, RejectedRow, Store};
use mimamori_protocol::api::Device;
use mimamori_protocol::native::RejectReason;
use mimamori_protocol::{
    Alert, AlertKind, AlertState, DeviceEvent, DeviceKind, Reading, RuleSettings, Severity,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const WITHIN: Duration = Duration::from_secs(20);

async fn rejected_no_consent(hub: &TestHub) -> Result<Vec<Value>> {
    let v = hub.expect(Method::GET, "/rejected", None, 200).await?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["reason"] == "no_consent")
        .cloned()
        .collect())
}

/// Without a current consent no device is registered and nothing sent is kept; a
/// withdrawal stops collection at once, is counted, dead-lettered and audited.
async fn consent_decides_collection(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &[]).await?;
    let rid = hub
        .resident_without_consent(json!({"name": "Sato Kiyoshi"}))
        .await?;
    let (status, body) = hub
        .admin(
            Method::POST,
            "/devices",
            Some(json!({"resident_id": rid, "kind": "motion", "name": "hall"})),
        )
        .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    assert!(body["message"]
        .as_str()
        .unwrap_or_default()
        .contains("consent"));

    let (status, body) = hub
        .admin(
            Method::POST,
            &format!("/residents/{rid}/consent"),
            Some(json!({"given_on": "2999-01-01", "given_by": "resident", "giver_name": "Sato Kiyoshi",
                        "purposes": ["watch-over"], "recipients": ["staff"], "document_ref": "form 7"})),
        )
        .await?;
    assert_eq!(status, 422, "a consent dated in the future: {body}");
    let (status, _) = hub
        .admin(
            Method::POST,
            &format!("/residents/{rid}/consent"),
            Some(json!({"given_on": "2026-01-05", "given_by": "neighbour", "giver_name": "x",
                        "purposes": ["watch-over"], "recipients": ["staff"], "document_ref": "form 7"})),
        )
        .await?;
    assert_eq!(status, 422, "given_by is the resident or a guardian");
    hub.consent(rid).await?;

    let dev = hub.device(rid, "motion").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    mqtt.publish_acked(&topic(&dev, "motion"), r#"{"motion":true,"room":"hall"}"#)
        .await?;
    assert_eq!(hub.readings(rid).await?.len(), 1);

    let withdrawn = hub
        .expect(
            Method::POST,
            &format!("/residents/{rid}/consent/withdraw"),
            Some(json!({"note": "家族から電話で撤回"})),
            200,
        )
        .await?;
    assert_eq!(withdrawn["withdrawn"], 1);
    // QoS 1 is still acknowledged, as for every refusal, so the device does not resend.
    mqtt.publish_acked(
        &topic(&dev, "motion"),
        r#"{"motion":true,"room":"bedroom"}"#,
    )
    .await?;
    mqtt.publish_acked(&topic(&dev, "heartbeat"), r#"{"battery":90}"#)
        .await?;
    assert_eq!(
        hub.readings(rid).await?.len(),
        1,
        "nothing after the withdrawal is kept"
    );
    let refused = rejected_no_consent(&hub).await?;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused
        .iter()
        .all(|r| r["payload"] == "" && r["device_id"] == dev.id.as_str()));
    assert!(!refused.iter().any(|r| r.to_string().contains("bedroom")));
    assert_eq!(
        hub.metric(r#"mimamori_messages_rejected_total{reason="no_consent"}"#)
            .await?,
        2.0
    );
    let (status, _) = hub
        .admin(
            Method::POST,
            &format!("/residents/{rid}/consent/withdraw"),
            None,
        )
        .await?;
    assert_eq!(status, 409, "nothing left to withdraw");

    let consents = hub
        .expect(Method::GET, &format!("/residents/{rid}/consent"), None, 200)
        .await?;
    assert_eq!(consents["current"], Value::Null);
    assert_eq!(consents["history"][0]["withdrawn_by"], "admin");
    assert_eq!(
        consents["history"][0]["withdrawal_note"],
        "家族から電話で撤回"
    );

    // Consent again: collection resumes.
    hub.consent(rid).await?;
    mqtt.publish_acked(
        &topic(&dev, "motion"),
        r#"{"motion":true,"room":"kitchen"}"#,
    )
    .await?;
    assert_eq!(hub.readings(rid).await?.len(), 2);
    let audit = hub
        .expect(Method::GET, "/audit?limit=50", None, 200)
        .await?;
    let actions: Vec<&str> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["target"] == format!("resident/{rid}"))
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "consent.record",
            "consent.withdraw",
            "consent.record",
            "resident.create"
        ]
    );
    Ok(())
}

/// The first access-log entry of `rid` that `matches`, once the background writer has
/// written it.
pub async fn logged(
    hub: &TestHub,
    rid: i64,
    what: &str,
    matches: impl Fn(&Value) -> bool,
) -> Result<Value> {
    eventually(what, WITHIN, || async {
        let v = hub
            .expect(
                Method::GET,
                &format!("/residents/{rid}/access-log"),
                None,
                200,
            )
            .await
            .ok()?;
        v["entries"]
            .as_array()?
            .iter()
            .find(|e| matches(e))
            .cloned()
    })
    .await
}

#[tokio::test]
async fn consent_decides_collection_sqlite() -> Result<()> {
    consent_decides_collection(Backend::Sqlite).await
}

#[tokio::test]
async fn consent_decides_collection_postgres() -> Result<()> {
    if skip_postgres("consent_decides_collection_postgres") {
        return Ok(());
    }
    consent_decides_collection(Backend::Postgres).await
}

/// With `--devices-before-consent true` a device may be registered first; what it sends
/// is still refused until the consent is recorded, and the database file is private.
#[tokio::test]
async fn devices_may_come_first_when_configured_but_collection_waits() -> Result<()> {
    let hub = TestHub::start_with(Backend::Sqlite, &["--devices-before-consent", "true"]).await?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(hub.dir.path().join("hub.db"))?.permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "the SQLite file is the hub's user's only"
    );
    let rid = hub
        .resident_without_consent(json!({"name": "Early Device"}))
        .await?;
    let dev = hub.device(rid, "button").await?;
    let mut mqtt = connect_device(&hub, &dev).await?;
    mqtt.publish_acked(&topic(&dev, "sos"), "{}").await?;
    assert_eq!(rejected_no_consent(&hub).await?.len(), 1);
    assert!(
        hub.alerts(rid).await?.is_empty(),
        "no alert from data never collected"
    );
    hub.consent(rid).await?;
    mqtt.publish_acked(&topic(&dev, "sos"), "{}").await?;
    hub.wait_alert(rid, "sos", "open", WITHIN).await?;
    Ok(())
}

/// A staff member's read of a track is in the access log with its row count; the admin
/// sees the entry, the resident's family a plain sentence, other staff nothing.
async fn reads_are_logged(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &[]).await?;
    let rid = hub.resident(json!({"name": "Ito Fumi"})).await?;
    let gps = hub.device(rid, "gps").await?;
    let mut mqtt = connect_device(&hub, &gps).await?;
    for (i, lat) in [35.7074, 35.7080, 35.7086].iter().enumerate() {
        let payload = json!({"lat": lat, "lon": 139.6638, "accuracy_m": 10,
                             "ts": Utc::now().timestamp_millis() - 1000 * (3 - i as i64)});
        mqtt.publish_acked(&topic(&gps, "gps"), payload.to_string())
            .await?;
    }
    let tanaka = hub.user("tanaka", "staff", &[]).await?;
    let family = hub.user("ito.family", "family", &[rid]).await?;
    let (status, track) = hub
        .call(
            Some(&tanaka),
            Method::GET,
            &format!("/residents/{rid}/track"),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(track.as_array().map(Vec::len), Some(3));

    let log = logged(&hub, rid, "the track read in the access log", |e| {
        e["actor"] == "tanaka" && e["what"] == "track"
    })
    .await?;
    assert_eq!(
        (log["rows"].as_i64(), log["role"].as_str()),
        (Some(3), Some("staff"))
    );

    let (status, _) = hub
        .call(
            Some(&tanaka),
            Method::GET,
            &format!("/residents/{rid}/access-log"),
            None,
        )
        .await?;
    assert_eq!(status, 403, "staff do not read the access log");
    let (status, summary) = hub
        .call(
            Some(&family),
            Method::GET,
            &format!("/residents/{rid}/access-log"),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    let lines: Vec<&str> = summary["summary"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("staff tanaka viewed the map once on ")),
        "{lines:?}"
    );
    assert!(
        summary.get("entries").is_none(),
        "the family sees no raw entries"
    );
    let other = hub.resident(json!({"name": "Not Theirs"})).await?;
    let (status, _) = hub
        .call(
            Some(&family),
            Method::GET,
            &format!("/residents/{other}/access-log"),
            None,
        )
        .await?;
    assert_eq!(status, 404);
    // A dashboard's snapshot shows the resident's status and alerts: logged too.
    let mut ws = crate::ws::WsClient::connect(&hub, &family, None).await?;
    let snapshot = ws.next().await?;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    logged(&hub, rid, "the family's snapshot in the access log", |e| {
        e["actor"] == "ito.family" && e["what"] == "snapshot" && e["role"] == "family"
    })
    .await?;
    assert!(hub.metric("mimamori_access_log_rows_total").await? >= 2.0);
    assert_eq!(hub.metric("mimamori_access_log_dropped_total").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn reads_are_logged_sqlite() -> Result<()> {
    reads_are_logged(Backend::Sqlite).await
}

#[tokio::test]
async fn reads_are_logged_postgres() -> Result<()> {
    if skip_postgres("reads_are_logged_postgres") {
        return Ok(());
    }
    reads_are_logged(Backend::Postgres).await
}

/// Every file of an export, by name, read with Python's zipfile (which checks CRCs).
async fn unzip(bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("export.zip");
    std::fs::write(&path, bytes)?;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg("import json,sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nprint(json.dumps({n: z.read(n).decode() for n in z.namelist()}))")
        .arg(&path)
        .output()
        .await?;
    if !out.status.success() {
        bail!("not a valid zip: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn lines(files: &BTreeMap<String, String>, name: &str) -> Result<Vec<Value>> {
    files
        .get(name)
        .ok_or_else(|| anyhow!("no {name} in the export"))?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// Two residents with devices, readings, alerts and contacts: the export of one holds
/// every row of theirs and nothing of the other's; erasing them leaves the other whole.
async fn export_and_erasure(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &[]).await?;
    let mut devices = Vec::new();
    let mut ids = Vec::new();
    for name in ["Kato Export", "Mori Other"] {
        let rid = hub.resident(json!({"name": name})).await?;
        let button = hub.device(rid, "button").await?;
        let motion = hub.device(rid, "motion").await?;
        let mut b = connect_device(&hub, &button).await?;
        b.publish_acked(&topic(&button, "sos"), "{}").await?;
        let mut m = connect_device(&hub, &motion).await?;
        for room in ["kitchen", "hall"] {
            m.publish_acked(
                &topic(&motion, "motion"),
                json!({"motion": true, "room": room}).to_string(),
            )
            .await?;
        }
        m.publish_acked(&topic(&motion, "motion"), "not json")
            .await?;
        hub.expect(
            Method::POST,
            &format!("/residents/{rid}/contacts"),
            Some(
                json!({"name": format!("{name} Jr"), "relation": "family", "channel": "email",
                        "address": format!("{}@family.test", rid), "language": "ja"}),
            ),
            201,
        )
        .await?;
        hub.wait_alert(rid, "sos", "open", WITHIN).await?;
        devices.push((button.id, motion.id));
        ids.push(rid);
    }
    let (a, b) = (ids[0], ids[1]);
    let stored = hub.readings(a).await?.len();
    // The read is written in the background: the export must find it.
    logged(&hub, a, "the readings read in the access log", |e| {
        e["what"] == "readings"
    })
    .await?;

    let res = hub
        .http
        .get(hub.url(&format!("/residents/{a}/export")))
        .bearer_auth(&hub.admin_token)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/zip")
    );
    let files = unzip(&res.bytes().await?).await?;
    let manifest: Value = serde_json::from_str(
        files
            .get("manifest.json")
            .ok_or_else(|| anyhow!("no manifest"))?,
    )?;
    assert_eq!(manifest["resident_id"], a);
    for f in manifest["files"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or_default();
        assert_eq!(
            lines(&files, name)?.len() as u64,
            f["rows"].as_u64().unwrap_or(u64::MAX),
            "{name}: the manifest counts its rows"
        );
    }
    assert_eq!(lines(&files, "readings.jsonl")?.len(), stored);
    assert_eq!(lines(&files, "resident.jsonl")?[0]["name"], "Kato Export");
    assert_eq!(lines(&files, "devices.jsonl")?.len(), 2);
    assert_eq!(lines(&files, "alerts.jsonl")?.len(), 1);
    assert!(!lines(&files, "alert_history.jsonl")?.is_empty());
    assert_eq!(lines(&files, "contacts.jsonl")?.len(), 1);
    assert_eq!(lines(&files, "consents.jsonl")?.len(), 1);
    assert_eq!(lines(&files, "dead_letters.jsonl")?.len(), 1);
    assert!(lines(&files, "access_log.jsonl")?
        .iter()
        .any(|r| r["what"] == "readings"));
    let everything: String = files.values().cloned().collect();
    let (b_button, b_motion) = &devices[1];
    for theirs in [
        "Mori Other",
        b_button.as_str(),
        b_motion.as_str(),
        &format!("{b}@family.test"),
    ] {
        assert!(!everything.contains(theirs), "the export leaks {theirs:?}");
    }
    assert!(everything.contains(devices[0].0.as_str()));

    // The export is audited and logged as a read.
    logged(&hub, a, "the export in the access log", |e| {
        e["what"] == "export"
    })
    .await?;
    let staff = hub.user("staff.export", "staff", &[]).await?;
    let (status, _) = hub
        .call(
            Some(&staff),
            Method::GET,
            &format!("/residents/{a}/export"),
            None,
        )
        .await?;
    assert_eq!(status, 403);

    // Erasure.
    hub.expect(Method::DELETE, &format!("/residents/{a}"), None, 204)
        .await?;
    let (status, _) = hub
        .admin(Method::GET, &format!("/residents/{a}/consent"), None)
        .await?;
    assert_eq!(status, 404);
    let rejected = hub.expect(Method::GET, "/rejected", None, 200).await?;
    let letters: Vec<&str> = rejected
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["device_id"].as_str())
        .collect();
    assert!(
        !letters.contains(&devices[0].1.as_str()),
        "the erased resident's dead letters go"
    );
    assert!(letters.contains(&b_motion.as_str()), "the other's stay");
    assert_eq!(hub.readings(b).await?.len(), stored);
    assert_eq!(hub.alerts(b).await?.len(), 1);
    let audit = hub
        .expect(Method::GET, "/audit?limit=200", None, 200)
        .await?;
    assert!(
        audit
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["action"] == "resident.export" && e["target"] == format!("resident/{a}")),
        "the audit trail is what the law keeps"
    );
    Ok(())
}

#[tokio::test]
async fn export_and_erasure_sqlite() -> Result<()> {
    export_and_erasure(Backend::Sqlite).await
}

#[tokio::test]
async fn export_and_erasure_postgres() -> Result<()> {
    if skip_postgres("export_and_erasure_postgres") {
        return Ok(());
    }
    export_and_erasure(Backend::Postgres).await
}

// -- retention, on the store with a fake clock --

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .unwrap_or_default()
}

fn days_ago(d: i64) -> chrono::DateTime<Utc> {
    now() - chrono::Duration::days(d)
}

fn reading(
    device: &str,
    kind: DeviceKind,
    rid: i64,
    at: chrono::DateTime<Utc>,
    reading: Reading,
) -> DeviceEvent {
    DeviceEvent {
        device_id: device.into(),
        device_kind: kind,
        resident_id: rid,
        ts: at,
        received_at: at,
        reading,
        battery: None,
    }
}

fn resolved_alert(id: i64, rid: i64, at: chrono::DateTime<Utc>) -> AlertRecord {
    AlertRecord {
        alert: Alert {
            id,
            resident_id: rid,
            device_id: Some("btn".into()),
            kind: AlertKind::Sos,
            severity: Severity::Critical,
            state: AlertState::Resolved,
            escalated: false,
            opened_at: at,
            acknowledged_at: Some(at),
            acknowledged_by: Some("sato".into()),
            resolved_at: Some(at),
            resolved_by: Some("sato".into()),
            resolution: Some("fine".into()),
            details: json!({}),
            updated_at: at,
            assigned_to: None,
            snoozed_until: None,
            tier: 1,
        },
        subject: format!("btn-{id}"),
        ladder: None,
    }
}

async fn count(s: &dyn Store, rid: i64, kind: &str) -> Result<usize> {
    Ok(s.readings_page(rid, 0, 100_000)
        .await?
        .iter()
        .filter(|r| r.kind == kind)
        .count())
}

/// Rows on both sides of each class's limit as of `now`, of devices `gps` and `pir`:
/// 1,200 fixes 31 days old (three batches) and 5 at 29 days; motion 181 days old in two
/// hours (3 + 2) and 4 at 179 days; dead letters, audit and access-log rows on either
/// side of theirs. `effects` adds what a caller wants stored with them.
async fn rows_around_the_limits(
    s: &dyn Store,
    rid: i64,
    (gps, pir): (&str, &str),
    now: chrono::DateTime<Utc>,
    mut effects: Effects,
) -> Result<()> {
    let days_ago = |d: i64| now - chrono::Duration::days(d);
    let fix = Reading::Position {
        lat: 35.7,
        lon: 139.6,
        accuracy_m: Some(10.0),
    };
    let moved = Reading::Motion {
        motion: true,
        room: Some("hall".into()),
    };
    let mut readings = Vec::new();
    for (age, n) in [(31, 1200), (29, 5)] {
        for i in 0..n {
            let at = days_ago(age) + chrono::Duration::seconds(i);
            readings.push(reading(gps, DeviceKind::Gps, rid, at, fix.clone()));
        }
    }
    // On the hour, so the five readings fall in two hours whatever the time of the run.
    let old_hour =
        chrono::DurationRound::duration_trunc(days_ago(181), chrono::Duration::hours(1))?;
    let minutes = [0, 10, 20, 60, 70]
        .map(|m| old_hour + chrono::Duration::minutes(m))
        .into_iter()
        .chain((0..4).map(|m| days_ago(179) + chrono::Duration::minutes(m)));
    for at in minutes {
        readings.push(reading(pir, DeviceKind::Motion, rid, at, moved.clone()));
    }
    for age in [1830, 1820] {
        effects.audit.push(AuditEntry {
            at: days_ago(age),
            actor: "admin".into(),
            action: "resident.update".into(),
            target: format!("resident/{rid}"),
            details: None,
        });
    }
    let rejected = [31, 29]
        .iter()
        .map(|age| RejectedRow {
            received_at: days_ago(*age),
            device_id: Some(pir.into()),
            topic: format!("watch/v1/{pir}/motion"),
            reason: RejectReason::NotJson,
            detail: "x".into(),
            payload: "x".into(),
        })
        .collect();
    s.commit_batch(&Batch {
        readings,
        rejected,
        effects,
        at: now,
        ..Batch::default()
    })
    .await?;
    let access: Vec<Access> = [1830, 1820]
        .iter()
        .map(|age| Access {
            at: days_ago(*age),
            resident_id: rid,
            actor: "tanaka".into(),
            role: "staff".into(),
            what: "track".into(),
            rows: 3,
        })
        .collect();
    s.append_access(&access).await?;
    Ok(())
}

/// What [`rows_around_the_limits`] leaves past its limits, by class, for one pass.
const PAST_THE_LIMITS: [(DataClass, u64); 6] = [
    (DataClass::Positions, 1200),
    (DataClass::Sensors, 5),
    (DataClass::DeadLetters, 1),
    (DataClass::Audit, 1),
    (DataClass::AccessLog, 1),
    (DataClass::Activity, 0),
];

/// Ages of rows, in days, around each class's limit: the purge removes exactly the ones
/// past it, in batches, keeps the activity per hour, and never a live alert.
async fn check_retention(s: &dyn Store) -> Result<()> {
    let rid = s
        .create_resident(&NewResidentRow {
            name: "Old Data".into(),
            timezone: "Asia/Tokyo".into(),
            home: None,
            rules: RuleSettings::default(),
            created_at: days_ago(3000),
        })
        .await?
        .id;
    for (id, kind) in [
        ("gps", DeviceKind::Gps),
        ("pir", DeviceKind::Motion),
        ("btn", DeviceKind::Button),
    ] {
        s.create_device(
            &Device {
                id: id.into(),
                resident_id: rid,
                kind,
                name: id.into(),
                created_at: days_ago(3000),
                last_seen_at: None,
                battery: None,
                room: None,
                role: None,
            },
            "hash",
        )
        .await?;
    }
    let mut effects = Effects::default();
    for (id, age) in [(1, 1900), (2, 1700)] {
        let r = resolved_alert(id, rid, days_ago(age));
        effects.history.push(HistoryRow {
            alert_id: id,
            at: days_ago(age),
            action: "opened",
            actor: "hub".into(),
            note: None,
            details: None,
        });
        effects.alerts.insert(id, r);
    }
    // A live alert older than any limit stays.
    let mut live = resolved_alert(3, rid, days_ago(2000));
    live.alert.state = AlertState::Open;
    live.alert.resolved_at = None;
    effects.alerts.insert(3, live);
    rows_around_the_limits(s, rid, ("gps", "pir"), now(), effects).await?;
    let (from, to) = (days_ago(182), days_ago(178));
    let rhythm_before = s.activity_per_hour(rid, from, to).await?;
    assert_eq!(rhythm_before.iter().map(|(_, n)| n).sum::<i64>(), 9);

    let metrics = Metrics::new();
    let removed = purge_once(s, &Retention::default(), now(), &metrics).await?;
    let of = |c: DataClass| removed.iter().find(|(k, _)| *k == c).map(|(_, n)| *n);
    for (class, n) in PAST_THE_LIMITS {
        assert_eq!(of(class), Some(n), "{class:?}");
    }
    assert_eq!(of(DataClass::Alerts), Some(1));
    assert_eq!(count(s, rid, "gps").await?, 5);
    assert_eq!(count(s, rid, "motion").await?, 4);
    assert_eq!(
        s.activity_per_hour(rid, from, to).await?,
        rhythm_before,
        "the daily rhythm outlives the raw readings"
    );
    assert_eq!(s.activity_rolled_up(rid).await?.len(), 2);
    let alerts: Vec<i64> = s.alerts_of(rid).await?.iter().map(|a| a.id).collect();
    assert_eq!(alerts, [2, 3]);
    assert_eq!(s.dead_letters_of(rid).await?.len(), 1);
    assert_eq!(s.audit_of(rid).await?.len(), 1);
    assert_eq!(s.access_log(rid, 100).await?.len(), 1);

    // A second pass finds nothing; the roll-up goes once it is 730 days old.
    let again = purge_once(s, &Retention::default(), now(), &metrics).await?;
    assert!(again.iter().all(|(_, n)| *n == 0), "{again:?}");
    let later = now() + chrono::Duration::days(730 - 181 + 1);
    purge_once(s, &Retention::default(), later, &metrics).await?;
    let hours: Vec<_> = s
        .activity_rolled_up(rid)
        .await?
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert!(
        !hours.is_empty()
            && hours
                .iter()
                .all(|h| *h > later - chrono::Duration::days(730)),
        "{hours:?}"
    );
    Ok(())
}

async fn retention_on(backend: Backend) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (url, _pg) = match backend {
        Backend::Sqlite => (
            format!("sqlite:{}", dir.path().join("r.db").display()),
            None,
        ),
        Backend::Postgres => {
            let db = PgDatabase::create("mimamori_retention").await?;
            (db.url.clone(), Some(db))
        }
    };
    let s: Arc<dyn Store> = store::connect(&url).await?;
    check_retention(s.as_ref()).await
}

#[tokio::test]
async fn retention_purges_exactly_what_is_past_each_limit_sqlite() -> Result<()> {
    retention_on(Backend::Sqlite).await
}

#[tokio::test]
async fn retention_purges_exactly_what_is_past_each_limit_postgres() -> Result<()> {
    if skip_postgres("retention_purges_exactly_what_is_past_each_limit_postgres") {
        return Ok(());
    }
    retention_on(Backend::Postgres).await
}

/// Publishes `payload` on `topic` at QoS 1, one message after another, until `stop`;
/// each must be acknowledged. Returns how many were.
async fn publish_until(
    mut device: MqttClient,
    topic: String,
    payload: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Result<u64> {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        device.publish_acked(&topic, payload).await?;
        n += 1;
        acked.fetch_add(1, Ordering::Relaxed);
    }
    Ok(n)
}

async fn stored(
    s: &dyn Store,
    rid: i64,
    kind: &str,
    after: chrono::DateTime<Utc>,
) -> Result<usize> {
    Ok(s.readings_page(rid, 0, 100_000)
        .await?
        .iter()
        .filter(|r| r.kind == kind && r.ts > after)
        .count())
}

/// Asks `hub` for a retention pass and waits up to `within` until `GET /retention` shows
/// it done: (the answer to the request, the status then).
pub(crate) async fn retention_pass(hub: &TestHub, within: Duration) -> Result<(Value, Value)> {
    let asked = hub
        .expect(Method::POST, "/retention/run", None, 202)
        .await?;
    let pass = asked["pass"]
        .as_u64()
        .ok_or_else(|| anyhow!("no pass in {asked}"))?;
    let status = eventually("the retention pass done", within, || async {
        let v = hub
            .expect(Method::GET, "/retention", None, 200)
            .await
            .ok()?;
        (v["last"]["pass"].as_u64()? >= pass).then_some(v)
    })
    .await?;
    Ok((asked, status))
}

/// Retention on a hub that is taking readings: a pass asked for while devices publish
/// over real MQTT at QoS 1 removes exactly the rows past each class's limit (aged
/// against the hub's clock, a day's margin either side), and every message published
/// meanwhile is acknowledged and stored. How fast ingest stays is the benchmark's
/// `privacy` stage (docs/performance.md).
async fn retention_while_ingesting(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &["--retention-interval-s", "0"]).await?;
    let rid = hub.resident(json!({"name": "Busy Home"})).await?;
    let (gps, pir) = (
        hub.device(rid, "gps").await?,
        hub.device(rid, "motion").await?,
    );
    // Old rows go straight into the hub's database: nothing the API takes is backdated.
    let s = store::connect(&hub.db_url).await?;
    let started = Utc::now();
    rows_around_the_limits(
        s.as_ref(),
        rid,
        (&gps.id, &pir.id),
        started,
        Effects::default(),
    )
    .await?;

    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let publishers = [
        (
            &gps,
            "gps",
            r#"{"lat":35.7074,"lon":139.6638,"accuracy_m":12}"#,
        ),
        (&pir, "motion", r#"{"motion":true,"room":"hall"}"#),
    ];
    let mut tasks = Vec::new();
    for (device, kind, payload) in publishers {
        let client = connect_device(&hub, device).await?;
        tasks.push(tokio::spawn(publish_until(
            client,
            topic(device, kind),
            payload,
            stop.clone(),
            acked.clone(),
        )));
    }
    eventually("ingest under way", WITHIN, || async {
        (acked.load(Ordering::Relaxed) >= 20).then_some(())
    })
    .await?;
    let (_, status) = retention_pass(&hub, WITHIN).await?;
    // The publishers never paused: every message of theirs during the pass was acknowledged.
    let after_pass = acked.load(Ordering::Relaxed);
    eventually("ingest going on after the pass", WITHIN, || async {
        (acked.load(Ordering::Relaxed) >= after_pass + 20).then_some(())
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for t in tasks {
        sent.push(t.await??);
    }

    let last = &status["last"];
    assert_eq!(last["error"], Value::Null, "{status}");
    for (class, n) in PAST_THE_LIMITS {
        assert_eq!(
            last["removed"][class.as_str()],
            json!(n),
            "{class:?}: {status}"
        );
    }
    assert_eq!(last["removed"]["alerts"], json!(0), "{status}");
    // Left: the rows within their limits, and every message acknowledged.
    let ever = started - chrono::Duration::days(3000);
    let within = |days| started - chrono::Duration::days(days);
    for (kind, limit, young, published) in [("gps", 30, 5, sent[0]), ("motion", 180, 4, sent[1])] {
        let all = stored(s.as_ref(), rid, kind, ever).await?;
        assert_eq!(
            all,
            young + published as usize,
            "{kind}: every message stored"
        );
        assert_eq!(
            stored(s.as_ref(), rid, kind, within(limit)).await?,
            all,
            "{kind}: nothing older left"
        );
    }
    assert_eq!(
        s.activity_rolled_up(rid).await?.len(),
        2,
        "the rhythm outlives the readings"
    );
    assert_eq!(s.dead_letters_of(rid).await?.len(), 1);
    assert_eq!(s.access_log(rid, 100).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn retention_during_ingest_removes_exactly_the_old_rows_sqlite() -> Result<()> {
    retention_while_ingesting(Backend::Sqlite).await
}

#[tokio::test]
async fn retention_during_ingest_removes_exactly_the_old_rows_postgres() -> Result<()> {
    if skip_postgres("retention_during_ingest_removes_exactly_the_old_rows_postgres") {
        return Ok(());
    }
    retention_while_ingesting(Backend::Postgres).await
}

// -- secrets at rest --

const OLD_KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const NEW_KEY: &str = "k2:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

/// The contacts' webhook secrets as the database holds them.
async fn stored_secrets(hub: &TestHub) -> Result<Vec<String>> {
    let sql = "SELECT secret FROM contacts WHERE secret IS NOT NULL ORDER BY id";
    match hub.db_url.strip_prefix("sqlite:") {
        Some(path) => {
            let out = tokio::process::Command::new("python3")
                .arg("-c")
                .arg(format!("import sqlite3,sys\nfor (s,) in sqlite3.connect(sys.argv[1]).execute({sql:?}): print(s)"))
                .arg(path)
                .output()
                .await?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect())
        }
        None => pg_rows(&hub.db_url, sql).await,
    }
}

/// SOS from a new button; the webhook request the receiver got for it.
async fn signed_sos(
    hub: &TestHub,
    rx: &crate::notify::Receiver,
    rid: i64,
    n: usize,
) -> Result<crate::notify::Seen> {
    crate::notify::press_sos(hub, rid).await?;
    eventually("the webhook", WITHIN, || async {
        rx.seen("/kin").get(n).cloned()
    })
    .await
}

fn signed_with(secret: &str, req: &crate::notify::Seen) -> Result<bool> {
    let expected = crate::notify::hmac_hex(secret, req.header("X-Mimamori-Timestamp"), &req.body)?;
    Ok(req.header("X-Mimamori-Signature") == expected)
}

/// With a key ring, a webhook's signing secret is stored sealed and still signs; putting
/// a new key first re-seals it at the next start, and it signs the same.
async fn webhook_secrets_are_sealed_at_rest(backend: Backend) -> Result<()> {
    let rx = crate::notify::Receiver::start().await?;
    let mut hub = TestHub::start_with(backend, &["--secrets-key", OLD_KEY]).await?;
    let rid = hub.resident(json!({"name": "Sealed Secret"})).await?;
    let hook = crate::notify::add_contact(
        &hub,
        rid,
        json!({"name": "Kin", "relation": "family", "channel": "webhook", "address": rx.url("/kin"), "language": "en", "kinds": ["sos"]}),
    )
    .await?;
    let secret = hook["secret"]
        .as_str()
        .ok_or_else(|| anyhow!("no secret in {hook}"))?
        .to_string();
    let stored = stored_secrets(&hub).await?;
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].starts_with("sealed:v1:k1:") && !stored[0].contains(&secret),
        "{stored:?}"
    );
    assert!(signed_with(&secret, &signed_sos(&hub, &rx, rid, 0).await?)?);

    hub.kill().await?;
    let ring = format!("{NEW_KEY};{OLD_KEY}");
    let hub = TestHub::start_sharing(&hub.db_url, &["--secrets-key", &ring]).await?;
    let stored = stored_secrets(&hub).await?;
    assert!(
        stored[0].starts_with("sealed:v1:k2:"),
        "re-sealed under the new key: {stored:?}"
    );
    assert!(signed_with(&secret, &signed_sos(&hub, &rx, rid, 1).await?)?);
    Ok(())
}

#[tokio::test]
async fn webhook_secrets_are_sealed_at_rest_sqlite() -> Result<()> {
    webhook_secrets_are_sealed_at_rest(Backend::Sqlite).await
}

#[tokio::test]
async fn webhook_secrets_are_sealed_at_rest_postgres() -> Result<()> {
    if skip_postgres("webhook_secrets_are_sealed_at_rest_postgres") {
        return Ok(());
    }
    webhook_secrets_are_sealed_at_rest(Backend::Postgres).await
}
