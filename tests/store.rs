//! The store's behaviour, written once and run against both backends: a fresh SQLite
//! file and a fresh PostgreSQL database.

use std::sync::Arc;

use anyhow::Result;
use chrono::{Duration, TimeZone, Utc};
use hub::alerts::{AlertRecord, Effects, HistoryRow};
use hub::store::{self, AuditEntry, Batch, NewResidentRow, RejectedRow, Store, StoreError};
use mimamori_protocol::api::{Device, Role};
use mimamori_protocol::native::RejectReason;
use mimamori_protocol::zone::{Circle, ZoneShape};
use mimamori_protocol::{
    Alert, AlertKind, AlertState, DeviceEvent, DeviceKind, Reading, RuleSettings, Severity,
};
use serde_json::json;

use crate::helpers::{Backend, PgDatabase};

/// A store on a fresh database, which lives as long as this value.
struct Fresh {
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

async fn fresh(backend: Backend) -> Result<Fresh> {
    let dir = tempfile::tempdir()?;
    let (url, pg) = match backend {
        Backend::Sqlite => (
            format!("sqlite:{}", dir.path().join("s.db").display()),
            None,
        ),
        Backend::Postgres => {
            let db = PgDatabase::create("mimamori_store").await?;
            (db.url.clone(), Some(db))
        }
    };
    Ok(Fresh {
        store: store::connect(&url).await?,
        _dir: dir,
        _pg: pg,
    })
}

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 1, 0, 0)
        .single()
        .unwrap_or_default()
}

async fn resident(s: &dyn Store, name: &str) -> Result<i64> {
    let row = NewResidentRow {
        name: name.into(),
        timezone: "Asia/Tokyo".into(),
        home: None,
        rules: RuleSettings::default(),
        created_at: t0(),
    };
    Ok(s.create_resident(&row).await?.id)
}

async fn device(s: &dyn Store, id: &str, resident_id: i64, kind: DeviceKind) -> Result<()> {
    let d = Device {
        id: id.into(),
        resident_id,
        kind,
        name: id.into(),
        created_at: t0(),
        last_seen_at: None,
        battery: None,
        room: None,
        role: None,
    };
    s.create_device(&d, "hash").await?;
    Ok(())
}

fn event(
    device: &str,
    resident_id: i64,
    minutes: i64,
    reading: Reading,
    battery: Option<u8>,
) -> DeviceEvent {
    let at = t0() + Duration::minutes(minutes);
    DeviceEvent {
        device_id: device.into(),
        device_kind: DeviceKind::Motion,
        resident_id,
        ts: at,
        received_at: at,
        reading,
        battery,
    }
}

/// A live SOS alert as the alert core would hand it to the store.
fn sos_record(id: i64, resident_id: i64, minutes: i64) -> AlertRecord {
    let at = t0() + Duration::minutes(minutes);
    AlertRecord {
        alert: Alert {
            id,
            resident_id,
            device_id: Some("btn".into()),
            kind: AlertKind::Sos,
            severity: Severity::Critical,
            state: AlertState::Open,
            escalated: false,
            opened_at: at,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            resolution: None,
            details: json!({"presses": 1}),
            updated_at: at,
            assigned_to: None,
            snoozed_until: None,
            tier: 1,
        },
        subject: "btn".into(),
        ladder: Some("{\"steps_taken\":1}".into()),
    }
}

fn effects_of(records: Vec<AlertRecord>) -> Effects {
    let mut e = Effects::default();
    for r in records {
        e.history.push(HistoryRow {
            alert_id: r.alert.id,
            at: r.alert.updated_at,
            action: "opened",
            actor: "hub".into(),
            note: None,
            details: None,
        });
        e.alerts.insert(r.alert.id, r);
    }
    e
}

async fn check_users_and_sessions(s: &dyn Store) -> Result<()> {
    let rid = resident(s, "A").await?;
    let u = s
        .create_user("carer", "h", Role::Family, &[rid], t0())
        .await?;
    assert_eq!(u.resident_ids, [rid]);
    assert!(matches!(
        s.create_user("carer", "h", Role::Staff, &[], t0()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.create_user("other", "h", Role::Family, &[rid + 99], t0())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        s.user_by_name("other").await?.is_none(),
        "a failed creation leaves nothing behind"
    );
    s.create_session("tok", u.id, t0() + Duration::hours(12))
        .await?;
    assert_eq!(
        s.session_user("tok", t0()).await?.map(|u| u.username),
        Some("carer".into())
    );
    assert!(
        s.session_user("tok", t0() + Duration::hours(13))
            .await?
            .is_none(),
        "expired"
    );
    assert_eq!(s.purge_sessions(t0()).await?, 0, "a live session stays");
    assert_eq!(
        s.purge_sessions(t0() + Duration::hours(13)).await?,
        1,
        "an expired session is purged"
    );
    s.delete_session("tok").await?;
    assert!(s.session_user("tok", t0()).await?.is_none());
    s.create_session("tok2", u.id, t0() + Duration::hours(12))
        .await?;
    assert_eq!(
        s.set_password(u.id, "h2").await?,
        1,
        "its one session ended"
    );
    assert!(s.session_user("tok2", t0()).await?.is_none());
    assert_eq!(
        s.user_by_name("carer").await?.map(|r| r.password_hash),
        Some("h2".into())
    );
    assert!(matches!(
        s.set_password(u.id + 99, "h").await,
        Err(StoreError::NotFound)
    ));
    Ok(())
}

async fn check_batches_store_everything_atomically(s: &dyn Store) -> Result<()> {
    let rid = resident(s, "B").await?;
    device(s, "m1", rid, DeviceKind::Motion).await?;
    let batch = Batch {
        readings: vec![
            event(
                "m1",
                rid,
                0,
                Reading::Motion {
                    motion: true,
                    room: Some("kitchen".into()),
                },
                Some(80),
            ),
            event(
                "m1",
                rid,
                1,
                Reading::Position {
                    lat: 35.7,
                    lon: 139.6,
                    accuracy_m: Some(9.0),
                },
                Some(79),
            ),
            event("m1", rid + 1000, 1, Reading::Heartbeat, None),
        ],
        rejected: vec![RejectedRow {
            received_at: t0(),
            device_id: Some("m1".into()),
            topic: "watch/v1/m1/x".into(),
            reason: RejectReason::UnknownKind,
            detail: "x".into(),
            payload: "{}".into(),
        }],
        rule_states: vec![(rid, "{\"v\":1}".into()), (rid + 1000, "{}".into())],
        effects: effects_of(vec![sos_record(7, rid, 1), sos_record(8, rid + 1000, 1)]),
        at: t0(),
        fence: None,
    };
    s.commit_batch(&batch).await?;
    let live = s.live_alerts().await?;
    assert_eq!(live.len(), 1, "the deleted resident's alert is dropped");
    assert_eq!(
        (live[0].alert.id, live[0].alert.kind, live[0].alert.state),
        (7, AlertKind::Sos, AlertState::Open)
    );
    assert_eq!(live[0].ladder.as_deref(), Some("{\"steps_taken\":1}"));
    assert_eq!(s.next_alert_id().await?, 8);
    assert_eq!(
        s.count_readings(rid).await?,
        2,
        "readings of a deleted resident are dropped, not fatal"
    );
    let recent = s.recent_readings(rid, 10).await?;
    assert_eq!(recent[0].lat, Some(35.7));
    assert_eq!(
        recent[1].data,
        Some(json!({"motion": true, "room": "kitchen"}))
    );
    assert_eq!(s.rule_state(rid).await?, Some("{\"v\":1}".into()));
    assert_eq!(s.list_rejected(10).await?[0].reason, "unknown_kind");
    let dev = s.device("m1").await?;
    assert_eq!(
        (dev.battery, dev.last_seen_at),
        (Some(79), Some(t0() + Duration::minutes(1)))
    );
    Ok(())
}

async fn check_alert_rows_are_written_over_and_one_live_per_key(s: &dyn Store) -> Result<()> {
    let rid = resident(s, "C").await?;
    let write = |e: Effects| Batch {
        effects: e,
        at: t0(),
        ..Batch::default()
    };
    s.commit_batch(&write(effects_of(vec![sos_record(1, rid, 0)])))
        .await?;
    let mut acked = sos_record(1, rid, 0);
    acked.alert.state = AlertState::Acknowledged;
    acked.alert.acknowledged_at = Some(t0() + Duration::seconds(42));
    acked.alert.acknowledged_by = Some("nurse".into());
    acked.alert.assigned_to = Some("nurse".into());
    let mut e = effects_of(vec![acked]);
    e.audit.push(AuditEntry {
        at: t0(),
        actor: "nurse".into(),
        action: "alert.acknowledged".into(),
        target: "alert/1".into(),
        details: None,
    });
    s.commit_batch(&write(e)).await?;
    let stored = s.alert(1).await?;
    assert_eq!(
        (stored.state, stored.assigned_to.as_deref(), stored.tier),
        (AlertState::Acknowledged, Some("nurse"), 1),
        "a later version of an alert is written over the earlier one"
    );
    assert_eq!(s.list_audit(10).await?[0].action, "alert.acknowledged");
    let readings_before = s.count_readings(rid).await?;
    let refused = Batch {
        readings: vec![event("btn", rid, 1, Reading::Sos, None)],
        rule_states: vec![(rid, "{\"refused\":true}".into())],
        ..write(effects_of(vec![sos_record(2, rid, 1)]))
    };
    assert!(
        s.commit_batch(&refused).await.is_err(),
        "the store refuses a second live alert for one key"
    );
    assert_eq!(
        (s.count_readings(rid).await?, s.rule_state(rid).await?),
        (readings_before, None),
        "nothing of a refused batch is kept"
    );
    let mut resolved = sos_record(1, rid, 0);
    resolved.alert.state = AlertState::Resolved;
    resolved.ladder = None;
    s.commit_batch(&write(effects_of(vec![resolved, sos_record(2, rid, 5)])))
        .await?;
    let live = s.live_alerts().await?;
    assert_eq!(live.iter().map(|l| l.alert.id).collect::<Vec<_>>(), [2]);
    let history = s.alert_history(1).await?;
    let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["opened", "opened", "opened"]);
    let opened = s
        .alerts_opened(
            t0() + Duration::minutes(1),
            t0() + Duration::minutes(10),
            None,
        )
        .await?;
    assert_eq!(opened.iter().map(|a| a.id).collect::<Vec<_>>(), [2]);
    assert!(s
        .alerts_opened(t0(), t0() + Duration::minutes(10), Some(&[rid + 1]))
        .await?
        .is_empty());
    Ok(())
}

async fn check_residents_zones_devices(s: &dyn Store) -> Result<()> {
    let rid = resident(s, "E").await?;
    let other = resident(s, "F").await?;
    let shape = ZoneShape::Circle(Circle {
        lat: 35.7,
        lon: 139.6,
        radius_m: 200.0,
    });
    let zone = s.create_zone(rid, "home", &shape, t0()).await?;
    device(s, "g1", rid, DeviceKind::Gps).await?;
    device(s, "g2", other, DeviceKind::Gps).await?;
    let setup = s.resident_setup(rid).await?;
    assert_eq!((setup.zones.len(), setup.devices.len()), (1, 1));
    assert_eq!(s.zone(zone.id).await?.shape, shape);
    assert_eq!(s.list_residents(Some(&[other])).await?.len(), 1);
    assert!(
        s.list_residents(Some(&[])).await?.is_empty(),
        "an empty scope sees nothing"
    );
    assert_eq!(s.list_devices(Some(&[rid])).await?.len(), 1);
    assert!(s.device_auth("g1").await?.is_some());
    s.delete_resident(rid).await?;
    assert!(
        s.device_auth("g1").await?.is_none(),
        "a deleted resident's devices are revoked"
    );
    assert!(matches!(s.zone(zone.id).await, Err(StoreError::NotFound)));
    assert_eq!(s.all_resident_setups().await?.len(), 1);
    Ok(())
}

macro_rules! both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $check() -> anyhow::Result<()> {
                let f = super::fresh(super::Backend::Sqlite).await?;
                super::$check(f.store.as_ref()).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $check() -> anyhow::Result<()> {
                if crate::helpers::skip_postgres(concat!("postgres::", stringify!($check))) {
                    return Ok(());
                }
                let f = super::fresh(super::Backend::Postgres).await?;
                super::$check(f.store.as_ref()).await
            })*
        }
    };
}

both_backends!(
    check_users_and_sessions,
    check_batches_store_everything_atomically,
    check_alert_rows_are_written_over_and_one_live_per_key,
    check_residents_zones_devices,
);
