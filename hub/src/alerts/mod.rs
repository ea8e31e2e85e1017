//! Alerts: the one owner of every alert's state, pure like the rules engine.
//!
//! [`core::Core`] is what the pipeline owns: the rules engine and the [`lifecycle`]'s
//! alert book, fed device events, staff commands and the passing of time, each with
//! `now`. It returns one [`effects::Effects`] per commit: the alert, history, audit and
//! outbox rows to write, and the alerts to announce once they are written. Nothing here
//! reads the clock or does I/O. [`ladder`] is the escalation ladder's configuration;
//! [`report`] computes the service level from stored alerts.

pub mod check;
pub mod core;
pub mod effects;
pub mod ladder;
pub mod lifecycle;
pub mod pauses;
pub mod report;

pub use self::core::Core;
pub use check::CheckPlan;
pub use effects::{AlertRecord, Effects, HistoryRow, OutboxEntry, PauseChange};
pub use ladder::{Ladder, Plan, Step};
pub use lifecycle::{Card, Progress, Refusal, StaffAction, StaffCommand};
pub use pauses::{PauseCommand, PauseError};

#[cfg(test)]
mod tests;
