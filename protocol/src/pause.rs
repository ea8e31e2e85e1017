//! Dated pauses of a resident's watch rules (a hospital stay, a short stay, a visit),
//! as the API takes and shows them and as the rules engine reads them.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Longest pause accepted: a year; a longer absence is a change of care plan.
pub const MAX_PAUSE: Duration = Duration::days(366);
/// Longest note on a pause, in characters.
pub const MAX_NOTE: usize = 500;

/// Why the rules are paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    Hospital,
    ShortStay,
    Visit,
    Other,
}

impl PauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Hospital => "hospital",
            PauseReason::ShortStay => "short_stay",
            PauseReason::Visit => "visit",
            PauseReason::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<PauseReason> {
        [
            PauseReason::Hospital,
            PauseReason::ShortStay,
            PauseReason::Visit,
            PauseReason::Other,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Body of `POST /residents/{id}/pauses`, and a pause in `hub replay`'s resident.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPause {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub reason: PauseReason,
    #[serde(default)]
    pub note: Option<String>,
}

impl NewPause {
    /// Checks what serde cannot; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.until <= self.from {
            return Err("until must be after from".into());
        }
        if self.until - self.from > MAX_PAUSE {
            return Err("a pause may last at most 366 days".into());
        }
        if self
            .note
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NOTE)
        {
            return Err(format!("note must be at most {MAX_NOTE} characters"));
        }
        Ok(())
    }
}

/// One pause as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    pub id: String,
    pub resident_id: i64,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub reason: PauseReason,
    pub note: Option<String>,
    /// The user who set it.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl Pause {
    /// Whether the rules are paused at `t`: from `from` (included) to `until` (excluded).
    pub fn covers(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t < self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_pause_must_end_after_it_starts_and_within_a_year() {
        let p: NewPause = serde_json::from_str(
            r#"{"from":"2026-12-01T09:00:00+09:00","until":"2026-12-08T17:00:00+09:00","reason":"hospital"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.validate(), Ok(()));
        let backwards = NewPause {
            until: p.from,
            ..p.clone()
        };
        assert!(backwards.validate().is_err());
        let long = NewPause {
            until: p.from + Duration::days(400),
            ..p.clone()
        };
        assert!(long.validate().is_err());
        assert!(serde_json::from_str::<NewPause>(
            r#"{"from":"2026-12-01T00:00:00Z","until":"2026-12-02T00:00:00Z","reason":"holiday"}"#
        )
        .is_err());
    }

    #[test]
    fn a_pause_covers_its_start_but_not_its_end() {
        let p = Pause {
            id: "p".into(),
            resident_id: 1,
            from: at("2026-12-01T00:00:00Z"),
            until: at("2026-12-02T00:00:00Z"),
            reason: PauseReason::Visit,
            note: None,
            created_by: "staff".into(),
            created_at: at("2026-11-30T00:00:00Z"),
        };
        assert!(p.covers(p.from));
        assert!(!p.covers(p.until));
    }
}
