//! A recorded home: weeks of one resident's life as `hub replay` reads it (one native
//! message per line with its `device` and `kind` added), the home's `resident.json`, and the
//! alerts the recording should raise.
//!
//! The days are the simulator's daily routine ([`life`]) rendered by its device models
//! ([`sensors`]), with what weeks of a real home add to it:
//! - day-service visits on two weekdays, out through the entrance door from about 09:00 to
//!   16:00, and now and then a long outing (3.5–5 h) without a tracker — long enough that
//!   only the entrance door keeps the day threshold from firing;
//! - a night at family's, which the care manager entered as a dated pause;
//! - over months, sensor batteries that run low and get a fresh cell five days later;
//! - incidents chosen by the seed, each with its moments known to the millisecond: a fall, an
//!   evening collapse in the bathroom, a long bath, a morning not up, a night exit and an SOS
//!   press. A carer who comes after a fall or collapse opens the entrance door, and the
//!   resident is up and moving within a minute of seeing them out.
//!
//! The home has no tracker: motion sensors in the bedroom, kitchen, bathroom and living room,
//! the entrance door, the gateway and an SOS pendant. A few lines are delivered late, as a
//! gateway that buffers does. Pure: a seed and a start date give the same recording.

use chrono::{DateTime, Datelike, Duration, NaiveDate, SecondsFormat, TimeZone, Utc};
use mimamori_protocol::api::LatLon;
use mimamori_protocol::pause::{NewPause, PauseReason};
use mimamori_protocol::settings::LocalTime;
use mimamori_protocol::{AlertKind, RuleSettings, Severity};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use crate::expect::{Expectation, Expectations, Resolution};
use crate::geo::Xy;
use crate::home::{self, HomeGeo, Role, Room};
use crate::life::{self, Doing, Level, Plan, Track, TrackPoint, DAY, HOUR, MINUTE};
use crate::scenario::hhmm;
use crate::sensors::{self, BatterySwap, Household};
use crate::timeline::{Emission, Msg};

/// The recorded home's time zone. The life model's days are 24 h long, which only a zone
/// without daylight saving keeps.
pub const TIMEZONE: chrono_tz::Tz = chrono_tz::Asia::Tokyo;
/// The longest recording, so that a typing slip cannot fill a disk (about 1,300 lines a day).
pub const MAX_DAYS: u32 = 1_000;
/// Days after a sensor's first low-battery report that the care service puts in a fresh cell.
const BATTERY_SWAP_DAYS: f64 = 5.0;
/// Percentage points above `low_battery_pct` at which the rules call a battery fine again
/// (rules.md: "above it + 5 it resolves").
const BATTERY_HYSTERESIS: u8 = 5;
/// Share of lines a buffering gateway delivers a few lines late.
const LATE_SHARE: f64 = 0.02;
/// Nakano, Tokyo: where the home stands.
const NAKANO: LatLon = LatLon {
    lat: 35.7074,
    lon: 139.6638,
};

/// What to record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSpec {
    pub days: u32,
    pub seed: u64,
    /// The local date of the first day; the recording starts at its midnight.
    pub start: NaiveDate,
    /// How many incidents the seed places.
    pub incidents: usize,
}

/// A recorded home.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// `resident.json`, the shapes of the API's bodies.
    pub resident: Value,
    /// `events.jsonl`, one line each, in the order a gateway delivered them.
    pub events: Vec<String>,
    /// What the replay should raise (`expected.json`).
    pub expected: Expectations,
    pub summary: RecordSummary,
}

/// What the recording holds besides ordinary days.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RecordSummary {
    pub days: u32,
    pub events: usize,
    pub day_service_visits: usize,
    pub long_outings: usize,
    pub nights_away: usize,
    /// Sensor batteries that ran low (and were replaced five days later).
    pub battery_swaps: usize,
    /// One sentence per incident.
    pub incidents: Vec<String>,
}

/// The incidents the seed chooses from, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IncidentKind {
    Fall,
    EveningCollapse,
    LongBath,
    NotUp,
    NightExit,
    Sos,
}

impl IncidentKind {
    const ALL: [IncidentKind; 6] = [
        IncidentKind::Fall,
        IncidentKind::EveningCollapse,
        IncidentKind::LongBath,
        IncidentKind::NotUp,
        IncidentKind::NightExit,
        IncidentKind::Sos,
    ];
}

/// An incident as played, with its moments in simulated seconds.
#[derive(Debug, Clone, PartialEq)]
enum Incident {
    Fall { fell: f64, found: f64 },
    EveningCollapse { fell: f64, found: f64 },
    LongBath { from: f64 },
    NotUp { day: u32, up: f64 },
    NightExit { out: f64, back: f64 },
    Sos { at: f64 },
}

/// The device id each part of the home has in the recording.
pub fn device_id(role: Role) -> &'static str {
    match role {
        Role::Motion(Room::Bedroom) => "bedroom-pir",
        Role::Motion(Room::Kitchen) => "kitchen-pir",
        Role::Motion(Room::Bathroom) => "bathroom-pir",
        Role::Motion(Room::LivingRoom) => "living-pir",
        Role::EntranceDoor => "front-door",
        Role::Gateway => "gateway",
        Role::Button => "pendant",
        Role::Tracker => "tracker",
        Role::HomeReceiver => "home-receiver",
        Role::TownReceiver => "town-receiver",
    }
}

/// Records `spec.days` of the home.
pub fn record(spec: &RecordSpec) -> anyhow::Result<Recording> {
    if spec.days == 0 || spec.days > MAX_DAYS {
        anyhow::bail!("--days must be 1 to {MAX_DAYS}, got {}", spec.days);
    }
    let midnight = spec
        .start
        .and_hms_opt(0, 0, 0)
        .and_then(|t| TIMEZONE.from_local_datetime(&t).single())
        .ok_or_else(|| anyhow::anyhow!("{} has no midnight in {TIMEZONE}", spec.start))?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let geo = home::place_home(&mut rng, NAKANO, 1500.0, 0.0);
    let span = f64::from(spec.days) * DAY;
    let plan = life::daily_life(&mut rng, &geo, 0.0, span);
    let clock = Clock {
        start: midnight.with_timezone(&Utc),
    };
    let mut b = Builder {
        rng,
        geo,
        plan,
        start: spec.start,
        clock,
        extra: Vec::new(),
        pauses: Vec::new(),
        played: Vec::new(),
        summary: RecordSummary {
            days: spec.days,
            ..RecordSummary::default()
        },
    };
    b.live_the_weeks(spec)?;
    let rules = RuleSettings::default();
    let roles = Role::home_set(false);
    let mut house = Household::new(&mut b.rng, &b.geo, &roles);
    for battery in house.batteries.values_mut() {
        battery.swap = Some(BatterySwap {
            below_pct: rules.low_battery_pct,
            after_s: BATTERY_SWAP_DAYS * DAY,
        });
    }
    let mut emissions = sensors::render(&mut b.rng, &b.plan, &house, span);
    emissions.append(&mut b.extra);
    emissions.sort_by(|x, y| x.at.total_cmp(&y.at));
    let acts = activities(&emissions, &clock);
    let foresight = Foresight {
        acts: &acts,
        clock,
        rules: &rules,
    };
    let mut alerts: Vec<Expectation> = b
        .played
        .iter()
        .flat_map(|(text, i)| foresight.alerts(i, text))
        .collect();
    let swaps = battery_alerts(&emissions, &clock, &rules, spec.start);
    b.summary.battery_swaps = swaps.len();
    alerts.extend(swaps);
    alerts.sort_by_key(|e| e.at);
    let events = deliver(&mut b.rng, &emissions, &clock);
    let mut summary = b.summary;
    summary.events = events.len();
    summary.incidents = b.played.iter().map(|(t, _)| t.clone()).collect();
    Ok(Recording {
        resident: resident_json(&roles, &b.pauses),
        events,
        expected: Expectations {
            about: format!(
                "{} days of a simulated home from {} ({TIMEZONE}), seed {}, {} incidents",
                spec.days, spec.start, spec.seed, spec.incidents
            ),
            ignore: vec![AlertKind::Rhythm],
            alerts,
        },
        summary,
    })
}

/// Simulated seconds to the recording's time stamps, to the millisecond.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: DateTime<Utc>,
}

impl Clock {
    fn ts(&self, t: f64) -> DateTime<Utc> {
        self.start + Duration::milliseconds((t * 1000.0).floor() as i64)
    }
}

/// The weeks being lived: the plan and what is added to it.
struct Builder {
    rng: StdRng,
    geo: HomeGeo,
    plan: Plan,
    start: NaiveDate,
    clock: Clock,
    /// Messages the plan does not make: a carer's use of the door, SOS presses.
    extra: Vec<Emission>,
    pauses: Vec<NewPause>,
    /// Each incident with its sentence.
    played: Vec<(String, Incident)>,
    summary: RecordSummary,
}

/// A stretch of the plan written as it happens: durations and doings from `start`.
struct Story {
    start: f64,
    /// When what is written so far ends.
    t: f64,
    parts: Vec<(f64, Doing)>,
}

impl Story {
    fn new(start: f64) -> Story {
        Story {
            start,
            t: start,
            parts: Vec::new(),
        }
    }

    /// Adds `dur` seconds of `doing` and returns when they end.
    fn then(&mut self, dur: f64, doing: Doing) -> f64 {
        let dur = dur.max(1.0);
        self.parts.push((dur, doing));
        self.t += dur;
        self.t
    }
}

fn room(r: Room, level: Level) -> Doing {
    Doing::In(r, level)
}

impl Builder {
    /// Simulated seconds of day `d` at `hours` past local midnight.
    fn at(d: u32, hours: f64) -> f64 {
        f64::from(d) * DAY + hours * HOUR
    }

    fn day_name(&self, d: u32) -> String {
        let date = self.start + chrono::Days::new(u64::from(d));
        format!("day {} ({})", d + 1, date.format("%a %-d %b"))
    }

    fn hours(&mut self, lo: f64, hi: f64) -> f64 {
        self.rng.gen_range(lo..hi)
    }

    /// Places the absences and incidents over the days.
    fn live_the_weeks(&mut self, spec: &RecordSpec) -> anyhow::Result<()> {
        let days = spec.days;
        let mut weekdays: Vec<u32> = (0..6).collect();
        weekdays.shuffle(&mut self.rng);
        let service = [weekdays[0], weekdays[1]];
        let weekday = |d: u32| (spec.start.weekday().num_days_from_monday() + d) % 7;
        let is_service = |d: u32| service.contains(&weekday(d));
        let away = (days >= 6).then(|| self.rng.gen_range(2..days - 3));
        let near_away = |d: u32| away.is_some_and(|a| d + 1 >= a && d <= a + 2);
        let mut eligible: Vec<u32> = (1..days.saturating_sub(1))
            .filter(|d| !is_service(*d) && !near_away(*d))
            .collect();
        eligible.shuffle(&mut self.rng);
        let mut chosen: Vec<u32> = Vec::new();
        for d in eligible {
            if chosen.len() < spec.incidents && chosen.iter().all(|c| c.abs_diff(d) >= 2) {
                chosen.push(d);
            }
        }
        if chosen.len() < spec.incidents {
            anyhow::bail!(
                "{} incidents do not fit in {days} days: incidents keep a day apart and stay off day-service days and the night away; at most {} fit here",
                spec.incidents,
                chosen.len()
            );
        }
        let mut kinds = IncidentKind::ALL;
        kinds.shuffle(&mut self.rng);
        let incident_on = |d: u32| {
            chosen
                .iter()
                .position(|c| *c == d)
                .map(|i| kinds[i % kinds.len()])
        };
        for d in 0..days {
            if away == Some(d) {
                self.night_away(d);
            } else if away.is_some_and(|a| d == a + 1) {
                // Back from family's that afternoon.
            } else if let Some(kind) = incident_on(d) {
                self.incident(kind, d);
            } else if is_service(d) {
                self.day_service(d);
            } else if self.rng.gen_bool(0.15) {
                self.long_outing(d);
            }
        }
        self.played
            .sort_by(|a, b| start_of(&a.1).total_cmp(&start_of(&b.1)));
        Ok(())
    }

    /// A trip by car or bus: to a place `km` away, a stay, and back, ending at `to_t`.
    fn ride(&mut self, from_t: f64, to_t: f64, km: (f64, f64)) -> Track {
        let dist = self.rng.gen_range(km.0..km.1) * 1000.0;
        let dest = Xy::polar(dist, self.rng.gen_range(0.0..std::f64::consts::TAU));
        let drive = (dist / 8.0).min((to_t - from_t) / 3.0);
        let point = |t, p, urban| TrackPoint { t, p, urban };
        Track {
            points: vec![
                point(from_t, Xy::default(), 0.5),
                point(from_t + drive, dest, 1.0),
                point(to_t - drive, dest, 1.0),
                point(to_t, Xy::default(), 0.5),
            ],
        }
    }

    fn out_for(&mut self, from: f64, to: f64, km: (f64, f64)) {
        let track = self.ride(from, to, km);
        self.plan.splice(from, vec![(to - from, Doing::Out(track))]);
    }

    /// The day-service van picks the resident up after breakfast and brings them back at tea
    /// time.
    fn day_service(&mut self, d: u32) {
        let h = self.hours(9.0, 9.5);
        let pick = self.plan.home_from(Self::at(d, h));
        let h = self.hours(15.5, 16.5);
        let back = Self::at(d, h);
        if back - pick >= 2.0 * HOUR {
            self.out_for(pick, back, (1.0, 4.0));
            self.summary.day_service_visits += 1;
        }
    }

    /// Shopping and lunch with a friend, or a hospital's outpatient clinic: hours out.
    fn long_outing(&mut self, d: u32) {
        let h = self.hours(10.0, 11.0);
        let go = self.plan.home_from(Self::at(d, h));
        let dur = self.hours(3.5, 5.0) * HOUR;
        self.out_for(go, go + dur, (0.5, 3.0));
        self.summary.long_outings += 1;
    }

    /// A night at family's, entered beforehand as a `visit` pause from 09:00 that day to
    /// 18:00 the next.
    fn night_away(&mut self, d: u32) {
        let h = self.hours(10.0, 11.0);
        let leave = self.plan.home_from(Self::at(d, h));
        let h = self.hours(15.0, 17.0);
        let back = Self::at(d + 1, h);
        self.out_for(leave, back, (5.0, 20.0));
        self.pauses.push(NewPause {
            from: self.clock.ts(Self::at(d, 9.0)),
            until: self.clock.ts(Self::at(d + 1, 18.0)),
            reason: PauseReason::Visit,
            note: Some("a night at the family's".into()),
        });
        self.summary.nights_away += 1;
    }

    /// The entrance door opened at `t` and closed a few seconds later.
    fn door_used(&mut self, t: f64) {
        for (at, open) in [(t, true), (t + 6.0, false)] {
            self.extra.push(Emission {
                at,
                role: Role::EntranceDoor,
                msg: Msg::Door { open },
            });
        }
    }

    /// A carer lets themselves in with the key at the story's end, helps the resident up in
    /// `fell_in`, sits with them in the living room, and leaves; a minute later the resident
    /// walks into `then`, so the door is not taken for their going out.
    fn carer_visit(&mut self, s: &mut Story, fell_in: Room, then: Room) {
        self.door_used(s.t);
        s.then(45.0, room(fell_in, Level::Still));
        s.then(15.0 * MINUTE, room(fell_in, Level::Active));
        let leaves = s.then(8.0 * MINUTE, room(Room::LivingRoom, Level::Active));
        self.door_used(leaves - MINUTE);
        s.then(3.0 * MINUTE, room(then, Level::Active));
    }

    /// Plays incident `kind` on day `d`: its story goes into the plan, its sentence and
    /// moments into `played`.
    fn incident(&mut self, kind: IncidentKind, d: u32) {
        let day = self.day_name(d);
        let (text, incident, story) = match kind {
            IncidentKind::Fall => self.fall(d, &day),
            IncidentKind::EveningCollapse => self.evening_collapse(d, &day),
            IncidentKind::LongBath => self.long_bath(d, &day),
            IncidentKind::NotUp => self.not_up(d, &day),
            IncidentKind::NightExit => self.night_exit(d, &day),
            IncidentKind::Sos => self.sos(d, &day),
        };
        if !story.parts.is_empty() {
            self.plan.splice(story.start, story.parts);
        }
        self.played.push((text, incident));
    }

    /// A story starting at a moment of day `d` between `lo` and `hi` hours when the
    /// resident is at home.
    fn story_between(&mut self, d: u32, lo: f64, hi: f64) -> Story {
        let h = self.hours(lo, hi);
        Story::new(self.plan.home_from(Self::at(d, h)))
    }

    fn fall(&mut self, d: u32, day: &str) -> (String, Incident, Story) {
        let mut s = self.story_between(d, 10.0, 16.0);
        let r = if self.rng.gen_bool(0.5) {
            Room::Kitchen
        } else {
            Room::LivingRoom
        };
        let fell = s.then(2.0 * MINUTE, room(r, Level::Active));
        let still = 3.0 * HOUR + self.hours(20.0, 90.0) * MINUTE;
        let found = s.then(still, room(r, Level::Still));
        self.carer_visit(&mut s, r, Room::Kitchen);
        let text = format!(
            "{day}: falls in the {} at {} and lies still until a carer comes at {}",
            r.as_str().replace('_', " "),
            hhmm(fell),
            hhmm(found)
        );
        (text, Incident::Fall { fell, found }, s)
    }

    fn evening_collapse(&mut self, d: u32, day: &str) -> (String, Incident, Story) {
        let mut s = self.story_between(d, 19.5, 20.5);
        let fell = s.then(90.0, room(Room::Bathroom, Level::Active));
        let still = 3.0 * HOUR + self.hours(30.0, 60.0) * MINUTE;
        let found = s.then(still, room(Room::Bathroom, Level::Still));
        self.carer_visit(&mut s, Room::Bathroom, Room::Bedroom);
        let text = format!(
            "{day}: collapses in the bathroom at {}; the night carer finds them at {}",
            hhmm(fell),
            hhmm(found)
        );
        (text, Incident::EveningCollapse { fell, found }, s)
    }

    fn long_bath(&mut self, d: u32, day: &str) -> (String, Incident, Story) {
        let mut s = self.story_between(d, 19.5, 20.5);
        let from = s.start;
        let long = self.hours(65.0, 100.0) * MINUTE;
        let until = s.then(long, room(Room::Bathroom, Level::Active));
        s.then(3.0 * MINUTE, room(Room::Bedroom, Level::Active));
        let text = format!("{day}: a long bath, {} to {}", hhmm(from), hhmm(until));
        (text, Incident::LongBath { from }, s)
    }

    fn not_up(&mut self, d: u32, day: &str) -> (String, Incident, Story) {
        let mut s = Story::new(self.plan.home_from(Self::at(d, 4.5)));
        s.then(5.0 * MINUTE, room(Room::Bathroom, Level::Active));
        s.then(90.0, room(Room::Bedroom, Level::Active));
        let h = self.hours(10.5, 11.5);
        let up = Self::at(d, h);
        s.then(up - s.t, room(Room::Bedroom, Level::Still));
        s.then(10.0 * MINUTE, room(Room::Bedroom, Level::Active));
        s.then(15.0 * MINUTE, room(Room::Bathroom, Level::Active));
        let text = format!(
            "{day}: unwell after a trip to the toilet at 04:30, stays in bed without moving until {}",
            hhmm(up)
        );
        (text, Incident::NotUp { day: d, up }, s)
    }

    fn night_exit(&mut self, d: u32, day: &str) -> (String, Incident, Story) {
        let mut s = self.story_between(d, 2.0, 3.5);
        s.then(2.0 * MINUTE, room(Room::Bedroom, Level::Active));
        let out = s.then(90.0, room(Room::LivingRoom, Level::Active));
        let track = self.lost_and_brought_back(out);
        let back = s.then(track.end_t() - out, Doing::Out(track));
        s.then(10.0 * MINUTE, room(Room::LivingRoom, Level::Active));
        s.then(5.0 * MINUTE, room(Room::Bathroom, Level::Active));
        let text = format!(
            "{day}: leaves the house at {}, confused and without a tracker; a neighbour brings them back at {}",
            hhmm(out),
            hhmm(back)
        );
        (text, Incident::NightExit { out, back }, s)
    }

    /// Two presses of the pendant; the day goes on as planned.
    fn sos(&mut self, d: u32, day: &str) -> (String, Incident, Story) {
        let at = self.story_between(d, 9.0, 20.0).start;
        for t in [at, at + 20.0] {
            self.extra.push(Emission {
                at: t,
                role: Role::Button,
                msg: Msg::Sos,
            });
        }
        let text = format!(
            "{day}: feels faint and presses the SOS pendant at {}, twice",
            hhmm(at)
        );
        (text, Incident::Sos { at }, Story::new(at))
    }

    /// A walk that leads away from home for 20–45 minutes, and the way back with a neighbour.
    fn lost_and_brought_back(&mut self, t0: f64) -> Track {
        let speed = life::walking_speed(&mut self.rng);
        let minutes = self.hours(20.0, 45.0) * MINUTE;
        let bearing = self.geo.street_bearing;
        let away = life::wandering_walk(&mut self.rng, Xy::default(), bearing, t0, minutes, speed);
        let home = life::street_walk(
            &mut self.rng,
            away.end_p(),
            Xy::default(),
            bearing,
            away.end_t(),
            1.0,
        );
        let mut points = away.points;
        points.extend(home.points.into_iter().skip(1));
        Track { points }
    }
}

fn start_of(i: &Incident) -> f64 {
    match i {
        Incident::Fall { fell, .. } | Incident::EveningCollapse { fell, .. } => *fell,
        Incident::LongBath { from, .. } => *from,
        Incident::NotUp { up, .. } => *up,
        Incident::NightExit { out, .. } => *out,
        Incident::Sos { at } => *at,
    }
}

/// An event the rules count as activity: motion seen, or the entrance door.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Activity {
    at: f64,
    ts: DateTime<Utc>,
    room: Option<Room>,
    door_open: Option<bool>,
}

fn activities(emissions: &[Emission], clock: &Clock) -> Vec<Activity> {
    emissions
        .iter()
        .filter_map(|e| {
            let (room, door_open) = match (&e.msg, e.role) {
                (Msg::Motion { motion: true, .. }, Role::Motion(r)) => (Some(r), None),
                (Msg::Door { open }, _) => (None, Some(*open)),
                _ => return None,
            };
            Some(Activity {
                at: e.at,
                ts: clock.ts(e.at),
                room,
                door_open,
            })
        })
        .collect()
}

fn first_from(acts: &[Activity], t: f64) -> Option<&Activity> {
    acts.get(acts.partition_point(|a| a.at < t))
}

fn last_before(acts: &[Activity], t: f64) -> Option<&Activity> {
    acts[..acts.partition_point(|a| a.at < t)].last()
}

/// The first activity of the stay in `r` that is going on at `t`: the rules' dwell counts
/// from it.
fn stay_start(acts: &[Activity], r: Room, t: f64) -> Option<&Activity> {
    let end = acts.partition_point(|a| a.at < t);
    let begin = acts[..end]
        .iter()
        .rposition(|a| a.room != Some(r))
        .map_or(0, |i| i + 1);
    acts[..end].get(begin)
}

/// The first activity after `t` that is not in `r`: the end of a stay.
fn leaving(acts: &[Activity], r: Room, t: f64) -> Option<&Activity> {
    acts.iter().find(|a| a.at > t && a.room != Some(r))
}

/// Why the rules call the resident active again after stillness.
fn resumed(a: &Activity) -> String {
    match (a.room, a.door_open) {
        (Some(r), _) => format!("motion resumed ({})", r.as_str()),
        (None, Some(true)) => "door opened".into(),
        (None, _) => "door closed".into(),
    }
}

fn moved(a: &Activity) -> String {
    match a.room {
        Some(r) => format!("moved to {}", r.as_str()),
        None => "door used".into(),
    }
}

fn resolved(a: &Activity, reason: String) -> Resolution {
    Resolution::Resolved {
        at: Some(a.ts),
        reason: Some(reason),
    }
}

/// What the rules should make of the home's events: the alerts of each incident.
struct Foresight<'a> {
    acts: &'a [Activity],
    clock: Clock,
    rules: &'a RuleSettings,
}

impl Foresight<'_> {
    /// The alerts `incident` should raise; `text` tells it.
    fn alerts(&self, incident: &Incident, text: &str) -> Vec<Expectation> {
        let found = match *incident {
            Incident::Fall { found, .. } => vec![self.still(found)],
            Incident::EveningCollapse { fell, found } => {
                vec![self.dwell(fell), self.still(found)]
            }
            Incident::LongBath { from } => vec![self.dwell(from + 1.0)],
            Incident::NotUp { day, up } => self.not_up(day, up),
            Incident::NightExit { out, back } => vec![self.night_exit(out, back)],
            Incident::Sos { at } => vec![Some(Expectation {
                device: Some(device_id(Role::Button).to_owned()),
                ..alert(
                    AlertKind::Sos,
                    Severity::Critical,
                    self.clock.ts(at),
                    Resolution::open(),
                )
            })],
        };
        found
            .into_iter()
            .flatten()
            .map(|e| Expectation {
                incident: text.to_owned(),
                ..e
            })
            .collect()
    }

    fn day_threshold(&self) -> Duration {
        secs(self.rules.inactivity.day_threshold_s)
    }

    /// Stillness until someone comes at `found`: the day threshold after the last activity
    /// (by day, and at night when the last activity was not in bed), resolved by the next.
    fn still(&self, found: f64) -> Option<Expectation> {
        let last = last_before(self.acts, found)?;
        let next = first_from(self.acts, found)?;
        Some(alert(
            AlertKind::Inactivity,
            Severity::High,
            last.ts + self.day_threshold(),
            resolved(next, resumed(next)),
        ))
    }

    /// The bathroom stay going on at `inside`, longer than the room's limit.
    fn dwell(&self, inside: f64) -> Option<Expectation> {
        let limit = self.rules.dwell.limits_s.get(Room::Bathroom.as_str())?;
        let since = stay_start(self.acts, Room::Bathroom, inside)?;
        let left = leaving(self.acts, Room::Bathroom, since.at)?;
        Some(alert(
            AlertKind::Dwell,
            Severity::High,
            since.ts + secs(*limit),
            resolved(left, moved(left)),
        ))
    }

    /// Last moved in bed before the day began, up at `up`: the day threshold counts from
    /// `day_starts`, and the morning check finds nothing since then.
    fn not_up(&self, day: u32, up: f64) -> Vec<Option<Expectation>> {
        let i = &self.rules.inactivity;
        let local = |hhmm: Option<&String>| {
            let t = LocalTime::parse(hhmm?)?;
            let h = f64::from(t.minutes_of_day()) / 60.0;
            Some(self.clock.ts(Builder::at(day, h)))
        };
        let Some(next) = first_from(self.acts, up) else {
            return Vec::new();
        };
        let end = || resolved(next, resumed(next));
        vec![
            local(Some(&i.day_starts)).map(|t| {
                alert(
                    AlertKind::Inactivity,
                    Severity::High,
                    t + self.day_threshold(),
                    end(),
                )
            }),
            local(i.morning_deadline.as_ref())
                .map(|t| alert(AlertKind::NoMorningActivity, Severity::High, t, end())),
        ]
    }

    /// Out through the entrance door at night at `out`, back indoors at `back`.
    fn night_exit(&self, out: f64, back: f64) -> Option<Expectation> {
        let door = self
            .acts
            .iter()
            .find(|a| a.at >= out && a.door_open == Some(true))?;
        let inside = self
            .acts
            .iter()
            .find(|a| a.at >= back && a.room.is_some())?;
        let room = inside.room.map_or("", Room::as_str);
        Some(alert(
            AlertKind::NightExit,
            Severity::Critical,
            door.ts + secs(self.rules.night_exit.confirm_s),
            resolved(inside, format!("motion indoors ({room})")),
        ))
    }
}

/// The low-battery warnings of the home's sensors: each from the first report below
/// `low_battery_pct` to the first above it + 5, after the fresh cell went in.
fn battery_alerts(
    emissions: &[Emission],
    clock: &Clock,
    rules: &RuleSettings,
    start: NaiveDate,
) -> Vec<Expectation> {
    let pct = rules.low_battery_pct;
    let mut low: std::collections::BTreeMap<Role, usize> = std::collections::BTreeMap::new();
    let mut out: Vec<Expectation> = Vec::new();
    for e in emissions {
        let Msg::Heartbeat {
            battery: Some(level),
        } = e.msg
        else {
            continue;
        };
        match low.get(&e.role) {
            None if level < pct => {
                let day = (e.at / DAY).floor() as u32;
                let date = start + chrono::Days::new(u64::from(day));
                let text = format!(
                    "day {} ({}): the {}'s battery reports {level} %; a fresh one goes in {BATTERY_SWAP_DAYS} days later",
                    day + 1,
                    date.format("%a %-d %b"),
                    e.role.label()
                );
                low.insert(e.role, out.len());
                out.push(Expectation {
                    device: Some(device_id(e.role).to_owned()),
                    incident: text,
                    ..alert(
                        AlertKind::LowBattery,
                        Severity::Warning,
                        clock.ts(e.at),
                        Resolution::open(),
                    )
                });
            }
            Some(&i) if level > pct.saturating_add(BATTERY_HYSTERESIS) => {
                out[i].resolution = Some(Resolution::Resolved {
                    at: Some(clock.ts(e.at)),
                    reason: Some(format!("battery at {level}%")),
                });
                low.remove(&e.role);
            }
            _ => {}
        }
    }
    out
}

fn alert(
    kind: AlertKind,
    severity: Severity,
    at: DateTime<Utc>,
    resolution: Resolution,
) -> Expectation {
    Expectation {
        kind,
        device: None,
        severity: Some(severity),
        at: Some(at),
        resolution: Some(resolution),
        incident: String::new(),
    }
}

fn secs(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1_000_000))
}

/// The lines in the order a gateway delivers them: in time order, but a few late.
fn deliver(rng: &mut StdRng, emissions: &[Emission], clock: &Clock) -> Vec<String> {
    let mut keyed: Vec<(f64, String)> = emissions
        .iter()
        .filter_map(|e| line(e, clock))
        .enumerate()
        .map(|(i, l)| {
            let late = if rng.gen_bool(LATE_SHARE) {
                f64::from(rng.gen_range(1..=30u32)) + 0.5
            } else {
                0.0
            };
            (i as f64 + late, l)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    keyed.into_iter().map(|(_, l)| l).collect()
}

/// One event line: the native payload with the device, kind and time put first.
fn line(e: &Emission, clock: &Clock) -> Option<String> {
    let (kind, payload) = e.msg.wire()?;
    let rest = payload.strip_prefix('{')?.strip_suffix('}')?;
    let sep = if rest.is_empty() { "" } else { "," };
    Some(format!(
        r#"{{"device":"{}","kind":"{}","ts":"{}"{sep}{rest}}}"#,
        device_id(e.role),
        kind.as_str(),
        clock.ts(e.at).to_rfc3339_opts(SecondsFormat::Millis, true)
    ))
}

/// `resident.json`: the home's devices, the rules a home with a sensor in every room and a
/// resident who may wander gets (dwell and night exit on), and the pauses.
fn resident_json(roles: &[Role], pauses: &[NewPause]) -> Value {
    let devices: Vec<Value> = roles
        .iter()
        .map(|r| {
            let mut d = json!({"id": device_id(*r), "kind": r.kind()});
            match r {
                Role::Motion(room) => d["room"] = json!(room.as_str()),
                Role::EntranceDoor => d["role"] = json!("entrance"),
                _ => {}
            }
            d
        })
        .collect();
    json!({
        "timezone": TIMEZONE.name(),
        "rules": {"dwell": {"enabled": true}, "night_exit": {"enabled": true}},
        "devices": devices,
        "pauses": pauses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(days: u32, incidents: usize) -> RecordSpec {
        RecordSpec {
            days,
            seed: 7,
            start: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap_or_default(),
            incidents,
        }
    }

    #[test]
    fn the_same_seed_records_the_same_home() -> anyhow::Result<()> {
        let a = record(&spec(14, 3))?;
        assert_eq!(a, record(&spec(14, 3))?);
        let other = record(&RecordSpec {
            seed: 8,
            ..spec(14, 3)
        })?;
        assert_ne!(a.events, other.events);
        Ok(())
    }

    #[test]
    fn lines_are_native_messages_some_delivered_late() -> anyhow::Result<()> {
        let r = record(&spec(10, 0))?;
        let mut late = 0;
        let mut last = String::new();
        for l in &r.events {
            let v: Value = serde_json::from_str(l)?;
            let ts = v["ts"].as_str().unwrap_or_default().to_owned();
            assert!(v["device"].is_string() && v["kind"].is_string(), "{l}");
            assert!(l.starts_with(r#"{"device":"#), "{l}");
            if ts < last {
                late += 1;
            }
            last = last.max(ts);
        }
        assert!(late > 10, "{late} lines out of order");
        assert_eq!(r.summary.events, r.events.len());
        assert!(r.events.len() > 10 * 800, "{} lines", r.events.len());
        Ok(())
    }

    #[test]
    fn weeks_hold_day_service_outings_a_paused_night_away_and_the_incidents() -> anyhow::Result<()>
    {
        let r = record(&spec(60, 6))?;
        let s = &r.summary;
        assert!((14..=18).contains(&s.day_service_visits), "{s:?}");
        assert_eq!(s.nights_away, 1);
        assert_eq!(s.incidents.len(), 6);
        let pauses = r.resident["pauses"].as_array().cloned().unwrap_or_default();
        assert_eq!(pauses.len(), 1);
        assert_eq!(pauses[0]["reason"], "visit");
        let kinds: Vec<AlertKind> = r.expected.alerts.iter().map(|e| e.kind).collect();
        for k in [
            AlertKind::Inactivity,
            AlertKind::NoMorningActivity,
            AlertKind::Dwell,
            AlertKind::NightExit,
            AlertKind::Sos,
        ] {
            assert!(kinds.contains(&k), "{k:?} in {kinds:?}");
        }
        // Fall, collapse and not-up give inactivity; collapse and long bath, dwell; not-up the
        // morning check.
        assert_eq!(kinds.len(), 8, "{:#?}", r.expected.alerts);
        assert!(r.expected.alerts.iter().all(|e| e.at.is_some()));
        Ok(())
    }

    #[test]
    fn over_a_year_batteries_run_low_and_are_replaced() -> anyhow::Result<()> {
        let r = record(&spec(365, 0))?;
        let low: Vec<&Expectation> = r
            .expected
            .alerts
            .iter()
            .filter(|e| e.kind == AlertKind::LowBattery)
            .collect();
        assert!(!low.is_empty(), "{:?}", r.summary);
        assert_eq!(r.summary.battery_swaps, low.len());
        for e in low {
            let Some(Resolution::Resolved {
                at: Some(end),
                reason,
            }) = &e.resolution
            else {
                panic!("not replaced: {e:?}");
            };
            let days = (*end - e.at.unwrap_or_default()).num_hours() as f64 / 24.0;
            assert!((5.0..5.1).contains(&days), "{days} days: {e:?}");
            assert_eq!(reason.as_deref(), Some("battery at 100%"));
        }
        Ok(())
    }

    #[test]
    fn too_many_incidents_or_days_are_refused() {
        assert!(record(&spec(5, 4)).is_err());
        assert!(record(&spec(0, 0)).is_err());
        assert!(record(&spec(MAX_DAYS + 1, 0)).is_err());
    }
}
