//! Dated pauses and away by the entrance door, on fake time.

use super::*;
use mimamori_protocol::pause::PauseReason;

fn pause(id: &str, from: DateTime<Utc>, until: DateTime<Utc>) -> Pause {
    Pause {
        id: id.into(),
        resident_id: R,
        from,
        until,
        reason: PauseReason::Hospital,
        note: None,
        created_by: "staff".into(),
        created_at: from,
    }
}

fn pir_and_button(settings: RuleSettings, at: DateTime<Utc>) -> Engine {
    let devices = vec![dev("m1", DeviceKind::Motion), dev("b1", DeviceKind::Button)];
    engine(config(settings, vec![home()], devices), at)
}

#[test]
fn a_hospital_stay_quiets_inactivity_and_it_resumes_with_a_fresh_timer() {
    let t0 = t("2026-05-11T08:00:00+09:00");
    let mut e = pir_and_button(inactivity_only(), t0);
    now(&mut e, motion(t0, "kitchen"));
    let (from, until) = (
        t("2026-05-11T09:00:00+09:00"),
        t("2026-05-11T15:00:00+09:00"),
    );
    e.set_pauses(R, vec![pause("p1", from, until)], t0);
    // The engine wakes at the pause's start, not by polling.
    assert_eq!(e.poll_timeout(), Some(from));
    assert!(run_until(&mut e, until - Duration::seconds(1)).is_empty());
    assert_eq!(e.status(R).and_then(|s| s.paused_until), Some(until));
    // Without the pause the alert would have opened at 11:00; after it, 3 h from its end.
    let got = run_until(&mut e, t("2026-05-11T20:00:00+09:00"));
    assert_eq!(
        got,
        [(
            "open inactivity high".to_owned(),
            until + Duration::hours(3)
        )]
    );
    assert_eq!(e.status(R).and_then(|s| s.paused_until), None);
}

#[test]
fn a_pause_resolves_what_it_makes_moot_but_never_quiets_sos_or_device_health() {
    let t0 = t("2026-05-11T08:00:00+09:00");
    let mut s = inactivity_only();
    s.offline.button_s = 3600;
    let mut e = pir_and_button(s, t0);
    now(&mut e, motion(t0, "kitchen"));
    let got = run_until(&mut e, t("2026-05-11T11:30:00+09:00"));
    assert_eq!(
        got,
        [
            (
                "open device_offline warning".to_owned(),
                t0 + Duration::hours(1)
            ),
            ("open inactivity high".to_owned(), t0 + Duration::hours(3)),
        ]
    );
    let at = t("2026-05-11T11:30:00+09:00");
    e.set_pauses(R, vec![pause("p1", at, at + Duration::days(3))], at);
    assert_eq!(
        labels(&mut e),
        ["resolve inactivity: rules paused (hospital)"]
    );
    let press = at + Duration::hours(1);
    now(&mut e, ev("b1", DeviceKind::Button, press, Reading::Sos));
    assert_eq!(
        labels(&mut e),
        [
            "open sos critical",
            "resolve device_offline: device reported again"
        ]
    );
    // Fixes far outside the safe zone raise nothing while paused.
    for n in 0..3 {
        now(
            &mut e,
            fix(press + Duration::minutes(n), 5_000.0, Some(10.0)),
        );
    }
    assert!(labels(&mut e).is_empty());
    let got = run_until(&mut e, press + Duration::hours(2));
    assert_eq!(
        got,
        [(
            "open device_offline warning".to_owned(),
            press + Duration::hours(1)
        )]
    );
}

#[test]
fn removing_a_running_pause_resumes_at_once_and_a_restart_after_its_end_counts_from_the_end(
) -> TestResult {
    let t0 = t("2026-05-11T08:00:00+09:00");
    let mut e = pir_and_button(inactivity_only(), t0);
    now(&mut e, motion(t0, "kitchen"));
    let p = pause("p1", t0, t0 + Duration::days(7));
    e.set_pauses(R, vec![p.clone()], t0);
    let lifted = t("2026-05-11T12:00:00+09:00");
    run_until(&mut e, lifted);
    e.set_pauses(R, Vec::new(), lifted);
    let got = run_until(&mut e, lifted + Duration::hours(4));
    assert_eq!(
        got,
        [(
            "open inactivity high".to_owned(),
            lifted + Duration::hours(3)
        )]
    );

    // The hub is down from inside a pause until after its end.
    let mut e = pir_and_button(inactivity_only(), t0);
    now(&mut e, motion(t0, "kitchen"));
    let until = t("2026-05-11T15:00:00+09:00");
    e.set_pauses(R, vec![pause("p2", t0, until)], t0);
    let stored = serde_json::to_string(e.state(R).ok_or("no state")?)?;
    let mut cfg = config(
        inactivity_only(),
        vec![home()],
        vec![dev("m1", DeviceKind::Motion), dev("b1", DeviceKind::Button)],
    );
    cfg.pauses = vec![pause("p2", t0, until)];
    let mut e = Engine::new();
    e.set_restart_grace(Duration::zero());
    let restart = t("2026-05-11T16:00:00+09:00");
    e.restore(cfg, Some(serde_json::from_str(&stored)?), restart);
    let got = run_until(&mut e, t("2026-05-11T20:00:00+09:00"));
    assert_eq!(
        got,
        [(
            "open inactivity high".to_owned(),
            until + Duration::hours(3)
        )]
    );
    Ok(())
}

#[test]
fn the_morning_check_waits_for_the_morning_after_a_pause() {
    let t0 = t("2026-05-10T20:00:00+09:00");
    let mut s = quiet_devices();
    s.inactivity.day_threshold_s = 48 * 3600;
    s.inactivity.night_threshold_s = 48 * 3600;
    let mut e = pir_and_button(s, t0);
    now(&mut e, motion(t0, "kitchen"));
    let until = t("2026-05-11T09:00:00+09:00");
    e.set_pauses(R, vec![pause("p1", t0, until)], t0);
    // 10:00 on the 11th: the pause ended at 09:00, which counts as seen.
    assert!(run_until(&mut e, t("2026-05-11T12:00:00+09:00")).is_empty());
    let got = run_until(&mut e, t("2026-05-12T10:30:00+09:00"));
    assert_eq!(
        got,
        [(
            "open no_morning_activity high".to_owned(),
            t("2026-05-12T10:00:00+09:00")
        )]
    );
}

// ---------------------------------------------------------------- away by the entrance door

fn entrance(id: &str) -> DeviceInfo {
    DeviceInfo {
        role: Some(DeviceRole::Entrance),
        ..door_dev(id)
    }
}

fn door_home(at: DateTime<Utc>) -> Engine {
    let devices = vec![entrance("front"), room_dev("liv", "living")];
    engine(config(inactivity_only(), vec![], devices), at)
}

#[test]
fn out_through_the_entrance_door_pauses_inactivity_and_too_long_away_opens_an_alert() {
    let t0 = t("2026-05-11T09:00:00+09:00");
    let mut e = door_home(t0);
    now(&mut e, motion_from("liv", t0));
    let left = t("2026-05-11T10:00:00+09:00");
    now(&mut e, door("front", left, true));
    now(&mut e, door("front", left + Duration::seconds(8), false));
    assert!(run_until(&mut e, left + Duration::minutes(10)).is_empty());
    assert_eq!(e.status(R).and_then(|s| s.out_since), Some(left));
    // No inactivity at 13:00 (3 h after the door); after 12 h out, away_too_long.
    let got = run_until(&mut e, t("2026-05-11T23:00:00+09:00"));
    assert_eq!(
        got,
        [(
            "open away_too_long high".to_owned(),
            left + Duration::hours(12)
        )]
    );
    let home_again = t("2026-05-11T23:10:00+09:00");
    now(&mut e, door("front", home_again, true));
    assert_eq!(
        labels(&mut e),
        ["resolve away_too_long: back through the entrance door"]
    );
    assert_eq!(e.status(R).and_then(|s| s.out_since), None);
}

#[test]
fn indoor_motion_after_the_door_means_still_home_and_ends_an_outing() {
    let t0 = t("2026-05-11T09:00:00+09:00");
    let mut e = door_home(t0);
    let door_at = t("2026-05-11T10:00:00+09:00");
    now(&mut e, door("front", door_at, true));
    // Motion within the passing window is the resident walking out past the hall.
    now(&mut e, motion_from("liv", door_at + Duration::seconds(10)));
    now(&mut e, motion_from("liv", door_at + Duration::minutes(5)));
    let got = run_until(&mut e, door_at + Duration::hours(4));
    assert_eq!(
        got,
        [(
            "open inactivity high".to_owned(),
            door_at + Duration::minutes(5) + Duration::hours(3)
        )]
    );

    let mut e = door_home(t0);
    now(&mut e, door("front", door_at, true));
    run_until(&mut e, door_at + Duration::minutes(11));
    assert_eq!(e.status(R).and_then(|s| s.out_since), Some(door_at));
    // Back by another way: motion indoors ends the outing, inactivity counts from it.
    let seen = t("2026-05-11T15:00:00+09:00");
    now(&mut e, motion_from("liv", seen));
    assert!(labels(&mut e).is_empty());
    let got = run_until(&mut e, seen + Duration::hours(4));
    assert_eq!(
        got,
        [("open inactivity high".to_owned(), seen + Duration::hours(3))]
    );
}

#[test]
fn an_unmarked_door_or_the_rule_turned_off_never_means_out() {
    let t0 = t("2026-05-11T09:00:00+09:00");
    let door_at = t("2026-05-11T10:00:00+09:00");
    let mut off = inactivity_only();
    off.away.enabled = false;
    for (settings, front) in [
        (inactivity_only(), door_dev("front")),
        (off, entrance("front")),
    ] {
        let devices = vec![front, room_dev("liv", "living")];
        let mut e = engine(config(settings, vec![], devices), t0);
        now(&mut e, door("front", door_at, true));
        let got = run_until(&mut e, door_at + Duration::hours(4));
        assert_eq!(
            got,
            [(
                "open inactivity high".to_owned(),
                door_at + Duration::hours(3)
            )]
        );
    }
}

// ---------------------------------------------------------------- the last activity sensor

#[test]
fn the_last_activity_sensor_going_offline_opens_inactivity_at_once_saying_so() {
    let t0 = t("2026-05-11T08:00:00+09:00");
    let mut s = inactivity_only();
    s.offline.motion_s = 3600;
    let devices = vec![room_dev("liv", "living"), room_dev("bed", "bedroom")];
    let mut e = engine(config(s, vec![], devices), t0);
    now(&mut e, motion_from("liv", t0));
    now(&mut e, motion_from("bed", t0 + Duration::minutes(30)));
    // One sensor silent: a warning only.
    let got = run_until(&mut e, t0 + Duration::minutes(61));
    assert_eq!(
        got,
        [(
            "open device_offline warning".to_owned(),
            t0 + Duration::hours(1)
        )]
    );
    let mut got = Vec::new();
    while let Some(due) = e
        .poll_timeout()
        .filter(|t| *t <= t0 + Duration::minutes(91))
    {
        e.handle_timeout(due);
        got.extend(drain(&mut e));
    }
    let opened: Vec<String> = got.iter().map(label).collect();
    assert_eq!(
        opened,
        ["open device_offline warning", "open inactivity high"],
        "the second and last sensor: inactivity at once, not 3 h after the last motion"
    );
    assert_eq!(details(&got[1])["reason"], NO_SENSOR_TEXT);
    assert_eq!(
        details(&got[1])["offline_sensors"],
        serde_json::json!(["liv", "bed"])
    );
    now(&mut e, motion_from("bed", t0 + Duration::hours(2)));
    assert_eq!(
        labels(&mut e),
        [
            "resolve inactivity: motion resumed (bedroom)",
            "resolve device_offline: device reported again"
        ]
    );
}

const NO_SENSOR_TEXT: &str = "no working activity sensor";

#[test]
fn an_alert_that_no_sensor_works_survives_a_restart() -> TestResult {
    let t0 = t("2026-05-11T08:00:00+09:00");
    let mut s = inactivity_only();
    s.offline.motion_s = 3600;
    let cfg = config(s, vec![], vec![room_dev("liv", "living")]);
    let mut e = engine(cfg.clone(), t0);
    now(&mut e, motion_from("liv", t0));
    run_until(&mut e, t0 + Duration::minutes(61));
    let stored = serde_json::to_string(e.state(R).ok_or("no state")?)?;
    let mut e = Engine::new();
    e.restore(
        cfg,
        Some(serde_json::from_str(&stored)?),
        t0 + Duration::minutes(70),
    );
    assert!(
        labels(&mut e).is_empty(),
        "neither resolved nor opened again"
    );
    assert_eq!(
        e.status(R).map(|s| s.open_conditions),
        Some(vec![AlertKind::Inactivity, AlertKind::DeviceOffline])
    );
    Ok(())
}

// ---------------------------------------------------------------- the learned rhythm

/// One living-room sensor; only the rhythm speaks (inactivity off, devices never offline).
fn rhythm_home(at: DateTime<Utc>) -> Engine {
    let mut s = quiet_devices();
    s.inactivity.enabled = false;
    s.inactivity.morning_deadline = None;
    engine(config(s, vec![], vec![room_dev("liv", "living")]), at)
}

/// Days of life from `start`: motion at 07:30 except on `late` days, and at 12:00 every day.
fn live_days(e: &mut Engine, start: DateTime<Utc>, days: i64, late: &[i64]) -> Vec<String> {
    let mut said = Vec::new();
    for d in 0..days {
        let day = start + Duration::days(d);
        let mut moments = vec![day + Duration::hours(5)];
        if !late.contains(&d) {
            moments.insert(0, day + Duration::minutes(30));
        }
        for m in moments {
            said.extend(run_until(e, m).into_iter().map(|(l, _)| l));
            now(e, motion_from("liv", m));
            said.extend(labels(e));
        }
    }
    said
}

#[test]
fn an_hour_she_is_nearly_always_up_in_passing_quietly_raises_a_rhythm_warning() {
    // Day 0 is 2026-04-13 07:00 in Tokyo; 28 days of history, two of them late risers.
    let start = t("2026-04-13T07:00:00+09:00");
    let mut e = rhythm_home(start - Duration::hours(1));
    let said = live_days(&mut e, start, 28, &[3, 9]);
    assert!(said.is_empty(), "{said:?}");
    let today = start + Duration::days(28);
    let mut got = Vec::new();
    while let Some(due) = e
        .poll_timeout()
        .filter(|t| *t <= today + Duration::minutes(90))
    {
        e.handle_timeout(due);
        got.extend(drain(&mut e));
    }
    let opened: Vec<String> = got.iter().map(label).collect();
    assert_eq!(opened, ["open rhythm warning"]);
    assert_eq!(
        details(&got[0])["reason"],
        "usually active between 07:00 and 08:00 — 26 of 28 days — nothing today"
    );
    now(&mut e, motion_from("liv", today + Duration::minutes(100)));
    assert_eq!(labels(&mut e), ["resolve rhythm: motion resumed (living)"]);
}

#[test]
fn the_rhythm_says_nothing_before_fourteen_days_of_data() {
    let start = t("2026-04-13T07:00:00+09:00");
    let mut e = rhythm_home(start - Duration::hours(1));
    let said = live_days(&mut e, start, 13, &[]);
    assert!(said.is_empty(), "{said:?}");
    let today = start + Duration::days(13);
    assert!(run_until(&mut e, today + Duration::hours(3)).is_empty());
}
