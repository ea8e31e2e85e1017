//! The integration tests: each module drives the real hub process.

mod browser;
mod core;
mod docker;
mod docs;
mod edge;
mod gateways;
mod helpers;
mod notify;
mod rules;
mod sim;
mod start;
mod store;
mod ws;
