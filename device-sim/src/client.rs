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
//! - `echonet`: motion sensors and the pendant are ECHONET Lite devices (a human detection
//!   sensor, an emergency button) whose properties echonetlite2mqtt publishes on
//!   `echonetlite2mqtt/{gateway}/elapi/v2/devices/{id}/properties/{name}` over the home
//!   gateway's connection; ECHONET Lite has no door class the hub maps, so the door, the
//!   gateway's own heartbeat and the tracker stay native.
//! - `ble`: the tracker is a BLE tag, heard by the home's ESPresense node while the resident
//!   is home (`espresense/devices/{tag}/{room}`) and, outside, by the town's watch-over app
//!   on volunteers' phones (a native `sighting` with the phone's position). The tag has no
//!   connection: its sightings go over the receiver's that heard it.
//! - `owntracks` and `osmand`: only the tracker changes (those apps carry positions only);
//!   the home's sensors stay native.

use std::collections::BTreeMap;

use mimamori_protocol::api::LatLon;
use mimamori_protocol::topic::{device_topic, MessageKind};
use mimamori_protocol::DeviceKind;
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
    /// One echonetlite2mqtt per home carries its human detection sensors and button.
    Echonet,
    /// The tracker is a BLE tag heard by an ESPresense node at home and volunteers' phones.
    Ble,
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
    /// The home gateway running echonetlite2mqtt: an MQTT connection carrying ECHONET Lite.
    EchonetBridge,
    /// An ECHONET Lite device: its properties go through the gateway's connection.
    Echonet,
    /// A BLE tag: no connection, heard by whichever receiver is near.
    Tag,
    /// An ESPresense node: an MQTT connection of its own, speaking ESPresense's topics.
    Espresense,
}

impl Client {
    pub fn as_str(self) -> &'static str {
        match self {
            Client::Native => "native",
            Client::Zigbee2mqtt => "zigbee2mqtt",
            Client::Chirpstack => "chirpstack",
            Client::Owntracks => "owntracks",
            Client::Osmand => "osmand",
            Client::Echonet => "echonet",
            Client::Ble => "ble",
        }
    }

    /// The device kind the hub registers for a role: under `ble` the tracker is a tag.
    pub fn kind_of(self, role: Role) -> DeviceKind {
        match (self, role) {
            (Client::Ble, Role::Tracker) => DeviceKind::Tag,
            _ => role.kind(),
        }
    }

    /// The devices a home gets besides its own set: under `ble`, a home with a tracker gets
    /// the receivers that hear its tag.
    pub fn extra_roles(self, roles: &[Role]) -> Vec<Role> {
        match self {
            Client::Ble if roles.contains(&Role::Tracker) => {
                vec![Role::HomeReceiver, Role::TownReceiver]
            }
            _ => vec![],
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
            (Client::Echonet, Role::Gateway) => Carrier::EchonetBridge,
            (Client::Echonet, Role::Motion(_) | Role::Button) => Carrier::Echonet,
            (Client::Ble, Role::Tracker) => Carrier::Tag,
            (Client::Ble, Role::HomeReceiver) => Carrier::Espresense,
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

/// A simulated ECHONET Lite device's id as echonetlite2mqtt names it: the node's
/// identification number (`fe`, a manufacturer code, a unique part drawn from the hub id)
/// and the object (class group, class, instance: `000701` for a human detection sensor,
/// `000301` for an emergency button).
pub fn echonet_id(role: Role, device_id: &str) -> String {
    let object = if role == Role::Button {
        "000301"
    } else {
        "000701"
    };
    format!("fe00000b{}00000000_{object}", dev_eui(device_id))
}

/// The base topic of a gateway's echonetlite2mqtt (`MQTT_BASE_TOPIC`).
pub fn echonet_base(gateway_id: &str) -> String {
    format!("echonetlite2mqtt/{gateway_id}/elapi/v2/devices")
}

/// A simulated tag's id as ESPresense reports an iBeacon, drawn from its hub id.
pub fn tag_id(device_id: &str) -> String {
    let h = dev_eui(device_id);
    format!("iBeacon:6d696d61-6d6f-7269-{}-{}-1-1", &h[..4], &h[4..])
}

/// The ESPresense room of every home's node.
pub const HOME_ROOM: &str = "home";
/// How far the home's node hears the tag, in metres (ESPresense's default maximum distance
/// is 16 m; a node near the entrance hears the whole flat).
pub const HOME_RANGE_M: f64 = 30.0;
/// How far a volunteer's phone hears a tag, in metres.
pub const TOWN_RANGE_M: f64 = 50.0;
/// The place staff and families read for the volunteers' sightings.
pub const TOWN_PLACE: &str = "volunteer app";
/// The signal strength of a tag at 1 m, as iBeacons advertise it.
const RSSI_AT_1M: f64 = -59.0;

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
    /// An MQTT publish on the connection of `via`: a tag's sighting, sent by the receiver
    /// that heard it.
    Via {
        via: Role,
        topic: String,
        payload: String,
    },
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
    home: LatLon,
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
            home,
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
            Carrier::Zigbee | Carrier::Lorawan | Carrier::Echonet => Some(Role::Gateway),
            Carrier::OsmAnd | Carrier::Tag => None,
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
            Carrier::Native | Carrier::ChirpstackBridge | Carrier::EchonetBridge => Some(mqtt(
                device_topic(id, MessageKind::Status),
                status_payload(false),
                false,
            )),
            Carrier::Espresense => Some(mqtt(espresense_status(), "offline".into(), true)),
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
            Carrier::Echonet | Carrier::Tag => None,
        }
    }

    /// What a device's connection says as soon as it is open (or open again).
    pub fn hello(&self, role: Role) -> Vec<Wire> {
        let id = self.id_of(role);
        match self.client.carrier(role) {
            Carrier::Native | Carrier::ChirpstackBridge | Carrier::EchonetBridge => vec![mqtt(
                device_topic(id, MessageKind::Status),
                status_payload(true),
                false,
            )],
            Carrier::Espresense => vec![mqtt(espresense_status(), "online".into(), true)],
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
            Carrier::Echonet | Carrier::Tag => vec![],
        }
    }

    /// What one timeline message of `role` becomes, sent at epoch second `now_s`. Power
    /// changes of devices with a connection are the shell's (it drops and reopens it).
    pub fn encode(&mut self, role: Role, msg: &Msg, now_s: i64) -> Vec<Wire> {
        match self.client.carrier(role) {
            Carrier::Native
            | Carrier::Zigbee2mqttBridge
            | Carrier::ChirpstackBridge
            | Carrier::EchonetBridge => self.native(role, msg),
            Carrier::Echonet => self.echonet(role, msg),
            Carrier::Tag => self.tag(msg),
            Carrier::Espresense => espresense_telemetry(msg, now_s),
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

    /// A property of an ECHONET Lite device as echonetlite2mqtt publishes it (text, retained):
    /// the human detection sensor's `detection` (its periodic report while nobody moves is
    /// `false`), the emergency button's `occurrenceOfEmergency`. Battery levels and power
    /// changes have no property the hub reads: a power loss is silence.
    fn echonet(&self, role: Role, msg: &Msg) -> Vec<Wire> {
        let (property, value) = match (role, msg) {
            (Role::Motion(_), Msg::Motion { motion, .. }) => ("detection", *motion),
            (Role::Motion(_), Msg::Heartbeat { .. }) => ("detection", false),
            (Role::Button, Msg::Sos) => ("occurrenceOfEmergency", true),
            (Role::Button, Msg::Heartbeat { .. }) => ("occurrenceOfEmergency", false),
            _ => return vec![],
        };
        let topic = format!(
            "{}/{}/properties/{property}",
            echonet_base(self.id_of(Role::Gateway)),
            echonet_id(role, self.id_of(role))
        );
        vec![mqtt(topic, value.to_string(), true)]
    }

    /// A tag is heard where the resident is: by the home's ESPresense node within its
    /// range, else by a volunteer's phone at the resident's side. A heartbeat is the tag's
    /// advertising heard again at the newest place.
    fn tag(&mut self, msg: &Msg) -> Vec<Wire> {
        let Some((fix, _)) = self.fix_of(msg) else {
            return vec![];
        };
        let tag = tag_id(self.id_of(Role::Tracker));
        let at = LatLon {
            lat: fix.lat,
            lon: fix.lon,
        };
        let from_home = crate::geo::local(self.home, at).norm();
        if from_home <= HOME_RANGE_M {
            let topic = format!("espresense/devices/{tag}/{HOME_ROOM}");
            let payload = espresense_report(&tag, from_home.max(0.5));
            return vec![Wire::Via {
                via: Role::HomeReceiver,
                topic,
                payload,
            }];
        }
        let rx = self.id_of(Role::TownReceiver);
        let sighting = json!({
            "tag": tag,
            "rssi": rssi_at(TOWN_RANGE_M / 2.0).round(),
            "lat": round_to(fix.lat, 7),
            "lon": round_to(fix.lon, 7),
        });
        vec![Wire::Via {
            via: Role::TownReceiver,
            topic: format!("watch/v1/{rx}/sighting"),
            payload: sighting.to_string(),
        }]
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

/// The status topic of the home's ESPresense node (`online`, its will `offline`).
fn espresense_status() -> String {
    format!("espresense/rooms/{HOME_ROOM}/status")
}

/// An ESPresense node's periodic telemetry, for its heartbeat.
fn espresense_telemetry(msg: &Msg, now_s: i64) -> Vec<Wire> {
    if !matches!(msg, Msg::Heartbeat { .. }) {
        return vec![];
    }
    let payload = json!({"ip": "192.168.1.40", "uptime": now_s.rem_euclid(86_400), "firm": "esp32", "rssi": -58, "ver": "v3.3.2", "freeHeap": 71_234});
    vec![mqtt(
        format!("espresense/rooms/{HOME_ROOM}/telemetry"),
        payload.to_string(),
        false,
    )]
}

/// The signal strength `distance_m` away, by the log-distance model ESPresense inverts.
fn rssi_at(distance_m: f64) -> f64 {
    RSSI_AT_1M - 20.0 * distance_m.max(0.1).log10()
}

/// A device report in the field order and number formats of ESPresense's
/// `BleFingerprint::fill()`; the MAC is drawn from the tag id.
fn espresense_report(tag: &str, distance_m: f64) -> String {
    let h = dev_eui(tag);
    format!(
        r#"{{"mac":"{}","id":"{tag}","rssi@1m":{RSSI_AT_1M:.0},"rssi":{:.2},"rxAdj":0,"rssiVar":1.50,"distance":{distance_m:.2},"var":0.25,"int":1015}}"#,
        &h[..12],
        rssi_at(distance_m)
    )
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
    fn echonet_publishes_properties_as_text_on_the_gateways_connection() {
        let mut e = encoder(Client::Echonet);
        let bedroom = Role::Motion(Room::Bedroom);
        assert_eq!(e.connection_of(bedroom), Some(Role::Gateway));
        let id = echonet_id(bedroom, "m1");
        assert!(id.starts_with("fe") && id.ends_with("_000701"), "{id}");
        assert_eq!(
            e.encode(bedroom, &motion(true, Some(81)), NOW),
            vec![Wire::Mqtt {
                topic: format!("echonetlite2mqtt/gw1/elapi/v2/devices/{id}/properties/detection"),
                payload: "true".into(),
                retain: true
            }]
        );
        assert_eq!(
            one(e.encode(bedroom, &Msg::Heartbeat { battery: Some(80) }, NOW)).1,
            "false"
        );
        let (topic, payload) = one(e.encode(Role::Button, &Msg::Sos, NOW));
        assert!(
            topic.ends_with("_000301/properties/occurrenceOfEmergency"),
            "{topic}"
        );
        assert_eq!(payload, "true");
        // No door class: the door, the gateway's heartbeat and the tracker stay native.
        assert_eq!(
            one(e.encode(Role::EntranceDoor, &Msg::Door { open: true }, NOW)).0,
            "watch/v1/d1/door"
        );
        assert_eq!(
            one(e.encode(Role::Gateway, &Msg::Heartbeat { battery: None }, NOW)).0,
            "watch/v1/gw1/heartbeat"
        );
        assert!(e.encode(bedroom, &Msg::PowerLoss, NOW).is_empty());
    }

    #[test]
    fn ble_tag_is_heard_by_the_home_node_at_home_and_by_the_volunteers_app_outside() {
        let devices = [
            (Role::Tracker, "t1"),
            (Role::HomeReceiver, "rh"),
            (Role::TownReceiver, "rt"),
        ]
        .into_iter()
        .map(|(role, id)| Identity {
            role,
            device_id: id.into(),
            secret: String::new(),
        })
        .collect();
        let mut e = Encoder::new(Client::Ble, devices, HOME);
        assert_eq!(Client::Ble.kind_of(Role::Tracker), DeviceKind::Tag);
        assert_eq!(
            Client::Ble.extra_roles(&[Role::Tracker]),
            vec![Role::HomeReceiver, Role::TownReceiver]
        );
        assert!(Client::Ble.extra_roles(&[Role::Gateway]).is_empty());
        assert_eq!(e.connection_of(Role::Tracker), None);
        assert!(e.connects(Role::HomeReceiver) && e.connects(Role::TownReceiver));
        let tag = tag_id("t1");
        let fix = |lat: f64| Msg::Gps {
            lat,
            lon: HOME.lon,
            accuracy_m: 8.0,
            battery: None,
        };
        let heard = |w: Vec<Wire>| match w.as_slice() {
            [Wire::Via {
                via,
                topic,
                payload,
            }] => (*via, topic.clone(), payload.clone()),
            other => panic!("one sighting, got {other:?}"),
        };
        let (via, topic, payload) = heard(e.encode(Role::Tracker, &fix(HOME.lat + 0.0001), NOW));
        assert_eq!(via, Role::HomeReceiver);
        assert_eq!(topic, format!("espresense/devices/{tag}/home"));
        let report: Value = serde_json::from_str(&payload).unwrap_or_default();
        assert_eq!(report["id"], tag.as_str());
        assert!(report["distance"]
            .as_f64()
            .is_some_and(|d| d > 10.0 && d < 12.0));
        assert!(payload.starts_with(r#"{"mac":""#), "{payload}");
        // 555 m north: a volunteer's phone hears it and sends its own position.
        let (via, topic, payload) = heard(e.encode(Role::Tracker, &fix(HOME.lat + 0.005), NOW));
        assert_eq!(
            (via, topic.as_str()),
            (Role::TownReceiver, "watch/v1/rt/sighting")
        );
        let s: Value = serde_json::from_str(&payload).unwrap_or_default();
        assert_eq!(s["tag"], tag.as_str());
        assert_eq!(s["lat"], HOME.lat + 0.005);
        // A heartbeat is the tag heard again where it was last.
        let again = heard(e.encode(Role::Tracker, &Msg::Heartbeat { battery: None }, NOW));
        assert_eq!(again.0, Role::TownReceiver);
        assert_eq!(
            e.hello(Role::HomeReceiver),
            vec![mqtt(
                "espresense/rooms/home/status".into(),
                "online".into(),
                true
            )]
        );
        assert_eq!(
            e.will(Role::HomeReceiver, NOW),
            Some(mqtt(
                "espresense/rooms/home/status".into(),
                "offline".into(),
                true
            ))
        );
        let beat = one(e.encode(Role::HomeReceiver, &Msg::Heartbeat { battery: None }, NOW));
        assert_eq!(beat.0, "espresense/rooms/home/telemetry");
        assert_eq!(
            one(e.encode(Role::TownReceiver, &Msg::Heartbeat { battery: None }, NOW)).0,
            "watch/v1/rt/heartbeat"
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
