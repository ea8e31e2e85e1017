//! A resident's day as a plan: contiguous segments saying where they are and how much they
//! move, plus the walks they take. Everything is drawn from a seeded RNG, so a seed and a start
//! time always give the same days.
//!
//! Times are simulated seconds from the start of the simulation; `start_tod` says what local
//! time of day that start is. Days are taken as 24 h (the default zone, Asia/Tokyo, has no DST).

use rand::Rng;

use crate::geo::{normal, Xy};
use crate::home::{HomeGeo, Room};

pub const HOUR: f64 = 3600.0;
pub const MINUTE: f64 = 60.0;
pub const DAY: f64 = 24.0 * HOUR;

/// How much a person in a room moves, as a PIR sensor would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Cooking, washing, tidying: a movement every minute or so.
    Active,
    /// Watching TV, reading: a movement every few minutes.
    Resting,
    /// Asleep: turning over now and then.
    Asleep,
    /// Not moving at all (fallen, unwell, in deep sleep).
    Still,
}

impl Level {
    /// Mean gap between movements a PIR would notice, in seconds; `None` for no movement.
    pub fn mean_gap_s(self) -> Option<f64> {
        match self {
            Level::Active => Some(50.0),
            Level::Resting => Some(6.0 * MINUTE),
            Level::Asleep => Some(70.0 * MINUTE),
            Level::Still => None,
        }
    }
}

/// A point of a walk: where the resident is at `t`, and how built-up it is around them
/// (0 open street, 1 indoors), which decides the GPS accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackPoint {
    pub t: f64,
    pub p: Xy,
    pub urban: f64,
}

/// A walk, as points between which the resident moves in a straight line at constant speed.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub points: Vec<TrackPoint>,
}

impl Track {
    /// Position and surroundings at `t` (clamped to the walk's ends).
    pub fn at(&self, t: f64) -> (Xy, f64) {
        let pts = &self.points;
        let Some(first) = pts.first() else {
            return (Xy::default(), 1.0);
        };
        if t <= first.t {
            return (first.p, first.urban);
        }
        for w in pts.windows(2) {
            if t <= w[1].t {
                let span = (w[1].t - w[0].t).max(1e-9);
                return (w[0].p.lerp(w[1].p, (t - w[0].t) / span), w[1].urban);
            }
        }
        pts.last().map_or((Xy::default(), 1.0), |p| (p.p, p.urban))
    }

    pub fn end_t(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.t)
    }

    pub fn end_p(&self) -> Xy {
        self.points.last().map_or(Xy::default(), |p| p.p)
    }

    /// Shifts every point by `dt` seconds.
    pub fn shifted(mut self, dt: f64) -> Track {
        for p in &mut self.points {
            p.t += dt;
        }
        self
    }
}

/// What the resident does during a segment.
#[derive(Debug, Clone, PartialEq)]
pub enum Doing {
    In(Room, Level),
    /// Out of the home (through the entrance door) along a walk.
    Out(Track),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub from: f64,
    pub to: f64,
    pub doing: Doing,
}

/// A stretch of life: contiguous segments and sentences about the notable moments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub segments: Vec<Segment>,
    pub notes: Vec<(f64, String)>,
}

impl Plan {
    /// Appends a segment of `dur` seconds after the last one (or at `start` if empty).
    pub fn then(&mut self, start: f64, dur: f64, doing: Doing) -> f64 {
        let from = self.segments.last().map_or(start, |s| s.to);
        let to = from + dur.max(1.0);
        self.segments.push(Segment { from, to, doing });
        to
    }

    pub fn end(&self) -> f64 {
        self.segments.last().map_or(0.0, |s| s.to)
    }

    pub fn note(&mut self, at: f64, text: impl Into<String>) {
        self.notes.push((at, text.into()));
    }

    /// What the resident does at `t`, if the plan covers it.
    pub fn doing_at(&self, t: f64) -> Option<&Doing> {
        self.segments
            .iter()
            .find(|s| s.from <= t && t < s.to)
            .map(|s| &s.doing)
    }

    /// The first instant at or after `t` at which the resident is at home: `t` itself, or the
    /// end of the outing under way.
    pub fn home_from(&self, t: f64) -> f64 {
        self.segments
            .iter()
            .find(|s| s.from <= t && t < s.to && matches!(s.doing, Doing::Out(_)))
            .map_or(t, |s| s.to)
    }

    /// Replaces what the plan does from `from` on with `story` (durations and doings, one
    /// after the other) and returns when the story ends; the plan goes on from there. An
    /// outing the story's end cuts into becomes rest in the living room: the resident is
    /// home, and the door is used only where the story says. Notes inside the story's span
    /// are dropped. `from` should be a moment at home (see [`Plan::home_from`]).
    pub fn splice(&mut self, from: f64, story: Vec<(f64, Doing)>) -> f64 {
        let end = from + story.iter().map(|(d, _)| d.max(1.0)).sum::<f64>();
        let mut before = Vec::new();
        let mut after = Vec::new();
        for s in self.segments.drain(..) {
            if s.to <= from {
                before.push(s);
                continue;
            }
            if s.from >= end {
                after.push(s);
                continue;
            }
            if s.from < from {
                before.push(Segment {
                    from: s.from,
                    to: from,
                    doing: s.doing.clone(),
                });
            }
            if s.to > end {
                let doing = match s.doing {
                    Doing::Out(_) => Doing::In(Room::LivingRoom, Level::Resting),
                    d => d,
                };
                after.push(Segment {
                    from: end,
                    to: s.to,
                    doing,
                });
            }
        }
        let mut t = from;
        for (dur, doing) in story {
            let to = t + dur.max(1.0);
            before.push(Segment { from: t, to, doing });
            t = to;
        }
        before.extend(after);
        self.segments = before;
        self.notes.retain(|(at, _)| *at < from || *at >= end);
        end
    }
}

/// A walking speed in m/s around 1.1 (older people walk a little slower than 1.3).
pub fn walking_speed(rng: &mut impl Rng) -> f64 {
    (1.1 + 0.1 * normal(rng)).clamp(0.8, 1.35)
}

/// A walk from `from` to `to` along a street grid turned by `bearing`: blocks of 60–140 m,
/// mostly along the axis with more distance left, never overshooting, so the walk stays
/// within the rectangle spanned by its ends.
pub fn street_walk(
    rng: &mut impl Rng,
    from: Xy,
    to: Xy,
    bearing: f64,
    t0: f64,
    speed: f64,
) -> Track {
    let (u, v) = grid_axes(bearing);
    let d = Xy::new(to.x - from.x, to.y - from.y);
    let (mut du, mut dv) = (d.x * u.x + d.y * u.y, d.x * v.x + d.y * v.y);
    let mut p = from;
    let mut t = t0;
    let mut points = vec![TrackPoint { t, p, urban: 0.5 }];
    while du.abs() + dv.abs() > 1.0 {
        let along_u = if du.abs() < 1.0 {
            false
        } else if dv.abs() < 1.0 {
            true
        } else {
            (du.abs() >= dv.abs()) == rng.gen_bool(0.7)
        };
        let rem = if along_u { du } else { dv };
        let len = rem.abs().min(rng.gen_range(60.0..140.0));
        let step = len * rem.signum();
        let axis = if along_u { u } else { v };
        p = Xy::new(p.x + axis.x * step, p.y + axis.y * step);
        if along_u {
            du -= step;
        } else {
            dv -= step;
        }
        t += len / speed;
        points.push(TrackPoint {
            t,
            p,
            urban: rng.gen_range(0.0..1.0),
        });
    }
    // The last metre: arrive exactly.
    if p.dist(to) > 1e-9 {
        t += p.dist(to) / speed;
        points.push(TrackPoint {
            t,
            p: to,
            urban: 0.5,
        });
    }
    Track { points }
}

/// A walk that keeps going: block after block, turning now and then but never towards home,
/// for `duration` seconds. This is how a person with dementia who has lost their way walks.
pub fn wandering_walk(
    rng: &mut impl Rng,
    from: Xy,
    bearing: f64,
    t0: f64,
    duration: f64,
    speed: f64,
) -> Track {
    let (u, v) = grid_axes(bearing);
    let dirs = [u, v, Xy::new(-u.x, -u.y), Xy::new(-v.x, -v.y)];
    let mut dir = rng.gen_range(0..4usize);
    let (mut p, mut t) = (from, t0);
    let mut points = vec![TrackPoint { t, p, urban: 0.5 }];
    while t < t0 + duration {
        let len = rng.gen_range(80.0..140.0);
        let next = |d: usize| Xy::new(p.x + dirs[d].x * len, p.y + dirs[d].y * len);
        if rng.gen_bool(0.3) {
            let turn = (dir + if rng.gen_bool(0.5) { 1 } else { 3 }) % 4;
            if next(turn).norm() > p.norm() {
                dir = turn;
            }
        }
        if next(dir).norm() < p.norm() {
            // Straight on would lead back towards home: take the side street leading away.
            dir = [(dir + 1) % 4, (dir + 3) % 4]
                .into_iter()
                .max_by(|a, b| next(*a).norm().total_cmp(&next(*b).norm()))
                .unwrap_or(dir);
        }
        p = next(dir);
        t += len / speed;
        points.push(TrackPoint {
            t,
            p,
            urban: rng.gen_range(0.0..1.0),
        });
    }
    Track { points }
}

fn grid_axes(bearing: f64) -> (Xy, Xy) {
    (
        Xy::polar(1.0, bearing),
        Xy::polar(1.0, bearing + std::f64::consts::FRAC_PI_2),
    )
}

/// An outing inside the safe zone: to a shop or park 25–60 % of the safe radius away, a stay
/// there, and back. Starts at `t0` from home (the origin).
pub fn outing(rng: &mut impl Rng, home: &HomeGeo, t0: f64) -> (Track, f64) {
    let dest_r = home.safe_radius_m * rng.gen_range(0.25..0.6);
    let dest = Xy::polar(dest_r, rng.gen_range(0.0..std::f64::consts::TAU));
    let speed = walking_speed(rng);
    let there = street_walk(rng, Xy::default(), dest, home.street_bearing, t0, speed);
    let stay = rng.gen_range(10.0..35.0) * MINUTE;
    let leave = there.end_t() + stay;
    let back = street_walk(rng, dest, Xy::default(), home.street_bearing, leave, speed);
    let mut points = there.points;
    points.push(TrackPoint {
        t: leave,
        p: dest,
        urban: 1.0,
    });
    points.extend(back.points.into_iter().skip(1));
    (Track { points }, dest_r)
}

/// Draws a duration in minutes uniformly from `lo..hi`, in seconds.
fn minutes(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    rng.gen_range(lo..hi) * MINUTE
}

/// Sleep from `a` (or the end of the plan so far) to `b` in the bedroom, with a trip to the
/// bathroom now and then.
fn night(rng: &mut impl Rng, plan: &mut Plan, a: f64, b: f64) {
    let mut t = if plan.segments.is_empty() {
        a
    } else {
        plan.end()
    };
    loop {
        let awake_in = crate::geo::exponential(rng, 4.0 * HOUR);
        if t + awake_in + 10.0 * MINUTE >= b {
            plan.then(a, b - t, Doing::In(Room::Bedroom, Level::Asleep));
            return;
        }
        plan.then(a, awake_in, Doing::In(Room::Bedroom, Level::Asleep));
        t = plan.then(
            a,
            minutes(rng, 4.0, 8.0),
            Doing::In(Room::Bathroom, Level::Active),
        );
    }
}

/// The waking hours of one day, from `wake` to `bed`, `m` being that day's local midnight.
fn day(rng: &mut impl Rng, plan: &mut Plan, home: &HomeGeo, m: f64, wake: f64, bed: f64) {
    let at = |h: f64| m + h * HOUR;
    plan.note(wake, "wakes up");
    plan.then(
        wake,
        minutes(rng, 8.0, 15.0),
        Doing::In(Room::Bathroom, Level::Active),
    );
    plan.then(
        wake,
        minutes(rng, 20.0, 40.0),
        Doing::In(Room::Kitchen, Level::Active),
    );
    let (mut lunch, mut dinner, mut bath) = (false, false, false);
    let mut napped = !rng.gen_bool(0.5);
    let mut went_out = !rng.gen_bool(0.7);
    let outing_at = at(rng.gen_range(9.5..15.0));
    let mut last_wc = plan.end();
    let mut wc_every = rng.gen_range(2.0..3.0) * HOUR;
    while plan.end() < bed - 15.0 * MINUTE {
        let t = plan.end();
        let left = bed - t;
        let (dur, doing) = if !went_out && t >= outing_at && left > 3.0 * HOUR {
            went_out = true;
            let (track, dist) = outing(rng, home, t);
            plan.note(
                t,
                format!("goes out for a walk to the shops, {dist:.0} m away"),
            );
            plan.note(track.end_t(), "is back home");
            (track.end_t() - t, Doing::Out(track))
        } else if !lunch && t >= at(11.75) {
            lunch = true;
            (
                minutes(rng, 30.0, 45.0),
                Doing::In(Room::Kitchen, Level::Active),
            )
        } else if lunch && !napped && t >= at(13.0) && t < at(15.0) {
            napped = true;
            plan.note(t, "takes a nap");
            (
                minutes(rng, 30.0, 75.0),
                Doing::In(Room::Bedroom, Level::Asleep),
            )
        } else if !dinner && t >= at(17.75) {
            dinner = true;
            (
                minutes(rng, 40.0, 60.0),
                Doing::In(Room::Kitchen, Level::Active),
            )
        } else if !bath && t >= at(19.5) {
            bath = true;
            last_wc = t;
            (
                minutes(rng, 20.0, 30.0),
                Doing::In(Room::Bathroom, Level::Active),
            )
        } else if t - last_wc >= wc_every {
            last_wc = t;
            wc_every = rng.gen_range(2.0..3.0) * HOUR;
            (
                minutes(rng, 4.0, 8.0),
                Doing::In(Room::Bathroom, Level::Active),
            )
        } else if rng.gen_bool(0.2) {
            (
                minutes(rng, 8.0, 15.0),
                Doing::In(Room::Kitchen, Level::Active),
            )
        } else {
            (
                minutes(rng, 20.0, 50.0),
                Doing::In(Room::LivingRoom, Level::Resting),
            )
        };
        let dur = if matches!(doing, Doing::Out(_)) {
            dur
        } else {
            dur.min(left)
        };
        plan.then(t, dur, doing);
    }
    plan.note(plan.end(), "goes to bed");
}

/// `duration` seconds of ordinary life from a start at local time of day `start_tod` (seconds
/// after midnight). The resident is at home at the start: an outing that would already be under
/// way is replaced by resting in the living room, so the hub's first picture is of a resident
/// at home.
pub fn daily_life(rng: &mut impl Rng, home: &HomeGeo, start_tod: f64, duration: f64) -> Plan {
    let mut full = Plan::default();
    let days = ((start_tod + duration) / DAY).ceil().max(1.0) as i64;
    for k in 0..days {
        let m = k as f64 * DAY - start_tod;
        let wake = m + (6.5 + 0.5 * normal(rng)).clamp(5.5, 8.0) * HOUR;
        let bed = m + (21.5 + 0.5 * normal(rng)).clamp(20.5, 23.0) * HOUR;
        night(rng, &mut full, m, wake);
        day(rng, &mut full, home, m, wake, bed);
        let from = full.end();
        night(rng, &mut full, from, m + DAY);
    }
    clip(full, duration)
}

/// The part of `plan` within `[0, duration)`.
fn clip(plan: Plan, duration: f64) -> Plan {
    let mut out = Plan::default();
    for mut s in plan.segments {
        if s.to <= 0.0 || s.from >= duration {
            continue;
        }
        if s.from < 0.0 {
            if matches!(s.doing, Doing::Out(_)) {
                s.doing = Doing::In(Room::LivingRoom, Level::Resting);
            }
            s.from = 0.0;
        }
        if s.to > duration && matches!(s.doing, Doing::In(..)) {
            s.to = duration;
        }
        out.segments.push(s);
    }
    out.notes = plan
        .notes
        .into_iter()
        .filter(|(t, _)| (0.0..duration).contains(t))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::place_home;
    use mimamori_protocol::api::LatLon;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn home(seed: u64) -> HomeGeo {
        place_home(
            &mut StdRng::seed_from_u64(seed),
            LatLon {
                lat: 35.7074,
                lon: 139.6638,
            },
            1500.0,
            0.5,
        )
    }

    #[test]
    fn a_day_is_contiguous_and_starts_at_home() {
        for seed in 0..50 {
            let h = home(seed);
            let plan = daily_life(&mut StdRng::seed_from_u64(seed), &h, 10.0 * HOUR, 2.0 * DAY);
            assert_eq!(plan.segments[0].from, 0.0);
            assert!(matches!(plan.segments[0].doing, Doing::In(..)));
            for w in plan.segments.windows(2) {
                assert!((w[0].to - w[1].from).abs() < 1e-6, "gap at {}", w[0].to);
            }
            assert!(plan.end() >= 2.0 * DAY - 1.0);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_day_and_another_seed_another() {
        let h = home(1);
        let a = daily_life(&mut StdRng::seed_from_u64(9), &h, 0.0, DAY);
        let b = daily_life(&mut StdRng::seed_from_u64(9), &h, 0.0, DAY);
        let c = daily_life(&mut StdRng::seed_from_u64(10), &h, 0.0, DAY);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn outings_stay_well_inside_the_safe_radius() {
        for seed in 0..200 {
            let h = home(seed);
            let (track, _) = outing(&mut StdRng::seed_from_u64(seed), &h, 0.0);
            for p in &track.points {
                assert!(p.p.norm() <= 0.6 * h.safe_radius_m + 1e-6);
            }
            assert!(track.end_p().norm() < 1e-6, "comes back home");
        }
    }

    #[test]
    fn wandering_leads_away_from_home() {
        for seed in 0..100 {
            let mut rng = StdRng::seed_from_u64(seed);
            let track = wandering_walk(&mut rng, Xy::default(), 0.3, 0.0, 20.0 * MINUTE, 1.1);
            // 20 minutes at 1.1 m/s is 1.3 km of streets; with turns it ends well over 600 m out.
            assert!(
                track.end_p().norm() > 600.0,
                "seed {seed}: {}",
                track.end_p().norm()
            );
        }
    }
}
