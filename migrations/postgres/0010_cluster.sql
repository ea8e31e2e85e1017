-- Cluster mode: the hubs sharing this database, and who owns which partition of the
-- residents. Times are milliseconds of the database's own clock, so the hubs' clocks
-- never decide a lease.
CREATE TABLE cluster_nodes (
    node_id TEXT PRIMARY KEY,
    http_addr TEXT NOT NULL,
    mqtt_addr TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

-- One row per partition. `token` rises at every change of owner: a commit carries the
-- token its pipeline was given, and is refused once the partition changed hands.
-- `applied_seq` is the last event-log sequence whose effects are committed: the next
-- owner reads the log from there, so an event is applied exactly once.
CREATE TABLE cluster_leases (
    part BIGINT PRIMARY KEY,
    owner TEXT,
    token BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL DEFAULT 0,
    applied_seq BIGINT NOT NULL DEFAULT 0
);
