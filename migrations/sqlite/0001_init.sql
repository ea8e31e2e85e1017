-- Mimamori schema, SQLite dialect. Times are epoch milliseconds (INTEGER) in both backends,
-- so the same queries compare and order them the same way.
CREATE TABLE residents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    timezone TEXT NOT NULL,
    home_lat DOUBLE PRECISION,
    home_lon DOUBLE PRECISION,
    rules TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE user_residents (
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    resident_id BIGINT NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, resident_id)
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);

CREATE TABLE geofences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id BIGINT NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    shape TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX geofences_resident ON geofences(resident_id);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    resident_id BIGINT NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT,
    battery INTEGER
);
CREATE INDEX devices_resident ON devices(resident_id);

-- Accepted readings. Erasing a resident erases their readings.
CREATE TABLE readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id BIGINT NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    accuracy_m DOUBLE PRECISION,
    battery INTEGER,
    data TEXT
);
CREATE INDEX readings_resident_ts ON readings(resident_id, ts);

-- The rules engine's state per resident, written in the same transaction as the readings
-- and alert changes it follows from.
CREATE TABLE rule_state (
    resident_id BIGINT PRIMARY KEY REFERENCES residents(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id BIGINT NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
    device_id TEXT,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    escalated BOOLEAN NOT NULL DEFAULT FALSE,
    opened_at BIGINT NOT NULL,
    acknowledged_at BIGINT,
    acknowledged_by TEXT,
    resolved_at BIGINT,
    resolved_by TEXT,
    resolution TEXT,
    details TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- At most one live alert per resident, kind and subject (device or zone).
CREATE UNIQUE INDEX alerts_one_live ON alerts(resident_id, kind, subject) WHERE state <> 'resolved';
CREATE INDEX alerts_opened ON alerts(opened_at);

CREATE TABLE alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id BIGINT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    note TEXT,
    details TEXT
);
CREATE INDEX alert_events_alert ON alert_events(alert_id);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT
);

-- Dead letters: a bounded window of the most recent refused messages.
CREATE TABLE rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at BIGINT NOT NULL,
    device_id TEXT,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload TEXT NOT NULL
);
