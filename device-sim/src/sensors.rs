//! Device models: how each device of a home turns the resident's plan into messages.
//!
//! - PIR motion sensor: reports `motion: true` on the first movement, re-reports while movement
//!   goes on at most once per re-trigger window, and `motion: false` once no movement was seen
//!   for the cooldown. Heartbeats every ~20 min carry a battery that drains slowly.
//! - Entrance door contact: open/closed when the resident leaves and comes back; heartbeats.
//! - Gateway: mains-powered, a heartbeat every 5 min.
//! - SOS pendant: an hourly heartbeat with its battery.
//! - GPS tracker: a fix every 5 min at home, every 30 s while out; accuracy 5–12 m in the open
//!   and up to 30 m near buildings and indoors; the fix lies within its reported accuracy; the
//!   battery drains by day and charges overnight.
//!
//! Heartbeat periods stay well under the hub's default offline thresholds (motion and door
//! 60 min, tracker and gateway 15 min, button 6 h) so that normal life never looks offline.

use std::collections::BTreeMap;

use mimamori_protocol::api::LatLon;
use rand::Rng;

use crate::geo::{self, normal, Xy};
use crate::home::{HomeGeo, Role, Room};
use crate::life::{Doing, Level, Plan, HOUR, MINUTE};
use crate::timeline::{Emission, Msg};

/// Time after the last movement at which a PIR reports the room clear.
pub const PIR_COOLDOWN_S: f64 = 180.0;
/// Shortest gap between two `motion: true` reports of one PIR while movement goes on.
pub const PIR_RETRIGGER_S: f64 = 120.0;
pub const SENSOR_HEARTBEAT_S: f64 = 20.0 * MINUTE;
pub const GATEWAY_HEARTBEAT_S: f64 = 5.0 * MINUTE;
pub const BUTTON_HEARTBEAT_S: f64 = HOUR;
pub const TRACKER_REST_FIX_S: f64 = 5.0 * MINUTE;
pub const TRACKER_MOVING_FIX_S: f64 = 30.0;

/// How a device's battery behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Battery {
    /// Level at the start, in percent.
    pub start: f64,
    /// Percentage points lost per heartbeat.
    pub per_heartbeat: f64,
    /// At or below this level the device stops working altogether.
    pub dies_at: f64,
    /// Whether someone puts in a fresh cell after the device reports a low level.
    pub swap: Option<BatterySwap>,
}

/// A care service's answer to a low-battery warning: a fresh cell `after_s` seconds after the
/// device first reported a level below `below_pct`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatterySwap {
    pub below_pct: u8,
    pub after_s: f64,
}

impl Battery {
    /// A healthy coin cell: a year or two of life, so a few hundredths of a point a day.
    pub fn healthy(rng: &mut impl Rng) -> Battery {
        Battery {
            start: rng.gen_range(40.0..100.0f64).round(),
            per_heartbeat: 0.002,
            dies_at: 0.0,
            swap: None,
        }
    }

    /// A cell at the end of its life: its voltage drops fast under load.
    pub fn dying() -> Battery {
        Battery {
            start: 17.0,
            per_heartbeat: 1.0,
            dies_at: 9.0,
            swap: None,
        }
    }
}

/// Everything the models need besides the plan.
#[derive(Debug, Clone)]
pub struct Household<'a> {
    pub geo: &'a HomeGeo,
    pub roles: &'a [Role],
    pub batteries: BTreeMap<Role, Battery>,
    /// Percent of the tracker's battery at the start.
    pub tracker_battery: f64,
}

impl<'a> Household<'a> {
    /// Healthy batteries for every battery-powered device.
    pub fn new(rng: &mut impl Rng, geo: &'a HomeGeo, roles: &'a [Role]) -> Household<'a> {
        let batteries = roles
            .iter()
            .filter(|r| !r.mains_powered() && **r != Role::Tracker)
            .map(|r| (*r, Battery::healthy(rng)))
            .collect();
        Household {
            geo,
            roles,
            batteries,
            tracker_battery: rng.gen_range(70.0..100.0f64).round(),
        }
    }

    fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Every message the home's devices send during `plan`, up to `end`.
pub fn render(rng: &mut impl Rng, plan: &Plan, house: &Household, end: f64) -> Vec<Emission> {
    let mut out = Vec::new();
    let moves = movements(rng, plan, end);
    let mut deaths = BTreeMap::new();
    for (&role, &battery) in &house.batteries {
        let period = if role == Role::Button {
            BUTTON_HEARTBEAT_S
        } else {
            SENSOR_HEARTBEAT_S
        };
        if let Some(died) = heartbeats(rng, role, battery, period, end, &mut out) {
            deaths.insert(role, died);
        }
    }
    for room in Room::ALL {
        let role = Role::Motion(room);
        if !house.has(role) {
            continue;
        }
        let until = deaths.get(&role).copied().unwrap_or(f64::INFINITY);
        for (at, motion) in pir(moves.get(&room).map_or(&[][..], |v| v), end) {
            if at < until {
                out.push(Emission {
                    at,
                    role,
                    msg: Msg::Motion {
                        motion,
                        room: room.as_str().into(),
                        battery: None,
                    },
                });
            }
        }
    }
    if house.has(Role::EntranceDoor) {
        door(rng, plan, &mut out);
    }
    for role in house.roles.iter().filter(|r| r.mains_powered()) {
        let mut t = rng.gen_range(0.0..GATEWAY_HEARTBEAT_S);
        while t < end {
            out.push(Emission {
                at: t,
                role: *role,
                msg: Msg::Heartbeat { battery: None },
            });
            t += GATEWAY_HEARTBEAT_S * rng.gen_range(0.97..1.03);
        }
    }
    if house.has(Role::Tracker) {
        tracker(
            rng,
            plan,
            house.geo.home,
            house.tracker_battery,
            end,
            &mut out,
        );
    }
    out.sort_by(|a, b| a.at.total_cmp(&b.at));
    out
}

/// Heartbeats with a draining battery; returns when the device died, if it did.
fn heartbeats(
    rng: &mut impl Rng,
    role: Role,
    b: Battery,
    period: f64,
    end: f64,
    out: &mut Vec<Emission>,
) -> Option<f64> {
    let mut t = rng.gen_range(0.0..period);
    let mut level = b.start;
    let mut low_since = None;
    while t < end {
        if level <= b.dies_at {
            return Some(t);
        }
        let reported = level.round().clamp(0.0, 100.0) as u8;
        out.push(Emission {
            at: t,
            role,
            msg: Msg::Heartbeat {
                battery: Some(reported),
            },
        });
        level -= b.per_heartbeat;
        if let Some(swap) = b.swap {
            let since = match low_since {
                None if reported < swap.below_pct => *low_since.insert(t),
                None => f64::INFINITY,
                Some(since) => since,
            };
            if t >= since + swap.after_s {
                level = 100.0;
                low_since = None;
            }
        }
        t += period * rng.gen_range(0.95..1.05);
    }
    None
}

/// The instants a PIR in each room would notice movement. The first segment gets a movement at
/// its very start, so the hub's picture begins with fresh activity.
fn movements(rng: &mut impl Rng, plan: &Plan, end: f64) -> BTreeMap<Room, Vec<f64>> {
    let mut by_room: BTreeMap<Room, Vec<f64>> = BTreeMap::new();
    for (i, s) in plan.segments.iter().enumerate() {
        let Doing::In(room, level) = s.doing else {
            continue;
        };
        let Some(gap) = level.mean_gap_s() else {
            continue;
        };
        let v = by_room.entry(room).or_default();
        // Walking into a room is movement the sensor sees (going back to bed after the
        // toilet too); sleep that merely goes on from the segment before is not.
        let entered = i == 0 || !matches!(plan.segments[i - 1].doing, Doing::In(r, _) if r == room);
        let mut t = if entered || level != Level::Asleep {
            s.from
        } else {
            s.from + geo::exponential(rng, gap)
        };
        while t < s.to.min(end) {
            v.push(t);
            t += geo::exponential(rng, gap);
        }
    }
    by_room
}

/// The PIR model: occupancy on, re-trigger window, cooldown. Input sorted; output sorted.
pub fn pir(moves: &[f64], end: f64) -> Vec<(f64, bool)> {
    let mut out = Vec::new();
    let mut occupied = false;
    let (mut last_move, mut last_report) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for &m in moves {
        if occupied && m > last_move + PIR_COOLDOWN_S {
            out.push((last_move + PIR_COOLDOWN_S, false));
            occupied = false;
        }
        if !occupied || m - last_report >= PIR_RETRIGGER_S {
            out.push((m, true));
            occupied = true;
            last_report = m;
        }
        last_move = m;
    }
    if occupied && last_move + PIR_COOLDOWN_S < end {
        out.push((last_move + PIR_COOLDOWN_S, false));
    }
    out
}

/// The entrance door opens and closes as the resident leaves and comes back.
/// Only a change between being in and being out passes the door: a plan that starts or ends
/// outside (a scenario split into acts) has no door event at that end.
fn door(rng: &mut impl Rng, plan: &Plan, out: &mut Vec<Emission>) {
    let segs = &plan.segments;
    for (i, s) in segs.iter().enumerate() {
        if !matches!(s.doing, Doing::Out(_)) {
            continue;
        }
        let mut events = Vec::new();
        if i > 0 && matches!(segs[i - 1].doing, Doing::In(..)) {
            events.extend([(s.from, true), (s.from + rng.gen_range(5.0..12.0), false)]);
        }
        if segs
            .get(i + 1)
            .is_some_and(|n| matches!(n.doing, Doing::In(..)))
        {
            events.extend([
                (s.to - rng.gen_range(10.0..20.0), true),
                (s.to - rng.gen_range(2.0..6.0), false),
            ]);
        }
        for (at, open) in events {
            out.push(Emission {
                at,
                role: Role::EntranceDoor,
                msg: Msg::Door { open },
            });
        }
    }
}

/// A GPS fix of the true position `p`: accuracy from the surroundings, error within it.
pub fn fix(rng: &mut impl Rng, p: Xy, urban: f64) -> (Xy, f64) {
    let accuracy = (5.0 + 7.0 * rng.gen_range(0.0..1.0) + 18.0 * urban * rng.gen_range(0.5..1.0))
        .clamp(5.0, 30.0);
    let err = accuracy * (0.5 * normal(rng)).abs().min(1.0);
    let dir = rng.gen_range(0.0..std::f64::consts::TAU);
    (
        Xy::new(p.x + err * dir.cos(), p.y + err * dir.sin()),
        accuracy,
    )
}

/// The tracker's fixes: slow at home, fast while out; charges while the resident sleeps.
fn tracker(
    rng: &mut impl Rng,
    plan: &Plan,
    home: LatLon,
    start_battery: f64,
    end: f64,
    out: &mut Vec<Emission>,
) {
    let mut battery = start_battery;
    let mut t = rng.gen_range(0.0..TRACKER_REST_FIX_S);
    let mut last = t;
    let mut seg = 0;
    while t < end {
        while seg + 1 < plan.segments.len() && plan.segments[seg].to <= t {
            seg += 1;
        }
        let doing = plan.segments.get(seg).map(|s| &s.doing);
        let (p, urban, period) = match doing {
            Some(Doing::Out(track)) => {
                let (p, u) = track.at(t);
                (p, u, TRACKER_MOVING_FIX_S)
            }
            _ => (Xy::default(), 1.0, TRACKER_REST_FIX_S),
        };
        let dt_h = (t - last) / HOUR;
        battery = if matches!(doing, Some(Doing::In(Room::Bedroom, Level::Asleep))) {
            (battery + 20.0 * dt_h).min(100.0)
        } else {
            (battery - 0.4 * dt_h).max(1.0)
        };
        last = t;
        let (q, accuracy_m) = fix(rng, p, urban);
        let ll = geo::offset(home, q);
        out.push(Emission {
            at: t,
            role: Role::Tracker,
            msg: Msg::Gps {
                lat: ll.lat,
                lon: ll.lon,
                accuracy_m,
                battery: Some(battery.round() as u8),
            },
        });
        t += period;
        if let (Some(s), Some(n)) = (plan.segments.get(seg), plan.segments.get(seg + 1)) {
            if matches!(s.doing, Doing::In(..)) && matches!(n.doing, Doing::Out(_)) && t > n.from {
                // Leaving home starts fast fixes at once, as a tracker's motion sensor would.
                t = n.from;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pir_reports_on_retriggers_and_clears_after_cooldown() {
        let moves = [0.0, 30.0, 100.0, 130.0, 400.0];
        let got = pir(&moves, 10_000.0);
        assert_eq!(
            got,
            vec![
                (0.0, true),
                (130.0, true),
                (310.0, false),
                (400.0, true),
                (580.0, false)
            ]
        );
        assert_eq!(pir(&[], 100.0), vec![]);
        // Clearing after the end of the simulation is not reported.
        assert_eq!(pir(&[50.0], 100.0), vec![(50.0, true)]);
    }

    #[test]
    fn fixes_lie_within_their_accuracy_and_it_within_5_to_30_m() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        for i in 0..5000 {
            let urban = (i % 11) as f64 / 10.0;
            let (q, acc) = fix(&mut rng, Xy::new(10.0, 20.0), urban);
            assert!((5.0..=30.0).contains(&acc));
            assert!(q.dist(Xy::new(10.0, 20.0)) <= acc + 1e-9);
        }
    }

    /// The battery levels the heartbeats report.
    fn levels(out: &[Emission]) -> Vec<u8> {
        out.iter()
            .filter_map(|e| match e.msg {
                Msg::Heartbeat { battery } => battery,
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_swapped_battery_reports_full_after_the_service_came() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(2);
        let mut out = Vec::new();
        let b = Battery {
            swap: Some(BatterySwap {
                below_pct: 15,
                after_s: 2_500.0,
            }),
            ..Battery::dying()
        };
        let died = heartbeats(&mut rng, Role::Button, b, 1000.0, 12_000.0, &mut out);
        let levels = levels(&out);
        assert_eq!(died, None);
        // Heartbeats come every 1000 s (± 5 %): the fresh cell goes in after the third low one.
        assert_eq!(
            &levels[..8],
            &[17, 16, 15, 14, 13, 12, 11, 100],
            "{levels:?}"
        );
    }

    #[test]
    fn a_dying_battery_reports_low_then_stops() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(2);
        let mut out = Vec::new();
        let died = heartbeats(
            &mut rng,
            Role::Motion(Room::Bathroom),
            Battery::dying(),
            1200.0,
            1e6,
            &mut out,
        );
        let levels = levels(&out);
        assert_eq!(levels, vec![17, 16, 15, 14, 13, 12, 11, 10]);
        assert!(died.is_some_and(|d| d > out.last().map_or(0.0, |e| e.at)));
    }
}
