//! LoRaWAN (issue 18): ChirpStack v4's MQTT integration events, through the Mosquitto
//! bridge that docs/gateways.md configures, into the real hub.
//!
//! ChirpStack speaks MQTT 5 to its own broker; the test stands in for it with an MQTT
//! client publishing on that broker (a real `mosquitto` started here on a free port,
//! its bridge section read from the docs), so the hub receives what the bridge forwards.
//! The payloads are ChirpStack's documented event examples (chirpstack/chirpstack-docs,
//! src/chirpstack/integrations/events.md), byte for byte, read from docs/gateways.md.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{anyhow, Context, Result};
use mimamori_protocol::api::DeviceCreated;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::gateways::{doc_example, quick_resident, rejected, rejected_grows, WAIT};
use crate::helpers::{eventually, mqtt_connect, skip_postgres, Backend, MqttClient, TestHub};

/// A `mosquitto` broker of the test's own, on a free loopback port.
pub(crate) struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts mosquitto with a loopback listener and `extra` configuration after it.
    pub async fn start(extra: &str) -> Result<Mosquitto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n{extra}\n"
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf)?;
        let mut m = Mosquitto {
            port,
            dir,
            child: None,
        };
        m.launch().await?;
        Ok(m)
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    async fn launch(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.conf())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start mosquitto")?;
        self.child = Some(child);
        let port = self.port;
        eventually("mosquitto listening", WAIT, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await
    }

    /// Stops the broker and waits until it has exited.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Stops and starts it again on the same port and configuration, its state forgotten.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch().await
    }

    /// What the broker logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

/// The application of ChirpStack's documented events.
const APPLICATION_ID: &str = "17c82e96-be03-4f38-aef3-f83d48582d97";

/// The event topic as the documented `chirpstack.toml` renders it, and the broker it names.
fn chirpstack_topic(dev_eui: &str, event: &str) -> Result<(String, String)> {
    let conf: toml::Value = toml::from_str(&doc_example("chirpstack-toml")?)?;
    let mqtt = &conf["integration"]["mqtt"];
    let enabled = conf["integration"]["enabled"].as_array();
    assert!(enabled.is_some_and(|e| e.iter().any(|v| v.as_str() == Some("mqtt"))));
    assert_eq!(
        mqtt["json"].as_bool(),
        Some(true),
        "the hub reads JSON events"
    );
    let template = mqtt["event_topic"]
        .as_str()
        .ok_or_else(|| anyhow!("no event_topic"))?;
    let topic = template
        .replace("{{application_id}}", APPLICATION_ID)
        .replace("{{dev_eui}}", dev_eui)
        .replace("{{event}}", event);
    let server = mqtt["server"].as_str().unwrap_or_default().to_string();
    Ok((topic, server))
}

/// ChirpStack's broker, bridged to the hub as docs/gateways.md says, once the bridge is up.
async fn bridged_broker(hub: &TestHub, gw: &DeviceCreated) -> Result<Mosquitto> {
    let bridge = doc_example("chirpstack-bridge")?
        .replace("HUB:1883", &format!("127.0.0.1:{}", hub.mqtt_port))
        .replace("GATEWAY_ID", &gw.id)
        .replace("GATEWAY_SECRET", &gw.mqtt.password);
    let broker = Mosquitto::start(&bridge).await?;
    let connected = eventually("the bridge connected to the hub", WAIT, || async {
        let h = hub.expect(Method::GET, "/healthz", None, 200).await.ok()?;
        (h["mqtt_connections"].as_u64()? >= 1).then_some(())
    })
    .await;
    connected.map_err(|e| anyhow!("{e}\n--- mosquitto log ---\n{}", broker.log()))?;
    Ok(broker)
}

/// An MQTT client on ChirpStack's broker, publishing as its integration does.
async fn chirpstack_client(broker: &Mosquitto) -> Result<MqttClient> {
    mqtt_connect(
        broker.port,
        "chirpstack-stand-in",
        "chirpstack",
        "chirpstack",
    )
    .await
    .map_err(|e| anyhow!("cannot connect to mosquitto: {e:?}"))
}

async fn register(hub: &TestHub, gw: &str, body: Value) -> Result<Value> {
    hub.expect(
        Method::POST,
        &format!("/devices/{gw}/lorawan"),
        Some(body),
        201,
    )
    .await
}

/// The newest reading of `device` that `pred` accepts.
async fn reading_of(
    hub: &TestHub,
    rid: i64,
    device: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    eventually(&format!("a reading of {device}"), WAIT, || async {
        let readings = hub.readings(rid).await.ok()?;
        readings
            .into_iter()
            .find(|r| r["device_id"] == device && pred(r))
    })
    .await
}

#[tokio::test]
async fn chirpstack_events_through_the_documented_bridge_become_readings() -> Result<()> {
    chirpstack_readings(Backend::Sqlite).await
}

/// The same on PostgreSQL: its migration and queries for the DevEUI registrations.
#[tokio::test]
async fn chirpstack_registrations_on_postgres() -> Result<()> {
    if skip_postgres("chirpstack_registrations_on_postgres") {
        return Ok(());
    }
    chirpstack_readings(Backend::Postgres).await
}

async fn chirpstack_readings(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &[]).await?;
    let rid = quick_resident(&hub).await?;
    let gw = hub.device(rid, "gateway").await?;
    let pir = hub.device(rid, "motion").await?;
    let plain = hub.device(rid, "motion").await?;
    let body: Value = serde_json::from_str(
        &doc_example("chirpstack-register")?.replace("MOTION_DEVICE_ID", &pir.id),
    )?;
    let registered = register(&hub, &gw.id, body).await?;
    assert_eq!(registered["fields"]["state"], "pir");
    assert_eq!(registered["fields"]["battery"], "battery", "a default");
    // The device of ChirpStack's documented events, with the defaults of its kind.
    let upper = json!({"dev_eui": "0101010101010101", "device_id": plain.id});
    assert_eq!(
        register(&hub, &gw.id, upper).await?["dev_eui"],
        "0101010101010101"
    );

    let broker = bridged_broker(&hub, &gw).await?;
    let mut cs = chirpstack_client(&broker).await?;
    let (up, server) = chirpstack_topic("0101010101010101", "up")?;
    assert_eq!(
        server, "tcp://localhost:1883/",
        "ChirpStack publishes to its own broker"
    );

    // The documented uplink carries no `object` (no codec), zero values left out: alive.
    cs.publish_acked(&up, doc_example("chirpstack-up")?).await?;
    let alive = reading_of(&hub, rid, &plain.id, |r| r["kind"] == "heartbeat").await?;
    assert!(
        alive["ts"]
            .as_str()
            .is_some_and(|t| t.starts_with("2022-07-18T09:34:15")),
        "the event's time is the reading's: {alive}"
    );
    let (status, _) = chirpstack_topic("0101010101010101", "status")?;
    cs.publish_acked(&status, doc_example("chirpstack-status")?)
        .await?;
    reading_of(&hub, rid, &plain.id, |r| r["battery"] == 88).await?;

    // The v4.1 form, every field present, with the WS202 codec's object: movement.
    let (pir_up, _) = chirpstack_topic("24e124538b223213", "up")?;
    cs.publish_acked(&pir_up, doc_example("chirpstack-up-object")?)
        .await?;
    reading_of(&hub, rid, &pir.id, |r| r["kind"] == "motion").await?;

    // A DevEUI nobody registered on this gateway is refused and counted.
    let before = rejected(&hub, "unknown_device").await?;
    let (stranger, _) = chirpstack_topic("0202020202020202", "up")?;
    cs.publish_acked(&stranger, doc_example("chirpstack-up")?)
        .await?;
    rejected_grows(&hub, "unknown_device", before).await?;
    let listed = hub
        .expect(
            Method::GET,
            &format!("/devices/{}/lorawan", gw.id),
            None,
            200,
        )
        .await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    Ok(())
}

#[tokio::test]
async fn a_lorawan_button_raises_sos_and_a_live_motion_resolves_inactivity() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = quick_resident(&hub).await?;
    let gw = hub.device(rid, "gateway").await?;
    let pir = hub.device(rid, "motion").await?;
    let button = hub.device(rid, "button").await?;
    let body: Value = serde_json::from_str(
        &doc_example("chirpstack-register")?.replace("MOTION_DEVICE_ID", &pir.id),
    )?;
    register(&hub, &gw.id, body).await?;
    let ws101 = json!({"dev_eui": "24E124710B423527", "device_id": button.id});
    assert_eq!(
        register(&hub, &gw.id, ws101).await?["dev_eui"],
        "24e124710b423527"
    );
    let broker = bridged_broker(&hub, &gw).await?;
    let mut cs = chirpstack_client(&broker).await?;

    let first = hub.wait_alert(rid, "inactivity", "open", WAIT).await?;
    // The documented v4.1 uplink, timed now (ChirpStack stamps the gateway's receive time).
    let now = chrono::Utc::now().to_rfc3339();
    let live =
        doc_example("chirpstack-up-object")?.replace("2022-07-18T09:34:15.775023242+00:00", &now);
    let (pir_up, _) = chirpstack_topic("24e124538b223213", "up")?;
    cs.publish_acked(&pir_up, live.clone()).await?;
    let resolved = hub.wait_alert(rid, "inactivity", "resolved", WAIT).await?;
    assert_eq!(resolved["id"], first["id"]);

    // The same event from the WS101 (its codec's documented example: `button: short`).
    let press = live
        .replace("24e124538b223213", "24e124710b423527")
        .replace(
            r#""object":{"pir":"trigger"}"#,
            r#""object":{"button":"short"}"#,
        );
    let (button_up, _) = chirpstack_topic("24e124710b423527", "up")?;
    cs.publish_acked(&button_up, press).await?;
    let sos = hub.wait_alert(rid, "sos", "open", WAIT).await?;
    assert_eq!(sos["kind"], "sos");
    Ok(())
}

#[tokio::test]
async fn lorawan_devices_follow_their_device_profile() -> Result<()> {
    device_profiles(Backend::Sqlite).await
}

/// The same on PostgreSQL: migration 0014 and the profile queries.
#[tokio::test]
async fn lorawan_device_profiles_on_postgres() -> Result<()> {
    if skip_postgres("lorawan_device_profiles_on_postgres") {
        return Ok(());
    }
    device_profiles(Backend::Postgres).await
}

/// Two WS202s follow the documented profile; putting the profile again remaps both at once,
/// and a profile in use cannot be deleted.
async fn device_profiles(backend: Backend) -> Result<()> {
    const PROFILE: &str = "Milesight WS202";
    let hub = TestHub::start_with(backend, &[]).await?;
    let rid = quick_resident(&hub).await?;
    let gw = hub.device(rid, "gateway").await?;
    let (first, second) = (
        hub.device(rid, "motion").await?,
        hub.device(rid, "motion").await?,
    );
    let path = |name: &str| {
        format!(
            "/devices/{}/lorawan/profiles/{}",
            gw.id,
            name.replace(' ', "%20")
        )
    };
    let profile: Value = serde_json::from_str(&doc_example("chirpstack-profile")?)?;
    let put = hub
        .expect(Method::PUT, &path(PROFILE), Some(profile), 200)
        .await?;
    assert_eq!(
        (put["name"].as_str(), put["fields"]["state"].as_str()),
        (Some(PROFILE), Some("pir"))
    );

    let follow = doc_example("chirpstack-register-profile")?;
    let body: Value = serde_json::from_str(&follow.replace("MOTION_DEVICE_ID", &first.id))?;
    let registered = register(&hub, &gw.id, body).await?;
    assert_eq!(registered["profile"], PROFILE);
    assert_eq!(registered["fields"]["state"], "pir");
    assert_eq!(
        registered["fields"]["battery"], "battery",
        "the kind's default"
    );
    let also = json!({"dev_eui": "24e124538b223215", "device_id": second.id, "profile": PROFILE});
    register(&hub, &gw.id, also).await?;
    let third = hub.device(rid, "motion").await?;
    for (body, why) in [
        (
            json!({"dev_eui": "24e124538b223216", "device_id": third.id, "profile": PROFILE, "fields": {"state": "pir"}}),
            "both",
        ),
        (
            json!({"dev_eui": "24e124538b223216", "device_id": third.id, "profile": "WS301"}),
            "WS301",
        ),
    ] {
        let refused = hub
            .expect(
                Method::POST,
                &format!("/devices/{}/lorawan", gw.id),
                Some(body),
                422,
            )
            .await?;
        assert!(refused.to_string().contains(why), "{refused}");
    }

    // The gateway's own connection, as the documented bridge makes it.
    let mut cs = mqtt_connect(hub.mqtt_port, &gw.id, &gw.id, &gw.mqtt.password)
        .await
        .map_err(|e| anyhow!("the gateway cannot connect: {e:?}"))?;
    let uplink = |eui: &str, object: &str| -> Result<(String, String)> {
        let event = doc_example("chirpstack-up-object")?
            .replace("24e124538b223213", eui)
            .replace(
                r#""object":{"pir":"trigger"}"#,
                &format!(r#""object":{object}"#),
            );
        Ok((chirpstack_topic(eui, "up")?.0, event))
    };
    let (topic, event) = uplink("24e124538b223214", r#"{"pir":"trigger"}"#)?;
    cs.publish_acked(&topic, event).await?;
    reading_of(&hub, rid, &first.id, |r| r["data"]["motion"] == true).await?;

    // Another codec version names the field otherwise: one PUT remaps every follower.
    let renamed = json!({"fields": {"state": "occupancy", "on": ["occupied"]}});
    hub.expect(Method::PUT, &path(PROFILE), Some(renamed), 200)
        .await?;
    let listed = get_json(&hub, &format!("/devices/{}/lorawan", gw.id)).await?;
    let states: Vec<&str> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["fields"]["state"].as_str())
        .collect();
    assert_eq!(states, ["occupancy", "occupancy"], "{listed}");
    let (topic, event) = uplink("24e124538b223215", r#"{"occupancy":"occupied"}"#)?;
    cs.publish_acked(&topic, event).await?;
    reading_of(&hub, rid, &second.id, |r| r["data"]["motion"] == true).await?;

    hub.expect(Method::DELETE, &path(PROFILE), None, 409)
        .await?;
    let profiles = get_json(&hub, &format!("/devices/{}/lorawan/profiles", gw.id)).await?;
    assert_eq!(profiles.as_array().map(Vec::len), Some(1), "{profiles}");
    Ok(())
}

async fn get_json(hub: &TestHub, path: &str) -> Result<Value> {
    hub.expect(Method::GET, path, None, 200).await
}
