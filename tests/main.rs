//! The integration tests: each module drives the real hub process.

mod core;
mod docs;
mod edge;
mod gateways;
mod helpers;
mod rules;
mod sim;
mod notify;
mod store;
mod ws;
mod browser;
