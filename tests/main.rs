//! The integration tests: each module drives the real hub process.

mod alert_core;
mod ble;
mod browser;
mod care;
mod cluster;
mod conformance;
mod core;
mod desk;
mod docker;
mod docs;
mod echonet;
mod edge;
mod gateways;
mod helpers;
mod line;
mod lorawan;
mod notify;
mod privacy;
mod push;
mod rules;
mod security;
mod sim;
mod start;
mod store;
mod tts;
mod ws;
