//! The escalation ladder: who is told after how long while nobody acknowledges, how
//! often they are reminded, and when an alert counts as unanswered. Pure data and
//! arithmetic on times handed in.

use chrono::{DateTime, Duration, Utc};
use mimamori_protocol::Severity;

/// One rung: after `after` without an acknowledgement, contacts of `tier` are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub after: Duration,
    pub tier: u8,
}

/// The ladder of one severity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Rungs in order of `after`; the first usually has `after` 0 (told at once).
    pub steps: Vec<Step>,
    /// Everyone told so far is reminded this often until someone acknowledges.
    pub repeat: Option<Duration>,
    /// After this long without an acknowledgement the alert is `unanswered`.
    pub unanswered: Option<Duration>,
}

/// The ladders of every severity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    pub critical: Plan,
    pub high: Plan,
    pub warning: Plan,
}

fn step(after_s: i64, tier: u8) -> Step {
    Step {
        after: Duration::seconds(after_s),
        tier,
    }
}

impl Default for Ladder {
    /// Critical: family at once, supervisors after 2 min, the third tier (民生委員,
    /// the community care centre) after 10 min, reminders every 5 min, unanswered at
    /// 15 min. High: 0 / 10 / 30 min, reminders every 15 min, unanswered at 60 min.
    /// Warnings are technical: told once, never climb.
    fn default() -> Self {
        Ladder {
            critical: Plan {
                steps: vec![step(0, 1), step(120, 2), step(600, 3)],
                repeat: Some(Duration::minutes(5)),
                unanswered: Some(Duration::minutes(15)),
            },
            high: Plan {
                steps: vec![step(0, 1), step(600, 2), step(1800, 3)],
                repeat: Some(Duration::minutes(15)),
                unanswered: Some(Duration::minutes(60)),
            },
            warning: Plan {
                steps: vec![step(0, 1)],
                repeat: None,
                unanswered: None,
            },
        }
    }
}

impl Ladder {
    pub fn plan(&self, severity: Severity) -> &Plan {
        match severity {
            Severity::Critical => &self.critical,
            Severity::High => &self.high,
            Severity::Warning => &self.warning,
        }
    }

    pub fn plan_mut(&mut self, severity: Severity) -> &mut Plan {
        match severity {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Warning => &mut self.warning,
        }
    }
}

impl Plan {
    /// Refuses a ladder that could not run as written.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        if self
            .steps
            .windows(2)
            .any(|w| w[1].after < w[0].after || w[1].tier <= w[0].tier)
        {
            return Err(format!(
                "ladder {name}: steps must climb, each later and to a higher tier than the one before"
            ));
        }
        if self
            .steps
            .iter()
            .any(|s| s.after < Duration::zero() || s.tier == 0)
        {
            return Err(format!(
                "ladder {name}: a step needs after_s >= 0 and a tier of at least 1"
            ));
        }
        if self.repeat.is_some_and(|r| r <= Duration::zero()) {
            return Err(format!("ladder {name}: remind_every_s must be at least 1"));
        }
        Ok(())
    }

    /// When the step after `taken` steps falls due for an alert opened at `opened`.
    pub fn step_due(&self, opened: DateTime<Utc>, taken: usize) -> Option<(DateTime<Utc>, Step)> {
        let s = *self.steps.get(taken)?;
        Some((opened.checked_add_signed(s.after)?, s))
    }

    /// When reminder number `sent + 1` falls due.
    pub fn reminder_due(&self, opened: DateTime<Utc>, sent: u32) -> Option<DateTime<Utc>> {
        let every = self.repeat?;
        opened.checked_add_signed(every.checked_mul(i32::try_from(sent).ok()?.checked_add(1)?)?)
    }

    /// When the alert turns unanswered.
    pub fn unanswered_due(&self, opened: DateTime<Utc>) -> Option<DateTime<Utc>> {
        opened.checked_add_signed(self.unanswered?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn deadlines_count_from_the_opening() {
        let l = Ladder::default();
        let p = l.plan(Severity::Critical);
        assert_eq!(
            p.step_due(at(0), 0).map(|(t, s)| (t, s.tier)),
            Some((at(0), 1))
        );
        assert_eq!(
            p.step_due(at(0), 1).map(|(t, s)| (t, s.tier)),
            Some((at(120), 2))
        );
        assert_eq!(p.step_due(at(0), 3), None);
        assert_eq!(p.reminder_due(at(0), 0), Some(at(300)));
        assert_eq!(p.reminder_due(at(0), 2), Some(at(900)));
        assert_eq!(p.unanswered_due(at(0)), Some(at(900)));
        assert_eq!(l.plan(Severity::Warning).reminder_due(at(0), 0), None);
    }

    #[test]
    fn a_ladder_that_goes_down_is_refused() {
        let p = Plan {
            steps: vec![step(60, 2), step(30, 3)],
            ..Plan::default()
        };
        assert!(p.validate("high").is_err());
        let same_tier = Plan {
            steps: vec![step(0, 1), step(30, 1)],
            ..Plan::default()
        };
        assert!(same_tier.validate("high").is_err());
        assert!(Ladder::default().critical.validate("critical").is_ok());
    }
}
