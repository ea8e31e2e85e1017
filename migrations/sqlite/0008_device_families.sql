-- Device families behind gateways and receivers: LoRaWAN devices, BLE tags and ECHONET Lite devices.
--
-- LoRaWAN devices behind a network server (ChirpStack): which DevEUI, on one gateway
-- device whose credentials the network server's MQTT integration uses, is which hub
-- device, and which fields of its decoded payload say what. Deleting either device
-- deletes the registration.
CREATE TABLE lorawan_devices (
    gateway_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    dev_eui TEXT NOT NULL,
    device_id TEXT NOT NULL UNIQUE REFERENCES devices(id) ON DELETE CASCADE,
    -- JSON object: the field mapping in force (protocol::gateway::LoraFields).
    fields TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, dev_eui)
);

-- BLE receivers (ESPresense nodes, station readers, volunteers' phones): where a
-- sighting places a tag. A fixed receiver has lat/lon; a volunteer's app has none and
-- sends its own position with each sighting. `room` is the ESPresense room it reports as.
CREATE TABLE ble_receivers (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    place TEXT NOT NULL,
    room TEXT UNIQUE,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    range_m DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL
);

-- BLE tags carried by residents: the id receivers report (ESPresense's fingerprint id,
-- e.g. iBeacon:{uuid}-{major}-{minor}) of a hub device of kind `tag`.
CREATE TABLE ble_tags (
    tag_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL UNIQUE REFERENCES devices(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);

-- ECHONET Lite devices behind an echonetlite2mqtt gateway: which ECHONET device (its id,
-- or its alias name, as echonetlite2mqtt names it in topics) is which hub device.
-- `activity_above_w`: a smart meter's instantaneous power this far above the learned
-- standby counts as a sign of activity.
CREATE TABLE echonet_devices (
    gateway_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    echonet_id TEXT NOT NULL,
    device_id TEXT NOT NULL UNIQUE REFERENCES devices(id) ON DELETE CASCADE,
    activity_above_w DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, echonet_id)
);
