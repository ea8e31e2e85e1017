//! The one place the hub reads the wall clock; everything else is handed a [`Clock`].

use chrono::{DateTime, Utc};

/// A source of the current time, injected so that time-dependent code can be tested.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
