-- Care rules: where a device is and what it is for (the entrance door), and dated
-- pauses of a resident's watch rules (a hospital stay, a short stay, a visit).
ALTER TABLE devices ADD COLUMN room TEXT;
ALTER TABLE devices ADD COLUMN role TEXT;

-- Written only by the pipeline, in the same transaction as the rules state that
-- follows from it. Times are epoch milliseconds.
CREATE TABLE resident_pauses (
    id TEXT PRIMARY KEY,
    resident_id BIGINT NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
    from_at BIGINT NOT NULL,
    until_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    note TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX resident_pauses_resident ON resident_pauses(resident_id, from_at);
