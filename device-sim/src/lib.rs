//! `device-sim`: simulated homes, residents and GPS trackers that talk to the Mimamori hub
//! exactly as real devices do (MQTT with hub-issued credentials) plus the HTTP API for
//! provisioning and for checking which alerts the hub raised.
//!
//! # Layout
//! Pure core (no I/O, no clock; a seed and a start time give the same timeline every time):
//! - [`geo`]: metric offsets around a point, distances;
//! - [`home`]: the devices of a home, its safe zone, resident names;
//! - [`life`]: a resident's daily routine as segments of where they are and what they do;
//! - [`sensors`]: PIR, door, tracker, gateway and button models turning segments into messages;
//! - [`timeline`]: the messages and narration a simulated resident produces, in time order;
//! - [`scenario`]: scripted situations that make the hub raise one alert on purpose;
//! - [`record`]: weeks of one home's life, with absences and incidents, as `hub replay` events;
//! - [`expect`]: the alerts a run or a replay should raise, and the check of those raised;
//! - [`rules`]: the rule settings provisioned for a given time compression;
//! - [`client`]: what Zigbee2MQTT, OwnTracks or Traccar Client would send for each message (`--as`).
//!
//! Shell (network and real time):
//! - [`hub`]: the HTTP API client; [`mqtt`]: device connections;
//! - [`fleet`]: the fleet file of issued credentials; [`provision`]: creating residents;
//! - [`backfill`]: a fleet's past days of motion, backdated;
//! - [`play`]: playing timelines in compressed real time and checking the hub's alerts;
//! - [`load`]: the MQTT load generator; [`report`]: human or JSON output; [`cli`]: the command line.

pub mod backfill;
pub mod cli;
pub mod client;
pub mod expect;
pub mod fleet;
pub mod geo;
pub mod home;
pub mod hub;
pub mod life;
pub mod load;
pub mod mqtt;
pub mod play;
pub mod provision;
pub mod record;
pub mod report;
pub mod rules;
pub mod scenario;
pub mod sensors;
pub mod timeline;
