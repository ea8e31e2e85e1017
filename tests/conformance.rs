//! MQTT 3.1.1 conformance of the edge, with raw packets: the checks of
//! eclipse/paho.mqtt.testing's `client_test.py` that the hub's ACL and JSON-only
//! design allow, on topics under a device's own prefix with native JSON payloads,
//! and the defects real clients hit (issue 17). `docs/protocol.md` lists each
//! behaviour and why the design refuses the rest.

use std::time::Duration;

use anyhow::Result;
use mqttrs::{Packet, QoS, QosPid, SubscribeReturnCodes};
use serde_json::json;

use crate::helpers::*;

/// A staff member's raw login (people read everything under `watch/v1/`).
fn staff<'a>(client_id: &'a str, password: &'a str) -> RawLogin<'a> {
    RawLogin {
        client_id,
        username: "integrator",
        password,
        keep_alive: 60,
        clean_session: true,
        will: None,
    }
}

/// Keep-alive 0 turns pings off (MQTT 3.1.1 §3.1.2.10): people, persistent sessions
/// and clean-session devices are all accepted, subscribe, and stay connected.
#[tokio::test]
async fn keepalive_zero_is_accepted_for_every_kind_of_client() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Keepalive Zero"})).await?;
    let dev = hub.device(rid, "motion").await?;
    let kept = hub.device(rid, "motion").await?;
    hub.user("integrator", "staff", &[]).await?;
    let pw = password_of("integrator");

    let (mut person, _) = RawClient::accepted(
        hub.mqtt_port,
        RawLogin {
            keep_alive: 0,
            ..staff("watcher", &pw)
        },
    )
    .await?;
    let granted = person
        .subscribe(1, "watch/v1/+/motion", QoS::AtLeastOnce)
        .await?;
    assert_eq!(granted, SubscribeReturnCodes::Success(QoS::AtLeastOnce));

    let (mut device, _) = RawClient::accepted(
        hub.mqtt_port,
        RawLogin {
            keep_alive: 0,
            ..RawLogin::device(&dev)
        },
    )
    .await?;
    let own = format!("{}#", dev.mqtt.topic_prefix);
    assert_eq!(
        device.subscribe(1, &own, QoS::AtLeastOnce).await?,
        SubscribeReturnCodes::Success(QoS::AtLeastOnce)
    );
    device
        .publish(
            QosPid::AtLeastOnce(raw_pid(2)?),
            false,
            &topic(&dev, "motion"),
            br#"{"motion":true}"#,
        )
        .await?;
    let seen = person
        .next_matching(|p| matches!(p, Packet::Publish(_)))
        .await?;
    assert!(matches!(seen, Packet::Publish(p) if p.payload == br#"{"motion":true}"#));

    let (_persistent, _) = RawClient::accepted(
        hub.mqtt_port,
        RawLogin {
            keep_alive: 0,
            clean_session: false,
            ..RawLogin::device(&kept)
        },
    )
    .await?;
    // Nobody was dropped, so no will and no false `device_offline`.
    assert!(hub
        .alerts(rid)
        .await?
        .iter()
        .all(|a| a["kind"] != "device_offline"));
    Ok(())
}

/// An empty retained publish clears the topic's retained message (MQTT 3.1.1
/// §3.3.1.3), as Zigbee2MQTT and OwnTracks do: acknowledged, never dead-lettered, and
/// a later subscriber gets nothing retained.
#[tokio::test]
async fn an_empty_retained_publish_clears_the_retained_message() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Retained"})).await?;
    let dev = hub.device(rid, "motion").await?;
    hub.user("integrator", "staff", &[]).await?;
    let pw = password_of("integrator");
    let status = topic(&dev, "status");
    let (mut device, _) = RawClient::accepted(hub.mqtt_port, RawLogin::device(&dev)).await?;
    device
        .publish(
            QosPid::AtLeastOnce(raw_pid(1)?),
            true,
            &status,
            br#"{"online":true}"#,
        )
        .await?;

    // Retained: a subscriber that comes later gets it at once.
    let (mut early, _) = RawClient::accepted(hub.mqtt_port, staff("early", &pw)).await?;
    early.subscribe(1, &status, QoS::AtLeastOnce).await?;
    let got = early
        .next_matching(|p| matches!(p, Packet::Publish(_)))
        .await?;
    assert!(matches!(got, Packet::Publish(p) if p.retain && p.payload == br#"{"online":true}"#));

    let refused = hub
        .metric("mimamori_messages_rejected_total{reason=\"not_json\"}")
        .await?;
    device
        .publish(QosPid::AtLeastOnce(raw_pid(2)?), true, &status, b"")
        .await?;
    assert_eq!(
        hub.metric("mimamori_messages_rejected_total{reason=\"not_json\"}")
            .await?,
        refused,
        "clearing is not a dead letter"
    );

    // A new subscriber's first message is the next live one, not the cleared state.
    let (mut late, _) = RawClient::accepted(hub.mqtt_port, staff("late", &pw)).await?;
    late.subscribe(1, &status, QoS::AtLeastOnce).await?;
    device
        .publish(
            QosPid::AtLeastOnce(raw_pid(3)?),
            false,
            &status,
            br#"{"online":true,"seq":3}"#,
        )
        .await?;
    let first = late
        .next_matching(|p| matches!(p, Packet::Publish(_)))
        .await?;
    assert!(
        matches!(&first, Packet::Publish(p) if !p.retain && p.payload == br#"{"online":true,"seq":3}"#),
        "{first:?}"
    );
    Ok(())
}

/// QoS 2 is exactly once across a reconnect (MQTT 3.1.1 §4.3.3, §4.4): PUBREC'd,
/// socket dropped, resent with DUP on the persistent session: answered, stored once.
#[tokio::test]
async fn qos2_is_exactly_once_across_a_reconnect_with_a_persistent_session() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Exactly Once"})).await?;
    let dev = hub.device(rid, "motion").await?;
    let persistent = || RawLogin {
        clean_session: false,
        ..RawLogin::device(&dev)
    };
    let motion = topic(&dev, "motion");
    let payload = br#"{"motion":true}"#;
    let pid = raw_pid(5)?;
    let (mut first, _) = RawClient::accepted(hub.mqtt_port, persistent()).await?;
    first
        .publish(QosPid::ExactlyOnce(pid), false, &motion, payload)
        .await?;
    drop(first);

    let (mut again, ack) = RawClient::accepted(hub.mqtt_port, persistent()).await?;
    assert!(ack.session_present, "the session was kept");
    again
        .send(&Packet::Publish(mqttrs::Publish {
            dup: true,
            qospid: QosPid::ExactlyOnce(pid),
            retain: false,
            topic_name: &motion,
            payload,
        }))
        .await?;
    again
        .next_matching(|p| matches!(p, Packet::Pubrec(x) if *x == pid))
        .await?;
    again.send(&Packet::Pubrel(pid)).await?;
    again
        .next_matching(|p| matches!(p, Packet::Pubcomp(x) if *x == pid))
        .await?;
    // Acknowledged in order: once this is stored, a second copy would be too.
    again
        .publish(
            QosPid::AtLeastOnce(raw_pid(6)?),
            false,
            &topic(&dev, "heartbeat"),
            b"{}",
        )
        .await?;
    let kinds: Vec<String> = hub
        .readings(rid)
        .await?
        .iter()
        .filter_map(|r| r["kind"].as_str().map(str::to_string))
        .collect();
    assert_eq!(kinds, ["heartbeat", "motion"], "stored once");
    Ok(())
}

/// A subscriber gets each message at the lower of its publish QoS and the QoS the
/// subscription was granted (MQTT 3.1.1 §3.8.4), and the QoS flows stay whole.
#[tokio::test]
async fn delivered_qos_is_the_lower_of_publish_and_granted() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Min QoS"})).await?;
    let dev = hub.device(rid, "motion").await?;
    hub.user("integrator", "staff", &[]).await?;
    let pw = password_of("integrator");
    let motion = topic(&dev, "motion");
    let (mut device, _) = RawClient::accepted(hub.mqtt_port, RawLogin::device(&dev)).await?;
    let (mut at2, _) = RawClient::accepted(hub.mqtt_port, staff("at-2", &pw)).await?;
    assert_eq!(
        at2.subscribe(1, &motion, QoS::ExactlyOnce).await?,
        SubscribeReturnCodes::Success(QoS::ExactlyOnce)
    );
    let (mut at1, _) = RawClient::accepted(hub.mqtt_port, staff("at-1", &pw)).await?;
    at1.subscribe(1, &motion, QoS::AtLeastOnce).await?;

    // Each round twice, so a flow left open would show as a message that never comes.
    let rounds = [
        (0u8, 0u8, 0u8),
        (1, 1, 1),
        (2, 2, 1),
        (0, 0, 0),
        (1, 1, 1),
        (2, 2, 1),
    ];
    for (n, (published, want2, want1)) in rounds.into_iter().enumerate() {
        let pid = raw_pid(10 + n as u16)?;
        let qospid = match published {
            0 => QosPid::AtMostOnce,
            1 => QosPid::AtLeastOnce(pid),
            _ => QosPid::ExactlyOnce(pid),
        };
        let body = format!(r#"{{"motion":true,"seq":{n}}}"#);
        device
            .publish(qospid, false, &motion, body.as_bytes())
            .await?;
        if published == 2 {
            device.send(&Packet::Pubrel(pid)).await?;
            device
                .next_matching(|p| matches!(p, Packet::Pubcomp(_)))
                .await?;
        }
        for (sub, want) in [(&mut at2, want2), (&mut at1, want1)] {
            let got = sub
                .next_matching(|p| matches!(p, Packet::Publish(_)))
                .await?;
            let Packet::Publish(p) = got else {
                unreachable!()
            };
            assert_eq!(p.payload, body.as_bytes());
            let level = match p.qospid {
                QosPid::AtMostOnce => 0,
                QosPid::AtLeastOnce(pid) => {
                    sub.send(&Packet::Puback(pid)).await?;
                    1
                }
                QosPid::ExactlyOnce(pid) => {
                    sub.send(&Packet::Pubrec(pid)).await?;
                    sub.next_matching(|p| matches!(p, Packet::Pubrel(x) if *x == pid))
                        .await?;
                    sub.send(&Packet::Pubcomp(pid)).await?;
                    2
                }
            };
            assert_eq!(level, want, "message {n} published at QoS {published}");
        }
    }
    Ok(())
}

/// MQTT 3.1.1 §3.1.3.1: a zero-length client id is for clean sessions only.
#[tokio::test]
async fn an_empty_client_id_needs_a_clean_session() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "No Name"})).await?;
    let dev = hub.device(rid, "motion").await?;
    let nameless = |clean_session| RawLogin {
        client_id: "",
        clean_session,
        ..RawLogin::device(&dev)
    };
    let (_, ack) = RawClient::connect(hub.mqtt_port, nameless(false)).await?;
    assert_eq!(
        ack.code,
        mqttrs::ConnectReturnCode::RefusedIdentifierRejected
    );
    let (_, ack) = RawClient::connect(hub.mqtt_port, nameless(true)).await?;
    assert_eq!(ack.code, mqttrs::ConnectReturnCode::Accepted);
    Ok(())
}

/// The next PUBLISH a raw client receives.
async fn next_publish(c: &mut RawClient) -> Result<mqttrs::Publish<'static>> {
    match c.next_matching(|p| matches!(p, Packet::Publish(_))).await? {
        Packet::Publish(p) => Ok(p),
        _ => unreachable!(),
    }
}

/// paho's overlapping subscriptions: one message matching two filters of a session
/// arrives once at the higher QoS or once per filter (MQTT 3.1.1 §3.3.5 allows both).
#[tokio::test]
async fn overlapping_subscriptions_deliver_once_per_filter_or_once_at_the_highest_qos() -> Result<()>
{
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Overlap"})).await?;
    let dev = hub.device(rid, "motion").await?;
    hub.user("integrator", "staff", &[]).await?;
    let pw = password_of("integrator");
    let (mut w, _) = RawClient::accepted(hub.mqtt_port, staff("overlap", &pw)).await?;
    w.subscribe(1, "watch/v1/+/motion", QoS::ExactlyOnce)
        .await?;
    w.subscribe(2, &format!("{}#", dev.mqtt.topic_prefix), QoS::AtLeastOnce)
        .await?;
    let (mut device, _) = RawClient::accepted(hub.mqtt_port, RawLogin::device(&dev)).await?;
    let pid = raw_pid(1)?;
    device
        .publish(
            QosPid::ExactlyOnce(pid),
            false,
            &topic(&dev, "motion"),
            br#"{"motion":true}"#,
        )
        .await?;
    device.send(&Packet::Pubrel(pid)).await?;
    let mut levels = Vec::new();
    let first = next_publish(&mut w).await?;
    levels.push(first.qospid);
    if let QosPid::ExactlyOnce(p) = first.qospid {
        w.send(&Packet::Pubrec(p)).await?;
    }
    // A second copy, if any, comes straight after the first; a marker bounds the wait.
    device
        .publish(
            QosPid::AtLeastOnce(raw_pid(2)?),
            false,
            &topic(&dev, "heartbeat"),
            b"{}",
        )
        .await?;
    loop {
        let p = next_publish(&mut w).await?;
        if p.topic_name.ends_with("/heartbeat") {
            break;
        }
        levels.push(p.qospid);
    }
    let shape: Vec<u8> = levels
        .iter()
        .map(|q| match q {
            QosPid::AtMostOnce => 0,
            QosPid::AtLeastOnce(_) => 1,
            QosPid::ExactlyOnce(_) => 2,
        })
        .collect();
    assert!(
        shape == [2] || shape == [2, 1] || shape == [1, 2],
        "once at QoS 2, or once per filter: {shape:?}"
    );
    Ok(())
}

/// paho's redelivery on reconnect: a persistent session's unacknowledged QoS 1
/// message is sent again, flagged DUP, and what was published while the client was
/// away is queued for it.
#[tokio::test]
async fn a_persistent_session_gets_unacknowledged_and_missed_messages_on_reconnect() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Redelivery"})).await?;
    let dev = hub.device(rid, "motion").await?;
    hub.user("integrator", "staff", &[]).await?;
    let pw = password_of("integrator");
    let login = || RawLogin {
        clean_session: false,
        ..staff("kept", &pw)
    };
    let motion = topic(&dev, "motion");
    let (mut w, _) = RawClient::accepted(hub.mqtt_port, login()).await?;
    w.subscribe(1, &motion, QoS::AtLeastOnce).await?;
    let (mut device, _) = RawClient::accepted(hub.mqtt_port, RawLogin::device(&dev)).await?;
    device
        .publish(
            QosPid::AtLeastOnce(raw_pid(1)?),
            false,
            &motion,
            br#"{"motion":true,"seq":1}"#,
        )
        .await?;
    let unacked = next_publish(&mut w).await?;
    assert_eq!(unacked.payload, br#"{"motion":true,"seq":1}"#);
    // Gone without acknowledging it; then a message it misses.
    drop(w);
    device
        .publish(
            QosPid::AtLeastOnce(raw_pid(2)?),
            false,
            &motion,
            br#"{"motion":true,"seq":2}"#,
        )
        .await?;
    let (mut back, ack) = RawClient::accepted(hub.mqtt_port, login()).await?;
    assert!(ack.session_present);
    let again = next_publish(&mut back).await?;
    assert_eq!(again.payload, br#"{"motion":true,"seq":1}"#);
    assert!(again.dup, "a redelivery is flagged DUP");
    if let QosPid::AtLeastOnce(p) = again.qospid {
        back.send(&Packet::Puback(p)).await?;
    }
    let missed = next_publish(&mut back).await?;
    assert_eq!(missed.payload, br#"{"motion":true,"seq":2}"#);
    Ok(())
}

/// paho's keep-alive check: a client silent for 1.5 × its keep-alive is dropped, and
/// its will goes out.
#[tokio::test]
async fn a_silent_client_is_dropped_after_its_keepalive_and_its_will_fires() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Silent"})).await?;
    let dev = hub.device(rid, "motion").await?;
    hub.user("integrator", "staff", &[]).await?;
    let pw = password_of("integrator");
    let status = topic(&dev, "status");
    let (mut w, _) = RawClient::accepted(hub.mqtt_port, staff("will-watch", &pw)).await?;
    w.subscribe(1, &status, QoS::AtLeastOnce).await?;
    let (mut silent, _) = RawClient::accepted(
        hub.mqtt_port,
        RawLogin {
            keep_alive: 1,
            will: Some(mqttrs::LastWill {
                topic: &status,
                message: br#"{"online":false}"#,
                qos: QoS::AtLeastOnce,
                retain: false,
            }),
            ..RawLogin::device(&dev)
        },
    )
    .await?;
    let started = tokio::time::Instant::now();
    let will = next_publish(&mut w).await?;
    assert_eq!(will.payload, br#"{"online":false}"#);
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "dropped within one keep-alive period (the hub waits 1.5)"
    );
    assert!(
        silent.next().await.is_err(),
        "the hub closed the connection"
    );
    hub.wait_alert(rid, "device_offline", "open", Duration::from_secs(20))
        .await?;
    Ok(())
}

/// The same with mosquitto's own clients (which refuse keep-alive 0 themselves): a
/// topic cleared with `mosquitto_pub -r -n`, and a `mosquitto_sub` that comes later
/// gets the next live message first, not the cleared state.
#[tokio::test]
async fn mosquitto_pub_null_retained_message_clears_the_topic() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Mosquitto"})).await?;
    let dev = hub.device(rid, "motion").await?;
    hub.user("integrator", "staff", &[]).await?;
    let port = hub.mqtt_port.to_string();
    let status = topic(&dev, "status");
    let publish = |args: &[&str]| {
        let mut cmd = std::process::Command::new("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-q", "1"])
            .args(["-u", &dev.id, "-P", &dev.mqtt.password, "-i", &dev.id])
            .args(["-t", &status])
            .args(args);
        cmd
    };
    for args in [&["-r", "-m", r#"{"online":true}"#][..], &["-r", "-n"]] {
        let out = publish(args).output()?;
        assert!(out.status.success(), "mosquitto_pub {args:?}: {out:?}");
    }
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-v"])
        .args(["-u", "integrator", "-P", &password_of("integrator")])
        .args(["-t", &status, "-C", "1", "-W", "30"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // The live message is published until the subscriber has one, so that it cannot
    // be missed by a SUBSCRIBE still on its way (mosquitto_sub says nothing of its SUBACK).
    let (mut device, _) = RawClient::accepted(hub.mqtt_port, RawLogin::device(&dev)).await?;
    let mut sub = sub;
    let mut n = 0u16;
    let out = loop {
        n += 1;
        let body = format!(r#"{{"online":true,"seq":{n}}}"#);
        device
            .publish(
                QosPid::AtLeastOnce(raw_pid(n)?),
                false,
                &status,
                body.as_bytes(),
            )
            .await?;
        // A retained message would reach it with its SUBACK, before any live one.
        if let Ok(exited) = tokio::time::timeout(Duration::from_millis(100), sub.wait()).await {
            exited?;
            break sub.wait_with_output().await?;
        }
        if n > 200 {
            anyhow::bail!("mosquitto_sub received nothing");
        }
    };
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with(&format!("{status} {{\"online\":true,\"seq\":")),
        "the first message was not a live one: {line:?}"
    );
    Ok(())
}
