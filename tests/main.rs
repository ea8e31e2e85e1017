//! The integration tests: each module drives the real hub process.

mod alert_core;
mod browser;
mod cluster;
mod conformance;
mod core;
mod docker;
mod docs;
mod edge;
mod gateways;
mod helpers;
mod line;
mod notify;
mod rules;
mod security;
mod sim;
mod start;
mod store;
mod ws;
