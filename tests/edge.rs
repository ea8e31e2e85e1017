//! The MQTT edge on the wire: TLS, protocol versions, malformed packets.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use mqttrs::{Connect, ConnectReturnCode, Packet, Protocol};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::helpers::*;

/// A CONNECT as raw bytes, encoded by the `mqttrs` codec.
fn connect_packet(
    protocol: Protocol,
    client_id: &str,
    user: &str,
    password: &str,
) -> Result<Vec<u8>> {
    let p = Packet::Connect(Connect {
        protocol,
        keep_alive: 60,
        client_id,
        clean_session: true,
        last_will: None,
        username: Some(user),
        password: Some(password.as_bytes()),
    });
    let mut buf = vec![0u8; 512];
    let n = mqttrs::encode_slice(&p, &mut buf).map_err(|e| anyhow!("{e:?}"))?;
    buf.truncate(n);
    Ok(buf)
}

/// Sends raw bytes and returns the CONNACK's return code.
async fn connack_code<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> Result<ConnectReturnCode> {
    stream.write_all(bytes).await?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut buf)).await??;
    match mqttrs::decode_slice(&buf).map_err(|e| anyhow!("{e:?}"))? {
        Some(Packet::Connack(c)) => Ok(c.code),
        other => Err(anyhow!("expected CONNACK, got {other:?}")),
    }
}

#[tokio::test]
async fn mqtt_3_1_clients_are_accepted_and_mqtt_5_is_told_which_version_to_speak() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Old Firmware"})).await?;
    let dev = hub.device(rid, "gps").await?;
    let mut tcp = TcpStream::connect(("127.0.0.1", hub.mqtt_port)).await?;
    // mqttrs encodes 3.1 CONNECTs wrongly, so this one is written out: "MQIsdp", level 3.
    let mut v31 = Vec::new();
    let body = [
        &[0x00, 0x06][..],
        b"MQIsdp",
        &[0x03, 0xc2, 0x00, 0x3c],
        &(dev.id.len() as u16).to_be_bytes(),
        dev.id.as_bytes(),
        &(dev.id.len() as u16).to_be_bytes(),
        dev.id.as_bytes(),
        &(dev.mqtt.password.len() as u16).to_be_bytes(),
        dev.mqtt.password.as_bytes(),
    ]
    .concat();
    v31.push(0x10);
    v31.push(u8::try_from(body.len())?);
    v31.extend(body);
    assert_eq!(
        connack_code(&mut tcp, &v31).await?,
        ConnectReturnCode::Accepted
    );

    // An MQTT 5 CONNECT: protocol "MQTT", level 5, then an empty properties block.
    let mut v5 = vec![
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x01,
        b'c',
    ];
    v5[1] = u8::try_from(v5.len() - 2)?;
    let mut tcp5 = TcpStream::connect(("127.0.0.1", hub.mqtt_port)).await?;
    assert_eq!(
        connack_code(&mut tcp5, &v5).await?,
        ConnectReturnCode::RefusedProtocolVersion
    );
    Ok(())
}

#[tokio::test]
async fn malformed_packets_close_only_their_own_connection() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Robust"})).await?;
    let dev = hub.device(rid, "motion").await?;
    let mut good = connect_device(&hub, &dev).await?;
    let garbage: [&[u8]; 4] = [
        &[0x10, 0x02, 0x00, 0x04],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        b"GET / HTTP/1.1\r\n\r\n",
        &[0x10, 0x05, 0x00, 0x04, b'M', b'Q', b'T'],
    ];
    for g in garbage {
        let mut s = TcpStream::connect(("127.0.0.1", hub.mqtt_port)).await?;
        s.write_all(g).await?;
        let mut buf = [0u8; 16];
        // The edge closes the connection (or answers nothing) and stays up.
        let _ = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await;
    }
    good.publish_acked(&topic(&dev, "motion"), r#"{"motion":true}"#)
        .await?;
    assert_eq!(hub.readings(rid).await?.len(), 1);
    Ok(())
}

fn self_signed(
    dir: &std::path::Path,
) -> Result<(
    std::path::PathBuf,
    std::path::PathBuf,
    rustls::pki_types::CertificateDer<'static>,
)> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem())?;
    std::fs::write(&key_path, cert.signing_key.serialize_pem())?;
    Ok((cert_path, key_path, cert.cert.der().clone()))
}

#[tokio::test]
async fn tls_devices_connect_and_a_silent_peer_blocks_nobody() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let (cert, key, der) = self_signed(certs.path())?;
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let hub = TestHub::start_with(
        Backend::Sqlite,
        &[
            "--mqtt-tls-addr",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    )
    .await?;
    let port = hub
        .mqtts_port
        .ok_or_else(|| anyhow!("no TLS port announced"))?;
    let rid = hub.resident(json!({"name": "Over TLS"})).await?;
    let dev = hub.device(rid, "gps").await?;

    // Opens the TLS port and then says nothing: it must not hold up anyone's handshake.
    let _silent = TcpStream::connect(("127.0.0.1", port)).await?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut tls =
        tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await??;
    let connect = connect_packet(Protocol::MQTT311, &dev.id, &dev.id, &dev.mqtt.password)?;
    assert_eq!(
        connack_code(&mut tls, &connect).await?,
        ConnectReturnCode::Accepted
    );
    let wrong = connect_packet(Protocol::MQTT311, &dev.id, &dev.id, "wrong")?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls2 = connector
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    assert_eq!(
        connack_code(&mut tls2, &wrong).await?,
        ConnectReturnCode::BadUsernamePassword
    );
    Ok(())
}

/// A watcher connected with `clean_session` as given, its events on a channel.
async fn watcher(hub: &TestHub, client_id: &str, clean_session: bool) -> Result<MqttClient> {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", hub.mqtt_port);
    opts.set_credentials("integrator", password_of("integrator"));
    opts.set_clean_session(clean_session);
    mqtt_connect_with(opts)
        .await
        .map_err(|e| anyhow!("watcher {client_id} could not connect: {e:?}"))
}

async fn subscribed(w: &mut MqttClient, filter: &str) -> Result<()> {
    w.client
        .subscribe(filter, rumqttc::QoS::AtLeastOnce)
        .await?;
    w.next_matching(Duration::from_secs(10), |p| {
        matches!(p, rumqttc::Packet::SubAck(_))
    })
    .await
    .map(|_| ())
}

/// Whether the next publish `w` receives within a moment carries this payload.
async fn receives(w: &mut MqttClient, payload: &str) -> bool {
    w.next_matching(Duration::from_secs(3), |p| {
        matches!(p, rumqttc::Packet::Publish(_))
    })
    .await
    .is_ok_and(|p| matches!(p, rumqttc::Packet::Publish(p) if p.payload == payload.as_bytes()))
}

/// The edge passes an accepted message on only when some session's filter wants it;
/// whoever subscribes, unsubscribes or leaves, each subscriber gets exactly what its
/// filters ask for, and every message is stored either way.
#[tokio::test]
async fn device_messages_reach_exactly_the_sessions_that_subscribe() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Mori Haru"})).await?;
    let dev = hub.device(rid, "motion").await?;
    hub.user("integrator", "staff", &[]).await?;
    let mut device = connect_device(&hub, &dev).await?;
    let motion = |n: u32| format!(r#"{{"motion":true,"seq":{n}}}"#);
    let motion_topic = topic(&dev, "motion");

    // Nobody listens: stored all the same.
    device.publish_acked(&motion_topic, motion(0)).await?;

    let mut live = watcher(&hub, "live", true).await?;
    subscribed(&mut live, &motion_topic).await?;
    device.publish_acked(&motion_topic, motion(1)).await?;
    assert!(
        receives(&mut live, &motion(1)).await,
        "a new subscriber gets the next message"
    );

    let mut other = watcher(&hub, "other", true).await?;
    subscribed(&mut other, "watch/v1/+/motion").await?;
    other.client.disconnect().await?;
    assert!(other.closed(Duration::from_secs(10)).await);
    device.publish_acked(&motion_topic, motion(2)).await?;
    assert!(
        receives(&mut live, &motion(2)).await,
        "another session leaving with the same interest takes nothing from this one"
    );

    live.client.unsubscribe(&motion_topic).await?;
    live.next_matching(Duration::from_secs(10), |p| {
        matches!(p, rumqttc::Packet::UnsubAck(_))
    })
    .await?;
    device.publish_acked(&motion_topic, motion(3)).await?;
    assert!(
        !receives(&mut live, &motion(3)).await,
        "unsubscribed means nothing more"
    );

    let readings = hub.readings(rid).await?;
    assert_eq!(readings.len(), 4, "every message stored: {readings:?}");
    Ok(())
}

/// A device that dies without DISCONNECT: its will reaches an integrator's subscriber,
/// both when nobody listened to the device before (the edge never connected it to the
/// router) and when somebody did.
#[tokio::test]
async fn a_dead_devices_will_reaches_subscribers() -> Result<()> {
    let hub = TestHub::start().await?;
    let rid = hub.resident(json!({"name": "Sato Fumi"})).await?;
    hub.user("integrator", "staff", &[]).await?;
    let mut live = watcher(&hub, "live", true).await?;
    subscribed(&mut live, "watch/v1/+/status").await?;
    for heard_before in [false, true] {
        let dev = hub.device(rid, "motion").await?;
        if heard_before {
            subscribed(&mut live, &topic(&dev, "motion")).await?;
        }
        let mut opts = rumqttc::MqttOptions::new(dev.id.clone(), "127.0.0.1", hub.mqtt_port);
        opts.set_credentials(dev.id.clone(), dev.mqtt.password.clone());
        opts.set_last_will(rumqttc::LastWill::new(
            topic(&dev, "status"),
            r#"{"online":false}"#,
            rumqttc::QoS::AtLeastOnce,
            false,
        ));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
        client
            .publish(
                topic(&dev, "motion"),
                rumqttc::QoS::AtLeastOnce,
                false,
                r#"{"motion":true}"#,
            )
            .await?;
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) =
                    eventloop.poll().await
                {
                    return;
                }
            }
        })
        .await?;
        if heard_before {
            assert!(receives(&mut live, r#"{"motion":true}"#).await);
        }
        // Dropping the event loop closes the socket without DISCONNECT.
        drop(eventloop);
        drop(client);
        let will = live
            .next_matching(Duration::from_secs(20), |p| {
                matches!(p, rumqttc::Packet::Publish(_))
            })
            .await
            .with_context(|| format!("no will; heard before: {heard_before}"))?;
        let rumqttc::Packet::Publish(will) = will else {
            unreachable!()
        };
        assert_eq!(
            will.topic,
            topic(&dev, "status"),
            "heard before: {heard_before}"
        );
        assert_eq!(will.payload.as_ref(), br#"{"online":false}"#);
    }
    Ok(())
}
