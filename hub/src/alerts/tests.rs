//! The alert core in virtual time: scenarios, and a model-based property test that
//! interleaves device events, staff commands, clock advances and restarts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use mimamori_protocol::contact::{Channel, Contact, Language};
use mimamori_protocol::zone::{Circle, ZoneShape};
use mimamori_protocol::{
    Alert, AlertKind, AlertState, DeviceEvent, DeviceKind, Reading, RuleSettings, Severity,
};
use mimamori_rules::{DeviceInfo, ResidentConfig, ResidentState, SafeZone};
use proptest::prelude::*;

use super::lifecycle::Progress;
use super::*;
use crate::notify::policy::NoticeEvent;

const RID: i64 = 1;

/// 2026-12-01 12:00 in Tokyo.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_094_000, 0).unwrap_or_default()
}

fn contact(id: i64, tier: u8, quiet: Option<&str>) -> (Contact, Option<String>) {
    let c = Contact {
        id,
        resident_id: RID,
        name: format!("contact {id}"),
        relation: if tier == 1 { "family" } else { "staff" }.into(),
        tier,
        channel: Channel::Webhook,
        address: format!("http://127.0.0.1:9/{id}"),
        kinds: Vec::new(),
        min_severity: Severity::Warning,
        quiet_hours: quiet.map(str::to_owned),
        language: Language::Ja,
        daily_summary_at: None,
        created_at: DateTime::UNIX_EPOCH,
    };
    (c, Some("secret".into()))
}

fn config() -> ResidentConfig {
    let zone = SafeZone::new(
        1,
        "home".into(),
        &ZoneShape::Circle(Circle {
            lat: 35.0,
            lon: 139.0,
            radius_m: 200.0,
        }),
    )
    .ok();
    ResidentConfig {
        resident_id: RID,
        timezone: chrono_tz::Asia::Tokyo,
        settings: RuleSettings::default(),
        zones: zone.into_iter().collect(),
        devices: vec![
            DeviceInfo {
                id: "btn".into(),
                kind: DeviceKind::Button,
                room: None,
                role: None,
            },
            DeviceInfo {
                id: "pir".into(),
                kind: DeviceKind::Motion,
                room: None,
                role: None,
            },
            DeviceInfo {
                id: "gps".into(),
                kind: DeviceKind::Gps,
                room: None,
                role: None,
            },
        ],
        pauses: Vec::new(),
    }
}

fn card(quiet: Option<&str>) -> Card {
    Card {
        name: "Tanaka Hana".into(),
        timezone: "Asia/Tokyo".into(),
        tz: chrono_tz::Asia::Tokyo,
        contacts: vec![
            contact(1, 1, quiet),
            contact(2, 2, None),
            contact(3, 3, None),
        ],
        check: None,
    }
}

/// A card whose inactivity, morning and dwell alerts first ask the resident for 120 s.
fn checking(card: Card) -> Card {
    Card {
        check: Some(CheckPlan {
            kinds: vec![
                AlertKind::Inactivity,
                AlertKind::NoMorningActivity,
                AlertKind::Dwell,
            ],
            timeout: Duration::seconds(120),
            devices: vec!["pir".into(), "btn".into()],
        }),
        ..card
    }
}

fn core_at(now: DateTime<Utc>, quiet: Option<&str>) -> Core {
    let mut core = Core::new(Ladder::default(), 1);
    core.configure(config(), card(quiet), now);
    core.take_effects();
    core
}

fn event(device: &str, reading: Reading, at: DateTime<Utc>) -> DeviceEvent {
    let device_kind = match device {
        "btn" => DeviceKind::Button,
        "pir" => DeviceKind::Motion,
        _ => DeviceKind::Gps,
    };
    DeviceEvent {
        device_id: device.into(),
        device_kind,
        resident_id: RID,
        ts: at,
        received_at: at,
        reading,
        battery: None,
    }
}

fn press(core: &mut Core, at: DateTime<Utc>) -> Effects {
    core.handle_event(&event("btn", Reading::Sos, at), at);
    core.take_effects()
}

fn staff(
    core: &mut Core,
    id: i64,
    action: StaffAction,
    at: DateTime<Utc>,
) -> Result<Alert, Refusal> {
    core.staff(
        StaffCommand {
            alert_id: id,
            action,
            actor: "nurse".into(),
            note: Some("checked".into()),
        },
        at,
    )
}

fn told(e: &Effects) -> Vec<(i64, NoticeEvent)> {
    e.outbox.iter().map(|o| (o.contact.id, o.event)).collect()
}

fn told_of(e: &Effects, alert_id: i64) -> Vec<(i64, NoticeEvent)> {
    e.outbox
        .iter()
        .filter(|o| o.alert_id == Some(alert_id))
        .map(|o| (o.contact.id, o.event))
        .collect()
}

fn secs(s: i64) -> Duration {
    Duration::seconds(s)
}

#[test]
fn a_press_after_a_staff_resolve_opens_a_new_alert() {
    let mut core = core_at(t0(), None);
    let first = press(&mut core, t0());
    let ids: Vec<i64> = first.alerts.keys().copied().collect();
    assert_eq!(ids, [1]);
    assert_eq!(told(&first), [(1, NoticeEvent::Opened)]);
    let resolved = staff(&mut core, 1, StaffAction::Resolve, t0() + secs(3));
    assert_eq!(resolved.map(|a| a.state), Ok(AlertState::Resolved));
    let e = core.take_effects();
    assert_eq!(told(&e), [(1, NoticeEvent::Resolved)]);
    assert_eq!(e.audit[0].action, "alert.resolved");
    let again = press(&mut core, t0() + secs(8));
    let alert = again.alerts.get(&2).map(|r| &r.alert);
    assert_eq!(
        alert.map(|a| (a.state, a.kind)),
        Some((AlertState::Open, AlertKind::Sos))
    );
    assert_eq!(told(&again), [(1, NoticeEvent::Opened)]);
}

#[test]
fn presses_every_40_s_after_a_resolve_raise_an_alert_and_then_join_it() {
    let mut core = core_at(t0(), None);
    press(&mut core, t0());
    let _ = staff(&mut core, 1, StaffAction::Resolve, t0() + secs(1));
    core.take_effects();
    for n in 1..=4 {
        let e = press(&mut core, t0() + secs(40 * n));
        let live: Vec<i64> = core.book().live().map(|(a, _, _)| a.id).collect();
        assert_eq!(live, [2], "press {n} is inside the one live alert");
        if n == 1 {
            assert_eq!(told(&e), [(1, NoticeEvent::Opened)]);
        } else {
            assert!(e.outbox.is_empty(), "a press that joins tells nobody twice");
            assert_eq!(e.history[0].note.as_deref(), Some("pressed again"));
        }
    }
}

#[test]
fn the_ladder_climbs_reminds_and_turns_unanswered_until_acknowledged() {
    let mut core = core_at(t0(), None);
    press(&mut core, t0());
    let mut seen = Vec::new();
    let mut now = t0();
    while let Some(t) = core.poll_timeout().filter(|t| *t <= t0() + secs(1000)) {
        // Other rules (a tracker's silence) have deadlines of their own in between.
        now = t;
        core.handle_timeout(now);
        let e = core.take_effects();
        let state = e.alerts.get(&1).map(|r| r.alert.state);
        if let Some(state) = state {
            seen.push(((now - t0()).num_seconds(), told_of(&e, 1), state));
        }
    }
    use NoticeEvent::{Escalated, Reminder};
    assert_eq!(
        seen,
        [
            (120, vec![(2, Escalated)], AlertState::Open),
            (300, vec![(1, Reminder), (2, Reminder)], AlertState::Open),
            (
                600,
                vec![(1, Reminder), (2, Reminder), (3, Escalated)],
                AlertState::Open
            ),
            (
                900,
                vec![(1, Reminder), (2, Reminder), (3, Reminder)],
                AlertState::Unanswered
            ),
        ]
    );
    let acked = staff(&mut core, 1, StaffAction::Acknowledge, now + secs(5));
    assert_eq!(acked.map(|a| a.state), Ok(AlertState::Acknowledged));
    let e = core.take_effects();
    assert_eq!(e.acknowledged, [(Severity::Critical, 905.0)]);
    assert_eq!(
        core.book().poll_timeout(),
        None,
        "an acknowledged alert climbs no further"
    );
    assert!(matches!(
        staff(&mut core, 1, StaffAction::Acknowledge, now + secs(6)),
        Err(Refusal::Forbidden(_))
    ));
}

#[test]
fn quiet_hours_hold_a_notice_until_they_end() {
    // 23:00 in Tokyo; the family's quiet hours are 22:00-07:00.
    let night = t0() + Duration::hours(11);
    let mut core = core_at(night, Some("22:00-07:00"));
    let mut ev = event("pir", Reading::Heartbeat, night);
    ev.battery = Some(5);
    core.handle_event(&ev, night);
    let e = core.take_effects();
    let battery = e
        .alerts
        .values()
        .find(|r| r.alert.kind == AlertKind::LowBattery)
        .map(|r| r.alert.id);
    assert!(battery.is_some());
    assert!(e.outbox.is_empty(), "held, not sent");
    assert_eq!(e.history.iter().filter(|h| h.action == "held").count(), 1);
    let morning = t0() + Duration::hours(19);
    assert_eq!(core.book().poll_timeout(), Some(morning), "07:00 Tokyo");
    core.handle_timeout(morning);
    let e = core.take_effects();
    assert_eq!(
        told_of(&e, battery.unwrap_or_default()),
        [(1, NoticeEvent::Opened)]
    );
}

#[test]
fn a_snooze_defers_the_ladder_and_critical_alerts_cannot_be_snoozed() {
    let mut core = core_at(t0(), None);
    press(&mut core, t0());
    assert!(matches!(
        staff(
            &mut core,
            1,
            StaffAction::Snooze(t0() + Duration::hours(1)),
            t0()
        ),
        Err(Refusal::Forbidden(_))
    ));
    // Geofence exit by day is high: its second step is due at 600 s.
    for (n, lat) in [35.02, 35.03].into_iter().enumerate() {
        let at = t0() + secs(10 + n as i64);
        let fix = Reading::Position {
            lat,
            lon: 139.0,
            accuracy_m: Some(10.0),
        };
        core.handle_event(&event("gps", fix, at), at);
    }
    let id = core
        .book()
        .live()
        .find(|(a, _, _)| a.kind == AlertKind::GeofenceExit)
        .map(|(a, _, _)| a.id)
        .unwrap_or_default();
    let until = t0() + Duration::minutes(30);
    assert!(staff(&mut core, id, StaffAction::Snooze(until), t0() + secs(20)).is_ok());
    core.take_effects();
    core.handle_timeout(t0() + secs(700));
    assert!(
        !core
            .take_effects()
            .outbox
            .iter()
            .any(|o| o.alert_id == Some(id)),
        "nothing climbs while snoozed"
    );
    core.handle_timeout(until);
    let e = core.take_effects();
    assert!(told(&e).contains(&(2, NoticeEvent::Escalated)));
}

#[test]
fn an_engine_resolution_tells_everyone_told_and_staff_cannot_act_on_it_after() {
    let mut core = core_at(t0(), None);
    let mut ev = event("pir", Reading::Heartbeat, t0());
    ev.battery = Some(5);
    core.handle_event(&ev, t0());
    core.take_effects();
    ev.battery = Some(90);
    core.handle_event(&ev, t0() + secs(60));
    let e = core.take_effects();
    let r = e
        .alerts
        .values()
        .next()
        .map(|r| (r.alert.state, r.alert.resolution.clone()));
    assert_eq!(
        r,
        Some((
            AlertState::Resolved,
            Some("condition_cleared: battery at 90%".into())
        ))
    );
    assert_eq!(told(&e), [(1, NoticeEvent::Resolved)]);
    assert_eq!(
        staff(&mut core, 1, StaffAction::Acknowledge, t0() + secs(61)),
        Err(Refusal::NotLive)
    );
}

#[test]
fn a_contact_who_confirms_gets_no_more_reminders_and_the_ladder_goes_on() {
    let mut core = core_at(t0(), None);
    press(&mut core, t0());
    assert!(
        matches!(
            staff(
                &mut core,
                1,
                StaffAction::Confirm { contact_id: 2 },
                t0() + secs(5)
            ),
            Err(Refusal::Forbidden(_))
        ),
        "the supervisor was not told yet"
    );
    let confirmed = staff(
        &mut core,
        1,
        StaffAction::Confirm { contact_id: 1 },
        t0() + secs(5),
    );
    assert_eq!(
        confirmed.map(|a| a.state),
        Ok(AlertState::Open),
        "not an acknowledgement"
    );
    let e = core.take_effects();
    assert_eq!(e.history[0].action, "confirmed");
    core.handle_timeout(t0() + secs(120));
    assert_eq!(
        told_of(&core.take_effects(), 1),
        [(2, NoticeEvent::Escalated)]
    );
    core.handle_timeout(t0() + secs(300));
    assert_eq!(
        told_of(&core.take_effects(), 1),
        [(2, NoticeEvent::Reminder)]
    );
}

#[test]
fn an_inactivity_alert_asks_the_resident_first_and_their_answer_closes_it() {
    let mut cfg = config();
    let month = 30 * 24 * 3600;
    cfg.settings.offline.motion_s = month;
    cfg.settings.offline.gps_s = month;
    cfg.settings.offline.button_s = month;
    let mut core = Core::new(Ladder::default(), 1);
    core.configure(cfg, checking(card(None)), t0());
    let still = Reading::Motion {
        motion: true,
        room: None,
    };
    core.handle_event(&event("pir", still, t0()), t0());
    core.take_effects();
    let due = t0() + Duration::hours(3);
    core.handle_timeout(due);
    let e = core.take_effects();
    let asked = e.alerts.values().next().map(|r| r.alert.clone());
    assert_eq!(
        asked.as_ref().map(|a| (a.kind, a.state)),
        Some((AlertKind::Inactivity, AlertState::Pending))
    );
    assert!(
        e.outbox.is_empty(),
        "nobody told while the resident is asked"
    );
    let id = asked.map(|a| a.id).unwrap_or_default();
    let topics: Vec<&str> = e.commands.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["watch/v1/pir/cmd", "watch/v1/btn/cmd"]);
    let body: serde_json::Value = serde_json::from_slice(&e.commands[0].1).unwrap_or_default();
    assert_eq!(
        body,
        serde_json::json!({"ask": "are_you_ok", "alert_id": id})
    );

    let answer = due + secs(30);
    core.handle_event(&event("btn", Reading::Ok, answer), answer);
    let e = core.take_effects();
    let closed = e.alerts.get(&id).map(|r| r.alert.clone());
    assert_eq!(
        closed.map(|a| (a.state, a.resolution, a.resolved_by)),
        Some((
            AlertState::Resolved,
            Some("resident_confirmed".to_owned()),
            Some("resident".to_owned())
        ))
    );
    assert!(e.outbox.is_empty());

    // Silent again, counted from the answer; this time nobody answers.
    let due = answer + Duration::hours(3);
    core.handle_timeout(due);
    core.take_effects();
    core.handle_timeout(due + secs(119));
    assert!(core.take_effects().outbox.is_empty());
    core.handle_timeout(due + secs(120));
    let e = core.take_effects();
    let opened = e.alerts.values().next().map(|r| r.alert.state);
    assert_eq!(opened, Some(AlertState::Open));
    assert_eq!(told(&e), [(1, NoticeEvent::Opened)]);

    // SOS is never held back.
    let e = press(&mut core, due + secs(200));
    let sos = e.alerts.values().find(|r| r.alert.kind == AlertKind::Sos);
    assert_eq!(sos.map(|r| r.alert.state), Some(AlertState::Open));
}

// ---- model-based property test ----

/// What a store would hold after each commit.
#[derive(Default, Clone)]
struct Committed {
    alerts: BTreeMap<i64, AlertRecord>,
    states: BTreeMap<i64, ResidentState>,
    outbox: BTreeSet<String>,
}

impl Committed {
    fn apply(&mut self, core: &mut Core, e: Effects) -> Result<(), TestCaseError> {
        for o in &e.outbox {
            prop_assert!(
                self.outbox.insert(o.key.clone()),
                "notification {} decided twice",
                o.key
            );
        }
        for (id, r) in e.alerts {
            self.alerts.insert(id, r);
        }
        for id in core.take_dirty() {
            if let Some(s) = core.rule_state(id) {
                self.states.insert(id, s.clone());
            }
        }
        let mut keys = BTreeSet::new();
        for r in self.alerts.values().filter(|r| r.alert.state.is_live()) {
            prop_assert!(
                keys.insert((r.alert.kind, r.subject.clone())),
                "two live alerts for {:?}",
                (r.alert.kind, &r.subject)
            );
        }
        Ok(())
    }

    fn reload(&self, now: DateTime<Utc>) -> Core {
        let next = self.alerts.keys().max().map_or(1, |m| m + 1);
        let mut core = Core::new(Ladder::default(), next);
        core.restore_resident(
            config(),
            checking(card(Some("22:00-07:00"))),
            self.states.get(&RID).cloned(),
            now,
        );
        for r in self.alerts.values().filter(|r| r.alert.state.is_live()) {
            let progress = r
                .ladder
                .as_deref()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_else(|| Progress::resumed(&r.alert));
            core.restore_alert(r.alert.clone(), r.subject.clone(), progress);
        }
        core
    }
}

#[derive(Debug, Clone)]
enum Op {
    Press,
    Motion,
    Fix {
        outside: bool,
    },
    Battery(u8),
    Advance(i64),
    Acknowledge(usize),
    Resolve(usize),
    Snooze(usize),
    Restart,
    /// The resident answers "I'm OK".
    ResidentOk,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Press),
        2 => Just(Op::Motion),
        2 => any::<bool>().prop_map(|outside| Op::Fix { outside }),
        1 => (0u8..100).prop_map(Op::Battery),
        4 => (1i64..4000).prop_map(Op::Advance),
        2 => (0usize..4).prop_map(Op::Acknowledge),
        2 => (0usize..4).prop_map(Op::Resolve),
        1 => (0usize..4).prop_map(Op::Snooze),
        1 => Just(Op::Restart),
        1 => Just(Op::ResidentOk),
    ]
}

/// The rules state as a restart must reproduce it. Restoring deliberately restarts each
/// healthy device's silence count at the restore instant (the hub's own downtime is no
/// evidence against a device), so those instants are left out.
fn comparable_state(core: &Core) -> serde_json::Value {
    let mut v = serde_json::to_value(core.rule_state(RID)).unwrap_or_default();
    if let Some(devices) = v["devices"].as_object_mut() {
        for d in devices.values_mut() {
            if let Some(d) = d.as_object_mut() {
                d.remove("watch_from");
            }
        }
    }
    v
}

fn live_snapshot(core: &Core) -> Vec<(Alert, String, Progress)> {
    core.book()
        .live()
        .map(|(a, s, p)| (a.clone(), s.to_owned(), p.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_alarm_is_lost_or_doubled(ops in prop::collection::vec(op(), 1..60)) {
        let mut now = t0();
        let mut db = Committed::default();
        let mut core = db.reload(now);
        core.configure(config(), checking(card(Some("22:00-07:00"))), now);
        let e = core.take_effects();
        db.apply(&mut core, e)?;
        let mut acknowledged: BTreeMap<i64, DateTime<Utc>> = BTreeMap::new();
        for op in ops {
            now += secs(1);
            let nth_live = |core: &Core, n: usize| {
                let live: Vec<i64> = core.book().live().map(|(a, _, _)| a.id).collect();
                (!live.is_empty()).then(|| live[n % live.len()])
            };
            match op {
                Op::Press => core.handle_event(&event("btn", Reading::Sos, now), now),
                Op::Motion => core.handle_event(
                    &event("pir", Reading::Motion { motion: true, room: None }, now),
                    now,
                ),
                Op::Fix { outside } => {
                    let lat = if outside { 35.02 } else { 35.0 };
                    let fix = Reading::Position { lat, lon: 139.0, accuracy_m: Some(10.0) };
                    core.handle_event(&event("gps", fix, now), now);
                }
                Op::Battery(b) => {
                    let mut ev = event("pir", Reading::Heartbeat, now);
                    ev.battery = Some(b);
                    core.handle_event(&ev, now);
                }
                Op::Advance(s) => {
                    now += secs(s);
                    core.handle_timeout(now);
                }
                Op::Acknowledge(n) => {
                    if let Some(id) = nth_live(&core, n) {
                        if staff(&mut core, id, StaffAction::Acknowledge, now).is_ok() {
                            acknowledged.insert(id, now);
                        }
                    }
                }
                Op::Resolve(n) => {
                    if let Some(id) = nth_live(&core, n) {
                        prop_assert!(staff(&mut core, id, StaffAction::Resolve, now).is_ok());
                    }
                }
                Op::Snooze(n) => {
                    if let Some(id) = nth_live(&core, n) {
                        let _ = staff(&mut core, id, StaffAction::Snooze(now + Duration::minutes(20)), now);
                    }
                }
                Op::ResidentOk => core.handle_event(&event("pir", Reading::Ok, now), now),
                Op::Restart => {
                    // Everything decided was committed; a new core from the store must
                    // hold exactly what the old one held.
                    let before = live_snapshot(&core);
                    let state_before = comparable_state(&core);
                    core = db.reload(now);
                    prop_assert_eq!(live_snapshot(&core), before);
                    prop_assert_eq!(comparable_state(&core), state_before);
                    core.handle_timeout(now);
                }
            }
            let e = core.take_effects();
            for r in e.alerts.values() {
                prop_assert!(
                    !(r.alert.state == AlertState::Pending && r.alert.kind == AlertKind::Sos),
                    "an SOS waited for the resident"
                );
            }
            for o in &e.outbox {
                let state = o.alert_id.and_then(|id| e.alerts.get(&id)).map(|r| r.alert.state);
                prop_assert!(state != Some(AlertState::Pending), "someone was told while the resident was asked");
                if let (Some(id), NoticeEvent::Escalated | NoticeEvent::Reminder) = (o.alert_id, o.event) {
                    prop_assert!(!acknowledged.contains_key(&id), "alert {} climbed after its acknowledgement", id);
                }
            }
            for h in &e.history {
                if matches!(h.action, "escalated" | "reminded" | "unanswered") {
                    prop_assert!(!acknowledged.contains_key(&h.alert_id), "alert {} climbed after its acknowledgement", h.alert_id);
                }
            }
            db.apply(&mut core, e)?;
            if matches!(op, Op::Press) {
                prop_assert!(
                    db.alerts.values().any(|r| r.alert.kind == AlertKind::Sos
                        && r.alert.state.is_live()
                        && r.alert.opened_at <= now),
                    "a press is inside a live SOS alert"
                );
            }
        }
    }
}
