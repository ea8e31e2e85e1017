//! The engine owns every resident's rule state and turns events and time into alert decisions.
//!
//! # How the shell drives it
//! Every input carries `now`. The shell sleeps until [`Engine::poll_timeout`], calls
//! [`Engine::handle_timeout`], drains [`Engine::poll_decision`] (FIFO) and persists the
//! [`ResidentState`] of each resident [`Engine::take_dirty`] names. A condition is open at most once
//! at a time per [`AlertKey`]; the engine remembers which are open in the persisted state, so a
//! restart never opens one twice. In a decision, `at` is the rule's own instant for
//! timer-driven opens (the deadline, even if the hub fires it late) and `now` otherwise.
//!
//! Event times (`ts`, `received_at`) later than `now` are clamped to `now`, so a device clock that
//! runs ahead can neither postpone a deadline nor hide later fixes.
//!
//! # Rules
//! ## inactivity (High)
//! Applies to residents with at least one motion or door device while `inactivity.enabled`.
//! Activity is [`Reading::is_activity`] from any device. The silence starts at the reference
//! instant: the latest of the last activity, the moment the rule last became applicable (first
//! configuration, enabling, or the first motion/door device), and, with `pause_when_away`, the
//! moment the resident was confirmed back inside a safe zone.
//!
//! Local time (resident time zone, DST-aware) splits into *day* `[day_starts, night_starts)` and
//! *night* (the rest; either order of the two times works). At an instant `t` the resident is
//! overdue when the silence **within the current period**, `t − max(reference, start of the
//! period containing t)`, reaches that period's threshold, or when the whole silence
//! `t − reference` reaches the larger threshold (a backstop). The deadline is the earliest such
//! `t`; it fires at exactly that instant, not a second before. Counting only the silence within
//! the current period is a deliberate choice: measuring the whole night against the day
//! threshold (`t − reference ≥ threshold(t)`) would raise an alert at `day_starts` every morning
//! for anyone who sleeps longer than the day threshold.
//!
//! The next activity that moves the deadline past `now` resolves the alert with
//! "motion resumed (room)", "door opened" or "door closed". While the geofence exit condition is
//! open and `pause_when_away` is set, no inactivity deadline runs.
//!
//! ## no_morning_activity (High)
//! With `morning_deadline` set (and the inactivity rule applicable), at each local day's
//! `morning_deadline` the engine checks whether any activity was seen since the latest
//! `day_starts` before it; if not (and the resident is not away, as above), it opens. The moment
//! the rule became applicable counts as seen, so the installation day raises nothing. A missing
//! or doubled local time resolves to its earliest valid instant. The next check instant is
//! persisted, so a check missed while the hub was down fires (once) at the next
//! `handle_timeout`. Any activity at or after `since` resolves it.
//!
//! ## geofence_exit (High by day, Critical at night)
//! Applies to residents with at least one safe zone. Each fresh fix is classified:
//! - *ambiguous* if its accuracy exceeds `max_accuracy_m` (or is not a finite, non-negative number);
//! - *outside* if its distance to every zone is greater than its accuracy (missing accuracy = 0):
//!   even the far edge of its uncertainty circle is out;
//! - *inside* if it lies at least `m` inside some zone, with `m = min(reentry_margin_m,
//!   zone depth / 2)`: the margin never demands more than half of the zone's deepest interior, so
//!   a small zone can still be re-entered;
//! - *ambiguous* otherwise (near an edge).
//!
//! A fix whose `ts` is not newer than the newest fix seen is stale and changes nothing. An outside
//! fix adds to the out-streak and clears the in-streak; an inside fix does the reverse. An
//! ambiguous fix clears the out-streak while no alert is open (so jitter at an edge can never
//! add up to an alert) and leaves the in-streak alone while one is open. `confirm_fixes`
//! consecutive outside fixes open the alert (Critical when the fix's local time is in
//! `[geofence.night_starts, night_ends)`), every further fresh fix emits an Update with the new
//! position, and `confirm_fixes` consecutive inside fixes resolve it ("back inside <zone>").
//! When `configure` changes the zones or geofence settings the streaks restart from the last fix:
//! an open alert resolves at once if that fix is inside, and an outside fix counts as one.
//! Deleting every zone resolves an open alert. `restore` does not re-classify the last fix.
//!
//! ## sos (Critical)
//! Every press opens at once, keyed by device. A press within 60 s of the previous press of the
//! same device is an Update (the press count grows); a later press opens again (the shell merges
//! it into an unresolved alert). SOS never self-resolves and is not listed as an open condition.
//!
//! ## staff resolutions
//! The shell reports an alert staff resolved with [`Engine::staff_closed`]: the condition is
//! forgotten, so it is raised again if it recurs. An SOS burst ends (the next press opens), a
//! geofence exit needs `confirm_fixes` new outside fixes, inactivity and device_offline count
//! their silence afresh from the resolution (as after a visit), low_battery reopens at the next
//! low reading, and the morning check waits for the next morning.
//!
//! ## device_offline (Warning), low_battery (Warning)
//! Per configured device: the deadline is the later of the last message's `received_at` and the
//! moment the device was configured, plus `offline.after_s(kind)`. After `restore`, devices that
//! are not already offline count from the restore instant: the hub's own downtime is not
//! evidence against a device. An MQTT will (`Reading::Offline`) opens at once unless a newer
//! message was already received. Any later message resolves ("device reported again").
//! A battery level below `low_battery_pct` opens low_battery; above `low_battery_pct + 5` it
//! resolves. Events from devices not in the configuration still count for activity, fixes and
//! SOS, but not for device health.
//!
//! ## configuration changes
//! `configure` and `restore` resolve what no longer holds: conditions of removed devices
//! ("device removed"), inactivity when the rule no longer applies or the new thresholds put the
//! deadline after `now`, the morning alert when the check is turned off, device_offline when the
//! new `after_s` puts the deadline after `now`, low_battery when the battery is above the new
//! threshold + 5. Removing a resident emits nothing. Unparseable local times (the API validates
//! them) fall back to the protocol defaults.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Indoor activity this long after a confirmed exit means the resident is home again.
const AWAY_MARGIN_S: i64 = 60;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use mimamori_protocol::pause::Pause;
use mimamori_protocol::settings::{
    GeofenceSettings, InactivitySettings, LocalTime, NightExitSettings,
};
use mimamori_protocol::{
    AlertKind, DeviceEvent, DeviceKind, DeviceRole, Reading, RuleSettings, Severity,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock;
use crate::zone::SafeZone;
use tag_away::TagAwayState;

mod tag_away;

/// Presses of one SOS button this close together are one incident.
const SOS_JOIN: Duration = Duration::seconds(60);
/// Longest threshold honoured; larger settings behave like this and cannot overflow time arithmetic.
const MAX_THRESHOLD_S: u64 = 366 * 24 * 3600;
/// After a restart, overdue deadlines wait this long (unless [`Engine::set_restart_grace`]
/// says otherwise) for devices to reconnect and deliver what they buffered while the hub was
/// down, so a resident who moved all along is not alerted at start-up.
pub const RESTART_GRACE: Duration = Duration::seconds(60);
/// A device whose `ts` is further than this from the hub's time of receipt has a wrong clock,
/// unless it is delivering what it buffered (see [`Resident::reading_time`]).
pub const MAX_CLOCK_SKEW: Duration = Duration::seconds(60);
/// A fix identical to the previous one (coordinates and accuracy) this soon after it is the
/// same fix delivered again.
const DUPLICATE_FIX: Duration = Duration::seconds(30);
/// Motion this soon after the entrance door opened is the resident passing the door on the way
/// out (a hall sensor), not a return: it does not cancel a night exit.
const DOOR_PASSING: Duration = Duration::seconds(30);
/// Hysteresis between opening and resolving low_battery, in percentage points.
const BATTERY_HYSTERESIS: u8 = 5;

/// A device of a resident as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The device id, as in [`DeviceEvent::device_id`].
    pub id: String,
    /// What kind of device it is; picks the offline threshold.
    pub kind: DeviceKind,
    /// The room it watches, when known; a motion event naming no room is taken to be from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// What the device is for, when marked (a door at the entrance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<DeviceRole>,
}

/// Everything the engine needs to know about one resident.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidentConfig {
    /// The resident's id.
    pub resident_id: i64,
    /// The resident's local time zone, for day/night and the morning check.
    pub timezone: Tz,
    /// The resident's rule settings.
    pub settings: RuleSettings,
    /// The resident's validated safe zones.
    pub zones: Vec<SafeZone>,
    /// The resident's devices.
    pub devices: Vec<DeviceInfo>,
    /// Dated pauses of the watch rules (see the module docs); ended ones are ignored.
    pub pauses: Vec<Pause>,
}

/// Identifies one condition: at most one alert per key is open at a time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    /// The resident the condition is about.
    pub resident_id: i64,
    /// The rule.
    pub kind: AlertKind,
    /// The device id for sos, device_offline and low_battery; empty otherwise.
    pub subject: String,
}

/// What the shell must do with an alert.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// A condition started: open an alert.
    Open {
        /// The condition.
        key: AlertKey,
        /// The device the alert is about or came from, if any.
        device_id: Option<String>,
        /// How urgent it is.
        severity: Severity,
        /// When the condition began (see the module docs).
        at: DateTime<Utc>,
        /// Rule-specific facts for staff.
        details: serde_json::Value,
    },
    /// An open condition has news (a new position, another SOS press). If its alert is
    /// gone (staff resolved it), the shell opens a new one with these facts.
    Update {
        /// The condition.
        key: AlertKey,
        /// The device the news came from, if any.
        device_id: Option<String>,
        /// How urgent the condition is.
        severity: Severity,
        /// When the news arrived.
        at: DateTime<Utc>,
        /// The full, updated details.
        details: serde_json::Value,
    },
    /// A condition cleared by itself.
    Resolve {
        /// The condition.
        key: AlertKey,
        /// When it cleared.
        at: DateTime<Utc>,
        /// Why, for the audit trail.
        reason: String,
    },
}

/// A position fix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Radius of uncertainty in metres, when the device gave one.
    pub accuracy_m: Option<f64>,
    /// When the fix was taken (clamped to the hub's time of receipt).
    pub ts: DateTime<Utc>,
}

/// Where the resident is with respect to the safe zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// No safe zone, or no fix yet.
    Unknown,
    /// Not confirmed outside.
    Inside,
    /// Confirmed outside every safe zone (the geofence exit condition is open).
    Outside,
}

/// One device on the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Device id.
    pub id: String,
    /// Device kind.
    pub kind: DeviceKind,
    /// When the hub last received a message from it.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The last battery level reported.
    pub battery: Option<u8>,
    /// False while its device_offline condition is open.
    pub online: bool,
    /// The device's clock is off by more than [`MAX_CLOCK_SKEW`]: its readings are taken at
    /// the hub's time of receipt.
    #[serde(default)]
    pub clock_skew: bool,
}

/// One resident on the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResidentStatus {
    /// The resident.
    pub resident_id: i64,
    /// The newest activity seen.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// The room of the newest activity, when a motion sensor named one.
    pub last_activity_room: Option<String>,
    /// The newest fix.
    pub last_position: Option<Position>,
    /// Inside or outside the safe zones.
    pub location: Location,
    /// Devices in configuration order.
    pub devices: Vec<DeviceStatus>,
    /// Conditions open now (SOS excluded: it has no end the engine could see), sorted.
    pub open_conditions: Vec<AlertKind>,
    /// Until when the watch rules are paused, while a dated pause runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<DateTime<Utc>>,
    /// Since when the resident is out through the entrance door, while they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_since: Option<DateTime<Utc>>,
}

/// What the engine remembers about one resident across restarts; the shell stores it as JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResidentState {
    #[serde(with = "crate::stamp::option")]
    configured_at: Option<DateTime<Utc>>,
    inactivity: InactivityState,
    morning: MorningState,
    geofence: GeofenceState,
    devices: BTreeMap<String, DeviceState>,
    sos: BTreeMap<String, SosBurst>,
    dwell: DwellState,
    night_exit: NightExitState,
    tag_away: TagAwayState,
    pause: pause::PauseState,
    away: away::DoorAwayState,
    rhythm: rhythm::RhythmState,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
struct DwellState {
    /// The room of the latest activity, while it is a room.
    room: Option<String>,
    /// Since when every activity has been in `room`.
    since: Option<DateTime<Utc>>,
    open: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
struct NightExitState {
    /// When the entrance door opened at night with no indoor motion since.
    door_at: Option<DateTime<Utc>>,
    door: Option<String>,
    open: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
struct InactivityState {
    /// When the rule last became applicable; `None` while it does not apply.
    #[serde(with = "crate::stamp::option")]
    watch_since: Option<DateTime<Utc>>,
    #[serde(with = "crate::stamp::option")]
    last_activity_at: Option<DateTime<Utc>>,
    last_activity_room: Option<String>,
    open: bool,
    /// Whether a motion event has named one of the sleep rooms: from then on the resident's
    /// bed is known to be watched, so stillness elsewhere is never taken for sleep.
    sleep_room_seen: bool,
    /// Whether the open alert (or the condition) is that no activity sensor works.
    blind: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
struct MorningState {
    #[serde(with = "crate::stamp::option")]
    next_check: Option<DateTime<Utc>>,
    /// The `since` of the open alert; `Some` while it is open.
    #[serde(with = "crate::stamp::option")]
    open_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
struct GeofenceState {
    last_fix: Option<Position>,
    out_streak: u32,
    in_streak: u32,
    open: bool,
    #[serde(with = "crate::stamp::option")]
    returned_at: Option<DateTime<Utc>>,
    /// The `ts` of the fix that confirmed the open exit.
    opened_at: Option<DateTime<Utc>>,
    /// The fix whose position the open alert shows.
    shown: Option<Position>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
struct DeviceState {
    #[serde(with = "crate::stamp::option")]
    watch_from: Option<DateTime<Utc>>,
    #[serde(with = "crate::stamp::option")]
    last_seen_at: Option<DateTime<Utc>>,
    battery: Option<u8>,
    offline: Option<OfflineCause>,
    low_battery: bool,
    /// `received_at − ts` of the last message in milliseconds, and when it was received.
    last_offset: Option<(i64, DateTime<Utc>)>,
    clock_skew: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OfflineCause {
    Silent,
    Will,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct SosBurst {
    #[serde(with = "crate::stamp")]
    first_press_at: DateTime<Utc>,
    #[serde(with = "crate::stamp")]
    last_press_at: DateTime<Utc>,
    presses: u32,
}

/// The settings a resident's rules read, with local times parsed once.
#[derive(Debug, Clone)]
struct Compiled {
    cfg: ResidentConfig,
    day_starts: LocalTime,
    night_starts: LocalTime,
    morning: Option<LocalTime>,
    geo_night: (u32, u32),
    night_exit: (u32, u32),
    tag_away: (LocalTime, LocalTime),
}

impl Compiled {
    fn new(cfg: ResidentConfig) -> Compiled {
        let di = InactivitySettings::default();
        let dg = GeofenceSettings::default();
        let parse = |s: &str, fallback: &str| {
            LocalTime::parse(s)
                .or_else(|| LocalTime::parse(fallback))
                .unwrap_or(LocalTime { hour: 0, minute: 0 })
        };
        let i = &cfg.settings.inactivity;
        let g = &cfg.settings.geofence;
        let mut day_starts = parse(&i.day_starts, &di.day_starts);
        let mut night_starts = parse(&i.night_starts, &di.night_starts);
        if day_starts == night_starts {
            // An empty day would make every instant night; fall back rather than guess.
            day_starts = parse(&di.day_starts, "06:00");
            night_starts = parse(&di.night_starts, "22:00");
        }
        let morning = i.morning_deadline.as_deref().and_then(LocalTime::parse);
        let geo_night = (
            clock::secs(parse(&g.night_starts, &dg.night_starts)),
            clock::secs(parse(&g.night_ends, &dg.night_ends)),
        );
        let (n, dn) = (&cfg.settings.night_exit, NightExitSettings::default());
        let night_exit = (
            clock::secs(parse(&n.from, &dn.from)),
            clock::secs(parse(&n.until, &dn.until)),
        );
        Compiled {
            night_exit,
            tag_away: tag_away::window(&cfg.settings.tag_away),
            day_starts,
            night_starts,
            morning,
            geo_night,
            cfg,
        }
    }

    fn id(&self) -> i64 {
        self.cfg.resident_id
    }

    fn tz(&self) -> Tz {
        self.cfg.timezone
    }

    fn settings(&self) -> &RuleSettings {
        &self.cfg.settings
    }

    fn inactivity_applies(&self) -> bool {
        self.settings().inactivity.enabled
            && self
                .cfg
                .devices
                .iter()
                .any(|d| matches!(d.kind, DeviceKind::Motion | DeviceKind::Door))
    }

    fn device(&self, id: &str) -> Option<&DeviceInfo> {
        self.cfg.devices.iter().find(|d| d.id == id)
    }

    fn key(&self, kind: AlertKind, subject: &str) -> AlertKey {
        AlertKey {
            resident_id: self.id(),
            kind,
            subject: subject.to_owned(),
        }
    }

    fn is_day(&self, t: DateTime<Utc>) -> bool {
        clock::in_window(
            clock::local_secs(self.tz(), t),
            clock::secs(self.day_starts),
            clock::secs(self.night_starts),
        )
    }

    /// Whether `id` is the entrance door: marked so, or the resident's only door device.
    fn is_entrance(&self, id: &str) -> bool {
        let doors = || {
            self.cfg
                .devices
                .iter()
                .filter(|d| d.kind == DeviceKind::Door)
        };
        match doors().find(|d| d.id == id) {
            None => false,
            Some(d) if d.role == Some(DeviceRole::Entrance) => true,
            Some(_) => {
                doors().count() == 1 && !doors().any(|d| d.role == Some(DeviceRole::Entrance))
            }
        }
    }

    fn dwell_limit(&self, room: &str) -> Option<u64> {
        let d = &self.settings().dwell;
        d.enabled.then(|| d.limits_s.get(room).copied()).flatten()
    }

    fn is_sleep_room(&self, room: Option<&str>) -> bool {
        room.is_some_and(|r| {
            self.settings()
                .inactivity
                .sleep_rooms
                .iter()
                .any(|s| s == r)
        })
    }

    fn has_sleep_room_device(&self) -> bool {
        self.cfg
            .devices
            .iter()
            .any(|d| self.is_sleep_room(d.room.as_deref()))
    }

    /// The inactivity deadline for silence since `reference`, and the threshold that decided it.
    /// `in_bed` is false once a sleep room is known and the last activity was elsewhere: the
    /// night threshold then never applies, so a collapse at 19:30 in the bathroom is not
    /// waited out until morning.
    fn inactivity_deadline(
        &self,
        reference: DateTime<Utc>,
        in_bed: bool,
    ) -> Option<(DateTime<Utc>, u64)> {
        let i = &self.settings().inactivity;
        let day_s = i.day_threshold_s.clamp(1, MAX_THRESHOLD_S);
        if !in_bed {
            return Some((reference.checked_add_signed(secs(day_s))?, day_s));
        }
        let night_s = i.night_threshold_s.clamp(1, MAX_THRESHOLD_S);
        let max_s = day_s.max(night_s);
        let backstop = reference.checked_add_signed(secs(max_s))?;
        let boundaries = [clock::secs(self.day_starts), clock::secs(self.night_starts)];
        let (mut s, mut anchor, mut day) = (reference, reference, self.is_day(reference));
        // Each pass crosses one period or offset change; a threshold of a year needs ~800.
        for _ in 0..1_000 {
            let th = if day { day_s } else { night_s };
            let candidate = anchor.checked_add_signed(secs(th))?.max(s);
            let end = clock::next_change(self.tz(), s, &boundaries)?;
            if candidate < end && candidate <= backstop {
                return Some((candidate, th));
            }
            if end >= backstop {
                break;
            }
            s = end;
            let now_day = self.is_day(end);
            if now_day != day {
                day = now_day;
                anchor = end;
            }
        }
        Some((backstop, max_s))
    }

    fn severity_of_exit(&self, ts: DateTime<Utc>) -> Severity {
        let (from, to) = self.geo_night;
        if clock::in_window(clock::local_secs(self.tz(), ts), from, to) {
            Severity::Critical
        } else {
            Severity::High
        }
    }

    /// Where a fix puts the resident, and the zone nearest to it (deepest inside) with its distance.
    fn classify(&self, p: &Position) -> (FixClass, Option<(&SafeZone, f64)>) {
        let g = &self.settings().geofence;
        let nearest = self
            .cfg
            .zones
            .iter()
            .map(|z| (z, z.signed_distance_m(p.lat, p.lon)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let acc = p.accuracy_m.unwrap_or(g.unknown_accuracy_m);
        if !(acc.is_finite() && acc >= 0.0)
            || acc > g.max_accuracy_m
            || !(p.lat.is_finite() && p.lon.is_finite())
        {
            return (FixClass::Ambiguous, nearest);
        }
        let inside = self.cfg.zones.iter().any(|z| {
            let margin = g.reentry_margin_m.max(0.0).min(z.max_depth_m() / 2.0);
            z.signed_distance_m(p.lat, p.lon) <= -margin
        });
        let class = if inside {
            FixClass::Inside
        } else if nearest.is_some_and(|(_, d)| d > acc) {
            FixClass::Outside
        } else {
            FixClass::Ambiguous
        };
        (class, nearest)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FixClass {
    Inside,
    Outside,
    Ambiguous,
}

fn secs(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s.min(MAX_THRESHOLD_S)).unwrap_or(i64::MAX / 1_000_000))
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Records the resident's return inside at `at`, from which inactivity counts afresh —
/// unless an inactivity alert is already open: it stays open until real activity, as it
/// would after a restart (which re-derives it from this same state).
fn mark_returned(g: &mut GeofenceState, inactivity: &InactivityState, at: DateTime<Utc>) {
    if !inactivity.open {
        g.returned_at = Some(at);
    }
}

/// Two fixes that say exactly the same thing: the same coordinates and the same accuracy.
fn same_place(a: &Position, b: &Position) -> bool {
    a.lat == b.lat && a.lon == b.lon && a.accuracy_m == b.accuracy_m
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

struct Resident {
    c: Compiled,
    state: ResidentState,
    scheduled: Option<DateTime<Utc>>,
    /// Until when, after a restore, nothing timer-driven fires.
    grace_until: Option<DateTime<Utc>>,
}

type Out = VecDeque<Decision>;

impl Resident {
    fn open(
        &self,
        out: &mut Out,
        kind: AlertKind,
        subject: &str,
        severity: Severity,
        at: DateTime<Utc>,
        details: serde_json::Value,
    ) {
        let device_id = (!subject.is_empty()).then(|| subject.to_owned());
        out.push_back(Decision::Open {
            key: self.c.key(kind, subject),
            device_id,
            severity,
            at,
            details,
        });
    }

    fn resolve(
        &self,
        out: &mut Out,
        kind: AlertKind,
        subject: &str,
        at: DateTime<Utc>,
        reason: impl Into<String>,
    ) {
        out.push_back(Decision::Resolve {
            key: self.c.key(kind, subject),
            at,
            reason: reason.into(),
        });
    }

    /// Confirmed outside, and no activity at home since (more than [`AWAY_MARGIN_S`] after): motion indoors after the exit means
    /// the tracker left without the resident (a bag at the daughter's), so the inactivity
    /// rules watch again even while the tracker stays outside.
    fn away(&self) -> bool {
        let g = &self.state.geofence;
        // A margin: a tracker's fixes carry whole seconds, and the last indoor motion
        // as the resident walks out may be stamped after the fix that confirmed the exit.
        let moved_since = match (self.state.inactivity.last_activity_at, g.opened_at) {
            (Some(a), Some(o)) => a > o + chrono::Duration::seconds(AWAY_MARGIN_S),
            _ => false,
        };
        self.c.settings().inactivity.pause_when_away
            && g.open
            && !moved_since
            && !self.c.cfg.zones.is_empty()
    }

    /// Whether the night threshold may apply: always, unless the resident's bed is known to be
    /// watched (a sleep room's sensor) and the last activity was somewhere else.
    fn in_bed(&self) -> bool {
        let i = &self.state.inactivity;
        let bed_known = i.sleep_room_seen || self.c.has_sleep_room_device();
        !bed_known || self.c.is_sleep_room(i.last_activity_room.as_deref())
    }

    fn inactivity_deadline_from(&self, reference: DateTime<Utc>) -> Option<(DateTime<Utc>, u64)> {
        self.c.inactivity_deadline(reference, self.in_bed())
    }

    fn inactivity_reference(&self) -> Option<DateTime<Utc>> {
        let i = &self.state.inactivity;
        let mut r = later(i.last_activity_at, i.watch_since);
        if self.c.settings().inactivity.pause_when_away {
            r = later(r, self.state.geofence.returned_at);
        }
        r
    }

    fn inactivity_deadline(&self) -> Option<(DateTime<Utc>, u64)> {
        if !self.c.inactivity_applies()
            || self.state.inactivity.open
            || self.is_out()
            || self.paused()
        {
            return None;
        }
        self.inactivity_deadline_from(self.inactivity_reference()?)
    }

    fn dwell_deadline(&self) -> Option<(DateTime<Utc>, u64)> {
        let d = &self.state.dwell;
        if d.open || self.is_out() || self.paused() {
            return None;
        }
        let limit = self.c.dwell_limit(d.room.as_deref()?)?;
        Some((d.since?.checked_add_signed(secs(limit))?, limit))
    }

    fn night_exit_deadline(&self) -> Option<DateTime<Utc>> {
        let n = &self.state.night_exit;
        let confirm = self.c.settings().night_exit.confirm_s;
        if n.open || !self.c.settings().night_exit.enabled || self.paused() {
            return None;
        }
        n.door_at?.checked_add_signed(secs(confirm))
    }

    fn offline_deadline(&self, d: &DeviceInfo) -> Option<DateTime<Utc>> {
        let s = self.state.devices.get(&d.id)?;
        if s.offline.is_some() {
            return None;
        }
        let base = later(s.last_seen_at, s.watch_from)?;
        base.checked_add_signed(secs(self.c.settings().offline.after_s(d.kind)))
    }

    fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let devices = self
            .c
            .cfg
            .devices
            .iter()
            .filter_map(|d| self.offline_deadline(d));
        let next = self
            .inactivity_deadline()
            .map(|(t, _)| t)
            .into_iter()
            .chain(self.state.morning.next_check)
            .chain(self.dwell_deadline().map(|(t, _)| t))
            .chain(self.night_exit_deadline())
            .chain(self.tag_away_deadline())
            .chain(self.away_deadline())
            .chain(self.pause_boundary())
            .chain(self.rhythm_deadline())
            .chain(devices)
            .min()?;
        Some(self.grace_until.map_or(next, |g| next.max(g)))
    }

    /// Applies a (new) configuration to the state, resolving what no longer holds.
    fn apply_config(
        &mut self,
        prev: Option<&Compiled>,
        restoring: bool,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        let st = &mut self.state;
        st.configured_at.get_or_insert(now);

        // Device health.
        let removed: Vec<String> = st
            .devices
            .keys()
            .filter(|id| self.c.device(id).is_none())
            .cloned()
            .collect();
        for id in removed {
            if let Some(ds) = self.state.devices.remove(&id) {
                if ds.offline.is_some() {
                    self.resolve(out, AlertKind::DeviceOffline, &id, now, "device removed");
                }
                if ds.low_battery {
                    self.resolve(out, AlertKind::LowBattery, &id, now, "device removed");
                }
            }
        }
        let configured: BTreeSet<&str> = self.c.cfg.devices.iter().map(|d| d.id.as_str()).collect();
        self.state
            .sos
            .retain(|id, _| configured.contains(id.as_str()));
        let pct = self.c.settings().low_battery_pct;
        for d in self.c.cfg.devices.clone() {
            let ds = self.state.devices.entry(d.id.clone()).or_default();
            if ds.watch_from.is_none() || (restoring && ds.offline.is_none()) {
                ds.watch_from = Some(later(ds.watch_from, Some(now)).unwrap_or(now));
            }
            let mut cleared = Vec::new();
            if ds.offline == Some(OfflineCause::Silent) {
                let base = later(ds.last_seen_at, ds.watch_from);
                let due = base.and_then(|b| {
                    b.checked_add_signed(secs(self.c.settings().offline.after_s(d.kind)))
                });
                if due.is_some_and(|t| t > now) {
                    ds.offline = None;
                    cleared.push((
                        AlertKind::DeviceOffline,
                        "offline threshold raised".to_owned(),
                    ));
                }
            }
            if ds.low_battery
                && ds
                    .battery
                    .is_some_and(|b| b > pct.saturating_add(BATTERY_HYSTERESIS))
            {
                ds.low_battery = false;
                cleared.push((
                    AlertKind::LowBattery,
                    "battery above the new threshold".to_owned(),
                ));
            }
            for (kind, reason) in cleared {
                self.resolve(out, kind, &d.id, now, reason);
            }
        }

        // Inactivity.
        if self.c.inactivity_applies() {
            self.state.inactivity.watch_since.get_or_insert(now);
        } else {
            self.state.inactivity.watch_since = None;
        }
        if self.state.inactivity.open {
            let reason = if !self.c.inactivity_applies() {
                Some("inactivity rule no longer applies")
            } else {
                let due = self
                    .inactivity_reference()
                    .and_then(|r| self.inactivity_deadline_from(r));
                // An alert that says no sensor works is for the sensors to clear.
                (due.is_some_and(|(t, _)| t > now) && !self.state.inactivity.blind)
                    .then_some("inactivity threshold raised")
            };
            if let Some(reason) = reason {
                self.state.inactivity.open = false;
                self.resolve(out, AlertKind::Inactivity, "", now, reason);
            }
        }

        self.apply_room_config(now, out);
        self.apply_tag_away_config(now, out);
        self.apply_away_config(now, out);
        self.start_rhythm(now);
        if !self.c.settings().rhythm.enabled {
            self.rhythm_activity("rhythm rule turned off", now, out);
        }
        self.check_sensors(now, out);

        // Morning check.
        if self.c.inactivity_applies() && self.c.morning.is_some() {
            let changed = prev.is_some_and(|p| {
                p.morning != self.c.morning
                    || p.tz() != self.c.tz()
                    || p.day_starts != self.c.day_starts
            }) || !prev.is_some_and(|p| p.inactivity_applies());
            if self.state.morning.next_check.is_none() || (changed && !restoring) {
                self.state.morning.next_check = self
                    .c
                    .morning
                    .and_then(|m| clock::next_local(self.c.tz(), now, m));
            }
        } else {
            self.state.morning.next_check = None;
            if self.state.morning.open_since.take().is_some() {
                self.resolve(
                    out,
                    AlertKind::NoMorningActivity,
                    "",
                    now,
                    "morning check turned off",
                );
            }
        }

        // Geofence.
        if self.c.cfg.zones.is_empty() {
            let g = &mut self.state.geofence;
            g.out_streak = 0;
            g.in_streak = 0;
            if std::mem::take(&mut g.open) {
                mark_returned(g, &self.state.inactivity, now);
                self.resolve(
                    out,
                    AlertKind::GeofenceExit,
                    "",
                    now,
                    "no safe zone configured",
                );
            }
        } else if !restoring
            && prev.is_some_and(|p| {
                p.cfg.zones != self.c.cfg.zones
                    || p.settings().geofence != self.c.settings().geofence
            })
        {
            self.state.geofence.out_streak = 0;
            self.state.geofence.in_streak = 0;
            if let Some(fix) = self.state.geofence.last_fix {
                let (class, nearest) = self.c.classify(&fix);
                let confirm = self.c.settings().geofence.confirm_fixes.max(1);
                match class {
                    FixClass::Inside if self.state.geofence.open => {
                        let name = nearest
                            .map(|(z, _)| z.name().to_owned())
                            .unwrap_or_default();
                        self.state.geofence.open = false;
                        mark_returned(&mut self.state.geofence, &self.state.inactivity, now);
                        self.resolve(
                            out,
                            AlertKind::GeofenceExit,
                            "",
                            now,
                            format!("inside {name} after the safe zones changed"),
                        );
                    }
                    FixClass::Inside => self.state.geofence.in_streak = 1,
                    FixClass::Outside if !self.state.geofence.open => {
                        self.state.geofence.out_streak = 1;
                        if confirm <= 1 {
                            self.open_geofence(&fix, None, None, now, out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Resolves a dwell or night exit alert the new settings no longer support.
    fn apply_room_config(&mut self, now: DateTime<Utc>, out: &mut Out) {
        if self.state.dwell.open {
            let limit = self
                .state
                .dwell
                .room
                .as_deref()
                .and_then(|r| self.c.dwell_limit(r));
            let due = limit.and_then(|l| self.state.dwell.since?.checked_add_signed(secs(l)));
            if due.is_none_or(|t| t > now) {
                self.state.dwell.open = false;
                self.resolve(
                    out,
                    AlertKind::Dwell,
                    "",
                    now,
                    "dwell limit raised or removed",
                );
            }
        }
        if !self.c.settings().night_exit.enabled {
            self.state.night_exit.door_at = None;
            if std::mem::take(&mut self.state.night_exit.open) {
                self.resolve(
                    out,
                    AlertKind::NightExit,
                    "",
                    now,
                    "night exit rule turned off",
                );
            }
        }
    }

    /// What an exit alert says; `place` is where a BLE receiver saw the resident's tag.
    fn geofence_details(&self, fix: &Position, place: Option<&str>) -> serde_json::Value {
        let (_, nearest) = self.c.classify(fix);
        let mut details = json!({
            "lat": fix.lat,
            "lon": fix.lon,
            "accuracy_m": fix.accuracy_m,
            "ts": fix.ts,
            "distance_m": nearest.map(|(_, d)| round1(d)),
            "zone": nearest.map(|(z, _)| z.name()),
        });
        if let (Some(place), Some(obj)) = (place, details.as_object_mut()) {
            obj.insert("place".into(), json!(place));
        }
        details
    }

    fn open_geofence(
        &mut self,
        fix: &Position,
        device: Option<&str>,
        place: Option<&str>,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        let g = &mut self.state.geofence;
        g.open = true;
        g.opened_at = Some(fix.ts);
        g.shown = Some(*fix);
        let details = self.geofence_details(fix, place);
        let key = self.c.key(AlertKind::GeofenceExit, "");
        let severity = self.c.severity_of_exit(fix.ts);
        out.push_back(Decision::Open {
            key,
            device_id: device.map(str::to_owned),
            severity,
            at: now,
            details,
        });
    }

    /// Whether a fresh fix may move the open exit alert's position: not when it is much less
    /// accurate than the one shown (a 2,000 m cell-tower fix after a 10 m GPS one would send
    /// searchers the wrong way). Fixes too poor to classify never move it.
    fn moves_alert(&self, fix: &Position) -> bool {
        let g = &self.c.settings().geofence;
        let acc = |p: &Position| p.accuracy_m.unwrap_or(g.unknown_accuracy_m);
        if acc(fix) > g.max_accuracy_m {
            return false;
        }
        self.state
            .geofence
            .shown
            .is_none_or(|shown| acc(fix) <= acc(&shown).max(1.0) * g.position_worsening_factor)
    }

    fn on_fix(
        &mut self,
        fix: Position,
        device: &str,
        place: Option<&str>,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        if !(fix.lat.is_finite() && fix.lon.is_finite()) {
            return;
        }
        let last = self.state.geofence.last_fix;
        if last.is_some_and(|last| fix.ts <= last.ts) {
            return;
        }
        self.state.geofence.last_fix = Some(fix);
        if last.is_some_and(|last| same_place(&last, &fix) && fix.ts - last.ts <= DUPLICATE_FIX) {
            // The same fix again at once (a QoS 1 resend without `ts`, stamped on receipt) is
            // no new evidence: it neither confirms nor moves anything.
            return;
        }
        if self.c.cfg.zones.is_empty() || self.paused() {
            return;
        }
        let (class, nearest) = self.c.classify(&fix);
        let confirm = self.c.settings().geofence.confirm_fixes.max(1);
        let g = &mut self.state.geofence;
        match class {
            FixClass::Outside => {
                g.out_streak = g.out_streak.saturating_add(1);
                g.in_streak = 0;
            }
            FixClass::Inside => {
                g.in_streak = g.in_streak.saturating_add(1);
                g.out_streak = 0;
            }
            FixClass::Ambiguous if !g.open => g.out_streak = 0,
            FixClass::Ambiguous => {}
        }
        if !g.open {
            if g.out_streak >= confirm {
                self.open_geofence(&fix, Some(device), place, now, out);
            }
        } else if g.in_streak >= confirm {
            g.open = false;
            g.out_streak = 0;
            mark_returned(g, &self.state.inactivity, fix.ts);
            let name = nearest
                .map(|(z, _)| z.name().to_owned())
                .unwrap_or_default();
            self.resolve(
                out,
                AlertKind::GeofenceExit,
                "",
                now,
                format!("back inside {name}"),
            );
        } else if self.moves_alert(&fix) {
            self.state.geofence.shown = Some(fix);
            let details = self.geofence_details(&fix, place);
            out.push_back(Decision::Update {
                key: self.c.key(AlertKind::GeofenceExit, ""),
                device_id: Some(device.to_owned()),
                severity: self.c.severity_of_exit(fix.ts),
                at: now,
                details,
            });
        }
    }

    fn on_activity(
        &mut self,
        ts: DateTime<Utc>,
        device: &str,
        reading: &Reading,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        let device_room = self.c.device(device).and_then(|d| d.room.clone());
        let (room, reason) = match reading {
            Reading::Motion { room, .. } => match room.clone().or(device_room) {
                Some(r) => (Some(r.clone()), format!("motion resumed ({r})")),
                None => (None, "motion resumed".to_owned()),
            },
            Reading::Door { open: true } => (None, "door opened".to_owned()),
            Reading::Door { open: false } => (None, "door closed".to_owned()),
            _ => (None, "motion resumed".to_owned()),
        };
        self.learn(ts);
        self.rhythm_activity(&reason, now, out);
        let sleep_room = self.c.is_sleep_room(room.as_deref());
        let i = &mut self.state.inactivity;
        i.sleep_room_seen |= sleep_room;
        if i.last_activity_at.is_none_or(|t| ts >= t) {
            i.last_activity_at = Some(ts);
            i.last_activity_room = room.clone();
            self.track_rooms(ts, device, reading, room, now, out);
        }
        if self.state.inactivity.open {
            let due = self
                .inactivity_reference()
                .and_then(|r| self.inactivity_deadline_from(r));
            if due.is_none_or(|(t, _)| t > now) {
                self.state.inactivity.open = false;
                self.resolve(out, AlertKind::Inactivity, "", now, reason.clone());
            }
        }
        if self
            .state
            .morning
            .open_since
            .is_some_and(|since| ts >= since)
        {
            self.state.morning.open_since = None;
            self.resolve(out, AlertKind::NoMorningActivity, "", now, reason);
        }
    }

    /// Room dwell and night exit follow the newest activity only: where the resident is now.
    fn track_rooms(
        &mut self,
        ts: DateTime<Utc>,
        device: &str,
        reading: &Reading,
        room: Option<String>,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        let is_door = matches!(reading, Reading::Door { .. });
        let d = &mut self.state.dwell;
        if (room.is_some() && d.room != room) || is_door {
            let reason = match &room {
                Some(r) => format!("moved to {r}"),
                None => "door used".to_owned(),
            };
            d.since = room.as_ref().map(|_| ts);
            d.room = room.clone();
            if std::mem::take(&mut d.open) {
                self.resolve(out, AlertKind::Dwell, "", now, reason);
            }
        }
        let watching = self.c.settings().night_exit.enabled;
        let paused = self.paused();
        self.track_away(ts, device, reading, room.as_deref(), now, out);
        let (from, until) = self.c.night_exit;
        let n = &mut self.state.night_exit;
        match reading {
            Reading::Door { open: true }
                if watching
                    && !paused
                    && !n.open
                    && n.door_at.is_none()
                    && self.c.is_entrance(device)
                    && clock::in_window(clock::local_secs(self.c.tz(), ts), from, until) =>
            {
                n.door_at = Some(ts);
                n.door = Some(device.to_owned());
            }
            Reading::Motion { .. } if n.door_at.is_none_or(|d| ts > d + DOOR_PASSING) => {
                n.door_at = None;
                if std::mem::take(&mut n.open) {
                    let at = room.map(|r| format!(" ({r})")).unwrap_or_default();
                    self.resolve(
                        out,
                        AlertKind::NightExit,
                        "",
                        now,
                        format!("motion indoors{at}"),
                    );
                }
            }
            _ => {}
        }
    }

    fn on_sos(&mut self, device: &str, ts: DateTime<Utc>, now: DateTime<Utc>, out: &mut Out) {
        let burst = match self.state.sos.get(device) {
            Some(b) if (ts - b.last_press_at).abs() <= SOS_JOIN => SosBurst {
                first_press_at: b.first_press_at.min(ts),
                last_press_at: b.last_press_at.max(ts),
                presses: b.presses.saturating_add(1),
            },
            _ => SosBurst {
                first_press_at: ts,
                last_press_at: ts,
                presses: 1,
            },
        };
        self.state.sos.insert(device.to_owned(), burst);
        let details = json!({
            "presses": burst.presses,
            "first_press_at": burst.first_press_at,
            "last_press_at": burst.last_press_at,
        });
        if burst.presses == 1 {
            self.open(
                out,
                AlertKind::Sos,
                device,
                Severity::Critical,
                now,
                details,
            );
        } else {
            out.push_back(Decision::Update {
                key: self.c.key(AlertKind::Sos, device),
                device_id: Some(device.to_owned()),
                severity: Severity::Critical,
                at: now,
                details,
            });
        }
    }

    /// The instant a reading counts at: its own `ts`, unless the device's clock is wrong, when
    /// it is the time of receipt. A `ts` ahead of receipt by more than [`MAX_CLOCK_SKEW`] is
    /// always a wrong clock. One behind it may be a buffer being delivered late (after an
    /// outage), which is true history; it is a wrong clock when the lag stays the same
    /// (within [`MAX_CLOCK_SKEW`]) across messages received at least that far apart, as a
    /// flushed buffer's lag shrinks while it catches up.
    fn reading_time(&mut self, ev: &DeviceEvent, received: DateTime<Utc>) -> DateTime<Utc> {
        let Some(ds) = self.state.devices.get_mut(&ev.device_id) else {
            return ev.ts;
        };
        let skew_ms = MAX_CLOCK_SKEW.num_milliseconds();
        let offset = (received - ev.ts).num_milliseconds();
        let steady = ds.last_offset.is_some_and(|(prev, at)| {
            (offset - prev).abs() <= skew_ms
                && (ds.clock_skew || (received - at).num_milliseconds() >= skew_ms)
        });
        ds.last_offset = Some((offset, received));
        ds.clock_skew = offset < -skew_ms || (offset > skew_ms && steady);
        if ds.clock_skew {
            received
        } else {
            ev.ts
        }
    }

    fn on_device_message(
        &mut self,
        ev: &DeviceEvent,
        received: DateTime<Utc>,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        let Some(info) = self.c.device(&ev.device_id).cloned() else {
            return;
        };
        let settings = self.c.settings().clone();
        let ds = self.state.devices.entry(info.id.clone()).or_default();
        let mut decisions = Vec::new();
        if ev.reading == Reading::Offline {
            let newer_seen = ds.last_seen_at.is_some_and(|t| t > received);
            if ds.offline.is_none() && !newer_seen {
                ds.offline = Some(OfflineCause::Will);
                let details = json!({
                    "last_seen_at": ds.last_seen_at,
                    "after_s": settings.offline.after_s(info.kind),
                    "cause": "will",
                });
                decisions.push((
                    AlertKind::DeviceOffline,
                    Some((Severity::Warning, details)),
                    String::new(),
                ));
            }
        } else {
            ds.last_seen_at = later(ds.last_seen_at, Some(received));
            if ds.offline.take().is_some() {
                decisions.push((
                    AlertKind::DeviceOffline,
                    None,
                    "device reported again".to_owned(),
                ));
            }
        }
        if let Some(b) = ev.battery {
            ds.battery = Some(b);
            let pct = settings.low_battery_pct;
            if !ds.low_battery && b < pct {
                ds.low_battery = true;
                let details = json!({ "battery": b, "threshold": pct });
                decisions.push((
                    AlertKind::LowBattery,
                    Some((Severity::Warning, details)),
                    String::new(),
                ));
            } else if ds.low_battery && b > pct.saturating_add(BATTERY_HYSTERESIS) {
                ds.low_battery = false;
                decisions.push((AlertKind::LowBattery, None, format!("battery at {b}%")));
            }
        }
        for (kind, open, reason) in decisions {
            match open {
                Some((severity, details)) => self.open(out, kind, &info.id, severity, now, details),
                None => self.resolve(out, kind, &info.id, now, reason),
            }
        }
    }

    fn fire(&mut self, now: DateTime<Utc>, out: &mut Out) {
        match self.grace_until {
            Some(g) if now < g => return,
            Some(_) => self.grace_until = None,
            None => {}
        }
        self.sync_pause(now, out);
        self.fire_away(now, out);
        self.fire_rhythm(now, out);
        if let Some((due, threshold_s)) = self.inactivity_deadline().filter(|(t, _)| *t <= now) {
            self.state.inactivity.open = true;
            let i = &self.state.inactivity;
            let details = json!({
                "last_activity_at": i.last_activity_at,
                "silent_since": self.inactivity_reference(),
                "threshold_s": threshold_s,
                "room": i.last_activity_room,
            });
            self.open(out, AlertKind::Inactivity, "", Severity::High, due, details);
        }

        if let Some(check) = self.state.morning.next_check.filter(|t| *t <= now) {
            let tz = self.c.tz();
            let since = clock::prev_local(tz, check, self.c.day_starts);
            let seen = later(
                self.state.inactivity.last_activity_at,
                self.state.inactivity.watch_since,
            );
            let quiet = since.is_some_and(|s| seen.is_none_or(|t| t < s));
            if quiet
                && self.state.morning.open_since.is_none()
                && self.c.inactivity_applies()
                && !self.is_out()
                && !self.paused()
            {
                self.state.morning.open_since = since;
                let details = json!({ "deadline": check, "since": since });
                self.open(
                    out,
                    AlertKind::NoMorningActivity,
                    "",
                    Severity::High,
                    check,
                    details,
                );
            }
            self.state.morning.next_check = self
                .c
                .morning
                .and_then(|m| clock::next_local(tz, check.max(now), m));
        }

        self.fire_rooms(now, out);
        self.fire_tag_away(now, out);

        for d in self.c.cfg.devices.clone() {
            let Some(due) = self.offline_deadline(&d).filter(|t| *t <= now) else {
                continue;
            };
            let after_s = self.c.settings().offline.after_s(d.kind);
            let Some(ds) = self.state.devices.get_mut(&d.id) else {
                continue;
            };
            ds.offline = Some(OfflineCause::Silent);
            let details =
                json!({ "last_seen_at": ds.last_seen_at, "after_s": after_s, "cause": "silent" });
            self.open(
                out,
                AlertKind::DeviceOffline,
                &d.id,
                Severity::Warning,
                due,
                details,
            );
        }
        self.check_sensors(now, out);
    }

    fn fire_rooms(&mut self, now: DateTime<Utc>, out: &mut Out) {
        if let Some((due, limit_s)) = self.dwell_deadline().filter(|(t, _)| *t <= now) {
            let d = &mut self.state.dwell;
            d.open = true;
            let details = json!({ "room": d.room, "since": d.since, "limit_s": limit_s });
            self.open(out, AlertKind::Dwell, "", Severity::High, due, details);
        }
        if let Some(due) = self.night_exit_deadline().filter(|t| *t <= now) {
            let n = &mut self.state.night_exit;
            n.open = true;
            let details = json!({
                "door_opened_at": n.door_at,
                "door": n.door,
                "confirm_s": self.c.settings().night_exit.confirm_s,
            });
            out.push_back(Decision::Open {
                key: self.c.key(AlertKind::NightExit, ""),
                device_id: n.door.clone(),
                severity: Severity::Critical,
                at: due,
                details,
            });
        }
    }

    /// Staff resolved the alert of `kind`/`subject`: forget the condition, so that it is
    /// raised again (as a new alert) if it recurs. Silence-based conditions count afresh
    /// from `now`, as after a visit; SOS needs a new press, a geofence exit new fixes.
    fn staff_closed(&mut self, kind: AlertKind, subject: &str, now: DateTime<Utc>) {
        let st = &mut self.state;
        match kind {
            AlertKind::Sos => {
                st.sos.remove(subject);
            }
            AlertKind::GeofenceExit => {
                let g = &mut st.geofence;
                // Staff accounted for the resident: inactivity counts from now, as after a return.
                if std::mem::take(&mut g.open) {
                    mark_returned(g, &st.inactivity, now);
                }
                g.out_streak = 0;
                g.in_streak = 0;
            }
            AlertKind::Inactivity => {
                if std::mem::take(&mut st.inactivity.open) {
                    st.inactivity.watch_since = st.inactivity.watch_since.map(|_| now);
                }
            }
            AlertKind::NoMorningActivity => st.morning.open_since = None,
            AlertKind::Dwell => {
                if std::mem::take(&mut st.dwell.open) {
                    st.dwell.since = st.dwell.since.map(|_| now);
                }
            }
            AlertKind::NightExit => {
                st.night_exit.open = false;
                st.night_exit.door_at = None;
            }
            AlertKind::TagAway => self.tag_away_closed(now),
            AlertKind::Rhythm => st.rhythm.open = false,
            AlertKind::AwayTooLong => {
                // Staff know where the resident is; still out, the limit counts afresh.
                if std::mem::take(&mut st.away.too_long) {
                    st.away.out_since = st.away.out_since.map(|_| now);
                }
            }
            AlertKind::DeviceOffline => {
                if let Some(ds) = st.devices.get_mut(subject) {
                    if ds.offline.take().is_some() {
                        ds.watch_from = Some(now);
                    }
                }
            }
            AlertKind::LowBattery => {
                if let Some(ds) = st.devices.get_mut(subject) {
                    ds.low_battery = false;
                }
            }
        }
    }

    fn status(&self) -> ResidentStatus {
        let st = &self.state;
        let devices = self
            .c
            .cfg
            .devices
            .iter()
            .map(|d| {
                let ds = st.devices.get(&d.id);
                DeviceStatus {
                    id: d.id.clone(),
                    kind: d.kind,
                    last_seen_at: ds.and_then(|s| s.last_seen_at),
                    battery: ds.and_then(|s| s.battery),
                    online: ds.is_none_or(|s| s.offline.is_none()),
                    clock_skew: ds.is_some_and(|s| s.clock_skew),
                }
            })
            .collect();
        let mut open = BTreeSet::new();
        if st.inactivity.open {
            open.insert(AlertKind::Inactivity);
        }
        if st.morning.open_since.is_some() {
            open.insert(AlertKind::NoMorningActivity);
        }
        if st.geofence.open {
            open.insert(AlertKind::GeofenceExit);
        }
        if st.dwell.open {
            open.insert(AlertKind::Dwell);
        }
        if st.night_exit.open {
            open.insert(AlertKind::NightExit);
        }
        if self.tag_away_open() {
            open.insert(AlertKind::TagAway);
        }
        if st.away.too_long {
            open.insert(AlertKind::AwayTooLong);
        }
        if st.rhythm.open {
            open.insert(AlertKind::Rhythm);
        }
        for ds in st.devices.values() {
            if ds.offline.is_some() {
                open.insert(AlertKind::DeviceOffline);
            }
            if ds.low_battery {
                open.insert(AlertKind::LowBattery);
            }
        }
        let location = if st.geofence.open {
            Location::Outside
        } else if self.c.cfg.zones.is_empty() || st.geofence.last_fix.is_none() {
            Location::Unknown
        } else {
            Location::Inside
        };
        ResidentStatus {
            resident_id: self.c.id(),
            last_activity_at: st.inactivity.last_activity_at,
            last_activity_room: st.inactivity.last_activity_room.clone(),
            last_position: st.geofence.last_fix,
            location,
            devices,
            open_conditions: open.into_iter().collect(),
            paused_until: st.pause.current.as_ref().map(|p| p.until),
            out_since: st.away.out_since,
        }
    }
}

/// All residents' rules: a pure state machine driven by events and time.
pub struct Engine {
    restart_grace: Duration,
    residents: HashMap<i64, Resident>,
    timers: BTreeSet<(DateTime<Utc>, i64)>,
    decisions: VecDeque<Decision>,
    dirty: BTreeSet<i64>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("residents", &self.residents.len())
            .field("timers", &self.timers.len())
            .field("decisions", &self.decisions.len())
            .finish()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            restart_grace: RESTART_GRACE,
            residents: HashMap::new(),
            timers: BTreeSet::new(),
            decisions: VecDeque::new(),
            dirty: BTreeSet::new(),
        }
    }
}

impl Engine {
    /// An engine with no residents.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long overdue deadlines wait after [`Engine::restore`]; zero fires them at once.
    pub fn set_restart_grace(&mut self, grace: Duration) {
        self.restart_grace = grace.max(Duration::zero());
    }

    /// Adds a resident or replaces its configuration, keeping its state, and resolves what the
    /// new configuration no longer supports.
    pub fn configure(&mut self, cfg: ResidentConfig, now: DateTime<Utc>) {
        let id = cfg.resident_id;
        let c = Compiled::new(cfg);
        match self.residents.get_mut(&id) {
            Some(r) => {
                let prev = std::mem::replace(&mut r.c, c);
                r.apply_config(Some(&prev), false, now, &mut self.decisions);
                r.sync_pause(now, &mut self.decisions);
            }
            None => {
                let mut r = Resident {
                    c,
                    state: ResidentState::default(),
                    scheduled: None,
                    grace_until: None,
                };
                r.apply_config(None, false, now, &mut self.decisions);
                r.sync_pause(now, &mut self.decisions);
                self.residents.insert(id, r);
            }
        }
        self.after_change(id);
    }

    /// Installs a resident at start-up from its configuration and persisted state (`None` for a
    /// new resident). Deadlines that are overdue, or fall within [`RESTART_GRACE`] of `now`,
    /// fire at the end of the grace (with their own instant as `at`), unless what devices
    /// deliver meanwhile moves them.
    pub fn restore(
        &mut self,
        cfg: ResidentConfig,
        state: Option<ResidentState>,
        now: DateTime<Utc>,
    ) {
        let id = cfg.resident_id;
        if let Some(old) = self.residents.remove(&id) {
            if let Some(t) = old.scheduled {
                self.timers.remove(&(t, id));
            }
        }
        let restoring = state.is_some();
        let mut r = Resident {
            c: Compiled::new(cfg),
            state: state.unwrap_or_default(),
            scheduled: None,
            grace_until: (restoring && self.restart_grace > Duration::zero())
                .then(|| now + self.restart_grace),
        };
        r.apply_config(None, restoring, now, &mut self.decisions);
        r.sync_pause(now, &mut self.decisions);
        self.residents.insert(id, r);
        self.after_change(id);
    }

    /// Forgets a resident; no decisions are emitted.
    pub fn remove_resident(&mut self, resident_id: i64) {
        if let Some(r) = self.residents.remove(&resident_id) {
            if let Some(t) = r.scheduled {
                self.timers.remove(&(t, resident_id));
            }
        }
        self.dirty.remove(&resident_id);
    }

    /// Feeds one validated event; events of unknown residents are ignored.
    pub fn handle_event(&mut self, ev: &DeviceEvent, now: DateTime<Utc>) {
        let Some(r) = self.residents.get_mut(&ev.resident_id) else {
            return;
        };
        let out = &mut self.decisions;
        r.sync_pause(now, out);
        let received = ev.received_at.min(now);
        let ts = r.reading_time(ev, received).min(now);
        match &ev.reading {
            Reading::Sos => r.on_sos(&ev.device_id, ts, now, out),
            Reading::Position {
                lat,
                lon,
                accuracy_m,
            } => {
                let fix = Position {
                    lat: *lat,
                    lon: *lon,
                    accuracy_m: *accuracy_m,
                    ts,
                };
                r.on_fix(fix, &ev.device_id, None, now, out);
            }
            // A sighting counts towards geofence_exit as a fix does, with the receiver's place.
            Reading::Sighting {
                lat,
                lon,
                accuracy_m,
                receiver,
                place,
            } => {
                let fix = Position {
                    lat: *lat,
                    lon: *lon,
                    accuracy_m: *accuracy_m,
                    ts,
                };
                r.on_fix(fix, &ev.device_id, Some(place), now, out);
                r.on_sighting(&ev.device_id, receiver, place, ts, now, out);
            }
            reading if reading.is_activity() => r.on_activity(ts, &ev.device_id, reading, now, out),
            _ => {}
        }
        r.on_device_message(ev, received, now, out);
        r.check_sensors(now, out);
        self.after_change(ev.resident_id);
    }

    /// Fires everything due at or before `now`.
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        let mut due = Vec::new();
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, id));
            due.push(id);
        }
        for id in due {
            if let Some(r) = self.residents.get_mut(&id) {
                r.scheduled = None;
                r.fire(now, &mut self.decisions);
            }
            self.after_change(id);
        }
    }

    /// The earliest pending deadline of any resident.
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The oldest decision not yet taken.
    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    /// Whether decisions are waiting to be taken.
    pub fn has_decisions(&self) -> bool {
        !self.decisions.is_empty()
    }

    /// Residents whose state changed since the last call, in id order.
    pub fn take_dirty(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// A resident's state, for the shell to persist.
    pub fn state(&self, resident_id: i64) -> Option<&ResidentState> {
        self.residents.get(&resident_id).map(|r| &r.state)
    }

    /// Staff resolved the alert of `key`: the condition is forgotten and counts afresh
    /// from `now` (see the module docs), so a recurrence opens a new alert.
    pub fn staff_closed(&mut self, key: &AlertKey, now: DateTime<Utc>) {
        let Some(r) = self.residents.get_mut(&key.resident_id) else {
            return;
        };
        r.staff_closed(key.kind, &key.subject, now);
        // A sensor's offline alert resolved by staff counts it as working again.
        r.check_sensors(now, &mut self.decisions);
        self.after_change(key.resident_id);
    }

    /// Replaces a resident's dated pauses: a pause that now covers `now` quiets the watch
    /// rules at once, one that no longer does lets them resume with fresh timers.
    pub fn set_pauses(&mut self, resident_id: i64, pauses: Vec<Pause>, now: DateTime<Utc>) {
        let Some(r) = self.residents.get_mut(&resident_id) else {
            return;
        };
        r.c.cfg.pauses = pauses;
        r.sync_pause(now, &mut self.decisions);
        self.after_change(resident_id);
    }

    /// A resident's dated pauses, as configured.
    pub fn pauses(&self, resident_id: i64) -> Option<&[Pause]> {
        self.residents
            .get(&resident_id)
            .map(|r| r.c.cfg.pauses.as_slice())
    }

    /// A resident's newest position fix.
    pub fn last_position(&self, resident_id: i64) -> Option<Position> {
        self.residents.get(&resident_id)?.state.geofence.last_fix
    }

    /// A resident's dashboard view.
    pub fn status(&self, resident_id: i64) -> Option<ResidentStatus> {
        self.residents.get(&resident_id).map(Resident::status)
    }

    /// How many residents are configured.
    pub fn resident_count(&self) -> usize {
        self.residents.len()
    }

    /// Marks the resident dirty and keeps its entry in the timer set in step with its deadlines.
    fn after_change(&mut self, id: i64) {
        let Some(r) = self.residents.get_mut(&id) else {
            return;
        };
        self.dirty.insert(id);
        let next = r.next_deadline();
        if next != r.scheduled {
            if let Some(t) = r.scheduled {
                self.timers.remove(&(t, id));
            }
            if let Some(t) = next {
                self.timers.insert((t, id));
            }
            r.scheduled = next;
        }
    }
}

mod away;
mod health;
mod pause;
mod rhythm;
#[cfg(test)]
mod tests;
