//! The Mimamori hub: an MQTT edge with an embedded broker, ingest, the rules
//! engine's shell, alerts, a store and the HTTP/WebSocket API.
//!
//! Module map (data flows top to bottom):
//! - [`edge`]: accepts MQTT connections, authenticates them, enforces topic ACLs, and
//!   proxies to the embedded rumqttd router ([`edge::router`]);
//! - [`ingest`]: validates what devices publish into resident-keyed events;
//! - [`pipeline`]: the single writer and the one owner of rules and alert state; runs
//!   the pure [`alerts::Core`] (the rules engine of `mimamori-rules` beside the alert
//!   book and its escalation ladder) and commits readings, state, alerts, history,
//!   audit and outbox rows in one transaction per batch;
//! - [`store`]: SQLite or PostgreSQL behind one trait;
//! - [`events`]: the numbered live stream for WebSocket clients;
//! - [`alerts`]: the pure alert lifecycle: staff commands, the escalation ladder, the
//!   service-level report;
//! - [`notify`]: delivery of the outbox's notifications, and daily summaries;
//! - [`api`]: the HTTP API and the dashboard's files;
//! - [`revocation`]: ends a person's live connections when they lose access;
//! - [`throttle`]: back-off of failed logins, per source and per account;
//! - [`limits`]: how many connections each listener admits, in total and per source;
//! - [`cluster`]: cluster mode, several hubs on one NATS JetStream log and one
//!   PostgreSQL store: the event log, partition leases, the live stream across hubs;
//! - [`app`]: wiring, start-up and shutdown;
//! - [`privacy`]: consent, the log of who read whose data, retention by data class and
//!   a resident's export;
//! - [`admin`]: `hub admin …` commands on the database, such as resetting a password;
//! - [`tts`]: the hub's own MQTT client to The Things Stack, feeding ingest.

pub mod admin;
pub mod alerts;
pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod edge;
pub mod events;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod privacy;
pub mod replay;
pub mod revocation;
pub mod security;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod totp;
pub mod tts;

pub use app::Hub;
