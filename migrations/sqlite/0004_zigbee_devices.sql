-- Zigbee2MQTT gateways: which Zigbee device (by its friendly name on one gateway) is which
-- hub device. Deleting either device deletes the mapping.
CREATE TABLE zigbee_devices (
    gateway_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    friendly_name TEXT NOT NULL,
    device_id TEXT NOT NULL UNIQUE REFERENCES devices(id) ON DELETE CASCADE,
    -- JSON array of the `action` values that raise SOS.
    sos_actions TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, friendly_name)
);
