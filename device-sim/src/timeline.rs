//! What a simulated resident's devices send, and what the simulator says about it, in time
//! order. Times are simulated seconds from the start of the timeline; the player maps them to
//! real time with the speed factor.

use mimamori_protocol::native::{
    BarePayload, DoorPayload, GpsPayload, MotionPayload, StatusPayload,
};
use mimamori_protocol::topic::MessageKind;
use mimamori_protocol::AlertKind;

use crate::home::Role;

/// One device message, or a change in a device's power that the shell carries out.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Motion {
        motion: bool,
        room: String,
        battery: Option<u8>,
    },
    Door {
        open: bool,
    },
    Gps {
        lat: f64,
        lon: f64,
        accuracy_m: f64,
        battery: Option<u8>,
    },
    Sos,
    Heartbeat {
        battery: Option<u8>,
    },
    /// The device loses power: its connection drops without an MQTT DISCONNECT, so the hub
    /// delivers its will (`{"online": false}`).
    PowerLoss,
    /// Power is back: the device connects again and says it is online.
    PowerBack,
}

impl Msg {
    /// The topic kind and JSON payload, or `None` for power changes. No `ts` is sent: the
    /// simulated clock runs ahead of the hub's, which judges time by receipt.
    pub fn wire(&self) -> Option<(MessageKind, String)> {
        let bat = |b: &Option<u8>| b.map(f64::from);
        let json = match self {
            Msg::Motion {
                motion,
                room,
                battery,
            } => serde_json::to_string(&MotionPayload {
                ts: None,
                motion: *motion,
                room: Some(room.clone()),
                battery: bat(battery),
            }),
            Msg::Door { open } => serde_json::to_string(&DoorPayload {
                ts: None,
                open: *open,
                battery: None,
            }),
            Msg::Gps {
                lat,
                lon,
                accuracy_m,
                battery,
            } => serde_json::to_string(&GpsPayload {
                ts: None,
                lat: round_to(*lat, 7),
                lon: round_to(*lon, 7),
                accuracy_m: Some(round_to(*accuracy_m, 1)),
                battery: bat(battery),
            }),
            Msg::Sos => serde_json::to_string(&BarePayload {
                ts: None,
                battery: None,
            }),
            Msg::Heartbeat { battery } => serde_json::to_string(&BarePayload {
                ts: None,
                battery: bat(battery),
            }),
            Msg::PowerLoss | Msg::PowerBack => return None,
        };
        let kind = match self {
            Msg::Motion { .. } => MessageKind::Motion,
            Msg::Door { .. } => MessageKind::Door,
            Msg::Gps { .. } => MessageKind::Gps,
            Msg::Sos => MessageKind::Sos,
            _ => MessageKind::Heartbeat,
        };
        // These payload types hold only numbers, strings and booleans: serialising cannot fail.
        json.ok().map(|j| (kind, j))
    }
}

/// The `status` payload a device says on connecting (`true`) and leaves as its will (`false`).
pub fn status_payload(online: bool) -> String {
    serde_json::to_string(&StatusPayload {
        ts: None,
        online,
        battery: None,
    })
    .unwrap_or_default()
}

fn round_to(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// A message of one device at a simulated instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    pub at: f64,
    pub role: Role,
    pub msg: Msg,
}

/// A sentence about what the resident does, and the alert the hub should raise because of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub at: f64,
    pub text: String,
    pub expect: Option<AlertKind>,
}

/// Everything one stretch of simulated life produces.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Timeline {
    /// Sorted by `at`.
    pub emissions: Vec<Emission>,
    /// Sorted by `at`.
    pub notes: Vec<Note>,
    /// Simulated length; the player waits until then even if nothing happens at the end.
    pub end: f64,
}

impl Timeline {
    pub fn sort(&mut self) {
        self.emissions.sort_by(|a, b| a.at.total_cmp(&b.at));
        self.notes.sort_by(|a, b| a.at.total_cmp(&b.at));
    }

    pub fn note(&mut self, at: f64, text: impl Into<String>) {
        self.notes.push(Note {
            at,
            text: text.into(),
            expect: None,
        });
    }

    pub fn expect(&mut self, at: f64, text: impl Into<String>, kind: AlertKind) {
        self.notes.push(Note {
            at,
            text: text.into(),
            expect: Some(kind),
        });
    }

    pub fn emit(&mut self, at: f64, role: Role, msg: Msg) {
        self.emissions.push(Emission { at, role, msg });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimamori_protocol::parse_native;

    #[test]
    fn every_message_is_one_the_hub_accepts() {
        let now = chrono::Utc::now();
        let msgs = [
            Msg::Motion {
                motion: true,
                room: "kitchen".into(),
                battery: Some(80),
            },
            Msg::Door { open: true },
            Msg::Gps {
                lat: 35.7074,
                lon: 139.6638,
                accuracy_m: 12.34,
                battery: Some(50),
            },
            Msg::Sos,
            Msg::Heartbeat { battery: None },
        ];
        for m in msgs {
            let (kind, json) = m.wire().unwrap_or((MessageKind::Status, String::new()));
            assert!(
                parse_native(kind.as_str(), json.as_bytes(), now).is_ok(),
                "{json}"
            );
        }
        assert!(parse_native("status", status_payload(false).as_bytes(), now).is_ok());
        assert_eq!(Msg::PowerLoss.wire(), None);
    }
}
