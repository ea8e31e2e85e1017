-- Privacy (APPI): consent records, the log of who read whose data, and the hourly
-- activity kept after the raw readings it was counted from are purged.

-- Consent to collect and share a resident's data. A resident's consent is current while
-- a row of theirs has no withdrawn_at; withdrawing closes every open row. Rows are never
-- updated otherwise, so the table is the consent history. Erased with the resident.
CREATE TABLE consents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id BIGINT NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
    -- The day the consent was given (epoch ms of its midnight, UTC).
    given_on BIGINT NOT NULL,
    -- 'resident' or 'guardian'.
    given_by TEXT NOT NULL,
    giver_name TEXT NOT NULL,
    -- JSON arrays of strings.
    purposes TEXT NOT NULL,
    recipients TEXT NOT NULL,
    document_ref TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    recorded_at BIGINT NOT NULL,
    withdrawn_at BIGINT,
    withdrawn_by TEXT,
    withdrawal_note TEXT
);
CREATE INDEX consents_resident ON consents(resident_id, id);

-- Who read a resident's positions, track, readings, activity or alert details, and how
-- many rows. Append-only: rows leave only by retention or with the resident's erasure.
-- No foreign key: reads are written in batches after the fact, and a batch must not
-- fail because a resident was erased meanwhile (the erasure deletes their rows).
CREATE TABLE access_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    resident_id BIGINT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    what TEXT NOT NULL,
    row_count BIGINT NOT NULL
);
CREATE INDEX access_log_resident ON access_log(resident_id, at);
CREATE INDEX access_log_at ON access_log(at);
CREATE TRIGGER access_log_append_only BEFORE UPDATE ON access_log
BEGIN
    SELECT RAISE(ABORT, 'access_log is append-only');
END;

-- Activity readings (motion seen, door used) per resident and hour, rolled up from raw
-- readings as retention purges them, so the daily rhythm outlives the raw rows.
CREATE TABLE activity_hourly (
    resident_id BIGINT NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
    -- Epoch ms of the hour's start.
    hour BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (resident_id, hour)
);
