//! The store's behaviour, written once and run against both backends: a fresh SQLite
//! file and a fresh PostgreSQL database.

use std::sync::Arc;

use anyhow::{bail, Result};
use chrono::{Duration, TimeZone, Utc};
use hub::store::{
    self, AlertChange, AlertFilter, Batch, NewResidentRow, RejectedRow, StaffAction, Store,
    StoreError,
};
use mimamori_protocol::api::{Device, Role};
use mimamori_protocol::native::RejectReason;
use mimamori_protocol::zone::{Circle, ZoneShape};
use mimamori_protocol::{
    AlertKind, AlertState, DeviceEvent, DeviceKind, Reading, RuleSettings, Severity,
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

fn open_sos(resident_id: i64, minutes: i64) -> AlertChange {
    AlertChange::Open {
        resident_id,
        kind: AlertKind::Sos,
        subject: "btn".into(),
        device_id: Some("btn".into()),
        severity: Severity::Critical,
        at: t0() + Duration::minutes(minutes),
        details: json!({"presses": 1}),
    }
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
    s.delete_session("tok").await?;
    assert!(s.session_user("tok", t0()).await?.is_none());
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
        alert_changes: vec![open_sos(rid, 1)],
        at: t0(),
    };
    let alerts = s.commit_batch(&batch).await?;
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].kind, alerts[0].state),
        (AlertKind::Sos, AlertState::Open)
    );
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

async fn check_one_live_alert_per_key(s: &dyn Store) -> Result<()> {
    let rid = resident(s, "C").await?;
    let first = s
        .commit_batch(&Batch {
            alert_changes: vec![open_sos(rid, 0)],
            at: t0(),
            ..Batch::default()
        })
        .await?;
    let again = s
        .commit_batch(&Batch {
            alert_changes: vec![open_sos(rid, 2)],
            at: t0(),
            ..Batch::default()
        })
        .await?;
    assert_eq!(
        first[0].id, again[0].id,
        "a second open of a live key updates it"
    );
    let update = AlertChange::Update {
        resident_id: rid,
        kind: AlertKind::Sos,
        subject: "btn".into(),
        at: t0(),
        details: json!({"presses": 3}),
    };
    let updated = s
        .commit_batch(&Batch {
            alert_changes: vec![update],
            at: t0(),
            ..Batch::default()
        })
        .await?;
    assert_eq!(updated[0].details["presses"], 3);
    let resolve = AlertChange::Resolve {
        resident_id: rid,
        kind: AlertKind::Sos,
        subject: "btn".into(),
        at: t0(),
        reason: "test".into(),
    };
    s.commit_batch(&Batch {
        alert_changes: vec![resolve.clone()],
        at: t0(),
        ..Batch::default()
    })
    .await?;
    assert!(
        s.commit_batch(&Batch {
            alert_changes: vec![resolve],
            at: t0(),
            ..Batch::default()
        })
        .await?
        .is_empty(),
        "nothing live to resolve"
    );
    let next = s
        .commit_batch(&Batch {
            alert_changes: vec![open_sos(rid, 5)],
            at: t0(),
            ..Batch::default()
        })
        .await?;
    assert_ne!(
        next[0].id, first[0].id,
        "after resolution a new episode is a new alert"
    );
    let all = s
        .list_alerts(&AlertFilter {
            resident_id: Some(rid),
            limit: 10,
            ..AlertFilter::default()
        })
        .await?;
    assert_eq!(all.len(), 2);
    let history = s.alert_history(first[0].id).await?;
    let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["opened", "updated", "updated", "resolved"]);
    Ok(())
}

async fn check_staff_actions_and_their_refusals(s: &dyn Store) -> Result<()> {
    let rid = resident(s, "D").await?;
    let id = s
        .commit_batch(&Batch {
            alert_changes: vec![open_sos(rid, 0)],
            at: t0(),
            ..Batch::default()
        })
        .await?[0]
        .id;
    let acked = s
        .staff_action(
            id,
            StaffAction::Acknowledge,
            "nurse",
            Some("on my way"),
            t0(),
        )
        .await?;
    assert_eq!(
        (acked.state, acked.acknowledged_by.as_deref()),
        (AlertState::Acknowledged, Some("nurse"))
    );
    match s
        .staff_action(id, StaffAction::Acknowledge, "other", None, t0())
        .await
    {
        Err(StoreError::Conflict(m)) => assert!(m.contains("already acknowledged by nurse"), "{m}"),
        other => bail!("expected a conflict, got {other:?}"),
    }
    s.staff_action(id, StaffAction::Resolve, "nurse", Some("fine"), t0())
        .await?;
    assert!(matches!(
        s.staff_action(id, StaffAction::Resolve, "nurse", None, t0())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.staff_action(id + 1000, StaffAction::Resolve, "nurse", None, t0())
            .await,
        Err(StoreError::NotFound)
    ));
    let audit = s.list_audit(10).await?;
    assert_eq!(
        audit.iter().filter(|a| a.actor == "nurse").count(),
        2,
        "both actions audited"
    );
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
    check_one_live_alert_per_key,
    check_staff_actions_and_their_refusals,
    check_residents_zones_devices,
);
