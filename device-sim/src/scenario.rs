//! Scenarios: scripted situations that make the hub raise one alert on purpose (or, for
//! `gps-jitter`, must not), each with the sentences the simulator prints as it plays them and
//! the alerts the hub should have raised at the end.
//!
//! A scenario is one or more acts. An act is a timeline; when it ends, the player keeps the
//! devices alive with heartbeats until the hub has raised the alerts the act waits for, then
//! plays the next act (the carer who comes, the walk back home). Waiting on the hub rather than
//! on a guessed time keeps a scenario correct on a slow machine.

use std::collections::BTreeMap;

use mimamori_protocol::{AlertKind, Severity};
use rand::Rng;
use serde_json::{json, Value};

use crate::expect::Resolution;
use crate::geo::Xy;
use crate::home::{HomeGeo, Role, Room};
use crate::life::{self, Doing, Level, Plan, Track, TrackPoint, DAY, HOUR, MINUTE};
use crate::rules::{self, Stillness};
use crate::sensors::{self, Battery, Household};
use crate::timeline::{Emission, Msg, Timeline};

/// The scenarios `device-sim run --scenario` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ScenarioName {
    /// Motion stops in the bathroom: inactivity.
    Fall,
    /// Stays in bed past the morning deadline: no_morning_activity (plays in real time).
    NoMorning,
    /// Walks out of the safe zone at night and keeps going, then is brought back: geofence_exit.
    Wander,
    /// Stands at the zone edge with poor GPS accuracy: must raise nothing.
    GpsJitter,
    /// A sensor's battery runs low, then flat: low_battery, then device_offline.
    BatteryDies,
    /// Presses the SOS pendant: sos.
    Sos,
    /// The home gateway loses power: device_offline for the gateway.
    OfflineGateway,
}

impl ScenarioName {
    pub const ALL: [ScenarioName; 7] = [
        ScenarioName::Fall,
        ScenarioName::NoMorning,
        ScenarioName::Wander,
        ScenarioName::GpsJitter,
        ScenarioName::BatteryDies,
        ScenarioName::Sos,
        ScenarioName::OfflineGateway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Fall => "fall",
            ScenarioName::NoMorning => "no-morning",
            ScenarioName::Wander => "wander",
            ScenarioName::GpsJitter => "gps-jitter",
            ScenarioName::BatteryDies => "battery-dies",
            ScenarioName::Sos => "sos",
            ScenarioName::OfflineGateway => "offline-gateway",
        }
    }
}

/// An alert the hub should raise, about a device when `role` is set, with its severity and,
/// where the story decides it, how it ends. A live run does not check its moment: the hub's
/// clock is real time and the story's is compressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub kind: AlertKind,
    pub role: Option<Role>,
    pub severity: Severity,
    pub resolution: Option<Resolution>,
}

/// One stretch of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Act {
    pub timeline: Timeline,
    /// Alerts to wait for (with heartbeats going on) before the next act.
    pub wait_for: Vec<AlertKind>,
    /// Devices that are dead or off when the act ends: they send no heartbeats while waiting.
    pub silent: Vec<Role>,
}

/// A scenario, ready to provision and play.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub name: ScenarioName,
    /// The time compression this scenario plays at (no-morning always plays in real time).
    pub speed: f64,
    /// Partial rule settings for the resident while the scenario plays.
    pub rules: Value,
    pub roles: Vec<Role>,
    pub acts: Vec<Act>,
    pub expect: Vec<Expected>,
}

/// What a scenario needs to know about the world.
#[derive(Debug, Clone, Copy)]
pub struct Setting<'a> {
    pub geo: &'a HomeGeo,
    pub speed: f64,
    /// The resident's real local time of day now, in seconds after midnight: times of day in
    /// the hub's settings cannot be compressed, so scenarios that need one are set against it.
    pub now_tod: f64,
}

/// Builds the script of scenario `name`.
pub fn script(rng: &mut impl Rng, name: ScenarioName, w: Setting) -> Script {
    let roles = Role::home_set(true);
    let day_rules = rules::scaled(w.speed, Stillness::Day);
    let (speed, rules, acts, expect) = match name {
        ScenarioName::Fall => (
            w.speed,
            day_rules,
            fall(rng, w.geo, &roles),
            // The carer's door or the first movement, whichever the hub hears first.
            vec![exp(
                AlertKind::Inactivity,
                Severity::High,
                Some(Resolution::resolved()),
            )],
        ),
        ScenarioName::NoMorning => {
            let (rules, acts) = no_morning(rng, w, &roles);
            let getting_up = Some(Resolution::because("motion resumed"));
            let expect = vec![exp(
                AlertKind::NoMorningActivity,
                Severity::High,
                getting_up,
            )];
            (1.0, rules, acts, expect)
        }
        ScenarioName::Wander => {
            let mut rules = day_rules;
            // The hub's night window is on its real clock: put "now" inside it, as at night.
            rules["geofence"] = json!({
                "night_starts": hhmm(w.now_tod - HOUR),
                "night_ends": hhmm(w.now_tod + 3.0 * HOUR),
            });
            // The end is not checked: a client that stamps whole seconds may send too few
            // distinct fixes on the compressed walk home to confirm the return.
            (
                w.speed,
                rules,
                wander(rng, w, &roles),
                vec![exp(AlertKind::GeofenceExit, Severity::Critical, None)],
            )
        }
        ScenarioName::GpsJitter => (w.speed, day_rules, gps_jitter(rng, w.geo, &roles), vec![]),
        ScenarioName::BatteryDies => {
            let bathroom = Some(Role::Motion(Room::Bathroom));
            // Both stay open while the story lasts; the real-time settings restored after
            // it may clear the offline one, so neither end is checked.
            let expect = vec![
                Expected {
                    kind: AlertKind::LowBattery,
                    role: bathroom,
                    severity: Severity::Warning,
                    resolution: None,
                },
                Expected {
                    kind: AlertKind::DeviceOffline,
                    role: bathroom,
                    severity: Severity::Warning,
                    resolution: None,
                },
            ];
            (w.speed, day_rules, battery_dies(rng, w.geo, &roles), expect)
        }
        ScenarioName::Sos => (
            w.speed,
            day_rules,
            sos(rng, w.geo, &roles),
            // Staff resolve an SOS; nobody does during the run.
            vec![exp(
                AlertKind::Sos,
                Severity::Critical,
                Some(Resolution::open()),
            )],
        ),
        ScenarioName::OfflineGateway => {
            let expect = vec![Expected {
                kind: AlertKind::DeviceOffline,
                role: Some(Role::Gateway),
                severity: Severity::Warning,
                resolution: Some(Resolution::because("device reported again")),
            }];
            (
                w.speed,
                day_rules,
                offline_gateway(rng, w.geo, &roles),
                expect,
            )
        }
    };
    Script {
        name,
        speed,
        rules,
        roles,
        acts,
        expect,
    }
}

fn exp(kind: AlertKind, severity: Severity, resolution: Option<Resolution>) -> Expected {
    Expected {
        kind,
        role: None,
        severity,
        resolution,
    }
}

/// "HH:MM" of a time of day in seconds (wrapping around midnight).
pub fn hhmm(tod: f64) -> String {
    let m = (tod / MINUTE).floor().rem_euclid(24.0 * 60.0) as u32;
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// Renders a plan into a timeline that lasts until `end`.
fn act(rng: &mut impl Rng, house: &Household, plan: &Plan, end: f64) -> Timeline {
    let mut t = Timeline {
        emissions: sensors::render(rng, plan, house, end),
        end,
        ..Timeline::default()
    };
    for (at, text) in &plan.notes {
        t.note(*at, text.clone());
    }
    t
}

fn room(r: Room, level: Level) -> Doing {
    Doing::In(r, level)
}

fn fall(rng: &mut impl Rng, geo: &HomeGeo, roles: &[Role]) -> Vec<Act> {
    let house = Household::new(rng, geo, roles);
    let mut p = Plan::default();
    p.note(0.0, "makes tea in the kitchen");
    let t = p.then(0.0, 20.0 * MINUTE, room(Room::Kitchen, Level::Active));
    p.note(t, "sits down in the living room");
    let t = p.then(0.0, 25.0 * MINUTE, room(Room::LivingRoom, Level::Resting));
    p.note(t, "goes to the bathroom");
    let fell = p.then(0.0, 3.0 * MINUTE, room(Room::Bathroom, Level::Active));
    let end = p.then(
        0.0,
        3.0 * HOUR + 10.0 * MINUTE,
        room(Room::Bathroom, Level::Still),
    );
    let mut one = act(rng, &house, &p, end);
    one.note(
        fell,
        "falls in the bathroom and cannot get up: the PIR sees no more movement",
    );
    one.expect(
        fell + 3.0 * HOUR,
        "3 h without movement: the hub should raise inactivity",
        AlertKind::Inactivity,
    );
    let mut back = Plan::default();
    back.note(
        0.0,
        "a carer arrives with the deposited key and finds her; motion resumes, the alert resolves",
    );
    back.then(0.0, 20.0, room(Room::LivingRoom, Level::Still));
    let end = back.then(0.0, 10.0 * MINUTE, room(Room::Bathroom, Level::Active));
    let mut two = act(rng, &house, &back, end);
    two.emit(0.0, Role::EntranceDoor, Msg::Door { open: true });
    two.emit(8.0, Role::EntranceDoor, Msg::Door { open: false });
    two.sort();
    vec![
        Act {
            timeline: one,
            wait_for: vec![AlertKind::Inactivity],
            silent: vec![],
        },
        Act {
            timeline: two,
            wait_for: vec![],
            silent: vec![],
        },
    ]
}

/// The resident's morning starts at the next minute and the deadline is a minute later, so
/// the check comes within two minutes; the resident lies still in bed until the hub has spoken.
fn no_morning(rng: &mut impl Rng, w: Setting, roles: &[Role]) -> (Value, Vec<Act>) {
    let into_minute = w.now_tod.rem_euclid(MINUTE);
    // Less than 15 s left: provisioning might not finish before the morning starts.
    let day_starts = w.now_tod - into_minute
        + if MINUTE - into_minute < 15.0 {
            2.0
        } else {
            1.0
        } * MINUTE;
    let deadline = day_starts + MINUTE;
    let mut rules = rules::scaled(1.0, Stillness::Night);
    rules["inactivity"]["day_starts"] = json!(hhmm(day_starts));
    rules["inactivity"]["night_starts"] = json!(hhmm(day_starts + 12.0 * HOUR));
    rules["inactivity"]["morning_deadline"] = json!(hhmm(deadline));
    let house = Household::new(rng, w.geo, roles);
    let mut p = Plan::default();
    let until = deadline - w.now_tod + 2.0;
    p.then(0.0, until, room(Room::Bedroom, Level::Still));
    let mut one = act(rng, &house, &p, until);
    one.note(
        0.0,
        format!(
        "lies in bed, unwell, and does not move; her morning starts at {} and the deadline is {}",
        hhmm(day_starts),
        hhmm(deadline)
    ),
    );
    one.expect(
        deadline - w.now_tod,
        format!(
            "{}: no activity since {}: the hub should raise no_morning_activity",
            hhmm(deadline),
            hhmm(day_starts)
        ),
        AlertKind::NoMorningActivity,
    );
    let mut up = Plan::default();
    up.note(
        0.0,
        "gets up at last; motion in the bedroom resolves the alert",
    );
    let end = up.then(0.0, 10.0, room(Room::Bedroom, Level::Active));
    let two = act(rng, &house, &up, end);
    (
        rules,
        vec![
            Act {
                timeline: one,
                wait_for: vec![AlertKind::NoMorningActivity],
                silent: vec![],
            },
            Act {
                timeline: two,
                wait_for: vec![],
                silent: vec![],
            },
        ],
    )
}

/// When the walk first lies more than `r` from home.
fn crossing(track: &Track, r: f64, outward: bool) -> Option<f64> {
    track.points.windows(2).find_map(|w| {
        let (a, b) = (w[0].p.norm() - r, w[1].p.norm() - r);
        let crosses = if outward {
            a <= 0.0 && b > 0.0
        } else {
            a > 0.0 && b <= 0.0
        };
        // Linear interpolation along the leg is close enough for a sentence.
        crosses.then(|| w[0].t + (w[1].t - w[0].t) * (a / (a - b)).clamp(0.0, 1.0))
    })
}

/// How long the wanderer walks away: 25 minutes, and at least 3 s of real time. OwnTracks and
/// Traccar Client stamp fixes in whole seconds and the hub counts only the first fix of each
/// second, so a walk compressed below that would give fewer than the two confirming fixes
/// (at 1800x, 25 minutes is 0.8 s), and the inactivity rule would rightly fire first.
fn wander_duration(speed: f64) -> f64 {
    (25.0 * MINUTE).max(3.0 * speed)
}

fn wander(rng: &mut impl Rng, w: Setting, roles: &[Role]) -> Vec<Act> {
    let geo = w.geo;
    let house = Household::new(rng, geo, roles);
    let mut p = Plan::default();
    p.note(0.0, "gets up in the middle of the night, confused");
    p.then(0.0, 3.0 * MINUTE, room(Room::Bedroom, Level::Active));
    let leave = p.then(0.0, 2.0 * MINUTE, room(Room::LivingRoom, Level::Active));
    let speed = life::walking_speed(rng);
    let out = life::wandering_walk(
        rng,
        Xy::default(),
        geo.street_bearing,
        leave,
        wander_duration(w.speed),
        speed,
    );
    let end = out.end_t();
    let far = out.end_p();
    let cross = crossing(&out, geo.safe_radius_m, true).unwrap_or(leave);
    p.note(
        leave,
        "opens the entrance door and walks off into the night",
    );
    p.then(0.0, end - leave, Doing::Out(out));
    let mut one = act(rng, &house, &p, end);
    one.expect(
        cross,
        format!("leaves the safe zone ({:.0} m) and keeps going: after 2 fixes outside the hub should raise geofence_exit (critical: night)", geo.safe_radius_m),
        AlertKind::GeofenceExit,
    );
    one.note(
        end,
        format!("is {:.0} m from home and still walking", far.norm()),
    );
    let back_walk = life::street_walk(rng, far, Xy::default(), geo.street_bearing, 0.0, 1.0);
    let home_at = back_walk.end_t();
    let inside = crossing(&back_walk, geo.safe_radius_m - 60.0, false).unwrap_or(home_at);
    let mut back = Plan::default();
    back.note(
        0.0,
        "a neighbour volunteer recognises him and walks him home",
    );
    back.then(0.0, home_at, Doing::Out(back_walk));
    back.note(
        inside,
        "well inside the safe zone again: the alert should resolve",
    );
    let end = back.then(0.0, 10.0 * MINUTE, room(Room::LivingRoom, Level::Active));
    back.note(home_at, "is home");
    let two = act(rng, &house, &back, end);
    vec![
        Act {
            timeline: one,
            wait_for: vec![AlertKind::GeofenceExit],
            silent: vec![],
        },
        Act {
            timeline: two,
            wait_for: vec![],
            silent: vec![],
        },
    ]
}

/// Stands 8 m inside the edge for 40 min. Fixes there have 25–45 m accuracy and lie within it,
/// so none is outside by more than its accuracy; every fourth is a cell-tower fix hundreds of
/// metres off with an accuracy to match, which the hub ignores (worse than max_accuracy_m).
fn gps_jitter(rng: &mut impl Rng, geo: &HomeGeo, roles: &[Role]) -> Vec<Act> {
    let house = Household::new(rng, geo, roles);
    let mut p = Plan::default();
    let leave = p.then(0.0, 10.0 * MINUTE, room(Room::LivingRoom, Level::Resting));
    let spot = Xy::polar(
        geo.safe_radius_m - 8.0,
        rng.gen_range(0.0..std::f64::consts::TAU),
    );
    let speed = life::walking_speed(rng);
    let there = life::street_walk(rng, Xy::default(), spot, geo.street_bearing, leave, speed);
    let stand_from = there.end_t();
    let stand_to = stand_from + 40.0 * MINUTE;
    let back = life::street_walk(
        rng,
        spot,
        Xy::default(),
        geo.street_bearing,
        stand_to,
        speed,
    );
    let home_at = back.end_t();
    p.note(leave, "goes out to meet a friend at the corner");
    p.then(0.0, stand_from - leave, Doing::Out(there));
    let standing = Track {
        points: vec![
            TrackPoint {
                t: stand_from,
                p: spot,
                urban: 1.0,
            },
            TrackPoint {
                t: stand_to,
                p: spot,
                urban: 1.0,
            },
        ],
    };
    p.then(0.0, stand_to - stand_from, Doing::Out(standing));
    p.then(0.0, home_at - stand_to, Doing::Out(back));
    let end = p.then(0.0, 10.0 * MINUTE, room(Room::LivingRoom, Level::Resting));
    p.note(home_at, "is back home");
    let mut one = act(rng, &house, &p, end);
    one.emissions
        .retain(|e| !(e.role == Role::Tracker && (stand_from..stand_to).contains(&e.at)));
    let mut t = stand_from;
    let mut n = 0;
    while t < stand_to {
        let (accuracy_m, err) = if n % 4 == 3 {
            let a = rng.gen_range(300.0..1200.0);
            (a, a * rng.gen_range(0.3..1.0))
        } else {
            let a: f64 = rng.gen_range(25.0..45.0);
            (a, a * rng.gen_range(0.0..1.0f64).sqrt())
        };
        let q = Xy::polar(err, rng.gen_range(0.0..std::f64::consts::TAU));
        let ll = crate::geo::offset(geo.home, Xy::new(spot.x + q.x, spot.y + q.y));
        one.emit(
            t,
            Role::Tracker,
            Msg::Gps {
                lat: ll.lat,
                lon: ll.lon,
                accuracy_m,
                battery: Some(80),
            },
        );
        t += sensors::TRACKER_MOVING_FIX_S;
        n += 1;
    }
    one.note(
        stand_from,
        format!("stands 8 m inside the safe zone's edge ({:.0} m) for 40 min; fixes jitter across the edge with 25-45 m accuracy and cell-tower fixes land hundreds of metres out: the hub must NOT raise geofence_exit", geo.safe_radius_m),
    );
    one.sort();
    vec![Act {
        timeline: one,
        wait_for: vec![],
        silent: vec![],
    }]
}

fn battery_dies(rng: &mut impl Rng, geo: &HomeGeo, roles: &[Role]) -> Vec<Act> {
    let sensor = Role::Motion(Room::Bathroom);
    let mut house = Household::new(rng, geo, roles);
    house.batteries.insert(sensor, Battery::dying());
    let start_tod = 9.0 * HOUR;
    let mut plan = life::daily_life(rng, geo, start_tod, 5.0 * HOUR);
    plan.notes.insert(
        0,
        (
            0.0,
            "an ordinary morning; the bathroom sensor's battery is at its end".into(),
        ),
    );
    let span = 5.0 * HOUR;
    let mut one = act(rng, &house, &plan, span);
    let beats: Vec<(f64, u8)> = one
        .emissions
        .iter()
        .filter(|e| e.role == sensor)
        .filter_map(|e| match e.msg {
            Msg::Heartbeat { battery: Some(b) } => Some((e.at, b)),
            _ => None,
        })
        .collect();
    if let Some((at, b)) = beats.iter().find(|(_, b)| *b < 15) {
        one.expect(
            *at,
            format!(
                "the bathroom sensor reports {b} %: below 15 %, the hub should raise low_battery"
            ),
            AlertKind::LowBattery,
        );
    }
    let last = beats.last().map_or(0.0, |(at, _)| *at);
    let died = last + sensors::SENSOR_HEARTBEAT_S;
    one.note(
        died,
        "the bathroom sensor's battery is flat: it falls silent",
    );
    one.expect(
        died + HOUR,
        "60 min without a word from it: the hub should raise device_offline",
        AlertKind::DeviceOffline,
    );
    one.end = (died + HOUR + 5.0 * MINUTE).min(span);
    one.emissions.retain(|e| e.at < one.end);
    one.notes.retain(|n| n.at < one.end);
    vec![Act {
        timeline: one,
        wait_for: vec![AlertKind::LowBattery, AlertKind::DeviceOffline],
        silent: vec![sensor],
    }]
}

fn sos(rng: &mut impl Rng, geo: &HomeGeo, roles: &[Role]) -> Vec<Act> {
    let house = Household::new(rng, geo, roles);
    let mut p = Plan::default();
    p.note(0.0, "watches TV in the living room");
    let press = p.then(0.0, 25.0 * MINUTE, room(Room::LivingRoom, Level::Resting));
    let end = p.then(0.0, 15.0 * MINUTE, room(Room::LivingRoom, Level::Active));
    let mut one = act(rng, &house, &p, end);
    one.emit(press, Role::Button, Msg::Sos);
    one.emit(press + 15.0, Role::Button, Msg::Sos);
    one.expect(press, "feels chest pain and presses the SOS pendant, twice: the hub should raise one sos alert at once", AlertKind::Sos);
    one.sort();
    vec![Act {
        timeline: one,
        wait_for: vec![AlertKind::Sos],
        silent: vec![],
    }]
}

fn offline_gateway(rng: &mut impl Rng, geo: &HomeGeo, roles: &[Role]) -> Vec<Act> {
    let house = Household::new(rng, geo, roles);
    let mut p = Plan::default();
    p.note(0.0, "an ordinary afternoon at home");
    p.then(0.0, 10.0 * MINUTE, room(Room::Kitchen, Level::Active));
    let end = p.then(0.0, 20.0 * MINUTE, room(Room::LivingRoom, Level::Resting));
    let cut = 15.0 * MINUTE;
    let mut one = act(rng, &house, &p, end);
    one.emissions
        .retain(|e| !(e.role == Role::Gateway && e.at >= cut));
    one.emit(cut, Role::Gateway, Msg::PowerLoss);
    one.expect(cut, "the home gateway loses power: its connection drops without a goodbye, the hub delivers its will and should raise device_offline", AlertKind::DeviceOffline);
    one.sort();
    let mut q = Plan::default();
    q.note(
        0.0,
        "power is back: the gateway reconnects and the alert resolves",
    );
    let end = q.then(0.0, 10.0 * MINUTE, room(Room::LivingRoom, Level::Resting));
    let mut two = act(rng, &house, &q, end);
    two.emit(0.0, Role::Gateway, Msg::PowerBack);
    two.sort();
    vec![
        Act {
            timeline: one,
            wait_for: vec![AlertKind::DeviceOffline],
            silent: vec![Role::Gateway],
        },
        Act {
            timeline: two,
            wait_for: vec![],
            silent: vec![],
        },
    ]
}

/// Ordinary life for a fleet resident: one act, no alert expected.
pub fn daily(rng: &mut impl Rng, geo: &HomeGeo, roles: &[Role], start_tod: f64, days: f64) -> Act {
    let house = Household::new(rng, geo, roles);
    let span = days * DAY;
    let plan = life::daily_life(rng, geo, start_tod, span);
    Act {
        timeline: act(rng, &house, &plan, span),
        wait_for: vec![],
        silent: vec![],
    }
}

/// Messages per device role, for tests and summaries.
pub fn count_by_role(emissions: &[Emission]) -> BTreeMap<Role, usize> {
    let mut m = BTreeMap::new();
    for e in emissions {
        *m.entry(e.role).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::{circle_zone, place_home};
    use mimamori_protocol::api::LatLon;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn setting(geo: &HomeGeo) -> Setting<'_> {
        Setting {
            geo,
            speed: 600.0,
            now_tod: 14.0 * HOUR + 20.0,
        }
    }

    fn home() -> HomeGeo {
        let mut g = place_home(
            &mut StdRng::seed_from_u64(5),
            LatLon {
                lat: 35.7074,
                lon: 139.6638,
            },
            1000.0,
            0.0,
        );
        g.zone = circle_zone(g.home, g.safe_radius_m);
        g
    }

    #[test]
    fn every_scenario_is_deterministic_sorted_and_has_valid_rules() {
        let geo = home();
        for name in ScenarioName::ALL {
            let a = script(&mut StdRng::seed_from_u64(1), name, setting(&geo));
            let b = script(&mut StdRng::seed_from_u64(1), name, setting(&geo));
            assert_eq!(a, b, "{name:?}");
            assert_eq!(rules::check(&a.rules), Ok(()), "{name:?}");
            for act in &a.acts {
                let ts: Vec<f64> = act.timeline.emissions.iter().map(|e| e.at).collect();
                assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{name:?} unsorted");
                assert!(
                    ts.iter().all(|t| *t >= 0.0 && *t <= act.timeline.end),
                    "{name:?} outside its act"
                );
            }
            let announced: Vec<AlertKind> = a
                .acts
                .iter()
                .flat_map(|x| &x.timeline.notes)
                .filter_map(|n| n.expect)
                .collect();
            let expected: Vec<AlertKind> = a.expect.iter().map(|e| e.kind).collect();
            assert_eq!(
                announced, expected,
                "{name:?}: narration announces what is checked"
            );
        }
    }

    #[test]
    fn no_morning_sets_its_morning_a_minute_or_two_ahead() {
        let geo = home();
        let s = script(
            &mut StdRng::seed_from_u64(1),
            ScenarioName::NoMorning,
            setting(&geo),
        );
        assert_eq!(s.speed, 1.0);
        assert_eq!(s.rules["inactivity"]["day_starts"], "14:01");
        assert_eq!(s.rules["inactivity"]["morning_deadline"], "14:02");
        let late = Setting {
            now_tod: 14.0 * HOUR + 50.0,
            ..setting(&geo)
        };
        let s = script(&mut StdRng::seed_from_u64(1), ScenarioName::NoMorning, late);
        assert_eq!(s.rules["inactivity"]["day_starts"], "14:02");
        assert_eq!(hhmm(-60.0), "23:59");
    }

    #[test]
    fn the_wanderer_leaves_the_zone_and_the_jitter_never_does() {
        let geo = home();
        let w = script(
            &mut StdRng::seed_from_u64(2),
            ScenarioName::Wander,
            setting(&geo),
        );
        let fixes = |act: &Act| -> Vec<(f64, f64)> {
            act.timeline
                .emissions
                .iter()
                .filter_map(|e| match e.msg {
                    Msg::Gps {
                        lat,
                        lon,
                        accuracy_m,
                        ..
                    } => Some((
                        crate::geo::local(geo.home, LatLon { lat, lon }).norm(),
                        accuracy_m,
                    )),
                    _ => None,
                })
                .collect()
        };
        let outside = |(d, acc): &(f64, f64)| *acc <= 100.0 && *d - geo.safe_radius_m > *acc;
        assert!(fixes(&w.acts[0]).iter().filter(|f| outside(f)).count() >= 5);
        let back = fixes(&w.acts[1]);
        assert!(back.last().is_some_and(|(d, _)| *d < 31.0), "ends at home");
        let j = script(
            &mut StdRng::seed_from_u64(2),
            ScenarioName::GpsJitter,
            setting(&geo),
        );
        let jitter = fixes(&j.acts[0]);
        assert!(
            jitter
                .iter()
                .any(|(d, acc)| *acc > 100.0 && *d > geo.safe_radius_m + 100.0),
            "some cell fixes land far out"
        );
        assert!(
            jitter
                .iter()
                .any(|(d, acc)| *acc <= 45.0 && *d > geo.safe_radius_m),
            "some fixes cross the edge"
        );
        assert!(!jitter.iter().any(outside), "no fix is clearly outside");
    }

    #[test]
    fn a_normal_day_keeps_every_device_talking_and_sends_no_sos() {
        let geo = home();
        let roles = Role::home_set(true);
        for seed in 0..40 {
            let act = daily(
                &mut StdRng::seed_from_u64(seed),
                &geo,
                &roles,
                6.0 * HOUR,
                1.0,
            );
            let by_role = count_by_role(&act.timeline.emissions);
            for role in &roles {
                let ts: Vec<f64> = act
                    .timeline
                    .emissions
                    .iter()
                    .filter(|e| e.role == *role)
                    .map(|e| e.at)
                    .collect();
                let longest = ts
                    .windows(2)
                    .map(|w| w[1] - w[0])
                    .fold(ts.first().copied().unwrap_or(DAY), f64::max);
                let limit = match role.kind() {
                    mimamori_protocol::DeviceKind::Gps | mimamori_protocol::DeviceKind::Gateway => {
                        900.0
                    }
                    mimamori_protocol::DeviceKind::Button => 6.0 * HOUR,
                    _ => HOUR,
                };
                assert!(longest < 0.5 * limit, "{role:?} silent for {longest} s");
                assert!(by_role.get(role).copied().unwrap_or(0) > 0);
            }
            assert!(!act.timeline.emissions.iter().any(|e| e.msg == Msg::Sos));
        }
    }
}
