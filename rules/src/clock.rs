//! Local wall-clock arithmetic in a resident's time zone, DST-aware and total (never panics).
//!
//! Rules speak in local "HH:MM" times while deadlines are UTC instants. A local time may not
//! exist (spring forward) or exist twice (fall back); both resolve to the earliest valid instant.

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use mimamori_protocol::settings::LocalTime;

const DAY_S: u32 = 86_400;

/// Seconds since local midnight of a local time setting.
pub(crate) fn secs(t: LocalTime) -> u32 {
    t.minutes_of_day() * 60
}

/// Whether `x` lies in `[start, end)` on a 24-hour circle; an equal start and end is empty.
pub(crate) fn in_window(x: u32, start: u32, end: u32) -> bool {
    if start <= end {
        start <= x && x < end
    } else {
        x >= start || x < end
    }
}

/// Seconds since local midnight of an instant.
pub(crate) fn local_secs(tz: Tz, t: DateTime<Utc>) -> u32 {
    local(tz, t).map_or(0, |l| l.time().num_seconds_from_midnight())
}

/// The local wall-clock reading of an instant; `None` at the very ends of chrono's range, where
/// chrono's own conversion would panic.
pub(crate) fn local(tz: Tz, t: DateTime<Utc>) -> Option<NaiveDateTime> {
    t.naive_utc()
        .checked_add_signed(Duration::seconds(offset_s(tz, t)))
}

fn offset_s(tz: Tz, t: DateTime<Utc>) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

fn trunc_s(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// The UTC instant of a local date and time, taking the earliest one when it is ambiguous and
/// the end of the gap (the first instant that exists) when it falls into a DST gap.
pub(crate) fn resolve_local(tz: Tz, date: NaiveDate, time: LocalTime) -> Option<DateTime<Utc>> {
    let mut probe: NaiveDateTime =
        date.and_hms_opt(u32::from(time.hour), u32::from(time.minute), 0)?;
    // Gaps are at most a few hours (a day for a zone that skipped one); step a minute at a time.
    for _ in 0..=(DAY_S / 60) {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => return Some(a.min(b).with_timezone(&Utc)),
            LocalResult::None => probe = probe.checked_add_signed(Duration::minutes(1))?,
        }
    }
    None
}

/// The earliest instant strictly after `after` at which the local clock reads `time`.
pub(crate) fn next_local(tz: Tz, after: DateTime<Utc>, time: LocalTime) -> Option<DateTime<Utc>> {
    let mut day = local(tz, after)?.date().pred_opt()?;
    for _ in 0..5 {
        if let Some(t) = resolve_local(tz, day, time).filter(|t| *t > after) {
            return Some(t);
        }
        day = day.succ_opt()?;
    }
    None
}

/// The latest instant at or before `at` at which the local clock read `time`.
pub(crate) fn prev_local(tz: Tz, at: DateTime<Utc>, time: LocalTime) -> Option<DateTime<Utc>> {
    let mut day = local(tz, at)?.date().succ_opt()?;
    for _ in 0..5 {
        if let Some(t) = resolve_local(tz, day, time).filter(|t| *t <= at) {
            return Some(t);
        }
        day = day.pred_opt()?;
    }
    None
}

/// The first instant after `s` at which a local day/night classification using `boundaries`
/// (seconds since local midnight) may change: the next boundary on the local clock, or a change
/// of UTC offset, whichever comes first. Offset changes are found by bisection to the second.
pub(crate) fn next_change(tz: Tz, s: DateTime<Utc>, boundaries: &[u32]) -> Option<DateTime<Utc>> {
    let s = trunc_s(s);
    let off = offset_s(tz, s);
    let sod = s
        .checked_add_signed(Duration::seconds(off))?
        .time()
        .num_seconds_from_midnight();
    let step = boundaries
        .iter()
        .map(|&b| if b > sod { b - sod } else { b + DAY_S - sod })
        .min()
        .unwrap_or(DAY_S);
    let u = s.checked_add_signed(Duration::seconds(i64::from(step)))?;
    if offset_s(tz, u) == off {
        return Some(u);
    }
    // Whole seconds: transitions fall on them, and so the result is exact.
    let (mut lo, mut hi) = (0_i64, i64::from(step));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_s(tz, s.checked_add_signed(Duration::seconds(mid))?) == off {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    s.checked_add_signed(Duration::seconds(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(h: u8, m: u8) -> LocalTime {
        LocalTime { hour: h, minute: m }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn nonexistent_and_ambiguous_local_times_resolve_to_the_earliest_valid_instant() {
        let ny = chrono_tz::America::New_York;
        let d = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap_or_default();
        // 02:30 does not exist that day; the clock jumps from 02:00 EST (07:00Z) to 03:00 EDT.
        assert_eq!(resolve_local(ny, d, lt(2, 30)), Some(utc(2026, 3, 8, 7, 0)));
        let d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or_default();
        // 01:30 happens twice; the first is EDT (05:30Z).
        assert_eq!(
            resolve_local(ny, d, lt(1, 30)),
            Some(utc(2026, 11, 1, 5, 30))
        );
    }

    #[test]
    fn next_change_stops_at_boundaries_and_offset_changes() {
        let tokyo = chrono_tz::Asia::Tokyo;
        // 12:00 JST = 03:00Z; next boundary 22:00 JST = 13:00Z.
        assert_eq!(
            next_change(tokyo, utc(2026, 1, 1, 3, 0), &[6 * 3600, 22 * 3600]),
            Some(utc(2026, 1, 1, 13, 0))
        );
        let london = chrono_tz::Europe::London;
        // 2026-03-29 01:00Z clocks go forward; from 00:30Z (00:30 GMT) the boundary 06:00 is later.
        assert_eq!(
            next_change(london, utc(2026, 3, 29, 0, 30), &[6 * 3600, 22 * 3600]),
            Some(utc(2026, 3, 29, 1, 0))
        );
        assert_eq!(
            next_change(london, utc(2026, 3, 29, 1, 0), &[6 * 3600, 22 * 3600]),
            Some(utc(2026, 3, 29, 5, 0))
        );
    }

    #[test]
    fn windows_wrap_midnight() {
        assert!(in_window(23 * 3600, 18 * 3600, 6 * 3600));
        assert!(in_window(3600, 18 * 3600, 6 * 3600));
        assert!(!in_window(6 * 3600, 18 * 3600, 6 * 3600));
        assert!(in_window(6 * 3600, 6 * 3600, 22 * 3600));
        assert!(!in_window(5, 5, 5));
    }

    #[test]
    fn next_and_prev_local_times() {
        let tokyo = chrono_tz::Asia::Tokyo;
        let at = utc(2026, 1, 1, 1, 0); // 10:00 JST
        assert_eq!(
            next_local(tokyo, at, lt(10, 0)),
            Some(utc(2026, 1, 2, 1, 0))
        );
        assert_eq!(prev_local(tokyo, at, lt(10, 0)), Some(at));
        assert_eq!(
            prev_local(tokyo, at, lt(6, 0)),
            Some(utc(2025, 12, 31, 21, 0))
        );
    }
}
