//! The pure rules engine of Mimamori: device events and the current time in, alert decisions and
//! persisted per-resident state out.
//!
//! Nothing here does I/O, reads the clock or draws random numbers: the hub shell passes `now`
//! into every call, sleeps until [`Engine::poll_timeout`], drains [`Engine::poll_decision`] and
//! persists the residents [`Engine::take_dirty`] names. See [`engine`] for the rules themselves.
#![warn(missing_docs)]

mod clock;
pub mod engine;
mod stamp;
pub mod zone;

pub use engine::{
    AlertKey, Decision, DeviceInfo, DeviceStatus, Engine, Location, Position, ResidentConfig,
    ResidentState, ResidentStatus,
};
pub use zone::SafeZone;
