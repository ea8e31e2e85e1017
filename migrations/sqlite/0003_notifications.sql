-- Family notifications (issue 6): contacts per resident, and the outbox of deliveries
-- written in the same transaction as the alert change that calls for them.
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id BIGINT NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    relation TEXT NOT NULL,
    -- 1: told when an alert opens; 2: told when nobody acknowledged it in time.
    tier BIGINT NOT NULL,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    -- Webhook signing key: a shared secret the hub must read back to sign, so not hashed.
    secret TEXT,
    -- JSON array of alert kinds; empty means every kind.
    kinds TEXT NOT NULL,
    min_severity TEXT NOT NULL,
    quiet_hours TEXT,
    language TEXT NOT NULL,
    daily_summary_at TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX contacts_resident ON contacts(resident_id);

-- The outbox. Address and secret are copied so that a row is deliverable on its own.
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    resident_id BIGINT NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
    alert_id BIGINT REFERENCES alerts(id) ON DELETE CASCADE,
    contact_id BIGINT REFERENCES contacts(id) ON DELETE SET NULL,
    contact_name TEXT NOT NULL,
    event TEXT NOT NULL,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    secret TEXT,
    language TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    claimed_at BIGINT,
    delivered_at BIGINT
);
CREATE INDEX deliveries_due ON deliveries(state, next_attempt_at);
CREATE INDEX deliveries_alert ON deliveries(alert_id);

CREATE TABLE delivery_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id BIGINT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    ok BOOLEAN NOT NULL,
    error TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id);
