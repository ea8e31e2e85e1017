//! The integration tests: each module drives the real hub process.

mod core;
mod docs;
mod helpers;
mod rules;
