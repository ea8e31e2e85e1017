//! The clients the simulator can speak as (`--as`): the native protocol, or what
//! Zigbee2MQTT, the OwnTracks app and Traccar Client (OsmAnd protocol) send for the same
//! moments of a resident's life. Pure: the timeline stays the same, and an [`Encoder`] turns
//! each of its messages into the bytes that client would send, given the wall-clock second
//! the shell is about to send it at.
//!
//! Which device speaks which way ([`Client::carrier`]):
//! - `zigbee2mqtt`: motion, door and button sensors are Zigbee devices behind the home's
//!   gateway; the gateway's MQTT connection publishes their whole cached state under
//!   `zigbee2mqtt/{gateway id}/{friendly name}`. The gateway box also sends its own native
//!   heartbeat: Zigbee2MQTT publishes nothing of the bridge's own between `bridge/state`
//!   messages, and the hub judges a gateway by its silence. The tracker stays native.
//! - `chirpstack`: motion, door and button sensors are LoRaWAN devices whose uplinks
//!   ChirpStack v4 publishes as JSON events on `application/{app}/device/{DevEUI}/event/…`,
//!   forwarded to the hub over the home gateway's connection (as the Mosquitto bridge of
//!   docs/gateways.md does). The gateway box sends its own native heartbeat, as under
//!   `zigbee2mqtt`; the tracker stays native.
//! - `owntracks` and `osmand`: only the tracker changes (those apps carry positions only);
//!   the home's sensors stay native.

use std::collections::BTreeMap;

use mimamori_protocol::api::LatLon;
use mimamori_protocol::topic::{device_topic, MessageKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::home::Role;
use crate::timeline::{status_payload, Msg};

/// The OwnTracks "Device ID" of every simulated phone: its topic is `owntracks/{id}/phone`.
pub const OWNTRACKS_PHONE: &str = "phone";
/// The OwnTracks tracker id shown on maps.
const OWNTRACKS_TID: &str = "ph";
/// Zigbee2MQTT's link quality of every simulated sensor (a good signal, as in one flat).
const LINKQUALITY: u8 = 120;

/// Which client the simulator speaks as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Client {
    /// The native protocol: every device its own MQTT connection on `watch/v1/{id}/…`.
    #[default]
    Native,
    /// One Zigbee2MQTT gateway per home carries its motion, door and button sensors.
    Zigbee2mqtt,
    /// One ChirpStack (through its Mosquitto's bridge) per home carries its LoRaWAN sensors.
    Chirpstack,
    /// The tracker is a phone running OwnTracks (MQTT).
    Owntracks,
    /// The tracker reports over HTTP like Traccar Client (OsmAnd protocol).
    Osmand,
}

/// How one device reaches the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// Its own MQTT connection, native protocol.
    Native,
    /// The Zigbee2MQTT gateway itself: an MQTT connection that carries the Zigbee devices.
    Zigbee2mqttBridge,
    /// A Zigbee device: no connection of its own, its state goes through the gateway's.
    Zigbee,
    /// The bridge from the home's ChirpStack: an MQTT connection carrying LoRaWAN events.
    ChirpstackBridge,
    /// A LoRaWAN device: no connection of its own, its uplinks go through the bridge's.
    Lorawan,
    /// The OwnTracks app: an MQTT connection of its own.
    OwnTracks,
    /// HTTP reports, no connection.
    OsmAnd,
}

impl Client {
    pub fn as_str(self) -> &'static str {
        match self {
            Client::Native => "native",
            Client::Zigbee2mqtt => "zigbee2mqtt",
            Client::Chirpstack => "chirpstack",
            Client::Owntracks => "owntracks",
            Client::Osmand => "osmand",
        }
    }

    pub fn carrier(self, role: Role) -> Carrier {
        match (self, role) {
            (Client::Zigbee2mqtt, Role::Gateway) => Carrier::Zigbee2mqttBridge,
            (Client::Zigbee2mqtt, Role::Motion(_) | Role::EntranceDoor | Role::Button) => {
                Carrier::Zigbee
            }
            (Client::Chirpstack, Role::Gateway) => Carrier::ChirpstackBridge,
            (Client::Chirpstack, Role::Motion(_) | Role::EntranceDoor | Role::Button) => {
                Carrier::Lorawan
            }
            (Client::Owntracks, Role::Tracker) => Carrier::OwnTracks,
            (Client::Osmand, Role::Tracker) => Carrier::OsmAnd,
            _ => Carrier::Native,
        }
    }
}

/// A device's `friendly_name` in Zigbee2MQTT: its name in the hub.
pub fn friendly_name(role: Role) -> String {
    role.label()
}

/// The ChirpStack application every simulated LoRaWAN device belongs to.
pub const CHIRPSTACK_APPLICATION: &str = "0b0e4f4b-7c1a-4a6e-9d55-6d696d616d6f";

/// A simulated device's DevEUI: 16 hex digits drawn from its hub id (FNV-1a), so that
/// provisioning and every later run agree on it without storing it.
pub fn dev_eui(device_id: &str) -> String {
    let hash = device_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The base topic a gateway's Zigbee2MQTT is configured with.
pub fn zigbee2mqtt_base(gateway_id: &str) -> String {
    format!("zigbee2mqtt/{gateway_id}")
}

/// The topic an OwnTracks phone publishes its locations and its will on.
pub fn owntracks_topic(device_id: &str) -> String {
    format!("owntracks/{device_id}/{OWNTRACKS_PHONE}")
}

/// The command topic an OwnTracks phone subscribes to (the hub sends the safe zones there).
pub fn owntracks_cmd_topic(device_id: &str) -> String {
    format!("{}/cmd", owntracks_topic(device_id))
}

/// One thing to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    /// An MQTT publish, on the connection of [`Encoder::connection_of`] the device.
    Mqtt {
        topic: String,
        payload: String,
        retain: bool,
    },
    /// An OsmAnd report: the query string of `GET /api/v1/osmand?{query}`.
    Osmand { query: String },
}

fn mqtt(topic: String, payload: String, retain: bool) -> Wire {
    Wire::Mqtt {
        topic,
        payload,
        retain,
    }
}

/// A device as the encoder needs it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub role: Role,
    pub device_id: String,
    /// The device secret: OsmAnd sends it as `key`.
    pub secret: String,
}

/// The tracker's newest position, repeated when it only needs to show it is alive.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fix {
    lat: f64,
    lon: f64,
    accuracy_m: f64,
    battery: Option<u8>,
}

/// Turns one home's timeline messages into what its devices' clients send.
#[derive(Debug, Clone)]
pub struct Encoder {
    client: Client,
    devices: BTreeMap<Role, Identity>,
    /// Zigbee2MQTT's cached state of each Zigbee device (keys sorted: `Map` is a BTreeMap).
    zigbee: BTreeMap<Role, Map<String, Value>>,
    fix: Fix,
}

impl Encoder {
    /// An encoder for one home; the tracker starts at `home`.
    pub fn new(client: Client, devices: Vec<Identity>, home: LatLon) -> Encoder {
        let zigbee = devices
            .iter()
            .filter(|d| client.carrier(d.role) == Carrier::Zigbee)
            .map(|d| (d.role, initial_state(d.role)))
            .collect();
        Encoder {
            client,
            devices: devices.into_iter().map(|d| (d.role, d)).collect(),
            zigbee,
            fix: Fix {
                lat: home.lat,
                lon: home.lon,
                accuracy_m: 10.0,
                battery: None,
            },
        }
    }

    pub fn client(&self) -> Client {
        self.client
    }

    /// The hub device id of a role of the home (empty if the home has no such device).
    pub fn id_of(&self, role: Role) -> &str {
        self.devices.get(&role).map_or("", |d| d.device_id.as_str())
    }

    /// The role whose MQTT connection carries this device's publishes, `None` when it has none.
    pub fn connection_of(&self, role: Role) -> Option<Role> {
        match self.client.carrier(role) {
            Carrier::Zigbee | Carrier::Lorawan => Some(Role::Gateway),
            Carrier::OsmAnd => None,
            _ => Some(role),
        }
    }

    /// Whether this device opens an MQTT connection of its own.
    pub fn connects(&self, role: Role) -> bool {
        self.connection_of(role) == Some(role)
    }

    /// The MQTT last will of a device's connection, given when it connects (epoch seconds).
    pub fn will(&self, role: Role, now_s: i64) -> Option<Wire> {
        let id = self.id_of(role);
        match self.client.carrier(role) {
            Carrier::Native | Carrier::ChirpstackBridge => Some(mqtt(
                device_topic(id, MessageKind::Status),
                status_payload(false),
                false,
            )),
            Carrier::Zigbee2mqttBridge => Some(mqtt(
                format!("{}/bridge/state", zigbee2mqtt_base(id)),
                availability(false),
                true,
            )),
            // OwnTracks puts the time it connected in its will.
            Carrier::OwnTracks => Some(mqtt(
                owntracks_topic(id),
                json!({"_type": "lwt", "tst": now_s}).to_string(),
                false,
            )),
            Carrier::Zigbee | Carrier::Lorawan | Carrier::OsmAnd => None,
        }
    }

    /// What a device's connection says as soon as it is open (or open again).
    pub fn hello(&self, role: Role) -> Vec<Wire> {
        let id = self.id_of(role);
        match self.client.carrier(role) {
            Carrier::Native | Carrier::ChirpstackBridge => vec![mqtt(
                device_topic(id, MessageKind::Status),
                status_payload(true),
                false,
            )],
            // The bridge, then every device it knows, as Zigbee2MQTT does on start.
            Carrier::Zigbee2mqttBridge => {
                let base = zigbee2mqtt_base(id);
                let mut out = vec![mqtt(
                    format!("{base}/bridge/state"),
                    availability(true),
                    true,
                )];
                out.extend(self.zigbee.keys().map(|r| {
                    mqtt(
                        format!("{base}/{}/availability", friendly_name(*r)),
                        availability(true),
                        true,
                    )
                }));
                out
            }
            Carrier::OwnTracks | Carrier::Zigbee | Carrier::Lorawan | Carrier::OsmAnd => vec![],
        }
    }

    /// What one timeline message of `role` becomes, sent at epoch second `now_s`. Power
    /// changes of devices with a connection are the shell's (it drops and reopens it).
    pub fn encode(&mut self, role: Role, msg: &Msg, now_s: i64) -> Vec<Wire> {
        match self.client.carrier(role) {
            Carrier::Native | Carrier::Zigbee2mqttBridge | Carrier::ChirpstackBridge => {
                self.native(role, msg)
            }
            Carrier::Zigbee => self.zigbee(role, msg),
            Carrier::Lorawan => self.lorawan(role, msg, now_s),
            Carrier::OwnTracks => self.owntracks(role, msg, now_s),
            Carrier::OsmAnd => self.osmand(role, msg, now_s),
        }
    }

    fn native(&self, role: Role, msg: &Msg) -> Vec<Wire> {
        msg.wire()
            .map(|(kind, payload)| mqtt(device_topic(self.id_of(role), kind), payload, false))
            .into_iter()
            .collect()
    }

    /// Zigbee2MQTT publishes a device's whole cached state on every report.
    fn zigbee(&mut self, role: Role, msg: &Msg) -> Vec<Wire> {
        let topic = format!(
            "{}/{}",
            zigbee2mqtt_base(self.id_of(Role::Gateway)),
            friendly_name(role)
        );
        let Some(state) = self.zigbee.get_mut(&role) else {
            return vec![];
        };
        let mut set_battery = |b: &Option<u8>| {
            if let Some(b) = b {
                state.insert("battery".into(), json!(b));
            }
        };
        let mut action = None;
        match msg {
            Msg::Motion {
                motion, battery, ..
            } => {
                set_battery(battery);
                state.insert("occupancy".into(), json!(motion));
            }
            // The reed contact touches its magnet while the door is shut.
            Msg::Door { open } => {
                state.insert("contact".into(), json!(!open));
            }
            Msg::Heartbeat { battery } => set_battery(battery),
            // Zigbee2MQTT does not keep an action in the cache: it is in this message only.
            Msg::Sos => action = Some("single"),
            Msg::Gps { .. } => return vec![],
            Msg::PowerLoss | Msg::PowerBack => {
                let online = *msg == Msg::PowerBack;
                return vec![mqtt(
                    format!("{topic}/availability"),
                    availability(online),
                    true,
                )];
            }
        }
        let mut out = state.clone();
        if let Some(a) = action {
            out.insert("action".into(), json!(a));
        }
        vec![mqtt(topic, Value::Object(out).to_string(), false)]
    }

    /// A ChirpStack v4 JSON event of a LoRaWAN sensor: an `up` whose codec `object` says
    /// what happened (the default field names of the hub's mapping: `motion`, `door`,
    /// `button`), or a `status` with the battery level for a sign of life. A LoRaWAN
    /// device has no availability: a power loss is silence.
    fn lorawan(&self, role: Role, msg: &Msg, now_s: i64) -> Vec<Wire> {
        let eui = dev_eui(self.id_of(role));
        let mut event = Map::new();
        let time = chrono::DateTime::from_timestamp(now_s, 0).unwrap_or_default();
        event.insert("time".into(), json!(time.to_rfc3339()));
        let info = json!({"applicationId": CHIRPSTACK_APPLICATION, "deviceName": role.label(), "devEui": eui});
        event.insert("deviceInfo".into(), info);
        let object = match msg {
            Msg::Motion {
                motion, battery, ..
            } => {
                let mut o = json!({ "motion": motion });
                if let (Some(b), Some(obj)) = (battery, o.as_object_mut()) {
                    obj.insert("battery".into(), json!(b));
                }
                o
            }
            Msg::Door { open } => json!({"door": if *open { "open" } else { "close" }}),
            Msg::Sos => json!({"button": "short"}),
            Msg::Heartbeat { battery } => {
                event.insert("margin".into(), json!(10));
                match battery {
                    Some(b) => event.insert("batteryLevel".into(), json!(b)),
                    None => event.insert("batteryLevelUnavailable".into(), json!(true)),
                };
                let topic = chirpstack_topic(&eui, "status");
                return vec![mqtt(topic, Value::Object(event).to_string(), false)];
            }
            Msg::Gps { .. } | Msg::PowerLoss | Msg::PowerBack => return vec![],
        };
        event.insert("fPort".into(), json!(85));
        event.insert("object".into(), object);
        vec![mqtt(
            chirpstack_topic(&eui, "up"),
            Value::Object(event).to_string(),
            false,
        )]
    }

    /// Remembers a fix, or for a heartbeat gives the newest one again (`ping` for OwnTracks).
    fn fix_of(&mut self, msg: &Msg) -> Option<(Fix, bool)> {
        match msg {
            Msg::Gps {
                lat,
                lon,
                accuracy_m,
                battery,
            } => {
                self.fix = Fix {
                    lat: *lat,
                    lon: *lon,
                    accuracy_m: *accuracy_m,
                    battery: battery.or(self.fix.battery),
                };
                Some((self.fix, false))
            }
            Msg::Heartbeat { battery } => {
                self.fix.battery = battery.or(self.fix.battery);
                Some((self.fix, true))
            }
            _ => None,
        }
    }

    /// A `_type: location` as OwnTracks for Android publishes it (keys sorted, `acc` and
    /// `batt` whole numbers, `tst` in seconds; `t: p` marks a periodic ping).
    fn owntracks(&mut self, role: Role, msg: &Msg, now_s: i64) -> Vec<Wire> {
        let Some((fix, ping)) = self.fix_of(msg) else {
            return vec![];
        };
        let mut loc = Map::new();
        loc.insert("_type".into(), json!("location"));
        loc.insert("acc".into(), json!(fix.accuracy_m.round() as i64));
        if let Some(b) = fix.battery {
            loc.insert("batt".into(), json!(b));
        }
        loc.insert("lat".into(), json!(round_to(fix.lat, 7)));
        loc.insert("lon".into(), json!(round_to(fix.lon, 7)));
        if ping {
            loc.insert("t".into(), json!("p"));
        }
        loc.insert("tid".into(), json!(OWNTRACKS_TID));
        loc.insert("tst".into(), json!(now_s));
        vec![mqtt(
            owntracks_topic(self.id_of(role)),
            Value::Object(loc).to_string(),
            false,
        )]
    }

    /// A report as Traccar Client sends it, with the secret as `key`.
    fn osmand(&mut self, role: Role, msg: &Msg, now_s: i64) -> Vec<Wire> {
        let Some((fix, _)) = self.fix_of(msg) else {
            return vec![];
        };
        let Some(d) = self.devices.get(&role) else {
            return vec![];
        };
        let mut q = form_pairs(&[
            ("key", d.secret.as_str()),
            ("id", d.device_id.as_str()),
            ("timestamp", &now_s.to_string()),
            ("lat", &round_to(fix.lat, 7).to_string()),
            ("lon", &round_to(fix.lon, 7).to_string()),
            ("accuracy", &format!("{:.1}", fix.accuracy_m)),
        ]);
        if let Some(b) = fix.battery {
            q.push_str(&format!("&batt={b}.0"));
        }
        vec![Wire::Osmand { query: q }]
    }
}

/// ChirpStack's default event topic.
fn chirpstack_topic(dev_eui: &str, event: &str) -> String {
    format!("application/{CHIRPSTACK_APPLICATION}/device/{dev_eui}/event/{event}")
}

/// Zigbee2MQTT 2.x availability payloads.
fn availability(online: bool) -> String {
    let state = if online { "online" } else { "offline" };
    json!({ "state": state }).to_string()
}

/// The cached state Zigbee2MQTT holds for a sensor before it first reports: the door shut,
/// nobody moving. The battery is unknown until the sensor says it.
fn initial_state(role: Role) -> Map<String, Value> {
    let mut s = Map::new();
    s.insert("linkquality".into(), json!(LINKQUALITY));
    match role {
        Role::Motion(_) => {
            s.insert("occupancy".into(), json!(false));
        }
        Role::EntranceDoor => {
            s.insert("contact".into(), json!(true));
        }
        _ => {}
    }
    s
}

/// `name=value&…` with values percent-encoded as a form (ids and secrets are URL-safe, but
/// the encoding must not depend on it).
fn form_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn round_to(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::Room;

    const NOW: i64 = 1_764_032_400;
    const HOME: LatLon = LatLon {
        lat: 35.7074,
        lon: 139.6638,
    };

    fn encoder(client: Client) -> Encoder {
        let devices = [
            (Role::Gateway, "gw1"),
            (Role::Motion(Room::Bedroom), "m1"),
            (Role::EntranceDoor, "d1"),
            (Role::Button, "b1"),
            (Role::Tracker, "t1"),
        ]
        .into_iter()
        .map(|(role, id)| Identity {
            role,
            device_id: id.into(),
            secret: format!("secret-{id}"),
        })
        .collect();
        Encoder::new(client, devices, HOME)
    }

    fn one(w: Vec<Wire>) -> (String, String) {
        match w.as_slice() {
            [Wire::Mqtt { topic, payload, .. }] => (topic.clone(), payload.clone()),
            other => (format!("{other:?}"), String::new()),
        }
    }

    fn motion(motion: bool, battery: Option<u8>) -> Msg {
        Msg::Motion {
            motion,
            room: "bedroom".into(),
            battery,
        }
    }

    #[test]
    fn zigbee2mqtt_publishes_whole_sorted_states_per_friendly_name() {
        let mut e = encoder(Client::Zigbee2mqtt);
        let bedroom = Role::Motion(Room::Bedroom);
        assert_eq!(e.connection_of(bedroom), Some(Role::Gateway));
        assert!(!e.connects(bedroom));
        assert_eq!(
            one(e.encode(bedroom, &motion(true, Some(81)), NOW)),
            (
                "zigbee2mqtt/gw1/bedroom motion sensor".into(),
                r#"{"battery":81,"linkquality":120,"occupancy":true}"#.into()
            )
        );
        // A heartbeat repeats the cache, battery and all.
        assert_eq!(
            one(e.encode(bedroom, &motion(false, None), NOW)).1,
            r#"{"battery":81,"linkquality":120,"occupancy":false}"#
        );
        assert_eq!(
            one(e.encode(bedroom, &Msg::Heartbeat { battery: Some(80) }, NOW)).1,
            r#"{"battery":80,"linkquality":120,"occupancy":false}"#
        );
        let door = |open| Msg::Door { open };
        assert_eq!(
            one(e.encode(Role::EntranceDoor, &door(true), NOW)),
            (
                "zigbee2mqtt/gw1/entrance door sensor".into(),
                r#"{"contact":false,"linkquality":120}"#.into()
            )
        );
        assert_eq!(
            one(e.encode(Role::EntranceDoor, &Msg::Heartbeat { battery: None }, NOW)).1,
            r#"{"contact":false,"linkquality":120}"#
        );
        assert_eq!(
            one(e.encode(Role::Button, &Msg::Sos, NOW)).1,
            r#"{"action":"single","linkquality":120}"#
        );
        // The action is not cached.
        assert_eq!(
            one(e.encode(Role::Button, &Msg::Heartbeat { battery: None }, NOW)).1,
            r#"{"linkquality":120}"#
        );
    }

    #[test]
    fn chirpstack_sends_up_events_with_an_object_and_status_events_on_the_gateways_connection() {
        let mut e = encoder(Client::Chirpstack);
        let bedroom = Role::Motion(Room::Bedroom);
        assert_eq!(e.connection_of(bedroom), Some(Role::Gateway));
        let eui = dev_eui("m1");
        assert_eq!(eui.len(), 16);
        let (topic, payload) = one(e.encode(bedroom, &motion(true, Some(81)), NOW));
        assert_eq!(
            topic,
            format!("application/{CHIRPSTACK_APPLICATION}/device/{eui}/event/up")
        );
        let up: Value = serde_json::from_str(&payload).unwrap_or_default();
        assert_eq!(up["object"], json!({"motion": true, "battery": 81}));
        assert_eq!(up["deviceInfo"]["devEui"], eui.as_str());
        assert_eq!(up["time"], "2025-11-25T01:00:00+00:00");
        let (topic, payload) = one(e.encode(
            Role::EntranceDoor,
            &Msg::Heartbeat { battery: Some(70) },
            NOW,
        ));
        assert!(topic.ends_with("/event/status"), "{topic}");
        assert!(payload.contains(r#""batteryLevel":70"#), "{payload}");
        let press = one(e.encode(Role::Button, &Msg::Sos, NOW)).1;
        assert!(press.contains(r#""object":{"button":"short"}"#), "{press}");
        assert!(e.encode(Role::Button, &Msg::PowerLoss, NOW).is_empty());
        assert_eq!(
            one(e.encode(Role::Gateway, &Msg::Heartbeat { battery: None }, NOW)),
            ("watch/v1/gw1/heartbeat".into(), "{}".into())
        );
    }

    #[test]
    fn zigbee2mqtt_gateway_says_bridge_and_device_availability_and_keeps_its_heartbeat() {
        let mut e = encoder(Client::Zigbee2mqtt);
        let hello: Vec<(String, String)> = e
            .hello(Role::Gateway)
            .into_iter()
            .map(|w| one(vec![w]))
            .collect();
        assert_eq!(
            hello[0],
            (
                "zigbee2mqtt/gw1/bridge/state".into(),
                r#"{"state":"online"}"#.into()
            )
        );
        assert!(hello.contains(&(
            "zigbee2mqtt/gw1/SOS pendant/availability".into(),
            r#"{"state":"online"}"#.into()
        )));
        assert_eq!(hello.len(), 4);
        assert_eq!(
            e.will(Role::Gateway, NOW),
            Some(Wire::Mqtt {
                topic: "zigbee2mqtt/gw1/bridge/state".into(),
                payload: r#"{"state":"offline"}"#.into(),
                retain: true
            })
        );
        assert_eq!(
            one(e.encode(Role::Gateway, &Msg::Heartbeat { battery: None }, NOW)),
            ("watch/v1/gw1/heartbeat".into(), "{}".into())
        );
        // The tracker is no Zigbee device.
        assert!(e.connects(Role::Tracker));
        assert_eq!(
            one(e.encode(
                Role::Tracker,
                &Msg::Gps {
                    lat: 35.7,
                    lon: 139.6,
                    accuracy_m: 5.0,
                    battery: None
                },
                NOW
            ))
            .0,
            "watch/v1/t1/gps"
        );
    }

    #[test]
    fn owntracks_sends_locations_pings_and_an_lwt() {
        let mut e = encoder(Client::Owntracks);
        assert_eq!(
            one(e.encode(Role::Tracker, &Msg::Heartbeat { battery: None }, NOW)).1,
            r#"{"_type":"location","acc":10,"lat":35.7074,"lon":139.6638,"t":"p","tid":"ph","tst":1764032400}"#
        );
        let fix = Msg::Gps {
            lat: 35.712_345_678,
            lon: 139.66,
            accuracy_m: 12.4,
            battery: Some(81),
        };
        assert_eq!(
            one(e.encode(Role::Tracker, &fix, NOW + 30)),
            (
                "owntracks/t1/phone".into(),
                r#"{"_type":"location","acc":12,"batt":81,"lat":35.7123457,"lon":139.66,"tid":"ph","tst":1764032430}"#.into()
            )
        );
        assert_eq!(
            one(e.encode(Role::Tracker, &Msg::Heartbeat { battery: None }, NOW + 60)).1,
            r#"{"_type":"location","acc":12,"batt":81,"lat":35.7123457,"lon":139.66,"t":"p","tid":"ph","tst":1764032460}"#
        );
        assert_eq!(
            one(e.will(Role::Tracker, NOW).into_iter().collect()),
            (
                "owntracks/t1/phone".into(),
                r#"{"_type":"lwt","tst":1764032400}"#.into()
            )
        );
        assert!(e.hello(Role::Tracker).is_empty());
        // The home's sensors stay native.
        assert_eq!(
            one(e.encode(Role::EntranceDoor, &Msg::Door { open: true }, NOW)).0,
            "watch/v1/d1/door"
        );
    }

    #[test]
    fn osmand_sends_traccar_client_queries_with_the_key() {
        let mut e = encoder(Client::Osmand);
        assert_eq!(e.connection_of(Role::Tracker), None);
        assert!(e.will(Role::Tracker, NOW).is_none());
        let fix = Msg::Gps {
            lat: 35.7074,
            lon: 139.6638,
            accuracy_m: 12.0,
            battery: Some(81),
        };
        assert_eq!(
            e.encode(Role::Tracker, &fix, NOW),
            vec![Wire::Osmand {
                query: "key=secret-t1&id=t1&timestamp=1764032400&lat=35.7074&lon=139.6638&accuracy=12.0&batt=81.0".into()
            }]
        );
        assert!(e.encode(Role::Tracker, &Msg::PowerLoss, NOW).is_empty());
        assert_eq!(percent("a b/+"), "a%20b%2F%2B");
    }

    #[test]
    fn native_is_the_timelines_own_wire() {
        let mut e = encoder(Client::Native);
        let m = motion(true, None);
        let (kind, payload) = m.wire().unwrap_or((MessageKind::Status, String::new()));
        assert_eq!(
            one(e.encode(Role::Motion(Room::Bedroom), &m, NOW)),
            (device_topic("m1", kind), payload)
        );
        assert_eq!(
            one(e.hello(Role::Button)),
            ("watch/v1/b1/status".into(), status_payload(true))
        );
    }
}
