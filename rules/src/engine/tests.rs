//! Scenario tests of every rule, on fake time.

use super::*;
use mimamori_protocol::zone::{Circle, GeoJsonPolygon, ZoneShape};
use proptest::prelude::*;

const R: i64 = 7;
const LAT: f64 = 35.7074;
const LON: f64 = 139.6638;
/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_195.0;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default()
}

fn tokyo() -> Tz {
    chrono_tz::Asia::Tokyo
}

fn dev(id: &str, kind: DeviceKind) -> DeviceInfo {
    DeviceInfo {
        id: id.into(),
        kind,
        room: None,
        role: None,
    }
}

fn circle(id: i64, name: &str, lat: f64, lon: f64, radius_m: f64) -> SafeZone {
    SafeZone::new(
        id,
        name.into(),
        &ZoneShape::Circle(Circle { lat, lon, radius_m }),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn home() -> SafeZone {
    circle(1, "home", LAT, LON, 200.0)
}

fn config(
    settings: RuleSettings,
    zones: Vec<SafeZone>,
    devices: Vec<DeviceInfo>,
) -> ResidentConfig {
    ResidentConfig {
        resident_id: R,
        timezone: tokyo(),
        settings,
        zones,
        devices,
        pauses: Vec::new(),
    }
}

/// Default settings except that device_offline waits 30 days, so it stays out of other rules' timings.
fn quiet_devices() -> RuleSettings {
    let mut s = RuleSettings::default();
    let month = 30 * 24 * 3600;
    s.offline = mimamori_protocol::settings::OfflineSettings {
        motion_s: month,
        door_s: month,
        button_s: month,
        gps_s: month,
        gateway_s: month,
        tag_s: month,
        receiver_s: month,
    };
    s
}

/// Default settings without the morning check: device_offline at its defaults.
fn no_morning() -> RuleSettings {
    let mut s = RuleSettings::default();
    s.inactivity.morning_deadline = None;
    s
}

/// Inactivity day 3 h / night 12 h, no morning check, quiet devices.
/// Inactivity and the room rules a care plan switches on with it (dwell is opt-in).
fn inactivity_only() -> RuleSettings {
    let mut s = quiet_devices();
    s.inactivity.morning_deadline = None;
    s.dwell.enabled = true;
    s
}

fn ev(device: &str, kind: DeviceKind, ts: DateTime<Utc>, reading: Reading) -> DeviceEvent {
    DeviceEvent {
        device_id: device.into(),
        device_kind: kind,
        resident_id: R,
        ts,
        received_at: ts,
        reading,
        battery: None,
    }
}

fn motion(ts: DateTime<Utc>, room: &str) -> DeviceEvent {
    ev(
        "m1",
        DeviceKind::Motion,
        ts,
        Reading::Motion {
            motion: true,
            room: Some(room.into()),
        },
    )
}

/// A fix `north_m` metres north of home's centre.
fn fix(ts: DateTime<Utc>, north_m: f64, accuracy_m: Option<f64>) -> DeviceEvent {
    let reading = Reading::Position {
        lat: LAT + north_m / M_PER_DEG,
        lon: LON,
        accuracy_m,
    };
    ev("g1", DeviceKind::Gps, ts, reading)
}

fn drain(e: &mut Engine) -> Vec<Decision> {
    std::iter::from_fn(|| e.poll_decision()).collect()
}

/// Short labels make expectations readable: "open inactivity", "resolve geofence_exit: back inside home".
fn label(d: &Decision) -> String {
    match d {
        Decision::Open { key, severity, .. } => {
            format!("open {} {}", key.kind.as_str(), severity.as_str())
        }
        Decision::Update { key, .. } => format!("update {}", key.kind.as_str()),
        Decision::Resolve { key, reason, .. } => format!("resolve {}: {reason}", key.kind.as_str()),
    }
}

fn labels(e: &mut Engine) -> Vec<String> {
    drain(e).iter().map(label).collect()
}

fn details(d: &Decision) -> serde_json::Value {
    match d {
        Decision::Open { details, .. } | Decision::Update { details, .. } => details.clone(),
        Decision::Resolve { .. } => serde_json::Value::Null,
    }
}

// ---------------------------------------------------------------- inactivity

#[test]
fn inactivity_fires_exactly_at_the_deadline_and_once() -> TestResult {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T09:00:00+09:00");
    e.configure(
        config(
            inactivity_only(),
            vec![],
            vec![dev("m1", DeviceKind::Motion)],
        ),
        t0,
    );
    e.handle_event(
        &motion(t("2026-05-11T10:00:00+09:00"), "kitchen"),
        t("2026-05-11T10:00:01+09:00"),
    );
    let deadline = t("2026-05-11T13:00:00+09:00");
    assert_eq!(e.poll_timeout(), Some(deadline));
    e.handle_timeout(deadline - Duration::seconds(1));
    assert!(drain(&mut e).is_empty(), "a second early must not fire");
    e.handle_timeout(deadline);
    let d = drain(&mut e);
    assert_eq!(d.len(), 1);
    let Decision::Open {
        key,
        severity,
        at,
        details,
        device_id,
    } = &d[0]
    else {
        panic!("{d:?}")
    };
    assert_eq!(
        (key.kind, key.subject.as_str(), *severity, *at, device_id),
        (AlertKind::Inactivity, "", Severity::High, deadline, &None)
    );
    assert_eq!(details["threshold_s"], 3 * 3600);
    assert_eq!(details["room"], "kitchen");
    assert_eq!(
        details["last_activity_at"],
        serde_json::to_value(t("2026-05-11T10:00:00+09:00"))?
    );
    // A persisting condition never opens twice; only the sensor's 30-day offline deadline is left.
    assert!(e.poll_timeout() > Some(deadline + Duration::days(29)));
    e.handle_timeout(deadline + Duration::hours(30));
    assert!(drain(&mut e).is_empty());
    assert_eq!(
        e.status(R).map(|s| s.open_conditions),
        Some(vec![AlertKind::Inactivity])
    );
    e.handle_event(
        &motion(t("2026-05-11T15:00:00+09:00"), "hall"),
        t("2026-05-11T15:00:00+09:00"),
    );
    assert_eq!(
        labels(&mut e),
        ["resolve inactivity: motion resumed (hall)"]
    );
    assert_eq!(e.poll_timeout(), Some(t("2026-05-11T18:00:00+09:00")));
    Ok(())
}

#[test]
fn never_seen_resident_counts_from_configuration_and_doors_count_as_activity() {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T08:00:00+09:00");
    e.configure(
        config(inactivity_only(), vec![], vec![dev("d1", DeviceKind::Door)]),
        t0,
    );
    assert_eq!(e.poll_timeout(), Some(t("2026-05-11T11:00:00+09:00")));
    e.handle_timeout(t("2026-05-11T11:00:00+09:00"));
    assert_eq!(labels(&mut e), ["open inactivity high"]);
    e.handle_event(
        &ev(
            "d1",
            DeviceKind::Door,
            t("2026-05-11T11:30:00+09:00"),
            Reading::Door { open: false },
        ),
        t("2026-05-11T11:30:00+09:00"),
    );
    assert_eq!(labels(&mut e), ["resolve inactivity: door closed"]);
    // motion:false and heartbeats are not activity.
    e.handle_event(
        &ev(
            "d1",
            DeviceKind::Door,
            t("2026-05-11T12:00:00+09:00"),
            Reading::Heartbeat,
        ),
        t("2026-05-11T12:00:00+09:00"),
    );
    assert_eq!(e.poll_timeout(), Some(t("2026-05-11T14:30:00+09:00")));
}

#[test]
fn inactivity_needs_a_motion_or_door_device_and_the_rule_enabled() {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T08:00:00+09:00");
    e.configure(
        config(
            RuleSettings::default(),
            vec![],
            vec![dev("b1", DeviceKind::Button)],
        ),
        t0,
    );
    assert_eq!(
        e.poll_timeout(),
        Some(t0 + Duration::hours(6)),
        "only the button's offline deadline"
    );
    let mut off = RuleSettings::default();
    off.inactivity.enabled = false;
    e.configure(config(off, vec![], vec![dev("m1", DeviceKind::Motion)]), t0);
    assert_eq!(
        e.poll_timeout(),
        Some(t0 + Duration::hours(1)),
        "only the sensor's offline deadline"
    );
}

#[test]
fn day_and_night_thresholds_count_the_silence_within_the_current_period() {
    // Day [06:00, 22:00) 3 h, night 12 h, Tokyo. (last activity, expected deadline, threshold)
    let cases = [
        ("2026-05-11T12:00:00+09:00", "2026-05-11T15:00:00+09:00", 3),
        ("2026-05-11T20:30:00+09:00", "2026-05-12T08:30:00+09:00", 12), // 1.5 h of day, then the 12 h backstop
        ("2026-05-11T21:00:00+09:00", "2026-05-12T09:00:00+09:00", 3), // night never reaches 12 h; day clock from 06:00
        ("2026-05-11T23:00:00+09:00", "2026-05-12T09:00:00+09:00", 3), // not at 06:00 although 7 h > 3 h
        ("2026-05-12T05:00:00+09:00", "2026-05-12T09:00:00+09:00", 3),
        ("2026-05-12T05:59:59+09:00", "2026-05-12T09:00:00+09:00", 3),
        ("2026-05-12T06:00:00+09:00", "2026-05-12T09:00:00+09:00", 3),
    ];
    for (last, want, th_h) in cases {
        let mut e = Engine::new();
        e.configure(
            config(
                inactivity_only(),
                vec![],
                vec![dev("m1", DeviceKind::Motion)],
            ),
            t(last),
        );
        e.handle_event(&motion(t(last), "bed"), t(last));
        assert_eq!(e.poll_timeout(), Some(t(want)), "last activity {last}");
        e.handle_timeout(t(want));
        let d = drain(&mut e);
        assert_eq!(
            details(&d[0])["threshold_s"],
            th_h * 3600,
            "last activity {last}"
        );
    }
}

#[test]
fn night_backstop_and_a_day_that_wraps_midnight() {
    // Night-shift habits: day [20:00, 08:00), night threshold 2 h shorter than the day's 6 h.
    let mut s = inactivity_only();
    s.inactivity.day_starts = "20:00".into();
    s.inactivity.night_starts = "08:00".into();
    s.inactivity.day_threshold_s = 6 * 3600;
    s.inactivity.night_threshold_s = 2 * 3600;
    let cases = [
        ("2026-05-11T23:00:00+09:00", "2026-05-12T05:00:00+09:00"),
        ("2026-05-12T07:00:00+09:00", "2026-05-12T10:00:00+09:00"), // night from 08:00, 2 h
        ("2026-05-12T09:00:00+09:00", "2026-05-12T11:00:00+09:00"),
    ];
    for (last, want) in cases {
        let mut e = Engine::new();
        e.configure(
            config(s.clone(), vec![], vec![dev("m1", DeviceKind::Motion)]),
            t(last),
        );
        e.handle_event(&motion(t(last), "desk"), t(last));
        assert_eq!(e.poll_timeout(), Some(t(want)), "last activity {last}");
    }
    // The backstop: day 3 h, night 5 h, the night period alone never reaches 5 h after a late activity.
    let mut s = inactivity_only();
    s.inactivity.night_threshold_s = 9 * 3600;
    s.inactivity.day_threshold_s = 10 * 3600;
    let mut e = Engine::new();
    let last = t("2026-05-11T14:00:00+09:00");
    e.configure(config(s, vec![], vec![dev("m1", DeviceKind::Motion)]), last);
    e.handle_event(&motion(last, "desk"), last);
    // Day 14:00–22:00 is 8 h < 10 h, night from 22:00 needs 9 h (07:00, day again), day from 06:00 needs 10 h:
    // the 10 h backstop at 00:00 comes first.
    assert_eq!(e.poll_timeout(), Some(t("2026-05-12T00:00:00+09:00")));
}

#[test]
fn inactivity_across_a_dst_change_uses_the_new_offset() {
    // London springs forward at 2026-03-29 01:00Z; 06:00 BST that day is 05:00Z.
    let mut e = Engine::new();
    let mut c = config(
        inactivity_only(),
        vec![],
        vec![dev("m1", DeviceKind::Motion)],
    );
    c.timezone = chrono_tz::Europe::London;
    let last = t("2026-03-29T00:30:00Z");
    e.configure(c, last);
    e.handle_event(&motion(last, "bed"), last);
    assert_eq!(e.poll_timeout(), Some(t("2026-03-29T08:00:00Z")));
}

#[test]
fn morning_check_opens_without_activity_since_day_start_and_resolves_on_activity() {
    let mut e = Engine::new();
    let mut s = quiet_devices();
    s.inactivity.night_threshold_s = 20 * 3600;
    s.inactivity.day_threshold_s = 20 * 3600;
    let t0 = t("2026-05-10T20:00:00+09:00");
    e.configure(config(s, vec![], vec![dev("m1", DeviceKind::Motion)]), t0);
    e.handle_event(
        &motion(t("2026-05-10T21:00:00+09:00"), "bed"),
        t("2026-05-10T21:00:00+09:00"),
    );
    let check = t("2026-05-11T10:00:00+09:00");
    assert_eq!(e.poll_timeout(), Some(check));
    e.handle_timeout(check);
    let d = drain(&mut e);
    assert_eq!(
        d.iter().map(label).collect::<Vec<_>>(),
        ["open no_morning_activity high"]
    );
    assert_eq!(
        details(&d[0])["since"],
        serde_json::to_value(t("2026-05-11T06:00:00+09:00")).unwrap_or_default()
    );
    assert_eq!(
        e.poll_timeout(),
        Some(t("2026-05-11T17:00:00+09:00")),
        "inactivity backstop 20 h after 21:00"
    );
    e.handle_event(
        &motion(t("2026-05-11T10:20:00+09:00"), "kitchen"),
        t("2026-05-11T10:20:00+09:00"),
    );
    assert_eq!(
        labels(&mut e),
        ["resolve no_morning_activity: motion resumed (kitchen)"]
    );
    // Next day the resident is up at 07:00: no alert.
    e.handle_event(
        &motion(t("2026-05-12T07:00:00+09:00"), "kitchen"),
        t("2026-05-12T07:00:00+09:00"),
    );
    e.handle_timeout(t("2026-05-12T10:00:00+09:00"));
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.poll_timeout(), Some(t("2026-05-13T03:00:00+09:00")));
}

#[test]
fn morning_check_on_dst_days_in_new_york_and_london() {
    // (zone, morning_deadline, configured at, expected first check)
    let cases = [
        // 10:00 EDT on the spring-forward day is 14:00Z.
        (
            chrono_tz::America::New_York,
            "10:00",
            "2026-03-07T20:00:00Z",
            "2026-03-08T14:00:00Z",
        ),
        // 02:30 does not exist that day: the earliest valid instant is 03:00 EDT = 07:00Z.
        (
            chrono_tz::America::New_York,
            "02:30",
            "2026-03-07T20:00:00Z",
            "2026-03-08T07:00:00Z",
        ),
        // 01:30 happens twice on the fall-back day: the first one, 01:30 EDT = 05:30Z.
        (
            chrono_tz::America::New_York,
            "01:30",
            "2026-10-31T20:00:00Z",
            "2026-11-01T05:30:00Z",
        ),
        // London, 01:30 does not exist on 29 March: 02:00 BST = 01:00Z.
        (
            chrono_tz::Europe::London,
            "01:30",
            "2026-03-28T20:00:00Z",
            "2026-03-29T01:00:00Z",
        ),
        (
            chrono_tz::Europe::London,
            "10:00",
            "2026-03-28T20:00:00Z",
            "2026-03-29T09:00:00Z",
        ),
    ];
    for (tz, deadline, at, want) in cases {
        let mut s = quiet_devices();
        s.inactivity.morning_deadline = Some(deadline.into());
        s.inactivity.day_starts = "01:00".into();
        s.inactivity.day_threshold_s = 100 * 3600;
        s.inactivity.night_threshold_s = 100 * 3600;
        let mut c = config(s, vec![], vec![dev("m1", DeviceKind::Motion)]);
        c.timezone = tz;
        let mut e = Engine::new();
        e.configure(c, t(at));
        assert_eq!(e.poll_timeout(), Some(t(want)), "{tz} {deadline}");
        e.handle_timeout(t(want));
        assert_eq!(
            labels(&mut e),
            ["open no_morning_activity high"],
            "{tz} {deadline}"
        );
        let next = e.poll_timeout().unwrap_or_default();
        assert!(
            next > t(want) + Duration::hours(22) && next < t(want) + Duration::hours(26),
            "{tz} {deadline}: {next}"
        );
    }
}

// ---------------------------------------------------------------- geofence

fn geo_engine(zones: Vec<SafeZone>) -> Engine {
    let mut e = Engine::new();
    let mut s = inactivity_only();
    s.inactivity.enabled = false;
    e.configure(config(s, zones, vec![]), t("2026-05-11T08:00:00+09:00"));
    e
}

/// Feeds fixes one minute apart from 10:00 JST (`north_m`, accuracy) and returns the labels.
fn feed(e: &mut Engine, start: &str, fixes: &[(f64, Option<f64>)]) -> Vec<String> {
    let mut ts = t(start);
    let mut out = Vec::new();
    for &(north, acc) in fixes {
        ts += Duration::minutes(1);
        e.handle_event(&fix(ts, north, acc), ts);
        out.extend(labels(e));
    }
    out
}

#[test]
fn geofence_confirms_exit_updates_and_confirms_return() {
    let mut e = geo_engine(vec![home()]);
    let got = feed(
        &mut e,
        "2026-05-11T10:00:00+09:00",
        &[
            (0.0, Some(10.0)),
            (500.0, Some(20.0)),
            (520.0, Some(20.0)),
            (600.0, None),
            (100.0, Some(5.0)),
            (0.0, Some(5.0)),
        ],
    );
    assert_eq!(
        got,
        [
            "open geofence_exit high",
            "update geofence_exit",
            "update geofence_exit",
            "resolve geofence_exit: back inside home"
        ],
        "the first inside fix (100 m deep) starts the return, the second confirms it"
    );
}

#[test]
fn exit_details_and_night_severity() {
    let mut e = geo_engine(vec![
        home(),
        circle(2, "day centre", LAT + 0.02, LON, 150.0),
    ]);
    e.handle_event(
        &fix(t("2026-05-11T19:00:00+09:00"), 500.0, Some(20.0)),
        t("2026-05-11T19:00:00+09:00"),
    );
    e.handle_event(
        &fix(t("2026-05-11T19:01:00+09:00"), 510.0, Some(20.0)),
        t("2026-05-11T19:01:00+09:00"),
    );
    let d = drain(&mut e);
    let Decision::Open {
        severity,
        device_id,
        details,
        ..
    } = &d[0]
    else {
        panic!("{d:?}")
    };
    assert_eq!(*severity, Severity::Critical, "18:00–06:00 is night");
    assert_eq!(device_id.as_deref(), Some("g1"));
    assert_eq!(details["zone"], "home");
    assert_eq!(details["distance_m"], 310.0);
    assert_eq!(details["accuracy_m"], 20.0);
    assert_eq!(e.status(R).map(|s| s.location), Some(Location::Outside));
}

#[test]
fn jitter_at_the_edge_with_coarse_accuracy_never_alerts() {
    let mut e = geo_engine(vec![home()]);
    // 30 m outside with 50 m accuracy, 10 m inside, 210 m with 150 m (beyond max_accuracy_m): all ambiguous.
    let jitter: Vec<(f64, Option<f64>)> = (0..60)
        .map(|i| {
            [
                (230.0, Some(50.0)),
                (190.0, Some(30.0)),
                (410.0, Some(150.0)),
                (260.0, Some(80.0)),
            ][i % 4]
        })
        .collect();
    assert!(feed(&mut e, "2026-05-11T10:00:00+09:00", &jitter).is_empty());
    // Outside, ambiguous, outside: the streak restarts, so no alert either.
    let got = feed(
        &mut e,
        "2026-05-11T12:00:00+09:00",
        &[
            (400.0, Some(10.0)),
            (230.0, Some(50.0)),
            (400.0, Some(10.0)),
        ],
    );
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(e.status(R).map(|s| s.location), Some(Location::Inside));
}

#[test]
fn reentry_needs_the_margin_capped_by_zone_size() {
    // Home: 200 m radius, margin 50 m. A fix 30 m inside is ambiguous and does not count as back.
    let mut e = geo_engine(vec![home()]);
    let got = feed(
        &mut e,
        "2026-05-11T10:00:00+09:00",
        &[(400.0, None), (400.0, None), (170.0, None), (170.0, None)],
    );
    assert_eq!(
        got,
        [
            "open geofence_exit high",
            "update geofence_exit",
            "update geofence_exit"
        ]
    );
    // A 40 m zone: the margin is capped at 20 m, so 25 m deep is inside.
    let mut e = geo_engine(vec![circle(3, "flat", LAT, LON, 40.0)]);
    let got = feed(
        &mut e,
        "2026-05-11T10:00:00+09:00",
        &[(100.0, None), (100.0, None), (15.0, None), (15.0, None)],
    );
    assert_eq!(
        got,
        [
            "open geofence_exit high",
            "update geofence_exit",
            "resolve geofence_exit: back inside flat"
        ]
    );
}

#[test]
fn stale_and_out_of_order_fixes_change_nothing() {
    let mut e = geo_engine(vec![home()]);
    let t0 = t("2026-05-11T10:00:00+09:00");
    e.handle_event(&fix(t0, 500.0, None), t0);
    let before = e.state(R).cloned();
    // Older and equal timestamps, delivered late, inside: ignored.
    e.handle_event(
        &fix(t0 - Duration::minutes(5), 0.0, None),
        t0 + Duration::minutes(1),
    );
    e.handle_event(&fix(t0, 0.0, None), t0 + Duration::minutes(1));
    assert_eq!(e.state(R).cloned(), before);
    e.handle_event(
        &fix(t0 + Duration::minutes(2), 500.0, None),
        t0 + Duration::minutes(2),
    );
    assert_eq!(labels(&mut e), ["open geofence_exit high"]);
}

#[test]
fn polygon_hole_and_several_zones() -> TestResult {
    // A block with a hole (a pond) around home; a second zone (day centre) 1 km north.
    let sq = |c_lat: f64, half: f64| -> Vec<Vec<f64>> {
        let h = half / M_PER_DEG;
        vec![
            vec![LON - h, c_lat - h],
            vec![LON + h, c_lat - h],
            vec![LON + h, c_lat + h],
            vec![LON - h, c_lat + h],
            vec![LON - h, c_lat - h],
        ]
    };
    let block = SafeZone::new(
        1,
        "block".into(),
        &ZoneShape::Polygon(GeoJsonPolygon {
            kind: "Polygon".into(),
            coordinates: vec![sq(LAT, 400.0), sq(LAT, 150.0)],
        }),
    )?;
    let centre = circle(2, "day centre", LAT + 1_000.0 / M_PER_DEG, LON, 150.0);
    let mut e = geo_engine(vec![block, centre]);
    // In the pond (the hole): outside.
    let got = feed(
        &mut e,
        "2026-05-11T10:00:00+09:00",
        &[(0.0, Some(5.0)), (10.0, Some(5.0))],
    );
    assert_eq!(got, ["open geofence_exit high"]);
    // Deep in the day centre: inside a zone, so back.
    let got = feed(
        &mut e,
        "2026-05-11T11:00:00+09:00",
        &[(1_000.0, Some(10.0)), (1_010.0, Some(10.0))],
    );
    assert_eq!(
        got,
        [
            "update geofence_exit",
            "resolve geofence_exit: back inside day centre"
        ]
    );
    // Between the zones, 150 m from both: outside again.
    let got = feed(
        &mut e,
        "2026-05-11T12:00:00+09:00",
        &[(700.0, Some(10.0)), (700.0, Some(10.0))],
    );
    assert_eq!(got, ["open geofence_exit high"]);
    Ok(())
}

#[test]
fn away_pauses_inactivity_and_the_clock_restarts_on_return() {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T09:00:00+09:00");
    e.configure(
        config(
            no_morning(),
            vec![home()],
            vec![dev("m1", DeviceKind::Motion)],
        ),
        t0,
    );
    e.handle_event(&motion(t0, "hall"), t0);
    let got = feed(
        &mut e,
        "2026-05-11T09:00:00+09:00",
        &[(500.0, None), (500.0, None)],
    );
    assert_eq!(got, ["open geofence_exit high"]);
    assert_eq!(
        e.poll_timeout(),
        Some(t("2026-05-11T10:00:00+09:00")),
        "only the motion sensor's offline deadline"
    );
    e.handle_event(
        &ev(
            "m1",
            DeviceKind::Motion,
            t("2026-05-11T12:00:00+09:00"),
            Reading::Heartbeat,
        ),
        t("2026-05-11T12:00:00+09:00"),
    );
    e.handle_timeout(t("2026-05-11T12:30:00+09:00"));
    assert!(drain(&mut e).is_empty(), "no inactivity while away");
    let got = feed(
        &mut e,
        "2026-05-11T13:00:00+09:00",
        &[(0.0, None), (0.0, None)],
    );
    assert_eq!(
        got,
        [
            "update geofence_exit",
            "resolve geofence_exit: back inside home"
        ]
    );
    assert_eq!(
        e.poll_timeout(),
        Some(t("2026-05-11T13:00:00+09:00")),
        "offline: heartbeat 12:00 + 1 h"
    );
    e.handle_event(
        &ev(
            "m1",
            DeviceKind::Motion,
            t("2026-05-11T13:00:00+09:00"),
            Reading::Heartbeat,
        ),
        t("2026-05-11T13:00:00+09:00"),
    );
    assert_eq!(e.poll_timeout(), Some(t("2026-05-11T14:00:00+09:00")));
    e.handle_event(
        &ev(
            "m1",
            DeviceKind::Motion,
            t("2026-05-11T14:00:00+09:00"),
            Reading::Heartbeat,
        ),
        t("2026-05-11T14:00:00+09:00"),
    );
    e.handle_event(
        &ev(
            "m1",
            DeviceKind::Motion,
            t("2026-05-11T15:00:00+09:00"),
            Reading::Heartbeat,
        ),
        t("2026-05-11T15:00:00+09:00"),
    );
    // Returned at 13:02: inactivity deadline 16:02, not 12:00 (3 h after the last motion).
    assert_eq!(e.poll_timeout(), Some(t("2026-05-11T16:00:00+09:00")));
    e.handle_event(
        &ev(
            "m1",
            DeviceKind::Motion,
            t("2026-05-11T16:00:00+09:00"),
            Reading::Heartbeat,
        ),
        t("2026-05-11T16:00:00+09:00"),
    );
    assert_eq!(e.poll_timeout(), Some(t("2026-05-11T16:02:00+09:00")));
}

// ---------------------------------------------------------------- sos, offline, battery

#[test]
fn sos_presses_join_within_sixty_seconds_of_the_previous_one() -> TestResult {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T10:00:00+09:00");
    e.configure(
        config(
            inactivity_only(),
            vec![],
            vec![dev("b1", DeviceKind::Button)],
        ),
        t0,
    );
    let press = |s: i64| {
        ev(
            "b1",
            DeviceKind::Button,
            t0 + Duration::seconds(s),
            Reading::Sos,
        )
    };
    let mut got = Vec::new();
    for s in [0, 30, 85, 146, 300] {
        e.handle_event(&press(s), t0 + Duration::seconds(s));
        got.extend(drain(&mut e));
    }
    let l: Vec<String> = got.iter().map(label).collect();
    assert_eq!(
        l,
        [
            "open sos critical",
            "update sos",
            "update sos",
            "open sos critical",
            "open sos critical"
        ]
    );
    assert_eq!(details(&got[2])["presses"], 3);
    assert_eq!(
        details(&got[2])["first_press_at"],
        serde_json::to_value(t0)?
    );
    let Decision::Open { key, device_id, .. } = &got[3] else {
        panic!()
    };
    assert_eq!(
        (key.subject.as_str(), device_id.as_deref()),
        ("b1", Some("b1"))
    );
    assert_eq!(details(&got[3])["presses"], 1);
    assert!(
        e.status(R)
            .map(|s| s.open_conditions.is_empty())
            .unwrap_or(false),
        "sos is not a condition"
    );
    Ok(())
}

#[test]
fn offline_by_silence_and_by_will_resolve_when_the_device_reports_again() {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T10:00:00+09:00");
    e.configure(
        config(
            no_morning(),
            vec![],
            vec![dev("g1", DeviceKind::Gps), dev("gw", DeviceKind::Gateway)],
        ),
        t0,
    );
    // Never heard from: counts from configuration; gps and gateway 900 s.
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::seconds(900)));
    e.handle_event(
        &ev(
            "gw",
            DeviceKind::Gateway,
            t0 + Duration::seconds(100),
            Reading::Heartbeat,
        ),
        t0 + Duration::seconds(100),
    );
    e.handle_timeout(t0 + Duration::seconds(899));
    assert!(drain(&mut e).is_empty());
    e.handle_timeout(t0 + Duration::seconds(900));
    let d = drain(&mut e);
    assert_eq!(
        d.iter().map(label).collect::<Vec<_>>(),
        ["open device_offline warning"]
    );
    let Decision::Open { key, at, .. } = &d[0] else {
        panic!()
    };
    assert_eq!(
        (key.subject.as_str(), *at),
        ("g1", t0 + Duration::seconds(900))
    );
    assert_eq!(details(&d[0])["after_s"], 900);
    e.handle_event(
        &fix(t0 + Duration::seconds(950), 0.0, None),
        t0 + Duration::seconds(950),
    );
    assert_eq!(
        labels(&mut e),
        ["resolve device_offline: device reported again"]
    );
    // The will: at once; a second will does not reopen; a message resolves.
    let will = ev(
        "gw",
        DeviceKind::Gateway,
        t0 + Duration::seconds(960),
        Reading::Offline,
    );
    e.handle_event(&will, t0 + Duration::seconds(960));
    e.handle_event(&will, t0 + Duration::seconds(961));
    assert_eq!(labels(&mut e), ["open device_offline warning"]);
    assert_eq!(
        e.status(R)
            .map(|s| s.devices.iter().map(|d| d.online).collect::<Vec<_>>()),
        Some(vec![true, false])
    );
    e.handle_event(
        &ev(
            "gw",
            DeviceKind::Gateway,
            t0 + Duration::seconds(970),
            Reading::Heartbeat,
        ),
        t0 + Duration::seconds(970),
    );
    assert_eq!(
        labels(&mut e),
        ["resolve device_offline: device reported again"]
    );
    // A will older than the last message (delivered late) is ignored.
    let late = ev(
        "gw",
        DeviceKind::Gateway,
        t0 + Duration::seconds(965),
        Reading::Offline,
    );
    e.handle_event(&late, t0 + Duration::seconds(980));
    assert!(drain(&mut e).is_empty());
}

#[test]
fn low_battery_has_hysteresis() {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T10:00:00+09:00");
    e.configure(
        config(
            inactivity_only(),
            vec![],
            vec![dev("b1", DeviceKind::Button)],
        ),
        t0,
    );
    let mut got = Vec::new();
    for (i, battery) in [16, 14, 12, 18, 20, 21, 14].into_iter().enumerate() {
        let now = t0 + Duration::minutes(i as i64);
        let mut hb = ev("b1", DeviceKind::Button, now, Reading::Heartbeat);
        hb.battery = Some(battery);
        e.handle_event(&hb, now);
        got.push(labels(&mut e).join(","));
    }
    assert_eq!(
        got,
        [
            "",
            "open low_battery warning",
            "",
            "",
            "",
            "resolve low_battery: battery at 21%",
            "open low_battery warning"
        ]
    );
}

// ---------------------------------------------------------------- configuration and restore

#[test]
fn config_changes_resolve_what_no_longer_holds() {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T10:00:00+09:00");
    let devices = vec![dev("m1", DeviceKind::Motion), dev("b1", DeviceKind::Button)];
    e.configure(config(no_morning(), vec![home()], devices.clone()), t0);
    let mut hb = ev("b1", DeviceKind::Button, t0, Reading::Offline);
    hb.battery = Some(5);
    e.handle_event(&hb, t0);
    feed(
        &mut e,
        "2026-05-11T10:00:00+09:00",
        &[(500.0, None), (500.0, None)],
    );
    let mut s = no_morning();
    s.inactivity.pause_when_away = false;
    e.configure(
        config(s.clone(), vec![home()], devices.clone()),
        t0 + Duration::minutes(5),
    );
    e.handle_timeout(t("2026-05-11T13:00:00+09:00"));
    e.handle_event(
        &ev(
            "m1",
            DeviceKind::Motion,
            t("2026-05-11T13:00:00+09:00"),
            Reading::Heartbeat,
        ),
        t("2026-05-11T13:00:00+09:00"),
    );
    drain(&mut e);
    assert_eq!(
        e.status(R).map(|s| s.open_conditions),
        Some(vec![
            AlertKind::Inactivity,
            AlertKind::GeofenceExit,
            AlertKind::DeviceOffline,
            AlertKind::LowBattery
        ])
    );
    // Threshold raised, button removed, zones deleted.
    s.inactivity.day_threshold_s = 5 * 3600;
    let now = t("2026-05-11T13:05:00+09:00");
    e.configure(config(s, vec![], vec![dev("m1", DeviceKind::Motion)]), now);
    let mut got = labels(&mut e);
    got.sort();
    assert_eq!(
        got,
        [
            "resolve device_offline: device removed",
            "resolve geofence_exit: no safe zone configured",
            "resolve inactivity: inactivity threshold raised",
            "resolve low_battery: device removed",
        ]
    );
    assert_eq!(e.poll_timeout(), Some(t("2026-05-11T14:00:00+09:00")));
}

#[test]
fn a_zone_change_re_evaluates_the_last_fix() {
    let mut e = geo_engine(vec![home()]);
    feed(
        &mut e,
        "2026-05-11T10:00:00+09:00",
        &[(500.0, None), (500.0, None)],
    );
    drain(&mut e);
    let mut s = inactivity_only();
    s.inactivity.enabled = false;
    // Staff add the daughter's house where the resident is.
    let daughter = circle(5, "daughter", LAT + 500.0 / M_PER_DEG, LON, 300.0);
    e.configure(
        config(s.clone(), vec![home(), daughter], vec![]),
        t("2026-05-11T10:10:00+09:00"),
    );
    assert_eq!(
        labels(&mut e),
        ["resolve geofence_exit: inside daughter after the safe zones changed"]
    );
    // Remove it again: one outside fix is on record, one more confirms.
    e.configure(
        config(s, vec![home()], vec![]),
        t("2026-05-11T10:20:00+09:00"),
    );
    assert!(drain(&mut e).is_empty());
    let got = feed(&mut e, "2026-05-11T10:20:00+09:00", &[(500.0, None)]);
    assert_eq!(got, ["open geofence_exit high"]);
}

#[test]
fn restore_keeps_deadlines_and_open_conditions_without_reopening() -> TestResult {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T09:00:00+09:00");
    let cfg = || {
        config(
            RuleSettings::default(),
            vec![home()],
            vec![dev("m1", DeviceKind::Motion), dev("g1", DeviceKind::Gps)],
        )
    };
    e.configure(cfg(), t0);
    e.handle_event(&motion(t0, "kitchen"), t0);
    feed(
        &mut e,
        "2026-05-11T09:00:00+09:00",
        &[(500.0, None), (500.0, None)],
    );
    assert_eq!(labels(&mut e), Vec::<String>::new(), "feed drained them");
    assert_eq!(e.take_dirty(), vec![R]);
    assert!(e.take_dirty().is_empty());
    let json = serde_json::to_string(e.state(R).ok_or("no state")?)?;
    let state: ResidentState = serde_json::from_str(&json)?;
    assert_eq!(Some(&state), e.state(R));

    // Restart at 11:00: the geofence alert stays open (no reopen), the pending morning check is kept.
    let restart = t("2026-05-11T11:00:00+09:00");
    let mut e2 = Engine::new();
    e2.restore(cfg(), Some(state.clone()), restart);
    assert!(drain(&mut e2).is_empty());
    assert_eq!(
        e2.status(R).map(|s| s.open_conditions),
        Some(vec![AlertKind::GeofenceExit])
    );
    // The 10:00 morning check was missed while down; it runs after the restart grace and finds
    // the 09:00 activity.
    assert_eq!(e2.poll_timeout(), Some(restart + RESTART_GRACE));
    e2.handle_timeout(restart + RESTART_GRACE);
    assert!(drain(&mut e2).is_empty());
    // Device clocks restart from the restore (hub downtime is not device silence): 11:15 for the gps.
    assert_eq!(e2.poll_timeout(), Some(t("2026-05-11T11:15:00+09:00")));
    let got = feed(&mut e2, "2026-05-11T11:00:00+09:00", &[(500.0, None)]);
    assert_eq!(got, ["update geofence_exit"]);

    // An inactivity deadline that passed while the hub was down fires once the grace is over,
    // at its own instant.
    let mut e3 = Engine::new();
    e3.configure(
        config(
            inactivity_only(),
            vec![],
            vec![dev("m1", DeviceKind::Motion)],
        ),
        t0,
    );
    e3.handle_event(&motion(t0, "kitchen"), t0);
    let state: ResidentState =
        serde_json::from_str(&serde_json::to_string(e3.state(R).ok_or("no state")?)?)?;
    let mut e4 = Engine::new();
    let late = t("2026-05-11T15:00:00+09:00");
    e4.restore(
        config(
            inactivity_only(),
            vec![],
            vec![dev("m1", DeviceKind::Motion)],
        ),
        Some(state),
        late,
    );
    assert!(drain(&mut e4).is_empty(), "restore itself fires nothing");
    assert_eq!(e4.poll_timeout(), Some(late + RESTART_GRACE));
    e4.handle_timeout(late);
    assert!(drain(&mut e4).is_empty(), "devices get their grace first");
    e4.handle_timeout(late + RESTART_GRACE);
    let d = drain(&mut e4);
    assert_eq!(
        d.iter().map(label).collect::<Vec<_>>(),
        ["open inactivity high"]
    );
    let Decision::Open { at, .. } = &d[0] else {
        panic!()
    };
    assert_eq!(*at, t("2026-05-11T12:00:00+09:00"));
    // Persist and restore again: it is open, so it does not open twice.
    let state: ResidentState =
        serde_json::from_str(&serde_json::to_string(e4.state(R).ok_or("no state")?)?)?;
    let mut e5 = Engine::new();
    e5.restore(
        config(
            inactivity_only(),
            vec![],
            vec![dev("m1", DeviceKind::Motion)],
        ),
        Some(state),
        late,
    );
    e5.handle_timeout(late + Duration::hours(2));
    assert!(drain(&mut e5)
        .iter()
        .all(|d| !matches!(d, Decision::Open { key, .. } if key.kind == AlertKind::Inactivity)));
    Ok(())
}

#[test]
fn missed_morning_check_fires_once_after_restore() -> TestResult {
    let mut e = Engine::new();
    let t0 = t("2026-05-10T20:00:00+09:00");
    let mut s = quiet_devices();
    s.inactivity.day_threshold_s = 100 * 3600;
    s.inactivity.night_threshold_s = 100 * 3600;
    let cfg = config(s, vec![], vec![dev("m1", DeviceKind::Motion)]);
    e.configure(cfg.clone(), t0);
    let state = serde_json::from_value(serde_json::to_value(e.state(R).ok_or("no state")?)?)?;
    let mut e2 = Engine::new();
    let restart = t("2026-05-13T12:00:00+09:00");
    e2.restore(cfg, Some(state), restart);
    e2.handle_timeout(restart + RESTART_GRACE);
    assert_eq!(labels(&mut e2), ["open no_morning_activity high"]);
    assert_eq!(e2.poll_timeout(), Some(t("2026-05-14T10:00:00+09:00")));
    Ok(())
}

#[test]
fn unknown_residents_and_removed_residents_are_ignored() {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T10:00:00+09:00");
    e.handle_event(&motion(t0, "x"), t0);
    assert_eq!(
        (e.resident_count(), e.poll_decision(), e.take_dirty().len()),
        (0, None, 0)
    );
    e.configure(
        config(
            inactivity_only(),
            vec![],
            vec![dev("m1", DeviceKind::Motion)],
        ),
        t0,
    );
    assert_eq!(e.resident_count(), 1);
    e.remove_resident(R);
    assert_eq!(
        (
            e.resident_count(),
            e.poll_timeout(),
            e.poll_decision(),
            e.take_dirty().len()
        ),
        (0, None, None, 0)
    );
}

#[test]
fn future_timestamps_are_clamped_to_now() {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T10:00:00+09:00");
    e.configure(
        config(no_morning(), vec![], vec![dev("m1", DeviceKind::Motion)]),
        t0,
    );
    e.handle_event(&motion(t0 + Duration::minutes(9), "kitchen"), t0);
    assert_eq!(
        e.poll_timeout(),
        Some(t0 + Duration::hours(1)),
        "offline first; inactivity at 13:00, not 13:09"
    );
    assert_eq!(e.status(R).and_then(|s| s.last_activity_at), Some(t0));
}

#[test]
fn status_serializes_for_the_dashboard() -> TestResult {
    let mut e = geo_engine(vec![home()]);
    assert_eq!(e.status(R).map(|s| s.location), Some(Location::Unknown));
    feed(&mut e, "2026-05-11T10:00:00+09:00", &[(0.0, Some(5.0))]);
    let v = serde_json::to_value(e.status(R).ok_or("no status")?)?;
    assert_eq!(v["location"], "inside");
    assert_eq!(v["last_position"]["accuracy_m"], 5.0);
    let back: ResidentStatus = serde_json::from_value(v)?;
    assert_eq!(Some(back), e.status(R));
    Ok(())
}

#[test]
fn a_hundred_thousand_residents_share_one_timer_set() {
    let mut e = Engine::new();
    let t0 = t("2026-05-11T10:00:00+09:00");
    for id in 0..100_000_i64 {
        let mut c = config(
            no_morning(),
            vec![],
            vec![dev(&format!("m{id}"), DeviceKind::Motion)],
        );
        c.resident_id = id;
        e.configure(c, t0 + Duration::seconds(id % 3_600));
    }
    assert_eq!(e.resident_count(), 100_000);
    assert_eq!(e.take_dirty().len(), 100_000);
    // Every sensor goes silent after 1 h: the first at 11:00.
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::hours(1)));
    e.handle_timeout(t0 + Duration::hours(1) + Duration::seconds(59));
    // Each resident's only sensor: offline, and with nothing left to see them, inactive.
    assert_eq!(drain(&mut e).len(), 2 * 60 * (100_000 / 3_600 + 1));
    assert_eq!(
        e.poll_timeout(),
        Some(t0 + Duration::hours(1) + Duration::seconds(60))
    );
    e.handle_timeout(t0 + Duration::hours(4));
    let d = drain(&mut e);
    assert_eq!(
        d.len(),
        3 * (100_000 - 60 * (100_000 / 3_600 + 1)),
        "the rest inactive by their threshold, offline, and the alert saying no sensor works"
    );
    assert_eq!(e.poll_timeout(), None);
}

// ---------------------------------------------------------------- properties

fn arb_fixes() -> impl Strategy<Value = Vec<(i64, f64, f64, Option<f64>)>> {
    // (seconds after the start, metres north, metres east, accuracy), around a 200 m circle.
    prop::collection::vec(
        (
            0_i64..3_600,
            -450.0..450.0_f64,
            -450.0..450.0_f64,
            prop::option::of(0.0..160.0_f64),
        ),
        1..40,
    )
    .prop_shuffle()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(0x6d696d61), ..ProptestConfig::default() })]

    #[test]
    fn fix_sequences_never_open_two_geofence_alerts_and_stale_fixes_flip_nothing(
        fixes in arb_fixes(),
        confirm in 1_u32..4,
    ) {
        let mut s = inactivity_only();
        s.inactivity.enabled = false;
        s.geofence.confirm_fixes = confirm;
        let mut e = Engine::new();
        let t0 = t("2026-05-11T10:00:00+09:00");
        e.configure(config(s, vec![home(), circle(2, "park", LAT, LON + 600.0 / M_PER_DEG, 120.0)], vec![]), t0);
        let mut open = 0_i32;
        let mut newest: Option<DateTime<Utc>> = None;
        for (i, (secs, north, east, acc)) in fixes.into_iter().enumerate() {
            let ts = t0 + Duration::seconds(secs);
            let now = t0 + Duration::seconds(3_600 + i as i64);
            let reading = Reading::Position {
                lat: LAT + north / M_PER_DEG,
                lon: LON + east / (M_PER_DEG * LAT.to_radians().cos()),
                accuracy_m: acc,
            };
            let before = e.state(R).cloned();
            e.handle_event(&ev("g1", DeviceKind::Gps, ts, reading), now);
            let stale = newest.is_some_and(|n| ts <= n);
            if stale {
                prop_assert_eq!(e.state(R).cloned(), before);
            }
            newest = newest.max(Some(ts));
            for d in drain(&mut e) {
                match d {
                    Decision::Open { .. } => open += 1,
                    Decision::Resolve { .. } => open -= 1,
                    Decision::Update { .. } => prop_assert_eq!(open, 1),
                }
                prop_assert!(open == 0 || open == 1, "open count {}", open);
                prop_assert!(!stale);
            }
        }
    }
}

#[test]
fn extreme_times_and_settings_do_not_panic() {
    let mut s = RuleSettings::default();
    s.inactivity.day_threshold_s = u64::MAX;
    s.inactivity.night_threshold_s = u64::MAX;
    s.inactivity.day_starts = "bogus".into();
    s.offline.motion_s = u64::MAX;
    let devices = vec![dev("m1", DeviceKind::Motion), dev("g1", DeviceKind::Gps)];
    for now in [
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
        t("2026-05-11T10:00:00Z"),
    ] {
        let mut e = Engine::new();
        e.configure(config(s.clone(), vec![home()], devices.clone()), now);
        for ts in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            e.handle_event(&motion(ts, "x"), now);
            e.handle_event(&fix(ts, 1e9, Some(f64::NAN)), now);
            e.handle_event(
                &ev(
                    "g1",
                    DeviceKind::Gps,
                    ts,
                    Reading::Position {
                        lat: f64::NAN,
                        lon: 0.0,
                        accuracy_m: None,
                    },
                ),
                now,
            );
            e.handle_event(&ev("b9", DeviceKind::Button, ts, Reading::Sos), now);
        }
        e.handle_timeout(DateTime::<Utc>::MAX_UTC);
        drain(&mut e);
        let _ = e.status(R);
    }
}

// ---------------------------------------------------------------- blind spots and robust input

/// An engine with one resident configured at `at`.
fn engine(cfg: ResidentConfig, at: DateTime<Utc>) -> Engine {
    let mut e = Engine::new();
    e.configure(cfg, at);
    e
}

/// A resident with one motion sensor and inactivity alone, configured at `at`.
fn one_pir(at: DateTime<Utc>) -> Engine {
    engine(
        config(
            inactivity_only(),
            vec![],
            vec![dev("m1", DeviceKind::Motion)],
        ),
        at,
    )
}

/// Feeds an event at its own time.
fn now(e: &mut Engine, ev: DeviceEvent) {
    let at = ev.received_at;
    e.handle_event(&ev, at);
}

fn room_dev(id: &str, room: &str) -> DeviceInfo {
    DeviceInfo {
        room: Some(room.into()),
        ..dev(id, DeviceKind::Motion)
    }
}

fn motion_from(device: &str, ts: DateTime<Utc>) -> DeviceEvent {
    ev(
        device,
        DeviceKind::Motion,
        ts,
        Reading::Motion {
            motion: true,
            room: None,
        },
    )
}

/// Runs every timer up to `until` and returns the labels with the instant each decision is for.
fn run_until(e: &mut Engine, until: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    let mut out = Vec::new();
    while let Some(due) = e.poll_timeout().filter(|t| *t <= until) {
        e.handle_timeout(due);
        for d in drain(e) {
            let at = match &d {
                Decision::Open { at, .. }
                | Decision::Update { at, .. }
                | Decision::Resolve { at, .. } => *at,
            };
            out.push((label(&d), at));
        }
    }
    out
}

#[test]
fn an_evening_collapse_in_the_bathroom_is_alerted_within_the_day_threshold() {
    let t0 = t("2026-05-11T08:00:00+09:00");
    let devices = vec![room_dev("bath", "bathroom"), room_dev("bed", "bedroom")];
    let mut e = engine(config(inactivity_only(), vec![], devices), t0);
    now(&mut e, motion_from("bath", t("2026-05-11T19:30:00+09:00")));
    let got = run_until(&mut e, t("2026-05-12T12:00:00+09:00"));
    assert_eq!(
        got,
        [
            ("open dwell high".to_owned(), t("2026-05-11T20:30:00+09:00")),
            (
                "open inactivity high".to_owned(),
                t("2026-05-11T22:30:00+09:00")
            )
        ],
        "an hour in the bathroom, then 3 h after its last motion, not 12 h"
    );
}

#[test]
fn without_a_known_sleep_room_the_evening_keeps_the_night_threshold() {
    let t0 = t("2026-05-11T08:00:00+09:00");
    let mut e = engine(
        config(inactivity_only(), vec![], vec![room_dev("k", "kitchen")]),
        t0,
    );
    now(&mut e, motion_from("k", t("2026-05-11T19:30:00+09:00")));
    let got = run_until(&mut e, t("2026-05-12T12:00:00+09:00"));
    // The 12 h backstop over the whole silence: nobody could tell bed from collapse.
    assert_eq!(
        got,
        [(
            "open inactivity high".to_owned(),
            t("2026-05-12T07:30:00+09:00")
        )]
    );
}

#[test]
fn going_to_bed_in_the_bedroom_keeps_the_night_threshold() {
    let t0 = t("2026-05-11T08:00:00+09:00");
    let devices = vec![room_dev("bath", "bathroom"), room_dev("bed", "bedroom")];
    let mut e = engine(config(inactivity_only(), vec![], devices), t0);
    now(&mut e, motion_from("bath", t("2026-05-11T21:00:00+09:00")));
    now(&mut e, motion_from("bed", t("2026-05-11T21:30:00+09:00")));
    assert!(run_until(&mut e, t("2026-05-12T07:00:00+09:00")).is_empty());
    // A sleep room learnt from the events alone counts the same.
    let mut e = one_pir(t0);
    now(&mut e, motion(t("2026-05-11T12:00:00+09:00"), "bedroom"));
    now(&mut e, motion(t("2026-05-11T19:30:00+09:00"), "toilet"));
    let got = run_until(&mut e, t("2026-05-12T12:00:00+09:00"));
    assert_eq!(
        got,
        [
            ("open dwell high".to_owned(), t("2026-05-11T20:00:00+09:00")),
            (
                "open inactivity high".to_owned(),
                t("2026-05-11T22:30:00+09:00")
            )
        ]
    );
}

#[test]
fn indoor_motion_ends_the_away_pause_while_the_tracker_stays_outside() {
    let t0 = t("2026-05-11T09:00:00+09:00");
    let mut e = engine(
        config(
            inactivity_only(),
            vec![home()],
            vec![dev("m1", DeviceKind::Motion), dev("g1", DeviceKind::Gps)],
        ),
        t0,
    );
    now(&mut e, motion(t0, "hall"));
    let got = feed(
        &mut e,
        "2026-05-11T09:00:00+09:00",
        &[(500.0, Some(10.0)), (510.0, Some(10.0))],
    );
    assert_eq!(got, ["open geofence_exit high"]);
    // Staff resolve it (the bag is at the daughter's); the tracker keeps reporting from there.
    let key = AlertKey {
        resident_id: R,
        kind: AlertKind::GeofenceExit,
        subject: String::new(),
    };
    e.staff_closed(&key, t("2026-05-11T09:30:00+09:00"));
    let got = feed(
        &mut e,
        "2026-05-11T09:30:00+09:00",
        &[(520.0, Some(10.0)), (530.0, Some(10.0))],
    );
    assert_eq!(
        got,
        ["open geofence_exit high"],
        "a new exit, as documented"
    );
    // The resident is home: motion inside, then stillness. Inactivity watches again.
    let back = t("2026-05-11T10:00:00+09:00");
    now(&mut e, motion(back, "kitchen"));
    assert!(drain(&mut e).is_empty());
    let got = run_until(&mut e, t("2026-05-11T14:00:00+09:00"));
    assert_eq!(
        got,
        [("open inactivity high".to_owned(), back + Duration::hours(3))]
    );
}

#[test]
fn a_cell_tower_fix_does_not_move_a_live_exit_alert() {
    let mut e = geo_engine(vec![home()]);
    let mut s = inactivity_only();
    s.inactivity.enabled = false;
    s.geofence.max_accuracy_m = 5_000.0;
    e.configure(
        config(s, vec![home()], vec![]),
        t("2026-05-11T08:00:00+09:00"),
    );
    drain(&mut e);
    let got = feed(
        &mut e,
        "2026-05-11T10:00:00+09:00",
        &[
            (500.0, Some(10.0)),
            (510.0, Some(10.0)),
            (3_000.0, Some(2_000.0)),
            (530.0, Some(15.0)),
        ],
    );
    assert_eq!(got, ["open geofence_exit high", "update geofence_exit"]);
    let shown = e
        .state(R)
        .and_then(|s| s.geofence.shown)
        .map(|p| p.accuracy_m);
    assert_eq!(
        shown,
        Some(Some(15.0)),
        "the 15 m fix moved it, the 2,000 m one did not"
    );
}

#[test]
fn a_resent_fix_is_not_the_second_confirming_fix() {
    let mut e = geo_engine(vec![home()]);
    let at = t("2026-05-11T10:00:00+09:00");
    e.handle_event(&fix(at, 500.0, Some(10.0)), at);
    // A QoS 1 resend without `ts`: stamped on receipt, 5 s later.
    let resent = at + Duration::seconds(5);
    e.handle_event(&fix(resent, 500.0, Some(10.0)), resent);
    assert!(labels(&mut e).is_empty());
    let next = at + Duration::minutes(1);
    e.handle_event(&fix(next, 505.0, Some(10.0)), next);
    assert_eq!(labels(&mut e), ["open geofence_exit high"]);
}

#[test]
fn a_fix_without_accuracy_is_not_taken_as_exact() {
    // 230 m north: 30 m beyond the 200 m fence, within the 50 m assumed for an unknown accuracy.
    let mut e = geo_engine(vec![home()]);
    let got = feed(
        &mut e,
        "2026-05-11T10:00:00+09:00",
        &[(230.0, None), (231.0, None), (232.0, None)],
    );
    assert!(got.is_empty(), "{got:?}");
    let got = feed(
        &mut e,
        "2026-05-11T11:00:00+09:00",
        &[(230.0, Some(5.0)), (231.0, Some(5.0))],
    );
    assert_eq!(got, ["open geofence_exit high"]);
}

#[test]
fn after_a_restart_buffered_readings_arrive_before_an_overdue_deadline_fires() -> TestResult {
    let cfg = || {
        config(
            inactivity_only(),
            vec![],
            vec![dev("m1", DeviceKind::Motion)],
        )
    };
    let mut e = Engine::new();
    let t0 = t("2026-05-11T09:00:00+09:00");
    e.configure(cfg(), t0);
    now(&mut e, motion(t0, "kitchen"));
    let state: ResidentState =
        serde_json::from_value(serde_json::to_value(e.state(R).ok_or("no state")?)?)?;
    // The hub was down 09:05-12:30; the resident moved at 11:00, buffered by the gateway.
    let restart = t("2026-05-11T12:30:00+09:00");
    let mut e = Engine::new();
    e.restore(cfg(), Some(state), restart);
    e.handle_timeout(restart);
    assert!(drain(&mut e).is_empty());
    let mut late = motion(t("2026-05-11T11:00:00+09:00"), "kitchen");
    late.received_at = restart + Duration::seconds(20);
    e.handle_event(&late, late.received_at);
    let got = run_until(&mut e, t("2026-05-11T15:00:00+09:00"));
    assert_eq!(
        got,
        [(
            "open inactivity high".to_owned(),
            t("2026-05-11T14:00:00+09:00")
        )],
        "counted from the buffered 11:00 motion, not alerted at the restart"
    );
    Ok(())
}

#[test]
fn a_clock_running_behind_is_flagged_and_its_readings_taken_at_receipt() {
    let t0 = t("2026-05-11T09:00:00+09:00");
    let mut e = one_pir(t0);
    // Every message is stamped 2 h 30 min behind the hub's clock, five minutes apart.
    let lag = Duration::minutes(150);
    for n in 0..3 {
        let at = t0 + Duration::minutes(5 * n);
        let mut m = motion(at - lag, "kitchen");
        m.received_at = at;
        e.handle_event(&m, at);
    }
    let skewed = e.status(R).map(|s| s.devices.iter().any(|d| d.clock_skew));
    assert_eq!(skewed, Some(true));
    let last = t0 + Duration::minutes(10);
    assert_eq!(e.status(R).and_then(|s| s.last_activity_at), Some(last));
    let got = run_until(&mut e, last + Duration::hours(3));
    assert_eq!(
        got,
        [("open inactivity high".to_owned(), last + Duration::hours(3))]
    );
}

#[test]
fn a_flushed_buffer_is_history_not_a_wrong_clock() {
    let t0 = t("2026-05-11T12:00:00+09:00");
    let mut e = one_pir(t0);
    // Ten buffered readings from 10:00 to 11:30 delivered within two seconds.
    for n in 0..10 {
        let mut m = motion(
            t("2026-05-11T10:00:00+09:00") + Duration::minutes(10 * n),
            "kitchen",
        );
        m.received_at = t0 + Duration::milliseconds(200 * n);
        e.handle_event(&m, m.received_at);
    }
    let skewed = e.status(R).map(|s| s.devices.iter().any(|d| d.clock_skew));
    assert_eq!(skewed, Some(false));
    assert_eq!(
        e.status(R).and_then(|s| s.last_activity_at),
        Some(t("2026-05-11T11:30:00+09:00"))
    );
}

// ---------------------------------------------------------------- dwell and night exit

fn door_dev(id: &str) -> DeviceInfo {
    dev(id, DeviceKind::Door)
}

fn door(device: &str, ts: DateTime<Utc>, open: bool) -> DeviceEvent {
    ev(device, DeviceKind::Door, ts, Reading::Door { open })
}

#[test]
fn ninety_minutes_in_the_bath_opens_dwell_at_sixty_and_leaving_resolves_it() {
    let t0 = t("2026-01-11T18:00:00+09:00");
    let devices = vec![room_dev("bath", "bathroom"), room_dev("liv", "living")];
    let mut e = engine(config(inactivity_only(), vec![], devices), t0);
    // Motion in the bathroom every five minutes for 90 minutes: no other room.
    for n in 0..=18 {
        let at = t0 + Duration::minutes(5 * n);
        let opened = run_until(&mut e, at);
        if n == 12 {
            assert_eq!(
                opened,
                [("open dwell high".to_owned(), t0 + Duration::hours(1))]
            );
        } else {
            assert!(opened.is_empty(), "{n}: {opened:?}");
        }
        now(&mut e, motion_from("bath", at));
        assert!(labels(&mut e).is_empty());
    }
    let out = t0 + Duration::minutes(95);
    now(&mut e, motion_from("liv", out));
    assert_eq!(labels(&mut e), ["resolve dwell: moved to living"]);
    // A room with no limit never raises dwell.
    assert!(run_until(&mut e, out + Duration::hours(2)).is_empty());
}

#[test]
fn dwell_after_a_staff_resolve_counts_afresh_and_settings_can_lift_it() {
    let mut e = Engine::new();
    let t0 = t("2026-01-11T10:00:00+09:00");
    let cfg = |s: RuleSettings| config(s, vec![], vec![room_dev("wc", "toilet")]);
    e.configure(cfg(inactivity_only()), t0);
    now(&mut e, motion_from("wc", t0));
    let got = run_until(&mut e, t0 + Duration::minutes(31));
    assert_eq!(
        got,
        [("open dwell high".to_owned(), t0 + Duration::minutes(30))]
    );
    let key = AlertKey {
        resident_id: R,
        kind: AlertKind::Dwell,
        subject: String::new(),
    };
    let resolved = t0 + Duration::minutes(40);
    e.staff_closed(&key, resolved);
    let got = run_until(&mut e, resolved + Duration::minutes(31));
    assert_eq!(
        got,
        [(
            "open dwell high".to_owned(),
            resolved + Duration::minutes(30)
        )]
    );
    let mut s = inactivity_only();
    s.dwell.limits_s.insert("toilet".into(), 7200);
    e.configure(cfg(s), resolved + Duration::minutes(32));
    assert_eq!(
        labels(&mut e),
        ["resolve dwell: dwell limit raised or removed"]
    );
}

fn night_exit_settings() -> RuleSettings {
    let mut s = inactivity_only();
    s.night_exit.enabled = true;
    s
}

#[test]
fn leaving_at_night_without_the_tracker_is_critical_three_minutes_after_the_door() {
    let mut e = Engine::new();
    let t0 = t("2026-01-11T21:00:00+09:00");
    let devices = vec![
        door_dev("front"),
        room_dev("hall", "hall"),
        room_dev("bed", "bedroom"),
    ];
    e.configure(config(night_exit_settings(), vec![], devices), t0);
    now(&mut e, motion_from("bed", t0));
    let at = t("2026-01-12T02:00:00+09:00");
    run_until(&mut e, at);
    drain(&mut e);
    now(&mut e, door("front", at, true));
    // The hall sensor sees the resident pass the door on the way out; the door closes.
    now(&mut e, motion_from("hall", at + Duration::seconds(5)));
    now(&mut e, door("front", at + Duration::seconds(20), false));
    drain(&mut e);
    let got = run_until(&mut e, at + Duration::minutes(10));
    assert_eq!(
        got,
        [(
            "open night_exit critical".to_owned(),
            at + Duration::minutes(3)
        )]
    );
    let back = at + Duration::minutes(40);
    now(&mut e, motion_from("hall", back));
    assert_eq!(
        labels(&mut e),
        ["resolve night_exit: motion indoors (hall)"]
    );
}

#[test]
fn a_night_door_followed_by_indoor_motion_or_by_day_raises_nothing() {
    let mut e = Engine::new();
    let t0 = t("2026-01-11T21:00:00+09:00");
    let devices = vec![door_dev("front"), room_dev("hall", "hall")];
    e.configure(config(night_exit_settings(), vec![], devices.clone()), t0);
    let at = t("2026-01-11T23:00:00+09:00");
    now(&mut e, door("front", at, true));
    now(&mut e, motion_from("hall", at + Duration::minutes(2)));
    assert!(run_until(&mut e, at + Duration::minutes(10)).is_empty());
    // By day the door is not watched.
    let noon = t("2026-01-12T12:00:00+09:00");
    run_until(&mut e, noon);
    drain(&mut e);
    now(&mut e, door("front", noon, true));
    let got = run_until(&mut e, noon + Duration::minutes(10));
    assert!(
        got.iter().all(|(l, _)| !l.contains("night_exit")),
        "{got:?}"
    );
    // Off by default; with two doors only the one marked entrance counts.
    let mut e = Engine::new();
    let back = DeviceInfo {
        role: Some(DeviceRole::Entrance),
        ..door_dev("back")
    };
    e.configure(
        config(night_exit_settings(), vec![], vec![door_dev("front"), back]),
        t0,
    );
    now(&mut e, door("front", at, true));
    assert!(run_until(&mut e, at + Duration::minutes(10)).is_empty());
    now(&mut e, door("back", at + Duration::minutes(20), true));
    let got = run_until(&mut e, at + Duration::minutes(30));
    assert_eq!(
        got,
        [(
            "open night_exit critical".to_owned(),
            at + Duration::minutes(23)
        )]
    );
    let mut e = engine(
        config(inactivity_only(), vec![], vec![door_dev("front")]),
        t0,
    );
    now(&mut e, door("front", at, true));
    assert!(run_until(&mut e, at + Duration::minutes(10)).is_empty());
}

// ---------------------------------------------------------------- tag_away

fn tag_away_settings() -> RuleSettings {
    let mut s = quiet_devices();
    s.inactivity.enabled = false;
    s.tag_away.enabled = true;
    s.tag_away.receivers = vec!["rx-home".into()];
    s
}

fn tag_devices() -> Vec<DeviceInfo> {
    vec![
        dev("tag", DeviceKind::Tag),
        dev("rx-home", DeviceKind::Receiver),
    ]
}

fn sighting(receiver: &str, place: &str, ts: DateTime<Utc>) -> DeviceEvent {
    ev(
        "tag",
        DeviceKind::Tag,
        ts,
        Reading::Sighting {
            lat: LAT,
            lon: LON,
            accuracy_m: Some(30.0),
            receiver: receiver.into(),
            place: place.into(),
        },
    )
}

#[test]
fn a_tag_not_heard_at_home_opens_after_the_silence_within_the_night_and_resolves_when_heard(
) -> TestResult {
    let t0 = t("2026-01-11T17:00:00+09:00");
    let mut e = engine(config(tag_away_settings(), vec![], tag_devices()), t0);
    now(
        &mut e,
        sighting("rx-home", "home", t("2026-01-11T18:00:00+09:00")),
    );
    // Silent since 18:00, but only the night counts: 22:00 + 30 min.
    let got = run_until(&mut e, t("2026-01-12T06:00:00+09:00"));
    assert_eq!(
        got,
        [(
            "open tag_away high".to_owned(),
            t("2026-01-11T22:30:00+09:00")
        )]
    );
    // A station's sighting is no sighting at home.
    now(
        &mut e,
        sighting(
            "rx-station",
            "Koenji station",
            t("2026-01-12T06:10:00+09:00"),
        ),
    );
    assert!(labels(&mut e).iter().all(|l| !l.contains("tag_away")));
    now(
        &mut e,
        sighting("rx-home", "home", t("2026-01-12T07:00:00+09:00")),
    );
    assert_eq!(labels(&mut e), ["resolve tag_away: seen by home"]);
    assert!(!e
        .status(R)
        .ok_or("no status")?
        .open_conditions
        .contains(&AlertKind::TagAway));
    Ok(())
}

#[test]
fn a_tag_heard_at_home_through_the_night_raises_nothing_and_the_rule_is_off_by_default() {
    let t0 = t("2026-01-11T21:00:00+09:00");
    let mut e = engine(config(tag_away_settings(), vec![], tag_devices()), t0);
    let mut at = t0;
    while at < t("2026-01-12T07:00:00+09:00") {
        now(&mut e, sighting("rx-home", "home", at));
        assert!(run_until(&mut e, at + Duration::minutes(20)).is_empty());
        at += Duration::minutes(20);
    }
    // Off by default: a whole silent night raises nothing.
    let mut quiet = quiet_devices();
    quiet.inactivity.enabled = false;
    assert!(!quiet.tag_away.enabled);
    let mut e = engine(config(quiet, vec![], tag_devices()), t0);
    assert!(run_until(&mut e, t("2026-01-13T07:00:00+09:00")).is_empty());
}

#[test]
fn tag_away_silence_counts_from_the_window_after_it_was_turned_on_or_resolved_by_staff() {
    // Turned on at 23:50 with nothing heard yet: the silence counts from then.
    let t0 = t("2026-01-11T23:50:00+09:00");
    let mut e = engine(config(tag_away_settings(), vec![], tag_devices()), t0);
    let got = run_until(&mut e, t("2026-01-12T01:00:00+09:00"));
    assert_eq!(
        got,
        [(
            "open tag_away high".to_owned(),
            t("2026-01-12T00:20:00+09:00")
        )]
    );
    // Staff found her at her daughter's: the next 30 min of night count afresh.
    let found = t("2026-01-12T01:00:00+09:00");
    e.staff_closed(
        &AlertKey {
            resident_id: R,
            kind: AlertKind::TagAway,
            subject: String::new(),
        },
        found,
    );
    let got = run_until(&mut e, t("2026-01-12T02:00:00+09:00"));
    assert_eq!(
        got,
        [(
            "open tag_away high".to_owned(),
            t("2026-01-12T01:30:00+09:00")
        )]
    );
    // Turning the rule off resolves it.
    let mut off = tag_away_settings();
    off.tag_away.enabled = false;
    e.configure(
        config(off, vec![], tag_devices()),
        found + Duration::hours(2),
    );
    assert_eq!(
        labels(&mut e),
        ["resolve tag_away: tag away rule turned off"]
    );
}

#[test]
fn a_window_shorter_than_the_silence_never_opens_and_enabling_needs_receivers() {
    let mut s = tag_away_settings();
    s.tag_away.from = "23:00".into();
    s.tag_away.until = "23:20".into();
    let t0 = t("2026-01-11T12:00:00+09:00");
    let mut e = engine(config(s.clone(), vec![], tag_devices()), t0);
    assert!(run_until(&mut e, t("2026-01-14T12:00:00+09:00")).is_empty());
    s.tag_away.receivers.clear();
    assert!(s.validate().is_err());
    s.tag_away.enabled = false;
    assert!(s.validate().is_ok());
}
mod care;
