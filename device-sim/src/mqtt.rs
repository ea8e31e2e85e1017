//! Device connections: one MQTT connection per device, with the credentials the hub issued
//! (client id = username = device id), QoS 1, and the last will its client leaves (natively
//! `{"online": false}`), as a real device would. Publishing does not wait for each PUBACK; acks are counted and awaited
//! at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use mimamori_protocol::topic::{device_topic, MessageKind};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
};
use tokio::task::JoinHandle;

use crate::client::Wire;
use crate::timeline::status_payload;

/// Counters shared by every connection of a run.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub errors: AtomicU64,
}

/// Where to connect and as whom.
#[derive(Debug, Clone)]
pub struct DeviceLogin {
    pub host: String,
    pub port: u16,
    pub device_id: String,
    pub password: String,
}

/// What a connection says: its will, what it says on (re)connecting, and the command topic
/// it subscribes to (an OwnTracks phone's).
#[derive(Debug, Clone, Default)]
pub struct Speech {
    pub will: Option<Wire>,
    pub hello: Vec<Wire>,
    pub subscribe: Option<String>,
    /// Keep the session across connections, as OwnTracks does.
    pub persistent: bool,
}

impl Speech {
    /// The native protocol: `{"online": false}` as will, `{"online": true}` on connecting.
    pub fn native(device_id: &str) -> Speech {
        let status = |online| Wire::Mqtt {
            topic: device_topic(device_id, MessageKind::Status),
            payload: status_payload(online),
            retain: false,
        };
        Speech {
            will: Some(status(false)),
            hello: vec![status(true)],
            subscribe: None,
            persistent: false,
        }
    }
}

/// One connected device.
pub struct DeviceLink {
    login: DeviceLogin,
    speech: Speech,
    client: AsyncClient,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

/// Splits `host:port`.
pub fn host_port(addr: &str) -> Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("MQTT address {addr:?} must be host:port"))?;
    let port = port
        .parse()
        .map_err(|_| anyhow!("MQTT address {addr:?}: {port:?} is not a port"))?;
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

impl DeviceLink {
    /// Connects, waits for the CONNACK and says its hello.
    pub async fn connect(
        login: DeviceLogin,
        speech: Speech,
        counters: Arc<Counters>,
    ) -> Result<DeviceLink> {
        let (client, task) = open(&login, &speech, counters.clone()).await?;
        let link = DeviceLink {
            login,
            speech,
            client,
            task,
            counters,
        };
        link.say_hello().await?;
        Ok(link)
    }

    pub fn device_id(&self) -> &str {
        &self.login.device_id
    }

    async fn say_hello(&self) -> Result<()> {
        if let Some(filter) = &self.speech.subscribe {
            self.client
                .subscribe(filter, QoS::ExactlyOnce)
                .await
                .map_err(|e| anyhow!("device {}: cannot subscribe: {e}", self.device_id()))?;
        }
        for w in &self.speech.hello {
            if let Wire::Mqtt {
                topic,
                payload,
                retain,
            } = w
            {
                self.publish_to(topic, payload.clone(), *retain).await?;
            }
        }
        Ok(())
    }

    /// Publishes a native message on the device's own topic.
    pub async fn publish(&self, kind: MessageKind, payload: String) -> Result<()> {
        let topic = device_topic(&self.login.device_id, kind);
        self.publish_to(&topic, payload, false).await
    }

    /// Publishes with QoS 1; the PUBACK is counted when it comes.
    pub async fn publish_to(&self, topic: &str, payload: String, retain: bool) -> Result<()> {
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
        {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            bail!("device {}: cannot publish: {e}", self.login.device_id);
        }
        Ok(())
    }

    /// The device loses power: the socket closes without DISCONNECT, so the hub sends its will.
    pub fn power_loss(&self) {
        self.task.abort();
    }

    /// Power is back: a new connection, and its hello again.
    pub async fn power_back(&mut self) -> Result<()> {
        let (client, task) = open(&self.login, &self.speech, self.counters.clone()).await?;
        self.client = client;
        self.task = task;
        self.say_hello().await
    }

    /// Says goodbye with DISCONNECT (no will) once the queue is written.
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn open(
    login: &DeviceLogin,
    speech: &Speech,
    counters: Arc<Counters>,
) -> Result<(AsyncClient, JoinHandle<()>)> {
    let mut opts = MqttOptions::new(&login.device_id, &login.host, login.port);
    opts.set_credentials(&login.device_id, &login.password);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(!speech.persistent);
    if let Some(Wire::Mqtt {
        topic,
        payload,
        retain,
    }) = &speech.will
    {
        opts.set_last_will(LastWill::new(
            topic,
            payload.clone(),
            QoS::AtLeastOnce,
            *retain,
        ));
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    connack(&mut eventloop, &login.device_id).await?;
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counters.acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(_) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    });
    Ok((client, task))
}

async fn connack(eventloop: &mut EventLoop, device_id: &str) -> Result<()> {
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) if c.code == ConnectReturnCode::Success => {
                    return Ok(())
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) => bail!(
                    "device {device_id}: the hub refused the connection ({:?})",
                    c.code
                ),
                Ok(_) => {}
                Err(e) => bail!("device {device_id}: cannot connect: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .map_err(|_| anyhow!("device {device_id}: no CONNACK within 30 s"))?
}
