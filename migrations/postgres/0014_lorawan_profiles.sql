-- Field mappings per LoRaWAN device profile: every device of one model runs the same
-- codec, which names its fields the same way, so a gateway keeps one mapping per profile
-- and a registration may follow a profile instead of carrying fields of its own.
-- Deleting the gateway deletes its profiles; a profile in use cannot be deleted (the API
-- checks, as a registration's profile is a name on the same gateway).
CREATE TABLE lorawan_profiles (
    gateway_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- JSON object: the partial mapping (protocol::gateway::NewLoraFields); each device's
    -- kind fills in the fields left out.
    fields TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, name)
);

-- The profile a registration follows, on its own gateway; NULL for fields of its own.
ALTER TABLE lorawan_devices ADD COLUMN profile TEXT;
