//! The integration tests: each module drives the real hub process.

mod alert_core;
mod browser;
mod core;
mod docs;
mod edge;
mod gateways;
mod helpers;
mod line;
mod notify;
mod rules;
mod sim;
mod store;
mod ws;
