//! Wire types shared by the Mimamori hub, its rules engine and `device-sim`.
//!
//! Everything that crosses a process boundary is defined once here:
//! - [`topic`]: the native MQTT topic layout `watch/v1/{device_id}/{kind}`;
//! - [`native`]: the native JSON payloads and their validation into [`event::Reading`]s;
//! - [`event`]: the validated, resident-keyed events that flow from ingest into the rules;
//! - [`settings`]: per-resident rule settings with their documented defaults;
//! - [`zone`]: safe-zone geometry as it travels in the API (GeoJSON polygon or circle);
//! - [`pause`]: dated pauses of a resident's watch rules;
//! - [`alert`]: alerts as the API, MQTT and WebSocket show them;
//! - [`contact`]: notification contacts and deliveries;
//! - [`api`]: request and response bodies of the HTTP API;
//! - [`gateway`]: API bodies of the gateway adapters (Zigbee2MQTT device mapping).
//!
//! This crate does no I/O and never reads the clock: callers pass the receive time in.

pub mod alert;
pub mod api;
pub mod card;
pub mod contact;
pub mod event;
pub mod gateway;
pub mod native;
pub mod pause;
pub mod settings;
pub mod topic;
pub mod zone;

pub use alert::{Alert, AlertKind, AlertState, Severity};
pub use event::{DeviceEvent, DeviceKind, DeviceRole, Reading};
pub use native::{parse_native, RejectReason};
pub use settings::RuleSettings;
