//! Dated pauses as commands to the pipeline's core: the core checks them against the
//! resident it owns, hands the new list to the rules engine (which quiets or resumes the
//! rules) and returns the pause row and its audit entry as effects of the same commit.

use chrono::{DateTime, Utc};
use mimamori_protocol::pause::Pause;
use serde::{Deserialize, Serialize};

/// Most pauses a resident may have that have not ended yet.
pub const MAX_OPEN_PAUSES: usize = 50;

/// A change to a resident's pauses, with who made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PauseCommand {
    /// Adds a pause; its `resident_id` and `created_by` say for whom and by whom.
    Add(Pause),
    /// Removes one; a running pause ends at once.
    Remove {
        resident_id: i64,
        id: String,
        actor: String,
        /// Only a pause this user set (a family member removes only their own).
        only_by: Option<String>,
    },
}

impl PauseCommand {
    pub fn resident_id(&self) -> i64 {
        match self {
            PauseCommand::Add(p) => p.resident_id,
            PauseCommand::Remove { resident_id, .. } => *resident_id,
        }
    }
}

/// Why a pause command did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PauseError {
    /// No such resident, or no such pause of theirs.
    NotFound(String),
    /// The request is not allowed as it stands; the sentence says why.
    Refused(String),
    /// The store failed the commit; nothing changed.
    NotStored,
    /// The pipeline has stopped.
    Stopped,
}

/// Checks an addition against the pauses already there.
pub fn check_add(existing: &[Pause], p: &Pause, now: DateTime<Utc>) -> Result<(), PauseError> {
    if p.until <= now {
        return Err(PauseError::Refused(
            "the pause has already ended: until must be in the future".into(),
        ));
    }
    if existing.iter().any(|e| e.id == p.id) {
        return Err(PauseError::Refused(format!("pause {} exists", p.id)));
    }
    if existing.iter().filter(|e| e.until > now).count() >= MAX_OPEN_PAUSES {
        return Err(PauseError::Refused(format!(
            "a resident may have at most {MAX_OPEN_PAUSES} pauses that have not ended"
        )));
    }
    Ok(())
}
