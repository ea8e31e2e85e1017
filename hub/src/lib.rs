//! The Mimamori hub.
pub mod store;
