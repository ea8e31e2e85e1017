//! The hub's HTTP API as the simulator uses it: log in, create residents, zones and devices,
//! map Zigbee devices to hub devices, change rule settings, read alerts. Request and response bodies are the protocol crate's.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mimamori_protocol::api::{
    DeviceCreated, ErrorBody, LoginRequest, LoginResponse, NewDevice, NewResident, Resident,
};
use mimamori_protocol::gateway::{
    BleTag, EchonetDevice, LorawanDevice, NewBleTag, NewEchonetDevice, NewLorawanDevice,
    NewReceiver, NewZigbeeDevice, Receiver, ZigbeeDevice,
};
use mimamori_protocol::zone::{NewZone, Zone};
use mimamori_protocol::Alert;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// A logged-in API client.
#[derive(Clone)]
pub struct HubApi {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// The hub refused the user name or password: trying again with the same ones cannot help.
#[derive(Debug)]
pub struct LoginRefused {
    pub base: String,
    pub username: String,
}

impl std::fmt::Display for LoginRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot log in to {} as {}: the hub refused the password",
            self.base, self.username
        )
    }
}

impl std::error::Error for LoginRefused {}

/// Waits before the attempts after the first when the hub cannot be reached or is busy.
const LOGIN_BACKOFF: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

impl HubApi {
    /// Logs in at `base` (e.g. `http://127.0.0.1:8080`) as a staff or admin user.
    ///
    /// A refused password fails at once with [`LoginRefused`], never retried; a hub that
    /// cannot be reached or answers 5xx or 429 is asked again after growing pauses
    /// ([`LOGIN_BACKOFF`]), so a simulator never hammers a hub that says no.
    pub async fn login(base: &str, username: &str, password: &str) -> Result<HubApi> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut api = HubApi {
            base: base.trim_end_matches('/').to_string(),
            token: String::new(),
            http,
        };
        let body = LoginRequest {
            username: username.into(),
            password: password.into(),
            totp: None,
        };
        let url = format!("{}/api/v1/auth/login", api.base);
        let mut pauses = LOGIN_BACKOFF.iter();
        loop {
            let transient = match api.http.post(&url).json(&body).send().await {
                Ok(res) if res.status() == StatusCode::UNAUTHORIZED => {
                    return Err(LoginRefused {
                        base: base.to_string(),
                        username: username.to_string(),
                    }
                    .into());
                }
                Ok(res) if res.status().is_success() => {
                    let text = res.text().await?;
                    let ok: LoginResponse = serde_json::from_str(&text).map_err(|e| {
                        anyhow!("POST /auth/login: unexpected answer ({e}): {text}")
                    })?;
                    api.token = ok.token;
                    return Ok(api);
                }
                Ok(res)
                    if res.status().is_server_error()
                        || res.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    anyhow!("the hub answered {}", res.status())
                }
                Ok(res) => {
                    let status = res.status();
                    let text = res.text().await.unwrap_or_default();
                    bail!(
                        "cannot log in to {base} as {username}: the hub answered {status}: {text}"
                    );
                }
                Err(e) => anyhow::Error::from(e),
            };
            match pauses.next() {
                Some(pause) => tokio::time::sleep(*pause).await,
                None => {
                    return Err(transient.context(format!(
                        "cannot log in to {base} as {username} after {} attempts",
                        LOGIN_BACKOFF.len() + 1
                    )))
                }
            }
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = res.status();
        let text = res.text().await?;
        if !status.is_success() {
            let why = serde_json::from_str::<ErrorBody>(&text)
                .map_or(text.clone(), |e| format!("{}: {}", e.error, e.message));
            bail!("{method} {path}: the hub answered {status}: {why}");
        }
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("{method} {path}: unexpected answer ({e}): {text}"))
    }

    /// Creates a resident and records their consent, without which the hub registers no
    /// device of theirs and stores nothing they send: a simulated resident stands for one
    /// who consented (document reference `device-sim`).
    pub async fn create_resident(&self, body: &NewResident) -> Result<Resident> {
        let r: Resident = self.call(Method::POST, "/residents", Some(body)).await?;
        self.record_consent(r.id, &r.name).await?;
        Ok(r)
    }

    /// Records a consent given by the resident to being watched by care staff and family.
    pub async fn record_consent(&self, resident_id: i64, name: &str) -> Result<Value> {
        let consent = json!({
            "given_on": chrono::Utc::now().date_naive(),
            "given_by": "resident",
            "giver_name": name,
            "purposes": ["watch-over", "emergency response"],
            "recipients": ["care staff", "family"],
            "document_ref": "device-sim",
        });
        self.call(
            Method::POST,
            &format!("/residents/{resident_id}/consent"),
            Some(&consent),
        )
        .await
    }

    /// Merges partial rule settings into the resident's.
    pub async fn patch_rules(&self, resident_id: i64, rules: &Value) -> Result<Resident> {
        self.call(
            Method::PATCH,
            &format!("/residents/{resident_id}"),
            Some(&json!({"rules": rules})),
        )
        .await
    }

    pub async fn create_zone(&self, resident_id: i64, zone: &NewZone) -> Result<Zone> {
        self.call(
            Method::POST,
            &format!("/residents/{resident_id}/geofences"),
            Some(zone),
        )
        .await
    }

    pub async fn create_device(&self, body: &NewDevice) -> Result<DeviceCreated> {
        self.call(Method::POST, "/devices", Some(body)).await
    }

    /// Tells the hub which of its devices a Zigbee device behind a gateway is.
    pub async fn map_zigbee(
        &self,
        gateway_id: &str,
        body: &NewZigbeeDevice,
    ) -> Result<ZigbeeDevice> {
        self.call(
            Method::POST,
            &format!("/devices/{gateway_id}/zigbee"),
            Some(body),
        )
        .await
    }

    pub async fn register_lorawan(
        &self,
        gateway_id: &str,
        body: &NewLorawanDevice,
    ) -> Result<LorawanDevice> {
        self.call(
            Method::POST,
            &format!("/devices/{gateway_id}/lorawan"),
            Some(body),
        )
        .await
    }

    /// Tells the hub which of its devices an ECHONET Lite device behind a gateway is.
    pub async fn map_echonet(
        &self,
        gateway_id: &str,
        body: &NewEchonetDevice,
    ) -> Result<EchonetDevice> {
        self.call(
            Method::POST,
            &format!("/devices/{gateway_id}/echonet"),
            Some(body),
        )
        .await
    }

    /// Gives a `tag` device the id receivers report it by.
    pub async fn register_tag(&self, device_id: &str, body: &NewBleTag) -> Result<BleTag> {
        self.call(
            Method::POST,
            &format!("/devices/{device_id}/tag"),
            Some(body),
        )
        .await
    }

    /// Says where a `receiver` device is and how far it hears.
    pub async fn put_receiver(&self, device_id: &str, body: &NewReceiver) -> Result<Receiver> {
        self.call(
            Method::PUT,
            &format!("/devices/{device_id}/receiver"),
            Some(body),
        )
        .await
    }

    /// The newest alerts of every resident the user may see (at most 1000).
    pub async fn alerts(&self) -> Result<Vec<Alert>> {
        self.call::<(), _>(Method::GET, "/alerts?limit=1000", None)
            .await
    }

    /// Every alert of one resident, in any state.
    pub async fn resident_alerts(&self, resident_id: i64) -> Result<Vec<Alert>> {
        self.call::<(), _>(
            Method::GET,
            &format!("/alerts?resident_id={resident_id}&limit=1000"),
            None,
        )
        .await
    }
}
